//! Logins that take time or never finish: the client never takes a login
//! the server delays for a v1 server, sends nothing of a script before its
//! login is confirmed, and exits 3 when the login is refused or never
//! answered, with nothing lost silently.

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use crate::accounts::{accounts_file, server_with_accounts, tls_client, with_password};
use crate::common::{client_command, run_client, spawn_piped, ServerProcess};
use crate::eqnice;
use crate::hardening::fake_server;
use crate::interactive::TempDir;

#[test]
fn a_login_the_server_delays_is_waited_for_and_never_taken_for_v1() {
    let dir = TempDir::new("login-delayed");
    let accounts = accounts_file(&dir.0, &[("alice", "right"), ("bob", "pw")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    // Four wrong passwords for bob at once from this address: the next
    // login from here, alice's with her right password, waits 1 s before
    // its password is checked.
    let mut guesses: Vec<_> = (0..4)
        .map(|i| {
            let guess = with_password(tls_client(&dir.0, server.port, "bob"), &format!("no{i}"));
            spawn_piped(guess)
        })
        .collect();
    for guess in &mut guesses {
        eqnice!(Some(3), guess.wait().code());
    }
    // Both timeouts far shorter than the delay: a client that took the
    // silence for a v1 server would send the line unconfirmed and be gone
    // before anyone could account for it.
    let mut alice = with_password(tls_client(&dir.0, server.port, "alice"), "right");
    alice.args(["--hello-timeout", "300ms", "--drain-timeout", "300ms"]);
    let started = Instant::now();
    let run = run_client(alice, b"send zed hi\n");
    // The line went out once the login was confirmed, and its refusal
    // came back against it.
    eqnice!("<stdin>:1: 'zed' is not connected\n", run.stderr);
    eqnice!(1, run.status);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the login was not delayed ({:?}): the test proves nothing",
        started.elapsed()
    );
}

#[test]
fn a_login_refused_while_the_cluster_is_unreachable_exits_3_with_nothing_sent() {
    // Nothing listens where the node looks for Redis.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("its address").port()
    };
    let url = format!("redis://127.0.0.1:{port}");
    let server = ServerProcess::start(&["--cluster", &url]);
    let run = run_client(client_command(server.port, "alice"), b"who\nsend bob hi\n");
    eqnice!(
        "chat-client: error: service unavailable: the server cannot reach its cluster; try again in a moment\n",
        run.stderr
    );
    eqnice!(3, run.status);
}

#[test]
fn a_server_that_never_answers_the_login_gets_nothing_of_the_script_and_exit_3() {
    let (got, bytes) = std::sync::mpsc::channel();
    let port = fake_server(move |mut stream| {
        // Whatever the client sends after its greeting, until it leaves.
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = got.send(rest);
        thread::sleep(Duration::from_millis(100));
    });
    let mut command = client_command(port, "alice");
    command.args(["--hello-timeout", "300ms", "--drain-timeout", "200ms"]);
    let run = run_client(command, b"send bob hi\n");
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: the server did not answer the login within 300ms (a pmchat or v1 \
         server answers at once; see --hello-timeout); nothing was sent\n",
        run.stderr
    );
    eqnice!(
        Vec::<u8>::new(),
        bytes
            .recv_timeout(crate::common::TIMEOUT)
            .expect("what the client sent")
    );
}
