//! RocksDB's flush and compaction threads at the scheduler's idle policy,
//! so that they take only CPU that requests leave unused.
//!
//! Why not RocksDB's own "lower priority" (nice 19), which the store used
//! before: under Linux's EEVDF scheduler a nice-19 thread that gets a core
//! keeps it for its whole time slice (about 3 ms) before a waking request
//! thread may preempt it. At half the maximum request rate a 64 MB memtable
//! flush found a core idle often enough to take a full core for half a
//! second, throughput fell below the offered rate and a load generator's
//! requests queued for 20–70 ms (BENCHMARKS.md, "The half-rate tail was
//! the scheduler's"). A `SCHED_IDLE` thread is preempted as soon as any
//! normal thread wakes, and otherwise runs as fast as before.
//!
//! RocksDB starts its pool threads from whichever thread asks for them, and
//! a new thread inherits its creator's policy; a thread may always lower its
//! own policy but, unprivileged, can never raise it back. So the pools are
//! started here from a short-lived thread that first makes itself idle.
//! Opening a database afterwards finds enough threads and starts none.

use rocksdb::Env;
use std::sync::Mutex;

/// How the background threads ended up scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// `SCHED_IDLE`: run only on a core no normal thread wants.
    Idle,
    /// The idle policy was refused (another kernel, a sandbox): nice 19,
    /// RocksDB's own lowered priority.
    Lowered,
}

/// RocksDB's default environment, whose pools every store of the process
/// shares: the threads started so far and how they are scheduled.
struct Pools {
    flushes: i32,
    compactions: i32,
    policy: Policy,
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

/// Makes sure RocksDB's default environment has the flush and compaction
/// threads that a database with `jobs` background jobs asks for at open,
/// started at the idle policy.
pub(crate) fn start(env: &mut Env, jobs: i32) {
    let (flushes, compactions) = job_limits(jobs);
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let (flushes, compactions, refused_before) = match pools.as_ref() {
        Some(p) if flushes <= p.flushes && compactions <= p.compactions => return,
        Some(p) => (flushes.max(p.flushes), compactions.max(p.compactions), p.policy == Policy::Lowered),
        None => (flushes, compactions, false),
    };
    // A policy once refused is not asked for again: threads that the
    // opening thread starts then lower themselves before their first job.
    let policy = if refused_before {
        Policy::Lowered
    } else {
        match start_idle(env.clone(), flushes, compactions) {
            Ok(()) => Policy::Idle,
            Err(e) => {
                tracing::warn!(error = %e, "RocksDB's background threads run at nice 19, not at the idle policy");
                Policy::Lowered
            }
        }
    };
    if policy == Policy::Lowered {
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
    }
    *pools = Some(Pools { flushes, compactions, policy });
}

/// Starts the pools' threads from a thread that first makes itself idle,
/// so that they inherit the policy.
fn start_idle(mut env: Env, flushes: i32, compactions: i32) -> Result<(), String> {
    let starter = std::thread::Builder::new().name("rocksdb-start".into()).spawn(move || {
        make_self_idle()?;
        env.set_high_priority_background_threads(flushes);
        env.set_low_priority_background_threads(compactions);
        Ok::<(), std::io::Error>(())
    });
    match starter.map_err(|e| e.to_string())?.join() {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the starting thread panicked".into()),
    }
}

/// What RocksDB's `GetBGJobLimits` gives for `max_background_jobs` when
/// neither flushes nor compactions are set apart: a quarter for flushes,
/// at least one of each.
fn job_limits(jobs: i32) -> (i32, i32) {
    let flushes = (jobs / 4).max(1);
    (flushes, (jobs - flushes).max(1))
}

/// Moves the calling thread to `SCHED_IDLE`.
fn make_self_idle() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call,
        // which only reads it; pid 0 is the calling thread.
        #[allow(unsafe_code)]
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "SCHED_IDLE is Linux's"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling policy of thread `tid` of this process (field 41 of
    /// its `stat`).
    fn policy_of(tid: &str) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // Fields after the parenthesized name start at field 3.
        let rest = stat.rsplit_once(')')?.1;
        rest.split_whitespace().nth(41 - 3)?.parse().ok()
    }

    #[test]
    fn job_limits_match_rocksdb() {
        assert_eq!(job_limits(1), (1, 1));
        assert_eq!(job_limits(2), (1, 1));
        assert_eq!(job_limits(4), (1, 3));
        assert_eq!(job_limits(8), (2, 6));
    }

    /// Every flush and compaction thread of an opened store runs at the
    /// idle policy, and the thread that opened it keeps its own.
    #[test]
    fn an_opened_store_flushes_and_compacts_on_idle_threads() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::engine::rocks::RocksConfig { background_jobs: 4, ..Default::default() };
        let _engine = crate::engine::rocks::RocksEngine::open(dir.path(), &cfg).unwrap();
        assert_eq!(POOLS.lock().unwrap().as_ref().map(|p| p.policy), Some(Policy::Idle));
        // A pool thread names itself once it runs: wait for the names.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let pool = loop {
            let mut pool = Vec::new();
            for t in std::fs::read_dir("/proc/self/task").unwrap() {
                let tid = t.unwrap().file_name().into_string().unwrap();
                let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
                if matches!(name.trim(), "rocksdb:high" | "rocksdb:low") {
                    pool.push((tid, name.trim().to_string()));
                }
            }
            let highs = pool.iter().filter(|(_, n)| n == "rocksdb:high").count();
            let lows = pool.len() - highs;
            if (highs >= 1 && lows >= 3) || std::time::Instant::now() > deadline {
                break pool;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(pool.iter().any(|(_, n)| n == "rocksdb:high"), "{pool:?}");
        assert!(pool.iter().filter(|(_, n)| n == "rocksdb:low").count() >= 3, "{pool:?}");
        const SCHED_IDLE: u32 = 5;
        for (tid, name) in &pool {
            assert_eq!(policy_of(tid), Some(SCHED_IDLE), "{name} ({tid})");
        }
        // "/proc/thread-self" links to "PID/task/TID".
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        let me = me.file_name().unwrap().to_str().unwrap();
        assert_eq!(policy_of(me), Some(0), "the opening thread stays SCHED_OTHER");
    }
}
