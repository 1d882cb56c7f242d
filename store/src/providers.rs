//! Several providers of one dataset (一数一源 per area or per part): which
//! provider may write which record or which fields, and how the writer
//! combines a part's update with the record it finds. The catalog declares
//! the parts ([`Provider`], [`Division`]) of a dataset that names several
//! providers; this module judges updates against them, and the group
//! writer applies [`Division::settle`] to every update that carries its
//! provider, against the current record under the writer lock, so that the
//! check and the write cannot be separated by another provider's update.
//!
//! - **By area**: each provider holds a set of administrative division
//!   codes (2, 4, 6, 9 or 12 digits: province, city, county/district,
//!   town/street, community). A record is in an area when its area value —
//!   a field of the record named by the catalog, or the region of its key —
//!   equals the code or begins with it. Only the provider of the record's
//!   current area may change or delete it; it may move the record into
//!   another provider's area by changing the area field, and from then on
//!   that provider owns it. A new record must be in its writer's area. A
//!   delete of a key with no live record is refused: it has no area to
//!   tell whose it is, and the version it would leave behind would hold
//!   back every provider's later records of the key.
//! - **By fields**: each provider holds some of the dataset's fields. Its
//!   upsert sets exactly its own fields and keeps everyone else's; its
//!   delete removes its own fields (the record goes when none are left).
//!   The record has one version: an update must be newer than the stored
//!   version whoever wrote it.

use crate::catalog::{AreaOf, Division, Provider};
use crate::keys::SubjectKey;
use crate::record::StoredValue;
use crate::value::Value;

/// What an update does, as a division judges it: the store's `UpdateOp`
/// borrowed (this module sits below the store).
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// The sender's fields as sent.
    Upsert(&'a [(String, Value)]),
    Delete,
}

/// Why a provider may not make an update; its line is refused as
/// `forbidden`. The message names fields, departments and the areas the
/// sender gave, never a stored value (not even the stored area).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Code of the line-level refusal (the API's `forbidden`).
pub const REFUSED: &str = "forbidden";

/// The record a part's update meets, as the writer holds it.
pub enum Current<'a> {
    /// No live record (none yet, or deleted).
    Absent,
    Live(&'a [(String, StoredValue)]),
}

/// What the writer stores for a part's update.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// The update as sent.
    AsSent,
    /// The record becomes these stored fields (another part's kept).
    Fields(Vec<(String, StoredValue)>),
    /// Nothing of the record is left: it is deleted.
    Delete,
}

impl Division {
    /// Refusals that need no stored record: a field outside the provider's
    /// part, or a new area outside every provider's. The ingest side runs
    /// this on each line, so most refusals carry their line number; the
    /// writer runs [`Division::settle`] for the rest.
    pub fn precheck(&self, providers: &[Provider], by: &Provider, key: &SubjectKey, op: Change<'_>) -> Result<(), Refusal> {
        match (self, op) {
            (Division::Fields, Change::Upsert(fields)) => {
                for (name, _) in fields {
                    if !by.fields.iter().any(|f| f == name) {
                        return Err(not_its_field(providers, by, name));
                    }
                }
                Ok(())
            }
            (Division::Fields, Change::Delete) => Ok(()),
            (Division::Area(AreaOf::KeyRegion), _) => own_area(by, key.region(), "the key's region"),
            (Division::Area(AreaOf::Field(f)), Change::Upsert(fields)) => {
                let area = fields.iter().find(|(n, _)| n == f).and_then(|(_, v)| area_value(v));
                match area {
                    None => Err(Refusal(format!("field {f} (the record's area) is missing"))),
                    Some(a) if !providers.iter().any(|p| p.holds_area(a)) => {
                        Err(Refusal(format!("area {a} is not any provider's area of this dataset")))
                    }
                    Some(_) => Ok(()),
                }
            }
            (Division::Area(AreaOf::Field(_)), Change::Delete) => Ok(()),
        }
    }

    /// Decides, under the writer lock, whether `by` may make `op` on the
    /// record as it stands, and what to store: [`Division::precheck`], then
    /// the owner of the current area (or, for a new record, the new one),
    /// then the merge of a field part into the others'. `stored` converts
    /// an upsert's values to their stored form.
    pub fn settle(
        &self,
        providers: &[Provider],
        by: &Provider,
        key: &SubjectKey,
        op: Change<'_>,
        current: Current<'_>,
        stored: &mut dyn FnMut(&Value) -> StoredValue,
    ) -> Result<Settled, Refusal> {
        self.precheck(providers, by, key, op)?;
        match self {
            Division::Area(AreaOf::KeyRegion) => Ok(Settled::AsSent),
            Division::Area(AreaOf::Field(f)) => {
                match (&current, op) {
                    (Current::Live(fields), _) => {
                        let area = fields.iter().find(|(n, _)| n == f).and_then(|(_, v)| stored_area(v));
                        if area.is_some_and(|a| by.holds_area(a)) {
                            return Ok(Settled::AsSent);
                        }
                        // The stored area is not the sender's to read: the
                        // refusal names the owner, never the area itself.
                        Err(match owner_of(providers, area) {
                            Some(owner) => Refusal(format!(
                                "the record is in the area of {}, not of {}: only {} may change or move it",
                                owner.id, by.id, owner.id
                            )),
                            None => Refusal(format!("the record is in no provider's area, so not in that of {}", by.id)),
                        })
                    }
                    (Current::Absent, Change::Upsert(fields)) => {
                        let area = fields.iter().find(|(n, _)| n == f).and_then(|(_, v)| area_value(v));
                        own_area(by, area, "the new record's area").map_err(|e| match owner_of(providers, area) {
                            Some(owner) => Refusal(format!("{}; only {} may create it", e.0, owner.id)),
                            None => e,
                        })?;
                        Ok(Settled::AsSent)
                    }
                    // No live record, so no area to tell whose it is. A
                    // delete stored now would keep the sender's version
                    // (a tombstone), and every later record of the key,
                    // in whichever provider's area, would have to outrun
                    // it: one provider could block another's records.
                    (Current::Absent, Change::Delete) => Err(Refusal(format!(
                        "no record of this key is held in this dataset: a delete is taken only from the provider of a held record's area, and {} is not that",
                        by.id
                    ))),
                }
            }
            Division::Fields => {
                let mine = |name: &str| by.fields.iter().any(|f| f == name);
                let others: Vec<(String, StoredValue)> = match current {
                    Current::Live(fields) => fields.iter().filter(|(n, _)| !mine(n)).cloned().collect(),
                    Current::Absent => Vec::new(),
                };
                match op {
                    Change::Delete if others.is_empty() => Ok(Settled::Delete),
                    Change::Delete => Ok(Settled::Fields(others)),
                    Change::Upsert(_) if others.is_empty() => Ok(Settled::AsSent),
                    Change::Upsert(fields) => {
                        let mut all = others;
                        all.extend(fields.iter().map(|(n, v)| (n.clone(), stored(v))));
                        Ok(Settled::Fields(all))
                    }
                }
            }
        }
    }
}

impl Division {
    /// Whether `by` may write `op` where no record is held: every line of
    /// a bulk load, which fills an empty dataset. Nothing is merged into
    /// an absent record, so no value needs its stored form.
    pub fn admits_new(&self, providers: &[Provider], by: &Provider, key: &SubjectKey, op: Change<'_>) -> Result<(), Refusal> {
        self.settle(providers, by, key, op, Current::Absent, &mut |_| StoredValue::Bool(false)).map(|_| ())
    }
}

fn not_its_field(providers: &[Provider], by: &Provider, name: &str) -> Refusal {
    match providers.iter().find(|p| p.fields.iter().any(|f| f == name)) {
        Some(owner) => Refusal(format!("field {name} is provided by {}, not {}", owner.id, by.id)),
        None => Refusal(format!("field {name} is not provided by {}", by.id)),
    }
}

/// The provider whose area holds `area`, if any.
fn owner_of<'p>(providers: &'p [Provider], area: Option<&str>) -> Option<&'p Provider> {
    area.and_then(|a| providers.iter().find(|p| p.holds_area(a)))
}

fn own_area(by: &Provider, area: Option<&str>, whose: &str) -> Result<(), Refusal> {
    match area {
        Some(a) if by.holds_area(a) => Ok(()),
        Some(a) => Err(Refusal(format!("{whose} {a} is not in the area of {}", by.id))),
        None => Err(Refusal(format!("{whose} is not given, so it is in no provider's area"))),
    }
}

fn area_value(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) | Value::Code(s) => Some(s.trim()),
        _ => None,
    }
}

fn stored_area(v: &StoredValue) -> Option<&str> {
    match v {
        StoredValue::Str(s) | StoredValue::Code(s) => Some(s.trim()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn town(id: &str, areas: &[&str]) -> Provider {
        Provider { id: id.into(), name: id.into(), areas: areas.iter().map(|s| s.to_string()).collect(), fields: vec![] }
    }

    fn part(id: &str, fields: &[&str]) -> Provider {
        Provider { id: id.into(), name: id.into(), areas: vec![], fields: fields.iter().map(|s| s.to_string()).collect() }
    }

    fn key() -> SubjectKey {
        SubjectKey::parse(crate::keys::Subject::Person, "11010519491231002X").unwrap()
    }

    fn upsert(fields: &[(&str, &str)]) -> Change<'static> {
        // Leaked: a few tiny vectors per test run.
        let v: Vec<(String, Value)> = fields.iter().map(|(n, v)| (n.to_string(), Value::Str(v.to_string()))).collect();
        Change::Upsert(Vec::leak(v))
    }

    fn to_stored(v: &Value) -> StoredValue {
        match v {
            Value::Str(s) => StoredValue::Str(s.clone()),
            _ => unreachable!("the tests store strings only"),
        }
    }

    fn live(fields: &[(&str, &str)]) -> Vec<(String, StoredValue)> {
        fields.iter().map(|(n, v)| (n.to_string(), StoredValue::Str(v.to_string()))).collect()
    }

    #[test]
    fn an_area_is_a_code_and_every_code_below_it() {
        let a = town("a", &["441302"]);
        assert!(a.holds_area("441302"));
        assert!(a.holds_area("441302001"));
        assert!(!a.holds_area("441303"));
        assert!(!a.holds_area("4413"));
    }

    #[test]
    fn only_the_current_areas_provider_writes_and_moves_a_record() {
        let ps = [town("a", &["441302"]), town("b", &["441303"])];
        let d = Division::Area(AreaOf::Field("county".into()));
        let mut st = to_stored;
        let settle = |by: &Provider, op: Change<'_>, cur: Current<'_>, st: &mut dyn FnMut(&Value) -> StoredValue| {
            d.settle(&ps, by, &key(), op, cur, st)
        };
        // New records: in the writer's own area only.
        assert_eq!(settle(&ps[0], upsert(&[("county", "441302")]), Current::Absent, &mut st), Ok(Settled::AsSent));
        let e = settle(&ps[1], upsert(&[("county", "441302")]), Current::Absent, &mut st).unwrap_err();
        assert!(e.0.contains("not in the area of b") && e.0.contains("only a may"), "{}", e.0);
        // Moving out: the current owner may, the new area's provider may not yet.
        let in_a = live(&[("county", "441302")]);
        assert_eq!(settle(&ps[0], upsert(&[("county", "441303")]), Current::Live(&in_a), &mut st), Ok(Settled::AsSent));
        assert!(settle(&ps[1], upsert(&[("county", "441303")]), Current::Live(&in_a), &mut st).is_err());
        // Once moved, the new area's provider owns it and the old one no longer does.
        let in_b = live(&[("county", "441303")]);
        assert_eq!(settle(&ps[1], Change::Delete, Current::Live(&in_b), &mut st), Ok(Settled::AsSent));
        assert!(settle(&ps[0], Change::Delete, Current::Live(&in_b), &mut st).is_err());
        // The stored area is never quoted to a provider it is not theirs.
        let fine = live(&[("county", "441302001002")]);
        let e = settle(&ps[1], upsert(&[("county", "441303")]), Current::Live(&fine), &mut st).unwrap_err();
        assert!(!e.0.contains("4413") && e.0.contains("only a may change or move it"), "{}", e.0);
        // A key with no live record has no area: a delete of it is nobody's
        // to make, and would leave a version every later record must outrun.
        for by in &ps {
            let e = settle(by, Change::Delete, Current::Absent, &mut st).unwrap_err();
            assert!(e.0.contains("no record of this key is held"), "{}", e.0);
        }
        // Nobody's area, or none given.
        assert!(settle(&ps[0], upsert(&[("county", "441399")]), Current::Live(&in_a), &mut st).unwrap_err().0.contains("not any provider's"));
        assert!(settle(&ps[0], upsert(&[("name", "x")]), Current::Absent, &mut st).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn the_key_region_decides_when_the_catalog_says_so() {
        let ps = [town("beijing", &["11"]), town("huizhou", &["4413"])];
        let d = Division::Area(AreaOf::KeyRegion);
        assert!(d.precheck(&ps, &ps[0], &key(), Change::Delete).is_ok());
        assert!(d.precheck(&ps, &ps[1], &key(), upsert(&[])).is_err());
    }

    #[test]
    fn a_field_part_writes_its_fields_and_keeps_the_others() {
        let ps = [part("weijian", &["cause", "date"]), part("gongan", &["station"])];
        let d = Division::Fields;
        let mut st = to_stored;
        let cur = live(&[("date", "d1"), ("station", "s1"), ("cause", "c1")]);
        let out = d.settle(&ps, &ps[0], &key(), upsert(&[("date", "d2")]), Current::Live(&cur), &mut st).unwrap();
        assert_eq!(out, Settled::Fields(live(&[("station", "s1"), ("date", "d2")])));
        let e = d.settle(&ps, &ps[1], &key(), upsert(&[("station", "s2"), ("cause", "x")]), Current::Live(&cur), &mut st).unwrap_err();
        assert_eq!(e.0, "field cause is provided by weijian, not gongan");
        assert_eq!(d.settle(&ps, &ps[1], &key(), Change::Delete, Current::Live(&cur), &mut st), Ok(Settled::Fields(live(&[("date", "d1"), ("cause", "c1")]))));
        assert_eq!(d.settle(&ps, &ps[1], &key(), Change::Delete, Current::Live(&live(&[("station", "s1")])), &mut st), Ok(Settled::Delete));
        assert_eq!(d.settle(&ps, &ps[1], &key(), upsert(&[("station", "s2")]), Current::Absent, &mut st), Ok(Settled::AsSent));
    }
}
