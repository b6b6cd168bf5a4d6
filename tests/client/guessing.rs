//! Password guessing through many connections at once: the schedule of
//! checks per name holds whatever the number of connections.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::accounts::{accounts_file, server_with_accounts, tls_client, with_password};
use crate::interactive::TempDir;

#[test]
fn sixty_guesses_at_once_get_the_checks_of_the_schedule_and_no_more() {
    let dir = TempDir::new("guessing-parallel");
    let accounts = accounts_file(&dir.0, &[("alice", "right")]);
    let server = server_with_accounts(&dir.0, &accounts, &[]);
    let started = Instant::now();
    let guesses: Vec<_> = (0..60)
        .map(|n| {
            let mut command = with_password(
                tls_client(&dir.0, server.port, "alice"),
                &format!("guess{n}"),
            );
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            command.spawn().expect("start chat-client")
        })
        .collect();
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
