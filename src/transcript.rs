//! The transcript document: what meetbot commits (JSON + WebVTT).
//!
//! This is a wire format (schema `meetbot.transcript.v1`, documented in the
//! README), so it lives in the shell and is `Serialize`.

use serde::{Deserialize, Serialize};

/// Schema identifier written into every document.
pub const SCHEMA: &str = "meetbot.transcript.v1";

/// A committed transcript.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TranscriptDoc {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Meeting id (from `--meeting-id` or the job).
    pub meeting_id: String,
    /// Tenant the transcript belongs to.
    pub tenant: String,
    /// Id of the (now destroyed) recording it was made from.
    pub recording_id: String,
    /// When the bot joined (RFC 3339, UTC).
    pub started_at: String,
    /// When the call ended for the bot (RFC 3339, UTC).
    pub ended_at: String,
    /// Everyone heard or seen in the meeting.
    pub participants: Vec<ParticipantDoc>,
    /// Speech segments in meeting-clock order.
    pub segments: Vec<SegmentDoc>,
    /// STT provider (`embedded`, `openai`).
    pub provider: String,
    /// STT model.
    pub model: String,
    /// Language transcribed.
    pub language: String,
    /// False when something is missing: transcription cut short by the
    /// shutdown grace, or utterances whose transcription failed (see `gaps`).
    pub complete: bool,
    /// Stretches of the meeting that are not in `segments` and why.
    #[serde(default)]
    pub gaps: Vec<GapDoc>,
}

/// A stretch of the meeting missing from the transcript.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GapDoc {
    /// Start on the meeting clock, ms.
    pub start_ms: u64,
    /// End on the meeting clock, ms.
    pub end_ms: u64,
    /// Whose audio, when it concerns one participant.
    pub speaker_id: Option<String>,
    /// Why: `transcription_failed`, `rejoin`, …
    pub kind: String,
}

/// A participant.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParticipantDoc {
    /// Platform id (stable within the meeting).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One segment of speech.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentDoc {
    /// Speaker display name.
    pub speaker: String,
    /// Speaker's participant id.
    pub speaker_id: String,
    /// Start on the meeting clock, ms since the bot joined.
    pub start_ms: u64,
    /// End on the meeting clock, ms.
    pub end_ms: u64,
    /// What was said.
    pub text: String,
}

impl std::fmt::Debug for TranscriptDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptDoc")
            .field("meeting_id", &self.meeting_id)
            .field("tenant", &self.tenant)
            .field("participants", &self.participants.len())
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl TranscriptDoc {
    /// Sorts segments by time (then speaker id) so output is deterministic.
    pub fn normalize(&mut self) {
        self.segments.sort_by(|a, b| {
            (a.start_ms, a.end_ms, &a.speaker_id).cmp(&(b.start_ms, b.end_ms, &b.speaker_id))
        });
        self.gaps.sort_by(|a, b| {
            (a.start_ms, a.end_ms, &a.speaker_id, &a.kind).cmp(&(
                b.start_ms,
                b.end_ms,
                &b.speaker_id,
                &b.kind,
            ))
        });
    }

    /// The JSON bytes that are committed (pretty, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
        let mut v = serde_json::to_vec_pretty(self).expect("transcript serializes");
        v.push(b'\n');
        v
    }

    /// WebVTT with one cue per segment and `<v Speaker>` voice tags.
    pub fn to_vtt(&self) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for (i, s) in self.segments.iter().enumerate() {
            out.push_str(&format!(
                "{}\n{} --> {}\n<v {}>{}\n\n",
                i + 1,
                vtt_time(s.start_ms),
                vtt_time(s.end_ms.max(s.start_ms)),
                vtt_escape(&s.speaker),
                vtt_escape(s.text.trim())
            ));
        }
        out
    }
}

fn vtt_time(ms: u64) -> String {
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms / 1000) % 60;
    let f = ms % 1000;
    format!("{h:02}:{m:02}:{s:02}.{f:03}")
}

/// Escapes text for a cue payload: `&`, `<`, `>` and line breaks (a blank
/// line would end the cue early).
fn vtt_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> TranscriptDoc {
        TranscriptDoc {
            schema: SCHEMA.into(),
            meeting_id: "m1".into(),
            tenant: "t1".into(),
            recording_id: "r".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            ended_at: "2026-01-01T01:00:00Z".into(),
            participants: vec![],
            segments: vec![
                SegmentDoc {
                    speaker: "B <evil>".into(),
                    speaker_id: "2".into(),
                    start_ms: 3_723_004,
                    end_ms: 3_725_000,
                    text: "a --> b\n\nc & d".into(),
                },
                SegmentDoc {
                    speaker: "A".into(),
                    speaker_id: "1".into(),
                    start_ms: 0,
                    end_ms: 1500,
                    text: " hello ".into(),
                },
            ],
            provider: "embedded".into(),
            model: "tiny.en".into(),
            language: "en".into(),
            complete: true,
            gaps: vec![],
        }
    }

    #[test]
    fn vtt_orders_times_and_escapes_tags() {
        let mut d = doc();
        d.normalize();
        let vtt = d.to_vtt();
        assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.500\n<v A>hello\n\n"));
        assert!(vtt.contains(
            "2\n01:02:03.004 --> 01:02:05.000\n<v B &lt;evil&gt;>a --&gt; b  c &amp; d\n\n"
        ));
    }

    #[test]
    fn json_round_trips() {
        let d = doc();
        let back: TranscriptDoc = serde_json::from_slice(&d.to_json()).unwrap();
        assert!(back == d);
    }
}
