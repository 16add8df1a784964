//! Hostile clients against the `edge-relay` binary as a process of its own:
//! the bad-input matrix, decompression bombs one by one and at once, slowloris,
//! thousands of idle connections, and the process's resident memory throughout.
//!
//! The relay runs on its default limits (20 MiB on the wire, 50 MiB inflated,
//! 1000 items, 64 KiB header lines, depth 128, 1024 connections) with the file
//! sink, so no broker is needed. Only the read timeouts are shortened, so that
//! slow and idle clients are cut in seconds rather than tens of seconds:
//! `header_read_timeout = "1s"` and `body_read_timeout = "20s"`. The body
//! timeout leaves room for sixteen bombs' uploads on a busy 2-CPU machine
//! (large bodies inflate on one thread per core; the rest wait their turn).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::e2e_tansu::{start_relay, RelayProcess};
use crate::support::*;

/// What a slow client may take before the relay must have cut it. A bound on
/// waiting, not a timing assertion: the configured timeouts are 1s and 20s.
const CUT_OFF_BOUND: Duration = PATIENCE;

/// Idle connections opened at once: about three times `max_connections`.
const IDLE_CONNECTIONS: usize = 3000;

/// Decompression bombs sent at once.
const CONCURRENT_BOMBS: usize = 16;

/// What every bomb inflates to: 1 GiB, twenty times `max_inflated_size`.
const BOMB_INFLATED: usize = 1 << 30;

/// `limits.max_inflated_size` by default.
const MAX_INFLATED: u64 = 50 << 20;

/// `limits.max_body_size` by default.
const MAX_BODY: u64 = 20 << 20;

const DROPPED: &str = "edge_relay_items_dropped_total";
/// Connections closed before a request was read, by reason.
const REFUSED: &str = "edge_relay_connections_refused_total";

type Encoder = fn(&[u8]) -> Vec<u8>;

/// An envelope whose attachment is [`BOMB_INFLATED`] zero bytes, compressed
/// as `encoding` without ever holding the inflated body in memory.
fn bomb(encoding: &str) -> Vec<u8> {
    let head = format!(
        "{{}}\n{{\"type\":\"attachment\",\"length\":{BOMB_INFLATED},\"filename\":\"zeros.bin\"}}\n"
    );
    let zeros = vec![0u8; 1 << 20];
    let feed = |w: &mut dyn Write| {
        w.write_all(head.as_bytes()).unwrap();
        for _ in 0..BOMB_INFLATED / zeros.len() {
            w.write_all(&zeros).unwrap();
        }
        w.write_all(b"\n").unwrap();
    };
    let out = match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            feed(&mut e);
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 1 << 16, 5, 22);
                feed(&mut w);
            }
            out
        }
        "zstd" => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            feed(&mut e);
            e.finish().unwrap()
        }
        other => panic!("no bomb for {other}"),
    };
    assert!(
        (out.len() as u64) < MAX_BODY,
        "a {encoding} bomb must fit under max_body_size to reach the decoder: {} bytes",
        out.len()
    );
    out
}

/// `data` with the `len` bytes from `at` flipped.
fn corrupt(mut data: Vec<u8>, at: usize, len: usize) -> Vec<u8> {
    for b in &mut data[at..at + len] {
        *b ^= 0xa5;
    }
    data
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape of `/metrics`.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_owned(), parse_labels(rest))
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        assert!(!samples.is_empty(), "an empty scrape: {text}");
        Metrics(samples)
    }

    /// The sample with exactly these labels; 0 if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map_or(0.0, |s| s.value)
    }

    /// Every sample of `name`, whatever its labels.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// `a="x",b="y\"z"` into a map.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "a label value is quoted: {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("a dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The relay under test, with a client that opens a connection per request
/// (a pooled one could be cut by the 1s header timeout just as it is reused).
struct Target {
    relay: RelayProcess,
    client: reqwest::Client,
    sink: std::path::PathBuf,
}

impl Target {
    fn pid(&self) -> u32 {
        self.relay.process.0.id()
    }

    fn url(&self, project: u64) -> String {
        format!("http://{}/api/{project}/envelope/", self.relay.sdk)
    }

    async fn scrape(&self) -> Metrics {
        let r = self
            .client
            .get(format!("http://{}/metrics", self.relay.admin))
            .send()
            .await
            .expect("the admin listener answers");
        assert_eq!(r.status(), 200);
        Metrics::parse(&r.text().await.unwrap())
    }

    /// Posts an envelope; the status and the body.
    async fn post(
        &self,
        project: u64,
        encoding: Option<&str>,
        key: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .post(self.url(project))
            .header("content-type", "application/x-sentry-envelope")
            .body(body);
        if let Some(encoding) = encoding {
            req = req.header("content-encoding", encoding);
        }
        if let Some(key) = key {
            req = req.header("x-sentry-auth", auth_header(key));
        }
        let r = tokio::time::timeout(PATIENCE, req.send())
            .await
            .expect("the relay answers within PATIENCE")
            .expect("the relay answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// A good envelope gets its 200 and both its items land in the sink.
    async fn good(&self, after: &str) {
        let id = new_event_id();
        let (status, body) = self
            .post(
                PROJECT,
                Some("gzip"),
                Some(KEY),
                gzip(&envelope_with_attachment(&id, b"still here")),
            )
            .await;
        assert_eq!(status, 200, "a good envelope after {after}: {body}");
        let lines = lines_with_key(&self.sink, &id);
        assert_eq!(
            lines, 2,
            "the event and attachment sent after {after} landed"
        );
    }
}

/// Lines of the file sink whose key is `id`.
fn lines_with_key(sink: &Path, id: &str) -> usize {
    std::fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a sink line is JSON"))
        .filter(|l| l["key"] == id)
        .count()
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    /// `VmRSS`: resident now.
    rss: u64,
    /// `VmHWM`: the peak since start, or since [`reset_peak`].
    hwm: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

/// Resets `VmHWM` to the current RSS (`5` into `clear_refs`), so each phase's
/// peak is its own. Returns whether the kernel allowed it.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Sockets the process holds open (listeners, connections, anything else).
fn relay_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// From `/proc/net/tcp`, for the IPv4 listener on `port`: connections in its
/// accept queue, and handshakes not yet completed on its side (`SYN_RECV`).
fn listen_queue(port: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    let (mut queued, mut half_open) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || !fields[1].ends_with(&local) {
            continue;
        }
        match fields[3] {
            // LISTEN: rx_queue is the accept queue's length.
            "0A" => {
                let rx = fields[4].split(':').nth(1).expect("tx_queue:rx_queue");
                queued += u64::from_str_radix(rx, 16).expect("a hex queue length");
            }
            // SYN_RECV.
            "03" => half_open += 1,
            _ => {}
        }
    }
    (queued, half_open)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One refused request and how it must be counted.
struct Case {
    name: &'static str,
    project: u64,
    encoding: Option<&'static str>,
    key: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// The `edge_relay_items_dropped_total` labels it lands under: project, category, reason.
    counted: (&'static str, &'static str, &'static str),
}

fn matrix(bombs: &[(&'static str, Vec<u8>)]) -> Vec<Case> {
    let good = || envelope_with_attachment(&new_event_id(), b"ok");
    let envelope = |reason| ("42", "envelope", reason);
    let error_item = ("42", "error", "invalid");
    let case = |name, encoding, body, status, counted| Case {
        name,
        project: PROJECT,
        encoding,
        key: Some(KEY),
        body,
        status,
        counted,
    };
    let mut cases = Vec::new();
    for (encoding, body) in bombs {
        cases.push(case(
            match *encoding {
                "gzip" => "gzip bomb (1 GiB)",
                "br" => "br bomb (1 GiB)",
                _ => "zstd bomb (1 GiB)",
            },
            Some(*encoding),
            body.clone(),
            413,
            envelope("too_large"),
        ));
    }
    let encoders: [(&'static str, Encoder); 3] = [("gzip", gzip), ("br", brotli), ("zstd", zstd)];
    for (encoding, encode) in encoders {
        let compressed = encode(&good());
        let half = compressed.len() / 2;
        cases.push(case(
            match encoding {
                "gzip" => "truncated gzip",
                "br" => "truncated br",
                _ => "truncated zstd",
            },
            Some(encoding),
            compressed[..half].to_vec(),
            400,
            envelope("invalid"),
        ));
        // Garbage right after the format's own header (gzip's 10 bytes, zstd's
        // 4-byte magic; brotli has none), so the envelope header is lost too.
        let at = match encoding {
            "gzip" => 10,
            "zstd" => 4,
            _ => 0,
        };
        cases.push(case(
            match encoding {
                "gzip" => "corrupt gzip",
                "br" => "corrupt br",
                _ => "corrupt zstd",
            },
            Some(encoding),
            corrupt(encode(&good()), at, 24),
            400,
            envelope("invalid"),
        ));
    }
    cases.extend([
        case(
            "gzip labelled zstd",
            Some("zstd"),
            gzip(&good()),
            400,
            envelope("invalid"),
        ),
        case(
            "zstd labelled br",
            Some("br"),
            zstd(&good()),
            400,
            envelope("invalid"),
        ),
        case(
            "unsupported Content-Encoding",
            Some("compress"),
            good(),
            415,
            envelope("invalid"),
        ),
        case(
            "an item length beyond the body",
            None,
            b"{}\n{\"type\":\"event\",\"length\":999}\n{}\n".to_vec(),
            400,
            envelope("invalid"),
        ),
        case(
            "10 000 items",
            None,
            {
                let mut b = b"{}\n".to_vec();
                for _ in 0..10_000 {
                    b.extend_from_slice(b"{\"type\":\"attachment\",\"length\":1}\nx\n");
                }
                b
            },
            413,
            envelope("too_large"),
        ),
        case(
            "10 000 items, gzip",
            Some("gzip"),
            gzip(&{
                let mut b = b"{}\n".to_vec();
                for _ in 0..10_000 {
                    b.extend_from_slice(b"{\"type\":\"span\"}\n{}\n");
                }
                b
            }),
            413,
            envelope("too_large"),
        ),
        case(
            "two event items",
            None,
            b"{}\n{\"type\":\"event\"}\n{}\n{\"type\":\"transaction\"}\n{}\n".to_vec(),
            400,
            envelope("invalid"),
        ),
        case(
            "a 200 KB envelope header line",
            Some("gzip"),
            gzip(format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200_000)).as_bytes()),
            413,
            envelope("too_large"),
        ),
        case(
            "a 200 KB item header line",
            None,
            format!(
                "{{}}\n{{\"type\":\"attachment\",\"pad\":\"{}\"}}\nx\n",
                "x".repeat(200_000)
            )
            .into_bytes(),
            413,
            envelope("too_large"),
        ),
        case(
            "100 000-deep nesting in an event",
            None,
            format!(
                "{{}}\n{{\"type\":\"event\"}}\n{}1{}\n",
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            )
            .into_bytes(),
            400,
            error_item,
        ),
        case(
            "100 000-deep arrays in an event, gzip",
            Some("gzip"),
            gzip(
                format!(
                    "{{}}\n{{\"type\":\"event\"}}\n{{\"extra\":{}1{}}}\n",
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                )
                .as_bytes(),
            ),
            400,
            error_item,
        ),
        case(
            "invalid UTF-8 in an event",
            None,
            b"{}\n{\"type\":\"event\"}\n{\"message\":\"caf\xc3\x28 \xff\xfe\"}\n".to_vec(),
            400,
            error_item,
        ),
        case(
            "invalid UTF-8 in the envelope header",
            None,
            b"{\"x\":\"\xff\xfe\"}\n{\"type\":\"event\"}\n{}\n".to_vec(),
            400,
            envelope("invalid"),
        ),
        case(
            "a NUL byte in an event",
            None,
            b"{}\n{\"type\":\"event\"}\n{\"message\":\"a\x00b\"}\n".to_vec(),
            400,
            error_item,
        ),
        case(
            "not an envelope",
            None,
            b"\x00\x01\x02 hello\n".to_vec(),
            400,
            envelope("invalid"),
        ),
        Case {
            name: "missing key",
            key: None,
            ..case("", None, good(), 401, envelope("unauthorized"))
        },
        Case {
            name: "unknown key",
            key: Some("ffffffffffffffffffffffffffffffff"),
            ..case("", None, good(), 403, envelope("unauthorized"))
        },
        Case {
            name: "key of another project",
            key: Some(OTHER_KEY),
            ..case("", None, good(), 403, envelope("unauthorized"))
        },
        Case {
            name: "unknown project",
            project: 999,
            ..case(
                "",
                None,
                good(),
                403,
                ("unknown", "envelope", "unauthorized"),
            )
        },
    ]);
    cases
}

/// Sends `case`, checks its status and that it was counted exactly once, under its reason.
async fn refuse(target: &Target, case: Case) {
    let before = target.scrape().await;
    let (status, body) = target
        .post(case.project, case.encoding, case.key, case.body)
        .await;
    assert_eq!(status, case.status, "{}: {body}", case.name);
    let detail: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("{}: a JSON body: {body}", case.name));
    assert!(
        detail["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}: {body}",
        case.name
    );
    let after = target.scrape().await;
    let (project, category, reason) = case.counted;
    let labels = [
        ("project", project),
        ("category", category),
        ("reason", reason),
    ];
    assert_eq!(
        after.get(DROPPED, &labels) - before.get(DROPPED, &labels),
        1.0,
        "{} is counted as {project}/{category}/{reason}",
        case.name
    );
    assert_eq!(
        after.sum(DROPPED) - before.sum(DROPPED),
        1.0,
        "{} is counted once, under no other reason",
        case.name
    );
}

/// Writes `head` at once, then `dribble` one byte every 100 ms, until the
/// relay closes the connection. Returns what the relay sent before closing
/// and when it closed, or panics if it did not close within [`CUT_OFF_BOUND`].
async fn slowloris(
    target: &Target,
    name: &str,
    head: Vec<u8>,
    dribble: Vec<u8>,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let stream = TcpStream::connect(target.relay.sdk).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(&head).await.is_err() {
            return;
        }
        for byte in dribble.iter().cycle() {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(CUT_OFF_BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        closed.is_ok(),
        "{name}: the relay did not close the connection within {CUT_OFF_BOUND:?}"
    );
    (answer, started.elapsed())
}

/// Sends a raw request whose one header line is `size` bytes; the relay's answer.
async fn huge_http_header(target: &Target, size: usize) -> String {
    let stream = TcpStream::connect(target.relay.sdk).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let request = format!(
        "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nX-Pad: {}\r\nContent-Length: 3\r\n\r\n{{}}\n",
        auth_header(KEY),
        "a".repeat(size)
    );
    let writer = tokio::spawn(async move {
        let _ = write.write_all(request.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CUT_OFF_BOUND, read.read_to_end(&mut answer))
        .await
        .expect("the relay answers or closes a request with a 200 KB header line");
    drop(writer.await);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The whole matrix against one relay process, with its memory read after each phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_against_the_binary_are_refused_counted_and_bounded() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let base = config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display()));
    let text = base.replacen(
        "[server]\nlisten = \"127.0.0.1:0\"\n",
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"20s\"\n",
        1,
    );
    assert_ne!(text, base, "the timeouts went into [server]");
    assert!(!text.contains("[limits]"), "the default limits apply");

    // The bombs take a few seconds to compress; make them while the relay starts.
    let bombs = tokio::task::spawn_blocking(|| {
        std::thread::scope(|s| {
            let made: Vec<_> = ["gzip", "br", "zstd"]
                .map(|e| s.spawn(move || (e, bomb(e))))
                .into_iter()
                .map(|h| h.join().expect("bomb thread"))
                .collect();
            made
        })
    });
    let relay = start_relay(dir.path(), &text);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let target = Target {
        relay,
        client,
        sink,
    };
    let pid = target.pid();
    let bombs = bombs.await.unwrap();
    for (encoding, body) in &bombs {
        println!(
            "{encoding} bomb: {} bytes on the wire, {BOMB_INFLATED} inflated",
            body.len()
        );
    }

    // Baseline: the relay has served one good request.
    target.good("start").await;
    let baseline = memory(pid);
    let resettable = reset_peak(pid);
    println!(
        "baseline after start: VmRSS {:.1} MiB, VmHWM {:.1} MiB (peak reset per phase: {resettable})",
        mib(baseline.rss),
        mib(baseline.hwm)
    );

    // 1. The sequential matrix: each case refused, counted once, and harmless.
    let cases = matrix(&bombs);
    let count = cases.len();
    for case in cases {
        let name = case.name;
        refuse(&target, case).await;
        target.good(name).await;
    }
    // A 200 KB HTTP header line: hyper refuses it before the relay's service
    // sees the request (`max_buf_size` 64 KiB).
    let before = target.scrape().await;
    let answer = huge_http_header(&target, 200_000).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 200 KB HTTP header line gets 431: {answer:?}"
    );
    let after = target.scrape().await;
    // No request reached the relay's service, so no item: the connection is counted.
    let too_large = [("reason", "header_too_large")];
    assert_eq!(
        after.get(REFUSED, &too_large) - before.get(REFUSED, &too_large),
        1.0,
        "the 431 is counted as a refused connection"
    );
    assert_eq!(
        after.sum(DROPPED),
        before.sum(DROPPED),
        "and not as an item"
    );
    target.good("a 200 KB HTTP header line").await;
    let sequential = memory(pid);
    println!(
        "after the sequential matrix ({count} cases): VmRSS {:.1} MiB, phase peak VmHWM {:.1} MiB",
        mib(sequential.rss),
        mib(sequential.hwm)
    );

    // 2. Bombs at once, with a good client among them.
    reset_peak(pid);
    let before = target.scrape().await;
    let bombs_started = Instant::now();
    let mut at_once = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT_BOMBS {
        let (encoding, body) = bombs[i % bombs.len()].clone();
        let client = target.client.clone();
        let url = target.url(PROJECT);
        at_once.spawn(async move {
            let r = client
                .post(url)
                .header("x-sentry-auth", auth_header(KEY))
                .header("content-encoding", encoding)
                .body(body)
                .send()
                .await
                .expect("the relay answers a bomb");
            (encoding, r.status().as_u16())
        });
    }
    let good_started = Instant::now();
    tokio::time::timeout(PATIENCE, target.good("bombs sent at once"))
        .await
        .expect("a good client is served while bombs are decoded");
    let good_took = good_started.elapsed();
    let answers = tokio::time::timeout(PATIENCE, at_once.join_all())
        .await
        .expect("every bomb is answered within PATIENCE");
    let bombs_took = bombs_started.elapsed();
    for (encoding, status) in &answers {
        assert_eq!(*status, 413, "a {encoding} bomb among {CONCURRENT_BOMBS}");
    }
    let after = target.scrape().await;
    let too_large = [
        ("project", "42"),
        ("category", "envelope"),
        ("reason", "too_large"),
    ];
    assert_eq!(
        after.get(DROPPED, &too_large) - before.get(DROPPED, &too_large),
        CONCURRENT_BOMBS as f64,
        "every bomb is counted once as too_large"
    );
    assert_eq!(
        after.sum(DROPPED) - before.sum(DROPPED),
        CONCURRENT_BOMBS as f64,
        "and nothing else was dropped"
    );
    let concurrent = memory(pid);
    println!(
        "after {CONCURRENT_BOMBS} bombs at once (answered in {bombs_took:?}; the good client took {good_took:?}): \
         VmRSS {:.1} MiB, phase peak VmHWM {:.1} MiB",
        mib(concurrent.rss),
        mib(concurrent.hwm)
    );

    // 3. Slowloris: headers and a body dribbled one byte at a time.
    reset_peak(pid);
    let slow_start = memory(pid);
    let before = target.scrape().await;
    let slow_headers = slowloris(
        &target,
        "headers dribbled",
        Vec::new(),
        format!(
            "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nX-Pad: {}",
            auth_header(KEY),
            "a".repeat(10_000)
        )
        .into_bytes(),
    );
    let slow_body = slowloris(
        &target,
        "body dribbled",
        format!(
            "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nContent-Length: 100000\r\n\r\n",
            auth_header(KEY)
        )
        .into_bytes(),
        b"x".to_vec(),
    );
    let slow_preface = slowloris(
        &target,
        "HTTP/2 preface dribbled",
        Vec::new(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
    );
    let ((slow_headers, headers_closed), (slow_body, body_closed), (slow_preface, preface_closed)) =
        tokio::join!(slow_headers, slow_body, slow_preface);
    target.good("slowloris").await;
    let after = target.scrape().await;
    let show = |a: &[u8]| {
        String::from_utf8_lossy(a)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    println!(
        "slowloris closed by the relay: dribbled headers after {headers_closed:?} ({:?}), \
         dribbled body after {body_closed:?} ({:?}), dribbled HTTP/2 preface after {preface_closed:?} ({:?})",
        show(&slow_headers),
        show(&slow_body),
        show(&slow_preface)
    );
    for (name, answer) in [("headers", &slow_headers), ("h2 preface", &slow_preface)] {
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "slow {name}: nothing or a 408 before the close: {:?}",
            show(answer)
        );
    }
    assert!(
        slow_body.is_empty() || slow_body.starts_with(b"HTTP/1.1 408"),
        "slow body: a 408 (or a reset that swallowed it): {:?}",
        show(&slow_body)
    );
    let invalid = [
        ("project", "42"),
        ("category", "envelope"),
        ("reason", "invalid"),
    ];
    assert_eq!(
        after.get(DROPPED, &invalid) - before.get(DROPPED, &invalid),
        1.0,
        "the dribbled body is counted once as invalid (408); dribbled headers never reach the service"
    );
    assert_eq!(after.sum(DROPPED) - before.sum(DROPPED), 1.0);
    // Dribbled headers and the dribbled preface never became requests: each
    // closed connection is counted by why.
    let refused = |reason: &str| {
        after.get(REFUSED, &[("reason", reason)]) - before.get(REFUSED, &[("reason", reason)])
    };
    assert_eq!(
        refused("header_timeout") + refused("silent"),
        2.0,
        "dribbled headers and the dribbled preface are counted as refused connections"
    );
    let slow = memory(pid);

    // 4. Thousands of idle connections; a good client still gets through.
    //
    // The relay accepts at most max_connections (1024) at once and cuts each
    // silent one after header_read_timeout (1s); the kernel queues up to the
    // listen backlog (1024) more, and completes the rest of the handshakes
    // only on the client's side: those never reach the relay at all. A good
    // client is served once a wave of idle ones has been cut.
    reset_peak(pid);
    let idle_start = memory(pid);
    let sockets_before = relay_sockets(pid);
    let silent_before = target.scrape().await.get(REFUSED, &[("reason", "silent")]);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(relay_sockets(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    let idle_started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    let sdk = target.relay.sdk;
    for _ in 0..IDLE_CONNECTIONS {
        connecting.spawn(async move { TcpStream::connect(sdk).await });
    }
    let idle: Vec<TcpStream> = tokio::time::timeout(PATIENCE, connecting.join_all())
        .await
        .expect("every idle connection is established within PATIENCE")
        .into_iter()
        .map(|c| c.expect("an idle connection"))
        .collect();
    let connected_after = idle_started.elapsed();
    let good_started = Instant::now();
    tokio::time::timeout(PATIENCE, target.good("3000 idle connections"))
        .await
        .expect("a good client is served among idle connections within PATIENCE");
    let good_took = good_started.elapsed();
    let during_idle = memory(pid);
    // Wait (bounded) until the relay holds no SDK connection and the kernel
    // has none queued or half-open for it: every idle connection that reached
    // the relay has been cut by then.
    eventually(PATIENCE, Duration::from_millis(50), async || {
        let (queued, half_open) = listen_queue(sdk.port());
        let sockets = relay_sockets(pid);
        match sockets <= sockets_before && queued == 0 && half_open == 0 {
            true => Ok(()),
            false => Err(format!(
                "the relay still holds {sockets} sockets ({sockets_before} before), \
                 {queued} queued, {half_open} half open"
            )),
        }
    })
    .await;
    let idle_cut_after = idle_started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most_sockets = sampler.await.unwrap();
    let (mut cut, mut never_reached, mut answered) = (0, 0, 0);
    for stream in idle {
        let mut stream = stream.into_std().unwrap();
        let mut buf = [0u8; 64];
        match std::io::Read::read(&mut stream, &mut buf) {
            // The relay closed it (the end of the stream, or a reset).
            Ok(0) => cut += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => cut += 1,
            // Open on our side only: the kernel completed the handshake, the relay never saw it.
            Err(_) => never_reached += 1,
            Ok(_) => answered += 1,
        }
    }
    assert_eq!(answered, 0, "an idle connection got bytes from the relay");
    let silent = target.scrape().await.get(REFUSED, &[("reason", "silent")]) - silent_before;
    assert_eq!(
        silent, cut as f64,
        "every idle connection the relay cut is counted as silent"
    );
    assert!(
        cut >= 1024,
        "at least a full wave of max_connections idle connections was cut by the relay: {cut}"
    );
    assert!(
        most_sockets <= sockets_before + 1024 + 8,
        "the relay held {most_sockets} sockets (before: {sockets_before}; max_connections 1024)"
    );
    target.good("the idle connections closed").await;
    let after_idle = memory(pid);
    println!(
        "{IDLE_CONNECTIONS} idle connections: connected (client side) after {connected_after:?}; \
         a good client took {good_took:?}; the relay held at most {most_sockets} sockets ({sockets_before} before); \
         {cut} cut by the relay, {never_reached} never reached it, all done after {idle_cut_after:?}; \
         VmRSS while open {:.1} MiB, after {:.1} MiB, phase peak VmHWM {:.1} MiB",
        mib(during_idle.rss),
        mib(after_idle.rss),
        mib(after_idle.hwm)
    );
    println!(
        "slowloris phase peak VmHWM {:.1} MiB; whole test took {:?}",
        mib(slow.hwm),
        started.elapsed()
    );

    // 5. Memory. The relay promises that a bomb costs at most the inflated
    // cap: one request that reaches the decoder holds its body (at most
    // max_body_size) and an inflate buffer stopped one byte past
    // max_inflated_size. Large bodies are inflated under a semaphore of one
    // permit per CPU, so at most that many at once; the rest of the bombs
    // wait with their compressed bodies only. On top: 128 MiB for connection
    // buffers (1024 idle ones measured at a few MiB), allocator slack and
    // the runtime. Measured: one bomb adds about 57 MiB, two inflating at
    // once about 115 MiB. The slack is the allocator's: it keeps freed
    // pages for reuse, and how much of a bomb's memory comes from pages an
    // earlier one left varies from run to run. Sixteen bombs at once
    // peaked anywhere from 184 to 240 MiB over eight runs of the same
    // build on one machine (baseline 29 MiB), which a 64 MiB allowance
    // failed twice; unbounded, they would take over a GiB.
    let workers: u64 = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let per_decode = (MAX_INFLATED + MAX_BODY) >> 10;
    let allowance = (128 << 20) >> 10;
    let bound = |decodes: u64| baseline.hwm + decodes * per_decode + allowance;
    let at_once = workers.min(CONCURRENT_BOMBS as u64);
    println!(
        "memory bounds: baseline {:.1} MiB + n x {:.0} MiB + {:.0} MiB; {workers} workers, so {at_once} bombs inflate at once",
        mib(baseline.hwm),
        mib(per_decode),
        mib(allowance)
    );
    // Without a resettable peak, every phase's VmHWM is the peak so far.
    let one = if resettable { 1 } else { at_once };
    let mut checks = vec![
        ("the sequential matrix", sequential.hwm, bound(one)),
        ("the bombs sent at once", concurrent.hwm, bound(at_once)),
        ("slowloris", slow.hwm, bound(at_once)),
        ("the idle connections", after_idle.hwm, bound(at_once)),
    ];
    if resettable {
        // Phases that inflate nothing grow by connection buffers at most.
        checks.extend([
            (
                "slowloris, over its start",
                slow.hwm,
                slow_start.rss + allowance,
            ),
            (
                "the idle connections, over their start",
                after_idle.hwm,
                idle_start.rss + allowance,
            ),
        ]);
    }
    for (phase, peak, limit) in checks {
        println!(
            "  {phase}: peak VmHWM {:.1} MiB, bound {:.1} MiB",
            mib(peak),
            mib(limit)
        );
        assert!(
            peak <= limit,
            "the relay's peak RSS during {phase} is {:.1} MiB, over {:.1} MiB",
            mib(peak),
            mib(limit)
        );
    }
    // What the bombs took is given back, not kept: within 96 MiB of the
    // baseline once everything is over, against a peak of some 210 MiB while
    // they inflated. Measured resident after everything: 62 MiB once; later
    // 67-94 MiB over six runs of two builds (a baseline of 29 MiB), spread by
    // how much freed memory the allocator still holds on the idle threads.
    let settled = baseline.hwm + ((96 << 20) >> 10);
    assert!(
        after_idle.rss <= settled,
        "the relay keeps {:.1} MiB resident after everything, over {:.1} MiB",
        mib(after_idle.rss),
        mib(settled)
    );
}
