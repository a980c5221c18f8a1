//! Generated files are checked: the committed CRD must be what the Rust types generate.
//! Regenerate with `cargo run --bin etcd-coordinator -- crd > deploy/base/crd.yaml`.

#[test]
fn committed_crd_matches_the_types() {
    let generated = etcd_operator::resource::crd_yaml().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/crd.yaml"))
            .expect("deploy/base/crd.yaml exists");
    assert!(
        generated == committed,
        "deploy/base/crd.yaml is stale: run `cargo run --bin etcd-coordinator -- crd > deploy/base/crd.yaml`"
    );
}

#[test]
fn crd_validates_size_and_version() {
    let crd = etcd_operator::resource::crd_yaml().unwrap();
    assert!(crd.contains("minimum: 1"), "{crd}");
    assert!(crd.contains("maximum: 9"), "{crd}");
    assert!(crd.contains("pattern:"), "{crd}");
    assert!(
        crd.contains("scale:") && crd.contains("specReplicasPath: .spec.size"),
        "{crd}"
    );
}
