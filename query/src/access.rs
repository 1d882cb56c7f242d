//! The access decision: may this caller read this dataset at all
//! ([`may_read`]), may it see this field of it, given its grants and the
//! purpose its use states ([`decide`]), and may it follow the dataset's
//! changes ([`may_follow`])? Every read path (lookup, verification, batch,
//! change feed) asks these and nothing else.

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
    /// Conditional, and the approved grants that cover it are for another
    /// purpose than the one this use states (a grant is used only for the
    /// purpose applied for).
    OtherPurpose,
    /// On the negative list: never disclosed.
    NotShared,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::NoGrant => "no_grant",
            Withheld::OtherPurpose => "granted_for_other_purpose",
            Withheld::NotShared => "not_shared",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Withheld(Withheld),
}

/// What a grant opens: a conditional field, or a dataset's change feed
/// (a subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    Field(&'a str),
    Feed,
}

/// Whether approved grants cover a use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    Covered,
    /// Granted, but only for other purposes than the use's.
    OtherPurpose,
    None,
}

/// Approved (or deemed approved) grants of conditional fields and of
/// change-feed subscriptions.
pub trait GrantSource: Send + Sync {
    /// Whether `department`'s grants cover `scope` of `dataset` for a use
    /// under the catalogued purpose `purpose` (`None`: a free-text purpose).
    fn coverage(&self, department: &str, purpose: Option<&str>, dataset: &str, scope: Scope<'_>) -> Coverage;

    /// The ids of the grants that make [`GrantSource::coverage`] `Covered`
    /// (in order, without repeats): the approvals a use relies on, for its
    /// audit entry. Empty when it is not covered.
    fn covering(&self, department: &str, purpose: Option<&str>, dataset: &str, scope: Scope<'_>) -> Vec<String>;
}

/// The grants a use of `field` of `dataset` by `caller` relies on: those
/// that open it, for a conditional field the caller may read only under a
/// grant; none for any other field (an unconditional one, or the
/// caller's own as the dataset's provider).
pub fn relied_on(caller: &Caller, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> Vec<String> {
    if field.share == Share::Conditional && !dataset.is_provided_by(&caller.department.id) {
        grants.covering(&caller.department.id, caller.purpose_code.as_deref(), &dataset.id, Scope::Field(&field.name))
    } else {
        Vec::new()
    }
}

/// Adds the ids `more` to `to`, each once.
pub fn add_grants(to: &mut Vec<String>, more: Vec<String>) {
    for id in more {
        if !to.contains(&id) {
            to.push(id);
        }
    }
}

/// No grants at all: conditional fields are withheld from everyone but
/// their provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGrants;

impl GrantSource for NoGrants {
    fn coverage(&self, _: &str, _: Option<&str>, _: &str, _: Scope<'_>) -> Coverage {
        Coverage::None
    }

    fn covering(&self, _: &str, _: Option<&str>, _: &str, _: Scope<'_>) -> Vec<String> {
        Vec::new()
    }
}

/// How a claim of a field may be verified by a department.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimRule {
    /// Verified freely: the department may read the field, or a verdict
    /// discloses too little to matter (binary content, or a field the
    /// catalog marks `few_values = false`).
    Free,
    /// The department may not read the field and a few guesses would
    /// reveal it (`few_values`), so every verdict narrows it down:
    /// distinct claims are counted per subject (see [`crate::claims`]),
    /// one verification at a time, never in bulk.
    Counted,
    /// Only departments that may read the field may verify it: the
    /// catalog says a verdict itself would disclose (`verifiable = false`).
    Refused,
}

/// The rule for `caller`'s claims of `field` (under the purpose its use states).
pub fn claim_rule(caller: &Caller, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> ClaimRule {
    if decide(caller, dataset, field, grants) == Access::Allowed {
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
        "this department may not read field {} of dataset {}, and a few guesses would reveal it: \
         it is verified one subject at a time (POST /v1/persons/{{id}}/verify), where distinct claims are counted",
        field.name, dataset.id
    )
}

/// Why a claim may not be verified in a batch line, if it may not: the
/// batch paths' form of [`claim_rule`].
pub fn bulk_refusal(caller: &Caller, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> Option<String> {
    match claim_rule(caller, dataset, field, grants) {
        ClaimRule::Free => None,
        ClaimRule::Counted => Some(not_in_bulk(dataset, field)),
        ClaimRule::Refused => Some(unverifiable(dataset, field)),
    }
}

/// May `caller` have `dataset`'s changes from the change feed? Its
/// provider may; anyone else needs an approved subscription for the
/// purpose the read states.
pub fn may_follow(caller: &Caller, dataset: &Dataset, grants: &dyn GrantSource) -> bool {
    caller.provides(dataset)
        || (caller.department.has(Role::Consumer)
            && grants.coverage(&caller.department.id, caller.purpose_code.as_deref(), &dataset.id, Scope::Feed)
                == Coverage::Covered)
}

/// The decision. `none` fields are withheld from everybody, the provider
/// included (it reads its own system of record, not this platform);
/// conditional fields need a grant for the use's purpose unless the caller
/// is the provider.
pub fn decide(caller: &Caller, dataset: &Dataset, field: &Field, grants: &dyn GrantSource) -> Access {
    let department = caller.department.id.as_str();
    match field.share {
        Share::Unconditional => Access::Allowed,
        Share::None => Access::Withheld(Withheld::NotShared),
        // Every provider of a dataset of several reads it whole, as the
        // only provider does: parts of one record, or records that move
        // between areas, are one system of record.
        Share::Conditional if dataset.is_provided_by(department) => Access::Allowed,
        Share::Conditional => {
            match grants.coverage(department, caller.purpose_code.as_deref(), &dataset.id, Scope::Field(&field.name)) {
                Coverage::Covered => Access::Allowed,
                Coverage::OtherPurpose => Access::Withheld(Withheld::OtherPurpose),
                Coverage::None => Access::Withheld(Withheld::NoGrant),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::Catalog;

    /// One grant of a field to a department, for uses under `purpose`.
    struct One(&'static str, &'static str, &'static str, Option<&'static str>);
    impl GrantSource for One {
        fn coverage(&self, d: &str, purpose: Option<&str>, ds: &str, scope: Scope<'_>) -> Coverage {
            match (d, ds, scope) == (self.0, self.1, Scope::Field(self.2)) {
                true if purpose == self.3 => Coverage::Covered,
                true => Coverage::OtherPurpose,
                false => Coverage::None,
            }
        }

        fn covering(&self, d: &str, purpose: Option<&str>, ds: &str, scope: Scope<'_>) -> Vec<String> {
            match self.coverage(d, purpose, ds, scope) {
                Coverage::Covered => vec!["one".into()],
                _ => Vec::new(),
            }
        }
    }

    fn caller(dept: &str, purpose: Option<&str>) -> Caller {
        let mut c = Caller::declared(std::sync::Arc::new(crate::caller::Department::new(dept, vec![Role::Consumer])), None);
        c.purpose_code = purpose.map(str::to_owned);
        c
    }

    fn check(dept: &str, ds: &str, field: &str, grants: &dyn GrantSource, expected: Access) {
        check_for(dept, None, ds, field, grants, expected)
    }

    fn check_for(dept: &str, purpose: Option<&str>, ds: &str, field: &str, grants: &dyn GrantSource, expected: Access) {
        let cat = Catalog::builtin();
        let d = cat.dataset(ds).unwrap();
        assert_eq!(decide(&caller(dept, purpose), d, d.field(field).unwrap(), grants), expected, "{dept} {purpose:?} {ds}.{field}");
    }

    #[test]
    fn decision_table() {
        let g = One("counter", "hukou", "photo", None);
        check("counter", "hukou", "name", &NoGrants, Access::Allowed);
        check("counter", "hukou", "photo", &NoGrants, Access::Withheld(Withheld::NoGrant));
        check("counter", "hukou", "photo", &g, Access::Allowed);
        check("other", "hukou", "photo", &g, Access::Withheld(Withheld::NoGrant));
        check("counter", "hukou", "name", &g, Access::Allowed);
        check("gongan", "hukou", "photo", &NoGrants, Access::Allowed);
        check("counter", "death", "cause_of_death", &NoGrants, Access::Withheld(Withheld::NotShared));
        check("weijian", "death", "cause_of_death", &NoGrants, Access::Withheld(Withheld::NotShared));
        check("counter", "death", "cause_of_death", &One("counter", "death", "cause_of_death", None), Access::Withheld(Withheld::NotShared));
    }

    #[test]
    fn a_grant_opens_fields_only_for_its_purpose() {
        let g = One("counter", "hukou", "photo", Some("social_insurance"));
        check_for("counter", Some("social_insurance"), "hukou", "photo", &g, Access::Allowed);
        check_for("counter", Some("tax_administration"), "hukou", "photo", &g, Access::Withheld(Withheld::OtherPurpose));
        check_for("counter", None, "hukou", "photo", &g, Access::Withheld(Withheld::OtherPurpose));
        check_for("other", Some("social_insurance"), "hukou", "photo", &g, Access::Withheld(Withheld::NoGrant));
        check_for("counter", Some("tax_administration"), "hukou", "name", &g, Access::Allowed);
    }
}
