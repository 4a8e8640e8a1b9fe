//! The job: what one worker pod does — join one meeting for one tenant.
//!
//! A job arrives as JSON: from the queue (enqueued by `meetbot serve`), from
//! `MEETBOT_JOB`, or from `--job-file`. The schema (version 1):
//!
//! ```json
//! {
//!   "version": 1,
//!   "bot_id": "b-3f2a…",              // optional for direct jobs (default: the meeting id)
//!   "tenant": "acme",                 // whose silo the transcript goes to
//!   "meeting_id": "standup-2026-11-23",
//!   "meeting_url": "janus+wss://meet.example.com/1234?pin=42",
//!   "bot_name": "Acme Notetaker",     // optional (default: bot.name)
//!   "join_at": "2026-11-23T17:00:00Z",// optional: not before this time
//!   "stt": { "provider": "embedded", "language": "en" },  // optional overrides
//!   "webhook": { "url": "https://hooks.acme.example/meetbot", "secret_ref": "main" },
//!   "retention_days": 30              // optional (default: the tenant's, then store.retention)
//! }
//! ```
//!
//! Unknown fields are errors (a typo must not silently drop a setting). The
//! webhook secret is never in the job: `secret_ref` names one of the tenant's
//! secrets in the tenants file.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::SttKind;
use crate::store::validate_id;

/// The job schema version this build reads and writes.
pub const JOB_VERSION: u32 = 1;
/// Largest job document accepted.
pub const MAX_JOB_BYTES: usize = 32 * 1024;
/// Longest meeting or webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest retention.
pub const MAX_RETENTION_DAYS: u32 = 3650;

fn default_version() -> u32 {
    JOB_VERSION
}

/// One job.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Schema version (1).
    #[serde(default = "default_version")]
    pub version: u32,
    /// The bot's id (records, webhooks). Defaults to the meeting id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// Meeting id (names the transcript).
    pub meeting_id: String,
    /// Meeting URL. Personal data: never logged.
    pub meeting_url: String,
    /// Display name in the meeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_name: Option<String>,
    /// Not before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_at: Option<String>,
    /// STT overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt: Option<JobStt>,
    /// Where status changes are POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<JobWebhook>,
    /// Transcript retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("bot_id", &self.bot_id)
            .field("tenant", &self.tenant)
            .field("meeting_id", &self.meeting_id)
            .field("meeting_url", &"<redacted>")
            .field("join_at", &self.join_at)
            .finish_non_exhaustive()
    }
}

/// STT overrides for one job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobStt {
    /// `embedded` or `openai` (the endpoint itself comes from configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<SttKind>,
    /// ISO 639-1 language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// The job's webhook.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobWebhook {
    /// Receiver URL (https; SSRF-checked). Personal data: never logged.
    pub url: String,
    /// Name of the tenant's signing secret in the tenants file.
    pub secret_ref: String,
}

impl fmt::Debug for JobWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobWebhook")
            .field("url", &"<redacted>")
            .field("secret_ref", &self.secret_ref)
            .finish()
    }
}

/// Why a job document is unusable. The message is safe to show the job's
/// submitter (it names fields, never echoes URLs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

/// A serde message without the values it quotes: `"…"` strings and the
/// backticked value of an `unknown variant` (field names stay).
pub(crate) fn redact_values(msg: &str) -> String {
    let msg = super::tenants::redact_quoted(msg);
    match msg.strip_prefix("unknown variant `") {
        Some(rest) => match rest.split_once('`') {
            Some((_, tail)) => format!("unknown variant `...`{tail}"),
            None => "unknown variant".into(),
        },
        None => msg,
    }
}

/// Parses RFC 3339 (`2026-11-23T17:00:00Z`, offsets allowed).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| "must be an RFC 3339 time such as 2026-11-23T17:00:00Z".to_string())?;
    let secs = t.unix_timestamp();
    if secs < 0 {
        return Err("must be after 1970".into());
    }
    Ok(SystemTime::UNIX_EPOCH
        + Duration::from_secs(secs as u64)
        + Duration::from_nanos(t.nanosecond() as u64))
}

/// Checks a display name: 1–64 characters, no control characters.
pub fn validate_bot_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err("bot_name must be 1-64 printable characters".into());
    }
    Ok(())
}

impl Job {
    /// Parses and validates a job document (size, schema, values). URLs are
    /// checked for structure here and for reachability by [`crate::netguard`].
    pub fn parse(bytes: &[u8]) -> Result<Job, JobError> {
        if bytes.len() > MAX_JOB_BYTES {
            return Err(JobError(format!(
                "job is {} bytes; at most {MAX_JOB_BYTES} are accepted",
                bytes.len()
            )));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let job: Job = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // serde_json's messages quote offending values (a URL with its
            // PIN, say): keep the field names, drop the values.
            let inner = redact_values(&e.inner().to_string());
            if path == "." {
                JobError(format!("invalid job JSON: {inner}"))
            } else {
                JobError(format!("invalid job JSON at {path}: {inner}"))
            }
        })?;
        job.validate()?;
        Ok(job)
    }

    /// Value checks beyond the schema.
    pub fn validate(&self) -> Result<(), JobError> {
        let e = |m: String| Err(JobError(m));
        if self.version != JOB_VERSION {
            return e(format!(
                "version {} is not supported (this meetbot reads version {JOB_VERSION})",
                self.version
            ));
        }
        if let Err(m) = validate_id("tenant", &self.tenant) {
            return e(m);
        }
        if let Err(m) = validate_id("meeting_id", &self.meeting_id) {
            return e(m);
        }
        if let Some(b) = &self.bot_id {
            if let Err(m) = validate_id("bot_id", b) {
                return e(m);
            }
        }
        if self.meeting_url.trim().is_empty() || self.meeting_url.len() > MAX_URL_LEN {
            return e(format!("meeting_url must be 1-{MAX_URL_LEN} characters"));
        }
        if let Some(n) = &self.bot_name {
            if let Err(m) = validate_bot_name(n) {
                return e(m);
            }
        }
        if let Some(t) = &self.join_at {
            if let Err(m) = parse_time(t) {
                return e(format!("join_at {m}"));
            }
        }
        if let Some(stt) = &self.stt {
            if let Some(l) = &stt.language {
                if l.len() != 2 || !l.chars().all(|c| c.is_ascii_lowercase()) {
                    return e(
                        "stt.language must be a two-letter ISO 639-1 code such as \"en\"".into(),
                    );
                }
            }
        }
        if let Some(w) = &self.webhook {
            if w.url.trim().is_empty() || w.url.len() > MAX_URL_LEN {
                return e(format!("webhook.url must be 1-{MAX_URL_LEN} characters"));
            }
            if let Err(m) = validate_id("webhook.secret_ref", &w.secret_ref) {
                return e(m);
            }
        }
        if let Some(d) = self.retention_days {
            if !(1..=MAX_RETENTION_DAYS).contains(&d) {
                return e(format!(
                    "retention_days must be between 1 and {MAX_RETENTION_DAYS}"
                ));
            }
        }
        Ok(())
    }

    /// The bot id (the meeting id when none was given).
    pub fn bot_id(&self) -> &str {
        self.bot_id.as_deref().unwrap_or(&self.meeting_id)
    }

    /// `join_at` as a time.
    pub fn join_at_time(&self) -> Option<SystemTime> {
        self.join_at.as_deref().and_then(|t| parse_time(t).ok())
    }

    /// The JSON document (queue message text).
    pub fn to_json(&self) -> String {
        // Strings, numbers and options only: serialization cannot fail.
        serde_json::to_string(self).expect("job serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "tenant": "acme", "meeting_id": "m1",
            "meeting_url": "janus+wss://meet.example.com/1234"
        })
    }

    #[test]
    fn parses_the_documented_example_and_round_trips() {
        let doc = r#"{
          "version": 1, "bot_id": "b-1", "tenant": "acme", "meeting_id": "standup-2026-11-23",
          "meeting_url": "janus+wss://meet.example.com/1234?pin=42", "bot_name": "Acme Notetaker",
          "join_at": "2026-11-23T17:00:00Z", "stt": {"provider": "embedded", "language": "en"},
          "webhook": {"url": "https://hooks.acme.example/meetbot", "secret_ref": "main"},
          "retention_days": 30 }"#;
        let job = Job::parse(doc.as_bytes()).unwrap();
        assert_eq!(job.bot_id(), "b-1");
        assert_eq!(job.retention_days, Some(30));
        assert_eq!(
            job.join_at_time().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_453_200)
        );
        assert_eq!(Job::parse(job.to_json().as_bytes()).unwrap(), job);
        assert!(!format!("{job:?}").contains("meet.example.com"));
        let minimal = Job::parse(base().to_string().as_bytes()).unwrap();
        assert_eq!(minimal.bot_id(), "m1");
        assert_eq!(minimal.version, 1);
    }

    #[test]
    fn bad_jobs_are_rejected_with_the_field_named() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"tenant": "acme"}), "meeting_id"),
            (
                {
                    let mut v = base();
                    v["colour"] = "red".into();
                    v
                },
                "colour",
            ),
            (
                {
                    let mut v = base();
                    v["tenant"] = "../etc".into();
                    v
                },
                "tenant",
            ),
            (
                {
                    let mut v = base();
                    v["meeting_id"] = "".into();
                    v
                },
                "meeting_id",
            ),
            (
                {
                    let mut v = base();
                    v["version"] = 2.into();
                    v
                },
                "version",
            ),
            (
                {
                    let mut v = base();
                    v["join_at"] = "tomorrow".into();
                    v
                },
                "join_at",
            ),
            (
                {
                    let mut v = base();
                    v["retention_days"] = 0.into();
                    v
                },
                "retention_days",
            ),
            (
                {
                    let mut v = base();
                    v["retention_days"] = (-3).into();
                    v
                },
                "retention_days",
            ),
            (
                {
                    let mut v = base();
                    v["bot_name"] = "a\nb".into();
                    v
                },
                "bot_name",
            ),
            (
                {
                    let mut v = base();
                    v["stt"] = serde_json::json!({"language": "english"});
                    v
                },
                "stt.language",
            ),
            (
                {
                    let mut v = base();
                    v["stt"] = serde_json::json!({"provider": "deepgram"});
                    v
                },
                "stt.provider",
            ),
            (
                {
                    let mut v = base();
                    v["webhook"] = serde_json::json!({"url": "https://x.example"});
                    v
                },
                "secret_ref",
            ),
            (
                {
                    let mut v = base();
                    v["meeting_url"] = "x".repeat(3000).into();
                    v
                },
                "meeting_url",
            ),
        ];
        for (doc, field) in cases {
            let err = Job::parse(doc.to_string().as_bytes()).unwrap_err().0;
            assert!(err.contains(field), "{doc}: {err}");
        }
        for raw in [
            &b"not json"[..],
            b"",
            b"[]",
            b"{\"tenant\": 1}",
            &vec![b' '; MAX_JOB_BYTES + 1],
        ] {
            assert!(Job::parse(raw).is_err());
        }
    }
}
