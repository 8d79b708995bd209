//! The service's side of systemd's notify protocol (`sd_notify(3)`, through the `sd-notify`
//! crate; nothing is sent when `NOTIFY_SOCKET` is unset, e.g. run by hand): `READY=1` once
//! every event source is up (the unit is `Type=notify`, so units ordered after it start only
//! then), `STOPPING=1` on SIGTERM, and with `WatchdogSec=` a `WATCHDOG=1` every third of the
//! interval while the service is alive. Alive means the event loop runs (it sends the pings)
//! and the worker is not stuck: a run or batch that has lasted longer than
//! [`super::stop_limit`] (its deadline, the rollback reserve and a margin) stops the pings,
//! and systemd restarts the service (`Restart=on-failure` covers a watchdog timeout).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the worker is in a run or batch, and since when: shared by the worker (which marks
/// it) and the event loop (which pings the watchdog).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// ms since `origin` + 1 when the current run or batch started; 0 when idle.
    busy_since: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            origin: Instant::now(),
            busy_since: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    /// The worker starts a run or batch.
    pub fn busy(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(ms, Ordering::SeqCst);
    }

    /// The worker waits for work.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::SeqCst);
    }

    /// How long the current run or batch has lasted at `now` (`None` when idle).
    pub fn busy_for(&self, now: Instant) -> Option<Duration> {
        match self.busy_since.load(Ordering::SeqCst) {
            0 => None,
            ms => {
                let since = self.origin + Duration::from_millis(ms - 1);
                Some(now.saturating_duration_since(since))
            }
        }
    }

    /// Whether a watchdog ping is due at `now`: the worker is idle or its run is within
    /// `limit` ([`super::stop_limit`]).
    pub fn alive(&self, now: Instant, limit: Duration) -> bool {
        self.busy_for(now).is_none_or(|d| d <= limit)
    }
}

/// `READY=1` with a `STATUS=` line.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[sd_notify::NotifyState::Watchdog]);
}

/// The interval of watchdog pings: a third of `WatchdogSec=` (`WATCHDOG_USEC`), or `None`
/// when systemd asked for no watchdog (or for another process).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| (d / 3).max(Duration::from_millis(10)))
}

fn send(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::debug!("watch: sd_notify: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_stop_when_a_run_outlasts_the_limit() {
        let hb = Heartbeat::default();
        let limit = Duration::from_secs(6);
        let now = Instant::now();
        assert!(hb.alive(now, limit), "idle");
        hb.busy();
        let t = Instant::now();
        assert!(hb.alive(t + Duration::from_secs(5), limit));
        assert!(!hb.alive(t + Duration::from_secs(7), limit));
        hb.idle();
        assert!(hb.alive(t + Duration::from_secs(60), limit));
    }
}
