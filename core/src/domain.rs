//! Validated identifiers: vault, project and secret names, machine ids.
//!
//! Each is a newtype with a private field, built only by its `parse` function, so that code
//! holding one never has to ask again whether it is well formed.

mod lifetime;
mod machine_id;
mod name;

pub use lifetime::{latest_expiry, Lifetime, LifetimeError};
pub use machine_id::MachineId;
pub use name::{NameError, ProjectName, SecretName, VaultName};
