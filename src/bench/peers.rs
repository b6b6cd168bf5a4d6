//! Other servers driven with the same workload, so that pmchat's figures
//! are read against peers measured in the same run: NATS (core
//! publish/subscribe) and Redis (`PUBLISH`/`SUBSCRIBE`). Each pair's
//! receiver subscribes to a subject (channel) of its own and its sender
//! publishes to it; a payload is laid out as a pmchat message's content
//! (sequence number, send time, padding), so one latency histogram reads
//! both.
//!
//! Only what the benchmark needs of each protocol is spoken: NATS's text
//! protocol (`CONNECT`, `SUB`, `PUB`, `PING`/`PONG`, `MSG`) and RESP2
//! (arrays of bulk strings, integers).

use std::io;
use std::net::{SocketAddr, TcpStream};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

/// A peer server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// nats-server: core NATS publish/subscribe.
    Nats,
    /// redis-server: PUBLISH and SUBSCRIBE.
    Redis,
}

/// Largest protocol line or message the benchmark accepts from a peer.
const MAX_INPUT: usize = 1 << 20;

/// What one unit of a peer's output was.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A message published to a subscribed subject: where its payload is
    /// in the buffer.
    Message(std::ops::Range<usize>),
    /// NATS asks whether we are alive: answer `PONG`.
    Ping,
    /// Anything else (`+OK`, `PONG`, `INFO`, a subscription's
    /// confirmation, a `PUBLISH` reply).
    Other,
}

/// A connection to a peer, with what was read from it and not yet
/// parsed.
pub struct PeerStream {
    peer: Peer,
    stream: Async<TcpStream>,
    /// Read from the peer: `input[at..end]` is not parsed yet.
    input: Vec<u8>,
    /// Where parsing resumes in `input`.
    at: usize,
    /// Where the bytes read end.
    end: usize,
}

/// Bytes read from a peer per call, at least.
const READ_CHUNK: usize = 64 * 1024;

impl Peer {
    /// Appends a publication of `payload` to `subject`.
    pub fn encode_publish(self, subject: &str, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Peer::Nats => {
                out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            Peer::Redis => resp_command(&[b"PUBLISH", subject.as_bytes(), payload], out),
        }
    }

    /// Connects, ready to publish.
    pub async fn publisher(self, addr: SocketAddr) -> io::Result<PeerStream> {
        let mut stream = PeerStream::connect(self, addr).await?;
        if self == Peer::Nats {
            stream.nats_handshake(b"").await?;
        }
        Ok(stream)
    }

    /// Connects and subscribes to `subject`; returns once the peer
    /// confirmed the subscription, so nothing published after is missed.
    pub async fn subscriber(self, addr: SocketAddr, subject: &str) -> io::Result<PeerStream> {
        let mut stream = PeerStream::connect(self, addr).await?;
        match self {
            Peer::Nats => {
                let sub = format!("SUB {subject} 1\r\n");
                stream.nats_handshake(sub.as_bytes()).await?;
            }
            Peer::Redis => {
                let mut command = Vec::new();
                resp_command(&[b"SUBSCRIBE", subject.as_bytes()], &mut command);
                stream.stream.write_all(&command).await?;
                // The confirmation is the first thing to come.
                stream.next().await?;
            }
        }
        Ok(stream)
    }
}

impl PeerStream {
    async fn connect(peer: Peer, addr: SocketAddr) -> io::Result<PeerStream> {
        let stream = Async::<TcpStream>::connect(addr).await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(PeerStream {
            peer,
            stream,
            input: vec![0; READ_CHUNK],
            at: 0,
            end: 0,
        })
    }

    /// Reads NATS's `INFO`, says `CONNECT` (then `extra`), and waits for
    /// the `PONG` to a `PING`: everything before it was processed.
    async fn nats_handshake(&mut self, extra: &[u8]) -> io::Result<()> {
        let mut hello = br#"CONNECT {"verbose":false,"pedantic":false}"#.to_vec();
        hello.extend_from_slice(b"\r\n");
        hello.extend_from_slice(extra);
        hello.extend_from_slice(b"PING\r\n");
        self.stream.write_all(&hello).await?;
        loop {
            let line_end = loop {
                if let Some(end) = find_crlf(&self.input[self.at..self.end]) {
                    break self.at + end;
                }
                self.fill().await?;
            };
            let line = &self.input[self.at..line_end];
            let pong = line == b"PONG";
            if line.starts_with(b"-ERR") {
                return Err(io::Error::other(String::from_utf8_lossy(line).into_owned()));
            }
            self.at = line_end + 2;
            if pong {
                return Ok(());
            }
        }
    }

    /// Reads more input, waiting for it; end of input is an error. What
    /// is not parsed yet moves to the front first; the buffer grows only
    /// for a unit larger than it, up to [`MAX_INPUT`].
    async fn fill(&mut self) -> io::Result<()> {
        let pending = self.end - self.at;
        if pending > MAX_INPUT {
            return Err(io::Error::other(
                "a peer sent more than the benchmark accepts",
            ));
        }
        self.input.copy_within(self.at..self.end, 0);
        (self.at, self.end) = (0, pending);
        if self.input.len() - self.end < READ_CHUNK / 2 {
            self.input.resize(self.end + READ_CHUNK, 0);
        }
        match self.stream.read(&mut self.input[self.end..]).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// The next unit of output, waiting for it.
    async fn next(&mut self) -> io::Result<Delivery> {
        loop {
            match parse(self.peer, &self.input[self.at..self.end]) {
                Ok(Some((delivery, used))) => {
                    let start = self.at;
                    self.at += used;
                    return Ok(match delivery {
                        Delivery::Message(range) => {
                            Delivery::Message(start + range.start..start + range.end)
                        }
                        other => other,
                    });
                }
                Ok(None) => self.fill().await?,
                Err(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            }
        }
    }

    /// Calls `each` with the payload of every message that arrives, until
    /// the peer closes or fails; answers NATS's pings.
    pub async fn receive(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            match self.next().await {
                Ok(Delivery::Message(range)) => each(&self.input[range]),
                Ok(Delivery::Ping) => self.stream.write_all(b"PONG\r\n").await?,
                Ok(Delivery::Other) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `bytes` (publications).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The payload of the next message (a NATS `MSG`, a Redis bulk
    /// reply), waiting for it; other output is skipped, pings answered.
    pub async fn next_message(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.next().await? {
                Delivery::Message(range) => return Ok(self.input[range].to_vec()),
                Delivery::Ping => self.stream.write_all(b"PONG\r\n").await?,
                Delivery::Other => {}
            }
        }
    }

    /// A second handle on the connection, to write on while this one
    /// reads.
    pub fn writer(&self) -> io::Result<Async<TcpStream>> {
        Async::new(self.stream.get_ref().try_clone()?)
    }

    /// A task that reads and drops whatever the peer answers a publisher
    /// (Redis's receiver counts), so its replies never fill the socket,
    /// through a second handle on the connection.
    pub fn discard_replies(&self) -> io::Result<impl std::future::Future<Output = ()> + use<>> {
        let mut replies = Async::new(self.stream.get_ref().try_clone()?)?;
        Ok(async move {
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(replies.read(&mut sink).await, Ok(n) if n > 0) {}
        })
    }
}

/// Appends a RESP array of bulk strings.
pub(crate) fn resp_command(parts: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn number(digits: &[u8]) -> Result<usize, String> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|&n: &usize| n <= MAX_INPUT)
        .ok_or_else(|| format!("not a length: {:?}", String::from_utf8_lossy(digits)))
}

/// Parses one unit of `peer`'s output from the start of `input`: what it
/// was and the bytes it used; `None` if it is not complete yet.
pub fn parse(peer: Peer, input: &[u8]) -> Result<Option<(Delivery, usize)>, String> {
    let Some(line_end) = find_crlf(input) else {
        return if input.len() > MAX_INPUT {
            Err("a line longer than the benchmark accepts".into())
        } else {
            Ok(None)
        };
    };
    let line = &input[..line_end];
    let after = line_end + 2;
    match peer {
        Peer::Nats => {
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = rest
                    .rsplit(|&b| b == b' ')
                    .next()
                    .ok_or("a MSG without a size")?;
                let size = number(size)?;
                if input.len() < after + size + 2 {
                    return Ok(None);
                }
                return Ok(Some((
                    Delivery::Message(after..after + size),
                    after + size + 2,
                )));
            }
            if line == b"PING" {
                return Ok(Some((Delivery::Ping, after)));
            }
            if line.starts_with(b"-ERR") {
                return Err(String::from_utf8_lossy(line).into_owned());
            }
            Ok(Some((Delivery::Other, after)))
        }
        Peer::Redis => match line.first() {
            Some(b'*') => {
                // An array of bulk strings: a pushed message is
                // ["message", channel, payload].
                let count = number(&line[1..])?;
                let mut at = after;
                let mut last = 0..0;
                let mut first = 0..0;
                for i in 0..count {
                    let Some(end) = find_crlf(&input[at..]) else {
                        return Ok(None);
                    };
                    let header = &input[at..at + end];
                    match header.first() {
                        Some(b'$') => {
                            let size = number(&header[1..])?;
                            let start = at + end + 2;
                            if input.len() < start + size + 2 {
                                return Ok(None);
                            }
                            if i == 0 {
                                first = start..start + size;
                            }
                            last = start..start + size;
                            at = start + size + 2;
                        }
                        // An integer (a subscription count).
                        Some(b':') => at += end + 2,
                        _ => return Err("an array of something other than strings".into()),
                    }
                }
                if count == 3 && &input[first] == b"message" {
                    Ok(Some((Delivery::Message(last), at)))
                } else {
                    Ok(Some((Delivery::Other, at)))
                }
            }
            // A bulk reply (to XADD: the entry's id): counted as a
            // message. A subscriber never gets one.
            Some(b'$') => {
                let size = number(&line[1..])?;
                if input.len() < after + size + 2 {
                    return Ok(None);
                }
                Ok(Some((
                    Delivery::Message(after..after + size),
                    after + size + 2,
                )))
            }
            Some(b':' | b'+') => Ok(Some((Delivery::Other, after))),
            Some(b'-') => Err(String::from_utf8_lossy(line).into_owned()),
            _ => Err(format!("not RESP: {:?}", String::from_utf8_lossy(line))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_messages_are_found_whole_or_not_at_all() {
        let input = b"INFO {}\r\nMSG bench.r0 1 5\r\nhello\r\nPING\r\n";
        let (info, used) = parse(Peer::Nats, input).unwrap().unwrap();
        assert_eq!(Delivery::Other, info);
        let rest = &input[used..];
        let (message, used2) = parse(Peer::Nats, rest).unwrap().unwrap();
        let Delivery::Message(range) = message else {
            panic!("{message:?}");
        };
        assert_eq!(b"hello", &rest[range]);
        assert_eq!(
            Delivery::Ping,
            parse(Peer::Nats, &rest[used2..]).unwrap().unwrap().0
        );
        assert_eq!(None, parse(Peer::Nats, b"MSG bench.r0 1 5\r\nhel").unwrap());
        assert!(parse(Peer::Nats, b"-ERR 'Unknown Protocol Operation'\r\n").is_err());
    }

    #[test]
    fn redis_pushes_are_found_whole_and_replies_skipped() {
        let mut input = Vec::new();
        resp_command(&[b"message", b"bench.r0", b"hello"], &mut input);
        let (message, used) = parse(Peer::Redis, &input).unwrap().unwrap();
        let Delivery::Message(range) = message else {
            panic!("{message:?}");
        };
        assert_eq!(b"hello", &input[range]);
        assert_eq!(used, input.len());
        assert_eq!(None, parse(Peer::Redis, &input[..input.len() - 3]).unwrap());
        let confirmation = b"*3\r\n$9\r\nsubscribe\r\n$8\r\nbench.r0\r\n:1\r\n";
        let (other, used) = parse(Peer::Redis, confirmation).unwrap().unwrap();
        assert_eq!((Delivery::Other, confirmation.len()), (other, used));
        assert_eq!(
            Delivery::Other,
            parse(Peer::Redis, b":1\r\n").unwrap().unwrap().0
        );
        assert!(parse(Peer::Redis, b"$99999999999\r\n").is_err());
        let (reply, used) = parse(Peer::Redis, b"$15\r\n1700000000000-0\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((reply, used), (Delivery::Message(5..20), 22));
    }
}
