//! The `access:` section's types, parsed and checked in [`crate::sections::access`] (below the
//! inventory that holds them); re-exported here where the access code has always found them.

pub use crate::sections::access::*;
