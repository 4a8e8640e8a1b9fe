//! Transcripts in Azure Blob Storage, one container per tenant.
//!
//! - **Silo per tenant**: the container name is derived from the tenant id by
//!   [`container_for_tenant`]: readable, valid for Blob Storage, and distinct
//!   for distinct tenants (a hash of the exact id is part of it).
//! - **Never overwrite**: the JSON is uploaded with `If-None-Match: *`; if a
//!   blob exists, it is read and compared: the same bytes (a retried job) are
//!   success, different bytes are a [`CommitError::Conflict`].
//! - **Verified**: the JSON is downloaded after the upload and its sha256
//!   compared.
//! - **Retention**: every transcript blob carries `expires_at` metadata
//!   (commit time + the tenant's retention); `meetbot sweep` deletes expired
//!   ones.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::http::{ClientOptions, RequestContent, Url};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    BlobServiceClientListContainersOptions, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::AzureAuth;
use crate::store::{validate_id, CommitError, Committed, TranscriptStore};
use crate::transcript::TranscriptDoc;

/// Metadata key holding a transcript's expiry (RFC 3339 UTC).
pub const META_EXPIRES: &str = "expires_at";
/// Metadata key holding what a blob is (`transcript`, `transcript_vtt`, `receipt`).
pub const META_KIND: &str = "kind";

/// The container for `tenant`: `<prefix><slug>-<hash>` where slug is the
/// tenant id lowercased with every run of other characters turned into one
/// `-` (truncated), and hash is 10 hex digits of sha256 of the exact id, so
/// `Acme`, `acme` and `a.cme` get different containers. Always 3–63
/// characters of `a-z 0-9 -`, no leading, trailing or doubled `-`.
pub fn container_for_tenant(prefix: &str, tenant: &str) -> String {
    let hash = hex::encode(Sha256::digest(
        format!("meetbot-tenant:{tenant}").as_bytes(),
    ));
    let mut slug = String::new();
    for c in tenant.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let room = 63usize.saturating_sub(prefix.len() + 1 + 10);
    slug.truncate(room);
    let slug = slug.trim_matches('-');
    let mut name = String::from(prefix);
    if !slug.is_empty() {
        name.push_str(slug);
        name.push('-');
    }
    name.push_str(&hash[..10]);
    name
}

/// Checks a container-name prefix (`store.container_prefix`): 1–20
/// characters of `a-z 0-9 -`, starting with a letter or digit, ending with `-`
/// or not, no `--`.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 20
        && prefix
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !prefix.contains("--");
    if ok {
        Ok(())
    } else {
        Err("store.container_prefix must be 1-20 characters of a-z 0-9 -, starting with a letter or digit, without \"--\"".into())
    }
}

/// Blob Storage as the transcript store.
#[derive(Clone)]
pub struct BlobStore {
    service: std::sync::Arc<BlobServiceClient>,
    prefix: String,
    retention: Duration,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// One blob seen by [`BlobStore::list_transcripts`].
#[derive(Debug, Clone)]
pub struct ListedBlob {
    /// Container.
    pub container: String,
    /// Blob name.
    pub name: String,
    /// `expires_at` metadata, if present and parseable.
    pub expires_at: Option<SystemTime>,
    /// `kind` metadata.
    pub kind: Option<String>,
    /// ETag (for conditional delete).
    pub etag: Option<String>,
    /// `tenant` metadata.
    pub tenant: Option<String>,
    /// `sha256` metadata (of the transcript JSON).
    pub sha256: Option<String>,
}

fn map_err(what: &str, e: azure_core::Error) -> CommitError {
    let status = super::http_status(&e);
    let code = super::error_code(&e).unwrap_or_default();
    // Every failure to reach or use the store may clear up (network,
    // throttling, a token refresh, a role assignment propagating), so all are
    // retryable; the lifecycle's backoff and the recording's max age bound it.
    CommitError::Retryable(match status {
        Some(s) => format!("{what}: HTTP {s} {code}"),
        None => format!(
            "{what}: {}",
            if super::is_transient(&e) {
                "connection failed"
            } else {
                "request failed"
            }
        ),
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl BlobStore {
    /// A store for the Blob service at `service` (from [`super::service_url`]);
    /// containers are `<prefix>…` per tenant; transcripts expire `retention`
    /// after their commit.
    pub fn new(
        service: Url,
        auth: &AzureAuth,
        options: ClientOptions,
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, super::SetupError> {
        validate_prefix(prefix).map_err(super::SetupError::Config)?;
        let cred = match auth {
            AzureAuth::Token(c) => Some(c.clone()),
            AzureAuth::Sas(_) => None,
        };
        let service = BlobServiceClient::new(
            service,
            cred,
            Some(BlobServiceClientOptions {
                client_options: options,
                ..Default::default()
            }),
        )
        .map_err(|e| super::SetupError::Config(format!("blob service: {e}")))?;
        Ok(BlobStore {
            service: std::sync::Arc::new(service),
            prefix: prefix.to_string(),
            retention,
        })
    }

    /// The same store with another retention.
    pub fn with_retention(&self, retention: Duration) -> Self {
        let mut s = self.clone();
        s.retention = retention;
        s
    }

    /// The container name for a tenant.
    pub fn container_name(&self, tenant: &str) -> String {
        container_for_tenant(&self.prefix, tenant)
    }

    pub(crate) fn container(&self, tenant: &str) -> BlobContainerClient {
        self.service
            .blob_container_client(&self.container_name(tenant))
    }

    pub(crate) async fn ensure_container(
        &self,
        c: &BlobContainerClient,
    ) -> Result<(), CommitError> {
        match c.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if super::http_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(map_err("create tenant container", e)),
        }
    }

    /// Uploads `body` as `name` unless it exists. Returns true if written,
    /// false if a blob with the same bytes was already there; a different
    /// existing blob is a conflict.
    async fn put_new(
        &self,
        c: &BlobContainerClient,
        name: &str,
        body: &[u8],
        content_type: &str,
        metadata: HashMap<String, String>,
    ) -> Result<bool, CommitError> {
        let blob = c.blob_client(name);
        let opts = BlobClientUploadOptions {
            metadata: Some(metadata),
            blob_content_type: Some(content_type.to_string()),
            ..Default::default()
        }
        .if_not_exists();
        match blob
            .upload(RequestContent::from(body.to_vec()), Some(opts))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if super::http_status(&e) == Some(409) => {
                let existing = self.download(c, name).await?;
                if Sha256::digest(&existing) == Sha256::digest(body) {
                    Ok(false)
                } else {
                    Err(CommitError::Conflict(format!(
                        "a different {name} is already committed in container {}; refusing to overwrite it",
                        c.url().path().rsplit('/').next().unwrap_or_default()
                    )))
                }
            }
            Err(e) => Err(map_err("upload", e)),
        }
    }

    async fn download(&self, c: &BlobContainerClient, name: &str) -> Result<Vec<u8>, CommitError> {
        let dl = c
            .blob_client(name)
            .download(None)
            .await
            .map_err(|e| map_err("download", e))?;
        let bytes = dl
            .body
            .collect()
            .await
            .map_err(|e| map_err("download body", e))?;
        Ok(bytes.to_vec())
    }

    fn location(c: &BlobContainerClient, name: &str) -> String {
        super::display_url(c.blob_client(name).url())
    }

    /// Stores a receipt (JSON) as `receipt-<id>.json` in the tenant's
    /// container, never overwriting a different one. Receipts carry no
    /// expiry: they are the proof, and hold no personal data.
    pub async fn put_receipt(
        &self,
        tenant: &str,
        id: &str,
        json: &[u8],
    ) -> Result<String, CommitError> {
        validate_id("tenant", tenant).map_err(CommitError::Conflict)?;
        validate_id("receipt id", id).map_err(CommitError::Conflict)?;
        let c = self.container(tenant);
        self.ensure_container(&c).await?;
        let name = format!("receipt-{id}.json");
        let md = HashMap::from([
            (META_KIND.to_string(), "receipt".to_string()),
            ("tenant".to_string(), tenant.to_string()),
        ]);
        self.put_new(&c, &name, json, "application/json", md)
            .await?;
        Ok(Self::location(&c, &name))
    }

    /// A blob's URL without credentials.
    pub fn blob_location(&self, container: &str, name: &str) -> String {
        super::display_url(self.service.blob_client(container, name).url())
    }

    /// Reads a blob of a tenant (tests and tools).
    pub async fn read(&self, tenant: &str, name: &str) -> Result<Vec<u8>, CommitError> {
        self.download(&self.container(tenant), name).await
    }

    /// Every blob in every container with this store's prefix, with metadata.
    pub async fn list_all(&self) -> Result<Vec<ListedBlob>, CommitError> {
        let mut containers = Vec::new();
        let mut pager = self
            .service
            .list_containers(Some(BlobServiceClientListContainersOptions {
                prefix: Some(self.prefix.clone()),
                ..Default::default()
            }))
            .map_err(|e| map_err("list containers", e))?;
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| map_err("list containers", e))?
        {
            if let Some(n) = item.name {
                containers.push(n);
            }
        }
        let mut out = Vec::new();
        for cname in containers {
            let c = self.service.blob_container_client(&cname);
            let mut pager = c
                .list_blobs(Some(BlobContainerClientListBlobsOptions {
                    include: Some(vec![ListBlobsIncludeItem::Metadata]),
                    ..Default::default()
                }))
                .map_err(|e| map_err("list blobs", e))?;
            while let Some(b) = pager
                .try_next()
                .await
                .map_err(|e| map_err("list blobs", e))?
            {
                let Some(name) = b.name else { continue };
                let md = b.metadata.and_then(|m| m.values).unwrap_or_default();
                out.push(ListedBlob {
                    container: cname.clone(),
                    name,
                    expires_at: md
                        .get(META_EXPIRES)
                        .and_then(|s| humantime::parse_rfc3339(s).ok()),
                    kind: md.get(META_KIND).cloned(),
                    tenant: md.get("tenant").cloned(),
                    sha256: md.get("sha256").cloned(),
                    etag: b.properties.and_then(|p| p.etag).map(|e| e.to_string()),
                });
            }
        }
        Ok(out)
    }

    /// Deletes a blob if it still has `etag` (so a blob replaced meanwhile is
    /// kept). Ok(true) if this call deleted it, Ok(false) if it was already
    /// gone or changed.
    pub async fn delete_blob(
        &self,
        container: &str,
        name: &str,
        etag: Option<&str>,
    ) -> Result<bool, CommitError> {
        let blob = self.service.blob_client(container, name);
        let opts = BlobClientDeleteOptions {
            if_match: etag.map(Into::into),
            ..Default::default()
        };
        match blob.delete(Some(opts)).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(super::http_status(&e), Some(404) | Some(412)) => Ok(false),
            Err(e) => Err(map_err("delete", e)),
        }
    }
}

#[async_trait]
impl TranscriptStore for BlobStore {
    async fn commit(&self, doc: &TranscriptDoc) -> Result<Committed, CommitError> {
        validate_id("tenant", &doc.tenant).map_err(CommitError::Conflict)?;
        validate_id("meeting id", &doc.meeting_id).map_err(CommitError::Conflict)?;
        let c = self.container(&doc.tenant);
        self.ensure_container(&c).await?;
        let json = doc.to_json();
        let want = hex::encode(Sha256::digest(&json));
        let expires = rfc3339(SystemTime::now() + self.retention);
        let md = |kind: &str| {
            HashMap::from([
                (META_KIND.to_string(), kind.to_string()),
                (META_EXPIRES.to_string(), expires.clone()),
                ("tenant".to_string(), doc.tenant.clone()),
                ("meeting_id".to_string(), doc.meeting_id.clone()),
                ("sha256".to_string(), want.clone()),
            ])
        };
        let json_name = format!("{}.json", doc.meeting_id);
        let vtt_name = format!("{}.vtt", doc.meeting_id);
        // The JSON is the commit point; the VTT follows once the JSON is ours.
        self.put_new(&c, &json_name, &json, "application/json", md("transcript"))
            .await?;
        self.put_new(
            &c,
            &vtt_name,
            doc.to_vtt().as_bytes(),
            "text/vtt; charset=utf-8",
            md("transcript_vtt"),
        )
        .await?;
        let back = self.download(&c, &json_name).await?;
        let got = hex::encode(Sha256::digest(&back));
        if got != want {
            return Err(CommitError::Retryable(format!(
                "read-back verification of {json_name} failed: sha256 {got}, expected {want}"
            )));
        }
        Ok(Committed {
            location: Self::location(&c, &json_name),
            sha256: want,
            vtt_location: Self::location(&c, &vtt_name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_containers_are_valid_and_distinct() {
        let names: Vec<String> = [
            "acme",
            "Acme",
            "a.cme",
            "A_c-m.e",
            "x",
            "9",
            &"Z".repeat(128),
            "a..b-",
        ]
        .iter()
        .map(|t| container_for_tenant("meetbot-", t))
        .collect();
        for n in &names {
            assert!((3..=63).contains(&n.len()), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(
                !n.contains("--") && !n.ends_with('-') && !n.starts_with('-'),
                "{n}"
            );
        }
        let uniq: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(uniq.len(), names.len(), "{names:?}");
        assert!(names[0].starts_with("meetbot-acme-"), "{}", names[0]);
        assert_eq!(
            container_for_tenant("meetbot-", "acme"),
            names[0],
            "deterministic"
        );
        assert!(validate_prefix("meetbot-").is_ok());
        for bad in ["", "Meetbot", "a--b", "-x", "a_b", &"a".repeat(21)] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
