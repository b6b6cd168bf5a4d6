//! The wire: every byte pmchat puts on a socket to a client, and reads
//! back, in sans-IO codecs that work on byte slices.
//!
//! - [`framing`]: [`framing::FrameReader`], the one place frames are read
//!   from a byte stream, and what every codec shares (the decode result,
//!   the size limits). The bottom of this layer: it imports no codec.
//! - [`v1`]: pmchat v1 frames and their negotiated extensions.
//! - [`gob`]: the original Go programs' wire (`encoding/gob` values of
//!   their `Message` struct).
//! - [`texts`]: every text a server sends to explain a refusal or an
//!   error, each with its stable [`texts::Code`].
//!
//! Nothing here touches a socket, a clock or a thread; the server's and
//! the client's own `wire` modules choose a codec per connection.

pub mod framing;
pub mod gob;
pub mod texts;
pub mod v1;
