//! Showing a services plan or apply (per machine, per service: the change, the diff of the
//! Compose file and environment, secrets changed by name only, containers created, recreated or
//! removed, and for apply the outcome with the last log lines of a failure), and `service list`.
//!
//! Every text leaving here goes through `redact` with every secret value known to the run.

use std::io::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::deploy::Report;
use super::plan::{Action, FileDiff, ServiceChange};
use crate::converge::report::redact;
use crate::converge::Mode;
use crate::output::{Output, Style};

fn symbol(c: &ServiceChange) -> (&'static str, Style, &'static str) {
    match c.action {
        Action::Create => ("+", Style::Green, "create"),
        Action::Update => ("~", Style::Yellow, "update"),
        Action::Start => (">", Style::Yellow, "start"),
        Action::Unchanged => ("=", Style::Dim, "unchanged"),
        Action::Remove if c.held_back => (
            "-",
            Style::Red,
            "remove (held back: only with --prune-services)",
        ),
        Action::Remove => ("-", Style::Red, "remove (down; data and volumes kept)"),
    }
}

/// A unified diff of one file.
pub fn file_diff(d: &FileDiff) -> String {
    let old = d.old.as_deref().unwrap_or("");
    let new = d.new.as_deref().unwrap_or("");
    let mut text = format!(
        "--- {}\n+++ {} (planned)\n",
        if d.old.is_some() {
            format!("{} (deployed)", d.path)
        } else {
            "/dev/null".into()
        },
        d.path
    );
    for hunk in TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .iter_hunks()
    {
        text.push_str(&format!("{}\n", hunk.header()));
        for change in hunk.iter_changes() {
            text.push(match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            });
            text.push_str(change.value());
            if !change.value().ends_with('\n') {
                text.push('\n');
            }
        }
    }
    text
}

fn short(fp: &Option<String>) -> &str {
    fp.as_deref().map(|f| &f[..12.min(f.len())]).unwrap_or("-")
}

/// The human form of a run.
pub fn render_human(
    report: &Report,
    out: &Output,
    secrets: &[String],
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let mut text = String::new();
    for m in &report.machines {
        if let Some(e) = &m.error {
            text.push_str(&format!(
                "{} {}: {}\n",
                out.paint(Style::Red, "✗"),
                m.machine,
                e
            ));
        }
        for c in &m.changes {
            if c.action == Action::Unchanged && out.verbosity < 1 && c.status.is_none() {
                continue;
            }
            let (sym, style, what) = symbol(c);
            let fp = match c.action {
                Action::Update => format!(
                    " [{} → {}]",
                    short(&c.deployed_fingerprint),
                    short(&c.fingerprint)
                ),
                Action::Create => format!(" [{}]", short(&c.fingerprint)),
                _ => String::new(),
            };
            text.push_str(&format!(
                "{} service {} on {}: {}{}\n",
                out.paint(style, sym),
                out.paint(Style::Bold, &c.service),
                c.machine,
                what,
                out.paint(Style::Dim, &fp)
            ));
            for d in &c.diffs {
                text.push_str(&crate::converge::report::paint_diff(out, &file_diff(d)));
            }
            if !c.secrets_changed.is_empty() {
                text.push_str(&format!(
                    "    secrets.env: {} (values not shown)\n",
                    c.secrets_changed.join(", ")
                ));
            }
            if !c.secret_files_changed.is_empty() {
                text.push_str(&format!(
                    "    secret files: {} (contents not shown)\n",
                    c.secret_files_changed.join(", ")
                ));
            }
            for ctr in &c.containers {
                text.push_str(&format!(
                    "    container {}: {} ({})\n",
                    ctr.container, ctr.action, ctr.why
                ));
            }
            if let Some(status) = &c.status {
                let style = match status.as_str() {
                    "done" => Style::Green,
                    "rolled back" => Style::Yellow,
                    _ => Style::Red,
                };
                let version = c
                    .compose_version
                    .as_deref()
                    .map(|v| format!(" (Compose {v})"))
                    .unwrap_or_default();
                text.push_str(&format!("    → {}{version}\n", out.paint(style, status)));
            }
            if let Some(e) = &c.error {
                text.push_str(&format!("    {}\n", out.paint(Style::Red, e)));
            }
            if !c.logs.is_empty() {
                text.push_str("    last log lines:\n");
                for l in &c.logs {
                    text.push_str(&format!("      {l}\n"));
                }
            }
        }
    }
    let count = |a: Action| report.changes().filter(|c| c.action == a).count();
    let held = report
        .changes()
        .filter(|c| c.action == Action::Remove && c.held_back)
        .count();
    text.push_str(&format!(
        "services: {} to create, {} to update, {} to start, {} unchanged, {} to remove{}",
        count(Action::Create),
        count(Action::Update),
        count(Action::Start),
        count(Action::Unchanged),
        count(Action::Remove),
        if held > 0 {
            format!(" ({held} held back: add --prune-services)")
        } else {
            String::new()
        }
    ));
    if report.mode == Mode::Apply {
        let failed = report.failures();
        text.push_str(&format!(
            "; {}",
            if failed == 0 {
                out.paint(Style::Green, "no failure")
            } else {
                out.paint(Style::Red, &format!("{failed} failed"))
            }
        ));
    }
    text.push('\n');
    w.write_all(redact(&text, secrets).as_bytes())
}

/// The JSON form of a run, every string redacted.
pub fn render_json(report: &Report, secrets: &[String]) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    redact_json(&mut v, secrets);
    v
}

/// Redacts every string inside a JSON value.
pub fn redact_json(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => *s = redact(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|i| redact_json(i, secrets)),
        Value::Object(map) => map.values_mut().for_each(|i| redact_json(i, secrets)),
        _ => {}
    }
}
