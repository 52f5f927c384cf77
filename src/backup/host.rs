//! What picaops does ON a host, from a job file: back up (files with their manifest, then each
//! dump), forget, prune, check, list snapshots, restore, drill. Each operation takes the
//! repository's flock first and writes the job's status (and metrics) when it ends.
//!
//! Snapshots are tagged so one repository can hold many jobs: `picaops`, `job=NAME`, and
//! `part=files` or `part=dump` with `dump=FILE` (and `image=IMAGE` when the dump came from a
//! container, so a drill at the other site can start the same database server). restic's
//! `--host` is the data host's inventory name. Retention groups by host and paths, within the
//! job's tag, so an image upgrade never splits a dump's history.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{Dump, DumpKind};
use super::dump::{drill_steps, dump_command, DumpError};
use super::jobfile::JobFile;
use super::ldap::{self, LdapError, LiveLoad};
use super::lock::{self, LockError, RepoLock};
use super::manifest;
use super::restic::{
    self, backup_summary, describe_binary, exit, parse_check, parse_forget, parse_restore,
    parse_snapshots, BackupMessage, Restic, ResticError, RestoreSummary, Snapshot,
};
use super::status::{Attempt, BackupResult, DrillResult, DumpDrill, JobStatus, StatusError};
use super::time::now;

/// Progress and notes for the person (or the workstation) watching: one line each.
pub type Say<'a> = &'a mut dyn FnMut(&str);

/// Why a host-side operation failed. The text is what the status file, the host-side JSON
/// document and the workstation show, so it reads as one line for the volunteer on call.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// picaops's flock on the repository (another job on it kept it for the whole wait).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The job's status file could not be read or written.
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Restic(#[from] ResticError),
    /// Loading a dump into a database (a restore, or a drill's throwaway server).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Parts of a backup failed (every part is tried); one `; `-separated entry each.
    #[error("{}", join(.failures))]
    Backup {
        job: String,
        failures: Vec<PartFailure>,
    },
    #[error("the job's retention keeps nothing: refusing to forget every snapshot")]
    RetentionKeepsNothing { job: String },
    /// A site is lost: no snapshot may go (`why` says which site, since when, what thaws it).
    #[error("job {job}: {why}")]
    RetentionFrozen { job: String, why: String },
    /// `restic check` read the repository and found damage. `message`: restic's own words.
    #[error(
        "restic check found {errors} error(s){}: {message}",
        .damaged_packs.map(|n| format!(" in {n} damaged pack file(s)")).unwrap_or_default()
    )]
    CheckFound {
        url: String,
        errors: u64,
        damaged_packs: Option<usize>,
        message: String,
    },
    #[error("no file snapshot `{id}` for job {job}: `picaops backup snapshots` lists them")]
    NoSuchFileSnapshot { job: String, id: String },
    #[error("job {job} has no file snapshot yet: run a backup first")]
    NoFileSnapshotYet { job: String },
    /// `dumps`: the job's dumps, when the message lists them.
    #[error(
        "no snapshot of dump `{dump}` for job {job}{}",
        .dumps.as_ref().map(|d| format!(" (its dumps: {})", d.join(", "))).unwrap_or_default()
    )]
    NoDumpSnapshot {
        job: String,
        dump: String,
        dumps: Option<Vec<String>>,
    },
    #[error("job {job} has no dump `{dump}` (its dumps: {})", .dumps.join(", "))]
    NoSuchDump {
        job: String,
        dump: String,
        dumps: Vec<String>,
    },
    #[error(
        "`{dump}` is an SQLite file on the host, not a database server: restore it with --to FILE"
    )]
    SqliteOnHost { job: String, dump: String },
    /// An LDAP dump goes back into slapd with `--load`, never into a side container.
    #[error(
        "`{dump}` is an LDAP dump: load it into this host's slapd with --load (the old database is kept aside), \
         or write it out with --to FILE"
    )]
    LdapIntoContainer { job: String, dump: String },
    /// `--load` of a database that runs outside a container (an LDAP directory is loaded into
    /// the host's slapd; other engines only into their container).
    #[error(
        "loading a {} dump into the live database is not automated: restore `{dump}` with --to FILE \
         (then the engine's client) or --into-container NAME",
        .kind.name()
    )]
    LoadNotAutomated { dump: String, kind: DumpKind },
    #[error("cannot create the drill directory {}: {source}", .dir.display())]
    DrillDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a scratch directory in {}: {source}", .dir.display())]
    ScratchDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A drill could not restore the job's files.
    #[error("restore failed: {0}")]
    DrillRestore(#[source] ResticError),
    #[error("cannot read the restored manifest {}: {source}", .path.display())]
    RestoredManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What a drill found wrong (files and dumps are all tried); `; `-separated.
    #[error("{}", join(.failures))]
    Drill {
        job: String,
        failures: Vec<DrillFailure>,
    },
}

/// One failed part of a backup run.
#[derive(Debug, thiserror::Error)]
pub enum PartFailure {
    #[error("files: {0}")]
    Files(#[source] BackupPartError),
    #[error("dump {dump}: {source}")]
    Dump {
        dump: String,
        #[source]
        source: BackupPartError,
    },
    /// An earlier part found the repository unreachable (the link watchdog stopped restic).
    #[error("dump {dump}: not tried, the repository is unreachable")]
    NotTried { dump: String },
}

/// Why the files or one dump could not be backed up.
#[derive(Debug, thiserror::Error)]
pub enum BackupPartError {
    #[error("cannot write the manifest {}: {source}", .path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Restic(#[from] ResticError),
    /// restic exit 3: a snapshot was saved without the files it could not read.
    #[error("some files could not be read, the snapshot is incomplete: {0}")]
    Incomplete(#[source] ResticError),
    #[error("restic ended without a summary (was the backup interrupted?)")]
    NoFilesSummary,
    #[error("restic ended without a summary")]
    NoDumpSummary,
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// `docker inspect` (for the image recorded with a dump) could not run.
    #[error("cannot run docker: {0}")]
    Docker(#[source] std::io::Error),
    /// `stderr`: docker's last lines.
    #[error("container `{container}` is not there ({stderr}): is the service running? `docker ps` lists containers")]
    NoContainer { container: String, stderr: String },
    /// The file catching the dump command's stderr could not be made.
    #[error("cannot create a file in {}: {source}", .dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a dump could not be loaded into a database (restore or drill).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The drill's steps for this dump cannot be built (no image recorded…).
    #[error(transparent)]
    Steps(#[from] DumpError),
    #[error("cannot start a {image} container: {source}")]
    Start {
        image: String,
        #[source]
        source: CommandError,
    },
    #[error("the new database server did not accept connections within 180 s")]
    NotReady { container: String },
    /// A step (prepare, verify) failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("PRAGMA integrity_check says: {said}")]
    Integrity { said: String },
    /// An LDAP dump's drill or load (`backup::ldap`).
    #[error(transparent)]
    Ldap(#[from] LdapError),
    #[error("cannot read the restored dump {}: {source}", .path.display())]
    ReadDump {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no command to load the dump into")]
    NoLoadCommand,
    /// restic could not be started for `restic dump`.
    #[error(transparent)]
    Restic(#[from] ResticError),
    /// `restic dump` itself failed.
    #[error("restic dump: {0}")]
    ResticDump(#[source] ResticError),
    /// Waiting for `restic dump` or for the command loading it failed.
    #[error("{source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The command reading the dump failed. `stderr`: its last lines.
    #[error("`{program}` failed loading the dump ({status}): {stderr}")]
    Loading {
        program: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// A command picaops runs itself on the host (docker, a database client).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `command`: its first words; `stderr`: its last lines.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// One thing a drill found wrong.
#[derive(Debug, thiserror::Error)]
pub enum DrillFailure {
    #[error("the snapshot holds no manifest at {} (made by another tool or an older picaops?)", .path.display())]
    NoManifest { path: PathBuf },
    /// Restored files that are missing or differ from what was backed up (up to 5 named each).
    #[error(
        "{missing_count} file(s) missing{}, {corrupted_count} file(s) with other content than backed up{}",
        list_some(.missing),
        list_some(.corrupted)
    )]
    Files {
        missing_count: u64,
        missing: Vec<String>,
        corrupted_count: u64,
        corrupted: Vec<String>,
    },
    #[error("dump {dump}: {source}")]
    Dump {
        dump: String,
        #[source]
        source: DumpDrillError,
    },
}

/// Why one dump failed its drill.
#[derive(Debug, thiserror::Error)]
pub enum DumpDrillError {
    #[error("no snapshot of this dump yet")]
    NoSnapshot,
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// `a; b; c`, each item rendered.
fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What one host-side operation needs: the job, its restic, and the status to update.
pub struct HostJob {
    pub job: JobFile,
    pub restic: Restic,
    /// Print restic's backup progress to stderr (every 10 s).
    pub progress: bool,
}

impl HostJob {
    pub fn new(job: JobFile) -> HostJob {
        let restic = Restic::from_job(&job);
        HostJob {
            job,
            restic,
            progress: false,
        }
    }

    fn lock(&self, operation: &str) -> Result<RepoLock, LockError> {
        let holder = format!(
            "job {} ({operation}), pid {}, since {}",
            self.job.job,
            std::process::id(),
            super::time::rfc3339(now())
        );
        RepoLock::acquire(
            &self.job.lock_path(),
            &holder,
            Duration::from_secs(self.job.lock_wait_seconds),
        )
    }

    fn tags(&self, part: &str) -> String {
        format!("picaops,job={},part={part}", self.job.job)
    }

    /// `restic init` unless the repository exists: `Ok(true)` created, `Ok(false)` it was
    /// there already (init is safe to run again).
    pub fn init(&self) -> Result<bool, HostError> {
        let _lock = self.lock("init")?;
        let probe = self
            .restic
            .run(&os(&["--no-lock", "cat", "config"]), |_| {})?;
        match probe.code {
            Some(exit::OK) => return Ok(false),
            Some(exit::NO_REPOSITORY) => {}
            _ => self.restic.check(&probe)?,
        }
        Ok(self.restic.run_ok(&os(&["init"]), |_| {}).map(|_| true)?)
    }

    /// Removes stale locks this host can prove dead; notes the others.
    fn clear_stale_locks(&self, say: Say<'_>) -> Result<lock::Cleared, ResticError> {
        let cleared = lock::clear_stale(&self.restic)?;
        for l in &cleared.removed {
            say(&format!(
                "removed a stale restic lock: {}, process gone",
                lock::describe(l)
            ));
        }
        for l in &cleared.held {
            say(&format!("the repository also holds {}", lock::describe(l)));
        }
        Ok(cleared)
    }

    /// Runs a restic operation that may meet a stale lock: on exit 11, removes the locks
    /// provably dead and tries once more; otherwise says who holds the lock.
    fn with_lock_retry(
        &self,
        args: &[OsString],
        say: Say<'_>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<restic::Finished, ResticError> {
        let first = self.restic.run(args, &mut *on_line)?;
        if first.code != Some(exit::LOCK_FAILED) {
            self.restic.check(&first)?;
            return Ok(first);
        }
        let cleared = self.clear_stale_locks(say)?;
        if cleared.removed.is_empty() {
            let who: Vec<String> = cleared.held.iter().map(lock::describe).collect();
            return Err(ResticError::Locked {
                url: self.restic.url(),
                message: format!(
                    "held by {}; picaops removes a lock only when it was taken on this host by a process that is gone. \
                     If its holder is surely dead, run `restic unlock` on that host",
                    if who.is_empty() { "an unknown process".into() } else { who.join("; ") }
                ),
            });
        }
        self.restic.run_ok(args, on_line)
    }

    // -----------------------------------------------------------------------------------------
    // Backup.

    /// The whole job: the files (with their manifest), then each dump. Every part is tried
    /// even when an earlier one failed; the run succeeds only if all do. Writes status.
    pub fn backup(&self, say: Say<'_>) -> Result<BackupResult, HostError> {
        let started = now();
        let clock = Instant::now();
        let result = self.backup_locked(started, say);
        let attempt = attempt(started, clock, &result);
        JobStatus::update(&self.job, |s| {
            s.record_backup(attempt, result.as_ref().ok().cloned())
        })?;
        result
    }

    fn backup_locked(&self, started: f64, say: Say<'_>) -> Result<BackupResult, HostError> {
        let _lock = self.lock("backup")?;
        // A run that failed or was killed may have left its restic lock behind (kill -9, a cut
        // link): clear it now, while this host can still prove its process gone, rather than
        // let retention on the repository's side trip over it. After a clean run there is
        // nothing to clear, and neither before a job's first run (a run that started and was
        // killed left `running_since`); listing locks costs a restic start (~0.3 s of key
        // derivation).
        let before = JobStatus::load(&self.job)?;
        JobStatus::update(&self.job, |s| s.running_since = Some(started))?;
        let suspicious =
            before.last_run.as_ref().is_some_and(|r| !r.ok) || before.running_since.is_some();
        if suspicious {
            self.clear_stale_locks(say)?;
        }
        let clock = Instant::now();
        let mut result = BackupResult {
            at: started,
            ..Default::default()
        };
        let mut errors = Vec::new();
        if !self.job.paths.is_empty() {
            match self.backup_files(say) {
                Ok((summary, stats)) => {
                    result.files_new = summary.files_new;
                    result.files_changed = summary.files_changed;
                    result.files_unmodified = summary.files_unmodified;
                    result.bytes_added += summary.data_added;
                    result.bytes_added_packed = summary.data_added_packed;
                    result.bytes_processed += summary.total_bytes_processed;
                    result.snapshots.extend(summary.snapshot_id);
                    result.manifest_files = stats.files;
                    result.manifest_hashed = stats.hashed;
                }
                Err(e) => errors.push(PartFailure::Files(e)),
            }
        }
        let unreachable = errors.iter().any(|e| restic::link_down(&e.to_string()));
        for dump in &self.job.dumps {
            if unreachable {
                errors.push(PartFailure::NotTried {
                    dump: dump.file_name(),
                });
                continue;
            }
            match self.backup_dump(dump, say) {
                Ok(summary) => {
                    result.bytes_added += summary.data_added;
                    if let (Some(total), Some(more)) =
                        (result.bytes_added_packed, summary.data_added_packed)
                    {
                        result.bytes_added_packed = Some(total + more);
                    }
                    result.bytes_processed += summary.total_bytes_processed;
                    result.snapshots.extend(summary.snapshot_id);
                }
                Err(source) => errors.push(PartFailure::Dump {
                    dump: dump.file_name(),
                    source,
                }),
            }
        }
        result.duration_seconds = clock.elapsed().as_secs_f64();
        if errors.is_empty() {
            Ok(result)
        } else {
            Err(HostError::Backup {
                job: self.job.job.clone(),
                failures: errors,
            })
        }
    }

    fn backup_files(
        &self,
        say: Say<'_>,
    ) -> Result<(restic::BackupSummary, manifest::BuildStats), BackupPartError> {
        let manifest_path = self.job.manifest_path();
        let clock = Instant::now();
        let stats = manifest::build(
            &self.job.paths,
            &self.job.exclude,
            &[manifest_path.clone(), self.job.state_dir.clone()],
            &manifest_path,
        )
        .map_err(|source| BackupPartError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
        say(&format!(
            "manifest: {} files, {} hashed ({} reused) in {:.1} s",
            stats.files,
            stats.hashed,
            stats.reused,
            clock.elapsed().as_secs_f64()
        ));
        let mut args = os(&[
            "backup",
            "--host",
            &self.job.host,
            "--tag",
            &self.tags("files"),
        ]);
        for pattern in &self.job.exclude {
            args.push("--exclude".into());
            args.push(pattern.into());
        }
        args.push("--".into());
        args.extend(self.job.paths.iter().map(OsString::from));
        args.push(manifest_path.into_os_string());
        let finished = self
            .with_lock_retry(&args, say, &mut progress_printer(self.progress))
            .map_err(|e| match e.code() {
                Some(exit::INCOMPLETE) => BackupPartError::Incomplete(e),
                _ => BackupPartError::Restic(e),
            })?;
        let summary = backup_summary(&finished.stdout).ok_or(BackupPartError::NoFilesSummary)?;
        say(&format!(
            "files: {} new, {} changed, {} added in {:.1} s",
            summary.files_new,
            summary.files_changed,
            crate::human::bytes(summary.data_added),
            summary.total_duration
        ));
        Ok((summary, stats))
    }

    fn backup_dump(
        &self,
        dump: &Dump,
        say: Say<'_>,
    ) -> Result<restic::BackupSummary, BackupPartError> {
        let command = dump_command(dump)?;
        let mut tags = format!("{},dump={}", self.tags("dump"), dump.file_name());
        if let Some(container) = &dump.container {
            let image = container_image(container)?;
            tags.push_str(&format!(",image={image}"));
        }
        let mut args = os(&[
            "backup",
            "--host",
            &self.job.host,
            "--tag",
            &tags,
            "--stdin-from-command",
            "--stdin-filename",
            &dump.file_name(),
            "--",
        ]);
        // The command's stderr goes to a file of ours rather than through restic, which
        // forwards it from a goroutine it does not wait for: under load its last lines (the
        // ones that say why a dump failed) were lost before restic exited.
        let said = tempfile::Builder::new()
            .prefix("dump-stderr.")
            .tempfile_in(&self.job.state_dir)
            .map_err(|source| BackupPartError::StateDir {
                dir: self.job.state_dir.clone(),
                source,
            })?;
        args.extend(os(&["sh", "-c", "exec 2>>\"$0\"; exec \"$@\""]));
        args.push(said.path().as_os_str().to_owned());
        args.extend(command.iter().map(OsString::from));
        let with_said = |r: Result<restic::Finished, ResticError>| {
            r.map_err(|e| match e {
                ResticError::Failed { code, message } => ResticError::Failed {
                    code,
                    message: message + &restic::command_said(&read_tail(said.path())),
                },
                e => e,
            })
        };
        let mut finished = with_said(self.with_lock_retry(&args, say, &mut |_| {}));
        // `docker exec` exits 126 when it could not start the command at all (runc's "exec
        // failed" under load, seen on the lab): nothing was dumped and restic saved no
        // snapshot, so one more try is safe.
        if dump.container.is_some()
            && matches!(&finished, Err(ResticError::Failed { message, .. }) if message.contains("exit status 126"))
        {
            say(&format!(
                "dump {}: `docker exec` could not start the command (exit 126); trying once more in 2 s",
                dump.file_name()
            ));
            std::thread::sleep(Duration::from_secs(2));
            let _ = said.as_file().set_len(0);
            finished = with_said(self.with_lock_retry(&args, say, &mut |_| {}));
        }
        let finished = finished?;
        let summary = backup_summary(&finished.stdout).ok_or(BackupPartError::NoDumpSummary)?;
        say(&format!(
            "dump {}: {} read, {} added",
            dump.file_name(),
            crate::human::bytes(summary.total_bytes_processed),
            crate::human::bytes(summary.data_added)
        ));
        Ok(summary)
    }

    // -----------------------------------------------------------------------------------------
    // Retention and checks.

    /// `restic forget` with the job's retention, for this job's snapshots only. Returns the
    /// groups restic reports (what it kept and removed).
    pub fn forget(&self, prune: bool, say: Say<'_>) -> Result<Vec<restic::ForgetGroup>, HostError> {
        let started = now();
        let clock = Instant::now();
        let result = (|| {
            self.retention_allowed()?;
            let _lock = self.lock("forget")?;
            let mut args = os(&[
                "forget",
                "--host",
                &self.job.host,
                "--tag",
                &format!("job={}", self.job.job),
                "--group-by",
                "host,paths",
            ]);
            let flags = self.job.retention.flags();
            if flags.is_empty() {
                return Err(HostError::RetentionKeepsNothing {
                    job: self.job.job.clone(),
                });
            }
            args.extend(flags.iter().map(OsString::from));
            if prune {
                args.push("--prune".into());
            }
            let f = self.with_lock_retry(&args, say, &mut |_| {})?;
            Ok(parse_forget(&f.stdout)?)
        })();
        JobStatus::update(&self.job, |s| {
            s.last_forget = Some(attempt(started, clock, &result));
            if prune {
                s.last_prune = s.last_forget.clone();
            }
        })?;
        result
    }

    /// Refuses retention while the job file says it is frozen (a site is lost).
    fn retention_allowed(&self) -> Result<(), HostError> {
        match &self.job.retention_frozen {
            Some(why) => Err(HostError::RetentionFrozen {
                job: self.job.job.clone(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// `restic prune`: frees the space of forgotten snapshots and aborted runs.
    pub fn prune(&self, say: Say<'_>) -> Result<(), HostError> {
        let started = now();
        let clock = Instant::now();
        let result = (|| {
            self.retention_allowed()?;
            let _lock = self.lock("prune")?;
            self.with_lock_retry(&os(&["prune"]), say, &mut |_| {})?;
            Ok(())
        })();
        JobStatus::update(&self.job, |s| {
            s.last_prune = Some(attempt(started, clock, &result))
        })?;
        result
    }

    /// `restic check`, reading `subset` of the data too (`10%`, `1/5`) when given.
    pub fn check(
        &self,
        subset: Option<&str>,
        say: Say<'_>,
    ) -> Result<restic::CheckSummary, HostError> {
        let started = now();
        let clock = Instant::now();
        let result = (|| {
            let _lock = self.lock("check")?;
            let mut args = os(&["check"]);
            if self.job.read_only {
                args.insert(0, "--no-lock".into());
            }
            if let Some(s) = subset {
                args.push(format!("--read-data-subset={s}").into());
            }
            let f = self.restic.run(&args, |_| {})?;
            let summary = parse_check(&f.stdout);
            match (&summary, self.restic.check(&f)) {
                (Some(s), _) if s.num_errors > 0 => Err(HostError::CheckFound {
                    url: self.restic.url(),
                    errors: s.num_errors,
                    damaged_packs: s
                        .broken_packs
                        .as_ref()
                        .filter(|p| !p.is_empty())
                        .map(Vec::len),
                    message: restic::error_message(&f.stderr, &f.stdout),
                }),
                (_, Err(e)) => Err(e.into()),
                (Some(s), Ok(())) => Ok(s.clone()),
                (None, Ok(())) => Ok(Default::default()),
            }
        })();
        if let Err(e) = &result {
            say(&e.to_string());
        }
        JobStatus::update(&self.job, |s| {
            s.record_check(attempt(started, clock, &result))
        })?;
        result
    }

    // -----------------------------------------------------------------------------------------
    // Reading back.

    /// This job's snapshots, as `backup snapshots` shows them; records the newest one's time
    /// in the status (on the repository's side, that is how the data's age is known there).
    pub fn list_snapshots(&self) -> Result<Vec<Snapshot>, HostError> {
        let snapshots = self.snapshots()?;
        let newest = snapshots
            .iter()
            .filter_map(Snapshot::unix_time)
            .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
        if let Some(newest) = newest {
            JobStatus::update(&self.job, |s| {
                if s.newest_data_time.is_none_or(|t| t < newest) {
                    s.newest_data_time = Some(newest);
                }
            })?;
        }
        Ok(snapshots)
    }

    /// This job's snapshots (no lock: reading never blocks a backup).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, ResticError> {
        let f = self.restic.run_ok(
            &os(&[
                "--no-lock",
                "snapshots",
                "--host",
                &self.job.host,
                "--tag",
                &format!("job={}", self.job.job),
            ]),
            |_| {},
        )?;
        parse_snapshots(&f.stdout)
    }

    fn files_snapshot(
        &self,
        snapshots: &[Snapshot],
        id: Option<&str>,
    ) -> Result<Snapshot, HostError> {
        let job = self.job.job.clone();
        pick(snapshots, id, |s| s.tag("part") == Some("files")).ok_or_else(|| match id {
            Some(id) => HostError::NoSuchFileSnapshot {
                job,
                id: id.to_string(),
            },
            None => HostError::NoFileSnapshotYet { job },
        })
    }

    /// Restores the job's files (latest snapshot, or `snapshot`) under `to`.
    pub fn restore_files(
        &self,
        snapshot: Option<&str>,
        to: &Path,
    ) -> Result<RestoreSummary, HostError> {
        self.recording_restore(|| self.restore_files_inner(snapshot, to))
    }

    fn restore_files_inner(
        &self,
        snapshot: Option<&str>,
        to: &Path,
    ) -> Result<RestoreSummary, HostError> {
        let snapshots = self.snapshots()?;
        let snap = self.files_snapshot(&snapshots, snapshot)?;
        Ok(self.restore_snapshot(&snap.id, to)?)
    }

    /// `restic restore ID --target DIR` (no lock: a restore never blocks a backup).
    fn restore_snapshot(&self, id: &str, target: &Path) -> Result<RestoreSummary, ResticError> {
        let args = [
            OsString::from("--no-lock"),
            "restore".into(),
            id.into(),
            "--target".into(),
            target.as_os_str().into(),
        ];
        let f = self.restic.run_ok(&args, |_| {})?;
        parse_restore(&f.stdout)
            .ok_or_else(|| ResticError::Unexpected("restore ended without a summary".into()))
    }

    /// Streams a dump (`restic dump`) into `command`'s stdin (e.g. `docker exec -i db psql …`,
    /// or `sqlite3 new.db`).
    pub fn restore_dump(
        &self,
        dump_name: &str,
        snapshot: Option<&str>,
        command: &[String],
    ) -> Result<(), HostError> {
        self.recording_restore(|| self.restore_dump_inner(dump_name, snapshot, command))
    }

    /// Runs a restore and records it in the status (`last_restore`).
    fn recording_restore<T>(
        &self,
        restore: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let started = now();
        let clock = Instant::now();
        let result = restore();
        JobStatus::update(&self.job, |s| {
            s.last_restore = Some(attempt(started, clock, &result))
        })?;
        result
    }

    fn restore_dump_inner(
        &self,
        dump_name: &str,
        snapshot: Option<&str>,
        command: &[String],
    ) -> Result<(), HostError> {
        let snapshots = self.snapshots()?;
        let snap =
            pick(&snapshots, snapshot, |s| s.tag("dump") == Some(dump_name)).ok_or_else(|| {
                HostError::NoDumpSnapshot {
                    job: self.job.job.clone(),
                    dump: dump_name.to_string(),
                    dumps: Some(self.job.dumps.iter().map(Dump::file_name).collect()),
                }
            })?;
        Ok(pipe_dump(&self.restic, &snap.id, dump_name, command)?)
    }

    // -----------------------------------------------------------------------------------------
    // Drill.

    /// Restores the latest snapshots into a scratch directory and proves them: files against the
    /// manifest, each dump by loading it into a throwaway database. Writes status.
    pub fn drill(&self, scratch: Option<&Path>, say: Say<'_>) -> Result<DrillResult, HostError> {
        let started = now();
        let mut drill = DrillResult {
            at: started,
            ..Default::default()
        };
        let outcome = self.drill_inner(scratch, &mut drill, say);
        drill.ok = outcome.is_ok();
        drill.error = outcome.as_ref().err().map(ToString::to_string);
        JobStatus::update(&self.job, |s| s.record_drill(drill.clone()))?;
        outcome.map(|()| drill)
    }

    fn drill_inner(
        &self,
        scratch: Option<&Path>,
        drill: &mut DrillResult,
        say: Say<'_>,
    ) -> Result<(), HostError> {
        let snapshots = self.snapshots()?;
        let base = match scratch {
            Some(p) => p.to_path_buf(),
            None => self.job.state_dir.join("drill"),
        };
        std::fs::create_dir_all(&base).map_err(|source| HostError::DrillDir {
            dir: base.clone(),
            source,
        })?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{}-", self.job.job))
            .tempdir_in(&base)
            .map_err(|source| HostError::ScratchDir {
                dir: base.clone(),
                source,
            })?;
        let mut oldest: Option<f64> = None;
        let mut errors = Vec::new();
        if !self.job.paths.is_empty() {
            let snap = self.files_snapshot(&snapshots, None)?;
            drill.snapshot = Some(snap.id.clone());
            oldest = snap.unix_time();
            let target = scratch.path().join("files");
            let clock = Instant::now();
            self.restore_snapshot(&snap.id, &target)
                .map_err(HostError::DrillRestore)?;
            drill.restore_seconds = clock.elapsed().as_secs_f64();
            let listed = target.join(
                self.job
                    .manifest_path()
                    .to_string_lossy()
                    .trim_start_matches('/'),
            );
            let entries =
                manifest::read(&listed).map_err(|source| HostError::RestoredManifest {
                    path: listed.clone(),
                    source,
                })?;
            if entries.is_empty() && !listed.exists() {
                errors.push(DrillFailure::NoManifest {
                    path: self.job.manifest_path(),
                });
            }
            let report = manifest::verify(&entries, &target);
            say(&format!(
                "files: restored in {:.1} s; {} of {} verified by sha256, {} changed during the backup, {} missing, {} corrupted",
                drill.restore_seconds,
                report.verified,
                report.listed,
                report.changed_during_backup,
                report.missing_count,
                report.corrupted_count
            ));
            if !report.ok() {
                errors.push(DrillFailure::Files {
                    missing_count: report.missing_count,
                    missing: report.missing.clone(),
                    corrupted_count: report.corrupted_count,
                    corrupted: report.corrupted.clone(),
                });
            }
            drill.files = Some(report);
        }
        for dump in &self.job.dumps {
            let name = dump.file_name();
            let clock = Instant::now();
            let result = match pick(&snapshots, None, |s| s.tag("dump") == Some(name.as_str())) {
                None => Err(DumpDrillError::NoSnapshot),
                Some(snap) => {
                    let t = snap.unix_time();
                    oldest = match (oldest, t) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    self.drill_dump(dump, &snap, scratch.path())
                        .map_err(DumpDrillError::from)
                }
            };
            say(&format!(
                "dump {name}: {}",
                match &result {
                    Ok(out) => format!(
                        "loaded and checked in {:.1} s ({out})",
                        clock.elapsed().as_secs_f64()
                    ),
                    Err(e) => format!("FAILED: {e}"),
                }
            ));
            drill.dumps.push(DumpDrill {
                name: name.clone(),
                ok: result.is_ok(),
                error: result.as_ref().err().map(ToString::to_string),
                seconds: clock.elapsed().as_secs_f64(),
            });
            if let Err(source) = result {
                errors.push(DrillFailure::Dump { dump: name, source });
            }
        }
        drill.data_age_seconds = oldest.map(|t| (now() - t).max(0.0)).unwrap_or(0.0);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(HostError::Drill {
                job: self.job.job.clone(),
                failures: errors,
            })
        }
    }

    /// Loads one dump into a throwaway database and runs its check. Returns the check's output.
    fn drill_dump(
        &self,
        dump: &Dump,
        snap: &Snapshot,
        scratch: &Path,
    ) -> Result<String, LoadError> {
        if dump.kind == DumpKind::Ldap {
            let dir = scratch.join("ldap");
            let text = self.dump_to_file(snap, dump, &dir)?;
            return Ok(ldap::drill(&text, dump, snap.tag("image"), &dir)?);
        }
        let name = format!("picaops-drill-{}-{}", self.job.job, std::process::id());
        self.load_into_new_server(dump, snap, &name, &scratch.join("drill.db"), false)
    }

    /// `restic dump` of `dump` into `DIR/dump.ldif` (root only: it holds password hashes); its
    /// text.
    fn dump_to_file(&self, snap: &Snapshot, dump: &Dump, dir: &Path) -> Result<String, LoadError> {
        let file = dir.join("dump.ldif");
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            })
            .map_err(|source| LoadError::ReadDump {
                path: dir.to_path_buf(),
                source,
            })?;
        let save = ["sh", "-c", "umask 077; exec cat > \"$1\"", "picaops"]
            .map(String::from)
            .into_iter()
            .chain([file.display().to_string()])
            .collect::<Vec<_>>();
        pipe_dump(&self.restic, &snap.id, &dump.file_name(), &save)?;
        // slapcat writes every value that is not plain ASCII in base64 (RFC 2849): text.
        std::fs::read(&file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|source| LoadError::ReadDump { path: file, source })
    }

    /// Loads a dump into the job's own live database server, replacing its content: for an
    /// LDAP dump, this host's slapd (`backup::ldap::load_live`: built beside the live directory,
    /// swapped in while slapd is stopped, the old directories kept).
    pub fn load_dump(
        &self,
        dump_name: &str,
        snapshot: Option<&str>,
        say: Say<'_>,
    ) -> Result<LiveLoad, HostError> {
        self.recording_restore(|| {
            let dump = self.find_dump(dump_name)?;
            if dump.kind != DumpKind::Ldap {
                return Err(HostError::LoadNotAutomated {
                    dump: dump_name.to_string(),
                    kind: dump.kind,
                });
            }
            let snapshots = self.snapshots()?;
            let snap = pick(&snapshots, snapshot, |s| s.tag("dump") == Some(dump_name))
                .ok_or_else(|| HostError::NoDumpSnapshot {
                    job: self.job.job.clone(),
                    dump: dump_name.to_string(),
                    dumps: None,
                })?;
            std::fs::create_dir_all(&self.job.state_dir).map_err(|source| {
                HostError::ScratchDir {
                    dir: self.job.state_dir.clone(),
                    source,
                }
            })?;
            let work = tempfile::Builder::new()
                .prefix("ldap-load-")
                .tempdir_in(&self.job.state_dir)
                .map_err(|source| HostError::ScratchDir {
                    dir: self.job.state_dir.clone(),
                    source,
                })?;
            let text = self.dump_to_file(&snap, dump, work.path())?;
            say(&format!(
                "dump {dump_name}: snapshot {} of {}",
                snap.short_id, snap.time
            ));
            let stamp = super::time::rfc3339(now()).replace([':', '-'], "");
            let loaded = ldap::load_live(&text, dump, work.path(), &stamp, &mut *say)
                .map_err(LoadError::from)?;
            Ok(loaded)
        })
    }

    pub fn find_dump(&self, dump_name: &str) -> Result<&Dump, HostError> {
        self.job
            .dumps
            .iter()
            .find(|d| d.file_name() == dump_name)
            .ok_or_else(|| HostError::NoSuchDump {
                job: self.job.job.clone(),
                dump: dump_name.to_string(),
                dumps: self.job.dumps.iter().map(Dump::file_name).collect(),
            })
    }

    /// Restores a dump into a new database container `container` (of the image recorded with
    /// the dump), left running for the admin: a restore that never touches the live database.
    pub fn restore_dump_into_container(
        &self,
        dump_name: &str,
        snapshot: Option<&str>,
        container: &str,
    ) -> Result<String, HostError> {
        self.recording_restore(|| {
            let dump = self.find_dump(dump_name)?;
            if dump.kind == DumpKind::Ldap {
                return Err(HostError::LdapIntoContainer {
                    job: self.job.job.clone(),
                    dump: dump_name.to_string(),
                });
            }
            if dump.kind == DumpKind::Sqlite && dump.container.is_none() {
                return Err(HostError::SqliteOnHost {
                    job: self.job.job.clone(),
                    dump: dump_name.to_string(),
                });
            }
            let snapshots = self.snapshots()?;
            let snap = pick(&snapshots, snapshot, |s| s.tag("dump") == Some(dump_name))
                .ok_or_else(|| HostError::NoDumpSnapshot {
                    job: self.job.job.clone(),
                    dump: dump_name.to_string(),
                    dumps: None,
                })?;
            let scratch = self.job.state_dir.join("restore.db");
            Ok(self.load_into_new_server(dump, &snap, container, &scratch, true)?)
        })
    }

    /// Starts a database server `name` from the dump's recorded image, waits for it, loads the
    /// dump and runs the check query. `keep`: leave the server running (a restore) instead of
    /// removing it (a drill); a failed load always removes it.
    fn load_into_new_server(
        &self,
        dump: &Dump,
        snap: &Snapshot,
        name: &str,
        scratch_db: &Path,
        keep: bool,
    ) -> Result<String, LoadError> {
        let image = snap.tag("image");
        let mut steps = drill_steps(dump, image, name, &scratch_db.to_string_lossy())?;
        if keep {
            if let Some(start) = &mut steps.start {
                start.retain(|a| a != "--rm");
            }
        }
        let started = steps.start.is_some();
        let result = (|| {
            if let Some(start) = &steps.start {
                run_quiet(start).map_err(|source| LoadError::Start {
                    image: image.unwrap_or("?").to_string(),
                    source,
                })?;
            }
            if let Some(ready) = &steps.ready {
                let deadline = Instant::now() + Duration::from_secs(180);
                while run_quiet(ready).is_err() {
                    if Instant::now() > deadline {
                        return Err(LoadError::NotReady {
                            container: name.to_string(),
                        });
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            if let Some(prepare) = &steps.prepare {
                run_quiet(prepare)?;
            }
            pipe_dump(&self.restic, &snap.id, &dump.file_name(), &steps.load)?;
            let out = run_quiet(&steps.verify)?;
            if dump.kind == DumpKind::Sqlite
                && steps.start.is_none()
                && dump.container.is_none()
                && out.trim() != "ok"
            {
                return Err(LoadError::Integrity {
                    said: out.trim().to_string(),
                });
            }
            Ok(out.trim().to_string())
        })();
        if started && (!keep || result.is_err()) {
            let _ = Command::new("docker")
                .args(["rm", "--force", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        result
    }
}

/// The newest snapshot matching `filter`, or the one with `id` (full or short).
fn pick(
    snapshots: &[Snapshot],
    id: Option<&str>,
    filter: impl Fn(&Snapshot) -> bool,
) -> Option<Snapshot> {
    let mut matching = snapshots.iter().filter(|s| filter(s));
    match id {
        Some(id) if id != "latest" => matching
            .find(|s| s.id.starts_with(id) || s.short_id == id)
            .cloned(),
        _ => matching
            .max_by(|a, b| {
                a.unix_time()
                    .unwrap_or(0.0)
                    .total_cmp(&b.unix_time().unwrap_or(0.0))
            })
            .cloned(),
    }
}

/// `restic dump SNAPSHOT /NAME | command`: both must succeed.
fn pipe_dump(
    restic: &Restic,
    snapshot: &str,
    name: &str,
    command: &[String],
) -> Result<(), LoadError> {
    let Some((program, args)) = command.split_first() else {
        return Err(LoadError::NoLoadCommand);
    };
    let mut producer = restic
        .command(&os(&["--no-lock", "dump", snapshot, &format!("/{name}")]))?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| restic.spawn_error(e))?;
    let stdout = producer.stdout.take().expect("stdout is piped");
    let consumer = Command::new(program)
        .args(args)
        .stdin(stdout)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let consumer = match consumer {
        Ok(c) => c,
        Err(source) => {
            let _ = producer.kill();
            let _ = producer.wait();
            return Err(CommandError::Spawn {
                program: program.clone(),
                source,
            }
            .into());
        }
    };
    let loaded = consumer
        .wait_with_output()
        .map_err(|source| LoadError::Wait {
            program: program.clone(),
            source,
        })?;
    let dumped = producer
        .wait_with_output()
        .map_err(|source| LoadError::Wait {
            program: describe_binary(&restic.binary),
            source,
        })?;
    let finished = restic::Finished {
        code: dumped.status.code(),
        signal: None,
        stdout: Vec::new(),
        stderr: String::from_utf8_lossy(&dumped.stderr).into_owned(),
        elapsed: Duration::ZERO,
    };
    restic.check(&finished).map_err(LoadError::ResticDump)?;
    if !loaded.status.success() {
        return Err(LoadError::Loading {
            program: program.clone(),
            status: loaded.status,
            stderr: tail(&String::from_utf8_lossy(&loaded.stderr)),
        });
    }
    Ok(())
}

/// The image a container runs (recorded with its dumps, for drills elsewhere).
fn container_image(container: &str) -> Result<String, BackupPartError> {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.Config.Image}}", container])
        .output()
        .map_err(BackupPartError::Docker)?;
    if !out.status.success() {
        return Err(BackupPartError::NoContainer {
            container: container.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_quiet(argv: &[String]) -> Result<String, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command: argv.iter().take(4).cloned().collect::<Vec<_>>().join(" "),
            status: out.status,
            stderr: tail(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

fn list_some(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            names.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn attempt<T>(started: f64, clock: Instant, result: &Result<T, HostError>) -> Attempt {
    Attempt {
        at: started,
        ok: result.is_ok(),
        error: result.as_ref().err().map(ToString::to_string),
        duration_seconds: clock.elapsed().as_secs_f64(),
    }
}

fn os(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// A restic progress line handler printing at most one line every 10 s on stderr.
fn progress_printer(on: bool) -> impl FnMut(&str) {
    let mut last = Instant::now();
    move |line: &str| {
        if !on {
            return;
        }
        if let Some(BackupMessage::Status(s)) = restic::parse_backup_line(line) {
            if last.elapsed() >= Duration::from_secs(10) {
                last = Instant::now();
                eprintln!(
                    "progress: {:.0}% ({} of {}, {} of {} files)",
                    s.percent_done * 100.0,
                    crate::human::bytes(s.bytes_done),
                    crate::human::bytes(s.total_bytes),
                    s.files_done,
                    s.total_files
                );
            }
        }
    }
}

/// A status summary a host-side command prints with `--output json`.
#[derive(Debug, Serialize)]
pub struct HostReport<T: Serialize> {
    pub job: String,
    pub host: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
}

/// The job file path a unit or a command names for job `name` on a host.
pub fn job_file_path(name: &str) -> PathBuf {
    Path::new(super::jobfile::JOBS_DIR).join(format!("{name}.json"))
}

/// The last 8 KiB of a file as text (a dump command's stderr can be long; its end says why).
fn read_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut bytes = Vec::new();
    let _ = f.take(8192).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_s_failed_parts_read_as_one_line_naming_each_part() {
        let e = HostError::Backup {
            job: "app".into(),
            failures: vec![
                PartFailure::Files(BackupPartError::Incomplete(ResticError::Failed {
                    code: 3,
                    message: "/srv/x: permission denied".into(),
                })),
                PartFailure::Dump {
                    dump: "sqlite-app.sql".into(),
                    source: BackupPartError::Restic(ResticError::Failed {
                        code: 1,
                        message: "command failed (the command said: unable to open database)"
                            .into(),
                    }),
                },
                PartFailure::NotTried {
                    dump: "postgres-mm.sql".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "files: some files could not be read, the snapshot is incomplete: restic failed (exit 3): /srv/x: permission denied; \
             dump sqlite-app.sql: restic failed (exit 1): command failed (the command said: unable to open database); \
             dump postgres-mm.sql: not tried, the repository is unreachable"
        );
    }

    #[test]
    fn a_drill_s_findings_and_a_check_s_damage_read_as_before() {
        let e = HostError::Drill {
            job: "app".into(),
            failures: vec![
                DrillFailure::Files {
                    missing_count: 1,
                    missing: vec!["/srv/f8".into()],
                    corrupted_count: 0,
                    corrupted: Vec::new(),
                },
                DrillFailure::Dump {
                    dump: "postgres-mm.sql".into(),
                    source: DumpDrillError::NoSnapshot,
                },
                DrillFailure::Dump {
                    dump: "sqlite-app.sql".into(),
                    source: LoadError::Integrity {
                        said: "*** in database main ***".into(),
                    }
                    .into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "1 file(s) missing (/srv/f8), 0 file(s) with other content than backed up; \
             dump postgres-mm.sql: no snapshot of this dump yet; \
             dump sqlite-app.sql: PRAGMA integrity_check says: *** in database main ***"
        );
        let check = |packs| HostError::CheckFound {
            url: "/srv/restic/r".into(),
            errors: 2,
            damaged_packs: packs,
            message: "pack e6da: not found".into(),
        };
        assert_eq!(
            check(Some(1)).to_string(),
            "restic check found 2 error(s) in 1 damaged pack file(s): pack e6da: not found"
        );
        assert_eq!(
            check(None).to_string(),
            "restic check found 2 error(s): pack e6da: not found"
        );
    }

    #[test]
    fn missing_snapshots_and_dumps_name_the_job() {
        let dumps = Some(vec!["a.sql".to_string(), "b.sql".to_string()]);
        let e = HostError::NoDumpSnapshot {
            job: "app".into(),
            dump: "c.sql".into(),
            dumps,
        };
        assert_eq!(
            e.to_string(),
            "no snapshot of dump `c.sql` for job app (its dumps: a.sql, b.sql)"
        );
        let e = HostError::NoDumpSnapshot {
            job: "app".into(),
            dump: "c.sql".into(),
            dumps: None,
        };
        assert_eq!(e.to_string(), "no snapshot of dump `c.sql` for job app");
        assert_eq!(run_quiet(&[]).unwrap_err().to_string(), "empty command");
        let e = run_quiet(&["sh".into(), "-c".into(), "echo no >&2; exit 4".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c echo no >&2; exit 4` failed (exit status: 4): no"
        );
    }
}
