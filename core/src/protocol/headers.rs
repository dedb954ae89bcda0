use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signature;

use crate::domain::MachineId;

pub const HEADER_MACHINE_ID: &str = "x-machine-id";
pub const HEADER_TIMESTAMP: &str = "x-timestamp";
pub const HEADER_NONCE: &str = "x-nonce";
pub const HEADER_SIGNATURE: &str = "x-signature";

const NONCE_MIN: usize = 16;
const NONCE_MAX: usize = 64;
/// Enough digits for any Unix time a clock will show for the next few thousand years; longer
/// values are refused before they are parsed.
const TIMESTAMP_MAX_DIGITS: usize = 12;

/// Why the authentication headers are missing or malformed.
///
/// Every variant maps to the single client-facing code `missing_or_malformed_auth`; the
/// variant tells the client which header is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is given more than once")]
    Repeated(&'static str),
    #[error("header {0} is not valid ASCII")]
    NotAscii(&'static str),
    #[error("X-Machine-Id is not a lower-case hyphenated UUID")]
    MachineId,
    #[error("X-Timestamp must be Unix seconds as plain decimal digits, with no leading zero")]
    Timestamp,
    #[error("X-Nonce must be 16 to 64 characters of [A-Za-z0-9_-]")]
    Nonce,
    #[error("X-Signature must be standard padded base64 of 64 bytes")]
    Signature,
}

/// A nonce as a client sent it: 16 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let ok_len = (NONCE_MIN..=NONCE_MAX).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_len || !ok_chars {
            return Err(HeaderError::Nonce);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The four authentication headers of a machine request, parsed but not yet verified.
#[derive(Debug, Clone)]
pub struct AuthHeaders {
    pub machine_id: MachineId,
    /// Unix seconds, exactly as the client wrote them (needed verbatim for the signature).
    pub timestamp_text: String,
    pub timestamp: i64,
    pub nonce: Nonce,
    pub signature: Signature,
}

impl AuthHeaders {
    /// Parses the headers. `values(name)` returns every value the request carries under a
    /// (lower-case) header name; more than one value for any of the four is refused, so that
    /// the server and any proxy in front of it cannot disagree on which one counts.
    pub fn parse<'a, F, I>(values: F) -> Result<Self, HeaderError>
    where
        F: Fn(&'static str) -> I,
        I: Iterator<Item = &'a [u8]>,
    {
        let one = |name: &'static str| -> Result<&'a str, HeaderError> {
            let mut it = values(name);
            let first = it.next().ok_or(HeaderError::Missing(display_name(name)))?;
            if it.next().is_some() {
                return Err(HeaderError::Repeated(display_name(name)));
            }
            std::str::from_utf8(first)
                .ok()
                .filter(|s| s.is_ascii())
                .ok_or(HeaderError::NotAscii(display_name(name)))
        };

        let machine_id =
            MachineId::parse(one(HEADER_MACHINE_ID)?).map_err(|_| HeaderError::MachineId)?;
        let timestamp_text = one(HEADER_TIMESTAMP)?;
        let timestamp = parse_timestamp(timestamp_text)?;
        let nonce = Nonce::parse(one(HEADER_NONCE)?)?;
        let signature = parse_signature(one(HEADER_SIGNATURE)?)?;

        Ok(Self {
            machine_id,
            timestamp_text: timestamp_text.to_owned(),
            timestamp,
            nonce,
            signature,
        })
    }
}

fn display_name(lower: &'static str) -> &'static str {
    match lower {
        HEADER_MACHINE_ID => "X-Machine-Id",
        HEADER_TIMESTAMP => "X-Timestamp",
        HEADER_NONCE => "X-Nonce",
        HEADER_SIGNATURE => "X-Signature",
        other => other,
    }
}

fn parse_timestamp(s: &str) -> Result<i64, HeaderError> {
    // One spelling per instant: no sign, no leading zero.
    let plain_digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain_digits || s.len() > TIMESTAMP_MAX_DIGITS || (s.len() > 1 && s.starts_with('0')) {
        return Err(HeaderError::Timestamp);
    }
    s.parse().map_err(|_| HeaderError::Timestamp)
}

fn parse_signature(s: &str) -> Result<Signature, HeaderError> {
    // 64 bytes encode to exactly 88 characters; checking first bounds the decoder's work.
    if s.len() != 88 {
        return Err(HeaderError::Signature);
    }
    let mut bytes = [0u8; 64];
    let n = STANDARD
        .decode_slice(s, &mut bytes)
        .map_err(|_| HeaderError::Signature)?;
    if n != 64 {
        return Err(HeaderError::Signature);
    }
    Ok(Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8f14e45f-ceea-4672-9b4a-1c2d3e4f5a6b";

    fn sig_b64() -> String {
        STANDARD.encode([7u8; 64])
    }

    fn parse(pairs: &[(&'static str, &str)]) -> Result<AuthHeaders, HeaderError> {
        AuthHeaders::parse(|name| {
            pairs
                .iter()
                .filter(move |(k, _)| *k == name)
                .map(|(_, v)| v.as_bytes())
                .collect::<Vec<_>>()
                .into_iter()
        })
    }

    fn good() -> Vec<(&'static str, String)> {
        vec![
            (HEADER_MACHINE_ID, ID.to_owned()),
            (HEADER_TIMESTAMP, "1712170800".to_owned()),
            (HEADER_NONCE, "k9x2m4p7k9x2m4p7".to_owned()),
            (HEADER_SIGNATURE, sig_b64()),
        ]
    }

    fn parse_owned(pairs: &[(&'static str, String)]) -> Result<AuthHeaders, HeaderError> {
        let borrowed: Vec<(&'static str, &str)> =
            pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        parse(&borrowed)
    }

    fn with(name: &'static str, value: &str) -> Result<AuthHeaders, HeaderError> {
        let mut pairs = good();
        for p in &mut pairs {
            if p.0 == name {
                p.1 = value.to_owned();
            }
        }
        parse_owned(&pairs)
    }

    #[test]
    fn well_formed_headers_parse() {
        let h = parse_owned(&good()).unwrap();
        assert_eq!(h.timestamp, 1_712_170_800);
        assert_eq!(h.machine_id.to_string(), ID);
    }

    #[test]
    fn each_missing_header_is_named() {
        for name in [
            HEADER_MACHINE_ID,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
        ] {
            let pairs: Vec<_> = good().into_iter().filter(|(k, _)| *k != name).collect();
            assert_eq!(
                parse_owned(&pairs).unwrap_err(),
                HeaderError::Missing(display_name(name))
            );
        }
    }

    #[test]
    fn a_repeated_header_is_refused() {
        let mut pairs = good();
        pairs.push((HEADER_NONCE, "another-nonce-value".to_owned()));
        assert_eq!(
            parse_owned(&pairs).unwrap_err(),
            HeaderError::Repeated("X-Nonce")
        );
    }

    #[test]
    fn timestamps_must_be_plain_bounded_digits() {
        for bad in [
            "",
            "-1",
            "+1712170800",
            "1712170800.5",
            "17e8",
            " 1712170800",
            "9999999999999",
            "01712170800",
            "00",
        ] {
            assert_eq!(
                with(HEADER_TIMESTAMP, bad).unwrap_err(),
                HeaderError::Timestamp,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nonces_are_bounded_in_length_and_alphabet() {
        assert!(with(HEADER_NONCE, &"a".repeat(16)).is_ok());
        assert!(with(HEADER_NONCE, &"a".repeat(64)).is_ok());
        for bad in [
            "a".repeat(15),
            "a".repeat(65),
            "abcdefghijklmno/".into(),
            "abcdefghijklmno=".into(),
        ] {
            assert_eq!(
                with(HEADER_NONCE, &bad).unwrap_err(),
                HeaderError::Nonce,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signatures_must_be_canonical_padded_base64_of_64_bytes() {
        let good = sig_b64();
        let unpadded = good.trim_end_matches('=');
        let short = STANDARD.encode([7u8; 63]);
        let long = STANDARD.encode([7u8; 65]);
        let url_safe = good.replace('/', "_").replace('+', "-");
        // Changing the last data character's unused low bits gives a non-canonical encoding.
        let mut non_canonical = good.clone();
        non_canonical.replace_range(85..86, "x");
        for bad in [unpadded, &short, &long, "not base64!", &non_canonical] {
            assert_eq!(
                with(HEADER_SIGNATURE, bad).unwrap_err(),
                HeaderError::Signature,
                "{bad:?}"
            );
        }
        // [7; 64] has no '+' or '/', so the URL-safe spelling is the same and still valid.
        assert!(with(HEADER_SIGNATURE, &url_safe).is_ok());
    }

    #[test]
    fn machine_ids_must_be_canonical() {
        assert_eq!(
            with(HEADER_MACHINE_ID, &ID.to_uppercase()).unwrap_err(),
            HeaderError::MachineId
        );
    }
}
