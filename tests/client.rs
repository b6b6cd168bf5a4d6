//! Integration tests of `chat-client` against the real `chat-server`.

mod common;

#[path = "client/accounts.rs"]
mod accounts;
#[path = "client/batch.rs"]
mod batch;
#[path = "client/e2e.rs"]
mod e2e;
#[path = "client/extensions.rs"]
mod extensions;
#[path = "client/gob.rs"]
mod gob;
#[path = "client/guessing.rs"]
mod guessing;
#[path = "client/hardening.rs"]
mod hardening;
#[path = "client/inbox.rs"]
mod inbox;
#[path = "client/interactive.rs"]
mod interactive;
#[path = "client/login.rs"]
mod login;
#[path = "client/receipts.rs"]
mod receipts;
#[path = "client/tls.rs"]
mod tls;
