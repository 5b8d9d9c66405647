//! Which acceleration a guest gets: the host probe (facts gathered from `/proc`, `/sys` and
//! `/dev/kvm`) and the pure decisions over those facts.
//!
//! `auto` takes KVM only when every check proves it usable: the CPU exposes `vmx` or `svm`,
//! `/dev/kvm` opens and answers `KVM_GET_API_VERSION` with 12, a hardware KVM module
//! (`kvm_intel` or `kvm_amd`) is loaded or built in, and, when one was run, a short test boot with
//! `-accel kvm` reached the guest's init. Otherwise TCG, with the reason. On hosts where
//! `/dev/kvm` is served by something else (here: `kvm_pvm`, with no vmx/svm behind it) QEMU's
//! `-enable-kvm` hangs or asserts, so those hosts must not pass.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Accel, AccelUsed};

/// The stable KVM API version every usable kernel reports.
pub const KVM_API_VERSION: i32 = 12;

/// What the host says about hardware virtualization. Gathered by [`gather_kvm_facts`]; judged by
/// [`decide_kvm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmFacts {
    /// `vmx` (Intel VT-x) among the CPU flags.
    pub cpu_vmx: bool,
    /// `svm` (AMD-V) among the CPU flags.
    pub cpu_svm: bool,
    /// What opening `/dev/kvm` and asking its API version gave.
    pub dev_kvm: DevKvm,
    /// KVM-related kernel modules present under `/sys/module` (loaded or built in), sorted.
    pub kvm_modules: Vec<String>,
    /// Result of a test boot with `-accel kvm`, when one was run.
    pub test_boot: Option<Result<Duration, String>>,
}

/// State of `/dev/kvm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevKvm {
    /// No such file.
    Missing,
    /// Open failed (permissions, no backing module).
    OpenFailed(String),
    /// `KVM_GET_API_VERSION` failed.
    IoctlFailed(String),
    /// `KVM_GET_API_VERSION` answered.
    ApiVersion(i32),
}

/// The probe's judgement, for logs and `AgentHello.capabilities.kvm_usable/kvm_reason`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmVerdict {
    /// KVM is proven usable.
    pub usable: bool,
    /// Why (for people): every failed check, or what proved it.
    pub reason: String,
}

impl KvmVerdict {
    /// The verdict for guests of another architecture than the host's: KVM runs only the host's
    /// own instruction set, so they run under TCG.
    pub fn foreign(arch: super::GuestArch) -> KvmVerdict {
        KvmVerdict {
            usable: false,
            reason: format!(
                "{arch} is not this host's architecture ({}): binary translation only",
                std::env::consts::ARCH
            ),
        }
    }
}

/// Judges the facts. Pure.
pub fn decide_kvm(f: &KvmFacts) -> KvmVerdict {
    let mut problems = Vec::new();
    let vendor_module = if f.cpu_vmx {
        Some("kvm_intel")
    } else if f.cpu_svm {
        Some("kvm_amd")
    } else {
        problems.push(
            "the CPU has no vmx or svm flag (no hardware virtualization exposed)".to_string(),
        );
        None
    };
    match &f.dev_kvm {
        DevKvm::Missing => problems.push("/dev/kvm does not exist".into()),
        DevKvm::OpenFailed(e) => problems.push(format!("/dev/kvm cannot be opened: {e}")),
        DevKvm::IoctlFailed(e) => {
            problems.push(format!("KVM_GET_API_VERSION on /dev/kvm failed: {e}"))
        }
        DevKvm::ApiVersion(v) if *v != KVM_API_VERSION => problems.push(format!(
            "/dev/kvm reports API version {v}, not {KVM_API_VERSION}"
        )),
        DevKvm::ApiVersion(_) => {}
    }
    let has_hw_module = f
        .kvm_modules
        .iter()
        .any(|m| m == "kvm_intel" || m == "kvm_amd");
    if !has_hw_module {
        let others: Vec<&str> = f
            .kvm_modules
            .iter()
            .map(String::as_str)
            .filter(|m| *m != "kvm")
            .collect();
        let want = vendor_module.unwrap_or("kvm_intel or kvm_amd");
        if others.is_empty() {
            problems.push(format!("no {want} module is loaded"));
        } else {
            problems.push(format!(
                "no {want} module is loaded (only {}, which is not hardware-assisted KVM)",
                others.join(", ")
            ));
        }
    } else if let Some(want) = vendor_module
        && !f.kvm_modules.iter().any(|m| m == want)
    {
        problems.push(format!("the CPU needs {want}, which is not loaded"));
    }
    if problems.is_empty() {
        match &f.test_boot {
            Some(Err(e)) => problems.push(format!("a test boot with -accel kvm failed: {e}")),
            Some(Ok(d)) => {
                return KvmVerdict {
                    usable: true,
                    reason: format!(
                        "{} flag, /dev/kvm API {KVM_API_VERSION}, {} loaded, test boot reached init in {} ms",
                        if f.cpu_vmx { "vmx" } else { "svm" },
                        vendor_module.unwrap_or("kvm"),
                        d.as_millis()
                    ),
                };
            }
            None => {
                return KvmVerdict {
                    usable: true,
                    reason: format!(
                        "{} flag, /dev/kvm API {KVM_API_VERSION}, {} loaded (no test boot run)",
                        if f.cpu_vmx { "vmx" } else { "svm" },
                        vendor_module.unwrap_or("kvm")
                    ),
                };
            }
        }
    }
    KvmVerdict {
        usable: false,
        reason: problems.join("; "),
    }
}

/// The acceleration a guest gets. `Err` (with the reason) only when KVM was demanded and is
/// unusable. The `String` says why, for the log. Pure.
pub fn resolve_accel(requested: Accel, kvm: &KvmVerdict) -> Result<(AccelUsed, String), String> {
    match (requested, kvm.usable) {
        (Accel::Tcg, _) => Ok((AccelUsed::Tcg, "TCG requested".into())),
        (Accel::Kvm, true) => Ok((AccelUsed::Kvm, "KVM requested and usable".into())),
        (Accel::Kvm, false) => Err(kvm.reason.clone()),
        (Accel::Auto, true) => Ok((AccelUsed::Kvm, format!("auto: KVM usable ({})", kvm.reason))),
        (Accel::Auto, false) => Ok((
            AccelUsed::Tcg,
            format!("auto: KVM unusable, using TCG ({})", kvm.reason),
        )),
    }
}

/// Whether the flag list of `/proc/cpuinfo` names `flag`. Pure.
pub fn cpuinfo_has_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == flag))
}

/// The TSC frequency in kHz from `/proc/cpuinfo`, when the TSC is constant (`constant_tsc`) so
/// `cpu MHz` is its rate. Pure.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    if !cpuinfo_has_flag(cpuinfo, "constant_tsc") {
        return None;
    }
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// Reads the host: CPU flags, `/dev/kvm`, `/sys/module`. Never fails; unreadable sources count as
/// absent. No test boot (see `QemuRuntime::probe_kvm_with_test_boot`).
pub fn gather_kvm_facts() -> KvmFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm_modules = ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"]
        .iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .map(|m| m.to_string())
        .collect();
    KvmFacts {
        cpu_vmx: cpuinfo_has_flag(&cpuinfo, "vmx"),
        cpu_svm: cpuinfo_has_flag(&cpuinfo, "svm"),
        dev_kvm: dev_kvm_state(Path::new("/dev/kvm")),
        kvm_modules,
        test_boot: None,
    }
}

nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

fn dev_kvm_state(path: &Path) -> DevKvm {
    if !path.exists() {
        return DevKvm::Missing;
    }
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) => return DevKvm::OpenFailed(e.to_string()),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer; the fd is a
    // valid open file for the duration of the call.
    match unsafe { kvm_get_api_version(file.as_raw_fd()) } {
        Ok(v) => DevKvm::ApiVersion(v),
        Err(e) => DevKvm::IoctlFailed(e.to_string()),
    }
}

/// The QEMU binary found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuInfo {
    /// Path as given.
    pub path: String,
    /// First line of `--version`.
    pub version: String,
}

/// What this host can do for guests; feeds `AgentHello.capabilities` (`qemu_present`, `qemu`,
/// `kvm_usable`, `kvm_reason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGuestSupport {
    /// QEMU, when found.
    pub qemu: Option<QemuInfo>,
    /// The KVM verdict.
    pub kvm: KvmVerdict,
    /// Host TSC in kHz, passed to microvm guests as `tsc_early_khz` (without it about a third of
    /// TCG boots hang).
    pub tsc_khz: Option<u64>,
    /// Guest architectures whose QEMU system emulator runs here.
    pub archs: Vec<super::GuestArch>,
}

impl HostGuestSupport {
    /// `Capabilities.qemu`: "path (version)" or empty.
    pub fn qemu_string(&self) -> String {
        self.qemu
            .as_ref()
            .map(|q| format!("{} ({})", q.path, q.version))
            .unwrap_or_default()
    }
}

/// Runs `qemu --version`.
pub fn qemu_info(qemu_binary: &str) -> Option<QemuInfo> {
    let out = Command::new(qemu_binary).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    Some(QemuInfo {
        path: qemu_binary.to_string(),
        version,
    })
}

/// The QEMU binary of aarch64 guests beside the x86_64 one: `qemu-system-x86_64` with `x86_64`
/// replaced (same directory), else `qemu-system-aarch64` from `PATH`. Pure.
pub fn aarch64_binary_for(qemu_binary: &str) -> String {
    if qemu_binary.ends_with("qemu-system-x86_64") {
        qemu_binary.replace("qemu-system-x86_64", "qemu-system-aarch64")
    } else {
        "qemu-system-aarch64".into()
    }
}

/// The guest architectures whose binary (`(arch, binary)`) answers `--version`.
pub fn probe_archs(binaries: &[(super::GuestArch, &str)]) -> Vec<super::GuestArch> {
    binaries
        .iter()
        .filter(|(_, b)| qemu_info(b).is_some())
        .map(|(a, _)| *a)
        .collect()
}

/// The host probe without a test boot: QEMU, KVM verdict, TSC rate, the guest architectures
/// (x86_64 by `qemu_binary`, aarch64 by [`aarch64_binary_for`] it). Cheap (`--version` runs).
pub fn probe_host(qemu_binary: &str) -> HostGuestSupport {
    let facts = gather_kvm_facts();
    let tsc_khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| {
            tsc_khz_from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
        });
    let aarch64 = aarch64_binary_for(qemu_binary);
    HostGuestSupport {
        qemu: qemu_info(qemu_binary),
        kvm: decide_kvm(&facts),
        tsc_khz,
        archs: probe_archs(&[
            (super::GuestArch::X86_64, qemu_binary),
            (super::GuestArch::Aarch64, &aarch64),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel_host() -> KvmFacts {
        KvmFacts {
            cpu_vmx: true,
            cpu_svm: false,
            dev_kvm: DevKvm::ApiVersion(12),
            kvm_modules: vec!["kvm".into(), "kvm_intel".into()],
            test_boot: None,
        }
    }

    #[test]
    fn intel_host_with_vmx_is_usable() {
        let v = decide_kvm(&intel_host());
        assert!(v.usable, "{}", v.reason);
        assert!(
            v.reason.contains("vmx") && v.reason.contains("kvm_intel"),
            "{}",
            v.reason
        );
        assert_eq!(resolve_accel(Accel::Auto, &v).unwrap().0, AccelUsed::Kvm);
    }

    #[test]
    fn amd_host_with_svm_is_usable_and_test_boot_is_reported() {
        let f = KvmFacts {
            cpu_vmx: false,
            cpu_svm: true,
            dev_kvm: DevKvm::ApiVersion(12),
            kvm_modules: vec!["kvm".into(), "kvm_amd".into()],
            test_boot: Some(Ok(Duration::from_millis(420))),
        };
        let v = decide_kvm(&f);
        assert!(v.usable, "{}", v.reason);
        assert!(
            v.reason.contains("svm") && v.reason.contains("420 ms"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn failed_test_boot_makes_kvm_unusable() {
        let mut f = intel_host();
        f.test_boot = Some(Err("no init output within 20 s".into()));
        let v = decide_kvm(&f);
        assert!(!v.usable);
        assert!(v.reason.contains("test boot"), "{}", v.reason);
        assert_eq!(resolve_accel(Accel::Auto, &v).unwrap().0, AccelUsed::Tcg);
    }

    #[test]
    fn this_machine_kind_pvm_without_vmx_is_unusable_with_both_reasons() {
        let f = KvmFacts {
            cpu_vmx: false,
            cpu_svm: false,
            dev_kvm: DevKvm::ApiVersion(12),
            kvm_modules: vec!["kvm".into(), "kvm_pvm".into()],
            test_boot: None,
        };
        let v = decide_kvm(&f);
        assert!(!v.usable);
        assert!(v.reason.contains("no vmx or svm"), "{}", v.reason);
        assert!(v.reason.contains("only kvm_pvm"), "{}", v.reason);
        let (used, why) = resolve_accel(Accel::Auto, &v).unwrap();
        assert_eq!(used, AccelUsed::Tcg);
        assert!(why.contains("using TCG"), "{why}");
        assert_eq!(resolve_accel(Accel::Kvm, &v).unwrap_err(), v.reason);
        assert_eq!(resolve_accel(Accel::Tcg, &v).unwrap().0, AccelUsed::Tcg);
    }

    #[test]
    fn vmx_without_module_or_device_is_unusable() {
        let mut f = intel_host();
        f.kvm_modules = vec!["kvm".into()];
        f.dev_kvm = DevKvm::Missing;
        let v = decide_kvm(&f);
        assert!(!v.usable);
        assert!(v.reason.contains("no kvm_intel module"), "{}", v.reason);
        assert!(v.reason.contains("/dev/kvm does not exist"), "{}", v.reason);
        let mut g = intel_host();
        g.kvm_modules = vec!["kvm".into(), "kvm_amd".into()];
        assert!(decide_kvm(&g).reason.contains("needs kvm_intel"));
        let mut h = intel_host();
        h.dev_kvm = DevKvm::ApiVersion(11);
        assert!(!decide_kvm(&h).usable);
    }

    #[test]
    fn cpuinfo_parsing() {
        let ci = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc svm\ncpu MHz\t\t: 2600.000\n";
        assert!(cpuinfo_has_flag(ci, "svm"));
        assert!(!cpuinfo_has_flag(ci, "vmx"));
        assert!(!cpuinfo_has_flag(ci, "ts"));
        assert_eq!(tsc_khz_from_cpuinfo(ci), Some(2_600_000));
        assert_eq!(
            tsc_khz_from_cpuinfo("flags : fpu\ncpu MHz : 2600.0\n"),
            None
        );
    }
}
