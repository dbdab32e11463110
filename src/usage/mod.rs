//! Usage metering for billing: per tenant, per UTC day counters.

pub mod counter;
pub mod model;
pub mod routes;
pub mod service;
pub mod streams;
