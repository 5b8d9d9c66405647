//! The image catalogue: hosts report their guest images, `Substrate.ListImages` lists them with
//! their hosts, Create refuses a `vm` node whose image no host holds (naming the offer, leaving
//! nothing), and a guest is placed only on a host that holds its image.

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

/// h1 holds `default`, h2 `default` and `debian`, h3 nothing.
async fn agents(h: &Harness) -> Vec<StandIn> {
    let offers = [
        vec![image("default", "x86_64")],
        vec![image("default", "x86_64"), image("debian", "x86_64")],
        vec![],
    ];
    let mut out = Vec::new();
    for (i, images) in offers.into_iter().enumerate() {
        let mut cfg = StandInConfig::new(
            &format!("h{}", i + 1),
            &format!("10.77.0.{}", i + 2),
            100,
            4096,
        );
        cfg.images = images;
        let a = StandIn::connect(&h.endpoint(), cfg, Behaviour::Ready)
            .await
            .unwrap();
        a.wait_desired(std::time::Duration::from_secs(10), |_| true)
            .await
            .expect("desired");
        out.push(a);
    }
    out
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
    let before = h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ["h1", "h2", "h3"].map(|id| ix.generation(id)),
        )
    });
    let mut s = chain("guests", 5, 5);
    s.nodes[1] = vm("b", "windows");
    let e = c.create(req("red", create(s))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        "spec.nodes[1] (b): image windows is held by no host (the hosts offer: \
         debian (kernel, x86_64) on h2; default (kernel, x86_64) on h1, h2)"
    );
    let after = h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ["h1", "h2", "h3"].map(|id| ix.generation(id)),
        )
    });
    assert_eq!(before, after);

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
