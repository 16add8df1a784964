//! What one durable spool write costs on this disk, without the relay: the
//! writer's pattern (groups of 8.7 KB items, one `pwrite` and one
//! `fdatasync` per group) into a 64 MiB file, either grown (a new file each
//! time it fills) or written over (a file whose blocks exist, as the spool
//! reuses drained segments). Prints the CPU per item and the flush latency
//! percentiles, the floor under `ack = "spool"`'s answer time.
//!
//! `cargo run --release --example disk_flush -- DIR [GROUP] [GROUPS] [PAUSE_US]`
//! (defaults: 8 items a group, 5000 groups, no pause between groups).
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const ITEM: usize = 8700;
const SEGMENT: u64 = 64 << 20;

/// CPU this process has used (user + system), in seconds.
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat fields")
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn run(dir: &std::path::Path, over: bool, group: usize, groups: usize, pause: Duration) {
    let path = dir.join("disk_flush.seg");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create the test file");
    if over {
        let mb = vec![1u8; 1 << 20];
        for i in 0..SEGMENT >> 20 {
            file.write_all_at(&mb, i << 20).expect("fill");
        }
        file.sync_all().expect("sync");
    }
    let buf = vec![b'x'; group * ITEM];
    let mut flushes = Vec::with_capacity(groups);
    let (start, cpu0) = (Instant::now(), cpu());
    let mut at = 0u64;
    for _ in 0..groups {
        if at + buf.len() as u64 > SEGMENT {
            at = 0;
            if !over {
                file.set_len(0).expect("truncate");
            }
        }
        file.write_all_at(&buf, at).expect("write");
        at += buf.len() as u64;
        let t = Instant::now();
        file.sync_data().expect("fdatasync");
        flushes.push(t.elapsed());
        std::thread::sleep(pause);
    }
    let (cpu, wall) = (cpu() - cpu0, start.elapsed());
    flushes.sort();
    let pct = |p: f64| flushes[((flushes.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "{:<10} group {group:>3}: {:>5.1} µs CPU per item, {:>6.0} µs wall per group; fdatasync p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        if over { "written over" } else { "grown" },
        cpu * 1e6 / (groups * group) as f64,
        wall.as_secs_f64() * 1e6 / groups as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: disk_flush DIR [GROUP] [GROUPS] [PAUSE_US]"),
    );
    let group = args
        .next()
        .map_or(8, |s| s.parse().expect("GROUP is a number"));
    let groups = args
        .next()
        .map_or(5000, |s| s.parse().expect("GROUPS is a number"));
    let pause = Duration::from_micros(
        args.next()
            .map_or(0, |s| s.parse().expect("PAUSE_US is a number")),
    );
    run(&dir, false, group, groups, pause);
    run(&dir, true, group, groups, pause);
}
