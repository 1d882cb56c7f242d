//! `basedata backup` and `basedata restore`, and the control socket through
//! which a running server backs up the store it holds.
//!
//! Only the process that has a RocksDB store open can copy it consistently
//! (see `basedata_store::backup`), and a server holds its store's lock for as
//! long as it runs. So the server listens on a Unix socket inside its data
//! directory, `DIR/control.sock`, that only its own user may connect to:
//! whoever can connect can already read the data directory, so the socket
//! needs no token and grants nothing new, and `basedata backup --data DIR`
//! finds the server from the data directory alone, as the command line
//! contract has it — no address, no admin token, nothing on the network.
//! When no server answers there, the command opens the store itself.
//!
//! Protocol: one JSON request line, `{"op": "backup", "to": "/abs/dir"}`,
//! and one JSON reply line, `{"ok": true, "manifest": {...}}` or
//! `{"ok": false, "error": "..."}`. Requests are served one at a time, so
//! backups of one store never overlap; shutdown waits for one in progress.

use anyhow::{bail, Context};
use basedata_store::backup::{self as store_backup, Manifest};
use basedata_store::dir::{self, control_socket_path, default_key_file};
use basedata_store::{Secret, Store};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Largest request line accepted on the control socket.
const MAX_REQUEST: u64 = 64 << 10;

/// The server side: a thread answering on `DIR/control.sock` while the
/// guard lives. Dropping it removes the socket and waits for a backup in
/// progress.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    busy: Mutex<()>,
}

impl ControlSocket {
    /// Starts answering for `store`; `None` (logged) when the store's
    /// engine makes no checkpoints (nothing on disk to back up) or the
    /// socket cannot be made (a data directory path longer than a socket
    /// address allows, about 100 bytes): backups then need the server
    /// stopped.
    pub fn start(store: &Arc<Store>) -> Option<ControlSocket> {
        let path = control_socket_path(store.engine().checkpoint()?.dir());
        // A socket left by a killed server: the store lock we hold says no
        // other server uses this directory.
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "no control socket: backups need the server stopped");
                return None;
            }
        };
        // Connecting needs write permission on the socket; the usual umask
        // already denies it to others, this makes it certain.
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(error = %e, path = %path.display(), "cannot restrict the control socket; not serving it");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let shared = Arc::new(Shared::default());
        // A weak reference: the thread outlives the server (it waits in
        // accept) but must not keep the store open after shutdown.
        let (thread_shared, store) = (shared.clone(), Arc::downgrade(store));
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve_control(listener, &store, &thread_shared));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the control socket thread");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(ControlSocket { path, shared })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
        // A backup in progress finishes before the process goes on to exit.
        drop(self.shared.busy.lock());
    }
}

fn serve_control(listener: UnixListener, store: &Weak<Store>, shared: &Shared) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let _busy = shared.busy.lock().unwrap_or_else(|e| e.into_inner());
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(store) = store.upgrade() else { return };
        answer_connection(&store, &stream);
    }
}

fn error_reply(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

fn answer_connection(store: &Store, stream: &UnixStream) {
    // A client that never sends its line must not hold the socket.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let reply = match BufReader::new(stream.take(MAX_REQUEST)).read_line(&mut line) {
        Ok(_) => answer(store, &line),
        Err(e) => error_reply(format!("cannot read the request: {e}")),
    };
    let mut w = stream;
    let _ = writeln!(w, "{reply}");
}

fn answer(store: &Store, line: &str) -> Value {
    #[derive(serde::Deserialize)]
    struct Request {
        op: String,
        to: Option<PathBuf>,
    }
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return error_reply(format!("bad request: {e}")),
    };
    match req.op.as_str() {
        "backup" => {
            let Some(to) = req.to.filter(|p| p.is_absolute()) else {
                return error_reply("a backup needs an absolute \"to\" directory");
            };
            if store.engine().checkpoint().is_none() {
                return error_reply("this store's engine cannot be backed up");
            }
            // Uses recorded in the journal and not yet in the audit trail
            // would be missing from the copy (which leaves the journal
            // out): none is recorded until the copy is taken, and the
            // writer enters those recorded before.
            let mut held = Some(store.pending_uses().hold_appends());
            if !store.pending_uses().settle(Duration::from_secs(30)) {
                return error_reply("the audit trail is still entering recent uses; try again");
            }
            let made = store_backup::create_with(&**store.engine(), &to, &mut || drop(held.take()));
            drop(held);
            match made {
                Ok(m) => {
                    tracing::info!(backup_id = m.backup_id, last_seq = m.summary.last_seq,
                        files_copied = m.copy.files_copied, to = %to.display(), "backup written");
                    json!({"ok": true, "manifest": m})
                }
                Err(e) => {
                    tracing::warn!(error = %e, to = %to.display(), "backup failed");
                    error_reply(e.to_string())
                }
            }
        }
        other => error_reply(format!("unknown operation {other:?}")),
    }
}

fn backup_via_server(stream: UnixStream, to: &Path) -> anyhow::Result<Manifest> {
    let mut w = &stream;
    writeln!(w, "{}", json!({"op": "backup", "to": to}))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).context("reading the server's reply")?;
    if line.trim().is_empty() {
        bail!("the server closed the control connection before the backup finished (is it shutting down?)");
    }
    let reply: Value = serde_json::from_str(&line).context("the server's reply is not JSON")?;
    if reply["ok"] != true {
        bail!("the server could not back up the store: {}", reply["error"].as_str().unwrap_or("no reason given"));
    }
    Ok(serde_json::from_value(reply["manifest"].clone()).context("the server's manifest")?)
}

/// Backs up the store in `data` into `to`: through the server that holds
/// it, or directly when none does.
pub fn backup(data: &Path, to: &Path) -> anyhow::Result<Manifest> {
    if !dir::holds_store(data) {
        bail!("{} holds no store", data.display());
    }
    let to = std::path::absolute(to).with_context(|| format!("backup directory {}", to.display()))?;
    let socket = control_socket_path(data);
    let unanswered = match UnixStream::connect(&socket) {
        Ok(stream) => return backup_via_server(stream, &to),
        Err(e) => e,
    };
    // A backup reads every table once: a small cache will do.
    let opts = dir::OpenOptions { block_cache_bytes: 8 << 20, warm_page_cache: false, prime_wal_bytes: 0 };
    let engine = match dir::open_engine(data, &opts) {
        Ok(e) => e,
        // RocksDB names its LOCK file when another holder has it.
        Err(e) if e.to_string().contains("LOCK") => bail!(
            "the store in {} is in use by another process, which does not answer on {} ({unanswered}); \
             back it up while that process is stopped, or from a server that has the control socket",
            data.display(),
            socket.display()
        ),
        Err(e) => return Err(e.into()),
    };
    // Left by a crash: uses answered and not yet in the audit trail, which
    // only the store itself (with its secret) enters, at its next start.
    if let Some(n) = engine.use_log().map(|l| l.unentered()).filter(|&n| n > 0) {
        bail!(
            "the journal of the store in {} holds {n} records of audited uses not yet in its audit trail; \
             start the server on it once (it enters them), then back it up",
            data.display()
        );
    }
    Ok(store_backup::create(&*engine, &to)?)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `basedata backup`.
pub fn run_backup(data: &Path, to: &Path) -> anyhow::Result<()> {
    let m = backup(data, to)?;
    println!("backup {} of {} written to {}", m.backup_id, data.display(), to.display());
    println!("  change log up to {}, audit chain {} entries (head {})", m.summary.last_seq, m.summary.audit_head.seq, m.summary.audit_head.hash);
    println!(
        "  copied {} of {} files ({} of {})",
        m.copy.files_copied,
        m.copy.files_total,
        mib(m.copy.bytes_copied),
        mib(m.copy.bytes_total)
    );
    println!(
        "  the secret key is not part of the backup: keep a copy of the key file (default {}) in another place",
        default_key_file(data).display()
    );
    Ok(())
}

/// `basedata restore`: the key is `key_file`, else `DATA.key` if present.
pub fn run_restore(from: &Path, data: &Path, key_file: Option<&Path>, backup_id: Option<u32>) -> anyhow::Result<()> {
    let key_path = key_file.map(Path::to_path_buf).unwrap_or_else(|| default_key_file(data));
    let secret = if key_path.exists() {
        Some(Secret::load(&key_path)?)
    } else if key_file.is_some() {
        bail!("no key file at {}", key_path.display());
    } else {
        None
    };
    let restored = match store_backup::restore(from, backup_id, data, secret.as_ref()) {
        Err(basedata_store::Error::WrongSecret) => bail!(
            "the key file {} does not belong to the store in this backup; nothing was restored",
            key_path.display()
        ),
        r => r?,
    };
    let m = &restored.manifest;
    println!("restored backup {} (taken {}) into {}", m.backup_id, m.created_at, data.display());
    println!("  change log up to {}, audit chain {} entries (head {})", m.summary.last_seq, m.summary.audit_head.seq, m.summary.audit_head.hash);
    println!("  every column family matches the manifest's entry count and digest");
    println!("  audit chains and index verified ({} entries of this node's chain)", restored.audit_entries);
    if restored.secret_checked {
        println!("  the key file {} matches", key_path.display());
    } else {
        eprintln!(
            "warning: no key file at {}: the secret was not checked; put the store's key file there \
             (or pass --key-file to serve) before serving",
            key_path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::clock::SystemClock;
    use basedata_store::Catalog;

    fn ask(data: &Path, line: &str) -> Value {
        let stream = UnixStream::connect(control_socket_path(data)).unwrap();
        writeln!(&stream, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }

    #[test]
    fn control_socket_backs_up_and_refuses_bad_requests() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let opts = dir::OpenOptions { block_cache_bytes: 8 << 20, warm_page_cache: false, prime_wal_bytes: 0 };
        let secret = Secret::generate().unwrap();
        let opened = dir::open_with_secret(&data, &secret, Arc::new(Catalog::builtin()), Arc::new(SystemClock), &opts);
        let store = Arc::new(opened.unwrap().store);
        let control = ControlSocket::start(&store).expect("control socket");
        let mode = std::fs::metadata(control_socket_path(&data)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        for (line, expected) in [
            ("not json", "bad request"),
            (r#"{"op": "backup", "to": "relative/dir"}"#, "absolute"),
            (r#"{"op": "backup"}"#, "absolute"),
            (r#"{"op": "compact"}"#, "unknown operation"),
        ] {
            let reply = ask(&data, line);
            assert_eq!(reply["ok"], false, "{line}: {reply}");
            assert!(reply["error"].as_str().unwrap().contains(expected), "{line}: {reply}");
        }
        let reply = ask(&data, &json!({"op": "backup", "to": data.join("inside")}).to_string());
        assert!(reply["error"].as_str().unwrap().contains("must not contain each other"), "{reply}");

        // The command finds the server through the socket: the store is locked.
        let backups = tmp.path().join("backups");
        let m = backup(&data, &backups).unwrap();
        assert_eq!((m.backup_id, m.summary.last_seq), (1, 0));
        assert_eq!(backup(&data, &backups).unwrap().backup_id, 2);

        // Without the socket, a locked store is refused with the reason.
        drop(control);
        assert!(!control_socket_path(&data).exists());
        let e = backup(&data, &backups).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        let e = backup(&tmp.path().join("none"), &backups).unwrap_err().to_string();
        assert!(e.contains("holds no store"), "{e}");
    }
}
