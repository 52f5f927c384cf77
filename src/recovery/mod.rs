//! Recovering a lost site: where each of its VMs and services comes back ([`plan`]), checked
//! before anything is contacted (the recovery site, the hypervisors' room, a backup job for every
//! service with data at the recovery site, no port published twice at the new place).

pub mod apply;
pub mod failback;
pub mod fence;
pub mod plan;

pub use plan::{plan, RecoveryPlan, ServiceMove, VmMove};
