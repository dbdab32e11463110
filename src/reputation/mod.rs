//! Tenant reputation (issue 25, DESIGN §15): hourly buckets per tenant and
//! sending domain kept as outcomes are recorded (`model::add`, called by
//! `queue::record` and `bounces::apply`), the policy (`[reputation]` and a
//! tenant's `reputation_policy`), the decisions every `check_secs`
//! (`checker`), the send paths' in-memory check (`gate`), reads and the
//! reinstatement (`service`, `routes`).

pub mod checker;
pub mod cli;
pub mod gate;
pub mod model;
pub mod policy;
pub mod routes;
pub mod service;
pub mod track;
pub mod view;

pub use gate::Gate;
pub use policy::ReputationSettings;
