//! `picaops service list | plan | apply | logs | restart`: parse arguments and print. `plan` and
//! `apply` are a site run of the services phase alone (`picaops::service::phase`), which also
//! ends `picaops plan` and `picaops apply`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::diagnostic::Sources;
use picaops::lifecycle::{Mode, PhaseKind, RunContext, SiteRun, Summary};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::service::ops::{self, Op};
use picaops::service::phase::ServicesPhase;
use picaops::service::{self, deploy, list};
use serde_json::json;

use super::Global;

const SERVICE_HELP: &str = "\
Each service with a `compose:` template is a Compose project in /var/lib/picaops/services/NAME on \
its machine: compose.yaml (the rendered template), service.env (`env:`), secrets.env and secrets/ \
(root-only, from the secret store). Apply writes them and runs `docker compose up -d \
--remove-orphans` only for projects whose files changed or whose containers are not running, \
waits for health, and on failure puts the previous files back and brings the previous version \
up again. Supported: Compose v2 (the `docker compose` plugin, or the standalone `docker-compose` \
2.x of Debian trixie).";

#[derive(Subcommand, Debug)]
#[command(after_help = SERVICE_HELP)]
pub enum ServiceCommand {
    /// Every service: machine, containers, state, health, image versions and drift.
    List(ListArgs),
    /// What `service apply` would change: Compose and environment diffs (secrets never shown),
    /// containers to create, recreate or remove. Reads only.
    Plan(DeployArgs),
    /// Deploy the services that changed (only those), health-gated, rolled back on failure.
    Apply(DeployArgs),
    /// The last log lines of a service's containers (secrets redacted).
    Logs {
        /// The service.
        name: String,
        /// How many lines per container.
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Restart a service's containers and wait until it is healthy again.
    Restart {
        /// The service.
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Which machines: names, groups or sites, comma-separated; globs and `!name`.
    #[arg(short, long)]
    pub limit: Option<String>,
    /// How many machines to read at the same time.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub forks: u32,
    /// Seconds allowed to connect to each machine.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub connect_timeout: u64,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Checked before any machine is contacted (exit 2, with file:line:column): every template renders; \
every image has an exact version tag (not `latest`, not missing, not a moving tag like `stable`; \
a digest is fine); no host port is published twice on one machine; every secret resolves; the \
template uses service.env / secrets.env / secrets/FILE when the service gives them.

A service removed from the inventory shows as a removal; it is taken down (`down`, never `-v`) \
only with --prune-services. Its data directories and volumes are never deleted by picaops.

Exit codes: 0 done (plan: with --detailed-exitcode, 0 nothing to change, 2 changes pending); 1 a \
machine or a service failed (a rolled-back deployment counts); 2 invalid inventory or template \
(nothing was contacted).")]
pub struct DeployArgs {
    /// Which machines: names, groups or sites, comma-separated; globs and `!name`.
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Take down services no longer in the inventory (their data and volumes stay).
    #[arg(long)]
    pub prune_services: bool,
    /// How many machines to work on at the same time.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub forks: u32,
    /// Seconds allowed to connect to each machine.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Plan: exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(cmd: ServiceCommand, global: &Global, out: &Output) -> i32 {
    match cmd {
        ServiceCommand::List(args) => list_cmd(&args, global, out),
        ServiceCommand::Plan(args) => deploy_cmd(global, out, &args, Mode::Plan),
        ServiceCommand::Apply(args) => deploy_cmd(global, out, &args, Mode::Apply),
        ServiceCommand::Logs { name, tail } => one_service(global, out, &name, Op::Logs(tail)),
        ServiceCommand::Restart { name } => one_service(global, out, &name, Op::Restart),
    }
}

/// `service plan` / `service apply`: a site run of the services phase alone, printed on its
/// own (the JSON document is the services report).
fn deploy_cmd(global: &Global, out: &Output, args: &DeployArgs, mode: Mode) -> i32 {
    let settings = super::site::settings(
        mode,
        args.forks,
        args.connect_timeout,
        args.detailed_exitcode,
        out,
    );
    let usage_code = Summary::usage_exit_code(&settings);
    let (inventory, selected, known_hosts) =
        match super::inventory::load_inventory_and_targets(global, args.limit.as_deref(), out) {
            Ok(t) => t,
            Err(_) => return usage_code,
        };
    let cx = RunContext {
        inventory: Arc::new(inventory),
        known_hosts,
        settings,
        selected,
        limited: args.limit.is_some(),
    };
    let mut run = SiteRun::new(
        cx,
        vec![Box::new(ServicesPhase::new(args.prune_services, None))],
    );
    if let Err(e) = run.prepare() {
        return super::site::phase_error(e, out, "picaops", usage_code);
    }
    let summary = match super::site::execute(
        run,
        out,
        "picaops",
        "interrupted. A deployment in progress finishes on its machine (health wait, rollback); run `picaops service list` to see where each stands.",
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(p) = summary.phase(PhaseKind::Services) {
        match out.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&p.detail.json()).unwrap_or_default()
            ),
            Format::Human => {
                let _ = p.detail.human(out, &mut std::io::stdout().lock());
            }
        }
    }
    summary.exit_code()
}

/// Reads what runs on the selected machines (`service list`, and `picaops status`).
pub fn listing(args: &ListArgs, global: &Global, out: &Output) -> Result<list::Listing, i32> {
    let (inv, selected, known_hosts) =
        super::inventory::load_inventory_and_targets(global, args.limit.as_deref(), out)?;
    let targets = deploy::targets(&inv, selected, false);
    let machines: BTreeSet<String> = targets.iter().map(|t| t.name.clone()).collect();
    // Drift needs the rendered projects (secrets included); without them it is "unknown".
    let mut sources = Sources::default();
    let projects = match service::prepare(&inv, Some(&machines), &mut sources) {
        Ok(p) => Some(p),
        Err(diags) => {
            eprintln!(
                "{}: {} problem(s) in the services ({}…): drift shown as unknown; `picaops service plan` shows them",
                out.paint(Style::Yellow, "warning"),
                diags.len(),
                diags[0].message
            );
            None
        }
    };
    let request = list::Request {
        known_hosts,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        forks: args.forks as usize,
        whole_site: args.limit.is_none(),
    };
    let listing = match super::run_with_progress(out, targets.len(), |events| {
        list::list(&inv, &targets, projects, &request, events)
    }) {
        Ok(Some(Ok(l))) => l,
        Ok(Some(Err(e))) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            return Err(EXIT_HOST_FAILED);
        }
        _ => return Err(130),
    };
    Ok(listing)
}

fn list_cmd(args: &ListArgs, global: &Global, out: &Output) -> i32 {
    let listing = match listing(args, global, out) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&listing).unwrap_or_default()
        ),
        Format::Human => {
            let mut w = std::io::stdout().lock();
            let table = list::render_table(&listing.services);
            let (header, rows) = table.split_once('\n').unwrap_or((&table, ""));
            let _ = writeln!(w, "{}", out.paint(Style::Bold, header));
            let _ = write!(w, "{rows}");
            for e in &listing.errors {
                let _ = writeln!(
                    w,
                    "{} {}: {}",
                    out.paint(Style::Red, "✗"),
                    e.machine,
                    e.error
                );
            }
        }
    }
    if listing.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }
}

fn one_service(global: &Global, out: &Output, name: &str, op: Op) -> i32 {
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let known_hosts: PathBuf = match picaops::inventory::write_known_hosts(&inv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "{}: cannot write the known_hosts file: {e}",
                out.paint(Style::Red, "picaops service")
            );
            return EXIT_USAGE;
        }
    };
    let result = super::run_with_progress(out, 1, |_| ops::one(&inv, &known_hosts, name, op));
    let outcome = match result {
        Ok(Some(Ok(o))) => o,
        Ok(Some(Err(ops::ServiceOpError::Invalid {
            diagnostics,
            sources,
        }))) => {
            super::print_diagnostics(&diagnostics, &sources, out, "in the services");
            return EXIT_USAGE;
        }
        Ok(Some(Err(e))) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops service"));
            return e.exit_code();
        }
        Ok(None) => return 130,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops service"));
            return EXIT_USAGE;
        }
    };
    let machine = &inv.services[name].host.value;
    let r = match outcome {
        ops::Outcome::Logs(text) => {
            print!("{text}");
            return EXIT_OK;
        }
        ops::Outcome::Restarted(r) => r,
    };
    let ok = r.result.as_deref() == Some("ok");
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "service": name, "machine": machine, "ok": ok,
                "why": r.why, "logs": r.logs, "compose_version": r.version,
            }))
            .unwrap_or_default()
        ),
        Format::Human if ok => println!("{name} on {machine}: restarted, healthy"),
        Format::Human => {
            println!(
                "{name} on {machine}: {}",
                out.paint(
                    Style::Red,
                    &format!("not healthy after the restart: {}", r.why.join("; "))
                )
            );
            for l in &r.logs {
                println!("  {l}");
            }
        }
    }
    if ok {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }
}
