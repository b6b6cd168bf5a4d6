//! `chat-server PORT`: parse the options, bind, and run the server until
//! `exit`, SIGINT or SIGTERM. `chat-server passwd FILE NAME`: set a
//! registered name's password.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pmchat::exit_codes::Status;
use pmchat::net::workers::Workers;
use pmchat::server::accounts::{self, Accounts};
use pmchat::server::cli::{AdminArgs, HistoryAction, HistoryArgs, PasswdArgs, ServerArgs};
use pmchat::server::commands::Outcome;
use pmchat::server::config_file;
use pmchat::server::{self, Server};

fn main() -> ExitCode {
    pmchat::runtime::set_program("chat-server");
    // A subcommand beside a positional PORT: dispatched by hand, so that
    // `chat-server 0` and `chat-server passwd …` both read naturally.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "passwd")
    {
        return passwd(PasswdArgs::parse_from(std::env::args_os().skip(1)));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "completions")
    {
        use clap::{CommandFactory, Parser};
        let args = pmchat::args::CompletionsArgs::parse_from(
            std::iter::once("chat-server completions".into()).chain(std::env::args_os().skip(2)),
        );
        args.print(ServerArgs::command(), "chat-server");
        return ExitCode::SUCCESS;
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "admin")
    {
        return admin(AdminArgs::parse_from(std::env::args_os().skip(1)));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "history")
    {
        return history(HistoryArgs::parse_from(std::env::args_os().skip(1)));
    }
    // `--config FILE`'s options go before the command line's, which win.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let config_file = match config_file::config_path(&argv) {
        None => None,
        Some(path) => match config_file::ConfigFile::load(&path) {
            Ok(file) => Some(file),
            Err(e) => {
                pmchat::err_line!("chat-server: {e}");
                return Status::Usage.into();
            }
        },
    };
    let args = config_file::parse(&argv, config_file.as_ref()).unwrap_or_else(|e| e.exit());
    pmchat::logging::init_as(
        args.verbosity(),
        args.color.enabled_for(&std::io::stderr()),
        args.log_format,
    );

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
    if let Some(path) = &args.accounts {
        match Accounts::load(path) {
            Ok(accounts) => {
                tracing::info!(
                    "{} registered name(s) in {}",
                    accounts.table().len(),
                    path.display()
                );
                if let Some(mode) = pmchat::secret::readable_by_others(path) {
                    tracing::warn!(
                        "the accounts file {} can be read by other users (mode {mode:o}); \
                         chmod 600 it",
                        path.display()
                    );
                }
                config.accounts = Some(Arc::new(accounts));
            }
            Err(e) => return fail(&format!("cannot use the accounts file: {e}")),
        }
        if config.tls.is_none() && !config.allow_plaintext_passwords {
            tracing::warn!(
                "--accounts without TLS: registered names cannot log in \
                 (passwords are accepted over TLS only; see --allow-plaintext-passwords)"
            );
        }
    }
    // The store opens after the accounts (it serves registered names
    // only) and before the port is announced.
    if let Some(path) = &args.store {
        // A file-size limit (RLIMIT_FSIZE) or a quota then makes the
        // store's writes fail with EFBIG, which it reports and recovers
        // from, instead of the signal killing the server.
        pmchat::sys::ignore_file_size_signal();
        match pmchat::store::Store::open(path, args.retention()) {
            Ok(store) => {
                tracing::info!(
                    "storing messages for registered names in {}",
                    path.display()
                );
                config.store = Some(store);
            }
            Err(e) => return fail(&format!("cannot use the store: {e}")),
        }
    }
    let store = config.store.clone();
    // Under systemd's socket activation the socket is already bound (and
    // PORT and --bind are not used); otherwise bind as asked.
    let listener = match pmchat::systemd::inherited_listener() {
        Ok(Some(listener)) => listener,
        Ok(None) => {
            let addr = match args.listen_addr() {
                Ok(addr) => addr,
                Err(e) => return fail(&e),
            };
            match pmchat::runtime::bind(addr) {
                Ok(listener) => listener,
                Err(e) => return fail(&format!("cannot listen on {addr}: {e}")),
            }
        }
        Err(e) => return fail(&e),
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

    let threads = args
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = match Workers::start(threads) {
        Ok(workers) => workers,
        Err(e) => return fail(&format!("cannot start the worker threads: {e}")),
    };
    let server = match Server::new(config, Arc::clone(&workers)) {
        Ok(server) => server,
        Err(e) => {
            workers.stop();
            return fail(&e);
        }
    };
    let metrics = match args.metrics_addr() {
        Ok(None) => None,
        Ok(Some(addr)) => match server.metrics_endpoint(addr) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                workers.stop();
                return fail(&format!("cannot serve metrics on {addr}: {e}"));
            }
        },
        Err(e) => {
            workers.stop();
            return fail(&e);
        }
    };
    if let Some(endpoint) = metrics {
        match endpoint.local_addr() {
            Ok(addr) => tracing::info!("metrics at http://{addr}/metrics"),
            Err(e) => tracing::warn!("metrics: {e}"),
        }
        if let Err(e) = endpoint.spawn() {
            workers.stop();
            return fail(&format!("cannot start the metrics thread: {e}"));
        }
    }
    // Made before the port is announced, removed when this goes out of
    // scope at the end of main.
    let _admin_socket = match &args.admin_socket {
        None => None,
        Some(path) => {
            let started = pmchat::server::AdminSocket::bind(path).and_then(|mut socket| {
                socket
                    .spawn(server.handle())
                    .map_err(|e| format!("cannot start the control socket's thread: {e}"))?;
                Ok(socket)
            });
            match started {
                Ok(socket) => Some(socket),
                Err(e) => {
                    workers.stop();
                    return fail(&format!("cannot use the control socket: {e}"));
                }
            }
        }
    };
    // Scripts and tests read the real port from this first line (once
    // nothing can stop the server from starting). Nobody reading it is no
    // reason not to serve.
    let _ = pmchat::out_line!("listening on {local}");
    tracing::info!("listening on {local}");
    pmchat::systemd::ready();
    let console_color = args.color.enabled_for(&std::io::stdout());
    if let Err(e) = pmchat::server::start_console(server.handle(), console_color) {
        return fail(&format!("cannot start the console: {e}"));
    }
    // Operators renew certificates, edit the accounts and send SIGHUP
    // (systemd's ExecReload too); with nothing to reload it is a no-op
    // rather than the end of the server.
    match pmchat::signals::Hangups::new() {
        Ok(mut hangups) => {
            let handle = server.handle();
            let rereader = config_file.map(|file| config_file::Rereader::new(argv, file));
            workers.spawn(async move {
                loop {
                    hangups.next().await;
                    pmchat::systemd::reloading();
                    if let Some(rereader) = &rereader {
                        rereader.reread(&handle);
                    }
                    let _ = handle.reload_tls();
                    let _ = handle.reload_accounts(false);
                    pmchat::systemd::ready();
                }
            });
        }
        Err(e) => tracing::warn!("cannot watch for SIGHUP: {e}"),
    }
    // This thread accepts connections (handing each to a worker), runs
    // the housekeeping and drives async-io's reactor: timers, the console,
    // signals.
    smol::block_on(server.run(listener, stop_signal));
    workers.stop();
    // Whatever was logged until the end is committed before exiting.
    if let Some(store) = store {
        store.close();
    }
    // The console's line editor may hold the terminal in raw mode.
    server::restore_terminal();
    Status::Success.into()
}

/// `chat-server admin PATH COMMAND…`.
fn admin(args: AdminArgs) -> ExitCode {
    match pmchat::server::admin_request(&args.socket, &args.command, args.json) {
        Ok(reply) => match reply.outcome {
            Outcome::Done => {
                if !reply.body.is_empty() {
                    let _ = pmchat::out_line!("{}", reply.body);
                }
                Status::Success.into()
            }
            Outcome::Failed => {
                if args.json {
                    let _ = pmchat::out_line!("{}", reply.body);
                } else {
                    pmchat::err_line!("chat-server: {}", reply.body);
                }
                Status::Failure.into()
            }
            Outcome::Usage => {
                pmchat::err_line!("chat-server: {}", reply.body);
                Status::Usage.into()
            }
        },
        Err(e) => fail(&e),
    }
}

/// `chat-server passwd FILE NAME`.
fn passwd(args: PasswdArgs) -> ExitCode {
    let prompt = format!("New password for '{}': ", args.name);
    let password = match pmchat::secret::read_password(&prompt) {
        Ok(password) => password,
        Err(e) => return fail(&format!("password not set: {e}")),
    };
    // A person may mistype what they cannot see; a pipe says it once.
    if pmchat::secret::stdin_is_terminal() {
        match pmchat::secret::read_password("Again: ") {
            Ok(again) if again == password => {}
            Ok(_) => return fail("password not set: the two passwords differ"),
            Err(e) => return fail(&format!("password not set: {e}")),
        }
    }
    match accounts::set_password(&args.file, &args.name, &password) {
        Ok(changed) => {
            let what = if changed { "changed" } else { "set" };
            pmchat::err_line!(
                "chat-server: password for '{}' {what} in {}",
                args.name,
                args.file.display()
            );
            Status::Success.into()
        }
        Err(e) => fail(&format!("password not set: {e}")),
    }
}

/// `chat-server history export|purge FILE NAME`.
fn history(args: HistoryArgs) -> ExitCode {
    let (file, name) = match &args.action {
        HistoryAction::Export { file, name } | HistoryAction::Purge { file, name } => (file, name),
    };
    if let Some(url) = file.to_str().filter(|f| f.starts_with("redis")) {
        return history_in_redis(url, name, &args.action);
    }
    if !file.exists() {
        return fail(&format!("{}: no such store", file.display()));
    }
    let store = match pmchat::store::Store::open(file, pmchat::store::Retention::default()) {
        Ok(store) => store,
        Err(e) => return fail(&format!("cannot use the store: {e}")),
    };
    let done = match &args.action {
        HistoryAction::Export { .. } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = store.export(name, &mut out);
            let flushed = std::io::Write::flush(&mut out);
            written.map_err(|e| e.to_string()).and_then(|count| {
                flushed.map_err(|e| e.to_string())?;
                pmchat::err_line!("chat-server: {count} message(s) of '{name}' exported");
                Ok(())
            })
        }
        HistoryAction::Purge { .. } => store.purge(name).map_err(|e| e.to_string()).map(|count| {
            pmchat::err_line!("chat-server: {count} message(s) of '{name}' deleted");
        }),
    };
    store.close();
    match done {
        Ok(()) => Status::Success.into(),
        Err(e) => fail(&e),
    }
}

/// `chat-server history export|purge URL NAME`: the log in the cluster's
/// Redis.
fn history_in_redis(url: &str, name: &str, action: &HistoryAction) -> ExitCode {
    let (action, verb) = match action {
        HistoryAction::Export { .. } => (pmchat::server::LogAction::Export, "exported"),
        HistoryAction::Purge { .. } => (pmchat::server::LogAction::Purge, "deleted"),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let done = pmchat::server::history_in_redis(url, name, action, &mut out);
    let flushed = std::io::Write::flush(&mut out).map_err(|e| e.to_string());
    match done.and_then(|count| flushed.map(|()| count)) {
        Ok(count) => {
            pmchat::err_line!("chat-server: {count} message(s) of '{name}' {verb}");
            Status::Success.into()
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    pmchat::err_line!("chat-server: {message}");
    Status::Failure.into()
}
