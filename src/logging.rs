//! Log output for the binaries: `tracing` events to stderr.

use tracing_subscriber::EnvFilter;

/// Sends log events to stderr. `RUST_LOG`, when set, decides the filter;
/// otherwise `verbosity` moves the level from `info` (positive: more).
pub fn init(verbosity: i8, color: bool) {
    let level = match verbosity {
        i8::MIN..=-3 => "off",
        -2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .try_init();
}
