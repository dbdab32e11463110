//! Builds the application: pool, shared state, the HTTP server bound to its
//! port (port 0 in tests) and the background tasks of the API role.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::auth::AuthService;
use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::limits::api::ApiLimiter;
use crate::queue::ingest::Ingestor;
use crate::state::AppState;
use crate::tenants::cache::TenantCache;
use crate::usage::counter::RequestCounter;
use crate::webhooks::sender::Sender;
use crate::{http, routes};

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
        let vault = settings.vault()?;
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
            pool: pool.clone(),
            vault: vault.clone(),
            auth,
            oauth: crate::oauth::OAuthService::new(pool.clone(), vault.clone(), &settings),
            tenants,
            ingest,
            webhook_sender: Sender::new(&settings.webhooks)?,
            api_limiter: Arc::new(ApiLimiter::new(settings.limits.nodes)),
            requests: RequestCounter::new(pool.clone()),
        };
        let listener = TcpListener::bind(&settings.server.bind).map_err(|e| {
            anyhow::anyhow!("server.bind: cannot bind {}: {e}", settings.server.bind)
        })?;
        let port = listener.local_addr()?.port();
        let server = http_server(state.clone(), listener)?;
        let mut background = vec![
            state
                .auth
                .spawn_last_used_flusher(Duration::from_secs(settings.auth.last_used_flush_secs)),
            state
                .requests
                .spawn_flusher(Duration::from_secs(settings.limits.usage_flush_secs)),
        ];
        background.extend(
            state
                .oauth
                .spawn_background(Duration::from_secs(settings.auth.last_used_flush_secs)),
        );
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
        if let Err(e) = self.state.oauth.flush_last_used().await {
            tracing::warn!(error = %e, "final flush of oauth client last_used_at failed");
        }
        if let Err(e) = self.state.requests.flush().await {
            tracing::warn!(error = %e, "final flush of api request counts failed");
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
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(http::problem_for_bare_errors())
            .wrap_fn(|req, srv| {
                let started = std::time::Instant::now();
                let fut = actix_web::dev::Service::call(srv, req);
                async move {
                    let mut res = fut.await?;
                    http::finish(&mut res, started.elapsed());
                    Ok(res)
                }
            })
            // Outermost: a span with a request id around everything, so every
            // log line of a request carries it.
            .wrap(TracingLogger::<http::QuietRootSpan>::new())
            .app_data(data.clone())
            .app_data(http::json_config(max_body))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(http::query_config())
            .app_data(http::path_config())
            .configure(routes::configure)
            .default_service(web::to(http::not_found))
    })
    .listen(listener)?
    .shutdown_timeout(30);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.run())
}
