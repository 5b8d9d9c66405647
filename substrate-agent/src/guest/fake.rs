//! A recording fake of [`GuestRuntime`] for tests of the agent's planner and executor: it keeps
//! the guests it was asked to run in memory, records every call, and fails on request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    AccelUsed, ConsoleChunk, ConsoleCursor, EnsureAction, ExecOutput, GuestConfig, GuestError,
    GuestRuntime, GuestStatus, ObservedGuest,
};

/// One call made to the fake, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestCall {
    /// `ensure(cfg)`.
    Ensure(GuestConfig),
    /// `stop(node_id)`.
    Stop(String),
    /// `observed()`.
    Observed,
    /// `exec(node_id, argv)`.
    Exec(String, Vec<String>),
    /// `wait_ready(node_id)`.
    WaitReady(String),
    /// `console_read(node_id, ..)` (also through `console`).
    Console(String),
    /// `console_write(node_id, data)`.
    ConsoleWrite(String, Vec<u8>),
}

#[derive(Default)]
struct State {
    calls: Vec<GuestCall>,
    running: BTreeMap<String, (GuestConfig, u32, u32)>,
    next_pid: u32,
    fail_ensure: HashMap<String, String>,
    exec_replies: HashMap<String, ExecOutput>,
    consoles: HashMap<String, Vec<u8>>,
    /// Per node: `wait_ready` calls still to answer "not booted yet".
    booting: HashMap<String, u32>,
    /// Nodes whose guest dies at the next `wait_ready`.
    dies_booting: HashMap<String, String>,
    /// What `images` answers (`None`: one kernel image `default`).
    images: Option<Vec<super::image::ImageInfo>>,
}

impl State {
    /// `Ok` when `node_id` runs (known and not crashed), else [`GuestError::NotFound`].
    fn live(&self, node_id: &str) -> Result<(), GuestError> {
        match self.running.get(node_id) {
            Some((_, pid, _)) if *pid != 0 => Ok(()),
            _ => Err(GuestError::NotFound(node_id.to_string())),
        }
    }
}

/// Recording fake: `ensure` "starts" a guest (a fake pid), `stop` forgets it, `observed` lists
/// what runs, `exec` answers with the output set by [`RecordingGuestRuntime::set_exec_reply`]
/// (default: exit 0, no output), the console log of a guest starts with `fake console of ID\n`
/// and echoes what is written to it (as a terminal would) after what [`RecordingGuestRuntime::print`]
/// added.
#[derive(Default)]
pub struct RecordingGuestRuntime {
    state: Mutex<State>,
}

impl RecordingGuestRuntime {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<GuestCall> {
        self.lock().calls.clone()
    }

    /// Node ids of the guests currently "running", sorted.
    pub fn running(&self) -> Vec<String> {
        self.lock().running.keys().cloned().collect()
    }

    /// The configuration a running guest was last ensured with.
    pub fn config_of(&self, node_id: &str) -> Option<GuestConfig> {
        self.lock().running.get(node_id).map(|(c, _, _)| c.clone())
    }

    /// Makes the next `ensure` of `node_id` fail with `GuestError::Spawn { reason }`.
    pub fn fail_next_ensure(&self, node_id: &str, reason: &str) {
        self.lock()
            .fail_ensure
            .insert(node_id.to_string(), reason.to_string());
    }

    /// Simulates a crash: the guest is no longer running but still observed (dead).
    pub fn crash(&self, node_id: &str) {
        if let Some(entry) = self.lock().running.get_mut(node_id) {
            entry.1 = 0;
        }
    }

    /// Makes the next `attempts` calls of `wait_ready` for `node_id` answer that the command
    /// channel is not up yet (a guest still booting).
    pub fn boot_slowly(&self, node_id: &str, attempts: u32) {
        self.lock().booting.insert(node_id.to_string(), attempts);
    }

    /// Makes the guest of `node_id` die at the next `wait_ready` (a kernel panic while booting),
    /// with `console` as the tail of its console log.
    pub fn die_while_booting(&self, node_id: &str, console: &str) {
        self.lock()
            .dies_booting
            .insert(node_id.to_string(), console.to_string());
    }

    /// Appends `data` to the console log of `node_id`, as if the guest printed it.
    pub fn print(&self, node_id: &str, data: &[u8]) {
        if let Some(log) = self.lock().consoles.get_mut(node_id) {
            log.extend_from_slice(data);
        }
    }

    /// The images the fake offers (by default one kernel image `default`).
    pub fn set_images(&self, images: Vec<super::image::ImageInfo>) {
        self.lock().images = Some(images);
    }

    /// What `exec` on `node_id` answers.
    pub fn set_exec_reply(&self, node_id: &str, out: ExecOutput) {
        self.lock().exec_replies.insert(node_id.to_string(), out);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GuestRuntime for RecordingGuestRuntime {
    fn images(&self) -> Vec<super::image::ImageInfo> {
        self.lock().images.clone().unwrap_or_else(|| {
            vec![super::image::ImageInfo {
                name: "default".into(),
                format: "kernel".into(),
                arch: super::image::DEFAULT_ARCH.into(),
                size_bytes: 0,
                digest: String::new(),
            }]
        })
    }

    fn ensure(&self, cfg: &GuestConfig) -> Result<GuestStatus, GuestError> {
        let mut s = self.lock();
        s.calls.push(GuestCall::Ensure(cfg.clone()));
        cfg.validate()?;
        if let Some(reason) = s.fail_ensure.remove(&cfg.node_id) {
            return Err(GuestError::Spawn {
                node_id: cfg.node_id.clone(),
                reason,
            });
        }
        s.next_pid += 1;
        let fresh_pid = 1000 + s.next_pid;
        let (action, pid, restarts) = match s.running.get(&cfg.node_id) {
            None => (EnsureAction::Started, fresh_pid, 0),
            Some((_, 0, r)) => (EnsureAction::Restarted, fresh_pid, r + 1),
            Some((old, pid, r)) if old == cfg => (EnsureAction::Adopted, *pid, *r),
            Some((_, _, r)) => (EnsureAction::Replaced, fresh_pid, *r),
        };
        s.running
            .insert(cfg.node_id.clone(), (cfg.clone(), pid, restarts));
        s.consoles
            .entry(cfg.node_id.clone())
            .or_insert_with(|| format!("fake console of {}\n", cfg.node_id).into_bytes());
        Ok(GuestStatus {
            node_id: cfg.node_id.clone(),
            pid,
            accel: AccelUsed::Tcg,
            action,
            restarts,
        })
    }

    fn stop(&self, node_id: &str) -> Result<(), GuestError> {
        let mut s = self.lock();
        s.calls.push(GuestCall::Stop(node_id.to_string()));
        s.running.remove(node_id);
        s.consoles.remove(node_id);
        Ok(())
    }

    fn observed(&self) -> Result<Vec<ObservedGuest>, GuestError> {
        let mut s = self.lock();
        s.calls.push(GuestCall::Observed);
        Ok(s.running
            .iter()
            .map(|(id, (cfg, pid, restarts))| ObservedGuest {
                node_id: id.clone(),
                pid: (*pid != 0).then_some(*pid),
                running: *pid != 0,
                netns: cfg.netns.clone(),
                taps: super::tap::tap_names(&cfg.nics)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect(),
                accel: Some(AccelUsed::Tcg),
                restarts: *restarts,
            })
            .collect())
    }

    fn exec(
        &self,
        node_id: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, GuestError> {
        let mut s = self.lock();
        s.calls
            .push(GuestCall::Exec(node_id.to_string(), argv.to_vec()));
        s.live(node_id)?;
        Ok(s.exec_replies.get(node_id).cloned().unwrap_or_default())
    }

    fn wait_ready(&self, node_id: &str, _timeout: Duration) -> Result<(), GuestError> {
        let mut s = self.lock();
        s.calls.push(GuestCall::WaitReady(node_id.to_string()));
        s.live(node_id)?;
        if let Some(tail) = s.dies_booting.remove(node_id) {
            if let Some(entry) = s.running.get_mut(node_id) {
                entry.1 = 0;
            }
            return Err(GuestError::Spawn {
                node_id: node_id.to_string(),
                reason: format!("QEMU is not running; console tail:\n{tail}"),
            });
        }
        match s.booting.get_mut(node_id) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Err(GuestError::Channel {
                    node_id: node_id.to_string(),
                    reason: "connection refused".into(),
                })
            }
            _ => Ok(()),
        }
    }

    fn console_read(
        &self,
        node_id: &str,
        from: Option<ConsoleCursor>,
        max_bytes: usize,
    ) -> Result<ConsoleChunk, GuestError> {
        let mut s = self.lock();
        s.calls.push(GuestCall::Console(node_id.to_string()));
        let log = s
            .consoles
            .get(node_id)
            .ok_or_else(|| GuestError::NotFound(node_id.to_string()))?;
        let len = log.len();
        let start = match from {
            None => len.saturating_sub(max_bytes),
            Some(c) => (c.offset as usize).min(len),
        };
        let end = len.min(start + max_bytes);
        Ok(ConsoleChunk {
            data: log[start..end].to_vec(),
            next: ConsoleCursor {
                log: 1,
                offset: end as u64,
            },
        })
    }

    fn console_write(&self, node_id: &str, data: &[u8]) -> Result<(), GuestError> {
        let mut s = self.lock();
        s.calls
            .push(GuestCall::ConsoleWrite(node_id.to_string(), data.to_vec()));
        s.live(node_id)?;
        if let Some(log) = s.consoles.get_mut(node_id) {
            log.extend_from_slice(data);
        }
        Ok(())
    }
}

/// A guest configuration for the crate's tests of the fake and of what drives it: guest `id` in
/// sandbox `vn-h1-<id>`, one virtio NIC `eth0` (10.0.0.1/24, MAC derived from `id`).
#[cfg(test)]
pub(crate) fn test_config(id: &str, memory_mb: u64) -> GuestConfig {
    use crate::guest::{Accel, GuestNic, NicModel};
    use crate::mac::Mac;
    GuestConfig {
        node_id: id.into(),
        name: "web".into(),
        netns: format!("vn-h1-{id}"),
        vcpus: 1,
        memory_mb,
        image: "default".into(),
        nic: NicModel::Virtio,
        accel: Accel::Auto,
        arch: Default::default(),
        nics: vec![GuestNic {
            ifname: "eth0".into(),
            mac: Mac::derived(id),
            addresses: vec!["10.0.0.1/24".parse().unwrap()],
            mtu: 1450,
        }],
        routes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_is_recorded_and_classified() {
        let f = RecordingGuestRuntime::new();
        assert_eq!(
            f.ensure(&test_config("a1", 128)).unwrap().action,
            EnsureAction::Started
        );
        assert_eq!(
            f.ensure(&test_config("a1", 128)).unwrap().action,
            EnsureAction::Adopted
        );
        assert_eq!(
            f.ensure(&test_config("a1", 256)).unwrap().action,
            EnsureAction::Replaced
        );
        f.crash("a1");
        assert!(!f.observed().unwrap()[0].running);
        let st = f.ensure(&test_config("a1", 256)).unwrap();
        assert_eq!((st.action, st.restarts), (EnsureAction::Restarted, 1));
        f.stop("a1").unwrap();
        assert!(f.running().is_empty());
        assert!(matches!(
            f.exec("a1", &["true".into()], Duration::from_secs(1)),
            Err(GuestError::NotFound(_))
        ));
        assert_eq!(f.calls().len(), 7);
    }

    #[test]
    fn injected_failure_and_validation() {
        let f = RecordingGuestRuntime::new();
        f.fail_next_ensure("b2", "boom");
        assert!(matches!(
            f.ensure(&test_config("b2", 128)),
            Err(GuestError::Spawn { .. })
        ));
        assert!(f.running().is_empty());
        let err = f.ensure(&test_config("b2", 64)).unwrap_err().to_string();
        assert!(err.contains("memory_mb 64"), "{err}");
        assert!(f.ensure(&test_config("b2", 128)).is_ok());
    }
}
