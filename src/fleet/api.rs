//! `meetbot serve`: the control API.
//!
//! - `POST /v1/bots` — send a bot now, or at `join_at` (the job waits in the
//!   queue, invisible, until then; at most 7 days ahead).
//! - `GET /v1/bots`, `GET /v1/bots/{id}` — the tenant's bots and their status.
//! - `DELETE /v1/bots/{id}` — stop: a pending bot is cancelled; a bot in a
//!   meeting leaves, commits and deletes as usual.
//! - `GET /healthz`, `/readyz` (Table and queue reachable), `/metrics`
//!   (Prometheus), `/v1/openapi.json` (the checked-in OpenAPI document).
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
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::job::{Job, JobStt, JobWebhook, JOB_VERSION};
use super::metrics::Metrics;
use super::records::{Records, Update};
use super::tenants::{Tenant, Tenants};
use super::AzureEnv;
use crate::azure::queue::{JobQueue, MAX_VISIBILITY};
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
#[derive(Debug, Deserialize)]
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

async fn create_bot(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
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
    let bot_id = format!("b-{}", uuid::Uuid::new_v4().simple());
    let job = Job {
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
    let text = job.to_json();
    if text.len() > crate::azure::queue::MAX_MESSAGE_BYTES {
        return Err(ApiError::bad(
            "invalid_request",
            "the request is too large to enqueue",
        ));
    }

    let status = if delay > Duration::ZERO {
        "scheduled"
    } else {
        "queued"
    };
    state
        .records
        .create(
            &job.tenant,
            &bot_id,
            &job.meeting_id,
            status,
            job.join_at.as_deref(),
        )
        .await
        .map_err(|e| {
            warn!(error = %e, "Could not create a bot record.");
            ApiError::unavailable("bot storage")
        })?;
    if let Err(e) = state.queue.send(&text, delay).await {
        warn!(error = %e, "Could not enqueue a job.");
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
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!("/v1/bots/{bot_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
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
            Err(crate::azure::table::TableError::PreconditionFailed) => continue,
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
        .route("/metrics", get(metrics))
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
    });
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.serve.listen))?;
    info!(listen = %listener.local_addr()?, tenants = tenants.len(), "meetbot serve listening.");
    let outbox_task = tokio::spawn(super::outbox::run(outbox, tenants, cfg.clone()));
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
    Ok(())
}
