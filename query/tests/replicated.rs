//! Governance through a replicated log, without a transport: two nodes
//! (each its own store, committer and use cases) share an in-memory log
//! that both apply in order. Checked: a grant applied for on one node and
//! decided on the other opens the field on both; a dispute filed on one is
//! resolved on the other; two nodes that deem the same grant approved at
//! once change it once and audit it once; a revocation closes the field on
//! both; and both end with the same governance digest.

use basedata_query::replicated::{Applied, Change, Entry, Expect, GovernanceLog, LogFuture};
use basedata_query::{Caller, Coverage, Department, GrantSource, Queries, Role, Scope};
use basedata_store::caller::Listed;
use basedata_store::clock::ManualClock;
use basedata_store::commit::Committer;
use basedata_store::audit::AuditQuery;
use basedata_store::{Catalog, Secret, Store, WriteBatch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const DAY: i64 = 86_400_000_000;
/// 2026-03-02 09:00 China Standard Time, a Monday.
const START: i64 = 1_772_413_200_000_000;


/// The shared log: entries in order, and how far each node has applied it.
#[derive(Default)]
struct Hub {
    entries: Mutex<Vec<Vec<u8>>>,
    nodes: OnceLock<Vec<(String, Arc<Queries>)>>,
    applied: tokio::sync::Mutex<Vec<usize>>,
    outcomes: Mutex<HashMap<(usize, u64), Applied>>,
}

impl Hub {
    /// Every node applies every entry it has not yet applied, in order.
    async fn drain(&self) {
        let nodes = self.nodes.get().expect("nodes are set");
        let mut applied = self.applied.lock().await;
        for (i, (name, q)) in nodes.iter().enumerate() {
            loop {
                let Some(bytes) = self.entries.lock().unwrap().get(applied[i]).cloned() else { break };
                let position = applied[i] as u64 + 1;
                let entry = Entry::decode(&bytes).unwrap();
                let events = if entry.origin == *name { entry.events().unwrap() } else { Vec::new() };
                let out = q.apply_change(&entry.change, events, WriteBatch::new()).await.unwrap();
                self.outcomes.lock().unwrap().insert((i, position), out);
                applied[i] += 1;
            }
        }
    }

    fn append(&self, bytes: Vec<u8>) -> u64 {
        let mut e = self.entries.lock().unwrap();
        e.push(bytes);
        e.len() as u64
    }
}

struct NodeLog {
    hub: Arc<Hub>,
    index: usize,
    name: String,
}

impl GovernanceLog for NodeLog {
    fn node(&self) -> &str {
        &self.name
    }
    fn append<'a>(&'a self, entry: Vec<u8>) -> LogFuture<'a, Result<u64, String>> {
        Box::pin(async move { Ok(self.hub.append(entry)) })
    }
    fn outcome<'a>(&'a self, position: u64) -> LogFuture<'a, Option<Applied>> {
        Box::pin(async move {
            self.hub.drain().await;
            self.hub.outcomes.lock().unwrap().get(&(self.index, position)).cloned()
        })
    }
}

struct Node {
    q: Arc<Queries>,
    clock: Arc<ManualClock>,
    store: Arc<Store>,
}

fn node(hub: &Arc<Hub>, index: usize, name: &str, directory: Arc<Listed>) -> Node {
    let clock = Arc::new(ManualClock::new(START));
    let store = Arc::new(
        Store::open(
            Arc::new(basedata_store::engine::mem::MemEngine::new()),
            &Secret::from_bytes([7; 32]),
            Arc::new(Catalog::builtin()),
            clock.clone(),
        )
        .unwrap(),
    );
    let committer = Arc::new(Committer::start(store.clone(), 64));
    let q = Arc::new(
        Queries::new(store.clone(), committer, Default::default(), basedata_store::calendar::Calendar::builtin(), directory).unwrap(),
    );
    q.use_governance_log(Arc::new(NodeLog { hub: hub.clone(), index, name: name.to_owned() }));
    Node { q, clock, store }
}

fn photo_open(n: &Node, department: &str) -> bool {
    n.q.grants.coverage(department, None, "hukou", Scope::Field("photo")) == Coverage::Covered
}

fn audited(n: &Node, outcome_prefix: &str) -> usize {
    let q = AuditQuery { limit: 1000, ..Default::default() };
    n.store.audit_query(&q).unwrap().iter().filter(|e| e.outcome.starts_with(outcome_prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_agree_on_grants_disputes_and_deemed_approvals() {
    let gongan = Arc::new(Department::new("gongan", vec![Role::Provider, Role::Consumer]));
    let shebao = Arc::new(Department::new("shebao", vec![Role::Consumer]));
    let directory = Arc::new(Listed(vec![gongan.clone(), shebao.clone()]));
    let hub = Arc::new(Hub::default());
    let (a, b) = (node(&hub, 0, "node-a", directory.clone()), node(&hub, 1, "node-b", directory.clone()));
    hub.nodes.set(vec![("node-a".into(), a.q.clone()), ("node-b".into(), b.q.clone())]).ok().unwrap();
    *hub.applied.lock().await = vec![0, 0];
    let consumer = Caller::declared(shebao.clone(), Some("clerk".into()));
    let provider = Caller::declared(gongan.clone(), Some("steward".into()));
    let fields = vec!["photo".to_owned()];
    let application = |purpose: &'static str| basedata_query::governance::Application {
        dataset: "hukou",
        kind: basedata_query::gov::GrantKind::Fields,
        fields: &fields,
        purpose: Some(purpose),
        legal_basis: Some("《社会保险法》第七十二条"),
    };

    // Applied for on A, approved on B: open on both, audited once each,
    // each on the node that took the request.
    let g = a.q.apply_grant(&consumer, &application("待遇资格认证")).await.unwrap();
    assert_eq!(b.q.grants.get(&g.id).map(|g| g.state.as_str()), Some("pending"));
    assert!(!photo_open(&a, "shebao") && !photo_open(&b, "shebao"));
    b.q.decide_grant(&provider, &g.id, true, Some("依法履职需要")).await.unwrap();
    assert!(photo_open(&a, "shebao") && photo_open(&b, "shebao"));
    assert_eq!((audited(&a, "applied"), audited(&b, "applied")), (1, 0));
    assert_eq!((audited(&a, "approved"), audited(&b, "approved")), (0, 1));
    // Decided again on A: refused there, as it would be on any node.
    let again = a.q.decide_grant(&provider, &g.id, false, Some("x")).await.unwrap_err();
    assert_eq!(again.code(), "conflict", "{again}");

    // Two decisions made from the same state before either is applied (two
    // nodes at once): the first in the log wins everywhere, the second
    // changes nothing and is audited nowhere.
    let pending = a.q.apply_grant(&consumer, &application("异地协查")).await.unwrap();
    let mut approve = pending.clone();
    approve.state = basedata_query::gov::GrantState::Approved;
    let mut refuse = pending.clone();
    refuse.state = basedata_query::gov::GrantState::Rejected;
    let ev = |outcome: &str| {
        let mut e = provider.event("decision", basedata_store::Action::Grant, None);
        e.outcome = outcome.to_owned();
        e
    };
    let first = Entry::new("node-b", Change::Grant { grant: refuse, expect: Expect::GrantIn(vec![pending.state]) }, &[ev("rejected race")]);
    let second = Entry::new("node-a", Change::Grant { grant: approve, expect: Expect::GrantIn(vec![pending.state]) }, &[ev("approved race")]);
    let (p1, p2) = (hub.append(first.encode()), hub.append(second.encode()));
    hub.drain().await;
    let outcomes = hub.outcomes.lock().unwrap().clone();
    for n in 0..2 {
        assert!(outcomes[&(n, p1)].is_ok(), "node {n}: {:?}", outcomes[&(n, p1)]);
        assert!(outcomes[&(n, p2)].as_ref().is_err_and(|why| why.contains("rejected")), "node {n}: {:?}", outcomes[&(n, p2)]);
    }
    assert_eq!(a.q.grants.get(&pending.id).unwrap().state.as_str(), "rejected");
    assert_eq!((audited(&a, "approved race"), audited(&b, "rejected race")), (0, 1));

    // Revoked on A: closed on both.
    a.q.revoke_grant(&provider, &g.id, Some("用途已结束")).await.unwrap();
    assert!(!photo_open(&a, "shebao") && !photo_open(&b, "shebao"));

    // A grant left undecided: both nodes pass its deadline and sweep; it is
    // deemed approved once, and audited once.
    let waiting = b.q.apply_grant(&consumer, &application("出生医学证明核验")).await.unwrap();
    for n in [&a, &b] {
        n.clock.advance(30 * DAY);
    }
    // Both sweeps find it pending before either's entry is applied.
    let found: Vec<_> = [&a, &b].iter().map(|n| n.q.grants.overdue_pending()).collect();
    assert!(found.iter().all(|f| f.iter().any(|g| g.id == waiting.id)));
    let (ra, rb) = tokio::join!(a.q.sweep_deemed(), b.q.sweep_deemed());
    assert_eq!(ra.unwrap() + rb.unwrap(), 1, "deemed approved exactly once");
    for n in [&a, &b] {
        assert_eq!(n.q.grants.get(&waiting.id).unwrap().state.as_str(), "deemed_approved");
    }
    assert_eq!(audited(&a, "deemed_approved") + audited(&b, "deemed_approved"), 1);
    assert!(photo_open(&a, "shebao") && photo_open(&b, "shebao"), "the deemed grant opens the photo on both");

    // A dispute filed on B is resolved on A.
    let claimed = serde_json::json!("李四");
    let filing = basedata_query::governance::DisputeFiling {
        subject: "person",
        key: "11010519491231002X",
        id_type: None,
        dataset: "hukou",
        field: "name",
        claimed: &claimed,
        note: Some("户籍窗口核对"),
    };
    let d = b.q.file_dispute(&consumer, &filing).await.unwrap();
    let on_a = a.q.disputes(&provider, Some("open")).await.unwrap();
    assert_eq!(on_a.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [d.id.as_str()]);
    let resolved = a.q.resolve_dispute(&provider, &d.id, "confirmed", Some("经核实无误")).await.unwrap();
    assert_eq!(resolved.resolution.map(|r| r.as_str()), Some("confirmed"));
    assert!(b.q.disputes(&provider, Some("open")).await.unwrap().is_empty());
    let again = b.q.resolve_dispute(&provider, &d.id, "confirmed", None).await.unwrap_err();
    assert_eq!(again.code(), "conflict");

    // Responsible persons recorded on A stand on B.
    let admin = Caller::declared(Arc::new(Department::new("admin", vec![Role::Admin])), None);
    let person = basedata_store::caller::ResponsiblePerson {
        name: "王五".into(),
        post: "科长".into(),
        contact: "020-00000000".into(),
        since: "2026-01-05".into(),
    };
    a.q.set_responsible(&admin, "gongan", vec![person.clone()]).await.unwrap();
    let on_b = b.q.departments(&admin).unwrap();
    assert_eq!(on_b.iter().find(|d| d.id == "gongan").unwrap().responsible, vec![person]);

    // A staff account added on A is taken in by B's console too.
    let taken: Arc<Mutex<Vec<String>>> = Arc::default();
    for n in [&a, &b] {
        let taken = taken.clone();
        n.q.on_staff_change(Arc::new(move |r| taken.lock().unwrap().push(r.id.clone())));
    }
    let account = basedata_query::staff::StaffRecord {
        id: "li.si".into(),
        name: "李四".into(),
        department: "shebao".into(),
        roles: vec!["clerk".into()],
        password_argon2: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        disabled: false,
        created_at: START,
        created_by: "admin1".into(),
        changed_at: START,
        changed_by: "admin1".into(),
    };
    let ev = admin.event("account", basedata_store::Action::Account, None);
    a.q.store_staff(account.clone(), Expect::Absent, ev.clone()).await.unwrap();
    assert_eq!(*taken.lock().unwrap(), ["li.si", "li.si"], "taken in on both nodes");
    assert_eq!(basedata_query::staff::load(&**b.store.engine(), "li.si").unwrap(), Some(account.clone()));
    let twice = b.q.store_staff(account.clone(), Expect::Absent, ev.clone()).await.unwrap_err();
    assert_eq!(twice.code(), "conflict", "{twice}");
    // Two changes built from the same version, on two nodes: the first in
    // the log stands on both, the second would undo it and is refused.
    let off = basedata_query::staff::StaffRecord { disabled: true, changed_at: START + 1, ..account.clone() };
    let renamed = basedata_query::staff::StaffRecord { name: "李四四".into(), changed_at: START + 2, ..account };
    a.q.store_staff(off.clone(), Expect::ChangedAt(START), ev.clone()).await.unwrap();
    let late = b.q.store_staff(renamed, Expect::ChangedAt(START), ev).await.unwrap_err();
    assert_eq!(late.code(), "conflict", "{late}");
    for n in [&a, &b] {
        assert_eq!(basedata_query::staff::load(&**n.store.engine(), "li.si").unwrap(), Some(off.clone()));
    }

    let (da, db) = (a.q.governance_digest().unwrap(), b.q.governance_digest().unwrap());
    assert_eq!((da.grants, da.disputes, da.responsible, da.accounts), (3, 1, 1, 1));
    assert_eq!(da, db);
}
