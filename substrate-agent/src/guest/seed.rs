//! The NoCloud seed of a disk image's guest: `meta-data`, `user-data` and a version 2
//! `network-config` that carry the same hostname, NICs (matched by MAC and renamed), addresses,
//! MTUs and routes as the project's image gets on its kernel command line, for images that run
//! cloud-init; `user-data` also installs and starts the command channel's service (the same
//! script as the project's image serves). Images built by `deploy/guest/build-debian.sh` have no
//! cloud-init (python and its start-up would double a TCG boot): their `vnet-seed` unit reads
//! `vnet-net`, the kernel command line's words. Pure: the files as strings; [`super::disk`]
//! packs them into the `cidata` volume.

use std::collections::BTreeMap;

use serde::Serialize;

use super::GuestConfig;
use super::kernel_cmdline::{config_words, hostname_for};

/// The three files of a NoCloud seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoCloudSeed {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data`.
    pub user_data: String,
    /// `network-config`.
    pub network_config: String,
    /// `vnet-net`: the words of [`config_words`], one line.
    pub vnet_net: String,
}

impl NoCloudSeed {
    /// (file name, contents) of every file of the seed.
    pub fn files(&self) -> [(&'static str, &str); 4] {
        [
            ("meta-data", &self.meta_data),
            ("user-data", &self.user_data),
            ("network-config", &self.network_config),
            ("vnet-net", &self.vnet_net),
        ]
    }
}

/// The command channel's server, as the project's image runs it (busybox or coreutils `sh`,
/// `timeout`, `xxd`).
const CMD_SERVER: &str = include_str!("../../../deploy/guest/rootfs/etc/vnet/cmd-server");

const CMD_UNIT: &str = "[Unit]\nDescription=vnet command channel\n\n[Service]\n\
    ExecStart=/usr/local/sbin/vnet-cmd-server\nRestart=always\nRestartSec=1\n\n\
    [Install]\nWantedBy=multi-user.target\n";

#[derive(Serialize)]
struct UserData {
    hostname: String,
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<&'static str>>,
}

#[derive(Serialize)]
struct WriteFile {
    path: &'static str,
    permissions: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct NetworkConfig {
    version: u32,
    ethernets: BTreeMap<String, Ethernet>,
}

#[derive(Serialize)]
struct Ethernet {
    #[serde(rename = "match")]
    matching: Match,
    #[serde(rename = "set-name")]
    set_name: String,
    mtu: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct Match {
    macaddress: String,
}

#[derive(Serialize)]
struct Route {
    to: String,
    via: String,
}

/// The seed of `cfg`. A route goes to the first NIC with an address of its next hop's family and
/// prefix (or of its family when none contains the next hop).
pub fn nocloud_seed(cfg: &GuestConfig) -> NoCloudSeed {
    let hostname = hostname_for(&cfg.name, &cfg.node_id);
    let mut ethernets = BTreeMap::new();
    for n in &cfg.nics {
        ethernets.insert(
            n.ifname.clone(),
            Ethernet {
                matching: Match {
                    macaddress: n.mac.to_string(),
                },
                set_name: n.ifname.clone(),
                mtu: n.mtu,
                addresses: n.addresses.iter().map(|a| a.to_string()).collect(),
                routes: vec![],
            },
        );
    }
    for r in &cfg.routes {
        let on_link = cfg
            .nics
            .iter()
            .find(|n| n.addresses.iter().any(|a| a.contains(&r.via)))
            .or_else(|| {
                cfg.nics.iter().find(|n| {
                    n.addresses
                        .iter()
                        .any(|a| a.addr().is_ipv4() == r.via.is_ipv4())
                })
            });
        if let Some(n) = on_link
            && let Some(e) = ethernets.get_mut(&n.ifname)
        {
            e.routes.push(Route {
                to: r
                    .destination
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "default".into()),
                via: r.via.to_string(),
            });
        }
    }
    let network_config = serde_yaml_ng::to_string(&NetworkConfig {
        version: 2,
        ethernets,
    })
    .unwrap_or_default();
    let user_data = serde_yaml_ng::to_string(&UserData {
        hostname: hostname.clone(),
        write_files: vec![
            WriteFile {
                path: "/usr/local/sbin/vnet-cmd-server",
                permissions: "0755",
                content: CMD_SERVER,
            },
            WriteFile {
                path: "/etc/systemd/system/vnet-cmd.service",
                permissions: "0644",
                content: CMD_UNIT,
            },
        ],
        runcmd: vec![vec!["systemctl", "enable", "--now", "vnet-cmd.service"]],
    })
    .unwrap_or_default();
    NoCloudSeed {
        meta_data: format!(
            "instance-id: vnet-{}\nlocal-hostname: {hostname}\n",
            cfg.node_id
        ),
        user_data: format!("#cloud-config\n{user_data}"),
        network_config,
        vnet_net: config_words(cfg).join(" ") + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{Accel, GuestNic, GuestRoute, NicModel};

    #[test]
    fn network_config_matches_by_mac_and_carries_routes() {
        let cfg = GuestConfig {
            node_id: "n3".into(),
            name: "db".into(),
            netns: "x".into(),
            vcpus: 1,
            memory_mb: 512,
            image: "debian".into(),
            nic: NicModel::Virtio,
            accel: Accel::Auto,
            arch: Default::default(),
            nics: vec![GuestNic {
                ifname: "eth0".into(),
                mac: "52:56:00:00:00:09".parse().unwrap(),
                addresses: vec!["10.0.0.9/24".parse().unwrap()],
                mtu: 1450,
            }],
            routes: vec![GuestRoute {
                destination: None,
                via: "10.0.0.1".parse().unwrap(),
            }],
        };
        let s = nocloud_seed(&cfg);
        assert_eq!(s.meta_data, "instance-id: vnet-n3\nlocal-hostname: db\n");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&s.network_config).unwrap();
        let e = &v["ethernets"]["eth0"];
        assert_eq!(v["version"], 2);
        assert_eq!(e["match"]["macaddress"], "52:56:00:00:00:09");
        assert_eq!(e["set-name"], "eth0");
        assert_eq!(e["mtu"], 1450);
        assert_eq!(e["addresses"][0], "10.0.0.9/24");
        assert_eq!(e["routes"][0]["to"], "default");
        assert_eq!(e["routes"][0]["via"], "10.0.0.1");
        assert!(
            s.user_data.starts_with("#cloud-config\n"),
            "{}",
            s.user_data
        );
        let u: serde_yaml_ng::Value = serde_yaml_ng::from_str(&s.user_data).unwrap();
        assert_eq!(u["hostname"], "db");
        assert_eq!(u["write_files"][0]["content"].as_str(), Some(CMD_SERVER));
        assert_eq!(u["runcmd"][0][3], "vnet-cmd.service");
        assert_eq!(
            s.vnet_net,
            "vnet.hostname=db vnet.nic=eth0,52:56:00:00:00:09,1450,10.0.0.9/24 \
             vnet.route=default,10.0.0.1\n"
        );
    }
}
