//! The comparison rules of verification, as one normalization function:
//! a consumer's claimed value and a stored value match when their
//! canonical forms are equal. Text ignores surrounding white space and
//! full-width/half-width differences; dates, times, numbers, codes and keys
//! compare by value, whatever notation the claim used.

use base64::Engine as _;
use basedata_store::catalog::{Field, FieldType};
use basedata_store::keys::{EntityKey, PersonKey};
use basedata_store::value::{canonical_decimal, format_date, parse_date, parse_datetime};
use serde_json::Value as Json;
use std::borrow::Cow;

pub use basedata_store::value::{canonical_stored, fold_text_cow};

/// Dates in the notations people type: 1949-12-31, 19491231, 1949/12/31,
/// 1949.12.31, 1949年12月31日 (single-digit months and days allowed).
fn parse_loose_date(s: &str) -> Option<time::Date> {
    if let Some(d) = parse_date(s) {
        return Some(d);
    }
    let b = s.as_bytes();
    if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        return parse_date(&format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8]));
    }
    let parts: Vec<&str> = s
        .split(|c| matches!(c, '-' | '/' | '.' | '年' | '月' | '日'))
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts.iter().any(|p| p.len() > 4 || !p.bytes().all(|c| c.is_ascii_digit())) {
        return None;
    }
    let (y, m, d): (i32, u8, u8) = (parts[0].parse().ok()?, parts[1].parse().ok()?, parts[2].parse().ok()?);
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
}

/// The text of a claimed JSON value, unfolded: a string as given, a number
/// or boolean as serde_json prints it; `None` for anything else.
pub fn json_text(j: &Json) -> Option<Cow<'_, str>> {
    match j {
        Json::String(s) => Some(Cow::Borrowed(s)),
        Json::Number(n) => Some(Cow::Owned(n.to_string())),
        Json::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Canonical form of a claimed value. `Err` (with a message that does not
/// quote the value) when the claim cannot be a value of the field's type.
pub fn canonical_claim(field: &Field, claim: &Json) -> Result<Vec<u8>, String> {
    canonical_claim_text(field, json_text(claim).as_deref())
}

/// [`canonical_claim`] of a value given as its [`json_text`], which a
/// batch line's parser takes straight from the line without building a
/// JSON value.
pub fn canonical_claim_text(field: &Field, claim: Option<&str>) -> Result<Vec<u8>, String> {
    let bad = |what: &str| format!("field {}: {what}", field.name);
    // Numbers and booleans print without anything to fold or trim.
    let text = fold_text_cow(claim.ok_or_else(|| bad("expected a string, number or boolean"))?);
    Ok(match field.ty {
        FieldType::String | FieldType::Code => text.into_owned().into_bytes(),
        FieldType::Date => format_date(parse_loose_date(&text).ok_or_else(|| bad("not a date"))?).into_bytes(),
        FieldType::Datetime => parse_datetime(&text).ok_or_else(|| bad("not an RFC 3339 time"))?.to_be_bytes().to_vec(),
        FieldType::Integer => text.parse::<i64>().map_err(|_| bad("not an integer"))?.to_be_bytes().to_vec(),
        FieldType::Decimal => canonical_decimal(&text).ok_or_else(|| bad("not a decimal number"))?.into_bytes(),
        FieldType::Bool => match &*text {
            "true" | "1" => b"true".to_vec(),
            "false" | "0" => b"false".to_vec(),
            _ => return Err(bad("not a boolean")),
        },
        FieldType::PersonKey => PersonKey::parse(&text).map_err(|e| bad(&format!("not a citizen ID number ({})", e.reason())))?.as_str().as_bytes().to_vec(),
        FieldType::EntityKey => EntityKey::parse(&text).map_err(|e| bad(&format!("not a credit code ({})", e.reason())))?.as_str().as_bytes().to_vec(),
        FieldType::Bytes => base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(|_| bad("not base64"))?,
    })
}

/// Canonical forms up to this long (names, dates, codes, numbers, keys:
/// nearly every claim) are compared directly.
const SHORT: usize = 64;

/// Equality of canonical forms in constant time, so that the time taken
/// does not track how much of a stored value a guess got right: short
/// forms as fixed-size, length-prefixed, zero-padded buffers (a quarter of
/// the cost of digests); longer ones through fixed-size digests (BLAKE3's
/// equality is constant-time). Which of the two ran tells only whether a
/// value is longer than `SHORT` bytes.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() <= SHORT && b.len() <= SHORT {
        // Length byte, value, zeros, to a whole number of words, compared
        // as words whose differences are OR-ed together (no early exit),
        // then tested once.
        const PADDED: usize = (SHORT + 1).div_ceil(8) * 8;
        let pad = |v: &[u8]| {
            let mut out = [0u8; PADDED];
            out[0] = v.len() as u8;
            out[1..=v.len()].copy_from_slice(v);
            out
        };
        let (pa, pb) = (pad(a), pad(b));
        let mut diff = 0u64;
        for (x, y) in pa.chunks_exact(8).zip(pb.chunks_exact(8)) {
            let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            diff |= word(x) ^ word(y);
        }
        return diff.ct_eq(&0).into();
    }
    blake3::hash(a) == blake3::hash(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::{Catalog, Value};
    use serde_json::json;

    /// One case: the field, the stored value (as an update would give it),
    /// the claim, and whether they match (`None`: the claim is invalid).
    fn check(ds: &str, field: &str, stored: Json, claim: Json, expected: Option<bool>) {
        let cat = Catalog::builtin();
        let f = cat.dataset(ds).unwrap().field(field).unwrap();
        let stored = Value::from_json(f, &stored).unwrap().unwrap();
        let got = canonical_claim(f, &claim).ok().map(|c| same(&c, &canonical_stored(&stored)));
        assert_eq!(got, expected, "{ds}.{field}: {claim}");
    }

    /// Equal and unequal forms on both sides of the short-form limit,
    /// including a prefix and zero bytes (which the padding must not hide).
    #[test]
    fn same_is_equality_at_every_length() {
        for n in [0usize, 1, 7, 63, 64, 65, 200] {
            let a: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8 + 1).collect();
            assert!(same(&a, &a.clone()), "{n}");
            let mut b = a.clone();
            if let Some(last) = b.last_mut() {
                *last ^= 1;
                assert!(!same(&a, &b), "{n}: last byte differs");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same(&a, &longer), "{n}: trailing zero byte");
            if n > 0 {
                assert!(!same(&a, &a[..n - 1]), "{n}: prefix");
            }
        }
    }

    #[test]
    fn comparison_table() {
        check("hukou", "name", json!("张三"), json!("张三"), Some(true));
        check("hukou", "name", json!("张三"), json!("  张三 "), Some(true));
        check("hukou", "name", json!("张三"), json!("\u{3000}张三\u{3000}"), Some(true));
        check("hukou", "name", json!("张三"), json!("张四"), Some(false));
        check("hukou", "name", json!("张三"), json!("张"), Some(false));
        check("hukou", "name", json!("ABC 公司"), json!("ＡＢＣ　公司"), Some(true));
        check("hukou", "name", json!("abc"), json!("ABC"), Some(false));
        check("hukou", "birth_date", json!("1949-12-31"), json!("1949-12-31"), Some(true));
        check("hukou", "birth_date", json!("1949-12-31"), json!("19491231"), Some(true));
        check("hukou", "birth_date", json!("1949-01-05"), json!("1949/1/5"), Some(true));
        check("hukou", "birth_date", json!("1949-01-05"), json!("1949年1月5日"), Some(true));
        check("hukou", "birth_date", json!("1949-01-05"), json!("１９４９－０１－０５"), Some(true));
        check("hukou", "birth_date", json!("1949-01-05"), json!("1949-01-06"), Some(false));
        check("hukou", "birth_date", json!("1949-01-05"), json!("yesterday"), None);
        check("hukou", "birth_date", json!("1949-01-05"), json!("1949-02-30"), None);
        check("hukou", "gender", json!("2"), json!("2"), Some(true));
        check("hukou", "gender", json!("2"), json!(2), Some(true));
        check("hukou", "gender", json!("2"), json!("２"), Some(true));
        check("hukou", "gender", json!("2"), json!("1"), Some(false));
        check("hukou", "status", json!("cancelled"), json!(" cancelled "), Some(true));
        check("market_registration", "registered_capital", json!("1000.50"), json!("1000.5"), Some(true));
        check("market_registration", "registered_capital", json!("1000.50"), json!(1000.5), Some(true));
        check("market_registration", "registered_capital", json!("1000"), json!("01000.000"), Some(true));
        check("market_registration", "registered_capital", json!("1000"), json!("1000.01"), Some(false));
        check("market_registration", "legal_representative_id", json!("11010519491231002X"), json!("11010519491231002x"), Some(true));
        check("market_registration", "legal_representative_id", json!("11010519491231002X"), json!("110105491231002"), Some(true));
        check("market_registration", "legal_representative_id", json!("11010519491231002X"), json!("110105194912310021"), None);
        check("hukou", "photo", json!("aGVsbG8="), json!("aGVsbG8="), Some(true));
        check("hukou", "photo", json!("aGVsbG8="), json!("aGVsbG8h"), Some(false));
        check("hukou", "name", json!("张三"), json!(null), None);
        check("hukou", "name", json!("张三"), json!(["张三"]), None);
    }

    #[test]
    fn fold_text_cases() {
        assert_eq!(fold_text_cow("\u{FEFF} Ａｂ１ \n"), "Ab1");
        assert_eq!(fold_text_cow("张\u{3000}三"), "张 三");
        assert_eq!(fold_text_cow("\u{3000}\u{3000}Ａ\u{200B}"), "A");
        assert!(matches!(fold_text_cow("  张三 "), std::borrow::Cow::Borrowed("张三")));
        assert!(matches!(fold_text_cow("Ａ"), std::borrow::Cow::Owned(_)));
    }

    /// The folding as first written (fold every character, then trim),
    /// against which the borrowing fast path is checked.
    fn fold_then_trim(s: &str) -> String {
        let folded: String = s
            .chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            })
            .collect();
        folded.trim_matches(|c: char| c.is_whitespace() || c == '\u{200B}' || c == '\u{FEFF}').to_owned()
    }

    /// Every string of up to four characters from an alphabet of the
    /// characters that matter (white space of both widths, zero-width
    /// marks, full-width letters and their neighbours, CJK, ASCII).
    #[test]
    fn trimming_first_folds_like_folding_first() {
        let alphabet = [' ', '\u{3000}', '\u{200B}', '\u{FEFF}', '\u{FF01}', '\u{FF21}', '\u{FF5E}', '\u{FF5F}', '\u{FF00}', '张', 'a', '\n', '\u{3001}'];
        let mut stack = vec![String::new()];
        while let Some(s) = stack.pop() {
            assert_eq!(fold_text_cow(&s), fold_then_trim(&s), "{s:?}");
            if s.chars().count() < 4 {
                for c in alphabet {
                    let mut t = s.clone();
                    t.push(c);
                    stack.push(t);
                }
            }
        }
    }
}
