//! Recovery places checked against the whole inventory (a site's `recovery:`, a VM's or a
//! service's `recover_to:`, the lost site of `recovery.yml`), and `recovery.yml` applied: while a
//! site is lost, its moved VMs and services are placed at their recovery place for every run.

use super::model::{HypervisorKind, Inventory, Machine};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::located::Located;
use crate::sections::backup::{DumpKind, Holder};

pub(super) fn check(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let site_of_name = |name: &str| {
        inv.machine(name)
            .and_then(|m| inv.site_of(m))
            .map(|s| s.name.as_str())
    };
    for site in inv.sites.values() {
        let r = &site.recovery;
        let to = r.site.as_ref().or(site.backs_up_to.as_ref());
        if let Some(s) = &r.site {
            if !inv.sites.contains_key(s.as_str()) {
                diags.push(unknown(inv, "site", s, inv.sites.keys()));
            } else if s.value == site.name {
                diags.push(
                    Diagnostic::new(
                        s.place.clone(),
                        format!("site `{}` cannot recover onto itself", site.name),
                    )
                    .help("name the other site, where its backups are (`backs_up_to:`)"),
                );
            }
        }
        if let Some(h) = &r.hypervisor {
            check_hypervisor(inv, h, to.map(|t| t.as_str()), Some(&site.name), diags);
        }
        if let Some(h) = &r.host {
            check_machine_at(inv, h, to.map(|t| t.as_str()), &site.name, diags);
        }
    }
    for vm in inv.vms.values() {
        if let Some(to) = &vm.recover_to {
            let home = inv
                .hosts
                .get(vm.host.as_str())
                .map(|h| h.site.value.as_str());
            check_hypervisor(inv, to, None, home, diags);
        }
    }
    for service in inv.services.values() {
        if let Some(to) = &service.recover_to {
            let home = site_of_name(&service.host).unwrap_or_default().to_string();
            check_machine_at(inv, to, None, &home, diags);
        }
    }
    check_directory(inv, diags);
    let Some(rec) = &inv.recovery else {
        return;
    };
    if let Some(to) = &rec.directory {
        let keeps = inv
            .access
            .as_ref()
            .is_some_and(|a| a.directory.backup.is_some());
        match inv.machine(to) {
            None => diags.push(unknown(
                inv,
                "machine",
                to,
                inv.hosts.keys().chain(inv.vms.keys()),
            )),
            Some(_) if !keeps => diags.push(
                Diagnostic::new(
                    to.place.clone(),
                    "the directory is moved, but `access.directory` names no `backup:` job that keeps it",
                )
                .help("put the directory's job back under `access.directory.backup:`, or remove this line"),
            ),
            Some(m) => {
                if inv.site_of(m).map(|s| s.name.as_str()) == Some(rec.lost.as_str()) {
                    diags.push(same_site(to, &rec.lost.value));
                }
            }
        }
    }
    if !inv.sites.contains_key(rec.lost.as_str()) {
        diags.push(unknown(inv, "site", &rec.lost, inv.sites.keys()));
        return;
    }
    for (name, to) in &rec.vms {
        match inv.vms.get(name) {
            None => diags.push(unknown_name(inv, "VM", name, &rec.place, inv.vms.keys())),
            Some(_) => check_hypervisor(inv, to, None, Some(&rec.lost.value), diags),
        }
    }
    for (name, to) in &rec.services {
        if !inv.services.contains_key(name) {
            diags.push(unknown_name(
                inv,
                "service",
                name,
                &rec.place,
                inv.services.keys(),
            ));
            continue;
        }
        // A service may move onto a VM that moves too: its site is where that VM goes.
        let moved_vm_site = rec
            .vms
            .get(to.as_str())
            .and_then(|h| inv.hosts.get(h.as_str()))
            .map(|h| h.site.value.as_str());
        match (inv.machine(to), moved_vm_site) {
            (None, _) => diags.push(unknown(
                inv,
                "machine",
                to,
                inv.hosts.keys().chain(inv.vms.keys()),
            )),
            (Some(_), Some(site)) if site != rec.lost.value => {}
            (Some(m), _) => {
                if inv.site_of(m).map(|s| s.name.as_str()) == Some(rec.lost.as_str()) {
                    diags.push(
                        Diagnostic::new(
                            to.place.clone(),
                            format!("`{}` is at the lost site `{}`", to.value, rec.lost.value),
                        )
                        .help("a service of the lost site comes back on a machine of another site"),
                    );
                }
            }
        }
    }
}

/// `access.directory`'s `backup:` names a job of its machine with an `ldap` dump, and its
/// `recover_to:` a machine of another site than that one.
fn check_directory(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let Some(d) = inv.access.as_ref().map(|a| &a.directory) else {
        return;
    };
    let Some(b) = &d.backup else {
        if let Some(to) = &d.recover_to {
            diags.push(
                Diagnostic::new(
                    to.place.clone(),
                    "`recover_to:` without `backup:`: nothing would bring the directory back",
                )
                .help("name the backup job that keeps the directory: `backup: JOB` (a job of its machine with `dumps: [{kind: ldap, database: BASE}]`)"),
            );
        }
        return;
    };
    let Some(job) = inv.backups.get(b.as_str()) else {
        diags.push(unknown(inv, "backup job", b, inv.backups.keys()));
        return;
    };
    if !job.dumps.iter().any(|x| x.kind == DumpKind::Ldap) {
        diags.push(
            Diagnostic::new(
                b.place.clone(),
                format!(
                    "backup job `{}` has no `kind: ldap` dump: it does not keep the directory",
                    b.value
                ),
            )
            .note(job.place.clone(), "the job is declared here")
            .help(
                "add `dumps: [{kind: ldap, database: BASE}]` to the job of the directory's machine",
            ),
        );
    }
    match &job.holder {
        Holder::Service(s) => diags.push(
            Diagnostic::new(
                b.place.clone(),
                format!(
                    "backup job `{}` keeps service `{}`'s data; the directory's job is one of the machine slapd runs on (`host:`)",
                    b.value, s.value
                ),
            )
            .help("give the directory its own job with `host: MACHINE` and an `ldap` dump"),
        ),
        Holder::Host(h) => {
            let home = inv
                .machine(h)
                .and_then(|m| inv.site_of(m))
                .map(|s| s.name.clone())
                .unwrap_or_default();
            if let Some(to) = &d.recover_to {
                check_machine_at(inv, to, None, &home, diags);
            }
        }
    }
}

/// `name` must be a hypervisor at `site` (when given) and not at `not_at` (when given).
fn check_hypervisor(
    inv: &Inventory,
    name: &Located<String>,
    site: Option<&str>,
    not_at: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(host) = inv.hosts.get(name.as_str()) else {
        diags.push(unknown(inv, "hypervisor", name, inv.hosts.keys()));
        return;
    };
    if host.hypervisor == HypervisorKind::None {
        diags.push(
            Diagnostic::new(
                name.place.clone(),
                format!("`{}` is not a hypervisor", name.value),
            )
            .note(
                host.place.clone(),
                "declared here without `hypervisor: libvirt` or `proxmox`",
            )
            .help("name a host that runs VMs"),
        );
    } else if let Some(site) = site.filter(|s| *s != host.site.value) {
        diags.push(
            Diagnostic::new(
                name.place.clone(),
                format!(
                    "`{}` is at site `{}`, not at the recovery site `{site}`",
                    name.value, host.site.value
                ),
            )
            .help("name a hypervisor of the recovery site"),
        );
    } else if not_at == Some(host.site.as_str()) {
        diags.push(same_site(name, &host.site.value));
    }
}

/// `name` must be a machine at `site` (when given), at another site than `home`.
fn check_machine_at(
    inv: &Inventory,
    name: &Located<String>,
    site: Option<&str>,
    home: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(m) = inv.machine(name) else {
        diags.push(unknown(
            inv,
            "machine",
            name,
            inv.hosts.keys().chain(inv.vms.keys()),
        ));
        return;
    };
    let at = inv.site_of(m).map(|s| s.name.as_str()).unwrap_or_default();
    if let Some(site) = site.filter(|s| *s != at) {
        diags.push(
            Diagnostic::new(
                name.place.clone(),
                format!(
                    "`{}` is at site `{at}`, not at the recovery site `{site}`",
                    name.value
                ),
            )
            .help("name a machine of the recovery site"),
        );
    } else if at == home {
        diags.push(same_site(name, at));
    }
}

fn same_site(name: &Located<String>, site: &str) -> Diagnostic {
    Diagnostic::new(
        name.place.clone(),
        format!(
            "`{}` is at site `{site}` too: it would be lost with it",
            name.value
        ),
    )
    .help("a recovery place is at another site (the one that keeps the backups)")
}

fn unknown<'a>(
    inv: &Inventory,
    kind: &str,
    name: &Located<String>,
    known: impl Iterator<Item = &'a String>,
) -> Diagnostic {
    let _ = inv;
    let known: Vec<&str> = known.map(String::as_str).collect();
    let mut d = Diagnostic::new(
        name.place.clone(),
        format!("unknown {kind} `{}`", name.value),
    );
    if let Some(s) = did_you_mean(name, known.iter().copied()) {
        d = d.help(format!("did you mean `{s}`?"));
    }
    d
}

fn unknown_name<'a>(
    inv: &Inventory,
    kind: &str,
    name: &str,
    place: &crate::diagnostic::Place,
    known: impl Iterator<Item = &'a String>,
) -> Diagnostic {
    unknown(
        inv,
        kind,
        &Located {
            value: name.to_string(),
            place: place.clone(),
        },
        known,
    )
}

/// Places the VMs and services `recovery.yml` moves at their recovery place.
pub(super) fn apply(inv: &mut Inventory) {
    let Some(rec) = inv.recovery.clone() else {
        return;
    };
    for (name, to) in &rec.vms {
        if let Some(vm) = inv.vms.get_mut(name) {
            vm.moved_from = Some(std::mem::replace(&mut vm.host, to.clone()));
        }
    }
    for (name, to) in &rec.services {
        if let Some(service) = inv.services.get_mut(name) {
            service.moved_from = Some(std::mem::replace(&mut service.host, to.clone()));
        }
    }
    if let Some(to) = &rec.directory {
        move_directory(inv, to);
    }
}

/// The directory at `to`: its URL names `to`'s address (the certificate is still checked
/// against the name it had at home) and the job that keeps it runs there, under its home
/// machine's name in the repository.
fn move_directory(inv: &mut Inventory, to: &Located<String>) {
    let address = match inv.machine(to) {
        Some(m) => m
            .ssh()
            .address
            .clone()
            .unwrap_or_else(|| m.name().to_string()),
        None => return,
    };
    let Some(access) = inv.access.as_mut() else {
        return;
    };
    let d = &mut access.directory;
    let Some((home_host, moved)) = url_at(&d.url, &address) else {
        return;
    };
    let tls_name = d.tls_name.clone().or(Some(home_host));
    let url = std::mem::replace(&mut d.url, moved);
    d.moved_from = Some((url, std::mem::replace(&mut d.tls_name, tls_name)));
    let job = d.backup.as_ref().map(|j| j.value.clone());
    if let Some(job) = job.and_then(|j| inv.backups.get_mut(&j)) {
        if let Holder::Host(home) = &mut job.holder {
            job.moved_from = Some(std::mem::replace(home, to.clone()));
        }
    }
}

/// `url` (`ldaps://HOST[:PORT][/…]`) with its host replaced by `address`, and the host it had.
pub fn url_at(url: &str, address: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("ldaps://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after)
        }
        None => match authority.rsplit_once(':') {
            Some((h, _)) => (h, &authority[h.len()..]),
            None => (authority, ""),
        },
    };
    let address = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Some((host.to_string(), format!("ldaps://{address}{port}{path}")))
}

/// `inv` as it is while `recovery` is in effect (what `site recover` plans against).
pub fn with(inv: &Inventory, recovery: crate::sections::recovery::Recovery) -> Inventory {
    let mut moved = inv.clone();
    moved.recovery = Some(recovery);
    apply(&mut moved);
    moved
}

/// `inv` with every VM and service of `recovery.yml` put back home (what a recovery or a
/// failback plans from).
pub fn home(inv: &Inventory) -> Inventory {
    let mut home = inv.clone();
    for vm in home.vms.values_mut() {
        if let Some(from) = vm.moved_from.take() {
            vm.host = from;
            // Reached through its home hypervisor again, not the recovery place's.
            if vm.ssh.jump.is_some() {
                vm.ssh.jump = inv.hosts.get(vm.host.as_str()).and_then(|h| h.jump());
            }
        }
    }
    for service in home.services.values_mut() {
        if let Some(from) = service.moved_from.take() {
            service.host = from;
        }
    }
    if let Some(d) = home.access.as_mut().map(|a| &mut a.directory) {
        if let Some((url, tls_name)) = d.moved_from.take() {
            d.url = url;
            d.tls_name = tls_name;
        }
    }
    for job in home.backups.values_mut() {
        if let (Some(from), Holder::Host(h)) = (job.moved_from.take(), &mut job.holder) {
            *h = from;
        }
    }
    home.recovery = None;
    home
}

/// Is `machine` at the site `recovery.yml` declares lost (after the moves)?
pub fn is_lost(inv: &Inventory, machine: Machine<'_>) -> bool {
    match &inv.recovery {
        Some(rec) => inv
            .site_of(machine)
            .is_some_and(|s| s.name == rec.lost.value),
        None => false,
    }
}
