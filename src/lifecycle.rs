//! The lifecycle every layer of a site run follows, and the one orchestrator that runs the layers.
//!
//! A [`Phase`] (VMs, converge, services, and whatever comes next) is *prepared* before anything is
//! contacted (its inputs checked), then *run*: it reads the state of its targets (one round trip
//! per machine), diffs it into changes, applies them in apply mode, and reports one [`Status`]
//! per machine. [`SiteRun`] owns what every phase shares: the inventory (loaded once, shared by
//! every phase), the pool [`Settings`] (`--forks`, `--connect-timeout`), progress, which machines
//! later phases leave out, and the exit code ([`Summary::exit_code`]).
//!
//! This module must not print and knows no subsystem: phases live beside what they drive
//! (`converge::phase`, `service::phase`, `vm::phase`) and `crate::site` composes them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::Inventory;
use crate::output::{Output, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use crate::transport::{PoolEvent, Target, TransportError};

/// Plan only reads; apply changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Plan,
    Apply,
}

/// What every phase of a run shares: the pool's limits and what the exit code means.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    /// How many machines a phase works on at the same time.
    pub forks: usize,
    /// Time allowed to connect to each machine.
    pub connect_timeout: Duration,
    /// Plan: exit 2 when changes are pending (for drift alarms), every error then exits 1.
    pub detailed_exitcode: bool,
    /// Draw a progress bar per phase (a terminal, human output).
    pub progress: bool,
}

/// The layers of a site run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    /// While a site is lost: its stale copies of what moved away are stopped first.
    Fence,
    Vms,
    Converge,
    Services,
}

impl PhaseKind {
    /// How messages name the phase.
    pub fn label(self) -> &'static str {
        match self {
            PhaseKind::Fence => "fence",
            PhaseKind::Vms => "VMs",
            PhaseKind::Converge => "converge",
            PhaseKind::Services => "services",
        }
    }
}

/// What one machine's part of a phase came to: the one status vocabulary of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Nothing to change.
    Unchanged,
    /// Plan: changes pending. Apply: changes made.
    Changed { changes: usize },
    /// Changes that need a flag the run was not given (`--allow-reboot`, `--allow-destroy`):
    /// nothing was done for them.
    Refused { changes: usize, reason: String },
    /// Could not be read, or a change failed.
    Failed { reason: String },
    /// Left out of this phase: an earlier phase failed on it or held it back.
    Skipped { reason: String },
}

impl Status {
    /// `Changed` with `changes` > 0, else `Unchanged`.
    pub fn from_changes(changes: usize) -> Status {
        if changes == 0 {
            Status::Unchanged
        } else {
            Status::Changed { changes }
        }
    }
}

/// One machine's status in one phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineStatus {
    pub machine: String,
    #[serde(flatten)]
    pub status: Status,
}

/// What a plan saw of one machine in one phase: a fingerprint of the state it read and a digest
/// of the changes it planned. A saved plan keeps these; applying it refuses if either moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePlan {
    pub state: String,
    pub changes: String,
}

impl MachinePlan {
    /// How this plan of a machine differs from the saved one, if it does.
    pub fn moved_from(&self, saved: Option<&MachinePlan>) -> Option<&'static str> {
        match saved {
            None => Some("it is not in the saved plan"),
            Some(s) if s.state != self.state => Some("its state changed"),
            Some(s) if s.changes != self.changes => Some("its planned changes changed"),
            Some(_) => None,
        }
    }
}

/// sha256 (hex) of a value's JSON form: how phases fingerprint what they read and planned.
pub fn digest(value: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

/// How a phase's own report is shown: each subsystem renders its detail, the run composes them.
pub trait Rendered: Send + Sync {
    /// Text for people (stdout).
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()>;
    /// The phase's JSON document.
    fn json(&self) -> Value;
    /// The subsystem's own report, for callers that know its type (saving a plan).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Every report a phase or a subsystem renders goes out through the one output path.
impl<T: Rendered> crate::output::Shown for T {
    fn json(&self) -> Value {
        Rendered::json(self)
    }
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        Rendered::human(self, out, w)
    }
}

/// What a phase reports.
pub struct PhaseReport {
    pub kind: PhaseKind,
    /// Every machine the phase worked on (or left out), in target order.
    pub machines: Vec<MachineStatus>,
    /// Machines later phases leave out, with why (a VM that is not created yet…), besides
    /// those that failed here.
    pub hold_back: BTreeMap<String, String>,
    /// A known_hosts file for the later phases (new VMs' keys pinned).
    pub known_hosts: Option<PathBuf>,
    /// Per machine read: what was seen and planned (for saved plans).
    pub plans: BTreeMap<String, MachinePlan>,
    /// The subsystem's report, for rendering.
    pub detail: Box<dyn Rendered>,
}

/// Why a phase could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    /// The phase's inputs are invalid (playbooks, templates, service definitions): nothing was
    /// contacted. `what` says where ("in the playbooks").
    #[error("{} error(s) {what}", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
        what: &'static str,
    },
    /// A usage problem (a flag, a secret that cannot be read): nothing was contacted.
    #[error("{0}")]
    Usage(String),
    /// The phase could not start its connections at all (no machine was served).
    #[error("{phase}: {source}", phase = .0.label(), source = .1)]
    Transport(PhaseKind, TransportError),
}

/// What a phase sees of the run.
pub struct RunContext {
    /// Loaded once for the whole run; every phase reads this same value.
    pub inventory: Arc<Inventory>,
    /// The known_hosts file passed to ssh (replaced when a phase pins new keys).
    pub known_hosts: PathBuf,
    pub settings: Settings,
    /// The machines the run was asked to act on (after `--limit`), in inventory order.
    pub selected: Vec<Target>,
    /// Whether `--limit` narrowed the run (VMs are only deleted on hypervisors selected).
    pub limited: bool,
}

/// One layer of a site run.
pub trait Phase: Send {
    fn kind(&self) -> PhaseKind;

    /// Checks everything this phase needs before any machine is contacted (of any phase).
    fn prepare(&mut self, cx: &RunContext) -> Result<(), PhaseError>;

    /// The machines of `selected` this phase works on. Called after the earlier phases ran, with
    /// the machines they failed on or held back already removed.
    fn targets(&self, cx: &RunContext, selected: &[Target]) -> Vec<Target>;

    /// Reads, diffs and (in apply mode) applies on `targets`, at most `cx.settings.forks` at a
    /// time, each connection given `cx.settings.connect_timeout`. Pool events go to `events`.
    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>>;
}

/// A run of the whole site: one inventory, one set of settings, phases in order.
pub struct SiteRun {
    pub cx: RunContext,
    phases: Vec<Box<dyn Phase>>,
}

impl SiteRun {
    /// A run over `selected` machines of `inventory`, with its phases in the order given.
    pub fn new(cx: RunContext, phases: Vec<Box<dyn Phase>>) -> SiteRun {
        SiteRun { cx, phases }
    }

    /// Prepares every phase (nothing contacted yet): the first invalid one stops the run.
    pub fn prepare(&mut self) -> Result<(), PhaseError> {
        for p in &mut self.phases {
            p.prepare(&self.cx)?;
        }
        Ok(())
    }

    /// Whether any phase has a machine to work on now (before running).
    pub fn has_work(&self) -> bool {
        self.phases
            .iter()
            .any(|p| !p.targets(&self.cx, &self.cx.selected).is_empty())
    }

    /// Runs the phases in order. A machine that fails in a phase, or that a phase holds back, is
    /// left out of the later phases (reported there as skipped); every other machine goes on.
    /// A phase that cannot start at all ends the run with what was done so far.
    pub async fn run(mut self) -> Result<Summary, (Summary, PhaseError)> {
        let mut summary = Summary {
            mode: self.cx.settings.mode,
            detailed_exitcode: self.cx.settings.detailed_exitcode,
            phases: Vec::new(),
        };
        let mut left_out: BTreeMap<String, String> = BTreeMap::new();
        for phase in &mut self.phases {
            let kind = phase.kind();
            let all = phase.targets(&self.cx, &self.cx.selected);
            let (targets, skipped): (Vec<Target>, Vec<Target>) = all
                .into_iter()
                .partition(|t| !left_out.contains_key(&t.name));
            let (events, display) = if self.cx.settings.progress && !targets.is_empty() {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(crate::progress::spawn(targets.len(), rx)))
            } else {
                (None, None)
            };
            let result = phase.run(&self.cx, targets, events).await;
            if let Some(display) = display {
                let _ = display.await;
            }
            let mut report = match result {
                Ok(r) => r,
                Err(e) => return Err((summary, e)),
            };
            for t in skipped {
                report.machines.push(MachineStatus {
                    status: Status::Skipped {
                        reason: left_out[&t.name].clone(),
                    },
                    machine: t.name,
                });
            }
            for m in &report.machines {
                if let Status::Failed { reason } = &m.status {
                    left_out.entry(m.machine.clone()).or_insert_with(|| {
                        format!("the {} phase failed on it: {reason}", kind.label())
                    });
                }
            }
            for (machine, why) in &report.hold_back {
                left_out
                    .entry(machine.clone())
                    .or_insert_with(|| why.clone());
            }
            if let Some(kh) = report.known_hosts.take() {
                self.cx.known_hosts = kh;
            }
            summary.phases.push(report);
        }
        Ok(summary)
    }
}

/// The result of a run: every phase's report, and the exit code they add up to.
pub struct Summary {
    pub mode: Mode,
    pub detailed_exitcode: bool,
    pub phases: Vec<PhaseReport>,
}

impl Summary {
    pub fn phase(&self, kind: PhaseKind) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.kind == kind)
    }

    /// Every machine status of every phase.
    pub fn statuses(&self) -> impl Iterator<Item = (PhaseKind, &MachineStatus)> {
        self.phases
            .iter()
            .flat_map(|p| p.machines.iter().map(move |m| (p.kind, m)))
    }

    pub fn failures(&self) -> usize {
        self.statuses()
            .filter(|(_, m)| matches!(m.status, Status::Failed { .. }))
            .count()
    }

    /// Changes pending (plan) or made (apply), refused ones included.
    pub fn changes(&self) -> usize {
        self.statuses()
            .map(|(_, m)| match m.status {
                Status::Changed { changes } | Status::Refused { changes, .. } => changes,
                _ => 0,
            })
            .sum()
    }

    /// The documented exit codes: 0 done (or, plan with `--detailed-exitcode`, nothing to
    /// change); 1 a machine failed (or, in apply, a change was refused for want of a flag:
    /// the site is not as declared); 2 changes pending under `--detailed-exitcode`.
    pub fn exit_code(&self) -> i32 {
        let refused = self
            .statuses()
            .any(|(_, m)| matches!(m.status, Status::Refused { .. }));
        if self.failures() > 0 || (self.mode == Mode::Apply && refused) {
            return EXIT_HOST_FAILED;
        }
        if self.mode == Mode::Plan && self.detailed_exitcode && self.changes() > 0 {
            return 2;
        }
        EXIT_OK
    }

    /// The exit code of a run stopped before any machine was contacted (invalid input): 2, or 1
    /// under `--detailed-exitcode` (where 2 means "changes pending").
    pub fn usage_exit_code(settings: &Settings) -> i32 {
        if settings.mode == Mode::Plan && settings.detailed_exitcode {
            EXIT_HOST_FAILED
        } else {
            EXIT_USAGE
        }
    }

    /// Every phase's statuses, for `-o json` (`phases: [{phase, machines: [...]}]`).
    pub fn statuses_json(&self) -> Value {
        Value::Array(
            self.phases
                .iter()
                .map(|p| serde_json::json!({ "phase": p.kind, "machines": p.machines }))
                .collect(),
        )
    }
}
