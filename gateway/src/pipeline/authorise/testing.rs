//! What the property tests of every response share: the shipped policy, the generators of
//! who is asking (role, agency, purpose, relationship, consents), and a response's shape. The
//! view's, the search's, the concern's and the inbox's tests all draw from here, so "the same
//! shape whatever is withheld" means the same thing for each.

use std::path::PathBuf;

use chrono::NaiveDate;
use proptest::prelude::*;

use super::consent::{Consent, ConsentStatus, Grantor, Period, Provision};
use super::relate::Relationship;
use super::Policy;
use crate::foundation::config::AgencyKind;
use crate::foundation::domain::{Purpose, Role, CATEGORIES};

/// A path in the repository.
pub fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// The shipped policy (`policies/`).
pub async fn default_policy() -> Policy {
    Policy::load(
        &repo("policies/model.conf"),
        &repo("policies/policy.csv"),
        None,
    )
    .await
    .expect("default policy loads")
}

/// [`default_policy`], for a synchronous test (a proptest body).
pub fn default_policy_blocking() -> Policy {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(default_policy())
}

/// A response with every value, time and id replaced by a placeholder: its shape. Two
/// responses of one shape have the same keys, nested the same way, and arrays of the same
/// lengths.
pub fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::String("_".into()),
    }
}

/// The agencies a viewer may belong to: two schools (one with its own agreement), social
/// care, health and police.
pub const AGENCIES: &[(&str, AgencyKind)] = &[
    ("urn-100001", AgencyKind::Education),
    ("urn-200002", AgencyKind::Education),
    ("la", AgencyKind::SocialCare),
    ("trust", AgencyKind::Health),
    ("force", AgencyKind::Police),
];

/// Any role at any agency.
pub fn arb_viewer() -> impl Strategy<Value = (Role, &'static str, AgencyKind)> {
    (
        proptest::sample::select(Role::ALL.to_vec()),
        proptest::sample::select(AGENCIES.to_vec()),
    )
        .prop_map(|(role, (agency, kind))| (role, agency, kind))
}

/// Any purpose of use.
pub fn arb_purpose() -> impl Strategy<Value = Purpose> {
    proptest::sample::select(Purpose::ALL.to_vec())
}

/// Up to two relationships with the child, or none.
pub fn arb_relationship() -> impl Strategy<Value = Vec<Relationship>> {
    proptest::sample::subsequence(
        vec![
            "school_roll",
            "allocated_worker",
            "referral",
            "mash_triage",
            "break_glass",
        ],
        0..3,
    )
    .prop_map(|kinds| {
        kinds
            .into_iter()
            .map(|k| Relationship {
                kind: k.to_string(),
                via: "via".into(),
                explanation: "why".into(),
            })
            .collect()
    })
}

/// A consent decision on the register: active, withdrawn or refused, for a few categories,
/// purposes and (or any) agencies.
pub fn arb_consent() -> impl Strategy<Value = Consent> {
    (
        prop_oneof![
            Just(ConsentStatus::Active),
            Just(ConsentStatus::Withdrawn),
            Just(ConsentStatus::Refused)
        ],
        proptest::sample::subsequence(CATEGORIES.to_vec(), 1..4),
        proptest::sample::subsequence(Purpose::ALL.to_vec(), 1..3),
        proptest::option::of(proptest::sample::select(vec!["la", "urn-100001", "trust"])),
        0u32..100,
    )
        .prop_map(|(status, cats, purposes, actor, n)| Consent {
            id: format!("c{n}"),
            child: "child".into(),
            status,
            grantor: Grantor {
                relationship: "parental_responsibility".into(),
                name: "parent".into(),
            },
            period: Period {
                start: NaiveDate::from_ymd_opt(2020, 1, 1).expect("a date"),
                end: None,
            },
            provision: vec![Provision {
                purpose: purposes,
                category: cats.into_iter().map(String::from).collect(),
                actor: actor.into_iter().map(String::from).collect(),
            }],
            recorded_by: "sw".into(),
            recorded_at: format!("2026-01-{:02}", n % 28 + 1),
            updated_at: format!("2026-01-{:02}", n % 28 + 1),
            withdrawn_reason: None,
        })
}
