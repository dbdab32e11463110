//! The durable queue in Postgres: coalesced enqueue (`ingest`), claiming with
//! a lease and recording outcomes (`claim`), and the retry policy (`retry`).

pub mod claim;
pub mod ingest;
pub mod retry;

/// The channel `NOTIFY`d after every committed enqueue; idle workers LISTEN on it.
pub const CHANNEL: &str = "postline_email";
