//! Concerns: the write path from a practitioner to the agencies that must act. A concern is
//! validated against `schemas/concern.schema.json`, matched to a child through the master child
//! index (an unmatched concern goes to triage, never back to the reporter), routed by
//! `policies/routing.toml`, and stored together with its deliveries in one transaction, so it is
//! delivered exactly when it exists.
//!
//! A concern is never changed after submission. What happens next — delivered (`received`),
//! `acknowledged`, `in_progress`, `closed` with an outcome — is kept per recipient and appended to
//! the concern's history with addenda, and each step a recipient takes is delivered to the
//! reporter's inbox.

use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::delivery::outbox::{ts, Address, InboxItem, NewDelivery};
use crate::delivery::routing::{self, Category, ChildFacts, Urgency};
use crate::foundation::config::AgencyKind;
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{known_category, Effect, Policy, Question};
use crate::write::child::{match_child, parse_child, parse_time, ChildRef};

/// The header that makes a retried submission return the original concern.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A concern as its reporter and recipients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConcernView {
    pub id: String,
    pub submitted_at: String,
    pub submitted_by: String,
    pub agency: String,
    /// The Weft child id, when the concern matched exactly one child.
    pub child: Option<String>,
    /// `weft_id`, `nhs_number`, `upn`, `local_id`, `demographics`, `unmatched` or `ambiguous`.
    pub matched_on: String,
    /// The child's social care status when the concern was routed.
    pub child_status: String,
    pub category: String,
    pub urgency: String,
    /// The concern exactly as submitted.
    #[schema(value_type = Object)]
    pub concern: Value,
    pub recipients: Vec<RecipientView>,
    /// Every step and addendum, oldest first.
    pub history: Vec<LogEntry>,
    /// The reporter's role when they submitted it: whether they are told of others' steps.
    #[serde(skip)]
    pub(crate) reporter_role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub recipient: String,
    pub agency: String,
    pub role: Option<String>,
    pub user: Option<String>,
    /// `webhook` or `inbox`.
    pub channel: String,
    /// The routing rule that chose this recipient.
    pub rule: String,
    /// `sent`, `received`, `acknowledged`, `in_progress` or `closed`.
    pub state: String,
    pub outcome: Option<String>,
    pub updated_at: String,
}

impl RecipientView {
    fn address(&self) -> Option<Address> {
        match (&self.user, &self.role) {
            (Some(user), _) => Some(Address::User {
                agency: self.agency.clone(),
                user: user.clone(),
            }),
            (None, Some(role)) => role.parse::<Role>().ok().map(|role| Address::Role {
                agency: self.agency.clone(),
                role,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub at: String,
    /// `submitted`, `status` or `addendum`.
    pub kind: String,
    pub recipient: Option<String>,
    pub by_user: String,
    pub by_agency: String,
    pub by_role: String,
    pub state: Option<String>,
    pub outcome: Option<String>,
    pub text: Option<String>,
}

/// How far a recipient has taken a concern; steps only go forward.
const STATES: &[&str] = &["sent", "received", "acknowledged", "in_progress", "closed"];

fn rank(state: &str) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

struct Input {
    body: Value,
    hash: String,
    category: Category,
    urgency: Urgency,
    child: ChildRef,
}

fn parse_concern(gw: &Gateway, body: &[u8]) -> Result<Input, Error> {
    let value = validated(body, |v| gw.schemas.concern_errors(v), "concern")?;
    let word = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
    let category = word("category")
        .parse::<Category>()
        .map_err(|e| Error::field("/category", e.to_string()))?;
    let urgency = word("urgency")
        .parse::<Urgency>()
        .map_err(|e| Error::field("/urgency", e.to_string()))?;
    let observed = parse_time(&value, "/observed/when")?;
    if observed > Utc::now() + chrono::Duration::minutes(5) {
        return Err(Error::unprocessable("/observed/when", "is in the future"));
    }
    let child = parse_child(value.get("child").unwrap_or(&Value::Null), "/child")?;
    // The stored text is what is hashed, so a retry with the same JSON (in any key order or
    // spacing) is recognised as the same submission.
    let hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
    Ok(Input {
        body: value,
        hash,
        category,
        urgency,
        child,
    })
}

fn idempotency_key(raw: Option<&[u8]>) -> Result<Option<String>, Error> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let key = std::str::from_utf8(raw)
        .ok()
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            Error::invalid("Idempotency-Key must be 1 to 200 visible ASCII characters")
        })?;
    Ok(Some(key.to_string()))
}

/// What a submission did: the concern as stored, and whether this was a retry of one already
/// stored (the same Idempotency-Key and body), which changes nothing.
pub struct Submitted {
    pub concern: ConcernView,
    pub replayed: bool,
}

/// Submits the concern in `body` (`schemas/concern.schema.json`): matched to a child, routed by
/// `policies/routing.toml`, stored with its deliveries and its audit entry in one transaction.
/// `idempotency_key`, when given, makes a retry with the same body return the original.
pub async fn submit(
    gw: &Gateway,
    who: &Principal,
    idempotency_key: Option<&[u8]>,
    body: &[u8],
) -> Result<Submitted, Error> {
    submit_marked(gw, who, idempotency_key, body, None).await
}

/// [`submit`], marked as made for a police investigation or a section 47 enquiry
/// (`exemption`): the submission is kept out of the child's subject access reports until its
/// release ([`crate::read::sar`]).
pub async fn submit_marked(
    gw: &Gateway,
    who: &Principal,
    idempotency_key: Option<&[u8]>,
    body: &[u8],
    exemption: Option<&str>,
) -> Result<Submitted, Error> {
    const ACTION: &str = "concern_submit";
    let parsed = crate::read::sar::check_exemption(who, exemption)
        .and_then(|()| self::idempotency_key(idempotency_key))
        .and_then(|k| Ok((k, parse_concern(gw, body)?)));
    // A local id is matched only in the reporter's own agency's sources: in another agency's,
    // `matched_on` would say whether that agency holds the record.
    let parsed = parsed.and_then(|(k, input)| {
        if let Some(source) = input.child.local_source() {
            gw.own_source(who, source, "/child/local_id/source")?;
        }
        Ok((k, input))
    });
    let (key, input) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    if let Some(k) = &key {
        if let Some(existing) = replay(gw, who, k, &input.hash, exemption).await? {
            return Ok(existing);
        }
    }
    let (child, matched_on) = match_child(gw, &input.child).await?;
    let facts = match &child {
        Some(c) => routing::facts(&gw.index, &gw.sources, c).await?,
        None => ChildFacts::unmatched(),
    };
    let routed = gw.routing.concern(input.category, input.urgency, &facts);

    let id = uuid::Uuid::new_v4().to_string();
    let now = ts(Utc::now());
    let stored = store(
        gw,
        who,
        &id,
        &now,
        key.as_deref(),
        &input,
        child.as_deref(),
        &matched_on,
        facts.status.as_str(),
        &routed,
    )
    .await;
    let tx = match stored {
        Ok(tx) => tx,
        Err(e) => {
            // A concurrent retry with the same key won the race: answer as a replay.
            if let Some(k) = &key {
                if let Some(existing) = replay(gw, who, k, &input.hash, exemption).await? {
                    return Ok(existing);
                }
            }
            return Err(e.into());
        }
    };
    let mut detail = json!({
        "concern": id,
        "category": input.category.as_str(),
        "urgency": input.urgency.as_str(),
        "matched_on": matched_on,
        "child_status": facts.status.as_str(),
        "recipients": routed.iter().map(|r| json!({"to": r.to.key(), "rule": r.rule})).collect::<Vec<_>>(),
    });
    crate::read::sar::defer(gw, &mut detail, exemption);
    let entry = entry(
        who,
        ACTION,
        child.as_deref(),
        Some(Purpose::Safeguarding),
        "submitted",
        detail,
    );
    gw.commit(tx, &[entry]).await?;
    gw.outbox.wake();
    let concern = load(gw, &id)
        .await?
        .map(|c| for_viewer(gw, who, c))
        .ok_or_else(|| Error::Internal("stored concern not found".into()))?;
    Ok(Submitted {
        concern,
        replayed: false,
    })
}

/// The original concern for a reused idempotency key, or a conflict when the body differs.
async fn replay(
    gw: &Gateway,
    p: &Principal,
    key: &str,
    hash: &str,
    exemption: Option<&str>,
) -> Result<Option<Submitted>, Error> {
    let row = sqlx::query(
        "SELECT id, request_hash, child_id FROM concerns WHERE agency = $1 AND submitted_by = $2 \
         AND idempotency_key = $3",
    )
    .bind(&p.agency)
    .bind(&p.user)
    .bind(key)
    .fetch_optional(&gw.store.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let child: Option<String> = row.try_get("child_id")?;
    let original: String = row.try_get("request_hash")?;
    if original != hash {
        let e = Error::Conflict("this Idempotency-Key was used for a different concern".into());
        return Err(gw
            .refuse(p, "concern_submit", child.as_deref(), None, e)
            .await);
    }
    let mut detail = json!({"concern": id});
    crate::read::sar::defer(gw, &mut detail, exemption);
    gw.record(
        p,
        "concern_submit",
        child.as_deref(),
        Some(Purpose::Safeguarding),
        "replayed",
        detail,
    )
    .await?;
    let concern = load(gw, &id)
        .await?
        .map(|c| for_viewer(gw, p, c))
        .ok_or_else(|| Error::Internal("stored concern not found".into()))?;
    Ok(Some(Submitted {
        concern,
        replayed: true,
    }))
}

/// Writes the concern, its recipients and their deliveries on a write transaction, which the
/// caller commits with the audit entry.
#[allow(clippy::too_many_arguments)]
async fn store(
    gw: &Gateway,
    p: &Principal,
    id: &str,
    now: &str,
    key: Option<&str>,
    input: &Input,
    child: Option<&str>,
    matched_on: &str,
    status: &str,
    routed: &[routing::Routed],
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    let mut tx = gw.store.begin_write().await?;
    sqlx::query(
        "INSERT INTO concerns (id, submitted_at, submitted_by, agency, role, idempotency_key, \
         request_hash, child_id, matched_on, child_status, category, urgency, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(now)
    .bind(&p.user)
    .bind(&p.agency)
    .bind(p.role.as_str())
    .bind(key)
    .bind(&input.hash)
    .bind(child)
    .bind(matched_on)
    .bind(status)
    .bind(input.category.as_str())
    .bind(input.urgency.as_str())
    .bind(input.body.to_string())
    .execute(&mut *tx)
    .await?;
    log(&mut tx, id, now, "submitted", None, p, None, None, None).await?;
    let mut deliveries = Vec::new();
    for r in routed {
        let (role, user) = match &r.to {
            Address::Role { role, .. } => (Some(role.as_str()), None),
            Address::User { user, .. } => (None, Some(user.as_str())),
        };
        sqlx::query(
            "INSERT INTO concern_recipients (concern_id, recipient, agency, role, user_id, \
             channel, rule, state, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'sent', $8)",
        )
        .bind(id)
        .bind(r.to.key())
        .bind(r.to.agency())
        .bind(role)
        .bind(user)
        .bind(gw.outbox.channel_for(&r.to))
        .bind(&r.rule)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        deliveries.push(NewDelivery {
            topic: "concern",
            subject: id.to_string(),
            child: child.map(String::from),
            to: r.to.clone(),
            webhook: None,
            data: json!({
                "concern": id,
                "submitted_at": now,
                "from": {"user": p.user, "agency": p.agency, "role": p.role},
                "child": child,
                "matched_on": matched_on,
                "child_status": status,
                "category": input.category,
                "urgency": input.urgency,
                "rule": r.rule,
                "body": input.body,
                "acknowledge": format!("/v1/concerns/{id}/status"),
            }),
        });
    }
    gw.outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| match e {
            crate::delivery::outbox::OutboxError::Store(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    Ok(tx)
}

#[allow(clippy::too_many_arguments)]
async fn log(
    conn: &mut AnyConnection,
    concern: &str,
    at: &str,
    kind: &str,
    recipient: Option<&str>,
    by: &Principal,
    state: Option<&str>,
    outcome: Option<&str>,
    text: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO concern_log (id, concern_id, at, kind, recipient, by_user, by_agency, \
         by_role, state, outcome, text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(concern)
    .bind(at)
    .bind(kind)
    .bind(recipient)
    .bind(&by.user)
    .bind(&by.agency)
    .bind(by.role.as_str())
    .bind(state)
    .bind(outcome)
    .bind(text)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored concern with its recipients and history.
pub async fn load(gw: &Gateway, id: &str) -> Result<Option<ConcernView>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT id, submitted_at, submitted_by, agency, role, child_id, matched_on, \
         child_status, category, urgency, body FROM concerns WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&gw.store.pool)
    .await?
    else {
        return Ok(None);
    };
    let body: String = row.try_get("body")?;
    let recipients = sqlx::query(
        "SELECT recipient, agency, role, user_id, channel, rule, state, outcome, updated_at \
         FROM concern_recipients WHERE concern_id = $1 ORDER BY recipient",
    )
    .bind(id)
    .fetch_all(&gw.store.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(RecipientView {
            recipient: r.try_get("recipient")?,
            agency: r.try_get("agency")?,
            role: r.try_get("role")?,
            user: r.try_get("user_id")?,
            channel: r.try_get("channel")?,
            rule: r.try_get("rule")?,
            state: r.try_get("state")?,
            outcome: r.try_get("outcome")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let history = sqlx::query(
        "SELECT at, kind, recipient, by_user, by_agency, by_role, state, outcome, text \
         FROM concern_log WHERE concern_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&gw.store.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(LogEntry {
            at: r.try_get("at")?,
            kind: r.try_get("kind")?,
            recipient: r.try_get("recipient")?,
            by_user: r.try_get("by_user")?,
            by_agency: r.try_get("by_agency")?,
            by_role: r.try_get("by_role")?,
            state: r.try_get("state")?,
            outcome: r.try_get("outcome")?,
            text: r.try_get("text")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(ConcernView {
        id: row.try_get("id")?,
        submitted_at: row.try_get("submitted_at")?,
        submitted_by: row.try_get("submitted_by")?,
        agency: row.try_get("agency")?,
        child: row.try_get("child_id")?,
        matched_on: row.try_get("matched_on")?,
        child_status: row.try_get("child_status")?,
        category: row.try_get("category")?,
        urgency: row.try_get("urgency")?,
        concern: serde_json::from_str(&body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        recipients,
        history,
        reporter_role: row.try_get::<String, _>("role")?.parse::<Role>().ok(),
    }))
}

/// Whether the concern's reporter sees it whole (see [`redact`]), and so is told of the steps
/// others take on it. Their role is the one they submitted with; a reporter whose role or
/// agency this deployment no longer knows is told nothing more.
fn reporter_sees_whole(gw: &Gateway, view: &ConcernView) -> bool {
    let (Some(role), Some(agency)) = (view.reporter_role, gw.config.agency(&view.agency)) else {
        return false;
    };
    let reporter = Principal {
        user: view.submitted_by.clone(),
        agency: view.agency.clone(),
        agency_kind: agency.kind,
        role,
        client: None,
    };
    let policy = gw.policy();
    entitled(
        &policy,
        |a| gw.config.agency(a).map(|a| a.kind),
        &reporter,
        view,
    )
    .whole
}

/// What a word stands in for when the viewer's policy withholds it.
const NOT_AVAILABLE: &str = "not_available";

/// A concern as this practitioner may see it. The child's social-care status, and who the
/// concern went to (an allocated worker's name, a school or health service found through the
/// child, a route chosen by the status), are data of their own. Everything is shown only to a
/// viewer whose policy shows `social_care.status` and `social_care.allocated_worker` for
/// safeguarding and who may know of every recipient's agency kind (`<kind>.known`). Anyone
/// else is told the status as `not_available`, sees only the recipients they themselves are,
/// and only their own agency's steps in the history, so the reply reads the same whatever the
/// child's status and whoever holds the child.
pub(crate) fn for_viewer(gw: &Gateway, who: &Principal, view: ConcernView) -> ConcernView {
    redact(
        &gw.policy(),
        |agency| gw.config.agency(agency).map(|a| a.kind),
        who,
        view,
    )
}

/// How much of a concern a practitioner may see: its `status` (policy shows
/// `social_care.known` and `social_care.status` for safeguarding), and whether they see it
/// `whole` (the status, the allocated worker, and every recipient's agency kind).
struct Entitled {
    status: bool,
    whole: bool,
}

fn entitled(
    policy: &Policy,
    kind_of: impl Fn(&str) -> Option<AgencyKind>,
    who: &Principal,
    view: &ConcernView,
) -> Entitled {
    let permits = |category: &str| {
        let d = policy.decide(&Question {
            role: who.role,
            agency: &who.agency,
            kind: who.agency_kind,
            category,
            purpose: Purpose::Safeguarding,
        });
        d.effect == Effect::Permit
    };
    let status = permits("social_care.known") && permits("social_care.status");
    let worker = status && permits("social_care.allocated_worker");
    let knows_every_recipient = view
        .recipients
        .iter()
        .all(|r| kind_of(&r.agency).is_some_and(|k| permits(known_category(k))));
    Entitled {
        status,
        whole: worker && knows_every_recipient,
    }
}

/// [`for_viewer`] over the policy and the agencies' kinds.
pub(crate) fn redact(
    policy: &Policy,
    kind_of: impl Fn(&str) -> Option<AgencyKind>,
    who: &Principal,
    mut view: ConcernView,
) -> ConcernView {
    let may = entitled(policy, kind_of, who, &view);
    if !may.status {
        view.child_status = NOT_AVAILABLE.into();
    }
    if may.whole {
        return view;
    }
    view.recipients.retain(|r| {
        r.address()
            .is_some_and(|a| a.includes(&who.agency, &who.user, who.role))
    });
    let own = |h: &LogEntry| h.by_agency == who.agency && h.by_user == who.user;
    view.history.retain(|h| h.kind == "submitted" || own(h));
    for h in &mut view.history {
        if !own(h) {
            h.by_user = NOT_AVAILABLE.into();
        }
    }
    view
}

/// The inbox topics that report a step someone took on a concern, naming who took it.
pub(crate) const STEP_TOPICS: &[&str] = &["concern_update", "concern_addendum"];

/// An inbox item about `concern`, as `who` may see it — by the rule of [`redact`], so the
/// inbox tells no more than the concern's own page. A step another party took on the concern
/// (progress, an addendum: [`STEP_TOPICS`]) reaches only someone who sees the concern whole;
/// for anyone else its history holds only their own steps, so the item is left out (whether
/// and how many such steps exist depends on who the child's case brought in). The concern
/// itself reaches its recipient with the child's status `not_available` where their view
/// withholds it. `None`: left out.
pub(crate) fn redact_item(
    policy: &Policy,
    kind_of: impl Fn(&str) -> Option<AgencyKind>,
    who: &Principal,
    concern: &ConcernView,
    mut item: InboxItem,
) -> Option<InboxItem> {
    let may = entitled(policy, kind_of, who, concern);
    if STEP_TOPICS.contains(&item.topic.as_str()) {
        let by = &item.payload["data"]["by"];
        let own = by["agency"] == who.agency.as_str() && by["user"] == who.user.as_str();
        return (may.whole || own).then_some(item);
    }
    if item.topic == "concern" && !may.status {
        if let Some(data) = item.payload.get_mut("data").and_then(Value::as_object_mut) {
            if data.contains_key("child_status") {
                data.insert("child_status".into(), NOT_AVAILABLE.into());
            }
        }
    }
    Some(item)
}

/// [`redact_item`] over the gateway's policy and agencies.
pub(crate) fn item_for_viewer(
    gw: &Gateway,
    who: &Principal,
    concern: &ConcernView,
    item: InboxItem,
) -> Option<InboxItem> {
    redact_item(
        &gw.policy(),
        |agency| gw.config.agency(agency).map(|a| a.kind),
        who,
        concern,
        item,
    )
}

fn is_reporter(view: &ConcernView, p: &Principal) -> bool {
    view.agency == p.agency && view.submitted_by == p.user
}

/// The recipients this practitioner answers for.
fn own_recipients<'a>(view: &'a ConcernView, p: &Principal) -> Vec<&'a RecipientView> {
    view.recipients
        .iter()
        .filter(|r| {
            r.address()
                .is_some_and(|a| a.includes(&p.agency, &p.user, p.role))
        })
        .collect()
}

/// A concern the caller may see (as its reporter or a recipient), or the audited refusal.
async fn visible(
    gw: &Gateway,
    p: &Principal,
    id: &str,
    action: &str,
) -> Result<ConcernView, Error> {
    let Some(view) = load(gw, id).await? else {
        let e = Error::NotFound("no concern with that id");
        return Err(gw.refuse(p, action, None, None, e).await);
    };
    if !is_reporter(&view, p) && own_recipients(&view, p).is_empty() {
        let e = Error::Forbidden("only the reporter and the recipients of a concern see it");
        return Err(gw.refuse(p, action, view.child.as_deref(), None, e).await);
    }
    Ok(view)
}

/// A concern, its recipients' progress and its history. For its reporter and recipients.
pub async fn show(gw: &Gateway, who: &Principal, id: &str) -> Result<ConcernView, Error> {
    let view = visible(gw, who, id, "concern_view").await?;
    gw.record(
        who,
        "concern_view",
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "shown",
        json!({"concern": id}),
    )
    .await?;
    Ok(for_viewer(gw, who, view))
}

/// A concern in its reporter's list: what it was about, and where its recipients have got to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MyConcern {
    pub id: String,
    pub submitted_at: String,
    pub child: Option<String>,
    pub category: String,
    pub urgency: String,
    /// The furthest state any recipient has reached (`sent` … `closed`).
    pub state: String,
    pub recipients: usize,
}

/// The concerns `who` raised, newest first (at most `limit`, default 100). Audited.
pub async fn mine(
    gw: &Gateway,
    who: &Principal,
    limit: Option<u32>,
) -> Result<Vec<MyConcern>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT c.id, c.submitted_at, c.child_id, c.category, c.urgency, r.state \
         FROM concerns c LEFT JOIN concern_recipients r ON r.concern_id = c.id \
         WHERE c.agency = $1 AND c.submitted_by = $2 \
         ORDER BY c.submitted_at DESC, c.id LIMIT {}",
        // Rows are concern × recipient; a concern rarely has more than a handful.
        u64::from(limit.unwrap_or(100).clamp(1, 1000)) * 20
    ))
    .bind(&who.agency)
    .bind(&who.user)
    .fetch_all(&gw.store.pool)
    .await?;
    let mut out: Vec<MyConcern> = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        let state: Option<String> = r.try_get("state")?;
        if let Some(last) = out.last_mut().filter(|c| c.id == id) {
            if let Some(s) = state {
                if rank(&s) > rank(&last.state) {
                    last.state = s;
                }
                last.recipients += 1;
            }
            continue;
        }
        out.push(MyConcern {
            id,
            submitted_at: r.try_get("submitted_at")?,
            child: r.try_get("child_id")?,
            category: r.try_get("category")?,
            urgency: r.try_get("urgency")?,
            recipients: usize::from(state.is_some()),
            state: state.unwrap_or_else(|| "sent".into()),
        });
    }
    out.truncate(usize::try_from(limit.unwrap_or(100).clamp(1, 1000)).unwrap_or(100));
    gw.record(
        who,
        "concern_list",
        None,
        None,
        "shown",
        json!({"returned": out.len(), "concerns": out.iter().map(|c| &c.id).collect::<Vec<_>>()}),
    )
    .await?;
    Ok(out)
}

/// A recipient moves a concern on (`schemas/concern-update.schema.json`): `acknowledged`,
/// `in_progress`, `closed` (with an outcome). The reporter is told through their inbox.
pub async fn progress(
    gw: &Gateway,
    who: &Principal,
    id: &str,
    body: &[u8],
) -> Result<ConcernView, Error> {
    const ACTION: &str = "concern_status";
    let parsed = validated(body, |v| gw.schemas.concern_update_errors(v), "update").and_then(|v| {
        let new = v
            .get("state")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| Error::field("/state", "a state is required"))?;
        Ok((v, new))
    });
    let (value, new) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let view = visible(gw, who, id, ACTION).await?;
    let mine = own_recipients(&view, who);
    if mine.is_empty() {
        let e = Error::Forbidden("only a recipient of a concern can move it on");
        return Err(gw.refuse(who, ACTION, view.child.as_deref(), None, e).await);
    }
    if mine.iter().any(|r| rank(&r.state) >= rank(&new)) {
        let e = Error::Conflict(
            "a concern only moves forward: received, acknowledged, in_progress, closed".into(),
        );
        return Err(gw.refuse(who, ACTION, view.child.as_deref(), None, e).await);
    }
    let outcome = value.get("outcome").and_then(Value::as_str);
    let note = value.get("note").and_then(Value::as_str);
    let now = ts(Utc::now());
    // The reporter hears of a step only if the concern's page would show it to them.
    let tell_reporter = reporter_sees_whole(gw, &view);
    let mut tx = gw.store.begin_write().await?;
    let mut deliveries = Vec::new();
    for r in &mine {
        let moved = sqlx::query(
            "UPDATE concern_recipients SET state = $1, outcome = $2, updated_at = $3 \
             WHERE concern_id = $4 AND recipient = $5 AND state = $6",
        )
        .bind(&new)
        .bind(outcome)
        .bind(&now)
        .bind(id)
        .bind(&r.recipient)
        .bind(&r.state)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(Error::Conflict(
                "the concern changed meanwhile; reload and retry".into(),
            ));
        }
        log(
            &mut tx,
            id,
            &now,
            "status",
            Some(&r.recipient),
            who,
            Some(&new),
            outcome,
            note,
        )
        .await?;
        if !tell_reporter {
            continue;
        }
        deliveries.push(NewDelivery {
            topic: "concern_update",
            subject: id.to_string(),
            child: view.child.clone(),
            to: Address::User {
                agency: view.agency.clone(),
                user: view.submitted_by.clone(),
            },
            webhook: None,
            data: json!({
                "concern": id,
                "recipient": r.recipient,
                "state": new,
                "outcome": outcome,
                "note": note,
                "by": {"user": who.user, "agency": who.agency, "role": who.role},
                "at": now,
            }),
        });
    }
    gw.outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let detail = json!({"concern": id, "state": new, "outcome": outcome});
    let entry = entry(
        who,
        ACTION,
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "updated",
        detail,
    );
    gw.commit(tx, &[entry]).await?;
    gw.outbox.wake();
    load(gw, id)
        .await?
        .map(|c| for_viewer(gw, who, c))
        .ok_or_else(|| Error::Internal("concern vanished".into()))
}

/// Appends text to a concern (`{"text": …}`; the concern itself never changes). Delivered to
/// every other party.
pub async fn addendum(
    gw: &Gateway,
    who: &Principal,
    id: &str,
    body: &[u8],
) -> Result<ConcernView, Error> {
    const ACTION: &str = "concern_addendum";
    let parsed =
        validated(body, |v| gw.schemas.concern_addendum_errors(v), "addendum").and_then(|v| {
            v.get("text")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| Error::field("/text", "an addendum needs text"))
        });
    let text = match parsed {
        Ok(t) => t,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let view = visible(gw, who, id, ACTION).await?;
    let now = ts(Utc::now());
    let mut others: Vec<Address> = view
        .recipients
        .iter()
        .filter_map(RecipientView::address)
        .filter(|a| !a.includes(&who.agency, &who.user, who.role))
        .collect();
    if !is_reporter(&view, who) && reporter_sees_whole(gw, &view) {
        others.push(Address::User {
            agency: view.agency.clone(),
            user: view.submitted_by.clone(),
        });
    }
    let deliveries: Vec<NewDelivery> = others
        .into_iter()
        .map(|to| NewDelivery {
            topic: "concern_addendum",
            subject: id.to_string(),
            child: view.child.clone(),
            to,
            webhook: None,
            data: json!({
                "concern": id,
                "text": text,
                "by": {"user": who.user, "agency": who.agency, "role": who.role},
                "at": now,
            }),
        })
        .collect();
    let mut tx = gw.store.begin_write().await?;
    log(
        &mut tx,
        id,
        &now,
        "addendum",
        None,
        who,
        None,
        None,
        Some(&text),
    )
    .await?;
    gw.outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let entry = entry(
        who,
        ACTION,
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "appended",
        json!({"concern": id}),
    );
    gw.commit(tx, &[entry]).await?;
    gw.outbox.wake();
    load(gw, id)
        .await?
        .map(|c| for_viewer(gw, who, c))
        .ok_or_else(|| Error::Internal("concern vanished".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::foundation::domain::Role;
    use crate::pipeline::authorise::testing::{default_policy, default_policy_blocking, shape};
    use proptest::prelude::*;

    const WORKER: &str = "WORKER-SECRET";

    fn recipient(
        agency: &str,
        role: Option<&str>,
        user: Option<&str>,
        rule: &str,
    ) -> RecipientView {
        RecipientView {
            recipient: format!("{agency}:{}", user.or(role).unwrap_or_default()),
            agency: agency.into(),
            role: role.map(String::from),
            user: user.map(String::from),
            channel: "inbox".into(),
            rule: rule.into(),
            state: "received".into(),
            outcome: None,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn step(agency: &str, role: &str, user: &str, kind: &str) -> LogEntry {
        LogEntry {
            at: "2026-01-01T00:00:00Z".into(),
            kind: kind.into(),
            recipient: None,
            by_user: user.into(),
            by_agency: agency.into(),
            by_role: role.into(),
            state: (kind == "status").then(|| "acknowledged".into()),
            outcome: None,
            text: None,
        }
    }

    /// A concern as stored: about a child not known to social care, or about one with an open
    /// case, whose allocated worker (found through the child) and school nurse also received it
    /// and the worker acknowledged it.
    fn concern(reporter: &Principal, known: bool) -> ConcernView {
        let mut recipients = vec![recipient("csc", Some("mash_officer"), None, "mash-triage")];
        let mut history = vec![step(
            &reporter.agency,
            reporter.role.as_str(),
            &reporter.user,
            "submitted",
        )];
        if known {
            recipients.push(recipient(
                "csc",
                None,
                Some(WORKER),
                "open-case-to-allocated-worker",
            ));
            recipients.push(recipient(
                "trust",
                Some("health_practitioner"),
                None,
                "open-case-school-nurse",
            ));
            history.push(step("csc", "social_worker", WORKER, "status"));
        }
        ConcernView {
            id: "c1".into(),
            submitted_at: "2026-01-01T00:00:00Z".into(),
            submitted_by: reporter.user.clone(),
            agency: reporter.agency.clone(),
            child: Some("child".into()),
            matched_on: "nhs_number".into(),
            child_status: if known {
                "child_protection"
            } else {
                "not_known"
            }
            .into(),
            category: "neglect".into(),
            urgency: "routine".into(),
            concern: serde_json::json!({"observed": {"what": "as typed"}}),
            recipients,
            history,
            reporter_role: Some(reporter.role),
        }
    }

    /// The agencies the property tests draw a viewer from, with their kinds.
    const AGENCIES: [(&str, AgencyKind); 5] = [
        ("school", AgencyKind::Education),
        ("urn-100001", AgencyKind::Education),
        ("csc", AgencyKind::SocialCare),
        ("trust", AgencyKind::Health),
        ("force", AgencyKind::Police),
    ];

    fn kind_of(agency: &str) -> Option<AgencyKind> {
        AGENCIES.iter().find(|(a, _)| *a == agency).map(|(_, k)| *k)
    }

    /// The viewer, and the concern's reporter: the viewer themself, or a school's DSL.
    fn viewer_and_reporter(
        role: Role,
        agency: &str,
        kind: AgencyKind,
        reporter_is_viewer: bool,
    ) -> (Principal, Principal) {
        let who = Principal {
            user: "viewer".into(),
            agency: agency.into(),
            agency_kind: kind,
            role,
            client: None,
        };
        let reporter = if reporter_is_viewer {
            who.clone()
        } else {
            Principal {
                user: "reporter".into(),
                agency: "school".into(),
                agency_kind: AgencyKind::Education,
                role: Role::Dsl,
                client: None,
            }
        };
        (who, reporter)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever the viewer's role and agency, and whether they reported it: a concern about
        /// a child with an open case reads, to anyone whose view withholds social-care status,
        /// exactly like one about a child unknown to social care once values are placeholders,
        /// and never names the allocated worker to anyone whose view withholds the worker.
        #[test]
        fn a_concern_reads_the_same_whatever_it_withholds(
            role in proptest::sample::select(Role::ALL.to_vec()),
            (agency, kind) in proptest::sample::select(AGENCIES.to_vec()),
            reporter_is_viewer in any::<bool>(),
        ) {
            let policy = default_policy_blocking();
            let (who, reporter) = viewer_and_reporter(role, agency, kind, reporter_is_viewer);
            let unknown = serde_json::to_value(redact(&policy, kind_of, &who, concern(&reporter, false))).unwrap();
            let known = serde_json::to_value(redact(&policy, kind_of, &who, concern(&reporter, true))).unwrap();
            let permits = |category: &str| policy.decide(&Question {
                role, agency, kind, category, purpose: Purpose::Safeguarding,
            }).effect == Effect::Permit;
            let status = permits("social_care.known") && permits("social_care.status");
            let body = known.to_string();
            if !status {
                prop_assert_eq!(shape(&unknown), shape(&known), "{:?} at {}", role, agency);
                prop_assert!(!body.contains("child_protection") && !body.contains("open-case"), "{}", body);
            }
            if !(status && permits("social_care.allocated_worker")) {
                prop_assert!(!body.contains(WORKER), "{:?} at {}: {}", role, agency, body);
            }
        }
    }

    /// The inbox deliveries a concern makes, as the write path makes them: to the viewer as a
    /// recipient, the concern with the child's status; to the reporter, each recipient's step;
    /// to every party but the author, each addendum.
    fn deliveries(concern: &ConcernView, viewer_is_reporter: bool) -> Vec<InboxItem> {
        let item = |n: usize, topic: &str, data: Value| InboxItem {
            delivery_id: format!("d{n}"),
            topic: topic.into(),
            subject: concern.id.clone(),
            child: concern.child.clone(),
            delivered_at: format!("2026-01-01T00:00:0{n}Z"),
            read: false,
            payload: json!({"id": format!("d{n}"), "topic": topic, "subject": concern.id,
                            "child": concern.child, "created_at": "2026-01-01T00:00:00Z",
                            "data": data}),
        };
        let mut items = Vec::new();
        if !viewer_is_reporter {
            items.push(item(
                0,
                "concern",
                json!({"concern": concern.id,
                "child_status": concern.child_status, "rule": "mash-triage"}),
            ));
        }
        for (n, r) in concern.recipients.iter().enumerate() {
            let by = json!({"user": r.user.clone().unwrap_or_else(|| format!("{}-officer", r.agency)),
                            "agency": r.agency, "role": r.role.clone().unwrap_or_else(|| "social_worker".into())});
            if viewer_is_reporter {
                items.push(item(
                    n + 1,
                    "concern_update",
                    json!({"concern": concern.id,
                    "recipient": r.recipient, "state": "acknowledged", "by": by, "at": "t"}),
                ));
            }
            items.push(item(
                n + 5,
                "concern_addendum",
                json!({"concern": concern.id,
                "text": format!("note from {}", r.recipient), "by": by, "at": "t"}),
            ));
        }
        items
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// The inbox by the concern's rule: whatever the viewer's role and agency, and whether
        /// they reported the concern or received it, the deliveries a concern about a child
        /// with an open case makes read, to anyone whose view withholds social-care status,
        /// exactly like those of one about a child unknown to social care once values are
        /// placeholders, and never name the allocated worker (nor carry their note) to anyone
        /// whose view withholds the worker.
        #[test]
        fn an_inbox_reads_the_same_whatever_its_concerns_withhold(
            role in proptest::sample::select(Role::ALL.to_vec()),
            (agency, kind) in proptest::sample::select(AGENCIES.to_vec()),
            reporter_is_viewer in any::<bool>(),
        ) {
            let policy = default_policy_blocking();
            let (who, reporter) = viewer_and_reporter(role, agency, kind, reporter_is_viewer);
            let inbox = |known: bool| {
                let c = concern(&reporter, known);
                let items: Vec<InboxItem> = deliveries(&c, reporter_is_viewer)
                    .into_iter()
                    .filter_map(|i| redact_item(&policy, kind_of, &who, &c, i))
                    .collect();
                serde_json::to_value(items).unwrap()
            };
            let (unknown, known) = (inbox(false), inbox(true));
            let permits = |category: &str| policy.decide(&Question {
                role, agency, kind, category, purpose: Purpose::Safeguarding,
            }).effect == Effect::Permit;
            let status = permits("social_care.known") && permits("social_care.status");
            let body = known.to_string();
            if !status {
                prop_assert_eq!(shape(&unknown), shape(&known), "{:?} at {}", role, agency);
                prop_assert!(!body.contains("child_protection") && !body.contains("open-case"), "{}", body);
            }
            if !(status && permits("social_care.allocated_worker")) {
                prop_assert!(!body.contains(WORKER), "{:?} at {}: {}", role, agency, body);
            }
        }
    }

    /// A step is delivered to the reporter only when the concern's page would show it: a
    /// teacher (no social-care status) is told of no recipient's progress, a DSL at a school
    /// with the partnership's health agreement of every one.
    #[tokio::test]
    async fn steps_reach_only_a_reporter_who_would_see_them() {
        let policy = default_policy().await;
        let kind_of = |a: &str| match a {
            "urn-100001" => Some(AgencyKind::Education),
            "csc" => Some(AgencyKind::SocialCare),
            "trust" => Some(AgencyKind::Health),
            _ => None,
        };
        let person = |role: Role| Principal {
            user: "reporter".into(),
            agency: "urn-100001".into(),
            agency_kind: AgencyKind::Education,
            role,
            client: None,
        };
        for (role, told) in [(Role::Teacher, 0), (Role::Dsl, 3)] {
            let who = person(role);
            let c = concern(&who, true);
            let steps = deliveries(&c, true)
                .into_iter()
                .filter_map(|i| redact_item(&policy, kind_of, &who, &c, i))
                .filter(|i| i.topic == "concern_update")
                .count();
            assert_eq!(steps, told, "{role:?}");
        }
    }

    #[test]
    fn steps_only_go_forward() {
        assert!(rank("received") < rank("acknowledged"));
        assert!(rank("acknowledged") < rank("in_progress"));
        assert!(rank("in_progress") < rank("closed"));
    }
}
