//! `weft import` on a `file` source, then views served from the import by the real gateway;
//! files that must not hurt it (nested 60,000 deep, cut to their header, carrying personal data
//! where a date should be), by the command and by a gateway watching the folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{block_audit, run_weft, Env, Gateway};

fn sample(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/samples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_then_view_served_from_the_import() {
    let env = Env::new(4).await;
    let drop = env.dir.path().join("drop");
    std::fs::create_dir(&drop).expect("drop folder");
    std::fs::copy(
        sample("cin_census_d2i_CIN_Census_2026.xml"),
        drop.join("cin_2026.xml"),
    )
    .expect("copy sample");
    let config = format!(
        "{}\n[[agencies]]\nid = \"la-returns\"\nname = \"LA statutory returns\"\nkind = \"social_care\"\n\n\
         [[sources]]\nid = \"cin-census\"\nagency = \"la-returns\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"drop\"\n\
         files = [{{ format = \"cin_xml\", name = \"cin_*.xml\" }}]\n",
        env.config(false),
    );
    // The folder is relative to the configuration file, wherever weft is started from.
    assert_eq!(env.dir.path().join("drop"), drop);
    let bad = env.write_config("bad.toml", &config.replace("\"cin_xml\"", "\"dbase_iii\""));
    let (code, _, err) = run_weft(&["config", "check", "-c", bad.to_str().expect("path")]);
    assert_ne!(code, 0);
    assert!(err.contains("format"), "the schema names the key: {err}");

    let path = env.write_config("weft.toml", &config);
    let p = path.to_str().expect("path");

    let (code, out, err) = run_weft(&["import", "cin-census", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied — 2 records: 2 added"), "{out}");
    assert!(
        out.contains("cin_2026.xml line 23: stray text inside <ChildIdentifiers> ignored"),
        "{out}"
    );
    assert!(out.contains("1 with an invalid identifier"), "{out}");

    let (code, out, _) = run_weft(&["import", "cin-census", "-c", p]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");

    // A truncated drop is rejected with its location; the previous import stays.
    let good = std::fs::read(drop.join("cin_2026.xml")).expect("read");
    std::fs::write(drop.join("cin_2026.xml"), &good[..3000]).expect("truncate");
    let (code, _, err) = run_weft(&["import", "cin-census", "-c", p]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cin_2026.xml line "), "{err}");
    assert!(err.contains("previous data kept"), "{err}");

    let (code, _, err) = run_weft(&["import", "no-such-source", "-c", p]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-source"), "{err}");

    let gw = Gateway::start(&env, path).await;
    // A local id is searched in the searcher's own agency's sources only.
    let returns = env.token("sw-returns", "la-returns", "social_worker");
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let (status, refused) = gw
        .post(
            "/v1/children/search",
            &sw,
            &json!({"purpose": "safeguarding", "local_id": {"source": "cin-census", "id": "DfEX0000001"}}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, found) = gw
        .post(
            "/v1/children/search",
            &returns,
            &json!({"purpose": "safeguarding", "local_id": {"source": "cin-census", "id": "DfEX0000001"}}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let id = found["children"][0]["id"]
        .as_str()
        .expect("child id")
        .to_string();
    gw.refer_child(&env, json!({"weft_id": id})).await;
    let (status, view) = gw
        .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(status, 200, "{view}");
    let source = view["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == "cin-census"))
        .expect("file source in view");
    assert_eq!(source["status"], "shown", "{view}");
    let episodes = &view["fields"]["social_care.status"]["episodes"]["values"][0]["value"];
    assert_eq!(episodes[0]["kind"], "child_in_need", "{view}");
    assert_eq!(episodes[0]["category"], "N4", "{view}");
    assert_eq!(
        view["fields"]["identity.core"]["birth_date"]["values"][0]["value"],
        "2015-03-27"
    );
    gw.stop().await;
}

/// The configuration of `env` with one more agency and a `file` source reading `folder`.
fn with_file_source(env: &Env, id: &str, files: &str, extra: &str) -> String {
    format!(
        "{}\n[[agencies]]\nid = \"la-returns\"\nname = \"LA statutory returns\"\nkind = \"social_care\"\n\n\
         [[sources]]\nid = {id:?}\nagency = \"la-returns\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"drop\"\nfiles = [{files}]\n{extra}",
        env.config(false),
    )
}

fn drop_folder(env: &Env) -> PathBuf {
    let drop = env.dir.path().join("drop");
    std::fs::create_dir_all(&drop).expect("drop folder");
    drop
}

/// A Common Transfer File whose pupil data is nested `depth` elements deep: the shape of the
/// 420 KB drop that overflowed the stack.
fn nested_ctf(depth: usize) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<CTfile>\n<CTFpupilData>{}{}</CTFpupilData>\n</CTfile>\n",
        "<Pupil>".repeat(depth),
        "</Pupil>".repeat(depth)
    )
}

fn ctf_fixture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapters/tests/data/ctf.xml"),
    )
    .expect("CTF fixture")
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deeply_nested_file_is_rejected_and_a_watching_gateway_sets_it_aside() {
    let env = Env::new(2).await;
    let drop = drop_folder(&env);
    let deep = nested_ctf(60_000);
    assert!(deep.len() > 400_000);
    std::fs::write(drop.join("pupils.CTF.xml"), &deep).expect("write");
    let config = with_file_source(
        &env,
        "school-ctf",
        r#"{ format = "ctf_xml", name = "*.CTF.xml" }"#,
        "watch_secs = 1\n",
    );
    let path = env.write_config("weft.toml", &config);
    let p = path.to_str().expect("path");

    // The command rejects it, naming the file, the line and the limit; it does not abort.
    let (code, _, err) = run_weft(&["import", "school-ctf", "-c", p]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pupils.CTF.xml line 3: elements nested more than 32 deep (limits.xml_depth)"),
        "{err}"
    );

    // A gateway watching the folder stays up, and moves the drop aside with the reason.
    let gw = Gateway::start(&env, path.clone()).await;
    let aside = wait_for("the drop set aside", async || {
        let dirs = std::fs::read_dir(drop.join("rejected")).ok()?;
        let dir = dirs.filter_map(Result::ok).next()?.path();
        dir.join("pupils.CTF.xml").exists().then_some(dir)
    })
    .await;
    let why = std::fs::read_to_string(aside.join("REJECTED.txt")).expect("reason beside it");
    assert!(why.contains("limits.xml_depth"), "{why}");
    assert!(!drop.join("pupils.CTF.xml").exists());
    let (status, _) = gw.get("/healthz", "").await;
    assert_eq!(status, 200);

    // The next drop is imported as usual.
    std::fs::write(drop.join("pupils.CTF.xml"), ctf_fixture()).expect("write");
    let sw = env.token("sw-returns", "la-returns", "social_worker");
    let search = json!({"purpose": "safeguarding",
                        "local_id": {"source": "school-ctf", "id": "B801200005001"}});
    wait_for("the next drop imported", async || {
        let (status, found) = gw.post("/v1/children/search", &sw, &search).await;
        (status == 200 && found["children"].as_array().is_some_and(|c| !c.is_empty())).then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drop_cut_to_its_header_is_refused_until_removals_are_allowed() {
    let env = Env::new(2).await;
    let drop = drop_folder(&env);
    let pupils = drop.join("pupils.csv");
    let header = "UPN,Surname,Forename,DOB,Sex\n";
    std::fs::write(
        &pupils,
        format!(
            "{header}B801200005001,Khan,Sara,27/03/2012,F\n\
             A801200005001,Smith,Jo,02/01/2013,M\nP207000016049,Patel,Ravi,05/06/2011,M\n"
        ),
    )
    .expect("write");
    let config = with_file_source(
        &env,
        "school-census",
        r#"{ format = "census_pupils_csv", name = "pupils*.csv" }"#,
        "",
    );
    let path = env.write_config("weft.toml", &config);
    let p = path.to_str().expect("path");
    let (code, out, err) = run_weft(&["import", "school-census", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 added"), "{out}");

    std::fs::write(&pupils, header).expect("write");
    let (code, out, err) = run_weft(&["import", "school-census", "-c", p]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("import refused, previous data kept: the drop would remove all 3 records"),
        "{err}"
    );
    let (code, out, err) = run_weft(&["import", "school-census", "--allow-removals", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 records: 0 added, 0 changed, 3 removed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_messages_and_records_name_the_fault_never_the_value() {
    let env = Env::new(2).await;
    let drop = drop_folder(&env);
    let secret = "Jane Doe, 12 Secret Lane, WT9 9ZZ";
    let config = with_file_source(
        &env,
        "school-census",
        r#"{ format = "census_pupils_csv", name = "pupils*.csv" }"#,
        "",
    );
    let path = env.write_config("weft.toml", &config);
    let p = path.to_str().expect("path");
    let store = weft::foundation::store::Store::open(
        &secrecy::SecretString::from(env.store.url.clone()),
        1,
    )
    .await
    .expect("store");
    let last_notes = async || {
        weft::write::imports::last_import(&store, "school-census")
            .await
            .expect("import runs")
            .expect("a run")
            .notes
            .join("\n")
    };

    let cases = [
        (
            format!("UPN,Surname,DOB\nB801200005001,Khan,\"{secret}\"\n"),
            "pupils.csv line 2 column dob: not a date",
        ),
        (
            format!("UPN,Surname,Sex\nB801200005001,Khan,\"{secret}\"\n"),
            "pupils.csv line 2 column sex: not a sex code",
        ),
        (
            format!("UPN,Surname\nB801200005001,\"{}\"\n", secret.repeat(1000)),
            "pupils.csv line 2 field 2: value over the limit of 8192 bytes (limits.field_bytes)",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(drop.join("pupils.csv"), text).expect("write");
        let (code, out, err) = run_weft(&["import", "school-census", "-c", p]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(expected), "{err}");
        let notes = last_notes().await;
        assert!(notes.contains(expected), "{notes}");
        for text in [&out, &err, &notes] {
            assert!(!text.contains("Jane") && !text.contains("WT9"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_the_audit_cannot_record_is_not_applied() {
    let env = Env::new(4).await;
    let drop = drop_folder(&env);
    std::fs::copy(
        sample("cin_census_d2i_CIN_Census_2026.xml"),
        drop.join("cin_2026.xml"),
    )
    .expect("copy sample");
    let text = with_file_source(
        &env,
        "cin-census",
        "{ format = \"cin_xml\", name = \"cin_*.xml\" }",
        "",
    );
    let path = env.write_config("weft.toml", &text);
    let p = path.to_str().expect("path");
    // Opening the store once creates its tables, so the audit can be blocked before the import.
    let (code, out, err) = run_weft(&["audit", "verify", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");
    let count = |table: &'static str| {
        let url = env.store.url.clone();
        async move {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.expect("store");
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .expect("count");
            n
        }
    };

    block_audit(&env.store.url, true).await;
    let (code, out, err) = run_weft(&["import", "cin-census", "-c", p]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("audit log cannot be written"), "{err}");
    assert_eq!(count("import_records").await, 0, "no record stored");
    assert_eq!(count("import_runs").await, 0, "not even the attempt");
    assert_eq!(count("audit_log").await, 0);

    block_audit(&env.store.url, false).await;
    let (code, out, err) = run_weft(&["import", "cin-census", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(count("import_records").await, 2);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.store.url).await.expect("store");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'import' AND outcome = 'applied'",
    )
    .fetch_one(&pool)
    .await
    .expect("the import's entry");
    let detail: serde_json::Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["source"], "cin-census");
    assert_eq!(detail["added"], 2);
    assert_eq!(detail["files"][0]["name"], "cin_2026.xml");
}
