//! Finding a child: by NHS number, UPN, a source's local id and/or demographics, through the
//! master child index. Every search is audited with what it found, before the answer leaves.
//!
//! A child the searcher has no relationship with is answered with its id, what the searcher's
//! own terms matched on, and how access is gained — nothing the searcher did not type (no
//! grade, probability or per-field comparison). A local id is searched only in the searcher's
//! own agency's sources: in anyone else's it would tell them whether that agency holds a record.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::foundation::config::AgencyKind;
use crate::pipeline::authorise::policy::RESTRICTED_CONTACT;
use crate::pipeline::authorise::{known_category, Effect, Policy, Question};
use crate::read::area::places;

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::relate::{self, Relationship};
use crate::pipeline::resolve::{Found, Search};
use weft_ids::{NhsNumber, Upn};

const ACTION: &str = "search";

/// What a search returns: each child found, best first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub children: Vec<Hit>,
    /// By child id, for the children this searcher has a relationship with only: what tells
    /// them apart, as the index's records hold it and only as far as policy lets this searcher
    /// see it for this purpose (`identity.core` for name, date of birth and sex;
    /// `education.enrolment` for the school; `identity.contact` for the postcode district, and
    /// for a restricted child only with `restricted.contact` too) — so the right child can be
    /// chosen before anything is opened. A child with nothing visible, or no relationship, has
    /// no entry.
    pub shown: BTreeMap<String, Distinguishing>,
}

/// One child found. With a relationship, its grade and why; without, only that it matches and
/// how access is gained.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub id: String,
    /// `nhs_number`, `upn`, `local_id` or `demographics`: which of the searcher's terms matched.
    pub matched_on: &'static str,
    /// `granted` (a relationship, listed) or `no_relationship`.
    pub access: &'static str,
    pub relationship: Vec<Relationship>,
    /// For `no_relationship`: how access is gained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how_to_gain_access: Option<&'static str>,
    /// With a relationship: the match's grade, probability and per-field explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Found>,
}

/// What distinguishes a found child, from the records a searcher's policy lets them see.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Distinguishing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// The schools (by name) whose records are linked to the child.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schools: Vec<String>,
    /// The postcode district (outward code, e.g. `WT3`) of the first record that gives a full
    /// postcode, never more of the postcode. Absent for a child with no postcode the searcher
    /// may see — which is how a restricted child looks to anyone policy does not name for
    /// `restricted.contact`: the answer says nothing of a restriction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
}

/// Searches the index for the search in `body` (`schemas/search.schema.json`).
pub async fn search(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<SearchResult, Error> {
    search_marked(gw, who, body, None).await
}

/// [`search`], marked as made for a police investigation or a section 47 enquiry
/// (`exemption`): the search is kept out of the found child's subject access reports until its
/// release ([`super::sar`]).
pub async fn search_marked(
    gw: &Gateway,
    who: &Principal,
    body: &[u8],
    exemption: Option<&str>,
) -> Result<SearchResult, Error> {
    let parsed = super::sar::check_exemption(who, exemption).and_then(|()| parse(gw, who, body));
    let (query, purpose, terms) = match parsed {
        Ok(q) => q,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let children = gw.index.find(&query).await?;
    let mut hits = Vec::with_capacity(children.len());
    for found in &children {
        let relationship = gw.relationships(who, &found.id).await?.unwrap_or_default();
        hits.push(hit(found, relationship));
    }
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let child = match ids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let outcome = if ids.is_empty() { "no_match" } else { "found" };
    // Distinguishing details only for the children the searcher may open: a search without a
    // relationship says that a child matches and nothing more.
    let granted: Vec<&str> = hits
        .iter()
        .filter(|h| h.access == "granted")
        .map(|h| h.id.as_str())
        .collect();
    let (shown, categories) = distinguishing(gw, who, purpose, &granted).await?;
    // What was searched for, as typed: a search that found nobody is traced by its terms. The
    // audit log is protected like the data it describes.
    let mut detail = json!({
        "terms": terms,
        "children": ids,
        "matched_on": children.iter().map(|c| c.matched_on).collect::<Vec<_>>(),
        "grades": children.iter().map(|c| c.grade).collect::<Vec<_>>(),
        "access": hits.iter().map(|h| h.access).collect::<Vec<_>>(),
        "shown": categories,
    });
    super::sar::defer(gw, &mut detail, exemption);
    gw.record(who, ACTION, child, Some(purpose), outcome, detail)
        .await?;
    Ok(SearchResult {
        children: hits,
        shown,
    })
}

/// A found child as the searcher may see it: with a relationship, its grade and why; without,
/// only that it matches and how access is gained.
fn hit(found: &Found, relationship: Vec<Relationship>) -> Hit {
    let related = !relationship.is_empty();
    Hit {
        id: found.id.clone(),
        matched_on: found.matched_on,
        access: if related {
            "granted"
        } else {
            "no_relationship"
        },
        relationship,
        how_to_gain_access: (!related).then_some(relate::NO_RELATIONSHIP),
        r#match: related.then(|| found.clone()),
    }
}

/// Most children whose distinguishing details a search returns.
const DISTINGUISH_AT_MOST: usize = 20;

/// One record the index holds of a found child: its demographics, and the kind and name of the
/// agency whose source holds it.
struct Held {
    kind: AgencyKind,
    agency: String,
    demographics: weft_adapters::Demographics,
}

/// What tells the found children apart, from the index's own copy of each source record's
/// demographics. Returns the details and the categories shown, for the audit entry.
///
/// A child is restricted when any record linked to it is marked so in the index (by whichever
/// source, known to this searcher or not, configured here or not): its district is then shown
/// only to a searcher policy names for `restricted.contact`.
async fn distinguishing(
    gw: &Gateway,
    who: &Principal,
    purpose: Purpose,
    ids: &[&str],
) -> Result<(BTreeMap<String, Distinguishing>, BTreeSet<&'static str>), Error> {
    let policy = gw.policy();
    let permits = |category: &str| permitted(&policy, who, purpose, category);
    let mut shown = BTreeMap::new();
    let mut categories = BTreeSet::new();
    for id in ids.iter().take(DISTINGUISH_AT_MOST) {
        let rows = sqlx::query(
            "SELECT source, demographics, restricted FROM source_records WHERE child_id = $1 \
             ORDER BY source, local_id",
        )
        .bind(*id)
        .fetch_all(&gw.store.pool)
        .await?;
        let mut restricted = false;
        for row in &rows {
            restricted |= row.try_get::<i64, _>("restricted")? != 0;
        }
        let mut held = Vec::with_capacity(rows.len());
        for row in &rows {
            let source: String = row.try_get("source")?;
            let Some(agency) = gw
                .config
                .sources
                .iter()
                .find(|s| s.id == source)
                .and_then(|s| gw.config.agency(&s.agency))
            else {
                continue;
            };
            let text: String = row.try_get("demographics")?;
            held.push(Held {
                kind: agency.kind,
                agency: agency.name.clone(),
                demographics: serde_json::from_str(&text).unwrap_or_default(),
            });
        }
        if let Some(d) = distinguish(&permits, &held, restricted, &mut categories) {
            shown.insert(id.to_string(), d);
        }
    }
    Ok((shown, categories))
}

/// Whether policy permits `category` outright (not under consent, not under break-glass) to
/// this searcher for this purpose.
fn permitted(policy: &Policy, who: &Principal, purpose: Purpose, category: &str) -> bool {
    policy
        .decide(&Question {
            role: who.role,
            agency: &who.agency,
            kind: who.agency_kind,
            category,
            purpose,
        })
        .effect
        == Effect::Permit
}

/// One child's distinguishing details, by the view's rules: a record counts only if its
/// agency's kind is one the searcher may know of (`<kind>.known`), its name, date of birth and
/// sex only where `identity.core` is permitted, its school only where `education.enrolment`
/// is, its postcode district only where `identity.contact` (the view's category for a
/// postcode) is and — for a `restricted` child — `restricted.contact` too, as the view holds
/// a restricted child's postcode back. `None` when nothing is visible.
fn distinguish(
    permits: &impl Fn(&str) -> bool,
    held: &[Held],
    restricted: bool,
    categories: &mut BTreeSet<&'static str>,
) -> Option<Distinguishing> {
    let mut d = Distinguishing::default();
    let located = permits("identity.contact") && (!restricted || permits(RESTRICTED_CONTACT));
    for h in held.iter().filter(|h| permits(known_category(h.kind))) {
        if located && d.district.is_none() {
            d.district = h
                .demographics
                .postcode
                .as_deref()
                .and_then(places::district);
            if d.district.is_some() {
                categories.insert("identity.contact");
            }
        }
        if permits("identity.core") {
            let demo = &h.demographics;
            categories.insert("identity.core");
            d.given_name = d.given_name.take().or_else(|| demo.given_name.clone());
            d.family_name = d.family_name.take().or_else(|| demo.family_name.clone());
            d.birth_date = d.birth_date.take().or_else(|| demo.birth_date.clone());
            d.sex = d.sex.take().or_else(|| demo.sex.clone());
        }
        if h.kind == AgencyKind::Education
            && permits("education.enrolment")
            && !d.schools.contains(&h.agency)
        {
            categories.insert("education.enrolment");
            d.schools.push(h.agency.clone());
        }
    }
    let nothing = d.given_name.is_none()
        && d.family_name.is_none()
        && d.birth_date.is_none()
        && d.sex.is_none()
        && d.schools.is_empty()
        && d.district.is_none();
    (!nothing).then_some(d)
}

fn parse(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<(Search, Purpose, Value), Error> {
    let value = validated(body, |v| gw.schemas.search_errors(v), "search")?;
    let mut terms = value.clone();
    if let Some(t) = terms.as_object_mut() {
        t.remove("purpose");
    }
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let purpose = super::view::purpose(text("purpose"))?;
    let mut q = Search::default();
    if let Some(n) = text("nhs_number") {
        q.nhs_number = Some(
            NhsNumber::parse(n).map_err(|e| Error::unprocessable("/nhs_number", e.to_string()))?,
        );
    }
    if let Some(u) = text("upn") {
        q.upn = Some(Upn::parse(u).map_err(|e| Error::unprocessable("/upn", e.to_string()))?);
    }
    if let Some(l) = value.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        gw.own_source(who, &part("source"), "/local_id/source")?;
        q.local_id = Some((part("source"), part("id")));
    }
    let demographics = weft_adapters::Demographics {
        given_name: text("given_name").map(String::from),
        family_name: text("family_name").map(String::from),
        birth_date: text("birth_date").map(String::from),
        sex: text("sex").map(String::from),
        postcode: text("postcode").map(String::from),
        ..weft_adapters::Demographics::default()
    };
    if demographics != weft_adapters::Demographics::default() {
        q.demographics = Some(demographics);
    }
    q.certain_only = value
        .get("certain_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((q, purpose, terms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::domain::Role;
    use crate::pipeline::authorise::testing::{
        arb_purpose, arb_relationship, arb_viewer, default_policy_blocking, shape,
    };
    use crate::pipeline::resolve::linkage::Grade;
    use proptest::prelude::*;
    use weft_adapters::Demographics;

    const KINDS: [AgencyKind; 4] = [
        AgencyKind::Education,
        AgencyKind::SocialCare,
        AgencyKind::Health,
        AgencyKind::Police,
    ];

    fn demographics(marker: &str, n: usize) -> Demographics {
        Demographics {
            given_name: Some(format!("{marker}-GIVEN-{n}")),
            family_name: Some(format!("{marker}-FAMILY-{n}")),
            birth_date: Some(format!("{marker}-BORN-{n}")),
            sex: Some(format!("{marker}-SEX-{n}")),
            ..Demographics::default()
        }
    }

    /// A child with a restricted health record and a school record with a postcode: the
    /// district reaches a DSL only while the child is not restricted, never a teacher (no
    /// `identity.contact`), and a health practitioner giving direct care (whom policy names for
    /// `restricted.contact`) only as the district; when nothing else is visible the restricted
    /// child's entry is the one a child without a postcode has.
    #[test]
    fn the_district_follows_contact_and_the_restriction() {
        let policy = default_policy_blocking();
        let held = |school_postcode: Option<&str>, health_postcode: Option<&str>| {
            vec![
                Held {
                    kind: AgencyKind::Health,
                    agency: "Trust".into(),
                    demographics: Demographics {
                        given_name: Some("Amy".into()),
                        postcode: health_postcode.map(String::from),
                        ..Demographics::default()
                    },
                },
                Held {
                    kind: AgencyKind::Education,
                    agency: "Hill School".into(),
                    demographics: Demographics {
                        given_name: Some("Amy".into()),
                        postcode: school_postcode.map(String::from),
                        ..Demographics::default()
                    },
                },
            ]
        };
        let details = |role: Role,
                       agency: &str,
                       kind: AgencyKind,
                       purpose: Purpose,
                       restricted,
                       held: &[Held]| {
            let who = Principal {
                user: "u".into(),
                agency: agency.into(),
                agency_kind: kind,
                role,
                client: None,
            };
            let permits = |c: &str| permitted(&policy, &who, purpose, c);
            let mut categories = BTreeSet::new();
            let d = distinguish(&permits, held, restricted, &mut categories);
            (serde_json::to_value(&d).unwrap(), categories)
        };
        let with = held(Some("wt3 5qp"), None);
        let dsl = |restricted, held: &[Held]| {
            details(
                Role::Dsl,
                "urn-200002",
                AgencyKind::Education,
                Purpose::Safeguarding,
                restricted,
                held,
            )
        };
        let (open, categories) = dsl(false, &with);
        assert_eq!(open["district"], "WT3", "{open}");
        assert!(categories.contains("identity.contact"));
        assert!(!open.to_string().contains("5QP") && !open.to_string().contains("5qp"));
        let (closed, categories) = dsl(true, &with);
        assert!(closed.get("district").is_none(), "{closed}");
        assert!(!categories.contains("identity.contact"));
        // The restricted child reads as the same child with no postcode recorded.
        let (none, _) = dsl(false, &held(None, None));
        assert_eq!(closed, none);
        // A teacher never sees the district: policy gives them no `identity.contact`.
        let (teacher, _) = details(
            Role::Teacher,
            "urn-200002",
            AgencyKind::Education,
            Purpose::Safeguarding,
            false,
            &with,
        );
        assert!(teacher.get("district").is_none(), "{teacher}");
        // Direct care, named for `restricted.contact`: the district of the health record even
        // for a restricted child, and only the district.
        let health = held(Some("WT3 5QP"), Some("WT9 1AB"));
        let (nurse, _) = details(
            Role::HealthPractitioner,
            "trust",
            AgencyKind::Health,
            Purpose::DirectCare,
            true,
            &health,
        );
        assert_eq!(nurse["district"], "WT9", "{nurse}");
        assert!(!nurse.to_string().contains("1AB"));
        let (nurse, _) = details(
            Role::HealthPractitioner,
            "trust",
            AgencyKind::Health,
            Purpose::Safeguarding,
            true,
            &health,
        );
        assert!(
            nurse.get("district").is_none(),
            "safeguarding is not named: {nurse}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever the searcher's role, agency, purpose and relationship with the child, and
        /// whatever of it the index holds that they may see: adding what they may not — the
        /// demographics of a record whose `identity.core` is withheld from them, whole records
        /// in sources whose kind they may not know of, postcodes where `identity.contact` is
        /// withheld, and a restriction with the postcodes it holds back (the restricted child
        /// set beside the same child unrestricted with no postcode recorded) — leaves the
        /// search's answer the same shape once values are placeholders, and none of the added
        /// values, nor the hidden agencies' names, appears. A postcode the searcher may see
        /// does show as its district.
        #[test]
        fn a_search_has_one_shape_whether_or_not_withheld_data_exists(
            (role, agency, kind) in arb_viewer(),
            purpose in arb_purpose(),
            relationship in arb_relationship(),
            present in proptest::collection::vec(any::<bool>(), 4..=4),
            elsewhere in proptest::collection::vec(any::<bool>(), 4..=4),
            matched_on in proptest::sample::select(vec!["nhs_number", "upn", "local_id", "demographics"]),
            restricted in any::<bool>(),
        ) {
            let policy = default_policy_blocking();
            let who = Principal { user: "searcher".into(), agency: agency.into(), agency_kind: kind, role, client: None };
            let permits = |category: &str| permitted(&policy, &who, purpose, category);
            let found = Found {
                id: "child".into(),
                matched_on,
                grade: Grade::Certain,
                probability: 1.0,
                explanation: Vec::new(),
            };
            // Whether a postcode of a record they may know of reaches them as a district, the
            // child restricted or not: the restriction is what the withheld data adds.
            let located = permits("identity.contact")
                && (!restricted || permits(RESTRICTED_CONTACT));
            let build = |with_withheld: bool| {
                let mut held = Vec::new();
                for (n, k) in KINDS.iter().enumerate() {
                    let known = permits(known_category(*k));
                    let identity = known && permits("identity.core");
                    if present[n] && known {
                        let mut demographics = if identity {
                            demographics("SHOWN", n)
                        } else if with_withheld {
                            demographics("SECRET", n)
                        } else {
                            Demographics::default()
                        };
                        // A district `WT<n>` may be shown; `ZZ<n>` never may.
                        demographics.postcode = if located {
                            Some(format!("WT{n} 1AA"))
                        } else if with_withheld {
                            Some(format!("ZZ{n} 9ZZ"))
                        } else {
                            None
                        };
                        held.push(Held { kind: *k, agency: format!("AGENCY-{n}"), demographics });
                    }
                    if with_withheld && (elsewhere[n] || !present[n]) && !known {
                        let mut demographics = demographics("SECRET", n);
                        demographics.postcode = Some(format!("ZZ{n} 9ZZ"));
                        held.push(Held {
                            kind: *k,
                            agency: format!("HIDDEN-AGENCY-{n}"),
                            demographics,
                        });
                    }
                }
                let mut categories = BTreeSet::new();
                let hit = hit(&found, relationship.clone());
                let shown: BTreeMap<String, Distinguishing> = if hit.access == "granted" {
                    distinguish(&permits, &held, with_withheld && restricted, &mut categories)
                        .map(|d| (found.id.clone(), d))
                        .into_iter()
                        .collect()
                } else {
                    BTreeMap::new()
                };
                serde_json::to_value(SearchResult { children: vec![hit], shown }).unwrap()
            };
            let without = build(false);
            let with = build(true);
            prop_assert_eq!(shape(&without), shape(&with), "{:?}/{}/{:?}", role, agency, purpose);
            let body = with.to_string();
            prop_assert!(!body.contains("SECRET") && !body.contains("HIDDEN-AGENCY"), "{}", body);
            prop_assert!(!body.contains("ZZ"), "a withheld postcode's district: {}", body);
            if relationship.is_empty() {
                prop_assert!(!body.contains("SHOWN") && !body.contains("AGENCY-"), "{}", body);
                prop_assert!(!body.contains("district"), "{}", body);
            } else {
                // A postcode they may see is shown, as its district only.
                let first = KINDS
                    .iter()
                    .enumerate()
                    .find(|(n, k)| present[*n] && permits(known_category(**k)))
                    .map(|(n, _)| format!("WT{n}"));
                let district = with["shown"]["child"]["district"].as_str().map(String::from);
                prop_assert_eq!(district, first.filter(|_| located), "{}", body);
                prop_assert!(!body.contains("1AA"), "{}", body);
            }
        }
    }
}
