//! Fuzzes provider update-line parsing against every dataset of the
//! built-in catalog: never a panic, errors carry one of the API's codes,
//! and an accepted update written back out as a line parses to itself.
#![no_main]

use basedata_ingest::line::{parse_line, write_line};
use basedata_store::Catalog;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, line)) = data.split_first() else { return };
    let datasets = catalog().datasets();
    let dataset = &datasets[pick as usize % datasets.len()];
    let update = match parse_line(dataset, line) {
        Ok(u) => u,
        Err(e) => {
            assert!(
                matches!(e.code, "invalid_body" | "invalid_key" | "unknown_field" | "invalid_value"),
                "unexpected code {}",
                e.code
            );
            return;
        }
    };
    assert_eq!(update.dataset, dataset.id);
    assert_eq!(update.key.subject(), dataset.subject);
    // The writer cluster mode puts update lines on its log with.
    let mut again = Vec::new();
    write_line(&update, &mut again);
    let reparsed = parse_line(dataset, &again).expect("an accepted update, written back, is refused");
    assert_eq!(reparsed, update, "an accepted update does not round-trip");
});
