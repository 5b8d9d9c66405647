//! `VirtualNetworks.Console` against the in-process controller with stand-in agents: routing to
//! the guest's host, provider isolation, errors for nodes that are not guests, interactive input,
//! the stop sent when the caller leaves, and the end when the host goes away.

mod common;

use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

fn spec() -> pb::VnSpec {
    let mut vm = node("vm", 10);
    vm.kind = pb::NodeKind::Vm as i32;
    vm.memory_mb = 128;
    vm.host = "h2".into();
    let mut ns = node("ns", 10);
    ns.host = "h1".into();
    pb::VnSpec {
        name: "lab".into(),
        nodes: vec![ns, vm],
        links: vec![link("ns", "vm", 10)],
        ..Default::default()
    }
}

fn open(node: &str, tail: Option<u32>, follow: bool, interactive: bool) -> pb::ConsoleRequest {
    pb::ConsoleRequest {
        msg: Some(pb::console_request::Msg::Open(pb::ConsoleOpen {
            vn: "lab".into(),
            node: node.into(),
            tail_bytes: tail,
            follow,
            interactive,
        })),
    }
}

fn input(data: &str) -> pb::ConsoleRequest {
    pb::ConsoleRequest {
        msg: Some(pb::console_request::Msg::Input(data.as_bytes().to_vec())),
    }
}

/// Opens a Console call; the sender feeds later request messages.
async fn call(
    c: &mut VirtualNetworksClient<Channel>,
    provider: &str,
    first: pb::ConsoleRequest,
) -> Result<
    (
        mpsc::Sender<pb::ConsoleRequest>,
        tonic::Streaming<pb::ConsoleResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let resp = c.console(req(provider, ReceiverStream::new(rx))).await?;
    Ok((tx, resp.into_inner()))
}

/// Everything until the stream ends: the output and the final status.
async fn drain(
    mut s: tonic::Streaming<pb::ConsoleResponse>,
) -> (String, Result<(), tonic::Status>) {
    let mut out = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(m)) => out.push_str(&String::from_utf8_lossy(&m.data)),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn console_is_relayed_to_the_guests_host() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(2, 1000, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    c.create(req("red", create(spec()))).await.unwrap();
    let vn = wait_state(&mut c, "red", "lab", pb::VnState::Ready).await;
    let vm_id = vn
        .nodes
        .iter()
        .find(|n| n.node == "vm")
        .unwrap()
        .node_id
        .clone();

    // The tail (default size), then the end: only the guest's host was asked.
    let (_tx, s) = call(&mut c, "red", open("vm", None, false, false))
        .await
        .unwrap();
    let (out, end) = drain(s).await;
    assert_eq!(out, format!("console of {vm_id} (tail 65536)\n"));
    end.unwrap();
    let (_tx, s) = call(&mut c, "red", open("vm", Some(100), false, false))
        .await
        .unwrap();
    assert_eq!(drain(s).await.0, format!("console of {vm_id} (tail 100)\n"));
    assert!(agents[0].console_messages().is_empty());
    assert_eq!(agents[1].console_messages().len(), 2);

    // Another provider does not see the VN; a netns node has no console; unknown nodes.
    let e = call(&mut c, "blue", open("vm", None, false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = call(&mut c, "red", open("ns", None, false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message().contains("console is for vm nodes") && e.message().contains("ns"),
        "{e}"
    );
    let e = call(&mut c, "red", open("ghost", None, false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("ghost"), "{e}");
    // Malformed calls.
    let e = call(&mut c, "red", input("ls\n")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("ConsoleOpen"), "{e}");
    let e = call(&mut c, "red", open("vm", Some(2 << 20), false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("tail_bytes"), "{e}");
    assert_eq!(
        agents[1].console_messages().len(),
        2,
        "nothing more reached the agent"
    );

    // Interactive: input reaches the agent (the stand-in echoes it); leaving stops the session.
    let (tx, mut s) = call(&mut c, "red", open("vm", Some(0), false, true))
        .await
        .unwrap();
    let first = s.message().await.unwrap().unwrap();
    assert_eq!(
        first.data,
        format!("console of {vm_id} (tail 0)\n").into_bytes()
    );
    tx.send(input("uname -a\n")).await.unwrap();
    let echo = s.message().await.unwrap().unwrap();
    assert_eq!(echo.data, b"uname -a\n");
    let started = agents[1].console_messages();
    let Some(pb::controller_message::Msg::ConsoleStart(st)) = started.get(2) else {
        panic!("{started:?}")
    };
    assert!(st.follow && st.interactive && st.node_id == vm_id, "{st:?}");
    let session = st.session_id;
    drop(s);
    drop(tx);
    wait_for("ConsoleStop after the caller left", || {
        agents[1].console_messages().iter().any(
            |m| matches!(m, pb::controller_message::Msg::ConsoleStop(x) if x.session_id == session),
        )
    })
    .await;

    // Input to a session that only follows is refused.
    let (tx, mut s) = call(&mut c, "red", open("vm", Some(0), true, false))
        .await
        .unwrap();
    s.message().await.unwrap().unwrap();
    tx.send(input("reboot\n")).await.unwrap();
    let e = s.message().await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("interactive"), "{e}");
    assert!(
        !agents[1].console_messages().iter().any(
            |m| matches!(m, pb::controller_message::Msg::ConsoleInput(i) if i.data == b"reboot\n")
        ),
        "input of a follow-only session reached the agent"
    );

    // A follower learns that the host went away.
    let (_tx, mut s) = call(&mut c, "red", open("vm", Some(0), true, false))
        .await
        .unwrap();
    s.message().await.unwrap().unwrap();
    let mut agents = agents;
    drop(agents.pop());
    let (_, end) = drain(s).await;
    let e = end.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("h2"), "{e}");
    // And a new call says the host is not attached.
    let e = call(&mut c, "red", open("vm", None, false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    h.stop().await;
}
