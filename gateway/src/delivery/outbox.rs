//! Delivery: every concern, alert and notification leaves the gateway through a durable outbox in
//! its own database. A delivery is written in the same transaction as the thing it announces, so
//! it exists exactly when that thing does; workers then deliver it at least once — to a
//! receiver's webhook, signed, or to a recipient's inbox — retrying with exponential backoff until
//! it is delivered or its attempts run out and it is dead-lettered for an administrator.
//!
//! Claiming: a worker takes a batch of due rows and pushes each row's `next_attempt_at` to the end
//! of its lease in the same statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers on
//! several nodes never take the same row; SQLite has one writer at a time, so the single
//! statement is already exclusive). A worker that dies mid-delivery leaves its rows to come due
//! again when the lease ends: the receiver may then see the delivery twice, always with the same
//! delivery id, which is what it deduplicates on.
//!
//! Signing: the body is sent with `Weft-Delivery` (the delivery id), `Weft-Timestamp` (Unix
//! seconds when this attempt was signed) and `Weft-Signature: v1=<hex HMAC-SHA256 of
//! "<timestamp>.<body>">`. [`verify_signature`] is what a receiver runs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use prometheus::{register_int_counter_vec, IntCounterVec};
use rand::Rng;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;

use crate::foundation::config::{DeliveryConfig, WebhookConfig};
use crate::foundation::domain::Role;
use crate::foundation::store::{Backend, Store};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the delivery id; the same on every attempt of one delivery.
pub const DELIVERY_HEADER: &str = "weft-delivery";
/// Header carrying the Unix time (seconds) the attempt was signed at.
pub const TIMESTAMP_HEADER: &str = "weft-timestamp";
/// Header carrying `v1=<hex HMAC-SHA256>` over `"<timestamp>.<body>"`.
pub const SIGNATURE_HEADER: &str = "weft-signature";

static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_outbox_attempts_total",
        "Delivery attempts by channel and outcome (delivered, retry, dead)",
        &["channel", "outcome"]
    )
    .expect("metric registers once")
});

/// Timestamps as the store keeps them: fixed width, so text order is time order.
pub fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Who a delivery is for: a person, or whoever holds a role in an agency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Address {
    User { agency: String, user: String },
    Role { agency: String, role: Role },
}

impl Address {
    /// The stable text form kept in the store: `user:<agency>:<user>` or `role:<agency>:<role>`.
    pub fn key(&self) -> String {
        match self {
            Address::User { agency, user } => format!("user:{agency}:{user}"),
            Address::Role { agency, role } => format!("role:{agency}:{role}"),
        }
    }

    pub fn agency(&self) -> &str {
        match self {
            Address::User { agency, .. } | Address::Role { agency, .. } => agency,
        }
    }

    /// Whether a practitioner is this address (the person, or someone holding the role there).
    pub fn includes(&self, agency: &str, user: &str, role: Role) -> bool {
        match self {
            Address::User { agency: a, user: u } => a == agency && u == user,
            Address::Role { agency: a, role: r } => a == agency && *r == role,
        }
    }
}

/// Something to deliver, before it has a row.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `concern`, `concern_update`, `alert`, `event`.
    pub topic: &'static str,
    /// The concern, alert or event the delivery announces.
    pub subject: String,
    pub child: Option<String>,
    pub to: Address,
    /// A subscription's chosen webhook; otherwise the address's configured webhook, if any.
    pub webhook: Option<String>,
    pub data: Value,
}

/// A row a worker holds.
#[derive(Debug, Clone)]
struct Claimed {
    id: String,
    topic: String,
    subject: String,
    child: Option<String>,
    recipient: String,
    channel: String,
    webhook: Option<String>,
    payload: String,
    attempts: i64,
}

/// A delivery as an administrator sees it: where it stands, never what it carries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    pub id: String,
    pub topic: String,
    pub subject: String,
    pub recipient: String,
    /// `webhook` or `inbox`.
    pub channel: String,
    pub webhook: Option<String>,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("no webhook with id {0:?} is configured")]
    UnknownWebhook(String),
}

/// The outbox of one node: where deliveries are written, and the workers that send them.
pub struct Outbox {
    store: Store,
    config: DeliveryConfig,
    webhooks: HashMap<String, WebhookConfig>,
    /// This process, as it appears in `lease_owner`.
    node: String,
    wake: Notify,
    http: reqwest::Client,
}

impl Outbox {
    pub fn new(store: Store, config: DeliveryConfig) -> anyhow::Result<Outbox> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.webhook_timeout_ms))
            .connect_timeout(Duration::from_millis(config.webhook_timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Outbox {
            store,
            webhooks: config
                .webhooks
                .iter()
                .map(|w| (w.id.clone(), w.clone()))
                .collect(),
            config,
            node: uuid::Uuid::new_v4().to_string(),
            wake: Notify::new(),
            http,
        })
    }

    /// Whether a webhook id is configured, and for which agency.
    pub fn webhook_agency(&self, id: &str) -> Option<&str> {
        self.webhooks.get(id).map(|w| w.agency.as_str())
    }

    /// The webhook a delivery to this address goes to: one configured for the exact role at the
    /// agency first, then one for the whole agency. A personal address has an inbox only.
    fn webhook_for(&self, to: &Address) -> Option<&WebhookConfig> {
        let Address::Role { agency, role } = to else {
            return None;
        };
        let hooks = || self.config.webhooks.iter().filter(|w| &w.agency == agency);
        hooks()
            .find(|w| w.role == Some(*role))
            .or_else(|| hooks().find(|w| w.role.is_none()))
    }

    /// The channel a delivery to this address would take: `webhook` or `inbox`.
    pub fn channel_for(&self, to: &Address) -> &'static str {
        if self.webhook_for(to).is_some() {
            "webhook"
        } else {
            "inbox"
        }
    }

    /// Writes deliveries inside the caller's transaction, so they exist exactly when what they
    /// announce does. Returns their ids. Call [`Outbox::wake`] after the commit.
    pub async fn enqueue(
        &self,
        conn: &mut AnyConnection,
        items: &[NewDelivery],
    ) -> Result<Vec<String>, OutboxError> {
        let now = ts(Utc::now());
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let webhook = match &item.webhook {
                Some(id) if self.webhooks.contains_key(id) => Some(id.clone()),
                Some(id) => return Err(OutboxError::UnknownWebhook(id.clone())),
                None => self.webhook_for(&item.to).map(|w| w.id.clone()),
            };
            let channel = if webhook.is_some() {
                "webhook"
            } else {
                "inbox"
            };
            let id = uuid::Uuid::new_v4().to_string();
            // The envelope is fixed now, so every attempt sends the same bytes.
            let envelope = json!({
                "id": id,
                "topic": item.topic,
                "subject": item.subject,
                "child": item.child,
                "recipient": item.to,
                "created_at": now,
                "data": item.data,
            });
            sqlx::query(
                "INSERT INTO outbox (id, topic, subject, child_id, recipient, channel, webhook, \
                 payload, state, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9)",
            )
            .bind(&id)
            .bind(item.topic)
            .bind(&item.subject)
            .bind(item.child.as_deref())
            .bind(item.to.key())
            .bind(channel)
            .bind(webhook.as_deref())
            .bind(envelope.to_string())
            .bind(&now)
            .execute(&mut *conn)
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Tells this node's workers there is new work, so delivery does not wait for the next poll.
    pub fn wake(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Starts this node's workers. They run until the returned handles are aborted; rows they
    /// held then come due again when their leases end.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.workers)
            .map(|_| {
                let me = self.clone();
                tokio::spawn(async move { me.work().await })
            })
            .collect()
    }

    async fn work(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.poll_ms);
        loop {
            match self.run_once().await {
                Ok(n) if n >= self.config.batch as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox claim failed; retrying"),
            }
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(poll) => {},
            }
        }
    }

    /// Claims one batch of due deliveries and attempts each. Returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, OutboxError> {
        let claimed = self.claim().await?;
        let n = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|c| self.attempt(c))).await;
        Ok(n)
    }

    async fn claim(&self) -> Result<Vec<Claimed>, OutboxError> {
        let now = Utc::now();
        let lease_end = now + chrono::Duration::seconds(self.config.lease_secs as i64);
        let lock = match self.store.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET lease_owner = $1, next_attempt_at = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at LIMIT $4{lock}) \
             RETURNING id, topic, subject, child_id, recipient, channel, webhook, payload, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(&self.node)
            .bind(ts(lease_end))
            .bind(ts(now))
            .bind(i64::from(self.config.batch))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    topic: r.try_get("topic")?,
                    subject: r.try_get("subject")?,
                    child: r.try_get("child_id")?,
                    recipient: r.try_get("recipient")?,
                    channel: r.try_get("channel")?,
                    webhook: r.try_get("webhook")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(OutboxError::from)
    }

    async fn attempt(&self, c: Claimed) {
        let result = match c.channel.as_str() {
            "webhook" => match self.post(&c).await {
                Ok(()) => self.delivered(&c, false).await,
                Err(problem) => self.failed(&c, &problem).await,
            },
            _ => self.delivered(&c, true).await,
        };
        if let Err(e) = result {
            // The row stays claimed until its lease ends, then is tried again.
            tracing::warn!(error = %e, "outbox could not record an attempt");
        }
    }

    /// Sends one webhook. The error text is what an administrator sees on the row; it never
    /// carries the URL's query or the body.
    async fn post(&self, c: &Claimed) -> Result<(), String> {
        let hook = c
            .webhook
            .as_ref()
            .and_then(|id| self.webhooks.get(id))
            .ok_or_else(|| format!("webhook {:?} is no longer configured", c.webhook))?;
        let timestamp = Utc::now().timestamp();
        let signature = sign(
            hook.secret.expose_secret().as_bytes(),
            timestamp,
            c.payload.as_bytes(),
        );
        let response = self
            .http
            .post(&hook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &c.id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(c.payload.clone())
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "receiver answered HTTP {}",
                response.status().as_u16()
            ))
        }
    }

    /// Marks a delivery done, and for an inbox puts it there, in one transaction.
    async fn delivered(&self, c: &Claimed, inbox: bool) -> Result<(), sqlx::Error> {
        let now = ts(Utc::now());
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'delivered', delivered_at = $1, last_error = NULL, \
             lease_owner = NULL WHERE id = $2 AND lease_owner = $3 AND attempts = $4 \
             AND state = 'pending'",
        )
        .bind(&now)
        .bind(&c.id)
        .bind(&self.node)
        .bind(c.attempts)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Another worker took the row over after our lease ended; it will finish it.
            return Ok(());
        }
        if inbox {
            let (agency, role, user) = split_key(&c.recipient);
            sqlx::query(
                "INSERT INTO inbox (delivery_id, agency, role, user_id, topic, subject, child_id, \
                 payload, delivered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(&c.id)
            .bind(agency)
            .bind(role)
            .bind(user)
            .bind(&c.topic)
            .bind(&c.subject)
            .bind(c.child.as_deref())
            .bind(&c.payload)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        if c.topic == "concern" {
            mark_received(&mut tx, &c.subject, &c.recipient, &now).await?;
        }
        tx.commit().await?;
        DELIVERIES
            .with_label_values(&[&c.channel, "delivered"])
            .inc();
        Ok(())
    }

    async fn failed(&self, c: &Claimed, problem: &str) -> Result<(), sqlx::Error> {
        let dead = c.attempts >= i64::from(self.config.max_attempts);
        let next = Utc::now() + self.backoff(c.attempts);
        sqlx::query(
            "UPDATE outbox SET state = $1, next_attempt_at = $2, last_error = $3, \
             lease_owner = NULL WHERE id = $4 AND lease_owner = $5 AND attempts = $6 \
             AND state = 'pending'",
        )
        .bind(if dead { "dead" } else { "pending" })
        .bind(ts(next))
        .bind(problem)
        .bind(&c.id)
        .bind(&self.node)
        .bind(c.attempts)
        .execute(&self.store.pool)
        .await?;
        let outcome = if dead { "dead" } else { "retry" };
        DELIVERIES.with_label_values(&[&c.channel, outcome]).inc();
        if dead {
            tracing::warn!(topic = %c.topic, attempts = c.attempts, problem, "delivery dead-lettered");
        }
        Ok(())
    }

    /// The wait after the `attempts`-th failure: doubling from the initial delay, capped, with
    /// ±20 % jitter so that a receiver coming back is not hit by every retry at once.
    fn backoff(&self, attempts: i64) -> chrono::Duration {
        let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
        let base = self
            .config
            .backoff_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.backoff_max_ms);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        chrono::Duration::milliseconds((base as f64 * jitter) as i64)
    }

    /// Deliveries in a state, oldest first.
    pub async fn list(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryStatus>, sqlx::Error> {
        let mut sql = String::from(
            "SELECT id, topic, subject, recipient, channel, webhook, state, attempts, \
             next_attempt_at, last_error, created_at, delivered_at FROM outbox",
        );
        if state.is_some() {
            sql.push_str(" WHERE state = $1");
        }
        sql.push_str(&format!(
            " ORDER BY created_at, id LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut q = sqlx::query(&sql);
        if let Some(s) = state {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.store.pool).await?;
        rows.iter().map(status_row).collect()
    }

    /// Deliveries announcing one subject (a concern, an alert).
    pub async fn for_subject(&self, subject: &str) -> Result<Vec<DeliveryStatus>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, topic, subject, recipient, channel, webhook, state, attempts, \
             next_attempt_at, last_error, created_at, delivered_at FROM outbox \
             WHERE subject = $1 ORDER BY created_at, id",
        )
        .bind(subject)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(status_row).collect()
    }

    /// Puts a dead delivery back in the queue with fresh attempts, on `conn` (the caller's
    /// transaction, which commits it with its audit entry, then calls [`Outbox::wake`]). `false`
    /// when there is no dead delivery with that id.
    pub async fn retry(&self, conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             lease_owner = NULL WHERE id = $2 AND state = 'dead'",
        )
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Called by the outbox in its delivery transaction: the recipient has the concern.
async fn mark_received(
    conn: &mut AnyConnection,
    concern: &str,
    recipient: &str,
    at: &str,
) -> Result<(), sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE concern_recipients SET state = 'received', updated_at = $1 \
         WHERE concern_id = $2 AND recipient = $3 AND state = 'sent'",
    )
    .bind(at)
    .bind(concern)
    .bind(recipient)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() > 0 {
        sqlx::query(
            "INSERT INTO concern_log (id, concern_id, at, kind, recipient, by_user, by_agency, \
             by_role, state) VALUES ($1, $2, $3, 'status', $4, 'weft', 'weft', 'delivery', \
             'received')",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(concern)
        .bind(at)
        .bind(recipient)
        .execute(conn)
        .await?;
    }
    Ok(())
}

fn status_row(r: &sqlx::any::AnyRow) -> Result<DeliveryStatus, sqlx::Error> {
    Ok(DeliveryStatus {
        id: r.try_get("id")?,
        topic: r.try_get("topic")?,
        subject: r.try_get("subject")?,
        recipient: r.try_get("recipient")?,
        channel: r.try_get("channel")?,
        webhook: r.try_get("webhook")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// `user:<agency>:<user>` → (agency, None, Some(user)); `role:<agency>:<role>` → (agency,
/// Some(role), None). Agency ids cannot hold a colon (the configuration schema forbids it); a
/// user id may.
fn split_key(key: &str) -> (&str, Option<&str>, Option<&str>) {
    let mut parts = key.splitn(3, ':');
    let kind = parts.next().unwrap_or_default();
    let agency = parts.next().unwrap_or_default();
    let rest = parts.next();
    match kind {
        "role" => (agency, rest, None),
        _ => (agency, None, rest),
    }
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, the value of [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a receiver should reject a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("timestamp header is not a Unix time in seconds")]
    Timestamp,
    #[error("timestamp is {0} s away from now: a replay, or a clock to fix")]
    Stale(i64),
    #[error("signature header is not v1=<hex>")]
    Format,
    #[error("signature does not match")]
    Mismatch,
}

/// What a webhook receiver runs on each request, before reading the body as JSON: checks that
/// the timestamp is within `tolerance` of `now` (rejecting replays of old requests) and that the
/// signature covers this timestamp and these exact bytes (compared in constant time). After it
/// passes, deduplicate on the `Weft-Delivery` header: retries carry the same id.
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Timestamp)?;
    let skew = now.timestamp() - at;
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale(skew));
    }
    let hex_sig = signature
        .trim()
        .strip_prefix("v1=")
        .ok_or(SignatureError::Format)?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Format)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// One inbox item as its owner reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxItem {
    pub delivery_id: String,
    pub topic: String,
    pub subject: String,
    pub child: Option<String>,
    pub delivered_at: String,
    /// Whether the person asking has marked it read (an item to a role is read or unread for
    /// each of the role's people).
    pub read: bool,
    /// The delivery envelope, as a webhook receiver would get it.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A practitioner's inbox: deliveries to them personally and to their role in their agency,
/// oldest first, after `after` (a `delivered_at` from an earlier page) when given.
pub async fn inbox(
    store: &Store,
    agency: &str,
    user: &str,
    role: Role,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<InboxItem>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT i.delivery_id, i.topic, i.subject, i.child_id, i.payload, i.delivered_at, \
         r.read_at FROM inbox i LEFT JOIN inbox_reads r ON r.delivery_id = i.delivery_id \
         AND r.agency = i.agency AND r.user_id = $2 \
         WHERE i.agency = $1 AND (i.user_id = $2 OR i.role = $3) AND i.delivered_at > $4 \
         ORDER BY i.delivered_at, i.delivery_id LIMIT {}",
        limit.clamp(1, 1000)
    ))
    .bind(agency)
    .bind(user)
    .bind(role.as_str())
    .bind(after.unwrap_or(""))
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload")?;
            Ok(InboxItem {
                delivery_id: r.try_get("delivery_id")?,
                topic: r.try_get("topic")?,
                subject: r.try_get("subject")?,
                child: r.try_get("child_id")?,
                delivered_at: r.try_get("delivered_at")?,
                read: r.try_get::<Option<String>, _>("read_at")?.is_some(),
                payload: serde_json::from_str(&payload)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            })
        })
        .collect()
}

/// How many items of a person's inbox they have not marked read.
pub async fn unread(
    store: &Store,
    agency: &str,
    user: &str,
    role: Role,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM inbox i LEFT JOIN inbox_reads r \
         ON r.delivery_id = i.delivery_id AND r.agency = i.agency AND r.user_id = $2 \
         WHERE i.agency = $1 AND (i.user_id = $2 OR i.role = $3) AND r.read_at IS NULL",
    )
    .bind(agency)
    .bind(user)
    .bind(role.as_str())
    .fetch_one(&store.pool)
    .await?;
    row.try_get("n")
}

/// Marks an item of a person's inbox read, inside `tx`. False if no such item is theirs.
pub async fn mark_read(
    tx: &mut sqlx::AnyConnection,
    agency: &str,
    user: &str,
    role: Role,
    delivery: &str,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let theirs = sqlx::query(
        "SELECT delivery_id FROM inbox WHERE delivery_id = $1 AND agency = $2 \
         AND (user_id = $3 OR role = $4)",
    )
    .bind(delivery)
    .bind(agency)
    .bind(user)
    .bind(role.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if theirs {
        sqlx::query(
            "INSERT INTO inbox_reads (delivery_id, agency, user_id, read_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (delivery_id, agency, user_id) DO NOTHING",
        )
        .bind(delivery)
        .bind(agency)
        .bind(user)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::test_store;
    use secrecy::SecretString;

    fn config(webhooks: Vec<WebhookConfig>) -> DeliveryConfig {
        DeliveryConfig {
            poll_ms: 50,
            workers: 1,
            batch: 16,
            lease_secs: 1,
            max_attempts: 3,
            backoff_initial_ms: 1,
            backoff_max_ms: 5,
            webhook_timeout_ms: 2_000,
            webhooks,
        }
    }

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            id: "mash".into(),
            agency: "la".into(),
            role: Some(Role::MashOfficer),
            url: url.into(),
            secret: SecretString::from("a-secret-of-sixteen+"),
        }
    }

    fn to_mash() -> NewDelivery {
        NewDelivery {
            topic: "alert",
            subject: "a1".into(),
            child: Some("c1".into()),
            to: Address::Role {
                agency: "la".into(),
                role: Role::MashOfficer,
            },
            webhook: None,
            data: json!({"hello": "world"}),
        }
    }

    async fn enqueue(outbox: &Outbox, items: &[NewDelivery]) -> Vec<String> {
        let mut conn = outbox.store.pool.acquire().await.unwrap();
        outbox.enqueue(&mut conn, items).await.unwrap()
    }

    #[test]
    fn signatures_verify_and_reject() {
        let now = Utc::now();
        let body = br#"{"id":"d1"}"#;
        let sig = sign(b"k", now.timestamp(), body);
        let t = now.timestamp().to_string();
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature(b"k", &t, &sig, body, now, tol), Ok(()));
        assert_eq!(
            verify_signature(b"other", &t, &sig, body, now, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"k", &t, &sig, b"{}", now, tol),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::seconds(301);
        assert!(matches!(
            verify_signature(b"k", &t, &sig, body, later, tol),
            Err(SignatureError::Stale(301))
        ));
        // The timestamp is covered: moving it breaks the signature.
        let moved = (now.timestamp() + 1).to_string();
        assert_eq!(
            verify_signature(b"k", &moved, &sig, body, now, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"k", &t, "sha256=00", body, now, tol),
            Err(SignatureError::Format)
        );
    }

    #[test]
    fn keys_split_back() {
        let u = Address::User {
            agency: "la".into(),
            user: "a:b".into(),
        };
        assert_eq!(split_key(&u.key()), ("la", None, Some("a:b")));
        let r = Address::Role {
            agency: "urn-1".into(),
            role: Role::Dsl,
        };
        assert_eq!(split_key(&r.key()), ("urn-1", Some("dsl"), None));
    }

    #[tokio::test]
    async fn inbox_delivery_is_once_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let outbox = Outbox::new(store.clone(), config(vec![])).unwrap();
        let ids = enqueue(&outbox, &[to_mash()]).await;
        assert_eq!(outbox.channel_for(&to_mash().to), "inbox");
        assert_eq!(outbox.run_once().await.unwrap(), 1);
        assert_eq!(
            outbox.run_once().await.unwrap(),
            0,
            "delivered rows stay delivered"
        );
        let items = inbox(&store, "la", "someone", Role::MashOfficer, None, 10)
            .await
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].delivery_id, ids[0]);
        assert_eq!(items[0].payload["id"], ids[0]);
        assert_eq!(items[0].payload["data"]["hello"], "world");
        let other = inbox(&store, "la", "someone", Role::SocialWorker, None, 10)
            .await
            .unwrap();
        assert!(other.is_empty(), "another role's inbox does not see it");
    }

    #[tokio::test]
    async fn unreachable_webhook_retries_then_dead_letters_then_retries_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let outbox = Outbox::new(
            store.clone(),
            config(vec![hook(&format!("http://127.0.0.1:{port}/hook"))]),
        )
        .unwrap();
        let ids = enqueue(&outbox, &[to_mash()]).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            outbox.run_once().await.unwrap();
        }
        let dead = outbox.list(Some("dead"), 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].id, ids[0]);
        assert_eq!(dead[0].attempts, 3);
        assert!(dead[0].last_error.is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            outbox.run_once().await.unwrap(),
            0,
            "dead rows are not tried"
        );

        let mut conn = outbox.store.pool.acquire().await.unwrap();
        assert!(outbox.retry(&mut conn, &ids[0]).await.unwrap());
        assert!(
            !outbox.retry(&mut conn, &ids[0]).await.unwrap(),
            "only dead rows"
        );
        let pending = outbox.list(Some("pending"), 10).await.unwrap();
        assert_eq!(pending[0].attempts, 0);
    }

    #[tokio::test]
    async fn a_lapsed_lease_is_claimed_again_with_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let a = Outbox::new(store.clone(), config(vec![])).unwrap();
        let b = Outbox::new(store.clone(), config(vec![])).unwrap();
        let ids = enqueue(&a, &[to_mash()]).await;
        // `a` claims and "dies" before finishing.
        let claimed = a.claim().await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(b.claim().await.unwrap().is_empty(), "held while leased");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let again = b.claim().await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, ids[0]);
        assert_eq!(again[0].attempts, 2);
        // The late finisher does not override the new owner.
        a.delivered(&claimed[0], true).await.unwrap();
        let pending = a.list(Some("pending"), 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        b.delivered(&again[0], true).await.unwrap();
        assert_eq!(a.list(Some("delivered"), 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_claimers_never_share_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let nodes: Vec<Arc<Outbox>> = (0..4)
            .map(|_| Arc::new(Outbox::new(store.clone(), config(vec![])).unwrap()))
            .collect();
        let items: Vec<NewDelivery> = (0..200).map(|_| to_mash()).collect();
        enqueue(&nodes[0], &items).await;
        let claims = futures::future::join_all(nodes.iter().map(|n| {
            let n = n.clone();
            async move {
                let mut mine = Vec::new();
                loop {
                    let got = n.claim().await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|c| c.id));
                }
                mine
            }
        }))
        .await;
        let mut all: Vec<String> = claims.into_iter().flatten().collect();
        assert_eq!(all.len(), 200);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200, "no row claimed twice");
    }
}
