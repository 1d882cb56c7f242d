//! The data directory: opening a store from a directory on disk, the same
//! way for the server, the command-line tools and the tests.
//!
//! - The secret lives outside the data directory (identity separation: the
//!   directory and its backups hold only pseudonyms and sealed keys), by
//!   default beside it as `DIR.key`. A key file is created only together
//!   with a new, empty data directory, so a lost key file can never
//!   silently start a second store that cannot read the first one's data.
//! - The engine is RocksDB with the operator's block cache, optionally
//!   with its point-read tables read into the page cache for serving.
//! - A bulk load that a crash interrupted is finished (or refused) before
//!   the store is handed out, so nothing ever reads half a load.
//! - A running server answers backups on `DIR/control.sock`.
//!
//! What the operator should hear about (a key file created, a load
//! finished) comes back as [`Notice`]s: the caller decides where to say it.

use crate::pseudo::Secret;
use crate::{Error, Result, Store};
use std::path::{Path, PathBuf};
#[cfg(feature = "rocks")]
use {
    crate::clock::Clock,
    crate::engine::journal::JournalOptions,
    crate::engine::rocks::{RocksConfig, RocksEngine},
    crate::{Catalog, Cf, Engine},
    std::sync::Arc,
};

/// Name of the control socket inside the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The socket on which a server holding the store in `data` answers
/// backups: inside the directory, so that whoever may use the socket can
/// already read the data, and a command finds the server from the
/// directory alone.
pub fn control_socket_path(data: &Path) -> PathBuf {
    data.join(CONTROL_SOCKET)
}

/// Where the secret lives when neither the configuration nor a flag says:
/// beside the data directory (`DIR.key`), never inside it.
pub fn default_key_file(data: &Path) -> PathBuf {
    let mut name = data.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "data".into());
    name.push(".key");
    data.with_file_name(name)
}

/// Whether a store has been created in `data` (RocksDB's `CURRENT` file is
/// there): commands that must not create one check this first.
pub fn holds_store(data: &Path) -> bool {
    data.join("CURRENT").is_file()
}

/// Where the store secret comes from, as the operator gave it.
#[derive(Clone, Copy, Default)]
pub struct KeySource<'a> {
    /// A key file named on the command line: wins over the configuration.
    pub key_file: Option<&'a Path>,
    /// The secret inline, as hex, from the configuration.
    pub secret_hex: Option<&'a str>,
    /// A key file named in the configuration.
    pub config_key_file: Option<&'a Path>,
}

impl std::fmt::Debug for KeySource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the inline secret itself.
        f.debug_struct("KeySource")
            .field("key_file", &self.key_file)
            .field("secret_hex", &self.secret_hex.map(|_| ".."))
            .field("config_key_file", &self.config_key_file)
            .finish()
    }
}

/// Something opening did that the operator should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A new key file was created for a new data directory.
    CreatedSecret { key_file: PathBuf },
    /// A bulk load that was interrupted has been finished.
    FinishedBulkLoad { dataset: String, records: u64 },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::CreatedSecret { key_file } => write!(
                f,
                "created a new store secret in {} (keep it apart from the data and back it up)",
                key_file.display()
            ),
            Notice::FinishedBulkLoad { dataset, records } => {
                write!(f, "finished the interrupted bulk load of {dataset} ({records} records)")
            }
        }
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(_) => true,
    }
}

/// Resolves the store secret of `data`: inline (unless a key file is named
/// on the command line), or a key file (command line, configuration, or
/// the default beside the data directory). A missing key file is created
/// only for a new, empty data directory, with a notice; a key file inside
/// the data directory is refused.
pub fn load_secret(data: &Path, keys: &KeySource) -> Result<(Secret, Option<Notice>)> {
    if let (Some(hex), None) = (keys.secret_hex, keys.key_file) {
        return Ok((Secret::from_hex(hex)?, None));
    }
    let path = keys.key_file.or(keys.config_key_file).map(Path::to_path_buf).unwrap_or_else(|| default_key_file(data));
    if path.starts_with(data) {
        return Err(Error::KeyFileInsideData { key_file: path });
    }
    if path.exists() {
        return Ok((Secret::load(&path)?, None));
    }
    if dir_is_empty(data) {
        // A new store under a path that does not exist yet: its parent is
        // made, as the data directory will be.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Config(format!("cannot create {} for the key file: {e}", parent.display())))?;
        }
        let secret = Secret::create_file(&path)?;
        return Ok((secret, Some(Notice::CreatedSecret { key_file: path })));
    }
    Err(Error::NoKeyFile { key_file: path, data: data.to_path_buf() })
}

/// How the engine of a data directory is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Read the tables of the point-read families (records, key mappings)
    /// into the page cache in the background, for a server about to serve:
    /// after a restart or a bulk load its first reads would otherwise each
    /// wait for the disk.
    pub warm_page_cache: bool,
    /// Length of the journal's segment files, each made full-length
    /// (zero-filled) before it is used and recycled after, for a server
    /// (0: default-length segments, grown as written): see
    /// `engine::journal`.
    pub prime_wal_bytes: u64,
}

#[cfg(feature = "rocks")]
impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { block_cache_bytes: RocksConfig::default().block_cache_bytes, warm_page_cache: false, prime_wal_bytes: 0 }
    }
}

/// A store opened from its data directory, with what the operator should
/// be told about it.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub notices: Vec<Notice>,
}

/// Free disk space, in multiples of the segment length, below which the
/// journal's segments are not prefilled.
#[cfg(feature = "rocks")]
const PRIME_HEADROOM: u64 = 8;

/// Opens (or creates) the engine of `data` without a store on it, for
/// tools and tests that read or change raw column families (backups,
/// inspections); needs no secret.
#[cfg(feature = "rocks")]
pub fn open_engine(data: &Path, opts: &OpenOptions) -> Result<Arc<dyn Engine>> {
    std::fs::create_dir_all(data).map_err(|cause| Error::CreateDir { path: data.to_path_buf(), cause })?;
    let mut cfg = RocksConfig { block_cache_bytes: opts.block_cache_bytes, ..Default::default() };
    let open_err = |cause| Error::Open { path: data.to_path_buf(), cause: Box::new(cause) };
    if opts.prime_wal_bytes > 0 {
        // Prefilled segments take twice their size at once (the one
        // written and a spare); a failed journal write stops all writes,
        // so that needs clear headroom and is skipped, with a warning,
        // without it: it only saves time.
        let available = crate::engine::rocks::available_disk_bytes(data);
        if available.is_some_and(|a| a >= opts.prime_wal_bytes.saturating_mul(PRIME_HEADROOM)) {
            cfg.journal = JournalOptions { segment_bytes: opts.prime_wal_bytes, prefill: true };
        } else {
            tracing::warn!(
                mb = opts.prime_wal_bytes >> 20,
                available_mb = available.unwrap_or(0) >> 20,
                "journal segments not prefilled: too little free disk space; synced writes then also write the segment's size"
            );
        }
    }
    let t = std::time::Instant::now();
    let engine = RocksEngine::open(data, &cfg).map_err(open_err)?;
    if cfg.journal.prefill {
        tracing::info!(mb = opts.prime_wal_bytes >> 20, ms = t.elapsed().as_millis() as u64, "store opened, journal segments prefilled");
    }
    if opts.warm_page_cache {
        // Point reads land on records and key mappings; the rest is read
        // in order. Nothing waits for it.
        engine.warm_page_cache(&[Cf::Records, Cf::KeyMap]);
    }
    Ok(Arc::new(engine))
}

/// Opens (or creates) the store in `data` with `secret`: the engine, the
/// store on it ([`Error::WrongSecret`] for another store's secret), and a
/// bulk load a crash interrupted finished before anything reads it.
#[cfg(feature = "rocks")]
pub fn open_with_secret(
    data: &Path,
    secret: &Secret,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    opts: &OpenOptions,
) -> Result<Opened> {
    let store = Store::open(open_engine(data, opts)?, secret, catalog, clock)?;
    let notices = crate::bulk::finish_interrupted(&store)?
        .map(|i| Notice::FinishedBulkLoad { dataset: i.dataset, records: i.applied })
        .into_iter()
        .collect();
    Ok(Opened { store, notices })
}

/// [`load_secret`], then [`open_with_secret`]: the store in `data` as the
/// server opens it, created with its key file when the directory is new.
/// A key file created for a store that then fails to open is not
/// reported; callers that must tell the operator about it regardless call
/// the two themselves.
#[cfg(feature = "rocks")]
pub fn open(
    data: &Path,
    keys: &KeySource,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    opts: &OpenOptions,
) -> Result<Opened> {
    let (secret, created) = load_secret(data, keys)?;
    let mut opened = open_with_secret(data, &secret, catalog, clock, opts)?;
    if let Some(n) = created {
        opened.notices.insert(0, n);
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_file_sits_beside_the_data_directory() {
        assert_eq!(default_key_file(Path::new("/srv/basedata/data")), Path::new("/srv/basedata/data.key"));
        assert_eq!(default_key_file(Path::new("store")), Path::new("store.key"));
        assert_eq!(control_socket_path(Path::new("/srv/d")), Path::new("/srv/d/control.sock"));
    }

    #[test]
    fn key_files_are_found_created_only_for_new_stores_and_never_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let default_key = tmp.path().join("data.key");

        // A new data directory: the default key file is created, once.
        let (secret, notice) = load_secret(&data, &KeySource::default()).unwrap();
        assert_eq!(notice, Some(Notice::CreatedSecret { key_file: default_key.clone() }));
        assert!(notice.unwrap().to_string().starts_with(&format!("created a new store secret in {}", default_key.display())));
        let (again, notice) = load_secret(&data, &KeySource::default()).unwrap();
        assert_eq!((again.to_hex(), notice), (secret.to_hex(), None));

        // The inline secret, unless a key file is named on the command line.
        let hex = "ab".repeat(32);
        let inline = KeySource { secret_hex: Some(&hex), config_key_file: Some(&default_key), ..Default::default() };
        assert_eq!(load_secret(&data, &inline).unwrap().0.to_hex(), hex);
        let flagged = KeySource { key_file: Some(&default_key), ..inline };
        assert_eq!(load_secret(&data, &flagged).unwrap().0.to_hex(), secret.to_hex());
        assert!(!format!("{inline:?}").contains(&hex), "the secret stays out of debug output");

        // Never inside the data directory; never created for existing data.
        let inside = data.join("k.key");
        let e = load_secret(&data, &KeySource { key_file: Some(&inside), ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), format!("the key file {} must not be inside the data directory", inside.display()));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("CURRENT"), "x").unwrap();
        let elsewhere = tmp.path().join("other.key");
        let e = load_secret(&data, &KeySource { config_key_file: Some(&elsewhere), ..Default::default() }).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no key file at {} for the existing data directory {}", elsewhere.display(), data.display())
        );
        assert!(!elsewhere.exists());

        // A new store under directories that do not exist yet.
        let deep = tmp.path().join("srv/basedata/data");
        let (_, notice) = load_secret(&deep, &KeySource::default()).unwrap();
        assert_eq!(notice, Some(Notice::CreatedSecret { key_file: tmp.path().join("srv/basedata/data.key") }));
    }

    #[cfg(feature = "rocks")]
    #[test]
    fn a_store_opens_creates_and_refuses_another_secret() {
        use crate::clock::SystemClock;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let open_default = || {
            let opts = OpenOptions { block_cache_bytes: 8 << 20, warm_page_cache: true, prime_wal_bytes: 1 << 20 };
            open(&data, &KeySource::default(), Arc::new(Catalog::builtin()), Arc::new(SystemClock), &opts)
        };
        let opened = open_default().unwrap();
        assert!(holds_store(&data) && tmp.path().join("data.key").is_file());
        assert!(matches!(opened.notices.as_slice(), [Notice::CreatedSecret { .. }]), "{:?}", opened.notices);
        // The store holds the directory's lock meanwhile.
        let e = open_default().unwrap_err();
        assert!(matches!(e, Error::Open { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!("cannot open the store in {}: ", data.display())), "{e}");
        drop(opened);
        assert!(open_default().unwrap().notices.is_empty());

        let other = Secret::generate().unwrap();
        let e = open_with_secret(&data, &other, Arc::new(Catalog::builtin()), Arc::new(SystemClock), &OpenOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::WrongSecret), "{e}");
    }
}
