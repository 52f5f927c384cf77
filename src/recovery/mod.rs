//! Recovering a lost site: where each of its VMs and services comes back ([`plan`]), checked
//! before anything is contacted (the recovery site, the hypervisors' room, a backup job for every
//! service with data at the recovery site, no port published twice at the new place).

pub mod apply;
pub mod failback;
pub use crate::fence;
pub mod plan;

pub use plan::{plan, RecoveryPlan, ServiceMove, VmMove};

use crate::backup::newest::SnapshotPart;
use crate::backup::ops::{self, Exec, OpError, RestoreRequest};
use crate::inventory::Inventory;

/// Why a backup operation of a step did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpFailed {
    #[error(transparent)]
    Op(#[from] OpError),
    /// The host side's own message for the job's line.
    #[error("{host}: {message}")]
    Line { host: String, message: String },
}

/// `Ok` when every line of the report is, else the first failed line.
pub(crate) fn done(report: Result<ops::Report, OpError>) -> Result<(), OpFailed> {
    match report?.jobs.into_iter().find(|l| !l.ok) {
        Some(l) => Err(OpFailed::Line {
            host: l.host,
            message: l.message,
        }),
        None => Ok(()),
    }
}

/// The directory's job `job` restored where `inv` places it, from the snapshots `latest`: its
/// files first, in place (the TLS files the dump's cn=config names), then each dump loaded into
/// that machine's slapd. Refused when they hold no dump (nothing would be loaded).
pub(crate) fn restore_directory(
    inv: &Inventory,
    job: &str,
    latest: &[SnapshotPart],
    exec: &mut Exec,
) -> Result<(), String> {
    let mut parts: Vec<&SnapshotPart> = latest.iter().collect();
    parts.sort_by_key(|p| p.part != "files");
    let mut loaded = 0;
    for part in parts {
        let dump = part.dump.clone().unwrap_or_default();
        let is_dump = part.part == "dump";
        let req = RestoreRequest {
            job,
            snapshot: Some(&part.id),
            to: (!is_dump).then_some(std::path::Path::new("/")),
            host: None,
            dump: is_dump.then_some(dump.as_str()),
            into_container: None,
            load: is_dump,
        };
        done(ops::restore(inv, &req, exec))
            .map_err(|e| format!("restoring the directory's {}: {e}", part.part))?;
        loaded += usize::from(is_dump);
    }
    if loaded == 0 {
        return Err(format!(
            "job {job}'s newest snapshots hold no ldap dump: nothing was loaded"
        ));
    }
    Ok(())
}
