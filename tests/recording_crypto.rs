//! AEAD round trip, tamper detection and nonce uniqueness of spilled chunks.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use meetbot::core::media::{OpusPacket, ParticipantId};
use meetbot::recording::{
    open_recording, read_header, DataKey, Recording, RecordingConfig, RecordingError,
    RecordingMeta, WrappedKey, MIN_CHUNK_BYTES,
};

const FRAME_HEADER: usize = 4 + 8 + 12 + 4;

fn wrapped() -> WrappedKey {
    WrappedKey {
        provider: "test".into(),
        key_id: "k".into(),
        alg: "none".into(),
        wrapped: String::new(),
    }
}

fn packet(i: u32) -> OpusPacket {
    OpusPacket {
        seq: (i % 65536) as u16,
        at_ms: u64::from(i) * 20,
        payload: bytes::Bytes::from(
            (0..(60 + i % 90))
                .map(|j| (i * 7 + j) as u8)
                .collect::<Vec<u8>>(),
        ),
    }
}

/// A fully spilled recording of `n` packets; returns (dir, key copy, packets).
fn spilled(spool: &Path, n: u32) -> (Recording, DataKey, Vec<(ParticipantId, OpusPacket)>) {
    let cfg = RecordingConfig {
        spool_dir: spool.to_path_buf(),
        memory_budget_bytes: 0,
        chunk_bytes: MIN_CHUNK_BYTES,
    };
    let dek = DataKey::generate();
    let mut copy = *dek.as_bytes();
    let key = DataKey::from_bytes(&mut copy);
    let meta = RecordingMeta {
        meeting_id: "meeting-1".into(),
        tenant: "tenant-a".into(),
    };
    let mut rec = Recording::create(&cfg, dek, wrapped(), meta).expect("create");
    let mut sent = Vec::new();
    for i in 0..n {
        let pid = ParticipantId(format!("feed-{}", i % 4));
        let p = packet(i);
        rec.append(&pid, &p).expect("append");
        sent.push((pid, p));
    }
    rec.flush().expect("flush");
    (rec, key, sent)
}

fn chunks_path(dir: &Path) -> PathBuf {
    dir.join("chunks.bin")
}

/// Byte offsets of every frame in a spool file.
fn frame_offsets(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = u32::from_be_bytes(data[at + 24..at + 28].try_into().unwrap()) as usize;
        out.push((at, FRAME_HEADER + len));
        at += FRAME_HEADER + len;
    }
    out
}

fn read_all(dir: &Path, key: &DataKey) -> Result<Vec<(ParticipantId, OpusPacket)>, RecordingError> {
    open_recording(dir, key)?.collect()
}

fn same(a: &[(ParticipantId, OpusPacket)], b: &[(ParticipantId, OpusPacket)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((pa, a), (pb, b))| {
            pa == pb && a.seq == b.seq && a.at_ms == b.at_ms && a.payload == b.payload
        })
}

#[test]
fn aead_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, key, sent) = spilled(tmp.path(), 500);
    let stats = rec.stats();
    assert!(stats.chunks > 10, "{stats:?}");
    assert_eq!(stats.spilled_chunks, stats.chunks);
    let got = read_all(rec.dir(), &key).expect("decrypts");
    assert!(same(&got, &sent));
    // The header carries ids and the wrapped key only.
    let h = read_header(rec.dir()).expect("header");
    assert_eq!(
        (h.id.as_str(), h.meeting_id.as_str()),
        (rec.id(), "meeting-1")
    );
    let report = rec.destroy().expect("destroy");
    assert_eq!(report.chunks, stats.chunks);
    assert_eq!(report.ciphertext_bytes, stats.ciphertext_bytes);
    assert_eq!(report.manifest_sha256, stats.manifest_sha256);
}

#[test]
fn wrong_key_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, _key, _) = spilled(tmp.path(), 50);
    let err = read_all(rec.dir(), &DataKey::generate()).expect_err("wrong key");
    assert!(
        matches!(err, RecordingError::Decrypt { index: 0 }),
        "{err:?}"
    );
}

/// Applies `edit` to the spool file and expects reading to fail.
fn tampered(edit: impl Fn(&mut Vec<u8>)) -> RecordingError {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, key, _) = spilled(tmp.path(), 300);
    let path = chunks_path(rec.dir());
    let mut data = fs::read(&path).unwrap();
    edit(&mut data);
    fs::write(&path, &data).unwrap();
    read_all(rec.dir(), &key).expect_err("tampering must be detected")
}

#[test]
fn flipped_ciphertext_byte_fails() {
    let err = tampered(|d| {
        let (at, len) = frame_offsets(d)[2];
        d[at + len / 2] ^= 0x01;
    });
    assert!(
        matches!(err, RecordingError::Decrypt { index: 2 }),
        "{err:?}"
    );
}

#[test]
fn flipped_tag_byte_fails() {
    let err = tampered(|d| {
        let (at, len) = frame_offsets(d)[1];
        d[at + len - 1] ^= 0x80;
    });
    assert!(
        matches!(err, RecordingError::Decrypt { index: 1 }),
        "{err:?}"
    );
}

#[test]
fn flipped_nonce_byte_fails() {
    let err = tampered(|d| {
        let (at, _) = frame_offsets(d)[1];
        d[at + 12 + 11] ^= 0x01;
    });
    assert!(err.to_string().contains("nonce"), "{err}");
}

#[test]
fn edited_index_fails() {
    let err = tampered(|d| {
        let (at, _) = frame_offsets(d)[1];
        d[at + 11] ^= 0x01; // index 1 -> 0
    });
    assert!(err.to_string().contains("expected"), "{err}");
}

#[test]
fn edited_index_and_nonce_together_fail_authentication() {
    // Rewrite chunk 1 to claim index 0's slot consistently after dropping
    // chunk 0: framing is consistent, so only the AAD can catch it.
    let err = tampered(|d| {
        let offs = frame_offsets(d);
        let (at1, len1) = offs[1];
        let mut frame = d[at1..at1 + len1].to_vec();
        frame[4..12].copy_from_slice(&0u64.to_be_bytes());
        let mut nonce = *b"MBR1\0\0\0\0\0\0\0\0";
        nonce[4..].copy_from_slice(&0u64.to_be_bytes());
        frame[12..24].copy_from_slice(&nonce);
        d.splice(0..offs[0].1, frame);
    });
    assert!(
        matches!(err, RecordingError::Decrypt { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn reordered_chunks_fail() {
    let err = tampered(|d| {
        let offs = frame_offsets(d);
        let (a, alen) = offs[0];
        let (b, blen) = offs[1];
        let first = d[a..a + alen].to_vec();
        let second = d[b..b + blen].to_vec();
        let mut swapped = second;
        swapped.extend_from_slice(&first);
        d.splice(a..b + blen, swapped);
    });
    assert!(err.to_string().contains("where 0 was expected"), "{err}");
}

#[test]
fn duplicated_chunk_fails() {
    let err = tampered(|d| {
        let (at, len) = frame_offsets(d)[0];
        let copy = d[at..at + len].to_vec();
        d.splice(at..at, copy);
    });
    assert!(err.to_string().contains("where 1 was expected"), "{err}");
}

#[test]
fn truncated_file_fails() {
    let err = tampered(|d| {
        let len = d.len();
        d.truncate(len - 7);
    });
    assert!(matches!(err, RecordingError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn absurd_length_is_an_error_not_an_allocation() {
    let err = tampered(|d| {
        d[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    });
    assert!(err.to_string().contains("claims"), "{err}");
}

#[test]
fn garbage_file_is_an_error() {
    let err = tampered(|d| {
        for b in d.iter_mut() {
            *b = 0xAB;
        }
    });
    assert!(matches!(err, RecordingError::Corrupt { .. }), "{err:?}");
}

#[test]
fn chunk_from_another_recording_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, key, _) = spilled(tmp.path(), 100);
    // Same key, other recording id: the AAD differs.
    let cfg = RecordingConfig {
        spool_dir: tmp.path().to_path_buf(),
        memory_budget_bytes: 0,
        chunk_bytes: MIN_CHUNK_BYTES,
    };
    let mut copy = *key.as_bytes();
    let meta = RecordingMeta {
        meeting_id: "m".into(),
        tenant: "t".into(),
    };
    let mut b = Recording::create(&cfg, DataKey::from_bytes(&mut copy), wrapped(), meta).unwrap();
    for i in 0..100 {
        b.append(&ParticipantId("x".into()), &packet(i)).unwrap();
    }
    b.flush().unwrap();
    fs::copy(chunks_path(a.dir()), chunks_path(b.dir())).unwrap();
    let err = read_all(b.dir(), &key).expect_err("foreign chunks");
    assert!(
        matches!(err, RecordingError::Decrypt { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn nonces_are_unique_and_counter_derived() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, _key, _) = spilled(tmp.path(), 3000);
    let data = fs::read(chunks_path(rec.dir())).unwrap();
    let offs = frame_offsets(&data);
    assert!(offs.len() > 100, "{} chunks", offs.len());
    let mut seen = HashSet::new();
    for (i, (at, _)) in offs.iter().enumerate() {
        let index = u64::from_be_bytes(data[at + 4..at + 12].try_into().unwrap());
        let nonce: [u8; 12] = data[at + 12..at + 24].try_into().unwrap();
        assert_eq!(index, i as u64);
        assert_eq!(&nonce[..4], b"MBR1");
        assert_eq!(u64::from_be_bytes(nonce[4..].try_into().unwrap()), index);
        assert!(seen.insert(nonce), "nonce reused at chunk {i}");
    }
    // Identical plaintext under the same nonce scheme in two recordings still
    // gives different ciphertext: each recording has its own key.
    let (other, _, _) = spilled(tmp.path(), 3000);
    let data2 = fs::read(chunks_path(other.dir())).unwrap();
    assert_ne!(
        &data[FRAME_HEADER..FRAME_HEADER + 64],
        &data2[FRAME_HEADER..FRAME_HEADER + 64]
    );
}

#[test]
fn no_spool_file_means_no_packets() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecordingConfig::new(tmp.path());
    let key = DataKey::generate();
    let mut copy = *key.as_bytes();
    let meta = RecordingMeta {
        meeting_id: "m".into(),
        tenant: "t".into(),
    };
    let mut rec = Recording::create(&cfg, DataKey::from_bytes(&mut copy), wrapped(), meta).unwrap();
    rec.append(&ParticipantId("p".into()), &packet(1)).unwrap();
    rec.flush().unwrap(); // Under budget: stays in memory.
    assert_eq!(read_all(rec.dir(), &key).unwrap().len(), 0);
    assert_eq!(rec.replay().unwrap().count(), 1);
}

#[test]
fn corrupt_header_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, key, _) = spilled(tmp.path(), 10);
    let h = rec.dir().join("header.json");
    fs::write(&h, b"{not json").unwrap();
    let err = open_recording(rec.dir(), &key).expect_err("bad header");
    assert!(matches!(err, RecordingError::Header { .. }), "{err:?}");
    fs::write(&h, vec![b' '; 100_000]).unwrap();
    let err = read_header(rec.dir()).expect_err("huge header");
    assert!(err.to_string().contains("larger than"), "{err}");
    // Destroy still works with a damaged header.
    let dir = rec.dir().to_path_buf();
    rec.destroy().expect("destroy");
    assert!(!dir.exists());
}
