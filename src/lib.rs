//! Postline: a self-hosted, multi-tenant transactional email server.
//! `docs/ARCHITECTURE.md` maps these modules.

pub mod audit;
pub mod auth;
pub mod body;
pub mod bounces;
pub mod config;
pub mod crypto;
pub mod db;
pub mod delivery;
pub mod dns;
pub mod domain;
pub mod domains;
pub mod emails;
pub mod error;
pub mod http;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod net_guard;
pub mod oauth;
pub mod openapi;
pub mod queue;
pub mod retention;
pub mod routes;
pub mod secret;
pub mod secrets;
pub mod smtp_server;
pub mod startup;
pub mod state;
pub mod suppressions;
pub mod telemetry;
pub mod templates;
pub mod tenants;
pub mod usage;
pub mod webhooks;
pub mod worker;
