//! `picaops backup host-serve --host DATA`: what a data host's key runs on a repository host.
//!
//! `backup init` writes each data host's key into the repository account's `authorized_keys`
//! as `restrict,command="picaops backup host-serve --host DATA"`, so the key gets no shell, no
//! SFTP and no forwarding: only this. It reads which job restic asks for (the one word of
//! `SSH_ORIGINAL_COMMAND`: restic's `rclone:JOB` repository), checks that DATA sends that job
//! (the repository side's job file lists its senders), and becomes `rclone serve restic --stdio
//! --append-only DIR` for that job's directory alone. rclone's append-only mode refuses to
//! delete or overwrite anything but locks, so whoever holds the data host can add snapshots and
//! never take one away; retention runs on the repository side, as the repository account.

use std::path::{Path, PathBuf};

use super::jobfile::{JobFile, RepositoryAccess};

/// The program that serves the repository (Debian's `rclone` package).
pub const RCLONE: &str = "/usr/bin/rclone";

/// Why a key's request is refused. Sent to restic's stderr, which shows it to whoever ran it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("picaops host-serve: no job asked for (run by an SSH key of `backup init`, which restic's `rclone:JOB` repository names)")]
    NoJob,
    #[error("picaops host-serve: {asked:?} is not a job name")]
    BadJob { asked: String },
    #[error("picaops host-serve: this repository host keeps no job `{job}` ({why})")]
    UnknownJob { job: String, why: String },
    #[error("picaops host-serve: {host}'s key may not open job `{job}`'s repository (it is sent by {senders})")]
    NotSender {
        host: String,
        job: String,
        senders: String,
    },
    #[error("picaops host-serve: job `{job}`'s file does not name a directory on this machine")]
    NotLocal { job: String },
    #[error("picaops host-serve: cannot run {RCLONE}: {0} (install Debian's `rclone` on the repository host: `picaops apply --tags backup`)")]
    Rclone(std::io::Error),
}

/// The directory `host`'s key may serve for the request `original` (`SSH_ORIGINAL_COMMAND`),
/// from the job files in `jobs_dir` (the repository account's `jobs/`).
pub fn directory(
    original: Option<&str>,
    host: &str,
    jobs_dir: &Path,
) -> Result<PathBuf, ServeError> {
    let words: Vec<&str> = original.unwrap_or_default().split_whitespace().collect();
    let job = match words.as_slice() {
        [] => return Err(ServeError::NoJob),
        [job] => *job,
        _ => {
            return Err(ServeError::BadJob {
                asked: original.unwrap_or_default().to_string(),
            })
        }
    };
    if !job
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ServeError::BadJob {
            asked: job.to_string(),
        });
    }
    let file = JobFile::read(&jobs_dir.join(format!("{job}.json"))).map_err(|e| {
        ServeError::UnknownJob {
            job: job.to_string(),
            why: e.to_string(),
        }
    })?;
    if !file.senders.iter().any(|s| s == host) {
        return Err(ServeError::NotSender {
            host: host.to_string(),
            job: job.to_string(),
            senders: if file.senders.is_empty() {
                "no machine".into()
            } else {
                file.senders.join(", ")
            },
        });
    }
    match file.repository {
        RepositoryAccess::Local { path } => Ok(path),
        RepositoryAccess::Ssh { .. } => Err(ServeError::NotLocal {
            job: job.to_string(),
        }),
    }
}

/// Becomes rclone serving `dir` append-only on stdin/stdout; returns only if it cannot.
pub fn exec_rclone(dir: &Path) -> ServeError {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(RCLONE)
        .args([
            "serve",
            "restic",
            "--stdio",
            "--append-only",
            "--config",
            "/dev/null",
        ])
        .arg(dir)
        .exec();
    ServeError::Rclone(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_file(dir: &Path, job: &str, senders: &[&str]) {
        let doc = serde_json::json!({
            "version": super::super::jobfile::JOB_FILE_VERSION,
            "job": job,
            "host": "bob",
            "repository": {"kind": "local", "path": format!("/srv/restic/{job}")},
            "password_file": "/x",
            "paths": ["/srv"],
            "retention": {"keep_daily": 7},
            "max_age_seconds": 3600,
            "senders": senders,
        });
        let path = dir.join(format!("{job}.json"));
        std::fs::write(&path, doc.to_string()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_key_opens_only_the_jobs_its_host_sends() {
        let dir = tempfile::tempdir().unwrap();
        job_file(dir.path(), "hello", &["bob"]);
        job_file(dir.path(), "notes", &["alice"]);
        assert_eq!(
            directory(Some("hello"), "bob", dir.path()).unwrap(),
            PathBuf::from("/srv/restic/hello")
        );
        let e = directory(Some("notes"), "bob", dir.path()).unwrap_err();
        assert!(matches!(e, ServeError::NotSender { .. }), "{e}");
        assert!(e.to_string().contains("sent by alice"), "{e}");
        for asked in [
            None,
            Some(""),
            Some("hello notes"),
            Some("../hello"),
            Some("he;llo"),
        ] {
            assert!(directory(asked, "bob", dir.path()).is_err(), "{asked:?}");
        }
        assert!(matches!(
            directory(Some("missing"), "bob", dir.path()),
            Err(ServeError::UnknownJob { .. })
        ));
    }
}
