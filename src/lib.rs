//! pmchat: a private-message chat server and client speaking the v1 binary
//! protocol.
//!
//! # Layout
//! - [`protocol`]: v1 frames, limits and the sans-IO codec.
//! - [`framing`]: [`framing::FrameReader`], the one place frames are read
//!   from a byte stream.
//! - [`sanitize`]: escaping of peer text before it reaches a terminal or log.
//! - [`args`]: argument types the binaries share (durations, `--color`).
//! - [`clock`]: local-time stamps for `chat-client --timestamps`.
//! - [`logging`]: `tracing` set-up and never-panicking output lines.
//! - [`exit_codes`]: what each binary's exit status means.
//! - [`signals`]: SIGINT/SIGTERM as a future.
//! - [`sys`]: process limits and `/proc` readings (open files, CPU, RSS).
//! - [`server`]: the server: listener, registry, sessions, console.
//! - [`client`]: the client: commands, connection, REPL, batch, output.
//! - [`bench`]: `chat-bench`, the load generator.
//!
//! The binaries in `src/bin/` only parse arguments, call into this library
//! and map errors to exit codes.

pub mod args;
pub mod bench;
pub mod client;
pub(crate) mod clock;
pub mod exit_codes;
pub(crate) mod framing;
pub(crate) mod json;
pub mod logging;
pub mod protocol;
pub mod runtime;
pub(crate) mod sanitize;
pub mod server;
pub mod signals;
pub mod sys;
