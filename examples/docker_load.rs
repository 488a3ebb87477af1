//! Load client for `scripts/bench-docker.sh`: keep-alive HTTP/1.1 over the
//! plugin's unix socket, one connection per client, a bounded number of
//! requests each.
//!
//! ```text
//! docker_load SOCKET CLIENTS REQUESTS ENDPOINT BODY [ENDPOINT BODY ...]
//! ```
//! Each client cycles through the (endpoint, body) pairs. Prints one JSON
//! line: requests, errors, p50/p99/max latency in microseconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn one(
    w: &mut UnixStream,
    r: &mut BufReader<UnixStream>,
    path: &str,
    body: &str,
) -> std::io::Result<bool> {
    // One write per request, as dockerd's buffered writer sends it: a
    // write per header piece would make the server wake and parse several
    // times for one request and measure the client instead.
    let rq = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(rq.as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let ok = line.split_whitespace().nth(1) == Some("200");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    // An error reply is `{"Err":...}`; scanning a whole List for it would
    // cost the client more than the server spends on the request.
    Ok(ok && !buf.starts_with(b"{\"Err\":"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 || (args.len() - 4) % 2 != 0 {
        eprintln!("usage: docker_load SOCKET CLIENTS REQUESTS ENDPOINT BODY [ENDPOINT BODY ...]");
        std::process::exit(2);
    }
    let sock = args[1].clone();
    let clients: usize = args[2].parse().expect("CLIENTS");
    let requests: usize = args[3].parse().expect("REQUESTS");
    let calls: Vec<(String, String)> = args[4..]
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let sock = sock.clone();
            let calls = calls.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(requests);
                let mut errors = 0usize;
                let Ok(s) = UnixStream::connect(&sock) else {
                    return (lat, requests);
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                for k in 0..requests {
                    let (p, b) = &calls[(i + k) % calls.len()];
                    let t = Instant::now();
                    match one(&mut w, &mut r, p, b) {
                        Ok(true) => lat.push(t.elapsed().as_micros() as u64),
                        Ok(false) => errors += 1,
                        Err(_) => return (lat, errors + requests - k),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("client");
        all.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1]
        }
    };
    println!(
        "{{\"requests\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"wall_ms\":{}}}",
        all.len() + errors,
        errors,
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or(0),
        wall.as_millis()
    );
}
