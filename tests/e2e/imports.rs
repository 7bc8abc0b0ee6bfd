//! `weft import` on a `file` source, then views served from the import by the real gateway.

use serde_json::json;

use crate::harness::{run_weft, Env, Gateway};

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
    assert!(out.contains("stray text \"PersonBirthDate\""), "{out}");
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
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let (status, found) = gw
        .post(
            "/v1/children/search",
            &sw,
            &json!({"purpose": "safeguarding", "local_id": {"source": "cin-census", "id": "DfEX0000001"}}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let id = found["children"][0]["id"]
        .as_str()
        .expect("child id")
        .to_string();
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
    gw.stop();
}
