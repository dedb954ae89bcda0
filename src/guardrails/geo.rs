use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use maxminddb::Reader;
use parking_lot::Mutex;
use serde::Deserialize;

use super::country::CountryCode;
use super::ip::canonical;

/// How often the database file is checked for replacement, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a geo database could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read geo database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDBError,
    },
}

/// A MaxMind-format (`.mmdb`) country database that follows its file on disk.
///
/// The file is read into memory rather than mapped: an in-place overwrite of a mapped file
/// can kill the process with SIGBUS, and a secrets server must not fall over because someone
/// copied a file. It is re-read when its size or modification time changes, checked at most
/// once a second, so replacing it takes effect without a restart. A file that cannot be read
/// leaves no database in force, and country rules then deny.
#[derive(Debug)]
pub struct GeoDb {
    path: Option<PathBuf>,
    reader: ArcSwapOption<Reader<Vec<u8>>>,
    watch: Mutex<Watch>,
}

#[derive(Debug)]
struct Watch {
    checked: Option<Instant>,
    stamp: Option<(SystemTime, u64)>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<CountryField<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryField<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl GeoDb {
    /// No database: every country lookup is unresolved.
    pub fn none() -> Self {
        Self::with_path(None)
    }

    /// Follows the database at `path`. A file that is missing or unreadable now is not an
    /// error here: it is logged, and country rules deny until the file becomes readable.
    pub fn open(path: &Path) -> Self {
        let db = Self::with_path(Some(path.to_owned()));
        db.refresh();
        db
    }

    fn with_path(path: Option<PathBuf>) -> Self {
        Self {
            path,
            reader: ArcSwapOption::empty(),
            watch: Mutex::new(Watch { checked: None, stamp: None }),
        }
    }

    /// Whether a readable database is in force right now.
    pub fn is_loaded(&self) -> bool {
        self.refresh();
        self.reader.load().is_some()
    }

    /// The country of `ip`, or `None` when there is no database, the address is not in it,
    /// or its record names no country. Both the GeoIP2 layout (`country.iso_code`) and the
    /// flat layout (`country_code`) are read.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        self.refresh();
        let reader = self.reader.load_full()?;
        let record: Record<'_> = reader.lookup(canonical(ip)).ok()?;
        let code = record
            .country
            .and_then(|c| c.iso_code)
            .or(record.country_code)?;
        CountryCode::parse(code)
    }

    fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let mut watch = self.watch.lock();
        if watch.checked.is_some_and(|t| t.elapsed() < RECHECK) {
            return;
        }
        watch.checked = Some(Instant::now());
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == watch.stamp && stamp.is_some() {
            return;
        }
        watch.stamp = stamp;
        match Reader::open_readfile(path) {
            Ok(reader) => {
                tracing::info!(geo.path = %path.display(), "geo database loaded");
                self.reader.store(Some(Arc::new(reader)));
            }
            Err(source) => {
                let err = GeoError::Open { path: path.clone(), source };
                tracing::error!(error = %err, "geo database unusable; country rules deny");
                self.reader.store(None);
            }
        }
    }
}
