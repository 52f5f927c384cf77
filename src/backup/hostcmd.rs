//! The host-side commands (`picaops backup host-run|host-init|host-forget|…`, what the systemd
//! units and the workstation run ON a host): each operation of [`HostJob`] turned into a
//! [`HostOutcome`], the JSON document the workstation reads back (`remote::HostDoc`) and the
//! line a person reads. Nothing here prints; the CLI renders.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{Dump, DumpKind};
use super::host::{HostError, Say};
use super::remote::HostDoc;
use super::{render, schedule, HostJob, JobFile};

/// One host-side operation's outcome.
#[derive(Debug, Clone)]
pub struct HostOutcome {
    pub doc: HostDoc,
    /// For people, on success: `job what: text`, or `text` alone when `bare` (a listing).
    pub text: String,
    pub bare: bool,
}

/// The host-side command line could not be acted on (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum HostUsage {
    /// The job file is missing, unreadable or invalid (the message says which and why).
    #[error(transparent)]
    JobFile(#[from] super::jobfile::JobFileError),
    #[error("with --dump, give either --to FILE or a command after `--` (e.g. `-- docker exec -i db psql -U postgres -d mattermost`)")]
    DumpTarget,
    #[error("say where to restore: --to PATH (files) or --dump NAME")]
    NoTarget,
}

/// Reads a job file.
pub fn read_job(path: &Path, progress: bool) -> Result<HostJob, HostUsage> {
    let mut h = HostJob::new(JobFile::read(path).map_err(HostUsage::JobFile)?);
    h.progress = progress;
    Ok(h)
}

/// The outcome of `what` on `job`: `human` describes a success.
pub fn outcome<T: Serialize>(
    job: &HostJob,
    what: &str,
    result: Result<T, HostError>,
    human: impl FnOnce(&T) -> String,
) -> HostOutcome {
    let text = result.as_ref().map(human).unwrap_or_default();
    let (ok, error, value) = match result {
        Ok(v) => (true, None, serde_json::to_value(v).ok()),
        Err(e) => (false, Some(e.to_string()), None),
    };
    HostOutcome {
        doc: HostDoc {
            error,
            host: job.job.host.clone(),
            job: job.job.job.clone(),
            ok,
            operation: what.to_string(),
            repository: job.job.repository_label(),
            result: value,
        },
        text,
        bare: false,
    }
}

pub fn run(job: &HostJob, say: Say<'_>) -> HostOutcome {
    outcome(job, "backup", job.backup(say), |r| r.summary())
}

pub fn init(job: &HostJob) -> HostOutcome {
    outcome(job, "init", job.init(), |created| {
        let what = if *created {
            "created"
        } else {
            "already exists"
        };
        format!("{} {what}", job.restic.url())
    })
}

/// Retention of jobs sharing a repository, one outcome each, then (with `prune`) one prune.
pub fn forget(jobs: &[HostJob], prune: bool, say: Say<'_>) -> Vec<HostOutcome> {
    let mut outcomes: Vec<HostOutcome> = jobs
        .iter()
        .map(|job| {
            outcome(job, "forget", job.forget(false, &mut *say), |groups| {
                let count = |f: fn(&super::restic::ForgetGroup) -> usize| -> usize {
                    groups.iter().map(f).sum()
                };
                let kept = count(|g| g.keep.as_ref().map_or(0, Vec::len));
                let removed = count(|g| g.remove.as_ref().map_or(0, Vec::len));
                format!("kept {kept} snapshots, forgot {removed}")
            })
        })
        .collect();
    if let (true, Some(job)) = (prune, jobs.last()) {
        outcomes.push(self::prune(job, say));
    }
    outcomes
}

pub fn prune(job: &HostJob, say: Say<'_>) -> HostOutcome {
    outcome(job, "prune", job.prune(say), |_| "done".into())
}

pub fn check(job: &HostJob, subset: Option<&str>, say: Say<'_>) -> HostOutcome {
    let result = job.check(subset, say).map(|s| s.num_errors);
    outcome(job, "check", result, |_| "no error".into())
}

/// The listing (bare, for people), or restic's JSON in the document.
pub fn snapshots(job: &HostJob) -> HostOutcome {
    let mut o = outcome(job, "snapshots", job.list_snapshots(), |s| {
        render::render_snapshots(s)
    });
    o.bare = true;
    o
}

/// Where a restore goes.
#[derive(Debug, Default)]
pub struct RestoreTarget {
    pub snapshot: Option<String>,
    pub dump: Option<String>,
    pub to: Option<PathBuf>,
    pub into_container: Option<String>,
    /// For a dump: load it into the job's own live server (`HostJob::load_dump`).
    pub load: bool,
    /// For a dump: the command reading it on stdin.
    pub command: Vec<String>,
}

pub fn restore(job: &HostJob, t: RestoreTarget, say: Say<'_>) -> Result<HostOutcome, HostUsage> {
    let snapshot = t.snapshot.as_deref();
    if let (Some(name), true) = (&t.dump, t.load) {
        // A database in a container: its engine's own client, in that live container.
        if let Ok(Dump {
            kind,
            container: Some(c),
            database,
            user,
            ..
        }) = job.find_dump(name).cloned()
        {
            if kind != DumpKind::Ldap {
                let command = super::dump::load_command(kind, Some(&c), &database, user.as_deref());
                let result = job.restore_dump(name, snapshot, &command);
                return Ok(outcome(job, "restore", result, |_| {
                    format!("dump {name} loaded into its container {c}")
                }));
            }
        }
        let result = job.load_dump(name, snapshot, say);
        return Ok(outcome(job, "restore", result, |l| {
            let kept = l
                .old_database
                .as_ref()
                .map(|p| format!("; the previous database is kept in {}", p.display()))
                .unwrap_or_default();
            format!(
                "dump {name}: {} entries loaded into slapd ({}){kept}",
                l.entries,
                l.database.display()
            )
        }));
    }
    if let (Some(name), Some(container)) = (&t.dump, &t.into_container) {
        let result = job.restore_dump_into_container(name, snapshot, container);
        return Ok(outcome(job, "restore", result, |check| {
            format!("dump {name} loaded into the new container {container} ({check})")
        }));
    }
    match (t.dump, t.to) {
        (None, Some(to)) => {
            let result = job
                .restore_files(snapshot, &to)
                .map(|s| (s.files_restored, s.bytes_restored));
            Ok(outcome(job, "restore", result, |(f, b)| {
                let bytes = crate::human::bytes(*b);
                format!("{f} files, {bytes} restored into {}", to.display())
            }))
        }
        (Some(name), to) => {
            let command = match (to, t.command.is_empty()) {
                (Some(to), true) => ["sh", "-c", "cat > \"$1\"", "picaops"]
                    .map(String::from)
                    .into_iter()
                    .chain([to.display().to_string()])
                    .collect(),
                (None, false) => t.command,
                _ => return Err(HostUsage::DumpTarget),
            };
            let result = job.restore_dump(&name, snapshot, &command);
            Ok(outcome(job, "restore", result, |_| {
                format!("dump {name} loaded")
            }))
        }
        (None, None) => Err(HostUsage::NoTarget),
    }
}

pub fn drill(job: &HostJob, scratch: Option<&Path>, say: Say<'_>) -> HostOutcome {
    outcome(job, "drill", job.drill(scratch, say), |d| {
        format!(
            "restored in {:.1} s, data {} old, {} files verified, {} dump(s) loaded",
            d.restore_seconds,
            schedule::human_duration(d.data_age_seconds as u64),
            d.files.as_ref().map_or(0, |f| f.verified),
            d.dumps.iter().filter(|x| x.ok).count()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_job_file_is_a_usage_error_naming_it() {
        let Err(e) = read_job(Path::new("/nonexistent/picaops/j.json"), false) else {
            panic!("a missing job file was read");
        };
        assert!(matches!(e, HostUsage::JobFile(_)));
        assert!(e.to_string().contains("/nonexistent/picaops/j.json"), "{e}");
    }

    #[test]
    fn the_document_prints_its_keys_in_the_order_the_workstation_always_read() {
        let doc = HostDoc {
            error: Some("restic: locked".into()),
            host: "pica01".into(),
            job: "mattermost".into(),
            ok: false,
            operation: "prune".into(),
            repository: "sftp:caribou:/r".into(),
            result: None,
        };
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            text,
            r#"{"error":"restic: locked","host":"pica01","job":"mattermost","ok":false,"operation":"prune","repository":"sftp:caribou:/r","result":null}"#
        );
    }
}
