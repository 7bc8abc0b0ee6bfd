//! The application: everything a request needs, built once from the configuration, and the
//! lifecycle around it (start the audit writer and the index, serve, shut down cleanly).

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::delivery::outbox::Outbox;
use crate::delivery::routing::Routing;
use crate::foundation::audit::Auditor;
use crate::foundation::config::Config;
use crate::foundation::schema::Schemas;
use crate::foundation::store::Store;
use crate::pipeline::authenticate::Verifier;
use crate::pipeline::authorise::Policy;
use crate::pipeline::fanout::Sources;
use crate::pipeline::resolve::Index;

/// Shared state behind every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub auditor: Auditor,
    /// Swapped whole when the policy is reloaded, so a request sees one policy throughout.
    pub policy: RwLock<Arc<Policy>>,
    pub policy_status: RwLock<crate::read::policy::PolicyStatus>,
    pub sources: Sources,
    pub index: Index,
    pub verifier: Verifier,
    pub schemas: Schemas,
    /// Who concerns and alerts go to (`policies/routing.toml`).
    pub routing: Routing,
    /// Where every concern, alert and notification is written before it is delivered.
    pub outbox: Arc<Outbox>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A built gateway, bound to its address but not yet serving.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    audit_task: JoinHandle<()>,
}

impl Application {
    /// Opens the database (running migrations), loads policy and keys, builds the adapters and
    /// binds the listener. Any failure here stops start-up before anything is served.
    pub async fn build(config: Config, schemas: Schemas) -> anyhow::Result<Application> {
        let store = Store::open(&config.database.url, config.database.max_connections)
            .await
            .context("database")?;
        let policy = crate::read::policy::load(&config).await.context("policy")?;
        tracing::info!(rules = policy.rules(), "policy loaded");
        let routing = Routing::load(&config.policy.routing_path(), &config).context("routing")?;
        let outbox =
            Arc::new(Outbox::new(store.clone(), config.delivery.clone()).context("outbox")?);
        let verifier = Verifier::new(&config.auth, &config.agencies).context("auth")?;
        let sources = Sources::build(&config, &store).context("sources")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let (auditor, audit_task) = Auditor::start(store.clone());
        let matcher = crate::pipeline::resolve::linkage::Matcher::from_config(&config.matching)
            .context("matching model")?;
        let index = Index::with_matcher(store.clone(), matcher);
        // A store written by an older build has its blocking keys and name counts derived
        // again before anything searches it: without them a search would find nobody.
        let rebuilt = index
            .matcher()
            .rebuild(&store)
            .await
            .context("deriving the index's blocking keys and name counts")?;
        if rebuilt.records > 0 {
            tracing::info!(
                records = rebuilt.records,
                keys = rebuilt.keys,
                "matching rows derived from the index's records"
            );
        }
        let state = AppState(Arc::new(Inner {
            config,
            store,
            auditor,
            policy_status: RwLock::new(crate::read::policy::PolicyStatus {
                rules: policy.rules(),
                loaded_at: chrono::Utc::now(),
                refused: None,
            }),
            policy: RwLock::new(Arc::new(policy)),
            sources,
            index,
            verifier,
            schemas,
            routing,
            outbox,
        }));
        Ok(Application {
            state,
            listener,
            audit_task,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
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
            audit_task,
        } = self;
        let tls = match &state.config.tls {
            Some(tls) => Some(crate::foundation::server::tls_config(tls)?),
            None => None,
        };
        let indexer = tokio::spawn(keep_index(state.clone()));
        let watcher = tokio::spawn(crate::read::policy::watch(state.clone()));
        let importer = tokio::spawn(crate::write::imports::watch(state.clone()));
        // Workers that stop mid-delivery leave their rows leased; they come due again when the
        // lease ends, here or on another node.
        let deliverers = state.outbox.start();
        let router = crate::http::router(state.clone());
        crate::foundation::server::serve(listener, router, tls, shutdown).await;
        indexer.abort();
        watcher.abort();
        importer.abort();
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
        Ok(())
    }
}

/// Builds the index at start-up, then refreshes it on the configured interval.
async fn keep_index(state: AppState) {
    loop {
        state.index.sync(&state.sources).await;
        let every = state.config.index.refresh_secs;
        if every == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}
