//! Backups of a RocksDB store: a consistent point-in-time copy taken while
//! the store keeps serving, kept incrementally in a self-describing backup
//! directory, and verified end to end before a restore is put in place.
//!
//! How a backup is taken, and why this way:
//! - The process that has the store open makes the copy (the server, asked
//!   over its control socket, or the `backup` command itself when nothing
//!   serves the store). Only a primary RocksDB instance can pin a consistent
//!   set of files: a checkpoint or backup must stop the deletion of obsolete
//!   files while it copies, read-only and secondary instances refuse that
//!   (`DisableFileDeletions` is not supported there), and the primary keeps
//!   deleting compacted tables and old WAL files under them. A logical export
//!   through a secondary instance would be consistent but never incremental.
//! - First, a RocksDB checkpoint of the live store inside the data directory:
//!   memtables flushed, hard links to the immutable table files, a copy of
//!   the MANIFEST and of the WAL written since. It is exactly the state a
//!   crash at that instant would leave: every write batch whose WAL record
//!   was written before it — so every update acknowledged before the backup
//!   began, acknowledgement waiting for the synced WAL — and each batch whole
//!   or not at all, so records, change log, audit chain and counters agree.
//! - The checkpoint is opened as a private copy (no compactions) and
//!   summarized: store format, store identity, last change-log sequence
//!   number, audit chain head, and per column family an entry count and a
//!   BLAKE3 digest over every key and value. Reading everything also checks
//!   every block checksum before the copy is kept.
//! - RocksDB's BackupEngine backs the checkpoint up into `TO/rocksdb`. Table
//!   files are shared between backups by file identity, size and checksum,
//!   so a second backup into the same directory copies only the tables
//!   written since, plus the small MANIFEST and OPTIONS files; every file's
//!   checksum is recorded and checked again on restore.
//! - The summary, with the backup id, time and copy figures, is written to
//!   `TO/manifests/ID.json`; a backup without its manifest is incomplete.
//!
//! A restore rebuilds the store in a staging directory inside the new data
//! directory, opens it, recomputes the summary and compares it with the
//! manifest, checks the secret when one is given (secret check value, audit
//! chain), and only then moves the files into place, RocksDB's `CURRENT`
//! last, so that an interrupted restore never leaves something that opens
//! as a store.
//!
//! The secret is never part of a backup: it lives outside the data directory
//! (identity separation), and without it a backup holds only pseudonyms and
//! sealed keys. Operators back the key file up separately, to another place.
//! Manifests hold no personal data: counts, sequence numbers and hashes.

use crate::audit::{load_head, AuditFiles, ChainHead};
use crate::clock::{Clock, SystemClock};
use crate::engine::rocks::{engine_err, RocksEngine};
use crate::engine::{Cf, Engine};
use crate::pseudo::{Pseudonymizer, Secret};
use crate::record::seq_from_key;
use crate::store::{META_FORMAT, META_LAST_SEQ, META_SECRET_CHECK, STORE_FORMAT};
use crate::{Catalog, Error, Result, Store};
use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the backup directory layout; restore refuses others.
pub const BACKUP_FORMAT: u32 = 1;
/// Marks a backup directory and names the store whose backups it holds.
pub const MARKER_FILE: &str = "BASEDATA-BACKUP.json";
const README_FILE: &str = "README.txt";
const ENGINE_DIR: &str = "rocksdb";
const MANIFEST_DIR: &str = "manifests";
/// Where a backup stages its checkpoint: inside the data directory, so that
/// the checkpoint's hard links stay on the store's own file system even when
/// the data directory is a mount point. RocksDB ignores names it did not make.
pub const BACKUP_STAGING: &str = ".backup-staging";
/// Where a restore rebuilds the store before moving it into place.
pub const RESTORE_STAGING: &str = ".restore-staging";
/// Left in a restored data directory: the store goes back to the backup's
/// time. A cluster node started on it first takes back from the log the
/// audit entries it shipped after that time (`Store::take_back_shipped`),
/// and then removes the file; a single node has nothing to take back.
pub const RESTORED_MARKER: &str = "RESTORED-FROM-BACKUP";

const README: &str = "\
This directory holds backups of one basedata store (see BASEDATA-BACKUP.json).

  rocksdb/         RocksDB BackupEngine files; table files are shared between
                   backups, so each backup copies only what is new
  manifests/ID.json  one per backup: time, last change-log sequence number,
                   audit chain head, per column family entry count and digest

Restore with `basedata restore --from THIS_DIR --data NEW_DIR [--backup-id ID]`;
the restore is checked against the manifest before it is put in place.

The store's secret key is NOT in this directory. Without it the data cannot
be served: keep a copy of the key file (DIR.key beside the data directory,
or the configured key file) in a separate, protected place.
";

/// What one backup holds, written to `manifests/ID.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Unix microseconds.
    pub created_at_micros: i64,
    /// Version of the software that wrote the backup.
    pub software: String,
    pub summary: Summary,
    pub copy: CopyStats,
    /// A reminder for whoever finds the directory: the secret is not here.
    pub secret_key: String,
}

/// The logical content of a store, comparable across copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub store_format: u8,
    /// Identifies a store and every copy of it without revealing anything
    /// about its secret: a hash of the stored secret check value.
    pub store_id: String,
    /// Last change-log sequence number (0: no change yet).
    pub last_seq: u64,
    pub audit_head: AuditHead,
    /// One per column family, in `Cf::ALL` order.
    pub families: Vec<FamilySummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    /// Hex SHA-256 of the last entry (zeros when the log is empty).
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilySummary {
    pub name: String,
    pub entries: u64,
    /// Key and value bytes.
    pub bytes: u64,
    /// Hex BLAKE3 over every (key length, key, value length, value) in key order.
    pub digest: String,
}

/// What a backup cost: all files it references, and those it had to copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStats {
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
}

/// Outcome of a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub manifest: Manifest,
    /// Whether a secret was given and matched the restored store.
    pub secret_checked: bool,
    /// Audit entries verified along the chain.
    pub audit_entries: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
    store_id: String,
}

fn fail(msg: String) -> Error {
    Error::Backup(msg)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_id_from_check(check: &[u8]) -> String {
    hex(&blake3::derive_key("basedata store id v1", check)[..16])
}

/// The identity of the store `secret` belongs to, as a manifest names it:
/// lets a restore refuse a wrong key before copying anything.
pub fn store_id_for_secret(secret: &Secret) -> String {
    store_id_from_check(&Pseudonymizer::new(secret).check_value())
}

/// The id of the store `engine` holds (see [`Summary::store_id`]).
fn store_id_of(engine: &dyn Engine) -> Result<String> {
    let check = engine
        .get(Cf::Meta, META_SECRET_CHECK)?
        .ok_or_else(|| Error::Corrupt { what: "store", msg: "no secret check value".into() })?;
    Ok(store_id_from_check(&check))
}

/// Reads the summary of a store: needs no secret, reads every entry.
pub fn summarize(engine: &dyn Engine) -> Result<Summary> {
    match engine.get(Cf::Meta, META_FORMAT)?.as_deref() {
        Some([f]) if *f == STORE_FORMAT => {}
        Some(f) => return Err(Error::Format { what: "store", found: f.first().copied().unwrap_or(0) }),
        None => return Err(Error::Corrupt { what: "store", msg: "no format marker: not a basedata store".into() }),
    }
    let store_id = store_id_of(engine)?;
    // As `Store::open` computes it: the change log, or meta once pruned.
    let mut last_seq = match engine.get(Cf::Meta, META_LAST_SEQ)? {
        Some(b) => seq_from_key(&b)?,
        None => 0,
    };
    if let Some(item) = engine.scan(Cf::Changes, &[], None, true)?.next() {
        last_seq = last_seq.max(seq_from_key(&item?.0)?);
    }
    let head = load_head(engine)?;
    let mut families = Vec::with_capacity(Cf::ALL.len());
    for cf in Cf::ALL {
        let mut h = blake3::Hasher::new();
        let (mut entries, mut bytes) = (0u64, 0u64);
        for item in engine.scan(cf, &[], None, false)? {
            let (k, v) = item?;
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(&k);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(&v);
            entries += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        families.push(FamilySummary { name: cf.name().into(), entries, bytes, digest: h.finalize().to_hex().to_string() });
    }
    Ok(Summary {
        store_format: STORE_FORMAT,
        store_id,
        last_seq,
        audit_head: AuditHead { seq: head.seq, hash: hex(&head.hash) },
        families,
    })
}

/// Removes a directory tree when dropped (staging areas, on every path).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn remove_stale(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `bytes` so that `path` holds either the old or the new content,
/// durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Every file under `dir` with its size, by path relative to `dir`.
fn list_files(dir: &Path) -> Result<BTreeMap<PathBuf, u64>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| entry.path());
                out.insert(rel, meta.len());
            }
        }
    }
    Ok(out)
}

/// Resolves symbolic links as far as the path exists, so that nesting
/// checks see through them.
fn resolved(path: &Path) -> Result<PathBuf> {
    // `..` taken by the text first: past a directory that does not exist
    // yet, canonicalizing cannot see it, and `/srv/new/..` would pass
    // for a directory inside `/srv/new`.
    let mut abs = PathBuf::new();
    for part in std::path::absolute(path)?.components() {
        match part {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(p), Some(name)) => {
                rest.push(name.to_os_string());
                existing = p;
            }
            _ => return Ok(abs),
        }
    }
}

fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    match fs::read(dir.join(MARKER_FILE)) {
        Ok(bytes) => {
            let m: Marker = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt { what: "backup marker", msg: e.to_string() })?;
            if m.format != BACKUP_FORMAT {
                return Err(fail(format!(
                    "{} uses backup format {}; this version reads format {BACKUP_FORMAT}",
                    dir.display(),
                    m.format
                )));
            }
            Ok(Some(m))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_empty_dir(dir: &Path) -> Result<Option<bool>> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(Some(it.next().is_none())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes `to` a backup directory of the store `store_id`, or checks it is one.
fn open_target(to: &Path, store_id: &str) -> Result<()> {
    match read_marker(to)? {
        Some(m) if m.store_id == store_id => {}
        Some(_) => {
            return Err(fail(format!(
                "{} holds backups of another store; use one backup directory per store",
                to.display()
            )))
        }
        None => {
            if is_empty_dir(to)? == Some(false) {
                return Err(fail(format!("{} is not empty and is not a basedata backup directory", to.display())));
            }
            fs::create_dir_all(to)?;
            // Never over a file of that name: the check above and the
            // directory's making are not one step.
            let mut readme = fs::OpenOptions::new().write(true).create_new(true).open(to.join(README_FILE)).map_err(|e| {
                fail(format!("{} is not an empty directory for a new backup directory ({e})", to.display()))
            })?;
            std::io::Write::write_all(&mut readme, README.as_bytes())?;
            let marker = Marker { format: BACKUP_FORMAT, store_id: store_id.to_owned() };
            write_atomic(&to.join(MARKER_FILE), &serde_json::to_vec_pretty(&marker).expect("marker serializes"))?;
        }
    }
    fs::create_dir_all(to.join(MANIFEST_DIR))?;
    Ok(())
}

fn backup_engine(dir: &Path) -> Result<BackupEngine> {
    let mut opts = BackupEngineOptions::new(dir).map_err(engine_err)?;
    opts.set_max_background_operations(2);
    let env = rocksdb::Env::new().map_err(engine_err)?;
    BackupEngine::open(&opts, &env).map_err(engine_err)
}

fn manifest_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(MANIFEST_DIR).join(format!("{id}.json"))
}

/// Backs up the open store `engine` into the backup directory `to` (created
/// if missing) and returns the new backup's manifest. Writers may keep
/// writing meanwhile; backups of one store must not run concurrently, which
/// holds when only the process owning the store makes them. An engine
/// without checkpoints (the memory engine) is refused with
/// [`Error::Unsupported`].
pub fn create(engine: &dyn Engine, to: &Path) -> Result<Manifest> {
    create_with(engine, to, &mut || ())
}

/// [`create`], calling `taken` as soon as the copy of the store is taken
/// (before its files are copied into `to`): what the caller held still
/// for the copy may go on from there.
pub fn create_with(engine: &dyn Engine, to: &Path, taken: &mut dyn FnMut()) -> Result<Manifest> {
    let checkpoint = engine.checkpoint().ok_or(Error::Unsupported("backups need an engine with checkpoints"))?;
    // A load stopped half-way is finished from staged files outside the
    // store, which a backup would not hold: it is finished first.
    if engine.get(Cf::Meta, crate::engine::BULK_LOAD_MARKER)?.is_some() {
        return Err(fail(
            "a bulk load of this store was interrupted and is not finished; start the server on it once (opening the \
             store finishes the load from its staged files), then back it up"
                .into(),
        ));
    }
    let data = checkpoint.dir();
    let check = engine.get(Cf::Meta, META_SECRET_CHECK)?.ok_or_else(|| {
        fail(format!("{} holds no basedata store", data.display()))
    })?;
    let store_id = store_id_from_check(&check);
    let (data_abs, to_abs) = (resolved(data)?, resolved(to)?);
    if to_abs.starts_with(&data_abs) || data_abs.starts_with(&to_abs) {
        return Err(fail(format!(
            "the backup directory {} and the data directory {} must not contain each other",
            to.display(),
            data.display()
        )));
    }
    open_target(to, &store_id)?;

    let staging = data.join(BACKUP_STAGING);
    remove_stale(&staging)?;
    // Declared before the copy so that the copy is closed before its files go.
    let _cleanup = RemoveOnDrop(staging.clone());
    checkpoint.create_checkpoint(&staging)?;
    taken();
    // The checkpoint is a RocksDB directory: opened as one, for the
    // BackupEngine below.
    let copy = RocksEngine::open_copy(&staging)?;
    let summary = summarize(&copy)?;
    if summary.store_id != store_id {
        return Err(Error::Corrupt { what: "checkpoint", msg: "store identity changed while copying".into() });
    }

    let engine_dir = to.join(ENGINE_DIR);
    let before = list_files(&engine_dir)?;
    let mut be = backup_engine(&engine_dir)?;
    // The flush turns the checkpoint's WAL tail into tables, so that a
    // restore replays nothing.
    be.create_new_backup_flush(copy.db(), true).map_err(engine_err)?;
    let info = be
        .get_backup_info()
        .into_iter()
        .max_by_key(|i| i.backup_id)
        .ok_or_else(|| fail("the backup engine lists no backup after creating one".into()))?;
    be.verify_backup(info.backup_id).map_err(engine_err)?;
    drop(be);
    drop(copy);

    let after = list_files(&engine_dir)?;
    let mut copy_stats = CopyStats { files_total: info.num_files as u64, bytes_total: info.size, ..Default::default() };
    for (path, size) in &after {
        // `meta/ID` describes the backup and is not one of its files.
        if !before.contains_key(path) && !path.starts_with("meta") {
            copy_stats.files_copied += 1;
            copy_stats.bytes_copied += size;
        }
    }
    let now = SystemClock.now_micros();
    let created_at = time::OffsetDateTime::from_unix_timestamp_nanos(now as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let manifest = Manifest {
        format: BACKUP_FORMAT,
        backup_id: info.backup_id,
        created_at,
        created_at_micros: now,
        software: format!("basedata {}", env!("CARGO_PKG_VERSION")),
        summary,
        copy: copy_stats,
        secret_key: "not included: restore needs the store's key file, backed up separately".into(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    write_atomic(&manifest_path(to, info.backup_id), &json)?;
    Ok(manifest)
}

/// Reads the manifest of backup `id` in `from`.
pub fn read_manifest(from: &Path, id: u32) -> Result<Option<Manifest>> {
    match fs::read(manifest_path(from, id)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt { what: "backup manifest", msg: e.to_string() }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every complete backup's manifest in the backup directory `from`, by id.
pub fn manifests(from: &Path) -> Result<Vec<Manifest>> {
    read_marker(from)?.ok_or_else(|| fail(format!("{} is not a basedata backup directory (no {MARKER_FILE})", from.display())))?;
    let mut ids: Vec<u32> = Vec::new();
    for entry in fs::read_dir(from.join(MANIFEST_DIR))? {
        let name = entry?.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(read_manifest(from, id)?);
    }
    Ok(out)
}

/// What one backup's recorded audit head says of the live chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupAnchor {
    pub backup_id: u32,
    pub created_at: String,
    /// The head the backup recorded.
    pub seq: u64,
    /// Whether the live chain holds that very head, or removed it for the
    /// retention period (see `note`).
    pub ok: bool,
    pub problem: Option<String>,
    /// Why the head could not be checked: entries up to it and past it
    /// were removed for the retention period, a cut the trail names.
    pub note: Option<String>,
}

/// Checks the live chain of `store` against the audit head each of its
/// backups in `from` recorded: the chain must hold, at each such sequence
/// number, an entry with that hash. The chain's own check finds entries
/// changed without their hashes recomputed; this one finds history cut
/// back or rewritten hash and all by someone who can write the store's
/// files, as far as a backup kept elsewhere covers it. Backups of other
/// stores are refused.
pub fn check_against_backups(store: &Store, from: &Path) -> Result<Vec<BackupAnchor>> {
    let ours = store_id_of(&**store.engine())?;
    let (live, kept) = (store.audit_head()?, store.audit_files().local_anchor()?);
    let mut out = Vec::new();
    for m in manifests(from)? {
        if m.summary.store_id != ours {
            return Err(fail(format!("{} holds backups of another store", from.display())));
        }
        let head = &m.summary.audit_head;
        // A backup older than the retention period is expected, and its
        // head with it (the chain check holds the cut to a named one).
        let (problem, note) = match head_problem(store, live, kept, head.seq, &head.hash, &format!("backup {}", m.backup_id))? {
            Some(p) if head.seq < kept.seq => (None, Some(p)),
            p => (p, None),
        };
        out.push(BackupAnchor { backup_id: m.backup_id, created_at: m.created_at.clone(), seq: head.seq, ok: problem.is_none(), problem, note });
    }
    Ok(out)
}

/// Checks the live chain of `store` against a head recorded elsewhere
/// (`seq`, and the entry's hash as hex: what the server logs as the
/// audit head, or a backup's manifest holds): `None` when the chain holds
/// that very entry, else what is wrong, naming `whose` head it was.
pub fn check_head(store: &Store, seq: u64, hash_hex: &str, whose: &str) -> Result<Option<String>> {
    head_problem(store, store.audit_head()?, store.audit_files().local_anchor()?, seq, hash_hex, whose)
}

/// [`check_head`] against the chain's head `live` and its start `kept`.
fn head_problem(store: &Store, live: ChainHead, kept: ChainHead, seq: u64, hash_hex: &str, whose: &str) -> Result<Option<String>> {
    Ok(if seq > live.seq {
        Some(format!("the chain ends at {} but {whose} recorded entry {seq}: entries were cut", live.seq))
    } else if seq < kept.seq {
        Some(format!(
            "{whose} recorded entry {seq}, which the retention period removed (the chain is kept from entry {}): it can no longer be checked",
            kept.seq + 1
        ))
    } else {
        match store.audit_hash_at(seq)? {
            Some(h) if hex(&h).eq_ignore_ascii_case(hash_hex) => None,
            Some(_) => Some(format!("entry {seq} differs from the one {whose} recorded: the chain was rewritten")),
            None => Some(format!("no entry ends at {seq}, where {whose} recorded its head: the chain was rewritten")),
        }
    })
}

/// Names the first difference between what a manifest promises and what a
/// restore produced.
fn compare(want: &Summary, got: &Summary) -> Result<()> {
    let differs = |what: String| Err(Error::Corrupt { what: "restored store", msg: format!("{what} differs from the manifest") });
    if want.store_format != got.store_format || want.store_id != got.store_id {
        return differs("the store identity".into());
    }
    if want.last_seq != got.last_seq {
        return differs(format!("the last change-log sequence number ({} restored, {} expected)", got.last_seq, want.last_seq));
    }
    if want.audit_head != got.audit_head {
        return differs(format!("the audit chain head (entry {} restored, {} expected)", got.audit_head.seq, want.audit_head.seq));
    }
    for w in &want.families {
        match got.families.iter().find(|g| g.name == w.name) {
            Some(g) if g == w => {}
            Some(g) => {
                return differs(format!("column family {} ({} entries restored, {} expected)", w.name, g.entries, w.entries))
            }
            None => return differs(format!("column family {} (missing)", w.name)),
        }
    }
    // A family this version added after the backup was made is new and empty.
    match got.families.iter().find(|g| g.entries > 0 && !want.families.iter().any(|w| w.name == g.name)) {
        Some(g) => differs(format!("column family {} (not in the backup)", g.name)),
        None => Ok(()),
    }
}

/// Undoes a restore that did not complete: the staging area, whatever was
/// already moved, and the data directory if the restore created it.
struct RestoreGuard {
    data: PathBuf,
    created: bool,
    moved: Vec<PathBuf>,
    done: bool,
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let _ = fs::remove_dir_all(self.data.join(RESTORE_STAGING));
        for p in &self.moved {
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir_all(p));
        }
        if self.created {
            let _ = fs::remove_dir(&self.data);
        }
    }
}

/// Restores backup `backup_id` (default: the latest) of the backup
/// directory `from` into the new data directory `data`, which must not
/// exist or be empty. With `secret`, refuses a key that is not the store's
/// ([`Error::WrongSecret`], before anything is copied) and verifies the
/// audit chain of the restored store.
pub fn restore(from: &Path, backup_id: Option<u32>, data: &Path, secret: Option<&Secret>) -> Result<Restored> {
    let marker = read_marker(from)?
        .ok_or_else(|| fail(format!("{} is not a basedata backup directory (no {MARKER_FILE})", from.display())))?;
    if secret.is_some_and(|s| store_id_for_secret(s) != marker.store_id) {
        return Err(Error::WrongSecret);
    }
    let created = match is_empty_dir(data)? {
        Some(true) => false,
        Some(false) => {
            return Err(fail(format!(
                "refusing to restore into {}: it is not empty (restore into a new data directory)",
                data.display()
            )))
        }
        None => {
            if data.exists() {
                return Err(fail(format!("{} exists and is not a directory", data.display())));
            }
            fs::create_dir_all(data)?;
            true
        }
    };
    let mut guard = RestoreGuard { data: data.to_path_buf(), created, moved: Vec::new(), done: false };

    let mut be = backup_engine(&from.join(ENGINE_DIR))?;
    let infos = be.get_backup_info();
    let id = match backup_id {
        Some(id) => id,
        None => infos
            .iter()
            .map(|i| i.backup_id)
            .filter(|&id| manifest_path(from, id).exists())
            .max()
            .ok_or_else(|| fail(format!("{} holds no complete backup", from.display())))?,
    };
    if !infos.iter().any(|i| i.backup_id == id) {
        return Err(fail(format!("{} holds no backup {id}", from.display())));
    }
    let manifest = read_manifest(from, id)?.ok_or_else(|| {
        fail(format!("backup {id} has no manifest: it did not complete; restore another one with --backup-id"))
    })?;
    if manifest.backup_id != id || manifest.summary.store_id != marker.store_id {
        return Err(Error::Corrupt { what: "backup manifest", msg: format!("manifest {id} does not describe this backup") });
    }
    be.verify_backup(id).map_err(engine_err)?;
    let staging = data.join(RESTORE_STAGING);
    // Restoring also checks every file against the checksum recorded at backup.
    be.restore_from_backup(&staging, &staging, &RestoreOptions::default(), id).map_err(engine_err)?;
    drop(be);

    let audit_entries;
    {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open_copy(&staging)?);
        compare(&manifest.summary, &summarize(&*engine)?)?;
        // Every chain held and the index, as `basedata audit-verify`
        // checks them: they need no secret, so a restore without the key
        // file checks them too. The manifest alone would pass a backup
        // whose files were altered along with it.
        let checks = AuditFiles(&*engine).checks()?;
        if let Some(problem) = checks.first_problem() {
            let what = if checks.chain.ok && checks.remote.iter().all(|(_, c)| c.ok) { "restored audit index" } else { "restored audit chain" };
            return Err(Error::Corrupt { what, msg: problem });
        }
        audit_entries = checks.chain.entries;
        if let Some(secret) = secret {
            // The key opens the copy.
            Store::open(engine, secret, Arc::new(Catalog::builtin()), Arc::new(SystemClock))?;
        }
        // The copy closes here, before its files move.
    }

    {
        let mut f = fs::File::create(staging.join(RESTORED_MARKER))?;
        writeln!(f, "restored from backup {} of {} ({})", manifest.backup_id, manifest.created_at, from.display())?;
        f.sync_all()?;
    }
    // CURRENT last: until it is in place the directory does not open as a
    // store, so an interruption cannot leave a half-moved one behind.
    let mut names: Vec<_> = fs::read_dir(&staging)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort_by_key(|n| n == "CURRENT");
    for name in names {
        let dest = data.join(&name);
        fs::rename(staging.join(&name), &dest)?;
        guard.moved.push(dest);
    }
    sync_dir(data)?;
    fs::remove_dir(&staging)?;
    guard.done = true;
    Ok(Restored { manifest, secret_checked: secret.is_some(), audit_entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rocks::RocksConfig;
    use crate::engine::{Durability, WriteBatch};

    /// A new store in `tmp/data` under a new secret, and where its backups go.
    struct Fresh {
        tmp: tempfile::TempDir,
        data: PathBuf,
        to: PathBuf,
        secret: Secret,
        engine: Arc<RocksEngine>,
        store: Store,
    }

    fn fresh() -> Fresh {
        let tmp = tempfile::tempdir().unwrap();
        let (data, to) = (tmp.path().join("data"), tmp.path().join("backups"));
        let secret = Secret::generate().unwrap();
        let (engine, store) = open_store(&data, &secret);
        Fresh { tmp, data, to, secret, engine, store }
    }

    fn open_store(dir: &Path, secret: &Secret) -> (Arc<RocksEngine>, Store) {
        let cfg = RocksConfig { block_cache_bytes: 8 << 20, ..Default::default() };
        let engine = Arc::new(RocksEngine::open(dir, &cfg).unwrap());
        let store = Store::open(engine.clone(), secret, Arc::new(Catalog::builtin()), Arc::new(SystemClock)).unwrap();
        (engine, store)
    }

    /// One audited verification of a generated key with `outcome`.
    fn verification(outcome: &str) -> crate::AuditEvent {
        crate::AuditEvent {
            department: "shebao".into(),
            operator: None,
            operator_verified: false,
            purpose: "benefit check".into(),
            purpose_code: None,
            action: crate::audit::Action::Verify,
            key: Some(crate::keys::SubjectKey::parse(crate::Subject::Person, "11010519491231002X").unwrap()),
            datasets: vec!["hukou".into()],
            fields: vec!["name".into()],
            outcome: outcome.into(),
            key_mapped: false,
            pid: None,
            rejected_lines: 0,
            grants: Vec::new(),
        }
    }

    /// Cuts the chain of the store in `dir` back to `head` (entries after
    /// it deleted, the head put back), as whoever can write its files can.
    fn cut_back(dir: &Path, secret: &Secret, head: crate::audit::ChainHead) -> (Arc<RocksEngine>, Store) {
        let (engine, store) = open_store(dir, secret);
        let live = store.audit_head().unwrap();
        drop(store);
        let mut b = WriteBatch::new();
        for seq in head.seq + 1..=live.seq {
            b.delete(Cf::Audit, crate::record::seq_key(seq).to_vec());
        }
        b.put(Cf::Meta, crate::audit::META_AUDIT_HEAD.to_vec(), crate::codec::encode(&head));
        engine.write(b, Durability::Sync).unwrap();
        drop(engine);
        open_store(dir, secret)
    }

    /// A tail cut back, or cut and written anew with its hashes recomputed,
    /// still passes the chain's own check; the heads the backups recorded
    /// find both.
    #[test]
    fn the_live_chain_is_checked_against_its_backups() {
        let Fresh { tmp, data, to, secret, engine, store } = fresh();
        let uses = |store: &Store, outcome: &str, n: usize| {
            for _ in 0..n {
                store.commit_all(&[], &[], &[verification(outcome)], WriteBatch::new(), Durability::Sync).unwrap();
            }
        };
        uses(&store, "match", 3);
        let at_first = store.audit_head().unwrap();
        let first = create(&*engine, &to).unwrap();
        uses(&store, "match", 2);
        let second = create(&*engine, &to).unwrap();
        uses(&store, "match", 1);
        let anchors = check_against_backups(&store, &to).unwrap();
        let said = |a: &[BackupAnchor]| a.iter().map(|a| (a.backup_id, a.seq, a.ok)).collect::<Vec<_>>();
        assert_eq!(said(&anchors), vec![(first.backup_id, 3, true), (second.backup_id, 5, true)]);
        drop((engine, store));

        // Written anew after entry 3: other outcomes, hashes recomputed.
        let (_engine, store) = cut_back(&data, &secret, at_first);
        uses(&store, "mismatch", 3);
        assert!(store.audit_verify().unwrap().ok, "the chain alone verifies");
        let anchors = check_against_backups(&store, &to).unwrap();
        assert_eq!(said(&anchors), vec![(first.backup_id, 3, true), (second.backup_id, 5, false)]);
        assert!(anchors[1].problem.as_deref().unwrap().contains("entry 5 differs from the one backup 2 recorded"), "{anchors:?}");
        // The same from a head logged elsewhere.
        let logged = second.summary.audit_head.hash.to_uppercase();
        let problem = check_head(&store, 5, &logged, "the log").unwrap();
        assert_eq!(problem.as_deref(), Some("entry 5 differs from the one the log recorded: the chain was rewritten"));
        assert_eq!(check_head(&store, 3, &first.summary.audit_head.hash, "the log").unwrap(), None);
        assert!(check_head(&store, 9, &logged, "the log").unwrap().unwrap().contains("entries were cut"));
        drop((_engine, store));

        // Cut back only.
        let (_engine, store) = cut_back(&data, &secret, at_first);
        assert!(store.audit_verify().unwrap().ok, "the chain alone verifies");
        let anchors = check_against_backups(&store, &to).unwrap();
        assert_eq!(said(&anchors), vec![(first.backup_id, 3, true), (second.backup_id, 5, false)]);
        assert!(anchors[1].problem.as_deref().unwrap().contains("entries were cut"), "{anchors:?}");

        // Another store's backups are not taken for this one's.
        let (other_data, other_to) = (tmp.path().join("other"), tmp.path().join("other-backups"));
        let (other_engine, _other) = open_store(&other_data, &Secret::generate().unwrap());
        create(&*other_engine, &other_to).unwrap();
        let e = check_against_backups(&store, &other_to).unwrap_err();
        assert!(e.to_string().contains("another store"), "{e}");
        assert!(check_against_backups(&store, &data).is_err(), "not a backup directory");
    }

    /// A backup made before a removal for the retention period recorded a
    /// head the live chain no longer holds: that is noted, not failed.
    #[test]
    fn a_backup_from_before_the_retention_cut_is_noted_not_failed() {
        let Fresh { tmp: _tmp, to, engine, store, .. } = fresh();
        let uses = |n: usize| {
            for _ in 0..n {
                store.commit_all(&[], &[], &[verification("match")], WriteBatch::new(), Durability::Sync).unwrap();
            }
        };
        uses(3);
        let first = create(&*engine, &to).unwrap();
        uses(2);
        let (pruned, _) = crate::audit::retention::tests::cut(&store, store.clock().now_micros() + 1);
        assert_eq!(pruned.anchor.seq, 5);
        uses(1);
        let second = create(&*engine, &to).unwrap();
        let anchors = check_against_backups(&store, &to).unwrap();
        let said: Vec<_> = anchors.iter().map(|a| (a.backup_id, a.seq, a.ok, a.problem.is_some(), a.note.is_some())).collect();
        assert_eq!(said, vec![(first.backup_id, 3, true, false, true), (second.backup_id, 7, true, false, false)]);
        assert!(anchors[0].note.as_deref().unwrap().contains("which the retention period removed"), "{anchors:?}");
        // A head given by hand is still reported as not checkable.
        let by_hand = check_head(&store, 3, &first.summary.audit_head.hash, "the log").unwrap().unwrap();
        assert!(by_hand.contains("can no longer be checked"), "{by_hand}");
    }

    fn put_many(engine: &RocksEngine, from: u32, n: u32) {
        let mut b = WriteBatch::new();
        for i in from..from + n {
            // Incompressible, so that table files dominate the backup.
            let value: Vec<u8> = (0..32u8).flat_map(|j| *blake3::hash(&[&i.to_le_bytes()[..], &[j]].concat()).as_bytes()).collect();
            b.put(Cf::Jobs, format!("job-{i:08}").into_bytes(), value);
        }
        engine.write(b, Durability::Sync).unwrap();
    }

    #[test]
    fn backup_restore_round_trip_is_incremental_and_checked() {
        let Fresh { tmp, data, to, secret, engine, store } = fresh();
        put_many(&engine, 0, 5000);
        let first = create(&*engine, &to).unwrap();
        assert_eq!((first.copy.files_copied, first.copy.bytes_copied), (first.copy.files_total, first.copy.bytes_total));
        put_many(&engine, 5000, 10);
        let second = create(&*engine, &to).unwrap();
        assert_eq!(second.backup_id, first.backup_id + 1);
        // The first backup's tables are reused: only the new flush and metadata are copied.
        assert!(second.copy.files_copied < second.copy.files_total, "{:?}", second.copy);
        assert!(second.copy.bytes_copied * 4 < first.copy.bytes_copied, "{:?} vs {:?}", second.copy, first.copy);
        assert!(!data.join(BACKUP_STAGING).exists());
        drop(store);
        let jobs = |m: &Manifest| m.summary.families.iter().find(|f| f.name == "jobs").unwrap().entries;
        assert_eq!((jobs(&first), jobs(&second)), (5000, 5010));

        // A wrong key is refused before anything is written.
        let target = tmp.path().join("restored");
        let wrong = Secret::generate().unwrap();
        assert!(matches!(restore(&to, None, &target, Some(&wrong)), Err(Error::WrongSecret)));
        assert!(!target.exists());

        // The latest backup by default, an earlier one on request.
        let r = restore(&to, None, &target, Some(&secret)).unwrap();
        assert_eq!((r.manifest.backup_id, r.secret_checked), (second.backup_id, true));
        let older = tmp.path().join("older");
        let r = restore(&to, Some(first.backup_id), &older, None).unwrap();
        assert_eq!(r.manifest, first);
        for (dir, want) in [(&target, &second), (&older, &first)] {
            assert!(!dir.join(RESTORE_STAGING).exists());
            let said = fs::read_to_string(dir.join(RESTORED_MARKER)).unwrap();
            assert!(said.starts_with(&format!("restored from backup {} of ", want.backup_id)), "{said}");
            let (engine, _store) = open_store(dir, &secret);
            assert_eq!(summarize(&*engine).unwrap(), want.summary);
        }

        // Never into a non-empty directory.
        let e = restore(&to, None, &target, None).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
    }

    #[test]
    fn a_tampered_manifest_fails_the_restore_and_leaves_nothing() {
        let Fresh { tmp, data, to, engine, store: _store, .. } = fresh();
        put_many(&engine, 0, 100);
        let m = create(&*engine, &to).unwrap();
        let mut forged = m.clone();
        forged.summary.families[Cf::Jobs as usize].entries += 1;
        fs::write(manifest_path(&to, m.backup_id), serde_json::to_vec(&forged).unwrap()).unwrap();
        let target = tmp.path().join("restored");
        let e = restore(&to, None, &target, None).unwrap_err();
        assert!(e.to_string().contains("column family jobs"), "{e}");
        assert!(!target.exists());

        // A directory that is not a backup is refused, in both directions.
        let e = restore(&data, None, &target, None).unwrap_err();
        assert!(e.to_string().contains("not a basedata backup directory"), "{e}");
        let e = create(&*engine, &data.join("inside")).unwrap_err();
        assert!(e.to_string().contains("must not contain each other"), "{e}");
        // `..` past a directory that does not exist is still the parent.
        let e = create(&*engine, &data.join("new").join("..").join("inside")).unwrap_err();
        assert!(e.to_string().contains("must not contain each other"), "{e}");
        let e = create(&*engine, &tmp.path().join("new").join("..")).unwrap_err();
        assert!(e.to_string().contains("must not contain each other"), "{e}");
        let other = tmp.path().join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("x"), b"x").unwrap();
        let e = create(&*engine, &other).unwrap_err();
        assert!(e.to_string().contains("not a basedata backup directory"), "{e}");
    }

    /// A backup taken of a store whose audit index had lost a key passes
    /// the manifest (it digests what was copied) but not the checks a
    /// restore with the secret runs.
    #[test]
    fn a_backup_of_a_damaged_audit_index_is_not_restored() {
        let Fresh { tmp, to, secret, engine, store, .. } = fresh();
        store.commit_all(&[], &[], &[verification("match")], WriteBatch::new(), Durability::Sync).unwrap();
        // Its keys in the engine's index, not only in memory.
        store.index_tail().settle().unwrap();
        let (subject_key, _) = engine.scan(Cf::AuditIndex, b"k", Some(b"l"), false).unwrap().next().expect("a subject index key").unwrap();
        let mut b = WriteBatch::new();
        b.delete(Cf::AuditIndex, subject_key.to_vec());
        engine.write(b, Durability::Sync).unwrap();
        create(&*engine, &to).unwrap();
        drop(store);
        let target = tmp.path().join("restored");
        for key in [Some(&secret), None] {
            let e = restore(&to, None, &target, key).unwrap_err();
            assert!(e.to_string().contains("restored audit index"), "{e}");
            assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none(), "nothing moved into place");
        }
    }

    #[test]
    fn an_engine_without_checkpoints_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Arc::new(crate::engine::mem::MemEngine::new());
        let store = Store::open(engine, &Secret::generate().unwrap(), Arc::new(Catalog::builtin()), Arc::new(SystemClock));
        let store = store.unwrap();
        assert!(matches!(create(&**store.engine(), &tmp.path().join("backups")), Err(Error::Unsupported(_))));
        assert!(!tmp.path().join("backups").exists(), "nothing is written");
    }
}
