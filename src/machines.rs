//! Machines: their durable records, the actors that own them, and the snapshots the read
//! path checks requests against.
//!
//! Each machine has one [`MachineActor`], supervised, which is the only writer of that
//! machine's record. After every change it publishes an immutable [`MachineSnapshot`]
//! through an atomic pointer swap, and request workers read that snapshot without taking
//! any lock or waiting on the actor, so one machine's reads run on every core at once.

mod actor;
mod record;
mod registry;
mod snapshot;
pub mod sweeper;

pub use actor::{Audited, Command, MachineActor, MachineError};
pub use record::{Disabled, Extension, Grant, MachineRecord, MachineState, Revert};
pub use registry::{expiry_key, machine_key, MachineHandle, Machines};
pub use snapshot::{Lifecycle, MachineSnapshot};
