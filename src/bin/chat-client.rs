//! `chat-client HOST PORT USERNAME`: parse the options, fill in what the
//! config file and the environment give, and run the client.

use std::process::ExitCode;

use clap::Parser;
use pmchat::client::{self, cli::ClientArgs};

fn main() -> ExitCode {
    pmchat::runtime::set_program("chat-client");
    match ClientArgs::parse().resolve() {
        Ok(args) => client::run(args).into(),
        Err(e) => {
            use clap::CommandFactory;
            ClientArgs::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit()
        }
    }
}
