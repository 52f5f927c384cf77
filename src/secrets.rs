//! Secrets (LDAP bind passwords, backup repository passwords, service secrets), named in the
//! inventory and resolved on the workstation only when needed: through `pass` (what Picasoft's
//! team uses) or a directory of root-only files. A `Secret` never prints its value.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Why a secret cannot be had. Names the secret and the store, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("`store: files` needs `dir:` (the directory holding one file per secret)")]
    NoStoreDir,
    #[error("`{name}` is not a valid secret name (letters, digits, - _ . /; no leading / or ..)")]
    InvalidName { name: String },
    #[error("secret `{name}`: cannot read {}: {error}. Create it (one line, mode 0600) or fix `secrets.dir` in the inventory", .path.display())]
    Unreadable {
        name: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The mode of the file, or of a directory on the way to it, cannot be read.
    #[error("secret `{name}`: cannot check the permissions of {}: {error}", .path.display())]
    Unchecked {
        name: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("secret `{name}`: {} may be read by its group or by others (mode {mode:04o}); \
             picaops refuses to use it, as ssh refuses such a private key. Run `chmod 600 {}`, \
             and change the secret if others may have read it", .path.display(), .path.display())]
    Readable {
        name: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("secret `{name}`: the directory {} may be written by its group or by others \
             (mode {mode:04o}), so they could replace the secret; picaops refuses to use it. \
             Run `chmod go-w {}`", .dir.display(), .dir.display())]
    WritableDir {
        name: String,
        dir: PathBuf,
        mode: u32,
    },
    #[error("secret `{name}`: cannot run `pass` ({error}); install pass, or use `secrets: {{store: files, dir: …}}` in the inventory")]
    NoPass {
        name: String,
        #[source]
        error: std::io::Error,
    },
    /// `pass show ENTRY` failed (what `pass` said on stderr).
    #[error("secret `{name}`: `pass show {entry}` failed: {stderr}")]
    PassFailed {
        name: String,
        entry: String,
        stderr: String,
    },
    #[error("secret `{name}` is empty")]
    Empty { name: String },
}

/// Where secret values come from (the inventory's `secrets:` section).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum SecretStore {
    /// `pass show PREFIX/NAME`, first line.
    Pass { prefix: String },
    /// One file per secret, `DIR/NAME`, its first line. A file its group or others may read, or
    /// a directory on the way they may write, is refused (as ssh does with a private key).
    Files { dir: PathBuf },
}

impl Default for SecretStore {
    fn default() -> Self {
        SecretStore::Pass {
            prefix: String::new(),
        }
    }
}

/// The `secrets:` section as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SecretsDoc {
    pub store: StoreKind,
    /// `files`: the directory, relative to the inventory file.
    pub dir: Option<String>,
    /// `pass`: prepended to every name (`picasoft/` gives `pass show picasoft/NAME`).
    pub prefix: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Pass,
    Files,
}

impl SecretsDoc {
    /// The store, with `dir` resolved against the directory of the file that declared it.
    pub fn resolve(self, file_dir: &Path) -> Result<SecretStore, SecretError> {
        match self.store {
            StoreKind::Pass => Ok(SecretStore::Pass {
                prefix: self.prefix.unwrap_or_default(),
            }),
            StoreKind::Files => match self.dir {
                Some(d) => Ok(SecretStore::Files {
                    dir: file_dir.join(d),
                }),
                None => Err(SecretError::NoStoreDir),
            },
        }
    }
}

/// A secret value. Debug and Display print `(secret)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret read from a root-only file on a host.
    pub fn from_line(line: &str) -> Self {
        Secret(line.trim_end_matches('\r').to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

/// Secret names are plain words: they go into a file name or a `pass` path, never a shell.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['/', '.', '-'])
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl SecretStore {
    /// The value of secret `name`. Errors name the secret and the store, never a value.
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        if !valid_name(name) {
            return Err(SecretError::InvalidName {
                name: name.to_string(),
            });
        }
        match self {
            SecretStore::Files { dir } => {
                let path = dir.join(name);
                let cannot_read = |error: std::io::Error| SecretError::Unreadable {
                    name: name.to_string(),
                    path: path.clone(),
                    error,
                };
                let mut file = std::fs::File::open(&path).map_err(cannot_read)?;
                check_private(name, dir, &path, &file)?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot_read)?;
                first_line(name, &text)
            }
            SecretStore::Pass { prefix } => {
                let entry = format!("{prefix}{name}");
                let out = Command::new("pass")
                    .args(["show", &entry])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|error| SecretError::NoPass {
                        name: name.to_string(),
                        error,
                    })?;
                if !out.status.success() {
                    return Err(SecretError::PassFailed {
                        name: name.to_string(),
                        entry,
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
                first_line(name, &String::from_utf8_lossy(&out.stdout))
            }
        }
    }
}

/// Like ssh with a private key: refuses a secret file its group or others may read (checked
/// on the opened file, so it cannot be swapped in between), and a directory from the store's
/// down to the file that its group or others may write (they could replace the secret).
fn check_private(
    name: &str,
    dir: &Path,
    path: &Path,
    file: &std::fs::File,
) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt as _;
    let cannot = |p: &Path, error: std::io::Error| SecretError::Unchecked {
        name: name.to_string(),
        path: p.to_path_buf(),
        error,
    };
    let mode = file
        .metadata()
        .map_err(|e| cannot(path, e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Readable {
            name: name.to_string(),
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut d = path.parent();
    while let Some(p) = d {
        let mode = std::fs::metadata(p)
            .map_err(|e| cannot(p, e))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o022 != 0 {
            return Err(SecretError::WritableDir {
                name: name.to_string(),
                dir: p.to_path_buf(),
                mode,
            });
        }
        if p == dir {
            break;
        }
        d = p.parent();
    }
    Ok(())
}

fn first_line(name: &str, text: &str) -> Result<Secret, SecretError> {
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(SecretError::Empty {
            name: name.to_string(),
        });
    }
    Ok(Secret(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a secret file as it should be: mode 0600.
    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn file_store_reads_the_first_line_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join("ldap-admin"), "s3cret-value\nignored\n");
        let store = SecretStore::Files {
            dir: dir.path().into(),
        };
        let s = store.get("ldap-admin").unwrap();
        assert_eq!(s.expose(), "s3cret-value");
        assert_eq!(format!("{s:?}"), "(secret)");
        let e = store.get("missing").unwrap_err().to_string();
        assert!(e.contains("secret `missing`"), "{e}");
        assert!(store
            .get("../etc/passwd")
            .unwrap_err()
            .to_string()
            .contains("not a valid secret name"));
        write_private(&dir.path().join("empty"), "\n");
        assert!(store
            .get("empty")
            .unwrap_err()
            .to_string()
            .contains("is empty"));
    }

    #[test]
    fn file_store_refuses_files_others_can_read_and_directories_others_can_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::Files {
            dir: dir.path().into(),
        };
        std::fs::create_dir(dir.path().join("restic")).unwrap();
        let path = dir.path().join("restic/bob");
        std::fs::write(&path, "s3cret-value\n").unwrap();
        for m in [0o644, 0o640, 0o604, 0o660] {
            mode(&path, m);
            let e = store.get("restic/bob").unwrap_err().to_string();
            assert!(
                e.contains(&format!("chmod 600 {}", path.display())),
                "{m:o}: {e}"
            );
            assert!(e.contains(&format!("(mode 0{m:o})")), "{m:o}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        mode(&path, 0o600);
        assert_eq!(store.get("restic/bob").unwrap().expose(), "s3cret-value");
        mode(&path, 0o400);
        assert_eq!(store.get("restic/bob").unwrap().expose(), "s3cret-value");
        // Anyone who can write a directory on the way can replace the secret.
        for (d, m) in [
            (dir.path().join("restic"), 0o777),
            (dir.path().into(), 0o770),
        ] {
            mode(&d, m);
            let e = store.get("restic/bob").unwrap_err().to_string();
            assert!(
                e.contains(&format!("chmod go-w {}", d.display())),
                "{}: {e}",
                d.display()
            );
            mode(&d, 0o700);
        }
        assert!(store.get("restic/bob").is_ok());
    }
}
