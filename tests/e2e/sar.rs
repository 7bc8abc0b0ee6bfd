//! Subject access: a report of every access to a child, for the family; accesses made for a
//! police investigation held out of it until an IG officer releases them.

use serde_json::{json, Value};

use crate::harness::{run_weft, Env, Gateway};

fn roles(report: &Value) -> Vec<String> {
    report["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .map(|a| a["who"]["role"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_police_investigations_access_is_left_out_of_a_subject_access_report_until_released() {
    let env = Env::new(6).await;
    let config = env.write_config("weft.toml", &env.config(false));
    let gw = Gateway::start(&env, config.clone()).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let police = env.token("pc-1", &env.agency_of("police"), "police_officer");
    let teacher = env.token("teacher-1", &env.agency_of("education"), "teacher");
    let ig = env.token("ig-1", &la, "ig_officer");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await; // the relationship: a referral
    let view = format!("/v1/children/{id}?purpose=safeguarding");
    assert_eq!(gw.get(&view, &sw).await.0, 200);

    // Only the roles an exemption belongs to may claim it; the refusal is a JSON error.
    let (s, v) = gw
        .get(&format!("{view}&exemption=police_investigation"), &teacher)
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = gw.get(&format!("{view}&exemption=curiosity"), &sw).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = gw
        .get(&format!("{view}&exemption=police_investigation"), &police)
        .await;
    assert_eq!(s, 200);

    // Only IG officers produce reports.
    let report_path = format!("/v1/children/{id}/access-report");
    assert_eq!(gw.get(&report_path, &sw).await.0, 403);
    let (s, report) = gw.get(&report_path, &ig).await;
    assert_eq!(s, 200, "{report}");
    let who = roles(&report);
    assert!(who.iter().any(|r| r == "Social worker"), "{report}");
    assert!(
        !who.iter().any(|r| r == "Police officer"),
        "the police investigation's access is held back: {report}"
    );
    let shown = report["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .find(|a| {
            a["who"]["role"] == "Social worker" && a["what"] == "Looked at the child's information"
        })
        .expect("the social worker's view")
        .clone();
    assert_eq!(shown["why"], "To keep the child safe (safeguarding)");
    assert!(!shown["categories"]
        .as_array()
        .expect("categories")
        .is_empty());
    assert!(!shown["lawful_basis"].as_array().expect("basis").is_empty());
    assert!(
        shown["who"]["name"].is_null(),
        "names only where policy allows"
    );
    let (s, page) = gw
        .get_text(&format!("{report_path}?format=html"), &ig)
        .await;
    assert_eq!(s, 200);
    assert!(page.contains("Who has looked at this child"), "{page}");
    assert!(page.contains("Social worker"));
    assert!(!page.contains("Police officer"), "{page}");
    assert!(!page.contains("police_investigation") && !page.contains("deferred"));

    // The IG officer sees what is held back and releases it.
    let (s, deferred) = gw.get(&format!("{report_path}/deferred"), &ig).await;
    assert_eq!(s, 200, "{deferred}");
    let held = deferred.as_array().expect("deferred");
    assert_eq!(held.len(), 1, "{deferred}");
    assert_eq!(held[0]["exemption"], "police_investigation");
    assert_eq!(held[0]["role"], "police_officer");
    let entry = held[0]["entry"].as_i64().expect("entry");
    let release = format!("{report_path}/deferred/{entry}/release");
    assert_eq!(gw.post(&release, &police, &json!({})).await.0, 403);
    assert_eq!(
        gw.post(
            &format!("{report_path}/deferred/1/release"),
            &ig,
            &json!({})
        )
        .await
        .0,
        404,
        "only a deferred access can be released"
    );
    let (s, v) = gw.post(&release, &ig, &json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (_, report) = gw.get(&report_path, &ig).await;
    assert!(
        roles(&report).iter().any(|r| r == "Police officer"),
        "{report}"
    );
    assert_eq!(
        gw.get(&format!("{report_path}/deferred"), &ig).await.1,
        json!([])
    );

    // Every report is audited.
    let (_, mine) = gw
        .get(&format!("/v1/audit?child={id}&user=ig-1&limit=1000"), &ig)
        .await;
    let actions: Vec<&str> = mine
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "subject_access_report")
            .count(),
        3,
        "{actions:?}"
    );
    assert!(actions.contains(&"subject_access_release"));

    // The command produces the same report, audited as the officer's.
    let status = gw.stop().await;
    assert!(status.success());
    let out = env.dir.path().join("report.html");
    let (code, stdout, err) = run_weft(&[
        "sar",
        &id,
        "--user",
        "ig-1",
        "--agency",
        &la,
        "--format",
        "html",
        "--out",
        out.to_str().expect("path"),
        "-c",
        config.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let page = std::fs::read_to_string(&out).expect("report");
    assert!(
        page.contains("Police officer") && page.contains("Social worker"),
        "{page}"
    );
}

/// A search or a concern made for a police investigation or a section 47 enquiry is deferred
/// like a view: left out of the report until released, listed for the IG officer meanwhile, and
/// claimable only by the roles an exemption belongs to (the refusal changes nothing).
#[tokio::test(flavor = "multi_thread")]
async fn an_investigations_search_and_concern_are_left_out_of_a_report_until_released() {
    let env = Env::new(6).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let police = env.token("pc-1", &env.agency_of("police"), "police_officer");
    let teacher = env.token("teacher-1", &env.agency_of("education"), "teacher");
    let ig = env.token("ig-1", &la, "ig_officer");
    let child = &env.partners.population.children[2];
    let nhs = child.truth.nhs_number.clone();
    let id = gw.child_by_nhs(&sw, &nhs).await;
    let search = json!({"purpose": "safeguarding", "nhs_number": nhs});
    let concern = json!({
        "child": {"nhs_number": nhs},
        "category": "neglect",
        "urgency": "routine",
        "observed": {"what": "Disclosed during an enquiry.", "when": "2025-10-07T08:50:00Z",
                     "how": "disclosed", "where": "home visit"},
        "actions_taken": ["Recorded it"],
        "reporter": {"name": "A. Worker", "role": "Social worker"}
    });

    // Claimed by a role the exemption does not belong to: refused, and nothing stored.
    let (s, v) = gw
        .post(
            "/v1/children/search?exemption=police_investigation",
            &teacher,
            &search,
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = gw
        .post("/v1/concerns?exemption=s47_enquiry", &teacher, &concern)
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = gw
        .post("/v1/concerns?exemption=curiosity", &sw, &concern)
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(gw.get("/v1/concerns", &teacher).await.1, json!([]));

    let (s, v) = gw
        .post(
            "/v1/children/search?exemption=police_investigation",
            &police,
            &search,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["children"][0]["id"], id.as_str());
    let (s, v) = gw
        .post("/v1/concerns?exemption=s47_enquiry", &sw, &concern)
        .await;
    assert_eq!(s, 201, "{v}");

    let report_path = format!("/v1/children/{id}/access-report");
    let what = |report: &Value| -> Vec<(String, String)> {
        report["accesses"]
            .as_array()
            .expect("accesses")
            .iter()
            .map(|a| {
                (
                    a["who"]["role"].as_str().unwrap_or("").to_string(),
                    a["what"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (s, report) = gw.get(&report_path, &ig).await;
    assert_eq!(s, 200, "{report}");
    let seen = what(&report);
    assert!(
        seen.contains(&("Social worker".into(), "Searched for the child".into())),
        "the undeferred search is reported: {report}"
    );
    assert!(
        !seen.iter().any(|(r, _)| r == "Police officer"),
        "the investigation's search is held back: {report}"
    );
    assert!(
        !seen
            .iter()
            .any(|(_, w)| w == "Raised a concern about the child"),
        "the s47 enquiry's concern is held back: {report}"
    );

    let (s, deferred) = gw.get(&format!("{report_path}/deferred"), &ig).await;
    assert_eq!(s, 200, "{deferred}");
    let held = deferred.as_array().expect("deferred");
    let mut exemptions: Vec<&str> = held
        .iter()
        .filter_map(|d| d["exemption"].as_str())
        .collect();
    exemptions.sort_unstable();
    assert_eq!(
        exemptions,
        ["police_investigation", "s47_enquiry"],
        "{deferred}"
    );
    for d in held {
        let entry = d["entry"].as_i64().expect("entry");
        let (s, v) = gw
            .post(
                &format!("{report_path}/deferred/{entry}/release"),
                &ig,
                &json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, report) = gw.get(&report_path, &ig).await;
    let seen = what(&report);
    assert!(
        seen.contains(&("Police officer".into(), "Searched for the child".into())),
        "{report}"
    );
    assert!(
        seen.contains(&(
            "Social worker".into(),
            "Raised a concern about the child".into()
        )),
        "{report}"
    );
}
