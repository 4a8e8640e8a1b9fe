//! Unit tests that need the spill fault-injection hook. Black-box tests live
//! in `tests/recording_*.rs`.

use super::*;
use std::fs;

fn wrapped() -> WrappedKey {
    EphemeralKeys::placeholder()
}

fn meta() -> RecordingMeta {
    RecordingMeta {
        meeting_id: "m-1".into(),
        tenant: "t-1".into(),
    }
}

fn packet(i: u32) -> OpusPacket {
    OpusPacket {
        seq: i as u16,
        at_ms: u64::from(i) * 20,
        payload: bytes::Bytes::from(vec![(i % 251) as u8; 100 + (i % 50) as usize]),
    }
}

fn config(dir: &Path, budget: usize) -> RecordingConfig {
    RecordingConfig {
        spool_dir: dir.to_path_buf(),
        memory_budget_bytes: budget,
        chunk_bytes: MIN_CHUNK_BYTES,
    }
}

fn collect(p: Packets<'_>) -> Vec<(String, u16, u64, Vec<u8>)> {
    p.map(|r| {
        let (pid, pk) = r.expect("decrypts");
        (pid.0, pk.seq, pk.at_ms, pk.payload.to_vec())
    })
    .collect()
}

fn expected(n: u32) -> Vec<(String, u16, u64, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let p = packet(i);
            (format!("p{}", i % 3), p.seq, p.at_ms, p.payload.to_vec())
        })
        .collect()
}

#[test]
fn spool_full_is_reported_and_recoverable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dek = DataKey::generate();
    let mut copy = *dek.as_bytes();
    let dek2 = DataKey::from_bytes(&mut copy);
    let mut rec =
        Recording::create(&config(tmp.path(), 0), dek, wrapped(), meta()).expect("create");
    let mut n = 0u32;
    // Fill a first chunk and spill it normally.
    while rec.stats().spilled_chunks == 0 {
        rec.append(&ParticipantId(format!("p{}", n % 3)), &packet(n))
            .expect("append");
        n += 1;
    }
    let good_len = rec.stats().spilled_bytes;
    rec.fail_next_spill = Some(rustix::io::Errno::NOSPC.raw_os_error());
    let err = loop {
        match rec.append(&ParticipantId(format!("p{}", n % 3)), &packet(n)) {
            Ok(()) => n += 1,
            Err(e) => {
                n += 1; // The packet was recorded even though the spill failed.
                break e;
            }
        }
    };
    assert!(matches!(err, RecordingError::SpoolFull { .. }), "{err:?}");
    assert!(err.to_string().contains("spool is full"), "{err}");
    // The partial frame was cut off; the chunk is still in memory.
    let len = fs::metadata(dir_chunks(&rec)).expect("stat").len();
    assert_eq!(len, good_len);
    assert_eq!(rec.stats().spilled_bytes, good_len);
    assert!(rec.stats().memory_bytes > 0);

    // Another errno maps to "unwritable".
    rec.fail_next_spill = Some(rustix::io::Errno::IO.raw_os_error());
    let err = rec.flush().expect_err("injected EIO");
    assert!(
        matches!(err, RecordingError::SpoolUnwritable { .. }),
        "{err:?}"
    );

    // The space comes back: everything spills and reads back in order.
    rec.flush().expect("flush");
    assert_eq!(rec.stats().memory_bytes, 0);
    assert_eq!(rec.stats().spilled_chunks, rec.stats().chunks);
    let got = collect(open_recording(rec.dir(), &dek2).expect("open"));
    assert_eq!(got, expected(n));

    let dir = rec.dir().to_path_buf();
    let report = rec.destroy().expect("destroy");
    assert_eq!(report.method, METHOD_DESTROY_EPHEMERAL);
    assert!(!dir.exists());
}

#[test]
fn destroy_after_unrecovered_spool_full() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rec = Recording::create(
        &config(tmp.path(), 0),
        DataKey::generate(),
        wrapped(),
        meta(),
    )
    .expect("create");
    rec.fail_next_spill = Some(rustix::io::Errno::NOSPC.raw_os_error());
    let mut i = 0;
    let err = loop {
        if let Err(e) = rec.append(&ParticipantId("p0".into()), &packet(i)) {
            break e;
        }
        i += 1;
    };
    assert!(matches!(err, RecordingError::SpoolFull { .. }));
    let dir = rec.dir().to_path_buf();
    let report = rec.destroy().expect("destroy still works");
    assert_eq!(report.chunks, 1);
    assert!(!dir.exists());
}

fn dir_chunks(rec: &Recording) -> PathBuf {
    rec.dir().join(CHUNKS_FILE)
}

#[test]
fn replay_covers_disk_memory_and_pending() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Budget of about three chunks: some spill, some stay in memory.
    let mut rec = Recording::create(
        &config(tmp.path(), 3 * MIN_CHUNK_BYTES),
        DataKey::generate(),
        wrapped(),
        meta(),
    )
    .expect("create");
    let n = 200;
    for i in 0..n {
        rec.append(&ParticipantId(format!("p{}", i % 3)), &packet(i))
            .expect("append");
    }
    let s = rec.stats();
    assert!(s.spilled_chunks > 0, "{s:?}");
    assert!(
        s.memory_bytes > 0 && s.memory_bytes <= 3 * MIN_CHUNK_BYTES,
        "{s:?}"
    );
    assert!(s.pending_bytes > 0, "{s:?}");
    let got = collect(rec.replay().expect("replay"));
    assert_eq!(got, expected(n));
    assert_eq!(rec.stats().pending_bytes, 0);
}

#[test]
fn chunks_seal_at_size_and_plain_buffer_never_grows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rec = Recording::create(
        &config(tmp.path(), usize::MAX),
        DataKey::generate(),
        wrapped(),
        meta(),
    )
    .expect("create");
    let cap = rec.plain.capacity();
    for i in 0..100 {
        rec.append(&ParticipantId("p".into()), &packet(i))
            .expect("append");
        assert!(rec.plain.len() < MIN_CHUNK_BYTES);
        assert_eq!(rec.plain.capacity(), cap);
    }
    // A maximal record still fits without reallocating.
    let big = OpusPacket {
        seq: 1,
        at_ms: 1,
        payload: bytes::Bytes::from(vec![1u8; format::MAX_PAYLOAD]),
    };
    rec.append(&ParticipantId("x".repeat(255)), &big)
        .expect("append");
    assert_eq!(rec.plain.capacity(), cap);
    assert_eq!(rec.stats().spilled_chunks, 0);
    assert!(
        !dir_chunks(&rec).exists(),
        "nothing spilled under an unlimited budget"
    );
}

#[test]
fn drop_without_destroy_deletes_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rec = Recording::create(
        &config(tmp.path(), 0),
        DataKey::generate(),
        wrapped(),
        meta(),
    )
    .expect("create");
    for i in 0..50 {
        rec.append(&ParticipantId("p".into()), &packet(i))
            .expect("append");
    }
    let dir = rec.dir().to_path_buf();
    assert!(dir.join(CHUNKS_FILE).exists());
    drop(rec);
    assert!(!dir.exists());
}

#[test]
fn invalid_packets_and_config_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path(), 0);
    cfg.chunk_bytes = 10;
    assert!(matches!(
        Recording::create(&cfg, DataKey::generate(), wrapped(), meta()),
        Err(RecordingError::InvalidConfig(_))
    ));
    let mut rec = Recording::create(
        &config(tmp.path(), 0),
        DataKey::generate(),
        wrapped(),
        meta(),
    )
    .expect("create");
    assert!(matches!(
        rec.append(&ParticipantId(String::new()), &packet(1)),
        Err(RecordingError::Packet(_))
    ));
    let huge = OpusPacket {
        seq: 0,
        at_ms: 0,
        payload: bytes::Bytes::from(vec![0u8; 70_000]),
    };
    assert!(matches!(
        rec.append(&ParticipantId("p".into()), &huge),
        Err(RecordingError::Packet(_))
    ));
    assert_eq!(rec.stats().pending_bytes, 0);
}

/// A wrapped key as `provider` writes it (only `provider` matters here).
fn wrapped_by(provider: &str) -> WrappedKey {
    WrappedKey {
        provider: provider.into(),
        ..EphemeralKeys::placeholder()
    }
}

#[test]
fn receipt_methods_state_the_key_custody() {
    let cases = [
        (
            "ephemeral",
            "crypto-shred(ephemeral-key)+unlink",
            "orphan-sweep(ephemeral-key-died-with-process)+unlink",
        ),
        (
            "azure-keyvault",
            "crypto-shred(key-vault-wrapped)+unlink",
            "orphan-sweep(key-vault-wrapped)+unlink",
        ),
        (
            "local-file",
            "unlink(local-key-file)",
            "orphan-sweep(local-key-file)+unlink",
        ),
        (
            "something-else",
            "unlink(unknown-key-custody)",
            "orphan-sweep(unknown-key-custody)+unlink",
        ),
    ];
    for (provider, destroyed, swept) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut rec = Recording::create(
            &config(tmp.path(), 0),
            DataKey::generate(),
            wrapped_by(provider),
            meta(),
        )
        .expect("create");
        rec.append(&ParticipantId("p".into()), &packet(1))
            .expect("append");
        // An orphan of the same custody: the header as a crashed process
        // leaves it, in a directory nobody holds.
        let orphan = tmp.path().join(uuid::Uuid::new_v4().to_string());
        fs::create_dir(&orphan).expect("mkdir");
        let mut header = read_header(rec.dir()).expect("header");
        header.id = orphan.file_name().unwrap().to_string_lossy().into_owned();
        fs::write(
            orphan.join(HEADER_FILE),
            serde_json::to_vec(&header).expect("json"),
        )
        .expect("write header");
        let report = rec.destroy().expect("destroy");
        assert_eq!(report.method, destroyed, "{provider}");
        assert_eq!(
            KeyCustody::of_method(&report.method),
            Some(KeyCustody::of_provider(provider))
        );
        let sweep = sweep_orphans(tmp.path()).expect("sweep");
        assert_eq!(sweep.destroyed.len(), 1, "{provider}: {sweep:?}");
        assert_eq!(sweep.destroyed[0].method, swept, "{provider}");
        assert_eq!(
            KeyCustody::of_method(swept),
            Some(KeyCustody::of_provider(provider))
        );
    }
    // Every method, new and legacy, is listed once with its meaning.
    let mut names: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
    assert_eq!(names.len(), 10);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 10, "duplicate method strings");
    assert!(names.contains(&"crypto-shred+unlink") && names.contains(&"orphan-sweep+unlink"));
    assert_eq!(KeyCustody::of_method("crypto-shred+unlink"), None);
}

#[test]
fn key_schedule_and_plaintext_chunk_are_locked_and_not_dumped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dek = DataKey::generate();
    assert!(dek.is_locked(), "mlock failed in the test environment");
    let mut rec = Recording::create(&RecordingConfig::new(tmp.path()), dek, wrapped(), meta())
        .expect("create");
    rec.append(&ParticipantId("p".into()), &packet(1))
        .expect("append");
    let cipher = rec.cipher.as_ref().expect("live cipher");
    let plain_kb = (rec.plain.capacity() / 1024) as u64;
    for (what, addr, min_kb) in [
        ("key schedule", cipher.addr(), 4),
        ("plaintext chunk", rec.plain.addr(), plain_kb),
    ] {
        let (locked_kb, flags) = crate::secmem::mapping_status(addr).expect("in smaps");
        assert!(
            locked_kb >= min_kb,
            "{what}: Locked {locked_kb} kB < {min_kb} kB"
        );
        assert!(
            flags.split_whitespace().any(|f| f == "dd"),
            "{what}: not excluded from core dumps: {flags}"
        );
    }
    // Replay decrypts into a locked buffer too.
    let mut packets = rec.replay().expect("replay");
    assert!(packets.next().expect("one packet").is_ok());
    let (locked_kb, flags) = crate::secmem::mapping_status(packets.current.addr()).expect("smaps");
    assert!(
        locked_kb >= 4 && flags.contains("dd"),
        "{locked_kb} {flags}"
    );
    drop(packets);
    rec.destroy().expect("destroy");
}
