//! The status lines `meetbot join` prints on stdout: one JSON object per
//! status change; the last line is the final status (`done` or `fatal`) and
//! carries the transcript location and the deletion receipt.

use std::io::Write;

use serde::Serialize;

use crate::audit::DeletionReceipt;

/// One stdout line.
#[derive(Debug, Clone, Serialize)]
pub struct StatusLine {
    /// `joining`, `in_call_recording`, `reconnecting`, `call_ended`, `transcript_committed`,
    /// `recording_deleted`, `done` or `fatal`.
    pub status: &'static str,
    /// When (RFC 3339, UTC, ms).
    pub at: String,
    /// Meeting id.
    pub meeting_id: String,
    /// Tenant.
    pub tenant: String,
    /// Recording id, once the recording exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// Why (for `call_ended` and `fatal`). Never contains personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The committed transcript (from `transcript_committed` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<TranscriptInfo>,
    /// The deletion receipt (from `recording_deleted` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptInfo>,
}

/// Where the transcript went.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptInfo {
    /// JSON document location.
    pub location: String,
    /// WebVTT location.
    pub vtt_location: String,
    /// sha256 of the committed JSON, verified by read-back.
    pub sha256: String,
    /// Number of segments.
    pub segments: usize,
    /// False when transcription was cut short.
    pub complete: bool,
}

/// The receipt as appended to the audit log, with its chain position.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptInfo {
    /// The receipt body.
    #[serde(flatten)]
    pub receipt: DeletionReceipt,
    /// Position in the audit log (absent if it could not be appended).
    pub audit_seq: Option<u64>,
    /// Hash of the audit entry (chains to the previous entry).
    pub audit_hash: Option<String>,
    /// The audit log file.
    pub audit_log: String,
}

/// Prints status lines to stdout, flushing each.
pub fn print(line: &StatusLine) {
    let mut out = std::io::stdout().lock();
    // A status line is plain strings and numbers: serialization cannot fail.
    let json = serde_json::to_string(line).expect("status line serializes");
    // If stdout is gone there is nobody to tell; the audit log still has the receipt.
    let _ = writeln!(out, "{json}");
    let _ = out.flush();
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
