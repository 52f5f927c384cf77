//! The inventory sections that belong to one subsystem each: `services:`, `access:`,
//! `backups:`, `access.remind:` (and the calendar expressions and durations they are written in, `schedule`). Their YAML shapes (`*Doc`, with places) and their checked types live here, a layer
//! below both the inventory, which holds them, and the subsystems, which act on them; so the
//! inventory never imports a subsystem. Checks that need the whole inventory (a backup job's
//! host exists and sits at another site than its repository…) are the inventory's own
//! (`crate::inventory::check`).

pub mod access;
pub mod backup;
pub mod recovery;
pub mod remind;
pub mod schedule;
pub mod service;

use std::path::Path;

use serde_saphyr::Spanned;

use crate::diagnostic::Diagnostic;
use crate::located::Located;
use crate::yaml::place_of;

/// A YAML value with the place it was written.
fn located<T>(file: &Path, s: Spanned<T>) -> Located<T> {
    Located {
        place: place_of(file, &s),
        value: s.value,
    }
}

/// A diagnostic at a YAML value, with what to do.
fn err(file: &Path, s: &Spanned<impl Sized>, message: String, help: &str) -> Diagnostic {
    Diagnostic::new(place_of(file, s), message).help(help)
}
