//! Probabilistic identity matching in the running gateway: the police record of the simulated
//! child that has no NHS number and a misspelt surname links by demographics, with its score
//! and reasons; with an upper threshold nobody can reach it goes to the review queue instead,
//! and a data administrator's decision links it.

use serde_json::{json, Value};
use weft_sim::population::{self, System};

use crate::harness::{Env, Gateway};

fn police_link<'a>(links: &'a Value, source: &str, local_id: &str) -> Option<&'a Value> {
    links["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["source"] == source && l["local_id"] == local_id && l["status"] == "active")
}

#[tokio::test(flavor = "multi_thread")]
async fn misspelt_record_without_nhs_number_links_by_demographics() {
    let env = Env::new(30).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let admin = env.token("admin-1", &la, "data_admin");
    let child = env
        .partners
        .population
        .probabilistic_only()
        .expect("the probabilistic-only child");
    let police = child.identity(System::Police).expect("police record");
    assert!(police.nhs_number.is_none() && police.family_name != child.truth.family_name);
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;

    let (status, links) = gw.get(&format!("/v1/children/{id}/links"), &admin).await;
    assert_eq!(status, 200, "{links}");
    let source = env.partners.source_id(System::Police);
    let link = police_link(&links, &source, &police.local_id).expect("police record linked");
    assert_eq!(link["method"], "probabilistic", "{link}");
    assert!(
        link["probability"].as_f64().expect("probability") >= 0.95,
        "{link}"
    );
    assert!(link["model_version"]
        .as_str()
        .expect("model version")
        .starts_with("fs-"));
    let family = link["explanation"]
        .as_array()
        .expect("explanation")
        .iter()
        .find(|e| e["comparison"] == "family_name")
        .expect("family name compared");
    assert_ne!(family["level"], "exact", "{family}");

    // Link history is for data administrators and IG officers.
    let (status, _) = gw.get(&format!("/v1/children/{id}/links"), &sw).await;
    assert_eq!(status, 403);

    // The matcher's link is in the audit chain, under its own name, with its score.
    let ig = env.token("ig-1", &la, "ig_officer");
    let (status, entries) = gw.get("/v1/audit?user=matcher&limit=1000", &ig).await;
    assert_eq!(status, 200, "{entries}");
    let entry = entries
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["detail"]["link"] == link["id"])
        .expect("the police link's audit entry");
    assert_eq!(
        (&entry["action"], &entry["outcome"], &entry["child"]),
        (&json!("match_link"), &json!("linked"), &json!(id)),
        "{entry}"
    );
    assert_eq!(entry["detail"]["probability"], link["probability"]);
    assert_eq!(entry["detail"]["model_version"], link["model_version"]);

    // A search by the police record's demographics finds the child. Without a relationship it
    // says only that the child matches and how access is gained; with one (a referral to the
    // social worker's agency), graded and explained.
    let search = json!({
        "purpose": "safeguarding",
        "given_name": police.given_name,
        "family_name": police.family_name,
        "birth_date": police.birth_date.to_string(),
        "certain_only": true,
    });
    let (status, body) = gw.post("/v1/children/search", &sw, &search).await;
    assert_eq!(status, 200, "{body}");
    let first = &body["children"][0];
    assert_eq!(first["id"], id.as_str(), "{body}");
    assert_eq!(first["access"], "no_relationship", "{body}");
    assert!(first.get("match").is_none(), "{body}");
    assert!(first["how_to_gain_access"]
        .as_str()
        .is_some_and(|h| h.contains("break-glass")));
    gw.refer(&env, &child.truth.nhs_number).await;
    let (status, body) = gw.post("/v1/children/search", &sw, &search).await;
    assert_eq!(status, 200, "{body}");
    let first = &body["children"][0];
    assert_eq!(first["access"], "granted", "{body}");
    assert_eq!(first["relationship"][0]["kind"], "referral", "{body}");
    assert_eq!(first["match"]["grade"], "certain");
    assert_eq!(first["matched_on"], "demographics");
    assert!(first["match"]["explanation"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn review_queue_and_a_data_administrators_decision() {
    let env = Env::new(30).await;
    // No probability reaches 1, so every demographic match waits for a person.
    let config = format!(
        "{}\n[matching]\nupper = 1.0\nlower = 0.5\n",
        env.config(false)
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config)).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let admin = env.token("admin-1", &la, "data_admin");
    let ig = env.token("ig-1", &la, "ig_officer");
    let child = env.partners.population.probabilistic_only().expect("child");
    let police = child.identity(System::Police).expect("police record");
    let source = env.partners.source_id(System::Police);
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;

    let (status, _) = gw.get("/v1/matches/review", &sw).await;
    assert_eq!(status, 403);
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["upper"], 1.0);
    let proposal = queue["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .find(|m| m["source"] == source.as_str() && m["local_id"] == police.local_id.as_str())
        .expect("the police record awaits review")
        .clone();
    assert_eq!(proposal["child_id"], id.as_str(), "{proposal}");
    assert!(proposal["probability"].as_f64().expect("probability") >= 0.5);
    let match_id = proposal["id"].as_str().expect("id");
    let (_, proposed) = gw.get("/v1/audit?user=matcher&limit=1000", &ig).await;
    assert!(
        proposed.as_array().expect("entries").iter().any(|e| {
            e["outcome"] == "proposed"
                && e["detail"]["link"] == match_id
                && e["child"] == id.as_str()
        }),
        "the proposal is audited: {proposed}"
    );
    let (_, links) = gw.get(&format!("/v1/children/{id}/links"), &admin).await;
    assert!(
        police_link(&links, &source, &police.local_id).is_none(),
        "not linked yet"
    );

    let path = format!("/v1/matches/{match_id}/decision");
    let (status, body) = gw.post(&path, &admin, &json!({"decision": "maybe"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/decision", "{body}");
    let (status, _) = gw.post(&path, &sw, &json!({"decision": "confirm"})).await;
    assert_eq!(status, 403);

    let (status, decided) = gw
        .post(
            &path,
            &admin,
            &json!({"decision": "confirm", "reason": "same date of birth and address"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["child_id"], id.as_str());
    let (status, links) = gw.get(&format!("/v1/children/{id}/links"), &admin).await;
    assert_eq!(status, 200);
    let link = police_link(&links, &source, &police.local_id).expect("linked after confirmation");
    assert_eq!(link["decision"], "confirmed");
    assert_eq!(link["decided_by"], "admin-1");

    // A decided match takes no second decision, and the decision is in the audit log.
    let (status, _) = gw.post(&path, &admin, &json!({"decision": "reject"})).await;
    assert_eq!(status, 409);
    let (status, entries) = gw.get(&format!("/v1/audit?child={id}"), &ig).await;
    assert_eq!(status, 200, "{entries}");
    assert!(
        entries
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "match_decision" && e["user"] == "admin-1"),
        "{entries}"
    );

    // The record now answers with the child, as any linked record does.
    gw.refer(&env, &child.truth.nhs_number).await;
    let (status, view) = gw
        .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(status, 200);
    let police_view = view["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == source.as_str())
        .expect("police in view");
    assert_ne!(police_view["status"], "no_record", "{police_view}");
}

/// A gateway over the demo's population (`weft demo`'s hard cases after 12 children), with a
/// social worker's and a data administrator's tokens.
async fn demo_population() -> (Env, Gateway, String, String) {
    let env = Env::with_households(12).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let admin = env.token("admin-1", &la, "data_admin");
    (env, gw, sw, admin)
}

/// The demo's population (`weft demo`): twins whose school records carry no NHS number are two
/// children; a girl born the same day is a third; the twin girl's police record, which gives
/// only her initial and no NHS number, waits in the data administrator's review queue with the
/// rule that held it back in words; and nothing pairs the twins, or the stranger, anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_demo_population_twins_are_two_children_and_a_near_miss_waits_for_a_person() {
    let (env, gw, sw, admin) = demo_population().await;
    let pop = &env.partners.population;
    let child = |key: &str| pop.by_key(key).expect("household child");
    let (girl, boy, brother, stranger) = (
        child(population::TWIN_GIRL),
        child(population::TWIN_BOY),
        child(population::OLDER_BROTHER),
        child(population::SAME_BIRTHDAY),
    );
    let mut ids = Vec::new();
    for c in [girl, boy, brother, stranger] {
        ids.push(gw.child_by_nhs(&sw, &c.truth.nhs_number).await);
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "four children: {ids:?}");

    // Each child holds exactly its own records: the twins' school records (no NHS number)
    // linked by demographics to the right twin, the stranger's police record to her.
    let police = env.partners.source_id(System::Police);
    let near_miss = girl.identity(System::Police).expect("the near-miss");
    for (c, id) in [girl, boy, brother, stranger].into_iter().zip(&ids) {
        let (status, links) = gw.get(&format!("/v1/children/{id}/links"), &admin).await;
        assert_eq!(status, 200, "{links}");
        let mut active: Vec<(String, String)> = links["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter(|l| l["status"] == "active")
            .map(|l| {
                (
                    l["source"].as_str().unwrap_or_default().to_string(),
                    l["local_id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        active.sort();
        let mut own: Vec<(String, String)> = System::ALL
            .into_iter()
            .filter_map(|s| Some((env.partners.source_id(s), c.local_id(s)?.to_string())))
            .filter(|(s, l)| !(s == &police && l == &near_miss.local_id))
            .collect();
        own.sort();
        assert_eq!(active, own, "{}: {links}", c.key);
    }

    // The near-miss waits for a person, proposed for the twin girl, with the reason in words.
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let matches = queue["matches"].as_array().expect("matches");
    let proposal = matches
        .iter()
        .find(|m| m["source"] == police.as_str() && m["local_id"] == near_miss.local_id.as_str())
        .unwrap_or_else(|| panic!("the near-miss is in the review queue: {queue}"));
    assert_eq!(proposal["child_id"], ids[0].as_str(), "{proposal}");
    let rule = proposal["explanation"]
        .as_array()
        .expect("explanation")
        .iter()
        .find(|e| e["comparison"] == "rule")
        .unwrap_or_else(|| panic!("the explanation names the rule: {proposal}"));
    assert!(
        rule["level"]
            .as_str()
            .is_some_and(|l| l.contains("could be twins")),
        "{rule}"
    );
    let given = proposal["explanation"]
        .as_array()
        .expect("explanation")
        .iter()
        .find(|e| e["comparison"] == "given_name")
        .expect("given name compared");
    assert_eq!(given["level"], "similar spelling or initial", "{given}");
    // Nothing proposes the twin brother's, the brother's or the stranger's records for another
    // of these children.
    for m in matches {
        let for_child = m["child_id"].as_str().unwrap_or_default();
        let from = (
            m["source"].as_str().unwrap_or_default(),
            m["local_id"].as_str().unwrap_or_default(),
        );
        for (c, id) in [girl, boy, brother, stranger].into_iter().zip(&ids) {
            let own = System::ALL
                .into_iter()
                .any(|s| c.local_id(s) == Some(from.1) && env.partners.source_id(s) == from.0);
            assert!(
                !own || for_child == id.as_str() || !ids.contains(&for_child.to_string()),
                "{} proposed for another child of the household: {m}",
                c.key
            );
        }
    }
}

/// The demo's two Olivia Woods, born on one day at two addresses: police's record of the first,
/// without her NHS number, postcode or house number, matches both alike, so it joins neither
/// and both girls are proposed as `ambiguous`, each beside the record. The data administrator,
/// who sees the street is the first girl's, confirms hers: the record joins her and the other
/// proposal ends with it.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_demo_population_a_record_matching_two_namesakes_waits_for_a_person() {
    let (env, gw, sw, admin) = demo_population().await;
    let pop = &env.partners.population;
    let child = |key: &str| pop.by_key(key).expect("namesake");
    let (her, other) = (
        child(population::NAMESAKE),
        child(population::OTHER_NAMESAKE),
    );
    let hers = gw.child_by_nhs(&sw, &her.truth.nhs_number).await;
    let theirs = gw.child_by_nhs(&sw, &other.truth.nhs_number).await;
    assert_ne!(hers, theirs);
    let police = env.partners.source_id(System::Police);
    let record = her.identity(System::Police).expect("police record");
    for id in [&hers, &theirs] {
        assert!(!holds(&gw, &admin, id, &police, &record.local_id).await);
    }
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let proposals: Vec<&Value> = queue["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter(|m| m["source"] == police.as_str() && m["local_id"] == record.local_id.as_str())
        .collect();
    let mut children: Vec<&str> = proposals
        .iter()
        .map(|m| m["child_id"].as_str().unwrap_or_default())
        .collect();
    children.sort();
    let mut both = [hers.as_str(), theirs.as_str()];
    both.sort();
    assert_eq!(children, both, "{queue}");
    assert!(
        proposals.iter().all(|m| m["method"] == "ambiguous"),
        "{queue}"
    );
    let mine = proposals
        .iter()
        .find(|m| m["child_id"] == hers.as_str())
        .expect("her proposal");
    // What tells the girls apart for a person: the street, hers on both sides.
    assert_eq!(mine["record"]["postcode"], Value::Null, "{mine}");
    let street = record.address.line.to_lowercase();
    let has_line = |r: &Value| {
        r["address_lines"].as_array().is_some_and(|ls| {
            ls.iter().any(|l| {
                l.as_str()
                    .is_some_and(|l| l.to_lowercase().contains(&street))
            })
        })
    };
    assert!(has_line(&mine["record"]), "{mine}");
    assert!(
        mine["child_records"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(has_line)),
        "{mine}"
    );
    decide(&gw, &admin, mine["id"].as_str().expect("id"), "confirm").await;
    assert!(holds(&gw, &admin, &hers, &police, &record.local_id).await);
    assert!(!holds(&gw, &admin, &theirs, &police, &record.local_id).await);
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    assert!(
        !queue["matches"]
            .as_array()
            .expect("matches")
            .iter()
            .any(|m| m["local_id"] == record.local_id.as_str()),
        "the other proposal ended with the decision: {queue}"
    );
}

/// Whether `local_id` of `source` is among the child's active links.
async fn holds(gw: &Gateway, token: &str, child: &str, source: &str, local_id: &str) -> bool {
    let (status, links) = gw.get(&format!("/v1/children/{child}/links"), token).await;
    assert_eq!(status, 200, "{links}");
    police_link(&links, source, local_id).is_some()
}

async fn decide(gw: &Gateway, admin: &str, id: &str, decision: &str) {
    let body = json!({"decision": decision, "reason": "checked with the school"});
    let (status, body) = gw
        .post(&format!("/v1/matches/{id}/decision"), admin, &body)
        .await;
    assert_eq!(status, 200, "{decision}: {body}");
}

/// Whether each decided record (source, local id, the child it was proposed for) is with that
/// child now.
async fn held(
    gw: &Gateway,
    admin: &str,
    decided: [&(String, String, String, String); 3],
) -> [bool; 3] {
    let mut out = [false; 3];
    for (o, (source, local_id, child, _)) in out.iter_mut().zip(decided) {
        *o = holds(gw, admin, child, source, local_id).await;
    }
    out
}

/// A person's decisions hold through the next index pass. With every demographic match sent
/// for review, a data administrator confirms one proposal, rejects another, and confirms then
/// splits a third; the gateway then starts again with the default thresholds, under which the
/// matcher would link all three on its own, and its start-up pass reads every source again:
/// the confirmed record stays with its child, and neither the rejected nor the split record
/// joins, or is proposed again for, the child a person ruled out.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_confirm_a_reject_and_a_split_the_next_pass_moves_nothing() {
    let env = Env::new(30).await;
    let strict = format!(
        "{}\n[matching]\nupper = 1.0\nlower = 0.5\n",
        env.config(false)
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &strict)).await;
    let la = env.agency_of("social_care");
    let admin = env.token("admin-1", &la, "data_admin");
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let mut proposals: Vec<(String, String, String, String)> = queue["matches"]
        .as_array()
        .expect("matches")
        .iter()
        // Those the default upper threshold (0.95) links without a person.
        .filter(|m| m["method"] == "probabilistic" && m["probability"].as_f64() >= Some(0.95))
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("source"), s("local_id"), s("child_id"), s("id"))
        })
        .collect();
    proposals.sort();
    assert!(proposals.len() >= 3, "three proposals to decide: {queue}");
    let [kept, rejected, split] = [&proposals[0], &proposals[1], &proposals[2]];
    decide(&gw, &admin, &kept.3, "confirm").await;
    decide(&gw, &admin, &rejected.3, "reject").await;
    decide(&gw, &admin, &split.3, "confirm").await;
    let (_, links) = gw
        .get(&format!("/v1/children/{}/links", split.2), &admin)
        .await;
    let active = police_link(&links, &split.0, &split.1).expect("confirmed")["id"]
        .as_str()
        .expect("link id")
        .to_string();
    decide(&gw, &admin, &active, "split").await;
    let decided = [kept, rejected, split];
    assert_eq!(held(&gw, &admin, decided).await, [true, false, false]);
    gw.stop().await;

    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    assert_eq!(
        held(&gw, &admin, decided).await,
        [true, false, false],
        "after the next pass"
    );
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    for (source, local_id, child, _) in [rejected, split] {
        assert!(
            !queue["matches"]
                .as_array()
                .expect("matches")
                .iter()
                .any(|m| {
                    m["source"] == source.as_str()
                        && m["local_id"] == local_id.as_str()
                        && m["child_id"] == child.as_str()
                }),
            "{local_id} proposed again for the child a person ruled out: {queue}"
        );
    }
}
