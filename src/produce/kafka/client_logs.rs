//! librdkafka's own log lines and global errors, throttled.
//!
//! While the brokers are down, librdkafka reports "all brokers are down"
//! each time it retries, and failed connects too (those it folds itself
//! when they repeat, saying how many it suppressed): tens of lines a
//! second at `ERROR` (about 1 100 in 40 s against one closed port, before
//! this), for as long as the outage lasts. They say nothing new after the
//! first, and the relay's own line already says the brokers are
//! unreachable (and `edge_relay_kafka_up`, `/readyz`). So each kind of
//! line (a log line's level and facility, a global error's code) is
//! written at most once per [`EVERY`], the first at once; the next one
//! written says how many like it were held back (`unlogged`). What was
//! held back after the last line of a kind is not reported (the counter
//! has the errors). Every global error is counted
//! (`edge_relay_kafka_client_errors_total`, by its code), held back or not.
//!
//! Not [`crate::pipeline::DropLogs`]: its kinds are the drop reasons, known
//! in advance and counted on every request without a lock. These are
//! librdkafka's, rare, and named by it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// The least time between two lines of one kind.
const EVERY: Duration = Duration::from_secs(30);

/// Most kinds remembered; past it they are forgotten (all at once), which
/// at worst lets one more line of each through. librdkafka has some tens.
const MAX_KINDS: usize = 256;

/// The producer's context: its log lines and global errors go to
/// `tracing`, throttled per kind, and its global errors are counted.
pub struct ClientLogs {
    throttle: Throttle,
    /// `edge_relay_kafka_client_errors_total`.
    errors: IntCounterVec,
}

impl ClientLogs {
    /// Counts global errors in `errors` (labelled by `error`).
    pub fn new(errors: IntCounterVec) -> ClientLogs {
        ClientLogs {
            throttle: Throttle::default(),
            errors,
        }
    }
}

impl ClientContext for ClientLogs {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Debug lines are off unless asked for (`debug` in `[kafka.producer]`):
        // then every one is wanted.
        if matches!(level, RDKafkaLogLevel::Debug) {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            return;
        }
        let kind = format!("log {level:?} {fac}");
        let Some(unlogged) = self.throttle.admit(&kind, Instant::now()) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", unlogged, "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", unlogged, "librdkafka: {fac} {log_message}")
            }
            _ => tracing::info!(target: "librdkafka", unlogged, "librdkafka: {fac} {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Global errors carry librdkafka's code (a bounded set of names);
        // one without would be counted as `Other`.
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "Other".to_owned(), |code| format!("{code:?}"));
        self.errors.with_label_values(&[&code]).inc();
        if let Some(unlogged) = self
            .throttle
            .admit(&format!("error {code}"), Instant::now())
        {
            tracing::error!(target: "librdkafka", unlogged, "librdkafka: {error}: {reason}");
        }
    }
}

/// When each kind may be written next, and how many were held back since
/// the last line of it.
#[derive(Default)]
struct Throttle {
    kinds: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    /// Whether a line of `kind` may be written at `now`: `Some` with how
    /// many were held back since the last one, or `None` (and it is counted).
    fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().expect("client logs lock");
        if let Some((next, unlogged)) = kinds.get_mut(kind) {
            if now < *next {
                *unlogged += 1;
                return None;
            }
            *next = now + EVERY;
            return Some(std::mem::take(unlogged));
        }
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        kinds.insert(kind.to_owned(), (now + EVERY, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_written_once_per_period_with_what_was_held_back() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(
            throttle.admit("log FAIL", at(0)),
            Some(0),
            "the first at once"
        );
        assert_eq!(
            throttle.admit("error AllBrokersDown", at(0)),
            Some(0),
            "another kind too"
        );
        for s in 1..30 {
            assert_eq!(
                throttle.admit("log FAIL", at(s)),
                None,
                "held back at {s} s"
            );
        }
        assert_eq!(throttle.admit("error AllBrokersDown", at(5)), None);
        assert_eq!(
            throttle.admit("log FAIL", at(30)),
            Some(29),
            "then says how many"
        );
        assert_eq!(throttle.admit("log FAIL", at(31)), None);
        assert_eq!(throttle.admit("error AllBrokersDown", at(60)), Some(1));
        assert_eq!(
            throttle.admit("log FAIL", at(600)),
            Some(1),
            "after a quiet spell, at once"
        );
    }

    #[test]
    fn kinds_are_bounded() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_KINDS * 3 {
            assert_eq!(throttle.admit(&format!("log K{i}"), now), Some(0));
            assert!(throttle.kinds.lock().unwrap().len() <= MAX_KINDS);
        }
    }
}
