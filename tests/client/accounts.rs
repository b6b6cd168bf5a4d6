//! Registered names through the real binaries: passwords over TLS, v1
//! peers refused a registered name, back-off on guessing, the password kept
//! out of logs and `ps`, and `chat-server passwd` with a running server.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use expectrl::Expect;

use crate::common::{run_client, spawn_piped, Follower, Frame, RawClient, ServerProcess};
use crate::eqnice;
use crate::interactive::{spawn_in_pty, TempDir};

/// An accounts file in `dir` with these names and passwords, hashed with
/// argon2id at a tiny cost so that tests stay quick (the server reads the
/// cost from each hash).
pub(crate) fn accounts_file(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"pmchat-test-salt").unwrap();
    let mut text = String::from("# test accounts\n");
    for (name, password) in entries {
        let hash = argon.hash_password(password.as_bytes(), &salt).unwrap();
        text.push_str(&format!("{name}:{hash}\n"));
    }
    let path = dir.join("accounts");
    std::fs::write(&path, text).unwrap();
    path
}

/// A TLS server (self-signed set in `dir`) with `--accounts`.
pub(crate) fn server_with_accounts(dir: &Path, accounts: &Path, extra: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--tls-self-signed",
        dir.to_str().unwrap(),
        "--accounts",
        accounts.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_on("127.0.0.1", &args)
}

/// `chat-client --tls-ca DIR/ca.pem localhost PORT NAME`, without any
/// password from the environment.
pub(crate) fn tls_client(dir: &Path, port: u16, name: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
    command
        .arg("--tls-ca")
        .arg(dir.join("ca.pem"))
        .args(["localhost", &port.to_string(), name])
        .env_remove("PMCHAT_PASSWORD")
        .env("HOME", std::env::temp_dir())
        .env_remove("XDG_STATE_HOME");
    command
}

pub(crate) fn with_password(mut command: Command, password: &str) -> Command {
    command.env("PMCHAT_PASSWORD", password);
    command
}

#[test]
fn a_registered_name_is_taken_only_with_its_password() {
    let dir = TempDir::new("accounts-login");
    let accounts = accounts_file(&dir.0, &[("alice", "correct horse")]);
    let mut server = server_with_accounts(&dir.0, &accounts, &[]);
    let bob = Follower::start(&mut server, "bob", &[]);

    let run = run_client(tls_client(&dir.0, server.port, "alice"), b"send bob one\n");
    eqnice!(3, run.status);
    assert!(
        run.stderr.starts_with(
            "chat-client: error: 'alice' is a registered name: a password is required\n"
        ),
        "{}",
        run.stderr
    );

    let wrong = with_password(tls_client(&dir.0, server.port, "alice"), "battery staple");
    let run = run_client(wrong, b"send bob two\n");
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: error: wrong password for 'alice'\n",
        run.stderr
    );

    let password_file = dir.0.join("password");
    std::fs::write(&password_file, "correct horse\n").unwrap();
    let with_file = || {
        let mut right = tls_client(&dir.0, server.port, "alice");
        right.arg("--password-file").arg(&password_file);
        right
    };
    // A password file others can read works, with a warning.
    let readable = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(&password_file, readable).unwrap();
    let run = run_client(with_file(), b"send bob three\n");
    eqnice!(
        format!(
            "chat-client: warning: {} can be read by other users (mode 644); chmod 600 it\n",
            password_file.display()
        ),
        run.stderr
    );
    eqnice!(0, run.status);
    // Nothing the refused logins sent got through.
    eqnice!("alice: three", bob.line());
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(&password_file, private).unwrap();
    let run = run_client(with_file(), b"send bob four\n");
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    eqnice!("alice: four", bob.line());
}

#[test]
fn a_v1_peer_is_refused_a_registered_name_and_served_on_a_free_one() {
    let dir = TempDir::new("accounts-v1");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let mut server = server_with_accounts(&dir.0, &accounts, &[]);
    let mut impostor = RawClient::open(server.port);
    impostor.handshake(b"alice");
    impostor.send("bob", "hi, it's alice");
    eqnice!(
        Frame::err("'alice' is a registered name; log in with a client that supports passwords\n"),
        impostor.frame()
    );
    impostor.expect_closed();

    let mut bob = server.login("bob");
    let mut dave = server.login("dave");
    dave.send("bob", "free names stay first-come");
    eqnice!(
        Frame::msg("dave", "free names stay first-come"),
        bob.frame()
    );
}

#[test]
fn a_silent_v1_peer_asking_for_a_registered_name_is_refused_within_about_a_second() {
    let dir = TempDir::new("accounts-silent");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    let started = Instant::now();
    let mut impostor = RawClient::open(server.port);
    impostor.handshake(b"alice");
    eqnice!(
        Frame::err("'alice' is a registered name; log in with a client that supports passwords\n"),
        impostor.frame()
    );
    // Not the whole 10 s handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused after {:?}",
        started.elapsed()
    );
    impostor.expect_closed();
}

#[test]
fn passwords_are_refused_in_clear_unless_both_sides_allow_it() {
    let dir = TempDir::new("accounts-plain");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let plain_client = |port: u16, extra: &[&str]| {
        let mut command = crate::common::client_command(port, "alice");
        command.env("PMCHAT_PASSWORD", "pw").args(extra);
        command
    };
    let accounts_arg = accounts.to_str().unwrap();
    let server = ServerProcess::start(&["--accounts", accounts_arg]);
    // The client keeps the password to itself…
    let run = run_client(plain_client(server.port, &[]), b"");
    eqnice!(3, run.status);
    assert!(
        run.stderr.contains("not sent over a plain connection"),
        "{}",
        run.stderr
    );
    // …and the server refuses one sent anyway, unchecked.
    let run = run_client(
        plain_client(server.port, &["--allow-plaintext-password"]),
        b"",
    );
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: error: passwords are accepted over TLS only (chat-client --tls); the password was not checked\n",
        run.stderr
    );
    drop(server);

    let server = ServerProcess::start(&["--accounts", accounts_arg, "--allow-plaintext-passwords"]);
    let run = run_client(
        plain_client(server.port, &["--allow-plaintext-password"]),
        b"",
    );
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
}

#[test]
fn registered_only_refuses_free_names() {
    let dir = TempDir::new("accounts-only");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let server = server_with_accounts(&dir.0, &accounts, &["--registered-only"]);
    let run = run_client(tls_client(&dir.0, server.port, "mallory"), b"");
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: error: 'mallory' is not a registered name, and this server accepts registered names only\n",
        run.stderr
    );
    let run = run_client(
        with_password(tls_client(&dir.0, server.port, "alice"), "pw"),
        b"",
    );
    eqnice!(0, run.status);
}

#[test]
fn guessing_backs_off_and_the_fifth_guess_is_measurably_delayed() {
    let dir = TempDir::new("accounts-backoff");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    let guess = |n: usize| {
        let started = Instant::now();
        let command = with_password(
            tls_client(&dir.0, server.port, "alice"),
            &format!("guess{n}"),
        );
        let run = run_client(command, b"");
        eqnice!(3, run.status);
        eqnice!(
            "chat-client: error: wrong password for 'alice'\n",
            run.stderr
        );
        started.elapsed()
    };
    let times: Vec<Duration> = (1..=5).map(guess).collect();
    // Three free guesses, then 0.5 s, then 1 s.
    assert!(
        times[4] >= times[0] + Duration::from_millis(800),
        "the fifth guess took {:?}, the first {:?}",
        times[4],
        times[0]
    );
    assert!(
        times[3] >= times[0] + Duration::from_millis(300),
        "{times:?}"
    );
}

#[test]
fn an_emptied_accounts_file_frees_no_name_until_the_operator_says_so() {
    let dir = TempDir::new("accounts-emptied");
    let accounts = accounts_file(&dir.0, &[("alice", "pw")]);
    let mut server = server_with_accounts(&dir.0, &accounts, &[]);
    std::fs::write(&accounts, "").unwrap();
    // Well past the half-second poll: alice is still registered.
    std::thread::sleep(Duration::from_millis(1200));
    let mut impostor = RawClient::open(server.port);
    impostor.handshake(b"alice");
    impostor.send("bob", "it's me");
    eqnice!(
        Frame::err("'alice' is a registered name; log in with a client that supports passwords\n"),
        impostor.frame()
    );
    server.console("reload-accounts");
    assert!(server.stdout_line().contains("reload-accounts --force"));
    server.console("reload-accounts --force");
    let reply = server.stdout_line();
    eqnice!(
        "accounts reloaded: 0 registered name(s), 0 added, 1 removed",
        reply.trim_end()
    );
    server.login("alice");
}

#[test]
fn passwd_runs_at_once_lose_no_entry() {
    let dir = TempDir::new("accounts-concurrent");
    let file = dir.0.join("accounts");
    for round in 0..5 {
        let names: Vec<String> = (0..4).map(|i| format!("user{round}x{i}")).collect();
        let runs: Vec<_> = names
            .iter()
            .map(|name| {
                let (file, name) = (file.clone(), name.clone());
                std::thread::spawn(move || passwd(&file, &name, "pw"))
            })
            .collect();
        for run in runs {
            assert!(run.join().unwrap().status.success());
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for name in &names {
            assert!(
                text.contains(&format!("{name}:$argon2id$")),
                "{name} lost:\n{text}"
            );
        }
    }
}

#[test]
fn passwd_on_a_symbolic_link_updates_the_file_it_points_to() {
    let dir = TempDir::new("accounts-symlink");
    let real = dir.0.join("real-accounts");
    let link = dir.0.join("accounts");
    assert!(passwd(&real, "alice", "pw").status.success());
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(passwd(&link, "bob", "pw").status.success());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.contains("alice:") && text.contains("bob:"), "{text}");
}

#[test]
fn the_password_appears_neither_in_logs_nor_in_ps() {
    const SECRET: &str = "Zq8-unmistakable-secret";
    let dir = TempDir::new("accounts-secret");
    let accounts = accounts_file(&dir.0, &[("alice", SECRET)]);
    let mut server = server_with_accounts(&dir.0, &accounts, &["-vv"]);
    // A wrong guess with the secret as a prefix, then the real login kept
    // open so that its command line can be read.
    let wrong = with_password(
        tls_client(&dir.0, server.port, "alice"),
        &format!("{SECRET}x"),
    );
    eqnice!(3, run_client(wrong, b"").status);
    let mut follower = with_password(tls_client(&dir.0, server.port, "alice"), SECRET);
    follower.arg("--follow");
    let mut alice = spawn_piped(follower);
    server.wait_online("alice");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", alice.0.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("alice") && !cmdline.contains(SECRET),
        "{cmdline}"
    );
    alice.0.kill().unwrap();
    alice.wait();
    server.console("exit");
    server.wait_exit();
    let log = server.stderr();
    assert!(
        log.contains("alice"),
        "the log should mention the logins:\n{log}"
    );
    assert!(
        !log.contains(SECRET),
        "the password leaked into the log:\n{log}"
    );
}

/// Runs `chat-server passwd FILE NAME` with `password` on a pipe.
fn passwd(file: &Path, name: &str, password: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .arg("passwd")
        .arg(file)
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn passwd_round_trip_reaches_a_running_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("accounts-passwd");
    let file = dir.0.join("accounts");
    let made = passwd(&file, "alice", "first password");
    assert!(made.status.success(), "{made:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    eqnice!(0o600, mode & 0o777);
    assert!(!String::from_utf8_lossy(&std::fs::read(&file).unwrap()).contains("first password"));

    let mut server = server_with_accounts(&dir.0, &file, &[]);
    let login = |password: &str| {
        let command = with_password(tls_client(&dir.0, server.port, "alice"), password);
        run_client(command, b"")
    };
    eqnice!(0, login("first password").status);

    // carol first: once alice's new password works, the file the server
    // read is the last one, which holds carol too. (The other way round,
    // the server could catch the rewrite for alice and not yet carol's.)
    let registered = passwd(&file, "carol", "carol's");
    assert!(registered.status.success(), "{registered:?}");
    let changed = passwd(&file, "alice", "second password");
    assert!(changed.status.success(), "{changed:?}");
    // The server notices the rewrite by itself within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while login("first password").status == 0 {
        assert!(Instant::now() < deadline, "the old password still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    eqnice!(0, login("second password").status);
    // The client has exited; its session may take a moment to end.
    server.wait_offline("alice");
    server.console("accounts");
    eqnice!("2 registered, 0 online", server.stdout_line());
    eqnice!("  alice", server.stdout_line());
    eqnice!("  carol", server.stdout_line());

    let refused = passwd(&file, "bad name", "x");
    eqnice!(Some(1), refused.status.code());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid username"));
}

#[test]
fn the_editor_asks_for_the_password_without_echo_and_again_after_a_typo() {
    let dir = TempDir::new("accounts-repl");
    let accounts = accounts_file(&dir.0, &[("alice", "typed secret")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    let mut session = spawn_in_pty(tls_client(&dir.0, server.port, "alice"), &dir);
    let first = session.expect("Password for alice: ").unwrap();
    // Being asked is not an error.
    let before = String::from_utf8_lossy(first.before()).into_owned();
    assert!(!before.contains("error"), "{before}");
    // A typo is not the end: the editor asks again.
    session.send_line("typed secert").unwrap();
    session.expect("wrong password for 'alice'").unwrap();
    session.expect("Password for alice (try 2 of 3): ").unwrap();
    session.send_line("typed secret").unwrap();
    let seen = session.expect("alice> ").unwrap();
    let seen = String::from_utf8_lossy(seen.before()).into_owned();
    assert!(seen.contains("password accepted"), "{seen}");
    assert!(
        !seen.contains("typed secret"),
        "the password was echoed: {seen}"
    );
    session.send_line("exit").unwrap();
}

#[test]
fn passwd_on_a_terminal_asks_twice_without_echo() {
    let dir = TempDir::new("accounts-passwd-tty");
    let file = dir.0.join("accounts");
    let passwd_in_pty = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command.arg("passwd").arg(&file).arg("alice");
        let mut session = expectrl::session::OsSession::spawn(command).expect("spawn in a pty");
        session.set_expect_timeout(Some(Duration::from_secs(20)));
        session
    };
    let mut typo = passwd_in_pty();
    typo.expect("New password for 'alice': ").unwrap();
    typo.send_line("first try").unwrap();
    typo.expect("Again: ").unwrap();
    typo.send_line("first tyr").unwrap();
    typo.expect("the two passwords differ").unwrap();
    assert!(!file.exists(), "nothing is written after a mismatch");

    let mut set = passwd_in_pty();
    set.expect("New password for 'alice': ").unwrap();
    set.send_line("hidden words").unwrap();
    set.expect("Again: ").unwrap();
    set.send_line("hidden words").unwrap();
    let seen = set.expect("password for 'alice' set").unwrap();
    let seen = String::from_utf8_lossy(seen.before()).into_owned();
    assert!(
        !seen.contains("hidden words"),
        "the password was echoed: {seen}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
}
