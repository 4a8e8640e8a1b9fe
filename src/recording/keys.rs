//! Data keys and the key-provider seam.
//!
//! Every recording is encrypted under its own random 256-bit [`DataKey`],
//! held in locked, non-dumped memory ([`crate::secmem`]). Who else can ever
//! recover it is the recording's **key custody**, chosen with
//! `keys.provider` and recorded in the receipt's `method` ([`KeyCustody`]):
//!
//! - [`EphemeralKeys`] (default): the key is not wrapped at all. It exists
//!   only inside the process that made the recording; the header carries an
//!   empty wrapped key. When the process ends, normally or by SIGKILL, every
//!   copy of the ciphertext anywhere becomes undecryptable.
//! - Azure Key Vault (`crate::azure::keyvault::KeyVaultProvider`): the header
//!   stores the key wrapped by a vault RSA key and is deleted with the
//!   recording. A copy of the spool taken before deletion stays decryptable
//!   by whoever may also unwrap with that vault key, until the copy is gone.
//! - [`LocalKeyFile`] (explicit choice only): a key-encryption key (KEK) in a
//!   0600 file. The file outlives every recording, so anyone with a copy of a
//!   spool and the key file can decrypt it, before and after deletion.
//!
//! Why the ephemeral provider does not wrap under an in-memory KEK: the only
//! party that could unwrap is the same process, which already holds the data
//! key (in the recording's cipher). A KEK would be a second secret protecting
//! nothing, and a wrapped blob on disk would turn a future KEK leak into a
//! decryptable spool.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::secmem::LockedBox;

/// Length of a data key and of a key-encryption key, in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// A recording's 256-bit data-encryption key.
///
/// Kept in a locked, non-dumped page that is wiped on drop; not `Clone` (so
/// no forgotten copies), and its `Debug` prints nothing about the key.
pub struct DataKey(LockedBox<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh key from the operating system's CSPRNG, generated in place.
    pub fn generate() -> Self {
        let mut key = DataKey(LockedBox::new([0u8; KEY_LEN]));
        rand::rngs::OsRng.fill_bytes(&mut key.0[..]);
        key
    }

    /// Takes the key bytes out of `bytes`, zeroizing the source.
    pub fn from_bytes(bytes: &mut [u8; KEY_LEN]) -> Self {
        let mut key = DataKey(LockedBox::new([0u8; KEY_LEN]));
        key.0.copy_from_slice(&bytes[..]);
        bytes.zeroize();
        key
    }

    /// The raw key, for the cipher that uses it.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The AES-256-GCM cipher for this key, in locked memory. Its key schedule
    /// is zeroized on drop (the `aes/zeroize` feature is enabled in
    /// Cargo.toml) and its page wiped.
    pub(crate) fn cipher(&self) -> LockedBox<Aes256Gcm> {
        LockedBox::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0[..])))
    }

    /// Whether the key's page is locked in RAM (see [`crate::secmem`]).
    pub fn is_locked(&self) -> bool {
        self.0.is_locked()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<secret>)")
    }
}

/// A data key encrypted by a [`KeyProvider`]; safe to store next to the data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// The provider that wrapped it ([`KeyProvider::name`]).
    pub provider: String,
    /// Which key-encryption key (id and version, e.g. a fingerprint) wrapped it.
    pub key_id: String,
    /// The wrapping algorithm.
    pub alg: String,
    /// The wrapped key, base64 (standard alphabet, padded).
    pub wrapped: String,
}

/// Why a key could not be created, loaded, wrapped or unwrapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file-system operation on the key file failed.
    #[error("key file {path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key file can be read by group or others.
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}); \
         it must be 0600 or stricter (chmod 600 it, or mount the secret with mode 0400)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but is not a valid key file. It is never replaced
    /// silently: recordings wrapped under it would become unreadable.
    #[error("key file {path} is invalid: {problem}; refusing to replace it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A wrapped key names another provider or algorithm.
    #[error("wrapped key is for provider {provider:?} / alg {alg:?}; this is {expected_provider:?} / {expected_alg:?}")]
    WrongProvider {
        /// The wrapped key's provider.
        provider: String,
        /// The wrapped key's algorithm.
        alg: String,
        /// This provider's name.
        expected_provider: String,
        /// This provider's algorithm.
        expected_alg: String,
    },
    /// A wrapped key was made under another key-encryption key.
    #[error("wrapped key was made under KEK {key_id:?}; this provider holds KEK {expected:?}")]
    WrongKek {
        /// The KEK the wrapped key names.
        key_id: String,
        /// The KEK this provider holds.
        expected: String,
    },
    /// The wrapped key is not well formed (bad base64, wrong length).
    #[error("wrapped key is malformed: {0}")]
    Malformed(String),
    /// Authentication failed: the wrapped key was altered or the KEK differs.
    #[error("wrapped key failed authentication (altered, or wrapped under a different KEK)")]
    Unwrap,
    /// Encryption failed (cannot happen with valid inputs; reported, not panicked).
    #[error("key wrapping failed")]
    Wrap,
    /// The wrapped key carries no key material: the data key lived only in
    /// the memory of the process that made the recording ([`EphemeralKeys`]).
    #[error(
        "the recording's key was ephemeral: it existed only in the memory of the process \
         that made the recording and cannot be recovered"
    )]
    NotRecoverable,
    /// A key-provider setting is wrong; the message names it.
    #[error("key provider configuration: {0}")]
    Config(String),
    /// The key vault could not be reached, did not answer in time, throttled
    /// or failed (5xx), after the SDK's retries. A later attempt may work.
    #[error("key vault {vault} unavailable: {detail}")]
    VaultUnavailable {
        /// The vault's origin.
        vault: String,
        /// What failed.
        detail: String,
    },
    /// The key vault refused the credential (401), denied the operation (403),
    /// or no token could be obtained.
    #[error(
        "key vault {vault} refused access ({detail}); check the credential and that the \
         identity may get, wrapKey and unwrapKey on the key"
    )]
    VaultAccessDenied {
        /// The vault's origin.
        vault: String,
        /// Operation, status, error code and the vault's message.
        detail: String,
    },
    /// The key (or the wrapped key's version) does not exist in the vault.
    #[error("key {key:?} not found in key vault {vault}: {detail}")]
    KeyNotFound {
        /// The vault's origin.
        vault: String,
        /// The key name.
        key: String,
        /// The vault's message.
        detail: String,
    },
    /// The key (version) is disabled in the vault.
    #[error("key {key} is disabled in its key vault")]
    KeyDisabled {
        /// The key id (with the version when known).
        key: String,
    },
    /// The key exists but cannot wrap data keys (type, operations, size, validity).
    #[error("key {key} cannot wrap data keys: {problem}")]
    KeyUnsuitable {
        /// The key id.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The vault answered with something malformed or inconsistent (missing
    /// fields, a key id of another key, a result of the wrong length).
    #[error("key vault {vault} sent an invalid answer: {detail}")]
    VaultResponse {
        /// The vault's origin.
        vault: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The vault rejected the request for another reason (e.g. 400).
    #[error("key vault {vault} rejected the request: {detail}")]
    VaultRejected {
        /// The vault's origin.
        vault: String,
        /// Operation, status, error code and the vault's message.
        detail: String,
    },
}

impl KeyError {
    /// Whether retrying later may succeed (the key service was unreachable,
    /// slow, throttling or failing). Everything else needs a configuration
    /// or data fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyError::VaultUnavailable { .. })
    }
}

/// Wraps and unwraps data keys. Implementations: [`EphemeralKeys`],
/// [`LocalKeyFile`] and `crate::azure::keyvault::KeyVaultProvider`.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Stable provider name, stored in [`WrappedKey::provider`].
    fn name(&self) -> &str;
    /// Encrypts `dek` under the provider's key-encryption key.
    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KeyError>;
    /// Decrypts a key made by [`KeyProvider::wrap`].
    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KeyError>;
}

/// Provider name of [`EphemeralKeys`].
pub const EPHEMERAL_PROVIDER: &str = "ephemeral";
/// [`WrappedKey::alg`] of [`EphemeralKeys`]: nothing is wrapped.
pub const EPHEMERAL_ALG: &str = "none";
/// [`WrappedKey::key_id`] of [`EphemeralKeys`].
pub const EPHEMERAL_KEY_ID: &str = "process-memory";
/// [`WrappedKey::provider`] of the Azure Key Vault provider.
pub const KEY_VAULT_PROVIDER: &str = "azure-keyvault";

/// The default key provider: recording keys are never wrapped and never leave
/// the process's (locked) memory.
///
/// [`KeyProvider::wrap`] returns a placeholder with no key material
/// (`alg = "none"`, empty `wrapped`); [`KeyProvider::unwrap`] always fails
/// with [`KeyError::NotRecoverable`]. The running process decrypts with the
/// cipher its [`super::Recording`] holds; after the process ends nothing can.
#[derive(Debug, Default, Clone, Copy)]
pub struct EphemeralKeys;

impl EphemeralKeys {
    /// The header entry for a key that is not wrapped.
    pub fn placeholder() -> WrappedKey {
        WrappedKey {
            provider: EPHEMERAL_PROVIDER.into(),
            key_id: EPHEMERAL_KEY_ID.into(),
            alg: EPHEMERAL_ALG.into(),
            wrapped: String::new(),
        }
    }
}

#[async_trait]
impl KeyProvider for EphemeralKeys {
    fn name(&self) -> &str {
        EPHEMERAL_PROVIDER
    }

    async fn wrap(&self, _dek: &DataKey) -> Result<WrappedKey, KeyError> {
        Ok(Self::placeholder())
    }

    async fn unwrap(&self, _wrapped: &WrappedKey) -> Result<DataKey, KeyError> {
        Err(KeyError::NotRecoverable)
    }
}

/// Who can recover a recording's data key once its process is gone; decides
/// the receipt's `method` ([`super::METHODS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCustody {
    /// [`EphemeralKeys`]: nobody. The key died with the process.
    Ephemeral,
    /// Azure Key Vault: whoever may unwrap with the vault key, given a copy of
    /// the header taken before deletion.
    KeyVaultWrapped,
    /// [`LocalKeyFile`]: whoever has the key file and a copy of the spool.
    LocalKeyFile,
    /// Not known: an unreadable header, or a provider this build does not know.
    Unknown,
}

impl KeyCustody {
    /// The custody of a key wrapped by the provider named `provider`
    /// ([`WrappedKey::provider`]).
    pub fn of_provider(provider: &str) -> Self {
        match provider {
            EPHEMERAL_PROVIDER => KeyCustody::Ephemeral,
            KEY_VAULT_PROVIDER => KeyCustody::KeyVaultWrapped,
            LOCAL_PROVIDER => KeyCustody::LocalKeyFile,
            _ => KeyCustody::Unknown,
        }
    }

    /// The receipt method of [`super::Recording::destroy`] under this custody.
    pub fn destroy_method(self) -> &'static str {
        match self {
            KeyCustody::Ephemeral => super::METHOD_DESTROY_EPHEMERAL,
            KeyCustody::KeyVaultWrapped => super::METHOD_DESTROY_KEY_VAULT,
            KeyCustody::LocalKeyFile => super::METHOD_DESTROY_LOCAL_FILE,
            KeyCustody::Unknown => super::METHOD_DESTROY_UNKNOWN,
        }
    }

    /// The receipt method of [`super::sweep_orphans`] under this custody.
    pub fn sweep_method(self) -> &'static str {
        match self {
            KeyCustody::Ephemeral => super::METHOD_SWEEP_EPHEMERAL,
            KeyCustody::KeyVaultWrapped => super::METHOD_SWEEP_KEY_VAULT,
            KeyCustody::LocalKeyFile => super::METHOD_SWEEP_LOCAL_FILE,
            KeyCustody::Unknown => super::METHOD_SWEEP_UNKNOWN,
        }
    }

    /// The custody a receipt `method` states, if it is one of this build's
    /// (legacy methods did not state it).
    pub fn of_method(method: &str) -> Option<Self> {
        [
            KeyCustody::Ephemeral,
            KeyCustody::KeyVaultWrapped,
            KeyCustody::LocalKeyFile,
            KeyCustody::Unknown,
        ]
        .into_iter()
        .find(|c| c.destroy_method() == method || c.sweep_method() == method)
    }

    /// What an orphan's receipt says about who could still decrypt it.
    pub fn orphan_reason(self) -> &'static str {
        match self {
            KeyCustody::Ephemeral => {
                "orphaned recording: its process ended before committing a transcript. Its key \
                 existed only in that process's memory, so the ciphertext has been undecryptable \
                 since the process died; swept at the next start"
            }
            KeyCustody::KeyVaultWrapped => {
                "orphaned recording: its process ended before committing a transcript. Its key \
                 survived only wrapped by the Key Vault key in the recording's header, deleted \
                 now; swept at the next start"
            }
            KeyCustody::LocalKeyFile => {
                "orphaned recording: its process ended before committing a transcript. Its key \
                 was wrapped by the local key file, which remains: a copy of the spool taken \
                 before this sweep stays decryptable with it; swept at the next start"
            }
            KeyCustody::Unknown => {
                "orphaned recording: its process ended before committing a transcript. Its \
                 header was unreadable, so its key custody is unknown; swept at the next start"
            }
        }
    }
}

/// Provider name of [`LocalKeyFile`].
pub const LOCAL_PROVIDER: &str = "local-file";
/// Wrapping algorithm of [`LocalKeyFile`]: AES-256-GCM, random 96-bit nonce,
/// fixed associated data; `wrapped` = base64(nonce ‖ ciphertext ‖ tag).
pub const LOCAL_ALG: &str = "aes-256-gcm";
const WRAP_AAD: &[u8] = b"meetbot/dek-wrap/v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Key file text: `meetbot-kek-v1:<64 hex key>:<8 hex check>\n`. The check
/// (4 bytes of a domain-separated SHA-256 of the key) detects corruption.
const FILE_PREFIX: &str = "meetbot-kek-v1:";
/// Longest valid key file, with slack for a missing/extra newline.
const FILE_MAX: usize = FILE_PREFIX.len() + 64 + 1 + 8 + 2;

/// A key-encryption key kept in a local file (mode 0600), created on first use.
///
/// **Weakness:** the file outlives the recordings it protects. Destroying a
/// recording deletes its wrapped key, but a copy of the spool taken earlier
/// (a backup, a snapshot of the disk, an attacker's `cp`) plus this file still
/// decrypts the audio. Receipts say `unlink(local-key-file)`, never
/// `crypto-shred`. Used only with `keys.provider = "local_file"`.
pub struct LocalKeyFile {
    path: PathBuf,
    key_id: String,
    /// The KEK's cipher, in locked memory.
    kek: LockedBox<Aes256Gcm>,
}

impl fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyFile")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl LocalKeyFile {
    /// Loads the KEK from `path`, creating it first if it does not exist.
    ///
    /// Missing parent directories are created 0700. Creation is race-safe:
    /// the key is written to a private temporary file and hard-linked into
    /// place, so concurrent starters agree on one key and nobody ever reads a
    /// half-written file. An existing file that is corrupt, the wrong size,
    /// unreadable, not a regular file, or accessible by group/others is an
    /// error naming the path and the problem; it is never replaced.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref().to_path_buf();
        match Self::load(&path) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Self::create(&path)?;
                Self::load(&path)
            }
            other => other,
        }
    }

    /// The KEK's id: a short fingerprint (16 hex chars) that is safe to log.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                path,
                action,
                source,
            }
        };
        let mut file = File::open(path).map_err(io_err("open"))?;
        let meta = file.metadata().map_err(io_err("stat"))?;
        if !meta.is_file() {
            return Err(KeyError::Corrupt {
                path: path.to_path_buf(),
                problem: "not a regular file".into(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(Vec::with_capacity(FILE_MAX + 1));
        (&mut file)
            .take(FILE_MAX as u64 + 1)
            .read_to_end(&mut text)
            .map_err(io_err("read"))?;
        let mut kek = parse_key_file(&text).map_err(|problem| KeyError::Corrupt {
            path: path.to_path_buf(),
            problem,
        })?;
        let key_id = fingerprint(&kek);
        let cipher = LockedBox::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&kek[..])));
        kek.zeroize();
        tracing::debug!(key_id = %key_id, "Loaded the local key-encryption key.");
        Ok(LocalKeyFile {
            path: path.to_path_buf(),
            key_id,
            kek: cipher,
        })
    }

    fn create(path: &Path) -> Result<(), KeyError> {
        let io_err = |p: &Path, action: &'static str| {
            let p = p.to_path_buf();
            move |source| KeyError::Io {
                path: p,
                action,
                source,
            }
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent, "create parent directory"))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kek".into());
        let tmp = parent.join(format!(".{file_name}.tmp-{}", uuid::Uuid::new_v4()));
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let text = Zeroizing::new(format_key_file(&key));
        let written = (|| -> Result<(), KeyError> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)
                .map_err(io_err(&tmp, "create temporary key file"))?;
            f.write_all(text.as_bytes())
                .map_err(io_err(&tmp, "write temporary key file"))?;
            f.sync_all()
                .map_err(io_err(&tmp, "sync temporary key file"))?;
            Ok(())
        })();
        let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => {
                tracing::info!("Created a new local key-encryption key file.");
                Ok(())
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err(path, "install key file")(e)),
        });
        if let Err(e) = fs::remove_file(&tmp) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "Could not remove a temporary key file.");
            }
        }
        linked?;
        if let Ok(dir) = File::open(parent) {
            // Best effort: make the new directory entry durable.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn check_bytes(key: &[u8; KEY_LEN]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(b"meetbot/kek-check/v1")
        .chain_update(key)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn fingerprint(key: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::new()
        .chain_update(b"meetbot/kek-id/v1")
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..8])
}

fn format_key_file(key: &[u8; KEY_LEN]) -> String {
    let mut hex_key = Zeroizing::new(hex::encode(key));
    let text = format!(
        "{FILE_PREFIX}{}:{}\n",
        hex_key.as_str(),
        hex::encode(check_bytes(key))
    );
    hex_key.zeroize();
    text
}

fn parse_key_file(text: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    if text.is_empty() {
        return Err("file is empty".into());
    }
    if text.len() > FILE_MAX {
        return Err(format!(
            "file is too large ({}+ bytes; a key file is {} bytes)",
            text.len(),
            FILE_MAX - 2
        ));
    }
    let text = std::str::from_utf8(text).map_err(|_| "file is not text".to_string())?;
    let body = text.trim_end_matches(['\n', '\r']);
    let rest = body
        .strip_prefix(FILE_PREFIX)
        .ok_or_else(|| format!("missing the {FILE_PREFIX:?} header"))?;
    let (hex_key, hex_check) = rest
        .split_once(':')
        .ok_or_else(|| "missing the check field".to_string())?;
    if hex_key.len() != 2 * KEY_LEN {
        return Err(format!(
            "key has {} hex digits, expected {}",
            hex_key.len(),
            2 * KEY_LEN
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(hex_key, &mut key[..]).map_err(|_| "key is not hex".to_string())?;
    let mut check = [0u8; 4];
    hex::decode_to_slice(hex_check, &mut check)
        .map_err(|_| "check field is not 8 hex digits".to_string())?;
    if check != check_bytes(&key) {
        return Err("check value does not match the key (file damaged or edited)".into());
    }
    Ok(key)
}

#[async_trait]
impl KeyProvider for LocalKeyFile {
    fn name(&self) -> &str {
        LOCAL_PROVIDER
    }

    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .kek
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: dek.as_bytes(),
                    aad: WRAP_AAD,
                },
            )
            .map_err(|_| KeyError::Wrap)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(WrappedKey {
            provider: LOCAL_PROVIDER.into(),
            key_id: self.key_id.clone(),
            alg: LOCAL_ALG.into(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(out),
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KeyError> {
        if wrapped.provider != LOCAL_PROVIDER || wrapped.alg != LOCAL_ALG {
            return Err(KeyError::WrongProvider {
                provider: wrapped.provider.clone(),
                alg: wrapped.alg.clone(),
                expected_provider: LOCAL_PROVIDER.into(),
                expected_alg: LOCAL_ALG.into(),
            });
        }
        if wrapped.key_id != self.key_id {
            return Err(KeyError::WrongKek {
                key_id: wrapped.key_id.clone(),
                expected: self.key_id.clone(),
            });
        }
        if wrapped.wrapped.len() > 4 * WRAPPED_LEN {
            return Err(KeyError::Malformed(format!(
                "{} base64 characters, expected {}",
                wrapped.wrapped.len(),
                WRAPPED_LEN.div_ceil(3) * 4
            )));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&wrapped.wrapped)
            .map_err(|e| KeyError::Malformed(format!("bad base64: {e}")))?;
        if raw.len() != WRAPPED_LEN {
            return Err(KeyError::Malformed(format!(
                "{} bytes, expected {WRAPPED_LEN}",
                raw.len()
            )));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.kek
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: WRAP_AAD,
                    },
                )
                .map_err(|_| KeyError::Unwrap)?,
        );
        let mut bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Malformed("unwrapped key has the wrong length".into()))?;
        Ok(DataKey::from_bytes(&mut bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(f)
    }

    #[test]
    fn debug_hides_key() {
        let k = DataKey::generate();
        let shown = format!("{k:?}");
        assert_eq!(shown, "DataKey(<secret>)");
        assert!(!shown.contains(&hex::encode(k.as_bytes())));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            DataKey::generate().as_bytes(),
            DataKey::generate().as_bytes()
        );
    }

    #[test]
    fn from_bytes_zeroizes_source() {
        let mut raw = [7u8; KEY_LEN];
        let k = DataKey::from_bytes(&mut raw);
        assert_eq!(raw, [0u8; KEY_LEN]);
        assert_eq!(k.as_bytes(), &[7u8; KEY_LEN]);
    }

    #[test]
    fn key_file_round_trip_and_check() {
        let key = [0xA5u8; KEY_LEN];
        let text = format_key_file(&key);
        assert_eq!(*parse_key_file(text.as_bytes()).expect("valid"), key);
        let mut damaged = text.clone().into_bytes();
        damaged[FILE_PREFIX.len()] = b'0';
        let err = parse_key_file(&damaged).expect_err("damaged");
        assert!(err.contains("check value"), "{err}");
        assert!(parse_key_file(b"").expect_err("empty").contains("empty"));
        assert!(parse_key_file(&[b'x'; 500])
            .expect_err("big")
            .contains("too large"));
        assert!(parse_key_file(&text.as_bytes()[..40])
            .expect_err("short")
            .contains("check field"));
    }

    #[test]
    fn wrap_unwrap_round_trip_and_rejections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = LocalKeyFile::open_or_create(dir.path().join("kek")).expect("create");
        let dek = DataKey::generate();
        let w = block_on(p.wrap(&dek)).expect("wrap");
        assert_eq!(w.provider, "local-file");
        assert_eq!(w.key_id, p.key_id());
        let back = block_on(p.unwrap(&w)).expect("unwrap");
        assert_eq!(back.as_bytes(), dek.as_bytes());
        // Two wraps of one key use different nonces.
        let w2 = block_on(p.wrap(&dek)).expect("wrap");
        assert_ne!(w.wrapped, w2.wrapped);

        let mut bad = w.clone();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&bad.wrapped)
            .expect("b64");
        raw[20] ^= 1;
        bad.wrapped = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(matches!(block_on(p.unwrap(&bad)), Err(KeyError::Unwrap)));

        let mut bad = w.clone();
        bad.key_id = "0000000000000000".into();
        assert!(matches!(
            block_on(p.unwrap(&bad)),
            Err(KeyError::WrongKek { .. })
        ));
        let mut bad = w.clone();
        bad.provider = "azure-key-vault".into();
        assert!(matches!(
            block_on(p.unwrap(&bad)),
            Err(KeyError::WrongProvider { .. })
        ));
        let mut bad = w.clone();
        bad.wrapped = "!!!".into();
        assert!(matches!(
            block_on(p.unwrap(&bad)),
            Err(KeyError::Malformed(_))
        ));
        let mut bad = w;
        bad.wrapped = base64::engine::general_purpose::STANDARD.encode([1u8; 10]);
        assert!(matches!(
            block_on(p.unwrap(&bad)),
            Err(KeyError::Malformed(_))
        ));
    }
}
