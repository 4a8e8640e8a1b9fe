//! The media path obeys the URL guard, against a real Janus: `scripts/local-meeting --nat-1-1
//! 127.0.0.1` makes Janus advertise 127.0.0.1 in its ICE candidates (as a hostile meeting
//! server could), and `meetbot worker --job-file` joins with `urls.allow = ["10.231.0.1"]`, the
//! server's real address only. A packet counter on the namespace's `lo`
//! (scripts/local-meeting.d/udp-count.py, an AF_PACKET socket) counts what the worker's media
//! socket (bound to 10.231.0.1:47000, so no publisher's browser shares it) sends to
//! 127.0.0.0/8.
//!
//! On the code before the candidate filter, the first test saw the worker send STUN to
//! 127.0.0.1 (1 packet, media connected through 10.231.0.1), and the second connected through a
//! peer-reflexive candidate after sending 2 packets to 127.0.0.1.
//!
//! Needs root and the sandbox's packages, like `e2e_janus` (missing prerequisites FAIL).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SAID: &str = "The quarterly budget review starts on Monday morning.";
/// The worker's only media socket.
const MEDIA_PORT: u16 = 47000;

fn require_prerequisites() {
    let uid = Command::new("id").arg("-u").output().expect("id(1) runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "e2e_ice needs root for scripts/local-meeting's network namespace (scripts/test runs it as root)"
    );
    for tool in ["janus", "chromium", "sox", "espeak-ng", "ip", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is missing: run scripts/test (it installs the meeting sandbox's packages)"
        );
    }
}

/// Inside the namespace: start the counter, wait until it captures, run the worker on a job
/// for `$MEETING_URL`, stop the counter (its JSON line goes to counts.json).
const COMMAND: &str = r#"set -u
python3 "$MB_UDPCOUNT" --iface lo --src-port "$MB_MEDIA_PORT" --forbid 127.0.0.0/8 \
    --ready "$MB_WS/counter.ready" > "$MB_WS/counts.json" &
counter=$!
n=0; while [ ! -e "$MB_WS/counter.ready" ]; do
  n=$((n+1)); [ $n -lt 200 ] || { echo "the packet counter did not start" >&2; exit 97; }
  sleep 0.05
done
printf '{"version":1,"bot_id":"b-ice","tenant":"acme","meeting_id":"m1","meeting_url":"%s"}' \
  "$MEETING_URL" > "$MB_WS/job.json"
"$MB_BIN" --config "$MB_CONFIG" worker --job-file "$MB_WS/job.json"
rc=$?
kill -TERM $counter; wait $counter
exit $rc"#;

struct Outcome {
    run: Run,
    counts: serde_json::Value,
}

/// One speaker saying [`SAID`], Janus advertising 127.0.0.1 (with its real address too when
/// `keep_private_host`), the worker allowed only 10.231.0.1.
fn run(ws: &mut Workspace, keep_private_host: bool) -> Outcome {
    ws.extra_config = format!(
        "[urls]\nallow = [\"10.231.0.1\"]\n[worker]\nlisten = \"\"\n\
         [transport]\nudp_bind = [\"10.231.0.1:{MEDIA_PORT}\"]\n"
    );
    let wav = ws.path().join("said.wav");
    espeak("en-us", SAID, &wav);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(root.join("scripts/local-meeting"));
    c.arg("--no-install")
        .args(["--speaker", &format!("Host={}", wav.display())])
        .args(["--nat-1-1", "127.0.0.1"]);
    if keep_private_host {
        c.arg("--keep-private-host");
    }
    c.args(["--keep-open", "10", "--grace", "20"])
        .args(["--", "sh", "-c", COMMAND])
        .env("MB_BIN", BIN)
        .env("MB_CONFIG", ws.config())
        .env("MB_WS", ws.path())
        .env("MB_MEDIA_PORT", MEDIA_PORT.to_string())
        .env(
            "MB_UDPCOUNT",
            root.join("scripts/local-meeting.d/udp-count.py"),
        )
        .env("MEETBOT_STT__MODEL_DIR", model_dir())
        .env_remove("RUST_LOG")
        .env_remove("MEETBOT_JOB")
        .current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = wait_with_timeout(
        c.spawn().expect("scripts/local-meeting starts"),
        Duration::from_secs(240),
    );
    let text = std::fs::read_to_string(ws.path().join("counts.json")).unwrap_or_default();
    let counts = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("no packet counts ({e}): {text:?}\n{}", run.describe()));
    eprintln!("packets from the worker's media socket: {counts}");
    Outcome { run, counts }
}

/// Janus offers 10.231.0.1 and 127.0.0.1: the worker sends nothing to 127.0.0.1, connects to
/// 10.231.0.1 and transcribes the speaker.
#[test]
fn the_worker_sends_no_media_to_a_forbidden_candidate_and_still_hears_the_meeting() {
    require_prerequisites();
    let mut ws = Workspace::new();
    let o = run(&mut ws, true);
    let run = &o.run;
    assert_eq!(
        o.counts["forbidden"],
        0,
        "the worker sent UDP to 127.0.0.0/8: {}\n{}",
        o.counts,
        run.describe()
    );
    // The counter did see the worker's media (so a zero above means something).
    assert!(
        o.counts["allowed"].as_u64().unwrap_or(0) > 0,
        "{}\n{}",
        o.counts,
        run.describe()
    );
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
    let t = transcript_of(&run.last());
    let heard = speaker_text(&t, "Host");
    let w = wer(SAID, &heard);
    eprintln!("WER {w:.3}: {heard}");
    assert!(w <= 0.35, "WER {w:.3}: {heard}\n{}", run.describe());
    // Counts at info, never the address.
    assert!(
        run.stderr
            .contains("Removed ICE candidates from the Janus offer."),
        "{}",
        run.describe()
    );
}

/// Janus offers only 127.0.0.1: the join ends `fatal` with the reason, and nothing was sent
/// there.
#[test]
fn a_meeting_whose_every_candidate_is_forbidden_ends_fatal_with_the_reason() {
    require_prerequisites();
    let mut ws = Workspace::new();
    let o = run(&mut ws, false);
    let run = &o.run;
    assert_eq!(o.counts["forbidden"], 0, "{}\n{}", o.counts, run.describe());
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let last = run.last();
    assert_eq!(last["status"], "fatal", "{}", run.describe());
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the meeting server offered no ICE candidate this worker may connect to (")
            && reason.contains(" rejected by the URL policy"),
        "{reason}\n{}",
        run.describe()
    );
    assert!(!reason.contains("127.0.0.1"), "{reason}");
}
