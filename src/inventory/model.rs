//! The checked inventory model: what the rest of picaops reads. Nothing here touches YAML.
//!
//! Every value that came from a file keeps its `Place`, so later errors ("this VM's host is
//! unreachable") can still point at the line that declared it.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Serialize;

use crate::diagnostic::Place;
pub use crate::located::{Located, Var};

/// A datacenter or server room (`toulouse`, `compiegne`).
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    pub name: String,
    pub description: Option<String>,
    /// The site that keeps this site's backups (each site backs up to the other).
    pub backs_up_to: Option<Located<String>>,
    /// Where this site's VMs and services come back if it is lost (`recovery:`).
    pub recovery: SiteRecovery,
    pub vars: IndexMap<String, Var>,
    pub place: Place,
}

/// A site's `recovery:`: where its VMs and services come back when it is lost. Every part is
/// optional: the site defaults to `backs_up_to`, VMs go to that site's hypervisors (the first
/// with room), services of a physical host to the first host there sharing one of its groups.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteRecovery {
    pub site: Option<Located<String>>,
    /// The hypervisor lost VMs come back on.
    pub hypervisor: Option<Located<String>>,
    /// The machine the services of a lost physical host come back on.
    pub host: Option<Located<String>>,
}

/// What a hypervisor can hold (`capacity:`), for the checks of a recovery plan.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    pub vcpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    /// Bytes of VM disks.
    pub disk: Option<u64>,
    pub place: Place,
}

/// What runs the VMs on a physical host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    #[default]
    None,
    Libvirt,
    Proxmox,
}

/// Out-of-band management of a physical host (power, console when the OS is down).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oob {
    pub kind: OobKind,
    pub address: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OobKind {
    /// Intel AMT (alice, bob).
    Amt,
    /// Dell iDRAC (caribou).
    Idrac,
    Ipmi,
}

/// How picaops logs in to a machine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ssh {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Absolute path (relative paths in the inventory are resolved against their file).
    pub identity_file: Option<PathBuf>,
    /// Escalate with `sudo -n` after logging in as a non-root user.
    pub become_root: bool,
    /// The pinned public host key (`ssh-ed25519 AAAA…`).
    pub host_key: Option<Located<String>>,
    /// Jump host (`user@host:port`): a VM without `address:` is reached at its
    /// `network.address` through its hypervisor.
    pub jump: Option<String>,
}

/// A physical machine (`bob`, `alice`, `caribou`).
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub name: String,
    pub site: Located<String>,
    pub description: Option<String>,
    pub ssh: Ssh,
    pub hypervisor: HypervisorKind,
    /// Proxmox: the storage whose `snippets/` holds the cloud-init user-data of the VMs
    /// picaops creates (`snippets_storage:`; `local` when absent).
    pub snippets_storage: Option<String>,
    /// What it can hold, for recovery plans (hypervisors).
    pub capacity: Option<Capacity>,
    pub oob: Option<Oob>,
    pub groups: Vec<Located<String>>,
    pub vars: IndexMap<String, Var>,
    pub place: Place,
}

impl Host {
    /// This host as the SSH jump host of its VMs: `user@address:port` (without what it does
    /// not say); none without an address.
    pub fn jump(&self) -> Option<String> {
        let mut jump = self.ssh.address.clone()?;
        if let Some(user) = &self.ssh.user {
            jump = format!("{user}@{jump}");
        }
        if let Some(port) = self.ssh.port {
            jump = format!("{jump}:{port}");
        }
        Some(jump)
    }
}

/// A disk of a VM.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// `80GiB`, `1TiB`, …
    pub size: String,
    /// Storage pool on the hypervisor (`local-lvm`, `default`).
    pub pool: Option<String>,
}

/// A VM's network settings, written into its cloud-init seed.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNetwork {
    pub bridge: Option<String>,
    /// Address with prefix length (`192.0.2.10/24`).
    pub address: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

/// A virtual machine on one physical host (`pica01` on `bob`).
#[derive(Clone, Debug, Serialize)]
pub struct Vm {
    pub name: String,
    /// Its hypervisor: where it runs now (its recovery place while its site is lost).
    pub host: Located<String>,
    /// Where it comes back if its site is lost (`recover_to:`, a hypervisor).
    pub recover_to: Option<Located<String>>,
    /// The hypervisor of its lost site, while `recovery.yml` moves it (`host` is the new one).
    pub moved_from: Option<Located<String>>,
    pub description: Option<String>,
    pub ssh: Ssh,
    pub vcpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    pub disks: Vec<Disk>,
    pub network: Option<VmNetwork>,
    /// Base image (libvirt) or template (Proxmox) the VM is created from.
    pub image: Option<String>,
    pub start_at_boot: bool,
    pub groups: Vec<Located<String>>,
    pub vars: IndexMap<String, Var>,
    pub place: Place,
}

/// A named set of hosts and VMs sharing playbooks and variables.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub vars: IndexMap<String, Var>,
    pub place: Place,
}

/// A Docker Compose service and the machine it runs on.
#[derive(Clone, Debug, Serialize)]
pub struct Service {
    pub name: String,
    /// A VM or a host: where it runs now (its recovery place while its site is lost).
    pub host: Located<String>,
    /// Where it comes back if its site is lost (`recover_to:`, a machine).
    pub recover_to: Option<Located<String>>,
    /// The machine of its lost site, while `recovery.yml` moves it (`host` is the new one).
    pub moved_from: Option<Located<String>>,
    pub description: Option<String>,
    /// What picaops deploys (Compose template, environment, secrets, data, health); `None`
    /// for a service only declared (no `compose:`), which picaops never touches.
    pub deploy: Option<crate::sections::service::Deploy>,
    pub place: Place,
}

/// The whole inventory, checked: every reference resolves, every name is unique.
#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    /// The directory it was read from.
    pub dir: PathBuf,
    pub sites: IndexMap<String, Site>,
    pub hosts: IndexMap<String, Host>,
    pub vms: IndexMap<String, Vm>,
    pub groups: IndexMap<String, Group>,
    /// Variables for every machine (the lowest precedence).
    pub vars: IndexMap<String, Var>,
    pub services: IndexMap<String, Service>,
    /// The `access:` section (LDAP directory, levels, renewal policy), checked.
    pub access: Option<crate::sections::access::Access>,
    /// Where named secrets are resolved (`pass` unless the `secrets:` section says otherwise).
    pub secrets: crate::secrets::SecretStore,
    /// The `backups:` section: restic jobs, checked by `crate::sections::backup` and the inventory.
    pub backups: IndexMap<String, crate::sections::backup::BackupJob>,
    /// Host keys picaops pinned with `inventory pin` (the `known_hosts` file beside the YAML).
    pub known_hosts: Vec<String>,
    /// A lost site and what moved where (`recovery.yml`), already applied to `vms` and
    /// `services`.
    pub recovery: Option<crate::sections::recovery::Recovery>,
}

/// A machine picaops can log in to: a physical host or a VM.
#[derive(Clone, Copy, Debug)]
pub enum Machine<'a> {
    Host(&'a Host),
    Vm(&'a Vm),
}

impl<'a> Machine<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Machine::Host(h) => &h.name,
            Machine::Vm(v) => &v.name,
        }
    }

    pub fn ssh(&self) -> &'a Ssh {
        match self {
            Machine::Host(h) => &h.ssh,
            Machine::Vm(v) => &v.ssh,
        }
    }

    pub fn groups(&self) -> &'a [Located<String>] {
        match self {
            Machine::Host(h) => &h.groups,
            Machine::Vm(v) => &v.groups,
        }
    }

    pub fn vars(&self) -> &'a IndexMap<String, Var> {
        match self {
            Machine::Host(h) => &h.vars,
            Machine::Vm(v) => &v.vars,
        }
    }

    pub fn place(&self) -> &'a Place {
        match self {
            Machine::Host(h) => &h.place,
            Machine::Vm(v) => &v.place,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Machine::Host(_) => "host",
            Machine::Vm(_) => "vm",
        }
    }
}

impl Inventory {
    /// Physical hosts first, then VMs, each in the order the files declare them.
    pub fn machines(&self) -> impl Iterator<Item = Machine<'_>> {
        self.hosts
            .values()
            .map(Machine::Host)
            .chain(self.vms.values().map(Machine::Vm))
    }

    pub fn machine(&self, name: &str) -> Option<Machine<'_>> {
        self.hosts
            .get(name)
            .map(Machine::Host)
            .or_else(|| self.vms.get(name).map(Machine::Vm))
    }

    /// The site a machine stands in (a VM's is its hypervisor's).
    pub fn site_of(&self, machine: Machine<'_>) -> Option<&Site> {
        let site = match machine {
            Machine::Host(h) => &h.site,
            Machine::Vm(v) => &self.hosts.get(v.host.as_str())?.site,
        };
        self.sites.get(site.as_str())
    }
}
