//! The core stays pure, and its modules form layers: no dependency on gRPC, protobuf, a storage
//! engine, an async runtime or the controller; no reading of the clock; no two modules that
//! import each other, directly or through others. (The compiler enforces the dependencies
//! that `Cargo.toml` lists; this test keeps the list itself honest.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Each module of `src/` and the crate modules its code outside `#[cfg(test)]` names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    let src = manifest_dir().join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for m in &modules {
        let text = std::fs::read_to_string(src.join(format!("{m}.rs"))).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut deps = BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != *m {
                    deps.insert(name);
                }
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in &g[m] {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = imports();
    assert!(graph.len() > 10, "modules found: {graph:?}");
    assert!(graph["index"].contains("frame"), "the scan sees imports");
    assert_eq!(cycle(&graph), None, "an import circle between core modules");
    let mut circular = graph.clone();
    circular.get_mut("model").unwrap().insert("index".into());
    assert!(cycle(&circular).is_some(), "the check finds a circle");
}

#[test]
fn the_core_depends_on_no_transport_storage_runtime_or_clock() {
    let manifest = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table")
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    assert!(deps.contains(&"embedding"), "dependencies read: {deps:?}");
    for banned in [
        "tonic",
        "prost",
        "vnet-proto",
        "redb",
        "tokio",
        "vn-controller",
    ] {
        assert!(!deps.contains(&banned), "vn-core depends on {banned}");
    }
    for m in imports().keys() {
        let text = std::fs::read_to_string(manifest_dir().join(format!("src/{m}.rs"))).unwrap();
        for clock in ["SystemTime::now", "Instant::now"] {
            assert!(!text.contains(clock), "{m}.rs reads the clock ({clock})");
        }
    }
}
