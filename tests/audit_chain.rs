//! The per-tenant receipt chain in Blob Storage, against a real Azurite and
//! the HTTPS Key Vault fake (`tests/support/keyvault_fake.rs`) wrapping the
//! chain's MAC key: concurrent appends make one gap-free chain, and every
//! tampering — dropping the last receipt, editing one, forking a sequence
//! number, rewriting the tail with recomputed hashes, deleting the head —
//! fails verification with the right reason, also through
//! `meetbot audit verify --tenant`.

mod common;
#[path = "support/keyvault_fake.rs"]
mod keyvault_fake;

use std::sync::Arc;

use azure_core::http::RequestContent;
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use common::azurite::Azurite;
use common::*;
use keyvault_fake::{FakeVault, FixedToken};
use meetbot::audit::{AuditRecord, DeletionReceipt, TranscriptDeletionReceipt};
use meetbot::audit_chain::{entry_blob, ChainEntry, ChainHead, FLEET_CHAIN, HEAD_BLOB, KEY_BLOB};
use meetbot::azure::audit_chain::{BlobAuditChain, ChainError};
use meetbot::azure::keyvault::KeyVaultProvider;
use meetbot::recording::KeyProvider;

const TOKEN: &str = "fake-vault-token-audit-0123";

struct Setup {
    az: Azurite,
    _vault: FakeVault,
    kv: Arc<dyn KeyProvider>,
}

async fn setup() -> Setup {
    let az = Azurite::start();
    let vault = FakeVault::start(TOKEN).await;
    vault.create_key("audit-kek");
    let options = meetbot::azure::client_options(
        Some(vault.ca_pem().as_bytes()),
        meetbot::azure::short_retry(),
    )
    .unwrap();
    // verify_challenge_resource = false: 127.0.0.1 is not under vault.azure.net.
    let kv = KeyVaultProvider::new(
        &vault.url(),
        "audit-kek",
        FixedToken::new(TOKEN),
        options,
        false,
    )
    .unwrap();
    Setup {
        az,
        _vault: vault,
        kv: Arc::new(kv),
    }
}

impl Setup {
    /// A chain client of its own (its own key cache), like another worker.
    fn chain(&self) -> BlobAuditChain {
        BlobAuditChain::new(
            self.az.env().blob_store(&self.az.config()).unwrap(),
            Some(self.kv.clone()),
        )
    }

    fn unkeyed_chain(&self) -> BlobAuditChain {
        BlobAuditChain::new(self.az.env().blob_store(&self.az.config()).unwrap(), None)
    }

    /// Raw access to a tenant's container, as someone with the storage
    /// account's write permission (not the vault's) would have it.
    fn attacker(&self, tenant: &str) -> BlobContainerClient {
        let env = self.az.env();
        let url = meetbot::azure::service_url(&self.az.blob_url(), &env.auth, "blob").unwrap();
        let svc = BlobServiceClient::new(
            url,
            None,
            Some(BlobServiceClientOptions {
                client_options: env.options.clone(),
                ..Default::default()
            }),
        )
        .unwrap();
        let name = env
            .blob_store(&self.az.config())
            .unwrap()
            .container_name(tenant);
        svc.blob_container_client(&name)
    }
}

async fn put(c: &BlobContainerClient, name: &str, body: Vec<u8>) {
    c.blob_client(name)
        .upload(RequestContent::from(body), None)
        .await
        .unwrap();
}

async fn get(c: &BlobContainerClient, name: &str) -> Vec<u8> {
    let d = c.blob_client(name).download(None).await.unwrap();
    d.body.collect().await.unwrap().to_vec()
}

async fn delete(c: &BlobContainerClient, name: &str) {
    c.blob_client(name).delete(None).await.unwrap();
}

fn receipt(tenant: &str, id: &str) -> AuditRecord {
    AuditRecord::Recording(DeletionReceipt {
        recording_id: id.into(),
        meeting_id: format!("m-{id}"),
        tenant: tenant.into(),
        chunk_count: 3,
        ciphertext_bytes: 4096,
        manifest_sha256: "ab".repeat(32),
        transcript_committed: true,
        transcript_sha256: Some("cd".repeat(32)),
        transcript_location: Some("https://acct.blob.core.windows.net/c/m.json".into()),
        reason: None,
        deleted_at: "2026-12-01T10:00:00Z".into(),
        method: "crypto-shred+unlink".into(),
    })
}

fn entry_of(body: &[u8]) -> ChainEntry {
    serde_json::from_slice(body).unwrap()
}

fn tampered(
    r: Result<meetbot::audit_chain::ChainReport, ChainError>,
) -> meetbot::audit_chain::ChainFailure {
    match r {
        Err(ChainError::Tampered(f)) => f,
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

async fn append_n(chain: &BlobAuditChain, tenant: &str, n: usize) {
    for i in 0..n {
        chain
            .append(&receipt(tenant, &format!("r{i}")))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_several_writers_make_one_gap_free_verified_chain() {
    let s = setup().await;
    let writers: Vec<Arc<BlobAuditChain>> = (0..4).map(|_| Arc::new(s.chain())).collect();
    let mut tasks = Vec::new();
    for (w, chain) in writers.iter().enumerate() {
        let chain = chain.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..6 {
                let a = chain
                    .append(&receipt("acme", &format!("w{w}-{i}")))
                    .await
                    .unwrap();
                assert_eq!(a.tenant, "acme");
                assert!(a.location.ends_with(&entry_blob(a.seq)), "{}", a.location);
                seqs.push(a.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=24).collect::<Vec<u64>>(),
        "one seq per receipt, no gap"
    );
    // A fresh verifier (no cached key) checks every MAC and link.
    let report = s.chain().verify("acme").await.unwrap();
    assert_eq!(report.entries, 24);
    assert_eq!(report.head_seq, 24);
    assert!(report.authenticated);
    // Every receipt is there exactly once.
    let c = s.attacker("acme");
    let mut ids = std::collections::HashSet::new();
    for seq in 1..=24 {
        let e = entry_of(&get(&c, &entry_blob(seq)).await);
        let AuditRecord::Recording(r) = e.receipt else {
            panic!()
        };
        assert!(ids.insert(r.recording_id));
    }
    // The key is stored wrapped by the vault key, never in the clear.
    let key: serde_json::Value = serde_json::from_slice(&get(&c, KEY_BLOB).await).unwrap();
    assert_eq!(key["wrapped"]["provider"], "azure-keyvault");
    assert!(key["wrapped"]["key_id"]
        .as_str()
        .unwrap()
        .contains("/keys/audit-kek/"));
    // Another tenant's chain is separate and empty.
    assert_eq!(s.chain().verify("globex").await.unwrap().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_receipt_fails_verification() {
    let s = setup().await;
    let chain = s.chain();
    append_n(&chain, "acme", 3).await;
    assert_eq!(chain.verify("acme").await.unwrap().entries, 3);
    delete(&s.attacker("acme"), &entry_blob(3)).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.seq, Some(3), "{f}");
    assert!(f.problem.contains("deleted from the end"), "{f}");
    // Dropping a middle one is named too.
    let s2 = setup().await;
    let chain = s2.chain();
    append_n(&chain, "acme", 3).await;
    delete(&s2.attacker("acme"), &entry_blob(2)).await;
    let f = tampered(s2.chain().verify("acme").await);
    assert_eq!(f.seq, Some(2), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_receipt_fails_verification() {
    let s = setup().await;
    let chain = s.chain();
    append_n(&chain, "acme", 3).await;
    let c = s.attacker("acme");
    let body = String::from_utf8(get(&c, &entry_blob(2)).await).unwrap();
    let edited = body.replace(
        "\"transcript_committed\":true",
        "\"transcript_committed\":false",
    );
    assert_ne!(edited, body);
    put(&c, &entry_blob(2), edited.into_bytes()).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.seq, Some(2), "{f}");
    assert!(f.problem.contains("hash mismatch"), "{f}");
    // Appending later does not make the edit go away.
    chain.append(&receipt("acme", "later")).await.unwrap();
    assert_eq!(tampered(s.chain().verify("acme").await).seq, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_tail_with_recomputed_hashes_is_caught_by_the_mac_only() {
    let s = setup().await;
    let keyed = s.chain();
    append_n(&keyed, "acme", 3).await;
    let unkeyed = s.unkeyed_chain();
    append_n(&unkeyed, "globex", 3).await;

    // The attacker rewrites entries 2 and 3 and the head consistently: new
    // receipts, correct plain hashes and links, the old MACs carried over.
    for tenant in ["acme", "globex"] {
        let c = s.attacker(tenant);
        let e1 = entry_of(&get(&c, &entry_blob(1)).await);
        let old2 = entry_of(&get(&c, &entry_blob(2)).await);
        let mut e2 =
            ChainEntry::new(tenant, 1, &e1.hash, &receipt(tenant, "forged-2"), None).unwrap();
        e2.mac_alg = old2.mac_alg.clone();
        e2.mac = old2.mac.clone();
        let e3 = ChainEntry::new(tenant, 2, &e2.hash, &receipt(tenant, "forged-3"), None).unwrap();
        put(&c, &entry_blob(2), e2.to_bytes()).await;
        put(&c, &entry_blob(3), e3.to_bytes()).await;
        let old_head: ChainHead = serde_json::from_slice(&get(&c, HEAD_BLOB).await).unwrap();
        let mut head = ChainHead::new(tenant, 3, &e3.hash, None);
        head.mac = old_head.mac;
        put(&c, HEAD_BLOB, head.to_bytes()).await;
    }
    // Without a MAC the rewrite is consistent: that is the boundary of audit.mac = "none".
    let r = s.unkeyed_chain().verify("globex").await.unwrap();
    assert_eq!((r.entries, r.authenticated), (3, false));
    // With the MAC it fails, at the first rewritten entry.
    let f = tampered(s.chain().verify("acme").await);
    assert!(f.problem.contains("MAC"), "{f}");
    assert_eq!(f.seq, Some(2), "{f}");
    // And writers refuse to extend the rewritten chain.
    match keyed.append(&receipt("acme", "after")).await {
        Err(ChainError::Tampered(f)) => assert!(f.problem.contains("refusing"), "{f}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_entries_are_impossible_or_detected() {
    let s = setup().await;
    let a = s.chain();
    let b = s.chain();
    append_n(&a, "acme", 2).await;
    let c = s.attacker("acme");
    let e1 = get(&c, &entry_blob(1)).await;
    let e2 = get(&c, &entry_blob(2)).await;

    // Two writers racing for one seq: put writer A one step ahead of the
    // head (as if it had won seq 3 and not yet moved the head), then let
    // writer B append: B's conditional create of seq 3 loses, it reads A's
    // entry, checks it and takes seq 4. Neither overwrote the other.
    let head2 = get(&c, HEAD_BLOB).await;
    let won = a.append(&receipt("acme", "a-3")).await.unwrap();
    assert_eq!(won.seq, 3);
    put(&c, HEAD_BLOB, head2.clone()).await;
    let lost = b.append(&receipt("acme", "b-3")).await.unwrap();
    assert_eq!(lost.seq, 4);
    let e3 = entry_of(&get(&c, &entry_blob(3)).await);
    let AuditRecord::Recording(r3) = &e3.receipt else {
        panic!()
    };
    assert_eq!(r3.recording_id, "a-3");
    assert_eq!(get(&c, &entry_blob(1)).await, e1);
    assert_eq!(get(&c, &entry_blob(2)).await, e2);
    let r = s.chain().verify("acme").await.unwrap();
    assert_eq!((r.entries, r.head_seq), (4, 4));

    // Both racing at once from the same head: one seq each, never the same.
    let (rx, ry) = (receipt("acme", "x"), receipt("acme", "y"));
    let (x, y) = tokio::join!(a.append(&rx), b.append(&ry));
    let mut seqs = [x.unwrap().seq, y.unwrap().seq];
    seqs.sort_unstable();
    assert_eq!(seqs, [5, 6]);
    assert_eq!(s.chain().verify("acme").await.unwrap().entries, 6);

    // A second blob for an existing seq cannot be created conditionally…
    let dup = ChainEntry::new(
        "acme",
        1,
        &entry_of(&e1).hash,
        &receipt("acme", "fork"),
        None,
    )
    .unwrap();
    let opts = azure_storage_blob::models::BlobClientUploadOptions::default().if_not_exists();
    let err = c
        .blob_client(&entry_blob(2))
        .upload(RequestContent::from(dup.to_bytes()), Some(opts))
        .await
        .unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(409));
    // …a fork under another name is not a chain blob…
    put(&c, "audit/00000000000000000002.fork.json", dup.to_bytes()).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.blob, "audit/00000000000000000002.fork.json", "{f}");
    delete(&c, "audit/00000000000000000002.fork.json").await;
    // …and one forced over the original (an unconditional write) is caught.
    put(&c, &entry_blob(2), dup.to_bytes()).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.seq, Some(2), "{f}");
    assert!(f.problem.contains("MAC"), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_head_or_key_is_detected_and_not_papered_over() {
    let s = setup().await;
    let chain = s.chain();
    append_n(&chain, "acme", 2).await;
    let c = s.attacker("acme");
    delete(&c, HEAD_BLOB).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.blob, HEAD_BLOB, "{f}");
    // A writer does not recreate the head over existing entries.
    assert!(matches!(
        s.chain().append(&receipt("acme", "x")).await,
        Err(ChainError::Tampered(_))
    ));

    let s = setup().await;
    append_n(&s.chain(), "acme", 2).await;
    let c = s.attacker("acme");
    delete(&c, KEY_BLOB).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.blob, KEY_BLOB, "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_without_a_valid_tenant_go_to_the_fleet_chain() {
    let s = setup().await;
    let chain = s.chain();
    let a = chain.append(&receipt("", "orphan-1")).await.unwrap();
    assert_eq!(a.tenant, FLEET_CHAIN);
    let t = AuditRecord::Transcript(TranscriptDeletionReceipt {
        tenant: "acme".into(),
        meeting_id: "m1".into(),
        location: "https://acct.blob.core.windows.net/c/m1.json".into(),
        transcript_sha256: None,
        expired_at: "2026-12-01T00:00:00Z".into(),
        deleted_at: "2026-12-01T00:01:00Z".into(),
        reason: "retention expired".into(),
    });
    assert_eq!(chain.append(&t).await.unwrap().tenant, "acme");
    assert_eq!(s.chain().verify(FLEET_CHAIN).await.unwrap().entries, 1);
    assert_eq!(s.chain().verify("acme").await.unwrap().entries, 1);
    // Moving the fleet entry into acme's chain is refused.
    let fleet = s.attacker(FLEET_CHAIN);
    let acme = s.attacker("acme");
    put(&acme, &entry_blob(2), get(&fleet, &entry_blob(1)).await).await;
    let f = tampered(s.chain().verify("acme").await);
    assert_eq!(f.seq, Some(2), "{f}");
}

/// `meetbot audit verify --tenant` with the fleet configuration: exit 0 and
/// a report for an intact chain, exit 1 naming the first bad entry.
#[test]
fn the_cli_verifies_a_tenant_chain_from_blob_storage() {
    let az = Azurite::start();
    let mut ws = Workspace::new();
    // Keys whose wrapped chain key outlives the process (ephemeral keys
    // would mean audit.mac = none).
    ws.extra_config = format!("{}[keys]\nprovider = \"local_file\"\n", az.config_toml());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Keys as the worker would have them: [keys] provider = local_file, the shared key file.
    let keys: Arc<dyn KeyProvider> =
        Arc::new(meetbot::recording::LocalKeyFile::open_or_create(ws.key_file()).unwrap());
    let chain = BlobAuditChain::new(az.env().blob_store(&az.config()).unwrap(), Some(keys));
    rt.block_on(append_n(&chain, "acme", 3));

    let run = Run::from(
        ws.command()
            .args(["audit", "verify", "--tenant", "acme"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let v = run.last();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 3);
    assert_eq!(v["authenticated"], true);

    let env = az.env();
    let c = {
        let url = meetbot::azure::service_url(&az.blob_url(), &env.auth, "blob").unwrap();
        BlobServiceClient::new(
            url,
            None,
            Some(BlobServiceClientOptions {
                client_options: env.options.clone(),
                ..Default::default()
            }),
        )
        .unwrap()
        .blob_container_client(&env.blob_store(&az.config()).unwrap().container_name("acme"))
    };
    rt.block_on(delete(&c, &entry_blob(3)));
    let run = Run::from(
        ws.command()
            .args(["audit", "verify", "--tenant", "acme"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let v = run.last();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad"], entry_blob(3), "{v}");
    assert!(
        run.stderr.contains("failed verification"),
        "{}",
        run.describe()
    );
}
