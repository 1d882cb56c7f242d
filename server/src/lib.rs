//! The HTTP edge of basedata: the router and its thin handlers (extract,
//! call a use case of `basedata_ingest` or `basedata_query`, map the
//! outcome to the API's schema), the people's console (web pages with
//! staff sign-in), authentication, per-department limits,
//! connection admission and timeouts, TLS, metrics, logging, the configuration file, the server's lifecycle,
//! the control socket, and the transport of cluster mode's update log.
//!
//! Boundary: the only crate that knows HTTP (axum, hyper, tower, rustls)
//! and NATS. Nothing below it depends on it.

pub mod accounts;
pub mod auth;
pub mod cert;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod console;
pub mod control;
pub mod html;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod spool;
pub mod tls;
