//! Who may ask: tokens, purposes, mutual TLS.

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{client, Env, Gateway};

#[tokio::test(flavor = "multi_thread")]
async fn purpose_is_required_and_must_be_known() {
    let env = Env::new(6).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;

    let (status, body) = gw.get(&format!("/v1/children/{id}"), &sw).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/purpose", "{body}");
    assert!(body.get("fields").is_none());

    let (status, body) = gw
        .get(&format!("/v1/children/{id}?purpose=curiosity"), &sw)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("safeguarding"),
        "{body}"
    );

    let (status, body) = gw
        .post(
            "/v1/children/search",
            &sw,
            &json!({"nhs_number": child.truth.nhs_number}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_401_and_nothing_else() {
    let env = Env::new(4).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let agency = env.agency_of("social_care");
    let now = chrono::Utc::now().timestamp();
    let issuer = &env.pki.issuer;
    let claims = |exp: i64, aud: &str, iss: &str| {
        json!({"sub": "sw-1", "agency": agency, "role": "social_worker",
               "iss": iss, "aud": aud, "nbf": now - 10, "iat": now - 10, "exp": exp})
    };
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(now + 600, &issuer.audience, &issuer.issuer),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .expect("hs256");
    let minted = issuer.mint("sw-1", &agency, "social_worker", 600);
    let (signed, signature) = minted.rsplit_once('.').expect("three parts");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut sig = b64.decode(signature).expect("base64url");
    weft::pipeline::authenticate::flip_s(&mut sig);
    let high_s = format!("{signed}.{}", b64.encode(sig));
    let mut nobody = claims(now + 600, &issuer.audience, &issuer.issuer);
    nobody["sub"] = json!("");
    let mut no_iat = claims(now + 600, &issuer.audience, &issuer.issuer);
    no_iat.as_object_mut().expect("object").remove("iat");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("the same token, signed with n − s", Some(high_s)),
        ("empty sub", Some(issuer.sign(nobody))),
        ("no iat", Some(issuer.sign(no_iat))),
        (
            "expires in 2100",
            Some(issuer.sign(claims(4_102_444_800, &issuer.audience, &issuer.issuer))),
        ),
        (
            "expired",
            Some(issuer.sign(claims(now - 120, &issuer.audience, &issuer.issuer))),
        ),
        (
            "wrong audience",
            Some(issuer.sign(claims(now + 600, "someone-else", &issuer.issuer))),
        ),
        (
            "wrong issuer",
            Some(issuer.sign(claims(now + 600, &issuer.audience, "https://evil.invalid"))),
        ),
        (
            "not yet valid",
            Some(issuer.sign(
                json!({"sub": "sw-1", "agency": agency, "role": "social_worker",
            "iss": issuer.issuer, "aud": issuer.audience, "nbf": now + 3600, "exp": now + 7200}),
            )),
        ),
        (
            "unknown role",
            Some(issuer.mint("sw-1", &agency, "janitor", 600)),
        ),
        (
            "unknown agency",
            Some(issuer.mint("sw-1", "nowhere", "social_worker", 600)),
        ),
        ("HS256", Some(hs256)),
        ("garbage", Some("not.a.token".into())),
    ];
    for (what, token) in cases {
        let mut req = gw
            .client()
            .get(gw.url("/v1/children/anything?purpose=safeguarding"));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body, json!({"error": "unauthorized"}), "{what}");
    }
    // The token whose twin was refused is itself good.
    let (status, _) = gw
        .get("/v1/children/anything?purpose=safeguarding", &minted)
        .await;
    assert_ne!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_unknown_client_certificates() {
    let env = Env::new(4).await;
    let path = env.write_config("weft.toml", &env.config(true));
    let mis = env.pki.client("school-mis-system").expect("client cert");
    let good = client(&env, Some((&mis.cert_pem, &mis.key_pem)));
    let gw = Gateway::start_with(path, good.clone()).await;

    // No certificate: the handshake fails, no HTTP status at all.
    let none = client(&env, None);
    assert!(none.get(gw.url("/healthz")).send().await.is_err());

    // A certificate from another CA: the handshake fails.
    let other = weft::dev::pki::DevPki::generate(&env.dir.path().join("other-pki")).expect("pki");
    let stranger = other.client("impostor").expect("cert");
    let bad = client(&env, Some((&stranger.cert_pem, &stranger.key_pem)));
    assert!(bad.get(gw.url("/healthz")).send().await.is_err());

    // The right certificate: served, and the calling system is named in the audit entry.
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let r = good
        .post(gw.url("/v1/children/search"))
        .bearer_auth(&sw)
        .json(&json!({"purpose": "safeguarding", "nhs_number": child.truth.nhs_number}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let ig = env.token("ig-1", &env.agency_of("social_care"), "ig_officer");
    let entries: Value = good
        .get(gw.url("/v1/audit?user=sw-1"))
        .bearer_auth(&ig)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert_eq!(
        entries[0]["detail"]["client"], "school-mis-system",
        "{entries}"
    );
}
