//! `meetbot sweep` against a real Azurite: expired transcripts are deleted
//! with receipts (audit log and the tenant's receipt chain), nothing else is touched,
//! two sweeps at once delete each blob once, and orphaned recordings in the
//! spool are destroyed with receipts.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use common::azurite::Azurite;
use common::*;
use meetbot::store::TranscriptStore;
use meetbot::transcript::{TranscriptDoc, SCHEMA};

fn doc(tenant: &str, meeting: &str) -> TranscriptDoc {
    serde_json::from_value(serde_json::json!({
        "schema": SCHEMA, "meeting_id": meeting, "tenant": tenant, "recording_id": "r-1",
        "started_at": "2026-11-23T10:00:00Z", "ended_at": "2026-11-23T10:30:00Z",
        "participants": [{"id": "p1", "name": "Host"}],
        "segments": [{"speaker_id": "p1", "speaker": "Host", "start_ms": 0, "end_ms": 900, "text": "hello"}],
        "provider": "embedded", "model": "tiny.en", "language": "en", "complete": true, "gaps": []
    }))
    .unwrap()
}

fn audit_kinds(ws: &Workspace) -> Vec<String> {
    std::fs::read_to_string(ws.audit_log())
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn sweep_deletes_expired_transcripts_once_with_receipts_and_nothing_else() {
    let az = Azurite::start();
    let cfg = az.config();
    let store = az.env().blob_store(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let short = store.with_retention(Duration::from_secs(1));
    rt.block_on(async {
        short.commit(&doc("acme", "old-1")).await.unwrap();
        short.commit(&doc("globex", "old-2")).await.unwrap();
        store.commit(&doc("acme", "fresh")).await.unwrap();
        store
            .put_receipt("acme", "r-1", b"{\"proof\":1}")
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(2100));
    let mut ws = Workspace::new();
    // A key file shared with the in-process checks: the chains carry MACs.
    ws.extra_config = format!("{}[keys]\nprovider = \"local_file\"\n", az.config_toml());

    // Dry run: reports, deletes nothing.
    let dry = Run::from(ws.command().args(["sweep", "--dry-run"]).output().unwrap());
    assert_eq!(dry.code, Some(0), "{}", dry.describe());
    assert_eq!(
        dry.stdout.matches("would_delete").count(),
        4,
        "{}",
        dry.describe()
    );
    assert_eq!(rt.block_on(store.list_all()).unwrap().len(), 7);

    // Two sweeps at once: each expired blob deleted exactly once.
    let spawn = || {
        let mut c = ws.command();
        c.arg("sweep").stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (ra, rb) = (
        wait_with_timeout(a, Duration::from_secs(60)),
        wait_with_timeout(b, Duration::from_secs(60)),
    );
    assert_eq!(
        (ra.code, rb.code),
        (Some(0), Some(0)),
        "{}\n{}",
        ra.describe(),
        rb.describe()
    );
    let deleted = ra.stdout.matches("\"transcript_deleted\"").count()
        + rb.stdout.matches("\"transcript_deleted\"").count();
    assert_eq!(deleted, 4, "{}\n{}", ra.describe(), rb.describe());
    assert_eq!(audit_kinds(&ws), vec!["transcript_deletion"; 4]);
    let v = Run::from(ws.command().args(["audit", "verify"]).output().unwrap());
    assert_eq!(v.code, Some(0), "{}", v.describe());

    let left: Vec<(String, String)> = rt
        .block_on(store.list_all())
        .unwrap()
        .into_iter()
        .map(|b| (b.container, b.name))
        .collect();
    let acme = store.container_name("acme");
    let globex = store.container_name("globex");
    let mut want = vec![
        (acme.clone(), "fresh.json".to_string()),
        (acme.clone(), "fresh.vtt".to_string()),
        (acme.clone(), "receipt-r-1.json".to_string()),
    ];
    // Each tenant's two deletion receipts, chained in its container.
    for c in [&acme, &globex] {
        for n in [
            "audit/key.json",
            "audit/head.json",
            "audit/00000000000000000001.json",
            "audit/00000000000000000002.json",
        ] {
            want.push((c.clone(), n.to_string()));
        }
    }
    want.sort();
    let mut left = left;
    left.sort();
    assert_eq!(left, want);
    let mut deleted_blobs = Vec::new();
    for seq in 1..=2 {
        let e: serde_json::Value = serde_json::from_slice(
            &rt.block_on(store.read("acme", &format!("audit/{seq:020}.json")))
                .unwrap(),
        )
        .unwrap();
        let r = &e["receipt"];
        assert_eq!(e["kind"], "transcript_deletion");
        assert_eq!(r["meeting_id"], "old-1");
        assert_eq!(r["reason"], "retention expired");
        assert!(!r["location"].as_str().unwrap().contains("sig="));
        deleted_blobs.push(
            r["location"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
        );
        if r["location"].as_str().unwrap().ends_with(".json") {
            assert_eq!(
                r["transcript_sha256"].as_str().unwrap(),
                hex_sha(&doc("acme", "old-1").to_json())
            );
        }
    }
    deleted_blobs.sort();
    assert_eq!(deleted_blobs, ["old-1.json", "old-1.vtt"]);
    for tenant in ["acme", "globex"] {
        let v = Run::from(
            ws.command()
                .args(["audit", "verify", "--tenant", tenant])
                .output()
                .unwrap(),
        );
        assert_eq!(v.code, Some(0), "{}", v.describe());
        assert_eq!(v.last()["entries"], 2, "{}", v.describe());
    }

    // Again: nothing to do.
    let again = Run::from(ws.command().arg("sweep").output().unwrap());
    assert_eq!(again.code, Some(0));
    assert!(
        again.stdout.contains("\"transcripts_deleted\":0"),
        "{}",
        again.describe()
    );
    assert_eq!(audit_kinds(&ws).len(), 4);
}

#[test]
fn sweep_destroys_recordings_orphaned_by_a_killed_bot() {
    let ws = {
        let mut ws = Workspace::new();
        ws.extra_config = "[recording]\nmemory_budget_kib = 0\n".into();
        ws
    };
    let wav = ws.path().join("said.wav");
    espeak(
        "en-us",
        "Good morning everyone. Today we will review the budget.",
        &wav,
    );
    let quiet = ws.path().join("quiet.wav");
    silence(30.0, &quiet);
    let all = ws.path().join("all.wav");
    concat(&[wav, quiet], &all);
    let m = ws.manifest(&[("Host", &all, 0)], "realtime");
    let mut child = ws.spawn_join(&format!("replay:{}", m.display()), &[]);
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        let l = lines.next().expect("status line").unwrap();
        if l.contains("\"in_call_recording\"") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    child.kill().unwrap(); // SIGKILL: no cleanup
    child.wait().unwrap();
    assert_eq!(ws.recording_dirs().len(), 1);
    let sweep = Run::from(ws.command().arg("sweep").output().unwrap());
    assert_eq!(sweep.code, Some(0), "{}", sweep.describe());
    assert!(
        sweep.stdout.contains("\"recordings_destroyed\":1"),
        "{}",
        sweep.describe()
    );
    assert!(ws.recording_dirs().is_empty());
    assert_eq!(audit_kinds(&ws), ["deletion_receipt"]);
    let again = Run::from(ws.command().arg("sweep").output().unwrap());
    assert!(
        again.stdout.contains("\"recordings_destroyed\":0"),
        "{}",
        again.describe()
    );
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
