//! The pipeline of `basedata load`: an NDJSON update file is read in
//! chunks, every line is validated exactly as the updates endpoint does it
//! ([`parse_line`], same line numbers, blank lines skipped) and staged on
//! every core, and the staged updates are sorted, written as SST files
//! and ingested by [`basedata_store::bulk`] (see there for the semantics).
//!
//! Threads: one reads chunks that end at a line break; one worker per core
//! parses and stages them (parsing and sealing key mappings are most of
//! the work); the calling thread takes the results in input order, so the
//! rejected lines are reported in line order, and feeds the sorter. Every
//! channel is bounded, so memory stays at the sorter's budget plus a few
//! chunks.

use crate::line::{parse_line, LineError};
use basedata_store::bulk::{BulkLoader, BulkOptions, BulkSummary, Staged, Stager};
use basedata_store::catalog::Dataset;
use basedata_store::{Error, Result, Store};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Input bytes per chunk: large enough to amortize the hand-offs, small
/// enough that workers stay evenly busy.
const CHUNK_BYTES: usize = 1 << 20;
/// Longest accepted line (a record with a two-megabyte photo in base64 is
/// under three).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Where a load is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Reading and validating: input bytes done of the file's size.
    Reading { bytes: u64, total: u64 },
    /// Writing the sorted records: done of the valid lines.
    Writing { records: u64, total: u64 },
}

/// What a load of one file did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLoadSummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines rejected by validation (each reported to `on_reject`).
    pub rejected: u64,
    pub bulk: BulkSummary,
}

struct Chunk {
    index: u64,
    first_line: u64,
    data: Vec<u8>,
}

struct ChunkOut {
    index: u64,
    staged: Staged,
    rejects: Vec<(u64, LineError)>,
    lines: u64,
    bytes: u64,
}

/// Bulk-loads `input` into the empty dataset `dataset` of `store`. Rejected
/// lines go to `on_reject` (1-based line number) in line order and do not
/// stop the load; an error from `on_reject` does.
pub fn load_file(
    store: &Store,
    dataset: &str,
    input: &Path,
    opts: BulkOptions,
    on_reject: &mut dyn FnMut(u64, &LineError) -> std::io::Result<()>,
    progress: &mut dyn FnMut(Progress),
) -> Result<FileLoadSummary> {
    let ds = store
        .catalog()
        .dataset(dataset)
        .ok_or_else(|| Error::Invalid(format!("unknown dataset {dataset}")))?;
    let file = File::open(input)?;
    let total = file.metadata()?.len();
    let mut loader = BulkLoader::new(store, &ds.id, opts)?;
    let stager = loader.stager();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 16);
    let mut summary = FileLoadSummary::default();
    std::thread::scope(|s| -> Result<()> {
        let (chunk_tx, chunk_rx) = crossbeam::channel::bounded::<Chunk>(2 * workers);
        let (out_tx, out_rx) = crossbeam::channel::bounded::<Result<ChunkOut>>(2 * workers);
        // Buffers go back to where they are filled, so that the same few
        // stay in use (fresh ones would be page-faulted in, and freed on
        // another thread than the one that took them).
        let (free_data_tx, free_data_rx) = crossbeam::channel::bounded::<Vec<u8>>(4 * workers);
        let (free_staged_tx, free_staged_rx) = crossbeam::channel::bounded::<Staged>(4 * workers);
        let reader = s.spawn(move || read_chunks(file, &chunk_tx, &free_data_rx));
        for _ in 0..workers {
            let (rx, tx) = (chunk_rx.clone(), out_tx.clone());
            let (free_data, free_staged) = (free_data_tx.clone(), free_staged_rx.clone());
            s.spawn(move || {
                for chunk in rx {
                    let mut staged = free_staged.try_recv().unwrap_or_default();
                    staged.clear();
                    let out = stage_chunk(ds, stager, &chunk, staged);
                    let _ = free_data.try_send(chunk.data);
                    if tx.send(out).is_err() {
                        return;
                    }
                }
            });
        }
        drop((chunk_rx, out_tx, free_data_tx, free_staged_rx));
        // Results come back in any order; they are taken in input order.
        let mut waiting: BTreeMap<u64, ChunkOut> = BTreeMap::new();
        let mut next = 0u64;
        let mut bytes = 0u64;
        for out in &out_rx {
            let out = out?;
            waiting.insert(out.index, out);
            while let Some(out) = waiting.remove(&next) {
                for (line, e) in &out.rejects {
                    on_reject(*line, e)?;
                }
                summary.rejected += out.rejects.len() as u64;
                summary.lines += out.lines;
                loader.push(&out.staged)?;
                let _ = free_staged_tx.try_send(out.staged);
                bytes += out.bytes;
                next += 1;
                progress(Progress::Reading { bytes, total });
            }
        }
        drop(out_rx);
        reader.join().unwrap_or_else(|_| Err(Error::Bulk("the input reader panicked".into())))
    })?;
    let staged = loader.staged();
    eprintln!("TIMING read done");
    progress(Progress::Writing { records: 0, total: staged });
    summary.bulk = loader.finish(&mut |records| progress(Progress::Writing { records, total: staged }))?;
    Ok(summary)
}

/// Cuts the file into chunks of whole lines (the last one may lack its
/// line break) numbered in order, with the number of their first line.
fn read_chunks(
    mut file: File,
    tx: &crossbeam::channel::Sender<Chunk>,
    free: &crossbeam::channel::Receiver<Vec<u8>>,
) -> Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0u64;
    let mut line = 1u64;
    loop {
        let mut data = free.try_recv().unwrap_or_default();
        data.clear();
        data.reserve(carry.len() + CHUNK_BYTES);
        data.append(&mut carry);
        let read = (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut data)?;
        if read > 0 {
            match data.iter().rposition(|&b| b == b'\n') {
                Some(end) => carry.extend_from_slice(&data[end + 1..]),
                None => {
                    // One line longer than a chunk: read on.
                    if data.len() > MAX_LINE_BYTES {
                        return Err(Error::Bulk(format!("line {line} is longer than {} MiB", MAX_LINE_BYTES >> 20)));
                    }
                    carry = data;
                    continue;
                }
            }
            data.truncate(data.len() - carry.len());
        } else if data.is_empty() {
            return Ok(());
        }
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        if tx.send(Chunk { index, first_line: line, data }).is_err() {
            // The consumer stopped; it reports why.
            return Ok(());
        }
        index += 1;
        line += lines;
        if read == 0 {
            return Ok(());
        }
    }
}

fn stage_chunk(ds: &Dataset, stager: Stager<'_>, chunk: &Chunk, staged: Staged) -> Result<ChunkOut> {
    let mut out = ChunkOut {
        index: chunk.index,
        staged,
        rejects: Vec::new(),
        lines: 0,
        bytes: chunk.data.len() as u64,
    };
    let mut body = chunk.data.as_slice();
    if body.last() == Some(&b'\n') {
        body = &body[..body.len() - 1];
    }
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let n = chunk.first_line + i as u64;
        out.lines += 1;
        match parse_line(ds, line) {
            Ok(u) => stager.stage(&u, n, &mut out.staged)?,
            Err(e) => out.rejects.push((n, e)),
        }
    }
    Ok(out)
}
