//! The last rejected provider update lines of each dataset, kept in the
//! store so that the provider's data stewards still see, after a restart,
//! what their systems sent wrong and why, with the stable code of each
//! line. Keys are stored masked only: a rejected line's key may not even
//! be valid, and a steward needs no more than its shape to find the line.
//!
//! Layout (`gov` family): `j/<dataset>\0<n:u64 BE>` -> [`RejectedLine`]
//! behind the store's format marker, `n` counting a dataset's lines from 1
//! in the order they were kept; past [`KEPT`] the oldest are deleted in the
//! batch that adds new ones.

use crate::caller::{Caller, Role};
use crate::error::{Error, Result};
use crate::service::Queries;
use basedata_store::codec::{decode, encode};
use basedata_store::engine::{prefix_end, Cf, Engine, WriteBatch};

/// Lines kept per dataset; older ones are deleted.
pub const KEPT: usize = 50;

/// Longest message kept; the rest is cut (messages come from the
/// validation, never quote values, and are short).
const MAX_MESSAGE_CHARS: usize = 500;

/// One rejected line.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct RejectedLine {
    /// Unix microseconds of the request.
    pub at: i64,
    /// Line number within its request.
    pub line: u64,
    /// The key, masked (`4403**********1234`), if the line had one.
    pub key: Option<String>,
    /// Stable error code (`invalid_value`, `forbidden`, ...).
    pub code: String,
    pub message: String,
    /// The department that sent it: of a dataset of several providers,
    /// the part's provider.
    pub provider: String,
}

impl RejectedLine {
    /// A line to keep, its key (as sent) masked here, so that no full key
    /// can reach the store by this way.
    pub fn new(at: i64, line: u64, key: Option<&str>, code: &str, message: &str, provider: &str) -> RejectedLine {
        RejectedLine {
            at,
            line,
            key: key.map(|k| basedata_store::keys::mask(k).to_string()),
            code: code.to_owned(),
            message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
            provider: provider.to_owned(),
        }
    }
}

const WHAT: &str = "rejected update line";

fn prefix(dataset: &str) -> Vec<u8> {
    let mut k = b"j/".to_vec();
    k.extend_from_slice(dataset.as_bytes());
    k.push(0);
    k
}

/// The stored keys of `dataset`'s lines, oldest first.
fn keys(engine: &dyn Engine, dataset: &str) -> Result<Vec<Vec<u8>>> {
    let p = prefix(dataset);
    let end = prefix_end(&p);
    let mut out = Vec::new();
    for item in engine.scan(Cf::Gov, &p, end.as_deref(), false)? {
        out.push(item?.0.to_vec());
    }
    Ok(out)
}

/// The writes that add `lines` (in request order) to `dataset`'s and
/// delete the oldest beyond [`KEPT`]. Callers serialize calls per store,
/// since each numbers its lines after the last one stored.
pub fn append(engine: &dyn Engine, dataset: &str, lines: &[RejectedLine]) -> Result<WriteBatch> {
    let mut batch = WriteBatch::new();
    // Of more than are kept, only the last ones would survive.
    let lines = &lines[lines.len().saturating_sub(KEPT)..];
    if lines.is_empty() {
        return Ok(batch);
    }
    let stored = keys(engine, dataset)?;
    let p = prefix(dataset);
    let last = stored.last().and_then(|k| k.get(p.len()..)).and_then(|n| n.try_into().ok()).map_or(0, u64::from_be_bytes);
    for (i, line) in lines.iter().enumerate() {
        let mut k = p.clone();
        k.extend_from_slice(&(last + 1 + i as u64).to_be_bytes());
        batch.put(Cf::Gov, k, encode(line));
    }
    let surplus = (stored.len() + lines.len()).saturating_sub(KEPT);
    for k in stored.into_iter().take(surplus) {
        batch.delete(Cf::Gov, k);
    }
    Ok(batch)
}

/// `dataset`'s kept lines, newest first.
pub fn recent(engine: &dyn Engine, dataset: &str) -> Result<Vec<RejectedLine>> {
    let p = prefix(dataset);
    let end = prefix_end(&p);
    let mut out = Vec::new();
    for item in engine.scan(Cf::Gov, &p, end.as_deref(), false)? {
        out.push(decode(WHAT, &item?.1)?);
    }
    out.reverse();
    Ok(out)
}

impl Queries {
    /// Keeps the rejected lines of one request to `dataset` (after the
    /// request's own audit entry, which counts them), durably.
    pub async fn keep_rejected(&self, dataset: &str, lines: Vec<RejectedLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        // Numbering reads the last stored line: one request at a time.
        // The lock is let go once the lines are durable, even if the
        // request is given up meanwhile: the next numbering reads them.
        let guard = self.rejected_lock.clone().lock_owned().await;
        let batch = append(&**self.store.engine(), dataset, &lines)?;
        self.record_then(Vec::new(), batch, move || drop(guard)).await
    }

    /// The kept rejected lines of `dataset`, newest first: for its
    /// providers — the steward sees every line, a provider of a part the
    /// lines it sent.
    pub fn rejected_lines(&self, caller: &Caller, dataset: &str) -> Result<Vec<RejectedLine>> {
        let ds = self.catalog.dataset(dataset).ok_or_else(|| Error::UnknownDataset(dataset.to_owned()))?;
        if !(caller.department.has(Role::Provider) && ds.is_provided_by(&caller.department.id)) {
            return Err(Error::Forbidden(format!("only the providers of {dataset} see its rejected lines")));
        }
        let mut lines = recent(&**self.store.engine(), dataset)?;
        if ds.provider != caller.department.id {
            lines.retain(|l| l.provider == caller.department.id);
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::codec::FORMAT_V1;
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::Durability;

    fn line(n: u64, key: Option<&str>) -> RejectedLine {
        RejectedLine::new(1_000 + n as i64, n, key, "invalid_value", "field name: expected a string", "gongan")
    }

    fn keep(engine: &MemEngine, dataset: &str, lines: &[RejectedLine]) {
        engine.write(append(engine, dataset, lines).unwrap(), Durability::Sync).unwrap();
    }

    #[test]
    fn the_newest_lines_are_kept_per_dataset() {
        let engine = MemEngine::new();
        keep(&engine, "hukou", &(1..=30).map(|n| line(n, None)).collect::<Vec<_>>());
        keep(&engine, "hukou2", &[line(1, None)]);
        keep(&engine, "hukou", &(31..=55).map(|n| line(n, None)).collect::<Vec<_>>());
        let kept = recent(&engine, "hukou").unwrap();
        assert_eq!(kept.len(), KEPT);
        assert_eq!((kept[0].line, kept[KEPT - 1].line), (55, 6), "newest first, the oldest dropped");
        // Stored as many as are shown: the oldest are deleted, not hidden.
        assert_eq!(keys(&engine, "hukou").unwrap().len(), KEPT);
        // A dataset whose name begins with another's keeps its own.
        assert_eq!(recent(&engine, "hukou2").unwrap(), vec![line(1, None)]);
        assert!(recent(&engine, "death").unwrap().is_empty());
        // One request of more lines than are kept keeps its last ones.
        keep(&engine, "marriage", &(1..=120).map(|n| line(n, None)).collect::<Vec<_>>());
        let kept = recent(&engine, "marriage").unwrap();
        assert_eq!((kept.len(), kept[0].line, kept[KEPT - 1].line), (KEPT, 120, 71));
        keep(&engine, "marriage", &[]);
        assert_eq!(recent(&engine, "marriage").unwrap().len(), KEPT);
    }

    #[test]
    fn keys_are_stored_masked_only() {
        let engine = MemEngine::new();
        let key = "11010519491231002X";
        keep(&engine, "hukou", &[line(1, Some(key)), line(2, Some("not a key at all"))]);
        let kept = recent(&engine, "hukou").unwrap();
        assert_eq!(kept[1].key.as_deref(), Some(basedata_store::keys::mask(key).to_string().as_str()));
        assert_ne!(kept[1].key.as_deref(), Some(key));
        let p = prefix("hukou");
        let end = prefix_end(&p);
        for item in engine.scan(Cf::Gov, &p, end.as_deref(), false).unwrap() {
            let (_, v) = item.unwrap();
            assert_eq!(v[0], FORMAT_V1);
            assert!(!v.windows(key.len()).any(|w| w == key.as_bytes()), "a full key is stored");
            assert!(!v.windows(8).any(|w| w == b"a key at"), "an unmasked key is stored");
        }
    }

    #[tokio::test]
    async fn the_steward_sees_every_part_and_another_provider_its_own() {
        use std::sync::Arc;
        let q = crate::service::testing::queries(Arc::new(MemEngine::new()));
        let sent = |by: &str, n: u64| RejectedLine::new(10, n, None, "forbidden", "outside the provider's area", by);
        // Two parts' requests to the dataset of several providers.
        q.keep_rejected("residence_permit", vec![sent("yuexiu", 1), sent("yuexiu", 2)]).await.unwrap();
        q.keep_rejected("residence_permit", vec![sent("tianhe", 7)]).await.unwrap();
        q.keep_rejected("residence_permit", Vec::new()).await.unwrap();
        let caller = |id: &str, role: Role| Caller::declared(Arc::new(crate::Department::new(id, vec![role])), None);
        let lines = |id: &str, role: Role| q.rejected_lines(&caller(id, role), "residence_permit");
        let seen = |id: &str| lines(id, Role::Provider).unwrap().iter().map(|l| (l.provider.clone(), l.line)).collect::<Vec<_>>();
        let (yuexiu, tianhe) = ("yuexiu".to_owned(), "tianhe".to_owned());
        // The steward (laisui) sees every part's lines, newest first.
        assert_eq!(seen("laisui"), vec![(tianhe.clone(), 7), (yuexiu.clone(), 2), (yuexiu.clone(), 1)]);
        assert_eq!(seen("yuexiu"), vec![(yuexiu.clone(), 2), (yuexiu, 1)]);
        assert_eq!(seen("tianhe"), vec![(tianhe, 7)]);
        // Nobody else: the provider of other datasets, a consumer.
        assert!(matches!(lines("shichang", Role::Provider), Err(Error::Forbidden(_))));
        assert!(matches!(lines("laisui", Role::Consumer), Err(Error::Forbidden(_))));
        assert!(matches!(q.rejected_lines(&caller("laisui", Role::Provider), "nothing"), Err(Error::UnknownDataset(_))));
    }

    #[tokio::test]
    async fn lines_kept_by_a_request_given_up_are_not_numbered_over() {
        use std::sync::Arc;
        use std::time::Duration;
        let engine = Arc::new(MemEngine::new());
        let q = crate::service::testing::queries(engine.clone());
        let sent = |n: u64| RejectedLine::new(10, n, None, "forbidden", "outside the provider's area", "yuexiu");
        engine.delay_writes(Duration::from_millis(300));
        // Given up while its lines are written; the next request numbers
        // its line after them, not over them.
        let first = q.keep_rejected("residence_permit", vec![sent(1), sent(2)]);
        assert!(tokio::time::timeout(Duration::from_millis(20), first).await.is_err());
        q.keep_rejected("residence_permit", vec![sent(3)]).await.unwrap();
        let kept = recent(&*engine, "residence_permit").unwrap();
        assert_eq!(kept.iter().map(|l| l.line).collect::<Vec<_>>(), vec![3, 2, 1]);
    }

    #[test]
    fn an_unknown_format_is_an_error_not_a_misread() {
        let engine = MemEngine::new();
        let mut b = WriteBatch::new();
        let mut k = prefix("hukou");
        k.extend_from_slice(&1u64.to_be_bytes());
        let mut v = encode(&line(1, None));
        v[0] = 9;
        b.put(Cf::Gov, k, v);
        engine.write(b, Durability::Sync).unwrap();
        assert!(recent(&engine, "hukou").is_err());
    }
}
