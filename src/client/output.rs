//! Received frames on their way out: [`Output`] keeps the lines the
//! [`Renderer`] made for stdout and stderr and writes them in batches,
//! through the bounded writer that takes them to stdout
//! ([`super::stdout`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cursor::CursorFile;
use super::exec::{Exec, Job};
use super::frames::{LogEntry, Sink};
use super::receipts::Sent;
use super::render::{Renderer, Stream};
use super::stdout::{Chunk, StdoutWriter};
use crate::clock::Stamp;

/// Received frames on their way to stdout and stderr: lines pile up in
/// memory and are written when the caller calls [`Output::flush`], which it
/// does as soon as no further frame is immediately waiting, or when
/// [`Output::pending`] reaches [`FLUSH_AT`](super::frames::FLUSH_AT).
pub struct Output {
    /// How frames are shown.
    pub renderer: Renderer,
    /// Pending stdout text.
    stdout: String,
    /// Pending stderr text.
    stderr: String,
    /// Receive time of the frames being rendered (with `--timestamps`).
    stamp: Option<Stamp>,
    /// Started at the first write.
    writer: Option<StdoutWriter>,
    /// Where `stdout` ends after each log entry, and the entry's id: the
    /// writer moves the cursor past each once its line is written.
    marks: Vec<(usize, u64)>,
    /// The cursor file, until the writer takes it.
    cursor: Option<CursorFile>,
    /// End the session once the log is replayed (`--until-caught-up`).
    until_caught_up: bool,
    /// `--exec`: messages go to this command instead of stdout, until the
    /// writer takes it.
    exec: Option<Exec>,
    /// Messages for the command, not yet handed to the writer.
    jobs: Vec<Job>,
    /// Bytes of content in `jobs`.
    job_bytes: usize,
    /// The log was replayed (shared: the script's sender ends the run
    /// when its lines are accounted for after that).
    caught_up: Arc<AtomicBool>,
    /// Set once the whole script was handed to the socket: with
    /// `--until-caught-up` the run ends only after that.
    script_sent: Option<Arc<AtomicBool>>,
}

impl Output {
    /// Empty buffers.
    pub fn new(renderer: Renderer) -> Self {
        Output {
            renderer,
            stdout: String::new(),
            stderr: String::new(),
            stamp: None,
            writer: None,
            marks: Vec::new(),
            cursor: None,
            until_caught_up: false,
            caught_up: Arc::new(AtomicBool::new(false)),
            script_sent: None,
            exec: None,
            jobs: Vec::new(),
            job_bytes: 0,
        }
    }

    /// Hands every message to `exec` instead of printing it.
    pub fn exec(&mut self, exec: Exec) {
        self.exec = Some(exec);
    }

    /// True with `--exec`.
    pub fn has_exec(&self) -> bool {
        self.exec.is_some() || self.writer.as_ref().is_some_and(StdoutWriter::has_exec)
    }

    /// True if `--exec`'s command kept failing: the run ends in error.
    pub fn exec_failed(&self) -> bool {
        self.writer.as_ref().is_some_and(StdoutWriter::exec_failed)
    }

    fn push_job(&mut self, job: Job) {
        self.job_bytes += job.content.len() + job.from.len();
        self.jobs.push(job);
    }

    /// Keeps the inbox cursor in `cursor` as log entries are written;
    /// with `until_caught_up`, the session ends once the log is replayed.
    pub fn follow_log(&mut self, cursor: Option<CursorFile>, until_caught_up: bool) {
        self.cursor = cursor;
        self.until_caught_up = until_caught_up;
    }

    /// With `until_caught_up`: the run does not end when the log is
    /// replayed until `sent` is set (the script is out); the flag returned
    /// says the log was replayed.
    pub fn end_after_script(&mut self, sent: Arc<AtomicBool>) -> Arc<AtomicBool> {
        self.script_sent = Some(sent);
        Arc::clone(&self.caught_up)
    }

    /// Queues the line of a log entry, marking where it ends for the
    /// cursor.
    pub fn entry(&mut self, entry: &LogEntry<'_>) {
        if self.exec.is_some() {
            self.push_job(Job {
                id: Some(entry.id),
                ts_ms: Some(entry.ts_ms),
                from: String::from_utf8_lossy(entry.peer).into_owned(),
                content: entry.content.to_vec(),
                run: !entry.sent,
            });
            return;
        }
        self.renderer.entry(entry, &mut self.stdout);
        self.marks.push((self.stdout.len(), entry.id));
    }

    /// Queues the report of a message stored for later, if shown.
    pub fn stored(&mut self, sent: &Sent) {
        self.renderer
            .stored(sent, self.stamp.as_ref(), &mut self.stdout);
    }

    /// Sets the receive time for the frames that follow.
    pub fn set_stamp(&mut self, stamp: Stamp) {
        self.stamp = Some(stamp);
    }

    /// Queues a message line (or, with `--exec`, the message for the
    /// command).
    pub fn message(&mut self, from: &[u8], content: &[u8]) {
        if self.exec.is_some() {
            self.push_job(Job {
                id: None,
                ts_ms: None,
                from: String::from_utf8_lossy(from).into_owned(),
                content: content.to_vec(),
                run: true,
            });
            return;
        }
        self.renderer
            .message(from, content, self.stamp.as_ref(), &mut self.stdout);
    }

    /// Queues an error line.
    pub fn error(&mut self, code: &[u8], text: &[u8]) {
        let mut line = String::new();
        let stream = self
            .renderer
            .error(code, text, self.stamp.as_ref(), &mut line);
        self.queue(stream, &line);
    }

    /// Queues the report of an accepted message, if shown.
    pub fn accepted(&mut self, sent: &Sent) {
        self.renderer
            .accepted(sent, self.stamp.as_ref(), &mut self.stdout);
    }

    /// Queues the report of a refused message. JSON without `--receipts`
    /// also gets the `error` object it always had.
    pub fn refused(&mut self, sent: &Sent, code: &[u8], text: &[u8]) {
        let mut line = String::new();
        let stream = self
            .renderer
            .refused(sent, code, text, self.stamp.as_ref(), &mut line);
        self.queue(stream, &line);
    }

    /// Queues the answer to `who`, one name per line (JSON: one object).
    pub fn online(&mut self, names: &[String]) {
        let mut text = String::new();
        let stream = self
            .renderer
            .online(names, false, self.stamp.as_ref(), &mut text);
        self.queue(stream, &text);
    }

    /// Queues a presence event; plain batch output shows none.
    pub fn presence(&mut self, joined: bool, name: &[u8]) {
        let mut text = String::new();
        if self
            .renderer
            .presence(joined, name, false, self.stamp.as_ref(), &mut text)
            == Some(Stream::Stdout)
        {
            self.stdout.push_str(&text);
        }
    }

    /// Queues `text` for the stream it was rendered for.
    fn queue(&mut self, stream: Stream, text: &str) {
        match stream {
            Stream::Stdout => self.stdout.push_str(text),
            Stream::Stderr => self.stderr.push_str(text),
        }
    }

    /// Queues an already rendered stdout line.
    pub fn raw_stdout(&mut self, line: &str) {
        self.stdout.push_str(line);
    }

    /// Queues an already rendered stderr line.
    pub fn raw_stderr(&mut self, line: &str) {
        self.stderr.push_str(line);
    }

    /// Queues a local notice for stderr (`--json` leaves these as text).
    pub fn notice(&mut self, text: &str) {
        self.renderer.notice(text, &mut self.stderr);
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.stdout.len() + self.stderr.len() + self.job_bytes
    }

    /// Writes what is pending, waiting while stdout is full. A closed
    /// stdout comes back as `ErrorKind::BrokenPipe`; the caller treats it
    /// as a normal end. Stderr failures are dropped.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.stderr.is_empty() {
            // Errors about stderr have nowhere to be reported.
            let _ = io::stderr().write_all(self.stderr.as_bytes());
            self.stderr.clear();
        }
        if !self.stdout.is_empty() || !self.jobs.is_empty() {
            let writer = match &mut self.writer {
                Some(writer) => writer,
                None => self
                    .writer
                    .insert(StdoutWriter::start(self.cursor.take(), self.exec.take())?),
            };
            let text = std::mem::take(&mut self.stdout);
            let marks = std::mem::take(&mut self.marks);
            let jobs = std::mem::take(&mut self.jobs);
            self.job_bytes = 0;
            writer.write(Chunk { text, marks, jobs }).await?;
        }
        Ok(())
    }

    /// Completes when stdout is gone (a closed pipe): a listener that only
    /// waits for messages must notice it without another message to write.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        use smol::future::FutureExt;
        let gone = self.writer.as_ref().map(StdoutWriter::gone);
        let failed = async move {
            match gone {
                Some(gone) => gone.await,
                None => std::future::pending().await,
            }
        };
        failed.or(super::stdout::stdout_gone())
    }

    /// Flushes, then waits at most `bound` for stdout to take everything;
    /// false if it did not (or is gone).
    pub async fn finish(&mut self, bound: Duration) -> bool {
        if self.flush().await.is_err() {
            return false;
        }
        match &mut self.writer {
            Some(writer) => writer.finish(bound).await,
            None => true,
        }
    }
}

/// The receiving loop hands frames to an [`Output`] through this.
impl Sink for Output {
    fn set_stamp(&mut self, stamp: Stamp) {
        Output::set_stamp(self, stamp);
    }

    fn wants_stamps(&self) -> bool {
        self.renderer.timestamps
    }

    fn message(&mut self, from: &[u8], content: &[u8]) {
        Output::message(self, from, content);
    }

    fn message_marked(&mut self, from: &[u8], content: &[u8], e2e: bool) {
        if self.exec.is_some() {
            return Output::message(self, from, content);
        }
        self.renderer.message_marked(
            from,
            content,
            Some(e2e),
            self.stamp.as_ref(),
            &mut self.stdout,
        );
    }

    fn error(&mut self, code: &[u8], text: &[u8]) {
        Output::error(self, code, text);
    }

    fn online(&mut self, names: &[String]) {
        Output::online(self, names);
    }

    fn accepted(&mut self, sent: &Sent) {
        Output::accepted(self, sent);
    }

    fn refused(&mut self, sent: &Sent, code: &[u8], text: &[u8]) {
        Output::refused(self, sent, code, text);
    }

    fn presence(&mut self, joined: bool, name: &[u8]) {
        Output::presence(self, joined, name);
    }

    fn entry(&mut self, entry: &LogEntry<'_>) {
        Output::entry(self, entry);
    }

    fn stored(&mut self, sent: &Sent) {
        Output::stored(self, sent);
    }

    fn caught_up(&mut self, _replayed: u64) {
        self.caught_up.store(true, Ordering::SeqCst);
    }

    fn history_entry(&mut self, entry: &LogEntry<'_>) {
        self.renderer.history(entry, &mut self.stdout);
    }

    fn history_end(&mut self, count: u64) {
        if count == 0 {
            self.notice("no more history");
        }
    }

    fn finished(&self) -> bool {
        self.until_caught_up
            && self.caught_up.load(Ordering::SeqCst)
            && self
                .script_sent
                .as_ref()
                .is_none_or(|sent| sent.load(Ordering::SeqCst))
    }

    fn pending(&self) -> usize {
        Output::pending(self)
    }

    fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        Output::flush(self)
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        Output::gone(self)
    }
}
