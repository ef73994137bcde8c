//! The controller runner: a work queue of object keys with de-duplication, one reconcile
//! at a time per key, a fixed number of workers, back-off retries and a tracing span around
//! each reconcile. Controllers supply `reconcile(key, ctx)`; the shared [`error_policy`]
//! decides when a failed key is tried again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Namespace (empty for cluster objects) and name.
pub type Key = (String, String);

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until a watched change enqueues the key again.
    AwaitChange,
    /// Look again after this long (e.g. minReadySeconds or a progress deadline).
    RequeueAfter(Duration),
}

/// Retry delays for a key that keeps failing: 5 ms doubling to 1000 s, like client-go.
const RETRY_BASE: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_secs(1000);

/// A de-duplicating queue of keys, cloned freely into watch tasks.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    /// Keys waiting for a worker, in order.
    order: std::collections::VecDeque<Key>,
    queued: HashSet<Key>,
    /// Keys being reconciled; one enqueued meanwhile runs again afterwards.
    running: HashSet<Key>,
    again: HashSet<Key>,
    failures: HashMap<Key, u32>,
}

impl Default for Queue {
    fn default() -> Self {
        Self { inner: Arc::new(QueueInner { state: Mutex::new(QueueState::default()), ready: Notify::new() }) }
    }
}

impl Queue {
    pub fn add(&self, key: Key) {
        let mut s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.running.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.order.push_back(key);
            drop(s);
            self.inner.ready.notify_one();
        }
    }

    /// Enqueues `key` after `delay` (a retry or a timed look).
    pub fn add_after(&self, key: Key, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    async fn next(&self) -> Key {
        loop {
            let notified = self.inner.ready.notified();
            {
                let mut s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(key) = s.order.pop_front() {
                    s.queued.remove(&key);
                    s.running.insert(key.clone());
                    return key;
                }
            }
            notified.await;
        }
    }

    fn done(&self, key: &Key, failed: bool) -> u32 {
        let mut s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        s.running.remove(key);
        let failures = if failed {
            let n = s.failures.entry(key.clone()).or_default();
            *n += 1;
            *n
        } else {
            s.failures.remove(key);
            0
        };
        if s.again.remove(key) && s.queued.insert(key.clone()) {
            s.order.push_back(key.clone());
            drop(s);
            self.inner.ready.notify_one();
        }
        failures
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    /// The object cannot be acted on as it is (a bad template, schedule or time zone).
    #[error("{0}")]
    Invalid(String),
}

/// The controllers' retry policy: API errors back off per key; an invalid object waits
/// for its next change (which enqueues it anyway), looked at again after 5 min at most.
pub fn error_policy(_key: &Key, e: &Error, failures: u32) -> Duration {
    match e {
        Error::Api(_) => retry_delay(failures),
        Error::Invalid(_) => Duration::from_secs(300),
    }
}

/// The back-off before retry number `failures` of a key.
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_BASE.saturating_mul(1u32.checked_shl(failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX)).min(RETRY_MAX)
}

/// Runs `workers` workers over `queue` until the returned future is dropped.
pub async fn run<C, R, RF, E>(name: &'static str, queue: Queue, ctx: Arc<C>, workers: usize, reconcile: R, error_policy: fn(&Key, &E, u32) -> Duration)
where
    C: Send + Sync + 'static,
    R: Fn(Key, Arc<C>) -> RF + Send + Sync + 'static,
    RF: Future<Output = Result<Action, E>> + Send,
    E: std::fmt::Display + Send + 'static,
{
    tracing::debug!(controller = name, workers, "controller started");
    let reconcile = Arc::new(reconcile);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (queue, ctx, reconcile) = (queue.clone(), ctx.clone(), reconcile.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let key = queue.next().await;
                let span = tracing::info_span!("reconcile", controller = name, namespace = %key.0, name = %key.1);
                let result = reconcile(key.clone(), ctx.clone()).instrument(span.clone()).await;
                match result {
                    Ok(action) => {
                        queue.done(&key, false);
                        if let Action::RequeueAfter(d) = action {
                            queue.add_after(key, d);
                        }
                    }
                    Err(e) => {
                        let failures = queue.done(&key, true);
                        let delay = error_policy(&key, &e, failures);
                        span.in_scope(|| tracing::warn!(error = %e, retry_in = ?delay, "reconcile failed"));
                        queue.add_after(key, delay);
                    }
                }
            }
        }));
    }
    // Workers never end on their own; dropping this future stops them.
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _guard = AbortOnDrop(tasks);
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn keys_are_deduplicated_retried_and_never_run_twice_at_once() {
        let queue = Queue::default();
        let calls = Arc::new(Mutex::new(Vec::<Key>::new()));
        let fails = Arc::new(AtomicUsize::new(2));
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        struct Ctx {
            calls: Arc<Mutex<Vec<Key>>>,
            fails: Arc<AtomicUsize>,
            seen: mpsc::UnboundedSender<Key>,
        }
        let ctx = Arc::new(Ctx { calls: calls.clone(), fails: fails.clone(), seen: seen_tx });
        for _ in 0..5 {
            queue.add(("ns".into(), "a".into()));
        }
        let runner = tokio::spawn(run(
            "test",
            queue.clone(),
            ctx,
            4,
            |key: Key, ctx: Arc<Ctx>| async move {
                ctx.calls.lock().unwrap().push(key.clone());
                let _ = ctx.seen.send(key);
                if ctx.fails.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    Err("not yet")
                } else {
                    Ok(Action::AwaitChange)
                }
            },
            |_, _: &&str, failures| retry_delay(failures),
        ));
        // Two failures, then success: three runs of the one key despite five adds.
        for _ in 0..3 {
            seen_rx.recv().await.unwrap();
        }
        queue.add(("ns".into(), "b".into()));
        assert_eq!(seen_rx.recv().await.unwrap(), ("ns".to_owned(), "b".to_owned()));
        runner.abort();
        let calls = calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|k| k.1 == "a").count(), 3);
        assert_eq!(retry_delay(1), Duration::from_millis(5));
        assert_eq!(retry_delay(3), Duration::from_millis(20));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }
}
