//! Fault tests: the `edge-relay` binary and the `tansu` broker as separate
//! processes, under a steady load of SDK-shaped requests. The broker is
//! killed and restarted, stalled with SIGSTOP, or refuses produce requests
//! (its topic is missing); the relay is killed with `kill -9` in `spool` mode
//! and restarted on the same spool. Each test checks that every item answered
//! 200 reaches Kafka (duplicates only with the same event id, and no more than
//! the relay counted as possible), that the relay kept answering, and that its
//! peak memory stayed bounded.
//!
//! Waits are bounded by progress the relay reports (spool counts in its
//! metrics), never by sleeping for a fixed time and asserting on the clock.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::e2e_tansu::{start_relay, RelayProcess, Tansu, TANSU_TOPICS};
use crate::support::*;

/// Peak resident memory the relay may reach in these tests. The load is
/// small; the bound is about unbounded queues, not tuning.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// SDK-shaped requests from `connections` clients until stopped; every
/// answer is recorded with its event id.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(String, u16)>>>,
}

impl Load {
    fn start(sdk: SocketAddr, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..connections)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    // Long enough for any delivery timeout; a hung request fails the test.
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(45))
                        .build()
                        .unwrap();
                    let url = format!("http://{sdk}/api/{PROJECT}/envelope/");
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let id = new_event_id();
                        let status = match client
                            .post(&url)
                            .header("x-sentry-auth", auth_header(KEY))
                            .body(envelope_with_attachment(&id, b"fault test"))
                            .send()
                            .await
                        {
                            Ok(r) => r.status().as_u16(),
                            Err(e) if e.is_timeout() => panic!("the relay stopped answering: {e}"),
                            // The relay was killed: connection refused or reset.
                            Err(_) => 0,
                        };
                        answers.push((id, status));
                        // A steady load, not a flood: the spool takes thousands a second.
                        let pause = if status == 0 { 50 } else { 5 };
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    answers
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients; the event ids answered 200, and the count of each status.
    async fn finish(self) -> (Vec<String>, HashMap<u16, usize>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ok = Vec::new();
        let mut statuses = HashMap::new();
        for task in self.tasks {
            for (id, status) in task.await.expect("a load task does not panic") {
                *statuses.entry(status).or_insert(0) += 1;
                if status == 200 {
                    ok.push(id);
                }
            }
        }
        (ok, statuses)
    }
}

/// One series' value from the relay's `/metrics` (0 if absent or unreachable).
async fn scrape(admin: SocketAddr, series: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded) until a series reaches `at_least`.
async fn wait_metric(admin: SocketAddr, series: &str, at_least: f64) {
    wait_until(
        &format!("{series} never reached {at_least}"),
        Duration::from_millis(100),
        async || scrape(admin, series).await >= at_least,
    )
    .await
}

/// The relay's log lines so far, but librdkafka's connection noise.
fn relay_log(relay: &RelayProcess) -> String {
    let lines: Vec<String> = relay
        .logs
        .try_iter()
        .filter(|l| !l.contains("AllBrokersDown") && !l.contains("BrokerTransportFailure"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits (bounded) until the spool is empty and Kafka is up again.
async fn wait_drained(relay: &RelayProcess) {
    let admin = relay.admin;
    eventually(PATIENCE * 2, Duration::from_millis(200), async || {
        let body = match reqwest::get(format!("http://{admin}/readyz")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        match body.contains("kafka: up") && body.contains("spool: 0 items") {
            true => Ok(()),
            false => Err(format!(
                "the spool never drained: {body}\n{}",
                relay_log(relay)
            )),
        }
    })
    .await
}

/// The relay's peak resident memory, from the kernel.
fn peak_rss_kib(relay: &RelayProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.process.0.id()))
        .expect("/proc/PID/status of the relay");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Reads `topic` from the beginning until every key in `wanted` has been
/// seen (bounded), then a little longer so that late duplicates show.
/// Returns every key read, duplicates included.
fn consume_until(brokers: &str, topic: &str, wanted: &HashSet<String>) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "edge-relay-fault-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition offset");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut keys = Vec::new();
    let mut missing = wanted.clone();
    let until = Instant::now() + PATIENCE * 2;
    let mut settle: Option<Instant> = None;
    while settle.is_none_or(|s| Instant::now() < s) && Instant::now() < until {
        if missing.is_empty() && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_secs(2));
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            missing.remove(&key);
            keys.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} items answered 200 are not in {topic}, e.g. {:?}",
        missing.len(),
        wanted.len(),
        missing.iter().next()
    );
    keys
}

/// Every item answered 200 is in Kafka; any duplicate has the same event id
/// and there are no more of them than the relay counted as possible.
fn assert_delivered(brokers: &str, ok: &[String], possible_duplicates: f64) {
    let wanted: HashSet<String> = ok.iter().cloned().collect();
    assert_eq!(wanted.len(), ok.len(), "event ids are unique");
    let keys = consume_until(brokers, "ingest-events", &wanted);
    let mut seen = HashMap::new();
    for key in &keys {
        *seen.entry(key.as_str()).or_insert(0usize) += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        duplicates as f64 <= possible_duplicates,
        "{duplicates} duplicates, but the relay counted {possible_duplicates} possible"
    );
}

fn relay_config(dir: &Path, brokers: &str, ack: &str, delivery_timeout: &str) -> String {
    config_text(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\nhealth_interval = \"200ms\"\n\
         delivery_timeout = \"{delivery_timeout}\"\n\
         [delivery]\nack = \"{ack}\"\n\
         [spool]\npath = \"{}\"\n",
        dir.join("spool").display()
    ))
}

/// The broker is killed in the middle of a steady load and restarted later:
/// meanwhile the relay answers 200 from the spool, and afterwards every item
/// answered 200 is in Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_under_load_then_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::start(dir.path(), "sqlite://tansu.db", &TANSU_TOPICS);
    let relay = start_relay(
        dir.path(),
        &relay_config(dir.path(), &tansu.brokers, "kafka", "3s"),
    );
    let admin = relay.admin;
    let load = Load::start(relay.sdk, 4);
    wait_metric(
        admin,
        "edge_relay_items_accepted_total{category=\"error\",project=\"42\"}",
        50.0,
    )
    .await;

    tansu.kill();
    // Keep sending while the broker is gone: these go to the spool.
    wait_metric(
        admin,
        "edge_relay_spool_written_total{cause=\"kafka_unavailable\"}",
        100.0,
    )
    .await;
    tansu.restart();
    wait_drained(&relay).await;
    // And some more once it is back.
    let replayed = scrape(admin, "edge_relay_spool_replayed_total").await;
    assert!(replayed >= 100.0, "replayed {replayed}");
    let accepted = scrape(
        admin,
        "edge_relay_items_accepted_total{category=\"error\",project=\"42\"}",
    )
    .await;
    wait_metric(
        admin,
        "edge_relay_items_accepted_total{category=\"error\",project=\"42\"}",
        accepted + 50.0,
    )
    .await;
    let (ok, statuses) = load.finish().await;
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request was answered 200: {statuses:?}"
    );
    wait_drained(&relay).await;
    let possible = scrape(admin, "edge_relay_spool_possible_duplicates_total").await;
    let rss = peak_rss_kib(&relay);
    assert_delivered(&tansu.brokers, &ok, possible);
    assert!(rss < RSS_BOUND_KIB, "peak RSS {rss} KiB");
}

/// `kill -9` of the relay in `spool` mode while the broker is stalled, so
/// that the spool holds items: a new relay on the same spool delivers every
/// item the old one answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_with_sigkill_in_spool_mode_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path(), "sqlite://tansu.db", &TANSU_TOPICS);
    let config = relay_config(dir.path(), &tansu.brokers, "spool", "3s");
    let mut relay = start_relay(dir.path(), &config);
    let admin = relay.admin;
    let load = Load::start(relay.sdk, 4);
    wait_metric(admin, "edge_relay_spool_replayed_total", 50.0).await;
    // Stall the broker so that the spool fills up, then kill the relay mid-load.
    tansu.signal("STOP");
    wait_metric(admin, "edge_relay_spool_items", 100.0).await;
    relay.process.0.kill().expect("kill -9 the relay");
    relay.process.0.wait().expect("reap the relay");
    let (ok, statuses) = load.finish().await;
    assert!(
        statuses.keys().all(|s| [0, 200].contains(s)),
        "only 200s, then refused connections: {statuses:?}"
    );
    tansu.signal("CONT");

    let relay = start_relay(dir.path(), &config);
    wait_drained(&relay).await;
    let replayed = scrape(relay.admin, "edge_relay_spool_replayed_total").await;
    assert!(replayed >= 100.0, "the new relay replayed {replayed} items");
    // A crash between the broker's ack and the removal from the spool replays
    // an item again: at most the items of the batches in flight at the kill.
    let in_flight_batches = 2.0 * 1000.0;
    assert_delivered(&tansu.brokers, &ok, in_flight_batches);
}

/// A broker that stalls (SIGSTOP) and one that refuses produce requests (its
/// topic is missing): the relay keeps answering 200 from the spool, its memory
/// stays bounded, and once the broker works again every item is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_refusing_brokers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No ingest-events topic yet: produce requests for errors are refused.
    // The broker is never restarted here, so it may keep its data in memory.
    let tansu = Tansu::start(
        dir.path(),
        "memory://tansu/",
        &["ingest-attachments", "ingest-transactions"],
    );
    let relay = start_relay(
        dir.path(),
        &relay_config(dir.path(), &tansu.brokers, "kafka", "2s"),
    );
    let admin = relay.admin;
    let load = Load::start(relay.sdk, 4);
    wait_metric(
        admin,
        "edge_relay_spool_written_total{cause=\"delivery_failed\"}",
        1.0,
    )
    .await;
    wait_metric(
        admin,
        "edge_relay_spool_written_total{cause=\"kafka_unavailable\"}",
        100.0,
    )
    .await;
    let degraded = scrape(admin, "edge_relay_kafka_state{state=\"degraded\"}").await;
    assert_eq!(
        degraded, 1.0,
        "a broker that answers but refuses is degraded"
    );
    tansu.create_topic("ingest-events");
    wait_drained(&relay).await;

    // Now stall it: requests in flight time out into the spool, new ones go there.
    let before = scrape(
        admin,
        "edge_relay_spool_written_total{cause=\"kafka_unavailable\"}",
    )
    .await;
    tansu.signal("STOP");
    wait_metric(
        admin,
        "edge_relay_spool_written_total{cause=\"kafka_unavailable\"}",
        before + 200.0,
    )
    .await;
    tansu.signal("CONT");
    wait_drained(&relay).await;
    let (ok, statuses) = load.finish().await;
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request was answered 200: {statuses:?}"
    );
    let possible = scrape(admin, "edge_relay_spool_possible_duplicates_total").await;
    let rss = peak_rss_kib(&relay);
    assert_delivered(&tansu.brokers, &ok, possible);
    assert!(rss < RSS_BOUND_KIB, "peak RSS {rss} KiB");
}

/// With no broker listening from the start, the relay says so in a line of
/// its own, naming the brokers, once its health checks have failed as many
/// times as take Kafka down (some seconds). Meanwhile librdkafka reports
/// "all brokers are down" on each retry (here every 10 ms at most: hundreds
/// of times before that line), and failed connects; the relay writes each
/// kind of those lines at most once per 30 s (`unlogged` says how many were
/// held back; the throttle's period is the unit tests' in
/// `client_logs.rs`), so an outage does not flood the log, while
/// `edge_relay_kafka_client_errors_total` counts every error. Judged by the
/// relay's own timestamps, not by a clock here: no two lines of one kind
/// closer than 30 s.
#[test]
fn an_outage_does_not_flood_the_log_with_librdkafka_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(&format!(
        "{}[kafka.producer]\n\"reconnect.backoff.ms\" = \"10\"\n\"reconnect.backoff.max.ms\" = \"10\"\n",
        kafka_section("BROKERS")
    ));
    // The discard port: nothing listens there, and no test binds it.
    let brokers = "127.0.0.1:9".to_owned();
    let config = config.replace("BROKERS", &brokers);
    let relay = start_relay(dir.path(), &config);
    let mut lines = relay.started.clone();
    // Every line until the relay's own: each retry, were it logged, would be one more.
    let until = Instant::now() + PATIENCE;
    loop {
        let line = relay
            .logs
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .expect("the relay says the brokers are unreachable");
        let done = line.contains("kafka brokers are unreachable");
        if done {
            assert!(line.contains(&brokers), "it names them: {line}");
        }
        lines.push(line);
        if done {
            break;
        }
    }
    // `librdkafka:` twice: the line's target, then its message.
    const MARK: &str = " librdkafka: librdkafka: ";
    let librdkafka: Vec<&String> = lines.iter().filter(|l| l.contains(MARK)).collect();
    assert!(
        librdkafka.iter().any(|l| l.contains("Connection refused")),
        "the first failed connect is logged: {lines:#?}"
    );
    let mut last: HashMap<String, std::time::SystemTime> = HashMap::new();
    for line in &librdkafka {
        let at = line.split_whitespace().next().expect("a timestamp");
        let at = humantime::parse_rfc3339(at).expect("an RFC 3339 timestamp");
        // The kind: a log line's facility and thread, or a global error's code.
        let (_, text) = line.split_once(MARK).unwrap();
        let kind: String = text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(before) = last.insert(kind.clone(), at) {
            assert!(
                at.duration_since(before).unwrap_or_default() >= Duration::from_secs(30),
                "{kind} twice within 30 s: {librdkafka:#?}"
            );
        }
    }
    // The counter has every one of them, logged or held back.
    let logged = librdkafka
        .iter()
        .filter(|l| l.contains("Global error: AllBrokersDown"))
        .count();
    let counted = tokio::runtime::Runtime::new().unwrap().block_on(scrape(
        relay.admin,
        "edge_relay_kafka_client_errors_total{error=\"AllBrokersDown\"}",
    ));
    assert_eq!(logged, 1, "{librdkafka:#?}");
    assert!(counted >= 10.0, "{counted} counted, {logged} logged");
}
