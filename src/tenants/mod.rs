//! Tenants: the platform's customers (admin API).

pub mod cache;
pub mod input;
pub mod model;
pub mod routes;
pub mod scope;
pub mod service;
pub mod view;
