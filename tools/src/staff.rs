//! `basedata staff`: the console's stored staff accounts managed without
//! the console, on a data directory whose server is stopped — how an
//! operator creates the first administrator of a new store. The same
//! checks, records and audit entries as the console's account page
//! (`basedata_server::accounts::staff`); passwords come from standard
//! input, never from the command line.

use crate::offline::locked;
use anyhow::{bail, Context};
use basedata_server::accounts::staff::{self, Change, NewAccount, StaffBook};
use basedata_server::config::Config;
use basedata_server::lifecycle as server;
use basedata_store::audit::Action;
use basedata_store::caller::system_event;
use basedata_store::{dir, Durability, Store};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// What to do.
#[derive(Clone, Debug)]
pub enum StaffAction {
    Add(NewAccount),
    Disable(String),
    Enable(String),
    Reset(String),
    List,
}

pub struct StaffOptions<'a> {
    pub data: &'a Path,
    pub config: &'a Config,
    pub key_file: Option<&'a Path>,
    /// Who runs the command, recorded as the audit entry's (declared) operator.
    pub operator: Option<&'a str>,
    /// Generate the new password (printed once) instead of reading it.
    pub generate: bool,
}

/// The purpose recorded for account changes from the command line.
const PURPOSE: &str = "账号管理（命令行）";

/// Runs `action`; `input` is where a password is read from. Returns what
/// to print on standard output.
pub fn run(o: &StaffOptions, action: StaffAction, input: &mut dyn BufRead) -> anyhow::Result<String> {
    if let Some(op) = o.operator {
        if !staff::valid_id(op) {
            bail!("--operator: use 1 to 64 of A-Z a-z 0-9 . _ -");
        }
    }
    let departments = basedata_server::auth::Departments::from_config(&o.config.departments)?;
    let store = open(o, matches!(action, StaffAction::Add(_)))?;
    let stored = basedata_query::staff::all(store.engine().as_ref())?;
    let book = StaffBook::load(&o.config.staff, &stored, o.config.console, &departments)?;
    let now = store.clock().now_micros();
    let by = o.operator.unwrap_or("");
    let (record, verb, generated) = match action {
        StaffAction::List => return Ok(list(&book)),
        StaffAction::Add(account) => {
            book.check_new(&account)?;
            let (hash, generated) = password(o.generate, input)?;
            (book.new_record(&account, hash, by, now)?, "added", generated)
        }
        StaffAction::Reset(id) => {
            book.stored_account(&id)?;
            let (hash, generated) = password(o.generate, input)?;
            let change = Change::Reset(hash);
            (book.changed_record(&id, &change, by, now)?.0, change.verb(), generated)
        }
        // The store is this command's alone: no other change can come between.
        StaffAction::Disable(id) => (book.changed_record(&id, &Change::Disable, by, now)?.0, Change::Disable.verb(), None),
        StaffAction::Enable(id) => (book.changed_record(&id, &Change::Enable, by, now)?.0, Change::Enable.verb(), None),
    };
    let mut ev = system_event(PURPOSE, Action::Account);
    ev.operator = o.operator.map(str::to_owned);
    ev.outcome = format!("{verb} {}", record.id);
    store.commit_with(&[], &[ev], record.write(), Durability::Sync)?;
    let mut out = format!("{verb} {}\n", record.id);
    if let Some(p) = generated {
        out.push_str(&format!("password: {p}\n"));
    }
    Ok(out)
}

/// Opens the store; only `add` may create one (the first administrator
/// of a new data directory).
fn open(o: &StaffOptions, may_create: bool) -> anyhow::Result<Arc<Store>> {
    if !may_create && !dir::holds_store(o.data) {
        bail!("no store in {}", o.data.display());
    }
    server::open_store(o.data, o.config, o.key_file, server::config_clock(o.config))
        .map_err(|e| {
            if locked(&e) {
                e.context("the store is in use by a running server: stop it first, or manage the accounts on the console's account page (账号管理) while it runs")
            } else {
                e
            }
        })
}

/// The new password's hash: generated (and returned to be shown once),
/// or the first line of `input`.
fn password(generate: bool, input: &mut dyn BufRead) -> anyhow::Result<(String, Option<String>)> {
    let (password, generated) = if generate {
        let p = staff::generate_password();
        (p.clone(), Some(p))
    } else {
        (read_password(input)?, None)
    };
    Ok((staff::hash_password(&password)?, generated))
}

/// A new password: the first line of `input`, checked.
pub fn read_password(input: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).context("cannot read the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        bail!("no password on standard input");
    }
    staff::check_password(&p)?;
    Ok(p)
}

/// One line per account: id, source, state, department, roles, name;
/// then the stored accounts left out, with why.
fn list(book: &StaffBook) -> String {
    let mut out = String::new();
    for s in book.all() {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            s.id,
            if s.stored() { "store" } else { "config" },
            if s.disabled { "disabled" } else { "enabled" },
            s.department.id,
            s.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
            s.name
        ));
    }
    for (id, why) in book.left_out() {
        out.push_str(&format!("{id}\tstore\tleft out: {why}\n"));
    }
    out
}
