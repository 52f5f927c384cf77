//! The SSH transport: one OpenSSH master connection per host per run, every command and file
//! transfer multiplexed over it (the `openssh` crate's native mux client speaks to the master's
//! control socket; no extra `ssh` process per command).
//!
//! picaops starts the master itself (`ssh -M -f -N` with the options below) rather than through
//! `openssh::SessionBuilder`, for three reasons: it keeps ssh's own words (`-E` log) to classify
//! failures and show them with `-v`; it can kill a master stuck in authentication when the connect
//! timeout expires; and it passes options the builder does not expose (key exchange preference,
//! no global known_hosts, a fixed host-key alias) without rewriting the admin's ssh config. The
//! admin's `~/.ssh/config`, `/etc/ssh/ssh_config`, agent and ProxyJump still apply: ssh reads them
//! as usual, and command-line options only override the settings picaops must own.
//!
//! Host keys are checked strictly against picaops' own known_hosts file
//! (`StrictHostKeyChecking=yes`, `UserKnownHostsFile=<file>`, `GlobalKnownHostsFile=/dev/null`):
//! an unknown or changed key stops the connection with a distinct error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::error::{classify_ssh_log, human_duration, ErrorKind, TransportError};
use super::{
    check_become, pump, upload, within_limit, CommandOutput, FileAttrs, FileContent, Input,
    RemoteCommand, Target, Transport, Uploaded,
};

/// How picaops opens SSH connections; the same for every host of a run.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// picaops' known_hosts file (built from the inventory's `host_key:` fields).
    pub known_hosts: PathBuf,
    /// Directory for control sockets and master logs. Unix socket paths are limited to about
    /// 100 bytes: keep it short (the pool's [`super::Connector`] makes one under $XDG_RUNTIME_DIR or
    /// /tmp).
    pub control_dir: PathBuf,
    /// Limit for TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Default limit for each command (`RemoteCommand.timeout` overrides it). `None`: no limit.
    pub command_timeout: Option<Duration>,
    /// Keepalive probe interval; the link is declared dead after `server_alive_count_max` missed
    /// probes, so a dead link fails in about interval × (count + 1).
    pub server_alive_interval: Duration,
    pub server_alive_count_max: u32,
    /// Prefer the classic curve25519-sha256 key exchange over OpenSSH 9's default post-quantum
    /// hybrid (sntrup761x25519): the latter costs ~70 ms of workstation CPU per connection, which
    /// dominates a 50-host fan-out on a small laptop. Post-quantum stays available as a fallback;
    /// set this to `false` to keep ssh's default order (protection of recorded traffic against
    /// future quantum computers, at that CPU cost).
    pub prefer_fast_kex: bool,
    /// The ssh client to run.
    pub ssh_program: PathBuf,
}

impl SshOptions {
    pub fn new(known_hosts: impl Into<PathBuf>, control_dir: impl Into<PathBuf>) -> Self {
        SshOptions {
            known_hosts: known_hosts.into(),
            control_dir: control_dir.into(),
            connect_timeout: Duration::from_secs(10),
            command_timeout: None,
            server_alive_interval: Duration::from_secs(5),
            server_alive_count_max: 3,
            prefer_fast_kex: true,
            ssh_program: PathBuf::from("ssh"),
        }
    }
}

/// Numbers control sockets so that two hosts (or two connections to one host) never share one.
static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

/// A host reached over one multiplexed SSH master.
pub struct SshTransport {
    target: Target,
    session: openssh::Session,
    ctl: PathBuf,
    log: PathBuf,
    command_timeout: Option<Duration>,
    closed: AtomicBool,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("target", &self.target.name)
            .field("ctl", &self.ctl)
            .finish()
    }
}

impl SshTransport {
    /// Opens the master connection to `target` (fails fast with a classified error).
    pub async fn connect(target: &Target, opts: &SshOptions) -> Result<Self, TransportError> {
        let host = target.name.as_str();
        check_ssh_word(host, "address", &target.address)?;
        if let Some(user) = &target.user {
            check_ssh_word(host, "user", user)?;
        }
        if let Some(jump) = &target.jump {
            check_ssh_word(host, "jump", jump)?;
        }

        let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let ctl = opts.control_dir.join(format!("m{n}"));
        let log = opts.control_dir.join(format!("m{n}.log"));
        let endpoint = match target.port {
            Some(port) => format!("{}:{port}", target.address),
            None => target.address.clone(),
        };

        let mut cmd = tokio::process::Command::new(&opts.ssh_program);
        cmd.args(master_args(target, opts, &ctl, &log))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // On timeout the future is dropped: the half-connected ssh must not linger.
            .kill_on_drop(true);
        tracing::debug!(host, ?cmd, "starting ssh master");

        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            TransportError::new(
                host,
                ErrorKind::Local,
                format!(
                    "cannot run `{}` on this workstation: {e}. Is the OpenSSH client installed?",
                    opts.ssh_program.display()
                ),
            )
        })?;
        // ssh's ConnectTimeout covers TCP and the banner; this outer limit also covers key
        // exchange and authentication (a hung LDAP key lookup on the host stalls login for ~30 s).
        let limit = opts.connect_timeout + Duration::from_secs(1);
        let _ = std::fs::remove_file(jump_log(&log));
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(TransportError::new(
                    host,
                    ErrorKind::Local,
                    format!("waiting for the ssh master failed: {e}"),
                ))
            }
            Err(_) => {
                let _ = child.kill().await;
                let raw = read_log(&log);
                let _ = std::fs::remove_file(&log);
                return Err(TransportError::new(
                    host,
                    ErrorKind::ConnectTimeout,
                    format!(
                        "no login at {endpoint} within {}: the connection opened but key exchange \
                         or authentication hung (is the host overloaded, or its key lookup \
                         stuck?). Raise --connect-timeout for slow links.",
                        human_duration(opts.connect_timeout)
                    ),
                )
                .with_detail(raw));
            }
        };
        if !status.success() {
            let raw = read_log(&log);
            let _ = std::fs::remove_file(&log);
            let jump_raw = read_log(&jump_log(&log));
            let _ = std::fs::remove_file(jump_log(&log));
            if let (Some(jump), false) = (&target.jump, jump_raw.trim().is_empty()) {
                // The jump host failed first: classify its words, and say so.
                // Name the jump host in the advice (`pin <it>`), report under the target.
                let (_, jump_host, _) = parse_jump(jump);
                let mut err = classify_ssh_log(jump_host, jump, &jump_raw);
                err.host = host.to_string();
                err.message = format!("via jump host {jump}: {}", err.message);
                err.detail = Some(format!("{}\n{}", jump_raw.trim(), raw.trim()));
                return Err(err);
            }
            let mut err = classify_ssh_log(host, &endpoint, &raw);
            if raw.trim().is_empty() {
                err.detail = Some(format!("ssh exited with {status} and wrote nothing"));
            }
            return Err(err);
        }
        tracing::debug!(host, elapsed = ?started.elapsed(), "ssh master up");

        let session =
            openssh::Session::resume_mux(ctl.clone().into_boxed_path(), Some(log.clone().into()));
        Ok(SshTransport {
            target: target.clone(),
            session,
            ctl,
            log,
            command_timeout: opts.command_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// The master's control socket (for tests and diagnostics).
    pub fn control_socket(&self) -> &Path {
        &self.ctl
    }

    /// What the master has logged so far (warnings, the reason it died).
    pub fn master_log(&self) -> String {
        read_log(&self.log)
    }

    /// Starts `cmd`, feeds `input`, collects the output; no timeout here.
    async fn run(
        &self,
        cmd: &RemoteCommand,
        input: Input<'_>,
    ) -> Result<CommandOutput, TransportError> {
        let host = self.target.name.as_str();
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::new(
                host,
                ErrorKind::Disconnected,
                "the connection was already closed by picaops (a bug: please report it)",
            ));
        }
        let line = cmd.wire_line(&self.target);
        tracing::debug!(host, ?cmd, "exec");
        let started = Instant::now();
        let mut child = self
            .session
            .raw_command(&line)
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.ssh_error("starting the command", e))?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let (stdout, stderr) = pump(stdin, stdout, stderr, input).await.map_err(|e| {
            TransportError::new(
                host,
                ErrorKind::Disconnected,
                format!("the connection broke while exchanging data with the command: {e}"),
            )
        })?;
        let exit_code = match child.wait().await {
            Ok(status) => status.code().unwrap_or(-1),
            // The crate turns exit status 127 into an error; it is an ordinary exit code here.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => 127,
            Err(e) => return Err(self.ssh_error("waiting for the command", e)),
        };
        let out = CommandOutput {
            exit_code,
            stdout,
            stderr,
            duration: started.elapsed(),
        };
        check_become(&self.target, cmd, &out)?;
        Ok(out)
    }

    fn ssh_error(&self, doing: &str, e: openssh::Error) -> TransportError {
        let host = self.target.name.as_str();
        match e {
            openssh::Error::RemoteProcessTerminated => TransportError::new(
                host,
                ErrorKind::CommandKilled,
                format!(
                    "{doing}: the command ended without an exit status (killed by a signal, or \
                     the connection dropped at that moment)."
                ),
            ),
            other => TransportError::new(
                host,
                ErrorKind::Disconnected,
                format!(
                    "{doing}: the SSH connection is gone ({other}). The host may have rebooted \
                     or the network dropped; run again once it answers `ssh` by hand."
                ),
            )
            .with_detail(read_log(&self.log)),
        }
    }

    /// `run` within the command's time limit (or the transport's default).
    async fn run_limited(
        &self,
        cmd: &RemoteCommand,
        input: Input<'_>,
    ) -> Result<CommandOutput, TransportError> {
        let limit = cmd.timeout.or(self.command_timeout);
        within_limit(&self.target.name, limit, self.run(cmd, input)).await
    }
}

impl Transport for SshTransport {
    fn target(&self) -> &Target {
        &self.target
    }

    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        self.run_limited(cmd, Input::of_command(cmd)).boxed()
    }

    fn upload<'a>(
        &'a self,
        content: &'a FileContent,
        dest: &'a str,
        attrs: &'a FileAttrs,
    ) -> BoxFuture<'a, Result<Uploaded, TransportError>> {
        upload::upload(
            &self.target.name,
            content,
            dest,
            attrs,
            move |cmd, input| async move { self.run_limited(&cmd, input).await },
        )
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move {
            if self.closed.swap(true, Ordering::Relaxed) {
                return Ok(());
            }
            stop_master(&self.ctl).await;
            let _ = std::fs::remove_file(&self.log);
            Ok(())
        }
        .boxed()
    }
}

impl Drop for SshTransport {
    /// A transport dropped without `close()` (an early return, a panic elsewhere) still stops its
    /// master, so no ssh process outlives picaops.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let _ = openssh_mux_client::shutdown_mux_master(&self.ctl);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Asks the master to exit: stop listening (it then exits, having no session left), and make sure
/// of it with SIGTERM to the pid it reports.
async fn stop_master(ctl: &Path) {
    let Ok(mut conn) = openssh_mux_client::Connection::connect(ctl).await else {
        return; // already gone
    };
    let pid = conn.send_alive_check().await.ok();
    let _ = conn.request_stop_listening().await;
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a pid the master itself reported; no memory is involved.
        unsafe {
            libc::kill(pid.get() as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// The `ssh` arguments for a master connection to `target`.
fn master_args(target: &Target, opts: &SshOptions, ctl: &Path, log: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-E".into(),
        log.display().to_string(),
        "-S".into(),
        ctl.display().to_string(),
        "-M".into(),
        "-f".into(),
        "-N".into(),
    ];
    let connect_secs = opts.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o);
    };
    opt("BatchMode=yes".into());
    // The master lives until picaops stops it; a crashed picaops leaves it at most 10 minutes.
    opt("ControlPersist=600".into());
    opt("StrictHostKeyChecking=yes".into());
    opt(format!("UserKnownHostsFile={}", opts.known_hosts.display()));
    // Only picaops' pinned keys count: a key in /etc/ssh/ssh_known_hosts must not let a host in.
    opt("GlobalKnownHostsFile=/dev/null".into());
    // Look the key up under the inventory's name for the host, whatever HostName/HostKeyAlias
    // the admin's config sets; never let ssh rewrite picaops' file.
    opt(format!("HostKeyAlias={}", target.known_hosts_name()));
    opt("UpdateHostKeys=no".into());
    opt("CheckHostIP=no".into());
    opt(format!("ConnectTimeout={connect_secs}"));
    opt(format!(
        "ServerAliveInterval={}",
        opts.server_alive_interval.as_secs().max(1)
    ));
    opt(format!(
        "ServerAliveCountMax={}",
        opts.server_alive_count_max
    ));
    if opts.prefer_fast_kex {
        // `^` puts these first and keeps ssh's default list after them.
        opt("KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org".into());
    }
    // A master for picaops runs no command and forwards nothing, whatever the config says for
    // interactive use of that host.
    opt("ClearAllForwardings=yes".into());
    opt("RemoteCommand=none".into());
    opt("RequestTTY=no".into());
    opt("PermitLocalCommand=no".into());
    if let Some(identity) = &target.identity_file {
        opt("IdentitiesOnly=yes".into());
        args.push("-i".into());
        args.push(identity.display().to_string());
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string());
    }
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(user.clone());
    }
    if let Some(jump) = &target.jump {
        // Not `-J`: its inner ssh would check the jump host's key against the admin's own
        // known_hosts and print its errors nowhere. This one checks it strictly against
        // picaops' file and logs next to the master's log.
        args.push("-o".into());
        args.push(format!(
            "ProxyCommand={}",
            jump_command(jump, target, opts, &jump_log(log))
        ));
    }
    args.push("--".into());
    args.push(target.address.clone());
    args
}

fn jump_log(log: &Path) -> PathBuf {
    log.with_extension("jump.log")
}

/// Splits a jump spec `[user@]host[:port]`.
fn parse_jump(jump: &str) -> (Option<&str>, &str, Option<u16>) {
    let (user, rest) = match jump.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, jump),
    };
    match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (user, h, p.parse().ok()),
        _ => (user, rest, None),
    }
}

/// The `ProxyCommand` reaching `target` through its jump host, with the same strict host-key
/// policy as the master. Run by the local shell, hence quoted.
fn jump_command(jump: &str, target: &Target, opts: &SshOptions, log: &Path) -> String {
    let (user, host, port) = parse_jump(jump);
    let jump_target = Target {
        name: format!("{} (jump host)", target.name),
        address: host.to_string(),
        port,
        user: user.map(str::to_string),
        identity_file: None,
        become_root: false,
        jump: None,
        local: false,
    };
    let connect_secs = opts.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let mut words: Vec<String> = vec![
        opts.ssh_program.display().to_string(),
        "-E".into(),
        log.display().to_string(),
    ];
    for o in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".into(),
        format!("UserKnownHostsFile={}", opts.known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        format!("HostKeyAlias={}", jump_target.known_hosts_name()),
        "UpdateHostKeys=no".into(),
        format!("ConnectTimeout={connect_secs}"),
        format!(
            "ServerAliveInterval={}",
            opts.server_alive_interval.as_secs().max(1)
        ),
        format!("ServerAliveCountMax={}", opts.server_alive_count_max),
        "ClearAllForwardings=yes".into(),
        "ControlMaster=no".into(),
        "ControlPath=none".into(),
    ] {
        words.push("-o".into());
        words.push(o);
    }
    if opts.prefer_fast_kex {
        words.push("-o".into());
        words.push("KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org".into());
    }
    // The inventory's key for the target is offered to the jump host too (agent and config
    // keys still apply: no IdentitiesOnly here).
    if let Some(identity) = &target.identity_file {
        words.push("-i".into());
        words.push(identity.display().to_string());
    }
    if let Some(port) = port {
        words.push("-p".into());
        words.push(port.to_string());
    }
    if let Some(user) = user {
        words.push("-l".into());
        words.push(user.to_string());
    }
    words.push("-W".into());
    words.push("%h:%p".into());
    words.push("--".into());
    words.push(host.to_string());
    // `%` is ssh's escape character in ProxyCommand: double it everywhere but in `%h:%p`.
    let line = super::quote::join(&words);
    line.replace('%', "%%").replace("%%h:%%p", "%h:%p")
}

/// Refuses inventory values that ssh would read as options (`-oProxyCommand=...`).
fn check_ssh_word(host: &str, field: &str, value: &str) -> Result<(), TransportError> {
    if value.is_empty() || value.starts_with('-') || value.chars().any(char::is_whitespace) {
        return Err(TransportError::new(
            host,
            ErrorKind::ConnectFailed,
            format!("`{field}: {value}` is not a valid SSH {field}; fix it in the inventory."),
        ));
    }
    Ok(())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Target {
        Target {
            name: "bob".into(),
            address: "127.0.1.1".into(),
            port: Some(2222),
            user: Some("root".into()),
            identity_file: Some("/k/id".into()),
            become_root: false,
            jump: None,
            local: false,
        }
    }

    #[test]
    fn master_checks_keys_strictly_against_our_file_only() {
        let opts = SshOptions::new("/kh", "/ctl");
        let args = master_args(
            &bob(),
            &opts,
            Path::new("/ctl/m0"),
            Path::new("/ctl/m0.log"),
        );
        for expected in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/kh",
            "GlobalKnownHostsFile=/dev/null",
            "HostKeyAlias=[127.0.1.1]:2222",
            "BatchMode=yes",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert_eq!(args[args.len() - 2..], ["--", "127.0.1.1"]);
    }

    #[test]
    fn a_jump_host_is_checked_strictly_too() {
        let mut t = bob();
        t.jump = Some("admin@gw.picasoft.net:2200".into());
        let opts = SshOptions::new("/kh", "/ctl");
        let args = master_args(&t, &opts, Path::new("/ctl/m0"), Path::new("/ctl/m0.log"));
        let proxy = args
            .iter()
            .find(|a| a.starts_with("ProxyCommand="))
            .unwrap();
        for expected in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/kh",
            "'HostKeyAlias=[gw.picasoft.net]:2200'",
            "-l admin",
            "-W %h:%p -- gw.picasoft.net",
        ] {
            assert!(proxy.contains(expected), "{expected} in {proxy}");
        }
        assert!(!args.contains(&"-J".to_string()));
    }

    #[test]
    fn option_like_addresses_are_refused() {
        assert!(check_ssh_word("bob", "address", "-oProxyCommand=sh").is_err());
        assert!(check_ssh_word("bob", "address", "a b").is_err());
        assert!(check_ssh_word("bob", "address", "bob.picasoft.net").is_ok());
    }
}
