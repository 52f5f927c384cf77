//! `picaops plan` and `picaops apply`: parse arguments, load the inventory and playbooks, check
//! everything before connecting, then hand over to `picaops::converge` and print its report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use picaops::converge::{self, report, saved::SavedPlan, Job, Mode};
use picaops::diagnostic::Sources;
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::playbook::template::Templates;
use serde_json::Value;

use super::Global;

/// What plan and apply share.
#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Playbook files (default: playbooks/site.yml beside the inventory directory).
    #[arg(value_name = "PLAYBOOK")]
    pub playbooks: Vec<PathBuf>,
    /// Which hosts: names, groups or sites, comma-separated; globs (`pica*`) and `!name` to exclude.
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

Given a file saved by `picaops plan --out`, applies that plan (hosts only: no VM change), and \
refuses any host whose state or planned changes moved since.

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
    let code = run(
        &args.sel,
        global,
        out,
        Mode::Plan,
        0,
        None,
        args.out.as_ref(),
        args.detailed_exitcode,
        &super::vm::VmFlags::default(),
    );
    match code {
        CHANGES_PENDING => 2,
        // With --detailed-exitcode, 2 means "changes pending": every error is 1.
        EXIT_USAGE if args.detailed_exitcode => 1,
        code => code,
    }
}

/// `run`'s answer for "the plan has changes" under --detailed-exitcode (mapped to 2 by `plan`).
const CHANGES_PENDING: i32 = 1002;

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
    let flags = super::vm::VmFlags {
        allow_reboot: args.allow_reboot,
        allow_destroy: args.allow_destroy.clone(),
        shutdown_timeout: args.shutdown_timeout,
    };
    run(
        &sel,
        &global,
        out,
        Mode::Apply,
        args.lock_wait,
        saved,
        None,
        false,
        &flags,
    )
}

/// `-e` values: `name=value` pairs and JSON objects, later ones winning.
fn parse_extra_vars(items: &[String]) -> Result<BTreeMap<String, Value>, String> {
    let mut vars = BTreeMap::new();
    for item in items {
        let t = item.trim();
        if t.starts_with('{') {
            let obj: serde_json::Map<String, Value> = serde_json::from_str(t)
                .map_err(|e| format!("-e {t:?}: not a JSON object ({e})"))?;
            vars.extend(obj);
        } else if let Some((k, v)) = t.split_once('=') {
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("-e {t:?}: `{k}` is not a variable name"));
            }
            vars.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            return Err(format!("-e {t:?}: write name=value, or a JSON object"));
        }
    }
    Ok(vars)
}

#[allow(clippy::too_many_arguments)]
fn run(
    sel: &Selection,
    global: &Global,
    out: &Output,
    mode: Mode,
    lock_wait: u64,
    expected: Option<SavedPlan>,
    save_to: Option<&PathBuf>,
    detailed: bool,
    vm_flags: &super::vm::VmFlags,
) -> i32 {
    let who = if mode == Mode::Plan {
        "picaops plan"
    } else {
        "picaops apply"
    };
    let usage = |m: String| {
        eprintln!("{}: {m}", out.paint(Style::Red, who));
        EXIT_USAGE
    };
    let extra_vars = match &expected {
        Some(p) => p.extra_vars.clone(),
        None => match parse_extra_vars(&sel.extra_vars) {
            Ok(v) => v,
            Err(e) => return usage(e),
        },
    };
    let (inventory, targets, known_hosts) =
        match super::inventory::load_inventory_and_targets(global, sel.limit.as_deref(), out) {
            Ok(t) => t,
            Err(code) => return code,
        };
    let playbooks: Vec<PathBuf> = if sel.playbooks.is_empty() {
        let dir = global
            .inventory
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        vec![dir.join("playbooks").join("site.yml")]
    } else {
        sel.playbooks.clone()
    };
    let templates = Templates::new();
    let mut sources = Sources::default();
    let books = match converge::load_playbooks(&playbooks, &templates, &mut sources) {
        Ok(b) => b,
        Err(diags) => {
            super::print_diagnostics(&diags, &sources, out, "in the playbooks");
            return EXIT_USAGE;
        }
    };
    // The access playbook's variables (a secret among them) only when a playbook uses them.
    let mut inventory = inventory;
    // Engine variables are computed (and their secrets read) only for playbooks that use them.
    let uses = |name: &str| {
        books
            .iter()
            .any(|b| sources.text(&b.path).is_some_and(|t| t.contains(name)))
    };
    type AddVars = fn(&mut picaops::inventory::Inventory) -> Result<(), String>;
    let engines: [(&str, AddVars); 2] = [
        ("picaops_access", picaops::access::vars::add_engine_vars),
        ("picaops_backup", picaops::backup::deploy::add_engine_vars),
    ];
    for (name, add) in engines {
        if uses(name) {
            if let Err(e) = add(&mut inventory) {
                return usage(format!("{e}; nothing was contacted"));
            }
        }
    }
    let selected: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let mut job = Job {
        inventory,
        playbooks: books,
        templates,
        extra_vars,
        tags: sel.tags.clone(),
        skip_tags: sel.skip_tags.clone(),
        mode,
        lock_wait: Duration::from_secs(lock_wait),
        lock_info: converge::lock_info(),
        expected,
        sources: Mutex::new(sources),
        known_hosts,
        connect_timeout: Duration::from_secs(sel.connect_timeout.max(1)),
        forks: sel.forks as usize,
    };
    // Hosts no play applies to are not contacted at all.
    let targets: Vec<_> = {
        let cx_hosts = converge::hosts_with_plays(&job, &targets);
        targets
            .into_iter()
            .filter(|t| cx_hosts.contains(&t.name))
            .filter(|t| {
                job.expected
                    .as_ref()
                    .is_none_or(|p| p.hosts.contains_key(&t.name))
            })
            .collect()
    };
    // VMs in scope (none when applying a saved plan: it covers the hosts only).
    let has_vms = job.expected.is_none() && !job.inventory.vms.is_empty();
    if targets.is_empty() && !has_vms {
        return usage("no selected host is matched by any play's `hosts:`: nothing to do".into());
    }
    if let Err(diags) = converge::precheck(&job, &targets) {
        let sources = job.sources.lock().map(|s| s.clone()).unwrap_or_default();
        super::print_diagnostics(&diags, &sources, out, "in the playbooks");
        return EXIT_USAGE;
    }
    // 1. VMs: read the hypervisors, plan, and (apply) create/change them, pin new VMs' keys and
    //    wait for their SSH. VMs that cannot be converged now leave the targets, with why.
    let vms = if has_vms {
        match super::vm::vm_phase(
            &job.inventory,
            &job.known_hosts,
            &selected,
            sel.limit.is_some(),
            mode == Mode::Apply,
            vm_flags,
            job.connect_timeout,
            job.forks,
        ) {
            Ok(r) => r,
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let mut not_converged = BTreeMap::new();
    let mut targets = targets;
    if let Some(report) = &vms {
        if let Some(kh) = &report.known_hosts {
            job.known_hosts = kh.clone();
        }
        not_converged = report.not_ready(&job.inventory, mode == Mode::Apply);
        targets.retain(|t| !not_converged.contains_key(&t.name));
    }
    if targets.is_empty() {
        if let Some(report) = &vms {
            print_vms_only(report, &not_converged, out, mode);
            return vm_exit_code(report, mode, detailed);
        }
    }
    let secrets = converge::secret_values(&job);
    let job = Arc::new(job);
    let result = match super::run_with_progress(out, targets.len(), |events| {
        converge::run(job.clone(), &targets, events)
    }) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let report = match result {
        None => {
            eprintln!("{who}: interrupted. Hosts finish the step they were on (every write is atomic); run apply again to converge.");
            return 130;
        }
        Some(Err(e)) => {
            eprintln!("{}: {e}", out.paint(Style::Red, who));
            return EXIT_HOST_FAILED;
        }
        Some(Ok(r)) => r,
    };
    // A whole-site run (no playbook named) ends with the Compose services of the selected
    // machines; a saved plan covers the playbooks only.
    let services = (job.expected.is_none() && sel.playbooks.is_empty()).then(|| {
        super::service::after_converge(global, out, sel.limit.as_deref(), mode, sel.prune_services)
    });
    match out.format {
        Format::Json => {
            let mut doc = report::render_json(&report, &secrets);
            if let Some(vms) = &vms {
                doc["vms"] = vm_json(vms, &not_converged);
            }
            if let Some(s) = &services {
                doc["services"] = s.json();
            }
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
        }
        Format::Human => {
            let mut stdout = std::io::stdout().lock();
            if let Some(vms) = &vms {
                let _ = picaops::vm::render::render_human(vms, out, &mut stdout);
                print_not_converged(&not_converged, out, &mut stdout);
            }
            let _ = report::render_human(&report, out, &secrets, &mut stdout);
            drop(stdout);
            if let Some(s) = &services {
                s.print_human(out);
            }
        }
    }
    if let Some(path) = save_to {
        let plan = SavedPlan::from_report(
            &report,
            SavedPlan {
                format: converge::saved::MAGIC.into(),
                created: converge::lock_info()
                    .lines()
                    .find_map(|l| l.strip_prefix("since="))
                    .unwrap_or_default()
                    .to_string(),
                inventory: global.inventory.clone(),
                playbooks: playbooks.clone(),
                limit: sel.limit.clone(),
                tags: sel.tags.clone(),
                skip_tags: sel.skip_tags.clone(),
                extra_vars: job.extra_vars.clone(),
                hosts: BTreeMap::new(),
            },
        );
        if let Err(e) = plan.write(path) {
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
            if vms.as_ref().is_some_and(|v| v.changes() > 0) {
                eprintln!(
                    "note: a saved plan covers the hosts only; the VM changes above are made by `picaops apply` without a plan file"
                );
            }
        }
    }
    if let Some(code) = services.as_ref().map(|s| s.code).filter(|c| *c != EXIT_OK) {
        return code;
    }
    if report.failed().count() > 0 {
        return EXIT_HOST_FAILED;
    }
    if let Some(vms) = &vms {
        let code = vm_exit_code(vms, mode, detailed);
        if code != EXIT_OK {
            return code;
        }
    }
    if detailed && report.changes() + services.as_ref().map_or(0, |s| s.pending()) > 0 {
        return CHANGES_PENDING;
    }
    EXIT_OK
}

/// The VM part's exit code: a failure is 1; in apply, so is a change refused for want of
/// --allow-reboot/--allow-destroy (the VMs are not as declared); in plan, pending VM changes
/// are "changes pending" for --detailed-exitcode.
fn vm_exit_code(vms: &picaops::vm::VmReport, mode: Mode, detailed: bool) -> i32 {
    if vms.failed() || (mode == Mode::Apply && vms.refused() > 0) {
        return EXIT_HOST_FAILED;
    }
    if mode == Mode::Plan && detailed && vms.changes() > 0 {
        return CHANGES_PENDING;
    }
    EXIT_OK
}

fn vm_json(vms: &picaops::vm::VmReport, not_converged: &BTreeMap<String, String>) -> Value {
    let mut doc = picaops::vm::render::render_json(vms);
    doc["not_converged"] = serde_json::json!(not_converged);
    doc
}

fn print_not_converged(
    not_converged: &BTreeMap<String, String>,
    out: &Output,
    w: &mut dyn std::io::Write,
) {
    for (name, why) in not_converged {
        let _ = writeln!(
            w,
            "  {} {name} is not converged in this run: {why}",
            out.paint(Style::Dim, "note:")
        );
    }
}

/// When only VMs are in play (no host to converge), their report alone.
fn print_vms_only(
    vms: &picaops::vm::VmReport,
    not_converged: &BTreeMap<String, String>,
    out: &Output,
    mode: Mode,
) {
    match out.format {
        Format::Json => {
            let doc = serde_json::json!({
                "mode": mode,
                "hosts": [],
                "vms": vm_json(vms, not_converged),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => {
            let mut stdout = std::io::stdout().lock();
            let _ = picaops::vm::render::render_human(vms, out, &mut stdout);
            print_not_converged(not_converged, out, &mut stdout);
        }
    }
}
