//! The `tempvault` command line: `serve`, `admin`, `read` and `audit verify`.

mod admin;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Self-hosted secret reads for temporary machines.
#[derive(Debug, Parser)]
#[command(name = "tempvault", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "TEMPVAULT_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, such as 127.0.0.1:8750.
        #[arg(long, env = "TEMPVAULT_LISTEN")]
        listen: Option<String>,
        /// Directory for the store, keys and the first operator token.
        #[arg(long, env = "TEMPVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Manage vaults, projects, secrets and machines on a running server.
    Admin(admin::AdminArgs),
    /// Read a secret from a bootstrapped host, signing the request with its key.
    Read {
        /// `project/secret`.
        secret: String,
        /// Directory holding the identity the bootstrap script wrote.
        #[arg(long, env = "TEMPVAULT_HOME")]
        home: Option<PathBuf>,
    },
    /// Offline checks of the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of a stopped server's audit log, opened read-only.
    Verify {
        #[arg(long, env = "TEMPVAULT_DATA_DIR")]
        data_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_logging();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config, listen, data_dir),
        Command::Admin(args) => admin::run(args),
        Command::Read { secret, home } => read(&secret, home),
        Command::Audit {
            command: AuditCommand::Verify { data_dir, json },
        } => verify(&data_dir, json),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tempvault: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEMPVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let config = Config::load(config.as_deref(), Overrides { listen, data_dir })
        .map_err(|e| e.to_string())?;
    crate::server::run(config).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn read(secret: &str, home: Option<PathBuf>) -> Result<ExitCode, String> {
    use std::io::{IsTerminal, Write};

    let (project, name) = secret
        .split_once('/')
        .ok_or_else(|| format!("{secret:?} is not of the form project/secret"))?;
    let home = home.unwrap_or_else(crate::client::default_home);
    let identity = crate::client::Identity::load(&home).map_err(|e| e.to_string())?;
    let target = format!("/v1/{}/secrets/{project}/{name}", identity.vault);
    let headers = identity.sign("GET", &target, b"");
    let mut request = ureq::get(&format!("{}{target}", identity.server));
    for (k, v) in headers.pairs() {
        request = request.set(k, v);
    }
    let body: serde_json::Value = admin::send(request, None)?;
    let value = body["value"]
        .as_str()
        .ok_or("the server's answer has no value")?;
    let mut out = std::io::stdout().lock();
    out.write_all(value.as_bytes()).map_err(|e| e.to_string())?;
    if out.is_terminal() {
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(data_dir: &std::path::Path, json: bool) -> Result<ExitCode, String> {
    let store =
        crate::storage::Store::open_read_only(&data_dir.join("db")).map_err(|e| e.to_string())?;
    let report = crate::audit::verify_chain(&store).map_err(|e| e.to_string())?;
    let intact = report.verdict == crate::audit::ChainVerdict::Intact;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        use crate::audit::ChainVerdict as V;
        match &report.verdict {
            V::Intact => println!(
                "audit chain intact: {} events, head {}",
                report.length, report.head
            ),
            V::Edited { seq } => println!("audit chain broken: event {seq} was edited"),
            V::Missing { expected, found } => {
                println!(
                    "audit chain broken: events {expected} to {} are missing",
                    found - 1
                )
            }
            V::Reordered { seq } => println!("audit chain broken: event {seq} is out of order"),
            V::Unreadable { key } => println!("audit chain broken: record {key} does not decode"),
        }
        if !intact {
            println!("{} events verified before the break", report.length);
        }
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
