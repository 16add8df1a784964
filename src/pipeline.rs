//! The one function that walks a request through the stages in order, and
//! the one place that maps a failure to its HTTP status and drop reason.

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

use crate::auth::{self, AuthError};
use crate::config::{Config, ConfigError, Limits, Project, Projects};
use crate::decompress::{self, DecodeError, Encoding};
use crate::deliver::{DeliverError, Delivery};
use crate::envelope::{
    self, DataCategory, Envelope, EnvelopeError, Event, EventError, Item, ItemType,
};
use crate::held::Held;
use crate::metrics::{self, Metrics, ENVELOPE_CATEGORY};
use crate::outcome::{DropReason, Outcome};
use crate::produce::{ProduceError, Record, RecordHeaders};
use crate::quota::{self, Demand, Limited};
use crate::sample;
use crate::scrub::Fallback;

/// Which ingest endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/{id}/envelope/`.
    Envelope,
    /// `POST /api/{id}/store/`: one JSON event.
    Store,
}

impl Endpoint {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Envelope => "envelope",
            Endpoint::Store => "store",
        }
    }
}

/// Where a request's key may come from before its body is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `X-Sentry-Auth` header.
    pub sentry_auth: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The query string.
    pub query: Option<&'a str>,
}

/// Who a request is from, as far as its headers tell.
#[derive(Debug)]
pub struct Authenticated {
    /// The project in the path.
    pub project: Arc<Project>,
    /// The key from the headers or query, if any.
    pub key: Option<String>,
    /// The projects of the configuration it was checked against.
    pub projects: Arc<Projects>,
}

/// A request that passed the first authentication, with its body read.
#[derive(Debug)]
pub struct Request {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The project in the path.
    pub project: Arc<Project>,
    /// The projects of the configuration the request started under.
    pub projects: Arc<Projects>,
    /// The key from the headers or query, already authorized; `None` when the
    /// key must come from the envelope's DSN.
    pub key: Option<String>,
    /// The `Content-Encoding` header.
    pub content_encoding: Option<String>,
    /// The body as received.
    pub body: Bytes,
    /// The body's share of `server.max_body_memory`: what arrived, then,
    /// once inflated, the inflated body's size. Given back when the request
    /// is done with.
    pub held: Held,
    /// When the request arrived (the clock is read at the edge).
    pub received_at: SystemTime,
    /// What [`Delivery::announce`](crate::deliver::Delivery::announce) gave
    /// when the request was taken: handed on to the delivery.
    pub announced: Option<crate::spool::Announced>,
}

/// A failure that refuses a whole request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The body could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The envelope could not be parsed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The `/store/` body is not an event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The body is larger than `limits.max_body_size`.
    #[error("body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive within `server.body_read_timeout`.
    #[error("body not received in time")]
    BodyTimeout,
    /// The connection failed while the body was read.
    #[error("body could not be read: {0}")]
    BodyRead(String),
    /// The project id in the path is not a number.
    #[error("the project id in the path is not a number")]
    BadProjectId,
    /// Too much accepted work is waiting for Kafka or the spool.
    #[error("the relay is overloaded; retry later")]
    Overloaded,
    /// A bug: the relay failed in a way it should not.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A Sentry endpoint the relay does not take.
    #[error("this relay does not take {0}; SDKs send envelopes to /api/{{project_id}}/envelope/")]
    Unsupported(&'static str),
}

impl RequestError {
    /// The one mapping from a failure to its HTTP status and drop reason.
    pub fn classify(&self) -> (StatusCode, DropReason) {
        use RequestError as E;
        match self {
            E::Auth(e) => (e.status(), DropReason::Unauthorized),
            E::Decode(DecodeError::Unsupported(_)) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, DropReason::Invalid)
            }
            E::Decode(DecodeError::TooLarge { .. }) | E::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, DropReason::TooLarge)
            }
            E::Decode(DecodeError::Corrupt { .. })
            | E::Event(_)
            | E::BodyRead(_)
            | E::BadProjectId => (StatusCode::BAD_REQUEST, DropReason::Invalid),
            E::Envelope(e) if e.is_too_large() => {
                (StatusCode::PAYLOAD_TOO_LARGE, DropReason::TooLarge)
            }
            E::Envelope(_) => (StatusCode::BAD_REQUEST, DropReason::Invalid),
            E::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, DropReason::Invalid),
            E::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, DropReason::Overloaded),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, DropReason::Internal),
            E::Unsupported(_) => (StatusCode::NOT_FOUND, DropReason::Unsupported),
        }
    }
}

/// The pipeline's answer, which the HTTP edge turns into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The event id for a `{"id": ...}` body, on success.
    pub event_id: Option<String>,
    /// A short reason, for the error body and `X-Sentry-Error`.
    pub detail: Option<String>,
    /// `Retry-After`, in whole seconds, when items were rate limited.
    pub retry_after: Option<u64>,
    /// `X-Sentry-Rate-Limits`, when items were rate limited.
    pub rate_limits: Option<String>,
}

/// Everything a request needs: configuration, destination, metrics.
pub struct Pipeline {
    /// The configuration requests run under; swapped whole on reload, and
    /// each request keeps the one it started with.
    pub config: ArcSwap<Config>,
    /// Where accepted items go, as the ack mode promises.
    pub delivery: Arc<Delivery>,
    /// Counters for every outcome.
    pub metrics: Metrics,
    /// Every quota bucket.
    pub buckets: quota::Buckets,
    /// The monotonic clock quotas run on.
    pub clock: Arc<dyn quota::Clock>,
    /// Uniform randomness in [0, 1) for error sampling.
    pub random: fn() -> f64,
    /// Outcome counts per window, for the outcomes topic.
    pub outcomes: crate::outcome::Aggregator,
    /// The threads that inflate large bodies: one per core. Bounds the
    /// memory of bodies being inflated at once (each up to
    /// `max_inflated_size`), keeps them off the other requests' threads, and
    /// keeps the allocator's cached memory for them to a fixed set of threads.
    pub inflaters: Inflaters,
    /// Keeps warnings about drops to one line per reason per interval.
    pub drop_logs: DropLogs,
}

/// Encoded bodies this large on the wire are inflated on
/// [`Pipeline::inflaters`]; smaller ones too once they inflate past
/// [`INLINE_INFLATE`]. Identity bodies never are: they have nothing to inflate.
pub const HEAVY_BODY: usize = 64 * 1024;

/// Smaller bodies are inflated inline up to this size; past it, again on the inflaters.
const INLINE_INFLATE: usize = 1 << 20;

/// A fixed set of threads that run inflation jobs, one at a time each.
pub struct Inflaters {
    /// Jobs for the threads.
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Inflaters {
    /// Starts `threads` threads.
    pub fn new(threads: usize) -> Inflaters {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("inflate-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().expect("inflater queue lock").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("the OS can start the inflater threads at startup");
        }
        Inflaters {
            jobs: std::sync::Mutex::new(tx),
        }
    }

    /// Runs `f` on one of the threads and waits for its result; `None` if it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Ok(value) = result {
                let _ = tx.send(value);
            }
        });
        let _ = self.jobs.lock().expect("inflater queue lock").send(job);
        rx.await.ok()
    }

    /// Decodes a body by its `Content-Encoding` into at most `limit` bytes,
    /// where [`Inflaters::capped`] says. An identity body has nothing to
    /// inflate: its size is checked here, and it never waits in the threads'
    /// queue behind bodies that do (decompression bombs among them).
    pub async fn decode(
        &self,
        encoding: Encoding,
        body: Bytes,
        limit: usize,
    ) -> Result<Bytes, RequestError> {
        if encoding == Encoding::Identity {
            return Ok(decompress::decode(encoding, body, limit)?);
        }
        self.capped(body, limit, move |body, limit| {
            decompress::decode(encoding, body, limit)
        })
        .await
    }

    /// Decodes a legacy `/store/` body (base64, of zlib perhaps) into at most
    /// `limit` bytes, as [`decompress::decode_legacy_store`] does, where
    /// [`Inflaters::capped`] says.
    pub async fn decode_legacy_store(
        &self,
        body: Bytes,
        limit: usize,
    ) -> Result<Bytes, RequestError> {
        self.capped(body, limit, decompress::decode_legacy_store)
            .await
    }

    /// Runs `decode`, which inflates its input into at most the limit it is
    /// given: inline when the input is smaller than [`HEAVY_BODY`] and what
    /// it inflates to fits in [`INLINE_INFLATE`] (brotli and zstd can inflate
    /// a kilobyte to the cap), else on the threads, up to `limit`.
    async fn capped<T: Send + 'static>(
        &self,
        input: Bytes,
        limit: usize,
        decode: impl Fn(Bytes, usize) -> Result<T, DecodeError> + Send + 'static,
    ) -> Result<T, RequestError> {
        if input.len() < HEAVY_BODY {
            match decode(input.clone(), limit.min(INLINE_INFLATE)) {
                Err(DecodeError::TooLarge { .. }) if limit > INLINE_INFLATE => {}
                done => return Ok(done?),
            }
        }
        let decoded = self
            .run(move || decode(input, limit))
            .await
            .ok_or(RequestError::Internal("an inflater thread panicked"))?;
        Ok(decoded?)
    }
}

/// An item that passed its checks; events come read.
struct Checked<'a> {
    /// The event's own id.
    own_id: Option<String>,
    /// The event, for events and transactions.
    event: Option<Event<'a>>,
}

/// An envelope's sampling fate.
#[derive(Clone, Copy)]
enum SampleFate {
    /// Kept; the rate it survived.
    Keep(f64),
    /// Sampled out.
    Drop,
}

/// Items that share the sampling fate of their envelope's event or transaction.
fn follows_sampling(ty: ItemType) -> bool {
    !matches!(
        ty,
        ItemType::Session | ItemType::CheckIn | ItemType::ClientReport
    )
}

/// Items that belong to the envelope's event or transaction and are dropped
/// with it, for whatever reason it was dropped (as Sentry does): an event's
/// attachments and user report, a transaction's attachments and profile.
/// Without their event they are orphans nobody can see, that still cost
/// quota and storage.
fn belongs_to(primary: ItemType, ty: ItemType) -> bool {
    match primary {
        ItemType::Event => matches!(ty, ItemType::Attachment | ItemType::UserReport),
        ItemType::Transaction => matches!(ty, ItemType::Attachment | ItemType::Profile),
        _ => false,
    }
}

/// A rate for the `sample_rate` header: as short as it can be and still exact.
fn format_rate(rate: f64) -> String {
    let text = format!("{rate}");
    if text.len() > 12 {
        format!("{rate:.9}")
    } else {
        text
    }
}

/// The fate of one item, before it is counted.
struct ItemFate {
    /// The category label it is counted under.
    category: &'static str,
    result: Result<(), DropReason>,
}

/// The category label of client reports dropped unread: they count against
/// no data category, and are otherwise consumed rather than counted.
const CLIENT_REPORT_CATEGORY: &str = "client_report";

impl Pipeline {
    /// The first stage, before the body is read: the project must exist and a
    /// key in the headers or query must belong to it, so that a bad key is
    /// refused without reading or inflating anything.
    pub fn authenticate(
        &self,
        project_id: u64,
        credentials: Credentials<'_>,
    ) -> Result<Authenticated, RequestError> {
        let key = auth::key_from_request(
            credentials.sentry_auth,
            credentials.authorization,
            credentials.query,
        )?;
        let projects = self.config.load().projects.clone();
        let project = projects
            .get(project_id)
            .cloned()
            .ok_or(AuthError::UnknownProject)?;
        if let Some(k) = &key {
            auth::authorize(&projects, project.id, k)?;
        }
        Ok(Authenticated {
            project,
            key,
            projects,
        })
    }

    /// Walks one authenticated request through the remaining stages and
    /// counts every item's outcome.
    pub async fn handle(&self, mut req: Request) -> Answer {
        let project = req.project.clone();
        let wire = std::mem::take(&mut req.body);
        let body = match self.inflate(&mut req, wire).await {
            Ok(body) => body,
            Err(e) => return self.reject(&project.label, &e),
        };
        let (envelope, key) = match self.admit(&req, body) {
            Ok(admitted) => admitted,
            Err(e) => return self.reject(&project.label, &e),
        };

        // Stage: per-item checks (size; events must be JSON objects, parsed once here).
        let received_at: Arc<str> = humantime::format_rfc3339_millis(req.received_at)
            .to_string()
            .into();
        let limits = self.config.load().limits;
        let mut checked = Vec::with_capacity(envelope.items.len());
        let mut fates = Vec::with_capacity(envelope.items.len());
        // Why the first item refused here was refused, for the answer's detail.
        let mut why: Option<(DropReason, String)> = None;
        for (index, item) in envelope.items.iter().enumerate() {
            match item.category() {
                Some(category) => {
                    let check = self.check_item(item, &limits).map_err(|(reason, what)| {
                        why.get_or_insert_with(|| {
                            (reason, format!("item {index} ({}): {what}", item.type_name))
                        });
                        reason
                    });
                    checked.push((item, category, check));
                }
                // Client reports: the SDK's own drop counts, consumed into metrics.
                None => {
                    let read = self.count_client_report(&project.label, &item.payload, &limits);
                    if let Err(reason) = read {
                        fates.push(ItemFate {
                            category: CLIENT_REPORT_CATEGORY,
                            result: Err(reason),
                        });
                    }
                }
            }
        }
        // The envelope's event id: the header's, else the first event's, else a new one.
        let event_id = envelope
            .header
            .event_id
            .as_deref()
            .and_then(envelope::normalize_event_id)
            .or_else(|| {
                checked
                    .iter()
                    .find_map(|(_, _, c)| c.as_ref().ok().and_then(|c| c.own_id.clone()))
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());

        // Stage: sampling, decided once per envelope from its event or
        // transaction; the envelope's other items (attachments, profiles,
        // replays) share its fate.
        let sampling = self.sample_envelope(&envelope, &project, &checked);

        // What the envelope's gzip'd attachments may inflate to, together:
        // as much as a body may, so that a small body of many of them costs
        // no more than a large one.
        let mut gzip_budget = limits.max_inflated_size;
        let now = self.clock.now();
        let mut limits: Vec<Limited> = Vec::new();
        let mut records = Vec::with_capacity(checked.len());
        // The envelope's event or transaction goes first (the others keep
        // their order): the items that belong to it share its fate.
        let primary = checked
            .iter()
            .map(|(item, _, _)| item.ty)
            .find(|ty| matches!(ty, ItemType::Event | ItemType::Transaction));
        checked.sort_by_key(|(item, _, _)| Some(item.ty) != primary);
        // Why the primary item was dropped, once it was.
        let mut primary_dropped: Option<DropReason> = None;
        for (index, (item, category, check)) in checked.into_iter().enumerate() {
            let is_primary = index == 0 && primary.is_some();
            let inherited =
                primary_dropped.filter(|_| primary.is_some_and(|p| belongs_to(p, item.ty)));
            let mut drop = |fates: &mut Vec<ItemFate>, reason| {
                if is_primary {
                    primary_dropped = Some(reason);
                }
                fates.push(ItemFate {
                    category: category.as_str(),
                    result: Err(reason),
                })
            };
            if let Some(reason) = inherited {
                drop(&mut fates, reason);
                continue;
            }
            let Checked { own_id, event } = match check {
                Ok(checked) => checked,
                Err(reason) => {
                    drop(&mut fates, reason);
                    continue;
                }
            };
            // Stage: fingerprint (needed now: quotas may be scoped by it).
            let fingerprint = match (item.ty, &event) {
                (ItemType::Event, Some(event)) => event.fingerprint(),
                _ => None,
            };

            // Stage: quotas (inbound filters would come before this).
            let demand = Demand {
                project: project.id,
                key: &key,
                fingerprint: fingerprint.as_deref(),
                category,
                quantity: if category == DataCategory::Attachment {
                    item.payload.len() as u64
                } else {
                    1
                },
            };
            let started = std::time::Instant::now();
            let quota = self.buckets.check(&project.quotas, demand, now);
            observe(&self.metrics.hot.quota, started);
            if let Err(limited) = quota {
                self.metrics
                    .quota_decisions
                    .with_label_values(&[&project.label, "limited"])
                    .inc();
                if limited.never {
                    // Larger than the quota's whole burst: waiting will not
                    // help, and the SDK must not back off the category for it.
                    why.get_or_insert_with(|| {
                        (
                            DropReason::TooLarge,
                            format!(
                                "{} ({} bytes) is larger than the quota's burst",
                                item.type_name,
                                item.payload.len()
                            ),
                        )
                    });
                    drop(&mut fates, DropReason::TooLarge);
                    continue;
                }
                if !limits.contains(&limited) {
                    limits.push(limited);
                }
                drop(&mut fates, DropReason::RateLimited);
                continue;
            }
            self.metrics
                .quota_decisions
                .with_label_values(&[&project.label, "allowed"])
                .inc();

            // Stage: sample.
            let sample_rate = match sampling {
                Some(SampleFate::Drop) if follows_sampling(item.ty) => {
                    self.metrics
                        .sampling_decisions
                        .with_label_values(&[&project.label, "dropped"])
                        .inc();
                    drop(&mut fates, DropReason::Sampled);
                    continue;
                }
                Some(SampleFate::Keep(rate)) if follows_sampling(item.ty) => {
                    self.metrics
                        .sampling_decisions
                        .with_label_values(&[&project.label, "kept"])
                        .inc();
                    Some(rate)
                }
                _ => None,
            };

            // Stage: scrub PII.
            let payload = match self.scrub(item, &project, event, &mut gzip_budget) {
                Ok(payload) => payload,
                Err(reason) => {
                    drop(&mut fates, reason);
                    continue;
                }
            };
            let id = own_id.unwrap_or_else(|| event_id.clone());
            records.push(Record {
                topic: self
                    .delivery
                    .producer()
                    .topics()
                    .for_category(category)
                    .clone(),
                key: id.clone(),
                payload,
                headers: RecordHeaders {
                    project_id: project.label.clone(),
                    event_id: id,
                    item_type: item.type_name.clone(),
                    received_at: received_at.clone(),
                    fingerprint,
                    sample_rate: sample_rate.map(format_rate),
                },
            });
            fates.push(ItemFate {
                category: category.as_str(),
                result: Ok(()),
            });
        }

        // The inflated body is not needed past here: freed now, by the thread
        // that has it in its cache, rather than held across the wait for the
        // disk or the broker (a request thread's next body reuses it).
        drop(envelope);
        // Stage: produce, and wait for every acknowledgement. Should this future
        // be dropped before the acknowledgements arrive, the guard counts the
        // items as `internal` rather than let them leave without an outcome.
        let guard = Unsettled {
            pipeline: self,
            project: &project.label,
            key: &key,
            categories: fates
                .iter()
                .filter(|f| f.result.is_ok())
                .map(|f| f.category)
                .collect(),
        };
        let mut delivery = self
            .delivery
            .deliver(records, req.announced.take())
            .await
            .into_iter();
        guard.disarm();
        for fate in fates.iter_mut().filter(|f| f.result.is_ok()) {
            let result = delivery
                .next()
                .unwrap_or(Err(DeliverError::Produce(ProduceError::Canceled)));
            if let Err(e) = result {
                let reason = match e {
                    DeliverError::SpoolFull => DropReason::SpoolFull,
                    DeliverError::Spool(_) | DeliverError::Produce(ProduceError::File(_)) => {
                        DropReason::Internal
                    }
                    DeliverError::Produce(ref e) if e.is_too_large() => DropReason::TooLarge,
                    DeliverError::Produce(_) => DropReason::KafkaError,
                };
                log_at(
                    &self.drop_logs,
                    &project.label,
                    reason,
                    &e,
                    "item not delivered",
                );
                fate.result = Err(reason);
            }
        }
        self.settle(&project, &key, &fates, event_id, &limits, why)
    }

    /// Stage: body limit and decompression (and a legacy `/store/` body's
    /// base64 and zlib); large encoded bodies on the inflater threads.
    ///
    /// The inflated body takes the wire body's place in the request's share
    /// of `server.max_body_memory`; one that does not fit there is refused
    /// as `overloaded` (503), as a body that does not fit as it arrives is.
    async fn inflate(&self, req: &mut Request, wire: Bytes) -> Result<Bytes, RequestError> {
        let config = self.config.load();
        let limit = config.limits.max_inflated_size;
        let max_memory = config.server.max_body_memory;
        self.metrics.hot.wire_bytes.inc_by(wire.len() as u64);
        let encoding = Encoding::from_header(req.content_encoding.as_deref())?;
        self.metrics
            .request_encodings
            .with_label_values(&[encoding.as_str()])
            .inc();
        let started = std::time::Instant::now();
        let mut body = self.inflaters.decode(encoding, wire, limit).await?;
        if req.endpoint == Endpoint::Store && decompress::is_legacy_store(&body) {
            body = self.inflaters.decode_legacy_store(body, limit).await?;
        }
        if !req.held.resize(body.len(), max_memory) {
            return Err(RequestError::Overloaded);
        }
        observe(&self.metrics.hot.decompress, started);
        self.metrics.hot.inflated_bytes.inc_by(body.len() as u64);
        Ok(body)
    }

    /// The stages that may refuse the whole request after decompression: parse, DSN auth.
    fn admit(&self, req: &Request, body: Bytes) -> Result<(Envelope, String), RequestError> {
        let limits = &self.config.load().limits;

        // Stage: parse.
        let started = std::time::Instant::now();
        let envelope = match req.endpoint {
            Endpoint::Envelope => envelope::parse(body, limits)?,
            Endpoint::Store => store_envelope(body, limits)?,
        };
        observe(&self.metrics.hot.parse, started);

        // Stage: auth, from the envelope's DSN when the request carried no key.
        let mut key = req.key.clone();
        let dsn = envelope.header.dsn.as_deref();
        if let Some(named) = dsn.and_then(auth::project_from_dsn) {
            if named != req.project.id {
                return Err(AuthError::DsnProject(named).into());
            }
        }
        if let Some(dsn_key) = dsn.and_then(auth::key_from_dsn) {
            auth::merge(&mut key, dsn_key)?;
            if req.key.is_none() {
                let k = key.as_deref().expect("merge set the key");
                auth::authorize(&req.projects, req.project.id, k)?;
            }
        }
        let key = key.ok_or(AuthError::MissingKey)?;
        Ok((envelope, key))
    }

    /// Scrubs one item: JSON items over their text, or as a tree when the
    /// text pass declines (recording what was redacted in `_meta` either
    /// way), text attachments as text (gzip'd ones inflated first), binary
    /// payloads untouched. An item that should be JSON and is not is refused
    /// rather than forwarded unscrubbed. `gzip_budget`: what gzip'd
    /// attachments may still inflate to in this envelope.
    fn scrub(
        &self,
        item: &Item,
        project: &Project,
        event: Option<Event<'_>>,
        gzip_budget: &mut usize,
    ) -> Result<Bytes, DropReason> {
        let started = std::time::Instant::now();
        let scrubber = &project.scrubber;
        let redactions = match scrub_kind(item) {
            ScrubKind::Binary => return Ok(item.payload.clone()),
            // JSON by its name or first byte only, past what an event may
            // be: scrubbed string by string, without a tree of it (as text
            // if it is not JSON).
            ScrubKind::Json { required: false }
                if item.payload.len() > self.config.load().limits.max_event_size =>
            {
                return self.scrub_as_text(item, project, started, true);
            }
            ScrubKind::Json { required } => {
                let tree = match event {
                    Some(Event::View(_, text)) => match scrubber.scrub_event_text(text) {
                        Ok(None) => {
                            self.observe_scrub(started);
                            return Ok(item.payload.clone());
                        }
                        Ok(Some((out, redactions))) => {
                            self.count_redactions(&project.label, &redactions);
                            self.observe_scrub(started);
                            return Ok(Bytes::from(out));
                        }
                        Err(Fallback) => None,
                    },
                    Some(Event::Tree(tree)) => Some(tree),
                    None => None,
                };
                let parsed = tree
                    .map(Ok)
                    .unwrap_or_else(|| serde_json::from_slice(&item.payload));
                let mut tree: serde_json::Value = match parsed {
                    Ok(tree) => tree,
                    // Not JSON by its name, or deeper than a tree may be.
                    Err(_) if !required => return self.scrub_as_text(item, project, started, true),
                    Err(e) => {
                        tracing::debug!(error = %e, item_type = %item.type_name, "item is not JSON");
                        return Err(DropReason::Invalid);
                    }
                };
                let redactions = scrubber.scrub_event(&mut tree);
                if redactions.is_empty() {
                    self.observe_scrub(started);
                    return Ok(item.payload.clone());
                }
                let out = serde_json::to_vec(&tree).expect("a JSON tree always serializes");
                (Bytes::from(out), redactions)
            }
            ScrubKind::Text => return self.scrub_as_text(item, project, started, false),
            ScrubKind::Gzip => return self.scrub_gzip(item, project, started, gzip_budget),
            ScrubKind::Recording => {
                return self.scrub_recording(item, project, started, gzip_budget)
            }
        };
        self.count_redactions(&project.label, &redactions.1);
        self.observe_scrub(started);
        Ok(redactions.0)
    }

    /// Scrubs an item as text; one that may be JSON (`json`: a `.json`
    /// attachment, an unknown item that starts as JSON does) string by
    /// string when it is.
    fn scrub_as_text(
        &self,
        item: &Item,
        project: &Project,
        started: std::time::Instant,
        json: bool,
    ) -> Result<Bytes, DropReason> {
        let scrubber = &project.scrubber;
        let scrubbed = match json {
            true => scrubber.scrub_json_or_bytes(&item.payload),
            false => scrubber.scrub_bytes(&item.payload),
        };
        let out = match scrubbed {
            None => item.payload.clone(),
            Some((scrubbed, redactions)) => {
                self.count_redactions(&project.label, &redactions);
                Bytes::from(scrubbed)
            }
        };
        self.observe_scrub(started);
        Ok(out)
    }

    /// A gzip'd attachment (a rotated `app.log.gz`) is inflated within
    /// `limits.max_attachment_size`, and within what the envelope's gzip'd
    /// attachments may still inflate to (`gzip_budget`, which starts at
    /// `limits.max_inflated_size`). What it holds is then judged as an
    /// attachment of that name would be (`app.log.gz` as `app.log`; a gzip
    /// content type says nothing of it, `text/plain` does): text by its name,
    /// type or bytes is scrubbed as a text attachment is, and gzip'd again
    /// when anything was redacted; else the attachment leaves byte for byte
    /// as it came. What holds no text by any of these (a `.tar.gz`, a
    /// gzip'd image) is binary, and passes untouched as binary attachments
    /// do. One that does not inflate, or holds gzip again, is refused
    /// (`invalid`), and one that inflates past either limit too
    /// (`too_large`): forwarded, it would carry what it holds unscrubbed.
    ///
    /// Its copies (inflated, scrubbed, gzip'd again) live only while the
    /// request's thread scrubs it, with no wait in between.
    fn scrub_gzip(
        &self,
        item: &Item,
        project: &Project,
        started: std::time::Instant,
        gzip_budget: &mut usize,
    ) -> Result<Bytes, DropReason> {
        let inflated =
            self.inflate_item(item, Encoding::Gzip, item.payload.clone(), gzip_budget)?;
        let inner = Item {
            ty: item.ty,
            type_name: item.type_name.clone(),
            raw_header: item.raw_header.clone(),
            content_type: item.content_type.clone().filter(|t| !is_opaque_type(t)),
            filename: item.filename.as_deref().map(gunzipped_name),
            payload: inflated,
        };
        let scrubbed = match scrub_kind(&inner) {
            ScrubKind::Gzip => {
                tracing::debug!(item_type = %item.type_name, "gzip'd item holds gzip again: refused");
                return Err(DropReason::Invalid);
            }
            ScrubKind::Binary => None,
            ScrubKind::Json { .. } => project.scrubber.scrub_json_or_bytes(&inner.payload),
            // (A recording is never here: `scrub_kind` names it by its type.)
            ScrubKind::Text | ScrubKind::Recording => project.scrubber.scrub_bytes(&inner.payload),
        };
        let out = match scrubbed {
            None => item.payload.clone(),
            Some((scrubbed, redactions)) => {
                drop(inner);
                self.count_redactions(&project.label, &redactions);
                Bytes::from(decompress::gzip(&scrubbed))
            }
        };
        self.observe_scrub(started);
        Ok(out)
    }

    /// A session replay's recording (`replay_recording`): a JSON header
    /// line (`{"segment_id":3}`), then the segment's rrweb events as JSON,
    /// zlib'd by the JavaScript SDK by default (gzip'd or plain are read
    /// too). The events hold the page's URL (a meta event's `href`), the
    /// URLs and headers of its requests, console messages, and whatever text
    /// and inputs the SDK was told not to mask: each string is scrubbed
    /// ([`crate::scrub::Scrubber::scrub_json_strings`]: DOM snapshots nest
    /// deeper than a tree may), and the events are compressed again as they
    /// came when anything was redacted; else the recording leaves as it
    /// came. The header line is scrubbed the same way (a client writes it).
    ///
    /// The stream is inflated within `limits.max_attachment_size` and what
    /// the envelope's compressed items may still inflate to (`gzip_budget`).
    /// A recording without its header line (a JSON object), whose stream
    /// does not inflate, or whose events are not JSON, is refused
    /// (`invalid`), and one that inflates past either limit too
    /// (`too_large`): forwarded, it would carry what it holds unscrubbed.
    fn scrub_recording(
        &self,
        item: &Item,
        project: &Project,
        started: std::time::Instant,
        gzip_budget: &mut usize,
    ) -> Result<Bytes, DropReason> {
        let newline = memchr::memchr(b'\n', &item.payload);
        let header_end = newline.unwrap_or(item.payload.len());
        let body_start = (header_end + 1).min(item.payload.len());
        let header = &item.payload[..header_end];
        let scrubber = &project.scrubber;
        // The header, a JSON object, is scrubbed too: a client writes it.
        let mut redactions = Vec::new();
        let object = header.trim_ascii_start().first() == Some(&b'{');
        let new_header = match scrubber.scrub_json_strings(header) {
            Ok(scrubbed) if object => scrubbed.map(|(new, found)| {
                redactions.extend(found);
                new
            }),
            _ => {
                tracing::debug!("replay recording without its header line: refused");
                return Err(DropReason::Invalid);
            }
        };
        let body = item.payload.slice(body_start..);
        let new_body = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let encoding = if decompress::is_gzip(&body) {
                Encoding::Gzip
            } else if decompress::looks_like_zlib(&body) {
                Encoding::Deflate
            } else {
                Encoding::Identity
            };
            let events = if encoding == Encoding::Identity {
                body
            } else {
                self.inflate_item(item, encoding, body, gzip_budget)?
            };
            match scrubber.scrub_json_strings(&events) {
                Err(crate::scrub::NotJson) => {
                    tracing::debug!("replay recording's events are not JSON: refused");
                    return Err(DropReason::Invalid);
                }
                Ok(None) => None,
                Ok(Some((scrubbed, found))) => {
                    drop(events);
                    redactions.extend(found);
                    Some(match encoding {
                        Encoding::Gzip => decompress::gzip(&scrubbed),
                        Encoding::Deflate => decompress::zlib(&scrubbed),
                        _ => scrubbed,
                    })
                }
            }
        };
        let out = if new_header.is_none() && new_body.is_none() {
            item.payload.clone()
        } else {
            self.count_redactions(&project.label, &redactions);
            let header = new_header.as_deref().unwrap_or(header);
            let body = new_body.as_deref().unwrap_or(&item.payload[body_start..]);
            let mut out = Vec::with_capacity(header.len() + 1 + body.len());
            out.extend_from_slice(header);
            if newline.is_some() {
                out.push(b'\n');
            }
            out.extend_from_slice(body);
            Bytes::from(out)
        };
        self.observe_scrub(started);
        Ok(out)
    }

    /// Inflates a compressed item's bytes within `limits.max_attachment_size`
    /// and what the envelope's compressed items may still inflate to
    /// (`gzip_budget`, which it takes from): what does not inflate is
    /// `invalid`, what inflates past either limit `too_large`.
    fn inflate_item(
        &self,
        item: &Item,
        encoding: Encoding,
        compressed: Bytes,
        gzip_budget: &mut usize,
    ) -> Result<Bytes, DropReason> {
        let limit = self
            .config
            .load()
            .limits
            .max_attachment_size
            .min(*gzip_budget);
        match decompress::decode(encoding, compressed, limit) {
            Ok(inflated) => {
                *gzip_budget -= inflated.len();
                Ok(inflated)
            }
            Err(e) => {
                tracing::debug!(error = %e, item_type = %item.type_name, "compressed item refused");
                Err(match e {
                    DecodeError::TooLarge { .. } => DropReason::TooLarge,
                    _ => DropReason::Invalid,
                })
            }
        }
    }

    fn count_redactions(&self, project: &str, redactions: &[crate::scrub::Redaction]) {
        // Counted once per rule: an event has a few rules' redactions, often
        // many of each, and each labelled lookup hashes and locks.
        let mut by_rule: Vec<(&str, u64)> = Vec::new();
        for r in redactions {
            match by_rule.iter_mut().find(|(rule, _)| *rule == &*r.rule) {
                Some((_, n)) => *n += 1,
                None => by_rule.push((&r.rule, 1)),
            }
        }
        for (rule, n) in by_rule {
            self.metrics
                .scrub_redactions
                .with_label_values(&[project, rule])
                .inc_by(n);
        }
    }

    fn observe_scrub(&self, started: std::time::Instant) {
        self.metrics
            .scrub_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Checks one item's size and, for events, its JSON; returns the event's own id.
    ///
    /// Other JSON items (spans, logs, sessions, check-ins, profiles, replay
    /// events) are scrubbed as a tree, some tens of bytes per value: they
    /// are held to the event's size and depth limits before one is built,
    /// and refused as an event would be (`too_large`, `invalid`), so that
    /// 20 MiB of `[0,0,...]` is not ten million values. Attachments and
    /// unknown items that look like JSON are held to `max_attachment_size`;
    /// past the event's size they are scrubbed string by string, without a
    /// tree (see [`Pipeline::scrub`]).
    fn check_item<'a>(
        &self,
        item: &'a Item,
        limits: &Limits,
    ) -> Result<Checked<'a>, (DropReason, String)> {
        // What `scrub_kind` says must be JSON: without its allocations.
        let tree = !item.ty.is_event() && item.ty.is_json(&item.type_name);
        let max = if item.ty.is_event() || tree {
            limits.max_event_size
        } else {
            limits.max_attachment_size
        };
        if item.payload.len() > max {
            let what = format!("{} bytes, over the limit of {max}", item.payload.len());
            return Err((DropReason::TooLarge, what));
        }
        if tree && envelope::nests_deeper_than(&item.payload, limits.max_json_depth) {
            tracing::debug!(item_type = %item.type_name, "JSON item nests too deep");
            let what = format!("nested deeper than {}", limits.max_json_depth);
            return Err((DropReason::Invalid, what));
        }
        if item.ty.is_event() {
            let (event, own_id) = envelope::read_event(&item.payload, limits.max_json_depth)
                .map_err(|e| {
                    tracing::debug!(error = %e, item_type = %item.type_name, "invalid event");
                    (DropReason::Invalid, e.to_string())
                })?;
            return Ok(Checked {
                own_id,
                event: Some(event),
            });
        }
        Ok(Checked {
            own_id: None,
            event: None,
        })
    }

    /// The sampling decision for an envelope, from its first event or
    /// transaction; `None` when it carries neither.
    fn sample_envelope(
        &self,
        envelope: &Envelope,
        project: &Project,
        checked: &[(&Item, DataCategory, Result<Checked, DropReason>)],
    ) -> Option<SampleFate> {
        let (item, event) = checked.iter().find_map(|(item, _, c)| match (item.ty, c) {
            (
                ItemType::Event | ItemType::Transaction,
                Ok(Checked {
                    event: Some(event), ..
                }),
            ) => Some((item, event)),
            _ => None,
        })?;
        let kind = if item.ty == ItemType::Transaction {
            sample::Kind::Transaction
        } else {
            sample::Kind::Error
        };
        let trace = envelope.header.trace.as_ref();
        let sdk_rate = trace
            .and_then(|t| t.sample_rate.as_ref())
            .and_then(|r| match r {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            });
        let decision = event.with_view(|view| {
            let cx = sample::Context {
                environment: view
                    .environment
                    .as_str()
                    .or(trace.and_then(|t| t.environment.as_deref())),
                release: view
                    .release
                    .as_str()
                    .or(trace.and_then(|t| t.release.as_deref())),
                transaction: view
                    .transaction
                    .as_str()
                    .or(trace.and_then(|t| t.transaction.as_deref())),
                trace_id: trace
                    .and_then(|t| t.trace_id.as_deref())
                    .or_else(|| view.trace_id()),
                sdk_rate,
            };
            project.sampling.decide(kind, cx, (self.random)())
        });
        Some(match decision {
            sample::Decision::Keep { rate } => SampleFate::Keep(rate),
            sample::Decision::Drop => SampleFate::Drop,
        })
    }

    /// Counts every item's outcome once and picks the answer.
    fn settle(
        &self,
        project: &Project,
        key: &str,
        fates: &[ItemFate],
        event_id: String,
        limits: &[Limited],
        why: Option<(DropReason, String)>,
    ) -> Answer {
        let mut accepted_any = false;
        let mut worst: Option<DropReason> = None;
        // A client report rides along with what the SDK sends: its own drop
        // decides the answer only when there is nothing else.
        let report_only = fates.iter().all(|f| f.category == CLIENT_REPORT_CATEGORY);
        for fate in fates {
            match fate
                .result
                .map_or_else(Outcome::Dropped, |()| Outcome::Accepted)
            {
                Outcome::Accepted => {
                    accepted_any = true;
                    self.count(
                        &project.label,
                        Some(key),
                        fate.category,
                        Outcome::Accepted,
                        1,
                    );
                }
                Outcome::Dropped(reason) => {
                    self.count(
                        &project.label,
                        Some(key),
                        fate.category,
                        Outcome::Dropped(reason),
                        1,
                    );
                    let decides = report_only || fate.category != CLIENT_REPORT_CATEGORY;
                    if decides && worst.is_none_or(|w| reason.precedence() > w.precedence()) {
                        worst = Some(reason);
                    }
                }
            }
        }
        // Limits the SDK is told about; fingerprint-scoped ones (spike
        // protection per issue) are not, or the SDK would stop sending every error.
        let announced: Vec<&Limited> = limits
            .iter()
            .filter(|l| l.scope != quota::Scope::Fingerprint)
            .collect();
        let status = match worst {
            None => StatusCode::OK,
            Some(DropReason::RateLimited) if announced.is_empty() => StatusCode::OK,
            // The SDK must retry or back off, even if some items got through.
            Some(r) if r.status().is_server_error() || r == DropReason::RateLimited => r.status(),
            Some(_) if accepted_any => StatusCode::OK,
            Some(r) => r.status(),
        };
        let rate_limits = (!announced.is_empty()).then(|| {
            announced
                .iter()
                .map(|l| {
                    let categories: Vec<&str> = l.categories.iter().map(|c| c.as_str()).collect();
                    format!(
                        "{}:{}:{}:quota_exceeded",
                        l.retry_after,
                        categories.join(";"),
                        l.scope.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        Answer {
            status,
            event_id: status.is_success().then_some(event_id),
            detail: worst.filter(|_| !status.is_success()).map(|r| match why {
                Some((first, what)) if first == r => format!("items dropped: {r}: {what}"),
                _ => format!("items dropped: {r}"),
            }),
            retry_after: announced.iter().map(|l| l.retry_after).max(),
            rate_limits,
        }
    }

    /// Applies a reloaded configuration: projects, keys, quotas, sampling and
    /// scrub rules swap at once; requests in flight finish under the old one;
    /// quota buckets of unchanged quotas keep their state (they are keyed by
    /// the quota, not by the configuration). Settings that need a restart
    /// (see [`Config::needs_restart`]) keep their running values; the
    /// returned list names those that differ. A file that did not validate is
    /// refused and counted, and the running configuration stays.
    pub fn reload(
        &self,
        new: Result<Config, ConfigError>,
    ) -> Result<Vec<&'static str>, ConfigError> {
        let new = match new {
            Ok(new) => new,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                return Err(e);
            }
        };
        let old = self.config.load_full();
        let needs_restart = old.needs_restart(&new);
        let mut merged = (*old).clone();
        merged.projects = new.projects;
        merged.scrubber = new.scrubber;
        self.config.store(Arc::new(merged));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        Ok(needs_restart)
    }

    /// Counts `n` items' outcome once: in the metrics and in the outcomes
    /// aggregate. Every count goes through here.
    pub fn count(
        &self,
        project: &str,
        key: Option<&str>,
        category: &'static str,
        outcome: Outcome,
        n: u64,
    ) {
        match outcome {
            Outcome::Accepted => {
                self.metrics
                    .items_accepted
                    .with_label_values(&[project, category])
                    .inc_by(n);
            }
            Outcome::Dropped(reason) => self.metrics.dropped(project, category, reason, n),
        }
        let parts = crate::outcome::OutcomeKeyParts {
            project_id: project.parse().ok(),
            key_id: key,
            category,
            outcome,
        };
        self.outcomes.add(SystemTime::now(), parts, n);
    }

    /// Refuses a whole request: one drop in the `envelope` category, and the answer.
    pub fn reject(&self, project_label: &str, error: &RequestError) -> Answer {
        let (status, reason) = error.classify();
        self.count(
            project_label,
            None,
            ENVELOPE_CATEGORY,
            Outcome::Dropped(reason),
            1,
        );
        log_at(
            &self.drop_logs,
            project_label,
            reason,
            error,
            "request refused",
        );
        Answer {
            status,
            event_id: None,
            detail: Some(error.to_string()),
            retry_after: None,
            rate_limits: None,
        }
    }

    /// Adds a client report's discard counts to the metrics. A report is
    /// JSON like an event and held to `max_event_size`: a larger one is not
    /// read, and dropped as `too_large`; one that is not a report is dropped
    /// as `invalid`. Only its first
    /// [`MAX_CLIENT_REPORT_ENTRIES`] entries are kept; the rest are skipped.
    fn count_client_report(
        &self,
        project: &str,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<(), DropReason> {
        if payload.len() > limits.max_event_size {
            return Err(DropReason::TooLarge);
        }
        match serde_json::from_slice::<ClientReport>(payload) {
            Ok(report) => {
                let legacy = [
                    (&report.rate_limited_events, Some("rate_limited")),
                    (&report.filtered_events, Some("filtered")),
                    (&report.filtered_sampling_events, Some("filtered_sampling")),
                ];
                let mut skipped = 0;
                for (entries, outcome) in
                    std::iter::once((&report.discarded_events, None)).chain(legacy)
                {
                    skipped += entries.skipped;
                    for d in &entries.kept {
                        // In the legacy lists, `reason` is a quota or filter
                        // code: the list says what happened.
                        let reason = outcome.unwrap_or(&d.reason);
                        self.metrics
                            .client_discarded
                            .with_label_values(&[
                                project,
                                metrics::client_discard_category(&d.category),
                                metrics::client_discard_reason(reason),
                            ])
                            // An SDK's count cannot wrap the counter.
                            .inc_by(d.quantity.min(MAX_CLIENT_REPORT_QUANTITY));
                    }
                }
                if skipped > 0 {
                    // The rest of the report is still counted.
                    tracing::debug!(project, skipped, "client report entries not understood");
                }
            }
            Err(e) => {
                tracing::debug!(project, error = %e, "unreadable client report dropped");
                return Err(DropReason::Invalid);
            }
        }
        Ok(())
    }
}

/// What the relay reads of a client report.
#[derive(Deserialize)]
struct ClientReport {
    #[serde(default)]
    discarded_events: FirstEntries,
    // Lists of older SDKs, each standing for one outcome.
    #[serde(default)]
    rate_limited_events: FirstEntries,
    #[serde(default)]
    filtered_events: FirstEntries,
    #[serde(default)]
    filtered_sampling_events: FirstEntries,
}

/// One entry of a client report: what the SDK dropped, why, how many.
#[derive(Deserialize)]
struct Discarded {
    reason: String,
    category: String,
    quantity: u64,
}

/// The first [`MAX_CLIENT_REPORT_ENTRIES`] entries of a client report's
/// list; the rest are skipped as they are parsed, neither kept nor checked.
/// An entry that is not of the shape (a quantity that is no count, a missing
/// field) is skipped and counted, so that one odd entry does not cost the
/// others.
#[derive(Default)]
struct FirstEntries {
    kept: Vec<Discarded>,
    skipped: usize,
}

/// One entry, understood or not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Understood(Discarded),
    Other(serde::de::IgnoredAny),
}

impl<'de> Deserialize<'de> for FirstEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = FirstEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of discarded events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FirstEntries, A::Error> {
                let mut entries = FirstEntries::default();
                while entries.kept.len() + entries.skipped < MAX_CLIENT_REPORT_ENTRIES {
                    match seq.next_element()? {
                        Some(Entry::Understood(entry)) => entries.kept.push(entry),
                        Some(Entry::Other(_)) => entries.skipped += 1,
                        None => return Ok(entries),
                    }
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(entries)
            }
        }
        d.deserialize_seq(Entries)
    }
}

/// How an item's payload is scrubbed.
enum ScrubKind {
    /// As a JSON tree; `required`: an item that does not parse is invalid.
    Json { required: bool },
    /// As UTF-8 text.
    Text,
    /// Inflated, then as text if it is text (a gzip'd log).
    Gzip,
    /// Not at all (binary attachments, replay videos).
    Binary,
    /// A replay recording: its header line and its events (compressed or
    /// not) string by string.
    Recording,
}

/// Text attachments (`text/*`, JSON, logs, gzip'd or not) are scrubbed like
/// events; binary ones are not.
fn scrub_kind(item: &Item) -> ScrubKind {
    if item.type_name == "replay_recording" {
        return ScrubKind::Recording;
    }
    if item.ty.is_json(&item.type_name) {
        return ScrubKind::Json { required: true };
    }
    // gzip by its bytes, whatever its name (`app.log.gz`, `logs.tgz`) or
    // type (`application/gzip`, or the type of what it holds) says.
    if matches!(item.ty, ItemType::Attachment | ItemType::Other)
        && decompress::is_gzip(&item.payload)
    {
        return ScrubKind::Gzip;
    }
    let content_type = item
        .content_type
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let filename = item.filename.as_deref().unwrap_or("").to_ascii_lowercase();
    let ext = |exts: &[&str]| exts.iter().any(|e| filename.ends_with(e));
    if content_type.contains("json") || ext(&[".json"]) {
        return ScrubKind::Json { required: false };
    }
    if content_type.starts_with("text/")
        || content_type.contains("xml")
        || ext(&[
            ".txt", ".log", ".csv", ".xml", ".yaml", ".yml", ".md", ".html", ".ini", ".conf",
        ])
    {
        return ScrubKind::Text;
    }
    if item.ty == ItemType::Other {
        // An unknown type that is JSON is scrubbed as JSON.
        let first = item.payload.iter().find(|b| !b.is_ascii_whitespace());
        if matches!(first, Some(b'{') | Some(b'[')) {
            return ScrubKind::Json { required: false };
        }
    }
    // An attachment or unknown item whose name and type say nothing (the
    // Java, .NET and Cocoa SDKs send `application/octet-stream`; `app.log.1`,
    // `logcat`, `.env`, HAR files, `statsd` lines) is scrubbed as text when
    // its bytes are text: UTF-8 without control bytes (a minidump, an image
    // or a compressed file has some early on), or text entries each ended by
    // one NUL (`/proc/self/environ`).
    if matches!(item.ty, ItemType::Attachment | ItemType::Other) && looks_like_text(&item.payload) {
        return ScrubKind::Text;
    }
    ScrubKind::Binary
}

/// Whether a content type says only that the bytes are compressed or
/// opaque (`application/gzip`, `application/x-gzip`,
/// `application/octet-stream`), not what they hold.
fn is_opaque_type(content_type: &str) -> bool {
    let t = content_type.to_ascii_lowercase();
    t.contains("gzip") || t.starts_with("application/octet-stream")
}

/// The name of what a gzip'd file holds, lowercased: `app.log.gz` and
/// `app.log.gzip` are `app.log`, `logs.tgz` is `logs.tar`.
fn gunzipped_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix(".tgz") {
        return format!("{stem}.tar");
    }
    lower
        .strip_suffix(".gz")
        .or_else(|| lower.strip_suffix(".gzip"))
        .unwrap_or(&lower)
        .to_owned()
}

/// Whether bytes are text: valid UTF-8 (or UTF-16, see
/// [`crate::scrub::utf16_text`], or single-byte text such as Latin-1, see
/// [`crate::scrub::latin1_text`]), and no control character
/// ([`crate::scrub::is_control`]); or text entries separated by NULs (a
/// process's environment or command line, see
/// [`crate::scrub::is_nul_separated`]). Empty is not.
fn looks_like_text(bytes: &[u8]) -> bool {
    if let Some((text, _)) = crate::scrub::utf16_text(bytes) {
        return text.chars().nth(1).is_some() && !text.contains(crate::scrub::is_control);
    }
    if crate::scrub::is_nul_separated(bytes) {
        // The last entry is empty when a NUL ends them, as it does in Linux's files.
        return bytes
            .split(|&b| b == 0)
            .filter(|entry| !entry.is_empty())
            .all(looks_like_plain_text);
    }
    looks_like_plain_text(bytes)
}

/// [`looks_like_text`] for bytes that are not UTF-16 or NUL-separated.
fn looks_like_plain_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && !bytes
            .iter()
            .any(|&b| crate::scrub::is_control(char::from(b)))
        && (std::str::from_utf8(bytes).is_ok() || crate::scrub::is_single_byte(bytes))
}

/// Client report entries read per report; the rest are skipped unkept.
const MAX_CLIENT_REPORT_ENTRIES: usize = 1000;
/// The most one client report entry may add.
const MAX_CLIENT_REPORT_QUANTITY: u64 = 1 << 32;

/// Logs a drop at the level its reason calls for: warnings and errors at
/// most once per reason per [`DropLogs::EVERY`], saying how many like it
/// were not logged since (debug lines are not limited: they are off by
/// default, and on for a reason).
fn log_at(
    logs: &DropLogs,
    project: &str,
    reason: DropReason,
    error: &dyn std::fmt::Display,
    what: &str,
) {
    let level = reason.log_level();
    if level > tracing::Level::WARN {
        tracing::debug!(project, %reason, %error, "{what}");
        return;
    }
    let Some(unlogged) = logs.admit(reason, logs.now_ms()) else {
        return;
    };
    match level {
        tracing::Level::ERROR => {
            tracing::error!(project, %reason, %error, unlogged, "{what}")
        }
        _ => tracing::warn!(project, %reason, %error, unlogged, "{what}"),
    }
}

/// Throttles the log lines of drops: in an outage every item fails alike,
/// and a warning per item would flood the log (and fill the disk it is on)
/// while saying nothing new. The counters have every one.
pub struct DropLogs {
    start: std::time::Instant,
    /// Per reason (its position in [`DropReason::ALL`]): when (ms since
    /// `start`) the next line may be written, and lines not written since
    /// the last one.
    slots: [(AtomicU64, AtomicU64); DropReason::ALL.len()],
}

impl Default for DropLogs {
    fn default() -> Self {
        DropLogs {
            start: std::time::Instant::now(),
            slots: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }
}

impl DropLogs {
    /// The least time between two lines of one reason.
    pub const EVERY: Duration = Duration::from_secs(10);

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a line for `reason` may be written at `now_ms`: `Some` with
    /// how many were held back since the last one, or `None`.
    fn admit(&self, reason: DropReason, now_ms: u64) -> Option<u64> {
        let at = DropReason::ALL.iter().position(|r| *r == reason)?;
        let (next, unlogged) = &self.slots[at];
        let due = next.load(Ordering::Relaxed);
        let every = Self::EVERY.as_millis() as u64;
        if now_ms < due
            || next
                .compare_exchange(due, now_ms + every, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(unlogged.swap(0, Ordering::Relaxed))
    }
}

/// Items handed to the producer whose outcome is not yet known. Dropped
/// without [`Unsettled::disarm`] (the request's task was cancelled), it
/// counts them as `internal`: no item leaves without an outcome. Dropped
/// in a panic it counts nothing: the server counts the request then.
struct Unsettled<'a> {
    pipeline: &'a Pipeline,
    project: &'a str,
    key: &'a str,
    /// Their category labels.
    categories: Vec<&'static str>,
}

impl Unsettled<'_> {
    /// The outcomes are known; the caller counts them.
    fn disarm(mut self) {
        self.categories.clear();
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        // A panic is counted once, by the server, as the envelope's drop.
        if std::thread::panicking() {
            return;
        }
        for category in &self.categories {
            let dropped = Outcome::Dropped(DropReason::Internal);
            self.pipeline
                .count(self.project, Some(self.key), category, dropped, 1);
        }
        if !self.categories.is_empty() {
            tracing::error!(
                project = self.project,
                items = self.categories.len(),
                "request cancelled before delivery was confirmed"
            );
        }
    }
}

/// A `/store/` body as a one-item envelope. A legacy body (base64, of zlib
/// perhaps) was decoded with the other encodings, in [`Pipeline::inflate`].
fn store_envelope(body: Bytes, limits: &Limits) -> Result<Envelope, RequestError> {
    // Read as every event item is (and again as the item): `/store/` and
    // envelopes take and refuse the same events.
    let (event, _) = envelope::read_event(&body, limits.max_json_depth)?;
    let transaction = event.with_view(|v| v.ty.as_str() == Some("transaction"));
    drop(event);
    let ty = if transaction {
        ItemType::Transaction
    } else {
        ItemType::Event
    };
    let type_name = if ty == ItemType::Transaction {
        "transaction"
    } else {
        "event"
    };
    Ok(Envelope {
        header: Default::default(),
        raw_header: Bytes::from_static(b"{}"),
        items: vec![Item {
            ty,
            type_name: type_name.into(),
            content_type: Some("application/json".into()),
            filename: None,
            raw_header: Bytes::new(),
            payload: body,
        }],
    })
}

/// Records the time since `started` in a stage's histogram.
fn observe(stage: &prometheus::Histogram, started: std::time::Instant) {
    stage.observe(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzipped_file_is_named_as_what_it_holds() {
        assert_eq!(gunzipped_name("App.log.1.GZ"), "app.log.1");
        assert_eq!(gunzipped_name("export.json.gzip"), "export.json");
        assert_eq!(gunzipped_name("logs.tgz"), "logs.tar");
        assert_eq!(gunzipped_name("logcat"), "logcat");
        assert!(is_opaque_type("application/x-gzip"));
        assert!(is_opaque_type("application/octet-stream"));
        assert!(!is_opaque_type("text/plain; charset=utf-8"));
    }

    /// Bytes that an attachment labelled `application/octet-stream` is
    /// scrubbed as text for, and bytes it is not.
    #[test]
    fn text_is_told_from_binary() {
        assert!(looks_like_text(b"2026-12-07 INFO started\n"));
        // A process's environment and command line: entries each ended by a NUL.
        assert!(looks_like_text(b"HOME=/root\0PASSWORD=hunter2\0"));
        assert!(looks_like_text(b"/usr/bin/app\0--password\0hunter2"));
        assert!(!looks_like_text(b""));
        assert!(!looks_like_text(b"\0"));
        // Runs of NULs (a tar archive's padding, numbers in a binary format),
        // a NUL first, other control bytes between the NULs.
        assert!(!looks_like_text(b"app.log\0\0\0\0\0\x000644\0"));
        assert!(!looks_like_text(b"\0HOME=/root\0"));
        assert!(!looks_like_text(b"MDMP\x93\xa7\0\x01\x0d\0\x02\x20\0"));
        assert!(!looks_like_text(b"\x89PNG\r\n\x1a\n\0IHDR"));
    }

    /// One line per reason per interval, each saying how many were held
    /// back; reasons do not hold each other back. (Times are given, not read.)
    #[test]
    fn drop_logs_are_throttled_per_reason() {
        let logs = DropLogs::default();
        let every = DropLogs::EVERY.as_millis() as u64;
        let kafka = DropReason::KafkaError;
        assert_eq!(logs.admit(kafka, 5), Some(0), "the first is logged");
        for t in 6..106 {
            assert_eq!(logs.admit(kafka, t), None);
        }
        assert_eq!(logs.admit(DropReason::SpoolFull, 50), Some(0));
        assert_eq!(logs.admit(kafka, 5 + every - 1), None);
        assert_eq!(
            logs.admit(kafka, 5 + every),
            Some(101),
            "the next says how many were not"
        );
        assert_eq!(logs.admit(kafka, 5 + every + 1), None);
        assert_eq!(logs.admit(kafka, 10 * every), Some(1));
    }

    #[test]
    fn each_failure_has_one_status_and_reason() {
        let cases: Vec<(RequestError, u16, DropReason)> = vec![
            (AuthError::MissingKey.into(), 401, DropReason::Unauthorized),
            (AuthError::UnknownKey.into(), 403, DropReason::Unauthorized),
            (
                DecodeError::Unsupported("rar".into()).into(),
                415,
                DropReason::Invalid,
            ),
            (
                DecodeError::TooLarge { limit: 1 }.into(),
                413,
                DropReason::TooLarge,
            ),
            (
                RequestError::BodyTooLarge { limit: 1 },
                413,
                DropReason::TooLarge,
            ),
            (EnvelopeError::Empty.into(), 400, DropReason::Invalid),
            (
                EnvelopeError::TooManyItems { limit: 1 }.into(),
                413,
                DropReason::TooLarge,
            ),
            (EventError::NotObject.into(), 400, DropReason::Invalid),
            (RequestError::BodyTimeout, 408, DropReason::Invalid),
            (RequestError::BadProjectId, 400, DropReason::Invalid),
        ];
        for (error, status, reason) in cases {
            assert_eq!(
                error.classify(),
                (StatusCode::from_u16(status).unwrap(), reason),
                "{error}"
            );
        }
    }

    #[test]
    fn store_bodies_must_be_events() {
        let event = br#"{"event_id":"0123456789abcdef0123456789abcdef","message":"hi"}"#;
        let env = store_envelope(Bytes::from_static(event), &Limits::default()).unwrap();
        assert_eq!(&env.items[0].payload[..], event);
        assert!(store_envelope(Bytes::from_static(b"not json"), &Limits::default()).is_err());
        assert!(store_envelope(Bytes::from_static(b"[1]"), &Limits::default()).is_err());
    }

    /// An identity body is only measured: it is answered at once even while
    /// every inflater thread is busy, where an encoded one as large waits.
    #[test]
    fn identity_bodies_never_wait_for_the_inflaters() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let inflaters = Inflaters::new(1);
        let (busy, started) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hold: Job = Box::new(move || {
            busy.send(()).unwrap();
            let _ = held.recv();
        });
        inflaters.jobs.lock().unwrap().send(hold).unwrap();
        started.recv().expect("the only inflater thread is held");

        let mut cx = Context::from_waker(Waker::noop());
        let body = Bytes::from(vec![b'x'; 4 * HEAVY_BODY]);
        let identity = inflaters.decode(Encoding::Identity, body.clone(), 1 << 20);
        match std::pin::pin!(identity).poll(&mut cx) {
            Poll::Ready(Ok(decoded)) => assert_eq!(decoded, body),
            Poll::Ready(Err(e)) => panic!("an identity body within the limit: {e}"),
            Poll::Pending => panic!("an identity body waited for an inflater"),
        }
        let over = inflaters.decode(Encoding::Identity, body.clone(), HEAVY_BODY);
        assert!(matches!(
            std::pin::pin!(over).poll(&mut cx),
            Poll::Ready(Err(RequestError::Decode(DecodeError::TooLarge { .. })))
        ));
        let gzip = inflaters.decode(Encoding::Gzip, body, 1 << 20);
        assert!(
            std::pin::pin!(gzip).poll(&mut cx).is_pending(),
            "a large encoded body goes to the inflaters"
        );
        release.send(()).unwrap();
    }

    #[test]
    fn store_transactions_are_typed_as_transactions() {
        let body = Bytes::from_static(br#"{"type":"transaction","spans":[]}"#);
        let env = store_envelope(body, &Limits::default()).unwrap();
        assert_eq!(env.items[0].ty, ItemType::Transaction);
        assert_eq!(env.items[0].category(), Some(DataCategory::Transaction));
    }
}
