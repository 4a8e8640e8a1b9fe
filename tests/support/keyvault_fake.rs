//! A faithful HTTPS fake of the Azure Key Vault **keys** REST API, for tests.
//! Key Vault has no local emulator; this reproduces what meetbot's provider
//! (through `azure_security_keyvault_keys` 1.0) touches, as observed on the
//! wire (notes/issue4-research.md, section 3) and as documented by Microsoft.
//!
//! Reproduced:
//! - **HTTPS only**, with its own test CA (rcgen) and a server certificate for
//!   `IP:127.0.0.1`; clients trust [`FakeVault::ca_pem`] instead of disabling
//!   verification.
//! - **The challenge flow**: a request with a missing or wrong bearer token
//!   gets `401` with `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
//!   resource="https://vault.azure.net"`, decided *before* the body is read
//!   (the SDK sends its first request without a token and without its body).
//! - `api-version` is required (any value); routes
//!   `GET /keys/{name}[/{version}]`, `POST /keys/{name}/{version}/wrapkey` and
//!   `/unwrapkey`, where an empty version segment (`/keys/kek//wrapkey`,
//!   `/keys/kek/`) means the newest version. Key names are case-insensitive.
//! - RSA-OAEP-256 (OAEP with SHA-256 and MGF1-SHA-256) with 2048-bit keys;
//!   bodies `{"alg":..,"value":<base64url>}`, base64url without padding on
//!   output, padding-indifferent on input; answers `{"kid":..,"value":..}`
//!   where `kid` names the version used.
//! - `GET` answers `{"key":{kid,kty,key_ops,n,e},"attributes":{enabled,created,updated,recoveryLevel,recoverableDays}}`.
//! - Several versions per key, [`FakeVault::rotate`] adds one, versions can be
//!   disabled. Errors as `{"error":{"code":..,"message":..}}`: 401
//!   `Unauthorized`, 400 `BadParameter` (bad JSON, unsupported algorithm,
//!   wrong ciphertext length, decryption failure), 403 `Forbidden` with
//!   `innererror.code = "KeyDisabled"` for wrap/unwrap with a disabled
//!   version, 404 `KeyNotFound`.
//! - A request log ([`FakeVault::requests`]) with method, path, query,
//!   headers, body and the status answered.
//!
//! Not reproduced: real Entra tokens (one fixed bearer string is the only
//! valid token), access policies/RBAC (no per-operation 403s), other
//! algorithms (RSA-OAEP, RSA1_5, AES-KW), EC/oct keys (only the `kty` label
//! can be changed), key sizes other than 2048, key creation/import/delete,
//! list/versions endpoints, `nbf`/`exp`, soft delete, throttling on its own
//! (inject it with [`FakeVault::fail_next`]), HTTP/2, exact message texts.
//! Whether the real service refuses *wrapKey* on a disabled version is not
//! certain (unwrapKey is documented to be refused with 403 KeyDisabled); the
//! fake refuses both. `GET` of a disabled version returns it with
//! `"enabled": false`.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use tokio::net::{TcpListener, TcpStream};

/// The tenant named in the challenge.
pub const TENANT: &str = "72f988bf-0000-0000-0000-000000000000";
/// The resource named in the challenge (Key Vault's audience).
pub const RESOURCE: &str = "https://vault.azure.net";

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// Empty when the request was refused before its body was read.
    pub body: Vec<u8>,
    pub status: u16,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything the client sent, for plaintext scans.
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {}?{}\n",
            self.method,
            self.path,
            self.query.as_deref().unwrap_or("")
        )
        .into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\n").as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }
}

struct KeyVersion {
    id: String,
    key: RsaPrivateKey,
    enabled: bool,
    created: i64,
}

struct KeyEntry {
    /// As created (the vault keeps the case; lookups ignore it).
    name: String,
    kty: String,
    ops: Vec<String>,
    /// Oldest first; the last is the newest.
    versions: Vec<KeyVersion>,
}

struct Inner {
    token: String,
    origin: String,
    keys: HashMap<String, KeyEntry>,
    log: Vec<LoggedRequest>,
    /// Answers for the next authorised requests, in order.
    canned: VecDeque<(u16, String)>,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake. Dropping it stops accepting connections.
pub struct FakeVault {
    addr: SocketAddr,
    ca_pem: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn new_rsa_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key generation")
}

impl FakeVault {
    /// Starts the fake on `127.0.0.1:<free port>`; `token` is the only bearer
    /// token it accepts.
    pub async fn start(token: &str) -> FakeVault {
        let (ca_pem, server_config) = tls_material();
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let inner: Shared = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            origin: format!("https://{addr}"),
            keys: HashMap::new(),
            log: Vec::new(),
            canned: VecDeque::new(),
        }));
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeVault {
            addr,
            ca_pem,
            inner,
            task,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Creates an RSA-2048 key with one enabled version (`wrapKey`,
    /// `unwrapKey`, `encrypt`, `decrypt` permitted); returns the version.
    pub fn create_key(&self, name: &str) -> String {
        let version = KeyVersion {
            id: new_version_id(),
            key: new_rsa_key(),
            enabled: true,
            created: unix_now(),
        };
        let id = version.id.clone();
        lock(&self.inner).keys.insert(
            name.to_ascii_lowercase(),
            KeyEntry {
                name: name.to_string(),
                kty: "RSA".into(),
                ops: ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
                    .map(String::from)
                    .to_vec(),
                versions: vec![version],
            },
        );
        id
    }

    /// Adds a new newest version to `name` (what the portal's "rotate" does);
    /// returns it.
    pub fn rotate(&self, name: &str) -> String {
        let key = new_rsa_key();
        let id = new_version_id();
        let mut inner = lock(&self.inner);
        let entry = inner
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .expect("rotate: no such key");
        entry.versions.push(KeyVersion {
            id: id.clone(),
            key,
            enabled: true,
            created: unix_now(),
        });
        id
    }

    /// Enables or disables one version.
    pub fn set_enabled(&self, name: &str, version: &str, enabled: bool) {
        let mut inner = lock(&self.inner);
        let entry = inner
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .expect("no such key");
        entry
            .versions
            .iter_mut()
            .find(|v| v.id == version)
            .expect("no such version")
            .enabled = enabled;
    }

    /// Replaces the permitted operations (`key_ops`) of a key.
    pub fn set_key_ops(&self, name: &str, ops: &[&str]) {
        let mut inner = lock(&self.inner);
        inner
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .expect("no such key")
            .ops = ops.iter().map(|s| s.to_string()).collect();
    }

    /// Changes the `kty` label a GET reports (the key stays RSA).
    pub fn set_kty(&self, name: &str, kty: &str) {
        let mut inner = lock(&self.inner);
        inner
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .expect("no such key")
            .kty = kty.to_string();
    }

    /// The full key id of a version.
    pub fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.url())
    }

    /// The next `n` authorised requests get `status` with a Key Vault error
    /// body (e.g. 503 to exercise the SDK's retry policy).
    pub fn fail_next(&self, n: usize, status: u16) {
        let body = error_json(
            "ServiceUnavailable",
            "The service is temporarily unavailable (injected by the test).",
        );
        let mut inner = lock(&self.inner);
        for _ in 0..n {
            inner.canned.push_back((status, body.clone()));
        }
    }

    /// The next authorised request gets exactly this answer (for malformed
    /// responses).
    pub fn respond_next(&self, status: u16, body: &str) {
        lock(&self.inner)
            .canned
            .push_back((status, body.to_string()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.inner).log.clone()
    }

    pub fn clear_log(&self) {
        lock(&self.inner).log.clear();
    }
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

fn json_response(status: u16, body: String) -> Response {
    let mut rsp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    rsp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    rsp
}

fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(status, error_json(code, message))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

fn headers_of(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn handle(State(inner): State<Shared>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let mut entry = LoggedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers_of(&parts.headers),
        body: Vec::new(),
        status: 0,
    };

    // 1. Authentication, before the body is read.
    let token = lock(&inner).token.clone();
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let authorised = auth == Some(format!("Bearer {token}").as_str());
    let rsp = if !authorised {
        let message = if auth.is_none() {
            "AKV10000: Request is missing a Bearer or PoP token."
        } else {
            "AKV10032: Invalid issuer or signature (the token is not the test token)."
        };
        let mut rsp = error(401, "Unauthorized", message);
        rsp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_str(&format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", \
                 resource=\"{RESOURCE}\""
            ))
            .expect("header"),
        );
        rsp
    } else {
        match axum::body::to_bytes(body, 64 * 1024).await {
            Err(_) => error(413, "BadParameter", "request body too large"),
            Ok(bytes) => {
                entry.body = bytes.to_vec();
                let canned = lock(&inner).canned.pop_front();
                match canned {
                    Some((status, body)) => json_response(status, body),
                    None => route(&inner, &method, &path, query.as_deref(), &bytes),
                }
            }
        }
    };
    entry.status = rsp.status().as_u16();
    lock(&inner).log.push(entry);
    rsp
}

fn route(
    inner: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Response {
    let has_api_version = query.is_some_and(|q| {
        q.split('&').any(|p| {
            p.split_once('=')
                .is_some_and(|(k, v)| k == "api-version" && !v.is_empty())
        })
    });
    if !has_api_version {
        return error(
            400,
            "BadParameter",
            "The api-version query parameter is required.",
        );
    }
    let Some(rest) = path.strip_prefix("/keys/") else {
        return error(404, "NotFound", "No such resource.");
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let (name, version, op) = match segs.as_slice() {
        [name] => (*name, "", None),
        [name, version] => (*name, *version, None),
        [name, version, op] => (*name, *version, Some(op.to_ascii_lowercase())),
        _ => return error(404, "NotFound", "No such resource."),
    };
    match (method, op.as_deref()) {
        (&Method::GET, None) => get_key(inner, name, version),
        (&Method::POST, Some("wrapkey")) => key_operation(inner, name, version, true, body),
        (&Method::POST, Some("unwrapkey")) => key_operation(inner, name, version, false, body),
        (_, None | Some("wrapkey") | Some("unwrapkey")) => {
            error(405, "MethodNotAllowed", "Method not allowed.")
        }
        _ => error(404, "NotFound", "No such resource."),
    }
}

fn not_found(name: &str) -> Response {
    error(
        404,
        "KeyNotFound",
        &format!(
            "A key with (name/id) {name} was not found in this key vault. If you recently \
             deleted this key you may be able to recover it using the correct recovery \
             command. For help resolving this issue, please see \
             https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

/// One version of a key, as a request sees it.
struct Found {
    kid: String,
    kty: String,
    ops: Vec<String>,
    key: RsaPrivateKey,
    enabled: bool,
    created: i64,
}

/// Finds `name` and `version` (empty = newest); a 404 answer if absent.
fn find(inner: &Shared, name: &str, version: &str) -> Result<Found, Box<Response>> {
    let inner = lock(inner);
    let entry = inner
        .keys
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| Box::new(not_found(name)))?;
    let v = if version.is_empty() {
        entry.versions.last()
    } else {
        entry.versions.iter().find(|v| v.id == version)
    }
    .ok_or_else(|| Box::new(not_found(&format!("{name}/{version}"))))?;
    Ok(Found {
        kid: format!("{}/keys/{}/{}", inner.origin, entry.name, v.id),
        kty: entry.kty.clone(),
        ops: entry.ops.clone(),
        key: v.key.clone(),
        enabled: v.enabled,
        created: v.created,
    })
}

fn get_key(inner: &Shared, name: &str, version: &str) -> Response {
    let Found {
        kid,
        kty,
        ops,
        key,
        enabled,
        created,
    } = match find(inner, name, version) {
        Ok(found) => found,
        Err(rsp) => return *rsp,
    };
    let body = serde_json::json!({
        "key": {
            "kid": kid,
            "kty": kty,
            "key_ops": ops,
            "n": b64url(&key.n().to_bytes_be()),
            "e": b64url(&key.e().to_bytes_be()),
        },
        "attributes": {
            "enabled": enabled,
            "created": created,
            "updated": created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
    });
    json_response(200, body.to_string())
}

fn key_operation(inner: &Shared, name: &str, version: &str, wrap: bool, body: &Bytes) -> Response {
    let op_name = if wrap { "wrapKey" } else { "unwrapKey" };
    let Found {
        kid,
        ops,
        key,
        enabled,
        ..
    } = match find(inner, name, version) {
        Ok(found) => found,
        Err(rsp) => return *rsp,
    };
    if !enabled {
        return json_response(
            403,
            serde_json::json!({"error": {
                "code": "Forbidden",
                "message": format!("Operation {op_name} is not allowed on a disabled key."),
                "innererror": {"code": "KeyDisabled"},
            }})
            .to_string(),
        );
    }
    if !ops.iter().any(|o| o == op_name) {
        return error(
            403,
            "Forbidden",
            &format!("Operation {op_name} is not permitted on this key."),
        );
    }
    #[derive(serde::Deserialize)]
    struct Params {
        alg: Option<String>,
        value: Option<String>,
    }
    let params: Params = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(400, "BadParameter", &format!("Invalid request body: {e}")),
    };
    match params.alg.as_deref() {
        Some("RSA-OAEP-256") => {}
        Some(other) => {
            return error(
                400,
                "BadParameter",
                &format!("Algorithm {other} is not supported by this fake."),
            )
        }
        None => return error(400, "BadParameter", "Property 'alg' is required."),
    }
    let Some(value) = params.value.as_deref().and_then(b64url_decode) else {
        return error(
            400,
            "BadParameter",
            "Property 'value' is missing or not base64url.",
        );
    };
    let result = if wrap {
        key.to_public_key()
            .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha2::Sha256>(), &value)
            .map_err(|e| format!("Wrap failed: {e}"))
    } else if value.len() != key.size() {
        Err(format!(
            "The ciphertext is {} bytes; the key's modulus is {} bytes.",
            value.len(),
            key.size()
        ))
    } else {
        key.decrypt(Oaep::new::<sha2::Sha256>(), &value)
            .map_err(|_| "Unwrap failed: the ciphertext could not be decrypted.".to_string())
    };
    match result {
        Ok(out) => json_response(
            200,
            serde_json::json!({"kid": kid, "value": b64url(&out)}).to_string(),
        ),
        Err(message) => error(400, "BadParameter", &message),
    }
}

/// A CA, and a server certificate for `IP:127.0.0.1` signed by it.
fn tls_material() -> (String, rustls::ServerConfig) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meetbot Key Vault fake CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");

    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key_der)
    .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), config)
}

/// TLS over a TCP listener for `axum::serve`. A failed or stalled handshake
/// is dropped and the next connection accepted.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A [`TokenCredential`] that hands out one fixed token and records the
/// scopes it was asked for.
#[derive(Debug)]
pub struct FixedToken {
    token: String,
    scopes: Mutex<Vec<Vec<String>>>,
}

impl FixedToken {
    pub fn new(token: &str) -> Arc<FixedToken> {
        Arc::new(FixedToken {
            token: token.to_string(),
            scopes: Mutex::new(Vec::new()),
        })
    }

    /// The scopes of every `get_token` call, in order.
    pub fn scopes_asked(&self) -> Vec<Vec<String>> {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(scopes.iter().map(|s| s.to_string()).collect());
        Ok(AccessToken::new(
            Secret::new(self.token.clone()),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}
