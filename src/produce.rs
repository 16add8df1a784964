//! Hands accepted items to their destination and reports, per item, whether
//! it was acknowledged: Kafka (idempotent, `acks=all`) or, as the embedded
//! default, a JSON-lines file.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{Output, Topics};
use crate::metrics::Metrics;

pub mod file;
pub mod kafka;

/// One message for one accepted item.
#[derive(Debug, Clone)]
pub struct Record {
    /// Destination topic (the file sink writes it as a field).
    pub topic: Arc<str>,
    /// The event id: the message key, so duplicates land on one partition.
    pub key: String,
    /// The item payload as it is forwarded.
    pub payload: Bytes,
    /// The Kafka headers.
    pub headers: RecordHeaders,
}

/// The headers of the Kafka output contract.
#[derive(Debug, Clone)]
pub struct RecordHeaders {
    /// The project id.
    pub project_id: Arc<str>,
    /// The event id (the same as the key).
    pub event_id: String,
    /// The item's `type` as the SDK sent it.
    pub item_type: String,
    /// When the relay received the request, RFC 3339.
    pub received_at: Arc<str>,
    /// The grouping fingerprint, when computed.
    pub fingerprint: Option<String>,
    /// The sample rate the item survived, when sampled.
    pub sample_rate: Option<String>,
}

impl RecordHeaders {
    /// The headers as (name, value) pairs, in contract order, absent ones left out.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("project_id", Some(&*self.project_id)),
            ("event_id", Some(self.event_id.as_str())),
            ("item_type", Some(self.item_type.as_str())),
            ("received_at", Some(&*self.received_at)),
            ("fingerprint", self.fingerprint.as_deref()),
            ("sample_rate", self.sample_rate.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// Why an item was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The brokers did not answer the last health check; nothing was sent.
    #[error("kafka is unreachable")]
    Unavailable,
    /// librdkafka's queue is full: the relay is producing faster than Kafka takes.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker refused the message or it timed out.
    #[error("kafka delivery failed: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The producer went away before reporting delivery.
    #[error("the producer was shut down before delivery was confirmed")]
    Canceled,
    /// Writing the file sink failed.
    #[error("file sink write failed: {0}")]
    File(#[source] Arc<std::io::Error>),
}

impl ProduceError {
    /// Whether Kafka refuses the message for good (it is larger than the
    /// producer's or the broker's `message.max.bytes`): retrying, from the
    /// spool or by the SDK, cannot deliver it.
    pub fn is_too_large(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        matches!(
            self,
            ProduceError::Kafka(e) if matches!(
                e.rdkafka_error_code(),
                Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge)
            )
        )
    }

    /// Whether Kafka refuses the message for good, whatever the wait: too
    /// large, or its topic does not exist or may not be written.
    pub fn is_refused(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        self.is_too_large()
            || matches!(
                self,
                ProduceError::Kafka(e) if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        C::UnknownTopic
                            | C::UnknownTopicOrPartition
                            | C::InvalidTopic
                            | C::TopicAuthorizationFailed
                    )
                )
            )
    }

    /// Whether the message certainly never left the relay: librdkafka
    /// purged it from its queue (at shutdown, or with a replaced producer)
    /// before sending it. A failure after sending may have been stored.
    pub fn never_sent(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            ProduceError::Kafka(e) => e.rdkafka_error_code() == Some(C::PurgeQueue),
            ProduceError::Unavailable | ProduceError::QueueFull => true,
            ProduceError::Canceled | ProduceError::File(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn only_what_was_queued_and_purged_was_never_sent() {
        let kafka = |code| ProduceError::Kafka(KafkaError::MessageProduction(code));
        assert!(kafka(C::PurgeQueue).never_sent());
        assert!(ProduceError::Unavailable.never_sent());
        assert!(ProduceError::QueueFull.never_sent());
        for sent in [C::PurgeInflight, C::MessageTimedOut, C::RequestTimedOut] {
            assert!(!kafka(sent).never_sent(), "{sent:?}");
        }
        assert!(!ProduceError::Canceled.never_sent());
    }
}

/// The destination of accepted items.
// One per process, behind an `Arc`: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Producer {
    /// Kafka.
    Kafka(kafka::KafkaSink),
    /// The JSON-lines file.
    File(file::FileSink),
}

impl Producer {
    /// Opens the configured destination. Kafka's brokers need not be up yet.
    pub fn open(output: &Output, metrics: &Metrics) -> Result<Producer, StartError> {
        Ok(match output {
            Output::Kafka(k) => Producer::Kafka(kafka::KafkaSink::new(k, metrics.clone())?),
            Output::File(path) => Producer::File(file::FileSink::open(path)?),
        })
    }

    /// The topics records are addressed to.
    pub fn topics(&self) -> &Topics {
        match self {
            Producer::Kafka(k) => k.topics(),
            Producer::File(f) => f.topics(),
        }
    }

    /// Delivers the records; one result per record, in order. Resolves once
    /// every record is acknowledged or failed.
    pub async fn send(&self, records: &[Record]) -> Vec<Result<(), ProduceError>> {
        match self {
            Producer::Kafka(k) => k.send(records).await,
            Producer::File(f) => f.send(records),
        }
    }

    /// Whether the destination can take work now (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            Producer::Kafka(k) => k.is_up(),
            Producer::File(_) => true,
        }
    }

    /// Whether the destination failed for good and only a restart helps (for `/healthz`).
    pub fn is_failed(&self) -> bool {
        match self {
            Producer::Kafka(k) => k.is_failed(),
            Producer::File(_) => false,
        }
    }

    /// Messages in flight (queued or awaiting acknowledgement).
    pub fn queue_depth(&self) -> i64 {
        match self {
            Producer::Kafka(k) => k.in_flight(),
            Producer::File(_) => 0,
        }
    }

    /// Waits up to `timeout` for in-flight messages; returns how many are left.
    pub async fn flush(&self, timeout: Duration) -> usize {
        match self {
            Producer::Kafka(k) => k.flush(timeout).await,
            Producer::File(_) => 0,
        }
    }
}

/// Why the destination could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// librdkafka refused the configuration.
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The file sink could not be opened.
    #[error("cannot open the file sink {path}: {source}")]
    File {
        /// The configured path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
