//! Staff accounts and their sessions, for the console: who may sign in
//! (`staff`), and who is signed in now (`session`). Kept apart from the
//! console's pages so that the shared state (`http::AppState`) holds them
//! without depending on the pages.

pub mod session;
pub mod staff;

use session::Sessions;
use staff::StaffBook;
use std::time::Duration;

/// Staff accounts and live sessions of one server process.
#[derive(Debug)]
pub struct Accounts {
    pub staff: StaffBook,
    pub sessions: Sessions,
}

impl Accounts {
    pub fn new(staff: StaffBook) -> Accounts {
        let idle = Duration::from_secs(staff.rules().session_idle_minutes.max(1) * 60);
        Accounts { staff, sessions: Sessions::new(idle) }
    }
}
