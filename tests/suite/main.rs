//! The integration suite, one test binary: each module below was once its own
//! `tests/*.rs` binary. One binary links the dependency tree once instead of
//! sixteen times: with no debuginfo (Cargo.toml) a test build went from 8.7 GB
//! to 1.1 GB of disk
//! (a CI run once failed with "No space left on device") and saves the link
//! time. Run a part of it with a module filter:
//! `deploy/dev test --test suite sending::`.
//!
//! The Postgres drill stays a binary of its own (`tests/drill_postgres.rs`):
//! it stops the test cluster, so it must run alone.

mod common;
mod compat;
#[macro_use]
mod drills;

mod audit;
mod audit_gaps;
mod auth;
mod body_errors;
mod bounce_corpus;
mod bounce_domains;
mod bounce_events;
mod bounces;
mod bounces_recipient;
mod budgets;
mod console;
mod console_browser;
mod console_inbound;
mod console_invite;
mod console_lockout;
mod console_overview;
mod console_suspended;
mod console_team;
mod console_totp;
mod console_users;
mod console_webhooks;
mod delivery;
mod delivery_envelopes;
mod dev_run;
mod domains;
mod domains_dkim;
mod drill_failover;
mod drill_input;
mod drill_kill;
mod drill_relay;
mod event_rows;
mod first_hour;
mod hostile;
mod http_errors;
mod inbound;
mod inbound_bench;
mod inbound_postfix;
mod inbound_spam;
mod ingest_rows;
mod isolation;
mod leaks;
mod limits;
mod mx;
mod nodes;
mod nodes_auth;
mod nodes_limits;
mod nodes_load;
mod nodes_measure;
mod nodes_webhooks;
mod oauth;
mod oauth_tokens;
mod observability;
mod openapi;
mod outcome_rows;
mod pools;
mod queue;
mod queue_guards;
mod quota_nodes;
mod reputation;
mod retention;
mod slots;

mod rotation;
mod scheduled;
mod schemathesis;
mod secrets;
mod sending;
mod shard_ready;
mod shard_ready_console;
mod smtp_sink;
mod streams;
mod submission;
mod templates;
mod tenants;
mod tracking;
mod tracking_bench;
mod tracking_copies;
mod tracking_flood;
mod tracking_mail;
mod unsubscribe;
mod usage_streams;
mod webhooks;
