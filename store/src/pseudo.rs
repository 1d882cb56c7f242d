//! Identity separation at rest: subjects are stored under a keyed
//! pseudonym, and the way back to the real key is an encrypted mapping of
//! its own. The secret never lives in the data directory, so a copy of the
//! directory alone does not reveal whose records it holds.
//!
//! Pseudonym: the first 16 bytes of keyed BLAKE3 over (document type,
//! normalized key). 128 bits keep collisions out of reach at any
//! population size while halving the key overhead of a full hash.
//! Mapping: ChaCha20-Poly1305 with the pseudonym as associated data, so a
//! sealed key cannot be moved to another pseudonym unnoticed; the nonce is
//! derived from the pseudonym, which is safe because a pseudonym is only
//! ever sealed with the same plaintext.

use crate::keys::{DocType, SubjectKey};
use crate::{Error, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use std::path::Path;

/// Length of a subject pseudonym.
pub const PID_LEN: usize = 16;

/// A subject pseudonym, the storage identity of a person or entity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct Pid(pub [u8; PID_LEN]);

impl std::fmt::Debug for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pid({})", hex_lower(&self.0))
    }
}

impl Pid {
    pub fn as_bytes(&self) -> &[u8; PID_LEN] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<Pid> {
        Some(Pid(b.get(..PID_LEN)?.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The 32-byte master secret from which the pseudonym and sealing keys are
/// derived. Kept outside the data directory.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn from_bytes(b: [u8; 32]) -> Secret {
        Secret(b)
    }

    /// Parses 64 hex digits (surrounding white space ignored).
    pub fn from_hex(s: &str) -> Result<Secret> {
        let s = s.trim();
        let bad = || Error::Config("secret must be 64 hexadecimal digits (32 bytes)".into());
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hexs = std::str::from_utf8(chunk).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hexs, 16).map_err(|_| bad())?;
        }
        Ok(Secret(out))
    }

    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// A fresh random secret from the operating system.
    pub fn generate() -> Result<Secret> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| Error::Config(format!("no OS randomness: {e}")))?;
        Ok(Secret(b))
    }

    /// Reads a key file holding the secret as hex.
    pub fn load(path: &Path) -> Result<Secret> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read key file {}: {e}", path.display())))?;
        Secret::from_hex(&text)
    }

    /// Writes a new key file readable by the owner only; refuses to
    /// overwrite an existing one, since that would orphan a store.
    pub fn create_file(path: &Path) -> Result<Secret> {
        use std::io::Write;
        let secret = Secret::generate()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(path)
            .map_err(|e| Error::Config(format!("cannot create key file {}: {e}", path.display())))?;
        writeln!(f, "{}", secret.to_hex())?;
        f.sync_all()?;
        Ok(secret)
    }
}

/// Derives pseudonyms and seals/opens the real keys behind them.
pub struct Pseudonymizer {
    pid_key: [u8; 32],
    /// ring's ChaCha20-Poly1305 (RFC 8439, the same bytes as any other
    /// implementation): its assembly seals a 19-byte key several times
    /// faster than a portable one, and sealing is on the write path of
    /// every new key.
    aead: LessSafeKey,
    check: [u8; 32],
    /// Keys digests of values that ledgers must recognize again without
    /// holding them (a claimed value of a field of few values would be
    /// read back from a plain hash by trying each).
    digest_key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(..)")
    }
}

const SEALED_FORMAT: u8 = 1;

/// The nonce of a pseudonym's mapping: its first 12 bytes (see the module
/// comment for why a derived nonce is safe here).
fn nonce(pid: &Pid) -> Nonce {
    Nonce::assume_unique_for_key(pid.0[..12].try_into().expect("a pseudonym is 16 bytes"))
}

impl Pseudonymizer {
    pub fn new(secret: &Secret) -> Pseudonymizer {
        let pid_key = blake3::derive_key("basedata subject pseudonym v1", &secret.0);
        let seal_key = blake3::derive_key("basedata key mapping seal v1", &secret.0);
        let check = blake3::derive_key("basedata secret check v1", &secret.0);
        let digest_key = blake3::derive_key("basedata value digest v1", &secret.0);
        Pseudonymizer {
            digest_key,
            pid_key,
            aead: LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &seal_key).expect("a 32-byte key")),
            check,
        }
    }

    /// A value stored in the data directory to detect a wrong secret at
    /// open time; it reveals nothing about the secret itself.
    pub fn check_value(&self) -> [u8; 32] {
        *blake3::keyed_hash(&self.check, b"check").as_bytes()
    }

    fn plain(key: &SubjectKey) -> ([u8; 19], usize) {
        let mut buf = [0u8; 19];
        buf[0] = key.doc_type().as_u8();
        let s = key.as_str().as_bytes();
        buf[1..1 + s.len()].copy_from_slice(s);
        (buf, 1 + s.len())
    }

    /// A keyed digest of `parts` (each length-prefixed, so that no two
    /// different lists share an input); deterministic for a secret.
    pub fn digest(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.digest_key);
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    /// The pseudonym of a subject key; deterministic for a secret.
    pub fn pid(&self, key: &SubjectKey) -> Pid {
        let (buf, len) = Self::plain(key);
        let h = blake3::keyed_hash(&self.pid_key, &buf[..len]);
        let mut out = [0u8; PID_LEN];
        out.copy_from_slice(&h.as_bytes()[..PID_LEN]);
        Pid(out)
    }

    /// The encrypted form of `key`, bound to its pseudonym.
    pub fn seal(&self, pid: &Pid, key: &SubjectKey) -> Vec<u8> {
        let (buf, len) = Self::plain(key);
        let mut out = Vec::with_capacity(1 + len + CHACHA20_POLY1305.tag_len());
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&buf[..len]);
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce(pid), Aad::from(&pid.0), &mut out[1..])
            .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Recovers the key sealed under `pid`; fails on a wrong secret or tampering.
    pub fn open(&self, pid: &Pid, sealed: &[u8]) -> Result<SubjectKey> {
        let corrupt = |msg: &str| Error::Corrupt { what: "key mapping", msg: msg.into() };
        let (&fmt, ct) = sealed.split_first().ok_or_else(|| corrupt("empty"))?;
        if fmt != SEALED_FORMAT {
            return Err(Error::Format { what: "key mapping", found: fmt });
        }
        let mut buf = ct.to_vec();
        let plain: &[u8] = self
            .aead
            .open_in_place(nonce(pid), Aad::from(&pid.0), &mut buf)
            .map_err(|_| corrupt("authentication failed"))?;
        let (&doc, body) = plain.split_first().ok_or_else(|| corrupt("empty plaintext"))?;
        let doc = DocType::from_u8(doc).ok_or_else(|| corrupt("unsupported document type"))?;
        SubjectKey::from_normalized_bytes(doc, body).map_err(|_| corrupt("invalid key"))
    }
}

/// Seals payloads that carry real keys under a key of their own derived
/// from the store secret, ChaCha20-Poly1305 with a fresh random nonce per
/// payload and caller-chosen associated data. One type, one key per use
/// ([`Sealing`]): a payload sealed for one use never opens as another's.
///
/// - [`Sealing::ReplicatedLog`] (cluster mode): update batches carry real
///   keys and field values, and the log's servers are not trusted with
///   either; the log subject is the associated data, so a payload cannot be
///   replayed under another partition unnoticed.
/// - [`Sealing::Jobs`]: a batch comparison job's input and answer lines
///   carry ID numbers, and the data directory (its write-ahead log, table
///   files and backups) may hold no real key in the clear; the storage key
///   of a chunk (kind, job, chunk number) is the associated data, so chunks
///   cannot be swapped between jobs, positions or input and output.
/// - [`Sealing::Uses`]: the journal's records of audited uses (see
///   `audit::uses`) name subjects by their keys until the commit writer
///   enters them into the audit trail under pseudonyms.
pub struct Sealer {
    aead: LessSafeKey,
    what: &'static str,
}

/// What a [`Sealer`] seals: each use has its own derived key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    ReplicatedLog,
    Jobs,
    Uses,
}

impl Sealing {
    /// The key derivation context (never change one: sealed data would
    /// no longer open) and the name of the payload in errors.
    fn context(self) -> (&'static str, &'static str) {
        match self {
            Sealing::ReplicatedLog => ("basedata replicated log payload v1", "log payload"),
            Sealing::Jobs => ("basedata batch job lines v1", "job lines"),
            Sealing::Uses => ("basedata journal uses v1", "journal uses"),
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.what)
    }
}

const SEALED_PAYLOAD_FORMAT: u8 = 1;
const PAYLOAD_NONCE_LEN: usize = 12;

impl Sealer {
    pub fn new(secret: &Secret, use_: Sealing) -> Sealer {
        let (context, what) = use_.context();
        let key = blake3::derive_key(context, &secret.0);
        Sealer { aead: LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key")), what }
    }

    /// The replicated log's sealer.
    pub fn log(secret: &Secret) -> Sealer {
        Sealer::new(secret, Sealing::ReplicatedLog)
    }

    /// Bytes a sealed payload adds to its plaintext.
    pub const OVERHEAD: usize = 1 + PAYLOAD_NONCE_LEN + 16;

    /// `format ‖ nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, ad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(Self::OVERHEAD + plain.len());
        self.seal_into(ad, plain, &mut out)?;
        Ok(out)
    }

    /// [`Sealer::seal`], appending to `out` (which may hold a prefix of
    /// the caller's, left as it is).
    pub fn seal_into(&self, ad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut n = [0u8; PAYLOAD_NONCE_LEN];
        getrandom::fill(&mut n).map_err(|e| Error::Config(format!("no OS randomness: {e}")))?;
        out.reserve(Self::OVERHEAD + plain.len());
        out.push(SEALED_PAYLOAD_FORMAT);
        out.extend_from_slice(&n);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(ad), &mut out[start..])
            .map_err(|_| Error::Invalid("payload too large to seal".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// The plaintext of a sealed payload; fails on another secret, another
    /// use, other associated data, or any change to the bytes.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let what = self.what;
        let corrupt = |msg: &str| Error::Corrupt { what, msg: msg.into() };
        let (&fmt, rest) = sealed.split_first().ok_or_else(|| corrupt("empty"))?;
        if fmt != SEALED_PAYLOAD_FORMAT {
            return Err(Error::Format { what, found: fmt });
        }
        if rest.len() < PAYLOAD_NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(corrupt("too short"));
        }
        let (n, ct) = rest.split_at(PAYLOAD_NONCE_LEN);
        let nonce = Nonce::assume_unique_for_key(n.try_into().expect("split at the nonce length"));
        let mut buf = ct.to_vec();
        let len = self
            .aead
            .open_in_place(nonce, Aad::from(ad), &mut buf)
            .map_err(|_| corrupt("authentication failed"))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_payloads_round_trip_and_bind_to_secret_and_subject() {
        let s = Sealer::log(&Secret::from_bytes([3; 32]));
        let a = s.seal(b"p.1", b"hello").unwrap();
        let b = s.seal(b"p.1", b"hello").unwrap();
        assert_ne!(a, b, "every payload has a fresh nonce");
        assert_eq!(s.open(b"p.1", &a).unwrap(), b"hello");
        assert!(s.open(b"p.2", &a).is_err(), "another subject");
        assert!(Sealer::log(&Secret::from_bytes([4; 32])).open(b"p.1", &a).is_err(), "another secret");
        assert!(Sealer::new(&Secret::from_bytes([3; 32]), Sealing::Jobs).open(b"p.1", &a).is_err(), "another use");
        let mut t = a.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(s.open(b"p.1", &t).is_err(), "tampered");
        assert!(s.open(b"p.1", &a[..10]).is_err(), "truncated");
        assert!(matches!(s.open(b"p.1", &[9, 0, 0]), Err(Error::Format { .. })));
        assert_eq!(s.open(b"", &s.seal(b"", b"").unwrap()).unwrap(), b"");
        assert_eq!(a.len(), 5 + Sealer::OVERHEAD);
        let mut prefixed = vec![9u8];
        s.seal_into(b"p.1", b"hello", &mut prefixed).unwrap();
        assert_eq!((prefixed[0], s.open(b"p.1", &prefixed[1..]).unwrap()), (9, b"hello".to_vec()));
    }

    /// The replicated log's key is the one payloads were sealed with
    /// before the sealer served other uses: logged messages still open.
    #[test]
    fn log_payload_key_is_unchanged() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, Key};
        let secret = Secret::from_bytes([5; 32]);
        let portable = ChaCha20Poly1305::new(Key::from_slice(&blake3::derive_key("basedata replicated log payload v1", &secret.0)));
        let n = [7u8; 12];
        let mut old = vec![1u8];
        old.extend_from_slice(&n);
        old.extend(portable.encrypt(chacha20poly1305::Nonce::from_slice(&n), Payload { msg: b"lines", aad: b"p.3" }).unwrap());
        assert_eq!(Sealer::log(&secret).open(b"p.3", &old).unwrap(), b"lines");
    }

    use super::*;
    use crate::keys::Subject;

    fn person() -> SubjectKey {
        SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap()
    }

    #[test]
    fn pid_is_deterministic_and_secret_dependent() {
        let a = Pseudonymizer::new(&Secret::from_bytes([1; 32]));
        let b = Pseudonymizer::new(&Secret::from_bytes([2; 32]));
        assert_eq!(a.pid(&person()), a.pid(&person()));
        assert_ne!(a.pid(&person()), b.pid(&person()));
        assert_ne!(a.check_value(), b.check_value());
    }

    /// Mappings sealed before the switch to ring's implementation must
    /// still open, and new ones must be the same bytes: both are RFC 8439.
    #[test]
    fn sealing_matches_the_portable_implementation() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, Key};
        let secret = Secret::from_bytes([7; 32]);
        let p = Pseudonymizer::new(&secret);
        let portable = ChaCha20Poly1305::new(Key::from_slice(&blake3::derive_key("basedata key mapping seal v1", &secret.0)));
        let keys = [
            person(),
            SubjectKey::parse(Subject::Person, "110105491231002").unwrap(),
            SubjectKey::parse(Subject::Entity, "91350100M000100Y43").unwrap(),
        ];
        for key in keys {
            let pid = p.pid(&key);
            let (buf, len) = Pseudonymizer::plain(&key);
            let nonce = chacha20poly1305::Nonce::from_slice(&pid.0[..12]);
            let mut old = vec![SEALED_FORMAT];
            old.extend(portable.encrypt(nonce, Payload { msg: &buf[..len], aad: &pid.0 }).unwrap());
            assert_eq!(p.seal(&pid, &key), old);
            assert_eq!(p.open(&pid, &old).unwrap(), key);
        }
    }

    #[test]
    fn seal_round_trips_and_binds_to_pid() {
        let p = Pseudonymizer::new(&Secret::from_bytes([3; 32]));
        let key = person();
        let pid = p.pid(&key);
        let sealed = p.seal(&pid, &key);
        assert!(!sealed.windows(18).any(|w| w == key.as_str().as_bytes()));
        assert_eq!(p.open(&pid, &sealed).unwrap(), key);
        let other = Pid([9; 16]);
        assert!(p.open(&other, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[5] ^= 1;
        assert!(p.open(&pid, &tampered).is_err());
        let wrong = Pseudonymizer::new(&Secret::from_bytes([4; 32]));
        assert!(wrong.open(&pid, &sealed).is_err());
    }

    /// The pseudonyms of citizen IDs and credit codes are what stores
    /// written before other document types existed hold: pinned here.
    #[test]
    fn existing_pseudonyms_are_unchanged() {
        let p = Pseudonymizer::new(&Secret::from_bytes([5; 32]));
        let entity = SubjectKey::parse(Subject::Entity, "91350100M000100Y43").unwrap();
        assert_eq!(p.pid(&person()).to_hex(), "ac999f44faf9e7aa0450bd02493619a5");
        assert_eq!(p.pid(&entity).to_hex(), "fc565ddb05edfb722886ee8cafd263c7");
    }

    #[test]
    fn other_documents_have_their_own_pseudonyms() {
        use crate::keys::DocType;
        let p = Pseudonymizer::new(&Secret::from_bytes([6; 32]));
        let passport = SubjectKey::parse_doc(DocType::Passport, "E12345678").unwrap();
        let permit = SubjectKey::parse_doc(DocType::HkMacaoTaiwanPermit, "12345678").unwrap();
        let taiwan_as_passport = SubjectKey::parse_doc(DocType::Passport, "12345678").unwrap();
        let card = SubjectKey::parse_doc(DocType::ForeignPermanentResidence, "USA310085012340").unwrap();
        let licence = SubjectKey::parse_doc(DocType::BusinessLicence, "440300100001230").or_else(|_| {
            crate::keys::DocKey::complete(DocType::BusinessLicence, "44030010000123").map(SubjectKey::Document)
        }).unwrap();
        let keys = [person(), passport, permit, taiwan_as_passport, card, licence];
        let pids: std::collections::HashSet<Pid> = keys.iter().map(|k| p.pid(k)).collect();
        // The same characters under two document types are two subjects.
        assert_eq!(pids.len(), keys.len());
        for key in keys {
            let pid = p.pid(&key);
            let opened = p.open(&pid, &p.seal(&pid, &key)).unwrap();
            assert_eq!((opened, opened.doc_type()), (key, key.doc_type()));
        }
    }

    #[test]
    fn secret_hex_round_trip_and_errors() {
        let s = Secret::from_bytes([0xab; 32]);
        assert_eq!(Secret::from_hex(&format!(" {}\n", s.to_hex())).unwrap().0, s.0);
        assert!(Secret::from_hex("abc").is_err());
        assert!(Secret::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Secret::create_file(&path).unwrap();
        assert_eq!(Secret::load(&path).unwrap().0, s.0);
        assert!(Secret::create_file(&path).is_err());
    }
}
