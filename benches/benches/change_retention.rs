//! Cutting the change log's head on a RocksDB store: `Store::changes_prune`
//! removing every change but the newest (a binary search for the cut, one
//! synced range deletion, then the range compacted away), next to the same
//! removal done key by key in synced batches of 4,096 deletes, as a log
//! trimmed without range deletions would be. Both end with the space
//! given back (a compaction of the range), so they do the same job.

use basedata_store::clock::ManualClock;
use basedata_store::record::seq_key;
use basedata_store::{Catalog, Cf, Durability, Store, Update, WriteBatch};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHANGES: u64 = 262_144;
const PER_COMMIT: u64 = 1_024;

/// A store whose change log holds `CHANGES` hukou upserts, committed
/// `PER_COMMIT` at a time a microsecond apart, flushed to table files.
fn log() -> (tempfile::TempDir, Store) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let (dir, store) = basedata_benches::new_store(clock.clone(), 64);
    let g = basedata_gen::GenConfig { persons: CHANGES, entities: 0, seed: 4 };
    let catalog = Catalog::builtin();
    let hukou = catalog.dataset("hukou").unwrap();
    for first in (0..CHANGES).step_by(PER_COMMIT as usize) {
        // Whole hukou records, parsed as a provider's lines are.
        let updates: Vec<Update> = (first..first + PER_COMMIT)
            .map(|i| {
                let line = serde_json::json!({"key": basedata_gen::person_key(&g, i).as_str(), "version": 1, "fields": basedata_gen::person_hukou(&g, i)});
                basedata_ingest::line::parse_value(hukou, &line).unwrap()
            })
            .collect();
        store.apply(&updates, Durability::Buffered).unwrap();
        clock.advance(1);
    }
    store.engine().flush().unwrap();
    assert_eq!(store.last_seq(), CHANGES);
    (dir, store)
}

fn prune(c: &mut Criterion) {
    let mut g = c.benchmark_group("changes/retention");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CHANGES - 1));
    g.bench_function("range_deletion", |b| {
        b.iter_batched(
            log,
            |(dir, store)| {
                let cut = store.changes_prune(i64::MAX).unwrap();
                assert_eq!(cut.removed, CHANGES - 1);
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("key_by_key", |b| {
        b.iter_batched(
            log,
            |(dir, store)| {
                let e = store.engine();
                for first in (1..CHANGES).step_by(4_096) {
                    let mut batch = WriteBatch::new();
                    for seq in first..(first + 4_096).min(CHANGES) {
                        batch.delete(Cf::Changes, seq_key(seq).to_vec());
                    }
                    e.write(batch, Durability::Sync).unwrap();
                }
                e.reclaim(Cf::Changes, &seq_key(0), &seq_key(CHANGES)).unwrap();
                assert_eq!(store.changes(0, 10).unwrap().len(), 1);
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, prune);
criterion_main!(benches);
