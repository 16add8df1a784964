//! The HTTP edges: the SDK listener (HTTP/1.1 and h2c, CORS, body limits),
//! the admin listener (`/metrics`, `/healthz`, `/readyz`), and the bounded
//! shutdown sequence.
//!
//! [`Relay::bind`] binds both listeners (port 0 picks a free one, so tests
//! can run side by side); [`Relay::run`] serves until the `shutdown` future
//! resolves with a grace period, then drains: `/readyz` turns 503, the SDK
//! listener closes, in-flight requests finish, the producer flushes, and what
//! could not be delivered in time is counted.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::deliver::{Delivery, DeliveryStartError, KafkaState};
use crate::held::Held;
use crate::metrics::{self, Metrics};
use crate::pipeline::{
    Answer, Authenticated, Credentials, Endpoint, Pipeline, Request, RequestError,
};
use crate::quota;

/// A relay with its listeners bound, ready to [`run`](Relay::run).
pub struct Relay {
    /// The SDK-facing listener.
    sdk: TcpListener,
    /// The admin listener.
    admin: TcpListener,
    /// Shared by every request.
    state: Arc<State>,
}

/// What every request handler and the admin endpoints share.
struct State {
    /// The stages and the producer.
    pipeline: Pipeline,
    /// The registry `/metrics` renders.
    registry: Registry,
    /// Set when the shutdown sequence starts: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// Bytes of request bodies in memory, held against `server.max_body_memory`.
    bodies: Arc<AtomicUsize>,
    /// Kafka has taken an outcome record: the `outcomes` topic exists.
    outcomes_taken: AtomicBool,
}

/// A handle to a running relay: applies reloaded configurations (what
/// SIGHUP does) and tells whether it is healthy (for the systemd watchdog).
#[derive(Clone)]
pub struct RelayHandle(Arc<State>);

impl RelayHandle {
    /// Alive and able to work: what `/healthz` reports.
    pub fn is_healthy(&self) -> bool {
        !self.0.pipeline.delivery.producer().is_failed()
    }

    /// See [`Pipeline::reload`]: swaps projects, keys, quotas, sampling and
    /// scrub rules, or refuses an invalid file; logs and counts either way.
    pub fn reload(&self, new: Result<Config, crate::config::ConfigError>) -> bool {
        // A SIGHUP also tells the file sink to open its path again (log
        // rotation), whatever becomes of the configuration.
        if let crate::produce::Producer::File(sink) = self.0.pipeline.delivery.producer() {
            match sink.reopen() {
                Ok(()) => tracing::info!(path = %sink.path().display(), "file sink reopened"),
                Err(e) => tracing::error!(
                    path = %sink.path().display(),
                    error = %e,
                    "cannot reopen the file sink; writing on to the file it had open"
                ),
            }
        }
        match self.0.pipeline.reload(new) {
            Ok(needs_restart) => {
                if needs_restart.is_empty() {
                    tracing::info!("configuration reloaded");
                } else {
                    tracing::warn!(
                        unchanged = ?needs_restart,
                        "configuration reloaded; these sections need a restart and keep their running values"
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                false
            }
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every in-flight request finished within the grace period.
    pub requests_finished: bool,
    /// Items still undelivered when the grace period ended (also counted in
    /// `edge_relay_shutdown_undelivered_total`).
    pub undelivered: usize,
    /// Items left in the spool for the next start to deliver.
    pub spooled: u64,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output or the spool could not be opened.
    #[error(transparent)]
    Output(#[from] DeliveryStartError),
    /// The metrics could not be registered (a registry shared with another relay).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Headers browser SDKs must be able to read on every answer.
const EXPOSE_HEADERS: &str = "x-sentry-error, x-sentry-rate-limits, retry-after";
/// Headers browser SDKs may send.
const ALLOW_HEADERS: &str = "x-sentry-auth, x-requested-with, origin, accept, content-type, \
     content-encoding, authorization, sentry-trace, baggage";

impl Relay {
    /// Opens the output and binds both listeners.
    pub async fn bind(config: Config, registry: Registry) -> Result<Relay, BindError> {
        let metrics = Metrics::new(&registry)?;
        let outcomes_window = config.outcomes_window;
        let delivery = Delivery::open(&config.output, &config.delivery, &metrics)?;
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError::Listen { addr, source })
        };
        let sdk = listen(config.server.listen).await?;
        let admin = listen(config.admin_listen).await?;
        Ok(Relay {
            sdk,
            admin,
            state: Arc::new(State {
                pipeline: Pipeline {
                    buckets: quota::Buckets::new(config.limits.max_quota_buckets),
                    config: arc_swap::ArcSwap::from_pointee(config),
                    delivery: Arc::new(delivery),
                    metrics,
                    clock: Arc::new(quota::SystemClock::default()),
                    random: fastrand::f64,
                    inflaters: crate::pipeline::Inflaters::new(
                        std::thread::available_parallelism().map_or(2, |n| n.get()),
                    ),
                    outcomes: crate::outcome::Aggregator::new(
                        outcomes_window.unwrap_or(Duration::from_secs(60)),
                    ),
                    drop_logs: crate::pipeline::DropLogs::default(),
                },
                registry,
                draining: AtomicBool::new(false),
                outcomes_taken: AtomicBool::new(false),
                bodies: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// The SDK listener's address (with the port the OS chose).
    pub fn sdk_addr(&self) -> SocketAddr {
        self.sdk
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A handle to the running relay: reloads, health.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle(self.state.clone())
    }

    /// Serves until `shutdown` resolves with a grace period, then drains within it.
    pub async fn run(self, shutdown: impl Future<Output = Duration>) -> ShutdownReport {
        let state = self.state;
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        state
            .pipeline
            .metrics
            .runtime_workers
            .set(i64::try_from(workers).unwrap_or(i64::MAX));
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin = tokio::spawn(serve_admin(
            self.admin,
            state.clone(),
            admin_stopped.clone(),
        ));
        let outcomes = tokio::spawn(produce_outcomes(state.clone(), admin_stopped.clone()));
        let load = tokio::spawn(watch_load(state.clone(), admin_stopped.clone()));
        let replay = tokio::spawn(state.pipeline.delivery.clone().replay(admin_stopped));

        let (grace, connections) = serve_sdk(self.sdk, state.clone(), shutdown).await;
        let deadline = tokio::time::Instant::now() + grace;
        state.draining.store(true, Ordering::Relaxed);
        tracing::info!(grace = ?grace, open_connections = connections.count(), "draining");

        let requests_finished = tokio::time::timeout_at(deadline, connections.closed())
            .await
            .is_ok();
        // Every outcome so far, open windows too, before the final flush.
        flush_outcomes(&state, true).await;
        let undelivered = state
            .pipeline
            .delivery
            .flush(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        state
            .pipeline
            .metrics
            .shutdown_undelivered
            .inc_by(undelivered as u64);
        let spooled = state.pipeline.delivery.spooled();
        if undelivered > 0 || !requests_finished {
            tracing::warn!(
                undelivered,
                requests_finished,
                "grace period ended with work left"
            );
        }
        if spooled > 0 {
            // Not lost if the spool's directory outlives the process (a
            // host's disk, a volume that stays); an operator must know.
            tracing::warn!(
                items = spooled,
                "accepted items stay in the spool, for the next start to deliver"
            );
        } else if undelivered == 0 && requests_finished {
            tracing::info!("drained: every accepted item was delivered");
        }
        let _ = stop_admin.send(true);
        let _ = admin.await;
        let _ = outcomes.await;
        let _ = load.await;
        let _ = replay.await;
        ShutdownReport {
            requests_finished,
            undelivered,
            spooled,
        }
    }
}

/// Accepts SDK connections until `shutdown` resolves; returns the grace
/// period and the open connections to drain.
async fn serve_sdk(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = Duration>,
) -> (Duration, OpenConnections) {
    let config = state.pipeline.config.load_full();
    let server = &config.server;
    // When the signal comes, readiness is withdrawn at once, but the listener
    // stays open for the drain delay so that load balancers notice first.
    let drain_delay = config.shutdown.drain_delay;
    let draining = state.clone();
    // Tells open connections that the drain began: HTTP/2 ones are sent a
    // GOAWAY (HTTP/1 answers say `Connection: close` meanwhile), so that
    // clients open their next connection elsewhere before the listener closes.
    let (drain_begun, drain_seen) = watch::channel(false);
    let shutdown = async move {
        let grace = shutdown.await;
        draining.draining.store(true, Ordering::Relaxed);
        drain_begun.send_replace(true);
        if !drain_delay.is_zero() {
            tracing::info!(
                ?drain_delay,
                "not ready; accepting for the drain delay before closing the listener"
            );
            tokio::time::sleep(drain_delay).await;
        }
        grace.saturating_sub(drain_delay)
    };
    let permits = Arc::new(Semaphore::new(server.max_connections.get()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        // A client that shuts its side after its request still gets the
        // answer: without this, hyper drops the request being served when
        // it reads the end, and an item may be accepted with no answer.
        .half_close(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024)
        // Dead peers are found and their connections closed.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connections = OpenConnections(watch::Sender::new(()));
    // Tells every connection that the listener closed: one that has not sent
    // a byte yet closes, the others finish what is in flight and close (a
    // GOAWAY on HTTP/2, `Connection: close` or an idle close on HTTP/1).
    let (stopping, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    let grace = loop {
        // Bounded connections: past the limit, new ones wait in the kernel's backlog.
        let permit = tokio::select! {
            grace = &mut shutdown => break grace,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            grace = &mut shutdown => break grace,
            accepted = accept(&listener, "sdk") => match accepted {
                Some(stream) => stream,
                None => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        let open = connections.0.subscribe();
        let deadline = server.header_read_timeout;
        let idle_timeout = server.idle_timeout;
        let lingering_time = server.lingering_time;
        let mut stopped = stopped.clone();
        let mut drain_seen = drain_seen.clone();
        tokio::spawn(async move {
            // hyper's protocol detection has no deadline of its own: a client that
            // connects and sends nothing (or half an HTTP/2 preface) would hold a
            // connection slot forever.
            let http2 = tokio::select! {
                biased;
                first = tokio::time::timeout(deadline, first_bytes(&stream)) => match first {
                    Ok(http2) => http2,
                    Err(_) => {
                        refused(&state, "silent");
                        return;
                    }
                },
                // The relay stops: nothing was asked on this connection, so
                // nothing is cut short (an HTTP client's spare connection).
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            // A second handle on the socket, for the lingering close (below).
            let spare = match lingering_time.is_zero() {
                true => None,
                false => with_spare(&stream),
            };
            let counted = state.clone();
            let activity = Arc::new(Activity::default());
            let tracked = activity.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                let busy = tracked.begin();
                async move {
                    let response = handle_sdk(state, req).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            // The protocol is known from the first bytes: hyper is told, so
            // that no detection is under way when the drain (below) asks the
            // connection to end (a shutdown during detection drops it unanswered).
            let builder = match http2 {
                true => builder.http2_only(),
                false => builder.http1_only(),
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            // Boxed, so that it can be dropped (and hyper's handle on the
            // socket with it) before the lingering close.
            let mut conn = Box::pin(conn);
            let check = (idle_timeout / 4).max(Duration::from_millis(100));
            // The drain began: an HTTP/2 client is told to take its next
            // requests elsewhere (its streams in flight finish), once the
            // connection has had a request: one opened during the drain is
            // served first, or its client, refused at once, would only come
            // back on a new connection to be refused again.
            let mut told = !http2;
            let mut goaway_due = false;
            // The listener closed: every connection is told.
            let mut closing = false;
            loop {
                if goaway_due && activity.served() > 0 {
                    goaway_due = false;
                    conn.as_mut().graceful_shutdown();
                }
                tokio::select! {
                    _ = drain_seen.wait_for(|begun| *begun), if !told => {
                        told = true;
                        goaway_due = true;
                    }
                    // A request started: the GOAWAY may be due (above).
                    _ = activity.began.notified(), if goaway_due => {}
                    _ = stopped.wait_for(|stop| *stop), if !closing => {
                        closing = true;
                        told = true;
                        goaway_due = false;
                        conn.as_mut().graceful_shutdown();
                    }
                    result = &mut conn => {
                        if let Err(e) = result {
                            match e.downcast_ref::<hyper::Error>().and_then(refusal) {
                                // hyper's header timeout also ends a keep-alive
                                // connection waiting for its next request.
                                Some("header_timeout") if activity.served() > 0 => {
                                    refused(&counted, "idle");
                                }
                                Some(reason) => refused(&counted, reason),
                                None => {}
                            }
                        }
                        break;
                    }
                    _ = tokio::time::sleep(check) => {
                        // No request in flight for the whole idle timeout: close it.
                        // (Dropping the connection is safe: nothing is in flight.)
                        if activity.idle_for() >= idle_timeout {
                            refused(&counted, "idle");
                            break;
                        }
                    }
                }
            }
            drop(conn);
            // The stop need not wait for a lingering close; the connection
            // slot stays taken until it ends, so sockets stay bounded.
            drop(open);
            if let Some(spare) = spare {
                linger(spare, lingering_time).await;
            }
            drop(permit);
        });
    };
    let _ = stopping.send(true);
    (grace, connections)
}

/// The SDK connections still open: each holds a receiver until it ends.
struct OpenConnections(watch::Sender<()>);

impl OpenConnections {
    fn count(&self) -> usize {
        self.0.receiver_count()
    }

    /// Resolves once every connection has ended.
    async fn closed(&self) {
        self.0.closed().await
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    /// Requests being served.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Requests started on this connection.
    started: std::sync::atomic::AtomicUsize,
    /// When a request last ended (or the connection started).
    last: std::sync::Mutex<Instant>,
    /// Told when a request starts (a permit is kept if nobody waits).
    began: tokio::sync::Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            started: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(Instant::now()),
            began: tokio::sync::Notify::new(),
        }
    }
}

impl Activity {
    /// A request starts; it ends when the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        self.began.notify_one();
        Busy(self.clone())
    }

    /// How many requests the connection has had.
    fn served(&self) -> usize {
        self.started.load(Ordering::Acquire)
    }

    /// How long the connection has had no request in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last.lock().expect("activity lock").elapsed()
    }
}

/// One request in flight on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().expect("activity lock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why hyper closed a connection without a request reaching the relay, when
/// the client is to blame; `None` for resets and other ends.
fn refusal(e: &hyper::Error) -> Option<&'static str> {
    if e.is_timeout() {
        Some("header_timeout")
    } else if e.is_parse_too_large() {
        Some("header_too_large")
    } else if e.is_parse() {
        Some("malformed")
    } else {
        None
    }
}

/// Counts a connection closed before a request reached the pipeline.
fn refused(state: &State, reason: &'static str) {
    state
        .pipeline
        .metrics
        .connections_refused
        .with_label_values(&[reason])
        .inc();
    tracing::debug!(reason, "connection closed before a request was read");
}

/// Accepts one connection. On an error (out of file descriptors and the
/// like) it waits a moment and yields nothing, so the loop does not spin.
async fn accept(listener: &TcpListener, which: &str) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((stream, _)) => Some(stream),
        Err(e) => {
            tracing::warn!(listener = which, error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// A second handle on a connection's socket (a duplicated descriptor): when
/// hyper lets go of its own, the socket stays open for [`linger`]. None if
/// the descriptor cannot be duplicated (out of descriptors): the connection
/// is served without one.
fn with_spare(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let spare = stream.as_fd().try_clone_to_owned();
    spare.ok().map(std::net::TcpStream::from)
}

/// Closes a connection the relay is done with, gently: its side is shut
/// (hyper may have done so already; again is harmless), then whatever the
/// client still sends is read and thrown away until the client closes, or
/// for `time`. Closing a socket with unread bytes, or with bytes still on
/// their way, makes the kernel answer with a reset; a reset can reach the
/// client before it has read the relay's last answer or GOAWAY, and destroy
/// them. (nginx's lingering close, for the same reason.)
async fn linger(spare: std::net::TcpStream, time: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Non-blocking already: the flag belongs to the socket, which tokio set.
    let Ok(mut stream) = tokio::net::TcpStream::from_std(spare) else {
        return;
    };
    let _ = stream.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(time, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resolves once the client has sent enough to tell HTTP/1 from HTTP/2.
async fn first_bytes(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 24];
    loop {
        match stream.peek(&mut buf).await {
            // Closed, or an error: hyper will see it and end the connection.
            Ok(0) | Err(_) => return false,
            Ok(n) if n == H2_PREFACE.len() => return buf[..] == *H2_PREFACE,
            Ok(n) if !H2_PREFACE.starts_with(&buf[..n]) => return false,
            // Part of an HTTP/2 preface: wait for the rest without spinning.
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Sentry's other ingestion endpoints, which the relay does not take:
/// `/api/{project_id}/minidump/` and the like. The project and what it is.
fn unsupported(path: &str) -> Option<(&str, &'static str)> {
    let rest = path.strip_prefix("/api/")?;
    let (project, endpoint) = rest.split_once('/')?;
    if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let first = endpoint.split('/').next().unwrap_or_default();
    let what = match first {
        "minidump" => "minidump uploads",
        "unreal" => "Unreal crash reports",
        "security" | "csp-report" => "security reports",
        "events" if endpoint.contains("/attachments") => "attachment uploads",
        "otlp" | "integration" => "OTLP data",
        "playstation" => "PlayStation crash reports",
        _ => return None,
    };
    Some((project, what))
}

/// `/api/{project_id}/envelope/` or `/api/{project_id}/store/`, trailing slash optional.
fn route(path: &str) -> Option<(&str, Endpoint)> {
    let rest = path.strip_prefix("/api/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (project, endpoint) = rest.split_once('/')?;
    let endpoint = match endpoint {
        "envelope" => Endpoint::Envelope,
        "store" => Endpoint::Store,
        _ => return None,
    };
    Some((project, endpoint))
}

async fn handle_sdk(state: Arc<State>, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let received_at = SystemTime::now();
    let Some((project, endpoint)) = route(req.uri().path()) else {
        if let Some((project, what)) = unsupported(req.uri().path()) {
            // Data an SDK sent, refused: counted as a drop, not only a 404.
            let config = state.pipeline.config.load();
            let label = project
                .parse::<u64>()
                .ok()
                .and_then(|id| config.projects.get(id))
                .map_or(metrics::UNKNOWN_PROJECT, |p| &*p.label);
            let answer = state
                .pipeline
                .reject(label, &RequestError::Unsupported(what));
            let mut response = answer_response(&answer);
            add_cors(response.headers_mut());
            state
                .pipeline
                .metrics
                .requests
                .with_label_values(&["unsupported", response.status().as_str()])
                .inc();
            return response;
        }
        state
            .pipeline
            .metrics
            .requests
            .with_label_values(&["other", "404"])
            .inc();
        // With CORS headers too, so that a browser SDK can read why.
        let mut response = json_response(StatusCode::NOT_FOUND, r#"{"detail":"not found"}"#.into());
        add_cors(response.headers_mut());
        if req.version() < hyper::Version::HTTP_2 && state.draining.load(Ordering::Relaxed) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    };
    let project = project.to_owned();
    let http1 = req.version() < hyper::Version::HTTP_2;
    let mut response = match *req.method() {
        Method::OPTIONS => preflight(),
        Method::POST => {
            let (answer, body_read) =
                ingest(state.clone(), req, endpoint, &project, received_at).await;
            let mut response = answer_response(&answer);
            if !body_read && http1 {
                // Refused before its body was read: hyper will not read the
                // rest either, so the connection ends. Saying so keeps the
                // client from sending its next request down a closing one.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        _ => {
            let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            r
        }
    };
    if http1 && state.draining.load(Ordering::Relaxed) {
        // The relay is stopping: the client's next request should go to a
        // new connection (another instance), not down this one.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    add_cors(response.headers_mut());
    let metrics = &state.pipeline.metrics;
    let status = response.status();
    metrics
        .requests
        .with_label_values(&[endpoint.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[endpoint.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Authenticates from the headers, reads the body under its limits, and runs
/// the pipeline on a task of its own, so that a client that hangs up cannot
/// cancel it half way: every item still gets its outcome. Also says whether
/// the whole body was read.
async fn ingest(
    state: Arc<State>,
    req: hyper::Request<Incoming>,
    endpoint: Endpoint,
    project: &str,
    received_at: SystemTime,
) -> (Answer, bool) {
    let pipeline = &state.pipeline;
    let Ok(project_id) = project.parse::<u64>() else {
        return (
            pipeline.reject(metrics::UNKNOWN_PROJECT, &RequestError::BadProjectId),
            false,
        );
    };
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let credentials = Credentials {
        sentry_auth: header("x-sentry-auth"),
        authorization: header("authorization"),
        query: parts.uri.query(),
    };
    // An auth header that is not text is refused as such, not taken for none.
    let unreadable = parts
        .headers
        .get("x-sentry-auth")
        .is_some_and(|v| v.to_str().is_err());
    let authenticated = match unreadable {
        true => Err(crate::auth::AuthError::MalformedHeader("X-Sentry-Auth is not text").into()),
        false => pipeline.authenticate(project_id, credentials),
    };
    let Authenticated {
        project,
        key,
        projects,
    } = match authenticated {
        Ok(found) => found,
        Err(e) => {
            let config = pipeline.config.load();
            let label = config
                .projects
                .get(project_id)
                .map_or(metrics::UNKNOWN_PROJECT, |p| &*p.label);
            return (pipeline.reject(label, &e), false);
        }
    };
    // Shed load before reading anything more when accepted work is piling up.
    if pipeline.delivery.overloaded() {
        return (
            pipeline.reject(&project.label, &RequestError::Overloaded),
            false,
        );
    }
    let config = pipeline.config.load_full();
    let limit = config.limits.max_body_size;
    let declared = header(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let e = RequestError::BodyTooLarge { limit };
        return (pipeline.reject(&project.label, &e), false);
    }
    // A body is held as its bytes arrive, not as declared: a request that
    // declares a length and sends nothing would otherwise hold its share
    // until `body_read_timeout`, and a few of them could hold it all (the
    // key may come later, in the envelope). One that declares more than the
    // room left now is refused before it is read.
    let max_memory = config.server.max_body_memory;
    let room = max_memory.saturating_sub(state.bodies.load(Ordering::Relaxed));
    if declared.is_some_and(|n| n > room as u64) {
        return (
            pipeline.reject(&project.label, &RequestError::Overloaded),
            false,
        );
    }
    let mut held = Held::new(&state.bodies, 0, Some(&pipeline.metrics.body_memory_bytes));
    // From here the request is on its way to the delivery.
    let announced = pipeline.delivery.announce();
    let timeout = config.server.body_read_timeout;
    let body = match read_body(body, limit, timeout, &mut held, max_memory).await {
        Ok(body) => body,
        Err(e) => return (pipeline.reject(&project.label, &e), false),
    };
    let request = Request {
        endpoint,
        project,
        projects,
        key,
        content_encoding: content_encoding(&parts.headers),
        body,
        held,
        received_at,
        announced,
    };
    let task_state = state.clone();
    let label = request.project.label.clone();
    // The body stays held (in the request) until the pipeline is done with
    // it, even if the client hangs up before its answer.
    let answer = match tokio::spawn(async move { task_state.pipeline.handle(request).await }).await
    {
        Ok(answer) => answer,
        // A bug: answered 500 and counted once, as the envelope's drop.
        Err(e) => {
            tracing::error!(error = %e, "pipeline task failed");
            let failed = RequestError::Internal("the request's task failed");
            pipeline.reject(&label, &failed)
        }
    };
    (answer, true)
}

/// The `Content-Encoding`: every line of it, as one list (two lines are two
/// encodings, as `gzip, br` is), and text that is not UTF-8 kept visible
/// (it names no encoding this relay decodes: 415, not taken for identity).
fn content_encoding(headers: &hyper::HeaderMap) -> Option<String> {
    let mut lines = headers.get_all(header::CONTENT_ENCODING).iter();
    let first = String::from_utf8_lossy(lines.next()?.as_bytes()).into_owned();
    Some(lines.fold(first, |mut all, line| {
        all.push_str(", ");
        all.push_str(&String::from_utf8_lossy(line.as_bytes()));
        all
    }))
}

/// The body, refused past `limit` bytes or after `timeout`, and when it
/// would take the bodies in memory past `max_memory` (`held` holds this
/// body's share).
async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
    held: &mut Held,
    max_memory: usize,
) -> Result<Bytes, RequestError> {
    let read = async {
        // The declared length, to join the frames in one buffer without
        // growing it (held as the bytes arrive, not as declared).
        let declared = hyper::body::Body::size_hint(&body)
            .exact()
            .map_or(0, |n| n.min(limit as u64) as usize);
        let mut body = Limited::new(body, limit);
        // A body in one frame is kept as it came; the frames of a longer
        // one are copied into `joined` as they arrive, so that it is in
        // memory once, not as its frames and then their concatenation.
        let mut first: Option<Bytes> = None;
        let mut joined = bytes::BytesMut::new();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match e.is::<LengthLimitError>() {
                true => RequestError::BodyTooLarge { limit },
                false => RequestError::BodyRead(e.to_string()),
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len += data.len();
            if len > held.bytes() && !held.grow(len - held.bytes(), max_memory) {
                return Err(RequestError::Overloaded);
            }
            if first.is_none() && joined.is_empty() {
                first = Some(data);
                continue;
            }
            if let Some(first) = first.take() {
                joined.reserve(declared.max(len));
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
        Ok(first.unwrap_or_else(|| joined.freeze()))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(RequestError::BodyTimeout))
}

fn answer_response(answer: &Answer) -> Response<Full<Bytes>> {
    let mut response = match &answer.event_id {
        Some(id) if answer.status.is_success() => {
            json_response(answer.status, serde_json::json!({ "id": id }).to_string())
        }
        _ => error_response(
            answer.status,
            answer.detail.as_deref().unwrap_or("request refused"),
        ),
    };
    // The rate-limit answer SDKs obey: whole seconds, categories, scope, reason.
    if let Some(limits) = answer
        .rate_limits
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        response
            .headers_mut()
            .insert("x-sentry-rate-limits", limits);
    }
    if let Some(secs) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A short JSON error body, with the reason also in `X-Sentry-Error`.
fn error_response(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let mut r = json_response(status, serde_json::json!({ "detail": detail }).to_string());
    if let Ok(v) = HeaderValue::from_str(&detail.chars().take(200).collect::<String>()) {
        r.headers_mut().insert("x-sentry-error", v);
    }
    r
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The answer to a browser SDK's CORS preflight.
fn preflight() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("3600"),
    );
    r
}

fn add_cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

/// Produces the aggregated outcome records of closed windows until told to stop.
async fn produce_outcomes(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let Some(window) = state.pipeline.config.load().outcomes_window else {
        return;
    };
    let tick = (window / 4).max(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(tick) => flush_outcomes(&state, false).await,
        }
    }
}

/// How often [`watch_load`] samples the workers.
const LOAD_SAMPLE: Duration = Duration::from_millis(50);
/// The weight of a new sample in the average that decides pressure (so
/// that average spans about half a second of samples).
const LOAD_WEIGHT: f64 = 0.1;
/// The average busy share from which the relay counts as short of CPU...
const PRESSURE_ON: f64 = 0.93;
/// ...and below which it no longer does (apart, so that it does not flap).
const PRESSURE_OFF: f64 = 0.85;

/// Samples how much of their time the runtime's workers spend working, for
/// the `edge_relay_runtime_busy_ratio` gauge and for the spool, which
/// batches its flushes harder only when CPU is short (see
/// [`crate::spool::CommitDelays`]). Short means the workers are busy nearly
/// all the time: then fewer flushes leave more CPU for requests. Below
/// that, the workers are idle part of the time, often waiting for the
/// writer (few connections, each waiting for its answer), and a longer wait
/// would idle them more. Measured on this project's 2-core machine: half
/// load 0.4-0.5; 32 connections as fast as they go 0.85-0.95; 256, 0.95-1.
async fn watch_load(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let runtime = tokio::runtime::Handle::current().metrics();
    let workers = runtime.num_workers();
    let busy = || -> Duration {
        (0..workers)
            .map(|w| runtime.worker_total_busy_duration(w))
            .sum()
    };
    let mut last = (Instant::now(), busy());
    let mut load = Load::default();
    let press = |on: bool| {
        if let Some(spool) = state.pipeline.delivery.spool() {
            spool.set_pressure(on);
            let delay = spool.commit_delay().as_secs_f64();
            state.pipeline.metrics.spool_commit_delay.set(delay);
        }
    };
    press(load.pressed);
    let mut tick = tokio::time::interval(LOAD_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = (Instant::now(), busy());
        let wall = now.0.duration_since(last.0).mul_f64(workers as f64);
        let (ratio, changed) = load.sample(now.1.saturating_sub(last.1), wall);
        last = now;
        state.pipeline.metrics.runtime_busy.set(ratio);
        if let Some(on) = changed {
            press(on);
        }
    }
}

/// Whether the relay is short of CPU, from samples of its workers' busy
/// time: an average of the samples' busy shares, on above [`PRESSURE_ON`]
/// and off below [`PRESSURE_OFF`].
#[derive(Debug, Default)]
struct Load {
    /// The average busy share.
    average: f64,
    /// Short of CPU. A relay starts idle.
    pressed: bool,
}

impl Load {
    /// Takes a sample: `busy` of the workers' `wall` time (both summed over
    /// the workers). Returns the sample's busy share, and the pressure if
    /// it changed.
    fn sample(&mut self, busy: Duration, wall: Duration) -> (f64, Option<bool>) {
        let ratio = if wall.is_zero() {
            0.0
        } else {
            (busy.as_secs_f64() / wall.as_secs_f64()).min(1.0)
        };
        self.average += LOAD_WEIGHT * (ratio - self.average);
        let next = match self.pressed {
            true => self.average >= PRESSURE_OFF,
            false => self.average >= PRESSURE_ON,
        };
        let changed = (next != self.pressed).then_some(next);
        self.pressed = next;
        (ratio, changed)
    }
}

/// Produces the records of closed windows (all windows when `all`, at
/// shutdown); what fails to produce is kept for the next try, or at shutdown
/// spooled for the next start (lost and counted without a spool).
async fn flush_outcomes(state: &State, all: bool) {
    let pipeline = &state.pipeline;
    if pipeline.config.load().outcomes_window.is_none() {
        return;
    }
    let entries = pipeline.outcomes.drain(SystemTime::now(), all);
    if entries.is_empty() {
        return;
    }
    let topic = pipeline.delivery.producer().topics().outcomes.clone();
    let records: Vec<crate::produce::Record> = entries
        .iter()
        .map(|(key, n)| {
            let record = key.record(*n);
            let project: Arc<str> = record
                .project_id
                .map_or_else(|| metrics::UNKNOWN_PROJECT.into(), |p| p.to_string().into());
            crate::produce::Record {
                topic: topic.clone(),
                key: project.to_string(),
                payload: Bytes::from(
                    serde_json::to_vec(&record).expect("an outcome record serializes"),
                ),
                headers: crate::produce::RecordHeaders {
                    project_id: project,
                    event_id: String::new(),
                    item_type: "outcome".into(),
                    received_at: record.timestamp.clone().into(),
                    fingerprint: None,
                    sample_rate: None,
                },
            }
        })
        .collect();
    let results = pipeline.delivery.producer().send(&records).await;
    if results.iter().any(Result::is_ok) {
        state.outcomes_taken.store(true, Ordering::Relaxed);
    }
    // Each failure: its entry, its record, and whether Kafka refused it for good.
    let failed: Vec<_> = entries
        .into_iter()
        .zip(records)
        .zip(results)
        .filter_map(|((entry, record), r)| r.err().map(|e| (entry, record, e.is_refused())))
        .collect();
    if failed.is_empty() {
        return;
    }
    if !all {
        tracing::warn!(
            records = failed.len(),
            "outcome records not produced; kept for the next try"
        );
        pipeline
            .outcomes
            .restore(failed.into_iter().map(|(entry, ..)| entry).collect());
        return;
    }
    // The last try, at shutdown. What failed for a while (brokers
    // unreachable, timed out, a full queue) goes into the spool, for the
    // next start's replay to produce, provided Kafka took an outcome record
    // before: a record Kafka never takes (no `outcomes` topic shows as
    // timeouts as often as a refusal) would keep the replay failing, and
    // the relay degraded, for good. The others are counted as lost.
    let spoolable = state.outcomes_taken.load(Ordering::Relaxed);
    let (unsent, lost): (Vec<_>, Vec<_>) = failed
        .into_iter()
        .partition(|(.., refused)| spoolable && !refused);
    let unsent: Vec<_> = unsent.into_iter().map(|(_, record, _)| record).collect();
    let lost = lost.len();
    if lost > 0 {
        pipeline.metrics.outcomes_lost.inc_by(lost as u64);
        tracing::error!(
            records = lost,
            "outcome records Kafka refused or never took (does the outcomes topic exist?): lost; the items' metrics still count them"
        );
    }
    if unsent.is_empty() {
        return;
    }
    let spooled = match pipeline.delivery.spool() {
        Some(spool) => match spool.append(&unsent, false).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot spool the outcome records");
                false
            }
        },
        None => false,
    };
    if spooled {
        tracing::warn!(
            records = unsent.len(),
            "outcome records not produced; spooled for the next start"
        );
    } else {
        pipeline.metrics.outcomes_lost.inc_by(unsent.len() as u64);
        tracing::error!(
            records = unsent.len(),
            "outcome records not produced and not spooled: lost; the items' metrics still count them"
        );
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until told to stop.
async fn serve_admin(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let connections = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            accepted = accept(&listener, "admin") => match accepted {
                Some(stream) => stream,
                None => continue,
            },
        };
        let state = state.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle_admin(&state, req.uri().path())) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(connections.watch(conn));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), connections.shutdown()).await;
}

fn handle_admin(state: &State, path: &str) -> Response<Full<Bytes>> {
    let pipeline = &state.pipeline;
    let delivery = &pipeline.delivery;
    let draining = state.draining.load(Ordering::Relaxed);
    let refusal = match draining {
        true => Some("draining".to_string()),
        false => delivery.refusal(),
    };
    let ready = refusal.is_none();
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    match path {
        "/metrics" => {
            pipeline
                .metrics
                .producer_queue_depth
                .set(delivery.producer().queue_depth());
            delivery.refresh_gauges();
            pipeline.metrics.ready.set(i64::from(ready));
            let mut r = text(StatusCode::OK, metrics::render(&state.registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" if delivery.producer().is_failed() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka producer failed fatally: restart\n".into(),
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match &refusal {
            None => text(StatusCode::OK, readiness(delivery, "ready")),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, readiness(delivery, why)),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The `/readyz` body: the verdict, the ack mode, the relay's view of Kafka
/// and what the spool holds, one `key: value` per line.
fn readiness(delivery: &crate::deliver::Delivery, verdict: &str) -> String {
    use std::fmt::Write;
    let mut out = format!("{verdict}\n");
    match delivery.producer() {
        crate::produce::Producer::File(_) => out.push_str("output: file\n"),
        crate::produce::Producer::Kafka(_) => {
            let state: KafkaState = delivery.kafka_state();
            let _ = writeln!(out, "ack: {}", delivery.mode().as_str());
            let _ = writeln!(out, "kafka: {}", state.as_str());
        }
    }
    if let Some(spool) = delivery.spool() {
        let usage = spool.usage();
        let _ = writeln!(out, "spool: {} items, {} bytes", usage.items, usage.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of 50 ms on two workers, each `share` busy.
    fn feed(load: &mut Load, share: f64, samples: usize) -> Vec<bool> {
        let wall = LOAD_SAMPLE * 2;
        (0..samples)
            .filter_map(|_| load.sample(wall.mul_f64(share), wall).1)
            .collect()
    }

    #[test]
    fn a_sample_is_the_busy_share_of_the_workers_time() {
        let mut load = Load::default();
        let wall = Duration::from_millis(100);
        assert_eq!(load.sample(Duration::from_millis(25), wall).0, 0.25);
        // Busy time a sample straddles can exceed its wall time: capped.
        assert_eq!(load.sample(Duration::from_millis(130), wall).0, 1.0);
        assert_eq!(load.sample(Duration::ZERO, Duration::ZERO).0, 0.0);
    }

    #[test]
    fn pressure_comes_on_at_the_high_mark_and_goes_off_below_the_low_one() {
        let mut load = Load::default();
        // Busy, but not at the limit: never pressed.
        assert!(feed(&mut load, 0.9, 100).is_empty());
        assert!(!load.pressed);
        // At the limit: on, once.
        assert_eq!(feed(&mut load, 1.0, 100), [true]);
        // Between the marks: stays on (no flapping)...
        assert!(feed(&mut load, 0.88, 100).is_empty());
        assert!(load.pressed);
        // ...and off, once, when the average falls below the low mark.
        assert_eq!(feed(&mut load, 0.5, 100), [false]);
        // Between the marks again: stays off.
        assert!(feed(&mut load, 0.9, 100).is_empty());
        assert!(!load.pressed);
    }

    #[test]
    fn a_short_burst_does_not_press_an_idle_relay() {
        let mut load = Load::default();
        assert!(feed(&mut load, 0.0, 20).is_empty());
        // A burst of a few samples moves the average, not past the mark.
        assert!(feed(&mut load, 1.0, 3).is_empty());
        assert!(!load.pressed);
        // It takes a sustained load: about half a second of samples.
        let on = (1..=100).find(|_| !feed(&mut load, 1.0, 1).is_empty());
        assert!(
            matches!(on, Some(20..=30)),
            "pressed after {on:?} more samples"
        );
    }

    #[test]
    fn routes_with_and_without_trailing_slash() {
        assert_eq!(route("/api/42/envelope/"), Some(("42", Endpoint::Envelope)));
        assert_eq!(route("/api/42/envelope"), Some(("42", Endpoint::Envelope)));
        assert_eq!(route("/api/42/store/"), Some(("42", Endpoint::Store)));
        assert_eq!(route("/api/42/store"), Some(("42", Endpoint::Store)));
        assert_eq!(route("/api/x/store/"), Some(("x", Endpoint::Store)));
        assert_eq!(route("/api/42/minidump/"), None);
        assert_eq!(route("/api/42/envelope/extra/"), None);
        assert_eq!(route("/metrics"), None);
    }
}
