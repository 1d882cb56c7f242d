//! Side-by-side harness of `basedata load`: generates N hukou update lines
//! (`basedata_tools::gen`), times the load logic in-process on a fresh
//! store, then times a bare RocksDB `SstFileWriter` + ingest of exactly the
//! sorted (key, value) pairs that load stored (`keymap`, `changes`,
//! `records`, read back from the loaded store) into another fresh store
//! with the same column-family options. Prints records/s of both and their
//! ratio; the difference is what validation, pseudonymization, sealing,
//! sorting and encoding cost on top of writing the files.
//!
//! Usage: `bulk_load [N]` (default 1,000,000), scratch files in `$TMPDIR`.
//! Each side starts once the machine is nearly idle (waiting up to a
//! minute); the *other load* printed is the cores other processes kept
//! busy during it anyway.

use basedata_store::engine::rocks::{RocksConfig, RocksEngine};
use basedata_store::{Catalog, Cf, Engine};
use basedata_server::config::Config;
use basedata_gen::{self as gen, GenConfig};
use basedata_tools::load::{self, LoadOptions};
use rocksdb::{IngestExternalFileOptions, SstFileWriter};
use std::io::{BufWriter, Write};
use std::time::Instant;

// The allocator of the `basedata` binary, whose `load` this times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Process CPU time (user + system) in seconds, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields 14 and 15 (utime, stime, in clock ticks), counted after the
    // parenthesized command name, which may hold spaces.
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

/// CPU seconds the whole machine spent busy, from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy as f64 / 100.0
}

/// Waits (up to a minute) until other processes keep less than 0.3 cores
/// busy over a second, so that the figures are this program's.
fn wait_quiet() {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while Instant::now() < deadline {
        let b0 = machine_busy_seconds();
        std::thread::sleep(std::time::Duration::from_secs(1));
        if machine_busy_seconds() - b0 < 0.3 {
            return;
        }
    }
}

/// Runs `f`, returning its result, wall seconds, this process's CPU
/// seconds, and the cores other processes kept busy meanwhile (a figure
/// taken with other load above ~0.3 cores on this 2-core machine
/// understates both sides).
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64, f64) {
    let (cpu0, busy0, t) = (cpu_seconds(), machine_busy_seconds(), Instant::now());
    let out = f();
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let other = ((machine_busy_seconds() - busy0 - cpu) / wall).max(0.0);
    (out, wall, cpu, other)
}

fn main() {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: bulk_load [N]");
            std::process::exit(2)
        }),
        None => 1_000_000,
    };
    let scratch = tempfile::tempdir().expect("scratch directory");
    let input = scratch.path().join("hukou.ndjson");
    let catalog = Catalog::builtin();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&input).unwrap());
    let mut lines = 0u64;
    gen::generate(&GenConfig { persons: n, entities: 0, seed: 1 }, &catalog, &mut |ds, line| {
        if ds == "hukou" {
            lines += 1;
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .unwrap();
    out.flush().unwrap();
    // On disk before anything is timed, so that writing back the input's
    // dirty pages does not compete with either side's writes.
    out.get_ref().sync_all().unwrap();
    drop(out);
    let size = std::fs::metadata(&input).unwrap().len();
    println!("input: {lines} hukou lines, {:.0} MB", size as f64 / 1e6);

    // basedata load, in-process, on a fresh store.
    let data = scratch.path().join("load");
    let cfg = Config::default();
    wait_quiet();
    let (report, load_secs, load_cpu, load_other) = measure(|| {
        load::run(&LoadOptions {
            data: &data,
            dataset: "hukou",
            provider: None,
            input: &input,
            config: &cfg,
            key_file: None,
            errors: None,
            tmp: None,
            memory_mb: 1024,
            progress: false,
        })
        .expect("load")
    });
    assert_eq!(report.loaded, lines, "every generated line loads");
    let load_rate = report.loaded as f64 / load_secs;
    println!(
        "basedata load:              {load_secs:6.2} s  {load_rate:9.0} records/s  (cpu {load_cpu:.2} s, other load {load_other:.2} cores; reading+validating {:.2} s, sort runs spilled {})",
        report.reading_seconds, report.runs
    );

    // The exact pairs load wrote, family by family, in key order.
    let loaded = RocksEngine::open(&data, &RocksConfig::default()).unwrap();
    let families = [Cf::KeyMap, Cf::Changes, Cf::Records];
    let pairs: Vec<Vec<(Box<[u8]>, Box<[u8]>)>> =
        families.iter().map(|&cf| loaded.scan(cf, &[], None, false).unwrap().map(|kv| kv.unwrap()).collect()).collect();
    drop(loaded);
    let entries: usize = pairs.iter().map(Vec::len).sum();

    // Bare: the same pairs through SstFileWriter into a fresh store, ingested.
    let bare_dir = scratch.path().join("bare");
    let sst_dir = scratch.path().join("bare-sst");
    std::fs::create_dir_all(&sst_dir).unwrap();
    let bare = RocksEngine::open(&bare_dir, &RocksConfig::default()).unwrap();
    wait_quiet();
    let ((), bare_secs, bare_cpu, bare_other) = measure(|| {
        for (cf, kvs) in families.iter().zip(&pairs) {
            let opts = bare.sst_options(*cf);
            let path = sst_dir.join(format!("{}.sst", cf.name()));
            let mut w = SstFileWriter::create(&opts);
            w.open(&path).unwrap();
            for (k, v) in kvs {
                w.put(k, v).unwrap();
            }
            w.finish().unwrap();
            let mut io = IngestExternalFileOptions::default();
            io.set_move_files(true);
            bare.db().ingest_external_file_cf_opts(bare.cf(*cf), &io, vec![path]).unwrap();
        }
    });
    let bare_rate = lines as f64 / bare_secs;
    println!(
        "bare SstFileWriter+ingest:  {bare_secs:6.2} s  {bare_rate:9.0} records/s  (cpu {bare_cpu:.2} s, other load {bare_other:.2} cores; {entries} pairs in 3 families)"
    );
    println!("ratio load/bare: {:.2}", load_rate / bare_rate);
}
