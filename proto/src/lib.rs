//! The gRPC contract of the vnet control plane.
//!
//! Four services share the package `vnet.v1`:
//! - [`v1::virtual_networks_server`]: service providers create, watch and delete virtual networks;
//! - [`v1::substrate_server`]: infrastructure operators read the substrate and its residuals;
//! - [`v1::agent_control_server`]: substrate agents dial in, receive their host's desired state
//!   and report what they observed;
//! - [`v1::admin_server`]: administrators issue and revoke credentials and set quotas.
//!
//! This crate knows no other member of the workspace.

pub mod codec;
pub mod replicas;

/// Generated messages, clients and servers of `vnet.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("vnet.v1");
}

/// Encoded `FileDescriptorSet` of every `vnet.v1` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vnet_descriptor.bin"));

/// Request metadata key of the caller's credential: `authorization: Bearer <token>`.
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";

/// Request metadata key with which an admin acts for a provider (`vnctl --as PROVIDER`). A
/// provider may name only itself. It never establishes an identity.
pub const ACT_AS_METADATA_KEY: &str = "x-vnet-as";

/// On an UNAVAILABLE answer of a follower replica: the leader's advertised address
/// (`host:port`), so clients and agents go there next.
pub const LEADER_METADATA_KEY: &str = "x-vnet-leader";

/// The URI SAN prefix of a host's certificate: `spiffe://vnet/host/<host id>`.
pub const HOST_URI_PREFIX: &str = "spiffe://vnet/host/";

/// Smallest memory (MiB) of a `vm` node: the project's guest image does not boot in 64 MiB
/// (measured). The controller refuses less at its edge; the agent checks it again.
pub const VM_MIN_MEMORY_MB: u64 = 96;

/// The QEMU machine type of a guest of `arch` whose NICs are `nic`: aarch64 guests run on `virt`;
/// x86_64 guests on `microvm` (virtio-mmio, the fastest boot), or `q35` when their NICs are e1000
/// (PCI). The agent's guest runtime starts guests so, and `describe` shows it.
pub fn guest_machine(arch: &str, nic: v1::NicModel) -> &'static str {
    match (arch, nic) {
        ("aarch64", _) => "virt",
        (_, v1::NicModel::E1000) => "q35",
        _ => "microvm",
    }
}

/// Reads the PEM file that the command-line option `--{option}` names, for the daemons' and
/// vnctl's TLS set-up. The error names the option and the path.
pub fn read_pem_option(path: Option<&std::path::Path>, option: &str) -> std::io::Result<Vec<u8>> {
    let path = path.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--{option} is required"),
        )
    })?;
    std::fs::read(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("reading --{option} {}: {e}", path.display()),
        )
    })
}
