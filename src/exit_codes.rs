//! Exit statuses of the binaries.

/// What a binary's exit status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Everything went as asked.
    Success = 0,
    /// A runtime failure: the server could not start; the client had a line
    /// rejected, received an error, or lost the connection.
    Failure = 1,
    /// The command line was wrong (clap uses the same code).
    Usage = 2,
    /// The client could not connect, the server refused its username, or
    /// what answered is not a chat server.
    NotConnected = 3,
}

impl Status {
    /// The numeric status, for `std::process::exit`.
    pub fn code(self) -> i32 {
        i32::from(self as u8)
    }
}

impl From<Status> for std::process::ExitCode {
    fn from(status: Status) -> Self {
        std::process::ExitCode::from(status as u8)
    }
}
