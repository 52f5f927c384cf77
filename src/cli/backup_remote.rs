//! `picaops backup init|run|forget|prune|check|snapshots|restore|drill|status|units` from the
//! workstation: the job selection, the SSH executor with its progress display and Ctrl-C, and
//! the one output path (`picaops::output::show`). The work is in `picaops::backup::ops`, the
//! rendering in `picaops::backup::show`.

use std::time::Duration;

use clap::Args;
use picaops::backup::ops::{self, Exec, OpError};
use picaops::backup::remote::{self, Answer, Call};
use picaops::inventory::Inventory;
use picaops::output::{Output, Shown, Style, EXIT_USAGE};

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
pub fn operate<R: Shown>(
    select: &JobSelect,
    global: &Global,
    out: &Output,
    op: impl FnOnce(&Inventory, &[String], &mut Exec) -> Result<R, OpError>,
) -> i32 {
    operate_within(select, remote::CONNECT_TIMEOUT, global, out, op)
}

/// [`operate`], giving up on a machine that does not let us in within `connect_timeout`.
pub fn operate_within<R: Shown>(
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
pub fn offline<R: Shown>(
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

pub use picaops::output::show;
