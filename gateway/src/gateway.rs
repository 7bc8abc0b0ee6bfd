//! The gateway, built once from its configuration: everything a read or a write needs — the
//! store, the audit writer, the policy in force, the sources, the master child index, the
//! token verifier, the schemas, the routing rules and the outbox. Every interface (the JSON
//! API, a web page, a command) holds one and calls the functions of [`crate::read`] and
//! [`crate::write`] with it.
//!
//! It also writes the audit entry each of those functions ends with ([`Gateway::record`],
//! [`Gateway::refuse`]): what happened, to whom, by whom, and why — or, if that cannot be
//! written, [`Error::AuditUnavailable`] and nothing else.

use std::ops::Deref;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Any, Transaction};
use tokio::task::JoinHandle;

use crate::delivery::outbox::Outbox;
use crate::delivery::routing::Routing;
use crate::foundation::audit::checkpoint::Checkpointer;
use crate::foundation::audit::{self, Auditor, Entry};
use crate::foundation::config::Config;
use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::schema::Schemas;
use crate::foundation::store::Store;
use crate::pipeline::authenticate::{Principal, Verifier};
use crate::pipeline::authorise::relate::{self, Relationship};
use crate::pipeline::authorise::{grants, Policy};
use crate::pipeline::fanout::fan_out;
use crate::pipeline::resolve::linkage::Matcher;
use crate::pipeline::resolve::{Index, Link};
use crate::sources::Sources;

/// Shared, cheap to clone: one per process.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub auditor: Auditor,
    /// Signs checkpoints of the audit chain outside the database, when configured.
    pub checkpointer: Option<Arc<Checkpointer>>,
    /// Swapped whole when the policy is reloaded, so a request sees one policy throughout.
    pub policy: RwLock<Arc<Policy>>,
    pub policy_status: RwLock<PolicyStatus>,
    pub sources: Sources,
    pub index: Index,
    pub verifier: Verifier,
    pub schemas: Schemas,
    /// Who concerns and alerts go to (`policies/routing.toml`).
    pub routing: Routing,
    /// Where every concern, alert and notification is written before it is delivered.
    pub outbox: Arc<Outbox>,
    /// The agency's OpenID Connect provider, for signing in to the web pages (`web.oidc`).
    pub oidc: Option<Arc<crate::pipeline::oidc::Provider>>,
}

/// What `GET /v1/status` says of the policy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus {
    pub rules: usize,
    pub loaded_at: DateTime<Utc>,
    /// The last reload that was refused, with why; the policy loaded before it stays in force.
    pub refused: Option<String>,
}

impl Deref for Gateway {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    /// Opens the database (running migrations), loads policy, routing and keys, builds the
    /// adapters and starts the audit writer. Any failure stops start-up before anything is
    /// served. Returns the audit writer's task, which ends once [`Auditor::close`] has drained
    /// its queue.
    pub async fn build(
        config: Config,
        schemas: Schemas,
    ) -> anyhow::Result<(Gateway, JoinHandle<()>)> {
        let store = Store::open(&config.database.url, config.database.max_connections)
            .await
            .context("database")?;
        let policy = Policy::from_config(&config).await.context("policy")?;
        tracing::info!(rules = policy.rules(), "policy loaded");
        let routing = Routing::load(&config.policy.routing_path(), &config).context("routing")?;
        let outbox =
            Arc::new(Outbox::new(store.clone(), config.delivery.clone()).context("outbox")?);
        let verifier = Verifier::new(&config.auth, &config.agencies).context("auth")?;
        if let Some(jwks) = &verifier.jwks {
            // The provider may be down at start; its keys are fetched again on first use.
            if let Err(e) = jwks.refresh().await {
                tracing::warn!(error = %e, "auth.jwks_uri could not be fetched at start");
            }
        }
        let oidc = match &config.web.oidc {
            Some(o) => Some(Arc::new(
                crate::pipeline::oidc::Provider::new(o.clone()).context("web.oidc")?,
            )),
            None => None,
        };
        let sources = Sources::build(&config, &store).context("sources")?;
        let matcher = Matcher::from_config(&config.matching).context("matching model")?;
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
        // Links the matcher made under another model are asked about where this one disagrees;
        // none is moved.
        let rechecks = crate::pipeline::resolve::linkage::reexamine(&index)
            .await
            .context("re-examining links made by an earlier matching model")?;
        if rechecks > 0 {
            tracing::info!(rechecks, "links made by an earlier model sent for review");
        }
        let checkpointer = Checkpointer::from_config(&config.audit).context("audit checkpoints")?;
        let (auditor, audit_task) = Auditor::start(store.clone(), checkpointer.clone());
        let gateway = Gateway(Arc::new(Inner {
            config,
            store,
            auditor,
            checkpointer,
            policy_status: RwLock::new(PolicyStatus {
                rules: policy.rules(),
                loaded_at: Utc::now(),
                refused: None,
            }),
            policy: RwLock::new(Arc::new(policy)),
            sources,
            index,
            verifier,
            schemas,
            routing,
            outbox,
            oidc,
        }));
        Ok((gateway, audit_task))
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the policy files again; swaps the new policy in whole, or keeps the old one and
    /// says why in [`PolicyStatus::refused`].
    pub async fn reload_policy(&self) {
        match Policy::from_config(&self.config).await {
            Ok(p) => {
                let rules = p.rules();
                if let Ok(mut slot) = self.policy.write() {
                    *slot = Arc::new(p);
                }
                if let Ok(mut s) = self.policy_status.write() {
                    *s = PolicyStatus {
                        rules,
                        loaded_at: Utc::now(),
                        refused: None,
                    };
                }
                tracing::info!(rules, "policy reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
                if let Ok(mut s) = self.policy_status.write() {
                    s.refused = Some(e.to_string());
                }
            }
        }
    }

    /// The practitioner's relationships with a child, for a write or a read that does not show
    /// the child's view (the consent register, a concern): the same rules as the view
    /// ([`relate`]), asking only the practitioner's own agency's sources that a rule needs.
    /// `Ok(None)` when the child is not in the index.
    pub async fn relationships(
        &self,
        who: &Principal,
        child: &str,
    ) -> Result<Option<Vec<Relationship>>, Error> {
        let Some((links, grant)) = grants::links_and_active(&self.store, who, child).await? else {
            return Ok(None);
        };
        let wanted = relate::relations(&self.config.relationships, who.role);
        if wanted.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let records = relate::records(&self.store, &wanted, who, child).await?;
        let own_la = relate::own_la(&self.config.agencies, who);
        let candidates = relate::candidates(
            &wanted,
            who,
            own_la,
            &self.sources,
            &links,
            &records,
            grant.as_ref(),
        );
        let needed = candidates.pending_sources();
        let fetched = if needed.is_empty() {
            Vec::new()
        } else {
            let asked: Vec<Link> = links
                .into_iter()
                .filter(|l| needed.contains(&l.source))
                .collect();
            fan_out(&self.sources, &asked).await
        };
        Ok(Some(relate::confirm(
            candidates,
            who,
            self.config.relationships.recently_left_days,
            &fetched,
        )))
    }

    /// A local id names a record in one source; only the source's own agency may look a child
    /// up by it. In anyone else's source the answer would say whether that agency holds a
    /// record (an existence oracle), so the request is refused whatever exists. `at` is the
    /// field's JSON pointer.
    pub fn own_source(&self, who: &Principal, source: &str, at: &str) -> Result<(), Error> {
        let own = self
            .sources
            .all
            .iter()
            .any(|s| s.id == source && s.agency.id == who.agency);
        if own {
            Ok(())
        } else {
            Err(Error::unprocessable(
                at,
                "a local id can be searched only in your own agency's sources",
            ))
        }
    }

    pub fn policy_status(&self) -> PolicyStatus {
        match self.policy_status.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether `p` is an IG officer of an agency the configuration makes the partnership's IG
    /// lead (`audit.ig_lead_agencies`): they audit every agency; other IG officers their own.
    pub fn is_ig_lead(&self, p: &Principal) -> bool {
        p.role == crate::foundation::domain::Role::IgOfficer
            && self.config.audit.ig_lead_agencies.contains(&p.agency)
    }

    /// The sources whose data belongs to `agency`: an IG officer audits the reads of these.
    pub fn sources_of(&self, agency: &str) -> Vec<String> {
        self.config
            .sources
            .iter()
            .filter(|s| s.agency == agency)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Writes the audit entry of a request. Any failure means the caller gets
    /// [`Error::AuditUnavailable`] and nothing else.
    pub async fn record(
        &self,
        p: &Principal,
        action: &str,
        child: Option<&str>,
        purpose: Option<Purpose>,
        outcome: &str,
        detail: Value,
    ) -> Result<(), Error> {
        let entry = entry(p, action, child, purpose, outcome, detail);
        self.auditor.append(entry).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "audit append failed; failing closed");
            Error::AuditUnavailable
        })
    }

    /// Chains `entries` onto the audit log inside `tx`, then commits: a change and the entries
    /// recording it take effect together or not at all. If the entries cannot be chained the
    /// transaction is dropped, nothing changes, and the caller gets [`Error::AuditUnavailable`].
    pub async fn commit(
        &self,
        mut tx: Transaction<'static, Any>,
        entries: &[Entry],
    ) -> Result<(), Error> {
        let refs: Vec<&Entry> = entries.iter().collect();
        if let Err(e) = audit::chain(&mut tx, &refs).await {
            tracing::error!(error = %e, "audit append failed; the change is not made");
            crate::foundation::metrics::AUDIT_FAILURES.inc();
            return Err(Error::AuditUnavailable);
        }
        tx.commit().await?;
        if let Some(c) = &self.checkpointer {
            c.appended(entries.len());
        }
        Ok(())
    }

    /// Audits a refused request, then returns the refusal (or [`Error::AuditUnavailable`] if
    /// even that cannot be audited).
    pub async fn refuse(
        &self,
        p: &Principal,
        action: &str,
        child: Option<&str>,
        purpose: Option<Purpose>,
        error: Error,
    ) -> Error {
        let detail = json!({"refused": refusal_kind(&error), "error": error.to_string()});
        match self
            .record(p, action, child, purpose, error.outcome(), detail)
            .await
        {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }
}

fn refusal_kind(e: &Error) -> &'static str {
    match e {
        Error::Invalid { .. } | Error::Unprocessable { .. } => "invalid",
        Error::Forbidden(_) => "forbidden",
        Error::NotFound(_) => "not_found",
        Error::Conflict(_) => "conflict",
        Error::AuditUnavailable => "audit_unavailable",
        Error::Unavailable(_) => "unavailable",
        Error::Internal(_) => "internal",
    }
}

/// The audit entry for a request: who asked, from which client, for what, and what happened.
pub fn entry(
    p: &Principal,
    action: &str,
    child: Option<&str>,
    purpose: Option<Purpose>,
    outcome: &str,
    mut detail: Value,
) -> Entry {
    if let (Some(client), Some(obj)) = (&p.client, detail.as_object_mut()) {
        obj.insert("client".into(), json!(client));
    }
    Entry {
        at: Utc::now(),
        user: p.user.clone(),
        agency: p.agency.clone(),
        role: p.role.as_str().into(),
        action: action.into(),
        child: child.map(String::from),
        purpose: purpose.map(|p| p.as_str().to_string()),
        outcome: outcome.into(),
        detail,
    }
}
