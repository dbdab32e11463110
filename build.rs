//! `embed_migrations!` (src/db/mod.rs) reads `migrations/` at compile time;
//! without this, adding a migration directory would not rebuild the crate
//! and the binary would lack it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
