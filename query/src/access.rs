//! The access decision: may this caller read this dataset at all
//! ([`may_read`]), and may it see this field of it, given its grants
//! ([`decide`])? Every read path (lookup, verification, batch, change feed)
//! asks these two and nothing else.

use crate::caller::{Caller, Role};
use basedata_store::catalog::{Dataset, Field, Share};

/// May `caller` read `dataset`? Consumers may read every dataset; a
/// provider that is not a consumer only its own.
pub fn may_read(caller: &Caller, dataset: &Dataset) -> bool {
    caller.department.has(Role::Consumer) || caller.provides(dataset)
}

/// Why a field is withheld. Stable names: they appear in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// Conditional, and no approved grant covers it.
    NoGrant,
    /// On the negative list: never disclosed.
    NotShared,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::NoGrant => "no_grant",
            Withheld::NotShared => "not_shared",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Withheld(Withheld),
}

/// Approved (or deemed approved) grants of conditional fields.
pub trait GrantSource: Send + Sync {
    fn granted(&self, department: &str, dataset: &str, field: &str) -> bool;
}

/// No grants at all: conditional fields are withheld from everyone but
/// their provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGrants;

impl GrantSource for NoGrants {
    fn granted(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

/// May `department` have a claimed value of `field` verified? Verifying
/// discloses nothing of a field the caller may not read, unless the
/// catalog says the answer itself would (`verifiable = false`): then only
/// those who may read it may verify it.
pub fn may_verify(department: &str, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> bool {
    field.verifiable || decide(department, dataset, field, grants) == Access::Allowed
}

/// Why a claim was refused by [`may_verify`].
pub fn unverifiable(dataset: &Dataset, field: &Field) -> String {
    format!("field {} of dataset {} is verified only by departments that may read it", field.name, dataset.id)
}

/// The decision. `none` fields are withheld from everybody, the provider
/// included (it reads its own system of record, not this platform);
/// conditional fields need a grant unless the caller is the provider.
pub fn decide(department: &str, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> Access {
    match field.share {
        Share::Unconditional => Access::Allowed,
        Share::None => Access::Withheld(Withheld::NotShared),
        Share::Conditional if department == dataset.provider => Access::Allowed,
        Share::Conditional if grants.granted(department, &dataset.id, &field.name) => Access::Allowed,
        Share::Conditional => Access::Withheld(Withheld::NoGrant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::Catalog;

    struct One(&'static str, &'static str, &'static str);
    impl GrantSource for One {
        fn granted(&self, d: &str, ds: &str, f: &str) -> bool {
            (d, ds, f) == (self.0, self.1, self.2)
        }
    }

    fn check(dept: &str, ds: &str, field: &str, grants: &dyn GrantSource, expected: Access) {
        let cat = Catalog::builtin();
        let d = cat.dataset(ds).unwrap();
        assert_eq!(decide(dept, d, d.field(field).unwrap(), grants), expected, "{dept} {ds}.{field}");
    }

    #[test]
    fn decision_table() {
        let g = One("counter", "hukou", "photo");
        check("counter", "hukou", "name", &NoGrants, Access::Allowed);
        check("counter", "hukou", "photo", &NoGrants, Access::Withheld(Withheld::NoGrant));
        check("counter", "hukou", "photo", &g, Access::Allowed);
        check("other", "hukou", "photo", &g, Access::Withheld(Withheld::NoGrant));
        check("counter", "hukou", "name", &g, Access::Allowed);
        check("gongan", "hukou", "photo", &NoGrants, Access::Allowed);
        check("counter", "death", "cause_of_death", &NoGrants, Access::Withheld(Withheld::NotShared));
        check("weijian", "death", "cause_of_death", &NoGrants, Access::Withheld(Withheld::NotShared));
        check("counter", "death", "cause_of_death", &One("counter", "death", "cause_of_death"), Access::Withheld(Withheld::NotShared));
    }
}
