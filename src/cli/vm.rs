//! `picaops vm list | start | stop | reboot | console | release` (the VM phase of `plan`/`apply` is
//! `picaops::vm::phase`). Argument parsing and printing only: the work is in `picaops::vm`.

use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::inventory;
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::vm::{ops, render, PowerOp, VmReport};

use super::Global;

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Every VM on the hypervisors: state, vCPUs, memory, disks, uptime, and how it differs from
    /// the inventory (declared but absent, made by hand, not declared, sizes that differ).
    #[command(after_help = "\
Reads each hypervisor once (libvirt: virsh and qemu-img; Proxmox: pvesh and qm). Changes \
nothing: `picaops plan` shows what apply would do about the drift, `picaops apply` does it.")]
    List {
        /// Which hypervisors or VMs (names, groups, sites, globs, `!name`), comma-separated.
        #[arg(short, long)]
        limit: Option<String>,
    },
    /// Start a VM.
    Start(Named),
    /// Shut a VM down gracefully (ACPI power button), waiting for it; `--force` pulls the plug.
    Stop {
        #[command(flatten)]
        vm: Named,
        /// Cut the power at once instead (the guest does not get to shut down cleanly).
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the graceful shutdown before giving up (nothing is forced).
        #[arg(long, value_name = "S", default_value_t = 120)]
        timeout: u64,
    },
    /// Restart a VM: graceful ACPI shutdown, then start.
    Reboot {
        #[command(flatten)]
        vm: Named,
        /// Seconds to wait for the graceful shutdown before giving up (nothing is forced).
        #[arg(long, value_name = "S", default_value_t = 120)]
        timeout: u64,
    },
    /// Attach to a VM's serial console, through its hypervisor (leave with Ctrl-]).
    Console(Named),
    /// Stop managing a VM without touching it: removes picaops's mark (Proxmox tag `picaops`,
    /// libvirt metadata), so no apply changes or deletes it again.
    #[command(after_help = "\
To hand a VM back to manual care: remove it from the inventory (plan then says `- delete`, \
which apply refuses without --allow-destroy NAME), then `picaops vm release NAME --host HOST`. \
Afterwards plan shows it as `. left alone`; to manage it again, declare it: apply adopts it. \
The VM keeps running, its disks and settings are not touched (on Proxmox its cloud-init \
snippet stays: it needs it to start). Refused for a VM still declared (the next apply would \
adopt it again) or one picaops does not manage.")]
    Release(Named),
}

#[derive(Args, Debug)]
pub struct Named {
    /// The VM's name.
    pub name: String,
    /// Its hypervisor, for a VM the inventory does not declare.
    #[arg(long)]
    pub host: Option<String>,
}

pub fn run(cmd: VmCommand, global: &Global, out: &Output) -> i32 {
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let known_hosts = match inventory::write_known_hosts(&inv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "{}: cannot write the known_hosts file: {e}",
                out.paint(Style::Red, "picaops vm")
            );
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("picaops vm: cannot start the async runtime: {e}");
            return EXIT_HOST_FAILED;
        }
    };
    let kh = known_hosts.as_path();
    let power = |vm: &Named, op: PowerOp, timeout: u64| {
        let done = runtime.block_on(ops::power(
            &inv,
            kh,
            &vm.name,
            vm.host.as_deref(),
            op,
            Duration::from_secs(timeout),
        ));
        show_done(vm, done, out)
    };
    match cmd {
        VmCommand::List { limit } => {
            let report = runtime.block_on(ops::list(
                inv.clone(),
                known_hosts.clone(),
                limit.as_deref(),
            ));
            show_list(report, out)
        }
        VmCommand::Start(vm) => power(&vm, PowerOp::Start, 120),
        VmCommand::Stop { vm, force, timeout } => power(&vm, PowerOp::Stop { force }, timeout),
        VmCommand::Reboot { vm, timeout } => power(&vm, PowerOp::Reboot, timeout),
        VmCommand::Release(vm) => {
            let done = runtime.block_on(ops::release(&inv, kh, &vm.name, vm.host.as_deref()));
            show_done(&vm, done, out)
        }
        VmCommand::Console(vm) => {
            let console = runtime.block_on(ops::console(&inv, kh, &vm.name, vm.host.as_deref()));
            drop(runtime);
            attach(&vm, console, out)
        }
    }
}

fn show_list(report: Result<VmReport, ops::VmOpError>, out: &Output) -> i32 {
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops vm list"));
            return e.exit_code();
        }
    };
    let rows = render::list_rows(&report);
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::list_json(&rows, &report)).unwrap_or_default()
        ),
        Format::Human => {
            let _ = render::render_list(&rows, out, &mut std::io::stdout().lock());
            for h in report.hosts.iter().filter(|h| h.error.is_some()) {
                eprintln!(
                    "{} {}: {}",
                    out.paint(Style::Red, "FAILED"),
                    h.host,
                    h.error.as_deref().unwrap_or("")
                );
            }
            for e in &report.errors {
                eprintln!("{} {e}", out.paint(Style::Red, "error:"));
            }
        }
    }
    if report.failed() {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }
}

fn show_done(vm: &Named, done: Result<&str, ops::VmOpError>, out: &Output) -> i32 {
    let doc = match &done {
        Ok(what) => serde_json::json!({"ok": true, "vm": vm.name, "done": what}),
        Err(e) => serde_json::json!({"ok": false, "vm": vm.name, "error": e.to_string()}),
    };
    match (out.format, &done) {
        (Format::Json, _) => println!("{doc}"),
        (Format::Human, Ok(what)) => println!("{} {what}", vm.name),
        (Format::Human, Err(e)) => {
            eprintln!("{}: {}: {e}", out.paint(Style::Red, "picaops vm"), vm.name)
        }
    }
    match done {
        Ok(_) => EXIT_OK,
        Err(e) => e.exit_code(),
    }
}

/// Runs the console's interactive ssh in this terminal.
fn attach(
    vm: &Named,
    console: Result<(picaops::transport::Target, std::process::Command), ops::VmOpError>,
    out: &Output,
) -> i32 {
    let (target, mut cmd) = match console {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops vm console"));
            return e.exit_code();
        }
    };
    eprintln!(
        "console of {} on {} (leave with Ctrl-])",
        vm.name, target.name
    );
    match cmd.status() {
        Ok(s) if s.success() => EXIT_OK,
        Ok(_) => EXIT_HOST_FAILED,
        Err(e) => {
            eprintln!("picaops vm console: cannot run ssh: {e}");
            EXIT_HOST_FAILED
        }
    }
}
