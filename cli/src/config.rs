//! vnctl's config file, in the style of kubeconfig: named contexts (controller URL, CA,
//! token) and the current one. `--config FILE` or `VNET_CONFIG`, else `~/.vnet/config`.
//!
//! ```yaml
//! current-context: testbed
//! contexts:
//!   - name: testbed
//!     controller: https://127.0.0.1:7000
//!     certificate-authority: /var/lib/vnet/testbed/pki/ca.crt   # or certificate-authority-data
//!     token: vnet-...
//! ```
//!
//! The file holds a secret: it is written with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "VNET_CONFIG";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    pub name: String,
    /// `https://host:port` (or `http://` for a controller run with `--insecure`).
    pub controller: String,
    /// Path of the CA (PEM) that signed the controller's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// The same CA inline (PEM), for a file that travels alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// The bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Context {
    /// The CA in PEM, from the file or inline.
    pub fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(d) = &self.certificate_authority_data {
            return Ok(Some(d.as_bytes().to_vec()));
        }
        match &self.certificate_authority {
            Some(p) => Ok(Some(std::fs::read(p).with_context(|| {
                format!(
                    "reading certificate-authority {} of context {}",
                    p.display(),
                    self.name
                )
            })?)),
            None => Ok(None),
        }
    }
}

/// The config file vnctl uses: `--config`, `VNET_CONFIG`, else `~/.vnet/config`.
pub fn default_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vnet/config"))
}

impl Config {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("config file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
        }
    }

    /// Writes `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let body = serde_yaml_ng::to_string(self)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let f = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir.unwrap_or(Path::new(".")))
            .and_then(|mut f| f.write_all(body.as_bytes()).map(|()| f))
            .and_then(|f| f.as_file().sync_all().map(|()| f))
            .with_context(|| format!("writing {}", path.display()))?;
        f.persist(path)
            .map(drop)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Adds or replaces the context of that name and makes it the current one.
    pub fn upsert_current(&mut self, ctx: Context) {
        self.current_context = Some(ctx.name.clone());
        match self.contexts.iter_mut().find(|c| c.name == ctx.name) {
            Some(c) => *c = ctx,
            None => self.contexts.push(ctx),
        }
    }

    /// The current context (`None`: the file names none).
    pub fn current(&self) -> anyhow::Result<Option<&Context>> {
        let Some(name) = &self.current_context else {
            return Ok(None);
        };
        self.contexts
            .iter()
            .find(|c| &c.name == name)
            .map(Some)
            .with_context(|| format!("current-context {name} is not among the contexts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_upsert() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/config");
        assert_eq!(Config::load(&p).unwrap(), Config::default());
        let mut c = Config::default();
        c.upsert_current(Context {
            name: "a".into(),
            controller: "https://x:1".into(),
            token: Some("t".into()),
            ..Default::default()
        });
        c.upsert_current(Context {
            name: "a".into(),
            controller: "https://y:1".into(),
            ..Default::default()
        });
        c.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = Config::load(&p).unwrap();
        assert_eq!(back.contexts.len(), 1);
        assert_eq!(back.current().unwrap().unwrap().controller, "https://y:1");
        std::fs::write(&p, "current-context: b\ncontexts: []\n").unwrap();
        assert!(Config::load(&p).unwrap().current().is_err());
        std::fs::write(&p, "bogus: 1\n").unwrap();
        assert!(Config::load(&p).is_err());
    }
}
