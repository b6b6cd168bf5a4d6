//! End-to-end encryption for the client (#27): Olm between devices,
//! from vodozemac, the Matrix project's audited implementation. The
//! server routes and stores the envelopes like any message and never
//! sees the text; what it still sees is who talks to whom, when, and
//! how much.
//!
//! - [`records`]: what a device publishes (its signed identity and
//!   keys) and how a claimer checks it;
//! - [`envelope`]: an encrypted message as message content, one per
//!   recipient device;
//! - [`device`]: this device's account and sessions: encrypt, decrypt;
//! - [`vault`]: the account and sessions on disk, encrypted under a key
//!   derived (argon2id) from the user's password;
//! - [`pins`]: trust on first use, held users, safety codes;
//! - [`claims`]: the devices of the users this run seals for, claimed
//!   again once stale;
//! - [`session`]: all of it for one run of `chat-client --e2e`, with the
//!   server's answers to KEYS and CLAIM.
//!
//! `chat-client --e2e` uses it in scripts, `--follow` and the editor.

pub mod claims;
pub mod device;
pub mod envelope;
pub mod pins;
pub mod records;
pub mod session;
pub mod vault;
