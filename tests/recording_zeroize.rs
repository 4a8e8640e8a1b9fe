//! Shows that a data key's bytes are zero after it is dropped.
//!
//! The library forbids unsafe code; this test needs it to look at memory
//! after the destructor ran, without freeing it.

use std::mem::ManuallyDrop;

use meetbot::recording::{DataKey, KEY_LEN};

#[test]
fn data_key_is_zeroized_on_drop() {
    let mut slot = ManuallyDrop::new(DataKey::generate());
    let ptr = slot.as_bytes().as_ptr();
    // SAFETY: `ptr` points into `slot`, which stays allocated (ManuallyDrop on
    // this stack frame) until the end of the function.
    let before: Vec<u8> = (0..KEY_LEN)
        .map(|i| unsafe { std::ptr::read_volatile(ptr.add(i)) })
        .collect();
    assert_ne!(before, vec![0u8; KEY_LEN], "a fresh key is not all zero");
    // SAFETY: dropped exactly once, and `slot` is not used as a DataKey again.
    unsafe { ManuallyDrop::drop(&mut slot) };
    // SAFETY: the storage of `slot` is still live; DataKey is plain bytes, so
    // reading them after its destructor ran is reading initialised u8s.
    let after: Vec<u8> = (0..KEY_LEN)
        .map(|i| unsafe { std::ptr::read_volatile(ptr.add(i)) })
        .collect();
    assert_eq!(after, vec![0u8; KEY_LEN], "key bytes survive drop");
}

#[test]
fn data_key_debug_is_redacted() {
    let k = DataKey::generate();
    let shown = format!("{k:?}");
    assert!(!shown.contains(&hex::encode(k.as_bytes())));
    assert!(shown.contains("secret"));
}
