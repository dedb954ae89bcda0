//! Start-up: open the store, bring up the actors, bind the listener and serve.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::HttpServer;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::domain::VaultName;
use crate::engine::Engine;
use crate::guardrails::GeoDb;
use crate::machines::sweeper::Sweeper;
use crate::machines::Machines;
use crate::metrics::Metrics;
use crate::storage::{Sealer, Store};
use crate::tokens::{self, Scope};
use crate::vaults::Vaults;

/// Threads that run machine actors.
const MACHINE_ARBITERS: usize = 2;
/// How often closed nonce windows are purged and caches tidied.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Seal(#[from] crate::storage::SealError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error("cannot create the first vault: {0}")]
    Vault(#[from] crate::vaults::VaultError),
    #[error("built-in vault name: {0}")]
    Name(#[from] crate::domain::NameError),
    #[error("cannot write the operator token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the server until it is stopped. Prints `tempvault listening on {url}` on standard
/// output once it accepts connections.
pub fn run(config: Config) -> Result<(), StartError> {
    actix_web::rt::System::new().block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), StartError> {
    let started_at = chrono::Utc::now().timestamp();
    let data_dir = config.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(|source| StartError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;

    let key_file = config.secrets_key_file();
    let (sealer, created) = Sealer::load_or_create(&key_file)?;
    if created {
        tracing::warn!(key.path = %key_file.display(), "generated a secrets key inside the data directory; keep it elsewhere in production");
    }
    let store = Store::open(&data_dir.join("db"))?;
    let vaults = Vaults::new(store.clone(), sealer);
    first_start(&store, &vaults, &data_dir)?;

    let metrics = Metrics::new();
    let (audit, _writer) =
        AuditLog::start(store.clone(), metrics.clone(), config.audit.durability)?;
    let arbiters = (0..MACHINE_ARBITERS)
        .map(|_| Arbiter::new().handle())
        .collect();
    let machines = Machines::new(store.clone(), metrics.clone(), arbiters);
    let loaded = machines.load_all()?;
    tracing::info!(machines = loaded, "machines loaded");
    let geo = match config.geo_database() {
        Some(path) => GeoDb::open(&path),
        None => GeoDb::none(),
    };

    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let bound = listener.local_addr()?;
    let public_url = if config.public_url.is_empty() {
        format!("http://{bound}")
    } else {
        config.public_url.trim_end_matches('/').to_owned()
    };
    let workers = match config.limits.workers {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let sweep_interval = config.lifecycle.sweep_interval;
    let engine = Arc::new(Engine::new(
        config, public_url, store, vaults, machines, audit, metrics, geo, started_at,
    )?);

    Sweeper::new(engine.clone(), sweep_interval).start();
    spawn_housekeeping(engine.clone());

    let app_engine = engine.clone();
    let limits = &engine.config.limits;
    let keep_alive = match limits.keep_alive {
        d if d.is_zero() => actix_web::http::KeepAlive::Disabled,
        d => actix_web::http::KeepAlive::Timeout(d),
    };
    let server = HttpServer::new(move || crate::http::app(app_engine.clone()))
        .workers(workers)
        .max_connections(limits.max_connections_per_worker)
        .client_request_timeout(limits.request_header_timeout)
        .client_disconnect_timeout(limits.disconnect_timeout)
        .keep_alive(keep_alive)
        .listen(listener)?
        .run();
    tracing::info!(listen = %bound, "tempvault listening");
    println!("tempvault listening on http://{bound}");
    let _ = std::io::stdout().flush();
    server.await?;
    engine.shutdown().await;
    Ok(())
}

/// On an empty data directory: creates vault `default` and an operator token, written to
/// `{data_dir}/admin.token` (0600). Only the file's path is logged.
fn first_start(
    store: &Store,
    vaults: &Vaults,
    data_dir: &std::path::Path,
) -> Result<(), StartError> {
    if vaults.any()? {
        return Ok(());
    }
    let default = VaultName::parse("default")?;
    vaults.create(default, None)?;
    let token = tokens::issue(store, Scope::Operator)?;
    let path = data_dir.join("admin.token");
    tokens::write_token_file(&path, &token).map_err(|source| StartError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(token.path = %path.display(), "first start: created vault `default` and wrote the operator token");
    Ok(())
}

fn spawn_housekeeping(engine: Arc<Engine>) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tick.tick().await;
            let left = engine.nonces.purge(chrono::Utc::now().timestamp());
            engine.metrics.nonce_entries.set(left as i64);
            engine.housekeeping();
            if let Ok(parts) = engine.store.memory() {
                for (part, bytes) in ["memtables", "block_cache", "table_readers"]
                    .iter()
                    .zip(parts)
                {
                    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                    engine
                        .metrics
                        .store_memory
                        .with_label_values(&[part])
                        .set(bytes);
                }
            }
        }
    });
}
