//! The guest's configuration on its kernel command line, as the project's image reads it
//! (`deploy/guest/rootfs/etc/vnet/rc`):
//!
//! ```text
//! vnet.hostname=NAME
//! vnet.nic=IFNAME,MAC,MTU[,ADDR/PREFIX...]   one per NIC, matched by MAC, renamed IFNAME
//! vnet.route=DEST,VIA                         DEST in CIDR or "default"
//! ```
//!
//! A disk image's guest gets `vnet.root=ROOT` instead (its initramfs mounts that file system and
//! hands over to the disk's init); the same words reach it in its NoCloud seed's `vnet-net` file.

use super::qemu_args::Machine;
use super::{GuestConfig, GuestError};

/// Linux's `COMMAND_LINE_SIZE` on x86 (including the terminating NUL).
pub const MAX_CMDLINE: usize = 2048;

/// The hostname for a tenant's node name: lowercase `[a-z0-9-]`, at most 63 characters, no
/// leading or trailing `-`; `vn-<node_id>` when nothing is left. Pure.
pub fn hostname_for(name: &str, node_id: &str) -> String {
    let mut h = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            h.push(c);
        } else if !h.ends_with('-') && !h.is_empty() {
            h.push('-');
        }
    }
    let h: String = h.chars().take(63).collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        format!("vn-{node_id}")
    } else {
        h
    }
}

/// The guest's network words: `vnet.hostname`, one `vnet.nic` per NIC, one `vnet.route` per
/// route. Pure.
pub fn config_words(cfg: &GuestConfig) -> Vec<String> {
    let mut words = Vec::new();
    words.push(format!(
        "vnet.hostname={}",
        hostname_for(&cfg.name, &cfg.node_id)
    ));
    for n in &cfg.nics {
        let mut w = format!("vnet.nic={},{},{}", n.ifname, n.mac, n.mtu);
        for a in &n.addresses {
            w.push(',');
            w.push_str(&a.to_string());
        }
        words.push(w);
    }
    for r in &cfg.routes {
        let dst = r
            .destination
            .map(|d| d.to_string())
            .unwrap_or_else(|| "default".into());
        words.push(format!("vnet.route={dst},{}", r.via));
    }
    words
}

/// The kernel command line of a guest. `tsc_khz` is given to microvm guests as
/// `tsc_early_khz` (under TCG about a third of microvm boots hang without it). With `root` (a
/// disk image) the network words are left to the seed and `vnet.root=ROOT` is given. Pure.
pub fn guest_kernel_cmdline(
    cfg: &GuestConfig,
    machine: Machine,
    tsc_khz: Option<u64>,
    root: Option<&str>,
) -> Result<String, GuestError> {
    let mut words: Vec<String> = vec![
        format!("console={}", machine.console()),
        "panic=-1".into(),
        "quiet".into(),
    ];
    if machine == Machine::Microvm
        && let Some(khz) = tsc_khz
    {
        words.push(format!("tsc_early_khz={khz}"));
    }
    match root {
        // Kernel names of NICs stay eth*: the seed renames them by MAC, nothing else does.
        Some(r) => words.extend([format!("vnet.root={r}"), "net.ifnames=0".into()]),
        None => words.extend(config_words(cfg)),
    }
    let line = words.join(" ");
    if line.len() >= MAX_CMDLINE {
        return Err(GuestError::InvalidConfig(format!(
            "guest {}: {} NICs, their addresses and {} routes need a kernel command line of {} \
             bytes; the limit is {}",
            cfg.node_id,
            cfg.nics.len(),
            cfg.routes.len(),
            line.len(),
            MAX_CMDLINE - 1
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{Accel, GuestNic, GuestRoute, NicModel};
    use crate::mac::Mac;

    fn cfg() -> GuestConfig {
        GuestConfig {
            node_id: "n7".into(),
            name: "Web Server #1".into(),
            netns: "vn-h1-n7".into(),
            vcpus: 1,
            memory_mb: 128,
            image: "default".into(),
            nic: NicModel::Virtio,
            accel: Accel::Auto,
            arch: Default::default(),
            nics: vec![
                GuestNic {
                    ifname: "eth0".into(),
                    mac: "52:56:00:00:00:01".parse().unwrap(),
                    addresses: vec![
                        "10.0.0.2/24".parse().unwrap(),
                        "fd00::2/64".parse().unwrap(),
                    ],
                    mtu: 1450,
                },
                GuestNic {
                    ifname: "uplink".into(),
                    mac: Mac::derived("x"),
                    addresses: vec![],
                    mtu: 1500,
                },
            ],
            routes: vec![
                GuestRoute {
                    destination: None,
                    via: "10.0.0.1".parse().unwrap(),
                },
                GuestRoute {
                    destination: Some("192.168.0.0/16".parse().unwrap()),
                    via: "10.0.0.254".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn carries_nics_addresses_routes_and_hostname() {
        let c = cfg();
        let line = guest_kernel_cmdline(&c, Machine::Microvm, Some(2_600_000), None).unwrap();
        assert_eq!(
            line,
            format!(
                "console=ttyS0 panic=-1 quiet tsc_early_khz=2600000 vnet.hostname=web-server-1 \
                 vnet.nic=eth0,52:56:00:00:00:01,1450,10.0.0.2/24,fd00::2/64 vnet.nic=uplink,{},1500 \
                 vnet.route=default,10.0.0.1 vnet.route=192.168.0.0/16,10.0.0.254",
                c.nics[1].mac
            )
        );
        let q35 = guest_kernel_cmdline(&c, Machine::Q35, Some(2_600_000), None).unwrap();
        assert!(!q35.contains("tsc_early_khz"));
        let arm = guest_kernel_cmdline(&c, Machine::Virt, Some(2_600_000), None).unwrap();
        assert!(
            arm.starts_with("console=ttyAMA0 panic=-1 quiet vnet.hostname="),
            "{arm}"
        );
        let disk =
            guest_kernel_cmdline(&c, Machine::Microvm, None, Some("LABEL=vnet-root")).unwrap();
        assert_eq!(
            disk,
            "console=ttyS0 panic=-1 quiet vnet.root=LABEL=vnet-root net.ifnames=0"
        );
    }

    #[test]
    fn hostnames_are_dns_labels() {
        assert_eq!(hostname_for("--", "n1"), "vn-n1");
        assert_eq!(hostname_for("A_b", "n1"), "a-b");
        assert_eq!(hostname_for(&"x".repeat(80), "n1").len(), 63);
    }

    #[test]
    fn too_long_a_line_is_refused_with_the_count() {
        let mut c = cfg();
        c.nics[0].addresses = (0..200)
            .map(|i| format!("10.1.{}.{}/32", i / 250, i % 250).parse().unwrap())
            .collect();
        let e = guest_kernel_cmdline(&c, Machine::Microvm, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit is 2047"), "{e}");
    }
}
