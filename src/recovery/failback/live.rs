//! The machines a failback works on: the calls of its steps and its site runs (converge,
//! services), behind [`Remote`] so that the order of the steps is tested without machines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backup::ops::OpError;
use crate::backup::remote::{Answer, Call};
use crate::inventory::{self, Inventory};
use crate::lifecycle::{Mode, Settings};

/// Runs calls on machines, resolving their names in the inventory given (placements move
/// during a failback).
pub type ExecIn<'a> =
    dyn FnMut(&Inventory, Vec<Call>, Option<Duration>) -> Result<Vec<Answer>, OpError> + 'a;

/// Which site run [`Remote::converge`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvergeRun {
    /// The home machines: VMs, then the playbooks (no services: their data comes first).
    Home,
    /// Only the playbooks' `backup`-tagged plays: the job files rewritten as the inventory now
    /// says (retention thawed once `recovery.yml` is gone, frozen again while it is back).
    JobFiles,
    /// Only the `access`-tagged plays: the access helpers pointed where the directory now is.
    Access,
}

/// What did not end well in a site run, by machine and by service.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    pub machines: BTreeMap<String, String>,
    pub services: BTreeMap<String, String>,
}

/// What a failback does on machines: the calls of its steps, and the site runs.
pub trait Remote {
    fn exec(
        &mut self,
        inv: &Inventory,
        calls: Vec<Call>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Answer>, OpError>;
    /// A converge run over `machines` (every one failed, with why, if it cannot run at all).
    fn converge(&mut self, inv: &Inventory, machines: &[String], run: ConvergeRun) -> Failures;
    /// The services phase over `machines`, behind the health gate.
    fn deploy(&mut self, inv: &Inventory, machines: &[String]) -> Failures;
}

/// The real machines: calls through `exec` (SSH), site runs through the lifecycle.
pub struct Live<'a> {
    pub exec: &'a mut ExecIn<'a>,
    /// The playbooks home is converged with (empty: `playbooks/site.yml` beside the inventory).
    pub playbooks: Vec<PathBuf>,
    pub settings: Settings,
}

impl Live<'_> {
    fn playbooks(&self, inv: &Inventory) -> Vec<PathBuf> {
        crate::site::Request {
            inventory_dir: inv.dir.clone(),
            playbooks: self.playbooks.clone(),
            ..Default::default()
        }
        .playbook_files()
    }

    fn settings(&self) -> Settings {
        Settings {
            mode: Mode::Apply,
            ..self.settings.clone()
        }
    }

    fn all_failed(machines: &[String], why: String) -> Failures {
        Failures {
            machines: machines.iter().map(|m| (m.clone(), why.clone())).collect(),
            services: BTreeMap::new(),
        }
    }
}

impl Remote for Live<'_> {
    fn exec(
        &mut self,
        inv: &Inventory,
        calls: Vec<Call>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Answer>, OpError> {
        (self.exec)(inv, calls, timeout)
    }

    fn converge(&mut self, inv: &Inventory, machines: &[String], run: ConvergeRun) -> Failures {
        use crate::converge::phase::{ConvergePhase, ConvergeRequest};
        use crate::lifecycle::{RunContext, SiteRun};
        let limit = machines.join(",");
        let (targets, known_hosts) = match inventory::select::targets(inv, Some(&limit)) {
            Ok(t) => t,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let playbooks = self.playbooks(inv);
        let lock_wait = Duration::from_secs(60);
        let prepared = match run {
            ConvergeRun::Home => crate::site::prepare(
                inv.clone(),
                targets,
                known_hosts,
                self.settings(),
                &crate::site::Request {
                    inventory_dir: inv.dir.clone(),
                    playbooks,
                    limit: Some(limit),
                    lock_wait,
                    ..Default::default()
                },
            ),
            ConvergeRun::JobFiles | ConvergeRun::Access => {
                let cx = RunContext {
                    inventory: std::sync::Arc::new(inv.clone()),
                    known_hosts,
                    settings: self.settings(),
                    selected: targets,
                    limited: true,
                };
                let mut run = SiteRun::new(
                    cx,
                    vec![Box::new(ConvergePhase::new(ConvergeRequest {
                        playbooks,
                        tags: vec![if run == ConvergeRun::Access {
                            "access".into()
                        } else {
                            "backup".into()
                        }],
                        skip_tags: Vec::new(),
                        extra_vars: BTreeMap::new(),
                        lock_wait,
                        expected: None,
                    }))],
                );
                run.prepare().map(|()| run)
            }
        };
        match prepared
            .map_err(crate::recovery::apply::RecoverError::from)
            .and_then(crate::recovery::apply::run_blocking)
        {
            Ok(summary) => Failures {
                machines: crate::recovery::apply::failed_machines(&summary),
                services: BTreeMap::new(),
            },
            Err(e) => Live::all_failed(machines, e.to_string()),
        }
    }

    fn deploy(&mut self, inv: &Inventory, machines: &[String]) -> Failures {
        use crate::lifecycle::{PhaseKind, RunContext, SiteRun};
        use crate::service::phase::{ServicesDetail, ServicesPhase};
        let limit = machines.join(",");
        let (targets, known_hosts) = match inventory::select::targets(inv, Some(&limit)) {
            Ok(t) => t,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let cx = RunContext {
            inventory: std::sync::Arc::new(inv.clone()),
            known_hosts,
            settings: self.settings(),
            selected: targets,
            limited: true,
        };
        let mut run = SiteRun::new(cx, vec![Box::new(ServicesPhase::new(false, None))]);
        let summary = match run
            .prepare()
            .map_err(crate::recovery::apply::RecoverError::from)
            .and_then(|()| crate::recovery::apply::run_blocking(run))
        {
            Ok(s) => s,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let mut failures = Failures {
            machines: crate::recovery::apply::failed_machines(&summary),
            services: BTreeMap::new(),
        };
        let detail = summary
            .phase(PhaseKind::Services)
            .and_then(|p| p.detail.as_any().downcast_ref::<ServicesDetail>());
        if let Some(d) = detail {
            for c in d.report.changes() {
                if let Some(e) = &c.error {
                    failures.services.insert(c.service.clone(), e.clone());
                }
            }
        }
        failures
    }
}
