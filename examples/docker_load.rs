//! Load client for `scripts/bench-docker.sh`: keep-alive HTTP/1.1 over the
//! plugin's unix socket, one connection per client, a bounded number of
//! requests each, every client with one request in flight at all times.
//!
//! ```text
//! docker_load SOCKET CLIENTS REQUESTS ENDPOINT BODY [ENDPOINT BODY ...]
//! ```
//! Each client cycles through the (endpoint, body) pairs. Prints one JSON
//! line: requests, errors, p50/p99/max latency in microseconds.
//!
//! The clients are tasks on one thread, not a thread each: on a small
//! machine 200 client threads take the cores from the server they measure,
//! and a reply waits for its thread to be scheduled. One thread can only
//! read a reply late, never early, so latencies are not understated.

#[path = "common/load.rs"]
mod load;

use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// Longest wait for one reply before the client counts the rest as errors.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

async fn write_all(s: &UnixStream, mut b: &[u8]) -> std::io::Result<()> {
    while !b.is_empty() {
        s.writable().await?;
        match s.try_write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read one reply into `buf` (cleared first), using `scratch` for the
/// reads: whether it is a 200 without an `Err`.
async fn read_reply(
    s: &UnixStream,
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
) -> std::io::Result<bool> {
    buf.clear();
    let mut want: Option<(usize, usize, bool)> = None; // (body start, end, ok)
    loop {
        if let Some((start, end, ok)) = want {
            if buf.len() >= end {
                // An error reply is `{"Err":...}`; scanning a whole List for
                // it would cost more than the server spends on the request.
                return Ok(ok && !buf[start..end].starts_with(b"{\"Err\":"));
            }
        }
        s.readable().await?;
        match s.try_read(scratch) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if want.is_none() {
            if let Some(blank) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..blank]);
                let ok = head.split_whitespace().nth(1) == Some("200");
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                want = Some((blank + 4, blank + 4 + len, ok));
            }
        }
    }
}

/// One client: its latencies and its error count.
async fn client(sock: String, i: usize, requests: usize, calls: Vec<Vec<u8>>) -> (Vec<u64>, usize) {
    let mut lat = Vec::with_capacity(requests);
    let mut errors = 0usize;
    let Ok(s) = UnixStream::connect(&sock).await else {
        return (lat, requests);
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut scratch = vec![0u8; 64 * 1024];
    for k in 0..requests {
        let rq = &calls[(i + k) % calls.len()];
        let t = Instant::now();
        let one = async {
            // One write per request, as dockerd's buffered writer sends it.
            write_all(&s, rq).await?;
            read_reply(&s, &mut buf, &mut scratch).await
        };
        match tokio::time::timeout(REPLY_TIMEOUT, one).await {
            Ok(Ok(true)) => lat.push(t.elapsed().as_micros() as u64),
            Ok(Ok(false)) => errors += 1,
            Ok(Err(_)) | Err(_) => return (lat, errors + requests - k),
        }
    }
    (lat, errors)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 || !(args.len() - 4).is_multiple_of(2) {
        eprintln!("usage: docker_load SOCKET CLIENTS REQUESTS ENDPOINT BODY [ENDPOINT BODY ...]");
        std::process::exit(2);
    }
    let sock = args[1].clone();
    let clients: usize = args[2].parse().expect("CLIENTS");
    let requests: usize = args[3].parse().expect("REQUESTS");
    let calls: Vec<Vec<u8>> = args[4..]
        .chunks(2)
        .map(|c| {
            format!(
                "POST {} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{}",
                c[0],
                c[1].len(),
                c[1]
            )
            .into_bytes()
        })
        .collect();
    load::run_and_report(clients, |i| {
        client(sock.clone(), i, requests, calls.clone())
    });
}
