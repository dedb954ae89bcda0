use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Milliseconds after `epoch` before which the file is not looked at again. Read
    /// without a lock, so that lookups on many workers never queue behind each other.
    next_check: AtomicU64,
    epoch: Instant,
    /// Modification time and size of the file when last looked at (`Some(None)`: it was
    /// missing; `None`: never looked at). The lock also elects the one worker that re-reads.
    stamp: Mutex<Option<Option<(SystemTime, u64)>>>,
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
            next_check: AtomicU64::new(0),
            epoch: Instant::now(),
            stamp: Mutex::new(None),
        }
    }

    /// The country of `ip`, or `None` when there is no database, the address is not in it,
    /// or its record names no country. Both the GeoIP2 layout (`country.iso_code`) and the
    /// flat layout (`country_code`) are read.
    ///
    /// Loopback, private, link-local, shared (CGNAT), multicast and unspecified addresses
    /// are never located, whatever a database says of them: they have no country, and some
    /// databases carry stray records for them.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let ip = canonical(ip);
        if !is_routable(ip) {
            return None;
        }
        self.refresh();
        let reader = self.reader.load_full()?;
        let record: Record<'_> = reader.lookup(ip).ok()?;
        let code = record
            .country
            .and_then(|c| c.iso_code)
            .or(record.country_code)?;
        CountryCode::parse(code)
    }

    fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.next_check.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut last) = self.stamp.try_lock() else {
            return;
        };
        self.next_check
            .store(now + RECHECK.as_millis() as u64, Ordering::Relaxed);
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if *last == Some(stamp) {
            return;
        }
        *last = Some(stamp);
        match Reader::open_readfile(path) {
            Ok(reader) => {
                tracing::info!(geo.path = %path.display(), "geo database loaded");
                self.reader.store(Some(Arc::new(reader)));
            }
            Err(source) => {
                let err = GeoError::Open {
                    path: path.clone(),
                    source,
                };
                tracing::error!(error = %err, "geo database unusable; country rules deny");
                self.reader.store(None);
            }
        }
    }
}

/// Whether an address can belong to a place: not loopback, private, link-local, shared,
/// multicast or unspecified.
fn is_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || shared)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let unique_local = (first & 0xfe00) == 0xfc00;
            let link_local = (first & 0xffc0) == 0xfe80;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_never_routable() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_routable(canonical(ip.parse().unwrap())), "{ip}");
        }
        for ip in ["8.8.8.8", "130.225.0.1", "2001:6b0::1", "100.128.0.1"] {
            assert!(is_routable(ip.parse().unwrap()), "{ip}");
        }
    }
}
