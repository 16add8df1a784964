//! The Kafka producer: idempotent, `acks=all`, one message per item, and a
//! health check that tells `/readyz` and the pipeline whether brokers answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};

use super::{ProduceError, Record, StartError};
use crate::config::{KafkaConfig, Topics};
use crate::metrics::Metrics;

mod client_logs;

use client_logs::ClientLogs;

/// librdkafka's producer, its log lines and errors throttled ([`ClientLogs`]).
type FutureProducer = rdkafka::producer::FutureProducer<ClientLogs>;

/// The producer and what the relay knows of the brokers' health.
pub struct KafkaSink {
    /// librdkafka's producer; its own thread polls for delivery reports.
    /// Replaced by a fresh one when its producer id is no longer usable (see [`Renewal`]).
    producer: Arc<ArcSwap<FutureProducer>>,
    /// Creates the fresh producers.
    renewal: Arc<Renewal>,
    /// Whether the brokers answered the last metadata request.
    up: Arc<AtomicBool>,
    /// Set when librdkafka reports a fatal error: the idempotent producer can
    /// no longer deliver anything, and only a restart recovers.
    fatal: Arc<AtomicBool>,
    /// Tells the health thread to stop when the sink is dropped.
    stop: Arc<AtomicBool>,
    /// Topic names.
    topics: Topics,
    /// For the produce latency histogram and the up gauge.
    metrics: Metrics,
}

impl KafkaSink {
    /// Creates the producer and starts the health check. Brokers may be down.
    pub fn new(config: &KafkaConfig, metrics: Metrics) -> Result<KafkaSink, StartError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger.as_millis().to_string())
            .set("message.max.bytes", config.max_message.to_string())
            // Java clients' partitioner, so one event id maps to one partition whoever produces it.
            .set("partitioner", "murmur2_random")
            // librdkafka's default queue may hold 1 GiB; keep memory bounded by default.
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "100000");
        for (key, value) in &config.producer {
            client.set(key, value);
        }
        let producer: FutureProducer = client
            .create_with_context(ClientLogs::new(metrics.kafka_client_errors.clone()))
            .map_err(StartError::Kafka)?;
        let producer = Arc::new(ArcSwap::from_pointee(producer));
        let renewal = Arc::new(Renewal {
            client,
            producer: producer.clone(),
            last: std::sync::Mutex::new(None),
            errors: metrics.kafka_client_errors.clone(),
        });
        let health = Health {
            up: Arc::new(AtomicBool::new(false)),
            fatal: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        spawn_health_check(
            config.brokers.clone(),
            producer.clone(),
            renewal.clone(),
            config.health_interval,
            health.clone(),
            metrics.clone(),
        );
        Ok(KafkaSink {
            producer,
            renewal,
            up: health.up,
            fatal: health.fatal,
            stop: health.stop,
            topics: config.topics.clone(),
            metrics,
        })
    }

    /// Topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the brokers answered the last health check and the producer works.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.is_failed()
    }

    /// Whether the producer hit a fatal error and the process must be restarted.
    pub fn is_failed(&self) -> bool {
        self.fatal.load(Ordering::Relaxed)
    }

    /// Messages queued or awaiting acknowledgement.
    pub fn in_flight(&self) -> i64 {
        i64::from(self.producer.load().in_flight_count())
    }

    /// Produces every record and waits for each acknowledgement. While the
    /// brokers are known to be down, fails at once rather than hold the SDK
    /// for the whole delivery timeout.
    pub async fn send(&self, records: &[Record]) -> Vec<Result<(), ProduceError>> {
        let pending = self.enqueue(records);
        self.acknowledged(pending).await
    }

    /// Hands every record to librdkafka without waiting; see [`Self::acknowledged`].
    pub fn enqueue(&self, records: &[Record]) -> Pending {
        let started = Instant::now();
        if !self.is_up() {
            let futures = records
                .iter()
                .map(|_| Err(ProduceError::Unavailable))
                .collect();
            return Pending { futures, started };
        }
        // Enqueue all first, then wait: the acknowledgements overlap.
        let producer = self.producer.load();
        let futures: Vec<_> = records
            .iter()
            .map(|r| {
                let mut headers = OwnedHeaders::new_with_capacity(6);
                for (key, value) in r.headers.pairs() {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                let record = FutureRecord::to(&r.topic)
                    .key(r.key.as_bytes())
                    .payload(&r.payload[..])
                    .headers(headers);
                producer.send_result(record).map_err(|(e, _)| match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        ProduceError::QueueFull
                    }
                    e => ProduceError::Kafka(e),
                })
            })
            .collect();
        Pending { futures, started }
    }

    /// Waits for the acknowledgements of enqueued records; one result per record.
    pub async fn acknowledged(&self, pending: Pending) -> Vec<Result<(), ProduceError>> {
        let Pending { futures, started } = pending;
        let mut results = Vec::with_capacity(futures.len());
        for p in futures {
            results.push(match p {
                Err(e) => Err(e),
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        self.metrics
                            .produce_duration
                            .observe(started.elapsed().as_secs_f64());
                        Ok(())
                    }
                    Ok(Err((e, _))) => {
                        if lost_producer_id(&e) {
                            self.renewal.renew_soon(&e);
                        }
                        Err(ProduceError::Kafka(e))
                    }
                    Err(_) => Err(ProduceError::Canceled),
                },
            });
        }
        results
    }

    /// Gives up on every queued and in-flight message: their deliveries fail
    /// at once (for the stop sequence, after the grace period's flush).
    pub fn purge(&self) {
        self.producer
            .load()
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }

    /// Waits up to `timeout` for in-flight messages; returns how many are left.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let producer = self.producer.load_full();
        tokio::task::spawn_blocking(move || {
            // A flush that times out leaves messages in the queue; they are counted below.
            let _ = producer.flush(timeout);
            usize::try_from(producer.in_flight_count()).unwrap_or(0)
        })
        .await
        .unwrap_or_else(|_| usize::try_from(self.producer.load().in_flight_count()).unwrap_or(0))
    }
}

/// Whether the broker refused the producer's identity: fenced, an epoch or a
/// sequence it no longer knows. Retrying with the same producer cannot work.
fn lost_producer_id(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// Replaces the producer by a fresh one, with a new producer id, when the
/// old id is no longer usable: after an outage (a restarted broker may have
/// lost the id's state, or a long outage expired it) or when the broker
/// refuses the id (fenced, unknown epoch or sequence, as after librdkafka
/// bumps the epoch of messages that timed out in flight). Messages still
/// queued in the old producer fail when it is dropped, and their waiters
/// spool them: nothing is lost; some may be duplicated (counted in
/// `edge_relay_spool_possible_duplicates_total`).
pub struct Renewal {
    /// The producer's settings.
    client: ClientConfig,
    /// Where the producer lives.
    producer: Arc<ArcSwap<FutureProducer>>,
    /// When it was last renewed, to renew at most once per [`RENEW_EVERY`].
    last: std::sync::Mutex<Option<Instant>>,
    /// Where a fresh producer counts its global errors.
    errors: prometheus::IntCounterVec,
}

/// The shortest time between two renewals.
const RENEW_EVERY: Duration = Duration::from_secs(5);

impl Renewal {
    /// Creates the fresh producer and drops the old one, which blocks while
    /// librdkafka purges its queue: call it from a thread that may block.
    fn renew(&self, why: &str) {
        match self
            .client
            .create_with_context::<_, FutureProducer>(ClientLogs::new(self.errors.clone()))
        {
            Ok(fresh) => {
                *self.last.lock().expect("renewal lock") = Some(Instant::now());
                self.producer.store(Arc::new(fresh));
                tracing::warn!(why, "renewed the Kafka producer (a fresh producer id)");
            }
            Err(e) => tracing::error!(error = %e, "cannot renew the Kafka producer"),
        }
    }

    /// Renews on a thread of its own, unless it was renewed within [`RENEW_EVERY`].
    fn renew_soon(self: &Arc<Self>, error: &KafkaError) {
        {
            let mut last = self.last.lock().expect("renewal lock");
            if last.is_some_and(|t| t.elapsed() < RENEW_EVERY) {
                return;
            }
            // Claim this renewal, so that concurrent failures do not start more.
            *last = Some(Instant::now());
        }
        let renewal = self.clone();
        let why = error.to_string();
        let _ = std::thread::Builder::new()
            .name("kafka-renew".into())
            .spawn(move || renewal.renew(&why));
    }
}

/// Records handed to librdkafka, waiting for their acknowledgements.
pub struct Pending {
    /// One per record: its delivery, or why it was not enqueued.
    futures: Vec<Result<rdkafka::producer::DeliveryFuture, ProduceError>>,
    /// When they were enqueued, for the latency histogram.
    started: Instant,
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The flags the health thread shares with the sink.
#[derive(Clone)]
struct Health {
    up: Arc<AtomicBool>,
    fatal: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Asks the brokers for metadata every `interval` on a thread of its own (the
/// call blocks) and records whether they answered, and whether the producer
/// has failed fatally, and logs when the brokers go and come back (and when
/// they were unreachable from the start). When the brokers answer again
/// after an outage, the producer is renewed before `up` is set (see
/// [`Renewal`]).
fn spawn_health_check(
    brokers: String,
    producer: Arc<ArcSwap<FutureProducer>>,
    renewal: Arc<Renewal>,
    interval: Duration,
    health: Health,
    metrics: Metrics,
) {
    std::thread::Builder::new()
        .name("kafka-health".into())
        .spawn(move || {
            let timeout = interval.max(Duration::from_secs(2));
            // One slow answer on a busy cluster must not turn every request into a 503:
            // down after this many failed checks in a row, up after one success.
            const FAILURES_TO_DOWN: u32 = 3;
            let mut failures = 0u32;
            let mut was_ever_up = false;
            while !health.stop.load(Ordering::Relaxed) {
                let current = producer.load_full();
                if let Some((code, reason)) = current.client().fatal_error() {
                    if !health.fatal.swap(true, Ordering::Relaxed) {
                        tracing::error!(?code, %reason, "the Kafka producer failed fatally; restart the relay");
                    }
                }
                let answered = current.client().fetch_metadata(None, timeout).is_ok();
                drop(current);
                failures = if answered { 0 } else { failures.saturating_add(1) };
                let was = health.up.load(Ordering::Relaxed);
                let ok = answered || (was && failures < FAILURES_TO_DOWN);
                let renew = ok && !was && was_ever_up;
                if renew {
                    // Before `up` is set, so that new work goes to the fresh producer.
                    renewal.renew("the brokers are back after an outage");
                }
                was_ever_up |= ok;
                health.up.store(ok, Ordering::Relaxed);
                metrics.kafka_up.set(i64::from(ok));
                // Said when they go, and when they were never there: at
                // start, once as many checks have failed as take them down.
                if ok && !was {
                    tracing::info!("kafka brokers are reachable");
                } else if !ok && (was || (!was_ever_up && failures == FAILURES_TO_DOWN)) {
                    tracing::warn!(brokers = %brokers, "kafka brokers are unreachable; new items go to the spool until they return");
                }
                // Sleep in short steps so a dropped sink stops its thread promptly.
                let until = Instant::now() + interval;
                while Instant::now() < until && !health.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(interval));
                }
            }
        })
        .expect("the OS can start one more thread at startup");
}
