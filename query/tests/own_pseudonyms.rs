//! A key's uses are recorded under its own pseudonym, also when its
//! records live under another key's (a credit code given to an entity
//! first known by its business-licence number): the pseudonym a lookup
//! and a verification hand on for the audit entry is the key's own.

use basedata_gen::{doc_key, entity_key, GenConfig};
use basedata_ingest::line::parse_value;
use basedata_query::lookup::lookup;
use basedata_query::{Caller, Department, NoGrants, Role};
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::keys::DocType;
use basedata_store::{Catalog, Durability, Secret, Store, SubjectKey};
use serde_json::json;
use std::sync::Arc;

const GEN: GenConfig = GenConfig { persons: 1, entities: 1, seed: 11 };

#[test]
fn lookups_and_verifications_hand_on_the_key_s_own_pseudonym() {
    let catalog = Arc::new(Catalog::builtin());
    let store = Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([3; 32]), catalog.clone(), Arc::new(ManualClock::new(1_000_000)))
        .unwrap();
    store.keep_prints().unwrap();
    let d = catalog.dataset("market_registration").unwrap();
    let licence = doc_key(&GEN, DocType::BusinessLicence, 0);
    let code = SubjectKey::Entity(entity_key(&GEN, 0));
    let known = json!({"key": licence.as_str(), "id_type": "business_licence", "version": 1, "fields": {"name": "某某五金店", "status": "active"}});
    store.apply(&[parse_value(d, &known).unwrap()], Durability::Buffered).unwrap();
    let given = json!({"key": code.as_str(), "registration_number": licence.as_str(), "version": 2, "fields": {"name": "某某五金有限公司", "status": "active"}});
    store.apply(&[parse_value(d, &given).unwrap()], Durability::Buffered).unwrap();
    // The code's records are the licence number's.
    let home = store.home(&code).unwrap();
    assert!(home.linked);
    assert_eq!(home.pid, store.pseudonym(&licence));
    assert_ne!(store.pseudonym(&code), store.pseudonym(&licence));

    let caller = Caller::declared(Arc::new(Department::new("shichang", vec![Role::Consumer])), None);
    let prints = store.prints().expect("the store keeps fingerprints");
    for key in [code, licence] {
        let found = lookup(&store, &caller, &NoGrants, &key, &[d], None).unwrap();
        assert_eq!(found.pid, Some(store.pseudonym(&key)), "lookup of {}", key.as_str());
        let mut seen = 0;
        store
            .printed_many(&prints, &[(key, "market_registration")], |_, pid, view| {
                assert_eq!(pid, store.pseudonym(&key), "verification of {}", key.as_str());
                assert!(view.is_some(), "{} has a record", key.as_str());
                seen += 1;
            })
            .unwrap();
        assert_eq!(seen, 1);
    }
}
