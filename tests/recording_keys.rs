//! The local key-file provider: creation, permissions, refusal to replace a
//! bad file, and concurrent first use.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

use meetbot::recording::{DataKey, KeyError, KeyProvider, LocalKeyFile};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn creates_private_file_and_reloads_the_same_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("keys/sub/kek");
    let a = LocalKeyFile::open_or_create(&path).expect("create");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&tmp.path().join("keys")), 0o700);
    assert_eq!(mode(&tmp.path().join("keys/sub")), 0o700);
    assert_eq!(a.key_id().len(), 16);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("meetbot-kek-v1:"), "{text}");
    // No temporary files are left behind.
    assert_eq!(
        fs::read_dir(tmp.path().join("keys/sub")).unwrap().count(),
        1
    );

    let b = LocalKeyFile::open_or_create(&path).expect("reopen");
    assert_eq!(a.key_id(), b.key_id());
    let dek = DataKey::generate();
    let w = a.wrap(&dek).await.unwrap();
    assert_eq!(b.unwrap(&w).await.unwrap().as_bytes(), dek.as_bytes());
    // The wrapped form does not contain the key.
    assert!(!w.wrapped.contains(&hex::encode(dek.as_bytes())));
    // Debug shows path and id, not the key.
    let shown = format!("{a:?}");
    assert!(
        shown.contains(a.key_id()) && !shown.contains(&text[15..79]),
        "{shown}"
    );
}

#[tokio::test]
async fn another_kek_cannot_unwrap() {
    let tmp = tempfile::tempdir().unwrap();
    let a = LocalKeyFile::open_or_create(tmp.path().join("a")).unwrap();
    let b = LocalKeyFile::open_or_create(tmp.path().join("b")).unwrap();
    assert_ne!(a.key_id(), b.key_id());
    let w = a.wrap(&DataKey::generate()).await.unwrap();
    assert!(matches!(b.unwrap(&w).await, Err(KeyError::WrongKek { .. })));
    // Even with the id forged, authentication fails.
    let mut forged = w.clone();
    forged.key_id = b.key_id().to_string();
    assert!(matches!(b.unwrap(&forged).await, Err(KeyError::Unwrap)));
}

#[test]
fn group_readable_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kek");
    LocalKeyFile::open_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = LocalKeyFile::open_or_create(&path).expect_err("0640");
    assert!(
        matches!(err, KeyError::Permissions { mode: 0o640, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("0640"),
        "{msg}"
    );
    // A read-only 0400 file is fine.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    LocalKeyFile::open_or_create(&path).expect("0400 is accepted");
}

fn assert_refused_and_kept(content: &[u8], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kek");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = LocalKeyFile::open_or_create(&path).expect_err("invalid key file");
    assert!(matches!(err, KeyError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains(needle), "{msg} lacks {needle}");
    assert_eq!(fs::read(&path).unwrap(), content, "the file was replaced");
}

#[test]
fn invalid_files_are_refused_not_replaced() {
    assert_refused_and_kept(b"", "empty");
    assert_refused_and_kept(&[0xffu8; 32], "not text");
    assert_refused_and_kept(b"hello", "header");
    assert_refused_and_kept(b"meetbot-kek-v1:abcd:00000000\n", "hex digits");
    let mut good = Vec::new();
    {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("kek");
        LocalKeyFile::open_or_create(&p).unwrap();
        good.extend(fs::read(&p).unwrap());
    }
    let mut flipped = good.clone();
    flipped[20] = if flipped[20] == b'a' { b'b' } else { b'a' };
    assert_refused_and_kept(&flipped, "check value");
    let mut long = good;
    long.extend_from_slice(&[b'x'; 200]);
    assert_refused_and_kept(&long, "too large");
}

#[test]
fn a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kek");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    let err = LocalKeyFile::open_or_create(&path).expect_err("directory");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn concurrent_first_use_agrees_on_one_key() {
    for _ in 0..20 {
        let tmp = tempfile::tempdir().unwrap();
        let path = Arc::new(tmp.path().join("d/kek"));
        let barrier = Arc::new(Barrier::new(8));
        let ids: Vec<String> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    LocalKeyFile::open_or_create(&*path)
                        .expect("every racer succeeds")
                        .key_id()
                        .to_string()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        assert_eq!(fs::read_dir(tmp.path().join("d")).unwrap().count(), 1);
    }
}
