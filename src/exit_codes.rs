//! Exit statuses of the binaries.

/// Everything went as asked.
pub const SUCCESS: i32 = 0;
/// A runtime failure: the server could not start; the client had a line
/// rejected, received an error, or lost the connection.
pub const FAILURE: i32 = 1;
/// The command line was wrong (clap uses the same code).
pub const USAGE: i32 = 2;
/// The client could not connect, or the server refused its username.
pub const NOT_CONNECTED: i32 = 3;
