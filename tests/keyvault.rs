//! The Azure Key Vault key provider through the real SDK client
//! (`azure_security_keyvault_keys` 1.0) and meetbot's real transport, against
//! an HTTPS fake of the Key Vault keys REST API on 127.0.0.1
//! (`tests/support/keyvault_fake.rs`; Key Vault has no local emulator, so
//! these tests do not touch Azure).

#[path = "support/keyvault_fake.rs"]
mod keyvault_fake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyvault_fake::{FakeVault, FixedToken};
use meetbot::azure::keyvault::{KeyVaultProvider, ALG, KEYVAULT_SCOPE, PROVIDER};
use meetbot::core::media::{OpusPacket, ParticipantId};
use meetbot::recording::{
    open_recording, read_header, DataKey, KeyError, KeyProvider, Recording, RecordingConfig,
    RecordingMeta, WrappedKey, MIN_CHUNK_BYTES,
};

const TOKEN: &str = "fake-vault-token-0123456789";

fn provider_for(url: &str, ca_pem: &str, cred: Arc<FixedToken>, key: &str) -> KeyVaultProvider {
    let options =
        meetbot::azure::client_options(Some(ca_pem.as_bytes()), meetbot::azure::short_retry())
            .expect("client options");
    // verify_challenge_resource = false: 127.0.0.1 is not under vault.azure.net.
    KeyVaultProvider::new(url, key, cred, options, false).expect("provider")
}

struct Setup {
    fake: FakeVault,
    cred: Arc<FixedToken>,
    provider: KeyVaultProvider,
    v1: String,
}

async fn setup() -> Setup {
    let fake = FakeVault::start(TOKEN).await;
    let v1 = fake.create_key("kek");
    let cred = FixedToken::new(TOKEN);
    let provider = provider_for(&fake.url(), fake.ca_pem(), cred.clone(), "kek");
    Setup {
        fake,
        cred,
        provider,
        v1,
    }
}

/// Every encoding of the key a careless client could put on the wire.
fn encodings(key: &[u8]) -> Vec<Vec<u8>> {
    vec![
        key.to_vec(),
        hex::encode(key).into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key)
            .into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(key)
            .into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn query_has_api_version(q: Option<&str>) -> bool {
    q.is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("api-version=") && p.len() > 12)
    })
}

#[tokio::test]
async fn round_trip_through_the_sdk_stores_the_version_and_keeps_the_key_off_other_requests() {
    let s = setup().await;
    let info = s.provider.probe().await.expect("probe");
    assert_eq!(info.version, s.v1);
    assert_eq!(info.key_id, s.fake.kid("kek", &s.v1));
    assert_eq!((info.key_type.as_str(), info.modulus_bits), ("RSA", 2048));

    let dek = DataKey::generate();
    let wrapped = s.provider.wrap(&dek).await.expect("wrap");
    assert_eq!(wrapped.provider, PROVIDER);
    assert_eq!(wrapped.alg, ALG);
    assert_eq!(
        wrapped.key_id,
        format!("{}/keys/kek/{}", s.fake.url(), s.v1)
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&wrapped.wrapped)
        .expect("standard padded base64");
    assert_eq!(raw.len(), 256, "an RSA-2048 ciphertext");
    let back = s.provider.unwrap(&wrapped).await.expect("unwrap");
    assert_eq!(back.as_bytes(), dek.as_bytes());

    // The credential was only ever asked for Key Vault's scope.
    let scopes = s.cred.scopes_asked();
    assert!(!scopes.is_empty());
    assert!(
        scopes.iter().all(|s| s == &[KEYVAULT_SCOPE.to_string()]),
        "{scopes:?}"
    );

    let log = s.fake.requests();
    let summary: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    // Challenge first: no token, no body, 401; then the same GET with the token.
    assert_eq!(
        summary[0],
        ("GET".into(), "/keys/kek/".into(), 401),
        "{summary:?}"
    );
    assert!(log[0].header("authorization").is_none() && log[0].body.is_empty());
    assert_eq!(
        summary[1],
        ("GET".into(), "/keys/kek/".into(), 200),
        "{summary:?}"
    );
    // Wrap addressed the newest version (empty segment), unwrap the stored one.
    assert!(
        summary.contains(&("POST".into(), "/keys/kek//wrapkey".into(), 200)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("POST".into(), format!("/keys/kek/{}/unwrapkey", s.v1), 200)),
        "{summary:?}"
    );
    assert!(log
        .iter()
        .all(|r| query_has_api_version(r.query.as_deref())));
    assert!(log
        .iter()
        .filter(|r| r.status == 200)
        .all(|r| r.header("authorization") == Some(&*format!("Bearer {TOKEN}"))));
    // The data key appears (base64url) only in the wrapkey body, which the
    // vault RSA-encrypts; never in a URL, a header, or any other request.
    for r in &log {
        let is_wrap_body = r.method == "POST" && r.path.ends_with("/wrapkey") && r.status == 200;
        for enc in encodings(dek.as_bytes()) {
            let everything_but_wrap_body = if is_wrap_body {
                let mut head = r.all_bytes();
                head.truncate(head.len() - r.body.len());
                head
            } else {
                r.all_bytes()
            };
            assert!(
                !contains(&everything_but_wrap_body, &enc),
                "data key found in {} {}",
                r.method,
                r.path
            );
        }
    }
    let wrap_body = &log
        .iter()
        .find(|r| r.path.ends_with("/wrapkey") && r.status == 200)
        .expect("wrap request")
        .body;
    let body: serde_json::Value = serde_json::from_slice(wrap_body).expect("json");
    assert_eq!(body["alg"], "RSA-OAEP-256");
    assert_eq!(
        body["value"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(dek.as_bytes())
    );
}

#[tokio::test]
async fn rotation_new_wraps_use_the_newest_version_and_old_wrapped_keys_still_unwrap() {
    let s = setup().await;
    let dek1 = DataKey::generate();
    let w1 = s.provider.wrap(&dek1).await.expect("wrap v1");
    assert!(w1.key_id.ends_with(&format!("/keys/kek/{}", s.v1)));

    let v2 = s.fake.rotate("kek");
    assert_ne!(v2, s.v1);
    assert_eq!(s.provider.probe().await.expect("probe").version, v2);
    let dek2 = DataKey::generate();
    let w2 = s.provider.wrap(&dek2).await.expect("wrap v2");
    assert!(
        w2.key_id.ends_with(&format!("/keys/kek/{v2}")),
        "{}",
        w2.key_id
    );

    s.fake.clear_log();
    assert_eq!(
        s.provider.unwrap(&w1).await.expect("v1").as_bytes(),
        dek1.as_bytes()
    );
    assert_eq!(
        s.provider.unwrap(&w2).await.expect("v2").as_bytes(),
        dek2.as_bytes()
    );
    let paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec![
            format!("/keys/kek/{}/unwrapkey", s.v1),
            format!("/keys/kek/{v2}/unwrapkey")
        ]
    );

    // Retiring v1 (disabling it) makes its wrapped keys unreadable, not v2's.
    s.fake.set_enabled("kek", &s.v1, false);
    let err = s.provider.unwrap(&w1).await.expect_err("disabled v1");
    assert!(matches!(err, KeyError::KeyDisabled { .. }), "{err:?}");
    assert!(
        err.to_string().contains("disabled") && err.to_string().contains(&w1.key_id),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(
        s.provider.unwrap(&w2).await.expect("v2").as_bytes(),
        dek2.as_bytes()
    );
}

fn packet(i: u32) -> OpusPacket {
    OpusPacket {
        seq: i as u16,
        at_ms: u64::from(i) * 20,
        payload: bytes::Bytes::from((0..80).map(|j| (i * 3 + j) as u8).collect::<Vec<u8>>()),
    }
}

#[tokio::test]
async fn a_recording_under_key_vault_replays_reopens_from_its_header_and_is_destroyed() {
    let s = setup().await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecordingConfig {
        spool_dir: tmp.path().join("spool"),
        memory_budget_bytes: 2 * MIN_CHUNK_BYTES,
        chunk_bytes: MIN_CHUNK_BYTES,
    };
    // As bot.rs does: a fresh key, wrapped by the provider, consumed by the recording.
    let dek = DataKey::generate();
    let dek_copy = *dek.as_bytes();
    let wrapped = s.provider.wrap(&dek).await.expect("wrap");
    let meta = RecordingMeta {
        meeting_id: "meeting-kv".into(),
        tenant: "tenant-kv".into(),
    };
    let mut rec = Recording::create(&cfg, dek, wrapped.clone(), meta).expect("create");
    let mut sent = Vec::new();
    for i in 0..200 {
        let pid = ParticipantId(format!("feed-{}", i % 3));
        rec.append(&pid, &packet(i)).expect("append");
        sent.push((pid, packet(i)));
    }
    rec.flush().expect("flush");
    assert!(rec.stats().spilled_chunks > 0, "{:?}", rec.stats());

    let same = |got: Vec<(ParticipantId, OpusPacket)>| {
        got.len() == sent.len()
            && got.iter().zip(&sent).all(|((pa, a), (pb, b))| {
                pa == pb && a.seq == b.seq && a.at_ms == b.at_ms && a.payload == b.payload
            })
    };
    let replayed: Vec<_> = rec
        .replay()
        .expect("replay")
        .collect::<Result<_, _>>()
        .expect("decrypts");
    assert!(same(replayed));

    // The header holds the wrapped key with its version, never the key.
    let header = read_header(rec.dir()).expect("header");
    assert_eq!(header.wrapped_key, wrapped);
    let header_text = std::fs::read(rec.dir().join("header.json")).unwrap();
    for enc in encodings(&dek_copy) {
        assert!(!contains(&header_text, &enc));
    }
    // A later process reads the recording back with only the header and the vault.
    let dek_again = s
        .provider
        .unwrap(&header.wrapped_key)
        .await
        .expect("unwrap");
    assert_eq!(dek_again.as_bytes(), &dek_copy);
    let spilled: Vec<_> = open_recording(rec.dir(), &dek_again)
        .expect("open")
        .collect::<Result<_, _>>()
        .expect("decrypts from disk");
    assert!(!spilled.is_empty() && spilled.len() < sent.len());
    assert!(sent
        .iter()
        .zip(&spilled)
        .all(|((pa, a), (pb, b))| pa == pb && a.payload == b.payload));

    let dir = rec.dir().to_path_buf();
    let report = rec.destroy().expect("destroy");
    assert_eq!(report.meeting_id, "meeting-kv");
    assert_eq!(report.method, "crypto-shred(key-vault-wrapped)+unlink");
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_wrong_token_is_a_clear_access_error() {
    let s = setup().await;
    let bad = FixedToken::new("not-the-token");
    let p = provider_for(&s.fake.url(), s.fake.ca_pem(), bad.clone(), "kek");
    let err = p.wrap(&DataKey::generate()).await.expect_err("wrong token");
    assert!(matches!(err, KeyError::VaultAccessDenied { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains(&s.fake.url()) && msg.contains("refused access"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-token"), "the token leaked: {msg}");
    assert!(!err.is_transient());
    let err = p.probe().await.expect_err("probe");
    assert!(matches!(err, KeyError::VaultAccessDenied { .. }), "{err:?}");
    // It was asked for the right scope; the wrong token never got a 200.
    assert!(bad.scopes_asked().iter().all(|s| s == &[KEYVAULT_SCOPE]));
    assert!(s.fake.requests().iter().all(|r| r.status == 401));
}

#[tokio::test]
async fn an_unknown_key_or_version_is_a_clear_not_found_error() {
    let s = setup().await;
    let p = provider_for(
        &s.fake.url(),
        s.fake.ca_pem(),
        s.cred.clone(),
        "no-such-key",
    );
    let err = p.probe().await.expect_err("unknown key");
    assert!(matches!(err, KeyError::KeyNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-key") && msg.contains("not found"),
        "{msg}"
    );
    assert!(matches!(
        p.wrap(&DataKey::generate()).await,
        Err(KeyError::KeyNotFound { .. })
    ));

    // A wrapped key naming a version the vault does not have (deleted, or a
    // different vault under the same name).
    let mut w = s.provider.wrap(&DataKey::generate()).await.unwrap();
    w.key_id = s.fake.kid("kek", "0123456789abcdef0123456789abcdef");
    let err = s.provider.unwrap(&w).await.expect_err("unknown version");
    assert!(matches!(err, KeyError::KeyNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn tampered_wrapped_keys_and_malformed_answers_are_errors_not_panics() {
    let s = setup().await;
    let good = s.provider.wrap(&DataKey::generate()).await.expect("wrap");
    let std_b64 = base64::engine::general_purpose::STANDARD;

    // A flipped ciphertext bit: the vault cannot decrypt it.
    let mut raw = std_b64.decode(&good.wrapped).unwrap();
    raw[100] ^= 0x01;
    let mut t = good.clone();
    t.wrapped = std_b64.encode(&raw);
    let err = s.provider.unwrap(&t).await.expect_err("tampered");
    assert!(matches!(err, KeyError::Unwrap), "{err:?}");

    // Refused locally, without a request.
    s.fake.clear_log();
    let cases: Vec<(WrappedKey, &str)> = vec![
        (
            WrappedKey {
                wrapped: std_b64.encode(&raw[..255]),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                wrapped: "!!!not base64".into(),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                wrapped: "A".repeat(100_000),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                wrapped: String::new(),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                key_id: format!("{}/keys/kek", s.fake.url()),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                key_id: format!("{}/keys/kek/..%2F..%2Fsecrets", s.fake.url()),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                key_id: "not a url".into(),
                ..good.clone()
            },
            "Malformed",
        ),
        (
            WrappedKey {
                provider: "local-file".into(),
                ..good.clone()
            },
            "WrongProvider",
        ),
        (
            WrappedKey {
                alg: "RSA1_5".into(),
                ..good.clone()
            },
            "WrongProvider",
        ),
    ];
    for (w, want) in cases {
        let err = s.provider.unwrap(&w).await.expect_err(want);
        assert!(format!("{err:?}").starts_with(want), "{want}: {err:?}");
    }
    assert!(s.fake.requests().is_empty(), "{:?}", s.fake.requests());

    // Malformed answers from the vault.
    let kid = good.key_id.clone();
    let b64url = |n: usize| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; n]);
    let unwrap_answers = [
        format!(r#"{{"kid":"{kid}","value":"{}"}}"#, b64url(31)),
        format!(r#"{{"kid":"{kid}","value":"{}"}}"#, b64url(33)),
        format!(r#"{{"kid":"{kid}"}}"#),
        format!(
            r#"{{"kid":"https://evil.vault.azure.net/keys/kek/v","value":"{}"}}"#,
            b64url(32)
        ),
        "not json at all".to_string(),
        r#"{"kid":5}"#.to_string(),
    ];
    for answer in &unwrap_answers {
        s.fake.respond_next(200, answer);
        let err = s.provider.unwrap(&good).await.expect_err(answer);
        assert!(
            matches!(err, KeyError::VaultResponse { .. }),
            "{answer}: {err:?}"
        );
    }
    let version = good.key_id.rsplit('/').next().unwrap();
    let wrap_answers = [
        format!(r#"{{"kid":"{kid}","value":"{}"}}"#, b64url(100)),
        format!(
            r#"{{"kid":"{}/keys/kek","value":"{}"}}"#,
            s.fake.url(),
            b64url(256)
        ),
        format!(
            r#"{{"kid":"{}/keys/other/{version}","value":"{}"}}"#,
            s.fake.url(),
            b64url(256)
        ),
        format!(r#"{{"value":"{}"}}"#, b64url(256)),
    ];
    for answer in &wrap_answers {
        s.fake.respond_next(200, answer);
        let err = s
            .provider
            .wrap(&DataKey::generate())
            .await
            .expect_err(answer);
        assert!(
            matches!(err, KeyError::VaultResponse { .. }),
            "{answer}: {err:?}"
        );
    }
    // An error status with a body that is not Key Vault's error shape.
    s.fake.respond_next(400, "<html>bad gateway-ish</html>");
    let err = s
        .provider
        .wrap(&DataKey::generate())
        .await
        .expect_err("400");
    assert!(matches!(err, KeyError::VaultRejected { .. }), "{err:?}");
    // The provider still works afterwards.
    s.provider.unwrap(&good).await.expect("still fine");
}

#[tokio::test]
async fn a_vault_that_is_down_or_silent_fails_within_a_bounded_time() {
    let s = setup().await;
    // A closed port: connection refused, retried twice by the SDK policy.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = provider_for(
        &format!("https://127.0.0.1:{port}"),
        s.fake.ca_pem(),
        s.cred.clone(),
        "kek",
    );
    let started = Instant::now();
    let err = p.wrap(&DataKey::generate()).await.expect_err("down");
    let took = started.elapsed();
    assert!(matches!(err, KeyError::VaultUnavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("vault down: failed after {took:?}: {err}");

    // A listener that accepts and never answers: the provider's deadline.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let p = provider_for(
        &format!("https://{addr}"),
        s.fake.ca_pem(),
        s.cred.clone(),
        "kek",
    )
    .with_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let err = p.probe().await.expect_err("silent");
    let took = started.elapsed();
    assert!(matches!(err, KeyError::VaultUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    hold.abort();
}

#[tokio::test]
async fn transient_failures_are_retried_by_the_sdk_policy_then_reported() {
    let s = setup().await;
    s.provider.probe().await.expect("warm up the challenge");
    s.fake.clear_log();
    // Two 503s: short_retry() retries twice, the third attempt succeeds.
    s.fake.fail_next(2, 503);
    let dek = DataKey::generate();
    let w = s.provider.wrap(&dek).await.expect("wrap after retries");
    let statuses: Vec<u16> = s.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    // Three: retries exhausted, reported as transient.
    s.fake.fail_next(3, 503);
    let err = s.provider.unwrap(&w).await.expect_err("still failing");
    assert!(matches!(err, KeyError::VaultUnavailable { .. }), "{err:?}");
    assert!(
        err.is_transient() && err.to_string().contains("503"),
        "{err}"
    );
    // Not retried: a permanent error is one request.
    s.fake.clear_log();
    s.fake.respond_next(
        403,
        r#"{"error":{"code":"Forbidden","message":"The user, group or application does not have keys unwrapKey permission."}}"#,
    );
    let err = s.provider.unwrap(&w).await.expect_err("403");
    assert!(matches!(err, KeyError::VaultAccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("unwrapKey permission"), "{err}");
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn a_key_id_from_another_vault_or_key_is_refused_without_a_request() {
    let s = setup().await;
    let good = s.provider.wrap(&DataKey::generate()).await.expect("wrap");
    let version = good.key_id.rsplit('/').next().unwrap().to_string();
    let port = s.fake.addr().port();
    s.fake.clear_log();
    for kid in [
        format!("https://other.vault.azure.net/keys/kek/{version}"),
        format!("https://127.0.0.2:{port}/keys/kek/{version}"),
        format!(
            "https://127.0.0.1:{}/keys/kek/{version}",
            port.wrapping_add(1)
        ),
        format!("http://127.0.0.1:{port}/keys/kek/{version}"),
        format!("https://127.0.0.1:{port}/keys/kek2/{version}"),
    ] {
        let w = WrappedKey {
            key_id: kid.clone(),
            ..good.clone()
        };
        let err = s.provider.unwrap(&w).await.expect_err(&kid);
        assert!(matches!(err, KeyError::WrongKek { .. }), "{kid}: {err:?}");
        assert!(err.to_string().contains(&kid), "{err}");
    }
    assert!(s.fake.requests().is_empty(), "{:?}", s.fake.requests());
    // Names are case-insensitive in Key Vault: KEK is the same key.
    let w = WrappedKey {
        key_id: format!("https://127.0.0.1:{port}/keys/KEK/{version}"),
        ..good.clone()
    };
    s.provider.unwrap(&w).await.expect("same key, other case");
}

#[tokio::test]
async fn probe_refuses_keys_that_cannot_wrap() {
    let s = setup().await;
    s.fake
        .set_key_ops("kek", &["encrypt", "decrypt", "wrapKey"]);
    let err = s.provider.probe().await.expect_err("no unwrapKey");
    assert!(matches!(err, KeyError::KeyUnsuitable { .. }), "{err:?}");
    assert!(err.to_string().contains("unwrapKey"), "{err}");

    s.fake.set_key_ops("kek", &["wrapKey", "unwrapKey"]);
    s.fake.set_kty("kek", "EC");
    let err = s.provider.probe().await.expect_err("EC");
    assert!(matches!(err, KeyError::KeyUnsuitable { .. }), "{err:?}");
    assert!(err.to_string().contains("RSA"), "{err}");

    s.fake.set_kty("kek", "RSA-HSM");
    assert_eq!(s.provider.probe().await.expect("HSM").key_type, "RSA-HSM");

    s.fake.set_enabled("kek", &s.v1, false);
    let err = s.provider.probe().await.expect_err("disabled");
    assert!(matches!(err, KeyError::KeyDisabled { .. }), "{err:?}");
    // The fake (like the service for unwrapKey) refuses to use it.
    let err = s
        .provider
        .wrap(&DataKey::generate())
        .await
        .expect_err("wrap");
    assert!(matches!(err, KeyError::KeyDisabled { .. }), "{err:?}");
}

#[tokio::test]
async fn challenge_verification_on_refuses_a_host_outside_the_vault_domain() {
    // Production keeps verify_challenge_resource = true: the SDK then sends no
    // token to a host that is not under the challenge's domain.
    let s = setup().await;
    let options = meetbot::azure::client_options(
        Some(s.fake.ca_pem().as_bytes()),
        meetbot::azure::short_retry(),
    )
    .unwrap();
    let p = KeyVaultProvider::new(&s.fake.url(), "kek", s.cred.clone(), options, true).unwrap();
    let err = p
        .probe()
        .await
        .expect_err("127.0.0.1 is not *.vault.azure.net");
    assert!(err.to_string().contains("challenge"), "{err}");
    assert!(!err.is_transient());
    assert!(s.cred.scopes_asked().is_empty(), "a token was requested");
    assert!(s
        .fake
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let s = setup().await;
    let other = FakeVault::start(TOKEN).await; // another CA
    let p = provider_for(&s.fake.url(), other.ca_pem(), s.cred.clone(), "kek");
    let err = p.probe().await.expect_err("untrusted");
    assert!(matches!(err, KeyError::VaultUnavailable { .. }), "{err:?}");
    assert!(s.fake.requests().is_empty());
}

/// Wrap + unwrap round trips against the fake over one warm connection
/// (figures printed with `--no-capture`).
#[tokio::test]
async fn round_trip_latency_against_the_fake() {
    let s = setup().await;
    s.provider.probe().await.expect("warm up");
    let n = 30;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let dek = DataKey::generate();
        let started = Instant::now();
        let w = s.provider.wrap(&dek).await.expect("wrap");
        let back = s.provider.unwrap(&w).await.expect("unwrap");
        times.push(started.elapsed());
        assert_eq!(back.as_bytes(), dek.as_bytes());
    }
    times.sort();
    let median = times[n / 2];
    eprintln!(
        "wrap+unwrap round trip against the fake: median {median:?}, min {:?}, max {:?} (n={n})",
        times[0],
        times[n - 1]
    );
    assert!(median < Duration::from_millis(500), "{median:?}");
}
