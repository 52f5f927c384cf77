//! The record of the machines `picaops apply` left failed, per inventory, for `--limit @failed`
//! (Ansible's retry files), and the name-list format it shares with `--limit @FILE`.
//!
//! The record lives in picaops' state directory (`$XDG_STATE_HOME/picaops`, else
//! `~/.local/state/picaops`), under `failed/`, one file per inventory directory: never in the
//! inventory itself, which is under version control. Each apply updates it under a lock, written
//! atomically (temporary file, synced, renamed): the machines it failed on are added, those it
//! converged are removed, the others are kept. An empty record still says when the last apply ran, so
//! `@failed` can tell "it succeeded" from "no apply ever ran". Nothing here contacts a host.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diagnostic::Place;

/// The first line of every record (a record is also a valid `--limit @FILE`).
const HEADER: &str = "# picaops: machines the last apply left failed, for `--limit @failed`";

/// Why the record could not be found, read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "cannot tell where picaops keeps its state: neither XDG_STATE_HOME nor HOME is set \
         (set one of them)"
    )]
    NoStateDir,
    #[error("cannot read the record of failed machines {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("the record of failed machines {place} is damaged: {why}. Delete it; the next apply writes it again")]
    Damaged { place: Place, why: String },
    #[error(
        "cannot write the record of failed machines {}: {error}. `--limit @failed` would select \
         the wrong machines: fix the directory's permissions, or delete the file",
        .path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// One name of a name list, with where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub place: Place,
}

/// What the record says.
#[derive(Clone, Debug)]
pub struct Record {
    pub path: PathBuf,
    /// When the apply that last wrote it ended (`YYYY-MM-DD HH:MM UTC`), if it says.
    pub written: Option<String>,
    pub machines: Vec<Listed>,
}

/// `$XDG_STATE_HOME/picaops` (an absolute path only, as the XDG specification says), else
/// `$HOME/.local/state/picaops`.
pub fn state_dir() -> Result<PathBuf, RecordError> {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = nonempty("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        return Ok(d.join("picaops"));
    }
    nonempty("HOME")
        .map(|h| h.join(".local/state/picaops"))
        .ok_or(RecordError::NoStateDir)
}

/// Where the record of the inventory in `inventory_dir` is: `failed/` + [`inventory_name`].
pub fn record_path(inventory_dir: &Path) -> Result<PathBuf, RecordError> {
    Ok(state_dir()?
        .join("failed")
        .join(inventory_name(inventory_dir)))
}

/// How picaops's state names one inventory: the directory's own name and a digest of its
/// absolute path, so two checkouts never share a record.
pub fn inventory_name(inventory_dir: &Path) -> String {
    let abs = absolute(inventory_dir);
    let digest = hex::encode(&Sha256::digest(abs.as_os_str().as_encoded_bytes())[..8]);
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{name}-{digest}")
}

fn absolute(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// The record of `inventory_dir`; `None` when no apply ever wrote one.
pub fn read(inventory_dir: &Path) -> Result<Option<Record>, RecordError> {
    let path = record_path(inventory_dir)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(RecordError::Read { path, error }),
    };
    let machines =
        parse_names(&path, &text).map_err(|(place, why)| RecordError::Damaged { place, why })?;
    let written = text
        .lines()
        .find_map(|l| l.strip_prefix("# last apply: "))
        .map(|w| w.trim().to_string());
    Ok(Some(Record {
        path,
        written,
        machines,
    }))
}

/// A name list (a record, or a `--limit @FILE`): one machine, group or site name (or glob) per
/// line; blank lines and lines starting with `#` are ignored. `Err`: the first line that is not
/// one name, and why.
pub fn parse_names(file: &Path, text: &str) -> Result<Vec<Listed>, (Place, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let column = line.chars().take_while(|c| c.is_whitespace()).count() as u64 + 1;
        let place = Place::new(file, i as u64 + 1, column).with_len(name.chars().count() as u64);
        if let Some(bad) = name
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, ',' | '!' | '@'))
        {
            let why = format!(
                "`{name}` is not one name (it holds {}): write one machine, group or site name per line",
                if bad.is_whitespace() { "a space".to_string() } else { format!("`{bad}`") }
            );
            return Err((place, why));
        }
        out.push(Listed {
            name: name.to_string(),
            place,
        });
    }
    Ok(out)
}

/// After an apply: `failed` are added to the record, `converged` removed from it, the others
/// kept. Returns the record as written.
pub fn update(
    inventory_dir: &Path,
    failed: &BTreeSet<String>,
    converged: &BTreeSet<String>,
) -> Result<Record, RecordError> {
    let path = record_path(inventory_dir)?;
    let write_err = |error| RecordError::Write {
        path: path.clone(),
        error,
    };
    // Two applies ending at once must not lose each other's failures.
    let _lock = lock(&path).map_err(write_err)?;
    let before: BTreeSet<String> = match read(inventory_dir) {
        Ok(Some(r)) => r.machines.into_iter().map(|l| l.name).collect(),
        Ok(None) => BTreeSet::new(),
        // A damaged record is replaced by what this run knows.
        Err(RecordError::Damaged { .. }) => BTreeSet::new(),
        Err(e) => return Err(e),
    };
    let now: BTreeSet<String> = before
        .into_iter()
        .filter(|m| !converged.contains(m))
        .chain(failed.iter().cloned())
        .collect();
    let written = now_utc();
    let mut text = format!(
        "{HEADER}\n# inventory: {}\n# last apply: {written}\n",
        absolute(inventory_dir).display()
    );
    for m in &now {
        text.push_str(m);
        text.push('\n');
    }
    write_atomically(&path, &text).map_err(write_err)?;
    let machines = parse_names(&path, &text).unwrap_or_default();
    Ok(Record {
        path,
        written: Some(written),
        machines,
    })
}

/// An exclusive flock on `failed.lock` beside the records' directory (made if missing),
/// released when the file is dropped.
fn lock(record: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = record.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.with_extension("lock"))?;
    // SAFETY: flock on a descriptor we own; the kernel drops it with the descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Temporary file beside `path`, synced, renamed over it (the directory exists: see [`lock`]).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn now_utc() -> String {
    let secs = crate::date::now_secs();
    let (y, m, d) = crate::date::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_list_is_one_name_per_line_with_places() {
        let f = Path::new("hosts.txt");
        let names = parse_names(f, "# retry\nalpha\n\n  bravo  \npica*\n").unwrap();
        let got: Vec<(String, String)> = names
            .iter()
            .map(|l| (l.name.clone(), l.place.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("alpha".into(), "hosts.txt:2:1".into()),
                ("bravo".into(), "hosts.txt:4:3".into()),
                ("pica*".into(), "hosts.txt:5:1".into()),
            ]
        );
        for (text, at, holds) in [
            ("alpha\nbravo charlie\n", "hosts.txt:2:1", "a space"),
            ("alpha,bravo\n", "hosts.txt:1:1", "`,`"),
            (" !alpha\n", "hosts.txt:1:2", "`!`"),
            ("@failed\n", "hosts.txt:1:1", "`@`"),
        ] {
            let (place, why) = parse_names(f, text).unwrap_err();
            assert_eq!(place.to_string(), at, "{text:?}");
            assert!(why.contains(holds), "{text:?}: {why}");
        }
    }
}
