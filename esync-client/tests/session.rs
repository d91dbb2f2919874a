//! The Client's Server-facing session against an in-process fake Server.

mod session_common;

use esync_client::core::session::download::TransferLimits;
use esync_client::core::session::policy::{Blocked, Conditions, Rules};
use esync_client::core::session::{
    Answer, ServerRequest, SessionConfig, SessionError, SessionStep,
};
use esync_package::package::{ComponentPolicy, NetworkKind};
use esync_proto::message::{ConsentResponse, Decision, ImageEncoding, PatchFormat};
use session_common::*;

fn start(
    s: &mut esync_client::core::session::Session<
        esync_uptane::MemoryStore,
        esync_uptane::MemoryStore,
    >,
    clock: &Clock,
    ecus: &[Ecu],
) -> SessionStep {
    s.check_in(
        clock.now(),
        manifest(),
        ecus.iter().map(inventory).collect(),
    )
    .expect("check-in starts")
}

#[test]
fn happy_path_verifies_everything_and_yields_a_ready_package() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 20_000, vec![]), ecu(2, 30_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    assert!(matches!(
        first,
        SessionStep::Need(ServerRequest::UploadManifest { .. })
    ));
    let step = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("session");
    let SessionStep::Ready(ready) = step else {
        panic!("not ready: {step:?}")
    };
    assert_eq!(ready.package.id().as_str(), "pkg-1");
    assert_eq!(ready.package.components().len(), 2);
    assert_eq!(ready.components.len(), 2);
    for (c, e) in ready.components.iter().zip(&ecus) {
        assert_eq!(c.device, e.device);
        assert_eq!(c.encoding, ImageEncoding::Full);
        assert_eq!(c.artifact.sha256, sha(&e.new_image));
        assert_eq!(
            c.target_name,
            "pkg-1/".to_string() + &e.device.as_str()[1..] + "/2.0.0/full"
        );
        // Chunk hashes computed while streaming, matching the signed list.
        let plan = esync_package::chunk::ChunkPlan::compute(&e.new_image, c.artifact.chunk_size)
            .expect("plan");
        assert_eq!(c.chunk_hashes.len() as u32, plan.count());
        assert_eq!(
            esync_package::chunk::chunk_list_digest(&c.chunk_hashes),
            c.artifact.chunk_list_sha256
        );
        // Director timestamp, snapshot and targets to forward; partial-
        // verification Agents get no Image metadata.
        assert!(
            c.metadata.director.len() >= 3,
            "{:?}",
            c.metadata.director.len()
        );
        assert!(c.metadata.image.is_empty());
    }
    // Every blob served once, in full.
    let total: u64 = ecus.iter().map(|e| e.new_image.len() as u64).sum();
    assert_eq!(srv.blob_bytes_served, total);
    assert_eq!(s.accepted_manifest(), Some(sha(&manifest())));
}

#[test]
fn metadata_is_verified_before_any_blob_and_a_bad_signature_fetches_nothing() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 5_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    // The Director targets altered after signing (a compromised mirror).
    srv.faults.tamper_director_targets = true;
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let err = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect_err("refused");
    assert!(matches!(err, SessionError::Uptane(_)), "{err}");
    assert!(srv.metadata_gets > 0);
    assert!(srv.blob_requests.is_empty(), "no blob before verification");
}

#[test]
fn unchanged_check_in_sends_only_the_manifest_hash() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 1_000, vec![])];
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let step = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("first check-in");
    assert_eq!(step, SessionStep::UpToDate);
    let m = manifest();
    assert_eq!(srv.manifest_uploads, vec![m.len()]);
    // Same manifest again: no upload, a small body.
    let second = start(&mut s, &clock, &ecus);
    let SessionStep::Need(ServerRequest::CheckIn { body }) = &second else {
        panic!("expected a bare check-in, got {second:?}")
    };
    assert!(body.len() <= 90, "check-in body is {} bytes", body.len());
    assert!(
        m.len() > 2 * body.len(),
        "manifest {} vs check-in {}",
        m.len(),
        body.len()
    );
    let step = drive(&mut s, &mut srv, &mut clock, second, &mut trace).expect("second");
    assert_eq!(step, SessionStep::UpToDate);
    assert_eq!(srv.manifest_uploads.len(), 1, "manifest not uploaded again");
    // A changed manifest (another ECU) is uploaded in full.
    let mut more = ecus;
    more.push(ecu(2, 1_000, vec![]));
    let mut changed = manifest();
    changed.extend_from_slice(b" ");
    let third = s
        .check_in(clock.now(), changed, more.iter().map(inventory).collect())
        .expect("third");
    assert!(matches!(
        third,
        SessionStep::Need(ServerRequest::UploadManifest { .. })
    ));
}

#[test]
fn delta_when_the_agent_can_apply_one_full_otherwise() {
    let mut srv = FakeServer::new();
    let with_delta = ecu(
        1,
        40_000,
        vec![PatchFormat::Bsdiff40, PatchFormat::BsdiffZstd],
    );
    let full_only = ecu(2, 40_000, vec![]);
    let wrong_format = ecu(3, 40_000, vec![PatchFormat::BsdiffXz]);
    let ecus = vec![with_delta, full_only, wrong_format];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let SessionStep::Ready(ready) =
        drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("ok")
    else {
        panic!("not ready")
    };
    let enc: Vec<_> = ready.components.iter().map(|c| &c.encoding).collect();
    assert!(
        matches!(
            enc[0],
            ImageEncoding::Delta {
                format: PatchFormat::BsdiffZstd,
                ..
            }
        ),
        "{:?}",
        enc[0]
    );
    assert_eq!(enc[1], &ImageEncoding::Full);
    assert_eq!(enc[2], &ImageEncoding::Full);
    assert!(ready.components[0].target_name.contains("delta-1.0.0"));
    assert!(ready.components[0].artifact.length < ecus[0].new_image.len() as u64);
    // A delta from another installed image is not usable: full.
    let mut moved = inventory(&ecus[0]);
    moved.installed.sha256 = sha(b"something else");
    let mut s2 = srv.session();
    let mut inv: Vec<_> = ecus.iter().map(inventory).collect();
    inv[0] = moved;
    let first = s2.check_in(clock.now(), manifest(), inv).expect("check-in");
    let SessionStep::Ready(r2) =
        drive(&mut s2, &mut srv, &mut clock, first, &mut trace).expect("ok")
    else {
        panic!("not ready")
    };
    assert_eq!(r2.components[0].encoding, ImageEncoding::Full);
}

#[test]
fn a13_a_withheld_component_refuses_the_package_before_any_download() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 5_000, vec![]), ecu(2, 5_000, vec![])];
    let withheld = ecus[1].device.clone();
    srv.publish(&ecus, &[&withheld], ComponentPolicy::default());
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let err = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect_err("refused");
    assert!(
        matches!(
            err,
            SessionError::ComponentWithheld {
                directed: 1,
                components: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(srv.blob_requests.is_empty(), "nothing downloaded");
}

#[test]
fn a12_slow_retrieval_is_abandoned_and_gives_up() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 50_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    // 10 bytes every 100 ms = 100 B/s, against a 1000 B/s minimum.
    srv.faults.trickle = Some((10, 100));
    let cfg = SessionConfig {
        transfer: TransferLimits {
            min_bytes_per_s: 1000,
            window_ms: 2_000,
            stall_ms: 5_000,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
        },
        ..SessionConfig::default()
    };
    let mut s = srv.session_with(cfg);
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let err = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect_err("gives up");
    let SessionError::GaveUp { attempts, last, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*attempts, 3);
    assert!(last.contains("slow retrieval"), "{last}");
    assert_eq!(srv.blob_requests.len(), 3);
    // Each attempt ended within one window: far fewer bytes than the blob.
    assert!(srv.blob_bytes_served < 3 * 250, "{}", srv.blob_bytes_served);
}

#[test]
fn a12_a_stalled_response_is_abandoned_at_the_stall_deadline() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 10_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    let limits = TransferLimits {
        min_bytes_per_s: 1,
        window_ms: 600_000,
        stall_ms: 5_000,
        max_attempts: 1,
        ..TransferLimits::default()
    };
    let mut s = srv.session_with(SessionConfig {
        transfer: limits,
        ..SessionConfig::default()
    });
    let mut clock = Clock::new();
    let mut step = start(&mut s, &clock, &ecus);
    // Drive to the first blob request; the server sends 100 bytes, then
    // nothing (the response stays open).
    loop {
        step = match step {
            SessionStep::Need(ServerRequest::Blob { .. }) => break,
            SessionStep::Need(n) => serve(&mut s, &mut srv, &mut clock, n).expect("serve"),
            other => panic!("{other:?}"),
        };
    }
    let blob = &srv.blobs[&sha(&ecus[0].new_image)];
    clock.mono_ms += 1_000;
    let step = s
        .provide(clock.now(), Answer::BlobBytes(&blob[..100]))
        .expect("bytes");
    assert_eq!(step, SessionStep::Continue);
    let SessionStep::WaitUntil(t) = s.poll(clock.now()).expect("poll") else {
        panic!("expected a deadline")
    };
    assert_eq!(
        t,
        clock.mono_ms + 5_000,
        "stall deadline from the last byte"
    );
    clock.mono_ms = t - 1;
    assert!(matches!(s.poll(clock.now()), Ok(SessionStep::WaitUntil(_))));
    clock.mono_ms = t;
    let err = s.poll(clock.now()).expect_err("stalled");
    assert!(err.to_string().contains("stalled"), "{err}");
}

#[test]
fn a14_endless_failures_give_up_after_n_with_growing_backoff() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 5_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    srv.faults.always_fail = true;
    let cfg = SessionConfig {
        transfer: TransferLimits {
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            ..TransferLimits::default()
        },
        ..SessionConfig::default()
    };
    let mut s = srv.session_with(cfg);
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let err = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect_err("gives up");
    assert!(
        matches!(err, SessionError::GaveUp { attempts: 6, .. }),
        "{err}"
    );
    assert_eq!(srv.blob_requests.len(), 6);
    assert_eq!(trace.waits, vec![500, 1000, 2000, 4000, 8000]);
}

#[test]
fn check_in_failures_back_off_and_give_up() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 1_000, vec![])];
    let cfg = SessionConfig {
        transfer: TransferLimits {
            max_attempts: 4,
            backoff_base_ms: 1_000,
            backoff_max_ms: 2_500,
            ..TransferLimits::default()
        },
        ..SessionConfig::default()
    };
    let mut s = srv.session_with(cfg);
    let clock = Clock::new();
    let mut step = start(&mut s, &clock, &ecus);
    let mut waits = vec![];
    let mut now = clock.now();
    let err = loop {
        match step {
            SessionStep::Need(ServerRequest::UploadManifest { .. }) => {
                match s.provide(now, Answer::Failed("offline")) {
                    Ok(next) => step = next,
                    Err(e) => break e,
                }
            }
            SessionStep::WaitUntil(t) => {
                waits.push(t - now.mono_ms);
                now.mono_ms = t;
                step = s.poll(now).expect("poll");
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(
        matches!(err, SessionError::GaveUp { attempts: 4, .. }),
        "{err}"
    );
    assert_eq!(waits, vec![1000, 2000, 2500]);
    let _ = &mut srv;
}

#[test]
fn a_dropped_connection_resumes_with_range_and_refetches_no_byte() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 64_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    srv.faults.drop_at = Some(23_456);
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let step = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("ok");
    assert!(matches!(step, SessionStep::Ready(_)), "{step:?}");
    let blob = sha(&ecus[0].new_image);
    assert_eq!(srv.blob_requests, vec![(blob, 0), (blob, 23_456)]);
    assert_eq!(srv.blob_bytes_served, 64_000, "no byte served twice");
}

#[test]
fn a_restart_rehashes_the_stored_prefix_and_fetches_only_the_rest() {
    use esync_client::core::session::download::{BlobDownload, BlobStep};
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let art = esync_package::package::Artifact::describe(&data, 4096).expect("describe");
    let mut d =
        BlobDownload::resume(&art, &data[..6_000], TransferLimits::default()).expect("resume");
    let BlobStep::Request {
        range_start,
        max_len,
    } = d.poll(0)
    else {
        panic!("request")
    };
    assert_eq!((range_start, max_len), (6_000, 4_000));
    assert_eq!(d.on_bytes(1, &data[6_000..]), Ok(4_000));
    assert_eq!(d.on_end(2), Ok(true));
    assert_eq!(d.chunk_hashes().len(), 3);
    // A corrupted stored prefix fails the hash and restarts from 0.
    let mut bad = data[..6_000].to_vec();
    bad[10] ^= 1;
    let mut d = BlobDownload::resume(&art, &bad, TransferLimits::default()).expect("resume");
    let _ = d.poll(0);
    d.on_bytes(1, &data[6_000..]).expect("bytes");
    assert!(d.on_end(2).is_err());
    assert_eq!(d.received(), 0);
}

#[test]
fn bytes_past_the_signed_length_are_refused_and_never_hashed() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 3_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    srv.faults.overlong = true;
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    // The 100 extra bytes end the attempt; the 3000 signed bytes were kept
    // and verify (the extra bytes were not hashed): no second request.
    let step = drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("ok");
    assert!(matches!(step, SessionStep::Ready(_)), "{step:?}");
    assert_eq!(srv.blob_requests.len(), 1);
    assert_eq!(
        trace.waits.len(),
        1,
        "the overlong attempt counted as a failure"
    );
}

#[test]
fn consent_is_asked_through_the_hmi_and_postpone_waits() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 5_000, vec![])];
    srv.publish(
        &ecus,
        &[],
        ComponentPolicy {
            consent_required: true,
            ..ComponentPolicy::default()
        },
    );
    let mut s = srv.session();
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let SessionStep::Need(ServerRequest::Consent(req)) =
        drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("consent")
    else {
        panic!("no consent request")
    };
    assert_eq!(req.size_bytes, 5_000);
    assert!(srv.blob_requests.is_empty());
    let until = clock.now().wall_ms + 60_000;
    let step = s
        .provide(
            clock.now(),
            Answer::Consent(&ConsentResponse {
                request_id: req.request_id,
                decision: Decision::Postpone { until_ms: until },
            }),
        )
        .expect("postponed");
    assert_eq!(
        step,
        SessionStep::Postponed {
            until_wall_ms: until
        }
    );
    assert_eq!(s.poll(clock.now()).expect("poll"), step);
    clock.mono_ms += 60_000;
    let SessionStep::Need(ServerRequest::Consent(again)) = s.poll(clock.now()).expect("asks again")
    else {
        panic!("not asked again")
    };
    assert_ne!(again.request_id, req.request_id);
    let step = s
        .provide(
            clock.now(),
            Answer::Consent(&ConsentResponse {
                request_id: again.request_id,
                decision: Decision::Consent,
            }),
        )
        .expect("granted");
    let step = drive(&mut s, &mut srv, &mut clock, step, &mut trace).expect("ok");
    assert!(matches!(step, SessionStep::Ready(_)));
}

#[test]
fn rules_block_on_network_and_a_stricter_domain_rule() {
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 5_000, vec![])];
    srv.publish(&ecus, &[], ComponentPolicy::default());
    let mut cfg = SessionConfig::default();
    cfg.policy.download = Rules {
        networks: vec![NetworkKind::Wifi],
        ..Rules::default()
    };
    cfg.policy.domains.insert(
        ecus[0].device.clone(),
        esync_client::core::session::policy::DomainRule {
            min_battery_percent: Some(60),
            ..Default::default()
        },
    );
    let mut s = srv.session_with(cfg);
    s.set_conditions(Conditions {
        network: Some(NetworkKind::Cellular),
        battery_percent: Some(40),
        signals: vec![],
    });
    let mut clock = Clock::new();
    let mut trace = Trace::default();
    let first = start(&mut s, &clock, &ecus);
    let SessionStep::Blocked(why) =
        drive(&mut s, &mut srv, &mut clock, first, &mut trace).expect("ok")
    else {
        panic!("not blocked")
    };
    assert!(why.contains(&Blocked::Network(Some(NetworkKind::Cellular))));
    assert!(why.iter().any(|b| matches!(
        b,
        Blocked::Battery {
            min: 60,
            device: Some(_),
            ..
        }
    )));
    assert!(srv.blob_requests.is_empty());
    s.set_conditions(Conditions {
        network: Some(NetworkKind::Wifi),
        battery_percent: Some(80),
        signals: vec![],
    });
    let step = s.poll(clock.now()).expect("poll");
    let step = drive(&mut s, &mut srv, &mut clock, step, &mut trace).expect("ok");
    assert!(matches!(step, SessionStep::Ready(_)), "{step:?}");
}

#[test]
fn a_stricter_domain_precondition_gates_install_for_that_component_only() {
    use esync_client::core::session::policy::{DomainRule, Policy, RuleVerdict};
    use esync_package::package::{Component, DownloadPolicy};
    use esync_proto::message::{ConsentKind, Signal, SignalValue};
    use esync_proto::precondition::Precondition;
    let mut srv = FakeServer::new();
    let ecus = vec![ecu(1, 1_000, vec![]), ecu(2, 1_000, vec![])];
    let pkg = srv.publish(
        &ecus,
        &[],
        ComponentPolicy {
            precondition: Some(Precondition::parse("speed == 0").expect("parse")),
            ..ComponentPolicy::default()
        },
    );
    let mut policy = Policy::default();
    policy.domains.insert(
        ecus[1].device.clone(),
        DomainRule {
            precondition: Some(Precondition::parse("gear == \"P\"").expect("parse")),
            consent_required: true,
            ..DomainRule::default()
        },
    );
    let comps: Vec<&Component> = pkg.components().iter().collect();
    let sig = |speed: i64, gear: &str| {
        vec![
            Signal {
                name: "speed".into(),
                value: SignalValue::Int(speed),
            },
            Signal {
                name: "gear".into(),
                value: SignalValue::Text(gear.into()),
            },
        ]
    };
    let cond = |signals| Conditions {
        network: Some(NetworkKind::Wifi),
        battery_percent: Some(90),
        signals,
    };
    let dl = DownloadPolicy::default();
    let wall = NOW_S as u64 * 1000;
    // Moving: the package precondition blocks both components.
    let RuleVerdict::Blocked(why) =
        policy.evaluate(ConsentKind::Install, &dl, &comps, &cond(sig(30, "D")), wall)
    else {
        panic!("not blocked")
    };
    assert_eq!(why.len(), 3, "{why:?}");
    // Stopped in D: only the stricter domain rule of /ecu2 blocks.
    let RuleVerdict::Blocked(why) =
        policy.evaluate(ConsentKind::Install, &dl, &comps, &cond(sig(0, "D")), wall)
    else {
        panic!("not blocked")
    };
    assert_eq!(
        why,
        vec![Blocked::Precondition {
            expr: "gear == \"P\"".into(),
            device: Some(ecus[1].device.clone()),
        }]
    );
    // Parked: allowed, with the consent the domain rule requires.
    assert_eq!(
        policy.evaluate(ConsentKind::Install, &dl, &comps, &cond(sig(0, "P")), wall),
        RuleVerdict::NeedsConsent
    );
    // Only /ecu1: no consent needed, and its download is not gated by the
    // install precondition.
    assert_eq!(
        policy.evaluate(
            ConsentKind::Install,
            &dl,
            &comps[..1],
            &cond(sig(0, "D")),
            wall
        ),
        RuleVerdict::Allowed
    );
    assert_eq!(
        policy.evaluate(
            ConsentKind::Download,
            &dl,
            &comps[..1],
            &cond(sig(30, "D")),
            wall
        ),
        RuleVerdict::Allowed
    );
}
