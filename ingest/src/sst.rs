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

use basedata_store::ndjson;
use crate::line::{for_provider, parse_line, LineError};
use basedata_store::bulk::{BulkLoader, BulkOptions, BulkSummary, Staged, Stager};
use basedata_store::catalog::{Dataset, Provider};
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

/// A piece of the input that ends at a line break (but the last).
struct Chunk {
    index: u64,
    data: Vec<u8>,
}

/// A staged chunk. Line numbers are only known once the chunks before it
/// are counted, so its rejections carry their line's offset in the chunk,
/// and staged items an ordinal (chunk index, line in chunk) that orders
/// like the line number.
struct ChunkOut {
    index: u64,
    staged: Staged,
    rejects: Vec<(u64, LineError)>,
    /// Lines in the chunk, blank ones included.
    line_count: u64,
    /// Non-blank lines.
    lines: u64,
    bytes: u64,
}

/// Bits of a line ordinal for the line's place in its chunk: a chunk holds
/// at most `CHUNK_BYTES` plus one lines.
const LINE_BITS: u32 = 24;
const _: () = assert!(CHUNK_BYTES < 1 << LINE_BITS);

/// The provider a bulk load of `ds` is for: `provider`, which must be one
/// of the dataset's, or its only provider when none is named. A dataset of
/// several providers needs one named: its lines are held to that
/// provider's part as the updates endpoint would hold them (a bulk load
/// fills an empty dataset, so every line is a new record of the part).
pub fn load_provider<'a>(ds: &'a Dataset, provider: Option<&str>) -> Result<&'a Provider> {
    let named = |p: &str| {
        ds.provider_entry(p).ok_or_else(|| Error::Invalid(format!("{p} is not a provider of dataset {}", ds.id)))
    };
    match (provider, &ds.division) {
        (Some(p), _) => named(p),
        (None, None) => named(&ds.provider),
        (None, Some(_)) => {
            let ids: Vec<&str> = ds.providers.iter().map(|p| p.id.as_str()).collect();
            Err(Error::Invalid(format!(
                "dataset {} has several providers ({}): name the one whose part this load is with --provider",
                ds.id,
                ids.join(", ")
            )))
        }
    }
}

/// Bulk-loads `input` into the empty dataset `dataset` of `store` for
/// `provider` (see [`load_provider`]). Rejected lines go to `on_reject`
/// (1-based line number) in line order and do not stop the load; an error
/// from `on_reject` does.
pub fn load_file(
    store: &Store,
    dataset: &str,
    provider: Option<&str>,
    input: &Path,
    opts: BulkOptions,
    on_reject: &mut dyn FnMut(u64, &LineError) -> std::io::Result<()>,
    progress: &mut dyn FnMut(Progress),
) -> Result<FileLoadSummary> {
    let ds = store.catalog().dataset(dataset).ok_or_else(|| Error::Invalid(format!("unknown dataset {dataset}")))?;
    let by = load_provider(ds, provider)?;
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
        // Named threads, so that profiles and `top -H` tell the stages apart.
        let named = |name: &str| std::thread::Builder::new().name(name.to_owned());
        let reader = named("load-read").spawn_scoped(s, move || read_chunks(file, &chunk_tx, &free_data_rx))?;
        for _ in 0..workers {
            let (rx, tx) = (chunk_rx.clone(), out_tx.clone());
            let (free_data, free_staged) = (free_data_tx.clone(), free_staged_rx.clone());
            named("load-stage").spawn_scoped(s, move || {
                for chunk in rx {
                    let mut staged = free_staged.try_recv().unwrap_or_default();
                    staged.clear();
                    let out = stage_chunk(ds, by, stager, &chunk, staged);
                    let _ = free_data.try_send(chunk.data);
                    if tx.send(out).is_err() {
                        return;
                    }
                }
            })?;
        }
        drop((chunk_rx, out_tx, free_data_tx, free_staged_rx));
        // Results come back in any order; they are taken in input order.
        let mut waiting: BTreeMap<u64, ChunkOut> = BTreeMap::new();
        let mut next = 0u64;
        let mut bytes = 0u64;
        let mut first_line = 1u64;
        for out in &out_rx {
            let out = out?;
            waiting.insert(out.index, out);
            while let Some(out) = waiting.remove(&next) {
                for (offset, e) in &out.rejects {
                    on_reject(first_line + offset, e)?;
                }
                first_line += out.line_count;
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
    progress(Progress::Writing { records: 0, total: staged });
    summary.bulk = loader.finish(&mut |records| progress(Progress::Writing { records, total: staged }))?;
    Ok(summary)
}

/// Cuts the file into chunks of whole lines (the last one may lack its
/// line break), numbered in order.
fn read_chunks(
    mut file: File,
    tx: &crossbeam::channel::Sender<Chunk>,
    free: &crossbeam::channel::Receiver<Vec<u8>>,
) -> Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0u64;
    loop {
        let mut data = free.try_recv().unwrap_or_default();
        data.clear();
        data.reserve(carry.len() + CHUNK_BYTES);
        data.append(&mut carry);
        let read = (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut data)?;
        if read > 0 {
            match memchr::memrchr(b'\n', &data) {
                Some(end) => carry.extend_from_slice(&data[end + 1..]),
                None => {
                    // One line longer than a chunk: read on.
                    if data.len() > MAX_LINE_BYTES {
                        return Err(Error::Bulk(format!(
                            "a line longer than {} MiB after {} MiB of input",
                            MAX_LINE_BYTES >> 20,
                            index * (CHUNK_BYTES as u64 >> 20)
                        )));
                    }
                    carry = data;
                    continue;
                }
            }
            data.truncate(data.len() - carry.len());
        } else if data.is_empty() {
            return Ok(());
        }
        if tx.send(Chunk { index, data }).is_err() {
            // The consumer stopped; it reports why.
            return Ok(());
        }
        index += 1;
        if read == 0 {
            return Ok(());
        }
    }
}

fn stage_chunk(ds: &Dataset, by: &Provider, stager: Stager<'_>, chunk: &Chunk, staged: Staged) -> Result<ChunkOut> {
    let mut out = ChunkOut {
        index: chunk.index,
        staged,
        rejects: Vec::new(),
        line_count: 0,
        lines: 0,
        bytes: chunk.data.len() as u64,
    };
    for raw in ndjson::raw_lines(&chunk.data) {
        let offset = out.line_count;
        out.line_count += 1;
        let Some(line) = ndjson::content(raw, chunk.index == 0 && offset == 0) else { continue };
        out.lines += 1;
        match parse_line(ds, line).and_then(|u| new_in_part(ds, by, u)) {
            // A link reads and writes the keymap beside the records: it
            // goes through the updates endpoint, one batch at a time.
            Ok(u) if u.link.is_some() => out.rejects.push((offset, LineError {
                code: "invalid_value",
                message: "\"registration_number\" links are not taken by a bulk load; send them to the updates endpoint".into(),
                key: Some(u.key.as_str().to_owned()),
            })),
            Ok(u) => stager.stage(&u, chunk.index << LINE_BITS | offset, &mut out.staged)?,
            Err(e) => out.rejects.push((offset, e)),
        }
    }
    Ok(out)
}

/// A line of a bulk load held to `by`'s part, as a new record.
fn new_in_part(ds: &Dataset, by: &Provider, u: basedata_store::Update) -> std::result::Result<basedata_store::Update, LineError> {
    let u = for_provider(ds, Some(by), u)?;
    if let Some(division) = &ds.division {
        if let Err(r) = division.admits_new(&ds.providers, by, &u.key, u.op.change()) {
            let key = Some(u.key.as_str().to_owned());
            return Err(LineError { code: basedata_store::providers::REFUSED, message: r.0, key });
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::clock::SystemClock;
    use basedata_store::dir::{open_with_secret, OpenOptions};
    use basedata_store::keys::PersonKey;
    use basedata_store::{Catalog, Secret, SubjectKey, Value};
    use std::sync::Arc;

    /// Distinct for `i` below 50,000.
    fn person(i: u32) -> PersonKey {
        let birth =
            time::Date::from_calendar_date(1950 + (i / 1000) as i32, time::Month::March, 1 + (i % 28) as u8).unwrap();
        PersonKey::from_parts("440305", birth, (i % 1000) as u16).unwrap()
    }

    fn line(i: u32, name: &str) -> String {
        let key = person(i);
        format!(
            r#"{{"key":"{}","version":1,"fields":{{"name":"{name}","gender":"{}","birth_date":"{}","status":"normal","registered_town":"{}"}}}}"#,
            key.as_str(),
            key.gender().code(),
            key.birth_date(),
            "街".repeat(60)
        )
    }

    /// Line numbers across chunk boundaries, blank lines, CRLF and a last
    /// line without its break come out as the updates endpoint counts them.
    #[test]
    fn lines_are_numbered_across_chunks_like_the_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut n = 0u64;
        let mut valid = 0u32;
        for i in 0..12_000u32 {
            n += 1;
            match i % 997 {
                5 => {
                    text.push_str("{oops\n");
                    expected.push((n, "invalid_body"));
                }
                6 => text.push_str(" \r\n"),
                7 => {
                    let gender = format!("\"gender\":\"{}\"", person(i).gender().code());
                    text.push_str(&line(i, "x").replace(&gender, "\"gender\":\"7\""));
                    text.push_str("\r\n");
                    expected.push((n, "invalid_value"));
                }
                _ => {
                    text.push_str(&line(i, &format!("n{i}")));
                    text.push_str(if i % 2 == 0 { "\n" } else { "\r\n" });
                    valid += 1;
                }
            }
        }
        text.push_str(&line(20_000, "last"));
        valid += 1;
        assert!(text.len() > 3 * CHUNK_BYTES, "several chunks");
        let input = dir.path().join("in.ndjson");
        std::fs::write(&input, &text).unwrap();

        let data = dir.path().join("data");
        let (catalog, clock) = (Arc::new(Catalog::builtin()), Arc::new(SystemClock));
        let store = open_with_secret(&data, &Secret::from_bytes([3; 32]), catalog, clock, &OpenOptions::default())
            .unwrap()
            .store;
        let mut rejects = Vec::new();
        let mut reading = 0;
        let sum = load_file(
            &store,
            "hukou",
            None,
            &input,
            BulkOptions::new(dir.path()),
            &mut |n, e| {
                rejects.push((n, e.code));
                Ok(())
            },
            &mut |p| {
                if let Progress::Reading { bytes, total } = p {
                    assert!(bytes <= total);
                    reading = bytes;
                }
            },
        )
        .unwrap();
        assert_eq!(reading, text.len() as u64);
        assert_eq!(rejects, expected);
        let blank = 12_000 / 997 + 1;
        assert_eq!(sum.lines, 12_001 - blank as u64);
        assert_eq!((sum.rejected, sum.bulk.applied), (expected.len() as u64, valid as u64));
        let last = store.get(&SubjectKey::Person(person(20_000)), "hukou", None).unwrap().unwrap();
        assert_eq!(last.field("name"), Some(&Value::Str("last".into())));
        let r = store.get(&SubjectKey::Person(person(9)), "hukou", None).unwrap().unwrap();
        assert_eq!(r.field("name"), Some(&Value::Str("n9".into())));
    }
}
