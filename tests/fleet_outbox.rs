//! The webhook outbox end to end against a real Azurite: a worker whose
//! webhook receiver is down hands its undelivered status messages to the
//! outbox queue (no secrets in them); once the receiver is back, `meetbot
//! serve` delivers every one with the webhook-id the worker gave it, each
//! verified by the reference Standard Webhooks library (Python), and the
//! outbox ends empty.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;
use meetbot::webhook::{message_id, PendingDelivery};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SAID: &str = "Good morning everyone. Today we will review the budget for the new office.";
const STATUSES: [&str; 6] = [
    "joining",
    "in_call_recording",
    "call_ended",
    "transcript_committed",
    "recording_deleted",
    "done",
];

/// Messages in a queue, visible or not (the service's approximate count;
/// exact on Azurite).
fn queue_count(rt: &tokio::runtime::Runtime, az: &Azurite, queue: &str) -> u64 {
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/{queue}?comp=metadata&{}",
                az.queue_url(),
                Azurite::sas()
            ))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.headers()["x-ms-approximate-messages-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    })
}

#[test]
fn undelivered_webhooks_go_to_the_outbox_and_serve_delivers_them_with_the_same_ids() {
    let az = Azurite::start();
    let mut ws = Workspace::new();
    let tenants = ws.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[tenants.acme]\ntoken_sha256 = [{:?}]\n[tenants.acme.webhook_secrets]\nmain = {SECRET:?}\n",
            meetbot::fleet::tenants::token_hash_hex("token-acme")
        ),
    )
    .unwrap();
    // The receiver's port: nothing listens there until later.
    let hook_port = free_port();
    let serve_port = free_port();
    ws.extra_config = format!(
        "{}\n[urls]\nallow = [\"127.0.0.1:*\"]\nallow_replay = true\n[tenants]\nfile = {:?}\n\
         [serve]\nlisten = \"127.0.0.1:{serve_port}\"\nmetrics_listen = \"\"\n[worker]\nlisten = \"\"\n\
         [webhooks]\nschedule = [\"0s\", \"1s\", \"1s\", \"2s\", \"2s\"]\nin_process_attempts = 1\ndrain = \"2s\"\n\
         [queue]\nwait = \"2s\"\nlease = \"30s\"\n",
        az.config_toml(),
        tenants.display().to_string()
    );
    let wav = ws.path().join("said.wav");
    espeak("en-us", SAID, &wav);
    let manifest = ws.manifest(&[("Host", &wav, 0)], "fast");
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks/meetbot");
    let job = serde_json::json!({
        "version": 1, "bot_id": "b-out", "tenant": "acme", "meeting_id": "m-out",
        "meeting_url": format!("replay:{}", manifest.display()),
        "webhook": {"url": hook_url, "secret_ref": "main"}
    })
    .to_string();

    // 1. The worker finishes its meeting although no webhook got through.
    let t0 = Instant::now();
    let mut c = ws.command();
    c.arg("worker").env("MEETBOT_JOB", &job);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.statuses(), STATUSES, "{}", run.describe());
    eprintln!("worker took {:?}", t0.elapsed());

    // 2. Every status message is in the outbox: plain data, no secret.
    // A direct job is attempt 1, so the stream is "b-out/1".
    let stream = "b-out/1";
    let want: BTreeMap<String, (u64, &str)> = STATUSES
        .iter()
        .enumerate()
        .map(|(i, s)| (message_id(stream, i as u64 + 1), (i as u64 + 1, *s)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = az.config();
    let outbox = az.env().queue(&cfg, "meetbot-webhooks").unwrap();
    assert_eq!(queue_count(&rt, &az, "meetbot-webhooks"), 6);
    let mut seen: BTreeMap<String, PendingDelivery> = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "outbox held only {:?}",
            seen.keys()
        );
        // Leased for 1 s only: serve takes them again later.
        match rt.block_on(outbox.receive(Duration::from_secs(1))).unwrap() {
            Some(m) => {
                assert!(
                    !m.text.contains(SECRET) && !m.text.contains(&SECRET[6..]),
                    "secret in the outbox: {}",
                    m.text
                );
                let p: PendingDelivery =
                    serde_json::from_str(&m.text).unwrap_or_else(|e| panic!("{e}: {}", m.text));
                seen.insert(p.id.clone(), p);
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>()
    );
    for (id, p) in &seen {
        let (seq, status) = want[id];
        assert_eq!(p.stream, stream);
        assert_eq!(p.secret_ref, "acme/main");
        assert_eq!(p.url.expose(), &hook_url);
        assert_eq!(p.event_type, "bot.status");
        // The first message was tried once by the worker; the rest wait behind it.
        assert_eq!(p.attempt, if seq == 1 { 2 } else { 1 }, "{id}");
        let body: serde_json::Value = serde_json::from_str(p.body.expose()).unwrap();
        assert_eq!(body["data"]["status"], status);
        assert_eq!(body["data"]["sequence"], seq);
        assert_eq!(body["data"]["bot_id"], "b-out");
    }

    // 3. The receiver comes back on the same port, and serve delivers the outbox.
    let hooks = WebhookReceiver::start_on(SECRET, hook_port);
    assert_eq!(hooks.url(), hook_url);
    let mut c = ws.command();
    c.arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let _serve = KillOnDrop(c.spawn().unwrap());
    wait_port(serve_port, Duration::from_secs(30));
    let got = hooks.wait_for(6, Duration::from_secs(60));
    assert_eq!(got.len(), 6, "{got:#?}");
    let mut delivered = BTreeSet::new();
    for h in &got {
        assert_eq!(h["ok"], true, "verification failed: {h}");
        assert_eq!(h["type"], "bot.status");
        let id = h["id"].as_str().unwrap().to_string();
        let (seq, status) = *want
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected webhook-id {id}: {h}"));
        let body: serde_json::Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["data"]["status"], status, "{h}");
        assert_eq!(body["data"]["sequence"], seq, "{h}");
        // Byte for byte the body the worker built.
        assert_eq!(h["body"].as_str().unwrap(), seen[&id].body.expose());
        assert!(delivered.insert(id), "delivered twice: {h}");
    }
    // 4. The outbox ends empty (counting leased messages too), and nothing
    // more arrives.
    let start = Instant::now();
    while queue_count(&rt, &az, "meetbot-webhooks") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "outbox not emptied"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hooks.received().len(), 6);
}
