//! Webhook delivery against real HTTP receivers on 127.0.0.1: signatures, retries with a
//! stable `webhook-id`, 410, redirects not followed, timeouts, SSRF refusal before any
//! connection, ordering and drain, and verification by the reference Python library
//! (`standardwebhooks`, installed by `scripts/test` into `$MEETBOT_PYENV`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meetbot::netguard::{StaticResolver, UrlError, UrlPolicy};
use meetbot::pii::Pii;
use meetbot::webhook::{
    message_id, sign, verify, Delivery, DeliveryReport, DispatcherOptions, GiveUp, Outcome,
    ReportResult, Schedule, WebhookDispatcher, WebhookEvent, WebhookSecret, WebhookSender,
};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What the receiver answers, in order; after the script, 200.
#[derive(Clone)]
enum Reply {
    Status(u16),
    Redirect(String),
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Seen {
    id: String,
    ts: String,
    sig: String,
    user_agent: String,
    content_type: String,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/hooks/meetbot?token=t0k3n",
            self.addr.port()
        )
    }
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Vec<Reply>>>,
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    s.seen.lock().unwrap().push(Seen {
        id: h("webhook-id"),
        ts: h("webhook-timestamp"),
        sig: h("webhook-signature"),
        user_agent: h("user-agent"),
        content_type: h("content-type"),
        body: body.to_vec(),
    });
    let next = {
        let mut script = s.script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    match next {
        None => StatusCode::OK.into_response(),
        Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap().into_response(),
        Some(Reply::Redirect(to)) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Some(Reply::Slow(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

async fn receiver(script: Vec<Reply>) -> Receiver {
    let shared = Shared {
        seen: Arc::default(),
        script: Arc::new(Mutex::new(script)),
    };
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(handle))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        addr,
        seen: shared.seen,
    }
}

fn loopback_policy() -> UrlPolicy {
    UrlPolicy::new(&["127.0.0.1:*"]).unwrap()
}

fn secrets() -> Arc<[WebhookSecret]> {
    Arc::from(vec![WebhookSecret::parse(SECRET).unwrap()])
}

fn event(stream: &str, seq: u64) -> WebhookEvent {
    WebhookEvent::status(
        message_id(stream, seq),
        serde_json::json!({"bot_id": stream, "seq": seq, "status": "in_call_recording"}),
    )
}

fn delivery(url: &str, stream: &str, seq: u64) -> Delivery {
    Delivery::new(
        &event(stream, seq),
        stream,
        Pii::new(url.to_string()),
        "test-secret",
        secrets(),
    )
}

fn fast(attempts: usize, in_process: u32) -> DispatcherOptions {
    let mut delays = vec![Duration::ZERO];
    delays.extend(std::iter::repeat_n(
        Duration::from_millis(100),
        attempts - 1,
    ));
    DispatcherOptions {
        schedule: Schedule {
            delays,
            jitter: 0.0,
        },
        in_process_attempts: in_process,
    }
}

async fn next_report(rx: &mut mpsc::UnboundedReceiver<DeliveryReport>) -> DeliveryReport {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery report within 20 s")
        .expect("the dispatcher is running")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assert_signed(s: &Seen) {
    let key = WebhookSecret::parse(SECRET).unwrap();
    verify(
        std::slice::from_ref(&key),
        &s.id,
        &s.ts,
        &s.sig,
        &s.body,
        now_secs(),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}: {s:?}"));
    assert_eq!(s.sig, sign(&key, &s.id, s.ts.parse().unwrap(), &s.body));
}

#[tokio::test]
async fn delivered_first_time_signed_with_headers() {
    let r = receiver(vec![]).await;
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(3, 3));
    let ev = event("bot-a", 1);
    d.enqueue(Delivery::new(
        &ev,
        "bot-a",
        Pii::new(r.url()),
        "ref",
        secrets(),
    ))
    .unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!(rep.result, ReportResult::Delivered);
    assert_eq!((rep.attempts, rep.id.as_str()), (1, ev.id.as_str()));
    let seen = r.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.id, ev.id);
    assert_eq!(
        s.body,
        ev.body().as_bytes(),
        "the body is exactly what was signed"
    );
    assert_eq!(s.content_type, "application/json");
    assert!(s.user_agent.starts_with("meetbot/"), "{}", s.user_agent);
    assert!((now_secs() - s.ts.parse::<i64>().unwrap()).abs() <= 5);
    assert_signed(s);
    let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(body["type"], "bot.status");
    assert_eq!(body["data"]["bot_id"], "bot-a");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(d.drain(Duration::from_secs(1)).await.is_empty());
}

#[tokio::test]
async fn retried_after_500_with_the_same_id() {
    let r = receiver(vec![Reply::Status(500)]).await;
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(3, 3));
    d.enqueue(delivery(&r.url(), "bot-b", 1)).unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!((rep.result, rep.attempts), (ReportResult::Delivered, 2));
    let seen = r.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].id, seen[1].id);
    assert_eq!(seen[0].body, seen[1].body);
    seen.iter().for_each(assert_signed);
}

#[tokio::test]
async fn gone_stops_and_disables_the_endpoint() {
    let r = receiver(vec![Reply::Status(410)]).await;
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(5, 5));
    d.enqueue(delivery(&r.url(), "bot-c", 1)).unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!((rep.result, rep.attempts), (ReportResult::Gone, 1));
    d.enqueue(delivery(&r.url(), "bot-c", 2)).unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!((rep.result, rep.attempts), (ReportResult::Gone, 0));
    assert_eq!(r.seen().len(), 1, "nothing is sent to a disabled endpoint");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = receiver(vec![]).await;
    let r = receiver(vec![
        Reply::Redirect(target.url()),
        Reply::Redirect(target.url()),
    ])
    .await;
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(2, 2));
    d.enqueue(delivery(&r.url(), "bot-d", 1)).unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!(rep.result, ReportResult::GaveUp(GiveUp::Exhausted));
    assert_eq!(rep.attempts, 2);
    assert_eq!(r.seen().len(), 2);
    assert!(
        target.seen().is_empty(),
        "the redirect target was never contacted"
    );
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried() {
    let slow = Reply::Slow(Duration::from_secs(3));
    let r = receiver(vec![slow.clone(), slow]).await;
    let sender = WebhookSender::new(loopback_policy()).with_timeout(Duration::from_millis(300));
    let d = delivery(&r.url(), "bot-e", 1);
    assert_eq!(sender.attempt(&d).await, Outcome::Timeout);
    let (disp, mut reports) = WebhookDispatcher::spawn(sender, fast(3, 3));
    disp.enqueue(d).unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!((rep.result, rep.attempts), (ReportResult::Delivered, 2));
    assert_eq!(r.seen().len(), 3);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_without_connecting() {
    let r = receiver(vec![]).await;
    let port = r.addr.port();
    let resolver = StaticResolver::new().with("hooks.example.com", &[IpAddr::from([127, 0, 0, 1])]);
    let policy = UrlPolicy::new::<&str>(&[])
        .unwrap()
        .with_resolver(Arc::new(resolver));
    let sender = WebhookSender::new(policy);
    for url in [
        format!("https://hooks.example.com:{port}/x"),
        format!("http://hooks.example.com:{port}/x"),
        format!("http://127.0.0.1:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://localhost:{port}/x"),
    ] {
        match sender.attempt(&delivery(&url, "bot-f", 1)).await {
            Outcome::Refused(e) => assert!(
                matches!(
                    e,
                    UrlError::BlockedAddress { .. } | UrlError::BlockedName { .. }
                ),
                "{url}: {e}"
            ),
            other => panic!("{url}: {other:?}"),
        }
    }
    // Through the dispatcher: a transient refusal is retried, never sent.
    let (d, mut reports) = WebhookDispatcher::spawn(sender, fast(2, 2));
    d.enqueue(delivery(
        &format!("https://hooks.example.com:{port}/x"),
        "bot-f",
        1,
    ))
    .unwrap();
    let rep = next_report(&mut reports).await;
    assert_eq!(rep.result, ReportResult::GaveUp(GiveUp::Exhausted));
    assert!(r.seen().is_empty(), "the receiver saw {:?}", r.seen());
}

#[tokio::test]
async fn connections_are_pinned_to_the_vetted_addresses() {
    // The name exists only in the test resolver: the request can only reach the receiver
    // through the addresses netguard vetted, never through the system's DNS.
    let r = receiver(vec![]).await;
    let resolver =
        StaticResolver::new().with("receiver.pinned.example", &[IpAddr::from([127, 0, 0, 1])]);
    let policy = UrlPolicy::new(&["receiver.pinned.example:*"])
        .unwrap()
        .with_resolver(Arc::new(resolver));
    let url = format!("http://receiver.pinned.example:{}/x", r.addr.port());
    let out = WebhookSender::new(policy)
        .attempt(&delivery(&url, "bot-g", 1))
        .await;
    assert_eq!(
        out,
        Outcome::Status {
            code: 200,
            retry_after: None
        }
    );
    assert_eq!(r.seen().len(), 1);
}

#[tokio::test]
async fn one_stream_in_order_and_drain_returns_the_rest() {
    // In order when all succeed.
    let ok = receiver(vec![]).await;
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(3, 3));
    for seq in 1..=5 {
        d.enqueue(delivery(&ok.url(), "bot-h", seq)).unwrap();
    }
    for _ in 1..=5 {
        assert_eq!(
            next_report(&mut reports).await.result,
            ReportResult::Delivered
        );
    }
    let ids: Vec<String> = ok.seen().into_iter().map(|s| s.id).collect();
    let want: Vec<String> = (1..=5).map(|seq| message_id("bot-h", seq)).collect();
    assert_eq!(ids, want);
    assert!(d.drain(Duration::from_secs(1)).await.is_empty());

    // A failing head holds its stream back; drain hands everything over, in order.
    let failing = receiver(vec![Reply::Status(503); 10]).await;
    let mut opts = fast(4, 2);
    opts.schedule.delays[2] = Duration::from_secs(3600);
    let (d, _reports) = WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), opts);
    for seq in 1..=3 {
        d.enqueue(delivery(&failing.url(), "bot-i", seq)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = std::time::Instant::now();
    let left = d.drain(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "nothing was due: drain returns at once"
    );
    let seen = failing.seen();
    assert_eq!(seen.len(), 2, "two in-process attempts of the head only");
    assert!(seen.iter().all(|s| s.id == message_id("bot-i", 1)));
    assert_eq!(left.len(), 3);
    assert_eq!(
        left.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        (1..=3)
            .map(|seq| message_id("bot-i", seq))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        left.iter().map(|p| p.attempt).collect::<Vec<_>>(),
        vec![3, 1, 1]
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        left[0].due_unix_ms > now_ms + 3_500_000,
        "head due in about an hour"
    );
    assert!(
        left[1].due_unix_ms >= left[0].due_unix_ms && left[2].due_unix_ms >= left[1].due_unix_ms
    );
    assert_eq!(left[0].secret_ref, "test-secret");
    assert_eq!(left[0].url.expose(), &failing.url());
    let json = serde_json::to_string(&left).unwrap();
    assert!(!json.contains("C2FVsBQ"), "no secret in outbox records");
}

/// The venv with `standardwebhooks` (see `install_webhook_verifier` in scripts/lib.sh).
fn python() -> PathBuf {
    let venv = std::env::var_os("MEETBOT_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("meetbot/pyenv")
        });
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import standardwebhooks: run `. scripts/lib.sh; install_webhook_verifier` \
         (scripts/test does) or point MEETBOT_PYENV at a venv that has it",
        py.display()
    );
    py
}

#[tokio::test]
async fn the_reference_python_library_verifies_our_signatures() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("verified.jsonl");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/webhook_receiver.py"
    );
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .arg(SECRET)
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python receiver");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the receiver starts within 20 s")
        .unwrap()
        .expect("the receiver prints its port");
    let port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
    let url = format!("http://127.0.0.1:{port}/webhooks?tenant=acme");

    // Three events through the dispatcher, one with non-ASCII data and two secrets (rotation).
    let rotated: Arc<[WebhookSecret]> = Arc::from(vec![
        WebhookSecret::generate(),
        WebhookSecret::parse(SECRET).unwrap(),
    ]);
    let (d, mut reports) =
        WebhookDispatcher::spawn(WebhookSender::new(loopback_policy()), fast(2, 2));
    let mut ids = Vec::new();
    for (seq, keys) in [(1, secrets()), (2, rotated), (3, secrets())] {
        let mut ev = event("bot-py", seq);
        if seq == 2 {
            ev.data =
                Pii::new(serde_json::json!({"bot_id": "bot-py", "text": "Grüße, 世界 \"quoted\""}));
        }
        ids.push(ev.id.clone());
        d.enqueue(Delivery::new(
            &ev,
            "bot-py",
            Pii::new(url.clone()),
            "ref",
            keys,
        ))
        .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(
            next_report(&mut reports).await.result,
            ReportResult::Delivered
        );
    }

    // A tampered body with the original signature must fail the reference verification.
    let ev = event("bot-py", 4);
    let ts = now_secs();
    let sig = sign(
        &WebhookSecret::parse(SECRET).unwrap(),
        &ev.id,
        ts,
        ev.body().as_bytes(),
    );
    let tampered = ev.body().replace("in_call_recording", "done");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    drop(child);

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{records:?}");
    for (rec, id) in records.iter().zip(&ids) {
        assert_eq!(rec["id"], id.as_str());
        assert_eq!(rec["ok"], true, "{rec}");
        assert_eq!(rec["type"], "bot.status");
    }
    assert_eq!(records[3]["ok"], false, "{}", records[3]);
    assert_eq!(
        records[3]["error"],
        "WebhookVerificationError: No matching signature found"
    );
}
