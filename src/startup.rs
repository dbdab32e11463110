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
use crate::queue::ingest::Ingestor;
use crate::state::AppState;
use crate::tenants::cache::TenantCache;
use crate::usage::counter::RequestCounter;
use crate::webhooks::sender::Sender;
use crate::{http, routes};

pub struct Application {
    address: std::net::SocketAddr,
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
        let auth = AuthService::with_failed_limit(
            pool.clone(),
            ttl,
            settings.auth.failed_per_ip_per_minute,
        );
        let tenants = TenantCache::new(pool.clone(), ttl);
        let budgets = crate::cluster::Budgets::new(settings.cluster.lease_secs);
        let registry = crate::cluster::node::Registry::new(
            crate::cluster::node::Node::this(budgets.holder(), &["api"]),
            settings.cluster.node_timeout_secs,
        );
        let rates =
            crate::cluster::rate::Rates::new(budgets.clone(), registry.clone(), pool.clone());
        let ingest = Ingestor::start(
            pool.clone(),
            settings.ingest.writers,
            settings.ingest.max_batch_rows,
            budgets.clone(),
            settings.limits.quota_chunk,
        );
        let state = AppState {
            settings: settings.clone(),
            pool: pool.clone(),
            vault: vault.clone(),
            auth,
            oauth: crate::oauth::OAuthService::new(
                pool.clone(),
                vault.clone(),
                &settings,
                rates.clone(),
            ),
            tenants,
            ingest,
            budgets,
            registry,
            rates,
            webhook_sender: Sender::new(&settings.webhooks)?,
            requests: RequestCounter::new(pool.clone()),
            domains: crate::domains::service::build(&settings, pool.clone(), vault.clone())?,
            queue_depth: crate::metrics::QueueDepth::new(
                pool.clone(),
                Duration::from_secs(settings.metrics.queue_depth_secs),
            ),
            renderer: crate::templates::sandbox::Sandbox::new(&settings.templates)?,
            console: crate::console::ConsoleState::new(&settings)?,
            reputation: crate::reputation::Gate::default(),
            tracking: crate::tracking::Tracking::start(&settings, pool.clone())?,
        };
        crate::cluster::failures::share_all(&state);
        let listener = TcpListener::bind(&settings.server.bind).map_err(|e| {
            anyhow::anyhow!("server.bind: cannot bind {}: {e}", settings.server.bind)
        })?;
        let address = listener.local_addr()?;
        let server = http_server(state.clone(), listener)?;
        let mut background = vec![
            state.budgets.spawn_renewer(pool.clone()),
            state.rates.spawn_keep_alive(settings.cluster.lease_secs),
            state
                .auth
                .spawn_last_used_flusher(Duration::from_secs(settings.auth.last_used_flush_secs)),
            state
                .requests
                .spawn_flusher(Duration::from_secs(settings.limits.usage_flush_secs)),
            state.reputation.spawn_reloader(pool.clone()),
            crate::reputation::checker::spawn(
                pool.clone(),
                settings.clone(),
                state.reputation.clone(),
            ),
        ];
        background.extend(
            state
                .oauth
                .spawn_background(Duration::from_secs(settings.auth.last_used_flush_secs)),
        );
        Ok(Application {
            address,
            server,
            state,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address the listener is bound to (the real port when `:0`).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server stops by itself (tests: until their runtime
    /// ends), then flushes what is kept in memory. Signals are not handled
    /// here: main uses [`Application::run_until`].
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` resolves (main: SIGINT/SIGTERM), then stops
    /// accepting, lets in-flight requests finish (up to 30 s), and flushes
    /// what is kept in memory; each step is logged.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // Registered once serving, with the roles the caller added (`serve`
        // adds `worker` after `build`).
        let heartbeat = self.state.registry.spawn(self.state.pool.clone());
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            served = &mut server => served?,
            () = stop => {
                tracing::info!(
                    timeout_secs = SHUTDOWN_TIMEOUT_SECS,
                    "shutdown: HTTP server stopped accepting; finishing in-flight requests"
                );
                let ((), served) = tokio::join!(handle.stop(true), &mut server);
                served?;
                tracing::info!("shutdown: HTTP server stopped");
            }
        }
        heartbeat.abort();
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
        self.state.registry.stop(&self.state.pool).await;
        let budgets = self.state.budgets.clone();
        if let Err(e) = db::run(&self.state.pool, move |conn| {
            budgets.release_all(conn)?;
            Ok(())
        })
        .await
        {
            tracing::warn!(error = %e, "releasing budget leases failed; they lapse instead");
        }
        tracing::debug!("shutdown: usage counters and key last-use flushed, leases released");
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

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

fn http_server(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let workers = state.settings.server.workers;
    let pool_size = state.settings.database.pool_size;
    let max_body = state.settings.limits.max_request_bytes;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            // `//emails` (an SDK base URL with a trailing slash) routes as
            // `/emails`; trailing slashes are left as they are.
            .wrap(actix_web::middleware::NormalizePath::new(
                actix_web::middleware::TrailingSlash::MergeOnly,
            ))
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
    // main handles SIGINT/SIGTERM itself (`run_until`): actix treats SIGINT
    // as a forced shutdown that drops in-flight requests.
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
    if workers > 0 {
        server = server.workers(workers);
    }
    // Each HTTP worker has its own blocking pool (actix: 512 / workers by
    // default); its handlers' `db::run` calls wait for one of the pool's
    // connections, so the pool bounds how many are useful.
    let blocking = crate::memory::blocking_threads(pool_size);
    Ok(server.worker_max_blocking_threads(blocking).run())
}
