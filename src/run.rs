//! `picaops run`: one ad-hoc command on many hosts, and the two ways of showing the result
//! (lines prefixed by host name for people, one JSON document for scripts).
//!
//! The CLI layer (src/cli/run.rs) only parses arguments, picks the hosts and calls
//! [`run_command`] then [`render_human`] or [`render_json`].

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::output::{Output, Style, EXIT_HOST_FAILED, EXIT_OK};
use crate::transport::{
    run_on_hosts, CommandLine, Connector, ErrorKind, PoolEvent, PoolOptions, RemoteCommand, Target,
    TransportError,
};

/// What to run and with which limits.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub command: CommandLine,
    /// Hosts worked on at once.
    pub forks: usize,
    /// Limit for connecting to each host (TCP, key exchange, login).
    pub connect_timeout: Duration,
    /// Limit for the command on each host; `None`: none.
    pub timeout: Option<Duration>,
    /// Keep OpenSSH's default post-quantum key exchange first (see
    /// `SshOptions::prefer_fast_kex`).
    pub post_quantum_kex: bool,
    /// Run as root: `None` follows each host's `become`, `Some(true)` always escalates.
    pub become_root: Option<bool>,
}

/// The words after `--`: one word is a shell command line (`'df -h | grep /srv'`), several words
/// are a program and its arguments, each quoted (`touch 'a file'` touches one file).
pub fn command_from_words(words: &[String]) -> CommandLine {
    match words {
        [line] => CommandLine::Shell(line.clone()),
        words => CommandLine::Argv(words.to_vec()),
    }
}

/// How the command went on one host.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostRun {
    pub name: String,
    /// Connected, ran, and exited 0.
    pub ok: bool,
    /// The command's exit code, when it ran to completion.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Why the host failed without an exit code (or `None`).
    pub error: Option<TransportError>,
    pub duration_ms: u64,
}

impl HostRun {
    /// One line saying why this host failed (for the summary).
    pub fn failure_reason(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        Some(match (&self.error, self.exit_code) {
            (Some(e), _) => e.message.clone(),
            (None, Some(code)) => format!("the command exited with code {code}"),
            (None, None) => "failed".to_string(),
        })
    }
}

/// Every host's result, in inventory order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    pub hosts: Vec<HostRun>,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &HostRun> {
        self.hosts.iter().filter(|h| !h.ok)
    }

    /// 0 when every host ran the command successfully, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.failed().next().is_some() {
            EXIT_HOST_FAILED
        } else {
            EXIT_OK
        }
    }
}

/// Runs `req.command` on every target (one SSH connection per host) and collects the results.
/// `events` feeds a progress display.
pub async fn run_command(
    targets: &[Target],
    known_hosts: &Path,
    req: &RunRequest,
    events: Option<mpsc::UnboundedSender<PoolEvent>>,
) -> Result<RunReport, TransportError> {
    let mut connector = Connector::new(known_hosts, req.connect_timeout, req.timeout)?;
    connector.ssh_options_mut().prefer_fast_kex = !req.post_quantum_kex;
    let connector = Arc::new(connector);
    let command = Arc::new(RemoteCommand {
        line: req.command.clone(),
        stdin: None,
        become_root: req.become_root,
        timeout: req.timeout,
    });
    let outcomes = run_on_hosts(
        targets,
        connector,
        &PoolOptions { forks: req.forks },
        events,
        // A non-zero exit is an `Ok` output here; it becomes the host's failure below.
        move |_target, transport| {
            let command = command.clone();
            async move { transport.exec(&command).await }
        },
    )
    .await;
    let hosts = outcomes
        .into_iter()
        .map(|o| {
            let duration_ms = o.duration.as_millis() as u64;
            match o.result {
                Ok(out) => HostRun {
                    name: o.target.name,
                    ok: out.success(),
                    exit_code: Some(out.exit_code),
                    stdout: out.stdout_lossy(),
                    stderr: out.stderr_lossy(),
                    error: None,
                    duration_ms,
                },
                Err(e) => HostRun {
                    name: o.target.name,
                    ok: false,
                    exit_code: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    error: Some(e),
                    duration_ms,
                },
            }
        })
        .collect();
    Ok(RunReport { hosts })
}

/// Prints each host's output with its name in front of every line (stdout lines to `stdout`,
/// stderr lines to `stderr`), then a summary on `stderr` naming each failed host and why.
pub fn render_human(
    report: &RunReport,
    out: &Output,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<()> {
    let width = report
        .hosts
        .iter()
        .map(|h| h.name.chars().count())
        .max()
        .unwrap_or(0);
    let prefix = |name: &str, style: Style| {
        let padded = format!("{name:<width$} |");
        out.paint(style, &padded)
    };
    for host in &report.hosts {
        for line in host.stdout.lines() {
            writeln!(stdout, "{} {line}", prefix(&host.name, Style::Cyan))?;
        }
        for line in host.stderr.lines() {
            writeln!(stderr, "{} {line}", prefix(&host.name, Style::Yellow))?;
        }
    }
    stdout.flush()?;

    let total = report.hosts.len();
    let failed: Vec<&HostRun> = report.failed().collect();
    if failed.is_empty() {
        if out.verbosity >= 0 {
            let hosts = if total == 1 { "host" } else { "hosts" };
            writeln!(
                stderr,
                "{}",
                out.paint(Style::Green, &format!("ok: {total} {hosts}"))
            )?;
        }
        return Ok(());
    }
    writeln!(
        stderr,
        "{}",
        out.paint(
            Style::Red,
            &format!(
                "failed: {} of {total} hosts ({} ok)",
                failed.len(),
                total - failed.len()
            )
        )
    )?;
    for host in failed {
        let reason = host.failure_reason().unwrap_or_default();
        let name = out.paint(Style::Bold, &format!("{:<width$}", host.name));
        writeln!(stderr, "  {name}  {reason}")?;
        if let Some(detail) = host.error.as_ref().and_then(|e| e.detail.as_ref()) {
            if out.verbosity >= 1 {
                for line in detail.lines().filter(|l| !l.trim().is_empty()) {
                    writeln!(
                        stderr,
                        "  {:<width$}    {}",
                        "",
                        out.paint(Style::Dim, line.trim_end())
                    )?;
                }
            }
        }
    }
    if out.verbosity < 1 && report.failed().any(needs_verbose) {
        writeln!(stderr, "(run with -v to see ssh's own words)")?;
    }
    Ok(())
}

fn needs_verbose(host: &HostRun) -> bool {
    host.error
        .as_ref()
        .is_some_and(|e| e.detail.is_some() && e.kind != ErrorKind::CommandTimeout)
}

/// The whole result as one JSON document: per host name, ok, exit_code, stdout, stderr, error
/// (kind, message, detail) and duration_ms, plus counts.
pub fn render_json(report: &RunReport) -> serde_json::Value {
    let failed = report.failed().count();
    serde_json::json!({
        "hosts": report.hosts.iter().map(|h| serde_json::json!({
            "name": h.name,
            "ok": h.ok,
            "exit_code": h.exit_code,
            "stdout": h.stdout,
            "stderr": h.stderr,
            "error": h.error.as_ref().map(|e| serde_json::json!({
                "kind": e.kind,
                "message": e.message,
                "detail": e.detail,
            })),
            "duration_ms": h.duration_ms,
        })).collect::<Vec<_>>(),
        "summary": {
            "total": report.hosts.len(),
            "ok": report.hosts.len() - failed,
            "failed": failed,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, exit: Option<i32>, stdout: &str, error: Option<TransportError>) -> HostRun {
        HostRun {
            name: name.into(),
            ok: exit == Some(0),
            exit_code: exit,
            stdout: stdout.into(),
            stderr: String::new(),
            error,
            duration_ms: 5,
        }
    }

    #[test]
    fn one_word_is_a_shell_line_several_are_argv() {
        assert_eq!(
            command_from_words(&["df -h | grep /srv".into()]),
            CommandLine::Shell("df -h | grep /srv".into())
        );
        assert_eq!(
            command_from_words(&["touch".into(), "a file".into()]),
            CommandLine::Argv(vec!["touch".into(), "a file".into()])
        );
    }

    #[test]
    fn lines_are_prefixed_and_aligned_and_failures_summarised() {
        let report = RunReport {
            hosts: vec![
                host("bob", Some(0), "up 3 days\nload 0.1\n", None),
                host("pica01", Some(3), "", None),
                host(
                    "carol",
                    None,
                    "",
                    Some(TransportError::new(
                        "carol",
                        ErrorKind::ConnectionRefused,
                        "connection refused at 127.0.1.9:2299",
                    )),
                ),
            ],
        };
        let (mut o, mut e) = (Vec::new(), Vec::new());
        render_human(&report, &Output::plain(), &mut o, &mut e).unwrap();
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "bob    | up 3 days\nbob    | load 0.1\n"
        );
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "failed: 2 of 3 hosts (1 ok)\n  \
             pica01  the command exited with code 3\n  \
             carol   connection refused at 127.0.1.9:2299\n"
        );
        assert_eq!(report.exit_code(), EXIT_HOST_FAILED);
    }

    #[test]
    fn json_names_every_field() {
        let report = RunReport {
            hosts: vec![host("bob", Some(0), "hi\n", None)],
        };
        let json = render_json(&report);
        let bob = &json["hosts"][0];
        for field in [
            "name",
            "ok",
            "exit_code",
            "stdout",
            "stderr",
            "error",
            "duration_ms",
        ] {
            assert!(bob.get(field).is_some(), "{field}");
        }
        assert_eq!(json["summary"]["failed"], 0);
    }
}
