//! A small typed wrapper around the `docker` command line. The lab drives Docker only through
//! here, argument by argument (never through `sh -c`), so a failure always carries the command
//! and Docker's own stderr.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use super::LabError;

/// The `docker` client the lab uses (`PICAOPS_DOCKER` overrides the program name).
#[derive(Debug, Clone)]
pub struct Docker {
    program: String,
}

impl Default for Docker {
    fn default() -> Self {
        Docker {
            program: std::env::var("PICAOPS_DOCKER").unwrap_or_else(|_| "docker".to_string()),
        }
    }
}

impl Docker {
    /// A `docker` command with `args`, for callers that need to wire stdin/stdout themselves.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        cmd.args(args);
        cmd
    }

    /// Runs `docker ARGS…` and returns its stdout (trimmed); `what` says what the lab was doing,
    /// for the error message.
    pub fn run<I, S>(&self, what: &str, args: I) -> Result<String, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = show(&self.program, &args);
        let out = self
            .command(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::DockerMissing {
                program: self.program.clone(),
                source: e,
            })?;
        if !out.status.success() {
            return Err(LabError::Docker {
                what: what.to_string(),
                command: shown,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `docker ARGS…` and only says whether it succeeded (for existence checks).
    pub fn succeeds<I, S>(&self, args: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn image_exists(&self, tag: &str) -> bool {
        self.succeeds(["image", "inspect", "--format", "{{.Id}}", tag])
    }

    pub fn network_exists(&self, name: &str) -> bool {
        self.succeeds(["network", "inspect", "--format", "{{.Id}}", name])
    }

    /// State of a container (`running`, `exited`, …) and the image it was created from,
    /// or `None` when there is no such container.
    pub fn container(&self, name: &str) -> Option<(String, String)> {
        let out = self
            .command([
                "container",
                "inspect",
                "--format",
                "{{.State.Status}} {{.Config.Image}}",
                name,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (state, image) = text.trim().split_once(' ')?;
        Some((state.to_string(), image.to_string()))
    }
}

/// A command line as a volunteer would type it, for error messages.
pub fn show(program: &str, args: &[std::ffi::OsString]) -> String {
    let mut s = program.to_string();
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push('\'');
            s.push_str(&a.replace('\'', r"'\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}
