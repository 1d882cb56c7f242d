//! Versioned encoding of every stored value: one format-marker byte, then
//! bincode 2. Readers dispatch on the marker so that data written by this
//! release still opens after the format moves on; an unknown marker is a
//! clear error, never a misread.

use crate::{Error, Result};

/// The current stored format of every value type.
pub const FORMAT_V1: u8 = 1;

/// The most memory, in bytes, that decoding one stored value may claim.
/// bincode sizes a container from the length written before it; without
/// a bound, a damaged length (a flipped bit on disk) makes it allocate
/// terabytes, and the process aborts instead of reporting a corrupt value.
/// The largest values kept (audit chunks, shipped audit batches) stay far
/// below this.
pub(crate) const DECODE_LIMIT: usize = 1 << 30;

/// The format of every stored value: bincode's standard configuration
/// (little-endian varints). The limit binds decoding only, not the bytes.
pub(crate) fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes `value` behind the current format marker.
pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_V1);
    encode_into(&mut out, value);
    out
}

/// Appends the bincode of `value`, without a marker: for writers that
/// build a stored value from parts (see `record`).
pub(crate) fn encode_into<T: bincode::Encode>(out: &mut Vec<u8>, value: T) {
    // Writing into a Vec cannot fail; an Err here would be a bincode bug.
    bincode::encode_into_std_write(value, out, config()).expect("encode into Vec");
}

/// Encodes `value` behind format marker `marker`: for a value type whose
/// layout moved on past [`FORMAT_V1`] (its reader dispatches with
/// [`marked_body`]).
pub fn encode_marked<T: bincode::Encode>(marker: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(marker);
    encode_into(&mut out, value);
    out
}

/// The format marker of a stored value and a decoder of its body.
pub fn marked_body<'a>(what: &'static str, bytes: &'a [u8]) -> Result<(u8, Body<'a>)> {
    match bytes.split_first() {
        Some((&m, body)) => Ok((m, Body { what, bytes: body })),
        None => Err(Error::Corrupt { what, msg: "empty value".into() }),
    }
}

/// The bincode body of a stored value behind its marker.
pub struct Body<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl Body<'_> {
    pub fn decode<T: bincode::Decode<()>>(&self) -> Result<T> {
        bincode::decode_from_slice(self.bytes, config())
            .map(|(v, _)| v)
            .map_err(|e| Error::Corrupt { what: self.what, msg: e.to_string() })
    }
}

/// Decodes a value written by [`encode`]; `what` names the value kind in errors.
pub fn decode<T: bincode::Decode<()>>(what: &'static str, bytes: &[u8]) -> Result<T> {
    bincode::decode_from_slice(v1_body(what, bytes)?, config())
        .map(|(v, _)| v)
        .map_err(|e| Error::Corrupt { what, msg: e.to_string() })
}

/// The bincode bytes behind the format marker of a value written by
/// [`encode`], for readers that decode it piece by piece.
pub(crate) fn v1_body<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => Ok(body),
        Some((&other, _)) => Err(Error::Format { what, found: other }),
        None => Err(Error::Corrupt { what, msg: "empty value".into() }),
    }
}

/// Every value under `prefix` of family `cf`, each written by [`encode`],
/// in key order; `what` names the value kind in errors.
pub fn decode_all<T: bincode::Decode<()>>(engine: &dyn crate::Engine, cf: crate::Cf, prefix: &[u8], what: &'static str) -> Result<Vec<T>> {
    let end = crate::engine::prefix_end(prefix);
    let mut out = Vec::new();
    for item in engine.scan(cf, prefix, end.as_deref(), false)? {
        let (_, v) = item?;
        out.push(decode::<T>(what, &v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(bincode::Encode, bincode::Decode, Debug, PartialEq)]
    struct Sample {
        a: u64,
        b: String,
    }

    #[test]
    fn round_trip_carries_marker() {
        let s = Sample { a: 7, b: "x".into() };
        let bytes = encode(&s);
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<Sample>("sample", &bytes).unwrap(), s);
    }

    #[test]
    fn unknown_marker_and_garbage_are_errors() {
        let mut bytes = encode(&Sample { a: 1, b: "y".into() });
        bytes[0] = 99;
        assert!(matches!(decode::<Sample>("sample", &bytes), Err(Error::Format { found: 99, .. })));
        assert!(matches!(decode::<Sample>("sample", &[]), Err(Error::Corrupt { .. })));
        assert!(decode::<Sample>("sample", &[FORMAT_V1, 0xff]).is_err());
    }

    #[derive(bincode::Encode, bincode::Decode, Debug, PartialEq)]
    struct Nested {
        bytes: Vec<u8>,
        items: Vec<Sample>,
    }

    /// A length of 2^40 in front of a container, as a damaged value
    /// would have: an error naming the value, never an allocation of
    /// terabytes (which aborts the process).
    #[test]
    fn a_damaged_length_is_a_corrupt_value_not_an_allocation() {
        let good = Nested { bytes: vec![1, 2, 3], items: vec![Sample { a: 5, b: "z".into() }] };
        let bytes = encode(&good);
        assert_eq!(decode::<Nested>("nested", &bytes).unwrap(), good);
        // bincode's varint: 0xfd, then the length as a little-endian u64.
        let huge = |prefix: &[u8]| {
            let mut v = vec![FORMAT_V1];
            v.extend_from_slice(prefix);
            v.push(0xfd);
            v.extend_from_slice(&(1u64 << 40).to_le_bytes());
            v.extend_from_slice(&[0; 16]);
            v
        };
        // The byte vector's length, then the items' length (after an empty byte vector).
        for damaged in [huge(&[]), huge(&[0])] {
            match decode::<Nested>("nested", &damaged) {
                Err(Error::Corrupt { what: "nested", .. }) => {}
                other => panic!("expected a corrupt value, got {other:?}"),
            }
        }
        // A string's length too.
        let mut s = vec![FORMAT_V1, 7, 0xfd];
        s.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(decode::<Sample>("sample", &s), Err(Error::Corrupt { .. })));
    }
}
