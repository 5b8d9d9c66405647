//! The live part of `vnctl experiment run`: sends the schedule's requests to the controller as
//! their providers, follows each accepted VN to READY, probes it, deletes it when its lifetime
//! ends, samples the substrate meanwhile, and on Ctrl-C (or any error) deletes whatever it
//! created before it returns.
//!
//! One task per request. A stop signal (a `watch` channel) ends every wait at once; each task
//! deletes its own VN, and the end waits until the hosts have applied every teardown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use vnet_proto::v1 as pb;

use super::arrivals::{Arrival, schedule};
use super::plan::{Plan, ProviderPlan};
use super::records::{Record, Run, Sample};
use crate::client::{Controller, ControllerOpts, rpc_error};
use crate::probe;

/// How long a VN may take from Accepted to READY before the request counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the first ping may take after READY.
const FIRST_PING_WITHIN: Duration = Duration::from_secs(15);
/// How long the end waits for the hosts to tear everything down.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// What the tasks share.
#[derive(Default)]
struct Shared {
    records: Vec<Record>,
    /// Accepted and not yet deleted, per provider index.
    alive: BTreeMap<usize, BTreeSet<String>>,
    /// Every VN accepted during the run, per provider index (what the end makes sure is gone).
    created: BTreeMap<usize, BTreeSet<String>>,
    sent: usize,
    accepted: usize,
}

type State = Arc<Mutex<Shared>>;

fn lock(s: &State) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection of one provider: its own credential file, else `base` acting as it.
async fn connect_provider(base: &ControllerOpts, p: &ProviderPlan) -> anyhow::Result<Controller> {
    let opts = match &p.credential {
        Some(path) => {
            if !path.exists() {
                anyhow::bail!(
                    "provider {}: credential file {} does not exist (an admin writes one with \
                     `vnctl admin credentials create --provider {} --out FILE`)",
                    p.name,
                    path.display(),
                    p.name
                );
            }
            let file = crate::config::Config::load(path)?;
            let ctx = file.current()?.with_context(|| {
                format!(
                    "provider {}: {} names no current context",
                    p.name,
                    path.display()
                )
            })?;
            ControllerOpts {
                controller: base.controller.clone(),
                provider: None,
                ca_pem: ctx.ca_pem()?.or_else(|| base.ca_pem.clone()),
                token: ctx.token.clone(),
            }
        }
        None => ControllerOpts {
            provider: Some(p.name.clone()),
            ..base.clone()
        },
    };
    Controller::connect(&opts)
        .await
        .with_context(|| format!("connecting as provider {}", p.name))
}

/// Refuses to start when a provider already has VNs named like this experiment's.
async fn check_clean(plan: &Plan, ctls: &[Controller]) -> anyhow::Result<()> {
    for (p, ctl) in plan.providers.iter().zip(ctls) {
        let prefix = format!("{}-{}-", plan.name, p.name);
        let vns = ctl
            .list_vns(&format!("list vns of provider {}", p.name))
            .await?;
        let old: Vec<String> = vns
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if !old.is_empty() {
            anyhow::bail!(
                "provider {} already has VNs of experiment {}: {} (delete them or rename the \
                 experiment)",
                p.name,
                plan.name,
                old.join(", ")
            );
        }
    }
    Ok(())
}

/// Sleeps `d`, or less when `stop` is raised: `true` when stopped.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

/// Waits for READY through Watch: Ok(()) or why not.
async fn ready(ctl: &Controller, name: &str) -> Result<(), String> {
    let mut stream = ctl.watch_vn(name).await.map_err(|e| e.to_string())?;
    loop {
        match stream.message().await {
            Ok(Some(ev)) if ev.name == name => match crate::wait::ready_outcome(&ev) {
                crate::wait::Outcome::Ready => return Ok(()),
                crate::wait::Outcome::Failed(why) => return Err(why),
                crate::wait::Outcome::Pending => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => return Err("the controller closed the watch".into()),
            Err(s) => return Err(rpc_error(&format!("watch vn {name}"), s).to_string()),
        }
    }
}

/// The probes of one READY VN, written into `rec`.
async fn probe_vn(ctl: &Controller, plan: &Plan, name: &str, seq: usize, rec: &mut Record) {
    let vn = match ctl.vns().get(pb::GetVnRequest { name: name.into() }).await {
        Ok(v) => v.into_inner(),
        Err(s) => {
            rec.reason = rpc_error(&format!("get vn {name}"), s).to_string();
            return;
        }
    };
    let links = probe::links(&vn);
    if plan.ping
        && let Some(first) = links.first()
    {
        rec.first_ping_ms = probe::first_ping(ctl, name, first, FIRST_PING_WITHIN)
            .await
            .map(|d| d.as_secs_f64() * 1e3);
        let rows = probe::pingall(ctl, &vn, 3).await;
        rec.links_probed = links.len();
        let mut reachable = BTreeMap::<&str, bool>::new();
        for r in &rows {
            *reachable.entry(r.link.as_str()).or_insert(true) &= r.result.is_ok();
        }
        rec.links_reachable = reachable.values().filter(|ok| **ok).count();
        let rtts: Vec<f64> = rows.iter().filter_map(|r| r.result.clone().ok()).collect();
        if !rtts.is_empty() {
            rec.rtt_ms = Some(rtts.iter().sum::<f64>() / rtts.len() as f64);
        }
        if let Some(bad) = rows.iter().find(|r| r.result.is_err()) {
            rec.reason = format!(
                "ping {} -> {} ({}) failed: {}",
                bad.from,
                bad.to,
                bad.addr,
                bad.result.clone().err().unwrap_or_default()
            );
        }
    }
    if let Some(ip) = plan.iperf
        && !links.is_empty()
        && seq.is_multiple_of(ip.every)
    {
        // The sampled link rotates with the request number.
        let l = &links[seq % links.len()];
        let got = probe::iperf(ctl, name, &l.b, &l.a, ip.seconds).await;
        rec.iperf_link = l.name();
        rec.reserved_mbps = Some(l.bandwidth_mbps as f64);
        match got {
            Ok(m) => rec.measured_mbps = Some(m),
            Err(e) if rec.reason.is_empty() => rec.reason = format!("iperf3 {}: {e:#}", l.name()),
            Err(_) => {}
        }
    }
}

/// Deletes `name`; Ok when it is gone (NOT_FOUND counts as gone).
async fn delete(ctl: &Controller, name: &str) -> anyhow::Result<()> {
    match ctl
        .vns()
        .delete(pb::DeleteVnRequest {
            name: name.into(),
            cascade: false,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(rpc_error(&format!("delete vn {name}"), s)),
    }
}

/// Everything one request's task needs.
struct Task {
    ctl: Controller,
    plan: Arc<Plan>,
    arrival: Arrival,
    start: Instant,
    state: State,
    stop: watch::Receiver<bool>,
    bar: ProgressBar,
}

/// One request from Create to its deletion.
async fn lifecycle(mut t: Task) {
    let a = &t.arrival;
    let p = &t.plan.providers[a.provider];
    let name = a.shape.spec.name.clone();
    let mut rec = Record {
        seq: a.seq,
        provider: p.name.clone(),
        algorithm: p.algorithm.clone(),
        vn: name.clone(),
        nodes: a.shape.nodes(),
        links: a.shape.links(),
        arrival_s: t.start.elapsed().as_secs_f64(),
        lifetime_s: a.lifetime_s,
        ..Default::default()
    };
    let sent = Instant::now();
    let created = t
        .ctl
        .vns()
        .create(pb::CreateVnRequest {
            spec: Some(a.shape.spec.clone()),
        })
        .await;
    rec.create_to_accepted_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
    if let Err(s) = created {
        rec.reason = rpc_error(&format!("create vn {name}"), s).to_string();
        finish(&t, rec, false);
        return;
    }
    rec.accepted = true;
    {
        let mut s = lock(&t.state);
        s.accepted += 1;
        s.alive.entry(a.provider).or_default().insert(name.clone());
        s.created
            .entry(a.provider)
            .or_default()
            .insert(name.clone());
    }
    let accepted_at = Instant::now();
    let mut stop = t.stop.clone();
    let became_ready = tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, ready(&t.ctl, &name)) => {
            Some(r.unwrap_or_else(|_| Err(format!("not READY within {READY_TIMEOUT:?}"))))
        }
        _ = stop.changed() => None,
    };
    match became_ready {
        Some(Ok(())) => {
            rec.accepted_to_ready_ms = Some(accepted_at.elapsed().as_secs_f64() * 1e3);
            tokio::select! {
                () = probe_vn(&t.ctl, &t.plan, &name, a.seq, &mut rec) => {}
                _ = stop.changed() => rec.reason = "interrupted while probing".into(),
            }
            let left = Duration::from_secs_f64(a.lifetime_s).saturating_sub(accepted_at.elapsed());
            sleep_or_stop(left, &mut t.stop).await;
        }
        Some(Err(why)) => rec.reason = why,
        None => rec.reason = "interrupted before READY".into(),
    }
    match delete(&t.ctl, &name).await {
        Ok(()) => {
            lock(&t.state)
                .alive
                .get_mut(&a.provider)
                .map(|s| s.remove(&name));
        }
        Err(e) if rec.reason.is_empty() => rec.reason = format!("{e:#}"),
        Err(_) => {}
    }
    finish(&t, rec, true);
}

fn finish(t: &Task, mut rec: Record, accepted: bool) {
    // One line per reason, so that every request is one line of the CSV.
    rec.reason = rec.reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.bar.is_hidden() {
        // No terminal (a log, CI): one line per request instead of the bar.
        let what = match (rec.accepted, rec.reason.as_str()) {
            (true, "") => format!(
                "done, READY after {:.0} ms, {}/{} links answered",
                rec.accepted_to_ready_ms.unwrap_or(0.0),
                rec.links_reachable,
                rec.links_probed
            ),
            (true, why) => format!("accepted, then: {why}"),
            (false, why) => format!("rejected: {why}"),
        };
        eprintln!(
            "[{:6.1}s] {} ({}): {what}",
            t.start.elapsed().as_secs_f64(),
            rec.vn,
            rec.algorithm
        );
    }
    let mut s = lock(&t.state);
    s.records.push(rec);
    let alive: usize = s.alive.values().map(BTreeSet::len).sum();
    t.bar.inc(1);
    t.bar.set_message(format!(
        "{} accepted, {alive} alive{}",
        s.accepted,
        if accepted { "" } else { ", last rejected" }
    ));
}

/// Reserved over capacity: all hosts' CPU, and each substrate link's bandwidth, percent.
async fn sample(admin: &Controller, t_s: f64, state: &State) -> anyhow::Result<Sample> {
    let hosts = admin
        .hosts()
        .await
        .map_err(|s| rpc_error("list hosts", s))?;
    let links = admin.links().await?;
    let (mut cap, mut free) = (0u64, 0u64);
    for h in &hosts {
        cap += h.capacity.map_or(0, |c| c.cpu);
        free += h.residual.map_or(0, |c| c.cpu);
    }
    let pct = |cap: u64, free: u64| {
        if cap == 0 {
            0.0
        } else {
            100.0 * cap.saturating_sub(free) as f64 / cap as f64
        }
    };
    let link_pct = links
        .iter()
        .map(|l| {
            (
                format!("{}-{}", l.a, l.b),
                pct(l.bandwidth_mbps, l.residual_mbps),
            )
        })
        .collect();
    let s = lock(state);
    Ok(Sample {
        algorithm: String::new(),
        t_s,
        vns_alive: s.alive.values().map(BTreeSet::len).sum(),
        requests: s.sent,
        accepted: s.accepted,
        cpu_pct: pct(cap, free),
        link_pct,
    })
}

/// Samples the substrate every `interval` until `stop`.
async fn sampler(
    admin: Controller,
    interval: Duration,
    start: Instant,
    state: State,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    loop {
        match sample(&admin, start.elapsed().as_secs_f64(), &state).await {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!("sampling the substrate: {e:#}"),
        }
        if sleep_or_stop(interval, &mut stop).await {
            return out;
        }
    }
}

fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {wide_bar} {pos}/{len} requests, {msg} [{elapsed_precise}] (Ctrl-C \
                 stops and deletes what it created)",
            )
            .expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// Runs `plan` against the controller of `base`; writes nothing (the caller writes the run).
/// Returns the run, marked `interrupted` when Ctrl-C (SIGINT) or SIGTERM stopped it, and
/// whether everything it created is gone (the run is worth writing either way).
pub async fn run(plan: Plan, base: &ControllerOpts) -> anyhow::Result<(Run, anyhow::Result<()>)> {
    let schedule = schedule(&plan)?;
    let admin = Controller::connect(base).await?;
    let mut ctls = Vec::new();
    for p in &plan.providers {
        ctls.push(connect_provider(base, p).await?);
    }
    check_clean(&plan, &ctls).await?;
    let plan = Arc::new(plan);
    let state: State = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = spawn_signal_watch(stop_tx.clone(), interrupted.clone())?;
    let bar = progress_bar(schedule.len());
    let start = Instant::now();
    let interval = Duration::from_secs_f64(plan.sample_interval_s);
    let sampling = tokio::spawn(sampler(
        admin.clone(),
        interval,
        start,
        state.clone(),
        stop.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let mut wait = stop.clone();
    for arrival in schedule {
        let due = Duration::from_secs_f64(arrival.at_s).saturating_sub(start.elapsed());
        if sleep_or_stop(due, &mut wait).await {
            break;
        }
        lock(&state).sent += 1;
        tasks.spawn(lifecycle(Task {
            ctl: ctls[arrival.provider].clone(),
            plan: plan.clone(),
            arrival,
            start,
            state: state.clone(),
            stop: stop.clone(),
            bar: bar.clone(),
        }));
    }
    while tasks.join_next().await.is_some() {}
    let _ = stop_tx.send(true);
    let mut samples = sampling.await.unwrap_or_default();
    bar.finish_and_clear();
    let created = lock(&state).created.clone();
    let gone = teardown(&plan, &ctls, &created).await;
    signals.abort();
    if let Ok(s) = sample(&admin, start.elapsed().as_secs_f64(), &state).await {
        samples.push(s);
    }
    let mut records = std::mem::take(&mut lock(&state).records);
    records.sort_by_key(|r| r.seq);
    let stopped = interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let run = Run {
        name: plan.name.clone(),
        ended: if stopped { "interrupted" } else { "completed" }.into(),
        records,
        samples,
    };
    Ok((run, gone))
}

/// Raises `stop` at the first SIGINT or SIGTERM.
fn spawn_signal_watch(
    stop: watch::Sender<bool>,
    interrupted: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: deleting every VN this experiment created");
        interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = stop.send(true);
    }))
}

/// Makes sure every VN the run created is deleted and torn down on its hosts.
async fn teardown(
    plan: &Plan,
    ctls: &[Controller],
    created: &BTreeMap<usize, BTreeSet<String>>,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (pi, names) in created {
        let ctl = &ctls[*pi];
        for n in names {
            // The tasks deleted their VNs; a delete that failed there is retried here.
            if let Err(e) = delete(ctl, n).await {
                failed.push(format!("{e:#}"));
            }
        }
        let names: Vec<String> = names.iter().cloned().collect();
        if !names.is_empty() {
            crate::wait::until_deleted(ctl, &names, TEARDOWN_TIMEOUT)
                .await
                .with_context(|| {
                    format!(
                        "tearing down the VNs of provider {}",
                        plan.providers[*pi].name
                    )
                })?;
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("some VNs could not be deleted: {}", failed.join("; "));
    }
    Ok(())
}

/// Writes a run's files and report into `out`.
pub fn write(run: &Run, out: &Path) -> anyhow::Result<()> {
    run.write(out)?;
    super::report::write_report(run, out)
}
