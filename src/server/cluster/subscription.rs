//! The connection a node reads its inbox and the presence channel on when
//! the cluster's Redis is one server: `SUBSCRIBE` written and the messages
//! read here, in RESP2, rather than by the `redis` crate, so that a batch
//! from another node is delivered from the buffer it was read into. The
//! crate's parser copied each pushed batch into a buffer allocated afresh
//! (up to a megabyte in a flood: mapped, faulted in page by page and given
//! back to the system when freed), about a fifth of the receiving node's
//! background thread. On a Redis Cluster the crate stays, since it knows
//! which shard a channel lives on; the hint channels, which come and go
//! with the logs this node watches, stay on the crate's connection too.
//!
//! One read buffer, kept: it grows to the largest message seen (a batch is
//! at most an outbox's worth) and goes back to [`READ_SIZE`] at the first
//! read after it has not needed more for [`BIG_KEPT`]. Nothing is read
//! ahead of delivery: a node that falls behind leaves the rest in Redis,
//! which disconnects a subscriber past its pub/sub output buffer limit
//! (the node then reconnects). A message larger than [`MAX_MESSAGE`]
//! or a line longer than [`MAX_LINE`] is a protocol error, not a reason to
//! buffer without end.

use std::io::{self, Read};
use std::ops::Range;
use std::time::{Duration, Instant};

use redis::{ConnectionInfo, RedisResult};

use super::commands::REDIS_TIMEOUT;
use super::outbox::OUTBOX_BYTES;
use super::publish_link::{refused, timed_out, unexpected, LinkSocket, PublishLink};

/// Bytes read at a time, and the buffer kept between floods.
const READ_SIZE: usize = 64 << 10;
/// How long a buffer grown for large messages is kept after the last one.
const BIG_KEPT: Duration = Duration::from_secs(1);
/// The largest message taken: a batch is at most an outbox's worth plus
/// its last record (a message of at most 64 KiB) and its signature.
const MAX_MESSAGE: usize = 2 * OUTBOX_BYTES;
/// The longest line of a message's framing (`*3`, `$7`, `:1`, an error).
const MAX_LINE: usize = 512;

/// A connection to one Redis subscribed to some channels.
pub(super) struct Subscription {
    socket: LinkSocket,
    /// `buf[start..end]` is read and not yet parsed; the whole of `buf` is
    /// initialised (it is read into).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Parsed and handed out, dropped at the next call.
    handed: usize,
    /// When a message last needed more than [`READ_SIZE`].
    big_used: Instant,
    /// The message handed out last came after a wait for the socket.
    waited: bool,
    /// The last read did not fill what it was given, so it most likely
    /// emptied the socket: the next one waits for readiness first rather
    /// than make a read that would only say EAGAIN (if data came in
    /// between, readiness fires at once). A syscall per message saved at
    /// a trickle.
    short: bool,
}

/// One message from a subscribed channel, in the subscription's buffer.
pub(super) struct Message<'a> {
    pub(super) channel: &'a [u8],
    pub(super) payload: &'a [u8],
}

/// One element of a RESP2 array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    /// A string, at `start..end` of what was parsed.
    Bulk(usize, usize),
    Number(i64),
    Nil,
}

/// The most elements an array sent to a subscriber has (`pmessage`).
const MAX_ELEMENTS: usize = 4;

/// A whole array: its elements, and the bytes it took.
#[derive(Debug, PartialEq, Eq)]
struct Array {
    elements: [Element; MAX_ELEMENTS],
    count: usize,
    used: usize,
}

impl Array {
    fn elements(&self) -> &[Element] {
        &self.elements[..self.count]
    }

    /// The element at `index` if it is a string, as a range.
    fn bulk(&self, index: usize) -> Option<Range<usize>> {
        match self.elements().get(index)? {
            &Element::Bulk(start, end) => Some(start..end),
            _ => None,
        }
    }
}

/// What the start of the buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Whole(Array),
    /// Not all there: at least this many bytes (from the start) are needed.
    Partial(usize),
}

impl Subscription {
    /// Connects to the Redis at `info`, logs in and subscribes to
    /// `channels`, all within [`REDIS_TIMEOUT`]: once this returns, every
    /// message published to them reaches this connection.
    pub(super) async fn open(info: &ConnectionInfo, channels: &[&str]) -> RedisResult<Self> {
        let opening = async {
            let mut link = PublishLink::open(info).await?;
            let mut command: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            command.extend(channels.iter().map(|channel| channel.as_bytes()));
            link.command(&command).await?;
            let (socket, answers) = link.into_parts();
            let mut subscription = Subscription::over(socket, &answers);
            for _ in channels {
                let answer = subscription.next_array().await?;
                if subscription.kind(&answer) != Some(b"subscribe") {
                    return Err(unexpected("something else than SUBSCRIBE's answer"));
                }
            }
            Ok(subscription)
        };
        crate::runtime::timeout(REDIS_TIMEOUT, opening)
            .await
            .unwrap_or_else(|| Err(timed_out()))
    }

    /// A subscription reading `socket`, on which `read` was read already.
    fn over(socket: LinkSocket, read: &[u8]) -> Self {
        let mut buf = vec![0; READ_SIZE.max(read.len())];
        buf[..read.len()].copy_from_slice(read);
        Subscription {
            socket,
            buf,
            start: 0,
            end: read.len(),
            handed: 0,
            big_used: Instant::now(),
            waited: true,
            short: false,
        }
    }

    /// The next message of a subscribed channel, reading until one is all
    /// there; what it borrows stays until the next call. An error when the
    /// connection ends or Redis sends what it should not.
    pub(super) async fn next(&mut self) -> RedisResult<Message<'_>> {
        loop {
            let array = self.next_array().await?;
            if self.kind(&array) == Some(b"message") && array.count == 3 {
                if let (Some(channel), Some(payload)) = (array.bulk(1), array.bulk(2)) {
                    return Ok(Message {
                        channel: &self.buf[channel],
                        payload: &self.buf[payload],
                    });
                }
            }
            // Another SUBSCRIBE's or UNSUBSCRIBE's answer: nothing to do.
        }
    }

    /// The first element of `array` (read last), which says what it is.
    fn kind(&self, array: &Array) -> Option<&[u8]> {
        array.bulk(0).map(|kind| &self.buf[kind])
    }

    /// True when the message handed out last came after waiting for the
    /// socket, false when it was read already or could be read at once (a
    /// flood: the caller should let other tasks run).
    pub(super) fn waited(&self) -> bool {
        self.waited
    }

    /// The next array, reading until it is all there; its strings are
    /// ranges of `buf`, valid until the next call.
    async fn next_array(&mut self) -> RedisResult<Array> {
        self.start += std::mem::take(&mut self.handed);
        self.waited = false;
        loop {
            match parse(&self.buf[self.start..self.end])? {
                Parsed::Whole(mut array) => {
                    self.handed = array.used;
                    for element in &mut array.elements {
                        if let Element::Bulk(start, end) = element {
                            *start += self.start;
                            *end += self.start;
                        }
                    }
                    return Ok(array);
                }
                Parsed::Partial(needed) => {
                    if self.fill(needed).await? {
                        self.waited = true;
                    }
                }
            }
        }
    }

    /// Reads more, so that `needed` bytes from the start of what is not
    /// parsed can fit; true if it waited for the socket.
    async fn fill(&mut self, needed: usize) -> RedisResult<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_SIZE && self.big_used.elapsed() >= BIG_KEPT {
                self.buf = vec![0; READ_SIZE];
            }
        }
        if needed > READ_SIZE {
            self.big_used = Instant::now();
        }
        if self.start + needed > self.buf.len() {
            // Moves what was read of this message to the front (the rest
            // of a large one is read to its end and no further, below, so
            // that the next one starts at the front).
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if needed > self.buf.len() {
                self.buf.resize(needed.next_multiple_of(READ_SIZE), 0);
            }
        }
        // A large message is read to its end only, not into the next one.
        let limit = match needed > READ_SIZE {
            true => self.start + needed,
            false => self.buf.len(),
        };
        let (read, waited) = self.read(limit).await?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.end += read;
        Ok(waited)
    }

    /// Reads into `buf[end..limit]`; the count, and whether it waited.
    async fn read(&mut self, limit: usize) -> RedisResult<(usize, bool)> {
        let into = &mut self.buf[self.end..limit];
        match &mut self.socket {
            LinkSocket::Shared(socket) => {
                let mut waited = std::mem::take(&mut self.short);
                if waited {
                    socket.readable().await?;
                }
                loop {
                    match socket.get_ref().read(into) {
                        Ok(read) => {
                            self.short = read < into.len();
                            return Ok((read, waited));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            socket.readable().await?;
                            waited = true;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // Whether a TLS or Unix socket waited is not known: taken as
            // a flood, which only makes the caller yield more often.
            owned => Ok((owned.read(into).await?, false)),
        }
    }
}

/// The array at the start of `bytes` (a subscriber is sent nothing else
/// but errors), or how much is needed for it.
fn parse(bytes: &[u8]) -> RedisResult<Parsed> {
    let Some((head, mut at)) = line(bytes, 0)? else {
        return Ok(Parsed::Partial(bytes.len() + 1));
    };
    let count = match head.split_first() {
        Some((b'*', count)) => number(count)?,
        Some((b'-', text)) => return Err(refused(&String::from_utf8_lossy(text))),
        _ => return Err(unexpected("something else than an array")),
    };
    if !(1..=MAX_ELEMENTS as i64).contains(&count) {
        return Err(unexpected("an array of an unexpected size"));
    }
    let mut array = Array {
        elements: [Element::Nil; MAX_ELEMENTS],
        count: count as usize,
        used: 0,
    };
    for element in &mut array.elements[..count as usize] {
        let Some((head, after)) = line(bytes, at)? else {
            return Ok(Parsed::Partial(bytes.len() + 1));
        };
        at = after;
        *element = match head.split_first() {
            Some((b'$', length)) => match number(length)? {
                -1 => Element::Nil,
                length if (0..=MAX_MESSAGE as i64).contains(&length) => {
                    let end = at + length as usize;
                    if bytes.len() < end + 2 {
                        return Ok(Parsed::Partial(end + 2));
                    }
                    if &bytes[end..end + 2] != b"\r\n" {
                        return Err(unexpected("a string without its end"));
                    }
                    let element = Element::Bulk(at, end);
                    at = end + 2;
                    element
                }
                _ => return Err(unexpected("a string of an unexpected length")),
            },
            Some((b':', value)) => Element::Number(number(value)?),
            _ => return Err(unexpected("an element of an unexpected type")),
        };
    }
    array.used = at;
    Ok(Parsed::Whole(array))
}

/// The line at `bytes[at..]`, without its CRLF, and where the next one
/// starts; `None` when it is not all there.
fn line(bytes: &[u8], at: usize) -> RedisResult<Option<(&[u8], usize)>> {
    let rest = &bytes[at..];
    let searched = &rest[..rest.len().min(MAX_LINE)];
    match searched.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() >= MAX_LINE => Err(unexpected("a line without end")),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| unexpected("a malformed number"))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use super::*;
    use crate::net::socket::Socket;

    fn message(channel: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut bytes = format!("*3\r\n$7\r\nmessage\r\n${}\r\n", channel.len()).into_bytes();
        bytes.extend_from_slice(channel);
        bytes.extend_from_slice(format!("\r\n${}\r\n", payload.len()).as_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b"\r\n");
        bytes
    }

    #[test]
    fn a_message_is_parsed_only_once_whole_and_says_how_much_more_it_needs() {
        let bytes = message(b"pmchat:inbox:n1", &[7u8; 100]);
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]).unwrap() {
                Parsed::Partial(needed) => assert!(needed > cut && needed <= bytes.len()),
                Parsed::Whole(_) => panic!("whole at {cut} of {}", bytes.len()),
            }
        }
        let Parsed::Whole(array) = parse(&bytes).unwrap() else {
            panic!("not whole");
        };
        assert_eq!(array.used, bytes.len());
        assert_eq!(&bytes[array.bulk(1).unwrap()], b"pmchat:inbox:n1");
        assert_eq!(&bytes[array.bulk(2).unwrap()], &[7u8; 100][..]);
        // A large payload's length is known from its head: the buffer
        // can be made room for at once.
        let head = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$900000\r\n";
        assert_eq!(parse(head).unwrap(), Parsed::Partial(head.len() + 900_002));
    }

    #[test]
    fn subscribe_answers_and_errors_are_told_apart() {
        let Parsed::Whole(array) = parse(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n").unwrap()
        else {
            panic!("not whole");
        };
        assert_eq!(array.elements()[2], Element::Number(1));
        let refused = parse(b"-NOPERM this user has no permissions to access the channel\r\n");
        assert_eq!(
            refused.unwrap_err().kind(),
            redis::ErrorKind::AuthenticationFailed
        );
    }

    #[test]
    fn a_hostile_redis_cannot_make_a_subscriber_buffer_without_end() {
        // A length past the largest batch, a line that never ends, an
        // array too long, a string without its end, a type never sent.
        let huge = format!(
            "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n",
            MAX_MESSAGE + 1
        );
        assert!(parse(huge.as_bytes()).is_err());
        assert!(parse(&[b'*'; MAX_LINE + 1]).is_err());
        assert!(matches!(parse(&[b'*'; 100]).unwrap(), Parsed::Partial(_)));
        assert!(parse(b"*5\r\n").is_err());
        assert!(parse(b"*1\r\n$2\r\nabcd\r\n").is_err());
        assert!(parse(b"+OK\r\n").is_err());
        assert!(parse(b"*1\r\n%1\r\n").is_err());
        assert!(parse(b"*x\r\n").is_err());
    }

    /// Sends `stream` to a subscription in pieces of the given sizes (the
    /// last repeated) and returns the messages it reads.
    fn read_back(stream: Vec<u8>, pieces: &[usize], count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let pieces = pieces.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut peer, _) = listener.accept().unwrap();
            let mut at = 0;
            let mut sizes = pieces
                .iter()
                .copied()
                .chain(std::iter::repeat(*pieces.last().unwrap()));
            while at < stream.len() {
                let end = (at + sizes.next().unwrap()).min(stream.len());
                peer.write_all(&stream[at..end]).unwrap();
                peer.flush().unwrap();
                at = end;
            }
            peer
        });
        let socket = Socket::adopt(TcpStream::connect(address).unwrap()).unwrap();
        let mut subscription = Subscription::over(LinkSocket::Shared(Arc::new(socket)), b"");
        let got = smol::block_on(async {
            let mut got = Vec::new();
            while got.len() < count {
                let message = subscription.next().await.unwrap();
                got.push((message.channel.to_vec(), message.payload.to_vec()));
            }
            got
        });
        drop(writer.join().unwrap());
        got
    }

    #[test]
    fn messages_large_and_small_come_whole_and_in_order_however_they_arrive() {
        let mut sent = Vec::new();
        let mut stream = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".to_vec();
        for (i, size) in [
            10,
            200_000,
            3,
            READ_SIZE,
            READ_SIZE - 40,
            1_500_000,
            0,
            70_000,
            5,
        ]
        .into_iter()
        .enumerate()
        {
            let channel = format!("pmchat:inbox:{i}").into_bytes();
            let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            stream.extend(message(&channel, &payload));
            sent.push((channel, payload));
        }
        for pieces in [&[1usize, 2, 3][..], &[4096], &[100_000], &[stream.len()]] {
            assert!(
                read_back(stream.clone(), pieces, sent.len()) == sent,
                "pieces {pieces:?}"
            );
        }
    }
}
