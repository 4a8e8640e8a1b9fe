//! The hash-chained audit log: tampering is found and named by line, and
//! concurrent appenders keep one chain.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier};

use meetbot::audit::{verify, AuditError, AuditLog, DeletionReceipt, GENESIS_HASH};

fn receipt(i: u64) -> DeletionReceipt {
    DeletionReceipt {
        recording_id: format!("rec-{i}"),
        meeting_id: format!("meeting-{i}"),
        tenant: "tenant-a".into(),
        chunk_count: i,
        ciphertext_bytes: 4096 * i,
        manifest_sha256: "12".repeat(32),
        transcript_committed: true,
        transcript_sha256: Some("34".repeat(32)),
        transcript_location: Some("store://transcripts/x.json".into()),
        reason: None,
        deleted_at: "2025-06-01T12:00:00Z".into(),
        method: "crypto-shred+unlink".into(),
    }
}

fn log_with(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit/deletions.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        log.append(&receipt(i)).unwrap();
    }
    (tmp, path)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn failing_line(path: &Path) -> (u64, String) {
    match verify(path) {
        Err(AuditError::Line { line, problem, .. }) => (line, problem),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn intact_log_verifies_and_file_is_private() {
    let (_tmp, path) = log_with(5);
    let r = verify(&path).unwrap();
    assert_eq!(r.entries, 5);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(first["prev_hash"], GENESIS_HASH);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "deletion_receipt");
    let last: serde_json::Value = serde_json::from_str(&lines(&path)[4]).unwrap();
    assert_eq!(last["hash"], r.head_hash.as_str());
}

#[test]
fn edited_entry_fails_at_its_line() {
    let (_tmp, path) = log_with(4);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"chunk_count\":3", "\"chunk_count\":4");
    write_lines(&path, &l);
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 3);
    assert!(problem.contains("hash mismatch"), "{problem}");
}

#[test]
fn edited_and_rehashed_entry_breaks_the_next_link() {
    let (_tmp, path) = log_with(4);
    let mut l = lines(&path);
    // Rewrite entry 2 with a valid hash of its new content, via a scratch log
    // that starts from the same prev_hash: only the link to entry 3 can tell.
    let original: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = scratch_dir.path().join("s.jsonl");
    write_lines(&scratch, &l[..1]);
    let mut forged_receipt = receipt(2);
    forged_receipt.transcript_committed = false;
    let forged = AuditLog::open(&scratch)
        .unwrap()
        .append(&forged_receipt)
        .unwrap();
    assert_eq!(forged.prev_hash, original["prev_hash"]);
    l[1] = forged.to_json_line();
    write_lines(&path, &l);
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 3);
    assert!(problem.contains("broken link"), "{problem}");
}

#[test]
fn deleted_line_fails() {
    let (_tmp, path) = log_with(4);
    let mut l = lines(&path);
    l.remove(1);
    write_lines(&path, &l);
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 2);
    assert!(problem.contains("seq gap"), "{problem}");
}

#[test]
fn deleted_first_line_fails() {
    let (_tmp, path) = log_with(3);
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    assert_eq!(failing_line(&path).0, 1);
}

#[test]
fn reordered_lines_fail() {
    let (_tmp, path) = log_with(4);
    let mut l = lines(&path);
    l.swap(1, 2);
    write_lines(&path, &l);
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 2);
    assert!(problem.contains("seq"), "{problem}");
}

#[test]
fn reformatted_line_fails() {
    let (_tmp, path) = log_with(2);
    let mut l = lines(&path);
    let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    l[0] = serde_json::to_string_pretty(&v).unwrap().replace('\n', " ");
    write_lines(&path, &l);
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 1);
    assert!(problem.contains("form"), "{problem}");
}

#[test]
fn garbage_lines_fail_without_panicking() {
    for bad in [
        "not json",
        "{}",
        "[1,2]",
        "{\"seq\":1}",
        "\u{0}",
        "{\"seq\":1,\"prev_hash\":\"x\",\"kind\":\"deletion_receipt\",\"receipt\":{},\"hash\":\"y\"}",
    ] {
        let (_tmp, path) = log_with(2);
        let mut l = lines(&path);
        l[1] = bad.to_string();
        write_lines(&path, &l);
        assert_eq!(failing_line(&path).0, 2, "{bad}");
    }
    // Invalid UTF-8 and an overlong line.
    let (_tmp, path) = log_with(1);
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(b"\xff\xfe\n");
    fs::write(&path, &data).unwrap();
    assert_eq!(failing_line(&path).0, 2);
    let mut data = fs::read(&path).unwrap();
    data.truncate(data.len() - 3);
    data.extend(std::iter::repeat_n(b'a', 200_000));
    fs::write(&path, &data).unwrap();
    let (line, problem) = failing_line(&path);
    assert_eq!(line, 2);
    assert!(problem.contains("longer than"), "{problem}");
}

#[test]
fn append_refuses_to_extend_a_tampered_tail() {
    let (_tmp, path) = log_with(2);
    let mut l = lines(&path);
    l[1] = l[1].replace("rec-2", "rec-9");
    write_lines(&path, &l);
    let err = AuditLog::open(&path)
        .unwrap()
        .append(&receipt(3))
        .expect_err("tampered tail");
    assert!(matches!(err, AuditError::Tail { .. }), "{err:?}");
    assert_eq!(lines(&path).len(), 2, "nothing appended");
}

#[test]
fn world_writable_log_is_refused() {
    let (_tmp, path) = log_with(1);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let err = AuditLog::open(&path).expect_err("0666");
    assert!(matches!(err, AuditError::Permissions { .. }), "{err:?}");
}

#[test]
fn concurrent_appenders_keep_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Arc::new(tmp.path().join("audit.jsonl"));
    let writers = 6;
    let per = 25;
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Each writer has its own open file, like a separate process.
                let log = AuditLog::open(&*path).unwrap();
                barrier.wait();
                for i in 0..per {
                    log.append(&receipt((w * 1000 + i) as u64)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = verify(&path).unwrap();
    assert_eq!(r.entries, (writers * per) as u64);
}

#[test]
fn threads_sharing_one_handle_keep_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4u64)
        .map(|w| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..25 {
                    log.append(&receipt(w * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(verify(&path).unwrap().entries, 100);
}

#[test]
fn missing_log_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = verify(&tmp.path().join("none.jsonl")).expect_err("missing");
    assert!(matches!(err, AuditError::Io { .. }), "{err:?}");
}

#[test]
fn a_log_spanning_the_key_custody_methods_verifies() {
    // Receipts written before custody was stated (legacy methods) and after:
    // one chain, every entry valid, and every method one the build documents.
    let (_tmp, path) = log_with(2);
    let log = AuditLog::open(&path).unwrap();
    let mut legacy_sweep = receipt(3);
    legacy_sweep.method = "orphan-sweep+unlink".into();
    log.append(&legacy_sweep).unwrap();
    for (i, (method, _)) in meetbot::recording::METHODS.iter().enumerate() {
        let mut r = receipt(10 + i as u64);
        r.method = (*method).into();
        log.append(&r).unwrap();
    }
    let report = verify(&path).expect("verifies");
    assert_eq!(report.entries, 3 + meetbot::recording::METHODS.len() as u64);
    let documented: Vec<&str> = meetbot::recording::METHODS.iter().map(|m| m.0).collect();
    for line in lines(&path) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let m = v["receipt"]["method"].as_str().unwrap();
        assert!(documented.contains(&m), "{m} is not documented");
    }
}
