//! Guardrails: per-read rules on when, from where and from which country a read may come.
//!
//! Rules arrive as a [`GuardrailSpec`] (the JSON an admin writes) and are compiled once, when
//! set or loaded, into [`Guardrails`]: parsed CIDR sets, resolved time zones and country sets.
//! The read path only evaluates the compiled form. Everything fails closed: a rule that does
//! not compile, a source that cannot be located or a missing geo database denies the read.

mod country;
mod geo;
mod ip;
mod time_window;

use std::cell::OnceCell;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use country::{CountryCode, CountrySet};
pub use geo::{GeoDb, GeoError};
pub use ip::{canonical as canonical_ip, IpAllowlist};
pub use time_window::{TimeWindow, TimeWindowSpec};

/// Guardrails as an admin writes them; every field optional, empty means no rule of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_windows: Vec<TimeWindowSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
}

impl GuardrailSpec {
    pub fn is_empty(&self) -> bool {
        self.time_windows.is_empty() && self.ip_allowlist.is_empty() && self.countries.is_empty()
    }
}

/// A rule that does not compile, with the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("time_windows[{index}]: {reason}")]
    TimeWindow { index: usize, reason: String },
    #[error("ip_allowlist[{index}]: {value:?} is not an IP address or CIDR")]
    Cidr { index: usize, value: String },
    #[error("countries[{index}]: {value:?} is not an ISO 3166-1 alpha-2 country code")]
    Country { index: usize, value: String },
}

/// Why a guardrail denied a read. Each maps to one stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the read is outside every allowed time window")]
    OutsideTimeWindow,
    #[error("the source address is not on the allowlist")]
    IpNotAllowed,
    #[error("the source address is in a country that is not allowed")]
    CountryNotAllowed,
    #[error("the source address could not be located to a country")]
    LocationUnresolved,
    #[error("a stored guardrail no longer compiles; reads are denied until it is replaced")]
    GuardrailInvalid,
}

impl Denial {
    pub fn code(self) -> &'static str {
        match self {
            Denial::OutsideTimeWindow => "outside_time_window",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::CountryNotAllowed => "country_not_allowed",
            Denial::LocationUnresolved => "location_unresolved",
            Denial::GuardrailInvalid => "guardrail_invalid",
        }
    }
}

/// Compiled guardrails, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    windows: Vec<TimeWindow>,
    ips: Option<IpAllowlist>,
    countries: Option<CountrySet>,
}

impl Guardrails {
    /// Compiles every rule, or names the first one that is wrong.
    pub fn compile(spec: &GuardrailSpec) -> Result<Self, RuleError> {
        let windows = spec
            .time_windows
            .iter()
            .enumerate()
            .map(|(index, w)| {
                TimeWindow::compile(w).map_err(|reason| RuleError::TimeWindow { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ips = (!spec.ip_allowlist.is_empty())
            .then(|| IpAllowlist::parse(&spec.ip_allowlist))
            .transpose()?;
        let countries = (!spec.countries.is_empty())
            .then(|| CountrySet::parse(&spec.countries))
            .transpose()?;
        Ok(Self {
            windows,
            ips,
            countries,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.ips.is_none() && self.countries.is_none()
    }

    /// Checks the read against every rule, cheapest first.
    pub fn evaluate(&self, source: &Source<'_>) -> Result<(), Denial> {
        if !self.windows.is_empty() && !self.windows.iter().any(|w| w.contains(source.now)) {
            return Err(Denial::OutsideTimeWindow);
        }
        if let Some(ips) = &self.ips {
            if !ips.contains(source.ip) {
                return Err(Denial::IpNotAllowed);
            }
        }
        if let Some(countries) = &self.countries {
            let country = source.country().ok_or(Denial::LocationUnresolved)?;
            if !countries.contains(country) {
                return Err(Denial::CountryNotAllowed);
            }
        }
        Ok(())
    }
}

/// Where and when a read comes from. The country is looked up at most once, and only if a
/// rule needs it.
#[derive(Debug)]
pub struct Source<'a> {
    pub now: DateTime<Utc>,
    pub ip: IpAddr,
    geo: &'a GeoDb,
    country: OnceCell<Option<CountryCode>>,
}

impl<'a> Source<'a> {
    pub fn new(now: DateTime<Utc>, ip: IpAddr, geo: &'a GeoDb) -> Self {
        Self {
            now,
            ip,
            geo,
            country: OnceCell::new(),
        }
    }

    /// The source's country, if a country rule has looked it up (for the audit record).
    pub fn looked_up_country(&self) -> Option<CountryCode> {
        self.country.get().copied().flatten()
    }

    fn country(&self) -> Option<CountryCode> {
        *self.country.get_or_init(|| self.geo.country(self.ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> GuardrailSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn empty_guardrails_allow_everything() {
        let g = Guardrails::compile(&GuardrailSpec::default()).unwrap();
        let geo = GeoDb::none();
        let src = Source::new(Utc::now(), "203.0.113.9".parse().unwrap(), &geo);
        assert!(g.is_empty());
        assert_eq!(g.evaluate(&src), Ok(()));
    }

    #[test]
    fn a_country_rule_without_a_geo_database_denies() {
        let g = Guardrails::compile(&spec(r#"{"countries":["dk"]}"#)).unwrap();
        let geo = GeoDb::none();
        let src = Source::new(Utc::now(), "203.0.113.9".parse().unwrap(), &geo);
        assert_eq!(g.evaluate(&src), Err(Denial::LocationUnresolved));
    }

    #[test]
    fn the_first_bad_rule_is_named() {
        let err = Guardrails::compile(&spec(r#"{"ip_allowlist":["10.0.0.0/8","10.0.0.0/33"]}"#))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"ip_allowlist[1]: "10.0.0.0/33" is not an IP address or CIDR"#
        );
        let err = Guardrails::compile(&spec(r#"{"countries":["DK","XX"]}"#)).unwrap_err();
        assert!(err.to_string().starts_with("countries[1]"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<GuardrailSpec>(r#"{"ip_allow":["1.2.3.4"]}"#).is_err());
    }
}
