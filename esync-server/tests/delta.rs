//! Delta generation runs once per (from, to, format), even with two
//! workers on the same store, on SQLite and on PostgreSQL.

mod store_support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use esync_package::delta::{apply_patch, ApplyLimits, TargetSpec};
use esync_package::digest::sha256;
use esync_proto::message::PatchFormat;
use esync_server::blob::{BlobStore, Expect};
use esync_server::deltas::{request_delta, DeltaOutcome, DeltaWorker};
use esync_server::store::{DeltaState, Inserted, Store};

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(31) as u8) ^ seed)
        .collect()
}

async fn once_per_pair(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("dir");
    let blobs = BlobStore::open(dir.path(), 16 << 20).await.expect("blobs");
    let v1 = image(0, 40_000);
    let mut v2 = v1.clone();
    v2[100..200].fill(9);
    let mut v3 = v2.clone();
    v3[30_000..30_050].fill(1);
    let mut digests = Vec::new();
    for v in [&v1, &v2, &v3] {
        digests.push(
            blobs
                .put_bytes(Expect::default(), v)
                .await
                .expect("put")
                .sha256,
        );
    }
    // Jobs requested twice each (two nodes asking for the same delta).
    let pairs = [(0, 1), (0, 2), (1, 2)];
    for _ in 0..2 {
        for (a, b) in pairs {
            for f in [PatchFormat::BsdiffZstd, PatchFormat::Bsdiff40] {
                request_delta(store.as_ref(), &digests[a], &digests[b], f, 1)
                    .await
                    .expect("request");
            }
        }
    }
    let (_, again) = request_delta(
        store.as_ref(),
        &digests[0],
        &digests[1],
        PatchFormat::BsdiffZstd,
        2,
    )
    .await
    .expect("request");
    assert_eq!(again, Inserted::Existing);

    let clock = Arc::new(AtomicI64::new(1_000));
    let mut tasks = Vec::new();
    for w in ["worker-a", "worker-b"] {
        let worker = DeltaWorker::new(store.clone(), blobs.clone(), w, 600_000);
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            worker
                .drain(move || clock.fetch_add(1, Ordering::SeqCst))
                .await
                .expect("drain")
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        for o in t.await.expect("join") {
            match o {
                DeltaOutcome::Done { job_id, .. } => done.push(job_id),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    done.sort_unstable();
    let n = done.len();
    done.dedup();
    assert_eq!(n, done.len(), "a job was generated twice");
    assert_eq!(n, pairs.len() * 2, "every job generated once");

    // Every result is a patch that turns the source into the target.
    let images = [&v1, &v2, &v3];
    for (a, b) in pairs {
        for f in [PatchFormat::BsdiffZstd, PatchFormat::Bsdiff40] {
            let job = store
                .delta_job(
                    &digests[a],
                    &digests[b],
                    esync_server::deltas::format_name(f),
                )
                .await
                .expect("job")
                .expect("present");
            assert_eq!(job.state, DeltaState::Done, "{job:?}");
            assert_eq!(job.attempts, 1, "{job:?}");
            let patch = blobs
                .read(&job.result_sha256.expect("result"))
                .await
                .expect("patch blob");
            let mut out = Vec::new();
            let src: &[u8] = images[a];
            let target = TargetSpec {
                length: images[b].len() as u64,
                sha256: sha256(images[b]),
            };
            apply_patch(
                f,
                &src,
                &sha256(src),
                &patch.as_slice(),
                &target,
                &mut out,
                &ApplyLimits::default(),
            )
            .expect("apply");
            assert_eq!(&out, images[b]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_per_pair_on_sqlite() {
    let (s, _dir) = store_support::sqlite().await;
    once_per_pair(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_per_pair_on_postgres() {
    let Some((s, schema)) = store_support::postgres("delta").await else {
        return;
    };
    once_per_pair(s).await;
    schema.drop_schema().await;
}

#[tokio::test]
async fn missing_image_and_unknown_format_fail_the_job() {
    let (s, _dir) = store_support::sqlite().await;
    let dir = tempfile::tempdir().expect("dir");
    let blobs = BlobStore::open(dir.path(), 1 << 20).await.expect("blobs");
    s.enqueue_delta(&[1; 32], &[2; 32], "BsdiffZstd", 1)
        .await
        .expect("enqueue");
    s.enqueue_delta(&[1; 32], &[2; 32], "NoSuchFormat", 1)
        .await
        .expect("enqueue");
    let w = DeltaWorker::new(s.clone(), blobs, "w", 1_000);
    let out = w.drain(|| 5).await.expect("drain");
    assert_eq!(out.len(), 2);
    for o in out {
        assert!(matches!(o, DeltaOutcome::Failed { .. }), "{o:?}");
    }
    let j = s
        .delta_job(&[1; 32], &[2; 32], "BsdiffZstd")
        .await
        .expect("get")
        .expect("job");
    assert_eq!(j.state, DeltaState::Failed);
    assert!(
        j.error.as_deref().unwrap_or("").contains("missing"),
        "{j:?}"
    );
}
