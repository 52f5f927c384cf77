//! The `backups:` section's types (parsed in [`crate::sections::backup`], below the inventory that
//! holds them, and checked against the whole inventory there) and the selection of jobs by the
//! workstation's commands.

use crate::inventory::Inventory;

pub use crate::inventory::backup_data_host as data_host;
pub use crate::sections::backup::*;

/// A job name that is not under `backups:`.
#[derive(Debug, thiserror::Error)]
#[error("no backup job named `{name}`.{hint} Jobs: {known}")]
pub struct UnknownJob {
    pub name: String,
    /// ` Did you mean `x`?`, or empty.
    pub hint: String,
    /// The jobs declared, comma-separated (`none` without any).
    pub known: String,
}

/// The inventory's jobs named in `names` (all when empty) whose data is on `host` (any when
/// `None`), in inventory order. An unknown name is an error, with the closest one.
pub fn select_jobs<'a>(
    inv: &'a Inventory,
    names: &[String],
    host: Option<&str>,
) -> Result<Vec<&'a BackupJob>, UnknownJob> {
    if let Some(name) = names.iter().find(|n| !inv.backups.contains_key(*n)) {
        let known: Vec<&str> = inv.backups.keys().map(String::as_str).collect();
        return Err(UnknownJob {
            name: name.clone(),
            hint: crate::diagnostic::did_you_mean(name, known.iter().copied())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_default(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    }
    Ok(inv
        .backups
        .values()
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .filter(|j| host.is_none_or(|h| data_host(inv, j).is_some_and(|m| m.name() == h)))
        .collect())
}
