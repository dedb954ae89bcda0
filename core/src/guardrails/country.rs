use std::fmt;

use super::RuleError;

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// Every officially assigned ISO 3166-1 alpha-2 code, plus `XK`, which geo databases use
/// for Kosovo.
const ASSIGNED: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI \
BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ \
GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN \
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS \
MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT \
PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF \
TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA \
ZM ZW";

impl CountryCode {
    /// Accepts an assigned code in either case.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let code = [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()];
        let text = std::str::from_utf8(&code).ok()?;
        ASSIGNED
            .split_ascii_whitespace()
            .any(|c| c == text)
            .then_some(Self(code))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// The countries a read may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountrySet {
    codes: Vec<CountryCode>,
}

impl CountrySet {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, RuleError> {
        let mut codes = entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                CountryCode::parse(e.as_ref().trim()).ok_or_else(|| RuleError::Country {
                    index,
                    value: e.as_ref().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        codes.sort_unstable();
        codes.dedup();
        Ok(Self { codes })
    }

    pub fn contains(&self, code: CountryCode) -> bool {
        self.codes.binary_search(&code).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_case_insensitive_and_must_be_assigned() {
        assert_eq!(CountryCode::parse("dk").unwrap().as_str(), "DK");
        assert!(CountryCode::parse("Se").is_some());
        for bad in ["", "D", "DNK", "XX", "UK", "D1", "ÆØ"] {
            assert!(CountryCode::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_set_contains_exactly_its_codes() {
        let set = CountrySet::parse(&["DK", "se", "DK"]).unwrap();
        assert!(set.contains(CountryCode::parse("SE").unwrap()));
        assert!(!set.contains(CountryCode::parse("NO").unwrap()));
    }
}
