//! `basedata demo`: a generated data set, demo departments with printed
//! tokens, demo staff accounts of the console, and the server, in one
//! command.

use anyhow::Context;
use basedata_gen::{self as gen, GenConfig};
use basedata_query::caller::ResponsiblePerson;
use basedata_query::gov::GrantKind;
use basedata_query::governance::Application;
use basedata_server::config::{Config, DepartmentConfig, Role};
use basedata_server::accounts::staff::hash_password;
use basedata_server::config::{StaffConfig, StaffRole};
use basedata_server::lifecycle as server;
use basedata_ingest::{parse_line, BatchLoader};
use basedata_store::keys::mask;
use std::path::Path;
use std::time::Instant;

pub struct DemoOptions<'a> {
    pub data: &'a Path,
    pub persons: u64,
    pub entities: u64,
    pub seed: u64,
    pub listen: &'a str,
    /// A catalog file instead of the built-in one (for instance the
    /// example of several providers, `store/catalog/several-providers.toml`).
    pub catalog: Option<&'a Path>,
}

/// The demo's consumer in the strict purpose mode: it states only these
/// catalogued purposes.
pub const STRICT_COUNTER: &str = "yibao-counter";
const STRICT_PURPOSES: &[&str] = &["medical_insurance", "identity_check"];

/// The counter in the transitional mode.
const FEED_COUNTER: &str = "shebao-counter";

fn person(name: &str, post: &str, contact: &str, since: &str) -> ResponsiblePerson {
    ResponsiblePerson { name: name.into(), post: post.into(), contact: contact.into(), since: since.into() }
}

/// One department per provider in the catalog (every provider of a
/// dataset of several, each with its own token), plus two service counters
/// (one with free-text purposes, the transitional mode, one with a purpose
/// list, the strict mode), an auditor and an administrator; tokens are
/// fixed so the printed examples keep working across restarts. Some
/// departments name responsible persons, one of them long ago, so that
/// the sharing report shows current, out-of-date and missing records.
pub fn demo_departments(catalog: &basedata_store::Catalog) -> Vec<DepartmentConfig> {
    let mut out: Vec<DepartmentConfig> = Vec::new();
    for p in catalog.datasets().iter().flat_map(|ds| &ds.providers) {
        if !out.iter().any(|d| d.id == p.id) {
            out.push(DepartmentConfig {
                id: p.id.clone(),
                name: p.name.clone(),
                roles: vec![Role::Provider, Role::Consumer],
                token: Some(format!("demo-{}-token", p.id)),
                ..Default::default()
            });
        }
    }
    for (id, name, role, token) in [
        (FEED_COUNTER, "社保服务窗口", Role::Consumer, "demo-counter-token"),
        (STRICT_COUNTER, "医保服务窗口", Role::Consumer, "demo-yibao-token"),
        ("shenji", "审计部门", Role::Auditor, "demo-auditor-token"),
        ("admin", "共享主管部门", Role::Admin, "demo-admin-token"),
    ] {
        out.push(DepartmentConfig {
            id: id.into(),
            name: name.into(),
            roles: vec![role],
            token: Some(token.into()),
            ..Default::default()
        });
    }
    for d in &mut out {
        match d.id.as_str() {
            STRICT_COUNTER => {
                d.purposes = Some(STRICT_PURPOSES.iter().map(|p| (*p).to_owned()).collect());
                d.responsible = vec![person("演示联络员乙", "医保服务窗口负责人", "020-00000002", "2026-06-01")];
            }
            FEED_COUNTER => d.responsible = vec![person("演示联络员甲", "社保服务窗口负责人", "020-00000001", "2024-03-01")],
            "gongan" => d.responsible = vec![person("演示联络员丙", "信息中心主任", "020-00000003", "2026-09-01")],
            _ => {}
        }
    }
    out
}

/// Subscriptions of every consumer in the transitional mode to the changes
/// of every dataset it does not provide, applied for and approved through
/// the grant rules like any other, so that the change feed delivers to
/// them as before subscriptions existed (the strict counter holds none).
/// Applied once per data directory.
async fn demo_subscriptions(state: &basedata_server::http::AppState) -> anyhow::Result<()> {
    for dept in state.departments.iter().filter(|d| d.has(Role::Consumer) && d.identity.purposes.is_none()) {
        let consumer = dept.caller(None);
        let held = state.queries.grants_list(&consumer, None)?;
        for ds in state.catalog.datasets() {
            if ds.is_provided_by(&dept.id) || held.iter().any(|g| g.dataset == ds.id && g.kind == GrantKind::Subscription) {
                continue;
            }
            let Some(provider) = state.departments.get(&ds.provider) else { continue };
            let application = Application {
                dataset: &ds.id,
                kind: GrantKind::Subscription,
                fields: &[],
                purpose: Some("演示：业务系统同步基础数据"),
                legal_basis: Some("《政务信息资源共享管理暂行办法》第十四条"),
            };
            let g = state.queries.apply_grant(&consumer, &application).await?;
            state.queries.decide_grant(&provider.caller(None), &g.id, true, None).await?;
        }
    }
    Ok(())
}

/// Console accounts, one per kind of staff, with fixed demo passwords
/// (printed by the banner): (id, name, department, role, password).
pub const DEMO_STAFF: &[(&str, &str, &str, StaffRole, &str)] = &[
    ("clerk", "王窗口", "shebao-counter", StaffRole::Clerk, "demo-clerk-pass"),
    ("steward", "李管护", "gongan", StaffRole::Steward, "demo-steward-pass"),
    ("auditor", "赵审计", "shenji", StaffRole::Auditor, "demo-auditor-pass"),
    ("admin", "钱管理", "admin", StaffRole::Admin, "demo-admin-pass"),
];

/// The `[[staff]]` accounts of [`DEMO_STAFF`], their passwords hashed.
pub fn demo_staff() -> anyhow::Result<Vec<StaffConfig>> {
    DEMO_STAFF
        .iter()
        .map(|(id, name, dept, role, pw)| {
            Ok(StaffConfig {
                id: (*id).into(),
                name: (*name).into(),
                department: (*dept).into(),
                roles: vec![*role],
                password_argon2: Some(hash_password(pw)?),
                cert_subject: None,
                disabled: false,
            })
        })
        .collect()
}

fn generate_into(store: &basedata_store::Store, g: &GenConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let catalog = store.catalog().clone();
    let mut loader = BatchLoader::new(store);
    let mut failure: Option<anyhow::Error> = None;
    let mut rejected = 0u64;
    gen::generate(g, &catalog, &mut |dataset, line| {
        let Some(ds) = catalog.dataset(dataset) else { return Ok(()) };
        match parse_line(ds, line) {
            Ok(u) => {
                if let Err(e) = loader.push(u) {
                    failure.get_or_insert(e.into());
                    return Err(std::io::Error::other("store write failed"));
                }
            }
            Err(_) => rejected += 1,
        }
        Ok(())
    })
    .map_err(|e| failure.take().unwrap_or_else(|| e.into()))?;
    let summary = loader.finish()?;
    anyhow::ensure!(rejected == 0, "the generator produced {rejected} invalid lines");
    eprintln!(
        "generated and loaded {} records in {:.1}s",
        summary.applied,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn run(opts: DemoOptions<'_>) -> anyhow::Result<()> {
    let mut cfg = Config { catalog: opts.catalog.map(Path::to_path_buf), ..Config::default() };
    let catalog = server::load_catalog(&cfg)?;
    cfg.departments = demo_departments(&catalog);
    cfg.staff = demo_staff()?;
    let fresh = std::fs::read_dir(opts.data).map(|mut d| d.next().is_none()).unwrap_or(true);
    let store = server::open_store(opts.data, &cfg, None, server::system_clock())?;
    let g = GenConfig { persons: opts.persons, entities: opts.entities, seed: opts.seed };
    if fresh {
        eprintln!("generating {} persons and {} entities into {} ...", opts.persons, opts.entities, opts.data.display());
        generate_into(&store, &g).context("demo data generation failed")?;
    } else {
        eprintln!("using the existing demo data in {}", opts.data.display());
    }
    let state = server::app_state(store, &cfg)?;
    server::place_spill(opts.data, &cfg)?;
    let rt = server::runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        demo_subscriptions(&state).await.context("demo subscriptions")?;
        print_banner(&addr.to_string(), &cfg.departments, &g, fresh);
        server::serve(state, listener).await
    })
}

fn print_banner(addr: &str, depts: &[DepartmentConfig], g: &GenConfig, fresh: bool) {
    let person = if g.persons > 0 { Some(gen::person_key(g, 0)) } else { None };
    let mut out = String::new();
    out.push_str(&format!("\nbasedata demo listening on http://{addr}\n\nDemo departments (token -> department, roles):\n"));
    for d in depts {
        let roles: Vec<_> = d.roles.iter().map(|r| r.as_str()).collect();
        out.push_str(&format!("  {:<24} {:<16} {}\n", d.token.as_deref().unwrap_or(""), d.id, roles.join(",")));
    }
    out.push_str(&format!("\nConsole (web pages for people): http://{addr}/console/ — sign in as (id / password, role):\n"));
    for (id, name, dept, role, pw) in DEMO_STAFF {
        out.push_str(&format!("  {:<10} {:<20} {} ({:?}, {})\n", id, pw, name, role, dept));
    }
    out.push_str(&format!(
        "\nPurposes (X-Purpose: CODE or CODE; note; codes in GET /v1/catalog): {STRICT_COUNTER} may state only {} (strict);\nthe other departments still state free text (transitional) and hold approved change-feed subscriptions.\n",
        STRICT_PURPOSES.join(", ")
    ));
    out.push_str("\nTry:\n");
    out.push_str(&format!("  curl -s -H 'Authorization: Bearer demo-counter-token' http://{addr}/v1/catalog\n"));
    if let Some(p) = person {
        out.push_str(&format!(
            "  curl -s -H 'Authorization: Bearer demo-counter-token' http://{addr}/v1/keys/person/{}\n",
            p.as_str()
        ));
        if !fresh {
            out.push_str("  (the data directory was reused; generated keys depend on the persons/seed it was made with)\n");
        }
        tracing::info!(example_key = %mask(p.as_str()), "demo ready");
    }
    out.push_str(&format!(
        "  BASEDATA_TOKEN=demo-auditor-token target/release/basedata report annual --url http://{addr} --out target/reports   # the yearly report: JSON, HTML, PDF\n"
    ));
    println!("{out}");
}
