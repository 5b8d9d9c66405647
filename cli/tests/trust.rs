//! Trust on the testbed: the real controller (TLS, tokens) and the real agents (host
//! certificates).
//!
//! `providers_and_hosts_prove_who_they_are` brings up a private 3-host testbed and shows:
//! - without a credential every RPC answers UNAUTHENTICATED (and AgentControl without a host
//!   certificate too);
//! - provider blue (its own credential) cannot get, describe, watch, exec into (the streamed
//!   `Exec` too), console into or delete red's VN: NOT_FOUND; `--provider red` with blue's credential is refused; a revoked
//!   and an expired token are refused;
//! - a client with h2's certificate claiming h1 (on `Attach` and on `AgentControl.Exec`), one with a CA-signed certificate for a host the
//!   topology does not list, and h1's own certificate with an out-of-range generation cannot
//!   attach, while the real h1 stays connected, red's VN stays READY and a new VN on h1 becomes
//!   READY (h1 still gets desired state);
//! - a create beyond the node quota answers RESOURCE_EXHAUSTED naming the quota and leaves
//!   nothing; nodes without demands count.
//!
//! Root test: prints `SKIP` without root, unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Bed, VNCTL, ok, private_bed, testbed_lock, text};
use futures::StreamExt as _;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vnet_proto::v1 as pb;
use vnet_proto::v1::admin_client::AdminClient;
use vnet_proto::v1::agent_control_client::AgentControlClient;
use vnet_proto::v1::substrate_client::SubstrateClient;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

/// vnctl with the config file `conf` only (no environment overrides).
fn as_conf(conf: &Path, args: &[&str]) -> Output {
    Command::new(VNCTL)
        .env_remove("VNET_PROVIDER")
        .env_remove("VNET_CONTROLLER")
        .env("VNET_CONFIG", conf)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn refused(out: &Output, want: &str, what: &str) {
    assert!(!out.status.success(), "{what} succeeded: {out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(want), "{what}: {want:?} not in {err:?}");
}

async fn channel(bed: &Bed, identity: Option<(String, String)>) -> Channel {
    let ca = std::fs::read(bed.pki().join("ca.crt")).unwrap();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(bed.ctl.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One Attach with `hello`; the status it ends with (Ok: the controller accepted it).
async fn attach(ch: Channel, hello: pb::AgentHello) -> Result<(), tonic::Status> {
    let mut c = AgentControlClient::new(ch);
    let msg = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(hello)),
    };
    // A stream that stays open: the controller answers the hello before it ends.
    let out = futures::stream::iter(vec![msg]).chain(futures::stream::pending());
    let mut s = c.attach(out).await?.into_inner();
    s.message().await.map(|_| ())
}

fn hello(host: &str, generation: u64) -> pb::AgentHello {
    pb::AgentHello {
        host_id: host.into(),
        underlay_address: "10.99.0.1".into(),
        capacity: Some(pb::Resources {
            cpu: 1_000_000,
            memory_mb: 1 << 30,
        }),
        applied_generation: generation,
        ..Default::default()
    }
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn exec_start(vn: &str, node: &str) -> pb::ExecRequest {
    pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
            vn: vn.into(),
            node: node.into(),
            argv: vec!["true".into()],
            ..Default::default()
        })),
    }
}

/// One `AgentControl.Exec` opened as `host` for a command nobody asked for; the status it
/// ends with.
async fn agent_exec(ch: Channel, host: &str) -> Result<(), tonic::Status> {
    let mut c = AgentControlClient::new(ch);
    let open = pb::ExecUp {
        msg: Some(pb::exec_up::Msg::Open(pb::ExecAgentOpen {
            host_id: host.into(),
            request_id: 1,
        })),
    };
    let out = futures::stream::iter(vec![open]).chain(futures::stream::pending());
    let mut s = c.exec(out).await?.into_inner();
    s.message().await.map(|_| ())
}

/// Blue's streamed exec (gRPC, its own token) into red's node: NOT_FOUND, as if red's VN did
/// not exist.
async fn blue_exec_is_not_found(bed: &Bed, conf: &Path) {
    let text = std::fs::read_to_string(conf).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_string())
        .expect("token in blue's config");
    let mut v = VirtualNetworksClient::new(channel(bed, None).await);
    let mut req = tonic::Request::new(futures::stream::iter(vec![exec_start("red-net", "a")]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let e = match v.exec(req).await {
        Ok(r) => r.into_inner().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

/// Every RPC without a credential: UNAUTHENTICATED.
async fn anonymous_is_refused(bed: &Bed) {
    let ch = channel(bed, None).await;
    let mut v = VirtualNetworksClient::new(ch.clone());
    let mut s = SubstrateClient::new(ch.clone());
    let mut a = AdminClient::new(ch.clone());
    let codes = vec![
        (
            "Create",
            v.create(pb::CreateVnRequest::default()).await.err(),
        ),
        (
            "Get",
            v.get(pb::GetVnRequest {
                name: "red-net".into(),
            })
            .await
            .err(),
        ),
        ("List", v.list(pb::ListVnsRequest {}).await.err()),
        (
            "Delete",
            v.delete(pb::DeleteVnRequest::default()).await.err(),
        ),
        ("Watch", v.watch(pb::WatchVnsRequest::default()).await.err()),
        (
            "Exec",
            v.exec(futures::stream::iter(vec![exec_start("red-net", "a")]))
                .await
                .err(),
        ),
        (
            "Console",
            v.console(futures::stream::iter(vec![pb::ConsoleRequest::default()]))
                .await
                .err(),
        ),
        (
            "ListHosts",
            s.list_hosts(pb::ListHostsRequest {}).await.err(),
        ),
        (
            "ListImages",
            s.list_images(pb::ListImagesRequest {}).await.err(),
        ),
        (
            "ListLinks",
            s.list_links(pb::ListLinksRequest {}).await.err(),
        ),
        (
            "GetTopology",
            s.get_topology(pb::GetTopologyRequest {}).await.err(),
        ),
        (
            "CreateCredential",
            a.create_credential(pb::CreateCredentialRequest::default())
                .await
                .err(),
        ),
        (
            "RevokeCredential",
            a.revoke_credential(pb::RevokeCredentialRequest::default())
                .await
                .err(),
        ),
        (
            "SetQuota",
            a.set_quota(pb::SetQuotaRequest::default()).await.err(),
        ),
        (
            "GetQuota",
            a.get_quota(pb::GetQuotaRequest::default()).await.err(),
        ),
        ("Attach", attach(ch.clone(), hello("h1", 0)).await.err()),
        (
            "AgentControl.Exec",
            agent_exec(ch.clone(), "h1").await.err(),
        ),
    ];
    for (rpc, e) in codes {
        let e = e.unwrap_or_else(|| panic!("{rpc} without a credential succeeded"));
        assert_eq!(e.code(), Code::Unauthenticated, "{rpc}: {e:?}");
    }
}

/// Forged and out-of-range attaches fail; the real h1 is untouched.
async fn hosts_are_bound_to_certificates(bed: &Bed) {
    let pki = bed.pki();
    // h2's certificate claiming h1.
    let h2 = Some((file(&pki, "host-h2.crt"), file(&pki, "host-h2.key")));
    let e = attach(channel(bed, h2).await, hello("h1", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("names host h2"), "{e:?}");
    // h2's certificate opening an exec as h1.
    let h2 = Some((file(&pki, "host-h2.crt"), file(&pki, "host-h2.key")));
    let e = agent_exec(channel(bed, h2).await, "h1").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("names host h2"), "{e:?}");
    // A certificate from the CA for a host the topology does not list.
    let ca_key = rcgen::KeyPair::from_pem(&file(&pki, "ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&file(&pki, "ca.crt"), ca_key).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://vnet/host/evil1".try_into().unwrap(),
    ));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let evil = Some((cert.pem(), key.serialize_pem()));
    let e = attach(channel(bed, evil).await, hello("evil1", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("not in the operator's topology"),
        "{e:?}"
    );
    // h1's own certificate, a generation near the end of the range.
    let h1 = Some((file(&pki, "host-h1.crt"), file(&pki, "host-h1.key")));
    let e = attach(channel(bed, h1).await, hello("h1", u64::MAX - 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("applied_generation"), "{e:?}");
}

#[test]
fn providers_and_hosts_prove_who_they_are() {
    let Some(bed) = private_bed(0, &[], "tr", 249) else {
        return;
    };
    let _lock = testbed_lock();
    let before = bed.snapshot();
    let down = bed.up();
    let admin = bed.config();
    let dir = tempfile::tempdir().unwrap();
    let conf = |p: &str| dir.path().join(format!("{p}.conf"));
    for (p, extra) in [("red", None), ("blue", None), ("short", Some("1s"))] {
        let path = conf(p);
        let mut args = vec!["admin", "credentials", "create", "--provider", p];
        args.extend(["--out", path.to_str().unwrap()]);
        if let Some(ttl) = extra {
            args.extend(["--ttl", ttl]);
        }
        ok(as_conf(&admin, &args), "credentials create");
    }
    let spec = bed.spec(
        "red-net",
        "name: red-net\nnodes:\n  - {name: a, cpu: 10, memory: 64, host: h1}\n  - {name: b, cpu: 10, memory: 64, host: h2}\nlinks:\n  - {endpoints: [a, b], bandwidth: 10, addresses: [10.0.1.1/24, 10.0.1.2/24]}\n",
    );
    let red = conf("red");
    let blue = conf("blue");
    ok(
        as_conf(
            &red,
            &[
                "apply",
                "-f",
                spec.to_str().unwrap(),
                "--wait",
                "--timeout",
                "60s",
            ],
        ),
        "red apply",
    );

    // 1. Identity from the credential only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(anonymous_is_refused(&bed));
    for args in [
        vec!["get", "vn", "red-net"],
        vec!["describe", "vn", "red-net"],
        vec!["watch", "red-net"],
        vec!["exec", "red-net", "a", "--", "true"],
        vec!["console", "red-net", "a"],
        vec!["delete", "vn", "red-net"],
    ] {
        refused(
            &as_conf(&blue, &args),
            "not found",
            &format!("blue {args:?}"),
        );
    }
    rt.block_on(blue_exec_is_not_found(&bed, &blue));
    refused(
        &as_conf(&blue, &["--provider", "red", "get", "vn", "red-net"]),
        "may not act for provider red",
        "blue --provider red",
    );
    std::thread::sleep(Duration::from_millis(1500));
    refused(
        &as_conf(&conf("short"), &["get", "vns"]),
        "expired",
        "expired token",
    );
    ok(
        as_conf(
            &admin,
            &["admin", "credentials", "revoke", "--provider", "blue"],
        ),
        "revoke blue",
    );
    refused(&as_conf(&blue, &["get", "vns"]), "revoked", "revoked token");
    let got = ok(
        as_conf(&red, &["get", "vn", "red-net", "-o", "json"]),
        "red get",
    );
    assert!(
        got.contains("\"READY\"") || got.contains("Ready") || got.contains("ready"),
        "{got}"
    );

    // 2. Hosts bound to their certificates; h1 keeps working.
    rt.block_on(hosts_are_bound_to_certificates(&bed));
    let hosts = ok(
        as_conf(&admin, &["get", "hosts", "-o", "json"]),
        "get hosts",
    );
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    let h1 = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "h1")
        .unwrap();
    assert_eq!(h1["connected"], true, "{h1}");
    let again = bed.spec(
        "red-h1",
        "name: red-h1\nnodes:\n  - {name: a, cpu: 10, memory: 64, host: h1}\n",
    );
    ok(
        as_conf(
            &red,
            &[
                "apply",
                "-f",
                again.to_str().unwrap(),
                "--wait",
                "--timeout",
                "60s",
            ],
        ),
        "a new VN on h1 after the forged attaches",
    );
    let vn = ok(
        as_conf(&red, &["get", "vn", "red-net", "-o", "json"]),
        "red get",
    );
    let vn: serde_json::Value = serde_json::from_str(&vn).unwrap();
    assert_eq!(
        vn["state"].as_str().map(str::to_lowercase).as_deref(),
        Some("ready"),
        "{vn}"
    );

    // 3. Quotas: red holds 3 nodes; a limit of 4 refuses two more nodes without demands.
    ok(
        as_conf(&admin, &["admin", "quota", "set", "red", "--nodes", "4"]),
        "quota set",
    );
    let empty = bed.spec(
        "empty",
        "name: empty\nnodes:\n  - {name: x}\n  - {name: y}\n",
    );
    refused(
        &as_conf(&red, &["apply", "-f", empty.to_str().unwrap()]),
        "nodes limit 4, in use 3, this VN asks 2",
        "over the node quota",
    );
    let list = ok(as_conf(&red, &["get", "vns", "-o", "json"]), "red list");
    assert!(!list.contains("\"empty\""), "{list}");
    let quota = ok(as_conf(&red, &["get", "quota"]), "get quota");
    assert!(
        quota.contains("nodes") && quota.contains('4') && quota.contains('3'),
        "{quota}"
    );

    for n in ["red-net", "red-h1"] {
        ok(as_conf(&red, &["delete", "vn", n, "--wait"]), "delete");
    }
    down.finish(&before);
}
