//! `meetbot worker` serves /healthz, /readyz and /metrics while it is in a
//! meeting, and a SIGTERM mid-meeting still ends in a committed transcript.
//! A direct job (`MEETBOT_JOB`) with the local store: no Azure at all.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;

const SAID: &str = "Good morning everyone. Today we will review the budget for the new office.";

/// Kills the worker if the test fails before it exits.
struct Guard(Option<std::process::Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Collects stdout lines until one has `"status":"<status>"`, at most `limit`.
fn wait_status(rx: &Receiver<String>, lines: &mut Vec<String>, status: &str, limit: Duration) {
    let want = format!("\"status\":\"{status}\"");
    let start = Instant::now();
    while !lines.iter().any(|l| l.contains(&want)) {
        assert!(
            start.elapsed() < limit,
            "no {status} within {limit:?}: {lines:#?}"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> (u16, String, String) {
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    })
}

#[test]
fn a_worker_in_a_meeting_serves_health_and_metrics_and_finishes_after_sigterm() {
    let mut ws = Workspace::new();
    let port = free_port();
    ws.extra_config = format!(
        "[urls]\nallow_replay = true\n[store]\nkind = \"local\"\n[worker]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    // Speech, then a minute of silence: the meeting outlasts the test unless stopped.
    let said = ws.path().join("said.wav");
    espeak("en-us", SAID, &said);
    let quiet = ws.path().join("quiet.wav");
    silence(60.0, &quiet);
    let host = ws.path().join("host.wav");
    concat(&[said, quiet], &host);
    let manifest = ws.manifest(&[("Host", &host, 0)], "realtime");
    let job = serde_json::json!({
        "version": 1, "bot_id": "b-health", "tenant": "acme", "meeting_id": "m-health",
        "meeting_url": format!("replay:{}", manifest.display()),
    })
    .to_string();

    let mut c = ws.command();
    c.arg("worker")
        .env("MEETBOT_JOB", &job)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    // Drain stderr so a chatty log never blocks the worker.
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut child = Guard(Some(child));

    let mut lines = Vec::new();
    wait_status(
        &rx,
        &mut lines,
        "in_call_recording",
        Duration::from_secs(60),
    );
    let t_joined = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    // The status reaches the health server just after stdout: bounded poll.
    let start = Instant::now();
    let ready = loop {
        let r = get(&rt, &format!("{base}/readyz"));
        if r.0 == 200 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready.0, 200, "{ready:?}");
    assert_eq!(ready.2.trim(), "in_call_recording");
    let health = get(&rt, &format!("{base}/healthz"));
    assert_eq!((health.0, health.2.trim()), (200, "ok"), "{health:?}");
    let (st, ct, metrics) = get(&rt, &format!("{base}/metrics"));
    assert_eq!(st, 200, "{metrics}");
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "meetbot_worker_status{status=\"in_call_recording\"} 1"),
        "{metrics}"
    );
    // `set_only`: the previous status is no longer the current one.
    assert!(
        !metrics
            .lines()
            .any(|l| l == "meetbot_worker_status{status=\"joining\"} 1"),
        "{metrics}"
    );
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no process_resident_memory_bytes: {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    assert_eq!(get(&rt, &format!("{base}/nope")).0, 404);

    // Let the speech (about 5 s) be heard, then stop the worker as Kubernetes would.
    let spoken = Duration::from_secs(9);
    std::thread::sleep(spoken.saturating_sub(t_joined.elapsed()));
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t_term = Instant::now();
    wait_status(&rx, &mut lines, "done", Duration::from_secs(60));
    let run = wait_with_timeout(child.0.take().unwrap(), Duration::from_secs(30));
    assert!(
        t_term.elapsed() < Duration::from_secs(30),
        "SIGTERM was not honoured promptly: {:?}",
        t_term.elapsed()
    );
    let log = log.join().unwrap().join("\n");
    assert_eq!(run.code, Some(0), "{lines:#?}\n{log}");
    let statuses: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = statuses
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "joining",
            "in_call_recording",
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ],
        "{log}"
    );
    // The transcript is committed in the local store and has what was said.
    let last = statuses.last().unwrap();
    let loc = last["transcript"]["location"].as_str().unwrap();
    let bytes = std::fs::read(loc).unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        last["transcript"]["sha256"].as_str().unwrap()
    );
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["meeting_id"], "m-health");
    let text = speaker_text(&doc, "Host");
    assert!(wer(SAID, &text) < 0.35, "{text}");
    assert!(ws.recording_dirs().is_empty(), "recording deleted");
    // The health server goes with the process.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
