//! `meetbot worker` end to end against a real Azurite: a replay meeting
//! through the real binary and Whisper model, the transcript in the tenant's
//! container, the receipt beside it, the bot record, and webhooks verified by
//! the reference Standard Webhooks library (Python).

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SAID: &str = "Good morning everyone. Today we will review the budget for the new office.";

fn fleet_ws(az: &Azurite, extra: &str) -> Workspace {
    fleet_ws_allowing(az, "[\"127.0.0.1:*\"]", extra)
}

/// `allow`: the worker's `urls.allow` (TOML array).
/// Keys: a local key file every process of the test shares, so receipt
/// chains carry MACs (with the default ephemeral keys they would not; the
/// chart's fleet without Key Vault runs that way, see `container_image`).
fn fleet_ws_allowing(az: &Azurite, allow: &str, extra: &str) -> Workspace {
    let mut ws = Workspace::new();
    let tenants = ws.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[tenants.acme]\ntoken_sha256 = []\n[tenants.acme.webhook_secrets]\nmain = {SECRET:?}\n\
             [tenants.beta]\nwebhook_transcript = true\n[tenants.beta.webhook_secrets]\nmain = {SECRET:?}\n"
        ),
    )
    .unwrap();
    ws.extra_config = format!(
        "{}\n[keys]\nprovider = \"local_file\"\n[urls]\nallow = {allow}\nallow_replay = true\n[tenants]\nfile = {:?}\n\
         [worker]\nlisten = \"\"\nstop_poll = \"500ms\"\n\
         [webhooks]\nschedule = [\"0s\", \"1s\", \"2s\"]\nin_process_attempts = 3\ndrain = \"10s\"\n\
         [queue]\nwait = \"3s\"\nlease = \"30s\"\n{extra}",
        az.config_toml(),
        tenants.display().to_string()
    );
    ws
}

fn job(ws: &Workspace, webhook: &str, bot: &str, meeting: &str, pace: &str) -> String {
    let wav = ws.path().join("said.wav");
    if !wav.exists() {
        espeak("en-us", SAID, &wav);
    }
    let m = ws.manifest(&[("Host", &wav, 0)], pace);
    serde_json::json!({
        "version": 1, "bot_id": bot, "tenant": "acme", "meeting_id": meeting,
        "meeting_url": format!("replay:{}", m.display()),
        "webhook": {"url": webhook, "secret_ref": "main"}
    })
    .to_string()
}

fn worker(ws: &Workspace, job: Option<&str>) -> Run {
    let mut c = ws.command();
    c.arg("worker");
    match job {
        Some(j) => c.env("MEETBOT_JOB", j),
        None => c.env_remove("MEETBOT_JOB"),
    };
    Run::from(c.output().unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_job_ends_as_a_verified_transcript_blob_with_receipt_record_and_signed_webhooks() {
    let az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    let ws = fleet_ws(&az, "");
    let j = job(&ws, &hooks.url(), "b-1", "m1", "fast");
    let run = worker(&ws, Some(&j));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let want = [
        "joining",
        "in_call_recording",
        "call_ended",
        "transcript_committed",
        "recording_deleted",
        "done",
    ];
    assert_eq!(run.statuses(), want, "{}", run.describe());
    let last = run.last();

    let cfg = az.config();
    let env = az.env();
    let store = env.blob_store(&cfg).unwrap();
    let rt = rt();
    // The transcript is in acme's container, and its hash is the one reported.
    let json = rt.block_on(store.read("acme", "m1.json")).unwrap();
    assert_eq!(
        hex_sha(&json),
        last["transcript"]["sha256"].as_str().unwrap()
    );
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let text = speaker_text(&doc, "Host");
    let w = wer(SAID, &text);
    eprintln!("WER {w:.3}");
    assert!(w < 0.35, "{text}");
    assert!(last["transcript"]["location"]
        .as_str()
        .unwrap()
        .contains(&store.container_name("acme")));
    // The receipt is entry 1 of acme's receipt chain, identical to the one on
    // the final line, and the chain verifies (MACs included) from Blob Storage.
    let rid = last["recording_id"].as_str().unwrap();
    let entry: serde_json::Value = serde_json::from_slice(
        &rt.block_on(store.read("acme", "audit/00000000000000000001.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(entry["seq"], 1);
    assert!(entry["mac"].is_string(), "{entry}");
    let receipt = &entry["receipt"];
    assert_eq!(receipt["recording_id"], rid);
    assert_eq!(receipt["transcript_committed"], true);
    assert_eq!(receipt["transcript_sha256"], last["transcript"]["sha256"]);
    assert_eq!(
        receipt["manifest_sha256"],
        last["receipt"]["manifest_sha256"]
    );
    // The bot record is final and carries both.
    let rec = rt
        .block_on(env.records(&cfg).unwrap().get("acme", "b-1"))
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "done");
    assert_eq!(
        rec.transcript.as_ref().unwrap()["sha256"],
        last["transcript"]["sha256"]
    );
    assert!(rec.receipt.as_ref().unwrap()["location"]
        .as_str()
        .unwrap()
        .ends_with("/audit/00000000000000000001.json"));
    assert_eq!(rec.receipt.as_ref().unwrap()["chain_seq"], 1);
    assert_eq!(rec.receipt.as_ref().unwrap()["chain_hash"], entry["hash"]);
    let v = Run::from(
        ws.command()
            .args(["audit", "verify", "--tenant", "acme"])
            .output()
            .unwrap(),
    );
    assert_eq!(v.code, Some(0), "{}", v.describe());
    assert_eq!(v.last()["entries"], 1, "{}", v.describe());
    assert_eq!(v.last()["authenticated"], true, "{}", v.describe());

    // One webhook per status change, each verified by the reference library,
    // in order, with distinct ids, and no transcript text (acme did not opt in).
    let got = hooks.wait_for(6, Duration::from_secs(10));
    assert_eq!(got.len(), 6, "{got:#?}");
    let mut ids = std::collections::HashSet::new();
    for (h, status) in got.iter().zip(want) {
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["type"], "bot.status");
        let body: serde_json::Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["data"]["status"], status, "{body}");
        assert_eq!(body["data"]["bot_id"], "b-1");
        assert!(ids.insert(h["id"].as_str().unwrap().to_string()));
        for word in ["budget", "office", "review"] {
            assert!(
                !h["body"].as_str().unwrap().contains(word),
                "transcript text leaked: {h}"
            );
        }
    }
    let done: serde_json::Value = serde_json::from_str(got[5]["body"].as_str().unwrap()).unwrap();
    assert_eq!(done["data"]["receipt"]["recording_id"], rid);
    assert!(ws.recording_dirs().is_empty());

    // The same job redelivered through the queue is not run again and
    // nothing is overwritten.
    let q = env.queue(&cfg, "meetbot-jobs").unwrap();
    rt.block_on(q.create_if_missing()).unwrap();
    rt.block_on(q.send(&j, Duration::ZERO)).unwrap();
    let again = worker(&ws, None);
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert_eq!(again.statuses(), ["skipped"], "{}", again.describe());
    assert!(again.last()["reason"]
        .as_str()
        .unwrap()
        .contains("already finished"));
    assert_eq!(rt.block_on(store.read("acme", "m1.json")).unwrap(), json);
    assert!(
        rt.block_on(q.receive(Duration::from_secs(5)))
            .unwrap()
            .is_none(),
        "redelivered job deleted"
    );
    assert_eq!(
        hooks.received().len(),
        6,
        "no new webhooks for a skipped job"
    );
    // With nothing queued the worker waits `queue.wait` and exits 0.
    let idle = worker(&ws, None);
    assert_eq!(
        (idle.code, idle.statuses()),
        (Some(0), vec!["skipped".to_string()]),
        "{}",
        idle.describe()
    );
}

#[test]
fn webhook_hosts_addresses_and_paths_never_reach_info_logs() {
    let az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    // Delivered to a receiver on 127.0.0.1.
    let ws = fleet_ws(&az, "");
    let delivered_url = hooks.url();
    let run = worker(&ws, Some(&job(&ws, &delivered_url, "b-l1", "ml1", "fast")));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(hooks.wait_for(6, Duration::from_secs(10)).len(), 6);
    // Refused at delivery: this worker's allow list does not admit 127.0.0.1
    // (the URL passed when the job was accepted), so every attempt is refused
    // by the URL guard, whose error names the host and the address.
    let ws2 = fleet_ws_allowing(&az, "[]", "");
    let port = free_port();
    let refused_url = format!("https://127.0.0.1:{port}/private-path-4cd1/hook");
    let run2 = worker(&ws2, Some(&job(&ws2, &refused_url, "b-l2", "ml2", "fast")));
    assert_eq!(run2.code, Some(0), "{}", run2.describe());

    let cases = [
        (&run, &delivered_url, "/hooks/meetbot", hooks.port),
        (&run2, &refused_url, "/private-path-4cd1", port),
    ];
    // No URL, path, host, address or port of the webhook in either run…
    for (r, url, path, port) in cases {
        let logs = &r.stderr;
        for leak in [url.as_str(), path, "127.0.0.1", &format!(":{port}")] {
            assert!(!logs.contains(leak), "{leak:?} in the logs:\n{logs}");
        }
    }
    // …while each delivery is logged at info, naming the endpoint by its reference.
    for (r, ..) in cases {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains("Webhook delivery finished") && l.contains("acme/main")),
            "{}",
            r.stderr
        );
    }
    assert!(
        run2.stderr.contains("refused (url_blocked_address)"),
        "{}",
        run2.stderr
    );
}

#[test]
fn bad_jobs_and_jobs_that_keep_failing_are_parked() {
    let az = Azurite::start();
    let ws = fleet_ws(&az, "max_attempts = 2\n");
    let cfg = az.config();
    let env = az.env();
    let rt = rt();
    let q = env.queue(&cfg, "meetbot-jobs").unwrap();
    let poison = env.queue(&cfg, "meetbot-jobs-poison").unwrap();
    rt.block_on(q.create_if_missing()).unwrap();

    // Unparseable: parked at once, exit 2.
    rt.block_on(q.send("{\"tenant\": \"acme\", \"colour\": 1}", Duration::ZERO))
        .unwrap();
    let run = worker(&ws, None);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.last()["reason"]
            .as_str()
            .unwrap()
            .contains("invalid job"),
        "{}",
        run.describe()
    );
    let parked = rt
        .block_on(poison.receive(Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert!(parked.text.contains("colour"));
    rt.block_on(poison.delete(&parked)).unwrap();
    assert!(rt
        .block_on(q.receive(Duration::from_secs(1)))
        .unwrap()
        .is_none());

    // A job whose workers died twice (its lease lapsed twice) is parked on the third receipt.
    let j = job(&ws, "https://hooks.example.com/x", "b-9", "m9", "fast");
    rt.block_on(q.send(&j, Duration::ZERO)).unwrap();
    for _ in 0..2 {
        let m = rt
            .block_on(q.receive(Duration::from_secs(1)))
            .unwrap()
            .unwrap();
        drop(m);
        std::thread::sleep(Duration::from_millis(1300));
    }
    let run = worker(&ws, None);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.last()["reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{}",
        run.describe()
    );
    let parked = rt
        .block_on(poison.receive(Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert_eq!(parked.text, j);
    let rec = rt
        .block_on(env.records(&cfg).unwrap().get("acme", "b-9"))
        .unwrap();
    // The record is written by the reporter (created by serve in production).
    assert!(rec.is_none() || rec.unwrap().status == "fatal");
    assert!(rt
        .block_on(q.receive(Duration::from_secs(1)))
        .unwrap()
        .is_none());
}

#[test]
fn storage_down_at_commit_time_is_retried_and_the_recording_stays_encrypted() {
    let mut az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    let ws = fleet_ws(
        &az,
        "[lifecycle]\ncommit_retry_initial = \"500ms\"\ncommit_retry_max = \"2s\"\n[recording]\nmemory_budget_kib = 0\n",
    );
    let j = job(&ws, &hooks.url(), "b-2", "m2", "realtime");
    let pcm = wav_pcm(&ws.path().join("said.wav"));
    let mut c = ws.command();
    c.arg("worker")
        .env("MEETBOT_JOB", &j)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let wait_for = |status: &str, limit: Duration, lines: &mut Vec<String>| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if lines
                .iter()
                .any(|l| l.contains(&format!("\"status\":\"{status}\"")))
            {
                return true;
            }
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                lines.push(l);
            }
        }
        false
    };
    assert!(
        wait_for("in_call_recording", Duration::from_secs(60), &mut lines),
        "{lines:?}"
    );
    az.stop();
    assert!(
        wait_for("call_ended", Duration::from_secs(60), &mut lines),
        "{lines:?}"
    );
    // Storage is down: no commit, and the recording is still there, encrypted.
    assert!(
        !wait_for("transcript_committed", Duration::from_secs(5), &mut lines),
        "{lines:?}"
    );
    let spool = ws.spool_files();
    assert!(
        !spool.is_empty(),
        "the encrypted recording is kept until the commit succeeds"
    );
    for f in ws.files() {
        assert_no_plaintext_audio(&f.display().to_string(), &read(&f), &pcm);
    }
    az.restart();
    assert!(
        wait_for("done", Duration::from_secs(60), &mut lines),
        "{lines:?}"
    );
    let run = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{lines:?}\n{}", run.describe());
    assert!(lines
        .iter()
        .any(|l| l.contains("\"status\":\"transcript_committed\"")));
    let cfg = az.config();
    let store = az.env().blob_store(&cfg).unwrap();
    let json = rt().block_on(store.read("acme", "m2.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["complete"], true, "{doc}");
    assert!(wer(SAID, &speaker_text(&doc, "Host")) < 0.35, "{doc}");
    assert!(ws.recording_dirs().is_empty());
}

#[test]
fn a_tenant_that_opted_in_gets_the_transcript_in_its_webhook() {
    let az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    let ws = fleet_ws(&az, "");
    let j = job(&ws, &hooks.url(), "b-7", "m7", "fast").replace("\"acme\"", "\"beta\"");
    let run = worker(&ws, Some(&j));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let got = hooks.wait_for(6, Duration::from_secs(10));
    assert_eq!(got.len(), 6, "{got:#?}");
    let bodies: Vec<serde_json::Value> = got
        .iter()
        .map(|h| {
            assert_eq!(h["ok"], true, "{h}");
            serde_json::from_str(h["body"].as_str().unwrap()).unwrap()
        })
        .collect();
    let committed = bodies
        .iter()
        .find(|b| b["data"]["status"] == "transcript_committed")
        .unwrap();
    let doc = &committed["data"]["transcript_document"];
    assert_eq!(doc["tenant"], "beta", "{committed}");
    assert!(wer(SAID, &speaker_text(doc, "Host")) < 0.35, "{doc}");
    // Only that one message carries text.
    let with_text = bodies
        .iter()
        .filter(|b| b["data"].get("transcript_document").is_some())
        .count();
    assert_eq!(with_text, 1);
}

#[test]
fn join_commits_to_the_blob_store_when_configured() {
    let az = Azurite::start();
    let ws = fleet_ws(&az, "");
    let wav = ws.path().join("said.wav");
    espeak("en-us", SAID, &wav);
    let m = ws.manifest(&[("Host", &wav, 0)], "fast");
    let run = ws.join(
        &format!("replay:{}", m.display()),
        &["--tenant", "acme", "--meeting-id", "j1"],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let last = run.last();
    let cfg = az.config();
    let store = az.env().blob_store(&cfg).unwrap();
    let json = rt().block_on(store.read("acme", "j1.json")).unwrap();
    assert_eq!(
        hex_sha(&json),
        last["transcript"]["sha256"].as_str().unwrap()
    );
    assert!(last["transcript"]["location"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A worker container that crashed restarts in the same pod (the chart's restartPolicy:
/// OnFailure), whose memory-backed spool survives: the restarted worker destroys the
/// crashed run's recording before it waits for a job, even when no job comes, and its
/// receipt reaches the audit log, stdout and the tenant's container.
#[test]
fn a_restarted_worker_destroys_the_crashed_runs_recording_even_without_a_job() {
    let az = Azurite::start();
    let hooks = WebhookReceiver::start(SECRET);
    let ws = fleet_ws(&az, "[recording]\nmemory_budget_kib = 0\n");
    let wav = ws.path().join("said.wav");
    espeak("en-us", SAID, &wav);
    let quiet = ws.path().join("quiet.wav");
    silence(30.0, &quiet);
    let long = ws.path().join("long.wav");
    concat(&[wav, quiet], &long);
    let m = ws.manifest(&[("Host", &long, 0)], "realtime");
    let j = serde_json::json!({
        "version": 1, "bot_id": "b-crash", "tenant": "acme", "meeting_id": "m-crash",
        "meeting_url": format!("replay:{}", m.display()),
        "webhook": {"url": hooks.url(), "secret_ref": "main"}
    })
    .to_string();
    let mut c = ws.command();
    c.arg("worker")
        .env("MEETBOT_JOB", &j)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("status line").unwrap();
        if l.contains("\"in_call_recording\"") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(4));
    child.kill().unwrap(); // SIGKILL, like an OOM kill: no cleanup
    child.wait().unwrap();
    assert_eq!(
        ws.recording_dirs().len(),
        1,
        "the crashed run left its recording"
    );
    let pcm = wav_pcm(&ws.path().join("said.wav"));
    for f in ws.spool_files() {
        assert_no_plaintext_audio(&f.display().to_string(), &read(&f), &pcm);
    }

    // The restart: the queue is empty (the crashed job is still leased).
    let q = az.env().queue(&az.config(), "meetbot-jobs").unwrap();
    rt().block_on(q.create_if_missing()).unwrap();
    let run = worker(&ws, None);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let lines = run.lines();
    let swept: Vec<_> = lines
        .iter()
        .filter(|l| l["status"] == "orphan_swept")
        .collect();
    assert_eq!(swept.len(), 1, "{}", run.describe());
    let receipt = &swept[0]["receipt"];
    assert_eq!(receipt["tenant"], "acme");
    assert_eq!(receipt["meeting_id"], "m-crash");
    assert_eq!(receipt["transcript_committed"], false);
    assert!(
        receipt["ciphertext_bytes"].as_u64().unwrap() > 0,
        "{receipt}"
    );
    assert_eq!(run.statuses().last().map(String::as_str), Some("skipped"));
    assert!(ws.recording_dirs().is_empty(), "the recording is gone");

    // The receipt is in the tenant's receipt chain, what the audit log holds.
    let rid = receipt["recording_id"].as_str().unwrap().to_string();
    let store = az.env().blob_store(&az.config()).unwrap();
    let seq = swept[0]["chain_seq"]
        .as_u64()
        .expect("appended to the chain");
    let name = format!("audit/{seq:020}.json");
    assert!(swept[0]["receipt_location"]
        .as_str()
        .unwrap()
        .ends_with(&name));
    let blob = rt()
        .block_on(store.read("acme", &name))
        .expect("chain entry");
    let stored: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    assert_eq!(&stored["receipt"], receipt);
    let v = Run::from(
        ws.command()
            .args(["audit", "verify", "--tenant", "acme"])
            .output()
            .unwrap(),
    );
    assert_eq!(v.code, Some(0), "{}", v.describe());
    let verify = Run::from(ws.command().args(["audit", "verify"]).output().unwrap());
    assert_eq!(verify.code, Some(0), "{}", verify.describe());
    assert!(std::fs::read_to_string(ws.audit_log())
        .unwrap()
        .contains(&rid));

    // Another restart finds nothing to sweep, and while it waits for a job it is not
    // Ready (KEDA counts its Job as pending and starts no extra pod for a new message).
    let port = free_port();
    let mut c = ws.command();
    c.arg("worker")
        .env_remove("MEETBOT_JOB")
        .env("MEETBOT_WORKER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = c.spawn().unwrap();
    wait_port(port, Duration::from_secs(5));
    let ready = http_get(port, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("no job taken yet"), "{ready}");
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let again = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert!(
        again.lines().iter().all(|l| l["status"] != "orphan_swept"),
        "{}",
        again.describe()
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
