//! Memory for secrets: recording keys, key schedules and plaintext audio kept
//! out of swap and out of core files.
//!
//! Every buffer here is its own anonymous private mapping of whole pages:
//!
//! - `mlock`ed, so the kernel never writes it to swap. Locking can fail
//!   (`RLIMIT_MEMLOCK`, typically 8 MiB, or 64 KiB in some containers, for a
//!   process without `CAP_IPC_LOCK`); that is logged once at `warn` (later
//!   failures at `debug`) and the buffer works unlocked. Never fatal.
//! - `madvise(MADV_DONTDUMP)`ed, so it is left out of core dumps even if core
//!   dumps were enabled (`main` already disables them and marks the process
//!   non-dumpable; this is the second wall).
//! - wiped (volatile writes, `zeroize`) before it is unlocked and unmapped.
//!   A [`LockedVec`] that grows moves into a new mapping and wipes the old
//!   one, so growth never strands a plaintext copy in freed memory.
//!
//! Own mappings (not heap memory) because `munlock` does not nest: unlocking a
//! heap buffer would unlock the page it shares with some other locked buffer.
//!
//! **Boundary:** what is copied out of these buffers (a value moved in by
//! [`LockedBox::new`] leaves its bytes in the caller's stack frame until they
//! are overwritten; an HTTP client copying a request body) is not covered.
//!
//! The only `unsafe` code in the crate lives here.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::mm::{Advice, MapFlags, ProtFlags};
use zeroize::Zeroize;

static LOCK_WARNED: AtomicBool = AtomicBool::new(false);
static DONTDUMP_WARNED: AtomicBool = AtomicBool::new(false);
static LOCKED_BYTES: AtomicUsize = AtomicUsize::new(0);
static UNLOCKED_REGIONS: AtomicUsize = AtomicUsize::new(0);

/// Bytes currently locked by this module's buffers.
pub fn locked_bytes() -> usize {
    LOCKED_BYTES.load(Ordering::Relaxed)
}

/// Buffers created so far that could not be locked (they work, unlocked).
pub fn unlocked_regions() -> usize {
    UNLOCKED_REGIONS.load(Ordering::Relaxed)
}

fn note_failure(flag: &AtomicBool, what: &str, error: rustix::io::Errno) {
    if flag.swap(true, Ordering::Relaxed) {
        tracing::debug!(error = %error, "Could not {what}.");
    } else {
        tracing::warn!(
            error = %error,
            "Could not {what}; key material and audio buffers work but may reach swap \
             (raise RLIMIT_MEMLOCK, e.g. `ulimit -l`, or grant CAP_IPC_LOCK). Logged once."
        );
    }
}

/// Whole pages of an anonymous private mapping: locked and excluded from core
/// dumps where the OS allows, wiped and unmapped on drop.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    locked: bool,
}

// SAFETY: a Region is plain owned memory with no thread affinity; access goes
// through `&`/`&mut` of the owning wrapper.
unsafe impl Send for Region {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Region {}

impl Region {
    /// A zero-filled region of at least `bytes` bytes (at least one page).
    fn new(bytes: usize) -> Region {
        let page = rustix::param::page_size();
        let len = bytes
            .max(1)
            .checked_next_multiple_of(page)
            .unwrap_or(usize::MAX - page + 1);
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses;
        // no existing memory is touched.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        };
        let ptr = match mapped.ok().and_then(|p| NonNull::new(p.cast::<u8>())) {
            Some(p) => p,
            // Out of address space or memory: what the global allocator does.
            None => std::alloc::handle_alloc_error(
                Layout::from_size_align(len, page).unwrap_or(Layout::new::<u8>()),
            ),
        };
        let raw = ptr.as_ptr().cast::<c_void>();
        // SAFETY: [raw, raw + len) is the mapping created above, owned by us.
        if let Err(e) = unsafe { rustix::mm::madvise(raw, len, Advice::LinuxDontDump) } {
            note_failure(
                &DONTDUMP_WARNED,
                "exclude a secret buffer from core dumps",
                e,
            );
        }
        // SAFETY: as above.
        let locked = match unsafe { rustix::mm::mlock(raw, len) } {
            Ok(()) => {
                LOCKED_BYTES.fetch_add(len, Ordering::Relaxed);
                true
            }
            Err(e) => {
                UNLOCKED_REGIONS.fetch_add(1, Ordering::Relaxed);
                note_failure(&LOCK_WARNED, "lock a secret buffer in memory", e);
                false
            }
        };
        Region { ptr, len, locked }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, and
        // `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        let raw = self.ptr.as_ptr().cast::<c_void>();
        if self.locked {
            // SAFETY: the range was locked by `new` and is still mapped.
            let _ = unsafe { rustix::mm::munlock(raw, self.len) };
            LOCKED_BYTES.fetch_sub(self.len, Ordering::Relaxed);
        }
        // SAFETY: the mapping is ours, page aligned, and no reference into it
        // outlives `self` (every accessor borrows `self`).
        if let Err(e) = unsafe { rustix::mm::munmap(raw, self.len) } {
            tracing::debug!(error = %e, "munmap of a secret buffer failed.");
        }
    }
}

/// A value in its own locked, non-dumped page(s); wiped when dropped.
///
/// For key material: data keys and AES key schedules.
pub struct LockedBox<T> {
    region: Region,
    _owns: PhantomData<T>,
}

// SAFETY: LockedBox<T> owns a T like Box<T> does.
unsafe impl<T: Send> Send for LockedBox<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for LockedBox<T> {}

impl<T> LockedBox<T> {
    /// Moves `value` into locked memory.
    pub fn new(value: T) -> Self {
        let layout = Layout::new::<T>();
        let region = Region::new(layout.size());
        // Page-aligned mappings satisfy any alignment up to a page; larger
        // alignments do not exist among the types put here.
        assert!(
            layout.align() <= rustix::param::page_size(),
            "LockedBox: alignment above a page"
        );
        // SAFETY: the region is at least size_of::<T>() bytes, aligned (above)
        // and not yet holding a value.
        unsafe { region.ptr.as_ptr().cast::<T>().write(value) };
        LockedBox {
            region,
            _owns: PhantomData,
        }
    }

    /// Whether the page(s) are locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.region.locked
    }

    /// Address of the value (for tests that inspect the mapping).
    pub fn addr(&self) -> usize {
        self.region.ptr.as_ptr() as usize
    }
}

impl<T> Deref for LockedBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a valid T there; it lives until drop.
        unsafe { &*self.region.ptr.as_ptr().cast::<T>() }
    }
}

impl<T> DerefMut for LockedBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` is unique.
        unsafe { &mut *self.region.ptr.as_ptr().cast::<T>() }
    }
}

impl<T> Drop for LockedBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value was written by `new` and is dropped exactly once;
        // the region (wiped on its own drop) is freed after this.
        unsafe { std::ptr::drop_in_place(self.region.ptr.as_ptr().cast::<T>()) };
    }
}

impl<T> fmt::Debug for LockedBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockedBox(<secret>)")
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i16 {}
    impl Sealed for f32 {}
}

/// Element types of a [`LockedVec`]: plain numbers for which all-zero bytes
/// are a valid value and which need no drop.
pub trait Plain: Copy + sealed::Sealed + 'static {}
impl Plain for u8 {}
impl Plain for i16 {}
impl Plain for f32 {}

/// A growable buffer of plain numbers (bytes, PCM samples) in locked,
/// non-dumped pages. Growing moves to a new mapping and wipes the old one;
/// [`LockedVec::clear`] and drop wipe the contents.
pub struct LockedVec<T: Plain> {
    region: Region,
    len: usize,
    _elems: PhantomData<T>,
}

impl<T: Plain> LockedVec<T> {
    /// An empty buffer with room for at least `capacity` elements.
    pub fn with_capacity(capacity: usize) -> Self {
        LockedVec {
            region: Region::new(capacity.saturating_mul(std::mem::size_of::<T>())),
            len: 0,
            _elems: PhantomData,
        }
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements it holds without growing.
    pub fn capacity(&self) -> usize {
        self.region.len / std::mem::size_of::<T>().max(1)
    }

    /// Whether its pages are locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.region.locked
    }

    /// Address of the first element (for tests that inspect the mapping).
    pub fn addr(&self) -> usize {
        self.region.ptr.as_ptr() as usize
    }

    fn all_mut(&mut self) -> &mut [T] {
        let cap = self.capacity();
        // SAFETY: the region holds `cap` elements' worth of bytes, aligned to a
        // page; every bit pattern (zero-filled at first) is a valid T: Plain.
        unsafe { std::slice::from_raw_parts_mut(self.region.ptr.as_ptr().cast::<T>(), cap) }
    }

    /// Appends `items`, growing (into a new locked mapping) if needed.
    pub fn extend_from_slice(&mut self, items: &[T]) {
        let need = self.len.saturating_add(items.len());
        if need > self.capacity() {
            let mut bigger = LockedVec::<T>::with_capacity(need.max(self.capacity() * 2));
            bigger.all_mut()[..self.len].copy_from_slice(&self[..]);
            bigger.len = self.len;
            // The old mapping is wiped when it drops here.
            *self = bigger;
        }
        let len = self.len;
        self.all_mut()[len..need].copy_from_slice(items);
        self.len = need;
    }

    /// Appends one element.
    pub fn push(&mut self, item: T) {
        self.extend_from_slice(std::slice::from_ref(&item));
    }

    /// Shortens to `len` elements, wiping the rest.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            let old = self.len;
            self.region_bytes_of(len, old).zeroize();
            self.len = len;
        }
    }

    /// Wipes the contents and empties the buffer (capacity and lock stay).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    fn region_bytes_of(&mut self, from: usize, to: usize) -> &mut [u8] {
        let size = std::mem::size_of::<T>();
        &mut self.region.bytes_mut()[from * size..to * size]
    }
}

impl<T: Plain> Deref for LockedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised (see `all_mut`).
        unsafe { std::slice::from_raw_parts(self.region.ptr.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> DerefMut for LockedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let len = self.len;
        &mut self.all_mut()[..len]
    }
}

impl<T: Plain> fmt::Debug for LockedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedVec")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl std::io::Write for LockedVec<u8> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `Locked:` size (kB) and `VmFlags` of the mapping that contains `addr`,
/// from `/proc/self/smaps`. For tests and diagnostics; `None` if not found.
pub fn mapping_status(addr: usize) -> Option<(u64, String)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    let mut locked = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                if !first.ends_with(':') {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if !inside {
            continue;
        }
        if let Some(v) = line.strip_prefix("Locked:") {
            locked = v.trim().trim_end_matches("kB").trim().parse().ok();
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            return Some((locked?, flags.trim().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_vec_pages_are_locked_and_not_dumped() {
        let mut v = LockedVec::<u8>::with_capacity(3 * 4096 + 1);
        v.extend_from_slice(b"secret");
        assert!(v.is_locked(), "mlock failed in the test environment");
        let (locked_kb, flags) = mapping_status(v.addr()).expect("mapping in smaps");
        let cap_kb = (v.capacity() / 1024) as u64;
        assert!(locked_kb >= cap_kb, "Locked: {locked_kb} kB < {cap_kb} kB");
        assert!(
            flags.split_whitespace().any(|f| f == "dd"),
            "no dd (MADV_DONTDUMP) in VmFlags: {flags}"
        );
        assert_eq!(&v[..], b"secret");
    }

    #[test]
    fn growing_moves_to_a_new_locked_mapping() {
        let mut v = LockedVec::<f32>::with_capacity(4);
        let first = v.addr();
        let samples: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        v.extend_from_slice(&samples);
        assert_ne!(v.addr(), first);
        assert_eq!(&v[..], &samples[..]);
        let (locked_kb, _) = mapping_status(v.addr()).expect("mapping");
        assert!(locked_kb * 1024 >= (5000 * 4) as u64);
        v.truncate(2);
        assert_eq!(&v[..], &[0.0, 1.0]);
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn locked_box_holds_and_drops_its_value() {
        use std::sync::Arc;
        let witness = Arc::new(());
        let b = LockedBox::new(([7u8; 32], witness.clone()));
        assert_eq!(b.0, [7u8; 32]);
        let (locked_kb, flags) = mapping_status(b.addr()).expect("mapping");
        assert!(
            locked_kb >= 4 && flags.contains("dd"),
            "{locked_kb} {flags}"
        );
        assert_eq!(Arc::strong_count(&witness), 2);
        drop(b);
        assert_eq!(Arc::strong_count(&witness), 1, "value not dropped");
    }
}
