//! Bot records: one Table Storage entity per bot (PartitionKey = tenant,
//! RowKey = bot id), created by `meetbot serve` (or a direct job's worker) and
//! updated by the worker at every status change, so `serve` replicas are
//! stateless and a tenant's partition is all a tenant can ever read.
//!
//! The same partition holds the tenant's `Idempotency-Key`s of
//! `POST /v1/bots` ([`Records::idempotency_get`]): one row per key, RowKey
//! `~idem-<sha256(key)>`. Bot ids never contain `~` (see
//! [`crate::store::validate_id`]) and `~` sorts after every character a bot
//! id may hold, so the rows can neither collide with a bot nor show up in
//! [`Records::list`]. The row is written with a conditional insert (or an
//! `If-Match` replace of an expired row), which is what makes two concurrent
//! identical requests — on any replica — agree on one bot id.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::azure::table::{Entity, TableClient, TableError};

/// Statuses that end a bot; a job whose record has one is not run again.
pub const TERMINAL: &[&str] = &["done", "fatal", "cancelled"];

/// A bot's record as the API shows it. Contains no meeting URL, no names and
/// no transcript text.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BotRecord {
    /// Bot id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Meeting id.
    pub meeting_id: String,
    /// `scheduled`, `queued`, `joining`, `in_call_recording`, `reconnecting`, `call_ended`,
    /// `transcript_committed`, `recording_deleted`, `done`, `fatal`, `cancelled`.
    pub status: String,
    /// Why (fatal, cancelled, call ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the bot was requested (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Not before (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_at: Option<String>,
    /// A stop was requested (DELETE /v1/bots/{id}).
    pub stop_requested: bool,
    /// Worker attempts so far.
    pub attempts: u32,
    /// Recording id, once recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// The committed transcript.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Value>,
    /// The deletion receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Value>,
}

fn s(props: &Map<String, Value>, k: &str) -> Option<String> {
    props.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn json_prop(props: &Map<String, Value>, k: &str) -> Option<Value> {
    s(props, k).and_then(|t| serde_json::from_str(&t).ok())
}

impl BotRecord {
    fn from_props(props: &Map<String, Value>) -> BotRecord {
        BotRecord {
            id: s(props, "RowKey").unwrap_or_default(),
            tenant: s(props, "PartitionKey").unwrap_or_default(),
            meeting_id: s(props, "meeting_id").unwrap_or_default(),
            status: s(props, "status").unwrap_or_default(),
            reason: s(props, "reason").filter(|r| !r.is_empty()),
            created_at: s(props, "created_at").unwrap_or_default(),
            updated_at: s(props, "updated_at").unwrap_or_default(),
            join_at: s(props, "join_at").filter(|r| !r.is_empty()),
            stop_requested: props
                .get("stop_requested")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attempts: props
                .get("attempts")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(u32::MAX as u64) as u32,
            recording_id: s(props, "recording_id").filter(|r| !r.is_empty()),
            transcript: json_prop(props, "transcript"),
            receipt: json_prop(props, "receipt"),
        }
    }

    /// Whether the bot has finished.
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.status.as_str())
    }
}

/// RowKey prefix of idempotency-key rows (see the module docs).
pub const IDEMPOTENCY_PREFIX: &str = "~idem-";
/// Every bot id sorts below this (bot ids are `A-Z a-z 0-9 . _ -`).
const ROW_KEYS_BELOW: &str = "~";

/// An `Idempotency-Key` of a tenant as stored: which bot it created and
/// the fingerprint of the request body that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyEntry {
    /// The bot the key stands for.
    pub bot_id: String,
    /// Hex SHA-256 of the request (see `api::fingerprint`).
    pub fingerprint: String,
    /// When the key may be used for another request (RFC 3339).
    pub expires_at: String,
    /// For [`Records::idempotency_claim`] and [`Records::idempotency_release`].
    pub etag: String,
}

impl IdempotencyEntry {
    /// Whether the window has passed at `now` (an unreadable time counts as
    /// expired: the row is then replaced rather than trusted).
    pub fn expired(&self, now: SystemTime) -> bool {
        humantime::parse_rfc3339_weak(&self.expires_at).map_or(true, |t| t <= now)
    }
}

fn idempotency_row(key: &str) -> String {
    format!(
        "{IDEMPOTENCY_PREFIX}{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// A status change for [`Records::update`].
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// New status.
    pub status: Option<String>,
    /// Reason (empty string clears).
    pub reason: Option<String>,
    /// Recording id.
    pub recording_id: Option<String>,
    /// Transcript info (JSON).
    pub transcript: Option<Value>,
    /// Receipt info (JSON).
    pub receipt: Option<Value>,
    /// Attempts.
    pub attempts: Option<u32>,
    /// Stop requested.
    pub stop_requested: Option<bool>,
}

/// The bot-records table.
#[derive(Debug, Clone)]
pub struct Records {
    table: String,
    client: TableClient,
}

impl Records {
    /// Records in `table`.
    pub fn new(client: TableClient, table: &str) -> Self {
        Records {
            table: table.to_string(),
            client,
        }
    }

    /// Creates the table if needed.
    pub async fn ensure_table(&self) -> Result<(), TableError> {
        self.client.create_table(&self.table).await
    }

    /// Readiness check.
    pub async fn ping(&self) -> Result<(), TableError> {
        self.client.ping(&self.table).await
    }

    /// Creates a record; [`TableError::AlreadyExists`] if the id is taken.
    pub async fn create(
        &self,
        tenant: &str,
        bot_id: &str,
        meeting_id: &str,
        status: &str,
        join_at: Option<&str>,
    ) -> Result<(), TableError> {
        let now = crate::status::now_rfc3339();
        let mut p = Map::new();
        p.insert("meeting_id".into(), meeting_id.into());
        p.insert("status".into(), status.into());
        p.insert("created_at".into(), now.clone().into());
        p.insert("updated_at".into(), now.into());
        p.insert("join_at".into(), join_at.unwrap_or("").into());
        p.insert("stop_requested".into(), false.into());
        p.insert("attempts".into(), 0.into());
        self.client
            .insert(&self.table, tenant, bot_id, &p)
            .await
            .map(|_| ())
    }

    /// Reads a tenant's bot; `None` if it does not exist in that tenant.
    pub async fn get(&self, tenant: &str, bot_id: &str) -> Result<Option<BotRecord>, TableError> {
        Ok(self
            .client
            .get(&self.table, tenant, bot_id)
            .await?
            .map(|e: Entity| BotRecord::from_props(&e.props)))
    }

    /// Reads a tenant's bot with its ETag (for [`Records::update_if`]).
    pub async fn get_with_etag(
        &self,
        tenant: &str,
        bot_id: &str,
    ) -> Result<Option<(BotRecord, String)>, TableError> {
        Ok(self
            .client
            .get(&self.table, tenant, bot_id)
            .await?
            .map(|e: Entity| (BotRecord::from_props(&e.props), e.etag)))
    }

    /// A tenant's bots (at most `limit`).
    pub async fn list(&self, tenant: &str, limit: usize) -> Result<Vec<BotRecord>, TableError> {
        Ok(self
            .client
            .query_partition(&self.table, tenant, Some(ROW_KEYS_BELOW), limit)
            .await?
            .iter()
            .map(BotRecord::from_props)
            .collect())
    }

    /// The tenant's row for `key`, if any (expired or not).
    pub async fn idempotency_get(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotencyEntry>, TableError> {
        Ok(self
            .client
            .get(&self.table, tenant, &idempotency_row(key))
            .await?
            .map(|e: Entity| IdempotencyEntry {
                bot_id: s(&e.props, "bot_id").unwrap_or_default(),
                fingerprint: s(&e.props, "fingerprint").unwrap_or_default(),
                expires_at: s(&e.props, "expires_at").unwrap_or_default(),
                etag: e.etag,
            }))
    }

    /// Makes `key` stand for `bot_id` and `fingerprint` for `window`.
    /// `replace` = `None`: a conditional insert ([`TableError::AlreadyExists`]
    /// if another request claimed the key first); `Some(etag)`: replaces that
    /// (expired) row only if it is unchanged ([`TableError::PreconditionFailed`]
    /// otherwise). Returns the row's new ETag.
    pub async fn idempotency_claim(
        &self,
        tenant: &str,
        key: &str,
        bot_id: &str,
        fingerprint: &str,
        window: Duration,
        replace: Option<&str>,
    ) -> Result<String, TableError> {
        let now = SystemTime::now();
        let mut p = Map::new();
        p.insert("bot_id".into(), bot_id.into());
        p.insert("fingerprint".into(), fingerprint.into());
        p.insert(
            "created_at".into(),
            humantime::format_rfc3339_seconds(now).to_string().into(),
        );
        p.insert(
            "expires_at".into(),
            humantime::format_rfc3339_millis(now + window)
                .to_string()
                .into(),
        );
        let row = idempotency_row(key);
        match replace {
            None => self.client.insert(&self.table, tenant, &row, &p).await,
            Some(etag) => self.client.merge(&self.table, tenant, &row, &p, etag).await,
        }
    }

    /// Frees `key` (a request that could not be carried out), if its row is
    /// still at `etag`.
    pub async fn idempotency_release(
        &self,
        tenant: &str,
        key: &str,
        etag: &str,
    ) -> Result<(), TableError> {
        self.client
            .delete(&self.table, tenant, &idempotency_row(key), etag)
            .await
    }

    /// Applies a change to an existing record (last writer wins per field).
    pub async fn update(&self, tenant: &str, bot_id: &str, u: &Update) -> Result<(), TableError> {
        self.update_if(tenant, bot_id, u, "*").await
    }

    /// Applies a change only if the record still has `etag`
    /// ([`TableError::PreconditionFailed`] otherwise): for transitions two
    /// parties race on (a stop request and a worker starting).
    pub async fn update_if(
        &self,
        tenant: &str,
        bot_id: &str,
        u: &Update,
        etag: &str,
    ) -> Result<(), TableError> {
        let mut p = Map::new();
        p.insert("updated_at".into(), crate::status::now_rfc3339().into());
        if let Some(v) = &u.status {
            p.insert("status".into(), v.clone().into());
        }
        if let Some(v) = &u.reason {
            p.insert("reason".into(), v.clone().into());
        }
        if let Some(v) = &u.recording_id {
            p.insert("recording_id".into(), v.clone().into());
        }
        if let Some(v) = &u.transcript {
            p.insert("transcript".into(), v.to_string().into());
        }
        if let Some(v) = &u.receipt {
            p.insert("receipt".into(), v.to_string().into());
        }
        if let Some(v) = u.attempts {
            p.insert("attempts".into(), v.into());
        }
        if let Some(v) = u.stop_requested {
            p.insert("stop_requested".into(), v.into());
        }
        self.client
            .merge(&self.table, tenant, bot_id, &p, etag)
            .await
            .map(|_| ())
    }
}
