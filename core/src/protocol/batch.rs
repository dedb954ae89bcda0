//! Verifying several signatures at once, with the answers single verification would give.
//!
//! Ed25519 batch verification checks one random linear combination of all the signature
//! equations, which costs far less than checking each equation on its own (about half per
//! signature at four signatures, see the `hot_path` bench). It answers only "are they all
//! valid?", so when a batch fails every signature in it is checked again on its own with
//! `verify_strict`: that pinpoints the bad ones and keeps the answers for the good ones.
//!
//! What keeps the answers equal to `verify_strict`:
//! - weak (small-order) keys never enter a batch and are refused, as `verify_strict` does;
//!   with such a key a batch would accept forgeries made without any private key;
//! - an `R` whose encoding is not canonical is refused before batching, as `verify_strict`
//!   (which compares encodings) would;
//! - an `R` that is itself a small-order point (the identity, for one, would let
//!   `S = k·a` pass every batch) never enters a batch, and `verify_strict` refuses it;
//! - keys with a small-order component never reach this module: [`key_is_usable`] refuses
//!   them at registration and when a stored key is loaded. (With such a key the batch
//!   equation would accept some signatures that `verify_strict` refuses.)
//! - a non-canonical `S` makes the library refuse the batch, and the fallback refuses it.
//!
//! What remains: the batch equation is cofactorless, like `verify_strict`, but it can accept a
//! signature whose `R` carries a small-order component while `verify_strict` refuses it. Only
//! the holder of the machine's private key can make such a signature (its prime-order part
//! must satisfy the equation), so batching never lets anyone without the key in; and since
//! replay protection is by nonce, not by signature bytes, such a malleated signature gains
//! its maker nothing they could not have by signing properly.

use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, VerifyingKey};

/// Whether a machine may hold `key`: neither a small-order point nor a point with a
/// small-order component. No key-generation procedure makes either; both let signatures
/// pass checks they should not (a small-order key lets anyone forge).
pub fn key_is_usable(key: &VerifyingKey) -> bool {
    !key.is_weak() && key.to_edwards().is_torsion_free()
}

/// One signature to check: the key it should verify under and the message it covers.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub key: &'a VerifyingKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

impl Candidate<'_> {
    fn verify_strict(&self) -> bool {
        self.key.verify_strict(self.message, self.signature).is_ok()
    }

    /// Whether the candidate may join a batch: the checks `verify_strict` makes that a
    /// batch equation cannot.
    fn batchable(&self) -> bool {
        let r = self.signature.r_bytes();
        !self.key.is_weak() && r_is_canonical(r) && !small_order_encodings().contains(r)
    }
}

/// Every canonical encoding that decodes to one of the eight small-order points: each
/// point's compression, and, for the two with x = 0, the same with the sign bit set, which
/// decoders accept too. (Encodings of y >= p are refused by [`r_is_canonical`].)
fn small_order_encodings() -> &'static [[u8; 32]] {
    static ENCODINGS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    ENCODINGS.get_or_init(|| {
        let mut encodings = Vec::new();
        for point in EIGHT_TORSION {
            let bytes = point.compress().to_bytes();
            let mut flipped = bytes;
            flipped[31] ^= 0x80;
            // With x != 0 the flipped encoding is the negated point's, also in the list.
            let flipped_decodes = CompressedEdwardsY(flipped)
                .decompress()
                .is_some_and(|p| p.is_small_order());
            for candidate in [Some(bytes), flipped_decodes.then_some(flipped)]
                .into_iter()
                .flatten()
            {
                if !encodings.contains(&candidate) {
                    encodings.push(candidate);
                }
            }
        }
        encodings
    })
}

/// Whether the field element encoded in a point's bytes is below p = 2^255 - 19.
///
/// With the sign bit cleared, the non-canonical encodings are exactly the 19 values from
/// p to 2^255 - 1: first byte at least 0xed, every middle byte 0xff, last byte 0x7f.
fn r_is_canonical(r: &[u8; 32]) -> bool {
    let high = r[31] & 0x7f;
    !(high == 0x7f && r[1..31].iter().all(|b| *b == 0xff) && r[0] >= 0xed)
}

/// The result of checking one group of candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// One answer per candidate, in order: whether its signature holds.
    pub valid: Vec<bool>,
    /// Whether one batch equation settled the batchable candidates (false when there was at
    /// most one of them, or the batch failed and each was checked on its own).
    pub batched: bool,
    /// Whether a batch equation over two or more candidates failed, so that each was
    /// checked on its own: some signature in the group was bad.
    pub fell_back: bool,
}

/// Checks every candidate; a candidate is valid exactly when `verify_strict` says so, up to
/// the caveat in the module documentation.
pub fn verify_each(candidates: &[Candidate<'_>]) -> Checked {
    let mut valid: Vec<bool> = candidates.iter().map(Candidate::batchable).collect();
    let in_batch: Vec<usize> = (0..candidates.len()).filter(|i| valid[*i]).collect();
    if in_batch.len() < 2 {
        for i in in_batch {
            valid[i] = candidates[i].verify_strict();
        }
        return Checked {
            valid,
            batched: false,
            fell_back: false,
        };
    }

    let messages: Vec<&[u8]> = in_batch.iter().map(|i| candidates[*i].message).collect();
    let signatures: Vec<Signature> = in_batch.iter().map(|i| *candidates[*i].signature).collect();
    let keys: Vec<VerifyingKey> = in_batch.iter().map(|i| *candidates[*i].key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Checked {
            valid,
            batched: true,
            fell_back: false,
        };
    }
    for i in in_batch {
        valid[i] = candidates[i].verify_strict();
    }
    Checked {
        valid,
        batched: false,
        fell_back: true,
    }
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    struct Case {
        key: VerifyingKey,
        message: Vec<u8>,
        signature: Signature,
    }

    fn signed(seed: u8, message: &str) -> Case {
        let key = SigningKey::from_bytes(&[seed; 32]);
        Case {
            key: key.verifying_key(),
            message: message.as_bytes().to_vec(),
            signature: key.sign(message.as_bytes()),
        }
    }

    fn check(cases: &[Case]) -> Checked {
        let candidates: Vec<Candidate<'_>> = cases
            .iter()
            .map(|c| Candidate {
                key: &c.key,
                message: &c.message,
                signature: &c.signature,
            })
            .collect();
        verify_each(&candidates)
    }

    /// The answers `verify_strict` gives, one by one.
    fn strict(cases: &[Case]) -> Vec<bool> {
        cases
            .iter()
            .map(|c| c.key.verify_strict(&c.message, &c.signature).is_ok())
            .collect()
    }

    /// The identity point is a weak key: with it, `R = sB` "signs" any message.
    fn weak_key_forgery(message: &str) -> Case {
        // y = 1, x = 0: the identity.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(key.is_weak());
        let s = Scalar::from(12345u64);
        let r = (ED25519_BASEPOINT_POINT * s).compress();
        made_up(key, message, r.as_bytes(), &s)
    }

    /// A case whose signature is the given `R` and `S`, not made by signing.
    fn made_up(key: VerifyingKey, message: &str, r: &[u8; 32], s: &Scalar) -> Case {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(r);
        bytes[32..].copy_from_slice(s.as_bytes());
        Case {
            key,
            message: message.as_bytes().to_vec(),
            signature: Signature::from_bytes(&bytes),
        }
    }

    #[test]
    fn a_batch_of_valid_signatures_is_settled_by_one_equation() {
        let cases: Vec<Case> = (1..=8).map(|i| signed(i, &format!("m{i}"))).collect();
        let checked = check(&cases);
        assert!(checked.batched);
        assert!(!checked.fell_back);
        assert_eq!(checked.valid, vec![true; 8]);
    }

    #[test]
    fn one_bad_signature_in_a_batch_is_pinpointed_and_the_rest_still_pass() {
        let mut cases: Vec<Case> = (1..=6).map(|i| signed(i, &format!("m{i}"))).collect();
        cases[3].message = b"not what was signed".to_vec();
        let checked = check(&cases);
        assert!(!checked.batched);
        assert_eq!(
            checked.valid,
            vec![true, true, true, false, true, true],
            "only the altered message fails"
        );
        assert_eq!(checked.valid, strict(&cases));
    }

    #[test]
    fn mixed_failures_give_the_strict_answers() {
        let mut cases: Vec<Case> = (1..=10).map(|i| signed(i, &format!("m{i}"))).collect();
        // Signed by another key.
        cases[1].signature = signed(99, "m2").signature;
        // A flipped bit in S.
        let mut bytes = cases[4].signature.to_bytes();
        bytes[40] ^= 1;
        cases[4].signature = Signature::from_bytes(&bytes);
        // S + L: the same equation, a non-canonical scalar that strict verification refuses.
        let mut bytes = cases[6].signature.to_bytes();
        let s = Scalar::from_canonical_bytes(bytes[32..].try_into().unwrap()).unwrap();
        let l_bytes: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (i, l) in l_bytes.iter().enumerate() {
            let sum = u16::from(s.as_bytes()[i]) + u16::from(*l) + carry;
            bytes[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        cases[6].signature = Signature::from_bytes(&bytes);
        // A weak key with a forgery that a batch equation alone would accept.
        cases[8] = weak_key_forgery("m9");

        let expected = strict(&cases);
        assert_eq!(
            expected,
            vec![true, false, true, true, false, true, false, true, false, true]
        );
        assert_eq!(check(&cases).valid, expected);
    }

    #[test]
    fn weak_key_forgeries_never_pass_even_when_alone_in_the_batch_with_valid_ones() {
        let cases = vec![
            signed(1, "a"),
            weak_key_forgery("anything at all"),
            signed(2, "b"),
        ];
        // Without the weak-key exclusion the batch equation holds: prove that it does, so
        // this test would catch the exclusion being dropped.
        let messages: Vec<&[u8]> = cases.iter().map(|c| c.message.as_slice()).collect();
        let sigs: Vec<Signature> = cases.iter().map(|c| c.signature).collect();
        let keys: Vec<VerifyingKey> = cases.iter().map(|c| c.key).collect();
        assert!(ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok());

        assert_eq!(check(&cases).valid, vec![true, false, true]);
    }

    /// A signature whose `R` is the small-order point encoded by `r` and whose `S` is
    /// `k·a`: it satisfies the batch equation (`S·B = R + k·A` up to the small-order `R`,
    /// which the random weights do not always cancel but the identity always does).
    fn small_order_r_signature(seed: u8, message: &str, r: [u8; 32]) -> Case {
        use sha2::{Digest, Sha512};
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let key = signing.verifying_key();
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r)
                .chain_update(key.as_bytes())
                .chain_update(message.as_bytes())
                .finalize()
                .into(),
        );
        made_up(key, message, &r, &(k * signing.to_scalar()))
    }

    #[test]
    fn an_identity_r_with_s_equal_to_k_times_a_is_refused_like_verify_strict() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut identity_with_sign = identity;
        identity_with_sign[31] = 0x80;
        for r in [identity, identity_with_sign] {
            let forged = small_order_r_signature(5, "d", r);
            // The batch equation alone would take it: this is what the check guards against.
            assert!(
                ed25519_dalek::verify_batch(
                    &[forged.message.as_slice()],
                    &[forged.signature],
                    &[forged.key]
                )
                .is_ok(),
                "{r:02x?}"
            );
            let cases = vec![signed(1, "a"), forged, signed(2, "b")];
            assert_eq!(check(&cases).valid, vec![true, false, true], "{r:02x?}");
            assert_eq!(check(&cases).valid, strict(&cases));
        }
    }

    #[test]
    fn every_small_order_encoding_is_listed_and_nothing_else() {
        let list = small_order_encodings();
        // Eight points, plus the sign-bit twins of the identity and of (0, -1).
        assert_eq!(list.len(), 10);
        for bytes in list {
            let point = CompressedEdwardsY(*bytes).decompress().expect("decodes");
            assert!(point.is_small_order());
        }
        assert!(!list.contains(SigningKey::from_bytes(&[9; 32]).verifying_key().as_bytes()));
    }

    #[test]
    fn keys_with_a_small_order_component_are_not_usable() {
        let honest = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(key_is_usable(&honest));
        let mixed = honest.to_edwards() + EIGHT_TORSION[1];
        let mixed = VerifyingKey::from_bytes(mixed.compress().as_bytes()).expect("a point");
        assert!(!mixed.is_weak(), "not small-order itself");
        assert!(!key_is_usable(&mixed));
        let identity =
            VerifyingKey::from_bytes(&EIGHT_TORSION[0].compress().to_bytes()).expect("a point");
        assert!(!key_is_usable(&identity));
    }

    #[test]
    fn small_order_r_is_refused() {
        // R = the identity, S = 0: satisfies sB = R + kA only for a weak key; with a real key
        // it must fail both ways.
        let mut case = signed(3, "c");
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        case.signature = Signature::from_bytes(&bytes);
        let cases = vec![signed(1, "a"), case, signed(2, "b")];
        assert_eq!(check(&cases).valid, vec![true, false, true]);
        assert_eq!(check(&cases).valid, strict(&cases));
    }

    #[test]
    fn non_canonical_r_encodings_are_recognised() {
        let mut r = [0xffu8; 32];
        r[31] = 0x7f;
        r[0] = 0xed; // p itself
        assert!(!r_is_canonical(&r));
        r[0] = 0xec; // p - 1
        assert!(r_is_canonical(&r));
        r[31] = 0xff; // sign bit set, same field element
        r[0] = 0xee;
        assert!(!r_is_canonical(&r));
        r[5] = 0xfe;
        assert!(r_is_canonical(&r));
    }

    #[test]
    fn a_lone_candidate_is_verified_on_its_own() {
        let cases = vec![signed(1, "a")];
        let checked = check(&cases);
        assert!(!checked.batched);
        assert_eq!(checked.valid, vec![true]);
        let mut bad = signed(1, "a");
        bad.message = b"b".to_vec();
        assert_eq!(check(&[bad]).valid, vec![false]);
    }
}
