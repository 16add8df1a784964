//! Sampling: uniform for errors, consistent per trace for transactions (the
//! decision is a function of the trace id, so every relay keeps or drops a
//! whole trace together), with rules on environment, release and transaction
//! name that override the rates. The random source is passed in.

use regex::Regex;

/// What kind of item is being sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An error event.
    Error,
    /// A transaction.
    Transaction,
}

/// A rule: every field given must match; the first matching rule wins.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Exact environment.
    pub environment: Option<String>,
    /// Glob on the release.
    pub release: Option<Glob>,
    /// Glob on the transaction name.
    pub transaction: Option<Glob>,
    /// The keep probability when it matches.
    pub rate: f64,
}

/// A project's sampling settings.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// Keep probability for errors.
    pub error_rate: f64,
    /// Keep probability for transactions (per trace).
    pub transaction_rate: f64,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            error_rate: 1.0,
            transaction_rate: 1.0,
            rules: Vec::new(),
        }
    }
}

/// What the sampler reads of an item.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The environment.
    pub environment: Option<&'a str>,
    /// The release.
    pub release: Option<&'a str>,
    /// The transaction name.
    pub transaction: Option<&'a str>,
    /// The trace id (32 hex digits).
    pub trace_id: Option<&'a str>,
    /// The rate the SDK already sampled at (`trace.sample_rate`).
    pub sdk_rate: Option<f64>,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Keep; the rate it survived overall (the SDK's times the relay's), for
    /// consumers that extrapolate true counts.
    Keep {
        /// The effective rate.
        rate: f64,
    },
    /// Drop (reason `sampled`).
    Drop,
}

/// A glob: `*` any run of characters, `?` one character.
#[derive(Debug, Clone)]
pub struct Glob(Regex);

impl Glob {
    /// Compiles a glob.
    pub fn new(glob: &str) -> Result<Glob, regex::Error> {
        let pattern = regex::escape(glob).replace("\\*", ".*").replace("\\?", ".");
        Regex::new(&format!("^(?s:{pattern})$")).map(Glob)
    }

    /// Whether the text matches.
    pub fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl Sampling {
    /// Decides for one item. `random` is uniform in [0, 1).
    pub fn decide(&self, kind: Kind, cx: Context<'_>, random: f64) -> Decision {
        let rate = self.rules.iter().find(|r| r.matches(&cx)).map_or(
            match kind {
                Kind::Error => self.error_rate,
                Kind::Transaction => self.transaction_rate,
            },
            |r| r.rate,
        );
        let draw = match (kind, cx.trace_id.and_then(trace_fraction)) {
            (Kind::Transaction, Some(f)) => f,
            _ => random,
        };
        if rate >= 1.0 || draw < rate {
            let sdk = cx.sdk_rate.filter(|r| *r > 0.0 && *r <= 1.0).unwrap_or(1.0);
            Decision::Keep {
                rate: rate.min(1.0) * sdk,
            }
        } else {
            Decision::Drop
        }
    }
}

impl Rule {
    fn matches(&self, cx: &Context<'_>) -> bool {
        let env = self
            .environment
            .as_deref()
            .is_none_or(|e| cx.environment == Some(e));
        let release = self
            .release
            .as_ref()
            .is_none_or(|g| cx.release.is_some_and(|r| g.matches(r)));
        let transaction = self
            .transaction
            .as_ref()
            .is_none_or(|g| cx.transaction.is_some_and(|t| g.matches(t)));
        env && release && transaction
    }
}

/// A trace id as a fraction in [0, 1): the same on every relay. Trace ids are
/// random, so their first 16 hex digits are uniform.
pub fn trace_fraction(trace_id: &str) -> Option<f64> {
    let hex: String = trace_id.chars().filter(|c| *c != '-').take(16).collect();
    let n = u64::from_str_radix(&hex, 16).ok()?;
    // The top 53 bits: exactly representable, so the fraction stays below 1.
    (hex.len() == 16).then(|| (n >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn error_rate_is_uniform_within_binomial_bounds() {
        let s = Sampling {
            error_rate: 0.25,
            ..Default::default()
        };
        let mut seed = 7;
        let n = 100_000;
        let kept = (0..n)
            .filter(|_| {
                matches!(
                    s.decide(Kind::Error, Context::default(), lcg(&mut seed)),
                    Decision::Keep { .. }
                )
            })
            .count() as f64;
        // Mean 25 000, standard deviation about 137: six of them either side.
        assert!((kept - 25_000.0).abs() < 6.0 * 137.0, "kept {kept}");
    }

    #[test]
    fn transactions_share_the_fate_of_their_trace_across_relays() {
        let s = Sampling {
            transaction_rate: 0.5,
            ..Default::default()
        };
        let other_relay = s.clone();
        let mut seed = 11;
        let mut kept = 0;
        for i in 0..10_000u64 {
            let trace = format!("{:016x}{:016x}", i.wrapping_mul(0x9e3779b97f4a7c15), i);
            let cx = Context {
                trace_id: Some(&trace),
                ..Default::default()
            };
            let a = s.decide(Kind::Transaction, cx, lcg(&mut seed));
            let b = other_relay.decide(Kind::Transaction, cx, lcg(&mut seed));
            assert_eq!(a, b, "trace {trace}");
            assert_eq!(
                a,
                s.decide(Kind::Transaction, cx, lcg(&mut seed)),
                "and every item of the trace"
            );
            kept += usize::from(a != Decision::Drop);
        }
        // Mean 5 000, standard deviation 50.
        assert!((kept as f64 - 5_000.0).abs() < 300.0, "kept {kept}");
    }

    #[test]
    fn rules_override_in_order_and_the_sdk_rate_multiplies() {
        let s = Sampling {
            error_rate: 1.0,
            transaction_rate: 1.0,
            rules: vec![
                Rule {
                    environment: Some("production".into()),
                    release: None,
                    transaction: Some(Glob::new("/health*").unwrap()),
                    rate: 0.0,
                },
                Rule {
                    environment: None,
                    release: Some(Glob::new("shop@2.*").unwrap()),
                    transaction: None,
                    rate: 0.5,
                },
            ],
        };
        let health = Context {
            environment: Some("production"),
            transaction: Some("/healthz"),
            ..Default::default()
        };
        assert_eq!(s.decide(Kind::Transaction, health, 0.0), Decision::Drop);
        assert_eq!(
            s.decide(Kind::Error, health, 0.0),
            Decision::Drop,
            "rules apply to errors too"
        );
        let staging = Context {
            environment: Some("staging"),
            transaction: Some("/healthz"),
            ..Default::default()
        };
        assert_eq!(
            s.decide(Kind::Transaction, staging, 0.99),
            Decision::Keep { rate: 1.0 }
        );
        let release = Context {
            release: Some("shop@2.4.1"),
            sdk_rate: Some(0.1),
            ..Default::default()
        };
        assert_eq!(
            s.decide(Kind::Error, release, 0.2),
            Decision::Keep { rate: 0.05 }
        );
        assert_eq!(s.decide(Kind::Error, release, 0.7), Decision::Drop);
    }

    #[test]
    fn errors_in_a_sampled_out_trace_are_kept() {
        let s = Sampling {
            error_rate: 1.0,
            transaction_rate: 0.0,
            rules: Vec::new(),
        };
        let cx = Context {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ..Default::default()
        };
        assert_eq!(s.decide(Kind::Transaction, cx, 0.0), Decision::Drop);
        assert_eq!(
            s.decide(Kind::Error, cx, 0.99),
            Decision::Keep { rate: 1.0 }
        );
    }

    #[test]
    fn globs() {
        assert!(Glob::new("/health*").unwrap().matches("/healthz"));
        assert!(!Glob::new("/health*").unwrap().matches("/api/health"));
        assert!(Glob::new("shop@2.?.*").unwrap().matches("shop@2.4.1"));
        assert!(
            !Glob::new("a.b").unwrap().matches("axb"),
            "dots are literal"
        );
    }

    #[test]
    fn trace_fractions() {
        assert_eq!(
            trace_fraction("00000000000000000000000000000000"),
            Some(0.0)
        );
        assert!(trace_fraction("ffffffffffffffff0000000000000000").unwrap() < 1.0);
        assert_eq!(trace_fraction("xyz"), None);
    }
}
