//! Bytes counted against a bound for as long as a guard lives: the request
//! bodies in memory (`server.max_body_memory`), the items waiting for
//! delivery (`delivery.max_in_flight`), spool mode's direct deliveries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;

/// Bytes added to a shared counter, taken off again when dropped.
#[derive(Debug)]
pub struct Held {
    counter: Arc<AtomicUsize>,
    bytes: usize,
    /// Shows the counter.
    gauge: Option<IntGauge>,
}

impl Held {
    /// Adds `bytes` whatever the counter holds.
    pub fn new(counter: &Arc<AtomicUsize>, bytes: usize, gauge: Option<&IntGauge>) -> Held {
        let now = counter.fetch_add(bytes, Ordering::Relaxed) + bytes;
        show(gauge, now);
        Held {
            counter: counter.clone(),
            bytes,
            gauge: gauge.cloned(),
        }
    }

    /// Adds `bytes` if the counter stays at or below `max`; `None` (and the
    /// counter as it was) if not. Adding and checking are one step, so that
    /// callers at the same moment cannot pass the bound together.
    pub fn within(
        counter: &Arc<AtomicUsize>,
        bytes: usize,
        max: usize,
        gauge: Option<&IntGauge>,
    ) -> Option<Held> {
        let mut held = Held::new(counter, 0, gauge);
        held.grow(bytes, max).then_some(held)
    }

    /// Adds `more` if the counter stays at or below `max`; says whether it did.
    pub fn grow(&mut self, more: usize, max: usize) -> bool {
        let now = self.counter.fetch_add(more, Ordering::Relaxed) + more;
        if now > max {
            let now = self.counter.fetch_sub(more, Ordering::Relaxed) - more;
            show(self.gauge.as_ref(), now);
            return false;
        }
        self.bytes += more;
        show(self.gauge.as_ref(), now);
        true
    }

    /// Holds `to` bytes instead: less always, more if the counter stays at
    /// or below `max` (else it holds what it held); says whether it does.
    pub fn resize(&mut self, to: usize, max: usize) -> bool {
        if to > self.bytes {
            return self.grow(to - self.bytes, max);
        }
        let less = self.bytes - to;
        let now = self.counter.fetch_sub(less, Ordering::Relaxed) - less;
        self.bytes = to;
        show(self.gauge.as_ref(), now);
        true
    }

    /// The bytes this guard holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let now = self.counter.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        show(self.gauge.as_ref(), now);
    }
}

fn show(gauge: Option<&IntGauge>, now: usize) {
    if let Some(gauge) = gauge {
        gauge.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_dropping_gives_back() {
        let counter = Arc::new(AtomicUsize::new(0));
        let gauge = IntGauge::new("held_test", "test").unwrap();
        let a = Held::within(&counter, 60, 100, Some(&gauge)).expect("60 of 100");
        assert!(Held::within(&counter, 41, 100, Some(&gauge)).is_none());
        assert_eq!(
            counter.load(Ordering::Relaxed),
            60,
            "a refusal adds nothing"
        );
        let mut b = Held::within(&counter, 40, 100, Some(&gauge)).expect("exactly 100");
        assert!(!b.grow(1, 100));
        assert_eq!((b.bytes(), gauge.get()), (40, 100));
        drop(a);
        assert!(b.grow(50, 100));
        assert_eq!((b.bytes(), gauge.get()), (90, 90));
        // Unbounded adds pass the bound; bounded ones then wait for room.
        let c = Held::new(&counter, 500, Some(&gauge));
        assert!(Held::within(&counter, 1, 1000, None).is_some_and(|h| h.bytes() == 1));
        assert!(Held::within(&counter, 1, 500, None).is_none());
        drop((b, c));
        assert_eq!((counter.load(Ordering::Relaxed), gauge.get()), (0, 0));
        // Resized: down always, up within the bound.
        let mut d = Held::within(&counter, 50, 100, Some(&gauge)).unwrap();
        assert!(d.resize(20, 100));
        assert_eq!((d.bytes(), gauge.get()), (20, 20));
        assert!(!d.resize(101, 100));
        assert_eq!(
            (d.bytes(), gauge.get()),
            (20, 20),
            "a refusal changes nothing"
        );
        assert!(d.resize(100, 100));
        drop(d);
        assert_eq!((counter.load(Ordering::Relaxed), gauge.get()), (0, 0));
    }

    #[test]
    fn callers_at_once_never_pass_the_bound_together() {
        let counter = Arc::new(AtomicUsize::new(0));
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut kept = Vec::new();
                    for _ in 0..1000 {
                        if let Some(h) = Held::within(&counter, 7, 100, None) {
                            assert!(counter.load(Ordering::Relaxed) <= 100);
                            admitted.fetch_add(1, Ordering::Relaxed);
                            kept.push(h);
                        }
                        if kept.len() > 3 {
                            kept.clear();
                        }
                    }
                });
            }
        });
        assert!(admitted.load(Ordering::Relaxed) > 0);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
