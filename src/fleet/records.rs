//! Bot records: one Table Storage entity per bot (PartitionKey = tenant,
//! RowKey = bot id), created by `meetbot serve` (or a direct job's worker) and
//! updated by the worker at every status change, so `serve` replicas are
//! stateless and a tenant's partition is all a tenant can ever read.

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
            .query_partition(&self.table, tenant, limit)
            .await?
            .iter()
            .map(BotRecord::from_props)
            .collect())
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
