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
    /// Kafka did not acknowledge the item (unreachable, timed out, refused).
    KafkaError,
    /// A bug or an unexpected failure inside the relay.
    Internal,
}

impl DropReason {
    /// Every reason, for pre-registering metric label values and for docs.
    pub const ALL: [DropReason; 9] = [
        DropReason::Unauthorized,
        DropReason::Invalid,
        DropReason::TooLarge,
        DropReason::Filtered,
        DropReason::RateLimited,
        DropReason::Sampled,
        DropReason::SpoolFull,
        DropReason::KafkaError,
        DropReason::Internal,
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
            DropReason::KafkaError => "kafka_error",
            DropReason::Internal => "internal",
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
            DropReason::SpoolFull | DropReason::KafkaError => StatusCode::SERVICE_UNAVAILABLE,
            DropReason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
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
            | DropReason::Sampled => Level::DEBUG,
            DropReason::SpoolFull | DropReason::KafkaError => Level::WARN,
            DropReason::Internal => Level::ERROR,
        }
    }

    /// When items of one envelope are dropped for different reasons, the answer
    /// reports the one the SDK must act on first: a retryable failure beats a
    /// rate limit, which beats a client error.
    pub fn precedence(self) -> u8 {
        match self {
            DropReason::Internal => 9,
            DropReason::KafkaError => 8,
            DropReason::SpoolFull => 7,
            DropReason::RateLimited => 6,
            DropReason::TooLarge => 5,
            DropReason::Invalid => 4,
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
                "kafka_error",
                "internal"
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
