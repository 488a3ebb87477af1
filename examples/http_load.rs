//! Load client for `scripts/bench-multihost.sh`: GET requests to the
//! libStorage API over keep-alive HTTP/1.1 (hyper's client), one
//! connection per client, a bounded number of requests each, every
//! client with one request in flight at all times.
//!
//! ```text
//! http_load ADDRESS CLIENTS REQUESTS PATH [PATH ...]
//! ```
//! ADDRESS is `unix:///path.sock` or `tcp://host:port`. Each client
//! cycles through the paths. A reply other than 2xx, a failed connection
//! and a reply later than 60 s count as errors. Prints one JSON line:
//! requests, errors, p50/p99/max latency in microseconds, wall time.
//!
//! The clients are tasks on one thread, as in `docker_load`: 200 client
//! threads would take the cores from the server they measure. One thread
//! can only read a reply late, never early, so latencies are not
//! understated.

#[path = "common/load.rs"]
mod load;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

/// Longest wait for one reply before the client counts the rest as errors.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Address {
    Unix(String),
    Tcp(String),
}

impl Address {
    fn parse(s: &str) -> Option<Address> {
        if let Some(p) = s.strip_prefix("unix://") {
            Some(Address::Unix(p.to_string()))
        } else {
            s.strip_prefix("tcp://")
                .or_else(|| s.strip_prefix("http://"))
                .map(|a| Address::Tcp(a.to_string()))
        }
    }
}

/// One keep-alive connection, its driver spawned on the runtime.
async fn connect(addr: &Address) -> Result<SendRequest<Empty<Bytes>>, Box<dyn std::error::Error>> {
    macro_rules! handshake {
        ($stream:expr) => {{
            let (tx, conn) = http1::handshake(TokioIo::new($stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            tx
        }};
    }
    Ok(match addr {
        Address::Unix(p) => handshake!(tokio::net::UnixStream::connect(p).await?),
        Address::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            handshake!(s)
        }
    })
}

/// One request: whether it was answered 2xx (the body read in full).
async fn one(tx: &mut SendRequest<Empty<Bytes>>, path: &str) -> Result<bool, hyper::Error> {
    tx.ready().await?;
    let rq = Request::get(path)
        .header(hyper::header::HOST, "libstorage")
        .body(Empty::new())
        .expect("a valid request");
    let reply = tx.send_request(rq).await?;
    let ok = reply.status().is_success();
    reply.into_body().collect().await?;
    Ok(ok)
}

/// One client: its latencies and its error count.
async fn client(addr: Address, i: usize, requests: usize, paths: Vec<String>) -> (Vec<u64>, usize) {
    let mut lat = Vec::with_capacity(requests);
    let mut errors = 0usize;
    let Ok(mut tx) = connect(&addr).await else {
        return (lat, requests);
    };
    for k in 0..requests {
        let path = &paths[(i + k) % paths.len()];
        let t = Instant::now();
        match tokio::time::timeout(REPLY_TIMEOUT, one(&mut tx, path)).await {
            Ok(Ok(true)) => lat.push(t.elapsed().as_micros() as u64),
            Ok(Ok(false)) => errors += 1,
            Ok(Err(_)) | Err(_) => return (lat, errors + requests - k),
        }
    }
    (lat, errors)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!(
            "usage: http_load unix:///SOCKET|tcp://HOST:PORT CLIENTS REQUESTS PATH [PATH ...]"
        );
        std::process::exit(2);
    };
    if args.len() < 5 {
        usage();
    }
    let addr = Address::parse(&args[1]).unwrap_or_else(|| usage());
    let clients: usize = args[2].parse().unwrap_or_else(|_| usage());
    let requests: usize = args[3].parse().unwrap_or_else(|_| usage());
    let paths: Vec<String> = args[4..].to_vec();
    load::run_and_report(clients, |i| {
        client(addr.clone(), i, requests, paths.clone())
    });
}
