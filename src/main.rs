//! The `imgnode` command: parses the CLI, loads the config, and hands over to the library.
//! Exit codes: 0 success, 1 runtime failure, 2 usage error, 78 configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imgnode::accounts;
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
    /// Validate the configuration, and the KEK file against the metadata store when it
    /// exists, and exit (78 when invalid).
    CheckConfig,
    /// Rewrap every originals data key under the first key of the KEK file (after adding a
    /// new first line); the objects are not touched. Old keys may leave the file afterwards.
    RotateKek,
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
    if !matches!(command, Command::CheckConfig) {
        init_logging(&config);
    }
    // Files 0600, folders 0700 for every command (account creation writes the database too).
    imgnode::fsperm::restrict_umask();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("imgnode-io")
        // Bounded well below tokio's 512: each thread that reads an original keeps its own
        // allocator heap, and freed originals stayed mapped in every one of them (peak RSS
        // 689 MiB at tokio's default against 527 MiB at 4 under cold 1200 px load,
        // benches/RESULTS.md "Memory").
        .max_blocking_threads(config.cpu.blocking_threads)
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
            // Files the config names that cannot be used are config errors: systemd must not
            // restart-loop on them (RestartPreventExitStatus=78).
            let config_error = e.downcast_ref::<imgnode::app::AppError>().is_some_and(|e| {
                matches!(
                    e,
                    imgnode::app::AppError::Tls(_)
                        | imgnode::app::AppError::Token { .. }
                        | imgnode::app::AppError::TokenTooShort { .. }
                        | imgnode::app::AppError::Signing(_)
                        | imgnode::app::AppError::Kek(_)
                        | imgnode::app::AppError::Jwt(_)
                )
            });
            if config_error {
                ExitCode::from(EXIT_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => {
            imgnode::app::check_storage_keys(&config).await?;
            println!("configuration OK");
            Ok(())
        }
        Command::RotateKek => {
            let state = imgnode::app::build_command_state(config).await?;
            let rotated = state.originals.rotate_kek().await;
            state.close().await;
            println!(
                "rewrapped {} data keys under the KEK file's first key",
                rotated?
            );
            Ok(())
        }
        Command::Import { account, dir } => {
            let state = imgnode::app::build_command_state(config).await?;
            if state.store.account(&account).await?.is_none() {
                anyhow::bail!("no account `{account}` (create it with `imgnode account create`)");
            }
            let mut progress = ImportProgress::new();
            let report = state
                .ingest()
                .import_dir(&account, &dir, &mut progress)
                .await;
            progress.finish();
            let report = report?;
            for (path, why) in &report.skipped {
                eprintln!("skipped {path}: {why}");
            }
            println!(
                "imported {} new, {} deduplicated, {} already imported, {} skipped",
                report.added,
                report.deduplicated,
                report.unchanged,
                report.skipped.len()
            );
            state.close().await;
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Create { name, plan },
        } => {
            let state = imgnode::app::build_command_state(config).await?;
            let created = accounts::create(&state, &name, Some(&plan)).await;
            state.close().await;
            let created = created?;
            let account = &created.account;
            println!("created account {} (plan {})", account.name, account.plan);
            // The key goes to stdout once; it is stored only as a hash.
            println!("api key: {}", created.key.secret);
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Plan { name, plan },
        } => {
            let state = imgnode::app::build_command_state(config).await?;
            let changed = accounts::set_plan(&state, &name, &plan).await;
            state.close().await;
            changed?;
            println!("account {name} is now on plan {plan}");
            Ok(())
        }
        Command::Account {
            action: AccountCommand::Erase { name },
        } => {
            let state = imgnode::app::build_command_state(config).await?;
            let erased = accounts::erase(&state, &name).await;
            state.close().await;
            let erased = erased?;
            println!(
                "erased account {name}: {} images, {} originals deleted; edge purge {}",
                erased.images,
                erased.originals_deleted,
                erased.edge.as_str()
            );
            Ok(())
        }
    }
}

/// `imgnode import` progress on stderr: a bar (files, bytes, rate, ETA) on a terminal, else
/// a plain line every [`ImportProgress::LINE_EVERY`] (a log, a CI job) and one at the end.
struct ImportProgress {
    /// `None` when stderr is not a terminal.
    bar: Option<indicatif::ProgressBar>,
    /// Done and total.
    files: (u64, u64),
    bytes: (u64, u64),
    started: std::time::Instant,
    last_line: std::time::Instant,
}

impl ImportProgress {
    const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn new() -> ImportProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                     {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let now = std::time::Instant::now();
        ImportProgress {
            bar,
            files: (0, 0),
            bytes: (0, 0),
            started: now,
            last_line: now,
        }
    }

    fn line(&self) {
        use indicatif::{BinaryBytes, HumanDuration};
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes.0 as f64 / secs;
        let left = self.bytes.1.saturating_sub(self.bytes.0) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        eprintln!(
            "import: {}/{} files, {} of {}, {}/s, ETA {}",
            self.files.0,
            self.files.1,
            BinaryBytes(self.bytes.0),
            BinaryBytes(self.bytes.1),
            BinaryBytes(rate as u64),
            HumanDuration(std::time::Duration::from_secs_f64(eta)),
        );
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => self.line(),
        }
    }
}

impl imgnode::ingest::ImportProgress for ImportProgress {
    fn start(&mut self, files: u64, bytes: u64) {
        self.files = (0, files);
        self.bytes = (0, bytes);
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
            bar.set_message(format!("0/{files} files"));
        }
    }

    fn done(&mut self, bytes: u64) {
        self.files.0 += 1;
        self.bytes.0 += bytes;
        match &self.bar {
            Some(bar) => {
                bar.inc(bytes);
                bar.set_message(format!("{}/{} files", self.files.0, self.files.1));
            }
            None if self.last_line.elapsed() >= Self::LINE_EVERY => {
                self.last_line = std::time::Instant::now();
                self.line();
            }
            None => {}
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before start-up work, so a SIGHUP or SIGTERM during a long recovery does not
    // take the default action (termination) on a half-started node.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    let app = imgnode::app::start(config).await?;
    // `start` returns once the disk cache has recovered and both listeners accept.
    systemd_notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    spawn_watchdog(app.state.clone());
    spawn_tls_reloader(app.tls(), hup);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    systemd_notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
    app.shutdown();
    // A second signal while draining exits at once.
    tokio::select! {
        () = app.wait() => {}
        _ = term.recv() => second_signal(),
        _ = int.recv() => second_signal(),
    }
    tracing::info!("stopped");
    Ok(())
}

fn second_signal() {
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}

/// SIGHUP reloads the TLS certificate and key (certbot deploy hooks, `systemctl reload`).
/// The task holds only the certificate store, never the node, so shutdown is unaffected.
fn spawn_tls_reloader(
    tls: Option<std::sync::Arc<imgnode::server::tls::Tls>>,
    mut hup: tokio::signal::unix::Signal,
) {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                None => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; the old certificate stays");
                    }
                },
            }
        }
    });
}

/// Tells systemd (`Type=notify`) about the lifecycle; a no-op without `$NOTIFY_SOCKET`.
fn systemd_notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// With `WatchdogSec=`, pings systemd at half the interval, but only after the metadata
/// store answered a query within that time: a wedged runtime or a dead database stops the
/// pings, and systemd restarts the node.
fn spawn_watchdog(state: std::sync::Arc<imgnode::state::AppState>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            match tokio::time::timeout(interval / 2, state.store.ping()).await {
                Ok(Ok(())) => systemd_notify(&[sd_notify::NotifyState::Watchdog]),
                Ok(Err(e)) => tracing::warn!(error = %e, "watchdog: the store does not answer"),
                Err(_) => tracing::warn!("watchdog: the store did not answer in time"),
            }
        }
    });
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
