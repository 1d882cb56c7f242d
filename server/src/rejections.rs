//! The last rejected provider update lines of each dataset, kept in memory
//! (a restart forgets them) so that the provider's data stewards can see
//! in the console what their systems sent wrong and why, with the stable
//! code of each line. Keys are kept masked only.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Lines kept per dataset; older ones drop out.
pub const KEPT: usize = 50;

/// One rejected line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Unix microseconds of the request.
    pub at: i64,
    /// Line number within its request.
    pub line: u64,
    /// The key, masked (`4403**********1234`), if the line had one.
    pub key: Option<String>,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct RecentRejections {
    by_dataset: Mutex<HashMap<String, VecDeque<Rejected>>>,
}

impl RecentRejections {
    /// Records the rejected lines of one request to `dataset`.
    pub fn record(&self, dataset: &str, lines: impl IntoIterator<Item = Rejected>) {
        let mut lines = lines.into_iter().peekable();
        if lines.peek().is_none() {
            return;
        }
        let mut map = self.by_dataset.lock().unwrap();
        let q = map.entry(dataset.to_owned()).or_default();
        for r in lines {
            if q.len() == KEPT {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    /// The kept lines of `dataset`, newest first.
    pub fn recent(&self, dataset: &str) -> Vec<Rejected> {
        self.by_dataset.lock().unwrap().get(dataset).map(|q| q.iter().rev().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: u64) -> Rejected {
        Rejected { at: 0, line, key: None, code: "invalid_value".into(), message: String::new() }
    }

    #[test]
    fn keeps_the_newest_lines_per_dataset() {
        let rr = RecentRejections::default();
        rr.record("hukou", (0..KEPT as u64 + 5).map(r));
        rr.record("marriage", [r(1)]);
        let h = rr.recent("hukou");
        assert_eq!(h.len(), KEPT);
        assert_eq!(h[0].line, KEPT as u64 + 4);
        assert_eq!(h[KEPT - 1].line, 5);
        assert_eq!(rr.recent("marriage").len(), 1);
        assert!(rr.recent("death").is_empty());
    }
}
