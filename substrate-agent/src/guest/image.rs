//! Guest images on disk: `<images_dir>/<name>/image.json` names the files of the image.
//!
//! The project's own image (`deploy/guest/build-image.sh`, format `kernel`) is a kernel and an
//! initramfs booted directly, configured from the kernel command line. Cloud images (format
//! `disk`, configured by cloud-init from a NoCloud seed, see [`super::seed`]) are recognized but
//! not yet started by the runtime: it refuses them with a clear error.

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
}

/// A usable direct-boot image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Image name.
    pub name: String,
    /// Kernel path.
    pub kernel: PathBuf,
    /// Initramfs path.
    pub initrd: PathBuf,
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
    match m.format.as_str() {
        "kernel" => {}
        "disk" => {
            return Err(err(
                "cloud (disk) images are not supported by this agent yet; use a kernel image"
                    .into(),
            ));
        }
        other => return Err(err(format!("unknown image format {other:?}"))),
    }
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
    Ok(KernelImage {
        name: name.to_string(),
        kernel: file(m.kernel, "kernel")?,
        initrd: file(m.initrd, "initrd")?,
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
        assert!(
            load(d.path(), "default")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }
}
