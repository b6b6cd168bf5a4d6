//! pmchat: a private-message chat server and client speaking the v1 binary
//! protocol.
//!
//! # How a message travels
//! `chat-client` parses `send bob hi` ([`client`]'s command parser), encodes
//! a v1 frame ([`wire::v1`]) and writes it. On the server, alice's session
//! reads it through a [`wire::framing::FrameReader`], her router finds bob in the
//! registry and encodes the delivery once, in bob's wire, into bob's bounded
//! outbound queue; at the end of the read batch alice's reader writes bob's
//! queue to bob's socket (or bob's writer task does, if it is busy). Bob's
//! client reads the frame through its own `FrameReader` and prints
//! `alice: hi`, escaped ([`sanitize`]). Data only ever flows this way:
//! socket → decoder → registry lookup → recipient's queue → recipient's
//! socket.
//!
//! # Layout
//! - [`wire`]: every byte exchanged with clients, in sans-IO codecs: v1
//!   and its extensions ([`wire::v1`]), the original programs' gob wire
//!   ([`wire::gob`]), [`wire::framing::FrameReader`] (the one place frames
//!   are read from a byte stream), and the catalogue of error texts with
//!   their stable codes ([`wire::texts`]).
//! - [`hex`]: lowercase hex for secrets and signatures kept as text.
//! - [`sanitize`]: escaping of peer text before it reaches a terminal or log.
//! - `json`: JSON string literals for `--json` and the benchmark's reports.
//! - [`runtime`]: executor threads (the benchmark's), binding a listener,
//!   `timeout`/`until`.
//! - [`net`]: moving bytes, and who may touch which socket: the server's
//!   worker threads ([`net::workers`], one run queue and one epoll each;
//!   the path of a message across them), the server's background thread,
//!   a worker of its own (`net::background`), a socket and its readiness
//!   (`net::socket`), the byte stream under a connection, plain TCP or
//!   TLS (`net::transport`, `net::tls`).
//! - [`args`]: argument types the binaries share (durations, `--color`).
//! - [`backoff`]: capped exponential back-off with jitter, for reconnects.
//! - [`clock`]: local-time stamps for `chat-client --timestamps`.
//! - [`logging`]: `tracing` set-up and never-panicking output lines.
//! - [`exit_codes`]: what each binary's exit status means.
//! - [`secret`]: passwords read without echo, from a pipe, a file or the
//!   environment, never from the command line.
//! - [`signals`]: SIGINT/SIGTERM as a future.
//! - [`systemd`]: readiness notifications and socket activation under
//!   systemd (`NOTIFY_SOCKET`, `LISTEN_FDS`).
//! - [`sys`]: process limits and `/proc` readings (open files, CPU, RSS).
//! - [`store`]: the durable conversation logs of `--store` (redb), with
//!   their writer thread and group commit, and the public keys devices
//!   publish for end-to-end encryption (`store::keys`).
//! - [`server`]: the server: listener, registry, sessions, console.
//! - [`client`]: the client: commands, connection, REPL, batch, output;
//!   `client::e2e` the core of end-to-end encryption (Olm, vodozemac).
//! - [`bench`](mod@bench): `chat-bench`, the load generator.
//!
//! The binaries in `src/bin/` only parse arguments, call into this library
//! and map errors to exit codes.
//!
//! This library exists for those binaries; its documentation is meant to
//! be read with its internals, `cargo doc --document-private-items`, where
//! every link below resolves.

// Links to crate-private items are the point of the map above.
#![allow(rustdoc::private_intra_doc_links)]

pub mod args;
pub mod backoff;
pub mod bench;
pub mod client;
pub(crate) mod clock;
pub mod exit_codes;
pub mod hex;
pub(crate) mod json;
pub mod logging;
pub mod net;
pub mod runtime;
pub(crate) mod sanitize;
pub mod secret;
pub mod server;
pub mod signals;
pub mod store;
pub mod sys;
pub mod systemd;
pub mod wire;
