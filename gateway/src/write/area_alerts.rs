//! The area alert rule (`alerts.area_persistent_absence` in the routing file): a school or an
//! area whose persistent absence reaches the threshold in the latest term, having been below it
//! — or not shown — the term before. It reads the area report as published, after disclosure
//! control ([`crate::read::area`]), so an alert never says more than the report would: a rate
//! that is withheld is never alerted on.
//!
//! Alerts go where the child alerts go: a row in `alerts` whose unique key (rule, `school:<URN>`
//! or `area:<code>`, term) makes "once per school or area per term" hold across runs and gateway
//! nodes, and deliveries through the outbox to the rule's recipients' inboxes or webhooks — all
//! in one transaction with the audit entry that records it (under the system itself: no person
//! asked).
//!
//! The gateway runs the rule every `reports.alert_check_secs` when the data it reads has changed
//! (an import, a record the index wrote) — [`watch`].

use chrono::Utc;
use serde_json::json;
use sqlx::Row;

use crate::delivery::outbox::{ts, Address, NewDelivery};
use crate::foundation::audit::Entry;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::read::area::table::{Figure, Level, Number, Row as TableRow, Table};

/// The rule's name, as deliveries and subscriptions name it.
pub const AREA_PERSISTENT_ABSENCE: &str = "area_persistent_absence";

/// An alert raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub level: Level,
    pub key: String,
    pub term: String,
    pub rate: f64,
}

fn rate(f: Figure) -> Option<f64> {
    match f.value? {
        Number::Rate(r) => Some(r),
        Number::Count(_) => None,
    }
}

/// The rows that cross `threshold` in the latest term: at or above it now, and below it (or
/// withheld, or absent) in the term before.
pub fn crossings<'a>(
    table: &'a Table,
    threshold: f64,
    levels: &[String],
) -> Vec<(&'a TableRow, f64, Option<f64>)> {
    let Some(&latest) = table.terms.last() else {
        return Vec::new();
    };
    let previous = table.terms.iter().rev().nth(1).copied();
    table
        .rows
        .iter()
        .filter(|r| r.term == latest && r.level != Level::Authority)
        .filter(|r| levels.iter().any(|l| l == r.level.as_str()))
        .filter_map(|r| {
            let now = rate(r.persistent_absence_rate)?;
            if now < threshold {
                return None;
            }
            let before = previous.and_then(|p| {
                table
                    .rows
                    .iter()
                    .find(|b| b.term == p && b.level == r.level && b.key == r.key)
                    .and_then(|b| rate(b.persistent_absence_rate))
            });
            match before {
                Some(b) if b >= threshold => None,
                _ => Some((r, now, before)),
            }
        })
        .collect()
}

/// Runs the rule once: raises each new crossing, delivers it and audits it. Returns what was
/// raised (nothing when no rule is configured).
pub async fn check(gw: &Gateway) -> Result<Vec<Raised>, Error> {
    let Some(rule) = gw.routing.area_absence.clone() else {
        return Ok(Vec::new());
    };
    let (table, _, _) = crate::read::area::compute(gw).await?;
    let mut raised = Vec::new();
    for (row, now, before) in crossings(&table, rule.threshold_percent, &rule.levels) {
        let term = row.term.label();
        let subject = format!("{}:{}", row.level.as_str(), row.key);
        let detail = json!({
            "alert": AREA_PERSISTENT_ABSENCE,
            "level": row.level.as_str(),
            "key": row.key,
            "term": term,
            "persistent_absence_rate": now,
            "previous_term_rate": before,
            "threshold_percent": rule.threshold_percent,
            "pupils": row.pupils.value,
            "persistent_absentees": row.persistent_absentees.value,
        });
        let mut tx = gw.store.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO alerts (id, rule, child_id, window_key, raised_at, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule, child_id, window_key) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(AREA_PERSISTENT_ABSENCE)
        .bind(&subject)
        .bind(&term)
        .bind(ts(Utc::now()))
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            continue;
        }
        let mut to = rule.to.clone();
        if let (Level::School, Some(role)) = (row.level, rule.school_role) {
            let agency = format!("urn-{}", row.key);
            if gw.config.agency(&agency).is_some() {
                to.push(Address::Role { agency, role });
            }
        }
        to.sort();
        to.dedup();
        let alert_id = uuid::Uuid::new_v4().to_string();
        let deliveries: Vec<NewDelivery> = to
            .iter()
            .map(|a| NewDelivery {
                topic: "alert",
                subject: alert_id.clone(),
                child: None,
                to: a.clone(),
                webhook: None,
                data: json!({"alert": AREA_PERSISTENT_ABSENCE, "area": subject, "detail": detail}),
            })
            .collect();
        gw.outbox
            .enqueue(&mut tx, &deliveries)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let entry = Entry {
            at: Utc::now(),
            user: "weft".into(),
            agency: "weft".into(),
            role: "system".into(),
            action: "area_alert".into(),
            child: None,
            purpose: Some(
                crate::foundation::domain::Purpose::EducationWelfare
                    .as_str()
                    .into(),
            ),
            outcome: "raised".into(),
            detail: json!({
                "alert": alert_id,
                "detail": detail,
                "to": to.iter().map(Address::key).collect::<Vec<_>>(),
            }),
        };
        gw.commit(tx, &[entry]).await?;
        raised.push(Raised {
            level: row.level,
            key: row.key.clone(),
            term,
            rate: now,
        });
    }
    Ok(raised)
}

/// What the rule reads has changed since `last` (the newest import and the newest record the
/// index wrote).
async fn fingerprint(gw: &Gateway) -> Result<String, sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT MAX(finished_at) FROM import_runs) AS imported, \
                (SELECT MAX(updated_at) FROM source_records) AS indexed, \
                (SELECT COUNT(*) FROM source_records) AS records",
    )
    .fetch_one(&gw.store.pool)
    .await?;
    let imported: Option<String> = row.try_get("imported")?;
    let indexed: Option<String> = row.try_get("indexed")?;
    let records: i64 = row.try_get("records")?;
    Ok(format!(
        "{}|{}|{records}",
        imported.unwrap_or_default(),
        indexed.unwrap_or_default()
    ))
}

/// Runs the rule every `reports.alert_check_secs` while the data changes; forever.
pub async fn watch(gw: Gateway) {
    let every = gw.config.reports.alert_check_secs;
    if every == 0 || gw.routing.area_absence.is_none() {
        return;
    }
    let mut last: Option<String> = None;
    loop {
        match fingerprint(&gw).await {
            Ok(f) if last.as_ref() != Some(&f) => match check(&gw).await {
                Ok(raised) => {
                    if !raised.is_empty() {
                        tracing::info!(alerts = raised.len(), "area alerts raised");
                    }
                    last = Some(f);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "area alert rule failed; tried again next time")
                }
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "area alert rule could not read the store"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::area::table::{build, Pupil, Term};

    fn cohort(school: &str, n: usize, pa: [usize; 2]) -> Vec<Pupil> {
        (0..n)
            .map(|i| Pupil {
                source: 0,
                school: school.into(),
                area: "WT1".into(),
                known_to_social_care: false,
                attendance: vec![
                    (
                        Term {
                            year: 2024,
                            term: 1,
                        },
                        100,
                        if i < pa[0] { 80 } else { 99 },
                    ),
                    (
                        Term {
                            year: 2024,
                            term: 2,
                        },
                        100,
                        if i < pa[1] { 80 } else { 99 },
                    ),
                ],
                exclusions: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_school_crossing_the_threshold_is_found_once_and_withheld_rates_never() {
        // A: 15 % (withheld with D's 2) → 30 %: crosses 25 %.
        let mut pupils = cohort("A", 40, [6, 12]);
        // B: 30 % → 35 %: above already.
        pupils.extend(cohort("B", 40, [12, 14]));
        // C: 3 of 20 in spring, and D's 7 withheld with it: never alerted on.
        pupils.extend(cohort("C", 20, [0, 3]));
        pupils.extend(cohort("D", 40, [2, 7]));
        let table = build(&pupils, 5);
        let levels = vec!["school".to_string()];
        let found: Vec<(String, f64)> = crossings(&table, 25.0, &levels)
            .into_iter()
            .map(|(r, now, _)| (r.key.clone(), now))
            .collect();
        assert_eq!(found, vec![("A".to_string(), 30.0)]);
        // The area (all four schools) went from 20 of 140 to 36 of 140 (25.7 %).
        let areas = vec!["area".to_string()];
        let found = crossings(&table, 25.0, &areas);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.key, "WT1");
    }
}
