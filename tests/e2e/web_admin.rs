//! The data administrator's pages (match review, sources' health, deliveries), addenda from a
//! concern's page, and the browsers' listener without client certificates, end to end over
//! HTTPS with a cookie-keeping client. Each page is held against what the JSON API returns the
//! same person: only data administrators reach the pages, a page shows nothing the API does
//! not, and a form posted without its CSRF token changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use weft::dev::people::people;
use weft::foundation::config::DevPerson;
use weft_sim::population::{self, System};
use weft_sim::sources::SOCIAL_CARE_AGENCY;

use crate::harness::{client, eventually, Env, Gateway};
use crate::web::{config_with_pages, csrf, index_of, Browser};

fn words(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn person(role: &str) -> DevPerson {
    people()
        .into_iter()
        .find(|p| p.person.role == role)
        .expect("person")
        .person
}

fn token(env: &Env, role: &str) -> String {
    let p = person(role);
    env.token(&p.user, &p.agency, role)
}

async fn start(env: &Env, extra: &str) -> Gateway {
    let path = env.write_config("weft.toml", &config_with_pages(env, extra));
    Gateway::start(env, path).await
}

/// Every given and family name of the simulated population that the API's answer does not
/// hold: none of them may be on the page.
fn names_not_in(env: &Env, api: &Value) -> Vec<String> {
    let text = api.to_string();
    let mut names = BTreeSet::new();
    for c in &env.partners.population.children {
        for n in [&c.truth.given_name, &c.truth.family_name] {
            if n.len() > 3 && !text.contains(n.as_str()) {
                names.insert(n.clone());
            }
        }
    }
    names.into_iter().collect()
}

/// Only data administrators reach a page: anyone else gets the refusal, signed out the sign-in
/// page.
async fn only_data_administrators(env: &Env, gw: &Gateway, path: &str) {
    let mut nobody = Browser::new(env, gw);
    let page = nobody.get(path).await;
    assert_eq!(page.status, 303, "{path}");
    assert_eq!(page.location.as_deref(), Some("/sign-in"));
    for role in ["social_worker", "dsl", "ig_officer", "mash_officer"] {
        let mut b = Browser::new(env, gw);
        b.sign_in(index_of(role)).await;
        let page = b.get(path).await;
        assert_eq!(page.status, 403, "{role} on {path}: {}", page.html);
        assert!(words(&page.html).contains("You cannot do this"), "{role}");
        let home = b.get("/").await;
        assert!(
            !home.html.contains(&format!("href=\"{path}\"")),
            "{role} is not offered {path}"
        );
    }
}

/// The demo's namesakes on the Match review page: police's record matching both girls alike is
/// proposed for each, and each proposal says why it was held and that the other is beside it;
/// the record's street is on the page beside the girl's own address.
#[tokio::test(flavor = "multi_thread")]
async fn the_review_page_says_why_a_record_matching_two_children_waits() {
    let env = Env::with_households(12).await;
    let gw = start(&env, "").await;
    let admin = token(&env, "data_admin");
    let her = env
        .partners
        .population
        .by_key(population::NAMESAKE)
        .expect("namesake");
    let record = her.identity(System::Police).expect("police record");
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let held = queue["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter(|m| m["local_id"] == record.local_id.as_str() && m["method"] == "ambiguous")
        .count();
    assert_eq!(held, 2, "{queue}");

    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("data_admin")).await;
    let page = b.get("/admin/matches").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let text = words(&page.html);
    let why = "Another child matches this record as well: both are proposed here, and confirming one ends the other";
    assert_eq!(text.matches(why).count(), 2, "{text}");
    assert!(text.contains(&record.address.line), "{text}");
    for name in names_not_in(&env, &queue) {
        assert!(
            !text.contains(&name),
            "{name} is on the page but not in the API"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_administrator_works_the_review_queue_from_the_page() {
    let env = Env::new(30).await;
    // No probability reaches 1, so every demographic match waits for a person.
    let gw = start(&env, "[matching]\nupper = 1.0\nlower = 0.5\n").await;
    let admin = token(&env, "data_admin");
    only_data_administrators(&env, &gw, "/admin/matches").await;

    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("data_admin")).await;
    let home = b.get("/").await;
    assert!(home.html.contains("href=\"/admin/matches\""));
    let page = b.get("/admin/matches").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let items = queue["matches"].as_array().expect("matches").clone();
    assert!(!items.is_empty(), "{queue}");

    // The police record of the child known only by demographics, beside the child's records.
    let child = env.partners.population.probabilistic_only().expect("child");
    let police = child.identity(System::Police).expect("police record");
    let source = env.partners.source_id(System::Police);
    let proposal = items
        .iter()
        .find(|m| m["source"] == source.as_str() && m["local_id"] == police.local_id.as_str())
        .expect("the police record awaits review")
        .clone();
    assert_eq!(
        proposal["record"]["family_name"],
        police.family_name.as_str()
    );
    assert!(
        !proposal["child_records"]
            .as_array()
            .expect("child records")
            .is_empty(),
        "{proposal}"
    );
    let html = &page.html;
    let text = words(html);
    assert!(text.contains("Is this the same child?"), "{text}");
    assert!(text.contains(&police.family_name), "the record's name");
    for r in proposal["child_records"].as_array().into_iter().flatten() {
        if let Some(f) = r["family_name"].as_str() {
            assert!(text.contains(f), "the child's record's name {f}");
        }
    }
    // The explanation in words, never the matcher's field names.
    assert!(text.contains("evidence of the same child"), "{text}");
    assert!(!text.contains("given_name") && !text.contains("birth_date"));
    // Nothing the API did not return to the same person.
    for name in names_not_in(&env, &queue) {
        assert!(
            !text.contains(&name),
            "{name} is on the page but not in the API"
        );
    }
    let (_, entries) = gw
        .get(
            "/v1/audit?user=demo-data-admin&limit=100",
            &token(&env, "ig_officer"),
        )
        .await;
    assert!(
        entries.as_array().expect("entries").iter().any(|e| {
            e["action"] == "match_review"
                && e["detail"]["records"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|x| x == &json!(format!("{source}/{}", police.local_id)))
                })
        }),
        "the look is audited with the records shown: {entries}"
    );

    let match_id = proposal["id"].as_str().expect("id").to_string();
    let path = format!("/admin/matches/{match_id}/decision");
    // Without the CSRF token: refused, nothing decided.
    let refused = b.post(&path, &[("decision", "confirm")]).await;
    assert_eq!(refused.status, 403, "{}", refused.html);
    let (_, after) = gw.get("/v1/matches/review", &admin).await;
    assert!(after["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .any(|m| m["id"] == match_id.as_str()));
    // A reason too long comes back beside its field, as typed.
    let token_value = csrf(html);
    let long = "a".repeat(1001);
    let reason_field = format!("reason-{match_id}");
    let bad = b
        .post(
            &path,
            &[
                ("csrf", &token_value),
                ("decision", "confirm"),
                (&reason_field, &long),
            ],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.html);
    assert!(bad.html.contains(&format!("href=\"#reason-{match_id}\"")));
    assert!(bad
        .html
        .contains(&format!("id=\"reason-{match_id}-error\"")));
    assert!(bad.html.contains(&long), "what was typed is kept");

    // Confirmed through the page: the same decision the API records.
    let done = b
        .post(
            &path,
            &[
                ("csrf", &token_value),
                ("decision", "confirm"),
                (&reason_field, "same date of birth and address"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(
        done.location.as_deref(),
        Some("/admin/matches?done=confirm")
    );
    let shown = b.get("/admin/matches?done=confirm").await;
    assert!(words(&shown.html).contains("The match is confirmed"));
    let child_id = proposal["child_id"].as_str().expect("child");
    let (_, links) = gw
        .get(&format!("/v1/children/{child_id}/links"), &admin)
        .await;
    let link = links["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| {
            l["source"] == source.as_str()
                && l["local_id"] == police.local_id.as_str()
                && l["status"] == "active"
        })
        .expect("linked")
        .clone();
    assert_eq!(link["decision"], "confirmed");
    assert_eq!(link["decided_by"], "demo-data-admin");
    assert_eq!(link["reason"], "same date of birth and address");

    // The child's link history: what the API returns, to the data administrator and the IG
    // officer (who may read it but not split), and to nobody else.
    let history_path = format!("/admin/children/{child_id}/links");
    let history = b.get(&history_path).await;
    assert_eq!(history.status, 200, "{}", history.html);
    let history_text = words(&history.html);
    for l in links["links"].as_array().expect("links") {
        let local = l["local_id"].as_str().expect("local id");
        assert!(history_text.contains(local), "{local} in the history");
    }
    assert!(
        history_text.contains("By a person")
            || history_text.contains("Confirmed by demo-data-admin")
    );
    let active_id = link["id"].as_str().expect("id").to_string();
    assert!(history
        .html
        .contains(&format!("/admin/matches/{active_id}/decision")));
    let mut ig = Browser::new(&env, &gw);
    ig.sign_in(index_of("ig_officer")).await;
    let theirs = ig.get(&history_path).await;
    assert_eq!(theirs.status, 200, "{}", theirs.html);
    assert!(
        !theirs.html.contains("Split this record off"),
        "IG officers do not decide"
    );
    let mut sw = Browser::new(&env, &gw);
    sw.sign_in(index_of("social_worker")).await;
    assert_eq!(sw.get(&history_path).await.status, 403);
    // Split from the history, without then with the CSRF token.
    let split_path = format!("/admin/matches/{active_id}/decision");
    let refused = b
        .post(&split_path, &[("decision", "split"), ("from", "history")])
        .await;
    assert_eq!(refused.status, 403);
    let split = b
        .post(
            &split_path,
            &[
                ("csrf", &token_value),
                ("decision", "split"),
                ("from", "history"),
            ],
        )
        .await;
    assert_eq!(split.status, 303, "{}", split.html);
    assert_eq!(
        split.location.as_deref(),
        Some(format!("{history_path}?done=split").as_str())
    );
    let (_, after_split) = gw
        .get(&format!("/v1/children/{child_id}/links"), &admin)
        .await;
    assert!(
        !after_split["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["source"] == source.as_str()
                && l["local_id"] == police.local_id.as_str()
                && l["status"] == "active"),
        "split off: {after_split}"
    );

    // Another, rejected: gone from the queue, never proposed again.
    if let Some(other) = items.iter().find(|m| m["id"] != match_id.as_str()) {
        let id = other["id"].as_str().expect("id");
        let done = b
            .post(
                &format!("/admin/matches/{id}/decision"),
                &[("csrf", &token_value), ("decision", "reject")],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.html);
        let (_, after) = gw.get("/v1/matches/review", &admin).await;
        assert!(!after["matches"]
            .as_array()
            .expect("matches")
            .iter()
            .any(|m| m["id"] == id));
    }
    // A decided match takes no second decision.
    let again = b
        .post(&path, &[("csrf", &token_value), ("decision", "reject")])
        .await;
    assert_eq!(again.status, 409, "{}", again.html);
}

/// Sets every link's model version to an older one, as a gateway upgraded to a new model finds
/// its store.
async fn age_the_links(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("store");
    sqlx::query(
        "UPDATE match_links SET model_version = 'fs-000000000000' WHERE model_version IS NOT NULL",
    )
    .execute(&pool)
    .await
    .expect("update");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_model_upgrade_the_recheck_is_on_the_page_and_a_split_takes_the_record_off() {
    let env = Env::new(30).await;
    let gw = start(&env, "").await;
    let admin = token(&env, "data_admin");
    let child = env.partners.population.probabilistic_only().expect("child");
    let police = child.identity(System::Police).expect("police record");
    let source = env.partners.source_id(System::Police);
    let sw = token(&env, "social_worker");
    let child_id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    let (_, links) = gw
        .get(&format!("/v1/children/{child_id}/links"), &admin)
        .await;
    assert!(
        links["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["source"] == source.as_str()
                && l["local_id"] == police.local_id.as_str()
                && l["method"] == "probabilistic"
                && l["status"] == "active"),
        "linked by the matcher on its own: {links}"
    );
    gw.stop().await;

    // The upgrade: links made by an older model, and a stricter gateway.
    age_the_links(&env.store.url).await;
    let gw = start(&env, "[matching]\nupper = 1.0\nlower = 0.5\n").await;
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    let recheck = queue["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .find(|m| m["source"] == source.as_str() && m["local_id"] == police.local_id.as_str())
        .expect("a recheck of the police record")
        .clone();
    assert_eq!(recheck["method"], "recheck", "{recheck}");

    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("data_admin")).await;
    let page = b.get("/admin/matches").await;
    assert_eq!(page.status, 200);
    let text = words(&page.html);
    assert!(text.contains("Does this link still stand?"), "{text}");
    assert!(text.contains("Recheck after a model upgrade"));
    assert!(text.contains("Split the record off"));
    for name in names_not_in(&env, &queue) {
        assert!(
            !text.contains(&name),
            "{name} is on the page but not in the API"
        );
    }
    let id = recheck["id"].as_str().expect("id");
    let done = b
        .post(
            &format!("/admin/matches/{id}/decision"),
            &[("csrf", &csrf(&page.html)), ("decision", "split")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location.as_deref(), Some("/admin/matches?done=split"));
    let (_, links) = gw
        .get(&format!("/v1/children/{child_id}/links"), &admin)
        .await;
    assert!(
        !links["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["source"] == source.as_str()
                && l["local_id"] == police.local_id.as_str()
                && l["status"] == "active"),
        "split off the child: {links}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_health_and_dead_letters_with_a_retry_for_the_data_administrator() {
    let env = Env::new(20).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let extra = format!(
        "[delivery]\npoll_ms = 100\nlease_secs = 2\nmax_attempts = 1\nbackoff_initial_ms = 100\n\
         backoff_max_ms = 200\nwebhook_timeout_ms = 2000\n\n[[delivery.webhooks]]\nid = \"mash-hook\"\n\
         agency = {SOCIAL_CARE_AGENCY:?}\nrole = \"mash_officer\"\nurl = \"http://127.0.0.1:{gone}/hook\"\n\
         secret = \"receiver-shared-secret-0123456789\"\n"
    );
    let gw = start(&env, &extra).await;
    let admin = token(&env, "data_admin");
    only_data_administrators(&env, &gw, "/admin/sources").await;
    only_data_administrators(&env, &gw, "/admin/deliveries").await;

    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("data_admin")).await;
    let page = b.get("/admin/sources").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let (status, api) = gw.get("/v1/status", &admin).await;
    assert_eq!(status, 200);
    let text = words(&page.html);
    let sources = api["sources"].as_array().expect("sources");
    assert!(!sources.is_empty());
    for s in sources {
        let id = s["source"].as_str().expect("id");
        assert!(text.contains(id), "{id} on the page");
        // Every source answered the index's pass: up, with a last success and a time taken.
        assert_eq!(s["state"], "ok", "{s}");
        assert!(s["last_ok_at"].is_string(), "{s}");
        assert!(s["mean_latency_ms"].is_u64(), "{s}");
    }
    let up = text.matches(" Up ").count();
    assert_eq!(up, sources.len(), "{text}");
    assert!(text.contains("Last answered") && text.contains("Circuit breaker"));
    assert!(text.contains("Closed"));
    assert!(text.contains("mean"), "latency: {text}");

    // A concern whose MASH webhook never answers: one attempt, then a dead letter.
    let nhs = env
        .partners
        .population
        .scenario()
        .expect("scenario")
        .truth
        .nhs_number
        .clone();
    gw.refer(&env, &nhs).await;
    let dead = eventually("a dead letter", Duration::from_secs(30), || async {
        let (_, dead) = gw.get("/v1/outbox?state=dead", &admin).await;
        dead.as_array().and_then(|d| d.first().cloned())
    })
    .await;
    let dead_id = dead["id"].as_str().expect("id").to_string();
    let page = b.get("/admin/deliveries").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let text = words(&page.html);
    assert!(text.contains("Dead letter"), "{text}");
    assert!(text.contains(dead["recipient"].as_str().expect("recipient")));
    assert!(page
        .html
        .contains(&format!("/admin/deliveries/{dead_id}/retry")));
    // Never what a delivery carries: the concern's words are not on the page.
    assert!(!text.contains("without a coat"), "{text}");
    let (_, listed) = gw.get("/v1/outbox?state=dead", &admin).await;
    assert_eq!(
        page.html.matches("/retry\"").count(),
        listed.as_array().expect("dead").len(),
        "one retry per dead letter the API lists"
    );

    // A retry without the CSRF token changes nothing; with it, the delivery is queued again.
    let path = format!("/admin/deliveries/{dead_id}/retry");
    let refused = b.post(&path, &[]).await;
    assert_eq!(refused.status, 403);
    let (_, still) = gw.get("/v1/outbox?state=dead", &admin).await;
    assert!(still
        .as_array()
        .expect("dead")
        .iter()
        .any(|d| d["id"] == dead_id.as_str()));
    let retried = b.post(&path, &[("csrf", &csrf(&page.html))]).await;
    assert_eq!(retried.status, 303, "{}", retried.html);
    assert_eq!(
        retried.location.as_deref(),
        Some("/admin/deliveries?retried=1")
    );
    let (_, entries) = gw
        .get(
            "/v1/audit?user=demo-data-admin&limit=200",
            &token(&env, "ig_officer"),
        )
        .await;
    assert!(
        entries
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "outbox_retry" && e["detail"]["delivery"] == dead_id.as_str()),
        "{entries}"
    );
    // Someone else's post with a stolen form but their own session: still only administrators.
    let mut sw = Browser::new(&env, &gw);
    sw.sign_in(index_of("social_worker")).await;
    let their = sw.csrf().await;
    let refused = sw.post(&path, &[("csrf", &their)]).await;
    assert_eq!(refused.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_adds_to_a_concern_from_its_page_and_nothing_typed_is_lost() {
    let env = Env::new(20).await;
    let gw = start(&env, "").await;
    let nhs = env
        .partners
        .population
        .scenario()
        .expect("scenario")
        .truth
        .nhs_number
        .clone();
    let concern = gw.refer(&env, &nhs).await;
    let mash = token(&env, "mash_officer");

    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("mash_officer")).await;
    let page = b.get(&format!("/concerns/{concern}")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let path = format!("/concerns/{concern}/addenda");
    assert!(page.html.contains(&format!("href=\"{path}\"")));
    let form = b.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.html);
    assert!(words(&form.html).contains("Add to the concern"));
    let token_value = csrf(&form.html);

    // Nothing typed: the error beside the field.
    let empty = b
        .post(&path, &[("csrf", &token_value), ("text", "  ")])
        .await;
    assert_eq!(empty.status, 400);
    assert!(empty.html.contains("href=\"#text\""));
    assert!(empty.html.contains("id=\"text-error\""));
    assert!(words(&empty.html).contains("Enter what you want to add to the concern"));
    // Too long: the error, and every character typed still in the box.
    let long = format!("Seen again at the gate. {}", "x".repeat(20_000));
    let over = b
        .post(&path, &[("csrf", &token_value), ("text", &long)])
        .await;
    assert_eq!(over.status, 400);
    assert!(words(&over.html).contains("Enter 20,000 characters or fewer"));
    assert!(over.html.contains(&long));
    // Without the CSRF token: refused, nothing added.
    let refused = b.post(&path, &[("text", "A forged addendum")]).await;
    assert_eq!(refused.status, 403);

    let added = b
        .post(
            &path,
            &[
                ("csrf", &token_value),
                ("text", "Spoke to the school nurse: seen again today."),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.html);
    assert_eq!(
        added.location.as_deref(),
        Some(format!("/concerns/{concern}").as_str())
    );
    let (_, view) = gw.get(&format!("/v1/concerns/{concern}"), &mash).await;
    let history = view["history"].as_array().expect("history");
    let addenda: Vec<&Value> = history.iter().filter(|h| h["kind"] == "addendum").collect();
    assert_eq!(addenda.len(), 1, "{view}");
    assert_eq!(
        addenda[0]["text"],
        "Spoke to the school nurse: seen again today."
    );
    assert!(!view.to_string().contains("A forged addendum"));
    let page = b.get(&format!("/concerns/{concern}")).await;
    assert!(words(&page.html).contains("Spoke to the school nurse: seen again today."));

    // Whoever the concern did not go to cannot add to it, exactly as through the API.
    let mut refused_someone = false;
    for role in ["teacher", "health_practitioner", "police_officer"] {
        let mut other = Browser::new(&env, &gw);
        other.sign_in(index_of(role)).await;
        let theirs = other.get(&path).await;
        let (api_status, _) = gw
            .get(&format!("/v1/concerns/{concern}"), &token(&env, role))
            .await;
        assert_eq!(theirs.status, api_status, "{role}: {}", theirs.html);
        refused_someone |= matches!(api_status, 403 | 404);
    }
    assert!(refused_someone, "the concern did not go to everyone");
}

/// The harness's configuration with mutual TLS on, the development sign-in page, and a
/// browsers' listener of its own.
fn config_with_browser_listener(env: &Env) -> String {
    let people: Vec<DevPerson> = people().into_iter().map(|p| p.person).collect();
    #[derive(serde::Serialize)]
    struct Web {
        web: WebTable,
    }
    #[derive(serde::Serialize)]
    struct WebTable {
        listen: String,
        dev_sign_in: bool,
        dev_people: Vec<DevPerson>,
    }
    let web = toml::to_string(&Web {
        web: WebTable {
            listen: "127.0.0.1:0".into(),
            dev_sign_in: true,
            dev_people: people,
        },
    })
    .expect("toml");
    format!("{}\n{web}\n", env.config(true))
}

#[tokio::test(flavor = "multi_thread")]
async fn with_mutual_tls_browsers_use_a_listener_of_their_own_and_agency_systems_still_need_certificates(
) {
    let env = Env::new(10).await;
    let path = env.write_config("weft.toml", &config_with_browser_listener(&env));
    let mis = env.pki.client("school-mis-system").expect("client cert");
    let system = client(&env, Some((&mis.cert_pem, &mis.key_pem)));
    let gw = Gateway::start_with(path, system.clone()).await;
    assert!(gw.web.is_some(), "the browsers' listener is announced");
    let admin = token(&env, "data_admin");

    // The main listener still asks every caller for a certificate: a browser has none.
    let browser_client = client(&env, None);
    assert!(browser_client.get(gw.url("/sign-in")).send().await.is_err());
    // An agency system with its certificate and a bearer token is served there, as before.
    let (status, api) = gw.get("/v1/sources", &admin).await;
    assert_eq!(status, 200, "{api}");

    // A browser on its own listener: no certificate asked for, the pages served.
    let mut b = Browser::new(&env, &gw).at(gw.web_url(""));
    b.sign_in(index_of("data_admin")).await;
    let page = b.get("/admin/sources").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(words(&page.html).contains("Sources' health"));

    // The API there answers the signed-in person by their session cookie …
    let cookie = b.cookie_header();
    let r = browser_client
        .get(gw.web_url("/v1/sources"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let by_cookie: Value = r.json().await.expect("json");
    let ids = |v: &Value| -> Vec<String> {
        v["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["source"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        ids(&by_cookie),
        ids(&api),
        "the same answer as through the API"
    );
    // … and the policy is the person's: a social worker's session is refused the sources.
    let mut sw = Browser::new(&env, &gw).at(gw.web_url(""));
    sw.sign_in(index_of("social_worker")).await;
    let r = browser_client
        .get(gw.web_url("/v1/sources"))
        .header("cookie", sw.cookie_header())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    // A bearer token is refused there: agency systems cannot step around mutual TLS.
    let r = browser_client
        .get(gw.web_url("/v1/sources"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // Without a session: 401.
    let r = browser_client
        .get(gw.web_url("/v1/sources"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // A change through the API needs the session's CSRF token in a header.
    let retry = gw.web_url("/v1/outbox/no-such-delivery/retry");
    let r = browser_client
        .post(&retry)
        .header("cookie", &cookie)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403, "no CSRF token");
    let token_value = b.csrf().await;
    let r = browser_client
        .post(&retry)
        .header("cookie", &cookie)
        .header("x-csrf-token", &token_value)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        404,
        "through to the write, which finds no such delivery"
    );
    // The session cookie is no credential on the main listener's API.
    let r = system
        .get(gw.url("/v1/sources"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

/// The review queue holds back where a restricted child lives: once a record of the proposed
/// child is marked restricted, neither side of the match shows a postcode or address lines —
/// the API says `address_held_back`, the page says an address was held back and shows none of
/// it, and the audit entry names the records — for a data administrator, whom policy does not
/// name for `restricted.contact`. Lifted, the addresses are back.
#[tokio::test(flavor = "multi_thread")]
async fn the_review_queue_holds_back_a_restricted_childs_address() {
    let env = Env::new(30).await;
    let gw = start(&env, "[matching]\nupper = 1.0\nlower = 0.5\n").await;
    let admin = token(&env, "data_admin");
    let child = env.partners.population.probabilistic_only().expect("child");
    let police = child.identity(System::Police).expect("police record");
    let source = env.partners.source_id(System::Police);
    let proposal = |queue: &Value| {
        queue["matches"]
            .as_array()
            .expect("matches")
            .iter()
            .find(|m| m["source"] == source.as_str() && m["local_id"] == police.local_id.as_str())
            .expect("the police record awaits review")
            .clone()
    };
    let (status, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(status, 200, "{queue}");
    let open = proposal(&queue);
    assert_eq!(open["record"]["postcode"], police.address.postcode.as_str());
    assert_eq!(open["record"]["address_held_back"], false);
    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("data_admin")).await;
    let page = b.get("/admin/matches").await;
    assert!(page.html.contains(police.address.postcode.as_str()));
    // (Other matches may involve a child the simulated health source restricts already.)
    let held_before = words(&page.html)
        .matches(weft::web::review::ADDRESS_HELD_BACK)
        .count();

    // A record of the proposed child is marked restricted.
    let proposed = open["child_id"].as_str().expect("child").to_string();
    crate::harness::mark_restricted(&env.store.url, &proposed, true).await;
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    let held = proposal(&queue);
    let records: Vec<&Value> = std::iter::once(&held["record"])
        .chain(held["child_records"].as_array().expect("child records"))
        .collect();
    assert!(records.len() > 1, "{held}");
    for r in &records {
        assert_eq!(r["address_held_back"], true, "{r}");
        assert!(r["postcode"].is_null(), "{r}");
        assert_eq!(r["address_lines"], json!([]), "{r}");
        // The rest of the record is still there to compare.
        assert!(
            r["family_name"].is_string() || r["given_name"].is_string(),
            "{r}"
        );
    }
    let postcodes: Vec<String> = [System::School, System::SocialCare, System::Police]
        .into_iter()
        .filter_map(|s| child.identity(s))
        .map(|i| i.address.postcode.clone())
        .collect();
    let body = held.to_string();
    for pc in &postcodes {
        assert!(!body.contains(pc.as_str()), "{pc} in {body}");
    }
    let page = b.get("/admin/matches").await;
    assert_eq!(page.status, 200);
    let text = words(&page.html);
    assert!(
        text.matches(weft::web::review::ADDRESS_HELD_BACK).count() > held_before,
        "the page says the address was held back: {text}"
    );
    assert!(
        text.contains(&police.family_name),
        "the record is still compared"
    );
    for pc in &postcodes {
        assert!(!page.html.contains(pc.as_str()), "{pc} on the page");
    }
    let (_, entries) = gw
        .get(
            "/v1/audit?user=demo-data-admin&limit=100",
            &token(&env, "ig_officer"),
        )
        .await;
    assert!(
        entries.as_array().expect("entries").iter().any(|e| {
            e["action"] == "match_review"
                && e["detail"]["address_held_back"]
                    .as_array()
                    .is_some_and(|r| {
                        r.iter()
                            .any(|x| x == &json!(format!("{source}/{}", police.local_id)))
                    })
        }),
        "the audit names what was held back: {entries}"
    );

    // Lifted: the addresses are back.
    crate::harness::mark_restricted(&env.store.url, &proposed, false).await;
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    let back = proposal(&queue);
    assert_eq!(back["record"]["postcode"], police.address.postcode.as_str());
    assert_eq!(back["record"]["address_held_back"], false);
}
