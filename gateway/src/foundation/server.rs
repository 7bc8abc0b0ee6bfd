//! Serving: HTTPS with rustls (and, when a client CA is configured, mutual TLS that identifies
//! the calling agency system), HTTP/1.1 and HTTP/2, graceful shutdown.
//!
//! Connections are bounded as well as requests, because an open file is what a slow or idle
//! client costs (`limits.*`): the TLS handshake, an HTTP/1 request's headers and its body each
//! have a deadline; a connection with no request in flight is closed after `idle_timeout_ms`;
//! and at most `max_connections` are open, the one idle longest making room for a new one, so a
//! thousand idle or half-open connections cannot keep `/healthz` from being answered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::foundation::config::{Limits, TlsConfig};

/// The calling system's identity — its client certificate's subject — attached to every
/// request on a mutually authenticated connection.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity(pub Option<String>);

/// Marks every request that came in on the browsers' listener (`web.listen`), where no client
/// certificate is asked for: there the API takes the session cookie of a signed-in person, and
/// never a bearer token (see [`crate::http::principal`]).
#[derive(Debug, Clone, Copy)]
pub struct BrowserListener;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown is asked for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the PEM files and builds the rustls server configuration.
pub fn tls_config(tls: &TlsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(&tls.cert)?;
    let key_pem =
        std::fs::read(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing {}", tls.key.display()))?
        .with_context(|| format!("no private key in {}", tls.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA from {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// The subject common name of a verified client certificate: the calling system's name.
fn client_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(String::from)
}

/// Accepts connections until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Connections::new(limits.max_connections));
    let timeouts = Timeouts {
        header: Duration::from_millis(limits.header_timeout_ms),
        body: Duration::from_millis(limits.body_timeout_ms),
        idle: Duration::from_millis(limits.idle_timeout_ms),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = connections.room() => {}
            () = &mut shutdown => break,
        }
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Running out of file descriptors is transient; do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = connections.open();
        let service = Guarded {
            router: router.clone(),
            identity: ClientIdentity(None),
            activity: slot.activity.clone(),
            connections: connections.clone(),
            body_timeout: timeouts.body,
        };
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let activity = slot.activity.clone();
            let serve = async move {
                let builder = builder(timeouts.header);
                match acceptor {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::info!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::info!("TLS handshake timed out");
                                    return;
                                }
                            };
                        let client = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(client_name);
                        let service = Guarded {
                            identity: ClientIdentity(client),
                            ..service
                        };
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                }
            };
            // Dropping the connection's future closes it.
            tokio::select! {
                () = serve => {}
                () = activity.evicted.notified() => {
                    tracing::debug!("idle connection closed to make room for a new one");
                }
                () = idle(&activity, timeouts.idle) => tracing::debug!("idle connection closed"),
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not drain in time");
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    body: Duration,
    idle: Duration,
}

/// HTTP/1 and HTTP/2 with hyper's timer, which its header-read timeout needs to take effect.
fn builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
}

/// Resolves once a connection has had no request in flight for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let since = activity.since();
        let wait = match activity.busy.load(Ordering::Acquire) {
            0 if since.elapsed() >= limit => return,
            0 => limit - since.elapsed(),
            // A request in flight is bounded by its own timeouts; look again after it.
            _ => limit,
        };
        tokio::time::sleep(wait).await;
    }
}

/// The open connections, so that their number is capped and the idlest can make room.
struct Connections {
    max: usize,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
    /// Woken when a connection closes or its last request finishes.
    changed: Notify,
}

/// What one connection is doing.
struct Activity {
    /// Requests being answered, from their headers until their response has been sent.
    busy: AtomicUsize,
    /// When the connection opened or a request last started or finished.
    since: Mutex<Instant>,
    /// Asked to close to make room.
    leaving: AtomicBool,
    evicted: Notify,
}

impl Activity {
    fn since(&self) -> Instant {
        match self.since.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn touch(&self) {
        match self.since.lock() {
            Ok(mut t) => *t = Instant::now(),
            Err(poisoned) => *poisoned.into_inner() = Instant::now(),
        }
    }
}

impl Connections {
    fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn with_open<T>(&self, f: impl FnOnce(&mut HashMap<u64, Arc<Activity>>) -> T) -> T {
        match self.open.lock() {
            Ok(mut open) => f(&mut open),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Resolves when a new connection may be accepted: below the cap, or once the connection
    /// idle longest has closed to make room. While every connection has a request in flight it
    /// waits, and new connections queue in the kernel's backlog.
    async fn room(&self) {
        loop {
            let full = self.with_open(|open| {
                if open.len() < self.max {
                    return false;
                }
                // One at a time: a connection already leaving frees the slot being waited for.
                if !open.values().any(|a| a.leaving.load(Ordering::Acquire)) {
                    let idlest = open
                        .values()
                        .filter(|a| a.busy.load(Ordering::Acquire) == 0)
                        .min_by_key(|a| a.since());
                    if let Some(a) = idlest {
                        a.leaving.store(true, Ordering::Release);
                        a.evicted.notify_one();
                    }
                }
                true
            });
            if !full {
                return;
            }
            self.changed.notified().await;
        }
    }

    fn open(self: &Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            busy: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
            leaving: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        self.with_open(|open| open.insert(id, activity.clone()));
        Slot {
            id,
            connections: self.clone(),
            activity,
        }
    }
}

/// An open connection's place among the [`Connections`]; given up when dropped.
struct Slot {
    id: u64,
    connections: Arc<Connections>,
    activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.with_open(|open| open.remove(&self.id));
        self.connections.changed.notify_one();
    }
}

/// A request being answered on a connection; the connection is not idle while one is held.
struct Busy {
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Busy {
    fn new(activity: &Arc<Activity>, connections: &Arc<Connections>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Busy {
            activity: activity.clone(),
            connections: connections.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.touch();
        if self.activity.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.changed.notify_one();
        }
    }
}

/// The router as one connection serves it: each request carries the calling system's identity,
/// its body is held to `body_timeout`, and the connection counts as busy until the response
/// has been sent.
#[derive(Clone)]
struct Guarded {
    router: Router,
    identity: ClientIdentity,
    activity: Arc<Activity>,
    connections: Arc<Connections>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Guarded {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(&self.activity, &self.connections);
        let stalled = Arc::new(AtomicBool::new(false));
        let http1 = req.version() < http::Version::HTTP_2;
        let deadline = Instant::now() + self.body_timeout;
        let mut req = req.map(|body| {
            Body::new(Deadline {
                body,
                deadline,
                sleep: None,
                stalled: stalled.clone(),
            })
        });
        req.extensions_mut().insert(self.identity.clone());
        let router = self.router.clone();
        Box::pin(async move {
            let response = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let response = if stalled.load(Ordering::Acquire) {
                // The rest of a stalled body would never be read: close rather than wait for it.
                let mut r = (
                    http::StatusCode::REQUEST_TIMEOUT,
                    axum::Json(serde_json::json!({"error": "timeout"})),
                )
                    .into_response();
                if http1 {
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                r
            } else {
                response
            };
            Ok(response.map(|body| Body::new(Sent { body, _busy: busy })))
        })
    }
}

/// The request body ended because it did not arrive within `limits.body_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within limits.body_timeout_ms")]
struct BodyTimeout;

/// A request body that must have arrived by a deadline set when its headers did.
struct Deadline {
    body: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if sleep.as_mut().poll(cx).is_ready() {
            this.stalled.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
struct Sent {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Sent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a future is still pending after a moment: what "waits" means here.
    async fn waits(f: impl Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_makes_room_and_a_busy_one_never_does() {
        let c = Arc::new(Connections::new(2));
        let first = c.open();
        assert!(!waits(c.room()).await, "below the cap");
        let second = c.open();
        let request = Busy::new(&second.activity, &c);

        // At the cap: the idle connection is asked to go, and room comes once it has; the busy
        // one is never asked, though it is the one used most recently.
        let room = c.room();
        tokio::pin!(room);
        assert!(waits(&mut room).await);
        assert!(first.activity.leaving.load(Ordering::Acquire));
        assert!(!second.activity.leaving.load(Ordering::Acquire));
        drop(first);
        assert!(!waits(&mut room).await);

        // Every connection busy: accepting waits until a request ends.
        let third = c.open();
        let _busy = Busy::new(&third.activity, &c);
        let room = c.room();
        tokio::pin!(room);
        assert!(waits(&mut room).await);
        assert!(!second.activity.leaving.load(Ordering::Acquire));
        drop(request);
        assert!(waits(&mut room).await);
        assert!(second.activity.leaving.load(Ordering::Acquire));
        assert!(!third.activity.leaving.load(Ordering::Acquire));
        drop(second);
        assert!(!waits(&mut room).await);
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let c = Arc::new(Connections::new(4));
        let slot = c.open();
        let limit = Duration::from_millis(50);
        let request = Busy::new(&slot.activity, &c);
        assert!(waits(idle(&slot.activity, limit)).await);
        drop(request);
        tokio::time::timeout(Duration::from_secs(5), idle(&slot.activity, limit))
            .await
            .expect("idle once the request has ended");
    }
}
