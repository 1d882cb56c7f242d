//! Repository-wide checks, run as tests: every source file opens with module
//! docs, the crates below the HTTP edge stay free of the web stack, and no
//! crate's top-level modules depend on each other in a circle.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Directories inside member directories that belong to no workspace member
/// (relative to the workspace root): the fuzz targets are a workspace of
/// their own.
pub const EXCLUDED_DIRS: &[&str] = &["tests/fuzz"];

/// The crates below the HTTP edge, and whether each must already exist. A
/// crate that is not required is checked once it is a workspace member.
pub const LAYERED: &[(&str, bool)] = &[
    ("basedata-store", true),
    ("basedata-ingest", true),
    ("basedata-query", true),
    ("basedata-gen", false),
];

/// The web stack: servers, middleware, TLS, the cluster log's client and the
/// API description. Only the crates above the HTTP edge may link them.
pub const WEB_STACK: &[&str] = &[
    "axum",
    "axum-core",
    "hyper",
    "hyper-util",
    "tower",
    "tower-http",
    "tower-layer",
    "tower-service",
    "rustls",
    "tokio-rustls",
    "async-nats",
    "utoipa",
    "h2",
];

/// The crates above the HTTP edge.
pub const ABOVE_THE_EDGE: &[&str] = &["basedata-server", "basedata-tools"];

/// The layered crates that build on the store, so it must not depend on them.
pub const ABOVE_THE_STORE: &[&str] = &["basedata-ingest", "basedata-query", "basedata-gen"];

/// A workspace member.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Its package id.
    pub id: String,
    /// The directory of its `Cargo.toml`.
    pub dir: PathBuf,
}

/// What the checks need from `cargo metadata`.
#[derive(Debug)]
pub struct Metadata {
    pub workspace_root: PathBuf,
    pub members: Vec<Member>,
    /// Package id -> name.
    names: HashMap<String, String>,
    /// Package id -> ids of its normal (neither dev nor build) dependencies.
    normal_deps: HashMap<String, Vec<String>>,
}

impl Metadata {
    /// Runs `cargo metadata` for the workspace that contains `dir`.
    ///
    /// Not `--offline`: cargo metadata resolves for every platform, and
    /// offline it fails on any dependency of another platform that was never
    /// downloaded (building here does not fetch those). Without the flag it
    /// goes to the network only for such a crate, and `CARGO_NET_OFFLINE`
    /// still forbids even that.
    pub fn load(dir: &Path) -> Metadata {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(&cargo)
            .args(["metadata", "--format-version", "1"])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running `{} metadata`: {e}", cargo.to_string_lossy()));
        assert!(
            output.status.success(),
            "`cargo metadata` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let json: Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("`cargo metadata` printed no JSON: {e}"));
        Metadata::from_json(&json)
    }

    /// Reads the output of `cargo metadata --format-version 1`.
    pub fn from_json(json: &Value) -> Metadata {
        let mut names = HashMap::new();
        let mut dirs = HashMap::new();
        for package in array(json, "packages") {
            let id = string(package, "id").to_owned();
            let manifest = PathBuf::from(string(package, "manifest_path"));
            let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
            names.insert(id.clone(), string(package, "name").to_owned());
            dirs.insert(id, dir);
        }
        let members = array(json, "workspace_members")
            .iter()
            .map(|id| {
                let id = id.as_str().expect("workspace_members holds package ids");
                Member {
                    name: names[id].clone(),
                    id: id.to_owned(),
                    dir: dirs[id].clone(),
                }
            })
            .collect();
        let mut normal_deps = HashMap::new();
        for node in array(&json["resolve"], "nodes") {
            let deps = array(node, "deps")
                .iter()
                .filter(|dep| {
                    // A dependency can be normal and dev at once; it counts
                    // if any of its kinds is normal (null). Cargo before
                    // 1.41 gave no kinds: count those too.
                    dep.get("dep_kinds")
                        .and_then(Value::as_array)
                        .is_none_or(|kinds| kinds.iter().any(|kind| kind.get("kind").is_none_or(Value::is_null)))
                })
                .map(|dep| string(dep, "pkg").to_owned())
                .collect();
            normal_deps.insert(string(node, "id").to_owned(), deps);
        }
        Metadata {
            workspace_root: PathBuf::from(string(json, "workspace_root")),
            members,
            names,
            normal_deps,
        }
    }

    /// The workspace member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// For every package that the member `from` reaches through normal
    /// dependencies and whose name `wanted` accepts, the shortest chain of
    /// crate names leading there, in the order found.
    pub fn normal_paths(&self, from: &str, wanted: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
        let Some(start) = self.member(from).map(|m| &m.id) else {
            return Vec::new();
        };
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([start.as_str()]);
        let mut paths = Vec::new();
        while let Some(id) = queue.pop_front() {
            for dep in self.normal_deps.get(id).into_iter().flatten() {
                if dep == start || parent.contains_key(dep.as_str()) {
                    continue;
                }
                parent.insert(dep, id);
                queue.push_back(dep);
                if wanted(&self.names[dep]) {
                    let mut path = vec![self.names[dep].clone()];
                    let mut at = dep.as_str();
                    while let Some(&up) = parent.get(at) {
                        path.push(self.names[up].clone());
                        at = up;
                    }
                    path.reverse();
                    paths.push(path);
                }
            }
        }
        paths
    }

    /// `path` relative to the workspace root, for messages.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.workspace_root).unwrap_or(path)
    }
}

fn array<'a>(json: &'a Value, key: &str) -> &'a [Value] {
    json.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("`cargo metadata`: no array `{key}`"))
}

fn string<'a>(json: &'a Value, key: &str) -> &'a str {
    json.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("`cargo metadata`: no string `{key}`"))
}

// Module docs.

/// Every `.rs` file in the directories of the workspace members, sorted,
/// without build output and excluded directories.
pub fn rust_files(meta: &Metadata) -> Vec<PathBuf> {
    let excluded: Vec<PathBuf> = EXCLUDED_DIRS.iter().map(|d| meta.workspace_root.join(d)).collect();
    // Member directories nest (tests/ holds tests/tidy/): a set visits each file once.
    let mut files = BTreeSet::new();
    for member in &meta.members {
        walk(&member.dir, &excluded, &mut files);
    }
    files.into_iter().collect()
}

fn walk(dir: &Path, excluded: &[PathBuf], files: &mut BTreeSet<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let path = entry.path();
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if kind.is_dir() {
            if entry.file_name() != "target" && !excluded.contains(&path) {
                walk(&path, excluded, files);
            }
        } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
            files.insert(path);
        }
    }
}

/// Whether the first non-blank line of `source` is a `//!` doc line.
pub fn has_module_docs(source: &str) -> bool {
    source
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

/// The files of [`rust_files`] that do not open with module docs, relative
/// to the workspace root.
pub fn files_without_module_docs(meta: &Metadata) -> Vec<PathBuf> {
    rust_files(meta)
        .into_iter()
        .filter(|path| !has_module_docs(&read(path)))
        .map(|path| meta.relative(&path).to_path_buf())
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// Layering.

/// What [`check_layering`] looked at and what it found wrong.
#[derive(Debug, Default)]
pub struct Layering {
    /// The layered crates that are workspace members.
    pub checked: Vec<String>,
    /// One line per problem: a required crate that is missing, or a chain of
    /// normal dependencies from a layered crate to one it must not reach.
    pub problems: Vec<String>,
}

/// The crates that `krate`, one of [`LAYERED`], must not reach through
/// normal dependencies.
pub fn forbidden_dependencies(krate: &str) -> BTreeSet<&'static str> {
    let mut forbidden: BTreeSet<&str> = WEB_STACK.iter().chain(ABOVE_THE_EDGE).copied().collect();
    if krate == "basedata-store" {
        forbidden.extend(ABOVE_THE_STORE);
    }
    forbidden
}

/// Checks that no crate below the HTTP edge reaches the web stack or a crate
/// above it, and that the store reaches none of the crates built on it.
pub fn check_layering(meta: &Metadata) -> Layering {
    let mut layering = Layering::default();
    for &(krate, required) in LAYERED {
        if meta.member(krate).is_none() {
            if required {
                layering.problems.push(format!("{krate} is not a workspace member"));
            }
            continue;
        }
        layering.checked.push(krate.to_owned());
        let forbidden = forbidden_dependencies(krate);
        for path in meta.normal_paths(krate, |name| forbidden.contains(name)) {
            layering.problems.push(path.join(" -> "));
        }
    }
    layering
}

// Module cycles.

/// Top-level module -> the modules it names as `crate::…` -> the files that
/// do.
pub type ModuleGraph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

/// Top-level modules of one crate that depend on each other in a circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub krate: String,
    /// Sorted.
    pub modules: Vec<String>,
    /// The dependencies among `modules`: from, to, and the files (relative
    /// to the workspace root) that make them.
    pub edges: Vec<(String, String, Vec<PathBuf>)>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.krate, self.modules.join(", "))?;
        for (from, to, files) in &self.edges {
            let files: Vec<_> = files.iter().map(|p| p.display().to_string()).collect();
            write!(f, "\n    {from} -> {to}: {}", files.join(", "))?;
        }
        Ok(())
    }
}

/// The module cycles of every workspace member called `basedata-…`.
pub fn module_cycles(meta: &Metadata) -> Vec<Cycle> {
    let mut members: Vec<&Member> = meta
        .members
        .iter()
        .filter(|m| m.name.starts_with("basedata-"))
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut cycles = Vec::new();
    for member in members {
        let src = member.dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        let names: BTreeMap<String, BTreeSet<String>> = graph
            .iter()
            .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
            .collect();
        for modules in find_cycles(&names) {
            let mut edges = Vec::new();
            for from in &modules {
                for (to, files) in &graph[from] {
                    if modules.contains(to) {
                        let files = files.iter().map(|p| meta.relative(p).to_path_buf()).collect();
                        edges.push((from.clone(), to.clone(), files));
                    }
                }
            }
            cycles.push(Cycle {
                krate: member.name.clone(),
                modules,
                edges,
            });
        }
    }
    cycles
}

/// The top-level modules of the crate whose sources are in `src`: files
/// `src/X.rs` and directories `src/X/`, without the crate roots, the
/// binaries in `src/bin` and test modules.
pub fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
            .path();
        let name = if path.is_dir() {
            path.file_name()
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            path.file_stem()
        } else {
            None
        };
        let Some(name) = name.and_then(|n| n.to_str()) else {
            continue;
        };
        if !["lib", "main", "bin", "tests"].contains(&name) {
            modules.insert(name.to_owned());
        }
    }
    modules
}

/// Which top-level modules of the crate in `src` name which others.
pub fn module_graph(src: &Path) -> ModuleGraph {
    let modules = top_level_modules(src);
    let mut graph = ModuleGraph::new();
    for module in &modules {
        let edges = graph.entry(module.clone()).or_default();
        let mut files = BTreeSet::new();
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.insert(file);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            module_files(&dir, &mut files);
        }
        for file in files {
            for target in crate_references(&read(&file)) {
                if &target != module && modules.contains(&target) {
                    edges.entry(target).or_default().insert(file.clone());
                }
            }
        }
    }
    graph
}

/// The `.rs` files under `dir`, leaving out test modules: they may use any
/// module to set up a test without making the code depend on it.
fn module_files(dir: &Path, files: &mut BTreeSet<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.file_name().is_some_and(|n| n == "tests" || n == "tests.rs") {
            continue;
        }
        if path.is_dir() {
            module_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.insert(path);
        }
    }
}

/// The first path segments after `crate::` in `source`, including those
/// inside a `crate::{a, b::c}` group; comments and literals do not count.
pub fn crate_references(source: &str) -> BTreeSet<String> {
    let text: Vec<char> = strip_comments_and_literals(source).chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        if !(is_ident_start(text[i]) && (i == 0 || !is_ident(text[i - 1]))) {
            i += 1;
            continue;
        }
        let (word, end) = ident(&text, i);
        i = end;
        if word != "crate" {
            continue;
        }
        let mut j = skip_space(&text, end);
        if !(text.get(j) == Some(&':') && text.get(j + 1) == Some(&':')) {
            continue;
        }
        j = skip_space(&text, j + 2);
        match text.get(j) {
            Some(&c) if is_ident_start(c) => {
                found.insert(ident(&text, j).0);
            }
            Some('{') => found.extend(group_heads(&text, j)),
            _ => {}
        }
    }
    found.remove("self");
    found
}

/// The first identifier of each item of the `{…}` group opening at `open`.
fn group_heads(text: &[char], open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_starts = false;
    let mut i = open;
    while i < text.len() {
        let c = text[i];
        if c == '{' {
            depth += 1;
            item_starts = depth == 1;
        } else if c == '}' {
            depth -= 1;
            if depth == 0 {
                break;
            }
        } else if depth == 1 && c == ',' {
            item_starts = true;
        } else if depth == 1 && item_starts && is_ident_start(c) {
            let (word, end) = ident(text, i);
            heads.push(word);
            item_starts = false;
            i = end;
            continue;
        } else if depth == 1 && !c.is_whitespace() {
            item_starts = false;
        }
        i += 1;
    }
    heads
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident(text: &[char], start: usize) -> (String, usize) {
    let end = (start..text.len()).find(|&i| !is_ident(text[i])).unwrap_or(text.len());
    (text[start..end].iter().collect(), end)
}

fn skip_space(text: &[char], from: usize) -> usize {
    (from..text.len())
        .find(|&i| !text[i].is_whitespace())
        .unwrap_or(text.len())
}

/// `source` with comments (doc comments too) replaced by a space and string
/// and character literals emptied, so that text in them is not read as code.
pub fn strip_comments_and_literals(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let at = |i: usize| s.get(i).copied();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let after_ident = i > 0 && is_ident(s[i - 1]);
        if c == '/' && at(i + 1) == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
            out.push(' ');
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(end) = raw_string_end(&s, i).filter(|_| !after_ident) {
            i = end;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == Some('\\') {
            i += 3;
            while i < s.len() && s[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // Also the quote of a lifetime.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starts at `start`,
/// the index just past it.
fn raw_string_end(s: &[char], start: usize) -> Option<usize> {
    let mut i = start;
    if s.get(i) == Some(&'b') {
        i += 1;
    }
    if s.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
    i += hashes;
    if s.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < s.len() {
        if s[i] == '"' && s[i + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(s.len())
}

/// The strongly connected components with more than one node of the
/// directed graph `edges` (node -> its successors), each sorted, in the
/// order of their smallest node. Tarjan's algorithm.
pub fn find_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = edges
        .keys()
        .chain(edges.values().flatten())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of: HashMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let successors = nodes
        .iter()
        .map(|n| edges.get(*n).into_iter().flatten().map(|m| index_of[m]).collect())
        .collect();
    let mut tarjan = Tarjan {
        successors,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in 0..nodes.len() {
        if tarjan.index[node].is_none() {
            tarjan.visit(node);
        }
    }
    let mut cycles: Vec<Vec<String>> = tarjan
        .components
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut names: Vec<String> = component.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    cycles.sort();
    cycles
}

struct Tarjan {
    successors: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for k in 0..self.successors[v].len() {
            let w = self.successors[v][k];
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            loop {
                let w = self.stack.pop().expect("v is on the stack");
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}
