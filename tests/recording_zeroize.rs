//! Shows that a data key's bytes are gone from the process after it is
//! dropped: its page is wiped and unmapped (`meetbot::secmem`), so reading the
//! address through `/proc/self/mem` fails.
//!
//! One test only: a concurrent test in this process could map a new page at
//! the freed address between the drop and the read.

use std::os::unix::fs::FileExt;

use meetbot::recording::{DataKey, KEY_LEN};

#[test]
fn data_key_is_gone_after_drop_and_its_debug_is_redacted() {
    let k = DataKey::generate();
    let shown = format!("{k:?}");
    assert!(!shown.contains(&hex::encode(k.as_bytes())));
    assert!(shown.contains("secret"));
    drop(k);

    let mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
    let key = DataKey::generate();
    let addr = key.as_bytes().as_ptr() as u64;
    let mut before = [0u8; KEY_LEN];
    mem.read_exact_at(&mut before, addr)
        .expect("the live key is readable");
    assert_eq!(&before, key.as_bytes());
    assert_ne!(before, [0u8; KEY_LEN], "a fresh key is not all zero");
    drop(key);
    // No allocation between the drop and the read, so nothing can reuse the address.
    let mut after = [0u8; KEY_LEN];
    let read = mem.read_at(&mut after, addr);
    assert!(
        matches!(read, Err(_) | Ok(0)),
        "the key's page is still mapped after drop: read {read:?}, bytes {after:?}"
    );
    before.fill(0);
}
