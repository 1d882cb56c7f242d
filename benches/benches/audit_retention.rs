//! Removal of audit entries past the retention period on a RocksDB store:
//! how many uses a second `Store::audit_cuts` and `Store::audit_prune`
//! take away (finding the cut, then decoding and re-hashing each entry,
//! deleting it with its index keys, recording the anchor), for entries as
//! the writer stores point verifications (chunks of 16 uses, one a group
//! commit) and as it stores uses one by one. (The entry that names the
//! cut, one commit, is left out.)

use basedata_store::audit::{Action, AuditEvent};
use basedata_store::caller::system_event;
use basedata_store::clock::ManualClock;
use basedata_store::keys::SubjectKey;
use basedata_store::{Durability, Store};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USES: u64 = 16_384;

fn key(i: u64) -> SubjectKey {
    let g = basedata_gen::GenConfig { persons: USES, entities: 0, seed: 2 };
    SubjectKey::Person(basedata_gen::person_key(&g, i))
}

/// A store holding `USES` verifications committed `per_group` at a time,
/// a microsecond apart.
fn trail(per_group: u64) -> (tempfile::TempDir, Store) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let (dir, store) = basedata_benches::new_store(clock.clone(), 64);
    let mut i = 0;
    while i < USES {
        let events: Vec<AuditEvent> = (i..i + per_group)
            .map(|n| {
                let mut ev = system_event("benchmark", Action::Verify);
                ev.department = "shebao-counter".into();
                ev.key = Some(key(n));
                ev.datasets = vec!["hukou".into()];
                ev.fields = vec!["hukou.name".into(), "hukou.birth_date".into()];
                ev.outcome = "match".into();
                ev
            })
            .collect();
        store.commit(&[], &events, Durability::Buffered).unwrap();
        clock.advance(1);
        i += per_group;
    }
    store.engine().flush().unwrap();
    (dir, store)
}

fn prune(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit/retention");
    g.sample_size(10);
    g.throughput(Throughput::Elements(USES));
    for (name, per_group) in [("chunks_of_16", 16), ("single_entries", 1)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || trail(per_group),
                |(dir, store)| {
                    let cuts = store.audit_cuts(i64::MAX).unwrap().expect("entries to cut");
                    let (p, stopped) = store.audit_prune(&cuts).unwrap();
                    assert_eq!((p.uses, stopped.len()), (USES, 0));
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, prune);
criterion_main!(benches);
