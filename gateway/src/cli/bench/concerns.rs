//! `weft bench concerns`: sustained concern submissions through the real gateway (HTTPS, tokens,
//! schema, matching, routing against the simulated partner systems, audit, outbox), each
//! delivered by signed webhook to a receiver on loopback; then the time from a police
//! domestic-abuse event to the alert in the school DSL's inbox. Everything runs on 127.0.0.1 and
//! stops by itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clap::Args;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::cli::bench::{load, ms};
use crate::dev::config::DevConfig;
use crate::dev::pki::DevPki;
use crate::foundation::config::Config;
use weft_sim::sources::{POLICE_AGENCY, SCHOOL_AGENCY, SOCIAL_CARE_AGENCY};
use weft_sim::PartnerSystems;

const SECRET: &str = "bench-receiver-secret-0123456789";

#[derive(Debug, Args)]
pub struct ConcernsArgs {
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to submit concerns.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Police incidents timed from event to the DSL's inbox, one after another.
    #[arg(long, default_value_t = 50)]
    pub incidents: usize,
    /// Synthetic children in the simulated partner systems.
    #[arg(long, default_value_t = 200)]
    pub children: usize,
    /// The gateway's store: a PostgreSQL URL (its database is used as it is), or a temporary
    /// SQLite file when omitted.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// What the loopback receiver saw: first arrival per subject, and every request.
#[derive(Default)]
struct Seen {
    first: HashMap<String, Instant>,
    requests: usize,
    bad_signatures: usize,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ok = crate::delivery::outbox::verify_signature(
        SECRET.as_bytes(),
        &header(crate::delivery::outbox::TIMESTAMP_HEADER),
        &header(crate::delivery::outbox::SIGNATURE_HEADER),
        &body,
        chrono::Utc::now(),
        Duration::from_secs(300),
    )
    .is_ok();
    let subject = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["subject"].as_str().map(String::from))
        .unwrap_or_default();
    if let Ok(mut s) = seen.lock() {
        s.requests += 1;
        if !ok {
            s.bad_signatures += 1;
        }
        s.first.entry(subject).or_insert_with(Instant::now);
    }
    if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub async fn concerns(args: ConcernsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = DevPki::generate(&dir.path().join("pki"))?;
    let pop = weft_sim::generate(11, args.children);
    let partners = PartnerSystems::start(&dir.path().join("partners"), &pop, None, None).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let receiver_task = tokio::spawn(async move {
        let _ = axum::serve(receiver, app).await;
    });

    let store_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("weft-bench.db").display()));
    let config = config(&pki, &store_url, &partners, &hook, dir.path())?;
    let gateway = super::Serving::start(config).await?;
    let (addr, state) = (gateway.addr, gateway.state.clone());

    let ca = std::fs::read(&pki.ca)?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .pool_max_idle_per_host(args.concurrency + 4)
        .build()?;
    let base = format!("https://127.0.0.1:{}", addr.port());
    let dsl = pki.issuer.mint("bench-dsl", SCHOOL_AGENCY, "dsl", 3600);
    let police = pki
        .issuer
        .mint("bench-police", POLICE_AGENCY, "police_officer", 3600);

    let nhs: Arc<Vec<String>> = Arc::new(
        pop.children
            .iter()
            .filter(|c| c.nhs_number_everywhere())
            .map(|c| c.truth.nhs_number.clone())
            .collect(),
    );
    anyhow::ensure!(!nhs.is_empty(), "no child to raise concerns about");
    println!(
        "weft bench concerns: {} children, concurrency {}, {} s, store {}, delivery by signed webhook to 127.0.0.1",
        args.children,
        args.concurrency,
        args.seconds,
        if store_url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let call = {
        let client = client.clone();
        let sent = sent.clone();
        let url = format!("{base}/v1/concerns");
        move |n: usize| {
            let client = client.clone();
            let sent = sent.clone();
            let url = url.clone();
            let dsl = dsl.clone();
            let child = nhs[n % nhs.len()].clone();
            async move {
                let started = Instant::now();
                let body = json!({
                    "child": {"nhs_number": child},
                    "category": "neglect",
                    "urgency": "immediate",
                    "observed": {"what": "Benchmark concern", "when": "2025-10-07T08:50:00Z"},
                    "reporter": {"name": "Bench", "role": "DSL"}
                });
                let Ok(r) = client.post(&url).bearer_auth(&dsl).json(&body).send().await else {
                    return false;
                };
                if r.status() != reqwest::StatusCode::CREATED {
                    return false;
                }
                let Ok(v) = r.json::<Value>().await else {
                    return false;
                };
                if let (Some(id), Ok(mut s)) = (v["id"].as_str(), sent.lock()) {
                    s.insert(id.to_string(), started);
                }
                true
            }
        }
    };
    let started = Instant::now();
    let phase = load(args.concurrency, Duration::from_secs(args.seconds), call).await;
    let submitted: Vec<(String, Instant)> = sent
        .lock()
        .map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();

    // Drain: wait until the receiver has every concern (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = seen
            .lock()
            .map(|s| {
                submitted
                    .iter()
                    .filter(|(id, _)| s.first.contains_key(id))
                    .count()
            })
            .unwrap_or(0);
        if have == submitted.len() || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_delivered_after = started.elapsed();
    let (mut lags, delivered, requests, bad) = {
        let s = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
        let lags: Vec<Duration> = submitted
            .iter()
            .filter_map(|(id, at)| s.first.get(id).map(|f| f.saturating_duration_since(*at)))
            .collect();
        let delivered = lags.len();
        (lags, delivered, s.requests, s.bad_signatures)
    };
    lags.sort_unstable();

    println!(
        "{:<28} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "", "requests", "req/s", "p50 ms", "p99 ms", "failed"
    );
    println!("{}", phase.row("concern submissions"));
    println!(
        "webhook deliveries: {delivered} of {} concerns delivered ({requests} requests, {bad} bad signatures); \
         all delivered {:.2} s after the first submission ({:.0} concerns/s end to end)",
        submitted.len(),
        all_delivered_after.as_secs_f64(),
        delivered as f64 / all_delivered_after.as_secs_f64()
    );
    println!(
        "submit → webhook: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(quantile(&lags, 0.5)),
        ms(quantile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default())
    );

    // Police incident → DSL inbox, one at a time.
    let scenario = pop.scenario().context("the scenario child")?;
    let dsl_inbox = pki.issuer.mint("bench-dsl-2", SCHOOL_AGENCY, "dsl", 3600);
    let mut times = Vec::new();
    for i in 0..args.incidents {
        let reference = format!("BENCH/{i:05}");
        let t = Instant::now();
        let r = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(&police)
            .json(&json!({
                "kind": "police_incident",
                "occurred_at": "2025-10-07T23:10:00Z",
                "child": {"nhs_number": scenario.truth.nhs_number},
                "incident": {"reference": reference, "occurred_at": "2025-10-07T22:40:00Z",
                             "location": "Home address", "domestic_abuse": true, "child_present": true}
            }))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == reqwest::StatusCode::ACCEPTED,
            "event refused: {}",
            r.status()
        );
        let deadline = t + Duration::from_secs(30);
        loop {
            let items: Vec<Value> = client
                .get(format!("{base}/v1/inbox?limit=1000"))
                .bearer_auth(&dsl_inbox)
                .send()
                .await?
                .json()
                .await?;
            let arrived = items.iter().any(|i| {
                i["payload"]["data"]["detail"]["operation_encompass"]["police_reference"]
                    == reference.as_str()
            });
            if arrived {
                times.push(t.elapsed());
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "incident {reference} never reached the DSL"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    times.sort_unstable();
    println!(
        "police incident → DSL inbox ({} incidents, inbox polled every 2 ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default())
    );

    drop(state);
    gateway.stop().await?;
    receiver_task.abort();
    partners.shutdown().await;
    anyhow::ensure!(
        delivered == submitted.len(),
        "{} concerns were not delivered within two minutes",
        submitted.len() - delivered
    );
    Ok(())
}

fn config(
    pki: &DevPki,
    store_url: &str,
    partners: &PartnerSystems,
    hook: &str,
    dir: &Path,
) -> anyhow::Result<Config> {
    let mut webhook = toml::Table::new();
    for (k, v) in [
        ("id", "mash"),
        ("agency", SOCIAL_CARE_AGENCY),
        ("role", "mash_officer"),
        ("url", hook),
        ("secret", SECRET),
    ] {
        webhook.insert(k.into(), v.into());
    }
    DevConfig::new(pki, store_url, crate::dev::config::policy_paths(dir)?)
        .set("database.max_connections", 32)
        .set("limits.max_in_flight", 4096)
        .set("delivery.poll_ms", 200)
        .set("delivery.workers", 4)
        .set("delivery.batch", 64)
        .set(
            "delivery.webhooks",
            toml::Value::Array(vec![webhook.into()]),
        )
        .partners(&partners.agencies, &partners.sources)
        .load(dir)
}
