//! A SPDY/3.1 server session over one byte stream, as `kubectl port-forward` needs: the client
//! opens streams, the node answers each with SYN_REPLY and moves bytes both ways.
//!
//! The peer is `github.com/moby/spdystream` (through client-go), so this follows what it does
//! where the draft-3 spec leaves room:
//!
//! - Header blocks are one zlib stream per direction for the whole session, primed with the
//!   SPDY/3 dictionary, each block ending at a SYNC_FLUSH point.
//! - No flow control: spdystream neither sends nor honours WINDOW_UPDATE, so enforcing the
//!   64 KiB initial window would stall every stream. WINDOW_UPDATE and SETTINGS are ignored.
//! - PINGs from the client (odd ids) are echoed; GOAWAY ends the session.
//! - A SYN_STREAM whose id is even or not above the last one is refused with RST_STREAM
//!   PROTOCOL_ERROR, and DATA for a stream the session does not know is dropped.
//!
//! One loop reads frames and routes DATA to per-stream bounded channels: a consumer that stops
//! reading its stream stalls the whole session (PINGs included) until it reads again or drops
//! its reader. One loop writes every frame, so header compression happens in wire order.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf,
};
use tokio::sync::mpsc;

const VERSION: u16 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes.
const PROTOCOL_ERROR: u32 = 1;
const REFUSED_STREAM: u32 = 3;
const CANCEL: u32 = 5;

/// Largest DATA frame this side sends, and the piece size incoming DATA is delivered in.
/// spdystream accepts up to 2^24-1 but reads each frame whole into memory; 32 KiB is what
/// its own writers produce through `io.Copy`.
const MAX_DATA_CHUNK: usize = 32 << 10;
/// Pieces buffered per stream before the reader applies back-pressure.
const STREAM_BUFFER: usize = 8;
/// Frames queued for the writer before stream writers wait.
const OUTGOING_QUEUE: usize = 32;
/// Open streams per session; more are refused. Together with `STREAM_BUFFER` this bounds the
/// memory a client can make the session hold.
const MAX_STREAMS: usize = 100;
/// Largest control frame read whole; port-forward's are a few dozen bytes.
const MAX_CONTROL_FRAME: u32 = 64 << 10;
/// Largest header block after decompression, so a zlib bomb costs bounded memory.
const MAX_HEADER_BLOCK: usize = 256 << 10;

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1).
const DICTIONARY: &[u8; 1423] = b"\
\0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\
\0\0\0\x05trace\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\
\0\0\0\x0faccept-language\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\
\0\0\0\x0dauthorization\0\0\0\x0dcache-control\0\0\0\x0aconnection\
\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\x10content-language\
\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-md5\
\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\
\0\0\0\x06expect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-match\
\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\0\0\0\x08if-range\
\0\0\0\x13if-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\
\0\0\0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authenticate\
\0\0\0\x13proxy-authorization\0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-after\
\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\0\0\0\x11transfer-encoding\
\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\0\0\0\x07warning\
\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\0\0\0\x06200 OK\
\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\x0aset-cookie\
\0\0\0\x0akeep-alive\0\0\0\x06origin\
100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,\
text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8\
charset=iso-8859-1,utf-,*,enq=0.";

/// Why a session ended other than by the client's EOF or GOAWAY.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading or writing the session's connection")]
    Io(#[from] io::Error),
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("{frame} frame with an invalid length of {len} bytes")]
    InvalidLength { frame: &'static str, len: u32 },
    #[error("invalid {0} frame")]
    InvalidFrame(&'static str),
    #[error("a header block does not decompress")]
    Decompress(#[source] flate2::DecompressError),
    #[error("a header block could not be compressed")]
    Compress(#[source] flate2::CompressError),
    #[error("a header block is malformed")]
    MalformedHeaders,
    #[error("a header block decompresses to more than {MAX_HEADER_BLOCK} bytes")]
    HeadersTooLarge,
}

/// One stream the client opened with SYN_STREAM, already answered with SYN_REPLY (unless the
/// client opened it unidirectional, when this side may not send on it at all).
#[derive(Debug)]
pub struct IncomingStream {
    pub id: u32,
    /// Names lower-cased; a value Go joined with NULs comes as one pair per value.
    pub headers: Vec<(String, String)>,
    /// Bytes the client sends; EOF when it half-closes (FIN), resets or the session ends.
    pub reader: StreamReader,
    /// Bytes to the client as DATA frames; see [`StreamWriter`] for how it closes.
    pub writer: StreamWriter,
}

impl IncomingStream {
    /// The first value of header `name` (compared ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs a server session over `io` until the client goes away (EOF or GOAWAY, `Ok`) or breaks
/// the protocol (`Err`); each stream the client opens is sent on `streams`, and refused with
/// RST_STREAM once nobody receives them. Dropping the future ends the session: readers see
/// EOF and writes fail.
///
/// ```no_run
/// # async fn example(conn: tokio::net::TcpStream) {
/// use tokio::io::AsyncWriteExt;
/// use wasmkube_node::spdy::{serve, IncomingStream};
///
/// let (tx, mut rx) = tokio::sync::mpsc::channel::<IncomingStream>(8);
/// tokio::spawn(async move {
///     while let Some(mut stream) = rx.recv().await {
///         if stream.header("streamtype") == Some("error") {
///             let _ = stream.writer.shutdown().await;
///         }
///     }
/// });
/// let _ = serve(conn, tx).await;
/// # }
/// ```
pub async fn serve<T>(io: T, streams: mpsc::Sender<IncomingStream>) -> Result<(), SpdyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (read_half, write_half) = tokio::io::split(io);
    let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_QUEUE);
    let (resets_tx, resets_rx) = mpsc::unbounded_channel();
    let mut session = ReadSession {
        io: BufReader::new(read_half),
        headers: HeaderDecoder::new(),
        frames: frames_tx,
        resets: resets_tx,
        accept: streams,
        streams: HashMap::new(),
        last_id: 0,
    };
    let reading = session.run();
    let writing = write_frames(write_half, frames_rx, resets_rx);
    tokio::pin!(reading, writing);
    // Both loops run until one ends; the writer only ends on a write error, and once the
    // reader is done the client is gone or misbehaving, so queued frames are dropped.
    tokio::select! {
        r = &mut reading => r,
        w = &mut writing => w,
    }
}

/// State a stream's handles share with the session.
#[derive(Debug)]
struct StreamState {
    id: u32,
    /// Set once either side reset the stream: writes fail and queued DATA is dropped.
    reset: AtomicBool,
    /// Set once this side sent FIN (or may not send at all).
    local_fin: AtomicBool,
}

impl StreamState {
    fn is_reset(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

/// A frame for the writer loop.
enum Outgoing {
    SynReply {
        id: u32,
    },
    Data {
        stream: Arc<StreamState>,
        data: Bytes,
        fin: bool,
    },
    Reset {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
}

/// The bytes the client sent on a stream.
#[derive(Debug)]
pub struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => this.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

type Reserve = Pin<
    Box<
        dyn Future<Output = Result<mpsc::OwnedPermit<Outgoing>, mpsc::error::SendError<()>>> + Send,
    >,
>;

/// Bytes to the client. Each write sends one DATA frame of at most 32 KiB; `shutdown` sends
/// an empty DATA frame with FIN. Dropping the writer before `shutdown` resets the stream
/// (RST_STREAM CANCEL), as does [`StreamWriter::reset`]. Writes fail once the client reset
/// the stream or the session ended; `flush` only waits for the frames to be queued.
pub struct StreamWriter {
    state: Arc<StreamState>,
    frames: mpsc::Sender<Outgoing>,
    /// Resets bypass the bounded queue so that dropping a writer never has to wait.
    resets: mpsc::UnboundedSender<Outgoing>,
    reserving: Option<Reserve>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Sends RST_STREAM CANCEL (unless the stream is already reset): the client drops what it
    /// has not read and sees the stream end.
    pub fn reset(self) {
        self.send_reset();
    }

    fn send_reset(&self) {
        if !self.state.reset.swap(true, Ordering::SeqCst) {
            // Fails only when the session is over, and then there is nobody to tell.
            let _ = self.resets.send(Outgoing::Reset {
                id: self.state.id,
                status: CANCEL,
            });
        }
    }

    fn check_open(&self) -> io::Result<()> {
        if self.state.is_reset() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            ));
        }
        if self.state.local_fin.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream is closed",
            ));
        }
        Ok(())
    }

    fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<mpsc::OwnedPermit<Outgoing>>> {
        let frames = &self.frames;
        let reserving = self
            .reserving
            .get_or_insert_with(|| Box::pin(frames.clone().reserve_owned()));
        let reserved = ready!(reserving.as_mut().poll(cx));
        self.reserving = None;
        Poll::Ready(
            reserved
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "SPDY session has ended")),
        )
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_open()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let permit = ready!(this.poll_reserve(cx))?;
        let n = buf.len().min(MAX_DATA_CHUNK);
        let data = Bytes::copy_from_slice(&buf[..n]);
        permit.send(Outgoing::Data {
            stream: this.state.clone(),
            data,
            fin: false,
        });
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.local_fin.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        this.check_open()?;
        let permit = ready!(this.poll_reserve(cx))?;
        this.state.local_fin.store(true, Ordering::SeqCst);
        permit.send(Outgoing::Data {
            stream: this.state.clone(),
            data: Bytes::new(),
            fin: true,
        });
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.state.local_fin.load(Ordering::SeqCst) {
            self.send_reset();
        }
    }
}

/// The session's view of one open stream.
struct Entry {
    state: Arc<StreamState>,
    /// `None` once the client half-closed.
    data: Option<mpsc::Sender<Bytes>>,
}

impl Entry {
    fn is_closed(&self) -> bool {
        self.state.is_reset()
            || (self.data.is_none() && self.state.local_fin.load(Ordering::SeqCst))
    }
}

enum Flow {
    Continue,
    GoAway,
}

struct ReadSession<R> {
    io: BufReader<R>,
    headers: HeaderDecoder,
    frames: mpsc::Sender<Outgoing>,
    resets: mpsc::UnboundedSender<Outgoing>,
    accept: mpsc::Sender<IncomingStream>,
    streams: HashMap<u32, Entry>,
    last_id: u32,
}

impl<R: AsyncRead + Unpin> ReadSession<R> {
    async fn run(&mut self) -> Result<(), SpdyError> {
        loop {
            let mut head = [0u8; 8];
            if !read_frame_head(&mut self.io, &mut head).await? {
                return Ok(());
            }
            let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let flags = head[4];
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]);
            if word & 0x8000_0000 != 0 {
                let version = (word >> 16) as u16 & 0x7fff;
                if version != VERSION {
                    return Err(SpdyError::UnsupportedVersion(version));
                }
                if let Flow::GoAway = self.control_frame(word as u16, flags, len).await? {
                    return Ok(());
                }
            } else {
                self.data_frame(word & 0x7fff_ffff, flags, len).await?;
            }
        }
    }

    async fn control_frame(&mut self, kind: u16, flags: u8, len: u32) -> Result<Flow, SpdyError> {
        match kind {
            SYN_STREAM => {
                let payload = self.read_control("SYN_STREAM", len, 10).await?;
                let id = stream_id(&payload);
                if id == 0 {
                    return Err(SpdyError::InvalidFrame("SYN_STREAM"));
                }
                // Associated-to id, priority and slot (bytes 4..10) mean nothing to a server.
                let headers = parse_header_block(&self.headers.decode(&payload[10..])?)?;
                self.open_stream(id, flags, headers).await;
            }
            SYN_REPLY | HEADERS => {
                let name = if kind == SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                let payload = self.read_control(name, len, 4).await?;
                let id = stream_id(&payload);
                if id == 0 {
                    return Err(SpdyError::InvalidFrame(name));
                }
                // Decoded only to keep the zlib stream in step: the client has nothing to
                // reply to, and port-forward sends no trailing headers.
                parse_header_block(&self.headers.decode(&payload[4..])?)?;
                if kind == HEADERS && flags & FLAG_FIN != 0 {
                    self.remote_fin(id);
                }
            }
            RST_STREAM => {
                let payload = self.read_fixed("RST_STREAM", len, 8).await?;
                let id = stream_id(&payload);
                let status = be32(&payload[4..]);
                if id == 0 || status == 0 {
                    return Err(SpdyError::InvalidFrame("RST_STREAM"));
                }
                if let Some(entry) = self.streams.remove(&id) {
                    entry.state.reset.store(true, Ordering::SeqCst);
                    tracing::debug!(stream = id, status, "client reset SPDY stream");
                }
            }
            SETTINGS => {
                let payload = self.read_control("SETTINGS", len, 4).await?;
                let count = be32(&payload) as u64;
                if 4 + 8 * count != u64::from(len) {
                    return Err(SpdyError::InvalidLength {
                        frame: "SETTINGS",
                        len,
                    });
                }
            }
            PING => {
                let payload = self.read_fixed("PING", len, 4).await?;
                let id = be32(&payload);
                if id == 0 || flags != 0 {
                    return Err(SpdyError::InvalidFrame("PING"));
                }
                // Odd ids are the client's own; even ones would answer pings this side
                // never sends.
                if id % 2 == 1 {
                    self.queue(Outgoing::Ping { id }).await;
                }
            }
            GOAWAY => {
                self.read_fixed("GOAWAY", len, 8).await?;
                if flags != 0 {
                    return Err(SpdyError::InvalidFrame("GOAWAY"));
                }
                return Ok(Flow::GoAway);
            }
            WINDOW_UPDATE => {
                self.read_fixed("WINDOW_UPDATE", len, 8).await?;
                if flags != 0 {
                    return Err(SpdyError::InvalidFrame("WINDOW_UPDATE"));
                }
            }
            // The spec has unknown control frames ignored (CREDENTIAL among them here).
            _ => self.skip(len).await?,
        }
        Ok(Flow::Continue)
    }

    async fn open_stream(&mut self, id: u32, flags: u8, headers: Vec<(String, String)>) {
        if id.is_multiple_of(2) || id <= self.last_id {
            tracing::debug!(
                stream = id,
                last = self.last_id,
                "refusing out-of-order SPDY stream id"
            );
            self.queue(Outgoing::Reset {
                id,
                status: PROTOCOL_ERROR,
            })
            .await;
            return;
        }
        self.last_id = id;
        self.streams.retain(|_, entry| !entry.is_closed());
        if self.streams.len() >= MAX_STREAMS || self.accept.is_closed() {
            tracing::debug!(
                stream = id,
                open = self.streams.len(),
                "refusing SPDY stream"
            );
            self.queue(Outgoing::Reset {
                id,
                status: REFUSED_STREAM,
            })
            .await;
            return;
        }
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        let state = Arc::new(StreamState {
            id,
            reset: AtomicBool::new(false),
            local_fin: AtomicBool::new(unidirectional),
        });
        if !unidirectional {
            // Queued before the stream is handed out, so it precedes any DATA on it: the
            // client drops DATA for a stream it has no reply for.
            self.queue(Outgoing::SynReply { id }).await;
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let data = if flags & FLAG_FIN != 0 {
            None
        } else {
            Some(tx)
        };
        self.streams.insert(
            id,
            Entry {
                state: state.clone(),
                data,
            },
        );
        let stream = IncomingStream {
            id,
            headers,
            reader: StreamReader {
                rx,
                pending: Bytes::new(),
            },
            writer: StreamWriter {
                state,
                frames: self.frames.clone(),
                resets: self.resets.clone(),
                reserving: None,
            },
        };
        // A stream nobody takes is dropped here, and its writer resets it.
        let _ = self.accept.send(stream).await;
    }

    async fn data_frame(&mut self, id: u32, flags: u8, len: u32) -> Result<(), SpdyError> {
        if id == 0 {
            return Err(SpdyError::InvalidFrame("DATA"));
        }
        let mut sink = self.streams.get(&id).and_then(|entry| entry.data.clone());
        let mut remaining = len as usize;
        while remaining > 0 {
            let n = remaining.min(MAX_DATA_CHUNK);
            remaining -= n;
            let Some(tx) = &sink else {
                // Unknown, half-closed or unread stream: spdystream drops such DATA too.
                self.skip(n as u32).await?;
                continue;
            };
            let mut chunk = vec![0; n];
            read_exact(&mut self.io, &mut chunk).await?;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                // The consumer dropped its reader.
                sink = None;
            }
        }
        if flags & FLAG_FIN != 0 {
            self.remote_fin(id);
        }
        Ok(())
    }

    fn remote_fin(&mut self, id: u32) {
        if let Some(entry) = self.streams.get_mut(&id) {
            entry.data = None;
        }
    }

    /// Queues a frame for the writer. It fails only once the writer loop has ended, and then
    /// `serve` is returning anyway.
    async fn queue(&self, frame: Outgoing) {
        let _ = self.frames.send(frame).await;
    }

    async fn read_control(
        &mut self,
        frame: &'static str,
        len: u32,
        min: u32,
    ) -> Result<Vec<u8>, SpdyError> {
        if len < min || len > MAX_CONTROL_FRAME {
            return Err(SpdyError::InvalidLength { frame, len });
        }
        let mut payload = vec![0; len as usize];
        read_exact(&mut self.io, &mut payload).await?;
        Ok(payload)
    }

    async fn read_fixed(
        &mut self,
        frame: &'static str,
        len: u32,
        exact: u32,
    ) -> Result<Vec<u8>, SpdyError> {
        if len != exact {
            return Err(SpdyError::InvalidLength { frame, len });
        }
        self.read_control(frame, len, exact).await
    }

    async fn skip(&mut self, len: u32) -> Result<(), SpdyError> {
        let skipped =
            tokio::io::copy(&mut (&mut self.io).take(len.into()), &mut tokio::io::sink()).await?;
        if skipped != u64::from(len) {
            return Err(SpdyError::Truncated);
        }
        Ok(())
    }
}

/// Reads the 8-byte frame header; `false` on EOF before its first byte.
async fn read_frame_head<R: AsyncRead + Unpin>(
    io: &mut R,
    head: &mut [u8; 8],
) -> Result<bool, SpdyError> {
    let mut filled = 0;
    while filled < head.len() {
        let n = io.read(&mut head[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(SpdyError::Truncated)
            };
        }
        filled += n;
    }
    Ok(true)
}

async fn read_exact<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), SpdyError> {
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(SpdyError::Truncated),
        Err(e) => Err(e.into()),
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The 31-bit stream id at the start of a payload (the top bit is reserved).
fn stream_id(payload: &[u8]) -> u32 {
    be32(payload) & 0x7fff_ffff
}

async fn write_frames<W: AsyncWrite + Unpin>(
    io: W,
    mut frames: mpsc::Receiver<Outgoing>,
    mut resets: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), SpdyError> {
    let mut io = BufWriter::new(io);
    let mut headers = HeaderEncoder::new(Compression::default())?;
    let mut head = Vec::with_capacity(64);
    loop {
        let frame = tokio::select! {
            biased;
            Some(frame) = resets.recv() => frame,
            Some(frame) = frames.recv() => frame,
            else => return Ok(()),
        };
        head.clear();
        match frame {
            Outgoing::SynReply { id } => {
                let mut block = Vec::new();
                // An empty header block, as Kubernetes' own server replies.
                headers.encode(&0u32.to_be_bytes(), &mut block)?;
                control_head(&mut head, SYN_REPLY, 0, 4 + block.len());
                head.extend_from_slice(&id.to_be_bytes());
                head.extend_from_slice(&block);
                io.write_all(&head).await?;
            }
            Outgoing::Data { stream, data, fin } => {
                // Nothing may follow a RST_STREAM on its stream.
                if stream.is_reset() {
                    continue;
                }
                head.extend_from_slice(&stream.id.to_be_bytes());
                let flags = if fin { FLAG_FIN } else { 0 };
                head.extend_from_slice(&flags_and_length(flags, data.len()));
                io.write_all(&head).await?;
                io.write_all(&data).await?;
            }
            Outgoing::Reset { id, status } => {
                control_head(&mut head, RST_STREAM, 0, 8);
                head.extend_from_slice(&id.to_be_bytes());
                head.extend_from_slice(&status.to_be_bytes());
                io.write_all(&head).await?;
            }
            Outgoing::Ping { id } => {
                control_head(&mut head, PING, 0, 4);
                head.extend_from_slice(&id.to_be_bytes());
                io.write_all(&head).await?;
            }
        }
        if frames.is_empty() && resets.is_empty() {
            io.flush().await?;
        }
    }
}

fn control_head(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&flags_and_length(flags, len));
}

/// Flags in the top byte, a 24-bit length below. Lengths here are at most `MAX_DATA_CHUNK`
/// or a small control payload.
fn flags_and_length(flags: u8, len: usize) -> [u8; 4] {
    debug_assert!(len < 1 << 24);
    ((u32::from(flags) << 24) | (len as u32 & 0xff_ffff)).to_be_bytes()
}

/// Compresses this side's header blocks: one zlib stream for the session, primed with the
/// dictionary (so its header carries FDICT and the dictionary's id, as Go's
/// `zlib.NewReaderDict` expects), each block ending at a sync flush.
struct HeaderEncoder(Compress);

impl HeaderEncoder {
    fn new(level: Compression) -> Result<Self, SpdyError> {
        let mut compress = Compress::new(level, true);
        compress
            .set_dictionary(DICTIONARY)
            .map_err(SpdyError::Compress)?;
        Ok(Self(compress))
    }

    fn encode(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut input = block;
        loop {
            out.reserve(input.len() + 64);
            let before = self.0.total_in();
            self.0
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(SpdyError::Compress)?;
            input = &input[(self.0.total_in() - before) as usize..];
            // A full buffer may hide more pending output.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Decompresses the client's header blocks, the counterpart of [`HeaderEncoder`].
struct HeaderDecoder(Decompress);

impl HeaderDecoder {
    fn new() -> Self {
        Self(Decompress::new(true))
    }

    fn decode(&mut self, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut input = compressed;
        let mut out = Vec::new();
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::HeadersTooLarge);
                }
                let more = out.len().max(256).min(MAX_HEADER_BLOCK - out.len());
                out.reserve_exact(more);
            }
            let (before_in, before_out) = (self.0.total_in(), self.0.total_out());
            let result = self
                .0
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.0.total_in() - before_in) as usize;
            let produced = self.0.total_out() - before_out;
            input = &input[consumed..];
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(SpdyError::Decompress)?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Decompress(e)),
            }
            let stalled = consumed == 0 && produced == 0;
            if (input.is_empty() && out.len() < out.capacity()) || stalled {
                return Ok(out);
            }
        }
    }
}

/// Parses a SPDY/3 header block: a 32-bit count, then 32-bit length-prefixed names and
/// values, several values of one name joined by NUL.
fn parse_header_block(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], SpdyError> {
        if input.len() < n {
            return Err(SpdyError::MalformedHeaders);
        }
        let (head, rest) = input.split_at(n);
        *input = rest;
        Ok(head)
    }
    fn take_string<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
        let len = be32(take(input, 4)?) as usize;
        take(input, len)
    }

    let mut input = block;
    let count = be32(take(&mut input, 4)?);
    // No allocation from `count`: every pair consumes at least 8 bytes, so a lying count
    // runs out of input instead.
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(take_string(&mut input)?).to_ascii_lowercase();
        let value = take_string(&mut input)?;
        for part in value.split(|&b| b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(part).into_owned()));
        }
    }
    if !input.is_empty() {
        return Err(SpdyError::MalformedHeaders);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    /// A frame as the client sees it.
    #[derive(Debug, PartialEq)]
    enum Frame {
        Control {
            kind: u16,
            flags: u8,
            payload: Vec<u8>,
        },
        Data {
            id: u32,
            flags: u8,
            payload: Vec<u8>,
        },
    }

    /// The client side of a session, framing the way spdystream does: headers through one
    /// zlib stream at best compression, a sync flush after each block.
    struct Client {
        io: DuplexStream,
        deflate: HeaderEncoder,
        inflate: HeaderDecoder,
    }

    fn start() -> (
        Client,
        mpsc::Receiver<IncomingStream>,
        JoinHandle<Result<(), SpdyError>>,
    ) {
        let (client, server) = tokio::io::duplex(256 << 10);
        let (tx, rx) = mpsc::channel(4);
        let session = tokio::spawn(serve(server, tx));
        let client = Client {
            io: client,
            deflate: HeaderEncoder::new(Compression::best()).unwrap(),
            inflate: HeaderDecoder::new(),
        };
        (client, rx, session)
    }

    fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name, value] {
                block.extend_from_slice(&(s.len() as u32).to_be_bytes());
                block.extend_from_slice(s.as_bytes());
            }
        }
        block
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        control_head(&mut frame, kind, flags, payload.len());
        frame.extend_from_slice(payload);
        frame
    }

    fn data(id: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = id.to_be_bytes().to_vec();
        frame.extend_from_slice(&flags_and_length(flags, payload.len()));
        frame.extend_from_slice(payload);
        frame
    }

    fn two_words(a: u32, b: u32) -> Vec<u8> {
        [a.to_be_bytes(), b.to_be_bytes()].concat()
    }

    const PORT_FORWARD_DATA: &[(&str, &str)] =
        &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")];

    impl Client {
        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }

        async fn syn_stream(&mut self, id: u32, flags: u8, headers: &[(&str, &str)]) {
            // Stream id, associated-to id 0, priority 0, slot 0, then the header block.
            let mut payload = two_words(id, 0);
            payload.extend_from_slice(&[0, 0]);
            self.deflate
                .encode(&header_block(headers), &mut payload)
                .unwrap();
            self.send(&control(SYN_STREAM, flags, &payload)).await;
        }

        async fn data(&mut self, id: u32, flags: u8, payload: &[u8]) {
            self.send(&data(id, flags, payload)).await;
        }

        async fn ping(&mut self, id: u32) {
            self.send(&control(PING, 0, &id.to_be_bytes())).await;
        }

        async fn read(&mut self) -> Frame {
            let mut head = [0u8; 8];
            self.io.read_exact(&mut head).await.unwrap();
            let word = be32(&head);
            let flags = head[4];
            let len = be32(&[0, head[5], head[6], head[7]]) as usize;
            let mut payload = vec![0; len];
            self.io.read_exact(&mut payload).await.unwrap();
            if word & 0x8000_0000 != 0 {
                assert_eq!(word >> 16, 0x8003, "control frames carry version 3");
                Frame::Control {
                    kind: word as u16,
                    flags,
                    payload,
                }
            } else {
                Frame::Data {
                    id: word,
                    flags,
                    payload,
                }
            }
        }

        /// Reads a SYN_REPLY and returns its stream id and raw (compressed) header block.
        async fn syn_reply(&mut self) -> (u32, Vec<u8>) {
            match self.read().await {
                Frame::Control {
                    kind: SYN_REPLY,
                    flags: 0,
                    payload,
                } => {
                    let block = payload[4..].to_vec();
                    let headers = parse_header_block(&self.inflate.decode(&block).unwrap());
                    assert_eq!(headers.unwrap(), vec![]);
                    (be32(&payload), block)
                }
                other => panic!("expected SYN_REPLY, got {other:?}"),
            }
        }

        async fn open(
            &mut self,
            streams: &mut mpsc::Receiver<IncomingStream>,
            id: u32,
        ) -> IncomingStream {
            self.syn_stream(id, 0, PORT_FORWARD_DATA).await;
            assert_eq!(self.syn_reply().await.0, id);
            streams.recv().await.unwrap()
        }

        async fn expect_ping(&mut self, id: u32) {
            let frame = self.read().await;
            assert_eq!(
                frame,
                Frame::Control {
                    kind: PING,
                    flags: 0,
                    payload: id.to_be_bytes().to_vec()
                }
            );
        }
    }

    async fn read_to_end(reader: &mut StreamReader) -> Vec<u8> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        out
    }

    #[test]
    fn dictionary_is_spdy3s() {
        // zlib reports a dictionary's Adler-32; e3c6a7c2 is the dictionary id every SPDY/3
        // header stream carries right after its zlib header.
        let mut compress = Compress::new(Compression::default(), true);
        assert_eq!(compress.set_dictionary(DICTIONARY).unwrap(), 0xe3c6_a7c2);
    }

    #[tokio::test]
    async fn syn_stream_arrives_with_its_headers_and_is_replied() {
        let (mut client, mut streams, _session) = start();
        client.syn_stream(1, 0, PORT_FORWARD_DATA).await;
        let (id, block) = client.syn_reply().await;
        assert_eq!(id, 1);
        // The reply's zlib stream names the SPDY dictionary, or Go's reader rejects it.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0, "FDICT set");
        assert_eq!(block[2..6], [0xe3, 0xc6, 0xa7, 0xc2]);

        let stream = streams.recv().await.unwrap();
        assert_eq!(stream.id, 1);
        assert_eq!(
            stream.headers,
            PORT_FORWARD_DATA
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(stream.header("port"), Some("8080"));
        assert_eq!(stream.header("StreamType"), Some("data"));
        assert_eq!(stream.header("missing"), None);
    }

    #[tokio::test]
    async fn data_flows_both_ways_with_fin() {
        let (mut client, mut streams, _session) = start();
        let mut stream = client.open(&mut streams, 1).await;

        client.data(1, 0, b"hello ").await;
        client.data(1, FLAG_FIN, b"node").await;
        assert_eq!(read_to_end(&mut stream.reader).await, b"hello node");

        stream.writer.write_all(b"hello client").await.unwrap();
        stream.writer.shutdown().await.unwrap();
        assert_eq!(
            client.read().await,
            Frame::Data {
                id: 1,
                flags: 0,
                payload: b"hello client".to_vec()
            }
        );
        assert_eq!(
            client.read().await,
            Frame::Data {
                id: 1,
                flags: FLAG_FIN,
                payload: vec![]
            }
        );
        let err = stream.writer.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

        // Dropping a writer after FIN resets nothing: the next frame is the ping's echo.
        drop(stream);
        client.ping(1).await;
        client.expect_ping(1).await;
    }

    #[tokio::test]
    async fn interleaved_streams_keep_their_bytes_apart() {
        let (mut client, mut streams, _session) = start();
        let mut first = client.open(&mut streams, 1).await;
        let mut second = client.open(&mut streams, 3).await;

        client.data(3, 0, b"three-a ").await;
        client.data(1, 0, b"one-a ").await;
        client.data(3, FLAG_FIN, b"three-b").await;
        client.data(1, FLAG_FIN, b"one-b").await;
        assert_eq!(read_to_end(&mut second.reader).await, b"three-a three-b");
        assert_eq!(read_to_end(&mut first.reader).await, b"one-a one-b");

        second.writer.write_all(b"to three").await.unwrap();
        first.writer.write_all(b"to one").await.unwrap();
        second.writer.shutdown().await.unwrap();
        assert_eq!(
            client.read().await,
            Frame::Data {
                id: 3,
                flags: 0,
                payload: b"to three".to_vec()
            }
        );
        assert_eq!(
            client.read().await,
            Frame::Data {
                id: 1,
                flags: 0,
                payload: b"to one".to_vec()
            }
        );
        assert_eq!(
            client.read().await,
            Frame::Data {
                id: 3,
                flags: FLAG_FIN,
                payload: vec![]
            }
        );
    }

    #[tokio::test]
    async fn large_data_is_split_and_reassembled() {
        let (mut client, mut streams, _session) = start();
        let mut stream = client.open(&mut streams, 1).await;
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

        // One client frame larger than a delivery piece.
        client.data(1, FLAG_FIN, &big).await;
        assert_eq!(read_to_end(&mut stream.reader).await, big);

        stream.writer.write_all(&big).await.unwrap();
        stream.writer.shutdown().await.unwrap();
        let mut received = Vec::new();
        loop {
            match client.read().await {
                Frame::Data {
                    id: 1,
                    flags,
                    payload,
                } => {
                    assert!(payload.len() <= MAX_DATA_CHUNK);
                    received.extend_from_slice(&payload);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, big);
    }

    #[tokio::test]
    async fn client_pings_are_echoed() {
        let (mut client, _streams, _session) = start();
        // Even ids answer server pings, which this side never sends: not echoed.
        client.ping(2).await;
        client.ping(1).await;
        client.expect_ping(1).await;
        client.ping(3).await;
        client.expect_ping(3).await;
    }

    #[tokio::test]
    async fn settings_window_update_and_unknown_frames_are_ignored() {
        let (mut client, mut streams, _session) = start();
        let stream = client.open(&mut streams, 1).await;
        // SETTINGS_INITIAL_WINDOW_SIZE = 64 KiB, a WINDOW_UPDATE, a CREDENTIAL (type 10),
        // and DATA for a stream never opened.
        let mut settings = 1u32.to_be_bytes().to_vec();
        settings.extend(two_words(7, 65536));
        client.send(&control(SETTINGS, 0, &settings)).await;
        client
            .send(&control(WINDOW_UPDATE, 0, &two_words(1, 4096)))
            .await;
        client.send(&control(10, 0, b"credential")).await;
        client.data(9, 0, b"nobody's").await;
        client.ping(1).await;
        client.expect_ping(1).await;
        drop(stream);
    }

    #[tokio::test]
    async fn goaway_ends_the_session() {
        let (mut client, mut streams, session) = start();
        let mut stream = client.open(&mut streams, 1).await;
        client.send(&control(GOAWAY, 0, &two_words(0, 0))).await;
        session.await.unwrap().unwrap();
        assert_eq!(read_to_end(&mut stream.reader).await, b"");
        let err = stream.writer.write_all(b"gone").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn eof_ends_the_session() {
        let (client, _streams, session) = start();
        drop(client);
        session.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_serve_ends_its_streams() {
        let (mut client, mut streams, session) = start();
        let mut stream = client.open(&mut streams, 1).await;
        session.abort();
        assert!(session.await.unwrap_err().is_cancelled());
        assert_eq!(read_to_end(&mut stream.reader).await, b"");
        assert!(stream.writer.write_all(b"gone").await.is_err());
    }

    #[tokio::test]
    async fn client_reset_ends_the_stream() {
        let (mut client, mut streams, _session) = start();
        let mut stream = client.open(&mut streams, 1).await;
        client.data(1, 0, b"partial").await;
        client
            .send(&control(RST_STREAM, 0, &two_words(1, CANCEL)))
            .await;
        // What arrived before the reset is still read, then EOF.
        assert_eq!(read_to_end(&mut stream.reader).await, b"partial");
        let err = stream.writer.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // Dropping a writer the client reset sends nothing more.
        drop(stream);
        client.ping(1).await;
        client.expect_ping(1).await;
    }

    #[tokio::test]
    async fn dropping_the_writer_resets_the_stream() {
        let (mut client, mut streams, _session) = start();
        let first = client.open(&mut streams, 1).await;
        let second = client.open(&mut streams, 3).await;
        drop(first.writer);
        let reset = Frame::Control {
            kind: RST_STREAM,
            flags: 0,
            payload: two_words(1, CANCEL),
        };
        assert_eq!(client.read().await, reset);
        second.writer.reset();
        let reset = Frame::Control {
            kind: RST_STREAM,
            flags: 0,
            payload: two_words(3, CANCEL),
        };
        assert_eq!(client.read().await, reset);
    }

    #[tokio::test]
    async fn syn_stream_with_fin_reads_empty() {
        let (mut client, mut streams, _session) = start();
        client.syn_stream(1, FLAG_FIN, PORT_FORWARD_DATA).await;
        assert_eq!(client.syn_reply().await.0, 1);
        let mut stream = streams.recv().await.unwrap();
        assert_eq!(read_to_end(&mut stream.reader).await, b"");
    }

    #[tokio::test]
    async fn bad_stream_ids_are_refused() {
        let (mut client, mut streams, _session) = start();
        let _stream = client.open(&mut streams, 3).await;
        for id in [4, 3, 1] {
            client.syn_stream(id, 0, PORT_FORWARD_DATA).await;
            let reset = Frame::Control {
                kind: RST_STREAM,
                flags: 0,
                payload: two_words(id, PROTOCOL_ERROR),
            };
            assert_eq!(client.read().await, reset);
        }
        // The session carries on, its header stream still in step.
        let stream = client.open(&mut streams, 5).await;
        assert_eq!(stream.header("streamtype"), Some("data"));
    }

    #[tokio::test]
    async fn streams_nobody_accepts_are_refused() {
        let (mut client, streams, _session) = start();
        drop(streams);
        client.syn_stream(1, 0, PORT_FORWARD_DATA).await;
        let reset = Frame::Control {
            kind: RST_STREAM,
            flags: 0,
            payload: two_words(1, REFUSED_STREAM),
        };
        assert_eq!(client.read().await, reset);
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_an_error() {
        let mut syn_garbage_zlib = two_words(1, 0);
        syn_garbage_zlib.extend_from_slice(&[0, 0, 0x12, 0x34, 0x56, 0x78]);
        let mut syn_version_2 = control(SYN_STREAM, 0, &[0; 10]);
        syn_version_2[1] = 2;
        let mut huge_syn = control(SYN_STREAM, 0, &[]);
        huge_syn[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        let mut truncated = control(SYN_STREAM, 0, &[0; 20]);
        truncated.truncate(13);
        type Case = (&'static str, Vec<u8>, fn(&SpdyError) -> bool);
        let cases: Vec<Case> = vec![
            ("version 2", syn_version_2, |e| {
                matches!(e, SpdyError::UnsupportedVersion(2))
            }),
            ("huge control frame", huge_syn, |e| {
                matches!(e, SpdyError::InvalidLength { .. })
            }),
            ("truncated frame", truncated, |e| {
                matches!(e, SpdyError::Truncated)
            }),
            ("truncated header", vec![0x80, 0x03], |e| {
                matches!(e, SpdyError::Truncated)
            }),
            ("bad zlib", control(SYN_STREAM, 0, &syn_garbage_zlib), |e| {
                matches!(e, SpdyError::Decompress(_))
            }),
            ("stream id 0", control(SYN_STREAM, 0, &[0; 10]), |e| {
                matches!(e, SpdyError::InvalidFrame(_))
            }),
            ("DATA on stream 0", data(0, 0, b"x"), |e| {
                matches!(e, SpdyError::InvalidFrame(_))
            }),
            ("short PING", control(PING, 0, &[0, 0, 1]), |e| {
                matches!(e, SpdyError::InvalidLength { .. })
            }),
            (
                "RST status 0",
                control(RST_STREAM, 0, &two_words(1, 0)),
                |e| matches!(e, SpdyError::InvalidFrame(_)),
            ),
            (
                "lying SETTINGS",
                control(SETTINGS, 0, &two_words(100, 0)),
                |e| matches!(e, SpdyError::InvalidLength { .. }),
            ),
        ];
        for (name, bytes, expected) in cases {
            let (mut client, _streams, session) = start();
            client.send(&bytes).await;
            drop(client);
            let err = session.await.unwrap().unwrap_err();
            assert!(expected(&err), "{name}: got {err:?}");
        }
    }

    #[tokio::test]
    async fn header_block_with_a_lying_count_is_rejected() {
        let (mut client, _streams, session) = start();
        let mut payload = two_words(1, 0);
        payload.extend_from_slice(&[0, 0]);
        let mut block = header_block(&[("port", "8080")]);
        block[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        client.deflate.encode(&block, &mut payload).unwrap();
        client.send(&control(SYN_STREAM, 0, &payload)).await;
        let err = session.await.unwrap().unwrap_err();
        assert!(matches!(err, SpdyError::MalformedHeaders), "{err:?}");
    }

    #[tokio::test]
    async fn zlib_bomb_is_bounded() {
        let (mut client, _streams, session) = start();
        let mut payload = two_words(1, 0);
        payload.extend_from_slice(&[0, 0]);
        client
            .deflate
            .encode(&vec![0; 4 * MAX_HEADER_BLOCK], &mut payload)
            .unwrap();
        client.send(&control(SYN_STREAM, 0, &payload)).await;
        let err = session.await.unwrap().unwrap_err();
        assert!(matches!(err, SpdyError::HeadersTooLarge), "{err:?}");
    }

    /// Two SYN_STREAMs as port-forward opens them (error stream 1, data stream 3), their
    /// header blocks from C zlib at level 9 with the SPDY dictionary and a sync flush after
    /// each: an encoder other than this module's, and the second block leans on the first.
    #[tokio::test]
    async fn decodes_syn_streams_compressed_elsewhere() {
        const ERROR_BLOCK: &str = "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60\
                                   61606100a4398b20d198094ade8c0600000000ffff";
        const DATA_BLOCK: &str = "c2aa19540e2512d60b000000ffff";
        let (mut client, mut streams, _session) = start();
        for (id, block) in [(1u32, ERROR_BLOCK), (3, DATA_BLOCK)] {
            let mut payload = two_words(id, 0);
            payload.extend_from_slice(&[0, 0]);
            payload.extend(hex::decode(block).unwrap());
            client.send(&control(SYN_STREAM, 0, &payload)).await;
            assert_eq!(client.syn_reply().await.0, id);
        }
        let error = streams.recv().await.unwrap();
        assert_eq!((error.id, error.header("streamtype")), (1, Some("error")));
        let data = streams.recv().await.unwrap();
        assert_eq!((data.id, data.header("streamtype")), (3, Some("data")));
        assert_eq!(
            (data.header("port"), data.header("requestid")),
            (Some("8080"), Some("0"))
        );
    }

    /// A SYN_STREAM written out byte by byte from the SPDY/3 draft and RFC 1950/1951, its
    /// header block in a stored (uncompressed) deflate block.
    #[tokio::test]
    async fn decodes_a_hand_built_syn_stream() {
        #[rustfmt::skip]
        let frame: &[u8] = &[
            0x80, 0x03, 0x00, 0x01,    // control bit, version 3, type SYN_STREAM
            0x00, 0x00, 0x00, 0x35,    // flags 0, length 53
            0x00, 0x00, 0x00, 0x01,    // stream id 1
            0x00, 0x00, 0x00, 0x00,    // associated-to stream id 0
            0x00, 0x00,                // priority 0, slot 0
            0x78, 0xf9,                // zlib: deflate, 32K window, FDICT, level 3 (Go's best)
            0xe3, 0xc6, 0xa7, 0xc2,    // DICTID: Adler-32 of the SPDY/3 dictionary
            0x00, 0x1b, 0x00, 0xe4, 0xff, // stored block, not final, LEN 27, NLEN
            0x00, 0x00, 0x00, 0x01,    // one header
            0x00, 0x00, 0x00, 0x0a, b's', b't', b'r', b'e', b'a', b'm', b't', b'y', b'p', b'e',
            0x00, 0x00, 0x00, 0x05, b'e', b'r', b'r', b'o', b'r',
            0x00, 0x00, 0x00, 0xff, 0xff, // the empty stored block a sync flush ends with
        ];
        let (mut client, mut streams, _session) = start();
        client.send(frame).await;
        assert_eq!(client.syn_reply().await.0, 1);
        let stream = streams.recv().await.unwrap();
        assert_eq!(
            stream.headers,
            vec![("streamtype".to_string(), "error".to_string())]
        );
    }

    #[test]
    fn nul_separated_values_become_pairs() {
        let headers = parse_header_block(&header_block(&[("x-multi", "a\0b")])).unwrap();
        let pair = |v: &str| ("x-multi".to_string(), v.to_string());
        assert_eq!(headers, vec![pair("a"), pair("b")]);
    }
}
