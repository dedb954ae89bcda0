use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A machine's id: a random UUID, always written in lower-case hyphenated form.
///
/// Parsing accepts only that one spelling, so an id has exactly one textual form and the
/// string signed by a client is the string the server compares.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(Uuid);

/// The text is not a machine id in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("machine id must be a lower-case hyphenated UUID")]
pub struct BadMachineId;

impl MachineId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Result<Self, BadMachineId> {
        let id = Uuid::try_parse(s).map_err(|_| BadMachineId)?;
        let mut buf = Uuid::encode_buffer();
        if id.hyphenated().encode_lower(&mut buf) != s {
            return Err(BadMachineId);
        }
        Ok(Self(id))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl FromStr for MachineId {
    type Err = BadMachineId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineId({self})")
    }
}

impl Serialize for MachineId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MachineId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text() {
        let id = MachineId::random();
        assert_eq!(MachineId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn other_spellings_of_the_same_uuid_are_refused() {
        let id = MachineId::random().to_string();
        assert!(MachineId::parse(&id.to_uppercase()).is_err());
        assert!(MachineId::parse(&id.replace('-', "")).is_err());
        assert!(MachineId::parse(&format!("{{{id}}}")).is_err());
        assert!(MachineId::parse("").is_err());
    }
}
