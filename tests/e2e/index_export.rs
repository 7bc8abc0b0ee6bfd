//! `weft index export`: the master child index as CSV from the store a configuration names,
//! on either store, attributed in the audit log to the operator who ran it.

use sqlx::Connection;

use crate::harness::{run_weft, Env};

/// The index's export entries as (user, role, outcome, detail), read from outside the gateway.
async fn export_entries(url: &str) -> Vec<(String, String, String, String)> {
    let sql = "SELECT user_id, role, outcome, detail FROM audit_log \
               WHERE action = 'index_export' ORDER BY seq";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_as(sql)
            .fetch_all(&mut c)
            .await
            .expect("entries")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_as(sql)
            .fetch_all(&mut c)
            .await
            .expect("entries")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn index_export_writes_each_records_link_and_is_audited() {
    let env = Env::new(2).await;
    let drop = env.dir.path().join("drop");
    std::fs::create_dir_all(&drop).expect("drop folder");
    // Two records of one pupil under one valid UPN (linked by it), and a pupil of their own.
    std::fs::write(
        drop.join("pupils.csv"),
        "PupilID,UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode\n\
         1001,B801200005001,Khan,Sara,27/03/2012,F,AB1 2CD\n\
         1002,B801200005001,Khan,Sara,27/03/2012,F,AB1 2CD\n\
         1003,,Patel,Ravi,05/06/2011,M,AB2 4GH\n",
    )
    .expect("write");
    let config = format!(
        "{}\n[[agencies]]\nid = \"la-returns\"\nname = \"LA statutory returns\"\nkind = \"education\"\n\n\
         [[sources]]\nid = \"school-census\"\nagency = \"la-returns\"\n\n\
         [sources.adapter]\nkind = \"file\"\nfolder = \"drop\"\n\
         files = [{{ format = \"census_pupils_csv\", name = \"pupils*.csv\" }}]\n",
        env.config(false),
    );
    let path = env.write_config("weft.toml", &config);
    let p = path.to_str().expect("path");
    let (code, out, err) = run_weft(&["import", "school-census", "-c", p]);
    assert_eq!(code, 0, "{out}{err}");

    let csv_path = env.dir.path().join("index.csv");
    let csv = csv_path.to_str().expect("path");
    let (code, out, err) = run_weft(&[
        "index",
        "export",
        "-c",
        p,
        "--operator",
        "data-team analyst",
        "--reason",
        "DR-2026-114",
        "--out",
        csv,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("exported 3 records"), "{err}");
    let text = std::fs::read_to_string(&csv_path).expect("export written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "source,local_id,child_id,link_method,probability,model_version"
    );
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    let child = |i: usize| rows[i][2];
    assert!(!child(0).is_empty() && !child(2).is_empty(), "{text}");
    assert_eq!(child(0), child(1), "linked by their UPN: {text}");
    assert_ne!(child(0), child(2), "{text}");
    assert_eq!(
        rows,
        vec![
            vec!["school-census", "1001", child(0), "new", "", ""],
            vec!["school-census", "1002", child(0), "identifier:upn", "", ""],
            vec!["school-census", "1003", child(2), "new", "", ""],
        ]
    );

    // To standard output, and only the sources asked for; an unknown one is named.
    let (code, out, err) = run_weft(&[
        "index",
        "export",
        "-c",
        p,
        "--operator",
        "IG officer",
        "--source",
        "school-census",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, text);
    let (code, out, err) = run_weft(&[
        "index",
        "export",
        "-c",
        p,
        "--operator",
        "IG officer",
        "--source",
        "no-such-source",
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("--source no-such-source: no such source"),
        "{err}"
    );

    let entries = export_entries(&env.store.url).await;
    assert_eq!(
        entries.len(),
        2,
        "one entry per export, none for a refused one"
    );
    let (user, role, outcome, detail) = &entries[0];
    assert_eq!(
        (user.as_str(), role.as_str(), outcome.as_str()),
        ("data-team analyst", "operator", "exported")
    );
    let detail: serde_json::Value = serde_json::from_str(detail).expect("detail");
    assert_eq!(detail["rows"], 3);
    assert_eq!(detail["reason"], "DR-2026-114");
    assert_eq!(entries[1].0, "IG officer");
    let (code, out, _) = run_weft(&["audit", "verify", "-c", p]);
    assert_eq!(code, 0, "{out}");
}
