//! Real Janus VideoRoom meetings: `scripts/local-meeting` starts Janus and headless Chromium
//! publishers (espeak-ng voices, staggered) in a private network namespace, and
//! `meetbot join "$MEETING_URL"` joins it natively with the embedded Whisper model.
//!
//! Needs root and the sandbox's packages (janus, chromium, sox, espeak-ng, iproute2:
//! `scripts/test` installs them through `install_meeting_deps` in scripts/lib.sh). Missing
//! prerequisites FAIL this test; they never skip it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const HOST_TEXT: &str =
    "The quarterly budget review starts on Monday morning. Please bring the updated sales figures.";
const GUEST_TEXT: &str =
    "I will send the marketing report before lunch. The new office opens in April.";

// The second meeting: Anna talks throughout (two sentences, 4 s of silence between), Ben speaks
// early and leaves while she is silent, Cleo joins late.
const ANNA_TEXT_1: &str = "The quarterly budget review starts on Monday morning, and every team \
                           lead should bring the updated sales figures for their region.";
const ANNA_TEXT_2: &str = "After the review we will decide which projects get more engineers and \
                           which ones wait until the summer.";
const BEN_TEXT: &str = "I will send the marketing report before lunch, and then I have to leave.";
const CLEO_TEXT: &str =
    "Sorry I am late. The new office opens in April, and the movers arrive next Tuesday.";
/// Cleo starts this long after the bot is in the room, and not before Ben (about 6.5 s of audio)
/// has left: how long Chromium takes to start varies too much on a busy machine to order them by
/// offsets alone.
const CLEO_OFFSET_S: u64 = 10;
/// A segment may start a little before its speaker's offset on the meeting clock: the clock
/// starts at the bot's admission, the speakers' offsets count from when the sandbox saw the bot
/// in the room (later), and the VAD keeps some audio before the speech onset.
const CLOCK_TOLERANCE_MS: u64 = 1500;

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

/// One publisher of a sandbox meeting.
struct Speaker {
    name: &'static str,
    wav: PathBuf,
    /// What it says (the WER reference).
    text: String,
    /// A word only this speaker says.
    word: &'static str,
    offset_s: u64,
    /// Starts only once this speaker has left (`--after`).
    after: Option<&'static str>,
}

/// The bot's command in the sandbox.
const JOIN: &str =
    r#"exec "$MB_BIN" --config "$MB_CONFIG" join "$MEETING_URL" --tenant acme --meeting-id m1"#;

/// Runs `meetbot join "$MEETING_URL"` (embedded STT, tenant acme, meeting m1) in
/// `scripts/local-meeting` with `speakers`.
fn run_meeting(ws: &Workspace, speakers: &[Speaker]) -> Run {
    run_meeting_with(ws, speakers, JOIN)
}

/// Like [`run_meeting`], with `command` (sh) in the sandbox instead of the plain join.
fn run_meeting_with(ws: &Workspace, speakers: &[Speaker], command: &str) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-meeting");
    let mut c = Command::new(script);
    c.arg("--no-install");
    for s in speakers {
        c.args(["--speaker", &format!("{}={}", s.name, s.wav.display())])
            .args(["--offset", &format!("{}={}", s.name, s.offset_s)]);
        if let Some(other) = s.after {
            c.args(["--after", &format!("{}={other}", s.name)]);
        }
    }
    // The bot must leave by itself within 10 s of the last speaker; after that the sandbox
    // sends SIGTERM and the call would not end as `everyone_left`.
    c.args(["--keep-open", "10", "--grace", "20"])
        .args(["--", "sh", "-c"])
        .arg(command)
        .env("MB_BIN", BIN)
        .env(
            "MB_PROBE",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-meeting.d/probe.py"),
        )
        .env("MB_CONFIG", ws.config())
        .env("MEETBOT_STT__MODEL_DIR", model_dir())
        .env_remove("RUST_LOG")
        .current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_with_timeout(
        c.spawn().expect("scripts/local-meeting starts"),
        Duration::from_secs(240),
    )
}

/// The run ended `done` after the bot left an empty room by itself, with a deletion receipt
/// for a committed transcript; returns the transcript.
fn assert_done_after_everyone_left(run: &Run) -> serde_json::Value {
    assert_done_after_everyone_left_through(run, &["joining", "in_call_recording"])
}

/// [`assert_done_after_everyone_left`] with the statuses before `call_ended` given.
fn assert_done_after_everyone_left_through(run: &Run, in_call: &[&str]) -> serde_json::Value {
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let mut want = in_call.to_vec();
    want.extend([
        "call_ended",
        "transcript_committed",
        "recording_deleted",
        "done",
    ]);
    assert_eq!(run.statuses(), want, "{}", run.describe());
    let lines = run.lines();
    let ended = lines
        .iter()
        .find(|l| l["status"] == "call_ended")
        .expect("a call_ended line");
    assert_eq!(ended["reason"], "everyone_left", "{}", run.describe());
    let last = run.last();
    assert_eq!(last["receipt"]["transcript_committed"], true);
    assert_eq!(
        last["receipt"]["method"],
        "crypto-shred(ephemeral-key)+unlink"
    );
    transcript_of(&last)
}

/// Per-speaker WER ≤ 0.3 and each speaker's distinctive word under them only. Prints the WER
/// report (shown with `--no-capture`) and returns it for assertion messages.
fn assert_words_and_attribution(t: &serde_json::Value, speakers: &[Speaker]) -> String {
    let mut report = String::new();
    let mut wers = Vec::new();
    for s in speakers {
        let hyp = speaker_text(t, s.name);
        let w = wer(&s.text, &hyp);
        report.push_str(&format!("{}: WER {w:.3}: {hyp}\n", s.name));
        wers.push(w);
    }
    eprint!("{report}");
    for (s, w) in speakers.iter().zip(wers) {
        assert!(w <= 0.3, "{} WER {w:.3} > 0.3\n{report}", s.name);
    }
    for s in speakers {
        for other in speakers {
            let has = words(&speaker_text(t, other.name)).contains(&s.word.to_string());
            assert_eq!(
                has,
                other.name == s.name,
                "{:?} under {}\n{report}",
                s.word,
                other.name
            );
        }
    }
    report
}

/// Nothing of the speakers' audio left in plaintext, and an empty spool.
fn assert_no_plaintext_left(ws: &Workspace, speakers: &[Speaker]) {
    let spool = ws.spool_files();
    assert!(spool.is_empty(), "spool not empty: {spool:?}");
    for f in ws.files() {
        let bytes = read(&f);
        for s in speakers {
            assert_no_plaintext_audio(&f.display().to_string(), &bytes, &wav_pcm(&s.wav));
        }
    }
}

/// `(start_ms, end_ms)` of each of `speaker`'s segments, in meeting-clock order.
fn spans(t: &serde_json::Value, speaker: &str) -> Vec<(u64, u64)> {
    t["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["speaker"] == speaker)
        .map(|s| {
            (
                s["start_ms"].as_u64().unwrap(),
                s["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_speakers_in_a_real_janus_room_are_transcribed_and_attributed() {
    require_prerequisites();
    let ws = Workspace::new();
    let speakers = [
        Speaker {
            name: "Host",
            wav: ws.path().join("host.wav"),
            text: HOST_TEXT.into(),
            word: "budget",
            offset_s: 0,
            after: None,
        },
        Speaker {
            name: "Guest",
            wav: ws.path().join("guest.wav"),
            text: GUEST_TEXT.into(),
            word: "marketing",
            offset_s: 3,
            after: None,
        },
    ];
    espeak("en-us", HOST_TEXT, &speakers[0].wav);
    espeak("en-gb", GUEST_TEXT, &speakers[1].wav);

    let run = run_meeting(&ws, &speakers);
    let t = assert_done_after_everyone_left(&run);
    assert_words_and_attribution(&t, &speakers);
    assert_no_plaintext_left(&ws, &speakers);
}

#[test]
fn a_late_joiner_and_an_early_leaver_are_transcribed_on_the_meeting_clock() {
    require_prerequisites();
    let ws = Workspace::new();
    let dir = ws.path();
    let speakers = [
        Speaker {
            name: "Anna",
            wav: dir.join("anna.wav"),
            text: format!("{ANNA_TEXT_1} {ANNA_TEXT_2}"),
            word: "budget",
            offset_s: 0,
            after: None,
        },
        Speaker {
            name: "Ben",
            wav: dir.join("ben.wav"),
            text: BEN_TEXT.into(),
            word: "marketing",
            offset_s: 0,
            after: None,
        },
        Speaker {
            name: "Cleo",
            wav: dir.join("cleo.wav"),
            text: CLEO_TEXT.into(),
            word: "office",
            offset_s: CLEO_OFFSET_S,
            after: Some("Ben"),
        },
    ];
    // Anna and Ben publish together the moment the bot is in the room and start talking as
    // soon as their connection is up; the bot subscribes to each new publisher only then
    // (another offer/answer and ICE/DTLS round), and on a loaded 2-core machine that once
    // cost Ben his first 1.5 s ("I will send the marketing"). A second of silence first, as people take before speaking, keeps the
    // test about attribution on the meeting clock rather than about that race.
    let (a1, a2, gap) = (dir.join("a1.wav"), dir.join("a2.wav"), dir.join("gap.wav"));
    let (lead, ben) = (dir.join("lead.wav"), dir.join("ben-speech.wav"));
    silence(1.0, &lead);
    espeak("en-us", ANNA_TEXT_1, &a1);
    espeak("en-us", ANNA_TEXT_2, &a2);
    silence(4.0, &gap);
    concat(&[lead.clone(), a1, gap, a2], &speakers[0].wav);
    espeak("en-gb", BEN_TEXT, &ben);
    concat(&[lead, ben], &speakers[1].wav);
    espeak("en-us+f3", CLEO_TEXT, &speakers[2].wav);

    let run = run_meeting(&ws, &speakers);
    let t = assert_done_after_everyone_left(&run);
    let names: Vec<&str> = t["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for s in &speakers {
        assert!(
            names.contains(&s.name),
            "{} not in participants {names:?}",
            s.name
        );
    }
    let report = assert_words_and_attribution(&t, &speakers);

    // On the meeting clock: Cleo after her offset, Ben done before Cleo starts, and Anna still
    // talking after Ben left.
    let (anna, ben, cleo) = (spans(&t, "Anna"), spans(&t, "Ben"), spans(&t, "Cleo"));
    let segs = format!("Anna {anna:?}\nBen {ben:?}\nCleo {cleo:?}\n");
    eprint!("segments (start_ms, end_ms) on the meeting clock:\n{segs}");
    let segs = format!("{segs}{report}");
    let cleo_start = cleo.iter().map(|s| s.0).min().expect("Cleo has segments");
    let ben_end = ben.iter().map(|s| s.1).max().expect("Ben has segments");
    assert!(
        cleo_start + CLOCK_TOLERANCE_MS >= CLEO_OFFSET_S * 1000,
        "Cleo's first segment starts at {cleo_start} ms, before her offset of {CLEO_OFFSET_S} s\n{segs}"
    );
    assert!(
        ben_end < cleo_start,
        "Ben's last segment ends at {ben_end} ms, after Cleo's first starts ({cleo_start} ms)\n{segs}"
    );
    assert!(
        anna.iter().any(|s| s.0 > ben_end),
        "no segment of Anna's starts after Ben's last one ended\n{segs}"
    );

    assert_no_plaintext_left(&ws, &speakers);
}

/// The bot's WebSocket to Janus is cut (the kernel aborts the TCP connection, as a network
/// failure would) once the first speaker is publishing: the bot rejoins the same room by
/// itself, keeps receiving both speakers, records the time away as a `rejoin` gap and still
/// leaves on its own when the room empties.
#[test]
fn the_bot_rejoins_after_its_janus_connection_is_cut() {
    require_prerequisites();
    let ws = Workspace::new();
    let dir = ws.path();
    let speakers = [
        Speaker {
            name: "Host",
            wav: dir.join("host.wav"),
            text: HOST_TEXT.into(),
            word: "budget",
            offset_s: 0,
            after: None,
        },
        Speaker {
            name: "Guest",
            wav: dir.join("guest.wav"),
            text: GUEST_TEXT.into(),
            word: "marketing",
            offset_s: 0,
            after: None,
        },
    ];
    // Both files open with 6 s of silence: the cut (as soon as one of them publishes) and
    // the rejoin happen in it. The guest's silence is longer so they do not talk at once.
    let (lead, lead2) = (dir.join("lead.wav"), dir.join("lead2.wav"));
    let (h, g) = (dir.join("h.wav"), dir.join("g.wav"));
    silence(6.0, &lead);
    silence(13.0, &lead2);
    espeak("en-us", HOST_TEXT, &h);
    espeak("en-gb", GUEST_TEXT, &g);
    concat(&[lead.clone(), h], &speakers[0].wav);
    concat(&[lead2, g], &speakers[1].wav);

    // Only the bot's own connection is cut (the publishers' stay up): find its local port.
    let command = r#""$MB_BIN" --config "$MB_CONFIG" join "$MEETING_URL" --tenant acme --meeting-id m1 &
pid=$!
python3 "$MB_PROBE" --wait-participants 1 --publishing --timeout 90 >/dev/null || { kill $pid; wait $pid; exit 99; }
port=$(ss -Htnp state established '( dport = :8188 )' | grep "pid=$pid," | awk '{print $3}' | sed 's/.*://' | head -n1)
[ -n "$port" ] || { echo "no bot connection found" >&2; kill $pid; wait $pid; exit 98; }
ss -K state established "( sport = :$port and dport = :8188 )" >/dev/null
echo "cut the bot's Janus connection (local port $port)" >&2
wait $pid"#;
    let run = run_meeting_with(&ws, &speakers, command);
    assert!(
        run.stderr.contains("cut the bot's Janus connection"),
        "{}",
        run.describe()
    );
    // The time away is a `reconnecting` status, then back in the call.
    let t = assert_done_after_everyone_left_through(
        &run,
        &[
            "joining",
            "in_call_recording",
            "reconnecting",
            "in_call_recording",
        ],
    );
    assert_words_and_attribution(&t, &speakers);
    let gaps = t["gaps"].as_array().expect("gaps");
    let rejoins: Vec<_> = gaps.iter().filter(|g| g["kind"] == "rejoin").collect();
    assert_eq!(rejoins.len(), 1, "{gaps:?}\n{}", run.describe());
    let (from, to) = (
        rejoins[0]["start_ms"].as_u64().unwrap(),
        rejoins[0]["end_ms"].as_u64().unwrap(),
    );
    eprintln!("rejoin gap {from}..{to} ms");
    assert!(to > from && to - from < 10_000, "{from}..{to}");
    assert_eq!(t["complete"], false);
    // Everything said came after the bot was back.
    for s in &speakers {
        let first = spans(&t, s.name).first().map(|s| s.0).expect("segments");
        assert!(
            first >= to,
            "{} starts at {first} ms, inside the gap {from}..{to}",
            s.name
        );
    }
    assert_no_plaintext_left(&ws, &speakers);
}
