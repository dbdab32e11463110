//! Sending: the send API, message reads, and how a queued row becomes MIME.

pub mod each;
pub mod header_set;
pub mod idempotency;
pub mod input;
pub mod insert;
pub mod lifecycle;
pub mod mime;
pub mod model;
pub mod one_or_many;
pub mod raw;
pub mod routes;
pub mod schedule;
pub mod service;
pub mod size;
pub mod stream;
pub mod view;
