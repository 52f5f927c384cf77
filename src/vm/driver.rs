//! The `Hypervisor` trait: what a VM driver must do, as scripts for the hypervisor's shell.
//!
//! Every operation is one POSIX shell script sent on the standard input of `sh -s` over the host's
//! SSH connection (never on a command line: a script may carry keys), so each costs one round
//! trip and drivers stay testable without a hypervisor: tests check the scripts they build and
//! parse recorded outputs. Scripts report what picaops must know on lines starting with `@@`
//! (`@@error WHY`, `@@hostkey KEY`, `@@timeout`); everything else they print is for the log.
//! A driver never prints and never connects anywhere itself.

use std::time::Duration;

pub use super::error::{DriverError, FieldError};
use super::model::{HostVms, VmSpec, VmState};
use super::plan::{ChangeKind, VmPlan};

/// Decodes one base64 field of a read script's output.
pub fn decode_field(text: &str) -> Result<String, FieldError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(FieldError::Base64)?;
    String::from_utf8(bytes).map_err(FieldError::Utf8)
}

/// Start, stop or restart a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOp {
    Start,
    /// Graceful (ACPI) shutdown, waiting up to the timeout; `force` pulls the plug instead.
    Stop {
        force: bool,
    },
    /// Graceful shutdown, then start.
    Reboot,
}

/// A VM driver (libvirt, Proxmox). Operations a driver cannot do return a typed error by default.
pub trait Hypervisor: Send + Sync {
    /// `libvirt` or `proxmox`, for messages.
    fn kind(&self) -> &'static str;

    /// The script that reads every VM of the host, its pools and templates (one round trip).
    fn read_script(&self) -> String;

    /// Turns the read script's output into the host's VMs.
    fn parse_read(&self, host: &str, stdout: &str) -> Result<HostVms, DriverError>;

    /// The script that creates a VM from `spec` and starts it. It prints `@@hostkey TYPE KEY`
    /// when it generated the VM's SSH host key (so picaops can pin it before the first login).
    fn create_script(&self, spec: &VmSpec, host: &HostVms) -> Result<String, DriverError>;

    /// The script that applies an `Update` plan: live changes, then (when the plan needs it) a
    /// graceful ACPI shutdown within `shutdown_timeout` and a start. Prints `@@timeout` and
    /// exits non-zero when the VM did not shut down in time (nothing is forced).
    fn update_script(
        &self,
        plan: &VmPlan,
        host: &HostVms,
        shutdown_timeout: Duration,
    ) -> Result<String, DriverError>;

    /// The script that records an existing VM as managed by picaops, changing nothing else.
    fn adopt_script(&self, state: &VmState) -> Result<String, DriverError>;

    /// The script that stops managing a VM without touching it: it removes picaops's mark
    /// (what [`Hypervisor::adopt_script`] records) and nothing else.
    fn release_script(&self, state: &VmState) -> Result<String, DriverError>;

    /// The script that deletes a VM and its disks.
    fn delete_script(&self, state: &VmState) -> Result<String, DriverError>;

    /// The script that starts, stops or restarts a VM.
    fn power_script(&self, state: &VmState, op: PowerOp, timeout: Duration) -> String;

    /// Why this driver cannot make a change at all (it is then shown, never applied).
    fn cannot(&self, _kind: &ChangeKind) -> Option<String> {
        None
    }

    /// The command that attaches a terminal to the VM's serial console (run with a TTY).
    fn console_argv(&self, state: &VmState) -> Result<Vec<String>, DriverError> {
        Err(DriverError::NoConsole {
            hypervisor: self.kind(),
            vm: state.name.clone(),
        })
    }
}

/// Shell functions every VM script starts with.
pub const SCRIPT_PRELUDE: &str = "set -u\n\
fail() { echo \"@@error $*\"; exit 3; }\n";

/// `fail MESSAGE` with the message quoted as one shell word: a message may carry inventory
/// values or names read from the host, which must stay text.
pub fn fail(message: &str) -> String {
    format!("fail {}", crate::transport::quote::quote(message))
}

/// Script lines that write `text` to `path` (a shell word, e.g. `"$w/meta-data"`). The text
/// travels base64-encoded, so no content (a here-document delimiter, `$(…)`, quotes, newlines)
/// can end up parsed as shell.
pub fn write_file(script: &mut String, path: &str, text: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    script.push_str(&format!(
        "printf '%s' '{b64}' | base64 -d > {path} || {}\n",
        fail(&format!("could not write {path}"))
    ));
}

/// What a script told picaops on its `@@` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScriptNotes {
    pub errors: Vec<String>,
    pub host_key: Option<String>,
    pub timed_out: bool,
    /// Other `@@key value` lines (`@@vmid 105`).
    pub values: Vec<(String, String)>,
}

pub fn parse_notes(stdout: &str) -> ScriptNotes {
    let mut notes = ScriptNotes::default();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("@@") else {
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        match key {
            "error" => notes.errors.push(value.trim().to_string()),
            "hostkey" => notes.host_key = Some(value.trim().to_string()),
            "timeout" => notes.timed_out = true,
            _ => notes
                .values
                .push((key.to_string(), value.trim().to_string())),
        }
    }
    notes
}

/// A name safe to put in file names and unquoted shell words: the inventory's names already
/// are (lowercase, digits, `-`), this checks again before anything is built from it.
pub fn check_name(name: &str) -> Result<(), DriverError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DriverError::BadName {
            name: name.to_string(),
        })
    }
}

/// For tests: runs a generated script with `sh` in a scratch directory, the hypervisor's
/// tools replaced by small stand-ins, to prove hostile values stay data.
#[cfg(test)]
pub(crate) mod sandbox {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    /// A value that runs `touch pwned-TAG` (in the current directory) if it is ever parsed as
    /// shell: it closes a single quote, substitutes commands, ends the here-document, and
    /// starts a new line. No `/`, so it also passes checks for "not a path".
    pub fn hostile(tag: &str) -> String {
        format!("evil'$(touch pwned-{tag})`touch pwned-{tag}`\nPICAOPS_EOF\ntouch pwned-{tag}\n#\"")
    }

    pub struct Sandbox {
        pub dir: tempfile::TempDir,
    }

    impl Sandbox {
        /// `tools`: (name, body of a `sh` script) for each stand-in put first on PATH.
        pub fn new(tools: &[(&str, &str)]) -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            for (name, body) in tools {
                let path = bin.join(name);
                std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Sandbox { dir }
        }

        pub fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Runs `script` with `sh` in the scratch directory: (exit code, stdout + stderr).
        pub fn run(&self, script: &str) -> (i32, String) {
            let path = format!(
                "{}:{}",
                self.dir.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(self.dir.path())
                .env("PATH", path)
                .env("SANDBOX", self.dir.path())
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }

        /// The `pwned-*` files an injected command created.
        pub fn pwned(&self) -> Vec<String> {
            std::fs::read_dir(self.dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("pwned-"))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_read_from_at_at_lines_only() {
        let n = parse_notes(
            "noise\n@@hostkey ssh-ed25519 AAAA\n@@vmid 105\n@@error disk exists\n@@timeout\n",
        );
        assert_eq!(n.host_key.as_deref(), Some("ssh-ed25519 AAAA"));
        assert_eq!(n.values, vec![("vmid".to_string(), "105".to_string())]);
        assert_eq!(n.errors, vec!["disk exists"]);
        assert!(n.timed_out);
    }

    #[test]
    fn names_that_could_escape_a_path_or_a_word_are_refused() {
        assert!(check_name("pica01").is_ok());
        for bad in ["", "-x", "a b", "../x", "a;b", "Pica"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
