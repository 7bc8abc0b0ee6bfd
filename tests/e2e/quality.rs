//! Data quality on the real gateway: a school census and a social-care return imported with
//! `weft import`, one child in both whose records disagree on every field the report compares,
//! a UPN that fails its check and a pupil entered twice; then `GET /v1/reports/quality` as a
//! data administrator (every source, both values), the school's data manager (its own records,
//! the fields named, never the other agency's values), and roles it is not open to — each read
//! one audit entry — and the page.

use serde_json::Value;

use crate::area::upn;
use crate::harness::{run_weft, Env, Gateway};
use crate::web::{index_of, Browser};

/// A UPN with its check letter wrong.
fn bad_upn(serial: u32) -> String {
    let good = upn(serial);
    let letter = if good.starts_with('A') { 'B' } else { 'A' };
    format!("{letter}{}", &good[1..])
}

fn write_fixture(env: &Env) {
    let census = env.dir.path().join("census");
    let csc = env.dir.path().join("csc");
    std::fs::create_dir_all(&census).expect("census folder");
    std::fs::create_dir_all(&csc).expect("csc folder");
    let header = "PupilID,UPN,Legal Surname,Legal Forename,DOB,Gender,House Number,Street,Town,Postcode,URN\n";
    let pupils = format!(
        "{header}\
         P1,{},Khan,Ava,2014-03-02,F,1,High Street,Weftham,WT1 1AA,100001\n\
         P2,{},Smith,Noah,2013-05-06,M,5,Mill Lane,Weftham,WT2 3BB,100001\n\
         P3,,Okafor,Isla,2015-07-08,F,9,Rope Walk,Weftham,WT3 4CC,100001\n\
         P4,,Okafor,Isla,2015-07-08,F,9,Rope Walk,Weftham,WT3 4CC,100001\n\
         P5,{},Lindqvist,Oscar,2016-01-09,M,2,Dock Road,Weftham,WT4 5DD,100001\n\
         P6,{},Lindqvist,Freya,2016-01-09,F,2,Dock Road,Weftham,WT4 5DD,100001\n",
        upn(1),
        bad_upn(2),
        upn(5),
        upn(6),
    );
    // Social care's record of Ava: the same UPN, so the same child; every other field not.
    let known = format!(
        "{header}C1,{},Khan,Eve,2014-02-03,M,3,High Street,Weftham,WT1 1AB,100002\n",
        upn(1)
    );
    std::fs::write(census.join("pupils.csv"), pupils).expect("pupils");
    std::fs::write(csc.join("known.csv"), known).expect("known");
}

fn config(env: &Env) -> String {
    format!(
        "{}\n[[agencies]]\nid = \"la-schools\"\nname = \"LA schools census\"\nkind = \"education\"\n\n\
         [[agencies]]\nid = \"la-csc-returns\"\nname = \"LA social care returns\"\nkind = \"social_care\"\n\n\
         [[sources]]\nid = \"school-census\"\nagency = \"la-schools\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"census\"\n\
         files = [{{ format = \"census_pupils_csv\", name = \"pupils.csv\" }}]\n\n\
         [[sources]]\nid = \"csc-returns\"\nagency = \"la-csc-returns\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"csc\"\n\
         files = [{{ format = \"census_pupils_csv\", name = \"known.csv\" }}]\n",
        crate::web::config_with_pages(env, ""),
    )
}

fn record<'a>(report: &'a Value, source: &str, local_id: &str) -> &'a Value {
    report["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["source"] == source && r["local_id"] == local_id)
        .unwrap_or_else(|| panic!("{source}/{local_id} not listed: {report}"))
}

fn fields(r: &Value) -> Vec<String> {
    r["disagreements"]
        .as_array()
        .expect("disagreements")
        .iter()
        .map(|d| d["field"].as_str().expect("field").to_string())
        .collect()
}

/// What social care holds about Ava, which the school's data manager never sees.
const SOCIAL_CARES: &[&str] = &[
    "Eve",
    "2014-02-03",
    "WT1 1AB",
    "3, High Street",
    "100002",
    "csc-returns",
    "C1",
];

#[tokio::test(flavor = "multi_thread")]
async fn quality_report_lists_each_planted_inconsistency_to_whom_policy_allows() {
    let env = Env::new(3).await;
    write_fixture(&env);
    let path = env.write_config("weft.toml", &config(&env));
    let p = path.to_str().expect("path");
    for source in ["school-census", "csc-returns"] {
        let (code, out, err) = run_weft(&["import", source, "-c", p]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let gw = Gateway::start(&env, path.clone()).await;

    // The data administrator: every source, both values side by side.
    let admin = env.token("da-1", &env.agency_of("social_care"), "data_admin");
    let (status, report) = gw.get("/v1/reports/quality", &admin).await;
    assert_eq!(status, 200, "{report}");
    let schema: Value =
        serde_json::from_str(include_str!("../../schemas/quality-report.schema.json"))
            .expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(report["scope"], "all_sources");
    let p1 = record(&report, "school-census", "P1");
    assert_eq!(
        fields(p1),
        [
            "given_name",
            "birth_date",
            "sex",
            "postcode",
            "address",
            "school"
        ],
        "{p1}"
    );
    let given = &p1["disagreements"][0];
    assert_eq!(given["other_source"], "csc-returns");
    assert_eq!(given["other_local_id"], "C1");
    assert_eq!(
        (&given["value"], &given["other_value"]),
        (&"Ava".into(), &"Eve".into())
    );
    assert!(p1["child_id"].is_string());
    let c1 = record(&report, "csc-returns", "C1");
    assert_eq!(fields(c1).len(), 6, "{c1}");
    let p2 = record(&report, "school-census", "P2");
    assert_eq!(p2["invalid_identifiers"][0]["kind"], "upn", "{p2}");
    let p3 = record(&report, "school-census", "P3");
    assert_eq!(p3["likely_duplicates"][0]["local_id"], "P4", "{p3}");
    // Twins are not duplicates.
    for twin in ["P5", "P6"] {
        assert!(
            !report["records"]
                .as_array()
                .expect("records")
                .iter()
                .any(|r| r["source"] == "school-census" && r["local_id"] == twin),
            "{twin}: {report}"
        );
    }
    let census = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "school-census")
        .expect("the census's counts");
    assert_eq!(census["records"], 6);
    assert_eq!(census["disagreeing_records"], 1);
    assert_eq!(census["invalid_identifiers"], 1);
    assert_eq!(census["duplicate_pairs"], 1);
    // Today's counts are kept.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        report["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|h| h["source"] == "school-census" && h["day"] == today.as_str()),
        "{}",
        report["history"]
    );
    let (status, csv) = gw
        .get_text(
            "/v1/reports/quality?source=school-census&format=csv",
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.contains(",disagreement,given_name,csc-returns,C1,Ava,Eve,"),
        "{csv}"
    );
    assert!(
        csv.lines().skip(1).all(|l| l.starts_with("school-census,")),
        "{csv}"
    );
    let (status, counts) = gw
        .get_text("/v1/reports/quality?format=csv&table=counts", &admin)
        .await;
    assert_eq!(status, 200, "{counts}");
    assert!(
        counts.contains(&format!("{today},school-census,6,1,6,1,")),
        "{counts}"
    );

    // The school's data manager: its own records, the fields named, none of social care's.
    let manager = env.token("dm-1", "la-schools", "data_manager");
    let (status, mine) = gw.get("/v1/reports/quality", &manager).await;
    assert_eq!(status, 200, "{mine}");
    assert!(validator.iter_errors(&mine).next().is_none(), "{mine}");
    assert_eq!(mine["scope"], "own_sources");
    let p1 = record(&mine, "school-census", "P1");
    assert_eq!(
        fields(p1),
        [
            "given_name",
            "birth_date",
            "sex",
            "postcode",
            "address",
            "school"
        ]
    );
    assert_eq!(
        record(&mine, "school-census", "P3")["likely_duplicates"][0]["local_id"],
        "P4"
    );
    let (status, csv) = gw
        .get_text("/v1/reports/quality?format=csv", &manager)
        .await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.contains("school-census,P1,disagreement,given_name,,"),
        "{csv}"
    );
    let body = mine.to_string();
    for text in [&body, &csv] {
        for theirs in SOCIAL_CARES {
            assert!(
                !text.contains(theirs),
                "{theirs} shown to the school: {text}"
            );
        }
        assert!(!text.contains("child_id"), "{text}");
    }
    // Another agency's source is refused; so is the report to a role it is not open to, and
    // a source that does not exist.
    let (status, _) = gw
        .get("/v1/reports/quality?source=csc-returns", &manager)
        .await;
    assert_eq!(status, 403);
    let dsl = env.token("dsl-1", "la-schools", "dsl");
    let (status, _) = gw.get("/v1/reports/quality", &dsl).await;
    assert_eq!(status, 403);
    let (status, _) = gw.get("/v1/reports/quality?source=nowhere", &admin).await;
    assert_eq!(status, 404);

    // Every read, and every refusal, is one audit entry.
    let ig = env.token("ig-1", &env.agency_of("social_care"), "ig_officer");
    for (user, shown, refused) in [("da-1", 3, 1), ("dm-1", 2, 1), ("dsl-1", 0, 1)] {
        let (s, r) = gw.audit_outcomes(&ig, user, "quality_report").await;
        assert_eq!((s, r), (shown, refused), "{user}: shown, refused");
    }

    // The page, from the data administrator's start page.
    let mut browser = Browser::new(&env, &gw);
    browser.sign_in(index_of("data_admin")).await;
    let home = browser.get("/").await;
    assert!(
        home.html.contains("/admin/quality"),
        "linked from the start page"
    );
    let page = browser.get("/admin/quality").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("Eve"), "both values: {}", page.html);
    assert!(page.html.contains("P4"), "the duplicate: {}", page.html);
    let csv = browser.get("/admin/quality.csv?source=school-census").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.html.starts_with("source,local_id,child_id,problem,"),
        "{}",
        csv.html
    );
    let mut browser = Browser::new(&env, &gw);
    browser.sign_in(index_of("teacher")).await;
    let page = browser.get("/admin/quality").await;
    assert_eq!(page.status, 403, "{}", page.html);
    gw.stop().await;

    // The command line: the same report, decided by the same policy.
    let admin_agency = env.agency_of("social_care");
    let (code, out, err) = run_weft(&[
        "quality",
        "--user",
        "da-cli",
        "--agency",
        &admin_agency,
        "--format",
        "csv",
        "-c",
        p,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(",disagreement,given_name,csc-returns,C1,Ava,Eve,"),
        "{out}"
    );
    let (code, out, err) = run_weft(&[
        "quality",
        "--user",
        "dm-cli",
        "--agency",
        "la-schools",
        "--role",
        "data_manager",
        "--format",
        "csv",
        "-c",
        p,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("school-census,P1,disagreement,given_name,,"),
        "{out}"
    );
    assert!(
        !out.contains("Eve") && !out.contains("csc-returns"),
        "{out}"
    );
    let (code, _, err) = run_weft(&[
        "quality",
        "--user",
        "t-cli",
        "--agency",
        "la-schools",
        "--role",
        "teacher",
        "-c",
        p,
    ]);
    assert_ne!(code, 0, "a teacher is refused: {err}");
}
