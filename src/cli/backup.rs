//! `picaops backup …`: the workstation commands (status, snapshots, units now; init, run,
//! forget, prune, check, restore and drill over SSH in phase 2) and the hidden host-side
//! commands the systemd units and the workstation run ON a host (`host-run`, `host-check`…).
//! Only argument parsing and rendering; the work is in `picaops::backup`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use picaops::backup::{ops, render};
use picaops::backup::{HostJob, JobFile, JobStatus};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};

use super::backup_remote::{offline, operate, show, JobSelect, Rows};
use super::Global;

const AFTER_HELP: &str = "\
How backups work: each job in the inventory's `backups:` section runs ON the host holding the \
data, from a systemd timer (`picaops-backup-JOB.timer`), with restic sending files and database \
dumps to a repository at the other site (Toulouse -> Compiègne, Compiègne -> Toulouse). Every run \
records its status on the host (/var/lib/picaops/backup/status/JOB.json) and as node_exporter \
metrics, so Alertmanager warns when a backup is late or failing (monitoring/picaops-backup-alerts.yml).

A drill restores the latest snapshot at the other site and proves it: every file against the \
sha256 manifest recorded at backup time, every dump by loading it into a throwaway database.

Exit codes: 0 everything went well; 1 at least one job failed (the message says why and what to \
do); 2 usage error or invalid inventory.";

#[derive(Subcommand, Debug)]
#[command(after_help = AFTER_HELP)]
pub enum BackupCommand {
    /// Create the repositories at the peer sites, and the accounts and keys they need.
    Init(JobSelect),
    /// Run jobs now: progress, then files new/changed, bytes added and duration per job.
    Run(JobSelect),
    /// Apply each job's retention (keep_daily, …). It runs on the repository's side, as the
    /// account owning the repository: a compromised data host cannot delete its own history.
    Forget {
        #[command(flatten)]
        select: JobSelect,
        /// Also free the space of the forgotten snapshots (prune) afterwards.
        #[arg(long)]
        prune: bool,
    },
    /// Free the space of forgotten snapshots and of aborted runs.
    Prune(JobSelect),
    /// Verify the repositories' structure; `--read-data-subset 10%` also reads that share of
    /// the data back (a different share each time).
    Check {
        #[command(flatten)]
        select: JobSelect,
        /// Share of the data to read and verify: `10%`, `1/5`, `500M`.
        #[arg(long, value_name = "N%")]
        read_data_subset: Option<String>,
    },
    /// List each job's snapshots (time, host, what, bytes added).
    Snapshots {
        #[command(flatten)]
        select: JobSelect,
        /// Render restic's `snapshots --json` output saved in FILE instead of asking the host
        /// (for reading a listing someone sent you).
        #[arg(long, value_name = "FILE", hide = true)]
        from_json: Option<PathBuf>,
    },
    /// Restore a job's files (latest snapshot unless --snapshot) into PATH on a host (the data
    /// host unless --host), or one database dump into a file (--dump NAME --to FILE).
    /// Restoring never overwrites the live data unless you point PATH at it.
    Restore {
        /// The job (a name under `backups:`).
        job: String,
        /// A snapshot ID from `picaops backup snapshots` (default: the latest).
        #[arg(long)]
        snapshot: Option<String>,
        /// Directory to restore into (created if missing), or the file for a --dump.
        #[arg(long, value_name = "PATH", required_unless_present = "into_container")]
        to: Option<PathBuf>,
        /// Restore on this host instead of the data host: the repository's host, at the other
        /// site (what is left when the data's site is lost).
        #[arg(long)]
        host: Option<String>,
        /// Restore this database dump (its file name, as `picaops backup snapshots` shows it)
        /// instead of the files: into the file given by --to, or with --into-container.
        #[arg(long, value_name = "NAME")]
        dump: Option<String>,
        /// With --dump: start a new database container of this name (the dump's recorded image)
        /// and load the dump into it; the live database is never touched.
        #[arg(
            long,
            value_name = "CONTAINER",
            requires = "dump",
            conflicts_with = "to"
        )]
        into_container: Option<String>,
    },
    /// Restore the latest snapshot at the other site into a scratch place and verify it; records
    /// the restore time and the age of the data.
    Drill(JobSelect),
    /// Per job: state, age of the newest data, bytes added, consecutive failures, last check and
    /// drill. Late or failing jobs stand out. `--output json` for scripts.
    Status {
        #[command(flatten)]
        select: JobSelect,
        /// Read the status files from this directory (JOB.json, as on a host under
        /// /var/lib/picaops/backup/status) instead of fetching them over SSH.
        #[arg(long, value_name = "DIR")]
        status_dir: Option<PathBuf>,
    },
    /// Print the systemd units `picaops apply` installs for each job (service + timer), and the
    /// retention units of each repository.
    Units(JobSelect),

    // Host side: what the units and the workstation run ON a host. Hidden from the main help;
    // documented in the README ("Backups").
    /// Host side: run one job from its job file (what the timer starts).
    #[command(hide = true)]
    HostRun(HostArgs),
    /// Host side: create the job's repository.
    #[command(hide = true)]
    HostInit(HostArgs),
    /// Host side: apply the retention of one or more jobs sharing a repository, then prune once.
    #[command(hide = true)]
    HostForget {
        #[arg(long = "job-file", value_name = "F", required = true)]
        job_files: Vec<PathBuf>,
        /// Prune after forgetting.
        #[arg(long)]
        prune: bool,
    },
    /// Host side: prune the job's repository.
    #[command(hide = true)]
    HostPrune(HostArgs),
    /// Host side: restic check.
    #[command(hide = true)]
    HostCheck {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long, value_name = "N%")]
        read_data_subset: Option<String>,
    },
    /// Host side: the job's snapshots (restic's JSON with --output json).
    #[command(hide = true)]
    HostSnapshots(HostArgs),
    /// Host side: restore files into --to, or a dump (--dump NAME) into a file (--to) or into a
    /// command's stdin (after `--`).
    #[command(hide = true)]
    HostRestore {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        snapshot: Option<String>,
        /// The dump's file name in its snapshot (`postgres-db-mattermost.sql`).
        #[arg(long)]
        dump: Option<String>,
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        /// For --dump: a new database container to load it into.
        #[arg(long, value_name = "CONTAINER")]
        into_container: Option<String>,
        /// For --dump: the command that reads the dump on stdin.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Host side: restore and verify the latest snapshots.
    #[command(hide = true)]
    HostDrill {
        #[command(flatten)]
        host: HostArgs,
        /// Where to make the scratch directory (default: STATE_DIR/drill).
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
    },
    /// Host side: print the status of one or more jobs (JSON).
    #[command(hide = true)]
    HostStatus {
        #[arg(long = "job-file", value_name = "F", required = true)]
        job_files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// The job file (`/etc/picaops/backup/jobs/JOB.json`, root-only).
    #[arg(long, value_name = "F")]
    pub job_file: PathBuf,
    /// Print restic's progress on stderr every 10 s.
    #[arg(long)]
    pub progress: bool,
}

pub fn run(cmd: BackupCommand, global: &Global, out: &Output) -> i32 {
    let (g, o) = (global, out);
    match cmd {
        BackupCommand::Status {
            select,
            status_dir: Some(dir),
        } => offline(&select, g, o, |inv, names| {
            ops::status_from_dir(inv, names, &dir).map(Rows::from)
        }),
        BackupCommand::Status { select, .. } => operate(&select, g, o, |inv, names, exec| {
            ops::status(inv, names, exec).map(Rows::from)
        }),
        BackupCommand::Snapshots {
            from_json: Some(from),
            ..
        } => snapshots_from_json(&from, out),
        BackupCommand::Snapshots { select, .. } => operate(&select, g, o, ops::snapshots),
        BackupCommand::Units(select) => offline(&select, g, o, ops::units),
        BackupCommand::Init(select) => operate(&select, g, o, ops::init),
        BackupCommand::Run(select) => operate(&select, g, o, ops::run),
        BackupCommand::Forget { select, prune } => {
            operate(&select, g, o, |i, n, e| ops::forget(i, n, prune, e))
        }
        BackupCommand::Prune(select) => operate(&select, g, o, ops::prune),
        BackupCommand::Check {
            select,
            read_data_subset,
        } => operate(&select, g, o, |i, n, e| {
            ops::check(i, n, read_data_subset.as_deref(), e)
        }),
        BackupCommand::Restore {
            job,
            snapshot,
            to,
            host,
            dump,
            into_container,
        } => {
            let req = ops::RestoreRequest {
                job: &job,
                snapshot: snapshot.as_deref(),
                to: to.as_deref(),
                host: host.as_deref(),
                dump: dump.as_deref(),
                into_container: into_container.as_deref(),
            };
            let select = JobSelect {
                jobs: vec![job.clone()],
                host: None,
            };
            operate(&select, g, o, |i, _, e| ops::restore(i, &req, e))
        }
        BackupCommand::Drill(select) => operate(&select, g, o, ops::drill),
        host => host_side(host, out),
    }
}

fn snapshots_from_json(from: &Path, out: &Output) -> i32 {
    let text = match std::fs::read_to_string(from) {
        Ok(t) => t,
        Err(e) => {
            let what = format!("cannot read {}: {e}", from.display());
            eprintln!("{}: {what}", out.paint(Style::Red, "picaops"));
            return EXIT_USAGE;
        }
    };
    let lines: Vec<String> = text.lines().map(String::from).collect();
    match picaops::backup::restic::parse_snapshots(&lines) {
        Ok(snaps) => show(&snaps, out),
        Err(e) => {
            let what = format!("{}: {e}", from.display());
            eprintln!("{}: {what}", out.paint(Style::Red, "picaops"));
            EXIT_USAGE
        }
    }
}

// -------------------------------------------------------------------------------------------
// Host side.

fn read_job(path: &Path, progress: bool, out: &Output) -> Result<HostJob, i32> {
    match JobFile::read(path) {
        Ok(job) => {
            let mut h = HostJob::new(job);
            h.progress = progress;
            Ok(h)
        }
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            Err(EXIT_USAGE)
        }
    }
}

/// Prints a host-side result (JSON document, or a line for people) and returns the exit code.
fn report<T: serde::Serialize>(
    job: &HostJob,
    what: &str,
    result: Result<T, String>,
    human: impl FnOnce(&T) -> String,
    out: &Output,
) -> i32 {
    let code = if result.is_ok() {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    };
    match out.format {
        Format::Json => {
            let (ok, error, value) = match &result {
                Ok(v) => (true, None, serde_json::to_value(v).ok()),
                Err(e) => (false, Some(e.clone()), None),
            };
            let doc = serde_json::json!({
                "job": job.job.job, "host": job.job.host, "repository": job.job.repository_label(),
                "operation": what, "ok": ok, "error": error, "result": value,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => match &result {
            Ok(v) => println!(
                "{} {} {what}: {}",
                out.paint(Style::Green, "ok:"),
                job.job.job,
                human(v)
            ),
            Err(e) => eprintln!(
                "{} {} {what} failed: {e}",
                out.paint(Style::Red, "error:"),
                job.job.job
            ),
        },
    }
    code
}

fn host_side(cmd: BackupCommand, out: &Output) -> i32 {
    let verbose = out.verbosity >= 0 && out.format == Format::Human;
    let mut say = |line: &str| {
        if verbose {
            eprintln!("{line}");
        }
    };
    match cmd {
        BackupCommand::HostRun(a) => {
            let Ok(job) = read_job(&a.job_file, a.progress, out) else {
                return EXIT_USAGE;
            };
            let result = job.backup(&mut say);
            report(&job, "backup", result, |r| r.summary(), out)
        }
        BackupCommand::HostInit(a) => {
            let Ok(job) = read_job(&a.job_file, false, out) else {
                return EXIT_USAGE;
            };
            let result = job.init();
            report(
                &job,
                "init",
                result,
                |created| {
                    format!(
                        "{} {}",
                        job.restic.url(),
                        if *created {
                            "created"
                        } else {
                            "already exists"
                        }
                    )
                },
                out,
            )
        }
        BackupCommand::HostForget { job_files, prune } => {
            let mut code = EXIT_OK;
            let mut last = None;
            for f in &job_files {
                let Ok(job) = read_job(f, false, out) else {
                    return EXIT_USAGE;
                };
                let result = job.forget(false, &mut say);
                let c = report(
                    &job,
                    "forget",
                    result,
                    |groups| {
                        let removed: usize = groups
                            .iter()
                            .map(|g| g.remove.as_ref().map_or(0, Vec::len))
                            .sum();
                        let kept: usize = groups
                            .iter()
                            .map(|g| g.keep.as_ref().map_or(0, Vec::len))
                            .sum();
                        format!("kept {kept} snapshots, forgot {removed}")
                    },
                    out,
                );
                code = code.max(c);
                last = Some(job);
            }
            if let (true, Some(job)) = (prune, last) {
                let result = job.prune(&mut say);
                code = code.max(report(&job, "prune", result, |_| "done".into(), out));
            }
            code
        }
        BackupCommand::HostPrune(a) => {
            let Ok(job) = read_job(&a.job_file, false, out) else {
                return EXIT_USAGE;
            };
            let result = job.prune(&mut say);
            report(&job, "prune", result, |_| "done".into(), out)
        }
        BackupCommand::HostCheck {
            host,
            read_data_subset,
        } => {
            let Ok(job) = read_job(&host.job_file, false, out) else {
                return EXIT_USAGE;
            };
            let result = job.check(read_data_subset.as_deref(), &mut say);
            report(
                &job,
                "check",
                result.map(|s| s.num_errors),
                |_| "no error".into(),
                out,
            )
        }
        BackupCommand::HostSnapshots(a) => {
            let Ok(job) = read_job(&a.job_file, false, out) else {
                return EXIT_USAGE;
            };
            match (job.list_snapshots(), out.format) {
                (Ok(snaps), Format::Human) => {
                    print!("{}", render::render_snapshots(&snaps));
                    EXIT_OK
                }
                (result, _) => report(&job, "snapshots", result, |_| String::new(), out),
            }
        }
        BackupCommand::HostRestore {
            host,
            snapshot,
            dump,
            to,
            into_container,
            command,
        } => {
            let Ok(job) = read_job(&host.job_file, false, out) else {
                return EXIT_USAGE;
            };
            if let (Some(name), Some(container)) = (&dump, &into_container) {
                let result = job.restore_dump_into_container(name, snapshot.as_deref(), container);
                return report(
                    &job,
                    "restore",
                    result,
                    |check| {
                        format!("dump {name} loaded into the new container {container} ({check})")
                    },
                    out,
                );
            }
            match (dump, to) {
                (None, Some(to)) => {
                    let result = job.restore_files(snapshot.as_deref(), &to);
                    report(
                        &job,
                        "restore",
                        result.map(|s| (s.files_restored, s.bytes_restored)),
                        |(f, b)| {
                            format!(
                                "{f} files, {} restored into {}",
                                picaops::human::bytes(*b),
                                to.display()
                            )
                        },
                        out,
                    )
                }
                (Some(name), to) => {
                    let command = match (to, command.is_empty()) {
                        (Some(to), true) => vec![
                            "sh".into(),
                            "-c".into(),
                            "cat > \"$1\"".into(),
                            "picaops".into(),
                            to.display().to_string(),
                        ],
                        (None, false) => command,
                        _ => {
                            eprintln!("{}: with --dump, give either --to FILE or a command after `--` (e.g. `-- docker exec -i db psql -U postgres -d mattermost`)", out.paint(Style::Red, "picaops"));
                            return EXIT_USAGE;
                        }
                    };
                    let result = job.restore_dump(&name, snapshot.as_deref(), &command);
                    report(
                        &job,
                        "restore",
                        result,
                        |_| format!("dump {name} loaded"),
                        out,
                    )
                }
                (None, None) => {
                    eprintln!(
                        "{}: say where to restore: --to PATH (files) or --dump NAME",
                        out.paint(Style::Red, "picaops")
                    );
                    EXIT_USAGE
                }
            }
        }
        BackupCommand::HostDrill { host, scratch } => {
            let Ok(job) = read_job(&host.job_file, false, out) else {
                return EXIT_USAGE;
            };
            let result = job.drill(scratch.as_deref(), &mut say);
            report(
                &job,
                "drill",
                result,
                |d| {
                    format!(
                        "restored in {:.1} s, data {} old, {} files verified, {} dump(s) loaded",
                        d.restore_seconds,
                        picaops::backup::schedule::human_duration(d.data_age_seconds as u64),
                        d.files.as_ref().map_or(0, |f| f.verified),
                        d.dumps.iter().filter(|x| x.ok).count()
                    )
                },
                out,
            )
        }
        BackupCommand::HostStatus { job_files } => {
            let mut statuses = Vec::new();
            for f in &job_files {
                let Ok(job) = read_job(f, false, out) else {
                    return EXIT_USAGE;
                };
                match JobStatus::load(&job.job) {
                    Ok(s) => statuses.push(s),
                    Err(e) => {
                        eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
                        return EXIT_HOST_FAILED;
                    }
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&statuses).unwrap_or_default()
            );
            EXIT_OK
        }
        _ => unreachable!("workstation commands are dispatched in run()"),
    }
}
