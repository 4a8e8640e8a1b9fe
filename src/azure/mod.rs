//! Azure plumbing for fleet mode: one HTTP transport (rustls on ring, our
//! trust roots), the credential choice (workload identity, managed identity,
//! or an account SAS for Azurite), and the clients built on them:
//! [`blob_store`] (transcripts), [`table`] (bot records), [`queue`] (jobs),
//! [`keyvault`] (the Key Vault key provider for recording keys).
//!
//! The official SDK 1.x crates are used where they exist (`azure_storage_blob`,
//! `azure_storage_queue`, `azure_security_keyvault_keys`, `azure_identity`);
//! Table Storage has no 1.x crate, so [`table`] is a small client on
//! `azure_core`'s pipeline (same retry, logging and bearer-token policies).

pub mod audit_chain;
pub mod blob_store;
pub mod keyvault;
pub mod queue;
pub mod sas;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport, Url};

use crate::pii::Secret;

/// The scope Azure Storage (blob, queue, table) tokens are issued for.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// Why an Azure client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A configuration value is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    /// The credential could not be created (missing workload-identity environment, …).
    #[error("azure credential: {0}")]
    Credential(String),
}

/// How meetbot authenticates to Azure.
#[derive(Clone)]
pub enum AzureAuth {
    /// Microsoft Entra tokens (workload or managed identity). Requires https endpoints.
    Token(Arc<dyn TokenCredential>),
    /// An account SAS appended to every storage URL (Azurite, or SAS-only
    /// deployments). Not usable for Key Vault.
    Sas(Secret<String>),
}

impl std::fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureAuth::Token(_) => f.write_str("AzureAuth::Token"),
            AzureAuth::Sas(_) => f.write_str("AzureAuth::Sas(<secret>)"),
        }
    }
}

/// Which credential to use (`azure.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// AKS workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`, set by the workload-identity webhook.
    WorkloadIdentity,
    /// The host's managed identity (IMDS).
    ManagedIdentity,
    /// An account SAS in `azure.storage_sas` (storage only).
    Sas,
}

/// Installs rustls' ring provider as the process default. The Azure SDK's own
/// pipelines (the identity credentials) build reqwest 0.13 clients that need a
/// default provider; meetbot compiles only ring. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SDK client options with meetbot's transport: rustls on ring with the
/// web PKI roots plus `extra_ca_pem` (a private CA, or a test fake's), no
/// redirects, bounded connects and reads; and the given retry policy.
pub fn client_options(
    extra_ca_pem: Option<&[u8]>,
    retry: RetryOptions,
) -> Result<ClientOptions, SetupError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut n = 0usize;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|e| SetupError::Config(format!("azure.ca_file: bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| SetupError::Config(format!("azure.ca_file: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(SetupError::Config(
                "azure.ca_file holds no PEM certificate".into(),
            ));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SetupError::Config(format!("tls: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest013::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest013::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| SetupError::Config(format!("http client: {e}")))?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry,
        ..Default::default()
    })
}

/// A short SDK retry policy: a few quick retries for blips. Longer outages
/// are the caller's to handle (the lifecycle's commit backoff, the worker's
/// lease), so a stopped service surfaces in seconds, not a minute.
pub fn short_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 2,
        max_total_elapsed: azure_core::time::Duration::seconds(10),
        max_delay: azure_core::time::Duration::seconds(2),
    })
}

/// Builds the token credential for `kind` (not for [`AuthKind::Sas`]).
pub fn token_credential(
    kind: AuthKind,
    managed_identity_client_id: &str,
    options: &ClientOptions,
) -> Result<Arc<dyn TokenCredential>, SetupError> {
    match kind {
        AuthKind::WorkloadIdentity => {
            let opts = azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: options.clone(),
                },
                ..Default::default()
            };
            let c = azure_identity::WorkloadIdentityCredential::new(Some(opts))
                .map_err(|e| SetupError::Credential(e.to_string()))?;
            Ok(c)
        }
        AuthKind::ManagedIdentity => {
            let opts = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: (!managed_identity_client_id.is_empty()).then(|| {
                    azure_identity::UserAssignedId::ClientId(managed_identity_client_id.into())
                }),
                client_options: options.clone(),
            };
            let c = azure_identity::ManagedIdentityCredential::new(Some(opts))
                .map_err(|e| SetupError::Credential(e.to_string()))?;
            Ok(c)
        }
        AuthKind::Sas => Err(SetupError::Config(
            "azure.auth = \"sas\" has no token credential".into(),
        )),
    }
}

/// A storage service URL ready for the SDK: with a SAS, the SAS query is
/// appended and any trailing `/` of a path-style (Azurite) URL removed, since
/// the SDK appends container and blob names as path segments.
pub fn service_url(base: &str, auth: &AzureAuth, key: &str) -> Result<Url, SetupError> {
    let trimmed = base.trim();
    if trimmed.is_empty() {
        return Err(SetupError::Config(format!("{key} is empty")));
    }
    let mut url =
        Url::parse(trimmed).map_err(|e| SetupError::Config(format!("{key}: not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(SetupError::Config(format!("{key}: scheme must be https")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(SetupError::Config(format!(
            "{key}: must not contain a query, fragment or credentials (put a SAS in azure.storage_sas)"
        )));
    }
    match auth {
        AzureAuth::Token(_) => {
            if url.scheme() != "https" {
                return Err(SetupError::Config(format!(
                    "{key}: token authentication needs an https URL"
                )));
            }
        }
        AzureAuth::Sas(sas) => {
            let path = url.path().trim_end_matches('/').to_string();
            url.set_path(&path);
            let q = sas.expose().trim().trim_start_matches('?').to_string();
            if q.is_empty() {
                return Err(SetupError::Config("azure.storage_sas is empty".into()));
            }
            url.set_query(Some(&q));
        }
    }
    Ok(url)
}

/// `url` without its query (the SAS): safe to log and to return to users.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Whether an SDK error is worth retrying later: connection and I/O errors,
/// timeouts, throttling and server errors.
pub fn is_transient(err: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    match err.kind() {
        ErrorKind::Io | ErrorKind::Connection => true,
        ErrorKind::HttpResponse { status, .. } => {
            let s = u16::from(*status);
            s == 408 || s == 429 || s >= 500
        }
        _ => false,
    }
}

/// The HTTP status of an SDK error, if it was a response.
pub fn http_status(err: &azure_core::Error) -> Option<u16> {
    err.http_status().map(u16::from)
}

/// The storage error code (`x-ms-error-code`) of an SDK error, if any.
pub fn error_code(err: &azure_core::Error) -> Option<String> {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}
