//! `meetbot serve`: the control API.
//!
//! - `POST /v1/bots` — send a bot now, or at `join_at` (the job waits in the
//!   queue, invisible, until then; at most 7 days ahead).
//! - `GET /v1/bots`, `GET /v1/bots/{id}` — the tenant's bots and their status.
//! - `DELETE /v1/bots/{id}` — stop: a pending bot is cancelled; a bot in a
//!   meeting leaves, commits and deletes as usual.
//! - `GET /healthz`, `/readyz` (Table and queue reachable), `/v1/openapi.json`
//!   (the checked-in OpenAPI document).
//!
//! `GET /metrics` (Prometheus) is **not** on the API port: it is served by
//! [`metrics_router`] on `serve.metrics_listen` (loopback by default), because
//! its series name tenants and an API client must not learn who else uses
//! the fleet. On the API port it is a plain 404.
//!
//! Every `/v1/bots` call needs `Authorization: Bearer <token>`; the token
//! names the tenant (tenants file) and a tenant only ever sees its own
//! partition of the bot records, so another tenant's bot is a plain 404.
//! Errors are JSON: `{"error": {"code": "...", "message": "..."}}`; nothing
//! is enqueued unless the whole request is valid. Replicas keep no state:
//! records live in Table Storage, jobs in the queue.
//!
//! `serve` also delivers the webhook outbox: deliveries a worker could not
//! finish before it exited, retried on the Standard Webhooks schedule.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::job::{Job, JobStt, JobWebhook, JOB_VERSION};
use super::metrics::Metrics;
use super::records::{BotRecord, Records, Update};
use super::tenants::{Tenant, Tenants};
use super::AzureEnv;
use crate::azure::queue::{JobQueue, MAX_VISIBILITY};
use crate::azure::table::TableError;
use crate::config::Config;
use crate::netguard::{UrlError, UrlPolicy};
use crate::store::validate_id;

/// The OpenAPI document (checked in; served at `/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
pub struct ApiState {
    /// Tokens and tenant settings.
    pub tenants: Tenants,
    /// Bot records.
    pub records: Records,
    /// The job queue.
    pub queue: JobQueue,
    /// Meeting/webhook URL guard.
    pub policy: UrlPolicy,
    /// Accept `replay:` meeting URLs.
    pub allow_replay: bool,
    /// Most bots listed.
    pub max_list: usize,
    /// Metrics.
    pub metrics: Metrics,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
}

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable; try again"),
        )
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such bot")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"meetbot\""),
            );
        }
        r
    }
}

fn url_error(field: &str, e: &UrlError) -> ApiError {
    let status = if matches!(e, UrlError::ResolveTimeout { .. }) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, e.code(), format!("{field}: {e}"))
}

/// `POST /v1/bots` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBot {
    /// Meeting URL.
    pub meeting_url: String,
    /// Meeting id (default: a new one).
    #[serde(default)]
    pub meeting_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub bot_name: Option<String>,
    /// Not before (RFC 3339), at most 7 days ahead.
    #[serde(default)]
    pub join_at: Option<String>,
    /// STT overrides.
    #[serde(default)]
    pub stt: Option<JobStt>,
    /// Webhook.
    #[serde(default)]
    pub webhook: Option<JobWebhook>,
    /// Retention in days.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

fn authenticate<'a>(state: &'a ApiState, headers: &HeaderMap) -> Result<&'a Tenant, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing Authorization: Bearer <token>"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
    state
        .tenants
        .authenticate(token)
        .ok_or_else(|| unauthorized("unknown token"))
}

/// Longest accepted `Idempotency-Key` (characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Idempotency-Key` header, if given: 1 to [`MAX_IDEMPOTENCY_KEY`]
/// characters of `A-Z a-z 0-9 - _ . : ~ + / =`, bare or as a structured-field
/// string in double quotes (the IETF httpapi draft's form; both name the
/// same key), given once.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be given once, as 1-{MAX_IDEMPOTENCY_KEY} characters of \
                 A-Z a-z 0-9 - _ . : ~ + / = (optionally in double quotes)"
            ),
        )
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    let key = match text.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(bad)?,
        None => text,
    };
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:~+/=".contains(c));
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !ok_chars {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The fingerprint an `Idempotency-Key` is bound to: SHA-256 of the parsed
/// request re-serialized, so whitespace and key order do not matter but every
/// value does.
fn fingerprint(req: &CreateBot) -> String {
    use sha2::Digest as _;
    // A struct of strings, numbers and options always serializes.
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&canonical))
}

/// What a tenant's `Idempotency-Key` stands for now.
enum KeyState {
    /// Unused (or its window has passed: replace the row at this ETag).
    Free(Option<String>),
    /// Claimed with this body, and the bot exists: answer with it.
    Replay(Box<BotRecord>),
    /// Claimed with this body, the bot not created yet (the first request is
    /// still running, or died before creating it): carry the request out
    /// with the claimed bot id. Creating the record decides which request
    /// enqueues the one job.
    Claimed { bot_id: String, etag: String },
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body; \
         send a new key for a new bot",
    )
}

async fn key_state(
    state: &ApiState,
    tenant: &str,
    key: &str,
    fp: &str,
) -> Result<KeyState, ApiError> {
    let storage = |_| ApiError::unavailable("bot storage");
    let entry = state
        .records
        .idempotency_get(tenant, key)
        .await
        .map_err(storage)?;
    let Some(e) = entry else {
        return Ok(KeyState::Free(None));
    };
    if e.expired(SystemTime::now()) || validate_id("bot id", &e.bot_id).is_err() {
        return Ok(KeyState::Free(Some(e.etag)));
    }
    if e.fingerprint != fp {
        return Err(key_reused());
    }
    match state
        .records
        .get(tenant, &e.bot_id)
        .await
        .map_err(storage)?
    {
        Some(r) => Ok(KeyState::Replay(Box::new(r))),
        None => Ok(KeyState::Claimed {
            bot_id: e.bot_id,
            etag: e.etag,
        }),
    }
}

/// Claims `key` for `fresh_id` unless another request holds it: the
/// conditional insert (or `If-Match` replace of an expired row) admits one
/// winner; the others see its row and follow it.
async fn claim_key(
    state: &ApiState,
    tenant: &str,
    key: &str,
    fp: &str,
    fresh_id: &str,
) -> Result<KeyState, ApiError> {
    for _ in 0..3 {
        let replace = match key_state(state, tenant, key, fp).await? {
            KeyState::Free(replace) => replace,
            taken => return Ok(taken),
        };
        match state
            .records
            .idempotency_claim(
                tenant,
                key,
                fresh_id,
                fp,
                state.idempotency_window,
                replace.as_deref(),
            )
            .await
        {
            Ok(etag) => {
                return Ok(KeyState::Claimed {
                    bot_id: fresh_id.to_string(),
                    etag,
                })
            }
            Err(TableError::AlreadyExists | TableError::PreconditionFailed) => continue,
            Err(e) => {
                warn!(error = %e, "Could not store an Idempotency-Key.");
                return Err(ApiError::unavailable("bot storage"));
            }
        }
    }
    Err(ApiError::unavailable(
        "bot storage (the Idempotency-Key changed concurrently; retry)",
    ))
}

/// `201 Created` with the bot and its `Location`; a replay of an
/// `Idempotency-Key` also says `Idempotent-Replayed: true`.
fn created(body: serde_json::Value, bot_id: &str, replayed: bool) -> Response {
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!("/v1/bots/{bot_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        resp.headers_mut().insert(
            header::HeaderName::from_static("idempotent-replayed"),
            header::HeaderValue::from_static("true"),
        );
    }
    resp
}

fn replay(state: &ApiState, r: BotRecord) -> Response {
    state.metrics.inc(
        "meetbot_idempotent_replays_total",
        "POST /v1/bots answered with the bot an Idempotency-Key already created.",
        &[("tenant", &r.tenant)],
        1.0,
    );
    info!(bot_id = %r.id, tenant = %r.tenant, "Idempotency-Key replayed: answered with the existing bot.");
    let id = r.id.clone();
    created(serde_json::to_value(r).unwrap_or_default(), &id, true)
}

async fn create_bot(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let idem = idempotency_key(&headers)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body is too large",
            )
        } else {
            ApiError::bad("invalid_body", "could not read the request body")
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: CreateBot = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        if path == "." {
            ApiError::bad("invalid_json", format!("invalid JSON: {inner}"))
        } else {
            ApiError::bad("invalid_json", format!("invalid JSON at {path}: {inner}"))
        }
    })?;
    // A retry of a request that already created its bot is answered before
    // anything is checked again (DNS answers may have changed since).
    let fp = fingerprint(&req);
    if let Some(key) = &idem {
        if let KeyState::Replay(r) = key_state(&state, &tenant.id, key, &fp).await? {
            return Ok(replay(&state, *r));
        }
    }
    let mut bot_id = format!("b-{}", uuid::Uuid::new_v4().simple());
    let mut job = Job {
        version: JOB_VERSION,
        bot_id: Some(bot_id.clone()),
        tenant: tenant.id.clone(),
        meeting_id: req
            .meeting_id
            .unwrap_or_else(|| format!("m-{}", uuid::Uuid::new_v4().simple())),
        meeting_url: req.meeting_url,
        bot_name: req.bot_name,
        join_at: req.join_at,
        stt: req.stt,
        webhook: req.webhook,
        retention_days: req.retention_days,
    };
    job.validate()
        .map_err(|e| ApiError::bad("invalid_request", e.0))?;

    // URLs: the meeting and the webhook must be reachable and public.
    let url = job.meeting_url.trim();
    if url.starts_with("replay:") {
        if !state.allow_replay {
            return Err(url_error("meeting_url", &UrlError::ReplayNotAllowed));
        }
    } else if let Err(e) = state.policy.check_meeting_url(url).await {
        return Err(url_error("meeting_url", &e));
    }
    if let Some(w) = &job.webhook {
        if !tenant.webhook_secrets.contains_key(&w.secret_ref) {
            return Err(ApiError::bad(
                "invalid_request",
                format!(
                    "webhook.secret_ref {:?} is not one of this tenant's webhook secrets",
                    w.secret_ref
                ),
            ));
        }
        if let Err(e) = state.policy.check_webhook_url(&w.url).await {
            return Err(url_error("webhook.url", &e));
        }
    }
    let delay = match job.join_at_time() {
        Some(at) => at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    };
    if delay > MAX_VISIBILITY {
        return Err(ApiError::bad(
            "invalid_request",
            "join_at must be at most 7 days ahead",
        ));
    }
    if job.to_json().len() > crate::azure::queue::MAX_MESSAGE_BYTES {
        return Err(ApiError::bad(
            "invalid_request",
            "the request is too large to enqueue",
        ));
    }
    // The request is valid: claim the key (or follow whoever holds it).
    let mut key_etag = None;
    if let Some(key) = &idem {
        match claim_key(&state, &tenant.id, key, &fp, &bot_id).await? {
            KeyState::Replay(r) => return Ok(replay(&state, *r)),
            KeyState::Claimed { bot_id: id, etag } => {
                bot_id = id;
                job.bot_id = Some(bot_id.clone());
                key_etag = Some(etag);
            }
            KeyState::Free(_) => return Err(ApiError::unavailable("bot storage")),
        }
    }
    let text = job.to_json();

    let status = if delay > Duration::ZERO {
        "scheduled"
    } else {
        "queued"
    };
    match state
        .records
        .create(
            &job.tenant,
            &bot_id,
            &job.meeting_id,
            status,
            job.join_at.as_deref(),
        )
        .await
    {
        Ok(()) => {}
        // Another request with the same Idempotency-Key created this bot
        // first: it enqueues the job; this one answers with the bot.
        Err(TableError::AlreadyExists) if idem.is_some() => {
            return match state.records.get(&job.tenant, &bot_id).await {
                Ok(Some(r)) => Ok(replay(&state, r)),
                _ => Err(ApiError::unavailable("bot storage")),
            };
        }
        Err(e) => {
            warn!(error = %e, "Could not create a bot record.");
            return Err(ApiError::unavailable("bot storage"));
        }
    }
    if let Err(e) = state.queue.send(&text, delay).await {
        warn!(error = %e, "Could not enqueue a job.");
        // The key is freed, so that a retry sends a bot rather than being
        // answered with this one (fatal, never queued).
        if let (Some(key), Some(etag)) = (&idem, &key_etag) {
            let _ = state
                .records
                .idempotency_release(&job.tenant, key, etag)
                .await;
        }
        let _ = state
            .records
            .update(
                &job.tenant,
                &bot_id,
                &Update {
                    status: Some("fatal".into()),
                    reason: Some("could not be queued".into()),
                    ..Default::default()
                },
            )
            .await;
        return Err(ApiError::unavailable("the job queue"));
    }
    state.metrics.inc(
        "meetbot_bots_created_total",
        "Bots requested through the API.",
        &[
            ("tenant", &job.tenant),
            (
                "scheduled",
                if delay > Duration::ZERO {
                    "true"
                } else {
                    "false"
                },
            ),
        ],
        1.0,
    );
    info!(bot_id = %bot_id, tenant = %job.tenant, delay_s = delay.as_secs(), "Bot requested.");
    let record = state.records.get(&job.tenant, &bot_id).await.ok().flatten();
    let body = match record {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => {
            json!({"id": bot_id, "tenant": job.tenant, "meeting_id": job.meeting_id, "status": status})
        }
    };
    Ok(created(body, &bot_id, false))
}

async fn get_bot(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    if validate_id("bot id", &id).is_err() {
        return Err(ApiError::not_found());
    }
    match state.records.get(&tenant.id, &id).await {
        Ok(Some(r)) => Ok(axum::Json(r).into_response()),
        Ok(None) => Err(ApiError::not_found()),
        Err(_) => Err(ApiError::unavailable("bot storage")),
    }
}

async fn list_bots(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    match state.records.list(&tenant.id, state.max_list).await {
        Ok(v) => Ok(axum::Json(json!({ "bots": v })).into_response()),
        Err(_) => Err(ApiError::unavailable("bot storage")),
    }
}

async fn stop_bot(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    if validate_id("bot id", &id).is_err() {
        return Err(ApiError::not_found());
    }
    // Not started yet: cancelled now, conditionally on the record not having
    // changed (a worker claiming the job changes it first). In a meeting, or
    // if the worker won the race: the worker sees stop_requested before it
    // joins or within worker.stop_poll, leaves, commits and deletes as usual.
    let mut rec = None;
    for _ in 0..3 {
        let (r, etag) = match state.records.get_with_etag(&tenant.id, &id).await {
            Ok(Some(x)) => x,
            Ok(None) => return Err(ApiError::not_found()),
            Err(_) => return Err(ApiError::unavailable("bot storage")),
        };
        if r.is_terminal() {
            return Ok((StatusCode::OK, axum::Json(r)).into_response());
        }
        let pending = matches!(r.status.as_str(), "scheduled" | "queued");
        let u = Update {
            stop_requested: Some(true),
            status: pending.then(|| "cancelled".to_string()),
            reason: pending.then(|| "stopped before joining (DELETE /v1/bots)".to_string()),
            ..Default::default()
        };
        let cond = if pending { etag.as_str() } else { "*" };
        match state.records.update_if(&tenant.id, &id, &u, cond).await {
            Ok(()) => {
                rec = Some(r);
                break;
            }
            Err(TableError::PreconditionFailed) => continue,
            Err(_) => return Err(ApiError::unavailable("bot storage")),
        }
    }
    let Some(rec) = rec else {
        return Err(ApiError::unavailable(
            "bot storage (the bot changed concurrently; retry)",
        ));
    };
    state.metrics.inc(
        "meetbot_bots_stopped_total",
        "Stop requests through the API.",
        &[("tenant", &tenant.id)],
        1.0,
    );
    let rec = state
        .records
        .get(&tenant.id, &id)
        .await
        .ok()
        .flatten()
        .unwrap_or(rec);
    Ok((StatusCode::ACCEPTED, axum::Json(rec)).into_response())
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let check = async {
        state
            .records
            .ping()
            .await
            .map_err(|e| format!("table: {e}"))?;
        state
            .queue
            .ping()
            .await
            .map_err(|e| format!("queue: {e}"))?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({"ready": true}))).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "error": e})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "error": "timed out"})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    // Served on serve.metrics_listen only (see metrics_router).
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn count_requests(
    State(state): State<Arc<ApiState>>,
    matched: Option<axum::extract::MatchedPath>,
    method: Method,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let route = matched.as_ref().map(|m| m.as_str()).unwrap_or("unmatched");
    state.metrics.inc(
        "meetbot_http_requests_total",
        "HTTP requests served.",
        &[
            ("method", method.as_str()),
            ("route", route),
            ("status", resp.status().as_str()),
        ],
        1.0,
    );
    resp
}

/// The API router.
pub fn router(state: Arc<ApiState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/bots", get(list_bots).post(create_bot))
        .route("/v1/bots/{id}", get(get_bot).delete(stop_bot))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"ok": true})) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The private metrics router (`GET /metrics`, everything else 404), for
/// `serve.metrics_listen`. Its series carry tenant labels: operators may
/// break usage down per tenant, API clients never see it.
pub fn metrics_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .with_state(state)
}

/// Runs `meetbot serve` until SIGTERM/SIGINT.
pub async fn serve_cmd(cfg: Config) -> anyhow::Result<()> {
    if cfg.tenants.file.as_os_str().is_empty() {
        anyhow::bail!("tenants.file is required (the API's tokens and tenants)");
    }
    let tenants = Tenants::load(&cfg.tenants.file).map_err(anyhow::Error::msg)?;
    let az = AzureEnv::from_config(&cfg)?;
    let records = az.records(&cfg)?;
    let queue = az.queue(&cfg, &cfg.queue.name)?;
    // Create what is missing; an unreachable service is reported by /readyz
    // rather than stopping the process.
    if let Err(e) = records.ensure_table().await {
        warn!(error = %e, "Could not create the bot-records table yet.");
    }
    if let Err(e) = queue.create_if_missing().await {
        warn!(error = %e, "Could not create the job queue yet.");
    }
    let outbox = az.queue(&cfg, &cfg.webhooks.outbox_queue)?;
    let state = Arc::new(ApiState {
        tenants: tenants.clone(),
        records,
        queue,
        policy: cfg.url_policy(),
        allow_replay: cfg.urls.allow_replay,
        max_list: cfg.serve.max_list,
        metrics: Metrics::default(),
        idempotency_window: cfg.serve.idempotency_window,
    });
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.serve.listen))?;
    let metrics_listener = if cfg.serve.metrics_listen.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&cfg.serve.metrics_listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.serve.metrics_listen))?,
        )
    };
    info!(
        listen = %listener.local_addr()?,
        metrics_listen = %metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        tenants = tenants.len(),
        "meetbot serve listening."
    );
    let outbox_task = tokio::spawn(super::outbox::run(outbox, tenants, cfg.clone()));
    let metrics_task = metrics_listener.map(|l| {
        let app = metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                warn!(error = %e, "Metrics listener stopped.");
            }
        })
    });
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        } else {
            std::future::pending::<()>().await;
        }
    };
    axum::serve(listener, router(state, cfg.serve.max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await?;
    outbox_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(values: &[&[u8]]) -> Result<Option<String>, ApiError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                "idempotency-key",
                header::HeaderValue::from_bytes(v).expect("a valid header value"),
            );
        }
        idempotency_key(&h)
    }

    #[test]
    fn idempotency_keys_are_bounded_and_quoted_or_bare() {
        assert_eq!(key(&[]).unwrap(), None);
        for (given, want) in [
            (&b"abc"[..], "abc"),
            (b"\"abc\"", "abc"),
            (
                b" 8e03978e-40d5-43e8-bc93-6894a57f9324 ",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            (b"a.b_c:d~e+f/g=", "a.b_c:d~e+f/g="),
        ] {
            assert_eq!(key(&[given]).unwrap().as_deref(), Some(want));
        }
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY);
        assert_eq!(key(&[longest.as_bytes()]).unwrap(), Some(longest.clone()));
        let too_long = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        for bad in [
            &b""[..],
            b"\"\"",
            b"\"abc",
            b"abc\"",
            b"a b",
            b"a,b",
            b"caf\xc3\xa9",
            b"a\\b",
            too_long.as_bytes(),
        ] {
            let e = key(&[bad]).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
                "{bad:?}"
            );
        }
        assert!(key(&[b"a", b"a"]).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_layout_but_not_values() {
        let parse = |t: &str| serde_json::from_str::<CreateBot>(t).unwrap();
        let a = fingerprint(&parse(
            r#"{"meeting_url":"janus+wss://h/1","meeting_id":"m"}"#,
        ));
        let b = fingerprint(&parse(
            r#"{ "meeting_id" : "m",
                 "meeting_url": "janus+wss://h/1" }"#,
        ));
        let c = fingerprint(&parse(
            r#"{"meeting_url":"janus+wss://h/1","meeting_id":"n"}"#,
        ));
        let d = fingerprint(&parse(
            r#"{"meeting_url":"janus+wss://h/2","meeting_id":"m"}"#,
        ));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_openapi_document_describes_the_api_port() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        // /metrics is on its own listener, not part of the API.
        assert!(!paths.contains_key("/metrics"));
        for p in [
            "/v1/bots",
            "/v1/bots/{id}",
            "/healthz",
            "/readyz",
            "/v1/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        let post = &doc["paths"]["/v1/bots"]["post"];
        assert!(post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
        assert!(post["responses"]["409"].is_object());
        assert!(post["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    }
}
