//! The durable queue in Postgres: coalesced enqueue (`ingest`, its commits in
//! `write`), the narrow
//! queue table with leases and their heartbeat (`model`), fair claiming
//! (`claim`; which candidates fit the byte budget and shares: `take`),
//! fenced outcomes (`record`), and the retry policy (`retry`).

pub mod claim;
pub mod ingest;
pub mod model;
pub mod record;
pub mod retry;
mod take;
mod write;

/// The channel `NOTIFY`d after committed enqueues; idle workers LISTEN on it.
pub const CHANNEL: &str = "postline_email";
