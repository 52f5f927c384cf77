//! The host side of access: what `picaops-access` does when sshd asks it for a user's keys
//! (`keys`), when the timer or a workstation push refreshes local accounts (`sync`), and what it
//! tells `picaops access audit` (`status`). Reads a root-only job file written by `picaops apply`.
//!
//! Rules: only people with a known level, not expired, and allowed on this host get keys; each
//! key line carries `expiry-time` so sshd refuses it after the end date whatever happens; the
//! directory gets at most `timeout_ms` (1 s) per call, then the cache answers (fresh entries of
//! allowed people only) — an expired or revoked person is never served from it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::date;
use super::directory::{valid_login, Directory, DirectoryError, Endpoint, Person};
use super::keys;
use super::Level;
use crate::secrets::Secret;

/// Where apply puts the job file on each host.
pub const CONFIG_PATH: &str = "/etc/picaops/access.json";
/// After a failed directory call, later calls go straight to the cache for this long, so one
/// login (sshd asks several times) never waits more than once.
const DOWN_MEMORY_SECS: i64 = 30;

/// The helper's job file (`/etc/picaops/access.json`, root-only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// This machine's name in the inventory (what the `host` attribute lists).
    pub host: String,
    pub url: String,
    pub people: String,
    pub hosts_attribute: String,
    pub ca_file: Option<String>,
    pub bind_dn: Option<String>,
    /// Root-only file holding the bind password (one line).
    pub password_file: Option<String>,
    pub levels: Vec<Level>,
    pub first_uid: u32,
    pub cache_dir: String,
    pub state_dir: String,
    pub cache_lifetime_secs: u64,
    pub timeout_ms: u64,
}

impl HostConfig {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read {}: {e} (run `picaops apply` to install it)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid access job file: {e}", path.display()))
    }

    fn endpoint(&self) -> Result<Endpoint, String> {
        let ca_pem = match &self.ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"))?),
            None => None,
        };
        Ok(Endpoint {
            url: self.url.clone(),
            ca_pem,
            people: self.people.clone(),
            hosts_attribute: self.hosts_attribute.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }

    fn bind(&self) -> Result<Option<(String, Secret)>, String> {
        match (&self.bind_dn, &self.password_file) {
            (Some(dn), Some(f)) => {
                let text =
                    std::fs::read_to_string(f).map_err(|e| format!("cannot read {f}: {e}"))?;
                Ok(Some((
                    dn.clone(),
                    Secret::from_line(text.lines().next().unwrap_or("")),
                )))
            }
            _ => Ok(None),
        }
    }

    fn level(&self, gid: Option<u32>) -> Option<&Level> {
        gid.and_then(|g| self.levels.iter().find(|l| l.gid == g))
    }

    fn cache_file(&self, login: &str) -> PathBuf {
        Path::new(&self.cache_dir).join(format!("{login}.json"))
    }
}

/// Whether a person gets in on this host today, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    /// Last day access works, or "never".
    pub until: String,
    /// authorized_keys lines (with `expiry-time`), when allowed.
    pub lines: Vec<String>,
    pub fingerprints: Vec<String>,
    pub level: Option<String>,
}

/// The rule, in one place: level known, not expired, allowed on `cfg.host`, at least one good key.
pub fn decide(cfg: &HostConfig, p: &Person, today: i64) -> Decision {
    let level = cfg.level(p.gid_number).map(|l| l.name.clone());
    let deny = |reason: String| Decision {
        allowed: false,
        reason,
        until: p.until(),
        lines: vec![],
        fingerprints: vec![],
        level: level.clone(),
    };
    if level.is_none() {
        return deny(format!("gidNumber {:?} is no access level", p.gid_number));
    }
    if p.expired(today) {
        return deny(format!("access ended on {}", p.until()));
    }
    if !p.allowed_on(&cfg.host) {
        return deny(format!("not allowed on {}", cfg.host));
    }
    let mut lines = Vec::new();
    let mut fingerprints = Vec::new();
    for k in &p.keys {
        if let Ok(key) = keys::parse(k) {
            let opts = match p.shadow_expire {
                Some(e) => {
                    let (y, m, d) = date::civil_from_days(e);
                    format!("expiry-time=\"{y:04}{m:02}{d:02}Z\" ")
                }
                None => String::new(),
            };
            lines.push(format!("{opts}{}", key.line()));
            fingerprints.push(key.fingerprint);
        }
    }
    if lines.is_empty() {
        return deny("no acceptable SSH key".into());
    }
    Decision {
        allowed: true,
        reason: "allowed".into(),
        until: p.until(),
        lines,
        fingerprints,
        level,
    }
}

/// What the cache keeps for a person who was allowed when last read.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheEntry {
    fetched_at: i64,
    person: Person,
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn cache_put(cfg: &HostConfig, p: &Person) {
    let entry = CacheEntry {
        fetched_at: date::now_secs(),
        person: p.clone(),
    };
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        if let Err(e) = write_private(&cfg.cache_file(&p.login), &bytes) {
            log(&format!("cannot write the cache for {}: {e}", p.login));
        }
    }
}

fn cache_drop(cfg: &HostConfig, login: &str) {
    let _ = std::fs::remove_file(cfg.cache_file(login));
}

/// The cached person, if the entry is younger than the cache lifetime.
fn cache_get(cfg: &HostConfig, login: &str) -> Option<(Person, i64)> {
    let text = std::fs::read_to_string(cfg.cache_file(login)).ok()?;
    let e: CacheEntry = serde_json::from_str(&text).ok()?;
    let age = date::now_secs() - e.fetched_at;
    (age >= 0 && (age as u64) < cfg.cache_lifetime_secs).then_some((e.person, age))
}

fn down_marker(cfg: &HostConfig) -> PathBuf {
    Path::new(&cfg.cache_dir).join(".directory-unreachable")
}

fn directory_recently_down(cfg: &HostConfig) -> bool {
    std::fs::metadata(down_marker(cfg))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| (age.as_secs() as i64) < DOWN_MEMORY_SECS)
}

/// Logs to syslog (auth facility), where sshd's own messages go.
pub fn log(msg: &str) {
    let text = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let ident = c"picaops-access";
    // SAFETY: both strings are NUL-terminated and outlive the calls; "%s" takes one string.
    unsafe {
        libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
        libc::syslog(libc::LOG_INFO, c"%s".as_ptr(), text.as_ptr());
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
}

/// Runs `f` against the directory, the whole of it (connect, TLS, bind, search) bounded by the
/// job file's timeout.
fn with_directory<T>(
    cfg: &HostConfig,
    f: impl for<'a> FnOnce(
        &'a mut Directory,
    ) -> futures::future::BoxFuture<'a, Result<T, DirectoryError>>,
) -> Result<T, String> {
    let ep = cfg.endpoint()?;
    let bind = cfg.bind()?;
    let rt = runtime()?;
    let limit = ep.timeout;
    let r = rt.block_on(async {
        tokio::time::timeout(limit, async {
            let mut d =
                Directory::open(&ep, bind.as_ref().map(|(dn, pw)| (dn.as_str(), pw))).await?;
            let r = f(&mut d).await;
            d.close().await;
            r
        })
        .await
    });
    // Never wait for the connection's background task: a hung server must not hold us.
    rt.shutdown_background();
    match r {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the directory at {} did not answer within {} ms",
            cfg.url, cfg.timeout_ms
        )),
    }
}

/// `AuthorizedKeysCommand picaops-access keys %u %U`: the lines sshd may accept for `login`.
pub fn keys_for(cfg: &HostConfig, login: &str, uid: Option<u32>) -> Vec<String> {
    if uid.is_some_and(|u| u < cfg.first_uid) {
        return vec![]; // a local system account: not the directory's business
    }
    if !valid_login(login) {
        log(&format!("refused an invalid login name {login:?}"));
        return vec![];
    }
    let today = date::today();
    let looked_up = if directory_recently_down(cfg) {
        Err("directory unreachable a moment ago".to_string())
    } else {
        let l = login.to_string();
        with_directory(cfg, move |d| Box::pin(async move { d.person(&l).await }))
    };
    match looked_up {
        Ok(Some(p)) => {
            let d = decide(cfg, &p, today);
            if d.allowed {
                cache_put(cfg, &p);
            } else {
                cache_drop(cfg, login);
                log(&format!("{login}: no keys: {}", d.reason));
            }
            d.lines
        }
        Ok(None) => {
            cache_drop(cfg, login);
            vec![]
        }
        Err(e) => {
            let _ = write_private(&down_marker(cfg), b"");
            match cache_get(cfg, login) {
                Some((p, age)) => {
                    let d = decide(cfg, &p, today);
                    log(&format!(
                        "{login}: {e}; answering from the cache ({age} s old): {}",
                        d.reason
                    ));
                    d.lines
                }
                None => {
                    log(&format!("{login}: {e}; no fresh cache entry: refused"));
                    vec![]
                }
            }
        }
    }
}

/// One line of `sync`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct SyncAction {
    pub login: String,
    pub action: String,
}

/// What `status` tells the workstation about one person.
#[derive(Clone, Debug, Serialize)]
pub struct LoginStatus {
    pub login: String,
    /// `directory` or `cache`: where the decision came from.
    pub source: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// Whether a local account exists (sshd needs one).
    pub account: bool,
}

fn managed_file(cfg: &HostConfig) -> PathBuf {
    Path::new(&cfg.state_dir).join("managed")
}

fn read_managed(cfg: &HostConfig) -> BTreeSet<String> {
    std::fs::read_to_string(managed_file(cfg))
        .unwrap_or_default()
        .lines()
        .filter(|l| valid_login(l))
        .map(String::from)
        .collect()
}

fn run(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `getent passwd login` → (uid, gid).
fn local_account(login: &str) -> Option<(u32, u32)> {
    let line = run(&["getent", "passwd", login]).ok()?;
    let f: Vec<&str> = line.trim().split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn group_exists(name: &str) -> bool {
    run(&["getent", "group", name]).is_ok()
}

fn groups_of(login: &str) -> BTreeSet<String> {
    run(&["id", "-Gn", login])
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Creates or updates the local account of an allowed person.
fn ensure_account(cfg: &HostConfig, p: &Person, level: &Level) -> Result<String, String> {
    let uid = p.uid_number.ok_or("no uidNumber in the directory")?;
    if uid < cfg.first_uid {
        return Err(format!(
            "uidNumber {uid} is below first_uid {}: refusing to manage it",
            cfg.first_uid
        ));
    }
    if run(&["getent", "group", &level.gid.to_string()]).is_err() {
        run(&["groupadd", "-g", &level.gid.to_string(), &level.name])?;
    }
    let expire = p.shadow_expire.map(date::format_day).unwrap_or_default();
    let all_level_groups: BTreeSet<&str> = cfg
        .levels
        .iter()
        .flat_map(|l| l.groups.iter().map(String::as_str))
        .collect();
    let want: Vec<&str> = level
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| group_exists(g))
        .collect();
    let gid = level.gid.to_string();
    let uid_s = uid.to_string();
    match local_account(&p.login) {
        None => {
            if let Ok(line) = run(&["getent", "passwd", &uid_s]) {
                return Err(format!(
                    "uid {uid} is already the local account {}",
                    line.split(':').next().unwrap_or("?")
                ));
            }
            let groups = want.join(",");
            let comment = p.display_name();
            let mut argv = vec![
                "useradd",
                "-m",
                "-u",
                &uid_s,
                "-g",
                &gid,
                "-s",
                "/bin/bash",
                "-c",
                &comment,
                "-p",
                "*",
                "-e",
                &expire,
            ];
            if !groups.is_empty() {
                argv.extend(["-G", &groups]);
            }
            argv.push(&p.login);
            run(&argv)?;
            Ok("created".into())
        }
        Some((have_uid, have_gid)) => {
            if have_uid != uid {
                return Err(format!("the local account has uid {have_uid}, the directory says {uid}: fix one of them"));
            }
            let current = groups_of(&p.login);
            let mut desired: BTreeSet<String> = current
                .iter()
                .filter(|g| !all_level_groups.contains(g.as_str()) && **g != level.name)
                .cloned()
                .collect();
            desired.extend(want.iter().map(|g| g.to_string()));
            let mut changed = Vec::new();
            let supplementary: BTreeSet<String> = current
                .iter()
                .filter(|g| **g != level.name)
                .cloned()
                .collect();
            let desired_sup: BTreeSet<String> =
                desired.into_iter().filter(|g| *g != level.name).collect();
            let shadow = run(&["getent", "shadow", &p.login]).unwrap_or_default();
            let have_expire = shadow.trim().split(':').nth(7).unwrap_or("").to_string();
            let want_expire = p.shadow_expire.map(|e| e.to_string()).unwrap_or_default();
            let mut argv: Vec<String> = vec!["usermod".into()];
            if have_gid != level.gid {
                argv.extend(["-g".into(), gid.clone()]);
                changed.push(format!("level {}", level.name));
            }
            if supplementary != desired_sup {
                argv.extend([
                    "-G".into(),
                    desired_sup.iter().cloned().collect::<Vec<_>>().join(","),
                ]);
                changed.push(format!(
                    "groups {}",
                    desired_sup.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
            if have_expire != want_expire {
                argv.extend(["-e".into(), expire.clone()]);
                changed.push(format!(
                    "expires {}",
                    if expire.is_empty() { "never" } else { &expire }
                ));
            }
            if changed.is_empty() {
                return Ok("unchanged".into());
            }
            argv.push(p.login.clone());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run(&argv)?;
            Ok(format!("updated ({})", changed.join(", ")))
        }
    }
}

/// Locks a local account picaops manages whose person lost access: expired at once and out of
/// the level groups. The home directory stays.
fn lock_account(cfg: &HostConfig, login: &str) -> Result<String, String> {
    if local_account(login).is_none() {
        return Ok("gone".into());
    }
    let shadow = run(&["getent", "shadow", login]).unwrap_or_default();
    let level_groups: BTreeSet<&str> = cfg
        .levels
        .iter()
        .flat_map(|l| l.groups.iter().map(String::as_str))
        .collect();
    let current = groups_of(login);
    let keep: Vec<String> = current
        .iter()
        .filter(|g| !level_groups.contains(g.as_str()))
        .cloned()
        .collect();
    let locked = shadow.trim().split(':').nth(7) == Some("1");
    if locked && keep.len() == current.len() {
        return Ok("locked".into());
    }
    let keep = keep.join(",");
    run(&["usermod", "-e", "1970-01-02", "-G", &keep, login])?;
    Ok("locked now".into())
}

/// Brings local accounts in line with the directory: creates/updates allowed people, locks the
/// ones picaops created who lost access, refreshes the cache. Does nothing when the directory
/// cannot be read (the cache and the existing accounts keep working until it can).
pub fn sync(cfg: &HostConfig) -> Result<Vec<SyncAction>, String> {
    let people = with_directory(cfg, |d| Box::pin(d.people()))?;
    let today = date::today();
    let mut managed = read_managed(cfg);
    let mut actions = Vec::new();
    let mut allowed = BTreeSet::new();
    for p in &people {
        if !valid_login(&p.login) {
            continue;
        }
        let d = decide(cfg, p, today);
        if d.allowed {
            let level = cfg.level(p.gid_number).expect("decide checked the level");
            allowed.insert(p.login.clone());
            let action = match ensure_account(cfg, p, level) {
                Ok(a) => {
                    managed.insert(p.login.clone());
                    cache_put(cfg, p);
                    a
                }
                Err(e) => format!("error: {e}"),
            };
            actions.push(SyncAction {
                login: p.login.clone(),
                action,
            });
        } else {
            cache_drop(cfg, &p.login);
        }
    }
    for login in managed.clone() {
        if allowed.contains(&login) {
            continue;
        }
        cache_drop(cfg, &login);
        let action = lock_account(cfg, &login).unwrap_or_else(|e| format!("error: {e}"));
        actions.push(SyncAction { login, action });
    }
    let text: String = managed.iter().map(|l| format!("{l}\n")).collect();
    write_private(&managed_file(cfg), text.as_bytes())
        .map_err(|e| format!("cannot record managed accounts: {e}"))?;
    Ok(actions)
}

/// Who can log in here right now, and until when: every person the directory allows here plus
/// every account picaops manages, each decided exactly as `keys` would.
pub fn status(cfg: &HostConfig) -> Vec<LoginStatus> {
    let today = date::today();
    let mut out: BTreeMap<String, LoginStatus> = BTreeMap::new();
    let managed = read_managed(cfg);
    let from_directory = with_directory(cfg, |d| Box::pin(d.people()));
    let source = if from_directory.is_ok() {
        "directory"
    } else {
        "cache"
    };
    let people: Vec<Person> = match from_directory {
        Ok(all) => all.into_iter().filter(|p| valid_login(&p.login)).collect(),
        Err(_) => managed
            .iter()
            .filter_map(|l| cache_get(cfg, l).map(|(p, _)| p))
            .collect(),
    };
    for p in &people {
        let d = decide(cfg, p, today);
        if !d.allowed && !managed.contains(&p.login) && !p.allowed_on(&cfg.host) {
            continue;
        }
        out.insert(
            p.login.clone(),
            LoginStatus {
                login: p.login.clone(),
                source: source.into(),
                account: local_account(&p.login).is_some(),
                decision: d,
            },
        );
    }
    for login in managed {
        out.entry(login.clone()).or_insert_with(|| LoginStatus {
            login: login.clone(),
            source: source.into(),
            account: local_account(&login).is_some(),
            decision: Decision {
                allowed: false,
                reason: "not in the directory (or no fresh cache entry)".into(),
                until: String::new(),
                lines: vec![],
                fingerprints: vec![],
                level: None,
            },
        });
    }
    out.into_values().collect()
}
