//! Per-project token buckets: one per project, public key or error
//! fingerprint and quota, refilled continuously, with a clock passed in.
//!
//! Written here rather than with the governor crate: an item under several
//! quotas must be accepted only when all of them allow it, and no bucket may
//! be charged for an item another one rejects. governor's limiters consume on
//! every check and cannot be refunded, so that rule cannot be kept with them.
//! A bucket here is two numbers; all the buckets of one item are checked, then
//! charged, under one lock (sharded by project, so one project's traffic never
//! waits on another's).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::envelope::DataCategory;

/// Whose traffic one bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One bucket per project and quota.
    Project,
    /// One bucket per public key: a leaked DSN can be throttled alone.
    Key,
    /// One bucket per error fingerprint: spike protection per issue.
    Fingerprint,
}

impl Scope {
    /// The config value and the rate-limit header's scope.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Project => "project",
            Scope::Key => "key",
            Scope::Fingerprint => "fingerprint",
        }
    }

    /// Parses a config value.
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "project" => Scope::Project,
            "key" => Scope::Key,
            "fingerprint" => Scope::Fingerprint,
            _ => return None,
        })
    }
}

/// One configured quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The categories it counts; empty means all.
    pub categories: Vec<DataCategory>,
    /// Items (bytes for attachments) per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// The bucket's size: how much may arrive at once.
    pub burst: u64,
    /// Whose traffic one bucket counts.
    pub scope: Scope,
}

impl Quota {
    /// Whether the quota counts this category.
    pub fn applies_to(&self, category: DataCategory) -> bool {
        self.categories.is_empty() || self.categories.contains(&category)
    }

    /// A stable identity for the quota, so that a reload keeps the buckets of
    /// quotas that did not change. Hashed without allocating.
    fn identity(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        for c in &self.categories {
            c.as_str().hash(&mut h);
        }
        (self.limit, self.window, self.burst, self.scope).hash(&mut h);
        h.finish()
    }
}

/// What one item asks of the quotas.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The project.
    pub project: u64,
    /// The public key it came with.
    pub key: &'a str,
    /// Its error fingerprint, if computed.
    pub fingerprint: Option<&'a str>,
    /// Its category.
    pub category: DataCategory,
    /// How much it costs: 1 item, or its size in bytes for attachments.
    pub quantity: u64,
}

/// Why an item was refused: the quota that ran out, and when to come back.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// Whole seconds until the bucket holds enough again (rounded up).
    pub retry_after: u64,
    /// The limited categories; empty means all.
    pub categories: Vec<DataCategory>,
    /// The quota's scope.
    pub scope: Scope,
    /// The item alone is more than the bucket holds when full (an attachment
    /// larger than the quota's burst): no wait lets it through, so it is
    /// refused as too large rather than rate limited.
    pub never: bool,
}

/// A monotonic clock: time since some fixed start. Passed in, so tests control it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Which bucket: three numbers, so a check allocates nothing. The subject
/// (key or fingerprint) is hashed: two subjects would share a bucket only on
/// a 64-bit collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BucketKey {
    project: u64,
    quota: u64,
    /// Hash of the key or fingerprint for the narrower scopes; 0 for projects.
    subject: u64,
}

fn subject_hash(subject: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    subject.hash(&mut h);
    h.finish() | 1
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Duration,
}

/// Shards of the bucket table.
const SHARDS: usize = 16;

/// Every bucket of the relay, bounded in number.
pub struct Buckets {
    /// Sharded by project id.
    shards: Vec<Mutex<HashMap<BucketKey, Bucket>>>,
    /// Most buckets per shard before idle ones are evicted.
    max_per_shard: usize,
}

impl Buckets {
    /// A table holding at most about `max_buckets` buckets.
    pub fn new(max_buckets: usize) -> Buckets {
        Buckets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_shard: (max_buckets / SHARDS).max(16),
        }
    }

    /// How many buckets exist now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// Whether no bucket exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts the demand only if every quota that applies allows it, and then
    /// charges all of them; otherwise charges none and says which ran out.
    pub fn check(
        &self,
        quotas: &[Quota],
        demand: Demand<'_>,
        now: Duration,
    ) -> Result<(), Limited> {
        let applicable: Vec<(&Quota, BucketKey)> = quotas
            .iter()
            .filter(|q| q.applies_to(demand.category))
            .filter_map(|q| {
                let subject = match q.scope {
                    Scope::Project => 0,
                    Scope::Key => subject_hash(demand.key),
                    // No fingerprint (not an error event): the quota does not apply.
                    Scope::Fingerprint => subject_hash(demand.fingerprint?),
                };
                Some((
                    q,
                    BucketKey {
                        project: demand.project,
                        quota: q.identity(),
                        subject,
                    },
                ))
            })
            .collect();
        if applicable.is_empty() {
            return Ok(());
        }
        let shard = &self.shards[(demand.project % SHARDS as u64) as usize];
        let mut table = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let need = demand.quantity as f64;
        // First pass: would every bucket allow it? (Their levels are kept for
        // the second pass, which also stays right if eviction drops one.)
        let mut refused: Option<Limited> = None;
        let mut levels = Vec::with_capacity(applicable.len());
        for (quota, key) in &applicable {
            let tokens = table
                .get(key)
                .map_or(quota.burst as f64, |b| refilled(quota, b, now));
            levels.push(tokens);
            if tokens < need {
                let retry_after = retry_after(quota, tokens, need);
                // (A quota of 0 blocks on purpose: that is a rate limit.)
                let never = quota.limit > 0 && need > quota.burst as f64;
                let worse = refused
                    .as_ref()
                    .is_none_or(|r| (never, retry_after) > (r.never, r.retry_after));
                if worse {
                    refused = Some(Limited {
                        retry_after,
                        categories: quota.categories.clone(),
                        scope: quota.scope,
                        never,
                    });
                }
            }
        }
        if let Some(limited) = refused {
            return Err(limited);
        }
        // Second pass: charge them all.
        if table.len() + applicable.len() > self.max_per_shard {
            evict(
                &mut table,
                quotas,
                now,
                self.max_per_shard.saturating_sub(applicable.len()),
            );
        }
        for ((_, key), tokens) in applicable.into_iter().zip(levels) {
            table.insert(
                key,
                Bucket {
                    tokens: tokens - need,
                    updated: now,
                },
            );
        }
        Ok(())
    }
}

/// Tokens in the bucket at `now`: what it had plus the refill, up to its size.
fn refilled(quota: &Quota, bucket: &Bucket, now: Duration) -> f64 {
    if quota.limit == 0 {
        return 0.0;
    }
    let elapsed = now.saturating_sub(bucket.updated).as_secs_f64();
    let rate = quota.limit as f64 / quota.window.as_secs_f64();
    (bucket.tokens + elapsed * rate).min(quota.burst as f64)
}

/// Whole seconds until `need` tokens are there (rounded up, at least 1).
fn retry_after(quota: &Quota, tokens: f64, need: f64) -> u64 {
    if quota.limit == 0 || need > quota.burst as f64 {
        // It will never fit: come back after a window, when the operator may have raised it.
        return quota.window.as_secs().max(1);
    }
    let rate = quota.limit as f64 / quota.window.as_secs_f64();
    (((need - tokens) / rate).ceil() as u64).max(1)
}

/// Drops buckets that are full again (they hold no state a new one would
/// not), then, if still over `max`, the least recently used.
fn evict(table: &mut HashMap<BucketKey, Bucket>, quotas: &[Quota], now: Duration, max: usize) {
    table.retain(|key, bucket| {
        let Some(quota) = quotas.iter().find(|q| q.identity() == key.quota) else {
            // A quota of another project or an older config: keep unless stale.
            return now.saturating_sub(bucket.updated) < Duration::from_secs(3600);
        };
        refilled(quota, bucket, now) < quota.burst as f64
    });
    if table.len() > max {
        let mut by_age: Vec<(Duration, BucketKey)> =
            table.iter().map(|(k, b)| (b.updated, *k)).collect();
        by_age.sort_by_key(|(t, _)| *t);
        for (_, key) in by_age.into_iter().take(table.len() - max) {
            table.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn quota(categories: &[DataCategory], limit: u64, burst: u64, scope: Scope) -> Quota {
        Quota {
            categories: categories.to_vec(),
            limit,
            window: MIN,
            burst,
            scope,
        }
    }

    fn demand(category: DataCategory, quantity: u64) -> Demand<'static> {
        Demand {
            project: 42,
            key: "k1",
            fingerprint: Some("fp1"),
            category,
            quantity,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let b = Buckets::new(1000);
        let q = [quota(&[DataCategory::Error], 60, 10, Scope::Project)];
        for _ in 0..10 {
            assert!(b.check(&q, demand(DataCategory::Error, 1), secs(0)).is_ok());
        }
        let limited = b
            .check(&q, demand(DataCategory::Error, 1), secs(0))
            .unwrap_err();
        assert_eq!(limited.retry_after, 1, "60 per minute: one a second");
        assert_eq!(limited.categories, vec![DataCategory::Error]);
        assert_eq!(limited.scope, Scope::Project);
        assert!(b.check(&q, demand(DataCategory::Error, 1), secs(1)).is_ok());
        assert!(b
            .check(&q, demand(DataCategory::Error, 1), secs(1))
            .is_err());
        // Refill is capped at the burst.
        for _ in 0..10 {
            assert!(b
                .check(&q, demand(DataCategory::Error, 1), secs(1000))
                .is_ok());
        }
        assert!(b
            .check(&q, demand(DataCategory::Error, 1), secs(1000))
            .is_err());
        // Other categories are not counted.
        assert!(b
            .check(&q, demand(DataCategory::Transaction, 1), secs(1000))
            .is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let b = Buckets::new(1000);
        let q = [quota(&[], 1, 1, Scope::Project)];
        assert!(b.check(&q, demand(DataCategory::Error, 1), secs(0)).is_ok());
        assert_eq!(
            b.check(&q, demand(DataCategory::Error, 1), secs(0))
                .unwrap_err()
                .retry_after,
            60
        );
        assert_eq!(
            b.check(
                &q,
                demand(DataCategory::Error, 1),
                Duration::from_millis(30_500)
            )
            .unwrap_err()
            .retry_after,
            30
        );
        assert_eq!(
            b.check(
                &q,
                demand(DataCategory::Error, 1),
                Duration::from_millis(59_001)
            )
            .unwrap_err()
            .retry_after,
            1
        );
        assert!(b
            .check(&q, demand(DataCategory::Error, 1), secs(60))
            .is_ok());
    }

    #[test]
    fn limit_zero_rejects_at_once() {
        let b = Buckets::new(1000);
        let q = [quota(&[DataCategory::Transaction], 0, 0, Scope::Project)];
        let limited = b
            .check(&q, demand(DataCategory::Transaction, 1), secs(0))
            .unwrap_err();
        assert_eq!(limited.retry_after, 60);
        assert!(b
            .check(&q, demand(DataCategory::Transaction, 1), secs(10_000))
            .is_err());
    }

    #[test]
    fn attachments_are_charged_by_bytes() {
        let b = Buckets::new(1000);
        let q = [quota(
            &[DataCategory::Attachment],
            1000,
            1000,
            Scope::Project,
        )];
        assert!(b
            .check(&q, demand(DataCategory::Attachment, 600), secs(0))
            .is_ok());
        assert!(b
            .check(&q, demand(DataCategory::Attachment, 600), secs(0))
            .is_err());
        assert!(b
            .check(&q, demand(DataCategory::Attachment, 400), secs(0))
            .is_ok());
        // Larger than the bucket: never fits.
        assert_eq!(
            b.check(&q, demand(DataCategory::Attachment, 5000), secs(999))
                .unwrap_err()
                .retry_after,
            60
        );
    }

    #[test]
    fn no_bucket_is_charged_for_an_item_another_rejects() {
        let b = Buckets::new(1000);
        let wide = quota(&[], 100, 100, Scope::Project);
        let narrow = quota(&[DataCategory::Error], 2, 2, Scope::Project);
        let q = [wide.clone(), narrow];
        assert!(b.check(&q, demand(DataCategory::Error, 1), secs(0)).is_ok());
        assert!(b.check(&q, demand(DataCategory::Error, 1), secs(0)).is_ok());
        for _ in 0..50 {
            assert!(b
                .check(&q, demand(DataCategory::Error, 1), secs(0))
                .is_err());
        }
        // The wide quota was charged twice only: 98 left.
        for _ in 0..98 {
            assert!(b
                .check(&q, demand(DataCategory::Session, 1), secs(0))
                .is_ok());
        }
        assert!(b
            .check(&q, demand(DataCategory::Session, 1), secs(0))
            .is_err());
    }

    #[test]
    fn scopes_keep_keys_fingerprints_and_projects_apart() {
        let b = Buckets::new(1000);
        let by_key = [quota(&[], 1, 1, Scope::Key)];
        let mut d = demand(DataCategory::Error, 1);
        assert!(b.check(&by_key, d, secs(0)).is_ok());
        assert!(b.check(&by_key, d, secs(0)).is_err());
        d.key = "k2";
        assert!(
            b.check(&by_key, d, secs(0)).is_ok(),
            "another key has its own bucket"
        );

        let by_fp = [quota(&[DataCategory::Error], 1, 1, Scope::Fingerprint)];
        let mut d = demand(DataCategory::Error, 1);
        assert!(b.check(&by_fp, d, secs(0)).is_ok());
        assert!(b.check(&by_fp, d, secs(0)).is_err());
        d.fingerprint = Some("fp2");
        assert!(
            b.check(&by_fp, d, secs(0)).is_ok(),
            "another issue has its own bucket"
        );
        d.fingerprint = None;
        assert!(
            b.check(&by_fp, d, secs(0)).is_ok(),
            "no fingerprint: the quota does not apply"
        );

        let by_project = [quota(&[], 1, 1, Scope::Project)];
        let mut d = demand(DataCategory::Error, 1);
        assert!(b.check(&by_project, d, secs(0)).is_ok());
        assert!(b.check(&by_project, d, secs(0)).is_err());
        d.project = 7;
        assert!(
            b.check(&by_project, d, secs(0)).is_ok(),
            "a flood in one project leaves another's quota alone"
        );
    }

    #[test]
    fn keyed_state_is_bounded_and_idle_buckets_are_evicted() {
        let b = Buckets::new(16 * 16);
        let q = [quota(&[], 10, 10, Scope::Fingerprint)];
        for i in 0..10_000u64 {
            let fp = format!("fp{i}");
            let d = Demand {
                fingerprint: Some(&fp),
                ..demand(DataCategory::Error, 1)
            };
            assert!(b.check(&q, d, Duration::from_millis(i)).is_ok());
        }
        assert!(b.len() <= 16 * 16, "{} buckets", b.len());
        // After a quiet minute every bucket is full again, so evictable.
        let d = Demand {
            fingerprint: Some("late"),
            ..demand(DataCategory::Error, 1)
        };
        for _ in 0..300 {
            let _ = b.check(&q, d, secs(3600));
        }
        assert!(b.len() <= 16 * 16);
    }
}
