//! Guest images on disk: `<images_dir>/<name>/image.json` names the files of the image.
//!
//! The project's own image (`deploy/guest/build-image.sh`, format `kernel`) is a kernel and an
//! initramfs booted directly, configured from the kernel command line. A disk image (format
//! `disk`, e.g. `deploy/guest/build-debian.sh`) is a qcow2 or raw root disk that every guest uses
//! through a copy-on-write overlay of its own (see [`super::disk`]); it is configured from a
//! NoCloud seed ([`super::seed`]). Its kernel and initramfs boot directly too (the initramfs
//! mounts the disk named by the manifest's `root` and hands over to its init): firmware boot
//! through a boot loader is refused with a clear error.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::GuestError;

/// `image.json` as written by `deploy/guest/build-image.sh` (other fields are informational).
#[derive(Clone, Debug, Deserialize)]
pub struct ImageManifest {
    /// `kernel` (direct boot) or `disk` (cloud image).
    pub format: String,
    /// Kernel file, relative to the image directory.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initramfs file, relative to the image directory.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Debian kernel package the image was built from.
    #[serde(default)]
    pub kernel_package: Option<String>,
    /// Guest CPU architecture (default `x86_64`).
    #[serde(default)]
    pub arch: Option<String>,
    /// Content digest of the image's files (`sha256:...`), as its builder recorded it.
    #[serde(default)]
    pub digest: Option<String>,
    /// Disk images: the root disk, relative to the image directory.
    #[serde(default)]
    pub disk: Option<String>,
    /// Disk images: `qcow2` or `raw`.
    #[serde(default)]
    pub disk_format: Option<String>,
    /// Disk images: the root file system for the initramfs (`LABEL=...`, `UUID=...` or a device).
    #[serde(default)]
    pub root: Option<String>,
}

/// Guest architecture of an image whose manifest names none.
pub const DEFAULT_ARCH: &str = "x86_64";

/// Most images an agent reports (the controller refuses a longer list).
pub const MAX_IMAGES: usize = 256;

/// An image in the catalogue an agent reports: one that [`load`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    pub format: String,
    pub arch: String,
    /// Bytes of the regular files in the image's directory.
    pub size_bytes: u64,
    /// From the manifest; empty when it records none.
    pub digest: String,
}

/// The usable images under `images_dir`, by name: every directory whose manifest [`load`]
/// accepts. What cannot be read or used is logged and left out (a broken image must not hide
/// the others), and at most [`MAX_IMAGES`] are listed.
pub fn catalogue(images_dir: &Path) -> Vec<ImageInfo> {
    let entries = match std::fs::read_dir(images_dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %images_dir.display(), error = %e, "cannot list guest images");
            return Vec::new();
        }
    };
    let mut out: Vec<ImageInfo> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| match describe(images_dir, &name) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::info!(image = %name, error = %e, "guest image not offered");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.truncate(MAX_IMAGES);
    out
}

/// Whether `s` is a short word the controller accepts as an image's format or architecture.
fn word(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Image `name` as the catalogue lists it, if [`load`] accepts it and the controller would: a
/// name a node can give (letters, digits, `-`, `_`, at most 63), short words as format and
/// architecture, a short printable digest. Anything else would make the controller refuse the
/// whole hello.
fn describe(images_dir: &Path, name: &str) -> Result<ImageInfo, GuestError> {
    let err = |reason: &str| GuestError::Image {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let name_ok = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !name_ok {
        return Err(err(
            "a directory name a vm node cannot name (letters, digits, '-', '_', at most 63)",
        ));
    }
    load(images_dir, name)?;
    let dir = images_dir.join(name);
    let m: ImageManifest = std::fs::read_to_string(dir.join("image.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| GuestError::Image {
            name: name.to_string(),
            reason: "image.json changed while it was read".into(),
        })?;
    let size_bytes = std::fs::read_dir(&dir)
        .map(|files| {
            files
                .filter_map(|f| f.ok()?.metadata().ok())
                .filter(|md| md.is_file())
                .map(|md| md.len())
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    let info = ImageInfo {
        name: name.to_string(),
        format: m.format,
        arch: m.arch.unwrap_or_else(|| DEFAULT_ARCH.to_string()),
        size_bytes,
        digest: m.digest.unwrap_or_default(),
    };
    if !word(&info.arch) {
        return Err(err("arch must be a short word ([a-z0-9_-], 1 to 32)"));
    }
    if info.digest.len() > 128 || !info.digest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("digest must be up to 128 printable characters"));
    }
    Ok(info)
}

/// A usable direct-boot image, with its root disk for disk images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Image name.
    pub name: String,
    /// Guest architecture.
    pub arch: super::GuestArch,
    /// Kernel path.
    pub kernel: PathBuf,
    /// Initramfs path.
    pub initrd: PathBuf,
    /// The shared base disk of a disk image.
    pub disk: Option<BaseDisk>,
}

/// The base disk of a disk image: guests never write it (each gets an overlay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseDisk {
    /// Absolute path of the base.
    pub path: PathBuf,
    /// `qcow2` or `raw`.
    pub format: String,
    /// The root file system for the initramfs (`vnet.root=`).
    pub root: String,
    /// The manifest's digest (names the overlay, so that a rebuilt base gets fresh overlays).
    pub digest: String,
}

/// Loads and checks image `name` under `images_dir`.
pub fn load(images_dir: &Path, name: &str) -> Result<KernelImage, GuestError> {
    let dir = images_dir.join(name);
    let err = |reason: String| GuestError::Image {
        name: name.to_string(),
        reason,
    };
    let manifest_path = dir.join("image.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        err(format!(
            "cannot read {}: {e} (build the project's image with deploy/guest/build-image.sh)",
            manifest_path.display()
        ))
    })?;
    let m: ImageManifest = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "{} is not a valid manifest: {e}",
            manifest_path.display()
        ))
    })?;
    if !matches!(m.format.as_str(), "kernel" | "disk") {
        return Err(err(format!(
            "unknown image format {:?} (kernel or disk)",
            m.format
        )));
    }
    let arch_name = m.arch.clone().unwrap_or_else(|| DEFAULT_ARCH.to_string());
    let arch = super::GuestArch::parse(&arch_name).ok_or_else(|| {
        err(format!(
            "architecture {arch_name:?} is not x86_64 or aarch64"
        ))
    })?;
    let file = |f: Option<String>, what: &str| -> Result<PathBuf, GuestError> {
        let f = f.ok_or_else(|| err(format!("{} names no {what}", manifest_path.display())))?;
        if f.contains('/') {
            return Err(err(format!(
                "{what} {f:?} must be a file name in {}",
                dir.display()
            )));
        }
        let p = dir.join(&f);
        if !p.is_file() {
            return Err(err(format!("{what} {} is missing", p.display())));
        }
        Ok(p)
    };
    let disk = if m.format == "disk" {
        if m.kernel.is_none() {
            return Err(err(format!(
                "{} names no kernel: disk images boot their kernel directly with vnet's \
                 initramfs (firmware boot through a boot loader is not supported)",
                manifest_path.display()
            )));
        }
        let format = m.disk_format.clone().unwrap_or_else(|| "qcow2".into());
        if !matches!(format.as_str(), "qcow2" | "raw") {
            return Err(err(format!("disk format {format:?} is not qcow2 or raw")));
        }
        let root = m.root.clone().unwrap_or_else(|| "LABEL=vnet-root".into());
        if root.is_empty()
            || root.len() > 128
            || !root.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(err(format!(
                "root {root:?} is not a short word without commas"
            )));
        }
        Some(BaseDisk {
            path: file(m.disk.clone(), "disk")?,
            format,
            root,
            digest: m.digest.clone().unwrap_or_default(),
        })
    } else {
        None
    };
    Ok(KernelImage {
        name: name.to_string(),
        arch,
        kernel: file(m.kernel, "kernel")?,
        initrd: file(m.initrd, "initrd")?,
        disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_kernel_image_and_names_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(e.contains("build-image.sh"), "{e}");
        let img = d.path().join("default");
        std::fs::create_dir(&img).unwrap();
        std::fs::write(
            img.join("image.json"),
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img","extra":1}"#,
        )
        .unwrap();
        std::fs::write(img.join("vmlinux"), b"k").unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(e.contains("initrd") && e.contains("missing"), "{e}");
        std::fs::write(img.join("initrd.img"), b"i").unwrap();
        let k = load(d.path(), "default").unwrap();
        assert_eq!(k.kernel, img.join("vmlinux"));
        std::fs::write(img.join("image.json"), r#"{"format":"disk"}"#).unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(
            e.contains("names no kernel") && e.contains("not supported"),
            "{e}"
        );
        std::fs::write(
            img.join("image.json"),
            r#"{"format":"disk","kernel":"vmlinux","initrd":"initrd.img","disk":"d.qcow2"}"#,
        )
        .unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(e.contains("d.qcow2") && e.contains("missing"), "{e}");
        std::fs::write(img.join("d.qcow2"), b"q").unwrap();
        let k = load(d.path(), "default").unwrap();
        let disk = k.disk.unwrap();
        assert_eq!(
            (disk.path, disk.format.as_str(), disk.root.as_str()),
            (img.join("d.qcow2"), "qcow2", "LABEL=vnet-root")
        );
        std::fs::write(
            img.join("image.json"),
            r#"{"format":"disk","kernel":"vmlinux","initrd":"initrd.img","disk":"d.qcow2","disk_format":"vmdk"}"#,
        )
        .unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(e.contains("vmdk"), "{e}");
        std::fs::write(
            img.join("image.json"),
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img","arch":"riscv64"}"#,
        )
        .unwrap();
        let e = load(d.path(), "default").unwrap_err().to_string();
        assert!(e.contains("riscv64"), "{e}");
    }

    #[test]
    fn the_catalogue_lists_usable_images_only() {
        let d = tempfile::tempdir().unwrap();
        let image = |name: &str, manifest: &str| {
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("image.json"), manifest).unwrap();
            std::fs::write(dir.join("vmlinux"), b"kernel").unwrap();
            std::fs::write(dir.join("initrd.img"), b"init").unwrap();
        };
        image(
            "default",
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img","digest":"sha256:ab"}"#,
        );
        image(
            "arm",
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img","arch":"aarch64"}"#,
        );
        image("broken", "{not json");
        image(
            "debian.12",
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img"}"#,
        );
        image(
            "spaced",
            r#"{"format":"kernel","kernel":"vmlinux","initrd":"initrd.img","arch":"arm 64"}"#,
        );
        image("nokernel", r#"{"format":"kernel","initrd":"initrd.img"}"#);
        std::fs::write(d.path().join("stray-file"), b"x").unwrap();
        let c = catalogue(d.path());
        let names: Vec<&str> = c.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["arm", "default"]);
        assert_eq!(c[0].arch, "aarch64");
        assert_eq!(
            (c[1].arch.as_str(), c[1].digest.as_str()),
            ("x86_64", "sha256:ab")
        );
        let manifest_len = std::fs::metadata(d.path().join("default/image.json"))
            .unwrap()
            .len();
        assert_eq!(c[1].size_bytes, manifest_len + 10);
        assert!(catalogue(&d.path().join("absent")).is_empty());
    }
}
