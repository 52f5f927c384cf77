//! The restic driver: builds restic invocations as argv, runs them, and reads restic 0.18's
//! `--json` output and exit codes into types. Knows nothing about jobs, locks or status.
//!
//! Secrets: the repository password reaches restic only through `--password-file` (a root-only
//! file restic reads itself); every `RESTIC_*` variable of picaops's own environment is removed
//! from the child's, so a stray `RESTIC_PASSWORD` can neither leak nor override. Nothing here
//! ever reads the password file.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::jobfile::{JobFile, RepositoryAccess};

/// SSH keepalives in restic's sftp command: a cut link fails after about 5 s × (2 + 1) of
/// silence instead of hanging for the whole outage (measured in the lab: ~15 s).
pub const SSH_KEEPALIVE: [&str; 4] = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"];

/// restic's exit codes (0.17+; 0.14 only has 0, 1 and 3).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FATAL: i32 = 1;
    /// Backup: the snapshot was made but some source files could not be read.
    pub const INCOMPLETE: i32 = 3;
    pub const NO_REPOSITORY: i32 = 10;
    pub const LOCK_FAILED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const INTERRUPTED: i32 = 130;
}

/// How picaops calls restic for one repository.
#[derive(Clone, Debug)]
pub struct Restic {
    pub binary: PathBuf,
    pub access: RepositoryAccess,
    pub password_file: PathBuf,
    pub limit_upload_kib: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    pub retry_lock_seconds: u64,
}

/// A restic failure, worded for the volunteer reading status at 2 a.m.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    #[error("restic is not installed here (looked for `{0}`): install restic 0.17 or later (Debian trixie's `restic` package)")]
    NotInstalled(String),
    #[error("cannot start restic: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("there is no restic repository at {url} (restic exit 10): create it with `picaops backup init`, or check the repository's host and path")]
    NoRepository { url: String },
    #[error("the repository {url} is locked (restic exit 11): {message}")]
    Locked { url: String, message: String },
    #[error("the password file {password_file} does not open the repository {url} (restic exit 12): check that the job names the right secret")]
    WrongPassword { url: String, password_file: String },
    #[error("restic was interrupted ({0})")]
    Interrupted(String),
    #[error("restic failed (exit {code}): {message}")]
    Failed { code: i32, message: String },
    #[error("{0}")]
    Config(String),
    #[error("unexpected restic output: {0}")]
    Unexpected(String),
    /// restic's JSON could not be read: `what` names the output (`` `restic snapshots` output``).
    #[error("unexpected {what}: {source}")]
    BadJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ResticError {
    pub fn code(&self) -> Option<i32> {
        match self {
            ResticError::NoRepository { .. } => Some(exit::NO_REPOSITORY),
            ResticError::Locked { .. } => Some(exit::LOCK_FAILED),
            ResticError::WrongPassword { .. } => Some(exit::WRONG_PASSWORD),
            ResticError::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Ends the message of a part that failed because the repository host did not answer: the job
/// does not try its other parts.
pub const LINK_DOWN: &str = "is the link between the sites down?";

/// What ssh says when the repository host stops answering (its keepalives: about 15 s) or
/// cannot be reached at all.
const SSH_LINK_ERRORS: &[&str] = &[
    "Timeout, server",
    "Connection timed out",
    "No route to host",
    "Network is unreachable",
    "Connection refused",
    "Broken pipe",
];

/// Whether restic's stderr says the repository host did not answer.
pub fn link_down(stderr: &str) -> bool {
    stderr.contains(LINK_DOWN) || SSH_LINK_ERRORS.iter().any(|e| stderr.contains(e))
}

/// What a finished restic process left: exit code, stdout lines, stderr, wall time.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Restic {
    pub fn from_job(job: &JobFile) -> Restic {
        Restic {
            binary: job.restic.clone(),
            access: job.repository.clone(),
            password_file: job.password_file.clone(),
            limit_upload_kib: job.limit_upload_kib,
            cache_dir: job.cache_dir.clone(),
            retry_lock_seconds: job.retry_lock_seconds,
        }
    }

    pub fn url(&self) -> String {
        self.access.url()
    }

    /// The `rclone.args` restic gives `ssh` (its `rclone.program`) instead of running rclone
    /// itself: keepalives, batch mode (never a password prompt), pinned host key, the job host's
    /// own key. restic adds the job's name, which `host-serve` on the repository host reads.
    pub fn rclone_args(&self) -> Result<Option<String>, ResticError> {
        let RepositoryAccess::Ssh {
            host,
            port,
            user,
            identity_file,
            known_hosts,
            ..
        } = &self.access
        else {
            return Ok(None);
        };
        let mut words: Vec<String> = Vec::new();
        if let Some(port) = port {
            words.extend(["-p".into(), port.to_string()]);
        }
        words.extend(SSH_KEEPALIVE.iter().map(|s| s.to_string()));
        for option in [
            "ConnectTimeout=10".to_string(),
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "IdentitiesOnly=yes".to_string(),
        ] {
            words.extend(["-o".into(), option]);
        }
        words.extend([
            "-i".into(),
            identity_file.display().to_string(),
            "-l".into(),
            user.clone(),
            host.clone(),
        ]);
        // restic splits the option on spaces (with shell-like quoting); refuse anything that
        // would need quoting rather than guess how it is read.
        if let Some(bad) = words.iter().find(|w| {
            w.is_empty() || w.contains(|c: char| c.is_whitespace() || "'\"\\".contains(c))
        }) {
            return Err(ResticError::Config(format!(
                "`{bad}` in the repository's SSH settings contains spaces or quotes: restic's rclone.args cannot carry it; use a path without them"
            )));
        }
        Ok(Some(words.join(" ")))
    }

    /// Global arguments: `--json`, the repository, the password file, transport options.
    pub fn global_args(&self) -> Result<Vec<OsString>, ResticError> {
        let mut args: Vec<OsString> = vec![
            "--json".into(),
            "--repo".into(),
            self.url().into(),
            "--password-file".into(),
            self.password_file.clone().into(),
        ];
        if let Some(ssh_args) = self.rclone_args()? {
            for option in [
                "rclone.program=ssh".to_string(),
                format!("rclone.args={ssh_args}"),
            ] {
                args.push("--option".into());
                args.push(option.into());
            }
        }
        if let Some(kib) = self.limit_upload_kib {
            args.push("--limit-upload".into());
            args.push(kib.to_string().into());
        }
        if let Some(dir) = &self.cache_dir {
            args.push("--cache-dir".into());
            args.push(dir.clone().into());
        }
        if self.retry_lock_seconds > 0 {
            args.push("--retry-lock".into());
            args.push(format!("{}s", self.retry_lock_seconds).into());
        }
        Ok(args)
    }

    /// The whole argv (program first) of `restic <global> <args>`.
    pub fn argv(&self, args: &[OsString]) -> Result<Vec<OsString>, ResticError> {
        let mut argv = vec![self.binary.clone().into_os_string()];
        argv.extend(self.global_args()?);
        argv.extend(args.iter().cloned());
        Ok(argv)
    }

    /// A ready `Command` for `restic <global> <args>`, with a clean environment for restic.
    pub fn command(&self, args: &[OsString]) -> Result<Command, ResticError> {
        let argv = self.argv(args)?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RESTIC_") {
                cmd.env_remove(&key);
            }
        }
        // Progress lines once a second (restic's default when not on a terminal is rarer).
        cmd.env("RESTIC_PROGRESS_FPS", "1");
        Ok(cmd)
    }

    /// Runs restic, handing each stdout line to `on_line` as it comes (progress), and returns
    /// what it left. `stdin`: bytes to feed (None: no stdin).
    pub fn run(
        &self,
        args: &[OsString],
        mut on_line: impl FnMut(&str),
    ) -> Result<Finished, ResticError> {
        let mut cmd = self.command(args)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        let mut lines = Vec::new();
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                lines.push(line);
            }
        }
        let status = child.wait().map_err(ResticError::Spawn)?;
        let stderr = err_thread.join().unwrap_or_default();
        use std::os::unix::process::ExitStatusExt;
        Ok(Finished {
            code: status.code(),
            signal: status.signal(),
            stdout: lines,
            stderr,
            elapsed: start.elapsed(),
        })
    }

    /// Runs restic and turns a non-zero exit into a typed error.
    pub fn run_ok(
        &self,
        args: &[OsString],
        on_line: impl FnMut(&str),
    ) -> Result<Finished, ResticError> {
        let f = self.run(args, on_line)?;
        self.check(&f)?;
        Ok(f)
    }

    pub fn spawn_error(&self, e: std::io::Error) -> ResticError {
        if e.kind() == std::io::ErrorKind::NotFound {
            ResticError::NotInstalled(self.binary.display().to_string())
        } else {
            ResticError::Spawn(e)
        }
    }

    /// Maps an exit code to an error, with restic's own message (its `exit_error` JSON line).
    pub fn check(&self, f: &Finished) -> Result<(), ResticError> {
        let url = self.url();
        match (f.code, f.signal) {
            (Some(exit::OK), _) => Ok(()),
            (Some(exit::NO_REPOSITORY), _) => Err(ResticError::NoRepository { url }),
            (Some(exit::LOCK_FAILED), _) => Err(ResticError::Locked {
                url,
                message: error_message(&f.stderr, &f.stdout),
            }),
            (Some(exit::WRONG_PASSWORD), _) => Err(ResticError::WrongPassword {
                url,
                password_file: self.password_file.display().to_string(),
            }),
            (Some(exit::INTERRUPTED), _) => {
                Err(ResticError::Interrupted("Ctrl-C or SIGTERM".into()))
            }
            (Some(code), _) => Err(ResticError::Failed {
                code,
                message: error_message(&f.stderr, &f.stdout),
            }),
            (None, Some(sig)) => Err(ResticError::Interrupted(format!("killed by signal {sig}"))),
            (None, None) => Err(ResticError::Interrupted("no exit status".into())),
        }
    }
}

/// ` (the command said: …)` with the last two lines of `stderr` that are not restic's JSON, or
/// nothing when there are none.
pub fn command_said(stderr: &str) -> String {
    let plain: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('{'))
        .collect();
    if plain.is_empty() {
        return String::new();
    }
    let last = &plain[plain.len().saturating_sub(2)..];
    format!(" (the command said: {})", clean(&last.join("; ")))
}

/// restic's own explanation of a failure: the `exit_error` message, else the `error` lines,
/// else the last lines of stderr.
pub fn error_message(stderr: &str, stdout: &[String]) -> String {
    let mut fatal = None;
    let mut errors = Vec::new();
    for line in stderr.lines().chain(stdout.iter().map(String::as_str)) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["message_type"].as_str() {
            Some("exit_error") => fatal = v["message"].as_str().map(clean),
            Some("error") => {
                let m = v["error"]["message"]
                    .as_str()
                    .or(v["message"].as_str())
                    .unwrap_or_default();
                let item = v["item"]
                    .as_str()
                    .map(|i| format!("{i}: "))
                    .unwrap_or_default();
                let m = clean(m);
                let full = format!("{item}{m}");
                if !m.is_empty() && !errors.iter().any(|(f, _)| *f == full) {
                    errors.push((full, m));
                }
            }
            _ => {}
        }
    }
    // The fatal message, then the first errors that explain it (unless it already says them).
    let shown: Vec<&str> = errors
        .iter()
        .filter(|(_, m)| fatal.as_deref().is_none_or(|f| !f.contains(m.as_str())))
        .map(|(full, _)| full.as_str())
        .collect();
    let more = shown.len().saturating_sub(3);
    let details = shown[..shown.len().min(3)].join("; ")
        + &if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
    // Lines that are not restic's JSON come from the command restic streamed from (a dump's
    // `docker exec`, pg_dump…): when that command failed, its own words say why.
    let said = command_said(stderr);
    let command_failed = |m: &str| m.contains("command failed");
    match (fatal, details.is_empty()) {
        (Some(f), true) if command_failed(&f) => return f + &said,
        (Some(f), true) => return f,
        (Some(f), false) if command_failed(&f) => return format!("{f}: {details}{said}"),
        (Some(f), false) => return format!("{f}: {details}"),
        (None, false) => return details,
        (None, true) => {}
    }
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &tail[tail.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no message".into()
    } else {
        clean(&tail.join("; "))
    }
}

fn clean(m: &str) -> String {
    m.trim()
        .trim_start_matches("Fatal: ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// restic's JSON messages (0.18).

/// One line of `restic backup --json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum BackupMessage {
    Status(BackupStatus),
    Summary(BackupSummary),
    Error(BackupError),
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BackupStatus {
    #[serde(default)]
    pub percent_done: f64,
    #[serde(default)]
    pub total_files: u64,
    #[serde(default)]
    pub files_done: u64,
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub seconds_remaining: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BackupSummary {
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub dirs_new: u64,
    #[serde(default)]
    pub dirs_changed: u64,
    #[serde(default)]
    pub data_added: u64,
    /// Bytes added after compression (restic 0.17+).
    #[serde(default)]
    pub data_added_packed: Option<u64>,
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
    #[serde(default)]
    pub total_duration: f64,
    /// Absent with `--dry-run`.
    #[serde(default)]
    pub snapshot_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BackupError {
    #[serde(default)]
    pub error: serde_json::Value,
    #[serde(default)]
    pub during: Option<String>,
    #[serde(default)]
    pub item: Option<String>,
}

/// Reads one stdout line of `restic backup --json` (`None`: not JSON, e.g. a warning).
pub fn parse_backup_line(line: &str) -> Option<BackupMessage> {
    serde_json::from_str(line).ok()
}

/// The summary among a finished backup's lines.
pub fn backup_summary(lines: &[String]) -> Option<BackupSummary> {
    lines.iter().rev().find_map(|l| match parse_backup_line(l) {
        Some(BackupMessage::Summary(s)) => Some(s),
        _ => None,
    })
}

/// A snapshot as `restic snapshots --json` (and `forget --json`) describe it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub short_id: String,
    pub time: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub summary: Option<SnapshotSummary>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct SnapshotSummary {
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
}

impl Snapshot {
    pub fn tags(&self) -> &[String] {
        self.tags.as_deref().unwrap_or_default()
    }

    /// The value of a `key=value` tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags()
            .iter()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn unix_time(&self) -> Option<f64> {
        super::time::parse_rfc3339(&self.time)
    }
}

/// `restic snapshots --json`: one JSON array on stdout.
pub fn parse_snapshots(stdout: &[String]) -> Result<Vec<Snapshot>, ResticError> {
    let text = stdout.join("\n");
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|source| ResticError::BadJson {
        what: "`restic snapshots` output",
        source,
    })
}

/// One group of `restic forget --json`: what was kept and removed.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct ForgetGroup {
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub keep: Option<Vec<Snapshot>>,
    #[serde(default)]
    pub remove: Option<Vec<Snapshot>>,
}

pub fn parse_forget(stdout: &[String]) -> Result<Vec<ForgetGroup>, ResticError> {
    // The JSON array is the last non-empty line (earlier lines may be empty).
    let Some(line) = stdout.iter().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    if line.trim() == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(line).map_err(|source| ResticError::BadJson {
        what: "`restic forget` output",
        source,
    })
}

/// The summary of `restic check --json` (0.18).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct CheckSummary {
    #[serde(default)]
    pub num_errors: u64,
    #[serde(default)]
    pub broken_packs: Option<Vec<String>>,
    #[serde(default)]
    pub suggest_repair_index: bool,
    #[serde(default)]
    pub suggest_prune: bool,
}

pub fn parse_check(lines: &[String]) -> Option<CheckSummary> {
    summary_line(lines)
}

/// The summary of `restic restore --json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RestoreSummary {
    #[serde(default)]
    pub total_files: u64,
    #[serde(default)]
    pub files_restored: u64,
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub bytes_restored: u64,
}

pub fn parse_restore(lines: &[String]) -> Option<RestoreSummary> {
    summary_line(lines)
}

/// The last `"message_type":"summary"` line, as `T`.
fn summary_line<T: serde::de::DeserializeOwned>(lines: &[String]) -> Option<T> {
    lines.iter().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["message_type"] == "summary").then(|| serde_json::from_value(v).ok())?
    })
}

/// A lock file's content (`restic cat lock ID`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct LockInfo {
    pub time: String,
    #[serde(default)]
    pub exclusive: bool,
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    pub pid: i64,
}

pub fn parse_lock(stdout: &[String]) -> Result<LockInfo, ResticError> {
    serde_json::from_str(&stdout.join("\n")).map_err(|source| ResticError::BadJson {
        what: "lock content",
        source,
    })
}

/// `restic list locks`: one ID per line (plain text even with `--json`).
pub fn parse_lock_ids(stdout: &[String]) -> Vec<String> {
    stdout
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(String::from)
        .collect()
}

/// The path of restic as the job names it, for messages.
pub fn describe_binary(binary: &Path) -> String {
    binary.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restic(access: RepositoryAccess) -> Restic {
        Restic {
            binary: "restic".into(),
            access,
            password_file: "/etc/picaops/backup/secrets/restic-pica01".into(),
            limit_upload_kib: Some(10240),
            cache_dir: None,
            retry_lock_seconds: 0,
        }
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn ssh_repositories_run_restic_s_rclone_backend_through_ssh() {
        let r = restic(RepositoryAccess::Ssh {
            host: "caribou.picasoft.net".into(),
            port: Some(2222),
            user: "picaops-restic".into(),
            job: "pica01".into(),
            path: "/srv/restic/pica01".into(),
            identity_file: "/etc/picaops/backup/id_ed25519".into(),
            known_hosts: "/etc/picaops/backup/known_hosts".into(),
        });
        assert!(r.access.append_only());
        let argv = strings(r.argv(&["snapshots".into()]).unwrap());
        assert_eq!(
            argv,
            [
                "restic",
                "--json",
                "--repo",
                "rclone:pica01",
                "--password-file",
                "/etc/picaops/backup/secrets/restic-pica01",
                "--option",
                "rclone.program=ssh",
                "--option",
                "rclone.args=-p 2222 -o ServerAliveInterval=5 -o ServerAliveCountMax=2 \
                 -o ConnectTimeout=10 -o BatchMode=yes -o StrictHostKeyChecking=yes \
                 -o UserKnownHostsFile=/etc/picaops/backup/known_hosts -o IdentitiesOnly=yes \
                 -i /etc/picaops/backup/id_ed25519 -l picaops-restic caribou.picasoft.net",
                "--limit-upload",
                "10240",
                "snapshots"
            ]
        );
    }

    #[test]
    fn ssh_paths_with_spaces_are_refused() {
        let r = restic(RepositoryAccess::Ssh {
            host: "caribou".into(),
            port: None,
            user: "picaops-restic".into(),
            job: "pica01".into(),
            path: "/srv/restic/pica01".into(),
            identity_file: "/etc/my key".into(),
            known_hosts: "/etc/kh".into(),
        });
        assert!(matches!(r.argv(&[]), Err(ResticError::Config(_))));
    }

    #[test]
    fn a_link_down_is_told_by_ssh_s_words() {
        assert!(link_down(
            "rclone: Timeout, server 10.0.0.2 not responding."
        ));
        assert!(link_down(
            "ssh: connect to host 10.0.0.2 port 22: No route to host"
        ));
        assert!(!link_down("Fatal: wrong password or no key found"));
    }

    #[test]
    fn reads_backup_lines_of_restic_0_18() {
        let status = r#"{"message_type":"status","percent_done":0.1,"total_files":20,"total_bytes":200000,"bytes_done":20000,"current_files":["/data/f10"]}"#;
        let summary = r#"{"message_type":"summary","files_new":0,"files_changed":1,"files_unmodified":19,"dirs_new":0,"dirs_changed":1,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":2,"data_added":7248,"data_added_packed":1706,"total_files_processed":20,"total_bytes_processed":190007,"total_duration":0.75988868,"backup_start":"2026-11-21T06:44:41.980979427Z","backup_end":"2026-11-21T06:44:42.740868101Z","snapshot_id":"535eda3a172cf7794086ff176fec1a4c6f3b34bba25a0216ab7ebce26b377d07"}"#;
        match parse_backup_line(status) {
            Some(BackupMessage::Status(s)) => assert_eq!(s.bytes_done, 20000),
            other => panic!("{other:?}"),
        }
        let s = backup_summary(&[status.into(), summary.into()]).unwrap();
        assert_eq!((s.files_new, s.files_changed, s.data_added), (0, 1, 7248));
        assert_eq!(s.snapshot_id.as_deref().map(|i| &i[..8]), Some("535eda3a"));
        assert_eq!(
            parse_backup_line(r#"{"message_type":"verbose_status","action":"new"}"#),
            Some(BackupMessage::Other)
        );
    }

    #[test]
    fn a_failed_dump_command_s_own_words_are_in_the_message() {
        let stderr = "OCI runtime exec failed: exec failed: unable to start container process: unknown\n\
                      {\"message_type\":\"exit_error\",\"code\":1,\"message\":\"Fatal: unable to save snapshot: failed to save /db.sql: Fatal: command failed: exit status 126\"}\n";
        assert_eq!(
            error_message(stderr, &[]),
            "unable to save snapshot: failed to save /db.sql: Fatal: command failed: exit status 126 \
             (the command said: OCI runtime exec failed: exec failed: unable to start container process: unknown)"
        );
        // Other failures do not quote unrelated stderr lines.
        let stderr = "some warning\n{\"message_type\":\"exit_error\",\"code\":1,\"message\":\"Fatal: repository is damaged\"}\n";
        assert_eq!(error_message(stderr, &[]), "repository is damaged");
    }

    #[test]
    fn error_messages_come_from_exit_error_lines() {
        let stderr = "{\"message_type\":\"error\",\"error\":{\"message\":\"failed to save /db.sql: Fatal: command failed: exit status 3\"},\"during\":\"archival\",\"item\":\"/db.sql\"}\n\
                      {\"message_type\":\"exit_error\",\"code\":1,\"message\":\"Fatal: unable to save snapshot: failed to save /db.sql: Fatal: command failed: exit status 3\"}\n";
        assert_eq!(
            error_message(stderr, &[]),
            "unable to save snapshot: failed to save /db.sql: Fatal: command failed: exit status 3"
        );
        assert_eq!(error_message("plain failure\n", &[]), "plain failure");
    }

    #[test]
    fn reads_locks_check_and_forget() {
        let lock = parse_lock(&[r#"{"time":"2026-11-21T06:44:58.09Z","exclusive":false,"hostname":"vm","username":"root","pid":26341}"#.into()]).unwrap();
        assert_eq!((lock.hostname.as_str(), lock.pid), ("vm", 26341));
        let ids = parse_lock_ids(&[
            "d639b776b94ce15992d146310f61277bb5b2c9c8486a1229b8a0cb64973c48a2".into(),
            "".into(),
        ]);
        assert_eq!(ids.len(), 1);
        let check = parse_check(&[r#"{"message_type":"summary","num_errors":1,"broken_packs":["e6da"],"suggest_repair_index":false,"suggest_prune":false}"#.into()]).unwrap();
        assert_eq!(check.num_errors, 1);
        let forget = parse_forget(&["".into(), r#"[{"tags":["job=x"],"host":"vm","paths":["/d"],"keep":[{"time":"2026-11-21T06:44:41Z","paths":["/d"],"hostname":"vm","id":"aa","short_id":"a"}],"remove":null}]"#.into()]).unwrap();
        assert_eq!(forget[0].keep.as_ref().unwrap().len(), 1);
        assert!(forget[0].remove.is_none());
    }
}
