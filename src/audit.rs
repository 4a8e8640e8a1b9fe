//! The append-only, hash-chained audit log of deletion receipts.
//!
//! One JSON object per line:
//!
//! ```text
//! {"seq":1,"prev_hash":"000…0","kind":"deletion_receipt","receipt":{…},"hash":"…"}
//! ```
//!
//! `seq` counts from 1 and equals the line number. `hash` is the lowercase
//! hex SHA-256 of the entry's canonical JSON *without* the `hash` field
//! (object keys sorted bytewise, no whitespace, serde_json's number and string
//! encoding). `prev_hash` is the previous entry's `hash`, or [`GENESIS_HASH`]
//! for the first entry. Editing, deleting, inserting or reordering a line
//! breaks the chain at that line; [`verify`] names it.
//!
//! **Boundary:** a chain cannot show that its *last* lines were cut off or
//! rewritten consistently; publish [`VerifyReport::head_hash`] (or each
//! [`AuditEntry::hash`]) somewhere else to anchor the head.
//!
//! Appenders take an exclusive `flock` on the file, re-read the last entry,
//! append one line with a single write and `fsync` it, so concurrent
//! processes interleave whole entries and never fork the chain. The lock is
//! waited for at most [`AuditLog::with_lock_timeout`] (default
//! [`DEFAULT_LOCK_TIMEOUT`]; `audit.lock_timeout`), then the append fails with
//! [`AuditError::Locked`] naming the file, instead of hanging behind a stuck
//! process.
//!
//! **What this local log detects:** an edited, deleted, inserted or
//! reordered line anywhere but at the end. **What it does not:** the last
//! lines cut off, or the tail rewritten with recomputed hashes (there is no
//! key and no head record outside the file). In fleet mode the record is the
//! per-tenant chain in Blob Storage ([`crate::audit_chain`]), which detects
//! both; this file is the pod's scratch copy.

use std::fmt::Write as _;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::recording::DestroyReport;

/// `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// [`AuditEntry::kind`] of a deletion receipt.
pub const KIND_DELETION_RECEIPT: &str = "deletion_receipt";
/// [`AuditEntry::kind`] of a transcript deleted at the end of its retention.
pub const KIND_TRANSCRIPT_DELETION: &str = "transcript_deletion";
/// Longest accepted line, newline included.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long an append waits for another process's lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The proof that one recording was destroyed.
///
/// Carries ids and hashes only: never participant names, transcript text or
/// credentials. `transcript_location` must not contain a secret (strip SAS
/// tokens and other query strings before putting a URL here).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeletionReceipt {
    /// The recording id.
    pub recording_id: String,
    /// The meeting id.
    pub meeting_id: String,
    /// The tenant.
    pub tenant: String,
    /// Sealed chunks destroyed.
    pub chunk_count: u64,
    /// Ciphertext bytes destroyed.
    pub ciphertext_bytes: u64,
    /// SHA-256 (hex) of the ciphertext manifest
    /// ([`crate::recording::RecordingStats::manifest_sha256`]).
    pub manifest_sha256: String,
    /// Whether the transcript was committed before the deletion.
    pub transcript_committed: bool,
    /// SHA-256 (hex) of the committed transcript.
    pub transcript_sha256: Option<String>,
    /// Where the transcript was committed (no credentials).
    pub transcript_location: Option<String>,
    /// Why no transcript was committed, when it was not.
    pub reason: Option<String>,
    /// When the recording was deleted, RFC 3339 UTC.
    pub deleted_at: String,
    /// How, and under which key custody: one of [`crate::recording::METHODS`]
    /// (older logs hold the legacy methods, which stay valid).
    pub method: String,
}

/// The proof that a committed transcript (JSON or WebVTT) was deleted when
/// its retention ran out (`meetbot sweep`). Ids and hashes only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TranscriptDeletionReceipt {
    /// The tenant.
    pub tenant: String,
    /// The meeting id.
    pub meeting_id: String,
    /// Where it was (no credentials).
    pub location: String,
    /// SHA-256 (hex) of the committed transcript JSON, when known.
    pub transcript_sha256: Option<String>,
    /// When it expired, RFC 3339 UTC.
    pub expired_at: String,
    /// When it was deleted, RFC 3339 UTC.
    pub deleted_at: String,
    /// Why (`retention expired`).
    pub reason: String,
}

/// The body of an audit entry: one of the receipt kinds. Serialized as the
/// receipt itself, so entries written before transcript deletions existed
/// hash and verify unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum AuditRecord {
    /// A recording was destroyed.
    Recording(DeletionReceipt),
    /// A transcript reached the end of its retention.
    Transcript(TranscriptDeletionReceipt),
}

impl AuditRecord {
    /// The entry kind this record is written under.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditRecord::Recording(_) => KIND_DELETION_RECEIPT,
            AuditRecord::Transcript(_) => KIND_TRANSCRIPT_DELETION,
        }
    }
}

/// What became of the transcript, for [`DeletionReceipt::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TranscriptOutcome {
    /// Committed before deletion.
    Committed {
        /// SHA-256 (hex) of the committed transcript bytes.
        sha256: String,
        /// Where it went (no credentials).
        location: String,
    },
    /// Not committed (failure, cancellation, orphan sweep).
    NotCommitted {
        /// Why.
        reason: String,
    },
}

impl DeletionReceipt {
    /// A receipt for `report`, with `deleted_at` formatted as RFC 3339 UTC.
    pub fn new(
        report: &DestroyReport,
        transcript: TranscriptOutcome,
        deleted_at: SystemTime,
    ) -> Self {
        let (committed, sha256, location, reason) = match transcript {
            TranscriptOutcome::Committed { sha256, location } => {
                (true, Some(sha256), Some(location), None)
            }
            TranscriptOutcome::NotCommitted { reason } => (false, None, None, Some(reason)),
        };
        DeletionReceipt {
            recording_id: report.recording_id.clone(),
            meeting_id: report.meeting_id.clone(),
            tenant: report.tenant.clone(),
            chunk_count: report.chunks,
            ciphertext_bytes: report.ciphertext_bytes,
            manifest_sha256: report.manifest_sha256.clone(),
            transcript_committed: committed,
            transcript_sha256: sha256,
            transcript_location: location,
            reason,
            deleted_at: humantime::format_rfc3339_seconds(deleted_at).to_string(),
            method: report.method.clone(),
        }
    }
}

/// One line of the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position, from 1 (= line number).
    pub seq: u64,
    /// The previous entry's hash, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// [`KIND_DELETION_RECEIPT`] or [`KIND_TRANSCRIPT_DELETION`].
    pub kind: String,
    /// The receipt.
    pub receipt: AuditRecord,
    /// This entry's hash (see the module docs).
    pub hash: String,
}

impl AuditEntry {
    /// The entry exactly as it is written to the log (without the newline).
    pub fn to_json_line(&self) -> String {
        // Cannot fail: plain strings, integers, bools and options.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The hashed part of an entry: everything but `hash`.
#[derive(Serialize)]
struct HashedEntry<'a> {
    seq: u64,
    prev_hash: &'a str,
    kind: &'a str,
    receipt: &'a AuditRecord,
}

/// Result of a successful [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// The last entry's hash ([`GENESIS_HASH`] for an empty log).
    pub head_hash: String,
}

/// Why the log could not be opened, appended to or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file-system operation failed.
    #[error("audit log {path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The log is writable by group or others, so its chain proves little.
    #[error("audit log {path} is writable by group or others (mode {mode:04o}); chmod 600 it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is invalid or breaks the chain.
    #[error("audit log {path} line {line}: {problem}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// The last line, read before appending, is invalid; nothing was appended.
    #[error("audit log {path}: cannot append after the last line: {problem}; run `meetbot audit verify`")]
    Tail {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An entry could not be encoded.
    #[error("cannot encode audit entry: {0}")]
    Encode(String),
    /// Another process held the log's lock for longer than the lock timeout.
    #[error("audit log {path}: another process holds its lock (waited {waited:?}, audit.lock_timeout); is another meetbot stuck on this file?")]
    Locked {
        /// The file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io {
        path,
        action,
        source,
    }
}

/// Writes `v` as canonical JSON: keys sorted bytewise, no whitespace.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own encoding. Writing to a String cannot fail.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

pub(crate) fn entry_hash(
    seq: u64,
    prev_hash: &str,
    kind: &str,
    receipt: &AuditRecord,
) -> Result<String, AuditError> {
    let value = serde_json::to_value(HashedEntry {
        seq,
        prev_hash,
        kind,
        receipt,
    })
    .map_err(|e| AuditError::Encode(e.to_string()))?;
    let mut text = String::new();
    canonical(&value, &mut text);
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses one line (without its newline) and checks it on its own: JSON
/// shape, canonical form, kind, hash fields and the hash itself.
fn parse_line(path: &Path, line_no: u64, line: &[u8]) -> Result<AuditEntry, AuditError> {
    let bad = |problem: String| AuditError::Line {
        path: path.to_path_buf(),
        line: line_no,
        problem,
    };
    let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(bad("empty line".into()));
    }
    let entry: AuditEntry =
        serde_json::from_str(text).map_err(|e| bad(format!("bad JSON: {e}")))?;
    if entry.kind != entry.receipt.kind() {
        return Err(bad(format!(
            "entry kind {:?} does not match its receipt",
            entry.kind
        )));
    }
    if !is_hash(&entry.hash) || !is_hash(&entry.prev_hash) {
        return Err(bad(
            "hash or prev_hash is not 64 lowercase hex digits".into()
        ));
    }
    let expected = entry_hash(entry.seq, &entry.prev_hash, &entry.kind, &entry.receipt)?;
    if expected != entry.hash {
        return Err(bad(format!(
            "hash mismatch: the entry hashes to {expected} but records {} (entry edited)",
            entry.hash
        )));
    }
    if entry.to_json_line() != text {
        return Err(bad(
            "not in the form the log writes (fields reordered or reformatted by hand)".into(),
        ));
    }
    Ok(entry)
}

fn flock_retrying(file: &File, op: FlockOperation) -> Result<(), Errno> {
    loop {
        match rustix::fs::flock(file, op) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Holds the log's exclusive lock; unlocks on drop.
struct LockGuard<'a>(&'a File);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = flock_retrying(self.0, FlockOperation::Unlock) {
            tracing::warn!(error = %e, "Could not unlock the audit log.");
        }
    }
}

/// Reads `file` from `pos` to `end` with `pread`, leaving its offset alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An open audit log, ready to append.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// `flock` is per open file, so threads sharing this handle would all
    /// "hold" it; this mutex serialises them first.
    in_process: Mutex<()>,
    lock_timeout: Duration,
}

impl AuditLog {
    /// Opens (creating if needed) the log at `path`: missing parent
    /// directories are created 0700, a new file 0600, opened in append mode.
    /// An existing file writable by group or others is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent, "create parent directory"))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        let meta = file.metadata().map_err(io_err(&path, "stat"))?;
        if !meta.is_file() {
            return Err(AuditError::Io {
                path,
                action: "open",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(AuditError::Permissions { path, mode });
        }
        Ok(AuditLog {
            path,
            file,
            in_process: Mutex::new(()),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// Sets how long an append (or [`AuditLog::check_appendable`]) waits for
    /// another process's lock before failing with [`AuditError::Locked`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Takes a `flock` of kind `op` (exclusive or shared), polling without
    /// blocking until the lock timeout.
    fn lock(&self, op: FlockOperation) -> Result<(), AuditError> {
        let nb = match op {
            FlockOperation::LockShared => FlockOperation::NonBlockingLockShared,
            _ => FlockOperation::NonBlockingLockExclusive,
        };
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match flock_retrying(&self.file, nb) {
                Ok(()) => return Ok(()),
                Err(e) if e == Errno::WOULDBLOCK => {
                    let waited = start.elapsed();
                    if waited >= self.lock_timeout {
                        return Err(AuditError::Locked {
                            path: self.path.clone(),
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(self.lock_timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(io_err(&self.path, "lock")(e.into())),
            }
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `receipt` as the next entry and returns it (with its hash).
    ///
    /// Refuses to extend a log whose last line is incomplete or fails its own
    /// checks; run [`verify`] to see the whole picture.
    pub fn append(&self, receipt: &DeletionReceipt) -> Result<AuditEntry, AuditError> {
        self.append_record(&AuditRecord::Recording(receipt.clone()))
    }

    /// Appends any kind of receipt (see [`AuditLog::append`]).
    pub fn append_record(&self, receipt: &AuditRecord) -> Result<AuditEntry, AuditError> {
        self.with_tail(FlockOperation::LockExclusive, |len, last| {
            self.append_locked(receipt, len, last)
        })
    }

    /// Appends `receipt` unless the log already holds a deletion receipt for
    /// the same recording; returns the entry and whether this call wrote it.
    ///
    /// The check and the append happen under one exclusive lock, so a run
    /// completing its own receipt and a start-up sweep recovering it from the
    /// run's receipt intent write exactly one receipt between them.
    pub fn append_once(&self, receipt: &DeletionReceipt) -> Result<(AuditEntry, bool), AuditError> {
        self.with_tail(FlockOperation::LockExclusive, |len, last| {
            if let Some(existing) = self.find_recording_receipt(len, &receipt.recording_id)? {
                return Ok((existing, false));
            }
            let record = AuditRecord::Recording(receipt.clone());
            self.append_locked(&record, len, last).map(|e| (e, true))
        })
    }

    /// The deletion receipt for `recording_id` among the first `len` bytes
    /// (the caller holds the lock). Lines that do not mention the id are
    /// skipped without parsing.
    fn find_recording_receipt(
        &self,
        len: u64,
        recording_id: &str,
    ) -> Result<Option<AuditEntry>, AuditError> {
        // Positional reads: the shared handle's offset is left alone.
        let mut reader = BufReader::new(ReadAt {
            file: &self.file,
            pos: 0,
            end: len,
        });
        let needle = serde_json::to_string(recording_id).unwrap_or_default();
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            line_no += 1;
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(io_err(&self.path, "read"))?;
            if n == 0 {
                return Ok(None);
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if !line.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            let entry = parse_line(&self.path, line_no, line)?;
            if let AuditRecord::Recording(r) = &entry.receipt {
                if r.recording_id == recording_id {
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// The body of [`AuditLog::append`], run under the exclusive lock with the
    /// log's length and last entry.
    fn append_locked(
        &self,
        receipt: &AuditRecord,
        len: u64,
        last: Option<AuditEntry>,
    ) -> Result<AuditEntry, AuditError> {
        let (seq, prev_hash) = match last {
            Some(last) => (last.seq + 1, last.hash),
            None => (1, GENESIS_HASH.to_string()),
        };
        let hash = entry_hash(seq, &prev_hash, receipt.kind(), receipt)?;
        let entry = AuditEntry {
            seq,
            prev_hash,
            kind: receipt.kind().into(),
            receipt: receipt.clone(),
            hash,
        };
        let mut line = entry.to_json_line();
        line.push('\n');
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditError::Encode(format!(
                "entry is {} bytes; at most {MAX_LINE_BYTES}",
                line.len()
            )));
        }
        let mut file = &self.file;
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Remove a partial line so the chain stays appendable.
            if let Err(te) = self.file.set_len(len) {
                tracing::warn!(error = %te, "Could not truncate a partial audit entry.");
            }
            return Err(io_err(&self.path, "append")(e));
        }
        tracing::debug!(seq = entry.seq, hash = %entry.hash, "Audit entry appended.");
        Ok(entry)
    }

    /// Checks that the log can take another entry (its last line is whole and
    /// valid), without writing. Run it before recording anything.
    pub fn check_appendable(&self) -> Result<(), AuditError> {
        self.with_tail(FlockOperation::LockShared, |_, _| Ok(()))
    }

    /// Runs `f` with the log's length and last entry while holding the
    /// in-process mutex and a `flock` of kind `op`.
    fn with_tail<T>(
        &self,
        op: FlockOperation,
        f: impl FnOnce(u64, Option<AuditEntry>) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        // A panic in another appender cannot leave the file inconsistent (the
        // flock and the truncate-on-error protect it), so poisoning is ignored.
        let _in_process = self.in_process.lock().unwrap_or_else(|p| p.into_inner());
        self.lock(op)?;
        let _guard = LockGuard(&self.file);
        let len = self
            .file
            .metadata()
            .map_err(io_err(&self.path, "stat"))?
            .len();
        let last = self.last_entry(len)?;
        f(len, last)
    }

    /// The last entry of a log `len` bytes long, read from its tail.
    fn last_entry(&self, len: u64) -> Result<Option<AuditEntry>, AuditError> {
        if len == 0 {
            return Ok(None);
        }
        let start = len.saturating_sub(MAX_LINE_BYTES as u64 + 1);
        // Bounded by MAX_LINE_BYTES + 1, so the cast cannot truncate.
        let mut tail = vec![0u8; (len - start) as usize];
        self.file
            .read_exact_at(&mut tail, start)
            .map_err(io_err(&self.path, "read"))?;
        let bad = |problem: &str| AuditError::Tail {
            path: self.path.clone(),
            problem: problem.to_string(),
        };
        let Some((&b'\n', body)) = tail.split_last() else {
            return Err(bad("incomplete (no newline; a crash during a write?)"));
        };
        let line = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => &body[i + 1..],
            None if start == 0 => body,
            None => return Err(bad("longer than the line limit")),
        };
        let entry = parse_line(&self.path, 0, line).map_err(|e| match e {
            AuditError::Line { problem, .. } => bad(&problem),
            other => other,
        })?;
        if entry.seq == 0 {
            return Err(bad("seq is 0"));
        }
        Ok(Some(entry))
    }
}

/// Checks the whole log at `path`: every line's JSON, form and hash, the
/// sequence (1, 2, 3, …) and every `prev_hash` link.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS_HASH.to_string();
    let mut entries = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line_no = entries + 1;
        let bad = |problem: String| AuditError::Line {
            path: path.to_path_buf(),
            line: line_no,
            problem,
        };
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(io_err(path, "read"))?;
        if n == 0 {
            break;
        }
        let Some((&b'\n', line)) = buf.split_last() else {
            return Err(bad(if n >= MAX_LINE_BYTES {
                format!("longer than {MAX_LINE_BYTES} bytes")
            } else {
                "incomplete last line (no newline)".to_string()
            }));
        };
        let entry = parse_line(path, line_no, line)?;
        if entry.seq != line_no {
            return Err(bad(format!(
                "seq gap: expected seq {line_no}, found {} (a line was deleted, inserted or moved)",
                entry.seq
            )));
        }
        if entry.prev_hash != prev {
            return Err(bad(format!(
                "broken link: prev_hash {} does not match the previous entry's hash {prev}",
                entry.prev_hash
            )));
        }
        prev = entry.hash;
        entries = line_no;
    }
    Ok(VerifyReport {
        entries,
        head_hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(i: u64) -> DeletionReceipt {
        DeletionReceipt {
            recording_id: format!("rec-{i}"),
            meeting_id: "meeting".into(),
            tenant: "tenant".into(),
            chunk_count: i,
            ciphertext_bytes: 1000 * i,
            manifest_sha256: "ab".repeat(32),
            transcript_committed: i.is_multiple_of(2),
            transcript_sha256: i.is_multiple_of(2).then(|| "cd".repeat(32)),
            transcript_location: None,
            reason: (i % 2 == 1).then(|| "stt failed".to_string()),
            deleted_at: "2025-01-01T00:00:00Z".into(),
            method: "crypto-shred+unlink".into(),
        }
    }

    #[test]
    fn canonical_sorts_keys_and_strips_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, {"z": null, "a": true}], "a": "x\"y" }"#)
            .expect("json");
        let mut s = String::new();
        canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":"x\"y","b":[1,{"a":true,"z":null}]}"#);
    }

    #[test]
    fn hash_is_independent_of_field_order() {
        // The hash is over sorted keys, so a struct-order change cannot alter it.
        let r = AuditRecord::Recording(receipt(1));
        let h = entry_hash(1, GENESIS_HASH, KIND_DELETION_RECEIPT, &r).expect("hash");
        let mut v = serde_json::to_value(HashedEntry {
            seq: 1,
            prev_hash: GENESIS_HASH,
            kind: KIND_DELETION_RECEIPT,
            receipt: &r,
        })
        .expect("value");
        let mut s = String::new();
        canonical(&v, &mut s);
        assert_eq!(hex::encode(Sha256::digest(s.as_bytes())), h);
        v["receipt"]["chunk_count"] = 2.into();
        let mut s2 = String::new();
        canonical(&v, &mut s2);
        assert_ne!(hex::encode(Sha256::digest(s2.as_bytes())), h);
    }

    #[test]
    fn transcript_deletions_chain_with_recording_receipts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        log.append(&receipt(1)).expect("append");
        let t = TranscriptDeletionReceipt {
            tenant: "acme".into(),
            meeting_id: "m1".into(),
            location: "https://acct.blob.core.windows.net/meetbot-acme-1/m1.json".into(),
            transcript_sha256: Some("ab".repeat(32)),
            expired_at: "2026-01-01T00:00:00Z".into(),
            deleted_at: "2026-01-01T00:05:00Z".into(),
            reason: "retention expired".into(),
        };
        let e2 = log
            .append_record(&AuditRecord::Transcript(t.clone()))
            .expect("append");
        assert_eq!(e2.kind, KIND_TRANSCRIPT_DELETION);
        log.append(&receipt(3)).expect("append");
        assert_eq!(verify(&path).expect("verifies").entries, 3);
        // A transcript receipt relabelled as a recording receipt is caught.
        let text = std::fs::read_to_string(&path).unwrap();
        let forged = text.replacen(
            "\"kind\":\"transcript_deletion\"",
            "\"kind\":\"deletion_receipt\"",
            1,
        );
        assert_ne!(forged, text);
        std::fs::write(&path, forged).unwrap();
        let err = verify(&path).expect_err("kind mismatch").to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn chain_appends_and_verifies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("a/b/audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        assert_eq!(
            verify(&path).expect("empty verifies"),
            VerifyReport {
                entries: 0,
                head_hash: GENESIS_HASH.into()
            }
        );
        let e1 = log.append(&receipt(1)).expect("append");
        assert_eq!((e1.seq, e1.prev_hash.as_str()), (1, GENESIS_HASH));
        let e2 = log.append(&receipt(2)).expect("append");
        assert_eq!(e2.prev_hash, e1.hash);
        // A second handle continues the same chain.
        let e3 = AuditLog::open(&path)
            .expect("reopen")
            .append(&receipt(3))
            .expect("append");
        assert_eq!((e3.seq, e3.prev_hash.as_str()), (3, e2.hash.as_str()));
        let report = verify(&path).expect("verifies");
        assert_eq!(report.entries, 3);
        assert_eq!(report.head_hash, e3.hash);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().nth(1), Some(e2.to_json_line().as_str()));
    }

    #[test]
    fn a_held_lock_times_out_with_a_clear_error_and_is_taken_once_free() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::open(&path)
            .expect("open")
            .with_lock_timeout(Duration::from_millis(300));
        log.append(&receipt(1)).expect("append");
        // Another open file description: another "process" as far as flock goes.
        let other = File::open(&path).expect("open");
        rustix::fs::flock(&other, FlockOperation::LockExclusive).expect("lock");
        // The append runs on a thread so that today's blocking flock shows up
        // as a failed test rather than a hung one.
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(log);
        let l2 = log.clone();
        std::thread::spawn(move || {
            let _ = tx.send(l2.append(&receipt(2)).map(|e| e.seq));
        });
        let err = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the append gave up instead of waiting forever")
            .expect_err("the lock is held");
        assert!(matches!(err, AuditError::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("another process holds its lock"), "{text}");
        assert!(
            matches!(log.check_appendable(), Err(AuditError::Locked { .. })),
            "a shared lock waits too"
        );
        // Nothing was written; once the lock is free the chain continues.
        rustix::fs::flock(&other, FlockOperation::Unlock).expect("unlock");
        assert_eq!(log.append(&receipt(2)).expect("append").seq, 2);
        assert_eq!(verify(&path).expect("verifies").entries, 2);
    }

    #[test]
    fn append_refuses_a_torn_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        log.append(&receipt(1)).expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":2,").expect("write");
        let err = log.append(&receipt(2)).expect_err("torn tail");
        assert!(err.to_string().contains("incomplete"), "{err}");
        let err = verify(&path).expect_err("torn tail");
        assert!(matches!(err, AuditError::Line { line: 2, .. }), "{err}");
    }

    #[test]
    fn receipt_from_report() {
        let report = DestroyReport {
            recording_id: "r".into(),
            meeting_id: "m".into(),
            tenant: "t".into(),
            chunks: 4,
            ciphertext_bytes: 99,
            manifest_sha256: "ee".repeat(32),
            method: "crypto-shred+unlink".into(),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let r = DeletionReceipt::new(
            &report,
            TranscriptOutcome::Committed {
                sha256: "aa".repeat(32),
                location: "blob://x".into(),
            },
            at,
        );
        assert_eq!(r.deleted_at, "2023-11-14T22:13:20Z");
        assert!(r.transcript_committed && r.reason.is_none());
        assert_eq!((r.chunk_count, r.ciphertext_bytes), (4, 99));
        let r = DeletionReceipt::new(
            &report,
            TranscriptOutcome::NotCommitted {
                reason: "stt down".into(),
            },
            at,
        );
        assert!(!r.transcript_committed && r.transcript_sha256.is_none());
        assert_eq!(r.reason.as_deref(), Some("stt down"));
    }
}
