//! The `services:` entries' types, parsed and checked in [`crate::sections::service`] (below the
//! inventory that holds them); re-exported here where the service code has always found them.

pub use crate::sections::service::*;
