//! End to end: the `edge-relay` binary as a process, the `tansu` broker as a
//! separate process, and the real Python `sentry-sdk` sending gzip and br.
//!
//! The README's test command (`scripts/test`) installs tansu and a virtualenv
//! with the SDK; without them this test fails and says how to get them.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A program the test needs: from an environment variable, else a default path.
fn tool(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    let found = path.is_file()
        || (path.components().count() == 1
            && Command::new("which")
                .arg(&path)
                .output()
                .is_ok_and(|o| o.status.success()));
    assert!(
        found,
        "{} not found (set {var}); run `scripts/test`, which installs tansu and the Python SDK",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tansu broker as a process of its own, on a port it keeps across restarts.
pub struct Tansu {
    /// The running broker, if it runs.
    pub process: Option<Process>,
    /// `host:port` for Kafka clients.
    pub brokers: String,
    /// Where it runs (and keeps its sqlite file, if it has one).
    dir: PathBuf,
    /// `--storage-engine`.
    storage: String,
}

impl Tansu {
    /// Starts tansu in `dir` with this storage engine (`memory://tansu/`, or
    /// `sqlite://tansu.db` to survive restarts) and creates `topics`.
    pub fn start(dir: &std::path::Path, storage: &str, topics: &[&str]) -> Tansu {
        let mut tansu = Tansu {
            process: None,
            brokers: format!("127.0.0.1:{}", free_port()),
            dir: dir.to_owned(),
            storage: storage.to_owned(),
        };
        tansu.restart();
        for topic in topics {
            tansu.create_topic(topic);
        }
        tansu
    }

    fn binary() -> PathBuf {
        tool(
            "RELAY_TEST_TANSU",
            std::env::var_os("HOME").map_or_else(
                || PathBuf::from("tansu"),
                |h| PathBuf::from(h).join(".cargo/bin/tansu"),
            ),
        )
    }

    /// Starts the broker again (after [`Tansu::kill`]) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "tansu is already running");
        let url = format!("tcp://{}", self.brokers);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        // Run from an empty directory: tansu reads a .env file from its working directory.
        let child = Command::new(Self::binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.process = Some(Process(child));
        let addr: SocketAddr = self.brokers.parse().unwrap();
        let until = Instant::now() + PATIENCE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < until,
                "tansu did not listen; see {}",
                self.dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// tansu does not create topics on produce.
    pub fn create_topic(&self, topic: &str) {
        let status = Command::new(Self::binary())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
                "--partitions",
                "2",
                topic,
            ])
            .current_dir(&self.dir)
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "creating topic {topic}");
    }

    /// `kill -9`: the broker vanishes mid-request.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("tansu runs");
        let _ = process.0.kill();
        let _ = process.0.wait();
    }

    /// Sends a signal (`STOP` stalls every request, `CONT` resumes them).
    pub fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("tansu runs").0.id();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} tansu");
    }
}

/// The topics the relay's tests read.
pub const TANSU_TOPICS: [&str; 5] = [
    "ingest-events",
    "ingest-transactions",
    "ingest-attachments",
    "ingest-sessions",
    "ingest-logs",
];

fn start_tansu(dir: &std::path::Path) -> (Tansu, String) {
    let tansu = Tansu::start(dir, "memory://tansu/", &TANSU_TOPICS);
    let brokers = tansu.brokers.clone();
    (tansu, brokers)
}

/// The relay binary, running, with its log lines.
pub struct RelayProcess {
    /// The process.
    pub process: Process,
    /// The SDK listener.
    pub sdk: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Its log lines (stderr), as they come.
    pub logs: std::sync::mpsc::Receiver<String>,
    /// The lines it logged up to and including the one that says it listens.
    pub started: Vec<String>,
}

impl RelayProcess {
    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_for_log(&self, text: &str) -> String {
        self.read_until(text, &mut Vec::new())
    }

    /// [`wait_for_log`](Self::wait_for_log), keeping every line read in `read`.
    fn read_until(&self, text: &str, read: &mut Vec<String>) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => {
                    read.push(line.clone());
                    return line;
                }
                Ok(line) => read.push(line),
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }
}

/// Starts the relay binary on this configuration and reads its listening
/// addresses from its log.
pub fn start_relay(dir: &std::path::Path, config_text: &str) -> RelayProcess {
    start_relay_with_log_level(dir, config_text, "info")
}

/// [`start_relay`] with this `RUST_LOG`.
pub fn start_relay_with_log_level(
    dir: &std::path::Path,
    config_text: &str,
    level: &str,
) -> RelayProcess {
    let config = dir.join("relay.toml");
    std::fs::write(&config, config_text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge-relay"));
    command.args(["run", "--config"]).arg(&config);
    spawn_relay(command, level)
}

/// Starts `command` (which runs the relay) with this `RUST_LOG`, and waits
/// until the relay listens.
pub fn spawn_relay(mut command: Command, level: &str) -> RelayProcess {
    let mut child = command
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edge-relay starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel();
    // Forward every line, so the relay never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut relay = RelayProcess {
        process: Process(child),
        sdk: "0.0.0.0:0".parse().unwrap(),
        admin: "0.0.0.0:0".parse().unwrap(),
        logs,
        started: Vec::new(),
    };
    let mut started = Vec::new();
    let line = relay.read_until("edge-relay listening", &mut started);
    relay.started = started;
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .parse()
            .unwrap()
    };
    relay.sdk = field("sdk=");
    relay.admin = field("admin=");
    relay
}

/// A log with a secret and a look-alike, which the Python SDK attaches gzip'd.
const LOG: &str = "2026-12-07T10:00:00Z INFO login alice.smith@example.com token=qtok-789\n\
                   2026-12-07T10:00:01Z INFO order 4111111111111112 shipped\n";

fn python_sdk_send(python: &PathBuf, dsn: &str, compression: &str, count: usize) -> Vec<String> {
    python_sdk_send_with(python, dsn, compression, count, Sent::Plain)
}

/// What each event of [`python_sdk_send_with`] comes with.
enum Sent<'a> {
    /// Nothing more.
    Plain,
    /// This log attached gzip'd.
    Log(&'a str),
    /// Reported through Python's logging, with a password among the
    /// message's parameters, after a Sentry log with an API key among its
    /// parameters (see `send_events.py`).
    Logged,
}

/// The password and the API key `send_events.py` logs as parameters, and
/// the token of the password-reset link it fetches (an HTTP breadcrumb).
const LOGGED_SECRETS: [&str; 3] = ["Hunt3rTwo!", "ak-5f9e2c1d7b", "c3k2lp-8f1e2d3c4b5a6978e0d1"];

/// [`python_sdk_send`], each event with what `sent` says.
fn python_sdk_send_with(
    python: &PathBuf,
    dsn: &str,
    compression: &str,
    count: usize,
    sent: Sent<'_>,
) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/send_events.py");
    let extra: &[&str] = match sent {
        Sent::Plain => &[],
        Sent::Log(log) => &[log],
        Sent::Logged => &["", "logged"],
    };
    let out = Command::new(python)
        .arg(script)
        .args([dsn, compression, &count.to_string()])
        .args(extra)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "send_events.py {compression} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints the event ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_through_the_relay_binary_into_tansu() {
    let python = tool(
        "RELAY_TEST_PYTHON",
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    );
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, brokers) = start_tansu(dir.path());
    // Project 7 (the last one in the test config) allows one error a minute:
    // the Python SDK must back off after the 429.
    let config = config_text(&kafka_section(&brokers))
        + "[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 1\nwindow_secs = 60\n";
    let mut relay = start_relay(dir.path(), &config);
    let (sdk, admin) = (relay.sdk, relay.admin);
    let client = reqwest::Client::new();
    wait_until(
        "the relay never became ready against tansu",
        Duration::from_millis(100),
        async || {
            client
                .get(format!("http://{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    let dsn = format!("http://{KEY}@{sdk}/{PROJECT}");
    let (python_gzip, dsn_gzip) = (python.clone(), dsn.clone());
    // The gzip'd events each carry a gzip'd log: it reaches tansu gzip'd and scrubbed.
    let gzip_ids = tokio::task::spawn_blocking(move || {
        python_sdk_send_with(&python_gzip, &dsn_gzip, "gzip", 5, Sent::Log(LOG))
    })
    .await
    .unwrap();
    // The br events come through Python's logging, with secrets among the
    // logged messages' parameters.
    let br_ids = tokio::task::spawn_blocking(move || {
        python_sdk_send_with(&python, &dsn, "br", 5, Sent::Logged)
    })
    .await
    .unwrap();

    let got = consume_async(brokers.clone(), &["ingest-events"], 10).await;
    let mut keys: Vec<String> = got.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    let mut want: Vec<String> = gzip_ids.iter().chain(&br_ids).cloned().collect();
    want.sort();
    assert_eq!(keys, want, "every Python SDK event exactly once in tansu");
    for m in &got {
        assert_eq!(m.headers["project_id"], "42");
        assert_eq!(m.headers["event_id"], m.key);
        assert_eq!(m.headers["item_type"], "event");
        humantime::parse_rfc3339(&m.headers["received_at"]).expect("RFC 3339");
        let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(event["exception"]["values"][0]["type"], "ValueError");
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !LOGGED_SECRETS.iter().any(|s| text.contains(s)),
            "a logged secret reached Kafka: {text}"
        );
        if br_ids.contains(&m.key) {
            assert_eq!(
                event["logentry"]["params"],
                serde_json::json!(["[Filtered]", "bob"]),
                "the logged password, by its slot: {text}"
            );
            let crumbs = event["breadcrumbs"]["values"]
                .as_array()
                .expect("breadcrumbs");
            let fetched: Vec<&str> = crumbs
                .iter()
                .filter(|c| c["type"] == "http")
                .map(|c| c["data"]["url"].as_str().expect("an HTTP breadcrumb's URL"))
                .collect();
            assert!(
                !fetched.is_empty(),
                "the stdlib integration's breadcrumb: {text}"
            );
            for url in fetched {
                assert!(url.ends_with("/accounts/reset/MTIz/[urltoken]/"), "{url}");
            }
        }
    }
    // The Sentry logs, in as many items as the SDK batched them in: ten
    // logs, each parameter in a secret slot redacted, the others kept.
    let logged = consume_async(brokers.clone(), &["ingest-logs"], 1).await;
    let mut logs = Vec::new();
    for m in &logged {
        assert_eq!(m.headers["item_type"], "log");
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !LOGGED_SECRETS.iter().any(|s| text.contains(s)),
            "a logged secret reached Kafka: {text}"
        );
        let item: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        logs.extend(item["items"].as_array().expect("a log item's logs").clone());
    }
    assert_eq!(logs.len(), 10, "two logs per event: {logged:?}");
    for log in &logs {
        let attributes = &log["attributes"];
        assert_eq!(
            attributes["sentry.message.parameter.0"]["value"],
            "[Filtered]"
        );
        assert_eq!(attributes["sentry.message.parameter.1"]["value"], "bob");
    }
    let logs = consume_async(brokers.clone(), &["ingest-attachments"], 5).await;
    let mut keys: Vec<String> = logs.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    let mut want = gzip_ids.clone();
    want.sort();
    assert_eq!(keys, want, "each gzip'd event's log, once");
    for m in &logs {
        assert_eq!(m.headers["item_type"], "attachment");
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&m.payload[..])
            .read_to_string(&mut text)
            .expect("the log leaves gzip'd");
        assert_eq!(
            text,
            "2026-12-07T10:00:00Z INFO login [email] token=[Filtered]\n\
             2026-12-07T10:00:01Z INFO order 4111111111111112 shipped\n"
        );
    }

    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Five events each, and with br the logs' envelopes besides.
    let requests = |encoding: &str| -> usize {
        let line = format!("edge_relay_request_encodings_total{{encoding=\"{encoding}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the SDK sent {encoding}: {metrics}"))
    };
    assert_eq!(requests("gzip"), 5);
    let br = requests("br");
    assert!(
        (6..=15).contains(&br),
        "five events, then one to ten envelopes of logs: {br}"
    );

    // The Python SDK backs off after a 429: of five errors, one is accepted,
    // one is refused, and three are never sent.
    let limited_dsn = format!("http://{OTHER_KEY}@{sdk}/{OTHER_PROJECT}");
    let python = tool(
        "RELAY_TEST_PYTHON",
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    );
    tokio::task::spawn_blocking(move || python_sdk_send(&python, &limited_dsn, "gzip", 5))
        .await
        .unwrap();
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "edge_relay_items_accepted_total{category=\"error\",project=\"7\"} 1",
        "edge_relay_items_dropped_total{category=\"error\",project=\"7\",reason=\"rate_limited\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}: {metrics}");
    }

    // SIGTERM: a graceful stop that exits 0.
    let status = signal_and_wait(&mut relay.process, "TERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    relay.wait_for_log("drained");
}

/// Sends a signal to the process and waits (bounded) for it to exit.
pub fn signal_and_wait(process: &mut Process, signal: &str) -> std::process::ExitStatus {
    let pid = process.0.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    let until = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < until,
            "the relay did not stop after SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
