//! Shared helpers for the store's integration tests: generated keys and
//! store constructors over both engines.

#![allow(dead_code)]

use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::engine::rocks::{RocksConfig, RocksEngine};
use basedata_store::keys::{EntityKey, PersonKey, SubjectKey};
use basedata_store::{Catalog, Engine, Secret, Store};
use std::path::Path;
use std::sync::Arc;

pub fn person(i: u32) -> SubjectKey {
    let birth = time::Date::from_calendar_date(1950 + (i % 50) as i32, time::Month::March, 1 + (i % 28) as u8).unwrap();
    SubjectKey::Person(PersonKey::from_parts("440305", birth, (i % 1000) as u16).unwrap())
}

pub fn entity(i: u32) -> SubjectKey {
    let body = format!("{:08}", 10_000_000 + i);
    SubjectKey::Entity(EntityKey::from_parts('9', '1', "440300", &body).unwrap())
}

pub fn secret() -> Secret {
    Secret::from_bytes([42; 32])
}

pub fn rocks(path: &Path, compression: bool) -> Arc<dyn Engine> {
    let cfg = RocksConfig { compression, block_cache_bytes: 8 << 20, ..Default::default() };
    Arc::new(RocksEngine::open(path, &cfg).unwrap())
}

pub fn open(engine: Arc<dyn Engine>, clock: Arc<ManualClock>) -> Store {
    Store::open(engine, &secret(), Arc::new(Catalog::builtin()), clock).unwrap()
}

pub fn mem_store(clock: Arc<ManualClock>) -> Store {
    open(Arc::new(MemEngine::new()), clock)
}
