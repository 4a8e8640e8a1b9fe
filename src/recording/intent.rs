//! Receipt intents: the write-ahead half of "no deletion without a receipt".
//!
//! Before a run destroys its recording it writes the receipt it is about to
//! append as `spool_dir/<recording id>.receipt-intent.json` (0600, written to
//! a temporary name, fsynced and renamed, so it is whole or absent). Once the
//! receipt is in the audit log the intent is removed. A process that dies in
//! between leaves the intent behind with its recording directory gone; the
//! next start's sweep ([`pending_receipt_intents`]) finds it and appends the
//! receipt then. The audit log's `append_once` makes that exactly one receipt
//! per recording, whoever gets there first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{io_err, RecordingError};

const SUFFIX: &str = ".receipt-intent.json";
const TMP_SUFFIX: &str = ".receipt-intent.tmp";
/// Largest intent read back (a receipt is well under 1 KiB).
const MAX_INTENT_BYTES: u64 = 64 * 1024;

/// A receipt intent whose recording is gone: its receipt may be missing.
#[derive(Debug)]
pub struct PendingIntent {
    /// The recording id.
    pub recording_id: String,
    /// What the run wrote (its receipt, as JSON).
    pub body: Vec<u8>,
}

fn is_recording_id(s: &str) -> bool {
    matches!(uuid::Uuid::parse_str(s), Ok(u) if u.hyphenated().to_string() == s)
}

fn intent_path(spool_dir: &Path, recording_id: &str) -> Result<PathBuf, RecordingError> {
    if !is_recording_id(recording_id) {
        return Err(RecordingError::InvalidConfig(format!(
            "receipt intent for {recording_id:?}: not a recording id"
        )));
    }
    Ok(spool_dir.join(format!("{recording_id}{SUFFIX}")))
}

/// Durably records that `recording_id` is about to be destroyed, with the
/// receipt (`body`) the caller will append. Replaces an earlier intent for
/// the same recording.
pub fn write_receipt_intent(
    spool_dir: &Path,
    recording_id: &str,
    body: &[u8],
) -> Result<(), RecordingError> {
    let path = intent_path(spool_dir, recording_id)?;
    let tmp = spool_dir.join(format!(".{recording_id}{TMP_SUFFIX}"));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(spool_dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&path, "write receipt intent")(e));
    }
    Ok(())
}

/// Removes the intent of `recording_id` once its receipt is in the audit
/// log. Already gone is fine: removing an intent claims nothing.
pub fn remove_receipt_intent(spool_dir: &Path, recording_id: &str) -> Result<(), RecordingError> {
    let path = intent_path(spool_dir, recording_id)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path, "remove receipt intent")(e)),
    }
}

/// The intents in `spool_dir` whose recording directory no longer exists:
/// their run destroyed the recording (or a sweep did) and may have died
/// before appending the receipt. Intents whose directory is still there
/// belong to a live run or to an orphan the sweep has not removed yet, and
/// are left alone. Leftover temporary files of such finished intents are
/// removed. A missing spool is empty.
pub fn pending_receipt_intents(spool_dir: &Path) -> Result<Vec<PendingIntent>, RecordingError> {
    let entries = match fs::read_dir(spool_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(spool_dir, "list spool directory")(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(spool_dir, "list spool directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (id, tmp) = if let Some(id) = name.strip_suffix(SUFFIX) {
            (id, false)
        } else if let Some(id) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(TMP_SUFFIX))
        {
            (id, true)
        } else {
            continue;
        };
        if !is_recording_id(id) {
            continue;
        }
        match fs::symlink_metadata(spool_dir.join(id)) {
            Ok(_) => continue, // Not destroyed yet: not ours to complete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&spool_dir.join(id), "stat recording directory")(e)),
        }
        let path = entry.path();
        if tmp {
            // A write that never completed: its rename never happened, so
            // its run never started destroying under it.
            let _ = fs::remove_file(&path);
            continue;
        }
        let mut body = Vec::new();
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .and_then(|f| f.take(MAX_INTENT_BYTES + 1).read_to_end(&mut body));
        match read {
            Ok(_) if body.len() as u64 <= MAX_INTENT_BYTES => out.push(PendingIntent {
                recording_id: id.to_string(),
                body,
            }),
            Ok(_) => {
                return Err(RecordingError::Header {
                    path,
                    problem: format!("receipt intent larger than {MAX_INTENT_BYTES} bytes"),
                })
            }
            // Completed and removed by its run in between.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "read receipt intent")(e)),
        }
    }
    out.sort_by(|a, b| a.recording_id.cmp(&b.recording_id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_is_pending_only_once_its_recording_is_gone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spool = tmp.path();
        let id = uuid::Uuid::new_v4().to_string();
        fs::create_dir(spool.join(&id)).expect("mkdir");
        write_receipt_intent(spool, &id, b"{\"r\":1}").expect("write");
        assert!(pending_receipt_intents(spool).expect("scan").is_empty());
        fs::remove_dir(spool.join(&id)).expect("rmdir");
        let p = pending_receipt_intents(spool).expect("scan");
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].recording_id.as_str(), &p[0].body[..]),
            (id.as_str(), &b"{\"r\":1}"[..])
        );
        remove_receipt_intent(spool, &id).expect("remove");
        remove_receipt_intent(spool, &id).expect("remove twice");
        assert!(pending_receipt_intents(spool).expect("scan").is_empty());
    }

    #[test]
    fn foreign_names_and_torn_writes_are_not_intents() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spool = tmp.path();
        let id = uuid::Uuid::new_v4().to_string();
        fs::write(spool.join(format!("not-an-id{SUFFIX}")), b"x").expect("write");
        fs::write(spool.join(format!(".{id}{TMP_SUFFIX}")), b"{\"tor").expect("write");
        assert!(pending_receipt_intents(spool).expect("scan").is_empty());
        assert!(!spool.join(format!(".{id}{TMP_SUFFIX}")).exists());
        assert!(spool.join(format!("not-an-id{SUFFIX}")).exists());
        assert!(write_receipt_intent(spool, "../x", b"{}").is_err());
    }
}
