//! Status webhooks, signed and delivered per Standard Webhooks v1.
//!
//! Every status change of a bot is POSTed to the job's webhook URL. This module has four
//! parts, from pure to IO:
//!
//! - **Signing** ([`WebhookSecret`], [`sign`], [`sign_all`], [`verify`]): the signed content is
//!   `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 decoding of the secret
//!   after an optional `whsec_` prefix, the signature header is `v1,<base64 HMAC-SHA256>`, and
//!   several secrets (rotation) give several space-separated signatures.
//! - **Payload** ([`WebhookEvent`]): `{"type":"bot.status","timestamp":"<RFC 3339>","data":{…}}`,
//!   serialized **once**; every attempt sends exactly those bytes.
//! - **Retry policy** ([`Schedule`], [`Schedule::decide`]): sans-IO. Attempt 1 is immediate;
//!   after attempt *n* fails, attempt *n+1* waits `delays[n]` (± jitter). The standard schedule
//!   is the spec's: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h. Any 2xx is
//!   delivered; 410 means the endpoint is gone (stop, disable it); everything else — other
//!   4xx/5xx, 3xx (redirects are never followed), timeouts, connection errors — is retried.
//!   On 429 and 503 a `Retry-After` (seconds or HTTP date) is honoured: the next attempt waits
//!   at least that long (capped at [`MAX_RETRY_AFTER`]).
//! - **Delivery** ([`WebhookSender`], [`WebhookDispatcher`]): each attempt re-checks the URL
//!   with [`crate::netguard`] and pins the connection to the addresses it vetted (a per-attempt
//!   HTTP client whose resolver can only answer those addresses, no proxy, no redirects), so a
//!   DNS answer that changed to an internal address after the job was accepted cannot be
//!   reached. The dispatcher is an in-process task: [`WebhookDispatcher::enqueue`] never blocks,
//!   events of one stream (one bot) go out in order, each retried up to an in-process number of
//!   attempts, after which it (and everything behind it in its stream) waits for
//!   [`WebhookDispatcher::drain`], which returns what is left as serializable
//!   [`PendingDelivery`] records for an outbox.
//!
//! # Invariants
//!
//! - `webhook-id` is fixed when the event is created and is the same on every attempt and after
//!   a redelivery from the outbox; `webhook-timestamp` is the attempt's time.
//! - Bodies, URLs and secrets never reach logs: bodies and URLs travel as [`Pii`], secrets as
//!   [`Secret`] (zeroized on drop). Logs name the message id, the endpoint by its
//!   signing-secret reference (`tenant/name`), the attempt and the outcome; no log line (at any
//!   level) and no `Debug` of [`Outcome`], [`GiveUp`] or [`ReportResult`] prints a webhook's
//!   host or address (a refusal shows its error code only).
//! - A webhook never stalls a bot: enqueueing is a channel send; the slow part runs elsewhere.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::netguard::{UrlError, UrlPolicy};
use crate::pii::{Pii, Secret};

/// Shortest accepted secret, bytes (Standard Webhooks: 24 to 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest accepted secret, bytes.
pub const MAX_SECRET_BYTES: usize = 64;
/// The event type of status changes.
pub const STATUS_EVENT: &str = "bot.status";
/// The longest a `Retry-After` can push the next attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Default bound on one attempt (connect, TLS, request, response head).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The `user-agent` of deliveries.
pub const USER_AGENT: &str = concat!("meetbot/", env!("CARGO_PKG_VERSION"));

type HmacSha256 = Hmac<Sha256>;

/// Base64 (standard alphabet) that accepts secrets with or without padding, as the reference
/// libraries do.
const B64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A rejected webhook secret. Never repeats the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Not base64.
    #[error("webhook secret is not valid base64 (expected whsec_<base64>)")]
    Base64,
    /// Too short or too long once decoded.
    #[error(
        "webhook secret decodes to {0} bytes; it must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
    )]
    Length(usize),
}

/// A signing key. `Debug` prints `<secret>`; the bytes are zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Secret<Vec<u8>>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<secret>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix is optional; padding too).
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let text = text.trim();
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = zeroize::Zeroizing::new(
            B64_LENIENT
                .decode(b64.as_bytes())
                .map_err(|_| SecretError::Base64)?,
        );
        WebhookSecret::from_bytes(&bytes)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<WebhookSecret, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(WebhookSecret(Secret::new(bytes.to_vec())))
    }

    /// A fresh random 32-byte secret.
    pub fn generate() -> WebhookSecret {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        WebhookSecret(Secret::new(bytes.to_vec()))
    }

    /// The `whsec_<base64>` form, to show the tenant once.
    pub fn to_whsec(&self) -> Secret<String> {
        Secret::new(format!("whsec_{}", B64.encode(self.0.expose())))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl std::str::FromStr for WebhookSecret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookSecret::parse(s)
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", B64.encode(tag))
}

/// One signature per secret, space-separated (key rotation: receivers accept any).
pub fn sign_all(secrets: &[WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why [`verify`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The timestamp is not an integer.
    #[error("invalid webhook-timestamp")]
    BadTimestamp,
    /// Outside the tolerance.
    #[error("webhook-timestamp is too far from now")]
    Stale,
    /// No `v1` signature matched.
    #[error("no matching signature")]
    NoMatch,
}

/// Checks a received message as a receiver would: the timestamp within `tolerance` of `now`
/// (unix seconds), and some `v1` signature in `signature_header` matching one of `secrets`
/// (compared in constant time).
pub fn verify(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(ts) > tolerance || ts.saturating_sub(now) > tolerance {
        return Err(VerifyError::Stale);
    }
    for part in signature_header.split(' ') {
        let Some(sig) = part.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(sig.as_bytes()) else {
            continue;
        };
        if secrets
            .iter()
            .any(|s| s.mac(msg_id, ts, body).verify_slice(&sig).is_ok())
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

/// A message id derived from a stream (bot) id and a per-stream sequence number: the same
/// status change gets the same id even when a restarted worker emits it again, so receivers
/// can deduplicate. `msg_` + 32 hex digits.
pub fn message_id(stream: &str, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"meetbot.webhook.v1\0");
    h.update(stream.as_bytes());
    h.update(b"\0");
    h.update(seq.to_be_bytes());
    format!("msg_{}", &hex::encode(h.finalize())[..32])
}

/// One event, as the receiver sees it: `{"type":…,"timestamp":…,"data":…}`.
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    /// The `webhook-id` (`msg_…`), stable across retries.
    pub id: String,
    /// `bot.status`.
    pub event_type: String,
    /// When the event happened.
    pub timestamp: SystemTime,
    /// The payload. May carry personal data (names, transcript text when the tenant opted in).
    pub data: Pii<serde_json::Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::Value,
}

impl WebhookEvent {
    /// A `bot.status` event with the given id, now.
    pub fn status(id: String, data: serde_json::Value) -> WebhookEvent {
        WebhookEvent {
            id,
            event_type: STATUS_EVENT.to_string(),
            timestamp: SystemTime::now(),
            data: Pii::new(data),
        }
    }

    /// The body bytes: what is signed and sent, byte for byte, on every attempt.
    pub fn body(&self) -> String {
        let env = Envelope {
            event_type: &self.event_type,
            timestamp: humantime::format_rfc3339_millis(self.timestamp).to_string(),
            data: self.data.expose(),
        };
        // A `serde_json::Value` and strings always serialize.
        serde_json::to_string(&env).expect("a JSON value serializes")
    }
}

/// An undelivered message as plain data: what [`WebhookDispatcher::drain`] returns and an
/// outbox stores. Holds a reference to the signing secrets, never the secrets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingDelivery {
    /// `webhook-id`.
    pub id: String,
    /// Ordering key (the bot id): messages of one stream are delivered in order.
    pub stream: String,
    /// The target URL. Personal data.
    pub url: Pii<String>,
    /// The event type (for operators; the body has it too).
    pub event_type: String,
    /// The exact body to send. Personal data.
    pub body: Pii<String>,
    /// Where the signing secrets are (e.g. a Key Vault secret name or a tenant id).
    pub secret_ref: String,
    /// The number of the next attempt (1 = never tried).
    pub attempt: u32,
    /// When the next attempt is due, unix milliseconds.
    pub due_unix_ms: u64,
}

/// A message to deliver, with its secrets.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// What is delivered and where.
    pub pending: PendingDelivery,
    /// The signing secrets (all of them sign; several during rotation).
    pub secrets: Arc<[WebhookSecret]>,
}

impl Delivery {
    /// A first delivery of `event`.
    pub fn new(
        event: &WebhookEvent,
        stream: &str,
        url: Pii<String>,
        secret_ref: &str,
        secrets: Arc<[WebhookSecret]>,
    ) -> Delivery {
        Delivery {
            pending: PendingDelivery {
                id: event.id.clone(),
                stream: stream.to_string(),
                url,
                event_type: event.event_type.clone(),
                body: Pii::new(event.body()),
                secret_ref: secret_ref.to_string(),
                attempt: 1,
                due_unix_ms: unix_ms(SystemTime::now()),
            },
            secrets,
        }
    }

    /// Resumes a delivery from an outbox record.
    pub fn resume(pending: PendingDelivery, secrets: Arc<[WebhookSecret]>) -> Delivery {
        Delivery { pending, secrets }
    }
}

/// Now, unix milliseconds (the clock `due_unix_ms` uses).
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What one attempt came to. `Debug` prints no host or address (a refusal
/// shows its error code only), so the type is safe in any log line.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered (redirects are not followed: a 3xx is an answer).
    Status {
        /// HTTP status code.
        code: u16,
        /// `Retry-After` of a 429 or 503, parsed.
        retry_after: Option<Duration>,
    },
    /// No answer within the attempt timeout.
    Timeout,
    /// Could not connect (refused, reset, TLS failure).
    Connect,
    /// Another transport failure.
    Failed(&'static str),
    /// The URL did not pass [`crate::netguard`]; nothing was sent.
    Refused(UrlError),
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status { code, retry_after } => f
                .debug_struct("Status")
                .field("code", code)
                .field("retry_after", retry_after)
                .finish(),
            Outcome::Timeout => f.write_str("Timeout"),
            Outcome::Connect => f.write_str("Connect"),
            Outcome::Failed(what) => f.debug_tuple("Failed").field(what).finish(),
            Outcome::Refused(e) => f.debug_tuple("Refused").field(&e.code()).finish(),
        }
    }
}

impl Outcome {
    /// A short label for logs (no URL, no personal data).
    pub fn label(&self) -> String {
        match self {
            Outcome::Status { code, .. } => format!("http {code}"),
            Outcome::Timeout => "timeout".into(),
            Outcome::Connect => "connect error".into(),
            Outcome::Failed(what) => (*what).into(),
            Outcome::Refused(e) => format!("refused ({})", e.code()),
        }
    }
}

/// Why a message was abandoned. `Debug` prints a refusal's error code only
/// (never the host or address the [`UrlError`] names).
#[derive(Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// Every attempt of the schedule failed.
    Exhausted,
    /// The URL is refused for good (syntax, scheme, host name).
    Rejected(UrlError),
}

impl fmt::Debug for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl GiveUp {
    /// A short label for logs (no URL, host or address).
    pub fn label(&self) -> String {
        match self {
            GiveUp::Exhausted => "exhausted".into(),
            GiveUp::Rejected(e) => format!("refused ({})", e.code()),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: done.
    Delivered,
    /// 410: stop, and disable the endpoint.
    Gone,
    /// Try again: attempt number `attempt` after `after`.
    Retry {
        /// The next attempt's number.
        attempt: u32,
        /// How long to wait.
        after: Duration,
    },
    /// Stop trying.
    GiveUp(GiveUp),
}

/// The retry schedule: `delays[i]` is the wait before attempt `i + 1` (so `delays[0]` is the
/// wait before the first attempt, normally 0). Truncate it for a process that cannot live for
/// the whole standard schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Waits before each attempt; its length is the number of attempts.
    pub delays: Vec<Duration>,
    /// Relative jitter: each wait is scaled by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::standard()
    }
}

impl Schedule {
    /// The Standard Webhooks example: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h,
    /// 24 h; ±10 % jitter.
    pub fn standard() -> Schedule {
        let s = Duration::from_secs;
        Schedule {
            delays: vec![
                s(0),
                s(5),
                s(5 * 60),
                s(30 * 60),
                s(2 * 3600),
                s(5 * 3600),
                s(10 * 3600),
                s(14 * 3600),
                s(20 * 3600),
                s(24 * 3600),
            ],
            jitter: 0.1,
        }
    }

    /// The first `attempts` entries.
    pub fn truncated(mut self, attempts: usize) -> Schedule {
        self.delays.truncate(attempts.max(1));
        self
    }

    /// The number of attempts.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX)
    }

    /// What to do after attempt number `attempt` (1-based) came to `outcome`. `unit` is a
    /// random number in `[0, 1)` for the jitter (0.5 = none).
    pub fn decide(&self, attempt: u32, outcome: &Outcome, unit: f64) -> Decision {
        let retry_after = match outcome {
            Outcome::Status { code, .. } if (200..300).contains(code) => {
                return Decision::Delivered
            }
            Outcome::Status { code: 410, .. } => return Decision::Gone,
            Outcome::Status {
                code: 429 | 503,
                retry_after,
            } => *retry_after,
            Outcome::Refused(e) if !e.is_transient() => {
                return Decision::GiveUp(GiveUp::Rejected(e.clone()))
            }
            _ => None,
        };
        let next = attempt.saturating_add(1);
        let Some(base) = self.delays.get(attempt as usize) else {
            return Decision::GiveUp(GiveUp::Exhausted);
        };
        // NaN or infinite inputs mean "no jitter": `mul_f64` panics on them.
        let finite = |x: f64, default: f64| {
            if x.is_finite() {
                x.clamp(0.0, 1.0)
            } else {
                default
            }
        };
        let factor = 1.0 + finite(self.jitter, 0.0) * (finite(unit, 0.5) * 2.0 - 1.0);
        let mut after = base.mul_f64(factor);
        if let Some(ra) = retry_after {
            after = after.max(ra.min(MAX_RETRY_AFTER));
        }
        Decision::Retry {
            attempt: next,
            after,
        }
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date (relative to `now`). A date in the
/// past means 0.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Sends single attempts: validates, pins, signs, POSTs.
#[derive(Clone, Debug)]
pub struct WebhookSender {
    policy: Arc<UrlPolicy>,
    timeout: Duration,
}

impl WebhookSender {
    /// A sender checking URLs against `policy`, with [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub fn new(policy: UrlPolicy) -> WebhookSender {
        WebhookSender {
            policy: Arc::new(policy),
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// Replaces the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> WebhookSender {
        self.timeout = timeout;
        self
    }

    /// One attempt: re-checks the URL, connects only to the vetted addresses, POSTs the body
    /// signed with this attempt's timestamp. Never follows redirects.
    pub async fn attempt(&self, delivery: &Delivery) -> Outcome {
        let p = &delivery.pending;
        let checked = match self.policy.check_webhook_url(p.url.expose()).await {
            Ok(c) => c,
            Err(e) => return Outcome::Refused(e),
        };
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PinnedResolver(checked.addrs.clone())))
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .user_agent(USER_AGENT)
            .build()
        {
            Ok(c) => c,
            Err(_) => return Outcome::Failed("cannot build the HTTP client"),
        };
        let now = SystemTime::now();
        let ts = unix_secs(now);
        let body = p.body.expose().as_bytes();
        let signature = sign_all(&delivery.secrets, &p.id, ts, body);
        let result = client
            .post(checked.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &p.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match result {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let retry_after = if code == 429 || code == 503 {
                    resp.headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()))
                } else {
                    None
                };
                Outcome::Status { code, retry_after }
            }
            // reqwest's error text contains the URL: classify, never print it.
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(e) if e.is_connect() => Outcome::Connect,
            Err(e) if e.is_builder() => Outcome::Failed("invalid request"),
            Err(_) => Outcome::Failed("transport error"),
        }
    }
}

/// A resolver that can only answer the addresses netguard vetted: whatever name reqwest asks
/// about, the connection goes to those addresses (the URL's port is applied by the connector).
struct PinnedResolver(Vec<SocketAddr>);

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs = self.0.clone();
        Box::pin(async move { Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs) })
    }
}

/// Knobs of the in-process delivery task.
#[derive(Debug, Clone)]
pub struct DispatcherOptions {
    /// The full schedule (attempt numbers and waits follow it, also across an outbox).
    pub schedule: Schedule,
    /// Most attempts one message gets in this process; then it waits for [`drain`] (its
    /// stream with it).
    ///
    /// [`drain`]: WebhookDispatcher::drain
    pub in_process_attempts: u32,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            schedule: Schedule::standard(),
            in_process_attempts: 4,
        }
    }
}

/// The end of one message's delivery in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// `webhook-id`.
    pub id: String,
    /// Its stream.
    pub stream: String,
    /// How it ended.
    pub result: ReportResult,
    /// Attempts made, counting earlier processes.
    pub attempts: u32,
}

/// How a message's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportResult {
    /// A 2xx.
    Delivered,
    /// The endpoint answered 410 (or an earlier message to it did): it is disabled.
    Gone,
    /// Abandoned.
    GaveUp(GiveUp),
}

impl ReportResult {
    /// A short label for logs (no URL, host or address).
    pub fn label(&self) -> String {
        match self {
            ReportResult::Delivered => "delivered".into(),
            ReportResult::Gone => "gone (410)".into(),
            ReportResult::GaveUp(g) => format!("gave up: {}", g.label()),
        }
    }
}

/// The dispatcher has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the webhook dispatcher has stopped")]
pub struct DispatcherClosed;

enum Command {
    Enqueue(Box<Delivery>),
    Drain {
        deadline: Instant,
        reply: oneshot::Sender<Vec<PendingDelivery>>,
    },
}

/// The in-process delivery task. Dropping it without [`WebhookDispatcher::drain`] abandons
/// what is not delivered yet.
#[derive(Debug)]
pub struct WebhookDispatcher {
    tx: mpsc::UnboundedSender<Command>,
}

impl WebhookDispatcher {
    /// Starts the task. Reports of finished messages arrive on the returned receiver (it may
    /// be dropped).
    pub fn spawn(
        sender: WebhookSender,
        options: DispatcherOptions,
    ) -> (WebhookDispatcher, mpsc::UnboundedReceiver<DeliveryReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let task = Task {
            sender,
            options,
            streams: BTreeMap::new(),
            busy: HashMap::new(),
            disabled: HashSet::new(),
            reports: report_tx,
        };
        tokio::spawn(task.run(rx));
        (WebhookDispatcher { tx }, report_rx)
    }

    /// Queues a message. Never blocks.
    pub fn enqueue(&self, delivery: Delivery) -> Result<(), DispatcherClosed> {
        self.tx
            .send(Command::Enqueue(Box::new(delivery)))
            .map_err(|_| DispatcherClosed)
    }

    /// Stops taking messages, keeps delivering what is due until everything is delivered or
    /// `timeout` passes, then returns the rest in delivery order per stream: each with the
    /// number of its next attempt and when it is due. An attempt still running at the
    /// deadline is cut off and returned with its own number (the receiver may see it twice,
    /// with the same `webhook-id`).
    pub async fn drain(self, timeout: Duration) -> Vec<PendingDelivery> {
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        if self.tx.send(Command::Drain { deadline, reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

struct Entry {
    delivery: Delivery,
    due: Instant,
    attempts_here: u32,
    parked: bool,
}

struct Task {
    sender: WebhookSender,
    options: DispatcherOptions,
    streams: BTreeMap<String, VecDeque<Entry>>,
    /// Attempts in flight: task id → stream.
    busy: HashMap<tokio::task::Id, String>,
    /// URLs that answered 410.
    disabled: HashSet<String>,
    reports: mpsc::UnboundedSender<DeliveryReport>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut attempts: JoinSet<Outcome> = JoinSet::new();
        let mut drain: Option<(Instant, oneshot::Sender<Vec<PendingDelivery>>)> = None;
        loop {
            let now = Instant::now();
            let deadline = drain.as_ref().map(|(d, _)| *d);
            self.start_due(&mut attempts, now, deadline);
            let wake = self.next_wake();
            if let Some(deadline) = deadline {
                let waiting_in_time = wake.is_some_and(|w| w <= deadline);
                if attempts.is_empty() && !waiting_in_time {
                    break;
                }
            }
            tokio::select! {
                cmd = rx.recv(), if drain.is_none() => match cmd {
                    Some(Command::Enqueue(d)) => self.push(*d),
                    Some(Command::Drain { deadline, reply }) => drain = Some((deadline, reply)),
                    None => {
                        let left: usize = self.streams.values().map(VecDeque::len).sum();
                        if left > 0 {
                            warn!(left, "Webhook dispatcher dropped without drain; undelivered messages are lost.");
                        }
                        attempts.abort_all();
                        return;
                    }
                },
                Some(done) = attempts.join_next_with_id(), if !attempts.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => (e.id(), Outcome::Failed("attempt task failed")),
                    };
                    if let Some(stream) = self.busy.remove(&id) {
                        self.finish(&stream, outcome);
                    }
                },
                _ = sleep_until_opt(wake), if wake.is_some() => {},
                _ = sleep_until_opt(deadline), if deadline.is_some() => break,
            }
        }
        // Cut off what still runs: those messages keep their attempt number.
        attempts.abort_all();
        self.busy.clear();
        if let Some((_, reply)) = drain {
            let _ = reply.send(self.pending());
        }
    }

    fn push(&mut self, delivery: Delivery) {
        let now = Instant::now();
        let due_in = Duration::from_millis(
            delivery
                .pending
                .due_unix_ms
                .saturating_sub(unix_ms(SystemTime::now())),
        );
        let stream = delivery.pending.stream.clone();
        self.streams.entry(stream).or_default().push_back(Entry {
            delivery,
            due: now + due_in,
            attempts_here: 0,
            parked: false,
        });
    }

    /// Starts an attempt for every idle stream whose head is due (and, while draining, not
    /// past the deadline). Drops heads aimed at a disabled endpoint.
    fn start_due(
        &mut self,
        attempts: &mut JoinSet<Outcome>,
        now: Instant,
        deadline: Option<Instant>,
    ) {
        let busy: HashSet<String> = self.busy.values().cloned().collect();
        let mut started = Vec::new();
        for (stream, queue) in self.streams.iter_mut() {
            if busy.contains(stream) {
                continue;
            }
            while let Some(head) = queue.front() {
                if !self.disabled.contains(head.delivery.pending.url.expose()) {
                    break;
                }
                if let Some(e) = queue.pop_front() {
                    report(
                        &self.reports,
                        &e,
                        ReportResult::Gone,
                        e.delivery.pending.attempt.saturating_sub(1),
                    );
                }
            }
            let Some(head) = queue.front_mut() else {
                continue;
            };
            if head.parked || head.due > now || deadline.is_some_and(|d| head.due > d) {
                continue;
            }
            head.attempts_here += 1;
            let sender = self.sender.clone();
            let delivery = head.delivery.clone();
            debug!(id = %delivery.pending.id, webhook = %delivery.pending.secret_ref, attempt = delivery.pending.attempt, "Webhook attempt.");
            let handle = attempts.spawn(async move { sender.attempt(&delivery).await });
            started.push((handle.id(), stream.clone()));
        }
        self.busy.extend(started);
        self.streams.retain(|_, q| !q.is_empty());
    }

    fn next_wake(&self) -> Option<Instant> {
        let busy: HashSet<&String> = self.busy.values().collect();
        self.streams
            .iter()
            .filter(|(s, _)| !busy.contains(s))
            .filter_map(|(_, q)| q.front())
            .filter(|e| !e.parked)
            .map(|e| e.due)
            .min()
    }

    fn finish(&mut self, stream: &str, outcome: Outcome) {
        let Some(queue) = self.streams.get_mut(stream) else {
            return;
        };
        let Some(head) = queue.front_mut() else {
            return;
        };
        let attempt = head.delivery.pending.attempt;
        let decision = self
            .options
            .schedule
            .decide(attempt, &outcome, rand::random::<f64>());
        let id = head.delivery.pending.id.clone();
        // The endpoint is named by its signing-secret reference (tenant/name),
        // never by URL, host or address.
        let webhook = head.delivery.pending.secret_ref.clone();
        match decision {
            Decision::Delivered => {
                debug!(%id, %webhook, attempt, "Webhook delivered.");
                if let Some(e) = queue.pop_front() {
                    report(&self.reports, &e, ReportResult::Delivered, attempt);
                }
            }
            Decision::Gone => {
                warn!(%id, %webhook, attempt, "Webhook endpoint answered 410 Gone; it is disabled.");
                if let Some(e) = queue.pop_front() {
                    self.disabled
                        .insert(e.delivery.pending.url.expose().clone());
                    report(&self.reports, &e, ReportResult::Gone, attempt);
                }
            }
            Decision::Retry {
                attempt: next,
                after,
            } => {
                debug!(%id, %webhook, attempt, outcome = %outcome.label(), retry_in = ?after, "Webhook attempt failed.");
                head.delivery.pending.attempt = next;
                head.due = Instant::now() + after;
                head.parked = head.attempts_here >= self.options.in_process_attempts;
            }
            Decision::GiveUp(why) => {
                warn!(%id, %webhook, attempt, outcome = %outcome.label(), "Webhook abandoned.");
                if let Some(e) = queue.pop_front() {
                    report(&self.reports, &e, ReportResult::GaveUp(why), attempt);
                }
            }
        }
        if queue.is_empty() {
            self.streams.remove(stream);
        }
    }

    /// Everything left, per stream in order; followers are due no earlier than their head.
    fn pending(&mut self) -> Vec<PendingDelivery> {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let mut out = Vec::new();
        for (_, queue) in std::mem::take(&mut self.streams) {
            let mut floor = 0u64;
            for e in queue {
                let due = unix_ms(now_s + e.due.saturating_duration_since(now_i)).max(floor);
                floor = due;
                let mut p = e.delivery.pending;
                p.due_unix_ms = due;
                out.push(p);
            }
        }
        out
    }
}

fn report(
    tx: &mpsc::UnboundedSender<DeliveryReport>,
    e: &Entry,
    result: ReportResult,
    attempts: u32,
) {
    let _ = tx.send(DeliveryReport {
        id: e.delivery.pending.id.clone(),
        stream: e.delivery.pending.stream.clone(),
        result,
        attempts,
    });
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(w) => tokio::time::sleep_until(w).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
