//! The per-guest disks of a disk image, in the guest's run directory:
//!
//! - a qcow2 **overlay** on the image's shared base (`qemu-img create -b`): the guest writes only
//!   its overlay, so ten guests of one image store one base and ten small overlays. The overlay
//!   is named after the base's digest: a rebuilt base gets fresh overlays, never a stale one on a
//!   new base. It survives guest restarts (the guest keeps its disk) and goes with the run
//!   directory when the guest is stopped.
//! - the **NoCloud seed** volume: an iso9660 image labelled `cidata` made by `genisoimage`, the
//!   tool behind cloud-image-utils' `cloud-localds` (read-only like the medium it stands for; the
//!   iso9660 driver is in every distribution kernel). Rewritten at every start, so that it carries
//!   the current configuration.

use std::path::Path;
use std::process::Command;

use super::GuestError;
use super::image::BaseDisk;
use super::seed::NoCloudSeed;

/// Tools this module runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskTools {
    /// `qemu-img` (Debian qemu-utils).
    pub qemu_img: String,
    /// `genisoimage` (Debian genisoimage).
    pub genisoimage: String,
}

impl Default for DiskTools {
    fn default() -> Self {
        DiskTools {
            qemu_img: "qemu-img".into(),
            genisoimage: "genisoimage".into(),
        }
    }
}

fn run(node_id: &str, what: &str, cmd: &mut Command) -> Result<(), GuestError> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| GuestError::Spawn {
        node_id: node_id.into(),
        reason: format!("{what}: cannot run {prog}: {e} (deploy/setup.sh installs it)"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(GuestError::Spawn {
        node_id: node_id.into(),
        reason: format!(
            "{what}: {prog} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Makes `overlay` a qcow2 overlay on `base` unless it exists. Other `disk-*.qcow2` files in the
/// directory (overlays on an older base) are removed.
pub fn ensure_overlay(
    node_id: &str,
    tools: &DiskTools,
    base: &BaseDisk,
    overlay: &Path,
) -> Result<(), GuestError> {
    if let Some(dir) = overlay.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("disk-") && name.ends_with(".qcow2") && e.path() != overlay {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if overlay.exists() {
        return Ok(());
    }
    let tmp = overlay.with_extension("qcow2.new");
    let _ = std::fs::remove_file(&tmp);
    run(
        node_id,
        "creating the disk overlay",
        Command::new(&tools.qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", &base.format, "-b"])
            .arg(&base.path)
            .arg(&tmp),
    )?;
    std::fs::rename(&tmp, overlay).map_err(|e| GuestError::Io {
        what: "cannot move the overlay into place".into(),
        path: overlay.to_path_buf(),
        source: e,
    })
}

/// Writes the seed's files to a scratch directory beside `iso` and packs them into `iso`
/// (iso9660 with Rock Ridge and Joliet, volume label `cidata`).
pub fn write_seed(
    node_id: &str,
    tools: &DiskTools,
    seed: &NoCloudSeed,
    iso: &Path,
) -> Result<(), GuestError> {
    let dir = iso.with_extension("d");
    let io = |what: &str, path: &Path| {
        let (what, path) = (what.to_string(), path.to_path_buf());
        move |e| GuestError::Io {
            what,
            path,
            source: e,
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(io("cannot create", &dir))?;
    for (name, text) in seed.files() {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io("cannot write", &p))?;
    }
    let tmp = iso.with_extension("iso.new");
    let r = run(
        node_id,
        "packing the NoCloud seed",
        Command::new(&tools.genisoimage)
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&tmp)
            .arg(&dir),
    );
    let _ = std::fs::remove_dir_all(&dir);
    r?;
    std::fs::rename(&tmp, iso).map_err(io("cannot move the seed into place", iso))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    #[test]
    fn overlay_on_a_base_and_a_seed_volume() {
        let tools = DiskTools::default();
        if !have(&tools.qemu_img) || !have(&tools.genisoimage) {
            assert!(
                std::env::var_os("VNET_REQUIRE_ROOT").is_none(),
                "qemu-img and genisoimage are needed (deploy/setup.sh)"
            );
            eprintln!("SKIP: qemu-img or genisoimage missing");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let base_path = d.path().join("base.raw");
        std::fs::write(&base_path, vec![0u8; 1 << 20]).unwrap();
        let base = BaseDisk {
            path: base_path.clone(),
            format: "raw".into(),
            root: "LABEL=x".into(),
            digest: "sha256:ab".into(),
        };
        std::fs::write(d.path().join("disk-old.qcow2"), b"stale").unwrap();
        let overlay = d.path().join("disk-ab.qcow2");
        ensure_overlay("n1", &tools, &base, &overlay).unwrap();
        assert!(!d.path().join("disk-old.qcow2").exists());
        let info = Command::new(&tools.qemu_img)
            .args(["info", "--output=json"])
            .arg(&overlay)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["format"], "qcow2");
        assert_eq!(v["backing-filename"], base_path.to_str().unwrap());
        assert_eq!(v["virtual-size"], 1 << 20);
        // A small file: the base's bytes are not copied.
        assert!(std::fs::metadata(&overlay).unwrap().len() < 512 * 1024);

        let seed = NoCloudSeed {
            meta_data: "instance-id: vnet-n1\n".into(),
            user_data: "#cloud-config\n".into(),
            network_config: "version: 2\n".into(),
            vnet_net: "vnet.hostname=a\n".into(),
        };
        let iso = d.path().join("seed.iso");
        write_seed("n1", &tools, &seed, &iso).unwrap();
        let bytes = std::fs::read(&iso).unwrap();
        // The primary volume descriptor at 32 KiB + 1 carries "CD001", its label at +40.
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(&bytes[0x8028..0x802e], b"cidata");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("vnet.hostname=a"),
            "the seed's files are in the volume"
        );
        assert!(!d.path().join("seed.d").exists());

        let bad = DiskTools {
            qemu_img: "/nonexistent/qemu-img".into(),
            ..tools
        };
        let e = ensure_overlay("n1", &bad, &base, &d.path().join("disk-cd.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot run /nonexistent/qemu-img"), "{e}");
    }
}
