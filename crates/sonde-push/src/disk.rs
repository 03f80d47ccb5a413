//! The durable queue: every batch is written to a segment file on disk before it is sent, and
//! read back from disk by the sender, so an outage of the receiver longer than memory allows,
//! an agent restart or a `kill -9` lose nothing but what the size cap pushes out (counted).
//!
//! Layout of the queue directory (one per exporter):
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments named by the id of their first record. A record is
//!   `[payload length u32][crc32 u32][points u64][payload]` (little endian; the CRC covers the
//!   points and the payload). Appends go to the newest segment until it reaches the segment
//!   size; a segment the sender has read to its end is deleted.
//! - `ack`: the id of the next record to send, and whether it was in flight (sent, not yet
//!   acknowledged) when it was written; one small in-place write per batch.
//! - `lock`: held (`flock`) while a process uses the directory.
//!
//! Memory stays bounded however long the queue grows: the sender reads one record at a time.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sonde_core::diag;
use sonde_core::{Counter, Gauge, Registry};

/// When queued data reaches the disk itself, not only the page cache.
/// In a configuration file: `"collection"` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[non_exhaustive]
pub enum Fsync {
    /// `fdatasync` the segment and the ack file after each collection's batches are written
    /// (one sync per interval): a power loss loses at most the collection being written.
    #[default]
    #[serde(rename = "collection")]
    EveryCollection,
    /// Never sync: the data survives a crash or `kill -9` of the process (it sits in the
    /// kernel's page cache), not a power loss or a kernel crash.
    #[serde(rename = "never")]
    Never,
}

/// Settings of a durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskQueueConfig {
    /// The directory, one per exporter (created if missing). Two processes cannot share it.
    pub dir: PathBuf,
    /// Most bytes on disk; when a batch would pass it, the oldest segment is deleted and its
    /// unsent points are counted as dropped (reason `queue_full`).
    pub max_bytes: u64,
    /// Size at which a new segment file is started (0: `max_bytes / 16`, between 64 KiB and
    /// 32 MiB). Smaller segments free space sooner; the cap drops a whole segment at a time.
    pub segment_bytes: u64,
    /// When data is synced to the disk.
    pub fsync: Fsync,
}

impl DiskQueueConfig {
    /// A queue in `dir` of at most 256 MiB, synced after each collection.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskQueueConfig {
            dir: dir.into(),
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 0,
            fsync: Fsync::EveryCollection,
        }
    }

    fn segment_size(&self) -> u64 {
        if self.segment_bytes > 0 {
            self.segment_bytes.min(self.max_bytes)
        } else {
            (self.max_bytes / 16).clamp(64 * 1024, 32 * 1024 * 1024)
        }
    }
}

/// The smallest cap accepted.
pub const MIN_QUEUE_BYTES: u64 = 4096;

/// A durable queue as an exporter's section of a configuration file sets it: `queue_dir`
/// (none: the queue is in memory), `queue_max_size` and `queue_fsync`.
///
/// ```
/// use sonde_push::disk::QueueSettings;
/// use sonde_settings::Settings;
///
/// let settings = QueueSettings { queue_max_size: Some(1 << 20), ..Default::default() };
/// assert_eq!(settings.validate()[0].message, "`queue_max_size` needs a `queue_dir`");
/// assert_eq!(settings.queue(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// The queue's directory, one per exporter.
    pub queue_dir: Option<PathBuf>,
    /// Most bytes on disk (default 256 MiB).
    #[serde(deserialize_with = "some_size")]
    pub queue_max_size: Option<usize>,
    /// When data is synced to the disk (default after each collection).
    pub queue_fsync: Option<Fsync>,
}

fn some_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    sonde_settings::size::deserialize(d).map(Some)
}

impl QueueSettings {
    /// The queue these settings ask for, if any.
    pub fn queue(&self) -> Option<DiskQueueConfig> {
        let mut q = DiskQueueConfig::new(self.queue_dir.as_ref()?);
        if let Some(n) = self.queue_max_size {
            q.max_bytes = n as u64;
        }
        if let Some(f) = self.queue_fsync {
            q.fsync = f;
        }
        Some(q)
    }
}

impl sonde_settings::Settings for QueueSettings {
    fn expect(key: &str) -> Option<sonde_settings::Expect> {
        match key {
            "queue_max_size" => Some(sonde_settings::Expect::size(
                MIN_QUEUE_BYTES as usize..=1 << 40,
                256 << 20,
            )),
            "queue_fsync" => Some(sonde_settings::Expect::OneOf(&["collection", "never"])),
            _ => None,
        }
    }

    /// Besides the ranges, what opening the queue checks first ([`check`]): the directory can
    /// be created and written.
    fn validate(&self) -> Vec<sonde_settings::Problem> {
        use sonde_settings::Problem;
        let mut problems = Vec::new();
        let Some(q) = self.queue() else {
            let set = [
                ("queue_max_size", self.queue_max_size.is_some()),
                ("queue_fsync", self.queue_fsync.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, set)| *set) {
                problems.push(Problem::new(
                    key,
                    format!("`{key}` needs a `queue_dir`"),
                    "add queue_dir = \"/var/lib/sonde-agent/queue/NAME\" for a durable queue, or remove it",
                ));
            }
            return problems;
        };
        if let Some(p) = self
            .queue_max_size
            .and_then(|n| Self::within("queue_max_size", n))
        {
            return vec![p];
        }
        if let Err(e) = check(&q) {
            problems.push(Problem::new(
                "queue_dir",
                e.to_string(),
                "the agent needs to create and write this directory (StateDirectory= under systemd, a volume in a container)",
            ));
        }
        problems
    }
}

/// Why a durable queue could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The directory or a file in it could not be created, read or written.
    #[error(
        "durable queue {}: {what}: {source}; give a directory this process can create and write",
        path.display()
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "durable queue {} is in use by another process; give each exporter (and each agent) a directory of its own",
        path.display()
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The cap is too small to be useful.
    #[error("durable queue max_bytes is {0}; it must be at least {MIN_QUEUE_BYTES} bytes")]
    TooSmall(u64),
    /// The exporter's batches cannot be written to disk.
    #[error(
        "the {0} exporter has no durable queue (its requests cannot be written to disk); remove the queue setting"
    )]
    Unsupported(&'static str),
}

/// What opening the queue checks first, without taking it: the cap, and that the directory
/// can be created and a file in it written (a configuration check, while the queue may be in
/// use by a running process).
pub fn check(cfg: &DiskQueueConfig) -> Result<(), QueueError> {
    prepare(cfg).map(|_| ())
}

/// The cap checked, the directory created, its lock file opened (not locked).
fn prepare(cfg: &DiskQueueConfig) -> Result<File, QueueError> {
    if cfg.max_bytes < MIN_QUEUE_BYTES {
        return Err(QueueError::TooSmall(cfg.max_bytes));
    }
    std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir, "cannot create the directory"))?;
    let lock = cfg.dir.join("lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io_err(&lock, "cannot write in the directory"))
}

/// Turns an I/O error on `path` into a [`QueueError`] saying what was being done.
fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> QueueError {
    let path = path.to_path_buf();
    move |source| QueueError::Io { path, what, source }
}

/// Whether a process (this one included) holds the queue in `dir` now. A stopping exporter
/// lets go of it when its thread ends: callers that start another on the same directory wait
/// for this to turn false.
pub fn in_use(dir: &Path) -> bool {
    let Ok(lock) = OpenOptions::new().write(true).open(dir.join("lock")) else {
        return false;
    };
    match lock.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

const HEADER: u64 = 16;
const ACK_MAGIC: u32 = 0x4b41_5153; // "SQAK"

/// Exporter self-metrics of a durable queue.
pub(crate) struct DiskMetrics {
    bytes: Option<Gauge>,
    corrupt: Option<Counter>,
    redelivered: Option<Counter>,
}

impl DiskMetrics {
    pub(crate) fn register(registry: &Registry, exporter: &'static str) -> DiskMetrics {
        use crate::telemetry::{QUEUE_CORRUPT, QUEUE_DISK_BYTES, QUEUE_REDELIVERED, per_exporter};
        let bytes = registry
            .gauge(QUEUE_DISK_BYTES)
            .description("Bytes an exporter's durable queue holds on disk.")
            .unit(sonde_core::Unit::Bytes);
        let corrupt = registry.counter(QUEUE_CORRUPT).description(
            "Corrupt regions of an exporter's durable queue that were skipped (the rest of a segment from the first bad record).",
        );
        let redelivered = registry.counter(QUEUE_REDELIVERED).description(
            "Data points sent again after a restart because their request was in flight when the previous process stopped (possible duplicates).",
        );
        DiskMetrics {
            bytes: per_exporter(bytes, exporter),
            corrupt: per_exporter(corrupt, exporter),
            redelivered: per_exporter(redelivered, exporter),
        }
    }
}

struct Segment {
    first_id: u64,
    /// Bytes of valid records; anything after is ignored.
    len: u64,
    records: u64,
    points: u64,
}

/// Why a record could not be read.
enum ReadError {
    /// The bytes are not a record: the rest of the segment is skipped.
    Corrupt(String),
    /// The file cannot be read now: try again later.
    Io(String),
}

/// One record read for sending.
pub(crate) struct Record {
    pub id: u64,
    pub points: u64,
    pub payload: Vec<u8>,
}

struct InFlight {
    id: u64,
    next_off: u64,
    points: u64,
    /// Its segment was deleted by the cap meanwhile.
    orphaned: bool,
}

/// What making room for a record pushed out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Dropped {
    pub records: u64,
    pub points: u64,
}

pub(crate) struct DiskQueue {
    dir: PathBuf,
    exporter: &'static str,
    _lock: File,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: Fsync,
    segments: VecDeque<Segment>,
    /// Writer of `segments.back()`; `None` until the next append starts a new segment.
    active: Option<File>,
    reader: Option<(u64, File)>,
    /// The next record to send: its id, its offset in `segments.front()`, and the points of
    /// the records before it in that segment.
    cursor_id: u64,
    cursor_off: u64,
    cursor_points: u64,
    in_flight: Option<InFlight>,
    next_id: u64,
    total_bytes: u64,
    ack: File,
    /// The record at the cursor was in flight when the previous process stopped.
    redeliver: bool,
    dirty: bool,
    metrics: DiskMetrics,
    scratch: Vec<u8>,
    /// What corrupt regions held, for the engine to count as dropped.
    skipped: Dropped,
}

fn seg_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.seg"))
}

fn crc(points: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&points.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the records of a segment file: (valid length, records, points, points of the records
/// before `stop_at` (an id), offset of `stop_at`).
struct Scan {
    valid: u64,
    records: u64,
    points: u64,
    before_cursor: Option<(u64, u64)>,
    file_len: u64,
    error: Option<String>,
}

fn scan(path: &Path, first_id: u64, cursor: u64, max_record: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = io::BufReader::with_capacity(256 * 1024, file);
    let mut s = Scan {
        valid: 0,
        records: 0,
        points: 0,
        before_cursor: None,
        file_len,
        error: None,
    };
    let mut payload = Vec::new();
    loop {
        if first_id + s.records == cursor {
            s.before_cursor = Some((s.points, s.valid));
        }
        if s.valid == file_len {
            break;
        }
        let mut h = [0u8; HEADER as usize];
        if file_len - s.valid < HEADER {
            s.error = Some(format!("a cut record header at offset {}", s.valid));
            break;
        }
        r.read_exact(&mut h)?;
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()) as u64;
        let sum = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let points = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        if len > max_record || s.valid + HEADER + len > file_len {
            s.error = Some(format!(
                "a record of {len} bytes at offset {} runs past the end of the file",
                s.valid
            ));
            break;
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload)?;
        if crc(points, &payload) != sum {
            s.error = Some(format!("a checksum mismatch at offset {}", s.valid));
            break;
        }
        s.valid += HEADER + len;
        s.records += 1;
        s.points += points;
    }
    Ok(s)
}

impl DiskQueue {
    pub(crate) fn open(
        cfg: &DiskQueueConfig,
        exporter: &'static str,
        metrics: DiskMetrics,
    ) -> Result<DiskQueue, QueueError> {
        let lock = prepare(cfg)?;
        let dir = cfg.dir.clone();
        let lock_path = dir.join("lock");
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked { path: dir });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "cannot lock")(e));
            }
        }
        let ack_path = dir.join("ack");
        let ack = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&ack_path)
            .map_err(io_err(&ack_path, "cannot open the ack file"))?;
        let mut raw = [0u8; 24];
        let (acked, was_in_flight) = match ack.read_exact_at(&mut raw, 0) {
            Ok(()) => {
                let magic = u32::from_le_bytes(raw[0..4].try_into().unwrap_or_default());
                let id = u64::from_le_bytes(raw[4..12].try_into().unwrap_or_default());
                let flags = u32::from_le_bytes(raw[12..16].try_into().unwrap_or_default());
                let sum = u32::from_le_bytes(raw[16..20].try_into().unwrap_or_default());
                if magic == ACK_MAGIC && crc32fast::hash(&raw[0..16]) == sum {
                    (Some(id), flags & 1 == 1)
                } else {
                    diag::warn(format_args!(
                        "{exporter} exporter: the durable queue's ack file {} is damaged; sending the queue from its oldest record (some requests may be sent twice)",
                        ack_path.display()
                    ));
                    (None, false)
                }
            }
            Err(_) => (None, false),
        };

        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir, "cannot list the directory"))? {
            let entry = entry.map_err(io_err(&dir, "cannot list the directory"))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            // Only names this queue writes (`seg_path`), so each one round-trips.
            if stem.len() == 20
                && stem.bytes().all(|b| b.is_ascii_digit())
                && let Ok(id) = stem.parse::<u64>()
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut q = DiskQueue {
            dir: dir.clone(),
            exporter,
            _lock: lock,
            max_bytes: cfg.max_bytes,
            segment_bytes: cfg.segment_size(),
            fsync: cfg.fsync,
            segments: VecDeque::new(),
            active: None,
            reader: None,
            cursor_id: 1,
            cursor_off: 0,
            cursor_points: 0,
            in_flight: None,
            next_id: 1,
            total_bytes: 0,
            ack,
            redeliver: false,
            dirty: false,
            metrics,
            scratch: Vec::new(),
            skipped: Dropped::default(),
        };
        let cursor = acked.unwrap_or(0);
        let last = ids.last().copied();
        let mut cut_failed = false;
        for &first_id in &ids {
            let path = seg_path(&dir, first_id);
            let s = match scan(&path, first_id, cursor, cfg.max_bytes) {
                Ok(s) => s,
                Err(e) => {
                    // Unreadable: left out (and said), not a reason to refuse to start.
                    q.corrupt(&path, 0, &format!("a read error ({e})"));
                    continue;
                }
            };
            let end_id = first_id.saturating_add(s.records);
            if let Some(why) = &s.error {
                q.corrupt(&path, s.file_len - s.valid, why);
                if Some(first_id) == last {
                    // A torn tail after a crash: cut it so appends continue after valid data.
                    let cut = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(s.valid));
                    cut_failed = cut.is_err();
                }
            }
            q.next_id = q.next_id.max(end_id);
            if end_id <= cursor || (s.records == 0 && Some(first_id) != last) {
                // Sent already (or empty): its deletion was interrupted.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if q.segments.is_empty() {
                match s.before_cursor {
                    Some((points, off)) if cursor > first_id => {
                        q.cursor_id = cursor;
                        q.cursor_off = off;
                        q.cursor_points = points;
                        q.redeliver = was_in_flight;
                    }
                    _ => {
                        q.cursor_id = first_id;
                        q.cursor_off = 0;
                        q.cursor_points = 0;
                        q.redeliver = was_in_flight && cursor == first_id;
                    }
                }
            }
            q.total_bytes += s.valid;
            q.segments.push_back(Segment {
                first_id,
                len: s.valid,
                records: s.records,
                points: s.points,
            });
        }
        if q.segments.is_empty() {
            q.next_id = q.next_id.max(cursor).max(1);
            q.cursor_id = q.next_id;
        }
        if let Some(seg) = q.segments.back()
            && seg.first_id + seg.records == q.next_id
            && !cut_failed
        {
            q.active = OpenOptions::new()
                .append(true)
                .open(seg_path(&dir, seg.first_id))
                .ok();
        }
        // Keeps the in-flight mark until that record is sent again (a second crash first must
        // still count it).
        q.write_ack(q.redeliver);
        q.gauge();
        if q.pending_records() > 0 {
            diag::info(format_args!(
                "{exporter} exporter: resuming {} requests ({} data points, {} bytes) from the durable queue {}",
                q.pending_records(),
                q.pending_points(),
                q.total_bytes,
                dir.display()
            ));
        }
        Ok(q)
    }

    fn corrupt(&mut self, path: &Path, bytes: u64, why: &str) {
        if let Some(c) = &self.metrics.corrupt {
            c.inc();
        }
        diag::warn(format_args!(
            "{} exporter: durable queue segment {} has {why}; its last {bytes} bytes were skipped and the queue goes on",
            self.exporter,
            path.display()
        ));
    }

    fn gauge(&self) {
        if let Some(g) = &self.metrics.bytes {
            g.set(self.total_bytes as i64);
        }
    }

    fn write_ack(&mut self, in_flight: bool) {
        let mut raw = [0u8; 24];
        raw[0..4].copy_from_slice(&ACK_MAGIC.to_le_bytes());
        raw[4..12].copy_from_slice(&self.cursor_id.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(in_flight).to_le_bytes());
        let sum = crc32fast::hash(&raw[0..16]);
        raw[16..20].copy_from_slice(&sum.to_le_bytes());
        // An ack that cannot be written only means more records are sent again after a
        // restart; the data itself is intact.
        let _ = self.ack.write_all_at(&raw, 0);
    }

    /// The id the last appended record got (0 when none ever was).
    pub(crate) fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Every record up to `id` was acknowledged (delivered or dropped).
    pub(crate) fn delivered_through(&self, id: u64) -> bool {
        self.cursor_id > id
    }

    pub(crate) fn pending_records(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.records).sum();
        let read = self
            .segments
            .front()
            .map_or(0, |s| self.cursor_id.saturating_sub(s.first_id));
        total.saturating_sub(read)
    }

    pub(crate) fn pending_points(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.points).sum();
        total.saturating_sub(self.cursor_points)
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the oldest segment; returns the records and points it held that were neither
    /// sent nor in flight.
    fn drop_front(&mut self) -> Dropped {
        let Some(seg) = self.segments.front() else {
            return Dropped::default();
        };
        let (first_id, records, points) = (seg.first_id, seg.records, seg.points);
        let mut read_records = self.cursor_id.saturating_sub(first_id);
        let mut read_points = self.cursor_points;
        if let Some(f) = &mut self.in_flight
            && !f.orphaned
            && f.id >= first_id
            && f.id < first_id + records
        {
            f.orphaned = true;
            read_records += 1;
            read_points += f.points;
        }
        if self.segments.len() == 1 {
            self.active = None;
        }
        self.finish_front();
        self.redeliver = false;
        // The cursor moved: a segment whose deletion does not reach the disk is then known
        // as sent at the next start, not sent again.
        self.write_ack(false);
        Dropped {
            records: records.saturating_sub(read_records),
            points: points.saturating_sub(read_points),
        }
    }

    /// Writes one record. Oldest segments are deleted first when the cap requires it (what
    /// they held unsent is returned). Errors when the record is larger than the cap or the
    /// write fails (a full disk): the queue is left as it was.
    pub(crate) fn append(&mut self, points: u64, payload: &[u8]) -> io::Result<Dropped> {
        let rec = HEADER + payload.len() as u64;
        if rec > self.max_bytes {
            return Err(io::Error::other(format!(
                "a request of {rec} bytes is larger than the durable queue's max_bytes ({})",
                self.max_bytes
            )));
        }
        let mut dropped = Dropped::default();
        while self.total_bytes + rec > self.max_bytes && !self.segments.is_empty() {
            let d = self.drop_front();
            dropped.records += d.records;
            dropped.points += d.points;
        }
        let roll = match (self.active.is_some(), self.segments.back()) {
            (true, Some(seg)) => seg.len > 0 && seg.len + rec > self.segment_bytes,
            _ => true,
        };
        if roll {
            let first_id = self.next_id;
            let path = seg_path(&self.dir, first_id);
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            if self.fsync == Fsync::EveryCollection {
                // The new file's directory entry must survive a power loss too.
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
            if let Some(old) = self.active.take()
                && self.fsync == Fsync::EveryCollection
            {
                let _ = old.sync_data();
            }
            self.active = Some(file);
            // An empty segment of that name (a cut that failed) was just truncated: reused.
            if let Some(seg) = self.segments.back()
                && seg.first_id == first_id
            {
                self.total_bytes -= seg.len;
                self.segments.pop_back();
            }
            if self.segments.is_empty() {
                self.cursor_id = first_id;
                self.cursor_off = 0;
                self.cursor_points = 0;
            }
            self.segments.push_back(Segment {
                first_id,
                len: 0,
                records: 0,
                points: 0,
            });
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc(points, payload).to_le_bytes());
        buf.extend_from_slice(&points.to_le_bytes());
        buf.extend_from_slice(payload);
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no segment to write to"));
        };
        let written = file.write_all(&buf);
        self.scratch = buf;
        if let Err(e) = written {
            // Cut what was written of it; if even that fails, leave the segment (reads stop
            // at its valid length) and start a new one at the next append.
            if file.set_len(seg.len).is_err() {
                self.active = None;
            }
            self.gauge();
            return Err(e);
        }
        seg.len += rec;
        seg.records += 1;
        seg.points += points;
        self.total_bytes += rec;
        self.next_id += 1;
        self.dirty = true;
        self.gauge();
        Ok(dropped)
    }

    /// Syncs what was appended since the last call, as the policy says.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.dirty || self.fsync == Fsync::Never {
            return Ok(());
        }
        self.dirty = false;
        if let Some(f) = &self.active {
            f.sync_data()?;
        }
        self.ack.sync_data()
    }

    /// Deletes the front segment, which the cursor has passed, and moves the cursor to the
    /// start of the next one (ids may jump where a segment was cut short).
    fn finish_front(&mut self) {
        let Some(seg) = self.segments.pop_front() else {
            return;
        };
        let _ = std::fs::remove_file(seg_path(&self.dir, seg.first_id));
        self.total_bytes -= seg.len;
        self.reader = None;
        let next = self.segments.front().map_or(self.next_id, |s| s.first_id);
        self.cursor_id = self.cursor_id.max(next);
        self.cursor_off = 0;
        self.cursor_points = 0;
        self.gauge();
    }

    /// The next record to send, marked in flight until [`ack`](Self::ack) or
    /// [`release`](Self::release). A corrupt region is skipped (the rest of its segment),
    /// counted, and what it held left for [`take_skipped`](Self::take_skipped). An error is a
    /// segment that cannot be read now (too many open files, an I/O error): nothing is
    /// skipped, the caller tries again later.
    pub(crate) fn next(&mut self) -> Result<Option<Record>, String> {
        loop {
            let Some(seg) = self.segments.front() else {
                return Ok(None);
            };
            let (first_id, len, records) = (seg.first_id, seg.len, seg.records);
            if self.cursor_id >= first_id.saturating_add(records) {
                if self.segments.len() == 1 {
                    return Ok(None);
                }
                self.finish_front();
                continue;
            }
            match self.read_at(first_id, self.cursor_off, len) {
                Ok((points, payload)) => {
                    let id = self.cursor_id;
                    self.in_flight = Some(InFlight {
                        id,
                        next_off: self.cursor_off + HEADER + payload.len() as u64,
                        points,
                        orphaned: false,
                    });
                    if std::mem::take(&mut self.redeliver)
                        && let Some(c) = &self.metrics.redelivered
                    {
                        c.add(points);
                    }
                    self.write_ack(true);
                    return Ok(Some(Record {
                        id,
                        points,
                        payload,
                    }));
                }
                Err(ReadError::Io(e)) => {
                    self.reader = None;
                    return Err(format!(
                        "cannot read the durable queue segment {}: {e}",
                        seg_path(&self.dir, first_id).display()
                    ));
                }
                Err(ReadError::Corrupt(why)) => {
                    let path = seg_path(&self.dir, first_id);
                    self.corrupt(&path, len - self.cursor_off, &why);
                    // The rest of the segment is given up (and counted); appends go to a new one.
                    let read = self.cursor_id - first_id;
                    if let Some(seg) = self.segments.front_mut() {
                        self.skipped.records += seg.records.saturating_sub(read);
                        self.skipped.points += seg.points.saturating_sub(self.cursor_points);
                        seg.records = read;
                        seg.points = self.cursor_points;
                    }
                    if self.segments.len() == 1 {
                        self.active = None;
                        self.finish_front();
                        self.write_ack(false);
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// What corrupt regions held (records and points) since the last call.
    pub(crate) fn take_skipped(&mut self) -> Dropped {
        std::mem::take(&mut self.skipped)
    }

    /// The record in flight was pushed out by the size cap meanwhile.
    pub(crate) fn in_flight_orphaned(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.orphaned)
    }

    fn read_at(&mut self, first_id: u64, off: u64, len: u64) -> Result<(u64, Vec<u8>), ReadError> {
        if self.reader.as_ref().is_none_or(|(id, _)| *id != first_id) {
            let f = File::open(seg_path(&self.dir, first_id)).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ReadError::Corrupt("gone (deleted by hand?)".into()),
                _ => ReadError::Io(e.to_string()),
            })?;
            self.reader = Some((first_id, f));
        }
        let Some((_, f)) = &self.reader else {
            return Err(ReadError::Io("no reader".into()));
        };
        let read_err = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                ReadError::Corrupt(format!("an end before the record at offset {off}"))
            }
            _ => ReadError::Io(format!("offset {off}: {e}")),
        };
        let mut h = [0u8; HEADER as usize];
        if off + HEADER > len {
            return Err(ReadError::Corrupt(format!(
                "a cut record header at offset {off}"
            )));
        }
        f.read_exact_at(&mut h, off).map_err(read_err)?;
        let n = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()) as u64;
        let sum = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let points = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        if off + HEADER + n > len {
            return Err(ReadError::Corrupt(format!(
                "a record of {n} bytes at offset {off} that runs past the segment's end"
            )));
        }
        let mut payload = vec![0u8; n as usize];
        f.read_exact_at(&mut payload, off + HEADER)
            .map_err(read_err)?;
        if crc(points, &payload) != sum {
            return Err(ReadError::Corrupt(format!(
                "a checksum mismatch at offset {off}"
            )));
        }
        Ok((points, payload))
    }

    /// The in-flight record `id` is done (delivered, or dropped for good): the cursor moves
    /// past it.
    pub(crate) fn ack(&mut self, id: u64) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        if f.id != id || f.orphaned || self.cursor_id != id {
            return;
        }
        self.cursor_id += 1;
        self.cursor_off = f.next_off;
        self.cursor_points += f.points;
        // Deletes the segment now if it is finished and not the one being written.
        if let Some(seg) = self.segments.front()
            && self.cursor_id >= seg.first_id.saturating_add(seg.records)
            && self.segments.len() > 1
        {
            self.finish_front();
        }
        self.write_ack(false);
    }

    /// The in-flight record stays queued (the exporter is stopping): the next start sends it
    /// again, counted as a possible duplicate.
    pub(crate) fn release(&mut self) {
        self.in_flight = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that queues `a` then `b` (of `points` each) in `dir`, takes `a` to send,
    /// acknowledges it if `ack`, and stops; what it took.
    fn queue_two_take_one(dir: &Path, points: [u64; 2], ack: bool) -> Record {
        let (mut q, _) = open(dir, 1 << 20, 0);
        q.append(points[0], b"a").unwrap();
        q.append(points[1], b"b").unwrap();
        let r = q.next().unwrap().unwrap();
        if ack {
            q.ack(r.id);
        }
        r
    }

    fn open(dir: &Path, max: u64, seg: u64) -> (DiskQueue, Registry) {
        let reg = Registry::new();
        let mut cfg = DiskQueueConfig::new(dir);
        cfg.max_bytes = max;
        cfg.segment_bytes = seg;
        let q = DiskQueue::open(&cfg, "test", DiskMetrics::register(&reg, "test")).unwrap();
        (q, reg)
    }

    fn counter(reg: &Registry, name: &str) -> u64 {
        reg.snapshot()
            .point(name, &[("exporter", "test")])
            .and_then(|p| p.number())
            .map_or(0, |n| n.as_f64() as u64)
    }

    fn drain(q: &mut DiskQueue) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(r) = q.next().unwrap() {
            q.ack(r.id);
            out.push((r.points, r.payload));
        }
        out
    }

    /// `n` one-point records in segments of two (600 bytes), then the queue is closed.
    fn fill(dir: &Path, n: u64) {
        let (mut q, _) = open(dir, 1 << 20, 600);
        for i in 0..n {
            q.append(1, &payload(i)).unwrap();
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("request {i} ").repeat(20).into_bytes()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut q, _) = open(dir.path(), 1 << 20, 1000);
            for i in 0..30 {
                assert_eq!(q.append(i, &payload(i)).unwrap(), Dropped::default());
            }
            q.sync().unwrap();
            assert_eq!(q.pending_records(), 30);
            assert_eq!(q.pending_points(), (0..30).sum::<u64>());
            // Five sent, then the process goes away.
            for _ in 0..5 {
                let r = q.next().unwrap().unwrap();
                q.ack(r.id);
            }
        }
        let (mut q, _) = open(dir.path(), 1 << 20, 1000);
        assert_eq!(q.pending_records(), 25);
        let got = drain(&mut q);
        let want: Vec<_> = (5..30).map(|i| (i, payload(i))).collect();
        assert_eq!(got, want);
        assert_eq!(q.pending_records(), 0);
        // Finished segments are deleted, the one being written stays.
        let segs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert_eq!(segs, 1);
        // Ids go on after a restart.
        q.append(1, b"x").unwrap();
        assert_eq!(q.next().unwrap().unwrap().id, 31);
    }

    #[test]
    fn a_request_in_flight_at_a_crash_is_sent_again_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // No ack: killed while sending.
        let r = queue_two_take_one(dir.path(), [7, 8], false);
        assert_eq!(r.payload, b"a");
        let (mut q, reg) = open(dir.path(), 1 << 20, 0);
        assert_eq!(drain(&mut q), vec![(7, b"a".to_vec()), (8, b"b".to_vec())]);
        assert_eq!(counter(&reg, crate::telemetry::QUEUE_REDELIVERED), 7);
    }

    #[test]
    fn the_cap_drops_the_oldest_segments_and_counts_what_was_unsent() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = open(dir.path(), 8192, 1024);
        let mut dropped = Dropped::default();
        for i in 0..200 {
            let d = q.append(1, &payload(i)).unwrap();
            dropped.records += d.records;
            dropped.points += d.points;
            assert!(q.bytes() <= 8192, "{} bytes on disk", q.bytes());
        }
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 8192 + 24, "{on_disk}");
        let left = drain(&mut q);
        assert_eq!(dropped.records + left.len() as u64, 200);
        assert_eq!(dropped.points, dropped.records);
        // What is left is the newest, in order.
        assert_eq!(left.last().unwrap().1, payload(199));
        assert!(q.append(1, &vec![0; 9000]).is_err(), "larger than the cap");
    }

    #[test]
    fn a_record_in_flight_when_its_segment_is_dropped_is_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = open(dir.path(), 4096, 1024);
        q.append(5, &[1; 500]).unwrap();
        q.append(5, &[2; 500]).unwrap();
        let r = q.next().unwrap().unwrap();
        let mut dropped = Dropped::default();
        for _ in 0..10 {
            let d = q.append(1, &[3; 500]).unwrap();
            dropped.points += d.points;
        }
        assert!(dropped.points >= 5, "the second record went");
        // Its segment went meanwhile; acknowledging it is harmless.
        q.ack(r.id);
        let delivered: u64 = drain(&mut q).iter().map(|(p, _)| p).sum();
        // Every point is either delivered, dropped (counted once), or was in flight.
        assert_eq!(delivered + dropped.points + r.points, 5 + 5 + 10);
    }

    #[test]
    fn corrupt_and_torn_segments_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 12);
        let segs = segments(dir.path());
        assert!(segs.len() >= 4, "{segs:?}");
        // A flipped byte in the first segment's second record...
        let mut bytes = std::fs::read(&segs[0]).unwrap();
        let rec = bytes.len() / 2;
        bytes[rec + 40] ^= 0xff;
        std::fs::write(&segs[0], &bytes).unwrap();
        // ...and a torn half record at the end of the last one.
        let mut last = OpenOptions::new()
            .append(true)
            .open(segs.last().unwrap())
            .unwrap();
        last.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (mut q, reg) = open(dir.path(), 1 << 20, 600);
        assert_eq!(counter(&reg, crate::telemetry::QUEUE_CORRUPT), 2);
        let got = drain(&mut q);
        // The first segment's first record, then every later segment whole.
        assert_eq!(got[0].1, payload(0));
        assert_eq!(got.last().unwrap().1, payload(11));
        assert_eq!(got.len(), 12 - (segs_records(&bytes) - 1));
        // Appends continue after the cut tail.
        q.append(1, b"after").unwrap();
        assert_eq!(q.next().unwrap().unwrap().payload, b"after");
    }

    #[test]
    fn ids_stay_true_across_a_skipped_region() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 12);
        let segs = segments(dir.path());
        let mut bytes = std::fs::read(&segs[0]).unwrap();
        let second = bytes.len() / 2;
        bytes[second + 40] ^= 0xff;
        std::fs::write(&segs[0], &bytes).unwrap();
        {
            let (mut q, _) = open(dir.path(), 1 << 20, 600);
            let r = q.next().unwrap().unwrap();
            assert_eq!((r.id, r.payload), (1, payload(0)));
            q.ack(1);
            // Record 2 was cut off at open; the next one is record 3, under its own id.
            let r = q.next().unwrap().unwrap();
            assert_eq!((r.id, r.payload), (3, payload(2)));
            q.ack(3);
        }
        let (mut q, reg) = open(dir.path(), 1 << 20, 600);
        let r = q.next().unwrap().unwrap();
        assert_eq!((r.id, r.payload), (4, payload(3)), "nothing sent twice");
        assert_eq!(counter(&reg, crate::telemetry::QUEUE_REDELIVERED), 0);
    }

    #[test]
    fn a_region_found_corrupt_while_reading_is_handed_over_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = open(dir.path(), 1 << 20, 600);
        for i in 0..6 {
            q.append(5, &payload(i)).unwrap();
        }
        // Damaged after the queue was opened: found by the reader.
        let segs = segments(dir.path());
        let mut bytes = std::fs::read(&segs[0]).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&segs[0], &bytes).unwrap();
        let r = q.next().unwrap().unwrap();
        assert_eq!(r.payload, payload(2), "the first segment was skipped");
        assert_eq!(
            q.take_skipped(),
            Dropped {
                records: 2,
                points: 10
            }
        );
        q.ack(r.id);
        assert_eq!(q.pending_records(), 3);
    }

    #[test]
    fn names_it_did_not_write_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("5.seg"), b"not ours").unwrap();
        std::fs::write(dir.path().join("+0000000000000000005.seg"), b"not ours").unwrap();
        let (mut q, _) = open(dir.path(), 1 << 20, 0);
        assert_eq!(q.pending_records(), 0);
        q.append(1, b"a").unwrap();
        assert_eq!(q.next().unwrap().unwrap().payload, b"a");
    }

    /// The segment files in `dir`, oldest first.
    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut segs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        segs
    }

    fn segs_records(bytes: &[u8]) -> usize {
        let mut off = 0;
        let mut n = 0;
        while off + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            off += 16 + len;
            n += 1;
        }
        n
    }

    #[test]
    fn a_damaged_ack_file_sends_everything_again() {
        let dir = tempfile::tempdir().unwrap();
        queue_two_take_one(dir.path(), [1, 1], true);
        std::fs::write(dir.path().join("ack"), b"garbage garbage garbage!").unwrap();
        let (mut q, _) = open(dir.path(), 1 << 20, 0);
        assert_eq!(drain(&mut q).len(), 2);
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_q, _) = open(dir.path(), 1 << 20, 0);
        let reg = Registry::new();
        let err = DiskQueue::open(
            &DiskQueueConfig::new(dir.path()),
            "test",
            DiskMetrics::register(&reg, "test"),
        )
        .err()
        .unwrap();
        assert!(matches!(err, QueueError::Locked { .. }), "{err}");
        let mut small = DiskQueueConfig::new(dir.path().join("other"));
        small.max_bytes = 100;
        let err = DiskQueue::open(&small, "test", DiskMetrics::register(&reg, "test"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("at least 4096"), "{err}");
    }
}
