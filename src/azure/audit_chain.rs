//! The per-tenant receipt chain in Blob Storage: the I/O shell around
//! [`crate::audit_chain`] (formats, MACs and verification live there).
//!
//! **Append** (any number of workers at once):
//! 1. The tenant's MAC key: `audit/key.json` is read and unwrapped by the key
//!    provider (cached in memory for the process); if absent, a fresh key is
//!    wrapped and created with `If-None-Match: *` (a writer that loses that
//!    race unwraps the winner's).
//! 2. The head: `audit/head.json`, its MAC checked. If absent it is created
//!    at seq 0 — unless entry 1 exists, which means the head was deleted:
//!    the append is refused as tampering.
//! 3. Entry `head.seq + 1` is created with `If-None-Match: *`. If that seq is
//!    taken (another writer won, or the head lags after an interrupted
//!    append), the existing entry is read, checked (hash, MAC, link) and the
//!    next seq tried. One seq can never hold two entries.
//! 4. The head is moved to the new entry with `If-Match` on its ETag, unless
//!    another writer already moved it further. A failure here is logged and
//!    left for the next append (verify reports the lag; it is no gap).
//!
//! **Verify** lists `audit/`, reads every blob and hands them to
//! [`verify_chain`].

use std::collections::HashMap;
use std::sync::Arc;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{BlobClientUploadOptions, BlobContainerClientListBlobsOptions};
use azure_storage_blob::BlobContainerClient;
use futures_util::TryStreamExt;

use super::blob_store::{BlobStore, META_KIND};
use crate::audit::{AuditRecord, GENESIS_HASH};
use crate::audit_chain::{
    chain_for, check_entry, check_head, entry_blob, verify_chain, ChainEntry, ChainFailure,
    ChainHead, ChainReport, KeyRecord, MacKey, HEAD_BLOB, KEY_BLOB, MAC_ALG, PREFIX,
};
use crate::recording::{DataKey, KeyProvider};

/// Give up an append after this many taken sequence numbers or lost head
/// races in a row (only reachable under absurd contention).
const MAX_STEPS: u32 = 1000;

/// Why an append or a verification could not be completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Blob Storage failed or is unreachable.
    #[error("audit chain of {tenant}: {what}")]
    Storage {
        /// The chain.
        tenant: String,
        /// What failed (HTTP status and storage error code, no SAS).
        what: String,
    },
    /// The key provider could not wrap or unwrap the chain's key.
    #[error("audit chain of {tenant}: {KEY_BLOB}: {what}")]
    Key {
        /// The chain.
        tenant: String,
        /// What failed.
        what: String,
    },
    /// The chain is not intact (verification failed, or an append found a
    /// tampered head or entry and refused to extend it).
    #[error(transparent)]
    Tampered(#[from] ChainFailure),
    /// Too many concurrent writers.
    #[error("audit chain of {tenant}: gave up after {MAX_STEPS} contended attempts")]
    Contended {
        /// The chain.
        tenant: String,
    },
}

/// Where an append put the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The chain (tenant id or [`crate::audit_chain::FLEET_CHAIN`]).
    pub tenant: String,
    /// The entry's seq.
    pub seq: u64,
    /// The entry's hash.
    pub hash: String,
    /// The entry blob's URL (no credentials).
    pub location: String,
}

/// The receipt chains of every tenant in one storage account.
pub struct BlobAuditChain {
    store: BlobStore,
    keys: Option<Arc<dyn KeyProvider>>,
    cache: tokio::sync::Mutex<HashMap<String, Arc<MacKey>>>,
}

impl std::fmt::Debug for BlobAuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobAuditChain")
            .field("store", &self.store)
            .field("mac", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

fn status_of(e: &azure_core::Error) -> Option<u16> {
    super::http_status(e)
}

impl BlobAuditChain {
    /// Chains in `store`'s tenant containers. With `keys`, every entry and
    /// head carries an HMAC under the tenant's key, which `keys` wraps; and
    /// verification requires it. Without, entries carry no MAC.
    pub fn new(store: BlobStore, keys: Option<Arc<dyn KeyProvider>>) -> Self {
        BlobAuditChain {
            store,
            keys,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether entries are MACed (and MACs required by [`Self::verify`]).
    pub fn keyed(&self) -> bool {
        self.keys.is_some()
    }

    fn storage(tenant: &str, what: &str, e: azure_core::Error) -> ChainError {
        let code = super::error_code(&e).unwrap_or_default();
        ChainError::Storage {
            tenant: tenant.into(),
            what: match status_of(&e) {
                Some(s) => format!("{what}: HTTP {s} {code}"),
                None => format!("{what}: connection failed"),
            },
        }
    }

    /// A blob's body and ETag; `None` if it does not exist.
    async fn get(
        &self,
        tenant: &str,
        c: &BlobContainerClient,
        name: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ChainError> {
        let dl = match c.blob_client(name).download(None).await {
            Ok(d) => d,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(Self::storage(tenant, &format!("read {name}"), e)),
        };
        let etag = dl.properties.etag.as_ref().map(|e| e.to_string());
        let body = dl
            .body
            .collect()
            .await
            .map_err(|e| Self::storage(tenant, &format!("read {name}"), e))?;
        Ok(Some((body.to_vec(), etag)))
    }

    /// Writes `name`: with `etag` only if it still has that ETag, without
    /// only if it does not exist. `Ok(false)`: the condition failed.
    async fn put(
        &self,
        tenant: &str,
        c: &BlobContainerClient,
        name: &str,
        body: Vec<u8>,
        etag: Option<&str>,
    ) -> Result<bool, ChainError> {
        let mut opts = BlobClientUploadOptions {
            metadata: Some(HashMap::from([
                (META_KIND.to_string(), "audit".to_string()),
                ("tenant".to_string(), tenant.to_string()),
            ])),
            blob_content_type: Some("application/json".into()),
            ..Default::default()
        };
        match etag {
            Some(t) => opts.if_match = Some(t.into()),
            None => opts = opts.if_not_exists(),
        }
        match c
            .blob_client(name)
            .upload(RequestContent::from(body), Some(opts))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(status_of(&e), Some(409) | Some(412)) => Ok(false),
            Err(e) => Err(Self::storage(tenant, &format!("write {name}"), e)),
        }
    }

    async fn container(&self, tenant: &str) -> Result<BlobContainerClient, ChainError> {
        let c = self.store.container(tenant);
        self.store
            .ensure_container(&c)
            .await
            .map_err(|e| ChainError::Storage {
                tenant: tenant.into(),
                what: e.to_string(),
            })?;
        Ok(c)
    }

    fn key_error(tenant: &str, what: impl std::fmt::Display) -> ChainError {
        ChainError::Key {
            tenant: tenant.into(),
            what: what.to_string(),
        }
    }

    async fn unwrap_record(
        &self,
        keys: &dyn KeyProvider,
        tenant: &str,
        body: &[u8],
    ) -> Result<MacKey, ChainError> {
        let rec: KeyRecord = serde_json::from_slice(body)
            .map_err(|e| Self::key_error(tenant, format!("bad JSON: {e}")))?;
        if rec.tenant != tenant || rec.alg != MAC_ALG || rec.version != 1 {
            return Err(Self::key_error(
                tenant,
                format!(
                    "a key record of chain {:?} ({}, version {}), not of {tenant:?}",
                    rec.tenant, rec.alg, rec.version
                ),
            ));
        }
        let key = keys
            .unwrap(&rec.wrapped)
            .await
            .map_err(|e| Self::key_error(tenant, format!("unwrap: {e}")))?;
        Ok(MacKey::new(key))
    }

    /// The chain's MAC key: cached, read and unwrapped, or created.
    /// `create`: make one if the chain has none (appends; verify does not).
    async fn mac_key(
        &self,
        tenant: &str,
        c: &BlobContainerClient,
        create: bool,
    ) -> Result<Option<Arc<MacKey>>, ChainError> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().await;
        if let Some(k) = cache.get(tenant) {
            return Ok(Some(k.clone()));
        }
        let key = match self.get(tenant, c, KEY_BLOB).await? {
            Some((body, _)) => self.unwrap_record(keys.as_ref(), tenant, &body).await?,
            None if !create => return Ok(None),
            None => {
                let key = DataKey::generate();
                let wrapped = keys
                    .wrap(&key)
                    .await
                    .map_err(|e| Self::key_error(tenant, format!("wrap: {e}")))?;
                let rec = KeyRecord {
                    version: 1,
                    tenant: tenant.into(),
                    alg: MAC_ALG.into(),
                    wrapped,
                    created_at: crate::status::now_rfc3339(),
                };
                let body = serde_json::to_vec_pretty(&rec).unwrap_or_default();
                if self.put(tenant, c, KEY_BLOB, body, None).await? {
                    tracing::info!(chain = %tenant, "Created the audit chain's MAC key.");
                    MacKey::new(key)
                } else {
                    // Another writer made it first: use theirs.
                    let Some((body, _)) = self.get(tenant, c, KEY_BLOB).await? else {
                        return Err(Self::key_error(tenant, "created and gone again"));
                    };
                    self.unwrap_record(keys.as_ref(), tenant, &body).await?
                }
            }
        };
        let key = Arc::new(key);
        cache.insert(tenant.to_string(), key.clone());
        Ok(Some(key))
    }

    /// Appends `record` to its tenant's chain ([`chain_for`] its tenant).
    pub async fn append(&self, record: &AuditRecord) -> Result<Appended, ChainError> {
        let tenant = chain_for(match record {
            AuditRecord::Recording(r) => &r.tenant,
            AuditRecord::Transcript(t) => &t.tenant,
        })
        .to_string();
        let t = tenant.as_str();
        let c = self.container(t).await?;
        let key = self.mac_key(t, &c, true).await?;
        let key = key.as_deref();
        let tampered = |blob: &str, seq: Option<u64>, problem: String| {
            ChainError::Tampered(ChainFailure {
                tenant: t.to_string(),
                blob: blob.to_string(),
                seq,
                problem: format!("{problem}; refusing to extend the chain (run `meetbot audit verify --tenant {t}`)"),
            })
        };
        // The head, created at seq 0 for a new chain.
        let head = loop {
            if let Some((body, _)) = self.get(t, &c, HEAD_BLOB).await? {
                break check_head(t, &body, key).map_err(|p| tampered(HEAD_BLOB, None, p))?;
            }
            if self.get(t, &c, &entry_blob(1)).await?.is_some() {
                return Err(tampered(
                    HEAD_BLOB,
                    None,
                    "missing while entries exist (the head was deleted)".into(),
                ));
            }
            let h = ChainHead::new(t, 0, GENESIS_HASH, key);
            self.put(t, &c, HEAD_BLOB, h.to_bytes(), None).await?;
        };
        let (mut seq, mut hash) = (head.seq, head.hash);
        for _ in 0..MAX_STEPS {
            let entry =
                ChainEntry::new(t, seq, &hash, record, key).map_err(|e| ChainError::Storage {
                    tenant: t.into(),
                    what: e,
                })?;
            let name = entry_blob(entry.seq);
            if self.put(t, &c, &name, entry.to_bytes(), None).await? {
                tracing::debug!(chain = %t, seq = entry.seq, "Audit chain entry created.");
                self.advance_head(t, &c, entry.seq, &entry.hash, key).await;
                return Ok(Appended {
                    tenant: tenant.clone(),
                    seq: entry.seq,
                    hash: entry.hash,
                    // The container URL and the name as written (the SDK's
                    // blob URL encodes the '/' of `audit/` as %2F).
                    location: format!(
                        "{}/{name}",
                        super::display_url(c.url()).trim_end_matches('/')
                    ),
                });
            }
            // Taken: by another writer, or the head lags. Step over it.
            let Some((body, _)) = self.get(t, &c, &name).await? else {
                continue; // deleted in between: try the same seq again
            };
            let existing = check_entry(t, entry.seq, &body, key)
                .map_err(|p| tampered(&name, Some(entry.seq), p))?;
            if existing.prev_hash != hash {
                return Err(tampered(
                    &name,
                    Some(entry.seq),
                    format!(
                        "broken link: prev_hash {} does not match entry {seq}'s hash {hash}",
                        existing.prev_hash
                    ),
                ));
            }
            (seq, hash) = (existing.seq, existing.hash);
        }
        Err(ChainError::Contended { tenant })
    }

    /// Moves the head forward to `seq`/`hash` unless it is already there or
    /// beyond. Failures are logged: the entry is written, and the next append
    /// (or verify's lag report) covers a head left behind.
    async fn advance_head(
        &self,
        t: &str,
        c: &BlobContainerClient,
        seq: u64,
        hash: &str,
        key: Option<&MacKey>,
    ) {
        let body = ChainHead::new(t, seq, hash, key).to_bytes();
        for _ in 0..MAX_STEPS {
            let current = match self.get(t, c, HEAD_BLOB).await {
                Ok(Some((b, etag))) => (b, etag),
                Ok(None) => {
                    tracing::warn!(chain = %t, "The audit chain's head vanished during an append.");
                    return;
                }
                Err(e) => {
                    tracing::warn!(chain = %t, error = %e, "Could not read the audit chain's head; the next append moves it.");
                    return;
                }
            };
            match serde_json::from_slice::<ChainHead>(&current.0) {
                Ok(h) if h.seq >= seq => return,
                Ok(_) => {}
                Err(_) => return,
            }
            let Some(etag) = current.1 else { return };
            match self.put(t, c, HEAD_BLOB, body.clone(), Some(&etag)).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(chain = %t, error = %e, "Could not move the audit chain's head; the next append moves it.");
                    return;
                }
            }
        }
    }

    /// Verifies `tenant`'s chain (`tenant` as given: a tenant id or
    /// [`crate::audit_chain::FLEET_CHAIN`]).
    pub async fn verify(&self, tenant: &str) -> Result<ChainReport, ChainError> {
        let c = self.store.container(tenant);
        let mut names = Vec::new();
        let mut pager = c
            .list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: Some(PREFIX.to_string()),
                ..Default::default()
            }))
            .map_err(|e| Self::storage(tenant, "list audit/", e))?;
        loop {
            match pager.try_next().await {
                Ok(Some(b)) => names.extend(b.name),
                Ok(None) => break,
                // A tenant that never had a container has an empty chain.
                Err(e) if status_of(&e) == Some(404) => break,
                Err(e) => return Err(Self::storage(tenant, "list audit/", e)),
            }
        }
        let mut blobs = Vec::with_capacity(names.len());
        let mut head = None;
        for name in names {
            if name == KEY_BLOB {
                continue;
            }
            // A blob deleted since the listing reads as empty and fails.
            let body = self
                .get(tenant, &c, &name)
                .await?
                .map(|(b, _)| b)
                .unwrap_or_default();
            if name == HEAD_BLOB {
                head = Some(body);
            } else {
                blobs.push((name, body));
            }
        }
        let key = match self.mac_key(tenant, &c, false).await {
            Ok(k) => k,
            Err(ChainError::Key { what, .. }) => {
                return Err(ChainError::Tampered(ChainFailure {
                    tenant: tenant.into(),
                    blob: KEY_BLOB.into(),
                    seq: None,
                    problem: what,
                }))
            }
            Err(e) => return Err(e),
        };
        if self.keys.is_some() && key.is_none() && (!blobs.is_empty() || head.is_some()) {
            return Err(ChainError::Tampered(ChainFailure {
                tenant: tenant.into(),
                blob: KEY_BLOB.into(),
                seq: None,
                problem: "missing: the chain has entries but no MAC key record (deleted?)".into(),
            }));
        }
        Ok(verify_chain(
            tenant,
            blobs,
            head.as_deref(),
            key.as_deref(),
        )?)
    }
}
