//! Client for the OpenAI-compatible transcription API.
//!
//! `POST {base}/audio/transcriptions` with a multipart form (`file`, `model`,
//! `language`, `response_format=verbose_json`, `timestamp_granularities[]=segment`)
//! and `Authorization: Bearer` when a key is set. The same API is served by
//! OpenAI, Groq, self-hosted faster-whisper servers and `meetbot stt-serve`.
//! `base` is the API base as the OpenAI SDKs take it, e.g.
//! `https://api.openai.com/v1` or `http://127.0.0.1:8799/v1`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::text::{clean_segments, samples_to_ms, secs_to_ms};
use super::wav::encode_wav;
use super::{SttError, SttProvider, SttSegment};
use crate::pii::Secret;

/// WAV bytes (plaintext audio) that are zeroized when the last reference goes.
struct ZeroizingBytes(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Largest response body read from the server; larger answers are refused.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Longest server error message quoted in an [`SttError`].
const MAX_QUOTED_CHARS: usize = 200;
/// Limit on establishing the TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept for the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for [`OpenAiProvider`].
#[derive(Clone)]
pub struct OpenAiConfig {
    /// API base as the OpenAI SDKs take it (`http(s)://host[:port]/v1`); no query or fragment.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<Secret<String>>,
    /// The `model` form field. Default `whisper-1`.
    pub model: String,
    /// The `language` form field (ISO-639-1, e.g. `en`); `None` lets the server detect it.
    pub language: Option<String>,
    /// Limit on one whole request (connect, upload, transcription, response). Default 60 s.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// Defaults for everything but the base URL: no key, `whisper-1`, no
    /// language hint, 60 s timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key: None,
            model: "whisper-1".to_string(),
            language: None,
            timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The base URL may name internal hosts: kept out of logs like other URLs.
        f.debug_struct("OpenAiConfig")
            .field("base_url", &"<redacted>")
            .field("api_key", &self.api_key.as_ref().map(|_| "<secret>"))
            .field("model", &self.model)
            .field("language", &self.language)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An [`SttProvider`] that sends each utterance to an OpenAI-compatible server.
pub struct OpenAiProvider {
    client: reqwest::Client,
    endpoint: Url,
    api_key: Option<Secret<String>>,
    model: String,
    language: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("model", &self.model)
            .field("language", &self.language)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Checks an API base URL and returns it without trailing slashes.
///
/// Accepts `http` and `https` URLs with a host and no credentials, query or
/// fragment (an Azure `?api-version=` URL needs a different client).
pub fn validate_base_url(base: &str) -> Result<String, SttError> {
    let bad = |why: &str| SttError::Permanent(format!("invalid STT base URL: {why}"));
    let url = Url::parse(base.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(&format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it contains credentials; pass the API key separately"));
    }
    if url.query().is_some() {
        return Err(bad("it has a query string"));
    }
    if url.fragment().is_some() {
        return Err(bad("it has a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl OpenAiProvider {
    /// Validates the configuration and builds the HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, SttError> {
        let base = validate_base_url(&config.base_url)?;
        let endpoint = Url::parse(&format!("{base}/audio/transcriptions")).map_err(|e| {
            SttError::Permanent(format!("invalid STT base URL: cannot append the path: {e}"))
        })?;
        if config.model.trim().is_empty() {
            return Err(SttError::Permanent("the STT model name is empty".into()));
        }
        if config.timeout.is_zero() {
            return Err(SttError::Permanent(
                "the STT timeout must be above zero".into(),
            ));
        }
        if let Some(key) = &config.api_key {
            if key.expose().is_empty() || !key.expose().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SttError::Permanent(
                    "the STT API key is empty or has spaces or control characters".into(),
                ));
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            // Servers close quiet kept-alive connections (stt-serve after its 10 s
            // header timeout): drop idle ones sooner than that, so a request is
            // rarely sent on a connection the server is closing.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timeout(config.timeout)
            .user_agent(concat!("meetbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SttError::Permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(OpenAiProvider {
            client,
            endpoint,
            api_key: config.api_key,
            model: config.model,
            language: config.language.filter(|l| !l.trim().is_empty()),
            timeout: config.timeout,
        })
    }

    fn form(&self, wav: Vec<u8>) -> Result<Form, SttError> {
        // The body owns the WAV bytes and wipes them when the request is done
        // with them (copies in the HTTP and TLS layers' own buffers are not ours).
        let len = wav.len() as u64;
        let wav = bytes::Bytes::from_owner(ZeroizingBytes(zeroize::Zeroizing::new(wav)));
        let file = Part::stream_with_length(reqwest::Body::from(wav), len)
            .file_name("utterance.wav")
            .mime_str("audio/wav")
            .map_err(|e| SttError::Permanent(format!("cannot build the upload: {e}")))?;
        let mut form = Form::new()
            .part("file", file)
            .text("model", self.model.clone())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment");
        if let Some(language) = &self.language {
            form = form.text("language", language.clone());
        }
        Ok(form)
    }

    /// Turns a transport error into an [`SttError`] without the URL.
    fn transport_error(&self, e: reqwest::Error) -> SttError {
        let what = if e.is_timeout() {
            format!("the STT server did not answer within {:?}", self.timeout)
        } else if e.is_connect() {
            format!("cannot connect to the STT server: {}", error_chain(&e))
        } else {
            format!("the request to the STT server failed: {}", error_chain(&e))
        };
        SttError::Transient(what)
    }

    /// Reads at most [`MAX_RESPONSE_BYTES`] of the body.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, SttError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(SttError::Permanent(format!(
                    "the STT server's answer is larger than {} MiB",
                    MAX_RESPONSE_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Removes the API key from text quoted back from the server.
    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if !key.expose().is_empty() => {
                text.replace(key.expose().as_str(), "<secret>")
            }
            _ => text.to_string(),
        }
    }
}

/// The error and its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// At most [`MAX_QUOTED_CHARS`] characters of `text`, control characters replaced.
fn quote(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > MAX_QUOTED_CHARS {
        out.push('…');
    }
    out
}

/// The server's own error message: `{"error":{"message":…}}`, `{"error":"…"}`,
/// `{"detail":"…"}`, `{"message":"…"}` or else the start of the body.
fn server_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("error"),
            v.get("detail"),
            v.get("message"),
        ];
        if let Some(s) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return quote(s);
        }
    }
    quote(&String::from_utf8_lossy(
        &body[..body.len().min(4 * MAX_QUOTED_CHARS)],
    ))
}

/// Whether a failed status is worth retrying.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Parses a `verbose_json` (or plain `json`) answer into segments. Missing or
/// malformed segments fall back to the top-level `text` over the whole audio.
pub(crate) fn parse_transcription(body: &[u8], audio_ms: u64) -> Result<Vec<SttSegment>, SttError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        SttError::Permanent(format!("the STT server's answer is not valid JSON: {e}"))
    })?;
    let Some(obj) = v.as_object() else {
        return Err(SttError::Permanent(
            "the STT server's answer is not a JSON object".into(),
        ));
    };
    let mut segments = Vec::new();
    if let Some(list) = obj.get("segments").and_then(Value::as_array) {
        for s in list {
            let Some(text) = s.get("text").and_then(Value::as_str) else {
                continue;
            };
            let start = s.get("start").and_then(Value::as_f64).unwrap_or(0.0);
            let end = s
                .get("end")
                .and_then(Value::as_f64)
                .map(secs_to_ms)
                .unwrap_or(audio_ms);
            segments.push(SttSegment {
                start_ms: secs_to_ms(start),
                end_ms: end,
                text: text.to_string(),
            });
        }
    }
    if segments.is_empty() {
        match obj.get("text") {
            Some(Value::String(text)) => segments.push(SttSegment {
                start_ms: 0,
                end_ms: audio_ms,
                text: text.clone(),
            }),
            _ if obj.contains_key("segments") => {}
            _ => {
                return Err(SttError::Permanent(
                    "the STT server's answer has neither `segments` nor `text`".into(),
                ))
            }
        }
    }
    Ok(clean_segments(segments, audio_ms))
}

#[async_trait]
impl SttProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let audio_ms = samples_to_ms(samples.len());
        let wav = encode_wav(&samples).map_err(|e| SttError::Permanent(e.to_string()))?;
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .multipart(self.form(wav)?);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let started = std::time::Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(e.without_url()))?;
        let status = response.status();
        let body = self.read_body(response).await?;
        tracing::debug!(
            status = status.as_u16(),
            audio_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "STT server answered."
        );
        if !status.is_success() {
            let msg = format!(
                "the STT server answered {status}: {}",
                self.scrub(&server_message(&body))
            );
            return Err(if is_transient(status) {
                SttError::Transient(msg)
            } else {
                SttError::Permanent(msg)
            });
        }
        parse_transcription(&body, audio_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_validation() {
        assert_eq!(
            validate_base_url("http://127.0.0.1:8799/v1/").unwrap(),
            "http://127.0.0.1:8799/v1"
        );
        assert_eq!(
            validate_base_url("https://api.openai.com/v1").unwrap(),
            "https://api.openai.com/v1"
        );
        for bad in [
            "",
            "ftp://host/v1",
            "http://host/v1?api-version=1",
            "http://host/v1#x",
            "http://user:pw@host/v1",
            "not a url",
            "file:///etc/passwd",
        ] {
            let err = validate_base_url(bad).unwrap_err();
            assert!(
                matches!(err, SttError::Permanent(ref m) if m.starts_with("invalid STT base URL")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn parses_verbose_json_segments() {
        let body = br#"{"text":"Hello there. General.","language":"english","duration":3.0,
            "segments":[{"id":0,"start":0.0,"end":1.5,"text":" Hello there."},
                        {"id":1,"start":1.5,"end":3.0,"text":" General."}]}"#;
        let segs = parse_transcription(body, 3000).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].start_ms, segs[0].end_ms), (0, 1500));
        assert_eq!(segs[0].text, "Hello there.");
        assert_eq!((segs[1].start_ms, segs[1].end_ms), (1500, 3000));
    }

    #[test]
    fn falls_back_to_text() {
        let segs = parse_transcription(br#"{"text":" Just text. "}"#, 2000).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!((segs[0].start_ms, segs[0].end_ms), (0, 2000));
        assert_eq!(segs[0].text, "Just text.");
        assert!(parse_transcription(br#"{"text":"","segments":[]}"#, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn survives_hostile_json() {
        // Huge, negative and wrong-typed times, missing fields, junk segments.
        let body = br#"{"segments":[
            {"start":-5,"end":1e308,"text":"a"},
            {"start":"x","end":null,"text":"b"},
            {"start":2,"end":1,"text":"c"},
            {"text":7},
            null, 5, "s", [],
            {"start":18446744073709551616,"end":18446744073709551617,"text":"d"}]}"#;
        let segs = parse_transcription(body, 4000).unwrap();
        let texts: Vec<&str> = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c", "d"]);
        for s in &segs {
            assert!(s.start_ms <= s.end_ms && s.end_ms <= 4000, "{s:?}");
        }
        for bad in [
            &b"not json"[..],
            b"[]",
            b"42",
            b"{}",
            b"{\"text\":5}",
            b"{\"text\":\"x\"",
        ] {
            let err = parse_transcription(bad, 10).unwrap_err();
            assert!(matches!(err, SttError::Permanent(_)), "{err}");
        }
        let deep = "[".repeat(100_000);
        assert!(parse_transcription(deep.as_bytes(), 10).is_err());
    }

    #[test]
    fn server_messages_are_bounded_and_found() {
        assert_eq!(
            server_message(br#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(server_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(server_message(b"plain\nfailure"), "plain failure");
        let long = "x".repeat(10_000);
        let quoted = server_message(long.as_bytes());
        assert_eq!(quoted.chars().count(), MAX_QUOTED_CHARS + 1);
    }

    #[test]
    fn debug_hides_url_and_key() {
        let mut c = OpenAiConfig::new("http://internal.example:8799/v1");
        c.api_key = Some(Secret::new("sk-123".into()));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("internal") && !shown.contains("sk-123"),
            "{shown}"
        );
        let p = OpenAiProvider::new(c).unwrap();
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("internal") && !shown.contains("sk-123"),
            "{shown}"
        );
    }

    #[test]
    fn rejects_bad_settings() {
        let mut c = OpenAiConfig::new("http://h/v1");
        c.model = " ".into();
        assert!(OpenAiProvider::new(c).is_err());
        let mut c = OpenAiConfig::new("http://h/v1");
        c.api_key = Some(Secret::new("sk 1\n".into()));
        assert!(OpenAiProvider::new(c).is_err());
        let mut c = OpenAiConfig::new("http://h/v1");
        c.timeout = Duration::ZERO;
        assert!(OpenAiProvider::new(c).is_err());
    }

    /// A scripted fake OpenAI server on 127.0.0.1:0.
    mod fake_server {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        use axum::extract::{Multipart, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use axum::routing::post;
        use axum::Router;

        /// What the fake does for one request.
        #[derive(Clone)]
        pub enum Reply {
            Status(u16, &'static str),
            Hang,
        }

        /// What the fake saw.
        #[derive(Default, Debug, Clone)]
        pub struct Seen {
            pub fields: Vec<(String, String)>,
            pub file_name: Option<String>,
            pub file_len: usize,
            pub auth: Option<String>,
        }

        #[derive(Default)]
        pub struct Fake {
            pub replies: Mutex<Vec<Reply>>,
            pub calls: AtomicUsize,
            pub seen: Mutex<Vec<Seen>>,
        }

        async fn handle(
            State(fake): State<Arc<Fake>>,
            headers: HeaderMap,
            mut form: Multipart,
        ) -> Response {
            fake.calls.fetch_add(1, Ordering::SeqCst);
            let mut seen = Seen {
                auth: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                ..Seen::default()
            };
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or_default().to_string();
                if name == "file" {
                    seen.file_name = field.file_name().map(str::to_string);
                    seen.file_len = field.bytes().await.map(|b| b.len()).unwrap_or(0);
                } else {
                    seen.fields
                        .push((name, field.text().await.unwrap_or_default()));
                }
            }
            fake.seen.lock().unwrap().push(seen);
            let reply = {
                let mut r = fake.replies.lock().unwrap();
                if r.len() > 1 {
                    r.remove(0)
                } else {
                    r[0].clone()
                }
            };
            match reply {
                Reply::Status(code, body) => (
                    StatusCode::from_u16(code).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response(),
                Reply::Hang => std::future::pending().await,
            }
        }

        pub async fn start(replies: Vec<Reply>) -> (String, Arc<Fake>) {
            let fake = Arc::new(Fake {
                replies: Mutex::new(replies),
                ..Fake::default()
            });
            let app = Router::new()
                .route("/v1/audio/transcriptions", post(handle))
                .with_state(fake.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}/v1", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            (base, fake)
        }
    }

    use std::sync::atomic::Ordering;

    use fake_server::Reply;

    use crate::stt::retry::{transcribe_with_retry, RetryPolicy};

    const VERBOSE: &str = r#"{"text":" Hi.","segments":[{"start":0.25,"end":0.75,"text":" Hi."}]}"#;

    fn quick_retry() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            attempt_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        }
    }

    fn one_second() -> Arc<[f32]> {
        Arc::from(vec![0.1f32; 16_000])
    }

    #[tokio::test]
    async fn sends_the_openai_form_and_parses_the_answer() {
        let (base, fake) = fake_server::start(vec![Reply::Status(200, VERBOSE)]).await;
        let mut c = OpenAiConfig::new(base);
        c.api_key = Some(Secret::new("sk-abc".into()));
        c.language = Some("en".into());
        c.model = "whisper-large-v3".into();
        let p = OpenAiProvider::new(c).unwrap();
        assert_eq!((p.name(), p.model()), ("openai", "whisper-large-v3"));
        let segs = p.transcribe(one_second()).await.unwrap();
        assert_eq!(
            segs,
            vec![SttSegment {
                start_ms: 250,
                end_ms: 750,
                text: "Hi.".into()
            }]
        );
        let seen = fake.seen.lock().unwrap()[0].clone();
        assert_eq!(seen.auth.as_deref(), Some("Bearer sk-abc"));
        assert_eq!(seen.file_name.as_deref(), Some("utterance.wav"));
        assert_eq!(seen.file_len, 44 + 32_000);
        let field = |k: &str| {
            seen.fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("model"), Some("whisper-large-v3"));
        assert_eq!(field("language"), Some("en"));
        assert_eq!(field("response_format"), Some("verbose_json"));
        assert_eq!(field("timestamp_granularities[]"), Some("segment"));
    }

    #[tokio::test]
    async fn no_key_means_no_auth_header_and_empty_audio_means_no_request() {
        let (base, fake) = fake_server::start(vec![Reply::Status(200, VERBOSE)]).await;
        let p = OpenAiProvider::new(OpenAiConfig::new(base)).unwrap();
        assert!(p
            .transcribe(Arc::from(Vec::new()))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        p.transcribe(one_second()).await.unwrap();
        assert_eq!(fake.seen.lock().unwrap()[0].auth, None);
    }

    #[tokio::test]
    async fn server_error_then_success_is_retried() {
        let (base, fake) = fake_server::start(vec![
            Reply::Status(500, r#"{"error":{"message":"engine hiccup"}}"#),
            Reply::Status(429, r#"{"error":{"message":"slow down"}}"#),
            Reply::Status(200, VERBOSE),
        ])
        .await;
        let p = OpenAiProvider::new(OpenAiConfig::new(base)).unwrap();
        let first = p.transcribe(one_second()).await.unwrap_err();
        assert!(
            matches!(first, SttError::Transient(ref m) if m.contains("500") && m.contains("engine hiccup")),
            "{first}"
        );
        let segs = transcribe_with_retry(&p, one_second(), &quick_retry())
            .await
            .unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn client_errors_are_permanent_and_not_retried() {
        let (base, fake) = fake_server::start(vec![Reply::Status(
            400,
            r#"{"error":{"message":"Invalid file format. key sk-leak","type":"invalid_request_error"}}"#,
        )])
        .await;
        let mut c = OpenAiConfig::new(base);
        c.api_key = Some(Secret::new("sk-leak".into()));
        let p = OpenAiProvider::new(c).unwrap();
        let err = transcribe_with_retry(&p, one_second(), &quick_retry())
            .await
            .unwrap_err();
        let SttError::Permanent(msg) = err else {
            panic!("expected a permanent error, got {err:?}");
        };
        assert!(
            msg.contains("400 Bad Request") && msg.contains("Invalid file format"),
            "{msg}"
        );
        assert!(!msg.contains("sk-leak"), "the key leaked into {msg}");
        assert!(!msg.contains("127.0.0.1"), "the URL leaked into {msg}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_hanging_server_times_out_within_the_bound() {
        let (base, fake) = fake_server::start(vec![Reply::Hang]).await;
        let mut c = OpenAiConfig::new(base);
        c.timeout = Duration::from_millis(300);
        let p = OpenAiProvider::new(c).unwrap();
        let started = std::time::Instant::now();
        let policy = RetryPolicy {
            attempts: 2,
            ..quick_retry()
        };
        let err = transcribe_with_retry(&p, one_second(), &policy)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(err, SttError::Transient(ref m) if m.contains("did not answer within")),
            "{err}"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn malformed_success_bodies_are_permanent() {
        for body in ["{\"text\": ", "<html>oops</html>", "[1,2]"] {
            let (base, fake) = fake_server::start(vec![Reply::Status(200, body)]).await;
            let p = OpenAiProvider::new(OpenAiConfig::new(base)).unwrap();
            let err = transcribe_with_retry(&p, one_second(), &quick_retry())
                .await
                .unwrap_err();
            assert!(matches!(err, SttError::Permanent(_)), "{body}: {err}");
            assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn connection_refused_is_transient_and_names_the_problem() {
        // Bind then drop to get a port with nothing listening.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let p = OpenAiProvider::new(OpenAiConfig::new(base)).unwrap();
        let err = p.transcribe(one_second()).await.unwrap_err();
        assert!(
            matches!(err, SttError::Transient(ref m) if m.contains("cannot connect")),
            "{err}"
        );
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    }
}
