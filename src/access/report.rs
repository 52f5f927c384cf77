//! What `picaops access …` commands come to, and how they are shown: each result renders
//! itself for people (text) and for scripts (one JSON document) through
//! [`crate::lifecycle::Rendered`], so the command line has one output path for all of them.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{json, Value};

use super::date;
use super::manage::{Anomaly, Outcome, Row};
use super::remind::{self, Reminders};
use crate::lifecycle::Rendered;
use crate::output::{Output, Style, EXIT_HOST_FAILED, EXIT_OK};

/// What a change did to each person (`grant`, `extend`, `revoke`, `remove-key`).
#[derive(Clone, Debug)]
pub struct Changes {
    pub people: Vec<Outcome>,
    /// `grant`: remind that a person with no machine logs in nowhere.
    pub hint_no_machine: bool,
}

impl Changes {
    /// The changes of `grant` (which reminds when the person has no machine).
    pub fn granted(o: Outcome) -> Changes {
        Changes {
            people: vec![o],
            hint_no_machine: true,
        }
    }

    /// The changes of any other command.
    pub fn of(people: Vec<Outcome>) -> Changes {
        Changes {
            people,
            hint_no_machine: false,
        }
    }
}

fn outcomes_human(out: &Output, people: &[Outcome], w: &mut dyn Write) -> std::io::Result<()> {
    for o in people {
        let head = format!("{} {}", o.login, o.action);
        let style = if o.action == "unchanged" {
            Style::Dim
        } else {
            Style::Green
        };
        writeln!(w, "{}", out.paint(style, &head))?;
        for c in &o.changes {
            writeln!(w, "  {c}")?;
        }
    }
    Ok(())
}

impl Rendered for Changes {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        outcomes_human(out, &self.people, w)?;
        if self.hint_no_machine && self.people.iter().any(|o| o.hosts_after.is_empty()) {
            writeln!(w, "  note: no machine listed: give --hosts NAME,… or --all-hosts to let them log in somewhere")?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        json!({ "people": self.people })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `access list`.
#[derive(Clone, Debug)]
pub struct Listing {
    pub today: i64,
    /// Rows ending within this many days are highlighted and counted.
    pub soon: i64,
    pub rows: Vec<Row>,
}

impl Rendered for Listing {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let soon = self.soon;
        writeln!(
            w,
            "{:<14} {:<22} {:<7} {:<11} {:<24} KEYS",
            "LOGIN", "NAME", "LEVEL", "UNTIL", "MACHINES"
        )?;
        for r in &self.rows {
            let until = match r.days_left {
                _ if r.expired => out.paint(Style::Red, &format!("{:<11}", r.until)),
                Some(d) if d <= soon => out.paint(Style::Yellow, &format!("{:<11}", r.until)),
                _ => format!("{:<11}", r.until),
            };
            let hosts = if r.hosts.iter().any(|h| h == "*") {
                "all".to_string()
            } else {
                r.hosts.join(",")
            };
            let keys = if r.keys.is_empty() {
                "-".to_string()
            } else {
                r.keys.join("; ")
            };
            writeln!(
                w,
                "{:<14} {:<22} {:<7} {} {:<24} {}",
                r.login,
                r.name.chars().take(22).collect::<String>(),
                r.level.as_deref().unwrap_or("?"),
                until,
                hosts,
                keys
            )?;
        }
        let ending = self
            .rows
            .iter()
            .filter(|r| !r.expired && r.days_left.is_some_and(|d| d <= soon))
            .count();
        writeln!(
            w,
            "{} people; {} end within {soon} days; {} ended",
            self.rows.len(),
            ending,
            self.rows.iter().filter(|r| r.expired).count()
        )
    }

    fn json(&self) -> Value {
        json!({ "today": date::format_day(self.today), "people": self.rows })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `access rotate`: the deadline, who was (or would be) renewed, who else ends before it.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub deadline: i64,
    pub dry_run: bool,
    /// The logins asked to renew.
    pub renew: Vec<String>,
    /// What renewing did (empty in a dry run).
    pub renewed: Vec<Outcome>,
    pub not_renewed: Vec<Row>,
}

impl Rendered for Rotation {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let deadline = date::format_day(self.deadline);
        writeln!(
            w,
            "next deadline: {deadline} (renewed people work through that day)"
        )?;
        if self.dry_run {
            for l in &self.renew {
                writeln!(w, "would renew {l} until {deadline}")?;
            }
        } else {
            outcomes_human(out, &self.renewed, w)?;
        }
        if self.not_renewed.is_empty() {
            writeln!(w, "nobody else ends before the deadline")?;
        } else {
            writeln!(
                w,
                "not renewed (their access ends as shown; renew with --renew LOGIN):"
            )?;
            for r in &self.not_renewed {
                writeln!(w, "  {:<14} {:<22} until {}", r.login, r.name, r.until)?;
            }
        }
        Ok(())
    }

    fn json(&self) -> Value {
        json!({
            "deadline": date::format_day(self.deadline),
            "dry_run": self.dry_run,
            "renewed": if self.dry_run { json!(self.renew) } else { json!(self.renewed) },
            "not_renewed": self.not_renewed,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `access remind`: each reminder due today and what became of it, the digest, the record.
impl Rendered for Reminders {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let days: Vec<String> = self.thresholds.iter().map(u32::to_string).collect();
        if self.reminders.is_empty() {
            writeln!(
                w,
                "nobody is due a reminder today ({} day(s) before the last day; each is sent once)",
                days.join(", ")
            )?;
        }
        for d in &self.reminders {
            let (word, style, what) = match &d.outcome {
                remind::Outcome::WouldSend => (
                    "would mail",
                    Style::Yellow,
                    d.mail.clone().unwrap_or_default(),
                ),
                remind::Outcome::Sent => {
                    ("mailed", Style::Green, d.mail.clone().unwrap_or_default())
                }
                remind::Outcome::NotMailed => (
                    "not mailed",
                    Style::Red,
                    d.problem.clone().unwrap_or_default(),
                ),
                remind::Outcome::Failed(why) => ("failed", Style::Red, why.clone()),
            };
            writeln!(
                w,
                "{} {:<14} until {} ({}-day reminder): {what}\n  extend: {}",
                out.paint(style, &format!("{word:<10}")),
                d.login,
                d.until,
                d.threshold,
                d.command
            )?;
        }
        writeln!(w, "digest to Mattermost: {}", self.digest)?;
        writeln!(w, "record: {}", self.record.display())
    }

    fn json(&self) -> Value {
        json!({
            "today": date::format_day(self.today),
            "dry_run": self.dry_run,
            "thresholds": self.thresholds,
            "reminders": self.reminders,
            "sent": self.reminders.iter().filter(|d| d.outcome == remind::Outcome::Sent).count(),
            "digest": self.digest,
            "digest_posted": self.digest_posted,
            "failure": self.failure,
            "record": self.record,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Reminders {
    /// 1 when a mail or the digest failed (the timer's unit then shows as failed).
    pub fn exit_code(&self) -> i32 {
        let failed = self.failure.is_some()
            || self.digest.starts_with("failed")
            || self
                .reminders
                .iter()
                .any(|d| matches!(d.outcome, remind::Outcome::Failed(_)));
        if failed {
            EXIT_HOST_FAILED
        } else {
            EXIT_OK
        }
    }

    /// Said on stderr: warnings first, then why the run stopped.
    pub fn notes(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for warning in &self.warnings {
            writeln!(w, "{}: {warning}", out.paint(Style::Yellow, "warning"))?;
        }
        if let Some(f) = &self.failure {
            writeln!(
                w,
                "{}: stopped: {f}. What is marked failed was neither sent nor recorded: the next run tries again",
                out.paint(Style::Red, "picaops access remind")
            )?;
        }
        Ok(())
    }
}

/// A login the directory and a host's helper disagree on (`None`: no access there).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub login: String,
    pub directory: Option<String>,
    pub host: Option<String>,
}

/// One host of `access audit`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HostAudit {
    pub host: String,
    /// Who the directory lets in here, with their last day.
    pub directory: BTreeMap<String, String>,
    /// Who the host's helper lets in (`None`: it could not be asked).
    pub helper: Option<BTreeMap<String, String>>,
    pub mismatches: Vec<Mismatch>,
    /// Why the helper could not be asked, or its answer not read.
    pub error: Option<String>,
}

/// `access audit`.
#[derive(Clone, Debug)]
pub struct Audit {
    pub today: i64,
    pub hosts: Vec<HostAudit>,
    pub anomalies: Vec<Anomaly>,
}

impl Audit {
    /// Anomalies, mismatches and hosts that could not be asked.
    pub fn problems(&self) -> usize {
        self.anomalies.len()
            + self
                .hosts
                .iter()
                .map(|h| h.mismatches.len() + usize::from(h.error.is_some()))
                .sum::<usize>()
    }

    /// 1 when anything is flagged, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.problems() == 0 {
            EXIT_OK
        } else {
            EXIT_HOST_FAILED
        }
    }
}

impl Rendered for Audit {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        let access = |u: &Option<String>| {
            u.as_deref()
                .map_or("no access".into(), |u| format!("until {u}"))
        };
        for h in &self.hosts {
            writeln!(w, "{}", out.paint(Style::Bold, &h.host))?;
            if let Some(e) = &h.error {
                let msg = format!("cannot ask the helper: {e}");
                writeln!(w, "  {}", out.paint(Style::Red, &msg))?;
            }
            if h.directory.is_empty() {
                writeln!(w, "  nobody from the directory can log in")?;
            }
            for (login, until) in &h.directory {
                writeln!(w, "  {login:<14} until {until}")?;
            }
            for m in &h.mismatches {
                writeln!(
                    w,
                    "  {} {}: directory says {}, the host says {}",
                    out.paint(Style::Red, "MISMATCH"),
                    m.login,
                    access(&m.directory),
                    access(&m.host),
                )?;
            }
        }
        if !self.anomalies.is_empty() {
            writeln!(w, "{}", out.paint(Style::Bold, "anomalies"))?;
            for a in &self.anomalies {
                let kind = out.paint(Style::Yellow, &a.kind);
                writeln!(w, "  {kind} {}: {}", a.logins.join(", "), a.detail)?;
            }
        }
        writeln!(w, "{} problem(s) found", self.problems())
    }

    fn json(&self) -> Value {
        json!({
            "today": date::format_day(self.today),
            "hosts": self.hosts,
            "anomalies": self.anomalies,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One machine asked to sync after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSync {
    pub host: String,
    /// Why it did not sync (its timer will, within 5 minutes).
    pub failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(r: &dyn Rendered) -> String {
        let mut w = Vec::new();
        r.human(&Output::plain(), &mut w).unwrap();
        String::from_utf8(w).unwrap()
    }

    fn outcome(action: &str, changes: &[&str], after: &[&str]) -> Outcome {
        Outcome {
            login: "ann".into(),
            action: action.into(),
            changes: changes.iter().map(|s| s.to_string()).collect(),
            hosts_before: vec![],
            hosts_after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn changes_render_as_text_and_as_the_people_document() {
        let c = Changes::granted(outcome("created", &["level member"], &[]));
        assert_eq!(
            human(&c),
            "ann created\n  level member\n  note: no machine listed: give --hosts NAME,… or --all-hosts to let them log in somewhere\n"
        );
        assert_eq!(c.json()["people"][0]["action"], "created");
        let c = Changes::of(vec![outcome("unchanged", &[], &[])]);
        assert_eq!(human(&c), "ann unchanged\n", "only grant reminds");
    }

    #[test]
    fn an_audit_counts_every_problem_and_renders_them() {
        let mut a = Audit {
            today: 20000,
            hosts: vec![HostAudit {
                host: "bob".into(),
                directory: [("ann".to_string(), "2024-10-08".to_string())].into(),
                helper: Some(BTreeMap::new()),
                mismatches: vec![Mismatch {
                    login: "ann".into(),
                    directory: Some("2024-10-08".into()),
                    host: None,
                }],
                error: None,
            }],
            anomalies: vec![],
        };
        assert_eq!((a.problems(), a.exit_code()), (1, EXIT_HOST_FAILED));
        assert_eq!(
            human(&a),
            "bob\n  ann            until 2024-10-08\n  MISMATCH ann: directory says until 2024-10-08, the host says no access\n1 problem(s) found\n"
        );
        let doc = a.json();
        assert_eq!(doc["today"], "2024-10-04");
        assert_eq!(doc["hosts"][0]["mismatches"][0]["host"], Value::Null);
        a.hosts[0] = HostAudit {
            host: "alice".into(),
            directory: BTreeMap::new(),
            helper: None,
            mismatches: vec![],
            error: Some("exit 127".into()),
        };
        a.anomalies.push(Anomaly {
            kind: "weak-key".into(),
            logins: vec!["ben".into()],
            detail: "ssh-dss".into(),
        });
        assert_eq!(a.problems(), 2);
        assert_eq!(
            human(&a),
            "alice\n  cannot ask the helper: exit 127\n  nobody from the directory can log in\nanomalies\n  weak-key ben: ssh-dss\n2 problem(s) found\n"
        );
        a.hosts[0].error = None;
        a.anomalies.clear();
        assert_eq!((a.problems(), a.exit_code()), (0, EXIT_OK));
    }

    fn row(login: &str, days_left: Option<i64>, hosts: &[&str]) -> Row {
        Row {
            login: login.into(),
            name: format!("{login} Someone With A Long Family Name"),
            mail: None,
            level: Some("member".into()),
            uid_number: Some(2000),
            until: days_left.map_or("never".into(), |d| date::format_day(20000 + d)),
            days_left,
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            keys: vec![],
            expired: days_left.is_some_and(|d| d <= 0),
        }
    }

    #[test]
    fn the_list_is_a_table_that_counts_who_ends_soon() {
        let l = Listing {
            today: 20000,
            soon: 30,
            rows: vec![
                row("ann", Some(9), &["*"]),
                row("ben", Some(0), &["bob", "alice"]),
                row("cid", None, &[]),
            ],
        };
        assert_eq!(
            human(&l),
            "LOGIN          NAME                   LEVEL   UNTIL       MACHINES                 KEYS\n\
             ann            ann Someone With A Lon member  2024-10-13  all                      -\n\
             ben            ben Someone With A Lon member  2024-10-04  bob,alice                -\n\
             cid            cid Someone With A Lon member  never                                -\n\
             3 people; 1 end within 30 days; 1 ended\n"
        );
        let doc = l.json();
        assert_eq!(doc["today"], "2024-10-04");
        assert_eq!(doc["people"][1]["expired"], true);
    }

    #[test]
    fn a_dry_rotation_names_who_would_be_renewed() {
        let r = Rotation {
            deadline: 20000,
            dry_run: true,
            renew: vec!["ann".into()],
            renewed: vec![],
            not_renewed: vec![],
        };
        assert_eq!(
            human(&r),
            "next deadline: 2024-10-04 (renewed people work through that day)\nwould renew ann until 2024-10-04\nnobody else ends before the deadline\n"
        );
        assert_eq!(r.json()["renewed"], json!(["ann"]));
    }
}
