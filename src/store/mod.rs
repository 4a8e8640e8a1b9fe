//! The transcript-store seam: where committed transcripts live.

pub mod local;

use async_trait::async_trait;

use crate::transcript::TranscriptDoc;

/// Proof of a verified commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Where the JSON document is (a path or URL without credentials).
    pub location: String,
    /// sha256 (hex) of the committed JSON bytes, verified by reading them back.
    pub sha256: String,
    /// Where the WebVTT rendition is.
    pub vtt_location: String,
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another attempt may succeed (I/O errors, unavailable service).
    #[error("{0}")]
    Retryable(String),
    /// A different transcript is already committed under this meeting id.
    #[error("{0}")]
    Conflict(String),
}

impl CommitError {
    /// Whether retrying may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommitError::Retryable(_))
    }
}

/// A place to commit transcripts.
#[async_trait]
pub trait TranscriptStore: Send + Sync {
    /// Commits the transcript (JSON and WebVTT) durably, reads it back and
    /// verifies its hash. Committing the same document again succeeds;
    /// committing a different one for the same tenant and meeting fails with
    /// [`CommitError::Conflict`].
    async fn commit(&self, doc: &TranscriptDoc) -> Result<Committed, CommitError>;
}

/// Tenant and meeting ids become path segments and blob names: keep them to
/// a safe alphabet. Returns a message naming the problem.
pub fn validate_id(kind: &str, id: &str) -> Result<(), String> {
    let ok_len = !id.is_empty() && id.len() <= 128;
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok_len && ok_first && ok_chars && !id.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "{kind} must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit (got {} characters)",
            id.chars().count()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_path_safe() {
        for good in ["acme", "t-1", "A.b_c", "2026-11-23.standup"] {
            assert!(validate_id("tenant", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a..b",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_id("tenant", bad).is_err(), "{bad}");
        }
    }
}
