//! Fuzzes key parsing of every document type: never a panic, and every
//! accepted key is already in its one normalized form.
#![no_main]

use basedata_store::keys::{DocType, EntityKey, PersonKey, Subject, SubjectKey};
use libfuzzer_sys::fuzz_target;
use time::macros::date;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A fixed "today" keeps the birth-date-in-the-future rule deterministic.
    let today = date!(2026 - 06 - 30);
    if let Ok(k) = PersonKey::parse_at(text, today) {
        assert_eq!(k.as_str().len(), 18);
        assert_eq!(PersonKey::parse_at(k.as_str(), today), Ok(k), "normalization is not idempotent");
        assert_eq!(PersonKey::from_normalized_bytes(k.as_bytes()), Ok(k));
        assert!(k.birth_date() <= today);
        let _ = (k.gender(), k.region(), k.sequence());
        assert!(!k.masked().to_string().contains(&k.as_str()[6..14]), "the mask shows the birth date");
        let s = SubjectKey::parse_at(Subject::Person, text, today).expect("subject key parse disagrees");
        assert_eq!(s.as_str(), k.as_str());
    }
    if let Ok(k) = EntityKey::parse(text) {
        assert_eq!(k.as_str().len(), 18);
        assert_eq!(EntityKey::parse(k.as_str()), Ok(k), "normalization is not idempotent");
        assert_eq!(EntityKey::from_normalized_bytes(k.as_bytes()), Ok(k));
        let _ = (k.registration_authority(), k.organization_type());
        let s = SubjectKey::parse(Subject::Entity, text).expect("subject key parse disagrees");
        assert_eq!(s.as_str(), k.as_str());
    }
    for doc in DocType::ALL {
        if let Ok(k) = SubjectKey::parse_doc_at(doc, text, today) {
            assert_eq!(k.subject(), doc.subject());
            assert_eq!(SubjectKey::parse_doc_at(doc, k.as_str(), today), Ok(k), "normalization is not idempotent");
            assert_eq!(SubjectKey::from_normalized_bytes(k.doc_type(), k.as_bytes()), Ok(k));
        }
    }
});
