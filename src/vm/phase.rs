//! The VM phase of a site run, first of all: the hypervisors in scope read once each, VMs
//! planned and (apply) created or changed, new VMs' keys pinned and their SSH awaited, so the
//! converge phase that follows finds them ready. VMs that cannot be converged in this run are
//! held back from the later phases, with why.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::engine::{self, HostVmReport, Scope, VmJob, VmReport};
use super::plan::Allowed;
use super::render;
use crate::lifecycle::{
    digest, MachinePlan, MachineStatus, Mode, Phase, PhaseError, PhaseKind, PhaseReport, Rendered,
    RunContext, Status,
};
use crate::output::{Output, Style};
use crate::transport::{PoolEvent, Target};

/// What `apply` allows for VMs.
#[derive(Clone, Debug, Default)]
pub struct VmFlags {
    pub allow_reboot: bool,
    /// VMs whose data may be destroyed (deleted, a disk shrunk or removed), by name.
    pub allow_destroy: Vec<String>,
    /// Seconds a VM may take to shut down after the ACPI request (nothing is forced).
    pub shutdown_timeout: u64,
}

pub struct VmPhase {
    flags: VmFlags,
}

impl VmPhase {
    pub fn new(flags: VmFlags) -> VmPhase {
        VmPhase { flags }
    }
}

fn scope(cx: &RunContext) -> Scope {
    let names: Vec<String> = cx.selected.iter().map(|t| t.name.clone()).collect();
    Scope::of(&cx.inventory, &names, cx.limited)
}

impl Phase for VmPhase {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Vms
    }

    fn prepare(&mut self, _cx: &RunContext) -> Result<(), PhaseError> {
        Ok(())
    }

    /// The hypervisors in scope (a VM selected alone brings its hypervisor).
    fn targets(&self, cx: &RunContext, _selected: &[Target]) -> Vec<Target> {
        if cx.inventory.vms.is_empty() {
            return Vec::new();
        }
        scope(cx)
            .hosts
            .iter()
            .filter_map(|h| cx.inventory.machine(h))
            .filter_map(|m| crate::inventory::target(m).ok())
            .collect()
    }

    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        _events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>> {
        Box::pin(async move {
            let apply = cx.settings.mode == Mode::Apply;
            let report = if targets.is_empty() {
                VmReport::default()
            } else {
                let mut scope = scope(cx);
                let given: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                scope.hosts.retain(|h| given.contains(h.as_str()));
                let job = std::sync::Arc::new(VmJob {
                    inventory: (*cx.inventory).clone(),
                    known_hosts: cx.known_hosts.clone(),
                    connect_timeout: cx.settings.connect_timeout,
                    forks: cx.settings.forks,
                    apply,
                    allowed: Allowed {
                        reboot: self.flags.allow_reboot,
                        destroy: self.flags.allow_destroy.iter().cloned().collect(),
                    },
                    shutdown_timeout: Duration::from_secs(self.flags.shutdown_timeout.max(1)),
                    ssh_wait: Duration::from_secs(180),
                    scope,
                });
                engine::run(job).await
            };
            let not_converged = report.not_ready(&cx.inventory, apply);
            let plans = report
                .hosts
                .iter()
                .filter(|h| h.error.is_none())
                .map(|h| (h.host.clone(), hypervisor_plan(h)))
                .collect();
            let mut machines: Vec<MachineStatus> = Vec::new();
            for e in &report.errors {
                machines.push(MachineStatus {
                    machine: "(inventory)".into(),
                    status: Status::Failed { reason: e.clone() },
                });
            }
            for h in &report.hosts {
                if let Some(e) = &h.error {
                    machines.push(MachineStatus {
                        machine: h.host.clone(),
                        status: Status::Failed { reason: e.clone() },
                    });
                }
                for o in &h.vms {
                    let status = if let Some(e) = &o.error {
                        Status::Failed { reason: e.clone() }
                    } else if o.status == Some("failed") {
                        Status::Failed {
                            reason: "its change failed".into(),
                        }
                    } else if let (Some(why), true) = (&o.plan.refused, o.plan.is_change()) {
                        Status::Refused {
                            changes: 1,
                            reason: why.to_string(),
                        }
                    } else {
                        Status::from_changes(usize::from(o.plan.is_change()))
                    };
                    machines.push(MachineStatus {
                        machine: o.plan.name.clone(),
                        status,
                    });
                }
            }
            Ok(PhaseReport {
                kind: PhaseKind::Vms,
                machines,
                hold_back: not_converged.clone(),
                known_hosts: report.known_hosts.clone(),
                plans,
                detail: Box::new(VmDetail {
                    report,
                    not_converged,
                }),
            })
        })
    }
}

/// What the plan saw on one hypervisor: every VM's state (uptime left out: it moves by itself)
/// and every VM's planned change.
fn hypervisor_plan(h: &HostVmReport) -> MachinePlan {
    let states: Vec<_> = h
        .vms
        .iter()
        .filter_map(|o| o.plan.state.clone())
        .map(|mut s| {
            s.uptime_secs = None;
            s
        })
        .collect();
    let plans: Vec<_> = h.vms.iter().map(|o| &o.plan).collect();
    MachinePlan {
        state: digest(&states),
        changes: digest(&plans),
    }
}

/// The VM phase's report as the run renders it: the plan or outcome per hypervisor, and the
/// VMs the later phases leave out.
pub struct VmDetail {
    pub report: VmReport,
    pub not_converged: BTreeMap<String, String>,
}

impl Rendered for VmDetail {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        render::render_human(&self.report, out, w)?;
        for (name, why) in &self.not_converged {
            writeln!(
                w,
                "  {} {name} is not converged in this run: {why}",
                out.paint(Style::Dim, "note:")
            )?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        let mut doc = render::render_json(&self.report);
        doc["not_converged"] = serde_json::json!(self.not_converged);
        doc
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
