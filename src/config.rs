//! The configuration file: serde structs that mirror the TOML, and their
//! validation into the typed [`Config`] the relay runs on.
//!
//! Two layers: [`file`] holds what the operator wrote (unknown keys are an
//! error naming the key's path, every field has a default), and
//! [`Config::from_toml`] checks it and turns it into typed values: socket
//! addresses, byte counts, durations, and an index from public key to project.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::DataCategory;
use crate::scrub::{self, Scrubber};

/// A configuration the relay cannot run on, with the path of the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `projects[0].public_keys[1]`.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The file as the operator wrote it. Every struct denies unknown keys and
/// fills missing ones from its `Default`.
pub mod file {
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytesize::ByteSize;

    /// The whole file.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct File {
        /// The SDK-facing listener.
        pub server: Server,
        /// The operator-facing listener.
        pub admin: Admin,
        /// Size and count limits on what SDKs send.
        pub limits: Limits,
        /// Where accepted items go. Without this section they go to `file_sink`.
        pub kafka: Option<Kafka>,
        /// The embedded default output: a JSON-lines file. Only without `[kafka]`.
        pub file_sink: Option<FileSink>,
        /// What a 200 promises, and the bound on work in flight.
        pub delivery: Delivery,
        /// The on-disk spool for items Kafka has not acknowledged (with `[kafka]` only).
        pub spool: Spool,
        /// How the relay stops.
        pub shutdown: Shutdown,
        /// Logging.
        pub log: Log,
        /// PII scrubbing defaults for every project.
        pub scrub: Scrub,
        /// Quotas and sampling for projects that set none of their own.
        pub defaults: Defaults,
        /// The aggregated outcome records.
        pub outcomes: Outcomes,
        /// The projects the relay accepts data for.
        pub projects: Vec<Project>,
    }

    /// `[server]`: the SDK-facing listener.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        /// Address SDKs send to. Defaults to "127.0.0.1:3000".
        pub listen: String,
        /// Connections served at once; more wait in the kernel's backlog. Defaults to 1024.
        pub max_connections: usize,
        /// Time a client has to send its request headers. Defaults to "10s".
        #[serde(with = "humantime_serde")]
        pub header_read_timeout: Duration,
        /// Time a client has to send its whole body. Defaults to "30s".
        #[serde(with = "humantime_serde")]
        pub body_read_timeout: Duration,
        /// A connection with no request in flight for this long is closed
        /// (HTTP/1.1 keep-alive and HTTP/2 alike), so idle clients cannot hold
        /// every connection slot. Defaults to "60s".
        #[serde(with = "humantime_serde")]
        pub idle_timeout: Duration,
        /// Once the relay has closed its side of a connection, it reads and
        /// discards what the client still sends, until the client closes or
        /// for this long: a frame or request crossing the close then does not
        /// draw a TCP reset, which could destroy the answer the client has
        /// not read yet. "0s" closes at once. Defaults to "2s".
        #[serde(with = "humantime_serde")]
        pub lingering_time: Duration,
        /// Bytes of request bodies held in memory at once, as they arrive and
        /// then at their inflated size, from their read until their answer;
        /// past it, new requests get 503. At least `limits.max_inflated_size`.
        /// Defaults to "64MiB".
        pub max_body_memory: ByteSize,
        /// Threads that serve requests (read, inflate, scrub, answer). 0 is
        /// one per CPU the relay may use, as the runtime counts them: a
        /// container's CPU limit counts, and `TOKIO_WORKER_THREADS` sets it
        /// too. Read at start only. Defaults to 0.
        pub worker_threads: usize,
    }

    impl Default for Server {
        fn default() -> Self {
            Server {
                listen: "127.0.0.1:3000".into(),
                max_connections: 1024,
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                lingering_time: Duration::from_secs(2),
                max_body_memory: ByteSize::mib(64),
                worker_threads: 0,
            }
        }
    }

    /// `[admin]`: `/metrics`, `/healthz`, `/readyz`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Admin {
        /// Address of the admin listener. Defaults to "127.0.0.1:3001".
        pub listen: String,
    }

    impl Default for Admin {
        fn default() -> Self {
            Admin {
                listen: "127.0.0.1:3001".into(),
            }
        }
    }

    /// `[limits]`: what one request may carry.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Limits {
        /// Largest body on the wire (compressed). Defaults to "20MiB".
        pub max_body_size: ByteSize,
        /// Largest body after decompression, and what an envelope's gzip'd
        /// attachments and zlib'd replay recordings inflate to together.
        /// Defaults to "50MiB".
        pub max_inflated_size: ByteSize,
        /// Largest single event or transaction payload, and of any other JSON
        /// item (spans, logs, sessions, check-ins, profiles, replay events,
        /// client reports), which is scrubbed as a tree. JSON attachments
        /// larger or deeper than that are scrubbed string by string, without a
        /// tree (as text when they are not JSON). Defaults to "1MiB".
        pub max_event_size: ByteSize,
        /// Largest single attachment or other binary item, and of a gzip'd
        /// attachment or zlib'd replay recording once inflated (it is
        /// scrubbed inflated; an envelope's together inflate to at most
        /// `max_inflated_size`). Defaults to "20MiB".
        pub max_attachment_size: ByteSize,
        /// Most items in one envelope. Defaults to 1000.
        pub max_items: usize,
        /// Longest envelope or item header line. Defaults to "64KiB".
        pub max_header_line_size: ByteSize,
        /// Deepest nesting of objects and arrays in an event, at most 128. Defaults to 128.
        pub max_json_depth: usize,
        /// Most quota buckets kept (keys and fingerprints), at least 1024 (a smaller
        /// value is raised to it); idle ones are evicted first. Defaults to 100000.
        pub max_quota_buckets: usize,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits {
                max_body_size: ByteSize::mib(20),
                max_inflated_size: ByteSize::mib(50),
                max_event_size: ByteSize::mib(1),
                max_attachment_size: ByteSize::mib(20),
                max_items: 1000,
                max_header_line_size: ByteSize::kib(64),
                max_json_depth: 128,
                max_quota_buckets: 100_000,
            }
        }
    }

    /// `[kafka]`: the producer.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Kafka {
        /// Bootstrap brokers, comma-separated. Defaults to "127.0.0.1:9092".
        pub brokers: String,
        /// How long librdkafka keeps trying to deliver one message before the item
        /// goes to the spool (librdkafka's `message.timeout.ms`; without a spool
        /// it is dropped as `kafka_error`). Defaults to "10s".
        #[serde(with = "humantime_serde")]
        pub delivery_timeout: Duration,
        /// Batch compression: none, gzip, lz4, zstd or snappy. Defaults to "lz4".
        pub compression: String,
        /// How long librdkafka waits to fill a batch (`linger.ms`): longer batches
        /// more, and every SDK answer waits for it in `ack = "kafka"`. Defaults to
        /// "2ms", and to "20ms" with `ack = "spool"`, where no answer waits for
        /// Kafka and items wait on disk.
        #[serde(default, with = "humantime_serde")]
        pub linger: Option<Duration>,
        /// How often the relay checks that the brokers answer (for `/readyz`). Defaults to "1s".
        #[serde(with = "humantime_serde")]
        pub health_interval: Duration,
        /// Topic for each data category, and for outcomes. Defaults to the `[kafka.topics]` defaults below.
        pub topics: Topics,
        /// Raw librdkafka settings, passed as they are (for example
        /// `"queue.buffering.max.kbytes" = "65536"`, `"security.protocol" = "SASL_SSL"`).
        /// `enable.idempotence`, `acks` and `bootstrap.servers` are the relay's own. Defaults to {}.
        pub producer: BTreeMap<String, String>,
    }

    impl Default for Kafka {
        fn default() -> Self {
            Kafka {
                brokers: "127.0.0.1:9092".into(),
                delivery_timeout: Duration::from_secs(10),
                compression: "lz4".into(),
                linger: None,
                health_interval: Duration::from_secs(1),
                topics: Topics::default(),
                producer: BTreeMap::new(),
            }
        }
    }

    /// `[kafka.topics]`: one topic per data category.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Topics {
        /// Error events. Defaults to "ingest-events".
        pub error: String,
        /// Items of no known type. Defaults to "ingest-events".
        pub default: String,
        /// User reports. Defaults to "ingest-events".
        pub user_report: String,
        /// User feedback. Defaults to "ingest-events".
        pub feedback: String,
        /// Transactions. Defaults to "ingest-transactions".
        pub transaction: String,
        /// Attachments. Defaults to "ingest-attachments".
        pub attachment: String,
        /// Sessions (release health). Defaults to "ingest-sessions".
        pub session: String,
        /// Cron check-ins. Defaults to "ingest-monitors".
        pub monitor: String,
        /// Standalone spans. Defaults to "ingest-spans".
        pub span: String,
        /// Logs. Defaults to "ingest-logs".
        pub log_item: String,
        /// Profiles. Defaults to "ingest-profiles".
        pub profile: String,
        /// Replay events and recordings. Defaults to "ingest-replays".
        pub replay: String,
        /// Aggregated outcome records. Defaults to "outcomes".
        pub outcomes: String,
    }

    impl Default for Topics {
        fn default() -> Self {
            Topics {
                error: "ingest-events".into(),
                default: "ingest-events".into(),
                user_report: "ingest-events".into(),
                feedback: "ingest-events".into(),
                transaction: "ingest-transactions".into(),
                attachment: "ingest-attachments".into(),
                session: "ingest-sessions".into(),
                monitor: "ingest-monitors".into(),
                span: "ingest-spans".into(),
                log_item: "ingest-logs".into(),
                profile: "ingest-profiles".into(),
                replay: "ingest-replays".into(),
                outcomes: "outcomes".into(),
            }
        }
    }

    /// `[file_sink]`: accepted items appended as JSON lines.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct FileSink {
        /// The file; relative paths are from the working directory. Defaults to "edge-relay-items.jsonl".
        pub path: String,
    }

    impl Default for FileSink {
        fn default() -> Self {
            FileSink {
                path: "edge-relay-items.jsonl".into(),
            }
        }
    }

    /// `[delivery]`: when the SDK gets its 200.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Delivery {
        /// "kafka": answer after the broker's ack; while Kafka is unreachable or
        /// failing, after a durable spool write instead. "spool": answer after a
        /// durable spool write; Kafka delivery happens behind. "memory": answer
        /// once the item is queued in memory; a crash loses that queue.
        /// Applies to `[kafka]`; the file sink answers after its write. Defaults to "kafka".
        pub ack: String,
        /// Bytes of accepted items waiting at once for Kafka's ack or the
        /// spool's write. Past it, new requests are refused with 503 and counted
        /// as `overloaded` before their body is read. The relay holds up to
        /// about twice this in memory: its own copy of each item (to spool it
        /// should the delivery fail) and librdkafka's. Defaults to "32MiB".
        pub max_in_flight: ByteSize,
    }

    impl Default for Delivery {
        fn default() -> Self {
            Delivery {
                ack: "kafka".into(),
                max_in_flight: ByteSize::mib(32),
            }
        }
    }

    /// `[spool]`: accepted items waiting for Kafka, on disk.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Spool {
        /// Directory of the spool (segment files `*.seg` and a lock file);
        /// relative paths are from the working directory. One relay per
        /// directory. Defaults to "/var/lib/edge-relay/spool".
        pub path: String,
        /// Most bytes of segment files on disk; past it new items are refused
        /// with 503 and counted as `spool_full`. Held items are never evicted.
        /// Defaults to "1GiB".
        pub max_size: ByteSize,
        /// Most items replayed to Kafka in one batch. Defaults to 1000.
        pub replay_batch: usize,
        /// While appends arrive together and the relay is at its CPU limit
        /// (its request threads busy nearly all the time), how long the
        /// spool's writer waits before each flush so that more of them share
        /// it ("0s": never). Defaults to "1ms".
        #[serde(with = "humantime_serde")]
        pub commit_delay: Duration,
        /// The same wait while the relay has CPU to spare: shorter, since
        /// then fewer flushes save nothing that requests need, and the wait
        /// only adds to every answer; it ends early once no other request
        /// is on its way to the spool. Defaults to "250us".
        #[serde(with = "humantime_serde")]
        pub commit_delay_light: Duration,
        /// Write and read the segment files around the page cache
        /// (`O_DIRECT`), where the filesystem allows it (not tmpfs: there the
        /// spool goes through the cache, and logs so). Costs the writer about
        /// a quarter less CPU per item, and keeps the spool out of the page
        /// cache. Defaults to true.
        pub direct_io: bool,
        /// No longer used (the spool's store had a page cache of its own
        /// before it became a log); still accepted so that older config files
        /// load. Defaults to unset.
        pub cache_size: Option<ByteSize>,
    }

    impl Default for Spool {
        fn default() -> Self {
            Spool {
                path: "/var/lib/edge-relay/spool".into(),
                max_size: ByteSize::gib(1),
                replay_batch: 1000,
                commit_delay: Duration::from_millis(1),
                commit_delay_light: Duration::from_micros(250),
                direct_io: true,
                cache_size: None,
            }
        }
    }

    /// `[shutdown]`: the bounded stop sequence.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Shutdown {
        /// After SIGTERM: time to finish in-flight requests and flush Kafka. Defaults to "30s".
        #[serde(with = "humantime_serde")]
        pub grace_period: Duration,
        /// After SIGINT: the same, shorter. Defaults to "3s".
        #[serde(with = "humantime_serde")]
        pub fast_grace_period: Duration,
        /// After the signal, how long the listener keeps accepting while
        /// `/readyz` already answers 503 (part of the grace period). Defaults to "0s".
        #[serde(with = "humantime_serde")]
        pub drain_delay: Duration,
    }

    impl Default for Shutdown {
        fn default() -> Self {
            Shutdown {
                grace_period: Duration::from_secs(30),
                fast_grace_period: Duration::from_secs(3),
                drain_delay: Duration::ZERO,
            }
        }
    }

    /// `[log]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Log {
        /// Level filter (tracing's `EnvFilter` syntax); `RUST_LOG` wins when set. Defaults to "info".
        pub level: String,
        /// "text" (human; colours on a terminal) or "json" (one object per line). Defaults to "text".
        pub format: String,
    }

    impl Default for Log {
        fn default() -> Self {
            Log {
                level: "info".into(),
                format: "text".into(),
            }
        }
    }

    /// `[[projects]]`: one project.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Project {
        /// The numeric id in DSNs and in `/api/{id}/...`. Required.
        pub id: u64,
        /// The public keys of its DSNs (32 hex characters). Required, at least one.
        pub public_keys: Vec<String>,
        /// Overrides of any `[scrub]` key for this project. Defaults to none.
        #[serde(default)]
        pub scrub: Option<Scrub>,
        /// Its quotas; replaces `[[defaults.quotas]]` when given. Defaults to those.
        #[serde(default)]
        pub quotas: Option<Vec<Quota>>,
        /// Its sampling; replaces `[defaults.sampling]` when given. Defaults to that.
        #[serde(default)]
        pub sampling: Option<Sampling>,
    }

    /// `[outcomes]`: aggregated outcome records to the outcomes topic.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Outcomes {
        /// Produce them at all (only with `[kafka]`). Defaults to true.
        pub enabled: bool,
        /// The aggregation window; a record is produced when its window closes. Defaults to "60s".
        #[serde(with = "humantime_serde")]
        pub window: Duration,
    }

    impl Default for Outcomes {
        fn default() -> Self {
            Outcomes {
                enabled: true,
                window: Duration::from_secs(60),
            }
        }
    }

    /// `[defaults]`: quotas and sampling for every project without its own.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Defaults {
        /// Quotas. Defaults to none (no limit).
        pub quotas: Vec<Quota>,
        /// Sampling. Defaults to keeping everything.
        pub sampling: Option<Sampling>,
    }

    /// `[[projects.quotas]]`: one token bucket per scope.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Quota {
        /// Data categories it counts (error, transaction, attachment, session, ...). Defaults to [] = all.
        #[serde(default)]
        pub categories: Vec<String>,
        /// Items (bytes for attachments) per window; 0 rejects at once. Required.
        pub limit: u64,
        /// The window in seconds. Required.
        pub window_secs: u64,
        /// How much may arrive at once. Defaults to limit.
        pub burst: Option<u64>,
        /// project, key or fingerprint. Defaults to "project".
        #[serde(default = "project_scope")]
        pub scope: String,
    }

    fn project_scope() -> String {
        "project".into()
    }

    /// `[projects.sampling]`.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sampling {
        /// Keep probability for error events. Defaults to 1.0.
        pub error_rate: Option<f64>,
        /// Keep probability for transactions, decided per trace. Defaults to 1.0.
        pub transaction_rate: Option<f64>,
        /// Rules that override the rates; the first match wins. Defaults to [].
        #[serde(default)]
        pub rules: Vec<SamplingRule>,
    }

    /// `[[projects.sampling.rules]]`: every field given must match.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SamplingRule {
        /// The environment, exactly.
        pub environment: Option<String>,
        /// A glob on the release (`*`, `?`).
        pub release: Option<String>,
        /// A glob on the transaction name.
        pub transaction: Option<String>,
        /// The keep probability. Required.
        pub rate: f64,
    }

    /// `[scrub]` and `[projects.scrub]`. In a project, a key that is set
    /// replaces the global one; a key left out inherits it.
    #[derive(Debug, Default, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Scrub {
        /// The built-in rules (and the built-in sensitive key words) on. Defaults to true.
        pub defaults: Option<bool>,
        /// Client IP fields removed, IPs in text replaced. Defaults to true.
        pub scrub_ip_addresses: Option<bool>,
        /// More key words whose values are secrets (case-insensitive, anywhere in a key). Defaults to [].
        pub sensitive_fields: Option<Vec<String>>,
        /// Paths never scrubbed, beside the built-in ones. Defaults to [].
        pub safe_fields: Option<Vec<String>>,
        /// HMAC key for `method = "hash"`. Defaults to none (then `hash` is refused).
        pub hash_key: Option<Secret>,
        /// Method per built-in rule, e.g. `{ email = "hash" }`. Defaults to each rule's own.
        pub methods: Option<BTreeMap<String, String>>,
        /// Custom pattern rules. Defaults to [].
        pub rules: Option<Vec<ScrubRule>>,
    }

    /// `[[scrub.rules]]`: a custom pattern rule.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ScrubRule {
        /// Its name, in metrics and `_meta`. Required.
        pub name: String,
        /// A regex for the linear-time `regex` crate (no look-around or
        /// back-references); compiled size is capped. Required.
        pub pattern: String,
        /// remove, replace, mask or hash. Defaults to "replace".
        #[serde(default = "replace")]
        pub method: String,
        /// Where the rule applies. Defaults to every string.
        #[serde(default)]
        pub paths: Vec<String>,
    }

    fn replace() -> String {
        "replace".into()
    }

    /// A string kept out of `Debug` output and logs.
    #[derive(Clone, Deserialize)]
    #[serde(transparent)]
    pub struct Secret(pub String);

    impl std::fmt::Debug for Secret {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("[redacted]")
        }
    }
}

/// The validated configuration the relay runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SDK-facing listener.
    pub server: ServerConfig,
    /// Address of the admin listener.
    pub admin_listen: SocketAddr,
    /// What one request may carry.
    pub limits: Limits,
    /// Where accepted items go.
    pub output: Output,
    /// What a 200 promises, the in-flight bound, and the spool.
    pub delivery: DeliveryConfig,
    /// How long the stop sequence may take.
    pub shutdown: ShutdownConfig,
    /// The log filter from the file.
    pub log_level: String,
    /// Logs as JSON lines rather than text.
    pub log_json: bool,
    /// The projects, indexed by id and by public key.
    pub projects: Arc<Projects>,
    /// The scrubber from `[scrub]` alone (for `edge-relay scrub` without `--project`).
    pub scrubber: Arc<Scrubber>,
    /// The outcome window, when outcome records are produced.
    pub outcomes_window: Option<Duration>,
}

/// When the SDK gets its 200 (`delivery.ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the broker's ack, or a durable spool write while Kafka is down.
    Kafka,
    /// After a durable spool write.
    Spool,
    /// Once queued in memory.
    Memory,
}

impl AckMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Kafka => "kafka",
            AckMode::Spool => "spool",
            AckMode::Memory => "memory",
        }
    }
}

/// `[delivery]` and `[spool]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// When the SDK gets its 200.
    pub ack: AckMode,
    /// Bytes of accepted items waiting for an ack or a spool write at once.
    pub max_in_flight: usize,
    /// The spool directory.
    pub spool_path: PathBuf,
    /// Most bytes of items the spool holds.
    pub spool_max_size: u64,
    /// Most items per replay batch.
    pub replay_batch: NonZeroUsize,
    /// `spool.commit_delay` and `spool.commit_delay_light`.
    pub spool_commit_delays: crate::spool::CommitDelays,
    /// `spool.direct_io`.
    pub spool_direct_io: bool,
}

/// The SDK-facing listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where SDKs connect.
    pub listen: SocketAddr,
    /// Connections served at once.
    pub max_connections: NonZeroUsize,
    /// Deadline for the request headers.
    pub header_read_timeout: Duration,
    /// Deadline for the whole body.
    pub body_read_timeout: Duration,
    /// How long a connection may sit with no request in flight.
    pub idle_timeout: Duration,
    /// How long a closed connection keeps reading what its client still sends.
    pub lingering_time: Duration,
    /// Bytes of request bodies held in memory at once.
    pub max_body_memory: usize,
    /// Threads that serve requests; `None` lets the runtime count the CPUs.
    pub worker_threads: Option<NonZeroUsize>,
}

/// Size and count limits, in bytes and items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest compressed body.
    pub max_body_size: usize,
    /// Largest inflated body.
    pub max_inflated_size: usize,
    /// Largest event or transaction item.
    pub max_event_size: usize,
    /// Largest other item.
    pub max_attachment_size: usize,
    /// Most items per envelope.
    pub max_items: usize,
    /// Longest header line.
    pub max_header_line_size: usize,
    /// Deepest JSON nesting in an event.
    pub max_json_depth: usize,
    /// Most quota buckets.
    pub max_quota_buckets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        validate_limits(&file::Limits::default()).expect("the default limits are valid")
    }
}

/// Where accepted items go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A Kafka cluster.
    Kafka(KafkaConfig),
    /// A JSON-lines file: the embedded default for trying the relay out.
    File(PathBuf),
}

/// The producer's settings.
#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// librdkafka's `message.timeout.ms`.
    pub delivery_timeout: Duration,
    /// librdkafka's `compression.type`.
    pub compression: String,
    /// librdkafka's `linger.ms`.
    pub linger: Duration,
    /// librdkafka's `message.max.bytes`: room for the largest item the limits let through.
    pub max_message: usize,
    /// Interval of the broker reachability check.
    pub health_interval: Duration,
    /// Topic per data category, indexed by [`DataCategory::index`].
    pub topics: Topics,
    /// Raw librdkafka settings, applied last.
    pub producer: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    /// Raw settings can hold SASL passwords and key material: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let producer: BTreeMap<&str, &str> = self
            .producer
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key", "token", "jaas"]
                    .iter()
                    .any(|s| k.contains(s));
                (k.as_str(), if secret { "[redacted]" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("health_interval", &self.health_interval)
            .field("topics", &self.topics)
            .field("producer", &producer)
            .finish()
    }
}

/// Topic names per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    /// Indexed by [`DataCategory::index`].
    by_category: Vec<Arc<str>>,
    /// Where outcome records go.
    pub outcomes: Arc<str>,
}

impl Topics {
    /// The topic items of this category are produced to.
    pub fn for_category(&self, category: DataCategory) -> &Arc<str> {
        &self.by_category[category.index()]
    }

    /// Every distinct topic, for creating them in tests and checking metadata.
    pub fn all(&self) -> Vec<Arc<str>> {
        let mut all: Vec<Arc<str>> = self.by_category.clone();
        all.push(self.outcomes.clone());
        all.sort();
        all.dedup();
        all
    }
}

impl Default for Topics {
    /// The default topic names, for the file sink's `topic` field.
    fn default() -> Self {
        validate_kafka(file::Kafka::default(), false)
            .expect("the default Kafka settings are valid")
            .topics
    }
}

/// The bounded stop sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShutdownConfig {
    /// Grace after SIGTERM.
    pub grace_period: Duration,
    /// Grace after SIGINT.
    pub fast_grace_period: Duration,
    /// Time the listener keeps accepting after readiness is withdrawn.
    pub drain_delay: Duration,
}

/// One configured project.
#[derive(Debug)]
pub struct Project {
    /// Its numeric id.
    pub id: u64,
    /// Its id as a metric label value, made once.
    pub label: Arc<str>,
    /// Its public keys.
    pub public_keys: Vec<String>,
    /// Its PII scrubber (shared with other projects that override nothing).
    pub scrubber: Arc<Scrubber>,
    /// Its quotas.
    pub quotas: Vec<crate::quota::Quota>,
    /// Its sampling.
    pub sampling: crate::sample::Sampling,
}

/// The projects, found by id or by public key.
#[derive(Debug, Default)]
pub struct Projects {
    /// Projects by id.
    by_id: HashMap<u64, Arc<Project>>,
    /// Project id by public key; a key belongs to exactly one project.
    by_key: HashMap<String, u64>,
}

impl Projects {
    /// The project with this id, if configured.
    pub fn get(&self, id: u64) -> Option<&Arc<Project>> {
        self.by_id.get(&id)
    }

    /// The id of the project that owns this public key.
    pub fn project_of_key(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// How many projects are configured.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no project is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every project, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Project>> {
        let mut all: Vec<_> = self.by_id.values().collect();
        all.sort_by_key(|p| p.id);
        all.into_iter()
    }
}

impl Config {
    /// The sections whose values differ in `new` and that a reload does not
    /// apply: the running relay keeps them until a restart. A reload swaps
    /// only projects, keys, quotas, sampling and scrub rules.
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut sections = Vec::new();
        if self.server != new.server || self.admin_listen != new.admin_listen {
            sections.push("server/admin");
        }
        if self.limits != new.limits {
            sections.push("limits");
        }
        // By value: the Debug form hides secrets (a changed SASL password).
        if self.output != new.output {
            sections.push("kafka/file_sink");
        }
        if self.delivery != new.delivery {
            sections.push("delivery/spool");
        }
        if self.outcomes_window != new.outcomes_window {
            sections.push("outcomes");
        }
        if self.shutdown != new.shutdown {
            sections.push("shutdown");
        }
        if self.log_level != new.log_level || self.log_json != new.log_json {
            sections.push("log");
        }
        sections
    }

    /// Reads and validates a configuration file, with the process's
    /// environment: `${VAR}` expanded, `EDGE_RELAY_*` overrides applied.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let overrides: Vec<(String, String)> =
            std::env::vars().filter(|(k, _)| is_override(k)).collect();
        Config::from_toml_with_env(&text, &|name| std::env::var(name).ok(), &overrides)
    }

    /// Parses and validates configuration text (no environment applied).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &|_| None, &[])
    }

    /// Parses and validates configuration text after expanding `${VAR}` with
    /// `env`, and applying `EDGE_RELAY_SECTION__KEY=value` overrides.
    pub fn from_toml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let located = |e: serde_path_to_error::Error<toml::de::Error>| {
            let path = e.path().to_string();
            // toml adds "\nin `section`": the path says it already, and a
            // second line would break a log line in two.
            let message = e.into_inner().to_string();
            let message = message
                .lines()
                .filter(|line| !line.starts_with("in `"))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            ConfigError::new(path, message)
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new("(file)", e.to_string().trim_end().to_owned())
        })?;
        // In string values only: comments and keys are left alone.
        expand_in_table(&mut table, env)?;
        for (name, value) in overrides {
            apply_override(&mut table, name, value)?;
        }
        let raw: Result<file::File, ConfigError> =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(located);
        raw.and_then(Config::validate)
            .map_err(|e| blame_override(e, overrides))
    }

    /// Turns the file's structs into typed values, or says which key is wrong.
    pub fn validate(raw: file::File) -> Result<Config, ConfigError> {
        let listen = socket_addr("server.listen", &raw.server.listen)?;
        let admin_listen = socket_addr("admin.listen", &raw.admin.listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::new(
                "admin.listen",
                "must differ from server.listen: the admin port is a separate listener",
            ));
        }
        let max_connections = NonZeroUsize::new(raw.server.max_connections)
            .ok_or_else(|| ConfigError::new("server.max_connections", "must be at least 1"))?;
        for (path, d) in [
            ("server.header_read_timeout", raw.server.header_read_timeout),
            ("server.body_read_timeout", raw.server.body_read_timeout),
            ("server.idle_timeout", raw.server.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(path, "must be longer than zero"));
            }
        }
        let limits = validate_limits(&raw.limits)?;
        let max_body_memory = usize::try_from(raw.server.max_body_memory.as_u64())
            .ok()
            .filter(|n| *n >= limits.max_inflated_size)
            .ok_or_else(|| {
                ConfigError::new(
                    "server.max_body_memory",
                    "must be at least limits.max_inflated_size (the largest body, inflated, must fit)",
                )
            })?;

        if raw.server.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::new(
                "server.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0 is one per CPU)"),
            ));
        }

        let output = match (raw.kafka, raw.file_sink) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "file_sink",
                    "cannot be used together with [kafka]: choose one output",
                ))
            }
            // An unknown ack mode is refused below, with the delivery settings.
            (Some(kafka), None) => {
                Output::Kafka(validate_kafka(kafka, raw.delivery.ack == "spool")?)
            }
            (None, sink) => {
                let path = sink.unwrap_or_default().path;
                if path.trim().is_empty() {
                    return Err(ConfigError::new("file_sink.path", "must not be empty"));
                }
                Output::File(PathBuf::from(path))
            }
        };

        let mut output = output;
        if let Output::Kafka(k) = &mut output {
            // The largest item plus room for its key, headers and framing.
            let largest = limits.max_event_size.max(limits.max_attachment_size);
            k.max_message = (largest + 64 * 1024).clamp(1_000_000, 1_000_000_000);
        }
        let delivery = validate_delivery(&raw.delivery, &raw.spool, &output)?;
        // One compiler for the whole load: projects that override `[scrub]`
        // share the built-in rules' compiled regexes.
        let mut compiler = scrub::Compiler::default();
        let scrubber = Arc::new(compile_scrub(&mut compiler, "scrub", &raw.scrub, None)?);
        if !["text", "json"].contains(&raw.log.format.as_str()) {
            return Err(ConfigError::new(
                "log.format",
                format!("{:?} is not text or json", raw.log.format),
            ));
        }
        if raw.shutdown.drain_delay >= raw.shutdown.grace_period {
            return Err(ConfigError::new(
                "shutdown.drain_delay",
                "must be shorter than shutdown.grace_period (it is part of it)",
            ));
        }
        if raw.outcomes.window < Duration::from_secs(1) {
            return Err(ConfigError::new("outcomes.window", "must be at least 1s"));
        }
        if let Err(e) = check_log_filter(&raw.log.level) {
            return Err(ConfigError::new("log.level", e));
        }

        // Outcome records are part of the Kafka contract; the file sink holds items only.
        let outcomes_window = (raw.outcomes.enabled && matches!(output, Output::Kafka(_)))
            .then_some(raw.outcomes.window);
        Ok(Config {
            server: ServerConfig {
                listen,
                max_connections,
                header_read_timeout: raw.server.header_read_timeout,
                body_read_timeout: raw.server.body_read_timeout,
                idle_timeout: raw.server.idle_timeout,
                lingering_time: raw.server.lingering_time,
                max_body_memory,
                worker_threads: NonZeroUsize::new(raw.server.worker_threads),
            },
            admin_listen,
            limits,
            output,
            delivery,
            shutdown: ShutdownConfig {
                grace_period: raw.shutdown.grace_period,
                fast_grace_period: raw.shutdown.fast_grace_period,
                drain_delay: raw.shutdown.drain_delay,
            },
            log_json: raw.log.format == "json",
            log_level: raw.log.level,
            projects: Arc::new(validate_projects(
                raw.projects,
                &raw.scrub,
                &mut compiler,
                &scrubber,
                &raw.defaults,
            )?),
            scrubber,
            outcomes_window,
        })
    }

    /// A short, secret-free summary for `check-config`.
    pub fn summary(&self) -> String {
        let output = match &self.output {
            Output::Kafka(k) => format!(
                "kafka brokers {} (compression {})",
                k.brokers, k.compression
            ),
            Output::File(p) => format!("file sink {}", p.display()),
        };
        let keys: usize = self.projects.iter().map(|p| p.public_keys.len()).sum();
        format!(
            "ok: sdk listener {}, admin listener {}, {} project(s) with {} key(s), output: {}",
            self.server.listen,
            self.admin_listen,
            self.projects.len(),
            keys,
            output
        )
    }
}

/// The most request threads `server.worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// Environment variables that override keys: `EDGE_RELAY_KAFKA__BROKERS`.
pub const ENV_PREFIX: &str = "EDGE_RELAY_";

/// Whether an environment variable is read as an override: `EDGE_RELAY_`,
/// then a name with `__` between section and key. Other `EDGE_RELAY_*`
/// variables are left alone, for `${VAR}` in the file
/// (`EDGE_RELAY_HASH_KEY`) and because Kubernetes defines some for a Service
/// named `edge-relay` in the pod's namespace (`EDGE_RELAY_SERVICE_HOST`,
/// `EDGE_RELAY_PORT_3000_TCP`): no key of the file sits outside a section,
/// so such a name could never override one, and refusing it stopped the
/// relay from starting. A misspelt key in an override's shape
/// (`EDGE_RELAY_SERVER__LISTN`) is still an error.
pub fn is_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.contains("__"))
}

/// Expands `${NAME}` in every string value of the table.
fn expand_in_table(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    fn value(v: &mut toml::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        match v {
            toml::Value::String(s) if s.contains("${") => *s = expand_vars(s, env)?,
            toml::Value::Array(items) => items.iter_mut().try_for_each(|i| value(i, env))?,
            toml::Value::Table(t) => expand_in_table(t, env)?,
            _ => {}
        }
        Ok(())
    }
    table.iter_mut().try_for_each(|(_, v)| value(v, env))
}

/// Replaces `${NAME}` with the variable's value (`$${` stands for a literal
/// `${`). A variable that is not set is an error naming it, so a secret is
/// never silently empty.
fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find('}')
            .ok_or_else(|| ConfigError::new("(file)", "an unclosed ${ in the file"))?;
        let name = &rest[at + 2..at + end];
        let legal = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !legal {
            return Err(ConfigError::new(
                "(file)",
                format!("${{{name}}} is not a variable name"),
            ));
        }
        let value = env(name).ok_or_else(|| {
            ConfigError::new(
                format!("${{{name}}}"),
                "the environment variable is not set",
            )
        })?;
        out.push_str(&value);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Names the environment variable that set the key an error is about:
/// the file may be right and the variable wrong, and an operator reading
/// only "server.listen" would look in the file.
fn blame_override(mut e: ConfigError, overrides: &[(String, String)]) -> ConfigError {
    let culprit = overrides.iter().find(|(name, _)| {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return false;
        };
        let dotted = override_keys(rest).collect::<Vec<_>>().join(".");
        e.path == dotted
            || e.path
                .strip_prefix(dotted.as_str())
                .is_some_and(|tail| tail.starts_with(['.', '[']))
    });
    if let Some((name, _)) = culprit {
        e.message = format!("{} (set by the environment variable {name})", e.message);
    }
    e
}

/// The key path an override names: the part of its name after the prefix,
/// lowercased, split on `__`.
fn override_keys(rest: &str) -> impl Iterator<Item = String> + '_ {
    rest.split("__").map(str::to_ascii_lowercase)
}

/// Applies `EDGE_RELAY_SECTION__KEY=value`: the name after the prefix,
/// lowercased, split on `__` into a key path. The value is read as a TOML
/// value when it is one (numbers, booleans, arrays), else as a string.
fn apply_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    // The file is at most four tables deep (`kafka.topics.error`,
    // `scrub.methods.email`); a deeper name is a mistake, and without a cap
    // a long one would build (and drop) a table per segment, recursively.
    const MAX_SEGMENTS: usize = 4;
    let usage = || ConfigError::new(name, "expected EDGE_RELAY_SECTION__KEY");
    let rest = name.strip_prefix(ENV_PREFIX).ok_or_else(usage)?;
    let path: Vec<String> = override_keys(rest).take(MAX_SEGMENTS + 1).collect();
    if path.iter().any(String::is_empty) {
        return Err(usage());
    }
    if path.len() > MAX_SEGMENTS {
        return Err(ConfigError::new(
            name,
            format!("names at most {MAX_SEGMENTS} levels (SECTION__KEY, SECTION__TABLE__KEY)"),
        ));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("at least one segment");
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::new(name, format!("{key} is not a section")))?;
    }
    node.insert(last.clone(), parsed);
    Ok(())
}

fn socket_addr(path: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            path,
            format!("{value:?} is not an IP:port address (for example \"127.0.0.1:3000\")"),
        )
    })
}

fn validate_limits(raw: &file::Limits) -> Result<Limits, ConfigError> {
    let bytes = |path: &str, v: bytesize::ByteSize| -> Result<usize, ConfigError> {
        match usize::try_from(v.as_u64()) {
            Ok(0) => Err(ConfigError::new(path, "must be larger than zero")),
            Ok(n) => Ok(n),
            Err(_) => Err(ConfigError::new(path, "is too large for this machine")),
        }
    };
    let limits = Limits {
        max_body_size: bytes("limits.max_body_size", raw.max_body_size)?,
        max_inflated_size: bytes("limits.max_inflated_size", raw.max_inflated_size)?,
        max_event_size: bytes("limits.max_event_size", raw.max_event_size)?,
        max_attachment_size: bytes("limits.max_attachment_size", raw.max_attachment_size)?,
        max_items: raw.max_items,
        max_header_line_size: bytes("limits.max_header_line_size", raw.max_header_line_size)?,
        max_json_depth: raw.max_json_depth,
        max_quota_buckets: raw.max_quota_buckets.max(1024),
    };
    if !(1..=128).contains(&limits.max_json_depth) {
        return Err(ConfigError::new(
            "limits.max_json_depth",
            "must be between 1 and 128 (the JSON parser's own limit)",
        ));
    }
    if limits.max_items == 0 {
        return Err(ConfigError::new("limits.max_items", "must be at least 1"));
    }
    if limits.max_inflated_size < limits.max_body_size {
        return Err(ConfigError::new(
            "limits.max_inflated_size",
            "must be at least limits.max_body_size (an uncompressed body is counted against both)",
        ));
    }
    Ok(limits)
}

/// `kafka.linger` by default: in `ack = "kafka"` every answer waits for it.
const LINGER: Duration = Duration::from_millis(2);
/// `kafka.linger` by default in spool mode, where no answer waits for Kafka.
const SPOOL_LINGER: Duration = Duration::from_millis(20);

/// librdkafka settings the relay's delivery promise depends on.
const RESERVED_PRODUCER_KEYS: [&str; 5] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

fn validate_delivery(
    raw: &file::Delivery,
    spool: &file::Spool,
    output: &Output,
) -> Result<DeliveryConfig, ConfigError> {
    let ack = match raw.ack.as_str() {
        "kafka" => AckMode::Kafka,
        "spool" => AckMode::Spool,
        "memory" => AckMode::Memory,
        other => {
            return Err(ConfigError::new(
                "delivery.ack",
                format!("{other:?} is not kafka, spool or memory"),
            ))
        }
    };
    if ack != AckMode::Kafka && matches!(output, Output::File(_)) {
        return Err(ConfigError::new(
            "delivery.ack",
            "spool and memory apply to [kafka]; the file sink answers after its own write",
        ));
    }
    let max_in_flight = usize::try_from(raw.max_in_flight.as_u64())
        .ok()
        .filter(|n| *n >= 1 << 20)
        .ok_or_else(|| ConfigError::new("delivery.max_in_flight", "must be at least 1MiB"))?;
    if spool.path.trim().is_empty() {
        return Err(ConfigError::new("spool.path", "must not be empty"));
    }
    if spool.max_size.as_u64() < 1 << 20 {
        return Err(ConfigError::new("spool.max_size", "must be at least 1MiB"));
    }
    let replay_batch = NonZeroUsize::new(spool.replay_batch)
        .ok_or_else(|| ConfigError::new("spool.replay_batch", "must be at least 1"))?;
    Ok(DeliveryConfig {
        ack,
        max_in_flight,
        spool_path: PathBuf::from(&spool.path),
        spool_max_size: spool.max_size.as_u64(),
        replay_batch,
        spool_commit_delays: crate::spool::CommitDelays {
            pressed: spool.commit_delay,
            light: spool.commit_delay_light,
        },
        spool_direct_io: spool.direct_io,
    })
}

/// `spool_mode`: `delivery.ack` is "spool", which has its own default linger.
fn validate_kafka(raw: file::Kafka, spool_mode: bool) -> Result<KafkaConfig, ConfigError> {
    if raw.brokers.trim().is_empty() {
        return Err(ConfigError::new(
            "kafka.brokers",
            "must name at least one broker",
        ));
    }
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&raw.compression.as_str()) {
        return Err(ConfigError::new(
            "kafka.compression",
            format!(
                "{:?} is not one of none, gzip, snappy, lz4, zstd",
                raw.compression
            ),
        ));
    }
    if raw.delivery_timeout < Duration::from_millis(100) {
        return Err(ConfigError::new(
            "kafka.delivery_timeout",
            "must be at least 100ms",
        ));
    }
    if raw.health_interval < Duration::from_millis(100) {
        return Err(ConfigError::new(
            "kafka.health_interval",
            "must be at least 100ms",
        ));
    }
    for key in raw.producer.keys() {
        if RESERVED_PRODUCER_KEYS.contains(&key.as_str()) {
            return Err(ConfigError::new(
                format!("kafka.producer.\"{key}\""),
                "is set by the relay (idempotent, acks=all, brokers from kafka.brokers) and cannot be overridden",
            ));
        }
    }
    // librdkafka checks names and values of its settings without starting a client.
    let mut native = rdkafka::ClientConfig::new();
    for (key, value) in &raw.producer {
        native.set(key, value);
    }
    if let Err(e) = native.create_native_config() {
        return Err(ConfigError::new(
            "kafka.producer",
            format!("librdkafka refuses these settings: {e}"),
        ));
    }
    let t = raw.topics;
    let named = [
        (DataCategory::Error, "error", t.error),
        (DataCategory::Default, "default", t.default),
        (DataCategory::UserReport, "user_report", t.user_report),
        (DataCategory::Feedback, "feedback", t.feedback),
        (DataCategory::Transaction, "transaction", t.transaction),
        (DataCategory::Attachment, "attachment", t.attachment),
        (DataCategory::Session, "session", t.session),
        (DataCategory::Monitor, "monitor", t.monitor),
        (DataCategory::Span, "span", t.span),
        (DataCategory::LogItem, "log_item", t.log_item),
        (DataCategory::Profile, "profile", t.profile),
        (DataCategory::Replay, "replay", t.replay),
    ];
    let mut by_category: Vec<Option<Arc<str>>> = vec![None; DataCategory::ALL.len()];
    for (category, key, topic) in named {
        check_topic(&format!("kafka.topics.{key}"), &topic)?;
        by_category[category.index()] = Some(topic.into());
    }
    check_topic("kafka.topics.outcomes", &t.outcomes)?;
    let by_category = by_category
        .into_iter()
        .map(|t| t.expect("every category is named above"))
        .collect();
    Ok(KafkaConfig {
        brokers: raw.brokers,
        delivery_timeout: raw.delivery_timeout,
        compression: raw.compression,
        // In spool mode no answer waits for the batch, and the broker thread
        // wakes a quarter as often (BENCHMARKS.md: 4 µs of CPU a request less).
        linger: raw
            .linger
            .unwrap_or(if spool_mode { SPOOL_LINGER } else { LINGER }),
        max_message: 1_000_000,
        health_interval: raw.health_interval,
        topics: Topics {
            by_category,
            outcomes: t.outcomes.into(),
        },
        producer: raw.producer,
    })
}

/// Kafka's own rule for topic names.
fn check_topic(path: &str, topic: &str) -> Result<(), ConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || !topic.chars().all(legal)
        || topic == "."
        || topic == ".."
    {
        return Err(ConfigError::new(
            path,
            format!("{topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

/// Compiles `[scrub]`, with a project's overrides on top when given.
fn compile_scrub(
    compiler: &mut scrub::Compiler,
    path: &str,
    global: &file::Scrub,
    project: Option<&file::Scrub>,
) -> Result<Scrubber, ConfigError> {
    let over = project.cloned().unwrap_or_default();
    let methods = over.methods.or(global.methods.clone()).unwrap_or_default();
    let methods = methods
        .into_iter()
        .map(|(rule, m)| {
            scrub::Method::parse(&m)
                .map(|m| (rule.clone(), m))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.methods.{rule}"),
                        format!("{m:?} is not one of remove, replace, mask, hash"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rules = over.rules.or(global.rules.clone()).unwrap_or_default();
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let method = scrub::Method::parse(&r.method).ok_or_else(|| {
                ConfigError::new(
                    format!("{path}.rules[{i}].method"),
                    format!("{:?} is not one of remove, replace, mask, hash", r.method),
                )
            })?;
            let legal = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if r.name.is_empty() || r.name.len() > 64 || !r.name.chars().all(legal) {
                return Err(ConfigError::new(
                    format!("{path}.rules[{i}].name"),
                    "a rule name is 1-64 of a-z A-Z 0-9 _ -",
                ));
            }
            Ok(scrub::CustomRule {
                name: r.name,
                pattern: r.pattern,
                method,
                paths: r.paths,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settings = scrub::Settings {
        defaults: over.defaults.or(global.defaults).unwrap_or(true),
        scrub_ip_addresses: over
            .scrub_ip_addresses
            .or(global.scrub_ip_addresses)
            .unwrap_or(true),
        sensitive_fields: over
            .sensitive_fields
            .or(global.sensitive_fields.clone())
            .unwrap_or_default(),
        safe_fields: over
            .safe_fields
            .or(global.safe_fields.clone())
            .unwrap_or_default(),
        hash_key: over.hash_key.or(global.hash_key.clone()).map(|k| k.0),
        methods,
        rules,
    };
    compiler
        .scrubber(&settings)
        .map_err(|e| ConfigError::new(path, e.to_string()))
}

fn validate_quotas(
    path: &str,
    raw: &[file::Quota],
) -> Result<Vec<crate::quota::Quota>, ConfigError> {
    use crate::quota::{Quota, Scope};
    raw.iter()
        .enumerate()
        .map(|(i, q)| {
            let at = |key: &str| format!("{path}[{i}].{key}");
            let categories = q
                .categories
                .iter()
                .map(|c| {
                    DataCategory::from_name(c).ok_or_else(|| {
                        ConfigError::new(at("categories"), format!("{c:?} is not a data category (error, transaction, attachment, session, ...)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if q.window_secs == 0 {
                return Err(ConfigError::new(at("window_secs"), "must be at least 1"));
            }
            let scope = Scope::parse(&q.scope)
                .ok_or_else(|| ConfigError::new(at("scope"), format!("{:?} is not one of project, key, fingerprint", q.scope)))?;
            let burst = q.burst.unwrap_or(q.limit);
            if q.limit > 0 && burst == 0 {
                return Err(ConfigError::new(at("burst"), "must be at least 1 when limit is above 0"));
            }
            Ok(Quota {
                categories,
                limit: q.limit,
                window: Duration::from_secs(q.window_secs),
                burst,
                scope,
            })
        })
        .collect()
}

fn validate_sampling(
    path: &str,
    raw: Option<&file::Sampling>,
) -> Result<crate::sample::Sampling, ConfigError> {
    use crate::sample::{Glob, Rule, Sampling};
    let Some(raw) = raw else {
        return Ok(Sampling::default());
    };
    let rate = |key: String, r: f64| {
        if (0.0..=1.0).contains(&r) {
            Ok(r)
        } else {
            Err(ConfigError::new(
                key,
                format!("{r} is not a rate between 0.0 and 1.0"),
            ))
        }
    };
    let glob = |key: String, g: &Option<String>| {
        g.as_deref()
            .map(|g| Glob::new(g).map_err(|e| ConfigError::new(key, e.to_string())))
            .transpose()
    };
    Ok(Sampling {
        error_rate: rate(format!("{path}.error_rate"), raw.error_rate.unwrap_or(1.0))?,
        transaction_rate: rate(
            format!("{path}.transaction_rate"),
            raw.transaction_rate.unwrap_or(1.0),
        )?,
        rules: raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rule {
                    environment: r.environment.clone(),
                    release: glob(format!("{path}.rules[{i}].release"), &r.release)?,
                    transaction: glob(format!("{path}.rules[{i}].transaction"), &r.transaction)?,
                    rate: rate(format!("{path}.rules[{i}].rate"), r.rate)?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

fn validate_projects(
    raw: Vec<file::Project>,
    global_scrub: &file::Scrub,
    compiler: &mut scrub::Compiler,
    global_scrubber: &Arc<Scrubber>,
    defaults: &file::Defaults,
) -> Result<Projects, ConfigError> {
    let default_quotas = validate_quotas("defaults.quotas", &defaults.quotas)?;
    let default_sampling = validate_sampling("defaults.sampling", defaults.sampling.as_ref())?;
    let mut projects = Projects::default();
    for (i, p) in raw.into_iter().enumerate() {
        if p.id == 0 {
            return Err(ConfigError::new(
                format!("projects[{i}].id"),
                "must be a positive number",
            ));
        }
        if projects.by_id.contains_key(&p.id) {
            return Err(ConfigError::new(
                format!("projects[{i}].id"),
                format!("project {} is declared twice", p.id),
            ));
        }
        if p.public_keys.is_empty() {
            return Err(ConfigError::new(
                format!("projects[{i}].public_keys"),
                "needs at least one key",
            ));
        }
        for (j, key) in p.public_keys.iter().enumerate() {
            let path = format!("projects[{i}].public_keys[{j}]");
            if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    path,
                    "a public key is 32 hexadecimal characters, as in a DSN",
                ));
            }
            if let Some(other) = projects.by_key.insert(key.to_ascii_lowercase(), p.id) {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "this key already belongs to project {other}: a key belongs to one project"
                    ),
                ));
            }
        }
        let scrubber = match &p.scrub {
            None => global_scrubber.clone(),
            Some(over) => Arc::new(compile_scrub(
                compiler,
                &format!("projects[{i}].scrub"),
                global_scrub,
                Some(over),
            )?),
        };
        let quotas = match &p.quotas {
            Some(q) => validate_quotas(&format!("projects[{i}].quotas"), q)?,
            None => default_quotas.clone(),
        };
        let sampling = match &p.sampling {
            Some(sm) => validate_sampling(&format!("projects[{i}].sampling"), Some(sm))?,
            None => default_sampling.clone(),
        };
        let project = Project {
            id: p.id,
            label: p.id.to_string().into(),
            scrubber,
            quotas,
            sampling,
            public_keys: p
                .public_keys
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
        };
        projects.by_id.insert(p.id, Arc::new(project));
    }
    Ok(projects)
}

/// The levels a log filter may name alone.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter (tracing's `EnvFilter` syntax: `info`,
/// `warn,edge_relay=debug`). A bare word that is no level is refused, though
/// the syntax allows it (a target with every level): `warning` or `verbose`
/// would otherwise match no target and silence every log line.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))?;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', ':', '[']);
        // tracing also takes a level's number, 0 (off) to 5 (trace).
        let numbered = matches!(directive, "0" | "1" | "2" | "3" | "4" | "5");
        if bare && !numbered && !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "{directive:?} is not a level (one of {}); a target alone needs a level: \"{directive}=debug\"",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse(&format!(
            "[server]\nlisten = \"127.0.0.1:3000\"\n[admin]\nlisten = \"127.0.0.1:3001\"\n\
             [kafka]\nbrokers = \"127.0.0.1:9092\"\n[[projects]]\nid = 42\npublic_keys = [\"{KEY}\"]\n"
        ))
        .expect("valid");
        assert_eq!(c.projects.project_of_key(KEY), Some(42));
        let Output::Kafka(k) = &c.output else {
            panic!("kafka output expected")
        };
        assert_eq!(
            &**k.topics.for_category(DataCategory::Error),
            "ingest-events"
        );
        assert_eq!(
            &**k.topics.for_category(DataCategory::Transaction),
            "ingest-transactions"
        );
        assert_eq!(&*k.topics.outcomes, "outcomes");
    }

    #[test]
    fn linger_defaults_by_ack_mode_and_a_set_value_stands() {
        let linger = |extra: &str| {
            let c = parse(&format!(
                "[kafka]\nbrokers = \"127.0.0.1:9092\"\n{extra}\n[spool]\npath = \"/tmp/x\"\n"
            ))
            .expect("valid");
            match c.output {
                Output::Kafka(k) => k.linger,
                Output::File(_) => panic!("kafka output expected"),
            }
        };
        assert_eq!(linger(""), Duration::from_millis(2));
        assert_eq!(
            linger("[delivery]\nack = \"memory\""),
            Duration::from_millis(2)
        );
        assert_eq!(
            linger("[delivery]\nack = \"spool\""),
            Duration::from_millis(20)
        );
        assert_eq!(
            linger("linger = \"5ms\"\n[delivery]\nack = \"spool\""),
            Duration::from_millis(5)
        );
        assert_eq!(linger("linger = \"0s\""), Duration::ZERO);
    }

    /// The delivery settings of a valid file with these `[spool]` keys.
    fn with_spool(keys: &str) -> DeliveryConfig {
        parse(&format!("[spool]\npath = \"/tmp/x\"\n{keys}"))
            .expect("valid")
            .delivery
    }

    #[test]
    fn the_spool_waits_longer_for_a_flush_only_at_the_cpu_limit() {
        let delays = |keys: &str| with_spool(keys).spool_commit_delays;
        let defaults = delays("");
        assert_eq!(defaults.pressed, Duration::from_millis(1));
        assert_eq!(defaults.light, Duration::from_micros(250));
        let set = delays("commit_delay = \"3ms\"\ncommit_delay_light = \"0s\"");
        assert_eq!(set.pressed, Duration::from_millis(3));
        assert_eq!(set.light, Duration::ZERO);
    }

    #[test]
    fn the_spool_goes_around_the_page_cache_unless_told_not_to() {
        let direct = |keys: &str| with_spool(keys).spool_direct_io;
        assert!(direct(""));
        assert!(!direct("direct_io = false"));
    }

    #[test]
    fn worker_threads_default_to_the_runtime_s_count_and_are_bounded() {
        let threads = |text: &str| parse(text).map(|c| c.server.worker_threads);
        assert_eq!(threads("").expect("valid"), None);
        assert_eq!(
            threads("[server]\nworker_threads = 0\n").expect("valid"),
            None
        );
        assert_eq!(
            threads("[server]\nworker_threads = 3\n").expect("valid"),
            NonZeroUsize::new(3)
        );
        let e = threads("[server]\nworker_threads = 1025\n").unwrap_err();
        assert!(e.to_string().starts_with("server.worker_threads"), "{e}");
        let e = threads("[server]\nworker_threads = -1\n").unwrap_err();
        assert!(e.to_string().contains("worker_threads"), "{e}");
    }

    #[test]
    fn body_memory_has_a_default_and_must_hold_the_largest_body() {
        let memory = |text: &str| parse(text).map(|c| c.server.max_body_memory);
        assert_eq!(memory("").expect("valid"), 64 << 20);
        assert_eq!(
            memory("[server]\nmax_body_memory = \"50MiB\"\n").expect("valid"),
            50 << 20
        );
        let e = memory("[server]\nmax_body_memory = \"49MiB\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.max_body_memory"), "{e}");
        let e = memory(
            "[server]\nmax_body_memory = \"2MiB\"\n[limits]\nmax_body_size = \"2MiB\"\nmax_inflated_size = \"3MiB\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("limits.max_inflated_size"), "{e}");
        assert_eq!(
            memory("[server]\nmax_body_memory = \"3MiB\"\n[limits]\nmax_body_size = \"2MiB\"\nmax_inflated_size = \"3MiB\"\n")
                .expect("valid"),
            3 << 20
        );
    }

    #[test]
    fn an_empty_file_runs_on_the_file_sink() {
        let c = parse("").expect("valid");
        assert!(
            matches!(c.output, Output::File(ref p) if p.as_os_str() == "edge-relay-items.jsonl")
        );
        assert_eq!(c.limits.max_body_size, 20 << 20);
        assert_eq!(c.shutdown.grace_period, Duration::from_secs(30));
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = parse("[server]\nlistn = \"127.0.0.1:3000\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.listn"), "{e}");
        let e = parse(&format!(
            "[[projects]]\nid = 1\npublic_keys = [\"{KEY}\"]\ncolour = 1\n"
        ))
        .unwrap_err();
        assert!(e.to_string().starts_with("projects[0].colour"), "{e}");
    }

    #[test]
    fn bad_values_say_which_key_and_why() {
        let cases = [
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            (
                "[limits]\nmax_body_size = \"lots\"\n",
                "limits.max_body_size",
            ),
            ("[limits]\nmax_items = 0\n", "limits.max_items"),
            ("[kafka]\ncompression = \"rar\"\n", "kafka.compression"),
            (
                "[kafka.producer]\nacks = \"1\"\n",
                "kafka.producer.\"acks\"",
            ),
            (
                "[kafka.topics]\nerror = \"bad topic\"\n",
                "kafka.topics.error",
            ),
            ("[kafka]\n[file_sink]\npath = \"x\"\n", "file_sink"),
            (
                "[[projects]]\nid = 1\npublic_keys = [\"short\"]\n",
                "projects[0].public_keys[0]",
            ),
            (
                "[[projects]]\nid = 1\npublic_keys = []\n",
                "projects[0].public_keys",
            ),
            (
                "[shutdown]\ngrace_period = \"soon\"\n",
                "shutdown.grace_period",
            ),
        ];
        for (text, path) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.to_string().starts_with(path), "{text:?} gave {e}");
        }
    }

    #[test]
    fn scrub_settings_are_checked_with_the_rule_name() {
        let e = parse("[[scrub.rules]]\nname = \"ticket\"\npattern = \"TCK-(\"\n").unwrap_err();
        assert!(e.to_string().starts_with("scrub:"), "{e}");
        assert!(e.to_string().contains("ticket"), "{e}");
        let huge = "[[scrub.rules]]\nname = \"huge\"\npattern = \"\\\\w{1000}\\\\w{1000}\"\n";
        let e = parse(huge).unwrap_err();
        assert!(e.to_string().contains("huge"), "{e}");
        let e = parse("[[scrub.rules]]\nname = \"t\"\npattern = \"x\"\nmethod = \"hash\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("hash_key"), "{e}");
        let e = parse("[[scrub.rules]]\nname = \"t\"\npattern = \"x\"\nmethod = \"shred\"\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("scrub.rules[0].method"), "{e}");
        let e = parse("[scrub]\nsafe_fields = [\"a..b\"]\n").unwrap_err();
        assert!(e.to_string().starts_with("scrub:"), "{e}");
        let e = parse(&format!(
            "[[projects]]\nid = 1\npublic_keys = [\"{KEY}\"]\n[projects.scrub]\nmethods = {{ nope = \"mask\" }}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().starts_with("projects[0].scrub"), "{e}");
        let c = parse("[scrub]\nhash_key = \"sekrit-hash-key\"\n").unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn quotas_and_sampling_from_the_contract() {
        let c = parse(&format!(
            "[[defaults.quotas]]\nlimit = 5\nwindow_secs = 1\n\
             [[projects]]\nid = 42\npublic_keys = [\"{KEY}\"]\n\
             [[projects.quotas]]\ncategories = [\"error\"]\nlimit = 100\nwindow_secs = 60\nburst = 100\nscope = \"project\"\n\
             [projects.sampling]\nerror_rate = 1.0\ntransaction_rate = 0.1\n\
             [[projects.sampling.rules]]\nenvironment = \"production\"\ntransaction = \"/health*\"\nrate = 0.0\n\
             [[projects]]\nid = 7\npublic_keys = [\"00000000000000000000000000000001\"]\n"
        ))
        .unwrap();
        let p = c.projects.get(42).unwrap();
        assert_eq!(p.quotas.len(), 1);
        assert_eq!(p.quotas[0].categories, vec![DataCategory::Error]);
        assert_eq!(p.sampling.transaction_rate, 0.1);
        assert_eq!(p.sampling.rules.len(), 1);
        let other = c.projects.get(7).unwrap();
        assert_eq!(
            other.quotas[0].limit, 5,
            "defaults apply to projects without their own"
        );
        assert_eq!(other.quotas[0].burst, 5, "burst defaults to limit");
        let cases = [
            (
                "[[defaults.quotas]]\nlimit = 1\nwindow_secs = 0\n",
                "defaults.quotas[0].window_secs",
            ),
            (
                "[[defaults.quotas]]\nlimit = 1\nwindow_secs = 1\nscope = \"org\"\n",
                "defaults.quotas[0].scope",
            ),
            (
                "[[defaults.quotas]]\ncategories = [\"errors\"]\nlimit = 1\nwindow_secs = 1\n",
                "defaults.quotas[0].categories",
            ),
            (
                "[defaults.sampling]\nerror_rate = 1.5\n",
                "defaults.sampling.error_rate",
            ),
        ];
        for (text, path) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.to_string().starts_with(path), "{text:?} gave {e}");
        }
    }

    #[test]
    fn variables_are_expanded_and_must_be_set() {
        let env = |name: &str| (name == "HASH_KEY").then(|| "from-env".to_owned());
        let c =
            Config::from_toml_with_env("[scrub]\nhash_key = \"${HASH_KEY}\"\n", &env, &[]).unwrap();
        assert!(format!("{:?}", c.scrubber).contains("[redacted]"));
        let e =
            Config::from_toml_with_env("[scrub]\nhash_key = \"${NOPE}\"\n", &env, &[]).unwrap_err();
        assert!(e.to_string().starts_with("${NOPE}"), "{e}");
        let c = Config::from_toml_with_env("[file_sink]\npath = \"a$${B}\"\n", &env, &[]).unwrap();
        assert!(matches!(c.output, Output::File(ref p) if p.as_os_str() == "a${B}"));
    }

    #[test]
    fn environment_overrides_keys() {
        let overrides = [
            (
                "EDGE_RELAY_SERVER__LISTEN".to_owned(),
                "0.0.0.0:3000".to_owned(),
            ),
            (
                "EDGE_RELAY_KAFKA__BROKERS".to_owned(),
                "kafka-1:9092,kafka-2:9092".to_owned(),
            ),
            ("EDGE_RELAY_LIMITS__MAX_ITEMS".to_owned(), "50".to_owned()),
        ];
        let c = Config::from_toml_with_env(
            "[server]\nlisten = \"127.0.0.1:3000\"\n",
            &|_| None,
            &overrides,
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(c.limits.max_items, 50);
        assert!(
            matches!(c.output, Output::Kafka(ref k) if k.brokers == "kafka-1:9092,kafka-2:9092")
        );
        let bad = [("EDGE_RELAY_SERVER__LISTN".to_owned(), "x".to_owned())];
        let e = Config::from_toml_with_env("", &|_| None, &bad).unwrap_err();
        assert!(e.to_string().starts_with("server.listn"), "{e}");
        // The error names the variable, on one line.
        assert!(
            e.message
                .ends_with("(set by the environment variable EDGE_RELAY_SERVER__LISTN)"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'), "{e}");
        for (name, value, path) in [
            ("EDGE_RELAY_SERVER__LISTEN", "garbage", "server.listen"),
            ("EDGE_RELAY_LIMITS__MAX_ITEMS", "abc", "limits.max_items"),
        ] {
            let set = [(name.to_owned(), value.to_owned())];
            let e = Config::from_toml_with_env("", &|_| None, &set).unwrap_err();
            assert_eq!(e.path, path);
            assert!(e.message.contains(name), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // An error in a key no variable set blames none.
        let set = [(
            "EDGE_RELAY_SERVER__LISTEN".to_owned(),
            "127.0.0.1:1".to_owned(),
        )];
        let e = Config::from_toml_with_env("[limits]\nmax_items = \"x\"\n", &|_| None, &set)
            .unwrap_err();
        assert!(!e.message.contains("environment"), "{e}");
    }

    #[test]
    fn a_reload_names_every_section_it_does_not_apply() {
        let base = "[[projects]]\nid = 1\npublic_keys = [\"0123456789abcdef0123456789abcdef\"]\n";
        let old = parse(base).unwrap();
        let changed = |section: &str| {
            let new = parse(&format!("{section}\n{base}")).unwrap();
            old.needs_restart(&new)
        };
        assert_eq!(changed(""), Vec::<&str>::new());
        for (section, named) in [
            ("[server]\nlisten = \"127.0.0.1:4000\"", "server/admin"),
            ("[admin]\nlisten = \"127.0.0.1:4001\"", "server/admin"),
            ("[limits]\nmax_items = 7", "limits"),
            ("[file_sink]\npath = \"x.jsonl\"", "kafka/file_sink"),
            ("[delivery]\nmax_in_flight = \"8MiB\"", "delivery/spool"),
            ("[spool]\nmax_size = \"2GiB\"", "delivery/spool"),
            ("[shutdown]\ngrace_period = \"7s\"", "shutdown"),
            ("[log]\nlevel = \"debug\"", "log"),
            ("[log]\nformat = \"json\"", "log"),
        ] {
            assert_eq!(changed(section), vec![named], "{section}");
        }
        // Outcome records go to Kafka only.
        let kafka = format!("[kafka]\nbrokers = \"127.0.0.1:9092\"\n{base}");
        let off = format!("[outcomes]\nenabled = false\n{kafka}");
        assert_eq!(
            parse(&kafka).unwrap().needs_restart(&parse(&off).unwrap()),
            vec!["outcomes"]
        );
        // A secret the Debug form hides is compared by its value.
        let sasl = |password: &str| {
            let text = format!(
                "[kafka]\nbrokers = \"127.0.0.1:9092\"\n[kafka.producer]\n\"sasl.password\" = \"{password}\"\n{base}"
            );
            parse(&text).unwrap()
        };
        assert_eq!(
            format!("{:?}", sasl("one").output),
            format!("{:?}", sasl("two").output),
            "hidden in the Debug form"
        );
        assert_eq!(
            sasl("one").needs_restart(&sasl("two")),
            vec!["kafka/file_sink"]
        );
        // What a reload does apply is not named.
        let more = format!(
            "{base}[[projects]]\nid = 2\npublic_keys = [\"fedcba9876543210fedcba9876543210\"]\n"
        );
        assert!(old.needs_restart(&parse(&more).unwrap()).is_empty());
    }

    #[test]
    fn only_section_and_key_names_are_overrides() {
        for name in [
            "EDGE_RELAY_SERVER__LISTEN",
            "EDGE_RELAY_KAFKA__TOPICS__ERROR",
            "EDGE_RELAY_SERVER__LISTN",
        ] {
            assert!(is_override(name), "{name}");
        }
        for name in [
            "EDGE_RELAY_HASH_KEY",
            "EDGE_RELAY_SERVICE_HOST",
            "EDGE_RELAY_PORT_3000_TCP_ADDR",
            "EDGE_RELAY_",
            "KAFKA__BROKERS",
            "edge_relay_server__listen",
        ] {
            assert!(!is_override(name), "{name}");
        }
    }

    #[test]
    fn override_names_are_bounded() {
        // Found by the fuzz harness: one table per `__` overflowed the stack.
        let deep = format!("EDGE_RELAY_{}", "A__".repeat(16_000));
        for name in [
            deep.as_str(),
            "EDGE_RELAY_A__B__C__D__E",
            "X",
            "EDGE_RELAY_",
        ] {
            let overrides = [(name.to_owned(), "1".to_owned())];
            let e = Config::from_toml_with_env("", &|_| None, &overrides).unwrap_err();
            assert!(e.message.contains("SECTION__"), "{name:.40}: {e}");
        }
    }

    #[test]
    fn a_key_belongs_to_one_project() {
        let e = parse(&format!(
            "[[projects]]\nid = 1\npublic_keys = [\"{KEY}\"]\n[[projects]]\nid = 2\npublic_keys = [\"{KEY}\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("already belongs to project 1"),
            "{e}"
        );
    }

    #[test]
    fn tls_and_sasl_settings_reach_librdkafka() {
        // librdkafka refuses these names and values unless built with TLS and SASL.
        let env = |name: &str| (name == "KAFKA_PASSWORD").then(|| "s3cr3t-pw".to_owned());
        let text = "[kafka]\nbrokers = \"kafka:9093\"\n[kafka.producer]\n\
            \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
            \"sasl.username\" = \"relay\"\n\"sasl.password\" = \"${KAFKA_PASSWORD}\"\n\
            \"ssl.endpoint.identification.algorithm\" = \"https\"\n";
        let c = Config::from_toml_with_env(text, &env, &[]).expect("TLS and SASL are compiled in");
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        assert!(!c.summary().contains("s3cr3t-pw"));
        let plain = "[kafka]\n[kafka.producer]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n";
        assert!(Config::from_toml(plain).is_ok());
    }

    #[test]
    fn secrets_in_producer_settings_are_redacted_in_debug() {
        let c = parse("[kafka.producer]\n\"sasl.password\" = \"hunter2\"\n\"linger.ms\" = \"7\"\n")
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("linger.ms"));
    }
}

#[cfg(test)]
mod log_filter_tests {
    use super::*;

    #[test]
    fn a_word_that_is_no_level_is_refused() {
        for ok in [
            "info",
            "WARN",
            "warn,edge_relay=debug",
            "edge_relay::server=trace",
            "off",
            "",
            // A level's number, as tracing takes it.
            "3",
            "2,edge_relay=5",
        ] {
            assert!(check_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["warning", "verbose", "info,warning"] {
            let e = check_log_filter(bad).unwrap_err();
            assert!(e.contains("is not a level"), "{e}");
        }
        let base = "[[projects]]\nid = 1\npublic_keys = [\"0123456789abcdef0123456789abcdef\"]\n";
        let e = Config::from_toml(&format!("[log]\nlevel = \"warning\"\n{base}")).unwrap_err();
        assert!(e.to_string().starts_with("log.level"), "{e}");
    }
}
