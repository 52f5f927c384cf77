//! How the VM phase and `picaops vm list` look: text for people, JSON for scripts.

use std::io::Write;

use serde_json::{json, Value};

use super::engine::{VmOutcome, VmReport};
use super::model::{human_mib, human_uptime, VmSpec};
use super::plan::{Risk, VmAction, VmPlan};
use crate::output::{Output, Style};

fn sign(p: &VmPlan) -> &'static str {
    match p.action {
        VmAction::Create => "+",
        VmAction::Adopt => "&",
        VmAction::Update => "~",
        VmAction::Unchanged => "=",
        VmAction::Delete => "-",
        VmAction::Unmanaged => ".",
    }
}

/// One line saying what a new VM will be.
fn describe_spec(spec: &VmSpec) -> String {
    let disks: Vec<String> = spec
        .disks
        .iter()
        .map(|d| {
            format!(
                "{}{}",
                crate::human::bytes(d.size_bytes),
                d.pool
                    .as_ref()
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let mut parts = vec![
        format!("{} vCPU", spec.vcpus.unwrap_or(0)),
        spec.memory_mib.map(human_mib).unwrap_or_default(),
        format!("disks {}", disks.join(" + ")),
    ];
    if let Some(image) = &spec.image {
        parts.push(format!("from {image}"));
    }
    if let Some(a) = spec.network.as_ref().and_then(|n| n.address.as_ref()) {
        parts.push(format!("at {a}"));
    }
    parts.join(", ")
}

/// The changes of a plan, `what from → to`, the ones not applied marked.
pub fn describe_changes(p: &VmPlan) -> Vec<String> {
    p.changes
        .iter()
        .map(|c| {
            let base = format!("{} {} → {}", c.kind.label(), c.from, c.to);
            match &c.not_applied {
                Some(why) => format!("{base} (not applied: {why})"),
                None if c.risk >= Risk::InPlace => format!("{base} [{}]", c.risk.label()),
                None => base,
            }
        })
        .collect()
}

fn headline(p: &VmPlan) -> String {
    match p.action {
        VmAction::Create => format!(
            "create: {}",
            p.spec.as_ref().map(describe_spec).unwrap_or_default()
        ),
        VmAction::Adopt => {
            "adopt: found, made by hand; recorded as managed, nothing else changed".into()
        }
        VmAction::Update => format!("update ({})", p.risk.label()),
        VmAction::Unchanged => "unchanged".into(),
        VmAction::Delete => "delete with its disks (DESTROYS DATA)".into(),
        VmAction::Unmanaged => "not in the inventory, not created by picaops: left alone".into(),
    }
}

/// The VM part of a plan or apply, before the hosts' converge report.
pub fn render_human(report: &VmReport, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
    if report.hosts.is_empty() && report.errors.is_empty() {
        return Ok(());
    }
    let shown = |v: &VmOutcome| {
        out.verbosity > 0 || !(v.plan.action == VmAction::Unchanged && v.plan.changes.is_empty())
    };
    let vms = report.outcomes().count();
    let quiet_hosts = report
        .hosts
        .iter()
        .filter(|h| h.error.is_none() && !h.vms.iter().any(shown))
        .count();
    if report.errors.is_empty() && quiet_hosts == report.hosts.len() {
        writeln!(
            w,
            "{} nothing to change ({vms} VM{} on {} hypervisor{})",
            out.paint(Style::Bold, "VMs:"),
            if vms == 1 { "" } else { "s" },
            report.hosts.len(),
            if report.hosts.len() == 1 { "" } else { "s" }
        )?;
        return Ok(());
    }
    writeln!(w, "{}", out.paint(Style::Bold, "VMs"))?;
    for e in &report.errors {
        writeln!(w, "  {} {e}", out.paint(Style::Red, "error:"))?;
    }
    for h in &report.hosts {
        if h.error.is_none() && !h.vms.iter().any(shown) {
            continue;
        }
        writeln!(w, "  {} ({})", out.paint(Style::Bold, &h.host), h.driver)?;
        if let Some(e) = &h.error {
            writeln!(w, "    {} {e}", out.paint(Style::Red, "FAILED:"))?;
        }
        for v in h.vms.iter().filter(|v| shown(v)) {
            render_vm(v, out, w)?;
        }
    }
    Ok(())
}

fn render_vm(v: &VmOutcome, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
    let p = &v.plan;
    let style = match p.action {
        VmAction::Create => Style::Green,
        VmAction::Delete => Style::Red,
        VmAction::Update if p.risk >= Risk::Reboot => Style::Yellow,
        VmAction::Update | VmAction::Adopt => Style::Cyan,
        _ => Style::Dim,
    };
    writeln!(
        w,
        "    {} {:<16} {}",
        out.paint(style, sign(p)),
        p.name,
        headline(p)
    )?;
    for c in describe_changes(p) {
        writeln!(w, "        {c}")?;
    }
    if let Some(why) = &p.refused {
        writeln!(w, "        {} {why}", out.paint(Style::Yellow, "refused:"))?;
    }
    match v.status {
        Some("done") if p.acts() => {
            let mut s = String::from("done");
            if let Some(k) = &v.host_key {
                s.push_str(&format!(
                    "; host key pinned ({})",
                    crate::inventory::fingerprint(k)
                ));
            }
            if let Some(ms) = v.ssh_ready_ms {
                s.push_str(&format!("; SSH answered after {:.1} s", ms as f64 / 1000.0));
            }
            writeln!(w, "        {}", out.paint(Style::Green, &s))?;
        }
        Some("failed") => writeln!(
            w,
            "        {} {}",
            out.paint(Style::Red, "FAILED:"),
            v.error.as_deref().unwrap_or("")
        )?,
        Some("not run") => writeln!(
            w,
            "        {}",
            out.paint(Style::Dim, "not run (an earlier step on this host failed)")
        )?,
        _ => {}
    }
    Ok(())
}

/// The VM report as JSON (`vms` in plan/apply's document).
pub fn render_json(report: &VmReport) -> Value {
    serde_json::to_value(report).unwrap_or(Value::Null)
}

/// One row of `picaops vm list`.
#[derive(Debug, serde::Serialize)]
pub struct ListRow {
    pub vm: String,
    pub host: String,
    /// `running`, `shut off`, … or `absent` (declared, not there).
    pub state: String,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disks: Vec<u64>,
    pub uptime_secs: Option<u64>,
    pub managed: bool,
    /// Declared in the inventory.
    pub declared: bool,
    /// Differences from the inventory (empty: none).
    pub drift: Vec<String>,
}

pub fn list_rows(report: &VmReport) -> Vec<ListRow> {
    let mut rows = Vec::new();
    for h in &report.hosts {
        for v in &h.vms {
            let p = &v.plan;
            let s = p.state.as_ref();
            let mut drift = describe_changes(p);
            match p.action {
                VmAction::Create => drift = vec!["declared, absent: apply creates it".into()],
                VmAction::Delete => {
                    drift = vec!["managed by picaops, no longer declared: apply deletes it only with --allow-destroy".into()]
                }
                VmAction::Unmanaged => drift = vec!["not in the inventory".into()],
                VmAction::Adopt => drift.insert(0, "made by hand: apply adopts it".into()),
                _ => {}
            }
            rows.push(ListRow {
                vm: p.name.clone(),
                host: h.host.clone(),
                state: s
                    .map(|s| s.power.label().to_string())
                    .unwrap_or_else(|| "absent".into()),
                vcpus: s.map(|s| s.vcpus),
                memory_mib: s.map(|s| s.memory_mib),
                disks: s
                    .map(|s| s.disks.iter().filter_map(|d| d.size_bytes).collect())
                    .unwrap_or_default(),
                uptime_secs: s.and_then(|s| s.uptime_secs),
                managed: s.is_some_and(|s| s.managed),
                declared: p.spec.is_some(),
                drift,
            });
        }
    }
    rows
}

pub fn render_list(rows: &[ListRow], out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        w,
        "{}",
        out.paint(
            Style::Bold,
            &format!(
                "{:<16} {:<10} {:<9} {:>5} {:>9}  {:<18} {:>8}  drift",
                "VM", "HOST", "STATE", "VCPUS", "MEMORY", "DISKS", "UPTIME"
            )
        )
    )?;
    for r in rows {
        let disks: Vec<String> = r.disks.iter().map(|d| crate::human::bytes(*d)).collect();
        let drift = if r.drift.is_empty() {
            "-".to_string()
        } else {
            r.drift.join("; ")
        };
        let state = match r.state.as_str() {
            "running" => out.paint(Style::Green, &format!("{:<9}", r.state)),
            "absent" => out.paint(Style::Yellow, &format!("{:<9}", r.state)),
            _ => format!("{:<9}", r.state),
        };
        writeln!(
            w,
            "{:<16} {:<10} {} {:>5} {:>9}  {:<18} {:>8}  {}",
            r.vm,
            r.host,
            state,
            r.vcpus.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            r.memory_mib.map(human_mib).unwrap_or_else(|| "-".into()),
            if disks.is_empty() {
                "-".to_string()
            } else {
                disks.join(" + ")
            },
            r.uptime_secs
                .map(human_uptime)
                .unwrap_or_else(|| "-".into()),
            drift
        )?;
    }
    Ok(())
}

pub fn list_json(rows: &[ListRow], report: &VmReport) -> Value {
    json!({
        "vms": rows,
        "errors": report.errors,
        "hosts": report.hosts.iter().map(|h| json!({"host": h.host, "driver": h.driver, "error": h.error})).collect::<Vec<_>>(),
    })
}
