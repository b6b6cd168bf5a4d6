//! Reading frames from a byte stream: the one place where a reusable
//! buffer, a socket and a decoder meet.
//!
//! [`FrameReader`] owns a read buffer sized from its [`Decoder`]'s largest
//! frame, so the buffer always has room for the rest of a frame and a read
//! can never be handed an empty slice (which would look like end of input).
//! Frames are decoded in place and borrowed from the buffer: a frame returned
//! by [`FrameReader::next_frame`] is consumed by the next call, so no frame
//! is ever copied or allocated on its own.
//!
//! The decoders live with their wire ([`crate::wire::v1`] has v1's,
//! [`crate::wire::gob`] the original programs'); a new wire format adds a
//! [`Decoder`] and gets buffering, growth, release when idle and the
//! largest-frame guarantee from here. The vocabulary they share, what a
//! decode yields ([`Decoded`]) and the size limits it checks ([`Limits`]),
//! lives here too, below every wire, so that no wire imports another's.

use std::cell::RefCell;
use std::io::{self, Read};

use smol::io::{AsyncRead, AsyncReadExt};

/// The outcome of decoding from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<F> {
    /// A whole frame, and how many bytes of the buffer it used.
    Frame(F, usize),
    /// More bytes are needed. `header_complete` says whether the header has
    /// already arrived (and passed the limits), which starts the body timer.
    Incomplete { header_complete: bool },
}

/// Size limits on what a peer may send; headers over them are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest username (and recipient name) in bytes, at most 255.
    pub max_username: u8,
    /// Longest message content in bytes, at most 65535.
    pub max_message: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_username: 32,
            max_message: 2048,
        }
    }
}

/// A wire format's decoder: finds one frame at the front of a buffer.
pub trait Decoder {
    /// A decoded frame, borrowing from the buffer.
    type Frame<'a>;
    /// Why the input cannot be a frame of this wire.
    type Error;

    /// The longest frame [`Decoder::decode`] can return, in bytes on the
    /// wire. A decoder must refuse (with an error) any header that promises
    /// a longer one, before its body arrives.
    fn max_frame(&self) -> usize;

    /// Decodes one frame from the front of `buf`.
    /// A decoder may keep state between frames (gob's type definitions).
    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<Self::Frame<'a>>, Self::Error>;
}

/// Reads and decodes frames of one wire from a byte stream.
#[derive(Debug)]
pub struct FrameReader<D> {
    buf: ReadBuffer,
    decoder: D,
    /// Length of the frame last returned by `next_frame`, consumed at the
    /// next call (the frame borrows the buffer until then).
    returned: usize,
}

impl<D: Decoder> FrameReader<D> {
    /// A reader for `decoder`'s frames, reading [`READ_CHUNK`] at a time.
    pub fn new(decoder: D) -> Self {
        Self::with_read_size(decoder, READ_CHUNK)
    }

    /// A reader that reads up to `read_size` bytes at a time (more than
    /// [`READ_CHUNK`] pulls more small frames per syscall; less than the
    /// largest frame is raised to it).
    pub fn with_read_size(decoder: D, read_size: usize) -> Self {
        FrameReader {
            buf: ReadBuffer::new(decoder.max_frame(), read_size),
            decoder,
            returned: 0,
        }
    }

    /// Keeps the buffered input and reads on with another decoder (the
    /// handshake, then the frames that follow it).
    pub fn switch<E: Decoder>(mut self, decoder: E) -> FrameReader<E> {
        self.consume_returned();
        let mut buf = self.buf;
        buf.capacity = buf.capacity.max(decoder.max_frame());
        FrameReader {
            buf,
            decoder,
            returned: 0,
        }
    }

    /// Reads on with another decoder of the same type (a session whose
    /// first bytes choose another wire); the buffered input stays.
    pub fn set_decoder(&mut self, decoder: D) {
        self.consume_returned();
        self.buf.capacity = self.buf.capacity.max(decoder.max_frame());
        self.decoder = decoder;
    }

    fn consume_returned(&mut self) {
        self.buf.consume(std::mem::take(&mut self.returned));
    }

    /// The next whole frame in the buffer, or `None` when more input is
    /// needed. The previous frame is consumed first.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<D::Frame<'_>>, D::Error> {
        self.consume_returned();
        match self.decoder.decode(self.buf.data())? {
            Decoded::Frame(frame, used) => {
                self.returned = used;
                Ok(Some(frame))
            }
            Decoded::Incomplete { .. } => Ok(None),
        }
    }

    /// Input received and not yet returned as a frame.
    pub fn buffered(&self) -> &[u8] {
        &self.buf.data()[self.returned..]
    }

    /// True when part of a frame has arrived and the rest has not.
    pub fn mid_frame(&self) -> bool {
        !self.buffered().is_empty()
    }

    /// Reads once from `source` (typically a non-blocking socket, which
    /// then reports `WouldBlock`); `Ok(0)` means end of input.
    pub fn read_from(&mut self, mut source: impl Read) -> io::Result<usize> {
        self.consume_returned();
        let room = self.room()?;
        let n = source.read(room)?;
        self.buf.filled(n);
        Ok(n)
    }

    /// Reads once from an async `source`; `Ok(0)` means end of input.
    pub async fn fill_from(&mut self, mut source: impl AsyncRead + Unpin) -> io::Result<usize> {
        self.consume_returned();
        let room = self.room()?;
        let n = source.read(room).await?;
        self.buf.filled(n);
        Ok(n)
    }

    fn room(&mut self) -> io::Result<&mut [u8]> {
        let room = self.buf.unfilled();
        if room.is_empty() {
            // Only a decoder that breaks its own `max_frame` gets here.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame larger than the decoder's maximum",
            ));
        }
        Ok(room)
    }

    /// True if the last read filled all the room it was given (so more
    /// input is probably waiting); false after a short read, which most
    /// likely emptied the socket.
    pub fn last_read_filled(&self) -> bool {
        self.buf.grow
    }

    /// Frees the buffer if nothing is buffered: call it before waiting for
    /// input, so an idle connection holds no read buffer.
    pub fn release(&mut self) {
        self.consume_returned();
        self.buf.release();
    }

    /// Like [`FrameReader::release`], and also moves a short partial frame
    /// into a small buffer: for a peer that stopped mid-frame.
    pub fn shrink(&mut self) {
        self.consume_returned();
        self.buf.shrink();
    }

    /// Bytes of buffer currently allocated.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.buf.allocated()
    }
}

/// Bytes read per `read` call when the buffer has to grow: big enough to
/// pull many small frames per syscall under load.
pub const READ_CHUNK: usize = 32 * 1024;

/// Bytes allocated for the first read after the buffer was released: an
/// idle connection woken for one small message (or for its close) should
/// not cost a full-size allocation.
pub const FIRST_READ: usize = 1024;

/// Full-size buffers kept per thread for readers that wake: at most this
/// many ([`READ_CHUNK`] each).
const SPARES_PER_THREAD: usize = 8;

thread_local! {
    /// Full-size read buffers released by readers that went idle on this
    /// thread, taken by the next that wakes here. A worker serving many
    /// connections that each wake for a few frames would otherwise
    /// allocate, zero and free a buffer at every wake; an idle connection
    /// still holds none. Their bytes are stale input, never read: a reader
    /// reads only what it filled.
    static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A full-size buffer released on this thread, if one is kept.
fn take_spare() -> Option<Vec<u8>> {
    SPARES.with(|spares| spares.borrow_mut().pop())
}

/// Keeps a released buffer for the next reader that wakes on this thread
/// if it is full-size and fewer than [`SPARES_PER_THREAD`] are kept;
/// frees it otherwise.
fn keep_spare(data: Vec<u8>) {
    if data.len() != READ_CHUNK {
        return;
    }
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES_PER_THREAD {
            spares.push(data);
        }
    });
}

/// A reusable input buffer: the socket fills its tail, the decoder consumes
/// whole frames from its head, and a partial frame is moved to the front only
/// when room is needed.
///
/// It holds no memory while empty ([`ReadBuffer::release`]), so an idle
/// connection costs nothing here. The first read after that gets a
/// full-size buffer another reader on this thread released, if one is kept,
/// or else a small allocation; a read that fills it grows the buffer to full
/// size, which is never more than `max(read size, max_frame)`, because the
/// decoder refuses any header that promises a bigger frame.
#[derive(Debug)]
struct ReadBuffer {
    /// Backing storage; `data[start..end]` is unread input.
    data: Vec<u8>,
    /// First unconsumed byte.
    start: usize,
    /// One past the last byte read from the socket.
    end: usize,
    /// Full size: at least one maximum-sized frame.
    capacity: usize,
    /// The last read filled all the room it was given: more is coming, so
    /// the next read gets the full size.
    grow: bool,
}

impl ReadBuffer {
    /// A buffer able to hold any frame up to `max_frame` bytes, reading up
    /// to `read_size` at a time.
    fn new(max_frame: usize, read_size: usize) -> Self {
        ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            capacity: max_frame.max(read_size),
            grow: false,
        }
    }

    /// The bytes received but not yet consumed.
    fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// True when no unconsumed byte is buffered.
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes at the head as used.
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Space to read into, allocating, growing or compacting as needed.
    /// Empty only if the unconsumed bytes fill the whole capacity, which a
    /// [`FrameReader`] rules out by sizing the buffer to its decoder's
    /// largest frame.
    fn unfilled(&mut self) -> &mut [u8] {
        if self.data.is_empty() {
            self.data = match self.capacity >= READ_CHUNK {
                true => take_spare().unwrap_or_else(|| vec![0; FIRST_READ]),
                false => vec![0; FIRST_READ.min(self.capacity)],
            };
        }
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if (self.grow || self.end == self.data.len()) && self.data.len() < self.capacity {
            self.data.resize(self.capacity, 0);
        }
        self.grow = false;
        &mut self.data[self.end..]
    }

    /// Records that `n` bytes were written into [`ReadBuffer::unfilled`].
    fn filled(&mut self, n: usize) {
        self.grow = self.end + n == self.data.len();
        self.end = (self.end + n).min(self.data.len());
    }

    /// Frees the storage if nothing is buffered (an idle connection keeps no
    /// read buffer).
    fn release(&mut self) {
        if self.is_empty() {
            keep_spare(std::mem::take(&mut self.data));
            self.start = 0;
            self.end = 0;
            self.grow = false;
        }
    }

    /// Like [`ReadBuffer::release`], and also moves a short partial frame
    /// into a small buffer, so a peer that stops mid-frame pins
    /// [`FIRST_READ`] bytes, not a full-size buffer. Not for every pause:
    /// under load a read often ends mid-frame, and the next read would then
    /// have to grow the buffer again.
    fn shrink(&mut self) {
        let pending = self.end - self.start;
        if pending == 0 {
            self.release();
        } else if pending <= FIRST_READ / 2 && self.data.len() > FIRST_READ {
            let mut small = vec![0; FIRST_READ];
            small[..pending].copy_from_slice(&self.data[self.start..self.end]);
            keep_spare(std::mem::replace(&mut self.data, small));
            self.start = 0;
            self.end = pending;
            self.grow = false;
        }
    }

    /// Bytes of storage currently allocated.
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.data.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v1::{
        decode_handshake, decode_server_frame, encode_message, ClientDecoder, ClientFrame, Limits,
        ServerDecoder,
    };
    use proptest::prelude::*;

    /// A reader whose reads filled it to full size, all of it unread.
    fn full_reader() -> ReadBuffer {
        let mut buf = ReadBuffer::new(16, READ_CHUNK);
        while buf.data().len() < READ_CHUNK {
            let room = buf.unfilled().len();
            buf.filled(room);
        }
        assert_eq!(buf.allocated(), READ_CHUNK);
        buf
    }

    /// Reads everything `buf` holds and lets it go idle.
    fn drain_and_release(buf: &mut ReadBuffer) {
        buf.consume(buf.data().len());
        buf.release();
        assert_eq!(buf.allocated(), 0);
    }

    #[test]
    fn a_full_size_buffer_released_is_the_next_waking_readers_and_few_are_kept() {
        let mut first = full_reader();
        let kept = first.data().as_ptr();
        drain_and_release(&mut first);
        // The next reader to wake on this thread reads into it, whole.
        let mut next = ReadBuffer::new(16, READ_CHUNK);
        let room = next.unfilled();
        assert_eq!((room.as_ptr(), room.len()), (kept, READ_CHUNK));
        // Many readers going idle at once keep only a few buffers.
        let mut readers: Vec<ReadBuffer> =
            (0..SPARES_PER_THREAD + 4).map(|_| full_reader()).collect();
        readers.iter_mut().for_each(drain_and_release);
        assert_eq!(SPARES.with(|s| s.borrow().len()), SPARES_PER_THREAD);
    }

    #[test]
    fn read_buffer_starts_small_and_grows_when_reads_fill_it() {
        let mut buf = ReadBuffer::new(16, READ_CHUNK);
        assert_eq!(buf.unfilled().len(), FIRST_READ);
        buf.filled(FIRST_READ);
        buf.consume(FIRST_READ - 3);
        assert_eq!(buf.data(), &[0, 0, 0]);
        // The read filled the buffer: the partial frame moves to the front
        // and the buffer grows to full size.
        assert_eq!(buf.unfilled().len(), READ_CHUNK - 3);
        buf.filled(10);
        buf.consume(13);
        buf.release();
        assert_eq!(buf.allocated(), 0);
        // A partial frame left after a full-size read keeps only a small
        // buffer while the peer is silent.
        buf.unfilled();
        buf.filled(FIRST_READ);
        buf.unfilled();
        buf.filled(READ_CHUNK - FIRST_READ);
        buf.consume(READ_CHUNK - 2);
        buf.release();
        assert_eq!(buf.allocated(), READ_CHUNK);
        buf.shrink();
        assert_eq!(buf.allocated(), FIRST_READ);
        assert_eq!(buf.data(), &[0, 0]);
        buf.consume(2);
        buf.release();
        assert_eq!(buf.allocated(), 0);
        // A short read does not grow it (with no full-size buffer kept on
        // this thread to start from).
        while take_spare().is_some() {}
        buf.unfilled();
        buf.filled(5);
        buf.consume(5);
        assert_eq!(buf.unfilled().len(), FIRST_READ);
    }

    /// A byte source that hands out `data` in chunks of the given sizes, as
    /// a socket would.
    struct Chunked<'a> {
        data: &'a [u8],
        chunks: std::iter::Cycle<std::slice::Iter<'a, usize>>,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let want = (*self.chunks.next().unwrap_or(&1)).max(1);
            let n = want.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Feeds `stream` to a server-side reader in chunks. Returns the decoded
    /// messages, stopping at the first error.
    fn drive_reader(stream: &[u8], chunks: &[usize], limits: &Limits) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut reader = FrameReader::new(ClientDecoder { limits: *limits });
        let bound = limits.max_client_frame().max(READ_CHUNK);
        let mut source = Chunked {
            data: stream,
            chunks: chunks.iter().cycle(),
        };
        let mut frames = Vec::new();
        while reader.read_from(&mut source).expect("room to read") > 0 {
            assert!(
                reader.allocated() <= bound,
                "allocated {}",
                reader.allocated()
            );
            loop {
                match reader.next_frame() {
                    Ok(Some(ClientFrame::Message { to, content })) => {
                        frames.push((to.to_vec(), content.to_vec()))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return frames,
                }
            }
        }
        frames
    }

    #[test]
    fn the_largest_server_frame_fits_however_it_arrives() {
        // Two full 16-bit fields: 131,076 bytes, in 1,000-byte reads.
        let mut stream = Vec::new();
        encode_message(&[b'n'; 65535], &[b'c'; 65535], &mut stream).unwrap();
        encode_message(b"after", b"it", &mut stream).unwrap();
        let mut reader = FrameReader::with_read_size(ServerDecoder, 1000);
        let mut source = Chunked {
            data: &stream,
            chunks: [1000].iter().cycle(),
        };
        let mut sizes = Vec::new();
        while reader.read_from(&mut source).unwrap() > 0 {
            while let Some(frame) = reader.next_frame().unwrap() {
                if let crate::wire::v1::ServerFrame::Message { from, content } = frame {
                    sizes.push((from.len(), content.len()));
                }
            }
        }
        assert_eq!(sizes, [(65535, 65535), (5, 2)]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_overallocate(
            stream in proptest::collection::vec(any::<u8>(), 0..4096),
            chunks in proptest::collection::vec(1usize..300, 1..8),
            max_username in 1u8..=255,
            max_message in 0u16..=4096,
        ) {
            let limits = Limits { max_username, max_message };
            let _ = decode_handshake(&stream, &limits);
            let _ = decode_server_frame(&stream);
            drive_reader(&stream, &chunks, &limits);
        }

        #[test]
        fn encode_then_decode_round_trips(
            messages in proptest::collection::vec(
                (proptest::collection::vec(0x21u8..=0x7e, 1..=32),
                 proptest::collection::vec(any::<u8>(), 0..=2048)),
                1..20),
            chunks in proptest::collection::vec(1usize..5000, 1..8),
        ) {
            let limits = Limits::default();
            let mut stream = Vec::new();
            for (to, content) in &messages {
                encode_message(to, content, &mut stream).unwrap();
            }
            prop_assert_eq!(drive_reader(&stream, &chunks, &limits), messages);
        }
    }
}
