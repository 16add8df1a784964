//! Delivers accepted items as the ack mode promises (straight to Kafka,
//! through the on-disk spool, or queued in memory), replays the spool once
//! Kafka takes work again, and bounds the bytes in flight so that load is
//! shed early rather than queued without limit.
//!
//! What a 200 means, per `delivery.ack`:
//! - `kafka`: the broker acknowledged the item (`acks=all`), or, when Kafka
//!   is unreachable, failing, or did not acknowledge within
//!   `kafka.delivery_timeout`, the item is on disk in the spool (fsynced).
//! - `spool`: the item is on disk in the spool (fsynced); a replay task
//!   produces it and removes it after the broker's ack.
//! - `memory`: the item is in librdkafka's queue. A failed delivery goes to
//!   the spool; a crash or `kill -9` loses what is queued.
//!
//! The relay's view of Kafka has three states: `up` (the brokers answer and
//! deliveries succeed), `degraded` (the brokers answer but a delivery failed
//! and no replay has succeeded since) and `down` (the brokers do not answer
//! the health check). Outside `up`, new items go to the spool, and only the
//! replay task talks to Kafka: its first acknowledged batch brings `up` back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

use crate::config::{AckMode, DeliveryConfig, Output};
use crate::held::Held;
use crate::metrics::Metrics;
use crate::produce::{ProduceError, Producer, Record, StartError};
use crate::spool::{Announced, OpenError, Spool, SpoolError};

/// The relay's view of Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaState {
    /// The brokers answer and deliveries succeed.
    Up,
    /// The brokers answer, but a delivery failed and no replay has succeeded since.
    Degraded,
    /// The brokers do not answer the health check.
    Down,
}

impl KafkaState {
    /// The label value and the word `/readyz` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaState::Up => "up",
            KafkaState::Degraded => "degraded",
            KafkaState::Down => "down",
        }
    }
}

/// Why an item was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Kafka could not take it and the spool is full.
    #[error("kafka could not take the item and the spool is full")]
    SpoolFull,
    /// The spool failed (disk error) or is closed.
    #[error(transparent)]
    Spool(SpoolError),
    /// The producer failed and there is no spool (the file sink).
    #[error(transparent)]
    Produce(#[from] ProduceError),
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryStartError {
    /// The producer could not be created.
    #[error(transparent)]
    Producer(#[from] StartError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] OpenError),
}

/// The delivery stage: the producer, the spool, and the in-flight bound.
pub struct Delivery {
    /// When the SDK gets its 200.
    mode: AckMode,
    /// Kafka or the file sink; shared with the replay task and memory-mode waiters.
    producer: Arc<Producer>,
    /// Only with Kafka: the file sink is its own durable local write.
    spool: Option<Spool>,
    /// Set when a delivery fails while the brokers still answer; cleared by a
    /// replay batch the broker acknowledged.
    degraded: Arc<AtomicBool>,
    /// Bytes of accepted items waiting for an ack or a spool write.
    in_flight: Arc<AtomicUsize>,
    /// Spool mode: bytes of spooled items being delivered straight from
    /// memory, bounded by `max_in_flight` on their own (past it, the replay
    /// delivers new items from the disk instead).
    direct: Arc<AtomicUsize>,
    /// `delivery.max_in_flight`.
    max_in_flight: usize,
    /// `spool.max_size`, for readiness.
    spool_max_size: u64,
    /// Items per replay batch.
    replay_batch: usize,
    /// Memory-mode deliveries still waiting for their acks, so that the stop
    /// sequence can wait for them to land in Kafka or the spool.
    background: Arc<(AtomicUsize, Notify)>,
    /// Spool and state gauges, and the spool counters. In an `Arc`: each
    /// request's acknowledgement task takes a copy, and a `Metrics` clone
    /// counts up some forty handles (about 0.7 µs a request in profiles).
    metrics: Arc<Metrics>,
}

impl Delivery {
    /// Opens the output and, with Kafka, the spool.
    pub fn open(
        output: &Output,
        config: &DeliveryConfig,
        metrics: &Metrics,
    ) -> Result<Delivery, DeliveryStartError> {
        let producer = Producer::open(output, metrics)?;
        let spool = match output {
            Output::Kafka(_) => Some(Spool::open(
                &config.spool_path,
                config.spool_max_size,
                config.spool_commit_delays,
                config.spool_direct_io,
            )?),
            Output::File(_) => None,
        };
        for state in ["up", "degraded", "down"] {
            metrics.kafka_state.with_label_values(&[state]).set(0);
        }
        for cause in ["ack_spool", "kafka_unavailable", "delivery_failed"] {
            metrics.spool_written.with_label_values(&[cause]);
        }
        if let Some(spool) = &spool {
            metrics.spool_corrupt.inc_by(spool.damaged_at_open());
            let flushes = metrics.spool_flush_duration.clone();
            spool.on_flush(move |took| flushes.observe(took.as_secs_f64()));
        }
        let delivery = Delivery {
            mode: config.ack,
            producer: Arc::new(producer),
            spool,
            degraded: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            direct: Arc::new(AtomicUsize::new(0)),
            max_in_flight: config.max_in_flight,
            spool_max_size: config.spool_max_size,
            replay_batch: config.replay_batch.get(),
            background: Arc::new((AtomicUsize::new(0), Notify::new())),
            metrics: Arc::new(metrics.clone()),
        };
        delivery.refresh_gauges();
        Ok(delivery)
    }

    /// The producer, for topics, the outcome records, flushing and health.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The spool, when there is one.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    /// The ack mode.
    pub fn mode(&self) -> AckMode {
        self.mode
    }

    /// The relay's view of Kafka (always `up` for the file sink).
    pub fn kafka_state(&self) -> KafkaState {
        match &*self.producer {
            Producer::File(_) => KafkaState::Up,
            Producer::Kafka(k) if !k.is_up() => KafkaState::Down,
            Producer::Kafka(_) if self.degraded.load(Ordering::Relaxed) => KafkaState::Degraded,
            Producer::Kafka(_) => KafkaState::Up,
        }
    }

    /// For a request that may deliver: in `spool` mode, tells the spool
    /// that its append is on the way (see [`Spool::announce`]); hand it to
    /// [`deliver`](Self::deliver).
    pub fn announce(&self) -> Option<Announced> {
        self.spool_first().map(|(_, spool)| spool.announce())
    }

    /// `ack = "spool"` with Kafka: every item is spooled before its answer,
    /// then delivered. The one place that says which deliveries take that
    /// path, for [`announce`](Self::announce) and [`deliver`](Self::deliver).
    fn spool_first(&self) -> Option<(&crate::produce::kafka::KafkaSink, &Spool)> {
        match (&*self.producer, &self.spool, self.mode) {
            (Producer::Kafka(kafka), Some(spool), AckMode::Spool) => Some((kafka, spool)),
            _ => None,
        }
    }

    /// Whether new work should be refused before its body is read: too many
    /// bytes are waiting for an ack or a spool write.
    pub fn overloaded(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight
    }

    /// Why the relay cannot take work now, for `/readyz`; `None` when it
    /// can. It can when its output's writes are not failing and, with
    /// Kafka, when Kafka is up or the spool takes what Kafka cannot (in
    /// `spool` mode, the spool takes everything, Kafka up or not).
    pub fn refusal(&self) -> Option<String> {
        if self.producer.is_failed() {
            return Some("kafka producer failed".into());
        }
        if let Producer::File(sink) = &*self.producer {
            return sink
                .failing()
                .map(|e| format!("file sink writes failing: {e}"));
        }
        let kafka_up = self.kafka_state() == KafkaState::Up;
        if kafka_up && self.mode != AckMode::Spool {
            return None;
        }
        let Some(spool) = &self.spool else {
            return Some("kafka unavailable".into());
        };
        let and = if kafka_up {
            ""
        } else {
            "kafka unavailable and "
        };
        if let Some(e) = spool.failing() {
            return Some(format!("{and}spool writes failing: {e}"));
        }
        spool.is_full().then(|| format!("{and}the spool is full"))
    }

    /// Items the spool holds, not delivered yet (0 without a spool): at the
    /// end of the stop sequence, what the next start will deliver.
    pub fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, |spool| spool.usage().items)
    }

    /// Updates the spool and state gauges.
    pub fn refresh_gauges(&self) {
        let state = self.kafka_state();
        for s in [KafkaState::Up, KafkaState::Degraded, KafkaState::Down] {
            self.metrics
                .kafka_state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == state));
        }
        if let Some(spool) = &self.spool {
            let usage = spool.usage();
            self.metrics
                .spool_bytes
                .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
            self.metrics
                .spool_items
                .set(i64::try_from(usage.items).unwrap_or(i64::MAX));
            self.metrics
                .spool_max_bytes
                .set(i64::try_from(self.spool_max_size).unwrap_or(i64::MAX));
            // Owned items are being delivered from memory: young, and not waiting.
            if spool.replayable() == 0 {
                self.metrics.spool_oldest_age.set(0.0);
            }
        }
    }

    /// Delivers the records as the ack mode promises; one result per record,
    /// in order. `Ok` means the SDK may be told 200. `announced` is what
    /// [`announce`](Self::announce) gave for this delivery.
    pub async fn deliver(
        &self,
        records: Vec<Record>,
        announced: Option<Announced>,
    ) -> Vec<Result<(), DeliverError>> {
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        let in_flight = Held::new(&self.in_flight, bytes, Some(&self.metrics.in_flight_bytes));
        if let Some((kafka, spool)) = self.spool_first() {
            return self
                .spool_then_deliver(kafka, spool, records, in_flight, announced)
                .await;
        }
        let (Producer::Kafka(kafka), Some(spool)) = (&*self.producer, &self.spool) else {
            let results = self.producer.send(&records).await;
            return results
                .into_iter()
                .map(|r| r.map_err(DeliverError::Produce))
                .collect();
        };
        if self.kafka_state() != KafkaState::Up {
            return self.spool_all(spool, &records, "kafka_unavailable").await;
        }
        match self.mode {
            AckMode::Memory => {
                let pending = kafka.enqueue(&records);
                let n = records.len();
                self.in_background(records, pending, in_flight);
                (0..n).map(|_| Ok(())).collect()
            }
            _ => {
                // Borrowed: the records stay here for the spool should delivery fail.
                let results = kafka.send(&records).await;
                let mut out: Vec<Result<(), DeliverError>> = Vec::with_capacity(records.len());
                let mut failed = Vec::new();
                for (record, result) in records.into_iter().zip(results) {
                    match result {
                        Ok(()) => out.push(Ok(())),
                        // Kafka refuses it for good: the spool cannot help.
                        Err(e) if e.is_too_large() => out.push(Err(DeliverError::Produce(e))),
                        Err(e) => {
                            note_failure(&self.degraded, &self.metrics, &e);
                            failed.push((out.len(), record));
                            out.push(Ok(()));
                        }
                    }
                }
                if !failed.is_empty() {
                    let (slots, failed): (Vec<usize>, Vec<Record>) = failed.into_iter().unzip();
                    let spooled = self.spool_all(spool, &failed, "delivery_failed").await;
                    for (slot, result) in slots.into_iter().zip(spooled) {
                        out[slot] = result;
                    }
                }
                out
            }
        }
    }

    /// Writes the records to the spool: all of them, or none.
    async fn spool_all(
        &self,
        spool: &Spool,
        records: &[Record],
        cause: &str,
    ) -> Vec<Result<(), DeliverError>> {
        per_record(
            spool_records(spool, records, cause, &self.metrics, false, None).await,
            records.len(),
        )
    }

    /// Spool mode: writes the records to the spool and, with Kafka up and
    /// room under the bound, hands them to Kafka from memory at once, so that
    /// the replay need not read them back. They stay in the spool, owned by
    /// this delivery, until acknowledged; what fails is left to the replay.
    async fn spool_then_deliver(
        &self,
        kafka: &crate::produce::kafka::KafkaSink,
        spool: &Spool,
        records: Vec<Record>,
        in_flight: Held,
        announced: Option<Announced>,
    ) -> Vec<Result<(), DeliverError>> {
        let direct = (self.kafka_state() == KafkaState::Up)
            .then(|| Held::within(&self.direct, in_flight.bytes(), self.max_in_flight, None))
            .flatten();
        let n = records.len();
        let written = spool_records(
            spool,
            &records,
            "ack_spool",
            &self.metrics,
            direct.is_some(),
            announced,
        )
        .await;
        // What the SDK was promised is on disk: the request's bytes are no longer in flight.
        drop(in_flight);
        if let (Ok(seqs), Some(direct)) = (&written, direct) {
            let pending = kafka.enqueue(&records);
            drop(records);
            self.deliver_spooled(seqs.clone(), pending, direct);
        }
        per_record(written, n)
    }

    /// Spool mode: waits for the acks of items delivered from memory on a
    /// task of its own, removes what Kafka took, and releases the rest to
    /// the replay.
    fn deliver_spooled(
        &self,
        seqs: std::ops::Range<u64>,
        pending: crate::produce::kafka::Pending,
        direct: Held,
    ) {
        let (degraded, metrics) = (self.degraded.clone(), self.metrics.clone());
        let spool = self.spool.clone().expect("spool mode has a spool");
        self.await_acks(pending, move |results| async move {
            let _direct = direct;
            let (_, failed) = settle(&spool, &metrics, seqs, results, Vec::new());
            for (_, e) in &failed {
                note_failure(&degraded, &metrics, e);
            }
            spool.release(&failed.iter().map(|(seq, _)| *seq).collect::<Vec<_>>());
        });
    }

    /// Waits for the acks of `pending` on a task of its own, then hands them
    /// to `then`; counted, so that the stop sequence can wait for it.
    fn await_acks<F, Fut>(&self, pending: crate::produce::kafka::Pending, then: F)
    where
        F: FnOnce(Vec<Result<(), ProduceError>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let producer = self.producer.clone();
        let background = self.background.clone();
        background.0.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let Producer::Kafka(kafka) = &*producer else {
                unreachable!("only a Kafka producer hands out pending deliveries")
            };
            then(kafka.acknowledged(pending).await).await;
            if background.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                background.1.notify_waiters();
            }
        });
    }

    /// Memory mode: waits for the acks on a task of its own; what fails goes to the spool.
    fn in_background(
        &self,
        records: Vec<Record>,
        pending: crate::produce::kafka::Pending,
        in_flight: Held,
    ) {
        let spool = self.spool.clone();
        let degraded = self.degraded.clone();
        let metrics = self.metrics.clone();
        self.await_acks(pending, move |results| async move {
            let _in_flight = in_flight;
            let mut too_large = 0;
            let failed: Vec<Record> = records
                .into_iter()
                .zip(results)
                .filter_map(|(record, result)| match result {
                    Ok(()) => None,
                    Err(e) if e.is_too_large() => {
                        too_large += 1;
                        None
                    }
                    Err(e) => {
                        note_failure(&degraded, &metrics, &e);
                        Some(record)
                    }
                })
                .collect();
            if too_large > 0 {
                metrics.delivery_lost.inc_by(too_large);
                tracing::error!(
                    items = too_large,
                    "items answered 200 (ack = memory) are larger than Kafka takes; lost"
                );
            }
            if !failed.is_empty() {
                let spooled = match &spool {
                    Some(spool) => {
                        spool_records(spool, &failed, "delivery_failed", &metrics, false, None)
                            .await
                    }
                    None => Err(SpoolError::Closed),
                };
                let lost = if spooled.is_ok() { 0 } else { failed.len() };
                if lost > 0 {
                    metrics.delivery_lost.inc_by(lost as u64);
                    tracing::error!(
                        items = lost,
                        "items answered 200 (ack = memory) were neither delivered nor spooled"
                    );
                }
            }
        });
    }

    /// The stop sequence: waits up to `timeout` for in-flight messages, then
    /// gives up on the rest, whose memory-mode waiters move them to the spool;
    /// then writes the spool's last removals. Returns how many items were
    /// neither delivered nor spooled.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let left = self.flush_producer(timeout).await;
        if let Some(spool) = &self.spool {
            // Removals not written yet would be replayed after the restart.
            if let Err(e) = spool.sync().await {
                tracing::warn!(error = %e, "cannot write the spool's last removals");
            }
        }
        left
    }

    async fn flush_producer(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = self.producer.flush(timeout).await;
        let Producer::Kafka(kafka) = &*self.producer else {
            return left;
        };
        if self.spool.is_none() {
            return left;
        }
        if matches!(self.mode, AckMode::Memory | AckMode::Spool) {
            // Even with the queue empty, waiters may still be spooling failed
            // items (memory mode) or recording removals (spool mode, whose
            // items are all on disk already).
            if left > 0 {
                kafka.purge();
            }
            // The purged deliveries fail at once; their waiters spool or release them.
            let (count, notify) = &*self.background;
            loop {
                let notified = notify.notified();
                if count.load(Ordering::Acquire) == 0 {
                    return 0;
                }
                if tokio::time::timeout_at(deadline + Duration::from_secs(1), notified)
                    .await
                    .is_err()
                {
                    return match self.mode {
                        AckMode::Spool => 0,
                        _ => count.load(Ordering::Acquire),
                    };
                }
            }
        }
        // In `kafka` mode every message still queued belongs to a request or
        // a replay batch that is waiting for it and spools it on failure.
        left
    }

    /// Replays the spool into Kafka until `stop` turns true: the oldest items
    /// first, each removed only after the broker's ack. Runs only with a spool.
    pub async fn replay(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let (Some(spool), Producer::Kafka(kafka)) = (self.spool.clone(), &*self.producer) else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            self.refresh_gauges();
            let wait = if spool.replayable() == 0 {
                Some(Duration::from_secs(1))
            } else if !kafka.is_up() {
                Some(Duration::from_millis(200))
            } else {
                None
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = spool.wait_replayable(wait) => {}
                }
                continue;
            }
            let reader = spool.clone();
            let (batch, max_bytes) = (self.replay_batch, 16 << 20);
            let items =
                match tokio::task::spawn_blocking(move || reader.oldest(batch, max_bytes)).await {
                    Ok(Ok(items)) => items,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read the spool");
                        sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool read task failed");
                        continue;
                    }
                };
            if let Some(oldest) = items.iter().map(|s| s.spooled_at_ms).find(|t| *t > 0) {
                let age = now_ms().saturating_sub(oldest) as f64 / 1000.0;
                self.metrics.spool_oldest_age.set(age);
            }
            let mut done = Vec::with_capacity(items.len());
            let mut seqs = Vec::with_capacity(items.len());
            let mut records = Vec::with_capacity(items.len());
            for item in items {
                match item.record {
                    Ok(record) => {
                        seqs.push(item.seq);
                        records.push(record);
                    }
                    Err(why) => {
                        self.metrics.spool_corrupt.inc();
                        tracing::error!(
                            seq = item.seq,
                            why,
                            "a spooled record is damaged; skipped"
                        );
                        done.push(item.seq);
                    }
                }
            }
            // Handed to librdkafka a slice at a time: enqueueing a whole batch
            // (up to `replay_batch` records, megabytes copied) in one poll
            // would hold this runtime thread, and the requests queued on it,
            // for milliseconds.
            let mut pending = Vec::with_capacity(records.len().div_ceil(REPLAY_SLICE));
            for slice in records.chunks(REPLAY_SLICE) {
                pending.push(kafka.enqueue(slice));
                tokio::task::yield_now().await;
            }
            let mut results = Vec::with_capacity(records.len());
            for enqueued in pending {
                results.extend(kafka.acknowledged(enqueued).await);
            }
            let (acked, failed) = settle(&spool, &self.metrics, seqs.into_iter(), results, done);
            if let Some((_, e)) = failed.first() {
                tracing::warn!(error = %e, "replay from the spool failed; will retry");
            }
            if failed.is_empty() {
                // Only a batch the broker acknowledged says Kafka is back.
                if acked > 0 && self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("kafka acknowledged a replay batch; delivering directly again");
                }
                backoff = Duration::from_millis(100);
            } else {
                self.degraded.store(true, Ordering::Relaxed);
                sleep_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Settles spooled items by their delivery results: what Kafka took, and
/// what it refuses for good (larger than it takes: retrying would block the
/// spool forever), is removed from the spool with `done` and counted; what
/// failed is returned with why. Returns how many Kafka took, too.
fn settle(
    spool: &Spool,
    metrics: &Metrics,
    seqs: impl Iterator<Item = u64>,
    results: Vec<Result<(), ProduceError>>,
    mut done: Vec<u64>,
) -> (usize, Vec<(u64, ProduceError)>) {
    let already = done.len();
    let mut failed = Vec::new();
    let mut undeliverable = 0;
    for (seq, result) in seqs.zip(results) {
        match result {
            Ok(()) => done.push(seq),
            Err(e) if e.is_too_large() => {
                undeliverable += 1;
                tracing::error!(seq, error = %e, "a spooled item is larger than Kafka takes; removed");
                done.push(seq);
            }
            Err(e) => failed.push((seq, e)),
        }
    }
    let acked = done.len() - already - undeliverable;
    metrics.spool_undeliverable.inc_by(undeliverable as u64);
    spool.remove(&done);
    metrics.spool_replayed.inc_by(acked as u64);
    (acked, failed)
}

/// Records the replay enqueues between two yields to the runtime.
const REPLAY_SLICE: usize = 32;

/// A failed delivery while the brokers still answer makes the state `degraded`.
fn note_failure(degraded: &AtomicBool, metrics: &Metrics, error: &ProduceError) {
    if !matches!(error, ProduceError::Unavailable) && !degraded.swap(true, Ordering::Relaxed) {
        tracing::warn!(%error, "a delivery failed; new items go to the spool until a replay succeeds");
    }
    if !error.never_sent() {
        // It may have reached the broker before the failure was reported.
        metrics.spool_possible_duplicates.inc();
    }
}

/// Writes the records to the spool, all or none, and counts them by cause;
/// their sequence numbers. With `owned`, the caller delivers them itself.
async fn spool_records(
    spool: &Spool,
    records: &[Record],
    cause: &str,
    metrics: &Metrics,
    owned: bool,
    announced: Option<Announced>,
) -> Result<std::ops::Range<u64>, SpoolError> {
    let seqs = spool.append_announced(records, owned, announced).await?;
    metrics
        .spool_written
        .with_label_values(&[cause])
        .inc_by(records.len() as u64);
    Ok(seqs)
}

/// One answer per record for a spool write of `n` records.
fn per_record(
    written: Result<std::ops::Range<u64>, SpoolError>,
    n: usize,
) -> Vec<Result<(), DeliverError>> {
    (0..n)
        .map(|_| match &written {
            Ok(_) => Ok(()),
            Err(SpoolError::Full) => Err(DeliverError::SpoolFull),
            Err(SpoolError::Storage(e)) => Err(DeliverError::Spool(SpoolError::Storage(e.clone()))),
            Err(SpoolError::Closed) => Err(DeliverError::Spool(SpoolError::Closed)),
        })
        .collect()
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = stop.changed() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
