//! The fate of every item: accepted, or dropped with one reason from one enum.

use hyper::StatusCode;
use tracing::Level;

/// What happened to one item. Every item the relay receives ends in exactly
/// one of these, and each is counted exactly once in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Produced to Kafka (or the file sink) and acknowledged.
    Accepted,
    /// Not forwarded, for this reason.
    Dropped(DropReason),
}

/// Why an item was not forwarded. The same value labels the
/// `edge_relay_items_dropped_total` metric, picks the HTTP status of the
/// answer and picks the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// No key, an unknown key, or a key of another project.
    Unauthorized,
    /// Malformed input: bad envelope, bad JSON, bad compression.
    Invalid,
    /// Over a size or count limit.
    TooLarge,
    /// Removed by an inbound filter.
    Filtered,
    /// Over a quota.
    RateLimited,
    /// Removed by sampling.
    Sampled,
    /// The local spool is full.
    SpoolFull,
    /// Refused before its body was read: too much accepted work is waiting
    /// for Kafka or the spool (`delivery.max_in_flight`).
    Overloaded,
    /// Kafka did not acknowledge the item (unreachable, timed out, refused).
    KafkaError,
    /// A bug or an unexpected failure inside the relay.
    Internal,
    /// Sent to a Sentry endpoint the relay does not take (minidump, unreal,
    /// security reports, OTLP): refused whole.
    Unsupported,
}

impl DropReason {
    /// Every reason, for pre-registering metric label values and for docs.
    pub const ALL: [DropReason; 11] = [
        DropReason::Unauthorized,
        DropReason::Invalid,
        DropReason::TooLarge,
        DropReason::Filtered,
        DropReason::RateLimited,
        DropReason::Sampled,
        DropReason::SpoolFull,
        DropReason::Overloaded,
        DropReason::KafkaError,
        DropReason::Internal,
        DropReason::Unsupported,
    ];

    /// The metric label value and the name operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unauthorized => "unauthorized",
            DropReason::Invalid => "invalid",
            DropReason::TooLarge => "too_large",
            DropReason::Filtered => "filtered",
            DropReason::RateLimited => "rate_limited",
            DropReason::Sampled => "sampled",
            DropReason::SpoolFull => "spool_full",
            DropReason::Overloaded => "overloaded",
            DropReason::KafkaError => "kafka_error",
            DropReason::Internal => "internal",
            DropReason::Unsupported => "unsupported",
        }
    }

    /// The HTTP status an answer gets when this is why its items were dropped.
    /// Authentication picks between 401 and 403 itself, so this is its default.
    pub fn status(self) -> StatusCode {
        match self {
            DropReason::Unauthorized => StatusCode::FORBIDDEN,
            DropReason::Invalid => StatusCode::BAD_REQUEST,
            DropReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // Filtered and sampled items were handled as the operator asked: the
            // SDK must not retry them, so they do not turn the answer into an error.
            DropReason::Filtered | DropReason::Sampled => StatusCode::OK,
            DropReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            DropReason::SpoolFull | DropReason::Overloaded | DropReason::KafkaError => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DropReason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            DropReason::Unsupported => StatusCode::NOT_FOUND,
        }
    }

    /// How loudly a drop is logged: client mistakes are debug noise, the
    /// relay's own trouble is a warning or an error.
    pub fn log_level(self) -> Level {
        match self {
            DropReason::Unauthorized
            | DropReason::Invalid
            | DropReason::TooLarge
            | DropReason::Filtered
            | DropReason::RateLimited
            | DropReason::Sampled
            | DropReason::Unsupported => Level::DEBUG,
            // Shedding happens thousands of times a second under overload: a
            // warning per request would flood the log; the counter tells.
            DropReason::Overloaded => Level::DEBUG,
            DropReason::SpoolFull | DropReason::KafkaError => Level::WARN,
            DropReason::Internal => Level::ERROR,
        }
    }

    /// When items of one envelope are dropped for different reasons, the answer
    /// reports the one the SDK must act on first: a retryable failure beats a
    /// rate limit, which beats a client error.
    pub fn precedence(self) -> u8 {
        match self {
            DropReason::Internal => 10,
            DropReason::KafkaError => 9,
            DropReason::SpoolFull => 8,
            DropReason::Overloaded => 7,
            DropReason::RateLimited => 6,
            DropReason::TooLarge => 5,
            DropReason::Invalid | DropReason::Unsupported => 4,
            DropReason::Unauthorized => 3,
            DropReason::Filtered => 2,
            DropReason::Sampled => 1,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_documented_names() {
        let names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "unauthorized",
                "invalid",
                "too_large",
                "filtered",
                "rate_limited",
                "sampled",
                "spool_full",
                "overloaded",
                "kafka_error",
                "internal",
                "unsupported"
            ]
        );
    }

    #[test]
    fn retryable_failures_win_over_client_errors() {
        assert!(DropReason::KafkaError.precedence() > DropReason::Invalid.precedence());
        assert!(DropReason::RateLimited.precedence() > DropReason::TooLarge.precedence());
        assert_eq!(
            DropReason::KafkaError.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(DropReason::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}

/// Outcome counts aggregated per time window, drained into records for the
/// outcomes topic. Its keys are bounded like the metric labels: configured
/// projects (or none), their keys, fixed categories, outcomes and reasons.
pub struct Aggregator {
    /// The window length, in whole seconds.
    window_secs: u64,
    /// Counts by window and dimensions.
    counts: std::sync::Mutex<std::collections::HashMap<OutcomeKey, u64>>,
}

/// The dimensions of one aggregated record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutcomeKey {
    /// Start of the window, Unix seconds.
    pub window_start: u64,
    /// The project, when known.
    pub project_id: Option<u64>,
    /// The public key, when known.
    pub key_id: Option<String>,
    /// The category label (or `envelope`).
    pub category: &'static str,
    /// Accepted or dropped with a reason.
    pub outcome: Outcome,
}

/// One record of the outcomes topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutcomeRecord {
    /// Start of the window, RFC 3339.
    pub timestamp: String,
    /// The project, when known.
    pub project_id: Option<u64>,
    /// The public key, when known.
    pub key_id: Option<String>,
    /// `accepted` or `dropped`.
    pub outcome: String,
    /// The drop reason; none when accepted.
    pub reason: Option<String>,
    /// The data category.
    pub category: String,
    /// How many items.
    pub quantity: u64,
}

impl Aggregator {
    /// An aggregator with windows of `window` (at least one second).
    pub fn new(window: std::time::Duration) -> Aggregator {
        Aggregator {
            window_secs: window.as_secs().max(1),
            counts: Default::default(),
        }
    }

    /// Adds `n` items with this outcome at `now`.
    pub fn add(&self, now: std::time::SystemTime, key: OutcomeKeyParts<'_>, n: u64) {
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let k = OutcomeKey {
            window_start: secs - secs % self.window_secs,
            project_id: key.project_id,
            key_id: key.key_id.map(str::to_owned),
            category: key.category,
            outcome: key.outcome,
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(k).or_insert(0) += n;
    }

    /// Takes the records of windows that closed before `now` (all of them when `all`).
    pub fn drain(&self, now: std::time::SystemTime, all: bool) -> Vec<(OutcomeKey, u64)> {
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let current = secs - secs % self.window_secs;
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let closed: Vec<OutcomeKey> = counts
            .keys()
            .filter(|k| all || k.window_start < current)
            .cloned()
            .collect();
        closed
            .into_iter()
            .filter_map(|k| counts.remove(&k).map(|n| (k, n)))
            .collect()
    }

    /// Puts counts back (their record could not be produced; retried next time).
    pub fn restore(&self, entries: Vec<(OutcomeKey, u64)>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (k, n) in entries {
            *counts.entry(k).or_insert(0) += n;
        }
    }
}

/// What one count is about.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeKeyParts<'a> {
    /// The project, when known.
    pub project_id: Option<u64>,
    /// The public key, when known.
    pub key_id: Option<&'a str>,
    /// The category label.
    pub category: &'static str,
    /// The outcome.
    pub outcome: Outcome,
}

impl OutcomeKey {
    /// The record for the outcomes topic.
    pub fn record(&self, quantity: u64) -> OutcomeRecord {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.window_start);
        let (outcome, reason) = match self.outcome {
            Outcome::Accepted => ("accepted", None),
            Outcome::Dropped(r) => ("dropped", Some(r.as_str().to_owned())),
        };
        OutcomeRecord {
            timestamp: humantime::format_rfc3339_seconds(at).to_string(),
            project_id: self.project_id,
            key_id: self.key_id.clone(),
            outcome: outcome.into(),
            reason,
            category: self.category.into(),
            quantity,
        }
    }
}

#[cfg(test)]
mod aggregator_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn counts_aggregate_per_window_and_drain_when_closed() {
        let agg = Aggregator::new(Duration::from_secs(60));
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let parts = |outcome| OutcomeKeyParts {
            project_id: Some(42),
            key_id: Some("k"),
            category: "error",
            outcome,
        };
        agg.add(t(120), parts(Outcome::Accepted), 1);
        agg.add(t(150), parts(Outcome::Accepted), 2);
        agg.add(t(150), parts(Outcome::Dropped(DropReason::Invalid)), 1);
        agg.add(t(185), parts(Outcome::Accepted), 5);
        assert!(
            agg.drain(t(179), false).is_empty(),
            "the window is still open"
        );
        let mut drained = agg.drain(t(181), false);
        drained.sort_by_key(|(_, n)| *n);
        assert_eq!(drained.len(), 2);
        assert_eq!(drained[1].0.record(drained[1].1).quantity, 3);
        assert_eq!(drained[1].0.record(3).timestamp, "1970-01-01T00:02:00Z");
        assert_eq!(drained[0].0.record(1).reason.as_deref(), Some("invalid"));
        agg.restore(drained);
        assert_eq!(
            agg.drain(t(181), true).len(),
            3,
            "restored, plus the open window when draining all"
        );
    }
}
