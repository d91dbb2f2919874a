//! Blob store: streamed, hashed, capped writes that leave nothing behind
//! on bad input; ranged reads.

use esync_server::blob::{BlobError, BlobStore, Expect};
use sha2::{Digest as _, Sha256};

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Files under the store root other than the `tmp` directory itself.
fn files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn store(max: u64) -> (BlobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    (BlobStore::open(dir.path(), max).await.expect("open"), dir)
}

#[tokio::test]
async fn good_upload_is_stored_under_its_digest_and_ranges_read() {
    let (s, dir) = store(1 << 20).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let info = s
        .put_reader(Expect::sha256(sha(&data)), &data[..])
        .await
        .expect("put");
    assert_eq!(info.sha256, sha(&data));
    assert_eq!(info.length, data.len() as u64);
    assert_eq!(files(dir.path()), vec![s.path(&info.sha256)]);
    assert_eq!(s.read(&info.sha256).await.expect("read"), data);
    assert_eq!(
        s.read_range(&info.sha256, 1000, Some(1010))
            .await
            .expect("range"),
        &data[1000..1010]
    );
    assert_eq!(
        s.read_range(&info.sha256, 199_990, None)
            .await
            .expect("tail"),
        &data[199_990..]
    );
    for (a, b) in [
        (10, Some(5)),
        (0, Some(200_001)),
        (200_001, None),
        (7, Some(7)),
    ] {
        let r = s.read_range(&info.sha256, a, b).await;
        assert!(
            matches!(r, Err(BlobError::RangeNotSatisfiable { .. })),
            "{a} {b:?}: {r:?}"
        );
    }
    assert_eq!(s.len(&info.sha256).await.expect("len"), Some(200_000));
    // Storing the same content again is fine and keeps one file.
    s.put_bytes(Expect::default(), &data).await.expect("again");
    assert_eq!(files(dir.path()).len(), 1);
}

#[tokio::test]
async fn wrong_hash_truncation_and_oversize_leave_nothing() {
    let (s, dir) = store(1000).await;
    let data = vec![5u8; 800];
    // Wrong digest.
    let r = s.put_bytes(Expect::sha256([0; 32]), &data).await;
    assert!(matches!(r, Err(BlobError::DigestMismatch { .. })), "{r:?}");
    // Truncated upload: the digest of the full content is expected.
    let r = s.put_reader(Expect::sha256(sha(&data)), &data[..500]).await;
    assert!(matches!(r, Err(BlobError::DigestMismatch { .. })), "{r:?}");
    // Truncated against an expected length.
    let r = s
        .put_bytes(
            Expect {
                sha256: None,
                length: Some(800),
            },
            &data[..799],
        )
        .await;
    assert!(matches!(r, Err(BlobError::LengthMismatch { .. })), "{r:?}");
    // Over the cap, fed in chunks: refused as soon as it passes the cap.
    let mut w = s.writer(Expect::default()).await.expect("writer");
    w.write(&data).await.expect("first chunk fits");
    let r = w.write(&data).await;
    assert!(
        matches!(r, Err(BlobError::TooLarge { limit: 1000 })),
        "{r:?}"
    );
    drop(w);
    // An abandoned upload (client went away) leaves nothing either.
    let mut w = s.writer(Expect::default()).await.expect("writer");
    w.write(b"partial").await.expect("write");
    drop(w);
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    assert!(!s.contains(&sha(&data)).await.expect("contains"));
    let r = s.read(&sha(&data)).await;
    assert!(matches!(r, Err(BlobError::NotFound(_))), "{r:?}");
}

#[tokio::test]
async fn leftover_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
    std::fs::write(dir.path().join("tmp/crash.part"), b"half").expect("write");
    let _s = BlobStore::open(dir.path(), 10).await.expect("open");
    assert!(files(dir.path()).is_empty());
}
