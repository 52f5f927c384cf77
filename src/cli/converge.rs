//! `picaops plan` and `picaops apply`: parse arguments, load the inventory once, and hand the
//! site run (VMs, converge, services: `picaops::site`) its request; print its report.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use picaops::converge::{self, saved::SavedPlan};
use picaops::lifecycle::{Mode, PhaseError, Summary};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_USAGE};
use picaops::site::{self, Request};
use picaops::vm::phase::VmFlags;
use serde_json::Value;

use super::Global;

/// What plan and apply share.
#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Playbook files (default: playbooks/site.yml beside the inventory directory).
    #[arg(value_name = "PLAYBOOK")]
    pub playbooks: Vec<PathBuf>,
    /// Which hosts: names, groups or sites, comma-separated; globs (`pica*`) and `!name` to exclude;
    /// `@failed`: those the last apply left failed; `@FILE`: the names in FILE, one per line.
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Only tasks with one of these tags (comma-separated; tasks tagged `always` too).
    #[arg(short, long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Leave out tasks with one of these tags.
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Extra variable, highest precedence: `-e name=value` (text) or `-e '{"name": [1, 2]}'` (JSON).
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    pub extra_vars: Vec<String>,
    /// How many hosts to work on at the same time.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub forks: u32,
    /// Seconds allowed to connect to each host.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Take down Compose services no longer in the inventory (their data and volumes stay).
    /// Without PLAYBOOK arguments, plan and apply end with the selected machines' Compose
    /// services (as `picaops service plan|apply`); naming playbooks runs only those.
    #[arg(long)]
    pub prune_services: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Reads the state of everything the playbooks touch on each host (one round trip per host), and \
shows what apply would change: + create, ~ update, - delete, > run, ? unknown until apply (a task \
that reads a result registered by a command), with a unified diff for file contents. Unchanged \
steps are listed with -v. Values of variables named like secrets (password, token, secret, \
private_key…) are shown as (secret); tasks with `no_log: true` show no content.

Exit codes: 0 the plan was made (with --detailed-exitcode: 0 nothing to change, 2 changes \
pending, 1 error); 1 a host could not be read; 2 usage error or invalid inventory/playbook \
(nothing was contacted).

Examples:
  picaops plan                                  playbooks/site.yml on every host
  picaops plan playbooks/base.yml -l toulouse   one playbook, one site
  picaops plan --out tonight.plan               save it; `picaops apply tonight.plan` later")]
pub struct PlanArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error (for drift alarms).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan to FILE (mode 0600); `picaops apply FILE` applies exactly it, or refuses.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Does what `picaops plan` shows, host by host (one read and one write round trip per host; a \
host with nothing to change costs one). Each host's changes run under a lock in /run/picaops \
(who, from where, since when); a second apply on the same host fails with that information, or \
waits with --lock-wait. Files are written atomically (temporary file, checked, renamed): an \
interrupted apply leaves no half-written file, and running apply again converges.

VMs come first: each hypervisor is read once, new VMs are created, started and converged with \
their groups' playbooks in the same run (once SSH answers, through their hypervisor when they \
have no address of their own), changes that can be made while a VM runs are made; a restart \
needs --allow-reboot and anything that destroys data (deleting a VM, shrinking or removing a \
disk) needs --allow-destroy NAME. A VM made by hand with a declared name is adopted as it is.

Given a file saved by `picaops plan --out`, plans every phase again (VMs, hosts, services) and \
applies only if no machine's state or planned changes moved since; otherwise nothing is applied \
and the refusal names each machine and phase that moved.

The machines an apply fails on (or refuses a change for) are recorded per inventory, in \
~/.local/state/picaops/failed/ ($XDG_STATE_HOME); `--limit @failed` selects them. Each apply \
updates the record: a machine it converges leaves it, so a fully successful run clears it.

Exit codes: 0 every host converged; 1 at least one host failed (the others were still served; \
the summary names each failure); 2 usage error or invalid inventory/playbook (nothing was \
contacted).")]
pub struct ApplyArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Seconds to wait for another apply's lock on a host before failing (default: fail at once).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub lock_wait: u64,
    /// Make VM changes that need a restart (vCPUs, memory above the VM's maximum): graceful
    /// ACPI shutdown, then start.
    #[arg(long)]
    pub allow_reboot: bool,
    /// Allow destroying this VM's data (deleting it, shrinking or removing one of its disks);
    /// give the VM's name, once per VM.
    #[arg(long, value_name = "VM")]
    pub allow_destroy: Vec<String>,
    /// Seconds a VM may take to shut down after the ACPI request before picaops gives up
    /// (nothing is forced).
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub shutdown_timeout: u64,
}

pub fn plan(args: PlanArgs, global: &Global, out: &Output) -> i32 {
    run(
        &args.sel,
        global,
        out,
        Mode::Plan,
        RunExtras {
            detailed: args.detailed_exitcode,
            save_to: args.out.as_ref(),
            ..RunExtras::default()
        },
    )
}

pub fn apply(args: ApplyArgs, global: &Global, out: &Output) -> i32 {
    let saved = match args.sel.playbooks.as_slice() {
        [one] if converge::is_saved_plan(one) => match SavedPlan::read(one) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("{}: {e}", out.paint(Style::Red, "picaops apply"));
                return EXIT_USAGE;
            }
        },
        _ => None,
    };
    let mut sel = args.sel.clone();
    let mut global = global.clone();
    if let Some(p) = &saved {
        if args.sel.limit.is_some() || !args.sel.tags.is_empty() || !args.sel.extra_vars.is_empty()
        {
            eprintln!(
                "{}: a saved plan carries its own --limit, --tags and -e; give only the plan file",
                out.paint(Style::Red, "picaops apply")
            );
            return EXIT_USAGE;
        }
        sel.playbooks = p.playbooks.clone();
        sel.limit = p.limit.clone();
        sel.tags = p.tags.clone();
        sel.skip_tags = p.skip_tags.clone();
        global.inventory = p.inventory.clone();
    }
    let vm = VmFlags {
        allow_reboot: args.allow_reboot,
        allow_destroy: args.allow_destroy.clone(),
        shutdown_timeout: args.shutdown_timeout,
    };
    run(
        &sel,
        &global,
        out,
        Mode::Apply,
        RunExtras {
            lock_wait: args.lock_wait,
            saved,
            vm,
            ..RunExtras::default()
        },
    )
}

/// What only plan, or only apply, adds to the shared selection.
#[derive(Default)]
struct RunExtras<'a> {
    detailed: bool,
    save_to: Option<&'a PathBuf>,
    lock_wait: u64,
    saved: Option<SavedPlan>,
    vm: VmFlags,
}

/// Loads the inventory once, prepares the site run (every phase checked before anything is
/// contacted), runs it and prints its report; returns the exit code.
fn run(sel: &Selection, global: &Global, out: &Output, mode: Mode, extras: RunExtras) -> i32 {
    let who = if mode == Mode::Plan {
        "picaops plan"
    } else {
        "picaops apply"
    };
    let settings =
        super::site::settings(mode, sel.forks, sel.connect_timeout, extras.detailed, out);
    let usage_code = Summary::usage_exit_code(&settings);
    let extra_vars = match &extras.saved {
        Some(p) => p.extra_vars.clone(),
        None => match site::parse_extra_vars(&sel.extra_vars) {
            Ok(v) => v,
            Err(e) => {
                return super::site::phase_error(
                    PhaseError::Usage(e.to_string()),
                    out,
                    who,
                    usage_code,
                )
            }
        },
    };
    let (inventory, targets, known_hosts) =
        match super::inventory::load_inventory_and_targets(global, sel.limit.as_deref(), out) {
            Ok(t) => t,
            Err(_) => return usage_code,
        };
    let request = Request {
        inventory_dir: global.inventory.clone(),
        playbooks: sel.playbooks.clone(),
        limit: sel.limit.clone(),
        tags: sel.tags.clone(),
        skip_tags: sel.skip_tags.clone(),
        extra_vars,
        lock_wait: Duration::from_secs(extras.lock_wait),
        saved: extras.saved,
        vm: extras.vm,
        prune_services: sel.prune_services,
    };
    let interrupted = "interrupted. Hosts finish the step they were on (every write is atomic); run apply again to converge.";
    // A saved plan is planned again first, every phase, and applied only if nothing moved.
    if let Some(saved) = &request.saved {
        let mut check = settings.clone();
        check.mode = Mode::Plan;
        let again = match site::prepare(
            inventory.clone(),
            targets.clone(),
            known_hosts.clone(),
            check,
            &request,
        ) {
            Ok(s) => s,
            Err(e) => return super::site::phase_error(e, out, who, usage_code),
        };
        let summary = match super::site::execute(again, out, who, interrupted) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let moved = site::moved_since(&summary, saved);
        if !moved.is_empty() {
            print_refusal(&summary, &moved, out, who);
            return EXIT_HOST_FAILED;
        }
    }
    let site = match site::prepare(inventory, targets, known_hosts, settings, &request) {
        Ok(s) => s,
        Err(e) => return super::site::phase_error(e, out, who, usage_code),
    };
    let summary = match super::site::execute(site, out, who, interrupted) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::site::print(&summary, out);
    if mode == Mode::Apply {
        match site::record_failed(&summary, &global.inventory) {
            Ok(Some(note)) if out.format == Format::Human => eprintln!("{note}"),
            Ok(_) => {}
            Err(e) => {
                eprintln!("{}: {e}", out.paint(Style::Red, who));
                return EXIT_HOST_FAILED;
            }
        }
    }
    if let Some(path) = extras.save_to {
        if let Err(e) = site::save_plan(&summary, &request, path) {
            eprintln!(
                "{}: cannot save the plan to {}: {e}",
                out.paint(Style::Red, who),
                path.display()
            );
            return EXIT_HOST_FAILED;
        }
        if out.format == Format::Human {
            eprintln!(
                "plan saved to {} (apply it with `picaops apply {}`)",
                path.display(),
                path.display()
            );
        }
    }
    summary.exit_code()
}

/// A saved plan that no longer holds: the plan made again (which shows what differs), what
/// moved, and that nothing was applied.
fn print_refusal(again: &Summary, moved: &[site::Moved], out: &Output, who: &str) {
    match out.format {
        Format::Json => {
            let mut doc = site::render_json(again);
            doc["applied"] = Value::Bool(false);
            doc["moved"] = serde_json::json!(moved);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => {
            super::site::print(again, out);
            for m in moved {
                eprintln!(
                    "{}: {} phase, {}: {}",
                    out.paint(Style::Red, who),
                    m.phase.label(),
                    m.machine,
                    m.why
                );
            }
            eprintln!(
                "{who}: the saved plan no longer matches {} machine(s): nothing was applied. Run `picaops plan --out FILE` again, review it, and apply that.",
                moved.len()
            );
        }
    }
}
