//! Client certificate subjects, which identify departments over mutual
//! TLS: a configured `cert_subject` and a verified certificate's subject,
//! each reduced to a comparable form.
//!
//! Matching rule: a certificate's subject and a configured `cert_subject`
//! are both reduced to the set of their (attribute type, value) pairs;
//! they match when the sets are equal. Attribute names are case-blind
//! (`CN`, `cn` and `2.5.4.3` are one type), order does not matter, values
//! compare character for character, and a certificate with any attribute
//! the configuration does not list (or the other way round) does not
//! match. No two departments may configure the same subject, so a
//! certificate maps to at most one department.

use anyhow::{anyhow, bail};
use std::fmt;
use std::str::FromStr;
use x509_cert::der::asn1::Any;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode, Tag, Tagged};
use x509_cert::name::RdnSequence;

/// A distinguished name reduced to what identifies it: its (attribute
/// type, value) pairs, sorted, values decoded to text (a value of a type
/// that is not a string keeps its RFC 4514 form `#` + hex DER).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertSubject(Vec<(ObjectIdentifier, String)>);

impl CertSubject {
    /// Parses a configured subject in RFC 4514 form, e.g.
    /// `CN=gongan,O=市公安局` (as `openssl x509 -noout -subject -nameopt
    /// RFC2253,-esc_msb` prints it; `\` escapes `,`, `+` and `\`).
    pub fn parse(s: &str) -> anyhow::Result<CertSubject> {
        let name = RdnSequence::from_str(s)
            .map_err(|e| anyhow!("{s:?} is not a distinguished name like \"CN=gongan,O=市公安局\" ({e})"))?;
        let subject = CertSubject::from_name(&name);
        if subject.0.is_empty() {
            bail!("the subject is empty");
        }
        for (oid, v) in &subject.0 {
            // "CN=a, O=b" would otherwise silently never match.
            if v.is_empty() || v.trim() != v {
                bail!("{s:?}: the value of {} is empty or has spaces around it", attribute_name(oid));
            }
        }
        Ok(subject)
    }

    /// The subject of a DER certificate; `None` when it cannot be read or
    /// is empty (such a certificate identifies no department).
    pub fn from_cert_der(der: &[u8]) -> Option<CertSubject> {
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let subject = CertSubject::from_name(&cert.tbs_certificate.subject);
        (!subject.0.is_empty()).then_some(subject)
    }

    fn from_name(name: &RdnSequence) -> CertSubject {
        let mut pairs: Vec<(ObjectIdentifier, String)> =
            name.0.iter().flat_map(|rdn| rdn.0.iter()).map(|atv| (atv.oid, text(&atv.value))).collect();
        pairs.sort();
        CertSubject(pairs)
    }
}

/// An attribute value as text: the string types decoded, anything else as
/// `#` + hex of its DER encoding (what RFC 4514 writes for such values).
fn text(v: &Any) -> String {
    let bytes = v.value();
    let decoded = match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::NumericString
        | Tag::TeletexString => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Tag::BmpString => {
            let units = bytes.chunks_exact(2);
            let whole = units.remainder().is_empty();
            char::decode_utf16(units.map(|c| u16::from_be_bytes([c[0], c[1]])))
                .collect::<Result<String, _>>()
                .ok()
                .filter(|_| whole)
        }
        _ => None,
    };
    decoded.unwrap_or_else(|| format!("#{}", hex::encode(v.to_der().unwrap_or_default())))
}

fn attribute_name(oid: &ObjectIdentifier) -> String {
    const NAMES: [(&str, &str); 11] = [
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "serialNumber"),
        ("2.5.4.6", "C"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.9", "street"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("0.9.2342.19200300.100.1.1", "UID"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("1.2.840.113549.1.9.1", "emailAddress"),
    ];
    let dotted = oid.to_string();
    NAMES.iter().find(|(o, _)| *o == dotted).map(|(_, n)| (*n).to_owned()).unwrap_or(dotted)
}

impl fmt::Display for CertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (oid, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}=", attribute_name(oid))?;
            for c in value.chars() {
                if matches!(c, ',' | '+' | '\\' | '"' | ';' | '<' | '>') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}
