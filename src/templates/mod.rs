//! Templates: per-tenant minijinja templates (subject, html, text), the
//! starter set every tenant begins with, and rendering for the send path.

pub mod input;
pub mod model;
pub mod render;
pub mod routes;
pub mod sandbox;
pub mod service;
pub mod starter;
pub mod view;
