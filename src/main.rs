//! The `boardcast` command: `serve` (the default), `migrate`, `token`, `openapi`.

use std::process::ExitCode;

use boardcast::{auth, config::Settings, db, domain::ids::BoardId, shutdown, startup::Application};
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
    /// Mint an access token signed with JWT_SECRET and print it alone on stdout.
    Token(TokenArgs),
    /// Print the API's OpenAPI 3.1 document (JSON) on stdout:
    /// `boardcast openapi > docs/openapi.json`.
    Openapi,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Who the token is for (`sub`): rate limits and stream caps count per subject.
    #[arg(long)]
    sub: String,
    /// Display name: the author of notes and the name in presence (default: the subject).
    #[arg(long)]
    name: Option<String>,
    /// A board id the token may touch; repeat for more. None: every board (and creating
    /// boards).
    #[arg(long = "board", value_name = "ID")]
    boards: Vec<String>,
    /// Read and stream only: no writes.
    #[arg(long)]
    readonly: bool,
    /// How long the token is valid, such as 15m, 24h or 7d.
    #[arg(long, default_value = "24h")]
    ttl: humantime::Duration,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    // Needs neither the database nor a runtime, nor any configuration.
    if let Some(Command::Openapi) = &cli.command {
        print!("{}", boardcast::routes::openapi::to_json());
        return ExitCode::SUCCESS;
    }
    // Needs neither the database nor a runtime: an operator may run it anywhere.
    if let Some(Command::Token(args)) = &cli.command {
        return match token(args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => fail(message),
        };
    }
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
            Command::Token(_) | Command::Openapi => {
                unreachable!("handled before the runtime starts")
            }
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

fn token(args: &TokenArgs) -> Result<String, String> {
    let secret = std::env::var("JWT_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .ok_or("JWT_SECRET: is not set; tokens are signed with the server's secret")?;
    let boards = args
        .boards
        .iter()
        .map(|raw| BoardId::parse(raw.trim()).map_err(|e| format!("--board: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ttl: std::time::Duration = args.ttl.into();
    if ttl.is_zero() {
        return Err("--ttl: must be longer than 0s".into());
    }
    let now = auth::now_secs();
    let claims = auth::Claims {
        sub: args.sub.clone(),
        exp: now.saturating_add(ttl.as_secs().max(1)),
        iat: Some(now),
        name: args.name.clone(),
        boards: (!boards.is_empty()).then_some(boards),
        readonly: args.readonly,
    };
    auth::Tokens::new(&secret)
        .mint(&claims)
        .map_err(|e| format!("cannot mint the token: {e}"))
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
