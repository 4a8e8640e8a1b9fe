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
//! Bounds: the request body is capped at `max_body_bytes` (413), the audio at
//! `max_audio` (413), the upload must finish within `upload_timeout` (408),
//! at most `max_concurrency` transcriptions run at once and further requests
//! wait their turn (they are queued, not refused). At most
//! `4 × max_concurrency` uploads are read into memory at once, which bounds
//! memory under a flood. Transcript text is never logged.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

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
    /// Time allowed to receive one request body. Default 60 s.
    pub upload_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            api_key: None,
            max_concurrency: 2,
            max_body_bytes: 25 << 20,
            max_audio: Duration::from_secs(30 * 60),
            upload_timeout: Duration::from_secs(60),
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
            .field("upload_timeout", &self.upload_timeout)
            .finish()
    }
}

struct AppState {
    provider: Arc<dyn SttProvider>,
    api_key: Option<Secret<String>>,
    /// Permits to run the engine.
    engine: Semaphore,
    /// Permits to hold an upload in memory.
    intake: Semaphore,
    max_audio: Duration,
    upload_timeout: Duration,
}

/// Serves `provider` on `listener` until `shutdown` resolves, then stops
/// accepting connections and waits for requests in flight to finish.
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
            auth = opts.api_key.is_some(),
            "STT server listening."
        );
    }
    axum::serve(listener, router(provider, opts))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("STT server stopped.");
    Ok(())
}

/// The axum application behind [`serve`], for embedding in another server.
pub fn router(provider: Arc<dyn SttProvider>, opts: ServeOptions) -> Router {
    let concurrency = opts.max_concurrency.clamp(1, Semaphore::MAX_PERMITS / 4);
    let state = Arc::new(AppState {
        provider,
        api_key: opts.api_key.filter(|k| !k.expose().is_empty()),
        engine: Semaphore::new(concurrency),
        intake: Semaphore::new(concurrency * 4),
        max_audio: opts.max_audio,
        upload_timeout: opts.upload_timeout,
    });
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
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
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn transcriptions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    match transcribe(&state, &headers, form).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(status = e.status.as_u16(), error = %e.message, "Transcription request refused.");
            e.into_response()
        }
    }
}

async fn transcribe(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    authorize(state, headers)?;
    let form = form.map_err(|_| {
        ApiError::invalid("Expected a multipart/form-data body with a boundary.", None)
    })?;
    // Bound how many uploads sit in memory; waiting here holds no body bytes.
    let _intake = state.intake.acquire().await.map_err(|_| {
        ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        )
    })?;
    let request = tokio::time::timeout(state.upload_timeout, read_form(form))
        .await
        .map_err(|_| {
            ApiError::invalid(
                format!(
                    "The upload did not finish within {:?}.",
                    state.upload_timeout
                ),
                None,
            )
            .with_status(StatusCode::REQUEST_TIMEOUT)
        })??;
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
    let audio_ms = samples_to_ms(samples.len());
    let segments = if samples.is_empty() {
        Vec::new()
    } else {
        // Queue for the engine rather than refuse.
        let _engine = state.engine.acquire().await.map_err(|_| {
            ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is shutting down.",
            )
        })?;
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

    #[test]
    fn timestamps_format() {
        assert_eq!(timestamp(3_723_004, ','), "01:02:03,004");
        assert_eq!(timestamp(0, '.'), "00:00:00.000");
    }
}
