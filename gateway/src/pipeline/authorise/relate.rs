//! Authorise, first step — relate: does the practitioner have a legitimate relationship with this child that
//! the data shows? Without one, nothing of the child is shown — whatever the policy would allow
//! their role — unless they take break-glass. This is how NHS Spine guards a clinical record:
//! a role says what kind of data a person may see, a relationship says whose.
//!
//! The relationships come from what the sources say (the master child index's links, and the
//! linked records themselves: a school's roll, a case system's allocation) and from Weft's own
//! records (a concern addressed to the practitioner's agency, a child in the MASH's triage).
//! Which of them count for each role is configuration (`relationships.roles`), with
//! [`default_relations`] for a role the configuration does not name.
//!
//! The stage runs in two steps around the fan-out. [`candidates`] works from the links and
//! Weft's records alone, so a practitioner with no possible relationship is refused before any
//! partner system is asked; [`confirm`] then reads the practitioner's own agency's records in
//! what was fetched (is the child on the roll, or did they leave recently; is this the
//! allocated worker). Neither step ever shows anything: the fetched records are only read.

use std::collections::BTreeSet;

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::grants::Grant;
use crate::foundation::config::{AgencyConfig, AgencyKind, RelationshipsConfig};
use crate::foundation::domain::{Relation, Role};
use crate::foundation::error::Error;
use crate::foundation::store::Store;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::fanout::{Fetched, Outcome};
use crate::pipeline::resolve::Link;
use crate::sources::Sources;

/// What a practitioner without a relationship is told: that access is gained through a
/// referral or break-glass, and nothing about the child.
pub const NO_RELATIONSHIP: &str =
    "no legitimate relationship with this child: access comes with a \
     referral or concern addressed to your agency, or through break-glass";

/// The relationships that count for a role unless the configuration says otherwise.
pub fn default_relations(role: Role) -> Vec<Relation> {
    use Relation::*;
    match role {
        Role::SocialWorker => vec![AllocatedWorker, Referral],
        Role::Dsl | Role::Teacher => vec![SchoolRoll, Referral],
        Role::EducationWelfareOfficer => vec![LaSchoolRoll, Referral],
        Role::HealthPractitioner => vec![CareRelationship, Referral],
        Role::PoliceOfficer => vec![ForceRecords, MashTriage, Referral],
        Role::MashOfficer => vec![MashTriage, Referral],
        // IG officers audit and data administrators configure: neither reads a child's data.
        // Analysts read area reports: aggregates, never a child.
        Role::IgOfficer | Role::DataAdmin | Role::LaAnalyst | Role::DataManager => Vec::new(),
    }
}

/// The relationships that count for this role under this configuration.
pub fn relations(cfg: &RelationshipsConfig, role: Role) -> Vec<Relation> {
    cfg.roles
        .get(&role)
        .cloned()
        .unwrap_or_else(|| default_relations(role))
}

/// One relationship, as the view and the audit entry explain it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Relationship {
    /// A [`Relation`] word, or `break_glass`.
    pub kind: String,
    /// What shows it: a source of the practitioner's own agency, a concern's id, or a grant's.
    pub via: String,
    /// In words, without naming anyone.
    pub explanation: String,
}

impl Relationship {
    fn new(kind: &str, via: &str, explanation: String) -> Self {
        Relationship {
            kind: kind.to_string(),
            via: via.to_string(),
            explanation,
        }
    }
}

/// What Weft's own records say of this child and the practitioner's agency.
#[derive(Debug, Default)]
pub struct Records {
    /// Open concerns about the child with a recipient in the practitioner's agency.
    pub referrals: Vec<String>,
    /// Open concerns about the child that the MASH is triaging.
    pub triage: Vec<String>,
}

/// Reads the concerns that give a relationship, when the role's relationships include one
/// that Weft's records can show; otherwise asks nothing of the store.
pub async fn records(
    store: &Store,
    wanted: &[Relation],
    who: &Principal,
    child: &str,
) -> Result<Records, sqlx::Error> {
    let mut out = Records::default();
    if !wanted.contains(&Relation::Referral) && !wanted.contains(&Relation::MashTriage) {
        return Ok(out);
    }
    let mut conn = store.lend().await?;
    if wanted.contains(&Relation::Referral) {
        let rows = sqlx::query(
            "SELECT DISTINCT c.id AS id FROM concerns c JOIN concern_recipients r \
             ON r.concern_id = c.id WHERE c.child_id = $1 AND r.agency = $2 \
             AND r.state <> 'closed' ORDER BY c.id",
        )
        .bind(child)
        .bind(&who.agency)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            out.referrals.push(r.try_get("id")?);
        }
    }
    if wanted.contains(&Relation::MashTriage) {
        let rows = sqlx::query(
            "SELECT DISTINCT c.id AS id FROM concerns c JOIN concern_recipients r \
             ON r.concern_id = c.id WHERE c.child_id = $1 AND r.role = 'mash_officer' \
             AND r.state <> 'closed' ORDER BY c.id",
        )
        .bind(child)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            out.triage.push(r.try_get("id")?);
        }
    }
    conn.done();
    Ok(out)
}

/// Relationships known before the sources are asked, and those a source's record must confirm.
#[derive(Debug, Default)]
pub struct Candidates {
    pub confirmed: Vec<Relationship>,
    /// (relation, source id): read that source's record to confirm.
    pending: Vec<(Relation, String)>,
}

impl Candidates {
    /// No relationship is possible: refuse before fanning out.
    pub fn is_empty(&self) -> bool {
        self.confirmed.is_empty() && self.pending.is_empty()
    }

    /// The sources whose records [`confirm`] needs.
    pub fn pending_sources(&self) -> BTreeSet<String> {
        self.pending.iter().map(|(_, s)| s.clone()).collect()
    }
}

/// The relationships the index's links, Weft's records and any grant can show.
pub fn candidates(
    wanted: &[Relation],
    who: &Principal,
    own_la: Option<&str>,
    sources: &Sources,
    links: &[Link],
    records: &Records,
    grant: Option<&Grant>,
) -> Candidates {
    let mut c = Candidates::default();
    let linked = |id: &str| links.iter().any(|l| l.source == id);
    for rel in wanted {
        for s in sources.all.iter().filter(|s| linked(&s.id)) {
            let own = s.agency.id == who.agency;
            let kind = s.agency.kind;
            match rel {
                Relation::SchoolRoll if own && kind == AgencyKind::Education => {
                    c.pending.push((*rel, s.id.clone()));
                }
                Relation::LaSchoolRoll
                    if kind == AgencyKind::Education
                        && own_la.is_some()
                        && s.agency.local_authority.as_deref() == own_la =>
                {
                    c.pending.push((*rel, s.id.clone()));
                }
                Relation::AllocatedWorker | Relation::AllocatedTeam
                    if own && kind == AgencyKind::SocialCare =>
                {
                    c.pending.push((*rel, s.id.clone()));
                }
                Relation::CareRelationship if own && kind == AgencyKind::Health => {
                    c.confirmed.push(Relationship::new(
                        rel.as_str(),
                        &s.id,
                        "your health service holds a record of the child's care".into(),
                    ));
                }
                Relation::ForceRecords if own && kind == AgencyKind::Police => {
                    c.confirmed.push(Relationship::new(
                        rel.as_str(),
                        &s.id,
                        "the child is named in your force's records".into(),
                    ));
                }
                _ => {}
            }
        }
        match rel {
            Relation::Referral => {
                for id in &records.referrals {
                    c.confirmed.push(Relationship::new(
                        rel.as_str(),
                        id,
                        "an open concern about the child is addressed to your agency".into(),
                    ));
                }
            }
            Relation::MashTriage => {
                for id in &records.triage {
                    c.confirmed.push(Relationship::new(
                        rel.as_str(),
                        id,
                        "the child is in the MASH's triage on an open concern".into(),
                    ));
                }
            }
            _ => {}
        }
    }
    c.confirmed.extend(grant.map(of_grant));
    c
}

/// The relationship a break-glass grant gives.
pub fn of_grant(g: &Grant) -> Relationship {
    Relationship::new(
        "break_glass",
        &g.id,
        format!(
            "break-glass for {} until {}",
            g.purpose,
            g.expires_at.format("%Y-%m-%d %H:%M UTC")
        ),
    )
}

/// The relationships once the practitioner's own agency's records have been read. An
/// unavailable source confirms nothing: the relationship is not assumed.
pub fn confirm(
    c: Candidates,
    who: &Principal,
    recently_left_days: u32,
    fetched: &[Fetched],
) -> Vec<Relationship> {
    let mut out = c.confirmed;
    let today = Utc::now().date_naive();
    for (rel, source) in c.pending {
        let Some(f) = fetched.iter().find(|f| f.source.id == source) else {
            continue;
        };
        let Outcome::Records(records) = &f.outcome else {
            continue;
        };
        let items = || records.iter().flat_map(|(_, items)| items.iter());
        let found = match rel {
            Relation::SchoolRoll | Relation::LaSchoolRoll => {
                roll(items(), today, recently_left_days).map(|on| {
                    let whose = if rel == Relation::SchoolRoll {
                        "your school's"
                    } else {
                        "a school of your local authority's"
                    };
                    if on {
                        format!("the child is on {whose} roll")
                    } else {
                        format!(
                            "the child left {whose} roll within the last {recently_left_days} days"
                        )
                    }
                })
            }
            Relation::AllocatedWorker => items()
                .any(|i| {
                    i.category == "social_care.allocated_worker"
                        && i.field == "worker"
                        && i.value
                            .as_str()
                            .is_some_and(|w| w.trim().eq_ignore_ascii_case(who.user.trim()))
                })
                .then(|| "you are the child's allocated worker".to_string()),
            Relation::AllocatedTeam => items()
                .any(|i| {
                    i.category == "social_care.allocated_worker"
                        && i.field == "worker"
                        && i.value.as_str().is_some_and(|w| !w.trim().is_empty())
                })
                .then(|| "the child is allocated to a worker in your service".to_string()),
            _ => None,
        };
        if let Some(explanation) = found {
            out.push(Relationship::new(rel.as_str(), &source, explanation));
        }
    }
    out
}

/// Whether a school's record puts the child on its roll (`Some(true)`), shows them leaving
/// within the window (`Some(false)`), or neither.
fn roll<'a>(
    items: impl Iterator<Item = &'a weft_adapters::Item>,
    today: NaiveDate,
    recently_left_days: u32,
) -> Option<bool> {
    let mut left: Option<NaiveDate> = None;
    for i in items.filter(|i| i.category == "education.enrolment") {
        match i.field.as_str() {
            "on_roll" if truthy(&i.value) => return Some(true),
            "leaving_date" => {
                if let Some(d) = i.value.as_str().and_then(|s| s.get(..10)) {
                    left = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().or(left);
                }
            }
            _ => {}
        }
    }
    let left = left?;
    let days = (today - left).num_days();
    (0..=i64::from(recently_left_days))
        .contains(&days)
        .then_some(false)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes" | "Y"),
        _ => false,
    }
}

/// The practitioner's local authority, from their agency's configuration.
pub fn own_la<'a>(agencies: &'a [AgencyConfig], who: &Principal) -> Option<&'a str> {
    agencies
        .iter()
        .find(|a| a.id == who.agency)
        .and_then(|a| a.local_authority.as_deref())
}

/// The refusal for a practitioner with no relationship.
pub fn refusal() -> Error {
    Error::Forbidden(NO_RELATIONSHIP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft_adapters::Item;

    fn enrol(on: Value, left: Option<&str>) -> Vec<Item> {
        let mut v = vec![Item::new("education.enrolment", "on_roll", on)];
        if let Some(l) = left {
            v.push(Item::new("education.enrolment", "leaving_date", l));
        }
        v
    }

    #[test]
    fn on_roll_or_recently_left() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        assert_eq!(roll(enrol(json!(1), None).iter(), today, 90), Some(true));
        assert_eq!(roll(enrol(json!(true), None).iter(), today, 90), Some(true));
        assert_eq!(
            roll(enrol(json!(false), Some("2026-04-01")).iter(), today, 90),
            Some(false)
        );
        assert_eq!(
            roll(enrol(json!(false), Some("2025-12-01")).iter(), today, 90),
            None,
            "left too long ago"
        );
        assert_eq!(roll(enrol(json!(0), None).iter(), today, 90), None);
        assert_eq!(
            roll(enrol(json!(false), Some("2026-04-01")).iter(), today, 30),
            None,
            "the window is configurable"
        );
    }

    #[test]
    fn ig_officers_and_admins_have_no_relationship_by_default() {
        assert!(default_relations(Role::IgOfficer).is_empty());
        assert!(default_relations(Role::DataAdmin).is_empty());
        for r in Role::ALL {
            if !matches!(
                r,
                Role::IgOfficer | Role::DataAdmin | Role::LaAnalyst | Role::DataManager
            ) {
                assert!(!default_relations(*r).is_empty(), "{r}");
            }
        }
    }
}
