//! Fleet mode: meetbot as a queue-driven fleet on Azure.
//!
//! - [`job`]: the job schema (one meeting for one tenant).
//! - [`tenants`]: API tokens and per-tenant settings.
//! - [`records`]: bot records in Table Storage (status per bot).
//! - [`worker`]: `meetbot worker` — take one job, run the meeting, report.
//! - [`api`]: `meetbot serve` — the control API.
//! - [`sweep`]: `meetbot sweep` — retention.
//! - [`metrics`]: Prometheus text exposition.

pub mod api;
pub mod job;
pub mod metrics;
pub mod outbox;
pub mod records;
pub mod sweep;
pub mod tenants;
pub mod worker;

use std::sync::Arc;

use azure_core::http::ClientOptions;

use crate::azure::blob_store::BlobStore;
use crate::azure::queue::JobQueue;
use crate::azure::table::TableClient;
use crate::azure::{self, AuthKind, AzureAuth, SetupError};
use crate::config::Config;
use crate::pii::Secret;

/// Azure auth and client options from configuration, built once per process.
#[derive(Clone)]
pub struct AzureEnv {
    /// Credential or SAS.
    pub auth: AzureAuth,
    /// Transport and retry options.
    pub options: ClientOptions,
}

impl AzureEnv {
    /// Builds the credential and transport `[azure]` describes.
    pub fn from_config(cfg: &Config) -> Result<AzureEnv, SetupError> {
        let a = &cfg.azure;
        let ca = if a.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(std::fs::read(&a.ca_file).map_err(|e| {
                SetupError::Config(format!("azure.ca_file {}: {e}", a.ca_file.display()))
            })?)
        };
        let options = azure::client_options(ca.as_deref(), azure::short_retry())?;
        let auth = match a.auth {
            AuthKind::Sas => {
                if a.storage_sas.expose().trim().is_empty() {
                    return Err(SetupError::Config(
                        "azure.storage_sas is required when azure.auth = \"sas\"".into(),
                    ));
                }
                AzureAuth::Sas(Secret::new(a.storage_sas.expose().clone()))
            }
            kind => AzureAuth::Token(azure::token_credential(
                kind,
                &a.managed_identity_client_id,
                &options,
            )?),
        };
        Ok(AzureEnv { auth, options })
    }

    /// The transcript store in `azure.blob_url`.
    pub fn blob_store(&self, cfg: &Config) -> Result<BlobStore, SetupError> {
        let url = azure::service_url(&cfg.azure.blob_url, &self.auth, "azure.blob_url")?;
        BlobStore::new(
            url,
            &self.auth,
            self.options.clone(),
            &cfg.store.container_prefix,
            cfg.store.retention,
        )
    }

    /// A queue in `azure.queue_url`.
    pub fn queue(&self, cfg: &Config, name: &str) -> Result<JobQueue, SetupError> {
        let url = azure::service_url(&cfg.azure.queue_url, &self.auth, "azure.queue_url")?;
        JobQueue::new(url, &self.auth, self.options.clone(), name)
    }

    /// The bot records in `azure.table_url`.
    pub fn records(&self, cfg: &Config) -> Result<records::Records, SetupError> {
        let url = azure::service_url(&cfg.azure.table_url, &self.auth, "azure.table_url")?;
        Ok(records::Records::new(
            TableClient::new(url, &self.auth, self.options.clone()),
            &cfg.queue.table,
        ))
    }
}

/// The receipt chains in `azure.blob_url` (fleet mode), MACed under keys
/// wrapped by the `[keys]` provider unless `audit.mac = "none"`.
pub async fn build_audit_chain(
    cfg: &Config,
    azure: &AzureEnv,
) -> Result<Arc<azure::audit_chain::BlobAuditChain>, String> {
    let store = azure
        .blob_store(cfg)
        .map_err(|e| format!("audit chain: {e}"))?;
    let keys = match cfg.audit_mac() {
        crate::config::AuditMac::Keys => Some(
            build_keys(cfg, Some(azure))
                .await
                .map_err(|e| format!("audit chain: {e}"))?,
        ),
        crate::config::AuditMac::None | crate::config::AuditMac::Auto => None,
    };
    Ok(Arc::new(azure::audit_chain::BlobAuditChain::new(
        store, keys,
    )))
}

/// The key provider `[keys]` describes. A Key Vault key is probed (exists,
/// enabled, RSA, may wrap and unwrap) so a misconfigured vault fails the run
/// before anything is recorded.
pub async fn build_keys(
    cfg: &Config,
    azure: Option<&AzureEnv>,
) -> Result<Arc<dyn crate::recording::KeyProvider>, String> {
    match cfg.keys.provider {
        crate::config::KeysKind::Ephemeral => {
            tracing::info!("Recording keys are ephemeral: they never leave this process's memory.");
            Ok(Arc::new(crate::recording::EphemeralKeys))
        }
        crate::config::KeysKind::LocalFile => {
            let kek = crate::recording::LocalKeyFile::open_or_create(cfg.paths.key_file())
                .map_err(|e| format!("key provider: {e}"))?;
            tracing::warn!(
                key_file = %kek.path().display(),
                "keys.provider = \"local_file\": recording keys are wrapped by a key file that \
                 outlives them, so a copy of the spool stays decryptable with it even after the \
                 recording is destroyed; receipts say unlink(local-key-file), not crypto-shred. \
                 Use \"ephemeral\" (default) or \"azure_keyvault\" unless you need this."
            );
            Ok(Arc::new(kek))
        }
        crate::config::KeysKind::AzureKeyvault => {
            let owned;
            let az = match azure {
                Some(a) => a,
                None => {
                    owned = AzureEnv::from_config(cfg).map_err(|e| format!("key provider: {e}"))?;
                    &owned
                }
            };
            let AzureAuth::Token(cred) = &az.auth else {
                return Err(
                    "key provider: Key Vault needs token authentication (azure.auth = \"workload_identity\" or \"managed_identity\"), not a SAS".into(),
                );
            };
            let kv = azure::keyvault::KeyVaultProvider::new(
                &cfg.keys.vault_url,
                &cfg.keys.key_name,
                cred.clone(),
                az.options.clone(),
                true,
            )
            .map_err(|e| format!("key provider: {e}"))?;
            let info = kv.probe().await.map_err(|e| format!("key provider: {e}"))?;
            tracing::info!(key_version = %info.version, key_type = %info.key_type, bits = info.modulus_bits, "Key Vault key ready.");
            Ok(Arc::new(kv))
        }
    }
}
