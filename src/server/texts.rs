//! The error texts the server sends about messages and sessions, in one
//! place: what a message that was not delivered is told, and why a session
//! was ended. The client decides on none of them (they are shown, and
//! carried in REFUSED); login refusals live in [`crate::protocol`], which
//! the client reads.

use crate::sanitize::Escaped;

/// Error text sent to a client the operator kicked.
pub const KICKED: &str = "you were disconnected by the server operator\n";

/// The error text for a message to `to`, whom no session (on any node)
/// holds.
pub fn not_connected_text(to: &[u8]) -> String {
    format!("'{}' is not connected\n", Escaped(to))
}

/// The error text for a message whose recipient was disconnected as a slow
/// consumer before it could be queued.
pub fn slow_consumer_text(name: &str) -> String {
    format!("'{name}' was disconnected for not reading fast enough; message not delivered\n")
}

/// The error text for a message to another node while Redis is
/// unreachable or that node's outbox stayed full.
pub fn unreachable_text(name: &[u8]) -> String {
    format!("'{}' is unreachable right now\n", Escaped(name))
}

/// The error text for a message not delivered because its recipient, on
/// another node, has not read what is already waiting for it.
pub fn not_reading_text(name: &[u8]) -> String {
    format!(
        "'{}' is not reading fast enough; message not delivered\n",
        Escaped(name)
    )
}

/// The error text for a session whose name another node took while this
/// one could not reach Redis.
pub fn name_lost_text(name: &str) -> String {
    format!("'{name}' was taken by another login while this server could not reach its cluster\n")
}
