//! How picaops reaches a machine: the `Transport` trait, its SSH and local implementations,
//! and the bounded pool that runs work on many hosts at once.
//!
//! Modules never build `ssh` command lines themselves; they go through a `Transport`. This module
//! must not print anything: it returns values (outputs, typed errors) and emits pool events; the
//! CLI decides how to show them.
//!
//! - [`ssh`]: one multiplexed OpenSSH master per host per run, strict host keys from picaops' own
//!   known_hosts file.
//! - [`local`]: the workstation itself (`Target.local`).
//! - [`pool`]: bounded concurrency over hosts, per-host timeouts, events for progress displays.

pub mod error;
pub mod local;
pub mod pool;
pub mod quote;
pub mod ssh;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

pub use error::{ErrorKind, TransportError};
pub use local::LocalTransport;
pub use pool::{run_on_hosts, Connector, HostOutcome, PoolEvent, PoolOptions};
pub use ssh::{SshOptions, SshTransport};

/// Everything needed to reach one managed machine, resolved from the inventory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The inventory name (`bob`, `pica01`): used in every message.
    pub name: String,
    /// DNS name or IP address to connect to.
    pub address: String,
    /// SSH port; `None` lets the admin's ssh config decide.
    pub port: Option<u16>,
    /// Login user; `None` lets the admin's ssh config decide.
    pub user: Option<String>,
    /// Private key to offer, when the inventory names one (the lab does).
    pub identity_file: Option<PathBuf>,
    /// Run commands through `sudo -n` (a non-root login with privilege escalation).
    pub become_root: bool,
    /// Jump host (`user@host:port`) for machines without a reachable address.
    pub jump: Option<String>,
    /// The workstation itself: run commands locally, no SSH.
    pub local: bool,
}

impl Target {
    /// The name under which this host's key is looked up in picaops' known_hosts file:
    /// `address` on port 22 (or when the ssh config decides the port), `[address]:port` otherwise.
    /// The inventory loader writes its pinned keys under the same name.
    pub fn known_hosts_name(&self) -> String {
        known_hosts_name(&self.address, self.port)
    }
}

/// How known_hosts names a machine: `address`, or `[address]:port` off port 22.
pub fn known_hosts_name(address: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if port != 22 => format!("[{address}]:{port}"),
        _ => address.to_string(),
    }
}

/// What to run on a host: a shell command line or an argument vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// A command line for a POSIX shell (`sh -c`): pipes, redirections and globs work.
    Shell(String),
    /// A program and its arguments; each word is quoted, so spaces and `$` arrive unchanged.
    Argv(Vec<String>),
}

/// One command to run on a host, with its input and limits.
///
/// Secrets go in `stdin`, never in the command line: command lines are visible in `ps` on the
/// host and end up in logs. `Debug` does not show the stdin bytes.
#[derive(Clone)]
pub struct RemoteCommand {
    pub line: CommandLine,
    /// Bytes written to the command's standard input, then end-of-file. `None`: empty input.
    pub stdin: Option<Vec<u8>>,
    /// Run as root? `None` follows `Target.become_root`; `Some(true)` forces escalation with
    /// `sudo -n` when the login user is not root; `Some(false)` runs as the login user.
    pub become_root: Option<bool>,
    /// Give up after this long (the transport's default when `None`). The remote process is not
    /// killed (the SSH multiplexing protocol cannot signal it); the error says so.
    pub timeout: Option<Duration>,
}

impl RemoteCommand {
    /// A shell command line, run with `sh -c` on the host.
    pub fn shell(line: impl Into<String>) -> Self {
        Self::new(CommandLine::Shell(line.into()))
    }

    /// A program and its arguments, each quoted for the remote shell.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(CommandLine::Argv(
            argv.into_iter().map(Into::into).collect(),
        ))
    }

    fn new(line: CommandLine) -> Self {
        RemoteCommand {
            line,
            stdin: None,
            become_root: None,
            timeout: None,
        }
    }

    /// Sends these bytes on standard input (the place for secrets).
    pub fn with_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Forces (or forbids) privilege escalation for this command.
    pub fn with_become(mut self, become_root: bool) -> Self {
        self.become_root = Some(become_root);
        self
    }

    /// Sets this command's time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command line as the host's login shell receives it, before privilege escalation.
    pub fn to_shell_line(&self) -> String {
        match &self.line {
            CommandLine::Shell(line) => format!("sh -c {}", quote::quote(line)),
            CommandLine::Argv(argv) => quote::join(argv),
        }
    }

    /// The full line sent to the host: wrapped in `sudo -n` when escalation applies.
    pub(crate) fn wire_line(&self, target: &Target) -> String {
        let line = self.to_shell_line();
        if !self.become_root.unwrap_or(target.become_root) {
            return line;
        }
        match target.user.as_deref() {
            Some("root") => line,
            // Known non-root login: escalate. `sudo -n` fails instead of prompting.
            Some(_) => become_wrap(&line),
            // The admin's ssh config picks the user: decide on the host, in the same round trip.
            None => format!(
                "if [ \"$(id -u)\" = 0 ]; then {line}; else {}; fi",
                become_wrap(&line)
            ),
        }
    }
}

fn become_wrap(line: &str) -> String {
    format!("sudo -n -- sh -c {}", quote::quote(line))
}

impl std::fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCommand")
            .field("line", &self.line)
            .field(
                "stdin",
                &self
                    .stdin
                    .as_ref()
                    .map(|b| format!("({} bytes, not shown)", b.len())),
            )
            .field("become_root", &self.become_root)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a command did on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status (0 is success).
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Wall time from sending the command to its exit.
    pub duration: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Where the bytes of an uploaded file come from.
#[derive(Clone)]
pub enum FileContent {
    /// Bytes already in memory (rendered templates, small secrets).
    Bytes(Vec<u8>),
    /// A file on the workstation, streamed without loading it whole.
    LocalFile(PathBuf),
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileContent::Bytes(b) => write!(f, "Bytes({} bytes, not shown)", b.len()),
            FileContent::LocalFile(p) => write!(f, "LocalFile({})", p.display()),
        }
    }
}

/// Ownership and permissions of an uploaded file, applied before it replaces the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileAttrs {
    /// Permission bits (`0o640`); `None` keeps what the temporary file got (0600).
    pub mode: Option<u32>,
    /// Owner name or uid; `None` leaves the login user (or root with escalation).
    pub owner: Option<String>,
    /// Group name or gid; `None` leaves the default group.
    pub group: Option<String>,
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub duration: Duration,
}

/// A way to run commands and write files on one host.
///
/// Implementations hold whatever connection they need (an SSH master for [`SshTransport`]) and
/// reuse it for every call until [`Transport::close`]. Every error names the host and says what to
/// do next. Methods take `&self`, so several commands may run at once on one host.
pub trait Transport: Send + Sync {
    /// The host this transport reaches.
    fn target(&self) -> &Target;

    /// Runs one command and collects its exit status, stdout and stderr. A non-zero exit is an
    /// `Ok` output, not an error: errors are reserved for "could not run it / do not know how it
    /// ended" (connection lost, timeout, escalation refused).
    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>>;

    /// Writes `content` to `dest` atomically: a temporary file in the same directory receives the
    /// bytes, is checked (size and SHA-256), fsynced, given `attrs`, then renamed over `dest`. On
    /// any failure the temporary file is removed and `dest` is untouched. `become_root` follows
    /// `Target.become_root`.
    fn upload<'a>(
        &'a self,
        content: &'a FileContent,
        dest: &'a str,
        attrs: &'a FileAttrs,
    ) -> BoxFuture<'a, Result<Uploaded, TransportError>>;

    /// Ends the connection (for SSH: stops the master). Further calls fail.
    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// Where a command's standard input comes from, inside the transports.
pub(crate) enum Input<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

impl<'a> Input<'a> {
    fn of_command(cmd: &'a RemoteCommand) -> Self {
        match &cmd.stdin {
            Some(bytes) => Input::Bytes(bytes),
            None => Input::Empty,
        }
    }

    fn of_content(content: &'a FileContent) -> Self {
        match content {
            FileContent::Bytes(bytes) => Input::Bytes(bytes),
            FileContent::LocalFile(path) => Input::File(path),
        }
    }
}

/// Feeds `input` to a child's stdin while collecting its stdout and stderr, concurrently (a child
/// that writes a lot before reading its input must not deadlock). Returns (stdout, stderr).
pub(crate) async fn pump<W, O, E>(
    stdin: Option<W>,
    stdout: Option<O>,
    stderr: Option<E>,
    input: Input<'_>,
) -> std::io::Result<(Vec<u8>, Vec<u8>)>
where
    W: tokio::io::AsyncWrite + Unpin,
    O: tokio::io::AsyncRead + Unpin,
    E: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let feed = async move {
        let Some(mut w) = stdin else { return Ok(()) };
        let written = match input {
            Input::Empty => Ok(()),
            Input::Bytes(bytes) => w.write_all(bytes).await,
            Input::File(path) => match tokio::fs::File::open(path).await {
                Ok(mut f) => tokio::io::copy(&mut f, &mut w).await.map(|_| ()),
                Err(e) => return Err(e),
            },
        };
        let _ = w.shutdown().await;
        drop(w);
        match written {
            // The command exited without reading all its input: that is its business.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    };
    let read_out = async move {
        let mut buf = Vec::new();
        if let Some(mut r) = stdout {
            r.read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let read_err = async move {
        let mut buf = Vec::new();
        if let Some(mut r) = stderr {
            r.read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let ((), out, err) = tokio::try_join!(feed, read_out, read_err)?;
    Ok((out, err))
}

/// Recognises `sudo -n` refusing to escalate, so that it is reported as such and not as the
/// command's own failure.
/// Runs `work` within `limit` (when there is one); past it, a `CommandTimeout` error.
pub(crate) async fn within_limit(
    host: &str,
    limit: Option<Duration>,
    work: impl std::future::Future<Output = Result<CommandOutput, TransportError>>,
) -> Result<CommandOutput, TransportError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(TransportError::command_timeout(host, limit))),
        None => work.await,
    }
}

pub(crate) fn check_become(
    target: &Target,
    cmd: &RemoteCommand,
    out: &CommandOutput,
) -> Result<(), TransportError> {
    if !cmd.become_root.unwrap_or(target.become_root) || target.user.as_deref() == Some("root") {
        return Ok(());
    }
    let stderr = out.stderr_lossy();
    let refused = (out.exit_code == 1
        && (stderr.contains("sudo: a password is required")
            || stderr.contains("sudo: a terminal is required")
            || stderr.contains("is not in the sudoers file")
            || stderr.contains("is not allowed to execute")
            || stderr.contains("may not run sudo")))
        || (out.exit_code == 127 && stderr.contains("sudo") && stderr.contains("not found"));
    if !refused {
        return Ok(());
    }
    let user = target.user.as_deref().unwrap_or("the login user");
    Err(TransportError::new(
        &target.name,
        ErrorKind::BecomeFailed,
        format!(
            "sudo would not run the command as root for {user} without a password. Give {user} \
             passwordless sudo on the host (a NOPASSWD rule in /etc/sudoers.d/), or log in as \
             root (`user: root`)."
        ),
    )
    .with_detail(stderr))
}

/// An interactive `ssh -t` to `target` running `remote_line` (a VM's serial console): the one
/// place besides the SSH transport that builds an ssh command line, with the same strict
/// host-key settings (picaops's known_hosts only, no global file, no trust on first use).
pub fn interactive_ssh(
    target: &Target,
    known_hosts: &std::path::Path,
    remote_line: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-t")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("HostKeyAlias={}", target.known_hosts_name()));
    if let Some(id) = &target.identity_file {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(port) = target.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &target.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&target.address).arg(remote_line);
    cmd
}
