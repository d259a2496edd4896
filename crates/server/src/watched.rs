//! Tasks that serve requests from the background (the audit writer, the
//! authorization-code writer): a panic in one must not leave the server
//! answering as if it ran.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether a task spawned by [`spawn`] panicked; cloned by whoever must
/// know (the supervisor, a readiness check).
#[derive(Clone, Debug)]
pub struct Died(
    tokio::sync::watch::Receiver<bool>,
    /// The same, for [`Died::happened`]: one relaxed load, since the
    /// token endpoint asks on every request (a watch's borrow takes a
    /// lock every core shares).
    Arc<AtomicBool>,
);

impl Died {
    /// Whether the task panicked.
    pub fn happened(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    /// Ready once the task has panicked; never if it ends otherwise.
    pub async fn wait(&self) {
        let mut died = self.0.clone();
        if died.wait_for(|died| *died).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Spawn `task`, called `name` in the log, on the current runtime; the
/// handle of the task that awaits it (ends when it ends), and what says if
/// it panicked.
pub fn spawn(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) -> (tokio::task::JoinHandle<()>, Died) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let flag = Arc::new(AtomicBool::new(false));
    let died = Died(rx, Arc::clone(&flag));
    let inner = tokio::spawn(task);
    let outer = tokio::spawn(async move {
        if let Err(e) = inner.await {
            if e.is_panic() {
                tracing::error!(task = name, error = %e, "a background task panicked");
                flag.store(true, Ordering::Relaxed);
                // Read by `wait` even once the sender is gone.
                tx.send_replace(true);
            }
        }
    });
    (outer, died)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_is_told_and_an_end_is_not() {
        let (handle, died) = spawn("test", async { panic!("on purpose") });
        tokio::time::timeout(Duration::from_secs(5), died.wait())
            .await
            .expect("the panic was not told");
        assert!(died.happened());
        handle.await.unwrap();
        died.wait().await;

        let (handle, died) = spawn("test", async {});
        handle.await.unwrap();
        assert!(!died.happened());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), died.wait())
                .await
                .is_err(),
            "an end without a panic told as one"
        );
    }
}
