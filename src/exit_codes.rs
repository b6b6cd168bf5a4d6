//! Exit statuses of the binaries.

/// Everything went as asked.
pub const SUCCESS: i32 = 0;
/// A runtime failure (for the server: it could not start).
pub const FAILURE: i32 = 1;
/// The command line was wrong (clap uses the same code).
pub const USAGE: i32 = 2;
