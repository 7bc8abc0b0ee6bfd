//! Making a broken source harmless: retries with backoff for reads that failed transiently, and
//! a circuit breaker per source so that a source that keeps failing is not asked at all until a
//! cool-down has passed.
//!
//! Both sit in the fan-out, around the adapter, so every adapter kind gets them alike. Every
//! adapter read is idempotent (a GET or a SELECT), so retrying one is always safe; retries stay
//! inside the source's deadline, which the caller still enforces around the whole call.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use weft_adapters::AdapterError;

use crate::foundation::config::Resilience;

/// Retry settings for one source, from its configuration.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    attempts: u32,
    backoff: Duration,
}

impl RetryPolicy {
    pub fn new(config: &Resilience) -> Self {
        Self {
            attempts: config.attempts.max(1),
            backoff: Duration::from_millis(config.backoff_ms),
        }
    }

    /// The wait before retry `n` (1-based): the base doubled each time, with up to half as much
    /// again at random, so that many views failing together do not retry in step.
    fn wait(&self, n: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << (n - 1).min(10));
        let jitter = rand::thread_rng().gen_range(0.0..=0.5);
        base.mul_f64(1.0 + jitter)
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts; a retry is not
    /// started if its wait would end past `deadline`. Returns the last result and how many
    /// retries were made.
    pub async fn run<T, F, Fut>(
        &self,
        deadline: Instant,
        mut op: F,
    ) -> (Result<T, AdapterError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AdapterError>>,
    {
        let mut retries = 0;
        loop {
            let result = op().await;
            match &result {
                Err(e) if e.is_transient() && retries + 1 < self.attempts => {
                    let wait = self.wait(retries + 1);
                    if Instant::now() + wait >= deadline {
                        return (result, retries);
                    }
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                _ => return (result, retries),
            }
        }
    }
}

/// Whether a call may go to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: call as usual.
    Call,
    /// The cool-down is over: this one call tests whether the source has recovered.
    Probe,
    /// The breaker is open: do not call; the source is `unavailable` with `circuit_open`.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe is out. Should it never report back (its request was cancelled), another is let
    /// through once a further cool-down has passed, so the breaker cannot stick half-open.
    HalfOpen {
        since: Instant,
    },
}

/// The breaker state as `GET /v1/sources` and `/metrics` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `weft_source_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// What an administrator sees of a breaker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Failed reads in a row since the last success.
    pub consecutive_failures: u32,
    /// When the breaker last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// While open: when the next probe may go.
    pub probe_after: Option<DateTime<Utc>>,
    /// How many times it has opened since start-up.
    pub times_opened: u64,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    consecutive: u32,
    opened_at: Option<DateTime<Utc>>,
    times_opened: u64,
}

/// One source's circuit breaker: opens after `threshold` consecutive failures, lets one probe
/// through after `cool_down`, and closes again when a probe succeeds.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: &Resilience) -> Self {
        Self {
            threshold: config.breaker_failures,
            cool_down: Duration::from_millis(config.breaker_cool_down_ms),
            state: Mutex::new(State {
                phase: Phase::Closed,
                consecutive: 0,
                opened_at: None,
                times_opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain values, always left consistent; a poisoned lock is safe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether a call may go now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => Admission::Call,
            Phase::Open { until } | Phase::HalfOpen { since: until } if now < until => {
                Admission::Refuse
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                s.phase = Phase::HalfOpen {
                    since: now + self.cool_down,
                };
                Admission::Probe
            }
        }
    }

    /// The source answered: close the breaker and forget past failures.
    pub fn success(&self) {
        let mut s = self.lock();
        s.phase = Phase::Closed;
        s.consecutive = 0;
    }

    /// The source failed. A failed probe, or the `threshold`th failure in a row, opens the
    /// breaker for a fresh cool-down. Returns whether this failure opened it.
    pub fn failure(&self, now: Instant) -> bool {
        let mut s = self.lock();
        s.consecutive = s.consecutive.saturating_add(1);
        let open = match s.phase {
            Phase::HalfOpen { .. } => true,
            Phase::Closed => self.threshold > 0 && s.consecutive >= self.threshold,
            // A call admitted before the breaker opened, reporting late: it stays open as it is.
            Phase::Open { .. } => false,
        };
        if open {
            s.phase = Phase::Open {
                until: now + self.cool_down,
            };
            s.opened_at = Some(Utc::now());
            s.times_opened += 1;
        }
        open
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn status(&self) -> BreakerStatus {
        let s = self.lock();
        let now = Instant::now();
        let (state, probe_after) = match s.phase {
            Phase::Closed => (BreakerState::Closed, None),
            Phase::Open { until } => (
                BreakerState::Open,
                Some(
                    Utc::now()
                        + chrono::Duration::from_std(until.saturating_duration_since(now))
                            .unwrap_or_default(),
                ),
            ),
            Phase::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        };
        BreakerStatus {
            state,
            consecutive_failures: s.consecutive,
            opened_at: s.opened_at,
            probe_after,
            times_opened: s.times_opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config(attempts: u32, failures: u32, cool_down_ms: u64) -> Resilience {
        Resilience {
            attempts,
            backoff_ms: 1,
            breaker_failures: failures,
            breaker_cool_down_ms: cool_down_ms,
        }
    }

    #[test]
    fn opens_after_threshold_refuses_then_probes_once() {
        let b = Breaker::new(&config(1, 3, 1_000));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Admission::Call);
            assert!(!b.failure(t0));
        }
        assert_eq!(b.admit(t0), Admission::Call);
        assert!(b.failure(t0), "third failure in a row opens it");
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), Admission::Refuse);
        let later = t0 + Duration::from_millis(1_000);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(later), Admission::Refuse, "one probe at a time");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.status().consecutive_failures, 0);
        assert_eq!(b.admit(later), Admission::Call);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_fresh_cool_down() {
        let b = Breaker::new(&config(1, 1, 100));
        let t0 = Instant::now();
        assert!(b.failure(t0));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert!(b.failure(t1));
        assert_eq!(b.admit(t1 + Duration::from_millis(99)), Admission::Refuse);
        assert_eq!(b.admit(t1 + Duration::from_millis(100)), Admission::Probe);
        assert_eq!(b.status().times_opened, 2);
    }

    #[test]
    fn a_lost_probe_does_not_leave_it_half_open_for_ever() {
        let b = Breaker::new(&config(1, 1, 100));
        let t0 = Instant::now();
        b.failure(t0);
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), Admission::Probe);
        // The probe's request was cancelled and never reported.
        assert_eq!(b.admit(t0 + Duration::from_millis(150)), Admission::Refuse);
        assert_eq!(b.admit(t0 + Duration::from_millis(200)), Admission::Probe);
    }

    #[test]
    fn success_resets_the_count_and_zero_never_opens() {
        let b = Breaker::new(&config(1, 2, 100));
        let t0 = Instant::now();
        b.failure(t0);
        b.success();
        assert!(!b.failure(t0), "not two in a row");
        let never = Breaker::new(&config(1, 0, 100));
        for _ in 0..100 {
            assert!(!never.failure(t0));
        }
        assert_eq!(never.admit(t0), Admission::Call);
    }

    #[tokio::test]
    async fn retries_transient_failures_only_and_within_attempts() {
        let policy = RetryPolicy::new(&config(3, 0, 1));
        let far = Instant::now() + Duration::from_secs(10);
        let calls = AtomicU32::new(0);
        let (r, retries) = policy
            .run(far, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(AdapterError::Status(503))
            })
            .await;
        assert!(r.is_err());
        assert_eq!((calls.load(Ordering::Relaxed), retries), (3, 2));

        calls.store(0, Ordering::Relaxed);
        let (r, retries) = policy
            .run(far, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(AdapterError::Protocol("not JSON".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(
            (calls.load(Ordering::Relaxed), retries),
            (1, 0),
            "garbage is not retried"
        );

        calls.store(0, Ordering::Relaxed);
        let (r, retries) = policy
            .run(far, || async {
                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    Err(AdapterError::Connect("reset".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!((r.ok(), retries), (Some(7), 1));
    }

    #[tokio::test]
    async fn no_retry_whose_wait_would_pass_the_deadline() {
        let policy = RetryPolicy::new(&Resilience {
            attempts: 5,
            backoff_ms: 500,
            breaker_failures: 0,
            breaker_cool_down_ms: 1,
        });
        let started = Instant::now();
        let (r, retries) = policy
            .run(started + Duration::from_millis(200), || async {
                Err::<(), _>(AdapterError::Status(500))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(retries, 0);
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
