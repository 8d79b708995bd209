//! Warnings about a condition that lasts (OVSDB unreachable): the service retries every few
//! seconds, and a warning per retry would fill the journal with one line repeated. The first
//! is logged at once, the next at most once per [`EVERY`] with the count of those held back
//! (the others go to debug), and when the condition ends one line says how long it lasted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two warnings of one condition.
pub const EVERY: Duration = Duration::from_secs(60);

/// One lasting condition's warnings ([`WarnLimit::warn`]) and its end ([`WarnLimit::clear`]).
#[derive(Debug)]
pub struct WarnLimit {
    every: Duration,
    /// When the condition was first warned about, and when last.
    since: Option<(Instant, Instant)>,
    /// Warnings held back since the last one logged.
    held: u64,
}

impl WarnLimit {
    /// No condition yet; warnings at most once per `every`.
    pub const fn new(every: Duration) -> WarnLimit {
        WarnLimit {
            every,
            since: None,
            held: 0,
        }
    }

    /// Logs `msg` at warn level when it is the first of the condition or `every` has passed
    /// since the last one logged (then with the count held back in between); otherwise at
    /// debug level. Returns whether it was logged as a warning.
    pub fn warn(&mut self, now: Instant, msg: std::fmt::Arguments<'_>) -> bool {
        match self.since {
            None => {
                self.since = Some((now, now));
                log::warn!("{msg}");
                true
            }
            Some((first, last)) if now.duration_since(last) >= self.every => {
                log::warn!(
                    "{msg} (still, for {} s; {} more like it held back)",
                    now.duration_since(first).as_secs(),
                    self.held
                );
                self.since = Some((first, now));
                self.held = 0;
                true
            }
            Some(_) => {
                self.held += 1;
                log::debug!("{msg}");
                false
            }
        }
    }

    /// The condition ended: how long it lasted, or `None` when it was never warned about. The
    /// next [`WarnLimit::warn`] is logged at once.
    pub fn clear(&mut self, now: Instant) -> Option<Duration> {
        self.held = 0;
        self.since
            .take()
            .map(|(first, _)| now.duration_since(first))
    }
}

/// OVSDB unreachable, as the monitor's connects and the worker's runs both meet it: one
/// condition for the whole service.
pub static OVSDB_DOWN: Mutex<WarnLimit> = Mutex::new(WarnLimit::new(EVERY));

/// [`WarnLimit::warn`] on [`OVSDB_DOWN`].
pub fn ovsdb_down(msg: std::fmt::Arguments<'_>) {
    if let Ok(mut w) = OVSDB_DOWN.lock() {
        w.warn(Instant::now(), msg);
    }
}

/// [`WarnLimit::clear`] on [`OVSDB_DOWN`]: logs at info how long OVSDB was unreachable.
pub fn ovsdb_back() {
    let lasted = OVSDB_DOWN
        .lock()
        .ok()
        .and_then(|mut w| w.clear(Instant::now()));
    if let Some(d) = lasted {
        log::info!("watch: OVSDB reachable again after {} s", d.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_warning_then_one_per_period() {
        let t0 = Instant::now();
        let mut w = WarnLimit::new(Duration::from_secs(60));
        let at = |s: u64| t0 + Duration::from_secs(s);
        let logged: Vec<bool> = [0, 2, 4, 30, 59, 60, 61, 119, 120]
            .iter()
            .map(|&s| w.warn(at(s), format_args!("down")))
            .collect();
        assert_eq!(
            logged,
            [true, false, false, false, false, true, false, false, true]
        );
        assert_eq!(w.clear(at(125)), Some(Duration::from_secs(125)));
        assert!(
            w.warn(at(126), format_args!("down again")),
            "a new outage warns at once"
        );
        assert_eq!(WarnLimit::new(EVERY).clear(t0), None);
    }
}
