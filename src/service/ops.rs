//! `picaops service logs | restart`: one service, on its machine, over one connection. Finds
//! the service, renders its project (its secrets, to redact them), connects, and returns the
//! logs or the restart's outcome. Nothing here prints; the CLI renders.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::deploy::{self, ApplyOutput};
use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::Inventory;
use crate::transport::Connector;

/// What to do to the service.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// The last N log lines of each container.
    Logs(u32),
    /// Restart the containers and wait until the service is healthy.
    Restart,
}

pub enum Outcome {
    /// The log lines (secrets redacted).
    Logs(String),
    Restarted(ApplyOutput),
}

/// Why the command could not run: before any contact (`exit_code` 2) or on the machine (1).
#[derive(Debug, thiserror::Error)]
pub enum ServiceOpError {
    #[error("{0}")]
    Usage(String),
    /// The service's project does not render (every problem, with its place).
    #[error("{} error(s) in the services", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
    },
    #[error("{0}")]
    Failed(String),
    /// The inventory gives the service's machine no address.
    #[error(transparent)]
    Unreachable(#[from] crate::inventory::NoAddress),
    /// On the machine (not deployed there, Docker down, the restart failed…).
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
}

impl ServiceOpError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServiceOpError::Failed(_) | ServiceOpError::Deploy(_) => {
                crate::output::EXIT_HOST_FAILED
            }
            _ => crate::output::EXIT_USAGE,
        }
    }
}

/// Runs `op` on service `name`.
pub async fn one(
    inv: &Inventory,
    known_hosts: &Path,
    name: &str,
    op: Op,
) -> Result<Outcome, ServiceOpError> {
    let usage = ServiceOpError::Usage;
    let Some(svc) = inv.services.get(name) else {
        let known: Vec<&str> = inv.services.keys().map(String::as_str).collect();
        let hint = crate::diagnostic::did_you_mean(name, known.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(usage(format!(
            "unknown service `{name}`; {hint}services: {}",
            known.join(", ")
        )));
    };
    if svc.deploy.is_none() {
        return Err(usage(format!(
            "service `{name}` has no `compose:` template: picaops does not manage it"
        )));
    }
    let machine = inv.machine(&svc.host).expect("checked by the inventory");
    let target = crate::inventory::target(machine)?;
    let only: BTreeSet<String> = [target.name.clone()].into();
    let mut sources = Sources::default();
    let projects = super::prepare(inv, Some(&only), &mut sources).map_err(|diagnostics| {
        super::phase::add_sources(&diagnostics, &mut sources);
        ServiceOpError::Invalid {
            diagnostics,
            sources,
        }
    })?;
    let secrets = super::secret_values(&projects);
    let project = projects
        .into_iter()
        .find(|p| p.service == name)
        .ok_or_else(|| usage(format!("service `{name}` was not rendered")))?;
    let failed = |e: String| ServiceOpError::Failed(e);
    let (_connector, transport) =
        Connector::connect_one(known_hosts, Duration::from_secs(10), &target)
            .await
            .map_err(|e| failed(e.to_string()))?;
    let result = match op {
        Op::Logs(tail) => deploy::logs(transport.as_ref(), &project.service, tail, &secrets)
            .await
            .map(Outcome::Logs),
        Op::Restart => deploy::restart(transport.as_ref(), &project, &secrets)
            .await
            .map(Outcome::Restarted),
    };
    let _ = transport.close().await;
    Ok(result?)
}
