//! The VM plan: each VM's difference between the inventory and its hypervisor, classified by what
//! applying it costs, and whether this run may apply it.
//!
//! Classes, mildest first: `in-place` (applied while the VM runs: memory within its maximum,
//! growing a disk, a new disk, start at boot), `reboot` (saved, then a graceful ACPI shutdown and a
//! start: vCPUs, memory above the maximum; done only with `--allow-reboot`), `destroys-data`
//! (deleting a VM, shrinking or removing a disk: done only with `--allow-destroy NAME`). A change
//! that can be made in place is never made by recreating the VM. What picaops does not change on
//! an existing VM (its image, its network settings) is shown as a difference and left alone.
//! Pure functions: no host is contacted here.

use std::collections::BTreeSet;

use serde::Serialize;

use super::model::{human_mib, Power, VmSpec, VmState};

/// What applying a change costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Nothing to do, or only shown.
    None,
    InPlace,
    Reboot,
    DestroysData,
}

impl Risk {
    pub fn label(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::InPlace => "in-place",
            Risk::Reboot => "needs reboot",
            Risk::DestroysData => "DESTROYS DATA",
        }
    }
}

/// What happens to a VM as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    /// Declared, absent: created, started, then converged with its groups' playbooks.
    Create,
    /// Declared, present but never managed by picaops: recorded as managed, nothing else changed.
    Adopt,
    /// Declared and managed: its differences are applied.
    Update,
    Unchanged,
    /// Managed by picaops, no longer declared: deleted with its disks (destroys data).
    Delete,
    /// Present, not declared, never managed by picaops: left alone.
    Unmanaged,
}

/// One difference between the inventory and the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// What it is now / what the inventory wants, as people read them.
    pub from: String,
    pub to: String,
    pub risk: Risk,
    /// Shown, never applied (picaops does not change this on an existing VM); says why.
    pub not_applied: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ChangeKind {
    /// MiB. `hot`: within the running VM's maximum.
    Memory {
        from: u64,
        to: u64,
        hot: bool,
    },
    Vcpus {
        from: u32,
        to: u32,
    },
    DiskGrow {
        index: usize,
        dev: String,
        from: u64,
        to: u64,
    },
    DiskShrink {
        index: usize,
        dev: String,
        from: u64,
        to: u64,
    },
    DiskAdd {
        index: usize,
        size: u64,
        pool: Option<String>,
    },
    DiskRemove {
        index: usize,
        dev: String,
        source: String,
    },
    DiskPool {
        index: usize,
        dev: String,
    },
    StartAtBoot {
        to: bool,
    },
    Bridge,
    Image,
    /// Saved in the VM's configuration, waiting for a restart.
    Pending {
        what: String,
    },
}

impl ChangeKind {
    pub fn label(&self) -> String {
        match self {
            ChangeKind::Memory { .. } => "memory".into(),
            ChangeKind::Vcpus { .. } => "vcpus".into(),
            ChangeKind::DiskGrow { dev, .. } => format!("disk {dev} grows"),
            ChangeKind::DiskShrink { dev, .. } => format!("disk {dev} SHRINKS"),
            ChangeKind::DiskAdd { index, .. } => format!("new disk #{}", index + 1),
            ChangeKind::DiskRemove { dev, .. } => format!("disk {dev} REMOVED"),
            ChangeKind::DiskPool { dev, .. } => format!("disk {dev} pool"),
            ChangeKind::StartAtBoot { .. } => "start at boot".into(),
            ChangeKind::Bridge => "bridge".into(),
            ChangeKind::Image => "image".into(),
            ChangeKind::Pending { what } => format!("{what} (saved, waiting for a restart)"),
        }
    }
}

/// One VM's plan.
#[derive(Clone, Debug, Serialize)]
pub struct VmPlan {
    pub name: String,
    pub host: String,
    pub action: VmAction,
    pub changes: Vec<Change>,
    /// The highest risk among what would be applied.
    pub risk: Risk,
    /// Why this run will not do it (a flag is missing, it cannot be done), when so.
    pub refused: Option<String>,
    #[serde(skip)]
    pub spec: Option<VmSpec>,
    #[serde(skip)]
    pub state: Option<VmState>,
}

impl VmPlan {
    /// Will this run change anything on the hypervisor for this VM?
    pub fn acts(&self) -> bool {
        self.refused.is_none()
            && match self.action {
                VmAction::Create | VmAction::Adopt | VmAction::Delete => true,
                VmAction::Update => self.applied().next().is_some(),
                VmAction::Unchanged | VmAction::Unmanaged => false,
            }
    }

    /// The changes apply would make (the others are only shown).
    pub fn applied(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.not_applied.is_none())
    }

    /// Does applying need a graceful shutdown and start?
    pub fn needs_restart(&self) -> bool {
        self.action == VmAction::Update
            && self
                .applied()
                .any(|c| c.risk == Risk::Reboot || matches!(c.kind, ChangeKind::DiskShrink { .. }))
    }

    /// Is it a pending change (drift) for `plan --detailed-exitcode`?
    pub fn is_change(&self) -> bool {
        match self.action {
            VmAction::Unchanged | VmAction::Unmanaged => false,
            VmAction::Update => self.applied().next().is_some(),
            _ => true,
        }
    }
}

/// What the volunteer allowed on the command line.
#[derive(Clone, Debug, Default)]
pub struct Allowed {
    /// `--allow-reboot`: changes that need a graceful shutdown and a start.
    pub reboot: bool,
    /// `--allow-destroy NAME` (repeatable): the VMs whose data may be destroyed.
    pub destroy: BTreeSet<String>,
}

/// Compares a declared VM (or none) with what its hypervisor has (or nothing).
pub fn diff(name: &str, host: &str, spec: Option<&VmSpec>, state: Option<&VmState>) -> VmPlan {
    let mut plan = VmPlan {
        name: name.to_string(),
        host: host.to_string(),
        action: VmAction::Unchanged,
        changes: Vec::new(),
        risk: Risk::None,
        refused: None,
        spec: spec.cloned(),
        state: state.cloned(),
    };
    match (spec, state) {
        (None, None) => {}
        (Some(spec), None) => {
            plan.action = VmAction::Create;
            plan.risk = Risk::InPlace;
            if let Err(why) = spec.check_creatable() {
                plan.refused = Some(why.to_string());
            }
        }
        (None, Some(state)) if state.managed => {
            plan.action = VmAction::Delete;
            plan.risk = Risk::DestroysData;
        }
        (None, Some(_)) => plan.action = VmAction::Unmanaged,
        (Some(spec), Some(state)) => {
            plan.changes = differences(spec, state);
            if !state.managed {
                // Adopted as it is: differences are shown, applied from the next run on.
                plan.action = VmAction::Adopt;
                plan.risk = Risk::InPlace;
                for c in &mut plan.changes {
                    c.not_applied.get_or_insert_with(|| {
                        "adopted as it is: applied by the next apply, once you have reviewed it"
                            .into()
                    });
                }
            } else if plan.changes.iter().any(|c| c.not_applied.is_none()) {
                plan.action = VmAction::Update;
                plan.risk = plan.applied().map(|c| c.risk).max().unwrap_or(Risk::None);
            }
        }
    }
    plan
}

/// Every difference between `spec` and `state`, each classified.
fn differences(spec: &VmSpec, state: &VmState) -> Vec<Change> {
    let mut out = Vec::new();
    let running = state.power == Power::Running;
    // A change that needs a restart is an in-place one on a VM that is not running.
    let restart = |risk: Risk| {
        if running {
            risk
        } else {
            Risk::InPlace
        }
    };
    if let Some(want) = spec.memory_mib {
        if want != state.memory_mib {
            let hot = want <= state.max_memory_mib;
            out.push(Change {
                kind: ChangeKind::Memory {
                    from: state.memory_mib,
                    to: want,
                    hot,
                },
                from: human_mib(state.memory_mib),
                to: human_mib(want),
                risk: if hot {
                    Risk::InPlace
                } else {
                    restart(Risk::Reboot)
                },
                not_applied: None,
            });
        }
    }
    if let Some(want) = spec.vcpus {
        if want != state.vcpus {
            out.push(Change {
                kind: ChangeKind::Vcpus {
                    from: state.vcpus,
                    to: want,
                },
                from: state.vcpus.to_string(),
                to: want.to_string(),
                risk: restart(Risk::Reboot),
                not_applied: None,
            });
        }
    }
    for (index, want) in spec.disks.iter().enumerate() {
        match state.disks.get(index) {
            None => out.push(Change {
                kind: ChangeKind::DiskAdd {
                    index,
                    size: want.size_bytes,
                    pool: want.pool.clone(),
                },
                from: "-".into(),
                to: crate::human::bytes(want.size_bytes),
                risk: Risk::InPlace,
                not_applied: None,
            }),
            Some(have) => {
                if let (Some(p), Some(hp)) = (&want.pool, &have.pool) {
                    if p != hp {
                        out.push(Change {
                            kind: ChangeKind::DiskPool {
                                index,
                                dev: have.dev.clone(),
                            },
                            from: hp.clone(),
                            to: p.clone(),
                            risk: Risk::DestroysData,
                            not_applied: Some(
                                "picaops does not move a disk between pools: move it by hand \
                                 (the VM shut down), then apply again"
                                    .into(),
                            ),
                        });
                    }
                }
                let Some(size) = have.size_bytes else {
                    continue;
                };
                let (from, to, dev) = (size, want.size_bytes, have.dev.clone());
                if to != from {
                    let (kind, risk) = if to > from {
                        (
                            ChangeKind::DiskGrow {
                                index,
                                dev,
                                from,
                                to,
                            },
                            Risk::InPlace,
                        )
                    } else {
                        let kind = ChangeKind::DiskShrink {
                            index,
                            dev,
                            from,
                            to,
                        };
                        (kind, Risk::DestroysData)
                    };
                    out.push(Change {
                        kind,
                        from: crate::human::bytes(from),
                        to: crate::human::bytes(to),
                        risk,
                        not_applied: None,
                    });
                }
            }
        }
    }
    for (index, have) in state.disks.iter().enumerate().skip(spec.disks.len()) {
        if spec.disks.is_empty() {
            break; // disks not managed
        }
        out.push(Change {
            kind: ChangeKind::DiskRemove {
                index,
                dev: have.dev.clone(),
                source: have.source.clone(),
            },
            from: have
                .size_bytes
                .map(crate::human::bytes)
                .unwrap_or_else(|| "?".into()),
            to: "-".into(),
            risk: Risk::DestroysData,
            not_applied: None,
        });
    }
    if spec.start_at_boot != state.autostart {
        out.push(Change {
            kind: ChangeKind::StartAtBoot {
                to: spec.start_at_boot,
            },
            from: yes_no(state.autostart),
            to: yes_no(spec.start_at_boot),
            risk: Risk::InPlace,
            not_applied: None,
        });
    }
    if let Some(want) = spec.network.as_ref().and_then(|n| n.bridge.as_ref()) {
        if state.bridge.as_ref().is_some_and(|b| b != want) {
            out.push(Change {
                kind: ChangeKind::Bridge,
                from: state.bridge.clone().unwrap_or_default(),
                to: want.clone(),
                risk: Risk::None,
                not_applied: Some(
                    "picaops does not rewire an existing VM's network: change it by hand".into(),
                ),
            });
        }
    }
    if let (Some(want), Some(have)) = (&spec.image, state.extra.get("image")) {
        if want != have {
            out.push(Change {
                kind: ChangeKind::Image,
                from: have.clone(),
                to: want.clone(),
                risk: Risk::None,
                not_applied: Some(
                    "an image only matters at creation: picaops never recreates a VM for it".into(),
                ),
            });
        }
    }
    for what in &state.pending {
        out.push(Change {
            kind: ChangeKind::Pending { what: what.clone() },
            from: "running without it".into(),
            to: "after a restart".into(),
            risk: Risk::Reboot,
            not_applied: None,
        });
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Decides what this run may do, filling `refused` with the reason and the flag to give.
pub fn authorize(plan: &mut VmPlan, allowed: &Allowed) {
    if plan.refused.is_some() {
        return;
    }
    let name = plan.name.clone();
    let destroys =
        plan.action == VmAction::Delete || plan.applied().any(|c| c.risk == Risk::DestroysData);
    if destroys && !allowed.destroy.contains(&name) {
        let what: Vec<String> = if plan.action == VmAction::Delete {
            vec!["deleting the VM and its disks".into()]
        } else {
            plan.applied()
                .filter(|c| c.risk == Risk::DestroysData)
                .map(|c| format!("{} ({} → {})", c.kind.label(), c.from, c.to))
                .collect()
        };
        plan.refused = Some(format!(
            "{} destroys data; not done. If that is really what you want, run again with \
             `--allow-destroy {name}`",
            what.join(", ")
        ));
        return;
    }
    if plan.needs_restart() && !allowed.reboot && !destroys {
        let what: Vec<String> = plan
            .applied()
            .filter(|c| c.risk == Risk::Reboot)
            .map(|c| format!("{} ({} → {})", c.kind.label(), c.from, c.to))
            .collect();
        plan.refused = Some(format!(
            "{} needs a restart of the VM (graceful ACPI shutdown, then start); not done. Run \
             again with `--allow-reboot` when a short downtime is fine",
            what.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::model::{Accel, DiskSpec, DiskState};

    fn spec() -> VmSpec {
        VmSpec {
            name: "pica01".into(),
            host: "bob".into(),
            vcpus: Some(2),
            memory_mib: Some(1024),
            disks: vec![DiskSpec {
                size_bytes: 1 << 30,
                pool: Some("default".into()),
            }],
            network: None,
            image: Some("debian-12".into()),
            start_at_boot: true,
            admin_keys: vec!["ssh-ed25519 AAAA".into()],
            accel: Accel::Kvm,
            snippets_storage: None,
            declared_at: "inventory/vms.yml:2:3".into(),
        }
    }

    fn state() -> VmState {
        VmState {
            name: "pica01".into(),
            id: "uuid".into(),
            power: Power::Running,
            vcpus: 2,
            memory_mib: 1024,
            max_memory_mib: 1024,
            disks: vec![DiskState {
                dev: "vda".into(),
                source: "/var/lib/libvirt/images/pica01-disk0.qcow2".into(),
                size_bytes: Some(1 << 30),
                pool: Some("default".into()),
            }],
            bridge: None,
            autostart: true,
            managed: true,
            uptime_secs: Some(60),
            pending: vec![],
            extra: Default::default(),
        }
    }

    fn planned(spec: VmSpec, state: VmState, allowed: &Allowed) -> VmPlan {
        let mut p = diff("pica01", "bob", Some(&spec), Some(&state));
        authorize(&mut p, allowed);
        p
    }

    #[test]
    fn the_same_vm_is_unchanged() {
        let p = planned(spec(), state(), &Allowed::default());
        assert_eq!(p.action, VmAction::Unchanged);
        assert!(!p.acts() && !p.is_change());
    }

    #[test]
    fn memory_within_the_maximum_is_in_place_above_it_a_reboot() {
        let mut s = spec();
        s.memory_mib = Some(512);
        let p = planned(s.clone(), state(), &Allowed::default());
        assert_eq!((p.action, p.risk), (VmAction::Update, Risk::InPlace));
        assert!(p.acts());

        s.memory_mib = Some(2048);
        let p = planned(s.clone(), state(), &Allowed::default());
        assert_eq!(p.risk, Risk::Reboot);
        assert!(p.refused.as_deref().unwrap().contains("--allow-reboot"));
        assert!(!p.acts());
        let p = planned(
            s,
            state(),
            &Allowed {
                reboot: true,
                ..Default::default()
            },
        );
        assert!(p.acts() && p.needs_restart());
    }

    #[test]
    fn a_restart_change_on_a_stopped_vm_is_in_place() {
        let mut s = spec();
        s.vcpus = Some(4);
        let mut st = state();
        st.power = Power::ShutOff;
        let p = planned(s, st, &Allowed::default());
        assert_eq!(p.risk, Risk::InPlace);
        assert!(p.acts() && !p.needs_restart());
    }

    #[test]
    fn growing_a_disk_is_in_place_shrinking_destroys_data() {
        let mut s = spec();
        s.disks[0].size_bytes = 2 << 30;
        let p = planned(s.clone(), state(), &Allowed::default());
        assert_eq!(p.risk, Risk::InPlace);
        assert!(matches!(p.changes[0].kind, ChangeKind::DiskGrow { .. }));

        s.disks[0].size_bytes = 1 << 29;
        let p = planned(s.clone(), state(), &Allowed::default());
        assert_eq!(p.risk, Risk::DestroysData);
        let why = p.refused.unwrap();
        assert!(why.contains("--allow-destroy pica01"), "{why}");
        // --allow-reboot is not enough, nor another VM's name.
        let p = planned(
            s.clone(),
            state(),
            &Allowed {
                reboot: true,
                destroy: ["pica02".to_string()].into(),
            },
        );
        assert!(p.refused.is_some());
        let p = planned(
            s,
            state(),
            &Allowed {
                reboot: false,
                destroy: ["pica01".to_string()].into(),
            },
        );
        assert!(p.refused.is_none() && p.needs_restart());
    }

    #[test]
    fn a_vm_gone_from_the_inventory_is_deleted_only_when_confirmed() {
        let mut p = diff("pica01", "bob", None, Some(&state()));
        assert_eq!((p.action, p.risk), (VmAction::Delete, Risk::DestroysData));
        authorize(&mut p, &Allowed::default());
        assert!(p.refused.unwrap().contains("--allow-destroy pica01"));

        let mut unmanaged = state();
        unmanaged.managed = false;
        let p = diff("pica01", "bob", None, Some(&unmanaged));
        assert_eq!(p.action, VmAction::Unmanaged);
        assert!(!p.acts());
    }

    #[test]
    fn a_hand_made_vm_is_adopted_with_its_differences_shown_not_applied() {
        let mut st = state();
        st.managed = false;
        st.memory_mib = 4096;
        st.max_memory_mib = 4096;
        let p = planned(spec(), st, &Allowed::default());
        assert_eq!(p.action, VmAction::Adopt);
        assert_eq!(p.changes.len(), 1);
        assert!(p.changes[0].not_applied.is_some());
        assert!(p.acts() && !p.needs_restart());
    }

    #[test]
    fn a_new_vm_needs_its_sizes() {
        let mut s = spec();
        let p = diff("pica01", "bob", Some(&s), None);
        assert_eq!(p.action, VmAction::Create);
        assert!(p.refused.is_none());
        s.memory_mib = None;
        s.image = None;
        let p = diff("pica01", "bob", Some(&s), None);
        let why = p.refused.unwrap();
        assert!(
            why.contains("`memory:`") && why.contains("`image:`"),
            "{why}"
        );
    }

    #[test]
    fn image_and_bridge_differences_are_shown_never_applied() {
        let mut st = state();
        st.extra.insert("image".into(), "debian-11".into());
        st.bridge = Some("vmbr1".into());
        let mut s = spec();
        s.network = Some(crate::vm::model::NetSpec {
            bridge: Some("vmbr0".into()),
            address: None,
            gateway: None,
            dns: vec![],
        });
        let p = planned(s, st, &Allowed::default());
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.action, VmAction::Unchanged);
        assert!(!p.acts());
    }
}
