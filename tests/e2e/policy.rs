//! Consent, break-glass, policy reload and `weft policy check` against the running gateway.

use std::time::Duration;

use serde_json::{json, Value};
use weft_sim::population::System;

use crate::harness::{run_weft, Env, Gateway};

/// A category as the view lists it: every category the role's policy could ever show, whatever
/// the sources hold.
fn category<'a>(view: &'a Value, cat: &str) -> &'a Value {
    view["categories"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["category"] == cat))
        .unwrap_or_else(|| panic!("{cat} in {view}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_given_withdrawn_and_refused() {
    let env = Env::new(6).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    let early_help = format!("/v1/children/{id}?purpose=early_help");

    // Early help needs consent: none recorded yet.
    let (_, view) = gw.get(&early_help, &sw).await;
    let att = category(&view, "education.attendance");
    assert_eq!(
        (att["status"].as_str(), att["reason"].as_str()),
        (Some("not_available"), Some("consent_required"))
    );
    assert!(view["fields"].get("education.attendance").is_none());

    // Invalid consent: 400 naming the field, nothing recorded.
    let (status, body) = gw
        .post(
            &format!("/v1/children/{id}/consents"),
            &sw,
            &json!({"resourceType": "Consent", "status": "maybe"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["pointer"] == "/status"),
        "{body}"
    );

    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "grantor": {"relationship": "parental_responsibility", "name": "A parent"},
        "period": {"start": "2020-01-01"},
        "provision": [{"purpose": ["early_help"], "category": ["education.*", "identity.*"], "actor": [la]}]
    });
    let (status, created) = gw
        .post(&format!("/v1/children/{id}/consents"), &sw, &consent)
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, view) = gw.get(&early_help, &sw).await;
    assert_eq!(
        category(&view, "education.attendance")["status"],
        "shown",
        "{view}"
    );
    assert!(view["fields"]["education.attendance"].is_object());
    assert!(view["lawful_basis"]
        .as_array()
        .expect("basis")
        .iter()
        .any(|b| b["code"] == "6a"));

    // Withdrawn: withheld on the very next request.
    let cid = created["id"].as_str().expect("id");
    let (status, body) = gw
        .post(
            &format!("/v1/children/{id}/consents/{cid}/withdraw"),
            &sw,
            &json!({"reason": "family asked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = gw.get(&early_help, &sw).await;
    assert_eq!(
        category(&view, "education.attendance")["reason"],
        "consent_withdrawn"
    );
    assert!(view["fields"].get("education.attendance").is_none());

    // Refused: withheld for early help, still shown for safeguarding.
    let mut refusal = consent.clone();
    refusal["status"] = json!("refused");
    assert_eq!(
        gw.post(&format!("/v1/children/{id}/consents"), &sw, &refusal)
            .await
            .0,
        201
    );
    let (_, view) = gw.get(&early_help, &sw).await;
    assert_eq!(
        category(&view, "education.attendance")["reason"],
        "consent_refused"
    );
    let (_, view) = gw
        .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(category(&view, "education.attendance")["status"], "shown");

    // Every change is audited.
    let ig = env.token("ig-1", &la, "ig_officer");
    let (_, entries) = gw.get(&format!("/v1/audit?child={id}"), &ig).await;
    let actions: Vec<&str> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "consent_record").count(),
        3,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "consent_withdraw").count(),
        1,
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_within_expiry_never_for_unbreakable_and_reviewed() {
    let env = Env::new(6).await;
    let text = format!("{}\n[break_glass]\nttl_secs = 3\n", env.config(false));
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    // The Eleanor Thompson child holds a sensitive (CAMHS) flag in health.
    let child = env.partners.population.probabilistic_only().expect("child");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    let health = env.partners.source_id(System::Health);
    let teacher = env.token("teacher-9", "urn-200002", "teacher");
    let path = format!("/v1/children/{id}?purpose=safeguarding");

    // A teacher at another school has no relationship with the child: nothing is shown.
    let (status, before) = gw.get(&path, &teacher).await;
    assert_eq!(status, 403, "{before}");
    assert!(before.get("fields").is_none() && before.get("sources").is_none());

    let (status, body) = gw
        .post(
            &format!("/v1/children/{id}/break-glass"),
            &teacher,
            &json!({"purpose": "safeguarding", "justification": "short"}),
        )
        .await;
    assert_eq!(status, 400, "a justification must be written: {body}");
    let (status, grant) = gw
        .post(
            &format!("/v1/children/{id}/break-glass"),
            &teacher,
            &json!({"purpose": "safeguarding", "justification": "Child collapsed in class; need GP details for paramedics"}),
        )
        .await;
    assert_eq!(status, 201, "{grant}");

    let (_, during) = gw.get(&path, &teacher).await;
    let reg = category(&during, "health.registration");
    assert_eq!(
        (reg["status"].as_str(), reg["reason"].as_str()),
        (Some("shown"), Some("break_glass")),
        "{reg}"
    );
    assert_eq!(reg["break_glass"], grant["id"]);
    assert_eq!(during["relationship"][0]["kind"], "break_glass", "{during}");
    assert!(
        during["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .any(|s| s["source"] == health.as_str() && s["status"] == "shown"),
        "the grant released health.known and the registration: {during}"
    );
    // Never-breakable: not released, and not even listed, since this role can never see it.
    assert!(
        !during["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .any(|c| c["category"] == "health.sensitive"),
        "{during}"
    );
    assert!(during["fields"].get("health.sensitive").is_none());

    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, after) = gw.get(&path, &teacher).await;
    assert_eq!(status, 403, "expired: {after}");

    // The grant and its use wait in the IG officer's queue; a review takes it out.
    let ig = env.token("ig-1", &env.agency_of("social_care"), "ig_officer");
    let (status, queue) = gw.get("/v1/ig/break-glass", &ig).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue.as_array().expect("queue").len(), 1);
    // The review shows what was viewed under the grant.
    let viewed = &queue[0]["viewed"];
    assert_eq!(viewed.as_array().map(Vec::len), Some(1), "{queue}");
    assert!(
        viewed[0]["released"]
            .as_array()
            .expect("released")
            .iter()
            .any(|c| c == "health.registration"),
        "{queue}"
    );
    assert_eq!(gw.get("/v1/ig/break-glass", &teacher).await.0, 403);
    let gid = grant["id"].as_str().expect("id");
    let (status, reviewed) = gw
        .post(
            &format!("/v1/ig/break-glass/{gid}/review"),
            &ig,
            &json!({"outcome": "justified", "notes": "medical emergency"}),
        )
        .await;
    assert_eq!(status, 200, "{reviewed}");
    assert_eq!(gw.get("/v1/ig/break-glass", &ig).await.1, json!([]));
    let (_, entries) = gw
        .get(&format!("/v1/audit?child={id}&user=teacher-9"), &ig)
        .await;
    assert!(
        entries
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["outcome"] == "break_glass"),
        "{entries}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_policy_on_reload_keeps_the_old_one() {
    let env = Env::new(4).await;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = env.dir.path().join("model.conf");
    let policy = env.dir.path().join("policy.csv");
    std::fs::copy(repo.join("policies/model.conf"), &model).expect("copy model");
    // Routing rules are read from beside the policy.
    std::fs::copy(
        repo.join("policies/routing.toml"),
        env.dir.path().join("routing.toml"),
    )
    .expect("copy routing");
    let original = std::fs::read_to_string(repo.join("policies/policy.csv")).expect("policy");
    std::fs::write(&policy, &original).expect("write policy");
    let text = env
        .config(false)
        .replace(
            &repo.join("policies/model.conf").display().to_string(),
            &model.display().to_string(),
        )
        .replace(
            &repo.join("policies/policy.csv").display().to_string(),
            &policy.display().to_string(),
        );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let admin = env.token("admin-1", &env.agency_of("social_care"), "data_admin");
    let ask = json!({"role": "social_worker", "agency": env.agency_of("social_care"),
                     "category": "education.attendance", "purpose": "safeguarding"});
    let rule = |v: &Value| v["rule"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        rule(&gw.post("/v1/policy/explain", &admin, &ask).await.1),
        "SW-SG-EDUCATION"
    );

    std::fs::write(
        &policy,
        format!("{original}\np, janitor, *, *, *, *, allow, -, BAD, 6e\n"),
    )
    .expect("break");
    let refused = wait_for(&gw, &admin, |r| r["policy"]["refused"].is_string()).await;
    assert!(
        refused["policy"]["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("janitor"),
        "{refused}"
    );
    assert_eq!(
        rule(&gw.post("/v1/policy/explain", &admin, &ask).await.1),
        "SW-SG-EDUCATION",
        "old policy in force"
    );

    let changed = original.replace("SW-SG-EDUCATION", "SW-SG-EDUCATION-V2");
    std::fs::write(&policy, changed).expect("fix");
    wait_for(&gw, &admin, |r| r["policy"]["refused"].is_null()).await;
    assert_eq!(
        rule(&gw.post("/v1/policy/explain", &admin, &ask).await.1),
        "SW-SG-EDUCATION-V2"
    );
}

async fn wait_for(gw: &Gateway, admin: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (status, r) = gw.get("/v1/status", admin).await;
        assert_eq!(status, 200, "{r}");
        if ok(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/v1/status never reached the expected policy state");
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_check_agrees_with_the_server() {
    let env = Env::new(2).await;
    let config = env.write_config("weft.toml", &env.config(false));
    let gw = Gateway::start(&env, config.clone()).await;
    let admin = env.token("admin-1", &env.agency_of("social_care"), "data_admin");
    let mut lines = Vec::new();
    let agencies: Vec<String> = env.partners.agencies.iter().map(|a| a.id.clone()).collect();
    let mut n = 0usize;
    for role in weft::foundation::domain::Role::ALL {
        for cat in weft::foundation::domain::CATEGORIES {
            for purpose in weft::foundation::domain::Purpose::ALL {
                n += 1;
                // A deterministic spread over agencies keeps the request count modest.
                if n % 3 != 0 {
                    continue;
                }
                let agency = &agencies[n % agencies.len()];
                lines.push(json!({"role": role.as_str(), "agency": agency, "category": cat, "purpose": purpose.as_str()}));
            }
        }
    }
    lines.push(json!({"role": "janitor", "agency": agencies[0], "category": "identity.core", "purpose": "audit"}));
    let file = env.dir.path().join("questions.jsonl");
    std::fs::write(
        &file,
        lines
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("write");
    let (code, out, err) = run_weft(&[
        "policy",
        "check",
        "-c",
        config.to_str().expect("path"),
        file.to_str().expect("path"),
    ]);
    assert_eq!(code, 1, "one bad line makes the check fail: {err}");
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(answers.len(), lines.len());
    assert!(answers.last().expect("last")["error"]
        .as_str()
        .unwrap_or_default()
        .contains("/role"));
    for (q, a) in lines.iter().zip(&answers).take(lines.len() - 1) {
        let (status, server) = gw.post("/v1/policy/explain", &admin, q).await;
        assert_eq!(status, 200, "{server}");
        assert_eq!(server["effect"], a["effect"], "{q}");
        assert_eq!(server["rule"], a["rule"], "{q}");
        assert_eq!(server["lawful_basis"], a["lawful_basis"], "{q}");
    }
    let (code, out, err) = run_weft(&["policy", "lint", "-c", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy OK"), "{out}");
}
