//! What the integration tests share: a relay on 127.0.0.1:0, librdkafka's
//! mock cluster, a consumer that reads back what the relay produced, and
//! metric lookups.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_relay::{Config, Relay, RelayHandle, ShutdownReport};
use prometheus::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;

/// Runs `check` every `every` until it is done (`Ok`) and returns what it
/// gave; fails the test with its last `Err` once `patience` has passed.
/// Tests wait on progress the relay shows this way, never on the clock.
pub async fn eventually<T>(
    patience: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let until = Instant::now() + patience;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(why) => assert!(Instant::now() < until, "{why}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for a condition, within [`PATIENCE`]; `what` says what
/// never happened.
pub async fn wait_until(what: &str, every: Duration, mut done: impl AsyncFnMut() -> bool) {
    eventually(PATIENCE, every, async || match done().await {
        true => Ok(()),
        false => Err(what.to_owned()),
    })
    .await
}

/// The project every test sends to.
pub const PROJECT: u64 = 42;
/// Its public key.
pub const KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// A second project, to test keys that belong elsewhere.
pub const OTHER_PROJECT: u64 = 7;
/// Its key.
pub const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef";

/// Topics the relay produces to by default.
pub const TOPICS: [&str; 9] = [
    "ingest-events",
    "ingest-transactions",
    "ingest-attachments",
    "ingest-sessions",
    "ingest-monitors",
    "ingest-spans",
    "ingest-logs",
    "ingest-profiles",
    "ingest-replays",
];

/// How long a test waits for something that should happen, before failing.
/// A bound on waiting, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A librdkafka mock cluster with the relay's topics created.
pub fn mock_kafka() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("librdkafka can start a mock cluster");
    for topic in TOPICS {
        cluster
            .create_topic(topic, 2, 1)
            .expect("the mock cluster creates topics");
    }
    cluster
}

/// A configuration with both listeners on free ports and two projects.
pub fn config_text(output: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         {output}\n\
         [[projects]]\nid = {PROJECT}\npublic_keys = [\"{KEY}\"]\n\
         [[projects]]\nid = {OTHER_PROJECT}\npublic_keys = [\"{OTHER_KEY}\"]\n"
    )
}

/// A sink file in a directory of its own, removed with it.
pub struct SinkFile {
    /// The directory: dropping it removes the file.
    _dir: tempfile::TempDir,
    /// The file the relay writes.
    pub path: std::path::PathBuf,
    /// The `[file_sink]` section that names it.
    pub section: String,
}

/// A fresh [`SinkFile`].
pub fn sink_file() -> SinkFile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("items.jsonl");
    let section = format!("[file_sink]\npath = \"{}\"\n", path.display());
    SinkFile {
        _dir: dir,
        path,
        section,
    }
}

/// [`config_text`] with these keys in its `[server]` section.
pub fn config_text_with_server(server: &str, output: &str) -> String {
    config_text(output).replacen("[server]\n", &format!("[server]\n{server}"), 1)
}

/// The `[kafka]` section for these brokers, with a short health interval,
/// and a `[spool]` in a directory of its own.
pub fn kafka_section(brokers: &str) -> String {
    kafka_section_with(brokers, "5s")
}

/// [`kafka_section`] with this delivery timeout.
pub fn kafka_section_with(brokers: &str, delivery_timeout: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\nhealth_interval = \"200ms\"\n\
         delivery_timeout = \"{delivery_timeout}\"\n\
         [spool]\npath = \"{}\"\n",
        spool_dir().display()
    )
}

/// A fresh directory for a spool. It outlives the test, like a real spool
/// outlives the relay; it is under the system's temporary directory.
pub fn spool_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("edge-relay-test-spool-")
        .tempdir()
        .expect("a temporary directory")
        .keep()
}

/// A relay running in this process.
pub struct TestRelay {
    /// The SDK listener.
    pub sdk: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Its own registry, so tests in parallel do not share counters.
    pub registry: Registry,
    /// Applies new configurations, as SIGHUP does.
    pub handle: RelayHandle,
    /// Sends the grace period that starts the shutdown.
    shutdown: oneshot::Sender<Duration>,
    /// The running relay.
    task: tokio::task::JoinHandle<ShutdownReport>,
}

impl TestRelay {
    /// Starts a relay on this configuration text.
    pub async fn start(text: &str) -> TestRelay {
        let config = Config::from_toml(text).expect("test config is valid");
        let registry = Registry::new();
        let relay = Relay::bind(config, registry.clone())
            .await
            .expect("relay binds");
        let (sdk, admin) = (relay.sdk_addr(), relay.admin_addr());
        let handle = relay.handle();
        let (tx, rx) = oneshot::channel::<Duration>();
        let task =
            tokio::spawn(relay.run(async move { rx.await.unwrap_or(Duration::from_secs(5)) }));
        TestRelay {
            sdk,
            admin,
            registry,
            handle,
            shutdown: tx,
            task,
        }
    }

    /// Starts a relay producing to these brokers and waits until it is ready.
    pub async fn with_kafka(brokers: &str) -> TestRelay {
        let relay = TestRelay::start(&config_text(&kafka_section(brokers))).await;
        relay.wait_ready().await;
        relay
    }

    /// The DSN an SDK would be configured with.
    pub fn dsn(&self) -> String {
        format!("http://{KEY}@{}/{PROJECT}", self.sdk)
    }

    /// A URL on the SDK listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sdk)
    }

    /// The envelope endpoint of the test project.
    pub fn envelope_url(&self) -> String {
        self.url(&format!("/api/{PROJECT}/envelope/"))
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// What the admin listener's `/metrics` exports now, as text.
    pub async fn exported(&self) -> String {
        let answer = reqwest::get(self.admin_url("/metrics")).await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    }

    /// Waits until `/readyz` answers 200 and, with Kafka, reports it up.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        wait_until(
            "relay did not become ready",
            Duration::from_millis(50),
            async || {
                let Ok(r) = client.get(self.admin_url("/readyz")).send().await else {
                    return false;
                };
                let ok = r.status() == 200;
                let body = r.text().await.unwrap_or_default();
                ok && (body.contains("kafka: up") || body.contains("output: file"))
            },
        )
        .await
    }

    /// Stops the relay with this grace period and returns its report.
    pub async fn stop(self, grace: Duration) -> ShutdownReport {
        let _ = self.shutdown.send(grace);
        self.task.await.expect("relay task does not panic")
    }

    /// The value of a counter or gauge, or how many a histogram observed, with
    /// exactly these labels (0 if absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.registry, name, labels)
    }

    /// Items of [`PROJECT`] dropped in this category for this reason.
    pub fn dropped(&self, category: &str, reason: &str) -> f64 {
        let project = PROJECT.to_string();
        self.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", &project),
                ("category", category),
                ("reason", reason),
            ],
        )
    }
}

/// The value of a counter or gauge, or how many a histogram observed, in
/// `registry` with these labels (0 if absent).
pub fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches && m.get_label().len() == labels.len() {
                return match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    // A histogram: how many it observed.
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count() as f64
                    }
                    _ => m.get_gauge().get_value(),
                };
            }
        }
    }
    0.0
}

/// A message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Its topic.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: HashMap<String, String>,
}

/// Reads every message in `topics` from the beginning until `expected` have
/// arrived, then keeps reading briefly so that duplicates would show.
pub fn consume(brokers: &str, topics: &[&str], expected: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "edge-relay-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("partition offset");
            }
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let until = Instant::now() + PATIENCE;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_some_and(|s| now > s) || now > until {
            break;
        }
        if out.len() >= expected && settle_until.is_none() {
            settle_until = Some(now + Duration::from_millis(1500));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value =
                                    h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_owned(), value.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    topic: m.topic().to_owned(),
                    key: m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

/// [`consume`] on a blocking thread, for async tests.
pub async fn consume_async(
    brokers: String,
    topics: &[&'static str],
    expected: usize,
) -> Vec<Consumed> {
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || consume(&brokers, &topics, expected))
        .await
        .expect("consumer thread")
}

/// A realistic error event with a stack trace and breadcrumbs, about 6 KB.
pub fn python_like_event(event_id: &str) -> serde_json::Value {
    let frames: Vec<_> = (0..12)
        .map(|i| {
            serde_json::json!({
                "filename": format!("app/module_{i}.py"),
                "function": format!("handler_{i}"),
                "module": format!("app.module_{i}"),
                "lineno": 10 + i,
                "in_app": i > 3,
                "context_line": format!("    result = process_{i}(request)"),
                "vars": {"request": "<WSGIRequest: POST '/checkout'>", "i": i}
            })
        })
        .collect();
    let crumbs: Vec<_> = (0..10)
        .map(|i| serde_json::json!({"timestamp": 1795200000.0 + f64::from(i), "category": "query", "message": format!("SELECT * FROM orders WHERE id = {i}")}))
        .collect();
    serde_json::json!({
        "event_id": event_id,
        "timestamp": 1795200010.5,
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "CardDeclinedError", "value": "declined", "stacktrace": {"frames": frames}}]},
        "breadcrumbs": {"values": crumbs},
        "tags": {"shop": "eu-1"},
        "sdk": {"name": "sentry.python", "version": "2.0.0"}
    })
}

/// An envelope with one event and one attachment.
pub fn envelope_with_attachment(event_id: &str, attachment: &[u8]) -> Vec<u8> {
    let event = serde_json::to_vec(&python_like_event(event_id)).unwrap();
    let mut body =
        format!("{{\"event_id\":\"{event_id}\",\"sent_at\":\"2026-11-21T00:00:00Z\"}}\n")
            .into_bytes();
    body.extend_from_slice(
        format!("{{\"type\":\"event\",\"length\":{}}}\n", event.len()).as_bytes(),
    );
    body.extend_from_slice(&event);
    body.push(b'\n');
    body.extend_from_slice(
        format!(
            "{{\"type\":\"attachment\",\"length\":{},\"filename\":\"log.bin\"}}\n",
            attachment.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(attachment);
    body.push(b'\n');
    body
}

/// The `X-Sentry-Auth` header for a key.
pub fn auth_header(key: &str) -> String {
    format!("Sentry sentry_version=7, sentry_client=edge-relay-tests/1.0, sentry_key={key}")
}

/// A fresh event id.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Gzip at the default level, as SDKs send.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zlib-wrapped deflate.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Brotli at level 5.
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// zstd at level 3.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}
