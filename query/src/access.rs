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

/// How a claim of a field may be verified by a department.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimRule {
    /// Verified freely: the department may read the field, or a verdict
    /// discloses too little to matter (a field of many possible values).
    Free,
    /// The department may not read the field and it has few possible
    /// values, so every verdict narrows it down: distinct claims are
    /// counted per subject (see [`crate::claims`]), one verification at a
    /// time, never in bulk.
    Counted,
    /// Only departments that may read the field may verify it: the
    /// catalog says a verdict itself would disclose (`verifiable = false`).
    Refused,
}

/// The rule for `department`'s claims of `field`.
pub fn claim_rule(department: &str, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> ClaimRule {
    if decide(department, dataset, field, grants) == Access::Allowed {
        ClaimRule::Free
    } else if !field.verifiable {
        ClaimRule::Refused
    } else if field.few_values {
        ClaimRule::Counted
    } else {
        ClaimRule::Free
    }
}

/// Why a claim was refused by [`claim_rule`] (`Refused`).
pub fn unverifiable(dataset: &Dataset, field: &Field) -> String {
    format!("field {} of dataset {} is verified only by departments that may read it", field.name, dataset.id)
}

/// Why a `Counted` claim is refused in a batch.
pub fn not_in_bulk(dataset: &Dataset, field: &Field) -> String {
    format!(
        "field {} of dataset {} has few possible values and this department may not read it: \
         it is verified one subject at a time (POST /v1/verify), where distinct claims are counted",
        field.name, dataset.id
    )
}

/// Why a claim may not be verified in a batch line, if it may not: the
/// batch paths' form of [`claim_rule`].
pub fn bulk_refusal(department: &str, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> Option<String> {
    match claim_rule(department, dataset, field, grants) {
        ClaimRule::Free => None,
        ClaimRule::Counted => Some(not_in_bulk(dataset, field)),
        ClaimRule::Refused => Some(unverifiable(dataset, field)),
    }
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
