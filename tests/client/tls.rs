//! TLS through the real binaries: a self-signed CA made by the server,
//! plain and TLS clients on one port, refusals, a stalled handshake, and a
//! certificate renewed without a restart.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{client_command, run_client, Follower, Frame, RawClient, ServerProcess};
use crate::eqnice;
use crate::interactive::TempDir;

/// A server with a self-signed TLS set in `dir`, bound to `bind`.
fn tls_server(dir: &Path, bind: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tls-self-signed", dir.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    ServerProcess::start_on(bind, &args)
}

fn ca(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// `chat-client --tls-ca CA HOST PORT NAME`.
fn tls_client(host: &str, port: u16, name: &str, ca: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
    command
        .arg("--tls-ca")
        .arg(ca)
        .args([host, &port.to_string(), name])
        .env_remove("NO_COLOR")
        .env("HOME", std::env::temp_dir())
        .env_remove("XDG_STATE_HOME");
    command
}

#[test]
fn plain_and_tls_clients_message_each_other_through_one_port() {
    let dir = TempDir::new("tls-mixed");
    let mut server = tls_server(&dir.0, "127.0.0.1", &[]);
    let plain_bob = Follower::start(&mut server, "bob", &[]);
    let tls_carol = Follower::start(
        &mut server,
        "carol",
        &["--tls-ca", ca(&dir.0).to_str().unwrap()],
    );
    // Over TLS to a plain user, by name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let run = run_client(
            tls_client(host, server.port, "alice", &ca(&dir.0)),
            b"send bob hello over TLS\nsend carol and to you\n",
        );
        eqnice!("", run.stderr);
        eqnice!(0, run.status);
        eqnice!("alice: hello over TLS", plain_bob.line());
        eqnice!("alice: and to you", tls_carol.line());
    }
    // A plain v1 peer to a TLS user.
    let mut dave = server.login("dave");
    dave.send("carol", "plain to TLS");
    eqnice!("dave: plain to TLS", tls_carol.line());
}

#[test]
fn require_tls_refuses_plain_clients_with_a_clear_error() {
    let dir = TempDir::new("tls-require");
    let mut server = tls_server(&dir.0, "127.0.0.1", &["--require-tls"]);
    let mut raw = RawClient::open(server.port);
    raw.handshake(b"plain");
    eqnice!(
        Frame::err("this server accepts TLS connections only (chat-client --tls)\n"),
        raw.frame()
    );
    raw.expect_closed();
    let run = run_client(client_command(server.port, "plain"), b"send x hi\n");
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: error: this server accepts TLS connections only (chat-client --tls)\n",
        run.stderr
    );
    // TLS clients are welcome.
    let _bob = Follower::start(
        &mut server,
        "bob",
        &["--tls-ca", ca(&dir.0).to_str().unwrap()],
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_exit_3() {
    let dir = TempDir::new("tls-ca-a");
    let other = TempDir::new("tls-ca-b");
    // Only to create another CA in `other`.
    drop(tls_server(&other.0, "127.0.0.1", &[]));
    let server = tls_server(&dir.0, "127.0.0.1", &[]);
    let run = run_client(
        tls_client("127.0.0.1", server.port, "alice", &ca(&other.0)),
        b"send bob must not go out\n",
    );
    eqnice!(3, run.status);
    assert!(
        run.stderr.starts_with(
            "chat-client: TLS handshake with 127.0.0.1 failed: invalid peer certificate"
        ),
        "{}",
        run.stderr
    );
    // It says what to do about it.
    assert!(run.stderr.contains("--tls-ca FILE"), "{}", run.stderr);
    assert!(run.stderr.contains("DIR/ca.pem"), "{}", run.stderr);
    // --tls alone trusts only the system's roots, which never signed it.
    let mut command = client_command(server.port, "alice");
    command.arg("--tls");
    let run = run_client(command, b"");
    eqnice!(3, run.status);
    assert!(run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
    assert!(run.stderr.contains("--tls-ca FILE"), "{}", run.stderr);
}

#[test]
fn a_wrong_host_name_is_refused_with_exit_3() {
    let dir = TempDir::new("tls-name");
    // The certificate names localhost, 127.0.0.1 and ::1; this address is
    // none of them.
    let server = tls_server(&dir.0, "127.0.0.2", &[]);
    let run = run_client(
        tls_client("127.0.0.2", server.port, "alice", &ca(&dir.0)),
        b"",
    );
    eqnice!(3, run.status);
    assert!(
        run.stderr.contains("failed: invalid peer certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_stalled_tls_handshake_is_closed_by_the_handshake_timeout() {
    let dir = TempDir::new("tls-stall");
    let server = tls_server(&dir.0, "127.0.0.1", &["--handshake-timeout", "300ms"]);
    let mut stalled = RawClient::open(server.port);
    let started = Instant::now();
    // The start of a TLS record, then nothing.
    stalled.write(&[0x16, 0x03, 0x01]);
    let mut byte = [0u8; 1];
    let closed = match stalled.stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "the connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn a_renewed_certificate_is_used_after_reload_without_a_restart() {
    let dir = TempDir::new("tls-renew");
    let renewed = TempDir::new("tls-renew-new");
    let mut server = tls_server(&dir.0, "127.0.0.1", &[]);
    drop(tls_server(&renewed.0, "127.0.0.1", &[]));
    for file in ["server.pem", "server.key"] {
        std::fs::copy(renewed.0.join(file), dir.0.join(file)).unwrap();
    }
    server.console("reload-tls");
    eqnice!("TLS certificate reloaded", server.stdout_line());
    let run = run_client(
        tls_client("localhost", server.port, "alice", &ca(&renewed.0)),
        b"",
    );
    eqnice!(0, run.status);
    let run = run_client(
        tls_client("localhost", server.port, "alice", &ca(&dir.0)),
        b"",
    );
    eqnice!(3, run.status);
}

#[test]
fn tls_to_a_plain_server_fails_clearly_instead_of_falling_back() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("tls-plain-server");
    // Any CA will do: the server never gets as far as a certificate.
    drop(tls_server(&dir.0, "127.0.0.1", &[]));
    let run = run_client(
        tls_client("127.0.0.1", server.port, "alice", &ca(&dir.0)),
        b"send bob never in clear\n",
    );
    eqnice!(3, run.status);
    assert!(
        run.stderr.contains("the server does not seem to speak TLS"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_tls_user_that_pauses_reading_still_gets_a_burst_whole_and_in_order() {
    let dir = TempDir::new("tls-burst");
    let mut server = tls_server(&dir.0, "127.0.0.1", &[]);
    let carol = Follower::start(
        &mut server,
        "carol",
        &["--tls-ca", ca(&dir.0).to_str().unwrap()],
    );
    let alice = server.login("alice");
    // Carol stops reading, so the server's writes to her fill the socket
    // and leave encrypted records behind for a later flush.
    let pid = carol.child.0.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    let count = 4000;
    let content = "x".repeat(900);
    let mut writer = alice.stream.try_clone().unwrap();
    let burst: Vec<u8> = (0..count)
        .flat_map(|i| crate::common::message(b"carol", format!("{i:05} {content}").as_bytes()))
        .collect();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&burst).expect("send the burst");
    });
    std::thread::sleep(Duration::from_millis(400));
    signal("-CONT");
    for i in 0..count {
        eqnice!(format!("alice: {i:05} {content}"), carol.line());
    }
    sender.join().unwrap();
}

/// User and system CPU seconds a process has used, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("a stat line")
        .1
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // The kernel's USER_HZ, 100 on Linux.
    ticks / 100.0
}

#[test]
fn peers_stalled_after_one_byte_cost_a_tls_server_no_cpu() {
    let dir = TempDir::new("tls-one-byte");
    let server = tls_server(&dir.0, "127.0.0.1", &["-q"]);
    // A lone 0x16 could still open TLS or a 22-byte name: each waits.
    let stalled: Vec<RawClient> = (0..500)
        .map(|_| {
            let mut client = RawClient::open(server.port);
            client.write(&[0x16]);
            client
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(server.pid()) - before;
    // Re-polled on a timer they cost 0.75 s of CPU in these 2 s; waiting
    // for input, nothing.
    assert!(used < 0.25, "the server used {used:.2} s of CPU");
    drop(stalled);
}

#[test]
fn a_silent_plain_peer_on_a_tls_server_gets_one_handshake_timeout_not_two() {
    let dir = TempDir::new("tls-silent");
    let server = tls_server(&dir.0, "127.0.0.1", &["--handshake-timeout", "1s"]);
    for first in [&[][..], &[0x16][..]] {
        let mut silent = RawClient::open(server.port);
        let started = Instant::now();
        silent.write(first);
        eqnice!(
            Frame::err("no username received within 1s\n"),
            silent.frame()
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_millis(1700),
            "{first:?}: {waited:?}"
        );
    }
}

#[test]
fn an_encrypted_key_is_named_as_such() {
    let dir = TempDir::new("tls-encrypted-key");
    // Only to create a certificate in `dir`.
    drop(tls_server(&dir.0, "127.0.0.1", &[]));
    let encrypted = dir.0.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkq\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["0", "--bind", "127.0.0.1", "--tls-cert"])
        .arg(dir.0.join("server.pem"))
        .arg("--tls-key")
        .arg(&encrypted)
        .output()
        .unwrap();
    eqnice!(Some(1), output.status.code());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("encrypted keys are not supported"),
        "{stderr}"
    );
}
