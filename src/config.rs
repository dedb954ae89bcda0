//! Server configuration: built-in defaults, then a TOML file, then environment variables,
//! then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::audit::Durability;
use crate::guardrails::IpAllowlist;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("listen address {0:?} is not an IP address and port such as 127.0.0.1:8750")]
    Listen(String),
    #[error("public_url {0:?} must start with http:// or https:// and hold no spaces or quotes")]
    PublicUrl(String),
    #[error("trusted_proxies: {0}")]
    TrustedProxies(String),
    #[error("auth.skew_seconds must be between 1 and 3600")]
    Skew,
    #[error("auth.max_verify_batch must be between 1 (no batching) and 1024")]
    VerifyBatch,
    #[error("limits.{0} must be {1}")]
    Limit(&'static str, &'static str),
    #[error("lifecycle.min_lifetime must be at least 1 second")]
    MinLifetime,
    #[error("lifecycle.sweep_interval must be between 100ms and 1 minute")]
    SweepInterval,
}

/// The whole configuration. Field names match the TOML keys, which are a contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    /// What bootstrap commands point at; empty means `http://{the bound address}`.
    pub public_url: String,
    pub trusted_proxies: Vec<String>,
    pub auth: AuthConfig,
    pub lifecycle: LifecycleConfig,
    pub geo: GeoConfig,
    pub audit: AuditConfig,
    pub secrets: SecretsConfig,
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub skew_seconds: u64,
    /// Most signatures of concurrent requests verified together; 1 turns batching off.
    pub max_verify_batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    #[serde(deserialize_with = "human_duration")]
    pub min_lifetime: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// Path to a MaxMind-format `.mmdb` file; empty for none.
    pub database: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub durability: Durability,
    /// The window of the per-machine limit on failed-authentication events (20 per window).
    #[serde(deserialize_with = "human_duration")]
    pub failed_auth_window: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            failed_auth_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// File holding the 32-byte key that encrypts secret values; empty means
    /// `{data_dir}/secrets.key`, generated on first start.
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest secret value accepted, in bytes.
    pub max_secret_bytes: usize,
    /// Largest total size of a request's headers (names and values), in bytes.
    pub max_header_bytes: usize,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Open connections each worker serves at once; past it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections_per_worker: usize,
    /// Time a client has to send a request's headers after connecting (or after the last
    /// response on a kept-alive connection); past it the connection gets 408 and is closed.
    #[serde(deserialize_with = "human_duration")]
    pub request_header_timeout: Duration,
    /// How long an idle kept-alive connection stays open.
    #[serde(deserialize_with = "human_duration")]
    pub keep_alive: Duration,
    /// Time allowed to finish a connection's shutdown once the server is done with it.
    #[serde(deserialize_with = "human_duration")]
    pub disconnect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8750".into(),
            data_dir: PathBuf::from("./data"),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            auth: AuthConfig::default(),
            lifecycle: LifecycleConfig::default(),
            geo: GeoConfig::default(),
            audit: AuditConfig::default(),
            secrets: SecretsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            skew_seconds: 60,
            max_verify_batch: 64,
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            min_lifetime: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

impl LimitsConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let secs = |d: Duration| d.as_secs_f64();
        let rules: [(bool, &'static str, &'static str); 6] = [
            (
                self.max_body_bytes >= 1024,
                "max_body_bytes",
                "at least 1024",
            ),
            (
                (1024..=1024 * 1024).contains(&self.max_header_bytes),
                "max_header_bytes",
                "between 1024 and 1048576",
            ),
            (
                self.max_connections_per_worker >= 1,
                "max_connections_per_worker",
                "at least 1",
            ),
            (
                (0.1..=300.0).contains(&secs(self.request_header_timeout)),
                "request_header_timeout",
                "between 100ms and 5m",
            ),
            (
                secs(self.keep_alive) <= 3600.0,
                "keep_alive",
                "at most 1h (0s turns keep-alive off)",
            ),
            (
                secs(self.disconnect_timeout) <= 60.0,
                "disconnect_timeout",
                "at most 1m",
            ),
        ];
        match rules.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, key, rule)) => Err(ConfigError::Limit(key, rule)),
            None => Ok(()),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_secret_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            workers: 0,
            max_connections_per_worker: 10_000,
            request_header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            disconnect_timeout: Duration::from_secs(1),
        }
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Overrides from the environment or the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the file, if any, and applies the overrides.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?
            }
            None => Config::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = overrides.data_dir {
            config.data_dir = dir;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let url_ok = |u: &str| {
            (u.starts_with("http://") || u.starts_with("https://"))
                && !u
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b"'\"`$\\".contains(&b))
        };
        if !self.public_url.is_empty() && !url_ok(&self.public_url) {
            return Err(ConfigError::PublicUrl(self.public_url.clone()));
        }
        self.trusted_proxies()?;
        if !(1..=3600).contains(&self.auth.skew_seconds) {
            return Err(ConfigError::Skew);
        }
        if !(1..=1024).contains(&self.auth.max_verify_batch) {
            return Err(ConfigError::VerifyBatch);
        }
        self.limits.check()?;
        if self.lifecycle.min_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::MinLifetime);
        }
        let sweep = self.lifecycle.sweep_interval;
        if sweep < Duration::from_millis(100) || sweep > Duration::from_secs(60) {
            return Err(ConfigError::SweepInterval);
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::Listen(self.listen.clone()))
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> Result<IpAllowlist, ConfigError> {
        IpAllowlist::parse(&self.trusted_proxies)
            .map_err(|e| ConfigError::TrustedProxies(e.to_string()))
    }

    pub fn geo_database(&self) -> Option<PathBuf> {
        (!self.geo.database.is_empty()).then(|| PathBuf::from(&self.geo.database))
    }

    pub fn secrets_key_file(&self) -> PathBuf {
        if self.secrets.key_file.is_empty() {
            self.data_dir.join("secrets.key")
        } else {
            PathBuf::from(&self.secrets.key_file)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_config_parses_to_the_defaults() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/tempvault.toml"
        ))
        .unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.auth.skew_seconds, 60);
        assert_eq!(parsed.lifecycle.min_lifetime, Duration::from_secs(3600));
        assert_eq!(parsed.lifecycle.sweep_interval, Duration::from_secs(30));
        assert_eq!(parsed.audit.durability, Durability::Sync);
        parsed.validate().unwrap();
    }

    #[test]
    fn the_production_example_is_valid() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/production.example.toml"
        ))
        .unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<Config>("[lifecycle]\nmin_lifetime = \"soon\"").is_err());
        let bad_proxy = Config {
            trusted_proxies: vec!["10.0.0.0/40".into()],
            ..Config::default()
        };
        assert!(bad_proxy.validate().is_err());
        let bad_url = Config {
            public_url: "http://x'; rm -rf /".into(),
            ..Config::default()
        };
        assert!(bad_url.validate().is_err());
    }
}
