//! Recovering a lost site: where each of its VMs and services comes back ([`plan`]), checked
//! before anything is contacted (the recovery site, the hypervisors' room, a backup job for every
//! service with data at the recovery site, no port published twice at the new place).

pub mod apply;
pub mod failback;
pub use crate::fence;
pub mod plan;

pub use plan::{plan, RecoveryPlan, ServiceMove, VmMove};

use crate::backup::ops::{self, OpError};

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
