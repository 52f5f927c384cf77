//! A job's status on the host: what the last run, check and drill did, kept as JSON in
//! `<state_dir>/status/JOB.json` (read by `picaops backup status` over SSH) and mirrored as
//! node_exporter textfile metrics for vmagent/Alertmanager.
//!
//! Both files are written atomically (temporary file in the same directory, fsync, rename), so
//! a reader never sees half a file and a crash leaves the previous one. Secrets never get here:
//! errors are restic's messages, which never contain the password.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::jobfile::JobFile;
use super::manifest::VerifyReport;

/// Every metric picaops writes (the alert rules may use only these; a test checks it).
pub const METRICS: &[(&str, &str)] = &[
    (
        "picaops_backup_last_success_timestamp_seconds",
        "Unix time of the job's last successful backup (0: never).",
    ),
    (
        "picaops_backup_last_run_success",
        "1 if the job's last backup run succeeded, else 0.",
    ),
    (
        "picaops_backup_consecutive_failures",
        "Backup runs that failed since the last success.",
    ),
    (
        "picaops_backup_added_bytes",
        "Bytes the last successful run added to the repository (before compression).",
    ),
    (
        "picaops_backup_duration_seconds",
        "Wall time of the last backup run, successful or not.",
    ),
    (
        "picaops_backup_newest_data_timestamp_seconds",
        "Unix time of the newest data in the repository for this job (its last snapshot).",
    ),
    (
        "picaops_backup_last_check_timestamp_seconds",
        "Unix time of the last successful `restic check` (0: never).",
    ),
    (
        "picaops_backup_last_check_success",
        "1 if the last `restic check` found no error, else 0.",
    ),
    (
        "picaops_backup_last_drill_timestamp_seconds",
        "Unix time of the last successful restore drill (0: never).",
    ),
    (
        "picaops_backup_last_drill_success",
        "1 if the last restore drill verified everything, else 0.",
    ),
    (
        "picaops_backup_max_age_seconds",
        "The job's threshold: data older than this is late.",
    ),
];

/// Why a job's status (or its metrics) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status file {} is damaged ({source}); move it away and the next run starts a fresh one", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read status file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The flock serialising updates of one status file.
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    #[error("cannot write status file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write metrics {}: {source} (is prometheus-node-exporter's textfile directory there?)", .path.display())]
    Metrics {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the last attempt of one operation (backup, check, drill, forget, prune) did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// Unix seconds.
    pub at: f64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_seconds: f64,
}

/// The result of the last successful backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupResult {
    pub at: f64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub bytes_added: u64,
    #[serde(default)]
    pub bytes_added_packed: Option<u64>,
    pub bytes_processed: u64,
    pub duration_seconds: f64,
    /// One snapshot for the files, one per dump.
    pub snapshots: Vec<String>,
    #[serde(default)]
    pub manifest_files: u64,
    #[serde(default)]
    pub manifest_hashed: u64,
}

impl BackupResult {
    /// One line for people: `85 new, 3 changed files, 4.8 MiB added, 1.7 s`.
    pub fn summary(&self) -> String {
        format!(
            "{} new, {} changed files, {} added, {:.1} s",
            self.files_new,
            self.files_changed,
            crate::human::bytes(self.bytes_added),
            self.duration_seconds
        )
    }
}

/// The last drill: how long the restore took, how old the data was, what was verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillResult {
    pub at: f64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub restore_seconds: f64,
    /// Age of the restored data at the time of the drill.
    pub data_age_seconds: f64,
    #[serde(default)]
    pub files: Option<VerifyReport>,
    /// Per dump: its file name and whether it loaded.
    #[serde(default)]
    pub dumps: Vec<DumpDrill>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DumpDrill {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

/// Everything known about one job on this host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub job: String,
    pub host: String,
    pub repository: String,
    pub max_age_seconds: u64,
    /// The last backup attempt, successful or not.
    #[serde(default)]
    pub last_run: Option<Attempt>,
    #[serde(default)]
    pub last_success: Option<BackupResult>,
    #[serde(default)]
    pub last_failure: Option<Attempt>,
    #[serde(default)]
    pub consecutive_failures: u64,
    /// Time of the newest snapshot (the age of the newest data is now minus this).
    #[serde(default)]
    pub newest_data_time: Option<f64>,
    #[serde(default)]
    pub last_check: Option<Attempt>,
    #[serde(default)]
    pub last_check_success: Option<f64>,
    #[serde(default)]
    pub last_drill: Option<DrillResult>,
    #[serde(default)]
    pub last_drill_success: Option<f64>,
    #[serde(default)]
    pub last_forget: Option<Attempt>,
    #[serde(default)]
    pub last_prune: Option<Attempt>,
    #[serde(default)]
    pub last_restore: Option<Attempt>,
    /// Set while a backup runs: still set at the next start means that run was killed (its
    /// restic lock may be left behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<f64>,
}

/// The later of two optional records, by a time each gives.
fn later<T: Clone>(a: &Option<T>, b: &Option<T>, at: impl Fn(&T) -> f64) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) if at(y) > at(x) => Some(y.clone()),
        (Some(x), _) => Some(x.clone()),
        (None, y) => y.clone(),
    }
}

impl JobStatus {
    /// Takes from `other` (the same job's status on its repository host: checks, drills,
    /// retention and restores run there) every record newer than this one's. Backup runs stay
    /// the data host's.
    pub fn absorb(&mut self, other: &JobStatus) {
        let t = |a: &Attempt| a.at;
        self.last_check = later(&self.last_check, &other.last_check, t);
        self.last_forget = later(&self.last_forget, &other.last_forget, t);
        self.last_prune = later(&self.last_prune, &other.last_prune, t);
        self.last_restore = later(&self.last_restore, &other.last_restore, t);
        self.last_drill = later(&self.last_drill, &other.last_drill, |d| d.at);
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        self.last_check_success = max(self.last_check_success, other.last_check_success);
        self.last_drill_success = max(self.last_drill_success, other.last_drill_success);
        self.newest_data_time = max(self.newest_data_time, other.newest_data_time);
    }

    /// The status file of `job`, or a fresh status when there is none yet.
    pub fn load(job: &JobFile) -> Result<JobStatus, StatusError> {
        let path = job.status_path();
        let mut status = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|source| StatusError::Damaged { path, source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JobStatus::default(),
            Err(source) => return Err(StatusError::Read { path, source }),
        };
        status.job = job.job.clone();
        status.host = job.host.clone();
        status.repository = job.repository_label();
        status.max_age_seconds = job.max_age_seconds;
        Ok(status)
    }

    /// Loads the status, lets `change` modify it and saves it, under a flock on the status file
    /// (operations of one job may end at the same time: neither must undo the other's record).
    pub fn update(
        job: &JobFile,
        change: impl FnOnce(&mut JobStatus),
    ) -> Result<JobStatus, StatusError> {
        let path = job.status_path();
        let lock_path = path.with_extension("json.lock");
        let _lock = super::lock::RepoLock::acquire(
            &lock_path,
            &format!("pid {}", std::process::id()),
            std::time::Duration::from_secs(60),
        )?;
        let mut status = JobStatus::load(job)?;
        change(&mut status);
        status.save(job)?;
        Ok(status)
    }

    /// Records a backup run.
    pub fn record_backup(&mut self, attempt: Attempt, result: Option<BackupResult>) {
        if attempt.ok {
            self.consecutive_failures = 0;
            if let Some(r) = &result {
                self.newest_data_time = Some(r.at);
            }
            self.last_success = result;
        } else {
            self.consecutive_failures += 1;
            self.last_failure = Some(attempt.clone());
        }
        self.last_run = Some(attempt);
        self.running_since = None;
    }

    pub fn record_check(&mut self, attempt: Attempt) {
        if attempt.ok {
            self.last_check_success = Some(attempt.at);
        }
        self.last_check = Some(attempt);
    }

    pub fn record_drill(&mut self, drill: DrillResult) {
        if drill.ok {
            self.last_drill_success = Some(drill.at);
        }
        self.last_drill = Some(drill);
    }

    /// Writes the status file and, when the job has a metrics directory, the metrics file.
    pub fn save(&self, job: &JobFile) -> Result<(), StatusError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        let path = job.status_path();
        write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|source| StatusError::Write { path, source })?;
        if let Some(dir) = &job.metrics_dir {
            let path = metrics_path(dir, &job.job);
            write_atomic(&path, self.metrics().as_bytes(), 0o644)
                .map_err(|source| StatusError::Metrics { path, source })?;
        }
        Ok(())
    }

    /// node_exporter textfile format. Labels: `backup_job` (not `job`: Prometheus sets `job`
    /// on every scraped series and would rename ours to `exported_job`), `host`, `repository`.
    pub fn metrics(&self) -> String {
        let labels = format!(
            "backup_job=\"{}\",host=\"{}\",repository=\"{}\"",
            escape(&self.job),
            escape(&self.host),
            escape(&self.repository)
        );
        let ok = self.last_run.as_ref().map(|r| r.ok);
        let values: Vec<(&str, f64)> = vec![
            (
                "picaops_backup_last_success_timestamp_seconds",
                self.last_success.as_ref().map(|s| s.at).unwrap_or(0.0),
            ),
            (
                "picaops_backup_last_run_success",
                if ok == Some(true) { 1.0 } else { 0.0 },
            ),
            (
                "picaops_backup_consecutive_failures",
                self.consecutive_failures as f64,
            ),
            (
                "picaops_backup_added_bytes",
                self.last_success
                    .as_ref()
                    .map(|s| s.bytes_added as f64)
                    .unwrap_or(0.0),
            ),
            (
                "picaops_backup_duration_seconds",
                self.last_run
                    .as_ref()
                    .map(|r| r.duration_seconds)
                    .unwrap_or(0.0),
            ),
            (
                "picaops_backup_newest_data_timestamp_seconds",
                self.newest_data_time.unwrap_or(0.0),
            ),
            (
                "picaops_backup_last_check_timestamp_seconds",
                self.last_check_success.unwrap_or(0.0),
            ),
            (
                "picaops_backup_last_check_success",
                f64::from(u8::from(self.last_check.as_ref().is_some_and(|c| c.ok))),
            ),
            (
                "picaops_backup_last_drill_timestamp_seconds",
                self.last_drill_success.unwrap_or(0.0),
            ),
            (
                "picaops_backup_last_drill_success",
                f64::from(u8::from(self.last_drill.as_ref().is_some_and(|d| d.ok))),
            ),
            (
                "picaops_backup_max_age_seconds",
                self.max_age_seconds as f64,
            ),
        ];
        let mut out = String::new();
        for (name, value) in values {
            let help = METRICS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| *h)
                .unwrap_or("");
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            out.push_str(&format!("{name}{{{labels}}} {}\n", number(value)));
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `<dir>/picaops_backup_JOB.prom`: one file per job, so jobs never overwrite each other.
pub fn metrics_path(dir: &Path, job: &str) -> PathBuf {
    dir.join(format!("picaops_backup_{job}.prom"))
}

/// Writes `bytes` to `path` through a temporary file in the same directory (so the rename is
/// atomic), synced before the rename. Creates the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // node_exporter reads only `*.prom`: the temporary name must not end so.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_a_success() {
        let mut s = JobStatus::default();
        let fail = Attempt {
            at: 10.0,
            ok: false,
            error: Some("link down".into()),
            duration_seconds: 15.0,
        };
        s.record_backup(fail.clone(), None);
        s.record_backup(fail, None);
        assert_eq!(s.consecutive_failures, 2);
        let ok = Attempt {
            at: 20.0,
            ok: true,
            error: None,
            duration_seconds: 3.0,
        };
        s.record_backup(
            ok,
            Some(BackupResult {
                at: 20.0,
                bytes_added: 1500,
                ..Default::default()
            }),
        );
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.newest_data_time, Some(20.0));
        assert_eq!(
            s.last_failure.as_ref().unwrap().error.as_deref(),
            Some("link down")
        );
        let m = s.metrics();
        assert!(m.contains("picaops_backup_consecutive_failures{backup_job=\"\",host=\"\",repository=\"\"} 0\n"), "{m}");
        assert!(
            m.contains(
                "picaops_backup_added_bytes{backup_job=\"\",host=\"\",repository=\"\"} 1500\n"
            ),
            "{m}"
        );
        for (name, _) in METRICS {
            assert!(
                m.contains(&format!("# TYPE {name} gauge")),
                "{name} missing"
            );
        }
    }
}
