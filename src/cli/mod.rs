//! Argument parsing (clap) and dispatch to one file per subcommand.

pub mod access;
pub mod backup;
pub mod backup_remote;
pub mod converge;
pub mod inventory;
pub mod lab;
pub mod run;
pub mod service;
pub mod site;
pub mod status;
pub mod vm;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use picaops::help_files::{self, Shell};
use picaops::output::{Format, Output};

const ABOUT: &str = "Run a small hoster's two sites from an admin workstation: \
inventory, ad-hoc commands, converge, VMs, access, backups.";

const AFTER_HELP: &str = "\
Exit codes: 0 everything went well; 1 at least one host failed (the others were still \
served, the summary names each failure); 2 usage error or invalid inventory (nothing was contacted).

Start here:
  picaops inventory check            is the inventory valid?
  picaops inventory graph            sites, hosts, VMs and services as a tree
  picaops run -- uptime              one command on every host
  picaops plan                       what apply would change (playbooks/site.yml)
  picaops apply                      converge every host
  picaops lab up                     a replica of the two sites on this machine, to try things";

#[derive(Parser, Debug)]
#[command(name = "picaops", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Inventory directory (every *.yml / *.yaml file in it is read and merged).
    #[arg(
        short,
        long,
        global = true,
        env = "PICAOPS_INVENTORY",
        default_value = "inventory"
    )]
    pub inventory: PathBuf,
    /// Output format: `human` for people, `json` for scripts (one document on stdout).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// More detail (repeat for even more). Logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and the final result; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl Global {
    pub fn output(&self) -> Output {
        let verbosity = if self.quiet {
            -1
        } else {
            self.verbose.min(3) as i8
        };
        Output::new(self.output, verbosity)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check, show and draw the inventory.
    #[command(subcommand)]
    Inventory(inventory::InventoryCommand),
    /// Show what `apply` would change on each host (reads only), with diffs.
    Plan(converge::PlanArgs),
    /// Converge hosts: make them as the playbooks say (or apply a saved plan).
    Apply(converge::ApplyArgs),
    /// Run one command on many hosts at once; output is prefixed by host name.
    Run(run::RunArgs),
    /// Who may log in where: people, levels, keys and end dates in the LDAP directory.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// A replica of the two sites on this machine (containers), for trying things and for tests.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Cross-site restic backups: status, snapshots, restore, drills, and the host-side runner.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Docker Compose services: list, plan, apply (health-gated, rolled back on failure), logs, restart.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// VMs on the hypervisors: list (with drift from the inventory), start, stop, reboot, console.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// The whole site at a glance: machines, drift, services, backups, access ending soon.
    Status(status::StatusArgs),
    /// A whole site at once: `site recover SITE` when it is lost.
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Print the completion script for SHELL (bash, zsh or fish) on stdout.
    #[command(after_help = help_files::COMPLETIONS_EXAMPLES)]
    Completions { shell: Shell },
    /// Print picaops's man page on stdout, or write a page per subcommand into DIR.
    #[command(after_help = help_files::MAN_EXAMPLES)]
    Man {
        /// Write picaops.1, picaops-apply.1, … into DIR (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub fn dispatch(cli: Cli) -> i32 {
    init_logging(&cli.global);
    let out = cli.global.output();
    match cli.command {
        Command::Inventory(cmd) => inventory::run(cmd, &cli.global, &out),
        Command::Run(args) => run::run(args, &cli.global, &out),
        Command::Plan(args) => converge::plan(args, &cli.global, &out),
        Command::Apply(args) => converge::apply(args, &cli.global, &out),
        Command::Access(cmd) => access::run(cmd, &cli.global, &out),
        Command::Lab(cmd) => lab::run(cmd, &cli.global, &out),
        Command::Backup(cmd) => backup::run(cmd, &cli.global, &out),
        Command::Service(cmd) => service::run(cmd, &cli.global, &out),
        Command::Vm(cmd) => vm::run(cmd, &cli.global, &out),
        Command::Site(cmd) => site::run_site(cmd, &cli.global, &out),
        Command::Status(args) => status::run(args, &cli.global, &out),
        Command::Completions { shell } => help_files::print_completions(Cli::command(), shell),
        Command::Man { dir } => help_files::print_man(Cli::command(), dir.as_deref(), &out),
    }
}

fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICAOPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("picaops={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .without_time()
        .try_init();
}

pub use picaops::diagnostic::print_all as print_diagnostics;
pub use picaops::progress::run_with_progress;
