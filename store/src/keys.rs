//! Subject keys: the citizen ID number (公民身份号码, GB 11643-1999) that
//! identifies a natural person and the unified social credit code
//! (统一社会信用代码, GB 32100-2015) that identifies a legal person or other
//! organization. Every request, update and batch line names its subject by
//! one of these, so this module decides what counts as the same key
//! (normalization), what is rejected and why (the `reason` in an
//! `invalid_key` error), and how a key is shown to people (masked).
//!
//! Other legal documents key subjects too (see [`documents`]): passports,
//! Hong Kong/Macao/Taiwan permits and foreigners' permanent residence cards
//! for persons, business-licence registration numbers for market entities
//! without a credit code. A key is always of one [`DocType`]; the citizen
//! ID number and the credit code are the defaults a client need not name.
//!
//! # Normalization
//!
//! Before validation an input is trimmed of surrounding white space (ASCII
//! and Unicode, including the ideographic space U+3000, plus the invisible
//! U+200B and U+FEFF that copying from documents and spreadsheets leaves
//! behind), full-width digits and Latin letters are folded to ASCII, a
//! person's check character `x` becomes `X`, and a credit code is folded to
//! upper case. A legacy 15-digit citizen ID is converted to its 18-digit form
//! (`19` inserted after the area code, check character appended). Characters
//! inside the key, white space included, are never removed: they are a
//! `format` error.
//!
//! # Rejection order
//!
//! When an input has several faults, the first of these checks that fails
//! gives the reason, so that equal inputs always get equal answers:
//!
//! 1. `length`: after trimming, the number of characters (not bytes) is not
//!    18 (or 15 for a legacy citizen ID);
//! 2. `format`: a character that cannot stand where it is: not a digit or
//!    letter at all, a letter where a citizen ID needs a digit, a letter
//!    outside the credit-code alphabet (I, O, S, V, Z), a letter in the
//!    credit code's area code;
//! 3. `date` (citizen IDs only): the birth date does not exist (month 13,
//!    30 February, 29 February of a common year), is in the future, or is
//!    before 1850-01-01;
//! 4. `checksum`: a check character does not match (for a credit code, the
//!    organization code's own GB 11714 check first, then the final one).
//!
//! # Hot path
//!
//! Keys are parsed on every lookup, verification and batch line, so parsing
//! never allocates: it folds into an 18-byte array on the stack and checks it
//! with table lookups and arithmetic. The key types are plain `Copy` arrays
//! holding only valid, normalized keys, so code that has one need not check
//! it again. Their `Debug` shows the masked form, so that a key that ends up
//! in a log line through `{:?}` does not leak the full number.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::macros::date;
use time::{Date, Month};

mod documents;
pub use documents::{mod11_10_check, DocKey, PASSPORT_LEN};

/// The kind of subject a record is about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// A natural person (自然人), keyed by citizen ID number.
    Person,
    /// A legal person or other organization (法人和其他组织), keyed by
    /// unified social credit code.
    Entity,
}

impl Subject {
    /// The name used in the API: `"person"` or `"entity"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Subject::Person => "person",
            Subject::Entity => "entity",
        }
    }

    /// The document type whose number keys this subject today.
    pub const fn doc_type(self) -> DocType {
        match self {
            Subject::Person => DocType::CitizenId,
            Subject::Entity => DocType::UnifiedCreditCode,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Subject {
    type Err = UnknownSubject;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(Subject::Person),
            "entity" => Ok(Subject::Entity),
            _ => Err(UnknownSubject),
        }
    }
}

/// A subject name other than `person` or `entity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown subject: expected \"person\" or \"entity\"")]
pub struct UnknownSubject;

/// Legal identity document type (证件类型), named `id_type` in the API. The
/// `u8` codes are written to storage (in pseudonyms, key mappings, change
/// log and audit entries): never renumber them, only add.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum DocType {
    /// 公民身份号码 (GB 11643-1999).
    CitizenId = 1,
    /// 统一社会信用代码 (GB 32100-2015).
    UnifiedCreditCode = 2,
    /// Passport (护照).
    Passport = 3,
    /// Residence permit or travel permit for Hong Kong, Macao and Taiwan
    /// residents (港澳台居民居住证/通行证).
    HkMacaoTaiwanPermit = 4,
    /// Foreigner's permanent residence card (外国人永久居留身份证).
    ForeignPermanentResidence = 5,
    /// Business-licence registration number (营业执照注册号) of a market
    /// entity without a credit code.
    BusinessLicence = 6,
}

impl DocType {
    /// Every document type, in code order.
    pub const ALL: [DocType; 6] = [
        DocType::CitizenId,
        DocType::UnifiedCreditCode,
        DocType::Passport,
        DocType::HkMacaoTaiwanPermit,
        DocType::ForeignPermanentResidence,
        DocType::BusinessLicence,
    ];

    /// The stable storage code.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The document type with this storage code, if any.
    pub const fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(DocType::CitizenId),
            2 => Some(DocType::UnifiedCreditCode),
            3 => Some(DocType::Passport),
            4 => Some(DocType::HkMacaoTaiwanPermit),
            5 => Some(DocType::ForeignPermanentResidence),
            6 => Some(DocType::BusinessLicence),
            _ => None,
        }
    }

    /// The kind of subject this document identifies.
    pub const fn subject(self) -> Subject {
        match self {
            DocType::CitizenId
            | DocType::Passport
            | DocType::HkMacaoTaiwanPermit
            | DocType::ForeignPermanentResidence => Subject::Person,
            DocType::UnifiedCreditCode | DocType::BusinessLicence => Subject::Entity,
        }
    }

    /// The document type of this `id_type` name for a key of `subject`:
    /// `None` when the name is unknown or names another subject's document.
    pub fn for_subject(subject: Subject, name: &str) -> Option<DocType> {
        DocType::ALL
            .into_iter()
            .find(|d| d.as_str() == name && d.subject() == subject)
    }

    /// The `id_type` names of `subject`'s document types, default first.
    pub fn names(subject: Subject) -> Vec<&'static str> {
        DocType::ALL
            .into_iter()
            .filter(|d| d.subject() == subject)
            .map(DocType::as_str)
            .collect()
    }

    /// The snake_case name, as in serialized form.
    pub const fn as_str(self) -> &'static str {
        match self {
            DocType::CitizenId => "citizen_id",
            DocType::UnifiedCreditCode => "unified_credit_code",
            DocType::Passport => "passport",
            DocType::HkMacaoTaiwanPermit => "hk_macao_taiwan_permit",
            DocType::ForeignPermanentResidence => "foreign_permanent_residence",
            DocType::BusinessLicence => "business_licence",
        }
    }
}

/// Why a key was rejected. The messages describe the rule that was broken and
/// never contain the input, so they are safe to log and to return to callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KeyError {
    /// Wrong number of characters after trimming.
    #[error(
        "wrong number of characters: a citizen ID number has 18 (15 in the legacy form), \
         a unified social credit code has 18; a passport number 5 to 15, a Hong Kong or \
         Macao permit 9 or 11, a Taiwan permit 8, a permanent residence card 15 or 18, \
         a business-licence registration number 15"
    )]
    Length,
    /// A character that is not allowed where it stands.
    #[error(
        "a character is not allowed where it stands: citizen ID numbers are digits with \
         an optional final X; unified social credit codes use digits and letters other \
         than I, O, S, V and Z, with a 6-digit area code; passport numbers are letters and \
         digits; permits are H or M and digits, or digits only; permanent residence cards are \
         3 letters and 12 digits, or 18 characters beginning with 9; business-licence \
         registration numbers are digits"
    )]
    Format,
    /// A check character does not match the rest of the key.
    #[error("the check character does not match: the number is mistyped or not a real one")]
    Checksum,
    /// The birth date in a citizen ID number is impossible, in the future or
    /// before 1850-01-01.
    #[error("the birth date in the number does not exist, is in the future, or is before 1850")]
    Date,
}

impl KeyError {
    /// The stable `details.reason` of an `invalid_key` error.
    pub const fn reason(&self) -> &'static str {
        match self {
            KeyError::Length => "length",
            KeyError::Format => "format",
            KeyError::Checksum => "checksum",
            KeyError::Date => "date",
        }
    }
}

/// Gender as encoded by the parity of a citizen ID's sequence number.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// Odd sequence number.
    Male,
    /// Even sequence number.
    Female,
}

impl Gender {
    /// `"male"` or `"female"`, as in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
        }
    }

    /// The GB/T 2261.1 code: `"1"` male, `"2"` female.
    pub const fn code(self) -> &'static str {
        match self {
            Gender::Male => "1",
            Gender::Female => "2",
        }
    }
}

impl fmt::Display for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const KEY_LEN: usize = 18;
const LEGACY_LEN: usize = 15;

/// Earliest birth date accepted: older numbers are data-entry errors, not
/// living or recently deceased people.
const EARLIEST_BIRTH: Date = date!(1850 - 01 - 01);

/// A day that has certainly passed wherever this code runs: births up to it
/// are not in the future, so the common case needs no clock read.
const SURELY_PAST: Date = date!(2026 - 01 - 01);

const PERSON_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const PERSON_CHECK: &[u8; 11] = b"10X98765432";

const ENTITY_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// 3^i mod 31.
const ENTITY_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

const NOT_IN_ALPHABET: u8 = u8::MAX;

/// Position of each ASCII byte in [`ENTITY_ALPHABET`], or [`NOT_IN_ALPHABET`].
const ENTITY_INDEX: [u8; 128] = {
    let mut table = [NOT_IN_ALPHABET; 128];
    let mut i = 0;
    while i < ENTITY_ALPHABET.len() {
        table[ENTITY_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

fn entity_index(b: u8) -> Option<u32> {
    match ENTITY_INDEX.get(b as usize) {
        Some(&i) if i != NOT_IN_ALPHABET => Some(u32::from(i)),
        _ => None,
    }
}

/// White space around a pasted key. `char::is_whitespace` covers ASCII and
/// Unicode spaces, U+3000 included; the two zero-width characters are not
/// white space to Unicode but are invisible to the person who pasted them.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{200B}' || c == '\u{FEFF}'
}

/// ASCII form of a digit or Latin letter, half- or full-width.
fn fold_char(c: char) -> Option<u8> {
    // Full-width forms sit at a fixed offset from ASCII: U+FF10 is '0'.
    const FULL_WIDTH_OFFSET: u32 = 0xFF10 - b'0' as u32;
    match c {
        '0'..='9' | 'A'..='Z' | 'a'..='z' => Some(c as u8),
        '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
            Some((c as u32 - FULL_WIDTH_OFFSET) as u8)
        }
        _ => None,
    }
}

/// A trimmed input folded to ASCII, before any rule about positions.
struct Folded {
    buf: [u8; KEY_LEN],
    /// Characters in the trimmed input, at most `KEY_LEN`.
    len: usize,
    /// Some character was neither a digit nor a Latin letter. Reported only
    /// after the length, so that a wrong length wins.
    bad_char: bool,
}

fn fold(input: &str) -> Result<Folded, KeyError> {
    let mut folded = Folded {
        buf: [0; KEY_LEN],
        len: 0,
        bad_char: false,
    };
    for c in input.trim_matches(is_blank).chars() {
        // Stopping here keeps a huge input from being scanned to the end.
        let slot = folded.buf.get_mut(folded.len).ok_or(KeyError::Length)?;
        match fold_char(c) {
            Some(b) => *slot = b,
            None => folded.bad_char = true,
        }
        folded.len += 1;
    }
    Ok(folded)
}

fn digit_value(b: u8) -> u32 {
    u32::from(b - b'0')
}

fn decimal(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, &d| n * 10 + digit_value(d))
}

fn person_check(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(PERSON_WEIGHTS)
        .map(|(&d, w)| digit_value(d) * w)
        .sum();
    PERSON_CHECK[(sum % 11) as usize]
}

/// Birth date of an 18-character buffer whose first 17 bytes are digits.
fn person_birth(buf: &[u8; KEY_LEN]) -> Option<Date> {
    let year = decimal(&buf[6..10]) as i32;
    let month = Month::try_from(decimal(&buf[10..12]) as u8).ok()?;
    Date::from_calendar_date(year, month, decimal(&buf[12..14]) as u8).ok()
}

/// Up to which day a birth date may go.
#[derive(Clone, Copy)]
enum Horizon {
    /// Today in UTC, read from the clock only when needed.
    Clock,
    /// A given day.
    Fixed(Date),
    /// No upper bound, for keys that passed the future check when they were
    /// admitted: a key's validity must not depend on when it is read back.
    Unbounded,
}

impl Horizon {
    fn admits(self, birth: Date) -> bool {
        birth >= EARLIEST_BIRTH
            && match self {
                Horizon::Clock => {
                    birth <= SURELY_PAST || birth <= time::OffsetDateTime::now_utc().date()
                }
                Horizon::Fixed(today) => birth <= today,
                Horizon::Unbounded => true,
            }
    }
}

/// Checks the format, birth date and check character of a citizen ID of the
/// right length, in the documented order. With `fill_check` the check character is
/// computed instead of compared (legacy numbers have none).
fn validate_person(
    buf: &mut [u8; KEY_LEN],
    horizon: Horizon,
    fill_check: bool,
) -> Result<(), KeyError> {
    let last_ok = fill_check || buf[17].is_ascii_digit() || buf[17] == b'X';
    if !(buf[..17].iter().all(u8::is_ascii_digit) && last_ok) {
        return Err(KeyError::Format);
    }
    match person_birth(buf) {
        Some(birth) if horizon.admits(birth) => {}
        _ => return Err(KeyError::Date),
    }
    let check = person_check(&buf[..17]);
    settle_check(&mut buf[17], check, fill_check)
}

/// Puts the computed `check` character into `slot` (`fill`), or compares
/// it with the one there.
fn settle_check(slot: &mut u8, check: u8, fill: bool) -> Result<(), KeyError> {
    if fill {
        *slot = check;
    } else if *slot != check {
        return Err(KeyError::Checksum);
    }
    Ok(())
}

fn parse_person(input: &str, horizon: Horizon) -> Result<PersonKey, KeyError> {
    let Folded {
        mut buf,
        len,
        bad_char,
    } = fold(input)?;
    if len != KEY_LEN && len != LEGACY_LEN {
        return Err(KeyError::Length);
    }
    if bad_char {
        return Err(KeyError::Format);
    }
    let legacy = len == LEGACY_LEN;
    if legacy {
        // Area code stays; the 2-digit year and the rest move right to make
        // room for the century, which was always 19 in 15-digit numbers.
        buf.copy_within(6..LEGACY_LEN, 8);
        buf[6] = b'1';
        buf[7] = b'9';
    } else if buf[17] == b'x' {
        buf[17] = b'X';
    }
    validate_person(&mut buf, horizon, legacy)?;
    Ok(PersonKey(buf))
}

/// The GB 11714 check character of an organization code's first 8 characters
/// (digits and upper-case letters).
fn org_check(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .zip(ORG_WEIGHTS)
        .map(|(&b, w)| {
            let value = if b.is_ascii_digit() {
                digit_value(b)
            } else {
                u32::from(b - b'A') + 10
            };
            value * w
        })
        .sum();
    match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        d => b'0' + d as u8,
    }
}

/// The GB 32100 check character of a credit code's first 17 characters, all
/// in the alphabet.
fn entity_check(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(ENTITY_WEIGHTS)
        .map(|(&b, w)| entity_index(b).unwrap_or(0) * w)
        .sum();
    ENTITY_ALPHABET[((31 - sum % 31) % 31) as usize]
}

fn entity_format(buf: &[u8; KEY_LEN]) -> Result<(), KeyError> {
    let in_alphabet = buf.iter().all(|&b| entity_index(b).is_some());
    if in_alphabet && buf[2..8].iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(KeyError::Format)
    }
}

fn validate_entity(buf: &[u8; KEY_LEN]) -> Result<(), KeyError> {
    entity_format(buf)?;
    if buf[16] != org_check(&buf[8..16]) || buf[17] != entity_check(&buf[..17]) {
        return Err(KeyError::Checksum);
    }
    Ok(())
}

/// `bytes` as text. Keys hold ASCII only, so this cannot fail; the check is
/// what keeps this module free of `unsafe`.
fn ascii_str(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => unreachable!("keys hold ASCII only"),
    }
}

/// Fills `out` with the folded characters of `s`, which must have exactly
/// `out.len()` of them.
fn fold_part(s: &str, out: &mut [u8]) -> Result<(), KeyError> {
    if s.chars().count() != out.len() {
        return Err(KeyError::Length);
    }
    for (slot, c) in out.iter_mut().zip(s.chars()) {
        *slot = fold_char(c).ok_or(KeyError::Format)?.to_ascii_uppercase();
    }
    Ok(())
}

/// A valid, normalized 18-character citizen ID number (公民身份号码): 17
/// ASCII digits and a check character that is a digit or `X`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey([u8; KEY_LEN]);

impl PersonKey {
    /// Normalizes and validates a citizen ID, refusing birth dates after
    /// today (UTC).
    pub fn parse(input: &str) -> Result<Self, KeyError> {
        parse_person(input, Horizon::Clock)
    }

    /// As [`PersonKey::parse`], with `today` as the last admissible birth
    /// date.
    pub fn parse_at(input: &str, today: Date) -> Result<Self, KeyError> {
        parse_person(input, Horizon::Fixed(today))
    }

    /// Builds the key of a person from its parts and computes the check
    /// character. `region` is the 6-digit area code; `sequence` is 0..=999,
    /// odd for men and even for women. The birth date must be in
    /// 1850-01-01..=today (UTC).
    pub fn from_parts(region: &str, birth: Date, sequence: u16) -> Result<Self, KeyError> {
        let mut buf = [0; KEY_LEN];
        fold_part(region, &mut buf[..6])?;
        if !buf[..6].iter().all(u8::is_ascii_digit) || sequence > 999 {
            return Err(KeyError::Format);
        }
        if !Horizon::Clock.admits(birth) {
            return Err(KeyError::Date);
        }
        let digits = [
            (6, 4, birth.year() as u32),
            (10, 2, u32::from(u8::from(birth.month()))),
            (12, 2, u32::from(birth.day())),
            (14, 3, u32::from(sequence)),
        ];
        for (start, width, mut n) in digits {
            for slot in buf[start..start + width].iter_mut().rev() {
                *slot = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        buf[17] = person_check(&buf[..17]);
        Ok(PersonKey(buf))
    }

    /// Re-validates a key read back from storage: exactly the 18 normalized
    /// bytes, nothing trimmed or folded. The birth date is not compared with
    /// today, since the key was admitted when it was stored.
    pub fn from_normalized_bytes(b: &[u8]) -> Result<Self, KeyError> {
        let mut buf: [u8; KEY_LEN] = b.try_into().map_err(|_| KeyError::Length)?;
        validate_person(&mut buf, Horizon::Unbounded, false)?;
        Ok(PersonKey(buf))
    }

    /// The normalized key.
    pub fn as_str(&self) -> &str {
        ascii_str(&self.0)
    }

    /// The normalized key as bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Date of birth.
    pub fn birth_date(&self) -> Date {
        match person_birth(&self.0) {
            Some(date) => date,
            None => unreachable!("a PersonKey holds a valid date"),
        }
    }

    /// Gender, from the parity of the sequence number.
    pub fn gender(&self) -> Gender {
        if self.sequence() % 2 == 1 {
            Gender::Male
        } else {
            Gender::Female
        }
    }

    /// The 6-digit administrative area code of the place of first
    /// registration.
    pub fn region(&self) -> &str {
        ascii_str(&self.0[..6])
    }

    /// The 3-digit sequence number among people of that area and birth date.
    pub fn sequence(&self) -> u16 {
        decimal(&self.0[14..17]) as u16
    }

    /// Which residence permit of Hong Kong, Macao or Taiwan residents
    /// (港澳台居民居住证) this number is, if it is one (area code 810000,
    /// 820000 or 830000): `hong_kong_residence_permit`,
    /// `macao_residence_permit` or `taiwan_residence_permit`.
    pub fn residence_permit(&self) -> Option<&'static str> {
        documents::residence_permit(&self.0)
    }

    /// The masked form, for display and logs.
    pub fn masked(&self) -> Masked<'_> {
        Masked(self.as_str())
    }
}

/// A valid, normalized unified social credit code (统一社会信用代码): 18
/// characters from `0123456789ABCDEFGHJKLMNPQRTUWXY`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey([u8; KEY_LEN]);

impl EntityKey {
    /// Normalizes and validates a unified social credit code.
    pub fn parse(input: &str) -> Result<Self, KeyError> {
        let Folded {
            mut buf,
            len,
            bad_char,
        } = fold(input)?;
        if len != KEY_LEN {
            return Err(KeyError::Length);
        }
        if bad_char {
            return Err(KeyError::Format);
        }
        buf.make_ascii_uppercase();
        validate_entity(&buf)?;
        Ok(EntityKey(buf))
    }

    /// Builds a credit code from its parts, computing the organization code's
    /// GB 11714 check character and the final GB 32100 one.
    /// `organization_body` is the organization code without its check (8
    /// characters). Lower-case and full-width input is folded.
    pub fn from_parts(
        registration_authority: char,
        organization_type: char,
        region: &str,
        organization_body: &str,
    ) -> Result<Self, KeyError> {
        let mut buf = [0; KEY_LEN];
        fold_part(region, &mut buf[2..8])?;
        fold_part(organization_body, &mut buf[8..16])?;
        for (slot, c) in buf[..2]
            .iter_mut()
            .zip([registration_authority, organization_type])
        {
            *slot = fold_char(c).ok_or(KeyError::Format)?.to_ascii_uppercase();
        }
        // The checks are computed over characters known to be in the alphabet.
        buf[16] = b'0';
        buf[17] = b'0';
        entity_format(&buf)?;
        buf[16] = org_check(&buf[8..16]);
        buf[17] = entity_check(&buf[..17]);
        Ok(EntityKey(buf))
    }

    /// Re-validates a key read back from storage: exactly the 18 normalized
    /// bytes, nothing trimmed or folded.
    pub fn from_normalized_bytes(b: &[u8]) -> Result<Self, KeyError> {
        let buf: [u8; KEY_LEN] = b.try_into().map_err(|_| KeyError::Length)?;
        validate_entity(&buf)?;
        Ok(EntityKey(buf))
    }

    /// The normalized key.
    pub fn as_str(&self) -> &str {
        ascii_str(&self.0)
    }

    /// The normalized key as bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Registration authority code (登记管理部门码), e.g. `9` for market
    /// regulation.
    pub fn registration_authority(&self) -> char {
        char::from(self.0[0])
    }

    /// Organization type code (机构类别码) within the registration authority.
    pub fn organization_type(&self) -> char {
        char::from(self.0[1])
    }

    /// The 6-digit administrative area code of the registering office.
    pub fn region(&self) -> &str {
        ascii_str(&self.0[2..8])
    }

    /// The 9-character GB 11714 organization code (组织机构代码), its own
    /// check character included.
    pub fn organization_code(&self) -> &str {
        ascii_str(&self.0[8..17])
    }

    /// The masked form, for display and logs.
    pub fn masked(&self) -> Masked<'_> {
        Masked(self.as_str())
    }
}

/// The key of a subject: a citizen ID number, a credit code, or the number
/// of another legal document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKey {
    /// A natural person by citizen ID number.
    Person(PersonKey),
    /// A legal person or other organization by credit code.
    Entity(EntityKey),
    /// A person or a market entity by the number of another document.
    Document(DocKey),
}

impl SubjectKey {
    /// Normalizes and validates a key of the given subject kind, by its
    /// default document (citizen ID number, credit code).
    pub fn parse(subject: Subject, input: &str) -> Result<Self, KeyError> {
        match subject {
            Subject::Person => PersonKey::parse(input).map(SubjectKey::Person),
            Subject::Entity => EntityKey::parse(input).map(SubjectKey::Entity),
        }
    }

    /// As [`SubjectKey::parse`], with `today` as the last admissible birth
    /// date of a person.
    pub fn parse_at(subject: Subject, input: &str, today: Date) -> Result<Self, KeyError> {
        match subject {
            Subject::Person => PersonKey::parse_at(input, today).map(SubjectKey::Person),
            Subject::Entity => EntityKey::parse(input).map(SubjectKey::Entity),
        }
    }

    /// Normalizes and validates the number of a document of type `doc`. An
    /// 18-digit residence permit of a Hong Kong, Macao or Taiwan resident
    /// given as a permit is the citizen ID number it is.
    pub fn parse_doc(doc: DocType, input: &str) -> Result<Self, KeyError> {
        Self::parse_doc_in(doc, input, Horizon::Clock)
    }

    /// As [`SubjectKey::parse_doc`], with `today` as the last admissible
    /// birth date.
    pub fn parse_doc_at(doc: DocType, input: &str, today: Date) -> Result<Self, KeyError> {
        Self::parse_doc_in(doc, input, Horizon::Fixed(today))
    }

    fn parse_doc_in(doc: DocType, input: &str, horizon: Horizon) -> Result<Self, KeyError> {
        match doc {
            DocType::CitizenId => parse_person(input, horizon).map(SubjectKey::Person),
            DocType::UnifiedCreditCode => EntityKey::parse(input).map(SubjectKey::Entity),
            _ => Ok(match documents::parse(doc, input, horizon)? {
                documents::Parsed::Doc(k) => SubjectKey::Document(k),
                documents::Parsed::Citizen(k) => SubjectKey::Person(k),
            }),
        }
    }

    /// Re-validates a key read back from storage by its document type
    /// code: exactly the normalized bytes, nothing trimmed or folded.
    pub fn from_normalized_bytes(doc: DocType, b: &[u8]) -> Result<Self, KeyError> {
        match doc {
            DocType::CitizenId => PersonKey::from_normalized_bytes(b).map(SubjectKey::Person),
            DocType::UnifiedCreditCode => EntityKey::from_normalized_bytes(b).map(SubjectKey::Entity),
            _ => DocKey::from_normalized_bytes(doc, b).map(SubjectKey::Document),
        }
    }

    /// The kind of subject.
    pub fn subject(&self) -> Subject {
        match self {
            SubjectKey::Person(_) => Subject::Person,
            SubjectKey::Entity(_) => Subject::Entity,
            SubjectKey::Document(k) => k.doc_type().subject(),
        }
    }

    /// The type of the document whose number this is.
    pub fn doc_type(&self) -> DocType {
        match self {
            SubjectKey::Document(k) => k.doc_type(),
            _ => self.subject().doc_type(),
        }
    }

    /// The document type, when it is not its subject's default (citizen
    /// ID number, credit code): what answers name as `id_type`, so that
    /// answers about default keys stay as they always were.
    pub fn other_doc_type(&self) -> Option<DocType> {
        Some(self.doc_type()).filter(|d| *d != self.subject().doc_type())
    }

    /// The normalized key.
    pub fn as_str(&self) -> &str {
        match self {
            SubjectKey::Person(k) => k.as_str(),
            SubjectKey::Entity(k) => k.as_str(),
            SubjectKey::Document(k) => k.as_str(),
        }
    }

    /// The normalized key as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SubjectKey::Person(k) => k.as_bytes(),
            SubjectKey::Entity(k) => k.as_bytes(),
            SubjectKey::Document(k) => k.as_bytes(),
        }
    }

    /// The 6-digit administrative area code the key carries: a person's
    /// place of first registration, an organization's or a licence's
    /// registering office; `None` for documents that carry none (passports,
    /// permits, residence cards).
    pub fn region(&self) -> Option<&str> {
        match self {
            SubjectKey::Person(k) => Some(k.region()),
            SubjectKey::Entity(k) => Some(k.region()),
            SubjectKey::Document(k) => k.region(),
        }
    }

    /// The masked form, for display and logs.
    pub fn masked(&self) -> Masked<'_> {
        Masked(self.as_str())
    }
}

impl From<PersonKey> for SubjectKey {
    fn from(key: PersonKey) -> Self {
        SubjectKey::Person(key)
    }
}

impl From<EntityKey> for SubjectKey {
    fn from(key: EntityKey) -> Self {
        SubjectKey::Entity(key)
    }
}

impl From<DocKey> for SubjectKey {
    fn from(key: DocKey) -> Self {
        SubjectKey::Document(key)
    }
}

/// Display, Debug, `FromStr`, `AsRef<str>` and serde for a key type.
/// Deserializing re-validates: stored or received text is input like any
/// other. (`SubjectKey` gets no `Deserialize`: the text alone does not say
/// which subject it keys, and a citizen ID can also be a valid credit code.)
macro_rules! key_traits {
    ($key:ident, $what:literal) => {
        impl fmt::Display for $key {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $key {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($key))
                    .field(&self.masked())
                    .finish()
            }
        }

        impl FromStr for $key {
            type Err = KeyError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $key::parse(s)
            }
        }

        impl AsRef<str> for $key {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl Serialize for $key {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $key {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;

                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $key;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }

                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$key, E> {
                        $key::parse(v)
                            .map_err(|e| E::custom(format_args!("invalid {}: {e}", $what)))
                    }

                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$key, E> {
                        match std::str::from_utf8(v) {
                            Ok(s) => self.visit_str(s),
                            Err(_) => Err(E::custom(format_args!(
                                "invalid {}: {}",
                                $what,
                                KeyError::Format
                            ))),
                        }
                    }
                }

                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

key_traits!(PersonKey, "citizen ID number");
key_traits!(EntityKey, "unified social credit code");

impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for SubjectKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for SubjectKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Shows an ID masked, for logs and display: the first 4 and last 4
/// characters kept, every other character replaced by `*`
/// (`4403**********1234`). Inputs shorter than the shortest ID form (15
/// characters) are all `*`, so that a truncated or mistyped number is never
/// mostly revealed. Counts characters, not bytes, and never allocates.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

/// Shortest input whose ends are shown: the legacy 15-digit citizen ID.
const MASK_MIN_SHOWN: usize = LEGACY_LEN;
const MASK_KEEP: usize = 4;

fn write_stars(f: &mut fmt::Formatter<'_>, mut n: usize) -> fmt::Result {
    const STARS: &str = "********************************";
    while n > 0 {
        let chunk = n.min(STARS.len());
        f.write_str(&STARS[..chunk])?;
        n -= chunk;
    }
    Ok(())
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let n = s.chars().count();
        if n < MASK_MIN_SHOWN {
            return write_stars(f, n);
        }
        let byte_at =
            |char_index: usize| s.char_indices().nth(char_index).map_or(s.len(), |(i, _)| i);
        let head_end = byte_at(MASK_KEEP);
        let tail_start = byte_at(n - MASK_KEEP);
        f.write_str(&s[..head_end])?;
        write_stars(f, n - 2 * MASK_KEEP)?;
        f.write_str(&s[tail_start..])
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        fmt::Display::fmt(self, f)?;
        f.write_char('"')
    }
}

/// `s` masked for display; see [`Masked`].
pub fn mask(s: &str) -> Masked<'_> {
    Masked(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Subject::{Entity as E, Person as P};

    /// "Today" of the table tests, so that they do not age.
    const TODAY: Date = date!(2026 - 11 - 22);

    /// `expected` is the normalized key, or `!reason` for a rejection.
    #[track_caller]
    fn check(subject: Subject, input: &str, expected: &str) {
        check_doc(subject.doc_type(), input, expected);
    }

    /// [`check`] of a key of document type `doc`.
    #[track_caller]
    pub(super) fn check_doc(doc: DocType, input: &str, expected: &str) {
        let got = match SubjectKey::parse_doc_at(doc, input, TODAY) {
            Ok(key) => {
                assert_eq!(key.subject(), doc.subject());
                key.as_str().to_owned()
            }
            Err(e) => format!("!{}", e.reason()),
        };
        assert_eq!(got, expected, "{doc:?} input {input:?}");
    }

    #[test]
    fn person_valid() {
        check(P, "11010519491231002X", "11010519491231002X");
        check(P, "440304199001011233", "440304199001011233");
        check(P, "32010619850612345X", "32010619850612345X");
        check(P, "110105185001010013", "110105185001010013"); // earliest day
        check(P, "11010520261122001X", "11010520261122001X"); // born today
    }

    #[test]
    fn person_normalization() {
        check(P, "11010519491231002x", "11010519491231002X");
        check(P, "  11010519491231002X\t\n", "11010519491231002X");
        check(
            P,
            "\u{3000}11010519491231002X\u{3000}",
            "11010519491231002X",
        );
        check(
            P,
            "\u{FEFF}11010519491231002X\u{200B}",
            "11010519491231002X",
        );
        check(P, "\u{A0}11010519491231002X\u{2003}", "11010519491231002X");
        check(
            P,
            "１１０１０５１９４９１２３１００２Ｘ",
            "11010519491231002X",
        );
        check(
            P,
            "１１０１０５１９４９１２３１００２ｘ",
            "11010519491231002X",
        );
        check(P, "11010519４９1231002X", "11010519491231002X");
        check(
            P,
            "\u{3000}４４０３０４１９９００１０１１２３３ ",
            "440304199001011233",
        );
    }

    #[test]
    fn person_legacy_15_digits() {
        check(P, "110105491231002", "11010519491231002X");
        check(P, "440304850101123", "440304198501011235");
        check(P, " １１０１０５４９１２３１００２ ", "11010519491231002X");
        check(P, "110105491331002", "!date"); // month 13
        check(P, "110105000229002", "!date"); // 1900 was not a leap year
        check(P, "110105960229002", "11010519960229002X"); // 1996 leap
        check(P, "11010549123100X", "!format");
        check(P, "11010549123100x", "!format");
        check(P, "1101054912310 2", "!format");
    }

    #[test]
    fn person_length() {
        check(P, "", "!length");
        check(P, "   ", "!length");
        check(P, "11010519491231002", "!length");
        check(P, "11010519491231002X1", "!length");
        check(P, "1101051949123", "!length");
        check(P, "1101054912310021", "!length"); // 16
        check(P, "11010519491231002X11010519491231002X", "!length");
        // Length wins over format and checksum.
        check(P, "abcdefghijklmnopqrstu", "!length");
        check(P, "1101 0519491231002X", "!length");
    }

    #[test]
    fn person_format() {
        check(P, "1101051949123100XX", "!format");
        check(P, "A1010519491231002X", "!format");
        check(P, "11010519491231002Y", "!format");
        check(P, "1101 519491231002X", "!format"); // inner space
        check(P, "1101051949123100\u{3000}X", "!format");
        check(P, "11010519491231-02X", "!format");
        check(P, "١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", "!format"); // Arabic-Indic digits are not folded
                                                   // Format wins over date and checksum.
        check(P, "11010519491331002Y", "!format");
    }

    #[test]
    fn person_date() {
        check(P, "110105194913310021", "!date"); // month 13
        check(P, "110105194900310021", "!date"); // month 0
        check(P, "110105194912000021", "!date"); // day 0
        check(P, "110105194902300021", "!date"); // 30 February
        check(P, "110105194904310021", "!date"); // 31 April
        check(P, "110105190002290021", "!date"); // 1900 not leap
        check(P, "110105210002290021", "!date"); // 2100 not leap, and future
        check(P, "440304200002290022", "440304200002290022"); // 2000 leap
        check(P, "110105184912310021", "!date"); // before 1850
        check(P, "110105000001010021", "!date");
        check(P, "110105202611230021", "!date"); // tomorrow
        check(P, "110105202701010021", "!date");
        check(P, "110105999912310021", "!date");
        // Date wins over checksum: these check characters are all wrong too.
        check(P, "110105202611230020", "!date");
    }

    #[test]
    fn person_checksum() {
        check(P, "110105194912310021", "!checksum");
        check(P, "110105194912310020", "!checksum");
        check(P, "440304199001011234", "!checksum");
        check(P, "11010519491231003X", "!checksum");
        check(P, "11010519491231020X", "!checksum"); // transposed digits
    }

    #[test]
    fn entity_valid() {
        check(E, "91350100M000100Y43", "91350100M000100Y43");
        check(E, "91110000100002089C", "91110000100002089C");
        check(E, "91440300MA5F0000X1", "91440300MA5F0000X1");
        check(E, "52330100123456788H", "52330100123456788H");
        check(E, "Y1110105ABCDEFGH5Y", "Y1110105ABCDEFGH5Y");
        check(E, "12100000400000XXX9", "12100000400000XXX9"); // org check is X
    }

    #[test]
    fn entity_normalization() {
        check(E, "91350100m000100y43", "91350100M000100Y43");
        check(E, " 91350100M000100Y43\r\n", "91350100M000100Y43");
        check(
            E,
            "\u{3000}９１３５０１００Ｍ０００１００Ｙ４３\u{3000}",
            "91350100M000100Y43",
        );
        check(
            E,
            "９１３５０１００ｍ０００１００ｙ４３",
            "91350100M000100Y43",
        );
        check(E, "91440300ma5f0000x1", "91440300MA5F0000X1");
    }

    #[test]
    fn entity_rejections() {
        check(E, "", "!length");
        check(E, "91350100M000100Y4", "!length");
        check(E, "91350100M000100Y433", "!length");
        check(E, "11010519491231002", "!length");
        check(E, "91350100M000100Y43 91350100M000100Y43", "!length");
        // Letters outside the alphabet, even where any letter could stand.
        check(E, "I1350100M000100Y43", "!format");
        check(E, "9O350100M000100Y43", "!format");
        check(E, "91350100S000100Y43", "!format");
        check(E, "91350100M000100V43", "!format");
        check(E, "91350100M000100Y4Z", "!format");
        check(E, "91350100m000100i43", "!format");
        check(E, "9135010OM000100Y43", "!format"); // letter O for zero in the area code
        check(E, "91350A00M000100Y43", "!format"); // letter in the area code
        check(E, "91350100M000 00Y43", "!format");
        check(E, "91350100M000-00Y43", "!format");
        check(E, "91350100M000100Y44", "!checksum");
        check(E, "91350100M000100Y53", "!checksum"); // org code check wrong
        check(E, "91350100M000100YX3", "!checksum");
        // Final check right, organization code check wrong.
        check(E, "91350100M000100Y56", "!checksum");
        check(E, "12100000400000XX0F", "!checksum");
        check(E, "91350100N000100Y43", "!checksum");
        check(E, "91350100M001000Y43", "!checksum"); // transposed
        check(E, "11010519491231002X", "!checksum");
    }

    #[test]
    fn derived_facts() {
        let p = PersonKey::parse_at("11010519491231002X", TODAY).unwrap();
        assert_eq!(p.birth_date(), date!(1949 - 12 - 31));
        assert_eq!(p.gender(), Gender::Female);
        assert_eq!(p.gender().as_str(), "female");
        assert_eq!(p.gender().code(), "2");
        assert_eq!(p.region(), "110105");
        assert_eq!(p.sequence(), 2);
        assert_eq!(
            PersonKey::parse_at("440304199001011233", TODAY)
                .unwrap()
                .gender(),
            Gender::Male
        );

        let e = EntityKey::parse("91350100M000100Y43").unwrap();
        assert_eq!(e.registration_authority(), '9');
        assert_eq!(e.organization_type(), '1');
        assert_eq!(e.region(), "350100");
        assert_eq!(e.organization_code(), "M000100Y4");
    }

    #[test]
    fn from_parts_examples() {
        let p = PersonKey::from_parts("110105", date!(1949 - 12 - 31), 2).unwrap();
        assert_eq!(p.as_str(), "11010519491231002X");
        assert_eq!(
            PersonKey::from_parts("11010", date!(1949 - 12 - 31), 2),
            Err(KeyError::Length)
        );
        assert_eq!(
            PersonKey::from_parts("11010A", date!(1949 - 12 - 31), 2),
            Err(KeyError::Format)
        );
        assert_eq!(
            PersonKey::from_parts("110105", date!(1949 - 12 - 31), 1000),
            Err(KeyError::Format)
        );
        assert_eq!(
            PersonKey::from_parts("110105", date!(1849 - 12 - 31), 2),
            Err(KeyError::Date)
        );
        assert_eq!(
            PersonKey::from_parts("110105", date!(9999 - 12 - 31), 2),
            Err(KeyError::Date)
        );

        let e = EntityKey::from_parts('9', '1', "350100", "M000100Y").unwrap();
        assert_eq!(e.as_str(), "91350100M000100Y43");
        assert_eq!(
            EntityKey::from_parts('9', '1', "350100", "m000100y").unwrap(),
            e
        );
        assert_eq!(
            EntityKey::from_parts('1', '2', "100000", "400000XX")
                .unwrap()
                .as_str(),
            "12100000400000XXX9"
        );
        assert_eq!(
            EntityKey::from_parts('9', '1', "35010", "M000100Y"),
            Err(KeyError::Length)
        );
        assert_eq!(
            EntityKey::from_parts('9', '1', "350100", "M000100"),
            Err(KeyError::Length)
        );
        assert_eq!(
            EntityKey::from_parts('I', '1', "350100", "M000100Y"),
            Err(KeyError::Format)
        );
        assert_eq!(
            EntityKey::from_parts('9', '1', "35010A", "M000100Y"),
            Err(KeyError::Format)
        );
        assert_eq!(
            EntityKey::from_parts('9', '1', "350100", "M00010OY"),
            Err(KeyError::Format)
        );
        assert_eq!(
            EntityKey::from_parts('9', '-', "350100", "M000100Y"),
            Err(KeyError::Format)
        );
    }

    #[test]
    fn normalized_bytes() {
        let ok = |b: &[u8]| PersonKey::from_normalized_bytes(b).map(|k| k.as_str().to_owned());
        assert_eq!(
            ok(b"11010519491231002X").as_deref(),
            Ok("11010519491231002X")
        );
        // Stored bytes are already normalized: nothing is folded or trimmed.
        assert_eq!(ok(b"11010519491231002x"), Err(KeyError::Format));
        assert_eq!(ok(b" 11010519491231002X"), Err(KeyError::Length));
        assert_eq!(ok(b"110105491231002"), Err(KeyError::Length));
        assert_eq!(ok(b"110105194912310021"), Err(KeyError::Checksum));
        assert_eq!(ok(b"110105194902300021"), Err(KeyError::Date));
        assert_eq!(ok(&[0xFF; 18]), Err(KeyError::Format));
        // No clock: validity of a stored key does not depend on when it is read.
        assert!(ok(b"110105999912310021").is_err_and(|e| e == KeyError::Checksum));

        let ent = |b: &[u8]| EntityKey::from_normalized_bytes(b).map(|k| k.as_str().to_owned());
        assert_eq!(
            ent(b"91350100M000100Y43").as_deref(),
            Ok("91350100M000100Y43")
        );
        assert_eq!(ent(b"91350100m000100y43"), Err(KeyError::Format));
        assert_eq!(ent(b"91350100M000100Y4"), Err(KeyError::Length));
        assert_eq!(ent(b"91350100M000100Y44"), Err(KeyError::Checksum));
        assert_eq!(ent(&[0xFF; 18]), Err(KeyError::Format));
    }

    #[test]
    fn parse_uses_the_clock() {
        assert!(PersonKey::parse("11010519491231002X").is_ok());
        // Born on 9999-12-31: always in the future.
        let far = "11010599991231001";
        let key = format!("{far}{}", char::from(person_check(far.as_bytes())));
        assert_eq!(PersonKey::parse(&key), Err(KeyError::Date));
        assert_eq!(
            PersonKey::parse_at(&key, date!(9999 - 12 - 31)).map(|k| k.to_string()),
            Ok(key)
        );
    }

    #[test]
    fn debug_is_masked() {
        let p = PersonKey::parse_at("11010519491231002X", TODAY).unwrap();
        let e = EntityKey::parse("91350100M000100Y43").unwrap();
        for (debug, full) in [
            (format!("{p:?}"), p.as_str()),
            (format!("{p:#?}"), p.as_str()),
            (format!("{:?}", SubjectKey::from(p)), p.as_str()),
            (format!("{e:?}"), e.as_str()),
            (format!("{:?}", SubjectKey::from(e)), e.as_str()),
        ] {
            assert!(!debug.contains(full), "{debug}");
            assert!(!debug.contains(&full[4..14]), "{debug}");
        }
        assert_eq!(format!("{p:?}"), "PersonKey(\"1101**********002X\")");
        assert_eq!(format!("{e:?}"), "EntityKey(\"9135**********0Y43\")");
        assert_eq!(format!("{p}"), "11010519491231002X");
        assert_eq!(format!("{}", SubjectKey::from(e)), "91350100M000100Y43");
    }

    #[test]
    fn mask_examples() {
        let m = |s: &str| mask(s).to_string();
        assert_eq!(m("440304199001011234"), "4403**********1234");
        assert_eq!(m("110105491231002"), "1101*******1002");
        assert_eq!(
            m("１１０１０５１９４９１２３１００２Ｘ"),
            "１１０１**********００２Ｘ"
        );
        assert_eq!(m("11010549123100"), "**************");
        assert_eq!(m("12345678"), "********");
        assert_eq!(m(""), "");
        assert_eq!(
            m("1234567890123456789012345678901234567890"),
            format!("1234{}7890", "*".repeat(32))
        );
        assert_eq!(
            format!("{:?}", mask("440304199001011234")),
            "\"4403**********1234\""
        );
    }

    #[test]
    fn errors_are_stable_and_do_not_echo() {
        let all = [
            KeyError::Length,
            KeyError::Format,
            KeyError::Checksum,
            KeyError::Date,
        ];
        let reasons: Vec<_> = all.iter().map(KeyError::reason).collect();
        assert_eq!(reasons, ["length", "format", "checksum", "date"]);
        let messages: std::collections::HashSet<_> = all.iter().map(KeyError::to_string).collect();
        assert_eq!(messages.len(), all.len());
        for input in [
            "110105194912310021",
            "91350100M000100Y44",
            "11010519491231002",
        ] {
            for subject in [P, E] {
                if let Err(e) = SubjectKey::parse(subject, input) {
                    assert!(!e.to_string().contains(input));
                }
            }
        }
    }

    #[test]
    fn subject_and_doc_type() {
        assert_eq!("person".parse::<Subject>(), Ok(Subject::Person));
        assert_eq!("entity".parse::<Subject>(), Ok(Subject::Entity));
        assert_eq!("Person".parse::<Subject>(), Err(UnknownSubject));
        assert_eq!(Subject::Entity.as_str(), "entity");
        for doc in DocType::ALL {
            assert_eq!(DocType::from_u8(doc.as_u8()), Some(doc));
        }
        assert_eq!(DocType::ALL.map(DocType::as_u8), [1, 2, 3, 4, 5, 6]);
        assert_eq!(DocType::from_u8(0), None);
        assert_eq!(DocType::from_u8(7), None);
        assert_eq!(DocType::Passport.subject(), Subject::Person);
        assert_eq!(DocType::BusinessLicence.subject(), Subject::Entity);
        let p = SubjectKey::parse(P, "11010519491231002X").unwrap();
        assert_eq!(
            (p.subject(), p.doc_type()),
            (Subject::Person, DocType::CitizenId)
        );
        let e = SubjectKey::parse(E, "91350100M000100Y43").unwrap();
        assert_eq!(
            (e.subject(), e.doc_type()),
            (Subject::Entity, DocType::UnifiedCreditCode)
        );
        assert_eq!(e.as_bytes(), b"91350100M000100Y43");
    }

    #[test]
    fn deserialize_validates() {
        use serde::de::value::{Error, StrDeserializer};
        let de = |s| StrDeserializer::<Error>::new(s);
        assert_eq!(
            PersonKey::deserialize(de(" 11010519491231002x"))
                .unwrap()
                .as_str(),
            "11010519491231002X"
        );
        assert_eq!(
            EntityKey::deserialize(de("91350100m000100y43"))
                .unwrap()
                .as_str(),
            "91350100M000100Y43"
        );
        let err = PersonKey::deserialize(de("110105194912310021"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("check character") && !err.contains("110105194912310021"),
            "{err}"
        );
        assert!(EntityKey::deserialize(de("91350100M000100Y44")).is_err());
    }

    // ---- properties ----

    /// Days from 1850-01-01 to TODAY.
    fn birth_dates() -> impl Strategy<Value = Date> {
        let first = EARLIEST_BIRTH.to_julian_day();
        (first..=TODAY.to_julian_day()).prop_map(|d| Date::from_julian_day(d).unwrap())
    }

    fn digits<const N: usize>() -> impl Strategy<Value = String> {
        prop::array::uniform::<_, N>(0u8..10)
            .prop_map(|d| d.iter().map(|&d| char::from(b'0' + d)).collect())
    }

    fn alphabet_char() -> impl Strategy<Value = char> {
        prop::sample::select(ENTITY_ALPHABET.map(char::from).to_vec())
    }

    fn person_parts() -> impl Strategy<Value = (String, Date, u16)> {
        (digits::<6>(), birth_dates(), 0u16..1000)
    }

    fn entity_parts() -> impl Strategy<Value = (char, char, String, String)> {
        (
            alphabet_char(),
            alphabet_char(),
            digits::<6>(),
            prop::collection::vec(alphabet_char(), 8).prop_map(|v| v.into_iter().collect()),
        )
    }

    fn full_width(s: &str) -> String {
        s.chars()
            .map(|c| char::from_u32(c as u32 + 0xFF10 - '0' as u32).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn person_round_trip((region, birth, seq) in person_parts()) {
            let key = PersonKey::from_parts(&region, birth, seq).unwrap();
            prop_assert_eq!(PersonKey::parse_at(key.as_str(), TODAY), Ok(key));
            prop_assert_eq!(PersonKey::parse(key.as_str()), Ok(key));
            prop_assert_eq!(PersonKey::from_normalized_bytes(key.as_bytes()), Ok(key));
            prop_assert_eq!(PersonKey::parse_at(&full_width(key.as_str()), TODAY), Ok(key));
            prop_assert_eq!(PersonKey::parse_at(&key.as_str().to_lowercase(), TODAY), Ok(key));
            prop_assert_eq!(key.birth_date(), birth);
            prop_assert_eq!(key.region(), region.as_str());
            prop_assert_eq!(key.sequence(), seq);
            prop_assert_eq!(key.gender(), if seq % 2 == 1 { Gender::Male } else { Gender::Female });
        }

        #[test]
        fn person_single_substitution_rejected(
            (region, birth, seq) in person_parts(),
            pos in 0usize..18,
            replacement in prop::sample::select(b"0123456789X".to_vec()),
        ) {
            let key = PersonKey::from_parts(&region, birth, seq).unwrap();
            let mut bytes = *key.as_bytes();
            // Only the check character may be X.
            prop_assume!(bytes[pos] != replacement && (pos == 17 || replacement != b'X'));
            bytes[pos] = replacement;
            let got = PersonKey::parse_at(std::str::from_utf8(&bytes).unwrap(), TODAY);
            prop_assert!(matches!(got, Err(KeyError::Checksum | KeyError::Date)), "{:?}", got);
        }

        #[test]
        fn person_adjacent_transposition_rejected((region, birth, seq) in person_parts(), pos in 0usize..16) {
            let key = PersonKey::from_parts(&region, birth, seq).unwrap();
            let mut bytes = *key.as_bytes();
            prop_assume!(bytes[pos] != bytes[pos + 1]);
            bytes.swap(pos, pos + 1);
            let got = PersonKey::parse_at(std::str::from_utf8(&bytes).unwrap(), TODAY);
            prop_assert!(matches!(got, Err(KeyError::Checksum | KeyError::Date)), "{:?}", got);
        }

        #[test]
        fn legacy_round_trip(region in digits::<6>(), day in 0i32..36525, seq in 0u16..1000) {
            let birth = date!(1900 - 01 - 01) + time::Duration::days(i64::from(day));
            prop_assume!(birth.year() < 2000);
            let key = PersonKey::from_parts(&region, birth, seq).unwrap();
            let legacy = format!("{}{}", &key.as_str()[..6], &key.as_str()[8..17]);
            prop_assert_eq!(PersonKey::parse_at(&legacy, TODAY), Ok(key));
            prop_assert_eq!(PersonKey::parse(&format!(" {legacy}\u{3000}")), Ok(key));
        }

        #[test]
        fn entity_round_trip((ra, ot, region, body) in entity_parts()) {
            let key = EntityKey::from_parts(ra, ot, &region, &body).unwrap();
            prop_assert_eq!(EntityKey::parse(key.as_str()), Ok(key));
            prop_assert_eq!(EntityKey::from_normalized_bytes(key.as_bytes()), Ok(key));
            prop_assert_eq!(EntityKey::parse(&key.as_str().to_lowercase()), Ok(key));
            prop_assert_eq!(EntityKey::parse(&full_width(key.as_str())), Ok(key));
            prop_assert_eq!(key.registration_authority(), ra);
            prop_assert_eq!(key.organization_type(), ot);
            prop_assert_eq!(key.region(), region.as_str());
            prop_assert_eq!(&key.organization_code()[..8], body.as_str());
        }

        #[test]
        fn entity_single_substitution_rejected(
            (ra, ot, region, body) in entity_parts(),
            pos in 0usize..18,
            replacement in alphabet_char(),
        ) {
            let key = EntityKey::from_parts(ra, ot, &region, &body).unwrap();
            let mut bytes = *key.as_bytes();
            prop_assume!(char::from(bytes[pos]) != replacement);
            bytes[pos] = replacement as u8;
            let got = EntityKey::parse(std::str::from_utf8(&bytes).unwrap());
            prop_assert!(matches!(got, Err(KeyError::Checksum | KeyError::Format)), "{:?}", got);
        }

        #[test]
        fn mask_hides_the_middle((region, birth, seq) in person_parts()) {
            let key = PersonKey::from_parts(&region, birth, seq).unwrap();
            let s = key.as_str();
            let masked = key.masked().to_string();
            prop_assert_eq!(&masked[..4], &s[..4]);
            prop_assert_eq!(&masked[4..14], "**********");
            prop_assert_eq!(&masked[14..], &s[14..]);
            prop_assert!(!masked.contains(&s[4..14]));
        }

        #[test]
        fn mask_keeps_shape(s in "\\PC{0,40}") {
            let masked = mask(&s).to_string();
            let (chars, masked_chars): (Vec<char>, Vec<char>) = (s.chars().collect(), masked.chars().collect());
            prop_assert_eq!(masked_chars.len(), chars.len());
            let keep = if chars.len() >= 15 { 4 } else { 0 };
            for (i, (&c, &m)) in chars.iter().zip(&masked_chars).enumerate() {
                let shown = i < keep || i >= chars.len() - keep;
                prop_assert_eq!(m, if shown { c } else { '*' });
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            for subject in [P, E] {
                if let Ok(key) = SubjectKey::parse_at(subject, &s, TODAY) {
                    // Whatever was accepted is a fixed point of normalization.
                    prop_assert_eq!(SubjectKey::parse_at(subject, key.as_str(), TODAY), Ok(key));
                }
            }
        }
    }
}
