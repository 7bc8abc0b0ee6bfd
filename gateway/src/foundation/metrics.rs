//! Prometheus metrics, served at `/metrics`. Labels carry route templates, source ids and
//! outcomes — never a child, a user or anything a person could be identified by.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, TextEncoder,
};

/// Milliseconds since `t`, as the reports and logs give times (saturating: a clock that ran
/// for 584 million years is not worth a panic).
pub fn elapsed_ms(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_http_requests_total",
        "HTTP requests by route template and status",
        &["route", "status"]
    )
    .expect("metric registers once")
});

pub static HTTP_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "weft_http_request_duration_seconds",
        "HTTP request latency by route template",
        &["route"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub static SOURCE_FETCH: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "weft_source_fetch_duration_seconds",
        "Latency of fetches from each source, by outcome",
        &["source", "outcome"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub static SOURCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_source_errors_total",
        "Failed reads from each source, by reason (circuit_open: refused by the breaker, not sent)",
        &["source", "reason"]
    )
    .expect("metric registers once")
});

pub static SOURCE_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_source_retries_total",
        "Reads from each source sent again after a transient failure",
        &["source"]
    )
    .expect("metric registers once")
});

pub static SOURCE_BREAKER: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "weft_source_breaker_state",
        "Circuit breaker of each source: 0 closed, 1 half-open (probing), 2 open",
        &["source"]
    )
    .expect("metric registers once")
});

pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_policy_decisions_total",
        "Per-category policy decisions in views",
        &["decision"]
    )
    .expect("metric registers once")
});

pub static AUDIT_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weft_audit_batch_entries",
        "Audit entries committed per transaction",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    )
    .expect("metric registers once")
});

pub static AUDIT_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "weft_audit_wait_seconds",
        "Time a request waits for its audit entry to be committed (queue, batch in flight, its own batch)",
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers once")
});

pub static AUDIT_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weft_audit_failures_total",
        "Audit batches that could not be written (their requests failed closed)"
    )
    .expect("metric registers once")
});

pub static AUDIT_CHECKPOINTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weft_audit_checkpoints_total",
        "Signed audit checkpoints this node wrote"
    )
    .expect("metric registers once")
});

pub static AUDIT_CHECKPOINT_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "weft_audit_checkpoint_failures_total",
        "Audit checkpoints not made: the key, the directory or the store failed, or the chain \
         no longer extends the last checkpoint"
    )
    .expect("metric registers once")
});

pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "weft_auth_failures_total",
        "Rejected credentials, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

/// The text exposition of every registered metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = encoder.encode(&prometheus::gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
