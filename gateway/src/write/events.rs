//! Events and alerts: what partner systems push (`POST /v1/events`: attendance marks, an
//! exclusion, a police incident, a missing episode), the alert rules run on them, and who hears
//! of it — the alert's recipients from `policies/routing.toml`, the child's allocated social
//! worker (subscribed automatically), and explicit subscriptions (`POST /v1/subscriptions`).
//!
//! An event, the alerts it raises and every delivery they cause are written in one transaction.
//! Each alert has a key (rule, child, window) that the store holds unique, so a feed sent twice,
//! two events racing, or two gateway nodes never raise the same alert twice.
//!
//! The access notification (someone outside social care saw `social_care.status` of a child on a
//! protection plan or looked after) is raised by the read path, [`crate::read::view`].

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use crate::delivery::outbox::{ts, Address, NewDelivery};
use crate::delivery::routing::{self, ChildFacts, Routed};
use crate::foundation::config::AgencyKind;
use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::Effect;
use crate::write::child::{match_child, parse_child, parse_time};

/// Alert names, as subscriptions and deliveries name them.
pub const PERSISTENT_ABSENCE: &str = "persistent_absence";
pub const EXCLUSION_KNOWN: &str = "exclusion_known_to_social_care";
pub const DOMESTIC_ABUSE: &str = "domestic_abuse_incident";

/// Event kinds the allocated worker hears of without subscribing; raw attendance marks are left
/// to the persistent-absence alert, which is what a worker needs to know of them.
const AUTO_KINDS: &[&str] = &["exclusion", "police_incident", "missing_episode"];

/// What `POST /v1/events` did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventAccepted {
    pub event: String,
    pub child: Option<String>,
    pub matched_on: String,
    /// Alerts this event raised (none when the alert for its window was already raised).
    pub alerts: Vec<String>,
    pub deliveries: usize,
    /// The same `source_ref` was received before; nothing was done again.
    pub duplicate: bool,
}

/// Which agency kinds may report which event kinds.
fn may_report(kind: &str, agency: AgencyKind) -> bool {
    matches!(
        (kind, agency),
        ("attendance" | "exclusion", AgencyKind::Education)
            | ("police_incident", AgencyKind::Police)
            | (
                "missing_episode",
                AgencyKind::Police | AgencyKind::SocialCare
            )
    )
}

struct Parsed {
    body: Value,
    kind: String,
    source_ref: Option<String>,
}

fn parse_event(gw: &Gateway, body: &[u8]) -> Result<Parsed, Error> {
    let value = validated(body, |v| gw.schemas.event_errors(v), "event")?;
    parse_time(&value, "/occurred_at")?;
    let date = |p: &str| -> Result<NaiveDate, Error> {
        let raw = value.pointer(p).and_then(Value::as_str).unwrap_or_default();
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|e| Error::unprocessable(p, format!("not a date: {e}")))
    };
    if value.get("attendance").is_some() {
        let (from, to) = (date("/attendance/from")?, date("/attendance/to")?);
        if to < from {
            return Err(Error::unprocessable("/attendance/to", "is before `from`"));
        }
        let n = |p: &str| value.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        if n("/attendance/attended_sessions") > n("/attendance/possible_sessions") {
            return Err(Error::unprocessable(
                "/attendance/attended_sessions",
                "more sessions attended than possible",
            ));
        }
    }
    if value.get("exclusion").is_some() {
        date("/exclusion/start_date")?;
    }
    if value.get("incident").is_some() {
        parse_time(&value, "/incident/occurred_at")?;
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let source_ref = value
        .get("source_ref")
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Parsed {
        body: value,
        kind,
        source_ref,
    })
}

/// Accepts the event in `body` (`schemas/event.schema.json`) from a partner system; runs the
/// alert rules; queues deliveries to subscribers — all in one transaction with its audit entry.
pub async fn ingest(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<EventAccepted, Error> {
    const ACTION: &str = "event_ingest";
    let principal = who;
    let state = gw;
    let ev = match parse_event(state, body) {
        Ok(e) => e,
        Err(e) => return Err(state.refuse(principal, ACTION, None, None, e).await),
    };
    if !may_report(&ev.kind, principal.agency_kind) {
        let e = Error::Forbidden("this agency kind does not report this kind of event");
        return Err(state.refuse(principal, ACTION, None, None, e).await);
    }
    if let Some(r) = &ev.source_ref {
        if let Some(previous) = duplicate(state, &principal.agency, r).await? {
            state
                .record(
                    principal,
                    ACTION,
                    previous.child.as_deref(),
                    Some(Purpose::Safeguarding),
                    "duplicate",
                    json!({"event": previous.event, "kind": ev.kind}),
                )
                .await?;
            return Ok(previous);
        }
    }
    // A local id is matched only in the reporting agency's own sources: in another agency's,
    // `matched_on` would say whether that agency holds the record.
    let child_ref =
        parse_child(ev.body.get("child").unwrap_or(&Value::Null), "/child").and_then(|c| {
            if let Some(source) = c.local_source() {
                state.own_source(principal, source, "/child/local_id/source")?;
            }
            Ok(c)
        });
    let child_ref = match child_ref {
        Ok(c) => c,
        Err(e) => return Err(state.refuse(principal, ACTION, None, None, e).await),
    };
    let (child, matched_on) = match_child(state, &child_ref).await?;
    let facts = match &child {
        Some(c) => routing::facts(&state.index, &state.sources, c).await?,
        None => ChildFacts::unmatched(),
    };

    let id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let mut tx = state.store.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO events (id, received_at, kind, agency, source_ref, child_id, matched_on, \
         body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(ts(now))
    .bind(&ev.kind)
    .bind(&principal.agency)
    .bind(ev.source_ref.as_deref())
    .bind(child.as_deref())
    .bind(&matched_on)
    .bind(ev.body.to_string())
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        drop(tx);
        // A resend raced this one and won: answer as the duplicate it is.
        if let Some(r) = &ev.source_ref {
            if let Some(previous) = duplicate(state, &principal.agency, r).await? {
                return Ok(previous);
            }
        }
        return Err(e.into());
    }

    let mut alerts: Vec<(String, Vec<Routed>, Value)> = Vec::new();
    match ev.kind.as_str() {
        "attendance" => {
            if let Some(c) = &child {
                if let Some(a) = absence(state, &mut tx, c, &ev.body, &facts).await? {
                    alerts.push(a);
                }
            }
        }
        "exclusion" if facts.status.known() => {
            let ex = &ev.body["exclusion"];
            let key = format!(
                "{}:{}",
                ex["kind"].as_str().unwrap_or_default(),
                ex["start_date"].as_str().unwrap_or_default()
            );
            let to = state
                .routing
                .resolve_all(&state.routing.exclusion, EXCLUSION_KNOWN, &facts);
            let data = json!({"exclusion": ex, "child_status": facts.status});
            if let Some(c) = &child {
                if raise(&mut tx, EXCLUSION_KNOWN, c, &key, &data).await? {
                    alerts.push((EXCLUSION_KNOWN.into(), to, data));
                }
            }
        }
        "police_incident" if ev.body["incident"]["domestic_abuse"] == json!(true) => {
            let inc = &ev.body["incident"];
            let reference = inc["reference"].as_str().unwrap_or_default();
            let rule = &state.routing.encompass;
            let (names, why) = if facts.schools.is_empty() {
                (&rule.not_on_roll, "not on a school roll")
            } else {
                (&rule.to, "on roll")
            };
            let to = state.routing.resolve_all(names, DOMESTIC_ABUSE, &facts);
            let occurred = parse_time(&ev.body, "/incident/occurred_at")?;
            // What Operation Encompass asks the school to be told, and by when.
            let data = json!({
                "operation_encompass": {
                    "child": ev.body["child"],
                    "incident_at": inc["occurred_at"],
                    "location": inc["location"],
                    "child_present": inc["child_present"],
                    "police_reference": reference,
                    "summary": inc.get("summary"),
                    "reporting_force": principal.agency,
                },
                "deliver_by": ts(rule.deliver_by(occurred.max(now))),
                "routed": why,
            });
            let key = format!("{}:{reference}", principal.agency);
            let raised = match &child {
                Some(c) => raise(&mut tx, DOMESTIC_ABUSE, c, &key, &data).await?,
                // An unmatched child still reaches the LA: keyed by the event itself.
                None => {
                    raise(
                        &mut tx,
                        DOMESTIC_ABUSE,
                        &format!("unmatched:{id}"),
                        &key,
                        &data,
                    )
                    .await?
                }
            };
            if raised {
                alerts.push((DOMESTIC_ABUSE.into(), to, data));
            }
        }
        _ => {}
    }

    let mut deliveries = Vec::new();
    let subscribers = match &child {
        Some(c) => subscribers(&mut tx, c).await?,
        None => Vec::new(),
    };
    let event_data =
        json!({"event": id, "kind": ev.kind, "matched_on": matched_on, "body": ev.body});
    // Subscribers and the allocated worker hear of the event itself…
    let mut event_to: Vec<(Address, Option<String>)> = subscribers
        .iter()
        .filter(|s| s.kinds.iter().any(|k| k == &ev.kind))
        .map(|s| (s.address.clone(), s.webhook.clone()))
        .collect();
    if AUTO_KINDS.contains(&ev.kind.as_str()) {
        if let Some(w) = &facts.allocated_worker {
            event_to.push((w.clone(), None));
        }
    }
    dedup(&mut event_to);
    for (to, webhook) in event_to {
        deliveries.push(NewDelivery {
            topic: "event",
            subject: id.clone(),
            child: child.clone(),
            to,
            webhook,
            data: event_data.clone(),
        });
    }
    // …and of each alert, as do its configured recipients.
    let mut raised_names = Vec::new();
    for (name, routed, data) in &alerts {
        raised_names.push(name.clone());
        let alert_id = uuid::Uuid::new_v4().to_string();
        let mut to: Vec<(Address, Option<String>)> =
            routed.iter().map(|r| (r.to.clone(), None)).collect();
        if let Some(w) = &facts.allocated_worker {
            to.push((w.clone(), None));
        }
        to.extend(
            subscribers
                .iter()
                .filter(|s| s.kinds.iter().any(|k| k == name))
                .map(|s| (s.address.clone(), s.webhook.clone())),
        );
        dedup(&mut to);
        for (to, webhook) in to {
            deliveries.push(NewDelivery {
                topic: "alert",
                subject: alert_id.clone(),
                child: child.clone(),
                to,
                webhook,
                data: json!({"alert": name, "event": id, "child": child, "detail": data}),
            });
        }
    }
    state
        .outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let accepted = EventAccepted {
        event: id.clone(),
        child: child.clone(),
        matched_on,
        alerts: raised_names,
        deliveries: deliveries.len(),
        duplicate: false,
    };
    let entry = entry(
        principal,
        ACTION,
        child.as_deref(),
        Some(Purpose::Safeguarding),
        "accepted",
        json!({"event": id, "kind": ev.kind, "alerts": accepted.alerts,
               "deliveries": deliveries.iter().map(|d| d.to.key()).collect::<Vec<_>>()}),
    );
    state.commit(tx, &[entry]).await?;
    state.outbox.wake();
    Ok(accepted)
}

fn dedup(to: &mut Vec<(Address, Option<String>)>) {
    let mut seen = std::collections::BTreeSet::new();
    to.retain(|(a, w)| seen.insert((a.clone(), w.clone())));
}

async fn duplicate(
    state: &Gateway,
    agency: &str,
    source_ref: &str,
) -> Result<Option<EventAccepted>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, child_id, matched_on FROM events WHERE agency = $1 AND source_ref = $2",
    )
    .bind(agency)
    .bind(source_ref)
    .fetch_optional(&state.store.pool)
    .await?;
    row.map(|r| {
        Ok(EventAccepted {
            event: r.try_get("id")?,
            child: r.try_get("child_id")?,
            matched_on: r.try_get("matched_on")?,
            alerts: Vec::new(),
            deliveries: 0,
            duplicate: true,
        })
    })
    .transpose()
}

/// Records an alert under its unique key. `false` when it was already raised for that window.
async fn raise(
    conn: &mut AnyConnection,
    rule: &str,
    child: &str,
    window: &str,
    detail: &Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO alerts (id, rule, child_id, window_key, raised_at, detail) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule, child_id, window_key) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(rule)
    .bind(child)
    .bind(window)
    .bind(ts(Utc::now()))
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Attendance (sessions attended ÷ possible) over the rolling window ending `end`, when enough
/// sessions were possible to judge.
async fn attendance_over(
    conn: &mut AnyConnection,
    child: &str,
    end: NaiveDate,
    days: i64,
    min_sessions: i64,
) -> Result<Option<f64>, sqlx::Error> {
    let start = end - chrono::Duration::days(days);
    let row = sqlx::query(
        "SELECT COALESCE(CAST(SUM(possible) AS BIGINT), 0) AS possible, \
         COALESCE(CAST(SUM(attended) AS BIGINT), 0) AS attended FROM attendance_marks \
         WHERE child_id = $1 AND from_date > $2 AND to_date <= $3",
    )
    .bind(child)
    .bind(start.to_string())
    .bind(end.to_string())
    .fetch_one(conn)
    .await?;
    let possible: i64 = row.try_get("possible")?;
    let attended: i64 = row.try_get("attended")?;
    Ok((possible >= min_sessions && possible > 0)
        .then(|| attended as f64 * 100.0 / possible as f64))
}

/// Records the marks, then the persistent-absence rule: below the threshold over the rolling
/// window, or down by `drop_points` on the window before. One alert per child per window period
/// (counted from the rule's anchor).
async fn absence(
    state: &Gateway,
    conn: &mut AnyConnection,
    child: &str,
    body: &Value,
    facts: &ChildFacts,
) -> Result<Option<(String, Vec<Routed>, Value)>, Error> {
    let a = &body["attendance"];
    let (from, to) = (
        a["from"].as_str().unwrap_or_default(),
        a["to"].as_str().unwrap_or_default(),
    );
    let end = NaiveDate::parse_from_str(to, "%Y-%m-%d")
        .map_err(|e| Error::unprocessable("/attendance/to", e.to_string()))?;
    sqlx::query(
        "DELETE FROM attendance_marks WHERE child_id = $1 AND from_date = $2 AND to_date = $3",
    )
    .bind(child)
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO attendance_marks (child_id, from_date, to_date, possible, attended) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(child)
    .bind(from)
    .bind(to)
    .bind(a["possible_sessions"].as_i64().unwrap_or(0))
    .bind(a["attended_sessions"].as_i64().unwrap_or(0))
    .execute(&mut *conn)
    .await?;

    let rule = &state.routing.absence;
    let Some(now_pct) =
        attendance_over(conn, child, end, rule.window_days, rule.min_sessions).await?
    else {
        return Ok(None);
    };
    let before = end - chrono::Duration::days(rule.window_days);
    let prev_pct =
        attendance_over(conn, child, before, rule.window_days, rule.min_sessions).await?;
    let below = now_pct < rule.threshold_percent;
    let dropped = prev_pct.is_some_and(|p| p - now_pct >= rule.drop_points);
    if !(below || dropped) {
        return Ok(None);
    }
    let period = (end - rule.anchor).num_days().div_euclid(rule.window_days);
    let period_start = rule.anchor + chrono::Duration::days(period * rule.window_days);
    let window = period_start.to_string();
    let data = json!({
        "attendance_percent": (now_pct * 10.0).round() / 10.0,
        "previous_window_percent": prev_pct.map(|p| (p * 10.0).round() / 10.0),
        "window_days": rule.window_days,
        "window_ending": to,
        "alert_window_starts": window,
        "reason": if below { "below_threshold" } else { "dropped" },
        "threshold_percent": rule.threshold_percent,
        "child_status": facts.status,
    });
    if !raise(conn, PERSISTENT_ABSENCE, child, &window, &data).await? {
        return Ok(None);
    }
    let to = state
        .routing
        .resolve_strict(&rule.to, PERSISTENT_ABSENCE, facts);
    Ok(Some((PERSISTENT_ABSENCE.into(), to, data)))
}

struct Subscriber {
    address: Address,
    webhook: Option<String>,
    kinds: Vec<String>,
}

async fn subscribers(
    conn: &mut AnyConnection,
    child: &str,
) -> Result<Vec<Subscriber>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.user_id, s.agency, s.kinds, s.webhook FROM subscriptions s \
         JOIN subscription_children sc ON sc.subscription_id = s.id WHERE sc.child_id = $1 \
         ORDER BY s.created_at, s.id",
    )
    .bind(child)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let kinds: String = r.try_get("kinds")?;
            Ok(Subscriber {
                address: Address::User {
                    agency: r.try_get("agency")?,
                    user: r.try_get("user_id")?,
                },
                webhook: r.try_get("webhook")?,
                kinds: serde_json::from_str(&kinds).unwrap_or_default(),
            })
        })
        .collect()
}

/// The data category a subscription kind discloses, for the policy check.
fn category_of(kind: &str) -> &'static str {
    match kind {
        "attendance" | PERSISTENT_ABSENCE => "education.attendance",
        "exclusion" | EXCLUSION_KNOWN => "education.exclusions",
        DOMESTIC_ABUSE => "police.domestic_abuse",
        _ => "police.incidents",
    }
}

/// A subscription as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: String,
    pub children: usize,
    pub kinds: Vec<String>,
    /// `inbox` or `webhook`.
    pub channel: String,
    pub webhook: Option<String>,
}

/// Subscribes `who` to events and alerts on a child or a cohort (`body`:
/// `schemas/subscription.schema.json`), by inbox or a webhook of their agency. Each kind must be
/// something policy lets the role see for safeguarding, child in need or education welfare.
pub async fn subscribe(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<Subscription, Error> {
    let (state, principal) = (gw, who);
    const ACTION: &str = "subscribe";
    let value = match validated(
        body,
        |v| state.schemas.subscription_errors(v),
        "subscription",
    ) {
        Ok(v) => v,
        Err(e) => return Err(state.refuse(principal, ACTION, None, None, e).await),
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (children, pointer) = match value.get("child").and_then(Value::as_str) {
        Some(c) => (vec![c.to_string()], "/child".to_string()),
        None => (strings(&value["cohort"]), "/cohort".to_string()),
    };
    let kinds = strings(&value["kinds"]);
    let policy = state.policy();
    let permitted = |kind: &str| {
        [
            Purpose::Safeguarding,
            Purpose::ChildInNeed,
            Purpose::EducationWelfare,
        ]
        .iter()
        .any(|p| {
            policy
                .decide(&crate::pipeline::authorise::Question {
                    role: principal.role,
                    agency: &principal.agency,
                    kind: principal.agency_kind,
                    category: category_of(kind),
                    purpose: *p,
                })
                .effect
                == Effect::Permit
        })
    };
    if !kinds.iter().all(|k| permitted(k)) {
        let e = Error::Forbidden("policy does not let your role see one of these kinds");
        return Err(state.refuse(principal, ACTION, None, None, e).await);
    }
    let webhook = value
        .pointer("/delivery/webhook")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(w) = &webhook {
        if state.outbox.webhook_agency(w) != Some(principal.agency.as_str()) {
            let e = Error::unprocessable(
                "/delivery/webhook",
                "no webhook with that id for your agency",
            );
            return Err(state.refuse(principal, ACTION, None, None, e).await);
        }
    }
    // Alerts about a child are the child's data: a subscriber needs a relationship with each
    // child, as a view does.
    for (i, c) in children.iter().enumerate() {
        let at = if pointer == "/child" {
            pointer.clone()
        } else {
            format!("{pointer}/{i}")
        };
        let refused = match state.relationships(principal, c).await? {
            None => Error::unprocessable(&at, "no child with that id"),
            Some(r) if r.is_empty() => crate::pipeline::authorise::relate::refusal(),
            Some(_) => continue,
        };
        return Err(state.refuse(principal, ACTION, None, None, refused).await);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let channel = if webhook.is_some() {
        "webhook"
    } else {
        "inbox"
    };
    let mut tx = state.store.begin_write().await?;
    sqlx::query(
        "INSERT INTO subscriptions (id, created_at, user_id, agency, role, kinds, channel, \
         webhook) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(ts(Utc::now()))
    .bind(&principal.user)
    .bind(&principal.agency)
    .bind(principal.role.as_str())
    .bind(json!(kinds).to_string())
    .bind(channel)
    .bind(webhook.as_deref())
    .execute(&mut *tx)
    .await?;
    for c in &children {
        sqlx::query(
            "INSERT INTO subscription_children (subscription_id, child_id) VALUES ($1, $2)",
        )
        .bind(&id)
        .bind(c)
        .execute(&mut *tx)
        .await?;
    }
    let child = match children.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let detail =
        json!({"subscription": id, "children": children, "kinds": kinds, "channel": channel});
    let entry = entry(principal, ACTION, child, None, "subscribed", detail);
    state.commit(tx, &[entry]).await?;
    Ok(Subscription {
        id,
        children: children.len(),
        kinds,
        channel: channel.into(),
        webhook,
    })
}
