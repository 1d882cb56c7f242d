//! Point reads through the store (pseudonymize, read, decode, resolve)
//! next to the bare engine read of the same record key, so the overhead of
//! the record model stays visible; and an in-process verification (claims
//! checked against the catalog and normalized, the record read with only
//! the claimed fields decoded, verdicts) next to the same bare read, and
//! the same verification from the claim fingerprints (no read); and a
//! chunk of batch lines verified from the fingerprints. The
//! audit entry an answer waits for is the group committer's, measured over
//! HTTP by `http_bench`.

use basedata_benches::{hukou_fixture, person};
use basedata_store::keys::SubjectKey;
use basedata_store::record::record_key;
use basedata_query::verify::{verify_many, Claims, Outcome};
use basedata_store::Cf;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

// The server's allocator, so that allocation costs are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PERSONS: u64 = 200_000;

fn reads(c: &mut Criterion) {
    let f = hukou_fixture(PERSONS, 256);
    let keys: Vec<SubjectKey> = (0..PERSONS).step_by(7).map(|i| SubjectKey::Person(person(&f, i))).collect();
    let raw: Vec<Vec<u8>> = keys.iter().map(|k| record_key(&f.store.pseudonym(k), "hukou")).collect();
    let mut g = c.benchmark_group("store/point_read");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("engine_get_raw", |b| {
        b.iter(|| {
            i = (i + 1) % raw.len();
            black_box(f.store.engine().get(Cf::Records, &raw[i]).unwrap())
        })
    });
    g.bench_function("store_get_hukou", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(f.store.get(&keys[i], "hukou", None).unwrap())
        })
    });
    g.bench_function("store_get_all", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(f.store.get_all(&keys[i], None, None).unwrap())
        })
    });
    let hukou = f.store.catalog().dataset("hukou").unwrap().clone();
    let claims: Vec<serde_json::Map<String, serde_json::Value>> = keys
        .iter()
        .map(|k| {
            let r = f.store.get(k, "hukou", None).unwrap().expect("generated person");
            ["name", "birth_date"].iter().map(|n| (n.to_string(), r.field(n).unwrap().to_json())).collect()
        })
        .collect();
    g.bench_function("verify_in_process", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let c = Claims::parse(&hukou, &claims[i]).unwrap();
            let r = f.store.get_fields(&keys[i], "hukou", &|n| c.asks(n)).unwrap();
            let (outcome, _) = c.verify(r.as_ref());
            assert_eq!(outcome, Outcome::Match);
            black_box(outcome)
        })
    });
    // The same verification from the claim fingerprints (no record read).
    f.store.keep_prints().unwrap();
    g.bench_function("verify_from_prints", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let c = Claims::parse(&hukou, &claims[i]).unwrap();
            let outcome = verify_many(&f.store, &[(keys[i], "hukou")], &[&c]).unwrap().pop().unwrap().outcome;
            assert_eq!(outcome, Outcome::Match);
            black_box(outcome)
        })
    });
    g.bench_function("pseudonym", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(f.store.pseudonym(&keys[i]))
        })
    });
    g.finish();
    batch_chunk(c, &f, &keys);
}

/// One chunk of batch lines through `batch::process`: parsing each line,
/// checking its key and claims, the fingerprint lookups of the chunk,
/// verdicts, answers and the chunk's record of uses (not its commit, which
/// is the group committer's). Every tenth line claims a wrong birth date.
fn batch_chunk(c: &mut Criterion, f: &basedata_benches::Fixture, keys: &[SubjectKey]) {
    use basedata_query::batch::{process, Cutter, Unrestricted, CHUNK_LINES};
    let mut body = String::new();
    for (i, k) in keys.iter().take(CHUNK_LINES).enumerate() {
        let r = f.store.get(k, "hukou", None).unwrap().expect("generated person");
        let birth = if i % 10 == 9 { serde_json::json!("1900-01-01") } else { r.field("birth_date").unwrap().to_json() };
        let line = serde_json::json!({"ref": format!("r{i}"), "subject": "person", "key": k.as_str(),
            "fields": {"name": r.field("name").unwrap().to_json(), "birth_date": birth}});
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let mut cutter = Cutter::with_chunk_lines(CHUNK_LINES);
    let mut chunks = Vec::new();
    cutter.push(body.as_bytes(), &mut chunks);
    chunks.extend(cutter.finish());
    let chunk = &chunks[0];
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(u64::from(chunk.lines)));
    g.bench_function("chunk_from_prints", |b| {
        b.iter(|| {
            let res = process(&f.store, &Unrestricted, chunk).unwrap();
            assert_eq!(res.counts.matched + res.counts.mismatched, u64::from(chunk.lines));
            black_box(res)
        })
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
