//! The threads that verify batch chunks: a fixed pool at a lower CPU
//! priority than the request threads, so that a back office's
//! million-line comparison gives way to a counter's single verification
//! instead of the other way round. On an idle machine the batch runs as
//! fast as before: priority only decides who runs when both want a core.

use super::pipeline::BatchError;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// How much higher the verifier threads' nice value is than the
/// process's: at 10 above, a request thread that wants a core gets about
/// nine tenths of it while both are runnable. Raising one's own nice value
/// needs no privilege, and the threads never lower it again.
pub const NICE: i32 = 10;

type Work = Box<dyn FnOnce() + Send>;

/// The pool's queue, or none if no thread could be started (the work then
/// goes to tokio's blocking pool at the usual priority).
static POOL: OnceLock<Option<crossbeam::channel::Sender<Work>>> = OnceLock::new();

fn pool() -> Option<&'static crossbeam::channel::Sender<Work>> {
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam::channel::unbounded::<Work>();
        let mut started = 0;
        for i in 0..threads() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("batch-verify-{i}")).spawn(move || {
                if let Err(e) = lower_priority() {
                    tracing::warn!(error = %e, "a batch verifier keeps the request threads' CPU priority");
                }
                // Each piece of work catches its own panic (see `run`).
                for work in rx {
                    work();
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "a batch verifier thread could not be started"),
            }
        }
        (started > 0).then_some(tx)
    })
    .as_ref()
}

/// The pool's threads: one per core. A batch keeps
/// [`super::pipeline::verifiers`] chunks (at most 8) on it at a time, so
/// on a larger machine several batches together still use every core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// Raises the calling thread's nice value by [`NICE`], to 19 at most (on
/// Linux a thread's own, not its process's).
fn lower_priority() -> std::io::Result<()> {
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    rustix::process::setpriority_process(me, (now + NICE).min(19))?;
    Ok(())
}

/// Runs `f` on a verifier thread; the returned future resolves to its
/// result. A panic in `f` resolves to [`BatchError::Worker`] and leaves the
/// thread serving.
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    let (tx, rx) = oneshot::channel();
    let work = move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.map_err(|p| panic_message(&*p)));
    };
    match pool() {
        Some(pool) => {
            if let Err(e) = pool.send(Box::new(work)) {
                // The threads are never stopped; should they be gone, the
                // work still runs.
                tokio::task::spawn_blocking(e.into_inner());
            }
        }
        None => {
            tokio::task::spawn_blocking(work);
        }
    }
    Task(rx)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    format!("a batch verifier panicked: {}", basedata_store::panic_text(p))
}

/// The result of [`run`], to await.
pub struct Task<T>(oneshot::Receiver<Result<T, String>>);

impl<T> Future for Task<T> {
    type Output = Result<T, BatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(BatchError::Worker(why)),
            Err(_) => Err(BatchError::Worker("a batch verifier dropped its work".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The work runs on a thread of lowered priority, and the request
    /// thread that awaits it keeps its own.
    #[tokio::test]
    async fn work_runs_at_the_lowered_priority() {
        let mine = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let before = mine();
        let theirs = run(mine).await.unwrap();
        assert_eq!(theirs, (before + NICE).min(19), "the verifier's nice value");
        assert_eq!(mine(), before, "the caller's is unchanged");
        let name = run(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("batch-verify-")), "on the pool");
    }

    /// A panic is the work's error, not the pool's end: after as many
    /// panics as there are threads, every thread still serves (as many pieces of work as there
    /// are threads meet, each on a thread of its own).
    #[tokio::test]
    async fn a_panic_is_an_error_and_the_pool_goes_on() {
        let n = threads();
        for _ in 0..n {
            let e = run(|| -> u32 { panic!("bad chunk") }).await.unwrap_err();
            assert!(matches!(&e, BatchError::Worker(m) if m.contains("bad chunk")), "{e}");
        }
        let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let arrived = arrived.clone();
                run(move || {
                    arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while arrived.load(std::sync::atomic::Ordering::SeqCst) < n && std::time::Instant::now() < until {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let on_pool = std::thread::current().name().is_some_and(|t| t.starts_with("batch-verify-"));
                    (arrived.load(std::sync::atomic::Ordering::SeqCst) == n, on_pool)
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), (true, true), "all {n} threads serve, on the pool");
        }
    }
}
