//! The workstation's side of `picaops access …`, without the command line: the LDAP session
//! (admin or reader, passwords from the secret store), checking a request before the directory
//! is asked, the changes (through [`super::manage`]), the views `list`, `rotate` and `audit`
//! compute, the reminders before access ends ([`super::remind`]), and the push that asks a
//! person's machines to sync at once.
//!
//! Every function returns a typed result ([`super::report`] renders it for people and scripts)
//! or an [`AccessError`] that says whether it is a usage error (nothing was contacted or changed,
//! exit 2) or a failure (exit 1). Nothing here prints.
//!
//! The push and the audit's `status` call run the helper on several machines with
//! [`crate::run::run_command`], the pool `picaops run` uses. They are no [`crate::lifecycle::Phase`]:
//! there is no state to read and diff, a machine that does not sync is a warning (its timer
//! syncs within 5 minutes), not a failed run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::Access;
use super::date::{self, DateError};
use super::directory::{
    login_error, mail_error, name_error, read_ca, valid_login, Directory, DirectoryError, Endpoint,
    Person,
};
use super::keys::{self, KeyError, PublicKey};
use super::manage::{self, Grant, Outcome, Row};
use super::remind::{self, RemindError, Reminders};
use super::remind_file::{self, SettingsError};
use super::report::{Audit, HostAudit, HostSync, Listing, Mismatch, Rotation};
use crate::inventory::Inventory;
use crate::output::{EXIT_HOST_FAILED, EXIT_USAGE};
use crate::run::{run_command, RunReport, RunRequest};
use crate::secrets::SecretError;
use crate::transport::{CommandLine, Target, TransportError};

/// Where apply installs the helper on every host.
pub const HELPER: &str = "/usr/local/sbin/picaops-access";

/// Largest public key file `--key` reads (an RSA-16384 key line is about 3 KiB).
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Why an access command did nothing, or stopped. [`AccessError::exit_code`] tells usage errors
/// (refused before anything changed: exit 2) from failures (the directory or a host: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the inventory at {} has no `access:` section: add one naming the directory (see README, \"Access\")", .inventory.display())]
    NoAccessSection { inventory: PathBuf },
    #[error("{}", login_error(.0))]
    InvalidLogin(String),
    #[error("`{level}` is not a level; the inventory's levels: {}", .known.join(", "))]
    UnknownLevel { level: String, known: Vec<String> },
    /// A `--name` or `--mail` the directory must not hold.
    #[error("{0}; nothing was changed")]
    InvalidField(String),
    /// `--until` / `--next-semester` / `--cut-off-now` give no end date to store.
    #[error("{0}; nothing was changed")]
    EndDate(DateError),
    /// A `--key` file that is no public key file (which file, which line).
    #[error("{0}; nothing was changed")]
    KeyFile(KeyFileError),
    #[error("`{name}` is no machine of the inventory{}; nothing was changed", .hint.as_ref().map(|m| format!(" (did you mean `{m}`?)")).unwrap_or_default())]
    UnknownMachine { name: String, hint: Option<String> },
    #[error("`{0}` is not in the directory; nothing was changed")]
    NotInDirectory(String),
    #[error("the renewal policy lists no semester start")]
    NoSemester,
    /// `list --expiring` that is no duration.
    #[error("{0}")]
    Duration(DateError),
    /// `audit --limit` that selects nothing valid.
    #[error(transparent)]
    Limit(#[from] crate::inventory::select::LimitError),
    /// A directory password the secret store cannot give (names the secret, never a value).
    #[error("{0}")]
    Secret(SecretError),
    #[error("{0}")]
    Directory(#[from] DirectoryError),
    /// `grant` failed in the directory: it writes one entry at once, so nothing changed.
    #[error("{0}; nothing was changed")]
    Grant(DirectoryError),
    /// `rotate --renew` stopped at `login`; `renewed` were renewed before it.
    #[error("{login}: {source}; the ones above were renewed")]
    Renew {
        login: String,
        source: DirectoryError,
        renewed: Vec<Outcome>,
    },
    /// A machine the inventory gives no way to reach.
    #[error(transparent)]
    Target(#[from] crate::inventory::NoAddress),
    #[error("{0}")]
    KnownHosts(std::io::Error),
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// `access remind`: its settings (the `remind:` block, a secret, the remind file).
    #[error("{0}")]
    RemindSettings(#[from] SettingsError),
    /// `access remind`: its record, or the relay's settings; nothing was sent.
    #[error("{0}")]
    Remind(#[from] RemindError),
}

impl AccessError {
    /// 2 for what was refused before the directory or a host was changed, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            AccessError::NoAccessSection { .. }
            | AccessError::InvalidLogin(_)
            | AccessError::UnknownLevel { .. }
            | AccessError::InvalidField(_)
            | AccessError::EndDate(_)
            | AccessError::KeyFile(_)
            | AccessError::UnknownMachine { .. }
            | AccessError::NotInDirectory(_)
            | AccessError::NoSemester
            | AccessError::Duration(_)
            | AccessError::Limit(_)
            | AccessError::RemindSettings(SettingsError::NotConfigured) => EXIT_USAGE,
            _ => EXIT_HOST_FAILED,
        }
    }
}

/// A `--key` file that is no public key file: which file (or stdin), which line, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read a key from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("cannot read {}: {error}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{} is not a regular file: give the `.pub` file of the key (or `-` and the key on stdin)", .0.display())]
    NotAFile(PathBuf),
    /// `what`: the file's path, or `stdin`.
    #[error("{what} is larger than {} KiB: that is no public key file; give the `.pub` file of the key", MAX_KEY_FILE >> 10)]
    TooLarge { what: String },
    #[error("{what} is not text: give the `.pub` file of the key")]
    NotText { what: String },
    #[error("{what}: no key in it")]
    NoKey { what: String },
    /// Line `line` (1-based, counting key lines only) is no acceptable key.
    #[error("{what}:{line}: {error}")]
    BadKey {
        what: String,
        line: usize,
        #[source]
        error: KeyError,
    },
}

/// A non-fatal thing worth telling the person running the command, when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `--cut-off-now`: the person cannot log in from now on.
    CutOffNow,
}

/// The end date a command was given.
#[derive(Clone, Debug, Default)]
pub struct EndDate {
    /// Last day access works (YYYY-MM-DD, UTC).
    pub until: Option<String>,
    /// The renewal policy's next deadline.
    pub next_semester: bool,
    /// Access ends now (also allows an `until` before today).
    pub cut_off_now: bool,
}

/// `access grant` as asked, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct GrantRequest {
    pub login: String,
    pub level: String,
    pub end: EndDate,
    /// Public key files (`-`: stdin).
    pub key_files: Vec<PathBuf>,
    /// Machines, replacing the current list; `None`: leave them.
    pub hosts: Option<Vec<String>>,
    pub all_hosts: bool,
    pub name: Option<String>,
    pub mail: Option<String>,
}

fn check_login(login: &str) -> Result<(), AccessError> {
    if valid_login(login) {
        Ok(())
    } else {
        Err(AccessError::InvalidLogin(login.to_string()))
    }
}

/// The inventory and its `access:` section: everything a command needs to reach the directory
/// and the hosts. Connections are opened per command and closed before it returns.
pub struct Session {
    inv: Inventory,
    access: Access,
}

impl Session {
    /// `inventory_path` is where `inv` was loaded from (named when it has no `access:`).
    pub fn new(inv: Inventory, inventory_path: &Path) -> Result<Session, AccessError> {
        let access = inv
            .access
            .clone()
            .ok_or_else(|| AccessError::NoAccessSection {
                inventory: inventory_path.to_path_buf(),
            })?;
        Ok(Session { inv, access })
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Every machine name of the inventory.
    pub fn machines(&self) -> BTreeSet<String> {
        self.inv.machines().map(|m| m.name().to_string()).collect()
    }

    fn endpoint(&self) -> Result<Endpoint, AccessError> {
        let d = &self.access.directory;
        Ok(Endpoint {
            url: d.url.clone(),
            ca_pem: read_ca(d.ca_file.as_deref())?,
            people: d.people.clone(),
            hosts_attribute: d.hosts_attribute.clone(),
            timeout: Duration::from_secs(10),
            tls_name: d.tls_name.clone(),
        })
    }

    /// Bound as the directory's admin (its password from the secret store).
    async fn admin(&self) -> Result<Directory, AccessError> {
        let d = &self.access.directory;
        let pw = self
            .inv
            .secrets
            .get(&d.admin_password)
            .map_err(AccessError::Secret)?;
        Ok(Directory::open(&self.endpoint()?, Some((&d.admin_dn, &pw))).await?)
    }

    /// Read-only, as the hosts read (or as admin when the inventory names no reader).
    async fn reader(&self) -> Result<Directory, AccessError> {
        let d = &self.access.directory;
        match (&d.reader_dn, &d.reader_password) {
            (Some(dn), Some(name)) => {
                let pw = self.inv.secrets.get(name).map_err(AccessError::Secret)?;
                Ok(Directory::open(&self.endpoint()?, Some((dn, &pw))).await?)
            }
            _ => self.admin().await,
        }
    }

    /// Everyone in the directory, read as the hosts read.
    pub async fn people(&self) -> Result<Vec<Person>, AccessError> {
        let mut d = self.reader().await?;
        let r = d.people().await;
        d.close().await;
        Ok(r?)
    }

    /// The `shadowExpire` value to store for `end` (the first day refused).
    pub fn shadow_expire(
        &self,
        end: &EndDate,
        today: i64,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<i64, AccessError> {
        if end.next_semester {
            return Ok(self
                .access
                .next_semester(today)
                .ok_or(AccessError::EndDate(DateError::NoSemester))?
                + 1);
        }
        let last_day = end
            .until
            .as_deref()
            .map(date::parse_date)
            .transpose()
            .map_err(AccessError::EndDate)?;
        let e = date::end_from(last_day, end.cut_off_now, today).map_err(AccessError::EndDate)?;
        if end.cut_off_now {
            notice(Notice::CutOffNow);
        }
        Ok(e)
    }

    /// Checks a grant before the directory is asked: login, level, name, mail, end date, key
    /// files, machines (in that order: the first problem is the one reported).
    pub fn check_grant(
        &self,
        r: GrantRequest,
        today: i64,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<Grant, AccessError> {
        check_login(&r.login)?;
        let Some(level) = self.access.level_by_name(&r.level).cloned() else {
            return Err(AccessError::UnknownLevel {
                level: r.level,
                known: self.access.levels.iter().map(|l| l.name.clone()).collect(),
            });
        };
        if let Some(e) = r.name.as_deref().and_then(name_error) {
            return Err(AccessError::InvalidField(e));
        }
        if let Some(e) = r.mail.as_deref().and_then(mail_error) {
            return Err(AccessError::InvalidField(e));
        }
        let shadow_expire = self.shadow_expire(&r.end, today, notice)?;
        let keys = read_keys(&r.key_files)?;
        let hosts = if r.all_hosts {
            Some(vec!["*".to_string()])
        } else {
            if let Some(h) = &r.hosts {
                check_machines(h, &self.machines())?;
            }
            r.hosts
        };
        Ok(Grant {
            login: r.login,
            level,
            shadow_expire,
            keys,
            hosts,
            name: r.name,
            mail: r.mail,
        })
    }

    /// Creates the person or brings them to what `g` says (checked by [`Session::check_grant`]).
    pub async fn grant(&self, g: &Grant) -> Result<Outcome, AccessError> {
        let mut d = self.admin().await?;
        let r = manage::grant(&mut d, &self.access, g).await;
        d.close().await;
        r.map_err(AccessError::Grant)
    }

    /// One change to one existing person, as the admin.
    async fn change<F>(&self, login: &str, f: F) -> Result<Outcome, AccessError>
    where
        F: for<'a> FnOnce(
            &'a mut Directory,
        )
            -> futures::future::BoxFuture<'a, Result<Outcome, DirectoryError>>,
    {
        check_login(login)?;
        let mut d = self.admin().await?;
        let r = f(&mut d).await;
        d.close().await;
        Ok(r?)
    }

    /// `access extend`: the person's end date becomes `shadow_expire`.
    pub async fn extend(&self, login: &str, shadow_expire: i64) -> Result<Outcome, AccessError> {
        let l = login.to_string();
        self.change(login, move |d| {
            Box::pin(async move { manage::extend(d, &l, shadow_expire).await })
        })
        .await
    }

    /// `access revoke`: access ends `today` and every key goes.
    pub async fn revoke(&self, login: &str, today: i64) -> Result<Outcome, AccessError> {
        let l = login.to_string();
        self.change(login, move |d| {
            Box::pin(async move { manage::revoke(d, &l, today).await })
        })
        .await
    }

    /// `access remove-key`.
    pub async fn remove_key(&self, login: &str, fingerprint: &str) -> Result<Outcome, AccessError> {
        let (l, fp) = (login.to_string(), fingerprint.to_string());
        self.change(login, move |d| {
            Box::pin(async move { manage::remove_key(d, &l, &fp).await })
        })
        .await
    }

    /// `access list`: everyone, or those ending within `expiring` (a duration), or ended.
    pub async fn list(
        &self,
        expiring: Option<&str>,
        expired: bool,
        today: i64,
    ) -> Result<Listing, AccessError> {
        let within = expiring
            .map(date::parse_duration)
            .transpose()
            .map_err(AccessError::Duration)?
            .map(|secs| (secs / 86400) as i64);
        let people = self.people().await?;
        Ok(listing(&self.access, &people, within, expired, today))
    }

    /// `access rotate`: renews `renew` to the next deadline (unless `dry_run`) and says who
    /// else ends before it.
    pub async fn rotate(
        &self,
        renew: &[String],
        dry_run: bool,
        today: i64,
    ) -> Result<Rotation, AccessError> {
        let deadline = self
            .access
            .next_semester(today)
            .ok_or(AccessError::NoSemester)?;
        for l in renew {
            check_login(l)?;
        }
        let people = self.people().await?;
        let logins: BTreeSet<&str> = people.iter().map(|p| p.login.as_str()).collect();
        if let Some(l) = renew.iter().find(|l| !logins.contains(l.as_str())) {
            return Err(AccessError::NotInDirectory(l.clone()));
        }
        let mut renewed = Vec::new();
        if !dry_run && !renew.is_empty() {
            let mut d = self.admin().await?;
            for l in renew {
                match manage::extend(&mut d, l, deadline + 1).await {
                    Ok(o) => renewed.push(o),
                    Err(source) => {
                        d.close().await;
                        return Err(AccessError::Renew {
                            login: l.clone(),
                            source,
                            renewed,
                        });
                    }
                }
            }
            d.close().await;
        }
        Ok(Rotation {
            deadline,
            dry_run,
            renew: renew.to_vec(),
            renewed,
            not_renewed: not_renewed(&self.access, &people, renew, deadline, today),
        })
    }

    /// `access audit`: per host of `limit`, who the directory and the host's helper let in,
    /// their mismatches, and the directory's anomalies.
    pub async fn audit(&self, limit: Option<&str>, today: i64) -> Result<Audit, AccessError> {
        let machines =
            crate::inventory::select::select(&self.inv, limit).map_err(AccessError::Limit)?;
        let names: BTreeSet<String> = machines.iter().map(|m| m.name().to_string()).collect();
        let people = self.people().await?;
        let anomalies = manage::anomalies(&self.access, &people, &self.machines(), today);
        let report = self.helper(&names, &["status"]).await?;
        let hosts: Vec<HostAudit> = report
            .hosts
            .iter()
            .map(|h| {
                let reason = h.failure_reason().unwrap_or_default();
                let answer = if h.ok {
                    Ok(h.stdout.as_str())
                } else {
                    Err(reason.trim())
                };
                host_audit(&self.access, &people, &h.name, answer, today)
            })
            .collect();
        Ok(Audit {
            today,
            hosts,
            anomalies,
        })
    }

    /// `access remind` from the workstation: settings and secrets from the inventory, the
    /// record in this user's state directory.
    pub async fn remind(&self, dry_run: bool, today: i64) -> Result<Reminders, AccessError> {
        remind_with(
            remind_file::from_inventory(&self.inv, &self.access)?,
            dry_run,
            today,
        )
        .await
    }

    /// After a change: the machines of the people changed (before and after) sync now. Empty
    /// when nothing changed or they have no machine.
    pub async fn push(&self, outcomes: &[Outcome]) -> Result<Vec<HostSync>, AccessError> {
        let names = push_targets(outcomes, &self.machines());
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let report = self.helper(&names, &["sync"]).await?;
        Ok(report
            .hosts
            .iter()
            .map(|h| HostSync {
                host: h.name.clone(),
                failure: (!h.ok).then(|| h.failure_reason().unwrap_or_default().trim().to_string()),
            })
            .collect())
    }

    fn targets(&self, names: &BTreeSet<String>) -> Result<(Vec<Target>, PathBuf), AccessError> {
        let mut targets = Vec::new();
        for m in self.inv.machines().filter(|m| names.contains(m.name())) {
            targets.push(crate::inventory::target(m).map_err(AccessError::Target)?);
        }
        let kh = crate::inventory::write_known_hosts(&self.inv).map_err(AccessError::KnownHosts)?;
        Ok((targets, kh))
    }

    /// Runs the helper with `args` on the named machines, as root.
    async fn helper(
        &self,
        names: &BTreeSet<String>,
        args: &[&str],
    ) -> Result<RunReport, AccessError> {
        let (targets, kh) = self.targets(names)?;
        let mut argv = vec![HELPER.to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let req = RunRequest {
            command: CommandLine::Argv(argv),
            forks: 20,
            connect_timeout: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(60)),
            post_quantum_kex: false,
            become_root: Some(true),
        };
        Ok(run_command(&targets, &kh, &req, None).await?)
    }
}

/// `access remind --config FILE`: the timer's run, from the remind file apply installed (no
/// inventory on that machine).
pub async fn remind_from_file(
    file: &Path,
    dry_run: bool,
    today: i64,
) -> Result<Reminders, AccessError> {
    remind_with(remind_file::from_file(file)?, dry_run, today).await
}

/// Reads the directory, then sends (SMTP and the webhook are blocking calls: this command does
/// nothing else meanwhile).
async fn remind_with(
    settings: remind::Settings,
    dry_run: bool,
    today: i64,
) -> Result<Reminders, AccessError> {
    let people = remind::people(&settings).await?;
    Ok(remind::run(&settings, &people, today, dry_run)?)
}

/// Every name of `hosts` must be a machine of the inventory.
fn check_machines(hosts: &[String], machines: &BTreeSet<String>) -> Result<(), AccessError> {
    match hosts.iter().find(|h| !machines.contains(*h)) {
        None => Ok(()),
        Some(name) => Err(AccessError::UnknownMachine {
            name: name.clone(),
            hint: crate::diagnostic::did_you_mean(name, machines.iter().map(String::as_str))
                .map(str::to_string),
        }),
    }
}

/// The machines a change must reach: every machine any changed person could use before or
/// after (`*`: all of them). Empty when nothing changed.
pub fn push_targets(outcomes: &[Outcome], machines: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if outcomes.iter().all(|o| o.action == "unchanged") {
        return names;
    }
    for o in outcomes {
        for h in o.hosts_before.iter().chain(&o.hosts_after) {
            if h == "*" {
                names.extend(machines.iter().cloned());
            } else if machines.contains(h) {
                names.insert(h.clone());
            }
        }
    }
    names
}

/// `access list`'s rows: ended ones only (`expired`), or those ending within `within` days.
pub fn listing(
    access: &Access,
    people: &[Person],
    within: Option<i64>,
    expired: bool,
    today: i64,
) -> Listing {
    let rows = people
        .iter()
        .map(|p| manage::row(access, p, today))
        .filter(|r| !expired || r.expired)
        .filter(|r| within.is_none_or(|w| r.days_left.is_some_and(|d| d > 0 && d <= w)))
        .collect();
    Listing {
        today,
        soon: within.unwrap_or(30),
        rows,
    }
}

/// Everyone whose access ends by `deadline` (and has not ended already), but for `renew`.
pub fn not_renewed(
    access: &Access,
    people: &[Person],
    renew: &[String],
    deadline: i64,
    today: i64,
) -> Vec<Row> {
    people
        .iter()
        .filter(|p| !p.expired(today) && p.shadow_expire.day().is_some_and(|e| e <= deadline))
        .filter(|p| !renew.contains(&p.login))
        .map(|p| manage::row(access, p, today))
        .collect()
}

/// One host of the audit from the helper's `status` answer (its JSON list) or why it could not
/// be asked (the run's failure reason, as the report shows it).
pub fn host_audit(
    access: &Access,
    people: &[Person],
    host: &str,
    answer: Result<&str, &str>,
    today: i64,
) -> HostAudit {
    let directory = manage::allowed_on(access, people, host, today);
    let (helper, error) = match answer {
        Ok(stdout) => match serde_json::from_str::<Vec<serde_json::Value>>(stdout) {
            Ok(list) => (
                Some(
                    list.iter()
                        .filter(|v| v["allowed"] == serde_json::json!(true))
                        .map(|v| {
                            (
                                v["login"].as_str().unwrap_or("").to_string(),
                                v["until"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect::<BTreeMap<String, String>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(format!("the helper's answer is not JSON: {e}"))),
        },
        Err(why) => (None, Some(why.to_string())),
    };
    let mut mismatches = Vec::new();
    if let Some(helper) = &helper {
        let all: BTreeSet<&String> = directory.keys().chain(helper.keys()).collect();
        for l in all {
            match (directory.get(l), helper.get(l)) {
                (Some(a), Some(b)) if a == b => {}
                (d, h) => mismatches.push(Mismatch {
                    login: l.clone(),
                    directory: d.cloned(),
                    host: h.cloned(),
                }),
            }
        }
    }
    HostAudit {
        host: host.to_string(),
        directory,
        helper,
        mismatches,
        error,
    }
}

/// Reads at most `MAX_KEY_FILE` bytes of a key file, which must be a regular file (or `-`,
/// stdin): `--key /dev/zero` or a FIFO is refused, not read until memory runs out.
fn read_key_file(f: &Path) -> Result<(String, String), KeyFileError> {
    let mut bytes = Vec::new();
    let what = if f.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(KeyFileError::Stdin)?;
        "stdin".to_string()
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        let cannot = |error: std::io::Error| KeyFileError::Unreadable {
            path: f.to_path_buf(),
            error,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(f)
            .map_err(cannot)?;
        if !file.metadata().map_err(cannot)?.is_file() {
            return Err(KeyFileError::NotAFile(f.to_path_buf()));
        }
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        f.display().to_string()
    };
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge { what });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, what)),
        Err(_) => Err(KeyFileError::NotText { what }),
    }
}

/// Every key of every file (`#` comments and blank lines skipped); a file with none, or a
/// line that is no acceptable key, is refused with its file and line.
pub fn read_keys(files: &[PathBuf]) -> Result<Vec<PublicKey>, AccessError> {
    let mut out = Vec::new();
    for f in files {
        let (text, what) = read_key_file(f).map_err(AccessError::KeyFile)?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(AccessError::KeyFile(KeyFileError::NoKey { what }));
        }
        for (i, l) in lines.iter().enumerate() {
            let k = keys::parse(l).map_err(|error| {
                AccessError::KeyFile(KeyFileError::BadKey {
                    what: what.clone(),
                    line: i + 1,
                    error,
                })
            })?;
            out.push(k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::directory::Expiry;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";

    /// A session over a two-machine inventory whose directory nobody listens on: everything
    /// here must be decided before the network.
    fn session(dir: &Path) -> Session {
        std::fs::write(
            dir.join("hosts.yml"),
            "hosts:\n  bob: { site: toulouse, address: 10.0.0.1 }\n  alice: { site: compiegne, address: 10.0.0.2 }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sites.yml"),
            "sites:\n  toulouse: { backs_up_to: compiegne }\n  compiegne: { backs_up_to: toulouse }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("access.yml"),
            "access:\n  directory:\n    url: ldaps://127.0.0.1:1\n    base: dc=x\n    admin_password: a\n",
        )
        .unwrap();
        let inv = crate::inventory::load(dir).result.expect("valid inventory");
        Session::new(inv, dir).expect("has an access section")
    }

    fn request(login: &str) -> GrantRequest {
        GrantRequest {
            login: login.into(),
            level: "member".into(),
            end: EndDate {
                until: Some(date::format_day(20010)),
                ..EndDate::default()
            },
            ..GrantRequest::default()
        }
    }

    fn refused(s: &Session, r: GrantRequest) -> (String, i32, Vec<Notice>) {
        let mut seen = Vec::new();
        let e = s
            .check_grant(r, 20000, &mut |n| seen.push(n))
            .expect_err("refused");
        (e.to_string(), e.exit_code(), seen)
    }

    #[test]
    fn an_inventory_without_access_names_itself() {
        let tmp = tempfile::tempdir().unwrap();
        session(tmp.path());
        std::fs::remove_file(tmp.path().join("access.yml")).unwrap();
        let inv = crate::inventory::load(tmp.path()).result.unwrap();
        let e = Session::new(inv, tmp.path()).err().expect("refused");
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(
            e.to_string().contains(&tmp.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_grant_is_checked_in_order_before_the_directory_is_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let s = session(tmp.path());
        let key = tmp.path().join("k.pub");
        std::fs::write(&key, format!("# mine\n\n{KEY}\n")).unwrap();

        let mut r = request("Bad*");
        r.level = "nope".into();
        let (msg, code, _) = refused(&s, r);
        assert!(msg.contains("not a valid login"), "{msg}");
        assert_eq!(code, EXIT_USAGE);

        let mut r = request("ann");
        r.level = "nope".into();
        let (msg, ..) = refused(&s, r);
        assert_eq!(
            msg,
            "`nope` is not a level; the inventory's levels: member, tech, admin"
        );

        let mut r = request("ann");
        r.mail = Some("no-at-sign".into());
        let (msg, ..) = refused(&s, r);
        assert!(msg.ends_with("; nothing was changed"), "{msg}");

        // A date before today is refused as a typo; --cut-off-now takes it, and says so.
        let mut r = request("ann");
        r.end.until = Some("1027-03-15".into());
        let (msg, code, seen) = refused(&s, r.clone());
        assert!(msg.contains("before today"), "{msg}");
        assert_eq!((code, seen.len()), (EXIT_USAGE, 0));
        r.end.cut_off_now = true;
        r.key_files = vec!["/dev/zero".into()];
        let (msg, _, seen) = refused(&s, r);
        assert_eq!(seen, [Notice::CutOffNow], "told before the key file fails");
        assert!(msg.contains("/dev/zero is not a regular file"), "{msg}");

        let mut r = request("ann");
        r.key_files = vec![key.clone()];
        r.hosts = Some(vec!["bob".into(), "bobb".into()]);
        let (msg, code, _) = refused(&s, r.clone());
        assert_eq!(
            msg,
            "`bobb` is no machine of the inventory (did you mean `bob`?); nothing was changed"
        );
        assert_eq!(code, EXIT_USAGE);

        r.hosts = Some(vec!["alice".into(), "bob".into()]);
        let g = s.check_grant(r.clone(), 20000, &mut |_| {}).unwrap();
        assert_eq!(
            (g.shadow_expire, g.keys.len(), g.hosts.as_deref()),
            (
                20011,
                1,
                Some(&["alice".to_string(), "bob".to_string()][..])
            )
        );
        r.hosts = None;
        r.all_hosts = true;
        let g = s.check_grant(r, 20000, &mut |_| {}).unwrap();
        assert_eq!(g.hosts, Some(vec!["*".to_string()]));
    }

    #[test]
    fn key_files_are_refused_with_their_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("k.pub");
        std::fs::write(&f, format!("{KEY}\nssh-dss AAAAB3NzaC1kc3M x\n")).unwrap();
        let e = read_keys(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", f.display())), "{e}");
        std::fs::write(&f, "# only a comment\n").unwrap();
        let e = read_keys(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: no key in it; nothing was changed", f.display())
        );
        std::fs::write(&f, vec![b'a'; MAX_KEY_FILE as usize + 1]).unwrap();
        let e = read_keys(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_keys(&[fifo]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    fn outcome(action: &str, before: &[&str], after: &[&str]) -> Outcome {
        Outcome {
            login: "ann".into(),
            action: action.into(),
            changes: vec![],
            hosts_before: before.iter().map(|s| s.to_string()).collect(),
            hosts_after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_change_is_pushed_to_the_machines_before_and_after_it() {
        let machines: BTreeSet<String> = ["alice", "bob", "caribou"].map(String::from).into();
        let names = |o: &[Outcome]| {
            push_targets(o, &machines)
                .into_iter()
                .collect::<Vec<String>>()
        };
        assert!(names(&[outcome("unchanged", &["bob"], &["bob"])]).is_empty());
        assert!(names(&[]).is_empty());
        assert_eq!(
            names(&[outcome("updated", &["bob", "gone01"], &["alice"])]),
            ["alice", "bob"],
            "machines no longer in the inventory are not asked"
        );
        assert_eq!(
            names(&[
                outcome("unchanged", &["caribou"], &["caribou"]),
                outcome("updated", &[], &["*"])
            ]),
            ["alice", "bob", "caribou"]
        );
    }

    fn person(login: &str, expire: Expiry, hosts: &[&str]) -> Person {
        Person {
            dn: format!("uid={login},ou=People,dc=x"),
            login: login.into(),
            uid_number: Some(2000),
            gid_number: Some(502),
            given_name: None,
            sn: None,
            mail: None,
            shadow_expire: expire,
            keys: vec![KEY.into()],
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            object_classes: vec![],
            broken: None,
        }
    }

    #[test]
    fn the_audit_compares_the_directory_with_each_helpers_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let s = session(tmp.path());
        let today = 20000;
        let people = [
            person("ann", Expiry::Until(20031), &["bob"]),
            person("ben", Expiry::Never, &["*"]),
        ];
        let until = date::format_day(20030);
        let agree = format!(
            r#"[{{"login":"ann","allowed":true,"until":"{until}"}},{{"login":"ben","allowed":true,"until":"never"}},{{"login":"cid","allowed":false,"until":""}}]"#
        );
        let h = host_audit(s.access(), &people, "bob", Ok(&agree), today);
        assert_eq!(h.directory.len(), 2, "{h:?}");
        assert_eq!(h.helper.as_ref(), Some(&h.directory));
        assert!(h.mismatches.is_empty() && h.error.is_none(), "{h:?}");

        // alice: the directory lets only ben in; the helper also lets ann in.
        let h = host_audit(s.access(), &people, "alice", Ok(&agree), today);
        assert_eq!(
            h.mismatches,
            [Mismatch {
                login: "ann".into(),
                directory: None,
                host: Some(until.clone()),
            }]
        );
        let h = host_audit(s.access(), &people, "bob", Ok("keys"), today);
        assert!(h.helper.is_none());
        assert!(h
            .error
            .unwrap()
            .starts_with("the helper's answer is not JSON"));
        let h = host_audit(s.access(), &people, "bob", Err("exit 127"), today);
        assert_eq!((h.helper, h.error.as_deref()), (None, Some("exit 127")));
    }

    #[test]
    fn list_and_rotate_select_by_end_date() {
        let tmp = tempfile::tempdir().unwrap();
        let s = session(tmp.path());
        let today = 20000;
        let people = [
            person("ann", Expiry::Until(20010), &["bob"]),
            person("ben", Expiry::Until(20100), &["bob"]),
            person("cid", Expiry::Until(19990), &["bob"]),
            person("dan", Expiry::Never, &["bob"]),
        ];
        let logins = |rows: &[Row]| rows.iter().map(|r| r.login.clone()).collect::<Vec<_>>();
        let l = listing(s.access(), &people, None, false, today);
        assert_eq!((logins(&l.rows).len(), l.soon), (4, 30));
        let l = listing(s.access(), &people, Some(20), false, today);
        assert_eq!((logins(&l.rows), l.soon), (vec!["ann".to_string()], 20));
        let l = listing(s.access(), &people, None, true, today);
        assert_eq!(logins(&l.rows), ["cid"]);
        let left = not_renewed(s.access(), &people, &["ann".into()], 20100, today);
        assert_eq!(logins(&left), ["ben"], "cid has ended, dan never ends");
    }

    #[test]
    fn errors_say_whether_anything_was_contacted() {
        let d = || DirectoryError::Unreachable {
            url: "ldaps://x".into(),
            detail: "refused".into(),
        };
        assert_eq!(AccessError::Directory(d()).exit_code(), EXIT_HOST_FAILED);
        assert_eq!(AccessError::NoSemester.exit_code(), EXIT_USAGE);
        let e = AccessError::Renew {
            login: "ann".into(),
            source: d(),
            renewed: vec![],
        };
        assert_eq!(e.exit_code(), EXIT_HOST_FAILED);
        assert_eq!(
            e.to_string(),
            "ann: cannot reach the directory at ldaps://x: refused; the ones above were renewed"
        );
        assert_eq!(
            AccessError::Grant(d()).to_string(),
            "cannot reach the directory at ldaps://x: refused; nothing was changed"
        );
    }
}
