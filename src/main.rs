//! The `hearth` command: `hearth serve` runs the homeserver, `hearth generate-config` prints a
//! commented sample configuration.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use hearth::{
    config::{Config, SAMPLE_CONFIG},
    server::{Server, shutdown_signal},
    signing::rotate_signing_key,
    storage::Storage,
};
use hearth_appservices::{Registration, Registry};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "hearth", version, about = "A Matrix homeserver")]
struct Cli {
    /// TOML configuration file (without one, the defaults and HEARTH_* variables apply).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Print a commented sample configuration file.
    GenerateConfig,
    /// Retire the signing key and generate a new one (restart the server afterwards).
    RotateSigningKey,
    /// Application services (bridges and bots).
    #[command(subcommand)]
    Appservice(AppserviceCommand),
}

#[derive(Subcommand)]
enum AppserviceCommand {
    /// Print a new registration file (Synapse's YAML format) with random tokens: save it, add
    /// its path to `appservices.config_files`, give it to the appservice, send Hearth SIGHUP.
    Generate {
        /// The appservice's ID (unique on this server).
        #[arg(long)]
        id: String,
        /// Where the appservice listens, e.g. http://127.0.0.1:9000 (omit: it is never called).
        #[arg(long)]
        url: Option<String>,
        /// The localpart of its own user; its users are `@{localpart}_*` (exclusive).
        #[arg(long)]
        sender_localpart: String,
    },
    /// Check the registration files listed in the configuration, as the server would at start.
    Check,
}

fn main() -> ExitCode {
    return_large_allocations_to_the_system();
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{SAMPLE_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hearth: {error}");
            return ExitCode::FAILURE;
        }
    };
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("hearth: invalid configuration: log: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Colours only on a terminal: log files and journald get plain text.
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hearth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Appservice(command)) = &cli.command {
        return appservice_command(&config, command);
    }
    let rotate = matches!(cli.command, Some(Command::RotateSigningKey));
    let result = runtime.block_on(async {
        if rotate {
            if config.database.url.is_none() {
                std::fs::create_dir_all(&config.data_dir)?;
            }
            let storage = Storage::connect(&config.database_url(), 1).await?;
            let (retired, new) = rotate_signing_key(&storage).await?;
            storage.close().await;
            println!("retired {retired} (still published as an old key); now signing with {new}. Restart Hearth.");
            return Ok(());
        }
        let server = Server::bind(config).await?;
        server.serve(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("hearth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn appservice_command(config: &Config, command: &AppserviceCommand) -> ExitCode {
    let server_name = config.server_name.as_str();
    match command {
        AppserviceCommand::Generate {
            id,
            url,
            sender_localpart,
        } => {
            let registration = Registration::generate(id, url.as_deref(), sender_localpart, server_name);
            // Checked as the server will read it: a bad localpart or URL is caught here.
            if let Err(error) = Registry::new(vec![registration.clone()], server_name) {
                eprintln!("hearth: {error}");
                return ExitCode::FAILURE;
            }
            match Registration::from_yaml(&registration.to_yaml()) {
                Ok(_) => {
                    print!("{}", registration.to_yaml());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("hearth: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        AppserviceCommand::Check => match Registry::load(&config.appservices.config_files, server_name) {
            Ok(registry) => {
                for service in registry.iter() {
                    println!("{}: ok ({})", service.id(), service.sender);
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hearth: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

/// glibc's malloc raises its mmap threshold after a large block is freed, and from then on
/// keeps blocks that size (argon2's 19 MiB per password hash) in per-thread arenas for good:
/// a burst of logins left hundreds of MiB resident. A fixed threshold makes every block of
/// 1 MiB or more its own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_allocations_to_the_system() {
    // SAFETY: mallopt only adjusts allocator tuning; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations_to_the_system() {}
