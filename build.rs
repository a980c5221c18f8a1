//! Compiles the gRPC contract in `proto/` into the shared crate, and emits the file
//! descriptor set that both servers register for server reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["proto/etcdop/v1/etcdop.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        // Serialize for `etcd-coordinator status -o json`, in the JSON names grpcurl prints.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .type_attribute(".", "#[serde(rename_all = \"camelCase\")]")
        .file_descriptor_set_path(out_dir.join("etcdop_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
