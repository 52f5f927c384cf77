//! Showing a plan or an apply: per host, per step, what changes (with a unified diff of file
//! contents), then a summary table; or the same as one JSON document.
//!
//! Secrets never reach the output: steps marked `no_log` show no content, and every value of a
//! variable whose name says it is secret (password, token, secret, private key…) is replaced by
//! `(secret)` wherever it would appear in a diff or a message.

use std::io::Write;

use serde_json::{json, Value};
use similar::{ChangeTag, TextDiff};

use super::{HostReport, Mode, Report, StepReport};
use crate::modules::Action;
use crate::output::{Output, Style};

/// Does a variable's name say its value is a secret?
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "private_key",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Replaces every secret value in `text`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 3 && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "(secret)");
        }
    }
    out
}

fn symbol(a: Action) -> (&'static str, Style) {
    match a {
        Action::Create => ("+", Style::Green),
        Action::Update => ("~", Style::Yellow),
        Action::Delete => ("-", Style::Red),
        Action::Run => (">", Style::Yellow),
        Action::Unknown => ("?", Style::Yellow),
        Action::Skip => ("·", Style::Dim),
        Action::Unchanged => ("=", Style::Dim),
    }
}

/// The unified diff of a step's content, redacted; `None` when there is nothing to show.
pub fn content_diff(step: &StepReport, secrets: &[String]) -> Option<String> {
    let c = step.content.as_ref()?;
    if step.no_log {
        return Some(format!("(content of {} hidden: no_log)\n", c.path));
    }
    let new = match std::str::from_utf8(&c.new) {
        Ok(t) => t,
        Err(_) => return Some(format!("(binary content, {} bytes)\n", c.new.len())),
    };
    let old = match &c.old {
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(t) => t.to_string(),
            Err(_) => {
                return Some(format!(
                    "(binary content replaced, {} → {} bytes)\n",
                    bytes.len(),
                    c.new.len()
                ))
            }
        },
        None if step.action == Action::Update => {
            return Some("(the current content is larger than 256 KiB: not shown)\n".into())
        }
        None => String::new(),
    };
    let diff = TextDiff::from_lines(old.as_str(), new);
    let mut text = String::new();
    let label_old = if c.old.is_some() {
        c.path.clone()
    } else {
        "/dev/null".into()
    };
    text.push_str(&format!("--- {label_old}\n+++ {} (planned)\n", c.path));
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        text.push_str(&format!("{}\n", hunk.header()));
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            let line = change.value();
            text.push(sign);
            text.push_str(line);
            if !line.ends_with('\n') {
                text.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    Some(redact(&text, secrets))
}

/// A unified diff, coloured and indented for the plan (shared with the services' report).
pub fn paint_diff(out: &Output, diff: &str) -> String {
    diff.lines()
        .map(|l| {
            let style = if l.starts_with("+++") || l.starts_with("---") {
                Style::Bold
            } else if l.starts_with('+') {
                Style::Green
            } else if l.starts_with('-') {
                Style::Red
            } else if l.starts_with("@@") {
                Style::Dim
            } else {
                return format!("      {l}\n");
            };
            format!("      {}\n", out.paint(style, l))
        })
        .collect()
}

fn step_title(s: &StepReport) -> String {
    let mut t = s.task.clone();
    if let Some(i) = &s.item {
        if !t.contains(i.as_str()) {
            t.push_str(&format!(" ({i})"));
        }
    }
    if s.handler {
        t.push_str(" [handler]");
    }
    t
}

/// Human output: changed steps per host (all steps with -v), diffs, failures, summary table.
pub fn render_human(
    report: &Report,
    out: &Output,
    secrets: &[String],
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let verbose = out.verbosity > 0;
    for host in &report.hosts {
        let changes = host.changes();
        let unknown = host.count(Action::Unknown);
        let head = match (&host.error, report.mode) {
            (Some(_), _) => out.paint(Style::Red, "FAILED"),
            (None, Mode::Plan) if changes == 0 && unknown == 0 => {
                out.paint(Style::Dim, "no changes")
            }
            (None, Mode::Plan) => format!(
                "{changes} to change{}",
                if unknown > 0 {
                    format!(", {unknown} unknown until apply")
                } else {
                    String::new()
                }
            ),
            (None, Mode::Apply) if changes == 0 => out.paint(Style::Dim, "no changes"),
            (None, Mode::Apply) => format!("{changes} changed"),
        };
        writeln!(w, "{} {head}", out.paint(Style::Bold, &host.name))?;
        for s in &host.steps {
            let show = s.action.changes()
                || s.action == Action::Unknown
                || s.status == Some("failed")
                || verbose;
            if !show {
                continue;
            }
            let (sym, style) = symbol(s.action);
            let mut line = format!(
                "  {} {:<9} {}",
                out.paint(style, sym),
                out.paint(style, s.action.word()),
                s.resource
            );
            line.push_str(&format!("  {}", out.paint(Style::Dim, &step_title(s))));
            if !s.details.is_empty() {
                line.push_str(&format!(": {}", redact(&s.details.join(", "), secrets)));
            }
            if let Some(status) = s.status {
                if status != "done" {
                    line.push_str(&format!(
                        " [{}]",
                        out.paint(
                            if status == "failed" {
                                Style::Red
                            } else {
                                Style::Yellow
                            },
                            status
                        )
                    ));
                }
            }
            writeln!(w, "{line}")?;
            if let Some(e) = &s.error {
                for l in redact(e, secrets).lines() {
                    writeln!(w, "      {}", out.paint(Style::Red, l))?;
                }
            }
            if report.mode == Mode::Plan || verbose {
                if let Some(d) = content_diff(s, secrets) {
                    w.write_all(paint_diff(out, &d).as_bytes())?;
                }
            }
        }
        for warning in &host.warnings {
            writeln!(
                w,
                "  {} {}",
                out.paint(Style::Yellow, "warning:"),
                redact(warning, secrets)
            )?;
        }
        if let Some(e) = &host.error {
            writeln!(
                w,
                "  {} {}",
                out.paint(Style::Red, "error:"),
                redact(e, secrets)
            )?;
        }
    }
    writeln!(w)?;
    render_summary(report, out, w)
}

fn render_summary(report: &Report, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
    let width = report
        .hosts
        .iter()
        .map(|h| h.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let changed_head = if report.mode == Mode::Plan {
        "TO CHANGE"
    } else {
        "CHANGED"
    };
    writeln!(
        w,
        "{}",
        out.paint(
            Style::Bold,
            &format!(
                "{:<width$}  {:<7} {:>9} {:>9} {:>7} {:>7} {:>7}",
                "HOST", "RESULT", changed_head, "UNCHANGED", "SKIPPED", "UNKNOWN", "TIME"
            )
        )
    )?;
    for h in &report.hosts {
        let result = if h.error.is_some() {
            out.paint(Style::Red, "failed ")
        } else {
            out.paint(Style::Green, "ok     ")
        };
        writeln!(
            w,
            "{:<width$}  {} {:>9} {:>9} {:>7} {:>7} {:>6.2}s",
            h.name,
            result,
            h.changes(),
            h.count(Action::Unchanged),
            h.count(Action::Skip),
            h.count(Action::Unknown),
            h.duration_ms as f64 / 1000.0
        )?;
    }
    let failed = report.failed().count();
    let total = report.changes();
    let verb = if report.mode == Mode::Plan {
        "to change"
    } else {
        "changed"
    };
    writeln!(
        w,
        "{} host(s), {total} {verb}{}",
        report.hosts.len(),
        if failed > 0 {
            format!(", {}", out.paint(Style::Red, &format!("{failed} failed")))
        } else {
            String::new()
        }
    )
}

/// The whole report as one JSON document.
pub fn render_json(report: &Report, secrets: &[String]) -> Value {
    let hosts: Vec<Value> = report.hosts.iter().map(|h| host_json(h, secrets)).collect();
    json!({
        "mode": report.mode,
        "ok": report.failed().count() == 0,
        "changes": report.changes(),
        "hosts": hosts,
    })
}

fn host_json(h: &HostReport, secrets: &[String]) -> Value {
    let steps: Vec<Value> = h
        .steps
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Some(d) = content_diff(s, secrets) {
                v["diff"] = Value::String(d);
            }
            if let Some(e) = &s.error {
                v["error"] = Value::String(redact(e, secrets));
            }
            v["details"] = json!(s
                .details
                .iter()
                .map(|d| redact(d, secrets))
                .collect::<Vec<_>>());
            v
        })
        .collect();
    json!({
        "name": h.name,
        "ok": h.error.is_none(),
        "error": h.error.as_ref().map(|e| redact(e, secrets)),
        "warnings": h.warnings,
        "changed": h.changes(),
        "unchanged": h.count(Action::Unchanged),
        "skipped": h.count(Action::Skip),
        "unknown": h.count(Action::Unknown),
        "round_trips": h.round_trips,
        "duration_ms": h.duration_ms,
        "steps": steps,
    })
}
