//! Whether an output's writes are failing, for `/readyz`: the spool's and
//! the file sink's. A write that fails makes the output unready for
//! [`UNREADY_FOR`], or until a write succeeds. The window ends on its own
//! because an unready relay gets no traffic to try another write with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failed write keeps the output unready when no write follows.
pub const UNREADY_FOR: Duration = Duration::from_secs(10);

/// The last write's failure, if it failed.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Set with `last`: lets a success skip the lock.
    failed: AtomicBool,
    /// When the last write failed, and why.
    last: Mutex<Option<(Instant, String)>>,
}

impl WriteHealth {
    /// A write succeeded.
    pub fn ok(&self) {
        if self.failed.swap(false, Ordering::Relaxed) {
            *self.last.lock().expect("write health lock") = None;
        }
    }

    /// A write failed.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        *self.last.lock().expect("write health lock") = Some((Instant::now(), error.to_string()));
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Why writes are failing: the last one failed, less than
    /// [`UNREADY_FOR`] ago. `None` when they are not.
    pub fn failing(&self) -> Option<String> {
        if !self.failed.load(Ordering::Relaxed) {
            return None;
        }
        match &*self.last.lock().expect("write health lock") {
            Some((at, error)) if at.elapsed() < UNREADY_FOR => Some(error.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lasts_until_a_success() {
        let health = WriteHealth::default();
        assert_eq!(health.failing(), None);
        health.failed(&"disk full");
        assert_eq!(health.failing().as_deref(), Some("disk full"));
        health.failed(&"disk still full");
        assert_eq!(health.failing().as_deref(), Some("disk still full"));
        health.ok();
        assert_eq!(health.failing(), None);
    }

    #[test]
    fn a_failure_with_no_write_after_it_ends_after_a_while() {
        let health = WriteHealth::default();
        health.failed(&"disk full");
        let long_ago = Instant::now()
            .checked_sub(UNREADY_FOR)
            .expect("a monotonic clock");
        health.last.lock().unwrap().as_mut().unwrap().0 = long_ago;
        assert_eq!(health.failing(), None);
    }
}
