//! `--exec CMD`: each received message handed to a command instead of
//! printed, effectively once: the content on the command's stdin, who sent
//! it, its id and time in `PMCHAT_FROM`, `PMCHAT_ID`, `PMCHAT_TS`; the
//! inbox cursor moves past a message only once the command exited 0 for
//! it. A failing command is run again with back-off, and after
//! [`TRIES`] failures the client stops with an error, its cursor still
//! before that message, so the next run starts with it again.
//!
//! Runs on the stdout thread (see `stdout`), one message at a time, in
//! order: while a command runs, the receiving side waits, and the server
//! holds what comes meanwhile.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs of the command for one message before the client gives up.
pub const TRIES: u32 = 5;
/// The wait after the first failure; doubled after each further one.
const FIRST_WAIT: Duration = Duration::from_millis(250);

/// One received message for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id in the user's log (`None` from a server without an inbox).
    pub id: Option<u64>,
    /// When the server logged it, in milliseconds since the epoch.
    pub ts_ms: Option<u64>,
    pub from: String,
    pub content: Vec<u8>,
    /// False for a copy of a message the user sent from another device:
    /// not run, but the cursor moves past it.
    pub run: bool,
}

/// The command to run, through `sh -c`.
#[derive(Debug, Clone)]
pub struct Exec {
    command: String,
}

impl Exec {
    pub fn new(command: String) -> Exec {
        Exec { command }
    }

    /// Runs the command for `job` until it exits 0, at most [`TRIES`]
    /// times with a growing wait between; the error says why it gave up.
    pub fn run(&self, job: &Job) -> Result<(), String> {
        let mut wait = FIRST_WAIT;
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match self.run_once(job) {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            if attempt < TRIES {
                crate::err_line!(
                    "chat-client: --exec: {last} (message {}); trying again in {}",
                    describe(job),
                    crate::args::format_wait(wait)
                );
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(format!(
            "--exec: {last} for message {} {TRIES} times; stopping (the next run starts with it)",
            describe(job)
        ))
    }

    fn run_once(&self, job: &Job) -> Result<(), String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .env("PMCHAT_FROM", &job.from)
            .stdin(Stdio::piped());
        if let Some(id) = job.id {
            command.env("PMCHAT_ID", id.to_string());
        }
        if let Some(ts) = job.ts_ms {
            let time = std::time::UNIX_EPOCH + Duration::from_millis(ts);
            command.env("PMCHAT_TS", crate::clock::Stamp::at(time).rfc3339);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run the command: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is its own business.
            let _ = stdin.write_all(&job.content);
        }
        let status = child
            .wait()
            .map_err(|e| format!("cannot wait for the command: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the command failed ({status})"))
        }
    }
}

fn describe(job: &Job) -> String {
    match job.id {
        Some(id) => format!("{id} from {}", job.from),
        None => format!("from {}", job.from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(content: &str) -> Job {
        Job {
            id: Some(7),
            ts_ms: Some(0),
            from: "alice".into(),
            content: content.as_bytes().to_vec(),
            run: true,
        }
    }

    #[test]
    fn the_command_gets_the_content_and_the_message_details() {
        let dir = std::env::temp_dir().join(format!("pmchat-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let exec = Exec::new(format!(
            "{{ cat; echo \" $PMCHAT_FROM $PMCHAT_ID\"; }} > {}",
            out.display()
        ));
        assert_eq!(exec.run(&job("hello")), Ok(()));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello alice 7\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
