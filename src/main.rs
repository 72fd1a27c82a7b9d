//! The `imgnode` command: parses the CLI, loads the config, and hands over to the library.
//! Exit codes: 0 success, 1 runtime failure, 2 usage error, 78 configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imgnode::config::{self, Config, ENV_CONFIG_FILE, EXIT_CONFIG};

#[derive(Parser)]
#[command(name = "imgnode", version, about = "Image-transform CDN node")]
struct Cli {
    /// Config file (TOML). Default: $IMGNODE_CONFIG, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve delivery and ops listeners (the default).
    Serve,
    /// Validate the configuration and exit (78 when invalid).
    CheckConfig,
    /// Import every image under DIR into an account, at paths relative to DIR.
    Import {
        #[arg(long)]
        account: String,
        dir: PathBuf,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        action: AccountCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account.
    Create {
        name: String,
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// Move an account to another plan.
    Plan { name: String, plan: String },
    /// Erase an account and everything of it (metadata, keys, presets, usage, cached
    /// variants, originals no other account uses). Asks for nothing: it is the CLI.
    Erase { name: String },
}

/// mimalloc (see Cargo.toml for why not glibc malloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os(ENV_CONFIG_FILE).map(PathBuf::from));
    let config = match config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("imgnode-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(command, config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each error level already includes its cause's message.
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => Ok(()),
        Command::Import { account, dir } => {
            let state = imgnode::app::build_state(config).await?;
            if state.store.account(&account).await?.is_none() {
                anyhow::bail!("no account `{account}` (create it with `imgnode account create`)");
            }
            let report = state.ingest().import_dir(&account, &dir).await?;
            for (path, why) in &report.skipped {
                eprintln!("skipped {path}: {why}");
            }
            println!(
                "imported {} new, {} deduplicated, {} skipped",
                report.added,
                report.deduplicated,
                report.skipped.len()
            );
            state.close().await;
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Create { name, plan },
        } => {
            imgnode::store::validate_account_name(&name).map_err(anyhow::Error::msg)?;
            known_plan(&config, &plan)?;
            let state = imgnode::app::build_state(config).await?;
            let account = state.store.create_account(&name, &plan).await?;
            let key = state
                .api_keys
                .issue(
                    &state.store,
                    &account.name,
                    "default",
                    imgnode::auth::Scopes::ALL,
                    None,
                )
                .await?;
            println!("created account {} (plan {})", account.name, account.plan);
            // The key goes to stdout once; it is stored only as a hash.
            println!("api key: {}", key.secret);
            state.close().await;
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Plan { name, plan },
        } => {
            known_plan(&config, &plan)?;
            let state = imgnode::app::build_state(config).await?;
            let changed = state.store.set_account_plan(&name, &plan).await?;
            state.close().await;
            if !changed {
                anyhow::bail!("no account named {name}");
            }
            println!("account {name} is now on plan {plan}");
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Erase { name },
        } => {
            let state = imgnode::app::build_state(config).await?;
            let erased = imgnode::account::erase(&state, &name).await;
            state.close().await;
            let erased = erased.map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!(
                "erased account {name}: {} images, {} originals deleted",
                erased.images, erased.originals_deleted
            );
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = imgnode::app::start(config).await?;
    // `start` returns once the disk cache has recovered and both listeners accept.
    systemd_notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    spawn_watchdog();
    let app = std::sync::Arc::new(app);
    spawn_tls_reloader(app.clone())?;
    wait_for_signal().await?;
    tracing::info!("shutting down: draining in-flight requests");
    systemd_notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
    app.shutdown();
    let app = match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app,
        Err(_) => anyhow::bail!("the node is still referenced at shutdown"),
    };
    // A second signal while draining exits at once.
    tokio::select! {
        () = app.wait() => {}
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(1);
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP reloads the TLS certificate and key (logrotate-style renewals, certbot hooks).
fn spawn_tls_reloader(app: std::sync::Arc<imgnode::app::RunningApp>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let app = std::sync::Arc::downgrade(&app);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(app) = app.upgrade() else { break };
            match app.reload_tls() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; the old certificate stays")
                }
            }
        }
    });
    Ok(())
}

/// Tells systemd (`Type=notify`) about the lifecycle; a no-op without `$NOTIFY_SOCKET`.
fn systemd_notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// With `WatchdogSec=`, pings systemd at half the interval from a task on the request
/// runtime: if the runtime stops making progress, the pings stop and systemd restarts us.
fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            systemd_notify(&[sd_notify::NotifyState::Watchdog]);
        }
    });
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn known_plan(config: &imgnode::config::Config, plan: &str) -> anyhow::Result<()> {
    if config.plans.contains_key(plan) {
        return Ok(());
    }
    let known: Vec<&str> = config.plans.keys().map(String::as_str).collect();
    anyhow::bail!("unknown plan {plan}; plans: {}", known.join(", "))
}
