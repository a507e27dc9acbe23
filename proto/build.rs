//! Compiles the `.proto` files in pure Rust: `protox` parses them into a
//! `FileDescriptorSet` (no `protoc` needed), `tonic-prost-build` generates the
//! messages, clients and servers, and the encoded set is kept for reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &["grpc/health/v1/health.proto", "callguard/v1/breakers.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("callguard_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
