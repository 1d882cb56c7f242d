//! Batch comparison jobs as stored: a job's description and progress, its
//! input chunks as they arrived and its output chunks as they were
//! answered, in the `jobs` column family. This module defines the layout
//! and reads and writes it; [`queue`] takes and serves jobs, [`runner`]
//! runs them.
//!
//! Layout (`id` = the 16 random bytes of the job id, `n` = chunk number,
//! 8 bytes big-endian):
//! - `m id` -> [`JobMeta`]
//! - `i id n` -> [`Chunk`](crate::batch::Chunk), the request lines
//! - `o id n` -> answer lines of chunk `n` (NDJSON bytes)
//!
//! A chunk's output and the meta recording it as done are written in the
//! same atomic batch as the chunk's audit entries, so a resumed job neither
//! repeats nor skips a chunk.

pub mod queue;
pub mod runner;

use crate::batch::{Chunk, Counts};
use basedata_store::codec::{decode, encode};
use basedata_store::engine::{prefix_end, Cf, Engine, WriteBatch};
use basedata_store::{Error, Result};

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

pub fn put_input(b: &mut WriteBatch, id: &JobId, n: u64, chunk: &Chunk) {
    b.put(Cf::Jobs, key(b'i', id, Some(n)), encode(chunk));
}

pub fn put_output(b: &mut WriteBatch, id: &JobId, n: u64, out: &[u8]) {
    b.put(Cf::Jobs, key(b'o', id, Some(n)), encode(&out));
}

pub fn meta(e: &dyn Engine, id: &JobId) -> Result<Option<JobMeta>> {
    match e.get(Cf::Jobs, &key(b'm', id, None))? {
        Some(v) => Ok(Some(decode("job", &v)?)),
        None => Ok(None),
    }
}

pub fn input(e: &dyn Engine, id: &JobId, n: u64) -> Result<Option<Chunk>> {
    match e.get(Cf::Jobs, &key(b'i', id, Some(n)))? {
        Some(v) => Ok(Some(decode("job input", &v)?)),
        None => Ok(None),
    }
}

pub fn output(e: &dyn Engine, id: &JobId, n: u64) -> Result<Option<Vec<u8>>> {
    match e.get(Cf::Jobs, &key(b'o', id, Some(n)))? {
        Some(v) => Ok(Some(decode("job output", &v)?)),
        None => Ok(None),
    }
}

/// Every job, oldest first.
pub fn all(e: &dyn Engine) -> Result<Vec<JobMeta>> {
    let end = prefix_end(b"m");
    let mut out = Vec::new();
    for item in e.scan(Cf::Jobs, b"m", end.as_deref(), false)? {
        let (_, v) = item?;
        out.push(decode::<JobMeta>("job", &v)?);
    }
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
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::Durability;

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
        let e = MemEngine::new();
        let mut metas = Vec::new();
        for t in [20, 10] {
            let id = JobId::random().unwrap();
            let m = JobMeta {
                id,
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
            };
            let mut b = WriteBatch::new();
            put_meta(&mut b, &m);
            put_input(&mut b, &id, 0, &Chunk { first_line: 1, data: b"{}\n".to_vec(), lines: 1 });
            put_output(&mut b, &id, 0, b"{\"x\":1}\n");
            e.write(b, Durability::Sync).unwrap();
            metas.push(m);
        }
        let listed = all(&e).unwrap();
        assert_eq!(listed.iter().map(|m| m.created_at).collect::<Vec<_>>(), vec![10, 20]);
        let (a, b) = (&metas[0], &metas[1]);
        assert_eq!(output(&e, &a.id, 0).unwrap().unwrap(), b"{\"x\":1}\n");
        assert_eq!(input(&e, &a.id, 0).unwrap().unwrap().lines, 1);
        let mut batch = WriteBatch::new();
        delete_into(&e, &a.id, &mut batch).unwrap();
        e.write(batch, Durability::Sync).unwrap();
        assert_eq!(meta(&e, &a.id).unwrap(), None);
        assert_eq!(input(&e, &a.id, 0).unwrap(), None);
        assert_eq!(output(&e, &a.id, 0).unwrap(), None);
        assert_eq!(meta(&e, &b.id).unwrap().as_ref(), Some(b));
        assert!(output(&e, &b.id, 0).unwrap().is_some());
    }
}
