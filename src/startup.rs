//! Builds the application: pool, shared state, the HTTP server bound to its
//! port (port 0 in tests) and the background tasks of the API role.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};

use crate::auth::AuthService;
use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::queue::ingest::Ingestor;
use crate::state::AppState;
use crate::tenants::cache::TenantCache;
use crate::webhooks::sender::Sender;
use crate::{emails, http, keys, templates, tenants, webhooks};

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Binds the listener and prepares the server; nothing runs until
    /// [`Application::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        let pool = db::build_pool(&settings.database);
        let vault = Vault::new(&settings.master_key()?);
        let ttl = Duration::from_secs(settings.auth.cache_ttl_secs);
        let auth = AuthService::new(pool.clone(), ttl);
        let tenants = TenantCache::new(pool.clone(), ttl);
        let ingest = Ingestor::start(
            pool.clone(),
            settings.ingest.writers,
            settings.ingest.max_batch_rows,
        );
        let state = AppState {
            settings: settings.clone(),
            pool,
            vault,
            auth,
            tenants,
            ingest,
            webhook_sender: Sender::new(&settings.webhooks)?,
        };
        let listener = TcpListener::bind(&settings.server.bind).map_err(|e| {
            anyhow::anyhow!("server.bind: cannot bind {}: {e}", settings.server.bind)
        })?;
        let port = listener.local_addr()?.port();
        let server = http_server(state.clone(), listener)?;
        let background = vec![state
            .auth
            .spawn_last_used_flusher(Duration::from_secs(settings.auth.last_used_flush_secs))];
        Ok(Application {
            port,
            server,
            state,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM/SIGINT (actix handles the signals and drains
    /// in-flight requests), then flushes what is kept in memory.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        for task in &self.background {
            task.abort();
        }
        if let Err(e) = self.state.auth.flush_last_used().await {
            tracing::warn!(error = %e, "final flush of last_used_at failed");
        }
        Ok(())
    }
}

/// Runs the embedded migrations once, on the blocking pool.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| anyhow::anyhow!("database.url: cannot connect: {e}"))?;
        db::migrate(&mut conn)
    })
    .await?
}

fn http_server(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let workers = state.settings.server.workers;
    let max_body = state.settings.limits.max_request_bytes;
    let auth = web::Data::new(state.auth.clone());
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(http::problem_for_bare_errors())
            .wrap(middleware::Logger::new("%r %s %Dms").exclude("/healthz"))
            .app_data(data.clone())
            .app_data(auth.clone())
            .app_data(http::json_config(max_body))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(http::query_config())
            .app_data(http::path_config())
            .configure(http::configure)
            .configure(tenants::routes::configure)
            .configure(keys::routes::configure)
            .configure(emails::routes::configure)
            .configure(templates::routes::configure)
            .configure(webhooks::routes::configure)
            .default_service(web::to(http::not_found))
    })
    .listen(listener)?
    .shutdown_timeout(30);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.run())
}
