//! `picaops vm list | start | stop | reboot | console` (the VM phase of `plan`/`apply` is
//! `picaops::vm::phase`). Argument parsing and printing only: the work is in `picaops::vm`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::inventory::{self, Inventory, Machine};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::transport::{Connector, Target};
use picaops::vm::{self, engine, render, Allowed, PowerOp, Scope, VmJob};

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
    let usage = |m: String| {
        eprintln!("{}: {m}", out.paint(Style::Red, "picaops vm"));
        EXIT_USAGE
    };
    let known_hosts = match inventory::write_known_hosts(&inv) {
        Ok(p) => p,
        Err(e) => return usage(format!("cannot write the known_hosts file: {e}")),
    };
    match cmd {
        VmCommand::List { limit } => list(inv, known_hosts, limit.as_deref(), out),
        VmCommand::Start(vm) => power(&inv, &known_hosts, &vm, PowerOp::Start, 120, out),
        VmCommand::Stop { vm, force, timeout } => power(
            &inv,
            &known_hosts,
            &vm,
            PowerOp::Stop { force },
            timeout,
            out,
        ),
        VmCommand::Reboot { vm, timeout } => {
            power(&inv, &known_hosts, &vm, PowerOp::Reboot, timeout, out)
        }
        VmCommand::Console(vm) => console(&inv, &known_hosts, &vm, out),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn list(inv: Inventory, known_hosts: std::path::PathBuf, limit: Option<&str>, out: &Output) -> i32 {
    let selected: Vec<String> = match inventory::select::select(&inv, limit) {
        Ok(m) => m.iter().map(|m| m.name().to_string()).collect(),
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops vm list"));
            return EXIT_USAGE;
        }
    };
    let mut scope = Scope::of(&inv, &selected, false);
    if limit.is_some() {
        // With a limit, undeclared VMs are listed on the hypervisors it names only.
        scope.deletions_on = selected
            .iter()
            .filter(|n| inv.hosts.contains_key(*n))
            .cloned()
            .collect();
    }
    if scope.hosts.is_empty() {
        eprintln!(
            "{}: no hypervisor selected (hosts with `hypervisor: libvirt` or `proxmox`)",
            out.paint(Style::Red, "picaops vm list")
        );
        return EXIT_USAGE;
    }
    let job = Arc::new(VmJob {
        inventory: inv,
        known_hosts,
        connect_timeout: Duration::from_secs(10),
        forks: 50,
        apply: false,
        allowed: Allowed::default(),
        shutdown_timeout: Duration::from_secs(120),
        ssh_wait: Duration::ZERO,
        scope,
    });
    let report = match runtime() {
        Ok(rt) => rt.block_on(engine::run(job)),
        Err(e) => {
            eprintln!("picaops vm list: {e}");
            return EXIT_HOST_FAILED;
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

/// The hypervisor of a VM: the inventory's, or `--host`.
fn hypervisor_of(inv: &Inventory, vm: &Named) -> Result<Target, String> {
    let host = match (&vm.host, inv.vms.get(&vm.name)) {
        (Some(h), _) => h.clone(),
        (None, Some(v)) => v.host.value.clone(),
        (None, None) => {
            return Err(format!(
                "`{}` is not a VM of the inventory; for one made by hand, say where it runs with --host HOST",
                vm.name
            ))
        }
    };
    let h = inv
        .hosts
        .get(&host)
        .ok_or_else(|| format!("`{host}` is not a host of the inventory"))?;
    if h.hypervisor == inventory::HypervisorKind::None {
        return Err(format!(
            "host {host} has `hypervisor: none`: picaops runs no VM there"
        ));
    }
    inventory::target(Machine::Host(h))
}

/// Connects to the VM's hypervisor, reads it, and hands the VM's state to `work`.
fn with_vm<T>(
    inv: &Inventory,
    known_hosts: &std::path::Path,
    vm: &Named,
    work: impl AsyncFnOnce(
        &dyn vm::Hypervisor,
        &dyn picaops::transport::Transport,
        &vm::VmState,
    ) -> Result<T, String>,
) -> Result<T, String> {
    let target = hypervisor_of(inv, vm)?;
    let kind = inv.hosts[&target.name].hypervisor;
    let driver = vm::for_kind(kind).ok_or("no driver")?;
    runtime()?.block_on(async {
        let connector = Connector::new(known_hosts, Duration::from_secs(10), None)
            .map_err(|e| e.to_string())?;
        let transport = connector
            .connect(&target)
            .await
            .map_err(|e| e.to_string())?;
        let read = engine::read_host(driver.as_ref(), &target.name, transport.as_ref()).await?;
        let state = read.get(&vm.name).ok_or_else(|| {
            format!(
                "no VM named {} on {} (VMs there: {})",
                vm.name,
                target.name,
                read.vms
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let result = work(driver.as_ref(), transport.as_ref(), state).await;
        let _ = transport.close().await;
        result
    })
}

fn power(
    inv: &Inventory,
    known_hosts: &std::path::Path,
    vm: &Named,
    op: PowerOp,
    timeout: u64,
    out: &Output,
) -> i32 {
    let timeout = Duration::from_secs(timeout);
    let result = with_vm(inv, known_hosts, vm, async |driver, transport, state| {
        let script = driver.power_script(state, op, timeout);
        engine::exec_script(transport, script, timeout + Duration::from_secs(120))
            .await
            .map_err(|e| {
                if e == "timed out" {
                    format!(
                        "{} did not shut down within {} s after the ACPI request; nothing was \
                         forced (use --force to cut the power)",
                        state.name,
                        timeout.as_secs()
                    )
                } else {
                    e
                }
            })
    });
    let what = match op {
        PowerOp::Start => "started",
        PowerOp::Stop { force: true } => "powered off",
        PowerOp::Stop { force: false } => "shut down",
        PowerOp::Reboot => "restarted",
    };
    match result {
        Ok(_) => {
            match out.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": true, "vm": vm.name, "done": what})
                ),
                Format::Human => println!("{} {what}", vm.name),
            }
            EXIT_OK
        }
        Err(e) => {
            match out.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": false, "vm": vm.name, "error": e})
                ),
                Format::Human => {
                    eprintln!("{}: {}: {e}", out.paint(Style::Red, "picaops vm"), vm.name)
                }
            }
            EXIT_HOST_FAILED
        }
    }
}

/// The console is interactive (a terminal both ways), which the transport's multiplexed
/// sessions do not offer: this runs the admin's own `ssh -t` to the hypervisor, with the same
/// strict host-key settings picaops uses everywhere.
fn console(inv: &Inventory, known_hosts: &std::path::Path, vm: &Named, out: &Output) -> i32 {
    let argv = with_vm(inv, known_hosts, vm, async |driver, _transport, state| {
        driver.console_argv(state)
    });
    let argv = match argv {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops vm console"));
            return EXIT_HOST_FAILED;
        }
    };
    let target = match hypervisor_of(inv, vm) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops vm console"));
            return EXIT_USAGE;
        }
    };
    let mut line = picaops::transport::quote::join(&argv);
    if target.become_root && target.user.as_deref() != Some("root") {
        line = format!("sudo {line}");
    }
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-t")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("HostKeyAlias={}", target.known_hosts_name()));
    if let Some(id) = &target.identity_file {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(port) = target.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &target.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&target.address).arg(line);
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
