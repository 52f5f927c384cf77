//! VMs: the inventory's `vms:` kept true on the hypervisors, without ever destroying a disk by
//! surprise.
//!
//! - [`model`]: what a VM should be (`VmSpec`) and what it is (`VmState`).
//! - [`plan`]: the difference, classified (create, in-place, needs a reboot, destroys data) and
//!   authorised against `--allow-reboot` and `--allow-destroy NAME`.
//! - [`driver`]: the `Hypervisor` trait (read → change → apply as shell scripts run over SSH on
//!   the hypervisor), with [`libvirt`] (`virsh`, `qemu-img`, NoCloud seed) and [`proxmox`]
//!   (`qm`, `pvesh`, `pvesm`; not yet run against a live Proxmox host).
//! - [`cloud_init`]: the user-data both drivers give a new VM, with the SSH host key made on
//!   the hypervisor so picaops can pin it before the first login.
//! - [`engine`]: the VM phase of `plan`/`apply` over every hypervisor in parallel, pinning new
//!   VMs' host keys and waiting for SSH before they are converged.
//! - [`render`]: the plan and `picaops vm list` for people and for scripts.
//!
//! This module never prints and never builds an `ssh` command line: hosts are reached through
//! `crate::transport`.

pub mod cloud_init;
pub mod driver;
pub mod engine;
pub mod error;
pub mod libvirt;
pub mod model;
pub mod ops;
pub mod phase;
pub mod plan;
pub mod proxmox;
pub mod render;

pub use driver::{Hypervisor, PowerOp};
pub use engine::{Scope, VmJob, VmReport};
pub use model::{HostVms, VmSpec, VmState};
pub use plan::{Allowed, Risk, VmAction, VmPlan};

/// The driver for a host's `hypervisor:` kind (here, above the drivers and the trait they
/// implement, so neither imports the other's module).
pub fn for_kind(kind: crate::inventory::HypervisorKind) -> Option<Box<dyn Hypervisor>> {
    match kind {
        crate::inventory::HypervisorKind::Libvirt => Some(Box::new(libvirt::Libvirt)),
        crate::inventory::HypervisorKind::Proxmox => Some(Box::new(proxmox::Proxmox)),
        crate::inventory::HypervisorKind::None => None,
    }
}
