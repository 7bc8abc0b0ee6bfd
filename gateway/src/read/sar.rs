//! Subject access: the answer to a parent's or a young person's "who has looked at my records,
//! and why" (Data Protection Act 2018, art. 15 UK GDPR), from the audit log: every access to a
//! child, in plain words — who (role and agency; a name only where `audit.sar_names` allows and
//! the identity provider gave one), when, why, which kinds of information, on what lawful basis —
//! as JSON and as an HTML page a family can read.
//!
//! An access made for a police investigation or a section 47 enquiry is deferred: the view,
//! search or concern was marked so (`exemption`), and the report leaves it out until its release date or an IG
//! officer's release (an audit entry of its own, [`RELEASE`]), so a report can never tip off.
//! The report's shape is the same whether or not anything was left out. Every report, and every
//! listing of what is deferred, is itself audited.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::foundation::audit::{self, Recorded, Scope};
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;

const ACTION: &str = "subject_access_report";
const DEFERRALS: &str = "subject_access_deferrals";
/// The audit entry by which an IG officer releases a deferred access into reports.
pub const RELEASE: &str = "subject_access_release";

/// Why an access may be kept out of subject access reports for a while.
pub const EXEMPTIONS: &[&str] = &["police_investigation", "s47_enquiry"];

/// Whether `role` may mark an access with `exemption`: police (and the MASH, which carries a
/// police officer's rights) for an investigation; social workers and the MASH for a section 47
/// enquiry.
pub fn may_claim(role: Role, exemption: &str) -> bool {
    match exemption {
        "police_investigation" => matches!(role, Role::PoliceOfficer | Role::MashOfficer),
        "s47_enquiry" => matches!(role, Role::SocialWorker | Role::MashOfficer),
        _ => false,
    }
}

/// Checks the exemption a request claims (`?exemption=` on a view, a search or a concern): one
/// of [`EXEMPTIONS`], and one `who`'s role may claim. The caller audits the refusal.
pub fn check_exemption(who: &Principal, exemption: Option<&str>) -> Result<(), Error> {
    match exemption {
        None => Ok(()),
        Some(x) if !EXEMPTIONS.contains(&x) => Err(Error::field(
            "/exemption",
            "police_investigation or s47_enquiry",
        )),
        Some(x) if !may_claim(who.role, x) => Err(Error::Forbidden(
            "this role may not mark an access for that exemption",
        )),
        Some(_) => Ok(()),
    }
}

/// Marks an audit entry's `detail` as an access made under `exemption`: reports leave it out
/// until `audit.sar_deferral_days` from now, or an IG officer's release.
pub fn defer(gw: &Gateway, detail: &mut Value, exemption: Option<&str>) {
    let (Some(x), Some(d)) = (exemption, detail.as_object_mut()) else {
        return;
    };
    let until = Utc::now() + chrono::Duration::days(i64::from(gw.config.audit.sar_deferral_days));
    d.insert(
        "deferred".into(),
        json!({"exemption": x, "until": until.to_rfc3339()}),
    );
}

/// A subject access report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub child: String,
    pub produced_at: String,
    /// `the partnership` for its IG lead; `organisation <agency>` for another agency's officer,
    /// who answers for their own organisation's staff and data.
    pub scope: String,
    /// Oldest first.
    pub accesses: Vec<Access>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Access {
    pub at: String,
    pub who: Who,
    pub what: String,
    pub why: Option<String>,
    pub categories: Vec<String>,
    pub lawful_basis: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Who {
    pub role: String,
    pub agency: String,
    /// Only where `audit.sar_names` is set: the identity provider's name for the person.
    pub name: Option<String>,
}

/// An access held out of reports, for the IG officer deciding when to release it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deferred {
    /// The audit entry's sequence number: what a release names.
    pub entry: i64,
    pub at: String,
    pub role: String,
    pub agency: String,
    pub exemption: String,
    /// Released into reports from this time on, unless an IG officer releases it sooner.
    pub until: String,
}

fn ig_only(who: &Principal) -> Result<(), Error> {
    if who.role == Role::IgOfficer {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "subject access reports are produced by information-governance officers",
        ))
    }
}

fn scope(gw: &Gateway, who: &Principal) -> Option<Scope> {
    (!gw.is_ig_lead(who)).then(|| Scope {
        agency: who.agency.clone(),
        sources: gw.sources_of(&who.agency),
    })
}

/// Entries held back now: marked with an exemption, before their date, not released.
fn held_back(entries: &[Recorded], now: DateTime<Utc>) -> Vec<(&Recorded, String, String)> {
    let released: std::collections::BTreeSet<i64> = entries
        .iter()
        .filter(|e| e.entry.action == RELEASE)
        .filter_map(|e| e.entry.detail.get("entry").and_then(Value::as_i64))
        .collect();
    entries
        .iter()
        .filter_map(|e| {
            let d = e.entry.detail.get("deferred")?;
            let reason = d.get("exemption")?.as_str()?.to_string();
            let until = d.get("until")?.as_str()?.to_string();
            let due = DateTime::parse_from_rfc3339(&until)
                .map(|t| t.with_timezone(&Utc) <= now)
                .unwrap_or(false);
            (!due && !released.contains(&e.seq)).then_some((e, reason, until))
        })
        .collect()
}

/// The report for `child`: IG officers only; the partnership's IG lead sees every agency's
/// accesses, another IG officer those of their own organisation.
pub async fn report(gw: &Gateway, who: &Principal, child: &str) -> Result<Report, Error> {
    if let Err(e) = ig_only(who) {
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let scope = scope(gw, who);
    let entries = audit::for_child(&gw.store, child, scope.as_ref())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let now = Utc::now();
    let withheld: std::collections::BTreeSet<i64> = held_back(&entries, now)
        .iter()
        .map(|(e, _, _)| e.seq)
        .collect();
    let accesses: Vec<Access> = entries
        .iter()
        .filter(|e| e.entry.action != RELEASE && !withheld.contains(&e.seq))
        .map(|e| describe(gw, e))
        .collect();
    // The entry records what was handed over, including how much was held back: the IG
    // officer's own record, never the family's.
    let detail = json!({"accesses": accesses.len(), "deferred": withheld.len(),
                        "scope": if scope.is_some() { "agency" } else { "partnership" }});
    gw.record(
        who,
        ACTION,
        Some(child),
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    Ok(Report {
        child: child.to_string(),
        produced_at: now.format("%-d %B %Y at %H:%M UTC").to_string(),
        scope: match &scope {
            None => "partnership".into(),
            Some(s) => format!("organisation {}", agency_name(gw, &s.agency)),
        },
        accesses,
    })
}

/// The accesses to `child` held out of reports now, for an IG officer to review. Audited.
pub async fn deferred(gw: &Gateway, who: &Principal, child: &str) -> Result<Vec<Deferred>, Error> {
    if let Err(e) = ig_only(who) {
        return Err(gw.refuse(who, DEFERRALS, Some(child), None, e).await);
    }
    let entries = audit::for_child(&gw.store, child, scope(gw, who).as_ref())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let list: Vec<Deferred> = held_back(&entries, Utc::now())
        .into_iter()
        .map(|(e, exemption, until)| Deferred {
            entry: e.seq,
            at: e.entry.at.to_rfc3339(),
            role: e.entry.role.clone(),
            agency: e.entry.agency.clone(),
            exemption,
            until,
        })
        .collect();
    gw.record(
        who,
        DEFERRALS,
        Some(child),
        Some(Purpose::Audit),
        "shown",
        json!({"returned": list.len()}),
    )
    .await?;
    Ok(list)
}

/// Whether `entry` is an access to `child` held back now and within `who`'s scope: what a
/// release may name.
pub async fn is_deferred(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    entry: i64,
) -> Result<bool, Error> {
    let entries = audit::for_child(&gw.store, child, scope(gw, who).as_ref())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(held_back(&entries, Utc::now())
        .iter()
        .any(|(e, _, _)| e.seq == entry))
}

pub fn agency_name(gw: &Gateway, id: &str) -> String {
    gw.config
        .agencies
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| match id {
            "weft" => "Weft (automatic)".into(),
            other => other.to_string(),
        })
}

pub fn role_words(role: &str) -> String {
    match role {
        "social_worker" => "Social worker",
        "dsl" => "Designated safeguarding lead (school)",
        "teacher" => "Teacher",
        "education_welfare_officer" => "Education welfare officer",
        "health_practitioner" => "Health practitioner",
        "police_officer" => "Police officer",
        "mash_officer" => "Multi-agency safeguarding hub officer",
        "ig_officer" => "Information governance officer",
        "data_admin" => "Data administrator",
        "la_analyst" => "Local authority analyst",
        "data_manager" => "Data manager",
        "system" => "The system itself",
        other => return other.replace('_', " "),
    }
    .to_string()
}

pub fn purpose_words(purpose: &str) -> String {
    match purpose {
        "safeguarding" => "To keep the child safe (safeguarding)",
        "child_in_need" => "To assess or support a child in need",
        "early_help" => "To offer early help to the family",
        "education_welfare" => "For the child's school attendance and education",
        "direct_care" => "To give the child health care",
        "audit" => "To check how the child's information has been used",
        other => return other.replace('_', " "),
    }
    .to_string()
}

pub fn action_words(action: &str, outcome: &str) -> String {
    let refused = matches!(outcome, "denied" | "rejected" | "not_found" | "forbidden");
    let base = match action {
        "view" if outcome == "denied" => "Asked to see the child's information; none was shown",
        "view" if refused => "Asked to see the child's information; the request was refused",
        "view" => "Looked at the child's information",
        "search" => "Searched for the child",
        "concern_submit" => "Raised a concern about the child",
        "concern_status" => "Updated the progress of a concern about the child",
        "concern_addendum" => "Added to a concern about the child",
        "concern_view" => "Read a concern about the child",
        "event_ingest" => "Sent a notification about the child",
        "subscribe" => "Asked to be told of changes for the child",
        "consent_record" => "Recorded a consent decision for the child",
        "consent_withdraw" => "Recorded that a consent was withdrawn",
        "consent_list" => "Looked at the consent decisions for the child",
        "break_glass" => "Used emergency access to the child's information",
        "break_glass_review" => "Reviewed an emergency access",
        "match_link" | "match_decision" => "Linked records held by partner agencies to the child",
        "link_history" => "Looked at how records were linked to the child",
        "audit_query" => "Looked at the record of who has seen the child's information",
        "subject_access_report" => "Asked for a report like this one",
        "subject_access_deferrals" => "Looked at what is held back from reports like this one",
        "subject_access_release" => "Released an access held back from reports like this one",
        "break_glass_queue" => "Looked at the emergency accesses waiting for review",
        "audit_verify" => "Checked that the record of accesses is intact",
        "sign_in" => "Signed in",
        "sign_out" => "Signed out",
        other => return other.replace('_', " "),
    };
    if refused && action != "view" {
        format!("{base} (refused)")
    } else {
        base.to_string()
    }
}

pub fn category_words(c: &str) -> String {
    match c {
        "identity.core" => "Name, date of birth and identifiers",
        "identity.contact" => "Address and contact details",
        "education.enrolment" => "School enrolment",
        "education.attendance" => "School attendance",
        "education.exclusions" => "School exclusions",
        "education.attainment" => "School attainment",
        "education.send" => "Special educational needs",
        "social_care.status" => "Involvement with children's social care",
        "social_care.allocated_worker" => "The child's social worker",
        "social_care.case_notes" => "Social care case notes",
        "health.registration" => "GP registration",
        "health.cp_flag" => "Child protection flag on health records",
        "health.appointments" => "Health appointments",
        "health.sensitive" => "Sensitive health information",
        "police.incidents" => "Police incidents",
        "police.domestic_abuse" => "Domestic abuse incidents",
        other => return other.to_string(),
    }
    .to_string()
}

pub fn basis_words(code: &str) -> String {
    match code {
        "6a" => "Consent (UK GDPR article 6(1)(a))",
        "6c" => "A legal obligation (UK GDPR article 6(1)(c))",
        "6d" => "To protect someone's life (UK GDPR article 6(1)(d))",
        "6e" => "A public task (UK GDPR article 6(1)(e))",
        "s18" => "Safeguarding of children (Data Protection Act 2018, schedule 1 paragraph 18)",
        "9h" => "Health or social care (UK GDPR article 9(2)(h))",
        other => return other.to_string(),
    }
    .to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub fn describe(gw: &Gateway, e: &Recorded) -> Access {
    let d = &e.entry.detail;
    let mut categories: Vec<String> = strings(d.get("shown"))
        .iter()
        .map(|c| category_words(c))
        .collect();
    categories.dedup();
    let mut lawful_basis: Vec<String> = strings(d.get("lawful_basis"))
        .iter()
        .filter(|b| b.as_str() != "-")
        .map(|b| basis_words(b))
        .collect();
    lawful_basis.dedup();
    Access {
        at: e.entry.at.format("%-d %B %Y, %H:%M UTC").to_string(),
        who: Who {
            role: role_words(&e.entry.role),
            agency: agency_name(gw, &e.entry.agency),
            name: gw
                .config
                .audit
                .sar_names
                .then(|| e.entry.user.clone())
                .filter(|u| e.entry.role != "system" && !u.is_empty()),
        },
        what: action_words(&e.entry.action, &e.entry.outcome),
        why: e.entry.purpose.as_deref().map(purpose_words),
        categories,
        lawful_basis,
    }
}

/// The report as a page a family can read. Everything in it is escaped (the template engine
/// escapes every value in an `.html` template).
pub fn html(report: &Report) -> Result<String, Error> {
    let mut env = minijinja::Environment::new();
    env.add_template(
        "access-report.html",
        include_str!("../../templates/access-report.html"),
    )
    .map_err(|e| Error::Internal(format!("access report template: {e}")))?;
    env.get_template("access-report.html")
        .and_then(|t| t.render(report))
        .map_err(|e| Error::Internal(format!("access report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_it_shows() {
        let report = Report {
            child: "<script>alert(1)</script>".into(),
            produced_at: "1 December 2026".into(),
            scope: "partnership".into(),
            accesses: vec![Access {
                at: "1 December 2026, 09:00 UTC".into(),
                who: Who {
                    role: "Teacher".into(),
                    agency: "St <b>Mary's</b> & \"Co\"".into(),
                    name: Some("<img src=x onerror=alert(1)>".into()),
                },
                what: "Looked at the child's information".into(),
                why: None,
                categories: vec!["School attendance".into()],
                lawful_basis: vec![],
            }],
        };
        let page = html(&report).unwrap();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("<b>Mary"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("School attendance"));
        assert!(page.contains("Not given"));
    }

    fn recorded(seq: i64, action: &str, detail: Value) -> Recorded {
        Recorded {
            seq,
            entry: audit::Entry {
                at: Utc::now(),
                user: "pc-1".into(),
                agency: "police".into(),
                role: "police_officer".into(),
                action: action.into(),
                child: Some("c1".into()),
                purpose: Some("safeguarding".into()),
                outcome: "shown".into(),
                detail,
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_deferral_ends_at_its_date_or_at_a_release() {
        let now = Utc::now();
        let later = (now + chrono::Duration::days(30)).to_rfc3339();
        let earlier = (now - chrono::Duration::days(1)).to_rfc3339();
        let held = json!({"deferred": {"exemption": "police_investigation", "until": later}});
        let lapsed = json!({"deferred": {"exemption": "s47_enquiry", "until": earlier}});
        let entries = vec![
            recorded(1, "view", held.clone()),
            recorded(2, "view", lapsed),
            recorded(3, "view", held),
            recorded(4, "view", json!({})),
            recorded(5, RELEASE, json!({"entry": 3})),
        ];
        let seqs: Vec<i64> = held_back(&entries, now)
            .iter()
            .map(|(e, _, _)| e.seq)
            .collect();
        assert_eq!(seqs, vec![1]);
    }

    #[test]
    fn only_the_roles_an_exemption_belongs_to_may_claim_it() {
        assert!(may_claim(Role::PoliceOfficer, "police_investigation"));
        assert!(may_claim(Role::MashOfficer, "police_investigation"));
        assert!(!may_claim(Role::Teacher, "police_investigation"));
        assert!(may_claim(Role::SocialWorker, "s47_enquiry"));
        assert!(!may_claim(Role::PoliceOfficer, "s47_enquiry"));
        assert!(!may_claim(Role::SocialWorker, "whatever"));
    }
}
