//! The on-disk spool: accepted items Kafka has not acknowledged yet, kept in
//! arrival order until they are replayed, and removed only after the ack.
//!
//! The store is an append-only log of segment files (`NNN.seg` in the spool
//! directory), written by one thread that appends whatever is waiting as one
//! write and one `fdatasync` (group commit): one flush answers many requests,
//! and each item is written once, contiguously. A removal takes effect in
//! memory at once, and is written to the log as a small record with the next
//! group, or within a second.
//!
//! Written by hand rather than kept in an embedded database (the spool used
//! redb before): a B-tree store rewrites pages, and then the item itself, on
//! every commit; its writer cost about 45 µs of CPU per item at load, this
//! one about 10, and about 7 since it writes around the page cache
//! (`BENCHMARKS.md`). What a log must get right itself, and how
//! this one does:
//! - **Torn writes.** Each record has a header with its own CRC-32, and each
//!   item a CRC-32 over its bytes. Reading a segment stops at the first header
//!   that does not check out; in the newest segment that is a write a crash
//!   interrupted, and the file is cut back to the last whole record.
//! - **Damage elsewhere.** An item whose bytes fail their checksum, or that
//!   the disk will not give back, is skipped, logged and counted when it is
//!   read; it never stops the replay. A header that fails in an older
//!   segment, or a read error at open, loses the rest of that segment; a
//!   segment that cannot be opened is left in place: logged and counted at
//!   open, which goes on with the others.
//! - **Ordering.** A new segment's directory entry is flushed before anything
//!   in it is acknowledged; a segment ends with a flushed end record before
//!   the next one starts. Sequence numbers only grow, over the directory's
//!   whole life (they are reserved a block at a time in `spool.seq`; should
//!   that file be lost, they jump 2^48 past the highest found), so reading
//!   the segments in order replays in arrival order, and a removal record
//!   can only ever name the item it was written for.
//! - **Space.** Segments are deleted oldest first, once they hold no item
//!   (one thread retires them, in order, each deletion flushed to the
//!   directory before the next file is touched, so that a segment never goes
//!   before the older ones whose removals it records). Up to two are kept as
//!   spares and written over, which costs about half as much as growing a
//!   file; a drained active segment is written over from its start, once no
//!   older one is still being retired. Reading such a file stops at the first
//!   stale record: its number is smaller than the one before it.
//!   `spool.max_size` bounds the bytes written to the segments, removed items
//!   included until their segment goes.
//! - **Blocks.** Each write is whole 4 KiB blocks at a block boundary: the
//!   active segment's last partial block (kept in memory) again, the new
//!   records, and zeros to the end of the block, which read as the log's end
//!   (a reopen cuts them off without a word). That is what lets the segments
//!   be written and read around the page cache (`O_DIRECT`, `spool.direct_io`),
//!   which saves the writer a copy and the kernel's per-page bookkeeping. A
//!   block written again holds the same bytes before the new ones, so a write
//!   torn by a crash leaves what was acknowledged as it was (sectors are
//!   written whole). The format is the same with and without `O_DIRECT`.
//! - **What a crash can do** besides cutting a torn tail: replay items whose
//!   removal had not reached the disk (duplicates, with the same event id),
//!   and count as damaged, at replay, an item of the interrupted write whose
//!   header reached the disk but not all of its bytes (it was never
//!   answered; on disk it looks like a damaged item). It cannot lose an item
//!   whose append was answered.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::health::WriteHealth;
use crate::produce::{Record, RecordHeaders};

/// The extension of segment files; their names are their numbers, zero-padded.
const SEGMENT_EXT: &str = "seg";
/// Held locked while a relay has the spool open.
const LOCK_FILE: &str = "spool.lock";
/// The store of earlier versions, which this one does not read.
const OLD_STORE: &str = "spool.redb";
/// The version byte of the item encoding.
const VERSION: u8 = 1;
/// Most operations written in one group.
const MAX_GROUP: usize = 1024;
/// The writer keeps its buffer between commits up to this size.
const KEEP_BUFFER: usize = 4 << 20;
/// Bytes of a record header: kind, three zero bytes, body length (u32),
/// sequence number (u64), CRC-32 of the first 16 bytes, four zero bytes.
const HEADER: usize = 24;
/// A record holding one item.
const KIND_ITEM: u8 = 1;
/// A record listing removed items.
const KIND_REMOVED: u8 = 2;
/// The last record of a segment the writer moved on from: what follows it is
/// stale bytes of the file's earlier use.
const KIND_END: u8 = 3;
/// Segment files are written, and read while the relay runs, in whole blocks
/// of this size at offsets that are multiples of it: what I/O around the
/// page cache (`O_DIRECT`) asks of the buffer, the offset and the length.
/// 4 KiB suits disks of 512-byte and of 4 KiB sectors alike. A group's last
/// block is filled with zeros, and the next group writes that block again,
/// with the same bytes before its own; the zeros read as the end of the log.
const BLOCK: usize = 4096;
/// Why an item read back for the replay has no record: the disk would not
/// give its bytes back.
const UNREADABLE: &str = "cannot be read from the disk";
/// Items read back for the replay are read in runs of up to about this many bytes.
const READ_RUN: u64 = 1 << 20;
/// The most of a refused append that [`Spool::is_full`] keeps asking room
/// for (a large event): one big attachment refused must not call a spool
/// that still takes events full.
const FULL_FOR: u64 = 64 << 10;
/// The extension of drained segment files kept for reuse.
const SPARE_EXT: &str = "spare";
/// The numbers reserved so far (u64 and its CRC-32, little-endian).
const SEQ_FILE: &str = "spool.seq";
/// Numbers reserved at a time: one small flushed write per this many items.
const SEQ_BLOCK: u64 = 1 << 20;
/// How far numbering jumps when [`SEQ_FILE`] is lost while segments remain:
/// more items than a spool appends in its life (2^48), with room for 65 535
/// such losses in a `u64`.
const SEQ_JUMP: u64 = 1 << 48;
/// Most drained segment files kept for reuse. Writing over a file's existing
/// blocks costs about half as much as growing a new file (`BENCHMARKS.md`).
const MAX_SPARES: usize = 2;
/// Removals ride on the next append's flush; while nothing is appended (a
/// drain with Kafka healthy), they are flushed at least this often, so that a
/// crash replays at most about this much of removed items.
const FLUSH_REMOVALS_EVERY: Duration = Duration::from_secs(1);

/// Why the spool could not take or give items.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Taking the items would pass `spool.max_size`.
    #[error("the spool is full")]
    Full,
    /// The disk failed (disk full, I/O error).
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
    /// The spool directory.
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
    /// Bytes of the segment files: the items, their headers, and the space of
    /// removed items not reclaimed yet.
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
    /// Operations for the writer thread.
    ops: mpsc::Sender<Op>,
    /// The index and the wake-up for the replay task, shared with the writer.
    shared: Arc<Shared>,
    /// `spool.max_size`.
    max_size: u64,
    /// Segments found damaged or unreadable when the spool was opened.
    damaged_at_open: u64,
}

struct Shared {
    index: Mutex<Index>,
    /// Notified when items become replayable.
    replayable: Notify,
    /// Drained segment files ready for reuse, their first header wiped.
    spares: Mutex<Vec<PathBuf>>,
    /// Batches of drained segments handed to the retiring thread and not
    /// yet gone for good (kept or deleted, the deletions flushed to the
    /// directory). The active segment is not written over while any is:
    /// its removal records may be what keeps them from being replayed.
    retiring: std::sync::atomic::AtomicUsize,
    /// Whether the writer's writes are failing.
    health: WriteHealth,
    /// Whether the relay is short of CPU (see [`Spool::set_pressure`]): it
    /// picks the writer's commit delay.
    pressure: std::sync::atomic::AtomicBool,
    /// `spool.commit_delay` and `spool.commit_delay_light`.
    commit_delays: CommitDelays,
    /// Told how long each flush took (see [`Spool::on_flush`]).
    on_flush: std::sync::OnceLock<FlushObserver>,
    /// Announced appends on their way (see [`Spool::announce`]).
    announced: std::sync::atomic::AtomicUsize,
    /// The writer thread, which a commit delay parks: woken when the last
    /// announced append has arrived.
    writer: std::sync::OnceLock<std::thread::Thread>,
    /// Tests: the writer stops as a crash would, without writing what waits.
    #[cfg(test)]
    crash: std::sync::atomic::AtomicBool,
    /// Tests: the writer's commits, ticks included.
    #[cfg(test)]
    commits: std::sync::atomic::AtomicU64,
    /// Tests: held to keep the retiring thread from starting on its next batch.
    #[cfg(test)]
    retire_gate: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Whether the relay is short of CPU now (see [`Spool::set_pressure`]).
    fn pressed(&self) -> bool {
        self.pressure.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The commit delay for that pressure.
    fn commit_delay(&self, pressed: bool) -> Duration {
        match pressed {
            true => self.commit_delays.pressed,
            false => self.commit_delays.light,
        }
    }
}

/// Where every held item is, in memory; rebuilt from the segments at open.
#[derive(Default)]
struct Index {
    /// Held items by sequence number.
    items: BTreeMap<u64, Slot>,
    /// Segment files by number.
    segments: BTreeMap<u64, Segment>,
    /// The bytes of the segment files.
    disk_bytes: u64,
    /// Bytes of appends sent to the writer and not written yet.
    reserved: u64,
    /// Items not owned by a direct delivery, which the replay may take.
    replayable: u64,
    /// Removed items whose removal record the writer has not written yet.
    removed: Vec<u64>,
    /// The bytes of the last append refused for want of room (0: none yet).
    refused: u64,
}

struct Slot {
    segment: u64,
    /// Where the item's bytes start in the segment file.
    offset: u64,
    len: u32,
    /// A delivery is under way for it outside the replay: the replay skips it
    /// until it is removed or released.
    owned: bool,
}

struct Segment {
    file: Arc<File>,
    /// `file` is open for I/O around the page cache: reads must be whole blocks.
    direct: bool,
    len: u64,
    /// Items in this segment not removed yet.
    live: u64,
}

enum Op {
    Append {
        values: Vec<Encoded>,
        size: u64,
        owned: bool,
        /// It was announced (see [`Spool::announce`]).
        announced: bool,
        done: oneshot::Sender<Result<Range<u64>, SpoolError>>,
    },
    /// Write what is waiting and flush it, even with nothing to append.
    Sync { done: oneshot::Sender<()> },
    /// Tests: commit as the once-a-second tick does (without waiting for
    /// drained segments to go), now.
    #[cfg(test)]
    Tick { done: oneshot::Sender<()> },
}

/// How long the writer waits, under concurrent appends, before each flush
/// so that more appends share it. A flush costs tens of microseconds of CPU
/// (the write, the `fdatasync`, the wake-ups) whatever it carries; the wait
/// adds to every answer. Measured (`BENCHMARKS.md`): at the CPU limit with
/// many connections, 1 ms beats 250 µs on throughput; below it, where the
/// request threads wait for the writer, 250 µs beats 1 ms on throughput and
/// p99 latency both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitDelays {
    /// The wait while the relay is short of CPU (`spool.commit_delay`).
    pub pressed: Duration,
    /// The wait otherwise (`spool.commit_delay_light`).
    pub light: Duration,
}

impl From<Duration> for CommitDelays {
    /// The same wait whatever the load.
    fn from(delay: Duration) -> CommitDelays {
        CommitDelays {
            pressed: delay,
            light: delay,
        }
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_size`
    /// bytes of segment files. Under concurrent appends the writer waits
    /// one of `commit_delay` (which [`Spool::set_pressure`] picks) before
    /// each flush, so that more appends share it.
    /// With `direct`, the segments' I/O goes around the page cache where the
    /// filesystem allows it (see [`open_segment`]).
    pub fn open(
        dir: &Path,
        max_size: u64,
        commit_delay: impl Into<CommitDelays>,
        direct: bool,
    ) -> Result<Spool, OpenError> {
        let err = |message: String| OpenError {
            path: dir.to_owned(),
            message,
        };
        create_dir_durably(dir).map_err(|e| err(format!("cannot create the directory: {e}")))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| err(format!("cannot create {LOCK_FILE}: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(
                    "another process has it open: each relay needs a spool of its own".into(),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock {LOCK_FILE}: {e}")))
            }
        }
        if dir.join(OLD_STORE).exists() {
            return Err(err(format!(
                "it holds {OLD_STORE}, the spool of an earlier edge-relay version, which \
                 this version does not read: let the earlier version drain it (its \
                 edge_relay_spool_items gauge at 0), then delete the file"
            )));
        }
        let recovered = recover(dir, direct).map_err(|e| err(e.to_string()))?;
        let segment_max = (max_size / 8).clamp(64 << 10, 64 << 20);
        let shared = Arc::new(Shared {
            index: Mutex::new(recovered.index),
            replayable: Notify::new(),
            spares: Mutex::new(recovered.spares),
            retiring: std::sync::atomic::AtomicUsize::new(0),
            health: WriteHealth::default(),
            pressure: std::sync::atomic::AtomicBool::new(true),
            commit_delays: commit_delay.into(),
            on_flush: std::sync::OnceLock::new(),
            announced: std::sync::atomic::AtomicUsize::new(0),
            writer: std::sync::OnceLock::new(),
            #[cfg(test)]
            crash: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            commits: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            retire_gate: tokio::sync::Mutex::new(()),
        });
        let (tx, rx) = mpsc::channel();
        let (retirer, retired) = mpsc::channel::<Retire>();
        let retiring = shared.clone();
        let spool_dir = dir.to_owned();
        std::thread::Builder::new()
            .name("spool-retire".into())
            .spawn(move || {
                // Ends after the writer, which holds the other end; so the
                // directory stays locked until both are done with it. One
                // thread retires, oldest first, so that a segment is never
                // gone before the older ones whose removals it records.
                let _lock = lock;
                for (files, done) in retired {
                    #[cfg(test)]
                    let _gate = retiring.retire_gate.blocking_lock();
                    // A crash stops this thread too, before it retires anything more.
                    #[cfg(test)]
                    if retiring.crash.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    retire(&spool_dir, &files, &retiring);
                    retiring
                        .retiring
                        .fetch_sub(1, std::sync::atomic::Ordering::Release);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            })
            .map_err(|e| err(format!("cannot start the retiring thread: {e}")))?;
        let writer = Writer {
            dir: dir.to_owned(),
            shared: shared.clone(),
            segment_max,
            next_seq: recovered.next_seq,
            reserved_seq: recovered.next_seq,
            next_segment: recovered.next_segment,
            active: None,
            retirer,
            concurrent: false,
            last_commit: Instant::now(),
            buf: Vec::new(),
            tail: Vec::new(),
            direct: recovered.direct,
        };
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        let _ = shared.writer.set(thread.thread().clone());
        Ok(Spool {
            inner: Arc::new(Inner {
                ops: tx,
                shared,
                max_size,
                damaged_at_open: recovered.damaged,
            }),
        })
    }

    /// Segments found damaged or unreadable when the spool was opened: each
    /// loses the rest of its file after the damage or the failed read, or all
    /// of it when it cannot be opened.
    pub fn damaged_at_open(&self) -> u64 {
        self.inner.damaged_at_open
    }

    /// Why the spool's writes are failing, if the last one failed lately
    /// (see [`WriteHealth::failing`]).
    pub fn failing(&self) -> Option<String> {
        self.inner.shared.health.failing()
    }

    /// What the spool holds now (written items only).
    pub fn usage(&self) -> Usage {
        let index = self.index();
        Usage {
            bytes: index.disk_bytes,
            items: index.items.len() as u64,
        }
    }

    /// Whether the spool is full: its bytes reached `max_size`, or what it
    /// last refused for want of room (up to [`FULL_FOR`]) still would not
    /// fit. Block padding and record headers mean the bytes alone may never
    /// reach the limit while every append is refused.
    pub fn is_full(&self) -> bool {
        let index = self.index();
        let want = index.refused.min(FULL_FOR);
        index.disk_bytes + index.reserved + want >= self.inner.max_size
    }

    /// Items the replay may take now.
    pub fn replayable(&self) -> u64 {
        self.index().replayable
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.shared.index.lock().expect("spool index lock")
    }

    /// Stores the records durably (on disk when this returns `Ok`), in order,
    /// or none of them: [`SpoolError::Full`] if they would pass `max_size`.
    /// Returns their sequence numbers. With `owned`, the caller delivers them
    /// itself, and must [`remove`](Self::remove) or [`release`](Self::release)
    /// each; the replay leaves them alone until then.
    pub async fn append(&self, records: &[Record], owned: bool) -> Result<Range<u64>, SpoolError> {
        self.append_announced(records, owned, None).await
    }

    /// [`append`](Self::append), for the append that `announced` announced
    /// (see [`Spool::announce`]).
    pub async fn append_announced(
        &self,
        records: &[Record],
        owned: bool,
        announced: Option<Announced>,
    ) -> Result<Range<u64>, SpoolError> {
        let now = now_ms();
        self.append_values(
            records.iter().map(|r| encode_parts(r, now)).collect(),
            owned,
            announced,
        )
        .await
    }

    /// Says that an append is on its way (a request being read or run
    /// through the pipeline), until the returned value is dropped or handed
    /// to [`append_announced`](Self::append_announced). The writer's commit
    /// delay waits for more appends to share a flush. While the relay has
    /// CPU to spare (the light delay, see [`Spool::set_pressure`]), once a
    /// group holds an announced append and no other is on its way, waiting
    /// longer gathers nothing, and the writer flushes at once: the answers
    /// wait less. At the CPU limit the writer waits its whole delay: there
    /// the requests not yet read are many, and fewer flushes leave them more
    /// CPU (measured both ways in `BENCHMARKS.md`).
    pub fn announce(&self) -> Announced {
        self.inner
            .shared
            .announced
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Announced(self.inner.shared.clone())
    }

    async fn append_values(
        &self,
        values: Vec<Encoded>,
        owned: bool,
        announced: Option<Announced>,
    ) -> Result<Range<u64>, SpoolError> {
        let size: u64 = values.iter().map(|v| (HEADER + v.len()) as u64).sum();
        {
            let mut index = self.index();
            if index.disk_bytes + index.reserved + size > self.inner.max_size {
                index.refused = size;
                return Err(SpoolError::Full);
            }
            index.reserved += size;
        }
        let (done, answer) = oneshot::channel();
        self.send(Op::Append {
            values,
            size,
            owned,
            announced: announced.is_some(),
            done,
        });
        // Arrived: counted out once the writer can see it.
        drop(announced);
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Removes acknowledged items: at once from what the spool holds, and
    /// on disk with the writer's next append, or on its own within about a
    /// second. A crash may therefore replay an item delivered in that second
    /// (a duplicate with the same event id), and so may a removal record that
    /// fails to reach the disk (it is logged).
    pub fn remove(&self, seqs: &[u64]) {
        let mut index = self.index();
        let index = &mut *index;
        for seq in seqs {
            if let Some(slot) = index.items.remove(seq) {
                if let Some(s) = index.segments.get_mut(&slot.segment) {
                    s.live -= 1;
                }
                index.replayable -= u64::from(!slot.owned);
                index.removed.push(*seq);
            }
        }
    }

    /// Writes and flushes what is waiting (removals, drained segments) now
    /// rather than within the second.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.send(Op::Sync { done });
        answer.await.map_err(|_| SpoolError::Closed)
    }

    /// Tells the writer whether the relay is short of CPU, which picks its
    /// commit delay (see [`CommitDelays`]). A spool nobody tells starts,
    /// and stays, under pressure.
    pub fn set_pressure(&self, on: bool) {
        self.inner
            .shared
            .pressure
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Has the writer tell `observe` how long each flush took: the write
    /// of a group and its `fdatasync`, what every answer in `spool` mode
    /// waits for besides the commit delay. Once; later calls are ignored.
    pub fn on_flush(&self, observe: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.inner.shared.on_flush.set(Box::new(observe));
    }

    /// The commit delay the writer uses now.
    pub fn commit_delay(&self) -> Duration {
        let shared = &self.inner.shared;
        shared.commit_delay(shared.pressed())
    }

    /// Hands owned items whose direct delivery failed to the replay.
    pub fn release(&self, seqs: &[u64]) {
        let mut released = 0;
        {
            let mut index = self.index();
            for seq in seqs {
                if let Some(slot) = index.items.get_mut(seq) {
                    if slot.owned {
                        slot.owned = false;
                        released += 1;
                    }
                }
            }
            index.replayable += released;
        }
        if released > 0 {
            self.inner.shared.replayable.notify_one();
        }
    }

    fn send(&self, op: Op) {
        // A send fails only when the writer is gone; the dropped `done` then says `Closed`.
        let _ = self.inner.ops.send(op);
    }

    /// Reads the oldest replayable items, up to `max_items` and about
    /// `max_bytes`, in order. Blocks on disk reads: call it from a blocking
    /// context. An item whose bytes the disk will not give back comes back
    /// as a damaged one does, its record an `Err` (logged here, with the
    /// error), for the caller to count and remove: a bad block must not
    /// stop the replay, and the items after it, for good.
    pub fn oldest(&self, max_items: usize, max_bytes: u64) -> Result<Vec<Spooled>, SpoolError> {
        /// An item to read: where it is.
        struct Pick {
            seq: u64,
            file: Arc<File>,
            direct: bool,
            offset: u64,
            len: u32,
        }
        impl Pick {
            /// Where the next record after this item starts.
            fn next(&self) -> u64 {
                self.offset + u64::from(self.len)
            }
        }
        let picked: Vec<Pick> = {
            let index = self.index();
            let mut picked = Vec::new();
            let mut bytes = 0u64;
            for (&seq, slot) in &index.items {
                if slot.owned {
                    continue;
                }
                let len = u64::from(slot.len);
                if picked.len() >= max_items || (bytes > 0 && bytes + len > max_bytes) {
                    break;
                }
                bytes += len;
                let segment = &index.segments[&slot.segment];
                picked.push(Pick {
                    seq,
                    file: segment.file.clone(),
                    direct: segment.direct,
                    offset: slot.offset,
                    len: slot.len,
                });
            }
            picked
        };
        // Outside the lock: a segment deleted meanwhile stays readable through
        // its handle. Items written one after the other (most are) are read
        // as one run, of up to about `READ_RUN` bytes.
        let mut out = Vec::with_capacity(picked.len());
        let mut buf = Vec::new();
        let decoded = |seq, bytes: &[u8]| {
            let (record, spooled_at_ms) = match decode(bytes) {
                Ok((record, at)) => (Ok(record), at),
                Err(why) => (Err(why), 0),
            };
            Spooled {
                seq,
                record,
                spooled_at_ms,
            }
        };
        let mut run_bytes = 0;
        for run in picked.chunk_by(|a, b| {
            run_bytes += u64::from(a.len) + HEADER as u64;
            let joined = Arc::ptr_eq(&a.file, &b.file)
                && a.next() + HEADER as u64 == b.offset
                && run_bytes < READ_RUN;
            if !joined {
                run_bytes = 0;
            }
            joined
        }) {
            let (first, last) = (&run[0], &run[run.len() - 1]);
            let from = first.offset;
            let span = (last.next() - from) as usize;
            match read_span(&first.file, first.direct, from, span, &mut buf) {
                Ok(at) => {
                    for item in run {
                        let start = at + (item.offset - from) as usize;
                        out.push(decoded(item.seq, &buf[start..start + item.len as usize]));
                    }
                }
                // Read again one by one: only what the disk refuses again is lost.
                Err(e) => {
                    tracing::warn!(item = first.seq, items = run.len(), error = %e, "cannot read spooled items; reading them one by one");
                    for item in run {
                        match read_span(
                            &item.file,
                            item.direct,
                            item.offset,
                            item.len as usize,
                            &mut buf,
                        ) {
                            Ok(at) => out.push(decoded(item.seq, &buf[at..at + item.len as usize])),
                            Err(e) => {
                                tracing::error!(item = item.seq, offset = item.offset, error = %e, "a spooled item cannot be read from the disk");
                                out.push(Spooled {
                                    seq: item.seq,
                                    record: Err(UNREADABLE),
                                    spooled_at_ms: 0,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Waits until items become replayable (or `timeout` passes).
    pub async fn wait_replayable(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.shared.replayable.notified()).await;
    }
}

/// What reading the segments at open found.
struct Recovered {
    index: Index,
    next_seq: u64,
    next_segment: u64,
    damaged: u64,
    /// Drained segment files kept for reuse.
    spares: Vec<PathBuf>,
    /// Segments are open for I/O around the page cache.
    direct: bool,
}

/// Rebuilds the index from the segment files, cuts a torn tail off the newest
/// one, and deletes the segments that hold no item. The segments are read
/// through the page cache here, then kept open around it if `direct` (and
/// the filesystem allows).
fn recover(dir: &Path, mut direct: bool) -> io::Result<Recovered> {
    let mut numbers = Vec::new();
    let mut spares = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_stem()
            .and_then(|s| s.to_str()?.parse::<u64>().ok());
        match (path.extension().and_then(|e| e.to_str()), number) {
            (Some(SEGMENT_EXT), Some(n)) => numbers.push(n),
            (Some(SPARE_EXT), Some(n)) => spares.push(n),
            _ => {}
        }
    }
    numbers.sort_unstable();
    let mut index = Index::default();
    let mut removed = HashSet::new();
    let mut floor = 0;
    let mut damaged = 0;
    for (i, &number) in numbers.iter().enumerate() {
        let path = segment_path(dir, number);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|file| Ok((file.metadata()?.len(), file)));
        let (len, file) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Not indexed, and so never deleted: a later start, or a
                // person, may still read it.
                damaged += 1;
                tracing::error!(
                    segment = %path.display(),
                    error = %e,
                    "a spool segment cannot be opened: its items cannot be replayed; left in place"
                );
                continue;
            }
        };
        let newest = i + 1 == numbers.len();
        let item = |seq, offset, body_len| {
            index.items.insert(
                seq,
                Slot {
                    segment: number,
                    offset,
                    len: body_len,
                    owned: false,
                },
            );
        };
        let len = match read_segment(&path, &file, len, newest, &mut floor, item, &mut removed) {
            Ok((end, whole)) => {
                damaged += u64::from(!whole);
                end
            }
            Err((at, e)) => {
                // Like a damaged header; but not cut off, even in the newest
                // segment: the bytes may read at a later start.
                damaged += 1;
                tracing::error!(
                    segment = %path.display(),
                    at,
                    error = %e,
                    "a spool segment cannot be read: the items after this offset cannot be replayed"
                );
                len
            }
        };
        let (file, segment_direct) = if direct {
            match open_segment(&path, false, &mut direct) {
                Ok(around) => (around, direct),
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot open a spool segment around the page cache; reading it through it");
                    (file, false)
                }
            }
        } else {
            (file, false)
        };
        index.disk_bytes += len;
        index.segments.insert(
            number,
            Segment {
                file: Arc::new(file),
                direct: segment_direct,
                len,
                live: 0,
            },
        );
    }
    for seq in &removed {
        index.items.remove(seq);
    }
    for slot in index.items.values() {
        index
            .segments
            .get_mut(&slot.segment)
            .expect("an item's segment")
            .live += 1;
    }
    index.replayable = index.items.len() as u64;
    // Never below what was reserved: a reused file may hold records numbered
    // above everything the segments show.
    let next_seq = match read_reserved(dir) {
        Some(reserved) => floor.max(reserved),
        // Lost or damaged while files remain: how far the numbers went is
        // unknown, and a stale record numbered above the next new one would
        // read as new (an old item again, or an old removal of a new item).
        // Far past anything a spool writes in its life.
        None if !numbers.is_empty() || !spares.is_empty() => {
            tracing::warn!(
                dir = %dir.display(),
                "the spool's {SEQ_FILE} is missing or damaged: numbering new items from far above the old ones"
            );
            floor + SEQ_JUMP
        }
        None => floor,
    };
    let next_segment = numbers.iter().chain(&spares).max().map_or(0, |n| n + 1);
    let spares = spares
        .into_iter()
        .map(|n| segment_path(dir, n).with_extension(SPARE_EXT))
        .collect();
    // What holds no item is not needed: oldest first, or all of it.
    delete(dir, &drained(dir, &mut index, None));
    Ok(Recovered {
        index,
        next_seq,
        next_segment,
        damaged,
        spares,
        direct,
    })
}

/// Reads a segment at open (see [`scan`]), and cuts off what follows its
/// last whole record when that is the zeros that fill the last write's last
/// block or, in the newest segment, a write a crash interrupted. Returns
/// the length it keeps and whether the rest of the segment is whole (a
/// damaged header in an older one loses the rest of it: logged here); or
/// where a read failed, and why (the items before it are kept).
fn read_segment(
    path: &Path,
    file: &File,
    len: u64,
    newest: bool,
    floor: &mut u64,
    item: impl FnMut(u64, u64, u32),
    removed: &mut HashSet<u64>,
) -> Result<(u64, bool), (u64, io::Error)> {
    let (end, at_end_record) = scan(file, len, floor, item, removed)?;
    let failed = |e| (end, e);
    // A file retired as a spare whose rename a crash undid: nothing in it.
    let wiped = end == 0 && len >= HEADER as u64 && {
        let mut head = [1u8; HEADER];
        file.read_exact_at(&mut head, 0).map_err(failed)?;
        head == [0; HEADER]
    };
    // The zeros that fill the last write's last block: the log's end.
    let zeros = end < len && len - end < BLOCK as u64 && {
        let mut rest = vec![1u8; (len - end) as usize];
        file.read_exact_at(&mut rest, end).map_err(failed)?;
        rest.iter().all(|&b| b == 0)
    };
    let mut whole = true;
    if zeros && !at_end_record {
        cut(path, file, end);
    } else if end < len && !at_end_record && !wiped {
        if newest {
            tracing::warn!(segment = %path.display(), at = end, "cutting off a write a crash interrupted");
            cut(path, file, end);
        } else {
            whole = false;
            tracing::error!(
                segment = %path.display(),
                at = end,
                lost_bytes = len - end,
                "a spool segment is damaged: the items after this offset cannot be read"
            );
        }
    }
    let kept = if newest || at_end_record || wiped || zeros {
        end
    } else {
        len
    };
    Ok((kept, whole))
}

/// Cuts a segment file back to `end`. A failure is logged and left: the
/// writer never appends to a segment found at open, and the next open tries
/// again (as damage then, unless it is the zeros of a last block).
fn cut(path: &Path, file: &File, end: u64) {
    if let Err(e) = file.set_len(end).and_then(|()| file.sync_all()) {
        tracing::warn!(segment = %path.display(), at = end, error = %e, "cannot cut off the end of a spool segment");
    }
}

/// Reads a segment's records up to the first that does not check out, or
/// to its end record; returns where it stopped and whether at an end record,
/// or where a read failed and why. Items go to `item` (sequence number,
/// offset of the bytes, length), removed sequence numbers to `removed`.
/// `floor` is the least number a record may carry: numbers only grow, so a
/// smaller one is a stale record of the file's earlier use (a reused file is
/// written over from its start).
fn scan(
    file: &File,
    len: u64,
    floor: &mut u64,
    mut item: impl FnMut(u64, u64, u32),
    removed: &mut HashSet<u64>,
) -> Result<(u64, bool), (u64, io::Error)> {
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= len {
        file.read_exact_at(&mut header, offset)
            .map_err(|e| (offset, e))?;
        let Some((kind, body_len, seq)) = parse_header(&header) else {
            break;
        };
        let body_at = offset + HEADER as u64;
        if seq < *floor || body_at + u64::from(body_len) > len {
            break;
        }
        match kind {
            KIND_ITEM => {
                *floor = seq + 1;
                item(seq, body_at, body_len);
            }
            KIND_REMOVED => {
                *floor = seq;
                let mut body = vec![0u8; body_len as usize];
                file.read_exact_at(&mut body, body_at)
                    .map_err(|e| (offset, e))?;
                match parse_removed(&body) {
                    Some(seqs) => removed.extend(seqs),
                    // Its items are replayed again: duplicates, not losses.
                    None => tracing::warn!(
                        at = offset,
                        "a damaged removal record in the spool; ignored"
                    ),
                }
            }
            _ => return Ok((offset, true)),
        }
        offset = body_at + u64::from(body_len);
    }
    Ok((offset, false))
}

/// A record header's kind, body length and sequence number, if it checks out.
fn parse_header(header: &[u8; HEADER]) -> Option<(u8, u32, u64)> {
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..16]) != crc || header[1..4] != [0; 3] || header[20..] != [0; 4] {
        return None;
    }
    let kind = header[0];
    if ![KIND_ITEM, KIND_REMOVED, KIND_END].contains(&kind) {
        return None;
    }
    let body_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    Some((kind, body_len, seq))
}

/// Appends a record: its header, then its body.
fn put_record(out: &mut Vec<u8>, kind: u8, seq: u64, body: &[u8]) {
    put_record_parts(out, kind, seq, &[body]);
}

/// Appends a record whose body is in parts.
fn put_record_parts(out: &mut Vec<u8>, kind: u8, seq: u64, body: &[&[u8]]) {
    let mut header = [0u8; HEADER];
    header[0] = kind;
    let len = body.iter().map(|part| part.len()).sum::<usize>();
    let len = u32::try_from(len).expect("records are far below 4 GiB");
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&header[..16]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    for part in body {
        out.extend_from_slice(part);
    }
}

/// Clears `buf` and makes room for `need` bytes, and the [`fill_block`]
/// after them, that start at a [`BLOCK`] boundary in memory, after zeros up
/// to it; returns where they start. Nothing written within that room moves
/// the buffer, so the start stays aligned.
fn align(buf: &mut Vec<u8>, need: usize) -> usize {
    buf.clear();
    buf.reserve(need.next_multiple_of(BLOCK) + BLOCK);
    let lead = buf.as_ptr().align_offset(BLOCK);
    buf.resize(lead, 0);
    lead
}

/// Fills `buf` with zeros from its end up to the next [`BLOCK`] boundary
/// counted from `start`.
fn fill_block(buf: &mut Vec<u8>, start: usize) {
    let end = start + (buf.len() - start).next_multiple_of(BLOCK);
    buf.resize(end, 0);
}

/// Reads `len` bytes at `offset` of a segment into `buf`; returns where
/// they start in it. A file open for I/O around the page cache is read in
/// whole blocks, into an aligned buffer.
fn read_span(
    file: &File,
    direct: bool,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    if !direct {
        buf.clear();
        buf.resize(len, 0);
        file.read_exact_at(buf, offset)?;
        return Ok(0);
    }
    let from = offset - offset % BLOCK as u64;
    let skip = (offset - from) as usize;
    let span = (skip + len).next_multiple_of(BLOCK);
    let start = align(buf, span);
    buf.resize(start + span, 0);
    // The file may end within the last block (the newest segment's end).
    let mut got = 0;
    while got < skip + len {
        match file.read_at(&mut buf[start + got..start + span], from + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(start + skip)
}

/// Opens a segment file for reading and writing: around the page cache
/// (`O_DIRECT`) if `direct` and the filesystem allows it, else through it.
/// Clears `direct` when refused, so that the next segment does not ask again.
///
/// Around the page cache, the writer copies a group once, into its own
/// buffer, and the disk takes it from there; through it, the kernel copied
/// it again, then tracked and wrote back every page at the flush: the
/// writer's CPU per item fell by about a quarter (`BENCHMARKS.md`). It also
/// keeps the spool out of the page cache. A segment's blocks are then also read
/// around the cache, since a read through it may keep a page that a direct
/// write is changing. Filesystems without it (tmpfs) refuse it with `EINVAL`.
fn open_segment(path: &Path, create: bool, direct: &mut bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(create);
    if *direct {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut around = options.clone();
            around.custom_flags(libc::O_DIRECT);
            match around.open(path) {
                Ok(file) => return Ok(file),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            path = %path.display(),
            "the spool's filesystem does not take O_DIRECT: its I/O goes through the page cache"
        );
        *direct = false;
        // The refused open may have created the file: it did not exist before.
        options.create_new(false).create(create);
    }
    options.open(path)
}

/// A removal record's body: a CRC-32 of the rest, then the sequence numbers.
fn removed_body(seqs: &[u64]) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    for seq in seqs {
        body.extend_from_slice(&seq.to_le_bytes());
    }
    let crc = crc32fast::hash(&body[4..]);
    body[..4].copy_from_slice(&crc.to_le_bytes());
    body
}

fn parse_removed(body: &[u8]) -> Option<Vec<u64>> {
    let (crc, seqs) = body.split_at_checked(4)?;
    if crc32fast::hash(seqs) != u32::from_le_bytes(crc.try_into().ok()?) || seqs.len() % 8 != 0 {
        return None;
    }
    Some(
        seqs.chunks_exact(8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.{SEGMENT_EXT}"))
}

/// Takes the oldest segments out of the index while they hold no item,
/// except `active` (which the writer reuses); without an active segment (at
/// open) and with no item held, every segment. Returns their files, to delete.
fn drained(dir: &Path, index: &mut Index, active: Option<u64>) -> Vec<PathBuf> {
    let everything = index.items.is_empty() && active.is_none();
    let mut files = Vec::new();
    while let Some((&number, segment)) = index.segments.first_key_value() {
        if !(everything || (segment.live == 0 && Some(number) != active)) {
            break;
        }
        index.disk_bytes -= segment.len;
        index.segments.remove(&number);
        files.push(segment_path(dir, number));
    }
    files
}

/// Keeps drained segment files for reuse, up to [`MAX_SPARES`], and deletes
/// the rest, oldest first. A kept file's first header is wiped and flushed
/// before it is renamed, so that it never reads as a segment again (the
/// rename need not reach the disk: a wiped segment reads as empty). Each
/// deletion is flushed to the directory before the next file is touched:
/// else a power loss could undo it while keeping what comes after, which
/// may be the only record that its items were removed.
fn retire(dir: &Path, files: &[PathBuf], shared: &Shared) {
    for path in files {
        if shared.spares.lock().expect("spares lock").len() >= MAX_SPARES {
            delete(dir, std::slice::from_ref(path));
            continue;
        }
        let spare = path.with_extension(SPARE_EXT);
        let kept = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| {
                file.write_all_at(&[0; HEADER], 0)?;
                file.sync_data()
            })
            .and_then(|()| std::fs::rename(path, &spare));
        match kept {
            Ok(()) => shared.spares.lock().expect("spares lock").push(spare),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "cannot keep a drained spool segment for reuse");
                delete(dir, std::slice::from_ref(path));
            }
        }
    }
}

/// Deletes drained segment files in `dir`, in order, each deletion flushed
/// to the directory before the next (see [`retire`]). A failure is logged: a
/// segment left behind only replays its items again (duplicates).
fn delete(dir: &Path, files: &[PathBuf]) {
    for path in files {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::error!(segment = %path.display(), error = %e, "cannot delete a drained spool segment");
            continue;
        }
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot flush the spool directory after deleting a segment");
        }
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// A segment past this size is followed by a new one.
    segment_max: u64,
    next_seq: u64,
    /// Numbers below this are reserved in [`SEQ_FILE`]; see [`Writer::reserve`].
    reserved_seq: u64,
    next_segment: u64,
    /// The segment written to, and its length; `None` until the first write,
    /// and after a failed write that could not be cut off (the next write
    /// starts a new segment, so nothing is written after a torn record).
    active: Option<(u64, Arc<File>, u64)>,
    /// Drained segment files, to the thread that keeps or deletes them.
    retirer: mpsc::Sender<Retire>,
    /// The last group held more than one append: requests are concurrent.
    concurrent: bool,
    /// When the last group or tick was written.
    last_commit: Instant,
    /// The last commit's buffer, reused.
    buf: Vec<u8>,
    /// The active segment's bytes since its last block boundary: the next
    /// write starts at that boundary, with them.
    tail: Vec<u8>,
    /// New segments are opened for I/O around the page cache (see
    /// [`open_segment`]); cleared when the filesystem refuses it.
    direct: bool,
}

/// What [`Spool::on_flush`] is given.
type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// An append on its way (see [`Spool::announce`]); counted out when dropped.
pub struct Announced(Arc<Shared>);

impl Drop for Announced {
    fn drop(&mut self) {
        let before = self
            .0
            .announced
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if before == 1 {
            if let Some(writer) = self.0.writer.get() {
                writer.unpark();
            }
        }
    }
}

impl std::fmt::Debug for Announced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Announced")
    }
}

/// Segment files for the retiring thread, and whom to tell when they are done.
type Retire = (Vec<PathBuf>, Option<mpsc::Sender<()>>);

impl Writer {
    /// Takes every waiting operation, writes them as one, then answers each.
    fn run(mut self, rx: &mpsc::Receiver<Op>) {
        loop {
            // Woken by work, or once a second to write the removals made meanwhile.
            let wait = FLUSH_REMOVALS_EVERY.saturating_sub(self.last_commit.elapsed());
            let first = match rx.recv_timeout(wait) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group: Vec<Op> = first.into_iter().collect();
            // Read once: the delay and whether it may end early go together.
            let pressed = self.shared.pressed();
            let delay = self.shared.commit_delay(pressed);
            if !group.is_empty() && self.concurrent && !delay.is_zero() {
                // Requests are arriving together: let more of them join this
                // flush. Flushes cost far more CPU than the bytes they carry;
                // the wait is longer when CPU is short (see `CommitDelays`),
                // and with CPU to spare it ends when nothing more is on its way.
                let announced = matches!(
                    group[0],
                    Op::Append {
                        announced: true,
                        ..
                    }
                );
                self.gather(delay, announced && !pressed);
            }
            while !group.is_empty() && group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        #[cfg(test)]
        if self.shared.crash.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // Stopping: the last removals reach the disk, so they are not replayed again.
        self.commit(Vec::new());
    }

    /// Waits `delay` for more operations to join a group; with `early_end`
    /// (the group holds an announced append, and the delay is the light
    /// one), only while another announced append is on its way.
    fn gather(&self, delay: Duration, early_end: bool) {
        if !early_end {
            std::thread::sleep(delay);
            return;
        }
        let end = Instant::now() + delay;
        // The last announced append to arrive unparks this thread; a stale
        // unpark only makes one more pass.
        while self
            .shared
            .announced
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
        {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
    }

    /// Writes a group of operations and the removals made since the last
    /// write, as one write and one flush; an empty group is the
    /// once-a-second tick, which writes only removals.
    fn commit(&mut self, group: Vec<Op>) {
        let appends = group
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count();
        self.concurrent = appends > 1;
        let waiter = group.iter().any(|op| matches!(op, Op::Sync { .. }));
        let removals =
            std::mem::take(&mut self.shared.index.lock().expect("spool index lock").removed);
        let removed = (!removals.is_empty()).then(|| removed_body(&removals));
        // The appends' bytes, as reserved in the index when they were sent.
        let reserved: u64 = group
            .iter()
            .map(|op| match op {
                Op::Append { size, .. } => *size,
                Op::Sync { .. } => 0,
                #[cfg(test)]
                Op::Tick { .. } => 0,
            })
            .sum();
        let new = reserved as usize + removed.as_ref().map_or(0, |body| HEADER + body.len());
        // The segment is chosen before the buffer, which starts with its tail.
        let ready = if new > 0 { self.make_room() } else { Ok(()) };
        // Kept between commits: a fresh buffer of a group's size costs page
        // faults each time.
        let mut buf = std::mem::take(&mut self.buf);
        let (start, first) = self.begin(&mut buf, new);
        // Each item to be written: its sequence number, where its bytes start
        // after the tail, their length, and whether a delivery owns it.
        let mut placed = Vec::new();
        let mut numbered = Ok(());
        for op in &group {
            if let Op::Append { values, owned, .. } = op {
                numbered = numbered.and_then(|()| self.reserve(values.len() as u64));
                for value in values {
                    let len = u32::try_from(value.len()).expect("items are far below 4 GiB");
                    placed.push((self.next_seq, buf.len() - first + HEADER, len, *owned));
                    put_record_parts(&mut buf, KIND_ITEM, self.next_seq, &value.parts());
                    self.next_seq += 1;
                }
            }
        }
        if let Some(body) = &removed {
            // Numbered as the next item will be, for reading's stale-record check.
            put_record(&mut buf, KIND_REMOVED, self.next_seq, body);
        }
        // Numbers are not reused even after a failed write: part of it may be
        // on disk, and reading the log needs them to grow.
        let written = ready
            .and(numbered)
            .and_then(|()| self.write(&mut buf, start, first));
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        // Counted from every commit, ticks included: counted from the last
        // write, an idle spool's writer would tick without pause.
        self.last_commit = Instant::now();
        #[cfg(test)]
        self.shared
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        let shared = self.shared.clone();
        let mut guard = shared.index.lock().expect("spool index lock");
        let index = &mut *guard;
        index.reserved -= reserved;
        if let Some((number, _, len)) = &self.active {
            if let Some(s) = index.segments.get_mut(number) {
                index.disk_bytes = index.disk_bytes - s.len + *len;
                s.len = *len;
            }
        }
        let mut replayable = 0;
        match &written {
            Ok(Some((segment, base))) => {
                for &(seq, at, len, owned) in &placed {
                    let slot = Slot {
                        segment: *segment,
                        offset: base + at as u64,
                        len,
                        owned,
                    };
                    index.items.insert(seq, slot);
                    replayable += u64::from(!owned);
                }
                if let Some(s) = index.segments.get_mut(segment) {
                    s.live += placed.len() as u64;
                }
            }
            Ok(None) => {}
            // Written again with the next group.
            Err(_) => index.removed.extend_from_slice(&removals),
        }
        index.replayable += replayable;
        let active = self.active.as_ref().map(|(n, _, _)| *n);
        let files = drained(&self.dir, index, active);
        drop(guard);
        if waiter {
            // A sync returns once drained segments are gone too.
            let (done, wait) = mpsc::channel();
            self.retire(files, Some(done));
            let _ = wait.recv();
        } else if !files.is_empty() {
            // Wiping and flushing, or freeing a large file's blocks, takes
            // milliseconds: not on the writer's path.
            self.retire(files, None);
        }
        let retiring = shared.retiring.load(std::sync::atomic::Ordering::Acquire);
        let mut index = shared.index.lock().expect("spool index lock");
        // Only this thread adds items: if none is held now, none is until it writes.
        if index.items.is_empty() && retiring == 0 {
            self.rewind(&mut index);
        }
        drop(index);
        if replayable > 0 {
            // A permit is stored if the replay task is not waiting right now.
            shared.replayable.notify_one();
        }
        match &written {
            Ok(Some(_)) => shared.health.ok(),
            Ok(None) => {}
            Err(e) => {
                shared.health.failed(e);
                tracing::error!(error = %e, "spool write failed");
            }
        }

        let mut seq = placed.first().map_or(self.next_seq, |p| p.0);
        for op in group {
            match op {
                Op::Append { values, done, .. } => {
                    let n = values.len() as u64;
                    let _ = done.send(match &written {
                        Ok(_) => Ok(seq..seq + n),
                        Err(e) => Err(SpoolError::Storage(e.to_string())),
                    });
                    seq += n;
                }
                Op::Sync { done } => {
                    let _ = done.send(());
                }
                #[cfg(test)]
                Op::Tick { done } => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Makes sure `n` more numbers are reserved on disk before they are used:
    /// numbers must never repeat, even after a restart that finds no segment
    /// (a reused file still holds records of its earlier use).
    fn reserve(&mut self, n: u64) -> io::Result<()> {
        if self.next_seq + n <= self.reserved_seq {
            return Ok(());
        }
        let upto = self.next_seq + n + SEQ_BLOCK;
        write_reserved(&self.dir, upto)?;
        self.reserved_seq = upto;
        Ok(())
    }

    /// Starts `buf` for a write of `new` bytes to the active segment, with
    /// its tail first; returns where the tail and the new bytes start in it
    /// (see [`Writer::write`]).
    fn begin(&self, buf: &mut Vec<u8>, new: usize) -> (usize, usize) {
        let start = align(buf, self.tail.len() + new);
        buf.extend_from_slice(&self.tail);
        (start, buf.len())
    }

    /// Makes sure there is an active segment with room (starting a new one
    /// if needed).
    fn make_room(&mut self) -> io::Result<()> {
        if self
            .active
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.segment_max)
        {
            self.rotate()?;
        }
        Ok(())
    }

    /// Writes what `buf` holds from `start` (the tail, then from `first` the
    /// new records) at the end of the active segment, as whole blocks, and
    /// flushes it. Returns the segment and where the new records start in it
    /// (`None` if there are none).
    fn write(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        first: usize,
    ) -> io::Result<Option<(u64, u64)>> {
        let end = buf.len();
        if end == first {
            return Ok(None);
        }
        let (number, file, len) = self.active.as_mut().expect("an active segment");
        let base = *len;
        let at = base - (first - start) as u64;
        debug_assert!(
            at.is_multiple_of(BLOCK as u64) && buf[start..].as_ptr().addr().is_multiple_of(BLOCK)
        );
        fill_block(buf, start);
        let started = Instant::now();
        match file
            .write_all_at(&buf[start..], at)
            .and_then(|()| file.sync_data())
        {
            Ok(()) => {
                if let Some(observe) = self.shared.on_flush.get() {
                    observe(started.elapsed());
                }
                *len += (end - first) as u64;
                let kept = (end - start) % BLOCK;
                self.tail.clear();
                self.tail.extend_from_slice(&buf[end - kept..end]);
                Ok(Some((*number, base)))
            }
            Err(e) => {
                // What reached the file is cut off, so that the next write
                // follows the last whole record; if that fails too, the next
                // write starts a new segment.
                if file.set_len(base).is_err() {
                    self.active = None;
                }
                Err(e)
            }
        }
    }

    /// Hands drained segment files to the retiring thread, which tells
    /// `done` once they are gone.
    fn retire(&self, files: Vec<PathBuf>, done: Option<mpsc::Sender<()>>) {
        self.shared
            .retiring
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.retirer.send((files, done)).is_err() {
            // The retiring thread is gone (it panicked): nothing is pending.
            self.shared
                .retiring
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// With no item held, the active segment holds nothing needed: it is
    /// written over from its start, so that a drained spool takes no room.
    /// Reading stops at the first stale record (its number is smaller).
    /// Called only once no older segment's retirement is pending: the
    /// records written over may be the removals of its items, and a crash
    /// before it is gone would replay them.
    fn rewind(&mut self, index: &mut Index) {
        let Some((number, _, len)) = &mut self.active else {
            return;
        };
        index.disk_bytes -= *len;
        *len = 0;
        self.tail.clear();
        if let Some(s) = index.segments.get_mut(number) {
            s.len = 0;
        }
    }

    /// Starts a new segment (a spare file if there is one), after ending
    /// the one it follows with an end record.
    fn rotate(&mut self) -> io::Result<()> {
        if self.active.is_some() {
            // What follows the end record is stale bytes of a reused file.
            let mut end = Vec::new();
            let (start, first) = self.begin(&mut end, HEADER);
            put_record(&mut end, KIND_END, self.next_seq, &[]);
            self.write(&mut end, start, first)?;
        }
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.dir, number);
        let spare = self.shared.spares.lock().expect("spares lock").pop();
        let file = match spare {
            Some(spare) => std::fs::rename(&spare, &path)
                .and_then(|()| open_segment(&path, false, &mut self.direct)),
            None => open_segment(&path, true, &mut self.direct),
        }?;
        // The file's new name reaches the disk before anything in it is acknowledged.
        File::open(&self.dir)?.sync_all()?;
        let file = Arc::new(file);
        self.shared
            .index
            .lock()
            .expect("spool index lock")
            .segments
            .insert(
                number,
                Segment {
                    file: file.clone(),
                    direct: self.direct,
                    len: 0,
                    live: 0,
                },
            );
        self.active = Some((number, file, 0));
        self.tail.clear();
        Ok(())
    }
}

/// Creates `dir` and its missing parents, and flushes each new one's entry
/// in its parent: else a power loss soon after the first start could take
/// the directory away, and with it what was acknowledged in it.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_durably(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => File::open(parent)?.sync_all(),
        // Another process made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the numbers reserved so far end, if the file says so.
fn read_reserved(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(SEQ_FILE)).ok()?;
    let (value, crc) = bytes.split_at_checked(8)?;
    (crc32fast::hash(value).to_le_bytes() == crc)
        .then(|| u64::from_le_bytes(value.try_into().expect("8 bytes")))
}

/// Records durably that numbers below `upto` are reserved: a new file,
/// flushed, renamed over the old, and the directory flushed.
fn write_reserved(dir: &Path, upto: u64) -> io::Result<()> {
    let tmp = dir.join(format!("{SEQ_FILE}.tmp"));
    let mut bytes = upto.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let file = File::create(&tmp)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SEQ_FILE))?;
    File::open(dir)?.sync_all()
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
    encode_parts(record, spooled_at_ms).parts().concat()
}

/// An encoded record in two parts: all but the payload, and the payload,
/// shared with the record rather than copied (the writer copies it once).
struct Encoded {
    head: Vec<u8>,
    payload: Bytes,
}

impl Encoded {
    fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.payload]
    }
}

/// [`encode`], in parts.
fn encode_parts(record: &Record, spooled_at_ms: u64) -> Encoded {
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
    let mut head = Vec::with_capacity(len);
    head.extend_from_slice(&[0; 4]);
    head.push(VERSION);
    head.extend_from_slice(&spooled_at_ms.to_le_bytes());
    // Which optional headers are present (an empty value is a value).
    head.push(u8::from(h.fingerprint.is_some()) | (u8::from(h.sample_rate.is_some()) << 1));
    for field in fields {
        let n = u32::try_from(field.len()).expect("items are far below 4 GiB");
        head.extend_from_slice(&n.to_le_bytes());
        head.extend_from_slice(field);
    }
    // The payload's length ends the head; the payload follows it.
    let n = u32::try_from(record.payload.len()).expect("items are far below 4 GiB");
    head.extend_from_slice(&n.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[4..]);
    crc.update(&record.payload);
    head[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    Encoded {
        head,
        payload: record.payload.clone(),
    }
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
    /// The writer's commits so far, ticks included.
    pub(crate) fn commits(&self) -> u64 {
        self.inner
            .shared
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits as the writer's once-a-second tick does, now.
    pub(crate) async fn tick(&self) {
        let (done, answer) = oneshot::channel();
        self.send(Op::Tick { done });
        answer.await.expect("the writer answers");
    }

    /// Drops the spool as a crash would: what waits for the writer (removals
    /// not written yet) is not written, and drained segments not retired yet
    /// stay.
    pub(crate) fn crash(self) {
        self.inner
            .shared
            .crash
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Appends raw bytes as items, as a damaged disk might hold them.
    pub(crate) async fn append_raw(&self, values: Vec<Vec<u8>>) -> Range<u64> {
        let values = values
            .into_iter()
            .map(|head| Encoded {
                head,
                payload: Bytes::new(),
            })
            .collect();
        self.append_values(values, false, None)
            .await
            .expect("append")
    }
}

#[cfg(test)]
mod tests;
