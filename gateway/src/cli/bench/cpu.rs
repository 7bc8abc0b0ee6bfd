//! The gateway's own CPU time, apart from the load generator and the simulated sources that
//! share its process in `weft bench view`: the gateway runs on a runtime of its own whose
//! threads are named [`GATEWAY_THREAD`], and the kernel's per-thread accounting
//! (`/proc/self/task/*/schedstat`, nanoseconds on the CPU; `stat`'s ticks where schedstat is
//! missing) is summed over those threads only. Linux only; elsewhere it reports nothing.

use std::time::Duration;

/// The name of every thread of the gateway's runtime (workers and blocking threads).
pub const GATEWAY_THREAD: &str = "weft-gateway";

/// CPU time so far of the threads whose name starts with [`GATEWAY_THREAD`], in nanoseconds;
/// `None` where the kernel does not say.
pub fn gateway_cpu_ns() -> Option<u64> {
    threads_cpu_ns(|comm| comm.starts_with(GATEWAY_THREAD))
}

/// CPU time so far of every other thread of this process — in `weft bench view`, the load
/// generator and the simulated sources — in nanoseconds.
pub fn others_cpu_ns() -> Option<u64> {
    threads_cpu_ns(|comm| !comm.starts_with(GATEWAY_THREAD))
}

fn threads_cpu_ns(counted: impl Fn(&str) -> bool) -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut total = 0u64;
    let mut seen = false;
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !counted(comm.trim_end()) {
            continue;
        }
        if let Some(ns) = on_cpu_ns(&dir) {
            total += ns;
            seen = true;
        }
    }
    seen.then_some(total)
}

/// Nanoseconds on the CPU of the task or process whose /proc directory is `dir`.
fn on_cpu_ns(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .or_else(|| ticks(dir).map(|t| t * 10_000_000))
}

/// CPU time so far of each PostgreSQL backend process in `pids` that runs on this machine
/// (a process of that id named `postgres` in /proc), in nanoseconds by process id. Backends
/// elsewhere, or gone, are left out.
pub fn backends_cpu_ns(pids: &[i32]) -> std::collections::BTreeMap<i32, u64> {
    pids.iter()
        .filter_map(|&pid| {
            let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim_end() == "postgres").then_some(())?;
            Some((pid, on_cpu_ns(&dir)?))
        })
        .collect()
}

/// The CPU the backends spent between two readings of [`backends_cpu_ns`]: a backend that
/// started in between counts whole; one that ended in between is missed (so the figure is a
/// lower bound when connections come and go).
pub fn backends_spent_ns(
    before: &std::collections::BTreeMap<i32, u64>,
    after: &std::collections::BTreeMap<i32, u64>,
) -> u64 {
    after
        .iter()
        .map(|(pid, ns)| ns.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// utime + stime from `stat`, in the kernel's USER_HZ ticks (100 a second on Linux).
fn ticks(dir: &std::path::Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

// What the other benchmarks measure of the whole process, beside the gateway's own CPU.

/// Peak resident memory of this process so far, from /proc (Linux); `None` elsewhere.
pub(crate) fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time this process has used so far, all threads, from /proc (Linux, which counts it in
/// ticks of 1/100 s); `None` elsewhere.
pub(crate) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_that_started_during_the_run_counts_whole_and_one_that_ended_is_missed() {
        let before = std::collections::BTreeMap::from([(10, 1_000), (11, 5_000)]);
        let after = std::collections::BTreeMap::from([(10, 4_000), (12, 700)]);
        assert_eq!(backends_spent_ns(&before, &after), 3_000 + 700);
    }

    #[test]
    fn a_process_that_is_not_postgres_is_not_read_as_a_backend() {
        if std::fs::metadata("/proc/self").is_err() {
            return;
        }
        let me = std::process::id() as i32;
        assert!(backends_cpu_ns(&[me, -1]).is_empty());
    }

    #[test]
    fn the_other_threads_are_this_process_without_the_gateway() {
        if std::fs::metadata("/proc/self/task").is_err() {
            return;
        }
        assert!(
            others_cpu_ns().is_some(),
            "the test's own thread is counted"
        );
    }

    #[test]
    fn counts_only_the_gateways_threads() {
        if std::fs::metadata("/proc/self/task").is_err() {
            return;
        }
        assert_eq!(gateway_cpu_ns(), None, "no gateway thread yet");
        // Spin on a gateway thread until its own CPU time is counted (however loaded the
        // machine, within ten seconds of wall time).
        let handle = std::thread::Builder::new()
            .name(GATEWAY_THREAD.into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < std::time::Duration::from_secs(10) {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(31).wrapping_add(7);
                    }
                    if gateway_cpu_ns().is_some_and(|ns| ns >= 20_000_000) {
                        return Some(x);
                    }
                }
                None
            })
            .expect("thread");
        assert!(
            handle.join().expect("join").is_some(),
            "the gateway thread's CPU time is counted"
        );
    }
}
