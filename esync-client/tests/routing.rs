//! Routing through the embedded broker over mutual TLS: exact device path,
//! segment-wise device prefix, group and listener recipients.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::time::Duration;

use common::*;
use esync_proto::envelope::Recipient;
use esync_proto::id::ListenerName;
use esync_proto::message::{InventoryQuery, Participant, Payload, UserNotice};
use esync_transport::Transport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_prefix_group_and_listener() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    let paths = [
        "/powertrain/ecm",
        "/powertrain/tcm",
        "/powertrainx",
        "/body/bcm",
    ];
    let mut links: Vec<Transport> = paths
        .iter()
        .map(|p| Transport::boxed(pki.link(&broker, Participant::Device(dev(p)), &pki.agent(p))))
        .collect();
    let hmi = Participant::Listener(ListenerName::new("hmi").unwrap());
    let mut hmi_link = Transport::boxed(pki.link(&broker, hmi.clone(), &pki.listener("hmi")));
    let mut all: Vec<Participant> = paths.iter().map(|p| Participant::Device(dev(p))).collect();
    all.push(hmi.clone());
    wait_all_connected(&mut client, &all).await;
    let updates = group("update-listeners");
    hmi_link.subscribe(vec![updates.clone()]).await.unwrap();
    links[3].subscribe(vec![updates.clone()]).await.unwrap();

    let s = pki.client_signer();
    let q = |n: u8| Payload::InventoryQuery(InventoryQuery { nonce: [n; 16] });
    // Exact path.
    let f = seal(&s, Recipient::Device(dev("/powertrain/tcm")), q(1));
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut links[1]).await, f);
    // Prefix /powertrain: ecm and tcm, not /powertrainx, not /body/bcm.
    let f = seal(&s, Recipient::DevicePrefix(dev("/powertrain")), q(2));
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut links[0]).await, f);
    assert_eq!(next_frame(&mut links[1]).await, f);
    // Listener.
    let notice = Payload::UserNotice(UserNotice {
        kind: esync_proto::message::NoticeKind::UpdateAvailable,
        update_id: Some(esync_proto::id::Id128([1; 16])),
        text: "update".into(),
    });
    let f = seal(
        &s,
        Recipient::Listener(ListenerName::new("hmi").unwrap()),
        notice,
    );
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut hmi_link).await, f);
    // Group: once the broker has both subscriptions, one message reaches
    // both members.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.groups(&hmi) != Some(vec![updates.clone()])
        || broker.groups(&Participant::Device(dev("/body/bcm"))) != Some(vec![updates.clone()])
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriptions not installed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let f = seal(&s, Recipient::Group(updates.clone()), q(3));
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut hmi_link).await, f);
    assert_eq!(next_frame(&mut links[3]).await, f);
    // Nothing else reached /powertrainx.
    assert_no_frame(&mut links[2], Duration::from_millis(200)).await;
    assert_eq!(broker.stats().dropped_no_route, 0);
}

#[tokio::test]
async fn a_queue_that_cannot_hold_one_frame_is_refused() {
    let pki = Pki::new();
    let mut cfg = pki.broker_config();
    cfg.queue_bytes = 1024;
    let err = esync_client::broker::Broker::start(cfg).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
