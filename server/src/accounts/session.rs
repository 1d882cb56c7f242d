//! Console sessions: random 256-bit ids in an HttpOnly, SameSite=Strict
//! cookie, held server-side with an idle expiry, each with its own CSRF
//! token that every state-changing form must carry back.

use super::staff::Staff;
use basedata_store::SubjectKey;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const COOKIE: &str = "bd_session";
/// Name of the cookie that carries the sign-in form's CSRF token before
/// there is a session (a double-submit token: a forged cross-site form
/// cannot read or set it).
pub const PRE_COOKIE: &str = "bd_signin";

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random source");
    hex::encode(b)
}

/// Equality of two tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Debug)]
struct Entry {
    staff: Arc<Staff>,
    csrf: String,
    last_used: Instant,
    /// Subjects this session looked up, by a random handle that its pages
    /// carry instead of the number (newest last, at most
    /// [`REMEMBERED_SUBJECTS`]).
    subjects: VecDeque<(String, SubjectKey)>,
}

/// Subjects a session remembers for forms that act on a lookup's result
/// (a dispute): a clerk works on a few people at a time.
pub const REMEMBERED_SUBJECTS: usize = 16;

/// A live session as a request sees it.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub staff: Arc<Staff>,
    pub csrf: String,
}

/// Every live session of this process (a restart signs everyone out).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    idle: Duration,
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions { map: Mutex::default(), idle }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// A new session for `staff`.
    pub fn create(&self, staff: Arc<Staff>) -> Session {
        let now = Instant::now();
        let id = random_token();
        let csrf = random_token();
        let mut map = self.map.lock().unwrap();
        // Expired sessions are dropped here, so the map stays as small as
        // the number of people working.
        map.retain(|_, e| now.duration_since(e.last_used) < self.idle);
        map.insert(id.clone(), Entry { staff: staff.clone(), csrf: csrf.clone(), last_used: now, subjects: VecDeque::new() });
        Session { id, staff, csrf }
    }

    /// The live session with `id`, marked used now; an idle or disabled
    /// one is ended instead.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let e = map.get_mut(id)?;
        if now.duration_since(e.last_used) >= self.idle || e.staff.disabled {
            map.remove(id);
            return None;
        }
        e.last_used = now;
        Some(Session { id: id.to_owned(), staff: e.staff.clone(), csrf: e.csrf.clone() })
    }

    /// A handle for `key` that session `id`'s later forms may carry in
    /// its place, so that the number itself never leaves the server in a
    /// page or a URL; `None` if the session has ended. The same key keeps
    /// its handle.
    pub fn remember_subject(&self, id: &str, key: SubjectKey) -> Option<String> {
        let mut map = self.map.lock().unwrap();
        let e = map.get_mut(id)?;
        if let Some(at) = e.subjects.iter().position(|(_, k)| *k == key) {
            let kept = e.subjects.remove(at)?;
            let handle = kept.0.clone();
            e.subjects.push_back(kept);
            return Some(handle);
        }
        if e.subjects.len() == REMEMBERED_SUBJECTS {
            e.subjects.pop_front();
        }
        let handle = random_token();
        e.subjects.push_back((handle.clone(), key));
        Some(handle)
    }

    /// The subject session `id` remembered under `handle`.
    pub fn subject(&self, id: &str, handle: &str) -> Option<SubjectKey> {
        let map = self.map.lock().unwrap();
        map.get(id)?.subjects.iter().find(|(h, _)| same_token(h, handle)).map(|(_, k)| *k)
    }

    /// Live sessions of staff member `staff_id`.
    pub fn count_for(&self, staff_id: &str) -> usize {
        let now = Instant::now();
        self.map.lock().unwrap().values().filter(|e| e.staff.id == staff_id && now.duration_since(e.last_used) < self.idle).count()
    }

    /// Ends every session of staff member `staff_id`; returns how many.
    pub fn end_for(&self, staff_id: &str) -> usize {
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|_, e| e.staff.id != staff_id);
        before - map.len()
    }

    pub fn end(&self, id: &str) {
        self.map.lock().unwrap().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_exactly() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..63]));
    }

    #[test]
    fn a_session_remembers_the_subjects_it_looked_up_by_handle() {
        let sessions = Sessions::new(Duration::from_secs(600));
        let staff = crate::accounts::staff::test_book("correct horse", crate::config::ConsoleConfig::default()).get("clerk1").unwrap();
        let (s, other) = (sessions.create(staff.clone()), sessions.create(staff));
        let g = basedata_gen::GenConfig { persons: 20, entities: 0, seed: 3 };
        let key = |i: u32| SubjectKey::from(basedata_gen::person_key(&g, u64::from(i)));
        let h = sessions.remember_subject(&s.id, key(0)).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(sessions.subject(&s.id, &h), Some(key(0)));
        // Another session cannot use the handle; the same key keeps it.
        assert_eq!(sessions.subject(&other.id, &h), None);
        assert_eq!(sessions.remember_subject(&s.id, key(0)), Some(h.clone()));
        // The oldest fall out past the bound; an ended session has none.
        for i in 1..=REMEMBERED_SUBJECTS as u32 {
            sessions.remember_subject(&s.id, key(i)).unwrap();
        }
        assert_eq!(sessions.subject(&s.id, &h), None);
        let last = sessions.remember_subject(&s.id, key(1)).unwrap();
        sessions.end(&s.id);
        assert_eq!(sessions.subject(&s.id, &last), None);
        assert_eq!(sessions.remember_subject(&s.id, key(1)), None);
    }
}
