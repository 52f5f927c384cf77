//! Where a reminder run gets its settings: from the inventory on the workstation, or from the
//! remind file `apply` installs on the machine `access.remind.machine` names (with its
//! root-only secret files, its service and its timer: playbooks/base/remind.yml). The file
//! holds no secret; the passwords and the webhook URL sit beside it in files only root reads,
//! and reach the run's memory only (never a command line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::directory::{read_ca, Endpoint};
use super::mail::{Relay, SendError, Webhook};
use super::remind::{Policy, Settings, HOST_RECORD};
use crate::inventory::{Inventory, Var};
use crate::secrets::{Secret, SecretError};
use crate::sections::access::Access;
use crate::sections::remind::Remind;

/// On the timer's machine.
pub const DIR: &str = "/etc/picaops/remind";
pub const FILE: &str = "/etc/picaops/remind/remind.json";
pub const SERVICE: &str = "picaops-access-remind.service";
pub const TIMER: &str = "picaops-access-remind.timer";
const SECRET_FILES: [(&str, &str); 3] = [
    ("reader", "/etc/picaops/remind/reader.secret"),
    ("smtp", "/etc/picaops/remind/smtp.secret"),
    ("webhook", "/etc/picaops/remind/webhook.secret"),
];
const DIRECTORY_CA: &str = "/etc/picaops/remind/directory-ca.pem";
const SMTP_CA: &str = "/etc/picaops/remind/smtp-ca.pem";

fn secret_file(what: &str) -> String {
    SECRET_FILES
        .iter()
        .find(|(w, _)| *w == what)
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

/// Why a run's settings cannot be had: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "the inventory's `access:` has no `remind:` block: add one (see README, \"Reminders\")"
    )]
    NotConfigured,
    #[error("cannot read the remind file {}: {detail}", .path.display())]
    File { path: PathBuf, detail: String },
    /// A secret of the store (workstation), named, never its value.
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Directory(#[from] super::directory::DirectoryError),
    #[error("{0}")]
    Send(#[from] SendError),
}

/// The remind file: what the timer's run reads (`picaops access remind --config FILE`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemindFile {
    pub directory: DirectoryPart,
    pub policy: Policy,
    pub smtp: SmtpPart,
    /// File holding the webhook's URL (absent: no digest).
    pub webhook_file: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_plain_http: bool,
    pub record: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirectoryPart {
    pub url: String,
    pub people: String,
    pub hosts_attribute: String,
    pub tls_name: Option<String>,
    pub ca_file: Option<String>,
    pub bind_dn: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpPart {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub user: String,
    pub password_file: String,
    /// The secret's name in the inventory, for messages.
    pub password_secret: String,
    pub ca_file: Option<String>,
}

fn policy(access: &Access, remind: &Remind) -> Policy {
    Policy {
        thresholds: remind.thresholds.clone(),
        semester_starts: access.renewal.semester_starts.clone(),
        grace_days: access.renewal.grace_days,
    }
}

fn endpoint(
    url: &str,
    people: &str,
    attr: &str,
    tls: Option<&str>,
    ca: Option<Vec<u8>>,
) -> Endpoint {
    Endpoint {
        url: url.into(),
        ca_pem: ca,
        people: people.into(),
        hosts_attribute: attr.into(),
        timeout: Duration::from_secs(10),
        tls_name: tls.map(String::from),
    }
}

/// The remind file `apply` installs on the timer's machine.
pub fn remind_file(access: &Access, remind: &Remind) -> RemindFile {
    let d = &access.directory;
    RemindFile {
        directory: DirectoryPart {
            url: d.url.clone(),
            people: d.people.clone(),
            hosts_attribute: d.hosts_attribute.clone(),
            tls_name: d.tls_name.clone(),
            ca_file: d.ca_file.as_ref().map(|_| DIRECTORY_CA.into()),
            bind_dn: d.reader_dn.clone().or_else(|| Some(d.admin_dn.clone())),
            password_file: Some(secret_file("reader")),
        },
        policy: policy(access, remind),
        smtp: SmtpPart {
            host: remind.smtp.host.clone(),
            port: remind.smtp.port,
            from: remind.smtp.from.clone(),
            user: remind.smtp.user.clone(),
            password_file: secret_file("smtp"),
            password_secret: remind.smtp.password.clone(),
            ca_file: remind.smtp.ca_file.as_ref().map(|_| SMTP_CA.into()),
        },
        webhook_file: remind
            .mattermost_webhook
            .as_ref()
            .map(|_| secret_file("webhook")),
        webhook_secret: remind.mattermost_webhook.clone(),
        webhook_plain_http: remind.webhook_plain_http,
        record: HOST_RECORD.into(),
    }
}

/// The first line of a root-only file.
fn read_secret(path: &str) -> Result<Secret, SettingsError> {
    let bytes =
        super::host::read_private(Path::new(path), 64 << 10).map_err(|e| SettingsError::File {
            path: path.into(),
            detail: format!("{e} (`picaops apply` installs it)"),
        })?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(Secret::from_line(text.lines().next().unwrap_or("")))
}

/// A run's settings from the remind file at `path` (on the timer's machine).
pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
    let bad = |detail: String| SettingsError::File {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = super::host::read_private(path, 1 << 20).map_err(|e| bad(e.to_string()))?;
    let f: RemindFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let d = &f.directory;
    let ca = read_ca(d.ca_file.as_deref().map(Path::new))?;
    let bind = match (&d.bind_dn, &d.password_file) {
        (Some(dn), Some(p)) => Some((dn.clone(), read_secret(p)?)),
        _ => None,
    };
    let webhook = match &f.webhook_file {
        None => None,
        Some(p) => Some(Webhook::new(
            read_secret(p)?,
            f.webhook_secret.as_deref().unwrap_or("webhook"),
            f.webhook_plain_http,
        )?),
    };
    Ok(Settings {
        endpoint: endpoint(
            &d.url,
            &d.people,
            &d.hosts_attribute,
            d.tls_name.as_deref(),
            ca,
        ),
        bind,
        policy: f.policy.clone(),
        relay: Relay {
            host: f.smtp.host.clone(),
            port: f.smtp.port,
            from: f.smtp.from.clone(),
            user: f.smtp.user.clone(),
            password: read_secret(&f.smtp.password_file)?,
            ca_pem: read_ca(f.smtp.ca_file.as_deref().map(Path::new))?,
        },
        webhook,
        record: PathBuf::from(&f.record),
        warnings: Vec::new(),
    })
}

/// Where a workstation run keeps its record: picaops's state directory
/// (`$XDG_STATE_HOME/picaops`, else `~/.local/state/picaops`), `remind/sent.json`, beside the
/// lab's state.
pub fn workstation_record() -> PathBuf {
    crate::inventory::failed::state_dir()
        .unwrap_or_else(|_| PathBuf::from("/root/.local/state/picaops"))
        .join("remind/sent.json")
}

/// A run's settings from the inventory (on the workstation), secrets from its store.
pub fn from_inventory(inv: &Inventory, access: &Access) -> Result<Settings, SettingsError> {
    let remind = access.remind.as_ref().ok_or(SettingsError::NotConfigured)?;
    let d = &access.directory;
    let (dn, pw) = match (&d.reader_dn, &d.reader_password) {
        (Some(dn), Some(pw)) => (dn.clone(), pw.clone()),
        _ => (d.admin_dn.clone(), d.admin_password.clone()),
    };
    let webhook = match &remind.mattermost_webhook {
        None => None,
        Some(name) => Some(Webhook::new(
            inv.secrets.get(name)?,
            name,
            remind.webhook_plain_http,
        )?),
    };
    let mut warnings = Vec::new();
    if let Some(m) = &remind.machine {
        warnings.push(format!(
            "{m}'s timer keeps its own record of what it sent: people reminded from here may be reminded again by {m} (`--dry-run` only looks)"
        ));
    }
    Ok(Settings {
        endpoint: endpoint(
            &d.url,
            &d.people,
            &d.hosts_attribute,
            d.tls_name.as_deref(),
            read_ca(d.ca_file.as_deref())?,
        ),
        bind: Some((dn, inv.secrets.get(&pw)?)),
        policy: policy(access, remind),
        relay: Relay {
            host: remind.smtp.host.clone(),
            port: remind.smtp.port,
            from: remind.smtp.from.clone(),
            user: remind.smtp.user.clone(),
            password: inv.secrets.get(&remind.smtp.password)?,
            ca_pem: read_ca(remind.smtp.ca_file.as_deref())?,
        },
        webhook,
        record: workstation_record(),
        warnings,
    })
}

/// The service and the timer (`%` is a specifier in unit files).
pub fn units(remind: &Remind, picaops: &str) -> [(String, String); 2] {
    let service = format!(
        "# Generated by picaops from the inventory's `access.remind:`: edit the inventory, not this file.\n\
         [Unit]\n\
         Description=picaops: mail the people whose access ends soon\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={picaops} access remind --config {FILE}\n\
         Environment=NO_COLOR=1\n\
         UMask=0077\n\
         TimeoutStartSec=15min\n"
    );
    let timer = format!(
        "# Generated by picaops from the inventory's `access.remind:`: edit the inventory, not this file.\n\
         [Unit]\n\
         Description=picaops: reminders before access ends\n\
         \n\
         [Timer]\n\
         OnCalendar={}\n\
         # A run missed while the machine was off happens at boot.\n\
         Persistent=true\n\
         RandomizedDelaySec=10min\n\
         Unit={SERVICE}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        remind.schedule.replace('%', "%%")
    );
    [(SERVICE.into(), service), (TIMER.into(), timer)]
}

/// Why apply cannot give playbooks/base/remind.yml its variables: nothing was contacted.
#[derive(Debug, thiserror::Error)]
pub enum VarsError {
    #[error("access.remind: {0}")]
    Secret(#[from] SecretError),
    #[error("access.remind: cannot read {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("access.remind: {0}")]
    Binary(#[from] crate::backup::deploy::DeployError),
}

/// Adds `picaops_remind` (binary, remind file, CAs, units) and `picaops_remind_secrets` (whose
/// name makes every plan redact them) to the machine `access.remind.machine` names.
pub fn add_engine_vars(inv: &mut Inventory) -> Result<(), VarsError> {
    let Some(access) = inv.access.clone() else {
        return Ok(());
    };
    let Some(remind) = access.remind.clone() else {
        return Ok(());
    };
    let Some(machine) = remind.machine.clone() else {
        return Ok(());
    };
    let read = |p: &Option<PathBuf>| -> Result<Option<String>, VarsError> {
        p.as_ref()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|error| VarsError::Read {
                    path: path.clone(),
                    error,
                })
            })
            .transpose()
    };
    let d = &access.directory;
    let reader = d.reader_password.as_ref().unwrap_or(&d.admin_password);
    let mut secrets = BTreeMap::new();
    secrets.insert("reader", inv.secrets.get(reader)?);
    secrets.insert("smtp", inv.secrets.get(&remind.smtp.password)?);
    if let Some(w) = &remind.mattermost_webhook {
        secrets.insert("webhook", inv.secrets.get(w)?);
    }
    let file = remind_file(&access, &remind);
    let [service, timer] = units(&remind, crate::backup::units::HOST_PICAOPS);
    let value = json!({
        "binary": crate::backup::deploy::host_binary()?.display().to_string(),
        "picaops": crate::backup::units::HOST_PICAOPS,
        "dir": DIR,
        "file": FILE,
        "config": serde_json::to_string_pretty(&file).unwrap_or_default() + "\n",
        "directory_ca": read(&d.ca_file)?,
        "directory_ca_file": DIRECTORY_CA,
        "smtp_ca": read(&remind.smtp.ca_file)?,
        "smtp_ca_file": SMTP_CA,
        "secret_files": secrets.keys().map(|k| json!({"name": k, "path": secret_file(k)})).collect::<Vec<_>>(),
        "record_dir": Path::new(HOST_RECORD).parent().map(|p| p.display().to_string()),
        "service": {"name": service.0, "content": service.1},
        "timer": {"name": timer.0, "content": timer.1},
    });
    let values: serde_json::Map<String, serde_json::Value> = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.expose())))
        .collect();
    let place = remind.place.clone();
    let target = match inv.hosts.get_mut(machine.as_str()) {
        Some(h) => &mut h.vars,
        None => match inv.vms.get_mut(machine.as_str()) {
            Some(v) => &mut v.vars,
            None => return Ok(()), // reported by the inventory check
        },
    };
    target.insert(
        "picaops_remind".into(),
        Var {
            value,
            place: place.clone(),
        },
    );
    target.insert(
        "picaops_remind_secrets".into(),
        Var {
            value: serde_json::Value::Object(values),
            place,
        },
    );
    Ok(())
}
