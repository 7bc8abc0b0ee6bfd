//! Starts the real `weft` binary against real services: simulated partner systems on loopback
//! (FHIR over HTTP, SQL databases, a JSON police API), a gateway store that is a fresh SQLite file
//! or a fresh PostgreSQL database (`WEFT_TEST_STORE=postgres`), HTTPS with throwaway
//! certificates, and tokens signed by a throwaway issuer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft::dev::config::DevConfig;
use weft::dev::pki::DevPki;
use weft::foundation::config::{AgencyConfig, AgencyKind};
use weft_adapters::testkit::{self, FreshDb};
use weft_sim::{self as sim, PartnerSystems};

pub const BIN: &str = env!("CARGO_BIN_EXE_weft");

/// Which database the gateway's own store runs on in this test run.
pub fn store_backend() -> &'static str {
    match std::env::var("WEFT_TEST_STORE").as_deref() {
        Ok("postgres") => "postgres",
        _ => "sqlite",
    }
}

/// A fresh database for the gateway's store, of the kind this run tests.
pub async fn fresh_store(dir: &Path) -> FreshDb {
    match store_backend() {
        "postgres" => testkit::fresh_postgres()
            .await
            .expect("WEFT_TEST_STORE=postgres needs WEFT_TEST_POSTGRES_URL"),
        _ => testkit::fresh_sqlite(dir),
    }
}

/// Everything one test runs against.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    pub partners: PartnerSystems,
    pub store: FreshDb,
    /// Keeps the social-care database alive for the test's duration.
    _social_care: Option<FreshDb>,
}

impl Env {
    /// Partner systems for `children` synthetic children. Social care runs on MariaDB when
    /// `WEFT_TEST_MARIADB_URL` is set (CI always sets it), else on a SQLite file.
    pub async fn new(children: usize) -> Env {
        Self::with_population(sim::population::generate(7, children)).await
    }

    /// As [`Env::new`], with the four children `weft demo` adds (twins, their brother, a girl
    /// born the same day) after the `children`.
    pub async fn with_households(children: usize) -> Env {
        Self::with_population(sim::population::generate_with_households(7, children)).await
    }

    async fn with_population(pop: sim::Population) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::generate(&dir.path().join("pki")).expect("dev PKI");
        let social_care = testkit::fresh_mariadb().await;
        let partners = PartnerSystems::start(
            &dir.path().join("partners"),
            &pop,
            social_care.as_ref().map(|d| d.url.clone()),
            None,
        )
        .await
        .expect("partner systems start");
        let store = fresh_store(dir.path()).await;
        Env {
            dir,
            pki,
            partners,
            store,
            _social_care: social_care,
        }
    }

    /// A complete configuration for a gateway on this environment; `mtls` turns on mutual TLS.
    /// Tests add tables after it (`[matching]`, `[delivery]`, further sources).
    pub fn config(&self, mtls: bool) -> String {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let policy = (
            repo.join("policies/model.conf"),
            repo.join("policies/policy.csv"),
        );
        let mut config = DevConfig::new(&self.pki, &self.store.url, policy)
            .set("database.max_connections", 8)
            .audit_checkpoints(self.dir.path())
            .expect("audit signing key")
            // The local authority's IG officers audit the partnership, as in the demo; an IG
            // officer anywhere else audits their own agency.
            .set(
                "audit.ig_lead_agencies",
                vec![weft_sim::sources::SOCIAL_CARE_AGENCY.to_string()],
            )
            .partners(&self.partners.agencies, &self.partners.sources);
        // A second school and an education welfare service: callers whose systems are not sources.
        for (id, kind) in [
            ("urn-200002", AgencyKind::Education),
            ("la-ewo", AgencyKind::Education),
        ] {
            config = config.agency(AgencyConfig {
                id: id.into(),
                name: id.into(),
                kind,
                // The education welfare service is the simulated county's own.
                local_authority: (id == "la-ewo")
                    .then(|| weft::dev::config::SIM_LOCAL_AUTHORITY.to_string()),
            });
        }
        if mtls {
            config = config.mutual_tls(&self.pki);
        }
        config.to_toml().expect("configuration")
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A token for a practitioner, valid for ten minutes.
    pub fn token(&self, user: &str, agency: &str, role: &str) -> String {
        self.pki.issuer.mint(user, agency, role, 600)
    }

    /// The id of the first agency of a kind among the partner systems.
    pub fn agency_of(&self, kind: &str) -> String {
        self.partners
            .agencies
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.id.clone())
            .expect("agency of kind")
    }
}

/// The lines a gateway started with [`Gateway::start_logged`] has logged so far.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The browsers' listener (`web.listen`), when configured.
    pub web: Option<SocketAddr>,
    client: reqwest::Client,
}

impl Gateway {
    /// Starts `weft serve` with a configuration and waits until it listens and `/readyz` says
    /// the first index pass is done.
    pub async fn start(env: &Env, config: PathBuf) -> Gateway {
        Self::start_with(config, client(env, None)).await
    }

    /// As [`Gateway::start`], checking readiness with a given client (e.g. one presenting a
    /// client certificate, when mutual TLS is on).
    pub async fn start_with(config: PathBuf, client: reqwest::Client) -> Gateway {
        Self::spawn(config, client, None).await
    }

    /// As [`Gateway::start`], keeping every line the gateway logs (warnings and errors) for the
    /// test to read, as well as passing them on.
    pub async fn start_logged(env: &Env, config: PathBuf) -> (Gateway, Logs) {
        let logs = Logs::default();
        let gw = Self::spawn(config, client(env, None), Some(logs.clone())).await;
        (gw, logs)
    }

    async fn spawn(config: PathBuf, client: reqwest::Client, logs: Option<Logs>) -> Gateway {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("WEFT_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(if logs.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn weft");
        if let (Some(logs), Some(stderr)) = (logs, child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if let Ok(mut l) = logs.0.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let (web_tx, web_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Printed before the listening line, so it has arrived by then.
                if let Some(addr) = line.strip_prefix("weft: browsers on https://") {
                    let _ = web_tx.send(addr.trim().to_string());
                }
                if let Some(addr) = line.strip_prefix("weft: listening on https://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("gateway printed its address")
            .parse()
            .expect("address parses");
        let web = web_rx.try_recv().ok().and_then(|a| a.parse().ok());
        let gw = Gateway {
            child,
            addr,
            web,

            client,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gateway never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// A URL on the browsers' listener.
    pub fn web_url(&self, path: &str) -> String {
        let web = self.web.expect("the gateway has a browsers' listener");
        format!("https://127.0.0.1:{}{path}", web.port())
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The gateway process's id, to set its resource limits.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many of `user`'s audit entries for `action` were `shown` and how many not, as an IG
    /// officer (token `ig`) reads them.
    pub async fn audit_outcomes(&self, ig: &str, user: &str, action: &str) -> (usize, usize) {
        let (status, entries) = self.get(&format!("/v1/audit?user={user}"), ig).await;
        assert_eq!(status, 200, "{entries}");
        let mine: Vec<&Value> = entries
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["action"] == action)
            .collect();
        let shown = mine.iter().filter(|e| e["outcome"] == "shown").count();
        (shown, mine.len() - shown)
    }

    /// `GET path` with a token; returns status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` returning the raw body text too, for checks over the whole response.
    pub async fn get_text(&self, path: &str, token: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Finds a child's Weft id by NHS number, as a social worker would.
    pub async fn child_by_nhs(&self, token: &str, nhs: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/children/search",
                token,
                &serde_json::json!({"purpose": "safeguarding", "nhs_number": nhs}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let children = body["children"].as_array().expect("children");
        assert_eq!(
            children.len(),
            1,
            "exactly one child for the NHS number: {body}"
        );
        children[0]["id"].as_str().expect("id").to_string()
    }

    /// Refers a child, as the school's DSL raising a concern: routed to the MASH (and to the
    /// allocated worker of an open case), it gives the children's social care agency a referral
    /// relationship and puts the child in the MASH's triage, which is how a practitioner
    /// without another relationship comes to see a child. Returns the concern's id.
    pub async fn refer(&self, env: &Env, nhs: &str) -> String {
        self.refer_child(env, serde_json::json!({"nhs_number": nhs}))
            .await
    }

    /// [`Gateway::refer`] for a child named any way a concern may name it.
    pub async fn refer_child(&self, env: &Env, child: Value) -> String {
        let dsl = env.token("dsl-referrer", weft_sim::sources::SCHOOL_AGENCY, "dsl");
        let (status, body) = self
            .post(
                "/v1/concerns",
                &dsl,
                &serde_json::json!({
                    "child": child,
                    "category": "neglect",
                    "urgency": "routine",
                    "observed": {
                        "what": "Arrived without a coat or lunch again this week.",
                        "when": "2025-10-07T08:50:00Z",
                        "how": "seen",
                        "where": "classroom"
                    },
                    "actions_taken": ["Recorded it"],
                    "reporter": {"name": "A. Teacher", "role": "Designated safeguarding lead"}
                }),
            )
            .await;
        assert_eq!(status, 201, "referral: {body}");
        body["id"].as_str().expect("concern id").to_string()
    }

    /// Asks the gateway to stop (SIGTERM) and waits until it has. The wait yields to the
    /// test's runtime, which keeps serving the test's clients meanwhile: their HTTP/2
    /// connections must answer the gateway's GOAWAY and PING for it to close them, and a
    /// runtime blocked on the wait would leave the gateway draining them until they idled out.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `child` the signal named (`TERM`, `USR2`, …) through the `kill` command rather than
/// libc; whether it was sent.
pub(crate) fn signal(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// An HTTPS client trusting the test CA, optionally presenting a client certificate.
pub fn client(env: &Env, identity: Option<(&str, &str)>) -> reqwest::Client {
    let ca = std::fs::read(&env.pki.ca).expect("ca");
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .timeout(Duration::from_secs(30));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

/// Runs `weft` with arguments; returns exit code, stdout and stderr.
pub fn run_weft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run weft");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes every audit insert fail from inside the database, after whatever the write did
/// before it in the same transaction: the deterministic form of "the audit cannot be written"
/// (or of a process killed between a change and its entry).
pub async fn block_audit(url: &str, blocked: bool) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("store");
    let sqlite = url.starts_with("sqlite:");
    let statements: &[&str] = match (sqlite, blocked) {
        (true, true) => &["CREATE TRIGGER audit_blocked BEFORE INSERT ON audit_log \
                           BEGIN SELECT RAISE(ABORT, 'audit blocked'); END"],
        (true, false) => &["DROP TRIGGER audit_blocked"],
        (false, true) => &[
            "CREATE FUNCTION audit_blocked() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'audit blocked'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_blocked BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION audit_blocked()",
        ],
        (false, false) => &[
            "DROP TRIGGER audit_blocked ON audit_log",
            "DROP FUNCTION audit_blocked()",
        ],
    };
    for s in statements {
        sqlx::raw_sql(s).execute(&pool).await.expect("trigger");
    }
    pool.close().await;
}

/// Sets whether the index holds every record of `child` as restricted, as the next indexing
/// leaves it when the sources mark the records so or lift the marking: the simulated partner
/// systems' restrictions are fixed for a run, so tests that need one set or lifted write it
/// where an indexing would (`source_records.restricted`; see `Index::upsert` for the indexing).
pub async fn mark_restricted(url: &str, child: &str, restricted: bool) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("store");
    sqlx::query("UPDATE source_records SET restricted = $1 WHERE child_id = $2")
        .bind(i64::from(restricted))
        .bind(child)
        .execute(&pool)
        .await
        .expect("mark restricted");
    pool.close().await;
}

/// Polls `check` until it returns `Some`, or fails the test after `within`: for what the
/// gateway does in the background (deliveries, their acknowledgements, dead letters).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
