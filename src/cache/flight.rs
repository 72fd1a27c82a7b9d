//! Single flight: concurrent requests for the same missing variant share one fetch and one
//! render.
//!
//! The leader's work runs in its own task, so a leader whose client disconnects does not
//! cancel the render the followers wait for; a failure is shared with every waiter rather than
//! retried by each. Must never hold its lock across an await.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type InFlight<K, T, E> = Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, Result<T, E>>>>>>;

/// The work's task ended without an outcome (it panicked): what every waiter gets then,
/// converted into the caller's error type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("render task failed: {0}")]
pub(crate) struct TaskFailed(pub(crate) String);

/// How a caller got its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// This caller started the work.
    Leader,
    /// Another caller's work was already running; this one waited for it.
    Follower,
}

/// Keys `K`, shared outcomes `Result<T, E>`: both sides are cloned to every waiter.
pub(crate) struct SingleFlight<K, T: Clone, E: Clone> {
    inflight: InFlight<K, T, E>,
}

impl<K, T: Clone, E: Clone> Default for SingleFlight<K, T, E> {
    fn default() -> Self {
        SingleFlight {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, T, E> SingleFlight<K, T, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<TaskFailed> + 'static,
{
    /// Whether `key` is running now.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Runs `work` unless the same `key` is already running, then waits for that run.
    /// `work` must publish its result (e.g. into the cache) before it returns: the key leaves
    /// the in-flight table when it ends, and later callers look in the cache first.
    pub(crate) async fn run<F, Fut>(&self, key: K, work: F) -> (Result<T, E>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (shared, role) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = map.get(&key) {
                (existing.clone(), Role::Follower)
            } else {
                let table = self.inflight.clone();
                let owned_key = key.clone();
                let fut = work();
                let task = tokio::spawn(async move {
                    let outcome = fut.await;
                    table
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&owned_key);
                    outcome
                });
                let shared = async move {
                    task.await
                        .unwrap_or_else(|e| Err(TaskFailed(e.to_string()).into()))
                }
                .boxed()
                .shared();
                map.insert(key, shared.clone());
                (shared, Role::Leader)
            }
        };
        (shared.await, role)
    }

    /// Keys currently in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inflight.lock().map_or(0, |m| m.len())
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<u32, u32, TaskFailed>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = oneshot::channel::<()>();
        let gate = gate.shared();
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let (flights, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
            waiters.push(tokio::spawn(async move {
                flights
                    .run(7, move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.await;
                        Ok(42)
                    })
                    .await
            }));
        }
        while flights.is_empty() {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        let mut leaders = 0;
        for w in waiters {
            let (out, role) = w.await.unwrap();
            assert_eq!(out.unwrap(), 42);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn failures_are_shared_not_retried() {
        let flights: Arc<SingleFlight<u32, u32, TaskFailed>> = Arc::new(SingleFlight::default());
        let (release, gate) = oneshot::channel::<()>();
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, move || async move {
                        let _ = gate.await;
                        Err(TaskFailed("bad".into()))
                    })
                    .await
            })
        };
        while flights.is_empty() {
            tokio::task::yield_now().await;
        }
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, || async {
                        panic!("a follower must not run its own work")
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        let (a, _) = leader.await.unwrap();
        let (b, role) = follower.await.unwrap();
        assert_eq!(a.unwrap_err().0, "bad");
        assert_eq!(role, Role::Follower);
        assert_eq!(b.unwrap_err().0, "bad");
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_cancel_the_work() {
        let flights: Arc<SingleFlight<u32, u32, TaskFailed>> = Arc::new(SingleFlight::default());
        let (release, gate) = oneshot::channel::<()>();
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(3, move || async move {
                        let _ = gate.await;
                        Ok(9)
                    })
                    .await
            })
        };
        while flights.is_empty() {
            tokio::task::yield_now().await;
        }
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(3, || async { Ok(0) }).await })
        };
        tokio::task::yield_now().await;
        leader.abort();
        release.send(()).unwrap();
        let (out, role) = follower.await.unwrap();
        assert_eq!(role, Role::Follower);
        assert_eq!(out.unwrap(), 9);
    }
}
