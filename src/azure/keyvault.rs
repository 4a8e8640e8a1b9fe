//! Azure Key Vault as a [`KeyProvider`]: each recording's data key is wrapped
//! with RSA-OAEP-256 under a vault key (`azure_security_keyvault_keys` 1.x).
//!
//! - **Wrap** asks the vault for the key's *newest* version and stores the
//!   full key id the vault answers with (`https://<vault>/keys/<name>/<version>`)
//!   in [`WrappedKey::key_id`]. The data key is sent to the vault over TLS and
//!   encrypted there; the private key never leaves the vault.
//! - **Unwrap** addresses exactly the stored version (never "latest"), so after
//!   a rotation new recordings use the new version while older wrapped keys
//!   still unwrap, as long as their version stays enabled.
//! - A wrapped key whose id names another vault or key is refused before any
//!   request is made.
//! - [`KeyVaultProvider::probe`] reads the key at start-up so that a wrong
//!   vault, key, permission or key type fails the worker before it joins.
//!
//! **Retries.** Transient failures (connection errors, timeouts, 408, 429,
//! 5xx) are retried only by the SDK retry policy passed in the
//! [`ClientOptions`] (meetbot uses [`super::short_retry`]: two quick retries).
//! The provider adds no retry loop of its own; what is still failing after the
//! SDK's retries comes back as [`KeyError::VaultUnavailable`]
//! ([`KeyError::is_transient`]) for the caller to decide. Every operation is
//! also bounded by an overall deadline ([`KeyVaultProvider::with_timeout`],
//! default [`DEFAULT_TIMEOUT`]) so a vault that accepts connections but never
//! answers cannot stall a join.
//!
//! **What is not zeroized.** The data key is base64url-encoded into a
//! zeroizing buffer, but the SDK copies the request body (and reads the unwrap
//! response body) into its own `Bytes` buffers, which are freed without being
//! wiped. The unwrapped key itself is moved into a [`DataKey`] and the
//! intermediate vector is zeroized.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, Url};
use azure_security_keyvault_keys::models::{KeyOperationParameters, KeyType};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::recording::{DataKey, KeyError, KeyProvider, WrappedKey, KEY_LEN};

/// Provider name stored in [`WrappedKey::provider`].
pub const PROVIDER: &str = crate::recording::keys::KEY_VAULT_PROVIDER;
/// The wrapping algorithm, as Key Vault names it.
pub const ALG: &str = "RSA-OAEP-256";
/// The token scope Key Vault challenges for (informational: the SDK takes the
/// scope from the vault's 401 challenge).
pub const KEYVAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// Default overall deadline for one vault operation, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// RSA key sizes Key Vault offers (2048, 3072, 4096 bits): the only valid
/// lengths of an RSA-OAEP ciphertext, in bytes.
const RSA_CIPHERTEXT_LENS: [usize; 3] = [256, 384, 512];
/// Longest wrapped-key text accepted from a recording header.
const MAX_WRAPPED_B64: usize = 4 * 512 / 3 + 4;
/// Server messages are quoted in errors up to this many characters.
const MAX_DETAIL: usize = 300;

/// What [`KeyVaultProvider::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultKeyInfo {
    /// The newest version's full key id (`https://<vault>/keys/<name>/<version>`).
    pub key_id: String,
    /// The newest version.
    pub version: String,
    /// `RSA` or `RSA-HSM`.
    pub key_type: String,
    /// Modulus size.
    pub modulus_bits: usize,
}

/// A [`KeyProvider`] backed by one Azure Key Vault RSA key.
pub struct KeyVaultProvider {
    client: KeyClient,
    /// `https://host[:port]`, no trailing slash.
    vault: String,
    vault_url: Url,
    key_name: String,
    timeout: Duration,
}

impl fmt::Debug for KeyVaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultProvider")
            .field("vault", &self.vault)
            .field("key_name", &self.key_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Which vault call failed, for error mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op<'a> {
    Get,
    Wrap,
    /// With the stored key id.
    Unwrap(&'a str),
}

impl Op<'_> {
    fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get key",
            Op::Wrap => "wrap key",
            Op::Unwrap(_) => "unwrap key",
        }
    }
}

impl KeyVaultProvider {
    /// A provider for key `key_name` in the vault at `vault_url`
    /// (`https://<name>.vault.azure.net`).
    ///
    /// `options` carries meetbot's transport and retry policy
    /// ([`super::client_options`]). `verify_challenge_resource` must be `true`
    /// in production: the SDK then only sends a token to a host inside the
    /// domain the vault's 401 challenge names (`*.vault.azure.net`). Tests
    /// against a local fake pass `false`, since `127.0.0.1` is not in that
    /// domain.
    pub fn new(
        vault_url: &str,
        key_name: &str,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
        verify_challenge_resource: bool,
    ) -> Result<Self, KeyError> {
        let vault_url = parse_vault_url(vault_url)?;
        if !valid_name(key_name) {
            return Err(KeyError::Config(format!(
                "keys.key_name {key_name:?} is not a Key Vault key name \
                 (1-127 letters, digits and '-')"
            )));
        }
        let vault = vault_origin(&vault_url);
        // Options without our transport make the SDK build a default reqwest
        // 0.13 client, which panics unless a rustls provider is installed.
        super::install_crypto_provider();
        let client = KeyClient::new(
            &vault,
            credential,
            Some(KeyClientOptions {
                client_options: options,
                verify_challenge_resource: Some(verify_challenge_resource),
                ..Default::default()
            }),
        )
        .map_err(|e| KeyError::Config(format!("keys.vault_url: {e}")))?;
        Ok(KeyVaultProvider {
            client,
            vault,
            vault_url,
            key_name: key_name.to_string(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the overall deadline of each vault operation (SDK retries
    /// included). Default [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The vault's origin, `https://host[:port]`.
    pub fn vault(&self) -> &str {
        &self.vault
    }

    /// The configured key name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The key's id without a version: `https://<vault>/keys/<name>`.
    pub fn key_base_id(&self) -> String {
        format!("{}/keys/{}", self.vault, self.key_name)
    }

    /// Reads the key's newest version and checks it can wrap and unwrap:
    /// enabled, inside its validity period (nbf/exp), type RSA or RSA-HSM of at least
    /// 2048 bits, with the `wrapKey` and `unwrapKey` operations permitted.
    /// Call it at start-up so a misconfigured vault fails fast.
    pub async fn probe(&self) -> Result<KeyVaultKeyInfo, KeyError> {
        let key = self
            .bounded(Op::Get, async {
                self.client
                    .get_key(&self.key_name, None)
                    .await?
                    .into_model()
            })
            .await?;
        let base = self.key_base_id();
        let jwk = key
            .key
            .as_ref()
            .ok_or_else(|| self.bad_response("get key: no \"key\" in the answer"))?;
        let kid = jwk
            .kid
            .as_deref()
            .ok_or_else(|| self.bad_response("get key: the key has no \"kid\""))?;
        let version = self.version_from_kid(kid, "get key")?;
        let key_id = format!("{base}/{version}");
        if let Some(attrs) = &key.attributes {
            if attrs.enabled == Some(false) {
                return Err(KeyError::KeyDisabled { key: key_id });
            }
            let now = time::OffsetDateTime::now_utc();
            if attrs.expires.is_some_and(|t| t <= now) {
                return Err(KeyError::KeyUnsuitable {
                    key: key_id,
                    problem: "it has expired".into(),
                });
            }
            if attrs.not_before.is_some_and(|t| t > now) {
                return Err(KeyError::KeyUnsuitable {
                    key: key_id,
                    problem: "it is not valid yet (nbf is in the future)".into(),
                });
            }
        }
        let key_type = match &jwk.kty {
            Some(KeyType::Rsa) => "RSA",
            Some(KeyType::RsaHsm) => "RSA-HSM",
            other => {
                return Err(KeyError::KeyUnsuitable {
                    key: key_id,
                    problem: format!(
                        "key type is {}, RSA-OAEP-256 wrapping needs RSA or RSA-HSM",
                        other
                            .as_ref()
                            .map_or_else(|| "missing".to_string(), |t| format!("{t:?}"))
                    ),
                })
            }
        };
        let ops = jwk.key_ops.as_deref().unwrap_or_default();
        let missing: Vec<&str> = ["wrapKey", "unwrapKey"]
            .into_iter()
            .filter(|want| !ops.iter().any(|op| op == want))
            .collect();
        if !missing.is_empty() {
            return Err(KeyError::KeyUnsuitable {
                key: key_id,
                problem: format!(
                    "its permitted operations lack {} (key_ops = {ops:?})",
                    missing.join(" and ")
                ),
            });
        }
        let modulus = jwk.n.as_deref().unwrap_or_default();
        let modulus_bits = modulus_bits(modulus);
        if modulus_bits < 2048 {
            return Err(KeyError::KeyUnsuitable {
                key: key_id,
                problem: format!("RSA modulus is {modulus_bits} bits, expected at least 2048"),
            });
        }
        tracing::debug!(key_id = %key_id, modulus_bits, "Key Vault key checked.");
        Ok(KeyVaultKeyInfo {
            key_id,
            version,
            key_type: key_type.into(),
            modulus_bits,
        })
    }

    /// Runs one SDK call under the deadline and maps its error.
    async fn bounded<T>(
        &self,
        op: Op<'_>,
        fut: impl std::future::Future<Output = azure_core::Result<T>>,
    ) -> Result<T, KeyError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(op, e)),
            Err(_) => Err(KeyError::VaultUnavailable {
                vault: self.vault.clone(),
                detail: format!(
                    "{}: no answer within {}",
                    op.as_str(),
                    humantime::format_duration(self.timeout)
                ),
            }),
        }
    }

    fn bad_response(&self, detail: impl Into<String>) -> KeyError {
        KeyError::VaultResponse {
            vault: self.vault.clone(),
            detail: detail.into(),
        }
    }

    /// The version in a key id the vault returned, after checking that the id
    /// names this vault and key.
    fn version_from_kid(&self, kid: &str, what: &str) -> Result<String, KeyError> {
        match self.parse_key_id(kid) {
            Ok(KidCheck::Ours(version)) => Ok(version),
            Ok(KidCheck::Foreign) => Err(self.bad_response(format!(
                "{what}: the answer names key {:?}, not {}",
                clip(kid),
                self.key_base_id()
            ))),
            Err(problem) => Err(self.bad_response(format!(
                "{what}: key id {:?} in the answer: {problem}",
                clip(kid)
            ))),
        }
    }

    /// Parses `https://<vault>/keys/<name>/<version>` (a query is ignored).
    fn parse_key_id(&self, kid: &str) -> Result<KidCheck, String> {
        let url = Url::parse(kid).map_err(|e| format!("not a URL: {e}"))?;
        let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
        let same_vault = url.scheme() == self.vault_url.scheme()
            && url.host_str().map(str::to_ascii_lowercase)
                == self.vault_url.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.vault_url.port_or_known_default();
        let (name, version) = match segments.as_slice() {
            ["keys", name] | ["keys", name, ""] => {
                if same_vault && name.eq_ignore_ascii_case(&self.key_name) {
                    return Err("it has no version".into());
                }
                return Ok(KidCheck::Foreign);
            }
            ["keys", name, version] => (*name, *version),
            _ => {
                if same_vault {
                    return Err("not of the form https://<vault>/keys/<name>/<version>".into());
                }
                return Ok(KidCheck::Foreign);
            }
        };
        // Key Vault names are case-insensitive.
        if !same_vault || !name.eq_ignore_ascii_case(&self.key_name) {
            return Ok(KidCheck::Foreign);
        }
        if !valid_version(version) {
            return Err(format!(
                "version {:?} is not a Key Vault version",
                clip(version)
            ));
        }
        Ok(KidCheck::Ours(version.to_string()))
    }

    /// Maps an SDK error to a [`KeyError`] (no secrets: server messages and
    /// URLs only, clipped).
    fn map_error(&self, op: Op<'_>, err: azure_core::Error) -> KeyError {
        let vault = self.vault.clone();
        match err.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let status = u16::from(*status);
                let body = raw_response
                    .as_ref()
                    .map(|r| parse_error_body(r.body()))
                    .unwrap_or_default();
                let code = body
                    .code
                    .clone()
                    .or_else(|| error_code.clone())
                    .unwrap_or_default();
                let message = body
                    .message
                    .clone()
                    .unwrap_or_else(|| clip(&err.to_string()));
                let detail = format!("{}: HTTP {status} {code}: {message}", op.as_str());
                match status {
                    401 => KeyError::VaultAccessDenied { vault, detail },
                    403 if body.inner_code.as_deref() == Some("KeyDisabled")
                        || message.to_ascii_lowercase().contains("disabled key") =>
                    {
                        KeyError::KeyDisabled {
                            key: match op {
                                Op::Unwrap(key_id) => key_id.to_string(),
                                // Wrap and get use the newest version.
                                Op::Get | Op::Wrap => {
                                    format!("{} (newest version)", self.key_base_id())
                                }
                            },
                        }
                    }
                    403 => KeyError::VaultAccessDenied { vault, detail },
                    404 => KeyError::KeyNotFound {
                        vault,
                        key: self.key_name.clone(),
                        detail: message,
                    },
                    // The vault could not decrypt the ciphertext: altered, or
                    // made under another key.
                    400 if matches!(op, Op::Unwrap(_)) => KeyError::Unwrap,
                    408 | 429 | 500..=599 => KeyError::VaultUnavailable { vault, detail },
                    _ => KeyError::VaultRejected { vault, detail },
                }
            }
            ErrorKind::Io | ErrorKind::Connection => KeyError::VaultUnavailable {
                vault,
                detail: format!("{}: {}", op.as_str(), error_chain(&err)),
            },
            ErrorKind::Credential => KeyError::VaultAccessDenied {
                vault,
                detail: format!("{}: no token: {}", op.as_str(), error_chain(&err)),
            },
            ErrorKind::DataConversion => KeyError::VaultResponse {
                vault,
                detail: format!("{}: {}", op.as_str(), error_chain(&err)),
            },
            _ => KeyError::VaultRejected {
                vault,
                detail: format!("{}: {}", op.as_str(), error_chain(&err)),
            },
        }
    }

    /// The request body `{"alg":"RSA-OAEP-256","value":"<base64url>"}`, built
    /// in a zeroizing buffer.
    fn operation_body(value: &[u8]) -> RequestContent<KeyOperationParameters> {
        let mut json = Zeroizing::new(String::with_capacity(64 + value.len() * 4 / 3 + 4));
        json.push_str("{\"alg\":\"");
        json.push_str(ALG);
        json.push_str("\",\"value\":\"");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(value, &mut json);
        json.push_str("\"}");
        RequestContent::from_slice(json.as_bytes())
    }
}

enum KidCheck {
    Ours(String),
    Foreign,
}

#[async_trait]
impl KeyProvider for KeyVaultProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KeyError> {
        let body = Self::operation_body(dek.as_bytes());
        // key_version None: the newest version wraps.
        let result = self
            .bounded(Op::Wrap, async {
                self.client
                    .wrap_key(&self.key_name, body, None)
                    .await?
                    .into_model()
            })
            .await?;
        let kid = result
            .kid
            .as_deref()
            .ok_or_else(|| self.bad_response("wrap key: no \"kid\" in the answer"))?;
        let version = self.version_from_kid(kid, "wrap key")?;
        let wrapped = result
            .result
            .as_deref()
            .ok_or_else(|| self.bad_response("wrap key: no \"value\" in the answer"))?;
        if !RSA_CIPHERTEXT_LENS.contains(&wrapped.len()) {
            return Err(self.bad_response(format!(
                "wrap key: the wrapped key is {} bytes, expected 256, 384 or 512 \
                 (an RSA-2048/3072/4096 ciphertext)",
                wrapped.len()
            )));
        }
        let key_id = format!("{}/{version}", self.key_base_id());
        tracing::debug!(key_id = %key_id, "Data key wrapped by Key Vault.");
        Ok(WrappedKey {
            provider: PROVIDER.into(),
            key_id,
            alg: ALG.into(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(wrapped),
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KeyError> {
        if wrapped.provider != PROVIDER || wrapped.alg != ALG {
            return Err(KeyError::WrongProvider {
                provider: wrapped.provider.clone(),
                alg: wrapped.alg.clone(),
                expected_provider: PROVIDER.into(),
                expected_alg: ALG.into(),
            });
        }
        let version = match self.parse_key_id(&wrapped.key_id) {
            Ok(KidCheck::Ours(version)) => version,
            Ok(KidCheck::Foreign) => {
                return Err(KeyError::WrongKek {
                    key_id: wrapped.key_id.clone(),
                    expected: self.key_base_id(),
                })
            }
            Err(problem) => {
                return Err(KeyError::Malformed(format!(
                    "key id {:?}: {problem}",
                    clip(&wrapped.key_id)
                )))
            }
        };
        if wrapped.wrapped.len() > MAX_WRAPPED_B64 {
            return Err(KeyError::Malformed(format!(
                "{} base64 characters, at most {MAX_WRAPPED_B64} expected",
                wrapped.wrapped.len()
            )));
        }
        let ciphertext = base64::engine::general_purpose::STANDARD
            .decode(&wrapped.wrapped)
            .map_err(|e| KeyError::Malformed(format!("bad base64: {e}")))?;
        if !RSA_CIPHERTEXT_LENS.contains(&ciphertext.len()) {
            return Err(KeyError::Malformed(format!(
                "{} bytes, expected 256, 384 or 512 (an RSA ciphertext)",
                ciphertext.len()
            )));
        }
        let body = Self::operation_body(&ciphertext);
        let result = self
            .bounded(Op::Unwrap(&wrapped.key_id), async {
                self.client
                    .unwrap_key(&self.key_name, &version, body, None)
                    .await?
                    .into_model()
            })
            .await?;
        let mut plain = Zeroizing::new(result.result.unwrap_or_default());
        if let Some(kid) = result.kid.as_deref() {
            let answered = self.version_from_kid(kid, "unwrap key")?;
            if answered != version {
                return Err(self.bad_response(format!(
                    "unwrap key: asked for version {version}, the answer names {answered}"
                )));
            }
        }
        if plain.len() != KEY_LEN {
            return Err(self.bad_response(format!(
                "unwrap key: the unwrapped key is {} bytes, expected {KEY_LEN}",
                plain.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&plain);
        plain.zeroize();
        tracing::debug!(key_id = %wrapped.key_id, "Data key unwrapped by Key Vault.");
        Ok(DataKey::from_bytes(&mut bytes))
    }
}

/// Checks and normalises `keys.vault_url`: https, a host, no path, query,
/// fragment or credentials.
fn parse_vault_url(raw: &str) -> Result<Url, KeyError> {
    let bad = |why: &str| KeyError::Config(format!("keys.vault_url {raw:?}: {why}"));
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(KeyError::Config("keys.vault_url is empty".into()));
    }
    let url = Url::parse(trimmed).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(bad(
            "must be https (Key Vault tokens are never sent over plain http)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not contain a query or fragment"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad(
            "must be the vault's origin, e.g. https://<name>.vault.azure.net (no path)",
        ));
    }
    Ok(url)
}

fn vault_origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Key Vault object names: 1-127 of `[0-9A-Za-z-]`.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Key Vault versions are 32 hex digits; accept any short alphanumeric token
/// (it is put into a URL path, so nothing else).
fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Clips and de-controls text from outside for an error message.
fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_DETAIL)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// An error and its sources, `a: b: c`, clipped.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    clip(&text)
}

#[derive(Default)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    inner_code: Option<String>,
}

/// `{"error":{"code":..,"message":..,"innererror":{"code":..}}}`; anything
/// else yields empty fields.
fn parse_error_body(body: &[u8]) -> ErrorBody {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
        #[serde(rename = "innererror", alias = "innerError")]
        inner: Option<InnerInner>,
    }
    #[derive(serde::Deserialize)]
    struct InnerInner {
        code: Option<String>,
    }
    if body.len() > 64 * 1024 {
        return ErrorBody::default();
    }
    match serde_json::from_slice::<Outer>(body) {
        Ok(o) => ErrorBody {
            code: o.error.code.map(|c| clip(&c)),
            message: o.error.message.map(|m| clip(&m)),
            inner_code: o.error.inner.and_then(|i| i.code).map(|c| clip(&c)),
        },
        Err(_) => ErrorBody::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoCredential;

    #[async_trait]
    impl TokenCredential for NoCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "no credential in unit tests",
            ))
        }
    }

    fn provider(url: &str, name: &str) -> Result<KeyVaultProvider, KeyError> {
        KeyVaultProvider::new(
            url,
            name,
            Arc::new(NoCredential),
            ClientOptions::default(),
            true,
        )
    }

    #[test]
    fn vault_url_and_key_name_are_validated() {
        let p = provider("https://MyVault.vault.azure.net/", "kek-1").expect("valid");
        assert_eq!(p.vault(), "https://myvault.vault.azure.net");
        assert_eq!(
            p.key_base_id(),
            "https://myvault.vault.azure.net/keys/kek-1"
        );
        for (url, needle) in [
            ("", "empty"),
            ("http://v.vault.azure.net", "https"),
            ("https://v.vault.azure.net/keys", "no path"),
            ("https://v.vault.azure.net/?x=1", "query"),
            ("https://u:p@v.vault.azure.net", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = provider(url, "kek").expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        for name in ["", "a/b", "kek?x", "ké", &"a".repeat(128)] {
            let err = provider("https://v.vault.azure.net", name).expect_err(name);
            assert!(matches!(err, KeyError::Config(_)), "{name}: {err}");
        }
    }

    #[test]
    fn key_ids_are_parsed_strictly() {
        let p = provider("https://v.vault.azure.net", "kek").unwrap();
        let ours = |kid: &str| match p.parse_key_id(kid) {
            Ok(KidCheck::Ours(v)) => Some(v),
            _ => None,
        };
        let foreign = |kid: &str| matches!(p.parse_key_id(kid), Ok(KidCheck::Foreign));
        assert_eq!(
            ours("https://v.vault.azure.net/keys/kek/0123abcd").as_deref(),
            Some("0123abcd")
        );
        assert_eq!(
            ours("https://V.vault.azure.net:443/keys/KEK/0123abcd?api-version=7.5").as_deref(),
            Some("0123abcd")
        );
        assert!(foreign("https://w.vault.azure.net/keys/kek/0123abcd"));
        assert!(foreign("https://v.vault.azure.net:8443/keys/kek/0123abcd"));
        assert!(foreign("https://v.vault.azure.net/keys/other/0123abcd"));
        assert!(foreign("http://v.vault.azure.net/keys/kek/0123abcd"));
        assert!(p
            .parse_key_id("https://v.vault.azure.net/keys/kek")
            .is_err());
        assert!(p
            .parse_key_id("https://v.vault.azure.net/keys/kek/")
            .is_err());
        assert!(p
            .parse_key_id("https://v.vault.azure.net/keys/kek/ab%2Fcd")
            .is_err());
        assert!(p
            .parse_key_id("https://v.vault.azure.net/secrets/kek/ab")
            .is_err());
        assert!(p.parse_key_id("kek/0123").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(modulus_bits(&[0, 0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01; 256]), 2041);
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(clip("a\nb"), "a b");
        assert_eq!(clip(&"x".repeat(400)).chars().count(), MAX_DETAIL + 1);
        let b = parse_error_body(
            br#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#,
        );
        assert_eq!(b.code.as_deref(), Some("Forbidden"));
        assert_eq!(b.inner_code.as_deref(), Some("KeyDisabled"));
        assert!(parse_error_body(b"<html>").code.is_none());
    }
}
