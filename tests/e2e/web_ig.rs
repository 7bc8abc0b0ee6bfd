//! The IG officer's pages, end to end over HTTPS, and break-glass from a child's page: each
//! page checked against what the JSON API returns the same person, withheld values absent from
//! the HTML, forms refused without their CSRF token, and an IG officer who is not the
//! partnership's lead seeing only their own agency's part.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use weft::dev::people::people;
use weft::foundation::config::DevPerson;
use weft_sim::sources::{POLICE_AGENCY, SCHOOL_AGENCY};

use crate::harness::{Env, Gateway};
use crate::web::{csrf, index_of, Browser};

/// An IG officer at the school: not the partnership's IG lead (the local authority's is).
const SCHOOL_IG: &str = "demo-school-ig-officer";

/// A teacher at a school the children of the simulation do not attend.
const OTHER_TEACHER: &str = "demo-other-school-teacher";

/// The demo's people, an IG officer at the school and a teacher at another, on the development sign-in page.
pub fn config(env: &Env, extra: &str) -> String {
    let mut people: Vec<DevPerson> = people().into_iter().map(|p| p.person).collect();
    people.push(DevPerson {
        user: SCHOOL_IG.into(),
        name: "Demo school IG officer".into(),
        agency: SCHOOL_AGENCY.into(),
        role: "ig_officer".into(),
        description: None,
    });
    people.push(DevPerson {
        user: OTHER_TEACHER.into(),
        name: "Demo teacher at another school".into(),
        agency: "urn-200002".into(),
        role: "teacher".into(),
        description: None,
    });
    #[derive(serde::Serialize)]
    struct Web {
        web: WebTable,
    }
    #[derive(serde::Serialize)]
    struct WebTable {
        dev_sign_in: bool,
        dev_people: Vec<DevPerson>,
    }
    let web = toml::to_string(&Web {
        web: WebTable {
            dev_sign_in: true,
            dev_people: people,
        },
    })
    .expect("toml");
    format!("{}\n{web}\n{extra}", env.config(false))
}

fn school_ig_index() -> usize {
    people().len()
}

fn other_teacher_index() -> usize {
    people().len() + 1
}

async fn start(env: &Env) -> Gateway {
    let path = env.write_config("weft.toml", &config(env, ""));
    Gateway::start(env, path).await
}

fn ig_token(env: &Env) -> String {
    let ig = people()
        .into_iter()
        .find(|p| p.person.role == "ig_officer")
        .expect("the demo's IG officer")
        .person;
    env.token(&ig.user, &ig.agency, "ig_officer")
}

/// A page's text as a person reads it: tags dropped, the escapes of `'`, `"` and `&` read.
fn text(html: &str) -> String {
    crate::web::text(html)
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The entry numbers a page of the explorer shows.
fn entry_numbers(html: &str) -> BTreeSet<i64> {
    html.split("<span class=\"govuk-body-s\">Entry ")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn entries(v: &Value) -> Vec<Value> {
    v.as_array().cloned().expect("a list of entries")
}

/// Every string value in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ig_officer_reads_the_audit_log_in_words_filtered_paged_scoped_and_verified() {
    let env = Env::new(10).await;
    let gw = start(&env).await;
    let ig = ig_token(&env);
    let scenario = env.partners.population.scenario().expect("scenario");
    let sw = people()
        .into_iter()
        .find(|p| p.person.role == "social_worker")
        .expect("social worker")
        .person;
    let sw_token = env.token(&sw.user, &sw.agency, "social_worker");
    let child = gw.child_by_nhs(&sw_token, &scenario.truth.nhs_number).await;
    let view_path = format!("/v1/children/{child}?purpose=safeguarding");
    let (s, full) = gw.get(&view_path, &sw_token).await;
    assert_eq!(s, 200, "{full}");
    // The police's search: another agency's, which the school's IG officer must not see.
    let police = env.token("pc-7", POLICE_AGENCY, "police_officer");
    let (s, _) = gw
        .post(
            "/v1/children/search",
            &police,
            &json!({"purpose": "safeguarding", "nhs_number": scenario.truth.nhs_number}),
        )
        .await;
    assert_eq!(s, 200);
    // A refusal: a teacher asking for the audit log.
    let teacher = env.token("teacher-3", SCHOOL_AGENCY, "teacher");
    assert_eq!(gw.get("/v1/audit", &teacher).await.0, 403);

    // Not an IG officer: refused, and the refusal recorded, as the API's is.
    let mut dsl = Browser::new(&env, &gw);
    dsl.sign_in(index_of("dsl")).await;
    let refused = dsl.get("/ig/audit").await;
    assert_eq!(refused.status, 403, "{}", text(&refused.html));
    let (_, denied) = gw.get("/v1/audit?user=demo-dsl&outcome=denied", &ig).await;
    assert!(
        entries(&denied)
            .iter()
            .any(|e| e["action"] == "audit_query"),
        "{denied}"
    );

    let mut officer = Browser::new(&env, &gw);
    officer.sign_in(index_of("ig_officer")).await;
    let home = officer.get("/").await;
    for link in ["/ig/audit", "/ig/break-glass", "/ig/access-report"] {
        assert!(home.html.contains(&format!("href=\"{link}\"")), "{link}");
    }
    let page = officer.get("/ig/audit").await;
    assert_eq!(page.status, 200, "{}", text(&page.html));
    let words = text(&page.html);
    assert!(page.html.contains("moj-filter-layout"));
    assert!(page.html.contains("data-module=\"moj-sortable-table\""));
    // The chain, checked against the signed checkpoints as `weft audit verify` does.
    assert!(words.contains("The record is intact"), "{words}");
    assert!(
        words.contains("signed checkpoint") || words.contains("No checkpoint has been signed yet"),
        "{words}"
    );
    // Each entry in words: who (role and agency), what, whose, why, on what lawful basis.
    assert!(words.contains("Social worker, Weftshire"), "{words}");
    assert!(
        words.contains("Looked at the child's information"),
        "{words}"
    );
    assert!(
        words.contains("Why: To keep the child safe (safeguarding)"),
        "{words}"
    );
    assert!(words.contains("Lawful basis:"), "{words}");
    assert!(words.contains("Saw:"), "{words}");
    assert!(page.html.contains(&format!("/ig/audit?child={child}")));
    // No more than the API gives the same officer: the same entries, up to the page's own read.
    let shown = entry_numbers(&page.html);
    let newest = *shown.iter().max().expect("entries");
    let (_, api) = gw
        .get(&format!("/v1/audit?limit=50&before={}", newest + 1), &ig)
        .await;
    let api_seqs: BTreeSet<i64> = entries(&api)
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(shown, api_seqs);
    // Categories by name, never a value: nothing of what the social worker saw is on the page.
    let mut values = Vec::new();
    // Who the child is, where they live, what the case notes say.
    let personal = [
        "identity.core",
        "identity.contact",
        "social_care.case_notes",
    ];
    for fields in personal.iter().filter_map(|c| full["fields"].get(*c)) {
        for field in fields.as_object().into_iter().flat_map(|o| o.values()) {
            for v in field["values"].as_array().into_iter().flatten() {
                strings(&v["value"], &mut values);
            }
        }
    }
    let agency_ids: Vec<String> = env.partners.agencies.iter().map(|a| a.id.clone()).collect();
    let values: Vec<&String> = values
        .iter()
        .filter(|v| v.len() >= 6 && !agency_ids.iter().any(|a| a.contains(v.as_str())))
        // The allocated worker's name is her user id too, which the log names as the viewer.
        .filter(|v| **v != sw.user)
        .collect();
    assert!(values.contains(&&scenario.truth.family_name));
    assert!(!values.is_empty());
    for v in values {
        assert!(
            !page.html.contains(v.as_str()),
            "{v:?} is on the audit page"
        );
    }
    // Reading the explorer is audited like the API's read, with its filters.
    let (_, reads) = gw.get("/v1/audit?user=demo-ig-officer&limit=10", &ig).await;
    assert!(entries(&reads).iter().any(|e| e["action"] == "audit_query"
        && e["outcome"] == "shown"
        && e["detail"]["filters"]["before"].is_null()));

    // Filters: by child, user, agency, purpose, outcome, dates; each the API's answer.
    let filtered = officer
        .get(&format!(
            "/ig/audit?child={child}&purpose=safeguarding&outcome=shown&agency={}",
            sw.agency
        ))
        .await;
    assert_eq!(filtered.status, 200);
    let shown = entry_numbers(&filtered.html);
    assert!(!shown.is_empty());
    let (_, api) = gw
        .get(
            &format!(
                "/v1/audit?child={child}&purpose=safeguarding&outcome=shown&agency={}&limit=50",
                sw.agency
            ),
            &ig,
        )
        .await;
    for e in entries(&api) {
        assert_eq!(e["child"], child.as_str());
        assert_eq!(e["agency"], sw.agency.as_str());
    }
    let api_seqs: BTreeSet<i64> = entries(&api)
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(shown, api_seqs);
    assert!(text(&filtered.html).contains("Selected filters"));
    let by_user = officer.get("/ig/audit?user=teacher-3").await;
    let words = text(&by_user.html);
    assert_eq!(entry_numbers(&by_user.html).len(), 1, "{words}");
    assert!(words.contains("Denied"), "{words}");
    let today = chrono::Utc::now();
    let (d, m, y) = (
        today.format("%-d").to_string(),
        today.format("%-m").to_string(),
        today.format("%Y").to_string(),
    );
    let dated = officer
        .get(&format!(
            "/ig/audit?user=teacher-3&from-day={d}&from-month={m}&from-year={y}&to-day={d}&to-month={m}&to-year={y}"
        ))
        .await;
    assert_eq!(entry_numbers(&dated.html).len(), 1);
    // Wrong filters come back with the error beside the field, and nothing is read.
    let bad = officer
        .get("/ig/audit?from-day=31&from-month=2&from-year=2026&purpose=curiosity")
        .await;
    assert_eq!(bad.status, 400);
    for field in ["from", "purpose"] {
        assert!(bad.html.contains(&format!("href=\"#{field}\"")), "{field}");
        assert!(
            bad.html.contains(&format!("id=\"{field}-error\"")),
            "{field}"
        );
    }
    assert!(bad.html.contains("value=\"31\""), "what was typed is kept");

    // The API takes the explorer's paging too; a page before entry 0 is not a page.
    assert_eq!(gw.get("/v1/audit?before=0", &ig).await.0, 400);

    // Pages of 50, newest first: more entries than a page, then the older page.
    for _ in 0..55 {
        assert_eq!(gw.get("/v1/audit?limit=1", &ig).await.0, 200);
    }
    let first = officer.get("/ig/audit").await;
    let page_one = entry_numbers(&first.html);
    assert_eq!(page_one.len(), 50);
    let at = first.html.find("rel=\"next\"").expect("an older page");
    let href = first.html[..at]
        .rsplit("href=\"")
        .next()
        .and_then(|h| h.split('"').next())
        .expect("link")
        .replace("&amp;", "&");
    let second = officer.get(&href).await;
    assert_eq!(second.status, 200);
    let page_two = entry_numbers(&second.html);
    assert!(!page_two.is_empty());
    assert!(
        page_two.iter().max() < page_one.iter().min(),
        "older, none repeated"
    );
    assert!(text(&second.html).contains("Newest entries"));

    // An IG officer at the school, not the partnership's lead: the school's staff and the
    // reads of the school's data, not the police's search.
    let mut school = Browser::new(&env, &gw);
    school.sign_in(school_ig_index()).await;
    let theirs = school.get("/ig/audit").await;
    assert_eq!(theirs.status, 200, "{}", text(&theirs.html));
    assert!(!text(&theirs.html).contains("pc-7"));
    let lead = officer.get("/ig/audit?user=pc-7").await;
    assert!(
        text(&lead.html).contains("pc-7"),
        "the lead sees the police's search"
    );
    let shown = entry_numbers(&theirs.html);
    let newest = *shown.iter().max().expect("entries");
    let school_token = env.token(SCHOOL_IG, SCHOOL_AGENCY, "ig_officer");
    let (_, api) = gw
        .get(
            &format!("/v1/audit?limit=50&before={}", newest + 1),
            &school_token,
        )
        .await;
    let api_seqs: BTreeSet<i64> = entries(&api)
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(shown, api_seqs);
    let police_filter = school.get("/ig/audit?user=pc-7").await;
    assert_eq!(entry_numbers(&police_filter.html).len(), 0);

    // A rewritten entry: the page says the record was tampered with, and where.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.store.url).await.expect("store");
    sqlx::query("UPDATE audit_log SET user_id = 'someone-else' WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    let broken = officer.get("/ig/audit").await;
    let words = text(&broken.html);
    assert!(
        words.contains("The record has been tampered with"),
        "{words}"
    );
    assert!(words.contains("at entry 2"), "{words}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_practitioner_takes_break_glass_from_the_childs_page_and_an_ig_officer_revokes_it() {
    let env = Env::new(10).await;
    let gw = start(&env).await;
    let ig = ig_token(&env);
    let scenario = env.partners.population.scenario().expect("scenario");
    let family = scenario.truth.family_name.clone();
    let sw = people()
        .into_iter()
        .find(|p| p.person.role == "social_worker")
        .expect("social worker")
        .person;
    let sw_token = env.token(&sw.user, &sw.agency, "social_worker");
    let child = gw.child_by_nhs(&sw_token, &scenario.truth.nhs_number).await;

    // A teacher at another school has no relationship with the child: the search says a child
    // matches and offers break-glass; opening the child is refused with the same offer, and
    // nothing of the child in the page.
    let mut other = Browser::new(&env, &gw);
    other.sign_in(other_teacher_index()).await;
    let otoken = other.csrf().await;
    let found = other
        .post(
            "/children/find",
            &[
                ("csrf", &otoken),
                ("purpose", "safeguarding"),
                ("nhs_number", &scenario.truth.nhs_number),
            ],
        )
        .await;
    assert_eq!(found.status, 200, "{}", text(&found.html));
    let glass = format!("/children/{child}/break-glass?purpose=safeguarding").replace('&', "&amp;");
    assert!(found.html.contains(&glass), "{}", text(&found.html));
    let refused = other
        .get(&format!("/children/{child}?purpose=safeguarding"))
        .await;
    assert_eq!(refused.status, 403);
    assert!(text(&refused.html).contains("You cannot see this child"));
    assert!(refused.html.contains(&glass));
    assert!(!refused.html.contains(&family));

    // For early help the social worker needs the family's consent, not yet recorded: the view
    // withholds, and the page offers break-glass.
    let mut worker = Browser::new(&env, &gw);
    worker.sign_in(index_of("social_worker")).await;
    let page_path = format!("/children/{child}?purpose=early_help");
    let (s, view) = gw
        .get(
            &format!("/v1/children/{child}?purpose=early_help"),
            &sw_token,
        )
        .await;
    assert_eq!(s, 200, "{view}");
    assert!(!view["withheld"].as_array().expect("withheld").is_empty());
    let before = worker.get(&page_path).await;
    assert_eq!(before.status, 200, "{}", text(&before.html));
    assert!(
        !before.html.contains(&family),
        "the withheld name is not in the HTML"
    );
    let offer = format!("/children/{child}/break-glass?purpose=early_help");
    assert!(
        before.html.contains(&offer.replace('&', "&amp;")),
        "{}",
        text(&before.html)
    );

    let form = worker.get(&offer).await;
    assert_eq!(form.status, 200);
    let token = csrf(&form.html);
    let post = format!("/children/{child}/break-glass");
    // Without the session's token: refused, no grant.
    let forged = worker
        .post(
            &post,
            &[
                ("purpose", "early_help"),
                (
                    "justification",
                    "Child disclosed harm at home today, need history now",
                ),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    // Not real text: the error beside the field, what was typed kept, no grant.
    let spaces = " ".repeat(25);
    for (justification, expect) in [
        ("too short", "Enter why you need emergency access"),
        (spaces.as_str(), "Your reason must say why"),
        ("urgent urgent urgent urgent urgent", "Your reason must"),
    ] {
        let bad = worker
            .post(
                &post,
                &[
                    ("csrf", &token),
                    ("purpose", "early_help"),
                    ("justification", justification),
                ],
            )
            .await;
        assert_eq!(bad.status, 400, "{justification:?}");
        assert!(bad.html.contains("href=\"#justification\""));
        assert!(bad.html.contains("id=\"justification-error\""));
        assert!(text(&bad.html).contains(expect), "{}", text(&bad.html));
        assert!(
            bad.html.contains(justification.trim()),
            "what was typed is kept"
        );
    }
    let (_, pending) = gw.get("/v1/ig/break-glass", &ig).await;
    assert_eq!(pending, json!([]), "no grant from a refused form");

    let reason = "Child disclosed harm at home today; family not reachable, need history now";
    let taken = worker
        .post(
            &post,
            &[
                ("csrf", &token),
                ("purpose", "early_help"),
                ("justification", reason),
            ],
        )
        .await;
    assert_eq!(taken.status, 303, "{}", text(&taken.html));
    assert_eq!(taken.location.as_deref(), Some(page_path.as_str()));
    let under = worker.get(&page_path).await;
    let words = text(&under.html);
    assert!(
        words.contains("You are seeing some of this under emergency access"),
        "{words}"
    );
    assert!(under.html.contains(&family), "released under the grant");
    // The page under the grant shows what the API shows under it.
    let (_, api_under) = gw
        .get(
            &format!("/v1/children/{child}?purpose=early_help"),
            &sw_token,
        )
        .await;
    assert!(api_under["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .any(|c| c["reason"] == "break_glass"));

    // The IG officer's queue: the grant, its reason, what was seen under it.
    let (_, queue) = gw.get("/v1/ig/break-glass", &ig).await;
    let grant = queue[0].clone();
    let gid = grant["id"].as_str().expect("grant id").to_string();
    let mut officer = Browser::new(&env, &gw);
    officer.sign_in(index_of("ig_officer")).await;
    let list = officer.get("/ig/break-glass").await;
    assert_eq!(list.status, 200, "{}", text(&list.html));
    let words = text(&list.html);
    assert!(words.contains(reason), "{words}");
    assert!(words.contains("To review"));
    assert!(list.html.contains(&format!("/ig/break-glass/{gid}")));
    let detail = officer.get(&format!("/ig/break-glass/{gid}")).await;
    assert_eq!(detail.status, 200);
    let words = text(&detail.html);
    assert!(words.contains("What was looked at under it"), "{words}");
    let viewed = grant["viewed"].as_array().expect("viewed");
    assert!(!viewed.is_empty(), "{grant}");
    assert!(words.contains("Released by this emergency access"));
    assert!(
        !detail.html.contains(&family),
        "the review names categories, not values"
    );
    let token = csrf(&detail.html);
    let review = format!("/ig/break-glass/{gid}/review");
    // Without the token: refused, still waiting.
    let forged = officer.post(&review, &[("outcome", "not_justified")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        gw.get("/v1/ig/break-glass", &ig).await.1[0]["id"],
        gid.as_str()
    );
    // No finding chosen: the error beside it.
    let none = officer
        .post(&review, &[("csrf", &token), ("notes", "checked")])
        .await;
    assert_eq!(none.status, 400);
    assert!(none.html.contains("href=\"#outcome\"") && none.html.contains("id=\"outcome-error\""));
    assert!(none.html.contains("checked"), "notes kept");

    // The school's IG officer: not theirs to see or review.
    let mut school = Browser::new(&env, &gw);
    school.sign_in(school_ig_index()).await;
    let theirs = school.get("/ig/break-glass").await;
    assert_eq!(theirs.status, 200);
    assert!(!theirs.html.contains(&gid));
    assert!(text(&theirs.html).contains("Nothing is waiting for review"));
    assert_eq!(
        school.get(&format!("/ig/break-glass/{gid}")).await.status,
        404
    );
    let stoken = csrf(&theirs.html);
    let not_theirs = school
        .post(&review, &[("csrf", &stoken), ("outcome", "justified")])
        .await;
    assert_eq!(not_theirs.status, 404);

    // Not justified: revoked at once; the page no longer shows what the grant released.
    let done = officer
        .post(
            &review,
            &[
                ("csrf", &token),
                ("outcome", "not_justified"),
                ("notes", "Consent could have been sought"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", text(&done.html));
    let after = officer
        .get(done.location.as_deref().expect("back to the queue"))
        .await;
    assert!(text(&after.html).contains("Your review was recorded"));
    assert_eq!(gw.get("/v1/ig/break-glass", &ig).await.1, json!([]));
    let (_, all) = gw.get("/v1/ig/break-glass?status=all", &ig).await;
    assert_eq!(all[0]["review"]["outcome"], "not_justified");
    let revoked = worker.get(&page_path).await;
    assert!(!revoked.html.contains(&family), "revoked at once");
    let seen = officer.get(&format!("/ig/break-glass/{gid}")).await;
    assert!(text(&seen.html).contains("Revoked"));

    // Break-glass is for practitioners: an IG officer is refused, and nothing is granted.
    let otoken = csrf(&seen.html);
    let ig_glass = officer
        .post(
            &post,
            &[
                ("csrf", &otoken),
                ("purpose", "safeguarding"),
                ("justification", reason),
            ],
        )
        .await;
    assert_eq!(ig_glass.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ig_officer_produces_a_subject_access_report_and_releases_a_deferred_access() {
    let env = Env::new(8).await;
    let gw = start(&env).await;
    let ig = ig_token(&env);
    let child = &env.partners.population.children[1];
    let la = env.agency_of("social_care");
    let sw = env.token("sw-1", &la, "social_worker");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    let view = format!("/v1/children/{id}?purpose=safeguarding");
    assert_eq!(gw.get(&view, &sw).await.0, 200);
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");
    let (s, _) = gw
        .get(&format!("{view}&exemption=police_investigation"), &police)
        .await;
    assert_eq!(s, 200);

    let mut officer = Browser::new(&env, &gw);
    officer.sign_in(index_of("ig_officer")).await;
    let ask = officer.get("/ig/access-report").await;
    assert_eq!(ask.status, 200);
    let empty = officer.get("/ig/access-report?child=").await;
    assert_eq!(empty.status, 400);
    assert!(empty.html.contains("href=\"#child\"") && empty.html.contains("id=\"child-error\""));
    let go = officer.get(&format!("/ig/access-report?child={id}")).await;
    assert_eq!(go.status, 303);
    let at = go.location.expect("to the report");
    assert_eq!(at, format!("/ig/children/{id}/access-report"));
    let page = officer.get(&at).await;
    assert_eq!(page.status, 200, "{}", text(&page.html));
    let (report_part, held_part) = page
        .html
        .split_once("Held back from the report")
        .expect("both parts");
    assert!(text(report_part).contains("Social worker"));
    assert!(
        !text(report_part).contains("Police officer"),
        "the investigation's access is held back"
    );
    assert!(text(held_part).contains("Police officer"));
    assert!(text(held_part).contains("A police investigation"));
    // The same as the API's report for the same officer.
    let (_, api) = gw
        .get(&format!("/v1/children/{id}/access-report"), &ig)
        .await;
    let roles: BTreeSet<String> = api["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .filter_map(|a| a["who"]["role"].as_str().map(String::from))
        .collect();
    for r in &roles {
        assert!(text(report_part).contains(r.as_str()), "{r}");
    }
    assert!(!roles.contains("Police officer"));
    // The family's copy: a file, with nothing of the held-back access.
    let doc = officer
        .get(&format!("/ig/children/{id}/access-report/document"))
        .await;
    assert_eq!(doc.status, 200);
    assert!(doc.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(doc.html.contains("Who has looked at this child"));
    assert!(!doc.html.contains("Police officer"));

    // Release: refused without the token; with it, the access is in the report.
    let (_, deferred) = gw
        .get(&format!("/v1/children/{id}/access-report/deferred"), &ig)
        .await;
    let entry = deferred[0]["entry"].as_i64().expect("a deferred entry");
    let release = format!("/ig/children/{id}/access-report/deferred/{entry}/release");
    assert!(page.html.contains(&release));
    assert_eq!(officer.post(&release, &[]).await.status, 403);
    let (_, still) = gw
        .get(&format!("/v1/children/{id}/access-report/deferred"), &ig)
        .await;
    assert_eq!(still.as_array().map(Vec::len), Some(1));
    let token = csrf(&page.html);
    let done = officer.post(&release, &[("csrf", &token)]).await;
    assert_eq!(done.status, 303, "{}", text(&done.html));
    let after = officer.get(done.location.as_deref().expect("back")).await;
    let (report_part, _) = after
        .html
        .split_once("Held back from the report")
        .expect("both parts");
    assert!(text(&after.html).contains("The access was released"));
    assert!(text(report_part).contains("Police officer"));
    let (_, api) = gw
        .get(&format!("/v1/children/{id}/access-report"), &ig)
        .await;
    assert!(api.to_string().contains("Police officer"));

    // Only IG officers; the school's IG officer answers for the school only.
    let mut dsl = Browser::new(&env, &gw);
    dsl.sign_in(index_of("dsl")).await;
    assert_eq!(dsl.get(&at).await.status, 403);
    let mut school = Browser::new(&env, &gw);
    school.sign_in(school_ig_index()).await;
    let theirs = school.get(&at).await;
    assert_eq!(theirs.status, 200);
    let school_token = env.token(SCHOOL_IG, SCHOOL_AGENCY, "ig_officer");
    let (_, api) = gw
        .get(&format!("/v1/children/{id}/access-report"), &school_token)
        .await;
    assert!(api["scope"]
        .as_str()
        .expect("scope")
        .starts_with("organisation"));
    let (theirs_report, _) = theirs
        .html
        .split_once("Held back from the report")
        .expect("both parts");
    let page_roles = [
        "Social worker",
        "Police officer",
        "Designated safeguarding lead",
    ];
    let api_text = api["accesses"].to_string();
    for r in page_roles {
        assert_eq!(
            text(theirs_report).contains(r),
            api_text.contains(r),
            "{r}: the page and the API differ"
        );
    }
    assert_eq!(
        school
            .post(&release, &[("csrf", &csrf(&theirs.html))])
            .await
            .status,
        404,
        "nothing of theirs to release"
    );
}
