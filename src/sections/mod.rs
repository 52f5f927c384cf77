//! The inventory sections that belong to one subsystem each: `services:`, `access:`,
//! `backups:`. Their YAML shapes (`*Doc`, with places) and their checked types live here, a layer
//! below both the inventory, which holds them, and the subsystems, which act on them; so the
//! inventory never imports a subsystem. Checks that need the whole inventory (a backup job's
//! host exists and sits at another site than its repository…) are the inventory's own
//! (`crate::inventory::check`).

pub mod access;
pub mod service;
