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
    /// The transcription backlog (from `call_ended` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcribing: Option<BacklogInfo>,
}

/// The transcription backlog when a line is written: what is still waiting
/// for the STT provider, and the most that ever waited.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BacklogInfo {
    /// Utterances waiting (kept by reference in the recording).
    pub queued: u64,
    /// Audio waiting, seconds.
    pub queued_audio_s: f64,
    /// Utterances at the provider.
    pub in_flight: u64,
    /// Most utterances that waited at once.
    pub peak_queued: u64,
    /// Most audio that waited at once, seconds.
    pub peak_queued_audio_s: f64,
    /// Utterances requeued after the provider failed transiently.
    pub requeued: u64,
    /// Utterances decoded again from the recording (they had to wait).
    pub from_recording: u64,
    /// Most plaintext PCM held for STT at once, bytes (bounded by
    /// `stt.inflight_budget_kib`, or one utterance if that is longer).
    pub peak_inflight_pcm_bytes: u64,
}

impl BacklogInfo {
    /// From the backlog's figures and the metered PCM peak.
    pub fn new(s: &crate::core::backlog::BacklogStats, peak_pcm_bytes: u64) -> Self {
        let secs = |ms: u64| ms as f64 / 1000.0;
        BacklogInfo {
            queued: s.queued,
            queued_audio_s: secs(s.queued_audio_ms),
            in_flight: s.in_flight,
            peak_queued: s.peak_queued,
            peak_queued_audio_s: secs(s.peak_queued_audio_ms),
            requeued: s.requeued,
            from_recording: s.from_recording,
            peak_inflight_pcm_bytes: peak_pcm_bytes,
        }
    }
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
