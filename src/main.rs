//! The `postline` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;

use postline::config::Settings;
use postline::startup::{self, Application};
use postline::{db, keys, telemetry, worker};

#[derive(Parser)]
#[command(
    name = "postline",
    version,
    about = "Self-hosted, multi-tenant transactional email server"
)]
struct Cli {
    /// Directory holding `<POSTLINE_ENV>.toml` overrides.
    #[arg(
        long,
        env = "POSTLINE_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate, then run the HTTP API and the delivery worker.
    Serve,
    /// Migrate, then run the HTTP API only.
    Api,
    /// Run the delivery worker only.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage admin keys.
    AdminKey {
        #[command(subcommand)]
        command: AdminKeyCommand,
    },
    /// Manage web console users (`/console`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Manage the OAuth issuer.
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// Tenants' reputation (issue 25): read it, reinstate a paused tenant.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Manage templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Load and validate the configuration, then exit.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Internal: a template render process (started by the API, one job per
    /// stdin line); needs no configuration.
    #[command(hide = true)]
    TemplateSandbox {
        #[arg(long)]
        memory_mb: u64,
    },
}

#[derive(Subcommand)]
enum AdminKeyCommand {
    /// Create an admin key; the key alone is printed on the last line of stdout.
    Create {
        #[arg(long)]
        name: String,
        /// A permission to grant (repeatable); without it the key has `*`.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a console user: `--admin`, or `--tenant ID --role R`; without
    /// `--password` a one-time link to set one is printed.
    Create {
        /// A platform admin.
        #[arg(long)]
        admin: bool,
        /// The tenant (id or external_id) of a tenant user.
        #[arg(long)]
        tenant: Option<String>,
        /// owner, developer or viewer (tenant users).
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        email: String,
        /// At least 12 characters; or POSTLINE_USER_PASSWORD.
        #[arg(long, env = "POSTLINE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Remove a console user (and end their sessions); a tenant's last owner
    /// stays.
    Remove {
        #[arg(long)]
        email: String,
    },
    /// Turn TOTP off for a user locked out of their authenticator (audited);
    /// they sign in with the password alone and may set it up again.
    TotpReset {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-encrypt every stored secret under `security.master_key`; old values
    /// are opened with `security.previous_master_keys`.
    Rotate,
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Create a new signing key; new tokens are signed with it at once (each
    /// node within 30 s). The current keys keep verifying until they retire:
    /// after `--retire-after-secs` (default oauth.token_ttl_secs + 60, so no
    /// token signed before the rotation stops early).
    RotateKey {
        #[arg(long)]
        retire_after_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Print a tenant's reputation: status, reason, policy and figures.
    Reputation {
        /// The tenant's id or external_id.
        tenant: String,
    },
    /// Reinstate a tenant paused (or warned) for its reputation: held mail
    /// resumes and the figures count from now. Audited with actor `cli`.
    Reinstate {
        /// The tenant's id or external_id.
        tenant: String,
        /// Kept in the audit entry (at most 1000 characters).
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Copy the starter templates (the `templates/` folder) into every live
    /// tenant that lacks one of that name, e.g. after an upgrade added one.
    /// A tenant's own template of the same name is left as it is.
    InstallStarters {
        /// Only this tenant (its id).
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exit 0 when the configuration is valid; otherwise name the bad key.
    Check,
}

fn main() {
    postline::memory::bound_arenas();
    let cli = Cli::parse();
    if let Command::TemplateSandbox { memory_mb } = &cli.command {
        if let Err(e) = postline::templates::sandbox::serve_stdio(*memory_mb) {
            eprintln!("postline template-sandbox: {e}");
            std::process::exit(1);
        }
        return;
    }
    let settings = match Settings::load(&cli.config_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postline: {e}");
            dev_hint();
            std::process::exit(2);
        }
    };
    telemetry::init(&settings.log);
    // The blocking work (the ingest writers' commits, the worker's signing
    // and outcome writes) waits mostly for database connections.
    let connections = settings.database.pool_size + settings.worker.lease_pool_size;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(postline::memory::blocking_threads(connections))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postline: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Serve => runtime.block_on(serve(settings, true)),
        Command::Api => runtime.block_on(serve(settings, false)),
        Command::Worker => runtime.block_on(worker_only(settings)),
        Command::Migrate => runtime.block_on(migrate(settings)),
        Command::AdminKey {
            command: AdminKeyCommand::Create { name, permissions },
        } => runtime.block_on(create_admin_key(settings, name, permissions)),
        Command::User {
            command:
                UserCommand::Create {
                    admin,
                    tenant,
                    role,
                    email,
                    password,
                },
        } => runtime.block_on(async {
            let pool = db::build_pool(&settings.database);
            startup::migrate(&pool).await?;
            let args = postline::console::cli::CreateArgs {
                admin,
                tenant,
                role,
                email,
                password,
            };
            postline::console::cli::create(&settings, &pool, args).await
        }),
        Command::User {
            command: UserCommand::Remove { email },
        } => runtime.block_on(async {
            let pool = db::build_pool(&settings.database);
            startup::migrate(&pool).await?;
            postline::console::cli::remove(&pool, &email).await
        }),
        Command::User {
            command: UserCommand::TotpReset { email },
        } => runtime.block_on(async {
            let pool = db::build_pool(&settings.database);
            startup::migrate(&pool).await?;
            postline::console::cli::totp_reset(&pool, &email).await
        }),
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => runtime.block_on(rotate_secrets(settings)),
        Command::Oauth {
            command: OauthCommand::RotateKey { retire_after_secs },
        } => runtime.block_on(rotate_oauth_key(settings, retire_after_secs)),
        Command::Templates {
            command: TemplatesCommand::InstallStarters { tenant },
        } => runtime.block_on(install_starters(settings, tenant)),
        Command::Tenants {
            command: TenantsCommand::Reputation { tenant },
        } => runtime.block_on(tenant_reputation(settings, tenant, None)),
        Command::Tenants {
            command: TenantsCommand::Reinstate { tenant, note },
        } => runtime.block_on(tenant_reputation(settings, tenant, Some(note))),
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("configuration is valid");
            Ok(())
        }
        // Served before the configuration was loaded.
        Command::TemplateSandbox { .. } => Ok(()),
    };
    if let Err(e) = result {
        let text = format!("{e:#}");
        eprintln!("postline: {text}");
        if text.starts_with("database.url") {
            dev_hint();
        }
        std::process::exit(1);
    }
}

/// In a checkout where `deploy/dev run` made its environment file, the
/// missing settings are probably in it.
fn dev_hint() {
    if std::path::Path::new(".data/env").is_file() {
        eprintln!(
            "postline: hint: for the cluster of deploy/dev run, `. .data/env` first (it sets DATABASE_URL and POSTLINE__SECURITY__MASTER_KEY_FILE), or run `deploy/dev postline ...`"
        );
    }
}

async fn serve(settings: Settings, with_worker: bool) -> anyhow::Result<()> {
    let app = Application::build(settings)?;
    let state = app.state().clone();
    match startup::migrate(&state.pool).await {
        Ok(applied) if !applied.is_empty() => tracing::info!(?applied, "migrations applied"),
        Ok(_) => {}
        // The API still starts; /readyz reports 503 until the database is back.
        Err(e) => tracing::error!(error = %format!("{e:#}"), "migrations not applied at start"),
    }
    if with_worker {
        state.registry.add_role("worker");
    }
    // The inbound SMTP listener (bounces, complaints) runs with the worker.
    let inbound = if with_worker {
        postline::bounces::inbound::start_shared(
            &state.settings,
            state.pool.clone(),
            Some(state.rates.clone()),
        )
        .await?
    } else {
        None
    };
    // SMTP submission (issue 14): a front door like HTTP, in `serve` and `api`.
    let submission = postline::submission::start(&state).await?;
    // In `serve` the worker is woken by this process's commits directly.
    let worker = with_worker.then(|| {
        worker::spawn_with(
            state.settings.clone(),
            state.pool.clone(),
            state.vault.clone(),
            worker::Options {
                wake: Some(state.ingest.committed()),
                rates: Some(state.rates.clone()),
                ..worker::Options::default()
            },
        )
    });
    // The domain recheck runs with the worker role (issue 12).
    let recheck =
        with_worker.then(|| postline::domains::service::spawn_recheck(state.domains.clone()));
    // After the bind (in `build`), with the real port when bound to :0.
    tracing::info!(
        worker = with_worker,
        "listening on http://{}",
        app.address()
    );
    let served = app
        .run_until(async {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutdown: signal received");
        })
        .await;
    if let Some(r) = recheck {
        r.abort();
    }
    if let Some(i) = inbound {
        i.stop().await;
    }
    if let Some(s) = submission {
        s.stop().await;
    }
    if let Some(w) = worker {
        stop_worker(w, &state.settings).await;
    }
    tracing::info!("shutdown: complete");
    served
}

/// Stops the delivery worker: it stops claiming, its in-flight sends finish
/// (up to `worker.shutdown_timeout_secs`), the rest is released; the worker
/// logs how many of each.
async fn stop_worker(w: worker::WorkerHandle, settings: &Settings) {
    let timeout = settings.worker.shutdown_timeout_secs;
    tracing::info!(
        timeout_secs = timeout,
        "shutdown: worker stops claiming; in-flight deliveries finish"
    );
    w.stop(Duration::from_secs(timeout)).await;
    tracing::info!("shutdown: worker stopped");
}

async fn worker_only(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let pool = db::build_pool(&settings.database);
    let vault = settings.vault()?;
    startup::migrate(&pool).await?;
    let metrics = match settings.worker.metrics_bind.as_str() {
        "" => None,
        bind => {
            let depth = postline::metrics::QueueDepth::new(
                pool.clone(),
                Duration::from_secs(settings.metrics.queue_depth_secs),
            );
            let server = std::net::TcpListener::bind(bind)
                .and_then(|l| postline::http::worker_server(depth, l))
                .map_err(|e| anyhow::anyhow!("worker.metrics_bind: cannot bind {bind}: {e}"))?;
            let handle = server.handle();
            tokio::spawn(server);
            Some(handle)
        }
    };
    let domains = postline::domains::service::build(&settings, pool.clone(), vault.clone())?;
    let recheck = postline::domains::service::spawn_recheck(domains);
    // The node registry (issue 27): a worker-only process has no budgets,
    // so a fresh id.
    let budgets = postline::cluster::Budgets::new(settings.cluster.lease_secs);
    let registry = postline::cluster::node::Registry::new(
        postline::cluster::node::Node::this(budgets.holder(), &["worker"]),
        settings.cluster.node_timeout_secs,
    );
    let rates =
        postline::cluster::rate::Rates::new(budgets.clone(), registry.clone(), pool.clone());
    let inbound =
        postline::bounces::inbound::start_shared(&settings, pool.clone(), Some(rates.clone()))
            .await?;
    let cluster_tasks = [
        registry.spawn(pool.clone()),
        budgets.spawn_renewer(pool.clone()),
        rates.spawn_keep_alive(settings.cluster.lease_secs),
    ];
    let handle = worker::spawn_with(
        settings.clone(),
        pool.clone(),
        vault,
        worker::Options {
            rates: Some(rates),
            ..worker::Options::default()
        },
    );
    tracing::info!("postline worker running");
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutdown: signal received");
    if let Some(m) = metrics {
        m.stop(true).await;
    }
    recheck.abort();
    if let Some(i) = inbound {
        i.stop().await;
    }
    stop_worker(handle, &settings).await;
    for t in cluster_tasks {
        t.abort();
    }
    registry.stop(&pool).await;
    let released = budgets.clone();
    if let Err(e) = db::run(&pool, move |c| Ok(released.release_all(c).map(|_| ())?)).await {
        tracing::warn!(error = %e, "releasing budget leases failed; they lapse instead");
    }
    tracing::info!("shutdown: complete");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, with the signal's name.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return "SIGINT";
                }
            };
        tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        "SIGINT"
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let pool = db::build_pool(&settings.database);
    let applied = startup::migrate(&pool).await?;
    println!("{} migration(s) applied", applied.len());
    Ok(())
}

async fn create_admin_key(
    settings: Settings,
    name: String,
    permissions: Vec<String>,
) -> anyhow::Result<()> {
    let pool = db::build_pool(&settings.database);
    startup::migrate(&pool).await?;
    let key = keys::service::bootstrap_admin_key(&pool, name, permissions)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "created admin key {} ({})",
        key.prefix,
        key.permissions.join(",")
    );
    println!("{}", key.key.unwrap_or_default().expose());
    Ok(())
}

/// For one-shot maintenance commands: migrates, then runs `f` on one
/// connection on the blocking pool.
async fn with_connection<T, F>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(&mut diesel::PgConnection) -> anyhow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = db::build_pool(&settings.database);
    startup::migrate(&pool).await?;
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| anyhow::anyhow!("database.url: cannot connect: {e}"))?;
        f(&mut conn)
    })
    .await?
}

async fn install_starters(settings: Settings, tenant: Option<uuid::Uuid>) -> anyhow::Result<()> {
    let tenant = tenant.map(postline::domain::TenantId);
    let added = with_connection(&settings, move |conn| {
        Ok(postline::templates::starter::install_missing(conn, tenant)?)
    })
    .await?;
    for (name, n) in added {
        println!("{name}: added to {n} tenant(s)");
    }
    Ok(())
}

/// `postline tenants reputation|reinstate`: the same service as the API
/// (`reputation::service`), the audit's actor `cli`. `reinstate` is
/// `Some(note)`.
async fn tenant_reputation(
    settings: Settings,
    tenant: String,
    reinstate: Option<Option<String>>,
) -> anyhow::Result<()> {
    use postline::reputation::{cli, service};
    if let Some(Some(n)) = &reinstate {
        if n.chars().count() > postline::reputation::routes::MAX_NOTE {
            anyhow::bail!(
                "--note: at most {} characters",
                postline::reputation::routes::MAX_NOTE
            );
        }
    }
    let rep = settings.reputation.clone();
    let (view, reinstated) = with_connection(&settings, move |conn| {
        let id = cli::resolve(conn, &tenant)?;
        Ok(match reinstate {
            Some(note) => (
                service::reinstate_on(conn, &rep, &postline::audit::Actor::cli(), id, note)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                true,
            ),
            None => (
                service::of(conn, &rep, id.0).map_err(|e| anyhow::anyhow!("{e}"))?,
                false,
            ),
        })
    })
    .await?;
    if reinstated {
        println!("tenant {} reinstated", view.tenant_id);
    }
    print!("{}", cli::describe(&view));
    Ok(())
}

async fn rotate_secrets(settings: Settings) -> anyhow::Result<()> {
    let vault = settings.vault()?;
    let reports = with_connection(&settings, move |conn| {
        postline::secrets::rotate(conn, &vault)
    })
    .await?;
    for (column, r) in reports {
        println!(
            "{column}: {} re-encrypted, {} already current, {} changed concurrently",
            r.rotated, r.already_current, r.skipped_concurrent
        );
    }
    Ok(())
}

async fn rotate_oauth_key(
    settings: Settings,
    retire_after_secs: Option<u64>,
) -> anyhow::Result<()> {
    let vault = settings.vault()?;
    let after = retire_after_secs.unwrap_or(settings.oauth.token_ttl_secs + 60);
    let after = i64::try_from(after)
        .ok()
        .filter(|s| *s <= 30 * 86400)
        .ok_or_else(|| anyhow::anyhow!("--retire-after-secs: at most 2592000 (30 days)"))?;
    let retires_at = chrono::Utc::now() + chrono::Duration::seconds(after);
    let r = with_connection(&settings, move |conn| {
        postline::oauth::signing::rotate(conn, &vault, retires_at)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?;
    println!(
        "new signing key {}; {} older key(s) verify until {}; {} retired key(s) deleted",
        r.kid,
        r.retiring,
        r.retires_at.to_rfc3339(),
        r.purged
    );
    Ok(())
}
