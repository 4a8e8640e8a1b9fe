//! The recording's byte formats: plaintext records inside a chunk, the sealed
//! chunk frame on disk, nonces and associated data. Pure functions, no I/O.
//!
//! Plaintext record (inside a chunk, never on disk):
//!
//! ```text
//! u8  participant id length (1..=255)   participant id (UTF-8)
//! u16 seq (BE)   u64 at_ms (BE)   u16 payload length (BE)   payload (Opus)
//! ```
//!
//! Sealed chunk frame (the spool file `chunks.bin` is a sequence of these):
//!
//! ```text
//! 4 bytes magic "MBC1"   u64 chunk index (BE)   12 bytes nonce
//! u32 ciphertext length incl. 16-byte tag (BE)   ciphertext
//! ```
//!
//! The nonce is `"MBR1" ‖ u64 index (BE)`: unique per chunk because the index
//! is a counter and every recording has its own random key. It is stored
//! anyway and checked against the index, so an edited nonce is an error even
//! before authentication. The associated data binds the recording id and the
//! chunk index, so a chunk moved to another position or another recording
//! fails authentication.

use sha2::{Digest, Sha256};

use crate::core::media::ParticipantId;
use crate::secmem::LockedVec;

/// Frame magic.
pub(crate) const FRAME_MAGIC: &[u8; 4] = b"MBC1";
/// Bytes before the ciphertext in a frame.
pub(crate) const FRAME_HEADER_LEN: usize = 4 + 8 + 12 + 4;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Nonce length.
pub(crate) const NONCE_LEN: usize = 12;
const NONCE_PREFIX: &[u8; 4] = b"MBR1";
const AAD_PREFIX: &[u8] = b"meetbot/recording-chunk/v1\0";

/// Longest participant id a record can carry.
pub(crate) const MAX_PARTICIPANT_ID: usize = u8::MAX as usize;
/// Largest Opus payload a record can carry (far above any real Opus packet,
/// which is at most 1275 bytes per frame).
pub(crate) const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Fixed bytes of a record besides the id and payload.
const RECORD_FIXED: usize = 1 + 2 + 8 + 2;
/// Largest encoded record.
pub(crate) const MAX_RECORD: usize = RECORD_FIXED + MAX_PARTICIPANT_ID + MAX_PAYLOAD;
/// Largest plaintext chunk any writer produces ([`super::MAX_CHUNK_BYTES`]
/// plus one record); readers reject longer ciphertexts before allocating.
pub(crate) const MAX_CHUNK_PLAINTEXT: usize = super::MAX_CHUNK_BYTES + MAX_RECORD;

/// The nonce of chunk `index`.
pub(crate) fn nonce_for(index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(NONCE_PREFIX);
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

/// The associated data of chunk `index` of recording `recording_id`.
pub(crate) fn aad_for(recording_id: &str, index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + recording_id.len() + 9);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(recording_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// Encoded length of a record, or why it cannot be encoded.
pub(crate) fn record_len(participant: &ParticipantId, payload_len: usize) -> Result<usize, String> {
    let id = participant.0.len();
    if id == 0 || id > MAX_PARTICIPANT_ID {
        return Err(format!(
            "participant id is {id} bytes; must be 1..={MAX_PARTICIPANT_ID}"
        ));
    }
    if payload_len > MAX_PAYLOAD {
        return Err(format!(
            "Opus payload is {payload_len} bytes; at most {MAX_PAYLOAD}"
        ));
    }
    Ok(RECORD_FIXED + id + payload_len)
}

/// Appends one record to `out`, the recording's locked plaintext buffer
/// (which wipes its old mapping if it ever grows). The caller has checked
/// [`record_len`].
pub(crate) fn encode_record(
    out: &mut LockedVec<u8>,
    participant: &ParticipantId,
    seq: u16,
    at_ms: u64,
    payload: &[u8],
) {
    // The casts cannot truncate: record_len bounded both lengths.
    out.push(participant.0.len() as u8);
    out.extend_from_slice(participant.0.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// One decoded record, borrowing from the decrypted chunk.
pub(crate) struct RecordRef<'a> {
    pub participant: &'a str,
    pub seq: u16,
    pub at_ms: u64,
    pub payload: &'a [u8],
}

/// Decodes the record at `*pos` in `chunk`, advancing `*pos`. `Ok(None)` at
/// the end of the chunk.
pub(crate) fn decode_record<'a>(
    chunk: &'a [u8],
    pos: &mut usize,
) -> Result<Option<RecordRef<'a>>, String> {
    let rest = chunk.get(*pos..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    let take = |r: &'a [u8], at: usize, n: usize| -> Result<&'a [u8], String> {
        r.get(at..at + n)
            .ok_or_else(|| format!("record at byte {} is truncated", *pos))
    };
    // Indexing is in bounds: `rest` is non-empty here, `fixed` is 12 bytes.
    let id_len = rest[0] as usize;
    if id_len == 0 {
        return Err(format!(
            "record at byte {} has an empty participant id",
            *pos
        ));
    }
    let id = take(rest, 1, id_len)?;
    let participant = std::str::from_utf8(id)
        .map_err(|_| format!("record at byte {} has a non-UTF-8 participant id", *pos))?;
    let mut at = 1 + id_len;
    let fixed = take(rest, at, 12)?;
    let seq = u16::from_be_bytes([fixed[0], fixed[1]]);
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&fixed[2..10]);
    let at_ms = u64::from_be_bytes(ms);
    let payload_len = u16::from_be_bytes([fixed[10], fixed[11]]) as usize;
    at += 12;
    let payload = take(rest, at, payload_len)?;
    *pos += at + payload_len;
    Ok(Some(RecordRef {
        participant,
        seq,
        at_ms,
        payload,
    }))
}

/// The frame header of a sealed chunk.
pub(crate) fn frame_header(index: u64, ciphertext_len: usize) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..4].copy_from_slice(FRAME_MAGIC);
    h[4..12].copy_from_slice(&index.to_be_bytes());
    h[12..24].copy_from_slice(&nonce_for(index));
    // Cannot truncate: ciphertexts are bounded by MAX_CHUNK_PLAINTEXT + tag.
    h[24..28].copy_from_slice(&(ciphertext_len as u32).to_be_bytes());
    h
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub index: u64,
    pub nonce: [u8; NONCE_LEN],
    pub len: usize,
}

/// Parses and bounds-checks a frame header.
pub(crate) fn parse_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, String> {
    if &h[..4] != FRAME_MAGIC {
        return Err("bad chunk magic (not a meetbot chunk, or misaligned)".into());
    }
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&h[4..12]);
    let index = u64::from_be_bytes(idx);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&h[12..24]);
    let len = u32::from_be_bytes([h[24], h[25], h[26], h[27]]) as usize;
    if !(TAG_LEN..=MAX_CHUNK_PLAINTEXT + TAG_LEN).contains(&len) {
        return Err(format!(
            "chunk {index} claims {len} ciphertext bytes; valid is {TAG_LEN}..={}",
            MAX_CHUNK_PLAINTEXT + TAG_LEN
        ));
    }
    Ok(FrameHeader { index, nonce, len })
}

/// Feeds one chunk into the manifest hash: index, length, SHA-256 of the
/// ciphertext.
pub(crate) fn manifest_update(manifest: &mut Sha256, index: u64, ciphertext: &[u8]) {
    manifest.update(index.to_be_bytes());
    manifest.update((ciphertext.len() as u64).to_be_bytes());
    manifest.update(Sha256::digest(ciphertext));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let p = ParticipantId("feed-42".into());
        let mut buf = LockedVec::with_capacity(0);
        encode_record(&mut buf, &p, 65535, u64::MAX - 1, b"\x01\x02\x03");
        encode_record(&mut buf, &p, 0, 0, b"");
        assert_eq!(
            buf.len(),
            record_len(&p, 3).unwrap() + record_len(&p, 0).unwrap()
        );
        let mut pos = 0;
        let r = decode_record(&buf, &mut pos).unwrap().unwrap();
        assert_eq!(
            (r.participant, r.seq, r.at_ms, r.payload),
            ("feed-42", 65535, u64::MAX - 1, &b"\x01\x02\x03"[..])
        );
        let r = decode_record(&buf, &mut pos).unwrap().unwrap();
        assert_eq!((r.seq, r.at_ms, r.payload.len()), (0, 0, 0));
        assert!(decode_record(&buf, &mut pos).unwrap().is_none());
    }

    #[test]
    fn truncated_or_bad_records_are_errors_not_panics() {
        let p = ParticipantId("abc".into());
        let mut buf = LockedVec::with_capacity(0);
        encode_record(&mut buf, &p, 1, 2, &[9u8; 40]);
        for cut in 1..buf.len() {
            let mut pos = 0;
            assert!(decode_record(&buf[..cut], &mut pos).is_err(), "cut {cut}");
        }
        let mut pos = 0;
        assert!(decode_record(&[0u8, 1, 2], &mut pos).is_err());
        let mut pos = 0;
        assert!(decode_record(&[2u8, 0xff, 0xfe, 0, 0], &mut pos).is_err());
    }

    #[test]
    fn record_limits() {
        assert!(record_len(&ParticipantId(String::new()), 1).is_err());
        assert!(record_len(&ParticipantId("x".repeat(256)), 1).is_err());
        assert!(record_len(&ParticipantId("x".into()), MAX_PAYLOAD + 1).is_err());
        assert_eq!(
            record_len(&ParticipantId("x".repeat(255)), MAX_PAYLOAD).unwrap(),
            MAX_RECORD
        );
    }

    #[test]
    fn frame_header_round_trip_and_bounds() {
        let h = frame_header(7, 100);
        let parsed = parse_frame_header(&h).unwrap();
        assert_eq!(
            parsed,
            FrameHeader {
                index: 7,
                nonce: nonce_for(7),
                len: 100
            }
        );
        let mut bad = h;
        bad[0] = b'X';
        assert!(parse_frame_header(&bad).is_err());
        let mut huge = h;
        huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_frame_header(&huge).unwrap_err().contains("claims"));
        let mut tiny = h;
        tiny[24..28].copy_from_slice(&3u32.to_be_bytes());
        assert!(parse_frame_header(&tiny).is_err());
    }

    #[test]
    fn nonces_are_unique_per_index() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..100_000u64).chain([u64::MAX, u64::MAX - 1, 1 << 32, (1 << 32) + 1]) {
            assert!(seen.insert(nonce_for(i)), "nonce repeated at {i}");
        }
    }

    #[test]
    fn aad_binds_recording_and_index() {
        assert_ne!(aad_for("a", 1), aad_for("a", 2));
        assert_ne!(aad_for("a", 1), aad_for("b", 1));
    }
}
