//! The client on a server that keeps messages (`chat-server --store`):
//! stored receipts, `--until-caught-up`, `--since`, `--json` ids, and a
//! `--follow` pipeline that resumes from its cursor across restarts of
//! itself and of the server.

use std::path::Path;

use expectrl::Expect;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::accounts::accounts_file;
use crate::common::{client_command, lines_of, run_client, ClientOutput, ServerProcess, TIMEOUT};
use crate::interactive::TempDir;

fn server(dir: &Path) -> ServerProcess {
    let accounts = accounts_file(dir, &[("alice", "pw"), ("bob", "pw")]);
    let store = dir.join("store.redb");
    // History enough for a whole flood: a follower stopped for a moment
    // must find everything it missed (past --history-max the oldest go).
    ServerProcess::start(&[
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
        "--store",
        store.to_str().unwrap(),
        "--history-max",
        "1000000",
    ])
}

/// `chat-client … NAME` logging in with its password, its state in `dir`.
fn client(server: &ServerProcess, dir: &Path, name: &str) -> Command {
    let mut command = client_command(server.port, name);
    command
        .env("PMCHAT_PASSWORD", "pw")
        .env("XDG_STATE_HOME", dir.join(format!("state-{name}")))
        .arg("--allow-plaintext-password");
    command
}

fn send(server: &ServerProcess, dir: &Path, lines: &str, extra: &[&str]) -> ClientOutput {
    let mut command = client(server, dir, "alice");
    command.args(extra);
    run_client(command, lines.as_bytes())
}

/// A server where alice left bob three messages: one, two, three.
fn three_wait_for_bob(dir: &Path) -> ServerProcess {
    let server = server(dir);
    let sent = send(
        &server,
        dir,
        "send bob one\nsend bob two\nsend bob three\n",
        &[],
    );
    assert_eq!(sent.status, 0, "stderr: {}", sent.stderr);
    server
}

fn caught_up(server: &ServerProcess, dir: &Path, extra: &[&str]) -> ClientOutput {
    let mut command = client(server, dir, "bob");
    command.arg("--until-caught-up").args(extra);
    let out = run_client(command, b"");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    out
}

#[test]
fn messages_stored_while_away_are_printed_once_across_client_and_server_restarts() {
    let dir = TempDir::new("inbox-catch-up");
    let mut server = server(&dir.0);
    // Stored, not refused: the script's lines are all accounted for.
    let sent = send(&server, &dir.0, "send bob one\nsend bob two\n", &[]);
    assert_eq!(sent.status, 0, "stderr: {}", sent.stderr);
    let json = send(
        &server,
        &dir.0,
        "send bob three\n",
        &["--json", "--receipts"],
    );
    assert!(
        json.stdout.contains("\"type\":\"stored\""),
        "{}",
        json.stdout
    );

    let out = caught_up(&server, &dir.0, &[]);
    assert_eq!(out.stdout, "alice: one\nalice: two\nalice: three\n");
    // The cursor moved: nothing twice.
    assert_eq!(caught_up(&server, &dir.0, &[]).stdout, "");

    send(&server, &dir.0, "send bob four\n", &[]);
    server.signal("TERM");
    server.wait_exit();
    let server = self::server(&dir.0);
    assert_eq!(caught_up(&server, &dir.0, &[]).stdout, "alice: four\n");

    // --since overrides the cursor; JSON carries ids and times.
    let all = caught_up(&server, &dir.0, &["--since", "all", "--json"]);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", all.stdout);
    assert!(
        lines[0].starts_with("{\"type\":\"message\",\"id\":"),
        "{}",
        lines[0]
    );
    assert!(lines[3].contains("\"from\":\"alice\",\"content\":\"four\""));
    assert!(lines[0].contains("\"ts\":\"20"), "{}", lines[0]);
    let second_id: String = lines[1]
        .split("\"id\":")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let after = caught_up(&server, &dir.0, &["--since", &second_id]);
    assert_eq!(after.stdout, "alice: three\nalice: four\n");
    // A duration: what came in within the last hour.
    assert_eq!(
        caught_up(&server, &dir.0, &["--since", "1h"])
            .stdout
            .lines()
            .count(),
        4
    );
}

#[test]
fn until_caught_up_on_a_name_without_an_inbox_fails_clearly() {
    let dir = TempDir::new("inbox-none");
    let server = server(&dir.0);
    let mut command = client_command(server.port, "carol");
    command
        .env("XDG_STATE_HOME", dir.0.join("state-carol"))
        .arg("--until-caught-up");
    let out = run_client(command, b"");
    assert_eq!(
        out.status, 1,
        "stdout: {} stderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stderr.contains("keeps no messages"), "{}", out.stderr);
}

#[test]
fn a_follower_stopped_and_restarted_20_times_during_a_flood_prints_every_message_exactly_once() {
    let dir = TempDir::new("inbox-flood");
    let mut server = server(&dir.0);
    const TOTAL: usize = 100_000;
    const RESTARTS: usize = 20;
    let script: String = (0..TOTAL).map(|i| format!("send bob m{i}\n")).collect();
    let port = server.port;
    let flood_dir = dir.0.clone();
    let flood = std::thread::spawn(move || {
        let mut command = client_command(port, "alice");
        command
            .env("PMCHAT_PASSWORD", "pw")
            .env("XDG_STATE_HOME", flood_dir.join("state-alice"))
            .arg("--allow-plaintext-password");
        run_client(command, script.as_bytes())
    });
    let mut printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + TIMEOUT * 12;
    let mut runs = 0;
    // Each run prints part of the flood and is stopped with SIGTERM while
    // messages keep coming; the next resumes from the cursor.
    // At least RESTARTS runs whatever the pace: each of the first ones is
    // stopped as soon as it printed something new, and once everything
    // is printed a run is stopped as soon as it is logged in (it must
    // print nothing).
    while printed.len() < TOTAL || runs < RESTARTS {
        runs += 1;
        let mut command = client(&server, &dir.0, "bob");
        command
            .arg("--follow")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        if printed.len() < TOTAL {
            // At least one line first: a SIGTERM before the client is up
            // would end it by the signal (and prove nothing).
            let want = if runs < RESTARTS {
                printed.len() + 1
            } else {
                TOTAL
            };
            while printed.len() < want {
                if Instant::now() > deadline {
                    let wrong = printed
                        .iter()
                        .enumerate()
                        .find(|(i, l)| **l != format!("alice: m{i}"));
                    panic!(
                        "{} of {TOTAL} printed in run {runs}; first out of order: {wrong:?}",
                        printed.len()
                    );
                }
                if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                    printed.push(line);
                }
            }
        } else {
            server.wait_online("bob");
        }
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "run {runs}: {status:?}");
        // Lines written before it stopped count too.
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
        // One session per name (for now): the next run waits until the
        // server let this one go.
        server.wait_offline("bob");
    }
    // Nothing is left over, and nothing came twice.
    assert_eq!(caught_up(&server, &dir.0, &[]).stdout, "");
    let sent = flood.join().unwrap();
    assert_eq!(sent.status, 0, "stderr: {}", sent.stderr);
    assert_eq!(printed.len(), TOTAL);
    for (i, line) in printed.iter().enumerate() {
        assert_eq!(line, &format!("alice: m{i}"));
    }
}

#[test]
fn exec_runs_a_command_once_per_message_retrying_one_that_fails() {
    let dir = TempDir::new("inbox-exec");
    let server = three_wait_for_bob(&dir.0);
    let out = dir.0.join("out");
    let count = dir.0.join("count");
    // Fails twice on "two", then succeeds.
    let script = format!(
        "content=$(cat); n=$(cat {count} 2>/dev/null || echo 0); \
         if [ \"$content\" = two ] && [ \"$n\" -lt 2 ]; then echo $((n + 1)) > {count}; exit 1; fi; \
         echo \"$PMCHAT_FROM $content ${{PMCHAT_ID:+id}} ${{PMCHAT_TS:+ts}}\" >> {out}",
        count = count.display(),
        out = out.display()
    );
    let run = caught_up(&server, &dir.0, &["--exec", &script]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "alice one id ts\nalice two id ts\nalice three id ts\n"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "2");
    // Each exactly once: a second run has nothing to do.
    caught_up(&server, &dir.0, &["--exec", &script]);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);

    // A command that keeps failing stops the run (exit 1) before the
    // message, which the next run processes.
    send(&server, &dir.0, "send bob four\n", &[]);
    let mut command = client(&server, &dir.0, "bob");
    command.args(["--until-caught-up", "--exec", "exit 3"]);
    let failed = run_client(command, b"");
    assert_eq!(failed.status, 1, "stderr: {}", failed.stderr);
    assert!(failed.stderr.contains("stopping"), "{}", failed.stderr);
    caught_up(&server, &dir.0, &["--exec", &script]);
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .ends_with("alice four id ts\n"));
}

#[test]
fn history_pages_back_through_a_conversation() {
    let dir = TempDir::new("inbox-history");
    let server = three_wait_for_bob(&dir.0);
    let mut command = client(&server, &dir.0, "bob");
    command
        .args(["--follow", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let errors = lines_of(child.stderr.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut input,
        b"history alice 2\nhistory alice 2\nhistory alice 2\n",
    )
    .unwrap();
    let mut history = Vec::new();
    let mut messages = 0;
    while history.len() < 3 || messages < 3 {
        let line = lines.recv_timeout(TIMEOUT).expect("a line");
        let content = line
            .split("\"content\":")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        if line.starts_with("{\"type\":\"history\"") {
            assert!(line.contains("\"from\":\"alice\""), "{line}");
            history.push(content);
        } else {
            messages += 1;
        }
    }
    // The newest two first, then the one before them; then no more.
    assert_eq!(history, ["\"two\"}", "\"three\"}", "\"one\"}"]);
    let notice = errors.recv_timeout(TIMEOUT).expect("a notice");
    assert!(notice.contains("no more history"), "{notice}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_editor_shows_what_came_while_you_were_away_then_pages_back() {
    let dir = TempDir::new("inbox-editor");
    let server = three_wait_for_bob(&dir.0);
    let mut command = client(&server, &dir.0, "bob");
    command.arg("--interactive");
    let mut bob = crate::interactive::spawn_in_pty(command, &dir);
    bob.expect("* 3 messages while you were away").unwrap();
    // With the times the server logged them.
    bob.expect(expectrl::Regex(r"\d\d:\d\d:\d\d alice: one"))
        .unwrap();
    bob.expect("alice: three").unwrap();
    bob.send_line("history alice 1").unwrap();
    bob.expect(expectrl::Regex(r"\d\d:\d\d:\d\d alice: three"))
        .unwrap();
    // The page before it, oldest first.
    bob.send_line("history alice 5").unwrap();
    bob.expect("alice: one").unwrap();
    bob.expect("alice: two").unwrap();
    bob.send_line("history alice").unwrap();
    bob.expect("* no more history").unwrap();
    bob.send_line("exit").unwrap();
}

/// A server where alice left bob a message ("waiting"), and bob's
/// `--until-caught-up` command.
fn one_waits_for_bob(dir: &Path) -> (ServerProcess, Command) {
    let server = server(dir);
    let sent = send(&server, dir, "send bob waiting\n", &[]);
    assert_eq!(sent.status, 0, "stderr: {}", sent.stderr);
    let mut bob = client(&server, dir, "bob");
    bob.arg("--until-caught-up");
    (server, bob)
}

#[test]
fn a_script_given_to_until_caught_up_is_sent_before_the_run_ends() {
    let dir = TempDir::new("inbox-caught-up-script");
    // bob catches up and answers in one run: the replay ends long before
    // the answers are accounted for, and they must not be dropped then.
    let (server, bob) = one_waits_for_bob(&dir.0);
    let out = run_client(bob, b"send alice noted\nsend alice noted again\nwho\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    // (The replay may also show bob's answers, as sent, when they reach
    // his log before it ends.) The `who` is answered before the end.
    let mut received: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("→ "))
        .collect();
    // (In either order: the replay and the answer to `who` race.)
    received.sort_unstable();
    assert_eq!(received, ["alice: waiting", "bob"], "{}", out.stdout);
    let mut alice = client(&server, &dir.0, "alice");
    alice.arg("--until-caught-up");
    let out = run_client(alice, b"");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "→ bob: waiting\nbob: noted\nbob: noted again\n");
}

#[test]
fn until_caught_up_on_a_terminal_prints_and_exits_instead_of_opening_the_editor() {
    let dir = TempDir::new("inbox-caught-up-terminal");
    let (_server, command) = one_waits_for_bob(&dir.0);
    let mut bob = crate::interactive::spawn_in_pty(command, &dir);
    bob.expect("alice: waiting").unwrap();
    bob.expect(expectrl::Eof).unwrap();
    use expectrl::process::unix::WaitStatus;
    match bob.get_process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("the client did not exit normally: {other:?}"),
    }
}

#[test]
fn count_works_with_exec_which_implies_follow() {
    let dir = TempDir::new("inbox-exec-count");
    let server = three_wait_for_bob(&dir.0);
    let out = dir.0.join("out");
    let mut bob = client(&server, &dir.0, "bob");
    let script = format!("cat >> {0}; echo >> {0}", out.display());
    bob.args(["--exec", &script, "--count", "2"]);
    let run = run_client(bob, b"");
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\n");
}
