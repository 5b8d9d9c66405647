//! `vnctl watch [NAME] [-o json]`: follow the events of the caller's VNs until interrupted.

use std::io::Write;

use serde::Serialize;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::output::{event_kind, timestamp, vn_state};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchFormat {
    /// One aligned line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Follow the events of your VNs (all, or one by name): a snapshot first, then changes.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only this VN.
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = WatchFormat::Text)]
    pub output: WatchFormat,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    time: String,
    vn: &'a str,
    event: &'static str,
    state: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

fn view(e: &pb::VnEvent) -> EventView<'_> {
    EventView {
        time: timestamp(e.unix_ms),
        vn: &e.name,
        event: event_kind(e.kind),
        state: vn_state(e.state),
        host: &e.host,
        message: &e.message,
    }
}

/// The text form of one event, in fixed-width columns (a stream cannot be aligned afterwards).
pub fn text_line(e: &pb::VnEvent) -> String {
    let v = view(e);
    format!(
        "{:<20}  {:<16}  {:<9}  {:<12}  {:<8}  {}",
        v.time,
        v.vn,
        v.event,
        v.state,
        if v.host.is_empty() { "-" } else { v.host },
        v.message
    )
    .trim_end()
    .to_owned()
}

/// How long `watch` keeps trying to reach a controller again after it lost the stream (a
/// failover or a restart) before it gives up.
const RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl WatchArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            // A named VN must be one of the caller's (the API would wait for its creation).
            if let Some(name) = &self.name {
                ctl.vns()
                    .get(pb::GetVnRequest { name: name.clone() })
                    .await
                    .map_err(|s| rpc_error(&format!("watch vn {name}"), s))?;
            }
            if self.output == WatchFormat::Text {
                println!(
                    "{:<20}  {:<16}  {:<9}  {:<12}  {:<8}  MESSAGE",
                    "TIME", "VN", "EVENT", "STATE", "HOST"
                );
            }
            // The last event's sequence number: after a lost stream, the watch resumes there
            // on whichever replica answers, so nothing is missed or shown twice.
            let mut after = 0;
            let mut ctl = Some(ctl);
            loop {
                let c = match ctl.take() {
                    Some(c) => c,
                    None => reconnect(opts).await?,
                };
                match self.follow(&c, &mut after).await? {
                    Ended::Interrupted => return Ok(()),
                    Ended::Lost(why) => {
                        eprintln!("vnctl: watch: {why}; resuming after event {after}");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        })
    }

    /// Prints events of one stream until it ends.
    async fn follow(&self, ctl: &Controller, after: &mut u64) -> anyhow::Result<Ended> {
        let mut stream = match ctl
            .vns()
            .watch(pb::WatchVnsRequest {
                name: self.name.clone().unwrap_or_default(),
                after_seq: *after,
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) if lost(&s) => return Ok(Ended::Lost(s.message().to_string())),
            Err(s) => return Err(rpc_error("watch", s)),
        };
        let mut out = std::io::stdout();
        loop {
            let ev = tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(Ended::Interrupted),
                m = stream.message() => m,
            };
            let ev = match ev {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    let why = format!("the controller at {} ended the watch", ctl.addr());
                    return Ok(Ended::Lost(why));
                }
                Err(s) if lost(&s) => return Ok(Ended::Lost(s.message().to_string())),
                Err(s) => return Err(rpc_error("watch", s)),
            };
            *after = ev.seq;
            match self.output {
                WatchFormat::Text => writeln!(out, "{}", text_line(&ev))?,
                WatchFormat::Json => writeln!(out, "{}", serde_json::to_string(&view(&ev))?)?,
            }
            out.flush()?;
        }
    }
}

enum Ended {
    Interrupted,
    /// The stream was lost (the controller went away or stepped down): resume.
    Lost(String),
}

/// Whether a failed watch may resume elsewhere: the controller went away, or the connection.
fn lost(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Connects again (to the leader when several replicas are configured), for up to 30 s.
async fn reconnect(opts: &ControllerOpts) -> anyhow::Result<Controller> {
    let deadline = tokio::time::Instant::now() + RESUME_FOR;
    loop {
        match Controller::connect(opts).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_columns() {
        let e = pb::VnEvent {
            kind: pb::VnEventKind::HostProgress as i32,
            name: "red-net".into(),
            state: pb::VnState::Provisioning as i32,
            host: "h2".into(),
            message: "slice ready".into(),
            unix_ms: 1_700_000_000_000,
            seq: 7,
        };
        let l = text_line(&e);
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "2023-11-14T22:13:20Z",
                "red-net",
                "HOST",
                "PROVISIONING",
                "h2",
                "slice",
                "ready"
            ]
        );
        let j: serde_json::Value = serde_json::to_value(view(&e)).unwrap();
        assert_eq!(j["event"], "HOST");
        assert_eq!(j["host"], "h2");
    }
}
