//! What `picaops apply` hands to playbooks/base/access.yml on every machine when the inventory
//! has an `access:` section: `picaops_access` (the helper binary to install, its job file for
//! this machine, the directory's CA) and `picaops_access_reader_password` (a secret-named
//! variable, so its value is redacted from every plan and report).

use std::path::PathBuf;

use serde_json::json;

use super::manage::host_config;
use crate::inventory::{Inventory, Var};
use crate::secrets::SecretError;

/// Why the access variables cannot be given to playbooks: nothing was contacted.
#[derive(Debug, thiserror::Error)]
pub enum VarsError {
    #[error("cannot find picaops's own path: {0}")]
    OwnPath(#[source] std::io::Error),
    #[error("the access helper {} is missing: it is built with picaops (`cargo build --release` builds both), or set PICAOPS_ACCESS_HELPER", .0.display())]
    NoHelper(PathBuf),
    #[error("cannot read the directory's CA {}: {error}", .path.display())]
    Ca {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The reader's password (`access.directory.reader_password`).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The job file of `machine` cannot be written as JSON.
    #[error("the access job file of {machine}: {error}")]
    JobFile {
        machine: String,
        #[source]
        error: serde_json::Error,
    },
}

/// The `picaops-access` binary to install: `PICAOPS_ACCESS_HELPER`, or the one built beside
/// this `picaops` (cargo builds both).
pub fn helper_binary() -> Result<PathBuf, VarsError> {
    if let Some(p) = std::env::var_os("PICAOPS_ACCESS_HELPER") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(VarsError::OwnPath)?;
    let helper = exe.with_file_name("picaops-access");
    if helper.is_file() {
        Ok(helper)
    } else {
        Err(VarsError::NoHelper(helper))
    }
}

/// Adds the access variables to every machine of `inv` (nothing without an `access:` section).
pub fn add_engine_vars(inv: &mut Inventory) -> Result<(), VarsError> {
    let Some(access) = inv.access.clone() else {
        return Ok(());
    };
    let helper = helper_binary()?;
    let ca = match &access.directory.ca_file {
        Some(f) => Some(std::fs::read_to_string(f).map_err(|error| VarsError::Ca {
            path: f.clone(),
            error,
        })?),
        None => None,
    };
    let password = match &access.directory.reader_password {
        Some(name) => Some(inv.secrets.get(name)?),
        None => None,
    };
    let place = access.place.clone();
    let var = |value: serde_json::Value| Var {
        value,
        place: place.clone(),
    };
    let names: Vec<String> = inv.machines().map(|m| m.name().to_string()).collect();
    for name in names {
        let config =
            serde_json::to_string_pretty(&host_config(&access, &name)).map_err(|error| {
                VarsError::JobFile {
                    machine: name.clone(),
                    error,
                }
            })? + "\n";
        let mut vars = vec![(
            "picaops_access",
            var(json!({
                "helper": helper.display().to_string(),
                "config": config,
                "ca": ca,
                "cache_lifetime": access.cache_lifetime_secs,
            })),
        )];
        if let Some(pw) = &password {
            vars.push(("picaops_access_reader_password", var(json!(pw.expose()))));
        }
        let target = match inv.hosts.get_mut(&name) {
            Some(h) => &mut h.vars,
            None => match inv.vms.get_mut(&name) {
                Some(v) => &mut v.vars,
                None => continue,
            },
        };
        for (k, v) in vars {
            target.insert(k.to_string(), v);
        }
    }
    Ok(())
}
