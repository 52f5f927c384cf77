//! Failing a recovered site back home (`picaops site failback SITE`): the services and VMs that
//! `recovery.yml` moved away go back to their home machines with their newest data, and nothing
//! is deleted at the recovery place until home is healthy.
//!
//! The order, and why: each moved service is first **stopped** at its recovery place (what it
//! writes after that point would be lost), then **backed up** there (that snapshot is what home
//! gets, checked to be the one this run made), its VM (if it moved with one) shut down and set
//! aside under another name (disks kept). Then `recovery.yml` is rewritten without them (a copy
//! of the old one is kept beside it), the inventory reloaded (home placement), the home VMs
//! started (their host keys read back from their own seeds) and converged, the home copy's data
//! moved aside (kept) and the snapshot restored in its place, the services deployed behind
//! their health gate and their dumps loaded. Only once a service is healthy at home is its
//! recovery-place copy taken down (Compose `down` without `-v`, project moved aside, data kept;
//! its backup timer there disabled). When everything is home, retention is thawed on the
//! repository hosts. A service that does not come back healthy is stopped at home, its recovery
//! copy started again, and `recovery.yml` keeps it: it runs somewhere, and a second run retries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

mod directory;
mod live;
mod scripts;
mod show;

pub use live::{ConvergeRun, ExecIn, Failures, Live, Remote};
pub use scripts::*;

use super::{done, OpFailed};
use crate::backup::newest::SnapshotInfo;
use crate::backup::ops::{self, OpError, RestoreRequest};
use crate::backup::remote::{Answer, Call, Side};
use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::{self, HypervisorKind, Inventory};
use crate::recovery::apply::Step;
use crate::sections::backup::Holder;
use crate::sections::recovery::{render, FILE_NAME};
use crate::transport::RemoteCommand;

/// A moved service and where it goes back.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceBack {
    pub service: String,
    /// The machine it runs on now (its recovery place).
    pub at: String,
    /// The machine it goes back to.
    pub home: String,
    /// The moved VM it runs on: it goes home with that VM (`at` and `home` are the VM).
    pub vm: Option<String>,
    /// The backup job whose snapshot carries its data home (none: it keeps no data).
    pub job: Option<String>,
    pub data: Vec<String>,
    pub dumps: Vec<String>,
}

/// A moved VM and where it goes back.
#[derive(Clone, Debug, Serialize)]
pub struct VmBack {
    pub vm: String,
    /// The hypervisor it runs on now.
    pub at: String,
    pub at_kind: HypervisorKind,
    /// The hypervisor holding its home copy (shut down by fencing, disks kept).
    pub home: String,
    pub home_kind: HypervisorKind,
    /// The moved services running on it.
    pub services: Vec<String>,
    /// The name its recovery copy is kept under, shut off, once it is set aside.
    pub aside: String,
}

/// Everything `site failback SITE` will do (it contacts nothing to say so).
#[derive(Clone, Debug, Serialize)]
pub struct FailbackPlan {
    pub site: String,
    /// The site the moved services and VMs run at now.
    pub at_site: String,
    /// When the site was marked lost.
    pub since: String,
    pub recovery_file: PathBuf,
    /// Where the recovery file is kept once it is removed.
    pub kept_copy: PathBuf,
    pub services: Vec<ServiceBack>,
    pub vms: Vec<VmBack>,
    /// The directory, when the recovery moved it: it goes home last, once the services are.
    pub directory: Option<DirectoryBack>,
    /// What a person must do (public names pointing at the recovery place…).
    pub manual: Vec<String>,
}

/// The moved LDAP directory and where it goes back.
#[derive(Clone, Debug, Serialize)]
pub struct DirectoryBack {
    /// The job that keeps it (`access.directory.backup`).
    pub job: String,
    /// The machine its slapd runs on now.
    pub at: String,
    /// Its home machine.
    pub home: String,
}

impl FailbackPlan {
    /// The physical hosts at home that take the services and VMs back.
    pub fn home_hosts(&self) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|s| s.vm.is_none())
            .map(|s| s.home.clone())
            .chain(self.vms.iter().map(|v| v.home.clone()))
            .chain(self.directory.iter().map(|d| d.home.clone()))
            .collect()
    }
}

/// Why a failback did not start (nothing was changed) or stopped before its services.
#[derive(Debug, thiserror::Error)]
pub enum FailbackError {
    /// The inventory does not load: nothing was done.
    #[error("{} error(s) {what}", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
        what: &'static str,
    },
    #[error("site `{site}` is not lost: there is no inventory/{FILE_NAME}, every service runs at home already")]
    NotLost { site: String },
    #[error("inventory/{FILE_NAME} says site `{lost}` is lost, not `{site}`: `picaops site failback {lost}` brings it home")]
    OtherSiteLost { lost: String, site: String },
    #[error("{file} moves nothing of site `{site}`: remove it by hand once you have checked every service runs at home", file = .file.display())]
    NothingMoved { site: String, file: PathBuf },
    /// A home machine does not answer: nothing was stopped or changed.
    #[error("home is not ready: {}; nothing was stopped or changed, the services keep running at the recovery place. Run the failback again once it answers", list(.machines))]
    HomeUnreachable { machines: Vec<(String, String)> },
    /// A machine of the recovery place does not answer: its newest data cannot be backed up.
    #[error("the recovery place does not answer: {}; nothing was stopped or changed (home would get older data than what ran there)", list(.machines))]
    PlaceUnreachable { machines: Vec<(String, String)> },
    #[error("cannot reach the machines to check them: {0}")]
    Probe(#[source] OpError),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(machines: &[(String, String)]) -> String {
    machines
        .iter()
        .map(|(m, why)| format!("{m} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FailbackError {
    /// 2 when nothing was done (the inventory, the command or an unreachable machine), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            FailbackError::Probe(_) | FailbackError::Write { .. } => {
                crate::output::EXIT_HOST_FAILED
            }
            _ => crate::output::EXIT_USAGE,
        }
    }
}

/// `20261204-183000` from `2026-12-04T18:30:00Z`: the suffix of what is set aside.
pub fn stamp(now: &str) -> String {
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 14 {
        format!("{}-{}", &digits[..8], &digits[8..14])
    } else {
        digits
    }
}

/// The name a VM's recovery copy is kept under (a valid VM name: 63 characters at most).
pub fn aside_name(vm: &str, stamp: &str) -> String {
    let suffix = format!("-failed-back-{stamp}");
    let keep = 63usize.saturating_sub(suffix.len()).min(vm.len());
    format!("{}{suffix}", &vm[..keep])
}

/// The job keeping service `name`'s data: the one its `backup:` names, else one whose
/// `service:` is it.
fn job_of<'a>(inv: &'a Inventory, name: &str) -> Option<&'a crate::sections::backup::BackupJob> {
    let named = inv.services.get(name).and_then(|s| {
        s.deploy
            .as_ref()
            .and_then(|d| d.backup.as_ref())
            .map(|b| b.value.clone())
    });
    match named {
        Some(job) => inv.backups.get(&job),
        None => inv
            .backups
            .values()
            .find(|j| matches!(&j.holder, Holder::Service(s) if s.value == name)),
    }
}

fn kind_of(inv: &Inventory, host: &str) -> HypervisorKind {
    inv.hosts
        .get(host)
        .map_or(HypervisorKind::None, |h| h.hypervisor)
}

/// The plan of failing `site` back, from the inventory as `recovery.yml` places it. Reads
/// nothing but the inventory. `now` (`YYYY-MM-DDTHH:MM:SSZ`) names what is set aside.
pub fn plan(inv: &Inventory, site: &str, now: &str) -> Result<FailbackPlan, FailbackError> {
    let file = inv.dir.join(FILE_NAME);
    let Some(rec) = &inv.recovery else {
        return Err(FailbackError::NotLost {
            site: site.to_string(),
        });
    };
    if rec.lost.value != site {
        return Err(FailbackError::OtherSiteLost {
            lost: rec.lost.value.clone(),
            site: site.to_string(),
        });
    }
    let stamp = stamp(now);
    let mut vms = Vec::new();
    for vm in inv.vms.values() {
        let Some(home) = &vm.moved_from else {
            continue;
        };
        vms.push(VmBack {
            vm: vm.name.clone(),
            at: vm.host.value.clone(),
            at_kind: kind_of(inv, &vm.host),
            home: home.value.clone(),
            home_kind: kind_of(inv, home),
            services: inv
                .services
                .values()
                .filter(|s| s.host.value == vm.name)
                .map(|s| s.name.clone())
                .collect(),
            aside: aside_name(&vm.name, &stamp),
        });
    }
    let mut services = Vec::new();
    for s in inv.services.values() {
        let vm = inv
            .vms
            .get(s.host.as_str())
            .filter(|v| v.moved_from.is_some())
            .map(|v| v.name.clone());
        let home = match (&s.moved_from, &vm) {
            (Some(home), _) => home.value.clone(),
            (None, Some(vm)) => vm.clone(),
            (None, None) => continue,
        };
        let job = job_of(inv, &s.name);
        services.push(ServiceBack {
            service: s.name.clone(),
            at: s.host.value.clone(),
            home,
            vm,
            job: job.map(|j| j.name.clone()),
            data: job
                .map(|j| j.paths.iter().map(|p| p.value.clone()).collect())
                .unwrap_or_default(),
            dumps: job
                .map(|j| j.dumps.iter().map(|d| d.file_name()).collect())
                .unwrap_or_default(),
        });
    }
    let directory = rec.directory.as_ref().and_then(|at| {
        let job = inv.access.as_ref()?.directory.backup.as_ref()?;
        let home = inv.backups.get(job.as_str())?.moved_from.as_ref()?;
        Some(DirectoryBack {
            job: job.value.clone(),
            at: at.value.clone(),
            home: home.value.clone(),
        })
    });
    if services.is_empty() && vms.is_empty() && directory.is_none() {
        return Err(FailbackError::NothingMoved {
            site: site.to_string(),
            file,
        });
    }
    let at_site = services
        .iter()
        .map(|s| s.at.as_str())
        .chain(vms.iter().map(|v| v.at.as_str()))
        .chain(directory.iter().map(|d| d.at.as_str()))
        .find_map(|m| inv.machine(m).and_then(|m| inv.site_of(m)))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut manual = Vec::new();
    for s in services.iter().filter(|s| s.vm.is_none()) {
        manual.push(format!(
            "point the public names of service `{}` back at `{}` (DNS records, reverse proxy) if the recovery pointed them at `{}`",
            s.service, s.home, s.at
        ));
    }
    for v in &vms {
        if v.home_kind != HypervisorKind::Libvirt {
            manual.push(format!(
                "VM `{}`: picaops reads a libvirt VM's host key back from its seed; for this one, if SSH says its key changed, \
                 check the key on its console and pin it again with `picaops inventory pin {}`",
                v.vm, v.vm
            ));
        }
        if inv
            .vms
            .get(&v.vm)
            .is_some_and(|m| m.ssh.address.is_some() && m.ssh.jump.is_none())
        {
            manual.push(format!(
                "VM `{}` has a fixed `address:`: if the recovery changed it for `{at_site}`, put its home address back",
                v.vm
            ));
        }
    }
    Ok(FailbackPlan {
        site: site.to_string(),
        at_site,
        since: rec.since.value.clone(),
        kept_copy: inv.dir.join(format!("{FILE_NAME}.failed-back-{stamp}")),
        recovery_file: file,
        services,
        vms,
        directory,
        manual,
    })
}

/// What `--apply` was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub site: String,
    /// Now, `YYYY-MM-DDTHH:MM:SSZ`: names what is set aside.
    pub now: String,
    /// How long a home VM may take to answer SSH once started.
    pub vm_wait: Duration,
}

/// How one service came home.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    pub home: String,
    /// Where it ran during the emergency.
    pub from: String,
    pub job: Option<String>,
    /// The snapshot home got (made by this run at the recovery place).
    pub snapshot: Option<String>,
    pub snapshot_time: Option<String>,
    /// From the start of the command until it was healthy at home with its data.
    pub healthy_after_seconds: Option<f64>,
    /// From its stop at the recovery place until it was healthy at home.
    pub downtime_seconds: Option<f64>,
    pub ok: bool,
    pub error: Option<String>,
    /// What is kept of it at the recovery place (or, on failure, that it runs there again).
    pub left: Option<String>,
    /// Its home data as it was before the failback, kept.
    pub home_data_kept: Vec<String>,
}

/// How one VM came home.
#[derive(Clone, Debug, Serialize)]
pub struct VmOutcome {
    pub vm: String,
    pub home: String,
    pub from: String,
    pub ok: bool,
    pub error: Option<String>,
    pub left: Option<String>,
}

/// The failback as it went.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub plan: FailbackPlan,
    /// Whether `recovery.yml` is gone (everything home); otherwise it holds what stays moved.
    pub recovery_removed: bool,
    pub kept_copy: Option<PathBuf>,
    /// Retention runs again on the repositories (job files rewritten).
    pub retention_thawed: bool,
    pub steps: Vec<Step>,
    pub services: Vec<ServiceOutcome>,
    pub vms: Vec<VmOutcome>,
    pub seconds: f64,
}

impl Outcome {
    /// 0 when everything came home healthy and the recovery place is cleared, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.steps.iter().all(|s| s.ok)
            && self.services.iter().all(|s| s.ok)
            && self.vms.iter().all(|v| v.ok)
        {
            crate::output::EXIT_OK
        } else {
            crate::output::EXIT_HOST_FAILED
        }
    }
}

/// How far a unit (a VM with its services, or one service) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Untouched,
    /// Its copies at the recovery place are stopped.
    Stopped,
    /// Its VM's recovery copy is shut down and renamed.
    Aside,
    /// `recovery.yml` no longer moves it: home is where it runs now.
    Home,
    /// Healthy at home.
    Done,
}

/// A VM with the services on it, or one service: what goes home (or stays) together.
struct Unit {
    vm: Option<usize>,
    services: Vec<usize>,
    stage: Stage,
    failed: Option<String>,
    /// The VM's recovery copy started with its host (to undo the set-aside).
    autostart: bool,
    /// The VM's pinned host key before home's was put back (to undo).
    old_key: Option<(String, String)>,
}

impl Unit {
    fn live(&self) -> bool {
        self.failed.is_none()
    }
    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }
}

/// The copies of services on one machine that a step acts on.
#[derive(Default)]
struct Copies {
    services: Vec<String>,
    jobs: Vec<String>,
    /// Their indexes in the plan.
    index: Vec<usize>,
}

impl Copies {
    fn add(&mut self, i: usize, s: &ServiceBack) {
        self.services.push(s.service.clone());
        self.jobs.extend(s.job.clone());
        self.index.push(i);
    }
}

/// One line of a script's answer.
struct Said {
    ok: bool,
    lines: Vec<String>,
    error: String,
}

fn said(a: &Answer) -> Said {
    match &a.result {
        Err(e) => Said {
            ok: false,
            lines: Vec::new(),
            error: e.message.clone(),
        },
        Ok(o) => {
            let stdout = o.stdout_lossy();
            let lines: Vec<String> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("@@"))
                .map(String::from)
                .collect();
            let error = lines
                .iter()
                .find_map(|l| l.strip_prefix("error "))
                .map(String::from)
                .unwrap_or_else(|| {
                    let err = o.stderr_lossy();
                    let last = err
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    format!("exit {}: {last}", o.exit_code)
                });
            Said {
                ok: o.success(),
                lines,
                error,
            }
        }
    }
}

fn call(machine: &str, what: &str, script: String) -> Call {
    Call {
        job: what.to_string(),
        machine: machine.to_string(),
        side: Side::Data,
        command: RemoteCommand::argv(["sh", "-c", script.as_str()]).with_become(true),
    }
}

const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs one call per machine; the answers by machine (a transport error for every one when
/// the calls could not be made at all).
fn round(
    remote: &mut dyn Remote,
    inv: &Inventory,
    calls: Vec<Call>,
    timeout: Duration,
) -> BTreeMap<String, Said> {
    let machines: Vec<String> = calls.iter().map(|c| c.machine.clone()).collect();
    if calls.is_empty() {
        return BTreeMap::new();
    }
    match remote.exec(inv, calls, Some(timeout)) {
        Ok(answers) => answers
            .iter()
            .map(|a| (a.call.machine.clone(), said(a)))
            .collect(),
        Err(e) => machines
            .into_iter()
            .map(|m| {
                (
                    m,
                    Said {
                        ok: false,
                        lines: Vec::new(),
                        error: e.to_string(),
                    },
                )
            })
            .collect(),
    }
}

fn load(dir: &Path) -> Result<Inventory, FailbackError> {
    crate::recovery::apply::load(dir).map_err(|e| match e {
        crate::recovery::apply::RecoverError::Invalid {
            diagnostics,
            sources,
            what,
        } => FailbackError::Invalid {
            diagnostics,
            sources,
            what,
        },
        other => FailbackError::Invalid {
            diagnostics: vec![Diagnostic::new(
                crate::diagnostic::Place::file(dir),
                other.to_string(),
            )],
            sources: Sources::default(),
            what: "in the inventory",
        },
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), FailbackError> {
    crate::recovery::apply::write_atomically(path, text).map_err(|e| match e {
        crate::recovery::apply::RecoverError::Write { path, source } => {
            FailbackError::Write { path, source }
        }
        other => FailbackError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// The state of the moves in `inv` minus those of units that went home: `recovery.yml` is
/// rewritten with the rest, or removed when nothing stays moved.
fn write_recovery(
    inv: &Inventory,
    plan: &FailbackPlan,
    units: &[Unit],
    directory_home: bool,
) -> Result<bool, FailbackError> {
    let Some(rec) = &inv.recovery else {
        return Ok(true);
    };
    let home_vms: BTreeSet<&str> = units
        .iter()
        .filter(|u| u.stage >= Stage::Home)
        .filter_map(|u| u.vm.map(|i| plan.vms[i].vm.as_str()))
        .collect();
    let home_services: BTreeSet<&str> = units
        .iter()
        .filter(|u| u.stage >= Stage::Home)
        .flat_map(|u| {
            u.services
                .iter()
                .map(|i| plan.services[*i].service.as_str())
        })
        .collect();
    let vms: Vec<(String, String)> = rec
        .vms
        .iter()
        .filter(|(k, _)| !home_vms.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let services: Vec<(String, String)> = rec
        .services
        .iter()
        .filter(|(k, _)| !home_services.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let directory = rec
        .directory
        .as_ref()
        .filter(|_| !directory_home)
        .map(|d| d.value.as_str());
    if vms.is_empty() && services.is_empty() && directory.is_none() {
        match std::fs::remove_file(&plan.recovery_file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(FailbackError::Write {
                path: plan.recovery_file.clone(),
                source,
            }),
        }
    } else {
        write_file(
            &plan.recovery_file,
            &render(&plan.site, &plan.since, &vms, &services, directory),
        )?;
        Ok(false)
    }
}

/// Calls `true` on `machines` until each answers or `wait` has passed; those that did not,
/// with why.
fn wait_for(
    remote: &mut dyn Remote,
    inv: &Inventory,
    machines: &[String],
    wait: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + wait;
    let mut left: Vec<String> = machines.to_vec();
    let mut why = BTreeMap::new();
    while !left.is_empty() {
        let calls = left
            .iter()
            .map(|m| call(m, "(answer)", "true".into()))
            .collect();
        let answers = round(remote, inv, calls, Duration::from_secs(30));
        left.retain(|m| match answers.get(m) {
            Some(s) if s.ok => {
                why.remove(m);
                false
            }
            Some(s) => {
                why.insert(m.clone(), s.error.clone());
                true
            }
            None => true,
        });
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        // A VM that is booting refuses connections at once: give it a moment between tries.
        std::thread::sleep(Duration::from_secs(2));
    }
    why.retain(|m, _| left.contains(m));
    why
}

/// Carries out the failback of `req.site` (see the module's text).
pub fn apply(dir: &Path, req: &Request, remote: &mut dyn Remote) -> Result<Outcome, FailbackError> {
    let moved = load(dir)?;
    let plan = plan(&moved, &req.site, &req.now)?;
    let mut f = Failback::new(dir, req, remote, moved, plan);
    f.probe()?;
    if !f.units.is_empty() {
        f.stop();
        f.backup();
        f.set_aside();
        // What failed so far runs again at the recovery place; nothing of it changed at home.
        let moved = f.moved.clone();
        f.undo_place(&moved);
        if f.live().is_empty() {
            // Nothing goes home: everything runs at the recovery place as before.
            return Ok(f.outcome());
        }
        f.rewrite()?;
        f.home_vms()?;
        f.converge();
        f.data();
        f.services();
        f.undo_failed_home()?;
        f.take_down();
    }
    f.directory()?;
    f.job_files();
    Ok(f.outcome())
}

/// A failback under way: the plan, how far each unit went, and what was measured.
struct Failback<'a> {
    dir: &'a Path,
    req: &'a Request,
    remote: &'a mut dyn Remote,
    start: Instant,
    stamp: String,
    plan: FailbackPlan,
    /// The inventory as `recovery.yml` placed things at the start.
    moved: Inventory,
    /// The inventory as it is now (home placement for what went home).
    home: Inventory,
    units: Vec<Unit>,
    steps: Vec<Step>,
    /// The recovery place's machines taking part.
    place: BTreeSet<String>,
    /// By job: the snapshot this run made at the recovery place.
    snapshots: BTreeMap<String, SnapshotInfo>,
    /// By service (index in the plan): when its recovery copy stopped, when healthy at home.
    stopped_at: BTreeMap<usize, Instant>,
    healthy: BTreeMap<usize, Instant>,
    /// By service: its home data moved aside; what is kept of it at the recovery place.
    home_aside: BTreeMap<usize, Vec<String>>,
    left: BTreeMap<usize, String>,
    /// Services running again at the recovery place after a failure.
    restarted: BTreeSet<usize>,
    /// Machines converged at home (their job files are as the inventory now says).
    converged: BTreeSet<String>,
    kept_copy: Option<PathBuf>,
    recovery_removed: bool,
    removed_at_first: bool,
    retention_thawed: bool,
}

impl<'a> Failback<'a> {
    fn new(
        dir: &'a Path,
        req: &'a Request,
        remote: &'a mut dyn Remote,
        moved: Inventory,
        plan: FailbackPlan,
    ) -> Failback<'a> {
        // The units: each moved VM with the services on it, then each other moved service.
        let unit = |vm, services| Unit {
            vm,
            services,
            stage: Stage::Untouched,
            failed: None,
            autostart: false,
            old_key: None,
        };
        let mut units = Vec::new();
        for (i, v) in plan.vms.iter().enumerate() {
            let on_it = plan
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.vm.as_deref() == Some(v.vm.as_str()))
                .map(|(j, _)| j)
                .collect();
            units.push(unit(Some(i), on_it));
        }
        for (j, s) in plan.services.iter().enumerate() {
            if s.vm.is_none() {
                units.push(unit(None, vec![j]));
            }
        }
        let place = plan
            .services
            .iter()
            .map(|s| s.at.clone())
            .chain(plan.vms.iter().map(|v| v.at.clone()))
            .chain(plan.directory.iter().map(|d| d.at.clone()))
            .collect();
        Failback {
            dir,
            req,
            remote,
            start: Instant::now(),
            stamp: stamp(&req.now),
            home: moved.clone(),
            moved,
            plan,
            units,
            steps: Vec::new(),
            place,
            snapshots: BTreeMap::new(),
            stopped_at: BTreeMap::new(),
            healthy: BTreeMap::new(),
            home_aside: BTreeMap::new(),
            left: BTreeMap::new(),
            restarted: BTreeSet::new(),
            converged: BTreeSet::new(),
            kept_copy: None,
            recovery_removed: false,
            removed_at_first: false,
            retention_thawed: false,
        }
    }

    fn step(&mut self, name: &'static str, clock: Instant, ok: bool, detail: String) {
        self.steps.push(Step {
            step: name,
            ok,
            seconds: clock.elapsed().as_secs_f64(),
            detail,
        });
    }

    /// How many units have failed so far (a step is ok when it adds none).
    fn failures(&self) -> usize {
        self.units.iter().filter(|u| !u.live()).count()
    }

    /// The live units' indexes.
    fn live(&self) -> Vec<usize> {
        (0..self.units.len())
            .filter(|&k| self.units[k].live())
            .collect()
    }

    /// Every machine at home a unit goes back to: the hypervisor and VM, the services' hosts.
    fn home_machines(&self, u: &Unit) -> Vec<String> {
        let mut m: Vec<String> = Vec::new();
        if let Some(i) = u.vm {
            m.push(self.plan.vms[i].home.clone());
            m.push(self.plan.vms[i].vm.clone());
        }
        m.extend(
            u.services
                .iter()
                .map(|i| self.plan.services[*i].home.clone()),
        );
        m.sort();
        m.dedup();
        m
    }

    /// Step 0: Every machine taking part answers, or nothing is done.
    fn probe(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let home_hosts: Vec<String> = self.plan.home_hosts().into_iter().collect();
        let probe: Vec<Call> = home_hosts
            .iter()
            .chain(self.place.iter().filter(|m| !home_hosts.contains(m)))
            .map(|m| call(m, "(answer)", "true".into()))
            .collect();
        let answers = self
            .remote
            .exec(&self.moved, probe, Some(Duration::from_secs(30)))
            .map_err(FailbackError::Probe)?;
        let down: BTreeMap<String, String> = answers
            .iter()
            .map(|a| (a.call.machine.clone(), said(a)))
            .filter(|(_, s)| !s.ok)
            .map(|(m, s)| (m, s.error))
            .collect();
        let home_down: Vec<(String, String)> = home_hosts
            .iter()
            .filter_map(|m| down.get(m).map(|w| (m.clone(), w.clone())))
            .collect();
        if !home_down.is_empty() {
            return Err(FailbackError::HomeUnreachable {
                machines: home_down,
            });
        }
        if !down.is_empty() {
            return Err(FailbackError::PlaceUnreachable {
                machines: down.into_iter().collect(),
            });
        }
        let detail = format!(
            "home ({}) and the recovery place ({}) answer",
            home_hosts.join(", "),
            self.place.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        self.step("answer", clock, true, detail);
        Ok(())
    }

    /// Step 1: Stopped at the recovery place (and their jobs' timers there), so that what the
    /// backup reads is the last word.
    fn stop(&mut self) {
        let clock = Instant::now();
        let failed_before = self.failures();
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        for (i, s) in self.plan.services.iter().enumerate() {
            per_machine.entry(s.at.clone()).or_default().add(i, s);
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| {
                // The databases its jobs dump keep running until the backup has read them.
                let keep: Vec<String> = c
                    .jobs
                    .iter()
                    .filter_map(|j| self.moved.backups.get(j))
                    .flat_map(|j| j.dumps.iter().filter_map(|d| d.container.clone()))
                    .collect();
                call(m, "(stop)", stop_script(&c.services, &c.jobs, &keep))
            })
            .collect();
        let answers = round(self.remote, &self.moved, calls, STEP_TIMEOUT);
        let now = Instant::now();
        for u in &mut self.units {
            for i in u.services.clone() {
                let s = &self.plan.services[i];
                match answers.get(&s.at) {
                    Some(a) if a.ok => {
                        self.stopped_at.insert(i, now);
                    }
                    Some(a) => u.fail(format!("stopping it at {}: {}", s.at, a.error)),
                    None => u.fail(format!("stopping it at {}: no answer", s.at)),
                }
            }
            // Even partly stopped: a failure starts again whatever was.
            u.stage = Stage::Stopped;
        }
        let detail = format!(
            "{} service(s) stopped at the recovery place (nothing removed)",
            self.stopped_at.len()
        );
        let ok = self.failures() == failed_before;
        self.step("stop", clock, ok, detail);
    }

    /// Step 2: Backed up there: the snapshot this makes is what home gets (checked to be the
    /// repository's newest: nothing else may have backed the job up since).
    fn backup(&mut self) {
        let clock = Instant::now();
        let jobs: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.units[k].services.clone())
            .filter_map(|i| self.plan.services[i].job.clone())
            .collect();
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        if !jobs.is_empty() {
            let (made, failed) = self.run_jobs(&jobs);
            errors.extend(failed);
            let listed: Vec<String> = made.keys().cloned().collect();
            if !listed.is_empty() {
                errors.extend(self.newest_of(&listed, &made));
            }
        }
        for u in self.units.iter_mut().filter(|u| u.live()) {
            for &i in &u.services.clone() {
                let job = self.plan.services[i].job.as_ref();
                if let Some(why) = job.and_then(|j| errors.get(j)) {
                    u.fail(why.clone());
                }
            }
        }
        let detail = format!(
            "{} job(s) backed up at the recovery place, {} failed",
            self.snapshots.len(),
            errors.len()
        );
        self.step("backup", clock, errors.is_empty(), detail);
    }

    /// `backup run` of `jobs` at the recovery place: the snapshot ids each made, and why the
    /// others did not.
    fn run_jobs(
        &mut self,
        jobs: &[String],
    ) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
        let moved = &self.moved;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(moved, calls, t);
        let (mut made, mut failed) = (BTreeMap::new(), BTreeMap::new());
        match ops::run(moved, jobs, &mut exec) {
            Ok(report) => {
                for l in report.jobs {
                    if !l.ok {
                        failed.insert(l.job, format!("backing it up at {}: {}", l.host, l.message));
                        continue;
                    }
                    let ids: Vec<String> = l.result["snapshots"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    made.insert(l.job, ids);
                }
            }
            Err(e) => {
                for j in jobs {
                    failed.insert(j.clone(), format!("backing it up: {e}"));
                }
            }
        }
        (made, failed)
    }

    /// The newest snapshots of `jobs` in their repositories, kept when they are the ones
    /// `made` lists; why not for the others.
    fn newest_of(
        &mut self,
        jobs: &[String],
        made: &BTreeMap<String, Vec<String>>,
    ) -> BTreeMap<String, String> {
        let moved = &self.moved;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(moved, calls, t);
        let mut errors = BTreeMap::new();
        let found = match ops::newest_snapshots(moved, jobs, &mut exec) {
            Ok(found) => found,
            Err(e) => {
                for j in jobs {
                    errors.insert(j.clone(), format!("listing its snapshots: {e}"));
                }
                return errors;
            }
        };
        for n in found {
            let ids = made.get(&n.job).cloned().unwrap_or_default();
            let ours = |id: &str| {
                ids.iter()
                    .any(|m| m.starts_with(id) || id.starts_with(m.as_str()))
            };
            match n.newest {
                Ok(Some(info)) => match info.latest.iter().find(|p| !ours(&p.id)) {
                    None => {
                        self.snapshots.insert(n.job, info);
                    }
                    Some(p) => {
                        let why = format!(
                            "the repository's newest {} snapshot of job {} ({} at {}) is not the one this failback made: \
                             something else backs the job up (a stale copy's timer?); stop it, then run the failback again",
                            p.part, n.job, p.short_id, p.time
                        );
                        errors.insert(n.job, why);
                    }
                },
                Ok(None) => {
                    let why = format!(
                        "job {} has no snapshot in its repository after its backup",
                        n.job
                    );
                    errors.insert(n.job, why);
                }
                Err(e) => {
                    errors.insert(n.job, e.to_string());
                }
            }
        }
        errors
    }

    /// Step 3: The moved VMs' recovery copies shut down, kept from starting with their host, and
    /// renamed (disks kept): the home copy is then the only one under its name.
    fn set_aside(&mut self) {
        let clock = Instant::now();
        let failed_before = self.failures();
        let calls: Vec<Call> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm)
            .map(|i| {
                let v = &self.plan.vms[i];
                call(&v.at, &v.vm, vm_aside_script(v.at_kind, &v.vm, &v.aside))
            })
            .collect();
        let asked = calls.len();
        let answers = by_vm(self.remote, &self.moved, calls);
        for u in self.units.iter_mut().filter(|u| u.live()) {
            let Some(i) = u.vm else { continue };
            let v = &self.plan.vms[i];
            match answers.get(&v.vm) {
                Some(a) if a.ok => {
                    u.autostart = a.lines.iter().any(|l| l == "autostart enable");
                    u.stage = Stage::Aside;
                }
                Some(a) => u.fail(format!(
                    "setting VM {} aside on {}: {}",
                    v.vm, v.at, a.error
                )),
                None => u.fail(format!("setting VM {} aside on {}: no answer", v.vm, v.at)),
            }
        }
        let ok = self.failures() == failed_before;
        self.step(
            "set aside",
            clock,
            ok,
            format!("{asked} VM(s) shut down and renamed at the recovery place (disks kept)"),
        );
    }

    /// Step 4: `recovery.yml` without what goes home (its old text kept beside it), and the
    /// inventory reloaded: home placement for those.
    fn rewrite(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let going = self.live();
        if !going.is_empty() {
            if let Ok(text) = std::fs::read_to_string(&self.plan.recovery_file) {
                write_file(&self.plan.kept_copy, &text)?;
                self.kept_copy = Some(self.plan.kept_copy.clone());
            }
            for k in &going {
                self.units[*k].stage = Stage::Home;
            }
            self.recovery_removed = write_recovery(&self.moved, &self.plan, &self.units, false)?;
            self.home = load(self.dir)?;
        }
        self.removed_at_first = self.recovery_removed;
        let detail = if going.is_empty() {
            "nothing goes home: left as it was".into()
        } else if self.recovery_removed {
            format!(
                "removed (kept as {})",
                self.plan
                    .kept_copy
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        } else {
            "rewritten with what stays at the recovery place".into()
        };
        self.step(FILE_NAME, clock, true, detail);
        Ok(())
    }

    /// Step 5: The home VMs started, their own host keys (read from their seeds) pinned again in
    /// place of their recovery copies', and answering.
    fn home_vms(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let failed_before = self.failures();
        let calls: Vec<Call> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm)
            .map(|i| {
                let v = &self.plan.vms[i];
                call(&v.home, &v.vm, vm_home_start_script(v.home_kind, &v.vm))
            })
            .collect();
        let started = calls.len();
        if started == 0 {
            return Ok(());
        }
        let answers = by_vm(self.remote, &self.home, calls);
        let mut pinned = false;
        for u in self.units.iter_mut().filter(|u| u.live()) {
            let Some(i) = u.vm else { continue };
            let v = &self.plan.vms[i];
            match answers.get(&v.vm) {
                Some(a) if a.ok => {
                    let key = a.lines.iter().find_map(|l| l.strip_prefix("hostkey "));
                    if let Some(key) = key {
                        match repin(&self.home, &v.vm, key) {
                            Ok(Some(old)) => {
                                u.old_key = Some(old);
                                pinned = true;
                            }
                            Ok(None) => {}
                            Err(e) => u.fail(format!("pinning VM {}'s home host key: {e}", v.vm)),
                        }
                    }
                }
                Some(a) => u.fail(format!("starting VM {} on {}: {}", v.vm, v.home, a.error)),
                None => u.fail(format!("starting VM {} on {}: no answer", v.vm, v.home)),
            }
        }
        if pinned {
            self.home = load(self.dir)?;
        }
        let vms: Vec<String> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm.map(|i| self.plan.vms[i].vm.clone()))
            .collect();
        let silent = wait_for(self.remote, &self.home, &vms, self.req.vm_wait);
        for u in self.units.iter_mut().filter(|u| u.live()) {
            if let Some(why) = u.vm.and_then(|i| silent.get(&self.plan.vms[i].vm)) {
                u.fail(format!("its home VM does not answer SSH: {why}"));
            }
        }
        let ok = self.failures() == failed_before;
        self.step(
            "home VMs",
            clock,
            ok,
            format!("{started} VM(s) started at home"),
        );
        Ok(())
    }

    /// Step 6: Home converged: the VMs, then the playbooks (backup job files as the inventory now
    /// says); not the services, whose data comes first.
    fn converge(&mut self) {
        let clock = Instant::now();
        let failed_before = self.failures();
        let machines: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.home_machines(&self.units[k]))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if machines.is_empty() {
            return;
        }
        let f = self
            .remote
            .converge(&self.home, &machines, ConvergeRun::Home);
        for k in self.live() {
            let on = self.home_machines(&self.units[k]);
            if let Some((m, why)) = on.iter().find_map(|m| f.machines.get(m).map(|w| (m, w))) {
                self.units[k].fail(format!("converging home on {m}: {why}"));
            }
        }
        self.converged = machines
            .iter()
            .filter(|m| !f.machines.contains_key(*m))
            .cloned()
            .collect();
        let ok = self.failures() == failed_before;
        let detail = format!("{} machine(s) converged at home", self.converged.len());
        self.step("converge", clock, ok, detail);
    }

    /// Step 7: At home, each service's stale copy stopped and its data moved aside (kept), then
    /// the snapshot's files restored in its place.
    fn data(&mut self) {
        let clock = Instant::now();
        let failed_before = self.failures();
        for k in self.live() {
            for i in self.units[k].services.clone() {
                if let Err(why) = self.restore_home(i) {
                    self.units[k].fail(why.to_string());
                    break;
                }
            }
        }
        let ok = self.failures() == failed_before;
        let detail = format!(
            "files restored at home for {} service(s); the home data from before is kept beside it",
            self.home_aside.len()
        );
        self.step("data", clock, ok, detail);
    }

    fn restore_home(&mut self, i: usize) -> Result<(), HomeError> {
        let s = self.plan.services[i].clone();
        let script = home_prepare_script(&s.service, s.job.as_deref(), &s.data, &self.stamp);
        let answer = round(
            self.remote,
            &self.home,
            vec![call(&s.home, &s.service, script)],
            STEP_TIMEOUT,
        );
        match answer.get(&s.home) {
            Some(a) if a.ok => {
                let kept = a
                    .lines
                    .iter()
                    .filter_map(|l| l.strip_prefix("aside "))
                    .filter_map(|l| l.split_once(' ').map(|(_, to)| to.to_string()))
                    .collect();
                self.home_aside.insert(i, kept);
            }
            other => {
                return Err(HomeError::Prepare {
                    machine: s.home.clone(),
                    why: other.map_or("no answer".into(), |a| a.error.clone()),
                })
            }
        }
        let (Some(job), Some(info)) = (&s.job, s.job.as_ref().and_then(|j| self.snapshots.get(j)))
        else {
            return Ok(());
        };
        let Some(files) = info.latest.iter().find(|p| p.part == "files") else {
            return Ok(());
        };
        let r = RestoreRequest {
            job,
            snapshot: Some(&files.id),
            to: Some(Path::new("/")),
            ..Default::default()
        };
        let home = &self.home;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(home, calls, t);
        done(ops::restore(home, &r, &mut exec)).map_err(|source| HomeError::Restore {
            job: job.clone(),
            machine: s.home.clone(),
            source: Box::new(source),
        })
    }

    /// Step 8: The services at home behind their health gate, then their dumps loaded.
    fn services(&mut self) {
        let clock = Instant::now();
        let failed_before = self.failures();
        let machines: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.units[k].services.clone())
            .map(|i| self.plan.services[i].home.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !machines.is_empty() {
            let f = self.remote.deploy(&self.home, &machines);
            for u in self.units.iter_mut().filter(|u| u.live()) {
                for &i in &u.services.clone() {
                    let s = &self.plan.services[i];
                    if let Some(why) = f.services.get(&s.service) {
                        u.fail(format!("deploying it on {}: {why}", s.home));
                    } else if let Some(why) = f.machines.get(&s.home) {
                        u.fail(format!("deploying on {}: {why}", s.home));
                    }
                }
            }
        }
        for k in self.live() {
            for i in self.units[k].services.clone() {
                if let Err(why) = self.load_dumps(i) {
                    self.units[k].fail(why.to_string());
                    break;
                }
            }
        }
        for k in self.live() {
            self.units[k].stage = Stage::Done;
            for i in self.units[k].services.clone() {
                self.healthy.insert(i, Instant::now());
            }
        }
        let ok = self.failures() == failed_before;
        let detail = format!(
            "{} service(s) healthy at home with their data",
            self.healthy.len()
        );
        self.step("services", clock, ok, detail);
    }

    fn load_dumps(&mut self, i: usize) -> Result<(), HomeError> {
        let s = self.plan.services[i].clone();
        let (Some(job), Some(info)) = (&s.job, s.job.as_ref().and_then(|j| self.snapshots.get(j)))
        else {
            return Ok(());
        };
        let home = &self.home;
        let remote = &mut *self.remote;
        for part in info.latest.iter().filter(|p| p.part == "dump") {
            let dump = part.dump.clone().unwrap_or_default();
            let r = RestoreRequest {
                job,
                snapshot: Some(&part.id),
                dump: Some(&dump),
                load: true,
                ..Default::default()
            };
            let mut exec = |calls, t| remote.exec(home, calls, t);
            done(ops::restore(home, &r, &mut exec)).map_err(|source| HomeError::Load {
                dump: dump.clone(),
                machine: s.home.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// What failed once home: stopped there, `recovery.yml` moving it again, and started again
    /// at the recovery place.
    fn undo_failed_home(&mut self) -> Result<(), FailbackError> {
        let failed: Vec<usize> = (0..self.units.len())
            .filter(|&k| !self.units[k].live() && self.units[k].stage >= Stage::Home)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let clock = Instant::now();
        undo_home(self.remote, &self.home, &self.plan, &self.units, &failed);
        for &k in &failed {
            self.units[k].stage = Stage::Aside;
        }
        self.recovery_removed = write_recovery(&self.moved, &self.plan, &self.units, false)?;
        let again = load(self.dir)?;
        self.undo_place(&again);
        self.home = again;
        let back = failed
            .iter()
            .flat_map(|k| self.units[*k].services.clone())
            .filter(|i| self.restarted.contains(i))
            .count();
        self.step(
            "back at the recovery place",
            clock,
            false,
            format!("{back} service(s) that did not come up at home run at the recovery place again ({FILE_NAME} moves them again)"),
        );
        Ok(())
    }

    /// Undoes, at the recovery place, what failed units went through there: each set-aside VM
    /// renamed back and started (then answering), each stopped service started again with its
    /// job's timer. `inv` places them at the recovery place.
    fn undo_place(&mut self, inv: &Inventory) {
        let todo: Vec<usize> = (0..self.units.len())
            .filter(|&k| {
                let u = &self.units[k];
                !u.live() && u.stage >= Stage::Stopped && u.stage < Stage::Home
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let plan = &self.plan;
        let calls: Vec<Call> = todo
            .iter()
            .filter(|&&k| self.units[k].stage >= Stage::Aside)
            .filter_map(|&k| self.units[k].vm.map(|i| (k, i)))
            .map(|(k, i)| {
                let v = &plan.vms[i];
                let back = vm_back_script(v.at_kind, &v.vm, &v.aside, self.units[k].autostart);
                call(&v.at, &v.vm, back)
            })
            .collect();
        let mut vm_ok: BTreeSet<String> = by_vm(self.remote, inv, calls)
            .into_iter()
            .filter(|(_, a)| a.ok)
            .map(|(vm, _)| vm)
            .collect();
        let vms: Vec<String> = vm_ok.iter().cloned().collect();
        let silent = wait_for(self.remote, inv, &vms, self.req.vm_wait);
        vm_ok.retain(|vm| !silent.contains_key(vm));
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        for &k in &todo {
            let u = &self.units[k];
            let vm_down =
                u.vm.is_some_and(|i| u.stage >= Stage::Aside && !vm_ok.contains(&plan.vms[i].vm));
            if vm_down {
                continue;
            }
            for &i in &u.services {
                per_machine
                    .entry(plan.services[i].at.clone())
                    .or_default()
                    .add(i, &plan.services[i]);
            }
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| call(m, "(start)", start_script(&c.services, &c.jobs)))
            .collect();
        let answers = round(self.remote, inv, calls, STEP_TIMEOUT);
        for (m, c) in &per_machine {
            if answers.get(m).is_some_and(|a| a.ok) {
                self.restarted.extend(c.index.iter().copied());
            }
        }
        for &k in &todo {
            self.units[k].stage = Stage::Untouched;
        }
    }

    /// Step 9: Home is healthy: the recovery place's copies taken down (data kept), their jobs'
    /// timers there disabled; home's timers started again.
    fn take_down(&mut self) {
        let clock = Instant::now();
        let done: Vec<usize> = (0..self.units.len())
            .filter(|&k| self.units[k].stage == Stage::Done)
            .collect();
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        let mut home_jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &k in &done {
            for &i in &self.units[k].services {
                let s = &self.plan.services[i];
                if let Some(job) = &s.job {
                    home_jobs
                        .entry(s.home.clone())
                        .or_default()
                        .push(job.clone());
                }
                if let Some(vm) = self.units[k].vm.map(|v| &self.plan.vms[v]) {
                    self.left.insert(
                        i,
                        format!(
                            "inside VM {}'s copy on {} (shut off, as {})",
                            vm.vm, vm.at, vm.aside
                        ),
                    );
                    continue;
                }
                per_machine.entry(s.at.clone()).or_default().add(i, s);
            }
        }
        if done.is_empty() {
            return;
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| {
                let script = take_down_script(&c.services, &c.jobs, &self.stamp);
                call(m, "(take down)", script)
            })
            .collect();
        let answers = round(self.remote, &self.home, calls, STEP_TIMEOUT);
        let mut errors = Vec::new();
        for (m, c) in &per_machine {
            for (&i, name) in c.index.iter().zip(&c.services) {
                let data = &self.plan.services[i].data;
                let left = match answers.get(m) {
                    Some(a) if a.ok => {
                        let to = a
                            .lines
                            .iter()
                            .find_map(|l| l.strip_prefix(&format!("removed service {name} ")))
                            .map(|to| format!("taken down on {m}; project kept in {to}"))
                            .unwrap_or_else(|| format!("nothing deployed on {m} any more"));
                        if data.is_empty() {
                            to
                        } else {
                            format!("{to}; data kept in {}", data.join(", "))
                        }
                    }
                    other => {
                        let why = other.map_or("no answer".to_string(), |a| a.error.clone());
                        errors.push(format!("{name} on {m}: {why}"));
                        format!(
                            "stopped on {m} but not taken down ({why}): take it down by hand (`docker compose -p {name} down`, no -v)"
                        )
                    }
                };
                self.left.insert(i, left);
            }
        }
        let calls = home_jobs
            .iter()
            .map(|(m, jobs)| call(m, "(timers)", home_timers_script(jobs)))
            .collect();
        let _ = round(self.remote, &self.home, calls, Duration::from_secs(60));
        let detail = if errors.is_empty() {
            format!(
                "{} service(s) taken down at the recovery place (no -v: volumes and data kept)",
                per_machine
                    .values()
                    .map(|c| c.services.len())
                    .sum::<usize>()
            )
        } else {
            errors.join("; ")
        };
        self.step("take down", clock, errors.is_empty(), detail);
    }

    /// Step 10: The backup job files rewritten where they matter: once everything is home, on the
    /// repositories' hosts and the recovery place (retention thawed); when some went back to
    /// the recovery place after home's were written without a lost site, on those again (frozen).
    fn job_files(&mut self) {
        let clock = Instant::now();
        if self.recovery_removed {
            let mut machines: BTreeSet<String> = self
                .home
                .backups
                .values()
                .map(|j| j.repository.host.value.clone())
                .collect();
            machines.extend(
                self.place
                    .iter()
                    .filter(|m| self.home.hosts.contains_key(*m))
                    .cloned(),
            );
            let machines: Vec<String> = machines
                .into_iter()
                .filter(|m| !self.converged.contains(m))
                .collect();
            let f = if machines.is_empty() {
                Failures::default()
            } else {
                self.remote
                    .converge(&self.home, &machines, ConvergeRun::JobFiles)
            };
            self.retention_thawed = f.machines.is_empty();
            let detail = if self.retention_thawed {
                "retention runs again: the repositories' job files rewritten".to_string()
            } else {
                format!(
                    "the job files of {} still freeze retention: run `picaops apply --tags backup -l {}`",
                    f.machines
                        .iter()
                        .map(|(m, w)| format!("{m} ({w})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    f.machines.keys().cloned().collect::<Vec<_>>().join(",")
                )
            };
            let ok = self.retention_thawed;
            self.step("thaw", clock, ok, detail);
        } else if self.removed_at_first && !self.converged.is_empty() {
            let machines: Vec<String> = self.converged.iter().cloned().collect();
            let f = self
                .remote
                .converge(&self.home, &machines, ConvergeRun::JobFiles);
            let detail = if f.machines.is_empty() {
                format!("retention frozen again on {}", machines.join(", "))
            } else {
                let failed: Vec<String> = f.machines.keys().cloned().collect();
                format!(
                    "retention may run on {}: run `picaops apply --tags backup -l {}`",
                    failed.join(", "),
                    failed.join(",")
                )
            };
            let ok = f.machines.is_empty();
            self.step("refreeze", clock, ok, detail);
        }
    }

    /// The report.
    fn outcome(self) -> Outcome {
        let services = self
            .plan
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| self.service_outcome(i, s))
            .collect();
        let vms = self
            .plan
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let error = self
                    .units
                    .iter()
                    .find(|u| u.vm == Some(i))
                    .and_then(|u| u.failed.clone());
                VmOutcome {
                    vm: v.vm.clone(),
                    home: v.home.clone(),
                    from: v.at.clone(),
                    ok: error.is_none(),
                    left: Some(if error.is_none() {
                        format!(
                            "shut off on {} as {} (disks kept); delete it when home is fine: `picaops apply -l {} --allow-destroy {}`",
                            v.at, v.aside, v.at, v.aside
                        )
                    } else {
                        format!("runs on {} (still moved in {FILE_NAME})", v.at)
                    }),
                    error,
                }
            })
            .collect();
        Outcome {
            seconds: self.start.elapsed().as_secs_f64(),
            plan: self.plan,
            recovery_removed: self.recovery_removed,
            kept_copy: self.kept_copy,
            retention_thawed: self.retention_thawed,
            steps: self.steps,
            services,
            vms,
        }
    }

    fn service_outcome(&self, i: usize, s: &ServiceBack) -> ServiceOutcome {
        let error = self
            .units
            .iter()
            .find(|u| u.services.contains(&i))
            .and_then(|u| u.failed.clone());
        let ok = error.is_none();
        let info = s.job.as_ref().and_then(|j| self.snapshots.get(j));
        let healthy = self.healthy.get(&i).filter(|_| ok);
        ServiceOutcome {
            service: s.service.clone(),
            home: s.home.clone(),
            from: s.at.clone(),
            job: s.job.clone(),
            snapshot: info.map(|i| {
                i.latest
                    .iter()
                    .find(|p| p.part == "files")
                    .map_or(i.short_id.clone(), |p| p.short_id.clone())
            }),
            snapshot_time: info.map(|i| i.time.clone()),
            healthy_after_seconds: healthy.map(|t| t.duration_since(self.start).as_secs_f64()),
            downtime_seconds: match (self.stopped_at.get(&i), healthy) {
                (Some(a), Some(b)) => Some(b.duration_since(*a).as_secs_f64()),
                _ => None,
            },
            ok,
            error,
            left: if ok {
                self.left.get(&i).cloned()
            } else if self.restarted.contains(&i) {
                Some(format!(
                    "runs again on {} (still moved in {FILE_NAME})",
                    s.at
                ))
            } else {
                Some(format!(
                    "NOT running on {}: start it there by hand (`docker compose -p {} start` in {})",
                    s.at,
                    s.service,
                    project_dir(&s.service)
                ))
            },
            home_data_kept: self.home_aside.get(&i).cloned().unwrap_or_default(),
        }
    }
}

/// Runs one call per VM (each named by its VM in `job`); the answers by VM.
fn by_vm(remote: &mut dyn Remote, inv: &Inventory, calls: Vec<Call>) -> BTreeMap<String, Said> {
    if calls.is_empty() {
        return BTreeMap::new();
    }
    let vms: Vec<String> = calls.iter().map(|c| c.job.clone()).collect();
    match remote.exec(inv, calls, Some(STEP_TIMEOUT)) {
        Ok(answers) => answers
            .iter()
            .map(|a| (a.call.job.clone(), said(a)))
            .collect(),
        Err(e) => vms
            .into_iter()
            .map(|vm| {
                let error = e.to_string();
                (
                    vm,
                    Said {
                        ok: false,
                        lines: Vec::new(),
                        error,
                    },
                )
            })
            .collect(),
    }
}

/// Pins `key` for `vm` in the inventory's known_hosts; the entry it replaced (to put it back),
/// or `None` when it was already the one pinned.
fn repin(
    inv: &Inventory,
    vm: &str,
    key: &str,
) -> Result<Option<(String, String)>, inventory::KnownHostsError> {
    let Some(m) = inv.vms.get(vm) else {
        return Ok(None);
    };
    let Some(address) = &m.ssh.address else {
        return Ok(None);
    };
    let name = crate::transport::known_hosts_name(address, m.ssh.port);
    let old = inv
        .known_hosts
        .iter()
        .find(|l| inventory::line_names(l, &name))
        .and_then(|l| l.split_once(' ').map(|(_, k)| k.to_string()));
    if old.as_deref() == Some(key) {
        return Ok(None);
    }
    inventory::record_host_key(&inv.dir, &name, key)?;
    Ok(Some((name, old.unwrap_or_default())))
}

/// Undoes, at home, what the failed units `failed` went through there: each service stopped
/// (a home VM shut down again), the pinned key of a VM's recovery copy put back.
fn undo_home(
    remote: &mut dyn Remote,
    inv: &Inventory,
    plan: &FailbackPlan,
    units: &[Unit],
    failed: &[usize],
) {
    let mut calls = Vec::new();
    let mut per_machine: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in failed.iter().map(|k| &units[*k]) {
        match u.vm {
            Some(i) => {
                let v = &plan.vms[i];
                calls.push(call(
                    &v.home,
                    &v.vm,
                    vm_home_stop_script(v.home_kind, &v.vm),
                ));
            }
            None => {
                for &i in &u.services {
                    let s = &plan.services[i];
                    per_machine
                        .entry(s.home.clone())
                        .or_default()
                        .push(s.service.clone());
                }
            }
        }
        if let Some((name, key)) = u.old_key.as_ref().filter(|(_, k)| !k.is_empty()) {
            let _ = inventory::record_host_key(&inv.dir, name, key);
        }
    }
    for (m, services) in &per_machine {
        // The data stays as restored; the home copy only stops.
        calls.push(call(m, "(stop)", stop_script(services, &[], &[])));
    }
    if !calls.is_empty() {
        let _ = remote.exec(inv, calls, Some(STEP_TIMEOUT));
    }
}

/// Why one service did not come home; its text goes into the report.
#[derive(Debug, thiserror::Error)]
enum HomeError {
    /// `why`: what the home machine's script said.
    #[error("preparing its data at {machine}: {why}")]
    Prepare { machine: String, why: String },
    #[error("restoring {job}'s files at {machine}: {source}")]
    Restore {
        job: String,
        machine: String,
        #[source]
        source: Box<OpFailed>,
    },
    #[error("loading {dump} at {machine}: {source}")]
    Load {
        dump: String,
        machine: String,
        #[source]
        source: Box<OpFailed>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_what_is_set_aside() {
        assert_eq!(stamp("2026-12-04T18:30:00Z"), "20261204-183000");
        assert_eq!(
            aside_name("vm-tls", "20261204-183000"),
            "vm-tls-failed-back-20261204-183000"
        );
        let long = "v".repeat(60);
        let a = aside_name(&long, "20261204-183000");
        assert_eq!(a.len(), 63);
        assert!(a.ends_with("-failed-back-20261204-183000"));
        crate::vm::driver::check_name(&a).expect("a VM name picaops can delete later");
    }
}
