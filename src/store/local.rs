//! Local-directory transcript store: `<dir>/<tenant>/<meeting_id>.json|.vtt`.
//!
//! Each file is written to a temporary name in the same directory, fsynced,
//! renamed into place and the directory fsynced, so a crash leaves either the
//! old state or the complete new file. The JSON is the commit point: it is
//! linked in only if absent (never replacing another transcript), the VTT is
//! written after it, and the JSON is read back to verify its hash. A retry
//! after a crash between the two finds the same JSON and completes the VTT.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{validate_id, CommitError, Committed, TranscriptStore};
use crate::transcript::TranscriptDoc;

/// Transcripts in a local directory, a folder per tenant.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// A store rooted at `root` (created on first commit).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDirStore { root: root.into() }
    }

    fn commit_blocking(&self, doc: &TranscriptDoc) -> Result<Committed, CommitError> {
        validate_id("tenant", &doc.tenant).map_err(CommitError::Conflict)?;
        validate_id("meeting id", &doc.meeting_id).map_err(CommitError::Conflict)?;
        let dir = self.root.join(&doc.tenant);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err("create transcript directory", &dir, &e))?;
        let json = doc.to_json();
        let want = hex::encode(Sha256::digest(&json));
        let json_path = dir.join(format!("{}.json", doc.meeting_id));
        let vtt_path = dir.join(format!("{}.vtt", doc.meeting_id));

        match fs::read(&json_path) {
            Ok(existing) => {
                let have = hex::encode(Sha256::digest(&existing));
                if have != want {
                    return Err(CommitError::Conflict(format!(
                        "a different transcript is already committed at {} (sha256 {have}); refusing to overwrite it",
                        json_path.display()
                    )));
                }
                // Same document: idempotent. Make sure the VTT is there too.
                if !vtt_path.exists() {
                    write_atomic(&vtt_path, doc.to_vtt().as_bytes())?;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The JSON is the commit point and is linked in only if absent;
                // the VTT follows only once the JSON is ours, so a concurrent
                // committer can never pair its VTT with our JSON.
                write_new_atomic(&json_path, &json)?;
                write_atomic(&vtt_path, doc.to_vtt().as_bytes())?;
            }
            Err(e) => return Err(io_err("read existing transcript", &json_path, &e)),
        }

        // Read back and verify.
        let back = fs::read(&json_path).map_err(|e| io_err("read back", &json_path, &e))?;
        let got = hex::encode(Sha256::digest(&back));
        if got != want {
            return Err(CommitError::Retryable(format!(
                "read-back verification of {} failed: sha256 {got}, expected {want}",
                json_path.display()
            )));
        }
        Ok(Committed {
            location: json_path.display().to_string(),
            sha256: want,
            vtt_location: vtt_path.display().to_string(),
        })
    }
}

#[async_trait]
impl TranscriptStore for LocalDirStore {
    async fn commit(&self, doc: &TranscriptDoc) -> Result<Committed, CommitError> {
        let this = self.clone();
        let doc = doc.clone();
        tokio::task::spawn_blocking(move || this.commit_blocking(&doc))
            .await
            .map_err(|e| CommitError::Retryable(format!("commit task failed: {e}")))?
    }
}

fn io_err(what: &str, path: &Path, e: &std::io::Error) -> CommitError {
    CommitError::Retryable(format!("{what} {}: {e}", path.display()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf, CommitError> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp, &e));
    }
    Ok(tmp)
}

fn sync_dir(path: &Path) -> Result<(), CommitError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, &e))
}

/// Writes `path` atomically, replacing any previous file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CommitError> {
    let tmp = write_tmp(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename into", path, &e));
    }
    sync_dir(path)
}

/// Writes `path` atomically, failing if it appeared meanwhile (a concurrent
/// committer): link(2) refuses to replace an existing name.
fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), CommitError> {
    let tmp = write_tmp(path, bytes)?;
    let res = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let existing =
                fs::read(path).map_err(|e| io_err("read existing transcript", path, &e))?;
            if existing == bytes {
                Ok(())
            } else {
                Err(CommitError::Conflict(format!(
                    "a different transcript was committed concurrently at {}; refusing to overwrite it",
                    path.display()
                )))
            }
        }
        Err(e) => Err(io_err("link into", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{SegmentDoc, SCHEMA};

    fn doc(text: &str) -> TranscriptDoc {
        TranscriptDoc {
            schema: SCHEMA.into(),
            meeting_id: "m-1".into(),
            tenant: "acme".into(),
            recording_id: "r".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            ended_at: "2026-01-01T00:01:00Z".into(),
            participants: vec![],
            segments: vec![SegmentDoc {
                speaker: "A".into(),
                speaker_id: "1".into(),
                start_ms: 0,
                end_ms: 10,
                text: text.into(),
            }],
            provider: "embedded".into(),
            model: "m".into(),
            language: "en".into(),
            complete: true,
            gaps: vec![],
        }
    }

    #[tokio::test]
    async fn commit_is_idempotent_and_refuses_a_different_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path());
        let a = store.commit(&doc("hello")).await.unwrap();
        assert!(a.location.ends_with("acme/m-1.json"));
        let bytes = fs::read(&a.location).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), a.sha256);
        assert!(fs::read_to_string(&a.vtt_location)
            .unwrap()
            .contains("<v A>hello"));
        // Same transcript again: fine, same hash.
        let b = store.commit(&doc("hello")).await.unwrap();
        assert_eq!(a, b);
        // A different one: refused, original untouched.
        let err = store.commit(&doc("bye")).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&a.location).unwrap(), bytes);
        // No temp files left.
        let names: Vec<_> = fs::read_dir(dir.path().join("acme"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn unwritable_root_is_a_retryable_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = LocalDirStore::new(&file)
            .commit(&doc("x"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }

    #[tokio::test]
    async fn hostile_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = doc("x");
        d.tenant = "../escape".into();
        let err = LocalDirStore::new(dir.path()).commit(&d).await.unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
    }
}
