//! The `boardcast` command: `serve` (the default), `migrate`.

use std::process::ExitCode;

use boardcast::{config::Settings, db, shutdown, startup::Application};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boardcast",
    version,
    about = "Live-update service for shared whiteboards"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, the event streams and the page (the default).
    Serve,
    /// Apply the database migrations in sql/ (safe to run twice, or twice at once).
    Migrate,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve().await,
            Command::Migrate => migrate().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    log::error!("{message}");
    eprintln!("boardcast: {message}");
    ExitCode::FAILURE
}

async fn serve() -> Result<(), String> {
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    log::info!("boardcast listening on port {}", app.port());
    shutdown::cancel_on_signal(app.shutdown_token());
    app.run_until_stopped()
        .await
        .map_err(|e| format!("server error: {e}"))?;
    log::info!("stopped");
    Ok(())
}

async fn migrate() -> Result<(), String> {
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let database = db::Database::new(&settings)?;
    let mut client = database
        .connect_driven()
        .await
        .map_err(|e| format!("cannot reach the database: {e}"))?;
    let applied = db::migrations::migrate(&mut client)
        .await
        .map_err(|e| e.to_string())?;
    if applied.is_empty() {
        log::info!(
            "schema is up to date (version {})",
            db::migrations::latest_version()
        );
    } else {
        log::info!("applied migrations {applied:?}");
    }
    Ok(())
}
