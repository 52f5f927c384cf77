//! What a VM should be (`VmSpec`, from the inventory) and what it is (`VmState`, read from its
//! hypervisor). Plain data: nothing here talks to a host.
//!
//! A field the inventory leaves out is not managed: picaops neither compares nor changes it
//! (a hand-made VM declared with only `host:` is adopted as it is). Creating a VM needs the
//! sizing fields, checked by [`VmSpec::check_creatable`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::inventory::{Inventory, Vm};

const MIB: u64 = 1 << 20;

/// Why an inventory VM has no usable spec, or not enough of one to be created. Each variant
/// names the VM; `place` is where the inventory says it (`file:line:column`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("`vm_admin_keys` ({place}) must be a list of public key lines")]
    AdminKeysNotStrings { vm: String, place: String },
    #[error("`vm_admin_keys` ({place}) must be a public key line or a list of them")]
    AdminKeysType { vm: String, place: String },
    /// `key` is already shown on one line (control characters escaped).
    #[error(
        "`vm_admin_keys`{}: `{key}` is not one public key line (TYPE BASE64 [COMMENT], no line break)",
        .place.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
    )]
    BadAdminKey {
        vm: String,
        place: Option<String>,
        key: String,
    },
    /// `value` is the variable's JSON value as written.
    #[error("`vm_accel` is {value}: write kvm (hardware virtualisation) or tcg (emulation)")]
    BadAccel { vm: String, value: String },
    #[error("disk size `{size}`: {reason}")]
    DiskSize {
        vm: String,
        size: String,
        reason: &'static str,
    },
    #[error(
        "cannot create it: the inventory ({place}) does not say its {}. Add them, or create \
         the VM by hand and picaops adopts it",
        .missing.join(", ")
    )]
    MissingFields {
        vm: String,
        place: String,
        missing: Vec<&'static str>,
    },
    #[error(
        "cannot create it: no admin key to give it ({place}). Set `identity_file:` on the VM \
         (its .pub file is used) or the variable `vm_admin_keys`"
    )]
    NoAdminKey { vm: String, place: String },
}

/// The inventory's wish for one VM, in the units the drivers use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    pub name: String,
    /// The physical host it runs on.
    pub host: String,
    pub vcpus: Option<u32>,
    /// MiB.
    pub memory_mib: Option<u64>,
    pub disks: Vec<DiskSpec>,
    pub network: Option<NetSpec>,
    /// Base image (libvirt) or template name (Proxmox).
    pub image: Option<String>,
    pub start_at_boot: bool,
    /// Public keys given to root through cloud-init: the `vm_admin_keys` variable, else the
    /// public half (`.pub`) of the VM's `identity_file`.
    #[serde(skip)]
    pub admin_keys: Vec<String>,
    /// `kvm` (default) or `tcg` (emulation: the lab, where nested KVM hangs): the `vm_accel`
    /// variable.
    pub accel: Accel,
    /// Proxmox: the storage that holds the VM's cloud-init snippet (its hypervisor's
    /// `snippets_storage:`; the driver's default, `local`, when absent).
    pub snippets_storage: Option<String>,
    /// Where the inventory declares it (`file:line:column`), for messages.
    pub declared_at: String,
}

/// How the hypervisor runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskSpec {
    pub size_bytes: u64,
    /// Storage pool (libvirt) or storage (Proxmox); the driver's default when absent.
    pub pool: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetSpec {
    pub bridge: Option<String>,
    /// `192.0.2.10/24`.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
}

impl NetSpec {
    /// The address without its prefix length (`192.0.2.10`).
    pub fn ip(&self) -> Option<&str> {
        self.address
            .as_deref()
            .map(|a| a.split('/').next().unwrap_or(a))
    }
}

impl VmSpec {
    /// The spec of an inventory VM. Variables are resolved as for playbooks (`vm_admin_keys`,
    /// `vm_accel`); disk sizes were checked when the inventory was loaded.
    pub fn from_inventory(inv: &Inventory, vm: &Vm) -> Result<VmSpec, SpecError> {
        let vars = crate::inventory::vars::resolve(inv, crate::inventory::Machine::Vm(vm));
        let mut admin_keys = Vec::new();
        if let Some(v) = vars.get("vm_admin_keys") {
            match &v.value {
                serde_json::Value::String(s) => admin_keys.push(s.clone()),
                serde_json::Value::Array(items) => {
                    for i in items {
                        match i.as_str() {
                            Some(s) => admin_keys.push(s.to_string()),
                            None => {
                                return Err(SpecError::AdminKeysNotStrings {
                                    vm: vm.name.clone(),
                                    place: v.place.to_string(),
                                })
                            }
                        }
                    }
                }
                _ => {
                    return Err(SpecError::AdminKeysType {
                        vm: vm.name.clone(),
                        place: v.place.to_string(),
                    })
                }
            }
        } else if let Some(identity) = &vm.ssh.identity_file {
            if let Ok(text) = std::fs::read_to_string(pub_path(identity)) {
                admin_keys.extend(public_keys(&text));
            }
        }
        if let Some(bad) = admin_keys
            .iter()
            .find(|k| k.trim().is_empty() || k.contains(char::is_control))
        {
            return Err(SpecError::BadAdminKey {
                vm: vm.name.clone(),
                place: vars.get("vm_admin_keys").map(|v| v.place.to_string()),
                key: crate::inventory::shown(bad),
            });
        }
        let accel = match vars.get("vm_accel").map(|v| &v.value) {
            None => Accel::Kvm,
            Some(serde_json::Value::String(s)) if s == "kvm" => Accel::Kvm,
            Some(serde_json::Value::String(s)) if s == "tcg" => Accel::Tcg,
            Some(other) => {
                return Err(SpecError::BadAccel {
                    vm: vm.name.clone(),
                    value: other.to_string(),
                })
            }
        };
        let disks = vm
            .disks
            .iter()
            .map(|d| {
                Ok(DiskSpec {
                    size_bytes: crate::inventory::parse_size(&d.size).map_err(|reason| {
                        SpecError::DiskSize {
                            vm: vm.name.clone(),
                            size: d.size.clone(),
                            reason,
                        }
                    })?,
                    pool: d.pool.clone(),
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(VmSpec {
            name: vm.name.clone(),
            host: vm.host.value.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory.map(|b| b.div_ceil(MIB)),
            disks,
            network: vm.network.as_ref().map(|n| NetSpec {
                bridge: n.bridge.clone(),
                address: n.address.clone(),
                gateway: n.gateway.clone(),
                dns: n.dns.clone(),
            }),
            image: vm.image.clone(),
            start_at_boot: vm.start_at_boot,
            admin_keys,
            accel,
            snippets_storage: inv
                .hosts
                .get(&vm.host.value)
                .and_then(|h| h.snippets_storage.clone()),
            declared_at: vm.place.to_string(),
        })
    }

    /// Everything a creation needs is there; else what to add, for the volunteer.
    pub fn check_creatable(&self) -> Result<(), SpecError> {
        let mut missing = Vec::new();
        if self.vcpus.is_none() {
            missing.push("`vcpus:`");
        }
        if self.memory_mib.is_none() {
            missing.push("`memory:`");
        }
        if self.disks.is_empty() {
            missing.push("`disks:`");
        }
        if self.image.is_none() {
            missing.push("`image:`");
        }
        if !missing.is_empty() {
            return Err(SpecError::MissingFields {
                vm: self.name.clone(),
                place: self.declared_at.clone(),
                missing,
            });
        }
        if self.admin_keys.is_empty() {
            return Err(SpecError::NoAdminKey {
                vm: self.name.clone(),
                place: self.declared_at.clone(),
            });
        }
        Ok(())
    }
}

/// The public key lines of an authorized_keys-like text (comments and blank lines dropped).
pub fn public_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Whether a VM runs, as the hypervisor says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Power {
    Running,
    ShutOff,
    Paused,
    /// Another state, in the hypervisor's words (`crashed`, `in shutdown`…).
    Other(String),
}

impl Power {
    pub fn parse(text: &str) -> Power {
        match text.trim() {
            "running" => Power::Running,
            "shut off" | "stopped" => Power::ShutOff,
            "paused" | "suspended" => Power::Paused,
            other => Power::Other(other.to_string()),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Power::Running => "running",
            Power::ShutOff => "shut off",
            Power::Paused => "paused",
            Power::Other(s) => s,
        }
    }
}

/// A disk as the hypervisor has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskState {
    /// Device name in the VM's configuration (`vda`, `scsi0`).
    pub dev: String,
    /// File path (libvirt) or volume id (Proxmox).
    pub source: String,
    pub size_bytes: Option<u64>,
    pub pool: Option<String>,
}

/// One VM as read from its hypervisor (its saved configuration, and how it runs now).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmState {
    pub name: String,
    /// libvirt UUID or Proxmox VMID.
    pub id: String,
    pub power: Power,
    pub vcpus: u32,
    /// The configured memory, MiB.
    pub memory_mib: u64,
    /// The most memory it may get without a restart, MiB (libvirt's maximum; Proxmox: the
    /// configured memory unless memory hotplug is on).
    pub max_memory_mib: u64,
    /// Data disks, in order (seed and CD-ROM drives left out).
    pub disks: Vec<DiskState>,
    pub bridge: Option<String>,
    pub autostart: bool,
    /// Created or adopted by picaops (libvirt metadata, Proxmox tag `picaops`).
    pub managed: bool,
    /// Seconds since it started, when running and known.
    pub uptime_secs: Option<u64>,
    /// Settings saved in its configuration that the running VM does not have yet.
    pub pending: Vec<String>,
    /// Driver-specific facts the apply needs (Proxmox: hotplug list, disk bus names).
    #[serde(skip)]
    pub extra: BTreeMap<String, String>,
}

/// Everything on one hypervisor.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostVms {
    pub host: String,
    pub vms: Vec<VmState>,
    /// Storage pools: name → directory (libvirt) or storage id → type (Proxmox).
    pub pools: BTreeMap<String, String>,
    /// Templates by name → VMID (Proxmox).
    pub templates: BTreeMap<String, String>,
}

impl HostVms {
    pub fn get(&self, name: &str) -> Option<&VmState> {
        self.vms.iter().find(|v| v.name == name)
    }
}

pub fn human_mib(mib: u64) -> String {
    crate::human::bytes(mib * MIB)
}

/// `3d 4h`, `5h 12m`, `42s`.
pub fn human_uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// A file path's `.pub` companion (`~/.ssh/id` → `~/.ssh/id.pub`).
pub fn pub_path(identity: &Path) -> std::path::PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_uptimes_read_naturally() {
        assert_eq!(human_mib(512), "512 MiB");
        assert_eq!(human_uptime(42), "42s");
        assert_eq!(human_uptime(3 * 86400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_uptime(2 * 3600 + 60 * 7), "2h 7m");
    }

    #[test]
    fn power_states_from_both_hypervisors() {
        assert_eq!(Power::parse("shut off"), Power::ShutOff);
        assert_eq!(Power::parse("stopped"), Power::ShutOff);
        assert_eq!(Power::parse("running\n"), Power::Running);
        assert_eq!(Power::parse("crashed").label(), "crashed");
    }

    #[test]
    fn a_spec_short_of_a_creation_says_what_to_add_and_where() {
        let spec = VmSpec {
            name: "pica01".into(),
            host: "bob".into(),
            vcpus: None,
            memory_mib: Some(512),
            disks: Vec::new(),
            network: None,
            image: Some("debian".into()),
            start_at_boot: true,
            admin_keys: Vec::new(),
            accel: Accel::Kvm,
            snippets_storage: None,
            declared_at: "vms.yml:3:3".into(),
        };
        let err = spec.check_creatable().unwrap_err();
        assert!(
            matches!(&err, SpecError::MissingFields { vm, .. } if vm == "pica01"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot create it: the inventory (vms.yml:3:3) does not say its `vcpus:`, `disks:`. \
             Add them, or create the VM by hand and picaops adopts it"
        );
    }

    #[test]
    fn admin_keys_skip_comments() {
        assert_eq!(
            public_keys("# admin\nssh-ed25519 AAAA a@b\n\n"),
            vec!["ssh-ed25519 AAAA a@b"]
        );
        assert_eq!(
            pub_path(Path::new("/k/id_ed25519")),
            Path::new("/k/id_ed25519.pub")
        );
    }
}
