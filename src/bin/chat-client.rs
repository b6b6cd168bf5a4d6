//! `chat-client HOST PORT USERNAME`: parse the options, fill in what the
//! config file and the environment give, and run the client.

use std::process::ExitCode;

use clap::Parser;
use pmchat::client::{self, cli::ClientArgs};

fn main() -> ExitCode {
    pmchat::runtime::set_program("chat-client");
    // `chat-client completions SHELL`: a completion script, not a host.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "completions")
    {
        use clap::CommandFactory;
        let args = pmchat::args::CompletionsArgs::parse_from(
            std::iter::once("chat-client completions".into()).chain(std::env::args_os().skip(2)),
        );
        args.print(ClientArgs::command(), "chat-client");
        return ExitCode::SUCCESS;
    }
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
