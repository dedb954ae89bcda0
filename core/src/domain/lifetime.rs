use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The longest lifetime or extension, in calendar months.
pub const MAX_MONTHS: u32 = 12;

/// A span of calendar time: months first, then days, hours, minutes and seconds.
///
/// Months are calendar months: adding one month to 31 January lands on the last day of
/// February. Days are 24-hour days in UTC, so a lifetime means the same wherever the admin is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub months: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub days: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hours: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minutes: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a lifetime cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    #[error("lifetime is zero; it must be between {min} and {MAX_MONTHS} months")]
    Zero { min: String },
    #[error("lifetime is shorter than the minimum {min}; it must be between {min} and {MAX_MONTHS} months")]
    TooShort { min: String },
    #[error("lifetime is longer than {MAX_MONTHS} months; it must be between {min} and {MAX_MONTHS} months")]
    TooLong { min: String },
    #[error("lifetime {0:?} is not of the form 3mo, 30d, 8h, 45m, 10s or a sum such as 1mo2d8h")]
    Syntax(String),
}

impl Lifetime {
    /// Parses the compact form used on the command line: `3mo`, `30d`, `8h`, `45m`, `10s`, or
    /// several of them in that order, as `1mo2d8h`.
    pub fn parse_compact(s: &str) -> Result<Self, LifetimeError> {
        let syntax = || LifetimeError::Syntax(s.to_owned());
        let mut out = Lifetime::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(syntax());
        }
        let mut last_rank = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (num, tail) = rest.split_at(digits);
            let value: u32 = num.parse().map_err(|_| syntax())?;
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(unit_len);
            let (rank, field) = match unit {
                "mo" => (1, &mut out.months),
                "d" => (2, &mut out.days),
                "h" => (3, &mut out.hours),
                "m" => (4, &mut out.minutes),
                "s" => (5, &mut out.seconds),
                _ => return Err(syntax()),
            };
            if rank <= last_rank {
                return Err(syntax());
            }
            last_rank = rank;
            *field = value;
            rest = tail;
        }
        Ok(out)
    }

    /// The instant this lifetime after `start`, or `None` when it overflows the calendar.
    pub fn after(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let seconds = i64::from(self.days) * 86_400
            + i64::from(self.hours) * 3_600
            + i64::from(self.minutes) * 60
            + i64::from(self.seconds);
        start
            .checked_add_months(Months::new(self.months))?
            .checked_add_signed(TimeDelta::try_seconds(seconds)?)
    }

    /// The end of this lifetime from `start`, checked against the bounds: at least `min`
    /// and at most twelve calendar months.
    pub fn expiry_from(
        &self,
        start: DateTime<Utc>,
        min: Duration,
    ) -> Result<DateTime<Utc>, LifetimeError> {
        let min_text = humantime::format_duration(min).to_string();
        if *self == Lifetime::default() {
            return Err(LifetimeError::Zero { min: min_text });
        }
        let too_long = || LifetimeError::TooLong {
            min: min_text.clone(),
        };
        let end = self.after(start).ok_or_else(too_long)?;
        let max_end = latest_expiry(start).ok_or_else(too_long)?;
        if end > max_end {
            return Err(too_long());
        }
        let min_delta = TimeDelta::from_std(min).unwrap_or(TimeDelta::MAX);
        if end - start < min_delta {
            return Err(LifetimeError::TooShort { min: min_text });
        }
        Ok(end)
    }
}

/// The latest expiry allowed for anything decided at `now`: twelve calendar months on.
pub fn latest_expiry(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    now.checked_add_months(Months::new(MAX_MONTHS))
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.months, "mo"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "m"),
            (self.seconds, "s"),
        ];
        let mut wrote = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
            wrote = true;
        }
        if !wrote {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn compact_forms_parse_in_order() {
        assert_eq!(
            Lifetime::parse_compact("1mo2d8h").unwrap(),
            Lifetime {
                months: 1,
                days: 2,
                hours: 8,
                ..Default::default()
            }
        );
        assert_eq!(Lifetime::parse_compact("30d").unwrap().days, 30);
        assert_eq!(Lifetime::parse_compact("45s").unwrap().seconds, 45);
        for bad in [
            "",
            "8",
            "h",
            "8x",
            "2h1d",
            "1d1d",
            "-1h",
            "1.5h",
            "99999999999h",
        ] {
            assert!(Lifetime::parse_compact(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn months_are_calendar_months_clamped_to_the_month_end() {
        let one_month = Lifetime {
            months: 1,
            ..Default::default()
        };
        assert_eq!(
            one_month.after(at("2027-01-31T10:00:00Z")),
            Some(at("2027-02-28T10:00:00Z"))
        );
        assert_eq!(
            one_month.after(at("2028-01-31T10:00:00Z")),
            Some(at("2028-02-29T10:00:00Z"))
        );
        let twelve = Lifetime {
            months: 12,
            ..Default::default()
        };
        assert_eq!(
            twelve.after(at("2028-02-29T00:00:00Z")),
            Some(at("2029-02-28T00:00:00Z"))
        );
    }

    #[test]
    fn one_hour_and_twelve_months_are_the_bounds() {
        let start = at("2027-03-15T12:00:00Z");
        let ok = |l: Lifetime| l.expiry_from(start, HOUR);
        assert!(ok(Lifetime {
            hours: 1,
            ..Default::default()
        })
        .is_ok());
        assert!(ok(Lifetime {
            months: 12,
            ..Default::default()
        })
        .is_ok());
        assert!(matches!(
            ok(Lifetime {
                minutes: 59,
                ..Default::default()
            }),
            Err(LifetimeError::TooShort { .. })
        ));
        assert!(matches!(
            ok(Lifetime {
                months: 12,
                seconds: 1,
                ..Default::default()
            }),
            Err(LifetimeError::TooLong { .. })
        ));
        assert!(matches!(
            ok(Lifetime {
                days: 367,
                ..Default::default()
            }),
            Err(LifetimeError::TooLong { .. })
        ));
        assert!(matches!(
            ok(Lifetime::default()),
            Err(LifetimeError::Zero { .. })
        ));
    }

    #[test]
    fn the_error_message_gives_the_bounds() {
        let err = Lifetime {
            minutes: 5,
            ..Default::default()
        }
        .expiry_from(at("2027-03-15T12:00:00Z"), HOUR)
        .unwrap_err();
        assert!(
            err.to_string().contains("between 1h and 12 months"),
            "{err}"
        );
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let l = Lifetime {
            months: u32::MAX,
            days: u32::MAX,
            ..Default::default()
        };
        assert!(l.expiry_from(at("2027-03-15T12:00:00Z"), HOUR).is_err());
    }
}
