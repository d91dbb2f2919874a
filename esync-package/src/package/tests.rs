use super::*;

fn dev(s: &str) -> DevicePath {
    DevicePath::new(s).unwrap()
}

fn comp(device: &str, stage: u16, deps: &[&str]) -> Component {
    let img = format!("image of {device}").into_bytes();
    Component {
        device: dev(device),
        hardware_id: HardwareId::new("hw-1").unwrap(),
        version: SoftwareVersion::new("2.0.0").unwrap(),
        release_counter: ReleaseCounter(5),
        image: Artifact::describe(&img, 1024).unwrap(),
        deltas: vec![Delta {
            format: PatchFormat::BsdiffZstd,
            from_version: SoftwareVersion::new("1.0.0").unwrap(),
            source_length: 3,
            source_sha256: sha256(b"old"),
            patch: Artifact::describe(b"patch", 1024).unwrap(),
        }],
        depends_on: deps.iter().map(|d| dev(d)).collect(),
        stage,
        policy: ComponentPolicy {
            precondition: Some(
                Precondition::parse(r#"speed == 0 && gear == "P" && battery_soc >= 40"#).unwrap(),
            ),
            ..ComponentPolicy::default()
        },
    }
}

fn spec(components: Vec<Component>) -> PackageSpec {
    PackageSpec {
        id: PackageId::new("pkg-1").unwrap(),
        download: DownloadPolicy {
            window: Some(TimeWindow {
                start_minute: 22 * 60,
                end_minute: 6 * 60,
            }),
            networks: vec![NetworkKind::Wifi],
        },
        components,
    }
}

#[test]
fn valid_package_roundtrips_through_json_and_targets() {
    let p = Package::new(spec(vec![
        comp("/powertrain/ecm", 0, &[]),
        comp("/powertrain/tcm", 1, &["/powertrain/ecm"]),
        comp("/body/bcm", 1, &[]),
    ]))
    .unwrap();
    let back = Package::from_json(&p.to_json()).unwrap();
    assert_eq!(back, p);
    let seq = p.install_sequence();
    assert_eq!(seq.len(), 2);
    assert_eq!(seq[1].1.len(), 2);

    let entries = p.target_entries();
    assert_eq!(
        entries.len(),
        6,
        "one full image and one delta per component"
    );
    assert_eq!(entries[0].name, "pkg-1/powertrain/ecm/2.0.0/full");
    assert_eq!(
        entries[1].name,
        "pkg-1/powertrain/ecm/2.0.0/delta-1.0.0.bsdiff-zstd"
    );
    let descs: Vec<_> = entries
        .iter()
        .map(|e| {
            TargetDescription::from_custom_json(&e.custom, Some((&e.name, e.length, &e.sha256)))
                .unwrap()
        })
        .collect();
    assert_eq!(descs[1].delta().unwrap().from_version.as_str(), "1.0.0");
    let rebuilt = Package::from_target_descriptions(&descs).unwrap();
    assert_eq!(rebuilt.components().len(), 3);
    // A withheld component (partial bundle) is refused.
    let partial: Vec<_> = descs
        .iter()
        .filter(|d| d.component.device.as_str() != "/body/bcm")
        .cloned()
        .collect();
    assert!(Package::from_target_descriptions(&partial).is_err());
    // Entry length/hash must match the description.
    let e = &entries[0];
    assert!(TargetDescription::from_custom_json(
        &e.custom,
        Some((&e.name, e.length + 1, &e.sha256))
    )
    .is_err());
    assert!(
        TargetDescription::from_custom_json(&e.custom, Some(("other", e.length, &e.sha256)))
            .is_err()
    );
}

#[test]
fn invalid_packages_are_refused() {
    let e = |cs| Package::new(spec(cs)).unwrap_err();
    assert!(matches!(e(vec![]), PackageError::Empty));
    assert!(matches!(
        e(vec![comp("/a", 0, &[]), comp("/a", 1, &[])]),
        PackageError::DuplicateDevice(_)
    ));
    assert!(matches!(
        e(vec![comp("/a", 1, &["/b"])]),
        PackageError::UnknownDependency { .. }
    ));
    assert!(matches!(
        e(vec![comp("/a", 0, &["/b"]), comp("/b", 1, &["/a"])]),
        PackageError::Cycle(_)
    ));
    assert!(matches!(
        e(vec![comp("/a", 0, &["/a"])]),
        PackageError::Cycle(_)
    ));
    assert!(matches!(
        e(vec![comp("/a", 1, &["/b"]), comp("/b", 1, &[])]),
        PackageError::StageOrder { .. }
    ));
    let mut c = comp("/a", 0, &[]);
    c.policy.rollback = RollbackBehaviour::None;
    assert!(matches!(
        e(vec![c, comp("/b", 1, &[])]),
        PackageError::UnrollableNotLast(_)
    ));
    let mut c = comp("/a", 0, &[]);
    c.deltas.push(c.deltas[0].clone());
    assert!(matches!(e(vec![c]), PackageError::BadDelta { .. }));
    let mut c = comp("/a", 0, &[]);
    c.image.chunk_size = 3;
    assert!(matches!(e(vec![c]), PackageError::Chunk(_)));
    let mut s = spec(vec![comp("/a", 0, &[])]);
    s.download.window = Some(TimeWindow {
        start_minute: 5,
        end_minute: 5,
    });
    assert!(Package::new(s).is_err());
}

#[test]
fn json_decoding_validates() {
    let p = Package::new(spec(vec![comp("/a", 0, &[]), comp("/b", 1, &["/a"])])).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
    v["components"][0]["depends_on"] = serde_json::json!(["/b"]);
    assert!(Package::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
    v["components"][0]["policy"]["precondition"] = serde_json::json!("speed ==");
    assert!(Package::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
    v["components"][0]["image"]["sha256"] = serde_json::json!("zz");
    assert!(Package::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    assert!(TimeWindow {
        start_minute: 22 * 60,
        end_minute: 360
    }
    .contains(23 * 60));
    assert!(!TimeWindow {
        start_minute: 22 * 60,
        end_minute: 360
    }
    .contains(12 * 60));
}
