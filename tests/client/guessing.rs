//! Password guessing through many connections at once: the schedule of
//! checks per name holds whatever the number of connections.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::accounts::{accounts_file, server_with_accounts, tls_client, with_password};
use crate::interactive::TempDir;

/// Starts `count` logins to alice with wrong passwords at once, from an
/// attacker's state directory in `dir`; their stderr is piped.
fn guess_at_once(dir: &std::path::Path, port: u16, count: usize) -> Vec<std::process::Child> {
    (0..count)
        .map(|n| {
            let mut command = with_password(tls_client(dir, port, "alice"), &format!("guess{n}"));
            command
                .env("XDG_STATE_HOME", dir.join("attacker"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            command.spawn().expect("start chat-client")
        })
        .collect()
}

#[test]
fn sixty_guesses_at_once_get_the_checks_of_the_schedule_and_no_more() {
    let dir = TempDir::new("guessing-parallel");
    let accounts = accounts_file(&dir.0, &[("alice", "right")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    let started = Instant::now();
    let guesses = guess_at_once(&dir.0, server.port, 60);
    let mut checked = 0;
    for guess in guesses {
        let output = guess.wait_with_output().unwrap();
        assert_eq!(Some(3), output.status.code(), "every guess is refused");
        if String::from_utf8_lossy(&output.stderr).contains("wrong password") {
            checked += 1;
        }
    }
    // Three free checks, then one after 0.5, 1, 2, 4 and 8 s: eight in all
    // within 30 s; the rest are refused at once, unchecked.
    assert!(checked <= 8, "{checked} of 60 guesses were checked");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_device_that_logged_in_before_gets_in_at_once_during_a_guessing_flood() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("guessing-token");
    let accounts = accounts_file(&dir.0, &[("alice", "right")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    // alice's phone has logged in before; her new laptop has not.
    let phone = dir.0.join("phone-state");
    let laptop = dir.0.join("laptop-state");
    let login = |state: &std::path::Path| {
        let mut command = with_password(tls_client(&dir.0, server.port, "alice"), "right");
        command.env("XDG_STATE_HOME", state);
        let started = Instant::now();
        let run = crate::common::run_client(command, b"");
        (run.status, started.elapsed())
    };
    assert_eq!(0, login(&phone).0);
    let tokens = phone.join("pmchat/device-tokens");
    let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
    assert_eq!(0o600, mode & 0o777);
    assert!(std::fs::read_to_string(&tokens)
        .unwrap()
        .contains(" alice "));
    // Someone guesses alice's password from twenty connections at once:
    // the name's schedule is full for the next half minute.
    let guesses = guess_at_once(&dir.0, server.port, 20);
    std::thread::sleep(Duration::from_secs(1));
    // The phone gets in at once; the laptop, right password and all, is
    // turned away until the guessing stops.
    let (status, took) = login(&phone);
    assert_eq!(0, status);
    assert!(took < Duration::from_secs(3), "the phone took {took:?}");
    let (status, _) = login(&laptop);
    assert_eq!(3, status);
    for mut guess in guesses {
        let _ = guess.kill();
        let _ = guess.wait();
    }
}
