//! Bearer tokens and per-provider quotas: who may call the controller, and how much a provider
//! may hold.
//!
//! A token is `vnet-<id>-<secret>`: `id` (8 random bytes, hex) names it for revocation and
//! lookup; `secret` is 32 random bytes (hex). The controller keeps only the SHA-256 of the whole
//! token, with its provider, role, expiry and a revoked flag, and compares hashes in constant
//! time. The token itself is shown once, to the admin who created it.
//!
//! Bootstrap: admin tokens may also be given as SHA-256 hashes in a file the operator controls
//! (`--admin-token-hash-file`), so the first admin needs nothing in the store.
//!
//! State lives in `credentials.json` in the state directory (mode 0600), rewritten atomically
//! (temporary file, fsync, rename) on every change; with replicated controllers, in the shared
//! store instead (one value every replica reads again when it changes, only the leader writes),
//! so that a token issued through one replica is valid on all of them and after a failover.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const FILE: &str = "credentials.json";
const PREFIX: &str = "vnet-";

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The substrate, credentials, quotas, and every provider's VNs (through an explicit
    /// acting-as provider, which is logged).
    Admin,
    /// Its own VNs and the parents shared with it.
    Provider,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Provider => "provider",
        })
    }
}

/// Who a valid credential names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// A provider name, or an admin's name.
    pub name: String,
    pub role: Role,
    /// The token id (`bootstrap` for the operator's hash file).
    pub token_id: String,
}

/// A stored token: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub created_unix_ms: u64,
    /// `None`: never expires.
    pub expires_unix_ms: Option<u64>,
    pub revoked: bool,
}

/// Limits of one provider; `None`: no limit on that resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub vns: Option<u64>,
    /// Virtual nodes, whatever their demands (a node without demands still costs a namespace).
    pub nodes: Option<u64>,
    pub cpu: Option<u64>,
    pub memory_mb: Option<u64>,
    pub bandwidth_mbps: Option<u64>,
}

/// What a provider holds (of VNs that hold resources).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub vns: u64,
    pub nodes: u64,
    pub cpu: u64,
    pub memory_mb: u64,
    pub bandwidth_mbps: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.vns += o.vns;
        self.nodes += o.nodes;
        self.cpu += o.cpu;
        self.memory_mb += o.memory_mb;
        self.bandwidth_mbps += o.bandwidth_mbps;
    }
}

impl Quota {
    /// The first limit that `used + asked` would exceed, as a message naming the quota, the
    /// limit, the usage and the request.
    pub fn exceeded(&self, provider: &str, used: &Usage, asked: &Usage) -> Option<String> {
        let checks = [
            ("vns", self.vns, used.vns, asked.vns),
            ("nodes", self.nodes, used.nodes, asked.nodes),
            ("cpu", self.cpu, used.cpu, asked.cpu),
            (
                "memory (MiB)",
                self.memory_mb,
                used.memory_mb,
                asked.memory_mb,
            ),
            (
                "bandwidth (Mbit/s)",
                self.bandwidth_mbps,
                used.bandwidth_mbps,
                asked.bandwidth_mbps,
            ),
        ];
        checks.into_iter().find_map(|(what, limit, used, asked)| {
            let limit = limit?;
            (used.saturating_add(asked) > limit).then(|| {
                format!(
                    "quota of provider {provider} exceeded: {what} limit {limit}, in use {used}, \
                     this VN asks {asked}"
                )
            })
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    tokens: Vec<TokenRecord>,
    quotas: BTreeMap<String, Quota>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a SHA-256 in hex (64 hex digits)")]
    BadHash { path: PathBuf, line: usize },
    #[error("the credentials in the shared store: {0}")]
    Shared(String),
}

/// Why a token was refused. The messages say what to do, never which tokens exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token is not one this controller issued (malformed or unknown)")]
    Unknown,
    #[error("the token {0} was revoked")]
    Revoked(String),
    #[error("the token {0} expired")]
    Expired(String),
}

/// A value shared by the replicas of a controller: every replica reads it, only the leader
/// writes it (a fenced write, refused to a replica that no longer leads).
pub trait SharedValue: Send + Sync + std::fmt::Debug {
    fn read(&self) -> Result<Option<Vec<u8>>, String>;
    fn write(&self, body: &[u8]) -> Result<(), String>;
}

/// Where the credentials are persisted.
#[derive(Debug)]
enum Backing {
    File(PathBuf),
    Shared(Arc<dyn SharedValue>),
}

/// Tokens and quotas, persisted in the state directory or the replicas' shared store.
#[derive(Debug)]
pub struct Credentials {
    backing: Backing,
    /// SHA-256 of the operator's bootstrap admin tokens.
    bootstrap: Vec<[u8; 32]>,
    state: Mutex<State>,
}

/// SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Reads a file of SHA-256 hashes in hex, one a line (blank lines and `#` comments ignored).
pub fn read_hash_file(path: &Path) -> Result<Vec<[u8; 32]>, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(line, &mut h).map_err(|_| CredentialsError::BadHash {
            path: path.to_path_buf(),
            line: i + 1,
        })?;
        out.push(h);
    }
    Ok(out)
}

/// A fresh random token and its id.
pub fn new_token() -> (String, String) {
    let mut rng = rand::rng();
    let id: [u8; 8] = rng.random();
    let secret: [u8; 32] = rng.random();
    let id = hex::encode(id);
    (format!("{PREFIX}{id}-{}", hex::encode(secret)), id)
}

/// The id part of a well-formed token.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('-')?;
    let hexlen = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexlen(id, 16) && hexlen(secret, 64)).then_some(id)
}

impl Credentials {
    /// Opens (or starts empty) the credentials of the state directory `dir`.
    pub fn open(dir: &Path, bootstrap: Vec<[u8; 32]>) -> Result<Self, CredentialsError> {
        let path = dir.join(FILE);
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| CredentialsError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(CredentialsError::Read { path, source }),
        };
        Ok(Credentials {
            backing: Backing::File(path),
            bootstrap,
            state: Mutex::new(state),
        })
    }

    /// Opens the credentials kept in `value`, shared by the replicas.
    pub fn shared(
        value: Arc<dyn SharedValue>,
        bootstrap: Vec<[u8; 32]>,
    ) -> Result<Self, CredentialsError> {
        let c = Credentials {
            backing: Backing::Shared(value),
            bootstrap,
            state: Mutex::new(State::default()),
        };
        c.reload()?;
        Ok(c)
    }

    /// Reads the shared credentials again (a replica does on every change in the store);
    /// nothing to do for a file, which only this controller writes.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        let Backing::Shared(value) = &self.backing else {
            return Ok(());
        };
        let state = match value.read().map_err(CredentialsError::Shared)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| CredentialsError::Shared(format!("not valid: {e}")))?,
            None => State::default(),
        };
        *self.lock() = state;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &State) -> Result<(), CredentialsError> {
        let body = serde_json::to_vec_pretty(state).expect("credentials serialise");
        let path = match &self.backing {
            Backing::File(path) => path,
            Backing::Shared(value) => return value.write(&body).map_err(CredentialsError::Shared),
        };
        let err = |source| CredentialsError::Write {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut f = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(err)?;
        f.write_all(&body)
            .and_then(|()| f.as_file().sync_all())
            .map_err(err)?;
        f.persist(path).map(drop).map_err(|e| err(e.error))
    }

    /// Applies `f` to the state and persists it; on a write failure memory is left unchanged.
    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, CredentialsError> {
        let mut guard = self.lock();
        let mut next = State {
            tokens: guard.tokens.clone(),
            quotas: guard.quotas.clone(),
        };
        let r = f(&mut next);
        self.save(&next)?;
        *guard = next;
        Ok(r)
    }

    /// Issues a token for `name` with `role`, valid until `expires_unix_ms` (`None`: no expiry).
    /// Returns the token (shown once) and its stored record.
    pub fn issue(
        &self,
        name: &str,
        role: Role,
        now_ms: u64,
        expires_unix_ms: Option<u64>,
    ) -> Result<(String, TokenRecord), CredentialsError> {
        let (token, id) = new_token();
        let rec = TokenRecord {
            id,
            name: name.to_string(),
            role,
            sha256: hex::encode(token_hash(&token)),
            created_unix_ms: now_ms,
            expires_unix_ms,
            revoked: false,
        };
        let r = rec.clone();
        self.update(move |s| s.tokens.push(r))?;
        Ok((token, rec))
    }

    /// Revokes the token with id `id`, or every token of provider `name`. Returns the ids revoked
    /// now (already revoked ones are not counted).
    pub fn revoke(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<String>, CredentialsError> {
        self.update(|s| {
            let mut out = Vec::new();
            for t in &mut s.tokens {
                let hit = id.is_some_and(|i| t.id == i) || name.is_some_and(|n| t.name == n);
                if hit && !t.revoked {
                    t.revoked = true;
                    out.push(t.id.clone());
                }
            }
            out
        })
    }

    /// The tokens (records only), for listings.
    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.lock().tokens.clone()
    }

    /// Who `token` names, if it is valid at `now_ms`.
    pub fn authenticate(&self, token: &str, now_ms: u64) -> Result<Principal, Refused> {
        let hash = token_hash(token);
        // Bootstrap hashes: compared in constant time, every one of them.
        let mut boot = subtle::Choice::from(0);
        for b in &self.bootstrap {
            boot |= b.ct_eq(&hash);
        }
        if bool::from(boot) {
            return Ok(Principal {
                name: "admin".into(),
                role: Role::Admin,
                token_id: "bootstrap".into(),
            });
        }
        let id = token_id(token).ok_or(Refused::Unknown)?;
        let state = self.lock();
        let rec = state
            .tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(Refused::Unknown)?;
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(&rec.sha256, &mut stored).is_err()
            || !bool::from(stored.ct_eq(&hash))
        {
            return Err(Refused::Unknown);
        }
        if rec.revoked {
            return Err(Refused::Revoked(rec.id.clone()));
        }
        if rec.expires_unix_ms.is_some_and(|e| now_ms >= e) {
            return Err(Refused::Expired(rec.id.clone()));
        }
        Ok(Principal {
            name: rec.name.clone(),
            role: rec.role,
            token_id: rec.id.clone(),
        })
    }

    pub fn set_quota(&self, provider: &str, q: Quota) -> Result<(), CredentialsError> {
        self.update(|s| {
            s.quotas.insert(provider.to_string(), q);
        })
    }

    /// The quota of `provider` (no limits when none was set).
    pub fn quota(&self, provider: &str) -> Quota {
        self.lock()
            .quotas
            .get(provider)
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(dir: &Path) -> Credentials {
        Credentials::open(dir, vec![]).unwrap()
    }

    #[test]
    fn issued_tokens_authenticate_until_revoked_or_expired() {
        let d = tempfile::tempdir().unwrap();
        let c = creds(d.path());
        let (t, rec) = c.issue("red", Role::Provider, 1000, Some(5000)).unwrap();
        let p = c.authenticate(&t, 2000).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("red", Role::Provider));
        assert_eq!(
            c.authenticate(&t, 5000),
            Err(Refused::Expired(rec.id.clone()))
        );
        // Only the hash is stored.
        let file = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(!file.contains(t.rsplit('-').next().unwrap()));
        assert!(file.contains(&rec.sha256));
        // Survives a reopen; revocation by provider.
        let (t2, rec2) = c.issue("red", Role::Provider, 1000, None).unwrap();
        let c = creds(d.path());
        assert!(c.authenticate(&t2, 9999).is_ok());
        assert_eq!(
            c.revoke(None, Some("red")).unwrap(),
            vec![rec.id, rec2.id.clone()]
        );
        assert_eq!(c.authenticate(&t2, 9999), Err(Refused::Revoked(rec2.id)));
    }

    #[test]
    fn forged_tokens_are_unknown() {
        let d = tempfile::tempdir().unwrap();
        let c = creds(d.path());
        let (t, _) = c.issue("red", Role::Provider, 0, None).unwrap();
        // Same id, another secret.
        let mut forged = t.clone();
        let last = if forged.ends_with('0') { "1" } else { "0" };
        forged.replace_range(forged.len() - 1.., last);
        assert_eq!(c.authenticate(&forged, 1), Err(Refused::Unknown));
        assert_eq!(c.authenticate("red", 1), Err(Refused::Unknown));
        assert_eq!(c.authenticate("", 1), Err(Refused::Unknown));
    }

    #[test]
    fn bootstrap_hashes_name_an_admin() {
        let d = tempfile::tempdir().unwrap();
        let (t, _) = new_token();
        let f = d.path().join("admin.sha256");
        std::fs::write(&f, format!("# admin\n{}\n", hex::encode(token_hash(&t)))).unwrap();
        let c = Credentials::open(d.path(), read_hash_file(&f).unwrap()).unwrap();
        assert_eq!(c.authenticate(&t, 0).unwrap().role, Role::Admin);
        std::fs::write(&f, "xyz\n").unwrap();
        assert!(matches!(
            read_hash_file(&f),
            Err(CredentialsError::BadHash { line: 1, .. })
        ));
    }

    #[test]
    fn quotas_name_the_limit_and_the_usage() {
        let q = Quota {
            nodes: Some(4),
            ..Default::default()
        };
        let used = Usage {
            vns: 1,
            nodes: 3,
            ..Default::default()
        };
        let asked = Usage {
            vns: 1,
            nodes: 2,
            ..Default::default()
        };
        let m = q.exceeded("red", &used, &asked).unwrap();
        assert!(m.contains("nodes limit 4, in use 3, this VN asks 2"), "{m}");
        assert!(Quota::default().exceeded("red", &used, &asked).is_none());
    }
}
