//! SIGKILL mid-meeting leaves only ciphertext in the spool, and the next
//! start's sweep removes it (while leaving live recordings alone).
//!
//! The child process is this test binary re-run with an environment variable
//! that turns `crash_child` into a recorder.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine as _;
use meetbot::core::media::{OpusPacket, ParticipantId};
use meetbot::recording::{
    open_recording, read_header, sweep_orphans, DataKey, KeyProvider, LocalKeyFile, Recording,
    RecordingConfig, RecordingMeta, MIN_CHUNK_BYTES,
};

const CHILD_ENV: &str = "MEETBOT_TEST_CRASH_CHILD_DIR";
const CUSTODY_ENV: &str = "MEETBOT_TEST_CUSTODY_CHILD_DIR";
/// `keys.provider` for the custody child; unset = the default configuration.
const CUSTODY_PROVIDER_ENV: &str = "MEETBOT_TEST_CUSTODY_PROVIDER";
const MARKER: &[u8] = b"PLAINTEXT-OPUS-MARKER";
const PARTICIPANT: &str = "feed-plaintext-participant";

/// A payload that looks like 16-bit PCM of a sine wave plus a marker, so a
/// leak of either shape is easy to find.
fn payload(i: u32) -> Vec<u8> {
    let mut p = MARKER.to_vec();
    for s in 0..80u32 {
        let v = ((f64::from(s + i) * 0.3).sin() * 12000.0) as i16;
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

fn config(spool: &Path) -> RecordingConfig {
    RecordingConfig {
        spool_dir: spool.to_path_buf(),
        memory_budget_bytes: 4 * MIN_CHUNK_BYTES,
        chunk_bytes: MIN_CHUNK_BYTES,
    }
}

/// The recorder run in the child process. A no-op in a normal test run.
#[tokio::test]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let kek = LocalKeyFile::open_or_create(dir.join("keys/kek")).unwrap();
    let dek = DataKey::generate();
    let wrapped = kek.wrap(&dek).await.unwrap();
    println!("KEY={}", hex::encode(dek.as_bytes()));
    let meta = RecordingMeta {
        meeting_id: "meeting-crash".into(),
        tenant: "tenant-crash".into(),
    };
    let mut rec = Recording::create(&config(&dir.join("spool")), dek, wrapped, meta).unwrap();
    let pid = ParticipantId(PARTICIPANT.into());
    let mut i = 0u32;
    loop {
        let p = OpusPacket {
            seq: i as u16,
            at_ms: u64::from(i) * 20,
            payload: payload(i).into(),
        };
        rec.append(&pid, &p).unwrap();
        i += 1;
        if i == 400 {
            assert!(rec.stats().spilled_chunks > 0);
            println!("READY");
        }
        if i.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sigkill_leaves_only_ciphertext_and_next_start_sweeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut key_hex = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print "test crash_child ... " on the same line first.
        if let Some((_, k)) = line.split_once("KEY=") {
            key_hex = Some(k.trim().to_string());
        }
        if line.ends_with("READY") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(30)); // Kill it mid-append.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let key_hex = key_hex.expect("child printed its key");
    let key = hex::decode(&key_hex).unwrap();

    // Scan every byte the child left in the spool.
    let mut files = Vec::new();
    all_files(&spool, &mut files);
    let mut spilled = 0;
    for f in &files {
        let data = fs::read(f).unwrap();
        let name = f.display();
        if f.ends_with("chunks.bin") {
            spilled = data.len();
        }
        assert!(!contains(&data, &key), "{name} holds the plaintext key");
        assert!(
            !contains(&data, key_hex.as_bytes()),
            "{name} holds the key in hex"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        assert!(
            !contains(&data, &b64.as_bytes()[..40]),
            "{name} holds the key in base64"
        );
        assert!(!contains(&data, MARKER), "{name} holds plaintext payload");
        assert!(
            !contains(&data, PARTICIPANT.as_bytes()),
            "{name} holds a participant id"
        );
        assert!(
            !contains(&data, b"RIFF") && !contains(&data, b"WAVE"),
            "{name} holds WAV"
        );
        for i in [0u32, 7, 123, 399] {
            let pcm = &payload(i)[MARKER.len()..MARKER.len() + 32];
            assert!(
                !contains(&data, pcm),
                "{name} holds PCM-shaped payload bytes"
            );
        }
    }
    assert!(
        spilled > 0,
        "the child spilled nothing; the scan proved nothing"
    );

    // A live recording in the same spool must survive the sweep.
    let meta = RecordingMeta {
        meeting_id: "live".into(),
        tenant: "t".into(),
    };
    let kek = LocalKeyFile::open_or_create(tmp.path().join("keys/kek")).unwrap();
    let dek = DataKey::generate();
    let wrapped = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(kek.wrap(&dek))
        .unwrap();
    let live = Recording::create(&config(&spool), dek, wrapped, meta).unwrap();

    let report = sweep_orphans(&spool).expect("sweep");
    assert_eq!(report.destroyed.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.live, vec![live.id().to_string()]);
    let d = &report.destroyed[0];
    assert_eq!(
        (d.meeting_id.as_str(), d.tenant.as_str()),
        ("meeting-crash", "tenant-crash")
    );
    // The child wrapped its key with the local key file, which survives it.
    assert_eq!(d.method, "orphan-sweep(local-key-file)+unlink");
    assert!(d.chunks > 0 && d.ciphertext_bytes > 0, "{d:?}");
    assert!(!spool.join(&d.recording_id).exists());
    assert!(live.dir().exists());

    // Sweeping again finds nothing more.
    let again = sweep_orphans(&spool).unwrap();
    assert!(again.destroyed.is_empty());
    live.destroy().unwrap();
    let left: Vec<_> = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(".lock")]);
}

#[test]
fn concurrent_sweeps_destroy_each_orphan_once() {
    // One recording, one receipt, always. The race this guards against (a
    // sweep locking a directory another sweep has just removed) needs an
    // unlucky interleaving, so run many rounds of many sweeps; the
    // interleaving itself is reproduced every time by the unit test
    // `a_directory_removed_between_open_and_lock_is_not_ours`.
    for round in 0..25 {
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().to_path_buf();
        // Orphans as a crash leaves them: directory, header, torn chunk file.
        for i in 0..30 {
            let dir = spool.join(uuid::Uuid::new_v4().to_string());
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("chunks.bin"), vec![i as u8; 10]).unwrap();
            fs::write(dir.join("header.json.tmp"), b"{}").unwrap();
        }
        // Foreign entries are left alone.
        fs::write(spool.join("notes.txt"), b"keep").unwrap();
        fs::create_dir(spool.join("not-a-uuid")).unwrap();

        let sweeps = 6;
        let barrier = Arc::new(Barrier::new(sweeps));
        let reports: Vec<_> = (0..sweeps)
            .map(|_| {
                let (spool, barrier) = (spool.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    sweep_orphans(&spool).expect("sweep")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let mut ids: Vec<&str> = reports
            .iter()
            .flat_map(|r| r.destroyed.iter().map(|d| d.recording_id.as_str()))
            .collect();
        assert_eq!(ids.len(), 30, "round {round}: {reports:?}");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 30, "round {round}: a recording destroyed twice");
        assert!(
            reports.iter().all(|r| r.failed.is_empty()),
            "round {round}: {reports:?}"
        );
        for r in &reports {
            for d in &r.destroyed {
                // Unreadable header: ids unknown, torn chunk not counted.
                assert_eq!((d.meeting_id.as_str(), d.chunks), ("", 0));
            }
        }
        let mut left: Vec<_> = fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![".lock", "not-a-uuid", "notes.txt"]);
    }
}

#[test]
fn sweep_of_missing_spool_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let r = sweep_orphans(&tmp.path().join("none")).unwrap();
    assert!(r.destroyed.is_empty() && r.live.is_empty() && r.failed.is_empty());
}

// ---------------------------------------------------------------------------
// Key custody: is a copy of the spool, taken while the recording was live,
// decryptable after the process is killed? With the default provider it must
// not be, by anything on disk; with `local_file` it is (the documented
// weakness, tested so the docs stay true).

/// The recorder for the custody tests: the key provider comes from the real
/// configuration (defaults, plus `keys.provider` when the parent sets one),
/// built as `meetbot join` builds it. A no-op in a normal test run.
#[tokio::test]
async fn custody_child() {
    let Some(dir) = std::env::var_os(CUSTODY_ENV).map(PathBuf::from) else {
        return;
    };
    let mut env = vec![(
        "MEETBOT_PATHS__DATA_DIR".to_string(),
        dir.display().to_string(),
    )];
    if let Ok(p) = std::env::var(CUSTODY_PROVIDER_ENV) {
        env.push(("MEETBOT_KEYS__PROVIDER".into(), p));
    }
    let cfg = meetbot::config::Config::load(None, env).unwrap();
    let keys = meetbot::fleet::build_keys(&cfg, None).await.unwrap();
    let dek = DataKey::generate();
    let wrapped = keys.wrap(&dek).await.unwrap();
    // For the parent's positive control only: proves the copy it cannot
    // decrypt otherwise is real ciphertext under this key.
    println!("KEY={}", hex::encode(dek.as_bytes()));
    let meta = RecordingMeta {
        meeting_id: "meeting-custody".into(),
        tenant: "tenant-custody".into(),
    };
    let mut rec = Recording::create(&config(&cfg.paths.spool_dir()), dek, wrapped, meta).unwrap();
    let pid = ParticipantId(PARTICIPANT.into());
    for i in 0..400u32 {
        let p = OpusPacket {
            seq: i as u16,
            at_ms: u64::from(i) * 20,
            payload: payload(i).into(),
        };
        rec.append(&pid, &p).unwrap();
    }
    assert!(rec.stats().spilled_chunks > 0);
    println!("READY");
    // Live until killed: the lock is held, part of the audio only in memory.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct Killed {
    data: tempfile::TempDir,
    /// The spool as copied while the recording was live.
    copy: PathBuf,
    key: Vec<u8>,
}

/// Runs the custody child with `provider` (None = default config), copies its
/// spool while it records, SIGKILLs it.
fn record_copy_and_kill(provider: Option<&str>) -> Killed {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "custody_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CUSTODY_ENV, data.path())
    .env_remove(CUSTODY_PROVIDER_ENV)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("MEETBOT_") && k != CUSTODY_ENV {
            cmd.env_remove(k);
        }
    }
    if let Some(p) = provider {
        cmd.env(CUSTODY_PROVIDER_ENV, p);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut key = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some((_, k)) = line.split_once("KEY=") {
            key = Some(hex::decode(k.trim()).unwrap());
        }
        if line.ends_with("READY") {
            break;
        }
    }
    let key = key.expect("child printed its key");
    let copy = data.path().join("stolen-copy");
    let spool = meetbot_spool(data.path());
    copy_dir(&spool, &copy);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Killed { data, copy, key }
}

fn meetbot_spool(data_dir: &Path) -> PathBuf {
    data_dir.join("spool")
}

fn copy_dir(from: &Path, to: &Path) {
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    fs::create_dir_all(to).unwrap();
    for e in entries {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The one recording directory under `spool`.
fn recording_dir(spool: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Decrypts the recording in `dir` with `key`: the packets, or the first error.
fn decrypt_with(dir: &Path, key: &[u8]) -> Result<Vec<OpusPacket>, String> {
    let mut raw: [u8; 32] = key.try_into().map_err(|_| "not 32 bytes".to_string())?;
    let dek = DataKey::from_bytes(&mut raw);
    open_recording(dir, &dek)
        .map_err(|e| e.to_string())?
        .map(|r| r.map(|(_, p)| p).map_err(|e| e.to_string()))
        .collect()
}

/// Every 32-byte string a file could hold a key as: raw windows, hex runs and
/// base64 runs (standard and URL-safe).
fn key_candidates(bytes: &[u8]) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = bytes.windows(32).map(|w| w.try_into().unwrap()).collect();
    let runs = |ok: fn(u8) -> bool| -> Vec<&[u8]> {
        bytes.split(|b| !ok(*b)).filter(|r| r.len() >= 43).collect()
    };
    for run in runs(|b| b.is_ascii_hexdigit()) {
        for w in run.windows(64) {
            if let Ok(k) = hex::decode(w) {
                out.push(k.try_into().unwrap());
            }
        }
    }
    fn b64(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
    }
    for run in runs(b64) {
        for w in run.windows(43) {
            for engine in [
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                if let Ok(k) = engine.decode(w) {
                    if let Ok(k) = <[u8; 32]>::try_from(k) {
                        out.push(k);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn default_custody_a_spool_copied_from_a_killed_process_cannot_be_decrypted() {
    let k = record_copy_and_kill(None);
    let copy_dir = recording_dir(&k.copy);
    // Positive control: the copy is the real ciphertext, under the key that
    // existed only in the killed process.
    let packets = decrypt_with(&copy_dir, &k.key).expect("the real key decrypts the copy");
    assert!(packets.len() > 20, "{} packets", packets.len());
    assert!(contains(&packets[0].payload, MARKER));

    // 1. The header holds no usable wrapped key.
    let header = read_header(&copy_dir).unwrap();
    assert_eq!(header.wrapped_key.provider, "ephemeral", "{header:?}");
    assert_eq!(header.wrapped_key.alg, "none", "{header:?}");
    assert!(header.wrapped_key.wrapped.is_empty(), "{header:?}");

    // 2. Nothing on disk but the spool (and the copy): no key file.
    let mut files = Vec::new();
    all_files(k.data.path(), &mut files);
    for f in &files {
        let rel = f.strip_prefix(k.data.path()).unwrap();
        let top = rel.components().next().unwrap().as_os_str();
        assert!(
            top == "spool" || top == "stolen-copy",
            "a file outside the spool: {}",
            rel.display()
        );
        let name = f.file_name().unwrap();
        assert!(
            name == "header.json" || name == "chunks.bin" || name == ".lock",
            "unexpected file {}",
            rel.display()
        );
    }

    // 3. No string of any file on disk, raw, hex or base64, is the key.
    let mut tried = 0usize;
    for f in &files {
        for candidate in key_candidates(&fs::read(f).unwrap()) {
            tried += 1;
            assert_ne!(&candidate[..], &k.key[..], "{} holds the key", f.display());
        }
    }
    assert!(
        tried > 10_000,
        "only {tried} candidates: the scan proved nothing"
    );
    // …and a few of them really are tried as keys (the scan's own control).
    assert!(decrypt_with(&copy_dir, &[0u8; 32]).is_err());

    // 4. The sweep's receipt says exactly that.
    let audit = meetbot::audit::AuditLog::open(k.data.path().join("audit.jsonl")).unwrap();
    let receipts =
        meetbot::bot::sweep_spool_receipts(&config(&meetbot_spool(k.data.path())), &audit).unwrap();
    assert_eq!(receipts.len(), 1);
    let r = &receipts[0];
    assert_eq!(
        r.method,
        "orphan-sweep(ephemeral-key-died-with-process)+unlink"
    );
    let reason = r.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("existed only in that process's memory")
            && reason.contains("undecryptable since the process died"),
        "{reason}"
    );
    assert!(!header.id.is_empty() && r.recording_id == header.id);
}

#[test]
fn local_file_custody_a_spool_copy_stays_decryptable_after_the_sweep() {
    let k = record_copy_and_kill(Some("local_file"));
    let copy_dir = recording_dir(&k.copy);
    let audit = meetbot::audit::AuditLog::open(k.data.path().join("audit.jsonl")).unwrap();
    let receipts =
        meetbot::bot::sweep_spool_receipts(&config(&meetbot_spool(k.data.path())), &audit).unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].method, "orphan-sweep(local-key-file)+unlink");
    assert!(receipts[0]
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("stays decryptable"));
    // The recording is destroyed, but the key file on the same disk unwraps
    // the copy's key: the documented weakness of `local_file`.
    let kek = LocalKeyFile::open_or_create(k.data.path().join("keys/kek.key")).unwrap();
    let header = read_header(&copy_dir).unwrap();
    let dek = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(kek.unwrap(&header.wrapped_key))
        .expect("the key file unwraps the copied header");
    assert_eq!(dek.as_bytes().as_slice(), k.key.as_slice());
    let packets = decrypt_with(&copy_dir, dek.as_bytes()).expect("decrypts");
    assert!(packets.len() > 20 && contains(&packets[0].payload, MARKER));
}
