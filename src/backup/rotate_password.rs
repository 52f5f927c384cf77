//! `picaops backup rotate-password JOB --from OLD`: a new restic password for a job's repository,
//! the old one opening nothing afterwards, without a moment where the job cannot run.
//!
//! The team first puts the new password in the secret store under a new name and points the
//! job's `password:` at it in the inventory; `--from` names the secret the hosts use today. Then,
//! each step only once the one before succeeded:
//! 1. on the repository host, as the repository account: the new password written to its file
//!    (from stdin, mode 0600) and `restic key add` with the old one;
//! 2. every copy of the job file (data host, repository account, repository root) and of the new
//!    password (root's copies) written as `apply` would write them, the old job files kept aside;
//! 3. a backup and a check with the new password;
//! 4. `restic key remove` of the old key, then the old password files and the kept job files deleted.
//!
//! A failure at 2 or 3 puts the old job files back and removes the new key: the job goes on with
//! the old password. Values travel on stdin into root-only (or account-only) files, never on a
//! command line or in an environment; restic reads them with `--password-file`.

use std::time::Duration;

use super::config::BackupJob;
use super::deploy::{self, password_file_name, REPO_HOME, REPO_USER};
use super::jobfile::host_paths;
use super::ops::{self, failure_text, line, Exec, JobLine, OpError, Report};
use super::remote::{Call, Side};
use crate::inventory::Inventory;
use crate::transport::quote::quote;

const STEP_TIMEOUT: Option<Duration> = Some(Duration::from_secs(120));

fn call(machine: &str, job: &str, script: String, stdin: Option<String>) -> Call {
    super::rotate::root_call(machine, job, Side::RepoRoot, script, stdin)
}

/// restic as the repository account on the job's directory with the password file `pw`.
fn restic(dir: &str, pw: &str, args: &str) -> String {
    format!(
        "runuser -u {REPO_USER} -- restic --no-cache -r {} --password-file {} {args}",
        quote(dir),
        quote(pw)
    )
}

/// The id of the key a password opens (`restic key list --json`, the `current` one).
const CURRENT_KEY: &str =
    "python3 -c 'import json,sys; print([k[\"id\"] for k in json.load(sys.stdin) if k.get(\"current\")][0])'";

pub fn rotate_password(
    inv: &Inventory,
    job: &BackupJob,
    from: &str,
    exec: &mut Exec,
) -> Result<Report, OpError> {
    let new_name = job.password.value.clone();
    if new_name == from {
        return Err(OpError::SameSecret {
            job: job.name.clone(),
            old: from.to_string(),
        });
    }
    let others: Vec<&str> = inv
        .backups
        .values()
        .filter(|j| j.name != job.name && j.repository.key() == job.repository.key())
        .map(|j| j.name.as_str())
        .collect();
    if !others.is_empty() {
        return Err(OpError::SharedRepository {
            job: job.name.clone(),
            others: others.join(", "),
        });
    }
    let secret = |name: &str| {
        inv.secrets
            .get(name)
            .map_err(|e| OpError::Secret(e.to_string()))
    };
    let (_old, new) = (secret(from)?, secret(&new_name)?);
    let data = super::config::data_host(inv, job)
        .map(|m| m.name().to_string())
        .ok_or_else(|| {
            OpError::Call(super::remote::CallError::NoMachine {
                job: job.name.clone(),
            })
        })?;
    let repo = job.repository.host.value.clone();
    let dir = deploy::repository_dir(job).display().to_string();
    let (old_file, new_file) = (password_file_name(from), password_file_name(&new_name));
    let account_pw = |f: &str| format!("{REPO_HOME}/secrets/{f}");
    let root_pw = |f: &str| format!("{}/{f}", host_paths::SECRETS_DIR);
    let mut lines: Vec<JobLine> = Vec::new();
    let report = |lines: Vec<JobLine>| Ok(Report::new("rotate-password", lines));

    // 1. The new key, added with the old password.
    let add = format!(
        "set -e; umask 077; N={np}; runuser -u {REPO_USER} -- sh -c 'umask 077; cat > \"$1\"' sh \"$N\"; \
         {add} >/dev/null; \
         echo \"old $({old_list} | {CURRENT_KEY})\"; echo \"new $({new_list} | {CURRENT_KEY})\"",
        np = quote(&account_pw(&new_file)),
        add = restic(&dir, &account_pw(&old_file), &format!("key add --new-password-file {}", quote(&account_pw(&new_file)))),
        old_list = restic(&dir, &account_pw(&old_file), "key list --json"),
        new_list = restic(&dir, &account_pw(&new_file), "key list --json"),
    );
    let added = exec(
        vec![call(
            &repo,
            &job.name,
            add,
            Some(format!("{}\n", new.expose())),
        )],
        STEP_TIMEOUT,
    )?;
    let a = &added[0];
    let id = |tag: &str| {
        super::rotate::tagged(a, tag)
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let (Some(old_id), Some(new_id)) = (id("old "), id("new ")) else {
        lines.push(line(a, false, failure_text(a, "could not add the new key (is the old password file there? run `picaops apply --tags backup` with the inventory still naming the old secret)"), serde_json::Value::Null));
        return report(lines);
    };
    lines.push(line(
        a,
        true,
        format!(
            "new restic key {} added beside {}",
            &new_id[..8.min(new_id.len())],
            &old_id[..8.min(old_id.len())]
        ),
        serde_json::Value::Null,
    ));

    // 2. The job files and root's password copies as apply writes them, the old files kept aside.
    let plan = deploy::plan(inv, &super::units::UnitOptions::default()).map_err(OpError::Units)?;
    // The job's three copies: the data host's, the repository account's and root's there.
    let files: Vec<String> = [
        deploy::data_job_file(&job.name),
        deploy::repo_job_file(&job.name),
        deploy::repo_root_job_file(&job.name),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    let mut writes = Vec::new();
    for (machine, m) in &plan {
        let mut script = String::from("set -e; umask 077;\n");
        let mut stdin = String::new();
        let mut any = false;
        for f in m.job_files.iter().filter(|f| files.contains(&f.path)) {
            any = true;
            // Each file's content on stdin, as one base64 line (job files hold no secret).
            let b64 =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &f.content);
            stdin.push_str(&b64);
            stdin.push('\n');
            let p = quote(&f.path);
            script.push_str(&format!(
                "read -r L; [ -f {p} ] && cp -p {p} {p}.picaops-old; printf '%s' \"$L\" | base64 -d > {p}.picaops-new; \
                 chown {o}: {p}.picaops-new; chmod {mode} {p}.picaops-new; mv {p}.picaops-new {p}\n",
                o = f.owner,
                mode = f.mode
            ));
        }
        if m.passwords.iter().any(|p| p.name == new_file && p.root)
            && (machine == &data || machine == &repo)
        {
            any = true;
            stdin.push_str(new.expose());
            stdin.push('\n');
            let p = quote(&root_pw(&new_file));
            script.push_str(&format!(
                "read -r L; printf '%s\\n' \"$L\" > {p}.picaops-new; chmod 600 {p}.picaops-new; mv {p}.picaops-new {p}\n"
            ));
        }
        if any {
            writes.push(call(machine, &job.name, script, Some(stdin)));
        }
    }
    let written = exec(writes, STEP_TIMEOUT)?;
    let all_written = written.iter().all(|a| a.succeeded());
    for a in &written {
        lines.push(line(
            a,
            a.succeeded(),
            if a.succeeded() {
                "job files and the new password written".into()
            } else {
                failure_text(a, "could not write the job files")
            },
            serde_json::Value::Null,
        ));
    }

    // 3. A backup and a check with the new password.
    let proven = all_written && {
        let names = [job.name.clone()];
        let run = ops::run(inv, &names, exec)?;
        let check = ops::check(inv, &names, None, exec)?;
        let both = run.ok && check.ok;
        lines.extend(run.jobs);
        lines.extend(check.jobs);
        both
    };
    if !proven {
        let undo = format!(
            "set -e; {remove} >/dev/null 2>&1 || true; rm -f {np}",
            remove = restic(
                &dir,
                &account_pw(&old_file),
                &format!("key remove {new_id}")
            ),
            np = quote(&account_pw(&new_file)),
        );
        let mut calls = vec![call(&repo, &job.name, undo, None)];
        for machine in [&data, &repo] {
            calls.push(call(
                machine,
                &job.name,
                format!(
                    "for f in {files}; do [ -f \"$f.picaops-old\" ] && mv \"$f.picaops-old\" \"$f\"; done; true",
                    files = files.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" ")
                ),
                None,
            ));
        }
        for a in &exec(calls, STEP_TIMEOUT)? {
            lines.push(line(
                a,
                a.succeeded(),
                if a.succeeded() {
                    "put back as it was (the old password)".into()
                } else {
                    failure_text(
                        a,
                        "could not put back as it was: check the job files by hand",
                    )
                },
                serde_json::Value::Null,
            ));
        }
        return report(lines);
    }

    // 4. The old key gone; the old files too, unless another job (of another repository) names
    // the old secret.
    let still_used = inv
        .backups
        .values()
        .any(|j| j.name != job.name && j.password.value == from);
    let remove = format!(
        "set -e; {remove} >/dev/null; rm -f {old_account}",
        remove = restic(
            &dir,
            &account_pw(&new_file),
            &format!("key remove {old_id}")
        ),
        old_account = if still_used {
            String::new()
        } else {
            quote(&account_pw(&old_file))
        },
    );
    let removed = exec(vec![call(&repo, &job.name, remove, None)], STEP_TIMEOUT)?;
    for a in &removed {
        lines.push(line(
            a,
            a.succeeded(),
            if a.succeeded() {
                format!(
                    "old restic key {} removed: the old password opens nothing",
                    &old_id[..8.min(old_id.len())]
                )
            } else {
                failure_text(
                    a,
                    "could not remove the old key: the old password still opens the repository",
                )
            },
            serde_json::Value::Null,
        ));
    }
    let mut cleanup = Vec::new();
    for machine in [&data, &repo] {
        cleanup.push(call(
            machine,
            &job.name,
            format!(
                "rm -f {old_root} {files}",
                old_root = if still_used {
                    String::new()
                } else {
                    quote(&root_pw(&old_file))
                },
                files = files
                    .iter()
                    .map(|p| quote(&format!("{p}.picaops-old")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            None,
        ));
    }
    for a in &exec(cleanup, STEP_TIMEOUT)? {
        lines.push(line(
            a,
            a.succeeded(),
            if a.succeeded() {
                "old password files deleted".into()
            } else {
                failure_text(a, "could not delete the old password files")
            },
            serde_json::Value::Null,
        ));
    }
    Ok(Report::new("rotate-password", lines))
}
