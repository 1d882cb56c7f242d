//! `minimal_axum`: the smallest useful axum server — `GET /` and `POST /`
//! answer a small fixed JSON body (a POST body is read first, as any real
//! handler must). It runs on the same runtime flavour and axum features as
//! `basedata serve`, so its throughput under the same load generator is the
//! ceiling that the server's figures are quoted against.
//!
//! It exits by itself after `--max-seconds` so that a forgotten instance
//! cannot outlive a benchmark run.

use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(name = "minimal_axum", about = "Minimal axum server: GET/POST / answer a small fixed JSON body")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

async fn get_root() -> Json<Value> {
    Json(json!({"result": "match", "fields": {"name": "match"}}))
}

async fn post_root(body: axum::body::Bytes) -> Json<Value> {
    Json(json!({"result": "match", "fields": {"name": "match"}, "received": body.len()}))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The same runtime as `basedata serve`: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = Router::new().route("/", get(get_root).post(post_root));
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
