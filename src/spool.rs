//! The on-disk spool: accepted items Kafka has not acknowledged yet, kept in
//! arrival order until they are replayed, and removed only after the ack.
//!
//! The store is [redb], an embedded, crash-safe key-value database in pure
//! Rust: a commit is atomic and, with [`Durability::Immediate`], on disk when
//! it returns; a crash mid-commit rolls back to the last commit (its pages
//! carry checksums). It is preferred over a hand-written segment log, which
//! would have to get torn tails, fsync ordering and space reuse right itself.
//! Keys are sequence numbers, so reading from the first key replays in arrival
//! order. Each value carries a CRC-32 of its own as well, so a record damaged
//! by something other than a torn commit (a disk, a bug, a hand edit) is
//! found when it is read, skipped and counted, and never stops the replay.
//!
//! Writes go through one thread that commits whatever is waiting in one
//! transaction (group commit): one `fsync` answers many requests.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, Notify};

use crate::produce::{Record, RecordHeaders};

/// Items by sequence number; values are [`encode`]d records.
const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("items");
/// The file inside the spool directory.
const FILE_NAME: &str = "spool.redb";
/// The version byte of the record encoding.
const VERSION: u8 = 1;
/// Most operations committed in one transaction.
const MAX_GROUP: usize = 1024;

/// Why the spool could not take or give items.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Taking the items would pass `spool.max_size`.
    #[error("the spool is full")]
    Full,
    /// The database failed (disk full, I/O error).
    #[error("spool storage failed: {0}")]
    Storage(String),
    /// The spool's writer thread is gone (the relay is stopping).
    #[error("the spool is closed")]
    Closed,
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the spool {path}: {message}")]
pub struct OpenError {
    /// The spool file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// One spooled item as read back.
pub struct Spooled {
    /// Its sequence number, to remove it once acknowledged.
    pub seq: u64,
    /// The record, or why it could not be decoded (a checksum or format error).
    pub record: Result<Record, &'static str>,
    /// When it was spooled, in milliseconds since the Unix epoch.
    pub spooled_at_ms: u64,
}

/// What the spool holds, for metrics and the full check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the encoded items.
    pub bytes: u64,
    /// Items.
    pub items: u64,
}

/// The spool: cheap to clone, shared by the pipeline and the replay task.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database, also held by the writer thread.
    db: Arc<Database>,
    /// Operations for the writer thread.
    ops: Mutex<mpsc::Sender<Op>>,
    /// Usage and the wake-up for the replay task, shared with the writer.
    shared: Arc<Shared>,
    /// `spool.max_size`.
    max_size: u64,
    /// The file, for messages.
    path: PathBuf,
}

struct Shared {
    /// What is committed, plus what is reserved by appends under way.
    usage: Mutex<(Usage, u64)>,
    /// Notified after each commit that added items.
    written: Notify,
}

enum Op {
    Append {
        values: Vec<Vec<u8>>,
        size: u64,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Remove {
        seqs: Vec<u64>,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_size`
    /// bytes of items. `cache` bounds redb's page cache.
    pub fn open(dir: &Path, max_size: u64, cache: usize) -> Result<Spool, OpenError> {
        let path = dir.join(FILE_NAME);
        let err = |message: String| OpenError {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        let db = Database::builder()
            .set_cache_size(cache)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    err("another process has it open: each relay needs a spool of its own".into())
                }
                e => err(e.to_string()),
            })?;
        // Create the table, and learn where numbering resumes and what is held.
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        let mut usage = Usage::default();
        {
            let table = txn.open_table(ITEMS).map_err(|e| err(e.to_string()))?;
            for entry in table.iter().map_err(|e| err(e.to_string()))? {
                let (_, value) = entry.map_err(|e| err(e.to_string()))?;
                usage.bytes += value.value().len() as u64;
                usage.items += 1;
            }
        }
        txn.commit().map_err(|e| err(e.to_string()))?;
        let next_seq = last_seq(&db).map_err(err)?.map_or(0, |s| s + 1);

        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            usage: Mutex::new((usage, 0)),
            written: Notify::new(),
        });
        let (tx, rx) = mpsc::channel();
        let (writer_db, writer_shared) = (db.clone(), shared.clone());
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_loop(&writer_db, &writer_shared, rx, next_seq))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        Ok(Spool {
            inner: Arc::new(Inner {
                db,
                ops: Mutex::new(tx),
                shared,
                max_size,
                path,
            }),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the spool holds now (committed items only).
    pub fn usage(&self) -> Usage {
        self.inner.shared.usage.lock().expect("usage lock").0
    }

    /// Stores the records durably (on disk when this returns `Ok`), in order,
    /// or none of them: [`SpoolError::Full`] if they would pass `max_size`.
    pub async fn append(&self, records: &[Record]) -> Result<(), SpoolError> {
        let now = now_ms();
        let values: Vec<Vec<u8>> = records.iter().map(|r| encode(r, now)).collect();
        let size: u64 = values.iter().map(|v| v.len() as u64).sum();
        {
            let mut guard = self.inner.shared.usage.lock().expect("usage lock");
            let (usage, reserved) = &mut *guard;
            if usage.bytes + *reserved + size > self.inner.max_size {
                return Err(SpoolError::Full);
            }
            *reserved += size;
        }
        let (done, answer) = oneshot::channel();
        self.send(Op::Append { values, size, done });
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Removes acknowledged items. The removal is flushed with the next
    /// append's commit, or on its own if there was none for a second, so a
    /// crash may replay an item delivered in that second (a duplicate with
    /// the same event id).
    pub async fn remove(&self, seqs: Vec<u64>) -> Result<(), SpoolError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.send(Op::Remove { seqs, done });
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    fn send(&self, op: Op) {
        // A send fails only when the writer is gone; the dropped `done` then says `Closed`.
        let _ = self.inner.ops.lock().expect("ops lock").send(op);
    }

    /// Reads the oldest items, up to `max_items` and about `max_bytes`, in
    /// order. Blocks on disk reads: call it from a blocking context.
    pub fn oldest(&self, max_items: usize, max_bytes: u64) -> Result<Vec<Spooled>, SpoolError> {
        let storage = |e: &dyn std::fmt::Display| SpoolError::Storage(e.to_string());
        let txn = self.inner.db.begin_read().map_err(|e| storage(&e))?;
        let table = txn.open_table(ITEMS).map_err(|e| storage(&e))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in table.iter().map_err(|e| storage(&e))? {
            let (seq, value) = entry.map_err(|e| storage(&e))?;
            let value = value.value();
            if out.len() >= max_items || (bytes > 0 && bytes + value.len() as u64 > max_bytes) {
                break;
            }
            bytes += value.len() as u64;
            let (record, spooled_at_ms) = match decode(value) {
                Ok((record, at)) => (Ok(record), at),
                Err(why) => (Err(why), 0),
            };
            out.push(Spooled {
                seq: seq.value(),
                record,
                spooled_at_ms,
            });
        }
        Ok(out)
    }

    /// Waits until an append commits (or `timeout` passes).
    pub async fn written(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.shared.written.notified()).await;
    }
}

/// The highest sequence number in the spool.
fn last_seq(db: &Database) -> Result<Option<u64>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = txn.open_table(ITEMS).map_err(|e| e.to_string())?;
    let last = table.last().map_err(|e| e.to_string())?;
    Ok(last.map(|(k, _)| k.value()))
}

/// The writer thread: takes every waiting operation, commits them in one
/// transaction, then answers each.
fn write_loop(db: &Database, shared: &Shared, rx: mpsc::Receiver<Op>, mut next_seq: u64) {
    // Removals ride on the next append's fsync; while nothing is appended
    // (a drain with Kafka healthy), one removal a second is made durable, so
    // that a crash replays at most about a second of removed items.
    const DURABLE_EVERY: Duration = Duration::from_secs(1);
    let mut last_durable = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|op| matches!(op, Op::Append { .. }))
            || last_durable.elapsed() >= DURABLE_EVERY;
        let seq_before = next_seq;
        let result = commit(db, &group, &mut next_seq, durable);
        let mut guard = shared.usage.lock().expect("usage lock");
        let (usage, reserved) = &mut *guard;
        for op in &group {
            if let Op::Append { size, .. } = op {
                *reserved -= size;
            }
        }
        match &result {
            Ok((added, removed)) => {
                usage.bytes = usage.bytes + added.bytes - removed.bytes;
                usage.items = usage.items + added.items - removed.items;
            }
            Err(e) => {
                // Nothing of the transaction is on disk; numbering may resume where it was.
                next_seq = seq_before;
                tracing::error!(error = %e, "spool commit failed");
            }
        }
        drop(guard);
        if durable && result.is_ok() {
            last_durable = std::time::Instant::now();
            // A permit is stored if the replay task is not waiting right now.
            shared.written.notify_one();
        }
        for op in group {
            let done = match op {
                Op::Append { done, .. } | Op::Remove { done, .. } => done,
            };
            let _ = done.send(match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(SpoolError::Storage(e.clone())),
            });
        }
    }
}

/// One transaction for a group of operations; what it added and removed.
fn commit(
    db: &Database,
    group: &[Op],
    next_seq: &mut u64,
    durable: bool,
) -> Result<(Usage, Usage), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| e.to_string())?;
    let (mut added, mut removed) = (Usage::default(), Usage::default());
    {
        let mut table = txn.open_table(ITEMS).map_err(|e| e.to_string())?;
        for op in group {
            match op {
                Op::Append { values, .. } => {
                    for value in values {
                        table
                            .insert(*next_seq, value.as_slice())
                            .map_err(|e| e.to_string())?;
                        *next_seq += 1;
                        added.bytes += value.len() as u64;
                        added.items += 1;
                    }
                }
                Op::Remove { seqs, .. } => {
                    for seq in seqs {
                        if let Some(old) = table.remove(*seq).map_err(|e| e.to_string())? {
                            removed.bytes += old.value().len() as u64;
                            removed.items += 1;
                        }
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok((added, removed))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A record as stored: `crc32 | version | spooled_at_ms | topic | key |
/// headers | payload`, strings length-prefixed (u32, little-endian). The
/// CRC covers everything after it.
pub fn encode(record: &Record, spooled_at_ms: u64) -> Vec<u8> {
    let h = &record.headers;
    let fields: [&[u8]; 8] = [
        record.topic.as_bytes(),
        record.key.as_bytes(),
        h.project_id.as_bytes(),
        h.event_id.as_bytes(),
        h.item_type.as_bytes(),
        h.received_at.as_bytes(),
        h.fingerprint.as_deref().unwrap_or("").as_bytes(),
        h.sample_rate.as_deref().unwrap_or("").as_bytes(),
    ];
    let len = 4 + 1 + 8 + 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>() + 4;
    let mut out = Vec::with_capacity(len + record.payload.len());
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&spooled_at_ms.to_le_bytes());
    // Which optional headers are present (an empty value is a value).
    out.push(u8::from(h.fingerprint.is_some()) | (u8::from(h.sample_rate.is_some()) << 1));
    for field in fields.iter().chain([&&record.payload[..]]) {
        let n = u32::try_from(field.len()).expect("items are far below 4 GiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(field);
    }
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The record and when it was spooled, or why the bytes are not a record.
pub fn decode(value: &[u8]) -> Result<(Record, u64), &'static str> {
    if value.len() < 14 {
        return Err("truncated record");
    }
    let crc = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
    if crc32fast::hash(&value[4..]) != crc {
        return Err("checksum mismatch");
    }
    if value[4] != VERSION {
        return Err("unknown record version");
    }
    let spooled_at = u64::from_le_bytes(value[5..13].try_into().expect("8 bytes"));
    let flags = value[13];
    let mut rest = &value[14..];
    let mut text = || {
        take(&mut rest)
            .and_then(|b| String::from_utf8(b.to_vec()).map_err(|_| "a field is not UTF-8"))
    };
    let topic = text()?;
    let key = text()?;
    let project_id = text()?;
    let event_id = text()?;
    let item_type = text()?;
    let received_at = text()?;
    let fingerprint = text()?;
    let sample_rate = text()?;
    let payload = Bytes::copy_from_slice(take(&mut rest)?);
    if !rest.is_empty() {
        return Err("trailing bytes after the record");
    }
    Ok((
        Record {
            topic: topic.into(),
            key,
            payload,
            headers: RecordHeaders {
                project_id: project_id.into(),
                event_id,
                item_type,
                received_at: received_at.into(),
                fingerprint: (flags & 1 != 0).then_some(fingerprint),
                sample_rate: (flags & 2 != 0).then_some(sample_rate),
            },
        },
        spooled_at,
    ))
}

/// The next length-prefixed field.
fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let n = rest.get(..4).ok_or("truncated record")?;
    let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
    let field = rest.get(4..4 + n).ok_or("truncated record")?;
    *rest = &rest[4 + n..];
    Ok(field)
}

#[cfg(test)]
impl Spool {
    /// Puts raw bytes under a sequence number, as a damaged disk might.
    pub(crate) fn insert_raw(&self, seq: u64, value: &[u8]) {
        let txn = self.inner.db.begin_write().expect("write");
        txn.open_table(ITEMS)
            .expect("table")
            .insert(seq, value)
            .expect("insert");
        txn.commit().expect("commit");
    }
}

#[cfg(test)]
mod tests;
