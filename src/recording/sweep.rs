//! Liveness locks, directory removal and the orphan sweep.
//!
//! Locking protocol:
//! - A live [`super::Recording`] holds an exclusive `flock` on its directory
//!   for its lifetime; the kernel releases it when the process exits or is
//!   killed, so "lock obtainable" means "orphaned".
//! - `spool_dir/.lock` closes the window between `mkdir` and that lock: a
//!   creator holds it shared while it makes and locks its directory, a sweep
//!   holds it exclusively while it claims orphans (by taking their locks).
//!   Two sweeps at once never claim the same directory, because claiming
//!   means holding its lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::{format, io_err, read_header, DestroyReport, RecordingError};
use super::{KeyCustody, CHUNKS_FILE, SPOOL_LOCK_FILE};

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Orphans destroyed, one report each (write a receipt for each).
    pub destroyed: Vec<DestroyReport>,
    /// Recording ids skipped because another open file holds their lock: a
    /// live recording, or an orphan a concurrent sweep is removing.
    pub live: Vec<String>,
    /// Orphans that could not be fully removed.
    pub failed: Vec<SweepFailure>,
}

/// An orphan the sweep could not remove.
#[derive(Debug)]
pub struct SweepFailure {
    /// The recording id (directory name).
    pub recording_id: String,
    /// Why.
    pub error: RecordingError,
}

fn flock_retrying(fd: &impl std::os::fd::AsFd, op: FlockOperation) -> Result<(), Errno> {
    loop {
        match rustix::fs::flock(fd, op) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Opens (creating 0600 if needed) and locks `spool_dir/.lock`, blocking.
pub(super) fn lock_spool(spool_dir: &Path, exclusive: bool) -> Result<File, RecordingError> {
    let path = spool_dir.join(SPOOL_LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io_err(&path, "open spool lock"))?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    flock_retrying(&file, op).map_err(|e| io_err(&path, "lock spool")(e.into()))?;
    Ok(file)
}

/// The outcome of trying a recording directory's liveness lock.
#[derive(Debug)]
pub(super) enum DirLock {
    /// The lock is ours and the directory is still linked at its path: the
    /// recording is ours to keep or destroy.
    Held(OwnedFd),
    /// A live process (or a concurrent sweep) holds the lock.
    Busy,
    /// The directory was unlinked or replaced between opening and locking
    /// (a concurrent sweep destroyed it and released its lock). The lock on
    /// the old inode means nothing: this recording is not ours.
    Gone,
}

/// Opens `dir` and tries its exclusive liveness lock without blocking.
pub(super) fn try_lock_dir(dir: &Path) -> Result<DirLock, RecordingError> {
    try_lock_dir_with(dir, || {})
}

/// [`try_lock_dir`] with a hook between `open` and `flock`, where a
/// concurrent sweep can remove the directory (tests use it to make that
/// interleaving happen every time).
pub(super) fn try_lock_dir_with(
    dir: &Path,
    between_open_and_lock: impl FnOnce(),
) -> Result<DirLock, RecordingError> {
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(DirLock::Gone),
        Err(e) => return Err(io_err(dir, "open recording directory")(e.into())),
    };
    between_open_and_lock();
    match flock_retrying(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(DirLock::Busy),
        Err(e) => return Err(io_err(dir, "lock recording directory")(e.into())),
    }
    // Holding the lock proves nothing if the directory we opened is no
    // longer the one at `dir`: the previous holder may have removed it just
    // before releasing. Ours only if still linked and still at this path.
    let held =
        rustix::fs::fstat(&fd).map_err(|e| io_err(dir, "stat locked directory")(e.into()))?;
    if held.st_nlink == 0 {
        return Ok(DirLock::Gone);
    }
    match rustix::fs::lstat(dir) {
        Ok(now) if now.st_dev == held.st_dev && now.st_ino == held.st_ino => Ok(DirLock::Held(fd)),
        Ok(_) | Err(Errno::NOENT) => Ok(DirLock::Gone),
        Err(e) => Err(io_err(dir, "stat recording directory")(e.into())),
    }
}

/// Unlinks everything in `dir`, removes it and checks it is gone.
///
/// The caller holds `dir`'s liveness lock, so nobody else may remove it: a
/// directory that is missing at the start is an error
/// ([`RecordingError::Vanished`]), never "already removed". Entries inside
/// are ours alone too, so a missing entry is an error as well.
pub(super) fn remove_recording_dir(dir: &Path) -> Result<(), RecordingError> {
    let mut remaining = Vec::new();
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordingError::Vanished {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => remaining.push(format!("cannot list: {e}")),
        Ok(entries) => {
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        remaining.push(format!("cannot list: {e}"));
                        continue;
                    }
                };
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                // Never follow a symlink out of the directory: unlink the link.
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let removed = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    remaining.push(format!("{name}: {e}"));
                }
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        remaining.push(format!("directory: {e}"));
    }
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(_) => remaining.push("the directory still exists".into()),
        Err(e) => remaining.push(format!("cannot verify removal: {e}")),
    }
    if remaining.is_empty() {
        Ok(())
    } else {
        Err(RecordingError::Residue {
            dir: dir.to_path_buf(),
            remaining,
        })
    }
}

/// Destroys every recording in `spool_dir` that no live process holds.
///
/// Live recordings are skipped. Only entries named like a recording id (a
/// hyphenated UUID) are touched, so a misconfigured spool directory cannot
/// lose unrelated files. Each orphan is described from its header and the
/// complete frames of its spool file (a torn last frame is deleted but not
/// counted). Safe to run concurrently with itself and with recordings being
/// created. A missing spool directory is an empty sweep. `Err` only if the
/// spool directory itself cannot be read or locked.
pub fn sweep_orphans(spool_dir: &Path) -> Result<SweepReport, RecordingError> {
    let mut report = SweepReport::default();
    match fs::symlink_metadata(spool_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_err(spool_dir, "stat spool directory")(e)),
        Ok(_) => {}
    }
    let spool_lock = lock_spool(spool_dir, true)?;
    let mut claimed = Vec::new();
    let entries = fs::read_dir(spool_dir).map_err(io_err(spool_dir, "list spool directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(spool_dir, "list spool directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == SPOOL_LOCK_FILE {
            continue;
        }
        match uuid::Uuid::parse_str(&name) {
            Ok(u) if u.hyphenated().to_string() == name => {}
            _ => {
                tracing::debug!(entry = %name, "Sweep skips a foreign spool entry.");
                continue;
            }
        }
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            tracing::warn!(entry = %name, "Sweep skips a spool entry that is not a directory.");
            continue;
        }
        let path = entry.path();
        match try_lock_dir(&path) {
            Ok(DirLock::Held(lock)) => claimed.push((name, path, lock)),
            Ok(DirLock::Busy) => report.live.push(name),
            // Destroyed by a concurrent sweep between listing and locking:
            // its receipt is that sweep's to write, not ours.
            Ok(DirLock::Gone) => {}
            Err(error) => report.failed.push(SweepFailure {
                recording_id: name,
                error,
            }),
        }
    }
    drop(spool_lock);
    for (name, path, lock) in claimed {
        let destroy_report = describe_orphan(&path, &name);
        let removed = remove_recording_dir(&path);
        drop(lock);
        match removed {
            Ok(()) => {
                tracing::info!(
                    recording_id = %name,
                    chunks = destroy_report.chunks,
                    "Swept an orphaned recording."
                );
                report.destroyed.push(destroy_report);
            }
            Err(error) => {
                tracing::warn!(recording_id = %name, error = %error, "Could not sweep an orphaned recording.");
                report.failed.push(SweepFailure {
                    recording_id: name,
                    error,
                });
            }
        }
    }
    Ok(report)
}

/// Builds the report of an orphan from its header and spool file, without
/// decrypting anything.
fn describe_orphan(dir: &Path, name: &str) -> DestroyReport {
    let (meeting_id, tenant, custody) = match read_header(dir) {
        Ok(h) if h.id == name => (
            h.meeting_id,
            h.tenant,
            KeyCustody::of_provider(&h.wrapped_key.provider),
        ),
        Ok(_) => {
            tracing::warn!(recording_id = %name, "Orphan's header names another recording id.");
            (String::new(), String::new(), KeyCustody::Unknown)
        }
        Err(e) => {
            tracing::warn!(recording_id = %name, error = %e, "Orphan's header is unreadable.");
            (String::new(), String::new(), KeyCustody::Unknown)
        }
    };
    let (chunks, ciphertext_bytes, manifest) = scan_chunks(&dir.join(CHUNKS_FILE));
    DestroyReport {
        recording_id: name.to_string(),
        meeting_id,
        tenant,
        chunks,
        ciphertext_bytes,
        manifest_sha256: hex::encode(manifest.finalize()),
        method: custody.sweep_method().into(),
    }
}

/// Counts the complete, well-framed chunks of a spool file, stopping at the
/// first damaged or torn frame.
fn scan_chunks(path: &Path) -> (u64, u64, Sha256) {
    let mut manifest = Sha256::new();
    let (mut chunks, mut bytes) = (0u64, 0u64);
    let Ok(file) = File::open(path) else {
        return (chunks, bytes, manifest);
    };
    let mut reader = BufReader::new(file);
    loop {
        let mut raw = [0u8; format::FRAME_HEADER_LEN];
        if reader.read_exact(&mut raw).is_err() {
            break;
        }
        let Ok(h) = format::parse_frame_header(&raw) else {
            break;
        };
        let mut ciphertext = vec![0u8; h.len];
        if reader.read_exact(&mut ciphertext).is_err() {
            break;
        }
        format::manifest_update(&mut manifest, h.index, &ciphertext);
        chunks += 1;
        bytes += ciphertext.len() as u64;
    }
    (chunks, bytes, manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_missing_dir_is_an_error() {
        // The caller holds the lock: a missing directory was removed by
        // someone else and must not be reported as destroyed by us.
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = remove_recording_dir(&tmp.path().join("nope")).expect_err("missing is not ours");
        assert!(matches!(err, RecordingError::Vanished { .. }), "{err}");
    }

    #[test]
    fn a_directory_removed_between_open_and_lock_is_not_ours() {
        // The interleaving of two sweeps, made to happen every time: the
        // second opens the directory, the first removes it and drops its
        // lock, the second then takes the lock of an unlinked inode.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("rec");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("chunks.bin"), b"x").expect("write");
        let got = try_lock_dir_with(&dir, || {
            let first = match try_lock_dir(&dir).expect("first lock") {
                DirLock::Held(fd) => fd,
                other => panic!("first sweep must hold it: {other:?}"),
            };
            remove_recording_dir(&dir).expect("first sweep removes it");
            drop(first);
        })
        .expect("lock");
        assert!(matches!(got, DirLock::Gone), "{got:?}");
    }

    #[test]
    fn a_directory_replaced_between_open_and_lock_is_not_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("rec");
        fs::create_dir(&dir).expect("mkdir");
        let got = try_lock_dir_with(&dir, || {
            fs::remove_dir(&dir).expect("rmdir");
            fs::create_dir(&dir).expect("mkdir again");
        })
        .expect("lock");
        assert!(matches!(got, DirLock::Gone), "{got:?}");
        assert!(matches!(
            try_lock_dir(&dir).expect("lock"),
            DirLock::Held(_)
        ));
    }

    #[test]
    fn a_held_directory_is_busy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("rec");
        fs::create_dir(&dir).expect("mkdir");
        let _held = try_lock_dir(&dir).expect("lock");
        assert!(matches!(try_lock_dir(&dir).expect("lock"), DirLock::Busy));
        assert!(matches!(
            try_lock_dir(&tmp.path().join("nope")).expect("lock"),
            DirLock::Gone
        ));
    }

    #[test]
    fn remove_unlinks_symlinks_without_following() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside.txt");
        fs::write(&outside, b"keep me").expect("write");
        let dir = tmp.path().join("rec");
        fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, dir.join("link")).expect("symlink");
        fs::create_dir(dir.join("sub")).expect("mkdir");
        fs::write(dir.join("sub/x"), b"x").expect("write");
        remove_recording_dir(&dir).expect("removed");
        assert!(!dir.exists());
        assert_eq!(fs::read(&outside).expect("still there"), b"keep me");
    }

    #[test]
    fn scan_stops_at_torn_frame() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("chunks.bin");
        let mut data = Vec::new();
        for i in 0..3u64 {
            data.extend_from_slice(&format::frame_header(i, 20));
            data.extend_from_slice(&[i as u8; 20]);
        }
        data.extend_from_slice(&format::frame_header(3, 20));
        data.extend_from_slice(&[3u8; 5]);
        fs::write(&p, &data).expect("write");
        let (chunks, bytes, _) = scan_chunks(&p);
        assert_eq!((chunks, bytes), (3, 60));
    }
}
