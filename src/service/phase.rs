//! The services phase of a site run: the Compose projects of the selected machines, rendered and
//! checked before anything is contacted, then planned or deployed behind the health gate (one
//! read round trip per machine).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::deploy::{self, Report};
use super::{report, Project};
use crate::diagnostic::{Diagnostic, Sources};
use crate::lifecycle::{
    MachinePlan, MachineStatus, Phase, PhaseError, PhaseKind, PhaseReport, Rendered, RunContext,
    Status,
};
use crate::output::Output;
use crate::transport::{PoolEvent, Target};

pub struct ServicesPhase {
    /// Take down projects no longer in the inventory (their data and volumes stay).
    prune: bool,
    projects: Option<Vec<Project>>,
    /// Applying a saved plan: what each machine must still look like.
    expected: Option<BTreeMap<String, MachinePlan>>,
}

impl ServicesPhase {
    pub fn new(prune: bool, expected: Option<BTreeMap<String, MachinePlan>>) -> ServicesPhase {
        ServicesPhase {
            prune,
            projects: None,
            expected,
        }
    }
}

impl Phase for ServicesPhase {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Services
    }

    fn prepare(&mut self, cx: &RunContext) -> Result<(), PhaseError> {
        let machines: BTreeSet<String> = self
            .targets(cx, &cx.selected)
            .into_iter()
            .map(|t| t.name)
            .collect();
        let mut sources = Sources::default();
        let projects = super::prepare(&cx.inventory, Some(&machines), &mut sources).map_err(
            |diagnostics| {
                add_sources(&diagnostics, &mut sources);
                PhaseError::Invalid {
                    diagnostics,
                    sources,
                    what: "in the services",
                }
            },
        )?;
        self.projects = Some(projects);
        Ok(())
    }

    fn targets(&self, cx: &RunContext, selected: &[Target]) -> Vec<Target> {
        deploy::targets(&cx.inventory, selected.to_vec(), self.prune)
    }

    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>> {
        Box::pin(async move {
            let projects = self.projects.take().ok_or_else(|| {
                PhaseError::Usage("the services phase ran without being prepared".into())
            })?;
            let secrets = super::secret_values(&projects);
            let report = if targets.is_empty() {
                Report {
                    mode: cx.settings.mode,
                    machines: Vec::new(),
                }
            } else {
                let job = Arc::new(deploy::Job {
                    projects,
                    mode: cx.settings.mode,
                    prune: self.prune,
                    known_hosts: cx.known_hosts.clone(),
                    connect_timeout: cx.settings.connect_timeout,
                    forks: cx.settings.forks,
                    secrets: secrets.clone(),
                    expected: self.expected.clone(),
                });
                deploy::run(job, &targets, events)
                    .await
                    .map_err(|e| PhaseError::Transport(PhaseKind::Services, e))?
            };
            let machines = report
                .machines
                .iter()
                .map(|m| {
                    let failed = m.error.clone().or_else(|| {
                        m.changes.iter().find_map(|c| {
                            c.error
                                .as_ref()
                                .map(|e| format!("service {}: {e}", c.service))
                        })
                    });
                    let changes = m.changes.iter().filter(|c| c.action.changes()).count();
                    MachineStatus {
                        machine: m.machine.clone(),
                        status: match failed {
                            Some(reason) => Status::Failed { reason },
                            None => Status::from_changes(changes),
                        },
                    }
                })
                .collect();
            let plans = report
                .machines
                .iter()
                .filter_map(|m| Some((m.machine.clone(), m.plan.clone()?)))
                .collect();
            Ok(PhaseReport {
                kind: PhaseKind::Services,
                machines,
                hold_back: BTreeMap::new(),
                known_hosts: None,
                plans,
                detail: Box::new(ServicesDetail { report, secrets }),
            })
        })
    }
}

/// Adds the text of every file a diagnostic points into (inventory files), for excerpts.
pub fn add_sources(diags: &[Diagnostic], sources: &mut Sources) {
    for d in diags {
        for place in std::iter::once(&d.place).chain(d.notes.iter().map(|(p, _)| p)) {
            if sources.text(&place.file).is_none() {
                if let Ok(text) = std::fs::read_to_string(&place.file) {
                    sources.add(&place.file, &text);
                }
            }
        }
    }
}

/// The services phase's report as the run renders it.
pub struct ServicesDetail {
    pub report: Report,
    /// Values redacted from everything shown.
    pub secrets: Vec<String>,
}

impl Rendered for ServicesDetail {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        report::render_human(&self.report, out, &self.secrets, w)
    }

    fn json(&self) -> Value {
        report::render_json(&self.report, &self.secrets)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
