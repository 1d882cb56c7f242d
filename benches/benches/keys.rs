//! Cost of key parsing, which runs on every lookup, verification and batch
//! line: the common 18-character citizen ID, the full-width and legacy
//! 15-digit forms that need folding or conversion, the credit code, and the
//! rejection of a mistyped number. Also the pseudonym and the sealed key
//! mapping that every new key costs the writer, sealed by the
//! implementation in use (ring) next to the portable one used before.

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

fn pseudonym(c: &mut Criterion) {
    use basedata_store::pseudo::{Pseudonymizer, Secret};
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let secret = Secret::from_bytes([7; 32]);
    let p = Pseudonymizer::new(&secret);
    let key = SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap();
    let pid = p.pid(&key);
    let sealed = p.seal(&pid, &key);
    // The same construction through the portable crate, with a key of its own:
    // the cost being compared, not the bytes.
    let portable = chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&[9; 32]));
    let mut plain = vec![1u8];
    plain.extend_from_slice(key.as_str().as_bytes());
    let mut group = c.benchmark_group("keys/pseudonym");
    group.bench_function("pid", |b| b.iter(|| p.pid(black_box(&key))));
    group.bench_function("seal_ring_in_use", |b| b.iter(|| p.seal(black_box(&pid), black_box(&key))));
    group.bench_function("seal_portable_before", |b| {
        b.iter(|| {
            let nonce = chacha20poly1305::Nonce::from_slice(&pid.0[..12]);
            portable.encrypt(nonce, Payload { msg: black_box(&plain), aad: &pid.0 }).unwrap()
        })
    });
    group.bench_function("open", |b| b.iter(|| p.open(black_box(&pid), black_box(&sealed)).unwrap()));
    group.finish();
}

criterion_group!(benches, parse, pseudonym);
criterion_main!(benches);
