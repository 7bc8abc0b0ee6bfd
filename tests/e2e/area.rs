//! Area trends on the real gateway: a school census imported with `weft import`, children known
//! to social care through a social-care source the index links them to, then
//! `GET /v1/reports/area` as an LA analyst (everything), a school's DSL (their own school's
//! rows), a teacher (nothing) — each read one audit entry — and the web page.

use serde_json::{json, Value};

use crate::harness::{run_weft, Env, Gateway};
use crate::web::{index_of, Browser};

/// A valid permanent UPN for LA 801 and a serial number (DESIGN.md's check letter).
pub fn upn(serial: u32) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRTUVWXYZ";
    let digits = format!("801{:02}{:07}", 20 + serial % 7, serial);
    let sum: u32 = digits
        .chars()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap_or(0) * (i as u32 + 2))
        .sum();
    format!("{}{digits}", LETTERS[(sum % 23) as usize] as char)
}

/// One pupil of the fixture: school, postcode, attendance (possible, attended) in autumn 2024
/// and spring 2025, an exclusion, and whether social care knows them.
struct P {
    school: &'static str,
    postcode: &'static str,
    autumn: (u32, u32),
    spring: (u32, u32),
    exclusion: Option<(&'static str, &'static str)>,
    known: bool,
}

/// Three schools. Autumn: 100001 has 10 of 30 persistently absent (4 known to social care),
/// 100002 has 2 of 20, 100003 7 of 15. Spring: 12, 8 and 3.
fn pupils() -> Vec<P> {
    let mut out = Vec::new();
    let mut add = |school, postcode, n: usize, pa_autumn: usize, pa_spring: usize, known: usize| {
        for i in 0..n {
            out.push(P {
                school,
                postcode,
                autumn: (100, if i < pa_autumn { 80 } else { 97 }),
                spring: (100, if i < pa_spring { 70 } else { 99 }),
                exclusion: None,
                known: i < known,
            });
        }
    };
    add("100001", "WT1 1AA", 30, 10, 12, 4);
    add("100002", "WT2 3BB", 20, 2, 8, 0);
    add("100003", "WT1 4CC", 8, 4, 2, 0);
    add("100003", "WT2 5DD", 7, 3, 1, 0);
    // Suspensions: 7 at 100001 in autumn, one permanent exclusion at 100002 in spring.
    for p in out.iter_mut().filter(|p| p.school == "100001").take(7) {
        p.exclusion = Some(("SUSP", "2024-10-14"));
    }
    if let Some(p) = out.iter_mut().find(|p| p.school == "100002") {
        p.exclusion = Some(("PERM", "2025-02-03"));
    }
    out
}

fn write_fixture(env: &Env) {
    let census = env.dir.path().join("census");
    let csc = env.dir.path().join("csc");
    std::fs::create_dir_all(&census).expect("census folder");
    std::fs::create_dir_all(&csc).expect("csc folder");
    let mut roll = String::from("UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode,URN\n");
    let mut att = String::from("UPN,Term,Sessions Possible,Sessions Attended\n");
    let mut exc = String::from("UPN,Category,StartDate\n");
    let mut known = String::from("UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode\n");
    let given = [
        "Ava", "Noah", "Mia", "Leo", "Isla", "Alfie", "Ruby", "Oscar",
    ];
    let family = [
        "Khan", "Smith", "Jones", "Patel", "Brown", "Taylor", "Wilson",
    ];
    for (i, p) in pupils().iter().enumerate() {
        let u = upn(i as u32 + 1);
        let (g, f) = (given[i % given.len()], family[(i / 3) % family.len()]);
        let dob = format!("2012-{:02}-{:02}", 1 + i % 12, 1 + i % 28);
        roll.push_str(&format!(
            "{u},{f},{g},{dob},F,{},{}\n",
            p.postcode, p.school
        ));
        att.push_str(&format!("{u},Autumn 2024,{},{}\n", p.autumn.0, p.autumn.1));
        att.push_str(&format!("{u},Spring 2025,{},{}\n", p.spring.0, p.spring.1));
        if let Some((kind, date)) = p.exclusion {
            exc.push_str(&format!("{u},{kind},{date}\n"));
        }
        if p.known {
            known.push_str(&format!("{u},{f},{g},{dob},F,{}\n", p.postcode));
        }
    }
    std::fs::write(census.join("pupils.csv"), roll).expect("pupils");
    std::fs::write(census.join("attendance.csv"), att).expect("attendance");
    std::fs::write(census.join("exclusions.csv"), exc).expect("exclusions");
    std::fs::write(csc.join("known.csv"), known).expect("known");
}

fn config(env: &Env) -> String {
    format!(
        "{}\n[[agencies]]\nid = \"la-schools\"\nname = \"LA schools census\"\nkind = \"education\"\n\n\
         [[agencies]]\nid = \"la-csc-returns\"\nname = \"LA social care returns\"\nkind = \"social_care\"\n\n\
         [[sources]]\nid = \"school-census\"\nagency = \"la-schools\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"census\"\n\
         files = [{{ format = \"census_pupils_csv\", name = \"pupils.csv\" }}, \
                  {{ format = \"census_attendance_csv\", name = \"attendance.csv\" }}, \
                  {{ format = \"census_exclusions_csv\", name = \"exclusions.csv\" }}]\n\n\
         [[sources]]\nid = \"csc-returns\"\nagency = \"la-csc-returns\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"csc\"\n\
         files = [{{ format = \"census_pupils_csv\", name = \"known.csv\" }}]\n\n\
         [reports]\nalert_check_secs = 1\n",
        crate::web::config_with_pages(env, ""),
    )
}

fn rows<'a>(report: &'a Value, level: &str, term: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["level"] == level && r["term"] == term)
        .collect()
}

fn row<'a>(report: &'a Value, level: &str, key: &str, term: &str) -> &'a Value {
    rows(report, level, term)
        .into_iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {level} {key} {term} row in {report}"))
}

const AUTUMN: &str = "2024/25 autumn";
const SPRING: &str = "2024/25 spring";

#[tokio::test(flavor = "multi_thread")]
async fn area_report_counts_suppresses_and_is_decided_by_policy() {
    let env = Env::new(4).await;
    write_fixture(&env);
    let path = env.write_config("weft.toml", &config(&env));
    let p = path.to_str().expect("path");
    for source in ["school-census", "csc-returns"] {
        let (code, out, err) = run_weft(&["import", source, "-c", p]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let gw = Gateway::start(&env, path).await;
    let analyst = env.token("an-1", &env.agency_of("social_care"), "la_analyst");

    let (status, report) = gw
        .get("/v1/reports/area?purpose=education_welfare", &analyst)
        .await;
    assert_eq!(status, 200, "{report}");
    // The response is what its schema says.
    let schema: Value = serde_json::from_str(include_str!("../../schemas/area-report.schema.json"))
        .expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(report["scope"], "authority");
    assert_eq!(report["areas"], "postcode_district");
    assert_eq!(report["terms"], json!([AUTUMN, SPRING]));

    let la = row(&report, "authority", "all", AUTUMN);
    assert_eq!(la["pupils"]["value"], 65, "{la}");
    assert_eq!(la["persistent_absentees"]["value"], 19);
    assert_eq!(la["suspended_pupils"]["value"], 7);
    // 4 known to social care: withheld, and so is every cell it could be worked out from.
    assert_eq!(
        la["persistent_absentees_known_to_social_care"]["suppressed"],
        true
    );
    assert_eq!(
        la["persistent_absentees_known_to_social_care"]["value"],
        Value::Null
    );
    // 100002's 2 persistent absentees are withheld, with the next smallest school (100003's 7)
    // so the authority's 19 does not give it away; rates from them too.
    let s2 = row(&report, "school", "100002", AUTUMN);
    assert_eq!(s2["persistent_absentees"]["suppressed"], true, "{s2}");
    assert_eq!(s2["persistent_absence_rate"]["suppressed"], true);
    assert_eq!(s2["pupils"]["value"], 20);
    let s3 = row(&report, "school", "100003", AUTUMN);
    assert_eq!(s3["persistent_absentees"]["suppressed"], true, "{s3}");
    let s1 = row(&report, "school", "100001", AUTUMN);
    assert_eq!(s1["persistent_absentees"]["value"], 10);
    assert_eq!(s1["persistent_absence_rate"]["value"], 33.3);
    // Areas: WT1 is 100001's 30 and 8 of 100003's.
    let wt1 = row(&report, "area", "WT1", AUTUMN);
    assert_eq!(wt1["pupils"]["value"], 38, "{wt1}");
    // The permanent exclusion (one child) is never shown, at any level.
    for r in report["rows"].as_array().expect("rows") {
        for m in [
            "pupils",
            "persistent_absentees",
            "suspended_pupils",
            "permanently_excluded_pupils",
            "persistent_absentees_known_to_social_care",
            "suspended_or_excluded_known_to_social_care",
        ] {
            if let Some(n) = r[m]["value"].as_u64() {
                assert!(n == 0 || n > 5, "{m} = {n} published in {r}");
            }
        }
        assert!(r["education_data_as_of"].is_string(), "{r}");
        assert!(r["social_care_data_as_of"].is_string(), "{r}");
    }
    // Spring: 12 + 8 + 3 persistently absent; 100003's 3 withheld with a partner.
    let la = row(&report, "authority", "all", SPRING);
    assert_eq!(la["persistent_absentees"]["value"], 23);
    assert_eq!(
        row(&report, "school", "100003", SPRING)["persistent_absentees"]["suppressed"],
        true
    );
    let sources = report["sources"].as_array().expect("sources");
    assert!(
        sources.iter().any(|s| s["source"] == "csc-returns"
            && s["kind"] == "social_care"
            && s["data_as_of"].is_string()),
        "{sources:?}"
    );

    // CSV: the same figures, `c` where withheld.
    let (status, csv) = gw
        .get_text(
            "/v1/reports/area?purpose=education_welfare&format=csv&level=school",
            &analyst,
        )
        .await;
    assert_eq!(status, 200, "{csv}");
    let mut lines = csv.lines();
    let header = lines.next().expect("header");
    assert!(
        header.starts_with("level,key,name,term,pupils,attendance_rate,persistent_absentees"),
        "{header}"
    );
    assert!(
        header.ends_with("education_data_as_of,social_care_data_as_of"),
        "{header}"
    );
    let line = lines
        .find(|l| l.starts_with("school,100002,,2024/25 autumn,"))
        .expect("school row");
    assert!(
        line.starts_with("school,100002,,2024/25 autumn,20,"),
        "{line}"
    );
    assert!(line.contains(",c,"), "{line}");

    // A school's DSL: their own school's rows, no social-care measures.
    let dsl = env.token("dsl-1", "urn-100001", "dsl");
    let (status, own) = gw
        .get("/v1/reports/area?purpose=education_welfare", &dsl)
        .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["scope"], "own_school");
    let own_rows = own["rows"].as_array().expect("rows");
    assert_eq!(own_rows.len(), 2, "{own}");
    assert!(own_rows
        .iter()
        .all(|r| r["level"] == "school" && r["key"] == "100001"));
    assert!(own_rows[0]
        .get("persistent_absentees_known_to_social_care")
        .is_none());
    assert!(own["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .all(|s| s["kind"] == "education"));
    // The same figures as the analyst's, cell for cell.
    assert_eq!(
        own_rows[0]["persistent_absentees"],
        s1["persistent_absentees"]
    );

    // A teacher sees none; neither does a DSL for another purpose; a purpose is required.
    let teacher = env.token("t-1", "urn-100001", "teacher");
    let (status, _) = gw
        .get("/v1/reports/area?purpose=education_welfare", &teacher)
        .await;
    assert_eq!(status, 403);
    let (status, _) = gw.get("/v1/reports/area?purpose=safeguarding", &dsl).await;
    assert_eq!(status, 403);
    let (status, _) = gw.get("/v1/reports/area", &analyst).await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .get(
            "/v1/reports/area?purpose=education_welfare&format=xlsx",
            &analyst,
        )
        .await;
    assert_eq!(status, 400);

    // Every read, and every refusal, is one audit entry.
    let ig = env.token("ig-1", &env.agency_of("social_care"), "ig_officer");
    for (user, shown, refused) in [("an-1", 2, 2), ("dsl-1", 1, 1), ("t-1", 0, 1)] {
        let (s, r) = gw.audit_outcomes(&ig, user, "area_report").await;
        assert_eq!((s, r), (shown, refused), "{user}: shown, refused");
    }

    // The area alert rule (threshold 25 %) reads the published figures: in autumn WT2's 5
    // persistent absentees are withheld and WT1's 14 with them, so both areas' spring rates
    // (36.8 %, 33.3 %) rise past the threshold from a rate not shown. Every school's spring rate
    // is withheld but 100001's, which was above the threshold already (33.3 % → 40 %). The
    // education welfare service's inbox has one alert for each area, once, however often the
    // rule runs.
    let ewo = env.token(
        "ewo-1",
        &env.agency_of("social_care"),
        "education_welfare_officer",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let alerts = loop {
        let (status, items) = gw.get("/v1/inbox", &ewo).await;
        assert_eq!(status, 200, "{items}");
        let alerts: Vec<Value> = items
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["topic"] == "alert")
            .cloned()
            .collect();
        if alerts.len() >= 2 || std::time::Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (_, items) = gw.get("/v1/inbox", &ewo).await;
    let again = items
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["topic"] == "alert")
        .count();
    assert_eq!(again, 2, "no alert twice: {items}");
    let mut areas: Vec<String> = alerts
        .iter()
        .map(|a| {
            let data = &a["payload"]["data"];
            assert_eq!(data["alert"], "area_persistent_absence", "{a}");
            assert_eq!(data["detail"]["term"], SPRING, "{a}");
            assert!(a["child"].is_null(), "{a}");
            data["area"].as_str().expect("area").to_string()
        })
        .collect();
    areas.sort();
    assert_eq!(areas, ["area:WT1", "area:WT2"]);

    // The web page: the same report, with its charts and tables, signed in as the analyst.
    let mut browser = Browser::new(&env, &gw);
    browser.sign_in(index_of("la_analyst")).await;
    let home = browser.get("/").await;
    assert!(
        home.html.contains("/reports/area"),
        "the start page links to the report"
    );
    let page = browser.get("/reports/area").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("<svg"), "a chart: {}", page.html);
    assert!(page.html.contains("100002"), "the schools' table");
    assert!(
        page.html.contains("33.3"),
        "100001's autumn persistent absence rate"
    );
    let csv = browser.get("/reports/area.csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.html.starts_with("level,key,name,term,"), "{}", csv.html);
    let mut browser = Browser::new(&env, &gw);
    browser.sign_in(index_of("teacher")).await;
    let page = browser.get("/reports/area").await;
    assert_eq!(page.status, 403, "{}", page.html);
    gw.stop().await;
}
