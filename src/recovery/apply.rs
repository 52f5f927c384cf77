//! Carrying out a recovery plan (`site recover SITE --apply`), in order: the snapshots each
//! service will get are read on the surviving repositories (their age is the RPO); the state
//! of the emergency is written to `recovery.yml`; the lost VMs are created on the surviving
//! hypervisors and converged; each service's files are restored from its job's newest
//! snapshot; the services are deployed behind their health gate; each dump is loaded into the
//! service's own database. The lost site is never contacted. Run again after a failure, it goes
//! on from where things are (the same plan, the same snapshots).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::done;
use super::plan::{plan, RecoveryPlan};
use crate::backup::newest::SnapshotInfo;
use crate::backup::ops::{self, Exec, RestoreRequest};
use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::{self, select, Inventory};
use crate::lifecycle::{Mode, PhaseError, RunContext, Settings, SiteRun, Status, Summary};
use crate::sections::recovery::{render, FILE_NAME};
use crate::service::phase::ServicesPhase;

/// What `--apply` was asked to do beyond the site.
#[derive(Clone, Debug)]
pub struct Request {
    pub site: String,
    /// The playbooks the recovered VMs and receiving hosts are converged with (default:
    /// `playbooks/site.yml` beside the inventory).
    pub playbooks: Vec<PathBuf>,
    pub settings: Settings,
    /// The time written into `recovery.yml` (`YYYY-MM-DDTHH:MM:SSZ`), unless it already has one.
    pub now: String,
}

/// One step of the recovery and how it went.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub detail: String,
}

impl Step {
    /// One line for people: the step, ok or FAILED, its time, what it did.
    pub fn render(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        let mark = if self.ok {
            out.paint(Style::Green, "ok")
        } else {
            out.paint(Style::Red, "FAILED")
        };
        writeln!(
            w,
            "  {:<18} {mark:<6} {:>6.1} s  {}",
            self.step, self.seconds, self.detail
        )
    }
}

/// What one service got back, and when it was healthy.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    pub machine: String,
    pub job: Option<String>,
    /// The snapshot its data came from (the newest one; a dump's when it has no files).
    pub snapshot: Option<String>,
    pub snapshot_time: Option<String>,
    /// Recovery point: how old the data it got back is (the snapshot's age at the start).
    pub rpo_seconds: Option<u64>,
    /// Recovery time: from the start of the command until the service was healthy with its data.
    pub rto_seconds: Option<f64>,
    pub ok: bool,
    pub error: Option<String>,
}

/// The recovery as it went.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub plan: RecoveryPlan,
    pub recovery_file: PathBuf,
    pub steps: Vec<Step>,
    /// The directory, when it came back with the site (`service` is "directory").
    pub directory: Option<ServiceOutcome>,
    pub services: Vec<ServiceOutcome>,
    pub seconds: f64,
}

impl Outcome {
    /// 0 when every service came back healthy with its data, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.steps.iter().all(|s| s.ok)
            && self.services.iter().chain(&self.directory).all(|s| s.ok)
        {
            crate::output::EXIT_OK
        } else {
            crate::output::EXIT_HOST_FAILED
        }
    }
}

/// Why a recovery could not start (nothing changed) or stopped before its services.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The inventory, or the plan against it, is invalid: nothing was done.
    #[error("{} error(s) {what}", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
        what: &'static str,
    },
    #[error("site `{lost}` is already recovered (inventory/{FILE_NAME}): fail it back before another site is recovered")]
    OtherSiteLost { lost: String },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Targets(#[from] select::TargetsError),
    #[error(transparent)]
    Phase(#[from] PhaseError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

pub(super) fn load(dir: &Path) -> Result<Inventory, RecoverError> {
    let loaded = inventory::load(dir);
    loaded.result.map_err(|diagnostics| RecoverError::Invalid {
        diagnostics,
        sources: loaded.sources,
        what: "in the inventory",
    })
}

/// Writes `text` to `path` atomically (a temporary file beside it, then a rename).
pub(super) fn write_atomically(path: &Path, text: &str) -> Result<(), RecoverError> {
    use std::io::Write as _;
    let failed = |source| RecoverError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    tmp.write_all(text.as_bytes()).map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

pub(super) fn run_blocking(run: SiteRun) -> Result<Summary, RecoverError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RecoverError::Runtime(e.to_string()))?;
    let result = runtime.block_on(run.run());
    drop(runtime);
    match result {
        Ok(summary) => Ok(summary),
        Err((_, e)) => Err(e.into()),
    }
}

/// The machines of `summary` that did not end well, with why.
pub(super) fn failed_machines(summary: &Summary) -> BTreeMap<String, String> {
    summary
        .statuses()
        // Fencing the lost site's machines is not what the recovery waits on (they are down).
        .filter(|(kind, _)| *kind != crate::lifecycle::PhaseKind::Fence)
        .filter_map(|(_, m)| match &m.status {
            Status::Failed { reason }
            | Status::Refused { reason, .. }
            | Status::Skipped { reason } => Some((m.machine.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// Carries out the recovery of `req.site` (see the module's text). `exec` runs the backup
/// calls (listings, restores) over SSH.
pub fn apply(dir: &Path, req: &Request, exec: &mut Exec) -> Result<Outcome, RecoverError> {
    let start = Instant::now();
    let since_start = || start.elapsed().as_secs_f64();
    let inv = load(dir)?;
    let (home, since) = match &inv.recovery {
        Some(r) if r.lost.value == req.site => {
            (inventory::recovery::home(&inv), r.since.value.clone())
        }
        Some(r) => {
            return Err(RecoverError::OtherSiteLost {
                lost: r.lost.value.clone(),
            })
        }
        None => (inv.clone(), req.now.clone()),
    };
    let mut sources = Sources::default();
    let plan =
        plan(&home, &req.site, &mut sources).map_err(|diagnostics| RecoverError::Invalid {
            diagnostics,
            sources,
            what: "in the recovery plan",
        })?;
    let mut steps = Vec::new();

    // The newest snapshot of each service's job, on the surviving repositories.
    let clock = Instant::now();
    let jobs: Vec<String> = plan
        .services
        .iter()
        .filter_map(|m| m.job.clone())
        .chain(plan.directory.iter().map(|d| d.job.clone()))
        .collect();
    let mut newest: BTreeMap<String, Result<Option<SnapshotInfo>, String>> = BTreeMap::new();
    if !jobs.is_empty() {
        match ops::newest_snapshots(&home, &jobs, exec) {
            Ok(found) => {
                for n in found {
                    newest.insert(n.job, n.newest.map_err(|e| e.to_string()));
                }
            }
            Err(e) => {
                for job in &jobs {
                    newest.insert(job.clone(), Err(e.to_string()));
                }
            }
        }
    }
    steps.push(Step {
        step: "snapshots",
        ok: newest.values().all(|n| n.is_ok()),
        seconds: clock.elapsed().as_secs_f64(),
        detail: format!(
            "{} job(s) listed on the surviving repositories",
            newest.len()
        ),
    });

    // The state of the emergency, for every later run.
    let clock = Instant::now();
    let recovery_file = dir.join(FILE_NAME);
    let r = plan.recovery(&home, &since);
    let pairs =
        |m: &indexmap::IndexMap<String, crate::located::Located<String>>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect()
        };
    write_atomically(
        &recovery_file,
        &render(
            &req.site,
            &since,
            &pairs(&r.vms),
            &pairs(&r.services),
            r.directory.as_ref().map(|d| d.value.as_str()),
        ),
    )?;
    let moved = Arc::new(load(dir)?);
    steps.push(Step {
        step: "recovery.yml",
        ok: true,
        seconds: clock.elapsed().as_secs_f64(),
        detail: format!(
            "site `{}` marked lost since {since} in {}",
            req.site,
            recovery_file.display()
        ),
    });

    // VMs created on the surviving hypervisors, then every receiving machine converged. When
    // the directory moves, its access plays wait until it is back (they read it), and then run
    // on every surviving machine, to point its access helper at the directory's new place.
    let mut machines = plan.machines();
    machines.extend(plan.vms.iter().map(|m| m.to.clone()));
    let surviving: std::collections::BTreeSet<String> = moved
        .machines()
        .filter(|m| plan.directory.is_some() && !inventory::recovery::is_lost(&moved, *m))
        .map(|m| m.name().to_string())
        .collect();
    let everyone: Vec<String> = machines.union(&surviving).cloned().collect();
    let (targets, known_hosts) = select::targets(&moved, Some(&everyone.join(",")))?;
    let settings = Settings {
        mode: Mode::Apply,
        ..req.settings.clone()
    };
    let converge = Converge {
        dir,
        playbooks: &req.playbooks,
        inventory: &moved,
        targets: &targets,
        known_hosts: &known_hosts,
        settings: &settings,
    };
    let skip_access = if plan.directory.is_some() {
        vec!["access".to_string()]
    } else {
        Vec::new()
    };
    let (step, mut failed) = converge.run("vms and converge", &machines, vec![], skip_access);
    steps.push(step);

    // The moved jobs' keys made and authorized at their repositories (what `backup init` does;
    // repositories that exist are left as they are).
    let clock = Instant::now();
    let init = if jobs.is_empty() {
        Ok(())
    } else {
        // `init` asks no machine of the lost site and keeps their keys where they are
        // authorised (the failback needs them).
        done(ops::init(&moved, &jobs, exec))
    };
    steps.push(Step {
        step: "backup access",
        ok: init.is_ok(),
        seconds: clock.elapsed().as_secs_f64(),
        detail: match &init {
            Ok(()) => format!(
                "{} job(s) can reach their repository from their new place",
                jobs.len()
            ),
            Err(e) => e.to_string(),
        },
    });

    // The directory first (every login and the applications need it): its files, then its
    // dump loaded into the slapd of its new machine.
    let directory = plan
        .directory
        .as_ref()
        .map(|d| recover_directory(d, &newest, &failed, &moved, exec, since_start));
    if let Some((step, _)) = &directory {
        steps.push(step.clone());
    }
    let directory = directory.map(|(_, o)| o);
    // Each service's files, from its job's newest files snapshot, in place.
    let mut outcomes: Vec<ServiceOutcome> = plan
        .services
        .iter()
        .map(|m| {
            let info = m.job.as_ref().and_then(|j| newest.get(j));
            let (snapshot, snapshot_time, rpo_seconds) = match info {
                Some(Ok(Some(i))) => (
                    Some(i.short_id.clone()),
                    Some(i.time.clone()),
                    Some(i.age_seconds),
                ),
                _ => (None, None, None),
            };
            let error = match (info, failed.get(&m.to)) {
                (_, Some(why)) => Some(format!("{}: {why}", m.to)),
                (Some(Err(e)), _) => Some(e.clone()),
                (Some(Ok(None)), _) => Some(format!(
                    "job {} has no snapshot in its repository: nothing to bring back",
                    m.job.clone().unwrap_or_default()
                )),
                _ => None,
            };
            ServiceOutcome {
                service: m.service.clone(),
                machine: m.to.clone(),
                job: m.job.clone(),
                snapshot,
                snapshot_time,
                rpo_seconds,
                rto_seconds: None,
                ok: error.is_none(),
                error,
            }
        })
        .collect();
    let clock = Instant::now();
    for (m, o) in plan.services.iter().zip(outcomes.iter_mut()) {
        let (Some(job), true) = (&m.job, o.ok) else {
            continue;
        };
        let Some(Ok(Some(info))) = newest.get(job) else {
            continue;
        };
        if let Some(files) = info.latest.iter().find(|p| p.part == "files") {
            let req = RestoreRequest {
                job,
                snapshot: Some(&files.id),
                to: Some(Path::new("/")),
                host: None,
                dump: None,
                into_container: None,
                load: false,
            };
            if let Err(e) = done(ops::restore(&moved, &req, exec)) {
                o.ok = false;
                o.error = Some(format!("restoring {job}'s files: {e}"));
            }
        }
    }
    steps.push(Step {
        step: "data",
        ok: outcomes.iter().all(|o| o.ok),
        seconds: clock.elapsed().as_secs_f64(),
        detail: format!(
            "files restored for {} service(s)",
            outcomes.iter().filter(|o| o.ok && o.job.is_some()).count()
        ),
    });

    // The services, behind their health gate, on the machines whose data came back.
    let clock = Instant::now();
    let service_machines: Vec<String> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.machine.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !service_machines.is_empty() {
        let selected: Vec<_> = targets
            .iter()
            .filter(|t| service_machines.contains(&t.name))
            .cloned()
            .collect();
        let cx = RunContext {
            inventory: moved.clone(),
            known_hosts: known_hosts.clone(),
            settings: settings.clone(),
            selected,
            limited: true,
        };
        let mut run = SiteRun::new(cx, vec![Box::new(ServicesPhase::new(false, None))]);
        let deployed = run
            .prepare()
            .map_err(RecoverError::from)
            .and_then(|_| run_blocking(run));
        failed = match &deployed {
            Ok(summary) => failed_machines(summary),
            Err(e) => service_machines
                .iter()
                .map(|m| (m.clone(), e.to_string()))
                .collect(),
        };
        for o in outcomes.iter_mut().filter(|o| o.ok) {
            if let Some(why) = failed.get(&o.machine) {
                o.ok = false;
                o.error = Some(format!("deploying on {}: {why}", o.machine));
            }
        }
    }
    steps.push(Step {
        step: "services",
        ok: outcomes.iter().all(|o| o.ok),
        seconds: clock.elapsed().as_secs_f64(),
        detail: format!("{} machine(s) deployed", service_machines.len()),
    });

    // Each dump into the service's own database, now that it runs.
    let clock = Instant::now();
    for (m, o) in plan.services.iter().zip(outcomes.iter_mut()) {
        let (Some(job), true) = (&m.job, o.ok) else {
            continue;
        };
        if let Some(Ok(Some(info))) = newest.get(job) {
            for part in info.latest.iter().filter(|p| p.part == "dump") {
                let dump = part.dump.clone().unwrap_or_default();
                let req = RestoreRequest {
                    job,
                    snapshot: Some(&part.id),
                    to: None,
                    host: None,
                    dump: Some(&dump),
                    into_container: None,
                    load: true,
                };
                if let Err(e) = done(ops::restore(&moved, &req, exec)) {
                    o.ok = false;
                    o.error = Some(format!("loading {dump}: {e}"));
                    break;
                }
            }
        }
        if o.ok {
            o.rto_seconds = Some(since_start());
        }
    }
    for o in outcomes
        .iter_mut()
        .filter(|o| o.ok && o.rto_seconds.is_none())
    {
        o.rto_seconds = Some(since_start());
    }
    steps.push(Step {
        step: "dumps",
        ok: outcomes.iter().all(|o| o.ok),
        seconds: clock.elapsed().as_secs_f64(),
        detail: "loaded into the services' own databases".into(),
    });

    // Then every surviving machine's access helper pointed at the directory's new place: the
    // services do not wait for it, members' logins do (their caches answer meanwhile).
    if plan.directory.is_some() {
        // Read again: the VMs created above have their host keys pinned now.
        let again = Arc::new(load(dir)?);
        let (targets, known_hosts) = select::targets(&again, Some(&everyone.join(",")))?;
        let converge = Converge {
            inventory: &again,
            targets: &targets,
            known_hosts: &known_hosts,
            ..converge
        };
        // The services are back already: a helper that could not be pointed at the
        // directory's new place fails this step (exit 1), not a service.
        let (step, _) = converge.run(
            "access helpers",
            &surviving,
            vec!["access".to_string()],
            vec![],
        );
        steps.push(step);
    }

    Ok(Outcome {
        plan,
        recovery_file,
        steps,
        directory,
        services: outcomes,
        seconds: since_start(),
    })
}

/// What a converge step of the recovery runs with.
struct Converge<'a> {
    dir: &'a Path,
    /// The recovery's playbooks (empty: `playbooks/site.yml` beside the inventory).
    playbooks: &'a [PathBuf],
    inventory: &'a Arc<Inventory>,
    targets: &'a [crate::transport::Target],
    known_hosts: &'a Path,
    settings: &'a Settings,
}

impl Converge<'_> {
    /// Converges `machines` with the playbooks' tasks of `tags` (all when empty) but those of
    /// `skip_tags`: the step, and the machines that failed with why.
    fn run(
        &self,
        step: &'static str,
        machines: &std::collections::BTreeSet<String>,
        tags: Vec<String>,
        skip_tags: Vec<String>,
    ) -> (Step, BTreeMap<String, String>) {
        let clock = Instant::now();
        let limit = machines.iter().cloned().collect::<Vec<_>>().join(",");
        let request = crate::site::Request {
            inventory_dir: self.dir.to_path_buf(),
            playbooks: self.playbooks.to_vec(),
            limit: Some(limit),
            tags,
            skip_tags,
            lock_wait: Duration::from_secs(60),
            ..Default::default()
        };
        let request = crate::site::Request {
            playbooks: request.playbook_files(),
            ..request
        };
        let targets: Vec<_> = self
            .targets
            .iter()
            .filter(|t| machines.contains(&t.name))
            .cloned()
            .collect();
        let converged = crate::site::prepare(
            (**self.inventory).clone(),
            targets,
            self.known_hosts.to_path_buf(),
            self.settings.clone(),
            &request,
        )
        .map_err(RecoverError::from)
        .and_then(run_blocking);
        let failed = match &converged {
            Ok(summary) => failed_machines(summary),
            Err(e) => machines
                .iter()
                .map(|m| (m.clone(), e.to_string()))
                .collect(),
        };
        let step = Step {
            step,
            ok: failed.is_empty(),
            seconds: clock.elapsed().as_secs_f64(),
            detail: match &converged {
                Ok(s) if failed.is_empty() => format!("{} change(s)", s.changes()),
                Ok(s) => format!(
                    "{} change(s); failed: {}",
                    s.changes(),
                    failed
                        .iter()
                        .map(|(m, why)| format!("{m} ({why})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Err(e) => e.to_string(),
            },
        };
        (step, failed)
    }
}

/// The directory's recovery at `d.to`: its job's files restored in place, then its dump
/// loaded into the slapd there (built beside, checked, swapped in). The step and the outcome.
fn recover_directory(
    d: &super::plan::DirectoryMove,
    newest: &BTreeMap<String, Result<Option<SnapshotInfo>, String>>,
    failed: &BTreeMap<String, String>,
    moved: &Inventory,
    exec: &mut Exec,
    since_start: impl Fn() -> f64,
) -> (Step, ServiceOutcome) {
    let clock = Instant::now();
    let info = newest.get(&d.job);
    let mut o = ServiceOutcome {
        service: "directory".into(),
        machine: d.to.clone(),
        job: Some(d.job.clone()),
        snapshot: None,
        snapshot_time: None,
        rpo_seconds: None,
        rto_seconds: None,
        ok: false,
        error: None,
    };
    let result = match (info, failed.get(&d.to)) {
        (_, Some(why)) => Err(format!("{}: {why}", d.to)),
        (Some(Err(e)), _) => Err(e.clone()),
        (Some(Ok(None)), _) | (None, _) => Err(format!(
            "job {} has no snapshot in its repository: the directory cannot come back",
            d.job
        )),
        (Some(Ok(Some(i))), None) => {
            o.snapshot = Some(i.short_id.clone());
            o.snapshot_time = Some(i.time.clone());
            o.rpo_seconds = Some(i.age_seconds);
            super::restore_directory(moved, &d.job, &i.latest, exec)
        }
    };
    o.ok = result.is_ok();
    o.error = result.err();
    if o.ok {
        o.rto_seconds = Some(since_start());
    }
    let step = Step {
        step: "directory",
        ok: o.ok,
        seconds: clock.elapsed().as_secs_f64(),
        detail: match &o.error {
            None => format!("loaded into slapd on {}, served at {}", d.to, d.url),
            Some(e) => e.clone(),
        },
    };
    (step, o)
}

impl crate::output::Shown for Outcome {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn exit_code(&self) -> i32 {
        Outcome::exit_code(self)
    }

    /// The recovery for people: each step with its time, then each service with its RPO and RTO.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        let human = |s: u64| crate::sections::schedule::human_duration(s);
        writeln!(
            w,
            "{} site `{}` at `{}` ({})",
            out.paint(Style::Bold, "recovery:"),
            self.plan.site,
            self.plan.to_site,
            self.recovery_file.display()
        )?;
        for s in &self.steps {
            s.render(out, w)?;
        }
        for o in self.directory.iter().chain(&self.services) {
            let rpo = o
                .rpo_seconds
                .map(|s| format!("RPO {}", human(s)))
                .unwrap_or_else(|| "no data".into());
            let rto = o
                .rto_seconds
                .map(|s| format!("RTO {}", human(s as u64)))
                .unwrap_or_default();
            match &o.error {
                None => writeln!(
                    w,
                    "  {} {} on {}: {rpo}{}, {rto}",
                    out.paint(Style::Green, "back"),
                    o.service,
                    o.machine,
                    o.snapshot
                        .as_ref()
                        .map(|s| format!(" (snapshot {s})"))
                        .unwrap_or_default()
                )?,
                Some(e) => writeln!(
                    w,
                    "  {} {} on {}: {e}",
                    out.paint(Style::Red, "NOT BACK"),
                    o.service,
                    o.machine
                )?,
            }
        }
        for step in &self.plan.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        writeln!(w, "  total {:.1} s", self.seconds)
    }
}
