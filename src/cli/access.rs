//! `picaops access …`: managing who may log in where, in the LDAP directory, and checking that
//! the hosts agree. Parses arguments and renders; the work is `picaops::access::ops` (typed results
//! in `picaops::access::report`, each rendered for people or as JSON through one path, [`show`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use picaops::access::date;
use picaops::access::manage::Outcome;
use picaops::access::ops::{self, AccessError, EndDate, GrantRequest, Notice, Session};
use picaops::access::remind::Reminders;
use picaops::access::report::Changes;
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};

use super::Global;

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
  picaops access remind --dry-run
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
    /// Mail each person whose access ends soon (`access.remind`, by default 30, 7 and 1 days
    /// before), once per threshold, with the command that extends them; digest to Mattermost.
    Remind(RemindArgs),
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
pub struct RemindArgs {
    /// Show who would get which reminder; send and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run from a machine's remind file, not the inventory (what the timer apply installs runs).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Which hosts to ask (names, groups, sites; default all).
    #[arg(short, long)]
    limit: Option<String>,
}

impl From<Until> for EndDate {
    fn from(u: Until) -> EndDate {
        EndDate {
            until: u.until,
            next_semester: u.next_semester,
            cut_off_now: u.cut_off_now,
        }
    }
}

fn complain(out: &Output, msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("{}: {msg}", out.paint(Style::Red, "picaops access"));
    code
}

fn warn(out: &Output, msg: impl std::fmt::Display) {
    eprintln!("{}: {msg}", out.paint(Style::Yellow, "warning"));
}

fn notice(out: &Output) -> impl FnMut(Notice) + '_ {
    move |n| match n {
        Notice::CutOffNow => warn(out, "--cut-off-now: this person cannot log in from now on"),
    }
}

/// The one output path (the exit code is decided by the command).
fn show(r: &dyn picaops::output::Shown, out: &Output) {
    picaops::output::show(r, out);
}

pub fn run(cmd: AccessCommand, global: &Global, out: &Output) -> i32 {
    if let AccessCommand::Remind(RemindArgs {
        config: Some(f),
        dry_run,
    }) = &cmd
    {
        let r = ops::remind_from_file(f, *dry_run, date::today());
        return block_on(out, async { Ok(reminded(r.await?, out)) });
    }
    let Some(inv) = super::inventory::load(global, out) else {
        return EXIT_USAGE;
    };
    let s = match Session::new(inv, &global.inventory) {
        Ok(s) => s,
        Err(e) => return complain(out, &e, e.exit_code()),
    };
    block_on(out, command(&s, cmd, out))
}

fn block_on(out: &Output, f: impl std::future::Future<Output = Result<i32, AccessError>>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return complain(out, e, EXIT_HOST_FAILED),
    };
    let result = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            if let AccessError::Renew { renewed, .. } = &e {
                show(&Changes::of(renewed.clone()), out);
            }
            complain(out, &e, e.exit_code())
        }
    }
}

fn reminded(r: Reminders, out: &Output) -> i32 {
    let _ = r.notes(out, &mut std::io::stderr().lock());
    show(&r, out);
    r.exit_code()
}

async fn command(s: &Session, cmd: AccessCommand, out: &Output) -> Result<i32, AccessError> {
    let today = date::today();
    let (outcomes, push) = match cmd {
        AccessCommand::Grant(a) => {
            let request = GrantRequest {
                login: a.login,
                level: a.level,
                end: a.until.into(),
                key_files: a.key,
                hosts: a.hosts,
                all_hosts: a.all_hosts,
                name: a.name,
                mail: a.mail,
            };
            let g = s.check_grant(request, today, &mut notice(out))?;
            if out.format == Format::Human {
                for k in &g.keys {
                    println!("key {}", k.describe());
                }
            }
            let changes = Changes::granted(s.grant(&g).await?);
            show(&changes, out);
            (changes.people, a.push)
        }
        AccessCommand::Extend(a) => {
            let e = s.shadow_expire(&a.until.into(), today, &mut notice(out))?;
            (changed(s.extend(&a.login, e).await?, out), a.push)
        }
        AccessCommand::Revoke(a) => (changed(s.revoke(&a.login, today).await?, out), a.push),
        AccessCommand::RemoveKey(a) => (
            changed(s.remove_key(&a.login, &a.fingerprint).await?, out),
            a.push,
        ),
        AccessCommand::List(a) => {
            show(&s.list(a.expiring.as_deref(), a.expired, today).await?, out);
            return Ok(EXIT_OK);
        }
        AccessCommand::Rotate(a) => {
            let r = s.rotate(&a.renew, a.dry_run, today).await?;
            show(&r, out);
            (r.renewed, a.push)
        }
        AccessCommand::Remind(a) => return Ok(reminded(s.remind(a.dry_run, today).await?, out)),
        AccessCommand::Audit(a) => {
            let audit = s.audit(a.limit.as_deref(), today).await?;
            show(&audit, out);
            return Ok(audit.exit_code());
        }
    };
    if !push.no_push {
        sync(s, &outcomes, out).await;
    }
    Ok(EXIT_OK)
}

fn changed(o: Outcome, out: &Output) -> Vec<Outcome> {
    let changes = Changes::of(vec![o]);
    show(&changes, out);
    changes.people
}

/// The person's machines sync now; one that cannot is a warning (its timer will).
async fn sync(s: &Session, outcomes: &[Outcome], out: &Output) {
    match s.push(outcomes).await {
        Err(e) => warn(out, format!("could not push the change: {e}")),
        Ok(hosts) => {
            for h in hosts {
                match h.failure {
                    None if out.format == Format::Human => println!("  {}: synced", h.host),
                    None => {}
                    Some(why) => warn(out, format!(
                        "{} did not sync ({why}); its timer will within 5 minutes. Is `picaops apply` done there?",
                        h.host
                    )),
                }
            }
        }
    }
}
