//! A real Janus VideoRoom meeting: `scripts/local-meeting` starts Janus and two headless
//! Chromium publishers (espeak-ng voices, staggered) in a private network namespace, and
//! `meetbot join "$MEETING_URL"` joins it natively with the embedded Whisper model.
//!
//! Needs root and the sandbox's packages (janus, chromium, sox, espeak-ng, iproute2:
//! `scripts/test` installs them through `install_meeting_deps` in scripts/lib.sh). Missing
//! prerequisites FAIL this test; they never skip it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const HOST_TEXT: &str =
    "The quarterly budget review starts on Monday morning. Please bring the updated sales figures.";
const GUEST_TEXT: &str =
    "I will send the marketing report before lunch. The new office opens in April.";

fn require_prerequisites() {
    let uid = Command::new("id").arg("-u").output().expect("id(1) runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "e2e_janus needs root for scripts/local-meeting's network namespace (scripts/test runs it as root)"
    );
    for tool in ["janus", "chromium", "sox", "espeak-ng", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is missing: run scripts/test (it installs the meeting sandbox's packages via \
             install_meeting_deps in scripts/lib.sh)"
        );
    }
}

#[test]
fn two_speakers_in_a_real_janus_room_are_transcribed_and_attributed() {
    require_prerequisites();
    let ws = Workspace::new();
    let host = ws.path().join("host.wav");
    let guest = ws.path().join("guest.wav");
    espeak("en-us", HOST_TEXT, &host);
    espeak("en-gb", GUEST_TEXT, &guest);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-meeting");
    let mut c = Command::new(script);
    c.arg("--no-install")
        .args(["--speaker", &format!("Host={}", host.display())])
        .args(["--speaker", &format!("Guest={}", guest.display())])
        .args(["--offset", "Guest=3"])
        // The bot must leave by itself within 10 s of the last speaker; after that the
        // sandbox sends SIGTERM and the call would not end as `everyone_left`.
        .args(["--keep-open", "10", "--grace", "20"])
        .args(["--", "sh", "-c"])
        .arg(
            r#"exec "$MB_BIN" --config "$MB_CONFIG" join "$MEETING_URL" --tenant acme --meeting-id m1"#,
        )
        .env("MB_BIN", BIN)
        .env("MB_CONFIG", ws.config())
        .env("MEETBOT_STT__MODEL_DIR", model_dir())
        .env_remove("RUST_LOG")
        .current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = wait_with_timeout(
        c.spawn().expect("scripts/local-meeting starts"),
        Duration::from_secs(240),
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());

    let statuses = run.statuses();
    assert_eq!(
        statuses,
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
    let lines = run.lines();
    let ended = lines
        .iter()
        .find(|l| l["status"] == "call_ended")
        .expect("a call_ended line");
    assert_eq!(ended["reason"], "everyone_left", "{}", run.describe());

    let last = run.last();
    assert_eq!(last["receipt"]["transcript_committed"], true);
    assert_eq!(last["receipt"]["method"], "crypto-shred+unlink");
    let t = transcript_of(&last);
    let mut report = String::new();
    for (speaker, text) in [("Host", HOST_TEXT), ("Guest", GUEST_TEXT)] {
        let hyp = speaker_text(&t, speaker);
        let w = wer(text, &hyp);
        report.push_str(&format!("{speaker}: WER {w:.3}: {hyp}\n"));
        assert!(w <= 0.3, "{speaker} WER {w:.3} > 0.3\n{report}");
    }
    // Attribution: each speaker's distinctive words appear only under them.
    for (speaker, word) in [("Host", "budget"), ("Guest", "marketing")] {
        for other in ["Host", "Guest"] {
            let has = words(&speaker_text(&t, other)).contains(&word.to_string());
            assert_eq!(has, other == speaker, "{word:?} under {other}\n{report}");
        }
    }

    // Nothing plaintext left behind.
    let spool = ws.spool_files();
    assert!(spool.is_empty(), "spool not empty: {spool:?}");
    for f in ws.files() {
        let bytes = read(&f);
        for s in [&host, &guest] {
            assert_no_plaintext_audio(&f.display().to_string(), &bytes, &wav_pcm(s));
        }
    }
}
