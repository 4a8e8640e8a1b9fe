//! The Azure clients against a real Azurite: the blob transcript store
//! (tenant containers, conditional create, read-back, retention metadata),
//! job-queue leases and the bot-records table.

mod common;

use std::time::{Duration, SystemTime};

use common::azurite::Azurite;
use meetbot::azure::table::TableError;
use meetbot::store::{CommitError, TranscriptStore};
use meetbot::transcript::{TranscriptDoc, SCHEMA};

fn doc(tenant: &str, meeting: &str, text_marker: &str) -> TranscriptDoc {
    serde_json::from_value(serde_json::json!({
        "schema": SCHEMA, "meeting_id": meeting, "tenant": tenant, "recording_id": "r-1",
        "started_at": "2026-11-23T10:00:00Z", "ended_at": "2026-11-23T10:30:00Z",
        "participants": [{"id": "p1", "name": "Host"}],
        "segments": [{"speaker_id": "p1", "speaker": "Host", "start_ms": 0, "end_ms": 900, "text": text_marker}],
        "provider": "embedded", "model": "tiny.en", "language": "en", "complete": true, "gaps": []
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_store_silos_tenants_never_overwrites_and_sets_expiry() {
    let az = Azurite::start();
    let cfg = az.config();
    let store = az
        .env()
        .blob_store(&cfg)
        .unwrap()
        .with_retention(Duration::from_secs(7 * 86400));

    let a = doc("acme", "m1", "hello from acme");
    let before = SystemTime::now();
    let c1 = store.commit(&a).await.unwrap();
    assert_eq!(c1.sha256, hex_sha(&a.to_json()));
    assert!(
        c1.location.contains(&store.container_name("acme")),
        "{}",
        c1.location
    );
    assert!(
        !c1.location.contains("sig="),
        "no SAS in locations: {}",
        c1.location
    );
    // A retried commit of the same document is success, same hash.
    let c2 = store.commit(&a).await.unwrap();
    assert_eq!(c1, c2);
    // A different transcript for the same meeting is refused; the first stays.
    let other = doc("acme", "m1", "something else");
    match store.commit(&other).await {
        Err(CommitError::Conflict(m)) => assert!(m.contains("refusing to overwrite"), "{m}"),
        r => panic!("expected a conflict, got {r:?}"),
    }
    assert_eq!(store.read("acme", "m1.json").await.unwrap(), a.to_json());
    let vtt = String::from_utf8(store.read("acme", "m1.vtt").await.unwrap()).unwrap();
    assert!(
        vtt.starts_with("WEBVTT") && vtt.contains("hello from acme"),
        "{vtt}"
    );

    // Same meeting id in another tenant: another container, no conflict.
    let b = doc("globex", "m1", "hello from globex");
    let cb = store.commit(&b).await.unwrap();
    assert_ne!(store.container_name("acme"), store.container_name("globex"));
    assert!(cb.location.contains(&store.container_name("globex")));
    assert_eq!(store.read("acme", "m1.json").await.unwrap(), a.to_json());

    // Retention metadata: commit time + 7 days.
    let all = store.list_all().await.unwrap();
    let json = all
        .iter()
        .find(|b| b.container == store.container_name("acme") && b.name == "m1.json")
        .unwrap();
    assert_eq!(json.kind.as_deref(), Some("transcript"));
    let exp = json.expires_at.expect("expires_at metadata");
    let want = before + Duration::from_secs(7 * 86400);
    let diff = exp.duration_since(want).unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(60), "expiry off by {diff:?}");
    assert_eq!(
        all.iter()
            .filter(|b| b.kind.as_deref() == Some("transcript_vtt"))
            .count(),
        2
    );

    // Receipts: stored once, never replaced by a different one.
    let loc = store
        .put_receipt("acme", "r-1", b"{\"ok\":1}")
        .await
        .unwrap();
    assert!(loc.ends_with("receipt-r-1.json"), "{loc}");
    store
        .put_receipt("acme", "r-1", b"{\"ok\":1}")
        .await
        .unwrap();
    assert!(matches!(
        store.put_receipt("acme", "r-1", b"{\"ok\":2}").await,
        Err(CommitError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_store_reports_a_stopped_service_as_retryable() {
    let mut az = Azurite::start();
    let cfg = az.config();
    let store = az.env().blob_store(&cfg).unwrap();
    az.stop();
    let t0 = std::time::Instant::now();
    match store.commit(&doc("acme", "m2", "x")).await {
        Err(e @ CommitError::Retryable(_)) => assert!(e.is_retryable()),
        r => panic!("expected retryable, got {r:?}"),
    }
    eprintln!("stopped Azurite reported after {:?}", t0.elapsed());
    az.restart();
    store.commit(&doc("acme", "m2", "x")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_leases_hide_renew_and_delete_messages() {
    let az = Azurite::start();
    let cfg = az.config();
    let q = az.env().queue(&cfg, "jobs-test").unwrap();
    q.create_if_missing().await.unwrap();
    q.create_if_missing().await.unwrap();
    assert!(q.receive(Duration::from_secs(30)).await.unwrap().is_none());
    q.send("{\"a\":\"<&>\"}", Duration::ZERO).await.unwrap();
    let mut m = q.receive(Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!(m.text, "{\"a\":\"<&>\"}");
    assert_eq!(m.dequeue_count, 1);
    // Leased: nobody else sees it.
    assert!(q.receive(Duration::from_secs(30)).await.unwrap().is_none());
    let old = m.clone();
    q.renew(&mut m, Duration::from_secs(60)).await.unwrap();
    assert_ne!(old.pop_receipt, m.pop_receipt);
    assert!(matches!(
        q.delete(&old).await,
        Err(meetbot::azure::queue::QueueError::LeaseLost)
    ));
    q.delete(&m).await.unwrap();
    // A short lease lapses: the message comes back with a higher count.
    q.send("again", Duration::ZERO).await.unwrap();
    let first = q.receive(Duration::from_secs(1)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = q.receive(Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.dequeue_count, 2);
    // A delayed message stays hidden until its time.
    q.send("later", Duration::from_secs(3)).await.unwrap();
    q.delete(&second).await.unwrap();
    assert!(q.receive(Duration::from_secs(30)).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        q.receive(Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap()
            .text,
        "later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_records_are_per_tenant() {
    let az = Azurite::start();
    let cfg = az.config();
    let r = az.env().records(&cfg).unwrap();
    r.ensure_table().await.unwrap();
    r.ensure_table().await.unwrap();
    r.create("acme", "b-1", "m1", "queued", Some("2026-11-23T10:00:00Z"))
        .await
        .unwrap();
    assert!(matches!(
        r.create("acme", "b-1", "m1", "queued", None).await,
        Err(TableError::AlreadyExists)
    ));
    let rec = r.get("acme", "b-1").await.unwrap().unwrap();
    assert_eq!(
        (
            rec.status.as_str(),
            rec.meeting_id.as_str(),
            rec.tenant.as_str()
        ),
        ("queued", "m1", "acme")
    );
    assert_eq!(rec.join_at.as_deref(), Some("2026-11-23T10:00:00Z"));
    assert!(!rec.stop_requested);
    // Another tenant cannot see it, even with the same id.
    assert!(r.get("globex", "b-1").await.unwrap().is_none());
    r.update(
        "acme",
        "b-1",
        &meetbot::fleet::records::Update {
            status: Some("done".into()),
            transcript: Some(serde_json::json!({"sha256": "ab"})),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rec = r.get("acme", "b-1").await.unwrap().unwrap();
    assert!(rec.is_terminal());
    assert_eq!(rec.transcript.unwrap()["sha256"], "ab");
    // Quotes in keys are escaped, not injected.
    assert!(r
        .get("acme", "x') or (PartitionKey ne 'q")
        .await
        .unwrap()
        .is_none());
    r.create("globex", "b-2", "m9", "queued", None)
        .await
        .unwrap();
    let list = r.list("acme", 100).await.unwrap();
    assert_eq!(
        list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b-1"]
    );
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
