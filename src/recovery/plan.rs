//! The plan of a site's recovery: which VM comes back on which hypervisor, which service on
//! which machine with which backup job's data, and what a person must still do by hand. Reads
//! only the inventory (and renders the services at their new place); contacts nothing.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::diagnostic::{Diagnostic, Place, Sources};
use crate::inventory::{parse_size, HypervisorKind, Inventory, Machine};
use crate::located::Located;
use crate::sections::backup::{BackupJob, Holder};
use crate::sections::recovery::{Recovery, FILE_NAME};

/// A VM of the lost site and the hypervisor it comes back on.
#[derive(Clone, Debug, Serialize)]
pub struct VmMove {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub vcpus: u32,
    pub memory: u64,
    pub disk: u64,
}

/// A service of the lost site, the machine it comes back on, and the job whose data it gets.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceMove {
    pub service: String,
    pub from: String,
    pub to: String,
    /// It runs on a VM that moves with it (the machine keeps its name).
    pub with_vm: bool,
    /// The backup job its data comes back from (none: it keeps no data).
    pub job: Option<String>,
    /// The data directories it gets back.
    pub data: Vec<String>,
    /// The dumps loaded into its database containers.
    pub dumps: Vec<String>,
}

/// The LDAP directory (`access.directory`), lost with the site, and where it comes back.
#[derive(Clone, Debug, Serialize)]
pub struct DirectoryMove {
    /// The backup job that keeps it (its machine's job with an `ldap` dump).
    pub job: String,
    pub from: String,
    pub to: String,
    /// The URL every host's access helper uses afterwards (the certificate is still checked
    /// against `tls_name`, the name it has at home).
    pub url: String,
    pub tls_name: String,
    /// The files restored with it (its TLS certificate and key, slapd's settings).
    pub paths: Vec<String>,
}

/// Everything `site recover SITE` will do, in order.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryPlan {
    pub site: String,
    /// Where its VMs and services come back.
    pub to_site: String,
    pub vms: Vec<VmMove>,
    pub services: Vec<ServiceMove>,
    /// The directory, when it was at the lost site: it comes back first.
    pub directory: Option<DirectoryMove>,
    /// What picaops cannot do and a person must (DNS, addresses on the lost site's network).
    pub manual: Vec<String>,
    /// Data of the lost site that this recovery does not bring back (say how to).
    pub warnings: Vec<String>,
}

impl RecoveryPlan {
    /// The `recovery:` section this plan puts into effect (for `recovery.yml`).
    pub fn recovery(&self, inv: &Inventory, since: &str) -> Recovery {
        let place = Place::file(inv.dir.join(FILE_NAME));
        let at = |v: &str| Located {
            value: v.to_string(),
            place: place.clone(),
        };
        Recovery {
            lost: at(&self.site),
            since: at(since),
            vms: self.vms.iter().map(|m| (m.vm.clone(), at(&m.to))).collect(),
            services: self
                .services
                .iter()
                .filter(|m| !m.with_vm)
                .map(|m| (m.service.clone(), at(&m.to)))
                .collect(),
            directory: self.directory.as_ref().map(|d| at(&d.to)),
            place,
        }
    }

    /// The machines the recovery creates, converges or deploys on.
    pub fn machines(&self) -> BTreeSet<String> {
        self.vms
            .iter()
            .map(|m| m.vm.clone())
            .chain(self.services.iter().map(|m| m.to.clone()))
            .chain(self.directory.iter().map(|d| d.to.clone()))
            .collect()
    }
}

/// The plan of recovering `site` at its recovery site, or every reason it cannot be done
/// (nothing was contacted). `sources` receives the template texts the service checks read.
pub fn plan(
    inv: &Inventory,
    site: &str,
    sources: &mut Sources,
) -> Result<RecoveryPlan, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let Some(lost) = inv.sites.get(site) else {
        let known: Vec<&str> = inv.sites.keys().map(String::as_str).collect();
        return Err(vec![Diagnostic::new(
            Place::file(&inv.dir),
            format!(
                "the inventory has no site `{site}` (sites: {})",
                known.join(", ")
            ),
        )]);
    };
    let Some(to_site) = lost.recovery.site.as_ref().or(lost.backs_up_to.as_ref()) else {
        return Err(vec![Diagnostic::new(
            lost.place.clone(),
            format!("site `{site}` says neither where its backups go nor where it comes back"),
        )
        .help(
            "give it `backs_up_to: OTHER_SITE` (or `recovery: {site: OTHER_SITE}`)",
        )]);
    };
    let to_site = to_site.value.clone();
    let at_site = |m: Machine<'_>| inv.site_of(m).is_some_and(|s| s.name == site);

    // VMs: each onto its recover_to, the site's recovery hypervisor, or the first hypervisor of
    // the recovery site (in inventory order) with room left.
    let hypervisors: Vec<&str> = inv
        .hosts
        .values()
        .filter(|h| h.site.value == to_site && h.hypervisor != HypervisorKind::None)
        .map(|h| h.name.as_str())
        .collect();
    let mut used: Vec<(String, Need)> = hypervisors
        .iter()
        .map(|h| {
            let need = inv
                .vms
                .values()
                .filter(|v| v.host.as_str() == *h)
                .map(need_of)
                .fold(Need::default(), Need::add);
            (h.to_string(), need)
        })
        .collect();
    let mut vms = Vec::new();
    for vm in inv.vms.values().filter(|v| at_site(Machine::Vm(v))) {
        let need = need_of(vm);
        let chosen = vm
            .recover_to
            .as_ref()
            .or(lost.recovery.hypervisor.as_ref())
            .map(|h| h.value.clone())
            .or_else(|| {
                used.iter()
                    .find(|(h, u)| fits(inv, h, &u.add(need)))
                    .or(used.first())
                    .map(|(h, _)| h.clone())
            });
        let Some(to) = chosen else {
            diags.push(
                Diagnostic::new(
                    vm.place.clone(),
                    format!(
                        "VM `{}` has nowhere to come back: site `{to_site}` has no hypervisor",
                        vm.name
                    ),
                )
                .help("give it `recover_to: HYPERVISOR` or add a hypervisor to the recovery site"),
            );
            continue;
        };
        match used.iter_mut().find(|(h, _)| *h == to) {
            Some((_, u)) => *u = u.add(need),
            None => used.push((to.clone(), need)),
        }
        vms.push(VmMove {
            vm: vm.name.clone(),
            from: vm.host.value.clone(),
            to,
            vcpus: need.vcpus,
            memory: need.memory,
            disk: need.disk,
        });
    }
    for (host, total) in &used {
        if vms.iter().any(|m| m.to == *host) {
            check_room(inv, host, total, &vms, &mut diags);
        }
    }

    // Services: with their VM when it moves, else onto recover_to, the site's recovery host, or
    // the first host of the recovery site sharing a group with the lost one.
    let moved_vms: BTreeSet<&str> = vms.iter().map(|m| m.vm.as_str()).collect();
    let mut services = Vec::new();
    for service in inv.services.values() {
        let Some(machine) = inv.machine(&service.host) else {
            continue;
        };
        if !at_site(machine) {
            continue;
        }
        let with_vm = moved_vms.contains(service.host.as_str());
        let to = if with_vm {
            Some(service.host.value.clone())
        } else {
            service
                .recover_to
                .as_ref()
                .or(lost.recovery.host.as_ref())
                .map(|h| h.value.clone())
                .or_else(|| sibling_host(inv, machine, &to_site))
        };
        let Some(to) = to else {
            diags.push(
                Diagnostic::new(
                    service.place.clone(),
                    format!(
                        "service `{}` has nowhere to come back: no host of site `{to_site}` shares a group with `{}`",
                        service.name, service.host.value
                    ),
                )
                .help("give it `recover_to: MACHINE` (a machine of the recovery site), or the site `recovery: {host: MACHINE}`"),
            );
            continue;
        };
        let data: Vec<String> = service
            .deploy
            .as_ref()
            .map(|d| d.data.iter().map(|p| p.value.clone()).collect())
            .unwrap_or_default();
        let job = job_of(
            inv,
            &service.name,
            service.deploy.as_ref().and_then(|d| d.backup.as_ref()),
        );
        match job {
            Some(job) => {
                let repo_site = repository_site(inv, job);
                if repo_site != to_site {
                    diags.push(
                        Diagnostic::new(
                            job.repository.place.clone(),
                            format!(
                                "backup job `{}` of service `{}` keeps its repository at site `{repo_site}`, not at `{to_site}` where the service comes back",
                                job.name, service.name
                            ),
                        )
                        .help(format!("put the job's repository on a machine of `{to_site}` (the site `{site}` backs up to)")),
                    );
                }
            }
            None if !data.is_empty() => diags.push(
                Diagnostic::new(
                    service.place.clone(),
                    format!(
                        "service `{}` keeps data ({}) that no backup job covers: it could not come back",
                        service.name,
                        data.join(", ")
                    ),
                )
                .help(format!(
                    "add a job under `backups:` with `service: {}` and a repository at `{to_site}`, and `backup: JOB` on the service",
                    service.name
                )),
            ),
            None => {}
        }
        services.push(ServiceMove {
            service: service.name.clone(),
            from: service.host.value.clone(),
            to,
            with_vm,
            job: job.map(|j| j.name.clone()),
            data: job
                .map(|j| j.paths.iter().map(|p| p.value.clone()).collect())
                .unwrap_or(data),
            dumps: job
                .map(|j| j.dumps.iter().map(|d| d.file_name()).collect())
                .unwrap_or_default(),
        });
    }

    // Jobs of the lost site's hosts themselves (not of a service): not brought back here.
    let mut warnings = Vec::new();
    let directory_job = inv
        .access
        .as_ref()
        .and_then(|a| a.directory.backup.as_ref());
    for job in inv.backups.values() {
        if directory_job.is_some_and(|b| b.value == job.name) {
            continue;
        }
        if let Holder::Host(h) = &job.holder {
            if inv.machine(h).is_some_and(&at_site) && !moved_vms.contains(h.as_str()) {
                warnings.push(format!(
                    "backup job `{}` keeps files of host `{}` itself, not of a service: `site recover` does not bring them back; \
                     restore them where they are needed with `picaops backup restore {} --host MACHINE`",
                    job.name, h.value, job.name
                ));
            }
        }
    }
    let mut manual = Vec::new();
    for m in &vms {
        if inv
            .vms
            .get(&m.vm)
            .is_some_and(|v| v.ssh.address.is_some() && v.ssh.jump.is_none())
        {
            manual.push(format!(
                "VM `{}` has a fixed `address:` on the lost site's network: give it its address at `{to_site}`",
                m.vm
            ));
        }
    }
    for m in services.iter().filter(|m| !m.with_vm) {
        manual.push(format!(
            "point the public names of service `{}` at `{}` (DNS records, reverse proxy) if they named `{}`",
            m.service, m.to, m.from
        ));
    }

    let directory = directory_move(inv, site, &to_site, &mut warnings, &mut manual, &mut diags);

    if !diags.is_empty() {
        return Err(diags);
    }
    let plan = RecoveryPlan {
        site: site.to_string(),
        to_site,
        vms,
        services,
        directory,
        manual,
        warnings,
    };
    // The services rendered at their new place: templates, secrets, and no port published twice
    // on a machine that now holds the services of both sites.
    let moved = crate::inventory::recovery::with(inv, plan.recovery(inv, "1970-01-01T00:00:00Z"));
    let targets: BTreeSet<String> = plan.services.iter().map(|m| m.to.clone()).collect();
    crate::service::prepare(&moved, Some(&targets), sources)?;
    Ok(plan)
}

/// The directory's move when its machine is at the lost site `site`: onto its `recover_to`, the
/// site's recovery host, or a host of `to_site` sharing a group with its machine; checked to
/// have its job's repository at `to_site`. A directory at the lost site that no job keeps is a
/// warning: after the recovery only the break-glass key logs in.
fn directory_move(
    inv: &Inventory,
    site: &str,
    to_site: &str,
    warnings: &mut Vec<String>,
    manual: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<DirectoryMove> {
    let d = &inv.access.as_ref()?.directory;
    let at_site = |m: Machine<'_>| inv.site_of(m).is_some_and(|s| s.name == site);
    let home_host = crate::inventory::recovery::url_at(&d.url, "")
        .map(|(h, _)| h)
        .unwrap_or_default();
    let Some(job) = d.backup.as_ref().and_then(|b| inv.backups.get(b.as_str())) else {
        let lost = inv.machines().find(|m| {
            m.name() == home_host || m.ssh().address.as_deref() == Some(home_host.as_str())
        });
        if lost.is_some_and(at_site) {
            warnings.push(format!(
                "the directory ({}) is at the lost site and no backup job keeps it (`access.directory.backup:`): \
                 after the recovery only the break-glass key logs in anywhere",
                d.url
            ));
        }
        return None;
    };
    let Holder::Host(from) = &job.holder else {
        return None;
    };
    let machine = inv.machine(from).filter(|m| at_site(*m))?;
    let lost = &inv.sites[site];
    let to = d
        .recover_to
        .as_ref()
        .or(lost.recovery.host.as_ref())
        .map(|h| h.value.clone())
        .or_else(|| sibling_host(inv, machine, to_site));
    let Some(to) = to else {
        diags.push(
            Diagnostic::new(
                d.backup.as_ref().map_or(job.place.clone(), |b| b.place.clone()),
                format!(
                    "the directory has nowhere to come back: no host of site `{to_site}` shares a group with `{}`",
                    from.value
                ),
            )
            .help("give `access.directory` a `recover_to: MACHINE` (a machine of the recovery site with OpenLDAP's slapd and tools installed)"),
        );
        return None;
    };
    let repo_site = repository_site(inv, job);
    if repo_site != to_site {
        diags.push(
            Diagnostic::new(
                job.repository.place.clone(),
                format!(
                    "backup job `{}` keeps the directory at site `{repo_site}`, not at `{to_site}` where it comes back",
                    job.name
                ),
            )
            .help(format!("put the job's repository on a machine of `{to_site}`")),
        );
    }
    let address = inv
        .machine(&to)
        .map(|m| {
            m.ssh()
                .address
                .clone()
                .unwrap_or_else(|| m.name().to_string())
        })
        .unwrap_or_else(|| to.clone());
    let url = crate::inventory::recovery::url_at(&d.url, &address)
        .map(|(_, u)| u)
        .unwrap_or_default();
    let tls_name = d.tls_name.clone().unwrap_or_else(|| home_host.clone());
    manual.push(format!(
        "the hosts' access helpers are pointed at {url} (certificate checked for `{tls_name}`); \
         point the name `{tls_name}` at `{to}` too (DNS) if people or other tools use it"
    ));
    Some(DirectoryMove {
        job: job.name.clone(),
        from: from.value.clone(),
        to,
        url,
        tls_name,
        paths: job.paths.iter().map(|p| p.value.clone()).collect(),
    })
}

/// The site of `job`'s repository (empty when its machine is unknown).
fn repository_site(inv: &Inventory, job: &BackupJob) -> String {
    inv.machine(&job.repository.host)
        .and_then(|m| inv.site_of(m))
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

/// What a VM takes from a hypervisor.
#[derive(Clone, Copy, Debug, Default)]
struct Need {
    vcpus: u32,
    memory: u64,
    disk: u64,
}

impl Need {
    fn add(self, o: Need) -> Need {
        Need {
            vcpus: self.vcpus + o.vcpus,
            memory: self.memory + o.memory,
            disk: self.disk + o.disk,
        }
    }
}

fn need_of(vm: &crate::inventory::Vm) -> Need {
    Need {
        vcpus: vm.vcpus.unwrap_or(1),
        memory: vm.memory.unwrap_or(0),
        disk: vm
            .disks
            .iter()
            .filter_map(|d| parse_size(&d.size).ok())
            .sum(),
    }
}

/// Does `total` fit in `host`'s declared capacity (unknown parts count as fitting)?
fn fits(inv: &Inventory, host: &str, total: &Need) -> bool {
    let Some(c) = inv.hosts.get(host).and_then(|h| h.capacity.as_ref()) else {
        return true;
    };
    c.vcpus.is_none_or(|v| total.vcpus <= v)
        && c.memory.is_none_or(|m| total.memory <= m)
        && c.disk.is_none_or(|d| total.disk <= d)
}

/// A located error for each part of `host`'s capacity that `total` exceeds (by how much), or
/// for a capacity that is not declared.
fn check_room(
    inv: &Inventory,
    host: &str,
    total: &Need,
    vms: &[VmMove],
    diags: &mut Vec<Diagnostic>,
) {
    let Some(h) = inv.hosts.get(host) else {
        return;
    };
    let moved: Vec<&str> = vms
        .iter()
        .filter(|m| m.to == host)
        .map(|m| m.vm.as_str())
        .collect();
    let Some(c) = &h.capacity else {
        diags.push(
            Diagnostic::new(
                h.place.clone(),
                format!(
                    "hypervisor `{host}` would take {} from the lost site but declares no `capacity:`, so picaops cannot check they fit",
                    moved.join(", ")
                ),
            )
            .help(format!(
                "declare what it holds, e.g. `capacity: {{vcpus: 16, memory: 64GiB, disk: 2TiB}}`; with the moved VMs it needs {} vCPUs, {} of memory, {} of disk",
                total.vcpus,
                crate::human::bytes(total.memory),
                crate::human::bytes(total.disk)
            )),
        );
        return;
    };
    let over = |what: &str, need: u64, have: Option<u64>, show: &dyn Fn(u64) -> String| {
        have.filter(|have| need > *have).map(|have| {
            format!(
                "{what}: needs {} but has {} ({} too few)",
                show(need),
                show(have),
                show(need - have)
            )
        })
    };
    let count = |n: u64| n.to_string();
    let size = |n: u64| crate::human::bytes(n);
    let problems: Vec<String> = [
        over("vCPUs", total.vcpus.into(), c.vcpus.map(u64::from), &count),
        over("memory", total.memory, c.memory, &size),
        over("disk", total.disk, c.disk, &size),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        diags.push(
            Diagnostic::new(
                c.place.clone(),
                format!(
                    "hypervisor `{host}` cannot hold its VMs and {} from the lost site: {}",
                    moved.join(", "),
                    problems.join("; ")
                ),
            )
            .help("send some VMs elsewhere with `recover_to: HYPERVISOR`, or give this one more room (and its `capacity:`)"),
        );
    }
}

/// The first host of `site` (inventory order) that shares a group with `machine`.
fn sibling_host(inv: &Inventory, machine: Machine<'_>, site: &str) -> Option<String> {
    let groups: BTreeSet<&str> = machine.groups().iter().map(|g| g.as_str()).collect();
    inv.hosts
        .values()
        .filter(|h| h.site.value == site)
        .find(|h| h.groups.iter().any(|g| groups.contains(g.as_str())))
        .map(|h| h.name.clone())
}

/// The job keeping service `name`'s data: the one its `backup:` names, else one whose
/// `service:` is it.
fn job_of<'a>(
    inv: &'a Inventory,
    name: &str,
    named: Option<&Located<String>>,
) -> Option<&'a BackupJob> {
    match named {
        Some(job) => inv.backups.get(job.as_str()),
        None => inv
            .backups
            .values()
            .find(|j| matches!(&j.holder, Holder::Service(s) if s.value == name)),
    }
}

impl crate::output::Shown for RecoveryPlan {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The plan for people: what comes back where, in the order `--apply` does it.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        writeln!(
            w,
            "{} site `{}` comes back at `{}`",
            out.paint(Style::Bold, "recovery:"),
            self.site,
            self.to_site
        )?;
        if self.vms.is_empty() {
            writeln!(w, "  VMs: none to create")?;
        }
        for m in &self.vms {
            writeln!(
                w,
                "  {} VM {} on {} (was on {}): {} vCPU, {} memory, {} disk",
                out.paint(Style::Green, "+"),
                m.vm,
                m.to,
                m.from,
                m.vcpus,
                crate::human::bytes(m.memory),
                crate::human::bytes(m.disk)
            )?;
        }
        if let Some(d) = &self.directory {
            writeln!(
                w,
                "  {} directory on {} (was on {}), first: data from job {}, then every host's access helper at {}",
                out.paint(Style::Green, "+"),
                d.to,
                d.from,
                d.job,
                d.url
            )?;
        }
        if self.services.is_empty() {
            writeln!(w, "  services: none")?;
        }
        for m in &self.services {
            let data = match &m.job {
                Some(job) => {
                    let mut parts = m.data.clone();
                    parts.extend(m.dumps.iter().map(|d| format!("dump {d}")));
                    format!("data from job {job}: {}", parts.join(", "))
                }
                None => "no data".to_string(),
            };
            writeln!(
                w,
                "  {} service {} on {}{} ({data})",
                out.paint(Style::Green, "+"),
                m.service,
                m.to,
                if m.with_vm {
                    " (with its VM)".to_string()
                } else {
                    format!(" (was on {})", m.from)
                },
            )?;
        }
        for warning in &self.warnings {
            writeln!(w, "  {} {warning}", out.paint(Style::Yellow, "warning:"))?;
        }
        for step in &self.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        Ok(())
    }
}
