//! The one deadline of a run (`[hook] deadline_ms`): created once when the run starts and
//! carried through every bounded wait, since PVE's `exec_hookscript` has no timeout of its own
//! (pve-guest-common `PVE::GuestHelpers::exec_hookscript` passes none to `run_command`).

use std::time::{Duration, Instant};
// tokio's clock: the std clock in a normal build; a test can pause it (`tokio::time::pause`).
use tokio::time::Instant as Clock;

/// Which part of the deadline a wait for ovs-vswitchd may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A step of the plan: it must end a quarter of the deadline early, so a rollback and the
    /// audit rows still fit (PVE's veth is never left off its port by the deadline).
    Forward,
    /// A batch's shared wait ([`crate::engine::converge_batch`]): all but the last sixth. A
    /// batch stands for many runs and ovs-vswitchd applies its one transaction device after
    /// device (a kernel RCU grace period per released device in the userspace datapath), so
    /// the wait grows with the batch and may overrun the forward part; it polls on instead of
    /// failing, because the batch's rollback is one transaction per kind with one wait
    /// ([`crate::engine::rollback::hand_back_many`]), which fits in the sixth left (half of it
    /// for the rollback's wait, the last twelfth for the outcome rows).
    Batch,
    /// A rollback: it may use all but the last twelfth (for the outcome rows).
    Rollback,
}

/// When a run must be over: `started + length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    started: Clock,
    length: Duration,
}

impl Deadline {
    /// A deadline of `length` counted from `started` (the hook process's start, or the start
    /// of the run for `apply`/`watch`).
    pub fn new(started: Instant, length: Duration) -> Deadline {
        Deadline {
            started: Clock::from_std(started),
            length,
        }
    }

    /// A deadline of `length` from now on tokio's clock (paused in tests).
    #[cfg(test)]
    pub fn from_now(length: Duration) -> Deadline {
        Deadline {
            started: Clock::now(),
            length,
        }
    }

    /// `[hook] deadline_ms` of `cfg`, from `started`.
    pub fn of_config(cfg: &crate::config::AgentConfig, started: Instant) -> Deadline {
        Deadline::new(started, Duration::from_millis(cfg.toml.hook.deadline_ms))
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started.into_std()
    }

    /// The whole deadline's length.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// What is left of it now (zero once it passed).
    pub fn remaining(&self) -> Duration {
        (self.started + self.length).saturating_duration_since(Clock::now())
    }

    /// The longest wait for the per-vmid lock: half of what is left.
    pub fn lock_wait(&self) -> Duration {
        self.remaining() / 2
    }

    /// SQLite's busy timeout for the audit log: a third of the deadline, at most 5 s.
    pub fn audit_busy_timeout(&self) -> Duration {
        (self.length / 3).min(Duration::from_secs(5))
    }

    /// When the hook's watchdog thread ends the process: the deadline plus 1 s, counted from
    /// when the watchdog starts.
    pub fn watchdog(&self) -> Duration {
        self.length + Duration::from_secs(1)
    }

    /// `timeout` (`[ovsdb] timeout_ms`), shortened so that a wait ends before its part of the
    /// deadline: a quarter of the length early for [`Budget::Forward`], a sixth for
    /// [`Budget::Batch`], a twelfth for [`Budget::Rollback`]. Zero once that point passed.
    pub fn wait_budget(&self, b: Budget, timeout: Duration) -> Duration {
        let reserve = match b {
            Budget::Forward => self.length / 4,
            Budget::Batch => self.length / 6,
            Budget::Rollback => self.length / 12,
        };
        self.remaining().saturating_sub(reserve).min(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_end_before_the_deadline() {
        let d = Deadline::new(Instant::now(), Duration::from_millis(12_000));
        let fwd = d.wait_budget(Budget::Forward, Duration::from_secs(60));
        let rb = d.wait_budget(Budget::Rollback, Duration::from_secs(60));
        let batch = d.wait_budget(Budget::Batch, Duration::from_secs(60));
        assert!(fwd <= Duration::from_millis(9_000) && fwd > Duration::from_millis(8_900));
        assert!(batch <= Duration::from_millis(10_000) && batch > Duration::from_millis(9_900));
        assert!(rb <= Duration::from_millis(11_000) && rb > Duration::from_millis(10_900));
        assert_eq!(
            d.wait_budget(Budget::Forward, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        assert_eq!(d.audit_busy_timeout(), Duration::from_secs(4));
        let past = Deadline::new(Instant::now() - Duration::from_secs(20), d.length());
        assert_eq!(past.remaining(), Duration::ZERO);
        assert_eq!(
            past.wait_budget(Budget::Rollback, Duration::MAX),
            Duration::ZERO
        );
    }
}
