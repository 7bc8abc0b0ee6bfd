//! The loopback HTTP server every simulated partner runs on, with a fault switch in front of it.
//!
//! The gateway's promise is that a failing or late source becomes `unavailable` and never fails
//! the whole view; that can only be tested against a partner that really misbehaves on the wire.
//! So the fault is applied below the router, per request: a hang never writes a byte, a dropped
//! connection is closed with no response at all, a garbage body is a real 200 that does not parse.
//!
//! Connections are served on tasks owned by the server's own task, so stopping the server (drop or
//! [`SimServer::shutdown`]) also ends connections left hanging by [`Fault::Hang`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

/// How a simulated partner misbehaves, applied to every request until changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    Normal,
    /// Answer normally after this long (a slow partner; compare with the source's deadline).
    Delay(Duration),
    /// Read the request and never answer (a partner stuck behind a dead backend).
    Hang,
    /// Answer with this HTTP status and a short plain-text body, e.g. 500 or 503.
    Status(u16),
    /// Answer 200 with a JSON content type and a body that is not JSON.
    Garbage,
    /// Read the request, then close the connection without a response.
    DropConnection,
}

/// The body sent under [`Fault::Garbage`]: the opening of a FHIR Bundle, cut off mid-way.
pub const GARBAGE_BODY: &str = "{\"resourceType\": \"Bundle\", \"entry\": [{\"resou";

/// The live fault setting of one server, shared with tests so they can flip it mid-run.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    inner: Arc<SwitchState>,
}

#[derive(Debug, Default)]
struct SwitchState {
    fault: Mutex<Setting>,
    requests: AtomicU64,
}

#[derive(Debug, Default)]
struct Setting {
    fault: Fault,
    /// Requests left before the fault clears by itself; `None` keeps it until changed.
    remaining: Option<u64>,
}

impl FaultSwitch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Setting> {
        self.inner.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, fault: Fault) {
        *self.lock() = Setting {
            fault,
            remaining: None,
        };
    }

    /// Applies `fault` to the next `requests` requests only, then answers normally: a transient
    /// failure, such as a partner restarting, that a retry should hide.
    pub fn set_for(&self, fault: Fault, requests: u64) {
        *self.lock() = Setting {
            fault,
            remaining: Some(requests),
        };
    }

    pub fn get(&self) -> Fault {
        let s = self.lock();
        match s.remaining {
            Some(0) => Fault::Normal,
            _ => s.fault,
        }
    }

    /// The fault for one request, counting it against a transient fault's allowance.
    fn take(&self) -> Fault {
        let mut s = self.lock();
        match s.remaining {
            None => s.fault,
            Some(0) => Fault::Normal,
            Some(n) => {
                s.remaining = Some(n - 1);
                s.fault
            }
        }
    }

    /// Requests received since the server started, whatever the fault did with them; lets a test
    /// tell "the gateway never asked" from "the partner did not answer".
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

/// A running simulated partner on `127.0.0.1`.
#[derive(Debug)]
pub struct SimServer {
    /// The bound loopback address.
    pub addr: SocketAddr,
    faults: FaultSwitch,
    task: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Binds a free loopback port, then builds the router with the server's base URL (FHIR
    /// bundles carry absolute URLs) and serves it until stopped.
    pub(crate) async fn start(make: impl FnOnce(&str) -> Router) -> anyhow::Result<SimServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let router = make(&format!("http://{addr}"));
        let faults = FaultSwitch::default();
        let task = tokio::spawn(accept_loop(listener, router, faults.clone()));
        Ok(SimServer {
            addr,
            faults,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The switch itself, to hand to code that flips faults while the server is borrowed.
    pub fn faults(&self) -> &FaultSwitch {
        &self.faults
    }

    pub fn set_fault(&self, fault: Fault) {
        self.faults.set(fault);
    }

    pub fn requests(&self) -> u64 {
        self.faults.requests()
    }

    /// Stops accepting and ends every open connection, waiting until that has happened.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, router: Router, faults: FaultSwitch) {
    // Owning the connection tasks here means aborting this task aborts them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), faults.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "simulated partner could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, faults: FaultSwitch) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        respond(router.clone(), faults.clone(), req)
    });
    // A connection ending in an error is the normal outcome of DropConnection and of clients
    // that give up on a hang; neither is worth a log line.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Returned to hyper to make it close the connection without writing a response.
#[derive(Debug, thiserror::Error)]
#[error("simulated fault: connection dropped")]
struct DroppedConnection;

async fn respond(
    router: Router,
    faults: FaultSwitch,
    req: Request<Incoming>,
) -> Result<Response<Body>, DroppedConnection> {
    faults.inner.requests.fetch_add(1, Ordering::Relaxed);
    match faults.take() {
        Fault::Normal => {}
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(
                    status.canonical_reason().unwrap_or("error").to_string(),
                ))
                .expect("static response"));
        }
        Fault::Garbage => {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(GARBAGE_BODY))
                .expect("static response"))
        }
        Fault::DropConnection => return Err(DroppedConnection),
    }
    match router.oneshot(req).await {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}
