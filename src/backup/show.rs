//! How the workstation's backup results print (JSON for scripts, text for people, notes on
//! stderr) and the exit code each stands for: one [`Shown`] per result type.

use std::io::Write;

use serde_json::{json, Value};

use super::ops::{Report, Snapshots, StatusReport};
use super::render::{self, State, StatusRow};
use super::restic::Snapshot;
use super::units::UnitFile;
use crate::output::{Output, Shown, Style, EXIT_HOST_FAILED, EXIT_OK};

impl Shown for Report {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let width = self.jobs.iter().map(|l| l.job.len()).max().unwrap_or(0);
        for l in &self.jobs {
            let (mark, style) = if l.ok {
                ("ok  ", Style::Green)
            } else {
                ("FAIL", Style::Red)
            };
            writeln!(
                w,
                "{} {:<width$}  {:<8} {}",
                out.paint(style, mark),
                l.job,
                l.host,
                l.message
            )?;
        }
        Ok(())
    }
    fn footer(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        if out.verbosity < 0 {
            return Ok(());
        }
        let total = self.jobs.len();
        let summary = format!(
            "{}: {} of {total} ok",
            self.operation,
            total - self.failed()
        );
        let style = if self.ok { Style::Green } else { Style::Red };
        writeln!(w, "{}", out.paint(style, &summary))
    }
    fn exit_code(&self) -> i32 {
        Report::exit_code(self)
    }
}

impl Shown for Snapshots {
    fn notes(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for e in &self.skipped {
            writeln!(w, "{}: {e}", out.paint(Style::Red, "picaops"))?;
        }
        for j in &self.jobs {
            if let Err(e) = &j.snapshots {
                writeln!(w, "{} {}: {e}", out.paint(Style::Red, "error:"), j.job)?;
            }
        }
        Ok(())
    }
    fn json(&self) -> Value {
        self.to_json()
    }
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for j in &self.jobs {
            if let Ok(snaps) = &j.snapshots {
                let title = format!("# {} (repository on {})", j.job, j.machine);
                writeln!(w, "{}", out.paint(Style::Bold, &title))?;
                write!(w, "{}", render::render_snapshots(snaps))?;
            }
        }
        Ok(())
    }
    fn exit_code(&self) -> i32 {
        Snapshots::exit_code(self)
    }
}

/// `snapshots --from-json`: a listing someone sent.
pub struct Listing(pub Vec<Snapshot>);

impl Shown for Listing {
    fn json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
    fn human(&self, _out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        write!(w, "{}", render::render_snapshots(&self.0))
    }
}

/// Statuses as rows judged once, now (exit 1 when a job is late or failing), and the
/// warnings about sides that did not answer.
pub struct Rows(pub Vec<StatusRow>, pub Vec<(String, String)>);

impl From<StatusReport> for Rows {
    fn from(r: StatusReport) -> Rows {
        Rows(
            render::status_rows_seen(&r.statuses, &r.seen, super::time::now()),
            r.warnings,
        )
    }
}

impl Shown for Rows {
    fn notes(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for (job, e) in &self.1 {
            writeln!(w, "{}: {job}: {e}", out.paint(Style::Yellow, "warning"))?;
        }
        Ok(())
    }
    fn json(&self) -> Value {
        json!({ "ok": self.exit_code() == EXIT_OK, "jobs": self.0 })
    }
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let paint = |state: State, text: &str| match state {
            State::Ok => out.paint(Style::Green, text),
            State::Late => out.paint(Style::Yellow, text),
            State::Failing | State::Unknown => out.paint(Style::Red, text),
        };
        write!(w, "{}", render::render_status(&self.0, &paint))
    }
    fn exit_code(&self) -> i32 {
        if self.0.iter().all(|r| r.state == State::Ok) {
            EXIT_OK
        } else {
            EXIT_HOST_FAILED
        }
    }
}

/// `units`: (machine, unit file).
pub struct Units(pub Vec<(String, UnitFile)>);

impl Shown for Units {
    fn json(&self) -> Value {
        json!(self
            .0
            .iter()
            .map(|(m, f)| json!({ "machine": m, "name": f.name, "content": f.content }))
            .collect::<Vec<_>>())
    }
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for (m, f) in &self.0 {
            let title = format!("# {m}: {}", f.name);
            writeln!(w, "{}\n{}", out.paint(Style::Bold, &title), f.content)?;
        }
        Ok(())
    }
}
