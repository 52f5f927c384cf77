//! `picaops backup init|run|forget|prune|check|snapshots|restore|drill|status|units` from the
//! workstation: the job selection, the SSH executor with its progress display and Ctrl-C, and
//! the one render path (human or JSON) per result type. The work is in `picaops::backup::ops`.

use std::time::Duration;

use clap::Args;
use picaops::backup::ops::{self, Exec, OpError, Report, Snapshots, StatusReport};
use picaops::backup::remote::{self, Answer, Call};
use picaops::backup::render::{self, State, StatusRow};
use picaops::backup::restic::Snapshot;
use picaops::backup::time;
use picaops::backup::units::UnitFile;
use picaops::inventory::Inventory;
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use serde_json::{json, Value};

use super::Global;

/// Which jobs a workstation command acts on.
#[derive(Args, Debug, Clone, Default)]
pub struct JobSelect {
    /// Only this job (a name under `backups:`); repeat for several.
    #[arg(long = "job", value_name = "J")]
    pub jobs: Vec<String>,
    /// Only the jobs whose data is on this host or VM.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
}

/// Loads the inventory, selects the jobs, runs `op` with calls going over SSH, and renders
/// what it returns; the exit code is the result's (or the error's).
pub fn operate<R: Render>(
    select: &JobSelect,
    global: &Global,
    out: &Output,
    op: impl FnOnce(&Inventory, &[String], &mut Exec) -> Result<R, OpError>,
) -> i32 {
    operate_within(select, remote::CONNECT_TIMEOUT, global, out, op)
}

/// [`operate`], giving up on a machine that does not let us in within `connect_timeout`.
pub fn operate_within<R: Render>(
    select: &JobSelect,
    connect_timeout: Duration,
    global: &Global,
    out: &Output,
    op: impl FnOnce(&Inventory, &[String], &mut Exec) -> Result<R, OpError>,
) -> i32 {
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let result = ops::selection(&inv, &select.jobs, select.host.as_deref()).and_then(|names| {
        let mut exec = |calls, timeout| ssh(&inv, calls, timeout, connect_timeout, out);
        op(&inv, &names, &mut exec)
    });
    match result {
        Ok(r) => show(&r, out),
        Err(e) => fail(&e, out),
    }
}

/// Like [`operate`] for what needs no SSH and no `backups:` section (units, `--status-dir`).
pub fn offline<R: Render>(
    select: &JobSelect,
    global: &Global,
    out: &Output,
    op: impl FnOnce(&Inventory, &[String]) -> Result<R, OpError>,
) -> i32 {
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let selected = picaops::backup::config::select_jobs(&inv, &select.jobs, select.host.as_deref());
    let result = selected.map_err(OpError::from).and_then(|jobs| {
        let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
        op(&inv, &names)
    });
    match result {
        Ok(r) => show(&r, out),
        Err(e) => fail(&e, out),
    }
}

/// Runs `calls` over SSH with the progress display.
pub fn ssh(
    inv: &Inventory,
    calls: Vec<Call>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    out: &Output,
) -> Result<Vec<Answer>, OpError> {
    let machines: std::collections::BTreeSet<&str> =
        calls.iter().map(|c| c.machine.as_str()).collect();
    match super::run_with_progress(out, machines.len(), |events| {
        remote::run_calls(inv, calls, timeout, connect_timeout, events)
    }) {
        Ok(Some(answers)) => Ok(answers?),
        Ok(None) => Err(OpError::Interrupted),
        Err(e) => Err(OpError::Runtime(e)),
    }
}

/// Prints why an operation stopped; returns its exit code.
pub fn fail(e: &OpError, out: &Output) -> i32 {
    let style = match e {
        OpError::Interrupted => Style::Yellow,
        _ => Style::Red,
    };
    eprintln!("{}: {e}", out.paint(style, "picaops"));
    e.exit_code()
}

/// How a result prints: `notes` on stderr whatever the format, then JSON or text.
pub trait Render {
    fn notes(&self, _out: &Output) {}
    fn json(&self) -> Value;
    fn human(&self, out: &Output);
    fn exit_code(&self) -> i32 {
        EXIT_OK
    }
}

/// The one output path of every backup command.
pub fn show<R: Render>(r: &R, out: &Output) -> i32 {
    r.notes(out);
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r.json()).unwrap_or_default()
        ),
        Format::Human => r.human(out),
    }
    r.exit_code()
}

impl Render for Report {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn human(&self, out: &Output) {
        let width = self.jobs.iter().map(|l| l.job.len()).max().unwrap_or(0);
        for l in &self.jobs {
            let (mark, style) = if l.ok {
                ("ok  ", Style::Green)
            } else {
                ("FAIL", Style::Red)
            };
            println!(
                "{} {:<width$}  {:<8} {}",
                out.paint(style, mark),
                l.job,
                l.host,
                l.message
            );
        }
        if out.verbosity >= 0 {
            let total = self.jobs.len();
            let summary = format!(
                "{}: {} of {total} ok",
                self.operation,
                total - self.failed()
            );
            let style = if self.ok { Style::Green } else { Style::Red };
            eprintln!("{}", out.paint(style, &summary));
        }
    }
    fn exit_code(&self) -> i32 {
        Report::exit_code(self)
    }
}

impl Render for Snapshots {
    fn notes(&self, out: &Output) {
        for e in &self.skipped {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
        }
        for j in &self.jobs {
            if let Err(e) = &j.snapshots {
                eprintln!("{} {}: {e}", out.paint(Style::Red, "error:"), j.job);
            }
        }
    }
    fn json(&self) -> Value {
        self.to_json()
    }
    fn human(&self, out: &Output) {
        for j in &self.jobs {
            if let Ok(snaps) = &j.snapshots {
                let title = format!("# {} (repository on {})", j.job, j.machine);
                println!("{}", out.paint(Style::Bold, &title));
                print!("{}", render::render_snapshots(snaps));
            }
        }
    }
    fn exit_code(&self) -> i32 {
        Snapshots::exit_code(self)
    }
}

/// `snapshots --from-json`: a listing someone sent.
impl Render for Vec<Snapshot> {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn human(&self, _out: &Output) {
        print!("{}", render::render_snapshots(self));
    }
}

/// Statuses as rows judged once, now (exit 1 when a job is late or failing), and the
/// warnings about sides that did not answer.
pub struct Rows(Vec<StatusRow>, Vec<(String, String)>);

impl From<StatusReport> for Rows {
    fn from(r: StatusReport) -> Rows {
        Rows(
            render::status_rows_seen(&r.statuses, &r.seen, time::now()),
            r.warnings,
        )
    }
}

impl Render for Rows {
    fn notes(&self, out: &Output) {
        for (job, e) in &self.1 {
            eprintln!("{}: {job}: {e}", out.paint(Style::Yellow, "warning"));
        }
    }
    fn json(&self) -> Value {
        json!({ "ok": self.exit_code() == EXIT_OK, "jobs": self.0 })
    }
    fn human(&self, out: &Output) {
        let paint = |state: State, text: &str| match state {
            State::Ok => out.paint(Style::Green, text),
            State::Late => out.paint(Style::Yellow, text),
            State::Failing | State::Unknown => out.paint(Style::Red, text),
        };
        print!("{}", render::render_status(&self.0, &paint));
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
impl Render for Vec<(String, UnitFile)> {
    fn json(&self) -> Value {
        json!(self
            .iter()
            .map(|(m, f)| json!({ "machine": m, "name": f.name, "content": f.content }))
            .collect::<Vec<_>>())
    }
    fn human(&self, out: &Output) {
        for (m, f) in self {
            let title = format!("# {m}: {}", f.name);
            println!("{}\n{}", out.paint(Style::Bold, &title), f.content);
        }
    }
}
