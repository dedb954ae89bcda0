//! The signed request protocol that machines speak.
//!
//! A machine proves each request with four headers (`X-Machine-Id`, `X-Timestamp`, `X-Nonce`,
//! `X-Signature`) and an Ed25519 signature over a canonical string built from the request.
//! This module parses the headers into types, builds the canonical string and verifies the
//! signature. It does not know about machines' state, nonces already seen or guardrails: those
//! checks come after, and only a [`Verified`] request, which only [`verify`] can make, may
//! reach them.

mod batch;
mod canonical;
mod headers;
mod verifier;
mod verify;

pub use batch::{key_is_usable, verify_each, Candidate, Checked};
pub use canonical::{body_digest, canonical_request, BodyDigest, CANONICAL_PREFIX};
pub use headers::{AuthHeaders, HeaderError, Nonce, HEADER_MACHINE_ID, HEADER_NONCE};
pub use headers::{HEADER_SIGNATURE, HEADER_TIMESTAMP};
pub use verifier::SignatureVerifier;
pub use verify::{check_skew, verify, SkewError, Verified};
