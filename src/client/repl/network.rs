//! The editor's network thread: writes what the editor sends, prints what
//! arrives (above the prompt through rustyline's external printer when
//! stdout is that terminal, plain stdout otherwise). One thread per
//! connection: when the connection is lost it says why, offers to connect
//! again and ends; the editor starts the next one.

use super::history::Recipients;
use super::Phase;
use crate::exit_codes::Status;
use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_channel::Receiver;
use rustyline::ExternalPrinter;
use smol::future::FutureExt;
use smol::Timer;

use crate::client::connection::receive;
use crate::client::frames::Sink;
use crate::client::negotiation::Negotiation;
use crate::client::receipts::{unconfirmed_notice, Origin, Sent};
use crate::client::state::ChatState;
use crate::client::{
    output::Output,
    render::{Renderer, Stream},
};
use crate::clock::Stamp;
use crate::net::transport::Transport;

/// Received frames in interactive mode: above the prompt through the
/// external printer when stdout is that terminal, plain stdout otherwise.
pub(super) struct ReplSink {
    renderer: Renderer,
    /// Prints above the prompt; `None` unless stdin and stdout are terminals
    /// (or the editor uses /dev/tty).
    printer: Option<Box<dyn ExternalPrinter + Send>>,
    /// Messages go to the printer (stdout is the terminal it draws on).
    messages_to_printer: bool,
    /// Text waiting for the printer, printed in one go at a flush.
    for_printer: String,
    /// Plain stdout and stderr, when the printer is not theirs.
    plain: Output,
    /// Show presence events as notices.
    show_presence: bool,
    /// Receive time of the frames being rendered (with `--timestamps`).
    stamp: Option<Stamp>,
    /// The names messaged on this server: one is recorded once a message
    /// to it is accepted.
    recipients: Option<Arc<Mutex<Recipients>>>,
    /// Messages of the log replayed at login, held until CAUGHT-UP so that
    /// the count of them comes first (at most [`AWAY_HELD`]; past that
    /// they are shown as they come).
    away: Option<Vec<String>>,
}

/// Replayed lines held back at login before they are shown anyway.
const AWAY_HELD: usize = 10_000;

impl ReplSink {
    /// A sink printing through `printer` when there is one (messages too,
    /// when stdout is the printer's terminal).
    pub(super) fn new(
        renderer: Renderer,
        printer: Option<Box<dyn ExternalPrinter + Send>>,
        show_presence: bool,
        recipients: Option<Arc<Mutex<Recipients>>>,
    ) -> Self {
        ReplSink {
            renderer,
            messages_to_printer: printer.is_some() && io::stdout().is_terminal(),
            printer,
            for_printer: String::new(),
            plain: Output::new(renderer),
            show_presence,
            stamp: None,
            recipients,
            away: Some(Vec::new()),
        }
    }

    fn stamp(&self) -> Option<&Stamp> {
        self.stamp.as_ref()
    }

    fn route(&mut self, stream: Stream, line: String) {
        let to_printer = match stream {
            Stream::Stdout => self.messages_to_printer,
            Stream::Stderr => self.printer.is_some(),
        };
        if to_printer {
            self.for_printer.push_str(&line);
        } else {
            match stream {
                Stream::Stdout => self.plain.raw_stdout(&line),
                Stream::Stderr => self.plain.raw_stderr(&line),
            }
        }
    }

    fn notice(&mut self, text: &str) {
        let mut line = String::new();
        self.renderer.notice(text, &mut line);
        self.route(Stream::Stderr, line);
    }

    /// Hands what is pending for the terminal to the printer: whole lines,
    /// newline included, so even when the editor is not reading (and the
    /// printer writes straight to the terminal) nothing the editor draws
    /// next can land on, or erase, the same line.
    fn print_pending(&mut self) {
        if self.for_printer.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.for_printer);
        let printed = match self.printer.as_mut() {
            Some(printer) => printer.print(text.clone()).is_ok(),
            None => false,
        };
        if !printed {
            let _ = io::stderr().write_all(text.as_bytes());
        }
    }
}

impl Sink for ReplSink {
    fn set_stamp(&mut self, stamp: Stamp) {
        self.stamp = Some(stamp);
    }

    fn wants_stamps(&self) -> bool {
        self.renderer.timestamps
    }

    fn message(&mut self, from: &[u8], content: &[u8]) {
        let mut line = String::new();
        let stream = self
            .renderer
            .message(from, content, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn error(&mut self, code: &[u8], text: &[u8]) {
        let mut line = String::new();
        let stream = self.renderer.error(code, text, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn online(&mut self, names: &[String]) {
        let mut line = String::new();
        let stream = self.renderer.online(names, true, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn presence(&mut self, joined: bool, name: &[u8]) {
        let mut line = String::new();
        if let Some(stream) =
            self.renderer
                .presence(joined, name, self.show_presence, self.stamp(), &mut line)
        {
            self.route(stream, line);
        }
    }

    fn accepted(&mut self, sent: &Sent) {
        if let Some(recipients) = &self.recipients {
            super::lock(recipients).used(&sent.to);
        }
        if let Origin::Typed { text } = &sent.origin {
            let mut line = String::new();
            self.renderer
                .own_message(&sent.to, text, self.stamp(), &mut line);
            // Beside the notices: never into a stdout that is a pipe.
            self.route(Stream::Stderr, line);
        }
        let mut line = String::new();
        if self.renderer.accepted(sent, self.stamp(), &mut line) {
            self.route(Stream::Stdout, line);
        }
    }

    fn refused(&mut self, sent: &Sent, code: &[u8], text: &[u8]) {
        let mut line = String::new();
        let stream = self
            .renderer
            .refused(sent, code, text, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn entry(&mut self, entry: &crate::client::frames::LogEntry<'_>) {
        let mut line = String::new();
        match &mut self.away {
            // Replayed at login: held, shown with their times.
            Some(away) if away.len() < AWAY_HELD => {
                self.renderer.history(entry, &mut line);
                away.push(line);
            }
            _ => {
                self.renderer.entry(entry, &mut line);
                self.route(Stream::Stdout, line);
            }
        }
    }

    fn caught_up(&mut self, replayed: u64) {
        let Some(away) = self.away.take() else {
            return;
        };
        if replayed > 0 {
            let s = if replayed == 1 { "" } else { "s" };
            self.notice(&format!("{replayed} message{s} while you were away"));
        }
        for line in away {
            self.route(Stream::Stdout, line);
        }
    }

    fn history_entry(&mut self, entry: &crate::client::frames::LogEntry<'_>) {
        let mut line = String::new();
        self.renderer.history(entry, &mut line);
        self.route(Stream::Stdout, line);
    }

    fn history_end(&mut self, count: u64) {
        if count == 0 {
            self.notice("no more history");
        }
    }

    fn pending(&self) -> usize {
        self.for_printer.len() + self.plain.pending()
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.print_pending();
        self.plain.flush()
    }

    fn gone(&self) -> impl Future<Output = ()> + 'static {
        self.plain.gone()
    }
}

/// The network thread: writes what the editor sends, prints what arrives.
pub(super) fn network(
    transport: Transport,
    outgoing: Receiver<Vec<u8>>,
    (mut sink, negotiation): (ReplSink, Negotiation),
    state: &ChatState,
    phase: &Phase,
    (drain, pace): (Duration, Duration),
) -> Status {
    smol::block_on(async {
        let receiving =
            async { Some(receive(&transport, &mut sink, state, negotiation, None).await) };
        let sending = async {
            if write_frames(&transport, &outgoing, pace).await.is_ok() {
                transport.shutdown_write().await;
            }
            Timer::after(drain).await;
            None
        };
        let received = receiving.or(sending).await;
        let expected = phase.done();
        if let Some(notice) = received
            .as_ref()
            .and_then(|r| crate::client::close_notice(r, expected))
        {
            sink.notice(&notice);
        }
        sink.print_pending();
        sink.plain.finish(drain).await;
        // The user ending the session is a success, whatever went wrong
        // along the way; the server ending it is not.
        let status = if expected && !state.login_refused() {
            Status::Success
        } else {
            crate::client::exit_status(state, received.as_ref(), expected)
        };
        // Before the editor started, the main thread is waiting for the
        // login and takes the status from here (and may log in again, for
        // example with a password it asks for). While editing, the editor
        // offers to connect again.
        if !expected && !phase.end_before_editing() {
            if let Some(text) = unconfirmed_notice(&state.ledger().abandon()) {
                sink.notice(&text);
            }
            phase.lost();
            sink.notice(super::RECONNECT_OFFER);
            sink.print_pending();
        }
        status
    })
}

/// Writes frames from the editor, coalescing whatever is queued, or, with
/// a `pace`, each on its own followed by that pause.
async fn write_frames(
    transport: &Transport,
    outgoing: &Receiver<Vec<u8>>,
    pace: Duration,
) -> io::Result<()> {
    let mut batch = Vec::new();
    while let Ok(frame) = outgoing.recv().await {
        if !pace.is_zero() {
            transport.write_all(&frame).await?;
            Timer::after(pace).await;
            continue;
        }
        batch.extend_from_slice(&frame);
        while let Ok(more) = outgoing.try_recv() {
            batch.extend_from_slice(&more);
        }
        transport.write_all(&batch).await?;
        batch.clear();
    }
    Ok(())
}
