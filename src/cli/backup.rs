//! `picaops backup …`: the workstation commands (status, snapshots, units now; init, run,
//! forget, prune, check, restore and drill over SSH in phase 2) and the hidden host-side
//! commands the systemd units and the workstation run ON a host (`host-run`, `host-check`…).
//! Only argument parsing and rendering; the work is in `picaops::backup`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::backup::hostcmd::{self, HostOutcome, HostUsage};
use picaops::backup::{ops, HostJob, JobStatus};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};

use super::backup_remote::{fail, offline, operate, operate_within, show, JobSelect};
use super::Global;
use picaops::backup::show::{Listing, Rows, Units};

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
        #[arg(long, value_name = "PATH", required_unless_present_any = ["into_container", "load"])]
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
        /// With --dump of an LDAP dump: load it into the host's slapd, replacing its directory
        /// (built beside it, swapped in while slapd is stopped; the old one is kept aside).
        #[arg(long, requires = "dump", conflicts_with_all = ["to", "into_container"])]
        load: bool,
    },
    /// Restore the latest snapshot at the other site into a scratch place and verify it; records
    /// the restore time and the age of the data.
    Drill(JobSelect),
    /// A new SSH key for HOST's access to its repositories: made on HOST, authorized beside the
    /// old one, proven by listing every job's snapshots with it, then the old one refused and
    /// deleted. A failure on the way puts the old key back (backups never stop).
    #[command(after_help = "Example: picaops backup rotate-credentials pica01")]
    RotateCredentials {
        /// The data host (a host or VM sending backup jobs).
        host: String,
    },
    /// A new restic password for JOB's repository. First put the new password in the secret store
    /// under a new name and set the job's `password:` to it in the inventory; --from names the
    /// secret the hosts use today. The new key is added, every copy of the job and password files
    /// written, a backup and a check run with it, then the old key removed (the old password
    /// opens nothing). A failure on the way keeps the old password working.
    #[command(after_help = "Example: picaops backup rotate-password pica01 --from restic/pica01")]
    RotatePassword {
        job: String,
        /// The secret the job's repository opens with today.
        #[arg(long, value_name = "SECRET")]
        from: String,
    },
    /// Per job: state, age of the newest data, bytes added, consecutive failures, last check and
    /// drill. Late or failing jobs stand out. `--output json` for scripts.
    Status {
        #[command(flatten)]
        select: JobSelect,
        /// Read the status files from this directory (JOB.json, as on a host under
        /// /var/lib/picaops/backup/status) instead of fetching them over SSH.
        #[arg(long, value_name = "DIR")]
        status_dir: Option<PathBuf>,
        /// Give up on a machine that does not let picaops in within this many seconds (once
        /// per machine: a data host that is gone costs this, then its repository is asked).
        #[arg(long, value_name = "SECS", default_value_t = 15)]
        connect_timeout: u64,
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
        /// For --dump: load it into the job's own live server (LDAP: this host's slapd).
        #[arg(long, requires = "dump", conflicts_with_all = ["to", "into_container"])]
        load: bool,
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
    /// Repository side, forced by a data host's key in authorized_keys: serve the job restic
    /// asks for, append-only, if that host sends it.
    #[command(hide = true)]
    HostServe {
        /// The data host whose key this is.
        #[arg(long, value_name = "MACHINE")]
        host: String,
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
            ..
        } => offline(&select, g, o, |inv, names| {
            ops::status_from_dir(inv, names, &dir).map(Rows::from)
        }),
        BackupCommand::Status {
            select,
            connect_timeout,
            ..
        } => operate_within(
            &select,
            Duration::from_secs(connect_timeout.max(1)),
            g,
            o,
            |inv, names, exec| ops::status(inv, names, exec).map(Rows::from),
        ),
        BackupCommand::Snapshots {
            from_json: Some(from),
            ..
        } => ops::snapshots_from_file(&from).map_or_else(|e| fail(&e, o), |s| show(&Listing(s), o)),
        BackupCommand::Snapshots { select, .. } => operate(&select, g, o, ops::snapshots),
        BackupCommand::Units(select) => offline(&select, g, o, |i, n| ops::units(i, n).map(Units)),
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
            load,
        } => {
            let req = ops::RestoreRequest {
                job: &job,
                snapshot: snapshot.as_deref(),
                to: to.as_deref(),
                host: host.as_deref(),
                dump: dump.as_deref(),
                into_container: into_container.as_deref(),
                load,
            };
            let select = JobSelect {
                jobs: vec![job.clone()],
                host: None,
            };
            operate(&select, g, o, |i, _, e| ops::restore(i, &req, e))
        }
        BackupCommand::Drill(select) => operate(&select, g, o, ops::drill),
        BackupCommand::RotateCredentials { host } => {
            let select = JobSelect {
                jobs: vec![],
                host: Some(host.clone()),
            };
            operate(&select, g, o, |i, _, e| {
                picaops::backup::rotate::rotate_credentials(i, &host, e)
            })
        }
        BackupCommand::RotatePassword { job, from } => {
            let select = JobSelect {
                jobs: vec![job.clone()],
                host: None,
            };
            operate(&select, g, o, |i, _, e| match i.backups.get(&job) {
                Some(j) => picaops::backup::rotate_password::rotate_password(i, j, &from, e),
                None => Err(picaops::backup::ops::OpError::NoBackups),
            })
        }
        host => host_side(host, out),
    }
}

// -------------------------------------------------------------------------------------------
// Host side: `picaops::backup::hostcmd` does the work; one document or line per outcome.

/// Prints host-side outcomes (one JSON document each, or a line for people); the exit code.
fn report(outcomes: &[HostOutcome], out: &Output) -> i32 {
    let mut code = EXIT_OK;
    for o in outcomes {
        let d = &o.doc;
        match (out.format, &d.error) {
            (Format::Json, _) => {
                println!("{}", serde_json::to_string_pretty(d).unwrap_or_default())
            }
            (Format::Human, None) if o.bare => print!("{}", o.text),
            (Format::Human, None) => {
                let ok = out.paint(Style::Green, "ok:");
                println!("{ok} {} {}: {}", d.job, d.operation, o.text)
            }
            (Format::Human, Some(e)) => {
                let error = out.paint(Style::Red, "error:");
                eprintln!("{error} {} {} failed: {e}", d.job, d.operation)
            }
        }
        if !d.ok {
            code = EXIT_HOST_FAILED;
        }
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
    let usage = |e: HostUsage| {
        eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
        EXIT_USAGE
    };
    let read = |f: &Path, progress| hostcmd::read_job(f, progress).map_err(usage);
    let outcomes = match cmd {
        BackupCommand::HostStatus { job_files } => return host_status(&job_files, out),
        BackupCommand::HostServe { host } => {
            use picaops::backup::serve;
            let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
            let jobs = Path::new(picaops::backup::deploy::REPO_HOME).join("jobs");
            let e = match serve::directory(original.as_deref(), &host, &jobs) {
                Ok(dir) => serve::exec_rclone(&dir),
                Err(e) => e,
            };
            eprintln!("{e}");
            return EXIT_HOST_FAILED;
        }
        BackupCommand::HostForget { job_files, prune } => job_files
            .iter()
            .map(|f| read(f, false))
            .collect::<Result<Vec<HostJob>, i32>>()
            .map(|jobs| hostcmd::forget(&jobs, prune, &mut say)),
        BackupCommand::HostRun(a) => {
            read(&a.job_file, a.progress).map(|j| vec![hostcmd::run(&j, &mut say)])
        }
        BackupCommand::HostInit(a) => read(&a.job_file, false).map(|j| vec![hostcmd::init(&j)]),
        BackupCommand::HostPrune(a) => {
            read(&a.job_file, false).map(|j| vec![hostcmd::prune(&j, &mut say)])
        }
        BackupCommand::HostCheck {
            host,
            read_data_subset,
        } => read(&host.job_file, false)
            .map(|j| vec![hostcmd::check(&j, read_data_subset.as_deref(), &mut say)]),
        BackupCommand::HostSnapshots(a) => {
            read(&a.job_file, false).map(|j| vec![hostcmd::snapshots(&j)])
        }
        BackupCommand::HostRestore {
            host,
            snapshot,
            dump,
            to,
            into_container,
            load,
            command,
        } => {
            let target = hostcmd::RestoreTarget {
                snapshot,
                dump,
                to,
                into_container,
                load,
                command,
            };
            read(&host.job_file, false).and_then(|j| {
                hostcmd::restore(&j, target, &mut say)
                    .map(|o| vec![o])
                    .map_err(usage)
            })
        }
        BackupCommand::HostDrill { host, scratch } => read(&host.job_file, false)
            .map(|j| vec![hostcmd::drill(&j, scratch.as_deref(), &mut say)]),
        _ => unreachable!("workstation commands are dispatched in run()"),
    };
    outcomes.map_or_else(|code| code, |o| report(&o, out))
}

/// `host-status`: the jobs' status files as one JSON array.
fn host_status(job_files: &[PathBuf], out: &Output) -> i32 {
    let mut statuses = Vec::new();
    for f in job_files {
        let loaded = hostcmd::read_job(f, false).map(|job| JobStatus::load(&job.job));
        match loaded {
            Ok(Ok(s)) => statuses.push(s),
            Ok(Err(e)) => {
                eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
                return EXIT_HOST_FAILED;
            }
            Err(e) => {
                eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
                return EXIT_USAGE;
            }
        }
    }
    let text = serde_json::to_string_pretty(&statuses).unwrap_or_default();
    println!("{text}");
    EXIT_OK
}
