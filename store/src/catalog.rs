//! The sharing catalog (政务信息共享目录): which datasets the platform holds,
//! who provides each one, which fields it has, of what type, and how each
//! field may be shared. Every other part of basedata consults it: ingestion
//! checks updates against the field types and the provider, lookups withhold
//! fields by share class, verification picks the primary dataset, and
//! `GET /v1/catalog` serializes it as it stands. A catalog is read from TOML
//! (the built-in one, `catalog/default.toml`, or an operator's file) and
//! validated once, so the rest of the code may rely on its invariants: ids
//! and field names are unique identifiers, every conditional field states its
//! condition, every unshared field its legal basis, every code field its
//! codes, and both primary datasets exist with the right subject. The
//! catalog also lists the purposes of use (用途) a department may state,
//! each with its legal basis, so that a use and a grant can name the same
//! purpose by its code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::Subject;

/// The built-in catalog, compiled into the binary so that a store works
/// without any configuration.
const BUILTIN_TOML: &str = include_str!("../catalog/default.toml");

/// Dataset a person verification uses when the request names none.
pub const DEFAULT_PRIMARY_PERSON: &str = "hukou";
/// Dataset an entity verification uses when the request names none.
pub const DEFAULT_PRIMARY_ENTITY: &str = "market_registration";

/// Identifiers end up in storage keys, URLs and log lines; a short ASCII
/// alphabet keeps them safe in all three.
const MAX_IDENTIFIER_LEN: usize = 64;
/// A provider more than a year late is not on a schedule at all.
const MAX_WORKING_DAYS: u32 = 365;

/// Share class of a field (Guangzhou Art. 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    /// 无条件共享: any authenticated department, for a stated purpose.
    Unconditional,
    /// 有条件共享: only under an approved (or deemed approved) grant.
    Conditional,
    /// 不予共享: never disclosed, but still usable for verification.
    None,
}

impl Share {
    pub fn as_str(self) -> &'static str {
        match self {
            Share::Unconditional => "unconditional",
            Share::Conditional => "conditional",
            Share::None => "none",
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Type of a field's values, as providers send them and verification
/// compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339.
    Datetime,
    Integer,
    Decimal,
    Bool,
    /// A value of the field's code list, compared exactly.
    Code,
    /// A citizen ID number referring to another person.
    PersonKey,
    /// A unified social credit code referring to another organization.
    EntityKey,
    /// Binary content, base64 in JSON.
    Bytes,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Bool => "bool",
            FieldType::Code => "code",
            FieldType::PersonKey => "person_key",
            FieldType::EntityKey => "entity_key",
            FieldType::Bytes => "bytes",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How soon a provider must pass a change on (Guangzhou Art. 19, Huizhou
/// Art. 16). The freshness report measures providers against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateFrequency {
    /// Base data: as the change happens.
    Realtime,
    /// Within N working days of the change.
    WorkingDays(u32),
    /// Static data: within the first ten days of the following quarter.
    Quarterly,
}

impl UpdateFrequency {
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for UpdateFrequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateFrequency::Realtime => f.write_str("realtime"),
            UpdateFrequency::WorkingDays(n) => write!(f, "working_days:{n}"),
            UpdateFrequency::Quarterly => f.write_str("quarterly"),
        }
    }
}

/// Why a string is not an update frequency.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid update frequency `{value}`: {reason}")]
pub struct InvalidUpdateFrequency {
    pub value: String,
    pub reason: &'static str,
}

impl FromStr for UpdateFrequency {
    type Err = InvalidUpdateFrequency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidUpdateFrequency {
            value: s.to_owned(),
            reason,
        };
        match s {
            "realtime" => Ok(UpdateFrequency::Realtime),
            "quarterly" => Ok(UpdateFrequency::Quarterly),
            _ => {
                let Some(n) = s.strip_prefix("working_days:") else {
                    return Err(invalid("expected realtime, working_days:N or quarterly"));
                };
                // Plain digits only (`u32::from_str` would also take `+5`, and
                // `05` would not read back as written): one spelling per value.
                let plain = !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && !(n.len() > 1 && n.starts_with('0'));
                if !plain {
                    return Err(invalid(
                        "N must be a number of working days, without sign or leading zeros",
                    ));
                }
                match n.parse::<u32>() {
                    Ok(n) if (1..=MAX_WORKING_DAYS).contains(&n) => {
                        Ok(UpdateFrequency::WorkingDays(n))
                    }
                    _ => Err(invalid("N must be between 1 and 365")),
                }
            }
        }
    }
}

impl Serialize for UpdateFrequency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpdateFrequency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One entry of a code list: the value providers send and its meaning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub value: String,
    pub title: String,
}

/// One field (信息项) of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: String,
    pub title: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    pub share: Share,
    /// Who may have a conditional field and for what (Guangzhou Art. 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The law that withholds a `none` field, or grounds a condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// The allowed values; empty unless `ty` is `Code`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<Code>,
    /// Every upsert must carry this field.
    #[serde(skip_serializing_if = "is_false")]
    pub required: bool,
    /// Whether a department that may not read the field may still have a
    /// claimed value of it verified. Off where the answer itself would
    /// disclose: a record whose very existence is secret (adoption), or a
    /// field of a handful of values that a few guesses would reveal.
    #[serde(skip_serializing_if = "is_true")]
    pub verifiable: bool,
    /// Whether a handful of guesses would reveal the field: a code list, a
    /// boolean, a date within a narrow range, and text that a short word
    /// list covers (a cause of death, a place, a reason). A department
    /// that may not read such a field has its distinct claims of it
    /// counted per subject (see `basedata_query::claims`) and may not
    /// verify it in bulk. Every field is, unless the catalog says
    /// otherwise, except binary content, which no guess reaches.
    #[serde(skip_serializing_if = "is_false")]
    pub few_values: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

impl Field {
    /// The code with this value, if the field's code list has it. Lists are
    /// a few dozen entries at most, where a scan beats hashing.
    pub fn code(&self, value: &str) -> Option<&Code> {
        self.codes.iter().find(|c| c.value == value)
    }
}

/// One dataset (信息资源) of the catalog, written by one provider or by
/// several, each for an area or a part of the fields
/// ([`crate::providers`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dataset {
    pub id: String,
    pub subject: Subject,
    pub title: String,
    /// The department that answers for the dataset: its only provider, or
    /// of several the steward (the `steward` key, else the first named),
    /// who decides grants, resolves disputes and is measured for
    /// timeliness as a whole.
    pub provider: String,
    pub provider_name: String,
    /// Every provider with its part: one entry without a part for a
    /// dataset of one provider.
    pub providers: Vec<Provider>,
    /// How several providers divide the dataset; `None` for one provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub division: Option<Division>,
    pub update_frequency: UpdateFrequency,
    /// The article or measure that defines the dataset.
    pub legal_basis: String,
    /// In display order.
    pub fields: Vec<Field>,
}

impl Dataset {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Position of a field in `fields`, for code that stores values by
    /// position. Datasets have a few dozen fields, so a scan is enough.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The provider entry of department `id`, if it provides the dataset
    /// (or a part of it).
    pub fn provider_entry(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Whether department `id` provides the dataset or a part of it.
    pub fn is_provided_by(&self, id: &str) -> bool {
        self.provider_entry(id).is_some()
    }
}

// Several providers of one dataset: the parts, as the catalog declares
// them. What each part may write is judged in `crate::providers`.

/// One provider of a dataset and the part it answers for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provider {
    /// A department id.
    pub id: String,
    pub name: String,
    /// Division codes of its area (a dataset divided by area).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<String>,
    /// Its fields (a dataset divided by fields).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl Provider {
    /// Whether `area` (a record's area value) is in this provider's area.
    pub fn holds_area(&self, area: &str) -> bool {
        self.areas.iter().any(|code| area.starts_with(code.as_str()))
    }
}

/// Where a record's area comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaOf {
    /// The value of this field of the record (string or code).
    Field(String),
    /// The 6-digit region of the record's key, which never changes.
    KeyRegion,
}

/// How a dataset with several providers is divided among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Division {
    Area(AreaOf),
    Fields,
}

/// As `GET /v1/catalog` shows it: `{"by": "area", "area_field": F}`,
/// `{"by": "area", "area_from_key": true}` or `{"by": "fields"}`.
impl Serialize for Division {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self {
            Division::Area(AreaOf::Field(f)) => {
                m.serialize_entry("by", "area")?;
                m.serialize_entry("area_field", f)?;
            }
            Division::Area(AreaOf::KeyRegion) => {
                m.serialize_entry("by", "area")?;
                m.serialize_entry("area_from_key", &true)?;
            }
            Division::Fields => m.serialize_entry("by", "fields")?,
        }
        m.end()
    }
}

/// Checks one division code of an area: digits only, of a level's length.
pub fn check_area_code(code: &str) -> Result<(), &'static str> {
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be digits only");
    }
    if ![2, 4, 6, 9, 12].contains(&code.len()) {
        return Err("must have 2, 4, 6, 9 or 12 digits (province, city, county, town, community)");
    }
    Ok(())
}

/// A purpose of use (用途) of the catalog: what a department states when it
/// reads subject data, and what a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    /// `[a-z][a-z0-9_]*`, unique: what `X-Purpose` and grants name.
    pub code: String,
    /// The purpose in words (Chinese).
    pub name: String,
    /// The law or measure under which a department uses data for it.
    pub legal_basis: String,
}

/// A validated catalog. Cheap to share behind an `Arc`; immutable once built.
#[derive(Clone, Debug, Serialize)]
pub struct Catalog {
    datasets: Vec<Dataset>,
    purposes: Vec<Purpose>,
    primary_person: String,
    primary_entity: String,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

/// A catalog that cannot be used, with the dataset and field at fault.
#[derive(thiserror::Error, Debug)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("dataset id `{id}` is invalid: {reason}")]
    InvalidDatasetId { id: String, reason: &'static str },
    #[error("dataset `{0}` is defined more than once")]
    DuplicateDataset(String),
    #[error("dataset `{dataset}`: {what} must not be empty")]
    EmptyDatasetText { dataset: String, what: &'static str },
    #[error("dataset `{dataset}`: {source}")]
    UpdateFrequency {
        dataset: String,
        #[source]
        source: InvalidUpdateFrequency,
    },
    #[error("dataset `{dataset}` has no fields")]
    NoFields { dataset: String },
    #[error("dataset `{dataset}`: field name `{field}` is invalid: {reason}")]
    InvalidFieldName {
        dataset: String,
        field: String,
        reason: &'static str,
    },
    #[error("dataset `{dataset}`: field `{field}` is defined more than once")]
    DuplicateField { dataset: String, field: String },
    #[error("dataset `{dataset}`, field `{field}`: title must not be empty")]
    EmptyFieldTitle { dataset: String, field: String },
    #[error("dataset `{dataset}`, field `{field}`: a conditional field needs a `condition` saying who may have it and for what")]
    MissingCondition { dataset: String, field: String },
    #[error("dataset `{dataset}`, field `{field}`: only conditional fields take a `condition` (this one is {share})")]
    UnexpectedCondition {
        dataset: String,
        field: String,
        share: Share,
    },
    #[error(
        "dataset `{dataset}`, field `{field}`: a field that is not shared needs a `legal_basis`"
    )]
    MissingLegalBasis { dataset: String, field: String },
    #[error("dataset `{dataset}`, field `{field}`: a code field needs a non-empty `codes` or `code_list`")]
    MissingCodes { dataset: String, field: String },
    #[error(
        "dataset `{dataset}`, field `{field}`: only code fields take codes (this one is {ty})"
    )]
    UnexpectedCodes {
        dataset: String,
        field: String,
        ty: FieldType,
    },
    #[error("dataset `{dataset}`, field `{field}`: give either `codes` or `code_list`, not both")]
    CodesAndCodeList { dataset: String, field: String },
    #[error("dataset `{dataset}`, field `{field}`: unknown code list `{list}`")]
    UnknownCodeList {
        dataset: String,
        field: String,
        list: String,
    },
    #[error("dataset `{dataset}`, field `{field}`: code `{value}` is invalid: {reason}")]
    InvalidCode {
        dataset: String,
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("dataset `{dataset}`: {message}")]
    Providers { dataset: String, message: String },
    #[error("purpose code `{code}` is invalid: {reason}")]
    InvalidPurposeCode { code: String, reason: &'static str },
    #[error("purpose `{0}` is defined more than once")]
    DuplicatePurpose(String),
    #[error("purpose `{code}`: {what} must not be empty")]
    EmptyPurposeText { code: String, what: &'static str },
    #[error("{key} `{id}` is not a dataset of the catalog")]
    UnknownPrimary { key: &'static str, id: String },
    #[error("{key} `{id}` is a dataset about {actual}, not {expected}")]
    PrimaryWrongSubject {
        key: &'static str,
        id: String,
        expected: &'static str,
        actual: &'static str,
    },
}

impl Catalog {
    /// The built-in catalog. Parsed once per process; a test guarantees
    /// that it is valid, so the panic cannot happen in a released build.
    pub fn builtin() -> Catalog {
        static BUILTIN: OnceLock<Catalog> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Catalog::from_toml_str(BUILTIN_TOML)
                    .unwrap_or_else(|e| panic!("built-in catalog is invalid: {e}"))
            })
            .clone()
    }

    /// Parse and validate a catalog in the format of `catalog/default.toml`.
    pub fn from_toml_str(s: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(s).map_err(|e| syntax_error(s, &e))?;
        raw.validate()
    }

    /// Read a catalog file (`catalog = "FILE"` in the configuration).
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_owned(),
            source,
        })?;
        Catalog::from_toml_str(&text)
    }

    pub fn dataset(&self, id: &str) -> Option<&Dataset> {
        self.index.get(id).map(|&i| &self.datasets[i])
    }

    /// All datasets, in file order.
    pub fn datasets(&self) -> &[Dataset] {
        &self.datasets
    }

    /// The purposes of use, in file order.
    pub fn purposes(&self) -> &[Purpose] {
        &self.purposes
    }

    /// The purpose with this code. A catalog lists a few dozen at most.
    pub fn purpose(&self, code: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.code == code)
    }

    pub fn datasets_for(&self, subject: Subject) -> impl Iterator<Item = &Dataset> + '_ {
        self.datasets.iter().filter(move |d| d.subject == subject)
    }

    /// The dataset verification uses when a request names none. Always
    /// `Some` for a catalog that passed validation.
    pub fn primary(&self, subject: Subject) -> Option<&Dataset> {
        let id = match subject {
            Subject::Person => &self.primary_person,
            Subject::Entity => &self.primary_entity,
        };
        self.dataset(id)
    }
}

fn subject_str(subject: Subject) -> &'static str {
    match subject {
        Subject::Person => "person",
        Subject::Entity => "entity",
    }
}

/// toml's own message spans several lines with a snippet; commands report
/// bad input in one line, so keep only the position and the message.
fn syntax_error(input: &str, e: &toml::de::Error) -> CatalogError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &input[..span.start.min(input.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    CatalogError::Syntax {
        line,
        column,
        message,
    }
}

/// Checks the identifier alphabet `[a-z][a-z0-9_]*`, at most 64 characters.
fn check_identifier(s: &str) -> Result<(), &'static str> {
    let mut bytes = s.bytes();
    match bytes.next() {
        None => return Err("must not be empty"),
        Some(b) if !b.is_ascii_lowercase() => {
            return Err("must start with a lowercase ASCII letter (a-z)");
        }
        Some(_) => {}
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err("may contain only a-z, 0-9 and _");
    }
    if s.len() > MAX_IDENTIFIER_LEN {
        return Err("is longer than 64 characters");
    }
    Ok(())
}

fn is_blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

// The file format. It differs from the public types where the file is
// friendlier to write than the validated form is to use: code lists can be
// named once and referred to, the provider name may be left out, and the
// update frequency stays a string until its dataset is known, so that an
// error can name the dataset.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    primary_person: Option<String>,
    primary_entity: Option<String>,
    #[serde(default)]
    code_lists: BTreeMap<String, Vec<Code>>,
    #[serde(default)]
    datasets: Vec<RawDataset>,
    #[serde(default)]
    purposes: Vec<Purpose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    id: String,
    subject: Subject,
    title: String,
    /// The only provider; or `providers`, with `area_field` or
    /// `area_from_key` when they divide it by area, and `steward`.
    provider: Option<String>,
    provider_name: Option<String>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    area_field: Option<String>,
    #[serde(default)]
    area_from_key: bool,
    steward: Option<String>,
    update_frequency: String,
    legal_basis: String,
    #[serde(default)]
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    name: Option<String>,
    #[serde(default)]
    areas: Vec<String>,
    #[serde(default)]
    fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    title: String,
    #[serde(rename = "type")]
    ty: FieldType,
    share: Share,
    condition: Option<String>,
    legal_basis: Option<String>,
    codes: Option<Vec<Code>>,
    code_list: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default = "yes")]
    verifiable: bool,
    /// Default: true for every type but bytes.
    few_values: Option<bool>,
}

impl RawCatalog {
    fn validate(self) -> Result<Catalog, CatalogError> {
        let mut datasets = Vec::with_capacity(self.datasets.len());
        let mut index = HashMap::with_capacity(self.datasets.len());
        for raw in self.datasets {
            let dataset = raw.validate(&self.code_lists)?;
            if index.insert(dataset.id.clone(), datasets.len()).is_some() {
                return Err(CatalogError::DuplicateDataset(dataset.id));
            }
            datasets.push(dataset);
        }
        for (i, p) in self.purposes.iter().enumerate() {
            check_identifier(&p.code).map_err(|reason| CatalogError::InvalidPurposeCode { code: p.code.clone(), reason })?;
            if self.purposes[..i].iter().any(|q| q.code == p.code) {
                return Err(CatalogError::DuplicatePurpose(p.code.clone()));
            }
            for (what, text) in [("name", &p.name), ("legal_basis", &p.legal_basis)] {
                if text.trim().is_empty() {
                    return Err(CatalogError::EmptyPurposeText { code: p.code.clone(), what });
                }
            }
        }
        let catalog = Catalog {
            datasets,
            purposes: self.purposes,
            primary_person: self
                .primary_person
                .unwrap_or_else(|| DEFAULT_PRIMARY_PERSON.to_owned()),
            primary_entity: self
                .primary_entity
                .unwrap_or_else(|| DEFAULT_PRIMARY_ENTITY.to_owned()),
            index,
        };
        for (key, id, expected) in [
            ("primary_person", &catalog.primary_person, Subject::Person),
            ("primary_entity", &catalog.primary_entity, Subject::Entity),
        ] {
            let dataset = catalog
                .dataset(id)
                .ok_or_else(|| CatalogError::UnknownPrimary {
                    key,
                    id: id.clone(),
                })?;
            if dataset.subject != expected {
                return Err(CatalogError::PrimaryWrongSubject {
                    key,
                    id: id.clone(),
                    expected: subject_str(expected),
                    actual: subject_str(dataset.subject),
                });
            }
        }
        Ok(catalog)
    }
}

impl RawDataset {
    fn validate(self, code_lists: &BTreeMap<String, Vec<Code>>) -> Result<Dataset, CatalogError> {
        let id = self.id;
        check_identifier(&id).map_err(|reason| CatalogError::InvalidDatasetId {
            id: id.clone(),
            reason,
        })?;
        for (what, text) in [
            ("title", Some(&self.title)),
            ("provider", self.provider.as_ref()),
            ("legal_basis", Some(&self.legal_basis)),
        ] {
            if text.is_some_and(|t| t.trim().is_empty()) {
                return Err(CatalogError::EmptyDatasetText { dataset: id, what });
            }
        }
        let update_frequency =
            self.update_frequency
                .parse()
                .map_err(|source| CatalogError::UpdateFrequency {
                    dataset: id.clone(),
                    source,
                })?;
        if self.fields.is_empty() {
            return Err(CatalogError::NoFields { dataset: id });
        }
        let mut names = HashSet::with_capacity(self.fields.len());
        let mut fields = Vec::with_capacity(self.fields.len());
        for raw in self.fields {
            let field = raw.validate(&id, code_lists)?;
            if !names.insert(field.name.clone()) {
                return Err(CatalogError::DuplicateField {
                    dataset: id,
                    field: field.name,
                });
            }
            fields.push(field);
        }
        let named = |id: String, name: Option<String>| match name {
            Some(name) if !name.trim().is_empty() => name,
            _ => id,
        };
        let fail = |message: String| CatalogError::Providers { dataset: id.clone(), message };
        let (providers, division) = match (self.provider, self.providers.is_empty()) {
            (Some(_), false) => return Err(fail("give either `provider` or `providers`, not both".into())),
            (None, true) => return Err(fail("names no `provider` (or `providers`)".into())),
            (Some(provider), true) => {
                if self.area_field.is_some() || self.area_from_key || self.steward.is_some() {
                    return Err(fail("`area_field`, `area_from_key` and `steward` go with `providers`".into()));
                }
                let name = named(provider.clone(), self.provider_name);
                (vec![Provider { id: provider, name, areas: Vec::new(), fields: Vec::new() }], None)
            }
            (None, false) => {
                if self.provider_name.is_some() {
                    return Err(fail("with `providers`, each provider has its own `name`; `provider_name` is for `provider`".into()));
                }
                let providers: Vec<Provider> = self
                    .providers
                    .into_iter()
                    .map(|p| Provider { name: named(p.id.clone(), p.name), id: p.id, areas: p.areas, fields: p.fields })
                    .collect();
                let division = check_division(&providers, &fields, self.area_field, self.area_from_key).map_err(fail)?;
                (providers, Some(division))
            }
        };
        let steward = match self.steward {
            None => 0,
            Some(s) => providers.iter().position(|p| p.id == s).ok_or_else(|| fail(format!("steward `{s}` is not one of its providers")))?,
        };
        Ok(Dataset {
            id,
            subject: self.subject,
            title: self.title,
            provider: providers[steward].id.clone(),
            provider_name: providers[steward].name.clone(),
            providers,
            division,
            update_frequency,
            legal_basis: self.legal_basis,
            fields,
        })
    }
}

/// Checks how several providers divide a dataset: each by area or each by
/// fields; areas valid division codes, none inside another's (overlap);
/// fields known, each provided once, and all of them provided (a field
/// nobody provides could never be written).
fn check_division(
    providers: &[Provider],
    fields: &[Field],
    area_field: Option<String>,
    area_from_key: bool,
) -> Result<Division, String> {
    for (i, p) in providers.iter().enumerate() {
        if p.id.trim().is_empty() {
            return Err("a provider's id must not be empty".into());
        }
        if providers[..i].iter().any(|q| q.id == p.id) {
            return Err(format!("provider `{}` is named more than once", p.id));
        }
    }
    let by_area = providers.iter().all(|p| !p.areas.is_empty() && p.fields.is_empty());
    let by_fields = providers.iter().all(|p| p.areas.is_empty() && !p.fields.is_empty());
    if by_fields {
        if area_field.is_some() || area_from_key {
            return Err("providers of fields take no `area_field` or `area_from_key`".into());
        }
        for (i, p) in providers.iter().enumerate() {
            for (j, f) in p.fields.iter().enumerate() {
                if !fields.iter().any(|g| &g.name == f) {
                    return Err(format!("provider `{}`: unknown field `{f}`", p.id));
                }
                let earlier = providers[..i].iter().find(|q| q.fields.contains(f));
                if let Some(q) = earlier {
                    return Err(format!("field `{f}` is given to both `{}` and `{}` (parts must not overlap)", q.id, p.id));
                }
                if p.fields[..j].contains(f) {
                    return Err(format!("provider `{}` lists field `{f}` twice", p.id));
                }
            }
        }
        let missing: Vec<&str> = fields
            .iter()
            .filter(|f| !providers.iter().any(|p| p.fields.contains(&f.name)))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!("no provider provides field(s) {} (the parts must cover every field)", missing.join(", ")));
        }
        return Ok(Division::Fields);
    }
    if !by_area {
        return Err("every provider needs either `areas` or `fields`, not both, and all of them the same kind".into());
    }
    let area = match (area_field, area_from_key) {
        (Some(_), true) => return Err("give either `area_field` or `area_from_key`, not both".into()),
        (None, false) => return Err("providers of areas need `area_field` (the field holding a record's division code) or `area_from_key = true`".into()),
        (None, true) => AreaOf::KeyRegion,
        (Some(f), false) => match fields.iter().find(|g| g.name == f) {
            None => return Err(format!("`area_field`: unknown field `{f}`")),
            Some(g) if !matches!(g.ty, FieldType::String | FieldType::Code) => {
                return Err(format!("`area_field` `{f}` must be a string or code field (it is {})", g.ty));
            }
            Some(_) => AreaOf::Field(f),
        },
    };
    let all: Vec<(&str, &str)> = providers.iter().flat_map(|p| p.areas.iter().map(move |a| (p.id.as_str(), a.as_str()))).collect();
    for (i, (id, a)) in all.iter().enumerate() {
        check_area_code(a).map_err(|reason| format!("provider `{id}`: area `{a}` {reason}"))?;
        if let Some((other, b)) = all[..i].iter().find(|(_, b)| a.starts_with(b) || b.starts_with(a)) {
            return Err(format!("areas overlap: `{b}` of `{other}` and `{a}` of `{id}`"));
        }
    }
    Ok(Division::Area(area))
}

impl RawField {
    fn validate(
        self,
        dataset: &str,
        code_lists: &BTreeMap<String, Vec<Code>>,
    ) -> Result<Field, CatalogError> {
        let field = self.name;
        check_identifier(&field).map_err(|reason| CatalogError::InvalidFieldName {
            dataset: dataset.to_owned(),
            field: field.clone(),
            reason,
        })?;
        let at = || (dataset.to_owned(), field.clone());
        if self.title.trim().is_empty() {
            let (dataset, field) = at();
            return Err(CatalogError::EmptyFieldTitle { dataset, field });
        }

        // Share class (Guangzhou Art. 10): a conditional field must say on
        // what condition, a withheld one on what legal basis. A condition on
        // any other field would be shown to consumers yet never applied.
        match self.share {
            Share::Conditional if is_blank(&self.condition) => {
                let (dataset, field) = at();
                return Err(CatalogError::MissingCondition { dataset, field });
            }
            Share::Unconditional | Share::None if self.condition.is_some() => {
                let (dataset, field) = at();
                return Err(CatalogError::UnexpectedCondition {
                    dataset,
                    field,
                    share: self.share,
                });
            }
            Share::None if is_blank(&self.legal_basis) => {
                let (dataset, field) = at();
                return Err(CatalogError::MissingLegalBasis { dataset, field });
            }
            _ => {}
        }

        let codes = match (self.codes, self.code_list) {
            (Some(_), Some(_)) => {
                let (dataset, field) = at();
                return Err(CatalogError::CodesAndCodeList { dataset, field });
            }
            (Some(codes), None) => Some(codes),
            (None, Some(list)) => match code_lists.get(&list) {
                Some(codes) => Some(codes.clone()),
                None => {
                    let (dataset, field) = at();
                    return Err(CatalogError::UnknownCodeList {
                        dataset,
                        field,
                        list,
                    });
                }
            },
            (None, None) => None,
        };
        let codes = match (self.ty, codes) {
            (FieldType::Code, Some(codes)) if !codes.is_empty() => codes,
            (FieldType::Code, _) => {
                let (dataset, field) = at();
                return Err(CatalogError::MissingCodes { dataset, field });
            }
            (_, None) => Vec::new(),
            (ty, Some(_)) => {
                let (dataset, field) = at();
                return Err(CatalogError::UnexpectedCodes { dataset, field, ty });
            }
        };
        let mut values = HashSet::with_capacity(codes.len());
        for code in &codes {
            // Values arrive from providers and are compared exactly, so a
            // blank or padded value could never be matched.
            let reason = if code.value.is_empty() {
                Some("value must not be empty")
            } else if code.value.trim() != code.value {
                Some("value must not have surrounding white space")
            } else if !values.insert(code.value.as_str()) {
                Some("duplicate value")
            } else if code.title.trim().is_empty() {
                Some("title must not be empty")
            } else {
                None
            };
            if let Some(reason) = reason {
                let (dataset, field) = at();
                return Err(CatalogError::InvalidCode {
                    dataset,
                    field,
                    value: code.value.clone(),
                    reason,
                });
            }
        }

        Ok(Field {
            name: field,
            title: self.title,
            ty: self.ty,
            share: self.share,
            condition: self.condition,
            legal_basis: self.legal_basis,
            codes,
            required: self.required,
            verifiable: self.verifiable,
            // Text was once left out, and any department could read a
            // cause of death with nine verifications of a batch's lines.
            few_values: self.few_values.unwrap_or(self.ty != FieldType::Bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- the built-in catalog ----

    #[test]
    fn builtin_parses() {
        if let Err(e) = Catalog::from_toml_str(BUILTIN_TOML) {
            panic!("built-in catalog: {e}");
        }
        let catalog = Catalog::builtin();
        assert!(catalog.datasets().len() >= 20);
    }

    fn check_dataset(id: &str, subject: Subject, provider: &str) {
        let catalog = Catalog::builtin();
        let d = catalog
            .dataset(id)
            .unwrap_or_else(|| panic!("dataset {id} missing"));
        assert_eq!(d.subject, subject, "{id}: subject");
        assert_eq!(d.provider, provider, "{id}: provider");
    }

    fn check(dataset: &str, field: &str, ty: FieldType, share: Share) {
        let catalog = Catalog::builtin();
        let d = catalog
            .dataset(dataset)
            .unwrap_or_else(|| panic!("dataset {dataset} missing"));
        let f = d
            .field(field)
            .unwrap_or_else(|| panic!("{dataset}.{field} missing"));
        assert_eq!(f.ty, ty, "{dataset}.{field}: type");
        assert_eq!(f.share, share, "{dataset}.{field}: share");
    }

    fn check_codes(dataset: &str, field: &str, values: &[&str]) {
        let catalog = Catalog::builtin();
        let f = catalog.dataset(dataset).unwrap().field(field).unwrap();
        let actual: Vec<&str> = f.codes.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(actual, values, "{dataset}.{field}: codes");
    }

    /// The "Default catalog" table of CLI.md, line for line.
    #[test]
    fn builtin_has_the_fixed_names() {
        use FieldType as T;
        use Share::*;
        check_dataset("hukou", Subject::Person, "gongan");
        check_dataset("death", Subject::Person, "weijian");
        check_dataset("marriage", Subject::Person, "minzheng");
        check_dataset("market_registration", Subject::Entity, "shichang");
        check_dataset("tax_registration", Subject::Entity, "shuiwu");

        check("hukou", "name", T::String, Unconditional);
        check("hukou", "gender", T::Code, Unconditional);
        check("hukou", "ethnicity", T::Code, Unconditional);
        check("hukou", "birth_date", T::Date, Unconditional);
        check("hukou", "status", T::Code, Unconditional);
        check("hukou", "cancel_date", T::Date, Unconditional);
        check("hukou", "cancel_reason", T::Code, Unconditional);
        check("hukou", "photo", T::Bytes, Conditional);
        check("death", "death_date", T::Date, Unconditional);
        check("death", "cause_of_death", T::String, None);
        check("marriage", "marital_status", T::Code, Unconditional);
        check("market_registration", "name", T::String, Unconditional);
        check(
            "market_registration",
            "legal_representative",
            T::String,
            Unconditional,
        );
        check(
            "market_registration",
            "legal_representative_id",
            T::PersonKey,
            Unconditional,
        );
        check("market_registration", "type", T::Code, Unconditional);
        check("market_registration", "address", T::String, Unconditional);
        check(
            "market_registration",
            "registered_capital",
            T::Decimal,
            Unconditional,
        );
        check(
            "market_registration",
            "established_on",
            T::Date,
            Unconditional,
        );
        check("market_registration", "status", T::Code, Unconditional);
        check("tax_registration", "taxpayer_id", T::String, Unconditional);
        check(
            "tax_registration",
            "tax_authority",
            T::String,
            Unconditional,
        );

        check_codes("hukou", "gender", &["1", "2"]);
        check_codes("hukou", "status", &["normal", "cancelled"]);
        check_codes("hukou", "cancel_reason", &["moved_out", "deceased"]);
        check_codes(
            "marriage",
            "marital_status",
            &["10", "20", "21", "22", "23", "30", "40", "90"],
        );
    }

    #[test]
    fn hukou_is_unconditional_except_the_photo() {
        let catalog = Catalog::builtin();
        for f in &catalog.dataset("hukou").unwrap().fields {
            let expected = if f.name == "photo" {
                Share::Conditional
            } else {
                Share::Unconditional
            };
            assert_eq!(f.share, expected, "hukou.{}", f.name);
        }
    }

    #[test]
    fn ethnicity_has_the_56_national_codes() {
        let catalog = Catalog::builtin();
        let f = catalog
            .dataset("hukou")
            .unwrap()
            .field("ethnicity")
            .unwrap();
        for n in 1..=56 {
            assert!(
                f.code(&format!("{n:02}")).is_some(),
                "ethnicity {n:02} missing"
            );
        }
        assert_eq!(f.code("01").unwrap().title, "汉族");
        assert_eq!(f.code("56").unwrap().title, "基诺族");
        assert!(f.code("1").is_none(), "codes compare exactly");
    }

    #[test]
    fn builtin_share_classes_state_their_grounds() {
        for d in Catalog::builtin().datasets() {
            assert!(!d.legal_basis.trim().is_empty(), "{}: legal_basis", d.id);
            for f in &d.fields {
                if f.share == Share::Conditional {
                    assert!(!is_blank(&f.condition), "{}.{}: condition", d.id, f.name);
                    // Guangzhou Art. 10 asks for the basis as well as the
                    // condition; the file format only insists on the latter.
                    assert!(
                        !is_blank(&f.legal_basis),
                        "{}.{}: legal_basis",
                        d.id,
                        f.name
                    );
                }
                if f.share == Share::None {
                    assert!(
                        !is_blank(&f.legal_basis),
                        "{}.{}: legal_basis",
                        d.id,
                        f.name
                    );
                }
            }
        }
    }

    /// Providers other than the police send the name with the ID number so
    /// that records can be compared (Guangzhou Art. 22, Huizhou Art. 28).
    /// Base data changes are shared as they happen (Guangzhou Art. 19 para
    /// 2): every dataset whose legal basis is an item of Guangzhou Art. 21
    /// (persons) or 23 (organizations) is realtime, but education, static
    /// data kept quarterly with the authority's approval (Huizhou Art. 16).
    #[test]
    fn builtin_base_data_is_updated_in_real_time() {
        let catalog = Catalog::builtin();
        let mut base = 0;
        for d in catalog.datasets() {
            let basis = d.legal_basis.as_str();
            if !(basis.contains("《广州市政务信息共享管理规定》第二十一条") || basis.contains("《广州市政务信息共享管理规定》第二十三条")) {
                continue;
            }
            base += 1;
            let want = if d.id == "education" { UpdateFrequency::Quarterly } else { UpdateFrequency::Realtime };
            assert_eq!(d.update_frequency, want, "{}", d.id);
        }
        assert!(base >= 15, "{base} base datasets");
    }

    #[test]
    fn builtin_person_datasets_carry_a_required_name() {
        for d in Catalog::builtin().datasets_for(Subject::Person) {
            let name = d
                .field("name")
                .unwrap_or_else(|| panic!("{}: no name field", d.id));
            assert!(name.required, "{}.name should be required", d.id);
        }
    }

    #[test]
    fn builtin_primaries_and_lookups() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.primary(Subject::Person).unwrap().id, "hukou");
        assert_eq!(
            catalog.primary(Subject::Entity).unwrap().id,
            "market_registration"
        );
        assert!(catalog
            .datasets_for(Subject::Entity)
            .all(|d| d.subject == Subject::Entity));
        assert!(catalog
            .datasets_for(Subject::Person)
            .any(|d| d.id == "death"));
        let hukou = catalog.dataset("hukou").unwrap();
        assert_eq!(hukou.field_index("name"), Some(0));
        assert_eq!(hukou.field_index("nope"), Option::None);
        assert!(catalog.dataset("nope").is_none());
        for (i, d) in catalog.datasets().iter().enumerate() {
            assert_eq!(catalog.index[&d.id], i);
        }
    }

    // ---- validation ----

    /// The smallest valid catalog: one dataset per subject.
    const MINIMAL: &str = r#"
[[datasets]]
id = "hukou"
subject = "person"
title = "户籍登记信息"
provider = "gongan"
update_frequency = "realtime"
legal_basis = "Art. 18"

[[datasets.fields]]
name = "name"
title = "姓名"
type = "string"
share = "unconditional"

[[datasets]]
id = "market_registration"
subject = "entity"
title = "企业登记信息"
provider = "shichang"
update_frequency = "realtime"
legal_basis = "Art. 29"

[[datasets.fields]]
name = "name"
title = "企业名称"
type = "string"
share = "unconditional"
"#;

    /// MINIMAL plus one person dataset with the given fields.
    fn with_dataset(id: &str, frequency: &str, fields: &str) -> String {
        format!(
            "{MINIMAL}\n[[datasets]]\nid = \"{id}\"\nsubject = \"person\"\ntitle = \"t\"\n\
             provider = \"p\"\nupdate_frequency = \"{frequency}\"\nlegal_basis = \"b\"\n{fields}"
        )
    }

    /// MINIMAL plus a dataset `extra` with one field.
    fn with_field(field: &str) -> String {
        with_dataset(
            "extra",
            "working_days:5",
            &format!("[[datasets.fields]]\n{field}"),
        )
    }

    fn invalid(toml: &str, expected: &str) {
        match Catalog::from_toml_str(toml) {
            Ok(_) => panic!("accepted, expected an error containing {expected:?}:\n{toml}"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(expected),
                    "error {message:?} lacks {expected:?}"
                );
                assert!(
                    !message.contains('\n'),
                    "error spans several lines: {message:?}"
                );
            }
        }
    }

    #[test]
    fn minimal_catalog_is_valid() {
        let catalog = Catalog::from_toml_str(MINIMAL).unwrap();
        assert_eq!(catalog.datasets().len(), 2);
        assert_eq!(catalog.dataset("hukou").unwrap().provider_name, "gongan");
        let ok = with_field("name = \"x\"\ntitle = \"x\"\ntype = \"code\"\nshare = \"unconditional\"\ncodes = [{ value = \"a\", title = \"A\" }]\nrequired = true");
        let catalog = Catalog::from_toml_str(&ok).unwrap();
        let f = catalog.dataset("extra").unwrap().field("x").unwrap();
        assert!(f.required);
        assert_eq!(f.code("a").unwrap().title, "A");
        assert_eq!(
            catalog.dataset("extra").unwrap().update_frequency,
            UpdateFrequency::WorkingDays(5)
        );
    }

    #[test]
    fn dataset_id_must_be_an_identifier() {
        invalid(
            &with_dataset("Extra", "realtime", ""),
            "dataset id `Extra` is invalid",
        );
        invalid(
            &with_dataset("9x", "realtime", ""),
            "must start with a lowercase",
        );
        invalid(
            &with_dataset("ex-tra", "realtime", ""),
            "only a-z, 0-9 and _",
        );
        invalid(&with_dataset("", "realtime", ""), "must not be empty");
        invalid(
            &with_dataset(&"x".repeat(65), "realtime", ""),
            "longer than 64",
        );
        assert!(check_identifier(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn field_name_must_be_an_identifier() {
        invalid(
            &with_field(
                "name = \"Name\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"",
            ),
            "dataset `extra`: field name `Name` is invalid",
        );
        invalid(
            &with_field(
                "name = \"a b\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"",
            ),
            "only a-z, 0-9 and _",
        );
    }

    #[test]
    fn dataset_ids_are_unique() {
        let toml = with_dataset(
            "hukou",
            "realtime",
            "[[datasets.fields]]\nname = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"",
        );
        invalid(&toml, "dataset `hukou` is defined more than once");
    }

    #[test]
    fn field_names_are_unique_within_a_dataset() {
        let field = "[[datasets.fields]]\nname = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"\n";
        invalid(
            &with_dataset("extra", "realtime", &format!("{field}{field}")),
            "dataset `extra`: field `x` is defined more than once",
        );
    }

    #[test]
    fn provider_title_and_legal_basis_are_not_empty() {
        invalid(
            &MINIMAL.replace("provider = \"gongan\"", "provider = \" \""),
            "dataset `hukou`: provider must not be empty",
        );
        invalid(
            &MINIMAL.replace("title = \"户籍登记信息\"", "title = \"\""),
            "dataset `hukou`: title must not be empty",
        );
        invalid(
            &MINIMAL.replace("legal_basis = \"Art. 18\"", "legal_basis = \"\""),
            "dataset `hukou`: legal_basis must not be empty",
        );
        invalid(
            &MINIMAL.replace("title = \"姓名\"", "title = \"\""),
            "dataset `hukou`, field `name`: title must not be empty",
        );
    }

    #[test]
    fn dataset_needs_fields() {
        invalid(
            &with_dataset("extra", "realtime", ""),
            "dataset `extra` has no fields",
        );
    }

    #[test]
    fn conditional_needs_a_condition() {
        invalid(
            &with_field("name = \"x\"\ntitle = \"x\"\ntype = \"bytes\"\nshare = \"conditional\""),
            "dataset `extra`, field `x`: a conditional field needs a `condition`",
        );
        invalid(&with_field("name = \"x\"\ntitle = \"x\"\ntype = \"bytes\"\nshare = \"conditional\"\ncondition = \"  \""), "needs a `condition`");
    }

    #[test]
    fn condition_only_on_conditional_fields() {
        invalid(&with_field("name = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"\ncondition = \"c\""), "only conditional fields take a `condition` (this one is unconditional)");
    }

    #[test]
    fn none_needs_a_legal_basis() {
        invalid(
            &with_field("name = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"none\""),
            "dataset `extra`, field `x`: a field that is not shared needs a `legal_basis`",
        );
        let ok = with_field("name = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"none\"\nlegal_basis = \"law\"");
        assert!(Catalog::from_toml_str(&ok).is_ok());
    }

    #[test]
    fn code_fields_need_codes() {
        let base = "name = \"x\"\ntitle = \"x\"\ntype = \"code\"\nshare = \"unconditional\"";
        invalid(
            &with_field(base),
            "dataset `extra`, field `x`: a code field needs a non-empty `codes`",
        );
        invalid(
            &with_field(&format!("{base}\ncodes = []")),
            "needs a non-empty `codes`",
        );
    }

    #[test]
    fn code_values_are_unique_and_usable() {
        let base = "name = \"x\"\ntitle = \"x\"\ntype = \"code\"\nshare = \"unconditional\"";
        invalid(
            &with_field(&format!("{base}\ncodes = [{{ value = \"1\", title = \"a\" }}, {{ value = \"1\", title = \"b\" }}]")),
            "dataset `extra`, field `x`: code `1` is invalid: duplicate value",
        );
        invalid(
            &with_field(&format!(
                "{base}\ncodes = [{{ value = \"\", title = \"a\" }}]"
            )),
            "value must not be empty",
        );
        invalid(
            &with_field(&format!(
                "{base}\ncodes = [{{ value = \" 1\", title = \"a\" }}]"
            )),
            "surrounding white space",
        );
        invalid(
            &with_field(&format!(
                "{base}\ncodes = [{{ value = \"1\", title = \"\" }}]"
            )),
            "title must not be empty",
        );
    }

    #[test]
    fn non_code_fields_have_no_codes() {
        invalid(
            &with_field("name = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"\ncodes = [{ value = \"1\", title = \"a\" }]"),
            "dataset `extra`, field `x`: only code fields take codes (this one is string)",
        );
    }

    #[test]
    fn code_lists_are_resolved() {
        let lists = "[code_lists]\nyes_no = [{ value = \"y\", title = \"是\" }, { value = \"n\", title = \"否\" }]\n";
        let base = "name = \"x\"\ntitle = \"x\"\ntype = \"code\"\nshare = \"unconditional\"";
        let ok = format!(
            "{lists}{}",
            with_field(&format!("{base}\ncode_list = \"yes_no\""))
        );
        let catalog = Catalog::from_toml_str(&ok).unwrap();
        assert_eq!(
            catalog
                .dataset("extra")
                .unwrap()
                .field("x")
                .unwrap()
                .code("n")
                .unwrap()
                .title,
            "否"
        );
        invalid(
            &with_field(&format!("{base}\ncode_list = \"nope\"")),
            "dataset `extra`, field `x`: unknown code list `nope`",
        );
        let both = format!(
            "{lists}{}",
            with_field(&format!(
                "{base}\ncode_list = \"yes_no\"\ncodes = [{{ value = \"1\", title = \"a\" }}]"
            ))
        );
        invalid(&both, "give either `codes` or `code_list`");
    }

    #[test]
    fn working_days_within_a_year() {
        let field = "[[datasets.fields]]\nname = \"x\"\ntitle = \"x\"\ntype = \"string\"\nshare = \"unconditional\"";
        invalid(
            &with_dataset("extra", "working_days:0", field),
            "dataset `extra`: invalid update frequency `working_days:0`",
        );
        invalid(
            &with_dataset("extra", "working_days:366", field),
            "between 1 and 365",
        );
        invalid(
            &with_dataset("extra", "daily", field),
            "expected realtime, working_days:N or quarterly",
        );
        assert!(Catalog::from_toml_str(&with_dataset("extra", "working_days:365", field)).is_ok());
    }

    #[test]
    fn primaries_exist_with_the_right_subject() {
        invalid(
            &format!("primary_person = \"nope\"\n{MINIMAL}"),
            "primary_person `nope` is not a dataset of the catalog",
        );
        invalid(
            &format!("primary_entity = \"hukou\"\n{MINIMAL}"),
            "primary_entity `hukou` is a dataset about person, not entity",
        );
        invalid(
            &format!("primary_person = \"market_registration\"\n{MINIMAL}"),
            "is a dataset about entity, not person",
        );
        invalid(
            &MINIMAL.replace("id = \"hukou\"", "id = \"households\""),
            "primary_person `hukou` is not a dataset",
        );

        let custom = format!(
            "primary_person = \"households\"\n{}",
            MINIMAL.replace("id = \"hukou\"", "id = \"households\"")
        );
        let catalog = Catalog::from_toml_str(&custom).unwrap();
        assert_eq!(catalog.primary(Subject::Person).unwrap().id, "households");
    }

    #[test]
    fn syntax_errors_give_a_position() {
        invalid(
            &MINIMAL.replace("share = \"unconditional\"", "sahre = \"unconditional\""),
            "unknown field `sahre`",
        );
        invalid(
            &MINIMAL.replace("share = \"unconditional\"", "share = \"public\""),
            "unknown variant `public`",
        );
        invalid(
            &MINIMAL.replace("subject = \"person\"", "subject = \"citizen\""),
            "line 4, column",
        );
        invalid("datasets = [", "catalog line 1, column");
    }

    #[test]
    fn load_reads_a_file_and_names_it_on_failure() {
        let dir =
            std::env::temp_dir().join(format!("basedata-catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(Catalog::load(&path).unwrap().datasets().len(), 2);
        let missing = dir.join("missing.toml");
        let e = Catalog::load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- serialization ----

    /// `GET /v1/catalog` renders these types directly. The store crate has
    /// no JSON dependency, so the serde attributes are checked through the
    /// TOML serializer: they apply to every format alike.
    #[test]
    fn field_serializes_type_and_omits_empty_parts() {
        let catalog = Catalog::builtin();
        let hukou = catalog.dataset("hukou").unwrap();

        let name = toml::Value::try_from(hukou.field("name").unwrap()).unwrap();
        let name = name.as_table().unwrap();
        assert_eq!(name["type"].as_str(), Some("string"));
        assert_eq!(name["share"].as_str(), Some("unconditional"));
        for absent in ["ty", "codes", "condition", "legal_basis"] {
            assert!(!name.contains_key(absent), "name serializes {absent}");
        }

        let photo = toml::Value::try_from(hukou.field("photo").unwrap()).unwrap();
        assert_eq!(photo["type"].as_str(), Some("bytes"));
        assert!(photo.get("condition").is_some());

        let gender = toml::Value::try_from(hukou.field("gender").unwrap()).unwrap();
        assert_eq!(gender["codes"][0]["value"].as_str(), Some("1"));

        let dataset = toml::Value::try_from(hukou).unwrap();
        assert_eq!(dataset["subject"].as_str(), Some("person"));
        assert_eq!(dataset["update_frequency"].as_str(), Some("realtime"));

        let whole = toml::Value::try_from(&catalog).unwrap();
        assert!(whole.get("index").is_none());
        assert_eq!(whole["datasets"][0]["id"].as_str(), Some("hukou"));
    }

    #[test]
    fn enum_names_match_serde() {
        for share in [Share::Unconditional, Share::Conditional, Share::None] {
            assert_eq!(
                toml::Value::try_from(share).unwrap().as_str(),
                Some(share.as_str())
            );
        }
        use FieldType::*;
        for ty in [
            String, Date, Datetime, Integer, Decimal, Bool, Code, PersonKey, EntityKey, Bytes,
        ] {
            assert_eq!(
                toml::Value::try_from(ty).unwrap().as_str(),
                Some(ty.as_str())
            );
        }
    }

    #[test]
    fn update_frequency_round_trips() {
        #[derive(Serialize, Deserialize)]
        struct W {
            f: UpdateFrequency,
        }
        let cases = [
            ("realtime", UpdateFrequency::Realtime),
            ("working_days:1", UpdateFrequency::WorkingDays(1)),
            ("working_days:5", UpdateFrequency::WorkingDays(5)),
            ("working_days:365", UpdateFrequency::WorkingDays(365)),
            ("quarterly", UpdateFrequency::Quarterly),
        ];
        for (s, f) in cases {
            assert_eq!(s.parse::<UpdateFrequency>(), Ok(f));
            assert_eq!(f.as_string(), s);
            let w: W = toml::from_str(&format!("f = \"{s}\"")).unwrap();
            assert_eq!(w.f, f);
            assert_eq!(toml::to_string(&w).unwrap().trim(), format!("f = \"{s}\""));
        }
        for bad in [
            "",
            "Realtime",
            " realtime",
            "working_days:",
            "working_days:0",
            "working_days:366",
            "working_days:05",
            "working_days:+5",
            "working_days:-1",
            "working_days:x",
            "weekly",
        ] {
            assert!(bad.parse::<UpdateFrequency>().is_err(), "{bad:?} accepted");
            assert!(
                toml::from_str::<W>(&format!("f = \"{bad}\"")).is_err(),
                "{bad:?} deserialized"
            );
        }
    }

    #[test]
    fn purposes_are_catalogued_and_checked() {
        let cat = Catalog::builtin();
        assert!(cat.purposes().len() >= 5);
        let p = cat.purpose("social_insurance").expect("built-in purpose");
        assert!(!p.name.is_empty() && !p.legal_basis.is_empty());
        assert!(cat.purpose("unknown").is_none());
        assert!(Catalog::from_toml_str(MINIMAL).unwrap().purposes().is_empty());
        let purpose = |code: &str, name: &str| {
            format!("{MINIMAL}\n[[purposes]]\ncode = \"{code}\"\nname = \"{name}\"\nlegal_basis = \"b\"\n")
        };
        invalid(&purpose("Bad-Code", "x"), "purpose code `Bad-Code` is invalid");
        invalid(&purpose("a", " "), "purpose `a`: name must not be empty");
        invalid(&format!("{}{}", purpose("a", "x"), &purpose("a", "y")[MINIMAL.len()..]), "purpose `a` is defined more than once");
    }

    /// MINIMAL plus a person dataset `permits` (fields `name`, `county`,
    /// `station`) whose provider lines are `providers` (TOML after the
    /// dataset's keys, which `head` adds to).
    fn several(head: &str, providers: &str) -> String {
        format!(
            "{MINIMAL}\n[[datasets]]\nid = \"permits\"\nsubject = \"person\"\ntitle = \"t\"\n\
             update_frequency = \"realtime\"\nlegal_basis = \"b\"\n{head}\n{providers}\n\
             [[datasets.fields]]\nname = \"name\"\ntitle = \"姓名\"\ntype = \"string\"\nshare = \"unconditional\"\n\
             [[datasets.fields]]\nname = \"county\"\ntitle = \"县\"\ntype = \"string\"\nshare = \"unconditional\"\n\
             [[datasets.fields]]\nname = \"station\"\ntitle = \"所\"\ntype = \"string\"\nshare = \"unconditional\"\n"
        )
    }

    const TOWNS: &str = "[[datasets.providers]]\nid = \"town_a\"\nname = \"甲镇\"\nareas = [\"441302001\"]\n\
                         [[datasets.providers]]\nid = \"town_b\"\nareas = [\"441302002\", \"441303\"]\n";

    #[test]
    fn several_providers_by_area() {
        let c = Catalog::from_toml_str(&several("area_field = \"county\"", TOWNS)).unwrap();
        let d = c.dataset("permits").unwrap();
        assert_eq!(d.division, Some(Division::Area(AreaOf::Field("county".into()))));
        assert_eq!((d.provider.as_str(), d.provider_name.as_str()), ("town_a", "甲镇"), "the first named is the steward");
        assert_eq!(d.providers[1].name, "town_b");
        assert!(d.is_provided_by("town_b") && !d.is_provided_by("gongan"));
        let c = Catalog::from_toml_str(&several("area_from_key = true\nsteward = \"town_b\"", TOWNS)).unwrap();
        let d = c.dataset("permits").unwrap();
        assert_eq!((d.division.clone(), d.provider.as_str()), (Some(Division::Area(AreaOf::KeyRegion)), "town_b"));
        // The one-provider form is unchanged.
        let hukou = c.dataset("hukou").unwrap();
        assert_eq!((hukou.division.clone(), hukou.providers.len()), (None, 1));
    }

    #[test]
    fn the_example_catalog_of_several_providers_is_valid() {
        let c = Catalog::from_toml_str(include_str!("../catalog/several-providers.toml")).unwrap();
        let permits = c.dataset("residence_permit").unwrap();
        assert_eq!((permits.provider.as_str(), permits.providers.len()), ("laisui", 3));
        assert_eq!(c.dataset("death").unwrap().division, Some(Division::Fields));
        let json = serde_json::to_value(permits).unwrap();
        assert_eq!(json["division"], serde_json::json!({"by": "area", "area_field": "area_code"}));
        assert_eq!(json["providers"][0], serde_json::json!({"id": "yuexiu", "name": "越秀区来穗人员服务管理中心", "areas": ["440104"]}));
        assert!(serde_json::to_value(c.dataset("hukou").unwrap()).unwrap().get("division").is_none());
    }

    #[test]
    fn several_providers_by_fields() {
        let parts = "[[datasets.providers]]\nid = \"weijian\"\nfields = [\"name\", \"county\"]\n\
                     [[datasets.providers]]\nid = \"gongan\"\nfields = [\"station\"]\n";
        let c = Catalog::from_toml_str(&several("steward = \"gongan\"", parts)).unwrap();
        let d = c.dataset("permits").unwrap();
        assert_eq!((d.division.clone(), d.provider.as_str()), (Some(Division::Fields), "gongan"));
    }

    #[test]
    fn overlapping_incomplete_or_mixed_divisions_are_refused() {
        let town = |id: &str, areas: &str| format!("[[datasets.providers]]\nid = \"{id}\"\nareas = [{areas}]\n");
        let part = |id: &str, fields: &str| format!("[[datasets.providers]]\nid = \"{id}\"\nfields = [{fields}]\n");
        let area = "area_field = \"county\"";
        for (head, providers, expected) in [
            // Overlap: the same code, or one inside another, within or across providers.
            (area, town("a", "\"4413\"") + &town("b", "\"441302\""), "areas overlap: `4413` of `a` and `441302` of `b`"),
            (area, town("a", "\"441302\", \"441302\""), "areas overlap"),
            (area, town("a", "\"441302\"") + &town("a", "\"441303\""), "provider `a` is named more than once"),
            (area, town("a", "\"44130\""), "provider `a`: area `44130` must have 2, 4, 6, 9 or 12 digits"),
            (area, town("a", "\"4413x2\""), "must be digits only"),
            ("", town("a", "\"441302\""), "need `area_field`"),
            ("area_field = \"nowhere\"", town("a", "\"441302\""), "`area_field`: unknown field `nowhere`"),
            ("area_field = \"county\"\narea_from_key = true", town("a", "\"441302\""), "either `area_field` or `area_from_key`"),
            (area, town("a", "\"441302\"") + &part("b", "\"name\""), "not both, and all of them the same kind"),
            (area, "[[datasets.providers]]\nid = \"a\"\n".to_owned(), "needs either `areas` or `fields`"),
            ("steward = \"c\"", part("a", "\"name\", \"county\"") + &part("b", "\"station\""), "steward `c` is not one of its providers"),
            // Fields: overlap, gap, unknown.
            ("", part("a", "\"name\", \"county\"") + &part("b", "\"county\", \"station\""), "field `county` is given to both `a` and `b`"),
            ("", part("a", "\"name\"") + &part("b", "\"station\""), "no provider provides field(s) county"),
            ("", part("a", "\"name\", \"county\"") + &part("b", "\"station\", \"colour\""), "provider `b`: unknown field `colour`"),
            (area, part("a", "\"name\", \"county\"") + &part("b", "\"station\""), "providers of fields take no `area_field`"),
            // The two forms do not mix.
            ("provider = \"p\"", part("a", "\"name\", \"county\", \"station\""), "either `provider` or `providers`, not both"),
            ("provider_name = \"x\"", part("a", "\"name\", \"county\", \"station\""), "`provider_name` is for `provider`"),
            ("", String::new(), "names no `provider` (or `providers`)"),
        ] {
            let toml = several(head, &providers);
            invalid(&toml, expected);
            invalid(&toml, "dataset `permits`: ");
        }
        invalid(
            &MINIMAL.replace("provider = \"gongan\"", "provider = \"gongan\"\nsteward = \"gongan\""),
            "dataset `hukou`: `area_field`, `area_from_key` and `steward` go with `providers`",
        );
    }
}
