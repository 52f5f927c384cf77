//! Reminders before access ends (`picaops access remind`, and the timer apply installs): who is
//! due which reminder today, the mail each gets (with the exact command that extends them), the
//! team's digest, and the record of what was sent. The mail goes through [`super::mail`];
//! nothing here prints.
//!
//! The rule: a person whose last day is `d` days away (0: today is the last) is due the smallest
//! threshold `t ≥ d`, once per end date. So a daily run mails at 30, 7 and 1 day(s), and a run
//! that comes after a few missed days sends the nearest threshold once, not the ones it missed.
//! A renewal gives a new end date, hence new reminders. The address is the directory's `mail`
//! attribute (Picasoft's scheme, set by `access grant --mail`); a person without one is named
//! in the digest instead.
//!
//! The record lives on the machine that runs the reminders, in its state directory: the
//! timer's in `/var/lib/picaops/remind/sent.json` (kept across reboots and upgrades, unlike
//! /run, /tmp or /var/cache), a workstation's in `$XDG_STATE_HOME/picaops/remind/sent.json`.
//! An entry is written right after its mail was accepted, so a failure half-way sends nothing
//! twice, and a refused login records nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::date;
use super::directory::{mail_error, Directory, Endpoint, Person};
use super::mail::{Mail, Mailer, Relay, SendError, Webhook};
use crate::secrets::Secret;

/// Where the timer's run keeps its record on the machine.
pub const HOST_RECORD: &str = "/var/lib/picaops/remind/sent.json";

/// Why a run sent nothing at all (before the first mail); failures after it are in the report.
#[derive(Debug, thiserror::Error)]
pub enum RemindError {
    #[error("cannot read the record of sent reminders {}: {detail}; nothing was sent. Fix or move the file away (everyone due would then be reminded again)", .path.display())]
    Record { path: PathBuf, detail: String },
    #[error("cannot write the record of sent reminders {}: {detail}", .path.display())]
    RecordWrite { path: PathBuf, detail: String },
    #[error(transparent)]
    Send(#[from] SendError),
}

/// The renewal policy, as the extend command's date needs it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// Largest first.
    pub thresholds: Vec<u32>,
    /// (month, day) each semester starts.
    pub semester_starts: Vec<(u32, u32)>,
    pub grace_days: u32,
}

/// The threshold a person `days_left` days before their last day is due: the smallest one at
/// or above it. None before the largest threshold and after the last day.
pub fn due_threshold(thresholds: &[u32], days_left: i64) -> Option<u32> {
    if days_left < 0 {
        return None;
    }
    thresholds
        .iter()
        .copied()
        .filter(|&t| i64::from(t) >= days_left)
        .min()
}

/// What one person is due today.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Reminder {
    pub login: String,
    pub name: String,
    /// The directory's `mail`; None: no usable address (see `problem`).
    pub mail: Option<String>,
    /// Last day access works (YYYY-MM-DD).
    pub until: String,
    pub days_left: i64,
    pub threshold: u32,
    /// What a member of the tech team runs to extend them.
    pub command: String,
    /// Why no mail can go (no `mail` in the directory, or one that is no address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `picaops access extend LOGIN --until D`, D the policy's next deadline after the last day.
pub fn extend_command(login: &str, last_day: i64, policy: &Policy) -> String {
    let until = date::next_semester_deadline(last_day, &policy.semester_starts, policy.grace_days)
        .unwrap_or(last_day + 183);
    format!(
        "picaops access extend {login} --until {}",
        date::format_day(until)
    )
}

/// Who is due what today, in the directory's order; those already in `record` are left out.
pub fn due(people: &[Person], policy: &Policy, record: &Record, today: i64) -> Vec<Reminder> {
    people
        .iter()
        .filter(|p| p.broken.is_none() && super::directory::valid_login(&p.login))
        .filter_map(|p| {
            // `shadowExpire` is the first day refused: the last day that works is the one before.
            let last_day = p.shadow_expire.day()? - 1;
            let days_left = last_day - today;
            let threshold = due_threshold(&policy.thresholds, days_left)?;
            let until = date::format_day(last_day);
            if record.has(&p.login, &until, threshold) {
                return None;
            }
            let problem = match p.mail.as_deref() {
                None => Some("no `mail` in the directory".to_string()),
                Some(m) => mail_error(m),
            };
            let name = p.display_name();
            Some(Reminder {
                login: p.login.clone(),
                name: if name.is_empty() {
                    p.login.clone()
                } else {
                    name
                },
                mail: if problem.is_none() {
                    p.mail.clone()
                } else {
                    None
                },
                until,
                days_left,
                threshold,
                command: extend_command(&p.login, last_day, policy),
                problem,
            })
        })
        .collect()
}

fn in_days(d: i64) -> String {
    match d {
        0 => "today is the last day".into(),
        1 => "in 1 day".into(),
        d => format!("in {d} days"),
    }
}

/// The mail of one reminder.
pub fn mail_of(r: &Reminder, policy: &Policy) -> Mail {
    let thresholds: Vec<String> = policy.thresholds.iter().map(u32::to_string).collect();
    // Short lines (under 76 characters whatever the names): the mail stays plain 7-bit text,
    // the command one line a reader can copy.
    let body = format!(
        "Hello {name},\n\
         \n\
         Your access to Picasoft's machines (login {login}) ends on\n\
         {until} ({when}).\n\
         From the day after, SSH logins with your keys are refused.\n\
         \n\
         To keep it, ask the tech team (answer this mail, or on\n\
         Mattermost). A member of the team extends it with:\n\
         \n\
         \x20   {command}\n\
         \n\
         If you no longer need it, there is nothing to do.\n\
         \n\
         Reminders are sent {days} day(s) before the end.\n\
         -- \n\
         picaops, for Picasoft's tech team\n",
        name = r.name,
        login = r.login,
        until = r.until,
        when = in_days(r.days_left),
        command = r.command,
        days = thresholds.join(", "),
    );
    Mail {
        to_name: (r.name != r.login).then(|| r.name.clone()),
        to: r.mail.clone().unwrap_or_default(),
        subject: format!(
            "Your Picasoft access ends on {} ({})",
            r.until,
            in_days(r.days_left)
        ),
        body,
    }
}

/// One line per reminder for the team's Mattermost channel (Markdown).
pub fn digest(report: &Reminders) -> String {
    let mut text = format!(
        "**picaops access remind**, {}: access ending soon\n",
        date::format_day(report.today)
    );
    for r in &report.reminders {
        let what = match (&r.outcome, &r.mail) {
            (Outcome::Sent, Some(m)) => format!("reminded at {m}"),
            (Outcome::Failed(why), _) => format!("**mail failed**: {why}"),
            _ => format!(
                "**not mailed**: {}",
                r.problem.as_deref().unwrap_or("no address")
            ),
        };
        text.push_str(&format!(
            "- {} ({}) ends {} ({}), {what}. Extend: `{}`\n",
            r.login,
            r.name,
            r.until,
            in_days(r.days_left),
            r.command
        ));
    }
    text
}

/// What was sent, by person, end date and threshold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub sent: Vec<Sent>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sent {
    pub login: String,
    /// The end date the reminder was about (YYYY-MM-DD).
    pub until: String,
    pub threshold: u32,
    /// The address mailed (None: told in the digest only).
    pub to: Option<String>,
    /// The day it was sent.
    pub on: String,
}

/// Entries about end dates this far in the past are dropped.
const KEEP_DAYS: i64 = 60;

impl Record {
    pub fn has(&self, login: &str, until: &str, threshold: u32) -> bool {
        self.sent
            .iter()
            .any(|s| s.login == login && s.until == until && s.threshold == threshold)
    }

    /// The record at `path` (empty when there is none yet). Read as a regular, private file.
    pub fn load(path: &Path) -> Result<Record, RemindError> {
        let bad = |detail: String| RemindError::Record {
            path: path.to_path_buf(),
            detail,
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(bad(e.to_string())),
            Ok(m) if !m.is_file() => return Err(bad("not a regular file".into())),
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(format!("not a record ({e})")))
    }

    /// Writes the record atomically (mode 0600, its directory 0700 when created), keeping only
    /// end dates of the last [`KEEP_DAYS`] days and after.
    pub fn save(&mut self, path: &Path, today: i64) -> Result<(), RemindError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let bad = |detail: String| RemindError::RecordWrite {
            path: path.to_path_buf(),
            detail,
        };
        self.sent
            .retain(|s| date::parse_date(&s.until).map_or(true, |d| d >= today - KEEP_DAYS));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| bad(e.to_string()))?;
        let tmp = dir.join(format!(".sent.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))? + "\n";
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| bad(e.to_string()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| bad(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| bad(e.to_string()))
    }
}

/// What became of one reminder.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Outcome {
    /// `--dry-run`: what would go.
    WouldSend,
    Sent,
    /// No usable address: named in the digest.
    NotMailed,
    /// Not sent (and not recorded: the next run tries again).
    Failed(String),
}

/// One reminder and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Done {
    #[serde(flatten)]
    pub reminder: Reminder,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl std::ops::Deref for Done {
    type Target = Reminder;
    fn deref(&self) -> &Reminder {
        &self.reminder
    }
}

/// What a run did (rendered in [`super::report`]).
#[derive(Clone, Debug, Serialize)]
pub struct Reminders {
    pub today: i64,
    pub dry_run: bool,
    pub thresholds: Vec<u32>,
    pub record: PathBuf,
    pub reminders: Vec<Done>,
    /// "posted", "not configured", "nothing to say", "would post", or why it failed.
    pub digest: String,
    pub digest_posted: bool,
    /// Why the run stopped before the end (the relay refused the login…): nothing after it
    /// was sent or recorded.
    pub failure: Option<String>,
    /// Said before the result (for example: a timer elsewhere keeps its own record).
    pub warnings: Vec<String>,
}

/// Everything a run needs, secrets resolved (from the inventory on the workstation, from the
/// remind file's root-only files on the timer's machine).
pub struct Settings {
    pub endpoint: Endpoint,
    /// Reader DN and password (None: anonymous).
    pub bind: Option<(String, Secret)>,
    pub policy: Policy,
    pub relay: Relay,
    pub webhook: Option<Webhook>,
    pub record: PathBuf,
    pub warnings: Vec<String>,
}

/// The directory's people, read as the hosts read.
pub async fn people(s: &Settings) -> Result<Vec<Person>, super::directory::DirectoryError> {
    let bind = s.bind.as_ref().map(|(dn, pw)| (dn.as_str(), pw));
    let mut d = Directory::open(&s.endpoint, bind).await?;
    let r = d.people().await;
    d.close().await;
    r
}

/// Sends what is due today to `people` (or, `dry_run`, only says what would go), recording each
/// mail as it is accepted, then posts the digest.
pub fn run(
    s: &Settings,
    people: &[Person],
    today: i64,
    dry_run: bool,
) -> Result<Reminders, RemindError> {
    let mut record = Record::load(&s.record)?;
    let due = due(people, &s.policy, &record, today);
    let mut report = Reminders {
        today,
        dry_run,
        thresholds: s.policy.thresholds.clone(),
        record: s.record.clone(),
        reminders: Vec::new(),
        digest: String::new(),
        digest_posted: false,
        failure: None,
        warnings: if dry_run {
            Vec::new()
        } else {
            s.warnings.clone()
        },
    };
    let mailer = if dry_run || due.iter().all(|r| r.mail.is_none()) {
        None
    } else {
        Some(Mailer::new(&s.relay)?)
    };
    for r in due {
        let outcome = match (&mailer, &r.mail, &report.failure) {
            (_, None, _) => Outcome::NotMailed,
            (None, Some(_), _) => Outcome::WouldSend,
            (Some(_), Some(_), Some(stop)) => Outcome::Failed(format!("not tried: {stop}")),
            (Some(m), Some(to), None) => match m.send(&mail_of(&r, &s.policy)) {
                Ok(()) => {
                    record.sent.push(Sent {
                        login: r.login.clone(),
                        until: r.until.clone(),
                        threshold: r.threshold,
                        to: Some(to.clone()),
                        on: date::format_day(today),
                    });
                    record.save(&s.record, today)?;
                    Outcome::Sent
                }
                Err(e) if e.recipient_only() => Outcome::Failed(e.to_string()),
                Err(e) => {
                    let why = match &e {
                        SendError::Relay { .. } => format!("{e}; check the relay's settings and the secret of `access.remind.smtp.password`"),
                        _ => e.to_string(),
                    };
                    report.failure = Some(why.clone());
                    Outcome::Failed(why)
                }
            },
        };
        report.reminders.push(Done {
            reminder: r,
            outcome,
        });
    }
    let told: BTreeSet<usize> = report
        .reminders
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            matches!(
                d.outcome,
                Outcome::Sent | Outcome::NotMailed | Outcome::Failed(_)
            )
        })
        .map(|(i, _)| i)
        .collect();
    report.digest = match (&s.webhook, dry_run, told.is_empty()) {
        (None, ..) => "not configured".into(),
        (Some(_), true, _) => "would post".into(),
        (Some(_), false, true) => "nothing to say".into(),
        (Some(hook), false, false) => match hook.post(&digest(&report)) {
            Ok(()) => {
                report.digest_posted = true;
                // People without an address have been told about now: once per threshold.
                for d in report
                    .reminders
                    .iter()
                    .filter(|d| d.outcome == Outcome::NotMailed)
                {
                    record.sent.push(Sent {
                        login: d.login.clone(),
                        until: d.until.clone(),
                        threshold: d.threshold,
                        to: None,
                        on: date::format_day(today),
                    });
                }
                record.save(&s.record, today)?;
                "posted".into()
            }
            Err(e) => format!("failed: {e}"),
        },
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::directory::Expiry;

    fn policy() -> Policy {
        Policy {
            thresholds: vec![30, 7, 1],
            semester_starts: vec![(2, 1), (9, 1)],
            grace_days: 30,
        }
    }

    /// A person whose last day is `last_day`.
    fn person(login: &str, last_day: i64, mail: Option<&str>) -> Person {
        Person {
            dn: format!("uid={login},ou=People,dc=x"),
            login: login.into(),
            uid_number: Some(2000),
            gid_number: Some(502),
            given_name: Some("Ann".into()),
            sn: Some("Lee".into()),
            mail: mail.map(String::from),
            shadow_expire: Expiry::Until(last_day + 1),
            keys: vec![],
            hosts: vec![],
            object_classes: vec![],
            broken: None,
        }
    }

    /// Runs the threshold rule on each of `days` (the days runs happen), recording what is
    /// sent: the thresholds sent, in order.
    fn runs(last_day: i64, days: impl Iterator<Item = i64>) -> Vec<(i64, u32)> {
        let mut record = Record::default();
        let people = [person("ann", last_day, Some("ann@example.org"))];
        let mut sent = Vec::new();
        for today in days {
            for r in due(&people, &policy(), &record, today) {
                sent.push((last_day - today, r.threshold));
                record.sent.push(Sent {
                    login: r.login,
                    until: r.until,
                    threshold: r.threshold,
                    to: r.mail,
                    on: date::format_day(today),
                });
            }
        }
        sent
    }

    #[test]
    fn the_due_threshold_is_the_nearest_one_at_or_above_the_days_left() {
        let t = [30, 7, 1];
        let table = [
            (45, None),
            (31, None),
            (30, Some(30)),
            (8, Some(30)),
            (7, Some(7)),
            (2, Some(7)),
            (1, Some(1)),
            (0, Some(1)),
            (-1, None),
        ];
        for (days, want) in table {
            assert_eq!(due_threshold(&t, days), want, "{days} days left");
        }
    }

    #[test]
    fn a_daily_run_sends_each_threshold_exactly_once() {
        let last = 20_100;
        assert_eq!(
            runs(last, last - 40..=last + 3),
            [(30, 30), (7, 7), (1, 1)],
            "one run a day from 40 days before to 3 days after"
        );
        // Two runs a day change nothing.
        let twice = (last - 40..=last + 3).flat_map(|d| [d, d]);
        assert_eq!(runs(last, twice), [(30, 30), (7, 7), (1, 1)]);
    }

    #[test]
    fn missed_runs_send_the_nearest_threshold_once_not_all_of_them() {
        let last = 20_100;
        // Nothing ran between 40 and 5 days before: 7 goes (once), 30 never does.
        let days = std::iter::once(last - 40).chain(last - 5..=last);
        assert_eq!(runs(last, days), [(5, 7), (1, 1)]);
        // The first run is on the last day: only the 1-day reminder.
        assert_eq!(runs(last, [last, last].into_iter()), [(0, 1)]);
        // After the last day: nothing.
        assert_eq!(runs(last, [last + 1].into_iter()), []);
    }

    #[test]
    fn a_new_end_date_starts_the_reminders_again() {
        let mut record = Record::default();
        let today = 20_000;
        let p = [person("ann", today + 7, Some("ann@example.org"))];
        let r = due(&p, &policy(), &record, today);
        assert_eq!(r.len(), 1);
        record.sent.push(Sent {
            login: "ann".into(),
            until: r[0].until.clone(),
            threshold: 7,
            to: None,
            on: date::format_day(today),
        });
        assert!(due(&p, &policy(), &record, today).is_empty());
        // Extended to 30 days from now: the 30-day reminder of the new date is due.
        let p = [person("ann", today + 30, Some("ann@example.org"))];
        assert_eq!(due(&p, &policy(), &record, today)[0].threshold, 30);
    }

    #[test]
    fn the_mail_names_the_end_date_and_the_command_that_extends() {
        // 2026-09-01 is day 20697: last day 2026-10-01, the next deadline after it is
        // 2027-02-01 + 30 days.
        let last = date::parse_date("2026-10-01").unwrap();
        let p = [
            person("ann", last, Some("ann@example.org")),
            person("ben", last, None),
            person("cid", last, Some("not an address")),
        ];
        let r = due(&p, &policy(), &Record::default(), last - 7);
        assert_eq!(r[0].command, "picaops access extend ann --until 2027-03-03");
        assert_eq!(
            (r[1].mail.as_deref(), r[1].problem.as_deref()),
            (None, Some("no `mail` in the directory"))
        );
        assert!(r[2].mail.is_none() && r[2].problem.is_some());
        let m = mail_of(&r[0], &policy());
        assert_eq!(m.to, "ann@example.org");
        assert_eq!(
            m.subject,
            "Your Picasoft access ends on 2026-10-01 (in 7 days)"
        );
        assert!(
            m.body
                .contains("\n    picaops access extend ann --until 2027-03-03\n"),
            "{}",
            m.body
        );
        assert!(m.body.contains("30, 7, 1 day(s)"), "{}", m.body);
    }

    #[test]
    fn the_record_survives_a_reload_and_forgets_old_end_dates() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/remind/sent.json");
        assert_eq!(Record::load(&path).unwrap(), Record::default());
        let today = 20_000;
        let entry = |until: i64| Sent {
            login: "ann".into(),
            until: date::format_day(until),
            threshold: 1,
            to: None,
            on: date::format_day(today),
        };
        let mut r = Record {
            sent: vec![entry(today - KEEP_DAYS - 1), entry(today + 1)],
        };
        r.save(&path, today).unwrap();
        let back = Record::load(&path).unwrap();
        assert_eq!(back.sent, [entry(today + 1)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "{").unwrap();
        let e = Record::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("nothing was sent") && e.contains("sent.json"),
            "{e}"
        );
    }
}
