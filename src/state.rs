//! What every handler shares.

use std::sync::Arc;

use crate::auth::AuthService;
use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub vault: Vault,
    pub auth: AuthService,
}
