//! Job intake over an Azure Storage Queue, with the official
//! `azure_storage_queue` 1.x client.
//!
//! A worker takes one message (the job JSON) with a visibility timeout (the
//! lease), renews the lease while the meeting runs, deletes the message when
//! done and parks it in a poison queue after too many attempts. A message
//! whose worker died becomes visible again when its lease lapses, so the job
//! is retried by the next worker — the dequeue count says how many times.

use std::time::Duration;

use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, Url};
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueServiceClient, QueueServiceClientOptions};

use super::AzureAuth;

/// Longest visibility timeout the service accepts (7 days).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest message the service accepts (64 KiB of UTF-8 XML text).
pub const MAX_MESSAGE_BYTES: usize = 60 * 1024;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Connection failures, timeouts, throttling, 5xx: try again later.
    #[error("queue unavailable: {0}")]
    Transient(String),
    /// The pop receipt is stale: another worker holds the message now.
    #[error("lost the message lease (pop receipt no longer valid)")]
    LeaseLost,
    /// Anything else.
    #[error("queue: {0}")]
    Other(String),
}

impl QueueError {
    fn from_sdk(e: azure_core::Error) -> Self {
        let status = super::http_status(&e);
        let code = super::error_code(&e).unwrap_or_default();
        if matches!(status, Some(404) | Some(400)) && code.contains("PopReceipt")
            || code == "MessageNotFound"
        {
            QueueError::LeaseLost
        } else if super::is_transient(&e) {
            QueueError::Transient(e.to_string())
        } else {
            QueueError::Other(e.to_string())
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Transient(_))
    }
}

/// A message taken from the queue, invisible to others while leased.
#[derive(Clone)]
pub struct Leased {
    /// Message id.
    pub id: String,
    /// The newest pop receipt (changes on every renewal).
    pub pop_receipt: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
    /// The message text (job JSON). Contains the meeting URL: never log it.
    pub text: String,
}

impl std::fmt::Debug for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased")
            .field("id", &self.id)
            .field("dequeue_count", &self.dequeue_count)
            .finish_non_exhaustive()
    }
}

/// One queue.
#[derive(Clone)]
pub struct JobQueue {
    name: String,
    client: std::sync::Arc<QueueClient>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs().min(MAX_VISIBILITY.as_secs()) as i32
}

impl JobQueue {
    /// A client for queue `name` under the service URL from [`super::service_url`].
    pub fn new(
        service: Url,
        auth: &AzureAuth,
        options: ClientOptions,
        name: &str,
    ) -> Result<Self, super::SetupError> {
        let cred = match auth {
            AzureAuth::Token(c) => Some(c.clone()),
            AzureAuth::Sas(_) => None,
        };
        let svc = QueueServiceClient::new(
            service,
            cred,
            Some(QueueServiceClientOptions {
                client_options: options,
                ..Default::default()
            }),
        )
        .map_err(|e| super::SetupError::Config(format!("queue service: {e}")))?;
        let client = svc
            .queue_client(name)
            .map_err(|e| super::SetupError::Config(format!("queue {name:?}: {e}")))?;
        Ok(JobQueue {
            name: name.to_string(),
            client: std::sync::Arc::new(client),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the queue if it does not exist.
    pub async fn create_if_missing(&self) -> Result<(), QueueError> {
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if super::http_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(QueueError::from_sdk(e)),
        }
    }

    /// Whether the queue answers (readiness).
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self.client.exists().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(QueueError::Other(format!(
                "queue {} does not exist",
                self.name
            ))),
            Err(e) => Err(QueueError::from_sdk(e)),
        }
    }

    /// Enqueues `text`, invisible for `delay` (at most 7 days), never expiring.
    /// Returns the message id.
    pub async fn send(&self, text: &str, delay: Duration) -> Result<String, QueueError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::Other(format!(
                "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                text.len()
            )));
        }
        if delay > MAX_VISIBILITY {
            return Err(QueueError::Other("delay exceeds 7 days".into()));
        }
        let msg = QueueMessage {
            message_text: Some(text.to_string()),
        };
        let content = msg
            .try_into()
            .map_err(|e: azure_core::Error| QueueError::Other(e.to_string()))?;
        let rsp = self
            .client
            .send_message(
                content,
                Some(QueueClientSendMessageOptions {
                    visibility_timeout: Some(secs(delay)),
                    message_time_to_live: Some(-1),
                    ..Default::default()
                }),
            )
            .await
            .map_err(QueueError::from_sdk)?;
        let sent = rsp
            .into_model()
            .map_err(|e| QueueError::Other(format!("send response: {e}")))?;
        Ok(sent
            .items
            .and_then(|v| v.into_iter().next())
            .and_then(|m| m.message_id)
            .unwrap_or_default())
    }

    /// Takes the next visible message, leasing it for `lease`. `None` if the
    /// queue is empty.
    pub async fn receive(&self, lease: Duration) -> Result<Option<Leased>, QueueError> {
        let rsp = self
            .client
            .receive_messages(Some(QueueClientReceiveMessagesOptions {
                number_of_messages: Some(1),
                visibility_timeout: Some(secs(lease).max(1)),
                ..Default::default()
            }))
            .await
            .map_err(QueueError::from_sdk)?;
        let msgs = rsp
            .into_model()
            .map_err(|e| QueueError::Other(format!("receive response: {e}")))?;
        let Some(m) = msgs.items.and_then(|v| v.into_iter().next()) else {
            return Ok(None);
        };
        match (m.message_id, m.pop_receipt) {
            (Some(id), Some(pop_receipt)) => Ok(Some(Leased {
                id,
                pop_receipt,
                dequeue_count: m.dequeue_count.unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
                text: m.message_text.unwrap_or_default(),
            })),
            _ => Err(QueueError::Other(
                "received a message without id or pop receipt".into(),
            )),
        }
    }

    /// Extends the lease: the message stays invisible for `lease` from now.
    /// Updates `msg.pop_receipt`.
    pub async fn renew(&self, msg: &mut Leased, lease: Duration) -> Result<(), QueueError> {
        let rsp = self
            .client
            .update_message(&msg.id, &msg.pop_receipt, secs(lease).max(1), None)
            .await
            .map_err(QueueError::from_sdk)?;
        match rsp
            .headers()
            .get_optional_string(&HeaderName::from_static("x-ms-popreceipt"))
        {
            Some(p) => {
                msg.pop_receipt = p;
                Ok(())
            }
            None => Err(QueueError::Other(
                "lease renewal returned no pop receipt".into(),
            )),
        }
    }

    /// Deletes a leased message (the job is finished).
    pub async fn delete(&self, msg: &Leased) -> Result<(), QueueError> {
        match self
            .client
            .delete_message(&msg.id, &msg.pop_receipt, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(QueueError::from_sdk(e)),
        }
    }
}
