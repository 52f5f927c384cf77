//! Plan and apply for services, machine by machine in the transport pool: one read per machine
//! (`state::read`), the diff of each project, then for apply, per changed project only: the new
//! files uploaded atomically into a staging directory, and `scripts/apply.sh` (under a per-project
//! flock on the machine) switching them in, running `up -d --remove-orphans`, waiting for health
//! and rolling back to the previous files and version on failure.
//!
//! An unchanged project costs no Compose command at all. Nothing here prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::plan::{self, Action, ServiceChange};
use super::render::{Project, PROJECTS_DIR};
use super::state::{self, ComposeKind, MachineState};
use crate::converge::Mode;
use crate::inventory::Inventory;
use crate::lifecycle::MachinePlan;
use crate::transport::{
    run_on_hosts, Connector, FileAttrs, FileContent, PoolEvent, PoolOptions, RemoteCommand, Target,
    Transport, TransportError,
};

const APPLY: &str = include_str!("scripts/apply.sh");

/// Why a service could not be deployed, taken down, restarted or looked at on its machine.
/// Secrets are redacted from anything the machine said.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Reading the machine or running a command on it failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{machine} has no `docker` command: install the Docker engine first (the base playbooks' Docker play), then apply again")]
    NoDocker { machine: String },
    #[error("the Docker engine on {machine} does not answer ({error}): start it (`systemctl start docker`) and apply again")]
    DockerDown { machine: String, error: String },
    #[error("{machine} has no Compose v2: install the `docker compose` plugin or `docker-compose` 2.x (Debian trixie: `apt install docker-compose`), then apply again")]
    NoCompose { machine: String },
    /// The staging directory for the new files could not be made.
    #[error("cannot prepare {dir} on {machine}: {stderr}")]
    Stage {
        machine: String,
        dir: String,
        stderr: String,
    },
    #[error("uploading {path} failed: {error}")]
    Upload {
        path: String,
        #[source]
        error: TransportError,
    },
    /// The connection failed while the apply script ran.
    #[error("{0} (the deployment may still be running on the host; `picaops service list` shows where it got)")]
    ApplyInterrupted(#[source] TransportError),
    /// The apply script ended without a result: its last `why`, exit code and stderr's last lines.
    #[error("{why} (exit {exit_code}){}", .stderr.as_ref().map(|t| format!(": {t}")).unwrap_or_default())]
    ApplyScript {
        why: String,
        exit_code: i32,
        stderr: Option<String>,
    },
    #[error("taking {service} down failed (exit {exit_code}): {stderr}")]
    TakeDown {
        service: String,
        exit_code: i32,
        stderr: String,
    },
    /// `service restart` of a project never applied.
    #[error("{service} is not deployed on {machine} yet: run `picaops service apply` first")]
    NotDeployedYet { service: String, machine: String },
    /// `service logs` of a project never applied.
    #[error("{service} is not deployed on {machine}")]
    NotDeployed { service: String, machine: String },
}

/// Everything a services run needs, checked (rendered, secrets resolved) before connecting.
pub struct Job {
    pub projects: Vec<Project>,
    pub mode: Mode,
    /// Take down projects no longer in the inventory (their data and volumes stay).
    pub prune: bool,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub forks: usize,
    /// Every secret value, to redact from anything shown (logs of a failing container).
    pub secrets: Vec<String>,
    /// Applying a saved plan: what each machine's state and planned changes must still be.
    pub expected: Option<BTreeMap<String, MachinePlan>>,
}

/// One machine's result.
#[derive(Debug, Serialize)]
pub struct MachineReport {
    pub machine: String,
    pub compose: Option<ComposeKind>,
    pub changes: Vec<ServiceChange>,
    /// Why the machine could not be read or served.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// What was read and planned here (for saved plans).
    #[serde(skip)]
    pub plan: Option<MachinePlan>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub machines: Vec<MachineReport>,
}

impl Report {
    pub fn changes(&self) -> impl Iterator<Item = &ServiceChange> {
        self.machines.iter().flat_map(|m| m.changes.iter())
    }

    /// Machines that failed, and services whose apply failed.
    pub fn failures(&self) -> usize {
        self.machines.iter().filter(|m| m.error.is_some()).count()
            + self.changes().filter(|c| c.error.is_some()).count()
    }

    /// Planned changes (a held-back removal counts: it is drift).
    pub fn pending(&self) -> usize {
        self.changes().filter(|c| c.action.changes()).count()
    }
}

/// The machines a run reads: the selected ones hosting a deployable service, or with `prune`
/// every selected machine (a machine whose last service left the inventory must be read to be
/// cleaned up).
pub fn targets(inv: &Inventory, selected: Vec<Target>, prune: bool) -> Vec<Target> {
    let hosting: BTreeSet<&str> = inv
        .services
        .values()
        .filter(|s| s.deploy.is_some())
        .map(|s| s.host.as_str())
        .collect();
    selected
        .into_iter()
        .filter(|t| prune || hosting.contains(t.name.as_str()))
        .collect()
}

/// Plans or applies on every target.
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
                async move { Ok(machine(&job, &target, transport.as_ref()).await) }
            }
        },
    )
    .await;
    let machines = outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(mut r) => {
                r.duration_ms = o.duration.as_millis() as u64;
                r
            }
            Err(e) => MachineReport {
                machine: o.target.name.clone(),
                compose: None,
                changes: Vec::new(),
                error: Some(e.to_string()),
                duration_ms: o.duration.as_millis() as u64,
                plan: None,
            },
        })
        .collect();
    Ok(Report {
        mode: job.mode,
        machines,
    })
}

/// The projects of one machine: read, diff, and for apply, act on each changed one in turn.
pub async fn machine(job: &Job, target: &Target, transport: &dyn Transport) -> MachineReport {
    let mut report = MachineReport {
        machine: target.name.clone(),
        compose: None,
        changes: Vec::new(),
        error: None,
        duration_ms: 0,
        plan: None,
    };
    let mine: Vec<&Project> = job
        .projects
        .iter()
        .filter(|p| p.machine == target.name)
        .collect();
    let names: Vec<&str> = mine.iter().map(|p| p.service.as_str()).collect();
    let state = match state::read(transport, &names).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.compose = Some(state.compose);
    let mut changes: Vec<(Option<&Project>, ServiceChange)> = mine
        .iter()
        .map(|p| (Some(*p), plan::diff(p, &state)))
        .collect();
    for gone in state
        .deployed
        .iter()
        .filter(|d| !names.contains(&d.as_str()))
    {
        changes.push((None, plan::removal(gone, &target.name, &state, job.prune)));
    }
    let plan = MachinePlan {
        state: state.fingerprint(),
        changes: crate::lifecycle::digest(&changes.iter().map(|(_, c)| c).collect::<Vec<_>>()),
    };
    report.plan = Some(plan.clone());
    if let Some(expected) = &job.expected {
        if let Some(why) = plan.moved_from(expected.get(&target.name)) {
            report.error = Some(format!(
                "{} since the plan was saved: nothing was applied here; make the plan again",
                why
            ));
            report.changes = changes.into_iter().map(|(_, c)| c).collect();
            return report;
        }
    }
    let needs_compose = changes
        .iter()
        .any(|(_, c)| c.action.changes() && !c.held_back);
    if needs_compose && job.mode == Mode::Apply {
        if let Some(why) = unusable(&state, &target.name) {
            report.error = Some(why.to_string());
            report.changes = changes
                .into_iter()
                .map(|(_, mut c)| {
                    if c.action.changes() && !c.held_back {
                        c.status = Some("not run".into());
                    }
                    c
                })
                .collect();
            return report;
        }
    }
    if job.mode == Mode::Apply {
        for (project, change) in changes.iter_mut() {
            if !change.action.changes() || change.held_back {
                continue;
            }
            let started = Instant::now();
            let result = match project {
                Some(p) => apply_project(job, transport, p, change, state.compose).await,
                None => remove_project(transport, change, state.compose).await,
            };
            if let Err(e) = result {
                change.status = Some("failed".into());
                change.error = Some(e.to_string());
            }
            tracing::info!(service = %change.service, elapsed = ?started.elapsed(), "service applied");
        }
    }
    report.changes = changes.into_iter().map(|(_, c)| c).collect();
    report
}

fn unusable(state: &MachineState, machine: &str) -> Option<DeployError> {
    let machine = machine.to_string();
    if !state.docker {
        return Some(DeployError::NoDocker { machine });
    }
    if let Some(e) = &state.docker_error {
        return Some(DeployError::DockerDown {
            machine,
            error: e.clone(),
        });
    }
    if state.compose == ComposeKind::None {
        return Some(DeployError::NoCompose { machine });
    }
    None
}

/// Stages the files, then runs the apply script; records its outcome in `change`.
async fn apply_project(
    job: &Job,
    transport: &dyn Transport,
    project: &Project,
    change: &mut ServiceChange,
    compose: ComposeKind,
) -> Result<(), DeployError> {
    let host = &transport.target().name;
    let switch = matches!(change.action, Action::Create | Action::Update);
    if switch {
        let next = format!("{}/.picaops/next", project.dir);
        let prepare = RemoteCommand::argv([
            "sh",
            "-c",
            "umask 077 && mkdir -p \"$1\" \"$2\" && chmod 700 \"$1\" \"$2\" && rm -rf \"$3\" && mkdir -p \"$3/secrets\"",
            "picaops-service-stage",
            PROJECTS_DIR,
            &project.dir,
            &next,
        ])
        .with_become(true);
        let out = transport.exec(&prepare).await?;
        if !out.success() {
            return Err(DeployError::Stage {
                machine: host.clone(),
                dir: next,
                stderr: out.stderr_lossy().trim().to_string(),
            });
        }
        let attrs = FileAttrs {
            mode: Some(0o600),
            owner: None,
            group: None,
        };
        for f in &project.files {
            let content = FileContent::Bytes(f.content.clone());
            transport
                .upload(&content, &format!("{next}/{}", f.path), &attrs)
                .await
                .map_err(|error| DeployError::Upload {
                    path: f.path.clone(),
                    error,
                })?;
        }
    }
    let argv = apply_argv(project, if switch { "yes" } else { "no" }, compose);
    let limit = Duration::from_secs(project.health.timeout * 2 + 600);
    let out = transport
        .exec(
            &RemoteCommand::argv(argv)
                .with_become(true)
                .with_timeout(limit),
        )
        .await
        .map_err(DeployError::ApplyInterrupted)?;
    let r = parse_apply(&out.stdout_lossy(), &job.secrets);
    change.compose_version = r.version.clone();
    change.logs = r.logs;
    let why = |i: usize| {
        r.why
            .get(i)
            .map(String::as_str)
            .unwrap_or("no reason given")
    };
    let (status, error) = match r.result.as_deref() {
        Some("ok") => ("done", None),
        Some("rolled-back") => ("rolled back", Some(format!(
            "the new version failed ({}); the previous files are back and the previous version is up and healthy again",
            why(0)
        ))),
        Some("removed") => ("failed", Some(format!(
            "the first deployment failed ({}); it was taken down (data directories and volumes kept)",
            why(0)
        ))),
        Some("rollback-failed") => ("failed", Some(format!(
            "the new version failed ({}) and so did the previous one after the rollback ({}): look at `picaops service logs {}`",
            why(0),
            why(1),
            project.service
        ))),
        _ => Err(DeployError::ApplyScript {
            why: r
                .why
                .first()
                .cloned()
                .unwrap_or_else(|| "the apply script ended early".into()),
            exit_code: out.exit_code,
            stderr: tail_of(&out.stderr_lossy(), &job.secrets),
        })?,
    };
    change.status = Some(status.into());
    change.error = error;
    Ok(())
}

/// The command line of `scripts/apply.sh` (`switch`: yes, no or restart). No secret in it.
fn apply_argv(project: &Project, switch: &str, compose: ComposeKind) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        APPLY.into(),
        "picaops-service-apply".into(),
        project.service.clone(),
        project.dir.clone(),
        switch.into(),
        project.health.timeout.to_string(),
        project.health.http.clone().unwrap_or_else(|| "-".into()),
        compose.arg().into(),
    ];
    if switch != "restart" {
        argv.extend(project.data.iter().cloned());
    }
    argv
}

/// `down` (never `-v`) and the project directory moved aside under `.removed/`.
async fn remove_project(
    transport: &dyn Transport,
    change: &mut ServiceChange,
    compose: ComposeKind,
) -> Result<(), DeployError> {
    let script = format!(
        "set -e\ncd \"$1/$2\"\n{} -p \"$2\" -f compose.yaml down --remove-orphans 2>&1 | tail -n 20\n\
         mkdir -p \"$1/.removed\"\nmv \"$1/$2\" \"$1/.removed/$2-$(date -u +%Y%m%dT%H%M%SZ)\"\n",
        compose.command()
    );
    let out = transport
        .exec(
            &RemoteCommand::argv([
                "sh",
                "-c",
                &script,
                "picaops-service-remove",
                PROJECTS_DIR,
                &change.service,
            ])
            .with_become(true),
        )
        .await?;
    if !out.success() {
        return Err(DeployError::TakeDown {
            service: change.service.clone(),
            exit_code: out.exit_code,
            stderr: out.stderr_lossy().trim().to_string(),
        });
    }
    change.status = Some("done".into());
    Ok(())
}

/// What the apply script said.
#[derive(Debug, Default)]
pub struct ApplyOutput {
    pub version: Option<String>,
    pub result: Option<String>,
    pub why: Vec<String>,
    pub logs: Vec<String>,
    pub output: Vec<String>,
}

pub fn parse_apply(text: &str, secrets: &[String]) -> ApplyOutput {
    let mut r = ApplyOutput::default();
    for line in strip_ansi(text).lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = crate::converge::report::redact(rest, secrets);
        match kind {
            "compose" => r.version = Some(rest),
            "result" => r.result = Some(rest),
            "why" => r.why.push(rest),
            "log" => r.logs.push(rest),
            "out" => r.output.push(rest),
            _ => {}
        }
    }
    r
}

/// The last 5 non-blank lines of `text`, secrets redacted (`None`: there are none).
fn tail_of(text: &str, secrets: &[String]) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    Some(crate::converge::report::redact(&tail, secrets))
}

/// Runs the apply script in `restart` mode (restart, wait for health) for one project.
pub async fn restart(
    transport: &dyn Transport,
    project: &Project,
    secrets: &[String],
) -> Result<ApplyOutput, DeployError> {
    let state = state::read(transport, &[project.service.as_str()]).await?;
    if let Some(why) = unusable(&state, &transport.target().name) {
        return Err(why);
    }
    if !state.deployed.contains(&project.service) {
        return Err(DeployError::NotDeployedYet {
            service: project.service.clone(),
            machine: transport.target().name.clone(),
        });
    }
    let argv = apply_argv(project, "restart", state.compose);
    let out = transport
        .exec(
            &RemoteCommand::argv(argv)
                .with_become(true)
                .with_timeout(Duration::from_secs(project.health.timeout + 600)),
        )
        .await?;
    Ok(parse_apply(&out.stdout_lossy(), secrets))
}

/// The last `tail` log lines of a project's containers (`compose logs`), secrets redacted.
pub async fn logs(
    transport: &dyn Transport,
    service: &str,
    tail: u32,
    secrets: &[String],
) -> Result<String, DeployError> {
    let state = state::read(transport, &[service]).await?;
    if let Some(why) = unusable(&state, &transport.target().name) {
        return Err(why);
    }
    if !state.deployed.contains(service) {
        return Err(DeployError::NotDeployed {
            service: service.to_string(),
            machine: transport.target().name.clone(),
        });
    }
    let script = format!(
        "cd \"$1/$2\" && {} -p \"$2\" -f compose.yaml logs --no-color --tail \"$3\" 2>&1",
        state.compose.command()
    );
    let out = transport
        .exec(
            &RemoteCommand::argv([
                "sh",
                "-c",
                &script,
                "picaops-service-logs",
                PROJECTS_DIR,
                service,
                &tail.to_string(),
            ])
            .with_become(true),
        )
        .await?;
    Ok(crate::converge::report::redact(
        &strip_ansi(&out.stdout_lossy()),
        secrets,
    ))
}

/// Removes terminal escape sequences (Compose writes `ESC[2K` before log lines even when its
/// output is not a terminal).
fn strip_ansi(text: &str) -> String {
    static ANSI: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    ANSI.get_or_init(|| regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("valid regex"))
        .replace_all(text, "")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_output_is_read_and_redacted() {
        let r = parse_apply(
            "compose 2.26.1\nstep files in place\nout Container x Started\nwhy container web is unhealthy\nlog \x1b[2Kweb  | token=hunter22\nresult rolled-back\n",
            &["hunter22".into()],
        );
        assert_eq!(r.version.as_deref(), Some("2.26.1"));
        assert_eq!(r.result.as_deref(), Some("rolled-back"));
        assert_eq!(r.logs, vec!["web  | token=(secret)"]);
        assert_eq!(r.why.len(), 1);
    }
}
