//! The `basedata` command line's commands: `demo`, `load`, `compare`,
//! `audit-verify`, `staff` and `report`, each parsing nothing and calling into the crates below
//! (the server, the use cases, the store, the generator). `main.rs` parses
//! the arguments.

pub mod demo;
pub mod load;
pub mod offline;
pub mod report;
pub mod staff;
