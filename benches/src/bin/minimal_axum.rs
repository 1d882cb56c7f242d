//! `minimal_axum`: the smallest useful axum server — `GET /` and `POST /`
//! answer a small fixed JSON body (a POST body is read first, as any real
//! handler must). It runs on the same runtime flavour and axum features as
//! `basedata serve`, so its throughput under the same load generator is the
//! ceiling that the server's figures are quoted against.
//!
//! With `--durable DIR` a POST is answered only once its body is on disk:
//! appended to a log file by one writer thread that group-commits whatever
//! queued up meanwhile with one write and one `fdatasync`, the same shape
//! as the server's commit path. The log is preallocated and overwritten in
//! place, so each sync carries data only. That makes it the floor under any
//! server that makes a durable record of every request before answering it.
//!
//! It exits by itself after `--max-seconds` so that a forgotten instance
//! cannot outlive a benchmark run.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "minimal_axum", about = "Minimal axum server: GET/POST / answer a small fixed JSON body")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
    /// Answer a POST only once its body is synced to a log in this directory.
    #[arg(long)]
    durable: Option<PathBuf>,
}

/// Size of the preallocated log; writes wrap around inside it.
const LOG_BYTES: u64 = 64 << 20;

/// A group stops taking jobs past this many bytes, so that a block (at
/// most this plus one body of axum's 2 MiB limit) always fits in the log.
const GROUP_BYTES: usize = 1 << 20;

/// A body to make durable, and where to say it is.
type Job = (axum::body::Bytes, tokio::sync::oneshot::Sender<()>);

/// Creates the log filled with zeros and synced, so that later writes
/// overwrite allocated blocks and `fdatasync` has no metadata to write.
fn preallocated_log(dir: &std::path::Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("minimal.log"))?;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..LOG_BYTES / zeros.len() as u64 {
        file.write_all_at(&zeros, i * zeros.len() as u64)?;
    }
    file.sync_all()?;
    Ok(file)
}

/// The writer: takes the first job, then whatever else queued meanwhile,
/// writes them as one block of length-prefixed records, syncs once and
/// answers them all.
fn writer(file: File, rx: crossbeam::channel::Receiver<Job>) {
    let mut at = 0u64;
    let mut block = Vec::with_capacity(64 << 10);
    let mut waiting = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        let mut bytes = first.0.len();
        waiting.push(first);
        while bytes < GROUP_BYTES {
            let Ok(more) = rx.try_recv() else { break };
            bytes += more.0.len();
            waiting.push(more);
        }
        block.clear();
        for (body, _) in &waiting {
            block.extend_from_slice(&(body.len() as u32).to_le_bytes());
            block.extend_from_slice(body);
        }
        if at + block.len() as u64 > LOG_BYTES {
            at = 0;
        }
        // A failed write or sync leaves every waiting request unanswered
        // (its sender dropped), which the handler turns into a 500.
        if file.write_all_at(&block, at).and_then(|()| file.sync_data()).is_ok() {
            at += block.len() as u64;
            for (_, done) in waiting.drain(..) {
                let _ = done.send(());
            }
        } else {
            waiting.clear();
        }
    }
}

async fn post_durable(State(tx): State<crossbeam::channel::Sender<Job>>, body: axum::body::Bytes) -> Result<Json<Value>, StatusCode> {
    let received = body.len();
    let (done, synced) = tokio::sync::oneshot::channel();
    tx.try_send((body, done)).map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    synced.await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(answer(received))
}

async fn get_root() -> Json<Value> {
    Json(json!({"result": "match", "fields": {"name": "match"}}))
}

async fn post_root(body: axum::body::Bytes) -> Json<Value> {
    answer(body.len())
}

/// What a POST answers, with or without `--durable`.
fn answer(received: usize) -> Json<Value> {
    Json(json!({"result": "match", "fields": {"name": "match"}, "received": received}))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The same runtime as `basedata serve`: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = match &args.durable {
            None => Router::new().route("/", get(get_root).post(post_root)),
            Some(dir) => {
                let file = preallocated_log(dir)?;
                let (tx, rx) = crossbeam::channel::bounded(4096);
                std::thread::Builder::new().name("minimal-writer".into()).spawn(move || writer(file, rx))?;
                Router::new().route("/", get(get_root).post(post_durable)).with_state(tx)
            }
        };
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        eprintln!("minimal_axum listening on http://{}", listener.local_addr()?);
        let limit = std::time::Duration::from_secs(args.max_seconds);
        let shutdown = async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        anyhow::Ok(())
    })
}
