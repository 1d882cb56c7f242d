//! The `basedata` command line: parses arguments and dispatches to the
//! library. Every failure ends with a one-line reason and a non-zero exit.

use basedata_tools::config::Config;
use basedata_tools::{demo, gen, logging, server};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "basedata", version, about = "Identity-keyed base-data store for government information sharing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open (or create) the store in DIR and serve the HTTP API.
    Serve {
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// File holding the store secret (default: DIR.key beside the data directory).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Generate a demo data set if DIR is empty, print the demo tokens and serve.
    Demo {
        #[arg(long, value_name = "DIR", default_value = "demo-data")]
        data: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        persons: u64,
        #[arg(long, default_value_t = 10_000)]
        entities: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Write generated update files, one DATASET.ndjson per dataset.
    Gen {
        #[arg(long)]
        persons: u64,
        #[arg(long)]
        entities: u64,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data, config, listen, key_file } => {
            logging::init("info");
            let cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let data = data.or_else(|| cfg.data.clone()).ok_or_else(|| anyhow::anyhow!("--data DIR is required"))?;
            let listen = listen.or_else(|| cfg.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
            server::run(&data, cfg, &listen, key_file.as_deref())
        }
        Command::Demo { data, persons, entities, seed, listen } => {
            logging::init("warn");
            demo::run(demo::DemoOptions { data: &data, persons, entities, seed, listen: &listen })
        }
        Command::Gen { persons, entities, out, seed } => {
            let catalog = basedata_store::Catalog::builtin();
            let summary = gen::write_files(&gen::GenConfig { persons, entities, seed }, &catalog, &out)?;
            for (ds, n) in &summary.per_dataset {
                println!("{ds}.ndjson\t{n} lines");
            }
            Ok(())
        }
    }
}
