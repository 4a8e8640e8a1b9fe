//! `meetbot sweep`: retention.
//!
//! 1. **Expired transcripts** (`store.kind = "azure_blob"`): every transcript
//!    blob (JSON and WebVTT) whose `expires_at` metadata has passed is
//!    deleted — conditionally on its ETag, so a blob replaced meanwhile is
//!    kept — and each deletion gets a receipt (`transcript_deletion`) in the
//!    local audit log and in the tenant's receipt chain
//!    ([`crate::azure::audit_chain`]). Receipts, chain blobs and unexpired
//!    blobs are never touched.
//! 2. **Orphaned recordings**: encrypted recordings in the spool whose
//!    process died (no lock held) are destroyed, each with a deletion receipt
//!    in the local log and (fleet mode) in its tenant's chain, or the
//!    fleet-wide chain `_fleet` when the header naming the tenant is
//!    unreadable (a live worker destroys its own recording at
//!    `recording.max_age`).
//!
//! Idempotent, and safe to run twice at once: only the sweeper whose
//! conditional delete succeeded writes the receipt; the other sees the blob
//! gone and moves on. Prints one JSON line per deletion and a summary line;
//! exits 1 if anything could not be swept (it is retried on the next run).

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use tracing::{error, warn};

use crate::audit::{AuditLog, AuditRecord, TranscriptDeletionReceipt};
use crate::azure::audit_chain::BlobAuditChain;
use crate::azure::blob_store::{BlobStore, ListedBlob};
use crate::config::{Config, StoreKind};
use crate::recording::RecordingConfig;

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    /// Transcript blobs deleted (by this sweeper).
    pub transcripts_deleted: usize,
    /// Expired blobs another sweeper deleted first, or that changed meanwhile.
    pub transcripts_skipped: usize,
    /// Orphaned recordings destroyed.
    pub recordings_destroyed: usize,
    /// Failures (left for the next run).
    pub errors: usize,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The expired transcript blobs among `blobs`.
pub fn expired(blobs: &[ListedBlob], now: SystemTime) -> Vec<&ListedBlob> {
    blobs
        .iter()
        .filter(|b| {
            matches!(
                b.kind.as_deref(),
                Some("transcript") | Some("transcript_vtt")
            )
        })
        .filter(|b| b.expires_at.is_some_and(|e| e <= now))
        .collect()
}

/// Deletes expired transcripts in `store`, with receipts.
pub async fn sweep_transcripts(
    store: &BlobStore,
    chain: &BlobAuditChain,
    audit: &AuditLog,
    dry_run: bool,
    out: &mut dyn FnMut(serde_json::Value),
) -> SweepSummary {
    let mut s = SweepSummary::default();
    let blobs = match store.list_all().await {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "Cannot list transcripts.");
            s.errors += 1;
            return s;
        }
    };
    let now = SystemTime::now();
    for b in expired(&blobs, now) {
        let tenant = b.tenant.clone().unwrap_or_default();
        let meeting_id = b
            .name
            .trim_end_matches(".json")
            .trim_end_matches(".vtt")
            .to_string();
        let expired_at = b.expires_at.map(rfc3339).unwrap_or_default();
        if dry_run {
            out(
                json!({"would_delete": {"container": b.container, "blob": b.name, "tenant": tenant, "expired_at": expired_at}}),
            );
            continue;
        }
        match store
            .delete_blob(&b.container, &b.name, b.etag.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                s.transcripts_skipped += 1;
                continue;
            }
            Err(e) => {
                warn!(container = %b.container, error = %e, "Could not delete an expired transcript; the next sweep retries.");
                s.errors += 1;
                continue;
            }
        }
        s.transcripts_deleted += 1;
        let receipt = TranscriptDeletionReceipt {
            tenant: tenant.clone(),
            meeting_id,
            location: store.blob_location(&b.container, &b.name),
            transcript_sha256: b.sha256.clone(),
            expired_at,
            deleted_at: rfc3339(SystemTime::now()),
            reason: "retention expired".into(),
        };
        let entry = match audit.append_record(&AuditRecord::Transcript(receipt.clone())) {
            Ok(e) => Some(e),
            Err(e) => {
                error!(error = %e, "Deleted an expired transcript but could not append its receipt to the audit log.");
                s.errors += 1;
                None
            }
        };
        let mut line = json!({"transcript_deleted": receipt});
        if let Some(e) = &entry {
            line["audit_seq"] = e.seq.into();
            line["audit_hash"] = e.hash.clone().into();
        }
        match chain.append(&AuditRecord::Transcript(receipt)).await {
            Ok(a) => {
                line["receipt_location"] = a.location.into();
                line["chain_seq"] = a.seq.into();
                line["chain_hash"] = a.hash.into();
            }
            Err(e) => {
                error!(error = %e, "Deleted an expired transcript but could not append its receipt to the tenant's audit chain.");
                s.errors += 1;
            }
        }
        out(line);
    }
    s
}

/// Runs `meetbot sweep`. Returns the exit code.
pub async fn sweep_cmd(cfg: Config, dry_run: bool) -> i32 {
    let mut print = |v: serde_json::Value| println!("{v}");
    let audit = match crate::cli::open_audit(&cfg) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            print(json!({ "error": e }));
            return 2;
        }
    };
    let mut summary = SweepSummary::default();
    let mut chain = None;
    if cfg.store.kind == StoreKind::AzureBlob {
        let built = match super::AzureEnv::from_config(&cfg) {
            Ok(az) => match az.blob_store(&cfg) {
                Ok(store) => super::build_audit_chain(&cfg, &az)
                    .await
                    .map(|c| (store, c)),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let (store, c) = match built {
            Ok(x) => x,
            Err(e) => {
                print(json!({ "error": e }));
                return 2;
            }
        };
        summary = sweep_transcripts(&store, &c, &audit, dry_run, &mut print).await;
        chain = Some(c);
    }
    if !dry_run {
        let rec = RecordingConfig::new(cfg.paths.spool_dir());
        match crate::bot::sweep_spool_receipts(&rec, &audit) {
            Ok(receipts) => {
                summary.recordings_destroyed = receipts.len();
                for r in receipts {
                    let mut line = json!({"orphan_swept": r});
                    if let Some(c) = &chain {
                        match c.append(&AuditRecord::Recording(r)).await {
                            Ok(a) => {
                                line["receipt_location"] = a.location.into();
                                line["chain_seq"] = a.seq.into();
                                line["chain_hash"] = a.hash.into();
                            }
                            Err(e) => {
                                error!(error = %e, "Swept an orphaned recording but could not append its receipt to the audit chain.");
                                summary.errors += 1;
                            }
                        }
                    }
                    print(line);
                }
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "Sweeping the spool failed.");
                summary.errors += 1;
            }
        }
    }
    print(json!({"sweep": {
        "dry_run": dry_run,
        "transcripts_deleted": summary.transcripts_deleted,
        "transcripts_already_gone": summary.transcripts_skipped,
        "recordings_destroyed": summary.recordings_destroyed,
        "errors": summary.errors,
    }}));
    if summary.errors == 0 {
        0
    } else {
        1
    }
}
