//! `stt-serve`: any [`SttProvider`] (normally the embedded Whisper engine)
//! served over the OpenAI-compatible transcription API, so a fleet of bots can
//! share one transcription service and stay small.
//!
//! Routes:
//! - `POST /v1/audio/transcriptions`: multipart form with `file` (a WAV file)
//!   and optional `model`, `language`, `prompt`, `response_format`
//!   (`json` default, `verbose_json`, `text`, `srt`, `vtt`), `temperature`,
//!   `timestamp_granularities[]` (`segment`). Answers as OpenAI does, errors as
//!   `{"error":{"message","type","param","code"}}`.
//! - `GET /v1/models`: the engine's model.
//! - `GET /healthz`: liveness, never authenticated.
//!
//! Only WAV uploads are decoded (any PCM/float layout, rate and channel
//! count); other containers get 415. `model`, `prompt` and `temperature` are
//! validated and then ignored: the server runs the one engine it was given.
//!
//! Exposure: [`check_exposure`] refuses a non-loopback listen address without
//! an API key (unless the operator says `--insecure-no-auth`). With a key,
//! `/v1/*` requires `Authorization: Bearer <key>` (compared in constant time;
//! a 401 OpenAI-shaped error otherwise), checked before any body byte is read.
//!
//! Bounds, phase by phase; nothing before the engine permit can be held by a
//! slow client:
//! - connections: at most `max_connections` at once. At the cap the server
//!   stops accepting; further connections wait in the kernel's accept backlog
//!   (they are not refused) and are accepted as others close.
//! - headers: the whole request head must arrive within `header_timeout`
//!   (also while a kept-alive connection waits for its next request), or the
//!   connection is closed.
//! - body: the whole body must arrive within `body_timeout` (408), at most
//!   `max_body_bytes` (413, refused up front when `Content-Length` says so).
//!   Bodies being read and waiting are held in a shared budget of
//!   `4 × max_concurrency × max_body_bytes`: a client holds only the bytes it
//!   has sent, so a thousand slow uploads hold almost nothing. A body that
//!   cannot get budget before its deadline gets 503 (retry later).
//! - queue: only complete, parsed uploads queue for the engine; at most
//!   `4 × max_concurrency` of them are decoded and waiting at once; at most
//!   `max_concurrency` transcriptions run at once. Further complete requests
//!   wait their turn (they are queued, not refused); the audio is capped at
//!   `max_audio` (413).
//!
//! Transcript text and API keys are never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::text::samples_to_ms;
use super::wav::{decode_wav, WavError};
use super::{SttError, SttProvider, SttSegment};
use crate::pii::Secret;

/// Settings for [`serve`].
#[derive(Clone)]
pub struct ServeOptions {
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`. Default none.
    pub api_key: Option<Secret<String>>,
    /// Transcriptions run at once; more requests queue. Default 2 (0 is treated as 1).
    pub max_concurrency: usize,
    /// Largest request body accepted. Default 25 MiB (OpenAI's limit).
    pub max_body_bytes: usize,
    /// Longest audio accepted. Default 30 min.
    pub max_audio: Duration,
    /// Time allowed to receive a request's head (request line and headers). Default 10 s.
    pub header_timeout: Duration,
    /// Time allowed to receive a whole request body. Default 60 s.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the accept backlog. Default 256 (0 is treated as 1).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            api_key: None,
            max_concurrency: 2,
            max_body_bytes: 25 << 20,
            max_audio: Duration::from_secs(30 * 60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<secret>"))
            .field("max_concurrency", &self.max_concurrency)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_audio", &self.max_audio)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Why [`check_exposure`] refuses an address.
pub const NO_KEY_REFUSAL: &str = "refusing to listen on a non-loopback address without an API key: anyone who can reach it could use the transcription engine";

/// Decides whether `stt-serve` may listen on `addr`: a loopback address always,
/// any other only with an API key or when `insecure_no_auth` says so. The
/// error says what to do.
pub fn check_exposure(
    addr: SocketAddr,
    has_key: bool,
    insecure_no_auth: bool,
) -> Result<(), String> {
    if has_key || insecure_no_auth || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{NO_KEY_REFUSAL} ({addr}). Set stt_serve.api_key (environment: MEETBOT_STT_SERVE__API_KEY) \
         and give the clients the same key (meetbot workers: stt.api_key, MEETBOT_STT__API_KEY); \
         or listen on a loopback address such as 127.0.0.1:8799; or, if something else controls \
         who can connect (a network policy, an authenticating proxy), pass --insecure-no-auth."
    ))
}

struct AppState {
    provider: Arc<dyn SttProvider>,
    api_key: Option<Secret<String>>,
    /// Permits to run the engine.
    engine: Semaphore,
    /// Permits for complete uploads to be decoded and wait for the engine.
    intake: Semaphore,
    /// Bytes of request bodies held in memory, one permit per byte.
    body_budget: Semaphore,
    max_body_bytes: usize,
    max_audio: Duration,
    body_timeout: Duration,
}

/// Serves `provider` on `listener` until `shutdown` resolves, then stops
/// accepting connections and waits for requests in flight to finish.
///
/// Each connection is served by hyper's HTTP/1 server with the header read
/// timeout; at most `max_connections` are served at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: Arc<dyn SttProvider>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            provider = provider.name(),
            model = provider.model(),
            max_concurrency = opts.max_concurrency.max(1),
            max_connections = opts.max_connections.max(1),
            auth = opts.api_key.as_ref().is_some_and(|k| !k.expose().is_empty()),
            "STT server listening."
        );
    }
    let header_timeout = opts.header_timeout;
    let slots = Arc::new(Semaphore::new(
        opts.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let app = router(provider, opts);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap, stop accepting: new connections wait in the backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Per-connection errors (aborted handshakes) and EMFILE:
                    // keep serving; pause briefly so EMFILE does not spin.
                    tracing::debug!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            header_timeout,
            slot,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    tracing::info!("STT server stopped.");
    Ok(())
}

/// Serves one connection until it closes, or until shutdown lets its request
/// in flight finish.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    _slot: tokio::sync::OwnedSemaphorePermit,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(
        TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(app),
    );
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: the client's problem.
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

/// The axum application behind [`serve`], for embedding in another server.
/// Body limits, body timeout and authentication are in the application; the
/// header timeout and connection cap are [`serve`]'s, so an embedding server
/// must bring its own.
pub fn router(provider: Arc<dyn SttProvider>, opts: ServeOptions) -> Router {
    let concurrency = opts.max_concurrency.clamp(1, Semaphore::MAX_PERMITS / 4);
    let max_body_bytes = opts.max_body_bytes.max(1);
    let budget = max_body_bytes
        .saturating_mul(concurrency * 4)
        .min(Semaphore::MAX_PERMITS);
    let state = Arc::new(AppState {
        provider,
        api_key: opts.api_key.filter(|k| !k.expose().is_empty()),
        engine: Semaphore::new(concurrency),
        intake: Semaphore::new(concurrency * 4),
        body_budget: Semaphore::new(budget),
        max_body_bytes,
        max_audio: opts.max_audio,
        body_timeout: opts.body_timeout,
    });
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        // The body is read (and capped) by `read_body`; the multipart parser
        // then runs over bytes already in memory.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// An OpenAI-shaped error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn server(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else {
        return Ok(());
    };
    let unauthorized = |message: &str| {
        ApiError::invalid(message, None)
            .with_status(StatusCode::UNAUTHORIZED)
            .with_code("invalid_api_key")
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "No API key provided: send it as 'Authorization: Bearer <key>'.",
        ));
    };
    let presented = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .ok_or_else(|| unauthorized("The Authorization header is not 'Bearer <key>'."))?;
    if constant_time_eq(presented, key.expose().as_bytes()) {
        Ok(())
    } else {
        Err(unauthorized("Incorrect API key provided."))
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::invalid("Unknown route; this server offers POST /v1/audio/transcriptions, GET /v1/models and GET /healthz.", None)
        .with_status(StatusCode::NOT_FOUND)
        .with_code("unknown_url")
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.provider.model(),
            "object": "model",
            "created": 0,
            "owned_by": "meetbot",
        }]
    }))
    .into_response()
}

/// The `response_format` values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ResponseFormat {
    Json,
    VerboseJson,
    Text,
    Srt,
    Vtt,
}

/// A parsed transcription request.
struct TranscriptionRequest {
    file: bytes::Bytes,
    language: Option<String>,
    format: ResponseFormat,
}

/// Printable, bounded form of a client-supplied name for an error message.
fn quote_param(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::invalid("The request body is larger than this server accepts.", None)
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        ApiError::invalid(
            format!("Could not read the multipart form: {}.", e.body_text()),
            None,
        )
    }
}

async fn read_form(mut form: Multipart) -> Result<TranscriptionRequest, ApiError> {
    let mut file = None;
    let mut language = None;
    let mut format = ResponseFormat::Json;
    let mut seen: Vec<String> = Vec::new();
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field
            .name()
            .ok_or_else(|| ApiError::invalid("A form field has no name.", None))?
            .to_string();
        let repeatable = name == "timestamp_granularities[]";
        if !repeatable && seen.contains(&name) {
            let shown = quote_param(&name);
            return Err(ApiError::invalid(
                format!("The field '{shown}' is given twice."),
                Some(&shown),
            ));
        }
        if !repeatable {
            seen.push(name.clone());
        }
        if name == "file" {
            file = Some(field.bytes().await.map_err(multipart_error)?);
            continue;
        }
        let value = field.text().await.map_err(multipart_error)?;
        let value = value.trim();
        let bad = |what: &str| {
            Err(ApiError::invalid(
                format!("Invalid '{name}': {what}."),
                Some(&name),
            ))
        };
        match name.as_str() {
            "model" => {
                if value.is_empty() || value.len() > 256 {
                    return bad("expected a model name of 1 to 256 characters");
                }
            }
            "language" => {
                if value.is_empty()
                    || value.len() > 16
                    || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return bad("expected an ISO-639-1 code such as 'en'");
                }
                language = Some(value.to_ascii_lowercase());
            }
            "prompt" => {}
            "response_format" => {
                format = match value {
                    "json" => ResponseFormat::Json,
                    "verbose_json" => ResponseFormat::VerboseJson,
                    "text" => ResponseFormat::Text,
                    "srt" => ResponseFormat::Srt,
                    "vtt" => ResponseFormat::Vtt,
                    _ => return bad("expected one of json, verbose_json, text, srt, vtt"),
                }
            }
            "temperature" => match value.parse::<f32>() {
                Ok(t) if (0.0..=1.0).contains(&t) => {}
                _ => return bad("expected a number from 0 to 1"),
            },
            "timestamp_granularities[]" | "timestamp_granularities" => match value {
                "segment" => {}
                "word" => return bad("word timestamps are not supported; use 'segment'"),
                _ => return bad("expected 'segment'"),
            },
            _ => {
                let shown = quote_param(&name);
                return Err(ApiError::invalid(
                    format!("Unrecognized request argument: '{shown}'."),
                    Some(&shown),
                ));
            }
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::invalid("The 'file' field (a WAV file) is required.", Some("file"))
    })?;
    Ok(TranscriptionRequest {
        file,
        language,
        format,
    })
}

fn wav_error(e: WavError) -> ApiError {
    let status = match e {
        WavError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WavError::Resample(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return ApiError::server(status, format!("Could not prepare the audio: {e}."));
    }
    ApiError::invalid(
        format!("Could not use the uploaded file: {e}."),
        Some("file"),
    )
    .with_status(status)
}

async fn transcriptions(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match transcribe(&state, request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(status = e.status.as_u16(), error = %e.message, "Transcription request refused.");
            e.into_response()
        }
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::invalid(
        format!("The request body is larger than this server accepts ({max} bytes)."),
        None,
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn shutting_down() -> ApiError {
    ApiError::server(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is shutting down.",
    )
}

/// Reads the whole body within `body_timeout` and `max_body_bytes`, taking
/// budget for each chunk as it arrives (a slow client holds only what it
/// sent). Returns the body and its budget, held until the audio is decoded.
async fn read_body(
    state: &AppState,
    body: Body,
) -> Result<(bytes::Bytes, SemaphorePermit<'_>), ApiError> {
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let timed_out = || {
        ApiError::invalid(
            format!(
                "The request body did not arrive within {:?}.",
                state.body_timeout
            ),
            None,
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
    };
    let mut held = state
        .body_budget
        .acquire_many(0)
        .await
        .map_err(|_| shutting_down())?;
    let mut data = bytes::BytesMut::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .map_err(|_| timed_out())?
    {
        let chunk =
            chunk.map_err(|_| ApiError::invalid("The request body could not be read.", None))?;
        if data.len() + chunk.len() > state.max_body_bytes {
            return Err(too_large(state.max_body_bytes));
        }
        // chunk.len() <= max_body_bytes <= the budget, which fits in u32 for
        // any sane cap; a larger chunk is refused rather than truncated.
        let want = u32::try_from(chunk.len()).map_err(|_| too_large(state.max_body_bytes))?;
        let permit = tokio::time::timeout_at(deadline, state.body_budget.acquire_many(want))
            .await
            .map_err(|_| {
                ApiError::server(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is busy receiving other uploads; retry later.",
                )
            })?
            .map_err(|_| shutting_down())?;
        held.merge(permit);
        data.extend_from_slice(&chunk);
    }
    Ok((data.freeze(), held))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

async fn transcribe(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    // Nothing of the body is read before the key and the framing are checked.
    authorize(state, &parts.headers)?;
    let not_multipart =
        || ApiError::invalid("Expected a multipart/form-data body with a boundary.", None);
    if !is_multipart(&parts.headers) {
        return Err(not_multipart());
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(too_large(state.max_body_bytes));
    }
    let (body, budget) = read_body(state, body).await?;
    let form = Multipart::from_request(Request::from_parts(parts, Body::from(body)), &())
        .await
        .map_err(|_| not_multipart())?;
    let request = read_form(form).await?;
    // Only complete uploads queue for the engine.
    let _intake = state.intake.acquire().await.map_err(|_| shutting_down())?;
    let started = Instant::now();
    let max_audio = state.max_audio;
    let file = request.file;
    let samples = tokio::task::spawn_blocking(move || decode_wav(&file, max_audio))
        .await
        .map_err(|_| {
            ApiError::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Decoding the audio failed.",
            )
        })?
        .map_err(wav_error)?;
    drop(budget);
    let audio_ms = samples_to_ms(samples.len());
    let segments = if samples.is_empty() {
        Vec::new()
    } else {
        // Queue for the engine rather than refuse.
        let _engine = state.engine.acquire().await.map_err(|_| shutting_down())?;
        state
            .provider
            .transcribe(Arc::from(samples))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "The STT engine failed.");
                match e {
                    SttError::Transient(m) => ApiError::server(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("The transcription engine is unavailable: {m}"),
                    ),
                    SttError::Permanent(m) => ApiError::server(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("The transcription engine failed: {m}"),
                    ),
                }
            })?
    };
    tracing::debug!(
        audio_ms,
        segments = segments.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Transcribed."
    );
    Ok(render(
        request.format,
        &segments,
        audio_ms,
        request.language.as_deref(),
    ))
}

/// Seconds with millisecond precision, as OpenAI reports times.
fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `HH:MM:SS{sep}mmm` as SRT (`,`) and WebVTT (`.`) write times.
fn timestamp(ms: u64, sep: char) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

fn render(
    format: ResponseFormat,
    segments: &[SttSegment],
    audio_ms: u64,
    language: Option<&str>,
) -> Response {
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let plain = |body: String, content_type: &'static str| {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    match format {
        ResponseFormat::Json => Json(json!({ "text": text })).into_response(),
        ResponseFormat::VerboseJson => {
            let segments: Vec<_> = segments
                .iter()
                .enumerate()
                .map(|(id, s)| {
                    json!({
                        "id": id,
                        "seek": 0,
                        "start": secs(s.start_ms),
                        "end": secs(s.end_ms),
                        "text": s.text,
                        "tokens": [],
                        "temperature": 0.0,
                        "avg_logprob": 0.0,
                        "compression_ratio": 0.0,
                        "no_speech_prob": 0.0,
                    })
                })
                .collect();
            Json(json!({
                "task": "transcribe",
                "language": language.unwrap_or("en"),
                "duration": secs(audio_ms),
                "text": text,
                "segments": segments,
            }))
            .into_response()
        }
        ResponseFormat::Text => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => {
            let mut out = String::new();
            for (i, s) in segments.iter().enumerate() {
                out.push_str(&format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(s.start_ms, ','),
                    timestamp(s.end_ms, ','),
                    s.text
                ));
            }
            plain(out, "text/plain; charset=utf-8")
        }
        ResponseFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in segments {
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    timestamp(s.start_ms, '.'),
                    timestamp(s.end_ms, '.'),
                    s.text
                ));
            }
            plain(out, "text/vtt; charset=utf-8")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use reqwest::multipart::{Form, Part};
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::stt::openai::{OpenAiConfig, OpenAiProvider};
    use crate::stt::retry::{transcribe_with_retry, RetryPolicy};
    use crate::stt::wav::encode_wav;

    /// Answers two fixed segments, or a scripted error; records concurrency.
    struct Fake {
        fail: Mutex<Option<SttError>>,
        delay: Duration,
        running: AtomicUsize,
        max_running: AtomicUsize,
        calls: AtomicUsize,
        last_len: AtomicUsize,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                fail: Mutex::new(None),
                delay: Duration::ZERO,
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
                last_len: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl SttProvider for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn model(&self) -> &str {
            "fake-model"
        }
        async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.last_len.store(samples.len(), Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if let Some(e) = self.fail.lock().expect("test mutex").take() {
                return Err(e);
            }
            Ok(vec![
                SttSegment {
                    start_ms: 0,
                    end_ms: 1250,
                    text: "Hello there.".into(),
                },
                SttSegment {
                    start_ms: 1250,
                    end_ms: 2000,
                    text: "General Kenobi.".into(),
                },
            ])
        }
    }

    struct Server {
        base: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(provider: Arc<dyn SttProvider>, opts: ServeOptions) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, provider, opts, async move {
            let _ = rx.await;
        }));
        Server {
            base,
            stop: Some(tx),
            task,
        }
    }

    fn two_seconds() -> Vec<u8> {
        encode_wav(&vec![0.1; 32_000]).unwrap()
    }

    fn form(wav: Vec<u8>, fields: &[(&str, &str)]) -> Form {
        let mut f = Form::new().part(
            "file",
            Part::bytes(wav)
                .file_name("a.wav")
                .mime_str("audio/wav")
                .unwrap(),
        );
        for (k, v) in fields {
            f = f.text(k.to_string(), v.to_string());
        }
        f
    }

    async fn post(base: &str, form: Form, key: Option<&str>) -> reqwest::Response {
        let mut r = reqwest::Client::new()
            .post(format!("{base}/audio/transcriptions"))
            .multipart(form);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().await.unwrap()
    }

    async fn error_of(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        let err = body.get("error").cloned().unwrap_or(Value::Null);
        assert!(
            err.get("message").and_then(Value::as_str).is_some(),
            "{body}"
        );
        assert!(err.get("type").and_then(Value::as_str).is_some(), "{body}");
        assert!(
            err.get("param").is_some() && err.get("code").is_some(),
            "{body}"
        );
        (status, err)
    }

    #[tokio::test]
    async fn answers_every_response_format() {
        let fake = Arc::new(Fake::new());
        let s = start(fake.clone(), ServeOptions::default()).await;

        let r = post(
            &s.base,
            form(two_seconds(), &[("model", "whisper-1")]),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"text": "Hello there. General Kenobi."}));
        assert_eq!(fake.last_len.load(Ordering::SeqCst), 32_000);

        let r = post(
            &s.base,
            form(
                two_seconds(),
                &[
                    ("response_format", "verbose_json"),
                    ("timestamp_granularities[]", "segment"),
                    ("language", "en"),
                    ("prompt", "names: Kenobi"),
                    ("temperature", "0"),
                ],
            ),
            None,
        )
        .await;
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["duration"], json!(2.0));
        assert_eq!(v["language"], json!("en"));
        assert_eq!(v["segments"][1]["start"], json!(1.25));
        assert_eq!(v["segments"][1]["end"], json!(2.0));
        assert_eq!(v["segments"][1]["text"], json!("General Kenobi."));

        let r = post(
            &s.base,
            form(two_seconds(), &[("response_format", "text")]),
            None,
        )
        .await;
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.text().await.unwrap(), "Hello there. General Kenobi.\n");

        let r = post(
            &s.base,
            form(two_seconds(), &[("response_format", "srt")]),
            None,
        )
        .await;
        assert_eq!(
            r.text().await.unwrap(),
            "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n\
             2\n00:00:01,250 --> 00:00:02,000\nGeneral Kenobi.\n\n"
        );

        let r = post(
            &s.base,
            form(two_seconds(), &[("response_format", "vtt")]),
            None,
        )
        .await;
        assert_eq!(
            r.text().await.unwrap(),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n\
             00:00:01.250 --> 00:00:02.000\nGeneral Kenobi.\n\n"
        );

        // Empty audio never reaches the engine.
        let calls = fake.calls.load(Ordering::SeqCst);
        let r = post(&s.base, form(encode_wav(&[]).unwrap(), &[]), None).await;
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"text": ""}));
        assert_eq!(fake.calls.load(Ordering::SeqCst), calls);
    }

    #[tokio::test]
    async fn rejects_bad_requests_with_openai_errors() {
        let s = start(Arc::new(Fake::new()), ServeOptions::default()).await;
        let cases: Vec<(Form, u16, Option<&str>)> = vec![
            (Form::new().text("model", "whisper-1"), 400, Some("file")),
            (
                form(two_seconds(), &[("response_format", "mp3")]),
                400,
                Some("response_format"),
            ),
            (
                form(two_seconds(), &[("stream", "true")]),
                400,
                Some("stream"),
            ),
            (
                form(two_seconds(), &[("temperature", "7")]),
                400,
                Some("temperature"),
            ),
            (
                form(two_seconds(), &[("language", "en glish")]),
                400,
                Some("language"),
            ),
            (
                form(two_seconds(), &[("timestamp_granularities[]", "word")]),
                400,
                Some("timestamp_granularities[]"),
            ),
            (
                form(two_seconds(), &[("model", "a"), ("model", "b")]),
                400,
                Some("model"),
            ),
            (form(b"ID3\x04not a wav".to_vec(), &[]), 415, Some("file")),
        ];
        for (i, (f, status, param)) in cases.into_iter().enumerate() {
            let (got, err) = error_of(post(&s.base, f, None).await).await;
            assert_eq!(got, status, "case {i}: {err}");
            assert_eq!(err["param"].as_str(), param, "case {i}: {err}");
        }
        // Not multipart at all.
        let r = reqwest::Client::new()
            .post(format!("{}/audio/transcriptions", s.base))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await.0, 400);
        // Unknown route.
        let r = reqwest::get(format!("{}/audio/translations", s.base))
            .await
            .unwrap();
        assert_eq!(error_of(r).await.0, 404);
    }

    #[tokio::test]
    async fn enforces_the_api_key() {
        let opts = ServeOptions {
            api_key: Some(Secret::new("sk-test-1".into())),
            ..ServeOptions::default()
        };
        let s = start(Arc::new(Fake::new()), opts).await;
        for key in [None, Some("sk-test-2"), Some("sk-test-10")] {
            let r = post(&s.base, form(two_seconds(), &[]), key).await;
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let (status, err) = error_of(r).await;
            assert_eq!(status, 401);
            assert_eq!(err["code"], "invalid_api_key");
            assert!(!err.to_string().contains("sk-test-1"));
        }
        assert_eq!(
            post(&s.base, form(two_seconds(), &[]), Some("sk-test-1"))
                .await
                .status(),
            200
        );
        // Models need the key too; health does not.
        let c = reqwest::Client::new();
        assert_eq!(
            c.get(format!("{}/models", s.base))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        let v: Value = c
            .get(format!("{}/models", s.base))
            .bearer_auth("sk-test-1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"][0]["id"], "fake-model");
        let health = s.base.replace("/v1", "/healthz");
        assert_eq!(c.get(health).send().await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn enforces_size_and_duration_limits() {
        let opts = ServeOptions {
            max_body_bytes: 100_000,
            max_audio: Duration::from_secs(1),
            ..ServeOptions::default()
        };
        let s = start(Arc::new(Fake::new()), opts).await;
        // 4 s of audio = 128 kB: over the body limit.
        let big = encode_wav(&vec![0.0; 64_000]).unwrap();
        let (status, _) = error_of(post(&s.base, form(big, &[]), None).await).await;
        assert_eq!(status, 413);
        // 2 s fits the body limit but not the duration limit.
        let (status, err) = error_of(post(&s.base, form(two_seconds(), &[]), None).await).await;
        assert_eq!(status, 413);
        assert!(
            err["message"].as_str().unwrap().contains("1 s allowed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn maps_engine_failures() {
        let fake = Arc::new(Fake::new());
        let s = start(fake.clone(), ServeOptions::default()).await;
        *fake.fail.lock().unwrap() = Some(SttError::Transient("overloaded".into()));
        let (status, err) = error_of(post(&s.base, form(two_seconds(), &[]), None).await).await;
        assert_eq!(status, 503);
        assert_eq!(err["type"], "server_error");
        assert!(err["message"].as_str().unwrap().contains("overloaded"));
        *fake.fail.lock().unwrap() = Some(SttError::Permanent("model broken".into()));
        let (status, err) = error_of(post(&s.base, form(two_seconds(), &[]), None).await).await;
        assert_eq!(status, 500);
        assert!(err["message"].as_str().unwrap().contains("model broken"));
    }

    #[tokio::test]
    async fn queues_beyond_max_concurrency() {
        let mut fake = Fake::new();
        fake.delay = Duration::from_millis(150);
        let fake = Arc::new(fake);
        let opts = ServeOptions {
            max_concurrency: 1,
            ..ServeOptions::default()
        };
        let s = start(fake.clone(), opts).await;
        let requests = (0..4).map(|_| {
            let base = s.base.clone();
            async move { post(&base, form(two_seconds(), &[]), None).await }
        });
        for r in futures_join_all(requests).await {
            assert_eq!(r.status(), 200);
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(fake.max_running.load(Ordering::SeqCst), 1);
    }

    /// Runs futures concurrently (tokio has no join_all).
    async fn futures_join_all<F: Future + Send + 'static>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send,
    {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn shuts_down_gracefully_after_in_flight_requests() {
        let mut fake = Fake::new();
        fake.delay = Duration::from_millis(300);
        let s = start(Arc::new(fake), ServeOptions::default()).await;
        let base = s.base.clone();
        let in_flight =
            tokio::spawn(async move { post(&base, form(two_seconds(), &[]), None).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Server { stop, task, base } = s;
        stop.unwrap().send(()).unwrap();
        // The request that was running still gets its answer.
        assert_eq!(in_flight.await.unwrap().status(), 200);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        // And nothing listens any more.
        assert!(reqwest::get(base.replace("/v1", "/healthz")).await.is_err());
    }

    #[tokio::test]
    async fn openai_client_round_trips_through_the_server() {
        let opts = ServeOptions {
            api_key: Some(Secret::new("sk-round".into())),
            ..ServeOptions::default()
        };
        let fake = Arc::new(Fake::new());
        let s = start(fake.clone(), opts).await;
        let mut config = OpenAiConfig::new(format!("{}/", s.base));
        config.api_key = Some(Secret::new("sk-round".into()));
        config.language = Some("en".into());
        let client = OpenAiProvider::new(config).unwrap();
        let samples: Arc<[f32]> = Arc::from(vec![0.05f32; 40_000]);
        let segs = transcribe_with_retry(&client, samples, &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(fake.last_len.load(Ordering::SeqCst), 40_000);
        assert_eq!(
            segs,
            vec![
                SttSegment {
                    start_ms: 0,
                    end_ms: 1250,
                    text: "Hello there.".into()
                },
                SttSegment {
                    start_ms: 1250,
                    end_ms: 2000,
                    text: "General Kenobi.".into()
                },
            ]
        );
        // A wrong key is a permanent failure, not retried.
        let mut config = OpenAiConfig::new(s.base.clone());
        config.api_key = Some(Secret::new("sk-wrong".into()));
        let client = OpenAiProvider::new(config).unwrap();
        let calls = fake.calls.load(Ordering::SeqCst);
        let err = transcribe_with_retry(
            &client,
            Arc::from(vec![0.0f32; 100]),
            &RetryPolicy::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SttError::Permanent(ref m) if m.contains("401")),
            "{err}"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), calls);
    }

    /// What a raw client got: the server's bytes until it closed, or `None`
    /// if the connection was still open after `wait`.
    async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn addr_of(base: &str) -> SocketAddr {
        base.trim_start_matches("http://")
            .trim_end_matches("/v1")
            .parse()
            .unwrap()
    }

    /// The status code and JSON error of a raw HTTP/1.1 response.
    fn raw_error(response: &[u8]) -> (u16, Value) {
        let text = String::from_utf8_lossy(response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        (status, v["error"].clone())
    }

    const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

    /// A request head for a transcription upload of `length` bytes.
    fn upload_head(key: Option<&str>, length: Option<usize>) -> String {
        let mut head = format!(
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: stt\r\nContent-Type: {MULTIPART}\r\n"
        );
        if let Some(k) = key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        match length {
            Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
            None => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
        head.push_str("\r\n");
        head
    }

    /// A client that sends `first` at once, then one byte of `trickle` per
    /// `every` until stopped. Counts itself in `closed` if the server answers
    /// or closes the connection before that.
    async fn slow_client(
        addr: SocketAddr,
        first: Vec<u8>,
        trickle: Vec<u8>,
        every: Duration,
        started: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&first).await.unwrap();
        let mut bytes = trickle.into_iter();
        let mut buf = [0u8; 512];
        let mut counted = false;
        loop {
            tokio::select! {
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
                _ = stream.read(&mut buf) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                _ = tokio::time::sleep(every) => {
                    let Some(b) = bytes.next() else { continue };
                    if stream.write_all(&[b]).await.is_err() {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if !counted {
                        counted = true;
                        started.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_clients_never_hold_what_a_normal_request_needs() {
        let mut fake = Fake::new();
        fake.delay = Duration::from_millis(100);
        let fake = Arc::new(fake);
        // Timeouts far beyond the test: the slow clients stay connected
        // throughout unless something else ends them.
        let opts = ServeOptions {
            api_key: Some(Secret::new("sk-slow".into())),
            max_concurrency: 1,
            header_timeout: Duration::from_secs(45),
            body_timeout: Duration::from_secs(45),
            ..ServeOptions::default()
        };
        let s = start(fake.clone(), opts).await;
        let addr = addr_of(&s.base);
        let started = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut slow = Vec::new();
        for i in 0..50 {
            let (first, trickle) = if i % 2 == 0 {
                // Headers at one byte a second: a long head that never ends.
                let head = upload_head(Some("sk-slow"), Some(1000));
                let mut trickle = head.into_bytes();
                trickle.truncate(trickle.len() - 4);
                trickle.extend(std::iter::repeat_n(b'a', 1000));
                (Vec::new(), trickle)
            } else {
                // Complete, authorized head; the body at one byte a second.
                let head = upload_head(Some("sk-slow"), Some(1_000_000));
                let body = format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n{}",
                    "a".repeat(1000)
                );
                (head.into_bytes(), body.into_bytes())
            };
            slow.push(tokio::spawn(slow_client(
                addr,
                first,
                trickle,
                Duration::from_secs(1),
                started.clone(),
                closed.clone(),
                stopped.clone(),
            )));
        }
        // Every slow client is connected and sending, and has had time to
        // get as far into the server as it ever will.
        while started.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let r = post(&s.base, form(two_seconds(), &[]), Some("sk-slow")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"text": "Hello there. General Kenobi."})
        );
        // The normal request was served while all 50 were still connected,
        // and only it reached the engine.
        assert_eq!(
            closed.load(Ordering::SeqCst),
            0,
            "slow clients were cut off"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        stop.send(true).unwrap();
        for t in slow {
            t.await.unwrap();
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn header_timeout_closes_idle_partial_and_trickling_heads() {
        let fake = Arc::new(Fake::new());
        let opts = ServeOptions {
            header_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        };
        let s = start(fake.clone(), opts).await;
        let addr = addr_of(&s.base);
        // Connected, sends nothing.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Half a head, then nothing.
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: stt\r\n")
            .await
            .unwrap();
        for stream in [&mut idle, &mut partial] {
            assert!(
                read_until_closed(stream, Duration::from_secs(10))
                    .await
                    .is_some(),
                "the server kept a connection whose head never arrived"
            );
        }
        // A head trickled a byte every 50 ms (and never finished): each byte
        // does not restart the clock.
        let mut trickling = TcpStream::connect(addr).await.unwrap();
        let head = b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: stt\r\nX-Pad: ";
        let mut closed = false;
        for b in head
            .iter()
            .copied()
            .chain(std::iter::repeat(b'x'))
            .take(200)
        {
            if trickling.write_all(&[b]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 64];
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(50), trickling.read(&mut buf)).await
            {
                assert!(
                    !matches!(r, Ok(n) if n > 0),
                    "the server answered an unfinished head"
                );
                closed = true;
                break;
            }
        }
        assert!(closed, "a head trickled over 10 s was still being read");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        // A kept-alive connection that goes quiet after a request is closed too.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: stt\r\n\r\n")
            .await
            .unwrap();
        let got = read_until_closed(&mut kept, Duration::from_secs(10)).await;
        let got = got.expect("an idle kept-alive connection was kept");
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    }

    #[tokio::test]
    async fn body_limits_are_enforced_before_the_body_is_read() {
        let fake = Arc::new(Fake::new());
        let opts = ServeOptions {
            max_body_bytes: 100_000,
            body_timeout: Duration::from_millis(500),
            ..ServeOptions::default()
        };
        let s = start(fake.clone(), opts).await;
        let addr = addr_of(&s.base);
        // A declared length over the cap: 413 at once, no body sent.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(upload_head(None, Some(1 << 30)).as_bytes())
            .await
            .unwrap();
        let got = read_until_closed(&mut c, Duration::from_secs(10))
            .await
            .expect("no answer to an oversized Content-Length");
        let (status, err) = raw_error(&got);
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&got));
        assert_eq!(err["type"], "invalid_request_error");
        assert!(
            err["message"].as_str().unwrap().contains("100000 bytes"),
            "{err}"
        );
        // Chunked, no length: cut off at the cap. (The last chunk ends
        // without its CRLF so that the server has read every byte sent and
        // closes without a reset.)
        let mut c = TcpStream::connect(addr).await.unwrap();
        let body = format!(
            "{}{:x}\r\n{}\r\n14\r\n{}",
            upload_head(None, None),
            99_990,
            "a".repeat(99_990),
            "b".repeat(20)
        );
        c.write_all(body.as_bytes()).await.unwrap();
        let got = read_until_closed(&mut c, Duration::from_secs(10))
            .await
            .expect("no answer to an oversized chunked body");
        assert_eq!(raw_error(&got).0, 413, "{}", String::from_utf8_lossy(&got));
        // Part of a body, then nothing: 408 when the body deadline passes.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("{}--XyZ\r\n", upload_head(None, Some(1000))).as_bytes())
            .await
            .unwrap();
        let got = read_until_closed(&mut c, Duration::from_secs(10))
            .await
            .expect("an unfinished body got no answer");
        let (status, err) = raw_error(&got);
        assert_eq!(status, 408, "{}", String::from_utf8_lossy(&got));
        assert!(
            err["message"].as_str().unwrap().contains("did not arrive"),
            "{err}"
        );
        // A body trickled a byte every 50 ms: the whole body has one deadline,
        // each byte does not extend it (the answer may be lost to a reset,
        // as the server stops reading).
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(upload_head(None, Some(1000)).as_bytes())
            .await
            .unwrap();
        let mut ended = false;
        for _ in 0..200 {
            if c.write_all(b"a").await.is_err() {
                ended = true;
                break;
            }
            let mut buf = [0u8; 4096];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await {
                if let Ok(n) = r {
                    assert!(n == 0 || raw_error(&buf[..n]).0 == 408, "{:?}", &buf[..n]);
                }
                ended = true;
                break;
            }
        }
        assert!(ended, "a body trickled over 10 s was still being read");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_before_the_body_is_read() {
        let opts = ServeOptions {
            api_key: Some(Secret::new("sk-right".into())),
            ..ServeOptions::default()
        };
        let fake = Arc::new(Fake::new());
        let s = start(fake.clone(), opts).await;
        for key in [None, Some("sk-wrong"), Some("sk-righ"), Some("sk-right2")] {
            let mut c = TcpStream::connect(addr_of(&s.base)).await.unwrap();
            c.write_all(upload_head(key, Some(10_000_000)).as_bytes())
                .await
                .unwrap();
            let got = read_until_closed(&mut c, Duration::from_secs(10))
                .await
                .expect("no answer without the body");
            let (status, err) = raw_error(&got);
            assert_eq!(status, 401, "{}", String::from_utf8_lossy(&got));
            assert_eq!(err["code"], "invalid_api_key");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let opts = ServeOptions {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
            ..ServeOptions::default()
        };
        let fake = Arc::new(Fake::new());
        let s = start(fake.clone(), opts).await;
        let addr = addr_of(&s.base);
        // Two kept-alive connections, proven served, then quiet.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stt\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(c);
        }
        let base = s.base.clone();
        let third = tokio::spawn(async move { post(&base, form(two_seconds(), &[]), None).await });
        // It cannot be served while both slots are taken.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!third.is_finished(), "a third connection was served");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        drop(held.pop());
        let r = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("the waiting connection was never served")
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn exposure_needs_a_key_off_loopback() {
        let ok = |a: &str, key, insecure| check_exposure(a.parse().unwrap(), key, insecure);
        for a in [
            "127.0.0.1:8799",
            "127.1.2.3:1",
            "[::1]:8799",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(ok(a, false, false), Ok(()), "{a}");
        }
        for a in [
            "0.0.0.0:8799",
            "[::]:8799",
            "10.0.0.5:8799",
            "192.168.1.2:1",
        ] {
            let err = ok(a, false, false).unwrap_err();
            assert!(err.starts_with(NO_KEY_REFUSAL), "{err}");
            for hint in [
                "stt_serve.api_key",
                "MEETBOT_STT_SERVE__API_KEY",
                "MEETBOT_STT__API_KEY",
                "127.0.0.1",
                "--insecure-no-auth",
            ] {
                assert!(err.contains(hint), "{a}: {err} lacks {hint}");
            }
            assert_eq!(ok(a, true, false), Ok(()), "{a} with a key");
            assert_eq!(ok(a, false, true), Ok(()), "{a} with --insecure-no-auth");
        }
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("test mutex").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn keys_are_never_logged() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let opts = ServeOptions {
            api_key: Some(Secret::new("sk-never-logged".into())),
            ..ServeOptions::default()
        };
        let s = start(Arc::new(Fake::new()), opts).await;
        for key in [Some("sk-never-logged"), Some("sk-wrong-guess"), None] {
            let _ = post(&s.base, form(two_seconds(), &[]), key).await;
        }
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
        assert!(
            text.contains("STT server listening"),
            "nothing captured: {text}"
        );
        assert!(text.contains("Transcription request refused"), "{text}");
        for secret in ["sk-never-logged", "sk-wrong-guess", "General Kenobi"] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
    }

    #[test]
    fn timestamps_format() {
        assert_eq!(timestamp(3_723_004, ','), "01:02:03,004");
        assert_eq!(timestamp(0, '.'), "00:00:00.000");
    }
}
