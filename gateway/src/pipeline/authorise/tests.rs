use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use weft_adapters::Item;

use super::testing::{
    arb_consent, arb_purpose, arb_relationship, arb_viewer, default_policy, repo, shape,
};
use super::*;
use crate::foundation::domain::CATEGORIES;
use crate::pipeline::fanout::{Fetched, Outcome};
use crate::pipeline::merge::merge;
use crate::sources::Source;

fn q<'a>(
    role: Role,
    agency: &'a str,
    kind: AgencyKind,
    category: &'a str,
    purpose: Purpose,
) -> Question<'a> {
    Question {
        role,
        agency,
        kind,
        category,
        purpose,
    }
}

#[tokio::test]
async fn teachers_never_see_sensitive_health_and_it_is_unbreakable() {
    let p = default_policy().await;
    for &purpose in Purpose::ALL {
        for role in [Role::Teacher, Role::Dsl] {
            let d = p.decide(&q(
                role,
                "urn-100001",
                AgencyKind::Education,
                "health.sensitive",
                purpose,
            ));
            assert_eq!(d.effect, Effect::Deny);
            assert_eq!(d.rule, "NEVER-EDU-HEALTH-SENSITIVE");
            assert!(!d.breakable);
        }
    }
}

#[tokio::test]
async fn social_worker_safeguarding_sees_school_status_with_basis() {
    let p = default_policy().await;
    let d = p.decide(&q(
        Role::SocialWorker,
        "la",
        AgencyKind::SocialCare,
        "education.attendance",
        Purpose::Safeguarding,
    ));
    assert_eq!(d.effect, Effect::Permit);
    assert_eq!(d.rule, "SW-SG-EDUCATION");
    assert_eq!(d.basis, vec!["6e", "s18"]);
}

#[tokio::test]
async fn inheritance_consent_and_agency_overrides() {
    let p = default_policy().await;
    let d = p.decide(&q(
        Role::Dsl,
        "urn-1",
        AgencyKind::Education,
        "education.attendance",
        Purpose::Safeguarding,
    ));
    assert_eq!(
        d.rule, "TCH-SG-EDUCATION",
        "a DSL inherits the teacher's rules"
    );
    let d = p.decide(&q(
        Role::SocialWorker,
        "la",
        AgencyKind::SocialCare,
        "education.attendance",
        Purpose::EarlyHelp,
    ));
    assert_eq!(d.effect, Effect::PermitWithConsent);
    // Only the school with its own agreement lets its DSL see child-protection flags.
    let d = p.decide(&q(
        Role::Dsl,
        "urn-100001",
        AgencyKind::Education,
        "health.cp_flag",
        Purpose::Safeguarding,
    ));
    assert_eq!(d.rule, "URN100001-DSL-CP-FLAG");
    let d = p.decide(&q(
        Role::Dsl,
        "urn-200002",
        AgencyKind::Education,
        "health.cp_flag",
        Purpose::Safeguarding,
    ));
    assert_eq!(d, Decision::default_deny());
}

#[tokio::test]
async fn no_rule_and_unknown_category_deny() {
    let p = default_policy().await;
    let d = p.decide(&q(
        Role::DataAdmin,
        "la",
        AgencyKind::SocialCare,
        "identity.core",
        Purpose::Safeguarding,
    ));
    assert_eq!(d, Decision::default_deny());
    let d = p.decide(&q(
        Role::SocialWorker,
        "la",
        AgencyKind::SocialCare,
        "made.up",
        Purpose::Safeguarding,
    ));
    assert_eq!(d, Decision::default_deny());
}

#[tokio::test]
async fn lint_refuses_unknown_words() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo("policies/model.conf");
    for (bad, why) in [
        (
            "p, teacher, *, education, identity.core, safeguarding, maybe, -, X, 6e",
            "effect",
        ),
        (
            "p, janitor, *, education, identity.core, safeguarding, allow, -, X, 6e",
            "unknown role",
        ),
        (
            "p, teacher, *, schools, identity.core, safeguarding, allow, -, X, 6e",
            "agency kind",
        ),
        (
            "p, teacher, *, education, shoe.size, safeguarding, allow, -, X, 6e",
            "no known data category",
        ),
        (
            "p, teacher, *, education, identity.core, curiosity, allow, -, X, 6e",
            "unknown purpose",
        ),
        (
            "p, teacher, *, education, identity.core, safeguarding, allow, -, X, 7z",
            "lawful-basis",
        ),
        (
            "p, teacher, *, education, identity.core, safeguarding, allow, -, X, -",
            "must name its lawful basis",
        ),
        (
            "p, teacher, urn-9, education, identity.core, safeguarding, allow, -, X, 6e",
            "unknown agency",
        ),
        (
            "p, teacher, *, education, identity.core, safeguarding, allow, unbreakable, X, 6e",
            "condition",
        ),
        ("g, teacher, headteacher", "unknown role"),
    ] {
        let path = dir.path().join("policy.csv");
        std::fs::write(&path, format!("{bad}\n")).unwrap();
        let agencies = vec!["urn-1".to_string()];
        let err = match Policy::load(&model, &path, Some(&agencies)).await {
            Ok(_) => panic!("{bad} must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert!(Policy::load(&model, &dir.path().join("missing.csv"), None)
        .await
        .is_err());
}

/// Every question the default policy can be asked, answered by the compiled index and by
/// casbin's own enforcer: they must agree on effect, rule and basis.
#[tokio::test]
async fn compiled_policy_agrees_with_casbin_on_every_question() {
    let p = default_policy().await;
    let r = Reference::load(&repo("policies/model.conf"), &repo("policies/policy.csv"))
        .await
        .unwrap();
    let agencies: Vec<(String, AgencyKind)> = vec![
        ("urn-100001".into(), AgencyKind::Education),
        ("urn-200002".into(), AgencyKind::Education),
        ("la".into(), AgencyKind::SocialCare),
        ("trust".into(), AgencyKind::Health),
        ("force".into(), AgencyKind::Police),
    ];
    let questions: Vec<_> = policy::all_questions(&agencies).collect();
    let casbin: Vec<_> = questions.iter().map(|q| r.decide(q).unwrap()).collect();
    // Twice over: the second answer comes from the policy's memo.
    let mut n = 0;
    for round in 0..2 {
        for (question, want) in questions.iter().zip(&casbin) {
            assert_eq!(&p.decide(question), want, "round {round}: {question:?}");
            n += 1;
        }
    }
    assert_eq!(
        n,
        2 * agencies.len() * Role::ALL.len() * Purpose::ALL.len() * (CATEGORIES.len() + 1)
    );
}

fn arb_rule() -> impl Strategy<Value = String> {
    let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).chain(["*"]).collect();
    let kinds = vec!["*", "education", "social_care", "health", "police"];
    let cats: Vec<String> = CATEGORIES
        .iter()
        .map(|c| c.to_string())
        .chain([
            "*".into(),
            "health.*".into(),
            "education.*".into(),
            "identity.*".into(),
        ])
        .collect();
    let purposes: Vec<&str> = Purpose::ALL
        .iter()
        .map(|p| p.as_str())
        .chain(["*"])
        .collect();
    (
        proptest::sample::select(roles),
        proptest::sample::select(vec!["*", "a1", "a2"]),
        proptest::sample::select(kinds),
        proptest::sample::select(cats),
        proptest::sample::select(purposes),
        prop_oneof![
            Just(("allow", "-")),
            Just(("allow", "consent")),
            Just(("deny", "-")),
            Just(("deny", "unbreakable"))
        ],
        0u32..1000,
    )
        .prop_map(|(r, d, k, c, p, (e, cond), id)| {
            format!("p, {r}, {d}, {k}, {c}, {p}, {e}, {cond}, R{id}, 6e")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random policies (with inheritance, domains, wildcards and deny rules): the compiled
    /// index answers every question exactly as casbin does.
    #[test]
    fn random_policies_agree_with_casbin(
        rules in proptest::collection::vec(arb_rule(), 1..40),
        inherit in proptest::option::of((0usize..9, 0usize..9)),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("policy.csv");
            let mut text = rules.join("\n");
            if let Some((a, b)) = inherit {
                if a != b {
                    text.push_str(&format!("\ng, {}, {}", Role::ALL[a].as_str(), Role::ALL[b].as_str()));
                }
            }
            std::fs::write(&path, text).unwrap();
            let model = repo("policies/model.conf");
            let p = Policy::load(&model, &path, None).await.unwrap();
            let r = Reference::load(&model, &path).await.unwrap();
            // `a3` is named by no rule: its answers are remembered under the entry every agency
            // the policy does not name shares. Each question is asked twice, the second time
            // answered from the memo.
            let agencies = vec![
                ("a1".to_string(), AgencyKind::Education),
                ("a2".to_string(), AgencyKind::Health),
                ("a3".to_string(), AgencyKind::Education),
            ];
            let questions: Vec<_> = policy::all_questions(&agencies).collect();
            let casbin: Vec<_> = questions.iter().map(|q| r.decide(q).unwrap()).collect();
            for _ in 0..2 {
                for (question, want) in questions.iter().zip(&casbin) {
                    prop_assert_eq!(&p.decide(question), want, "{:?}", question);
                }
            }
            Ok(())
        })?;
    }
}

fn source(id: &str, kind: AgencyKind) -> Arc<Source> {
    Arc::new(Source::for_tests(id, kind, Duration::from_secs(1)))
}

/// A marker value no test data would contain by chance, per category and field.
fn secret(cat: &str, field: &str, n: usize) -> String {
    format!("SECRET-{cat}-{field}-{n}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the role, agency, purpose, consents and source data: no value of a withheld
    /// category, and no redacted field of a restricted record, appears anywhere in the
    /// serialised view.
    #[test]
    fn withheld_values_never_appear_in_the_response(
        (role, agency, kind) in arb_viewer(),
        purpose in arb_purpose(),
        consents in proptest::collection::vec(arb_consent(), 0..4),
        data in proptest::collection::vec(
            (0usize..4, proptest::sample::subsequence(CATEGORIES.to_vec(), 1..8), any::<bool>()), 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let policy = rt.block_on(default_policy());
        let consents = crate::pipeline::authorise::consent::Consents::new(consents);
        let kinds = [AgencyKind::Education, AgencyKind::SocialCare, AgencyKind::Health, AgencyKind::Police];
        let mut fetched = Vec::new();
        for (n, (src, cats, restricted)) in data.iter().enumerate() {
            let mut items: Vec<Item> = Vec::new();
            for cat in cats {
                items.push(Item::new(*cat, "value", secret(cat, "value", n)));
                if *cat == "identity.contact" {
                    items.push(Item::new(*cat, "address", secret(cat, "address", n)));
                }
            }
            if *restricted {
                items.push(Item::new("identity.core", "restricted", true));
            }
            fetched.push(Fetched {
                source: source(&format!("s{src}"), kinds[*src]),
                fetched_at: Utc::now(),
                outcome: Outcome::Records(vec![(format!("r{n}"), items)]),
            });
        }
        let ctx = Context { policy: &policy, role, agency, kind, purpose, consents: &consents, grant: None };
        let judged = judge(&ctx, fetched);
        let (view, _) = merge("child", purpose, Vec::new(), &listed_categories(&ctx), judged);
        let body = serde_json::to_string(&view).unwrap();
        let permitted = |cat: &str| {
            let d = policy.decide(&Question { role, agency, kind, category: cat, purpose });
            let state = consents.state(cat, agency, purpose);
            match d.effect {
                Effect::Permit => true,
                Effect::PermitWithConsent => state == crate::pipeline::authorise::consent::ConsentState::Given,
                Effect::Deny => false,
            }
        };
        // A restriction from any source restricts the child in every source.
        let restricted = data.iter().any(|(_, _, r)| *r);
        for (n, (src, cats, marker)) in data.iter().enumerate() {
            let known = permitted(known_category(kinds[*src]));
            let any_shown = cats.iter().any(|c| permitted(c)) || (*marker && permitted("identity.core"));
            prop_assert_eq!(body.contains(&format!("\"r{n}\"")), known && any_shown,
                "record id r{} goes with its record", n);
            for cat in cats {
                let shown = known && permitted(cat);
                let value = secret(cat, "value", n);
                prop_assert_eq!(body.contains(&value), shown, "{} for {:?}/{}/{:?}", cat, role, agency, purpose);
                if *cat == "identity.contact" && shown {
                    let contact = policy.decide(&Question { role, agency, kind, category: "restricted.contact", purpose });
                    let address_visible = !restricted || contact.effect == Effect::Permit;
                    prop_assert_eq!(body.contains(&secret(cat, "address", n)), address_visible);
                }
            }
        }
    }
}

#[tokio::test]
async fn break_glass_passes_breakable_denials_only() {
    let policy = default_policy().await;
    let consents = crate::pipeline::authorise::consent::Consents::new(Vec::new());
    let grant = crate::pipeline::authorise::grants::Grant {
        id: "g1".into(),
        user: "t".into(),
        agency: "urn-100001".into(),
        role: "teacher".into(),
        child: "child".into(),
        purpose: Purpose::Safeguarding,
        justification: "x".repeat(20),
        granted_at: Utc::now(),
        expires_at: Utc::now(),
        review: None,
        viewed: Vec::new(),
    };
    let items = vec![
        Item::new("health.sensitive", "flags", "SECRET-FLAG"),
        Item::new("health.registration", "gp", "GP-PRACTICE"),
    ];
    let fetched = vec![Fetched {
        source: source("health", AgencyKind::Health),
        fetched_at: Utc::now(),
        outcome: Outcome::Records(vec![("r1".into(), items)]),
    }];
    let ctx = Context {
        policy: &policy,
        role: Role::Teacher,
        agency: "urn-100001",
        kind: AgencyKind::Education,
        purpose: Purpose::Safeguarding,
        consents: &consents,
        grant: Some(&grant),
    };
    let listed = listed_categories(&ctx);
    let (view, disclosure) = merge(
        "child",
        Purpose::Safeguarding,
        Vec::new(),
        &listed,
        judge(&ctx, fetched),
    );
    let body = serde_json::to_string(&view).unwrap();
    assert!(
        !body.contains("SECRET-FLAG"),
        "never-breakable stays withheld"
    );
    assert!(
        body.contains("GP-PRACTICE"),
        "a default denial is passed by the grant"
    );
    assert_eq!(
        disclosure
            .break_glass
            .get("health.registration")
            .map(String::as_str),
        Some("g1")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the role, agency, purpose, relationship, consents and the data this viewer may
    /// see: adding data the viewer may not see — withheld categories in the sources they may
    /// know of, and whole records in the sources they may not — leaves the view's shape
    /// unchanged once values, times and ids are placeholders, and none of the added values or
    /// record ids appears.
    #[test]
    fn a_view_has_one_shape_whether_or_not_withheld_data_exists(
        (role, agency, kind) in arb_viewer(),
        purpose in arb_purpose(),
        consents in proptest::collection::vec(arb_consent(), 0..4),
        relationship in arb_relationship(),
        present in proptest::collection::vec(
            (proptest::sample::subsequence(CATEGORIES.to_vec(), 0..8), any::<bool>()), 4..=4),
        extra in proptest::collection::vec(proptest::sample::subsequence(CATEGORIES.to_vec(), 1..8), 4..=4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let policy = rt.block_on(default_policy());
        let consents = crate::pipeline::authorise::consent::Consents::new(consents);
        let kinds = [AgencyKind::Education, AgencyKind::SocialCare, AgencyKind::Health, AgencyKind::Police];
        let ctx = Context { policy: &policy, role, agency, kind, purpose, consents: &consents, grant: None };
        let shown = |cat: &str| category_decision(&ctx, cat).shown();
        // Without: each source holds the viewer's permitted categories (or nothing). With: the
        // same, plus withheld categories in known sources and a record in unknown ones.
        let build = |with_withheld: bool| {
            let mut fetched = Vec::new();
            for (n, ((cats, held), more)) in present.iter().zip(&extra).enumerate() {
                let known = shown(known_category(kinds[n]));
                let mut items: Vec<Item> = Vec::new();
                if known {
                    for cat in cats.iter().filter(|c| shown(c)) {
                        items.push(Item::new(*cat, "value", format!("SHOWN-{cat}-{n}")));
                    }
                }
                let mut records = Vec::new();
                if *held && known {
                    records.push((format!("rec-{n}"), items));
                }
                if with_withheld {
                    let hidden: Vec<Item> = more
                        .iter()
                        .filter(|c| !known || !shown(c))
                        .map(|c| Item::new(*c, "value", secret(c, "value", n)))
                        .collect();
                    if !hidden.is_empty() {
                        match records.first_mut() {
                            Some((_, items)) if known => items.extend(hidden),
                            _ => records.push((format!("HIDDEN-REC-{n}"), hidden)),
                        }
                    }
                }
                fetched.push(Fetched {
                    source: source(&format!("s{n}"), kinds[n]),
                    fetched_at: Utc::now(),
                    outcome: if records.is_empty() { Outcome::NoRecord } else { Outcome::Records(records) },
                });
            }
            let (view, _) = merge("child", purpose, relationship.clone(), &listed_categories(&ctx), judge(&ctx, fetched));
            serde_json::to_value(&view).unwrap()
        };
        let without = build(false);
        let with = build(true);
        prop_assert_eq!(shape(&without), shape(&with), "{:?}/{}/{:?}", role, agency, purpose);
        let body = with.to_string();
        prop_assert!(!body.contains("SECRET-") && !body.contains("HIDDEN-REC-"), "{}", body);
    }
}
