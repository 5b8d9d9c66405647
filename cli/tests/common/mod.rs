//! What the testbed tests (`e2e.rs`, `guest.rs`, `recursion.rs`) share: running vnctl, the
//! preconditions of a root test, the cross-process testbed lock, a private testbed ([`Bed`]) with
//! its `up`/`down`, and the snapshot that must be the same before `testbed up` and after
//! `testbed down`.
//!
//! Each test binary compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const VNCTL: &str = env!("CARGO_BIN_EXE_vnctl");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `VNET_REQUIRE_ROOT=1`: a missing precondition fails the test instead of skipping it.
pub fn require() -> bool {
    std::env::var("VNET_REQUIRE_ROOT").as_deref() == Ok("1")
}

/// The effective uid is 0 (from /proc: no libc dependency in tests).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Adds "`tool` is not installed" to `missing` for each of `tools` not on the PATH.
pub fn tools_missing(missing: &mut Vec<String>, tools: &[&str]) {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("{tool} is not installed"));
        }
    }
}

/// What every testbed test needs and is missing: root (`root_for` says what for) and the daemons
/// built next to vnctl.
pub fn testbed_missing(root_for: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push(format!("needs root ({root_for})"));
    }
    let bin_dir = Path::new(VNCTL).parent().unwrap();
    for b in ["vn-controller", "substrate-agent"] {
        if !bin_dir.join(b).exists() {
            missing.push(format!(
                "{b} is not built next to vnctl ({}): cargo build -p vn-controller -p substrate-agent",
                bin_dir.display()
            ));
        }
    }
    missing
}

/// The calling test's private testbed, or `None` after printing `SKIP` when root, the daemons
/// or one of `tools` is missing. `tag` names the test file's kernel objects (namespaces
/// `<tag><pid>x<n>-`, bridge `vn<tag><pid>x<n>`: at most 3 characters), `n` tells the tests of
/// one file apart, `octet` is the second octet of the management subnet.
pub fn private_bed(n: u32, tools: &[&str], tag: &str, octet: u32) -> Option<Bed> {
    let mut missing = testbed_missing("namespaces, veths, daemons");
    tools_missing(&mut missing, tools);
    if !may_run(&missing) {
        return None;
    }
    Some(named_bed(tag, n, octet))
}

/// The private testbed named by `tag`, `n` and `octet` (see [`private_bed`]), whose
/// preconditions the caller checked.
pub fn named_bed(tag: &str, n: u32, octet: u32) -> Bed {
    let pid = std::process::id() % 100_000;
    Bed::new(
        &format!("vnet-{tag}-"),
        format!("{tag}{pid}x{n}-"),
        format!("vn{tag}{pid}x{n}"),
        format!("10.{octet}.{}.0/24", (pid + n) % 250),
    )
}

/// [`named_bed`] whose snapshot also covers TAP-named links in the root namespace (a guest's
/// TAP belongs in its sandbox namespace).
pub fn guest_bed(tag: &str, octet: u32) -> Bed {
    let mut bed = named_bed(tag, 0, octet);
    bed.root_links.push("t-".into());
    bed
}

/// `true` when nothing is `missing`; otherwise prints `SKIP <test>: <what>` and returns `false`,
/// or panics under `VNET_REQUIRE_ROOT=1`. `<test>` is the calling test's name: the harness names
/// each test's thread after it.
pub fn may_run(missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("a testbed test");
    if require() {
        panic!("{test}: VNET_REQUIRE_ROOT=1 but {}", missing.join("; "));
    }
    println!("SKIP {test}: {}", missing.join("; "));
    false
}

/// Serializes testbeds across test binaries, concurrent `cargo test` runs and the benchmark
/// scripts (`deploy/bench/lib/testbed.sh`): an exclusive `flock` on
/// `/run/lock/vnet-testbed-e2e.lock`, held while the returned value lives.
pub fn testbed_lock() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/vnet-testbed-e2e.lock")
        .expect("open the testbed lock file");
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the testbed lock file")
}

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The non-empty lines a command prints, trimmed.
pub fn lines_of(cmd: &[&str]) -> BTreeSet<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    text(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The names of all named network namespaces (`ip netns list`).
pub fn netns_names() -> BTreeSet<String> {
    lines_of(&["ip", "netns", "list"])
        .into_iter()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// `pid: cmdline` of every process whose command line contains one of `markers`.
pub fn processes(markers: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = text(&raw).replace('\0', " ");
            if markers.iter().any(|m| cmd.contains(m)) {
                out.insert(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

/// An interface address (`10.0.0.1/24`) without its prefix length.
pub fn addr(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Its stdout, after asserting that the command succeeded.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// vnctl exited with `code` and said why in one line `error: ...` that contains every `want`.
pub fn assert_one_line_error(out: &Output, code: i32, want: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in {err:?}");
    }
}

/// The vnctl config file of each testbed's controller URL (its admin context, written by
/// `testbed up`), so that [`vnctl`] authenticates to that controller.
static CONFIGS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn config_of(ctl: &str) -> Option<PathBuf> {
    CONFIGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(c, _)| c == ctl)
        .map(|(_, p)| p.clone())
}

/// vnctl against the controller at `ctl` (`VNET_PROVIDER` of the environment removed), as the
/// admin of that testbed (its config file), acting for `provider`.
pub fn vnctl(ctl: &str, provider: Option<&str>, args: &[&str]) -> Output {
    vnctl_with_input(ctl, provider, args, None)
}

/// [`vnctl`] with `input` on its stdin (none: stdin is /dev/null).
pub fn vnctl_with_input(
    ctl: &str,
    provider: Option<&str>,
    args: &[&str],
    input: Option<&[u8]>,
) -> Output {
    let mut c = Command::new(VNCTL);
    c.env_remove("VNET_PROVIDER").env("VNET_CONTROLLER", ctl);
    match config_of(ctl) {
        Some(p) => c.env("VNET_CONFIG", p),
        // No testbed: a config file that does not exist (never the developer's own).
        None => c.env("VNET_CONFIG", "/nonexistent/vnet-test-config"),
    };
    if let Some(p) = provider {
        c.args(["--provider", p]);
    }
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run vnctl");
    if let Some(i) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(i).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// What must be the same before `testbed up` and after `testbed down`.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub netns: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub qdiscs: BTreeSet<String>,
    pub processes: BTreeSet<String>,
}

/// A private testbed: its own namespace prefix, bridge, subnet, ports and state dir, so that a
/// developer's testbed is untouched.
pub struct Bed {
    _state: tempfile::TempDir,
    /// The state dir (`--state-dir`).
    pub dir: PathBuf,
    /// Inline specs of the test ([`Bed::spec`]).
    specs: tempfile::TempDir,
    /// Namespace prefix: host namespaces `<tag>h1`.., node namespaces `<tag><host>-<node id>`.
    pub tag: String,
    pub bridge: String,
    pub subnet: String,
    pub port: u16,
    pub metrics: u16,
    /// The controller's address, for vnctl.
    pub ctl: String,
    /// Root-namespace links of this testbed: names starting with one of these (the bridge and
    /// its ends; a test of guests adds the TAP prefix).
    pub root_links: Vec<String>,
}

impl Bed {
    /// `state_prefix` names the temporary state dir; `tag`, `bridge` and `subnet` must be unique
    /// to the test and this process.
    pub fn new(state_prefix: &str, tag: String, bridge: String, subnet: String) -> Bed {
        let state = tempfile::Builder::new()
            .prefix(state_prefix)
            .tempdir()
            .unwrap();
        let port = free_port();
        let specs = tempfile::tempdir().unwrap();
        let ctl = format!("https://127.0.0.1:{port}");
        CONFIGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((ctl.clone(), specs.path().join("vnet-config")));
        Bed {
            dir: state.path().to_owned(),
            _state: state,
            specs,
            root_links: vec![bridge.clone()],
            tag,
            bridge,
            subnet,
            port,
            metrics: free_port(),
            ctl,
        }
    }

    /// The namespaces of this testbed (hosts, virtual nodes, transits, guest sandboxes).
    pub fn namespaces(&self) -> BTreeSet<String> {
        netns_names()
            .into_iter()
            .filter(|n| n.starts_with(&self.tag))
            .collect()
    }

    /// The objects of this testbed: its namespaces, its root-namespace links ([`Bed::root_links`];
    /// the agents touch nothing else in the root namespace), its bridge's qdiscs, and every
    /// process naming its state dir or tag (the daemons, the VLAN datapaths and QEMU, whose
    /// command line names its run directory inside the state dir). Filtering keeps other tests
    /// running at the same time out of the comparison; the whole-machine comparison around the
    /// suite is `deploy/check-leftovers.sh`.
    pub fn snapshot(&self) -> Snapshot {
        let links = lines_of(&["ip", "-o", "link", "show"])
            .into_iter()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap().to_owned())
            })
            .filter(|n| self.root_links.iter().any(|p| n.starts_with(p.as_str())))
            .collect();
        let qdiscs = lines_of(&["tc", "qdisc", "show"])
            .into_iter()
            .filter(|l| l.contains(&format!("dev {}", self.bridge)))
            .collect();
        Snapshot {
            netns: self.namespaces(),
            links,
            qdiscs,
            processes: processes(&[self.dir.to_str().unwrap(), &self.tag]),
        }
    }

    /// `vnctl testbed ARGS --state-dir DIR`.
    /// The vnctl config file of this testbed (`testbed up` makes its admin context current).
    pub fn config(&self) -> PathBuf {
        self.specs.path().join("vnet-config")
    }

    /// The PKI directory of this testbed (CA, certificates, keys).
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub fn testbed(&self, args: &[&str]) -> Output {
        Command::new(VNCTL)
            .env("VNET_CONFIG", self.config())
            .arg("testbed")
            .args(args)
            .arg("--state-dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    /// Three hosts up; the returned guard takes them down however the test ends.
    pub fn up(&self) -> Down<'_> {
        self.up_hosts(3)
    }

    /// `hosts` hosts (a full mesh) up; the returned guard takes them down however the test
    /// ends.
    pub fn up_hosts(&self, hosts: usize) -> Down<'_> {
        self.up_with(hosts, &[])
    }

    /// [`Bed::up_hosts`] with more `testbed up` arguments.
    pub fn up_with(&self, hosts: usize, extra: &[&str]) -> Down<'_> {
        let guard = Down(self);
        let hosts = hosts.to_string();
        let (port, metrics) = (self.port.to_string(), self.metrics.to_string());
        let mut args = vec![
            "up",
            "--hosts",
            &hosts,
            "--netns-prefix",
            &self.tag,
            "--mgmt-bridge",
            &self.bridge,
            "--mgmt-subnet",
            &self.subnet,
            "--node-prefix",
            self.tag.trim_end_matches('-'),
            "--listen-port",
            &port,
            "--metrics-port",
            &metrics,
            "--timeout",
            "90s",
        ];
        args.extend_from_slice(extra);
        ok(self.testbed(&args), "testbed up");
        guard
    }

    /// After `down`: only logs in the state dir, and nothing of ours in the kernel (compared
    /// with `before`, taken before `up`).
    pub fn assert_gone(&self, before: &Snapshot) {
        let left: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["logs"]);
        // Processes may take a moment to be reaped by init.
        let mut after = self.snapshot();
        for _ in 0..20 {
            if &after == before {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            after = self.snapshot();
        }
        assert_eq!(before, &after, "left behind");
    }

    pub fn vnctl(&self, provider: Option<&str>, args: &[&str]) -> Output {
        vnctl(&self.ctl, provider, args)
    }

    /// A vnctl command against this testbed as its admin (its config file), to be spawned by
    /// the caller (for commands that run alongside the test: servers, streams, long output).
    pub fn admin_command(&self) -> Command {
        let mut c = Command::new(VNCTL);
        c.env_remove("VNET_PROVIDER")
            .env("VNET_CONTROLLER", &self.ctl)
            .env("VNET_CONFIG", self.config());
        c
    }

    /// [`Bed::admin_command`] acting for `provider`.
    pub fn vnctl_command(&self, provider: &str) -> Command {
        let mut c = self.admin_command();
        c.args(["--provider", provider]);
        c
    }

    /// `vnctl ARGS` as `provider` (`None`: the admin) running in the background, its output
    /// piped.
    pub fn spawn_vnctl(&self, provider: Option<&str>, args: &[&str]) -> Child {
        let mut c = match provider {
            Some(p) => self.vnctl_command(p),
            None => self.admin_command(),
        };
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vnctl")
    }

    /// `vnctl admin credentials create --provider PROVIDER --out OUT`; panics unless it
    /// succeeds.
    pub fn create_credential(&self, provider: &str, out: &Path) {
        let out = out.to_str().unwrap();
        let args = [
            "admin",
            "credentials",
            "create",
            "--provider",
            provider,
            "--out",
            out,
        ];
        ok(self.vnctl(None, &args), "credentials create");
    }

    /// `vnctl apply -f FILE --wait --timeout TIMEOUT` as `provider`; panics unless it succeeds.
    pub fn apply_wait(&self, provider: &str, file: &Path, timeout: &str) {
        ok(
            self.vnctl(
                Some(provider),
                &[
                    "apply",
                    "-f",
                    file.to_str().unwrap(),
                    "--wait",
                    "--timeout",
                    timeout,
                ],
            ),
            &format!("apply {}", file.display()),
        );
    }

    /// Writes an inline spec into the test's spec directory.
    pub fn spec(&self, name: &str, yaml: &str) -> PathBuf {
        let f = self.specs.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        f
    }

    /// `vnctl get hosts -o json`.
    pub fn hosts(&self) -> Vec<Value> {
        let out = ok(
            self.vnctl(None, &["get", "hosts", "-o", "json"]),
            "get hosts",
        );
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn describe(&self, provider: &str, vn: &str) -> Value {
        let out = ok(
            self.vnctl(Some(provider), &["describe", "vn", vn, "-o", "json"]),
            "describe",
        );
        serde_json::from_str(&out).unwrap()
    }

    /// The run directory of the guests of `host`'s agent.
    pub fn guests_dir(&self, host: &str) -> PathBuf {
        self.dir.join("agents").join(host).join("guests")
    }

    /// The pid in the QEMU pidfile of guest `node_id` on `host`, and the command line of that
    /// process (its arguments joined by spaces; empty when it is gone).
    pub fn qemu_process(&self, host: &str, node_id: &str) -> (u32, String) {
        let p = self.guests_dir(host).join(node_id).join("qemu.pid");
        let pid: u32 = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap();
        let cmd = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default());
        (pid, cmd.replace('\0', " "))
    }

    /// `vnctl exec VN NODE --timeout 20s -- ARGV`.
    pub fn exec(&self, provider: &str, vn: &str, node: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", vn, node, "--timeout", "20s", "--"];
        args.extend_from_slice(argv);
        self.vnctl(Some(provider), &args)
    }

    /// Pings from `node` until one answers (neighbours may still be resolving; READY means every
    /// guest has booted), at most `within`.
    pub fn ping_until(&self, provider: &str, vn: &str, node: &str, addr: &str, within: Duration) {
        self.ping_sized_until(provider, vn, node, addr, 56, within);
    }

    /// [`Bed::ping_until`] with `size` bytes of ICMP payload.
    pub fn ping_sized_until(
        &self,
        provider: &str,
        vn: &str,
        node: &str,
        addr: &str,
        size: u32,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        let size = size.to_string();
        loop {
            let out = self.exec(
                provider,
                vn,
                node,
                &["busybox", "ping", "-c", "1", "-W", "1", "-s", &size, addr],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{vn}: {node} cannot reach {addr} within {within:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Takes the testbed down however the test ends (with the logs' tails after a failure).
pub struct Down<'a>(&'a Bed);

impl Down<'_> {
    /// The end of a test that went well: `testbed down` succeeds and leaves nothing of the
    /// testbed compared with `before` ([`Bed::assert_gone`]).
    pub fn finish(self, before: &Snapshot) {
        let bed = self.0;
        ok(bed.testbed(&["down"]), "testbed down");
        drop(self);
        bed.assert_gone(before);
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let out = self.0.testbed(&["down"]);
        if std::thread::panicking() {
            eprintln!("testbed down after failure: {out:?}");
            let mut logs: Vec<PathBuf> = std::fs::read_dir(self.0.dir.join("logs"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.sort();
            for p in logs {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    let tail: Vec<&str> = t.lines().rev().take(40).collect();
                    eprintln!("--- {}:", p.display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}
