//! A directed package is refused up front, from its target entries alone
//! (before any byte of it is downloaded or sent to an Agent), for a
//! dependency cycle, an unknown device and a malformed precondition.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod orchestrate_rig;

use esync_client::core::plan::{admit, Refusal, TargetEntryRef};
use esync_package::package::{Component, Package, PackageError, TargetEntry};
use esync_proto::id::DevicePath;
use orchestrate_rig::*;

fn entries_of(veh: &Vehicle, edit: impl Fn(&mut Vec<Component>)) -> Vec<TargetEntry> {
    let mut spec = veh.package_spec("refuse-pkg");
    let package = Package::new(spec.clone()).unwrap();
    let mut entries = package.target_entries();
    // Edit the components inside the (otherwise well-formed) descriptions,
    // as a faulty or hostile Director could list them.
    edit(&mut spec.components);
    for (e, c) in entries.iter_mut().zip(&spec.components) {
        e.custom["esync"]["component"] = serde_json::to_value(c).unwrap();
    }
    entries
}

fn admit_entries(veh: &Vehicle, entries: &[TargetEntry]) -> Result<Package, Refusal> {
    let refs: Vec<TargetEntryRef<'_>> = entries
        .iter()
        .map(|e| TargetEntryRef {
            name: &e.name,
            length: e.length,
            sha256: &e.sha256,
            custom: &e.custom,
        })
        .collect();
    admit(&refs, veh.client.as_ref().unwrap().inventory())
}

fn vehicle() -> Vehicle {
    let mut veh = Vehicle::new(&[0, 1, 2], &[10, 10, 10], 2_000);
    veh.inventory();
    veh
}

fn nothing_sent(veh: &Vehicle) {
    for n in &veh.nodes {
        assert_eq!(n.received, vec!["inventory-query"], "{}", n.device);
    }
    assert_eq!(veh.blob_bytes_read, 0);
}

#[test]
fn the_well_formed_package_is_admitted() {
    let veh = vehicle();
    let entries = entries_of(&veh, |_| {});
    let p = admit_entries(&veh, &entries).expect("admitted");
    assert_eq!(p.components().len(), 3);
}

#[test]
fn a_dependency_cycle_is_refused_up_front() {
    let veh = vehicle();
    let (a, b) = (device(1), device(2));
    let entries = entries_of(&veh, |cs| {
        cs[1].depends_on = vec![b.clone()];
        cs[2].depends_on = vec![a.clone()];
    });
    match admit_entries(&veh, &entries) {
        Err(Refusal::Package(PackageError::Cycle(_))) => {}
        other => panic!("not refused for the cycle: {other:?}"),
    }
    nothing_sent(&veh);
}

#[test]
fn an_unknown_device_is_refused_up_front() {
    let veh = vehicle();
    let ghost = DevicePath::new("/body/ghost").unwrap();
    // A well-signed package whose third component is for a device this
    // vehicle does not have.
    let mut spec = veh.package_spec("refuse-pkg");
    spec.components[2].device = ghost.clone();
    let entries = Package::new(spec).unwrap().target_entries();
    match admit_entries(&veh, &entries) {
        Err(Refusal::UnknownDevice(d)) => assert_eq!(d, ghost),
        other => panic!("not refused for the unknown device: {other:?}"),
    }
    nothing_sent(&veh);
}

#[test]
fn a_malformed_precondition_is_refused_up_front() {
    let veh = vehicle();
    let mut entries = entries_of(&veh, |_| {});
    entries[1].custom["esync"]["component"]["policy"]["precondition"] =
        serde_json::Value::String("Vehicle.Speed == ".into());
    match admit_entries(&veh, &entries) {
        Err(Refusal::Description { target, .. }) => assert_eq!(target, entries[1].name),
        other => panic!("not refused for the precondition: {other:?}"),
    }
    nothing_sent(&veh);
}

#[test]
fn a_component_withheld_from_the_entries_is_refused_up_front() {
    let veh = vehicle();
    let mut entries = entries_of(&veh, |_| {});
    entries.remove(2);
    match admit_entries(&veh, &entries) {
        Err(Refusal::Package(PackageError::BadTarget(_))) => {}
        other => panic!("not refused for the missing component: {other:?}"),
    }
    nothing_sent(&veh);
}
