//! `chat-client HOST PORT USERNAME`: parse the options and run the client.

use std::process::ExitCode;

use clap::Parser;
use pmchat::client::{self, cli::ClientArgs};

fn main() -> ExitCode {
    let args = ClientArgs::parse();
    client::run(args).into()
}
