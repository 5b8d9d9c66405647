//! Compiles the BPF 802.1Q datapath (`bpf/vlan.bpf.c`) with clang into `$OUT_DIR/vlan.bpf.o`,
//! which the agent embeds. Without clang the build fails: an agent that claims a BPF datapath
//! must carry one (`deploy/setup.sh` installs clang, llvm and libbpf-dev).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/vlan.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=VNET_CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("vlan.bpf.o");
    let clang = std::env::var("VNET_CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("target arch");
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("substrate-agent: no multiarch include directory known for {other}"),
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "substrate-agent: `{clang}` failed to compile {src} ({s}); is libbpf-dev installed? (deploy/setup.sh)"
        ),
        Err(e) => panic!(
            "substrate-agent: cannot run `{clang}` to compile the BPF datapath {src}: {e}. Install clang, llvm and libbpf-dev (deploy/setup.sh)"
        ),
    }
}
