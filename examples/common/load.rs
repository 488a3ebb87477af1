//! What the load clients (`docker_load`, `http_load`) share: run one task
//! per client on a single-threaded runtime, gather every request's
//! latency (µs) and the errors, and print one JSON line of the figures.

use std::future::Future;
use std::time::Instant;

/// Run `clients` tasks made by `client(i)`, each answering its latencies
/// in µs and its error count, and print the totals, p50, p99, max and the
/// wall time as one JSON line.
pub fn run_and_report<F, Fut>(clients: usize, client: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Vec<u64>, usize)> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut all, errors, wall) = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(client(i))).collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("client");
            all.extend(l);
            errors += e;
        }
        (all, errors, start.elapsed())
    });
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
