//! `chat-bench throughput|latency|conns`: load a chat server and report.

use std::process::ExitCode;

use clap::Parser;
use pmchat::bench::{self, BenchArgs};

fn main() -> ExitCode {
    let status = bench::run(BenchArgs::parse());
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
