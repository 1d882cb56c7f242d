use basedata_store::clock::SystemClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::{Catalog, Secret, Store, WriteBatch};
use basedata_tools::gen::{self, GenConfig};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let catalog = Arc::new(Catalog::builtin());
    if std::env::var("SEALONLY").is_ok() {
        let p = basedata_store::pseudo::Pseudonymizer::new(&Secret::from_bytes([1; 32]));
        let g = GenConfig { persons: 1000, entities: 0, seed: 1 };
        let keys: Vec<_> = (0..1000).map(|i| basedata_store::SubjectKey::Person(gen::person_key(&g, i))).collect();
        let t = Instant::now();
        let mut x = 0u8;
        for r in 0..n { let k = &keys[(r % 1000) as usize]; let pid = p.pid(k); x ^= p.seal(&pid, k)[3]; }
        println!("seal-only {:.0} ns {x}", t.elapsed().as_nanos() as f64 / n as f64);
        return;
    }
    let mut lines: Vec<u8> = Vec::new();
    let t = Instant::now();
    gen::generate(&GenConfig { persons: n, entities: 0, seed: 1 }, &catalog, &mut |ds, l| {
        if ds == "hukou" { lines.extend_from_slice(l); lines.push(b'\n'); }
        Ok(())
    }).unwrap();
    println!("gen {:?} bytes {}", t.elapsed(), lines.len());
    let ds = catalog.dataset("hukou").unwrap();
    let t = Instant::now();
    let mut c = 0usize;
    for l in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        c += basedata_ingest::parse_line(ds, l).unwrap().version as usize;
    }
    let e = t.elapsed();
    println!("parse-stream {:?} {:.0} ns/line {c}", e, e.as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for l in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        c += v.as_object().unwrap().len();
    }
    let e = t.elapsed();
    println!("json-value {:?} {:.0} ns/line {c}", e, e.as_nanos() as f64 / n as f64);
    let t = Instant::now();
    let mut ups = Vec::new();
    for l in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        ups.push(basedata_ingest::parse_line(ds, l).unwrap());
    }
    let e = t.elapsed();
    println!("parse {:?} {:.0} ns/line", e, e.as_nanos() as f64 / n as f64);
    let store = Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([1; 32]), catalog.clone(), Arc::new(SystemClock)).unwrap();
    let t = Instant::now();
    let mut x = 0u8;
    for u in &ups { x ^= store.pseudonym(&u.key).0[0]; }
    let e = t.elapsed();
    println!("pid {:.0} ns {x}", e.as_nanos() as f64 / n as f64);
    let t = Instant::now();
    let mut b = WriteBatch::new();
    for u in &ups { store.seal_into(&mut b, &u.key); }
    let e = t.elapsed();
    println!("seal {:.0} ns", e.as_nanos() as f64 / n as f64);
    let p = basedata_store::pseudo::Pseudonymizer::new(&Secret::from_bytes([1; 32]));
    let t = Instant::now();
    for u in &ups { let pid = p.pid(&u.key); x ^= p.seal(&pid, &u.key)[3]; }
    let e = t.elapsed();
    println!("pid+seal {:.0} ns {x}", e.as_nanos() as f64 / n as f64);
    let t = Instant::now();
    drop(ups);
    println!("drop {:?}", t.elapsed());
}
