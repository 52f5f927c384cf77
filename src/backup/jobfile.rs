//! The host-side job file: everything `picaops backup host-*` needs on the data host (or the
//! repository side), as one root-only JSON document. `picaops apply` writes it (phase 2) to
//! `/etc/picaops/backup/jobs/JOB.json`; the systemd unit passes it with `--job-file`.
//!
//! It holds no secret: the repository password is the path of a root-only file. Reading it
//! refuses a file that others could change (it decides which commands run as root).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Dump, Retention};

/// The format version this picaops writes and reads.
pub const JOB_FILE_VERSION: u32 = 1;
/// Where apply installs job files on a host.
pub const JOBS_DIR: &str = "/etc/picaops/backup/jobs";
/// Status files, one per job (`status/JOB.json`), and manifests (`manifest/JOB/`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/picaops/backup";
/// Per-repository flock files.
pub const DEFAULT_LOCK_DIR: &str = "/run/picaops/backup";
/// node_exporter's textfile collector directory on Debian (`prometheus-node-exporter`).
pub const DEFAULT_METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";

/// Where rest-server keeps its repositories (`--path`); a REST job's `path` is under it.
pub const REST_DATA_DIR: &str = "/srv/restic-rest";

/// The directory holding a job's repository, as seen on the repository host.
pub fn repository_dir(job: &super::config::BackupJob) -> PathBuf {
    match job.repository.kind {
        super::config::RepositoryKind::Sftp => PathBuf::from(&job.repository.path),
        super::config::RepositoryKind::Rest => {
            Path::new(REST_DATA_DIR).join(job.repository.path.trim_matches('/'))
        }
    }
}

/// Why a job file cannot be used; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// Missing or not even stat-able: apply has not installed it.
    #[error("cannot read job file {}: {source}; `picaops apply` installs job files under {JOBS_DIR}", .path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "job file {} belongs to uid {owner}, not to the user running picaops (uid {uid}): refusing, \
         since it decides which commands run; `chown {uid} {}`",
        .path.display(),
        .path.display()
    )]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    /// `mode`: the permission bits (others may read or write it).
    #[error(
        "job file {} has mode {mode:o}: it must be readable and writable by its owner only; run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("cannot read job file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job file {} is not valid: {source}", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "job file {} has version {version}, this picaops reads version {JOB_FILE_VERSION}: \
         run `picaops apply` with the same picaops version as the one installed on the host",
        .path.display()
    )]
    Version { path: PathBuf, version: u32 },
    #[error("job file {}: bad job name `{name}`", .path.display())]
    BadName { path: PathBuf, name: String },
    #[error("job file {}: the job backs up nothing (no paths, no dumps)", .path.display())]
    Empty { path: PathBuf },
}

/// One job as the host runs it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub version: u32,
    /// The job's name (inventory key under `backups:`).
    pub job: String,
    /// The data host's inventory name: restic's `--host`, and the metrics' `host` label.
    pub host: String,
    pub repository: RepositoryAccess,
    /// Root-only (0600) file holding the repository password; restic reads it itself.
    pub password_file: PathBuf,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub dumps: Vec<Dump>,
    pub retention: Retention,
    /// Status marks the job late past this age of its newest data.
    pub max_age_seconds: u64,
    /// restic `--limit-upload`, KiB/s.
    #[serde(default)]
    pub limit_upload_kib: Option<u64>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_lock_dir")]
    pub lock_dir: PathBuf,
    /// Where node_exporter textfile metrics go; `null` writes none.
    #[serde(default = "default_metrics_dir")]
    pub metrics_dir: Option<PathBuf>,
    /// The restic binary (a name looked up on PATH, or a path).
    #[serde(default = "default_restic")]
    pub restic: PathBuf,
    /// restic `--retry-lock`: how long restic waits for another host's lock (seconds).
    #[serde(default = "default_retry_lock")]
    pub retry_lock_seconds: u64,
    /// How long a job waits for another picaops job on the same repository (seconds).
    #[serde(default = "default_lock_wait")]
    pub lock_wait_seconds: u64,
    /// restic's cache directory (default: restic's own, ~/.cache/restic).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// This copy only reads the repository (the repository side's root copy: drills, checks,
    /// restores): restic runs `--no-lock`, leaving no root-owned file in a repository another
    /// account writes.
    #[serde(default)]
    pub read_only: bool,
    /// Why retention may not run now (a site is lost and this repository may be the only copy
    /// of its data): `forget` and `prune` refuse with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_frozen: Option<String>,
    /// Repository side: the machines whose key `picaops backup host-serve` lets add to this
    /// job's repository (its data host, and its home machine while a lost site's service runs
    /// elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}
fn default_lock_dir() -> PathBuf {
    DEFAULT_LOCK_DIR.into()
}
fn default_metrics_dir() -> Option<PathBuf> {
    Some(DEFAULT_METRICS_DIR.into())
}
fn default_restic() -> PathBuf {
    "restic".into()
}
fn default_retry_lock() -> u64 {
    120
}
fn default_lock_wait() -> u64 {
    6 * 3600
}

/// How to reach the repository from where the job runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RepositoryAccess {
    /// A directory on this machine: the repository side's own view (retention, checks,
    /// drills), and the tests.
    Local { path: PathBuf },
    /// The repository on `host`, served append-only to this job only: restic's `rclone:`
    /// backend runs `ssh` as `user` with the job host's key, and the repository host's
    /// `authorized_keys` forces that key into `picaops backup host-serve`, which serves this
    /// job's directory with `rclone serve restic --stdio --append-only` (see README, "Backups").
    /// Nothing listens on the network; the key can add, never delete or overwrite.
    Ssh {
        host: String,
        #[serde(default)]
        port: Option<u16>,
        user: String,
        /// The job's name: what `host-serve` is asked for.
        job: String,
        /// Its directory there, for people (status, metrics); `host-serve` decides what it serves.
        path: String,
        /// The private key of this job's host (root-only).
        identity_file: PathBuf,
        /// known_hosts pinning the repository host's key (no trust on first use).
        known_hosts: PathBuf,
    },
}

impl RepositoryAccess {
    /// restic's `-r` value. Holds no credential.
    pub fn url(&self) -> String {
        match self {
            RepositoryAccess::Local { path } => path.display().to_string(),
            RepositoryAccess::Ssh { job, .. } => format!("rclone:{job}"),
        }
    }

    /// How status and metrics name the repository.
    pub fn label(&self) -> String {
        match self {
            RepositoryAccess::Local { path } => path.display().to_string(),
            RepositoryAccess::Ssh {
                host, user, path, ..
            } => format!("ssh:{user}@{host}:{path} (append-only)"),
        }
    }

    /// True when this side may not delete (forget/prune must run on the repository's side).
    pub fn append_only(&self) -> bool {
        matches!(self, RepositoryAccess::Ssh { .. })
    }
}

impl JobFile {
    /// Reads and checks a job file: owned by the running user, not writable or readable by
    /// anyone else, known version, sensible names. Errors say what to do.
    pub fn read(path: &Path) -> Result<JobFile, JobFileError> {
        let path_buf = || path.to_path_buf();
        let meta = std::fs::metadata(path).map_err(|source| JobFileError::Missing {
            path: path_buf(),
            source,
        })?;
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if meta.uid() != uid {
            return Err(JobFileError::Owner {
                path: path_buf(),
                owner: meta.uid(),
                uid,
            });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(JobFileError::Mode {
                path: path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
            path: path_buf(),
            source,
        })?;
        let job: JobFile = serde_json::from_str(&text).map_err(|source| JobFileError::Invalid {
            path: path_buf(),
            source,
        })?;
        if job.version != JOB_FILE_VERSION {
            return Err(JobFileError::Version {
                path: path_buf(),
                version: job.version,
            });
        }
        if job.job.is_empty()
            || !job
                .job
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(JobFileError::BadName {
                path: path_buf(),
                name: job.job,
            });
        }
        if job.paths.is_empty() && job.dumps.is_empty() {
            return Err(JobFileError::Empty { path: path_buf() });
        }
        Ok(job)
    }

    /// The repository as shown in status and metrics (`ssh:picaops-restic@caribou:/srv/restic/pica01 (append-only)`).
    pub fn repository_label(&self) -> String {
        self.repository.label()
    }

    pub fn status_path(&self) -> PathBuf {
        self.state_dir
            .join("status")
            .join(format!("{}.json", self.job))
    }

    /// The manifest directory written before each file backup; it is one of the snapshot's
    /// paths, so a restore holds it at `<target>/<state_dir>/manifest/JOB/`.
    pub fn manifest_path(&self) -> PathBuf {
        self.state_dir.join("manifest").join(&self.job)
    }

    /// The flock that serialises every picaops operation on this repository on this machine.
    pub fn lock_path(&self) -> PathBuf {
        let url = self.repository.url();
        let readable: String = url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(60)
            .collect();
        use sha2::Digest;
        let hash = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..6]);
        self.lock_dir.join(format!("{readable}-{hash}.lock"))
    }
}

/// While `recovery.yml` declares a site lost, retention is frozen on every repository: the
/// surviving ones may hold the only copy of the lost site's data, and nothing of their history
/// may go before the failback.
pub fn retention_frozen(inv: &crate::inventory::Inventory) -> Option<String> {
    inv.recovery.as_ref().map(|r| {
        format!(
            "retention is frozen while site `{}` is lost (since {}, {}): the surviving \
             repositories may hold the only copy of its data. `picaops site failback {}` thaws it",
            r.lost.value, r.since.value, r.place, r.lost.value
        )
    })
}

/// While a site is lost, a moved service's job may back up to a repository at the very site its
/// data now lives at: no off-site copy until the failback. Says so, with the stopgap (another
/// job to a second machine of that site).
pub fn offsite_gap(
    inv: &crate::inventory::Inventory,
    job: &super::config::BackupJob,
) -> Option<String> {
    let rec = inv.recovery.as_ref()?;
    let data = super::config::data_host(inv, job)?;
    restic_host(inv, job)?;
    let site = inv.site_of(data)?.name.clone();
    let repo_site = inv
        .machine(&job.repository.host)
        .and_then(|m| inv.site_of(m))?
        .name
        .clone();
    if repo_site != site {
        return None;
    }
    let other = inv
        .hosts
        .values()
        .find(|h| {
            h.site.value == site && h.name != data.name() && h.name != job.repository.host.value
        })
        .map(|h| format!(" (e.g. `{}`)", h.name))
        .unwrap_or_default();
    Some(format!(
        "no off-site backup while site `{}` is lost: its data now lives at `{site}` ({}), where its \
         repository is ({}). Until `picaops site failback {}`, a stopgap: a second job for the same \
         data with its repository on another machine of `{site}`{other}",
        rec.lost.value,
        data.name(),
        job.repository.host.value,
        rec.lost.value
    ))
}

/// The host name a job's snapshots are recorded under, when it is not the machine that runs it
/// now: while `recovery.yml` moves a service, its job runs at the recovery place but goes on
/// with the snapshots of its home machine (one history: listings, restores, retention and the
/// failback see every snapshot, before and after the loss).
pub fn restic_host(
    inv: &crate::inventory::Inventory,
    job: &super::config::BackupJob,
) -> Option<String> {
    match &job.holder {
        super::config::Holder::Service(s) => inv
            .services
            .get(s.as_str())
            .and_then(|s| s.moved_from.as_ref())
            .map(|home| home.value.clone()),
        super::config::Holder::Host(_) => job.moved_from.as_ref().map(|h| h.value.clone()),
    }
}

/// Where apply puts things a job needs on its host (phase 2 installs them; tests replace them).
pub mod host_paths {
    /// The data host's own SSH key for SFTP repositories (root-only).
    pub const IDENTITY_FILE: &str = "/etc/picaops/backup/id_ed25519";
    /// known_hosts pinning the repository hosts' keys.
    pub const KNOWN_HOSTS: &str = "/etc/picaops/backup/known_hosts";
    /// Directory of password files, one per secret name (`/` in the name becomes `_`).
    pub const SECRETS_DIR: &str = "/etc/picaops/backup/secrets";
}

impl JobFile {
    /// The job file apply installs for `job` (checked inventory): standard host paths, the
    /// repository host's address and SSH port from the inventory. `None` when the job's data
    /// host or repository host is unknown (the inventory check reports that).
    pub fn from_inventory(
        inv: &crate::inventory::Inventory,
        job: &super::config::BackupJob,
    ) -> Option<JobFile> {
        let data = super::config::data_host(inv, job)?;
        let repo_host = inv.machine(&job.repository.host)?;
        let address = repo_host
            .ssh()
            .address
            .clone()
            .unwrap_or_else(|| repo_host.name().to_string());
        let r = &job.repository;
        let repository = RepositoryAccess::Ssh {
            host: address,
            port: repo_host.ssh().port,
            user: r.user.clone(),
            job: job.name.clone(),
            path: repository_dir(job).display().to_string(),
            identity_file: host_paths::IDENTITY_FILE.into(),
            known_hosts: host_paths::KNOWN_HOSTS.into(),
        };
        Some(JobFile {
            version: JOB_FILE_VERSION,
            job: job.name.clone(),
            host: restic_host(inv, job).unwrap_or_else(|| data.name().to_string()),
            repository,
            password_file: Path::new(host_paths::SECRETS_DIR)
                .join(job.password.value.replace('/', "_")),
            paths: job.paths.iter().map(|p| p.value.clone()).collect(),
            exclude: job.exclude.clone(),
            dumps: job.dumps.clone(),
            retention: job.retention.clone(),
            max_age_seconds: job.max_age,
            limit_upload_kib: job.bandwidth,
            state_dir: default_state_dir(),
            lock_dir: default_lock_dir(),
            metrics_dir: default_metrics_dir(),
            restic: default_restic(),
            retry_lock_seconds: default_retry_lock(),
            lock_wait_seconds: default_lock_wait(),
            cache_dir: None,
            retention_frozen: retention_frozen(inv),
            read_only: false,
            senders: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_file_errors_name_the_file_and_the_fix() {
        let path = PathBuf::from("/etc/picaops/backup/jobs/a.json");
        let e = JobFileError::Missing {
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            e.to_string(),
            "cannot read job file /etc/picaops/backup/jobs/a.json: entity not found; \
             `picaops apply` installs job files under /etc/picaops/backup/jobs"
        );
        let e = JobFileError::Version {
            path: path.clone(),
            version: 7,
        };
        assert!(
            e.to_string()
                .starts_with("job file /etc/picaops/backup/jobs/a.json has version 7, this picaops reads version 1: run `picaops apply`"),
            "{e}"
        );
        let e = JobFileError::Mode { path, mode: 0o644 };
        assert_eq!(
            e.to_string(),
            "job file /etc/picaops/backup/jobs/a.json has mode 644: it must be readable and writable by its owner only; \
             run `chmod 600 /etc/picaops/backup/jobs/a.json`"
        );
    }
}
