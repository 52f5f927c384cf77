//! `picaops status`: the whole site at a glance, assembled from what each layer reads without
//! applying anything (machines and their drift, services and their health, backups against
//! their `max_age`, people whose access ends soon), and what of it needs a human.
//!
//! This module gathers nothing itself: the caller hands it each layer's own reading (the site
//! plan's summary, the service listing, the backup status rows, the directory's people) and it
//! builds one [`Report`], rendered for a terminal ([`render_human`]), for scripts (serde) and as
//! one static page ([`html::render`]).

pub mod html;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::access::directory::{Expiry, Person};
use crate::backup::render::{State as JobState, StatusRow};
use crate::lifecycle::{PhaseKind, Status, Summary};
use crate::service::list::{Listing, Row};

/// People whose access ends within this many days are listed.
pub const ENDING_WITHIN_DAYS: i64 = 30;

/// How one thing stands: what the colours of the page and the marks of the terminal say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// Not broken, but not as declared (drift, an end date near).
    Warn,
    /// Broken or unknown: a human must look.
    Bad,
}

/// One machine: could it be read, and how far it is from the inventory, per layer.
#[derive(Clone, Debug, Serialize)]
pub struct MachineRow {
    pub machine: String,
    pub site: String,
    pub reachable: bool,
    /// When `status` last read it (RFC 3339), from the record kept on this workstation; `None`:
    /// never, as far as this workstation knows.
    pub last_seen: Option<String>,
    /// Per layer (`vms`, `converge`): `unchanged`, `N changes`, or why it could not be read.
    pub layers: BTreeMap<String, String>,
    pub health: Health,
}

impl MachineRow {
    /// In words: each layer's state, or since when it has not answered.
    pub fn state(&self) -> String {
        if self.reachable {
            self.layers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            format!(
                "unreachable (last seen {})",
                self.last_seen.as_deref().unwrap_or("unknown")
            )
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceRow {
    #[serde(flatten)]
    pub row: Row,
    pub health_mark: Health,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobRow {
    #[serde(flatten)]
    pub row: StatusRow,
    pub health: Health,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndingRow {
    pub login: String,
    /// The last day access works (YYYY-MM-DD).
    pub last_day: String,
    pub days_left: i64,
}

/// The site at a glance.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339, UTC).
    pub generated: String,
    pub machines: Vec<MachineRow>,
    pub services: Vec<ServiceRow>,
    pub backups: Vec<JobRow>,
    pub access_ending: Vec<EndingRow>,
    /// A layer that could not be read at all (the directory down...), with why.
    pub unread: Vec<(String, String)>,
    /// What needs a human, one sentence each; empty: all is well (exit 0).
    pub needs_human: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.needs_human.is_empty() {
            crate::output::EXIT_OK
        } else {
            crate::output::EXIT_HOST_FAILED
        }
    }
}

/// Each layer's reading, as its own command gives it.
#[derive(Default)]
pub struct Readings<'a> {
    /// The plan of VMs and converge (nothing applied). `None`: could not run (`unread` says why).
    pub plan: Option<&'a Summary>,
    /// Machine → site, for every machine the plan covered.
    pub sites: BTreeMap<String, String>,
    pub services: Option<&'a Listing>,
    pub backups: Option<&'a [StatusRow]>,
    pub people: Option<&'a [Person]>,
    pub unread: Vec<(String, String)>,
}

/// Builds the report; `seen` is the workstation's record of when each machine last answered,
/// updated here with the machines that answered now.
pub fn assemble(r: &Readings<'_>, today: i64, now: &str, seen: &mut Seen) -> Report {
    let mut needs = Vec::new();
    let machines = r
        .plan
        .map(|s| machines(s, &r.sites, now, seen))
        .unwrap_or_default();
    for m in &machines {
        if !m.reachable {
            let since = match &m.last_seen {
                Some(t) => format!("last seen {t}"),
                None => "never seen from this workstation".into(),
            };
            needs.push(format!("{} cannot be read ({since})", m.machine));
        } else if m.health != Health::Ok {
            let drift: Vec<String> = m
                .layers
                .iter()
                .filter(|(_, v)| v.as_str() != "unchanged")
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            needs.push(format!(
                "{} differs from the inventory ({})",
                m.machine,
                drift.join(", ")
            ));
        }
    }
    let services: Vec<ServiceRow> = r
        .services
        .map(|l| l.services.iter().map(service_row).collect())
        .unwrap_or_default();
    for s in services.iter().filter(|s| s.health_mark != Health::Ok) {
        needs.push(format!(
            "service {} on {}: {}, health {}, drift {}",
            s.row.service, s.row.machine, s.row.state, s.row.health, s.row.drift
        ));
    }
    if let Some(l) = r.services {
        for e in &l.errors {
            needs.push(format!(
                "services on {} could not be read: {}",
                e.machine, e.error
            ));
        }
    }
    let backups: Vec<JobRow> = r
        .backups
        .map(|rows| rows.iter().map(job_row).collect())
        .unwrap_or_default();
    for j in backups.iter().filter(|j| j.health != Health::Ok) {
        let mut why = Vec::new();
        if j.row.state != JobState::Ok {
            why.push(format!(
                "is {}{}",
                state_word(j.row.state),
                j.row
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
        for (what, when, ok) in [
            ("check", &j.row.last_check, j.row.last_check_ok),
            ("drill", &j.row.last_drill, j.row.last_drill_ok),
        ] {
            if ok == Some(false) {
                why.push(format!(
                    "its last {what} failed ({})",
                    when.as_deref().unwrap_or("time unknown")
                ));
            }
        }
        needs.push(format!("backup {}: {}", j.row.job, why.join("; ")));
    }
    let access_ending = r.people.map(|p| ending(p, today)).unwrap_or_default();
    if !access_ending.is_empty() {
        needs.push(format!(
            "{} person(s) lose access within {ENDING_WITHIN_DAYS} days: {}",
            access_ending.len(),
            access_ending
                .iter()
                .map(|e| format!("{} ({})", e.login, e.last_day))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (what, why) in &r.unread {
        needs.push(format!("{what} could not be read: {why}"));
    }
    Report {
        generated: now.to_string(),
        machines,
        services,
        backups,
        access_ending,
        unread: r.unread.clone(),
        needs_human: needs,
    }
}

fn machines(
    summary: &Summary,
    sites: &BTreeMap<String, String>,
    now: &str,
    seen: &mut Seen,
) -> Vec<MachineRow> {
    let mut rows: BTreeMap<String, MachineRow> = BTreeMap::new();
    for (kind, m) in summary.statuses() {
        let layer = match kind {
            PhaseKind::Vms => "vms",
            PhaseKind::Converge => "converge",
            PhaseKind::Services => "services",
            PhaseKind::Fence => "fence",
        };
        let row = rows.entry(m.machine.clone()).or_insert_with(|| MachineRow {
            machine: m.machine.clone(),
            site: sites.get(&m.machine).cloned().unwrap_or_default(),
            reachable: true,
            last_seen: None,
            layers: BTreeMap::new(),
            health: Health::Ok,
        });
        let (word, health) = match &m.status {
            Status::Unchanged => ("unchanged".to_string(), Health::Ok),
            Status::Changed { changes } => (format!("{changes} change(s) pending"), Health::Warn),
            Status::Refused { changes, reason } => (
                format!("{changes} change(s) pending ({reason})"),
                Health::Warn,
            ),
            Status::Failed { reason } => {
                // A machine the converge phase could not read is unreachable for this report.
                if kind == PhaseKind::Converge {
                    row.reachable = false;
                }
                (format!("not read: {reason}"), Health::Bad)
            }
            Status::Skipped { reason } => (format!("skipped: {reason}"), Health::Warn),
        };
        row.layers.insert(layer.to_string(), word);
        row.health = row.health.max(health);
    }
    for row in rows.values_mut() {
        if row.reachable {
            seen.machines.insert(row.machine.clone(), now.to_string());
        }
        row.last_seen = seen.machines.get(&row.machine).cloned();
        if !row.reachable {
            row.health = Health::Bad;
        }
    }
    rows.into_values().collect()
}

fn service_row(row: &Row) -> ServiceRow {
    let health_ok = matches!(row.health.as_str(), "healthy" | "-");
    let health_mark = if row.state != "running" || !health_ok {
        Health::Bad
    } else if row.drift != "none" {
        Health::Warn
    } else {
        Health::Ok
    };
    ServiceRow {
        row: row.clone(),
        health_mark,
    }
}

fn job_row(row: &StatusRow) -> JobRow {
    let checks_failed = row.last_check_ok == Some(false) || row.last_drill_ok == Some(false);
    let health = match row.state {
        JobState::Ok if checks_failed => Health::Bad,
        JobState::Ok => Health::Ok,
        _ => Health::Bad,
    };
    JobRow {
        row: row.clone(),
        health,
    }
}

fn state_word(s: JobState) -> &'static str {
    match s {
        JobState::Ok => "ok",
        JobState::Late => "late",
        JobState::Failing => "failing",
        JobState::Unknown => "unknown",
    }
}

/// People whose access ends within [`ENDING_WITHIN_DAYS`] (and has not ended yet), soonest first.
pub fn ending(people: &[Person], today: i64) -> Vec<EndingRow> {
    let mut rows: Vec<EndingRow> = people
        .iter()
        .filter_map(|p| match p.shadow_expire {
            // shadowExpire is the first day refused: the last day that works is the one before.
            Expiry::Until(first_refused) if first_refused > today => {
                let days_left = first_refused - 1 - today;
                (days_left <= ENDING_WITHIN_DAYS).then(|| EndingRow {
                    login: p.login.clone(),
                    last_day: crate::date::format_day(first_refused - 1),
                    days_left,
                })
            }
            _ => None,
        })
        .collect();
    rows.sort_by_key(|r| (r.days_left, r.login.clone()));
    rows
}

/// The directory's people, when the inventory has an `access:` section (`None`: it has none).
pub fn read_people(
    inv: &crate::inventory::Inventory,
    inventory_dir: &Path,
) -> Result<Option<Vec<Person>>, String> {
    if inv.access.is_none() {
        return Ok(None);
    }
    let session =
        crate::access::ops::Session::new(inv.clone(), inventory_dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let people = rt.block_on(session.people()).map_err(|e| e.to_string());
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    people.map(Some)
}

/// When each machine last answered `picaops status`, kept on the workstation per inventory.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Seen {
    pub machines: BTreeMap<String, String>,
}

impl Seen {
    /// Where the record of `inventory` lives: picaops's state directory
    /// (`$XDG_STATE_HOME/picaops`, else `~/.local/state/picaops`), `status/`, one file per
    /// inventory directory.
    pub fn path(inventory: &Path) -> Option<PathBuf> {
        use crate::inventory::failed::{inventory_name, state_dir};
        let dir = state_dir().ok()?;
        Some(
            dir.join("status")
                .join(format!("seen-{}.json", inventory_name(inventory))),
        )
    }

    /// The record; an unreadable or missing one is empty (it only says "since when").
    pub fn load(path: &Path) -> Seen {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::backup::status::write_atomic(path, &bytes, 0o644)
    }
}

/// The report for a terminal: one block per layer, a mark per line, then what needs a human.
pub fn render_human(r: &Report, paint: &dyn Fn(Health, &str) -> String) -> String {
    use std::fmt::Write;
    let mark = |h: Health| {
        paint(
            h,
            match h {
                Health::Ok => "✓",
                Health::Warn => "~",
                Health::Bad => "✗",
            },
        )
    };
    let mut s = String::new();
    let _ = writeln!(s, "machines");
    for m in &r.machines {
        let _ = writeln!(
            s,
            "  {} {:<12} {:<10} {}",
            mark(m.health),
            m.machine,
            m.site,
            m.state()
        );
    }
    let _ = writeln!(s, "services");
    for v in &r.services {
        let _ = writeln!(
            s,
            "  {} {:<12} {:<10} {}, health {}, drift {}",
            mark(v.health_mark),
            v.row.service,
            v.row.machine,
            v.row.state,
            v.row.health,
            v.row.drift
        );
    }
    let _ = writeln!(s, "backups");
    for j in &r.backups {
        let age = j
            .row
            .data_age_seconds
            .map(crate::sections::schedule::human_duration)
            .map(|a| format!("data {a} old"))
            .unwrap_or_else(|| "no snapshot".into());
        let _ = writeln!(
            s,
            "  {} {:<16} {:<8} {age} (max {}), check {}, drill {}",
            mark(j.health),
            j.row.job,
            state_word(j.row.state),
            crate::sections::schedule::human_duration(j.row.max_age_seconds),
            verdict(&j.row.last_check, j.row.last_check_ok),
            verdict(&j.row.last_drill, j.row.last_drill_ok),
        );
    }
    let _ = writeln!(s, "access ending within {ENDING_WITHIN_DAYS} days");
    if r.access_ending.is_empty() {
        let _ = writeln!(s, "  {} nobody", mark(Health::Ok));
    }
    for e in &r.access_ending {
        let _ = writeln!(
            s,
            "  {} {:<16} last day {} ({} days left)",
            mark(Health::Warn),
            e.login,
            e.last_day,
            e.days_left
        );
    }
    if r.needs_human.is_empty() {
        let _ = writeln!(s, "\n{} all is well", mark(Health::Ok));
    } else {
        let _ = writeln!(s, "\nneeds a human:");
        for n in &r.needs_human {
            let _ = writeln!(s, "  {} {n}", mark(Health::Bad));
        }
    }
    s
}

fn verdict(when: &Option<String>, ok: Option<bool>) -> String {
    match (when, ok) {
        (None, _) => "never".into(),
        (Some(t), Some(false)) => format!("FAILED {t}"),
        (Some(t), _) => format!("ok {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(login: &str, expiry: Expiry) -> Person {
        Person {
            dn: format!("uid={login},ou=people,dc=example"),
            login: login.into(),
            uid_number: None,
            gid_number: None,
            given_name: None,
            sn: None,
            mail: None,
            shadow_expire: expiry,
            keys: vec![],
            hosts: vec![],
            object_classes: vec![],
            broken: None,
        }
    }

    #[test]
    fn access_ending_lists_the_next_thirty_days_only() {
        let today = 20_000;
        let people = [
            person("soon", Expiry::Until(today + 8)),
            person("later", Expiry::Until(today + 32)),
            person("edge", Expiry::Until(today + 31)),
            person("gone", Expiry::Until(today)),
            person("never", Expiry::Never),
            person("tomorrow", Expiry::Until(today + 2)),
        ];
        let rows = ending(&people, today);
        let names: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.login.as_str(), r.days_left))
            .collect();
        assert_eq!(names, vec![("tomorrow", 1), ("soon", 7), ("edge", 30)]);
    }

    #[test]
    fn an_empty_site_needs_nobody_and_an_unread_layer_does() {
        let mut seen = Seen::default();
        let r = assemble(&Readings::default(), 0, "2026-12-06T00:00:00Z", &mut seen);
        assert_eq!(r.exit_code(), 0);
        let readings = Readings {
            unread: vec![("the directory".into(), "connection refused".into())],
            ..Default::default()
        };
        let r = assemble(&readings, 0, "now", &mut seen);
        assert_eq!(r.exit_code(), 1);
        assert!(r.needs_human[0].contains("the directory could not be read"));
    }
}
