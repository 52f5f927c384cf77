//! `picaops inventory check | show | graph | pin`, and the inventory loading every command shares.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use picaops::diagnostic;
use picaops::inventory::{self, graph, select, Inventory};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::transport::Target;

use super::Global;

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// Read every file and report all errors with file:line:column (exit 2 if any).
    Check,
    /// The resolved model; with a machine name, its settings and merged variables with where
    /// each value came from.
    Show {
        /// A host or VM name.
        machine: Option<String>,
    },
    /// Sites → hosts → VMs → services as a tree.
    Graph {
        /// `tree` for the terminal, `dot` for Graphviz, `svg` drawn by Graphviz when installed
        /// (`--format svg > picasoft.svg`).
        #[arg(long, value_enum, default_value_t = GraphFormat::Tree)]
        format: GraphFormat,
    },
    /// Record the SSH host key a machine presents now (trust on first use) in
    /// `<inventory>/known_hosts`. Verify the printed fingerprint out of band before committing.
    Pin {
        /// Host or VM names (or a --limit style pattern).
        #[arg(required = true)]
        machines: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Tree,
    Dot,
    Svg,
}

pub fn run(cmd: InventoryCommand, global: &Global, out: &Output) -> i32 {
    let Some(inv) = load(global, out) else {
        return EXIT_USAGE;
    };
    match cmd {
        InventoryCommand::Check => check(&inv, out),
        InventoryCommand::Show { machine } => show(&inv, machine.as_deref(), out),
        InventoryCommand::Graph { format } => {
            match (format, out.format) {
                (GraphFormat::Dot, _) => print!("{}", graph::render_dot(&inv)),
                (GraphFormat::Svg, _) => match graph::render_svg(&inv) {
                    Ok(svg) => print!("{svg}"),
                    Err(e) => {
                        eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
                        return EXIT_HOST_FAILED;
                    }
                },
                (_, Format::Json) => println!("{}", json(&inv)),
                (GraphFormat::Tree, Format::Human) => {
                    let (b, d, r) = if out.color {
                        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
                    } else {
                        ("", "", "")
                    };
                    print!("{}", graph::render_tree(&inv, b, d, r));
                }
            }
            EXIT_OK
        }
        InventoryCommand::Pin { machines } => pin(&inv, &machines.join(","), out),
    }
}

/// Loads the inventory named by `-i`, printing every diagnostic on failure.
pub fn load(global: &Global, out: &Output) -> Option<Inventory> {
    let loaded = inventory::load(&global.inventory);
    match loaded.result {
        Ok(inv) => Some(inv),
        Err(diags) => {
            let what = format!("in the inventory at {}", global.inventory.display());
            super::print_diagnostics(&diags, &loaded.sources, out, &what);
            None
        }
    }
}

/// The machines a multi-host command acts on, and the known_hosts file pinning their keys.
/// On error, the message is printed and the exit code returned.
pub fn load_targets(
    global: &Global,
    limit: Option<&str>,
    out: &Output,
) -> Result<(Vec<Target>, PathBuf), i32> {
    load_inventory_and_targets(global, limit, out)
        .map(|(_, targets, known_hosts)| (targets, known_hosts))
}

/// Like [`load_targets`], keeping the inventory too.
pub fn load_inventory_and_targets(
    global: &Global,
    limit: Option<&str>,
    out: &Output,
) -> Result<(Inventory, Vec<Target>, PathBuf), i32> {
    let inv = load(global, out).ok_or(EXIT_USAGE)?;
    let (targets, known_hosts) = select::targets(&inv, limit).map_err(|e| {
        eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
        EXIT_USAGE
    })?;
    Ok((inv, targets, known_hosts))
}

fn json(inv: &Inventory) -> String {
    serde_json::to_string_pretty(inv).unwrap_or_default()
}

fn check(inv: &Inventory, out: &Output) -> i32 {
    let summary = format!(
        "{} sites, {} hosts, {} VMs, {} groups, {} services, {} backup jobs",
        inv.sites.len(),
        inv.hosts.len(),
        inv.vms.len(),
        inv.groups.len(),
        inv.services.len(),
        inv.backups.len()
    );
    let unpinned: Vec<&str> = inv
        .machines()
        .filter(|m| m.ssh().host_key.is_none() && !inventory::is_pinned(inv, *m))
        .map(|m| m.name())
        .collect();
    match out.format {
        Format::Json => {
            let doc = serde_json::json!({ "ok": true, "summary": summary, "unpinned_host_keys": unpinned });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => {
            if out.verbosity >= 0 {
                println!(
                    "{} {} ({summary})",
                    out.paint(Style::Green, "ok:"),
                    inv.dir.display()
                );
                if !unpinned.is_empty() {
                    println!(
                        "{} no pinned host key for {}: picaops will refuse to connect to them until you \
                         add `host_key:` or run `picaops inventory pin NAME`",
                        out.paint(Style::Yellow, "note:"),
                        unpinned.join(", ")
                    );
                }
            }
        }
    }
    EXIT_OK
}

fn show(inv: &Inventory, machine: Option<&str>, out: &Output) -> i32 {
    let Some(name) = machine else {
        match out.format {
            Format::Json => println!("{}", json(inv)),
            Format::Human => print!("{}", inventory::show::machines(inv)),
        }
        return EXIT_OK;
    };
    let Some(m) = inv.machine(name) else {
        let names: Vec<&str> = inv.machines().map(|m| m.name()).collect();
        let hint = diagnostic::did_you_mean(name, names.iter().copied())
            .map(|s| format!(" Did you mean `{s}`?"))
            .unwrap_or_default();
        eprintln!(
            "{}: no host or VM named `{name}`.{hint}",
            out.paint(Style::Red, "picaops")
        );
        return EXIT_USAGE;
    };
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&inventory::show::machine_json(inv, m))
                .unwrap_or_default()
        ),
        Format::Human => print!("{}", inventory::show::machine(inv, m, out)),
    }
    EXIT_OK
}

fn pin(inv: &Inventory, pattern: &str, out: &Output) -> i32 {
    let machines = match select::select(inv, Some(pattern)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            return EXIT_USAGE;
        }
    };
    let mut failed = false;
    for m in machines {
        match inventory::pin(inv, m) {
            Ok(fingerprint) => println!(
                "{} {}: {fingerprint}\n  recorded in {}; check this fingerprint on the machine's console \
                 (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) before you commit it",
                out.paint(Style::Green, "pinned"),
                m.name(),
                inv.dir.join("known_hosts").display()
            ),
            Err(e) => {
                failed = true;
                eprintln!("{} {}: {e}", out.paint(Style::Red, "failed"), m.name());
            }
        }
    }
    if failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }
}
