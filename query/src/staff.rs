//! Staff accounts of the console held in the store (beside those of the
//! configuration): the stored record, its versioned encoding and where it
//! lives. Only an argon2id hash of the password is ever stored.
//!
//! Like the governance records of [`crate::gov`], this module prepares
//! writes and leaves committing them — together with their audit entry —
//! to the caller, so a change to an account is durable exactly when its
//! audit entry is. Checking a record against the configuration
//! (departments, roles) is the server's, which knows both.
//!
//! Layout (`gov` family): `a/<id>` -> [`StaffRecord`] behind the store's
//! format marker.

use basedata_store::codec::{decode, decode_all, encode};
use basedata_store::engine::{Cf, Engine, WriteBatch};
use basedata_store::Result;

/// One stored account.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StaffRecord {
    /// Sign-in name and audit operator.
    pub id: String,
    pub name: String,
    /// The configured department the person works for.
    pub department: String,
    /// Staff roles by their configuration names (`clerk`, `steward`,
    /// `auditor`, `admin`), so that the stored form does not depend on
    /// the server's types.
    pub roles: Vec<String>,
    /// PHC string of an argon2id hash.
    pub password_argon2: String,
    pub disabled: bool,
    /// Unix microseconds.
    pub created_at: i64,
    pub created_by: String,
    pub changed_at: i64,
    pub changed_by: String,
}

pub(crate) fn key(id: &str) -> Vec<u8> {
    let mut k = b"a/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

impl StaffRecord {
    /// The write that stores this record.
    pub fn write(&self) -> WriteBatch {
        let mut b = WriteBatch::new();
        self.write_into(&mut b);
        b
    }

    /// Puts the write that stores this record into `b`.
    pub fn write_into(&self, b: &mut WriteBatch) {
        b.put(Cf::Gov, key(&self.id), encode(self));
    }
}

/// Every stored account, ordered by id.
pub fn all(engine: &dyn Engine) -> Result<Vec<StaffRecord>> {
    decode_all(engine, Cf::Gov, b"a/", "staff account")
}

pub fn load(engine: &dyn Engine, id: &str) -> Result<Option<StaffRecord>> {
    engine.get(Cf::Gov, &key(id))?.map(|v| decode("staff account", &v)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::codec::FORMAT_V1;
    use basedata_store::engine::mem::MemEngine;

    fn record(id: &str) -> StaffRecord {
        StaffRecord {
            id: id.into(),
            name: "王五".into(),
            department: "counter".into(),
            roles: vec!["clerk".into(), "auditor".into()],
            password_argon2: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            disabled: false,
            created_at: 1,
            created_by: "admin1".into(),
            changed_at: 2,
            changed_by: "admin1".into(),
        }
    }

    #[test]
    fn records_round_trip_behind_the_format_marker() {
        let engine = MemEngine::new();
        let (a, mut b) = (record("wang.wu"), record("li.si"));
        engine.write(a.write(), basedata_store::Durability::Sync).unwrap();
        engine.write(b.write(), basedata_store::Durability::Sync).unwrap();
        // A later write of the same id replaces the record.
        b.disabled = true;
        engine.write(b.write(), basedata_store::Durability::Sync).unwrap();
        assert_eq!(all(&engine).unwrap(), vec![b.clone(), a.clone()]);
        assert_eq!(load(&engine, "wang.wu").unwrap(), Some(a.clone()));
        assert_eq!(load(&engine, "nobody").unwrap(), None);
        // The stored bytes carry the version marker and no password but the hash.
        let raw = engine.get(Cf::Gov, b"a/wang.wu").unwrap().unwrap();
        assert_eq!(raw[0], FORMAT_V1);
        assert!(raw.windows(9).any(|w| w == b"$argon2id"));
    }

    #[test]
    fn an_unknown_format_is_an_error_not_a_misread() {
        let engine = MemEngine::new();
        let mut bytes = encode(&record("x"));
        bytes[0] = 9;
        let mut w = WriteBatch::new();
        w.put(Cf::Gov, key("x"), bytes);
        engine.write(w, basedata_store::Durability::Sync).unwrap();
        assert!(load(&engine, "x").is_err());
        assert!(all(&engine).is_err());
    }
}
