//! Batch comparison end to end, in process, against the floor it is built
//! on: a store of generated persons (default 1,000,000), then the same
//! batch lines (default 1,000,000, in an order unrelated to storage order)
//!
//! 1. through the batch code path (`basedata_query::batch::Batch::run_blocking`:
//!    line cutting, JSON parsing, key and claim checks, one sorted multi-get
//!    per chunk, verification, one audit entry per line group-committed
//!    with a synced write per group, answer formatting), and
//!    first reading the records, then from claim fingerprints
//!    (`basedata_store::prints`, built in between and timed), and
//! 2. as bare sorted multi-gets of the same keys in the same chunks
//!    (pseudonymize, sort, `Engine::multi_get`; nothing decoded).
//!
//! Prints lines/s for each and the ratios, and checks that both batch
//! runs answered byte for byte alike.
//!
//! Before each measured phase it waits (up to `--quiet-wait` seconds) until
//! other processes use under 0.3 cores, and reports the load they caused
//! anyway: on a shared 2-core machine that decides the figures.
//!
//! `cargo run --release -p basedata-benches --bin batch_compare -- [--persons N] [--lines N] [--cache-mb N] [--quiet-wait S]`

use basedata_query::batch::CHUNK_LINES;
use basedata_store::commit::Committer;
use basedata_store::record::record_key;
use basedata_store::{Catalog, Cf, SubjectKey};
use basedata_query::Caller;
use basedata_query::batch::{Batch, Requester};
use basedata_tools::offline::offline_department;
use basedata_gen::{self as gen, GenConfig};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

/// Counts answer lines and bytes instead of keeping them.
#[derive(Default)]
struct Tally {
    lines: u64,
    bytes: u64,
    hash: blake3::Hasher,
}

impl Write for Tally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        self.bytes += buf.len() as u64;
        self.hash.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy CPU seconds of the whole machine so far (from /proc/stat).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = cpu.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / 100.0
}

/// Cores other processes keep busy, measured over `secs`.
fn other_load(secs: f64) -> f64 {
    let (m, c) = (machine_busy_seconds(), cpu_seconds());
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    ((machine_busy_seconds() - m) - (cpu_seconds() - c)).max(0.0) / secs
}

/// Waits (up to `max` seconds) until other processes use under 0.3 cores,
/// so that figures on a shared machine are not simply someone else's load.
fn wait_quiet(max: u64) {
    let start = Instant::now();
    while start.elapsed().as_secs() < max {
        if other_load(1.0) < 0.3 {
            return;
        }
    }
}

fn main() {
    let persons = arg("--persons", 1_000_000);
    let lines = arg("--lines", 1_000_000);
    let cache_mb = arg("--cache-mb", 1024) as usize;
    let quiet_wait = arg("--quiet-wait", 60);

    let t = Instant::now();
    let f = basedata_benches::hukou_fixture(persons, cache_mb);
    println!("store: {persons} persons loaded in {:.1}s", t.elapsed().as_secs_f64());

    // Claims as a counter would type them: name and birth date of person
    // i, visited in a scattered order (a multiplicative permutation), one
    // line in ten with a wrong name.
    let t = Instant::now();
    let mut claims: Vec<(String, String)> = Vec::with_capacity(persons as usize);
    let catalog = Catalog::builtin();
    let g = GenConfig { persons, entities: 0, seed: f.gen.seed };
    gen::generate(&g, &catalog, &mut |ds, line| {
        if ds == "hukou" {
            let v: serde_json::Value = serde_json::from_slice(line).expect("generated JSON");
            let field = |n: &str| v["fields"][n].as_str().unwrap_or_default().to_owned();
            claims.push((v["key"].as_str().unwrap_or_default().to_owned(), format!("{}\u{0}{}", field("name"), field("birth_date"))));
        }
        Ok(())
    })
    .unwrap();
    let step = 7_919u64; // prime, coprime with any population that is not a multiple of it
    let mut input = Vec::with_capacity(lines as usize * 120);
    let mut keys: Vec<SubjectKey> = Vec::with_capacity(lines as usize);
    for r in 0..lines {
        let i = (r * step) % persons;
        let (key, nb) = &claims[i as usize];
        let (name, birth) = nb.split_once('\u{0}').unwrap();
        let name = if r % 10 == 3 { "某某某" } else { name };
        let line = serde_json::json!({"ref": r, "subject": "person", "key": key, "fields": {"name": name, "birth_date": birth}});
        serde_json::to_writer(&mut input, &line).unwrap();
        input.push(b'\n');
        keys.push(SubjectKey::parse(basedata_store::Subject::Person, key).unwrap());
    }
    drop(claims);
    println!("input: {lines} lines, {} MB, built in {:.1}s", input.len() >> 20, t.elapsed().as_secs_f64());

    let store = f.store.clone();
    let bare = |label: &str| {
        wait_quiet(quiet_wait);
        let busy = machine_busy_seconds();
        let cpu = cpu_seconds();
        let t = Instant::now();
        let mut found = 0u64;
        for chunk in keys.chunks(CHUNK_LINES) {
            let mut rkeys: Vec<Vec<u8>> = chunk.iter().map(|k| record_key(&store.pseudonym(k), "hukou")).collect();
            rkeys.sort_unstable();
            let refs: Vec<&[u8]> = rkeys.iter().map(|k| k.as_slice()).collect();
            found += store.engine().multi_get(Cf::Records, &refs).unwrap().iter().filter(|v| v.is_some()).count() as u64;
        }
        let s = t.elapsed().as_secs_f64();
        assert_eq!(found, lines, "every key is stored");
        let cpu = cpu_seconds() - cpu;
        let other = ((machine_busy_seconds() - busy) - cpu).max(0.0) / s;
        println!(
            "{label}: {lines} keys in {s:.2}s = {:.0} keys/s ({:.1} µs CPU a key; other load {other:.2} cores)",
            lines as f64 / s,
            cpu * 1e6 / lines as f64
        );
        lines as f64 / s
    };
    bare("bare multi-get (warm-up)");
    let bare_rate = bare("bare sorted multi-get");

    let cfg = basedata_server::config::Config::default();
    let batch = Batch {
        store: store.clone(),
        committer: Arc::new(Committer::start(store.clone(), 4096)),
        requester: Arc::new(Requester {
            caller: Caller::declared(offline_department("bench-counter", &cfg).unwrap(), None),
            purpose: "benchmark".into(),
            grants: Arc::new(basedata_query::access::NoGrants),
        }),
    };
    let run = |label: &str| {
        let audit_before = store.audit_head().unwrap().seq;
        let body = std::io::Cursor::new(input.clone());
        wait_quiet(quiet_wait);
        let busy = machine_busy_seconds();
        let cpu = cpu_seconds();
        let t = Instant::now();
        let (counts, tally) = batch.run_blocking(body, Tally::default(), |_| {}).unwrap();
        let s = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let other = ((machine_busy_seconds() - busy) - cpu).max(0.0) / s;
        let rate = lines as f64 / s;
        assert_eq!(tally.lines, lines, "one answer per line");
        assert_eq!(counts.processed, lines);
        assert_eq!(store.audit_head().unwrap().seq - audit_before, lines, "one audit entry per line");
        println!(
            "batch path, {label}: {lines} lines in {s:.2}s = {rate:.0} lines/s ({} match, {} mismatch, {} not found, {} invalid; {} MB of answers; {:.1} µs CPU a line, {:.0}% of one core; other load {other:.2} cores)",
            counts.matched,
            counts.mismatched,
            counts.not_found,
            counts.invalid,
            tally.bytes >> 20,
            cpu * 1e6 / lines as f64,
            cpu * 100.0 / s
        );
        (rate, tally.hash.finalize())
    };
    let (from_records, records_digest) = run("records read");
    let rss = basedata_benches::harness::rss_mb(std::process::id());
    let t = Instant::now();
    let covered = store.keep_prints().unwrap();
    println!(
        "claim fingerprints: {covered} records in {:.2}s, resident memory +{:.0} MB",
        t.elapsed().as_secs_f64(),
        basedata_benches::harness::rss_mb(std::process::id()) - rss
    );
    let (from_prints, prints_digest) = run("fingerprints");
    assert_eq!(prints_digest, records_digest, "the same answers either way");
    let stats = batch.committer.stats();
    println!("audit: {} entries in {} synced groups", 2 * lines, stats.groups.load(std::sync::atomic::Ordering::Relaxed));
    println!("ratio batch/bare: {:.2} from records, {:.2} from fingerprints", from_records / bare_rate, from_prints / bare_rate);
}

