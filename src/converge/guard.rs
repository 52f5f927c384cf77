//! Never locking the team out. Before a `login_guard` task changes a host (sshd's configuration,
//! the access helper), apply proves the break-glass login (the inventory's `access.break_glass`
//! root key) works; after the host's changes, it opens a FRESH SSH connection to prove logging in
//! still works, and if it does not, puts the guarded files back through the connection it kept
//! open all along and reloads sshd.

use std::path::PathBuf;

use base64::Engine;

use super::{Job, StepReport};
use crate::modules::Action;
use crate::transport::{Connector, RemoteCommand, Target, Transport, TransportError};

/// Why a fresh login (a new SSH master running `true`) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Connecting or running `true` failed (the transport's words, without the host).
    #[error("{}", .0.message)]
    Transport(#[source] TransportError),
    #[error("`true` exited with {0}")]
    Exit(i32),
}

/// What guarded steps changed that a rollback cannot put back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("task \"{task}\" changed something picaops cannot put back (not a file's content)")]
    NotAFile { task: String },
    #[error("{path} was too large to keep a copy of; put it back by hand")]
    NoCopy { path: String },
}

/// Why login settings were not changed, or what happened when a change locked logins out.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The break-glass login does not work: nothing guarded is applied.
    #[error("the break-glass login ({user}@{address} with {}) does not work ({error}); picaops will not change login settings until it does", .identity_file.display())]
    BreakGlass {
        user: String,
        address: String,
        identity_file: PathBuf,
        #[source]
        error: LoginError,
    },
    /// Logging in fails after the change, and nothing could be put back.
    #[error("after the change a fresh SSH login fails ({login}) and {rollback}. The connection picaops kept is closed now: use the break-glass key or the console")]
    NoRollback {
        login: LoginError,
        #[source]
        rollback: RollbackError,
    },
    /// Logging in failed after the change; `paths` were put back and logging in works again.
    #[error("after the change a fresh SSH login failed ({login}); picaops put back {} and reloaded sshd, and logging in works again. Fix the playbook before applying again", .paths.join(", "))]
    RolledBack {
        login: LoginError,
        paths: Vec<String>,
    },
    /// `paths` were put back, and logging in still fails (`again`).
    #[error("after the change a fresh SSH login failed ({login}); picaops put back {} but logging in still fails ({again}): use the break-glass key or the console", .paths.join(", "))]
    StillLockedOut {
        login: LoginError,
        paths: Vec<String>,
        again: LoginError,
    },
    /// The rollback script failed (its stderr).
    #[error("after the change a fresh SSH login failed ({login}) and putting back {} failed: {stderr}", .paths.join(", "))]
    RollbackFailed {
        login: LoginError,
        paths: Vec<String>,
        stderr: String,
    },
    /// The connection kept for the rollback failed too.
    #[error("after the change a fresh SSH login failed ({login}) and the kept connection failed too ({}): use the break-glass key or the console", .kept.message)]
    KeptConnectionFailed {
        login: LoginError,
        kept: TransportError,
    },
}

/// Logs in afresh as `target` says (a new SSH master, not the kept one) and runs `true`.
/// A fresh login after the rollback's `systemctl reload ssh`: sshd re-executes itself on a
/// reload and refuses connections for a moment, so a refused connection is tried again for up to
/// 5 s (anything else is the answer at once).
async fn login_after_reload(job: &Job, target: &Target) -> Result<(), LoginError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match fresh_login(job, target).await {
            Err(LoginError::Transport(e))
                if e.kind == crate::transport::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < until =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn fresh_login(job: &Job, target: &Target) -> Result<(), LoginError> {
    let connector = Connector::new(
        &job.known_hosts,
        job.connect_timeout,
        Some(job.connect_timeout),
    )
    .map_err(LoginError::Transport)?;
    let t = connector
        .connect(target)
        .await
        .map_err(LoginError::Transport)?;
    let r = t
        .exec(&RemoteCommand::argv(["true"]).with_become(false))
        .await;
    let _ = t.close().await;
    match r {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(LoginError::Exit(o.exit_code)),
        Err(e) => Err(LoginError::Transport(e)),
    }
}

/// The break-glass login works (`Ok(None)`), or is not configured (`Ok(Some(warning))`).
pub async fn check_break_glass(job: &Job, target: &Target) -> Result<Option<String>, GuardError> {
    let Some(bg) = job
        .inventory
        .access
        .as_ref()
        .and_then(|a| a.break_glass.as_ref())
    else {
        return Ok(Some(
            "no break-glass login in the inventory (access.break_glass): changing login settings without a proven way back in".into(),
        ));
    };
    let mut t = target.clone();
    t.user = Some(bg.user.clone());
    t.identity_file = Some(bg.identity_file.clone());
    t.become_root = false;
    fresh_login(job, &t)
        .await
        .map(|_| None)
        .map_err(|error| GuardError::BreakGlass {
            user: bg.user.clone(),
            address: target.address.clone(),
            identity_file: bg.identity_file.clone(),
            error,
        })
}

/// Guarded steps that changed something on the host.
pub fn guarded_changes(steps: &[StepReport]) -> Vec<&StepReport> {
    steps
        .iter()
        .filter(|s| {
            s.login_guard
                && s.action.changes()
                && s.action != Action::Skip
                && s.status == Some("done")
        })
        .collect()
}

/// A script putting back what guarded steps replaced (or removing what they created), then
/// reloading sshd. `Err` names what cannot be put back.
pub fn rollback_script(steps: &[&StepReport]) -> Result<String, RollbackError> {
    let mut s = String::from("set -u\nrc=0\n");
    for step in steps {
        let Some(c) = &step.content else {
            return Err(RollbackError::NotAFile {
                task: step.task.clone(),
            });
        };
        let path = crate::transport::quote::quote(&c.path);
        match &c.old {
            Some(old) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(old);
                s.push_str(&format!(
                    "t=$(mktemp \"$(dirname -- {path})/.picaops-rollback-XXXXXX\") && echo {b64} | base64 -d > \"$t\" && chmod --reference={path} \"$t\" 2>/dev/null; mv -f -- \"$t\" {path} || rc=1\n"
                ));
            }
            None if step.action == Action::Create => {
                s.push_str(&format!("rm -f -- {path} || rc=1\n"))
            }
            None => {
                return Err(RollbackError::NoCopy {
                    path: c.path.clone(),
                })
            }
        }
    }
    s.push_str("systemctl reload ssh 2>/dev/null || systemctl reload sshd || rc=1\nexit $rc\n");
    Ok(s)
}

/// After a host's apply: a fresh login must work; if not, roll back and say so in `Err`.
pub async fn verify_or_roll_back(
    job: &Job,
    target: &Target,
    transport: &dyn Transport,
    steps: &[StepReport],
) -> Result<(), GuardError> {
    let changed = guarded_changes(steps);
    if changed.is_empty() {
        return Ok(());
    }
    let Err(login) = fresh_login(job, target).await else {
        return Ok(());
    };
    let script = match rollback_script(&changed) {
        Ok(s) => s,
        Err(rollback) => return Err(GuardError::NoRollback { login, rollback }),
    };
    let undo = RemoteCommand::shell("sh -s")
        .with_stdin(script.into_bytes())
        .with_become(target.become_root);
    let undone = transport.exec(&undo).await;
    let paths: Vec<String> = changed
        .iter()
        .filter_map(|s| s.content.as_ref().map(|c| c.path.clone()))
        .collect();
    match undone {
        Ok(o) if o.success() => match login_after_reload(job, target).await {
            Ok(()) => Err(GuardError::RolledBack { login, paths }),
            Err(again) => Err(GuardError::StillLockedOut {
                login,
                paths,
                again,
            }),
        },
        Ok(o) => Err(GuardError::RollbackFailed {
            login,
            paths,
            stderr: o.stderr_lossy().trim().to_string(),
        }),
        Err(kept) => Err(GuardError::KeptConnectionFailed { login, kept }),
    }
}
