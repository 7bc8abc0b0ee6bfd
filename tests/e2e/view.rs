//! The merged view: provenance, disagreements, deadlines and policy.

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_sim::population::System;
use weft_sim::server::Fault;

use crate::harness::{Env, Gateway};

fn source<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == id))
        .unwrap_or_else(|| panic!("source {id} in view: {view}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn merged_view_from_four_sources_with_provenance_and_disagreement() {
    let env = Env::new(30).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = env
        .partners
        .population
        .linkable_disagreement()
        .expect("a child whose family name differs between systems");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;

    let (status, view) = gw
        .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(status, 200, "{view}");
    let sources = view["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 4, "{view}");
    for s in sources {
        assert_eq!(s["status"], "shown", "every source holds the child: {s}");
        assert!(!s["record_ids"].as_array().expect("record ids").is_empty());
    }

    // Every value names its source, the source's record id and when it was fetched.
    for (category, fields) in view["fields"].as_object().expect("fields") {
        for (field, f) in fields.as_object().expect("field map") {
            for v in f["values"].as_array().expect("values") {
                for from in v["from"].as_array().expect("from") {
                    assert!(from["source"].is_string(), "{category}.{field}: {from}");
                    assert!(from["record_id"].is_string(), "{category}.{field}: {from}");
                    assert!(from["fetched_at"].is_string(), "{category}.{field}: {from}");
                }
            }
        }
    }

    // The disagreement is shown side by side, not resolved.
    let (a, b) = child.family_name_disagreement().expect("disagreement");
    let name_a = &child.identity(a).expect("a").family_name;
    let name_b = &child.identity(b).expect("b").family_name;
    let family = &view["fields"]["identity.core"]["family_name"];
    assert_eq!(family["conflict"], true, "{family}");
    let values: Vec<&str> = family["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v["value"].as_str())
        .collect();
    assert!(
        values.iter().any(|v| v.eq_ignore_ascii_case(name_a)),
        "{values:?} has {name_a}"
    );
    assert!(
        values.iter().any(|v| v.eq_ignore_ascii_case(name_b)),
        "{values:?} has {name_b}"
    );

    // The lawful basis of what was shown is stated.
    assert!(!view["lawful_basis"].as_array().expect("basis").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_source_is_unavailable_within_its_deadline() {
    let env = Env::new(12).await;
    let mut config: toml::Value = toml::from_str(&env.config(false)).expect("config");
    let deadline_ms = 600;
    for s in config["sources"].as_array_mut().expect("sources") {
        s["deadline_ms"] = toml::Value::Integer(deadline_ms);
    }
    let path = env.write_config("weft.toml", &toml::to_string(&config).expect("toml"));
    let gw = Gateway::start(&env, path).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = env
        .partners
        .population
        .linkable_disagreement()
        .expect("child");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    let police = env.partners.source_id(System::Police);

    for (fault, reason) in [
        (Fault::Hang, "timeout"),
        (Fault::Status(500), "source_error"),
        (Fault::Garbage, "bad_response"),
        (Fault::DropConnection, "connection_failed"),
    ] {
        env.partners.fault(System::Police).set(fault);
        let started = Instant::now();
        let (status, view) = gw
            .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
            .await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{fault:?}: {view}");
        let p = source(&view, &police);
        assert_eq!(p["status"], "unavailable", "{fault:?}: {p}");
        assert_eq!(p["reason"], reason, "{fault:?}: {p}");
        for s in view["sources"].as_array().expect("sources") {
            if s["source"] != police.as_str() {
                assert_eq!(s["status"], "shown", "{fault:?}: the others are shown: {s}");
            }
        }
        assert!(
            took < Duration::from_millis(deadline_ms as u64 + 400),
            "{fault:?}: view took {took:?}, deadline {deadline_ms} ms"
        );
    }
    env.partners.fault(System::Police).set(Fault::Normal);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_category_is_withheld_and_none_of_its_values_appear() {
    let env = Env::new(40).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let pop = &env.partners.population;
    // A child with sensitive health information, on the school roll.
    let child = pop
        .children
        .iter()
        .find(|c| {
            c.school.as_ref().is_some_and(|s| s.on_roll)
                && c.health.as_ref().is_some_and(|h| {
                    h.flags
                        .iter()
                        .any(|f| !weft_sim::population::flag_codes::is_cp(&f.code))
                })
        })
        .expect("a pupil with a sensitive health flag");
    let health = child.health.as_ref().expect("health");
    let sensitive: Vec<&str> = health
        .flags
        .iter()
        .filter(|f| !weft_sim::population::flag_codes::is_cp(&f.code))
        .map(|f| f.display.as_str())
        .collect();

    assert!(!sensitive.is_empty());
    let school = env.agency_of("education");
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    let teacher = env.token("teacher-1", &school, "teacher");
    let (status, body) = gw
        .get_text(&format!("/v1/children/{id}?purpose=safeguarding"), &teacher)
        .await;
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).expect("json");
    // The teacher's relationship: the child is on their school's roll.
    assert_eq!(view["relationship"][0]["kind"], "school_roll", "{view}");
    // A category a teacher can never see is not listed, and the health source, which a
    // teacher may not know holds the child, is not named: nothing says the data exists.
    let health_id = env.partners.source_id(System::Health);
    assert!(!body.contains("health.sensitive"), "{view}");
    assert!(!body.contains(&health_id), "{view}");
    assert!(view["fields"].get("health.sensitive").is_none());
    for text in &sensitive {
        assert!(
            !body.contains(text),
            "withheld value {text:?} leaked into the response"
        );
    }
    // The same values do reach a health practitioner providing direct care, so their absence
    // above is policy at work, not missing data.
    let nurse = env.token("nurse-1", &env.agency_of("health"), "health_practitioner");
    let (status, body_for_health) = gw
        .get_text(&format!("/v1/children/{id}?purpose=direct_care"), &nurse)
        .await;
    assert_eq!(status, 200, "{body_for_health}");
    for text in &sensitive {
        assert!(
            body_for_health.contains(text),
            "{text:?} shown for direct care"
        );
    }
    // Police intelligence is withheld from schools too, and none of it appears.
    if let Some(police) = &child.police {
        for incident in &police.incidents {
            assert!(
                !body.contains(&incident.reference),
                "police reference leaked"
            );
        }
    }
}
