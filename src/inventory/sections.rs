//! Checks of the subsystem sections (`services:`, `backups:`, `access.remind:`) against the whole inventory: the
//! references between them and to machines and sites. Their own shapes were checked when they
//! were read (`crate::sections`).

use indexmap::IndexMap;

use super::model::{Inventory, Machine};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::located::Located;
use crate::sections::backup::{BackupJob, Holder};

pub(super) fn check(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    check_backups(inv, diags);
    check_services(inv, diags);
    check_remind(inv, diags);
}

/// `access.remind.machine` is a machine of the inventory (apply installs the timer there).
fn check_remind(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let Some(m) = inv
        .access
        .as_ref()
        .and_then(|a| a.remind.as_ref())
        .and_then(|r| r.machine.as_ref())
    else {
        return;
    };
    if inv.machine(m).is_none() {
        let machines: Vec<&str> = inv.machines().map(|m| m.name()).collect();
        diags.push(unknown(
            "machine",
            m,
            &machines,
            "declare the machine that sends reminders under `hosts:` or `vms:`",
        ));
    }
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
                if backup_data_host(inv, job).map(|m| m.name()) != Some(service.host.as_str()) {
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

/// The machine holding a job's data (through its service when it names one).
pub fn backup_data_host<'a>(inv: &'a Inventory, job: &BackupJob) -> Option<Machine<'a>> {
    match &job.holder {
        Holder::Host(h) => inv.machine(h),
        Holder::Service(s) => inv.machine(&inv.services.get(s.as_str())?.host),
    }
}

/// References and cross-job rules: hosts and services exist, each repository is at the site the
/// data's site backs up to, jobs sharing a repository share its password.
fn check_backups(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let machines: Vec<&str> = inv.machines().map(|m| m.name()).collect();
    let services: Vec<&str> = inv.services.keys().map(String::as_str).collect();
    let mut repositories: IndexMap<String, &BackupJob> = IndexMap::new();
    for job in inv.backups.values() {
        let data = match &job.holder {
            Holder::Host(h) if h.is_empty() => None,
            Holder::Host(h) => {
                let m = inv.machine(h);
                if m.is_none() {
                    diags.push(unknown(
                        "host or VM",
                        h,
                        &machines,
                        "add it under `hosts:` or `vms:`",
                    ));
                }
                m
            }
            Holder::Service(s) => match inv.services.get(s.as_str()) {
                None => {
                    diags.push(unknown("service", s, &services, "add it under `services:`"));
                    None
                }
                // An unknown service host is reported by the inventory's own checks.
                Some(service) => inv.machine(&service.host),
            },
        };
        let repo = &job.repository;
        let repo_machine = inv.machine(&repo.host);
        if repo_machine.is_none() {
            diags.push(unknown(
                "host or VM",
                &repo.host,
                &machines,
                "the repository lives on a machine of the inventory at the other site",
            ));
        }
        if let (Some(data), Some(target)) = (data, repo_machine) {
            check_sites(inv, job, data, target, diags);
        }
        match repositories.get(&repo.key()) {
            Some(first) if first.password.value != job.password.value => diags.push(
                Diagnostic::new(
                    job.password.place.clone(),
                    format!(
                        "jobs `{}` and `{}` share a repository but not its password",
                        first.name, job.name
                    ),
                )
                .note(first.password.place.clone(), format!("`{}` names this secret", first.name))
                .help("a repository has one password: name the same secret in both jobs, or give one job its own `path:`"),
            ),
            Some(_) => {}
            None => {
                repositories.insert(repo.key(), job);
            }
        }
    }
}

fn check_sites(
    inv: &Inventory,
    job: &BackupJob,
    data: Machine<'_>,
    target: Machine<'_>,
    diags: &mut Vec<Diagnostic>,
) {
    let (Some(data_site), Some(repo_site)) = (inv.site_of(data), inv.site_of(target)) else {
        return; // an unknown site is reported by the inventory's own checks
    };
    let place = job.repository.host.place.clone();
    if data_site.name == repo_site.name {
        diags.push(
            Diagnostic::new(
                place,
                format!(
                    "job `{}` keeps its backup on the same site as its data ({})",
                    job.name, data_site.name
                ),
            )
            .help(format!(
                "losing the site would lose both: put the repository on a machine at {}",
                data_site
                    .backs_up_to
                    .as_ref()
                    .map(|s| format!("`{}` (where {} backs up to)", s.value, data_site.name))
                    .unwrap_or_else(|| "the other site".into())
            )),
        );
        return;
    }
    match &data_site.backs_up_to {
        Some(to) if to.value == repo_site.name => {}
        Some(to) => diags.push(
            Diagnostic::new(
                place,
                format!(
                    "job `{}` sends {}'s data to {}, but {} backs up to {}",
                    job.name, data_site.name, repo_site.name, data_site.name, to.value
                ),
            )
            .note(to.place.clone(), "the site's backup target is set here")
            .help(format!("put the repository on a machine at {}", to.value)),
        ),
        None => diags.push(
            Diagnostic::new(
                place,
                format!(
                    "job `{}` backs up {}'s data but site {} has no `backs_up_to:`",
                    job.name, data_site.name, data_site.name
                ),
            )
            .note(data_site.place.clone(), "the site is declared here")
            .help(format!(
                "add `backs_up_to: {}` to site {}",
                repo_site.name, data_site.name
            )),
        ),
    }
}

fn unknown(kind: &str, name: &Located<String>, known: &[&str], what_to_do: &str) -> Diagnostic {
    let mut help = match did_you_mean(name, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    };
    if known.is_empty() {
        help.push_str(what_to_do);
    } else {
        help.push_str(&format!("known: {}", known.join(", ")));
    }
    Diagnostic::new(
        name.place.clone(),
        format!("unknown {kind} `{}`", name.value),
    )
    .help(help)
}
