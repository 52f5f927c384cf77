//! Running a site run from the command line: Ctrl-C, a phase's error, and the one output path
//! (human or JSON) shared by `plan`, `apply` and `service plan|apply`.

use std::time::Duration;

use picaops::lifecycle::{Mode, PhaseError, Settings, SiteRun, Summary};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED};

/// A run's settings from the flags every multi-machine command shares.
pub fn settings(
    mode: Mode,
    forks: u32,
    connect_timeout: u64,
    detailed: bool,
    out: &Output,
) -> Settings {
    Settings {
        mode,
        forks: forks as usize,
        connect_timeout: Duration::from_secs(connect_timeout.max(1)),
        detailed_exitcode: detailed,
        progress: out.progress,
    }
}

/// Runs `run` until it ends or Ctrl-C. `Err(code)` when it could not finish (the error has been
/// printed, with whatever the phases before it reported).
pub fn execute(run: SiteRun, out: &Output, who: &str, interrupted: &str) -> Result<Summary, i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!(
                "{}: cannot start the async runtime: {e}",
                out.paint(Style::Red, who)
            );
            EXIT_HOST_FAILED
        })?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = run.run() => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Dropping the runtime drops unfinished machine tasks; each closes its SSH master.
    drop(runtime);
    match result {
        None => {
            eprintln!("{who}: {interrupted}");
            Err(130)
        }
        Some(Ok(summary)) => Ok(summary),
        Some(Err((partial, e))) => {
            print(&partial, out);
            Err(phase_error(e, out, who, EXIT_HOST_FAILED))
        }
    }
}

/// Prints why a phase could not be prepared or run; returns the exit code. `usage_code` is
/// the code of a run stopped before contacting anything (see `Summary::usage_exit_code`).
pub fn phase_error(e: PhaseError, out: &Output, who: &str, usage_code: i32) -> i32 {
    match e {
        PhaseError::Invalid {
            diagnostics,
            sources,
            what,
        } => {
            super::print_diagnostics(&diagnostics, &sources, out, what);
            usage_code
        }
        PhaseError::Usage(m) => {
            eprintln!("{}: {m}", out.paint(Style::Red, who));
            usage_code
        }
        e @ PhaseError::Transport(..) => {
            eprintln!("{}: {e}", out.paint(Style::Red, who));
            EXIT_HOST_FAILED
        }
    }
}

/// The run's report on stdout: one JSON document, or each phase's text in order.
pub fn print(summary: &Summary, out: &Output) {
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&picaops::site::render_json(summary)).unwrap_or_default()
        ),
        Format::Human => {
            let _ = picaops::site::render_human(summary, out, &mut std::io::stdout().lock());
        }
    }
}

/// A whole site at once: recover it at the other site when it is lost.
#[derive(clap::Subcommand, Debug)]
pub enum SiteCommand {
    /// Bring every VM and service of a lost SITE back at the site that keeps its backups.
    ///
    /// Without --apply, prints the plan and contacts nothing: which VM comes back on which
    /// hypervisor, which service on which machine with which backup job's data, and what must
    /// be done by hand. Refused (exit 2, file:line:column) when it cannot work: no room on the
    /// hypervisors (by how much), a service with data and no backup job at the recovery site,
    /// a port published twice at the new place.
    Recover {
        /// The lost site (`toulouse`, `compiegne`).
        site: String,
        /// Do it: mark the site lost (inventory/recovery.yml), create and converge its VMs on
        /// the surviving hypervisors, restore each service's data from its newest snapshot,
        /// deploy the services behind their health gate, load their dumps. The lost site is
        /// never contacted. Exit 1 if any service did not come back (the others did).
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Bring what `site recover` moved back home to SITE, with its newest data.
    ///
    /// Without --apply, prints the plan and contacts nothing. Refused (exit 2, nothing done)
    /// when inventory/recovery.yml does not say SITE is lost, or a machine of home or of the
    /// recovery place does not answer.
    Failback {
        /// The site that was lost and is back (`toulouse`, `compiegne`).
        site: String,
        /// Do it: each moved service stopped at its recovery place, backed up there, its VM
        /// shut down and renamed (kept); recovery.yml removed (a copy kept beside it); at home
        /// the VMs started and converged, the home data moved aside (kept), that snapshot
        /// restored, the services deployed behind their health gate, their dumps loaded; then
        /// the recovery place's copies taken down (no -v, data kept) and retention thawed.
        /// Exit 1 if any did not come home (it runs at the recovery place again).
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        run: RunFlags,
    },
}

/// What `site recover` and `site failback` share: how the machines are converged and reached.
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// Playbooks to converge the machines taking part with (default: playbooks/site.yml
    /// beside the inventory); repeat for several.
    #[arg(long = "playbook", value_name = "FILE")]
    playbooks: Vec<std::path::PathBuf>,
    #[arg(long, default_value_t = 10)]
    forks: u32,
    /// Seconds to wait for each machine to answer.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

/// `picaops site …`.
pub fn run_site(cmd: SiteCommand, global: &super::Global, out: &Output) -> i32 {
    let (
        site,
        apply,
        RunFlags {
            playbooks,
            forks,
            connect_timeout,
        },
    ) = match cmd {
        SiteCommand::Recover { site, apply, run } => (site, apply, run),
        SiteCommand::Failback { site, apply, run } => {
            return failback(&site, apply, run, global, out)
        }
    };
    let Some(inv) = super::inventory::load(global, out) else {
        return picaops::output::EXIT_USAGE;
    };
    let mut sources = picaops::diagnostic::Sources::default();
    let home = picaops::inventory::recovery::home(&inv);
    let plan = match picaops::recovery::plan(&home, &site, &mut sources) {
        Ok(plan) => plan,
        Err(diags) => {
            super::print_diagnostics(&diags, &sources, out, "in the recovery plan");
            return picaops::output::EXIT_USAGE;
        }
    };
    if !apply {
        return picaops::output::show(&plan, out);
    }
    let req = picaops::recovery::apply::Request {
        site,
        playbooks,
        settings: settings(Mode::Apply, forks, connect_timeout, false, out),
        now: picaops::backup::time::rfc3339(picaops::backup::time::now()),
    };
    let wait = std::time::Duration::from_secs(connect_timeout.max(1));
    let mut exec = |calls, timeout| super::backup_remote::ssh(&inv, calls, timeout, wait, out);
    match picaops::recovery::apply::apply(&global.inventory, &req, &mut exec) {
        Ok(done) => picaops::output::show(&done, out),
        Err(picaops::recovery::apply::RecoverError::Invalid {
            diagnostics,
            sources,
            what,
        }) => {
            super::print_diagnostics(&diagnostics, &sources, out, what);
            picaops::output::EXIT_USAGE
        }
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            EXIT_HOST_FAILED
        }
    }
}

/// `picaops site failback SITE [--apply]`: the work and its rendering are in the library.
fn failback(
    site: &str,
    apply: bool,
    RunFlags {
        playbooks,
        forks,
        connect_timeout,
    }: RunFlags,
    global: &super::Global,
    out: &Output,
) -> i32 {
    use picaops::recovery::failback::{self, FailbackError, Live, Request};
    let Some(inv) = super::inventory::load(global, out) else {
        return picaops::output::EXIT_USAGE;
    };
    let now = picaops::backup::time::rfc3339(picaops::backup::time::now());
    let result = if apply {
        let wait = std::time::Duration::from_secs(connect_timeout.max(1));
        let mut exec = |inv: &picaops::inventory::Inventory, calls, timeout| {
            super::backup_remote::ssh(inv, calls, timeout, wait, out)
        };
        let mut live = Live {
            exec: &mut exec,
            playbooks,
            settings: settings(Mode::Apply, forks, connect_timeout, false, out),
        };
        let req = Request {
            site: site.to_string(),
            now,
            vm_wait: std::time::Duration::from_secs(180),
        };
        failback::apply(&global.inventory, &req, &mut live).map(|o| picaops::output::show(&o, out))
    } else {
        failback::plan(&inv, site, &now).map(|p| picaops::output::show(&p, out))
    };
    result.unwrap_or_else(|e| match e {
        FailbackError::Invalid {
            diagnostics,
            sources,
            what,
        } => {
            super::print_diagnostics(&diagnostics, &sources, out, what);
            picaops::output::EXIT_USAGE
        }
        e => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            e.exit_code()
        }
    })
}
