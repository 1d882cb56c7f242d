//! Cost of key parsing, which runs on every lookup, verification and batch
//! line: the common 18-character citizen ID, the full-width and legacy
//! 15-digit forms that need folding or conversion, the credit code, and the
//! rejection of a mistyped number.

use std::hint::black_box;

use basedata_store::keys::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys/parse");
    group.throughput(Throughput::Elements(1));

    group.bench_function("person", |b| {
        b.iter(|| PersonKey::parse(black_box("11010519491231002X")))
    });
    group.bench_function("person_full_width", |b| {
        b.iter(|| PersonKey::parse(black_box("　１１０１０５１９４９１２３１００２ｘ　")))
    });
    group.bench_function("person_legacy_15", |b| {
        b.iter(|| PersonKey::parse(black_box("110105491231002")))
    });
    group.bench_function("entity", |b| {
        b.iter(|| EntityKey::parse(black_box("91350100M000100Y43")))
    });
    // A mistyped digit goes through every check before the checksum fails,
    // so this is the slowest rejection.
    group.bench_function("person_rejected_checksum", |b| {
        b.iter(|| PersonKey::parse(black_box("110105194912310021")))
    });
    group.bench_function("entity_rejected_checksum", |b| {
        b.iter(|| EntityKey::parse(black_box("91350100M000100Y44")))
    });

    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
