//! Fuzzes the normalization behind verification: any claim, for any field
//! of the built-in catalog, is either refused or reduced to a canonical
//! form without a panic; and a value a provider could store, claimed back
//! as the provider sent it or as the API shows it, always matches.
#![no_main]

use basedata_query::compare::{canonical_claim, canonical_stored, same};
use basedata_store::{Catalog, Value};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use std::sync::OnceLock;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

fuzz_target!(|data: &[u8]| {
    let [d, f, rest @ ..] = data else { return };
    let datasets = catalog().datasets();
    let dataset = &datasets[*d as usize % datasets.len()];
    let field = &dataset.fields[*f as usize % dataset.fields.len()];
    // The same bytes as a JSON document and as a plain string claim.
    let mut claims = Vec::with_capacity(2);
    if let Ok(j) = serde_json::from_slice::<Json>(rest) {
        claims.push(j);
    }
    if let Ok(s) = std::str::from_utf8(rest) {
        claims.push(Json::String(s.to_owned()));
    }
    for claim in claims {
        let canonical = canonical_claim(field, &claim);
        let Ok(Some(stored)) = Value::from_json(field, &claim) else { continue };
        let stored_form = canonical_stored(&stored);
        let canonical = canonical.unwrap_or_else(|e| panic!("a storable value is refused as a claim: {e}"));
        assert!(same(&canonical, &stored_form), "a stored value claimed as sent does not match");
        let shown = canonical_claim(field, &stored.to_json()).expect("the API's own form of a value is refused as a claim");
        assert!(same(&shown, &stored_form), "a stored value claimed as shown does not match");
    }
});
