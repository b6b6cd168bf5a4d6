//! Log output for the binaries: `tracing` events to stderr, and line
//! writers for stdout and stderr that never panic.
//!
//! A log line or a notice that cannot be written (stderr closed, a full disk
//! behind a redirect, a reader that went away) is dropped: losing a line of
//! log is never a reason to stop serving or to abort a script. `println!`
//! and `eprintln!` panic on such errors, so the binaries use
//! [`out_line!`](crate::out_line) and [`err_line!`](crate::err_line)
//! instead.

use std::fmt;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people: time, level, message, fields.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `fields` with the
    /// `message`, `span`…), for log shippers; never coloured.
    Json,
}

/// Sends log events to stderr. `RUST_LOG`, when set, decides the filter;
/// otherwise `verbosity` moves the level from `info` (positive: more).
pub fn init(verbosity: i8, color: bool) {
    init_as(verbosity, color, LogFormat::Text);
}

/// [`init`] in the given format.
pub fn init_as(verbosity: i8, color: bool, format: LogFormat) {
    let level = match verbosity {
        i8::MIN..=-3 => "off",
        -2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        // Its report of a failed write would go to the same dead stderr,
        // through `eprintln!`, which panics.
        .log_internal_errors(false)
        .with_target(false);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(color).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Stderr for the log: a failed write is reported as done and dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderr
    }
}

/// Writes one line to stdout in one call, flushed; a failure is returned,
/// never a panic.
pub fn write_out(args: fmt::Arguments<'_>) -> io::Result<()> {
    let line = format!("{args}\n");
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Writes one line to stderr in one call; a failure drops the line.
pub fn write_err(args: fmt::Arguments<'_>) {
    // One write for the whole line, so it cannot interleave with another
    // thread's output mid-line.
    let line = format!("{args}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// `println!` that returns the write error instead of panicking.
#[macro_export]
macro_rules! out_line {
    ($($arg:tt)*) => {
        $crate::logging::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that drops the line instead of panicking when stderr fails.
#[macro_export]
macro_rules! err_line {
    ($($arg:tt)*) => {
        $crate::logging::write_err(format_args!($($arg)*))
    };
}
