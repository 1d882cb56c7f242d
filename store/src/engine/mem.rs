//! In-memory engine: ordered maps behind a lock. For tests, the offline
//! tools' scratch stores and as the second implementation that keeps the
//! engine trait from growing RocksDB-shaped corners. It has none of the
//! optional capabilities (SST ingestion, checkpoints, statistics): with
//! nothing on disk they would be pretence.

use super::{BatchOp, Cf, Durability, Engine, KvIter, WriteBatch};
use crate::Result;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemEngine {
    cfs: RwLock<Vec<Map>>,
    /// How much longer each write takes, in microseconds ([`MemEngine::delay_writes`]).
    write_delay_us: AtomicU64,
    /// The next write panics ([`MemEngine::panic_next_write`]).
    panic_next: std::sync::atomic::AtomicBool,
    /// Writes fail with this engine message, this many more of them
    /// (`u64::MAX`: all) ([`MemEngine::fail_writes`], [`MemEngine::fail_next_writes`]).
    failing: std::sync::Mutex<Option<(String, u64)>>,
}

impl MemEngine {
    pub fn new() -> Self {
        MemEngine {
            cfs: RwLock::new(vec![Map::new(); Cf::ALL.len()]),
            write_delay_us: AtomicU64::new(0),
            panic_next: Default::default(),
            failing: Default::default(),
        }
    }

    /// Makes every write from now on take `delay` longer: a slow disk, for
    /// tests of what waits on a write (the writer's stall counters, the
    /// request time limit).
    pub fn delay_writes(&self, delay: Duration) {
        self.write_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Makes the next write panic, writing nothing: a bug in the engine,
    /// for tests of what the writer thread does then.
    pub fn panic_next_write(&self) {
        self.panic_next.store(true, Ordering::Relaxed);
    }

    /// Makes every write from now on fail, writing nothing, as an engine
    /// reporting `message` would (a full disk, say); `None` ends it.
    pub fn fail_writes(&self, message: Option<&str>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = message.map(|m| (m.to_owned(), u64::MAX));
    }

    /// Makes the next `n` writes fail as [`MemEngine::fail_writes`] does,
    /// and the ones after them succeed: a passing failure.
    pub fn fail_next_writes(&self, n: u64, message: &str) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = (n > 0).then(|| (message.to_owned(), n));
    }
}

impl Engine for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cfs = self.cfs.read().unwrap_or_else(|e| e.into_inner());
        Ok(cfs[cf.index()].get(key).cloned())
    }

    fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<()> {
        let delay = self.write_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if self.panic_next.swap(false, Ordering::Relaxed) {
            panic!("an injected engine panic");
        }
        {
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((message, left)) = failing.as_mut() {
                let message = message.clone();
                if *left != u64::MAX {
                    *left -= 1;
                    if *left == 0 {
                        *failing = None;
                    }
                }
                return Err(crate::Error::engine(message));
            }
        }
        super::check_keys(&batch)?;
        // One write lock for the whole batch is what makes it atomic.
        let mut cfs = self.cfs.write().unwrap_or_else(|e| e.into_inner());
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { cf, key, value } => {
                    cfs[cf.index()].insert(key, value);
                }
                BatchOp::Delete { cf, key } => {
                    cfs[cf.index()].remove(&key);
                }
                BatchOp::DeleteRange { cf, start, end } => {
                    let map = &mut cfs[cf.index()];
                    let mut tail = map.split_off(&start);
                    let mut kept = tail.split_off(&end);
                    map.append(&mut kept);
                    drop(tail);
                }
            }
        }
        Ok(())
    }

    fn scan<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<KvIter<'a>> {
        let cfs = self.cfs.read().unwrap_or_else(|e| e.into_inner());
        let upper = match end {
            Some(e) => Bound::Excluded(e.to_vec()),
            None => Bound::Unbounded,
        };
        if let Some(e) = end {
            if e <= start {
                return Ok(Box::new(std::iter::empty()));
            }
        }
        // A snapshot copy keeps the lock short; the memory engine is not for
        // large data.
        let mut items: Vec<_> = cfs[cf.index()]
            .range((Bound::Included(start.to_vec()), upper))
            .map(|(k, v)| Ok((k.clone().into_boxed_slice(), v.clone().into_boxed_slice())))
            .collect();
        if reverse {
            items.reverse();
        }
        Ok(Box::new(items.into_iter()))
    }
}
