//! The signal that ends long-running work (subscriptions) when partlog
//! shuts down.

use tokio::sync::watch;

/// Set once, watched by many; cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    down: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            down: watch::Sender::new(false),
        }
    }
}

impl Shutdown {
    /// Starts the shutdown; every [`Shutdown::wait`] resolves.
    pub fn begin(&self) {
        self.down.send_replace(true);
    }

    /// True once the shutdown began.
    pub fn has_begun(&self) -> bool {
        *self.down.borrow()
    }

    /// Resolves once the shutdown began.
    pub async fn wait(&self) {
        let mut down = self.down.subscribe();
        // `self` holds the sender, so the channel cannot close.
        let _ = down.wait_for(|down| *down).await;
    }
}
