use sha2::{Digest, Sha256};

/// First line of every canonical request; names the protocol version.
pub const CANONICAL_PREFIX: &str = "tempvault-request-v1";

/// Lower-case hex SHA-256 of a request body, as it appears in the canonical string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest([u8; 64]);

impl BodyDigest {
    pub fn as_str(&self) -> &str {
        // The buffer only ever holds ASCII hex digits, written by `body_digest`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Hashes a request body; an absent body is hashed as the empty string.
pub fn body_digest(body: &[u8]) -> BodyDigest {
    let mut out = [0u8; 64];
    // Encoding 32 bytes into 64 always fits.
    let _ = hex::encode_to_slice(Sha256::digest(body), &mut out);
    BodyDigest(out)
}

/// Builds the exact bytes a machine signs: seven lines joined by `\n`, no trailing newline.
///
/// `target` is the request target as sent on the wire: the path, plus `?` and the query when
/// there is one, without any decoding or normalisation.
pub fn canonical_request(
    method: &str,
    target: &str,
    machine_id: &str,
    timestamp: &str,
    nonce: &str,
    body: &BodyDigest,
) -> Vec<u8> {
    let parts = [
        CANONICAL_PREFIX,
        method,
        target,
        machine_id,
        timestamp,
        nonce,
        body.as_str(),
    ];
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_body_hashes_to_the_well_known_digest() {
        assert_eq!(
            body_digest(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_canonical_string_is_seven_lines_without_a_trailing_newline() {
        let s = canonical_request(
            "GET",
            "/v1/default/secrets/app/db?x=1",
            "id",
            "1712170800",
            "nonce",
            &body_digest(b""),
        );
        let text = String::from_utf8(s).unwrap();
        assert_eq!(
            text,
            "tempvault-request-v1\nGET\n/v1/default/secrets/app/db?x=1\nid\n1712170800\nnonce\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
