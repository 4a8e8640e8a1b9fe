//! Configuration: built-in defaults → optional file → `MEETBOT_*` environment.
//!
//! Raw layers are merged as TOML tables, then deserialized strictly (unknown
//! keys are errors) and validated. Every error names the offending key and the
//! layer it came from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::lifecycle::{AutoLeaveConfig, LifecycleConfig};
use crate::core::vad::VadConfig;
use crate::pii::Secret;

/// The built-in defaults (also the documented reference).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of configuration environment variables; keys follow as `SECTION__KEY`.
pub const ENV_PREFIX: &str = "MEETBOT_";

/// Validated configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[bot]`
    pub bot: BotConfig,
    /// `[paths]`
    pub paths: PathsConfig,
    /// `[recording]`
    pub recording: RecordingSection,
    /// `[stt]`
    pub stt: SttConfig,
    /// `[vad]`
    #[serde(default)]
    pub vad: VadConfig,
    /// `[lifecycle]`
    pub lifecycle: LifecycleSection,
    /// `[auto_leave]`
    pub auto_leave: AutoLeaveSection,
    /// `[janus]`
    pub janus: JanusSection,
    /// `[transport]`
    pub transport: TransportSection,
    /// `[jitter]`
    pub jitter: JitterSection,
    /// `[stt_serve]`
    pub stt_serve: SttServeConfig,
    /// `[store]`
    pub store: StoreSection,
    /// `[keys]`
    pub keys: KeysSection,
    /// `[azure]`
    pub azure: AzureSection,
    /// `[queue]`
    pub queue: QueueSection,
    /// `[tenants]`
    pub tenants: TenantsSection,
    /// `[serve]`
    pub serve: ServeSection,
    /// `[worker]`
    pub worker: WorkerSection,
    /// `[webhooks]`
    pub webhooks: WebhooksSection,
    /// `[urls]`
    pub urls: UrlsSection,
    /// `[audit]`
    pub audit: AuditSection,
    /// `[log]`
    pub log: LogConfig,
}

/// `[bot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Display name in the meeting.
    pub name: String,
    /// Default tenant.
    pub tenant: String,
}

/// `[paths]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Base for the relative paths below.
    pub data_dir: PathBuf,
    /// Encrypted spill directory.
    pub spool_dir: PathBuf,
    /// Local transcript store root.
    pub transcripts_dir: PathBuf,
    /// Audit log file.
    pub audit_log: PathBuf,
    /// Local key-encryption key file.
    pub key_file: PathBuf,
}

impl PathsConfig {
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }
    /// Resolved spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.resolve(&self.spool_dir)
    }
    /// Resolved transcripts directory.
    pub fn transcripts_dir(&self) -> PathBuf {
        self.resolve(&self.transcripts_dir)
    }
    /// Resolved audit log path.
    pub fn audit_log(&self) -> PathBuf {
        self.resolve(&self.audit_log)
    }
    /// Resolved key file path.
    pub fn key_file(&self) -> PathBuf {
        self.resolve(&self.key_file)
    }
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// Sealed chunks kept in memory before spilling, KiB.
    pub memory_budget_kib: u64,
    /// Plaintext bytes per sealed chunk, KiB.
    pub chunk_kib: u64,
    /// Maximum age of an uncommitted recording.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

/// Which STT provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SttKind {
    /// Whisper in-process.
    Embedded,
    /// OpenAI-compatible HTTP API.
    Openai,
}

impl std::str::FromStr for SttKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(SttKind::Embedded),
            "openai" => Ok(SttKind::Openai),
            other => Err(format!(
                "unknown STT provider {other:?}; expected embedded or openai"
            )),
        }
    }
}

/// `[stt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    /// Provider.
    pub provider: SttKind,
    /// Embedded model directory.
    pub model_dir: PathBuf,
    /// Embedded CPU threads.
    pub threads: usize,
    /// OpenAI-compatible API base.
    pub url: String,
    /// Bearer token.
    pub api_key: Secret<String>,
    /// Model name for the API.
    pub model: String,
    /// Language.
    pub language: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per utterance.
    pub attempts: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Retry delay cap.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Utterances transcribed at once.
    pub concurrency: usize,
    /// Cap on decoded PCM in flight to the provider, KiB.
    pub inflight_budget_kib: u64,
}

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSection {
    /// Admission timeout.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// Shutdown grace.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// First commit retry delay.
    #[serde(with = "humantime_serde")]
    pub commit_retry_initial: Duration,
    /// Commit retry delay cap.
    #[serde(with = "humantime_serde")]
    pub commit_retry_max: Duration,
}

/// `[auto_leave]` — zero disables a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoLeaveSection {
    /// Leave this long after the last other participant left.
    #[serde(with = "humantime_serde")]
    pub everyone_left: Duration,
    /// Leave if nobody else joined within this long of admission.
    #[serde(with = "humantime_serde")]
    pub noone_joined: Duration,
    /// Leave after this long in the call.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Leave after this long without speech while audio arrives.
    #[serde(with = "humantime_serde")]
    pub silence: Duration,
    /// Give up after this long in a waiting room.
    #[serde(with = "humantime_serde")]
    pub waiting_room: Duration,
}

/// `[janus]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JanusSection {
    /// Handshake bound.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reply bound.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Keepalive period.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Publishers tracked.
    pub max_publishers: usize,
    /// First rejoin wait.
    #[serde(with = "humantime_serde")]
    pub rejoin_initial_backoff: Duration,
    /// Rejoin wait cap.
    #[serde(with = "humantime_serde")]
    pub rejoin_max_backoff: Duration,
    /// How long to keep trying to rejoin.
    #[serde(with = "humantime_serde")]
    pub rejoin_window: Duration,
    /// Silence after which a publisher counts as gone.
    #[serde(with = "humantime_serde")]
    pub publisher_timeout: Duration,
}

/// `[transport]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP bind addresses.
    pub udp_bind: Vec<String>,
    /// ICE gathering bound.
    #[serde(with = "humantime_serde")]
    pub ice_gather_timeout: Duration,
    /// STUN servers.
    pub stun_urls: Vec<String>,
}

/// `[jitter]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitterSection {
    /// Wait for a missing packet.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Packets held behind a hole.
    pub max_depth: usize,
    /// Sequence jump that restarts the stream.
    pub resync_packets: u16,
    /// Early-arrival re-anchor threshold.
    #[serde(with = "humantime_serde")]
    pub ahead_tolerance: Duration,
    /// Late-arrival re-anchor threshold.
    #[serde(with = "humantime_serde")]
    pub behind_tolerance: Duration,
    /// Window for `behind_tolerance`.
    #[serde(with = "humantime_serde")]
    pub drift_window: Duration,
}

/// `[stt_serve]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttServeConfig {
    /// Listen address.
    pub listen: String,
    /// Bearer token required from clients (required off loopback).
    pub api_key: Secret<String>,
    /// Engine concurrency.
    pub max_concurrency: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Time to receive a request's head.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time to receive a whole request body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
}

/// Where transcripts are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// `paths.transcripts_dir`.
    Local,
    /// Azure Blob Storage, a container per tenant.
    AzureBlob,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `local` or `azure_blob`.
    pub kind: StoreKind,
    /// Container-name prefix (azure_blob).
    pub container_prefix: String,
    /// Default transcript retention.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Who holds recording keys (key custody; README "Key custody").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeysKind {
    /// Default: keys never leave process memory; nothing can decrypt a
    /// recording once its process is gone.
    Ephemeral,
    /// A key-encryption key in `paths.key_file`, which outlives recordings
    /// (a copy of the spool stays decryptable). `local` is the name it had
    /// when it was the default.
    #[serde(alias = "local-file", alias = "local")]
    LocalFile,
    /// An RSA key in Azure Key Vault.
    AzureKeyvault,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// `ephemeral`, `local_file` or `azure_keyvault`.
    pub provider: KeysKind,
    /// Key Vault URL, e.g. `https://myvault.vault.azure.net`.
    pub vault_url: String,
    /// Key name in the vault.
    pub key_name: String,
}

/// `[azure]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// `workload_identity`, `managed_identity` or `sas`.
    pub auth: crate::azure::AuthKind,
    /// User-assigned managed identity client id (managed_identity).
    pub managed_identity_client_id: String,
    /// Blob service URL.
    pub blob_url: String,
    /// Queue service URL.
    pub queue_url: String,
    /// Table service URL.
    pub table_url: String,
    /// Account SAS (auth = "sas").
    pub storage_sas: Secret<String>,
    /// Extra trusted CA certificates (PEM file).
    pub ca_file: PathBuf,
}

/// `[queue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Job queue name.
    pub name: String,
    /// Where jobs go after `max_attempts`.
    pub poison_name: String,
    /// Attempts before a job is parked.
    pub max_attempts: u32,
    /// Visibility timeout of a taken job, renewed at a third.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Bot records table.
    pub table: String,
    /// How long `meetbot worker` waits for a job.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
}

/// `[tenants]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsSection {
    /// The tenants file (tokens, retention, webhook secrets).
    pub file: PathBuf,
}

/// `[serve]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Listen address of the API (`/v1/*`, `/healthz`, `/readyz`).
    pub listen: String,
    /// Listen address of `/metrics` ("" = off). A separate listener so that
    /// what the metrics name (tenant ids) never reaches the API's clients.
    pub metrics_listen: String,
    /// How long an `Idempotency-Key` of `POST /v1/bots` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Bots listed per `GET /v1/bots` page at most.
    pub max_list: usize,
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Health/metrics listen address while in a meeting ("" = off).
    pub listen: String,
    /// How often the worker checks its bot record for a stop request.
    #[serde(with = "humantime_serde")]
    pub stop_poll: Duration,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// Per-attempt timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delays before each attempt (Standard Webhooks' schedule).
    #[serde(with = "humantime_serde_vec")]
    pub schedule: Vec<Duration>,
    /// Attempts a worker makes itself before leaving a delivery to the outbox.
    pub in_process_attempts: u32,
    /// How long a finishing worker waits for deliveries still being retried.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// Queue of deliveries a worker could not finish; `serve` delivers them.
    pub outbox_queue: String,
}

/// Whether fleet-mode receipt chains carry a MAC (`audit.mac`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditMac {
    /// `keys` when the `[keys]` provider's wrapped keys outlive the process
    /// (`azure_keyvault`, `local_file`), `none` with `ephemeral` keys.
    Auto,
    /// HMAC-SHA256 under a per-tenant key wrapped by the `[keys]` provider.
    Keys,
    /// No MAC.
    None,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How long an append waits for another process's lock on paths.audit_log.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// `auto`, `keys` or `none`; see [`Config::audit_mac`].
    pub mac: AuditMac,
}

/// `[urls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlsSection {
    /// Private networks (CIDR) and host names meetings and webhooks may use anyway.
    pub allow: Vec<String>,
    /// Accept `replay:` meeting URLs in jobs (local testing only).
    pub allow_replay: bool,
}

mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter()
            .map(|s| humantime::parse_duration(s.trim()).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level for stderr logs.
    pub level: String,
}

/// Settings that hold secrets: never printed.
pub const SECRET_KEYS: &[(&str, &str)] = &[
    ("stt", "api_key"),
    ("stt_serve", "api_key"),
    ("azure", "storage_sas"),
];

/// A configuration error, naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` (if any), then `MEETBOT_*__*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_table(merged_layers(file, env)?)
    }

    /// Like [`Config::load`], also returning the merged settings as a TOML
    /// table with every secret replaced by `"<redacted>"` (what `meetbot config` prints).
    pub fn load_effective(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, toml::Table), ConfigError> {
        let mut root = merged_layers(file, env)?;
        let cfg = Self::from_table(root.clone())?;
        for (section, key) in SECRET_KEYS {
            if let Some(toml::Value::Table(t)) = root.get_mut(*section) {
                if let Some(v) = t.get_mut(*key) {
                    if v.as_str().is_some_and(|s| !s.is_empty()) {
                        *v = toml::Value::String("<redacted>".into());
                    }
                }
            }
        }
        Ok((cfg, root))
    }

    fn from_table(root: toml::Table) -> Result<Config, ConfigError> {
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(root))
            .map_err(|e| ConfigError(format!("{}: {}", e.path(), e.inner())))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Defaults, then `file`, then `MEETBOT_*__*` variables, merged into one table
/// (unknown keys and type mismatches against the defaults are errors).
fn merged_layers(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    // The built-in file is part of the binary; failing to parse it is a bug
    // caught by the tests.
    let mut root: toml::Table =
        toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError(format!("built-in defaults: {e}")))?;
    let defaults = root.clone();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        // toml's Display quotes the offending line, which may hold a
        // secret: report the message and position only.
        let layer: toml::Table = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|sp| {
                    let before = &text.as_bytes()[..sp.start.min(text.len())];
                    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            ConfigError(format!("{}{at}: {}", path.display(), e.message().trim()))
        })?;
        merge(&mut root, layer, "", &path.display().to_string())?;
    }

    let mut env_vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    env_vars.sort();
    for (name, value) in env_vars {
        apply_env(&mut root, &defaults, &name, &value)?;
    }

    Ok(root)
}

impl Config {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.bot.name.trim().is_empty() || self.bot.name.chars().count() > 64 {
            return bad("bot.name", "must be 1-64 characters");
        }
        if let Err(e) = crate::store::validate_id("tenant", &self.bot.tenant) {
            return bad("bot.tenant", &e);
        }
        if self.recording.memory_budget_kib > 4 * 1024 * 1024 {
            return bad(
                "recording.memory_budget_kib",
                "must be at most 4194304 (4 GiB); 0 spills every chunk at once",
            );
        }
        if !(1..=1024).contains(&self.recording.chunk_kib) {
            return bad("recording.chunk_kib", "must be between 1 and 1024");
        }
        if self.audit.lock_timeout > Duration::from_secs(3600) {
            return bad("audit.lock_timeout", "must be at most 1h");
        }
        if self.recording.max_age < Duration::from_secs(1) {
            return bad("recording.max_age", "must be at least 1s");
        }
        if self.stt.threads == 0 || self.stt.threads > 64 {
            return bad("stt.threads", "must be between 1 and 64");
        }
        if self.stt.provider == SttKind::Openai && self.stt.url.trim().is_empty() {
            return bad(
                "stt.url",
                "is required when stt.provider = \"openai\" (e.g. http://127.0.0.1:8799/v1; flag --stt-url)",
            );
        }
        if self.stt.attempts == 0 || self.stt.attempts > 20 {
            return bad("stt.attempts", "must be between 1 and 20");
        }
        if self.stt.timeout < Duration::from_millis(100) {
            return bad("stt.timeout", "must be at least 100ms");
        }
        if self.stt.concurrency == 0 || self.stt.concurrency > 64 {
            return bad("stt.concurrency", "must be between 1 and 64");
        }
        if !(64..=1024 * 1024).contains(&self.stt.inflight_budget_kib) {
            return bad(
                "stt.inflight_budget_kib",
                "must be between 64 and 1048576 (1 GiB)",
            );
        }
        if self.stt.language.len() != 2
            || !self.stt.language.chars().all(|c| c.is_ascii_lowercase())
        {
            return bad(
                "stt.language",
                "must be a two-letter ISO 639-1 code such as \"en\"",
            );
        }
        if let Err(e) = self.vad.validate() {
            return Err(ConfigError(format!("vad.{e}")));
        }
        if self.lifecycle.grace < Duration::from_secs(1) {
            return bad("lifecycle.grace", "must be at least 1s");
        }
        if self.lifecycle.join_timeout < Duration::from_secs(1) {
            return bad("lifecycle.join_timeout", "must be at least 1s");
        }
        if self.lifecycle.commit_retry_initial.is_zero()
            || self.lifecycle.commit_retry_max < self.lifecycle.commit_retry_initial
        {
            return bad(
                "lifecycle.commit_retry_initial",
                "must be > 0 and not above lifecycle.commit_retry_max",
            );
        }
        self.validate_platform()?;
        if self
            .stt_serve
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return bad("stt_serve.listen", "must be an address like 127.0.0.1:8799");
        }
        if self.stt_serve.max_concurrency == 0 || self.stt_serve.max_concurrency > 64 {
            return bad("stt_serve.max_concurrency", "must be between 1 and 64");
        }
        if !(1..=65_536).contains(&self.stt_serve.max_connections) {
            return bad("stt_serve.max_connections", "must be between 1 and 65536");
        }
        if !(1024..=(1 << 30)).contains(&self.stt_serve.max_body_bytes) {
            return bad(
                "stt_serve.max_body_bytes",
                "must be between 1024 and 1073741824",
            );
        }
        for (key, d) in [
            ("stt_serve.header_timeout", self.stt_serve.header_timeout),
            ("stt_serve.body_timeout", self.stt_serve.body_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return bad(key, "must be between 100ms and 1h");
            }
        }
        self.validate_fleet()?;
        if !valid_log_filter(&self.log.level) {
            return bad(
                "log.level",
                "must be trace, debug, info, warn, error or off, or directives such as \"info,meetbot=debug\"",
            );
        }
        if !self.auto_leave.max_duration.is_zero()
            && self.recording.max_age < self.auto_leave.max_duration + self.lifecycle.grace
        {
            return bad(
                "recording.max_age",
                "must exceed auto_leave.max_duration plus lifecycle.grace, or long meetings would end at max_age",
            );
        }
        Ok(())
    }

    /// Whether fleet receipt chains carry a MAC, `audit.mac = "auto"`
    /// resolved: never [`AuditMac::Auto`].
    pub fn audit_mac(&self) -> AuditMac {
        match (self.audit.mac, self.keys.provider) {
            (AuditMac::Auto, KeysKind::Ephemeral) => AuditMac::None,
            (AuditMac::Auto, _) => AuditMac::Keys,
            (m, _) => m,
        }
    }

    fn validate_fleet(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if let Err(e) = crate::azure::blob_store::validate_prefix(&self.store.container_prefix) {
            return Err(ConfigError(e));
        }
        if self.store.retention < Duration::from_secs(60) {
            return bad("store.retention", "must be at least 1m");
        }
        if self.audit.mac == AuditMac::Keys && self.keys.provider == KeysKind::Ephemeral {
            return bad(
                "audit.mac",
                "\"keys\" needs a key provider whose wrapped keys outlive the process \
                 (keys.provider = \"azure_keyvault\", or \"local_file\" shared by every worker and verifier); \
                 keys.provider is \"ephemeral\": use audit.mac = \"auto\" or \"none\"",
            );
        }
        if self.keys.provider == KeysKind::AzureKeyvault
            && (self.keys.vault_url.trim().is_empty() || self.keys.key_name.trim().is_empty())
        {
            return bad(
                "keys.vault_url",
                "keys.vault_url and keys.key_name are required when keys.provider = \"azure_keyvault\"",
            );
        }
        let q = &self.queue;
        for (key, name) in [
            ("queue.name", &q.name),
            ("queue.poison_name", &q.poison_name),
        ] {
            let ok = (3..=63).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !ok {
                return bad(
                    key,
                    "must be 3-63 characters of a-z 0-9 - (no leading, trailing or doubled -)",
                );
            }
        }
        if q.name == q.poison_name {
            return bad("queue.poison_name", "must differ from queue.name");
        }
        let t = &q.table;
        if !(3..=63).contains(&t.len())
            || !t.chars().all(|c| c.is_ascii_alphanumeric())
            || !t.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return bad(
                "queue.table",
                "must be 3-63 letters and digits, starting with a letter",
            );
        }
        if !(1..=100).contains(&q.max_attempts) {
            return bad("queue.max_attempts", "must be between 1 and 100");
        }
        if q.lease < Duration::from_secs(30) || q.lease > crate::azure::queue::MAX_VISIBILITY {
            return bad("queue.lease", "must be between 30s and 7days");
        }
        if self.serve.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("serve.listen", "must be an address like 0.0.0.0:8080");
        }
        if !self.serve.metrics_listen.is_empty() {
            match self.serve.metrics_listen.parse::<std::net::SocketAddr>() {
                Err(_) => {
                    return bad(
                        "serve.metrics_listen",
                        "must be an address like 127.0.0.1:9091, or \"\" for none",
                    )
                }
                Ok(m) if self.serve.listen.parse::<std::net::SocketAddr>().ok() == Some(m) => {
                    return bad(
                        "serve.metrics_listen",
                        "must differ from serve.listen (metrics are never served on the API port)",
                    )
                }
                Ok(_) => {}
            }
        }
        if self.serve.idempotency_window < Duration::from_secs(1)
            || self.serve.idempotency_window > Duration::from_secs(30 * 86400)
        {
            return bad("serve.idempotency_window", "must be between 1s and 30days");
        }
        if !(1024..=1024 * 1024).contains(&self.serve.max_body_bytes) {
            return bad("serve.max_body_bytes", "must be between 1024 and 1048576");
        }
        if !(1..=1000).contains(&self.serve.max_list) {
            return bad("serve.max_list", "must be between 1 and 1000");
        }
        if !self.worker.listen.is_empty()
            && self.worker.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "worker.listen",
                "must be an address like 0.0.0.0:9090, or \"\" for none",
            );
        }
        if self.worker.stop_poll < Duration::from_millis(100) {
            return bad("worker.stop_poll", "must be at least 100ms");
        }
        if self.webhooks.timeout < Duration::from_secs(1) {
            return bad("webhooks.timeout", "must be at least 1s");
        }
        if self.webhooks.schedule.is_empty() || self.webhooks.schedule.len() > 20 {
            return bad("webhooks.schedule", "needs 1-20 delays");
        }
        if self.webhooks.in_process_attempts == 0 {
            return bad("webhooks.in_process_attempts", "must be at least 1");
        }
        if let Err(e) = crate::netguard::UrlPolicy::new(&self.urls.allow) {
            return bad("urls.allow", &e.to_string());
        }
        Ok(())
    }

    fn validate_platform(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let j = &self.janus;
        for (key, d) in [
            ("janus.connect_timeout", j.connect_timeout),
            ("janus.request_timeout", j.request_timeout),
            ("janus.keepalive_interval", j.keepalive_interval),
            ("janus.publisher_timeout", j.publisher_timeout),
            (
                "transport.ice_gather_timeout",
                self.transport.ice_gather_timeout,
            ),
        ] {
            if d < Duration::from_millis(100) {
                return bad(key, "must be at least 100ms");
            }
        }
        if !(1..=1024).contains(&j.max_publishers) {
            return bad("janus.max_publishers", "must be between 1 and 1024");
        }
        if j.rejoin_initial_backoff.is_zero() || j.rejoin_max_backoff < j.rejoin_initial_backoff {
            return bad(
                "janus.rejoin_initial_backoff",
                "must be > 0 and not above janus.rejoin_max_backoff",
            );
        }
        if self.transport.udp_bind.is_empty() {
            return bad("transport.udp_bind", "needs at least one address");
        }
        for a in &self.transport.udp_bind {
            if a.trim().parse::<std::net::SocketAddr>().is_err() {
                return bad(
                    "transport.udp_bind",
                    &format!("{a:?} is not an address like \"0.0.0.0:0\" or \"10.0.0.5:0\""),
                );
            }
        }
        for u in &self.transport.stun_urls {
            let ok = u
                .strip_prefix("stun:")
                .is_some_and(|hp| !hp.is_empty() && !hp.contains(['/', '?', ' ']));
            if !ok {
                return bad(
                    "transport.stun_urls",
                    &format!("{u:?} is not a STUN URL like \"stun:stun.example.com:3478\""),
                );
            }
        }
        let jt = &self.jitter;
        if jt.delay.is_zero() || jt.delay > Duration::from_secs(2) {
            return bad("jitter.delay", "must be between 1ms and 2s");
        }
        if !(1..=1000).contains(&jt.max_depth) {
            return bad("jitter.max_depth", "must be between 1 and 1000");
        }
        if jt.resync_packets < 10 {
            return bad("jitter.resync_packets", "must be at least 10");
        }
        if jt.drift_window < Duration::from_millis(100) {
            return bad("jitter.drift_window", "must be at least 100ms");
        }
        Ok(())
    }

    /// The settings platforms take (only Janus uses them so far).
    pub fn platform(&self) -> crate::platform::PlatformSettings {
        use crate::platform::janus::{
            jitter::JitterConfig, platform::RejoinPolicy, transport::TransportConfig,
            ws::JanusOptions,
        };
        let j = &self.janus;
        let jt = &self.jitter;
        crate::platform::PlatformSettings {
            janus: JanusOptions {
                connect_timeout: j.connect_timeout,
                keepalive_interval: j.keepalive_interval,
                request_timeout: j.request_timeout,
                max_publishers: j.max_publishers,
                pinned_addrs: Vec::new(),
            },
            transport: TransportConfig {
                udp_bind: self
                    .transport
                    .udp_bind
                    .iter()
                    .map(|a| a.trim().to_owned())
                    .collect(),
                ice_gather_timeout: self.transport.ice_gather_timeout,
                stun_urls: self.transport.stun_urls.clone(),
            },
            jitter: JitterConfig {
                delay: jt.delay,
                max_depth: jt.max_depth,
                resync_packets: jt.resync_packets,
                ahead_tolerance: jt.ahead_tolerance,
                behind_tolerance: jt.behind_tolerance,
                drift_window: jt.drift_window,
            },
            rejoin: RejoinPolicy {
                initial_backoff: j.rejoin_initial_backoff,
                max_backoff: j.rejoin_max_backoff,
                window: j.rejoin_window,
                publisher_timeout: j.publisher_timeout,
            },
            // `meetbot join`: the operator's server. The worker replaces it for jobs.
            media: crate::platform::janus::candidates::MediaPolicy::Operator {
                policy: self.url_policy(),
            },
        }
    }

    /// The URL policy for meeting and webhook URLs from jobs and the API.
    pub fn url_policy(&self) -> crate::netguard::UrlPolicy {
        // Validated in `validate`.
        crate::netguard::UrlPolicy::new(&self.urls.allow).unwrap_or_default()
    }

    /// The lifecycle timings.
    pub fn lifecycle(&self) -> LifecycleConfig {
        LifecycleConfig {
            join_timeout: self.lifecycle.join_timeout,
            grace: self.lifecycle.grace,
            max_recording_age: self.recording.max_age,
            commit_retry_initial: self.lifecycle.commit_retry_initial,
            commit_retry_max: self.lifecycle.commit_retry_max,
            auto_leave: AutoLeaveConfig {
                everyone_left: self.auto_leave.everyone_left,
                noone_joined: self.auto_leave.noone_joined,
                max_duration: self.auto_leave.max_duration,
                silence: self.auto_leave.silence,
                waiting_room: self.auto_leave.waiting_room,
            },
        }
    }
}

/// A level, or comma-separated directives that each are a level or
/// `target=level`. (EnvFilter alone accepts any word as a target name, which
/// would silently turn logging off for a typo such as "verbose".)
fn valid_log_filter(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            Some((target, l)) => !target.trim().is_empty() && level(l),
            None => level(d),
        })
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

/// Merges `layer` into `base`, refusing keys the defaults do not have.
fn merge(
    base: &mut toml::Table,
    layer: toml::Table,
    prefix: &str,
    source: &str,
) -> Result<(), ConfigError> {
    for (k, v) in layer {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l, &path, source)?,
            (Some(toml::Value::Table(_)), _) => {
                return Err(ConfigError(format!(
                    "{source}: {path} must be a table ([{path}])"
                )))
            }
            (Some(slot), v) => *slot = v,
            (None, _) => return Err(ConfigError(format!("{source}: unknown key {path}"))),
        }
    }
    Ok(())
}

/// Applies `MEETBOT_SECTION__KEY=value`, typed after the default's type.
fn apply_env(
    root: &mut toml::Table,
    defaults: &toml::Table,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let rest = &name[ENV_PREFIX.len()..];
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let [section, key] = parts.as_slice() else {
        return Err(ConfigError(format!(
            "environment variable {name}: expected MEETBOT_<SECTION>__<KEY>"
        )));
    };
    let Some(toml::Value::Table(sec_defaults)) = defaults.get(section) else {
        return Err(ConfigError(format!(
            "environment variable {name}: unknown section [{section}]"
        )));
    };
    let value = match sec_defaults.get(key) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        Some(toml::Value::Integer(_)) => toml::Value::Integer(raw.trim().parse().map_err(|_| {
            ConfigError(format!("environment variable {name}: {section}.{key} must be an integer, got {raw:?}"))
        })?),
        Some(toml::Value::Float(_)) => toml::Value::Float(raw.trim().parse().map_err(|_| {
            ConfigError(format!("environment variable {name}: {section}.{key} must be a number, got {raw:?}"))
        })?),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(raw.trim().parse().map_err(|_| {
            ConfigError(format!("environment variable {name}: {section}.{key} must be true or false, got {raw:?}"))
        })?),
        // Lists of strings: comma-separated.
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        ),
        Some(_) => {
            return Err(ConfigError(format!("environment variable {name}: {section}.{key} cannot be set from the environment")))
        }
        None => {
            return Err(ConfigError(format!("environment variable {name}: unknown key {section}.{key}")))
        }
    };
    // The defaults have this section as a table, and so does root (layers cannot change a table's type).
    if let Some(toml::Value::Table(sec)) = root.get_mut(section) {
        sec.insert(key.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Config::load(
            file.map(|_| path.as_path()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn platform_sections_default_to_the_platform_defaults_and_take_overrides() {
        use crate::platform::janus::platform::RejoinPolicy;
        let c = load(None, &[]).unwrap();
        let p = c.platform();
        let d = crate::platform::PlatformSettings::default();
        assert_eq!(p.rejoin, RejoinPolicy::default());
        assert_eq!(format!("{:?}", p.janus), format!("{:?}", d.janus));
        assert_eq!(format!("{:?}", p.jitter), format!("{:?}", d.jitter));
        assert_eq!(p.transport.udp_bind, d.transport.udp_bind);
        assert_eq!(
            p.transport.ice_gather_timeout,
            d.transport.ice_gather_timeout
        );
        assert_eq!(p.transport.stun_urls, d.transport.stun_urls);

        let c = load(
            Some("[janus]\nrejoin_window = \"0s\"\n[jitter]\ndelay = \"120ms\"\n"),
            &[
                ("MEETBOT_TRANSPORT__UDP_BIND", "10.0.0.5:0, 127.0.0.1:0"),
                ("MEETBOT_TRANSPORT__STUN_URLS", "stun:stun.example.com:3478"),
                ("MEETBOT_JANUS__PUBLISHER_TIMEOUT", "90s"),
            ],
        )
        .unwrap();
        let p = c.platform();
        assert!(p.rejoin.window.is_zero());
        assert_eq!(p.rejoin.publisher_timeout, Duration::from_secs(90));
        assert_eq!(p.jitter.delay, Duration::from_millis(120));
        assert_eq!(p.transport.udp_bind, ["10.0.0.5:0", "127.0.0.1:0"]);
        assert_eq!(p.transport.stun_urls, ["stun:stun.example.com:3478"]);
    }

    #[test]
    fn receipt_chain_mac_follows_the_key_custody() {
        // Default: ephemeral keys, so nothing could unwrap a chain key later: no MAC.
        assert_eq!(load(None, &[]).unwrap().audit_mac(), AuditMac::None);
        let kv = "[keys]\nprovider = \"azure_keyvault\"\nvault_url = \"https://v.vault.azure.net\"\nkey_name = \"k\"\n";
        assert_eq!(load(Some(kv), &[]).unwrap().audit_mac(), AuditMac::Keys);
        let lf = "[keys]\nprovider = \"local_file\"\n";
        assert_eq!(load(Some(lf), &[]).unwrap().audit_mac(), AuditMac::Keys);
        let none = format!("{kv}[audit]\nmac = \"none\"\n");
        assert_eq!(load(Some(&none), &[]).unwrap().audit_mac(), AuditMac::None);
        // Asking for a MAC key nothing could unwrap is a configuration error.
        let e = load(Some("[audit]\nmac = \"keys\"\n"), &[]).unwrap_err();
        assert!(
            e.to_string().contains("audit.mac") && e.to_string().contains("ephemeral"),
            "{e}"
        );
    }

    #[test]
    fn bad_platform_settings_name_their_key() {
        for (file, key) in [
            ("[janus]\nrequest_timeout = \"0s\"", "janus.request_timeout"),
            ("[janus]\nmax_publishers = 0", "janus.max_publishers"),
            (
                "[janus]\nrejoin_initial_backoff = \"1m\"\nrejoin_max_backoff = \"1s\"",
                "janus.rejoin_initial_backoff",
            ),
            ("[transport]\nudp_bind = []", "transport.udp_bind"),
            (
                "[transport]\nudp_bind = [\"localhost\"]",
                "transport.udp_bind",
            ),
            (
                "[transport]\nstun_urls = [\"turn:x:1\"]",
                "transport.stun_urls",
            ),
            ("[jitter]\ndelay = \"5s\"", "jitter.delay"),
            ("[jitter]\nmax_depth = 0", "jitter.max_depth"),
            ("[jitter]\nresync_packets = 70000", "jitter.resync_packets"),
            ("[jitter]\nbogus = 1", "jitter.bogus"),
        ] {
            let err = load(Some(file), &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{file:?}: {err}");
        }
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.stt.provider, SttKind::Embedded);
        assert_eq!(c.lifecycle.grace, Duration::from_secs(25));
        assert_eq!(c.recording.max_age, Duration::from_secs(86400));
        assert_eq!(c.paths.spool_dir(), PathBuf::from("meetbot-data/spool"));
    }

    #[test]
    fn effective_settings_redact_every_secret_and_keep_the_rest() {
        let env = [
            ("MEETBOT_STT__API_KEY", "sk-live-1"),
            ("MEETBOT_STT_SERVE__API_KEY", "serve-2"),
            ("MEETBOT_AZURE__STORAGE_SAS", "sv=2024&sig=3"),
            ("MEETBOT_LIFECYCLE__GRACE", "40s"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let (cfg, table) = Config::load_effective(None, env).unwrap();
        assert_eq!(cfg.stt.api_key.expose(), "sk-live-1");
        let text = toml::to_string(&table).unwrap();
        for secret in ["sk-live-1", "serve-2", "sig=3"] {
            assert!(!text.contains(secret), "{secret} printed");
        }
        assert_eq!(text.matches("\"<redacted>\"").count(), 3, "{text}");
        assert!(text.contains("grace = \"40s\""), "{text}");
        // Empty secrets stay visibly empty.
        let (_, table) = Config::load_effective(None, Vec::new()).unwrap();
        assert!(!toml::to_string(&table).unwrap().contains("<redacted>"));
    }

    #[test]
    fn file_then_env_override_in_order() {
        let c = load(
            Some("[stt]\nprovider = \"openai\"\nurl = \"http://a/v1\"\n[lifecycle]\ngrace = \"5s\"\n"),
            &[("MEETBOT_STT__URL", "http://b/v1"), ("MEETBOT_STT__THREADS", "3"), ("MEETBOT_JOB", "{}")],
        )
        .unwrap();
        assert_eq!(c.stt.provider, SttKind::Openai);
        assert_eq!(c.stt.url, "http://b/v1");
        assert_eq!(c.stt.threads, 3);
        assert_eq!(c.lifecycle.grace, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_bad_key() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (Some("[stt]\nprovidr = \"x\"\n"), &[], "stt.providr"),
            (
                Some("[stt]\nprovider = \"whisperx\"\n"),
                &[],
                "stt.provider",
            ),
            (
                Some("[lifecycle]\ngrace = \"soon\"\n"),
                &[],
                "lifecycle.grace",
            ),
            (Some("[nope]\nx = 1\n"), &[], "nope"),
            (Some("this is not toml"), &[], "c.toml"),
            (None, &[("MEETBOT_STT__THREADS", "many")], "stt.threads"),
            (None, &[("MEETBOT_STT__BOGUS", "1")], "stt.bogus"),
            (None, &[("MEETBOT_NOPE__X", "1")], "[nope]"),
            (None, &[("MEETBOT_STT__PROVIDER", "openai")], "stt.url"),
            (None, &[("MEETBOT_STT__THREADS", "0")], "stt.threads"),
            (None, &[("MEETBOT_BOT__TENANT", "../x")], "bot.tenant"),
            (
                None,
                &[("MEETBOT_RECORDING__MAX_AGE", "0s")],
                "recording.max_age",
            ),
            (
                None,
                &[("MEETBOT_RECORDING__MAX_AGE", "2h")],
                "recording.max_age",
            ),
            (None, &[("MEETBOT_LOG__LEVEL", "verbose")], "log.level"),
            (
                Some("[serve]\nlisten = \"0.0.0.0:8080\"\nmetrics_listen = \"0.0.0.0:8080\"\n"),
                &[],
                "serve.metrics_listen",
            ),
            (
                None,
                &[("MEETBOT_SERVE__METRICS_LISTEN", "metrics")],
                "serve.metrics_listen",
            ),
            (
                None,
                &[("MEETBOT_SERVE__IDEMPOTENCY_WINDOW", "0s")],
                "serve.idempotency_window",
            ),
            (
                None,
                &[("MEETBOT_SERVE__IDEMPOTENCY_WINDOW", "60days")],
                "serve.idempotency_window",
            ),
        ];
        for (file, env, key) in cases {
            let err = load(*file, env).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
    }

    #[test]
    fn toml_errors_do_not_echo_the_line() {
        let err = load(Some("[stt]\napi_key = sk-live-SECRET123\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRET123"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = load(None, &[("MEETBOT_STT__API_KEY", "sk-very-secret")]).unwrap();
        assert_eq!(c.stt.api_key.expose(), "sk-very-secret");
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }
}
