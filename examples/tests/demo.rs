//! Runs the end-to-end demo with small images and checks its summary:
//! campaign 1 installs 2.0.0 everywhere (the ECM by delta, the BCM by full
//! image), campaign 2 is rolled back, and both ECUs end on 2.0.0 with the
//! Server's image bytes in their running slot.
#![allow(clippy::unwrap_used, reason = "test code")]

use esync_examples::client::{CampaignOutcome, Encoding};
use esync_examples::{run_demo, DemoOptions};

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
    assert_eq!(c1.components.len(), 2);
    for c in &c1.components {
        assert_eq!(c.result, "confirmed 2.0.0");
        assert!(c.bytes_sent > 0 && c.chunks > 0);
        match c.device.as_str() {
            // The ECM applies deltas: far fewer bytes than the image.
            "/powertrain/ecm" => {
                assert!(matches!(&c.encoding, Encoding::Delta { from, .. } if from == "1.0.0"));
                assert!(c.bytes_sent < c.image_len / 2, "{c:?}");
            }
            // The BCM advertises no patch format: full image.
            // The BCM advertises no patch format: full image. One chunk
            // was corrupted on the way, rejected by the Agent and resent.
            "/body/bcm" => {
                assert_eq!(c.encoding, Encoding::Full);
                assert_eq!(c.rejected_chunks, 1);
                assert_eq!(c.bytes_sent, c.image_len + 4096);
            }
            other => panic!("unexpected device {other}"),
        }
    }

    let c2 = &s.campaigns[1];
    match &c2.outcome {
        CampaignOutcome::RolledBack { reason } => {
            assert!(reason.contains("/body/bcm"), "{reason}");
            assert!(reason.contains("SelfTestFailed"), "{reason}");
        }
        other => panic!("campaign 2: {other:?}"),
    }
    let ecm = c2
        .components
        .iter()
        .find(|c| c.device.as_str() == "/powertrain/ecm")
        .unwrap();
    assert_eq!(ecm.result, "rolled back, runs 2.0.0");

    assert_eq!(s.final_ecus.len(), 2);
    for e in &s.final_ecus {
        assert_eq!(e.reported_version.as_str(), "2.0.0");
        assert_eq!(e.slot_version.as_str(), "2.0.0");
        assert_eq!(e.slot_sha256, e.expected_sha256);
    }
    assert_eq!(s.manifest_reports, 2);
    assert_eq!(s.agent_dropped, 0);
    assert_eq!(s.broker.connections_admitted, 2);
    assert_eq!(s.broker.dropped_bad_signature, 0);
    assert_eq!(s.broker.dropped_sender_mismatch, 0);
    // The device files are where the test put them.
    assert!(work.path().join("agent-powertrain-ecm/device").is_dir());
}
