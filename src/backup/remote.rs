//! The workstation side of backups: which machine runs which host-side command for a job, and
//! running them over SSH (one connection per machine, its commands in order, machines in
//! parallel). restic always runs on a host, never on the workstation.
//!
//! A job has three places to act from (see `deploy`): its data host (backups, restores of the
//! live data), its repository host as the `picaops-restic` account (retention, check) and its
//! repository host as root (drills, snapshots, restores at the other site).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::config::{data_host, BackupJob};
use super::deploy::{data_job_file, repo_job_file, repo_root_job_file, REPO_HOME, REPO_USER};
use super::jobfile::host_paths;
use super::units::HOST_PICAOPS;
use crate::inventory::Inventory;
use crate::transport::{
    run_on_hosts, CommandOutput, Connector, PoolEvent, PoolOptions, RemoteCommand, TransportError,
};

/// Where a host-side command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The machine holding the data, as root.
    Data,
    /// The repository's machine, as the account owning the repository.
    Account,
    /// The repository's machine, as root (read-only work: drills, restores, listings).
    RepoRoot,
}

/// One command for one machine, on behalf of one job (or of several sharing a repository).
#[derive(Debug, Clone)]
pub struct Call {
    pub job: String,
    pub machine: String,
    pub side: Side,
    pub command: RemoteCommand,
}

/// What came back from one call.
#[derive(Debug)]
pub struct Answer {
    pub call: Call,
    pub result: Result<CommandOutput, TransportError>,
}

impl Answer {
    /// The host-side JSON document (`picaops --output json backup host-…`), or why there is
    /// none: the connection failed, or picaops on the host could not even start.
    /// The command ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.result.as_ref().is_ok_and(|o| o.success())
    }

    pub fn document<T: for<'de> Deserialize<'de>>(&self) -> Result<T, AnswerError> {
        let out = self
            .result
            .as_ref()
            .map_err(|e| AnswerError::Transport(e.clone()))?;
        let text = out.stdout_lossy();
        serde_json::from_str(&text).map_err(|_| {
            let err = out.stderr_lossy();
            let mut stderr: Vec<String> = err.lines().rev().take(4).map(String::from).collect();
            stderr.reverse();
            AnswerError::NoDocument {
                machine: self.call.machine.clone(),
                side: self.call.side,
                exit_code: out.exit_code,
                stderr,
            }
        })
    }
}

/// Why an answer holds no usable host-side document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The connection or the command failed in the transport: its message says what to do.
    #[error("{}", .0.message)]
    Transport(#[source] TransportError),
    /// picaops on the host printed no document (not installed, could not start): the last
    /// lines of its stderr (up to 4), or its exit code when it printed nothing.
    #[error("{} on {machine}: {}", describe_side(*.side), no_document_reason(*.exit_code, .stderr))]
    NoDocument {
        machine: String,
        side: Side,
        exit_code: i32,
        stderr: Vec<String>,
    },
    /// The host-side operation ran and failed; `message` is the error of its document.
    #[error("{message}")]
    Failed { machine: String, message: String },
}

fn no_document_reason(exit_code: i32, stderr: &[String]) -> String {
    if stderr.is_empty() {
        format!("exit {exit_code}, no output")
    } else {
        stderr.join(" / ")
    }
}

fn describe_side(side: Side) -> &'static str {
    match side {
        Side::Data => "the data side",
        Side::Account | Side::RepoRoot => "the repository side",
    }
}

/// A host-side operation's report: what `picaops --output json backup host-…` prints on the
/// host and the workstation reads back. Fields in alphabetical order: the order they print in.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HostDoc {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub host: String,
    pub job: String,
    pub ok: bool,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub result: Option<Value>,
}

/// Why a host-side call could not be built or run (before any host answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A job's machine on that side is not in the inventory (`inventory check` says more).
    #[error("job `{job}`: its machine is not in the inventory")]
    NoMachine { job: String },
    #[error("`{0}` is not in the inventory")]
    UnknownMachine(String),
    /// The machine cannot be reached as declared (no address…).
    #[error(transparent)]
    Target(#[from] crate::inventory::NoAddress),
    #[error("{0}")]
    KnownHosts(String),
    #[error("{0}")]
    Connector(String),
}

/// `picaops --output json backup ARGS…` on the host, as root or as the repository account.
pub fn picaops(side: Side, args: &[&str]) -> RemoteCommand {
    let mut argv: Vec<String> = Vec::new();
    if side == Side::Account {
        argv.extend(["runuser", "-u", REPO_USER, "--"].map(String::from));
    }
    argv.extend([HOST_PICAOPS, "--output", "json", "backup"].map(String::from));
    argv.extend(args.iter().map(|a| a.to_string()));
    RemoteCommand::argv(argv).with_become(true)
}

/// The job file a side reads.
pub fn job_file(job: &str, side: Side) -> String {
    match side {
        Side::Data => data_job_file(job),
        Side::Account => repo_job_file(job),
        Side::RepoRoot => repo_root_job_file(job),
    }
    .display()
    .to_string()
}

/// The machine of a side of `job` (None when the inventory lacks it: `inventory check` says so).
pub fn machine(inv: &Inventory, job: &BackupJob, side: Side) -> Option<String> {
    match side {
        Side::Data => data_host(inv, job).map(|m| m.name().to_string()),
        Side::Account | Side::RepoRoot => Some(job.repository.host.value.clone()),
    }
}

/// One host-side command about one job: `picaops backup OP --job-file <its file> EXTRA…`.
pub fn job_call(
    inv: &Inventory,
    job: &BackupJob,
    side: Side,
    op: &str,
    extra: &[&str],
) -> Result<Call, CallError> {
    let machine = machine(inv, job, side).ok_or_else(|| CallError::NoMachine {
        job: job.name.clone(),
    })?;
    let file = job_file(&job.name, side);
    let mut args = vec![op, "--job-file", &file];
    args.extend_from_slice(extra);
    Ok(Call {
        job: job.name.clone(),
        machine,
        side,
        command: picaops(side, &args),
    })
}

/// Jobs grouped by repository (key), in inventory order: retention and checks run once per
/// repository.
pub fn by_repository<'a>(jobs: &[&'a BackupJob]) -> Vec<Vec<&'a BackupJob>> {
    let mut groups: Vec<(String, Vec<&BackupJob>)> = Vec::new();
    for job in jobs {
        let key = job.repository.key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Is `machine` at the site `recovery.yml` declares lost?
fn lost(inv: &Inventory, machine: &str) -> bool {
    inv.machine(machine)
        .is_some_and(|m| crate::inventory::recovery::is_lost(inv, m))
}

/// `backup init`, step 1: each data host makes its key once and prints the public half.
pub fn key_calls(inv: &Inventory) -> Vec<Call> {
    let mut hosts: Vec<String> = Vec::new();
    for job in inv.backups.values() {
        if let Some(m) = machine(inv, job, Side::Data) {
            // While a site is lost its machines are not asked (their lines are kept, step 2).
            if !hosts.contains(&m) && !lost(inv, &m) {
                hosts.push(m);
            }
        }
    }
    let key = host_paths::IDENTITY_FILE;
    hosts
        .into_iter()
        .map(|h| Call {
            job: String::new(),
            machine: h.clone(),
            side: Side::Data,
            command: RemoteCommand::shell(format!(
                "set -e; umask 077; mkdir -p /etc/picaops/backup; \
                 test -f {key} || ssh-keygen -q -t ed25519 -N '' -C 'picaops-backup@{h}' -f {key} >/dev/null; \
                 cat {key}.pub"
            ))
            .with_become(true),
        })
        .collect()
}

/// `backup init`, step 2: each repository host authorizes exactly the keys of the data hosts
/// sending to it, each forced into `picaops backup host-serve --host DATA` (no shell, no
/// forwarding, no SFTP): the key can only add to its own jobs' repositories ([`serve_line`]).
/// `keys`: data host → public key line. Written atomically, through stdin (no key on a command
/// line).
pub fn authorize_calls(inv: &Inventory, keys: &BTreeMap<String, String>) -> Vec<Call> {
    let mut per_repo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Data hosts that gave no key (down, or at a lost site): their lines stay as they are, so
    // that an init while one machine is away never cuts it off its repository.
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in inv.backups.values() {
        if lost(inv, &job.repository.host) {
            continue;
        }
        let Some(data) = machine(inv, job, Side::Data) else {
            continue;
        };
        // A moved service's home machine: it sends this job's backups again after the failback.
        let home = super::jobfile::restic_host(inv, job);
        for away in home
            .into_iter()
            .chain((!keys.contains_key(&data)).then(|| data.clone()))
        {
            let m = missing
                .entry(job.repository.host.value.clone())
                .or_default();
            if !m.contains(&away) {
                m.push(away);
            }
        }
        let Some(key) = keys.get(&data) else {
            continue;
        };
        let lines = per_repo
            .entry(job.repository.host.value.clone())
            .or_default();
        let line = serve_line(&data, key);
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let ssh = format!("{REPO_HOME}/.ssh");
    per_repo
        .into_iter()
        .map(|(host, lines)| {
            let text = format!(
                "# Written by `picaops backup init`: the data hosts that send backups here, each\n\
                 # forced into `picaops backup host-serve` (append-only, its own jobs only).\n{}",
                lines.concat()
            );
            Call {
                job: String::new(),
                machine: host.clone(),
                side: Side::RepoRoot,
                command: RemoteCommand::shell(format!(
                    "set -e; umask 077; install -d -m 700 -o {REPO_USER} -g {REPO_USER} {ssh}; \
                     {{ cat; {keep} }} > {ssh}/.authorized_keys.new; chown {REPO_USER}: {ssh}/.authorized_keys.new; \
                     mv {ssh}/.authorized_keys.new {ssh}/authorized_keys",
                    keep = match missing.get(&host) {
                        // The keys are made with the comment `picaops-backup@HOST` (step 1).
                        Some(hosts) => format!(
                            "grep -E ' picaops-backup@({})$' {ssh}/authorized_keys 2>/dev/null || true;",
                            hosts.join("|")
                        ),
                        None => ":;".to_string(),
                    }
                ))
                .with_stdin(text)
                .with_become(true),
            }
        })
        .collect()
}

/// The `authorized_keys` line of data host `data`'s key on a repository host.
pub fn serve_line(data: &str, key: &str) -> String {
    format!(
        "restrict,command=\"{} backup host-serve --host {data}\" {}\n",
        super::units::HOST_PICAOPS,
        key.trim()
    )
}

/// How long the backup commands wait for a machine to let them in, unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs every call over SSH: one connection per machine (a machine that does not let us in
/// within `connect_timeout` fails all its calls at once, tried once), each machine's calls in
/// order. `timeout`: per call (`None`: none, for backups that take hours).
pub async fn run_calls(
    inv: &Inventory,
    calls: Vec<Call>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    events: Option<mpsc::UnboundedSender<PoolEvent>>,
) -> Result<Vec<Answer>, CallError> {
    let mut per_machine: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for c in calls {
        per_machine.entry(c.machine.clone()).or_default().push(c);
    }
    let mut targets = Vec::new();
    for name in per_machine.keys() {
        let m = inv
            .machine(name)
            .ok_or_else(|| CallError::UnknownMachine(name.clone()))?;
        targets.push(crate::inventory::target(m).map_err(CallError::Target)?);
    }
    let kh = crate::inventory::write_known_hosts(inv)
        .map_err(|e| CallError::KnownHosts(e.to_string()))?;
    let connector = Connector::new(&kh, connect_timeout, timeout)
        .map_err(|e| CallError::Connector(e.message))?;
    let per_machine = Arc::new(per_machine);
    let work_calls = per_machine.clone();
    let outcomes = run_on_hosts(
        &targets,
        Arc::new(connector),
        &PoolOptions { forks: 20 },
        events,
        move |target, transport| {
            let calls = work_calls.get(&target.name).cloned().unwrap_or_default();
            async move {
                let mut results = Vec::new();
                for c in calls {
                    let mut command = c.command.clone();
                    if let Some(t) = timeout {
                        command = command.with_timeout(t);
                    }
                    results.push(transport.exec(&command).await);
                }
                Ok(results)
            }
        },
    )
    .await;
    let mut answers = Vec::new();
    for o in outcomes {
        let calls = per_machine.get(&o.target.name).cloned().unwrap_or_default();
        match o.result {
            Ok(results) => {
                for (call, result) in calls.into_iter().zip(results) {
                    answers.push(Answer { call, result });
                }
            }
            Err(e) => {
                for call in calls {
                    answers.push(Answer {
                        call,
                        result: Err(e.clone()),
                    });
                }
            }
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_side_commands_run_as_the_account_through_runuser() {
        let c = picaops(Side::Account, &["host-check", "--job-file", "/x.json"]);
        let line = c.to_shell_line();
        assert!(
            line.starts_with("runuser -u picaops-restic -- /usr/local/bin/picaops --output json backup host-check"),
            "{line}"
        );
        let c = picaops(Side::Data, &["host-run"]);
        assert!(c
            .to_shell_line()
            .starts_with("/usr/local/bin/picaops --output json"));
    }

    #[test]
    fn job_files_of_each_side() {
        assert_eq!(job_file("a", Side::Data), "/etc/picaops/backup/jobs/a.json");
        assert_eq!(
            job_file("a", Side::RepoRoot),
            "/etc/picaops/backup/jobs/a.repo.json"
        );
        assert_eq!(
            job_file("a", Side::Account),
            "/var/lib/picaops-restic/jobs/a.json"
        );
    }
}
