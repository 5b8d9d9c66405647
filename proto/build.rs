//! Compiles `proto/vnet/v1/*.proto` with the pure-Rust `protox` (no system `protoc` needed) and
//! generates prost messages plus tonic clients and servers. The encoded descriptor set is written
//! next to the code so that servers can offer gRPC reflection.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "proto/vnet/v1/common.proto",
    "proto/vnet/v1/substrate.proto",
    "proto/vnet/v1/vn.proto",
    "proto/vnet/v1/agent.proto",
    "proto/vnet/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vnet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Malformed requests are the caller's fault: INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::VnetCodec")
        .compile_fds(fds)?;
    Ok(())
}
