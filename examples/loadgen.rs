//! A constant-rate load generator for `benches/load.sh`'s latency table:
//! posts one body at a fixed request rate over a fixed number of
//! connections and prints the latency percentiles.
//!
//! `wrk` sends as fast as it can; to compare p99 latency "at the same
//! request rate", both servers must be offered the same rate. Each request
//! has a scheduled start (`i / rate` after the beginning), and its latency is
//! counted from that schedule rather than from when it was actually sent, so
//! a server that falls behind is charged for the wait it caused (the
//! correction `wrk2` makes for coordinated omission).
//!
//! With `--warmup SECS`, the load runs that much longer first, at the same
//! rate, and the percentiles leave those requests out: they measure the
//! server warm (its connections open, its caches filled), as a server that
//! has been running a while is. The warm-up's own p99 and failures are
//! printed apart, as `warmup_p99` and `warmup_errors`, so that a slow or
//! failing start is seen rather than hidden, and does not count as the
//! measured part's errors.
//!
//! ```text
//! cargo run --release --example loadgen -- [--warmup SECS] URL BODY_FILE RATE CONNECTIONS SECONDS [HEADER: VALUE]...
//! ```
//!
//! Prints one line: `rate=<achieved> p50=<ms> p90=<ms> p99=<ms> p999=<ms> max=<ms> errors=<non-2xx or failed>`,
//! and with a warm-up ` warmup_p99=<ms> warmup_errors=<count>` after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let warmup: f64 = if args.first().is_some_and(|a| a == "--warmup") && args.len() > 1 {
        let secs = args[1].parse().expect("--warmup takes seconds");
        args.drain(..2);
        secs
    } else {
        0.0
    };
    if args.len() < 5 {
        eprintln!(
            "usage: loadgen [--warmup SECS] URL BODY_FILE RATE CONNECTIONS SECONDS [HEADER: VALUE]..."
        );
        std::process::exit(64);
    }
    let url = args[0].clone();
    let body = bytes::Bytes::from(std::fs::read(&args[1]).expect("the body file"));
    let rate: f64 = args[2].parse().expect("RATE is a number");
    let connections: usize = args[3].parse().expect("CONNECTIONS is a number");
    let seconds: f64 = args[4].parse().expect("SECONDS is a number");
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args[5..] {
        let (name, value) = h.split_once(':').expect("headers are NAME: VALUE");
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            value.trim().parse().expect("header value"),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(connections)
            .default_headers(headers)
            .build()
            .expect("a client");
        // Requests numbered below `first` are the warm-up's.
        let first = (rate * warmup) as u64;
        let total = first + (rate * seconds) as u64;
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now() + Duration::from_millis(100);
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (client, next, url, body) =
                    (client.clone(), next.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let (mut latencies, mut warming) = (Vec::new(), Vec::new());
                    let (mut errors, mut warm_errors) = (0u64, 0u64);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return (latencies, warming, errors, warm_errors);
                        }
                        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(scheduled.into()).await;
                        let ok = client
                            .post(&url)
                            .body(body.clone())
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if i < first {
                            warming.push(scheduled.elapsed());
                            warm_errors += u64::from(!ok);
                        } else {
                            latencies.push(scheduled.elapsed());
                            errors += u64::from(!ok);
                        }
                    }
                })
            })
            .collect();
        let (mut all, mut warm) = (Vec::new(), Vec::new());
        let (mut errors, mut warm_errors) = (0, 0);
        for worker in workers {
            let (measured, warming, e, w) = worker.await.expect("a worker does not panic");
            all.extend(measured);
            warm.extend(warming);
            errors += e;
            warm_errors += w;
        }
        let elapsed = start.elapsed().as_secs_f64() - warmup;
        all.sort();
        warm.sort();
        let pct = |sorted: &[Duration], p: f64| {
            let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i].as_secs_f64() * 1000.0
        };
        print!(
            "rate={:.0} p50={:.2} p90={:.2} p99={:.2} p999={:.2} max={:.2} errors={}",
            all.len() as f64 / elapsed,
            pct(&all, 0.50),
            pct(&all, 0.90),
            pct(&all, 0.99),
            pct(&all, 0.999),
            pct(&all, 1.0),
            errors
        );
        if !warm.is_empty() {
            print!(
                " warmup_p99={:.2} warmup_errors={warm_errors}",
                pct(&warm, 0.99)
            );
        }
        println!();
    });
}
