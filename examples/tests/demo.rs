//! Runs the end-to-end demo with small images and checks its summary:
//! campaign 1 installs 2.0.0 everywhere (the ECM by delta in stage 0, the
//! camera by delta and the BCM by full image in stage 1), campaign 2 fails
//! on the BCM's self-test and every component is rolled back, and every
//! ECU ends on 2.0.0 with the
//! Server's image bytes in their running slot. Every step is the real
//! Client's (session core, orchestrator loop over the embedded broker).
#![allow(clippy::unwrap_used, reason = "test code")]

use esync_examples::{run_demo, CampaignOutcome, DemoOptions, Encoding};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_installs_then_rolls_back_a_failing_package() {
    let work = tempfile::tempdir().unwrap();
    let s = run_demo(DemoOptions {
        image_size: 48 * 1024,
        work_dir: Some(work.path().to_path_buf()),
        verbose: false,
        chunk_size: 4096,
    })
    .await
    .unwrap();

    assert_eq!(s.campaigns.len(), 2);
    let c1 = &s.campaigns[0];
    assert_eq!(c1.outcome, CampaignOutcome::Installed);
    assert_eq!(c1.components.len(), 3);
    for c in &c1.components {
        assert_eq!(c.result, "confirmed 2.0.0");
        assert!(c.bytes_sent > 0);
        match c.device.as_str() {
            // The ECM applies deltas: far fewer bytes than the image.
            "/powertrain/ecm" => {
                assert_eq!(c.stage, 0);
                assert!(matches!(&c.encoding, Encoding::Delta { from } if from == "1.0.0"));
                assert!(c.bytes_sent < c.image_len / 2, "{c:?}");
            }
            "/adas/camera" => {
                assert_eq!(c.stage, 1);
                assert!(matches!(&c.encoding, Encoding::Delta { from } if from == "1.0.0"));
                assert!(c.bytes_sent < c.image_len / 2, "{c:?}");
            }
            // The BCM advertises no patch format: full image, stage 1.
            "/body/bcm" => {
                assert_eq!(c.stage, 1);
                assert_eq!(c.encoding, Encoding::Full);
                assert_eq!(c.bytes_sent, c.image_len);
            }
            other => panic!("unexpected device {other}"),
        }
    }
    // Only the blobs the plan chose were downloaded.
    assert_eq!(
        c1.downloaded,
        c1.components.iter().map(|c| c.bytes_sent).sum::<u64>()
    );

    let c2 = &s.campaigns[1];
    match &c2.outcome {
        CampaignOutcome::RolledBack { reason } => {
            assert!(reason.contains("/body/bcm"), "{reason}");
            assert!(reason.contains("self-test"), "{reason}");
        }
        other => panic!("campaign 2: {other:?}"),
    }
    let ecm = c2
        .components
        .iter()
        .find(|c| c.device.as_str() == "/powertrain/ecm")
        .unwrap();
    assert_eq!(ecm.result, "rolled back, runs 2.0.0");
    let cam = c2
        .components
        .iter()
        .find(|c| c.device.as_str() == "/adas/camera")
        .unwrap();
    assert_eq!(cam.result, "rolled back, runs 2.0.0");
    let bcm = c2
        .components
        .iter()
        .find(|c| c.device.as_str() == "/body/bcm")
        .unwrap();
    assert!(bcm.result.starts_with("failed ("), "{bcm:?}");
    assert!(bcm.result.ends_with("runs 2.0.0"), "{bcm:?}");

    assert_eq!(s.final_ecus.len(), 3);
    for e in &s.final_ecus {
        assert_eq!(e.reported_version.as_str(), "2.0.0");
        assert_eq!(e.slot_version.as_str(), "2.0.0");
        assert_eq!(e.slot_sha256, e.expected_sha256);
    }
    // The manifest changed after campaign 1 (new versions): uploaded twice,
    // each with a report of every Agent that the Server verified.
    assert_eq!(s.manifests_accepted, 2);
    assert_eq!(s.manifest_reports, 3);
    assert_eq!(s.agent_dropped, 0);
    assert_eq!(s.broker.connections_admitted, 3);
    assert_eq!(s.broker.dropped_bad_signature, 0);
    assert_eq!(s.broker.dropped_sender_mismatch, 0);
    // The device files and the Client's campaign journal are where the
    // test put them.
    assert!(work.path().join("agent-powertrain-ecm/device").is_dir());
    assert!(work.path().join("client/client.journal").exists());
}
