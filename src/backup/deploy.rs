//! What `picaops apply` installs for backups on each machine (playbooks/base/backup.yml), as
//! engine variables: `picaops_backup` (the picaops binary, job files, units, the repository
//! account and its directories) and `picaops_backup_passwords` (secret-named, so the values are
//! redacted from every plan and report).
//!
//! Each job has a data side and a repository side:
//! - on the data host: `/etc/picaops/backup/jobs/JOB.json` (reaches the repository over SSH,
//!   append-only: see `super::serve`) with its service and timer; restic runs there, where the
//!   data is;
//! - on the repository host: two copies of the job that open the repository directory
//!   directly. `JOB.json` under the `picaops-restic` account runs retention (forget, prune) and
//!   `check` as that account, so the repository's files keep one owner; `JOB.repo.json`
//!   (root) runs drills and restores, which only read (`--no-lock`) and need Docker to load
//!   dumps. Retention never runs on the data host: a compromised data host cannot delete
//!   its own history (its key only reaches `rclone serve restic --append-only`; README, "Backups").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::config::{data_host, BackupJob, RepositoryKind};
use super::jobfile::{host_paths, JobFile, RepositoryAccess, JOBS_DIR};
pub use super::jobfile::{repository_dir, REST_DATA_DIR};
use super::units::{self, RepositoryTask, UnitFile, UnitOptions};
use crate::inventory::{Inventory, Var};

/// The account owning the repositories on a repository host (Debian's `backup` user exists).
pub const REPO_USER: &str = super::config::DEFAULT_SFTP_USER;
/// Its home: job files, password files, state and restic cache of the repository side.
pub const REPO_HOME: &str = "/var/lib/picaops-restic";

/// The repository side's job file run as [`REPO_USER`] (retention, check).
pub fn repo_job_file(job: &str) -> PathBuf {
    Path::new(REPO_HOME)
        .join("jobs")
        .join(format!("{job}.json"))
}

/// The repository side's job file run as root (drills, restores: read only).
pub fn repo_root_job_file(job: &str) -> PathBuf {
    Path::new(JOBS_DIR).join(format!("{job}.repo.json"))
}

/// The data side's job file.
pub fn data_job_file(job: &str) -> PathBuf {
    Path::new(JOBS_DIR).join(format!("{job}.json"))
}

/// A password file's name: the secret's name with `/` made `_`.
pub fn password_file_name(secret: &str) -> String {
    secret.replace('/', "_")
}

/// Why what apply installs for backups cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot write the job file {path}: {source}")]
    JobFile {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// An SFTP job's data host could not check its repository host's SSH key.
    #[error(
        "job `{job}`: no pinned host key for its repository host `{repo_host}` ({known_hosts_name}); \
         run `picaops inventory pin {repo_host}` so the data host can check whose SFTP server it talks to"
    )]
    NoPinnedKey {
        job: String,
        repo_host: String,
        /// The host's name in known_hosts (`[address]:port` for another port than 22).
        known_hosts_name: String,
    },
    #[error("cannot find picaops's own path: {0}")]
    OwnPath(#[source] std::io::Error),
    /// The secret store's message (which secret, what to do).
    #[error("backup job `{job}`: repository password: {message}")]
    Password { job: String, message: String },
}

/// One file apply writes (content given here, owner and mode).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Installed {
    pub path: String,
    pub content: String,
    pub owner: String,
    pub mode: String,
}

/// Everything backups need on one machine.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MachineBackup {
    /// Job files (data side and repository side).
    pub job_files: Vec<Installed>,
    /// Services (started by their timers, never enabled themselves).
    pub services: Vec<UnitFile>,
    /// Timers, enabled and started.
    pub timers: Vec<UnitFile>,
    /// known_hosts pinning the SFTP repository hosts (data side).
    pub known_hosts: Option<String>,
    /// Password files this machine needs.
    pub passwords: Vec<PasswordFile>,
    /// Repository side: directories owned by the repository account.
    pub repository_dirs: Vec<String>,
}

/// A repository password file: its name, and who needs a copy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PasswordFile {
    /// File name (the secret's name with `/` made `_`).
    pub name: String,
    /// Root's copy, in /etc/picaops/backup/secrets.
    pub root: bool,
    /// The repository account's copy, in its home.
    pub account: bool,
}

impl MachineBackup {
    pub fn is_empty(&self) -> bool {
        self.job_files.is_empty()
    }
}

/// The repository side's copy of `file`: the repository directory opened directly.
fn repository_side(file: &JobFile, job: &BackupJob, as_account: bool) -> JobFile {
    let mut f = file.clone();
    f.repository = RepositoryAccess::Local {
        path: repository_dir(job),
    };
    f.limit_upload_kib = None;
    // One flock for both copies: retention never runs during a check or a drill.
    f.lock_dir = Path::new(REPO_HOME).join("locks");
    let secret = password_file_name(&job.password.value);
    if as_account {
        f.password_file = Path::new(REPO_HOME).join("secrets").join(secret);
        f.state_dir = Path::new(REPO_HOME).join("state");
        f.cache_dir = Some(Path::new(REPO_HOME).join("cache"));
        // node_exporter's directory is root's; retention has no metric of its own.
        f.metrics_dir = None;
    } else {
        // Checks and drills export their metrics from here (the alert rules take the newest
        // value across machines).
        f.read_only = true;
    }
    f
}

/// The machines whose key may add to `job`'s repository: its data host, and its home machine
/// while a lost site's service runs elsewhere (it sends again after the failback).
pub fn senders(inv: &Inventory, job: &BackupJob, data: &str) -> Vec<String> {
    let mut senders = vec![data.to_string()];
    if let Some(home) = super::jobfile::restic_host(inv, job) {
        if !senders.contains(&home) {
            senders.push(home);
        }
    }
    senders
}

fn installed(path: &Path, file: &JobFile, owner: &str) -> Result<Installed, DeployError> {
    let path = path.display().to_string();
    let content = serde_json::to_string_pretty(file).map_err(|source| DeployError::JobFile {
        path: path.clone(),
        source,
    })?;
    Ok(Installed {
        path,
        content: content + "\n",
        owner: owner.to_string(),
        mode: "0600".into(),
    })
}

/// What each machine needs, by machine name (machines without backups are absent).
pub fn plan(
    inv: &Inventory,
    opts: &UnitOptions,
) -> Result<BTreeMap<String, MachineBackup>, DeployError> {
    let mut out: BTreeMap<String, MachineBackup> = BTreeMap::new();
    let known_hosts = crate::inventory::known_hosts_text(inv);
    // Repository side: per repository (host, name), the account's and root's job files.
    type Files = (Vec<PathBuf>, Vec<PathBuf>);
    let mut repositories: BTreeMap<(String, String), Files> = BTreeMap::new();
    for job in inv.backups.values() {
        let (Some(file), Some(data)) = (JobFile::from_inventory(inv, job), data_host(inv, job))
        else {
            continue; // reported by the inventory check
        };
        let secret = password_file_name(&job.password.value);
        let repo_host = job.repository.host.value.clone();

        let data_side = out.entry(data.name().to_string()).or_default();
        let path = data_job_file(&job.name);
        data_side.job_files.push(installed(&path, &file, "root")?);
        let [service, timer] = units::job_units(job, &path, opts);
        data_side.services.push(service);
        data_side.timers.push(timer);
        add_secret(data_side, &secret, true, false);
        if let RepositoryAccess::Ssh { host, port, .. } = &file.repository {
            let name = crate::transport::known_hosts_name(host, *port);
            let lines: String = known_hosts
                .lines()
                .filter(|l| crate::inventory::line_names(l, &name))
                .map(|l| format!("{l}\n"))
                .collect();
            if lines.is_empty() {
                return Err(DeployError::NoPinnedKey {
                    job: job.name.clone(),
                    repo_host,
                    known_hosts_name: name,
                });
            }
            let kh = data_side.known_hosts.get_or_insert_with(String::new);
            for l in lines.lines() {
                if !kh.lines().any(|k| k == l) {
                    kh.push_str(l);
                    kh.push('\n');
                }
            }
        }

        let repo_side = out.entry(repo_host.clone()).or_default();
        let mut account = repository_side(&file, job, true);
        account.senders = senders(inv, job, data.name());
        let root = repository_side(&file, job, false);
        let account_path = repo_job_file(&job.name);
        repo_side
            .job_files
            .push(installed(&account_path, &account, REPO_USER)?);
        repo_side
            .job_files
            .push(installed(&repo_root_job_file(&job.name), &root, "root")?);
        add_secret(repo_side, &secret, true, true);
        let dir = repository_dir(job).display().to_string();
        if !repo_side.repository_dirs.contains(&dir) {
            repo_side.repository_dirs.push(dir);
        }
        if job.repository.kind == RepositoryKind::Rest
            && !repo_side
                .repository_dirs
                .contains(&REST_DATA_DIR.to_string())
        {
            repo_side.repository_dirs.insert(0, REST_DATA_DIR.into());
        }
        let files = repositories
            .entry((repo_host, units::repository_unit_name(&job.repository)))
            .or_default();
        files.0.push(account_path);
        files.1.push(repo_root_job_file(&job.name));
    }
    for ((host, name), (account_files, root_files)) in repositories {
        let m = out.entry(host).or_default();
        for task in RepositoryTask::ALL {
            let [service, timer] = match task {
                RepositoryTask::Retention => {
                    units::repository_units(task, &name, &account_files, Some(REPO_USER), opts)
                }
                _ => units::repository_units(task, &name, &root_files, None, opts),
            };
            m.services.push(service);
            m.timers.push(timer);
        }
    }
    Ok(out)
}

fn add_secret(m: &mut MachineBackup, name: &str, root: bool, account: bool) {
    match m.passwords.iter_mut().find(|p| p.name == name) {
        Some(p) => {
            p.root |= root;
            p.account |= account;
        }
        None => m.passwords.push(PasswordFile {
            name: name.to_string(),
            root,
            account,
        }),
    }
}

/// The picaops binary apply copies to the hosts: `PICAOPS_HOST_BINARY`, or this one. The hosts
/// must be able to run it (same architecture; a glibc at least as new as the build machine's).
pub fn host_binary() -> Result<PathBuf, DeployError> {
    if let Some(p) = std::env::var_os("PICAOPS_HOST_BINARY") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(DeployError::OwnPath)
}

/// Adds `picaops_backup` and `picaops_backup_passwords` to every machine that has a backup
/// role (nothing without a `backups:` section). Passwords are read from the secret store here,
/// on the workstation.
pub fn add_engine_vars(inv: &mut Inventory) -> Result<(), DeployError> {
    if inv.backups.is_empty() {
        return Ok(());
    }
    let plan = plan(inv, &UnitOptions::default())?;
    let binary = host_binary()?;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for job in inv.backups.values() {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            values.entry(password_file_name(&job.password.value))
        {
            let secret =
                inv.secrets
                    .get(&job.password.value)
                    .map_err(|e| DeployError::Password {
                        job: job.name.clone(),
                        message: e.to_string(),
                    })?;
            slot.insert(secret.expose().to_string());
        }
    }
    let place = inv
        .backups
        .values()
        .next()
        .map(|j| j.place.clone())
        .expect("non-empty");
    for (machine, m) in plan {
        let passwords: serde_json::Map<String, serde_json::Value> = m
            .passwords
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    json!(values.get(&p.name).cloned().unwrap_or_default()),
                )
            })
            .collect();
        let names = |pick: fn(&PasswordFile) -> bool| -> Vec<String> {
            m.passwords
                .iter()
                .filter(|p| pick(p))
                .map(|p| p.name.clone())
                .collect()
        };
        let mut dirs: Vec<String> = Vec::new();
        if !m.repository_dirs.is_empty() {
            dirs.push(REPO_HOME.to_string());
            for sub in ["jobs", "secrets", "state", "locks", "cache", ".ssh"] {
                dirs.push(format!("{REPO_HOME}/{sub}"));
            }
            dirs.extend(m.repository_dirs.iter().cloned());
        }
        let value = json!({
            "binary": binary.display().to_string(),
            "picaops": units::HOST_PICAOPS,
            "job_files": m.job_files,
            "services": m.services,
            "timers": m.timers,
            "known_hosts": m.known_hosts,
            "secrets_dir": host_paths::SECRETS_DIR,
            "root_passwords": names(|p| p.root),
            "account_passwords": names(|p| p.account),
            "account": if dirs.is_empty() { serde_json::Value::Null } else { json!({
                "user": REPO_USER,
                "home": REPO_HOME,
                "dirs": dirs,
            })},
        });
        let vars = [
            (
                "picaops_backup",
                Var {
                    value,
                    place: place.clone(),
                },
            ),
            (
                "picaops_backup_passwords",
                Var {
                    value: serde_json::Value::Object(passwords),
                    place: place.clone(),
                },
            ),
        ];
        let target = match inv.hosts.get_mut(&machine) {
            Some(h) => &mut h.vars,
            None => match inv.vms.get_mut(&machine) {
                Some(v) => &mut v.vars,
                None => continue,
            },
        };
        for (k, v) in vars {
            target.insert(k.to_string(), v);
        }
    }
    Ok(())
}
