//! One behavioural suite for every engine: each case is a plain function
//! over `&dyn Engine`, and `engine_suite!` instantiates all cases for an
//! engine constructor.

use super::{prefix_end, Cf, Durability, Engine, WriteBatch};

fn put(e: &dyn Engine, cf: Cf, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(cf, k, v);
    e.write(b, Durability::Sync).unwrap();
}

fn keys(e: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>, rev: bool) -> Vec<Vec<u8>> {
    e.scan(cf, start, end, rev).unwrap().map(|r| r.unwrap().0.to_vec()).collect()
}

pub fn get_put_delete(e: &dyn Engine) {
    assert_eq!(e.get(Cf::Meta, b"a").unwrap(), None);
    put(e, Cf::Meta, b"a", b"1");
    assert_eq!(e.get(Cf::Meta, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    put(e, Cf::Meta, b"a", b"2");
    assert_eq!(e.get(Cf::Meta, b"a").unwrap().as_deref(), Some(&b"2"[..]));
    let mut b = WriteBatch::new();
    b.delete(Cf::Meta, b"a".to_vec());
    e.write(b, Durability::Sync).unwrap();
    assert_eq!(e.get(Cf::Meta, b"a").unwrap(), None);
}

pub fn families_are_separate(e: &dyn Engine) {
    put(e, Cf::Records, b"k", b"records");
    put(e, Cf::History, b"k", b"history");
    assert_eq!(e.get(Cf::Records, b"k").unwrap().unwrap(), b"records");
    assert_eq!(e.get(Cf::History, b"k").unwrap().unwrap(), b"history");
    assert_eq!(e.get(Cf::Changes, b"k").unwrap(), None);
}

pub fn batch_applies_in_order(e: &dyn Engine) {
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, b"x".to_vec(), b"1".to_vec());
    b.delete(Cf::Meta, b"x".to_vec());
    b.put(Cf::Meta, b"y".to_vec(), b"1".to_vec());
    b.put(Cf::Meta, b"y".to_vec(), b"2".to_vec());
    assert_eq!(b.len(), 4);
    e.write(b, Durability::Buffered).unwrap();
    assert_eq!(e.get(Cf::Meta, b"x").unwrap(), None);
    assert_eq!(e.get(Cf::Meta, b"y").unwrap().unwrap(), b"2");
}

pub fn scan_bounds_and_direction(e: &dyn Engine) {
    for k in [&b"a"[..], b"b", b"ba", b"bb", b"c", b"d"] {
        put(e, Cf::Changes, k, b"v");
    }
    assert_eq!(keys(e, Cf::Changes, b"", None, false).len(), 6);
    assert_eq!(keys(e, Cf::Changes, b"b", Some(b"c"), false), vec![b"b".to_vec(), b"ba".to_vec(), b"bb".to_vec()]);
    assert_eq!(keys(e, Cf::Changes, b"b", Some(b"c"), true), vec![b"bb".to_vec(), b"ba".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(e, Cf::Changes, b"c", None, true), vec![b"d".to_vec(), b"c".to_vec()]);
    assert!(keys(e, Cf::Changes, b"c", Some(b"c"), false).is_empty());
    assert!(keys(e, Cf::Changes, b"z", None, false).is_empty());
}

pub fn prefix_scan_on_subject_families(e: &dyn Engine) {
    // 16-byte subject prefixes, as the record model uses them.
    let p1 = [1u8; 16];
    let p2 = [2u8; 16];
    for p in [p1, p2] {
        for ds in [&b"death"[..], b"hukou", b"marriage"] {
            let mut k = p.to_vec();
            k.extend_from_slice(ds);
            put(e, Cf::Records, &k, ds);
        }
    }
    let end = prefix_end(&p1).unwrap();
    let got = keys(e, Cf::Records, &p1, Some(&end), false);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|k| k.starts_with(&p1)));
    let rev = keys(e, Cf::Records, &p1, Some(&end), true);
    assert_eq!(rev.first().unwrap()[16..], b"marriage"[..]);
    // A range across prefixes must see both subjects.
    assert_eq!(keys(e, Cf::Records, &p1, None, false).len(), 6);
}

pub fn multi_get_matches_get(e: &dyn Engine) {
    put(e, Cf::KeyMap, b"k1", b"v1");
    put(e, Cf::KeyMap, b"k3", b"v3");
    let ks: Vec<&[u8]> = vec![b"k1", b"k2", b"k3", b"k1"];
    let got = e.multi_get(Cf::KeyMap, &ks).unwrap();
    assert_eq!(got, vec![Some(b"v1".to_vec()), None, Some(b"v3".to_vec()), Some(b"v1".to_vec())]);
}

pub fn empty_batch_is_fine(e: &dyn Engine) {
    e.write(WriteBatch::new(), Durability::Sync).unwrap();
    e.flush().unwrap();
}

pub fn binary_keys_and_large_values(e: &dyn Engine) {
    let key = [0u8, 255, 0, 255];
    let value = vec![7u8; 1 << 20];
    put(e, Cf::Jobs, &key, &value);
    assert_eq!(e.get(Cf::Jobs, &key).unwrap().unwrap().len(), 1 << 20);
    let all = keys(e, Cf::Jobs, &[0], Some(&[1]), false);
    assert_eq!(all, vec![key.to_vec()]);
}

#[macro_export]
#[doc(hidden)]
macro_rules! engine_suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            use $crate::engine::conformance as c;
            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let (_guard, engine) = $make;
                        c::$name(&*engine);
                    }
                };
            }
            case!(get_put_delete);
            case!(families_are_separate);
            case!(batch_applies_in_order);
            case!(scan_bounds_and_direction);
            case!(prefix_scan_on_subject_families);
            case!(multi_get_matches_get);
            case!(empty_batch_is_fine);
            case!(binary_keys_and_large_values);
        }
    };
}

crate::engine_suite!(mem_engine, ((), Box::new(crate::engine::mem::MemEngine::new()) as Box<dyn crate::engine::Engine>));
#[cfg(feature = "rocks")]
crate::engine_suite!(rocks_engine, {
    let dir = tempfile::tempdir().unwrap();
    let e = crate::engine::rocks::RocksEngine::open(dir.path(), &Default::default()).unwrap();
    (dir, Box::new(e) as Box<dyn crate::engine::Engine>)
});

#[cfg(feature = "rocks")]
#[test]
fn rocks_reopen_reads_the_same_data() {
    use crate::engine::rocks::RocksEngine;
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
        put(&e, Cf::Records, b"0123456789abcdefhukou", b"record");
        put(&e, Cf::Changes, &1u64.to_be_bytes(), b"change");
    }
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(e.get(Cf::Records, b"0123456789abcdefhukou").unwrap().unwrap(), b"record");
    assert_eq!(e.get(Cf::Changes, &1u64.to_be_bytes()).unwrap().unwrap(), b"change");
    let names = RocksEngine::list_cf_names(dir.path()).unwrap();
    for cf in Cf::ALL {
        assert!(names.iter().any(|n| n == cf.name()), "{} missing", cf.name());
    }
}
