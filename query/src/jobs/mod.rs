//! Batch comparison jobs as stored: a job's description and progress, its
//! input chunks as they arrived and its output chunks as they were
//! answered, in the `jobs` column family. This module defines the layout
//! and reads and writes it; [`queue`] takes and serves jobs, [`runner`]
//! runs them.
//!
//! Layout (`id` = the 16 random bytes of the job id, `n` = chunk number,
//! 8 bytes big-endian):
//! - `m id` -> [`JobMeta`]
//! - `i id n` -> [`Chunk`](crate::batch::Chunk), the request lines, sealed
//! - `o id n` -> answer lines of chunk `n` (NDJSON bytes), sealed
//!
//! Request and answer lines carry ID numbers, and no real key may reach
//! the data directory (its write-ahead log, table files, backups) in the
//! clear, so chunks are stored sealed: [`SEALED`] ‖ the store's job sealer
//! (`basedata_store::pseudo::Sealing::Jobs`: ChaCha20-Poly1305 under a key
//! derived from the secret, fresh random nonce) over the value, with the
//! chunk's storage key (kind, job id, chunk number) as associated data, so
//! a chunk moved to another job, position or kind fails to open. The
//! sealed plaintext of an input chunk is its codec encoding, of an output
//! chunk the answer bytes themselves. Chunks stored before sealing (codec
//! format byte 1, in the clear) are still read, so jobs acknowledged
//! before an upgrade finish and can be downloaded; they are deleted with
//! their job at the end of its retention like any other. Meta holds no
//! key (department, purpose, counts) and stays unsealed.
//!
//! A chunk's output and the meta recording it as done are written in the
//! same atomic batch as the chunk's audit entries, so a resumed job neither
//! repeats nor skips a chunk.

pub mod queue;
pub mod runner;

use crate::batch::{Chunk, Counts};
use basedata_store::codec::{decode, encode, FORMAT_V1};
use basedata_store::engine::{prefix_end, Cf, Engine, WriteBatch};
use basedata_store::{Error, Result, Store};

/// Format byte of a sealed chunk. A chunk in the clear, as stored before
/// chunks were sealed, starts with the codec's [`FORMAT_V1`].
pub const SEALED: u8 = 2;

/// A job id: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Result<JobId> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| Error::Config(format!("no OS randomness: {e}")))?;
        Ok(JobId(b))
    }

    /// Parses the hex form; anything else is `None`.
    pub fn parse(s: &str) -> Option<JobId> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            b[i] = hex(pair[0])? << 4 | hex(pair[1])?;
        }
        Some(JobId(b))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a job stands. Stable names: they appear in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum JobState {
    /// The input is still arriving: not yet acknowledged to the client. A
    /// job found in this state after a restart is discarded.
    Receiving,
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Receiving => "receiving",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// A job's description and progress.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct JobMeta {
    pub id: JobId,
    /// The submitting department: the only one that may see the job.
    pub department: String,
    pub operator: Option<String>,
    pub purpose: String,
    pub state: JobState,
    /// Unix microseconds.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Request lines.
    pub total: u64,
    /// Input chunks.
    pub chunks: u64,
    /// Chunks answered (and audited): the job resumes at this one.
    pub done_chunks: u64,
    pub counts: Counts,
    /// Why the job failed.
    pub error: Option<String>,
}

impl JobMeta {
    /// A job whose input is about to arrive: nothing received, counted or
    /// answered yet.
    pub fn receiving(id: JobId, department: &str, operator: Option<String>, purpose: &str, created_at: i64) -> JobMeta {
        JobMeta {
            id,
            department: department.to_owned(),
            operator,
            purpose: purpose.to_owned(),
            state: JobState::Receiving,
            created_at,
            finished_at: None,
            total: 0,
            chunks: 0,
            done_chunks: 0,
            counts: Counts::default(),
            error: None,
        }
    }
}

fn key(tag: u8, id: &JobId, n: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(tag);
    k.extend_from_slice(&id.0);
    if let Some(n) = n {
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

pub fn put_meta(b: &mut WriteBatch, m: &JobMeta) {
    b.put(Cf::Jobs, key(b'm', &m.id, None), encode(m));
}

/// Seals `plain` as the value stored under `k`.
fn sealed(store: &Store, k: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut v = vec![SEALED];
    store.job_sealer().seal_into(k, plain, &mut v)?;
    Ok(v)
}

/// The plaintext of the value stored under `k`: opened when sealed, as
/// stored (codec marker included) when it predates sealing.
fn opened(store: &Store, what: &'static str, k: &[u8], v: Vec<u8>) -> Result<Opened> {
    match v.first() {
        Some(&SEALED) => Ok(Opened::Sealed(store.job_sealer().open(k, &v[1..])?)),
        Some(&FORMAT_V1) => Ok(Opened::Clear(v)),
        Some(&other) => Err(Error::Format { what, found: other }),
        None => Err(Error::Corrupt { what, msg: "empty value".into() }),
    }
}

enum Opened {
    Sealed(Vec<u8>),
    /// A codec-encoded value stored before chunks were sealed.
    Clear(Vec<u8>),
}

pub fn put_input(store: &Store, b: &mut WriteBatch, id: &JobId, n: u64, chunk: &Chunk) -> Result<()> {
    let k = key(b'i', id, Some(n));
    let v = sealed(store, &k, &encode(chunk))?;
    b.put(Cf::Jobs, k, v);
    Ok(())
}

pub fn put_output(store: &Store, b: &mut WriteBatch, id: &JobId, n: u64, out: &[u8]) -> Result<()> {
    let k = key(b'o', id, Some(n));
    let v = sealed(store, &k, out)?;
    b.put(Cf::Jobs, k, v);
    Ok(())
}

pub fn meta(e: &dyn Engine, id: &JobId) -> Result<Option<JobMeta>> {
    match e.get(Cf::Jobs, &key(b'm', id, None))? {
        Some(v) => Ok(Some(decode("job", &v)?)),
        None => Ok(None),
    }
}

pub fn input(store: &Store, id: &JobId, n: u64) -> Result<Option<Chunk>> {
    let k = key(b'i', id, Some(n));
    let Some(v) = store.engine().get(Cf::Jobs, &k)? else { return Ok(None) };
    match opened(store, "job input", &k, v)? {
        Opened::Sealed(plain) | Opened::Clear(plain) => Ok(Some(decode("job input", &plain)?)),
    }
}

pub fn output(store: &Store, id: &JobId, n: u64) -> Result<Option<Vec<u8>>> {
    let k = key(b'o', id, Some(n));
    let Some(v) = store.engine().get(Cf::Jobs, &k)? else { return Ok(None) };
    match opened(store, "job output", &k, v)? {
        Opened::Sealed(plain) => Ok(Some(plain)),
        Opened::Clear(encoded) => Ok(Some(decode("job output", &encoded)?)),
    }
}

/// Every job, oldest first.
pub fn all(e: &dyn Engine) -> Result<Vec<JobMeta>> {
    let mut out: Vec<JobMeta> = basedata_store::codec::decode_all(e, Cf::Jobs, b"m", "job")?;
    out.sort_by_key(|m| (m.created_at, m.id.0));
    Ok(out)
}

/// Deletes every stored piece of a job (meta, input, output) in `b`.
pub fn delete_into(e: &dyn Engine, id: &JobId, b: &mut WriteBatch) -> Result<()> {
    b.delete(Cf::Jobs, key(b'm', id, None));
    for tag in [b'i', b'o'] {
        let prefix = key(tag, id, None);
        let end = prefix_end(&prefix);
        for item in e.scan(Cf::Jobs, &prefix, end.as_deref(), false)? {
            let (k, _) = item?;
            b.delete(Cf::Jobs, k.into_vec());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::clock::ManualClock;
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::{Catalog, Durability, Secret};
    use std::sync::Arc;

    fn store(secret: u8, engine: Arc<MemEngine>) -> Store {
        Store::open(engine, &Secret::from_bytes([secret; 32]), Arc::new(Catalog::builtin()), Arc::new(ManualClock::new(0)))
            .unwrap()
    }

    fn job_meta(t: i64) -> JobMeta {
        JobMeta {
            id: JobId::random().unwrap(),
            department: "d".into(),
            operator: None,
            purpose: "p".into(),
            state: JobState::Queued,
            created_at: t,
            finished_at: None,
            total: 1,
            chunks: 1,
            done_chunks: 0,
            counts: Counts::default(),
            error: None,
        }
    }

    const LINE: &[u8] = b"{\"key\":\"11010519491231002X\"}\n";

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let id = JobId::random().unwrap();
        assert_eq!(JobId::parse(&id.to_hex()), Some(id));
        assert_eq!(JobId::parse(&id.to_hex().to_uppercase()), Some(id));
        assert_ne!(JobId::random().unwrap(), id);
        for bad in ["", "abc", &"g".repeat(32), &"0".repeat(31), &"0".repeat(33), "../../etc/passwd"] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pieces_are_stored_and_deleted_per_job() {
        let e = Arc::new(MemEngine::new());
        let st = store(1, e.clone());
        let mut metas = Vec::new();
        for t in [20, 10] {
            let m = job_meta(t);
            let mut b = WriteBatch::new();
            put_meta(&mut b, &m);
            put_input(&st, &mut b, &m.id, 0, &Chunk { first_line: 1, data: b"{}\n".to_vec(), lines: 1 }).unwrap();
            put_output(&st, &mut b, &m.id, 0, b"{\"x\":1}\n").unwrap();
            e.write(b, Durability::Sync).unwrap();
            metas.push(m);
        }
        let listed = all(&*e).unwrap();
        assert_eq!(listed.iter().map(|m| m.created_at).collect::<Vec<_>>(), vec![10, 20]);
        let (a, b) = (&metas[0], &metas[1]);
        assert_eq!(output(&st, &a.id, 0).unwrap().unwrap(), b"{\"x\":1}\n");
        assert_eq!(input(&st, &a.id, 0).unwrap().unwrap().lines, 1);
        let mut batch = WriteBatch::new();
        delete_into(&*e, &a.id, &mut batch).unwrap();
        e.write(batch, Durability::Sync).unwrap();
        assert_eq!(meta(&*e, &a.id).unwrap(), None);
        assert_eq!(input(&st, &a.id, 0).unwrap(), None);
        assert_eq!(output(&st, &a.id, 0).unwrap(), None);
        assert_eq!(meta(&*e, &b.id).unwrap().as_ref(), Some(b));
        assert!(output(&st, &b.id, 0).unwrap().is_some());
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Lines are stored sealed: no ID number in the stored bytes, and a
    /// chunk opens only under its own key (job, number, kind) and secret.
    #[test]
    fn chunks_are_sealed_and_bound_to_their_place() {
        let e = Arc::new(MemEngine::new());
        let st = store(1, e.clone());
        let (a, b) = (JobId::random().unwrap(), JobId::random().unwrap());
        let chunk = Chunk { first_line: 1, data: LINE.to_vec(), lines: 1 };
        let mut w = WriteBatch::new();
        put_input(&st, &mut w, &a, 0, &chunk).unwrap();
        put_output(&st, &mut w, &a, 0, LINE).unwrap();
        e.write(w, Durability::Sync).unwrap();
        let mut stored = 0;
        for item in e.scan(Cf::Jobs, &[], None, false).unwrap() {
            let (_, v) = item.unwrap();
            assert_eq!(v[0], SEALED);
            assert!(!contains(&v, b"11010519491231002X"), "a chunk holds an ID number in the clear");
            stored += 1;
        }
        assert_eq!(stored, 2);
        assert_eq!(input(&st, &a, 0).unwrap().unwrap(), chunk);
        assert_eq!(output(&st, &a, 0).unwrap().unwrap(), LINE);
        // Moved to another job, another position or the other kind, or
        // opened with another secret: an error, never someone else's lines.
        let raw_in = e.get(Cf::Jobs, &key(b'i', &a, Some(0))).unwrap().unwrap();
        let raw_out = e.get(Cf::Jobs, &key(b'o', &a, Some(0))).unwrap().unwrap();
        let mut w = WriteBatch::new();
        w.put(Cf::Jobs, key(b'i', &b, Some(0)), raw_in.to_vec());
        w.put(Cf::Jobs, key(b'i', &a, Some(1)), raw_in.to_vec());
        w.put(Cf::Jobs, key(b'o', &a, Some(1)), raw_in.to_vec());
        w.put(Cf::Jobs, key(b'i', &a, Some(2)), raw_out.to_vec());
        e.write(w, Durability::Sync).unwrap();
        assert!(input(&st, &b, 0).is_err());
        assert!(input(&st, &a, 1).is_err());
        assert!(output(&st, &a, 1).is_err());
        assert!(input(&st, &a, 2).is_err());
        let other = store(2, Arc::new(MemEngine::new()));
        let mut w = WriteBatch::new();
        w.put(Cf::Jobs, key(b'i', &a, Some(0)), raw_in.to_vec());
        other.engine().write(w, Durability::Sync).unwrap();
        assert!(input(&other, &a, 0).is_err());
        // An unknown format byte is an error too.
        let mut w = WriteBatch::new();
        w.put(Cf::Jobs, key(b'o', &b, Some(5)), vec![9, 1, 2]);
        e.write(w, Durability::Sync).unwrap();
        assert!(matches!(output(&st, &b, 5), Err(Error::Format { found: 9, .. })));
    }

    /// Chunks stored in the clear before sealing (codec values) are still
    /// read: a job acknowledged before an upgrade finishes after it.
    #[test]
    fn chunks_stored_before_sealing_are_still_read() {
        let e = Arc::new(MemEngine::new());
        let st = store(1, e.clone());
        let id = JobId::random().unwrap();
        let chunk = Chunk { first_line: 3, data: LINE.to_vec(), lines: 1 };
        let mut w = WriteBatch::new();
        // Exactly what earlier releases wrote.
        w.put(Cf::Jobs, key(b'i', &id, Some(0)), encode(&chunk));
        w.put(Cf::Jobs, key(b'o', &id, Some(0)), encode(&LINE));
        e.write(w, Durability::Sync).unwrap();
        assert_eq!(input(&st, &id, 0).unwrap().unwrap(), chunk);
        assert_eq!(output(&st, &id, 0).unwrap().unwrap(), LINE);
    }
}
