//! Staff accounts and their sessions, for the console: who may sign in
//! (`staff`), and who is signed in now (`session`). Kept apart from the
//! console's pages so that the shared state (`http::AppState`) holds them
//! without depending on the pages.

pub mod session;
pub mod staff;

use session::{Session, Sessions};
use staff::StaffBook;
use std::time::Duration;

/// Staff accounts and live sessions of one server process.
#[derive(Debug)]
pub struct Accounts {
    pub staff: StaffBook,
    pub sessions: Sessions,
    /// Held from checking a change to an account until it is committed
    /// and taken in, so that two administrators cannot both add one id
    /// (owned guards: a commit keeps its guard even when its request is
    /// given up, see `console::admin`).
    pub changing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Accounts {
    pub fn new(staff: StaffBook) -> Accounts {
        let idle = Duration::from_secs(staff.rules().session_idle_minutes.max(1) * 60);
        Accounts { staff, sessions: Sessions::new(idle), changing: Default::default() }
    }

    /// The live session `id`, if its account is still as it was when the
    /// person signed in: disabling an account or resetting its password
    /// ends its sessions at once.
    pub fn session(&self, id: &str) -> Option<Session> {
        let s = self.sessions.get(id)?;
        if self.staff.is_current(&s.staff) {
            Some(s)
        } else {
            self.sessions.end(id);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConsoleConfig;

    fn book() -> StaffBook {
        staff::test_book("pw-12345678", ConsoleConfig::default())
    }

    #[test]
    fn an_idle_session_ends_and_a_used_one_lives_on() {
        let b = book();
        let sessions = Sessions::new(Duration::from_millis(300));
        let s = sessions.create(b.get("clerk1").unwrap().clone());
        // Used within the idle time, again and again: still alive.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(150));
            assert!(sessions.get(&s.id).is_some());
        }
        std::thread::sleep(Duration::from_millis(350));
        assert!(sessions.get(&s.id).is_none(), "an idle session was still valid");
        // Ended sessions stay ended; unknown ids are nothing.
        assert!(sessions.get(&s.id).is_none());
        assert!(sessions.get("0".repeat(64).as_str()).is_none());
        let t = sessions.create(b.get("clerk1").unwrap().clone());
        assert_ne!((t.id.as_str(), t.csrf.as_str()), (s.id.as_str(), s.csrf.as_str()));
        sessions.end(&t.id);
        assert!(sessions.get(&t.id).is_none());
    }
}
