//! `picaops inventory show`: the machines at a glance, and one machine's settings with every
//! variable, its value and where it came from (scope and file:line:column).

use std::fmt::Write as _;

use super::{is_pinned, vars, Inventory, Machine};
use crate::output::{Output, Style};

/// One line per machine: name, kind, site, address, groups.
pub fn machines(inv: &Inventory) -> String {
    let mut out = String::new();
    for m in inv.machines() {
        let site = inv.site_of(m).map(|s| s.name.as_str()).unwrap_or("?");
        let _ = writeln!(
            out,
            "{:<14} {:<4} {:<10} {:<28} groups: {}",
            m.name(),
            m.kind(),
            site,
            m.ssh().address.as_deref().unwrap_or("-"),
            list(m.groups())
        );
    }
    out
}

fn list(groups: &[super::Located<String>]) -> String {
    if groups.is_empty() {
        "-".into()
    } else {
        let names: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
        names.join(", ")
    }
}

/// One machine for scripts: kind, site, its declaration and its resolved variables.
pub fn machine_json(inv: &Inventory, m: Machine<'_>) -> serde_json::Value {
    let detail = match m {
        Machine::Host(h) => serde_json::to_value(h),
        Machine::Vm(v) => serde_json::to_value(v),
    }
    .unwrap_or_default();
    serde_json::json!({
        "kind": m.kind(),
        "site": inv.site_of(m).map(|s| s.name.clone()),
        "machine": detail,
        "vars": vars::resolve(inv, m),
    })
}

/// One machine for people: how it is reached, whether its key is pinned, its groups, and each
/// variable with the scope and place it came from.
pub fn machine(inv: &Inventory, m: Machine<'_>, style: &Output) -> String {
    let mut out = String::new();
    let ssh = m.ssh();
    let site = inv.site_of(m).map(|s| s.name.as_str()).unwrap_or("?");
    let _ = writeln!(
        out,
        "{} {}  ({site}, declared at {})",
        m.kind(),
        style.paint(Style::Bold, m.name()),
        m.place()
    );
    if let Machine::Vm(v) = m {
        let _ = writeln!(out, "  runs on:   {}", v.host);
    }
    let _ = writeln!(
        out,
        "  address:   {}",
        ssh.address.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(
        out,
        "  ssh:       {}{}{}",
        ssh.user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default(),
        ssh.address.as_deref().unwrap_or("?"),
        ssh.port.map(|p| format!(":{p}")).unwrap_or_default()
    );
    if ssh.become_root {
        let _ = writeln!(out, "  become:    sudo -n");
    }
    let key = match &ssh.host_key {
        Some(k) => format!(
            "pinned in the inventory ({})",
            k.split_whitespace().next().unwrap_or("?")
        ),
        None if is_pinned(inv, m) => "pinned in known_hosts".into(),
        None => "NOT PINNED (picaops will refuse to connect)".into(),
    };
    let _ = writeln!(out, "  host key:  {key}");
    if let Machine::Host(h) = m {
        let _ = writeln!(out, "  hypervisor: {:?}", h.hypervisor);
    }
    let _ = writeln!(out, "  groups:    {}", list(m.groups()));
    let _ = writeln!(
        out,
        "  variables (lowest precedence first: inventory < site < groups < machine):"
    );
    let resolved = vars::resolve(inv, m);
    if resolved.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for (name, var) in &resolved {
        let _ = writeln!(
            out,
            "    {name} = {}  {}",
            serde_json::to_string(&var.value).unwrap_or_default(),
            style.paint(Style::Dim, &format!("from {} at {}", var.scope, var.place))
        );
    }
    out
}
