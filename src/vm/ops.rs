//! `picaops vm list | start | stop | reboot | console` as library calls: which hypervisor, one
//! connection, the driver's script, the result. Nothing here prints; the CLI renders.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::engine::{self, Scope, VmJob, VmReport};
use super::plan::Allowed;
use super::{Hypervisor, PowerOp, VmState};
use crate::inventory::{self, HypervisorKind, Inventory, Machine};
use crate::transport::{Connector, Target, Transport};

/// Why a `picaops vm` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    /// Exit 2: nothing was contacted.
    #[error("{0}")]
    Usage(String),
    /// Exit 1: the hypervisor was contacted (or tried) and the work failed.
    #[error("{0}")]
    Failed(String),
}

impl VmOpError {
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOpError::Usage(_) => crate::output::EXIT_USAGE,
            VmOpError::Failed(_) => crate::output::EXIT_HOST_FAILED,
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
        .map_err(VmOpError::Usage)?
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
        return Err(VmOpError::Usage(
            "no hypervisor selected (hosts with `hypervisor: libvirt` or `proxmox`)".into(),
        ));
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
            return Err(VmOpError::Usage(format!(
                "`{name}` is not a VM of the inventory; for one made by hand, say where it runs with --host HOST"
            )))
        }
    };
    let h = inv
        .hosts
        .get(&host)
        .ok_or_else(|| VmOpError::Usage(format!("`{host}` is not a host of the inventory")))?;
    if h.hypervisor == HypervisorKind::None {
        return Err(VmOpError::Usage(format!(
            "host {host} has `hypervisor: none`: picaops runs no VM there"
        )));
    }
    inventory::target(Machine::Host(h)).map_err(VmOpError::Usage)
}

/// Connects to VM `name`'s hypervisor, reads it, and hands the VM's state to `work`.
pub async fn with_vm<T>(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    host: Option<&str>,
    work: impl AsyncFnOnce(&dyn Hypervisor, &dyn Transport, &VmState) -> Result<T, String>,
) -> Result<T, VmOpError> {
    let target = hypervisor_of(inv, name, host)?;
    let driver = super::for_kind(inv.hosts[&target.name].hypervisor)
        .ok_or_else(|| VmOpError::Usage(format!("{} has no VM driver", target.name)))?;
    let failed = |e: String| VmOpError::Failed(e);
    let (_connector, transport) =
        Connector::connect_one(known_hosts, Duration::from_secs(10), &target)
            .await
            .map_err(|e| failed(e.to_string()))?;
    let result = async {
        let read = engine::read_host(driver.as_ref(), &target.name, transport.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let state = read.get(name).ok_or_else(|| {
            format!(
                "no VM named {name} on {} (VMs there: {})",
                target.name,
                read.vms
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        work(driver.as_ref(), transport.as_ref(), state).await
    }
    .await;
    let _ = transport.close().await;
    result.map_err(failed)
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
                        format!(
                            "{} did not shut down within {} s after the ACPI request; nothing was \
                         forced (use --force to cut the power)",
                            state.name,
                            timeout.as_secs()
                        )
                    } else {
                        e.to_string()
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
        driver.console_argv(state).map_err(|e| e.to_string())
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
