//! `picaops backup rotate-credentials HOST`: a new SSH key for a data host's access to its
//! repositories, without a moment where its backups cannot run, and the old key refused after.
//!
//! In order, each step only once the one before succeeded:
//! 1. HOST makes a new key beside its current one (`id_ed25519.new`) and prints both public halves;
//! 2. every repository host HOST sends to authorizes the new key *beside* the old one (the same
//!    forced `host-serve` line), written atomically;
//! 3. HOST puts the new key in place, keeping the old one as `id_ed25519.old`;
//! 4. each of HOST's jobs lists its snapshots with the new key (the proof it works);
//! 5. every repository host drops the old key's line, and HOST deletes `id_ed25519.old`.
//!
//! A failure at 2 or 4 puts everything back as it was (the old key in place and authorized, the
//! new one gone) and says which step failed: backups keep running with the old key.

use std::collections::BTreeSet;
use std::time::Duration;

use super::config::BackupJob;
use super::jobfile::host_paths;
use super::ops::{failure_text, line, Exec, JobLine, OpError, Report};
use super::remote::{self, Call, Side};
use crate::inventory::Inventory;
use crate::transport::RemoteCommand;

const STEP_TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

/// The repository account's authorized_keys (see `remote::authorize_calls`).
fn authorized_keys() -> String {
    format!("{}/.ssh/authorized_keys", super::deploy::REPO_HOME)
}

/// A shell call as root on `machine`, for `job` (the report's line), the text (a key line, a
/// password) given on stdin and never on the command line.
pub(super) fn root_call(
    machine: &str,
    job: &str,
    side: Side,
    script: String,
    stdin: Option<String>,
) -> Call {
    let mut command = RemoteCommand::shell(script).with_become(true);
    if let Some(s) = stdin {
        command = command.with_stdin(s);
    }
    Call {
        job: job.to_string(),
        machine: machine.to_string(),
        side,
        command,
    }
}

fn call(machine: &str, side: Side, script: String, stdin: Option<String>) -> Call {
    root_call(machine, "(ssh key)", side, script, stdin)
}

/// Rewrites authorized_keys through `filter` (a shell pipeline reading the file on stdin, the
/// key line or blob in `$K`), atomically, owned by the repository account.
fn rewrite(filter: &str) -> String {
    let file = authorized_keys();
    let user = super::deploy::REPO_USER;
    format!(
        "set -e; umask 077; K=$(cat); test -f {file}; \
         {filter} < {file} > {file}.picaops-new; chown {user}: {file}.picaops-new; \
         mv {file}.picaops-new {file}"
    )
}

/// The rest of the line starting with `tag` in what a call that succeeded printed.
pub(super) fn tagged(a: &super::remote::Answer, tag: &str) -> Option<String> {
    let out = a
        .result
        .as_ref()
        .ok()
        .filter(|o| o.success())?
        .stdout_lossy();
    out.lines()
        .find_map(|l| l.strip_prefix(tag))
        .map(str::to_string)
}

/// The key blob of a public key line (`ssh-ed25519 AAAA… comment` → `AAAA…`).
fn blob(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

pub fn rotate_credentials(inv: &Inventory, host: &str, exec: &mut Exec) -> Result<Report, OpError> {
    let jobs: Vec<&BackupJob> = inv
        .backups
        .values()
        .filter(|j| super::config::data_host(inv, j).is_some_and(|m| m.name() == host))
        .collect();
    if jobs.is_empty() {
        return Err(OpError::SendsNothing {
            host: host.to_string(),
        });
    }
    let repos: BTreeSet<String> = jobs
        .iter()
        .map(|j| j.repository.host.value.clone())
        .collect();
    let key = host_paths::IDENTITY_FILE;
    let mut lines: Vec<JobLine> = Vec::new();
    let fail = |lines: Vec<JobLine>| Ok(Report::new("rotate-credentials", lines));

    // 1. The new key beside the old one.
    let made = exec(
        vec![call(
            host,
            Side::Data,
            format!(
                "set -e; umask 077; test -f {key}; rm -f {key}.new {key}.new.pub; \
                 ssh-keygen -q -t ed25519 -N '' -C 'picaops-backup@{host}' -f {key}.new >/dev/null; \
                 echo \"old $(cat {key}.pub)\"; echo \"new $(cat {key}.new.pub)\""
            ),
            None,
        )],
        STEP_TIMEOUT,
    )?;
    let a = &made[0];
    let pick = |tag: &str| tagged(a, tag);
    let (Some(old), Some(new)) = (pick("old "), pick("new ")) else {
        lines.push(line(
            a,
            false,
            failure_text(a, &format!("could not make a new key beside {key} (run `picaops backup init` first if there is none)")),
            serde_json::Value::Null,
        ));
        return fail(lines);
    };
    lines.push(line(
        a,
        true,
        format!("new key made ({})", fingerprint_hint(&new)),
        serde_json::Value::Null,
    ));

    // 2. Authorized beside the old one.
    let new_line = remote::serve_line(host, &new);
    let add: Vec<Call> = repos
        .iter()
        .map(|r| {
            call(
                r,
                Side::RepoRoot,
                rewrite("{ grep -vxF -- \"$K\" || true; printf '%s\\n' \"$K\"; }"),
                Some(new_line.trim_end().to_string()),
            )
        })
        .collect();
    let added = exec(add, STEP_TIMEOUT)?;
    let all_added = added.iter().all(|a| a.succeeded());
    for a in &added {
        let ok = a.succeeded();
        lines.push(line(
            a,
            ok,
            if ok {
                format!("{host}'s new key authorized beside the old one")
            } else {
                failure_text(a, "could not authorize the new key")
            },
            serde_json::Value::Null,
        ));
    }
    if !all_added {
        undo(host, &repos, &new, false, exec, &mut lines)?;
        return fail(lines);
    }

    // 3. The new key in place, the old one kept aside until the new one is proven.
    let swapped = exec(
        vec![call(
            host,
            Side::Data,
            format!(
                "set -e; cp -p {key} {key}.old; cp -p {key}.pub {key}.old.pub; \
                 mv {key}.new {key}; mv {key}.new.pub {key}.pub"
            ),
            None,
        )],
        STEP_TIMEOUT,
    )?;
    let a = &swapped[0];
    if !a.succeeded() {
        lines.push(line(
            a,
            false,
            failure_text(a, "could not put the new key in place"),
            serde_json::Value::Null,
        ));
        undo(host, &repos, &new, true, exec, &mut lines)?;
        return fail(lines);
    }

    // 4. Every job reaches its repository with it.
    let mut proofs = Vec::new();
    for job in &jobs {
        match remote::job_call(inv, job, Side::Data, "host-snapshots", &[]) {
            Ok(c) => proofs.push(c),
            Err(e) => return Err(OpError::Call(e)),
        }
    }
    let proven = exec(proofs, STEP_TIMEOUT)?;
    let mut all_proven = true;
    for a in &proven {
        // A repository not made yet still proves the key: host-serve let it in and rclone
        // answered that there is no repository there.
        let uninitialised = a.result.as_ref().is_ok_and(|o| {
            !o.success()
                && (o.stderr_lossy() + &o.stdout_lossy()).contains("there is no restic repository")
        });
        let ok = a.succeeded() || uninitialised;
        all_proven &= ok;
        lines.push(line(
            a,
            ok,
            if uninitialised {
                "reaches its repository host with the new key (no repository there yet: `picaops backup init`)".into()
            } else if ok {
                "reaches its repository with the new key".into()
            } else {
                failure_text(a, "could not reach its repository with the new key")
            },
            serde_json::Value::Null,
        ));
    }
    if !all_proven {
        undo(host, &repos, &new, true, exec, &mut lines)?;
        return fail(lines);
    }

    // 5. The old key refused, and gone.
    let old_blob = blob(&old).unwrap_or_default().to_string();
    let drop: Vec<Call> = repos
        .iter()
        .map(|r| {
            call(
                r,
                Side::RepoRoot,
                rewrite("{ grep -vF -- \"$K\" || true; }"),
                Some(old_blob.clone()),
            )
        })
        .collect();
    for a in &exec(drop, STEP_TIMEOUT)? {
        let ok = a.succeeded();
        lines.push(line(
            a,
            ok,
            if ok {
                format!("{host}'s old key no longer authorized")
            } else {
                failure_text(a, "could not remove the old key: it still opens this repository; remove its line from the repository account's authorized_keys by hand")
            },
            serde_json::Value::Null,
        ));
    }
    let cleaned = exec(
        vec![call(
            host,
            Side::Data,
            format!("rm -f {key}.old {key}.old.pub"),
            None,
        )],
        STEP_TIMEOUT,
    )?;
    let a = &cleaned[0];
    let ok = a.succeeded();
    lines.push(line(
        a,
        ok,
        if ok {
            "old key deleted".into()
        } else {
            failure_text(a, &format!("could not delete {key}.old"))
        },
        serde_json::Value::Null,
    ));
    Ok(Report::new("rotate-credentials", lines))
}

/// Puts the old key back: on HOST (when it was swapped) and in every repository host's file
/// (the new key's line removed).
fn undo(
    host: &str,
    repos: &BTreeSet<String>,
    new: &str,
    swapped: bool,
    exec: &mut Exec,
    lines: &mut Vec<JobLine>,
) -> Result<(), OpError> {
    let key = host_paths::IDENTITY_FILE;
    let back = if swapped {
        format!("set -e; if [ -f {key}.old ]; then mv {key}.old {key}; mv {key}.old.pub {key}.pub; fi; rm -f {key}.new {key}.new.pub")
    } else {
        format!("rm -f {key}.new {key}.new.pub")
    };
    let mut calls = vec![call(host, Side::Data, back, None)];
    let new_blob = blob(new).unwrap_or_default().to_string();
    calls.extend(repos.iter().map(|r| {
        call(
            r,
            Side::RepoRoot,
            rewrite("{ grep -vF -- \"$K\" || true; }"),
            Some(new_blob.clone()),
        )
    }));
    for a in &exec(calls, STEP_TIMEOUT)? {
        let ok = a.succeeded();
        lines.push(line(
            a,
            ok,
            if ok {
                "put back as it was (the old key)".into()
            } else {
                failure_text(
                    a,
                    "could not put back as it was: check the key and authorized_keys by hand",
                )
            },
            serde_json::Value::Null,
        ));
    }
    Ok(())
}

/// The key's last characters, to tell two keys apart in a report (not a secret: a public key).
fn fingerprint_hint(line: &str) -> String {
    let b = blob(line).unwrap_or_default();
    format!("…{}", &b[b.len().saturating_sub(12)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewrite_keeps_the_file_atomic_and_reads_the_key_from_stdin() {
        let s = rewrite("{ grep -vF -- \"$K\" || true; }");
        assert!(s.starts_with("set -e; umask 077; K=$(cat);"), "{s}");
        assert!(s.contains("authorized_keys.picaops-new; mv"), "{s}");
        assert_eq!(
            blob("ssh-ed25519 AAAAxyz picaops-backup@bob"),
            Some("AAAAxyz")
        );
        assert_eq!(
            fingerprint_hint("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob c"),
            "…NTE5AAAAIBob"
        );
    }
}
