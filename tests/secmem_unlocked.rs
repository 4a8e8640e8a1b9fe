//! A process that may not lock memory (RLIMIT_MEMLOCK = 0, no CAP_IPC_LOCK)
//! still records, replays and destroys: a failed `mlock` is logged, never
//! fatal, and the buffers are still kept out of core dumps.
//!
//! The child is this test binary re-run with an environment variable, its
//! CAP_IPC_LOCK removed by `setpriv` when the test runs as root.

use std::path::PathBuf;
use std::process::Command;

use meetbot::core::media::{OpusPacket, ParticipantId};
use meetbot::recording::{
    DataKey, EphemeralKeys, Recording, RecordingConfig, RecordingMeta, MIN_CHUNK_BYTES,
};
use meetbot::secmem::{mapping_status, LockedVec};

const CHILD_ENV: &str = "MEETBOT_TEST_UNLOCKED_CHILD_DIR";
const CAP_IPC_LOCK: u32 = 14;

fn vm_lck_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck in /proc/self/status")
}

fn has_cap_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << CAP_IPC_LOCK) != 0
}

/// The child: no memory locking possible. A no-op in a normal test run.
#[test]
fn unlocked_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Memlock,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .unwrap();
    assert!(!has_cap_ipc_lock(), "the child still has CAP_IPC_LOCK");

    let dek = DataKey::generate();
    assert!(
        !dek.is_locked(),
        "mlock succeeded: the test set-up is wrong"
    );
    let cfg = RecordingConfig {
        spool_dir: dir.join("spool"),
        memory_budget_bytes: 0,
        chunk_bytes: MIN_CHUNK_BYTES,
    };
    let meta = RecordingMeta {
        meeting_id: "m".into(),
        tenant: "t".into(),
    };
    let mut rec = Recording::create(&cfg, dek, EphemeralKeys::placeholder(), meta).unwrap();
    let who = ParticipantId("p".into());
    for i in 0..200u32 {
        let p = OpusPacket {
            seq: i as u16,
            at_ms: u64::from(i) * 20,
            payload: vec![(i % 250) as u8; 120].into(),
        };
        rec.append(&who, &p).unwrap();
    }
    rec.flush().unwrap();
    assert!(rec.stats().spilled_chunks > 0);
    let back: Vec<_> = rec.replay().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(back.len(), 200);
    assert!(back
        .iter()
        .enumerate()
        .all(|(i, (_, p))| p.payload[..] == vec![(i % 250) as u8; 120][..]));
    rec.destroy().unwrap();

    assert!(meetbot::secmem::unlocked_regions() >= 3);
    assert_eq!(meetbot::secmem::locked_bytes(), 0);
    assert_eq!(vm_lck_kb(), 0);
    // Still excluded from core dumps.
    let v = LockedVec::<u8>::with_capacity(64);
    let (locked_kb, flags) = mapping_status(v.addr()).expect("mapping");
    assert_eq!(locked_kb, 0);
    assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    println!("UNLOCKED-CHILD-OK");
}

#[test]
fn a_failed_mlock_is_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if has_cap_ipc_lock() {
        // Root (or a capable user): drop CAP_IPC_LOCK from the bounding set,
        // so the re-executed child cannot have it.
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set", "-ipc_lock", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args([
            "--exact",
            "unlocked_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .output()
        .expect("run the child (setpriv is in util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("UNLOCKED-CHILD-OK"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
