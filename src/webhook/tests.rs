use super::*;

const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const SPEC_TS: i64 = 1649367553;
const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const SPEC_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

fn spec_secret() -> WebhookSecret {
    WebhookSecret::parse(SPEC_SECRET).unwrap()
}

#[test]
fn signs_the_spec_test_vector() {
    assert_eq!(sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
    // Without the prefix, and without padding, the key is the same.
    let bare = WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    assert_eq!(bare, spec_secret());
    // Any change to id, timestamp or body changes the signature.
    assert_ne!(sign(&spec_secret(), "msg_x", SPEC_TS, SPEC_BODY), SPEC_SIG);
    assert_ne!(
        sign(&spec_secret(), SPEC_ID, SPEC_TS + 1, SPEC_BODY),
        SPEC_SIG
    );
    assert_ne!(sign(&spec_secret(), SPEC_ID, SPEC_TS, b"{}"), SPEC_SIG);
}

#[test]
fn rotation_gives_one_signature_per_secret() {
    let other = WebhookSecret::generate();
    let header = sign_all(&[other.clone(), spec_secret()], SPEC_ID, SPEC_TS, SPEC_BODY);
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1], SPEC_SIG);
    assert_eq!(parts[0], sign(&other, SPEC_ID, SPEC_TS, SPEC_BODY));
    // A receiver holding either secret accepts it.
    for s in [other, spec_secret()] {
        verify(
            &[s],
            SPEC_ID,
            "1649367553",
            &header,
            SPEC_BODY,
            SPEC_TS + 10,
            Duration::from_secs(300),
        )
        .unwrap();
    }
}

#[test]
fn verify_rejects_tampering_and_stale_timestamps() {
    let s = [spec_secret()];
    let tol = Duration::from_secs(300);
    let ok = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
        verify(&s, id, ts, sig, body, now, tol)
    };
    ok(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, SPEC_TS).unwrap();
    assert_eq!(
        ok(
            SPEC_ID,
            "1649367553",
            SPEC_SIG,
            b"{\"email\":\"x\"}",
            SPEC_TS
        ),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok("msg_other", "1649367553", SPEC_SIG, SPEC_BODY, SPEC_TS),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok(SPEC_ID, "1649367553", "v2,abc v1,!!!", SPEC_BODY, SPEC_TS),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, SPEC_TS + 301),
        Err(VerifyError::Stale)
    );
    assert_eq!(
        ok(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, SPEC_TS - 301),
        Err(VerifyError::Stale)
    );
    assert_eq!(
        ok(SPEC_ID, "soon", SPEC_SIG, SPEC_BODY, SPEC_TS),
        Err(VerifyError::BadTimestamp)
    );
}

#[test]
fn secrets_are_checked_and_never_shown() {
    assert_eq!(WebhookSecret::parse("whsec_!!!"), Err(SecretError::Base64));
    assert_eq!(
        WebhookSecret::parse("whsec_c2hvcnQ="),
        Err(SecretError::Length(5))
    );
    let long = format!("whsec_{}", B64.encode([7u8; 65]));
    assert_eq!(WebhookSecret::parse(&long), Err(SecretError::Length(65)));
    assert!(WebhookSecret::parse(&format!("whsec_{}", B64.encode([7u8; 64]))).is_ok());
    assert_eq!(
        SecretError::Length(5).to_string(),
        "webhook secret decodes to 5 bytes; it must be 24 to 64 bytes"
    );
    let s = spec_secret();
    assert_eq!(format!("{s:?}"), "WebhookSecret(<secret>)");
    assert_eq!(s.to_whsec().expose(), SPEC_SECRET);
    let g = WebhookSecret::generate();
    assert_eq!(WebhookSecret::parse(g.to_whsec().expose()).unwrap(), g);
    assert_ne!(g, WebhookSecret::generate());
}

#[test]
fn event_body_has_type_timestamp_data() {
    let mut e = WebhookEvent::status(
        message_id("bot-1", 3),
        serde_json::json!({"bot_id": "bot-1", "status": "in_call_recording"}),
    );
    e.timestamp = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(
        e.body(),
        r#"{"type":"bot.status","timestamp":"2023-11-14T22:13:20.123Z","data":{"bot_id":"bot-1","status":"in_call_recording"}}"#
    );
    assert!(!format!("{e:?}").contains("in_call_recording"));
}

#[test]
fn message_ids_are_stable_and_distinct() {
    let a = message_id("bot-1", 1);
    assert_eq!(a, message_id("bot-1", 1));
    assert_ne!(a, message_id("bot-1", 2));
    assert_ne!(a, message_id("bot-2", 1));
    assert_ne!(message_id("bot-1", 11), message_id("bot-11", 1));
    assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
}

fn status(code: u16) -> Outcome {
    Outcome::Status {
        code,
        retry_after: None,
    }
}

#[test]
fn decision_table() {
    let s = Schedule::standard();
    let mid = 0.5; // no jitter
    let secs = Duration::from_secs;
    let retry = |attempt, after| Decision::Retry { attempt, after };
    let cases: Vec<(u32, Outcome, Decision)> = vec![
        (1, status(200), Decision::Delivered),
        (1, status(204), Decision::Delivered),
        (7, status(299), Decision::Delivered),
        (1, status(410), Decision::Gone),
        (1, status(500), retry(2, secs(5))),
        (2, status(500), retry(3, secs(300))),
        (3, status(404), retry(4, secs(1800))),
        (4, status(302), retry(5, secs(7200))),
        (5, status(301), retry(6, secs(5 * 3600))),
        (6, status(400), retry(7, secs(10 * 3600))),
        (7, Outcome::Timeout, retry(8, secs(14 * 3600))),
        (8, Outcome::Connect, retry(9, secs(20 * 3600))),
        (
            9,
            Outcome::Failed("transport error"),
            retry(10, secs(24 * 3600)),
        ),
        (10, status(500), Decision::GiveUp(GiveUp::Exhausted)),
        (1, status(100), retry(2, secs(5))),
        // Retry-After on 429/503 pushes the next attempt out, never in.
        (
            1,
            Outcome::Status {
                code: 429,
                retry_after: Some(secs(60)),
            },
            retry(2, secs(60)),
        ),
        (
            2,
            Outcome::Status {
                code: 503,
                retry_after: Some(secs(60)),
            },
            retry(3, secs(300)),
        ),
        (
            1,
            Outcome::Status {
                code: 503,
                retry_after: Some(secs(10 * 24 * 3600)),
            },
            retry(2, MAX_RETRY_AFTER),
        ),
        // …and only there.
        (
            1,
            Outcome::Status {
                code: 500,
                retry_after: Some(secs(60)),
            },
            retry(2, secs(5)),
        ),
        (
            1,
            Outcome::Refused(UrlError::NoAddresses {
                host: "h.example".into(),
            }),
            retry(2, secs(5)),
        ),
        (
            1,
            Outcome::Refused(UrlError::InsecureWebhook),
            Decision::GiveUp(GiveUp::Rejected(UrlError::InsecureWebhook)),
        ),
    ];
    for (attempt, outcome, want) in cases {
        assert_eq!(
            s.decide(attempt, &outcome, mid),
            want,
            "attempt {attempt} {outcome:?}"
        );
    }
    // Truncated schedules give up sooner.
    let short = Schedule::standard().truncated(3);
    assert_eq!(short.attempts(), 3);
    assert_eq!(short.decide(2, &status(500), mid), retry(3, secs(300)));
    assert_eq!(
        short.decide(3, &status(500), mid),
        Decision::GiveUp(GiveUp::Exhausted)
    );
}

#[test]
fn jitter_stays_within_bounds() {
    let s = Schedule::standard();
    let Decision::Retry { after: lo, .. } = s.decide(2, &status(500), 0.0) else {
        panic!()
    };
    let Decision::Retry { after: hi, .. } = s.decide(2, &status(500), 0.999_999) else {
        panic!()
    };
    assert_eq!(lo, Duration::from_secs(270));
    assert!(
        hi > Duration::from_secs(329) && hi <= Duration::from_secs(330),
        "{hi:?}"
    );
    let mut nan = Schedule::standard();
    nan.jitter = f64::NAN;
    assert_eq!(
        nan.decide(2, &status(500), f64::INFINITY),
        Decision::Retry {
            attempt: 3,
            after: Duration::from_secs(300)
        }
    );
    for u in [-1.0, 2.0, f64::NAN] {
        let Decision::Retry { after, .. } = s.decide(2, &status(500), u) else {
            panic!()
        };
        assert!(
            after >= lo && after <= Duration::from_secs(330),
            "{u}: {after:?}"
        );
    }
}

#[test]
fn retry_after_forms() {
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("-5", now), None);
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("", now), None);
}

#[test]
fn pending_delivery_round_trips_without_secrets() {
    let d = Delivery::new(
        &WebhookEvent::status(
            message_id("bot-9", 1),
            serde_json::json!({"status": "done"}),
        ),
        "bot-9",
        Pii::new("https://hooks.example.com/x?token=abc".into()),
        "tenant-a/webhook",
        Arc::from(vec![spec_secret()]),
    );
    let json = serde_json::to_string(&d.pending).unwrap();
    assert!(!json.contains("C2FVsBQ"), "{json}");
    assert!(
        json.contains("\"secret_ref\":\"tenant-a/webhook\""),
        "{json}"
    );
    let back: PendingDelivery = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d.pending);
    let dbg = format!("{d:?}");
    for leak in ["hooks.example", "token=abc", "\"done\"", "C2FVsBQ"] {
        assert!(!dbg.contains(leak), "{dbg}");
    }
}

#[test]
fn outcomes_and_reports_never_print_a_host_or_address() {
    let refused = UrlError::BlockedAddress {
        host: "hooks.inside.example".into(),
        verb: "resolves to",
        addr: "10.1.2.3".parse().expect("an address"),
        reason: "private",
    };
    let texts = [
        format!("{:?}", Outcome::Refused(refused.clone())),
        format!("{:?}", GiveUp::Rejected(refused.clone())),
        format!(
            "{:?}",
            ReportResult::GaveUp(GiveUp::Rejected(refused.clone()))
        ),
        format!("{:?}", Decision::GiveUp(GiveUp::Rejected(refused.clone()))),
        ReportResult::GaveUp(GiveUp::Rejected(refused)).label(),
    ];
    for t in &texts {
        assert!(
            !t.contains("hooks.inside") && !t.contains("10.1.2.3"),
            "{t}"
        );
        assert!(t.contains("url_blocked_address"), "{t}");
    }
}
