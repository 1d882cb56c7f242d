//! The `basedata` command line: parses arguments and dispatches to the
//! library. Every failure ends with a one-line reason and a non-zero exit.

use basedata_gen as gen;
use basedata_server::config::Config;
use basedata_server::{control, lifecycle as server, logging};
use anyhow::Context;
use basedata_tools::demo;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

// glibc malloc was 13–17% of server CPU on the verify path (many small,
// short-lived allocations across threads); mimalloc handles that pattern
// with thread-local free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Cluster mode: NATS server URLs, comma-separated (replaces
        /// `servers` of the configuration's [cluster]).
        #[arg(long, value_name = "URLS", value_delimiter = ',')]
        cluster: Option<Vec<String>>,
        /// This node's name in cluster mode (replaces [cluster] node).
        #[arg(long, value_name = "NAME", requires = "cluster")]
        node: Option<String>,
        /// Cluster mode: the partitions this node holds, comma-separated
        /// (replaces [cluster] serve_partitions; default all).
        #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "cluster")]
        serve_partitions: Option<Vec<u16>>,
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
        /// A catalog file instead of the built-in catalog, e.g. store/catalog/several-providers.toml
        /// (datasets of several providers, each demo department with its token).
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
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
    /// Run a batch comparison offline (the server stopped): NDJSON lines of
    /// POST /v1/verify/batch in, answers out, audited like the API.
    Compare {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// The department the comparison is run for (recorded in the audit log).
        #[arg(long, value_name = "ID")]
        department: String,
        /// What the comparison is for (recorded in the audit log).
        #[arg(long, value_name = "TEXT")]
        purpose: String,
        /// The staff member running it (recorded in the audit log).
        #[arg(long, value_name = "ID")]
        operator: Option<String>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// File holding the store secret (default: DIR.key beside the data directory).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Bulk-load an update file into an empty dataset (the server not
    /// running), through SST files; rejected lines go to an error report.
    Load {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "ID")]
        dataset: String,
        /// The provider whose load it is (a department id): required for a dataset of several
        /// providers, whose lines must then keep to its area or fields.
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// NDJSON update file, the format of POST /v1/datasets/{id}/updates.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// File holding the store secret (default: DIR.key beside the data directory).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Error report, one JSON object per rejected line (default: FILE.errors.ndjson beside the input).
        #[arg(long, value_name = "FILE")]
        errors: Option<PathBuf>,
        /// Scratch directory for sort runs and staged SST files, with room for about twice the input (default: the data directory's parent).
        #[arg(long, value_name = "DIR")]
        tmp: Option<PathBuf>,
        /// Memory for sorting, in MiB; beyond it sorted runs spill to the scratch directory.
        #[arg(long, value_name = "MB", default_value_t = 1024)]
        memory_mb: usize,
    },
    /// Hash a console staff password (read from standard input, one line)
    /// for `password_argon2` of a `[[staff]]` account of the configuration.
    StaffPassword,
    /// Manage the console's staff accounts held in the store (the server
    /// stopped; while it runs, use the console's account page).
    Staff {
        #[command(subcommand)]
        action: StaffCommand,
    },
    /// Reports from a running server, for auditors and administrators.
    Report {
        #[command(subcommand)]
        report: ReportCommand,
    },
    /// Check the audit log's hash chain; exit 1 if it is broken.
    AuditVerify {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// File holding the store secret (default: DIR.key beside the data directory).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// A backup directory of this store: the chain must still hold the
        /// audit head each of its backups recorded (finds history cut back
        /// or rewritten with its hashes recomputed).
        #[arg(long, value_name = "DIR")]
        backups: Option<PathBuf>,
        /// An audit head recorded elsewhere (the server logs its head as
        /// `audit head` with `seq` and `hash`): the chain must still hold
        /// that entry. May be repeated.
        #[arg(long = "head", value_name = "SEQ:HASH")]
        heads: Vec<String>,
    },
    /// Consistent backup of a store, also while it is being served.
    Backup {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Backup directory (created if missing); later backups into it copy only what is new.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Restore a backup into a new data directory.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The store's key file, checked against the backup (default: DIR.key beside the new data directory, if present).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Which backup (default: the latest complete one).
        #[arg(long, value_name = "ID")]
        backup_id: Option<u32>,
    },
}

/// The store a `staff` command works on.
#[derive(Args)]
struct StaffStore {
    /// The configuration: its departments and `[[staff]]` accounts.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Data directory (default: `data` of the configuration).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// File holding the store secret (default: DIR.key beside the data directory).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Who runs the command, for the audit entry.
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Add an account; its password is read from standard input (one line)
    /// unless --generate-password prints a new one, once.
    Add {
        /// Sign-in name and audit operator: A-Z a-z 0-9 . _ -
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// A configured department.
        #[arg(long, value_name = "ID")]
        department: String,
        /// clerk, steward, auditor, admin (comma-separated or repeated).
        #[arg(long = "role", value_name = "ROLE", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[arg(long)]
        generate_password: bool,
        #[command(flatten)]
        store: StaffStore,
    },
    /// Disable an account: it can no longer sign in.
    Disable {
        id: String,
        #[command(flatten)]
        store: StaffStore,
    },
    /// Enable a disabled account again.
    Enable {
        id: String,
        #[command(flatten)]
        store: StaffStore,
    },
    /// Give an account a new password, read from standard input (one line)
    /// unless --generate-password prints a new one, once.
    Reset {
        id: String,
        #[arg(long)]
        generate_password: bool,
        #[command(flatten)]
        store: StaffStore,
    },
    /// List every account, configured and stored, one per line.
    List {
        #[command(flatten)]
        store: StaffStore,
    },
}

fn run_staff(command: StaffCommand) -> anyhow::Result<()> {
    use basedata_tools::staff::StaffAction;
    let (action, store, generate) = match command {
        StaffCommand::Add { id, name, department, roles, generate_password, store } => {
            let roles = roles
                .iter()
                .map(|r| {
                    basedata_server::accounts::staff::StaffRole::parse(r)
                        .ok_or_else(|| anyhow::anyhow!("no role {r:?} (clerk, steward, auditor, admin)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let account = basedata_server::accounts::staff::NewAccount { id, name, department, roles };
            (StaffAction::Add(account), store, generate_password)
        }
        StaffCommand::Disable { id, store } => (StaffAction::Disable(id), store, false),
        StaffCommand::Enable { id, store } => (StaffAction::Enable(id), store, false),
        StaffCommand::Reset { id, generate_password, store } => (StaffAction::Reset(id), store, generate_password),
        StaffCommand::List { store } => (StaffAction::List, store, false),
    };
    let cfg = Config::load(&store.config)?;
    let data = store.data.or_else(|| cfg.data.clone()).ok_or_else(|| anyhow::anyhow!("--data DIR is required"))?;
    let options = basedata_tools::staff::StaffOptions {
        data: &data,
        config: &cfg,
        key_file: store.key_file.as_deref(),
        operator: store.operator.as_deref(),
        generate,
    };
    let out = basedata_tools::staff::run(&options, action, &mut std::io::stdin().lock())?;
    print!("{out}");
    Ok(())
}

#[derive(clap::Subcommand)]
enum ReportCommand {
    /// The yearly sharing report (Guangzhou Art. 37, Huizhou Arts. 50-51):
    /// writes annual-YEAR.json, annual-YEAR.html and annual-YEAR.pdf. The
    /// token (an auditor's or administrator's) is read from BASEDATA_TOKEN
    /// or --token-file, never from the command line.
    Annual {
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        url: String,
        /// The calendar year (default: this year, up to now).
        #[arg(long)]
        year: Option<i32>,
        /// File holding the bearer token (default: $BASEDATA_TOKEN).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Directory to write into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Skip the PDF (no Chromium needed).
        #[arg(long)]
        no_pdf: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data, config, listen, key_file, cluster, node, serve_partitions } => {
            let _log = logging::init_server("info");
            let mut cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            if let Some(servers) = cluster {
                let c = cfg.cluster.get_or_insert_with(|| basedata_server::config::ClusterConfig::with_servers(Vec::new()));
                c.servers = servers;
                if let Some(n) = node {
                    c.node = n;
                }
                if serve_partitions.is_some() {
                    c.serve_partitions = serve_partitions;
                }
            }
            if let Some(c) = &cfg.cluster {
                c.validate()?;
            }
            let data = data.or_else(|| cfg.data.clone()).ok_or_else(|| anyhow::anyhow!("--data DIR is required"))?;
            let listen = listen.or_else(|| cfg.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
            server::run(&data, cfg, &listen, key_file.as_deref())
        }
        Command::Demo { data, persons, entities, seed, listen, catalog } => {
            logging::init("warn");
            demo::run(demo::DemoOptions { data: &data, persons, entities, seed, listen: &listen, catalog: catalog.as_deref() })
        }
        Command::Gen { persons, entities, out, seed } => {
            let catalog = basedata_store::Catalog::builtin();
            let summary = gen::write_files(&gen::GenConfig { persons, entities, seed }, &catalog, &out)?;
            for (ds, n) in &summary.per_dataset {
                println!("{ds}.ndjson\t{n} lines");
            }
            Ok(())
        }
        Command::Compare { data, input, output, department, purpose, operator, config, key_file } => {
            logging::init("warn");
            let cfg = load_config(config.as_deref())?;
            let counts = basedata_tools::offline::compare(&basedata_tools::offline::CompareOptions {
                data: &data,
                input: &input,
                output: &output,
                department: &department,
                operator: operator.as_deref(),
                purpose: &purpose,
                config: &cfg,
                key_file: key_file.as_deref(),
                progress: true,
            })?;
            println!(
                "{} lines: {} match, {} mismatch, {} not found, {} invalid; answers in {}",
                counts.processed,
                counts.matched,
                counts.mismatched,
                counts.not_found,
                counts.invalid,
                output.display()
            );
            Ok(())
        }
        Command::Load { data, dataset, provider, input, config, key_file, errors, tmp, memory_mb } => {
            logging::init("warn");
            let cfg = load_config(config.as_deref())?;
            let report = basedata_tools::load::run(&basedata_tools::load::LoadOptions {
                data: &data,
                dataset: &dataset,
                provider: provider.as_deref(),
                input: &input,
                config: &cfg,
                key_file: key_file.as_deref(),
                errors: errors.as_deref(),
                tmp: tmp.as_deref(),
                memory_mb,
                progress: true,
            })?;
            println!("{}", report.summary());
            Ok(())
        }
        Command::Report { report: ReportCommand::Annual { url, year, token_file, out, no_pdf } } => {
            let token = match token_file {
                Some(f) => std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?.trim().to_owned(),
                None => std::env::var("BASEDATA_TOKEN").map_err(|_| anyhow::anyhow!("set BASEDATA_TOKEN or pass --token-file"))?,
            };
            let w = basedata_tools::report::annual(&basedata_tools::report::Options { url, token, year, out, pdf: !no_pdf })?;
            for p in [Some(&w.json), Some(&w.html), w.pdf.as_ref()].into_iter().flatten() {
                println!("{}", p.display());
            }
            Ok(())
        }
        Command::AuditVerify { data, config, key_file, backups, heads } => {
            logging::init("warn");
            let cfg = load_config(config.as_deref())?;
            let heads = heads.iter().map(|h| parse_head(h)).collect::<anyhow::Result<Vec<_>>>()?;
            let (basedata_tools::offline::AuditChecks { chain: check, remote, index }, anchors, held) =
                basedata_tools::offline::audit_verify(&data, &cfg, key_file.as_deref(), backups.as_deref(), &heads)?;
            let ok = check.ok && remote.iter().all(|(_, c)| c.ok) && index.ok && anchors.iter().all(|a| a.ok) && held.iter().all(Option::is_none);
            let mut line = serde_json::json!({"ok": ok, "entries": check.entries, "head": hex::encode(check.head)});
            line["index"] = serde_json::json!({"ok": index.ok, "keys": index.keys, "problem": index.problem});
            if !heads.is_empty() {
                line["heads"] = heads
                    .iter()
                    .zip(&held)
                    .map(|((seq, hash), p)| serde_json::json!({"seq": seq, "hash": hash, "ok": p.is_none(), "problem": p}))
                    .collect();
            }
            if backups.is_some() {
                line["backups"] = anchors
                    .iter()
                    .map(|a| serde_json::json!({"backup_id": a.backup_id, "created_at": a.created_at, "seq": a.seq, "ok": a.ok, "problem": a.problem, "note": a.note}))
                    .collect();
            }
            if let Some(p) = &check.problem {
                line["problem"] = serde_json::json!(p);
            }
            if check.starts_after > 0 {
                line["starts_after"] = serde_json::json!(check.starts_after);
            }
            // Other nodes' chains held here (cluster mode), each checked apart.
            if !remote.is_empty() {
                line["chains"] = remote
                    .iter()
                    .map(|(node, c)| {
                        serde_json::json!({"node": node, "entries": c.entries, "starts_after": c.starts_after, "head": hex::encode(c.head), "ok": c.ok, "problem": c.problem})
                    })
                    .collect();
            }
            println!("{line}");
            // Every check that failed, each on its line.
            let why = |p: &Option<String>| p.clone().unwrap_or_else(|| "unknown problem".into());
            let mut failed = Vec::new();
            if !check.ok {
                failed.push(format!("the audit chain is broken: {}", why(&check.problem)));
            }
            for (node, c) in remote.iter().filter(|(_, c)| !c.ok) {
                failed.push(format!("the copy of node {node}'s audit chain is broken: {}", why(&c.problem)));
            }
            if !index.ok {
                failed.push(format!("the audit index does not match the entries: {}", why(&index.problem)));
            }
            for a in anchors.iter().filter(|a| !a.ok) {
                failed.push(format!("the audit chain does not hold backup {}'s head: {}", a.backup_id, why(&a.problem)));
            }
            for p in held.iter().flatten() {
                failed.push(format!("the audit chain does not hold a recorded head: {p}"));
            }
            for f in &failed {
                eprintln!("error: {f}");
            }
            if !failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::StaffPassword => {
            let password = basedata_tools::staff::read_password(&mut std::io::stdin().lock())?;
            println!("{}", basedata_server::accounts::staff::hash_password(&password)?);
            Ok(())
        }
        Command::Staff { action } => {
            logging::init("warn");
            run_staff(action)
        }
        Command::Backup { data, to } => control::run_backup(&data, &to),
        Command::Restore { from, data, key_file, backup_id } => {
            control::run_restore(&from, &data, key_file.as_deref(), backup_id)
        }
    }
}

/// `SEQ:HASH` of `audit-verify --head`: a sequence number and 64 hex digits.
fn parse_head(text: &str) -> anyhow::Result<(u64, String)> {
    let bad = || anyhow::anyhow!("--head {text:?}: expected SEQ:HASH, a sequence number and the entry's 64-digit hex hash");
    let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
    let seq = seq.trim().parse().map_err(|_| bad())?;
    let hash = hash.trim();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}
