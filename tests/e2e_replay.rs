//! End to end: `meetbot join replay:…` with speech synthesized in the test,
//! through the real binary, the real Whisper model and the real stt-serve.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HOST_1: &str = "Good morning everyone. Today we will review the budget for the new office.";
const GUEST_1: &str = "Thank you. The marketing team needs two more people before the summer.";
const HOST_2: &str = "That sounds reasonable. Please send me the numbers by Friday afternoon.";

/// Host says two sentences with a long pause between them; the guest speaks
/// in that pause. Returns (manifest, host wav, guest wav).
fn two_speaker_meeting(ws: &Workspace, pace: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = ws.path();
    espeak("en-us", HOST_1, &d.join("h1.wav"));
    espeak("en-us", HOST_2, &d.join("h2.wav"));
    espeak("en-gb+m3", GUEST_1, &d.join("guest.wav"));
    // 7 s of silence between the host's sentences.
    let st = Command::new("sox")
        .args(["-q", "-D", "-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(d.join("gap.wav"))
        .args(["trim", "0", "7"])
        .status()
        .unwrap();
    assert!(st.success());
    let host = d.join("host.wav");
    concat(
        &[d.join("h1.wav"), d.join("gap.wav"), d.join("h2.wav")],
        &host,
    );
    let guest = d.join("guest.wav");
    // The guest's first words land ~1 s after the host's first sentence ends.
    let h1_secs = wav_secs(&d.join("h1.wav"));
    let offset = ((h1_secs + 1.0) * 1000.0) as u64;
    let m = ws.manifest(&[("Host", &host, 0), ("Guest", &guest, offset)], pace);
    (m, host, guest)
}

fn wav_secs(p: &Path) -> f64 {
    let b = read(p);
    (b.len().saturating_sub(44)) as f64 / 96_000.0
}

fn check_two_speaker_transcript(run: &Run, max_wer: f64) {
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        run.statuses(),
        [
            "joining",
            "in_call_recording",
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ],
        "{}",
        run.describe()
    );
    let last = run.last();
    let t = transcript_of(&last);
    let names: Vec<_> = t["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert!(
        names.contains(&"Host".into()) && names.contains(&"Guest".into()),
        "{names:?}"
    );
    let host = speaker_text(&t, "Host");
    let guest = speaker_text(&t, "Guest");
    let wh = wer(&format!("{HOST_1} {HOST_2}"), &host);
    let wg = wer(GUEST_1, &guest);
    eprintln!("WER host {wh:.3} guest {wg:.3}");
    assert!(wh <= max_wer, "host WER {wh:.3}");
    assert!(wg <= max_wer, "guest WER {wg:.3}");
    // Attribution: the guest's distinctive words are never in the host's text and vice versa.
    for w in ["marketing", "summer"] {
        assert!(
            !words(&host).contains(&w.to_string()),
            "{w} attributed to host"
        );
    }
    for w in ["budget", "friday"] {
        assert!(
            !words(&guest).contains(&w.to_string()),
            "{w} attributed to guest"
        );
    }
    // Segments are in meeting-clock order and the guest speaks between the host's sentences.
    let segs = t["segments"].as_array().unwrap();
    let order: Vec<&str> = segs
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    let first_guest = order.iter().position(|s| *s == "Guest").unwrap();
    assert!(
        order[..first_guest].contains(&"Host") && order[first_guest..].contains(&"Host"),
        "{order:?}\n{}",
        serde_json::to_string_pretty(&t).unwrap()
    );
    let starts: Vec<u64> = segs
        .iter()
        .map(|s| s["start_ms"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    // The receipt on the last line matches the committed transcript and the audit log verifies.
    let r = &last["receipt"];
    assert_eq!(r["transcript_committed"], true);
    assert_eq!(r["transcript_sha256"], last["transcript"]["sha256"]);
    assert!(r["chunk_count"].as_u64().unwrap() > 0);
    assert!(r["ciphertext_bytes"].as_u64().unwrap() > 1000);
    assert_eq!(r["manifest_sha256"].as_str().unwrap().len(), 64);
    assert!(!r["audit_hash"].as_str().unwrap().is_empty());
    // WebVTT with voice tags.
    let vtt =
        std::fs::read_to_string(last["transcript"]["vtt_location"].as_str().unwrap()).unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.contains("<v Host>") && vtt.contains("<v Guest>"));
}

fn assert_no_plaintext_left(ws: &Workspace, sources: &[&Path]) {
    let spool = ws.spool_files();
    assert!(spool.is_empty(), "spool not empty: {spool:?}");
    for f in ws.files() {
        let bytes = read(&f);
        for s in sources {
            assert_no_plaintext_audio(&f.display().to_string(), &bytes, &wav_pcm(s));
        }
    }
}

fn audit_verify(ws: &Workspace) -> Run {
    let mut c = ws.command();
    c.args(["audit", "verify"]);
    Run::from(c.output().unwrap())
}

#[test]
fn two_speakers_embedded_whisper() {
    let ws = Workspace::new();
    let (m, host, guest) = two_speaker_meeting(&ws, "fast");
    let run = ws.join(&format!("replay:{}", m.display()), &[]);
    check_two_speaker_transcript(&run, 0.25);
    assert_eq!(
        run.last()["transcript"]["location"]
            .as_str()
            .map(|l| l.ends_with("acme/m1.json")),
        Some(true)
    );
    assert_no_plaintext_left(&ws, &[&host, &guest]);
    let v = audit_verify(&ws);
    assert_eq!(v.code, Some(0), "{}", v.describe());
    // Logs at the default level carry no names, transcript words or the manifest path.
    for secret in ["Host", "Guest", "marketing", "budget", m.to_str().unwrap()] {
        assert!(
            !run.stderr.contains(secret),
            "stderr leaks {secret:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn two_speakers_openai_provider_against_stt_serve() {
    let ws = Workspace::new();
    let (m, host, guest) = two_speaker_meeting(&ws, "fast");
    let port = free_port();
    let mut serve = ws.command();
    serve
        .args(["stt-serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = KillOnDrop(serve.spawn().unwrap());
    wait_port(port, Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{port}/v1");
    let run = ws.join(
        &format!("replay:{}", m.display()),
        &["--stt", "openai", "--stt-url", &url],
    );
    check_two_speaker_transcript(&run, 0.25);
    let t = transcript_of(&run.last());
    assert_eq!(t["provider"], "openai");
    assert_no_plaintext_left(&ws, &[&host, &guest]);
}

#[test]
fn sigterm_mid_meeting_leaves_commits_deletes_and_exits_zero() {
    let ws = Workspace::new();
    let (m, _host, _guest) = two_speaker_meeting(&ws, "realtime");
    let mut child = ws.spawn_join(&format!("replay:{}", m.display()), &[]);
    let pid = child.id();
    // Wait for admission (model loading time varies), then let the host's
    // first sentence and the guest's start play out in real time.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no in_call_recording line");
        let admitted = line.contains("\"in_call_recording\"");
        seen.push(line);
        if admitted {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(8500));
    let t0 = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut run = wait_with_timeout(child, Duration::from_secs(40));
    let took = t0.elapsed();
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    run.stdout = seen.join("\n") + "\n";
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        took < Duration::from_secs(25),
        "took {took:?} after SIGTERM"
    );
    let last = run.last();
    assert_eq!(last["status"], "done", "{}", run.describe());
    let call_ended = run
        .lines()
        .into_iter()
        .find(|l| l["status"] == "call_ended")
        .unwrap();
    assert_eq!(call_ended["reason"], "stop_requested");
    let t = transcript_of(&last);
    // What was captured before the signal is there; what came after is not.
    assert!(
        wer(HOST_1, &speaker_text(&t, "Host")) <= 0.4,
        "{}",
        speaker_text(&t, "Host")
    );
    assert!(!words(&speaker_text(&t, "Host")).contains(&"friday".to_string()));
    assert!(ws.spool_files().is_empty());
}
