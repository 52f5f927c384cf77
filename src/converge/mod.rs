//! The converge engine behind `picaops plan` and `picaops apply`.
//!
//! For each host: expand the plays into steps (a segment at a time), read the state of every
//! step in ONE round trip (the probe), diff locally, and — when applying — change what differs in
//! ONE more round trip (the apply script, under the host's run lock, after checking that the state
//! did not move since it was read). A no-op run costs one round trip per host; a command with
//! `until` one more per attempt after the first (see `until`). Hosts run in the transport pool;
//! one host's failure never stops the others. Nothing here prints.

pub mod expand;
mod guard;
pub mod phase;
pub mod report;
pub mod saved;
pub mod script;
mod until;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::diagnostic::{Diagnostic, Place, Sources};
use crate::inventory::Inventory;
use crate::modules::{Action, ContentChange, HostState, Op};
use crate::playbook::template::Templates;
use crate::playbook::Playbook;
use crate::transport::{
    run_on_hosts, Connector, PoolEvent, PoolOptions, RemoteCommand, Target, Transport,
    TransportError,
};
use expand::{Context, HostExpander, Registered, Step};

pub use crate::lifecycle::Mode;

/// Everything a converge run needs, checked before any host is contacted.
pub struct Job {
    pub inventory: Inventory,
    pub playbooks: Vec<Playbook>,
    pub templates: Templates,
    pub extra_vars: BTreeMap<String, Value>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub mode: Mode,
    /// How long an apply waits for another run's lock on a host before failing.
    pub lock_wait: Duration,
    /// Who runs this apply (written into the host's lock).
    pub lock_info: String,
    /// When applying a saved plan: what each host's state and changes must still be.
    pub expected: Option<saved::SavedPlan>,
    pub sources: Mutex<Sources>,
    pub known_hosts: std::path::PathBuf,
    pub connect_timeout: Duration,
    pub forks: usize,
}

/// What happened to one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub task: String,
    pub place: Place,
    pub module: &'static str,
    pub item: Option<String>,
    pub handler: bool,
    /// The path, package list, unit… it manages.
    pub resource: String,
    pub action: Action,
    pub details: Vec<String>,
    #[serde(skip)]
    pub content: Option<ContentChange>,
    pub no_log: bool,
    pub login_guard: bool,
    /// Apply: `done`, `failed`, `not run` (an earlier step failed). Plan: absent.
    pub status: Option<&'static str>,
    /// Apply: a failure's message, with the command's stderr.
    pub error: Option<String>,
    /// Apply, a command with `until`: how many times it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// One host's result.
#[derive(Debug, Serialize)]
pub struct HostReport {
    pub name: String,
    pub steps: Vec<StepReport>,
    /// Fingerprints of the state read, per segment (for saved plans).
    pub fingerprints: Vec<String>,
    /// Digests of the changes planned, per segment (for saved plans).
    #[serde(skip)]
    pub digests: Vec<String>,
    pub warnings: Vec<String>,
    /// Why the host failed (connection, lock, a step), if it did.
    pub error: Option<String>,
    pub round_trips: u32,
    pub duration_ms: u64,
    /// The break-glass login was proven during this apply.
    #[serde(skip)]
    pub break_glass_checked: bool,
}

impl HostReport {
    fn new(name: &str) -> Self {
        HostReport {
            name: name.to_string(),
            steps: Vec::new(),
            fingerprints: Vec::new(),
            digests: Vec::new(),
            warnings: Vec::new(),
            error: None,
            round_trips: 0,
            duration_ms: 0,
            break_glass_checked: false,
        }
    }

    pub fn count(&self, action: Action) -> usize {
        self.steps.iter().filter(|s| s.action == action).count()
    }

    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.action.changes()).count()
    }
}

/// A digest of planned steps: what a saved plan promises to do on a host.
fn digest(steps: &[StepReport]) -> String {
    {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for s in steps {
            h.update(
                format!(
                    "{}|{}|{:?}|{}|{:?}\n",
                    s.task,
                    s.resource,
                    s.action,
                    s.details.join(";"),
                    s.item
                )
                .as_bytes(),
            );
            if let Some(c) = &s.content {
                h.update(Sha256::digest(&c.new));
            }
        }
        hex::encode(h.finalize())
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub hosts: Vec<HostReport>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &HostReport> {
        self.hosts.iter().filter(|h| h.error.is_some())
    }
    pub fn changes(&self) -> usize {
        self.hosts.iter().map(HostReport::changes).sum()
    }
}

/// Expands every host's tasks, before connecting (tasks that read a command's registered output
/// excepted: they are rendered once it ran): template, variable and option errors stop the run
/// here, with no host touched.
pub fn precheck(job: &Job, targets: &[Target]) -> Result<(), Vec<Diagnostic>> {
    let cx = context(job);
    let mut diags = Vec::new();
    for t in targets {
        let Some(machine) = job.inventory.machine(&t.name) else {
            continue;
        };
        let mut ex = HostExpander::new(&cx, machine, t.become_root);
        // Expand everything that does not wait on a registered result.
        if let Err(d) = ex.expand_all() {
            diags.push(d);
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

fn context(job: &Job) -> Context<'_> {
    Context::new(
        &job.inventory,
        &job.playbooks,
        &job.templates,
        &job.extra_vars,
        &job.tags,
        &job.skip_tags,
        &job.sources,
    )
}

/// Runs plan or apply on every target.
pub async fn run(
    job: Arc<Job>,
    targets: &[Target],
    events: Option<mpsc::UnboundedSender<PoolEvent>>,
) -> Result<Report, TransportError> {
    let connector = Arc::new(Connector::new(&job.known_hosts, job.connect_timeout, None)?);
    let outcomes = run_on_hosts(
        targets,
        connector,
        &PoolOptions { forks: job.forks },
        events,
        {
            let job = job.clone();
            move |target, transport| {
                let job = job.clone();
                async move { Ok(converge_host(&job, &target, transport.as_ref()).await) }
            }
        },
    )
    .await;
    let hosts = outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(mut r) => {
                r.duration_ms = o.duration.as_millis() as u64;
                r
            }
            Err(e) => {
                let mut r = HostReport::new(&o.target.name);
                r.error = Some(e.to_string());
                r.duration_ms = o.duration.as_millis() as u64;
                r
            }
        })
        .collect();
    Ok(Report {
        mode: job.mode,
        hosts,
    })
}

/// One host, segment by segment. Never returns early without saying why in `error`.
pub async fn converge_host(job: &Job, target: &Target, transport: &dyn Transport) -> HostReport {
    let started = Instant::now();
    let mut report = HostReport::new(&target.name);
    let cx = context(job);
    let Some(machine) = job.inventory.machine(&target.name) else {
        report.error = Some("not in the inventory".into());
        return report;
    };
    let mut ex = HostExpander::new(&cx, machine, target.become_root);
    // Handler names notified so far, per play (playbook index, play index).
    let mut notified: HashMap<(usize, usize), BTreeSet<String>> = HashMap::new();
    let mut maybe_notified: HashMap<(usize, usize), BTreeSet<String>> = HashMap::new();
    let mut segment = 0usize;
    let mut retried = false;
    loop {
        let steps = match ex.next_segment() {
            Ok(s) => s,
            Err(d) => {
                report.error = Some(format!("{}: {}", d.place, d.message));
                break;
            }
        };
        if steps.is_empty() {
            break;
        }
        // A segment runs in parts when a package installed in it may change what later steps
        // find (a service it starts, a file it ships): each part is read after the previous one.
        let mut start = 0;
        let mut restart = false;
        let mut stop = false;
        // Registered results of the segment's parts so far: a looped task with `until` runs an
        // item per part, and registers every item's result.
        let mut results_so_far: HashMap<usize, Option<Value>> = HashMap::new();
        while start < steps.len() {
            let (outcome, consumed) = run_segment(
                job,
                target,
                transport,
                &steps[start..],
                &mut notified,
                &mut maybe_notified,
                &mut report,
                segment,
            )
            .await;
            segment += 1;
            match outcome {
                SegmentOutcome::Continue(results) => {
                    results_so_far.extend(results);
                    let done = &steps[..start + consumed];
                    record_registers(&mut ex, done, start, &results_so_far);
                    start += consumed;
                }
                SegmentOutcome::Moved if !retried && job.expected.is_none() && segment == 1 => {
                    // Someone changed the host between our read and our write: read again once.
                    retried = true;
                    report.warnings.push("the host's state changed between reading and applying (another run?); read it again".into());
                    restart = true;
                    break;
                }
                SegmentOutcome::Moved => {
                    report.error = Some(if job.expected.is_some() {
                        "the host's state changed since the plan was made; nothing was changed. Run `picaops plan` again and review the new plan".into()
                    } else {
                        "the host's state keeps changing while picaops applies (another run?); nothing more was changed".into()
                    });
                    stop = true;
                    break;
                }
                SegmentOutcome::Stop => {
                    stop = true;
                    break;
                }
            }
        }
        if restart {
            notified.clear();
            maybe_notified.clear();
            report.steps.clear();
            report.fingerprints.clear();
            report.digests.clear();
            ex = HostExpander::new(&cx, machine, target.become_root);
            segment = 0;
            continue;
        }
        if stop {
            break;
        }
    }
    if job.mode == Mode::Apply {
        if let Err(e) = guard::verify_or_roll_back(job, target, transport, &report.steps).await {
            report.error = Some(match report.error.take() {
                Some(first) => format!("{first}; {e}"),
                None => e.to_string(),
            });
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

enum SegmentOutcome {
    /// Registered results by step id (apply: commands' real output).
    Continue(HashMap<usize, Option<Value>>),
    Moved,
    Stop,
}

#[allow(clippy::too_many_arguments)]
async fn run_segment(
    job: &Job,
    target: &Target,
    transport: &dyn Transport,
    steps: &[Step],
    notified: &mut HashMap<(usize, usize), BTreeSet<String>>,
    maybe_notified: &mut HashMap<(usize, usize), BTreeSet<String>>,
    report: &mut HostReport,
    segment: usize,
) -> (SegmentOutcome, usize) {
    let become_root = steps.iter().any(|s| s.become_root);
    // 1. Read.
    let mut lines = String::new();
    let mut packages = Vec::new();
    let mut candidates = Vec::new();
    for s in steps {
        if let Some(r) = &s.resource {
            r.probe(s.id, &mut lines, &mut packages, &mut candidates);
        }
    }
    packages.sort();
    packages.dedup();
    candidates.sort();
    candidates.dedup();
    let body = script::probe_body(&lines, &packages, &candidates);
    let lock_wait = (job.mode == Mode::Apply).then_some(job.lock_wait.as_secs());
    let lock_dir = lock_dir(job, &target.name);
    let probe_text = script::probe_script(&body, lock_wait, &lock_dir);
    let out = match send_script(transport, report, segment, "probe", probe_text, become_root).await
    {
        Ok(o) => o,
        Err(e) => {
            report.error = Some(e.to_string());
            return (SegmentOutcome::Stop, steps.len());
        }
    };
    let stdout = out.stdout_lossy();
    let notes = script::parse_apply(&stdout);
    if out.exit_code == 75 || (job.mode == Mode::Apply && notes.locked.is_some()) {
        report.error = Some(lock_message(
            notes.locked.as_deref().unwrap_or(""),
            job.lock_wait,
        ));
        return (SegmentOutcome::Stop, steps.len());
    }
    if let Some(info) = &notes.locked {
        report.warnings.push(format!(
            "another apply is running on this host: {}; this plan may be out of date when it ends",
            script::describe_lock(info)
        ));
    }
    if !out.success() {
        report.error = Some(format!(
            "reading the host's state failed (exit {}): {}",
            out.exit_code,
            out.stderr_lossy().trim()
        ));
        return (SegmentOutcome::Stop, steps.len());
    }
    let state: HostState = match crate::modules::parse_probe(&stdout) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return (SegmentOutcome::Stop, steps.len());
        }
    };
    let fp = script::fingerprint(&stdout);
    report.fingerprints.push(fp.clone());

    // 2. Diff. Where a package gets installed, what follows may change under it: apply stops
    // after it and reads the rest again; plan says which later steps cannot be known yet.
    let package_plans: Vec<(usize, crate::modules::Planned)> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.preset.is_none())
        .filter_map(|(i, s)| match &s.resource {
            Some(crate::modules::Resource::Package(p)) => Some((i, p.diff(&state.packages))),
            _ => None,
        })
        .collect();
    let is_package = |s: &Step| matches!(&s.resource, Some(crate::modules::Resource::Package(_)));
    let cut = match package_plans.iter().find(|(_, p)| p.action.changes()) {
        Some(&(k, _)) => {
            // Package steps right after it go in the same apt call: cut after the last of them.
            k + steps[k..].iter().take_while(|s| is_package(s)).count()
        }
        None => steps.len(),
    };
    // How many steps this call handles: plan diffs them all; apply stops after the install.
    let mut processed = if job.mode == Mode::Plan {
        steps.len()
    } else {
        cut
    };
    let installing: Vec<String> = package_plans
        .iter()
        .flat_map(|(_, p)| &p.details)
        .filter_map(|d| d.strip_prefix("install ").map(String::from))
        .collect();
    let installed_by = steps
        .get(cut.wrapping_sub(1))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let first = report.steps.len();
    let mut planned_ops: Vec<(usize, Op)> = Vec::new();
    let mut failed_plan = false;
    let mut overlay = Overlay::default();
    // A command with `until` that runs ends what one apply script does: `until` is checked
    // here once it ran, and the steps after it are read again after its last attempt.
    let mut until_cut = steps.len();
    for (idx, s) in steps.iter().enumerate() {
        if idx >= cut && job.mode == Mode::Apply {
            break;
        }
        let play = (s.at.0, s.at.1);
        let (mut action, mut details, mut content, mut ops, mut error) =
            match (&s.preset, &s.resource) {
                (Some((a, why)), _) => (*a, vec![why.clone()], None, Vec::new(), None),
                (None, Some(r)) => match r.diff(&overlay.state(r, state.step(s.id)), &state) {
                    Ok(p) => (p.action, p.details, p.content, p.ops, None),
                    Err(e) => (
                        Action::Unknown,
                        Vec::new(),
                        None,
                        Vec::new(),
                        Some(e.to_string()),
                    ),
                },
                (None, None) => (Action::Unknown, Vec::new(), None, Vec::new(), None),
            };
        if let Some(r) = &s.resource {
            if s.preset.is_none() {
                overlay.record(r, &ops, &state.step(s.id));
            }
        }
        // A unit that does not exist yet, or is named after a package being installed, may be
        // created or started by that install.
        let unit_name = match &s.resource {
            Some(crate::modules::Resource::Service(r)) => Some(&r.name),
            Some(crate::modules::Resource::Unit(r)) => Some(&r.name),
            _ => None,
        };
        let affected = unit_name.is_some_and(|u| {
            let st = state.step(s.id);
            let missing = st
                .unit
                .as_ref()
                .is_none_or(|(enabled, _)| enabled.is_empty() || enabled == "not-found");
            missing || installing.iter().any(|p| u.starts_with(p.as_str()))
        });
        if idx >= cut && s.preset.is_none() && (affected || error.is_some()) {
            action = Action::Unknown;
            details = vec![format!(
                "reads state that installing packages (task \"{installed_by}\") may change: known at apply"
            )];
            error = None;
            ops.clear();
            content = None;
        }
        if s.handler {
            let name = &s.name;
            let is = notified.get(&play).is_some_and(|n| n.contains(name));
            let maybe = maybe_notified.get(&play).is_some_and(|n| n.contains(name));
            if !is && maybe && action != Action::Skip {
                action = Action::Unknown;
                details = vec![
                    "runs if a task that notifies it changes something (known only at apply)"
                        .into(),
                ];
                ops.clear();
                content = None;
            } else if !is && action != Action::Skip {
                action = Action::Skip;
                details = vec!["not notified".into()];
                ops.clear();
                content = None;
            }
        }
        if let Some(e) = error.take() {
            failed_plan = true;
            report
                .steps
                .push(step_report(s, Action::Unknown, Vec::new(), None));
            let last = report.steps.last_mut().expect("just pushed");
            last.status = Some("failed");
            last.error = Some(e);
            continue;
        }
        if action.changes() {
            for n in &s.notify {
                notified.entry(play).or_default().insert(n.clone());
            }
        } else if action == Action::Unknown {
            for n in &s.notify {
                maybe_notified.entry(play).or_default().insert(n.clone());
            }
        }
        let runs_until = s.until.is_some() && action == Action::Run;
        for op in ops {
            planned_ops.push((
                s.id,
                match op {
                    Op::Command(call) if runs_until => Op::Attempt(call),
                    op => op,
                },
            ));
        }
        if let Some(u) = s.until.as_ref().filter(|_| runs_until) {
            details.push(u.describe());
        }
        report.steps.push(step_report(s, action, details, content));
        if runs_until && until_cut == steps.len() {
            until_cut = idx + 1;
            if job.mode == Mode::Apply {
                processed = processed.min(until_cut);
                break;
            }
        }
    }
    if failed_plan {
        let what: Vec<String> = report.steps[first..]
            .iter()
            .filter(|s| s.status == Some("failed"))
            .map(|s| {
                format!(
                    "{} ({}): {}",
                    s.task,
                    s.place,
                    s.error.as_deref().unwrap_or("")
                )
            })
            .collect();
        report.error = Some(format!(
            "cannot reach the desired state: {}",
            what.join("; ")
        ));
        if job.mode == Mode::Apply {
            mark_not_run(&mut report.steps[first..]);
            return (SegmentOutcome::Stop, steps.len());
        }
    }
    report.digests.push(digest(
        &report.steps[first..(first + cut.min(until_cut)).min(report.steps.len())],
    ));
    if let Some(expected) = &job.expected {
        if segment == 0 {
            if let Some(host) = expected.hosts.get(&target.name) {
                if host.fingerprint != fp {
                    mark_not_run(&mut report.steps[first..]);
                    return (SegmentOutcome::Moved, steps.len());
                }
                if report.digests.first() != Some(&host.changes) {
                    mark_not_run(&mut report.steps[first..]);
                    report.error = Some(
                        "the playbooks, templates or inventory changed since the plan was made: the changes would not be the ones reviewed; nothing was changed. Run `picaops plan` again".into(),
                    );
                    return (SegmentOutcome::Stop, steps.len());
                }
            }
        }
    }

    // What `register:` will hold; `None` until known (a command's output, before it runs).
    let mut results: HashMap<usize, Option<Value>> = HashMap::new();
    for (rep, s) in report.steps[first..].iter().zip(&steps[..processed]) {
        let runs_command =
            s.resource.as_ref().is_some_and(|r| r.is_command()) && rep.action == Action::Run;
        let known = rep.action != Action::Unknown && !runs_command;
        results.insert(s.id, known.then(|| registered_value(rep.action, None)));
    }
    if job.mode == Mode::Plan || planned_ops.is_empty() {
        return (SegmentOutcome::Continue(results), processed);
    }

    // 3. Apply; login settings only once the way back in is proven.
    let guarded = report.steps[first..]
        .iter()
        .any(|r| r.login_guard && r.action.changes());
    if guarded && !report.break_glass_checked {
        match guard::check_break_glass(job, target).await {
            Ok(warning) => {
                report.break_glass_checked = true;
                report.warnings.extend(warning);
            }
            Err(e) => {
                report.error = Some(e.to_string());
                mark_not_run(&mut report.steps[first..]);
                return (SegmentOutcome::Stop, steps.len());
            }
        }
    }
    let planned: Vec<script::Planned> = planned_ops
        .iter()
        .map(|(id, op)| script::Planned { ids: vec![*id], op })
        .collect();
    let apply = script::apply_script(
        &body,
        &fp,
        (&lock_dir, &job.lock_info, job.lock_wait.as_secs()),
        &planned,
    );
    let out = match send_script(transport, report, segment, "apply", apply, become_root).await {
        Ok(o) => o,
        Err(e) => {
            report.error = Some(format!("{e} (what was done before the connection failed is not known; run apply again: it converges)"));
            mark_unknown(&mut report.steps[first..]);
            return (SegmentOutcome::Stop, steps.len());
        }
    };
    let mut r = script::parse_apply(&out.stdout_lossy());
    if let Some(info) = &r.stale {
        report.warnings.push(format!(
            "took over a stale run lock (its process is gone): {}",
            script::describe_lock(info)
        ));
    }
    if r.lock_dir_failed {
        report.error = Some(format!(
            "cannot create the run lock's directory on the host: {} (set `picaops_lock_dir` for this host to a writable directory)",
            out.stderr_lossy().trim()
        ));
        mark_not_run(&mut report.steps[first..]);
        return (SegmentOutcome::Stop, steps.len());
    }
    if out.exit_code == 75 {
        report.error = Some(lock_message(
            r.locked.as_deref().unwrap_or(""),
            job.lock_wait,
        ));
        mark_not_run(&mut report.steps[first..]);
        return (SegmentOutcome::Stop, steps.len());
    }
    if r.moved || out.exit_code == 76 {
        mark_not_run(&mut report.steps[first..]);
        return (SegmentOutcome::Moved, steps.len());
    }
    // The command with `until` the script ran last (an attempt without one is left "not run").
    let attempted = steps[..processed].iter().find_map(|s| {
        let rc = *r.tried.get(&s.id)?;
        let call = planned_ops.iter().find_map(|(id, op)| match op {
            Op::Attempt(call) if *id == s.id => Some(call.as_str()),
            _ => None,
        })?;
        Some((s, s.until.as_ref()?, call, rc))
    });
    let settled = match attempted {
        Some((s, until, call, rc)) => {
            let (o, e) = r.output.get(&s.id).cloned().unwrap_or_default();
            let settled = until::settle(
                job,
                transport,
                report,
                segment,
                &lock_dir,
                s,
                until,
                call,
                (rc, o, e),
            )
            .await;
            let (rc, o, e) = settled.last.clone();
            r.output.insert(s.id, (o, e));
            match &settled.error {
                None => r.ok.push(s.id),
                Some(_) => r.failed = Some((vec![s.id], rc)),
            }
            Some((s.id, until.outcome(&settled), settled))
        }
        None => None,
    };
    let ok: BTreeSet<usize> = r.ok.iter().copied().collect();
    let failed: BTreeSet<usize> = r
        .failed
        .as_ref()
        .map(|(ids, _)| ids.iter().copied().collect())
        .unwrap_or_default();
    let with_ops: BTreeSet<usize> = planned_ops.iter().map(|(id, _)| *id).collect();
    for (rep, s) in report.steps[first..].iter_mut().zip(steps) {
        if failed.contains(&s.id) {
            let (o, e) = r.output.get(&s.id).cloned().unwrap_or_default();
            let rc = r.failed.as_ref().map(|f| f.1).unwrap_or(1);
            rep.status = Some("failed");
            rep.error = Some(if s.no_log {
                format!("exit {rc} (output hidden: no_log)")
            } else {
                let text = if e.trim().is_empty() { o } else { e };
                format!("exit {rc}: {}", tail(&text, 20))
            });
        } else if with_ops.contains(&s.id) {
            rep.status = Some(if ok.contains(&s.id) {
                "done"
            } else {
                "not run"
            });
        } else {
            rep.status = Some("done");
        }
        if s.resource.as_ref().is_some_and(|r| r.is_command()) && ok.contains(&s.id) {
            let (o, e) = r.output.get(&s.id).cloned().unwrap_or_default();
            results.insert(s.id, Some(registered_value(Action::Run, Some((0, o, e)))));
        }
        if let Some((_, outcome, settled)) = settled.as_ref().filter(|u| u.0 == s.id) {
            rep.details.push(outcome.clone());
            rep.attempts = Some(settled.attempts);
            if let Some(e) = &settled.error {
                rep.error = Some(e.clone());
            }
            if let Some(Some(v)) = results.get_mut(&s.id) {
                v["attempts"] = Value::from(settled.attempts);
            }
        }
    }
    if !failed.is_empty() || !r.done {
        if report.error.is_none() {
            report.error = Some(
                match report.steps[first..]
                    .iter()
                    .find(|s| s.status == Some("failed"))
                {
                    Some(s) => format!(
                        "task \"{}\" ({}) failed: {}",
                        s.task,
                        s.place,
                        s.error.as_deref().unwrap_or("")
                    ),
                    None => format!(
                        "the apply script ended early (exit {}): {}",
                        out.exit_code,
                        out.stderr_lossy().trim()
                    ),
                },
            );
        }
        return (SegmentOutcome::Stop, steps.len());
    }
    (SegmentOutcome::Continue(results), processed)
}

/// Files written by earlier steps of the segment, as later steps must see them (two `line`
/// tasks on one file: the second edits what the first wrote).
#[derive(Default)]
struct Overlay {
    files: HashMap<String, (Vec<u8>, crate::modules::probe::Stat)>,
    /// (is-enabled, is-active) of units an earlier step enabled, started or stopped.
    units: HashMap<String, (String, String)>,
}

impl Overlay {
    fn state(
        &self,
        r: &crate::modules::Resource,
        probed: crate::modules::StepState,
    ) -> crate::modules::StepState {
        use crate::modules::Resource;
        let (unit, path) = match r {
            Resource::Content(c) => (None, Some(&c.path)),
            Resource::Line(l) => (None, Some(&l.path)),
            Resource::File(f) => (None, Some(&f.path)),
            Resource::Unit(u) => (Some(&u.name), u.file.as_ref().map(|f| &f.path)),
            Resource::Service(s) => (Some(&s.name), None),
            _ => return probed,
        };
        let mut probed = probed;
        if let Some(state) = unit.and_then(|u| self.units.get(u)) {
            probed.unit = Some(state.clone());
        }
        let Some(path) = path else { return probed };
        match self.files.get(path) {
            Some((content, stat)) => crate::modules::StepState {
                stat: Some(stat.clone()),
                sha256: Some(crate::modules::files::sha256_hex(content)),
                content: Some(content.clone()),
                unit: probed.unit.clone(),
                ..Default::default()
            },
            None => probed,
        }
    }

    fn record(
        &mut self,
        r: &crate::modules::Resource,
        ops: &[Op],
        probed: &crate::modules::StepState,
    ) {
        use crate::modules::Resource;
        let wish = match r {
            Resource::Unit(u) => Some((&u.name, &u.wish)),
            Resource::Service(s) => Some((&s.name, &s.wish)),
            _ => None,
        };
        if let Some((name, wish)) = wish {
            let (mut enabled, mut active) = self
                .units
                .get(name)
                .cloned()
                .or(probed.unit.clone())
                .unwrap_or_default();
            match wish.enabled {
                Some(true) => enabled = "enabled".into(),
                Some(false) => enabled = "disabled".into(),
                None => {}
            }
            match wish.state.as_deref() {
                Some("started" | "restarted" | "reloaded") => active = "active".into(),
                Some("stopped") => active = "inactive".into(),
                _ => {}
            }
            self.units.insert(name.clone(), (enabled, active));
        }
        for op in ops {
            if let Op::Put {
                path,
                content,
                mode,
                owner,
                group,
            } = op
            {
                let old = probed.stat.clone();
                // What the file's owner will be: asked for (name or number), else what it was.
                let id = |want: &Option<String>, name: Option<&String>, num: Option<u32>| match want
                {
                    Some(w) if w.parse::<u32>().ok() == num && num.is_some() => {
                        (name.cloned().unwrap_or_else(|| w.clone()), num.unwrap_or(0))
                    }
                    Some(w) => (w.clone(), w.parse().unwrap_or(u32::MAX)),
                    None => (
                        name.cloned().unwrap_or_else(|| "root".into()),
                        num.unwrap_or(0),
                    ),
                };
                let (user, uid) = id(
                    owner,
                    old.as_ref().map(|s| &s.user),
                    old.as_ref().map(|s| s.uid),
                );
                let (grp, gid) = id(
                    group,
                    old.as_ref().map(|s| &s.group),
                    old.as_ref().map(|s| s.gid),
                );
                let stat = crate::modules::probe::Stat {
                    kind: "file".into(),
                    mode: *mode,
                    uid,
                    user,
                    gid,
                    group: grp,
                    size: content.len() as u64,
                };
                self.files.insert(path.clone(), (content.clone(), stat));
            }
        }
    }
}

/// Sends one script to the host's `sh -s`, on stdin (it may hold file contents: never argv),
/// and counts the round trip.
async fn send_script(
    transport: &dyn Transport,
    report: &mut HostReport,
    segment: usize,
    kind: &str,
    text: String,
    become_root: bool,
) -> Result<crate::transport::CommandOutput, TransportError> {
    keep_script(&report.name, segment, kind, &text);
    report.round_trips += 1;
    let cmd = RemoteCommand::argv(["sh", "-s"])
        .with_stdin(text)
        .with_become(become_root);
    transport.exec(&cmd).await
}

/// For debugging picaops itself: `PICAOPS_KEEP_SCRIPTS=DIR` saves every script sent (mode 0600:
/// apply scripts hold file contents, secrets included).
pub(crate) fn keep_script(host: &str, segment: usize, kind: &str, text: &str) {
    let Some(dir) = std::env::var_os("PICAOPS_KEEP_SCRIPTS") else {
        return;
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::Path::new(&dir).join(format!("{host}-{segment}-{kind}.sh"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Where the run lock lives on a host: the host's `picaops_lock_dir` variable, else (decided on the
/// host) /run/picaops for root or the login user's runtime directory.
fn lock_dir(job: &Job, host: &str) -> String {
    job.inventory
        .machine(host)
        .and_then(|m| {
            crate::inventory::vars::resolve(&job.inventory, m)
                .get("picaops_lock_dir")
                .cloned()
        })
        .and_then(|v| v.value.as_str().map(String::from))
        .unwrap_or_default()
}

fn lock_message(info: &str, waited: Duration) -> String {
    format!(
        "another apply holds the run lock on this host: {}. {}",
        script::describe_lock(info),
        if waited.is_zero() {
            "Let it finish, or run again with `--lock-wait 300` to wait for it".to_string()
        } else {
            format!("Waited {} s for it", waited.as_secs())
        }
    )
}

fn step_report(
    s: &Step,
    action: Action,
    details: Vec<String>,
    content: Option<ContentChange>,
) -> StepReport {
    StepReport {
        task: s.name.clone(),
        place: s.place.clone(),
        module: s.module,
        item: s.item.clone(),
        handler: s.handler,
        resource: s.resource.as_ref().map(|r| r.label()).unwrap_or_default(),
        action,
        details,
        content,
        no_log: s.no_log,
        login_guard: s.login_guard,
        status: None,
        error: None,
        attempts: None,
    }
}

fn mark_not_run(steps: &mut [StepReport]) {
    for s in steps {
        if s.status.is_none() {
            s.status = Some("not run");
        }
    }
}

fn mark_unknown(steps: &mut [StepReport]) {
    for s in steps {
        if s.action.changes() {
            s.status = Some("unknown");
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What `register:` holds for a step.
fn registered_value(action: Action, output: Option<(i32, String, String)>) -> Value {
    match output {
        Some((rc, stdout, stderr)) => json!({
            "changed": true, "skipped": false, "rc": rc,
            "stdout": stdout.trim_end_matches('\n'), "stderr": stderr.trim_end_matches('\n'),
            "stdout_lines": stdout.lines().collect::<Vec<_>>(),
        }),
        None => json!({
            "changed": action.changes(),
            "skipped": action == Action::Skip,
            "rc": 0, "stdout": "", "stderr": "", "stdout_lines": [],
        }),
    }
}

/// Turns the segment's results into registered variables (a loop registers `results`): those
/// of the tasks with a step from `steps[from..]` (the part that just ran), with every step of
/// theirs in `steps`.
fn record_registers(
    ex: &mut HostExpander<'_>,
    steps: &[Step],
    from: usize,
    results: &HashMap<usize, Option<Value>>,
) {
    let task = |s: &Step| (s.at.0, s.at.1, s.at.2, s.handler);
    let ran: BTreeSet<_> = steps[from.min(steps.len())..].iter().map(task).collect();
    let mut by_task: BTreeMap<(usize, usize, usize, bool), Vec<&Step>> = BTreeMap::new();
    for s in steps
        .iter()
        .filter(|s| s.register.is_some() && ran.contains(&task(s)))
    {
        by_task.entry(task(s)).or_default().push(s);
    }
    for group in by_task.values() {
        let name = group[0].register.clone().expect("filtered on register");
        let values: Option<Vec<Value>> = group
            .iter()
            .map(|s| results.get(&s.id).cloned().flatten())
            .collect();
        let reg = match values {
            None => Registered::Unknown {
                by: group[0].name.clone(),
            },
            Some(mut v) if group.len() == 1 && group[0].item.is_none() => {
                Registered::Known(v.remove(0))
            }
            Some(v) => Registered::Known(json!({
                "changed": v.iter().any(|x| x["changed"] == json!(true)),
                "results": v,
            })),
        };
        ex.registers.insert(name, reg);
    }
}

/// Reads every playbook file, reporting problems with their places.
pub fn load_playbooks(
    files: &[std::path::PathBuf],
    templates: &Templates,
    sources: &mut Sources,
) -> Result<Vec<Playbook>, Vec<Diagnostic>> {
    for f in files {
        if !f.exists() {
            return Err(vec![Diagnostic::new(Place::file(f), "this playbook does not exist").help(
                "give the path of a playbook file (picaops runs playbooks/site.yml when none is given)",
            )]);
        }
    }
    crate::playbook::load::load(files, templates, sources)
}

/// `who on which machine with which pid since when`, for the lock.
pub fn lock_info() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let since = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "user={user}\nfrom={host}\npid={}\nsince={since}",
        std::process::id()
    )
}

/// Names of the targets at least one play applies to.
pub fn hosts_with_plays(job: &Job, targets: &[Target]) -> BTreeSet<String> {
    let cx = context(job);
    targets
        .iter()
        .filter(|t| {
            job.inventory
                .machine(&t.name)
                .is_some_and(|m| !cx.plays_for(m).is_empty())
        })
        .map(|t| t.name.clone())
        .collect()
}

/// Values that must never be printed: variables named like secrets, from the inventory, the
/// plays and `-e`.
pub fn secret_values(job: &Job) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut add = |name: &str, v: &Value| {
        if report::is_secret_name(name) {
            collect_scalars(v, &mut out);
        }
    };
    for m in job.inventory.machines() {
        for (name, var) in crate::inventory::vars::resolve(&job.inventory, m) {
            add(&name, &var.value);
        }
    }
    for book in &job.playbooks {
        for play in &book.plays {
            for (name, var) in &play.vars {
                add(name, &var.value);
            }
            for t in play.tasks.iter().chain(&play.handlers) {
                for (name, var) in &t.vars {
                    add(name, &var.value);
                }
            }
        }
    }
    for (name, v) in &job.extra_vars {
        add(name, v);
    }
    // Longest first, so a secret containing another is replaced whole.
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}

fn collect_scalars(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if !s.contains("{{") => {
            out.insert(s.clone());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(items) => items.iter().for_each(|i| collect_scalars(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_scalars(i, out)),
        _ => {}
    }
}

pub fn is_saved_plan(path: &Path) -> bool {
    saved::looks_like_plan(path)
}
