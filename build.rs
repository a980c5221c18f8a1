//! Compiles the gRPC contract in `proto/` into the shared crate, and emits the file
//! descriptor set that both servers register for server reflection.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs nothing installed;
//! `PROTOC` in the environment overrides it.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["proto/etcdop/v1/etcdop.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match env::var_os("PROTOC").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // Serialize for `etcd-coordinator status -o json`, in the JSON names grpcurl prints.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .type_attribute(".", "#[serde(rename_all = \"camelCase\")]")
        // Enums by their names, as grpcurl prints them ("CLUSTER_PHASE_RUNNING"), not numbers.
        .field_attribute(
            ".etcdop.v1.ClusterStatus.phase",
            "#[serde(serialize_with = \"crate::proto::json::cluster_phase\")]",
        )
        .field_attribute(
            ".etcdop.v1.MemberStatus.phase",
            "#[serde(serialize_with = \"crate::proto::json::member_phase\")]",
        )
        .field_attribute(
            ".etcdop.v1.Condition.type",
            "#[serde(serialize_with = \"crate::proto::json::condition_type\")]",
        )
        .field_attribute(
            ".etcdop.v1.Condition.status",
            "#[serde(serialize_with = \"crate::proto::json::condition_status\")]",
        )
        .file_descriptor_set_path(out_dir.join("etcdop_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
