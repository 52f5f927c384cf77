//! Locks around a repository: picaops's own per-repository flock on the host (jobs sharing a
//! repository never overlap; forget/prune never collide with a backup), and restic's lock
//! files in the repository (stale ones left by a killed or cut-off run).
//!
//! A restic lock is removed only when picaops can prove its process is gone: the lock names
//! this machine's hostname and its pid is not running (or runs a process started after the
//! lock was taken, i.e. a reused pid). Any other lock is reported with who holds it, since
//! when, and left alone.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::restic::{parse_lock, parse_lock_ids, LockInfo, Restic, ResticError};

/// Why picaops's own lock (on a repository, or on a status file) could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create lock directory {}: {source}", .dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", .path.display())]
    Flock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another picaops operation kept the lock for the whole wait. `holder`: the line it wrote
    /// into the lock file (who it is), when there was one.
    #[error(
        "another picaops operation holds the repository lock {} ({}); waited {} s. \
         It will release the lock when it ends; see `systemctl list-units 'picaops-backup*'`",
        .path.display(),
        .holder.as_deref().unwrap_or("unknown holder"),
        .waited.as_secs()
    )]
    Held {
        path: PathBuf,
        holder: Option<String>,
        waited: Duration,
    },
}

/// An exclusive flock on a repository's lock file, released when dropped (or when the process
/// dies, even by kill -9: the kernel drops flocks with the last descriptor).
#[derive(Debug)]
pub struct RepoLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl RepoLock {
    /// Takes the lock, waiting up to `wait` for another picaops job on the same repository.
    /// `holder`: one line saying who we are (written into the file for the next waiter).
    pub fn acquire(path: &Path, holder: &str, wait: Duration) -> Result<RepoLock, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| LockError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path);
        // Root and the repository account share the repository side's lock files: a file the
        // other one made may be readable only, and flock works on a read-only descriptor.
        let mut file = match opened {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(path),
            other => other,
        }
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // Readable by all (it names only a job, an operation and a pid), so the other user of a
        // shared lock directory can open it; files made by older versions were 0600.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Flock {
                    path: path.to_path_buf(),
                    source: err,
                });
            }
            if Instant::now() >= deadline {
                let mut who = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut who);
                let who = who.trim();
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder: (!who.is_empty()).then(|| who.to_string()),
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{holder}");
        Ok(RepoLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

/// This machine's hostname, as restic writes it into its locks.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Unix start time of a running process, from /proc (None: unknown).
fn process_start(pid: i64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as f64)
}

/// A process's state letter from /proc (`R`, `S`, `Z` for a zombie…).
fn process_state(pid: i64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Is the process that took `lock` provably gone? Only for locks taken on this machine.
pub fn provably_dead(lock: &LockInfo, this_host: &str) -> bool {
    if lock.hostname != this_host || lock.pid <= 0 || lock.pid > i64::from(i32::MAX) {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(lock.pid as libc::pid_t, 0) };
    if rc != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // A zombie has exited (only its parent has not collected it yet).
    if process_state(lock.pid) == Some('Z') {
        return true;
    }
    // The pid runs, but maybe a newer process got it: started after the lock was taken?
    match (
        process_start(lock.pid),
        super::time::parse_rfc3339(&lock.time),
    ) {
        (Some(started), Some(locked)) => started > locked + 2.0,
        _ => false,
    }
}

/// Who holds a lock, in words.
pub fn describe(lock: &LockInfo) -> String {
    format!(
        "{} lock of pid {} on {} (user {}), taken at {}",
        if lock.exclusive {
            "an exclusive"
        } else {
            "a shared"
        },
        lock.pid,
        lock.hostname,
        if lock.username.is_empty() {
            "?"
        } else {
            &lock.username
        },
        lock.time
    )
}

/// The locks in a repository, read without locking.
pub fn list(restic: &Restic) -> Result<Vec<(String, LockInfo)>, ResticError> {
    let ids = restic.run_ok(&args(&["--no-lock", "list", "locks"]), |_| {})?;
    let mut locks = Vec::new();
    for id in parse_lock_ids(&ids.stdout) {
        // A lock can vanish between the listing and reading it: that is its holder finishing.
        let Ok(f) = restic.run_ok(&args(&["--no-lock", "cat", "lock", &id]), |_| {}) else {
            continue;
        };
        if let Ok(info) = parse_lock(&f.stdout) {
            locks.push((id, info));
        }
    }
    Ok(locks)
}

/// What clearing stale locks did.
#[derive(Debug, Default, Clone)]
pub struct Cleared {
    /// Locks of dead processes of this machine, removed.
    pub removed: Vec<LockInfo>,
    /// Locks picaops may not remove (another machine, or a live process).
    pub held: Vec<LockInfo>,
}

/// Removes this machine's locks whose process is provably gone. `restic unlock` only runs when
/// every lock present is such a lock, because it would also remove other machines' locks older
/// than 30 minutes, which picaops cannot prove dead.
///
/// `restic unlock` applies its own test (the pid answers signal 0), which a zombie not yet
/// collected by its new parent still passes: picaops waits up to 10 s for such zombies to go,
/// and then lists the locks again, so `removed` holds only locks that are really gone.
pub fn clear_stale(restic: &Restic) -> Result<Cleared, ResticError> {
    let me = hostname();
    let mut cleared = Cleared::default();
    let mut stale = Vec::new();
    for (id, lock) in list(restic)? {
        if provably_dead(&lock, &me) {
            stale.push((id, lock));
        } else {
            cleared.held.push(lock);
        }
    }
    if stale.is_empty() || !cleared.held.is_empty() {
        // Ours but not removable now: report them with the others.
        cleared.held.extend(stale.into_iter().map(|(_, l)| l));
        return Ok(cleared);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stale.iter().any(|(_, l)| process_state(l.pid) == Some('Z')) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    restic.run_ok(&args(&["unlock"]), |_| {})?;
    let left: Vec<String> = list(restic)?.into_iter().map(|(id, _)| id).collect();
    for (id, lock) in stale {
        if left.contains(&id) {
            cleared.held.push(lock);
        } else {
            cleared.removed.push(lock);
        }
    }
    Ok(cleared)
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(hostname: &str, pid: i64, time: &str) -> LockInfo {
        LockInfo {
            time: time.into(),
            exclusive: true,
            hostname: hostname.into(),
            username: "root".into(),
            pid,
        }
    }

    #[test]
    fn only_this_hosts_dead_processes_are_provably_dead() {
        let me = hostname();
        let now = super::super::time::rfc3339(super::super::time::now() + 60.0);
        // This very process is alive and started before "now + 60 s".
        assert!(!provably_dead(
            &lock(&me, i64::from(std::process::id()), &now),
            &me
        ));
        // Another machine's lock is never ours to judge.
        assert!(!provably_dead(&lock("elsewhere", 999_999_999, &now), &me));
        // A pid that cannot exist (above pid_max) is gone.
        let max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        assert!(provably_dead(&lock(&me, max + 1, &now), &me) || max + 1 > i64::from(i32::MAX));
        // A live pid that started after the lock was taken is a reused pid.
        assert!(provably_dead(
            &lock(&me, i64::from(std::process::id()), "2000-01-01T00:00:00Z"),
            &me
        ));
    }

    #[test]
    fn a_zombie_is_dead() {
        let me = hostname();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        // Not reaped yet: the process has exited but still has its pid.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while process_state(pid) != Some('Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(process_state(pid), Some('Z'));
        let when = super::super::time::rfc3339(super::super::time::now() + 60.0);
        assert!(provably_dead(&lock(&me, pid, &when), &me));
        child.wait().unwrap();
    }

    #[test]
    fn flock_excludes_a_second_holder_and_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/repo.lock");
        let first = RepoLock::acquire(&path, "job a, pid 1", Duration::ZERO).unwrap();
        let err = RepoLock::acquire(&path, "job b", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("job a, pid 1"), "{err}");
        drop(first);
        // Free again once dropped. Waiting (on the lock itself, up to 5 s) rather than trying
        // once: another test of this binary that forks a child between our open and our drop
        // shares the lock's file descriptor until that child execs (O_CLOEXEC closes it then),
        // and flock holds while any copy is open.
        RepoLock::acquire(&path, "job b", Duration::from_secs(5)).unwrap();
    }
}
