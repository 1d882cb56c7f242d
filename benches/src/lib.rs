//! Shared fixtures of the benchmarks: stores filled with generated data,
//! and (in [`harness`] and [`pg`]) what the side-by-side harnesses share.

pub mod harness;
pub mod pg;

use basedata_store::clock::{Clock, SystemClock};
use basedata_store::dir::{open_with_secret, OpenOptions};
use basedata_store::keys::PersonKey;
use basedata_store::{Catalog, Secret, Store};
use basedata_gen::{self as gen, GenConfig};
use std::sync::Arc;

/// A RocksDB store holding the generated hukou records of `persons`
/// persons, plus the generator config to address them.
pub struct Fixture {
    pub store: Arc<Store>,
    pub gen: GenConfig,
    pub dir: tempfile::TempDir,
}

/// A new RocksDB store with the built-in catalog in a fresh temporary
/// directory, on `clock`, with a block cache of `cache_mb` MiB.
pub fn new_store(clock: Arc<dyn Clock>, cache_mb: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions { block_cache_bytes: cache_mb << 20, warm_page_cache: false, prime_wal_bytes: 0 };
    let opened = open_with_secret(dir.path(), &Secret::from_bytes([9; 32]), Arc::new(Catalog::builtin()), clock, &opts);
    (dir, opened.unwrap().store)
}

pub fn hukou_fixture(persons: u64, cache_mb: usize) -> Fixture {
    let (dir, store) = new_store(Arc::new(SystemClock), cache_mb);
    let store = Arc::new(store);
    let catalog = store.catalog().clone();
    let g = GenConfig { persons, entities: 0, seed: 1 };
    let hukou = catalog.dataset("hukou").unwrap();
    let mut loader = basedata_ingest::BatchLoader::new(&store);
    gen::generate(&g, &catalog, &mut |ds, line| {
        if ds == "hukou" {
            let u = basedata_ingest::parse_line(hukou, line).expect("generated line is valid");
            loader.push(u).expect("load");
        }
        Ok(())
    })
    .unwrap();
    loader.finish().unwrap();
    store.engine().flush().unwrap();
    Fixture { store, gen: g, dir }
}

pub fn person(f: &Fixture, i: u64) -> PersonKey {
    gen::person_key(&f.gen, i)
}
