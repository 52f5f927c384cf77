//! `picaops backup init|run|forget|prune|check|snapshots|restore|drill|status` from the
//! workstation: each builds the host-side calls (`picaops::backup::remote`), runs them over SSH
//! with a progress display, and prints one line (or one JSON record) per job.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use picaops::backup::config::data_host;
use picaops::backup::remote::{self, Answer, Call, HostDoc, Side};
use picaops::backup::render::{self, State};
use picaops::backup::{time, BackupJob, JobStatus};
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

/// The inventory's jobs matching `select`; an unknown name is printed (exit 2).
pub fn select_jobs<'a>(
    inv: &'a picaops::inventory::Inventory,
    select: &JobSelect,
    out: &Output,
) -> Result<Vec<&'a picaops::backup::BackupJob>, i32> {
    picaops::backup::config::select_jobs(inv, &select.jobs, select.host.as_deref()).map_err(|e| {
        eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
        EXIT_USAGE
    })
}

/// One job's outcome, as printed.
struct Line {
    job: String,
    machine: String,
    ok: bool,
    text: String,
    data: Value,
}

/// Loads the inventory and checks the selection once (`Err`: exit code, message printed); the
/// names of the selected jobs come back with it.
fn load(
    global: &Global,
    select: &JobSelect,
    out: &Output,
) -> Result<(Inventory, Vec<String>), i32> {
    let inv = super::inventory::load(global, out).ok_or(EXIT_USAGE)?;
    let names = select_jobs(&inv, select, out)?
        .iter()
        .map(|j| j.name.clone())
        .collect();
    if inv.backups.is_empty() {
        eprintln!(
            "{}: the inventory has no `backups:` section; see inventory/backups.yml for Picasoft's jobs",
            out.paint(Style::Red, "picaops")
        );
        return Err(EXIT_USAGE);
    }
    Ok((inv, names))
}

fn jobs<'a>(inv: &'a Inventory, names: &[String]) -> Vec<&'a BackupJob> {
    names.iter().filter_map(|n| inv.backups.get(n)).collect()
}

/// Runs `calls` with the progress display; `Err` when nothing could run (message printed).
fn execute(
    inv: &Inventory,
    calls: Vec<Call>,
    timeout: Option<Duration>,
    out: &Output,
) -> Result<Vec<Answer>, i32> {
    let machines: std::collections::BTreeSet<&str> =
        calls.iter().map(|c| c.machine.as_str()).collect();
    let result = super::run_with_progress(out, machines.len(), |events| {
        remote::run_calls(inv, calls, timeout, events)
    });
    match result {
        Ok(Some(Ok(answers))) => Ok(answers),
        Ok(None) => {
            eprintln!(
                "{}: interrupted; runs already started on the hosts go on under systemd",
                out.paint(Style::Yellow, "picaops")
            );
            Err(130)
        }
        Ok(Some(Err(e))) | Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            Err(EXIT_HOST_FAILED)
        }
    }
}

/// The host-side documents of one answer (host-forget prints one per job, then one for prune).
fn documents(a: &Answer) -> Result<Vec<HostDoc>, String> {
    let text = match &a.result {
        Ok(o) => o.stdout_lossy(),
        Err(e) => return Err(e.message.clone()),
    };
    let docs: Result<Vec<HostDoc>, _> = serde_json::Deserializer::from_str(&text)
        .into_iter::<HostDoc>()
        .collect();
    match docs {
        Ok(d) if !d.is_empty() => Ok(d),
        _ => a.document::<HostDoc>().map(|d| vec![d]),
    }
}

/// Prints the lines, then a summary; returns the exit code.
fn finish(what: &str, lines: Vec<Line>, out: &Output) -> i32 {
    let failed = lines.iter().filter(|l| !l.ok).count();
    match out.format {
        Format::Json => {
            let doc = json!({
                "operation": what,
                "ok": failed == 0,
                "jobs": lines.iter().map(|l| json!({
                    "job": l.job, "host": l.machine, "ok": l.ok, "message": l.text, "result": l.data,
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => {
            let width = lines.iter().map(|l| l.job.len()).max().unwrap_or(0);
            for l in &lines {
                let (mark, style) = if l.ok {
                    ("ok  ", Style::Green)
                } else {
                    ("FAIL", Style::Red)
                };
                println!(
                    "{} {:<width$}  {:<8} {}",
                    out.paint(style, mark),
                    l.job,
                    l.machine,
                    l.text
                );
            }
            if out.verbosity >= 0 {
                let total = lines.len();
                let summary = format!("{what}: {} of {total} ok", total - failed);
                eprintln!(
                    "{}",
                    out.paint(
                        if failed == 0 {
                            Style::Green
                        } else {
                            Style::Red
                        },
                        &summary
                    )
                );
            }
        }
    }
    if failed == 0 {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }
}

/// A line from a host-side report document (`ok`/`error`), `describe` rendering its result.
fn doc_line(a: &Answer, describe: impl Fn(&Value) -> String) -> Line {
    let (ok, text, data) = match documents(a) {
        Ok(docs) => {
            let bad: Vec<&HostDoc> = docs.iter().filter(|d| !d.ok).collect();
            let data = json!(docs
                .iter()
                .map(|d| d.result.clone().unwrap_or(Value::Null))
                .collect::<Vec<_>>());
            if bad.is_empty() {
                let texts: Vec<String> = docs
                    .iter()
                    .map(|d| describe(d.result.as_ref().unwrap_or(&Value::Null)))
                    .collect();
                (true, texts.join("; "), data)
            } else {
                let errors: Vec<String> = bad
                    .iter()
                    .map(|d| d.error.clone().unwrap_or_else(|| "failed".into()))
                    .collect();
                (false, errors.join("; "), data)
            }
        }
        Err(e) => (false, e, Value::Null),
    };
    Line {
        job: a.call.job.clone(),
        machine: a.call.machine.clone(),
        ok,
        text,
        data,
    }
}

// -------------------------------------------------------------------------------------------

pub fn init(select: &JobSelect, global: &Global, out: &Output) -> i32 {
    let (inv, names) = match load(global, select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut lines = Vec::new();
    // 1. Keys of the data hosts sending over SFTP (made once, on the host).
    let answers = match execute(
        &inv,
        remote::key_calls(&inv),
        Some(Duration::from_secs(60)),
        out,
    ) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let mut keys = BTreeMap::new();
    for a in &answers {
        let key = a
            .result
            .as_ref()
            .ok()
            .filter(|o| o.success())
            .and_then(|o| {
                o.stdout_lossy()
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("ssh-"))
                    .map(String::from)
            });
        match key {
            Some(k) => {
                keys.insert(a.call.machine.clone(), k);
            }
            None => lines.push(Line {
                job: "(ssh key)".into(),
                machine: a.call.machine.clone(),
                ok: false,
                text: failure_text(a, "could not create or read /etc/picaops/backup/id_ed25519"),
                data: Value::Null,
            }),
        }
    }
    // 2. The repository hosts authorize them (SFTP only).
    let answers = match execute(
        &inv,
        remote::authorize_calls(&inv, &keys),
        Some(Duration::from_secs(60)),
        out,
    ) {
        Ok(a) => a,
        Err(c) => return c,
    };
    for a in &answers {
        let ok = a.result.as_ref().is_ok_and(|o| o.success());
        lines.push(Line {
            job: "(sftp account)".into(),
            machine: a.call.machine.clone(),
            ok,
            text: if ok {
                "authorized_keys of picaops-restic written (SFTP only)".into()
            } else {
                failure_text(a, "could not write picaops-restic's authorized_keys: run `picaops apply --tags backup` first (it creates the account)")
            },
            data: Value::Null,
        });
    }
    // 3. One `restic init` per repository, from the data side.
    let selected = jobs(&inv, &names);
    let mut calls = Vec::new();
    for group in remote::by_repository(&selected) {
        match remote::job_call(&inv, group[0], Side::Data, "host-init", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => lines.push(usage_line(group[0], e)),
        }
    }
    let answers = match execute(&inv, calls, Some(Duration::from_secs(300)), out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    for a in &answers {
        let repository = documents(a)
            .ok()
            .and_then(|d| d.first().map(|d| d.repository.clone()))
            .unwrap_or_default();
        lines.push(doc_line(a, |created| {
            if created == &Value::Bool(true) {
                format!("{repository} created")
            } else {
                format!("{repository} already exists")
            }
        }));
    }
    finish("init", lines, out)
}

fn failure_text(a: &Answer, what: &str) -> String {
    match &a.result {
        Err(e) => e.message.clone(),
        Ok(o) => {
            let err = o.stderr_lossy();
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("{what} (exit {}: {last})", o.exit_code)
        }
    }
}

fn usage_line(job: &BackupJob, e: String) -> Line {
    Line {
        job: job.name.clone(),
        machine: String::new(),
        ok: false,
        text: e,
        data: Value::Null,
    }
}

/// `backup run`: starts each job's service (the same unit its timer starts, so priorities,
/// locks and status are the timer's) and waits for it, then reads the job's status.
pub fn run(select: &JobSelect, global: &Global, out: &Output) -> i32 {
    let (inv, names) = match load(global, select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut calls = Vec::new();
    let mut lines = Vec::new();
    for job in jobs(&inv, &names) {
        let Some(machine) = remote::machine(&inv, job, Side::Data) else {
            lines.push(usage_line(
                job,
                "its data host is not in the inventory".into(),
            ));
            continue;
        };
        let unit = picaops::backup::units::service_name(&job.name);
        let status = remote::picaops(
            Side::Data,
            &[
                "host-status",
                "--job-file",
                &remote::job_file(&job.name, Side::Data),
            ],
        );
        let script = format!(
            "if ! systemctl cat {unit} >/dev/null 2>&1; then \
               echo '{unit} is not installed on this host: run `picaops apply --tags backup` first' >&2; exit 3; fi; \
             systemctl start {unit}; rc=$?; {}; exit $rc",
            status.to_shell_line()
        );
        calls.push(Call {
            job: job.name.clone(),
            machine,
            side: Side::Data,
            command: picaops::transport::RemoteCommand::shell(script).with_become(true),
        });
    }
    let answers = match execute(&inv, calls, None, out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    for a in &answers {
        let status = a
            .result
            .as_ref()
            .ok()
            .and_then(|o| serde_json::from_str::<Vec<JobStatus>>(&o.stdout_lossy()).ok())
            .and_then(|v| v.into_iter().next());
        let exit = a.result.as_ref().map(|o| o.exit_code).unwrap_or(-1);
        let (ok, text, data) = match (&status, exit) {
            (Some(s), 0) => match &s.last_success {
                Some(r) => (
                    true,
                    r.summary(),
                    serde_json::to_value(r).unwrap_or_default(),
                ),
                None => (false, "no successful run recorded".into(), Value::Null),
            },
            (Some(s), _) => (
                false,
                s.last_run
                    .as_ref()
                    .and_then(|r| r.error.clone())
                    .map(|e| {
                        format!(
                            "{e} (journalctl -u {})",
                            picaops::backup::units::service_name(&a.call.job)
                        )
                    })
                    .unwrap_or_else(|| failure_text(a, "the backup failed")),
                serde_json::to_value(&s.last_run).unwrap_or_default(),
            ),
            (None, _) => (false, failure_text(a, "the backup failed"), Value::Null),
        };
        lines.push(Line {
            job: a.call.job.clone(),
            machine: a.call.machine.clone(),
            ok,
            text,
            data,
        });
    }
    finish("run", lines, out)
}

/// `forget` (with `prune`) and `prune`: once per repository, on its side, as its account;
/// `check`: there too, as root, without a restic lock.
pub fn forget(select: &JobSelect, prune_after: bool, global: &Global, out: &Output) -> i32 {
    per_repository(select, global, out, "forget", Side::Account, |files| {
        let mut args = vec!["host-forget".to_string()];
        for f in files {
            args.push("--job-file".into());
            args.push(f.clone());
        }
        if prune_after {
            args.push("--prune".into());
        }
        args
    })
}

pub fn prune(select: &JobSelect, global: &Global, out: &Output) -> i32 {
    per_repository(select, global, out, "prune", Side::Account, |files| {
        vec!["host-prune".into(), "--job-file".into(), files[0].clone()]
    })
}

pub fn check(select: &JobSelect, subset: Option<&str>, global: &Global, out: &Output) -> i32 {
    per_repository(select, global, out, "check", Side::RepoRoot, |files| {
        let mut args = vec!["host-check".into(), "--job-file".into(), files[0].clone()];
        if let Some(s) = subset {
            args.push("--read-data-subset".into());
            args.push(s.to_string());
        }
        args
    })
}

fn per_repository(
    select: &JobSelect,
    global: &Global,
    out: &Output,
    what: &str,
    side: Side,
    args: impl Fn(&[String]) -> Vec<String>,
) -> i32 {
    let (inv, names) = match load(global, select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let selected = jobs(&inv, &names);
    let mut calls = Vec::new();
    for group in remote::by_repository(&selected) {
        let files: Vec<String> = group
            .iter()
            .map(|j| remote::job_file(&j.name, side))
            .collect();
        let args = args(&files);
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        calls.push(Call {
            job: group
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            machine: group[0].repository.host.value.clone(),
            side,
            command: remote::picaops(side, &words),
        });
    }
    let answers = match execute(&inv, calls, None, out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let lines = answers
        .iter()
        .map(|a| {
            doc_line(a, |v| match v {
                Value::Array(groups) => {
                    let count = |k: &str| -> usize {
                        groups
                            .iter()
                            .map(|g| g.get(k).and_then(Value::as_array).map_or(0, Vec::len))
                            .sum()
                    };
                    format!(
                        "kept {} snapshots, forgot {}",
                        count("keep"),
                        count("remove")
                    )
                }
                Value::Number(n) if what == "check" => format!("no error ({n} found)"),
                _ => "done".into(),
            })
        })
        .collect();
    finish(what, lines, out)
}

/// `snapshots`: listed on the repository side (works when the data site is down).
pub fn snapshots(select: &JobSelect, global: &Global, out: &Output) -> i32 {
    let (inv, names) = match load(global, select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut calls = Vec::new();
    for job in jobs(&inv, &names) {
        match remote::job_call(&inv, job, Side::RepoRoot, "host-snapshots", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => eprintln!("{}: {e}", out.paint(Style::Red, "picaops")),
        }
    }
    let answers = match execute(&inv, calls, Some(Duration::from_secs(300)), out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let mut failed = false;
    let mut all = Vec::new();
    for a in &answers {
        match a.document::<HostDoc>() {
            Ok(HostDoc {
                ok: true,
                result: Some(v),
                ..
            }) => {
                let snaps: Vec<picaops::backup::restic::Snapshot> =
                    serde_json::from_value(v).unwrap_or_default();
                if out.format == Format::Human {
                    println!(
                        "{}",
                        out.paint(
                            Style::Bold,
                            &format!("# {} (repository on {})", a.call.job, a.call.machine)
                        )
                    );
                    print!("{}", render::render_snapshots(&snaps));
                }
                all.push(json!({"job": a.call.job, "snapshots": snaps}));
            }
            Ok(d) => {
                failed = true;
                eprintln!(
                    "{} {}: {}",
                    out.paint(Style::Red, "error:"),
                    a.call.job,
                    d.error.unwrap_or_default()
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("{} {}: {e}", out.paint(Style::Red, "error:"), a.call.job);
            }
        }
    }
    if out.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": !failed, "jobs": all})).unwrap_or_default()
        );
    }
    if failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }
}

/// `restore JOB --to PATH`: on the data host, or (`--host`) on the repository's host at the
/// other site, the machine that still has everything when the data's site is lost.
pub struct RestoreArgs<'a> {
    pub job: &'a str,
    pub snapshot: Option<&'a str>,
    pub to: Option<&'a Path>,
    pub host: Option<&'a str>,
    pub dump: Option<&'a str>,
    pub into_container: Option<&'a str>,
}

pub fn restore(args: &RestoreArgs<'_>, global: &Global, out: &Output) -> i32 {
    let select = JobSelect {
        jobs: vec![args.job.to_string()],
        host: None,
    };
    let (inv, _) = match load(global, &select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let job = &inv.backups[args.job];
    let data = data_host(&inv, job).map(|m| m.name().to_string());
    let repo = job.repository.host.value.clone();
    let side = match args.host {
        None => Side::Data,
        Some(h) if Some(h) == data.as_deref() => Side::Data,
        Some(h) if h == repo => Side::RepoRoot,
        Some(h) => {
            eprintln!(
                "{}: `{h}` cannot open job {}'s repository: restore on its data host ({}) or on the repository's host ({repo})",
                out.paint(Style::Red, "picaops"),
                args.job,
                data.as_deref().unwrap_or("?")
            );
            return EXIT_USAGE;
        }
    };
    if let Some(to) = args.to.filter(|t| !t.is_absolute()) {
        eprintln!(
            "{}: --to must be an absolute path on the host, not `{}`",
            out.paint(Style::Red, "picaops"),
            to.display()
        );
        return EXIT_USAGE;
    }
    let to = args.to.map(|t| t.display().to_string()).unwrap_or_default();
    let mut extra = Vec::new();
    if !to.is_empty() {
        extra.extend(["--to", to.as_str()]);
    }
    if let Some(c) = args.into_container {
        extra.extend(["--into-container", c]);
    }
    if let Some(s) = args.snapshot {
        extra.extend(["--snapshot", s]);
    }
    if let Some(d) = args.dump {
        extra.extend(["--dump", d]);
    }
    let call = match remote::job_call(&inv, job, side, "host-restore", &extra) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", out.paint(Style::Red, "picaops"));
            return EXIT_USAGE;
        }
    };
    let answers = match execute(&inv, vec![call], None, out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let lines = answers
        .iter()
        .map(|a| {
            doc_line(a, |v| match v {
                Value::Array(x) if x.len() == 2 => format!(
                    "{} files, {} restored into {to}",
                    x[0],
                    picaops::human::bytes(x[1].as_u64().unwrap_or(0))
                ),
                Value::String(check) => match args.into_container {
                    Some(c) => format!("loaded into the new container {c} ({check})"),
                    None => format!("restored into {to}"),
                },
                _ => format!("restored into {to}"),
            })
        })
        .collect();
    finish("restore", lines, out)
}

/// `drill`: on the repository's host, the other site, as if the data's site were gone.
pub fn drill(select: &JobSelect, global: &Global, out: &Output) -> i32 {
    let (inv, names) = match load(global, select, out) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut calls = Vec::new();
    let mut lines = Vec::new();
    for job in jobs(&inv, &names) {
        match remote::job_call(&inv, job, Side::RepoRoot, "host-drill", &[]) {
            Ok(c) => calls.push(c),
            Err(e) => lines.push(usage_line(job, e)),
        }
    }
    let answers = match execute(&inv, calls, None, out) {
        Ok(a) => a,
        Err(c) => return c,
    };
    for a in &answers {
        lines.push(doc_line(a, |d| {
            let verified = d
                .pointer("/files/verified")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let dumps = d
                .get("dumps")
                .and_then(Value::as_array)
                .map_or(0, |v| v.iter().filter(|x| x["ok"] == true).count());
            format!(
                "restored in {:.1} s, data {} old, {verified} files verified, {dumps} dump(s) loaded",
                d.get("restore_seconds").and_then(Value::as_f64).unwrap_or(0.0),
                picaops::backup::schedule::human_duration(
                    d.get("data_age_seconds").and_then(Value::as_f64).unwrap_or(0.0) as u64
                ),
            )
        }));
    }
    finish("drill", lines, out)
}

/// `status` over SSH: the data side's record of runs, merged with the repository side's
/// records of checks, drills and retention.
pub fn status(select: &JobSelect, global: &Global, out: &Output) -> Result<Vec<JobStatus>, i32> {
    let (inv, names) = load(global, select, out)?;
    let selected = jobs(&inv, &names);
    let mut calls = Vec::new();
    for job in &selected {
        for side in [Side::Data, Side::Account, Side::RepoRoot] {
            if let Ok(c) = remote::job_call(&inv, job, side, "host-status", &[]) {
                calls.push(c);
            }
        }
    }
    let answers = execute(&inv, calls, Some(Duration::from_secs(60)), out)?;
    let mut statuses = Vec::new();
    for job in selected {
        let mut merged: Option<JobStatus> = None;
        let mut unreachable = Vec::new();
        for a in answers.iter().filter(|a| a.call.job == job.name) {
            match a.document::<Vec<JobStatus>>() {
                Ok(v) => {
                    for s in v {
                        match (&mut merged, a.call.side) {
                            (None, _) => merged = Some(s),
                            (Some(m), Side::Data) => {
                                let mut d = s;
                                d.absorb(m);
                                merged = Some(d);
                            }
                            (Some(m), _) => m.absorb(&s),
                        }
                    }
                }
                Err(e) => unreachable.push(e),
            }
        }
        let mut s = merged.unwrap_or_default();
        s.job = job.name.clone();
        s.max_age_seconds = job.max_age;
        if let Some(f) = picaops::backup::JobFile::from_inventory(&inv, job) {
            s.host = f.host.clone();
            s.repository = f.repository_label();
        }
        for e in unreachable {
            eprintln!("{}: {}: {e}", out.paint(Style::Yellow, "warning"), job.name);
        }
        statuses.push(s);
    }
    Ok(statuses)
}

/// Renders statuses (shared by `--status-dir` and the SSH path); exit 1 when a job is late or
/// failing.
pub fn show_status(statuses: &[JobStatus], out: &Output) -> i32 {
    let rows = render::status_rows(statuses, time::now());
    let bad = rows.iter().any(|r| r.state != State::Ok);
    match out.format {
        Format::Json => {
            let doc = json!({ "ok": !bad, "jobs": rows });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => {
            let paint = |state: State, text: &str| match state {
                State::Ok => out.paint(Style::Green, text),
                State::Late => out.paint(Style::Yellow, text),
                State::Failing => out.paint(Style::Red, text),
            };
            print!("{}", render::render_status(&rows, &paint));
        }
    }
    if bad {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }
}
