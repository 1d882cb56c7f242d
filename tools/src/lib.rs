//! The basedata binary's library: configuration, authentication, the HTTP
//! API, the server lifecycle, the demo and the data generator. `main.rs`
//! only parses the command line and calls in here.

pub mod auth;
pub mod batch;
pub mod cluster;
pub mod backup;
pub mod config;
pub mod demo;
pub mod gen;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod offline;
pub mod logging;
pub mod server;
pub mod tls;
