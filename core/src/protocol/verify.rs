use ed25519_dalek::VerifyingKey;

use super::canonical::{canonical_request, BodyDigest};
use super::headers::{AuthHeaders, Nonce};
use super::verifier::SignatureVerifier;
use crate::domain::MachineId;

/// Why a timestamp is outside the accepted window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkewError {
    #[error("X-Timestamp is more than {0} seconds away from the server's clock")]
    OutsideWindow(u64),
    #[error("X-Timestamp is from before the server started; sign the request again")]
    BeforeStart,
}

/// Checks that `timestamp` lies within `skew` seconds of `now`, and strictly after
/// `not_before` (the second the process started).
///
/// The second rule closes the replay window a restart would otherwise open: nonces live
/// only in memory, so a request signed before the restart must not be accepted after it.
pub fn check_skew(timestamp: i64, now: i64, skew: u64, not_before: i64) -> Result<(), SkewError> {
    if timestamp.abs_diff(now) > skew {
        return Err(SkewError::OutsideWindow(skew));
    }
    if timestamp <= not_before {
        return Err(SkewError::BeforeStart);
    }
    Ok(())
}

/// A request whose signature has been checked against its machine's key.
///
/// Only [`verify`] makes one, so any code that takes a `Verified` knows the signature held.
/// It says nothing about whether the machine is active or the nonce is fresh.
#[derive(Debug)]
pub struct Verified {
    machine_id: MachineId,
    timestamp: i64,
    nonce: Nonce,
}

impl Verified {
    pub fn machine_id(&self) -> MachineId {
        self.machine_id
    }

    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }
}

/// Verifies the request's signature with strict Ed25519 semantics (RFC 8032 with the
/// small-order and non-canonical checks of `verify_strict`), in a batch with concurrent
/// requests when `verifier` batches.
///
/// Returns `None` on any failure; callers answer it exactly as they answer an unknown
/// machine, so that the two cannot be told apart.
pub async fn verify(
    verifier: &SignatureVerifier,
    key: VerifyingKey,
    headers: AuthHeaders,
    method: &str,
    target: &str,
    body: &BodyDigest,
) -> Option<Verified> {
    let message = canonical_request(
        method,
        target,
        &headers.machine_id.to_string(),
        &headers.timestamp_text,
        headers.nonce.as_str(),
        body,
    );
    if !verifier.verify(key, message, headers.signature).await {
        return None;
    }
    Some(Verified {
        machine_id: headers.machine_id,
        timestamp: headers.timestamp,
        nonce: headers.nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_at_the_skew_edge_pass_and_one_past_fail() {
        assert!(check_skew(1000, 1060, 60, 0).is_ok());
        assert!(check_skew(1120, 1060, 60, 0).is_ok());
        assert_eq!(
            check_skew(999, 1060, 60, 0),
            Err(SkewError::OutsideWindow(60))
        );
        assert_eq!(
            check_skew(1121, 1060, 60, 0),
            Err(SkewError::OutsideWindow(60))
        );
    }

    #[test]
    fn timestamps_from_before_the_start_are_refused() {
        assert_eq!(
            check_skew(1000, 1010, 60, 1000),
            Err(SkewError::BeforeStart)
        );
        assert!(check_skew(1001, 1010, 60, 1000).is_ok());
    }

    #[test]
    fn absurd_timestamps_do_not_overflow() {
        assert!(check_skew(i64::MAX, 0, 60, 0).is_err());
        assert!(check_skew(0, i64::MAX, 60, 0).is_err());
    }
}
