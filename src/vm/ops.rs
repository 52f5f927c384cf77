//! `picaops vm list | start | stop | reboot | console | release` as library calls: which hypervisor, one
//! connection, the driver's script, the result. Nothing here prints; the CLI renders.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::engine::{self, HypervisorError, Scope, VmJob, VmReport};
use super::plan::Allowed;
use super::{Hypervisor, PowerOp, VmState};
use crate::inventory::{self, HypervisorKind, Inventory, Machine};
use crate::transport::{Connector, Target, Transport, TransportError};

/// Why a `picaops vm` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    /// `--limit` selects nothing the inventory has (the inventory's reason).
    #[error(transparent)]
    Limit(#[from] crate::inventory::select::LimitError),
    #[error("no hypervisor selected (hosts with `hypervisor: libvirt` or `proxmox`)")]
    NoHypervisorSelected,
    #[error(
        "`{vm}` is not a VM of the inventory; for one made by hand, say where it runs with --host HOST"
    )]
    NotAVm { vm: String },
    #[error("`{host}` is not a host of the inventory")]
    UnknownHost { host: String },
    #[error("host {host} has `hypervisor: none`: picaops runs no VM there")]
    NotAHypervisor { host: String },
    #[error("{host} has no VM driver")]
    NoDriver { host: String },
    /// The inventory does not say how to reach the hypervisor (its reason).
    #[error("{reason}")]
    Unreachable {
        host: String,
        reason: crate::inventory::NoAddress,
    },
    /// The hypervisor could not be connected to (the error names it).
    #[error(transparent)]
    Connect(TransportError),
    /// Reading the hypervisor, or running the driver's script there, failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// `present`: the VMs the hypervisor has.
    #[error("no VM named {vm} on {host} (VMs there: {})", .present.join(", "))]
    NoSuchVm {
        vm: String,
        host: String,
        present: Vec<String>,
    },
    #[error(
        "{vm} did not shut down within {secs} s after the ACPI request; nothing was forced (use \
         --force to cut the power)"
    )]
    ShutdownTimeout { vm: String, host: String, secs: u64 },
    /// `place`: where the inventory declares it.
    #[error(
        "{vm} is still declared in the inventory ({place}): released, the next apply would adopt \
         it again. Remove it from the inventory first (plan then says `- delete`, which apply \
         refuses without --allow-destroy {vm}), then run `picaops vm release {vm} --host {host}`"
    )]
    StillDeclared {
        vm: String,
        host: String,
        place: String,
    },
    #[error(
        "{vm} on {host} is not managed by picaops (no {mark}): nothing to release, plan already \
         leaves it alone"
    )]
    NotManaged {
        vm: String,
        host: String,
        mark: &'static str,
    },
}

impl VmOpError {
    /// 2 when nothing was contacted (the command line or the inventory is wrong), else 1 (the
    /// hypervisor was contacted, or tried, and the work failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOpError::Limit(_)
            | VmOpError::NoHypervisorSelected
            | VmOpError::NotAVm { .. }
            | VmOpError::UnknownHost { .. }
            | VmOpError::NotAHypervisor { .. }
            | VmOpError::NoDriver { .. }
            | VmOpError::StillDeclared { .. }
            | VmOpError::Unreachable { .. } => crate::output::EXIT_USAGE,
            VmOpError::Connect(_)
            | VmOpError::Hypervisor(_)
            | VmOpError::NoSuchVm { .. }
            | VmOpError::NotManaged { .. }
            | VmOpError::ShutdownTimeout { .. } => crate::output::EXIT_HOST_FAILED,
        }
    }
}

/// Every VM on the hypervisors `limit` selects (all without one), as the VM phase reads them.
pub async fn list(
    inv: Inventory,
    known_hosts: PathBuf,
    limit: Option<&str>,
) -> Result<VmReport, VmOpError> {
    let selected: Vec<String> = inventory::select::select(&inv, limit)
        .map_err(VmOpError::Limit)?
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let mut scope = Scope::of(&inv, &selected, false);
    if limit.is_some() {
        // With a limit, undeclared VMs are listed on the hypervisors it names only.
        scope.deletions_on = selected
            .iter()
            .filter(|n| inv.hosts.contains_key(*n))
            .cloned()
            .collect();
    }
    if scope.hosts.is_empty() {
        return Err(VmOpError::NoHypervisorSelected);
    }
    Ok(engine::run(Arc::new(VmJob {
        inventory: inv,
        known_hosts,
        connect_timeout: Duration::from_secs(10),
        forks: 50,
        apply: false,
        allowed: Allowed::default(),
        shutdown_timeout: Duration::from_secs(120),
        ssh_wait: Duration::ZERO,
        scope,
    }))
    .await)
}

/// The hypervisor of VM `name`: the inventory's, or `host` for a VM made by hand.
pub fn hypervisor_of(inv: &Inventory, name: &str, host: Option<&str>) -> Result<Target, VmOpError> {
    let host = match (host, inv.vms.get(name)) {
        (Some(h), _) => h.to_string(),
        (None, Some(v)) => v.host.value.clone(),
        (None, None) => {
            return Err(VmOpError::NotAVm {
                vm: name.to_string(),
            })
        }
    };
    let Some(h) = inv.hosts.get(&host) else {
        return Err(VmOpError::UnknownHost { host });
    };
    if h.hypervisor == HypervisorKind::None {
        return Err(VmOpError::NotAHypervisor { host });
    }
    inventory::target(Machine::Host(h)).map_err(|reason| VmOpError::Unreachable { host, reason })
}

/// Connects to VM `name`'s hypervisor, reads it, and hands the VM's state to `work`.
pub async fn with_vm<T>(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    host: Option<&str>,
    work: impl AsyncFnOnce(&dyn Hypervisor, &dyn Transport, &VmState) -> Result<T, VmOpError>,
) -> Result<T, VmOpError> {
    let target = hypervisor_of(inv, name, host)?;
    let driver =
        super::for_kind(inv.hosts[&target.name].hypervisor).ok_or_else(|| VmOpError::NoDriver {
            host: target.name.clone(),
        })?;
    let (_connector, transport) =
        Connector::connect_one(known_hosts, Duration::from_secs(10), &target)
            .await
            .map_err(VmOpError::Connect)?;
    let result = async {
        let read = engine::read_host(driver.as_ref(), &target.name, transport.as_ref()).await?;
        let state = read.get(name).ok_or_else(|| VmOpError::NoSuchVm {
            vm: name.to_string(),
            host: target.name.clone(),
            present: read.vms.iter().map(|v| v.name.clone()).collect(),
        })?;
        work(driver.as_ref(), transport.as_ref(), state).await
    }
    .await;
    let _ = transport.close().await;
    result
}

/// Starts, stops or restarts VM `name`; a graceful stop waits `timeout` and forces nothing.
/// Returns what was done, in words (`started`, `shut down`…).
pub async fn power(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    host: Option<&str>,
    op: PowerOp,
    timeout: Duration,
) -> Result<&'static str, VmOpError> {
    with_vm(
        inv,
        known_hosts,
        name,
        host,
        async |driver, transport, state| {
            let script = driver.power_script(state, op, timeout);
            engine::exec_script(transport, script, timeout + Duration::from_secs(120))
                .await
                .map_err(|e| {
                    if e.is_shutdown_timeout() {
                        VmOpError::ShutdownTimeout {
                            vm: state.name.clone(),
                            host: transport.target().name.clone(),
                            secs: timeout.as_secs(),
                        }
                    } else {
                        e.into()
                    }
                })
        },
    )
    .await?;
    Ok(match op {
        PowerOp::Start => "started",
        PowerOp::Stop { force: true } => "powered off",
        PowerOp::Stop { force: false } => "shut down",
        PowerOp::Reboot => "restarted",
    })
}

/// Stops managing VM `name` (on `host`, a VM the inventory no longer declares) without touching
/// it: removes the mark adopt and create record (Proxmox tag `picaops`, libvirt metadata), and
/// nothing else. A VM still declared is refused, since the next apply would adopt it again; one
/// picaops does not manage is refused too. Afterwards plan shows it as `. left alone`.
pub async fn release(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    host: Option<&str>,
) -> Result<&'static str, VmOpError> {
    if let Some(vm) = inv.vms.get(name) {
        return Err(VmOpError::StillDeclared {
            vm: name.to_string(),
            host: host.unwrap_or(&vm.host.value).to_string(),
            place: vm.place.to_string(),
        });
    }
    with_vm(
        inv,
        known_hosts,
        name,
        host,
        async |driver, transport, state| {
            check_releasable(driver.kind(), &transport.target().name, state)?;
            let script = driver
                .release_script(state)
                .map_err(HypervisorError::from)?;
            engine::exec_script(transport, script, Duration::from_secs(120)).await?;
            Ok(())
        },
    )
    .await?;
    Ok("released: no longer managed by picaops (the VM itself was not touched)")
}

/// A VM that picaops does not manage has nothing to release.
pub fn check_releasable(kind: &str, host: &str, state: &VmState) -> Result<(), VmOpError> {
    if state.managed {
        return Ok(());
    }
    Err(VmOpError::NotManaged {
        vm: state.name.clone(),
        host: host.to_string(),
        mark: if kind == "proxmox" {
            "`picaops` tag"
        } else {
            "<picaops:vm> in its metadata"
        },
    })
}

/// The interactive `ssh -t` command attaching to VM `name`'s serial console through its
/// hypervisor (the transport's multiplexed sessions have no terminal), with the same strict
/// host-key settings picaops uses everywhere.
pub async fn console(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    host: Option<&str>,
) -> Result<(Target, std::process::Command), VmOpError> {
    let argv = with_vm(inv, known_hosts, name, host, async |driver, _, state| {
        driver
            .console_argv(state)
            .map_err(|e| HypervisorError::from(e).into())
    })
    .await?;
    let target = hypervisor_of(inv, name, host)?;
    let mut line = crate::transport::quote::join(&argv);
    if target.become_root && target.user.as_deref() != Some("root") {
        line = format!("sudo {line}");
    }
    let cmd = crate::transport::interactive_ssh(&target, known_hosts, &line);
    Ok((target, cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_managed_vm_can_be_released_and_the_refusals_say_what_to_do() {
        let state = |managed| VmState {
            name: "old-pad".into(),
            id: "105".into(),
            power: crate::vm::model::Power::Running,
            vcpus: 1,
            memory_mib: 512,
            max_memory_mib: 512,
            disks: vec![],
            bridge: None,
            autostart: false,
            managed,
            uptime_secs: None,
            pending: vec![],
            extra: Default::default(),
        };
        assert!(check_releasable("libvirt", "bob", &state(true)).is_ok());
        let err = check_releasable("libvirt", "bob", &state(false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "old-pad on bob is not managed by picaops (no <picaops:vm> in its metadata): nothing \
             to release, plan already leaves it alone"
        );
        assert_eq!(err.exit_code(), crate::output::EXIT_HOST_FAILED);
        let declared = VmOpError::StillDeclared {
            vm: "pica01".into(),
            host: "bob".into(),
            place: "vms.yml:3:3".into(),
        };
        assert!(declared
            .to_string()
            .ends_with("then run `picaops vm release pica01 --host bob`"));
        assert_eq!(declared.exit_code(), crate::output::EXIT_USAGE);
    }
}
