//! The `access.remind:` block: mailing people before their access ends (`picaops access
//! remind`, and the timer `apply` installs on one machine). Read strictly: thresholds, the
//! timer's schedule, the SMTP relay (STARTTLS or TLS only: the password never crosses the
//! network in clear) and the Mattermost webhook, each mistake with its file:line:column. That
//! `machine:` exists is the inventory's check (`crate::inventory::sections`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::schedule::check_schedule;
use super::{err, located};
use crate::diagnostic::{Diagnostic, Place};
use crate::located::Located;

/// Days before the last day that works: Picasoft's default reminders.
pub const DEFAULT_THRESHOLDS: [u32; 3] = [30, 7, 1];
/// When the timer runs by default (systemd calendar, the machine's local time).
pub const DEFAULT_SCHEDULE: &str = "*-*-* 09:00";
/// Mail submission (STARTTLS).
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// SMTP over TLS from the first byte ("implicit TLS", RFC 8314).
pub const IMPLICIT_TLS_PORT: u16 = 465;

/// The checked `remind:` block.
#[derive(Clone, Debug, Serialize)]
pub struct Remind {
    /// Where `apply` installs the timer (None: reminders are sent from the workstation only).
    pub machine: Option<Located<String>>,
    pub schedule: String,
    /// Distinct, largest first.
    pub thresholds: Vec<u32>,
    pub smtp: Smtp,
    /// The secret name holding the Mattermost incoming webhook's URL (it holds a token).
    pub mattermost_webhook: Option<String>,
    /// The webhook may be an http:// URL (a hook on a network the team trusts); else https only.
    pub webhook_plain_http: bool,
    pub place: Place,
}

#[derive(Clone, Debug, Serialize)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    /// `Name <address>` or an address: the sender of every reminder.
    pub from: String,
    pub user: String,
    /// The secret name of the SMTP password.
    pub password: String,
    /// A PEM file of the CA that signed the relay's certificate (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// The block as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RemindDoc {
    machine: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    thresholds: Option<Spanned<Vec<Spanned<u32>>>>,
    smtp: SmtpDoc,
    mattermost_webhook: Option<Spanned<String>>,
    #[serde(default)]
    webhook_plain_http: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SmtpDoc {
    host: Spanned<String>,
    port: Option<u16>,
    from: Spanned<String>,
    user: String,
    password: Spanned<String>,
    ca_file: Option<Spanned<String>>,
}

fn secret_name(file: &Path, s: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if !crate::secrets::valid_name(&s.value) {
        diags.push(err(
            file,
            s,
            format!("`{}` is not a secret name", s.value),
            "write the NAME of the secret (as in your `pass` store or secrets directory), never the value itself",
        ));
    }
}

impl RemindDoc {
    /// Checks the block written in `file` at `place`; problems go to `diags`.
    pub fn resolve(self, file: &Path, place: Place, diags: &mut Vec<Diagnostic>) -> Option<Remind> {
        let before = diags.len();
        let dir = file.parent().unwrap_or(Path::new("."));
        let schedule = match &self.schedule {
            None => DEFAULT_SCHEDULE.to_string(),
            Some(s) => {
                if let Err(why) = check_schedule(&s.value) {
                    diags.push(err(
                        file,
                        s,
                        format!("schedule `{}` is not valid: {why}", s.value.trim()),
                        "systemd OnCalendar syntax, e.g. `daily`, `*-*-* 09:00`; check with `systemd-analyze calendar '…'`",
                    ));
                }
                s.value.trim().to_string()
            }
        };
        let thresholds = match &self.thresholds {
            None => DEFAULT_THRESHOLDS.to_vec(),
            Some(list) => {
                let mut days: Vec<u32> = Vec::new();
                for t in &list.value {
                    if t.value == 0 || t.value > 366 {
                        diags.push(err(
                            file,
                            t,
                            format!("{} is no number of days before the end", t.value),
                            "write days between 1 and 366, for example [30, 7, 1]",
                        ));
                    } else if days.contains(&t.value) {
                        diags.push(err(
                            file,
                            t,
                            format!("{} days is listed twice", t.value),
                            "list each threshold once",
                        ));
                    } else {
                        days.push(t.value);
                    }
                }
                if list.value.is_empty() {
                    diags.push(err(
                        file,
                        list,
                        "`thresholds` is empty: nobody would be reminded".into(),
                        "remove it for 30, 7 and 1 days, or list yours",
                    ));
                }
                days.sort_unstable_by(|a, b| b.cmp(a));
                days
            }
        };
        let s = self.smtp;
        let host = s.host.value.trim().to_string();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
            diags.push(err(file, &s.host, format!("`{host}` is not a host name or address"), "write the relay's name as its certificate names it, for example mail.picasoft.net (the port goes under `port:`)"));
        }
        if let Err(e) = s.from.value.parse::<lettre::message::Mailbox>() {
            diags.push(err(
                file,
                &s.from,
                format!("`{}` is not a mail address: {e}", s.from.value),
                "write `tech@picasoft.net` or `Picasoft tech <tech@picasoft.net>`",
            ));
        }
        secret_name(file, &s.password, diags);
        let ca_file = s.ca_file.map(|c| {
            let p = dir.join(&c.value);
            if !p.is_file() {
                diags.push(err(file, &c, format!("CA file {} does not exist", p.display()), "give the PEM file of the CA that signed the relay's certificate (relative to this file), or remove `ca_file` to use the system's CAs"));
            }
            p
        });
        if let Some(w) = &self.mattermost_webhook {
            secret_name(file, w, diags);
        }
        if diags.len() > before {
            return None;
        }
        Some(Remind {
            machine: self.machine.map(|m| located(file, m)),
            schedule,
            thresholds,
            smtp: Smtp {
                host,
                port: s.port.unwrap_or(DEFAULT_SMTP_PORT),
                from: s.from.value,
                user: s.user,
                password: s.password.value,
                ca_file,
            },
            mattermost_webhook: self.mattermost_webhook.map(|w| w.value),
            webhook_plain_http: self.webhook_plain_http,
            place,
        })
    }
}
