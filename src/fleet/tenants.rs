//! The tenants file: who may call the API and each tenant's settings.
//!
//! ```toml
//! [tenants.acme]
//! # sha256 (hex) of each API token; several allow rotation. Make a token with
//! # `openssl rand -hex 32` and its hash with `printf %s "$TOKEN" | sha256sum`.
//! token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! # Transcript retention (default: store.retention).
//! retention = "30days"
//! # Webhooks may carry transcript text (default false: ids, status, locations only).
//! webhook_transcript = false
//! # Webhook signing secrets (Standard Webhooks `whsec_…`), referenced by jobs' secret_ref.
//! [tenants.acme.webhook_secrets]
//! main = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
//! ```
//!
//! Only token hashes are stored, so the file does not hold usable API
//! credentials; it does hold webhook secrets: mount it from a Secret. A token
//! is looked up by its sha256, so comparison time does not depend on how much
//! of a guessed token matches.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::pii::Secret;
use crate::store::validate_id;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    tenants: BTreeMap<String, TenantDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDoc {
    #[serde(default)]
    token_sha256: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    #[serde(default)]
    webhook_transcript: bool,
    #[serde(default)]
    webhook_secrets: BTreeMap<String, Secret<String>>,
}

/// One tenant's settings.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Tenant id.
    pub id: String,
    /// Transcript retention, if set.
    pub retention: Option<Duration>,
    /// Whether webhooks may carry transcript text.
    pub webhook_transcript: bool,
    /// Webhook signing secrets by name.
    pub webhook_secrets: BTreeMap<String, Secret<String>>,
}

/// All tenants.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_token: HashMap<[u8; 32], String>,
    tenants: BTreeMap<String, Tenant>,
}

/// sha256 of a token, hex (what the tenants file stores).
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// serde's messages quote the offending value (`invalid type: string "…"`),
/// which here may be a webhook secret written under the wrong key.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => break,
                    _ => {}
                }
            }
            out.push_str("...\"");
        }
    }
    out
}

impl Tenants {
    /// Loads and checks the tenants file. Errors name the tenant and field.
    pub fn load(path: &Path) -> Result<Tenants, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("tenants file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("tenants file {}: {e}", path.display()))
    }

    /// Parses tenants-file text.
    pub fn parse(text: &str) -> Result<Tenants, String> {
        // Never echo the file's text: it holds secrets.
        let doc: FileDoc = toml::from_str(text).map_err(|e| redact_quoted(e.message().trim()))?;
        let mut out = Tenants::default();
        for (id, t) in doc.tenants {
            validate_id("tenant", &id).map_err(|e| format!("[tenants.{id}]: {e}"))?;
            for h in &t.token_sha256 {
                let raw = hex::decode(h.trim())
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| {
                        format!("[tenants.{id}] token_sha256: entries must be 64 hex digits")
                    })?;
                if let Some(other) = out.by_token.insert(raw, id.clone()) {
                    return Err(format!("[tenants.{id}] token_sha256: the same token is also listed for tenant {other}"));
                }
            }
            for (name, secret) in &t.webhook_secrets {
                validate_id("webhook secret name", name)
                    .map_err(|e| format!("[tenants.{id}.webhook_secrets]: {e}"))?;
                crate::webhook::WebhookSecret::parse(secret.expose())
                    .map(|_| ())
                    .map_err(|e| format!("[tenants.{id}.webhook_secrets] {name}: {e}"))?;
            }
            if let Some(r) = t.retention {
                if r < Duration::from_secs(60) {
                    return Err(format!("[tenants.{id}] retention: must be at least 1m"));
                }
            }
            out.tenants.insert(
                id.clone(),
                Tenant {
                    id,
                    retention: t.retention,
                    webhook_transcript: t.webhook_transcript,
                    webhook_secrets: t.webhook_secrets,
                },
            );
        }
        Ok(out)
    }

    /// The tenant a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Tenant> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token.get(&h).and_then(|id| self.tenants.get(id))
    }

    /// A tenant by id.
    pub fn get(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(id)
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[tenants.acme]
token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
retention = "7days"
webhook_transcript = true
[tenants.acme.webhook_secrets]
main = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

[tenants.globex]
token_sha256 = ["60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"]
"#;

    #[test]
    fn tokens_map_to_their_tenant_only() {
        let t = Tenants::parse(FILE).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            token_hash_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let acme = t.authenticate("test").unwrap();
        assert_eq!(acme.id, "acme");
        assert_eq!(acme.retention, Some(Duration::from_secs(7 * 86400)));
        assert!(acme.webhook_transcript);
        assert_eq!(t.authenticate("test2").unwrap().id, "globex");
        assert!(t.authenticate("tes").is_none());
        assert!(t.authenticate("").is_none());
        assert!(t.get("globex").unwrap().webhook_secrets.is_empty());
    }

    #[test]
    fn bad_files_name_the_problem_without_echoing_secrets() {
        for (text, want) in [
            ("[tenants.\"a/b\"]\n", "tenant"),
            ("[tenants.a]\ntoken_sha256 = [\"abc\"]\n", "64 hex"),
            ("[tenants.a]\ncolour = 1\n", "colour"),
            ("[tenants.a.webhook_secrets]\nmain = \"whsec_notbase64!!\"\n", "main"),
            ("[tenants.a]\nretention = \"1s\"\n", "retention"),
            (&format!("[tenants.a]\ntoken_sha256 = [\"{0}\"]\n[tenants.b]\ntoken_sha256 = [\"{0}\"]\n", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"), "also listed"),
        ] {
            let err = Tenants::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("notbase64"), "{err}");
        }
    }
}
