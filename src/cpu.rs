//! The one CPU pool: every decode, resize and encode runs here, never on an async worker.
//!
//! Owns the rayon pool, the admission semaphore (threads + bounded queue), the AVIF
//! concurrency cap and panic containment. Beyond the queue a job is refused at once
//! (`CpuError::Overloaded` → 503 with `Retry-After`) instead of queueing forever. A job that
//! panics answers `CpuError::Panicked` and the node keeps serving.
//! Must never be bypassed: `.clippy.toml` bans other ways of starting threads.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use crate::metrics::CpuMetrics;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    #[error("cpu queue full")]
    Overloaded { retry_after: u64 },
    #[error("job deadline passed")]
    Timeout,
    #[error("job panicked: {0}")]
    Panicked(String),
    #[error("cpu pool shut down")]
    ShutDown,
}

/// Which admission lane a job takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobClass {
    Normal,
    /// AVIF encodes hold a core for hundreds of milliseconds; at most `avif_concurrency`
    /// run at once so they cannot starve every other render.
    Avif,
    /// An AVIF encode nobody waits for (behind a stand-in answer): the lowest priority. It is
    /// admitted only onto an idle pool (a free thread, nothing queued, an AVIF lane free),
    /// else refused at once as `Overloaded`; it never waits in the queue.
    Background,
}

pub(crate) struct Pool {
    pool: rayon::ThreadPool,
    admission: Arc<Semaphore>,
    avif: Arc<Semaphore>,
    metrics: CpuMetrics,
    threads: usize,
}

impl Pool {
    /// `threads == 0` means one per core. `queue` renders may wait beyond the running ones.
    /// Render threads run at OS niceness `nice` (0 = normal): the I/O threads that serve
    /// cache hits then win a contended core (at nice 10, about 90 % of it), while renders still
    /// use every idle cycle.
    pub(crate) fn new(
        threads: usize,
        queue: usize,
        avif_concurrency: usize,
        nice: u8,
        metrics: CpuMetrics,
    ) -> std::io::Result<Pool> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("imgnode-cpu-{i}"))
            .start_handler(move |_| {
                if nice > 0
                    && let Err(e) = set_own_nice(nice)
                {
                    tracing::warn!(error = %e, "cannot lower the priority of a render thread");
                }
            })
            .build()
            .map_err(std::io::Error::other)?;
        metrics.threads.set(threads as i64);
        Ok(Pool {
            pool,
            admission: Arc::new(Semaphore::new(threads + queue)),
            avif: Arc::new(Semaphore::new(avif_concurrency.max(1))),
            metrics,
            threads,
        })
    }

    /// Whether every AVIF lane is taken: a new AVIF job would wait for one.
    pub(crate) fn avif_busy(&self) -> bool {
        self.avif.available_permits() == 0
    }

    /// Runs `job` on the pool, admitted at once or refused; waits at most `deadline`
    /// ([`Pool::admit`] then [`Admission::run`]).
    pub(crate) async fn run<T, F>(
        &self,
        class: JobClass,
        deadline: Duration,
        job: F,
    ) -> Result<T, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.admit(class)?.run(deadline, job).await
    }

    /// Takes a place for a job of `class`, or refuses at once (`Overloaded`) beyond threads +
    /// queue, or for a `Background` job on a pool that is not idle. Taken before a render
    /// fetches its original, so a refused render costs no fetch and at most threads + queue
    /// originals are held for renders; dropped unused, the place is freed.
    pub(crate) fn admit(&self, class: JobClass) -> Result<Admission<'_>, CpuError> {
        let overloaded = || CpuError::Overloaded {
            retry_after: self.retry_after(),
        };
        let lane = if class == JobClass::Background {
            let idle = self.metrics.queue_depth.get() == 0
                && (self.metrics.in_flight.get().max(0) as usize) < self.threads;
            match self.avif.clone().try_acquire_owned() {
                Ok(lane) if idle => Some(lane),
                _ => return Err(overloaded()),
            }
        } else {
            None
        };
        let Ok(permit) = self.admission.clone().try_acquire_owned() else {
            self.metrics.rejected_total.inc();
            return Err(overloaded());
        };
        self.metrics.queue_depth.inc();
        Ok(Admission {
            pool: self,
            class,
            lane,
            permit,
            queued: QueuedGuard(self.metrics.queue_depth.clone()),
            admitted: Instant::now(),
        })
    }

    /// A hint for `Retry-After`: about how long the current backlog takes to drain.
    fn retry_after(&self) -> u64 {
        let waiting = self.metrics.queue_depth.get().max(0) as u64;
        (waiting / self.threads.max(1) as u64).clamp(1, 30)
    }
}

/// A job's place in the pool (see [`Pool::admit`]): counted in the queue until it runs.
pub(crate) struct Admission<'a> {
    pool: &'a Pool,
    class: JobClass,
    /// A `Background` job's AVIF lane, taken at admission.
    lane: Option<tokio::sync::OwnedSemaphorePermit>,
    permit: tokio::sync::OwnedSemaphorePermit,
    queued: QueuedGuard,
    admitted: Instant,
}

impl Admission<'_> {
    /// Runs `job` in this place; waits at most `deadline` (for an AVIF lane, then the job).
    ///
    /// On `Timeout` the job still runs to its end (CPU work cannot be interrupted) and keeps
    /// its admission slot until then, so the queue bound stays true.
    pub(crate) async fn run<T, F>(self, deadline: Duration, job: F) -> Result<T, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Admission {
            pool,
            class,
            lane,
            permit,
            queued,
            admitted,
        } = self;
        let work = async {
            let lane = match class {
                JobClass::Normal => None,
                JobClass::Background => lane,
                JobClass::Avif => Some(
                    pool.avif
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| CpuError::ShutDown)?,
                ),
            };
            let (tx, rx) = oneshot::channel();
            let metrics = pool.metrics.clone();
            pool.pool.spawn(move || {
                drop(queued);
                metrics
                    .queue_wait_seconds
                    .observe(admitted.elapsed().as_secs_f64());
                metrics.in_flight.inc();
                let outcome = catch_unwind(AssertUnwindSafe(job));
                metrics.in_flight.dec();
                if outcome.is_err() {
                    metrics.panics_total.inc();
                }
                drop(lane);
                drop(permit);
                // The receiver may have given up (deadline); the result is then dropped.
                let _ = tx.send(outcome);
            });
            match rx.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(panic)) => Err(CpuError::Panicked(panic_message(&panic))),
                Err(_) => Err(CpuError::ShutDown),
            }
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or(Err(CpuError::Timeout))
    }
}

/// Sets the calling thread's niceness (Linux: per thread). thread-priority maps its 0–99
/// scale linearly onto nice 19..-20; the value that lands on `nice` is looked up, and a test
/// reads the result back from /proc, so a change of that mapping cannot go unnoticed.
fn set_own_nice(nice: u8) -> Result<(), String> {
    let target = i32::from(nice.min(19));
    let scale = (0..=99u8)
        .find(|p| (39.0 * (1.0 - f32::from(*p) / 99.0)) as i32 - 20 == target)
        .ok_or_else(|| format!("no priority value maps to nice {target}"))?;
    let value = thread_priority::ThreadPriorityValue::try_from(scale)?;
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Crossplatform(
        value,
    ))
    .map_err(|e| format!("{e:?}"))
}

/// Keeps the queue-depth gauge true when a queued job is dropped before it starts
/// (deadline while waiting for the AVIF lane, or pool shutdown).
struct QueuedGuard(prometheus::IntGauge);

impl Drop for QueuedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::mpsc;

    fn pool(threads: usize, queue: usize) -> (Pool, Metrics) {
        let m = Metrics::new();
        (Pool::new(threads, queue, 1, 10, m.cpu.clone()).unwrap(), m)
    }

    const LONG: Duration = Duration::from_secs(30);

    /// A job of `class` that holds its thread (and lane) until the sender is used; returns
    /// once it runs.
    async fn hold(
        p: &Arc<Pool>,
        class: JobClass,
    ) -> (
        mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), CpuError>>,
    ) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let p = p.clone();
        let job = tokio::spawn(async move {
            p.run(class, LONG, move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .await
        });
        started_rx.await.unwrap();
        (release_tx, job)
    }

    /// The calling thread's nice value, from `/proc/thread-self/stat` (field 19).
    fn own_nice() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        after_comm.split_whitespace().nth(16)?.parse().ok()
    }

    #[tokio::test]
    async fn render_threads_run_at_the_configured_niceness() {
        for nice in [1, 10, 19] {
            let p = Pool::new(1, 1, 1, nice, Metrics::new().cpu.clone()).unwrap();
            let got = p.run(JobClass::Normal, LONG, own_nice).await;
            assert_eq!(got, Ok(Some(i32::from(nice))), "nice {nice}");
        }
        let normal = Pool::new(1, 1, 1, 0, Metrics::new().cpu.clone()).unwrap();
        assert_eq!(
            normal.run(JobClass::Normal, LONG, own_nice).await,
            Ok(own_nice())
        );
    }

    #[tokio::test]
    async fn runs_jobs_and_returns_their_values() {
        let (p, _) = pool(2, 2);
        assert_eq!(p.run(JobClass::Normal, LONG, || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_survives() {
        let (p, m) = pool(1, 1);
        let r: Result<(), _> = p
            .run(JobClass::Normal, LONG, || panic!("decoder exploded"))
            .await;
        assert_eq!(r, Err(CpuError::Panicked("decoder exploded".into())));
        assert_eq!(m.cpu.panics_total.get(), 1);
        assert_eq!(p.run(JobClass::Normal, LONG, || 1).await, Ok(1));
    }

    #[tokio::test]
    async fn beyond_threads_plus_queue_jobs_are_refused_at_once() {
        let (p, m) = pool(1, 1);
        let p = Arc::new(p);
        // Hold the only thread and the only queue slot with jobs blocked on channels.
        let (release_tx, first) = hold(&p, JobClass::Normal).await;
        let second = {
            let p = p.clone();
            tokio::spawn(async move { p.run(JobClass::Normal, LONG, || 2).await })
        };
        // The second job is admitted (queue slot); wait until the gauge shows it queued.
        while m.cpu.queue_depth.get() < 1 {
            tokio::task::yield_now().await;
        }
        let third = p.run(JobClass::Normal, LONG, || 3).await;
        assert!(
            matches!(third, Err(CpuError::Overloaded { .. })),
            "{third:?}"
        );
        assert_eq!(m.cpu.rejected_total.get(), 1);
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(second.await.unwrap(), Ok(2));
    }

    /// A background job runs only on an idle pool: with the one thread busy (queue free, AVIF
    /// lane free) it is refused at once and never queued; on the idle pool it runs.
    #[tokio::test]
    async fn a_background_job_runs_only_on_an_idle_pool() {
        let (p, m) = pool(1, 4);
        let p = Arc::new(p);
        assert_eq!(p.run(JobClass::Background, LONG, || 1).await, Ok(1));
        let (release_tx, busy) = hold(&p, JobClass::Normal).await;
        let refused = p.run(JobClass::Background, LONG, || 2).await;
        assert!(
            matches!(refused, Err(CpuError::Overloaded { .. })),
            "{refused:?}"
        );
        assert_eq!(m.cpu.queue_depth.get(), 0, "nothing was queued");
        release_tx.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        // An AVIF lane held by a foreground AVIF job refuses it too.
        let (p2, _) = pool(2, 4);
        let p2 = Arc::new(p2);
        let (release_tx, avif) = hold(&p2, JobClass::Avif).await;
        assert!(matches!(
            p2.run(JobClass::Background, LONG, || 3).await,
            Err(CpuError::Overloaded { .. })
        ));
        release_tx.send(()).unwrap();
        assert_eq!(avif.await.unwrap(), Ok(()));
        assert_eq!(p2.run(JobClass::Background, LONG, || 4).await, Ok(4));
    }

    #[tokio::test]
    async fn a_deadline_gives_timeout_and_the_slot_is_freed_when_the_job_ends() {
        let (p, _) = pool(1, 0);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let r = p
            .run(JobClass::Normal, Duration::from_millis(20), move || {
                release_rx.recv().unwrap();
            })
            .await;
        assert_eq!(r, Err(CpuError::Timeout));
        release_tx.send(()).unwrap();
        // Once the job has ended its slot is free again; wait for it without sleeping.
        loop {
            match p.run(JobClass::Normal, LONG, || 5).await {
                Ok(v) => {
                    assert_eq!(v, 5);
                    break;
                }
                Err(CpuError::Overloaded { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    }
}
