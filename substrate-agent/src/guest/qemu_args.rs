//! QEMU's command line as data: one type per option, rendered to `Vec<String>`, and the pure
//! function [`guest_command`] that assembles a guest's whole command line. Spawning is in
//! [`super::process`].
//!
//! Machines: x86_64 virtio guests run on `-M microvm` (virtio-mmio devices, no PCI, no firmware
//! scan), e1000 guests on `-M q35` (PCI), with `qboot.rom` as firmware when QEMU ships it; aarch64
//! guests on `-M virt` (virtio-mmio transports and a PCIe bus). All boot the image's kernel
//! directly (`-kernel`, `-initrd`, `-append`); a disk image's overlay and NoCloud seed are
//! virtio-blk drives.

use std::path::{Path, PathBuf};

use super::{AccelUsed, GuestArch, GuestNic, NicModel};
use crate::mac::Mac;

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is doubled).
pub fn escape(v: &str) -> String {
    v.replace(',', ",,")
}

fn path_str(p: &Path) -> String {
    escape(&p.to_string_lossy())
}

/// One option (or group of options) of QEMU's command line.
pub trait QemuArg {
    /// The option as argv words.
    fn render(&self) -> Vec<String>;
}

/// `-machine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `microvm`: virtio-mmio only; fastest boot.
    Microvm,
    /// `q35`: PCI, needed for e1000.
    Q35,
    /// `virt`: aarch64's virtual board (virtio-mmio and PCIe, PL011 console).
    Virt,
}

impl Machine {
    /// The machine for an x86_64 guest with a NIC model.
    pub fn for_nic(nic: NicModel) -> Machine {
        match nic {
            NicModel::Virtio => Machine::Microvm,
            NicModel::E1000 => Machine::Q35,
        }
    }

    /// The machine for a guest of `arch` with a NIC model.
    pub fn for_guest(arch: GuestArch, nic: NicModel) -> Machine {
        match arch {
            GuestArch::X86_64 => Machine::for_nic(nic),
            GuestArch::Aarch64 => Machine::Virt,
        }
    }

    /// QEMU's name of the machine type (what `describe` shows).
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
            Machine::Virt => "virt",
        }
    }

    /// Whether virtio devices sit on virtio-mmio transports (else PCI).
    fn virtio_mmio(self) -> bool {
        matches!(self, Machine::Microvm | Machine::Virt)
    }

    /// The serial console device inside the guest.
    pub fn console(self) -> &'static str {
        match self {
            Machine::Virt => "ttyAMA0",
            Machine::Microvm | Machine::Q35 => "ttyS0",
        }
    }
}

impl QemuArg for Machine {
    fn render(&self) -> Vec<String> {
        let m = match self {
            // ISA serial for the console, RTC for wall-clock time.
            Machine::Microvm => "microvm,isa-serial=on,rtc=on",
            Machine::Q35 => "q35",
            Machine::Virt => "virt",
        };
        vec!["-machine".into(), m.into()]
    }
}

/// `-accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccelArg {
    /// KVM or TCG.
    pub accel: AccelUsed,
    /// TCG translation-block cache in MiB (QEMU's default is far larger than a small guest
    /// needs; 32 MiB keeps a guest's host memory near 180 MiB).
    pub tb_size_mb: u32,
}

impl QemuArg for AccelArg {
    fn render(&self) -> Vec<String> {
        let a = match self.accel {
            AccelUsed::Kvm => "kvm".to_string(),
            AccelUsed::Tcg => format!("tcg,tb-size={}", self.tb_size_mb),
        };
        vec!["-accel".into(), a]
    }
}

/// `-cpu`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu(pub String);

impl QemuArg for Cpu {
    fn render(&self) -> Vec<String> {
        vec!["-cpu".into(), self.0.clone()]
    }
}

/// `-smp` and `-m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
}

impl QemuArg for Resources {
    fn render(&self) -> Vec<String> {
        vec![
            "-smp".into(),
            self.vcpus.to_string(),
            "-m".into(),
            format!("{}M", self.memory_mb),
        ]
    }
}

/// `-bios`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bios(pub PathBuf);

impl QemuArg for Bios {
    fn render(&self) -> Vec<String> {
        vec!["-bios".into(), self.0.to_string_lossy().into_owned()]
    }
}

/// `-kernel`, `-initrd`, `-append`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectBoot {
    /// Kernel (an uncompressed ELF boots through PVH; a bzImage also works).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
}

impl QemuArg for DirectBoot {
    fn render(&self) -> Vec<String> {
        vec![
            "-kernel".into(),
            self.kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            self.initrd.to_string_lossy().into_owned(),
            "-append".into(),
            self.append.clone(),
        ]
    }
}

/// `-netdev tap`: QEMU opens the (persistent) TAP by name; no scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetdevTap {
    /// Netdev id.
    pub id: String,
    /// TAP device name (in QEMU's network namespace).
    pub ifname: String,
}

impl QemuArg for NetdevTap {
    fn render(&self) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!(
                "tap,id={},ifname={},script=no,downscript=no",
                escape(&self.id),
                escape(&self.ifname)
            ),
        ]
    }
}

/// The `-device` of one NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicDevice {
    /// virtio or e1000.
    pub model: NicModel,
    /// The machine decides the virtio transport (MMIO or PCI).
    pub machine: Machine,
    /// Netdev id.
    pub netdev: String,
    /// Guest MAC.
    pub mac: Mac,
}

impl QemuArg for NicDevice {
    fn render(&self) -> Vec<String> {
        let dev = match self.model {
            NicModel::Virtio if self.machine.virtio_mmio() => "virtio-net-device",
            NicModel::Virtio => "virtio-net-pci",
            // No PXE option ROM: the kernel is booted directly.
            NicModel::E1000 => "e1000",
        };
        let mut extra = String::new();
        if self.model == NicModel::E1000 || !self.machine.virtio_mmio() {
            extra.push_str(",romfile=");
        }
        if self.model == NicModel::E1000 {
            // Link up at once instead of after emulated autonegotiation (about 2 s of a TCG
            // boot, measured).
            extra.push_str(",autonegotiation=off");
        }
        vec![
            "-device".into(),
            format!(
                "{dev},netdev={},mac={}{extra}",
                escape(&self.netdev),
                self.mac
            ),
        ]
    }
}

/// `-chardev socket` on a unix socket, QEMU listening, not waiting for a client; optionally
/// logging everything that passes to a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketChardev {
    /// Chardev id.
    pub id: String,
    /// Socket path.
    pub path: PathBuf,
    /// Log file of the stream.
    pub logfile: Option<PathBuf>,
}

impl QemuArg for SocketChardev {
    fn render(&self) -> Vec<String> {
        let mut s = format!(
            "socket,id={},path={},server=on,wait=off",
            escape(&self.id),
            path_str(&self.path)
        );
        if let Some(l) = &self.logfile {
            s.push_str(&format!(",logfile={},logappend=on", path_str(l)));
        }
        vec!["-chardev".into(), s]
    }
}

/// The serial console on a chardev (`-serial chardev:ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serial {
    /// Chardev id.
    pub chardev: String,
}

impl QemuArg for Serial {
    fn render(&self) -> Vec<String> {
        vec!["-serial".into(), format!("chardev:{}", self.chardev)]
    }
}

/// A virtio-serial controller and one named port on a chardev (the command channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioSerialPort {
    /// The machine decides the transport.
    pub machine: Machine,
    /// Chardev id.
    pub chardev: String,
    /// Port name the guest finds under `/sys/class/virtio-ports/*/name`.
    pub name: String,
}

impl QemuArg for VirtioSerialPort {
    fn render(&self) -> Vec<String> {
        let ctrl = if self.machine.virtio_mmio() {
            "virtio-serial-device"
        } else {
            "virtio-serial-pci"
        };
        vec![
            "-device".into(),
            ctrl.into(),
            "-device".into(),
            format!(
                "virtserialport,chardev={},name={}",
                escape(&self.chardev),
                escape(&self.name)
            ),
        ]
    }
}

/// A disk on virtio-blk: `-drive if=none` and its `-device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    /// Drive id.
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// `qcow2` or `raw`.
    pub format: String,
    /// The guest cannot write it.
    pub read_only: bool,
    /// The machine decides the transport.
    pub machine: Machine,
}

impl QemuArg for Drive {
    fn render(&self) -> Vec<String> {
        let dev = if self.machine.virtio_mmio() {
            "virtio-blk-device"
        } else {
            "virtio-blk-pci"
        };
        let ro = if self.read_only { ",readonly=on" } else { "" };
        vec![
            "-drive".into(),
            format!(
                "if=none,id={},file={},format={}{ro}",
                escape(&self.id),
                path_str(&self.path),
                escape(&self.format)
            ),
            "-device".into(),
            format!("{dev},drive={}", escape(&self.id)),
        ]
    }
}

/// The QMP monitor on a unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qmp {
    /// Socket path.
    pub path: PathBuf,
}

impl QemuArg for Qmp {
    fn render(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!(
                "socket,id=qmp,path={},server=on,wait=off",
                path_str(&self.path)
            ),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
        ]
    }
}

/// Process-level options: name, no defaults, no display, no reboot (a guest reboot or panic ends
/// QEMU so that `ensure` restarts it), pidfile. QEMU is not asked to `-daemonize`: its double fork
/// would leave an unreapable zombie with a child subreaper; [`super::process`] detaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// `-name`.
    pub name: String,
    /// `-pidfile`.
    pub pidfile: PathBuf,
}

impl QemuArg for Process {
    fn render(&self) -> Vec<String> {
        vec![
            "-name".into(),
            escape(&self.name),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-pidfile".into(),
            self.pidfile.to_string_lossy().into_owned(),
        ]
    }
}

/// The whole command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuCommand {
    /// QEMU binary.
    pub binary: String,
    /// Options in order.
    pub args: Vec<String>,
}

impl QemuCommand {
    /// Renders `parts` in order.
    pub fn new(binary: &str, parts: &[&dyn QemuArg]) -> QemuCommand {
        QemuCommand {
            binary: binary.to_string(),
            args: parts.iter().flat_map(|p| p.render()).collect(),
        }
    }
}

/// Files of one guest's run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl RunPaths {
    /// The run directory of `node_id` under `state_dir`.
    pub fn new(state_dir: &Path, node_id: &str) -> RunPaths {
        RunPaths {
            dir: state_dir.join(node_id),
        }
    }
    /// QEMU's pidfile.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// QMP socket.
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// Command channel socket.
    pub fn cmd(&self) -> PathBuf {
        self.dir.join("cmd.sock")
    }
    /// Console socket (attach with `socat - UNIX-CONNECT:...`).
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    /// Console log.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// QEMU's own stdout and stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// The runtime's record of the guest.
    pub fn record(&self) -> PathBuf {
        self.dir.join("guest.json")
    }
    /// A disk image's overlay on the base of digest `digest` (a rebuilt base gets a new one).
    pub fn overlay(&self, digest: &str) -> PathBuf {
        let tag: String = digest
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        self.dir.join(format!("disk-{tag}.qcow2"))
    }
    /// The NoCloud seed volume (iso9660, label `cidata`).
    pub fn seed_iso(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }
}

/// Inputs of [`guest_command`] besides the guest configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInputs<'a> {
    /// QEMU binary.
    pub qemu_binary: &'a str,
    /// Acceleration decided by the probe.
    pub accel: AccelUsed,
    /// TCG translation cache size.
    pub tb_size_mb: u32,
    /// Kernel and initrd of the image.
    pub kernel: &'a Path,
    /// Initramfs of the image.
    pub initrd: &'a Path,
    /// The machine (see [`Machine::for_guest`]).
    pub machine: Machine,
    /// `-cpu` under TCG (under KVM: `host`); `None`: QEMU's default.
    pub tcg_cpu: Option<&'a str>,
    /// Disks in order (a disk image's overlay, then its seed).
    pub drives: Vec<Drive>,
    /// Kernel command line (see [`super::kernel_cmdline`]).
    pub append: String,
    /// `qboot.rom` for q35, when shipped.
    pub qboot: Option<&'a Path>,
    /// Run directory.
    pub paths: &'a RunPaths,
}

/// Name of the virtio-serial port of the command channel.
pub const COMMAND_PORT: &str = "vnet.cmd";

/// The QEMU process name of a guest (`-name`), also used to recognize it in `/proc`.
pub fn process_name(node_id: &str) -> String {
    format!("vnet-{node_id}")
}

/// A guest's whole command line. Pure: the same inputs give the same argv (the runtime compares
/// argv to decide between adopting and replacing a running guest).
pub fn guest_command(
    node_id: &str,
    vcpus: u32,
    memory_mb: u64,
    nic: NicModel,
    nics: &[(GuestNic, String)],
    li: &LaunchInputs<'_>,
) -> QemuCommand {
    let machine = li.machine;
    let mut parts: Vec<Box<dyn QemuArg>> = vec![
        Box::new(Process {
            name: process_name(node_id),
            pidfile: li.paths.pidfile(),
        }),
        Box::new(machine),
        Box::new(AccelArg {
            accel: li.accel,
            tb_size_mb: li.tb_size_mb,
        }),
    ];
    if li.accel == AccelUsed::Kvm {
        parts.push(Box::new(Cpu("host".into())));
    } else if let Some(cpu) = li.tcg_cpu {
        parts.push(Box::new(Cpu(cpu.into())));
    }
    if machine == Machine::Q35
        && let Some(q) = li.qboot
    {
        parts.push(Box::new(Bios(q.to_path_buf())));
    }
    parts.push(Box::new(Resources { vcpus, memory_mb }));
    parts.push(Box::new(DirectBoot {
        kernel: li.kernel.to_path_buf(),
        initrd: li.initrd.to_path_buf(),
        append: li.append.clone(),
    }));
    for d in &li.drives {
        parts.push(Box::new(d.clone()));
    }
    for (i, (n, tap)) in nics.iter().enumerate() {
        let id = format!("n{i}");
        parts.push(Box::new(NetdevTap {
            id: id.clone(),
            ifname: tap.clone(),
        }));
        parts.push(Box::new(NicDevice {
            model: nic,
            machine,
            netdev: id,
            mac: n.mac,
        }));
    }
    parts.push(Box::new(SocketChardev {
        id: "cmd".into(),
        path: li.paths.cmd(),
        logfile: None,
    }));
    parts.push(Box::new(VirtioSerialPort {
        machine,
        chardev: "cmd".into(),
        name: COMMAND_PORT.into(),
    }));
    parts.push(Box::new(SocketChardev {
        id: "con".into(),
        path: li.paths.console_sock(),
        logfile: Some(li.paths.console_log()),
    }));
    parts.push(Box::new(Serial {
        chardev: "con".into(),
    }));
    parts.push(Box::new(Qmp {
        path: li.paths.qmp(),
    }));
    let refs: Vec<&dyn QemuArg> = parts.iter().map(|b| b.as_ref()).collect();
    QemuCommand::new(li.qemu_binary, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str) -> (GuestNic, String) {
        (
            GuestNic {
                ifname: name.into(),
                mac: mac.parse().unwrap(),
                addresses: vec![],
                mtu: 1500,
            },
            format!("t-{name}"),
        )
    }

    #[test]
    fn options_render_as_qemu_expects() {
        assert_eq!(
            AccelArg {
                accel: AccelUsed::Tcg,
                tb_size_mb: 32
            }
            .render(),
            ["-accel", "tcg,tb-size=32"]
        );
        assert_eq!(
            AccelArg {
                accel: AccelUsed::Kvm,
                tb_size_mb: 32
            }
            .render(),
            ["-accel", "kvm"]
        );
        assert_eq!(
            NetdevTap {
                id: "n0".into(),
                ifname: "t-eth0".into()
            }
            .render(),
            ["-netdev", "tap,id=n0,ifname=t-eth0,script=no,downscript=no"]
        );
        let mac: Mac = "52:56:00:00:00:01".parse().unwrap();
        assert_eq!(
            NicDevice {
                model: NicModel::Virtio,
                machine: Machine::Microvm,
                netdev: "n0".into(),
                mac
            }
            .render(),
            [
                "-device",
                "virtio-net-device,netdev=n0,mac=52:56:00:00:00:01"
            ]
        );
        assert_eq!(
            NicDevice {
                model: NicModel::Virtio,
                machine: Machine::Q35,
                netdev: "n0".into(),
                mac
            }
            .render(),
            [
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:56:00:00:00:01,romfile="
            ]
        );
        assert_eq!(
            NicDevice {
                model: NicModel::E1000,
                machine: Machine::Q35,
                netdev: "n1".into(),
                mac
            }
            .render(),
            [
                "-device",
                "e1000,netdev=n1,mac=52:56:00:00:00:01,romfile=,autonegotiation=off"
            ]
        );
        assert_eq!(
            SocketChardev {
                id: "con".into(),
                path: "/run/a,b/c.sock".into(),
                logfile: Some("/run/x/console.log".into())
            }
            .render(),
            [
                "-chardev",
                "socket,id=con,path=/run/a,,b/c.sock,server=on,wait=off,logfile=/run/x/console.log,logappend=on"
            ]
        );
        assert_eq!(
            VirtioSerialPort {
                machine: Machine::Q35,
                chardev: "cmd".into(),
                name: "vnet.cmd".into()
            }
            .render(),
            [
                "-device",
                "virtio-serial-pci",
                "-device",
                "virtserialport,chardev=cmd,name=vnet.cmd"
            ]
        );
        assert_eq!(
            Resources {
                vcpus: 2,
                memory_mb: 128
            }
            .render(),
            ["-smp", "2", "-m", "128M"]
        );
    }

    fn inputs<'a>(paths: &'a RunPaths, accel: AccelUsed, machine: Machine) -> LaunchInputs<'a> {
        LaunchInputs {
            qemu_binary: "qemu-system-x86_64",
            accel,
            tb_size_mb: 32,
            kernel: Path::new("/img/vmlinux"),
            initrd: Path::new("/img/initrd.img"),
            machine,
            tcg_cpu: None,
            drives: vec![],
            append: "console=ttyS0".into(),
            qboot: Some(Path::new("/usr/share/qemu/qboot.rom")),
            paths,
        }
    }

    #[test]
    fn virtio_guest_runs_on_microvm_with_one_nic_per_tap() {
        let paths = RunPaths::new(Path::new("/run/vnet/guests"), "n1");
        let c = guest_command(
            "n1",
            1,
            128,
            NicModel::Virtio,
            &[
                nic("eth0", "52:56:00:00:00:01"),
                nic("eth1", "52:56:00:00:00:02"),
            ],
            &inputs(&paths, AccelUsed::Tcg, Machine::Microvm),
        );
        let s = c.args.join(" ");
        assert!(s.starts_with("-name vnet-n1 -nodefaults -no-user-config -display none -no-reboot -pidfile /run/vnet/guests/n1/qemu.pid -machine microvm,"), "{s}");
        assert!(s.contains("-accel tcg,tb-size=32 -smp 1 -m 128M -kernel /img/vmlinux -initrd /img/initrd.img -append console=ttyS0"), "{s}");
        assert!(s.contains("-netdev tap,id=n0,ifname=t-eth0,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=52:56:00:00:00:01"), "{s}");
        assert!(s.contains("-netdev tap,id=n1,ifname=t-eth1,script=no,downscript=no -device virtio-net-device,netdev=n1,mac=52:56:00:00:00:02"), "{s}");
        assert!(
            s.contains(
                "-device virtio-serial-device -device virtserialport,chardev=cmd,name=vnet.cmd"
            ),
            "{s}"
        );
        assert!(s.contains("-serial chardev:con"), "{s}");
        assert!(s.ends_with("-chardev socket,id=qmp,path=/run/vnet/guests/n1/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control"), "{s}");
        assert!(!s.contains("-bios") && !s.contains("-cpu"), "{s}");
        // The -append value is one argv word even with spaces.
        let i = c.args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(c.args[i + 1], "console=ttyS0");
    }

    #[test]
    fn e1000_guest_runs_on_q35_with_qboot_and_kvm_uses_host_cpu() {
        let paths = RunPaths::new(Path::new("/run/vnet/guests"), "n2");
        let c = guest_command(
            "n2",
            2,
            256,
            NicModel::E1000,
            &[nic("eth0", "52:56:00:00:00:03")],
            &inputs(&paths, AccelUsed::Kvm, Machine::Q35),
        );
        let s = c.args.join(" ");
        assert!(
            s.contains(
                "-machine q35 -accel kvm -cpu host -bios /usr/share/qemu/qboot.rom -smp 2 -m 256M"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "-device e1000,netdev=n0,mac=52:56:00:00:00:03,romfile=,autonegotiation=off"
            ),
            "{s}"
        );
        assert!(s.contains("-device virtio-serial-pci"), "{s}");
    }

    #[test]
    fn aarch64_disk_guest_runs_on_virt_with_overlay_and_seed_drives() {
        let paths = RunPaths::new(Path::new("/run/vnet/guests"), "n3");
        let mut li = inputs(
            &paths,
            AccelUsed::Tcg,
            Machine::for_guest(GuestArch::Aarch64, NicModel::Virtio),
        );
        li.qemu_binary = "qemu-system-aarch64";
        li.tcg_cpu = Some("cortex-a57");
        li.drives = vec![
            Drive {
                id: "root".into(),
                path: paths.overlay("sha256:0123456789abcdef"),
                format: "qcow2".into(),
                read_only: false,
                machine: li.machine,
            },
            Drive {
                id: "seed".into(),
                path: paths.seed_iso(),
                format: "raw".into(),
                read_only: true,
                machine: li.machine,
            },
        ];
        let c = guest_command(
            "n3",
            1,
            256,
            NicModel::Virtio,
            &[nic("eth0", "52:56:00:00:00:04")],
            &li,
        );
        assert_eq!(c.binary, "qemu-system-aarch64");
        let s = c.args.join(" ");
        assert!(
            s.contains("-machine virt -accel tcg,tb-size=32 -cpu cortex-a57 -smp 1"),
            "{s}"
        );
        assert!(s.contains("-drive if=none,id=root,file=/run/vnet/guests/n3/disk-0123456789ab.qcow2,format=qcow2 -device virtio-blk-device,drive=root"), "{s}");
        assert!(s.contains("-drive if=none,id=seed,file=/run/vnet/guests/n3/seed.iso,format=raw,readonly=on -device virtio-blk-device,drive=seed"), "{s}");
        assert!(
            s.contains("-device virtio-net-device,netdev=n0,mac=52:56:00:00:00:04 "),
            "{s}"
        );
        assert!(s.contains("-device virtio-serial-device "), "{s}");
        assert!(!s.contains("-bios"), "{s}");
        assert_eq!(
            (Machine::Virt.name(), Machine::Virt.console()),
            ("virt", "ttyAMA0")
        );
        let q35 = Drive {
            id: "d".into(),
            path: "/x".into(),
            format: "raw".into(),
            read_only: false,
            machine: Machine::Q35,
        };
        assert_eq!(q35.render()[3], "virtio-blk-pci,drive=d");
    }
}
