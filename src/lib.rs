//! edge-relay: a small, fast relay between Sentry SDKs and Kafka.
//!
//! # The path of an event through the relay
//!
//! An SDK posts an envelope to `POST /api/{project_id}/envelope/` (or a single
//! JSON event to the legacy `/store/` endpoint). The request walks these
//! stages, in this order, all called from one function,
//! [`pipeline::Pipeline::handle`]:
//!
//! 1. [`server`] accepts the connection (HTTP/1.1 or h2c), routes the path,
//!    answers CORS preflights, and reads the body under a wire-size cap and a
//!    read deadline. When too many accepted bytes already wait for Kafka or
//!    the spool, it answers 503 before reading the body. This, [`produce`]
//!    and [`spool`] are the only stages that do I/O.
//! 2. [`auth`] finds the public key (the `X-Sentry-Auth` or
//!    `Authorization: Sentry` header, the `sentry_key` query parameter, or
//!    later the envelope header's `dsn`) and checks that it belongs to the
//!    project in the path.
//! 3. [`decompress`] inflates `gzip`, `deflate`, `br` or `zstd` bodies,
//!    streaming, and stops at the inflated-size cap: a decompression bomb is
//!    refused having inflated at most the cap. Large bodies inflate on a fixed
//!    pool of one thread per core, which bounds how many inflate at once.
//! 4. [`envelope`] parses the envelope into a header and items, each item
//!    typed and given its data category; events are checked to be JSON
//!    objects of bounded depth, in one pass that also reads ([`event`]) what
//!    the later stages need, without building a tree.
//! 5. [`quota`] checks the token buckets of the project, key and
//!    fingerprint; [`sample`] keeps or drops whole traces; [`scrub`] redacts
//!    PII over the event's text; [`fingerprint`] computes the grouping hash.
//! 6. Every accepted item becomes one [`produce::Record`] (key: the event
//!    id; headers: `project_id`, `event_id`, `item_type`, `received_at`,
//!    `fingerprint`, `sample_rate`), and [`deliver`] hands it on as
//!    `delivery.ack` promises: to Kafka (idempotent, `acks=all`), or to the
//!    on-disk [`spool`] that is replayed into Kafka, or, with no `[kafka]`
//!    section, to a JSON-lines file.
//! 7. Every item ends in exactly one [`outcome::Outcome`]: accepted, or
//!    dropped with a reason. [`metrics`] counts both, and the same outcome
//!    picks the HTTP status of the answer.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, its validation into typed values.
//! - [`outcome`]: the one enum of drop reasons, and what each one means.
//! - [`auth`], [`decompress`], [`envelope`]: the pure stages above;
//!   [`event`]: what the later stages read of an event, read without a tree.
//! - [`pipeline`]: the single function that calls the stages in order.
//! - [`quota`], [`sample`], [`scrub`], [`fingerprint`]: the pure stages after parsing.
//! - [`deliver`]: the ack modes, the replay of the spool, the in-flight bound.
//! - [`spool`]: the on-disk spool, an append-only log of segment files with a
//!   checksum per record.
//! - [`produce`]: the Kafka producer and the file sink.
//! - [`metrics`]: the Prometheus metrics, registered on a passed-in registry.
//! - [`server`]: the SDK listener, the admin listener (`/metrics`,
//!   `/healthz`, `/readyz`) and the bounded shutdown sequence.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod decompress;
pub mod deliver;
pub mod envelope;
pub mod event;
pub mod fingerprint;
pub mod health;
pub mod held;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod produce;
pub mod quota;
pub mod sample;
pub mod scrub;
pub mod server;
pub mod spool;

pub use config::Config;
pub use server::{Relay, RelayHandle, ShutdownReport};
