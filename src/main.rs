//! The `postline` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use postline::config::Settings;
use postline::startup::{self, Application};
use postline::{db, keys, telemetry};

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
    /// Migrate, then serve the HTTP API.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage admin keys.
    AdminKey {
        #[command(subcommand)]
        command: AdminKeyCommand,
    },
    /// Load and validate the configuration, then exit.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
enum ConfigCommand {
    /// Exit 0 when the configuration is valid; otherwise name the bad key.
    Check,
}

fn main() {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postline: {e}");
            std::process::exit(2);
        }
    };
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        Command::Serve => runtime.block_on(serve(settings)),
        Command::Migrate => runtime.block_on(migrate(settings)),
        Command::AdminKey {
            command: AdminKeyCommand::Create { name, permissions },
        } => runtime.block_on(create_admin_key(settings, name, permissions)),
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("configuration is valid");
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("postline: {e:#}");
        std::process::exit(1);
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings)?;
    match startup::migrate(&app.state().pool).await {
        Ok(applied) if !applied.is_empty() => tracing::info!(?applied, "migrations applied"),
        Ok(_) => {}
        // The API still starts; /readyz reports 503 until the database is back.
        Err(e) => tracing::error!(error = %format!("{e:#}"), "migrations not applied at start"),
    }
    tracing::info!(port = app.port(), "postline listening");
    app.run_until_stopped().await
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
    println!("{}", key.key.unwrap_or_default());
    Ok(())
}
