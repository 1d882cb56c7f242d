//! Verification (核验): per-field verdicts on claimed values, for any field
//! whatever its share class, without ever revealing a stored value. The
//! answer carries nothing beyond the verdicts asked for: not the record's
//! status, version or other fields.

use crate::compare::{canonical_claim_text, canonical_stored, json_text, same};
use basedata_store::catalog::{Dataset, Field};
use basedata_store::prints::{PrintView, Prints};
use basedata_store::store::Record;
use basedata_store::{Pid, Store, SubjectKey};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    /// The record has no value for the field.
    NoValue,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Mismatch => "mismatch",
            Verdict::NoValue => "no_value",
        }
    }
}

/// Overall result. Stable names: they appear in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Mismatch,
    NotFound,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::NotFound => "not_found",
        }
    }
}

/// A request's mistakes, found before any data is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// API code `unknown_field`.
    UnknownField(String),
    /// API code `invalid_value`.
    InvalidValue(String),
    /// API code `invalid_body`.
    Empty,
}

impl ClaimError {
    pub fn code(&self) -> &'static str {
        match self {
            ClaimError::UnknownField(_) => "unknown_field",
            ClaimError::InvalidValue(_) => "invalid_value",
            ClaimError::Empty => "invalid_body",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ClaimError::UnknownField(m) | ClaimError::InvalidValue(m) => m.clone(),
            ClaimError::Empty => "\"fields\" must name at least one field to verify".into(),
        }
    }
}

/// Claims checked against the dataset and reduced to canonical forms.
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    /// Field, its position in the dataset, claimed value in canonical form.
    items: Vec<(&'a Field, usize, Vec<u8>)>,
}

impl<'a> Claims<'a> {
    pub fn parse(dataset: &'a Dataset, fields: &Map<String, Json>) -> Result<Claims<'a>, ClaimError> {
        Claims::parse_texts(dataset, fields.iter().map(|(name, claim)| (name.as_str(), json_text(claim))))
    }

    /// [`Claims::parse`] of claims given as field names and the
    /// [`json_text`] of their values, in name order without repeats (the
    /// order and uniqueness of a parsed JSON object's members).
    pub fn parse_texts<'t>(
        dataset: &'a Dataset,
        fields: impl ExactSizeIterator<Item = (&'t str, Option<Cow<'t, str>>)>,
    ) -> Result<Claims<'a>, ClaimError> {
        if fields.len() == 0 {
            return Err(ClaimError::Empty);
        }
        let mut items: Vec<(&Field, usize, Vec<u8>)> = Vec::with_capacity(fields.len());
        for (name, claim) in fields {
            debug_assert!(items.last().is_none_or(|(f, _, _)| f.name.as_str() < name), "claims out of name order or repeated");
            let i = dataset
                .field_index(name)
                .ok_or_else(|| ClaimError::UnknownField(format!("dataset {} has no field {name}", dataset.id)))?;
            let f = &dataset.fields[i];
            items.push((f, i, canonical_claim_text(f, claim.as_deref()).map_err(ClaimError::InvalidValue)?));
        }
        Ok(Claims { items })
    }

    /// Whether a claim is made about field `name`.
    pub fn asks(&self, name: &str) -> bool {
        self.items.iter().any(|(f, _, _)| f.name == name)
    }

    /// The fields claimed, in claim order.
    pub fn fields(&self) -> impl Iterator<Item = &'a Field> + '_ {
        self.items.iter().map(|(f, _, _)| *f)
    }

    /// The claims: each field with its claimed value in canonical form.
    pub fn claimed(&self) -> impl Iterator<Item = (&'a Field, &[u8])> + '_ {
        self.items.iter().map(|(f, _, c)| (*f, c.as_slice()))
    }

    pub fn field_names(&self) -> Vec<String> {
        self.items.iter().map(|(f, _, _)| f.name.clone()).collect()
    }

    /// Verdicts against `record` (`None`: no record for the key).
    pub fn verify(&self, record: Option<&Record>) -> (Outcome, Vec<(&'a str, Verdict)>) {
        let Some(rec) = record else { return (Outcome::NotFound, Vec::new()) };
        let verdicts: Vec<(&str, Verdict)> = self
            .items
            .iter()
            .map(|(f, _, claim)| {
                let v = match rec.field(&f.name) {
                    None => Verdict::NoValue,
                    Some(stored) if same(claim, &canonical_stored(stored)) => Verdict::Match,
                    Some(_) => Verdict::Mismatch,
                };
                (f.name.as_str(), v)
            })
            .collect();
        overall(verdicts)
    }

    /// The verdicts [`Claims::verify`] gives, from the record's claim
    /// fingerprints instead of the record (`None`: no live record).
    pub fn verify_printed(&self, store: &Store, prints: &Prints, view: Option<PrintView<'_>>) -> (Outcome, Vec<(&'a str, Verdict)>) {
        let Some(view) = view else { return (Outcome::NotFound, Vec::new()) };
        let verdicts: Vec<(&str, Verdict)> = self
            .items
            .iter()
            .map(|(f, i, claim)| {
                let v = match view.field(*i) {
                    None => Verdict::NoValue,
                    Some(stored) if store.claim_print(prints, f, claim) == Some(stored) => Verdict::Match,
                    Some(_) => Verdict::Mismatch,
                };
                (f.name.as_str(), v)
            })
            .collect();
        overall(verdicts)
    }
}

fn overall(verdicts: Vec<(&str, Verdict)>) -> (Outcome, Vec<(&str, Verdict)>) {
    let all = verdicts.iter().all(|(_, v)| *v == Verdict::Match);
    (if all { Outcome::Match } else { Outcome::Mismatch }, verdicts)
}

/// A verification's result.
#[derive(Clone, Debug)]
pub struct Checked<'a> {
    pub outcome: Outcome,
    /// The verdict of each claimed field, in claim order.
    pub verdicts: Vec<(&'a str, Verdict)>,
    /// Whether a live record was found (for the audit entry).
    pub found: bool,
    /// The key's pseudonym (for the audit entry), where the lookup had
    /// it at hand (from the claim fingerprints).
    pub pid: Option<Pid>,
}

/// Verifies `claims[i]` against the current record of `items[i]`, for
/// every `i`: from the claim fingerprints when the store keeps them (no
/// record read), otherwise from the records, read with one sorted
/// multi-get keeping only the claimed fields.
pub fn verify_many<'a>(store: &Store, items: &[(SubjectKey, &str)], claims: &[&Claims<'a>]) -> basedata_store::Result<Vec<Checked<'a>>> {
    let mut out = Vec::with_capacity(items.len());
    if let Some(prints) = store.prints() {
        store.printed_many(&prints, items, |i, pid, view| {
            let found = view.is_some();
            let (outcome, verdicts) = claims[i].verify_printed(store, &prints, view);
            out.push(Checked { outcome, verdicts, found, pid: Some(pid) });
        })?;
        return Ok(out);
    }
    let records = store.get_many_fields(items, &|i, name| claims[i].asks(name))?;
    for (c, r) in claims.iter().zip(&records) {
        let (outcome, verdicts) = c.verify(r.as_ref());
        out.push(Checked { outcome, verdicts, found: r.is_some(), pid: None });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::{Catalog, Value};
    use serde_json::json;

    fn record(fields: Vec<(&str, Value)>) -> Record {
        Record {
            dataset: "hukou".into(),
            version: 1,
            committed_at: 0,
            seq: 1,
            fields: fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }

    #[test]
    fn verdicts() {
        let cat = Catalog::builtin();
        let ds = cat.dataset("hukou").unwrap();
        let claims = json!({"name": "张三", "birth_date": "1949-12-31", "cancel_date": "2020-01-01"});
        let c = Claims::parse(ds, claims.as_object().unwrap()).unwrap();
        let rec = record(vec![
            ("name", Value::Str("张三".into())),
            ("birth_date", Value::Date(time::macros::date!(1949 - 12 - 30))),
        ]);
        let (o, v) = c.verify(Some(&rec));
        assert_eq!(o, Outcome::Mismatch);
        assert!(v.contains(&("name", Verdict::Match)));
        assert!(v.contains(&("birth_date", Verdict::Mismatch)));
        assert!(v.contains(&("cancel_date", Verdict::NoValue)));
        assert_eq!(c.verify(None), (Outcome::NotFound, vec![]));
        let c = Claims::parse(ds, json!({"name": "张三"}).as_object().unwrap()).unwrap();
        assert_eq!(c.verify(Some(&rec)).0, Outcome::Match);
    }

    #[test]
    fn claim_errors() {
        let cat = Catalog::builtin();
        let ds = cat.dataset("hukou").unwrap();
        let e = |j: Json| Claims::parse(ds, j.as_object().unwrap()).unwrap_err().code();
        assert_eq!(e(json!({})), "invalid_body");
        assert_eq!(e(json!({"nickname": "x"})), "unknown_field");
        assert_eq!(e(json!({"birth_date": "someday"})), "invalid_value");
        // Fields outside the share classes that lookups allow still verify.
        let death = cat.dataset("death").unwrap();
        assert!(Claims::parse(death, json!({"cause_of_death": "x"}).as_object().unwrap()).is_ok());
    }
}
