//! `substrate-agent`: the per-host daemon (see the library docs).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use substrate_agent::daemon::agent::{Agent, AgentConfig};
use substrate_agent::host::bpf::{BpfDatapath, TcBpf};
use substrate_agent::host::linux::LinuxKernel;
use substrate_agent::reconcile::naming::Naming;
use substrate_agent::reconcile::state::StateDir;
use substrate_agent::vlan::config::{DatapathControl, SelectedDatapath};
use substrate_agent::vlan::process::ProcessDatapath;
use vnet_proto::v1 as pb;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Which 802.1Q datapath serves VLAN links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VlanMode {
    /// BPF where the capability probe loads and attaches it, else userspace.
    Auto,
    /// BPF, or fail at start-up.
    Bpf,
    /// The userspace datapath process (AF_PACKET + TAP).
    Userspace,
}

#[derive(Debug, Parser)]
#[command(
    name = "substrate-agent",
    version,
    about = "Realizes virtual nodes and links on this host"
)]
#[command(subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// This host's id (as the controller knows it).
    #[arg(long, required = true)]
    host_id: Option<String>,
    /// The controller's AgentControl endpoint, e.g. https://10.254.0.1:7000; replicas
    /// comma-separated (the agent attaches to the leader).
    #[arg(long, required = true)]
    controller: Option<String>,
    /// Primary underlay address of this host (no prefix length).
    #[arg(long, required = true)]
    underlay_address: Option<IpAddr>,
    /// State directory (ownership ledger, datapath files).
    #[arg(long, required = true)]
    state_dir: Option<PathBuf>,
    /// Named network namespace to run in (entered before anything else starts).
    #[arg(long)]
    netns: Option<String>,
    /// CPU capacity in units of 1/100 core (default: 100 per core).
    #[arg(long)]
    cpu: Option<u64>,
    /// Memory capacity in MiB (default: MemTotal).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Labels offered to the embedding (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Prefix of every namespace name this agent creates.
    #[arg(long, default_value = "vn")]
    name_prefix: String,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Threads per apply phase.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Re-run reconcile this often even without a new desired state (seconds).
    #[arg(long, default_value_t = 30)]
    resync_s: u64,
    /// QEMU binary (probe and guests).
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: String,
    /// Guests' run directories (default: /run/vnet/guests/<host-id>, on tmpfs).
    #[arg(long)]
    guest_run_dir: Option<PathBuf>,
    /// Guest images (`<dir>/<name>/image.json`).
    #[arg(
        long,
        env = "VNET_GUEST_IMAGES",
        default_value = "/var/lib/vnet/images"
    )]
    images_dir: PathBuf,
    /// Do not run VM nodes on this host.
    #[arg(long)]
    no_guests: bool,
    /// The CA (PEM) that signed the controller's certificate; the agent verifies the
    /// controller against it.
    #[arg(long, required_unless_present = "insecure")]
    ca: Option<PathBuf>,
    /// This host's certificate (PEM), naming it as URI SAN spiffe://vnet/host/<host-id>.
    #[arg(long, required_unless_present = "insecure")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, required_unless_present = "insecure")]
    key: Option<PathBuf>,
    /// The 802.1Q datapath of VLAN links.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "VNET_VLAN_DATAPATH",
        default_value = "auto"
    )]
    vlan_datapath: VlanMode,
    /// Plain text, no certificates either way. For experiments only.
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    insecure: bool,
    /// Serve Prometheus metrics (GET /metrics: reconcile passes and their duration, VNs,
    /// session state, build_info) on this address, e.g. 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The TLS client configuration of the controller connection (`None` with `--insecure`).
fn client_tls(cli: &Cli) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    if cli.insecure {
        tracing::warn!("--insecure: plain text, the controller is not verified");
        return Ok(None);
    }
    let ca = vnet_proto::read_pem_option(cli.ca.as_deref(), "ca")?;
    let cert = vnet_proto::read_pem_option(cli.cert.as_deref(), "cert")?;
    let key = vnet_proto::read_pem_option(cli.key.as_deref(), "key")?;
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .identity(tonic::transport::Identity::from_pem(cert, key)),
    ))
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the capability probe as JSON.
    Probe {
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: String,
    },
    /// Remove everything this agent owns on the host (namespaces, links, guests, VLAN datapath).
    Cleanup {
        #[arg(long)]
        host_id: String,
        #[arg(long)]
        state_dir: PathBuf,
        /// Named network namespace the agent runs in.
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, default_value = "vn")]
        name_prefix: String,
        /// Guests' run directories (default: /run/vnet/guests/<host-id>).
        #[arg(long)]
        guest_run_dir: Option<PathBuf>,
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: String,
    },
    /// Scale benchmark: build and tear down N netns nodes through the agent's own code path.
    #[command(hide = true)]
    Bench {
        #[arg(long, default_value_t = 1000)]
        vnodes: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 0)]
        bandwidth_mbps: u64,
        #[arg(long, default_value = "vnbench")]
        name_prefix: String,
        #[arg(long, default_value = "b")]
        host_id: String,
    },
    /// Throughput benchmark helper: realize (or with --teardown remove) one side of a VXLAN and a
    /// VLAN link, through the agent's own code path and its real VLAN datapath.
    #[command(hide = true)]
    BenchLink {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        host_id: String,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        side: u8,
        #[arg(long)]
        local: String,
        #[arg(long)]
        remote: String,
        #[arg(long, default_value = "vnb")]
        name_prefix: String,
        #[arg(long)]
        teardown: bool,
    },
    /// A tenant's command confined to its node (started by the agent for every exec; see the
    /// `sandbox` module).
    #[command(hide = true)]
    ExecSandbox {
        /// The node's named network namespace.
        #[arg(long)]
        netns: PathBuf,
        /// Kill the command after this long.
        #[arg(long)]
        deadline_ms: u64,
        /// stdin is a terminal: make it the command's controlling terminal.
        #[arg(long)]
        tty: bool,
        /// A directory to cover with an empty tmpfs (repeatable).
        #[arg(long)]
        hide: Vec<PathBuf>,
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// The userspace VLAN datapath process (started by the agent).
    #[command(hide = true)]
    VlanDatapath {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        status: PathBuf,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn mem_total_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// The guest runtime on this host, built on the static probe `support` (the daemon then lets a
/// test boot confirm a KVM verdict; cleanup only stops guests and needs none).
fn guest_runtime(
    host_id: &str,
    run_dir: Option<PathBuf>,
    images_dir: PathBuf,
    qemu: &str,
    support: substrate_agent::guest::HostGuestSupport,
    kernel: Arc<LinuxKernel>,
) -> Option<substrate_agent::guest::QemuRuntime> {
    let opts = substrate_agent::guest::QemuRuntimeOptions {
        state_dir: run_dir.unwrap_or_else(|| PathBuf::from("/run/vnet/guests").join(host_id)),
        images_dir,
        qemu_binary: qemu.to_string(),
        qemu_aarch64_binary: substrate_agent::guest::accel::aarch64_binary_for(qemu),
        ..Default::default()
    };
    match substrate_agent::guest::QemuRuntime::with_support(opts, support, kernel) {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::warn!(error = %e, "no guest runtime: VM nodes will fail on this host");
            None
        }
    }
}

/// What every mode that changes the host builds first: the network namespace entered (before any
/// thread exists, so that every thread and the datapath child inherit it), the kernel layer,
/// the ownership ledger and the VLAN datapath control.
struct HostContext {
    kernel: Arc<LinuxKernel>,
    ledger: Arc<StateDir>,
    datapath: SelectedDatapath,
    /// "bpf" or "userspace".
    vlan_datapath: &'static str,
}

/// The VLAN datapath in use and the other one (kept empty). BPF needs the probe to pass; the
/// userspace datapath is chosen only where BPF is unusable or when asked for.
fn select_datapath(
    mode: VlanMode,
    kernel: &Arc<LinuxKernel>,
    naming: &Naming,
    user: ProcessDatapath,
) -> anyhow::Result<(SelectedDatapath, &'static str)> {
    let probe = match mode {
        VlanMode::Userspace => Err("the userspace datapath was asked for".to_string()),
        _ => substrate_agent::daemon::probe::bpf_vlan(),
    };
    let bpf = probe.and_then(|()| {
        BpfDatapath::new(kernel.clone() as Arc<dyn TcBpf>, naming)
            .map_err(|e| format!("bpffs on /sys/fs/bpf: {e}"))
    });
    match (mode, bpf) {
        (VlanMode::Bpf, Err(e)) => anyhow::bail!("--vlan-datapath bpf: unusable here: {e}"),
        (VlanMode::Userspace, Ok(_)) => unreachable!("not probed"),
        (_, Ok(b)) => Ok((
            SelectedDatapath {
                active: Box::new(b),
                others: vec![Box::new(user)],
            },
            "bpf",
        )),
        (_, Err(e)) => {
            tracing::info!(reason = %e, "VLAN links use the userspace datapath");
            // Still empty what a BPF datapath of this agent may have left (a mode switch).
            let others: Vec<Box<dyn DatapathControl>> =
                match BpfDatapath::new(kernel.clone() as Arc<dyn TcBpf>, naming) {
                    Ok(b) if b.pin_dir().exists() => vec![Box::new(b)],
                    _ => vec![],
                };
            Ok((
                SelectedDatapath {
                    active: Box::new(user),
                    others,
                },
                "userspace",
            ))
        }
    }
}

impl HostContext {
    fn open(
        netns: Option<&str>,
        state_dir: &std::path::Path,
        naming: &Naming,
        mode: VlanMode,
    ) -> anyhow::Result<Self> {
        let host_id = naming.host_id.as_str();
        if let Some(ns) = netns {
            substrate_agent::host::netns::enter_for_good(ns)
                .with_context(|| format!("enter network namespace {ns}"))?;
        }
        let kernel = Arc::new(LinuxKernel::new().context("prepare /run/netns")?);
        let ledger =
            Arc::new(StateDir::open(state_dir, host_id).context("open the state directory")?);
        let exe = std::env::current_exe().context("locate own binary")?;
        let user = ProcessDatapath::new(exe, ledger.clone())?;
        let (datapath, vlan_datapath) = select_datapath(mode, &kernel, naming, user)?;
        Ok(HostContext {
            kernel,
            ledger,
            datapath,
            vlan_datapath,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Probe { qemu }) => {
            let p = substrate_agent::daemon::probe::probe(&qemu);
            println!("{}", serde_json::to_string_pretty(&p)?);
            Ok(())
        }
        Some(Cmd::Bench {
            vnodes,
            workers,
            bandwidth_mbps,
            name_prefix,
            host_id,
        }) => {
            raise_nofile();
            let k = LinuxKernel::new().context("kernel")?;
            let naming = Naming::new(name_prefix, host_id);
            let r = substrate_agent::daemon::bench::run_scale(
                &k,
                &naming,
                vnodes,
                bandwidth_mbps,
                workers,
            )?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Some(Cmd::BenchLink {
            netns,
            host_id,
            state_dir,
            side,
            local,
            remote,
            name_prefix,
            teardown,
        }) => {
            let naming = Naming::new(name_prefix, host_id.clone());
            let host = HostContext::open(Some(&netns), &state_dir, &naming, cli.vlan_datapath)?;
            let desired = if teardown {
                pb::DesiredState {
                    generation: 2,
                    vns: vec![],
                }
            } else {
                substrate_agent::daemon::bench::link_desired(side, &local, &remote)
            };
            substrate_agent::daemon::bench::apply_once(
                &*host.kernel,
                &naming,
                &host.ledger,
                &host.datapath,
                &desired,
            )
        }
        Some(Cmd::Cleanup {
            host_id,
            state_dir,
            netns,
            name_prefix,
            guest_run_dir,
            qemu,
        }) => {
            init_tracing(LogFormat::Text);
            let naming = Naming::new(name_prefix, host_id.clone());
            let host = HostContext::open(netns.as_deref(), &state_dir, &naming, cli.vlan_datapath)?;
            // Stopping guests needs their run directories only: no image, no KVM verdict.
            let guests = guest_runtime(
                &host_id,
                guest_run_dir,
                PathBuf::new(),
                &qemu,
                substrate_agent::guest::probe_host(&qemu),
                host.kernel.clone(),
            );
            let guests = guests
                .as_ref()
                .map(|g| g as &dyn substrate_agent::guest::GuestRuntime);
            let r = substrate_agent::daemon::cleanup::cleanup(
                &*host.kernel,
                &naming,
                &host.ledger,
                &host.datapath,
                guests,
            )?;
            println!("{}", serde_json::to_string(&r)?);
            anyhow::ensure!(r.errors.is_empty(), "cleanup incomplete: {:?}", r.errors);
            Ok(())
        }
        Some(Cmd::ExecSandbox {
            netns,
            deadline_ms,
            tty,
            hide,
            argv,
        }) => {
            // Single-threaded: no runtime, no tracing (stderr is the tenant's).
            let code = substrate_agent::daemon::sandbox::run(
                &substrate_agent::daemon::sandbox::Confinement {
                    netns,
                    deadline: std::time::Duration::from_millis(deadline_ms),
                    tty,
                    limits: substrate_agent::daemon::sandbox::Limits::default(),
                    hide,
                    argv,
                },
            );
            std::process::exit(code)
        }
        Some(Cmd::VlanDatapath { config, status }) => {
            init_tracing(LogFormat::Text);
            substrate_agent::vlan::datapath::run(config, status)
        }
        None => run(cli),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(cli.log_format);
    let tls = client_tls(&cli)?;
    let host_id = cli.host_id.expect("required");
    let state_dir = cli.state_dir.expect("required");
    let naming = Naming::new(cli.name_prefix.clone(), host_id.clone());
    let host = HostContext::open(cli.netns.as_deref(), &state_dir, &naming, cli.vlan_datapath)?;
    raise_nofile();
    // The guest runtime first: a KVM test boot may overturn the static verdict, and the
    // capabilities must report what guests will actually use.
    let static_guests = substrate_agent::guest::probe_host(&cli.qemu);
    let guests = if cli.no_guests {
        None
    } else if static_guests.qemu.is_none() {
        tracing::warn!(qemu = %cli.qemu, "QEMU not found: VM nodes will fail on this host");
        None
    } else {
        guest_runtime(
            &host_id,
            cli.guest_run_dir,
            cli.images_dir,
            &cli.qemu,
            static_guests.clone(),
            host.kernel.clone(),
        )
        .map(|mut rt| {
            rt.confirm_kvm();
            rt
        })
    };
    let guest_support = guests
        .as_ref()
        .map(|g| g.support().clone())
        .unwrap_or(static_guests);
    let mut probe = substrate_agent::daemon::probe::probe_with_guests(&guest_support);
    probe.vlan_datapath = host.vlan_datapath.to_string();
    tracing::info!(probe = %serde_json::to_string(&probe)?, "capability probe");
    tracing::info!(datapath = host.vlan_datapath, "VLAN links datapath");
    let kernel = host.kernel;
    let ledger = host.ledger;
    let datapath = Arc::new(host.datapath);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let cfg = AgentConfig {
        host_id: host_id.clone(),
        controller: cli.controller.expect("required"),
        underlay_address: cli.underlay_address.expect("required"),
        underlay: substrate_agent::host::linux::underlay_interfaces().context("list interfaces")?,
        state_dir,
        capacity: pb::Resources {
            cpu: cli.cpu.unwrap_or(100 * cores),
            memory_mb: cli.memory_mb.unwrap_or_else(mem_total_mb),
        },
        labels: cli.labels,
        name_prefix: cli.name_prefix,
        workers: cli.workers.max(1),
        resync: Duration::from_secs(cli.resync_s.max(1)),
        capabilities: probe.to_proto(),
        tls,
    };
    let guests = guests.map(|g| Arc::new(g) as Arc<dyn substrate_agent::guest::GuestRuntime>);
    let agent = Arc::new(Agent::new(cfg, kernel, ledger, datapath, guests));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let metrics_listen = cli.metrics_listen;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?;
            tracing::info!(address = %listener.local_addr()?, "metrics listening on /metrics");
            let (m, stop) = (agent.metrics.clone(), rx.clone());
            tokio::spawn(async move {
                if let Err(e) = substrate_agent::daemon::metrics::serve(m, listener, stop).await {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            });
        }
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        tracing::info!(host = %host_id, "agent started");
        agent.run(rx).await
    })
}
