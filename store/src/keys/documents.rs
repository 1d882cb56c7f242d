//! Numbers of the legal documents other than the citizen ID and the credit
//! code that key subjects (Guangzhou Art. 20, Huizhou Arts. 19, 21): a
//! person's passport, Hong Kong/Macao/Taiwan travel permit or foreigner's
//! permanent residence card, and a market entity's business-licence
//! registration number. Each has its own rule, checked in the order of the
//! module above (`length`, `format`, `date`, `checksum`), with the same
//! normalization (trimming, full-width folding, upper case).
//!
//! - Passport (护照): 5 to 15 letters and digits. Chinese ordinary passports
//!   are `E`/`G` and 8 digits (or `E`, a letter and 7 digits since the `E`
//!   series ran out); foreign ones follow their issuer. A passport number
//!   carries no check character (the check digits of ICAO 9303 belong to
//!   the machine-readable zone, not to the number).
//! - Hong Kong/Macao and Taiwan permits (港澳居民来往内地通行证,
//!   台湾居民来往大陆通行证): `H` or `M` and 8 digits (10 on older cards,
//!   whose last two count the cards issued), or 8 digits for Taiwan. No
//!   check character. The residence permits of Hong Kong, Macao and Taiwan
//!   residents (港澳台居民居住证) are not these: their 18-digit numbers
//!   begin with 810000, 820000 or 830000, follow GB 11643 and are citizen
//!   ID numbers to this store; given as a permit they are keyed as such.
//! - Foreigner's permanent residence card (外国人永久居留身份证): the 2017
//!   card's 15 characters (3 letters of nationality, 12 digits; its check
//!   rule is not published, so only the form is checked), or the 2023
//!   card's 18 digits beginning with `9`, built like a citizen ID number
//!   (birth date at the same place, GB 11643 check character).
//! - Business-licence registration number (营业执照注册号, GS 15-2006): 15
//!   digits, the last an ISO 7064 MOD 11,10 check digit.

use super::{
    ascii_str, fold, person_birth, settle_check, validate_person, Folded, Gender, Horizon, KeyError, Masked,
    PersonKey, KEY_LEN,
};
use super::DocType;
use time::Date;

/// Shortest and longest passport numbers accepted: real ones have 7 to 9
/// characters; the margin admits unusual issuers without admitting junk.
pub const PASSPORT_LEN: std::ops::RangeInclusive<usize> = 5..=15;

/// A valid, normalized number of a passport, permit, permanent residence
/// card or business licence, with its document type: ASCII digits and
/// upper-case letters, at most 18 of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey {
    doc: DocType,
    len: u8,
    buf: [u8; KEY_LEN],
}

/// What a number turned out to be once parsed: most document types have
/// one key type, but an 18-digit residence permit given as a permit is a
/// citizen ID number.
pub(super) enum Parsed {
    Doc(DocKey),
    Citizen(PersonKey),
}

/// The ISO 7064 MOD 11,10 check digit of `digits` (ASCII digits).
pub fn mod11_10_check(digits: &[u8]) -> u8 {
    let mut p = 10u32;
    for &d in digits {
        let s = (p % 11 + u32::from(d - b'0')) % 10;
        p = if s == 0 { 10 } else { s } * 2;
    }
    b'0' + ((11 - p % 11) % 10) as u8
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// The prefixes of the 18-digit residence permits of Hong Kong, Macao and
/// Taiwan residents, and which they are.
const RESIDENCE_PERMITS: [(&[u8; 6], &str); 3] = [
    (b"810000", "hong_kong_residence_permit"),
    (b"820000", "macao_residence_permit"),
    (b"830000", "taiwan_residence_permit"),
];

/// Which residence permit an 18-character citizen-ID-form number is, if any.
pub(super) fn residence_permit(buf: &[u8]) -> Option<&'static str> {
    RESIDENCE_PERMITS
        .iter()
        .find(|(prefix, _)| buf.starts_with(&prefix[..]))
        .map(|(_, kind)| *kind)
}

/// Whether `len` characters can be a number of `doc`.
fn length_ok(doc: DocType, len: usize) -> bool {
    match doc {
        DocType::Passport => PASSPORT_LEN.contains(&len),
        // 18: a residence permit, which is a citizen ID number.
        DocType::HkMacaoTaiwanPermit => matches!(len, 8 | 9 | 11 | KEY_LEN),
        DocType::ForeignPermanentResidence => matches!(len, 15 | KEY_LEN),
        DocType::BusinessLicence => len == 15,
        DocType::CitizenId | DocType::UnifiedCreditCode => false,
    }
}

/// Checks a folded, upper-cased number of `doc` of `len` characters. With
/// `fill_check` the check character (where the type has one) is computed
/// into the last place instead of compared.
fn validate(doc: DocType, buf: &mut [u8; KEY_LEN], len: usize, horizon: Horizon, fill_check: bool) -> Result<(), KeyError> {
    if !length_ok(doc, len) {
        return Err(KeyError::Length);
    }
    let b = &buf[..len];
    let form = match doc {
        DocType::Passport => b.iter().all(u8::is_ascii_alphanumeric),
        DocType::HkMacaoTaiwanPermit => match len {
            8 => all_digits(b),
            9 | 11 => matches!(b[0], b'H' | b'M') && all_digits(&b[1..]),
            _ => false,
        },
        DocType::ForeignPermanentResidence if len == 15 => {
            b[..3].iter().all(u8::is_ascii_uppercase) && all_digits(&b[3..])
        }
        DocType::ForeignPermanentResidence => {
            if b[0] != b'9' {
                return Err(KeyError::Format);
            }
            return validate_person(buf, horizon, fill_check);
        }
        DocType::BusinessLicence => all_digits(&b[..14]) && (fill_check || b[14].is_ascii_digit()),
        DocType::CitizenId | DocType::UnifiedCreditCode => false,
    };
    if !form {
        return Err(KeyError::Format);
    }
    if doc == DocType::BusinessLicence {
        let check = mod11_10_check(&b[..14]);
        return settle_check(&mut buf[14], check, fill_check);
    }
    Ok(())
}

/// Normalizes and validates a number of `doc`, one of the types this
/// module keys.
pub(super) fn parse(doc: DocType, input: &str, horizon: Horizon) -> Result<Parsed, KeyError> {
    let Folded { mut buf, len, bad_char } = fold(input)?;
    if !length_ok(doc, len) {
        return Err(KeyError::Length);
    }
    if bad_char {
        return Err(KeyError::Format);
    }
    buf[..len].make_ascii_uppercase();
    if doc == DocType::HkMacaoTaiwanPermit && len == KEY_LEN {
        if residence_permit(&buf).is_none() {
            return Err(KeyError::Format);
        }
        validate_person(&mut buf, horizon, false)?;
        return PersonKey::from_normalized_bytes(&buf).map(Parsed::Citizen);
    }
    validate(doc, &mut buf, len, horizon, false)?;
    Ok(Parsed::Doc(DocKey { doc, len: len as u8, buf }))
}

impl DocKey {
    /// Builds a number of `doc` from all its characters but the check
    /// character, computing that (a business-licence number's 14 digits, a
    /// 2023 permanent residence card's 17). A type without a check
    /// character takes the whole number. Input is folded as in parsing;
    /// birth dates are checked against today (UTC).
    pub fn complete(doc: DocType, body: &str) -> Result<DocKey, KeyError> {
        let Folded { mut buf, len, bad_char } = fold(body)?;
        if bad_char {
            return Err(KeyError::Format);
        }
        buf[..len].make_ascii_uppercase();
        let has_check = matches!(
            (doc, len),
            (DocType::BusinessLicence, 14) | (DocType::ForeignPermanentResidence, 17)
        );
        let len = if has_check { len + 1 } else { len };
        if len > KEY_LEN {
            return Err(KeyError::Length);
        }
        validate(doc, &mut buf, len, Horizon::Clock, has_check)?;
        Ok(DocKey { doc, len: len as u8, buf })
    }

    /// Re-validates a number read back from storage: exactly the normalized
    /// bytes, nothing trimmed or folded, no birth date compared with today.
    pub fn from_normalized_bytes(doc: DocType, b: &[u8]) -> Result<DocKey, KeyError> {
        if b.len() > KEY_LEN {
            return Err(KeyError::Length);
        }
        if !b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
            return Err(KeyError::Format);
        }
        let mut buf = [0; KEY_LEN];
        buf[..b.len()].copy_from_slice(b);
        validate(doc, &mut buf, b.len(), Horizon::Unbounded, false)?;
        Ok(DocKey { doc, len: b.len() as u8, buf })
    }

    /// The type of the document.
    pub fn doc_type(&self) -> DocType {
        self.doc
    }

    /// The normalized number.
    pub fn as_str(&self) -> &str {
        ascii_str(self.as_bytes())
    }

    /// The normalized number as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// What kind of document of its type this is, for people reading the
    /// key: `cn_ordinary` or `other` (passport), `hong_kong`, `macao` or
    /// `taiwan` (permit), `card_2017` or `card_2023` (permanent residence
    /// card); `None` for a business licence.
    pub fn kind(&self) -> Option<&'static str> {
        let b = self.as_bytes();
        match self.doc {
            DocType::Passport => {
                let cn = b.len() == 9
                    && ((matches!(b[0], b'E' | b'G') && all_digits(&b[1..]))
                        || (b[0] == b'E' && b[1].is_ascii_uppercase() && all_digits(&b[2..])));
                Some(if cn { "cn_ordinary" } else { "other" })
            }
            DocType::HkMacaoTaiwanPermit => Some(match b[0] {
                b'H' => "hong_kong",
                b'M' => "macao",
                _ => "taiwan",
            }),
            DocType::ForeignPermanentResidence => {
                Some(if b.len() == KEY_LEN { "card_2023" } else { "card_2017" })
            }
            _ => None,
        }
    }

    /// Birth date and gender, where the number encodes them (the 2023
    /// permanent residence card).
    pub fn birth_and_gender(&self) -> Option<(Date, Gender)> {
        if self.doc != DocType::ForeignPermanentResidence || usize::from(self.len) != KEY_LEN {
            return None;
        }
        let birth = person_birth(&self.buf)?;
        let seq = super::decimal(&self.buf[14..17]);
        Some((birth, if seq % 2 == 1 { Gender::Male } else { Gender::Female }))
    }

    /// The 6-digit administrative area code of the registering office (a
    /// business-licence number); `None` for the other types.
    pub fn region(&self) -> Option<&str> {
        (self.doc == DocType::BusinessLicence).then(|| ascii_str(&self.buf[..6]))
    }

    /// The masked form, for display and logs.
    pub fn masked(&self) -> Masked<'_> {
        Masked(self.as_str())
    }
}

impl std::fmt::Display for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DocKey").field(&self.doc).field(&self.masked()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Subject, SubjectKey};
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 22);
    use super::super::tests::check_doc as check;

    use DocType::{BusinessLicence as BL, ForeignPermanentResidence as FPR, HkMacaoTaiwanPermit as HMT, Passport as PP};

    #[test]
    fn passport() {
        check(PP, "E12345678", "E12345678");
        check(PP, "g12345678", "G12345678");
        check(PP, " EA1234567\u{3000}", "EA1234567");
        check(PP, "Ｅ１２３４５６７８", "E12345678");
        check(PP, "X1234", "X1234");
        check(PP, "123456789012345", "123456789012345");
        check(PP, "1234", "!length");
        check(PP, "1234567890123456", "!length");
        check(PP, "", "!length");
        check(PP, "E1234-678", "!format");
        check(PP, "E1234 678", "!format");
        check(PP, "护照12345", "!format");
        let k = |s| match SubjectKey::parse_doc_at(PP, s, TODAY) {
            Ok(SubjectKey::Document(d)) => d.kind(),
            other => panic!("{other:?}"),
        };
        assert_eq!(k("E12345678"), Some("cn_ordinary"));
        assert_eq!(k("G12345678"), Some("cn_ordinary"));
        assert_eq!(k("EA1234567"), Some("cn_ordinary"));
        assert_eq!(k("C01X00T47"), Some("other"));
        assert_eq!(k("E1234567"), Some("other"));
    }

    #[test]
    fn permits() {
        check(HMT, "H12345678", "H12345678");
        check(HMT, "m1234567801", "M1234567801");
        check(HMT, "12345678", "12345678");
        check(HMT, "H1234567", "!format"); // 8 characters: a Taiwan permit, all digits
        check(HMT, "H123456789", "!length");
        check(HMT, "1234567", "!length");
        check(HMT, "C12345678", "!format"); // a mainland resident's permit to Hong Kong
        check(HMT, "H1234567A", "!format");
        check(HMT, "1234567A", "!format");
        check(HMT, "H12-45678", "!format");
        check(HMT, "110105194912310021", "!format"); // 18 digits, not a residence permit
        // The residence permits are citizen ID numbers, whichever way given.
        check(HMT, "810000199408230021", "810000199408230021");
        check(HMT, "830000199408230022", "!checksum");
        check(HMT, "820000199402300021", "!date");
        assert!(matches!(
            SubjectKey::parse_doc_at(HMT, "810000199408230021", TODAY),
            Ok(SubjectKey::Person(p)) if p.residence_permit() == Some("hong_kong_residence_permit")
        ));
        let macao = PersonKey::from_parts("820000", date!(1994 - 08 - 23), 2).unwrap();
        check(DocType::CitizenId, macao.as_str(), macao.as_str());
        check(HMT, macao.as_str(), macao.as_str());
        assert_eq!(macao.residence_permit(), Some("macao_residence_permit"));
        assert_eq!(PersonKey::from_parts("110105", date!(1994 - 08 - 23), 2).unwrap().residence_permit(), None);
    }

    #[test]
    fn permanent_residence() {
        check(FPR, "USA310085012340", "USA310085012340");
        check(FPR, "usa310085012340", "USA310085012340");
        check(FPR, "US1310085012340", "!format");
        check(FPR, "USA31008501234X", "!format");
        check(FPR, "USA31008501234", "!length");
        let card = DocKey::complete(FPR, "93184019850612034").unwrap();
        assert_eq!(card.as_str().len(), 18);
        check(FPR, card.as_str(), card.as_str());
        assert_eq!(card.birth_and_gender(), Some((date!(1985 - 06 - 12), Gender::Female)));
        assert_eq!(card.kind(), Some("card_2023"));
        let mut wrong = card.as_str().to_owned();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(17.., last);
        check(FPR, &wrong, "!checksum");
        check(FPR, "931840198513120341", "!date");
        check(FPR, "131840198506120341", "!format"); // a citizen ID's first digit
        check(FPR, "9318401985061203A1", "!format");
        check(FPR, "9318401985061203411", "!length");
    }

    #[test]
    fn business_licence() {
        // The example of ISO 7064 MOD 11,10: 79462 has check digit 3.
        assert_eq!(mod11_10_check(b"79462"), b'3');
        let k = DocKey::complete(BL, "44030010000123").unwrap();
        check(BL, k.as_str(), k.as_str());
        assert_eq!(k.region(), Some("440300"));
        assert_eq!(SubjectKey::parse_doc_at(BL, k.as_str(), TODAY).unwrap().subject(), Subject::Entity);
        let s = k.as_str();
        for d in b'0'..=b'9' {
            if d != s.as_bytes()[14] {
                let mut bad = s.as_bytes().to_vec();
                bad[14] = d;
                check(BL, std::str::from_utf8(&bad).unwrap(), "!checksum");
            }
        }
        check(BL, &format!(" {}\u{3000}", s), s);
        check(BL, &s[..14], "!length");
        check(BL, &format!("{s}0"), "!length");
        check(BL, &format!("A{}", &s[1..]), "!format");
        check(BL, "4403001000 0123", "!format");
        assert_eq!(DocKey::complete(BL, "4403001000012"), Err(KeyError::Length));
        assert_eq!(DocKey::complete(BL, "4403001000012A"), Err(KeyError::Format));
    }

    #[test]
    fn stored_bytes() {
        for (doc, s) in [(PP, "E12345678"), (HMT, "M1234567801"), (FPR, "USA310085012340")] {
            let k = DocKey::from_normalized_bytes(doc, s.as_bytes()).unwrap();
            assert_eq!((k.doc_type(), k.as_str()), (doc, s));
        }
        assert_eq!(DocKey::from_normalized_bytes(PP, b"e12345678"), Err(KeyError::Format));
        let licence = DocKey::complete(BL, "44030010000123").unwrap();
        let mut wrong = licence.as_bytes().to_vec();
        wrong[14] = if wrong[14] == b'0' { b'1' } else { b'0' };
        assert_eq!(DocKey::from_normalized_bytes(BL, &wrong), Err(KeyError::Checksum));
        assert_eq!(DocKey::from_normalized_bytes(BL, licence.as_bytes()), Ok(licence));
        assert!(DocKey::from_normalized_bytes(DocType::CitizenId, b"11010519491231002X").is_err());
        let card = DocKey::complete(FPR, "93184099991231034").unwrap_err();
        assert_eq!(card, KeyError::Date);
        // A stored card is not compared with today.
        let mut far = *b"93184099991231034_";
        far[17] = super::super::person_check(&far[..17]);
        assert!(DocKey::from_normalized_bytes(FPR, &far).is_ok());
    }

    #[test]
    fn debug_is_masked() {
        let k = DocKey::complete(BL, "44030010000123").unwrap();
        let debug = format!("{k:?}");
        assert!(!debug.contains(k.as_str()) && debug.contains("BusinessLicence"), "{debug}");
        let p = DocKey::complete(PP, "E12345678").unwrap();
        assert!(!format!("{p:?}").contains("12345678"));
    }

    fn doc_types() -> impl Strategy<Value = DocType> {
        prop::sample::select(vec![PP, HMT, FPR, BL])
    }

    proptest! {
        #[test]
        fn licence_single_substitution_rejected(body in "[0-9]{14}", pos in 0usize..15, d in 0u8..10) {
            let key = DocKey::complete(BL, &body).unwrap();
            let mut bytes = key.as_bytes().to_vec();
            prop_assume!(bytes[pos] != b'0' + d);
            bytes[pos] = b'0' + d;
            let got = SubjectKey::parse_doc_at(BL, std::str::from_utf8(&bytes).unwrap(), TODAY);
            prop_assert_eq!(got, Err(KeyError::Checksum));
        }

        #[test]
        fn accepted_is_a_fixed_point(doc in doc_types(), s in "[0-9A-Za-z]{0,19}|\\PC{0,20}") {
            if let Ok(key) = SubjectKey::parse_doc_at(doc, &s, TODAY) {
                prop_assert_eq!(SubjectKey::parse_doc_at(doc, key.as_str(), TODAY), Ok(key));
                if let SubjectKey::Document(d) = key {
                    prop_assert_eq!(DocKey::from_normalized_bytes(doc, d.as_bytes()), Ok(d));
                }
            }
        }
    }
}
