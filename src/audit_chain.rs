//! The per-tenant receipt chain of fleet mode: the pure core (formats, MACs,
//! verification). The Blob Storage shell is [`crate::azure::audit_chain`].
//!
//! In the tenant's container:
//!
//! - `audit/key.json` ([`KeyRecord`]): the tenant's 256-bit MAC key, wrapped by
//!   the `[keys]` provider (Key Vault: RSA-OAEP-256, unwrapped into memory
//!   only). Created once with `If-None-Match: *`.
//! - `audit/<seq, 20 digits>.json` ([`ChainEntry`]): one receipt per blob,
//!   created with `If-None-Match: *`, so one sequence number has exactly one
//!   entry: two writers racing for it cannot fork the chain, the loser moves
//!   on to the next number.
//! - `audit/head.json` ([`ChainHead`]): the last sequence number and hash,
//!   created at seq 0 before the first entry and moved forward with
//!   `If-Match` on its ETag. An entry the head counts but that is missing is
//!   truncation.
//!
//! `hash` is the same SHA-256 as the local log's ([`crate::audit`]: canonical
//! JSON of seq, prev_hash, kind and receipt); `mac` is HMAC-SHA256 under the
//! tenant key over a domain tag, the tenant and that hash (the head's over
//! its seq and hash), so an entry or head cannot be edited, moved to another
//! tenant's chain or rewritten with a recomputed hash without the key.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::audit::{entry_hash, AuditRecord, GENESIS_HASH};
use crate::recording::{DataKey, WrappedKey};

/// Name of the key record blob.
pub const KEY_BLOB: &str = "audit/key.json";
/// Name of the head record blob.
pub const HEAD_BLOB: &str = "audit/head.json";
/// Prefix of every chain blob.
pub const PREFIX: &str = "audit/";
/// [`ChainEntry::mac_alg`] / [`KeyRecord::alg`].
pub const MAC_ALG: &str = "hmac-sha256";
/// The chain receipts without a valid tenant id go to (an orphan whose
/// header is unreadable). Not a valid tenant id, so no tenant can own it.
pub const FLEET_CHAIN: &str = "_fleet";
/// Largest chain blob accepted.
pub const MAX_BLOB_BYTES: usize = 64 * 1024;

const ENTRY_TAG: &[u8] = b"meetbot/audit-entry/v1";
const HEAD_TAG: &[u8] = b"meetbot/audit-head/v1";

/// The blob name of entry `seq`.
pub fn entry_blob(seq: u64) -> String {
    format!("{PREFIX}{seq:020}.json")
}

/// The seq of an entry blob name, if it is one.
pub fn parse_entry_blob(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&s| s > 0)
}

/// The chain a receipt of `tenant` belongs to: the tenant's own, or
/// [`FLEET_CHAIN`] when `tenant` is not a valid tenant id.
pub fn chain_for(tenant: &str) -> &str {
    if crate::store::validate_id("tenant", tenant).is_ok() {
        tenant
    } else {
        FLEET_CHAIN
    }
}

/// The stored, wrapped MAC key of one chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Always 1.
    pub version: u32,
    /// The chain (tenant id or [`FLEET_CHAIN`]).
    pub tenant: String,
    /// [`MAC_ALG`].
    pub alg: String,
    /// The key, wrapped by the key provider.
    pub wrapped: WrappedKey,
    /// When it was made, RFC 3339 UTC.
    pub created_at: String,
}

/// A chain's MAC key, in memory only.
pub struct MacKey(DataKey);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<secret>)")
    }
}

impl MacKey {
    /// Uses `key` as a MAC key.
    pub fn new(key: DataKey) -> Self {
        MacKey(key)
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m
    }

    /// The MAC of entry `seq` with `hash` in `tenant`'s chain, hex.
    pub fn entry_mac(&self, tenant: &str, seq: u64, hash: &str) -> String {
        let m = self.mac(&[
            ENTRY_TAG,
            tenant.as_bytes(),
            &seq.to_be_bytes(),
            hash.as_bytes(),
        ]);
        hex::encode(m.finalize().into_bytes())
    }

    /// The MAC of a head at `seq`/`hash` of `tenant`'s chain, hex.
    pub fn head_mac(&self, tenant: &str, seq: u64, hash: &str) -> String {
        let m = self.mac(&[
            HEAD_TAG,
            tenant.as_bytes(),
            &seq.to_be_bytes(),
            hash.as_bytes(),
        ]);
        hex::encode(m.finalize().into_bytes())
    }

    fn check(&self, mac: &str, expected_hex: &str) -> bool {
        use subtle::ConstantTimeEq;
        mac.len() == expected_hex.len() && bool::from(mac.as_bytes().ct_eq(expected_hex.as_bytes()))
    }
}

/// One receipt in the chain (one blob).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    /// Position, from 1.
    pub seq: u64,
    /// The previous entry's hash, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// The receipt kind.
    pub kind: String,
    /// The receipt.
    pub receipt: AuditRecord,
    /// SHA-256 of seq, prev_hash, kind and receipt (as in the local log).
    pub hash: String,
    /// [`MAC_ALG`], or `None` when the chain is written without a MAC.
    pub mac_alg: Option<String>,
    /// [`MacKey::entry_mac`], hex.
    pub mac: Option<String>,
}

impl ChainEntry {
    /// The entry after entry `prev_seq` whose hash is `prev_hash` (0 and
    /// [`GENESIS_HASH`] for the first entry), for `record`.
    pub fn new(
        tenant: &str,
        prev_seq: u64,
        prev_hash: &str,
        record: &AuditRecord,
        key: Option<&MacKey>,
    ) -> Result<Self, String> {
        let seq = prev_seq
            .checked_add(1)
            .ok_or_else(|| "the chain is full".to_string())?;
        let prev_hash = prev_hash.to_string();
        let hash = entry_hash(seq, &prev_hash, record.kind(), record).map_err(|e| e.to_string())?;
        let mac = key.map(|k| k.entry_mac(tenant, seq, &hash));
        Ok(ChainEntry {
            seq,
            prev_hash,
            kind: record.kind().into(),
            receipt: record.clone(),
            mac_alg: mac.as_ref().map(|_| MAC_ALG.to_string()),
            mac,
            hash,
        })
    }

    /// The blob body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The head record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    /// The last entry's seq (0: none yet).
    pub seq: u64,
    /// The last entry's hash ([`GENESIS_HASH`] at seq 0).
    pub hash: String,
    /// [`MacKey::head_mac`], hex, or `None` without a MAC.
    pub mac: Option<String>,
}

impl ChainHead {
    /// A head at `seq`/`hash`.
    pub fn new(tenant: &str, seq: u64, hash: &str, key: Option<&MacKey>) -> Self {
        ChainHead {
            seq,
            hash: hash.to_string(),
            mac: key.map(|k| k.head_mac(tenant, seq, hash)),
        }
    }

    /// The blob body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why one blob of a chain is not acceptable.
pub type Problem = String;

/// Parses and checks an entry blob on its own: JSON, seq matches `seq`
/// (from its name), kind, hash, receipt tenant, and, when `key` is given,
/// its MAC (a missing MAC is a problem too: with a key, MACs are required).
pub fn check_entry(
    tenant: &str,
    seq: u64,
    bytes: &[u8],
    key: Option<&MacKey>,
) -> Result<ChainEntry, Problem> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(format!("larger than {MAX_BLOB_BYTES} bytes"));
    }
    let e: ChainEntry = serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    if e.seq != seq {
        return Err(format!(
            "records seq {} but is stored as entry {seq} (moved or copied)",
            e.seq
        ));
    }
    if e.kind != e.receipt.kind() {
        return Err(format!(
            "entry kind {:?} does not match its receipt",
            e.kind
        ));
    }
    let receipt_tenant = match &e.receipt {
        AuditRecord::Recording(r) => &r.tenant,
        AuditRecord::Transcript(t) => &t.tenant,
    };
    if chain_for(receipt_tenant) != tenant {
        return Err(format!(
            "receipt of tenant {receipt_tenant:?} in the chain of {tenant:?}"
        ));
    }
    let expected =
        entry_hash(e.seq, &e.prev_hash, &e.kind, &e.receipt).map_err(|e| e.to_string())?;
    if expected != e.hash {
        return Err(format!(
            "hash mismatch: the entry hashes to {expected} but records {} (entry edited)",
            e.hash
        ));
    }
    match (key, &e.mac) {
        (Some(k), Some(mac))
            if e.mac_alg.as_deref() != Some(MAC_ALG)
                || !k.check(mac, &k.entry_mac(tenant, e.seq, &e.hash)) =>
        {
            Err(
                "MAC mismatch: not written with this tenant's audit key (entry forged or rewritten)"
                    .into(),
            )
        }
        (Some(_), None) => {
            Err("no MAC, but this chain requires one (entry forged or rewritten)".into())
        }
        _ => Ok(e),
    }
}

/// Parses and checks the head blob (its MAC when `key` is given).
pub fn check_head(tenant: &str, bytes: &[u8], key: Option<&MacKey>) -> Result<ChainHead, Problem> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(format!("larger than {MAX_BLOB_BYTES} bytes"));
    }
    let h: ChainHead = serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    match (key, &h.mac) {
        (Some(k), Some(mac)) if !k.check(mac, &k.head_mac(tenant, h.seq, &h.hash)) => {
            Err("MAC mismatch (head forged or rewritten)".into())
        }
        (Some(_), None) => {
            Err("no MAC, but this chain requires one (head forged or rewritten)".into())
        }
        _ => Ok(h),
    }
}

/// What a successful [`verify_chain`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The chain (tenant id or [`FLEET_CHAIN`]).
    pub tenant: String,
    /// Entries checked.
    pub entries: u64,
    /// The last entry's hash.
    pub last_hash: String,
    /// The head record's seq.
    pub head_seq: u64,
    /// Whether every entry and the head carried a MAC that was checked.
    pub authenticated: bool,
    /// Entries written after the head's position (an append interrupted
    /// between the entry and the head update; the next append moves it).
    pub beyond_head: u64,
}

/// The first thing wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain of {tenant}: {blob}: {problem}")]
pub struct ChainFailure {
    /// The chain.
    pub tenant: String,
    /// The first bad blob (entry blob name, or the head or key record).
    pub blob: String,
    /// The entry's seq, when the failure is at an entry.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

/// Verifies a whole chain: `entries` are the `audit/` blobs (name, body) in
/// any order, `head` the head blob if present. With `key`, every entry and
/// the head must carry a valid MAC.
pub fn verify_chain(
    tenant: &str,
    mut entries: Vec<(String, Vec<u8>)>,
    head: Option<&[u8]>,
    key: Option<&MacKey>,
) -> Result<ChainReport, ChainFailure> {
    let fail = |blob: &str, seq: Option<u64>, problem: String| ChainFailure {
        tenant: tenant.to_string(),
        blob: blob.to_string(),
        seq,
        problem,
    };
    let mut numbered = Vec::with_capacity(entries.len());
    for (name, body) in entries.drain(..) {
        if name == HEAD_BLOB || name == KEY_BLOB {
            continue;
        }
        match parse_entry_blob(&name) {
            Some(seq) => numbered.push((seq, name, body)),
            None => {
                return Err(fail(
                    &name,
                    None,
                    "not a chain blob name (audit/<20 digits>.json); inserted by hand?".into(),
                ))
            }
        }
    }
    numbered.sort_by_key(|(s, _, _)| *s);
    let mut prev = GENESIS_HASH.to_string();
    let mut hashes = Vec::with_capacity(numbered.len());
    let mut all_maced = key.is_some();
    for (i, (seq, name, body)) in numbered.iter().enumerate() {
        let want = i as u64 + 1;
        if *seq != want {
            return Err(fail(
                &entry_blob(want),
                Some(want),
                format!("missing: the next entry is {seq} (a receipt was deleted)"),
            ));
        }
        let e = check_entry(tenant, *seq, body, key).map_err(|p| fail(name, Some(*seq), p))?;
        if e.prev_hash != prev {
            return Err(fail(
                name,
                Some(*seq),
                format!(
                    "broken link: prev_hash {} does not match entry {}'s hash {prev} (an entry was replaced)",
                    e.prev_hash,
                    seq - 1
                ),
            ));
        }
        all_maced &= e.mac.is_some();
        prev = e.hash.clone();
        hashes.push(e.hash);
    }
    let n = hashes.len() as u64;
    let head = match head {
        Some(b) => Some(check_head(tenant, b, key).map_err(|p| fail(HEAD_BLOB, None, p))?),
        None => None,
    };
    let Some(head) = head else {
        if n == 0 {
            return Ok(ChainReport {
                tenant: tenant.into(),
                entries: 0,
                last_hash: GENESIS_HASH.into(),
                head_seq: 0,
                authenticated: false,
                beyond_head: 0,
            });
        }
        return Err(fail(
            HEAD_BLOB,
            None,
            format!("missing while {n} entries exist (the head was deleted)"),
        ));
    };
    if head.seq > n {
        return Err(fail(
            &entry_blob(n + 1),
            Some(n + 1),
            format!(
                "missing: the head records seq {} but the last receipt is seq {n} (receipts were deleted from the end)",
                head.seq
            ),
        ));
    }
    let head_hash = match head.seq {
        0 => GENESIS_HASH,
        s => hashes[(s - 1) as usize].as_str(),
    };
    if head.hash != head_hash {
        return Err(fail(
            HEAD_BLOB,
            None,
            format!(
                "records hash {} for seq {} but that entry's hash is {head_hash}",
                head.hash, head.seq
            ),
        ));
    }
    Ok(ChainReport {
        tenant: tenant.into(),
        entries: n,
        last_hash: prev,
        head_seq: head.seq,
        authenticated: all_maced && head.mac.is_some(),
        beyond_head: n - head.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::DeletionReceipt;

    fn rec(tenant: &str, i: u64) -> AuditRecord {
        AuditRecord::Recording(DeletionReceipt {
            recording_id: format!("rec-{i}"),
            meeting_id: "m".into(),
            tenant: tenant.into(),
            chunk_count: i,
            ciphertext_bytes: i * 10,
            manifest_sha256: "ab".repeat(32),
            transcript_committed: false,
            transcript_sha256: None,
            transcript_location: None,
            reason: Some("r".into()),
            deleted_at: "2026-01-01T00:00:00Z".into(),
            method: "crypto-shred+unlink".into(),
        })
    }

    fn chain(n: u64, key: Option<&MacKey>) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let mut out = Vec::new();
        let (mut s, mut h) = (0, GENESIS_HASH.to_string());
        for i in 1..=n {
            let e = ChainEntry::new("acme", s, &h, &rec("acme", i), key).unwrap();
            out.push((entry_blob(e.seq), e.to_bytes()));
            (s, h) = (e.seq, e.hash);
        }
        (out, ChainHead::new("acme", s, &h, key).to_bytes())
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(entry_blob(7), "audit/00000000000000000007.json");
        assert_eq!(parse_entry_blob(&entry_blob(u64::MAX)), Some(u64::MAX));
        for bad in [
            "audit/7.json",
            "audit/00000000000000000000.json",
            "x/00000000000000000001.json",
            "audit/0000000000000000000a.json",
        ] {
            assert_eq!(parse_entry_blob(bad), None, "{bad}");
        }
        assert_eq!(chain_for("acme"), "acme");
        assert_eq!(chain_for(""), FLEET_CHAIN);
        assert_eq!(chain_for("../x"), FLEET_CHAIN);
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_named() {
        let key = MacKey::new(DataKey::generate());
        let (blobs, head) = chain(4, Some(&key));
        let r = verify_chain("acme", blobs.clone(), Some(&head), Some(&key)).unwrap();
        assert_eq!((r.entries, r.head_seq, r.authenticated), (4, 4, true));

        // Dropping the last entry: the head still counts it.
        let f = verify_chain("acme", blobs[..3].to_vec(), Some(&head), Some(&key)).unwrap_err();
        assert_eq!(f.seq, Some(4));
        assert!(f.problem.contains("deleted from the end"), "{f}");

        // Rewriting entry 3 with a recomputed plain hash and relinking entry 4:
        // the hashes agree, the MACs do not.
        let mut forged = blobs.clone();
        let e3 = ChainEntry::new("acme", 2, &hash_of(&blobs[1].1), &rec("acme", 99), None).unwrap();
        forged[2].1 = e3.to_bytes();
        let f = verify_chain("acme", forged, Some(&head), Some(&key)).unwrap_err();
        assert_eq!(f.seq, Some(3));
        assert!(f.problem.contains("MAC"), "{f}");

        // Another key (an attacker's) does not verify.
        let other = MacKey::new(DataKey::generate());
        let f = verify_chain("acme", blobs.clone(), Some(&head), Some(&other)).unwrap_err();
        assert_eq!(f.seq, Some(1), "{f}");

        // Entries moved to another tenant's chain are refused.
        let f = verify_chain("globex", blobs.clone(), None, None).unwrap_err();
        assert!(f.problem.contains("chain of"), "{f}");
    }

    fn hash_of(body: &[u8]) -> String {
        serde_json::from_slice::<ChainEntry>(body).unwrap().hash
    }

    #[test]
    fn head_lag_is_reported_not_failed() {
        let key = MacKey::new(DataKey::generate());
        let (blobs, _) = chain(3, Some(&key));
        let h2 = ChainHead::new("acme", 2, &hash_of(&blobs[1].1), Some(&key)).to_bytes();
        let r = verify_chain("acme", blobs, Some(&h2), Some(&key)).unwrap();
        assert_eq!((r.entries, r.beyond_head), (3, 1));
    }
}
