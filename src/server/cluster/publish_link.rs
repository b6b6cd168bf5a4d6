//! The connection a node publishes its batches on when the cluster's Redis
//! is one server: `PUBLISH` written and its answer read here, in RESP,
//! rather than by the `redis` crate, so that a batch goes from its outbox's
//! buffer to the socket as it is. The crate's command builder, packer and
//! codec copied each batch three times, into buffers allocated afresh
//! each time (a megabyte each in a flood, so mapped and faulted in page by
//! page): a third of the publishing thread's time. On a Redis Cluster the
//! crate stays, since it knows which shard holds a channel.
//!
//! Commands are pipelined: the publisher writes the next batch while the
//! answers of those before it are on their way, and reads the answers in
//! order.

use std::io::{self, IoSlice};
use std::sync::Arc;

use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult};
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::commands::REDIS_TIMEOUT;
use crate::net::socket::Socket;
use crate::server::redis_io::{open_socket, Opened, RedisSocket};

/// The longest answer line read: PUBLISH answers with a number, AUTH with
/// `+OK` or an error of a few words. Anything longer is a protocol error,
/// not a reason to buffer without end.
const MAX_ANSWER: usize = 4096;

/// A connection to one Redis that carries `PUBLISH` commands.
pub(super) struct PublishLink {
    socket: LinkSocket,
    /// Bytes read and not yet parsed: the start of the next answers.
    answers: Vec<u8>,
    /// Where a command's head is put together (reused).
    head: Vec<u8>,
}

/// The socket under a link.
pub(super) enum LinkSocket {
    /// Plain TCP, which a worker may write to while the link is idle (see
    /// `flight`).
    Shared(Arc<Socket>),
    /// TLS, or a Unix socket: the publisher's alone.
    Owned(Box<dyn RedisSocket>),
}

impl LinkSocket {
    /// Reads what is there, waiting for something.
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkSocket::Shared(socket) => (&mut &**socket).read(buf).await,
            LinkSocket::Owned(socket) => socket.read(buf).await,
        }
    }

    /// Writes `slices` whole, one after the other (as few syscalls as the
    /// socket allows, no buffer of its own), and flushes.
    pub(super) async fn write_all<const N: usize>(&mut self, slices: [&[u8]; N]) -> io::Result<()> {
        let mut slices = slices.map(IoSlice::new);
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let written = match self {
                LinkSocket::Shared(socket) => (&mut &**socket).write_vectored(rest).await?,
                LinkSocket::Owned(socket) => socket.write_vectored(rest).await?,
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, written);
        }
        match self {
            LinkSocket::Shared(socket) => (&mut &**socket).flush().await,
            LinkSocket::Owned(socket) => socket.flush().await,
        }
    }
}

/// An answer Redis can give to the commands sent here.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// `+…`: a status (AUTH's `OK`).
    Status,
    /// `:N`: a number (PUBLISH's count of subscribers that got it).
    Number(i64),
}

impl PublishLink {
    /// Connects to the Redis at `info` and logs in with its credentials,
    /// if any, within [`REDIS_TIMEOUT`].
    pub(super) async fn open(info: &ConnectionInfo) -> RedisResult<PublishLink> {
        let opening = async {
            let mut link = PublishLink {
                socket: match open_socket(info).await? {
                    Opened::Plain(socket) => LinkSocket::Shared(Arc::new(socket)),
                    Opened::Other(socket) => LinkSocket::Owned(socket),
                },
                answers: Vec::new(),
                head: Vec::new(),
            };
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                let mut command: Vec<&[u8]> = vec![b"AUTH"];
                command.extend(settings.username().map(str::as_bytes));
                command.push(password.as_bytes());
                link.command(&command).await?;
                match link.answer().await? {
                    Answer::Status => {}
                    Answer::Number(_) => return Err(unexpected("a number for AUTH")),
                }
            }
            Ok(link)
        };
        crate::runtime::timeout(REDIS_TIMEOUT, opening)
            .await
            .unwrap_or_else(|| Err(timed_out()))
    }

    /// Writes `PUBLISH channel PAYLOAD`, the payload being `batch` then
    /// `tag` (its signature, or nothing), without copying them; its answer
    /// is read later by [`PublishLink::published`].
    pub(super) async fn publish(
        &mut self,
        channel: &[u8],
        batch: &[u8],
        tag: &[u8],
    ) -> RedisResult<()> {
        let mut head = std::mem::take(&mut self.head);
        put_publish(&mut head, channel, batch.len() + tag.len());
        let written = self.write([&head, batch, tag, b"\r\n"]).await;
        self.head = head;
        written
    }

    /// Writes the command `args` (its answer is for the caller to read).
    pub(super) async fn command(&mut self, args: &[&[u8]]) -> RedisResult<()> {
        let mut head = std::mem::take(&mut self.head);
        put_command(&mut head, args, None);
        let written = self.write([&head]).await;
        self.head = head;
        written
    }

    /// The answer to the oldest `PUBLISH` not answered yet: how many
    /// subscribers got it. Unbounded in time: the publisher gives up on it
    /// (see `publish`). Safe to drop and call again: what was read stays
    /// read.
    pub(super) async fn published(&mut self) -> RedisResult<i64> {
        match self.answer().await? {
            Answer::Number(receivers) => Ok(receivers),
            Answer::Status => Err(unexpected("a status for PUBLISH")),
        }
    }

    /// The logged-in socket and what was read on it past the last answer,
    /// for a connection of another use (the subscription).
    pub(super) fn into_parts(self) -> (LinkSocket, Vec<u8>) {
        (self.socket, self.answers)
    }

    /// The socket a worker may write a batch to itself (plain TCP only).
    pub(super) fn shared_socket(&self) -> Option<Arc<Socket>> {
        match &self.socket {
            LinkSocket::Shared(socket) => Some(Arc::clone(socket)),
            LinkSocket::Owned(_) => None,
        }
    }

    /// Reads what came while nothing was on its way, without waiting: an
    /// error if the link ended or Redis said something unasked; `Ok` when
    /// there was nothing to read.
    pub(super) fn nothing_to_read(&mut self) -> RedisResult<()> {
        let LinkSocket::Shared(socket) = &self.socket else {
            return Ok(());
        };
        let mut chunk = [0u8; 512];
        loop {
            match std::io::Read::read(&mut socket.get_ref(), &mut chunk) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => return Err(unexpected("an answer to nothing")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes bytes that end a command a worker began.
    pub(super) async fn write_rest(&mut self, rest: &[u8]) -> RedisResult<()> {
        self.write([rest]).await
    }

    /// Writes `slices` whole, within [`REDIS_TIMEOUT`].
    async fn write<const N: usize>(&mut self, slices: [&[u8]; N]) -> RedisResult<()> {
        match crate::runtime::timeout(REDIS_TIMEOUT, self.socket.write_all(slices)).await {
            Some(written) => Ok(written?),
            None => Err(timed_out()),
        }
    }

    /// The next answer, reading until a whole one is there.
    async fn answer(&mut self) -> RedisResult<Answer> {
        loop {
            if let Some((answer, used)) = parse_answer(&self.answers)? {
                self.answers.drain(..used);
                return answer;
            }
            let mut chunk = [0u8; 512];
            let read = self.socket.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            self.answers.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Puts the head of `PUBLISH channel PAYLOAD` into `out`, for a payload of
/// `payload` bytes (they and the final CRLF follow, written by the caller).
pub(super) fn put_publish(out: &mut Vec<u8>, channel: &[u8], payload: usize) {
    put_command(out, &[b"PUBLISH", channel], Some(payload));
}

/// Puts the head of a RESP command into `out` (cleared first): every
/// argument of `args`, then the length line of a last argument of
/// `payload` bytes, if any (an empty one too; its bytes and final CRLF
/// follow, written by the caller).
fn put_command(out: &mut Vec<u8>, args: &[&[u8]], payload: Option<usize>) {
    use std::io::Write;
    out.clear();
    let count = args.len() + usize::from(payload.is_some());
    let _ = write!(out, "*{count}\r\n");
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(payload) = payload {
        let _ = write!(out, "${payload}\r\n");
    }
}

/// The answer at the start of `bytes` and the bytes it takes, `None` when
/// it is not all there yet. An error answer (`-…`) is the outer `Ok`'s
/// inner `Err`; a malformed or overlong one is an `Err`: the connection
/// cannot be read on.
#[allow(clippy::type_complexity)]
fn parse_answer(bytes: &[u8]) -> RedisResult<Option<(RedisResult<Answer>, usize)>> {
    let Some(end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
        if bytes.len() > MAX_ANSWER {
            return Err(unexpected("an answer line without end"));
        }
        return Ok(None);
    };
    let line = &bytes[..end];
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| unexpected("an empty line"))?;
    let text = String::from_utf8_lossy(rest);
    let answer = match kind {
        b'+' => Ok(Answer::Status),
        b':' => Ok(Answer::Number(
            text.parse().map_err(|_| unexpected("a malformed number"))?,
        )),
        b'-' => Err(refused(&text)),
        _ => return Err(unexpected("an answer of an unexpected type")),
    };
    Ok(Some((answer, end + 2)))
}

/// Redis's error line (after its `-`), as the crate reports it: the first
/// word is the kind.
pub(super) fn refused(text: &str) -> RedisError {
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    let kind = match code {
        "NOAUTH" | "WRONGPASS" | "NOPERM" => ErrorKind::AuthenticationFailed,
        _ => ErrorKind::Extension,
    };
    RedisError::from((kind, "Redis refused", format!("{code} {detail}")))
}

pub(super) fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "unexpected answer from Redis",
        what.to_string(),
    ))
}

pub(super) fn timed_out() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_head_is_resp_with_the_payload_s_length_last() {
        let mut head = Vec::new();
        put_command(&mut head, &[b"PUBLISH", b"pmchat:inbox:n1"], Some(12));
        assert_eq!(
            head,
            b"*3\r\n$7\r\nPUBLISH\r\n$15\r\npmchat:inbox:n1\r\n$12\r\n".to_vec()
        );
        put_command(&mut head, &[b"AUTH", b"user", b"secret"], None);
        assert_eq!(
            head,
            b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$6\r\nsecret\r\n".to_vec()
        );
    }

    #[test]
    fn answers_are_read_one_at_a_time_and_only_once_whole() {
        let bytes = b":2\r\n+OK\r\n:1";
        let (first, used) = parse_answer(bytes).unwrap().unwrap();
        assert_eq!(first.unwrap(), Answer::Number(2));
        let (second, more) = parse_answer(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second.unwrap(), Answer::Status);
        assert!(parse_answer(&bytes[used + more..]).unwrap().is_none());
    }

    #[test]
    fn an_error_answer_is_an_error_and_a_refused_password_says_so() {
        let (answer, _) = parse_answer(b"-WRONGPASS invalid username-password pair\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::AuthenticationFailed);
        let (answer, _) = parse_answer(b"-ERR unknown command\r\n").unwrap().unwrap();
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::Extension);
    }

    #[test]
    fn a_hostile_redis_cannot_make_an_answer_grow_without_end() {
        // A line that never ends is refused once it is longer than any
        // answer could be, not buffered.
        assert!(parse_answer(&[b'+'; MAX_ANSWER + 1]).is_err());
        assert!(parse_answer(&[b'+'; 100]).unwrap().is_none());
        // Anything but a status, a number or an error.
        assert!(parse_answer(b"$5\r\nhello\r\n").is_err());
        assert!(parse_answer(b":many\r\n").is_err());
        assert!(parse_answer(b"\r\n").is_err());
    }
}
