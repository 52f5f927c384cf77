//! Checks of the subsystem sections (`services:`, `backups:`) against the whole inventory: the
//! references between them and to machines and sites. Their own shapes were checked when they
//! were read (`crate::sections`).

use super::model::Inventory;
use crate::diagnostic::{did_you_mean, Diagnostic};

pub(super) fn check(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    crate::backup::config::check(inv, diags);
    check_services(inv, diags);
}

/// Checks that need the whole inventory: a service's backup job exists and backs up this service.
pub(super) fn check_services(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let jobs: Vec<&str> = inv.backups.keys().map(String::as_str).collect();
    for service in inv.services.values() {
        let Some(backup) = service.deploy.as_ref().and_then(|d| d.backup.as_ref()) else {
            continue;
        };
        match inv.backups.get(backup.as_str()) {
            None => {
                let mut help = match did_you_mean(backup, jobs.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                help.push_str("name a job declared under `backups:`");
                diags.push(
                    Diagnostic::new(
                        backup.place.clone(),
                        format!("unknown backup job `{}`", backup.value),
                    )
                    .help(help),
                );
            }
            Some(job) => {
                if crate::backup::config::data_host(inv, job).map(|m| m.name())
                    != Some(service.host.as_str())
                {
                    diags.push(
                        Diagnostic::new(
                            backup.place.clone(),
                            format!(
                                "backup job `{}` does not run on `{}`, where service `{}` keeps its data",
                                job.name, service.host.value, service.name
                            ),
                        )
                        .note(job.place.clone(), "the job is declared here")
                        .help(format!("give the job `service: {}`", service.name)),
                    );
                }
            }
        }
    }
}
