//! Secrets (LDAP bind passwords, backup repository passwords, service secrets), named in the
//! inventory and resolved on the workstation only when needed: through `pass` (what Picasoft's
//! team uses) or a directory of root-only files. A `Secret` never prints its value.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Where secret values come from (the inventory's `secrets:` section).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum SecretStore {
    /// `pass show PREFIX/NAME`, first line.
    Pass { prefix: String },
    /// One file per secret, `DIR/NAME`, its first line; the directory must not be readable by others.
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
    pub fn resolve(self, file_dir: &Path) -> Result<SecretStore, String> {
        match self.store {
            StoreKind::Pass => Ok(SecretStore::Pass {
                prefix: self.prefix.unwrap_or_default(),
            }),
            StoreKind::Files => match self.dir {
                Some(d) => Ok(SecretStore::Files {
                    dir: file_dir.join(d),
                }),
                None => Err(
                    "`store: files` needs `dir:` (the directory holding one file per secret)"
                        .into(),
                ),
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
    pub fn get(&self, name: &str) -> Result<Secret, String> {
        if !valid_name(name) {
            return Err(format!(
                "`{name}` is not a valid secret name (letters, digits, - _ . /; no leading / or ..)"
            ));
        }
        match self {
            SecretStore::Files { dir } => {
                let path = dir.join(name);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "secret `{name}`: cannot read {}: {e}. Create it (one line, mode 0600) or fix `secrets.dir` in the inventory",
                        path.display()
                    )
                })?;
                first_line(name, &text)
            }
            SecretStore::Pass { prefix } => {
                let entry = format!("{prefix}{name}");
                let out = Command::new("pass")
                    .args(["show", &entry])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| {
                        format!("secret `{name}`: cannot run `pass` ({e}); install pass, or use `secrets: {{store: files, dir: …}}` in the inventory")
                    })?;
                if !out.status.success() {
                    return Err(format!(
                        "secret `{name}`: `pass show {entry}` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                first_line(name, &String::from_utf8_lossy(&out.stdout))
            }
        }
    }
}

fn first_line(name: &str, text: &str) -> Result<Secret, String> {
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("secret `{name}` is empty"));
    }
    Ok(Secret(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_reads_the_first_line_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ldap-admin"), "s3cret-value\nignored\n").unwrap();
        let store = SecretStore::Files {
            dir: dir.path().into(),
        };
        let s = store.get("ldap-admin").unwrap();
        assert_eq!(s.expose(), "s3cret-value");
        assert_eq!(format!("{s:?}"), "(secret)");
        let e = store.get("missing").unwrap_err();
        assert!(e.contains("secret `missing`"), "{e}");
        assert!(store
            .get("../etc/passwd")
            .unwrap_err()
            .contains("not a valid secret name"));
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(store.get("empty").unwrap_err().contains("is empty"));
    }
}
