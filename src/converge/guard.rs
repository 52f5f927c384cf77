//! Never locking the team out. Before a `login_guard` task changes a host (sshd's configuration,
//! the access helper), apply proves the break-glass login (the inventory's `access.break_glass`
//! root key) works; after the host's changes, it opens a FRESH SSH connection to prove logging in
//! still works, and if it does not, puts the guarded files back through the connection it kept
//! open all along and reloads sshd.

use base64::Engine;

use super::{Job, StepReport};
use crate::modules::Action;
use crate::transport::{Connector, RemoteCommand, Target, Transport};

/// Logs in afresh as `target` says (a new SSH master, not the kept one) and runs `true`.
async fn fresh_login(job: &Job, target: &Target) -> Result<(), String> {
    let connector = Connector::new(
        &job.known_hosts,
        job.connect_timeout,
        Some(job.connect_timeout),
    )
    .map_err(|e| e.message)?;
    let t = connector.connect(target).await.map_err(|e| e.message)?;
    let r = t
        .exec(&RemoteCommand::argv(["true"]).with_become(false))
        .await;
    let _ = t.close().await;
    match r {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(format!("`true` exited with {}", o.exit_code)),
        Err(e) => Err(e.message),
    }
}

/// The break-glass login works (`Ok(None)`), or is not configured (`Ok(Some(warning))`).
pub async fn check_break_glass(job: &Job, target: &Target) -> Result<Option<String>, String> {
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
    fresh_login(job, &t).await.map(|_| None).map_err(|e| {
        format!(
            "the break-glass login ({}@{} with {}) does not work ({e}); picaops will not change login settings until it does",
            bg.user,
            target.address,
            bg.identity_file.display()
        )
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
pub fn rollback_script(steps: &[&StepReport]) -> Result<String, String> {
    let mut s = String::from("set -u\nrc=0\n");
    for step in steps {
        let Some(c) = &step.content else {
            return Err(format!(
                "task \"{}\" changed something picaops cannot put back (not a file's content)",
                step.task
            ));
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
                return Err(format!(
                    "{} was too large to keep a copy of; put it back by hand",
                    c.path
                ))
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
) -> Result<(), String> {
    let changed = guarded_changes(steps);
    if changed.is_empty() {
        return Ok(());
    }
    let Err(why) = fresh_login(job, target).await else {
        return Ok(());
    };
    let script = match rollback_script(&changed) {
        Ok(s) => s,
        Err(e) => return Err(format!("after the change a fresh SSH login fails ({why}) and {e}. The connection picaops kept is closed now: use the break-glass key or the console")),
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
        Ok(o) if o.success() => match fresh_login(job, target).await {
            Ok(()) => Err(format!(
                "after the change a fresh SSH login failed ({why}); picaops put back {} and reloaded sshd, and logging in works again. Fix the playbook before applying again",
                paths.join(", ")
            )),
            Err(e) => Err(format!("after the change a fresh SSH login failed ({why}); picaops put back {} but logging in still fails ({e}): use the break-glass key or the console", paths.join(", "))),
        },
        Ok(o) => Err(format!("after the change a fresh SSH login failed ({why}) and putting back {} failed: {}", paths.join(", "), o.stderr_lossy().trim())),
        Err(e) => Err(format!("after the change a fresh SSH login failed ({why}) and the kept connection failed too ({}): use the break-glass key or the console", e.message)),
    }
}
