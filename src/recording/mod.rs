//! The encrypted ephemeral recording.
//!
//! A [`Recording`] keeps every participant's Opus packets (compressed frames,
//! never PCM) for the length of one meeting, so audio can be replayed after an
//! STT reconnect, and then destroys them with a verifiable report.
//!
//! - **Keys.** Each recording has its own random 256-bit [`DataKey`]. At most
//!   the [`WrappedKey`] (encrypted by a [`KeyProvider`]; with the default
//!   [`EphemeralKeys`] an empty placeholder) is written to the recording's
//!   header; the plaintext key lives only in locked memory
//!   ([`crate::secmem`]: no swap, no core dump) and is wiped on drop. Who can
//!   recover the key later is its [`KeyCustody`], stated in the receipt's
//!   `method` ([`METHODS`]).
//! - **Chunks.** Packets are framed into a plaintext chunk buffer in locked
//!   memory (wiped after sealing and on drop, sealed in place).
//!   A full chunk is sealed with AES-256-GCM: the nonce is derived from the
//!   chunk index (a counter, so unique under the per-recording key) and the
//!   associated data binds recording id and chunk index, so edits, swaps and
//!   reorderings fail authentication.
//! - **Memory budget and spill.** Sealed chunks stay in memory up to
//!   [`RecordingConfig::memory_budget_bytes`]; beyond it the oldest sealed
//!   chunks are appended to `spool_dir/<id>/chunks.bin`. Only ciphertext is
//!   ever written, so a crash (even SIGKILL) leaves nothing readable without
//!   the key (with [`EphemeralKeys`]: nothing readable at all), and the next
//!   start's [`sweep_orphans`] deletes it.
//! - **Liveness.** A live recording holds an exclusive `flock` on its
//!   directory for its whole lifetime; the kernel drops it when the process
//!   dies, which is how a sweep tells live recordings from orphans.
//! - **Deletion.** [`Recording::destroy`] wipes the key, unlinks every file
//!   (the wrapped key with the header), removes the directory and verifies
//!   nothing remains. That is a crypto-shred only when no key outside the
//!   process could unwrap a copy: see [`METHODS`].
//!
//! **Invariant:** no plaintext audio and no plaintext key ever reaches disk.
//! Participant ids (platform feed ids) appear only inside ciphertext; names are
//! never given to this module.

mod format;
mod intent;
pub mod keys;
mod sweep;

use std::collections::{vec_deque, VecDeque};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::core::media::{OpusPacket, PacketRun, ParticipantId};
use crate::secmem::{LockedBox, LockedVec};

pub use intent::{
    pending_receipt_intents, remove_receipt_intent, write_receipt_intent, PendingIntent,
};
pub use keys::{
    DataKey, EphemeralKeys, KeyCustody, KeyError, KeyProvider, LocalKeyFile, WrappedKey, KEY_LEN,
};
pub use sweep::{sweep_orphans, SweepFailure, SweepReport};

/// Default size at which a plaintext chunk is sealed: 64 KiB, about 20 s of
/// one speaker at 24 kbit/s.
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// Default memory budget for sealed chunks: 16 MiB, about 1.5 h of one
/// speaker at 24 kbit/s before anything is spilled.
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Smallest accepted [`RecordingConfig::chunk_bytes`].
pub const MIN_CHUNK_BYTES: usize = 1024;
/// Largest accepted [`RecordingConfig::chunk_bytes`].
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// [`Recording::destroy`] with [`EphemeralKeys`]: the only copy of the key
/// was wiped from memory, then the files unlinked. No copy of the ciphertext,
/// wherever it is, can be decrypted any more.
pub const METHOD_DESTROY_EPHEMERAL: &str = "crypto-shred(ephemeral-key)+unlink";
/// [`Recording::destroy`] with Key Vault: the key was wiped from memory and
/// its wrapped copy (the header) unlinked. A copy of the spool taken earlier
/// stays decryptable by whoever may unwrap with the vault key.
pub const METHOD_DESTROY_KEY_VAULT: &str = "crypto-shred(key-vault-wrapped)+unlink";
/// [`Recording::destroy`] with [`LocalKeyFile`]: files unlinked and the key
/// wiped from memory, but the key file that unwraps a copy remains. Not a
/// crypto-shred.
pub const METHOD_DESTROY_LOCAL_FILE: &str = "unlink(local-key-file)";
/// [`Recording::destroy`] with a provider this build does not know.
pub const METHOD_DESTROY_UNKNOWN: &str = "unlink(unknown-key-custody)";
/// [`sweep_orphans`] of an [`EphemeralKeys`] recording: the key died with
/// the process, so the ciphertext was undecryptable from that moment; the
/// sweep unlinks it.
pub const METHOD_SWEEP_EPHEMERAL: &str = "orphan-sweep(ephemeral-key-died-with-process)+unlink";
/// [`sweep_orphans`] of a Key Vault recording: the wrapped key and chunks
/// unlinked (earlier copies: as [`METHOD_DESTROY_KEY_VAULT`]).
pub const METHOD_SWEEP_KEY_VAULT: &str = "orphan-sweep(key-vault-wrapped)+unlink";
/// [`sweep_orphans`] of a [`LocalKeyFile`] recording: unlinked; the key file
/// remains.
pub const METHOD_SWEEP_LOCAL_FILE: &str = "orphan-sweep(local-key-file)+unlink";
/// [`sweep_orphans`] of a recording whose header was unreadable.
pub const METHOD_SWEEP_UNKNOWN: &str = "orphan-sweep(unknown-key-custody)+unlink";
/// Receipts written before key custody was stated (`Recording::destroy` then
/// used the local key file by default). Still valid in audit logs.
pub const LEGACY_METHOD_DESTROY: &str = "crypto-shred+unlink";
/// Orphan-sweep receipts written before key custody was stated.
pub const LEGACY_METHOD_SWEEP: &str = "orphan-sweep+unlink";

/// Every receipt method, with the guarantee it states.
pub const METHODS: &[(&str, &str)] = &[
    (
        METHOD_DESTROY_EPHEMERAL,
        "key only ever in process memory, wiped; no copy of the ciphertext can be decrypted",
    ),
    (
        METHOD_DESTROY_KEY_VAULT,
        "key wiped, wrapped key deleted; an earlier copy decrypts only with Key Vault unwrap rights",
    ),
    (
        METHOD_DESTROY_LOCAL_FILE,
        "files deleted; an earlier copy still decrypts with the local key file",
    ),
    (
        METHOD_DESTROY_UNKNOWN,
        "files deleted; key custody unknown",
    ),
    (
        METHOD_SWEEP_EPHEMERAL,
        "key died with the process; the leftover ciphertext was undecryptable, then deleted",
    ),
    (
        METHOD_SWEEP_KEY_VAULT,
        "orphan deleted with its wrapped key; an earlier copy decrypts only with Key Vault unwrap rights",
    ),
    (
        METHOD_SWEEP_LOCAL_FILE,
        "orphan deleted; an earlier copy still decrypts with the local key file",
    ),
    (
        METHOD_SWEEP_UNKNOWN,
        "orphan deleted; its header was unreadable, key custody unknown",
    ),
    (
        LEGACY_METHOD_DESTROY,
        "older receipt: key wiped and files deleted, custody not stated (then the local key file by default)",
    ),
    (
        LEGACY_METHOD_SWEEP,
        "older receipt: orphan deleted, custody not stated",
    ),
];

const HEADER_FILE: &str = "header.json";
const CHUNKS_FILE: &str = "chunks.bin";
/// Lock file in the spool root that serialises creation against sweeps.
const SPOOL_LOCK_FILE: &str = ".lock";
const MAX_HEADER_BYTES: u64 = 64 * 1024;
const FORMAT_VERSION: u32 = 1;
const CIPHER_NAME: &str = "aes-256-gcm/chunk-counter-nonce/v1";

/// Where and how recordings are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Root of the spool; each recording gets `spool_dir/<uuid>/` (0700).
    pub spool_dir: PathBuf,
    /// Sealed-chunk bytes kept in memory before the oldest are spilled
    /// (0 = spill every chunk as soon as it is sealed). The one plaintext
    /// chunk buffer (`chunk_bytes` + one record) comes on top.
    pub memory_budget_bytes: usize,
    /// Plaintext bytes per chunk, [`MIN_CHUNK_BYTES`]..=[`MAX_CHUNK_BYTES`].
    /// Smaller chunks lose less on a crash but cost more tags and frames.
    pub chunk_bytes: usize,
}

impl RecordingConfig {
    /// A config for `spool_dir` with the default budget and chunk size.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        RecordingConfig {
            spool_dir: spool_dir.into(),
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), RecordingError> {
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&self.chunk_bytes) {
            return Err(RecordingError::InvalidConfig(format!(
                "chunk_bytes is {}; must be {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}",
                self.chunk_bytes
            )));
        }
        if self.spool_dir.as_os_str().is_empty() {
            return Err(RecordingError::InvalidConfig("spool_dir is empty".into()));
        }
        Ok(())
    }
}

/// What a recording belongs to; written to the header and the report. Never
/// put participant names here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// The meeting's id (an opaque job id, not a URL).
    pub meeting_id: String,
    /// The tenant the meeting belongs to.
    pub tenant: String,
}

/// The recording's header file (`header.json`): everything needed to find
/// and decrypt the chunks given the KEK, and nothing in plaintext that must
/// not be on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingHeader {
    /// Format version (1).
    pub format: u32,
    /// The recording id (a UUID, also the directory name).
    pub id: String,
    /// Meeting id.
    pub meeting_id: String,
    /// Tenant.
    pub tenant: String,
    /// Chunk cipher and nonce scheme.
    pub cipher: String,
    /// The data key, wrapped.
    pub wrapped_key: WrappedKey,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// Counters of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingStats {
    /// Sealed chunks so far.
    pub chunks: u64,
    /// Ciphertext bytes of all sealed chunks (tags included, frames not).
    pub ciphertext_bytes: u64,
    /// Chunks written to the spool.
    pub spilled_chunks: u64,
    /// Bytes of the spool file (frames included).
    pub spilled_bytes: u64,
    /// Sealed ciphertext bytes held in memory.
    pub memory_bytes: usize,
    /// Plaintext bytes waiting in the unsealed chunk.
    pub pending_bytes: usize,
    /// SHA-256 (hex) over the ordered chunk list: for each chunk its index
    /// (u64 BE), ciphertext length (u64 BE) and SHA-256 of the ciphertext.
    pub manifest_sha256: String,
}

/// What was destroyed; the input of a deletion receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyReport {
    /// The recording id.
    pub recording_id: String,
    /// Meeting id (empty if a swept recording's header was unreadable).
    pub meeting_id: String,
    /// Tenant (empty if a swept recording's header was unreadable).
    pub tenant: String,
    /// Sealed chunks destroyed.
    pub chunks: u64,
    /// Ciphertext bytes destroyed.
    pub ciphertext_bytes: u64,
    /// [`RecordingStats::manifest_sha256`] of what was destroyed.
    pub manifest_sha256: String,
    /// One of [`METHODS`]: what was done and which key custody it had.
    pub method: String,
}

/// Why a recording operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The configuration is out of bounds.
    #[error("invalid recording config: {0}")]
    InvalidConfig(String),
    /// A file-system operation failed.
    #[error("recording spool {path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The spool's file system is full (ENOSPC/EDQUOT). Nothing was lost: the
    /// sealed chunks stay in memory (over budget) and spilling is retried on
    /// the next append or flush; the recording can still be destroyed.
    #[error("recording spool is full: cannot spill to {path}: {source}")]
    SpoolFull {
        /// The spool file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The spool could not be written for another reason; same guarantees as
    /// [`RecordingError::SpoolFull`].
    #[error("recording spool is unwritable: cannot spill to {path}: {source}")]
    SpoolUnwritable {
        /// The spool file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A packet cannot be recorded (id or payload out of bounds).
    #[error("packet not recorded: {0}")]
    Packet(String),
    /// The header file is missing or invalid.
    #[error("recording header {path}: {problem}")]
    Header {
        /// The header file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The spool file is damaged (truncated, misframed, reordered).
    #[error("recording chunks {path} at byte {offset}: {problem}")]
    Corrupt {
        /// The spool file.
        path: PathBuf,
        /// Where the problem starts.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A chunk failed authentication.
    #[error(
        "chunk {index} failed authentication (ciphertext, nonce or position altered, \
         or the wrong key or recording)"
    )]
    Decrypt {
        /// The chunk index.
        index: u64,
    },
    /// Sealing a chunk failed (cannot happen for bounded chunks; reported,
    /// not panicked).
    #[error("sealing chunk {index} failed")]
    Encrypt {
        /// The chunk index.
        index: u64,
    },
    /// The recording's directory disappeared while its lock was held: someone
    /// else removed it, so this process cannot claim to have destroyed it.
    #[error(
        "recording directory {dir} vanished while its lock was held (removed by someone else)"
    )]
    Vanished {
        /// The recording directory.
        dir: PathBuf,
    },
    /// Deletion left something behind.
    #[error("recording {dir} was not fully removed: {}", remaining.join("; "))]
    Residue {
        /// The recording directory.
        dir: PathBuf,
        /// What remains and why.
        remaining: Vec<String>,
    },
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> RecordingError {
    let path = path.to_path_buf();
    move |source| RecordingError::Io {
        path,
        action,
        source,
    }
}

fn spill_err(path: &Path, source: io::Error) -> RecordingError {
    let errno = source.raw_os_error();
    let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT]
        .iter()
        .any(|e| Some(e.raw_os_error()) == errno);
    if full {
        RecordingError::SpoolFull {
            path: path.to_path_buf(),
            source,
        }
    } else {
        RecordingError::SpoolUnwritable {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A sealed chunk kept in memory.
struct SealedChunk {
    index: u64,
    ciphertext: Vec<u8>,
}

/// One meeting's encrypted ephemeral recording.
///
/// Dropping a recording without [`Recording::destroy`] still zeroizes the key
/// and deletes its files (best effort, logged), but writes no report.
pub struct Recording {
    id: String,
    dir: PathBuf,
    meta: RecordingMeta,
    /// `None` only after destroy. Its AES key schedule is in locked memory,
    /// zeroized and wiped on drop.
    cipher: Option<LockedBox<Aes256Gcm>>,
    /// Who else can recover the key; decides the receipt method.
    custody: KeyCustody,
    /// The recording directory, open with an exclusive flock held.
    _lock: OwnedFd,
    chunk_bytes: usize,
    budget: usize,
    /// The unsealed plaintext chunk, in locked memory; sealed in place.
    /// Capacity is reserved up front so it never has to grow.
    plain: LockedVec<u8>,
    memory: VecDeque<SealedChunk>,
    memory_bytes: usize,
    spool: Option<File>,
    spool_path: PathBuf,
    spilled_chunks: u64,
    spilled_bytes: u64,
    /// Spool file offset of each spilled chunk's frame, by chunk index.
    spill_offsets: Vec<u64>,
    /// A read handle on the spool file, opened on the first read-back.
    spool_reader: Option<File>,
    next_index: u64,
    ciphertext_bytes: u64,
    manifest: Sha256,
    destroyed: bool,
    /// Test hook: the next spill writes half a frame, then fails with this errno.
    #[cfg(test)]
    fail_next_spill: Option<i32>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("id", &self.id)
            .field("chunks", &self.next_index)
            .field("spilled_chunks", &self.spilled_chunks)
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// Starts a recording under `cfg.spool_dir/<new uuid>/`.
    ///
    /// Creates the directory (0700) and `header.json` (0600, holding only the
    /// wrapped key and `meta`), and takes the directory's liveness lock. The
    /// plaintext `dek` is consumed: it lives on only inside the cipher, whose
    /// key schedule is zeroized on drop.
    pub fn create(
        cfg: &RecordingConfig,
        dek: DataKey,
        wrapped: WrappedKey,
        meta: RecordingMeta,
    ) -> Result<Self, RecordingError> {
        cfg.validate()?;
        let wrapped_provider = wrapped.provider.clone();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.spool_dir)
            .map_err(io_err(&cfg.spool_dir, "create spool directory"))?;
        // Shared: many recordings may be created at once; a sweep (exclusive)
        // never sees a directory between mkdir and its liveness lock.
        let spool_lock = sweep::lock_spool(&cfg.spool_dir, false)?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let dir = cfg.spool_dir.join(&id);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir, "create recording directory"))?;
        let built = (|| {
            let lock = match sweep::try_lock_dir(&dir)? {
                sweep::DirLock::Held(lock) => lock,
                sweep::DirLock::Busy => {
                    return Err(RecordingError::Io {
                        path: dir.clone(),
                        action: "lock new recording directory",
                        source: io::Error::from(io::ErrorKind::WouldBlock),
                    })
                }
                sweep::DirLock::Gone => return Err(RecordingError::Vanished { dir: dir.clone() }),
            };
            let header = RecordingHeader {
                format: FORMAT_VERSION,
                id: id.clone(),
                meeting_id: meta.meeting_id.clone(),
                tenant: meta.tenant.clone(),
                cipher: CIPHER_NAME.into(),
                wrapped_key: wrapped,
                created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            let path = dir.join(HEADER_FILE);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(io_err(&path, "create header"))?;
            let json = serde_json::to_vec_pretty(&header).map_err(|e| RecordingError::Header {
                path: path.clone(),
                problem: format!("cannot serialize: {e}"),
            })?;
            f.write_all(&json)
                .and_then(|()| f.sync_all())
                .map_err(io_err(&path, "write header"))?;
            Ok(lock)
        })();
        drop(spool_lock);
        let lock = match built {
            Ok(lock) => lock,
            Err(e) => {
                if let Err(cleanup) = sweep::remove_recording_dir(&dir) {
                    tracing::warn!(error = %cleanup, "Could not clean up a half-created recording.");
                }
                return Err(e);
            }
        };
        let custody = KeyCustody::of_provider(&wrapped_provider);
        let cipher = dek.cipher();
        drop(dek);
        tracing::debug!(recording_id = %id, "Recording created.");
        Ok(Recording {
            spool_path: dir.join(CHUNKS_FILE),
            id,
            dir,
            meta,
            cipher: Some(cipher),
            custody,
            _lock: lock,
            chunk_bytes: cfg.chunk_bytes,
            budget: cfg.memory_budget_bytes,
            plain: LockedVec::with_capacity(cfg.chunk_bytes + format::MAX_RECORD),
            memory: VecDeque::new(),
            memory_bytes: 0,
            spool: None,
            spilled_chunks: 0,
            spilled_bytes: 0,
            spill_offsets: Vec::new(),
            spool_reader: None,
            next_index: 0,
            ciphertext_bytes: 0,
            manifest: Sha256::new(),
            destroyed: false,
            #[cfg(test)]
            fail_next_spill: None,
        })
    }

    /// The recording id (a UUID).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The recording's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Meeting and tenant.
    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// Records one packet of `participant`.
    ///
    /// Seals the chunk when it reaches `chunk_bytes` and spills the oldest
    /// sealed chunks beyond the memory budget. On
    /// [`RecordingError::SpoolFull`]/[`RecordingError::SpoolUnwritable`] the
    /// packet *was* recorded; only the spill failed and will be retried.
    pub fn append(
        &mut self,
        participant: &ParticipantId,
        packet: &OpusPacket,
    ) -> Result<(), RecordingError> {
        let len = format::record_len(participant, packet.payload.len())
            .map_err(RecordingError::Packet)?;
        // Holds: the buffer is sealed as soon as it reaches chunk_bytes, and
        // its capacity is chunk_bytes + MAX_RECORD.
        debug_assert!(self.plain.len() + len <= self.plain.capacity());
        let capacity = self.plain.capacity();
        format::encode_record(
            &mut self.plain,
            participant,
            packet.seq,
            packet.at_ms,
            &packet.payload,
        );
        debug_assert_eq!(
            capacity,
            self.plain.capacity(),
            "plaintext buffer reallocated"
        );
        if self.plain.len() >= self.chunk_bytes {
            self.seal()?;
        }
        self.spill_over_budget()
    }

    /// Seals the partial chunk (if any) and spills beyond the budget.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.seal()?;
        self.spill_over_budget()
    }

    /// The counters and the manifest hash so far.
    pub fn stats(&self) -> RecordingStats {
        RecordingStats {
            chunks: self.next_index,
            ciphertext_bytes: self.ciphertext_bytes,
            spilled_chunks: self.spilled_chunks,
            spilled_bytes: self.spilled_bytes,
            memory_bytes: self.memory_bytes,
            pending_bytes: self.plain.len(),
            manifest_sha256: hex::encode(self.manifest.clone().finalize()),
        }
    }

    /// The index of the chunk that holds the most recently appended packet
    /// (the unsealed one while it has data).
    pub fn write_position(&self) -> u64 {
        if self.plain.is_empty() {
            self.next_index.saturating_sub(1)
        } else {
            self.next_index
        }
    }

    /// `participant`'s packets with `at_ms` in `from_ms..=to_ms` from chunks
    /// `first..=last`, in recording order: each chunk is taken from memory,
    /// read from the spool at its offset, or (the unsealed one) from the
    /// plaintext buffer, decrypted into a zeroizing buffer and scanned. Cost
    /// is proportional to the chunks asked for, not to the recording.
    pub fn read_packets(
        &mut self,
        participant: &ParticipantId,
        first: u64,
        last: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<PacketRun, RecordingError> {
        let mut run = PacketRun::default();
        let wanted = participant.0.as_str();
        let scan = |plain: &[u8], index: u64, run: &mut PacketRun| -> Result<(), RecordingError> {
            let mut pos = 0;
            loop {
                match format::decode_record(plain, &mut pos) {
                    Ok(Some(r)) => {
                        if r.participant == wanted && (from_ms..=to_ms).contains(&r.at_ms) {
                            run.push(r.seq, r.at_ms, r.payload);
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(problem) => {
                        return Err(RecordingError::Corrupt {
                            path: PathBuf::from(format!("<chunk {index}>")),
                            offset: pos as u64,
                            problem,
                        })
                    }
                }
            }
        };
        for index in first..=last.min(self.next_index) {
            if index == self.next_index {
                scan(&self.plain, index, &mut run)?;
                continue;
            }
            let ciphertext = self.chunk_ciphertext(index)?;
            let Some(body_len) = ciphertext.len().checked_sub(format::TAG_LEN) else {
                return Err(RecordingError::Decrypt { index });
            };
            let (body, tag) = ciphertext.split_at(body_len);
            // Plaintext only in locked, wiped memory, as in replay.
            let mut buf: LockedVec<u8> = LockedVec::with_capacity(body.len());
            buf.extend_from_slice(body);
            self.live_cipher()?
                .decrypt_in_place_detached(
                    Nonce::from_slice(&format::nonce_for(index)),
                    &format::aad_for(&self.id, index),
                    &mut buf[..],
                    aes_gcm::Tag::from_slice(tag),
                )
                .map_err(|_| RecordingError::Decrypt { index })?;
            scan(&buf, index, &mut run)?;
        }
        Ok(run)
    }

    /// A sealed chunk's ciphertext, from memory or the spool.
    fn chunk_ciphertext(&mut self, index: u64) -> Result<Vec<u8>, RecordingError> {
        if let Some(front) = self.memory.front() {
            if index >= front.index {
                let i = usize::try_from(index - front.index).unwrap_or(usize::MAX);
                return match self.memory.get(i) {
                    Some(c) if c.index == index => Ok(c.ciphertext.clone()),
                    _ => Err(RecordingError::Corrupt {
                        path: PathBuf::from("<memory>"),
                        offset: 0,
                        problem: format!("chunk {index} is not where it should be"),
                    }),
                };
            }
        }
        let offset = usize::try_from(index)
            .ok()
            .and_then(|i| self.spill_offsets.get(i).copied())
            .ok_or_else(|| RecordingError::Corrupt {
                path: self.spool_path.clone(),
                offset: 0,
                problem: format!("chunk {index} was never spilled"),
            })?;
        use std::os::unix::fs::FileExt;
        if self.spool_reader.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&self.spool_path)
                .map_err(io_err(&self.spool_path, "open"))?;
            self.spool_reader = Some(f);
        }
        let Some(file) = self.spool_reader.as_ref() else {
            return Err(io_err(&self.spool_path, "open")(io::Error::from(
                io::ErrorKind::NotFound,
            )));
        };
        let corrupt = |problem: String| RecordingError::Corrupt {
            path: self.spool_path.clone(),
            offset,
            problem,
        };
        let mut raw = [0u8; format::FRAME_HEADER_LEN];
        file.read_exact_at(&mut raw, offset)
            .map_err(io_err(&self.spool_path, "read"))?;
        let header = format::parse_frame_header(&raw).map_err(corrupt)?;
        if header.index != index || header.nonce != format::nonce_for(index) {
            return Err(corrupt(format!(
                "frame at this offset is chunk {}, not {index}",
                header.index
            )));
        }
        let mut ciphertext = vec![0u8; header.len];
        file.read_exact_at(&mut ciphertext, offset + format::FRAME_HEADER_LEN as u64)
            .map_err(io_err(&self.spool_path, "read"))?;
        Ok(ciphertext)
    }

    /// Every recorded packet in order: spilled chunks from disk, then those in
    /// memory. Seals the partial chunk first (without spilling, so it works on
    /// a full spool). For replay after an STT reconnect.
    pub fn replay(&mut self) -> Result<Packets<'_>, RecordingError> {
        self.seal()?;
        let cipher = LockedBox::new(Aes256Gcm::clone(self.live_cipher()?));
        let disk = if self.spilled_bytes > 0 {
            let file = File::open(&self.spool_path).map_err(io_err(&self.spool_path, "open"))?;
            Some(ChunkReader::new(
                file,
                self.spool_path.clone(),
                self.spilled_bytes,
            ))
        } else {
            None
        };
        Ok(Packets::new(
            cipher,
            self.id.clone(),
            disk,
            Some(self.memory.iter()),
        ))
    }

    /// Crypto-shreds and deletes the recording: zeroizes the key and all
    /// buffers, unlinks every file, removes the directory and verifies that it
    /// is gone. Works after a spool-full error too. The report describes every
    /// sealed chunk; an unsealed partial chunk is zeroized, not counted.
    pub fn destroy(mut self) -> Result<DestroyReport, RecordingError> {
        let report = self.destroy_report();
        self.shred();
        self.destroyed = true;
        sweep::remove_recording_dir(&self.dir)?;
        tracing::info!(
            recording_id = %self.id,
            chunks = report.chunks,
            ciphertext_bytes = report.ciphertext_bytes,
            "Recording destroyed."
        );
        Ok(report)
    }

    /// The report [`Recording::destroy`] will return if nothing is appended
    /// in between (the partial chunk is not counted): what a receipt intent
    /// describes before the recording is destroyed.
    pub fn destroy_report(&self) -> DestroyReport {
        DestroyReport {
            recording_id: self.id.clone(),
            meeting_id: self.meta.meeting_id.clone(),
            tenant: self.meta.tenant.clone(),
            chunks: self.next_index,
            ciphertext_bytes: self.ciphertext_bytes,
            manifest_sha256: hex::encode(self.manifest.clone().finalize()),
            method: self.custody.destroy_method().into(),
        }
    }

    /// Zeroizes key and buffers and closes the spool file.
    fn shred(&mut self) {
        // Dropping the cipher zeroizes its key schedule (aes/zeroize).
        self.cipher = None;
        self.plain.clear();
        for chunk in &mut self.memory {
            chunk.ciphertext.zeroize();
        }
        self.memory.clear();
        self.memory_bytes = 0;
        self.spool = None;
        self.spool_reader = None;
    }

    fn live_cipher(&self) -> Result<&Aes256Gcm, RecordingError> {
        // Only destroy() clears it, and destroy() consumes self.
        self.cipher.as_deref().ok_or(RecordingError::Encrypt {
            index: self.next_index,
        })
    }

    fn seal(&mut self) -> Result<(), RecordingError> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let index = self.next_index;
        let aad = format::aad_for(&self.id, index);
        // Encrypted in place in the locked buffer: the plaintext is never
        // copied to ordinary heap memory.
        let cipher = self
            .cipher
            .as_deref()
            .ok_or(RecordingError::Encrypt { index })?;
        let sealed = cipher.encrypt_in_place_detached(
            Nonce::from_slice(&format::nonce_for(index)),
            &aad,
            &mut self.plain[..],
        );
        let tag = match sealed {
            Ok(tag) => tag,
            Err(_) => {
                self.plain.clear();
                return Err(RecordingError::Encrypt { index });
            }
        };
        let mut ciphertext = Vec::with_capacity(self.plain.len() + format::TAG_LEN);
        ciphertext.extend_from_slice(&self.plain);
        ciphertext.extend_from_slice(&tag);
        self.plain.clear();
        format::manifest_update(&mut self.manifest, index, &ciphertext);
        self.ciphertext_bytes += ciphertext.len() as u64;
        self.memory_bytes += ciphertext.len();
        self.memory.push_back(SealedChunk { index, ciphertext });
        self.next_index += 1;
        tracing::trace!(recording_id = %self.id, index, "Chunk sealed.");
        Ok(())
    }

    fn spill_over_budget(&mut self) -> Result<(), RecordingError> {
        while self.memory_bytes > self.budget {
            self.spill_oldest()?;
        }
        Ok(())
    }

    fn spill_oldest(&mut self) -> Result<(), RecordingError> {
        let Some(chunk) = self.memory.front() else {
            return Ok(());
        };
        let mut frame = Vec::with_capacity(format::FRAME_HEADER_LEN + chunk.ciphertext.len());
        frame.extend_from_slice(&format::frame_header(chunk.index, chunk.ciphertext.len()));
        frame.extend_from_slice(&chunk.ciphertext);
        if self.spool.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&self.spool_path)
                .map_err(|e| spill_err(&self.spool_path, e))?;
            self.spool = Some(f);
        }
        let Some(file) = self.spool.as_mut() else {
            return Ok(()); // Unreachable: opened just above.
        };
        #[cfg(test)]
        let injected = self.fail_next_spill.take();
        #[cfg(not(test))]
        let injected: Option<i32> = None;
        let written = match injected {
            Some(errno) => file
                .write_all(&frame[..frame.len() / 2])
                .and(Err(io::Error::from_raw_os_error(errno))),
            None => file.write_all(&frame),
        };
        if let Err(e) = written {
            // Cut off a partial frame so the file stays a sequence of whole
            // frames; the chunk stays in memory for the next attempt.
            if let Err(te) = file.set_len(self.spilled_bytes) {
                tracing::warn!(error = %te, "Could not truncate a partial spill.");
            }
            tracing::warn!(recording_id = %self.id, error = %e, "Spill to the spool failed.");
            return Err(spill_err(&self.spool_path, e));
        }
        self.spill_offsets.push(self.spilled_bytes);
        self.spilled_bytes += frame.len() as u64;
        self.spilled_chunks += 1;
        if let Some(chunk) = self.memory.pop_front() {
            self.memory_bytes -= chunk.ciphertext.len();
        }
        Ok(())
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        self.shred();
        match sweep::remove_recording_dir(&self.dir) {
            Ok(()) => tracing::warn!(
                recording_id = %self.id,
                "Recording dropped without destroy(); its key was zeroized and its files deleted, \
                 but no receipt was written."
            ),
            Err(e) => tracing::error!(
                recording_id = %self.id,
                error = %e,
                "Recording dropped without destroy() and its files could not be deleted; \
                 the next start's sweep will retry."
            ),
        }
    }
}

/// Reads the header of the recording in `dir`.
pub fn read_header(dir: &Path) -> Result<RecordingHeader, RecordingError> {
    let path = dir.join(HEADER_FILE);
    let header_err = |problem: String| RecordingError::Header {
        path: path.clone(),
        problem,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| header_err(format!("cannot open: {e}")))?;
    let mut text = Vec::new();
    file.take(MAX_HEADER_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| header_err(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_HEADER_BYTES {
        return Err(header_err(format!("larger than {MAX_HEADER_BYTES} bytes")));
    }
    let header: RecordingHeader =
        serde_json::from_slice(&text).map_err(|e| header_err(format!("invalid JSON: {e}")))?;
    if header.format != FORMAT_VERSION {
        return Err(header_err(format!(
            "format {} is not supported (expected {FORMAT_VERSION})",
            header.format
        )));
    }
    if header.cipher != CIPHER_NAME {
        return Err(header_err(format!("unknown cipher {:?}", header.cipher)));
    }
    match uuid::Uuid::parse_str(&header.id) {
        Ok(u) if u.hyphenated().to_string() == header.id => {}
        _ => return Err(header_err(format!("id {:?} is not a UUID", header.id))),
    }
    Ok(header)
}

/// Decrypts the spilled chunks of the recording in `dir`, in order.
///
/// Every chunk is authenticated against the recording id and its position;
/// altered, swapped, duplicated or foreign chunks, a truncated frame and a
/// wrong key are errors (the iterator yields the error and then stops).
/// Chunks missing from the end of the file cannot be detected here; compare
/// [`RecordingStats::spilled_chunks`] when you have it.
pub fn open_recording(dir: &Path, dek: &DataKey) -> Result<Packets<'static>, RecordingError> {
    let header = read_header(dir)?;
    let path = dir.join(CHUNKS_FILE);
    let disk = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
    {
        Ok(file) => {
            let len = file.metadata().map_err(io_err(&path, "stat"))?.len();
            Some(ChunkReader::new(file, path, len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&path, "open")(e)),
    };
    Ok(Packets::new(dek.cipher(), header.id, disk, None))
}

/// Reads whole frames from a spool file up to a byte limit.
struct ChunkReader {
    file: BufReader<File>,
    path: PathBuf,
    offset: u64,
    limit: u64,
}

impl ChunkReader {
    fn new(file: File, path: PathBuf, limit: u64) -> Self {
        ChunkReader {
            file: BufReader::new(file),
            path,
            offset: 0,
            limit,
        }
    }

    fn corrupt(&self, offset: u64, problem: String) -> RecordingError {
        RecordingError::Corrupt {
            path: self.path.clone(),
            offset,
            problem,
        }
    }

    /// The next frame, `None` at the limit.
    fn next_frame(&mut self) -> Result<Option<(format::FrameHeader, Vec<u8>)>, RecordingError> {
        let start = self.offset;
        let left = self.limit - self.offset;
        if left == 0 {
            return Ok(None);
        }
        if left < format::FRAME_HEADER_LEN as u64 {
            return Err(self.corrupt(start, format!("truncated frame header ({left} bytes)")));
        }
        let mut raw = [0u8; format::FRAME_HEADER_LEN];
        self.file
            .read_exact(&mut raw)
            .map_err(io_err(&self.path, "read"))?;
        let header = format::parse_frame_header(&raw).map_err(|p| self.corrupt(start, p))?;
        let body_left = left - format::FRAME_HEADER_LEN as u64;
        if (header.len as u64) > body_left {
            return Err(self.corrupt(
                start,
                format!(
                    "chunk {} is truncated ({} of {} ciphertext bytes)",
                    header.index, body_left, header.len
                ),
            ));
        }
        let mut ciphertext = vec![0u8; header.len];
        self.file
            .read_exact(&mut ciphertext)
            .map_err(io_err(&self.path, "read"))?;
        self.offset += (format::FRAME_HEADER_LEN + header.len) as u64;
        Ok(Some((header, ciphertext)))
    }
}

/// Iterator over decrypted packets; see [`open_recording`] and
/// [`Recording::replay`]. Each chunk is decrypted in place in one locked
/// buffer ([`crate::secmem`]), wiped before the next and on drop.
pub struct Packets<'a> {
    cipher: LockedBox<Aes256Gcm>,
    recording_id: String,
    disk: Option<ChunkReader>,
    memory: Option<vec_deque::Iter<'a, SealedChunk>>,
    next_index: u64,
    current: LockedVec<u8>,
    pos: usize,
    done: bool,
}

impl fmt::Debug for Packets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packets")
            .field("recording_id", &self.recording_id)
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

impl<'a> Packets<'a> {
    fn new(
        cipher: LockedBox<Aes256Gcm>,
        recording_id: String,
        disk: Option<ChunkReader>,
        memory: Option<vec_deque::Iter<'a, SealedChunk>>,
    ) -> Self {
        Packets {
            cipher,
            recording_id,
            disk,
            memory,
            next_index: 0,
            current: LockedVec::with_capacity(0),
            pos: 0,
            done: false,
        }
    }

    /// Loads and decrypts the next chunk; `Ok(false)` when there is none.
    fn load_next_chunk(&mut self) -> Result<bool, RecordingError> {
        let expected = self.next_index;
        let (index, nonce, ciphertext, offset) = match self.disk.as_mut() {
            Some(reader) => {
                let offset = reader.offset;
                match reader.next_frame()? {
                    Some((h, ct)) => {
                        if h.index != expected {
                            return Err(reader.corrupt(
                                offset,
                                format!(
                                    "chunk index {} where {expected} was expected \
                                     (chunks reordered, missing or duplicated)",
                                    h.index
                                ),
                            ));
                        }
                        if h.nonce != format::nonce_for(h.index) {
                            return Err(reader.corrupt(
                                offset,
                                format!("nonce of chunk {} does not match its index", h.index),
                            ));
                        }
                        (h.index, h.nonce, ct, Some(offset))
                    }
                    None => {
                        self.disk = None;
                        return self.load_next_chunk();
                    }
                }
            }
            None => match self.memory.as_mut().and_then(Iterator::next) {
                Some(chunk) => (
                    chunk.index,
                    format::nonce_for(chunk.index),
                    chunk.ciphertext.clone(),
                    None,
                ),
                None => return Ok(false),
            },
        };
        if index != expected {
            // In-memory chunks follow the spilled ones without gaps.
            return Err(RecordingError::Corrupt {
                path: PathBuf::from("<memory>"),
                offset: offset.unwrap_or(0),
                problem: format!("chunk index {index} where {expected} was expected"),
            });
        }
        self.current.clear();
        let Some(body_len) = ciphertext.len().checked_sub(format::TAG_LEN) else {
            return Err(RecordingError::Decrypt { index });
        };
        let (body, tag) = ciphertext.split_at(body_len);
        self.current.extend_from_slice(body);
        let opened = self.cipher.decrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &format::aad_for(&self.recording_id, index),
            &mut self.current[..],
            aes_gcm::Tag::from_slice(tag),
        );
        if opened.is_err() {
            self.current.clear();
            return Err(RecordingError::Decrypt { index });
        }
        self.pos = 0;
        self.next_index += 1;
        Ok(true)
    }

    fn next_packet(&mut self) -> Result<Option<(ParticipantId, OpusPacket)>, RecordingError> {
        loop {
            match format::decode_record(&self.current, &mut self.pos) {
                Ok(Some(r)) => {
                    return Ok(Some((
                        ParticipantId(r.participant.to_string()),
                        OpusPacket {
                            seq: r.seq,
                            at_ms: r.at_ms,
                            payload: bytes::Bytes::copy_from_slice(r.payload),
                        },
                    )))
                }
                Ok(None) => {
                    if !self.load_next_chunk()? {
                        return Ok(None);
                    }
                }
                Err(problem) => {
                    return Err(RecordingError::Corrupt {
                        path: PathBuf::from(format!(
                            "<chunk {}>",
                            self.next_index.saturating_sub(1)
                        )),
                        offset: self.pos as u64,
                        problem,
                    })
                }
            }
        }
    }
}

impl Iterator for Packets<'_> {
    type Item = Result<(ParticipantId, OpusPacket), RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_packet() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.current.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
