//! The workstation's backup operations (`picaops backup init|run|forget|prune|check|snapshots|
//! restore|drill|status|units`): which jobs, which machine and side runs each host-side command,
//! the calls in their order, and what came back folded into typed reports that know their exit
//! code. The transport is given as an [`Exec`] (SSH with a progress display from the CLI, canned
//! answers in the tests), so all of this is tested without a network. Nothing here prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::config::{data_host, select_jobs, BackupJob, UnknownJob};
use super::newest::SnapshotInfo;
use super::remote::{self, Answer, AnswerError, Call, CallError, HostDoc, Side};
use super::render::{DataSide, RepoSide, Seen};
use super::restic::Snapshot;
use super::units::{self, UnitFile, UnitOptions};
use super::{JobFile, JobStatus};
use crate::inventory::Inventory;
use crate::output::{EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use crate::transport::RemoteCommand;

/// Why a backup operation stopped before it had a report to show.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    UnknownJob(#[from] UnknownJob),
    #[error(
        "the inventory has no `backups:` section; see inventory/backups.yml for Picasoft's jobs"
    )]
    NoBackups,
    #[error("`{host}` cannot open job {job}'s repository: restore on its data host ({data}) or on the repository's host ({repo})")]
    RestoreHost {
        host: String,
        job: String,
        data: String,
        repo: String,
    },
    #[error("--to must be an absolute path on the host, not `{}`", .0.display())]
    RelativeTo(PathBuf),
    /// `rotate-password` asked while the inventory still names the old secret.
    #[error("job `{job}` already uses secret `{old}`: put the new password in the secret store under a new name, set the job's `password:` to it in the inventory, then run `picaops backup rotate-password {job} --from {old}`")]
    SameSecret { job: String, old: String },
    #[error("job `{job}` shares its repository with {others}: they share one password, so `rotate-password` cannot change it for one of them alone")]
    SharedRepository { job: String, others: String },
    /// The secret store's message (which secret, what to do).
    #[error("{0}")]
    Secret(String),
    #[error("`{host}` sends no backup job, so it has no repository key to rotate (`picaops backup status` lists the jobs and their hosts)")]
    SendsNothing { host: String },
    /// A call could not be built (usage) or the machines could not be reached at all.
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{} is not a status file: {source}", .path.display())]
    StatusFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read {}: {error}", .path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file that is not restic's `snapshots --json` output.
    #[error("{}: {source}", .path.display())]
    SnapshotsFile {
        path: PathBuf,
        #[source]
        source: super::restic::ResticError,
    },
    /// A job's snapshots could not be listed on its repository's side.
    #[error("cannot list job {job}'s snapshots on {machine}: {source}")]
    Listing {
        job: String,
        machine: String,
        #[source]
        source: Box<AnswerError>,
    },
    /// The units `apply` would install cannot be computed (the inventory says why).
    #[error(transparent)]
    Units(super::deploy::DeployError),
    /// The async runtime driving the calls could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("interrupted; runs already started on the hosts go on under systemd")]
    Interrupted,
    #[error("{0}")]
    RetentionFrozen(String),
}

impl OpError {
    /// 2 for what the command line or the inventory got wrong, 130 for Ctrl-C, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::UnknownJob(_)
            | OpError::NoBackups
            | OpError::RestoreHost { .. }
            | OpError::RelativeTo(_)
            | OpError::SendsNothing { .. }
            | OpError::SameSecret { .. }
            | OpError::SharedRepository { .. }
            | OpError::Secret(_)
            | OpError::Units(_)
            | OpError::Unreadable { .. }
            | OpError::SnapshotsFile { .. }
            | OpError::Call(CallError::NoMachine { .. }) => EXIT_USAGE,
            OpError::Interrupted => 130,
            _ => EXIT_HOST_FAILED,
        }
    }
}

/// Runs calls (each with a per-call timeout, `None`: none) and returns one answer per call.
pub type Exec<'a> = dyn FnMut(Vec<Call>, Option<Duration>) -> Result<Vec<Answer>, OpError> + 'a;

/// One job's (or one repository's) outcome. Fields in the order they print in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobLine {
    /// The machine the call ran on (empty when it could not be built).
    pub host: String,
    pub job: String,
    pub message: String,
    pub ok: bool,
    pub result: Value,
}

/// What an operation came to, one line per job.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub jobs: Vec<JobLine>,
    pub ok: bool,
    pub operation: &'static str,
}

impl Report {
    pub fn new(operation: &'static str, jobs: Vec<JobLine>) -> Report {
        Report {
            ok: jobs.iter().all(|l| l.ok),
            jobs,
            operation,
        }
    }
    pub fn failed(&self) -> usize {
        self.jobs.iter().filter(|l| !l.ok).count()
    }
    pub fn exit_code(&self) -> i32 {
        exit(self.ok)
    }
}

fn exit(ok: bool) -> i32 {
    if ok {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }
}

/// The names of the jobs selected (`names` empty: all; `host`: those whose data is there).
pub fn selection(
    inv: &Inventory,
    names: &[String],
    host: Option<&str>,
) -> Result<Vec<String>, OpError> {
    let names = select_jobs(inv, names, host)?
        .iter()
        .map(|j| j.name.clone())
        .collect();
    if inv.backups.is_empty() {
        return Err(OpError::NoBackups);
    }
    Ok(names)
}

fn jobs<'a>(inv: &'a Inventory, names: &[String]) -> Vec<&'a BackupJob> {
    names.iter().filter_map(|n| inv.backups.get(n)).collect()
}

/// The host-side documents of one answer (host-forget prints one per job, then one for prune).
fn documents(a: &Answer) -> Result<Vec<HostDoc>, AnswerError> {
    let text = match &a.result {
        Ok(o) => o.stdout_lossy(),
        Err(e) => return Err(AnswerError::Transport(e.clone())),
    };
    let docs: Result<Vec<HostDoc>, _> = serde_json::Deserializer::from_str(&text)
        .into_iter::<HostDoc>()
        .collect();
    match docs {
        Ok(d) if !d.is_empty() => Ok(d),
        _ => a.document::<HostDoc>().map(|d| vec![d]),
    }
}

/// A line from host-side report documents (`ok`/`error`), `describe` rendering a result.
fn doc_line(a: &Answer, describe: impl Fn(&Value) -> String) -> JobLine {
    let (ok, message, result) = match documents(a) {
        Ok(docs) => {
            let data = json!(docs
                .iter()
                .map(|d| d.result.clone().unwrap_or(Value::Null))
                .collect::<Vec<_>>());
            let errors: Vec<String> = docs
                .iter()
                .filter(|d| !d.ok)
                .map(|d| d.error.clone().unwrap_or_else(|| "failed".into()))
                .collect();
            if errors.is_empty() {
                let texts: Vec<String> = docs
                    .iter()
                    .map(|d| describe(d.result.as_ref().unwrap_or(&Value::Null)))
                    .collect();
                (true, texts.join("; "), data)
            } else {
                (false, errors.join("; "), data)
            }
        }
        Err(e) => (false, e.to_string(), Value::Null),
    };
    line(a, ok, message, result)
}

pub(super) fn line(a: &Answer, ok: bool, message: String, result: Value) -> JobLine {
    JobLine {
        host: a.call.machine.clone(),
        job: a.call.job.clone(),
        message,
        ok,
        result,
    }
}

/// Why a plain command failed: the transport's message, or `what` with its exit and last
/// stderr line.
pub(super) fn failure_text(a: &Answer, what: &str) -> String {
    match &a.result {
        Err(e) => e.message.clone(),
        Ok(o) => {
            let err = o.stderr_lossy();
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("{what} (exit {}: {last})", o.exit_code)
        }
    }
}

/// A job whose call could not be built (no machine to run on).
fn usage_line(job: &BackupJob, message: String) -> JobLine {
    JobLine {
        host: String::new(),
        job: job.name.clone(),
        message,
        ok: false,
        result: Value::Null,
    }
}

/// `init`: the data hosts' keys (made once, on the host), the repository hosts authorizing them
/// (each forced into `host-serve`), then one `restic init` per repository from the data side.
pub fn init(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<Report, OpError> {
    let mut lines = Vec::new();
    let mut keys = BTreeMap::new();
    for a in &exec(remote::key_calls(inv), Some(Duration::from_secs(60)))? {
        let key = a
            .result
            .as_ref()
            .ok()
            .filter(|o| o.success())
            .and_then(|o| {
                o.stdout_lossy()
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("ssh-"))
                    .map(String::from)
            });
        match key {
            Some(k) => {
                keys.insert(a.call.machine.clone(), k);
            }
            None => lines.push(JobLine {
                job: "(ssh key)".into(),
                ..line(
                    a,
                    false,
                    failure_text(a, "could not create or read /etc/picaops/backup/id_ed25519"),
                    Value::Null,
                )
            }),
        }
    }
    let calls = remote::authorize_calls(inv, &keys);
    for a in &exec(calls, Some(Duration::from_secs(60)))? {
        let ok = a.succeeded();
        let message = if ok {
            "authorized_keys of picaops-restic written (each key forced into host-serve)".into()
        } else {
            failure_text(a, "could not write picaops-restic's authorized_keys: run `picaops apply --tags backup` first (it creates the account)")
        };
        lines.push(JobLine {
            job: "(repository account)".into(),
            ..line(a, ok, message, Value::Null)
        });
    }
    let mut calls = Vec::new();
    for group in remote::by_repository(&jobs(inv, names)) {
        match remote::job_call(inv, group[0], Side::Data, "host-init", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => lines.push(usage_line(group[0], e.to_string())),
        }
    }
    for a in &exec(calls, Some(Duration::from_secs(300)))? {
        let repository = documents(a)
            .ok()
            .and_then(|d| d.first().map(|d| d.repository.clone()))
            .unwrap_or_default();
        lines.push(doc_line(a, |created| {
            if created == &Value::Bool(true) {
                format!("{repository} created")
            } else {
                format!("{repository} already exists")
            }
        }));
    }
    Ok(Report::new("init", lines))
}

/// The call of `backup run` for one job: start its service (the unit its timer starts, so
/// priorities, locks and status are the timer's), wait for it, then print the job's status.
pub fn run_call(inv: &Inventory, job: &BackupJob) -> Result<Call, CallError> {
    let machine = remote::machine(inv, job, Side::Data).ok_or_else(|| CallError::NoMachine {
        job: job.name.clone(),
    })?;
    let unit = units::service_name(&job.name);
    let file = remote::job_file(&job.name, Side::Data);
    let status = remote::picaops(Side::Data, &["host-status", "--job-file", &file]);
    let script = format!(
        "if ! systemctl cat {unit} >/dev/null 2>&1; then \
           echo '{unit} is not installed on this host: run `picaops apply --tags backup` first' >&2; exit 3; fi; \
         systemctl start {unit}; rc=$?; {}; exit $rc",
        status.to_shell_line()
    );
    Ok(Call {
        job: job.name.clone(),
        machine,
        side: Side::Data,
        command: RemoteCommand::shell(script).with_become(true),
    })
}

/// `run`: each job now, on its data host; its status file says how it went.
pub fn run(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<Report, OpError> {
    let mut calls = Vec::new();
    let mut lines = Vec::new();
    for job in jobs(inv, names) {
        match run_call(inv, job) {
            Ok(c) => calls.push(c),
            Err(_) => lines.push(usage_line(
                job,
                "its data host is not in the inventory".into(),
            )),
        }
    }
    for a in &exec(calls, None)? {
        lines.push(run_line(a));
    }
    Ok(Report::new("run", lines))
}

fn run_line(a: &Answer) -> JobLine {
    let status = a
        .result
        .as_ref()
        .ok()
        .and_then(|o| serde_json::from_str::<Vec<JobStatus>>(&o.stdout_lossy()).ok())
        .and_then(|v| v.into_iter().next());
    let exit = a.result.as_ref().map(|o| o.exit_code).unwrap_or(-1);
    let (ok, text, data) = match (&status, exit) {
        (Some(s), 0) => match &s.last_success {
            Some(r) => (
                true,
                r.summary(),
                serde_json::to_value(r).unwrap_or_default(),
            ),
            None => (false, "no successful run recorded".into(), Value::Null),
        },
        (Some(s), _) => (
            false,
            s.last_run
                .as_ref()
                .and_then(|r| r.error.clone())
                .map(|e| format!("{e} (journalctl -u {})", units::service_name(&a.call.job)))
                .unwrap_or_else(|| failure_text(a, "the backup failed")),
            serde_json::to_value(&s.last_run).unwrap_or_default(),
        ),
        (None, _) => (false, failure_text(a, "the backup failed"), Value::Null),
    };
    line(a, ok, text, data)
}

/// Refuses retention from the workstation while a site is lost (the hosts refuse it too: the
/// job files say so, for their timers).
fn frozen(inv: &Inventory) -> Result<(), OpError> {
    match super::jobfile::retention_frozen(inv) {
        Some(why) => Err(OpError::RetentionFrozen(why)),
        None => Ok(()),
    }
}

/// `forget` (then `prune` with `prune_after`): once per repository, on its side, as the
/// account owning it: a compromised data host cannot delete its own history.
pub fn forget(
    inv: &Inventory,
    names: &[String],
    prune_after: bool,
    exec: &mut Exec,
) -> Result<Report, OpError> {
    frozen(inv)?;
    per_repository(inv, names, exec, "forget", Side::Account, |files| {
        let mut args = vec!["host-forget".to_string()];
        for f in files {
            args.push("--job-file".into());
            args.push(f.clone());
        }
        if prune_after {
            args.push("--prune".into());
        }
        args
    })
}

pub fn prune(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<Report, OpError> {
    frozen(inv)?;
    per_repository(inv, names, exec, "prune", Side::Account, |files| {
        vec!["host-prune".into(), "--job-file".into(), files[0].clone()]
    })
}

/// `check`: on the repository's host as root, without a restic lock.
pub fn check(
    inv: &Inventory,
    names: &[String],
    subset: Option<&str>,
    exec: &mut Exec,
) -> Result<Report, OpError> {
    per_repository(inv, names, exec, "check", Side::RepoRoot, |files| {
        let mut args = vec!["host-check".into(), "--job-file".into(), files[0].clone()];
        if let Some(s) = subset {
            args.push("--read-data-subset".into());
            args.push(s.to_string());
        }
        args
    })
}

/// One call per repository (its jobs named `a,b`), on the repository's host.
pub fn repository_calls(
    inv: &Inventory,
    names: &[String],
    side: Side,
    args: impl Fn(&[String]) -> Vec<String>,
) -> Vec<Call> {
    remote::by_repository(&jobs(inv, names))
        .iter()
        .map(|group| {
            let files: Vec<String> = group
                .iter()
                .map(|j| remote::job_file(&j.name, side))
                .collect();
            let args = args(&files);
            let words: Vec<&str> = args.iter().map(String::as_str).collect();
            Call {
                job: group
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                machine: group[0].repository.host.value.clone(),
                side,
                command: remote::picaops(side, &words),
            }
        })
        .collect()
}

fn per_repository(
    inv: &Inventory,
    names: &[String],
    exec: &mut Exec,
    what: &'static str,
    side: Side,
    args: impl Fn(&[String]) -> Vec<String>,
) -> Result<Report, OpError> {
    let answers = exec(repository_calls(inv, names, side, args), None)?;
    let lines = answers
        .iter()
        .map(|a| {
            doc_line(a, |v| match v {
                Value::Array(groups) => {
                    let count = |k: &str| -> usize {
                        groups
                            .iter()
                            .map(|g| g.get(k).and_then(Value::as_array).map_or(0, Vec::len))
                            .sum()
                    };
                    format!(
                        "kept {} snapshots, forgot {}",
                        count("keep"),
                        count("remove")
                    )
                }
                Value::Number(n) if what == "check" => format!("no error ({n} found)"),
                _ => "done".into(),
            })
        })
        .collect();
    Ok(Report::new(what, lines))
}

/// One job's snapshots, listed on its repository's side (works when the data site is down).
#[derive(Debug)]
pub struct JobSnapshots {
    pub job: String,
    pub machine: String,
    pub snapshots: Result<Vec<Snapshot>, AnswerError>,
}

/// `snapshots`: the jobs whose call could not be built, then each job's listing.
#[derive(Debug)]
pub struct Snapshots {
    pub skipped: Vec<CallError>,
    pub jobs: Vec<JobSnapshots>,
}

impl Snapshots {
    pub fn ok(&self) -> bool {
        self.jobs.iter().all(|j| j.snapshots.is_ok())
    }
    pub fn exit_code(&self) -> i32 {
        exit(self.ok())
    }
    /// `{"ok": …, "jobs": [{"job": …, "snapshots": […]}]}`, the jobs that answered.
    pub fn to_json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .filter_map(|j| {
                let s = j.snapshots.as_ref().ok()?;
                Some(json!({"job": j.job, "snapshots": s}))
            })
            .collect();
        json!({"ok": self.ok(), "jobs": jobs})
    }
}

pub fn snapshots(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<Snapshots, OpError> {
    let mut calls = Vec::new();
    let mut skipped = Vec::new();
    for job in jobs(inv, names) {
        match remote::job_call(inv, job, Side::RepoRoot, "host-snapshots", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => skipped.push(e),
        }
    }
    let jobs = exec(calls, Some(Duration::from_secs(300)))?
        .iter()
        .map(|a| JobSnapshots {
            job: a.call.job.clone(),
            machine: a.call.machine.clone(),
            snapshots: listing(a),
        })
        .collect();
    Ok(Snapshots { skipped, jobs })
}

/// The snapshots in a `host-snapshots` answer (restic's `null` for none: none), or why there
/// are none.
fn listing(a: &Answer) -> Result<Vec<Snapshot>, AnswerError> {
    match a.document::<HostDoc>()? {
        HostDoc {
            ok: true, result, ..
        } => Ok(result
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()),
        d => Err(AnswerError::Failed {
            machine: a.call.machine.clone(),
            message: d.error.unwrap_or_default(),
        }),
    }
}

/// Per-call limit of a listing on the repository's side (a large repository takes a while).
const LISTING_TIMEOUT: Duration = Duration::from_secs(120);

/// One job's newest data, as its repository lists it.
#[derive(Debug)]
pub struct JobNewest {
    pub job: String,
    /// The repository's machine.
    pub machine: String,
    /// `Ok(None)`: the repository holds no snapshot of the job.
    pub newest: Result<Option<SnapshotInfo>, OpError>,
}

/// The newest snapshot of each job in `names`, read on its repository's side only (root on
/// the repository's machine, restic without a lock): the data hosts are never contacted, so
/// this holds with the data's site gone. One round of calls: each repository machine is
/// connected to once, whatever the number of jobs. A job whose repository machine is not in
/// the inventory gets its [`OpError::Call`].
pub fn newest_snapshots(
    inv: &Inventory,
    names: &[String],
    exec: &mut Exec,
) -> Result<Vec<JobNewest>, OpError> {
    let mut out = Vec::new();
    let mut calls = Vec::new();
    for job in jobs(inv, names) {
        match remote::job_call(inv, job, Side::RepoRoot, "host-snapshots", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => out.push(JobNewest {
                job: job.name.clone(),
                machine: job.repository.host.value.clone(),
                newest: Err(OpError::Call(e)),
            }),
        }
    }
    if calls.is_empty() {
        return Ok(out);
    }
    let now = super::time::now();
    for a in exec(calls, Some(LISTING_TIMEOUT))? {
        let newest = listing(&a)
            .map(|s| SnapshotInfo::newest(&s, now))
            .map_err(|source| OpError::Listing {
                job: a.call.job.clone(),
                machine: a.call.machine.clone(),
                source: Box::new(source),
            });
        out.push(JobNewest {
            job: a.call.job,
            machine: a.call.machine,
            newest,
        });
    }
    Ok(out)
}

/// The newest snapshot of `job` in its repository (id, time, age, how many, what a restore of
/// the latest data reads and its size), read on the repository's side only: see
/// [`newest_snapshots`]. `Ok(None)`: the repository holds no snapshot of it.
pub fn newest_snapshot(
    inv: &Inventory,
    job: &str,
    exec: &mut Exec,
) -> Result<Option<SnapshotInfo>, OpError> {
    let names = selection(inv, &[job.to_string()], None)?;
    newest_snapshots(inv, &names, exec)?
        .into_iter()
        .find(|n| n.job == job)
        .map_or(Ok(None), |n| n.newest)
}

/// `snapshots --from-json FILE`: a listing saved from restic's `snapshots --json`.
pub fn snapshots_from_file(path: &Path) -> Result<Vec<Snapshot>, OpError> {
    let text = std::fs::read_to_string(path).map_err(|error| OpError::Unreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let lines: Vec<String> = text.lines().map(String::from).collect();
    super::restic::parse_snapshots(&lines).map_err(|source| OpError::SnapshotsFile {
        path: path.to_path_buf(),
        source,
    })
}

/// What `restore` is asked: a job's files into `to`, or one of its dumps into a file or a new
/// container; on the data host, or (`host`) on the repository's host at the other site, the
/// machine that still has everything when the data's site is lost.
#[derive(Debug, Default)]
pub struct RestoreRequest<'a> {
    pub job: &'a str,
    pub snapshot: Option<&'a str>,
    pub to: Option<&'a Path>,
    pub host: Option<&'a str>,
    pub dump: Option<&'a str>,
    pub into_container: Option<&'a str>,
    /// Load the dump into the job's own live server (`--load`; LDAP: the host's slapd).
    pub load: bool,
}

/// The call of a restore (checked against the inventory: job, host, an absolute `--to`).
pub fn restore_call(inv: &Inventory, req: &RestoreRequest<'_>) -> Result<Call, OpError> {
    selection(inv, &[req.job.to_string()], None)?;
    let job = &inv.backups[req.job];
    let data = data_host(inv, job).map(|m| m.name().to_string());
    let repo = job.repository.host.value.clone();
    let side = match req.host {
        None => Side::Data,
        Some(h) if Some(h) == data.as_deref() => Side::Data,
        Some(h) if h == repo => Side::RepoRoot,
        Some(h) => {
            return Err(OpError::RestoreHost {
                host: h.to_string(),
                job: req.job.to_string(),
                data: data.unwrap_or_else(|| "?".into()),
                repo,
            })
        }
    };
    if let Some(to) = req.to.filter(|t| !t.is_absolute()) {
        return Err(OpError::RelativeTo(to.to_path_buf()));
    }
    let to = req.to.map(|t| t.display().to_string());
    let mut extra = Vec::new();
    let flags = [
        ("--to", to.as_deref()),
        ("--into-container", req.into_container),
        ("--snapshot", req.snapshot),
        ("--dump", req.dump),
    ];
    for (flag, value) in flags {
        if let Some(v) = value {
            extra.extend([flag, v]);
        }
    }
    if req.load {
        extra.push("--load");
    }
    Ok(remote::job_call(inv, job, side, "host-restore", &extra)?)
}

pub fn restore(
    inv: &Inventory,
    req: &RestoreRequest<'_>,
    exec: &mut Exec,
) -> Result<Report, OpError> {
    let call = restore_call(inv, req)?;
    let to = req.to.map(|t| t.display().to_string()).unwrap_or_default();
    let lines = exec(vec![call], None)?
        .iter()
        .map(|a| {
            doc_line(a, |v| match v {
                Value::Array(x) if x.len() == 2 => format!(
                    "{} files, {} restored into {to}",
                    x[0],
                    crate::human::bytes(x[1].as_u64().unwrap_or(0))
                ),
                Value::Object(l) if req.load => format!(
                    "{} entries loaded into slapd{}",
                    l.get("entries").and_then(Value::as_u64).unwrap_or(0),
                    l.get("old_database")
                        .and_then(Value::as_str)
                        .map(|p| format!("; the previous database is kept in {p}"))
                        .unwrap_or_default()
                ),
                Value::String(check) => match req.into_container {
                    Some(c) => format!("loaded into the new container {c} ({check})"),
                    None => format!("restored into {to}"),
                },
                _ => format!("restored into {to}"),
            })
        })
        .collect();
    Ok(Report::new("restore", lines))
}

/// `drill`: on the repository's host, the other site, as if the data's site were gone.
pub fn drill(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<Report, OpError> {
    let mut calls = Vec::new();
    let mut lines = Vec::new();
    for job in jobs(inv, names) {
        match remote::job_call(inv, job, Side::RepoRoot, "host-drill", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => lines.push(usage_line(job, e.to_string())),
        }
    }
    for a in &exec(calls, None)? {
        lines.push(doc_line(a, |d| {
            let verified = d
                .pointer("/files/verified")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let dumps = d
                .get("dumps")
                .and_then(Value::as_array)
                .map_or(0, |v| v.iter().filter(|x| x["ok"] == true).count());
            let seconds = |k: &str| d.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            format!(
                "restored in {:.1} s, data {} old, {verified} files verified, {dumps} dump(s) loaded",
                seconds("restore_seconds"),
                super::schedule::human_duration(seconds("data_age_seconds") as u64),
            )
        }));
    }
    Ok(Report::new("drill", lines))
}

/// `status` over SSH: the statuses, and per job the sides that did not answer.
#[derive(Debug, Default)]
pub struct StatusReport {
    pub statuses: Vec<JobStatus>,
    /// (job, why a side's status could not be read)
    pub warnings: Vec<(String, String)>,
    /// Per job, what was seen beyond the status files: whether its data host answered, and its
    /// repository's listing when that was read (no entry: the status files were enough).
    pub seen: BTreeMap<String, Seen>,
}

/// The inventory is the reference for names and thresholds; the hosts' files for what happened.
fn from_inventory(inv: &Inventory, job: &BackupJob, s: &mut JobStatus) {
    s.job = job.name.clone();
    s.max_age_seconds = job.max_age;
    if let Some(f) = JobFile::from_inventory(inv, job) {
        s.host = f.host.clone();
        s.repository = f.repository_label();
    }
}

/// True when a status records nothing at all: no run, no data, no failure (a host whose job
/// was just installed, a rebuilt host, a lost status file).
fn records_nothing(s: &JobStatus) -> bool {
    let bare = JobStatus {
        job: s.job.clone(),
        host: s.host.clone(),
        repository: s.repository.clone(),
        max_age_seconds: s.max_age_seconds,
        ..JobStatus::default()
    };
    *s == bare
}

/// What the data side's answer says of the data host.
fn data_side(answer: Option<&Answer>) -> DataSide {
    let Some(a) = answer else {
        return DataSide::NoStatus("its data host is not in the inventory".into());
    };
    match a.document::<Vec<JobStatus>>() {
        Ok(v) if v.iter().all(records_nothing) => DataSide::Empty,
        Ok(_) => DataSide::Answered,
        Err(AnswerError::Transport(e)) if e.kind.is_connect_error() => {
            DataSide::Unreachable(e.message)
        }
        Err(e) => DataSide::NoStatus(e.to_string()),
    }
}

/// The data side's record of runs, merged with the repository side's records of checks,
/// drills and retention. When a data host gives no status (unreachable, its site lost) or
/// one that records nothing, the job's repository is listed on its side (a second round,
/// to the repository machines that answered the first: no machine is tried twice), and its
/// newest snapshot gives the age of the data.
pub fn status(inv: &Inventory, names: &[String], exec: &mut Exec) -> Result<StatusReport, OpError> {
    let selected = jobs(inv, names);
    let mut calls = Vec::new();
    for job in &selected {
        for side in [Side::Data, Side::Account, Side::RepoRoot] {
            if let Ok(c) = remote::job_call(inv, job, side, "host-status", &[]) {
                calls.push(c);
            }
        }
    }
    let answers = exec(calls, Some(Duration::from_secs(60)))?;
    // Machines that failed in the transport: not tried again. (machine → connect error?)
    let mut failed: BTreeMap<&str, bool> = BTreeMap::new();
    for a in &answers {
        if let Err(e) = &a.result {
            let connect = failed.entry(a.call.machine.as_str()).or_default();
            *connect |= e.kind.is_connect_error();
        }
    }
    let mut report = StatusReport::default();
    for job in &selected {
        if let Some(gap) = super::jobfile::offsite_gap(inv, job) {
            report.warnings.push((job.name.clone(), gap));
        }
    }
    let mut listings = Vec::new();
    for job in &selected {
        let data = answers
            .iter()
            .find(|a| a.call.job == job.name && a.call.side == Side::Data);
        let data = data_side(data);
        if data == DataSide::Answered {
            continue;
        }
        let machine = job.repository.host.value.clone();
        let repository = match failed.get(machine.as_str()) {
            Some(true) => RepoSide::Unreachable { machine },
            Some(false) => RepoSide::Failed {
                message: "it did not answer for the job's status".into(),
                machine,
            },
            None => {
                match remote::job_call(inv, job, Side::RepoRoot, "host-snapshots", &[]) {
                    Ok(c) => listings.push(c),
                    Err(e) => report.warnings.push((job.name.clone(), e.to_string())),
                }
                RepoSide::NotAsked
            }
        };
        report
            .seen
            .insert(job.name.clone(), Seen { data, repository });
    }
    if !listings.is_empty() {
        let now = super::time::now();
        for a in exec(listings, Some(LISTING_TIMEOUT))? {
            let machine = a.call.machine.clone();
            let repository = match listing(&a) {
                Ok(s) => RepoSide::Listed {
                    machine,
                    newest: SnapshotInfo::newest(&s, now),
                },
                Err(e) => {
                    report
                        .warnings
                        .push((a.call.job.clone(), format!("listing its snapshots: {e}")));
                    match e {
                        AnswerError::Transport(t) if t.kind.is_connect_error() => {
                            RepoSide::Unreachable { machine }
                        }
                        e => RepoSide::Failed {
                            machine,
                            message: e.to_string(),
                        },
                    }
                }
            };
            if let Some(seen) = report.seen.get_mut(&a.call.job) {
                seen.repository = repository;
            }
        }
    }
    for job in selected {
        let mut merged: Option<JobStatus> = None;
        for a in answers.iter().filter(|a| a.call.job == job.name) {
            match a.document::<Vec<JobStatus>>() {
                Ok(v) => {
                    for s in v {
                        match (&mut merged, a.call.side) {
                            (None, _) => merged = Some(s),
                            (Some(m), Side::Data) => {
                                let mut d = s;
                                d.absorb(m);
                                merged = Some(d);
                            }
                            (Some(m), _) => m.absorb(&s),
                        }
                    }
                }
                Err(e) => report.warnings.push((job.name.clone(), e.to_string())),
            }
        }
        let mut s = merged.unwrap_or_default();
        from_inventory(inv, job, &mut s);
        report.statuses.push(s);
    }
    Ok(report)
}

/// `status --status-dir DIR`: the statuses from `DIR/JOB.json` (a missing file: never ran).
pub fn status_from_dir(
    inv: &Inventory,
    names: &[String],
    dir: &Path,
) -> Result<StatusReport, OpError> {
    let mut statuses = Vec::new();
    for job in jobs(inv, names) {
        let path = dir.join(format!("{}.json", job.name));
        let mut s = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str::<JobStatus>(&text).map_err(|source| OpError::StatusFile {
                    path: path.clone(),
                    source,
                })?
            }
            Err(_) => JobStatus::default(),
        };
        from_inventory(inv, job, &mut s);
        statuses.push(s);
    }
    Ok(StatusReport {
        statuses,
        ..StatusReport::default()
    })
}

/// `units`: exactly what apply installs, machine by machine, keeping the units naming a
/// selected job.
pub fn units(inv: &Inventory, names: &[String]) -> Result<Vec<(String, UnitFile)>, OpError> {
    let jobs = jobs(inv, names);
    let plan = super::deploy::plan(inv, &UnitOptions::default()).map_err(OpError::Units)?;
    let wanted = |content: &str| {
        jobs.iter().any(|j| {
            content.contains(&format!("/{}.json", j.name))
                || content.contains(&format!("/{}.repo.json", j.name))
        })
    };
    let mut files = Vec::new();
    for (machine, m) in &plan {
        for u in m.services.iter().chain(&m.timers) {
            let timer_of = m
                .services
                .iter()
                .any(|s| s.name == u.name.replace(".timer", ".service") && wanted(&s.content));
            if wanted(&u.content) || timer_of {
                files.push((machine.clone(), u.clone()));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{CommandOutput, ErrorKind, TransportError};

    fn picasoft() -> Inventory {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
        match crate::inventory::load(&dir).result {
            Ok(inv) => inv,
            Err(d) => panic!("the shipped inventory does not load: {d:?}"),
        }
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> Result<CommandOutput, TransportError> {
        Ok(CommandOutput {
            exit_code: code,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            duration: Duration::ZERO,
        })
    }

    /// An executor answering each call with `answer(call)`, recording the calls it was given.
    fn fake<'a>(
        seen: &'a mut Vec<(Call, Option<Duration>)>,
        answer: impl Fn(&Call) -> Result<CommandOutput, TransportError> + 'a,
    ) -> impl FnMut(Vec<Call>, Option<Duration>) -> Result<Vec<Answer>, OpError> + 'a {
        move |calls, timeout| {
            Ok(calls
                .into_iter()
                .map(|call| {
                    seen.push((call.clone(), timeout));
                    let result = answer(&call);
                    Answer { call, result }
                })
                .collect())
        }
    }

    fn doc(ok: bool, result: Value, error: Option<&str>) -> String {
        json!({"job": "x", "ok": ok, "result": result, "error": error, "repository": "sftp:caribou:/r"})
            .to_string()
    }

    #[test]
    fn a_report_prints_its_keys_in_the_order_scripts_have_always_read() {
        let line = JobLine {
            host: "caribou".into(),
            job: "a".into(),
            message: "done".into(),
            ok: true,
            result: Value::Null,
        };
        let r = Report::new("prune", vec![line]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"jobs":[{"host":"caribou","job":"a","message":"done","ok":true,"result":null}],"ok":true,"operation":"prune"}"#
        );
    }

    #[test]
    fn a_snapshots_file_that_is_not_restic_json_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "hello").unwrap();
        let e = snapshots_from_file(&path).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(
            e.to_string().starts_with(&format!("{}: ", path.display())),
            "{e}"
        );
        let e = snapshots_from_file(&dir.path().join("none.json")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    #[test]
    fn a_selection_of_an_unknown_job_is_a_usage_error_naming_the_closest() {
        let inv = picasoft();
        let e = selection(&inv, &["mattermots".into()], None).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("Did you mean `mattermost`?"), "{e}");
        assert_eq!(selection(&inv, &[], None).unwrap().len(), inv.backups.len());
    }

    #[test]
    fn forget_runs_once_per_repository_as_its_account_and_counts_kept_and_forgotten() {
        let inv = picasoft();
        let names = selection(&inv, &["etherpad".into(), "hedgedoc".into()], None).unwrap();
        let mut seen = Vec::new();
        let groups = json!([{"keep": [1, 2, 3], "remove": [4]}]);
        let two_docs = format!(
            "{}\n{}",
            doc(true, groups.clone(), None),
            doc(true, groups, None)
        );
        let report = forget(
            &inv,
            &names,
            false,
            &mut fake(&mut seen, |_| output(0, &two_docs, "")),
        )
        .unwrap();
        // etherpad and hedgedoc share /srv/restic/pica02: one call for both.
        assert_eq!(seen.len(), 1);
        let (call, timeout) = &seen[0];
        assert_eq!(call.job, "etherpad,hedgedoc");
        assert_eq!(
            (call.machine.as_str(), call.side, *timeout),
            ("caribou", Side::Account, None)
        );
        let line = call.command.to_shell_line();
        assert!(line.starts_with("runuser -u picaops-restic -- "), "{line}");
        assert_eq!(line.matches("--job-file").count(), 2, "{line}");
        assert!(!line.contains("--prune"), "{line}");
        assert_eq!(report.exit_code(), EXIT_OK);
        assert_eq!(
            report.jobs[0].message,
            "kept 3 snapshots, forgot 1; kept 3 snapshots, forgot 1"
        );
    }

    #[test]
    fn a_failing_machine_fails_its_line_and_the_exit_code_but_not_the_others() {
        let inv = picasoft();
        let names = selection(&inv, &[], None).unwrap();
        let mut seen = Vec::new();
        let mut exec = fake(&mut seen, |c| {
            if c.job == "monitoring" {
                Err(TransportError {
                    host: c.machine.clone(),
                    kind: ErrorKind::Unreachable,
                    message: "cannot reach it".into(),
                    detail: None,
                })
            } else {
                output(
                    0,
                    &doc(
                        true,
                        json!({"files": {"verified": 7}, "dumps": [{"ok": true}], "restore_seconds": 1.5, "data_age_seconds": 3600.0}),
                        None,
                    ),
                    "",
                )
            }
        });
        let report = drill(&inv, &names, &mut exec).unwrap();
        assert_eq!(report.jobs.len(), inv.backups.len());
        assert_eq!(report.failed(), 1);
        assert_eq!(report.exit_code(), EXIT_HOST_FAILED);
        let bad = report.jobs.iter().find(|l| !l.ok).unwrap();
        assert_eq!(
            (bad.job.as_str(), bad.message.as_str()),
            ("monitoring", "cannot reach it")
        );
        let good = report.jobs.iter().find(|l| l.ok).unwrap();
        assert!(
            good.message.starts_with("restored in 1.5 s, data ")
                && good
                    .message
                    .ends_with(", 7 files verified, 1 dump(s) loaded"),
            "{}",
            good.message
        );
    }

    #[test]
    fn a_host_side_error_document_becomes_the_message() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let mut seen = Vec::new();
        let report = check(
            &inv,
            &names,
            Some("10%"),
            &mut fake(&mut seen, |_| {
                output(
                    1,
                    &doc(false, Value::Null, Some("restic check found 2 errors")),
                    "",
                )
            }),
        )
        .unwrap();
        assert!(seen[0]
            .0
            .command
            .to_shell_line()
            .contains("--read-data-subset 10%"));
        assert_eq!(seen[0].0.side, Side::RepoRoot);
        assert_eq!(report.jobs[0].message, "restic check found 2 errors");
        assert!(!report.ok);
        // No document at all: the last lines of stderr, and which side said it.
        let report = prune(
            &inv,
            &names,
            &mut fake(&mut seen, |_| output(127, "", "picaops: not found")),
        )
        .unwrap();
        assert_eq!(
            report.jobs[0].message,
            "the repository side on caribou: picaops: not found"
        );
    }

    #[test]
    fn run_reads_the_status_the_host_printed_after_the_unit() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let mut seen = Vec::new();
        let failed = serde_json::to_string(&vec![JobStatus {
            job: "mattermost".into(),
            last_run: Some(super::super::status::Attempt {
                at: 1.0,
                error: Some("restic: repository is locked".into()),
                ..Default::default()
            }),
            ..Default::default()
        }])
        .unwrap();
        let report = run(
            &inv,
            &names,
            &mut fake(&mut seen, |_| output(1, &failed, "")),
        )
        .unwrap();
        let line = seen[0].0.command.to_shell_line();
        assert!(
            line.contains("systemctl start picaops-backup-mattermost.service"),
            "{line}"
        );
        assert_eq!(seen[0].0.side, Side::Data);
        assert_eq!(
            report.jobs[0].message,
            "restic: repository is locked (journalctl -u picaops-backup-mattermost.service)"
        );
        let report = run(
            &inv,
            &names,
            &mut fake(&mut seen, |_| output(3, "", "not installed\n")),
        )
        .unwrap();
        assert_eq!(
            report.jobs[0].message,
            "the backup failed (exit 3: not installed)"
        );
    }

    #[test]
    fn restore_refuses_a_third_host_and_a_relative_path_before_any_call() {
        let inv = picasoft();
        let job = inv.backups.keys().next().unwrap().clone();
        let req = RestoreRequest {
            job: &job,
            host: Some("nowhere"),
            to: Some(Path::new("/tmp/r")),
            ..Default::default()
        };
        let e = restore_call(&inv, &req).unwrap_err();
        assert!(matches!(e, OpError::RestoreHost { .. }), "{e}");
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let req = RestoreRequest {
            job: &job,
            to: Some(Path::new("tmp/r")),
            ..Default::default()
        };
        let e = restore_call(&inv, &req).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--to must be an absolute path on the host, not `tmp/r`"
        );
        let repo = inv.backups[&job].repository.host.value.clone();
        let req = RestoreRequest {
            job: &job,
            host: Some(&repo),
            to: Some(Path::new("/tmp/r")),
            snapshot: Some("ab12"),
            ..Default::default()
        };
        let call = restore_call(&inv, &req).unwrap();
        assert_eq!(
            (call.side, call.machine.as_str()),
            (Side::RepoRoot, repo.as_str())
        );
        assert!(
            call.command
                .to_shell_line()
                .ends_with("--to /tmp/r --snapshot ab12"),
            "{}",
            call.command.to_shell_line()
        );
    }

    #[test]
    fn status_merges_the_sides_and_warns_about_a_side_that_did_not_answer() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let mut seen = Vec::new();
        let of = |s: JobStatus| serde_json::to_string(&vec![s]).unwrap();
        let data = of(JobStatus {
            job: "mattermost".into(),
            consecutive_failures: 2,
            ..Default::default()
        });
        let repo = of(JobStatus {
            job: "mattermost".into(),
            last_check: Some(super::super::status::Attempt {
                at: 5.0,
                ok: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let report = status(
            &inv,
            &names,
            &mut fake(&mut seen, |c| match c.side {
                Side::Data => output(0, &data, ""),
                Side::RepoRoot => output(0, &repo, ""),
                Side::Account => output(1, "", "runuser: failed"),
            }),
        )
        .unwrap();
        assert_eq!(seen.len(), 3);
        let s = &report.statuses[0];
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.last_check.as_ref().map(|a| a.at), Some(5.0));
        assert_eq!(s.max_age_seconds, inv.backups["mattermost"].max_age);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].1.contains("runuser: failed"));
    }

    /// An executor answering each call with `answer(call)`, recording each round of calls.
    fn rounds<'a>(
        seen: &'a mut Vec<Vec<Call>>,
        answer: impl Fn(&Call) -> Result<CommandOutput, TransportError> + 'a,
    ) -> impl FnMut(Vec<Call>, Option<Duration>) -> Result<Vec<Answer>, OpError> + 'a {
        move |calls, _| {
            seen.push(calls.clone());
            Ok(calls
                .into_iter()
                .map(|call| {
                    let result = answer(&call);
                    Answer { call, result }
                })
                .collect())
        }
    }

    fn unreachable(c: &Call) -> Result<CommandOutput, TransportError> {
        Err(TransportError {
            host: c.machine.clone(),
            kind: ErrorKind::ConnectTimeout,
            message: format!("no login at {} within 15 s", c.machine),
            detail: None,
        })
    }

    /// What `host-snapshots` prints on the repository's side: a files snapshot and a dump
    /// `ago` seconds ago, and an older files snapshot.
    fn listing_doc(job: &str, ago: f64) -> String {
        let at = |s: f64| super::super::time::rfc3339(super::super::time::now() - s);
        let tag = format!("job={job}");
        let files = json!(["picaops", tag, "part=files"]);
        let dump = json!([
            "picaops",
            tag,
            "part=dump",
            "dump=postgres-mattermost-db-mattermost.sql"
        ]);
        let snap = |id: &str, t: String, tags: &Value, bytes: u64| {
            json!({"id": id, "short_id": &id[..8], "time": t, "hostname": "pica01",
                   "paths": ["/DATA"], "tags": tags, "summary": {"total_bytes_processed": bytes}})
        };
        let result = json!([
            snap("0ld0000000", at(ago + 86400.0), &files, 900),
            snap("f11e500000", at(ago + 60.0), &files, 1000),
            snap("d0e5000000", at(ago), &dump, 24),
        ]);
        json!({"job": job, "ok": true, "result": result, "repository": "sftp:caribou:/r"})
            .to_string()
    }

    #[test]
    fn status_with_the_data_host_gone_reads_the_newest_snapshot_from_the_repository() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let data = inv.backups["mattermost"].clone();
        let data_machine = remote::machine(&inv, &data, Side::Data).unwrap();
        let mut seen = Vec::new();
        let empty = serde_json::to_string(&vec![JobStatus {
            job: "mattermost".into(),
            ..Default::default()
        }])
        .unwrap();
        let listing = listing_doc("mattermost", 3600.0);
        let report = status(
            &inv,
            &names,
            &mut rounds(&mut seen, |c| match (c.side, c.command.to_shell_line()) {
                (Side::Data, _) => unreachable(c),
                (Side::RepoRoot, line) if line.contains("host-snapshots") => {
                    output(0, &listing, "")
                }
                _ => output(0, &empty, ""),
            }),
        )
        .unwrap();
        // The data host is tried once, in the first round; the second round asks only the
        // repository's side, as root, for the listing.
        assert_eq!(seen.len(), 2, "{seen:?}");
        let tried = |m: &str| seen.iter().flatten().filter(|c| c.machine == m).count();
        assert_eq!(tried(&data_machine), 1);
        assert_eq!(seen[1].len(), 1);
        assert_eq!(
            (seen[1][0].machine.as_str(), seen[1][0].side),
            ("caribou", Side::RepoRoot)
        );
        assert!(seen[1][0]
            .command
            .to_shell_line()
            .contains("host-snapshots --job-file /etc/picaops/backup/jobs/mattermost.repo.json"));
        let rows = super::super::render::status_rows_seen(
            &report.statuses,
            &report.seen,
            super::super::time::now(),
        );
        let r = &rows[0];
        let reason = r.reason.clone().unwrap_or_default();
        assert_eq!(r.state, super::super::render::State::Ok, "{reason}");
        assert!(
            reason.starts_with(&format!(
                "data host {data_machine} unreachable (since unknown); newest snapshot d0e50000 of "
            )),
            "{reason}"
        );
        assert!(
            reason.ends_with("(1h old), 3 snapshot(s) in the repository"),
            "{reason}"
        );
        assert!(!reason.contains("no successful backup yet"), "{reason}");
        let age = r.data_age_seconds.unwrap();
        assert!((3600..3700).contains(&age), "{age}");
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["source"], "repository");
        assert_eq!(v["data_host_reachable"], false);
        assert_eq!(v["repository_reachable"], true);
        assert_eq!(v["newest_snapshot"]["id"], "d0e5000000");
        assert_eq!(v["newest_snapshot"]["short_id"], "d0e50000");
        assert!(v["newest_snapshot"]["time"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        assert_eq!(v["newest_snapshot"]["age_seconds"], age);
        assert_eq!(v["snapshot_count"], 3);
        // The keys scripts already read are all still there.
        for key in [
            "job",
            "host",
            "repository",
            "state",
            "last_success",
            "data_age_seconds",
            "max_age_seconds",
            "consecutive_failures",
            "last_check",
            "last_drill",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert!(
            report.warnings.iter().any(|(j, w)| j == "mattermost"
                && w == &format!("no login at {data_machine} within 15 s")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn status_judges_staleness_from_the_repository_s_newest_snapshot() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let max_age = inv.backups["mattermost"].max_age as f64;
        let listing = listing_doc("mattermost", max_age + 7200.0);
        let mut seen = Vec::new();
        let report = status(
            &inv,
            &names,
            &mut rounds(&mut seen, |c| match c.side {
                Side::RepoRoot if c.command.to_shell_line().contains("host-snapshots") => {
                    output(0, &listing, "")
                }
                // The repository's own status files are gone too (a fresh account).
                Side::Data => unreachable(c),
                _ => output(0, "[]", ""),
            }),
        )
        .unwrap();
        let rows = super::super::render::status_rows_seen(
            &report.statuses,
            &report.seen,
            super::super::time::now(),
        );
        let reason = rows[0].reason.clone().unwrap_or_default();
        assert_eq!(rows[0].state, super::super::render::State::Late, "{reason}");
        assert!(reason.contains("unreachable (since unknown); newest data is 1d 4h old, more than max_age 1d 2h; newest snapshot d0e50000"), "{reason}");
    }

    #[test]
    fn status_with_both_sides_gone_says_it_cannot_tell_and_tries_each_machine_once() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let mut seen = Vec::new();
        let report = status(&inv, &names, &mut rounds(&mut seen, unreachable)).unwrap();
        // No second round: the repository's machine did not answer the first.
        assert_eq!(seen.len(), 1, "{seen:?}");
        let rows = super::super::render::status_rows_seen(
            &report.statuses,
            &report.seen,
            super::super::time::now(),
        );
        let r = &rows[0];
        let reason = r.reason.clone().unwrap_or_default();
        assert_eq!(r.state, super::super::render::State::Unknown, "{reason}");
        assert!(!reason.contains("no successful backup yet"), "{reason}");
        assert!(reason.contains("unreachable (since unknown); nothing tells how its backups stand; repository host caribou unreachable too"), "{reason}");
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["state"], "unknown");
        assert_eq!(v["repository_reachable"], false);
        assert_eq!(v["newest_snapshot"], Value::Null);
        let text = super::super::render::render_status(&rows, &|_, s| s.to_string());
        assert!(
            text.lines()
                .any(|l| l.starts_with("mattermost") && l.contains("UNKNOWN")),
            "{text}"
        );
    }

    #[test]
    fn status_without_snapshots_in_the_repository_is_still_no_successful_backup_yet() {
        let inv = picasoft();
        let names = vec!["mattermost".to_string()];
        let none =
            json!({"job": "mattermost", "ok": true, "result": [], "repository": "r"}).to_string();
        let fresh = serde_json::to_string(&vec![JobStatus {
            job: "mattermost".into(),
            ..Default::default()
        }])
        .unwrap();
        for data_gone in [true, false] {
            let mut seen = Vec::new();
            let report = status(
                &inv,
                &names,
                &mut rounds(&mut seen, |c| match c.side {
                    Side::Data if data_gone => unreachable(c),
                    Side::RepoRoot if c.command.to_shell_line().contains("host-snapshots") => {
                        output(0, &none, "")
                    }
                    _ => output(0, &fresh, ""),
                }),
            )
            .unwrap();
            // A data host whose status records nothing (a new job, a rebuilt host): the
            // repository is asked as well.
            assert_eq!(seen.len(), 2, "{seen:?}");
            let rows = super::super::render::status_rows_seen(
                &report.statuses,
                &report.seen,
                super::super::time::now(),
            );
            let reason = rows[0].reason.clone().unwrap_or_default();
            assert_eq!(rows[0].state, super::super::render::State::Late, "{reason}");
            let v = serde_json::to_value(&rows[0]).unwrap();
            assert_eq!(v["snapshot_count"], 0);
            if data_gone {
                assert!(reason.ends_with("unreachable (since unknown); no successful backup yet; the repository on caribou holds no snapshot of it"), "{reason}");
            } else {
                assert_eq!(reason, "no successful backup yet");
            }
        }
    }

    #[test]
    fn newest_snapshot_reads_only_the_repository_side() {
        let inv = picasoft();
        let listing = listing_doc("mattermost", 600.0);
        let mut seen = Vec::new();
        let n = newest_snapshot(
            &inv,
            "mattermost",
            &mut rounds(&mut seen, |c| match c.side {
                Side::RepoRoot => output(0, &listing, ""),
                _ => unreachable(c),
            }),
        )
        .unwrap()
        .expect("a snapshot");
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].len(), seen[0][0].machine.as_str(), seen[0][0].side),
            (1, "caribou", Side::RepoRoot)
        );
        assert_eq!((n.id.as_str(), n.count), ("d0e5000000", 3));
        assert!((600..700).contains(&n.age_seconds), "{}", n.age_seconds);
        assert_eq!(n.latest.len(), 2);
        assert_eq!(n.latest[0].id, "f11e500000");
        assert_eq!(n.restore_bytes, Some(1024));
        // No snapshot at all, and a repository side that cannot be reached.
        let none = json!({"job": "mattermost", "ok": true, "result": null}).to_string();
        let n = newest_snapshot(
            &inv,
            "mattermost",
            &mut rounds(&mut seen, |_| output(0, &none, "")),
        );
        assert_eq!(n.unwrap(), None);
        let e =
            newest_snapshot(&inv, "mattermost", &mut rounds(&mut seen, unreachable)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot list job mattermost's snapshots on caribou: no login at caribou within 15 s"
        );
        assert_eq!(e.exit_code(), EXIT_HOST_FAILED);
        let e =
            newest_snapshot(&inv, "mattermots", &mut rounds(&mut seen, unreachable)).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        // Several jobs: one round, each repository machine once.
        let names = selection(&inv, &[], None).unwrap();
        let mut seen = Vec::new();
        let all = newest_snapshots(
            &inv,
            &names,
            &mut rounds(&mut seen, |_| output(0, &none, "")),
        )
        .unwrap();
        assert_eq!(all.len(), names.len());
        assert_eq!(seen.len(), 1);
        assert!(seen[0].iter().all(|c| c.side == Side::RepoRoot));
    }

    #[test]
    fn status_from_dir_says_which_file_is_not_a_status() {
        let inv = picasoft();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mattermost.json"), "{not json").unwrap();
        let e = status_from_dir(&inv, &["mattermost".into()], dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_HOST_FAILED);
        assert!(
            e.to_string()
                .contains("mattermost.json is not a status file"),
            "{e}"
        );
        let s = status_from_dir(&inv, &["etherpad".into()], dir.path())
            .unwrap()
            .statuses;
        assert_eq!(
            (s[0].job.as_str(), s[0].last_run.is_none()),
            ("etherpad", true)
        );
    }
}
