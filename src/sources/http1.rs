//! A small HTTP/1.1 client for metrics pages, and the pool of idle connections it reuses.
//!
//! Why not hyper's client: a kept hyper connection keeps its read buffer between requests (8 KiB at
//! the smallest, ~90 KB after a vLLM page), which at 10,000 pods is 100–900 MiB held to save a TCP
//! handshake. Here an idle connection is the socket alone; each exchange reads into one buffer that
//! becomes the page and leaves with it. One `GET`, then a response whose body is `Content-Length`,
//! `chunked` or delimited by the close, read up to a size limit. No redirects, no compression, no
//! pipelining.
//!
//! The parsing is plain functions over bytes ([`parse_head`], [`Chunked`]); I/O is one async function
//! ([`exchange`]) over any stream, so TLS pods use it too.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most response-head bytes read before giving up (Go's and hyper's defaults are larger; a metrics
/// endpoint's head is a few hundred bytes).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// The buffer each exchange starts with: most of a vLLM page arrives in the first read.
const FIRST_READ: usize = 64 * 1024;
/// The least free space offered to each read after the first.
const READ_STEP: usize = 16 * 1024;

#[derive(Debug, Error)]
pub(crate) enum Http1Error {
    /// The request could not be written, or the peer closed or reset the connection before the first
    /// byte of a response. On a reused connection this is the server having closed it while idle, and
    /// the request is safe to send again on a new one.
    #[error("connection closed before a response: {0}")]
    NoResponse(String),
    #[error("reading the response: {0}")]
    Io(#[source] std::io::Error),
    #[error("connection closed after {got} of {expected} body bytes")]
    ShortBody { got: usize, expected: usize },
    #[error("connection closed in the middle of a chunked body")]
    ShortChunked,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("{0} informational (1xx) responses before the answer; at most {MAX_INFORMATIONAL} are accepted")]
    Informational(usize),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the page is compressed (Content-Encoding: {0}) although none was asked for")]
    Encoded(String),
    #[error("request target {0:?} is not a path of visible ASCII characters")]
    BadPath(String),
    #[error("the bearer token holds characters a header cannot carry")]
    BadToken,
}

/// The request bytes for one `GET`. `host` is what the server sees in `Host`.
pub(crate) fn request(path: &str, host: &str, bearer: Option<&str>) -> Result<Vec<u8>, Http1Error> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Http1Error::BadPath(path.to_string()));
    }
    let mut out = Vec::with_capacity(160 + path.len() + bearer.map_or(0, str::len));
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        b"\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: wva-metrics-server/",
    );
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(token) = bearer {
        if !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(Http1Error::BadToken);
        }
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(usize),
    Chunked,
    /// No length: the body is everything until the server closes.
    Close,
}

/// What the head of a response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The server lets the connection be used again (HTTP/1.1 without `Connection: close`).
    pub keep_alive: bool,
}

/// Parses the head at the start of `buf`: `Ok(None)` when more bytes are needed.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, Http1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Http1Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Http1Error::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Http1Error::Malformed(format!("header {} is not text", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| Http1Error::Malformed(format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Http1Error::Malformed(
                    "two different Content-Lengths".into(),
                ));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked`, last: anything else is a coding this client does not undo.
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || value.contains(',') {
                return Err(Http1Error::Malformed(format!(
                    "Transfer-Encoding {value:?} (only chunked is read)"
                )));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(Http1Error::Encoded(value.to_string()));
        }
    }
    let framing = if chunked {
        // RFC 9112 §6.3: chunked wins over a length, and such a message must not be reused.
        if length.is_some() {
            keep_alive = false;
        }
        Framing::Chunked
    } else if matches!(status, 204 | 304) || (100..200).contains(&status) {
        Framing::Length(0)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
    }))
}

/// A chunked body decoder that copies data out as it arrives, so a page is held once.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// What one decoding step made of the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Consumed this many bytes; more input is needed.
    More(usize),
    /// The body ended after this many bytes.
    Done(usize),
    /// `out` reached `max`: the body was cut after this many bytes.
    Cut(usize),
}

impl Chunked {
    /// Decodes what it can of `input` into `out` (never beyond `max` bytes in all).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<Decoded, Http1Error> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() > 1024 => {
                        return Err(Http1Error::Malformed("chunk size line too long".into()))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More(pos)),
                    Err(_) => return Err(Http1Error::Malformed("bad chunk size".into())),
                },
                ChunkState::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    if out.len() + take > max {
                        let room = max - out.len();
                        out.extend_from_slice(&rest[..room]);
                        return Ok(Decoded::Cut(pos + room));
                    }
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = ChunkState::Data(left);
                        return Ok(Decoded::More(pos));
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(Decoded::More(pos));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(Http1Error::Malformed("chunk not followed by CRLF".into()));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    // Trailer fields are skipped line by line until the blank line.
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > MAX_HEAD_BYTES {
                            return Err(Http1Error::HeadTooLarge);
                        }
                        return Ok(Decoded::More(pos));
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done(pos)),
            }
        }
    }
}

/// A page as read: the body (at most `max` bytes), whether it was cut, and whether the connection may
/// carry the next request.
#[derive(Debug)]
pub(crate) struct Response {
    pub body: Vec<u8>,
    pub truncated: bool,
    pub reusable: bool,
}

/// Makes sure `buf` has at least `want` bytes of free space.
fn room(buf: &mut Vec<u8>, want: usize) {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

/// Informational (1xx) responses accepted before the final one, as Go's client (it gives up after 5).
pub(crate) const MAX_INFORMATIONAL: usize = 5;

/// Whether a head ends (a blank line) in `buf` at or after `from` (less the 3 bytes a terminator split
/// across reads can start in).
fn head_ends(buf: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(3);
    memchr::memmem::find(&buf[from..], b"\n\r\n").is_some()
        || memchr::memmem::find(&buf[from..], b"\n\n").is_some()
}

/// Reads up to the end of the final (non-1xx) response head: the head, the buffer holding it and
/// whatever of the body came with it, and the bytes of informational heads before it, which count
/// against the page limit `max`. Linear in what arrives: a head trickling in is searched for its end
/// once, and parsed only when it has one; at most [`MAX_INFORMATIONAL`] 1xx heads are skipped.
async fn read_head<IO>(io: &mut IO, max: usize) -> Result<(Head, Vec<u8>, usize), Http1Error>
where
    IO: AsyncRead + Unpin,
{
    let no_response = |e: std::io::Error| Http1Error::NoResponse(e.to_string());
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ);
    // Where the current head starts, and how far past it the search for its end has looked.
    let mut start = 0;
    let mut searched = 0;
    let mut informational = 0;
    loop {
        room(&mut buf, READ_STEP);
        let n = io.read_buf(&mut buf).await.map_err(|e| {
            if buf.is_empty() {
                no_response(e)
            } else {
                Http1Error::Io(e)
            }
        })?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Http1Error::NoResponse("end of stream".into())
            } else {
                Http1Error::Malformed("connection closed inside the response head".into())
            });
        }
        while head_ends(&buf[start..], searched) {
            let Some(head) = parse_head(&buf[start..])? else {
                // A blank line inside what httparse still reads as the head: read on.
                break;
            };
            if !(100..200).contains(&head.status) {
                buf.drain(..start);
                return Ok((head, buf, start));
            }
            // An informational response (103 Early Hints, say) precedes the real one.
            informational += 1;
            start += head.len;
            searched = 0;
            if informational > MAX_INFORMATIONAL {
                return Err(Http1Error::Informational(informational));
            }
            if start > max {
                return Err(Http1Error::HeadTooLarge);
            }
        }
        searched = buf.len() - start;
        if searched > MAX_HEAD_BYTES {
            return Err(Http1Error::HeadTooLarge);
        }
    }
}

/// Sends `request` and reads the response, reading at most `max` body bytes. A non-2xx status is an
/// error (redirects are not followed). The connection is reusable only when the whole body was read
/// and nothing more arrived.
pub(crate) async fn exchange<IO>(
    io: &mut IO,
    request: &[u8],
    max: usize,
) -> Result<Response, Http1Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(request)
        .await
        .map_err(|e| Http1Error::NoResponse(e.to_string()))?;
    io.flush()
        .await
        .map_err(|e| Http1Error::NoResponse(e.to_string()))?;
    let (head, mut buf, informational) = read_head(io, max).await?;
    if !(200..300).contains(&head.status) {
        return Err(Http1Error::Status(head.status));
    }
    // Informational heads took part of the page limit.
    let max = max.saturating_sub(informational);
    // The body is read into the same buffer, after the head is dropped from its front.
    buf.drain(..head.len);
    match head.framing {
        Framing::Length(expected) => {
            let want = expected.min(max);
            if buf.capacity() < want {
                buf.reserve_exact(want - buf.len());
            }
            while buf.len() < want {
                let missing = want - buf.len();
                room(&mut buf, READ_STEP.min(missing));
                if io.read_buf(&mut buf).await.map_err(Http1Error::Io)? == 0 {
                    return Err(Http1Error::ShortBody {
                        got: buf.len(),
                        expected,
                    });
                }
            }
            let extra = buf.len() > expected;
            buf.truncate(want);
            let truncated = expected > max;
            Ok(Response {
                body: buf,
                truncated,
                reusable: head.keep_alive && !truncated && !extra,
            })
        }
        Framing::Close => {
            while buf.len() < max {
                room(&mut buf, READ_STEP);
                if io.read_buf(&mut buf).await.map_err(Http1Error::Io)? == 0 {
                    return Ok(Response {
                        body: buf,
                        truncated: false,
                        reusable: false,
                    });
                }
            }
            buf.truncate(max);
            Ok(Response {
                body: buf,
                truncated: true,
                reusable: false,
            })
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            let mut body = Vec::with_capacity(FIRST_READ.min(max));
            loop {
                match decoder.decode(&buf, &mut body, max)? {
                    Decoded::Done(n) => {
                        return Ok(Response {
                            body,
                            truncated: false,
                            reusable: head.keep_alive && n == buf.len(),
                        })
                    }
                    Decoded::Cut(_) => {
                        return Ok(Response {
                            body,
                            truncated: true,
                            reusable: false,
                        })
                    }
                    Decoded::More(n) => {
                        buf.drain(..n);
                        room(&mut buf, READ_STEP);
                        if io.read_buf(&mut buf).await.map_err(Http1Error::Io)? == 0 {
                            return Err(Http1Error::ShortChunked);
                        }
                    }
                }
            }
        }
    }
}

/// Idle plain-HTTP connections, one per pod address, kept between scrapes. What is held is the socket
/// alone: a few hundred bytes of process memory, and about 4 KiB of kernel memory that the container's
/// memory cgroup counts (BENCHMARKS.md). TLS connections are not kept: an idle rustls connection holds
/// about 20 KiB of buffers, 278 MiB at 10,000 pods in `benches/fleet.rs`.
/// A pooled connection is taken out for its exchange and put back only when the exchange left it
/// clean, so no two scrapes share one.
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, TcpStream>>,
    capacity: usize,
}

impl Pool {
    /// A pool of at most `capacity` idle connections (beyond that, connections close after use).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, TcpStream>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The idle connection to `addr`, unless the server has closed it (or sent something unasked)
    /// since: that is seen without a system call, from the readiness the runtime already recorded.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let tcp = self.idle().remove(&addr)?;
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(tcp),
            _ => None,
        }
    }

    pub(crate) fn put(&self, addr: SocketAddr, tcp: TcpStream) {
        let mut idle = self.idle();
        if idle.len() < self.capacity {
            idle.insert(addr, tcp);
        }
    }

    /// Closes the idle connections to addresses not in `keep` (pods that went away).
    pub(crate) fn retain(&self, keep: &HashSet<SocketAddr>) {
        self.idle().retain(|addr, _| keep.contains(addr));
    }

    pub(crate) fn len(&self) -> usize {
        self.idle().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// How many idle connections fit under the process's open-files limit, leaving room for `busy`
/// connections in flight and `reserved` descriptors for everything else (both ports' connections,
/// watches, files).
pub(crate) fn capacity_for(open_files_limit: u64, busy: usize, reserved: usize) -> usize {
    let reserve = reserved as u64 + 2 * busy as u64;
    usize::try_from(open_files_limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// The process's soft limit on open files (Linux, `/proc/self/limits`); 1,024 when it cannot be read.
pub(crate) fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| soft_open_files(&t))
        .unwrap_or(1024)
}

/// The soft limit from the text of `/proc/<pid>/limits`.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(3)? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn head(text: &str) -> Result<Option<Head>, Http1Error> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn heads() {
        let cases: &[(&str, u16, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                200,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n",
                200,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                200,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                200,
                Framing::Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", 200, Framing::Close, false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                200,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, Close\r\n\r\n",
                200,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                200,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                204,
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                103,
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n",
                404,
                Framing::Length(9),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 1\r\n\r\n",
                200,
                Framing::Length(1),
                true,
            ),
        ];
        for (text, status, framing, keep_alive) in cases {
            let h = head(text).unwrap().unwrap();
            assert_eq!(
                (h.len, h.status, h.framing, h.keep_alive),
                (text.len(), *status, *framing, *keep_alive),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_heads() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Len").unwrap().is_none());
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 two hundred\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(Http1Error::Malformed(_))),
                "{text:?}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"),
            Err(Http1Error::Encoded(e)) if e == "gzip"
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(matches!(head(&huge), Err(Http1Error::HeadTooLarge)));
    }

    #[test]
    fn requests() {
        let r = request("/metrics", "10.0.0.1:8000", Some("t0k.en")).unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with(
            "GET /metrics HTTP/1.1\r\nHost: 10.0.0.1:8000\r\nAccept: text/plain;version=0.0.4\r\n"
        ));
        assert!(text.ends_with("Authorization: Bearer t0k.en\r\n\r\n"));
        for path in ["metrics", "/a b", "/a\r\nX: y", "/é"] {
            assert!(
                matches!(request(path, "h", None), Err(Http1Error::BadPath(_))),
                "{path:?}"
            );
        }
        assert!(matches!(
            request("/m", "h", Some("a\r\nb")),
            Err(Http1Error::BadToken)
        ));
    }

    /// Encodes `body` in chunks of the given sizes (cycled), with a trailer.
    fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].max(1).min(rest.len());
            out.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        out
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes, as reads would.
    fn decode_in_steps(wire: &[u8], step: usize, max: usize) -> (Vec<u8>, Decoded) {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let end = (fed + step).min(wire.len());
            pending.extend_from_slice(&wire[fed..end]);
            fed = end;
            match d.decode(&pending, &mut out, max).unwrap() {
                Decoded::More(n) if fed < wire.len() => {
                    pending.drain(..n);
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn chunked_errors() {
        let mut out = Vec::new();
        assert!(Chunked::default().decode(b"zz\r\n", &mut out, 10).is_err());
        assert!(Chunked::default()
            .decode(b"2\r\nabX\r\n", &mut out, 10)
            .is_err());
        let long = format!("1{}", "0".repeat(1100));
        assert!(Chunked::default()
            .decode(long.as_bytes(), &mut out, 10)
            .is_err());
    }

    proptest! {
        /// Whatever the chunk sizes and read sizes, the decoded body is the body, and the decoder
        /// stops exactly at the end of the message.
        #[test]
        fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..3000),
                              sizes in proptest::collection::vec(1usize..700, 1..5),
                              step in 1usize..200) {
            let wire = chunk(&body, &sizes);
            let (out, end) = decode_in_steps(&wire, step, usize::MAX);
            prop_assert_eq!(&out, &body);
            prop_assert!(matches!(end, Decoded::Done(_)));
        }

        /// A limit below the body cuts it at exactly the limit.
        #[test]
        fn chunked_cut(body in proptest::collection::vec(any::<u8>(), 10..2000), max in 0usize..10) {
            let wire = chunk(&body, &[7]);
            let (out, end) = decode_in_steps(&wire, 64, max);
            prop_assert_eq!(&out[..], &body[..max]);
            prop_assert!(matches!(end, Decoded::Cut(_)));
        }
    }

    /// Runs one exchange against a peer that answers `wire` (then closes when `close`).
    async fn against(
        wire: &[u8],
        max: usize,
        close: bool,
    ) -> (Result<Response, Http1Error>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let wire = wire.to_vec();
        let peer = tokio::spawn(async move {
            let mut seen = vec![0u8; 4096];
            let n = theirs.read(&mut seen).await.unwrap();
            seen.truncate(n);
            theirs.write_all(&wire).await.unwrap();
            if !close {
                // Hold the stream open until the exchange is over.
                let _ = theirs.read(&mut [0u8; 1]).await;
            }
            seen
        });
        let result = exchange(&mut ours, b"GET / HTTP/1.1\r\n\r\n", max).await;
        drop(ours);
        (result, peer.await.unwrap())
    }

    /// Issue 21 item 7: endless `100 Continue` heads end the exchange after the sixth instead of holding
    /// a core until the timeout; five are still followed; their bytes count against the page limit; and
    /// a head that arrives one byte at a time is read whole.
    #[tokio::test]
    async fn informational_heads_are_bounded() {
        let page = "vllm:num_requests_waiting 1\n";
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
            page.len()
        );
        let cont = "HTTP/1.1 100 Continue\r\n\r\n";
        let endless = cont.repeat(10_000);
        let (r, _) = against(endless.as_bytes(), 1 << 20, false).await;
        assert!(matches!(r, Err(Http1Error::Informational(6))), "{r:?}");
        let five = format!("{}{ok}", cont.repeat(5));
        let r = against(five.as_bytes(), 1024, false).await.0.unwrap();
        assert_eq!(r.body, page.as_bytes());
        // 125 bytes of 1xx heads leave 1024 - 125 for the body.
        let r = against(five.as_bytes(), 125 + 10, false).await.0.unwrap();
        assert_eq!(
            (r.body.as_slice(), r.truncated),
            (&page.as_bytes()[..10], true)
        );

        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let wire = ok.clone().into_bytes();
        let peer = tokio::spawn(async move {
            let _ = theirs.read(&mut [0u8; 64]).await;
            for b in wire {
                theirs.write_all(&[b]).await.unwrap();
            }
            let _ = theirs.read(&mut [0u8; 1]).await;
        });
        let r = exchange(&mut ours, b"GET / HTTP/1.1\r\n\r\n", 1024)
            .await
            .unwrap();
        assert_eq!(r.body, page.as_bytes());
        drop(ours);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn exchanges() {
        let page = "vllm:num_requests_waiting 1\n";
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
            page.len()
        );
        let (r, seen) = against(ok.as_bytes(), 1024, false).await;
        let r = r.unwrap();
        assert_eq!(
            (r.body.as_slice(), r.truncated, r.reusable),
            (page.as_bytes(), false, true)
        );
        assert_eq!(seen, b"GET / HTTP/1.1\r\n\r\n");

        // Cut at the limit: the rest is unread, so the connection is not reused.
        let (r, _) = against(ok.as_bytes(), 5, false).await;
        let r = r.unwrap();
        assert_eq!(
            (r.body.as_slice(), r.truncated, r.reusable),
            (&page.as_bytes()[..5], true, false)
        );

        // More than announced arrived: not reusable, the body is what was announced.
        let (r, _) = against(format!("{ok}junk").as_bytes(), 1024, false).await;
        let r = r.unwrap();
        assert_eq!((r.body.as_slice(), r.reusable), (page.as_bytes(), false));

        // 103 then 200; chunked with a trailer; close-delimited.
        let hinted = format!("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n{ok}");
        assert_eq!(
            against(hinted.as_bytes(), 1024, false)
                .await
                .0
                .unwrap()
                .body,
            page.as_bytes()
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            String::from_utf8(chunk(page.as_bytes(), &[3, 10])).unwrap()
        );
        let r = against(chunked.as_bytes(), 1024, false).await.0.unwrap();
        assert_eq!((r.body.as_slice(), r.reusable), (page.as_bytes(), true));
        let r = against(
            format!("HTTP/1.1 200 OK\r\n\r\n{page}").as_bytes(),
            1024,
            true,
        )
        .await
        .0
        .unwrap();
        assert_eq!(
            (r.body.as_slice(), r.truncated, r.reusable),
            (page.as_bytes(), false, false)
        );
    }

    #[tokio::test]
    async fn exchange_failures() {
        type Expected = fn(&Http1Error) -> bool;
        let cases: Vec<(&[u8], Expected)> = vec![
            (b"", |e| matches!(e, Http1Error::NoResponse(_))),
            (b"HTTP/1.1 200 OK\r\nContent-Le", |e| {
                matches!(e, Http1Error::Malformed(_))
            }),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", |e| {
                matches!(
                    e,
                    Http1Error::ShortBody {
                        got: 3,
                        expected: 10
                    }
                )
            }),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                |e| matches!(e, Http1Error::ShortChunked),
            ),
            (
                b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n",
                |e| matches!(e, Http1Error::Status(503)),
            ),
            (
                b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
                |e| matches!(e, Http1Error::Status(301)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
                |e| matches!(e, Http1Error::Encoded(_)),
            ),
            (b"<html>hello</html>\r\n\r\n", |e| {
                matches!(e, Http1Error::Malformed(_))
            }),
        ];
        for (wire, expected) in cases {
            let (r, _) = against(wire, 1024, true).await;
            let e = r.unwrap_err();
            assert!(expected(&e), "{:?}: {e:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn open_files_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(text), Some(1024));
        assert_eq!(
            soft_open_files(&text.replace("1024 ", "unlimited ")),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files("Max cpu time 1 1 seconds"), None);
        assert!(open_files_limit() >= 16);
    }

    #[test]
    fn capacity_leaves_room() {
        assert_eq!(capacity_for(1024, 64, 512), 1024 - 512 - 128);
        assert_eq!(capacity_for(100, 64, 512), 0);
        assert_eq!(capacity_for(1_048_576, 64, 1600), 1_048_576 - 1600 - 128);
    }
}
