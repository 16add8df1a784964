//! Fuzzing under `cargo test`: every stage that reads what a client or an
//! operator wrote (envelope parsing, the decoders, auth headers and DSNs,
//! config files, the scrubber) gets its committed seed corpus
//! (`tests/fuzz-corpus/<target>/`), then a bounded number of mutants of it.
//!
//! Mutations know nothing of the formats: bit flips, byte inserts and
//! deletes, truncation, splicing two seeds, repeated chunks, line ends,
//! brackets, quotes and numbers at integer edges. Each target checks
//! invariants, not only the absence of panics: what the parser returns lies
//! inside the body and re-encodes to the same items, a capped decoder agrees
//! with an uncapped one, an extracted key is found in the input, a refused
//! config says why, a scrubbed event is valid JSON that no second pass
//! un-redacts, and a secret planted anywhere in scrubbed text never survives.
//!
//! The run is bounded by a count, never by a clock: `RELAY_FUZZ_ITERATIONS`
//! mutants per target (default [`DEFAULT_ITERATIONS`]: about 10 s for the
//! module in the debug profile on two cores). Run longer with
//!
//! ```text
//! RELAY_FUZZ_ITERATIONS=200000 cargo test --test it fuzz
//! ```
//!
//! Each run picks a random `RELAY_FUZZ_SEED` and prints it. Iteration `i`
//! depends only on the seed, the target and `i`, so a failure names all
//! three and one command replays just that input:
//!
//! ```text
//! RELAY_FUZZ_SEED=0x... RELAY_FUZZ_ITERATION=1234 cargo test --test it fuzz::envelope -- --nocapture
//! ```
//!
//! A failure also saves its input under `target/tmp/fuzz-failures/`; copy it
//! into `tests/fuzz-corpus/<target>/` and every run checks it from then on.
//! A stack overflow aborts the process before any report: rerun with
//! `RELAY_FUZZ_TRACE=1`, which prints each iteration and saves its input
//! (`<target>-current`) before running it.
//!
//! Seed names carry meaning: `invalid-*` envelopes and configs must be
//! refused and the others accepted; `crash-*` seeds (inputs that abort the
//! process) run in a child process and are not mutated; decode seeds are
//! `stem[.variant].encoding` and inflate to `stem.plain`; `*.env` config seeds
//! are `EDGE_RELAY_*` overrides. `regression-*` seeds are inputs fuzzing
//! found bugs with. The other seeds are made in `fuzz::seeds` (see there).

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use edge_relay::auth::{self, AuthError};
use edge_relay::config::{Config, Limits};
use edge_relay::decompress::{self, DecodeError, Encoding};
use edge_relay::envelope::{self, EnvelopeError, ItemType};
use edge_relay::scrub::{Fallback, Scrubber};
use serde_json::{json, Value};

use crate::support::{KEY, OTHER_KEY, OTHER_PROJECT, PROJECT};

mod seeds;

/// The default configuration, compiled once.
static DEFAULTS: std::sync::LazyLock<Config> =
    std::sync::LazyLock::new(|| Config::from_toml("").expect("the empty config is valid"));

/// Mutants per target when `RELAY_FUZZ_ITERATIONS` is not set.
const DEFAULT_ITERATIONS: u64 = 10_000;

/// Largest mutant: repeating chunks could otherwise grow without end.
const MAX_INPUT: usize = 256 * 1024;

/// The decoders' cap when nothing smaller is being tested.
const INFLATE_CAP: usize = 1 << 20;

/// One committed seed file.
struct Seed {
    /// Its file name (some targets read meaning from it: `invalid-*`, the extension).
    name: String,
    /// Its bytes.
    bytes: Vec<u8>,
}

fn corpus(target: &str) -> Vec<Seed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut seeds: Vec<Seed> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the seed corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            Seed {
                name: path
                    .file_name()
                    .expect("a file in the directory")
                    .to_string_lossy()
                    .into_owned(),
                bytes: std::fs::read(&path).expect("a readable seed"),
            }
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    // Directory order differs between file systems; the RNG must see one order.
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    seeds
}

/// What the environment asks of this run.
struct Run {
    /// The RNG seed every iteration's RNG derives from.
    seed: u64,
    /// Mutants per target.
    iterations: u64,
    /// Replay only this iteration (and skip the unmutated seeds).
    only: Option<u64>,
    /// Print each iteration before it runs: a stack overflow or an abort
    /// ends the process before the failure report.
    trace: bool,
}

impl Run {
    fn from_env() -> Run {
        let var = |name: &str| -> Option<u64> {
            let text = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")))
        };
        Run {
            seed: var("RELAY_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..)),
            iterations: var("RELAY_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS),
            only: var("RELAY_FUZZ_ITERATION"),
            trace: std::env::var_os("RELAY_FUZZ_TRACE").is_some(),
        }
    }
}

/// One input under test, and what to print if a check on it fails.
struct Case<'a> {
    /// The bytes under test: a seed as committed, or a mutant of one.
    input: Vec<u8>,
    /// The seed it came from.
    origin: &'a Seed,
    /// Whether `input` is the seed itself: checks with known answers run then.
    unmutated: bool,
    /// Randomness for the other choices a check makes (limits, more arguments).
    rng: fastrand::Rng,
    /// The whole corpus, for checks that take more than one input.
    corpus: &'a [Seed],
    /// Those other choices, printed on failure.
    notes: Vec<String>,
}

impl Case<'_> {
    /// The input as text, as a server would see a header or a file.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.input).into_owned()
    }

    /// Records a choice, to be printed if the check fails.
    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// One more mutant of a random seed, for checks that take several inputs.
    fn mutant(&mut self) -> Vec<u8> {
        let origin = &self.corpus[self.rng.usize(..self.corpus.len())];
        mutate(&mut self.rng, &origin.bytes, self.corpus)
    }
}

/// Owns the case under test; if a check panics, says how to reproduce it and
/// saves the input.
struct Guard<'a> {
    /// The target's name (its corpus directory and its test's name).
    target: &'static str,
    /// The run's `RELAY_FUZZ_SEED`.
    seed: u64,
    /// The mutant's iteration; `None` for a seed as committed.
    iteration: Option<u64>,
    /// The case under test.
    case: Case<'a>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let case = &self.case;
        let what = match self.iteration {
            Some(i) => format!("iteration {i} (a mutant of seed {})", case.origin.name),
            None => format!("seed {} as committed", case.origin.name),
        };
        let dir = failure_dir();
        let file = dir.join(format!(
            "{}-{:016x}-{}",
            self.target,
            self.seed,
            self.iteration
                .map_or_else(|| case.origin.name.clone(), |i| i.to_string())
        ));
        let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &case.input));
        let preview = case.input[..case.input.len().min(600)].escape_ascii();
        let mut report = format!(
            "\nfuzz target `{}` failed on {what}\n  input ({} bytes): \"{preview}\"{}\n",
            self.target,
            case.input.len(),
            if case.input.len() > 600 { " ..." } else { "" },
        );
        for note in &case.notes {
            report.push_str(&format!("  {note}\n"));
        }
        match saved {
            Ok(()) => report.push_str(&format!(
                "  saved to {} (copy it into tests/fuzz-corpus/{}/ to keep it)\n",
                file.display(),
                self.target
            )),
            Err(e) => report.push_str(&format!("  could not save it: {e}\n")),
        }
        if let Some(i) = self.iteration {
            report.push_str(&format!(
                "  replay: RELAY_FUZZ_SEED={:#x} RELAY_FUZZ_ITERATION={i} cargo test --test it fuzz::{} -- --nocapture\n",
                self.seed, self.target
            ));
        }
        eprintln!("{report}");
    }
}

/// Where failing inputs are saved.
fn failure_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures")
}

/// Set in a child process that checks one `crash-*` seed.
const CHILD_VAR: &str = "RELAY_FUZZ_CHILD_SEED";

/// Runs `check` on every seed of `target` as committed, then on mutants.
/// `check` panics when an invariant breaks and otherwise names the outcome,
/// which is tallied and printed (to show the mutants reach past the first check).
fn fuzz(target: &'static str, mut check: impl FnMut(&mut Case<'_>) -> String) {
    let seeds = corpus(target);
    let run = Run::from_env();
    if let Ok(name) = std::env::var(CHILD_VAR) {
        let origin = seeds
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no seed {name} in {target}"));
        check_seed(target, &run, origin, &seeds, &mut check);
        return;
    }
    println!(
        "fuzz {target}: RELAY_FUZZ_SEED={:#x}, {} seeds, {} mutants",
        run.seed,
        seeds.len(),
        run.only.map_or(run.iterations, |_| 1)
    );
    if run.only.is_none() {
        // Every seed is checked, so one failure does not hide another.
        let mut failed = Vec::new();
        for origin in &seeds {
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if origin.name.starts_with("crash-") {
                    check_in_child(target, origin);
                } else {
                    check_seed(target, &run, origin, &seeds, &mut check);
                }
            }));
            if checked.is_err() {
                failed.push(origin.name.as_str());
            }
        }
        assert!(
            failed.is_empty(),
            "fuzz {target}: seeds as committed fail (each one's report is above): {failed:?}"
        );
    }
    // Crash reproducers are not mutated: they stand for a bug, not for inputs.
    let origins: Vec<&Seed> = seeds
        .iter()
        .filter(|s| !s.name.starts_with("crash-"))
        .collect();
    let iterations = match run.only {
        Some(i) => i..i + 1,
        None => 0..run.iterations,
    };
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for i in iterations {
        let mut rng = fastrand::Rng::with_seed(iteration_seed(run.seed, target, i));
        let origin = origins[rng.usize(..origins.len())];
        let input = mutate(&mut rng, &origin.bytes, &seeds);
        if run.trace {
            let file = failure_dir().join(format!("{target}-current"));
            std::fs::create_dir_all(failure_dir())
                .and_then(|()| std::fs::write(&file, &input))
                .expect("the target directory is writable");
            eprintln!("fuzz {target}: iteration {i}, input in {}", file.display());
        }
        let mut guard = Guard {
            target,
            seed: run.seed,
            iteration: Some(i),
            case: Case {
                input,
                origin,
                unmutated: false,
                rng,
                corpus: &seeds,
                notes: Vec::new(),
            },
        };
        *tally.entry(check(&mut guard.case)).or_default() += 1;
    }
    println!("fuzz {target}: outcomes {tally:?}");
}

/// Checks one seed as committed.
fn check_seed(
    target: &'static str,
    run: &Run,
    origin: &Seed,
    seeds: &[Seed],
    check: &mut impl FnMut(&mut Case<'_>) -> String,
) {
    let mut guard = Guard {
        target,
        seed: run.seed,
        iteration: None,
        case: Case {
            input: origin.bytes.clone(),
            origin,
            unmutated: true,
            rng: fastrand::Rng::with_seed(run.seed),
            corpus: seeds,
            notes: Vec::new(),
        },
    };
    check(&mut guard.case);
}

/// A `crash-*` seed once took the whole process down (a stack overflow
/// aborts; it cannot be caught), so it runs in a child process: until the
/// bug is fixed it fails this target, not every test in the binary.
fn check_in_child(target: &str, origin: &Seed) {
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            &format!("fuzz::{target}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, &origin.name)
        .output()
        .expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    assert!(
        out.status.success(),
        "seed {} crashes the process ({}); it ran alone in a child process, whose stderr ends:\n{}",
        origin.name,
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// The RNG seed of one iteration: independent of every other iteration.
fn iteration_seed(seed: u64, target: &str, iteration: u64) -> u64 {
    let mut h = splitmix(seed);
    for b in target.bytes() {
        h = splitmix(h ^ u64::from(b));
    }
    splitmix(h ^ iteration)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Mutations

/// Bytes that matter to the parsers here: line ends, brackets, quotes,
/// separators, escapes, broken UTF-8, and bits of the formats themselves.
const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b" ",
    b"\t",
    b"{",
    b"}",
    b"[",
    b"]",
    b"{}",
    b"[]",
    b"\"",
    b"'",
    b"\\",
    b",",
    b":",
    b"=",
    b"&",
    b";",
    b"%",
    b"%zz",
    b"+",
    b"@",
    b"/",
    b"://",
    b".",
    b"*",
    b"**",
    b"${",
    b"$${",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\"length\":",
    b"{\"type\":\"attachment\",\"length\":",
    b"\n{\"type\":\"event\"}\n",
    b"\"event_id\":",
    b"Sentry ",
    b"sentry_key=",
    b"[[projects]]\n",
    b"[scrub]\n",
    b"password=",
    b"token=",
    b"\"_meta\":",
    b"\"rem\":[[\"password\",\"s\"]]",
];

/// Numbers at the edges of integer types, and JSON numbers parsers disagree on.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"127",
    b"128",
    b"255",
    b"256",
    b"1000",
    b"1001",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9007199254740993",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999999999",
    b"1e309",
    b"-0",
    b"0.5",
    b"1.7976931348623157e308",
];

/// Integers to overwrite binary fields (sizes, lengths, flags) with.
const INTEGERS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// A mutant of `seed`: one to four stacked mutations.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8], corpus: &[Seed]) -> Vec<u8> {
    let mut data = seed.to_vec();
    let rounds = match rng.u8(..8) {
        0..=3 => 1,
        4..=5 => 2,
        6 => 3,
        _ => 4,
    };
    for _ in 0..rounds {
        mutate_once(rng, &mut data, corpus);
        data.truncate(MAX_INPUT);
    }
    data
}

/// One mutation, in place; `corpus` is where spliced and inserted chunks come from.
fn mutate_once(rng: &mut fastrand::Rng, data: &mut Vec<u8>, corpus: &[Seed]) {
    let len = data.len();
    let other: &[u8] = if corpus.is_empty() {
        &[]
    } else {
        &corpus[rng.usize(..corpus.len())].bytes
    };
    // A position inside the data, or at its end.
    let at = rng.usize(..=len);
    match rng.u8(..13) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.usize(..len);
            data[i] ^= 1 << rng.u8(..8);
        }
        // Set one byte at random.
        1 if len > 0 => {
            let i = rng.usize(..len);
            data[i] = rng.u8(..);
        }
        // Insert a few random bytes.
        2 => {
            let bytes: Vec<u8> = (0..rng.usize(1..=4)).map(|_| rng.u8(..)).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range: mostly short, sometimes long.
        3 if len > 0 => {
            let n = if rng.bool() {
                rng.usize(1..=len.min(8))
            } else {
                rng.usize(1..=len)
            };
            let start = rng.usize(..=len - n);
            data.drain(start..start + n);
        }
        // Truncate.
        4 => data.truncate(at),
        // Splice: this seed's head, another seed's tail.
        5 => {
            let from = rng.usize(..=other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        // Repeat a chunk in place.
        6 if len > 0 => {
            let n = rng.usize(1..=len.min(64));
            let start = rng.usize(..=len - n);
            let chunk = data[start..start + n].to_vec();
            let most = if rng.u8(..8) == 0 { 2000 } else { 16 };
            let times = rng.usize(1..=most);
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
            data.splice(start..start, repeated);
        }
        // Insert a token.
        7 => {
            let token = TOKENS[rng.usize(..TOKENS.len())];
            data.splice(at..at, token.iter().copied());
        }
        // Overwrite with a token.
        8 => {
            let token = TOKENS[rng.usize(..TOKENS.len())];
            let end = (at + token.len()).min(len);
            data.splice(at..end, token.iter().copied());
        }
        // Replace a run of digits (a length, a port, a limit) with an edge number.
        9 => {
            let number = NUMBERS[rng.usize(..NUMBERS.len())];
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                data.splice(at..at, number.iter().copied());
            } else {
                let start = digits[rng.usize(..digits.len())];
                let end = (start..len)
                    .find(|&i| !data[i].is_ascii_digit())
                    .unwrap_or(len);
                data.splice(start..end, number.iter().copied());
            }
        }
        // Insert a chunk of another seed.
        10 if !other.is_empty() => {
            let n = rng.usize(1..=other.len().min(256));
            let start = rng.usize(..=other.len() - n);
            data.splice(at..at, other[start..start + n].iter().copied());
        }
        // Overwrite 1, 2, 4 or 8 bytes with an edge integer, either byte order.
        11 if len > 0 => {
            let width = [1, 2, 4, 8][rng.usize(..4)].min(len);
            let value = INTEGERS[rng.usize(..INTEGERS.len())];
            // Its low `width` bytes, little-endian, or reversed: big-endian.
            let mut bytes = value.to_le_bytes()[..width].to_vec();
            if rng.bool() {
                bytes.reverse();
            }
            let start = rng.usize(..=len - width);
            data[start..start + width].copy_from_slice(&bytes);
        }
        // Swap two adjacent chunks.
        12 if len > 1 => {
            let mid = rng.usize(1..len);
            let start = rng.usize(..mid);
            let end = rng.usize(mid + 1..=len);
            data[start..end].rotate_left(mid - start);
        }
        // A mutation that found nothing to act on (an empty input): insert a token.
        _ => {
            let token = TOKENS[rng.usize(..TOKENS.len())];
            data.splice(at..at, token.iter().copied());
        }
    }
}

// ---------------------------------------------------------------------------
// Envelope parsing

#[test]
fn envelope() {
    fuzz("envelope", |case| {
        let limits = if case.unmutated || case.rng.bool() {
            Limits::default()
        } else {
            Limits {
                max_items: case.rng.usize(1..=12),
                max_header_line_size: case.rng.usize(16..=2048),
                max_json_depth: case.rng.usize(1..=128),
                ..Limits::default()
            }
        };
        case.note(format!(
            "limits: max_items {}, max_header_line_size {}, max_json_depth {}",
            limits.max_items, limits.max_header_line_size, limits.max_json_depth
        ));
        let body = Bytes::from(case.input.clone());
        let result = envelope::parse(body.clone(), &limits);
        if case.unmutated {
            let invalid = case.origin.name.starts_with("invalid-");
            assert_eq!(
                result.is_err(),
                invalid,
                "seed {} (invalid-* seeds must be refused, others accepted): {:?}",
                case.origin.name,
                result.as_ref().err()
            );
        }
        match result {
            Ok(parsed) => {
                check_envelope(&body, &parsed, &limits);
                check_reencoding(&parsed, &limits);
                check_events(&parsed, limits.max_json_depth);
                "ok".into()
            }
            Err(e) => {
                check_envelope_error(&e, &body, &limits);
                format!("{e:?}")
                    .split(['(', ' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
        }
    });
}

/// Where `part` lies in `body`, if it is not empty; panics if it is not a view into it.
fn range_in(body: &Bytes, part: &Bytes, what: &str) -> Option<std::ops::Range<usize>> {
    if part.is_empty() {
        return None;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    assert!(
        start <= body.len() && part.len() <= body.len() - start,
        "{what} is not a slice of the body"
    );
    assert_eq!(&body[start..start + part.len()], &part[..]);
    Some(start..start + part.len())
}

/// The item header fields the relay reads. Read with serde like the parser
/// does: unknown fields are skipped unread (so a number out of range in one
/// of them passes, as it does in the parser).
#[derive(serde::Deserialize)]
struct ItemFields {
    /// `type`.
    #[serde(rename = "type")]
    ty: String,
    /// `length`, when the payload is sized.
    #[serde(default)]
    length: Option<u64>,
    /// `content_type`.
    #[serde(default)]
    content_type: Option<String>,
    /// `filename`.
    #[serde(default)]
    filename: Option<String>,
}

/// What `parse` promises of an accepted envelope: no more items than the
/// limit, headers and payloads are views into the body in order, and each
/// item is what its header says.
fn check_envelope(body: &Bytes, parsed: &envelope::Envelope, limits: &Limits) {
    assert!(
        parsed.items.len() <= limits.max_items,
        "{} items, more than max_items {}",
        parsed.items.len(),
        limits.max_items
    );
    let header = range_in(body, &parsed.raw_header, "the envelope header")
        .expect("an accepted header is an object, so not empty");
    assert!(parsed.raw_header.len() <= limits.max_header_line_size);
    assert!(!parsed.raw_header.contains(&b'\n'));
    if let Some(id) = &parsed.header.event_id {
        assert!(
            envelope::normalize_event_id(id).is_some(),
            "accepted event_id {id:?}"
        );
    }
    // Items follow each other in the body: header, payload, next header.
    let mut end = header.end;
    for (i, item) in parsed.items.iter().enumerate() {
        let h = range_in(body, &item.raw_header, "an item header")
            .expect("an accepted item header is an object, so not empty");
        assert!(h.start >= end, "item {i} header overlaps what precedes it");
        assert!(item.raw_header.len() <= limits.max_header_line_size);
        assert!(!item.raw_header.contains(&b'\n'));
        end = h.end;
        if let Some(p) = range_in(body, &item.payload, "an item payload") {
            assert!(p.start > h.end, "item {i} payload overlaps its header");
            end = p.end;
        }
        assert_eq!(item.ty, ItemType::from_name(&item.type_name));
        let fields: ItemFields = serde_json::from_slice(&item.raw_header)
            .unwrap_or_else(|e| panic!("item {i} header was accepted but does not read: {e}"));
        assert_eq!(fields.ty, item.type_name);
        assert_eq!(fields.content_type, item.content_type);
        assert_eq!(fields.filename, item.filename);
        match fields.length {
            Some(length) => assert_eq!(
                item.payload.len() as u64,
                length,
                "item {i} payload is not its declared length"
            ),
            None => assert!(
                !item.payload.contains(&b'\n'),
                "item {i} has no length, so its payload is one line"
            ),
        }
    }
}

/// `read_event` (what the relay runs on event items and `/store/` bodies)
/// agrees with `parse_event` exactly: the same error, or the same id and
/// fingerprint. Should it ever take an event `parse_event` refuses, the text
/// scrubber must hand that event back to the tree (which refuses it).
fn check_events(parsed: &envelope::Envelope, max_depth: usize) {
    for item in &parsed.items {
        let tree = envelope::parse_event(&item.payload, max_depth);
        let read = envelope::read_event(&item.payload, max_depth);
        match (&read, &tree) {
            (Ok((event, read_id)), Ok((tree, tree_id))) => {
                assert_eq!(
                    read_id, tree_id,
                    "read_event and parse_event read different ids"
                );
                assert_eq!(
                    event.fingerprint(),
                    edge_relay::fingerprint::fingerprint(tree),
                    "read_event and parse_event give different fingerprints"
                );
            }
            (Err(read), Err(tree)) => assert_eq!(read.to_string(), tree.to_string()),
            (Err(e), Ok(_)) => panic!("read_event refused an event parse_event accepts: {e}"),
            (Ok((event, _)), Err(e)) => {
                assert!(
                    matches!(event, envelope::Event::View(..)),
                    "a tree read of an event parse_event refuses ({e})"
                );
                let text = std::str::from_utf8(&item.payload).expect("read_event checked UTF-8");
                assert_eq!(
                    DEFAULTS.scrubber.scrub_event_text(text),
                    Err(Fallback),
                    "the text scrubber took an event parse_event refuses ({e})"
                );
            }
        }
    }
}

/// An accepted envelope, written out again with every item sized, parses to
/// the same items.
fn check_reencoding(parsed: &envelope::Envelope, limits: &Limits) {
    let mut out = parsed.raw_header.to_vec();
    out.push(b'\n');
    for item in &parsed.items {
        let mut header = json!({"type": item.type_name, "length": item.payload.len()});
        if let Some(ct) = &item.content_type {
            header["content_type"] = json!(ct);
        }
        if let Some(f) = &item.filename {
            header["filename"] = json!(f);
        }
        out.extend_from_slice(&serde_json::to_vec(&header).expect("a JSON object serializes"));
        out.push(b'\n');
        out.extend_from_slice(&item.payload);
        out.push(b'\n');
    }
    let roomy = Limits {
        max_header_line_size: 1 << 20,
        ..*limits
    };
    let again = envelope::parse(Bytes::from(out), &roomy)
        .unwrap_or_else(|e| panic!("the envelope, re-encoded, is refused: {e}"));
    assert_eq!(again.items.len(), parsed.items.len());
    assert_eq!(again.header.event_id, parsed.header.event_id);
    assert_eq!(again.header.dsn, parsed.header.dsn);
    for (a, b) in again.items.iter().zip(&parsed.items) {
        assert_eq!(a.type_name, b.type_name);
        assert_eq!(a.ty, b.ty);
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.content_type, b.content_type);
        assert_eq!(a.filename, b.filename);
    }
}

/// A refusal names the limit that was broken, and only when it was.
fn check_envelope_error(e: &EnvelopeError, body: &Bytes, limits: &Limits) {
    assert!(!e.to_string().is_empty());
    match e {
        EnvelopeError::Empty => assert!(body.iter().all(u8::is_ascii_whitespace)),
        EnvelopeError::TooManyItems { limit } => assert_eq!(*limit, limits.max_items),
        EnvelopeError::HeaderTooLong { limit } => {
            assert_eq!(*limit, limits.max_header_line_size);
            assert!(
                body.len() > *limit,
                "a {}-byte body has no line over {limit}",
                body.len()
            );
        }
        EnvelopeError::LengthPastEnd { length, .. } => {
            assert!(*length > 0, "a zero length always fits");
        }
        EnvelopeError::BadEventId(id) => assert!(envelope::normalize_event_id(id).is_none()),
        _ => {}
    }
    assert_eq!(
        e.is_too_large(),
        matches!(
            e,
            EnvelopeError::HeaderTooLong { .. } | EnvelopeError::TooManyItems { .. }
        )
    );
}

// ---------------------------------------------------------------------------
// Decoders

/// The encoding a decode seed is in, from its extension.
fn encoding_of(name: &str) -> Encoding {
    match name.rsplit('.').next() {
        Some("plain") => Encoding::Identity,
        Some("gz") => Encoding::Gzip,
        Some("zlib" | "deflate") => Encoding::Deflate,
        Some("br") => Encoding::Brotli,
        Some("zstd") => Encoding::Zstd,
        _ => panic!("decode seed {name} needs an extension naming its encoding"),
    }
}

/// Every decoder.
const ENCODINGS: [Encoding; 5] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Brotli,
    Encoding::Zstd,
];

#[test]
fn decode() {
    // Each compressed seed `stem[.variant].ext` inflates to `stem.plain`.
    let plains: BTreeMap<String, Vec<u8>> = corpus("decode")
        .into_iter()
        .filter_map(|s| Some((s.name.strip_suffix(".plain")?.to_owned(), s.bytes)))
        .collect();
    fuzz("decode", |case| {
        let encoding = encoding_of(&case.origin.name);
        if case.unmutated {
            let stem = case.origin.name.split('.').next().unwrap_or_default();
            let want = plains
                .get(stem)
                .unwrap_or_else(|| panic!("no {stem}.plain for {}", case.origin.name));
            let body = Bytes::from(case.input.clone());
            let got = decompress::decode(encoding, body.clone(), INFLATE_CAP)
                .unwrap_or_else(|e| panic!("seed {}: {e}", case.origin.name));
            assert_eq!(&got[..], &want[..], "seed {}", case.origin.name);
            let exact = decompress::decode(encoding, body.clone(), want.len());
            assert_eq!(exact.ok().as_deref(), Some(&want[..]), "cap = size");
            let short = decompress::decode(encoding, body, want.len() - 1);
            assert!(
                matches!(short, Err(DecodeError::TooLarge { limit }) if limit == want.len() - 1),
                "cap = size - 1: {short:?}"
            );
        }
        // The seed's own decoder, and another one: bytes meant for one decoder
        // must not upset the others.
        let other = ENCODINGS[case.rng.usize(..ENCODINGS.len())];
        let outcome = check_decoder(case, encoding);
        if other != encoding {
            check_decoder(case, other);
        }
        check_encoding_header(case);
        outcome
    });
}

/// Decodes with a large cap and with a random small one: the small cap gives
/// the same bytes when they fit under it, and `TooLarge` when they do not.
fn check_decoder(case: &mut Case<'_>, encoding: Encoding) -> String {
    let input = Bytes::from(case.input.clone());
    let full = decompress::decode(encoding, input.clone(), INFLATE_CAP);
    match &full {
        Ok(out) => assert!(out.len() <= INFLATE_CAP),
        Err(DecodeError::TooLarge { limit }) => assert_eq!(*limit, INFLATE_CAP),
        Err(DecodeError::Corrupt { encoding: name, .. }) => assert_eq!(*name, encoding.as_str()),
        Err(e @ DecodeError::Unsupported(_)) => panic!("decode returned {e}"),
    }
    if encoding == Encoding::Identity {
        assert_eq!(
            full.as_ref().ok(),
            Some(&input),
            "identity is the body itself"
        );
    }
    let cap = match &full {
        Ok(out) => match case.rng.u8(..4) {
            0 => 0,
            1 => out.len().saturating_sub(1),
            2 => out.len(),
            _ => case.rng.usize(..=out.len() + 8),
        },
        Err(_) => case.rng.usize(..=64 * 1024),
    };
    case.note(format!(
        "{}: cap {cap}, uncapped {:?}",
        encoding.as_str(),
        full.as_ref().map(Bytes::len)
    ));
    let capped = decompress::decode(encoding, input, cap);
    match (&full, &capped) {
        (Ok(out), Ok(small)) => assert_eq!(out, small, "a cap changed the output"),
        (Ok(out), Err(DecodeError::TooLarge { limit })) => {
            assert_eq!(*limit, cap);
            assert!(
                out.len() > cap,
                "{} bytes fit under the cap {cap}",
                out.len()
            );
        }
        (Ok(out), Err(e)) => panic!(
            "{} bytes decode uncapped, but with cap {cap}: {e}",
            out.len()
        ),
        (Err(DecodeError::TooLarge { .. }), r) => assert!(
            matches!(r, Err(DecodeError::TooLarge { .. })),
            "over the large cap but {r:?} under the small one"
        ),
        (Err(_), Ok(small)) => panic!("corrupt uncapped, but {} bytes with cap {cap}", small.len()),
        (Err(_), Err(_)) => {}
    }
    let kind = match &full {
        Ok(_) => "ok",
        Err(DecodeError::TooLarge { .. }) => "too large",
        Err(_) => "corrupt",
    };
    format!("{} {kind}", encoding.as_str())
}

/// `Content-Encoding` values: known tokens, mutated.
fn check_encoding_header(case: &mut Case<'_>) {
    let known = [
        "gzip", " GZIP ", "x-gzip", "deflate", "br", "zstd", "identity", "",
    ];
    let mut value = known[case.rng.usize(..known.len())].as_bytes().to_vec();
    if case.rng.bool() {
        mutate_once(&mut case.rng, &mut value, &[]);
    }
    let value = String::from_utf8_lossy(&value).into_owned();
    case.note(format!("Content-Encoding: {value:?}"));
    match Encoding::from_header(Some(&value)) {
        Ok(e) => {
            let token = value.trim().to_ascii_lowercase();
            let expected = match token.as_str() {
                "" | "identity" => Encoding::Identity,
                "x-gzip" => Encoding::Gzip,
                t => *ENCODINGS
                    .iter()
                    .find(|e| e.as_str() == t)
                    .unwrap_or_else(|| panic!("{value:?} accepted as {e:?}")),
            };
            assert_eq!(e, expected);
        }
        Err(DecodeError::Unsupported(shown)) => assert!(shown.chars().count() <= 64),
        Err(e) => panic!("from_header returned {e}"),
    }
}

// ---------------------------------------------------------------------------
// Auth

#[test]
fn auth() {
    let config = Config::from_toml(&format!(
        "[[projects]]\nid = {PROJECT}\npublic_keys = [\"{KEY}\"]\n[[projects]]\nid = {OTHER_PROJECT}\npublic_keys = [\"{OTHER_KEY}\"]\n"
    ))
    .expect("two projects are a valid config");
    let projects = &config.projects;
    fuzz("auth", |case| {
        let text = case.text();
        if case.unmutated {
            check_key_from_request(Some(&text), None, None);
            check_key_from_request(None, Some(&text), None);
            check_key_from_request(None, None, Some(&text));
        }
        // The input in one of the three places, perhaps other mutants in the others.
        let mut places: [Option<String>; 3] = [None, None, None];
        places[case.rng.usize(..3)] = Some(text.clone());
        for place in &mut places {
            if place.is_none() && case.rng.u8(..3) == 0 {
                *place = Some(String::from_utf8_lossy(&case.mutant()).into_owned());
            }
        }
        case.note(format!(
            "X-Sentry-Auth {:?}, Authorization {:?}, query {:?}",
            places[0], places[1], places[2]
        ));
        let [header, authorization, query] = &places;
        let found = check_key_from_request(
            header.as_deref(),
            authorization.as_deref(),
            query.as_deref(),
        );
        let from_dsn = check_key_from_dsn(&text);
        check_merge(&text);
        for key in found.iter().chain(&from_dsn) {
            for id in [PROJECT, OTHER_PROJECT, case.rng.u64(..)] {
                check_authorize(projects, id, &key.to_ascii_lowercase());
            }
        }
        // The envelope's DSN is one more place; it must agree with the others.
        if let (Some(request), Some(dsn)) = (&found, &from_dsn) {
            let mut merged = Some(request.clone());
            match auth::merge(&mut merged, dsn.clone()) {
                Ok(()) => assert_eq!(merged.as_ref(), Some(request)),
                Err(e) => {
                    assert_eq!(e, AuthError::ConflictingKeys);
                    assert_ne!(request, &dsn.trim().to_ascii_lowercase());
                }
            }
        }
        match (found, from_dsn) {
            (Some(_), _) => "request key",
            (None, Some(_)) => "dsn key",
            (None, None) => "no key",
        }
        .into()
    });
}

/// `Authorization` counts when its scheme is Sentry (as the relay reads it).
fn is_sentry_scheme(value: &str) -> bool {
    value
        .trim_start()
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("sentry "))
}

/// A key found is normalized and is in one of the inputs; an error is a 401
/// that fits the inputs; reading the places one by one and merging gives
/// what reading them at once gives.
fn check_key_from_request(
    header: Option<&str>,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Option<String> {
    let result = auth::key_from_request(header, authorization, query);
    // Both headers are read when both are there (a Sentry `Authorization`).
    let sentry_authorization = authorization.filter(|a| is_sentry_scheme(a));
    let headers = [header, sentry_authorization];
    let used_header = header.or(sentry_authorization);
    match &result {
        Ok(Some(key)) => {
            assert!(!key.is_empty());
            assert_eq!(key, &key.trim().to_ascii_lowercase(), "keys are normalized");
            let in_header = headers
                .iter()
                .flatten()
                .any(|h| h.to_ascii_lowercase().contains(key.as_str()));
            let in_query = query.is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .any(|(_, v)| v.to_ascii_lowercase().contains(key.as_str()))
            });
            assert!(
                in_header || in_query,
                "key {key:?} is in none of the inputs"
            );
        }
        Ok(None) => {}
        Err(AuthError::MalformedHeader(_)) => assert!(used_header.is_some()),
        Err(AuthError::ConflictingKeys) => {
            let places = headers.iter().flatten().count() + usize::from(query.is_some());
            assert!(places >= 2, "one place cannot conflict");
        }
        Err(e) => panic!("key_from_request returned {e:?}"),
    }
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty());
        assert_eq!(e.status().as_u16(), 401, "{e:?}");
    }
    // The places are read independently and then merged.
    let from_header = auth::key_from_request(header, authorization, None);
    let from_query = auth::key_from_request(None, None, query);
    let expected = match (from_header, from_query) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => panic!("a query alone cannot conflict: {e:?}"),
        (Ok(Some(a)), Ok(Some(b))) if a != b => Err(AuthError::ConflictingKeys),
        (Ok(a), Ok(b)) => Ok(a.or(b)),
    };
    assert_eq!(
        result, expected,
        "the places, read one by one, disagree with all at once"
    );
    result.ok().flatten()
}

/// A key from a DSN is its user name: what follows `://`, up to `:` or `@`.
fn check_key_from_dsn(dsn: &str) -> Option<String> {
    let key = auth::key_from_dsn(dsn)?;
    assert!(!key.is_empty());
    let (_, rest) = dsn.split_once("://").expect("a key was found after ://");
    assert!(
        rest.starts_with(&key),
        "{key:?} is not the user info of {dsn:?}"
    );
    assert!(
        !key.contains(['/', '@', ':']),
        "{key:?} runs past the user name"
    );
    Some(key)
}

/// Case and surrounding space do not make keys differ; anything else does,
/// and a conflict keeps the key found first.
fn check_merge(text: &str) {
    let normal = text.trim().to_ascii_lowercase();
    let mut found = None;
    auth::merge(&mut found, text.to_owned()).expect("the first key cannot conflict");
    assert_eq!(found, (!normal.is_empty()).then(|| normal.clone()));
    auth::merge(&mut found, format!(" {}\t", text.to_ascii_uppercase()))
        .expect("case and surrounding space do not make a key different");
    assert_eq!(found, (!normal.is_empty()).then(|| normal.clone()));
    if found.is_some() {
        assert_eq!(
            auth::merge(&mut found, format!("{normal}0")),
            Err(AuthError::ConflictingKeys)
        );
        assert_eq!(found, Some(normal), "a conflict leaves the key found");
    }
}

/// A key is allowed exactly where the config lists it.
fn check_authorize(projects: &edge_relay::config::Projects, id: u64, key: &str) {
    let result = auth::authorize(projects, id, key);
    let owns = projects
        .get(id)
        .is_some_and(|p| p.public_keys.iter().any(|k| k.eq_ignore_ascii_case(key)));
    assert_eq!(
        result.is_ok(),
        owns,
        "project {id}, key {key:?}: {result:?}"
    );
    if let Err(e) = result {
        let status = e.status().as_u16();
        assert!(status == 401 || status == 403);
    }
}

// ---------------------------------------------------------------------------
// Config

/// What `${VAR}` expands to in the config target.
fn config_env(name: &str) -> Option<String> {
    match name {
        "LISTEN" => Some("127.0.0.1:0".into()),
        "HASH_KEY" => Some("envSEKRIThashkey03".into()),
        "KAFKA_PASSWORD" => Some("envSEKRITkafka04".into()),
        _ => None,
    }
}

/// Longest mutated override name or value.
const MAX_OVERRIDE: usize = 1024;

/// `EDGE_RELAY_*` override names (after the prefix) the mutants start from.
const OVERRIDE_NAMES: &[&str] = &[
    "SERVER__LISTEN",
    "LIMITS__MAX_ITEMS",
    "LIMITS__MAX_BODY_SIZE",
    "KAFKA__BROKERS",
    "SCRUB__HASH_KEY",
    "SCRUB__METHODS__EMAIL",
    "LOG__FORMAT",
    "PROJECTS",
];

/// Override values the mutants start from.
const OVERRIDE_VALUES: &[&str] = &[
    "0.0.0.0:3000",
    "500",
    "\"20MiB\"",
    "kafka:9092",
    "true",
    "[1, 2]",
    "{ a = 1 }",
    "hash",
    "",
];

#[test]
fn config() {
    let as_seeds = |list: &[&str]| -> Vec<Seed> {
        list.iter()
            .map(|s| Seed {
                name: String::new(),
                bytes: s.as_bytes().to_vec(),
            })
            .collect()
    };
    let names = as_seeds(OVERRIDE_NAMES);
    let values = as_seeds(OVERRIDE_VALUES);
    // A valid config for `*.env` seeds: `NAME=VALUE` lines of overrides.
    let minimal = format!("[[projects]]\nid = {PROJECT}\npublic_keys = [\"{KEY}\"]\n");
    fuzz("config", |case| {
        let text = case.text();
        if case.unmutated {
            let (file, overrides) = if case.origin.name.ends_with(".env") {
                let overrides = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect();
                (minimal.clone(), overrides)
            } else {
                (text.clone(), Vec::new())
            };
            let result = Config::from_toml_with_env(&file, &config_env, &overrides);
            if !case.origin.name.starts_with("crash-") {
                let invalid = case.origin.name.starts_with("invalid-");
                assert_eq!(
                    result.is_err(),
                    invalid,
                    "seed {} (invalid-* seeds must be refused, others accepted): {:?}",
                    case.origin.name,
                    result.as_ref().err()
                );
            }
        }
        let with_env = case.rng.bool();
        let mut overrides = Vec::new();
        if with_env {
            for _ in 0..case.rng.usize(..3) {
                let mut name = names[case.rng.usize(..names.len())].bytes.clone();
                let mut value = values[case.rng.usize(..values.len())].bytes.clone();
                if case.rng.bool() {
                    mutate_once(&mut case.rng, &mut name, &names);
                }
                if case.rng.bool() {
                    mutate_once(&mut case.rng, &mut value, &values);
                }
                // Thousands of `__` in one name overflow the stack, which aborts
                // every test in the binary: that bug has its seed
                // (crash-deep-override.env); here names stay a realistic size.
                name.truncate(MAX_OVERRIDE);
                value.truncate(MAX_OVERRIDE);
                overrides.push((
                    format!("EDGE_RELAY_{}", String::from_utf8_lossy(&name)),
                    String::from_utf8_lossy(&value).into_owned(),
                ));
            }
            case.note(format!("with the environment, overrides {overrides:?}"));
        }
        let result = if with_env {
            Config::from_toml_with_env(&text, &config_env, &overrides)
        } else {
            Config::from_toml(&text)
        };
        match result {
            Ok(config) => {
                check_config(&config);
                if !with_env {
                    check_secrets_hidden(&text, &config);
                }
                "accepted".into()
            }
            Err(e) => {
                assert!(
                    !e.message.trim().is_empty(),
                    "an error without a message: {e:?}"
                );
                assert!(!e.to_string().trim().is_empty());
                "refused".into()
            }
        }
    });
}

/// What `validate` promises of an accepted config.
fn check_config(config: &Config) {
    let l = &config.limits;
    assert!((1..=128).contains(&l.max_json_depth));
    assert!(l.max_items >= 1);
    for size in [
        l.max_body_size,
        l.max_inflated_size,
        l.max_event_size,
        l.max_attachment_size,
        l.max_header_line_size,
    ] {
        assert!(size > 0);
    }
    assert!(l.max_inflated_size >= l.max_body_size);
    assert!(
        config.server.listen != config.admin_listen || config.server.listen.port() == 0,
        "the admin listener shares the SDK listener's port"
    );
    assert!(!config.server.header_read_timeout.is_zero());
    assert!(!config.server.body_read_timeout.is_zero());
    assert!(config.summary().starts_with("ok: "));
    for p in config.projects.iter() {
        assert!(p.id > 0);
        assert!(!p.public_keys.is_empty());
        for key in &p.public_keys {
            // The auth stage lowercases keys; a key in the file must still be found.
            assert_eq!(
                config.projects.project_of_key(&key.to_ascii_lowercase()),
                Some(p.id)
            );
        }
    }
}

/// Secrets in the file (scrub hash keys, Kafka passwords) appear in neither
/// `Debug` nor the check-config summary. Only the seeds' secrets are looked
/// for (they contain `SEKRIT`), and only where no other string holds them.
fn check_secrets_hidden(text: &str, config: &Config) {
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let mut secrets = Vec::new();
    let mut others = Vec::new();
    collect_strings(
        &toml::Value::Table(table),
        "",
        false,
        &mut secrets,
        &mut others,
    );
    let shown = format!("{config:?}\n{}", config.summary());
    for secret in secrets {
        if secret.contains("SEKRIT") && !others.iter().any(|o| o.contains(&secret)) {
            assert!(!shown.contains(&secret), "secret {secret:?} shown: {shown}");
        }
    }
}

/// Sorts the strings of a TOML value (held under `key`) into secrets and the rest.
fn collect_strings(
    value: &toml::Value,
    key: &str,
    secret: bool,
    secrets: &mut Vec<String>,
    others: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) if secret => secrets.push(s.clone()),
        toml::Value::String(s) => others.push(s.clone()),
        toml::Value::Array(items) => {
            for item in items {
                collect_strings(item, key, false, secrets, others);
            }
        }
        toml::Value::Table(table) => {
            for (name, v) in table {
                others.push(name.clone());
                let secret = name == "hash_key"
                    || (key == "producer"
                        && ["password", "secret", "key", "token", "jaas"]
                            .iter()
                            .any(|w| name.contains(w)));
                collect_strings(v, name, secret, secrets, others);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Scrubber

/// The scrubber with every method that must stay idempotent: hashing too.
const HASHING_SCRUB: &str = r#"
[scrub]
sensitive_fields = ["order_secret"]
safe_fields = ["extra.order_id"]
hash_key = "fuzz-hash-key"
methods = { email = "hash", password = "hash", creditcard = "hash" }

[[scrub.rules]]
name = "ticket"
pattern = 'TCK-[0-9]{6}'
method = "mask"
paths = ["extra.**", "message"]
"#;

/// The value planted in text under a sensitive key.
const PLANTED: &str = "Pl4ntedS3cretValue";

#[test]
fn scrub() {
    let defaults = Config::from_toml("")
        .expect("the empty config is valid")
        .scrubber;
    let hashing = Config::from_toml(HASHING_SCRUB)
        .expect("the hashing scrub config is valid")
        .scrubber;
    fuzz("scrub", |case| {
        // The input as text, with a `key=value` secret planted between spaces
        // somewhere in it: whatever surrounds it, it must not survive.
        let text = case.text();
        // Seeds as committed get it at the end, so a seed that shows a leak always does.
        let mut at = if case.unmutated {
            text.len()
        } else {
            case.rng.usize(..=text.len())
        };
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let key = ["password", "api_key", "token", "secret"][case.rng.usize(..4)];
        let planted = format!("{} {key}={PLANTED} {}", &text[..at], &text[at..]);
        case.note(format!("planted \" {key}={PLANTED} \" at byte {at}"));
        // The same as an entry of a process's environment (`/proc/PID/environ`).
        let entry = format!("{}\0{key}={PLANTED}\0{}", &text[..at], &text[at..]);
        // Seeds as committed meet both scrubbers, mutants one.
        let both = [
            ("default settings", &defaults),
            ("hashing settings", &hashing),
        ];
        let scrubbers = if case.unmutated {
            &both[..]
        } else {
            let i = case.rng.usize(..2);
            &both[i..=i]
        };
        let mut outcome = String::new();
        for &(name, scrubber) in scrubbers {
            case.note(format!("scrubber: {name}"));
            outcome = scrub_one(case, scrubber, &text, &planted);
            check_entries(scrubber, entry.as_bytes());
        }
        outcome
    });
}

fn scrub_one(case: &Case<'_>, scrubber: &Scrubber, text: &str, planted: &str) -> String {
    if let Some((out, redactions)) = scrubber.scrub_text(text) {
        assert_ne!(out, text, "scrub_text reported a change it did not make");
        assert!(!redactions.is_empty());
        for r in &redactions {
            assert!(r.path.is_empty(), "text has no paths: {r:?}");
            assert!(scrubber.rule_names().contains(&r.rule), "{r:?}");
        }
    }
    let out = scrubber.scrub_text(planted).map(|(out, _)| out);
    assert!(
        out.as_deref().is_some_and(|out| !out.contains(PLANTED)),
        "the planted secret survives scrub_text: {:?}",
        out.as_deref().unwrap_or(planted)
    );
    check_string_by_string(case, scrubber, planted);
    // The text as an event's message: strings are where the patterns run.
    let event = check_scrubbed_twice(scrubber, json!({ "message": planted }));
    assert!(
        !event.to_string().contains(PLANTED),
        "the planted secret survives in an event: {event}"
    );
    match serde_json::from_slice::<Value>(&case.input) {
        Ok(event) => {
            check_scrubbed_twice(scrubber, event);
            format!(
                "json, text pass: {}",
                check_text_pass(scrubber, &case.input)
            )
        }
        Err(e) => {
            assert!(
                !(case.unmutated && case.origin.name.ends_with(".json")),
                "seed {} is not JSON: {e}",
                case.origin.name
            );
            "not json".into()
        }
    }
}

/// JSON scrubbed string by string (replay recordings, attachments too
/// deep for a tree): whatever the input, no panic; JSON stays JSON; and a
/// secret planted in a string, or as a value under a sensitive key, does
/// not survive.
fn check_string_by_string(case: &Case<'_>, scrubber: &Scrubber, planted: &str) {
    let scrubbed = scrubber.scrub_json_strings(&case.input);
    if let (Ok(Some((out, _))), Ok(_)) = (&scrubbed, serde_json::from_slice::<Value>(&case.input)) {
        if let Err(e) = serde_json::from_slice::<Value>(out) {
            panic!(
                "JSON scrubbed string by string is no longer JSON ({e}): {}",
                String::from_utf8_lossy(out)
            );
        }
    }
    let held = serde_json::to_vec(&json!([{ "m": planted, "password": PLANTED }])).unwrap();
    let out = match scrubber.scrub_json_strings(&held) {
        Ok(Some((out, _))) => out,
        Ok(None) => held,
        Err(e) => panic!("JSON refused as {e:?}: {}", String::from_utf8_lossy(&held)),
    };
    assert!(
        memchr::memmem::find(&out, PLANTED.as_bytes()).is_none(),
        "the planted secret survives string by string: {}",
        String::from_utf8_lossy(&out)
    );
    serde_json::from_slice::<Value>(&out).expect("still JSON");
}

/// A secret planted as an entry of NUL-separated text does not survive
/// `scrub_bytes`, and the NULs stay (text that UTF-16 detection takes, or
/// with runs of NULs, is scrubbed otherwise: not checked here).
fn check_entries(scrubber: &Scrubber, bytes: &[u8]) {
    if !edge_relay::scrub::is_nul_separated(bytes) || edge_relay::scrub::utf16_text(bytes).is_some()
    {
        return;
    }
    let out = scrubber.scrub_bytes(bytes).map(|(out, _)| out);
    let out = out.as_deref().unwrap_or(bytes);
    assert!(
        memchr::memmem::find(out, PLANTED.as_bytes()).is_none(),
        "the planted secret survives scrub_bytes between NULs: {:?}",
        String::from_utf8_lossy(out)
    );
    let nuls = |b: &[u8]| b.iter().filter(|&&c| c == 0).count();
    assert_eq!(nuls(out), nuls(bytes), "the NULs stay");
}

/// Scrubbing gives valid JSON with `_meta` for what it redacted, and a
/// second pass only ever redacts further: it may (a replacement can complete
/// another rule's pattern, and a hash inside text is hashed again), but what
/// the first pass wrote in place of a value is never put back. An event the
/// first pass left alone, the second leaves alone too.
/// Returns the event scrubbed once.
fn check_scrubbed_twice(scrubber: &Scrubber, mut event: Value) -> Value {
    let original = event.clone();
    let redactions = scrubber.scrub_event(&mut event);
    for r in &redactions {
        assert!(scrubber.rule_names().contains(&r.rule), "{r:?}");
    }
    if !redactions.is_empty() && event.is_object() {
        assert!(event["_meta"].is_object(), "redactions without _meta");
    }
    let text = serde_json::to_string(&event).expect("a scrubbed event serializes");
    serde_json::from_str::<Value>(&text).expect("a scrubbed event is valid JSON");
    let mut twice = event.clone();
    let again = scrubber.scrub_event(&mut twice);
    if redactions.is_empty() {
        assert!(
            again.is_empty() && twice == event,
            "a second pass changed an event the first left alone\n  once:  {event}\n  twice: {twice}"
        );
    }
    let twice_text = serde_json::to_string(&twice).expect("serializes");
    serde_json::from_str::<Value>(&twice_text).expect("scrubbed twice is valid JSON");
    // Every string the first pass removed stays removed.
    let mut before = Vec::new();
    strings(&original, &mut before);
    let mut once = Vec::new();
    strings(&event, &mut once);
    let mut after = Vec::new();
    strings(&twice, &mut after);
    for s in before.iter().filter(|s| s.len() >= 8) {
        let contains = |all: &[String]| all.iter().any(|t| t.contains(s.as_str()));
        assert!(
            contains(&once) || !contains(&after),
            "a second pass brought back {s:?}\n  once:  {event}\n  twice: {twice}"
        );
    }
    event
}

/// The text pass (what the relay runs on events) and the tree pass agree:
/// the same redactions and, read back, the same event. Where the text pass
/// declines, the tree pass does the work; events with a repeated key are
/// not compared (a tree keeps the last, the text pass scrubs each).
fn check_text_pass(scrubber: &Scrubber, input: &[u8]) -> &'static str {
    let Ok((envelope::Event::View(..), _)) = envelope::read_event(input, 128) else {
        return "not an event the text pass gets";
    };
    let text = std::str::from_utf8(input).expect("read_event checked UTF-8");
    let by_text = scrubber.scrub_event_text(text);
    let Ok(mut tree) = serde_json::from_str::<Value>(text) else {
        assert_eq!(
            by_text,
            Err(Fallback),
            "the text pass took what the tree refuses"
        );
        return "declined, not a tree";
    };
    if serde_json::from_str::<NoRepeatedKey>(text).is_err() {
        return "a repeated key";
    }
    let mut by_tree = scrubber.scrub_event(&mut tree);
    let (out, mut by_text) = match by_text {
        Err(Fallback) => return "declined",
        Ok(None) => {
            assert!(
                by_tree.is_empty(),
                "only the tree pass redacted {by_tree:?}"
            );
            return "unchanged";
        }
        Ok(Some(scrubbed)) => scrubbed,
    };
    let out: Value = serde_json::from_slice(&out).expect("the text pass writes JSON");
    assert_eq!(out, tree, "the text and tree passes scrubbed differently");
    let order = |r: &edge_relay::scrub::Redaction| (r.path.clone(), r.rule.clone());
    by_text.sort_by_key(order);
    by_tree.sort_by_key(order);
    assert_eq!(by_text, by_tree);
    "scrubbed alike"
}

/// Deserializes only JSON in which no object repeats a key.
struct NoRepeatedKey;

impl<'de> serde::Deserialize<'de> for NoRepeatedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoRepeatedKey)
    }
}

impl<'de> serde::de::Visitor<'de> for NoRepeatedKey {
    type Value = NoRepeatedKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("a repeated key"));
            }
            map.next_value::<NoRepeatedKey>()?;
        }
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoRepeatedKey>()?.is_some() {}
        Ok(self)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out);
        }),
        _ => {}
    }
}
