//! The converge phase of a site run: the playbooks on every selected host and VM a play applies
//! to (files, packages, users, units, commands), one read round trip per host and one write.
//!
//! Prepared before anything is contacted: playbooks loaded, engine variables added (their secrets
//! read only when a playbook uses them), every task expanded once (`precheck`).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::saved::SavedPlan;
use super::{report, Job, Report};
use crate::diagnostic::Sources;
use crate::inventory::Inventory;
use crate::lifecycle::{
    MachinePlan, MachineStatus, Phase, PhaseError, PhaseKind, PhaseReport, Rendered, RunContext,
    Status,
};
use crate::output::Output;
use crate::playbook::template::Templates;
use crate::transport::{PoolEvent, Target};

/// Why an engine's variables cannot be given to playbooks (a secret, a file, the helper binary).
#[derive(Debug, thiserror::Error)]
pub enum EngineVarsError {
    #[error(transparent)]
    Access(#[from] crate::access::vars::VarsError),
    #[error(transparent)]
    Backup(#[from] crate::backup::deploy::DeployError),
    #[error(transparent)]
    Remind(#[from] crate::access::remind_file::VarsError),
}

/// Adds the variables one engine gives playbooks (reading the secrets they need).
type AddEngineVars = fn(&mut Inventory) -> Result<(), EngineVarsError>;

/// The engine variables playbooks may use, by the name a playbook mentions.
const ENGINES: [(&str, AddEngineVars); 3] = [
    ("picaops_access", |inv| {
        Ok(crate::access::vars::add_engine_vars(inv)?)
    }),
    ("picaops_backup", |inv| {
        Ok(crate::backup::deploy::add_engine_vars(inv)?)
    }),
    ("picaops_remind", |inv| {
        Ok(crate::access::remind_file::add_engine_vars(inv)?)
    }),
];

/// What to converge: the playbooks and the task selection.
pub struct ConvergeRequest {
    pub playbooks: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: BTreeMap<String, Value>,
    /// How long an apply waits for another run's lock on a host.
    pub lock_wait: Duration,
    /// Applying a saved plan: what each host's state and changes must still be.
    pub expected: Option<SavedPlan>,
}

pub struct ConvergePhase {
    request: Option<ConvergeRequest>,
    job: Option<Job>,
    /// Hosts at least one play applies to (and, with a saved plan, that the plan covers).
    eligible: BTreeSet<String>,
}

impl ConvergePhase {
    pub fn new(request: ConvergeRequest) -> ConvergePhase {
        ConvergePhase {
            request: Some(request),
            job: None,
            eligible: BTreeSet::new(),
        }
    }
}

impl Phase for ConvergePhase {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Converge
    }

    fn prepare(&mut self, cx: &RunContext) -> Result<(), PhaseError> {
        let Some(req) = self.request.take() else {
            return Ok(());
        };
        let templates = Templates::new();
        let mut sources = Sources::default();
        let books = super::load_playbooks(&req.playbooks, &templates, &mut sources).map_err(
            |diagnostics| PhaseError::Invalid {
                diagnostics,
                sources: sources.clone(),
                what: "in the playbooks",
            },
        )?;
        let mut inventory = (*cx.inventory).clone();
        // Engine variables are computed (and their secrets read) only for playbooks using them.
        for (name, add) in ENGINES {
            let used = books
                .iter()
                .any(|b| sources.text(&b.path).is_some_and(|t| t.contains(name)));
            if used {
                add(&mut inventory)
                    .map_err(|e| PhaseError::Usage(format!("{e}; nothing was contacted")))?;
            }
        }
        let job = Job {
            inventory,
            playbooks: books,
            templates,
            extra_vars: req.extra_vars,
            tags: req.tags,
            skip_tags: req.skip_tags,
            mode: cx.settings.mode,
            lock_wait: req.lock_wait,
            lock_info: super::lock_info(),
            expected: req.expected,
            sources: Mutex::new(sources),
            known_hosts: cx.known_hosts.clone(),
            connect_timeout: cx.settings.connect_timeout,
            forks: cx.settings.forks,
        };
        // Hosts no play applies to are not contacted at all.
        self.eligible = super::hosts_with_plays(&job, &cx.selected)
            .into_iter()
            .filter(|h| {
                job.expected
                    .as_ref()
                    .is_none_or(|p| p.hosts.contains_key(h))
            })
            .collect();
        let targets = self.targets(cx, &cx.selected);
        super::precheck(&job, &targets).map_err(|diagnostics| PhaseError::Invalid {
            diagnostics,
            sources: job.sources.lock().map(|s| s.clone()).unwrap_or_default(),
            what: "in the playbooks",
        })?;
        self.job = Some(job);
        Ok(())
    }

    fn targets(&self, _cx: &RunContext, selected: &[Target]) -> Vec<Target> {
        selected
            .iter()
            .filter(|t| self.eligible.contains(&t.name))
            .cloned()
            .collect()
    }

    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>> {
        Box::pin(async move {
            let mut job = self.job.take().ok_or_else(|| {
                PhaseError::Usage("the converge phase ran without being prepared".into())
            })?;
            // An earlier phase may have pinned new keys (new VMs).
            job.known_hosts = cx.known_hosts.clone();
            let secrets = super::secret_values(&job);
            let job = Arc::new(job);
            let report = if targets.is_empty() {
                Report {
                    mode: cx.settings.mode,
                    hosts: Vec::new(),
                }
            } else {
                super::run(job.clone(), &targets, events)
                    .await
                    .map_err(|e| PhaseError::Transport(PhaseKind::Converge, e))?
            };
            let machines = report
                .hosts
                .iter()
                .map(|h| MachineStatus {
                    machine: h.name.clone(),
                    status: match &h.error {
                        Some(reason) => Status::Failed {
                            reason: reason.clone(),
                        },
                        None => Status::from_changes(h.changes()),
                    },
                })
                .collect();
            // The first segment's state and changes: what a saved plan checks per host.
            let plans = report
                .hosts
                .iter()
                .filter(|h| h.error.is_none())
                .map(|h| {
                    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
                    let plan = MachinePlan {
                        state: first(&h.fingerprints),
                        changes: first(&h.digests),
                    };
                    (h.name.clone(), plan)
                })
                .collect();
            Ok(PhaseReport {
                kind: PhaseKind::Converge,
                machines,
                hold_back: BTreeMap::new(),
                known_hosts: None,
                plans,
                detail: Box::new(ConvergeDetail {
                    report,
                    secrets,
                    extra_vars: job.extra_vars.clone(),
                }),
            })
        })
    }
}

/// The converge phase's report as the run renders it (and saves it, with `plan --out`).
pub struct ConvergeDetail {
    pub report: Report,
    /// Values redacted from everything shown.
    pub secrets: Vec<String>,
    /// The `-e` values the run used (a saved plan carries them).
    pub extra_vars: BTreeMap<String, Value>,
}

impl Rendered for ConvergeDetail {
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
