//! The Prometheus metrics, registered on a registry the caller passes in, so
//! that tests and several relays in one process stay apart.
//!
//! Label values are bounded: projects come from config (anything else is
//! `unknown`), categories and reasons from fixed enums, endpoints from the
//! router, statuses from the few the relay answers with.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::envelope::DataCategory;
use crate::outcome::DropReason;

/// The label for requests and items of projects this relay does not serve.
pub const UNKNOWN_PROJECT: &str = "unknown";

/// The label for drops counted before an envelope's items were known.
pub const ENVELOPE_CATEGORY: &str = "envelope";

/// Every metric the relay exports.
#[derive(Clone)]
pub struct Metrics {
    /// Items produced and acknowledged, by project and category.
    pub items_accepted: IntCounterVec,
    /// Items not forwarded, by project, category and reason.
    pub items_dropped: IntCounterVec,
    /// Requests answered, by endpoint and status code.
    pub requests: IntCounterVec,
    /// Time from the request's arrival to its answer, by endpoint.
    pub request_duration: HistogramVec,
    /// Body bytes, by stage: `wire` as received, `inflated` after decompression.
    pub body_bytes: IntCounterVec,
    /// Requests by `Content-Encoding` (only the supported ones).
    pub request_encodings: IntCounterVec,
    /// Messages handed to the producer and not yet acknowledged or failed.
    pub producer_queue_depth: IntGauge,
    /// Time from handing a record to the producer to its acknowledgement.
    pub produce_duration: Histogram,
    /// 1 when the brokers answered the last health check.
    pub kafka_up: IntGauge,
    /// The relay's view of Kafka: 1 for the current state (up, degraded, down), 0 for the others.
    pub kafka_state: IntGaugeVec,
    /// librdkafka's global errors, by its error code: every one, though
    /// their log lines are held back.
    pub kafka_client_errors: IntCounterVec,
    /// Bytes of items in the spool.
    pub spool_bytes: IntGauge,
    /// `spool.max_size`, so that alerts can say how full the spool is.
    pub spool_max_bytes: IntGauge,
    /// Items in the spool.
    pub spool_items: IntGauge,
    /// Age of the oldest item in the spool, 0 when it is empty.
    pub spool_oldest_age: prometheus::Gauge,
    /// Items written to the spool, by cause.
    pub spool_written: IntCounterVec,
    /// Spooled items acknowledged by Kafka and removed from the spool.
    pub spool_replayed: IntCounter,
    /// Spooled records that failed their checksum or format check: skipped, and lost.
    pub spool_corrupt: IntCounter,
    /// Spooled items Kafka refuses for good (larger than its `message.max.bytes`): removed, lost.
    pub spool_undeliverable: IntCounter,
    /// Items spooled after a failed or timed-out delivery that the broker may
    /// have stored anyway: possible duplicates, with the same event id.
    pub spool_possible_duplicates: IntCounter,
    /// Items answered 200 in `memory` mode whose delivery then failed and that
    /// the spool could not take either.
    pub delivery_lost: IntCounter,
    /// Outcome records neither produced nor spooled at shutdown.
    pub outcomes_lost: IntCounter,
    /// Bytes of accepted items waiting for an ack or a spool write.
    pub in_flight_bytes: IntGauge,
    /// Bytes of request bodies held in memory, from their read until their answer.
    pub body_memory_bytes: IntGauge,
    /// The share of the last sampling interval the runtime's worker threads
    /// spent working (0 to 1): how close the relay is to its CPU limit.
    pub runtime_busy: prometheus::Gauge,
    /// Threads that serve requests (`server.worker_threads`, or one per CPU).
    pub runtime_workers: IntGauge,
    /// The spool writer's commit delay in use, which that share picks.
    pub spool_commit_delay: prometheus::Gauge,
    /// How long each of the spool writer's flushes took (a group's write and
    /// its `fdatasync`).
    pub spool_flush_duration: Histogram,
    /// Connections closed before a request was read, by reason.
    pub connections_refused: IntCounterVec,
    /// 1 while the relay serves, 0 once it is draining or not ready.
    pub ready: IntGauge,
    /// What SDKs report they dropped themselves (client reports), by project, category and reason.
    pub client_discarded: IntCounterVec,
    /// Quota decisions, by project and decision (allowed, limited).
    pub quota_decisions: IntCounterVec,
    /// Sampling decisions, by project and decision (kept, dropped).
    pub sampling_decisions: IntCounterVec,
    /// Redactions, by project and rule.
    pub scrub_redactions: IntCounterVec,
    /// Time spent scrubbing one item.
    pub scrub_duration: Histogram,
    /// Time spent in a pipeline stage, by stage (decompress, parse, quota).
    pub stage_duration: HistogramVec,
    /// Configuration reloads, by result (ok, error).
    pub config_reloads: IntCounterVec,
    /// Undelivered items at the end of a shutdown's grace period.
    pub shutdown_undelivered: IntCounter,
    /// Constant 1, labelled with the version.
    pub build_info: IntGaugeVec,
    /// What every request counts, its labels resolved once.
    pub hot: Hot,
}

/// Series every request touches, their labels resolved once: a labelled
/// lookup hashes the label values and takes a lock each time.
#[derive(Clone)]
pub struct Hot {
    /// `edge_relay_stage_duration_seconds{stage="decompress"}`.
    pub decompress: Histogram,
    /// `edge_relay_stage_duration_seconds{stage="parse"}`.
    pub parse: Histogram,
    /// `edge_relay_stage_duration_seconds{stage="quota"}`.
    pub quota: Histogram,
    /// `edge_relay_body_bytes_total{stage="wire"}`.
    pub wire_bytes: IntCounter,
    /// `edge_relay_body_bytes_total{stage="inflated"}`.
    pub inflated_bytes: IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let body_bytes = IntCounterVec::new(
            Opts::new(
                "edge_relay_body_bytes_total",
                "Request body bytes: wire (as received) and inflated.",
            ),
            &["stage"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "edge_relay_stage_duration_seconds",
                "Time spent in a pipeline stage: decompress and parse per request, quota per item.",
            )
            .buckets(vec![
                0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01,
                0.05, 0.1,
            ]),
            &["stage"],
        )?;
        let hot = Hot {
            decompress: stage_duration.with_label_values(&["decompress"]),
            parse: stage_duration.with_label_values(&["parse"]),
            quota: stage_duration.with_label_values(&["quota"]),
            wire_bytes: body_bytes.with_label_values(&["wire"]),
            inflated_bytes: body_bytes.with_label_values(&["inflated"]),
        };
        let m = Metrics {
            body_bytes,
            stage_duration,
            hot,
            items_accepted: IntCounterVec::new(
                Opts::new(
                    "edge_relay_items_accepted_total",
                    "Items produced and acknowledged.",
                ),
                &["project", "category"],
            )?,
            items_dropped: IntCounterVec::new(
                Opts::new(
                    "edge_relay_items_dropped_total",
                    "Items not forwarded, by reason.",
                ),
                &["project", "category", "reason"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "edge_relay_requests_total",
                    "Requests answered, by endpoint and status.",
                ),
                &["endpoint", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "edge_relay_request_duration_seconds",
                    "Time from a request's arrival to its answer.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["endpoint"],
            )?,
            request_encodings: IntCounterVec::new(
                Opts::new(
                    "edge_relay_request_encodings_total",
                    "Requests by supported Content-Encoding.",
                ),
                &["encoding"],
            )?,
            producer_queue_depth: IntGauge::new(
                "edge_relay_producer_queue_depth",
                "Messages handed to the producer and not yet acknowledged or failed.",
            )?,
            produce_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_relay_produce_duration_seconds",
                    "Time from handing a record to the producer to its acknowledgement.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ]),
            )?,
            kafka_up: IntGauge::new(
                "edge_relay_kafka_up",
                "1 when the brokers answered the last health check.",
            )?,
            kafka_state: IntGaugeVec::new(
                Opts::new(
                    "edge_relay_kafka_state",
                    "The relay's view of Kafka: 1 for the current state (up, degraded, down).",
                ),
                &["state"],
            )?,
            kafka_client_errors: IntCounterVec::new(
                Opts::new(
                    "edge_relay_kafka_client_errors_total",
                    "librdkafka's global errors (a failed connect, all brokers down, ...), by its error code.",
                ),
                &["error"],
            )?,
            spool_bytes: IntGauge::new(
                "edge_relay_spool_bytes",
                "Bytes of items in the on-disk spool.",
            )?,
            spool_max_bytes: IntGauge::new(
                "edge_relay_spool_max_bytes",
                "The most bytes the on-disk spool holds (spool.max_size).",
            )?,
            spool_items: IntGauge::new("edge_relay_spool_items", "Items in the on-disk spool.")?,
            spool_oldest_age: prometheus::Gauge::new(
                "edge_relay_spool_oldest_age_seconds",
                "Age of the oldest item in the spool; 0 when it is empty.",
            )?,
            spool_written: IntCounterVec::new(
                Opts::new(
                    "edge_relay_spool_written_total",
                    "Items written to the spool, by cause: ack_spool (the ack mode), \
                     kafka_unavailable (down or degraded), delivery_failed.",
                ),
                &["cause"],
            )?,
            spool_replayed: IntCounter::new(
                "edge_relay_spool_replayed_total",
                "Spooled items acknowledged by Kafka and removed from the spool: \
                 replayed from the disk, or (spool mode) delivered from memory once on disk.",
            )?,
            spool_corrupt: IntCounter::new(
                "edge_relay_spool_corrupt_total",
                "Spooled records that failed their checksum (skipped and lost), and \
                 segments found damaged at start (the rest of the segment lost).",
            )?,
            spool_undeliverable: IntCounter::new(
                "edge_relay_spool_undeliverable_total",
                "Spooled items Kafka refuses for good (too large): removed from the spool, lost.",
            )?,
            spool_possible_duplicates: IntCounter::new(
                "edge_relay_spool_possible_duplicates_total",
                "Items spooled after a failed delivery the broker may have stored anyway.",
            )?,
            delivery_lost: IntCounter::new(
                "edge_relay_delivery_lost_total",
                "Items answered 200 in memory mode, then neither delivered nor spooled.",
            )?,
            outcomes_lost: IntCounter::new(
                "edge_relay_outcomes_lost_total",
                "Outcome records neither produced nor spooled at shutdown.",
            )?,
            in_flight_bytes: IntGauge::new(
                "edge_relay_in_flight_bytes",
                "Bytes of accepted items waiting for Kafka's ack or a spool write.",
            )?,
            body_memory_bytes: IntGauge::new(
                "edge_relay_body_memory_bytes",
                "Bytes of request bodies held in memory (as received), from their read until \
                 their answer.",
            )?,
            runtime_busy: prometheus::Gauge::new(
                "edge_relay_runtime_busy_ratio",
                "Share of the last 50 ms the request threads spent working (0 to 1); near 1, \
                 the relay is at its CPU limit and the spool batches flushes harder.",
            )?,
            runtime_workers: IntGauge::new(
                "edge_relay_runtime_workers",
                "Threads that serve requests: server.worker_threads, or one per CPU the \
                 relay may use when that is 0.",
            )?,
            spool_commit_delay: prometheus::Gauge::new(
                "edge_relay_spool_commit_delay_seconds",
                "The spool writer's wait for more appends before a flush, now: \
                 spool.commit_delay while the relay is at its CPU limit, else \
                 spool.commit_delay_light.",
            )?,
            spool_flush_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_relay_spool_flush_duration_seconds",
                    "Time the spool writer took to write a group of appends and flush it \
                     (fdatasync): what a spool-mode answer waits for besides the commit delay.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ]),
            )?,
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "edge_relay_connections_refused_total",
                    "Connections closed before a request was read: silent (nothing sent \
                     before header_read_timeout), header_timeout, header_too_large, malformed, \
                     idle (no request for server.idle_timeout).",
                ),
                &["reason"],
            )?,
            ready: IntGauge::new(
                "edge_relay_ready",
                "1 while the relay accepts work (what /readyz reports).",
            )?,
            client_discarded: IntCounterVec::new(
                Opts::new(
                    "edge_relay_client_discarded_total",
                    "Items SDKs report they dropped themselves (client reports).",
                ),
                &["project", "category", "reason"],
            )?,
            quota_decisions: IntCounterVec::new(
                Opts::new(
                    "edge_relay_quota_decisions_total",
                    "Quota checks, by decision (allowed, limited).",
                ),
                &["project", "decision"],
            )?,
            sampling_decisions: IntCounterVec::new(
                Opts::new(
                    "edge_relay_sampling_decisions_total",
                    "Sampling decisions, by decision (kept, dropped).",
                ),
                &["project", "decision"],
            )?,
            scrub_redactions: IntCounterVec::new(
                Opts::new(
                    "edge_relay_scrub_redactions_total",
                    "Values redacted by the PII scrubber, by rule.",
                ),
                &["project", "rule"],
            )?,
            scrub_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_relay_scrub_duration_seconds",
                    "Time spent scrubbing one item.",
                )
                .buckets(vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025,
                    0.005, 0.01, 0.05,
                ]),
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "edge_relay_config_reloads_total",
                    "Configuration reloads, by result (ok, error).",
                ),
                &["result"],
            )?,
            shutdown_undelivered: IntCounter::new(
                "edge_relay_shutdown_undelivered_total",
                "Items still undelivered when a shutdown's grace period ended.",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "edge_relay_build_info",
                    "Constant 1, labelled with the relay's version.",
                ),
                &["version"],
            )?,
        };
        for collector in m.collectors() {
            registry.register(collector)?;
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in [
            "silent",
            "header_timeout",
            "header_too_large",
            "malformed",
            "idle",
        ] {
            m.connections_refused.with_label_values(&[reason]);
        }
        // At 0 from the start: `increase()` over a series that appears at 1
        // sees no increase, and the reload alert would miss the first failure.
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Every metric, once: what is registered, and what dashboards may name.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.items_accepted.clone()),
            Box::new(self.items_dropped.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.body_bytes.clone()),
            Box::new(self.request_encodings.clone()),
            Box::new(self.producer_queue_depth.clone()),
            Box::new(self.produce_duration.clone()),
            Box::new(self.kafka_up.clone()),
            Box::new(self.kafka_state.clone()),
            Box::new(self.kafka_client_errors.clone()),
            Box::new(self.spool_bytes.clone()),
            Box::new(self.spool_max_bytes.clone()),
            Box::new(self.spool_items.clone()),
            Box::new(self.spool_oldest_age.clone()),
            Box::new(self.spool_written.clone()),
            Box::new(self.spool_replayed.clone()),
            Box::new(self.spool_corrupt.clone()),
            Box::new(self.spool_undeliverable.clone()),
            Box::new(self.spool_possible_duplicates.clone()),
            Box::new(self.delivery_lost.clone()),
            Box::new(self.outcomes_lost.clone()),
            Box::new(self.in_flight_bytes.clone()),
            Box::new(self.body_memory_bytes.clone()),
            Box::new(self.runtime_busy.clone()),
            Box::new(self.runtime_workers.clone()),
            Box::new(self.spool_commit_delay.clone()),
            Box::new(self.spool_flush_duration.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.client_discarded.clone()),
            Box::new(self.quota_decisions.clone()),
            Box::new(self.sampling_decisions.clone()),
            Box::new(self.scrub_redactions.clone()),
            Box::new(self.scrub_duration.clone()),
            Box::new(self.stage_duration.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.shutdown_undelivered.clone()),
            Box::new(self.build_info.clone()),
        ]
    }

    /// The name of every series the relay exports; histograms (their help
    /// starts with "Time") also with their `_bucket`, `_sum` and `_count` series.
    pub fn series_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for collector in self.collectors() {
            for desc in collector.desc() {
                if desc.help.starts_with("Time ") {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{}{suffix}", desc.fq_name));
                    }
                }
                names.push(desc.fq_name.clone());
            }
        }
        names
    }

    /// Counts `n` dropped items of one category (or [`ENVELOPE_CATEGORY`]).
    pub fn dropped(&self, project: &str, category: &str, reason: DropReason, n: u64) {
        self.items_dropped
            .with_label_values(&[project, category, reason.as_str()])
            .inc_by(n);
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding metrics into memory cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// The discard reasons SDKs report in client reports; anything else is `other`,
/// so an SDK cannot grow the label set.
pub fn client_discard_reason(reason: &str) -> &'static str {
    const KNOWN: [&str; 16] = [
        // What older SDKs report in the legacy lists (`rate_limited_events`,
        // `filtered_events`, `filtered_sampling_events`).
        "rate_limited",
        "filtered",
        "filtered_sampling",
        "queue_overflow",
        "cache_overflow",
        "buffer_overflow",
        "ratelimit_backoff",
        "network_error",
        "sample_rate",
        "before_send",
        "event_processor",
        "send_error",
        "internal_sdk_error",
        "insufficient_data",
        "backpressure",
        "ignored",
    ];
    KNOWN.into_iter().find(|k| *k == reason).unwrap_or("other")
}

/// A client report's category name as a bounded label.
pub fn client_discard_category(category: &str) -> &'static str {
    // Sentry's categories that are not item categories here, or count
    // something else (bytes of logs, profile chunks, seconds of profiling):
    // kept apart, never added to an item count of another unit.
    const OWN: [&str; 8] = [
        "log_byte",
        "profile_chunk",
        "profile_chunk_ui",
        "profile_duration",
        "profile_duration_ui",
        "metric_bucket",
        "security",
        "monitor_seat",
    ];
    match category {
        // SDKs name some categories differently from envelope item types.
        "log" => "log_item",
        "replay_video" => "replay",
        "span_indexed" => "span",
        "transaction_indexed" => "transaction",
        "user_report_v2" => "feedback",
        other => OWN
            .into_iter()
            .find(|own| *own == other)
            .or_else(|| DataCategory::from_name(other).map(DataCategory::as_str))
            .unwrap_or("other"),
    }
}
