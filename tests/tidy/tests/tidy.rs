//! The tidy checks on the workspace, and the parsers and graph code they
//! rest on checked on small examples.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use basedata_tidy::{
    check_layering, crate_references, files_without_module_docs, find_cycles, has_module_docs, module_cycles,
    rust_files, Metadata,
};

fn metadata() -> &'static Metadata {
    static METADATA: OnceLock<Metadata> = OnceLock::new();
    // The directory cargo names when it runs the test, not the one compiled
    // in: a test binary is reused across checkouts of identical sources.
    METADATA.get_or_init(|| {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from);
        Metadata::load(&dir)
    })
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|item| format!("  {item}\n")).collect()
}

#[test]
fn every_file_opens_with_module_docs() {
    let meta = metadata();
    // A walk that found nothing would pass without checking anything.
    let files = rust_files(meta);
    assert!(
        files.iter().any(|f| f.ends_with("store/src/lib.rs")),
        "the walk missed store/src/lib.rs; found {} files",
        files.len()
    );
    let missing = files_without_module_docs(meta);
    assert!(
        missing.is_empty(),
        "{} files do not open with `//!` module docs:\n{}",
        missing.len(),
        list(missing.iter().map(|p| p.display()))
    );
}

#[test]
fn crates_below_the_http_edge_stay_below_it() {
    let layering = check_layering(metadata());
    assert!(
        layering.problems.is_empty(),
        "crates below the HTTP edge reach crates they must not (one shortest chain each; checked {}):\n{}",
        layering.checked.join(", "),
        list(&layering.problems)
    );
}

#[test]
fn no_module_cycles() {
    let cycles = module_cycles(metadata());
    assert!(
        cycles.is_empty(),
        "{} sets of top-level modules depend on each other in a circle \
         (under each, its uses of `crate::` and the files that make them):\n{}",
        cycles.len(),
        list(&cycles)
    );
}

#[test]
fn module_docs() {
    fn check(source: &str, expected: bool) {
        assert_eq!(has_module_docs(source), expected, "{source:?}");
    }
    check("//! Docs.\nfn f() {}", true);
    check("\n   \n//! Docs after blank lines.", true);
    check("  //! Indented.", true);
    check("// A plain comment.\n//! Docs.", false);
    check("/// Item docs.\nfn f() {}", false);
    check("use std::fs;\n//! Docs.", false);
    check("#![allow(dead_code)]\n//! Docs.", false);
    check("", false);
}

#[test]
fn crate_references_in_source() {
    fn check(source: &str, expected: &str) {
        let found: Vec<String> = crate_references(source).into_iter().collect();
        assert_eq!(found.join(" "), expected, "{source:?}");
    }
    check("use crate::a;", "a");
    check("use crate::a::b::C;", "a");
    check("use crate::{a, b::c};", "a b");
    check("use crate::{a::{b, c}, d};", "a d");
    check("use crate::{\n    a,\n    b::{c, d},\n};", "a b");
    check("use crate::{self, a as x};", "a");
    check("use crate :: a;", "a");
    check("let x = crate::a::f(crate::b::C);", "a b");
    check("$crate::a::f!()", "a");
    check("pub(crate) fn f() {}", "");
    check("mycrate::a::f(); crate_b::c();", "");
    check("let x = crate::a::f(); // crate::b", "a");
    check("/// See [crate::a].\nfn f() {}", "");
    check("//! Uses crate::a.", "");
    check("/* crate::a /* nested */ crate::b */ crate::c::f()", "c");
    check(r#"let s = "crate::a \" crate::b"; crate::c::f()"#, "c");
    check(r##"let s = r#"crate::a " crate::b"#; crate::c::f()"##, "c");
    check(r#"let c = '"'; crate::a::f(); let s = "crate::b";"#, "a");
    check(r#"let c = '\''; crate::a::f(); let s = "crate::b";"#, "a");
    check("fn f<'a>(x: &'a str) -> &'a str { crate::a::g(x) }", "a");
}

#[test]
fn cycle_finder() {
    // Edges as `from->to`, cycles as sorted modules, `|` between cycles.
    fn check(edges: &str, expected: &str) {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for edge in edges.split_whitespace() {
            let (from, to) = edge.split_once("->").expect("an edge is `from->to`");
            graph.entry(from.to_owned()).or_default().insert(to.to_owned());
        }
        let cycles: Vec<String> = find_cycles(&graph).iter().map(|c| c.join(" ")).collect();
        assert_eq!(cycles.join(" | "), expected, "{edges}");
    }
    check("", "");
    check("a->b", "");
    check("a->a", "");
    check("a->b a->c b->d c->d", "");
    check("a->b b->a", "a b");
    check("a->b b->c c->a", "a b c");
    check("a->b b->c c->b", "b c");
    check("a->b b->a c->d d->c", "a b | c d");
    check("a->b b->a b->c c->d d->c", "a b | c d");
    check("a->b b->c c->a c->d d->e e->d", "a b c | d e");
    check("d->c c->b b->a a->d x->a", "a b c d");
}

#[test]
fn dependency_chains() {
    // app -> lib -> hyper is a normal chain; the dev and build dependencies
    // on axum and h2 do not count.
    let json = serde_json::json!({
        "workspace_root": "/ws",
        "workspace_members": ["app", "tool"],
        "packages": [
            {"id": "app", "name": "app", "manifest_path": "/ws/app/Cargo.toml"},
            {"id": "tool", "name": "tool", "manifest_path": "/ws/tool/Cargo.toml"},
            {"id": "lib", "name": "lib", "manifest_path": "/r/lib/Cargo.toml"},
            {"id": "hyper", "name": "hyper", "manifest_path": "/r/hyper/Cargo.toml"},
            {"id": "axum", "name": "axum", "manifest_path": "/r/axum/Cargo.toml"},
            {"id": "h2", "name": "h2", "manifest_path": "/r/h2/Cargo.toml"},
        ],
        "resolve": {"nodes": [
            {"id": "app", "deps": [
                {"pkg": "lib", "dep_kinds": [{"kind": "dev"}, {"kind": null}]},
                {"pkg": "axum", "dep_kinds": [{"kind": "dev"}]},
                {"pkg": "h2", "dep_kinds": [{"kind": "build"}]},
            ]},
            {"id": "tool", "deps": [{"pkg": "axum", "dep_kinds": [{"kind": null}]}]},
            {"id": "lib", "deps": [{"pkg": "hyper", "dep_kinds": [{"kind": null}]}]},
            {"id": "hyper", "deps": [{"pkg": "h2", "dep_kinds": [{"kind": null}]}]},
            {"id": "axum", "deps": [{"pkg": "hyper", "dep_kinds": [{"kind": null}]}]},
            {"id": "h2", "deps": []},
        ]},
    });
    let meta = Metadata::from_json(&json);
    let web = |name: &str| ["hyper", "axum", "h2"].contains(&name);
    let chains: Vec<String> = meta.normal_paths("app", web).iter().map(|p| p.join(" -> ")).collect();
    assert_eq!(chains, ["app -> lib -> hyper", "app -> lib -> hyper -> h2"]);
    let chains: Vec<String> = meta.normal_paths("tool", web).iter().map(|p| p.join(" -> ")).collect();
    assert_eq!(
        chains,
        ["tool -> axum", "tool -> axum -> hyper", "tool -> axum -> hyper -> h2"]
    );
    assert!(
        meta.normal_paths("lib", web).is_empty(),
        "only workspace members are looked up"
    );
}
