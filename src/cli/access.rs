//! `picaops access …`: managing who may log in where, in the LDAP directory, and checking that
//! the hosts agree. Parses arguments and prints; the directory work is `picaops::access::manage`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::access::directory::{login_error, mail_error, name_error, read_ca, valid_login};
use picaops::access::keys::{self, PublicKey};
use picaops::access::manage::{self, Anomaly, Grant, Outcome};
use picaops::access::{date, Access, Directory, Endpoint, Person};
use picaops::inventory::Inventory;
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};
use picaops::run::{run_command, RunRequest};
use picaops::transport::CommandLine;
use picaops::transport::Target;
use serde_json::json;

use super::Global;

/// Where apply installs the helper on every host.
const HELPER: &str = "/usr/local/sbin/picaops-access";

#[derive(Subcommand, Debug)]
#[command(after_help = "\
People live in the directory named by the inventory's `access:` section (Picasoft's scheme: \
ou=People, uidNumber from 2000, gidNumber = level, shadowExpire = end date). Hosts enforce it \
through the picaops-access helper that `picaops apply` installs (playbooks/base/access.yml).

After a change, picaops asks the person's machines to sync at once (their timer does it every \
5 minutes anyway); `--no-push` skips that.

Examples:
  picaops access grant jdupont --level member --next-semester --key jdupont.pub --hosts pica01
  picaops access extend jdupont --until 2027-09-30
  picaops access list --expiring 30d
  picaops access rotate --renew jdupont,amartin --dry-run
  picaops access audit")]
pub enum AccessCommand {
    /// Give a person access (creates them, or updates level, date, keys and machines).
    Grant(GrantArgs),
    /// Move a person's end date.
    Extend(ExtendArgs),
    /// End a person's access today and remove their keys (the entry stays).
    Revoke(LoginArgs),
    /// Remove one key (by its SHA256 fingerprint, as `access list` shows it).
    RemoveKey(RemoveKeyArgs),
    /// Everyone in the directory: level, end date, machines, key fingerprints.
    List(ListArgs),
    /// The semester routine: who ends before the next deadline; renew the ones named.
    Rotate(RotateArgs),
    /// Per host, who can log in now and until when, from the directory AND the host's helper;
    /// flags mismatches and anomalies. Exit code 1 when anything is flagged.
    Audit(AuditArgs),
}

#[derive(Args, Debug)]
pub struct Until {
    /// Last day access works (YYYY-MM-DD, UTC): from today to 10 years ahead.
    #[arg(long, value_name = "DATE", conflicts_with = "next_semester")]
    until: Option<String>,
    /// The renewal policy's deadline: about a month after the next semester starts.
    #[arg(long)]
    next_semester: bool,
    /// The person's access ends now (refused from today on), also when `--until` names a day
    /// before today; without it, such a date is refused as a probable typo.
    #[arg(long, conflicts_with = "next_semester")]
    cut_off_now: bool,
}

#[derive(Args, Debug)]
pub struct Push {
    /// Do not ask the person's machines to sync now (their timer will, within 5 minutes).
    #[arg(long)]
    no_push: bool,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The person's login (their UTC login at Picasoft): lowercase letters, digits, . _ -
    login: String,
    /// Access level (the inventory's levels; Picasoft: member, tech, admin).
    #[arg(long)]
    level: String,
    #[command(flatten)]
    until: Until,
    /// Public key file to add (`-`: read it from stdin). Repeat for several keys.
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,
    /// Machines the person may use, comma-separated (replaces the current list).
    #[arg(long, value_delimiter = ',', conflicts_with = "all_hosts")]
    hosts: Option<Vec<String>>,
    /// The person may use every machine.
    #[arg(long)]
    all_hosts: bool,
    /// Full name ("Given Family").
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    mail: Option<String>,
    #[command(flatten)]
    push: Push,
}

#[derive(Args, Debug)]
pub struct ExtendArgs {
    login: String,
    #[command(flatten)]
    until: Until,
    #[command(flatten)]
    push: Push,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    login: String,
    #[command(flatten)]
    push: Push,
}

#[derive(Args, Debug)]
pub struct RemoveKeyArgs {
    login: String,
    /// `SHA256:…` as `access list` or `ssh-keygen -l` shows it.
    fingerprint: String,
    #[command(flatten)]
    push: Push,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only people whose access ends within this long (for example 30d).
    #[arg(long, value_name = "DURATION")]
    expiring: Option<String>,
    /// Only people whose access has ended.
    #[arg(long)]
    expired: bool,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Logins to extend to the next deadline, comma-separated.
    #[arg(long, value_delimiter = ',')]
    renew: Vec<String>,
    /// Show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    push: Push,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Which hosts to ask (names, groups, sites; default all).
    #[arg(short, long)]
    limit: Option<String>,
}

/// Everything a command needs: the inventory's access section and an open admin connection.
struct Session {
    inv: Inventory,
    access: Access,
    out: Output,
}

fn fail(out: &Output, msg: impl std::fmt::Display) -> i32 {
    eprintln!("{}: {msg}", out.paint(Style::Red, "picaops access"));
    EXIT_HOST_FAILED
}

fn usage(out: &Output, msg: impl std::fmt::Display) -> i32 {
    eprintln!("{}: {msg}", out.paint(Style::Red, "picaops access"));
    EXIT_USAGE
}

pub fn run(cmd: AccessCommand, global: &Global, out: &Output) -> i32 {
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let Some(access) = inv.access.clone() else {
        return usage(out, format!(
            "the inventory at {} has no `access:` section: add one naming the directory (see README, \"Access\")",
            global.inventory.display()
        ));
    };
    let s = Session {
        inv,
        access,
        out: *out,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(out, e),
    };
    let code = rt.block_on(async {
        match cmd {
            AccessCommand::Grant(a) => grant(&s, a).await,
            AccessCommand::Extend(a) => extend(&s, a).await,
            AccessCommand::Revoke(a) => revoke(&s, a).await,
            AccessCommand::RemoveKey(a) => remove_key(&s, a).await,
            AccessCommand::List(a) => list(&s, a).await,
            AccessCommand::Rotate(a) => rotate(&s, a).await,
            AccessCommand::Audit(a) => audit(&s, a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

impl Session {
    fn endpoint(&self) -> Result<Endpoint, String> {
        let d = &self.access.directory;
        Ok(Endpoint {
            url: d.url.clone(),
            ca_pem: read_ca(d.ca_file.as_deref()).map_err(|e| e.to_string())?,
            people: d.people.clone(),
            hosts_attribute: d.hosts_attribute.clone(),
            timeout: Duration::from_secs(10),
        })
    }

    /// Bound as the directory's admin (its password from the secret store).
    async fn admin(&self) -> Result<Directory, String> {
        let d = &self.access.directory;
        let pw = self.inv.secrets.get(&d.admin_password)?;
        Directory::open(&self.endpoint()?, Some((&d.admin_dn, &pw)))
            .await
            .map_err(|e| e.to_string())
    }

    /// Read-only, as the hosts read (or as admin when the inventory names no reader).
    async fn reader(&self) -> Result<Directory, String> {
        let d = &self.access.directory;
        match (&d.reader_dn, &d.reader_password) {
            (Some(dn), Some(name)) => {
                let pw = self.inv.secrets.get(name)?;
                Directory::open(&self.endpoint()?, Some((dn, &pw)))
                    .await
                    .map_err(|e| e.to_string())
            }
            _ => self.admin().await,
        }
    }

    fn machines(&self) -> BTreeSet<String> {
        self.inv.machines().map(|m| m.name().to_string()).collect()
    }

    /// `--until` / `--next-semester` / `--cut-off-now` → the shadowExpire value to store.
    fn shadow_expire(&self, u: &Until) -> Result<i64, String> {
        let today = date::today();
        if u.next_semester {
            return Ok(self
                .access
                .next_semester(today)
                .ok_or("the renewal policy lists no semester start")?
                + 1);
        }
        let last_day = u.until.as_deref().map(date::parse_date).transpose()?;
        let e = date::end_from(last_day, u.cut_off_now, today)?;
        if u.cut_off_now {
            eprintln!(
                "{}: --cut-off-now: this person cannot log in from now on",
                self.out.paint(Style::Yellow, "warning"),
            );
        }
        Ok(e)
    }

    fn targets(&self, names: &BTreeSet<String>) -> Result<(Vec<Target>, PathBuf), String> {
        let mut targets = Vec::new();
        for m in self.inv.machines().filter(|m| names.contains(m.name())) {
            targets.push(picaops::inventory::target(m)?);
        }
        let kh = picaops::inventory::write_known_hosts(&self.inv).map_err(|e| e.to_string())?;
        Ok((targets, kh))
    }

    /// Runs the helper with `args` on the named machines, as root.
    async fn helper(
        &self,
        names: &BTreeSet<String>,
        args: &[&str],
    ) -> Result<picaops::run::RunReport, String> {
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
        run_command(&targets, &kh, &req, None)
            .await
            .map_err(|e| e.to_string())
    }

    /// After a change: the person's machines (before and after) sync now.
    async fn push(&self, outcomes: &[Outcome], push: &Push) {
        if push.no_push || outcomes.iter().all(|o| o.action == "unchanged") {
            return;
        }
        let machines = self.machines();
        let mut names = BTreeSet::new();
        for o in outcomes {
            for h in o.hosts_before.iter().chain(&o.hosts_after) {
                if h == "*" {
                    names.extend(machines.iter().cloned());
                } else if machines.contains(h) {
                    names.insert(h.clone());
                }
            }
        }
        if names.is_empty() {
            return;
        }
        match self.helper(&names, &["sync"]).await {
            Err(e) => eprintln!(
                "{}: could not push the change: {e}",
                self.out.paint(Style::Yellow, "warning")
            ),
            Ok(report) => {
                for h in &report.hosts {
                    if h.ok {
                        if self.out.format == Format::Human {
                            println!("  {}: synced", h.name);
                        }
                    } else {
                        eprintln!(
                            "{}: {} did not sync ({}); its timer will within 5 minutes. Is `picaops apply` done there?",
                            self.out.paint(Style::Yellow, "warning"),
                            h.name,
                            h.failure_reason().unwrap_or_default().trim()
                        );
                    }
                }
            }
        }
    }

    fn print_outcomes(&self, outcomes: &[Outcome]) {
        match self.out.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "people": outcomes })).unwrap_or_default()
            ),
            Format::Human => {
                for o in outcomes {
                    let head = format!("{} {}", o.login, o.action);
                    let style = if o.action == "unchanged" {
                        Style::Dim
                    } else {
                        Style::Green
                    };
                    println!("{}", self.out.paint(style, &head));
                    for c in &o.changes {
                        println!("  {c}");
                    }
                }
            }
        }
    }
}

/// Largest public key file `--key` reads (an RSA-16384 key line is about 3 KiB).
const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads at most `MAX_KEY_FILE` bytes of a key file, which must be a regular file (or `-`,
/// stdin): `--key /dev/zero` or a FIFO is refused, not read until memory runs out.
fn read_key_file(f: &std::path::Path) -> Result<(String, String), String> {
    let mut bytes = Vec::new();
    let what = if f.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read a key from stdin: {e}"))?;
        "stdin".to_string()
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(f)
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file: give the `.pub` file of the key (or `-` and the key on stdin)",
                f.display()
            ));
        }
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        f.display().to_string()
    };
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "{what} is larger than {} KiB: that is no public key file; give the `.pub` file of the key",
            MAX_KEY_FILE >> 10
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{what} is not text: give the `.pub` file of the key"))?;
    Ok((text, what))
}

fn read_keys(files: &[PathBuf]) -> Result<Vec<PublicKey>, String> {
    let mut out = Vec::new();
    for f in files {
        let (text, what) = read_key_file(f)?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(format!("{what}: no key in it"));
        }
        for (i, l) in lines.iter().enumerate() {
            let k = keys::parse(l).map_err(|e| format!("{what}:{}: {e}", i + 1))?;
            out.push(k);
        }
    }
    Ok(out)
}

fn check_login(s: &Session, login: &str) -> Result<(), i32> {
    if valid_login(login) {
        Ok(())
    } else {
        Err(usage(&s.out, login_error(login)))
    }
}

async fn grant(s: &Session, a: GrantArgs) -> i32 {
    if let Err(code) = check_login(s, &a.login) {
        return code;
    }
    let Some(level) = s.access.level_by_name(&a.level).cloned() else {
        let names: Vec<&str> = s.access.levels.iter().map(|l| l.name.as_str()).collect();
        return usage(
            &s.out,
            format!(
                "`{}` is not a level; the inventory's levels: {}",
                a.level,
                names.join(", ")
            ),
        );
    };
    if let Some(e) = a.name.as_deref().and_then(name_error) {
        return usage(&s.out, format!("{e}; nothing was changed"));
    }
    if let Some(e) = a.mail.as_deref().and_then(mail_error) {
        return usage(&s.out, format!("{e}; nothing was changed"));
    }
    let shadow_expire = match s.shadow_expire(&a.until) {
        Ok(d) => d,
        Err(e) => return usage(&s.out, format!("{e}; nothing was changed")),
    };
    let keys = match read_keys(&a.key) {
        Ok(k) => k,
        Err(e) => return usage(&s.out, format!("{e}; nothing was changed")),
    };
    let machines = s.machines();
    let hosts = if a.all_hosts {
        Some(vec!["*".to_string()])
    } else if let Some(h) = &a.hosts {
        for name in h {
            if !machines.contains(name) {
                let hint =
                    picaops::diagnostic::did_you_mean(name, machines.iter().map(String::as_str))
                        .map(|m| format!(" (did you mean `{m}`?)"))
                        .unwrap_or_default();
                return usage(
                    &s.out,
                    format!("`{name}` is no machine of the inventory{hint}; nothing was changed"),
                );
            }
        }
        Some(h.clone())
    } else {
        None
    };
    if s.out.format == Format::Human {
        for k in &keys {
            println!("key {}", k.describe());
        }
    }
    let g = Grant {
        login: a.login,
        level,
        shadow_expire,
        keys,
        hosts,
        name: a.name,
        mail: a.mail,
    };
    let mut d = match s.admin().await {
        Ok(d) => d,
        Err(e) => return fail(&s.out, e),
    };
    let r = manage::grant(&mut d, &s.access, &g).await;
    d.close().await;
    match r {
        Ok(o) => {
            s.print_outcomes(std::slice::from_ref(&o));
            if o.hosts_after.is_empty() && s.out.format == Format::Human {
                println!("  note: no machine listed: give --hosts NAME,… or --all-hosts to let them log in somewhere");
            }
            s.push(&[o], &a.push).await;
            EXIT_OK
        }
        Err(e) => fail(&s.out, format!("{e}; nothing was changed")),
    }
}

async fn one_change<F>(s: &Session, login: &str, push: &Push, f: F) -> i32
where
    F: for<'a> FnOnce(
        &'a mut Directory,
    ) -> futures::future::BoxFuture<
        'a,
        Result<Outcome, picaops::access::DirectoryError>,
    >,
{
    if let Err(code) = check_login(s, login) {
        return code;
    }
    let mut d = match s.admin().await {
        Ok(d) => d,
        Err(e) => return fail(&s.out, e),
    };
    let r = f(&mut d).await;
    d.close().await;
    match r {
        Ok(o) => {
            s.print_outcomes(std::slice::from_ref(&o));
            s.push(&[o], push).await;
            EXIT_OK
        }
        Err(e) => fail(&s.out, e),
    }
}

async fn extend(s: &Session, a: ExtendArgs) -> i32 {
    let e = match s.shadow_expire(&a.until) {
        Ok(e) => e,
        Err(e) => return usage(&s.out, format!("{e}; nothing was changed")),
    };
    let login = a.login.clone();
    one_change(s, &a.login, &a.push, move |d| {
        Box::pin(async move { manage::extend(d, &login, e).await })
    })
    .await
}

async fn revoke(s: &Session, a: LoginArgs) -> i32 {
    let login = a.login.clone();
    let today = date::today();
    one_change(s, &a.login, &a.push, move |d| {
        Box::pin(async move { manage::revoke(d, &login, today).await })
    })
    .await
}

async fn remove_key(s: &Session, a: RemoveKeyArgs) -> i32 {
    let login = a.login.clone();
    let fp = a.fingerprint.clone();
    one_change(s, &a.login, &a.push, move |d| {
        Box::pin(async move { manage::remove_key(d, &login, &fp).await })
    })
    .await
}

async fn people(s: &Session) -> Result<Vec<Person>, String> {
    let mut d = s.reader().await?;
    let r = d.people().await.map_err(|e| e.to_string());
    d.close().await;
    r
}

async fn list(s: &Session, a: ListArgs) -> i32 {
    let within = match a.expiring.as_deref().map(date::parse_duration) {
        Some(Ok(secs)) => Some((secs / 86400) as i64),
        Some(Err(e)) => return usage(&s.out, e),
        None => None,
    };
    let people = match people(s).await {
        Ok(p) => p,
        Err(e) => return fail(&s.out, e),
    };
    let today = date::today();
    let soon = within.unwrap_or(30);
    let rows: Vec<manage::Row> = people
        .iter()
        .map(|p| manage::row(&s.access, p, today))
        .filter(|r| !a.expired || r.expired)
        .filter(|r| within.is_none_or(|w| r.days_left.is_some_and(|d| d > 0 && d <= w)))
        .collect();
    match s.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "today": date::format_day(today), "people": rows })
            )
            .unwrap_or_default()
        ),
        Format::Human => {
            println!(
                "{:<14} {:<22} {:<7} {:<11} {:<24} KEYS",
                "LOGIN", "NAME", "LEVEL", "UNTIL", "MACHINES"
            );
            for r in &rows {
                let until = match r.days_left {
                    _ if r.expired => s.out.paint(Style::Red, &format!("{:<11}", r.until)),
                    Some(d) if d <= soon => s.out.paint(Style::Yellow, &format!("{:<11}", r.until)),
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
                println!(
                    "{:<14} {:<22} {:<7} {} {:<24} {}",
                    r.login,
                    r.name.chars().take(22).collect::<String>(),
                    r.level.as_deref().unwrap_or("?"),
                    until,
                    hosts,
                    keys
                );
            }
            let ending = rows
                .iter()
                .filter(|r| !r.expired && r.days_left.is_some_and(|d| d <= soon))
                .count();
            println!(
                "{} people; {} end within {soon} days; {} ended",
                rows.len(),
                ending,
                rows.iter().filter(|r| r.expired).count()
            );
        }
    }
    EXIT_OK
}

async fn rotate(s: &Session, a: RotateArgs) -> i32 {
    let today = date::today();
    let Some(deadline) = s.access.next_semester(today) else {
        return usage(&s.out, "the renewal policy lists no semester start");
    };
    for l in &a.renew {
        if let Err(code) = check_login(s, l) {
            return code;
        }
    }
    let people = match people(s).await {
        Ok(p) => p,
        Err(e) => return fail(&s.out, e),
    };
    // Everyone whose access ends before the next deadline (and has not ended already).
    let ending: Vec<&Person> = people
        .iter()
        .filter(|p| !p.expired(today) && p.shadow_expire.day().is_some_and(|e| e <= deadline))
        .collect();
    let logins: BTreeSet<&str> = people.iter().map(|p| p.login.as_str()).collect();
    for l in &a.renew {
        if !logins.contains(l.as_str()) {
            return usage(
                &s.out,
                format!("`{l}` is not in the directory; nothing was changed"),
            );
        }
    }
    let mut outcomes = Vec::new();
    if !a.dry_run && !a.renew.is_empty() {
        let mut d = match s.admin().await {
            Ok(d) => d,
            Err(e) => return fail(&s.out, e),
        };
        for l in &a.renew {
            match manage::extend(&mut d, l, deadline + 1).await {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    d.close().await;
                    s.print_outcomes(&outcomes);
                    return fail(&s.out, format!("{l}: {e}; the ones above were renewed"));
                }
            }
        }
        d.close().await;
    }
    let renew: BTreeSet<&str> = a.renew.iter().map(String::as_str).collect();
    let left: Vec<manage::Row> = ending
        .iter()
        .filter(|p| !renew.contains(p.login.as_str()))
        .map(|p| manage::row(&s.access, p, today))
        .collect();
    match s.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "deadline": date::format_day(deadline),
                "dry_run": a.dry_run,
                "renewed": if a.dry_run { json!(a.renew) } else { json!(outcomes) },
                "not_renewed": left,
            }))
            .unwrap_or_default()
        ),
        Format::Human => {
            println!(
                "next deadline: {} (renewed people work through that day)",
                date::format_day(deadline)
            );
            if a.dry_run {
                for l in &a.renew {
                    println!("would renew {l} until {}", date::format_day(deadline));
                }
            } else {
                s.print_outcomes(&outcomes);
            }
            if left.is_empty() {
                println!("nobody else ends before the deadline");
            } else {
                println!("not renewed (their access ends as shown; renew with --renew LOGIN):");
                for r in &left {
                    println!("  {:<14} {:<22} until {}", r.login, r.name, r.until);
                }
            }
        }
    }
    if !a.dry_run {
        s.push(&outcomes, &a.push).await;
    }
    EXIT_OK
}

async fn audit(s: &Session, a: AuditArgs) -> i32 {
    let machines = match picaops::inventory::select::select(&s.inv, a.limit.as_deref()) {
        Ok(m) => m,
        Err(e) => return usage(&s.out, e),
    };
    let names: BTreeSet<String> = machines.iter().map(|m| m.name().to_string()).collect();
    let people = match people(s).await {
        Ok(p) => p,
        Err(e) => return fail(&s.out, e),
    };
    let today = date::today();
    let anomalies: Vec<Anomaly> = manage::anomalies(&s.access, &people, &s.machines(), today);
    let report = match s.helper(&names, &["status"]).await {
        Ok(r) => r,
        Err(e) => return fail(&s.out, e),
    };
    let mut hosts = Vec::new();
    let mut problems = anomalies.len();
    for h in &report.hosts {
        let directory = manage::allowed_on(&s.access, &people, &h.name, today);
        let (helper, error): (Option<BTreeMap<String, String>>, Option<String>) = if h.ok {
            match serde_json::from_str::<Vec<serde_json::Value>>(&h.stdout) {
                Ok(list) => (
                    Some(
                        list.iter()
                            .filter(|v| v["allowed"] == json!(true))
                            .map(|v| {
                                (
                                    v["login"].as_str().unwrap_or("").to_string(),
                                    v["until"].as_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect(),
                    ),
                    None,
                ),
                Err(e) => (None, Some(format!("the helper's answer is not JSON: {e}"))),
            }
        } else {
            (
                None,
                Some(h.failure_reason().unwrap_or_default().trim().to_string()),
            )
        };
        let mut mismatches = Vec::new();
        if let Some(helper) = &helper {
            let all: BTreeSet<&String> = directory.keys().chain(helper.keys()).collect();
            for l in all {
                match (directory.get(l), helper.get(l)) {
                    (Some(a), Some(b)) if a == b => {}
                    (d, hp) => mismatches.push(json!({"login": l, "directory": d, "host": hp})),
                }
            }
        }
        problems += mismatches.len() + usize::from(error.is_some());
        hosts.push(json!({
            "host": h.name,
            "directory": directory,
            "helper": helper,
            "mismatches": mismatches,
            "error": error,
        }));
    }
    match s.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "today": date::format_day(today), "hosts": hosts, "anomalies": anomalies })
            )
            .unwrap_or_default()
        ),
        Format::Human => {
            for h in &hosts {
                println!(
                    "{}",
                    s.out.paint(Style::Bold, h["host"].as_str().unwrap_or(""))
                );
                if let Some(e) = h["error"].as_str() {
                    println!(
                        "  {}",
                        s.out
                            .paint(Style::Red, &format!("cannot ask the helper: {e}"))
                    );
                }
                let dir = h["directory"].as_object().cloned().unwrap_or_default();
                if dir.is_empty() {
                    println!("  nobody from the directory can log in");
                }
                for (login, until) in &dir {
                    println!("  {login:<14} until {}", until.as_str().unwrap_or(""));
                }
                for m in h["mismatches"].as_array().into_iter().flatten() {
                    println!(
                        "  {} {}: directory says {}, the host says {}",
                        s.out.paint(Style::Red, "MISMATCH"),
                        m["login"].as_str().unwrap_or(""),
                        m["directory"]
                            .as_str()
                            .map_or("no access".into(), |u| format!("until {u}")),
                        m["host"]
                            .as_str()
                            .map_or("no access".into(), |u| format!("until {u}")),
                    );
                }
            }
            if !anomalies.is_empty() {
                println!("{}", s.out.paint(Style::Bold, "anomalies"));
                for a in &anomalies {
                    println!(
                        "  {} {}: {}",
                        s.out.paint(Style::Yellow, &a.kind),
                        a.logins.join(", "),
                        a.detail
                    );
                }
            }
            println!("{} problem(s) found", problems);
        }
    }
    if problems == 0 {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }
}
