//! `meetbot serve` (the control API) end to end against a real Azurite:
//! POST /v1/bots → job on the queue → `meetbot worker` runs a replay meeting
//! → transcript blob in that tenant's container, receipt, signed webhooks;
//! tenant isolation; scheduled joins; stopping bots; bad input; metrics only
//! on their private listener; `Idempotency-Key` across two replicas.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN_A: &str = "token-acme-3b1f9c";
const TOKEN_B: &str = "token-globex-77e0d2";
const SAID: &str = "Good morning everyone. Today we will review the budget for the new office.";

struct Api {
    _serve: KillOnDrop,
    base: String,
    /// `serve.metrics_listen`.
    metrics_base: String,
    ws: Workspace,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

fn token_hash(t: &str) -> String {
    meetbot::fleet::tenants::token_hash_hex(t)
}

impl Api {
    /// `meetbot serve` on a free port; `allow_local` lets meetings and
    /// webhooks use 127.0.0.1 (the test's Azurite-side receiver and replay files).
    fn start(az: &Azurite, allow_local: bool, extra: &str) -> Api {
        Api::start_with(az, allow_local, extra, "")
    }

    /// `serve_extra`: more `[serve]` settings.
    fn start_with(az: &Azurite, allow_local: bool, extra: &str, serve_extra: &str) -> Api {
        let mut ws = Workspace::new();
        let tenants = ws.path().join("tenants.toml");
        std::fs::write(
            &tenants,
            format!(
                "[tenants.acme]\ntoken_sha256 = [{:?}]\n[tenants.acme.webhook_secrets]\nmain = {SECRET:?}\n\
                 [tenants.globex]\ntoken_sha256 = [{:?}]\n",
                token_hash(TOKEN_A),
                token_hash(TOKEN_B)
            ),
        )
        .unwrap();
        let port = free_port();
        let metrics_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let urls = if allow_local {
            "[urls]\nallow = [\"127.0.0.1:*\"]\nallow_replay = true\n"
        } else {
            "[urls]\nallow = []\nallow_replay = false\n"
        };
        ws.extra_config = format!(
            "{}\n{urls}[tenants]\nfile = {:?}\n[serve]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\nmax_body_bytes = 4096\n{serve_extra}\n\
             [worker]\nlisten = \"\"\nstop_poll = \"500ms\"\n\
             [webhooks]\nschedule = [\"0s\", \"1s\", \"2s\"]\ndrain = \"10s\"\n[queue]\nwait = \"2s\"\nlease = \"30s\"\n{extra}",
            az.config_toml(),
            tenants.display().to_string()
        );
        let mut c = ws.command();
        c.arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let serve = KillOnDrop(c.spawn().unwrap());
        wait_port(port, Duration::from_secs(30));
        wait_port(metrics_port, Duration::from_secs(30));
        Api {
            _serve: serve,
            base: format!("http://127.0.0.1:{port}"),
            metrics_base: format!("http://127.0.0.1:{metrics_port}"),
            ws,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r)
    }

    fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        self.rt.block_on(async {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    fn worker(&self) -> Run {
        let mut c = self.ws.command();
        c.arg("worker").env_remove("MEETBOT_JOB");
        Run::from(c.output().unwrap())
    }

    fn replay_url(&self, pace: &str, secs_of_silence_after: u32) -> String {
        let wav = self.ws.path().join("said.wav");
        espeak("en-us", SAID, &wav);
        let mut parts = vec![wav];
        if secs_of_silence_after > 0 {
            let s = self.ws.path().join("quiet.wav");
            silence(secs_of_silence_after as f64, &s);
            parts.push(s);
        }
        let all = self.ws.path().join("host.wav");
        concat(&parts, &all);
        format!(
            "replay:{}",
            self.ws.manifest(&[("Host", &all, 0)], pace).display()
        )
    }
}

#[test]
fn a_bot_sent_through_the_api_ends_as_a_transcript_in_its_tenant_with_signed_webhooks() {
    let az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    let api = Api::start(&az, true, "");
    let url = api.replay_url("fast", 0);
    let (st, bot) = api.call(
        "POST",
        "/v1/bots",
        Some(TOKEN_A),
        Some(
            json!({"meeting_url": url, "meeting_id": "weekly-1", "bot_name": "Acme Notes",
                    "webhook": {"url": hooks.url(), "secret_ref": "main"}, "retention_days": 7}),
        ),
    );
    assert_eq!(st, 201, "{bot}");
    assert_eq!(bot["status"], "queued");
    assert_eq!(bot["tenant"], "acme");
    let id = bot["id"].as_str().unwrap().to_string();

    // Tenant B can neither see nor stop tenant A's bot.
    assert_eq!(
        api.call("GET", &format!("/v1/bots/{id}"), Some(TOKEN_B), None)
            .0,
        404
    );
    assert_eq!(
        api.call("DELETE", &format!("/v1/bots/{id}"), Some(TOKEN_B), None)
            .0,
        404
    );
    let (_, list_b) = api.call("GET", "/v1/bots", Some(TOKEN_B), None);
    assert_eq!(list_b["bots"].as_array().unwrap().len(), 0, "{list_b}");

    let run = api.worker();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.statuses().last().unwrap(), "done", "{}", run.describe());
    let (st, done) = api.call("GET", &format!("/v1/bots/{id}"), Some(TOKEN_A), None);
    assert_eq!(st, 200);
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["attempts"], 1);
    let sha = done["transcript"]["sha256"].as_str().unwrap();
    let loc = done["transcript"]["location"].as_str().unwrap();
    let cfg = az.config();
    let store = az.env().blob_store(&cfg).unwrap();
    assert!(
        loc.contains(&store.container_name("acme")) && loc.ends_with("/weekly-1.json"),
        "{loc}"
    );
    let blob = api
        .rt
        .block_on(store.read("acme", "weekly-1.json"))
        .unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&blob)), sha);
    let doc: Value = serde_json::from_slice(&blob).unwrap();
    assert!(wer(SAID, &speaker_text(&doc, "Host")) < 0.35, "{doc}");
    // Retention: 7 days from the commit.
    let listed = api.rt.block_on(store.list_all()).unwrap();
    let exp = listed
        .iter()
        .find(|b| b.name == "weekly-1.json")
        .unwrap()
        .expires_at
        .unwrap();
    let days = exp
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs_f64()
        / 86400.0;
    assert!((6.9..7.01).contains(&days), "{days}");
    // The receipt is in the tenant's container and on the record.
    let rid = done["recording_id"].as_str().unwrap();
    // Appended once (several status lines carry the receipt), as acme's first.
    let seq = done["receipt"]["chain_seq"].as_u64().expect("in the chain");
    assert_eq!(seq, 1, "{done}");
    let name = format!("audit/{seq:020}.json");
    assert!(done["receipt"]["location"]
        .as_str()
        .unwrap()
        .ends_with(&name));
    let entry: Value =
        serde_json::from_slice(&api.rt.block_on(store.read("acme", &name)).unwrap()).unwrap();
    assert_eq!(entry["receipt"]["recording_id"], rid);
    // Nothing for globex.
    assert!(listed
        .iter()
        .all(|b| b.container == store.container_name("acme")));

    let got = hooks.wait_for(6, Duration::from_secs(10));
    let statuses: Vec<String> = got
        .iter()
        .map(|h| {
            assert_eq!(h["ok"], true, "{h}");
            let b: Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
            assert_eq!(b["data"]["bot_id"], id.as_str());
            b["data"]["status"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "joining",
            "in_call_recording",
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ]
    );

    // Health, metrics and the OpenAPI document.
    assert_eq!(api.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(api.call("GET", "/readyz", None, None).0, 200);
    // /metrics names tenants: never on the API port, only on its own listener.
    let (st, body) = api.call("GET", "/metrics", None, None);
    assert_eq!(st, 404, "{body}");
    assert!(!body.to_string().contains("acme"), "{body}");
    let (st, body) = api.call("GET", "/metrics", Some(TOKEN_A), None);
    assert_eq!(st, 404, "{body}");
    let (st, m) = api.send(api.http.get(format!("{}/metrics", api.metrics_base)));
    assert_eq!(st, 200);
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains("meetbot_bots_created_total{tenant=\"acme\",scheduled=\"false\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "meetbot_http_requests_total{method=\"GET\",route=\"/v1/bots/{id}\",status=\"404\"} 1"
        ),
        "{m}"
    );
    let (st, spec) = api.call("GET", "/v1/openapi.json", None, None);
    assert_eq!(st, 200);
    assert_eq!(
        spec,
        serde_json::from_str::<Value>(meetbot::fleet::api::OPENAPI).unwrap()
    );
}

#[test]
fn a_scheduled_join_waits_and_stops_are_honoured() {
    let az = Azurite::start();
    let api = Api::start(&az, true, "");
    // Scheduled 8 s ahead: the queue keeps it invisible until then.
    let at =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(8))
            .to_string();
    let url = api.replay_url("fast", 0);
    let (st, bot) = api.call(
        "POST",
        "/v1/bots",
        Some(TOKEN_A),
        Some(json!({"meeting_url": url, "join_at": at})),
    );
    assert_eq!(st, 201, "{bot}");
    assert_eq!(bot["status"], "scheduled");
    assert_eq!(bot["join_at"], at.as_str());
    let early = api.worker();
    assert_eq!(early.statuses(), ["skipped"], "{}", early.describe());
    let id = bot["id"].as_str().unwrap();
    assert_eq!(
        api.call("GET", &format!("/v1/bots/{id}"), Some(TOKEN_A), None)
            .1["status"],
        "scheduled"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let run = loop {
        let r = api.worker();
        if r.statuses().last().map(String::as_str) != Some("skipped") || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(run.statuses().last().unwrap(), "done", "{}", run.describe());
    let (_, rec) = api.call("GET", &format!("/v1/bots/{id}"), Some(TOKEN_A), None);
    let joined = humantime::parse_rfc3339(rec["updated_at"].as_str().unwrap()).unwrap();
    assert!(
        joined >= humantime::parse_rfc3339(&at).unwrap(),
        "ran before join_at: {rec}"
    );

    // A bot stopped before it joins is cancelled; its job is then skipped.
    let (_, b2) = api.call(
        "POST",
        "/v1/bots",
        Some(TOKEN_A),
        Some(json!({"meeting_url": url})),
    );
    let id2 = b2["id"].as_str().unwrap();
    let (st, stopped) = api.call("DELETE", &format!("/v1/bots/{id2}"), Some(TOKEN_A), None);
    assert_eq!(st, 202, "{stopped}");
    assert_eq!(stopped["status"], "cancelled");
    let skipped = api.worker();
    assert_eq!(skipped.statuses(), ["skipped"], "{}", skipped.describe());
    assert_eq!(
        api.call("DELETE", &format!("/v1/bots/{id2}"), Some(TOKEN_A), None)
            .0,
        200
    );

    // A bot in a meeting leaves when stopped, and still commits and deletes.
    let long = api.replay_url("realtime", 60);
    let (_, b3) = api.call(
        "POST",
        "/v1/bots",
        Some(TOKEN_A),
        Some(json!({"meeting_url": long})),
    );
    let id3 = b3["id"].as_str().unwrap().to_string();
    let mut c = api.ws.command();
    c.arg("worker")
        .env_remove("MEETBOT_JOB")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = Instant::now();
    loop {
        let (_, r) = api.call("GET", &format!("/v1/bots/{id3}"), Some(TOKEN_A), None);
        if r["status"] == "in_call_recording" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        api.call("DELETE", &format!("/v1/bots/{id3}"), Some(TOKEN_A), None)
            .0,
        202
    );
    let run = wait_with_timeout(child, Duration::from_secs(60));
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "left long before the meeting's end: {:?}",
        t0.elapsed()
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let st = run.statuses();
    assert_eq!(
        &st[st.len() - 4..],
        [
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ],
        "{}",
        run.describe()
    );
    let (_, r) = api.call("GET", &format!("/v1/bots/{id3}"), Some(TOKEN_A), None);
    assert_eq!(r["status"], "done");
    assert_eq!(r["stop_requested"], true);
}

#[test]
fn bad_requests_get_clear_json_errors_and_nothing_is_enqueued() {
    let az = Azurite::start();
    let api = Api::start(&az, false, "");
    let ok_url = "janus+wss://1.1.1.1:8989/1234";
    let post = |token: Option<&str>, body: Value| api.call("POST", "/v1/bots", token, Some(body));
    let expect = |(st, body): (u16, Value), want: u16, code: &str| {
        assert_eq!(st, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    };
    expect(
        post(None, json!({"meeting_url": ok_url})),
        401,
        "unauthorized",
    );
    expect(
        post(Some("nope"), json!({"meeting_url": ok_url})),
        401,
        "unauthorized",
    );
    expect(
        api.send(
            api.http
                .post(format!("{}/v1/bots", api.base))
                .header("authorization", format!("Basic {TOKEN_A}"))
                .json(&json!({})),
        ),
        401,
        "unauthorized",
    );
    expect(api.call("GET", "/v1/bots", None, None), 401, "unauthorized");
    let raw = |ct: &str, body: &str| {
        api.send(
            api.http
                .post(format!("{}/v1/bots", api.base))
                .bearer_auth(TOKEN_A)
                .header("content-type", ct)
                .body(body.to_string()),
        )
    };
    expect(
        raw("application/json", "{\"meeting_url\": "),
        400,
        "invalid_json",
    );
    expect(raw("application/json", "[]"), 400, "invalid_json");
    expect(raw("text/plain", "{}"), 415, "unsupported_media_type");
    expect(
        raw(
            "application/json",
            &format!("{{\"meeting_url\": \"{}\"}}", "x".repeat(5000)),
        ),
        413,
        "too_large",
    );
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "colour": "red"}),
        ),
        400,
        "invalid_json",
    );
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "tenant": "globex"}),
        ),
        400,
        "invalid_json",
    );
    expect(post(Some(TOKEN_A), json!({})), 400, "invalid_json");
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "meeting_id": "../x"}),
        ),
        400,
        "invalid_request",
    );
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "retention_days": 0}),
        ),
        400,
        "invalid_request",
    );
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "join_at": "soon"}),
        ),
        400,
        "invalid_request",
    );
    let far = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(8 * 86400),
    )
    .to_string();
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "join_at": far}),
        ),
        400,
        "invalid_request",
    );
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "webhook": {"url": "https://1.1.1.1/h", "secret_ref": "other"}}),
        ),
        400,
        "invalid_request",
    );
    for hostile in [
        "janus+ws://127.0.0.1:8188/1234",
        "janus+ws://127.1:8188/1234",
        "janus+ws://2130706433:8188/1234",
        "janus+ws://0x7f000001:8188/1234",
        "janus+ws://017700000001:8188/1234",
        "janus+ws://localhost:8188/1234",
        "janus+ws://LOCALHOST.:8188/1234",
        "janus+ws://api.localhost:8188/1234",
        "janus+ws://vm:8188/1234",
        "janus+ws://[::1]:8188/1234",
        "janus+ws://[::ffff:127.0.0.1]:8188/1234",
        "janus+ws://[::ffff:a9fe:a9fe]/1234",
        "janus+wss://169.254.169.254/1234",
        "janus+wss://metadata.google.internal/1234",
        "janus+wss://168.63.129.16/1234",
        "janus+wss://10.1.2.3/1234",
        "janus+wss://172.16.0.1/1234",
        "janus+wss://192.168.1.1/1234",
        "janus+wss://100.64.0.1/1234",
        "janus+wss://0.0.0.0/1234",
        "janus+wss://[fd00::1]/1234",
        "janus+wss://[fe80::1]/1234",
        "janus+wss://user:pw@1.1.1.1/1234",
        "https://zoom.us/j/123",
        "file:///etc/passwd",
        "replay:/etc/passwd",
        "gopher://1.1.1.1:70/",
        "not a url",
    ] {
        let (st, body) = post(Some(TOKEN_A), json!({"meeting_url": hostile}));
        assert_eq!(st, 400, "{hostile}: {body}");
        assert!(
            body["error"]["code"].as_str().unwrap().starts_with("url_"),
            "{hostile}: {body}"
        );
        let (st, body) = post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "webhook": {"url": hostile.replacen("janus+wss", "https", 1).replacen("janus+ws", "http", 1), "secret_ref": "main"}}),
        );
        assert_eq!(st, 400, "webhook {hostile}: {body}");
    }
    expect(
        post(
            Some(TOKEN_A),
            json!({"meeting_url": ok_url, "webhook": {"url": "http://1.1.1.1/h", "secret_ref": "main"}}),
        ),
        400,
        "url_insecure",
    );
    expect(
        api.call("GET", "/v1/bots/..%2Fx", Some(TOKEN_A), None),
        404,
        "not_found",
    );
    expect(
        api.call("PUT", "/v1/bots", Some(TOKEN_A), None),
        405,
        "method_not_allowed",
    );
    expect(
        api.call("GET", "/v2/everything", Some(TOKEN_A), None),
        404,
        "not_found",
    );

    // None of it reached the queue or the records.
    let (_, list) = api.call("GET", "/v1/bots", Some(TOKEN_A), None);
    assert_eq!(list["bots"].as_array().unwrap().len(), 0, "{list}");
    let cfg = az.config();
    let q = az.env().queue(&cfg, "meetbot-jobs").unwrap();
    assert!(api
        .rt
        .block_on(q.receive(Duration::from_secs(1)))
        .unwrap()
        .is_none());
    // And a valid request does.
    let (st, b) = post(Some(TOKEN_A), json!({"meeting_url": ok_url}));
    assert_eq!(st, 201, "{b}");
    let m = api
        .rt
        .block_on(q.receive(Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    let job: Value = serde_json::from_str(&m.text).unwrap();
    assert_eq!(
        (job["tenant"].as_str(), job["bot_id"].as_str()),
        (Some("acme"), b["id"].as_str())
    );
}

/// Messages in the job queue, visible or not (exact on Azurite).
fn queued_jobs(api: &Api, az: &Azurite) -> u64 {
    api.rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/meetbot-jobs?comp=metadata&{}",
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

/// POST /v1/bots with a raw body and headers: (status, body, Idempotent-Replayed, Location).
fn post_keyed(
    api: &Api,
    token: &str,
    keys: &[&[u8]],
    body: &str,
) -> (u16, Value, bool, Option<String>) {
    let mut r = api
        .http
        .post(format!("{}/v1/bots", api.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    for k in keys {
        r = r.header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(k).unwrap(),
        );
    }
    api.rt.block_on(async {
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let loc = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            replayed,
            loc,
        )
    })
}

#[test]
fn an_idempotency_key_sends_one_bot_even_from_concurrent_requests_on_two_replicas() {
    let az = Azurite::start();
    let a = Api::start(&az, false, "");
    let b = Api::start(&az, false, "");
    let body = json!({"meeting_url": "janus+wss://1.1.1.1:8989/1234", "meeting_id": "standup"});

    // 12 identical requests at once, alternately to each replica.
    let results: Vec<(u16, Value, bool)> = a.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..12 {
            let base = if i % 2 == 0 { &a.base } else { &b.base };
            let req = a
                .http
                .post(format!("{base}/v1/bots"))
                .bearer_auth(TOKEN_A)
                .header("idempotency-key", "retry-7f3a.2026-11-23")
                .json(&body);
            set.spawn(async move {
                let r = req.send().await.unwrap();
                let st = r.status().as_u16();
                let replayed = r.headers().contains_key("idempotent-replayed");
                (st, r.json::<Value>().await.unwrap(), replayed)
            });
        }
        set.join_all().await
    });
    let id = results[0].1["id"].as_str().unwrap().to_string();
    for (st, bot, _) in &results {
        assert_eq!(*st, 201, "{bot}");
        assert_eq!(bot["id"], id.as_str(), "{results:?}");
        assert_eq!(bot["meeting_id"], "standup");
    }
    assert_eq!(
        results.iter().filter(|r| !r.2).count(),
        1,
        "exactly one response created the bot: {results:?}"
    );
    // One bot, one job, and the job is that bot's.
    let (_, list) = a.call("GET", "/v1/bots", Some(TOKEN_A), None);
    assert_eq!(list["bots"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(queued_jobs(&a, &az), 1);
    let cfg = az.config();
    let q = az.env().queue(&cfg, "meetbot-jobs").unwrap();
    let m =
        a.rt.block_on(q.receive(Duration::from_secs(60)))
            .unwrap()
            .unwrap();
    let job: Value = serde_json::from_str(&m.text).unwrap();
    assert_eq!(job["bot_id"], id.as_str());

    // A later retry (key order and spacing do not matter; the quoted
    // structured-field form names the same key) gets the same bot.
    let same = r#"{ "meeting_id": "standup",  "meeting_url": "janus+wss://1.1.1.1:8989/1234" }"#;
    for key in [
        &b"retry-7f3a.2026-11-23"[..],
        &b"\"retry-7f3a.2026-11-23\""[..],
    ] {
        let (st, bot, replayed, loc) = post_keyed(&b, TOKEN_A, &[key], same);
        assert_eq!((st, replayed), (201, true), "{bot}");
        assert_eq!(bot["id"], id.as_str());
        assert_eq!(loc.as_deref(), Some(format!("/v1/bots/{id}").as_str()));
    }
    // The same key with another body: 409, nothing created.
    let other = r#"{"meeting_url": "janus+wss://1.1.1.1:8989/1234", "meeting_id": "retro"}"#;
    let (st, err, _, _) = post_keyed(&a, TOKEN_A, &[b"retry-7f3a.2026-11-23"], other);
    assert_eq!(st, 409, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_key_reused", "{err}");
    // Keys are per tenant: globex's same key and body is globex's own bot.
    let (st, g, replayed, _) = post_keyed(&a, TOKEN_B, &[b"retry-7f3a.2026-11-23"], same);
    assert_eq!((st, replayed), (201, false), "{g}");
    assert_ne!(g["id"], id.as_str());
    assert_eq!(g["tenant"], "globex");
    // Malformed keys: 400, nothing created.
    let long = "k".repeat(256);
    for keys in [
        vec![&b""[..]],
        vec![&b"\"\""[..]],
        vec![&b"two words"[..]],
        vec![&b"caf\xc3\xa9"[..]],
        vec![&b"\"unterminated"[..]],
        vec![long.as_bytes()],
        vec![&b"k1"[..], &b"k2"[..]],
    ] {
        let (st, err, _, _) = post_keyed(&a, TOKEN_A, &keys, same);
        assert_eq!(st, 400, "{keys:?}: {err}");
        assert_eq!(err["error"]["code"], "invalid_idempotency_key", "{err}");
    }
    let (st, ok, _, _) = post_keyed(&a, TOKEN_A, &["k".repeat(255).as_bytes()], same);
    assert_eq!(st, 201, "{ok}");
    // A request refused as invalid does not use up its key.
    let hostile = r#"{"meeting_url": "janus+wss://10.1.2.3/1234"}"#;
    let (st, _, _, _) = post_keyed(&a, TOKEN_A, &[b"fix-and-retry"], hostile);
    assert_eq!(st, 400);
    let (st, fixed, replayed, _) = post_keyed(&a, TOKEN_A, &[b"fix-and-retry"], same);
    assert_eq!((st, replayed), (201, false), "{fixed}");
    // Two acme bots with keys, one globex bot; the 409 and 400s added nothing.
    let (_, list) = a.call("GET", "/v1/bots", Some(TOKEN_A), None);
    assert_eq!(list["bots"].as_array().unwrap().len(), 3, "{list}");
    assert_eq!(queued_jobs(&a, &az), 4);

    // After the window, a key may stand for a new request.
    let short = Api::start_with(&az, false, "", "idempotency_window = \"1s\"");
    let (st, first, _, _) = post_keyed(&short, TOKEN_A, &[b"short-lived"], same);
    assert_eq!(st, 201, "{first}");
    std::thread::sleep(Duration::from_millis(2500));
    let (st, later, replayed, _) = post_keyed(&short, TOKEN_A, &[b"short-lived"], other);
    assert_eq!((st, replayed), (201, false), "{later}");
    assert_ne!(later["id"], first["id"]);
    assert_eq!(later["meeting_id"], "retro");
}

#[allow(dead_code)]
fn unused(_: Command) {}
