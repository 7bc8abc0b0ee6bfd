//! Signing in through a real OpenID Connect provider: the certified `oidc-provider` package on
//! Node, started on loopback by the test (installed by `.ci/run` into a cache folder;
//! `WEFT_OIDC_PROVIDER_DIR` says where, default `~/.cache/weft-oidc-provider`). The browser
//! is played by a client that keeps each origin's cookies and follows the redirects and forms a
//! person would; the provider's development login form takes an account id.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{Env, Gateway};

pub(crate) const SECRET: &str = "weft-test-client-secret-0123456789";

pub(crate) struct Provider {
    child: Child,
    pub(crate) issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    let dir = std::env::var("WEFT_OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/weft-oidc-provider")
        });
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "oidc-provider is not installed in {}: run .ci/run, or `npm install oidc-provider@9.13.3` there",
        dir.display()
    );
    dir
}

pub(crate) fn start_provider(redirect: &str, accounts: &Value) -> Provider {
    start_provider_signing(redirect, accounts, "RS256")
}

/// A provider whose ID tokens are signed with `alg`.
///
/// Node loads the provider's modules before it listens: seconds on a quiet machine, more than
/// thirty seen on a loaded one. Once in CI a provider stayed up without ever printing its issuer,
/// the machine otherwise idle; so a start that says nothing for a minute is asked for Node's
/// diagnostic report (where its main thread is), stopped, and tried again, twice at most. Every
/// failed start is told on stderr, and if all three fail the test fails with each one's account.
/// A wait for readiness, not a measure of speed.
fn start_provider_signing(redirect: &str, accounts: &Value, alg: &str) -> Provider {
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        match try_start_provider(redirect, accounts, alg, Duration::from_secs(60)) {
            Ok(provider) => return provider,
            Err(account) => {
                eprintln!("OpenID provider, start {attempt} of 3 failed: {account}");
                failures.push(account);
            }
        }
    }
    panic!(
        "the provider did not print its issuer in three starts:\n{}",
        failures.join("\n---\n")
    );
}

fn try_start_provider(
    redirect: &str,
    accounts: &Value,
    alg: &str,
    wait: Duration,
) -> Result<Provider, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc/provider.mjs");
    let reports = tempfile::tempdir().expect("a folder for Node's report");
    let mut child = Command::new("node")
        .arg("--report-on-signal")
        .arg("--report-compact")
        .arg(format!("--report-directory={}", reports.path().display()))
        .arg(script)
        .env("WEFT_OIDC_PROVIDER_DIR", provider_dir())
        .env("WEFT_OIDC_REDIRECT", redirect)
        .env("WEFT_OIDC_SECRET", SECRET)
        .env("WEFT_OIDC_ACCOUNTS", accounts.to_string())
        .env("WEFT_OIDC_ID_TOKEN_ALG", alg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install Node.js 20)");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("issuer ") {
                let _ = tx.send(issuer.trim().to_string());
            }
        }
    });
    // What the provider says on stderr (its first 64 KiB), kept so that a provider that never
    // comes up says why; read on a thread of its own, so a full pipe never blocks Node. The
    // thread ends with the process and hands back what it read.
    let reader = std::thread::spawn(move || {
        let mut said = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if said.len() < 64 * 1024 {
                said.push_str(&line);
                said.push('\n');
            }
        }
        said
    });
    let e = match rx.recv_timeout(wait) {
        Ok(issuer) => return Ok(Provider { child, issuer }),
        Err(e) => e,
    };
    // Its stdout closed: it is on its way out, so let it finish and say how it ended.
    if e == std::sync::mpsc::RecvTimeoutError::Disconnected {
        for _ in 0..20 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (status, report) = match child.try_wait() {
        Ok(Some(status)) => (format!("it exited ({status})"), String::new()),
        Ok(None) => (
            "it was still running".to_string(),
            node_report(&child, reports.path()),
        ),
        Err(e) => (format!("its state is unknown ({e})"), String::new()),
    };
    let _ = child.kill();
    let _ = child.wait();
    // The pipe closes with the process, so the reader ends having read every line.
    let said = reader.join().unwrap_or_default();
    Err(format!("{e}; {status}; its stderr:\n{said}{report}"))
}

/// Node's diagnostic report of a running provider, asked for with SIGUSR2: the main thread's
/// JavaScript and native stacks, and what its event loop waits on. Node writes it when its main
/// thread next reaches JavaScript, so a thread stuck in native code leaves none, which says as
/// much.
fn node_report(child: &Child, folder: &Path) -> String {
    if !crate::harness::signal(child, "USR2") {
        return "\n(no diagnostic report: the signal could not be sent)".to_string();
    }
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let written = std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .find(|f| f.path().extension().is_some_and(|x| x == "json"));
        let Some(file) = written else { continue };
        let Ok(text) = std::fs::read_to_string(file.path()) else {
            continue;
        };
        let Ok(report) = serde_json::from_str::<Value>(&text) else {
            continue; // still being written
        };
        return format!(
            "\nNode's report: javascriptStack {}\nnativeStack {}\nlibuv {}",
            report["javascriptStack"], report["nativeStack"], report["libuv"]
        );
    }
    "\n(no diagnostic report within 5 s: the main thread never reached JavaScript)".to_string()
}

/// A browser: cookies per origin (every cookie sent on every path of its origin, which is all
/// these servers need), redirects shown, not followed.
struct Browser {
    client: reqwest::Client,
    jar: BTreeMap<String, BTreeMap<String, String>>,
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
    url: url::Url,
}

impl Browser {
    fn new(env: &Env) -> Browser {
        let ca = std::fs::read(&env.pki.ca).expect("ca");
        Browser {
            client: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            jar: BTreeMap::new(),
        }
    }

    async fn send(&mut self, method: &str, url: &str, form: &[(String, String)]) -> Answer {
        let url = url::Url::parse(url).expect("url");
        let origin = url.origin().ascii_serialization();
        let cookies = self
            .jar
            .get(&origin)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let request = match method {
            "POST" => self.client.post(url.clone()).form(form),
            _ => self.client.get(url.clone()),
        };
        let r = request
            .header("cookie", cookies)
            .send()
            .await
            .expect("request");
        let jar = self.jar.entry(origin).or_default();
        for c in r.headers().get_all("set-cookie") {
            let text = c.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty()
                    || text.contains("Max-Age=0")
                    || text.contains("expires=Thu, 01 Jan 1970")
                {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_string(), v.to_string());
                }
            }
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| url.join(l).expect("location").to_string());
        Answer {
            status,
            location,
            body: r.text().await.unwrap_or_default(),
            url,
        }
    }

    /// Follows redirects and the provider's login and consent forms (signing in as `account`)
    /// until a URL `stop` says to stop at; returns that URL without requesting it.
    async fn walk(&mut self, start: &str, account: &str, stop: impl Fn(&str) -> bool) -> String {
        let mut next = (String::from("GET"), start.to_string(), Vec::new());
        for _ in 0..30 {
            let (method, url, form) = next;
            if stop(&url) {
                return url;
            }
            let answer = self.send(&method, &url, &form).await;
            if let Some(location) = answer.location {
                next = ("GET".into(), location, Vec::new());
                continue;
            }
            assert_eq!(answer.status, 200, "{url}: {}", answer.body);
            let action = attr(&answer.body, "action").expect("a form to submit");
            let action = answer.url.join(&action).expect("action").to_string();
            let prompt = if answer.body.contains("name=\"login\"") {
                "login"
            } else {
                "consent"
            };
            let mut fields = vec![("prompt".to_string(), prompt.to_string())];
            if prompt == "login" {
                fields.push(("login".into(), account.into()));
                fields.push(("password".into(), "any".into()));
            }
            next = ("POST".into(), action, fields);
        }
        panic!("the sign-in never came back");
    }
}

/// An ID token from the provider for `client_id`, as a client of its own would get one: the
/// authorisation code flow with PKCE, signing in as `sw-oidc-1`.
async fn tokens_for(env: &Env, issuer: &str, redirect: &str, client_id: &str) -> Value {
    let verifier = "test-verifier-0123456789-0123456789-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let mut auth = url::Url::parse(&format!("{issuer}/auth")).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid weft")
        .append_pair("state", "s-0123456789")
        .append_pair("nonce", "n-0123456789")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut client = Browser::new(env);
    let back = client
        .walk(auth.as_str(), "sw-oidc-1", |u| u.starts_with(redirect))
        .await;
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(client_id, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("tokens")
}

fn attr(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("{name}=\""))? + name.len() + 2;
    Some(html[at..].split('"').next()?.replace("&amp;", "&"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn a_practitioner_signs_in_through_the_agencys_openid_provider_and_its_tokens_open_the_api() {
    let env = Env::new(5).await;
    let csc = env.agency_of("social_care");
    let accounts = json!({
        "sw-oidc-1": {"name": "Social worker signed in by OIDC", "agency": csc, "role": "social_worker"},
        "nobody-1": {"name": "No role", "agency": csc, "role": "astronaut"},
    });
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/callback");
    let provider = start_provider(&redirect, &accounts);
    let issuer = &provider.issuer;

    let base = env.config(false);
    let dev_issuer = format!("issuer = {:?}", env.pki.issuer.issuer);
    assert!(base.contains(&dev_issuer), "{base}");
    let config = base
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            &dev_issuer,
            &format!("issuer = {issuer:?}\njwks_uri = \"{issuer}/jwks\""),
        );
    let config = format!(
        "{config}\n[web.oidc]\nissuer = {issuer:?}\nclient_id = \"weft\"\nclient_secret = {SECRET:?}\n\
         redirect_url = {redirect:?}\nscope = \"openid weft\"\n"
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config)).await;
    let home = gw.url("/");

    // The sign-in page offers the organisation's sign-in; it leads to the provider and back.
    let mut browser = Browser::new(&env);
    let page = browser.send("GET", &gw.url("/sign-in"), &[]).await;
    assert!(page.body.contains("/auth/login"));
    let login = browser.send("GET", &gw.url("/auth/login"), &[]).await;
    assert_eq!(login.status, 303);
    let to_provider = login.location.expect("to the provider");
    assert!(to_provider.starts_with(issuer), "{to_provider}");
    let params: BTreeMap<String, String> = url::Url::parse(&to_provider)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["response_type"], "code");
    for p in ["state", "nonce", "code_challenge"] {
        assert!(params[p].len() >= 43, "{p} has 256 bits");
    }
    let callback = browser
        .walk(&to_provider, "sw-oidc-1", |u| u.starts_with(&redirect))
        .await;
    let back = browser.send("GET", &callback, &[]).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert_eq!(
        back.location.as_deref(),
        Some(home.as_str()),
        "home, signed in"
    );
    let signed_in = browser.send("GET", &home, &[]).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert!(signed_in
        .body
        .contains("Social worker signed in by OIDC, Social worker"));

    // The same callback again finds its sign-in used: refused.
    let replay = browser.send("GET", &callback, &[]).await;
    assert_eq!(replay.status, 401);
    // A callback whose state is not the browser's is refused.
    let mut other = Browser::new(&env);
    let forged = other.send("GET", &callback, &[]).await;
    assert_eq!(forged.status, 401);

    // An account whose role the gateway does not know gets no session.
    let mut stranger = Browser::new(&env);
    let login = stranger.send("GET", &gw.url("/auth/login"), &[]).await;
    let callback = stranger
        .walk(&login.location.unwrap(), "nobody-1", |u| {
            u.starts_with(&redirect)
        })
        .await;
    let refused = stranger.send("GET", &callback, &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(stranger.send("GET", &home, &[]).await.status, 303);

    // The API accepts the provider's ID tokens through its JWKS: the test plays a client of
    // the provider itself, with its own PKCE.
    let tokens = tokens_for(&env, issuer, &redirect, "weft").await;
    let id_token = tokens["id_token"].as_str().expect("an ID token");
    let (status, body) = gw.get("/v1/concerns", id_token).await;
    assert_eq!(status, 200, "{body}");
    // A token signed by a key the provider never published is refused.
    let foreign = env.token("sw-oidc-1", &csc, "social_worker");
    assert_eq!(gw.get("/v1/concerns", &foreign).await.0, 401);
    drop(provider);
    assert!(gw.stop().await.success());

    // A provider that signs with ES256 signs with either `s`: its ID token verifies whichever
    // of its two encodings arrives, so the test sends the token and its twin `(r, n − s)`.
    let provider = start_provider_signing(&redirect, &accounts, "ES256");
    let issuer = &provider.issuer;
    let config = base.replace(
        &dev_issuer,
        &format!("issuer = {issuer:?}\njwks_uri = \"{issuer}/jwks\""),
    );
    let gw = Gateway::start(&env, env.write_config("es256.toml", &config)).await;
    let tokens = tokens_for(&env, issuer, &redirect, "weft").await;
    let es256 = tokens["id_token"].as_str().expect("an ID token");
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(
        &engine
            .decode(es256.split('.').next().expect("header"))
            .expect("base64"),
    )
    .expect("header");
    assert_eq!(header["alg"], "ES256", "{header}");
    let (signed, signature) = es256.rsplit_once('.').expect("signed");
    let mut twin = engine.decode(signature).expect("signature");
    let arrived_low = weft::pipeline::authenticate::is_low_s(&twin);
    weft::pipeline::authenticate::flip_s(&mut twin);
    assert_ne!(weft::pipeline::authenticate::is_low_s(&twin), arrived_low);
    let twin = format!("{signed}.{}", engine.encode(twin));
    for token in [es256, twin.as_str()] {
        let (status, body) = gw.get("/v1/concerns", token).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(provider);
}
