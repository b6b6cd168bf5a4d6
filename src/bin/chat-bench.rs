//! `chat-bench throughput|latency|conns`: load a chat server and report.

use std::process::ExitCode;

use clap::Parser;
use pmchat::bench::{self, BenchArgs};

fn main() -> ExitCode {
    pmchat::runtime::set_program("chat-bench");
    bench::run(BenchArgs::parse()).into()
}
