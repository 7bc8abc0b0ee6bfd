//! `weft bench view`: merged views through the real gateway (HTTPS, tokens, policy, audit)
//! against simulated sources that each answer after a fixed delay, beside the same sources
//! called directly in the same run. The fan-out is concurrent, so the gateway's median should
//! sit just above the slowest source's, not at the sum of them.

pub mod area;
pub mod concerns;
pub mod cpu;
pub mod import;
pub mod index;
pub mod matching;
pub mod search;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::app::Application;
use crate::dev::config::DevConfig;
use crate::dev::pki::DevPki;
use crate::foundation::config::{AgencyConfig, AgencyKind, Config};
use crate::foundation::schema::Schemas;
use weft_sim::delayed;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Policy sizes to measure (rules, on top of the default policy).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 1_000, 10_000])]
    pub rules: Vec<usize>,
    /// Merged views to evaluate per size.
    #[arg(long, default_value_t = 100_000)]
    pub views: usize,
    /// Views to evaluate through casbin's own enforcer per size, for comparison.
    #[arg(long, default_value_t = 200)]
    pub casbin_views: usize,
}

/// Categories a benchmark view carries: every known category plus repeats, twenty in all.
fn view_categories() -> Vec<&'static str> {
    crate::foundation::domain::CATEGORIES
        .iter()
        .copied()
        .cycle()
        .take(20)
        .collect()
}

/// `weft bench policy`: policy and consent evaluation for one merged view of 20 categories, at
/// growing policy sizes, through the compiled index and through casbin's own enforcer.
pub async fn policy(args: PolicyArgs) -> anyhow::Result<()> {
    use crate::foundation::domain::{Purpose, Role, CATEGORIES};
    use crate::pipeline::authorise::{Effect, Policy, Question, Reference};
    use rand::{Rng, SeedableRng};

    let dir = tempfile::tempdir()?;
    let (model, default) = crate::dev::config::policy_paths(dir.path())?;
    let default = std::fs::read_to_string(default)?;
    let consents = crate::pipeline::authorise::consent::Consents::new(Vec::new());
    let cats = view_categories();
    println!(
        "weft bench policy: one view = {} category decisions plus consent checks; {} views per size",
        cats.len(),
        args.views
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>12} {:>14}",
        "rules", "agencies", "load ms", "p50 µs", "p99 µs", "casbin p50 µs"
    );
    for &n in &args.rules {
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        // Realistic growth: per-agency overrides, twenty to an agency, on top of the
        // partnership-wide agreement.
        let agencies: Vec<(String, AgencyKind)> = (0..n.div_ceil(20).max(1))
            .map(|i| (format!("bench-agency-{i}"), AgencyKind::ALL[i % 4]))
            .collect();
        let mut text = default.clone();
        for i in 0..n {
            let (agency, kind) = &agencies[i % agencies.len()];
            let role = Role::ALL[rng.gen_range(0..Role::ALL.len())];
            let cat = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
            let purpose = Purpose::ALL[rng.gen_range(0..Purpose::ALL.len())];
            let (eft, cond) = match rng.gen_range(0..10) {
                0 => ("deny", "-"),
                1 => ("allow", "consent"),
                _ => ("allow", "-"),
            };
            text.push_str(&format!(
                "p, {}, {agency}, {}, {cat}, {}, {eft}, {cond}, BENCH-{i}, 6e\n",
                role.as_str(),
                kind.as_str(),
                purpose.as_str()
            ));
        }
        let path = dir.path().join(format!("policy-{n}.csv"));
        std::fs::write(&path, &text)?;
        // The default policy's own override names this school.
        let ids: Vec<String> = agencies
            .iter()
            .map(|(a, _)| a.clone())
            .chain(std::iter::once("urn-100001".to_string()))
            .collect();
        let started = Instant::now();
        let compiled = Policy::load(&model, &path, Some(&ids)).await?;
        let load_ms = ms(started.elapsed());

        let questions: Vec<(Role, usize, Purpose)> = (0..args.views)
            .map(|_| {
                (
                    Role::ALL[rng.gen_range(0..Role::ALL.len())],
                    rng.gen_range(0..agencies.len()),
                    Purpose::ALL[rng.gen_range(0..Purpose::ALL.len())],
                )
            })
            .collect();
        let mut times = Vec::with_capacity(questions.len());
        let mut shown = 0usize;
        for (role, a, purpose) in &questions {
            let (agency, kind) = &agencies[*a];
            let t = Instant::now();
            for cat in &cats {
                let d = compiled.decide(&Question {
                    role: *role,
                    agency,
                    kind: *kind,
                    category: cat,
                    purpose: *purpose,
                });
                let visible = match d.effect {
                    Effect::Permit => true,
                    Effect::PermitWithConsent => {
                        consents.state(cat, agency, *purpose)
                            == crate::pipeline::authorise::consent::ConsentState::Given
                    }
                    Effect::Deny => false,
                };
                shown += usize::from(visible);
            }
            times.push(t.elapsed());
        }
        times.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;

        let reference = Reference::load(&model, &path).await?;
        let mut casbin = Vec::new();
        for (role, a, purpose) in questions.iter().take(args.casbin_views) {
            let (agency, kind) = &agencies[*a];
            let t = Instant::now();
            for cat in &cats {
                reference.decide(&Question {
                    role: *role,
                    agency,
                    kind: *kind,
                    category: cat,
                    purpose: *purpose,
                })?;
            }
            casbin.push(t.elapsed());
        }
        casbin.sort_unstable();
        let casbin_p50 = casbin
            .get(casbin.len() / 2)
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(0.0);
        println!(
            "{:>8} {:>9} {:>10.0} {:>10.2} {:>12.2} {:>14.0}",
            compiled.rules(),
            agencies.len(),
            load_ms,
            q(0.5),
            q(0.99),
            casbin_p50
        );
        std::hint::black_box(shown);
    }
    println!("target: p99 under 50 µs at 10,000 rules, growing no worse than logarithmically");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// How long each simulated source takes to answer.
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to load the gateway (the direct-source baseline runs for a third of this).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The gateway's store: a PostgreSQL URL (its database is used as it is), or a temporary
    /// SQLite file when omitted.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Sign audit checkpoints (with a throwaway key, into the benchmark's directory), to
    /// measure what checkpointing costs a view.
    #[arg(long)]
    pub checkpoints: bool,
    /// Also load the child's web page (signed in, the same view rendered as HTML) and compare
    /// it with the JSON view.
    #[arg(long)]
    pub page: bool,
}

/// Latencies of one phase.
pub(crate) struct Phase {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) failures: usize,
    pub(crate) elapsed: Duration,
}

impl Phase {
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }

    pub(crate) fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn row(&self, name: &str) -> String {
        format!(
            "{name:<24} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9}",
            self.latencies.len(),
            self.rate(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.failures
        )
    }
}

/// A gateway serving from a task of this process, its first index pass done, until stopped.
pub(crate) struct Serving {
    pub addr: std::net::SocketAddr,
    pub state: crate::gateway::Gateway,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The gateway's own runtime, when it runs apart from the load ([`Serving::start_apart`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Serving {
    pub async fn start(config: Config) -> anyhow::Result<Serving> {
        let app = Application::build(config, Schemas::load()?).await?;
        let addr = app.local_addr()?;
        let state = app.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        while !state.index.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Serving {
            addr,
            state,
            stop,
            task,
            runtime: None,
        })
    }

    /// [`Serving::start`] on a runtime of its own, whose threads are named
    /// [`cpu::GATEWAY_THREAD`], so that the gateway's CPU time can be told apart from the load
    /// generator's and the simulated sources' ([`cpu::gateway_cpu_ns`]).
    pub async fn start_apart(config: Config) -> anyhow::Result<Serving> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(cpu::GATEWAY_THREAD)
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()?;
        let started = runtime
            .spawn(async move { Serving::start(config).await })
            .await;
        match started {
            Ok(Ok(mut serving)) => {
                serving.runtime = Some(runtime);
                Ok(serving)
            }
            // A runtime cannot be dropped inside another: let it go in the background, and
            // report why the gateway did not start.
            Ok(Err(e)) => {
                runtime.shutdown_background();
                Err(e)
            }
            Err(e) => {
                runtime.shutdown_background();
                Err(e.into())
            }
        }
    }

    /// Stops serving and waits until in-flight requests and the audit writer are done.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.state);
        let _ = self.stop.send(());
        let result = self.task.await?;
        if let Some(runtime) = self.runtime {
            runtime.shutdown_background();
        }
        result
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `concurrency` loops of `call` for `duration`, recording each successful latency.
pub(crate) async fn load<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut failed = 0usize;
                let mut n = w;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if call(n).await {
                        ok.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                    n += concurrency;
                }
                (ok, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for w in workers {
        if let Ok((ok, failed)) = w.await {
            latencies.extend(ok);
            failures += failed;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Phase {
        latencies,
        failures,
        elapsed,
    }
}

pub async fn view(args: ViewArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = DevPki::generate(&dir.path().join("pki"))?;
    let delay = Duration::from_millis(args.delay_ms);

    let kinds = AgencyKind::ALL;
    let mut servers = Vec::new();
    let mut agencies = Vec::new();
    let mut sources = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let server = delayed::start_delayed_source(delay).await?;
        let agency = AgencyConfig {
            id: format!("bench-{}", kind.as_str()),
            name: format!("Benchmark {} agency", kind.as_str()),
            kind: *kind,
            local_authority: None,
        };
        sources.push(crate::dev::config::sim_source(&delayed::source_config(
            &format!("bench-source-{i}"),
            &agency.id,
            server.addr,
            delay * 10,
        )));
        agencies.push(agency);
        servers.push(server);
    }

    // The default policy carries an override for this school; the agency must exist.
    agencies.push(AgencyConfig {
        id: "urn-100001".into(),
        name: "Benchmark school".into(),
        kind: AgencyKind::Education,
        local_authority: None,
    });
    let store_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("weft-bench.db").display()));
    let mut config = bench_config(&pki, &store_url, agencies, sources, dir.path())?;
    if args.checkpoints {
        let (_, key) = crate::foundation::audit::checkpoint::SigningKey::generate()?;
        config.audit.checkpoint_dir = Some(dir.path().join("audit-checkpoints"));
        config.audit.signing_key = Some(key.into());
    }
    let serving = Serving::start_apart(config).await?;
    let addr = serving.addr;

    let ca = std::fs::read(&pki.ca)?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = format!("https://127.0.0.1:{}", addr.port());
    let token = pki
        .issuer
        .mint(delayed::WORKER, "bench-social_care", "social_worker", 3600);

    let found: serde_json::Value = client
        .post(format!("{base}/v1/children/search"))
        .bearer_auth(&token)
        .json(&json!({"purpose": "safeguarding", "nhs_number": delayed::NHS_NUMBER}))
        .send()
        .await?
        .json()
        .await?;
    let child = found["children"][0]["id"]
        .as_str()
        .context("the benchmark child was not indexed")?
        .to_string();

    println!(
        "weft bench view: {} sources answering after {} ms, concurrency {}, store {}",
        servers.len(),
        args.delay_ms,
        args.concurrency,
        if store_url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // Baseline: each source on its own, same client, same concurrency.
    let baseline = Duration::from_secs((args.seconds / 3).max(1));
    let mut direct = Vec::new();
    for s in &servers {
        let url = format!("http://{}/people/{}", s.addr, delayed::LOCAL_ID);
        let c = client.clone();
        let phase = load(args.concurrency, baseline, move |_| {
            let c = c.clone();
            let url = url.clone();
            async move { matches!(c.get(&url).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        direct.push(phase);
    }

    // Warm the gateway's connection pools, then measure.
    let view_url = format!("{base}/v1/children/{child}?purpose=safeguarding");
    let call = {
        let client = client.clone();
        let token = token.clone();
        move |_| {
            let c = client.clone();
            let url = view_url.clone();
            let token = token.clone();
            async move {
                match c.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    };
    let call = Arc::new(call);
    let warm = call.clone();
    load(args.concurrency, Duration::from_secs(1), move |n| warm(n)).await;
    let measured = call.clone();
    let cpu_before = cpu::gateway_cpu_ns();
    let others_before = cpu::others_cpu_ns();
    let pg_before = cpu::backends_cpu_ns(&backends(&store_url).await);
    let wait = &crate::foundation::metrics::AUDIT_WAIT;
    let wait_before = (wait.get_sample_sum(), wait.get_sample_count());
    let gateway = load(
        args.concurrency,
        Duration::from_secs(args.seconds),
        move |n| measured(n),
    )
    .await;
    let cpu_after = cpu::gateway_cpu_ns();
    let others_after = cpu::others_cpu_ns();
    let pg_after = cpu::backends_cpu_ns(&backends(&store_url).await);
    let waited = (
        wait.get_sample_sum() - wait_before.0,
        wait.get_sample_count() - wait_before.1,
    );

    // The same view as a page: a session made as signing in makes one, the page fetched with
    // its cookie.
    let page = if args.page {
        let principal = serving
            .state
            .verifier
            .principal_of(
                "bench-sw".into(),
                "bench-social_care".into(),
                "social_worker",
            )
            .map_err(|e| anyhow::anyhow!("benchmark principal: {e}"))?;
        let session =
            crate::write::sessions::sign_in(&serving.state, &principal, "Benchmark", "bench")
                .await?;
        let cookie = format!("{}={}", crate::web::session::COOKIE, session.cookie);
        let page_url = format!("{base}/children/{child}?purpose=safeguarding");
        let call = {
            let client = client.clone();
            move |_| {
                let c = client.clone();
                let url = page_url.clone();
                let cookie = cookie.clone();
                async move {
                    match c.get(&url).header("cookie", cookie).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            }
        };
        let call = Arc::new(call);
        let warm = call.clone();
        load(args.concurrency, Duration::from_secs(1), move |n| warm(n)).await;
        let measured = call.clone();
        Some(
            load(
                args.concurrency,
                Duration::from_secs(args.seconds),
                move |n| measured(n),
            )
            .await,
        )
    } else {
        None
    };

    println!(
        "{:<24} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "", "requests", "req/s", "p50 ms", "p99 ms", "failed"
    );
    for (i, p) in direct.iter().enumerate() {
        println!("{}", p.row(&format!("source {i} direct")));
    }
    println!("{}", gateway.row("gateway merged view"));
    if let Some(page) = &page {
        println!("{}", page.row("gateway child's page"));
        println!(
            "page p50 - view p50: {:+.2} ms (target: within 5 ms)",
            ms(page.quantile(0.5)) - ms(gateway.quantile(0.5))
        );
    }
    let slowest = direct
        .iter()
        .map(|p| p.quantile(0.5))
        .max()
        .unwrap_or_default();
    // The targets of the view path (issue 15): within 3 ms of the slowest source one view at
    // a time; under load, within 5 ms and 2,600 views/s with the audit on PostgreSQL.
    let gap = ms(gateway.quantile(0.5)) - ms(slowest);
    let within = if args.concurrency <= 1 { 3.0 } else { 5.0 };
    println!(
        "gateway p50 - slowest source p50: {gap:+.2} ms (target: within {within:.0} ms at concurrency {}: {})",
        args.concurrency,
        if gap <= within { "met" } else { "missed" }
    );
    println!(
        "merged views per second: {:.0} (target at concurrency 64 with the audit on PostgreSQL: 2600)",
        gateway.rate()
    );
    // Every figure per request answered or failed, over the measured load alone.
    let requests = (gateway.latencies.len() + gateway.failures).max(1) as f64;
    let per_view = |ns: u64| ns as f64 / 1000.0 / requests;
    match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if !gateway.latencies.is_empty() => println!(
            "gateway CPU per view: {:.1} µs (the gateway's own threads only, over every request answered or failed; load generator and sources excluded; audit checkpoints {})",
            per_view(after.saturating_sub(before)),
            if args.checkpoints { "on" } else { "off" }
        ),
        _ => println!("gateway CPU per view: not available on this platform"),
    }
    if let (Some(before), Some(after)) = (others_before, others_after) {
        println!(
            "load generator and sources CPU per view: {:.1} µs (this process's other threads)",
            per_view(after.saturating_sub(before))
        );
    }
    if !pg_after.is_empty() {
        println!(
            "PostgreSQL CPU per view: {:.1} µs (its backends serving this database, read from this machine's /proc)",
            per_view(cpu::backends_spent_ns(&pg_before, &pg_after))
        );
    }
    if waited.1 > 0 {
        println!(
            "audit wait per view: {:.2} ms on average (the batch being committed, then the view's own)",
            waited.0 * 1000.0 / waited.1 as f64
        );
    }

    serving.stop().await?;
    // Through a store of this runtime's own: the gateway's pool went with its runtime.
    let store = crate::foundation::store::Store::open(&store_url.clone().into(), 2).await?;
    let verification = crate::foundation::audit::verify(&store).await?;
    match verification.problem {
        None => println!("audit chain verified: {} entries", verification.entries),
        Some(p) => anyhow::bail!("audit chain broken at entry {}: {}", p.seq, p.what),
    }
    drop(servers);
    Ok(())
}

/// The process ids of PostgreSQL's backends serving the benchmark's connections to its
/// database (none when the store is SQLite, or PostgreSQL cannot be asked). Autovacuum's
/// workers are left out: whether one runs during a measurement is PostgreSQL's choice, not the
/// work measured.
pub(crate) async fn backends(url: &str) -> Vec<i32> {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return Vec::new();
    }
    let Ok(mut conn) = sqlx::postgres::PgConnection::connect(url).await else {
        return Vec::new();
    };
    let pids = sqlx::query_scalar::<_, i32>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let _ = conn.close().await;
    pids
}

fn bench_config(
    pki: &DevPki,
    store_url: &str,
    agencies: Vec<AgencyConfig>,
    sources: Vec<crate::foundation::config::SourceConfig>,
    dir: &Path,
) -> anyhow::Result<Config> {
    let policies = crate::dev::config::policy_paths(dir)?;
    // The repository's routing names the demo's local authority; here the benchmark's is used.
    let routing = dir.join("routing.toml");
    let rules = std::fs::read_to_string(
        policies
            .1
            .parent()
            .unwrap_or(Path::new("."))
            .join("routing.toml"),
    )?;
    std::fs::write(
        &routing,
        rules.replace(weft_sim::sources::SOCIAL_CARE_AGENCY, "bench-social_care"),
    )?;
    let mut config = DevConfig::new(pki, store_url, policies)
        .set("database.max_connections", 16)
        .set("policy.routing", routing.display().to_string())
        .set("limits.max_in_flight", 4096);
    for a in agencies {
        config = config.agency(a);
    }
    for s in sources {
        config = config.source(s);
    }
    config.load(dir)
}
