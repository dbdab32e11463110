//! Per-tenant limits (DESIGN §6): the request rate in the API (`api`), the
//! delivery pace in the worker (`pacer`), the daily quota, exact across
//! nodes on leased budgets (`quota`).

pub mod api;
pub mod pacer;
pub mod quota;

use std::num::NonZeroU32;

/// A per-node share of a cluster-wide rate: the configured limit divided by
/// `limits.nodes`, never below 1.
pub fn per_node(limit: u32, nodes: u32) -> NonZeroU32 {
    NonZeroU32::new((limit / nodes.max(1)).max(1)).unwrap_or(NonZeroU32::MIN)
}
