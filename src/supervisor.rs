//! Every long-lived task runs under one supervisor: a `JoinSet` selected against shutdown. A task that
//! ends or panics is restarted with exponential backoff and counted in
//! `wva_metrics_server_task_restarts_total{task}`; one that keeps failing without ever running for
//! `RestartPolicy::stable_after` ends the process with a clear log line, so kubelet restarts the pod
//! instead of leaving a server that answers from a frozen snapshot.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::telemetry::Metrics;

pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
type Start = Box<dyn Fn() -> TaskFuture + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive failures (each within `stable_after` of its start) before giving up.
    pub max_failures: u32,
    /// A task that ran at least this long before ending starts a fresh failure count.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_failures: 8,
            stable_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

struct Task {
    name: &'static str,
    start: Start,
    failures: u32,
}

/// How a task's run ended.
enum Outcome {
    Ended,
    Panicked(String),
}

pub(crate) struct Supervisor {
    tasks: Vec<Task>,
    /// Run once each, in order, after the tasks are stopped on shutdown (releasing the status Lease).
    on_stop: Vec<(&'static str, Start)>,
    policy: RestartPolicy,
    metrics: Arc<Metrics>,
}

/// How long each shutdown hook may take.
const STOP_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

impl Supervisor {
    pub fn new(metrics: Arc<Metrics>, policy: RestartPolicy) -> Self {
        Self {
            tasks: Vec::new(),
            on_stop: Vec::new(),
            policy,
            metrics,
        }
    }

    /// Adds a hook run once on shutdown, after every task has been stopped (bounded by
    /// [`STOP_HOOK_TIMEOUT`]).
    pub fn on_stop<F, Fut>(&mut self, name: &'static str, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_stop
            .push((name, Box::new(move || Box::pin(hook()))));
    }

    async fn run_stop_hooks(&self) {
        for (name, hook) in &self.on_stop {
            if tokio::time::timeout(STOP_HOOK_TIMEOUT, hook())
                .await
                .is_err()
            {
                tracing::warn!(hook = name, timeout = ?STOP_HOOK_TIMEOUT, "shutdown hook did not finish in time");
            }
        }
    }

    /// Adds a task. `start` is called for the first run and for every restart, so it builds a fresh
    /// future from shared state each time.
    pub fn add<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Task {
            name,
            start: Box::new(move || Box::pin(start())),
            failures: 0,
        });
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|t| t.name).collect()
    }

    fn launch(
        set: &mut JoinSet<(usize, Instant, Outcome)>,
        index: usize,
        future: TaskFuture,
        delay: Duration,
    ) {
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let started = Instant::now();
            let outcome = match AssertUnwindSafe(future).catch_unwind().await {
                Ok(()) => Outcome::Ended,
                Err(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
            };
            (index, started, outcome)
        });
    }

    /// Runs every task until `shutdown` resolves (then aborts them all, runs the shutdown hooks and
    /// returns `Ok`), or until a task cannot be restarted (returns [`Error::TaskFailed`]).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut set = JoinSet::new();
        for (i, t) in self.tasks.iter().enumerate() {
            Self::launch(&mut set, i, (t.start)(), Duration::ZERO);
        }
        tokio::pin!(shutdown);
        loop {
            let joined = tokio::select! {
                _ = &mut shutdown => {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    self.run_stop_hooks().await;
                    return Ok(());
                }
                joined = set.join_next() => joined,
            };
            let (index, started, outcome) = match joined {
                Some(Ok(done)) => done,
                // Our wrapper catches panics and is never aborted while we run; nothing to restart.
                Some(Err(e)) => {
                    tracing::error!(error = %e, "supervised task wrapper failed");
                    continue;
                }
                None => std::future::pending().await,
            };
            let task = &mut self.tasks[index];
            task.failures = if started.elapsed() >= self.policy.stable_after {
                1
            } else {
                task.failures + 1
            };
            let why = match &outcome {
                Outcome::Ended => "ended".to_string(),
                Outcome::Panicked(m) => format!("panicked: {m}"),
            };
            if task.failures > self.policy.max_failures {
                tracing::error!(task = task.name, failures = task.failures, reason = %why,
                    "supervised task keeps failing; exiting so that the pod is restarted");
                set.abort_all();
                return Err(Error::TaskFailed {
                    task: task.name,
                    failures: task.failures,
                    last: why,
                });
            }
            let delay = self.policy.backoff(task.failures);
            self.metrics.task_restarted(task.name);
            tracing::warn!(task = task.name, reason = %why, restart_in = ?delay, "supervised task stopped; restarting");
            Self::launch(&mut set, index, (task.start)(), delay);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_failures: 3,
            stable_after: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_counted() {
        let metrics = Metrics::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        let mut s = Supervisor::new(metrics.clone(), fast());
        let r = runs.clone();
        s.add("scraper", move || {
            let r = r.clone();
            let tx = tx.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("boom");
                }
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                std::future::pending::<()>().await;
            }
        });
        let result = s.run(async { rx.await.unwrap() }).await;
        assert!(result.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let text = metrics.encode();
        assert!(
            text.contains(r#"wva_metrics_server_task_restarts_total{task="scraper"} 1"#),
            "{text}"
        );
    }

    /// Issue 25: the status Lease was never released because shutdown only aborted the tasks. Hooks run
    /// once, after every task has stopped.
    #[tokio::test]
    async fn shutdown_hooks_run_after_the_tasks_stop() {
        let order = Arc::new(std::sync::Mutex::new(Vec::<&str>::new()));
        let mut s = Supervisor::new(Metrics::new(), fast());
        let o = order.clone();
        s.add("writer", move || {
            let o = o.clone();
            async move {
                struct Stopped(Arc<std::sync::Mutex<Vec<&'static str>>>);
                impl Drop for Stopped {
                    fn drop(&mut self) {
                        self.0.lock().unwrap().push("task stopped");
                    }
                }
                let _guard = Stopped(o);
                std::future::pending::<()>().await;
            }
        });
        let o = order.clone();
        s.on_stop("release", move || {
            let o = o.clone();
            async move { o.lock().unwrap().push("released") }
        });
        let result = s.run(tokio::time::sleep(Duration::from_millis(20))).await;
        assert!(result.is_ok());
        assert_eq!(*order.lock().unwrap(), vec!["task stopped", "released"]);
    }

    #[tokio::test]
    async fn a_task_that_keeps_failing_ends_the_run() {
        let mut s = Supervisor::new(Metrics::new(), fast());
        s.add("watch", || async {});
        let err = s.run(std::future::pending()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TaskFailed {
                    task: "watch",
                    failures: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(500));
        assert_eq!(p.backoff(2), Duration::from_secs(1));
        assert_eq!(p.backoff(4), Duration::from_secs(4));
        assert_eq!(p.backoff(30), Duration::from_secs(30));
    }
}
