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

use super::config::{MAX_CACHE_LIFETIME_SECS, MIN_FIRST_UID};
use super::date;
use super::directory::{
    valid_login, Directory, DirectoryError, Endpoint, Expiry, Person, MAX_KEYS,
};
use super::keys;
use super::Level;
use crate::secrets::Secret;

/// Where apply puts the job file on each host.
pub const CONFIG_PATH: &str = "/etc/picaops/access.json";
/// After a failed directory call, later calls go straight to the cache for this long, so one
/// login (sshd asks several times) never waits more than once.
pub const DOWN_MEMORY_SECS: i64 = 30;
/// The file that remembers a failed directory call (in the cache directory).
pub const DOWN_MARKER: &str = ".directory-unreachable";
/// Address space the `keys` path may use (setrlimit RLIMIT_AS): a directory answer too large
/// for it ends the helper (no key printed) instead of taking the host's memory.
pub const KEYS_ADDRESS_SPACE: u64 = 256 << 20;
/// Past the job file's timeout, how long `keys` may still take (reading the cache) before its
/// hard alarm ends it, no key printed.
pub const KEYS_GRACE_MS: u64 = 300;
/// Largest job file, password file, CA file or cache entry the helper reads.
const MAX_LOCAL_FILE: u64 = 1 << 20;

/// What the helper refuses in a job file, as `picaops inventory check` does: system accounts under
/// the directory, absurd lifetimes and timeouts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFileError {
    #[error("first_uid {0} would let the directory log in as system accounts (root is 0); it must be at least {MIN_FIRST_UID}")]
    FirstUid(u32),
    #[error("cache_lifetime_secs {0} is not between 1 and {MAX_CACHE_LIFETIME_SECS}")]
    CacheLifetime(u64),
    #[error("timeout_ms {0} is not between 1 and 10000 (sshd waits for the helper)")]
    Timeout(u64),
}

/// Why the helper could not do what it was asked: its job file, the files it trusts, the local
/// account tools, the directory during `sync`. Never a login decision: `keys` fails closed, with
/// its reason in the [`Decision`] and the log.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot read {}: {error} (run `picaops apply` to install it)", .path.display())]
    JobFileUnreadable {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{} is not a valid access job file: {error}", .path.display())]
    JobFileInvalid {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{}: {error}; run `picaops inventory check`, fix the inventory's `access:` section and `picaops apply` again", .path.display())]
    JobFileRefused {
        path: PathBuf,
        #[source]
        error: JobFileError,
    },
    /// The CA file or the password file the job file names.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// The async runtime the directory calls need could not start.
    #[error("cannot start: {0}")]
    Runtime(#[source] std::io::Error),
    /// A local command (`useradd`, `getent`…) could not be started.
    #[error("{program}: {error}")]
    Spawn {
        program: String,
        #[source]
        error: std::io::Error,
    },
    /// A local command failed; `stderr` is what it said.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("no uidNumber in the directory")]
    NoUidNumber,
    #[error("uidNumber {uid} is below first_uid {first_uid}: refusing to manage it")]
    SystemUid { uid: u32, first_uid: u32 },
    #[error("shadowExpire {0:?} is not a day count")]
    InvalidExpiry(String),
    /// The directory's uidNumber is already another local account's uid.
    #[error("uid {uid} is already the local account {account}")]
    UidTaken { uid: u32, account: String },
    #[error("the local account has uid {local}, the directory says {directory}: fix one of them")]
    UidMismatch { local: u32, directory: u32 },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("cannot record managed accounts: {0}")]
    Managed(#[source] std::io::Error),
}

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
    /// The name the directory's certificate is for, when `url` names another address (after a
    /// site recovery moved it). Absent: the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_name: Option<String>,
}

impl HostConfig {
    pub fn read(path: &Path) -> Result<Self, HelperError> {
        let bytes =
            read_private(path, MAX_LOCAL_FILE).map_err(|error| HelperError::JobFileUnreadable {
                path: path.to_path_buf(),
                error,
            })?;
        let cfg: HostConfig =
            serde_json::from_slice(&bytes).map_err(|error| HelperError::JobFileInvalid {
                path: path.to_path_buf(),
                error,
            })?;
        cfg.check().map_err(|error| HelperError::JobFileRefused {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(cfg)
    }

    /// What `picaops inventory check` refuses, refused again here (a job file written by hand or
    /// by an older picaops): system accounts under the directory, absurd lifetimes and timeouts.
    pub fn check(&self) -> Result<(), JobFileError> {
        if self.first_uid < MIN_FIRST_UID {
            return Err(JobFileError::FirstUid(self.first_uid));
        }
        if self.cache_lifetime_secs == 0 || self.cache_lifetime_secs > MAX_CACHE_LIFETIME_SECS {
            return Err(JobFileError::CacheLifetime(self.cache_lifetime_secs));
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err(JobFileError::Timeout(self.timeout_ms));
        }
        Ok(())
    }

    fn endpoint(&self) -> Result<Endpoint, HelperError> {
        let ca_pem = match &self.ca_file {
            Some(f) => Some(read_local(f)?),
            None => None,
        };
        Ok(Endpoint {
            url: self.url.clone(),
            ca_pem,
            people: self.people.clone(),
            hosts_attribute: self.hosts_attribute.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            tls_name: self.tls_name.clone(),
        })
    }

    fn bind(&self) -> Result<Option<(String, Secret)>, HelperError> {
        match (&self.bind_dn, &self.password_file) {
            (Some(dn), Some(f)) => {
                let bytes = read_local(f)?;
                let text = String::from_utf8_lossy(&bytes);
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

/// The rule, in one place: an entry that says who it is (one uid, one uidNumber of a person,
/// not a system account), level known, a valid end date not passed, allowed on `cfg.host`, at
/// most `MAX_KEYS` keys and at least one good one.
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
    if let Some(why) = &p.broken {
        return deny(format!("the directory entry is broken: {why}"));
    }
    match p.uid_number {
        None => return deny("no uidNumber in the directory".into()),
        Some(u) if u < cfg.first_uid => {
            return deny(format!(
                "uidNumber {u} is below first_uid {}: a local account, not the directory's",
                cfg.first_uid
            ))
        }
        Some(_) => {}
    }
    if level.is_none() {
        return deny(format!("gidNumber {:?} is no access level", p.gid_number));
    }
    let opts = match &p.shadow_expire {
        Expiry::Invalid(raw) => {
            return deny(format!(
                "shadowExpire {raw:?} is not a day count (only an absent value or -1 means never)"
            ))
        }
        Expiry::Until(e) if today >= *e => return deny(format!("access ended on {}", p.until())),
        Expiry::Until(e) => {
            let (y, m, d) = date::civil_from_days(*e);
            format!("expiry-time=\"{y:04}{m:02}{d:02}Z\" ")
        }
        Expiry::Never => String::new(),
    };
    if !p.allowed_on(&cfg.host) {
        return deny(format!("not allowed on {}", cfg.host));
    }
    if p.keys.len() > MAX_KEYS {
        return deny(format!(
            "{} keys in the directory, more than {MAX_KEYS}: the entry looks broken",
            p.keys.len()
        ));
    }
    let mut lines = Vec::new();
    let mut fingerprints = Vec::new();
    for k in &p.keys {
        if let Ok(key) = keys::parse(k) {
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

/// Why the person the directory (or the cache) returned may not stand for the login sshd asked
/// about, with `uid` as sshd's `%U` (the local account's uid) when it passes it.
pub fn identity_mismatch(p: &Person, login: &str, uid: Option<u32>) -> Option<String> {
    if p.login != login {
        return Some(format!(
            "the directory answered for {login} with the entry {} (uid {:?}): refused",
            p.dn, p.login
        ));
    }
    match (uid, p.uid_number) {
        (Some(local), Some(dir)) if local != dir => Some(format!(
            "the local account {login} has uid {local}, the directory's entry says uidNumber {dir}: refused; fix one of them"
        )),
        (Some(local), None) => Some(format!(
            "the local account {login} has uid {local}, the directory's entry has no uidNumber: refused"
        )),
        _ => None,
    }
}

/// What the cache keeps for a person who was allowed when last read.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheEntry {
    fetched_at: i64,
    person: Person,
}

/// Reads a file the helper trusts (job file, secrets, cache): opened without following a
/// symlink and without blocking (a FIFO never hangs it), and only if it is a regular file owned
/// by the user running the helper (root under sshd), not group- or world-writable, and at most
/// `max` bytes.
pub fn read_private(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(refuse("not a regular file".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(refuse(format!("owned by uid {}, not {me}", m.uid())));
    }
    if m.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "group- or world-writable (mode {:o})",
            m.mode() & 0o7777
        )));
    }
    if m.len() > max {
        return Err(refuse(format!("{} bytes, more than {max}", m.len())));
    }
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(refuse(format!("more than {max} bytes")));
    }
    Ok(bytes)
}

/// A file the job file names (CA, password), read as [`read_private`] reads.
fn read_local(path: &str) -> Result<Vec<u8>, HelperError> {
    read_private(Path::new(path), MAX_LOCAL_FILE).map_err(|error| HelperError::Unreadable {
        path: path.to_string(),
        error,
    })
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
    let path = cfg.cache_file(login);
    let bytes = match read_private(&path, MAX_LOCAL_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log(&format!("ignoring the cache entry {}: {e}", path.display()));
            return None;
        }
    };
    let e: CacheEntry = serde_json::from_slice(&bytes).ok()?;
    let age = date::now_secs().checked_sub(e.fetched_at)?;
    (age >= 0 && (age as u64) < cfg.cache_lifetime_secs).then_some((e.person, age))
}

fn down_marker(cfg: &HostConfig) -> PathBuf {
    Path::new(&cfg.cache_dir).join(DOWN_MARKER)
}

fn directory_recently_down(cfg: &HostConfig) -> bool {
    std::fs::symlink_metadata(down_marker(cfg))
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

fn runtime() -> Result<tokio::runtime::Runtime, HelperError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HelperError::Runtime)
}

/// Runs `f` against the directory, the whole of it (connect, TLS, bind, search) bounded by the
/// job file's timeout.
fn with_directory<T>(
    cfg: &HostConfig,
    f: impl for<'a> FnOnce(
        &'a mut Directory,
    ) -> futures::future::BoxFuture<'a, Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    // The helper's own trouble reads as the directory's: `keys` then answers from the cache.
    let invalid = |e: HelperError| DirectoryError::Invalid(e.to_string());
    let ep = cfg.endpoint().map_err(invalid)?;
    let bind = cfg.bind().map_err(invalid)?;
    let rt = runtime().map_err(invalid)?;
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
        Ok(r) => r,
        Err(_) => Err(DirectoryError::Timeout {
            url: cfg.url.clone(),
            secs: limit.as_secs_f64(),
        }),
    }
}

/// Bounds the rest of this process for `keys`: at most `KEYS_ADDRESS_SPACE` of address space
/// (an allocation beyond it ends the process, no key printed), no core dump of it, and a hard
/// alarm at the job file's timeout plus `KEYS_GRACE_MS` (SIGALRM's default action ends the
/// process, whatever it is blocked on). `disarm_watchdog` is called before printing.
pub fn bound_keys_call(cfg: &HostConfig) {
    let budget_ms = cfg.timeout_ms.saturating_add(KEYS_GRACE_MS);
    let limit = libc::rlimit {
        rlim_cur: KEYS_ADDRESS_SPACE,
        rlim_max: KEYS_ADDRESS_SPACE,
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: (budget_ms / 1000) as libc::time_t,
            tv_usec: ((budget_ms % 1000) * 1000) as libc::suseconds_t,
        },
    };
    // SAFETY: plain system calls on values that live through the calls; SIGALRM is set to its
    // default action (terminate) first, so the timer ends the process.
    let failed = unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
            || libc::setrlimit(libc::RLIMIT_AS, &limit) != 0
            || libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) != 0
    };
    if failed {
        log(&format!(
            "cannot bound the keys call: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// Stops `bound_keys_call`'s alarm (the answer is decided; printing it must not be cut).
pub fn disarm_watchdog() {
    let off = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: a plain system call on a value that lives through it.
    unsafe {
        libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut());
    }
}

/// `AuthorizedKeysCommand picaops-access keys %u %U`: the lines sshd may accept for `login`
/// (`uid`: `%U`, the local account's uid, when sshd passes it).
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
        Err(DirectoryError::Invalid(
            "directory unreachable a moment ago".to_string(),
        ))
    } else {
        let l = login.to_string();
        with_directory(cfg, move |d| Box::pin(async move { d.person(&l).await }))
    };
    let answer = |p: &Person, source: &str| -> Decision {
        match identity_mismatch(p, login, uid) {
            Some(why) => Decision {
                allowed: false,
                reason: why,
                until: p.until(),
                lines: vec![],
                fingerprints: vec![],
                level: None,
            },
            None => {
                let d = decide(cfg, p, today);
                if source != "directory" {
                    log(&format!("{login}: {source}: {}", d.reason));
                }
                d
            }
        }
    };
    match looked_up {
        Ok(Some(p)) => {
            let d = answer(&p, "directory");
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
        Err(DirectoryError::Untrusted(e)) => {
            // The directory answered, with something refused: the cache does not overrule it.
            cache_drop(cfg, login);
            log(&format!("{login}: {e}; no keys"));
            vec![]
        }
        Err(e) => {
            let _ = write_private(&down_marker(cfg), b"");
            match cache_get(cfg, login) {
                Some((p, age)) => {
                    log(&format!(
                        "{login}: {e}; answering from the cache ({age} s old)"
                    ));
                    answer(&p, "cache").lines
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
    let bytes = read_private(&managed_file(cfg), MAX_LOCAL_FILE).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| valid_login(l))
        .map(String::from)
        .collect()
}

fn run(argv: &[&str]) -> Result<String, HelperError> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| HelperError::Spawn {
            program: argv[0].to_string(),
            error,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HelperError::Command {
            command: argv.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
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
fn ensure_account(cfg: &HostConfig, p: &Person, level: &Level) -> Result<String, HelperError> {
    let uid = p.uid_number.ok_or(HelperError::NoUidNumber)?;
    if uid < cfg.first_uid {
        return Err(HelperError::SystemUid {
            uid,
            first_uid: cfg.first_uid,
        });
    }
    if run(&["getent", "group", &level.gid.to_string()]).is_err() {
        run(&["groupadd", "-g", &level.gid.to_string(), &level.name])?;
    }
    let (expire, want_expire) = match &p.shadow_expire {
        Expiry::Until(e) => (date::format_day(*e), e.to_string()),
        Expiry::Never => (String::new(), String::new()),
        Expiry::Invalid(raw) => return Err(HelperError::InvalidExpiry(raw.clone())),
    };
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
                return Err(HelperError::UidTaken {
                    uid,
                    account: line.split(':').next().unwrap_or("?").to_string(),
                });
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
                return Err(HelperError::UidMismatch {
                    local: have_uid,
                    directory: uid,
                });
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
fn lock_account(cfg: &HostConfig, login: &str) -> Result<String, HelperError> {
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
pub fn sync(cfg: &HostConfig) -> Result<Vec<SyncAction>, HelperError> {
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
    write_private(&managed_file(cfg), text.as_bytes()).map_err(HelperError::Managed)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::config::picasoft_levels;
    use crate::access::directory::{person_from, MAX_DAY};
    use ldap3::SearchEntry;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";

    fn cfg(dir: &Path) -> HostConfig {
        HostConfig {
            host: "pica01".into(),
            url: "ldap://127.0.0.1:9".into(),
            people: "ou=People,dc=x".into(),
            hosts_attribute: "host".into(),
            ca_file: None,
            bind_dn: None,
            password_file: None,
            levels: picasoft_levels(),
            first_uid: 2000,
            cache_dir: dir.join("cache").display().to_string(),
            state_dir: dir.join("state").display().to_string(),
            cache_lifetime_secs: 3600,
            timeout_ms: 1000,
            tls_name: None,
        }
    }

    fn entry(attrs: Vec<(&str, Vec<String>)>) -> SearchEntry {
        SearchEntry {
            dn: "uid=ann,ou=People,dc=x".into(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            bin_attrs: Default::default(),
        }
    }

    fn ann(expire: &[&str]) -> Person {
        let mut attrs = vec![
            ("uid", vec!["ann".to_string()]),
            ("uidNumber", vec!["2000".into()]),
            ("gidNumber", vec!["502".into()]),
            ("sshPublicKey", vec![KEY.into()]),
            ("host", vec!["pica01".into()]),
        ];
        if !expire.is_empty() {
            attrs.push((
                "shadowExpire",
                expire.iter().map(|s| s.to_string()).collect(),
            ));
        }
        person_from(entry(attrs), "host")
    }

    #[test]
    fn an_end_date_that_is_no_day_count_gets_no_key() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        let today = 20000;
        // Positive controls: never, and a date ahead (with sshd's own expiry-time).
        let d = decide(&c, &ann(&[]), today);
        assert!(d.allowed && !d.lines[0].contains("expiry-time"), "{d:?}");
        let d = decide(&c, &ann(&["-1"]), today);
        assert!(d.allowed && !d.lines[0].contains("expiry-time"), "{d:?}");
        let d = decide(&c, &ann(&["20892"]), today);
        assert!(
            d.allowed && d.lines[0].starts_with("expiry-time=\"20270315Z\" ssh-ed25519 "),
            "{d:?}"
        );
        for bad in ["-2", "abc", "2027-03-15", "", "19000.5"] {
            let d = decide(&c, &ann(&[bad]), today);
            assert!(!d.allowed && d.lines.is_empty(), "{bad:?}: {d:?}");
            assert!(
                d.reason.contains("not a day count"),
                "{bad:?}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn the_entry_must_be_the_login_asked_and_match_the_local_uid() {
        let p = ann(&[]);
        assert_eq!(identity_mismatch(&p, "ann", Some(2000)), None);
        assert_eq!(identity_mismatch(&p, "ann", None), None);
        assert!(identity_mismatch(&p, "mallory", Some(2000)).is_some());
        assert!(identity_mismatch(&p, "ann", Some(2001))
            .unwrap()
            .contains("uidNumber 2000"));
        // Two uids: the entry stands for nobody, and the rule refuses it too.
        let two = person_from(
            entry(vec![
                ("uid", vec!["ann".into(), "mallory".into()]),
                ("uidNumber", vec!["2000".into()]),
                ("gidNumber", vec!["502".into()]),
                ("sshPublicKey", vec![KEY.into()]),
                ("host", vec!["*".into()]),
            ]),
            "host",
        );
        assert!(identity_mismatch(&two, "mallory", Some(2000)).is_some());
        assert!(identity_mismatch(&two, "ann", Some(2000)).is_some());
        let tmp = tempfile::tempdir().unwrap();
        assert!(!decide(&cfg(tmp.path()), &two, 20000).allowed);
        // A system account's uidNumber gets nothing, whatever first_uid the job file says.
        let mut root = ann(&[]);
        root.uid_number = Some(0);
        assert!(!decide(&cfg(tmp.path()), &root, 20000).allowed);
    }

    #[test]
    fn a_job_file_that_puts_system_accounts_under_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg(tmp.path());
        assert_eq!(c.check(), Ok(()));
        c.first_uid = 0;
        let path = tmp.path().join("access.json");
        std::fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
        let e = HostConfig::read(&path).unwrap_err().to_string();
        assert!(e.contains("first_uid 0") && e.contains("root"), "{e}");
        c.first_uid = 2000;
        c.cache_lifetime_secs = u64::MAX;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("cache_lifetime_secs"));
    }

    #[test]
    fn only_private_regular_files_are_read() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        std::fs::write(&good, b"x").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&good, 10).unwrap(), b"x");
        assert!(read_private(&good, 0).is_err(), "larger than the bound");
        // A FIFO: refused at once (a plain open would wait for a writer forever).
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let e = read_private(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("regular"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(
            read_private(&link, 10).is_err(),
            "a symlink is not followed"
        );
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o602)).unwrap();
        assert!(read_private(&good, 10)
            .unwrap_err()
            .to_string()
            .contains("writable"));
    }

    #[test]
    fn a_fifo_in_the_cache_directory_does_not_hang_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        std::fs::create_dir_all(&c.cache_dir).unwrap();
        let f = std::ffi::CString::new(c.cache_file("ann").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(f.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        assert!(cache_get(&c, "ann").is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        // Positive control: a real entry is read back.
        std::fs::remove_file(c.cache_file("ann")).unwrap();
        cache_put(&c, &ann(&["20892"]));
        assert_eq!(cache_get(&c, "ann").unwrap().0.login, "ann");
    }

    /// A small deterministic mutator (xorshift), so the property test needs no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
        fn mutate(&mut self, s: &str) -> String {
            const BITS: &[&str] = &[
                "0", "1", "9", "-", "+", " ", ".", "e", "é", "\0", "\n", "A", "/", "=", "*", ")",
            ];
            let mut c: Vec<char> = s.chars().collect();
            for _ in 0..=self.below(3) {
                let at = if c.is_empty() {
                    0
                } else {
                    self.below(c.len() + 1)
                };
                match self.below(4) {
                    0 if at < c.len() => {
                        c.remove(at);
                    }
                    1 if at < c.len() => c[at] = self.pick(BITS).chars().next().unwrap_or('0'),
                    2 => c.splice(at..at, self.pick(BITS).chars()).for_each(drop),
                    _ => {
                        let dup: Vec<char> = c[at.min(c.len())..].to_vec();
                        c.extend(dup.into_iter().take(64));
                    }
                }
            }
            c.into_iter().collect()
        }
    }

    /// Property: whatever the directory answers, parsing never panics, and a key is served
    /// without `expiry-time` only when `shadowExpire` is absent or exactly `-1`; with a date,
    /// every line carries that date. Bounded: 20 000 cases, or PICAOPS_FUZZ_SECONDS seconds.
    #[test]
    fn directory_answers_never_yield_a_key_without_its_end_date() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        let today = 20000;
        let seconds: u64 = std::env::var("PICAOPS_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        let seeds = [
            "-1",
            "-2",
            "abc",
            "2027-03-15",
            "",
            "19000.5",
            "20892",
            "0",
            "20000",
            "20001",
            "2932896",
            "2932897",
            "-0",
            "+20892",
            " 20892",
            "99999999999999999999",
            "1e5",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut cases, mut allowed, mut panics) = (0u64, 0u64, 0u64);
        while cases < 20_000 || std::time::Instant::now() < deadline {
            cases += 1;
            let mut attrs: Vec<(&str, Vec<String>)> = Vec::new();
            let uid = if rng.below(10) == 0 {
                rng.mutate("ann")
            } else {
                "ann".into()
            };
            match rng.below(12) {
                0 => {}
                1 => attrs.push(("uid", vec![uid, "mallory".into()])),
                _ => attrs.push(("uid", vec![uid])),
            }
            let num = |rng: &mut Rng, base: &str| {
                if rng.below(8) == 0 {
                    rng.mutate(base)
                } else {
                    base.to_string()
                }
            };
            if rng.below(10) != 0 {
                attrs.push(("uidNumber", vec![num(&mut rng, "2000")]));
            }
            attrs.push(("gidNumber", vec![num(&mut rng, "502")]));
            let raw: Vec<String> = (0..rng.below(4).saturating_sub(1))
                .map(|_| {
                    let s = rng.pick(&seeds);
                    if rng.below(2) == 0 {
                        rng.mutate(s)
                    } else {
                        s.to_string()
                    }
                })
                .collect();
            if !raw.is_empty() {
                attrs.push(("shadowExpire", raw.clone()));
            }
            let keys: Vec<String> = (0..rng.below(4))
                .map(|_| match rng.below(4) {
                    0 => rng.mutate(KEY),
                    _ => KEY.to_string(),
                })
                .collect();
            attrs.push(("sshPublicKey", keys));
            attrs.push((
                "host",
                vec![rng.pick(&["pica01", "*", "pica02"]).to_string()],
            ));
            let found = std::panic::catch_unwind(|| {
                let p = person_from(entry(attrs.clone()), "host");
                let d = decide(&c, &p, today);
                let m = identity_mismatch(&p, "ann", Some(2000));
                (d, m)
            });
            let Ok((d, mismatch)) = found else {
                panics += 1;
                continue;
            };
            if !d.allowed {
                assert!(d.lines.is_empty(), "{attrs:?}: denied with lines {d:?}");
                continue;
            }
            allowed += u64::from(mismatch.is_none());
            let never = raw.is_empty() || raw == ["-1"];
            if never {
                assert!(
                    d.lines.iter().all(|l| !l.contains("expiry-time")),
                    "{attrs:?}: {d:?}"
                );
            } else {
                let day: i64 = match raw.as_slice() {
                    [one] if one.bytes().all(|b| b.is_ascii_digit()) => one.parse().unwrap_or(-1),
                    _ => -1,
                };
                assert!(
                    (today + 1..=MAX_DAY).contains(&day),
                    "{attrs:?}: served with shadowExpire {raw:?}: {d:?}"
                );
                let (y, m, dd) = date::civil_from_days(day);
                let want = format!("expiry-time=\"{y:04}{m:02}{dd:02}Z\" ");
                assert!(
                    d.lines.iter().all(|l| l.starts_with(&want)),
                    "{attrs:?}: {d:?}"
                );
            }
        }
        eprintln!("directory answers: {cases} mutants, {allowed} served, {panics} panics");
        assert_eq!(panics, 0);
        assert!(
            allowed > 100,
            "the mutator must also make valid answers ({allowed})"
        );
    }
}
