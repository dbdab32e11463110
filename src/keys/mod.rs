//! API keys: tenant keys (`pl_live_…`) and admin keys (`pl_admin_…`).

pub mod model;
pub mod routes;
pub mod service;
