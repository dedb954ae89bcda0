use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A time window as an admin writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowSpec {
    /// IANA time zone name, such as `Europe/Copenhagen`.
    pub timezone: String,
    /// Lower-case three-letter day names; empty or absent means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive; `24:00` means the end of the day.
    pub end: String,
}

/// A compiled time window: wall-clock minutes in a resolved time zone on a set of weekdays.
///
/// When `start > end` the window crosses midnight and belongs to the day it starts on:
/// `fri 22:00-02:00` covers Friday night and the first two hours of Saturday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    tz: Tz,
    /// Bit `n` set: the window starts on the weekday `n` days from Monday.
    days: u8,
    start: u16,
    end: u16,
}

const EVERY_DAY: u8 = 0b111_1111;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeWindow {
    /// Compiles a window; the error says which part is wrong.
    pub fn compile(spec: &TimeWindowSpec) -> Result<Self, String> {
        let tz: Tz = spec
            .timezone
            .parse()
            .map_err(|_| format!("timezone {:?} is not an IANA time zone", spec.timezone))?;
        let mut days = 0u8;
        for day in &spec.days {
            let bit = DAY_NAMES
                .iter()
                .position(|d| d.eq_ignore_ascii_case(day))
                .ok_or_else(|| {
                    format!("day {day:?} is not one of mon, tue, wed, thu, fri, sat, sun")
                })?;
            days |= 1 << bit;
        }
        if days == 0 {
            days = EVERY_DAY;
        }
        let start = parse_clock(&spec.start, false).ok_or_else(|| {
            format!(
                "start {:?} is not a time of day as HH:MM (00:00 to 23:59)",
                spec.start
            )
        })?;
        let end = parse_clock(&spec.end, true).ok_or_else(|| {
            format!(
                "end {:?} is not a time of day as HH:MM (00:00 to 24:00)",
                spec.end
            )
        })?;
        if start == end {
            return Err("start and end are equal; the window would be empty or ambiguous".into());
        }
        Ok(Self {
            tz,
            days,
            start,
            end,
        })
    }

    /// Whether the instant falls inside the window, by the wall clock of its zone.
    ///
    /// Daylight-saving changes follow from the zone's rules: a wall-clock time that is
    /// skipped never occurs, and one that repeats is inside the window both times.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let today = local.weekday();
        if self.start < self.end {
            return self.on(today) && (self.start..self.end).contains(&minute);
        }
        (self.on(today) && minute >= self.start) || (self.on(today.pred()) && minute < self.end)
    }

    fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.num_days_from_monday()) != 0
    }
}

fn parse_clock(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(tz: &str, days: &[&str], start: &str, end: &str) -> TimeWindow {
        TimeWindow::compile(&TimeWindowSpec {
            timezone: tz.into(),
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
        })
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn office_hours_in_copenhagen_follow_the_local_clock() {
        let w = window(
            "Europe/Copenhagen",
            &["mon", "tue", "wed", "thu", "fri"],
            "08:00",
            "18:00",
        );
        // 2027-01-04 is a Monday; Copenhagen is UTC+1 in winter.
        assert!(w.contains(at("2027-01-04T07:00:00Z")));
        assert!(!w.contains(at("2027-01-04T06:59:59Z")));
        assert!(w.contains(at("2027-01-04T16:59:59Z")));
        assert!(!w.contains(at("2027-01-04T17:00:00Z")));
        // Saturday.
        assert!(!w.contains(at("2027-01-09T10:00:00Z")));
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_starts() {
        let w = window("UTC", &["fri"], "22:00", "02:00");
        // 2027-01-08 is a Friday.
        assert!(w.contains(at("2027-01-08T23:00:00Z")));
        assert!(w.contains(at("2027-01-09T01:59:00Z")));
        assert!(!w.contains(at("2027-01-09T02:00:00Z")));
        assert!(!w.contains(at("2027-01-09T23:00:00Z")));
        // Thursday night into Friday morning is not Friday's window.
        assert!(!w.contains(at("2027-01-08T01:00:00Z")));
    }

    #[test]
    fn the_skipped_spring_hour_never_occurs_and_the_window_resumes_after_it() {
        // Copenhagen, 2027-03-28: 02:00 local jumps to 03:00 (01:00 UTC).
        let w = window("Europe/Copenhagen", &[], "02:00", "03:30");
        assert!(!w.contains(at("2027-03-28T00:59:59Z"))); // 01:59:59 local
        assert!(w.contains(at("2027-03-28T01:00:00Z"))); // 03:00 local
        assert!(!w.contains(at("2027-03-28T01:30:00Z"))); // 03:30 local
                                                          // New York, 2027-03-14: 02:00 local jumps to 03:00 (07:00 UTC).
        let ny = window("America/New_York", &["sun"], "02:15", "02:45");
        for minute in 0..120 {
            let t = at("2027-03-14T06:00:00Z") + chrono::TimeDelta::minutes(minute);
            assert!(!ny.contains(t), "{t}");
        }
    }

    #[test]
    fn the_repeated_autumn_hour_is_inside_both_times() {
        // Copenhagen, 2027-10-31: 03:00 local falls back to 02:00, so 02:xx occurs twice.
        let w = window("Europe/Copenhagen", &["sun"], "02:00", "03:00");
        assert!(w.contains(at("2027-10-31T00:30:00Z"))); // 02:30 CEST
        assert!(w.contains(at("2027-10-31T01:30:00Z"))); // 02:30 CET
        assert!(!w.contains(at("2027-10-31T02:00:00Z"))); // 03:00 CET
                                                          // New York, 2027-11-07: 01:xx occurs twice.
        let ny = window("America/New_York", &["sun"], "01:00", "02:00");
        assert!(ny.contains(at("2027-11-07T05:30:00Z"))); // 01:30 EDT
        assert!(ny.contains(at("2027-11-07T06:30:00Z"))); // 01:30 EST
        assert!(!ny.contains(at("2027-11-07T07:00:00Z"))); // 02:00 EST
    }

    #[test]
    fn bad_windows_name_their_fault() {
        let bad = |tz: &str, days: &[&str], s: &str, e: &str| {
            TimeWindow::compile(&TimeWindowSpec {
                timezone: tz.into(),
                days: days.iter().map(|d| d.to_string()).collect(),
                start: s.into(),
                end: e.into(),
            })
            .unwrap_err()
        };
        assert!(bad("Europe/Copenhagn", &[], "08:00", "18:00").contains("timezone"));
        assert!(bad("UTC", &["monday"], "08:00", "18:00").contains("day"));
        assert!(bad("UTC", &[], "8:00", "18:00").contains("start"));
        assert!(bad("UTC", &[], "08:00", "18:60").contains("end"));
        assert!(bad("UTC", &[], "24:00", "18:00").contains("start"));
        assert!(bad("UTC", &[], "09:00", "09:00").contains("equal"));
    }

    #[test]
    fn a_whole_day_can_be_written_with_24_00() {
        let w = window("UTC", &["sat"], "00:00", "24:00");
        assert!(w.contains(at("2027-01-09T23:59:59Z")));
        assert!(!w.contains(at("2027-01-10T00:00:00Z")));
    }
}
