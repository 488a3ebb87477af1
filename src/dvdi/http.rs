//! Just enough HTTP/1.1 to POST a JSON body to a Docker plugin over a unix
//! socket or TCP and read one reply: `Content-Length`, chunked, or
//! read-to-close bodies. One request per connection (`Connection: close`),
//! and every read and write is bounded by the request's deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Replies larger than this are refused: a plugin reply is a few lines of
/// JSON, and a runaway peer must not exhaust memory.
pub const MAX_BODY: usize = 16 << 20;
const MAX_LINE: usize = 64 << 10;
const MAX_HEADERS: usize = 200;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over plain TCP.
    Tcp(String),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix://{}", p.display()),
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made (worth retrying: the plugin may be
    /// starting).
    Connect(io::Error),
    /// The connection broke or the reply was not HTTP.
    Exchange(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Exchange(e) => write!(f, "request failed: {e}"),
        }
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

trait Timed: Read + Write {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
}
impl Timed for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}
impl Timed for TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// A stream whose every read and write gets only the time left until the
/// deadline, so a peer that trickles bytes cannot stretch the request.
struct Deadline<S: Timed> {
    inner: S,
    until: Instant,
}

impl<S: Timed> Deadline<S> {
    fn arm(&self) -> io::Result<()> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the plugin did not answer in time",
            ));
        }
        self.inner.set_timeouts(left)
    }
}

impl<S: Timed> Read for Deadline<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.read(buf)
    }
}
impl<S: Timed> Write for Deadline<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// POST `body` to `path` at `addr` with the plugin protocol's `Accept`
/// header; the whole exchange must finish within `timeout`.
pub fn post(addr: &Addr, path: &str, body: &[u8], timeout: Duration) -> Result<Response, Failure> {
    let until = Instant::now() + timeout;
    match addr {
        Addr::Unix(p) => {
            let s = UnixStream::connect(p).map_err(Failure::Connect)?;
            exchange(Deadline { inner: s, until }, "plugin", path, body)
        }
        Addr::Tcp(a) => {
            let s = connect_tcp(a, until).map_err(Failure::Connect)?;
            exchange(Deadline { inner: s, until }, a, path, body)
        }
    }
}

fn connect_tcp(addr: &str, until: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{addr} resolves to nothing"),
    );
    for sa in addr.to_socket_addrs()? {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&sa, left.min(Duration::from_secs(10))) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn exchange<S: Timed>(
    mut s: Deadline<S>,
    host: &str,
    path: &str,
    body: &[u8],
) -> Result<Response, Failure> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dvdcli\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).map_err(Failure::Exchange)?;
    s.flush().map_err(Failure::Exchange)?;
    read_response(&mut BufReader::new(s)).map_err(Failure::Exchange)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(if buf.is_empty() {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the plugin closed the connection without a reply",
            )
        } else {
            bad("a reply line is cut short or too long")
        });
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad("a reply header is not UTF-8"))
}

/// Read one HTTP/1.x response (skipping `1xx` interim replies).
pub fn read_response<R: BufRead>(r: &mut R) -> io::Result<Response> {
    loop {
        let status_line = read_line(r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!(
                "not an HTTP reply: {}",
                crate::input::quote(&status_line)
            )));
        }
        let status: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| bad(format!("bad status code {}", crate::input::quote(code))))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut n = 0;
        loop {
            let line = read_line(r)?;
            if line.is_empty() {
                break;
            }
            n += 1;
            if n > MAX_HEADERS {
                return Err(bad("too many reply headers"));
            }
            let Some((k, v)) = line.split_once(':') else {
                return Err(bad(format!(
                    "bad reply header {}",
                    crate::input::quote(&line)
                )));
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                let l: usize = v.parse().map_err(|_| bad("bad Content-Length"))?;
                if l > MAX_BODY {
                    return Err(bad(format!("reply of {l} bytes is too large")));
                }
                length = Some(l);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "chunked");
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(r)?
        } else if let Some(l) = length {
            let mut b = vec![0; l];
            r.read_exact(&mut b)?;
            b
        } else {
            let mut b = Vec::new();
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut b)?;
            if b.len() > MAX_BODY {
                return Err(bad("reply is too large"));
            }
            b
        };
        return Ok(Response { status, body });
    }
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size {}", crate::input::quote(size))))?;
        if size == 0 {
            // Trailers, then the blank line.
            while !read_line(r)?.is_empty() {}
            return Ok(out);
        }
        if out.len() + size > MAX_BODY {
            return Err(bad("reply is too large"));
        }
        let start = out.len();
        out.resize(start + size, 0);
        r.read_exact(&mut out[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(bad("a chunk is longer than its size"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &[u8]) -> io::Result<Response> {
        read_response(&mut io::Cursor::new(s.to_vec()))
    }

    #[test]
    fn content_length_chunked_and_close() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}\r\nextra").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}\r\n"[..]));
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5;x=y\r\n\":1}\n\r\n0\r\nT: 1\r\n\r\n").unwrap();
        assert_eq!(r.body, b"{\"a\":1}\n");
        let r = parse(b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n{\"Error\":\"x\"}\n").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (500, &b"{\"Error\":\"x\"}\n"[..])
        );
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 404);
    }

    #[test]
    fn broken_replies_are_errors() {
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b);
        }

        #[test]
        fn any_chunking_gives_the_body(body in proptest::collection::vec(any::<u8>(), 0..200), cut in 1usize..50) {
            let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in body.chunks(cut) {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            prop_assert_eq!(parse(&wire).unwrap().body, body);
        }
    }
}
