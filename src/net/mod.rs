//! Moving bytes: the server's worker threads, the sockets they own, and
//! the byte stream (plain TCP or TLS) every connection reads and writes
//! through. Nothing here knows a frame's meaning; the codecs are
//! [`crate::wire`], and above both sit the server and the client.
//!
//! - [`workers`]: the server's worker threads, one run queue and one
//!   epoll each, and the sockets registered with them.
//! - [`background`]: the server's background thread, a worker of its
//!   own for the work of no connection (the cluster's Redis connections).
//! - [`socket`]: a TCP socket and whoever tracks its readiness (a worker,
//!   or async-io's reactor off the workers).
//! - [`transport`]: one connection's byte stream, plain or TLS: reads
//!   into a `FrameReader`, whole-batch writes, writes that never wait.
//! - [`tls`]: the TLS session under a transport, the client's settings
//!   and handshake.
//!
//! # Ownership: who may touch what
//! - **A connection's socket** belongs to the worker it was handed to at
//!   accept; only tasks on that worker wait on its readiness (its epoll
//!   registration lives there). Other threads may *write* to it, but only
//!   through its outbound queue's turn-taking (`server::outbound`): the
//!   sender's reader that finds the queue idle writes it directly, without
//!   waiting, and anything left is the connection's writer task's, on the
//!   owning worker.
//! - **Reading** is the connection's reader task's alone, on its worker.
//! - **A TLS session** is split in two halves, each behind its own lock
//!   held for one poll: the reader holds the read half, a writer (direct
//!   or the writer task) the write half; a direct write that finds the
//!   write half taken writes nothing and leaves the work to the writer
//!   task.
//! - **Timers** (handshake, frame and flush timeouts) stay on async-io's
//!   reactor thread; when one fires it wakes its task on that task's own
//!   worker.
//!
//! `docs/architecture.md` names every execution context of the programs
//! and what runs on each.

pub(crate) mod background;
pub(crate) mod socket;
pub(crate) mod tls;
pub(crate) mod transport;
pub mod workers;
