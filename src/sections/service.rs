//! The inventory's description of one service, as written (`ServiceDoc`, with places) and as
//! checked (`Deploy`): its Compose template, variables, environment, secrets by name, data
//! directories, health check and backup job.
//!
//! Only what can be checked from the YAML alone is checked here (names, paths, shapes); rendering
//! the template, image tags, ports and secret values are the job of `crate::service::render`, right before
//! a plan. Nothing here reads a template, a secret or contacts a host.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{err, located};
use crate::diagnostic::{Diagnostic, Place};
use crate::located::{Located, Var};
use crate::values::valid_env_name;
use crate::yaml::{place_of, Name};

/// How long apply waits for a service to become healthy when the inventory does not say.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 120;

/// One entry under `services:`, as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    host: Spanned<String>,
    /// Where it comes back if its site is lost (a machine at another site).
    recover_to: Option<Spanned<String>>,
    description: Option<String>,
    /// The Compose file template (minijinja), relative to the inventory file.
    compose: Option<Spanned<String>>,
    #[serde(default)]
    vars: IndexMap<Name, Spanned<serde_json::Value>>,
    #[serde(default)]
    env: IndexMap<Name, Spanned<serde_json::Value>>,
    #[serde(default)]
    secrets: IndexMap<Name, Spanned<String>>,
    #[serde(default)]
    secret_files: IndexMap<Name, Spanned<String>>,
    #[serde(default)]
    data: Vec<Spanned<String>>,
    health: Option<Spanned<HealthDoc>>,
    backup: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HealthDoc {
    /// An HTTP probe run on the service's machine, on top of the Compose healthchecks.
    http: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// What picaops deploys for a service that has a Compose template.
#[derive(Clone, Debug, Serialize)]
pub struct Deploy {
    /// The template's absolute path on the workstation.
    pub compose: Located<PathBuf>,
    /// The service's own variables (above the machine's).
    pub vars: IndexMap<String, Var>,
    /// `NAME: value` written to `service.env` in the project directory.
    pub env: IndexMap<String, Located<String>>,
    /// `NAME: secret name` written to the root-only `secrets.env`.
    pub secrets: IndexMap<String, Located<String>>,
    /// `file: secret name` written to the root-only `secrets/file`.
    pub secret_files: IndexMap<String, Located<String>>,
    /// Data directories on the machine: created by apply, never deleted by picaops.
    pub data: Vec<Located<String>>,
    pub health: Health,
    /// The backup job keeping this service's data (see `backups:`).
    pub backup: Option<Located<String>>,
}

/// When a service counts as up after `docker compose up`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Health {
    /// Every container running, and healthy when its Compose file gives it a healthcheck; with
    /// `http`, that URL must also answer 2xx from the machine.
    pub http: Option<String>,
    /// Seconds to wait before calling the deployment failed (and rolling back).
    pub timeout: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            http: None,
            timeout: DEFAULT_HEALTH_TIMEOUT,
        }
    }
}

/// Why a value cannot go into a Compose env file written as `NAME='value'`, if it cannot.
pub fn env_value_problem(value: &str) -> Option<&'static str> {
    if value.contains('\n') || value.contains('\r') {
        Some("it spans several lines")
    } else if value.contains('\'') {
        Some("it contains a single quote (')")
    } else if value.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

/// File names under `secrets/`: plain words, no directories.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A service read from its file: the parts every service has, and what picaops deploys.
pub struct Read {
    pub host: Located<String>,
    pub recover_to: Option<Located<String>>,
    pub description: Option<String>,
    pub deploy: Option<Deploy>,
}

impl ServiceDoc {
    /// Checks every value that can be checked alone; always returns what it could read.
    pub fn read(self, file: &Path, name: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> Read {
        let service = &name.value;
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut deploy_keys: Vec<Place> = Vec::new();
        let mut env = IndexMap::new();
        for (key, value) in self.env {
            deploy_keys.push(place_of(file, &key.0));
            check_env_name(file, &key.0, diags);
            let text = match &value.value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    diags.push(err(
                        file,
                        &value,
                        format!("`{}` must be one value (text, number or boolean)", key.0.value),
                        "an environment variable holds text: quote it, or write the list as text (\"a,b\")",
                    ));
                    continue;
                }
            };
            if let Some(why) = env_value_problem(&text) {
                diags.push(err(
                    file,
                    &value,
                    format!("the value of `{}` cannot go into an env file: {why}", key.0.value),
                    "Compose env files hold one line per variable, single-quoted; put such a value in a file \
                     (a template or `secret_files:`) and mount it",
                ));
            }
            env.insert(
                key.0.value.clone(),
                Located {
                    value: text,
                    place: place_of(file, &value),
                },
            );
        }
        let mut secrets = IndexMap::new();
        for (key, value) in self.secrets {
            deploy_keys.push(place_of(file, &key.0));
            check_env_name(file, &key.0, diags);
            check_secret_name(file, &value, diags);
            if env.contains_key(&key.0.value) {
                diags.push(err(
                    file,
                    &key.0,
                    format!("`{}` is both in `env:` and in `secrets:`", key.0.value),
                    "keep it in one place: `secrets:` when the value must stay out of git and plans",
                ));
            }
            secrets.insert(key.0.value, located(file, value));
        }
        let mut secret_files = IndexMap::new();
        for (key, value) in self.secret_files {
            deploy_keys.push(place_of(file, &key.0));
            if !valid_file_name(&key.0.value) {
                diags.push(err(
                    file,
                    &key.0,
                    format!("`{}` is not a valid secret file name", key.0.value),
                    "a plain file name (letters, digits, - _ .), written under secrets/ in the project directory",
                ));
            }
            check_secret_name(file, &value, diags);
            secret_files.insert(key.0.value, located(file, value));
        }
        for d in &self.data {
            deploy_keys.push(place_of(file, d));
            let p = d.value.as_str();
            if !p.starts_with('/') || p.split('/').any(|part| part == "..") || p == "/" {
                diags.push(err(
                    file,
                    d,
                    format!("data directory `{p}` is not an absolute path below /"),
                    "write the full path on the machine, e.g. /DATA/docker/mattermost/data",
                ));
            }
        }
        let health = match self.health {
            None => Health::default(),
            Some(h) => {
                deploy_keys.push(place_of(file, &h));
                let h = h.value;
                let timeout = match &h.timeout {
                    None => DEFAULT_HEALTH_TIMEOUT,
                    Some(t) => match super::schedule::parse_duration(&t.value) {
                        Ok(0) | Err(_) => {
                            diags.push(err(
                                file,
                                t,
                                format!("health timeout `{}` is not a duration above 0", t.value),
                                "write e.g. `90s`, `2min` or `10min`: how long a new version may take to become healthy",
                            ));
                            DEFAULT_HEALTH_TIMEOUT
                        }
                        Ok(s) => s,
                    },
                };
                if let Some(url) = &h.http {
                    if !(url.value.starts_with("http://") || url.value.starts_with("https://"))
                        || url.value.chars().any(|c| c.is_whitespace() || c == '\'')
                    {
                        diags.push(err(
                            file,
                            url,
                            format!("health URL `{}` is not an http(s) URL", url.value),
                            "write the URL the machine itself can probe, e.g. http://127.0.0.1:8065/api/v4/system/ping",
                        ));
                    }
                }
                Health {
                    http: h.http.map(|u| u.value),
                    timeout,
                }
            }
        };
        let vars = self
            .vars
            .into_iter()
            .map(|(k, v)| {
                let place = place_of(file, &k.0);
                deploy_keys.push(place.clone());
                if !valid_var(&k.0.value) {
                    diags.push(Diagnostic::new(place.clone(), format!("variable name `{}` is not valid", k.0.value))
                        .help("variable names are letters, digits and `_`, not starting with a digit (templates use them as identifiers)"));
                }
                (
                    k.0.value,
                    Var {
                        value: v.value,
                        place,
                    },
                )
            })
            .collect();
        if let Some(b) = &self.backup {
            deploy_keys.push(place_of(file, b));
        }
        let deploy = match self.compose {
            Some(c) => {
                let path = normalize(&dir.join(&c.value));
                if !path.is_file() {
                    diags.push(err(
                        file,
                        &c,
                        format!("the Compose template `{}` does not exist ({})", c.value, path.display()),
                        "give the path of the service's Compose file template, relative to this inventory file",
                    ));
                }
                Some(Deploy {
                    compose: Located {
                        value: path,
                        place: place_of(file, &c),
                    },
                    vars,
                    env,
                    secrets,
                    secret_files,
                    data: self.data.into_iter().map(|d| located(file, d)).collect(),
                    health,
                    backup: self.backup.map(|b| located(file, b)),
                })
            }
            None => {
                if let Some(first) = deploy_keys.first() {
                    diags.push(
                        Diagnostic::new(first.clone(), format!("service `{service}` has deployment settings but no `compose:` template"))
                            .help("add `compose: services/NAME/compose.yml.j2` (relative to this file), or remove these settings: \
                                   a service without `compose:` is only declared, never deployed"),
                    );
                }
                None
            }
        };
        Read {
            host: located(file, self.host),
            recover_to: self.recover_to.map(|r| located(file, r)),
            description: self.description,
            deploy,
        }
    }
}

/// `a/b/../c` → `a/c`, lexically (for messages that name the file as people would).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn valid_var(name: &str) -> bool {
    valid_env_name(name)
}

fn check_env_name(file: &Path, key: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if !valid_env_name(&key.value) {
        diags.push(err(
            file,
            key,
            format!("`{}` is not a valid environment variable name", key.value),
            "letters, digits and `_`, not starting with a digit (e.g. MM_SQLSETTINGS_DATASOURCE)",
        ));
    }
}

fn check_secret_name(file: &Path, name: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if !crate::secrets::valid_name(&name.value) {
        diags.push(err(
            file,
            name,
            "this must be the NAME of a secret, not its value".into(),
            "write the name the secret is stored under (letters, digits, `-`, `_`, `.`, `/`), e.g. `mattermost/db-password`; \
             the value stays in the team's password store",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_values() {
        assert!(valid_env_name("MM_SQL_1"));
        assert!(valid_env_name("_X"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert_eq!(env_value_problem("plain $value"), None);
        assert!(env_value_problem("it's").is_some());
        assert!(env_value_problem("a\nb").is_some());
    }

    #[test]
    fn secret_file_names() {
        assert!(valid_file_name("db_password"));
        assert!(valid_file_name("tls.key"));
        assert!(!valid_file_name("../x"));
        assert!(!valid_file_name(".hidden"));
        assert!(!valid_file_name("a/b"));
    }
}
