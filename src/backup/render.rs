//! What `picaops backup status` and `backup snapshots` show: tables for people and JSON for
//! scripts, from status files and restic's snapshot lists. No I/O: phase 2 fetches the inputs
//! over SSH, the tests feed them from files.

use std::collections::BTreeMap;

use serde::Serialize;

use super::newest::SnapshotInfo;
use super::restic::Snapshot;
use super::schedule::human_duration;
use super::status::JobStatus;
use super::time::rfc3339;

/// How a job stands, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The last run failed.
    Failing,
    /// Neither its data host nor its repository could tell how its backups stand.
    Unknown,
    /// No run ever succeeded, or the newest data is older than the job's `max_age`.
    Late,
    Ok,
}

/// Where a row's age of the newest data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The status files of the job's hosts (the data host's record of its runs).
    Status,
    /// The repository's own listing, read on its side (the data host could not tell).
    Repository,
}

/// What the data host said when `backup status` asked it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum DataSide {
    /// It answered with its record of runs.
    #[default]
    Answered,
    /// It answered, but its status records nothing at all (a new or rebuilt host, a lost
    /// status file).
    Empty,
    /// It could not be reached (the transport's words).
    Unreachable(String),
    /// It was reached but gave no status (picaops missing there, a command timeout…).
    NoStatus(String),
}

impl DataSide {
    /// True when the data host answered with a status (even an empty one).
    pub fn gave_status(&self) -> bool {
        matches!(self, DataSide::Answered | DataSide::Empty)
    }
}

/// What the repository's side said when asked for the job's snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RepoSide {
    /// Not asked: the data host's record was enough.
    #[default]
    NotAsked,
    /// Listed: the newest snapshot (`None`: the repository holds none of this job).
    Listed {
        machine: String,
        newest: Option<SnapshotInfo>,
    },
    /// Its machine could not be reached.
    Unreachable { machine: String },
    /// Reached, but the listing failed (the reason).
    Failed { machine: String, message: String },
}

/// What `backup status` saw of one job beyond its status files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub data: DataSide,
    pub repository: RepoSide,
}

/// The newest snapshot of a row, as the repository listed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewestSnapshot {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub age_seconds: u64,
}

/// One job's line of `backup status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub job: String,
    pub host: String,
    pub repository: String,
    pub state: State,
    /// Why the state is not ok, in words (and, whatever the state, where the data host or the
    /// repository did not answer as usual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_success: Option<String>,
    /// Seconds since the newest snapshot was taken.
    pub data_age_seconds: Option<u64>,
    pub max_age_seconds: u64,
    pub bytes_added: Option<u64>,
    pub consecutive_failures: u64,
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub last_drill: Option<String>,
    pub last_drill_ok: Option<bool>,
    /// Where `data_age_seconds` comes from.
    pub source: Source,
    /// False when the data host could not be reached.
    pub data_host_reachable: bool,
    /// Whether the repository's side answered for its listing (`None`: not asked).
    pub repository_reachable: Option<bool>,
    /// The newest snapshot, when the repository was asked and holds one.
    pub newest_snapshot: Option<NewestSnapshot>,
    /// How many snapshots of the job the repository holds, when it was asked.
    pub snapshot_count: Option<usize>,
}

/// Rows for `statuses` as of `now` (Unix seconds), from the status files alone.
pub fn status_rows(statuses: &[JobStatus], now: f64) -> Vec<StatusRow> {
    status_rows_seen(statuses, &BTreeMap::new(), now)
}

/// Rows for `statuses` as of `now`, with what was seen of each job (by name) beyond its status
/// files: a repository's listing is the truth about the newest data when it was read.
pub fn status_rows_seen(
    statuses: &[JobStatus],
    seen: &BTreeMap<String, Seen>,
    now: f64,
) -> Vec<StatusRow> {
    let nothing = Seen::default();
    statuses
        .iter()
        .map(|s| status_row(s, seen.get(&s.job).unwrap_or(&nothing), now))
        .collect()
}

fn status_row(s: &JobStatus, seen: &Seen, now: f64) -> StatusRow {
    let age_of = |t: f64| (now - t).max(0.0) as u64;
    let listed = match &seen.repository {
        RepoSide::Listed { newest, .. } => Some(newest.as_ref()),
        _ => None,
    };
    let (source, newest_time) = match listed {
        Some(n) => (Source::Repository, n.map(|n| n.unix_time)),
        None => (Source::Status, s.newest_data_time),
    };
    let age = newest_time.map(age_of);
    // Nobody could say: no status from the data host, no listing, no record on either side.
    let unknown = !seen.data.gave_status() && listed.is_none() && newest_time.is_none();
    let (state, reason) = match (&s.last_run, age) {
        (Some(run), _) if !run.ok => (
            State::Failing,
            Some(format!(
                "{} failure(s) in a row; last: {}",
                s.consecutive_failures,
                run.error.as_deref().unwrap_or("no message")
            )),
        ),
        (_, None) if unknown => (
            State::Unknown,
            Some("nothing tells how its backups stand".to_string()),
        ),
        (_, None) => (State::Late, Some("no successful backup yet".to_string())),
        (_, Some(a)) if a > s.max_age_seconds => (
            State::Late,
            Some(format!(
                "newest data is {} old, more than max_age {}",
                human_duration(a),
                human_duration(s.max_age_seconds)
            )),
        ),
        _ => (State::Ok, None),
    };
    let mut words: Vec<String> = Vec::new();
    match &seen.data {
        DataSide::Unreachable(_) => {
            words.push(format!("data host {} unreachable (since unknown)", s.host))
        }
        DataSide::NoStatus(_) => words.push(format!("data host {} gave no status", s.host)),
        DataSide::Empty if matches!(listed, Some(Some(_))) => words.push(format!(
            "data host {} records no backup run (a new or rebuilt host, or a lost status file)",
            s.host
        )),
        _ => {}
    }
    words.extend(reason);
    match &seen.repository {
        RepoSide::Listed {
            newest: Some(n), ..
        } => words.push(format!(
            "newest snapshot {} of {} ({} old), {} snapshot(s) in the repository",
            n.short_id,
            n.time,
            human_duration(age_of(n.unix_time)),
            n.count
        )),
        RepoSide::Listed {
            newest: None,
            machine,
        } if !seen.data.gave_status() => words.push(format!(
            "the repository on {machine} holds no snapshot of it"
        )),
        RepoSide::Unreachable { machine } => {
            words.push(format!("repository host {machine} unreachable too"))
        }
        RepoSide::Failed { machine, message } => words.push(format!(
            "the repository on {machine} could not be listed: {message}"
        )),
        _ => {}
    }
    let newest = match listed {
        Some(Some(n)) => Some(NewestSnapshot {
            id: n.id.clone(),
            short_id: n.short_id.clone(),
            time: n.time.clone(),
            age_seconds: age_of(n.unix_time),
        }),
        _ => None,
    };
    StatusRow {
        job: s.job.clone(),
        host: s.host.clone(),
        repository: s.repository.clone(),
        state,
        reason: (!words.is_empty()).then(|| words.join("; ")),
        last_success: s.last_success.as_ref().map(|r| rfc3339(r.at)),
        data_age_seconds: age,
        max_age_seconds: s.max_age_seconds,
        bytes_added: s.last_success.as_ref().map(|r| r.bytes_added),
        consecutive_failures: s.consecutive_failures,
        last_check: s.last_check.as_ref().map(|c| rfc3339(c.at)),
        last_check_ok: s.last_check.as_ref().map(|c| c.ok),
        last_drill: s.last_drill.as_ref().map(|d| rfc3339(d.at)),
        last_drill_ok: s.last_drill.as_ref().map(|d| d.ok),
        source,
        data_host_reachable: !matches!(seen.data, DataSide::Unreachable(_)),
        repository_reachable: match &seen.repository {
            RepoSide::NotAsked => None,
            RepoSide::Unreachable { .. } => Some(false),
            RepoSide::Listed { .. } | RepoSide::Failed { .. } => Some(true),
        },
        newest_snapshot: newest,
        snapshot_count: listed.map(|n| n.map_or(0, |n| n.count)),
    }
}

/// The status table for people. `paint(state, text)` colours a cell (identity without colour).
pub fn render_status(rows: &[StatusRow], paint: &dyn Fn(State, &str) -> String) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<18} {:<12} {:<8} {:>10} {:>10} {:>6} {:<12} {:<12}\n",
        "JOB", "HOST", "STATE", "DATA AGE", "ADDED", "FAILS", "CHECK", "DRILL"
    ));
    // The day of an RFC 3339 time read from a host's status file: whatever that file holds
    // (short, or not ASCII), shown as it is rather than cut inside a character.
    let day = |t: &str| t.get(..10).unwrap_or(t).to_string();
    let when = |at: &Option<String>, ok: Option<bool>| match (at, ok) {
        (None, _) => "never".to_string(),
        (Some(t), Some(false)) => format!("{} FAILED", day(t)),
        (Some(t), _) => day(t),
    };
    for r in rows {
        let state = match r.state {
            State::Ok => "ok",
            State::Late => "LATE",
            State::Failing => "FAILING",
            State::Unknown => "UNKNOWN",
        };
        out.push_str(&format!(
            "{:<18} {:<12} {} {:>10} {:>10} {:>6} {:<12} {:<12}\n",
            r.job,
            r.host,
            paint(r.state, &format!("{state:<8}")),
            r.data_age_seconds
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            r.bytes_added
                .map(crate::human::bytes)
                .unwrap_or_else(|| "-".into()),
            r.consecutive_failures,
            when(&r.last_check, r.last_check_ok),
            when(&r.last_drill, r.last_drill_ok),
        ));
    }
    for r in rows.iter().filter(|r| r.reason.is_some()) {
        out.push_str(&format!(
            "\n{} {}: {}",
            paint(r.state, &format!("{}:", r.job)),
            r.repository,
            r.reason.as_deref().unwrap_or_default()
        ));
    }
    if rows.iter().any(|r| r.reason.is_some()) {
        out.push('\n');
    }
    out
}

/// `backup snapshots` for people: newest last, with what each snapshot holds.
pub fn render_snapshots(snapshots: &[Snapshot]) -> String {
    let mut sorted: Vec<&Snapshot> = snapshots.iter().collect();
    sorted.sort_by(|a, b| {
        a.unix_time()
            .unwrap_or(0.0)
            .total_cmp(&b.unix_time().unwrap_or(0.0))
    });
    let mut out = format!(
        "{:<10} {:<20} {:<12} {:<40} {:>10}\n",
        "ID", "TIME", "HOST", "WHAT", "ADDED"
    );
    for s in sorted {
        let what = match (s.tag("part"), s.tag("dump")) {
            (Some("dump"), Some(name)) => format!("dump {name}"),
            (Some("files"), _) => format!(
                "files {}",
                s.paths
                    .iter()
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            _ => s.paths.join(" "),
        };
        let what: String = what.chars().take(40).collect();
        out.push_str(&format!(
            "{:<10} {:<20} {:<12} {:<40} {:>10}\n",
            s.short_id,
            s.unix_time().map(rfc3339).unwrap_or_else(|| s.time.clone()),
            s.hostname,
            what,
            s.summary
                .as_ref()
                .map(|x| crate::human::bytes(x.data_added))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::status::{Attempt, BackupResult};

    #[test]
    fn a_status_time_that_is_short_or_not_ascii_is_shown_not_cut() {
        let row = |t: &str| StatusRow {
            job: "j".into(),
            host: "h".into(),
            repository: "r".into(),
            state: State::Ok,
            reason: None,
            last_success: None,
            data_age_seconds: None,
            max_age_seconds: 60,
            bytes_added: None,
            consecutive_failures: 0,
            last_check: Some(t.into()),
            last_check_ok: Some(false),
            last_drill: Some(t.into()),
            last_drill_ok: None,
            source: Source::Status,
            data_host_reachable: true,
            repository_reachable: None,
            newest_snapshot: None,
            snapshot_count: None,
        };
        let plain = |_: State, s: &str| s.to_string();
        assert!(render_status(&[row("2026")], &plain).contains("2026 FAILED"));
        assert!(render_status(&[row("2026-12-0é4T00:00:00Z")], &plain).contains("2026-12-0é4T"));
        assert!(render_status(&[row("2026-12-04T00:00:00Z")], &plain).contains("2026-12-04 FAILED"));
    }

    fn status(job: &str, newest: Option<f64>, last_ok: Option<bool>) -> JobStatus {
        JobStatus {
            job: job.into(),
            host: "pica01".into(),
            repository: "sftp:picaops-restic@caribou:/srv/restic/pica01".into(),
            max_age_seconds: 26 * 3600,
            newest_data_time: newest,
            last_success: newest.map(|at| BackupResult {
                at,
                bytes_added: 1 << 20,
                ..Default::default()
            }),
            last_run: last_ok.map(|ok| Attempt {
                at: 0.0,
                ok,
                error: (!ok).then(|| "link down".to_string()),
                duration_seconds: 1.0,
            }),
            consecutive_failures: u64::from(last_ok == Some(false)),
            ..Default::default()
        }
    }

    #[test]
    fn late_and_failing_jobs_stand_out() {
        let now = 100.0 * 3600.0;
        let rows = status_rows(
            &[
                status("fresh", Some(now - 3600.0), Some(true)),
                status("old", Some(now - 30.0 * 3600.0), Some(true)),
                status("broken", Some(now - 3600.0), Some(false)),
                status("never", None, None),
            ],
            now,
        );
        let states: Vec<State> = rows.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [State::Ok, State::Late, State::Failing, State::Late]
        );
        assert!(rows[1].reason.as_deref().unwrap().contains("1d 6h old"));
        assert!(rows[2].reason.as_deref().unwrap().contains("link down"));
        let text = render_status(&rows, &|_, s| s.to_string());
        assert!(text.contains("old"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("never") && l.contains("LATE")),
            "{text}"
        );
    }
}
