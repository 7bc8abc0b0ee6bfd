//! The application's lifecycle: the [`Gateway`] built from the configuration and bound to its
//! address; then the index kept fresh, the policy reloaded on change, watched folders imported,
//! the outbox delivering and the HTTP API served, until shutdown drains it all cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::foundation::config::Config;
use crate::foundation::schema::Schemas;
use crate::gateway::Gateway;

/// A built gateway, bound to its address but not yet serving.
pub struct Application {
    state: Gateway,
    listener: TcpListener,
    /// `web.listen`: browsers' listener, without client certificates.
    web_listener: Option<TcpListener>,
    audit_task: JoinHandle<()>,
}

impl Application {
    /// Builds the gateway ([`Gateway::build`]) and binds the listener. Any failure here stops
    /// start-up before anything is served.
    pub async fn build(config: Config, schemas: Schemas) -> anyhow::Result<Application> {
        let listen = config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let web_listener = match config.web.listen {
            Some(web) => Some(
                TcpListener::bind(web)
                    .await
                    .with_context(|| format!("binding web.listen {web}"))?,
            ),
            None => None,
        };
        let (state, audit_task) = Gateway::build(config, schemas).await?;
        Ok(Application {
            state,
            listener,
            web_listener,
            audit_task,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The browsers' listener's address, when `web.listen` is set.
    pub fn web_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.web_listener.as_ref().map(TcpListener::local_addr)
    }

    pub fn state(&self) -> &Gateway {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish
    /// (each has already awaited its audit entry) and waits for the audit writer to drain.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            state,
            listener,
            web_listener,
            audit_task,
        } = self;
        let tls = match &state.config.tls {
            Some(tls) => Some(crate::foundation::server::tls_config(tls)?),
            None => None,
        };
        // The browsers' listener: the same certificate, no client certificate asked for.
        let web_tls = match (&state.config.tls, &web_listener) {
            (Some(tls), Some(_)) => Some(crate::foundation::server::tls_config(
                &crate::foundation::config::TlsConfig {
                    client_ca: None,
                    ..tls.clone()
                },
            )?),
            _ => None,
        };
        let indexer = tokio::spawn(keep_index(state.clone()));
        let watcher = tokio::spawn(watch_policy(state.clone()));
        let importer = tokio::spawn(crate::write::imports::watch(state.clone()));
        let area_alerts = tokio::spawn(crate::write::area_alerts::watch(state.clone()));
        // Workers that stop mid-delivery leave their rows leased; they come due again when the
        // lease ends, here or on another node.
        let deliverers = state.outbox.start();
        let checkpoints = state.checkpointer.clone();
        let checkpointer = checkpoints
            .clone()
            .map(|c| tokio::spawn(c.run(state.store.clone())));
        let store = state.store.clone();
        let router = crate::http::router(state.clone());
        match web_listener {
            None => {
                crate::foundation::server::serve(
                    listener,
                    router,
                    tls,
                    &state.config.limits,
                    shutdown,
                )
                .await;
            }
            Some(web_listener) => {
                use futures::FutureExt;
                let shutdown = shutdown.boxed().shared();
                let web_router = crate::http::router(state.clone())
                    .layer(axum::Extension(crate::foundation::server::BrowserListener));
                tokio::join!(
                    crate::foundation::server::serve(
                        listener,
                        router,
                        tls,
                        &state.config.limits,
                        shutdown.clone(),
                    ),
                    crate::foundation::server::serve(
                        web_listener,
                        web_router,
                        web_tls,
                        &state.config.limits,
                        shutdown,
                    ),
                );
            }
        }
        indexer.abort();
        watcher.abort();
        importer.abort();
        area_alerts.abort();
        for d in deliverers {
            d.abort();
        }
        // Every request has finished and awaited its own entry; what is left in the queue is
        // committed and the writer stops, whoever still holds a handle.
        state.auditor.close();
        drop(state);
        if tokio::time::timeout(Duration::from_secs(10), audit_task)
            .await
            .is_err()
        {
            tracing::warn!("audit writer did not stop within 10 s");
        }
        // The last entries are signed before the node stops: everything it wrote is covered by
        // a signature, and anything after that checkpoint was written by another node or not
        // by a gateway at all.
        if let Some(task) = checkpointer {
            task.abort();
        }
        if let Some(c) = checkpoints {
            if let Err(e) = c.checkpoint(&store).await {
                crate::foundation::metrics::AUDIT_CHECKPOINT_FAILURES.inc();
                tracing::error!(error = %e, "final audit checkpoint not made");
            }
        }
        Ok(())
    }
}

/// Builds the index at start-up, then refreshes it on the configured interval.
async fn keep_index(state: Gateway) {
    loop {
        state.index.sync(&state.sources).await;
        let every = state.config.index.refresh_secs;
        if every == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the policy on SIGHUP or when either file changes (polled every two seconds).
async fn watch_policy(state: Gateway) {
    let files = [
        state.config.policy.model.clone(),
        state.config.policy.policy.clone(),
    ];
    let mut seen: Vec<Option<SystemTime>> = files.iter().map(|f| modified(f)).collect();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = signalled => {},
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                let now: Vec<Option<SystemTime>> = files.iter().map(|f| modified(f)).collect();
                if now == seen {
                    continue;
                }
                seen = now;
            }
        }
        state.reload_policy().await;
    }
}
