use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name accepted for a vault, project or secret.
pub const MAX_NAME_LEN: usize = 128;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is longer than {MAX_NAME_LEN} characters")]
    TooLong { kind: &'static str },
    #[error("{kind} name must start with a letter or digit")]
    BadStart { kind: &'static str },
    #[error("{kind} name may only hold letters, digits, '.', '_' and '-'")]
    BadCharacter { kind: &'static str },
}

fn check(kind: &'static str, s: &str) -> Result<(), NameError> {
    let Some(first) = s.bytes().next() else {
        return Err(NameError::Empty { kind });
    };
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart { kind });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadCharacter { kind });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Accepts 1 to 128 characters of `[A-Za-z0-9._-]` starting with a letter or digit,
            /// which also rules out `.` and `..` as path segments.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a vault, the tenant every other record belongs to.
    VaultName,
    "vault"
);
name_type!(
    /// The name of a project inside a vault.
    ProjectName,
    "project"
);
name_type!(
    /// The name of a secret inside a project.
    SecretName,
    "secret"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for ok in ["default", "db-password", "A.b_c-9", "x"] {
            assert!(ProjectName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn path_tricks_and_odd_characters_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "a/b",
            "a b",
            "é",
            "a%2Fb",
            &"a".repeat(129),
        ] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_error_names_the_kind_of_name() {
        let err = VaultName::parse("a/b").unwrap_err();
        assert!(err.to_string().starts_with("vault name"), "{err}");
    }
}
