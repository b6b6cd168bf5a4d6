//! `chat-client HOST PORT USERNAME`: parse the options and run the client.

use std::process::ExitCode;

use clap::Parser;
use pmchat::client::{self, cli::ClientArgs};

fn main() -> ExitCode {
    let args = ClientArgs::parse();
    let status = client::run(args);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
