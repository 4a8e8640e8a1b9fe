//! End to end: crashes, commit failures, bad input and hostile STT servers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use meetbot::recording::{self, KeyProvider, LocalKeyFile};

fn one_speaker(ws: &Workspace, pace: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let wav = ws.path().join("solo.wav");
    espeak("en-us", text, &wav);
    let m = ws.manifest(&[("Solo", &wav, 0)], pace);
    (m, wav)
}

fn fatal_with(run: &Run, needle: &str) -> serde_json::Value {
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let last = run.last();
    assert_eq!(last["status"], "fatal", "{}", run.describe());
    let reason = last["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains(needle),
        "reason {reason:?} should mention {needle:?}"
    );
    last
}

#[test]
fn sigkill_mid_meeting_leaves_only_ciphertext_and_the_next_start_sweeps_it() {
    sigkill_mid_meeting(None);
}

/// The same with the key file: the key custody whose leftovers stay
/// decryptable (the test decrypts them, proving they are the meeting's audio).
#[test]
fn sigkill_mid_meeting_with_the_local_key_file_leaves_decryptable_ciphertext() {
    sigkill_mid_meeting(Some("local_file"));
}

fn sigkill_mid_meeting(provider: Option<&str>) {
    let mut ws = Workspace::new();
    // A tiny memory budget so sealed chunks spill to the spool within a second.
    ws.extra_config = "[recording]\nmemory_budget_kib = 0\nchunk_kib = 1\n".into();
    if let Some(p) = provider {
        ws.extra_config += &format!("[keys]\nprovider = {p:?}\n");
    }
    let long = "This meeting is about the quarterly roadmap. We will discuss hiring, the budget, \
                and the customer feedback from the last release in some detail.";
    let (m, wav) = one_speaker(&ws, "realtime", long);
    let child = ws.spawn_join(&format!("replay:{}", m.display()), &[]);
    // Wait until ciphertext has reached the spool.
    let start = std::time::Instant::now();
    loop {
        let spilled: u64 = ws
            .spool_files()
            .iter()
            .filter(|p| !p.extension().is_some_and(|e| e == "json" || e == "lock"))
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        if spilled > 8_000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing spilled: {:?}",
            ws.spool_files()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = child.id();
    // The process runs without core dumps: a crash cannot put audio or keys on disk.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().skip(4).take(2).all(|v| v == "0"),
        "{core}"
    );
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let _ = wait_with_timeout(child, Duration::from_secs(10));

    // Every byte in the spool: no audio headers, no source PCM, no plaintext key.
    let files = ws.spool_files();
    assert!(!files.is_empty());
    let rec_dirs = ws.recording_dirs();
    assert_eq!(rec_dirs.len(), 1, "{rec_dirs:?}");
    let header = recording::read_header(&rec_dirs[0]).unwrap();
    let pcm = wav_pcm(&wav);
    for f in &files {
        assert_no_plaintext_audio(&f.display().to_string(), &read(f), &pcm);
    }
    if provider.is_none() {
        // Default custody: the key was never written anywhere, so nothing
        // can decrypt what the killed process left (tests/recording_crash.rs
        // proves it byte by byte).
        assert!(!ws.key_file().exists(), "a key file was created");
        assert_eq!(header.wrapped_key.provider, "ephemeral");
        assert!(header.wrapped_key.wrapped.is_empty(), "{header:?}");
        return sweep_and_check_receipt(
            &ws,
            &header.id,
            "orphan-sweep(ephemeral-key-died-with-process)+unlink",
        );
    }
    let kek = LocalKeyFile::open_or_create(ws.key_file()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dek = rt.block_on(kek.unwrap(&header.wrapped_key)).unwrap();
    for f in &files {
        let bytes = read(f);
        assert!(
            !contains(&bytes, dek.as_bytes()),
            "{} holds the plaintext key",
            f.display()
        );
        assert!(
            !contains(&bytes, hex::encode(dek.as_bytes()).as_bytes()),
            "{} holds the hex key",
            f.display()
        );
    }
    // …and it is really the meeting's audio, encrypted: it decrypts to Opus packets.
    let packets = recording::open_recording(&rec_dirs[0], &dek)
        .unwrap()
        .filter_map(Result::ok)
        .count();
    assert!(packets > 20, "{packets} packets decrypted");
    sweep_and_check_receipt(&ws, &header.id, "orphan-sweep(local-key-file)+unlink");
}

/// The next start sweeps the orphan, with a receipt that states its custody.
fn sweep_and_check_receipt(ws: &Workspace, recording_id: &str, method: &str) {
    let (m2, _) = one_speaker(ws, "fast", "Short.");
    let run = ws.join(&format!("replay:{}", m2.display()), &["--meeting-id", "m2"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(ws.spool_files().is_empty(), "{:?}", ws.spool_files());
    let audit = std::fs::read_to_string(ws.audit_log()).unwrap();
    let swept: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["receipt"]["recording_id"] == recording_id)
        .collect();
    assert_eq!(swept.len(), 1, "{audit}");
    assert_eq!(swept[0]["receipt"]["transcript_committed"], false);
    assert_eq!(swept[0]["receipt"]["method"], method, "{audit}");
    assert!(swept[0]["receipt"]["reason"]
        .as_str()
        .unwrap()
        .contains("orphaned"));
}

#[test]
fn commit_failure_keeps_the_recording_encrypted_then_deletes_it_at_max_age() {
    let mut ws = Workspace::new();
    // The transcript store's root is a regular file: every commit fails.
    std::fs::create_dir_all(ws.data()).unwrap();
    std::fs::write(ws.data().join("transcripts"), b"not a directory").unwrap();
    ws.extra_config = "[recording]\nmax_age = \"12s\"\nmemory_budget_kib = 0\nchunk_kib = 1\n\
                       [auto_leave]\nmax_duration = \"0s\"\n\
                       [lifecycle]\ncommit_retry_initial = \"200ms\"\ncommit_retry_max = \"1s\"\n"
        .into();
    let (m, wav) = one_speaker(
        &ws,
        "fast",
        "Please keep this recording until the store comes back.",
    );
    let child = ws.spawn_join(&format!("replay:{}", m.display()), &[]);
    // While commits fail, the recording is retained, encrypted.
    std::thread::sleep(Duration::from_secs(7));
    let retained = ws.spool_files();
    assert!(
        retained
            .iter()
            .any(|p| p.metadata().map(|m| m.len()).unwrap_or(0) > 0),
        "{retained:?}"
    );
    let pcm = wav_pcm(&wav);
    for f in &retained {
        assert_no_plaintext_audio(&f.display().to_string(), &read(f), &pcm);
    }
    let run = wait_with_timeout(child, Duration::from_secs(60));
    let last = fatal_with(&run, "maximum age");
    assert!(run.statuses().contains(&"recording_deleted".to_string()));
    assert!(!run.statuses().contains(&"transcript_committed".to_string()));
    let r = &last["receipt"];
    assert_eq!(r["transcript_committed"], false, "{last}");
    assert!(
        r["reason"].as_str().unwrap().contains("not committed"),
        "{last}"
    );
    assert!(ws.spool_files().is_empty());
    let mut verify = ws.command();
    verify.args(["audit", "verify"]);
    assert_eq!(Run::from(verify.output().unwrap()).code, Some(0));
}

#[test]
fn edited_audit_entry_fails_verification() {
    let ws = Workspace::new();
    let (m, _) = one_speaker(&ws, "fast", "One.");
    assert_eq!(
        ws.join(&format!("replay:{}", m.display()), &[]).code,
        Some(0)
    );
    let (m, _) = one_speaker(&ws, "fast", "Two.");
    assert_eq!(
        ws.join(&format!("replay:{}", m.display()), &["--meeting-id", "m2"])
            .code,
        Some(0)
    );
    let verify = || {
        let mut c = ws.command();
        c.args(["audit", "verify"]);
        Run::from(c.output().unwrap())
    };
    let ok = verify();
    assert_eq!(ok.code, Some(0), "{}", ok.describe());
    assert!(ok.stdout.contains("\"entries\":2"), "{}", ok.stdout);
    let log = std::fs::read_to_string(ws.audit_log()).unwrap();
    let edited = log.replacen("\"tenant\":\"acme\"", "\"tenant\":\"evil\"", 1);
    assert_ne!(edited, log);
    std::fs::write(ws.audit_log(), edited).unwrap();
    let bad = verify();
    assert_eq!(bad.code, Some(1), "{}", bad.describe());
    assert!(bad.stdout.contains("line 1"), "{}", bad.stdout);
}

#[test]
fn bad_input_fails_fast_with_a_clear_fatal_status() {
    let ws = Workspace::new();
    let d = ws.path();
    let good = d.join("good.wav");
    espeak("en-us", "Hello.", &good);
    std::fs::write(d.join("junk.wav"), b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").unwrap();
    std::fs::write(d.join("text.wav"), b"this is not audio at all").unwrap();

    let cases: Vec<(String, &str)> = vec![
        ("zoom:https://example.invalid/j/1".into(), "unknown scheme"),
        ("no-scheme-at-all".into(), "scheme"),
        (format!("replay:{}", d.join("missing.json").display()), "missing.json"),
        (format!("replay:{}", write(d, "empty.json", r#"{"participants":[]}"#).display()), "participant"),
        (format!("replay:{}", write(d, "broken.json", r#"{"participants":[{"name":"A""#).display()), "manifest"),
        (
            format!("replay:{}", write(d, "unknown.json", r#"{"participants":[{"name":"A","wav":"good.wav"}],"speed":2}"#).display()),
            "speed",
        ),
        (
            format!("replay:{}", write(d, "nofile.json", r#"{"participants":[{"name":"A","wav":"nope.wav"}]}"#).display()),
            "nope.wav",
        ),
        (
            format!("replay:{}", write(d, "junk.json", r#"{"participants":[{"name":"A","wav":"junk.wav"}]}"#).display()),
            "junk.wav",
        ),
        (
            format!("replay:{}", write(d, "text.json", r#"{"participants":[{"name":"A","wav":"text.wav"}]}"#).display()),
            "text.wav",
        ),
        (
            format!(
                "replay:{}",
                write(d, "dup.json", r#"{"participants":[{"name":"A","wav":"good.wav"},{"name":"A","wav":"good.wav"}]}"#)
                    .display()
            ),
            "name",
        ),
    ];
    for (url, needle) in cases {
        let run = ws.join(&url, &[]);
        fatal_with(&run, needle);
        assert!(ws.spool_files().is_empty(), "{url}: spool not empty");
    }
    // Bad flags and config name the key.
    let run = ws.join(
        &format!("replay:{}", d.join("missing.json").display()),
        &["--tenant", "../etc"],
    );
    fatal_with(&run, "tenant");
    let mut c = ws.command();
    c.env("MEETBOT_STT__THREADS", "lots")
        .args(["join", "replay:x"]);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("stt.threads"), "{}", run.describe());
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn corrupt_key_file_and_missing_model_are_fatal_and_named() {
    let mut ws = Workspace::new();
    // The key file is read only when chosen.
    ws.extra_config = "[keys]\nprovider = \"local_file\"\n".into();
    let (m, _) = one_speaker(&ws, "fast", "Hello there.");
    std::fs::create_dir_all(ws.key_file().parent().unwrap()).unwrap();
    std::fs::write(ws.key_file(), b"short").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.key_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = ws.join(&format!("replay:{}", m.display()), &[]);
    fatal_with(&run, "kek.key");
    std::fs::remove_file(ws.key_file()).unwrap();

    let mut c = ws.command();
    c.env("MEETBOT_STT__MODEL_DIR", ws.path().join("no-model"))
        .args([
            "join",
            &format!("replay:{}", m.display()),
            "--meeting-id",
            "m9",
        ]);
    let run = Run::from(c.output().unwrap());
    fatal_with(&run, "no-model");
    assert!(ws.spool_files().is_empty());
}

/// A fake OpenAI-compatible server that answers every request with HTTP 500,
/// or accepts connections and never answers.
fn hostile_stt_server(mode: &'static str) -> u16 {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if mode == "hang" {
                held.push(s);
                continue;
            }
            // Read the whole request (headers, then content-length bytes) so the
            // client sees the answer, not a reset.
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 65536];
            let mut want: Option<usize> = None;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                if want.is_none() {
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        want = Some(end + 4 + len);
                    }
                }
                if want.is_some_and(|w| req.len() >= w) {
                    break;
                }
            }
            let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // "flaky": the first two requests fail with a 500 (transient), the
            // rest succeed. "reject": the first gets a 400 (permanent), the
            // rest succeed.
            let (status, body) = if (mode == "flaky" && n >= 2) || (mode == "reject" && n >= 1) {
                (
                    "200 OK",
                    r#"{"text":"all good","segments":[{"start":0.0,"end":1.0,"text":"all good"}]}"#,
                )
            } else if mode == "reject" {
                (
                    "400 Bad Request",
                    r#"{"error":{"message":"audio rejected","type":"invalid_request_error"}}"#,
                )
            } else {
                (
                    "500 Internal Server Error",
                    r#"{"error":{"message":"engine exploded","type":"server_error"}}"#,
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn stt_server_that_errors_or_hangs_is_fatal_bounded_and_leaves_nothing() {
    // A provider that never recovers: the utterance waits in the queue (by
    // reference, requeued after each failed round) until the recording's
    // maximum age, then the recording is destroyed with a receipt.
    for mode in ["500", "hang"] {
        let needle = "maximum age";
        let mut ws = Workspace::new();
        ws.extra_config = "[stt]\ntimeout = \"1s\"\nattempts = 2\ninitial_backoff = \"100ms\"\n\
             [recording]\nmax_age = \"12s\"\n[auto_leave]\nmax_duration = \"0s\"\n"
            .into();
        let (m, wav) = one_speaker(&ws, "fast", "Is anybody listening to this meeting?");
        let port = hostile_stt_server(mode);
        let url = format!("http://127.0.0.1:{port}/v1");
        let child = ws.spawn_join(
            &format!("replay:{}", m.display()),
            &["--stt", "openai", "--stt-url", &url],
        );
        let run = wait_with_timeout(child, Duration::from_secs(30));
        let last = fatal_with(&run, needle);
        assert_eq!(last["receipt"]["transcript_committed"], false, "{last}");
        assert!(ws.spool_files().is_empty());
        for f in ws.files() {
            assert_no_plaintext_audio(&f.display().to_string(), &read(&f), &wav_pcm(&wav));
        }
    }
}

#[test]
fn full_spool_disk_is_fatal_keeps_what_was_captured_and_leaves_nothing() {
    // The spool is a 16 KiB tmpfs mounted in a private mount namespace (needs
    // root, as CI has): after the header and lock files, only a few KiB of
    // ciphertext fit.
    let mut ws = Workspace::new();
    ws.extra_config = "[recording]\nmemory_budget_kib = 0\nchunk_kib = 1\n".into();
    let text = "We are filling the spool until it is full. The bot must stop capturing, \
                keep what it already has, and still delete everything it wrote.";
    let (m, wav) = one_speaker(&ws, "fast", text);
    std::fs::create_dir_all(ws.spool()).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=16k,mode=0700 tmpfs {spool} || exit 99; \"$@\"; rc=$?; \
         echo \"SPOOL-LEFT:[$(ls -A {spool} | grep -v '^.lock$' | tr '\\n' ' ')]\" >&2; exit $rc",
        spool = ws.spool().display()
    );
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
        BIN,
    ])
    .arg("--config")
    .arg(ws.config())
    .args([
        "join",
        &format!("replay:{}", m.display()),
        "--tenant",
        "acme",
        "--meeting-id",
        "m1",
    ])
    .env("MEETBOT_STT__MODEL_DIR", model_dir())
    .env_remove("RUST_LOG")
    .current_dir(ws.path());
    let run = Run::from(c.output().unwrap());
    let last = fatal_with(&run, "spool");
    assert!(last["reason"].as_str().unwrap().contains("full"), "{last}");
    // What was captured before the disk filled was still transcribed and committed.
    assert!(
        run.statuses().contains(&"transcript_committed".to_string()),
        "{}",
        run.describe()
    );
    assert_eq!(last["receipt"]["transcript_committed"], true, "{last}");
    // Nothing was left in the full tmpfs (listed from inside the namespace)…
    assert!(run.stderr.contains("SPOOL-LEFT:[]"), "{}", run.describe());
    // …nor in the directory underneath it.
    assert!(ws.spool_files().is_empty(), "{:?}", ws.spool_files());
    for f in ws.files() {
        assert_no_plaintext_audio(&f.display().to_string(), &read(&f), &wav_pcm(&wav));
    }
}

/// Two sentences with a pause between them, as one speaker: two utterances.
fn two_utterances(ws: &Workspace) -> std::path::PathBuf {
    let d = ws.path();
    espeak("en-us", "The first sentence is lost.", &d.join("a.wav"));
    espeak("en-us", "The second sentence arrives.", &d.join("b.wav"));
    let st = Command::new("sox")
        .args(["-q", "-D", "-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(d.join("gap.wav"))
        .args(["trim", "0", "2"])
        .status()
        .unwrap();
    assert!(st.success());
    let wav = d.join("solo.wav");
    concat(&[d.join("a.wav"), d.join("gap.wav"), d.join("b.wav")], &wav);
    ws.manifest(&[("Solo", &wav, 0)], "fast")
}

#[test]
fn one_rejected_utterance_is_a_gap_not_a_lost_meeting() {
    let mut ws = Workspace::new();
    ws.extra_config = "[stt]\nattempts = 2\ninitial_backoff = \"50ms\"\n".into();
    let m = two_utterances(&ws);
    // A permanent refusal of the first utterance: a gap, the rest transcribed.
    let port = hostile_stt_server("reject");
    let url = format!("http://127.0.0.1:{port}/v1");
    let run = ws.join(
        &format!("replay:{}", m.display()),
        &["--stt", "openai", "--stt-url", &url],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let last = run.last();
    assert_eq!(last["status"], "done");
    assert_eq!(last["transcript"]["complete"], false);
    let t = transcript_of(&last);
    assert_eq!(t["complete"], false);
    assert_eq!(t["gaps"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t["gaps"][0]["kind"], "transcription_failed");
    assert!(speaker_text(&t, "Solo").contains("all good"));
}

#[test]
fn a_transiently_failing_utterance_is_retried_from_the_recording_not_lost() {
    let mut ws = Workspace::new();
    ws.extra_config =
        "[stt]\nattempts = 2\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n".into();
    let m = two_utterances(&ws);
    // The first utterance's attempts both get a 500: it goes back to the
    // queue (by reference into the recording) and is transcribed later.
    let port = hostile_stt_server("flaky");
    let url = format!("http://127.0.0.1:{port}/v1");
    let run = ws.join(
        &format!("replay:{}", m.display()),
        &["--stt", "openai", "--stt-url", &url],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let last = run.last();
    assert_eq!(last["status"], "done");
    assert_eq!(last["transcript"]["complete"], true, "{last}");
    assert!(
        last["transcribing"]["requeued"].as_u64() >= Some(1),
        "{last}"
    );
    let t = transcript_of(&last);
    assert_eq!(t["gaps"].as_array().map(Vec::len), Some(0), "{t}");
    let segs = t["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{t}");
    assert!(segs.iter().all(|s| s["text"] == "all good"), "{t}");
}

#[test]
fn an_audit_log_that_cannot_take_a_receipt_stops_the_bot_before_recording() {
    let ws = Workspace::new();
    let (m, _) = one_speaker(&ws, "fast", "Hello.");
    assert_eq!(
        ws.join(&format!("replay:{}", m.display()), &[]).code,
        Some(0)
    );
    // A torn last line, as a crash mid-write would leave.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.audit_log())
        .unwrap();
    log.write_all(b"{\"seq\":2,").unwrap();
    let run = ws.join(&format!("replay:{}", m.display()), &["--meeting-id", "m2"]);
    let last = fatal_with(&run, "audit log");
    assert!(last.get("recording_id").is_none(), "{last}");
    assert!(ws.spool_files().is_empty());
    assert!(!ws.data().join("transcripts/acme/m2.json").exists());
}

#[test]
fn sigterm_during_startup_still_ends_cleanly_with_a_receipt() {
    let ws = Workspace::new();
    let (m, _) = one_speaker(
        &ws,
        "realtime",
        "Hello there, this is a test of stopping early.",
    );
    for delay_ms in [100, 400] {
        let child = ws.spawn_join(
            &format!("replay:{}", m.display()),
            &["--meeting-id", &format!("early{delay_ms}")],
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let run = wait_with_timeout(child, Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "after {delay_ms} ms: {}", run.describe());
        let last = run.last();
        assert_eq!(last["status"], "done", "{}", run.describe());
        assert!(last["receipt"]["recording_id"].is_string(), "{last}");
        assert!(ws.spool_files().is_empty());
    }
}
