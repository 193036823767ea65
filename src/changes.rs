//! A signal that what answers depend on may have changed: an endpoint picker was read, a pod's scrape
//! ended, the snapshot was rebuilt. Push streams (KEDA's `StreamIsActive`) wait on it instead of polling,
//! so a change is pushed as soon as it is read.

use std::sync::Arc;

use tokio::sync::watch;

/// The sending side, cloned into every source that bumps it; receivers see the latest count.
#[derive(Clone)]
pub struct Changes(Arc<watch::Sender<u64>>);

impl Changes {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(0);
        Self(Arc::new(tx))
    }

    /// Something was read: wakes every subscriber (those not waiting see it at their next wait).
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_a_change_made_while_it_was_not_waiting() {
        let changes = Changes::new();
        let mut rx = changes.subscribe();
        changes.notify();
        changes.notify();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        assert!(!rx.has_changed().unwrap());
    }
}
