//! `chat-server PORT`: parse the options, bind, and run the server until
//! `exit`, SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pmchat::exit_codes::Status;
use pmchat::server::{self, cli::ServerArgs, Server};
use smol::Executor;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    pmchat::logging::init(args.verbosity(), args.color.enabled_for(&std::io::stderr()));

    match pmchat::sys::raise_open_files_limit() {
        Ok(limit) => tracing::debug!("open files limit: {limit}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    // TLS is set up (and a self-signed set created) before the port is
    // announced, so a client that reads the first line finds it ready.
    let mut config = args.config();
    match args.tls() {
        Ok(None) => {}
        Ok(Some((tls, self_signed))) => {
            if let Some(set) = self_signed {
                pmchat::err_line!(
                    "chat-server: TLS with a self-signed certificate for localhost; clients use \
                     --tls --tls-ca {} (CA SHA-256 fingerprint {})",
                    set.ca.display(),
                    set.fingerprint
                );
            }
            config.tls = Some(Arc::new(tls));
        }
        Err(e) => return fail(&format!("cannot set up TLS: {e}")),
    }
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = match pmchat::runtime::bind(addr) {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {addr}: {e}")),
    };
    let local = match listener.get_ref().local_addr() {
        Ok(local) => local,
        Err(e) => return fail(&format!("cannot read the listening address: {e}")),
    };
    let stop_signal = match pmchat::signals::termination() {
        Ok(signal) => {
            async {
                signal.await;
                tracing::info!("received a termination signal");
            }
        }
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    // Scripts and tests read the real port from this first line. Nobody
    // reading it is no reason not to serve.
    let _ = pmchat::out_line!("listening on {local}");
    tracing::info!("listening on {local}");

    let threads = args
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let tls_enabled = config.tls.is_some();
    let executor = Arc::new(Executor::new());
    let server = Server::new(config, Arc::clone(&executor));
    let console_color = args.color.enabled_for(&std::io::stdout());
    if let Err(e) = server::console::spawn(server.handle(), console_color) {
        return fail(&format!("cannot start the console: {e}"));
    }
    if tls_enabled {
        // Operators renew certificates and send SIGHUP.
        match pmchat::signals::Hangups::new() {
            Ok(mut hangups) => {
                let handle = server.handle();
                executor
                    .spawn(async move {
                        loop {
                            hangups.next().await;
                            let _ = handle.reload_tls();
                        }
                    })
                    .detach();
            }
            Err(e) => tracing::warn!("cannot watch for SIGHUP: {e}"),
        }
    }
    pmchat::runtime::block_on_threads(&executor, threads, server.run(listener, stop_signal));
    Status::Success.into()
}

fn fail(message: &str) -> ExitCode {
    pmchat::err_line!("chat-server: {message}");
    Status::Failure.into()
}
