//! Probes of a VN's data plane through `VirtualNetworks.Exec` (the tenant's own path into its
//! nodes, confined by the exec sandbox): ping over every link both ways (`vnctl pingall`), one
//! iperf3 TCP stream over a link (`vnctl iperf`), and what `experiment run` measures per VN.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vnet_proto::v1 as pb;

use crate::client::{Controller, rpc_error};

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Captured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` in `node` of `vn` with no input and collects its output.
pub async fn exec(
    ctl: &Controller,
    vn: &str,
    node: &str,
    argv: &[String],
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let what = format!("exec in vn {vn} node {node}");
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
            vn: vn.into(),
            node: node.into(),
            argv: argv.to_vec(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            ..Default::default()
        })),
    })
    .await?;
    drop(tx);
    let call_timeout = timeout + Duration::from_secs(10);
    let mut out = ctl.exec(rx, Some(call_timeout), &what).await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let m = out.message().await.map_err(|s| rpc_error(&what, s))?;
        match m.and_then(|m| m.msg) {
            Some(pb::exec_response::Msg::Stdout(d)) => stdout.extend_from_slice(&d),
            Some(pb::exec_response::Msg::Stderr(d)) => stderr.extend_from_slice(&d),
            Some(pb::exec_response::Msg::Exit(e)) => {
                return Ok(Captured {
                    code: e.exit_code,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                });
            }
            None => anyhow::bail!("{what}: the controller ended the call without an exit"),
        }
    }
}

/// One end of a virtual link: the node and its address on the link (no prefix length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub node: String,
    pub addr: String,
}

/// A virtual link of a VN as the controller placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub a: End,
    pub b: End,
    pub bandwidth_mbps: u64,
}

impl Link {
    pub fn name(&self) -> String {
        format!("{}-{}", self.a.node, self.b.node)
    }
}

/// The links of `vn` that have addresses at both ends, in spec order.
pub fn links(vn: &pb::VirtualNetwork) -> Vec<Link> {
    vn.links
        .iter()
        .filter(|l| l.endpoints.len() == 2 && l.addresses.len() == 2)
        .map(|l| {
            let end = |i: usize| End {
                node: l.endpoints[i].clone(),
                addr: l.addresses[i]
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            };
            Link {
                a: end(0),
                b: end(1),
                bandwidth_mbps: l.bandwidth_mbps,
            }
        })
        .collect()
}

/// The average RTT of busybox ping's summary (`round-trip min/avg/max = 0.1/0.2/0.3 ms`).
pub fn ping_rtt(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    let nums = line.split('=').nth(1)?.trim();
    nums.split('/').nth(1)?.trim().parse().ok()
}

/// One ping from `from` to `to` (one echo, 2 s to answer, up to `tries` attempts: the first
/// may wait for neighbour resolution): the RTT in ms, or why not.
pub async fn ping(
    ctl: &Controller,
    vn: &str,
    from: &str,
    to: &str,
    tries: u32,
) -> Result<f64, String> {
    let argv: Vec<String> = ["busybox", "ping", "-c", "1", "-W", "2", to]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut last = String::new();
    for _ in 0..tries.max(1) {
        match exec(ctl, vn, from, &argv, Duration::from_secs(5)).await {
            Ok(c) if c.code == 0 => {
                return ping_rtt(&c.stdout).ok_or_else(|| format!("no RTT in {:?}", c.stdout));
            }
            Ok(c) => {
                let said = c
                    .stderr
                    .lines()
                    .chain(c.stdout.lines())
                    .last()
                    .unwrap_or("");
                last = format!("no answer (exit {}: {said})", c.code);
            }
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(last)
}

/// One row of `pingall`.
#[derive(Debug, Clone, PartialEq)]
pub struct PingRow {
    pub link: String,
    pub from: String,
    pub to: String,
    pub addr: String,
    pub result: Result<f64, String>,
}

/// Pings over every addressed link of `vn`, both ways.
pub async fn pingall(ctl: &Controller, vn: &pb::VirtualNetwork, tries: u32) -> Vec<PingRow> {
    let mut rows = Vec::new();
    for l in links(vn) {
        for (from, to) in [(&l.a, &l.b), (&l.b, &l.a)] {
            let result = ping(ctl, &vn.name, &from.node, &to.addr, tries).await;
            rows.push(PingRow {
                link: l.name(),
                from: from.node.clone(),
                to: to.node.clone(),
                addr: to.addr.clone(),
                result,
            });
        }
    }
    rows
}

/// Pings from `a` to `b` over `link` until one answers, for at most `within`: the time it took.
pub async fn first_ping(
    ctl: &Controller,
    vn: &str,
    link: &Link,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if ping(ctl, vn, &link.a.node, &link.b.addr, 1).await.is_ok() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The receiver's rate of an `iperf3 -J` report, Mbit/s.
pub fn iperf_mbps(json: &str) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("iperf3 did not print JSON ({e}): {:.200}", json))?;
    if let Some(err) = v["error"].as_str() {
        anyhow::bail!("iperf3: {err}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
        .ok_or_else(|| anyhow::anyhow!("iperf3 report without end.sum_received"))
}

/// iperf3 port used by the probes.
pub const IPERF_PORT: &str = "5201";

/// One TCP stream from `client` to the server side of `link` for `seconds`: Mbit/s received.
/// The server is a one-off `iperf3 -s -1` in `server`, run by a concurrent exec.
pub async fn iperf(
    ctl: &Controller,
    vn: &str,
    server: &End,
    client: &End,
    seconds: u32,
) -> anyhow::Result<f64> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let budget = Duration::from_secs(u64::from(seconds) + 20);
    let srv_argv = s(&["iperf3", "-s", "-1", "-p", IPERF_PORT]);
    let (c2, vn2, node2) = (ctl.clone(), vn.to_owned(), server.node.clone());
    let srv = tokio::spawn(async move { exec(&c2, &vn2, &node2, &srv_argv, budget).await });
    let secs = seconds.to_string();
    let cli_argv = s(&[
        "iperf3",
        "-c",
        &server.addr,
        "-p",
        IPERF_PORT,
        "-t",
        &secs,
        "-J",
    ]);
    let mut result = Err(anyhow::anyhow!("iperf3 client did not run"));
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = exec(ctl, vn, &client.node, &cli_argv, budget).await?;
        result = iperf_mbps(&c.stdout);
        let refused = result
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("refused"));
        if !refused {
            break;
        }
    }
    if result.is_err() {
        srv.abort();
    } else if let Ok(Err(e)) = srv.await {
        tracing::debug!("iperf3 server in {}: {e:#}", server.node);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_and_iperf_output() {
        let out = "PING 10.0.0.2 (10.0.0.2): 56 data bytes\n64 bytes from 10.0.0.2: seq=0 \
                   ttl=64 time=0.071 ms\n\n--- 10.0.0.2 ping statistics ---\n1 packets \
                   transmitted, 1 packets received, 0% packet loss\nround-trip min/avg/max = \
                   0.071/0.082/0.090 ms\n";
        assert_eq!(ping_rtt(out), Some(0.082));
        assert_eq!(ping_rtt("1 packets transmitted, 0 packets received"), None);
        let j = r#"{"end": {"sum_received": {"bits_per_second": 48500000.0}}}"#;
        assert!((iperf_mbps(j).unwrap() - 48.5).abs() < 1e-9);
        let e = iperf_mbps(r#"{"error": "unable to connect to server: Connection refused"}"#);
        assert!(e.unwrap_err().to_string().contains("refused"));
        assert!(iperf_mbps("garbage").is_err());
    }

    #[test]
    fn links_need_addresses_at_both_ends() {
        let vn = pb::VirtualNetwork {
            name: "x".into(),
            links: vec![
                pb::LinkPlacement {
                    endpoints: vec!["a".into(), "b".into()],
                    addresses: vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()],
                    bandwidth_mbps: 20,
                    ..Default::default()
                },
                pb::LinkPlacement {
                    endpoints: vec!["b".into(), "c".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let l = links(&vn);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name(), "a-b");
        assert_eq!(l[0].b.addr, "10.0.0.2");
        assert_eq!(l[0].bandwidth_mbps, 20);
    }
}
