//! The image catalogue: hosts report their guest images and the guest architectures they run,
//! `Substrate.ListImages` lists the images with their hosts, Create refuses a `vm` node whose
//! image no host holds or whose architecture no host runs (naming the offer, leaving nothing),
//! and a guest is placed only on a host that holds its image and runs its architecture.

mod common;

use common::*;
use tonic::Code;
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vnet_proto::v1 as pb;

fn image(name: &str, arch: &str) -> pb::GuestImage {
    pb::GuestImage {
        name: name.into(),
        format: "kernel".into(),
        arch: arch.into(),
        size_bytes: 1000,
        digest: format!("sha256:{name}"),
    }
}

fn vm(name: &str, image: &str) -> pb::NodeSpec {
    let mut n = node(name, 5);
    n.kind = pb::NodeKind::Vm as i32;
    n.memory_mb = 128;
    n.image = image.into();
    n
}

/// A stand-in agent `h{i}` holding `images` and running guests of `archs`.
async fn agent(h: &Harness, i: usize, images: Vec<pb::GuestImage>, archs: &[&str]) -> StandIn {
    let mut cfg = StandInConfig::new(&format!("h{i}"), &format!("10.77.0.{}", i + 1), 100, 4096);
    cfg.images = images;
    cfg.guest_archs = archs.iter().map(|a| a.to_string()).collect();
    let a = StandIn::connect(&h.endpoint(), cfg, Behaviour::Ready)
        .await
        .unwrap();
    a.wait_desired(std::time::Duration::from_secs(10), |_| true)
        .await
        .expect("desired");
    a
}

/// h1 holds `default`, h2 `default`, `debian` and the aarch64 image `arm` (but runs x86_64
/// guests only: no qemu-system-aarch64), h3 nothing.
async fn agents(h: &Harness) -> Vec<StandIn> {
    vec![
        agent(h, 1, vec![image("default", "x86_64")], &["x86_64"]).await,
        agent(
            h,
            2,
            vec![
                image("default", "x86_64"),
                image("debian", "x86_64"),
                image("arm", "aarch64"),
            ],
            &["x86_64"],
        )
        .await,
        agent(h, 3, vec![], &["x86_64"]).await,
    ]
}

/// What a refused Create must leave unchanged.
fn state(h: &Harness) -> impl PartialEq + std::fmt::Debug + use<> {
    h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ["h1", "h2", "h3"].map(|id| ix.generation(id)),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_listed_refused_and_placed() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = agents(&h).await;

    // The catalogue: each image with the hosts that hold it.
    let offers = h
        .substrate()
        .await
        .list_images(admin(pb::ListImagesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .images;
    let listed: Vec<(String, String, Vec<String>)> = offers
        .iter()
        .map(|o| {
            let i = o.image.clone().unwrap();
            (i.name, i.digest, o.hosts.clone())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("arm".into(), "sha256:arm".into(), vec!["h2".into()]),
            ("debian".into(), "sha256:debian".into(), vec!["h2".into()]),
            (
                "default".into(),
                "sha256:default".into(),
                vec!["h1".into(), "h2".into()]
            ),
        ]
    );

    // An unknown image: refused at Create, the offer named, nothing left.
    let mut c = h.vns().await;
    let before = state(&h);
    let mut s = chain("guests", 5, 5);
    s.nodes[1] = vm("b", "windows");
    let e = c.create(req("red", create(s))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        "spec.nodes[1] (b): image windows of architecture x86_64 is held by no host that runs \
         it (the hosts offer: arm (kernel, aarch64) on h2; debian (kernel, x86_64) on h2; \
         default (kernel, x86_64) on h1, h2; they run: x86_64 on h1, h2, h3)"
    );
    assert_eq!(before, state(&h));

    // An architecture no host runs (h2 holds an aarch64 image but cannot run it): refused at
    // Create, naming what the hosts run; nothing left.
    let mut s = chain("arm", 5, 5);
    s.nodes[1] = vm("b", "arm");
    s.nodes[1].arch = "aarch64".into();
    let e = c.create(req("red", create(s.clone()))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        "spec.nodes[1] (b): architecture aarch64 runs on no host (the hosts run: x86_64 on h1, \
         h2, h3)"
    );
    assert_eq!(before, state(&h));
    // An unknown architecture is refused at the edge.
    let mut bad = s.clone();
    bad.nodes[1].arch = "riscv64".into();
    let e = c.create(req("red", create(bad))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("arch \"riscv64\" is not x86_64 or aarch64"),
        "{e:?}"
    );
    // The node's architecture must be its image's: `default` is x86_64 only.
    let mut wrong = s.clone();
    wrong.nodes[1].image = "default".into();
    let _h4 = agent(&h, 4, vec![image("arm", "aarch64")], &["x86_64", "aarch64"]).await;
    let e = c.create(req("red", create(wrong))).await.unwrap_err();
    assert!(
        e.message().starts_with(
            "spec.nodes[1] (b): image default of architecture aarch64 is held by no host"
        ),
        "{e:?}"
    );
    assert!(
        e.message()
            .ends_with("they run: aarch64 on h4; x86_64 on h1, h2, h3, h4)"),
        "{e:?}"
    );
    assert_eq!(before, state(&h));
    // Once a host runs aarch64 and holds `arm`, the guest goes there (not to h2, which holds
    // the image but cannot run it).
    let vn = c.create(req("red", create(s))).await.unwrap().into_inner();
    let b = vn.nodes.iter().find(|p| p.node == "b").unwrap();
    assert_eq!(b.host, "h4", "{:?}", vn.nodes);
    // How the guest runs, as `describe` shows it: TCG (h4's probe found no KVM), aarch64 on
    // `virt`, virtio NICs.
    let got = c
        .get(req("red", pb::GetVnRequest { name: "arm".into() }))
        .await
        .unwrap()
        .into_inner();
    let b = got.nodes.iter().find(|p| p.node == "b").unwrap();
    assert_eq!(
        b.guest,
        Some(pb::GuestPlacement {
            accel: "tcg".into(),
            arch: "aarch64".into(),
            machine: "virt".into(),
            nic: "virtio".into(),
            image: "arm (kernel)".into(),
        })
    );
    let a = got.nodes.iter().find(|p| p.node == "a").unwrap();
    assert_eq!(a.guest, None);
    c.delete(req(
        "red",
        pb::DeleteVnRequest {
            name: "arm".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();

    // Pinned where the image is not: refused by the placement, naming the reason.
    let mut s = chain("pinned", 5, 5);
    s.nodes[1] = vm("b", "debian");
    s.nodes[1].host = "h1".into();
    let e = c.create(req("red", create(s))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // Guests land only where their image is: debian on h2, default on h1 or h2, never h3;
    // four VNs so that chance alone would have used h3 (it has the most room left).
    for k in 0..4 {
        let mut s = chain(&format!("guests{k}"), 5, 5);
        s.nodes[0] = vm("a", "debian");
        s.nodes[2] = vm("c", "default");
        let vn = c.create(req("red", create(s))).await.unwrap().into_inner();
        let host = |n: &str| {
            vn.nodes
                .iter()
                .find(|p| p.node == n)
                .map(|p| p.host.clone())
                .unwrap()
        };
        assert_eq!(host("a"), "h2", "{:?}", vn.nodes);
        assert_ne!(host("c"), "h3", "{:?}", vn.nodes);
    }
    h.stop().await;
}
