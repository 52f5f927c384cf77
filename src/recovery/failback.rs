//! Failing a recovered site back home (`picaops site failback SITE`): the services and VMs that
//! `recovery.yml` moved away go back to their home machines with their newest data, and nothing
//! is deleted at the recovery place until home is healthy.
//!
//! The order, and why: each moved service is first **stopped** at its recovery place (what it
//! writes after that point would be lost), then **backed up** there (that snapshot is what home
//! gets, checked to be the one this run made), its VM (if it moved with one) shut down and set
//! aside under another name (disks kept). Then `recovery.yml` is rewritten without them (a copy
//! of the old one is kept beside it), the inventory reloaded (home placement), the home VMs
//! started (their host keys read back from their own seeds) and converged, the home copy's data
//! moved aside (kept) and the snapshot restored in its place, the services deployed behind
//! their health gate and their dumps loaded. Only once a service is healthy at home is its
//! recovery-place copy taken down (Compose `down` without `-v`, project moved aside, data kept;
//! its backup timer there disabled). When everything is home, retention is thawed on the
//! repository hosts. A service that does not come back healthy is stopped at home, its recovery
//! copy started again, and `recovery.yml` keeps it: it runs somewhere, and a second run retries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::apply::Step;
use crate::backup::newest::SnapshotInfo;
use crate::backup::ops::{self, OpError, RestoreRequest};
use crate::backup::remote::{Answer, Call, Side};
use crate::backup::units;
use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::{self, HypervisorKind, Inventory};
use crate::lifecycle::{Mode, Settings};
use crate::sections::backup::Holder;
use crate::sections::recovery::{render, FILE_NAME};
use crate::service::render::PROJECTS_DIR;
use crate::transport::quote::quote as q;
use crate::transport::RemoteCommand;

/// A moved service and where it goes back.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceBack {
    pub service: String,
    /// The machine it runs on now (its recovery place).
    pub at: String,
    /// The machine it goes back to.
    pub home: String,
    /// The moved VM it runs on: it goes home with that VM (`at` and `home` are the VM).
    pub vm: Option<String>,
    /// The backup job whose snapshot carries its data home (none: it keeps no data).
    pub job: Option<String>,
    pub data: Vec<String>,
    pub dumps: Vec<String>,
}

/// A moved VM and where it goes back.
#[derive(Clone, Debug, Serialize)]
pub struct VmBack {
    pub vm: String,
    /// The hypervisor it runs on now.
    pub at: String,
    pub at_kind: HypervisorKind,
    /// The hypervisor holding its home copy (shut down by fencing, disks kept).
    pub home: String,
    pub home_kind: HypervisorKind,
    /// The moved services running on it.
    pub services: Vec<String>,
    /// The name its recovery copy is kept under, shut off, once it is set aside.
    pub aside: String,
}

/// Everything `site failback SITE` will do (it contacts nothing to say so).
#[derive(Clone, Debug, Serialize)]
pub struct FailbackPlan {
    pub site: String,
    /// The site the moved services and VMs run at now.
    pub at_site: String,
    /// When the site was marked lost.
    pub since: String,
    pub recovery_file: PathBuf,
    /// Where the recovery file is kept once it is removed.
    pub kept_copy: PathBuf,
    pub services: Vec<ServiceBack>,
    pub vms: Vec<VmBack>,
    /// What a person must do (public names pointing at the recovery place…).
    pub manual: Vec<String>,
}

impl FailbackPlan {
    /// The physical hosts at home that take the services and VMs back.
    pub fn home_hosts(&self) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|s| s.vm.is_none())
            .map(|s| s.home.clone())
            .chain(self.vms.iter().map(|v| v.home.clone()))
            .collect()
    }
}

/// Why a failback did not start (nothing was changed) or stopped before its services.
#[derive(Debug, thiserror::Error)]
pub enum FailbackError {
    /// The inventory does not load: nothing was done.
    #[error("{} error(s) {what}", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
        what: &'static str,
    },
    #[error("site `{site}` is not lost: there is no inventory/{FILE_NAME}, every service runs at home already")]
    NotLost { site: String },
    #[error("inventory/{FILE_NAME} says site `{lost}` is lost, not `{site}`: `picaops site failback {lost}` brings it home")]
    OtherSiteLost { lost: String, site: String },
    #[error("{file} moves nothing of site `{site}`: remove it by hand once you have checked every service runs at home", file = .file.display())]
    NothingMoved { site: String, file: PathBuf },
    /// A home machine does not answer: nothing was stopped or changed.
    #[error("home is not ready: {}; nothing was stopped or changed, the services keep running at the recovery place. Run the failback again once it answers", list(.machines))]
    HomeUnreachable { machines: Vec<(String, String)> },
    /// A machine of the recovery place does not answer: its newest data cannot be backed up.
    #[error("the recovery place does not answer: {}; nothing was stopped or changed (home would get older data than what ran there)", list(.machines))]
    PlaceUnreachable { machines: Vec<(String, String)> },
    #[error("cannot reach the machines to check them: {0}")]
    Probe(#[source] OpError),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(machines: &[(String, String)]) -> String {
    machines
        .iter()
        .map(|(m, why)| format!("{m} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FailbackError {
    /// 2 when nothing was done (the inventory, the command or an unreachable machine), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            FailbackError::Probe(_) | FailbackError::Write { .. } => {
                crate::output::EXIT_HOST_FAILED
            }
            _ => crate::output::EXIT_USAGE,
        }
    }
}

/// `20261204-183000` from `2026-12-04T18:30:00Z`: the suffix of what is set aside.
pub fn stamp(now: &str) -> String {
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 14 {
        format!("{}-{}", &digits[..8], &digits[8..14])
    } else {
        digits
    }
}

/// The name a VM's recovery copy is kept under (a valid VM name: 63 characters at most).
pub fn aside_name(vm: &str, stamp: &str) -> String {
    let suffix = format!("-failed-back-{stamp}");
    let keep = 63usize.saturating_sub(suffix.len()).min(vm.len());
    format!("{}{suffix}", &vm[..keep])
}

/// The job keeping service `name`'s data: the one its `backup:` names, else one whose
/// `service:` is it.
fn job_of<'a>(inv: &'a Inventory, name: &str) -> Option<&'a crate::sections::backup::BackupJob> {
    let named = inv.services.get(name).and_then(|s| {
        s.deploy
            .as_ref()
            .and_then(|d| d.backup.as_ref())
            .map(|b| b.value.clone())
    });
    match named {
        Some(job) => inv.backups.get(&job),
        None => inv
            .backups
            .values()
            .find(|j| matches!(&j.holder, Holder::Service(s) if s.value == name)),
    }
}

fn kind_of(inv: &Inventory, host: &str) -> HypervisorKind {
    inv.hosts
        .get(host)
        .map_or(HypervisorKind::None, |h| h.hypervisor)
}

/// The plan of failing `site` back, from the inventory as `recovery.yml` places it. Reads
/// nothing but the inventory. `now` (`YYYY-MM-DDTHH:MM:SSZ`) names what is set aside.
pub fn plan(inv: &Inventory, site: &str, now: &str) -> Result<FailbackPlan, FailbackError> {
    let file = inv.dir.join(FILE_NAME);
    let Some(rec) = &inv.recovery else {
        return Err(FailbackError::NotLost {
            site: site.to_string(),
        });
    };
    if rec.lost.value != site {
        return Err(FailbackError::OtherSiteLost {
            lost: rec.lost.value.clone(),
            site: site.to_string(),
        });
    }
    let stamp = stamp(now);
    let mut vms = Vec::new();
    for vm in inv.vms.values() {
        let Some(home) = &vm.moved_from else {
            continue;
        };
        vms.push(VmBack {
            vm: vm.name.clone(),
            at: vm.host.value.clone(),
            at_kind: kind_of(inv, &vm.host),
            home: home.value.clone(),
            home_kind: kind_of(inv, home),
            services: inv
                .services
                .values()
                .filter(|s| s.host.value == vm.name)
                .map(|s| s.name.clone())
                .collect(),
            aside: aside_name(&vm.name, &stamp),
        });
    }
    let mut services = Vec::new();
    for s in inv.services.values() {
        let vm = inv
            .vms
            .get(s.host.as_str())
            .filter(|v| v.moved_from.is_some())
            .map(|v| v.name.clone());
        let home = match (&s.moved_from, &vm) {
            (Some(home), _) => home.value.clone(),
            (None, Some(vm)) => vm.clone(),
            (None, None) => continue,
        };
        let job = job_of(inv, &s.name);
        services.push(ServiceBack {
            service: s.name.clone(),
            at: s.host.value.clone(),
            home,
            vm,
            job: job.map(|j| j.name.clone()),
            data: job
                .map(|j| j.paths.iter().map(|p| p.value.clone()).collect())
                .unwrap_or_default(),
            dumps: job
                .map(|j| j.dumps.iter().map(|d| d.file_name()).collect())
                .unwrap_or_default(),
        });
    }
    if services.is_empty() && vms.is_empty() {
        return Err(FailbackError::NothingMoved {
            site: site.to_string(),
            file,
        });
    }
    let at_site = services
        .iter()
        .map(|s| s.at.as_str())
        .chain(vms.iter().map(|v| v.at.as_str()))
        .find_map(|m| inv.machine(m).and_then(|m| inv.site_of(m)))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut manual = Vec::new();
    for s in services.iter().filter(|s| s.vm.is_none()) {
        manual.push(format!(
            "point the public names of service `{}` back at `{}` (DNS records, reverse proxy) if the recovery pointed them at `{}`",
            s.service, s.home, s.at
        ));
    }
    for v in &vms {
        if v.home_kind != HypervisorKind::Libvirt {
            manual.push(format!(
                "VM `{}`: picaops reads a libvirt VM's host key back from its seed; for this one, if SSH says its key changed, \
                 check the key on its console and pin it again with `picaops inventory pin {}`",
                v.vm, v.vm
            ));
        }
        if inv
            .vms
            .get(&v.vm)
            .is_some_and(|m| m.ssh.address.is_some() && m.ssh.jump.is_none())
        {
            manual.push(format!(
                "VM `{}` has a fixed `address:`: if the recovery changed it for `{at_site}`, put its home address back",
                v.vm
            ));
        }
    }
    Ok(FailbackPlan {
        site: site.to_string(),
        at_site,
        since: rec.since.value.clone(),
        kept_copy: inv.dir.join(format!("{FILE_NAME}.failed-back-{stamp}")),
        recovery_file: file,
        services,
        vms,
        manual,
    })
}

// ---------------------------------------------------------------------------------------------
// The scripts, one per machine and step. Each prints `@@…` lines for the workstation and
// `@@error WHY` before a non-zero exit; what tools print goes to stderr.

const PRELUDE: &str = "set -u\n\
fail() { echo \"@@error $*\"; exit 3; }\n\
compose() {\n  \
  if docker compose version >/dev/null 2>&1; then docker compose \"$@\";\n  \
  elif command -v docker-compose >/dev/null 2>&1; then docker-compose \"$@\";\n  \
  else fail 'neither docker compose nor docker-compose is installed here'; fi\n}\n";

fn project_dir(service: &str) -> String {
    format!("{PROJECTS_DIR}/{service}")
}

/// Stops the recovery place's copies of `services` (containers stopped, nothing removed) and
/// the timers of `jobs` there, so that nothing is written after the backup that follows.
pub fn stop_script(services: &[String], jobs: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for job in jobs {
        s.push_str(&format!(
            "systemctl stop {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && compose -p {n} stop >&2 || fail \"docker compose -p \"{n}\" stop failed in \"{d}; cd /; \
             echo \"@@stopped service \"{n}; else echo \"@@absent service \"{n}; fi\n"
        ));
    }
    s
}

/// Starts the recovery place's copies again (a failback that did not succeed) and the timers.
pub fn start_script(services: &[String], jobs: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && compose -p {n} start >&2 || fail \"docker compose -p \"{n}\" start failed in \"{d}; cd /; \
             echo \"@@started service \"{n}; fi\n"
        ));
    }
    for job in jobs {
        s.push_str(&format!(
            "systemctl start {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    s
}

/// At home, before the restore: the job's timer and any running backup stopped, the stale home
/// copy stopped, and each data path moved aside (kept) so the snapshot is restored exactly.
pub fn home_prepare_script(
    service: &str,
    job: Option<&str>,
    data: &[String],
    stamp: &str,
) -> String {
    let mut s = String::from(PRELUDE);
    if let Some(job) = job {
        s.push_str(&format!(
            "systemctl stop {} {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job)),
            q(&units::service_name(job))
        ));
    }
    let (d, n) = (q(&project_dir(service)), q(service));
    s.push_str(&format!(
        "if [ -d {d} ]; then cd {d} && compose -p {n} stop >&2 || fail \"docker compose -p \"{n}\" stop failed in \"{d}; cd /; fi\n"
    ));
    for path in data {
        let (p, aside) = (q(path), q(&format!("{path}.before-failback-{stamp}")));
        s.push_str(&format!(
            "if [ -e {p} ]; then mv {p} {aside} || fail \"cannot move \"{p}\" aside (a mount point?): move what it holds aside by hand, then run the failback again\"; \
             echo \"@@aside \"{p}\" \"{aside}; fi\n"
        ));
    }
    s
}

/// At home, once the services are healthy: the jobs' timers started again.
pub fn home_timers_script(jobs: &[String]) -> String {
    let mut s = String::from("set -u\n");
    for job in jobs {
        s.push_str(&format!(
            "systemctl start {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    s
}

/// At the recovery place, once home is healthy: each project taken down (`down` without `-v`:
/// volumes and data stay) and its directory moved under `.removed/`, as `--prune-services`
/// does; each moved job's timer disabled and its job file set aside, so the stale copy is never
/// backed up under the home's name again.
pub fn take_down_script(services: &[String], jobs: &[String], stamp: &str) -> String {
    let mut s = String::from(PRELUDE);
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        let to = q(&format!("{PROJECTS_DIR}/.removed/{name}-{stamp}"));
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && compose -p {n} -f compose.yaml down --remove-orphans >&2 || fail \"docker compose -p \"{n}\" down failed in \"{d}; cd /; \
             mkdir -p {removed} && mv {d} {to} || fail \"cannot move \"{d}\" aside\"; echo \"@@removed service \"{n}\" \"{to}; fi\n",
            removed = q(&format!("{PROJECTS_DIR}/.removed")),
        ));
    }
    for job in jobs {
        let file = crate::backup::deploy::data_job_file(job);
        let dir = file.parent().unwrap_or(Path::new("/")).join(".failed-back");
        let to = dir.join(format!("{job}.json-{stamp}"));
        s.push_str(&format!(
            "systemctl disable --now {t} >/dev/null 2>&1 || true\n\
             if [ -f {f} ]; then mkdir -p {dir} && mv {f} {to} || fail \"cannot set \"{f}\" aside\"; echo \"@@set aside job \"{j}; fi\n",
            t = q(&units::timer_name(job)),
            f = q(&file.display().to_string()),
            dir = q(&dir.display().to_string()),
            to = q(&to.display().to_string()),
            j = q(job),
        ));
    }
    s
}

/// Waits for `vm` to be shut off (libvirt): a graceful shutdown, then, after two minutes,
/// libvirt's graceful destroy (its services were stopped and backed up before).
fn libvirt_shutdown(n: &str) -> String {
    format!(
        "if [ \"$(virsh -q domstate {n})\" != \"shut off\" ]; then\n  \
         virsh -q shutdown {n} >&2 || fail 'virsh shutdown failed'\n  \
         i=0; while [ \"$(virsh -q domstate {n})\" != \"shut off\" ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done\n  \
         [ \"$(virsh -q domstate {n})\" = \"shut off\" ] || virsh -q destroy --graceful {n} >&2 || fail 'the VM does not shut down'\nfi\n"
    )
}

fn proxmox_id(var: &str, name: &str) -> String {
    format!(
        "{var}=$(qm list | awk -v n={} '$2==n{{print $1}}')\n",
        q(name)
    )
}

/// At the recovery place: the VM's copy shut down, kept from starting with its host, and
/// renamed `aside` (disks kept), so the home copy is the only one under its name. Prints
/// `@@autostart enable|disable` (to undo) and `@@aside NAME`.
pub fn vm_aside_script(kind: HypervisorKind, vm: &str, aside: &str) -> String {
    let (n, a) = (q(vm), q(aside));
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&proxmox_id("done", aside));
            s.push_str(&format!(
                "if [ -z \"$id\" ] && [ -n \"$done\" ]; then echo \"@@aside \"{a}; exit 0; fi\n\
                 [ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 on=$(qm config \"$id\" | sed -n 's/^onboot: *//p'); [ \"${{on:-0}}\" = 1 ] && echo '@@autostart enable' || echo '@@autostart disable'\n\
                 if [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ]; then qm shutdown \"$id\" --timeout 120 >&2 || qm stop \"$id\" >&2 || fail 'the VM does not shut down'; fi\n\
                 qm set \"$id\" --onboot 0 --name {a} >&2 || fail 'qm set --name failed'\n\
                 echo \"@@aside \"{a}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "if ! virsh -q dominfo {n} >/dev/null 2>&1; then\n  \
                 virsh -q dominfo {a} >/dev/null 2>&1 && {{ echo \"@@aside \"{a}; exit 0; }}\n  \
                 fail \"no VM named \"{n}\" here\"\nfi\n\
                 [ \"$(virsh -q dominfo {n} | sed -n 's/^Autostart: *//p')\" = enable ] && echo '@@autostart enable' || echo '@@autostart disable'\n"
            ));
            s.push_str(&libvirt_shutdown(&n));
            s.push_str(&format!(
                "virsh -q autostart --disable {n} >/dev/null || fail 'virsh autostart --disable failed'\n\
                 virsh -q domrename {n} {a} >/dev/null || fail 'virsh domrename failed'\n\
                 echo \"@@aside \"{a}\n"
            ));
        }
    }
    s
}

/// Undoes [`vm_aside_script`]: the recovery copy renamed back, started with its host again if
/// it was, and started.
pub fn vm_back_script(kind: HypervisorKind, vm: &str, aside: &str, autostart: bool) -> String {
    let (n, a) = (q(vm), q(aside));
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", aside));
            s.push_str(&format!(
                "if [ -n \"$id\" ]; then qm set \"$id\" --name {n} --onboot {on} >&2 || fail 'qm set --name failed'; fi\n",
                on = u8::from(autostart)
            ));
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&format!(
                "[ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ] || qm start \"$id\" >&2 || fail 'qm start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "if virsh -q dominfo {a} >/dev/null 2>&1; then virsh -q domrename {a} {n} >/dev/null || fail 'virsh domrename failed'; fi\n"
            ));
            if autostart {
                s.push_str(&format!("virsh -q autostart {n} >/dev/null || true\n"));
            }
            s.push_str(&format!(
                "[ \"$(virsh -q domstate {n})\" = running ] || virsh -q start {n} >/dev/null || fail 'virsh start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
    }
    s
}

/// At home: the VM's host key as picaops gave it when it was created (read from its own
/// cloud-init seed, `@@hostkey TYPE KEY`; libvirt), then the VM started.
pub fn vm_home_start_script(kind: HypervisorKind, vm: &str) -> String {
    let n = q(vm);
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&format!(
                "[ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ] || qm start \"$id\" >&2 || fail 'qm start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "xml=$(virsh -q dumpxml --inactive {n} 2>/dev/null) || fail \"no VM named \"{n}\" here\"\n\
                 seed=$(printf '%s\\n' \"$xml\" | sed -n \"s:.*<source file='\\([^']*-seed\\.iso\\)'.*:\\1:p\" | head -n1)\n\
                 if [ -n \"$seed\" ] && [ -r \"$seed\" ] && command -v isoinfo >/dev/null 2>&1; then\n  \
                 key=$( (isoinfo -i \"$seed\" -R -x /user-data || isoinfo -i \"$seed\" -J -x /user-data) 2>/dev/null | sed -n 's/^ *ed25519_public: *\\([^ ]* [^ ]*\\).*/\\1/p' | head -n1)\n  \
                 [ -n \"$key\" ] && echo \"@@hostkey $key\"\nfi\n\
                 [ \"$(virsh -q domstate {n})\" = running ] || virsh -q start {n} >/dev/null || fail 'virsh start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
    }
    s
}

/// At home, when the VM's failback is undone: the home copy shut down again.
pub fn vm_home_stop_script(kind: HypervisorKind, vm: &str) -> String {
    let n = q(vm);
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(
                "if [ -n \"$id\" ] && [ \"$(qm status \"$id\" | awk '{print $2}')\" = running ]; then qm shutdown \"$id\" --timeout 120 >&2 || qm stop \"$id\" >&2 || fail 'the VM does not shut down'; fi\n",
            );
        }
        _ => {
            s.push_str(&format!("virsh -q dominfo {n} >/dev/null 2>&1 || exit 0\n"));
            s.push_str(&libvirt_shutdown(&n));
        }
    }
    s.push_str(&format!("echo \"@@stopped vm \"{n}\n"));
    s
}

// ---------------------------------------------------------------------------------------------
// The machines: the calls of the steps above, and the site runs (converge, services).

/// Runs calls on machines, resolving their names in the inventory given (placements move
/// during a failback).
pub type ExecIn<'a> =
    dyn FnMut(&Inventory, Vec<Call>, Option<Duration>) -> Result<Vec<Answer>, OpError> + 'a;

/// Which site run [`Remote::converge`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvergeRun {
    /// The home machines: VMs, then the playbooks (no services: their data comes first).
    Home,
    /// Only the playbooks' `backup`-tagged plays: the job files rewritten as the inventory now
    /// says (retention thawed once `recovery.yml` is gone, frozen again while it is back).
    JobFiles,
}

/// What did not end well in a site run, by machine and by service.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    pub machines: BTreeMap<String, String>,
    pub services: BTreeMap<String, String>,
}

/// What a failback does on machines: the calls of its steps, and the site runs.
pub trait Remote {
    fn exec(
        &mut self,
        inv: &Inventory,
        calls: Vec<Call>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Answer>, OpError>;
    /// A converge run over `machines` (every one failed, with why, if it cannot run at all).
    fn converge(&mut self, inv: &Inventory, machines: &[String], run: ConvergeRun) -> Failures;
    /// The services phase over `machines`, behind the health gate.
    fn deploy(&mut self, inv: &Inventory, machines: &[String]) -> Failures;
}

/// The real machines: calls through `exec` (SSH), site runs through the lifecycle.
pub struct Live<'a> {
    pub exec: &'a mut ExecIn<'a>,
    /// The playbooks home is converged with (empty: `playbooks/site.yml` beside the inventory).
    pub playbooks: Vec<PathBuf>,
    pub settings: Settings,
}

impl Live<'_> {
    fn playbooks(&self, inv: &Inventory) -> Vec<PathBuf> {
        crate::site::Request {
            inventory_dir: inv.dir.clone(),
            playbooks: self.playbooks.clone(),
            ..Default::default()
        }
        .playbook_files()
    }

    fn settings(&self) -> Settings {
        Settings {
            mode: Mode::Apply,
            ..self.settings.clone()
        }
    }

    fn all_failed(machines: &[String], why: String) -> Failures {
        Failures {
            machines: machines.iter().map(|m| (m.clone(), why.clone())).collect(),
            services: BTreeMap::new(),
        }
    }
}

impl Remote for Live<'_> {
    fn exec(
        &mut self,
        inv: &Inventory,
        calls: Vec<Call>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Answer>, OpError> {
        (self.exec)(inv, calls, timeout)
    }

    fn converge(&mut self, inv: &Inventory, machines: &[String], run: ConvergeRun) -> Failures {
        use crate::converge::phase::{ConvergePhase, ConvergeRequest};
        use crate::lifecycle::{RunContext, SiteRun};
        let limit = machines.join(",");
        let (targets, known_hosts) = match inventory::select::targets(inv, Some(&limit)) {
            Ok(t) => t,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let playbooks = self.playbooks(inv);
        let lock_wait = Duration::from_secs(60);
        let prepared = match run {
            ConvergeRun::Home => crate::site::prepare(
                inv.clone(),
                targets,
                known_hosts,
                self.settings(),
                &crate::site::Request {
                    inventory_dir: inv.dir.clone(),
                    playbooks,
                    limit: Some(limit),
                    lock_wait,
                    ..Default::default()
                },
            ),
            ConvergeRun::JobFiles => {
                let cx = RunContext {
                    inventory: std::sync::Arc::new(inv.clone()),
                    known_hosts,
                    settings: self.settings(),
                    selected: targets,
                    limited: true,
                };
                let mut run = SiteRun::new(
                    cx,
                    vec![Box::new(ConvergePhase::new(ConvergeRequest {
                        playbooks,
                        tags: vec!["backup".into()],
                        skip_tags: Vec::new(),
                        extra_vars: BTreeMap::new(),
                        lock_wait,
                        expected: None,
                    }))],
                );
                run.prepare().map(|()| run)
            }
        };
        match prepared
            .map_err(super::apply::RecoverError::from)
            .and_then(super::apply::run_blocking)
        {
            Ok(summary) => Failures {
                machines: super::apply::failed_machines(&summary),
                services: BTreeMap::new(),
            },
            Err(e) => Live::all_failed(machines, e.to_string()),
        }
    }

    fn deploy(&mut self, inv: &Inventory, machines: &[String]) -> Failures {
        use crate::lifecycle::{PhaseKind, RunContext, SiteRun};
        use crate::service::phase::{ServicesDetail, ServicesPhase};
        let limit = machines.join(",");
        let (targets, known_hosts) = match inventory::select::targets(inv, Some(&limit)) {
            Ok(t) => t,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let cx = RunContext {
            inventory: std::sync::Arc::new(inv.clone()),
            known_hosts,
            settings: self.settings(),
            selected: targets,
            limited: true,
        };
        let mut run = SiteRun::new(cx, vec![Box::new(ServicesPhase::new(false, None))]);
        let summary = match run
            .prepare()
            .map_err(super::apply::RecoverError::from)
            .and_then(|()| super::apply::run_blocking(run))
        {
            Ok(s) => s,
            Err(e) => return Live::all_failed(machines, e.to_string()),
        };
        let mut failures = Failures {
            machines: super::apply::failed_machines(&summary),
            services: BTreeMap::new(),
        };
        let detail = summary
            .phase(PhaseKind::Services)
            .and_then(|p| p.detail.as_any().downcast_ref::<ServicesDetail>());
        if let Some(d) = detail {
            for c in d.report.changes() {
                if let Some(e) = &c.error {
                    failures.services.insert(c.service.clone(), e.clone());
                }
            }
        }
        failures
    }
}

// ---------------------------------------------------------------------------------------------
// Carrying it out.

/// What `--apply` was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub site: String,
    /// Now, `YYYY-MM-DDTHH:MM:SSZ`: names what is set aside.
    pub now: String,
    /// How long a home VM may take to answer SSH once started.
    pub vm_wait: Duration,
}

/// How one service came home.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    pub home: String,
    /// Where it ran during the emergency.
    pub from: String,
    pub job: Option<String>,
    /// The snapshot home got (made by this run at the recovery place).
    pub snapshot: Option<String>,
    pub snapshot_time: Option<String>,
    /// From the start of the command until it was healthy at home with its data.
    pub healthy_after_seconds: Option<f64>,
    /// From its stop at the recovery place until it was healthy at home.
    pub downtime_seconds: Option<f64>,
    pub ok: bool,
    pub error: Option<String>,
    /// What is kept of it at the recovery place (or, on failure, that it runs there again).
    pub left: Option<String>,
    /// Its home data as it was before the failback, kept.
    pub home_data_kept: Vec<String>,
}

/// How one VM came home.
#[derive(Clone, Debug, Serialize)]
pub struct VmOutcome {
    pub vm: String,
    pub home: String,
    pub from: String,
    pub ok: bool,
    pub error: Option<String>,
    pub left: Option<String>,
}

/// The failback as it went.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub plan: FailbackPlan,
    /// Whether `recovery.yml` is gone (everything home); otherwise it holds what stays moved.
    pub recovery_removed: bool,
    pub kept_copy: Option<PathBuf>,
    /// Retention runs again on the repositories (job files rewritten).
    pub retention_thawed: bool,
    pub steps: Vec<Step>,
    pub services: Vec<ServiceOutcome>,
    pub vms: Vec<VmOutcome>,
    pub seconds: f64,
}

impl Outcome {
    /// 0 when everything came home healthy and the recovery place is cleared, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.steps.iter().all(|s| s.ok)
            && self.services.iter().all(|s| s.ok)
            && self.vms.iter().all(|v| v.ok)
        {
            crate::output::EXIT_OK
        } else {
            crate::output::EXIT_HOST_FAILED
        }
    }
}

/// How far a unit (a VM with its services, or one service) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Untouched,
    /// Its copies at the recovery place are stopped.
    Stopped,
    /// Its VM's recovery copy is shut down and renamed.
    Aside,
    /// `recovery.yml` no longer moves it: home is where it runs now.
    Home,
    /// Healthy at home.
    Done,
}

/// A VM with the services on it, or one service: what goes home (or stays) together.
struct Unit {
    vm: Option<usize>,
    services: Vec<usize>,
    stage: Stage,
    failed: Option<String>,
    /// The VM's recovery copy started with its host (to undo the set-aside).
    autostart: bool,
    /// The VM's pinned host key before home's was put back (to undo).
    old_key: Option<(String, String)>,
}

impl Unit {
    fn live(&self) -> bool {
        self.failed.is_none()
    }
    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }
}

/// The copies of services on one machine that a step acts on.
#[derive(Default)]
struct Copies {
    services: Vec<String>,
    jobs: Vec<String>,
    /// Their indexes in the plan.
    index: Vec<usize>,
}

impl Copies {
    fn add(&mut self, i: usize, s: &ServiceBack) {
        self.services.push(s.service.clone());
        self.jobs.extend(s.job.clone());
        self.index.push(i);
    }
}

/// One line of a script's answer.
struct Said {
    ok: bool,
    lines: Vec<String>,
    error: String,
}

fn said(a: &Answer) -> Said {
    match &a.result {
        Err(e) => Said {
            ok: false,
            lines: Vec::new(),
            error: e.message.clone(),
        },
        Ok(o) => {
            let stdout = o.stdout_lossy();
            let lines: Vec<String> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("@@"))
                .map(String::from)
                .collect();
            let error = lines
                .iter()
                .find_map(|l| l.strip_prefix("error "))
                .map(String::from)
                .unwrap_or_else(|| {
                    let err = o.stderr_lossy();
                    let last = err
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    format!("exit {}: {last}", o.exit_code)
                });
            Said {
                ok: o.success(),
                lines,
                error,
            }
        }
    }
}

fn call(machine: &str, what: &str, script: String) -> Call {
    Call {
        job: what.to_string(),
        machine: machine.to_string(),
        side: Side::Data,
        command: RemoteCommand::argv(["sh", "-c", script.as_str()]).with_become(true),
    }
}

const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs one call per machine; the answers by machine (a transport error for every one when
/// the calls could not be made at all).
fn round(
    remote: &mut dyn Remote,
    inv: &Inventory,
    calls: Vec<Call>,
    timeout: Duration,
) -> BTreeMap<String, Said> {
    let machines: Vec<String> = calls.iter().map(|c| c.machine.clone()).collect();
    if calls.is_empty() {
        return BTreeMap::new();
    }
    match remote.exec(inv, calls, Some(timeout)) {
        Ok(answers) => answers
            .iter()
            .map(|a| (a.call.machine.clone(), said(a)))
            .collect(),
        Err(e) => machines
            .into_iter()
            .map(|m| {
                (
                    m,
                    Said {
                        ok: false,
                        lines: Vec::new(),
                        error: e.to_string(),
                    },
                )
            })
            .collect(),
    }
}

fn load(dir: &Path) -> Result<Inventory, FailbackError> {
    super::apply::load(dir).map_err(|e| match e {
        super::apply::RecoverError::Invalid {
            diagnostics,
            sources,
            what,
        } => FailbackError::Invalid {
            diagnostics,
            sources,
            what,
        },
        other => FailbackError::Invalid {
            diagnostics: vec![Diagnostic::new(
                crate::diagnostic::Place::file(dir),
                other.to_string(),
            )],
            sources: Sources::default(),
            what: "in the inventory",
        },
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), FailbackError> {
    super::apply::write_atomically(path, text).map_err(|e| match e {
        super::apply::RecoverError::Write { path, source } => FailbackError::Write { path, source },
        other => FailbackError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// The state of the moves in `inv` minus those of units that went home: `recovery.yml` is
/// rewritten with the rest, or removed when nothing stays moved.
fn write_recovery(
    inv: &Inventory,
    plan: &FailbackPlan,
    units: &[Unit],
) -> Result<bool, FailbackError> {
    let Some(rec) = &inv.recovery else {
        return Ok(true);
    };
    let home_vms: BTreeSet<&str> = units
        .iter()
        .filter(|u| u.stage >= Stage::Home)
        .filter_map(|u| u.vm.map(|i| plan.vms[i].vm.as_str()))
        .collect();
    let home_services: BTreeSet<&str> = units
        .iter()
        .filter(|u| u.stage >= Stage::Home)
        .flat_map(|u| {
            u.services
                .iter()
                .map(|i| plan.services[*i].service.as_str())
        })
        .collect();
    let vms: Vec<(String, String)> = rec
        .vms
        .iter()
        .filter(|(k, _)| !home_vms.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let services: Vec<(String, String)> = rec
        .services
        .iter()
        .filter(|(k, _)| !home_services.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    if vms.is_empty() && services.is_empty() {
        match std::fs::remove_file(&plan.recovery_file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(FailbackError::Write {
                path: plan.recovery_file.clone(),
                source,
            }),
        }
    } else {
        write_file(
            &plan.recovery_file,
            &render(&plan.site, &plan.since, &vms, &services),
        )?;
        Ok(false)
    }
}

/// Calls `true` on `machines` until each answers or `wait` has passed; those that did not,
/// with why.
fn wait_for(
    remote: &mut dyn Remote,
    inv: &Inventory,
    machines: &[String],
    wait: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + wait;
    let mut left: Vec<String> = machines.to_vec();
    let mut why = BTreeMap::new();
    while !left.is_empty() {
        let calls = left
            .iter()
            .map(|m| call(m, "(answer)", "true".into()))
            .collect();
        let answers = round(remote, inv, calls, Duration::from_secs(30));
        left.retain(|m| match answers.get(m) {
            Some(s) if s.ok => {
                why.remove(m);
                false
            }
            Some(s) => {
                why.insert(m.clone(), s.error.clone());
                true
            }
            None => true,
        });
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        // A VM that is booting refuses connections at once: give it a moment between tries.
        std::thread::sleep(Duration::from_secs(2));
    }
    why.retain(|m, _| left.contains(m));
    why
}

/// Carries out the failback of `req.site` (see the module's text).
pub fn apply(dir: &Path, req: &Request, remote: &mut dyn Remote) -> Result<Outcome, FailbackError> {
    let moved = load(dir)?;
    let plan = plan(&moved, &req.site, &req.now)?;
    let mut f = Failback::new(dir, req, remote, moved, plan);
    f.probe()?;
    f.stop();
    f.backup();
    f.set_aside();
    // What failed so far runs again at the recovery place; nothing of it changed at home.
    let moved = f.moved.clone();
    f.undo_place(&moved);
    f.rewrite()?;
    f.home_vms()?;
    f.converge();
    f.data();
    f.services();
    f.undo_failed_home()?;
    f.take_down();
    f.job_files();
    Ok(f.outcome())
}

/// A failback under way: the plan, how far each unit went, and what was measured.
struct Failback<'a> {
    dir: &'a Path,
    req: &'a Request,
    remote: &'a mut dyn Remote,
    start: Instant,
    stamp: String,
    plan: FailbackPlan,
    /// The inventory as `recovery.yml` placed things at the start.
    moved: Inventory,
    /// The inventory as it is now (home placement for what went home).
    home: Inventory,
    units: Vec<Unit>,
    steps: Vec<Step>,
    /// The recovery place's machines taking part.
    place: BTreeSet<String>,
    /// By job: the snapshot this run made at the recovery place.
    snapshots: BTreeMap<String, SnapshotInfo>,
    /// By service (index in the plan): when its recovery copy stopped, when healthy at home.
    stopped_at: BTreeMap<usize, Instant>,
    healthy: BTreeMap<usize, Instant>,
    /// By service: its home data moved aside; what is kept of it at the recovery place.
    home_aside: BTreeMap<usize, Vec<String>>,
    left: BTreeMap<usize, String>,
    /// Services running again at the recovery place after a failure.
    restarted: BTreeSet<usize>,
    /// Machines converged at home (their job files are as the inventory now says).
    converged: BTreeSet<String>,
    kept_copy: Option<PathBuf>,
    recovery_removed: bool,
    removed_at_first: bool,
    retention_thawed: bool,
}

impl<'a> Failback<'a> {
    fn new(
        dir: &'a Path,
        req: &'a Request,
        remote: &'a mut dyn Remote,
        moved: Inventory,
        plan: FailbackPlan,
    ) -> Failback<'a> {
        // The units: each moved VM with the services on it, then each other moved service.
        let unit = |vm, services| Unit {
            vm,
            services,
            stage: Stage::Untouched,
            failed: None,
            autostart: false,
            old_key: None,
        };
        let mut units = Vec::new();
        for (i, v) in plan.vms.iter().enumerate() {
            let on_it = plan
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.vm.as_deref() == Some(v.vm.as_str()))
                .map(|(j, _)| j)
                .collect();
            units.push(unit(Some(i), on_it));
        }
        for (j, s) in plan.services.iter().enumerate() {
            if s.vm.is_none() {
                units.push(unit(None, vec![j]));
            }
        }
        let place = plan
            .services
            .iter()
            .map(|s| s.at.clone())
            .chain(plan.vms.iter().map(|v| v.at.clone()))
            .collect();
        Failback {
            dir,
            req,
            remote,
            start: Instant::now(),
            stamp: stamp(&req.now),
            home: moved.clone(),
            moved,
            plan,
            units,
            steps: Vec::new(),
            place,
            snapshots: BTreeMap::new(),
            stopped_at: BTreeMap::new(),
            healthy: BTreeMap::new(),
            home_aside: BTreeMap::new(),
            left: BTreeMap::new(),
            restarted: BTreeSet::new(),
            converged: BTreeSet::new(),
            kept_copy: None,
            recovery_removed: false,
            removed_at_first: false,
            retention_thawed: false,
        }
    }

    fn step(&mut self, name: &'static str, clock: Instant, ok: bool, detail: String) {
        self.steps.push(Step {
            step: name,
            ok,
            seconds: clock.elapsed().as_secs_f64(),
            detail,
        });
    }

    fn all_live(&self) -> bool {
        self.units.iter().all(Unit::live)
    }

    /// The live units' indexes.
    fn live(&self) -> Vec<usize> {
        (0..self.units.len())
            .filter(|&k| self.units[k].live())
            .collect()
    }

    /// Every machine at home a unit goes back to: the hypervisor and VM, the services' hosts.
    fn home_machines(&self, u: &Unit) -> Vec<String> {
        let mut m: Vec<String> = Vec::new();
        if let Some(i) = u.vm {
            m.push(self.plan.vms[i].home.clone());
            m.push(self.plan.vms[i].vm.clone());
        }
        m.extend(
            u.services
                .iter()
                .map(|i| self.plan.services[*i].home.clone()),
        );
        m.sort();
        m.dedup();
        m
    }

    /// Step 0: Every machine taking part answers, or nothing is done.
    fn probe(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let home_hosts: Vec<String> = self.plan.home_hosts().into_iter().collect();
        let probe: Vec<Call> = home_hosts
            .iter()
            .chain(self.place.iter().filter(|m| !home_hosts.contains(m)))
            .map(|m| call(m, "(answer)", "true".into()))
            .collect();
        let answers = self
            .remote
            .exec(&self.moved, probe, Some(Duration::from_secs(30)))
            .map_err(FailbackError::Probe)?;
        let down: BTreeMap<String, String> = answers
            .iter()
            .map(|a| (a.call.machine.clone(), said(a)))
            .filter(|(_, s)| !s.ok)
            .map(|(m, s)| (m, s.error))
            .collect();
        let home_down: Vec<(String, String)> = home_hosts
            .iter()
            .filter_map(|m| down.get(m).map(|w| (m.clone(), w.clone())))
            .collect();
        if !home_down.is_empty() {
            return Err(FailbackError::HomeUnreachable {
                machines: home_down,
            });
        }
        if !down.is_empty() {
            return Err(FailbackError::PlaceUnreachable {
                machines: down.into_iter().collect(),
            });
        }
        let detail = format!(
            "home ({}) and the recovery place ({}) answer",
            home_hosts.join(", "),
            self.place.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        self.step("answer", clock, true, detail);
        Ok(())
    }

    /// Step 1: Stopped at the recovery place (and their jobs' timers there), so that what the
    /// backup reads is the last word.
    fn stop(&mut self) {
        let clock = Instant::now();
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        for (i, s) in self.plan.services.iter().enumerate() {
            per_machine.entry(s.at.clone()).or_default().add(i, s);
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| call(m, "(stop)", stop_script(&c.services, &c.jobs)))
            .collect();
        let answers = round(self.remote, &self.moved, calls, STEP_TIMEOUT);
        let now = Instant::now();
        for u in &mut self.units {
            for i in u.services.clone() {
                let s = &self.plan.services[i];
                match answers.get(&s.at) {
                    Some(a) if a.ok => {
                        self.stopped_at.insert(i, now);
                    }
                    Some(a) => u.fail(format!("stopping it at {}: {}", s.at, a.error)),
                    None => u.fail(format!("stopping it at {}: no answer", s.at)),
                }
            }
            // Even partly stopped: a failure starts again whatever was.
            u.stage = Stage::Stopped;
        }
        let detail = format!(
            "{} service(s) stopped at the recovery place (nothing removed)",
            self.stopped_at.len()
        );
        let ok = self.all_live();
        self.step("stop", clock, ok, detail);
    }

    /// Step 2: Backed up there: the snapshot this makes is what home gets (checked to be the
    /// repository's newest: nothing else may have backed the job up since).
    fn backup(&mut self) {
        let clock = Instant::now();
        let jobs: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.units[k].services.clone())
            .filter_map(|i| self.plan.services[i].job.clone())
            .collect();
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        if !jobs.is_empty() {
            let (made, failed) = self.run_jobs(&jobs);
            errors.extend(failed);
            let listed: Vec<String> = made.keys().cloned().collect();
            if !listed.is_empty() {
                errors.extend(self.newest_of(&listed, &made));
            }
        }
        for u in self.units.iter_mut().filter(|u| u.live()) {
            for &i in &u.services.clone() {
                let job = self.plan.services[i].job.as_ref();
                if let Some(why) = job.and_then(|j| errors.get(j)) {
                    u.fail(why.clone());
                }
            }
        }
        let detail = format!(
            "{} job(s) backed up at the recovery place, {} failed",
            self.snapshots.len(),
            errors.len()
        );
        self.step("backup", clock, errors.is_empty(), detail);
    }

    /// `backup run` of `jobs` at the recovery place: the snapshot ids each made, and why the
    /// others did not.
    fn run_jobs(
        &mut self,
        jobs: &[String],
    ) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
        let moved = &self.moved;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(moved, calls, t);
        let (mut made, mut failed) = (BTreeMap::new(), BTreeMap::new());
        match ops::run(moved, jobs, &mut exec) {
            Ok(report) => {
                for l in report.jobs {
                    if !l.ok {
                        failed.insert(l.job, format!("backing it up at {}: {}", l.host, l.message));
                        continue;
                    }
                    let ids: Vec<String> = l.result["snapshots"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    made.insert(l.job, ids);
                }
            }
            Err(e) => {
                for j in jobs {
                    failed.insert(j.clone(), format!("backing it up: {e}"));
                }
            }
        }
        (made, failed)
    }

    /// The newest snapshots of `jobs` in their repositories, kept when they are the ones
    /// `made` lists; why not for the others.
    fn newest_of(
        &mut self,
        jobs: &[String],
        made: &BTreeMap<String, Vec<String>>,
    ) -> BTreeMap<String, String> {
        let moved = &self.moved;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(moved, calls, t);
        let mut errors = BTreeMap::new();
        let found = match ops::newest_snapshots(moved, jobs, &mut exec) {
            Ok(found) => found,
            Err(e) => {
                for j in jobs {
                    errors.insert(j.clone(), format!("listing its snapshots: {e}"));
                }
                return errors;
            }
        };
        for n in found {
            let ids = made.get(&n.job).cloned().unwrap_or_default();
            let ours = |id: &str| {
                ids.iter()
                    .any(|m| m.starts_with(id) || id.starts_with(m.as_str()))
            };
            match n.newest {
                Ok(Some(info)) => match info.latest.iter().find(|p| !ours(&p.id)) {
                    None => {
                        self.snapshots.insert(n.job, info);
                    }
                    Some(p) => {
                        let why = format!(
                            "the repository's newest {} snapshot of job {} ({} at {}) is not the one this failback made: \
                             something else backs the job up (a stale copy's timer?); stop it, then run the failback again",
                            p.part, n.job, p.short_id, p.time
                        );
                        errors.insert(n.job, why);
                    }
                },
                Ok(None) => {
                    let why = format!(
                        "job {} has no snapshot in its repository after its backup",
                        n.job
                    );
                    errors.insert(n.job, why);
                }
                Err(e) => {
                    errors.insert(n.job, e.to_string());
                }
            }
        }
        errors
    }

    /// Step 3: The moved VMs' recovery copies shut down, kept from starting with their host, and
    /// renamed (disks kept): the home copy is then the only one under its name.
    fn set_aside(&mut self) {
        let clock = Instant::now();
        let calls: Vec<Call> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm)
            .map(|i| {
                let v = &self.plan.vms[i];
                call(&v.at, &v.vm, vm_aside_script(v.at_kind, &v.vm, &v.aside))
            })
            .collect();
        let asked = calls.len();
        let answers = by_vm(self.remote, &self.moved, calls);
        for u in self.units.iter_mut().filter(|u| u.live()) {
            let Some(i) = u.vm else { continue };
            let v = &self.plan.vms[i];
            match answers.get(&v.vm) {
                Some(a) if a.ok => {
                    u.autostart = a.lines.iter().any(|l| l == "autostart enable");
                    u.stage = Stage::Aside;
                }
                Some(a) => u.fail(format!(
                    "setting VM {} aside on {}: {}",
                    v.vm, v.at, a.error
                )),
                None => u.fail(format!("setting VM {} aside on {}: no answer", v.vm, v.at)),
            }
        }
        let ok = self.all_live();
        self.step(
            "set aside",
            clock,
            ok,
            format!("{asked} VM(s) shut down and renamed at the recovery place (disks kept)"),
        );
    }

    /// Step 4: `recovery.yml` without what goes home (its old text kept beside it), and the
    /// inventory reloaded: home placement for those.
    fn rewrite(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let going = self.live();
        if !going.is_empty() {
            if let Ok(text) = std::fs::read_to_string(&self.plan.recovery_file) {
                write_file(&self.plan.kept_copy, &text)?;
                self.kept_copy = Some(self.plan.kept_copy.clone());
            }
            for k in &going {
                self.units[*k].stage = Stage::Home;
            }
            self.recovery_removed = write_recovery(&self.moved, &self.plan, &self.units)?;
            self.home = load(self.dir)?;
        }
        self.removed_at_first = self.recovery_removed;
        let detail = if going.is_empty() {
            "nothing goes home: left as it was".into()
        } else if self.recovery_removed {
            format!(
                "removed (kept as {})",
                self.plan
                    .kept_copy
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        } else {
            "rewritten with what stays at the recovery place".into()
        };
        self.step(FILE_NAME, clock, true, detail);
        Ok(())
    }

    /// Step 5: The home VMs started, their own host keys (read from their seeds) pinned again in
    /// place of their recovery copies', and answering.
    fn home_vms(&mut self) -> Result<(), FailbackError> {
        let clock = Instant::now();
        let calls: Vec<Call> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm)
            .map(|i| {
                let v = &self.plan.vms[i];
                call(&v.home, &v.vm, vm_home_start_script(v.home_kind, &v.vm))
            })
            .collect();
        let started = calls.len();
        if started == 0 {
            return Ok(());
        }
        let answers = by_vm(self.remote, &self.home, calls);
        let mut pinned = false;
        for u in self.units.iter_mut().filter(|u| u.live()) {
            let Some(i) = u.vm else { continue };
            let v = &self.plan.vms[i];
            match answers.get(&v.vm) {
                Some(a) if a.ok => {
                    let key = a.lines.iter().find_map(|l| l.strip_prefix("hostkey "));
                    if let Some(key) = key {
                        match repin(&self.home, &v.vm, key) {
                            Ok(Some(old)) => {
                                u.old_key = Some(old);
                                pinned = true;
                            }
                            Ok(None) => {}
                            Err(e) => u.fail(format!("pinning VM {}'s home host key: {e}", v.vm)),
                        }
                    }
                }
                Some(a) => u.fail(format!("starting VM {} on {}: {}", v.vm, v.home, a.error)),
                None => u.fail(format!("starting VM {} on {}: no answer", v.vm, v.home)),
            }
        }
        if pinned {
            self.home = load(self.dir)?;
        }
        let vms: Vec<String> = self
            .live()
            .into_iter()
            .filter_map(|k| self.units[k].vm.map(|i| self.plan.vms[i].vm.clone()))
            .collect();
        let silent = wait_for(self.remote, &self.home, &vms, self.req.vm_wait);
        for u in self.units.iter_mut().filter(|u| u.live()) {
            if let Some(why) = u.vm.and_then(|i| silent.get(&self.plan.vms[i].vm)) {
                u.fail(format!("its home VM does not answer SSH: {why}"));
            }
        }
        let ok = self.all_live();
        self.step(
            "home VMs",
            clock,
            ok,
            format!("{started} VM(s) started at home"),
        );
        Ok(())
    }

    /// Step 6: Home converged: the VMs, then the playbooks (backup job files as the inventory now
    /// says); not the services, whose data comes first.
    fn converge(&mut self) {
        let clock = Instant::now();
        let machines: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.home_machines(&self.units[k]))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if machines.is_empty() {
            return;
        }
        let f = self
            .remote
            .converge(&self.home, &machines, ConvergeRun::Home);
        for k in self.live() {
            let on = self.home_machines(&self.units[k]);
            if let Some((m, why)) = on.iter().find_map(|m| f.machines.get(m).map(|w| (m, w))) {
                self.units[k].fail(format!("converging home on {m}: {why}"));
            }
        }
        self.converged = machines
            .iter()
            .filter(|m| !f.machines.contains_key(*m))
            .cloned()
            .collect();
        let ok = self.all_live();
        let detail = format!("{} machine(s) converged at home", self.converged.len());
        self.step("converge", clock, ok, detail);
    }

    /// Step 7: At home, each service's stale copy stopped and its data moved aside (kept), then
    /// the snapshot's files restored in its place.
    fn data(&mut self) {
        let clock = Instant::now();
        for k in self.live() {
            for i in self.units[k].services.clone() {
                if let Err(why) = self.restore_home(i) {
                    self.units[k].fail(why);
                    break;
                }
            }
        }
        let ok = self.all_live();
        let detail = format!(
            "files restored at home for {} service(s); the home data from before is kept beside it",
            self.home_aside.len()
        );
        self.step("data", clock, ok, detail);
    }

    fn restore_home(&mut self, i: usize) -> Result<(), String> {
        let s = self.plan.services[i].clone();
        let script = home_prepare_script(&s.service, s.job.as_deref(), &s.data, &self.stamp);
        let answer = round(
            self.remote,
            &self.home,
            vec![call(&s.home, &s.service, script)],
            STEP_TIMEOUT,
        );
        match answer.get(&s.home) {
            Some(a) if a.ok => {
                let kept = a
                    .lines
                    .iter()
                    .filter_map(|l| l.strip_prefix("aside "))
                    .filter_map(|l| l.split_once(' ').map(|(_, to)| to.to_string()))
                    .collect();
                self.home_aside.insert(i, kept);
            }
            Some(a) => return Err(format!("preparing its data at {}: {}", s.home, a.error)),
            None => return Err(format!("preparing its data at {}: no answer", s.home)),
        }
        let (Some(job), Some(info)) = (&s.job, s.job.as_ref().and_then(|j| self.snapshots.get(j)))
        else {
            return Ok(());
        };
        let Some(files) = info.latest.iter().find(|p| p.part == "files") else {
            return Ok(());
        };
        let r = RestoreRequest {
            job,
            snapshot: Some(&files.id),
            to: Some(Path::new("/")),
            ..Default::default()
        };
        let home = &self.home;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(home, calls, t);
        done(ops::restore(home, &r, &mut exec))
            .map_err(|e| format!("restoring {job}'s files at {}: {e}", s.home))
    }

    /// Step 8: The services at home behind their health gate, then their dumps loaded.
    fn services(&mut self) {
        let clock = Instant::now();
        let machines: Vec<String> = self
            .live()
            .into_iter()
            .flat_map(|k| self.units[k].services.clone())
            .map(|i| self.plan.services[i].home.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !machines.is_empty() {
            let f = self.remote.deploy(&self.home, &machines);
            for u in self.units.iter_mut().filter(|u| u.live()) {
                for &i in &u.services.clone() {
                    let s = &self.plan.services[i];
                    if let Some(why) = f.services.get(&s.service) {
                        u.fail(format!("deploying it on {}: {why}", s.home));
                    } else if let Some(why) = f.machines.get(&s.home) {
                        u.fail(format!("deploying on {}: {why}", s.home));
                    }
                }
            }
        }
        for k in self.live() {
            for i in self.units[k].services.clone() {
                if let Err(why) = self.load_dumps(i) {
                    self.units[k].fail(why);
                    break;
                }
            }
        }
        for k in self.live() {
            self.units[k].stage = Stage::Done;
            for i in self.units[k].services.clone() {
                self.healthy.insert(i, Instant::now());
            }
        }
        let ok = self.all_live();
        let detail = format!(
            "{} service(s) healthy at home with their data",
            self.healthy.len()
        );
        self.step("services", clock, ok, detail);
    }

    fn load_dumps(&mut self, i: usize) -> Result<(), String> {
        let s = self.plan.services[i].clone();
        let (Some(job), Some(info)) = (&s.job, s.job.as_ref().and_then(|j| self.snapshots.get(j)))
        else {
            return Ok(());
        };
        let home = &self.home;
        let remote = &mut *self.remote;
        for part in info.latest.iter().filter(|p| p.part == "dump") {
            let dump = part.dump.clone().unwrap_or_default();
            let r = RestoreRequest {
                job,
                snapshot: Some(&part.id),
                dump: Some(&dump),
                load: true,
                ..Default::default()
            };
            let mut exec = |calls, t| remote.exec(home, calls, t);
            done(ops::restore(home, &r, &mut exec))
                .map_err(|e| format!("loading {dump} at {}: {e}", s.home))?;
        }
        Ok(())
    }

    /// What failed once home: stopped there, `recovery.yml` moving it again, and started again
    /// at the recovery place.
    fn undo_failed_home(&mut self) -> Result<(), FailbackError> {
        let failed: Vec<usize> = (0..self.units.len())
            .filter(|&k| !self.units[k].live() && self.units[k].stage >= Stage::Home)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let clock = Instant::now();
        undo_home(self.remote, &self.home, &self.plan, &self.units, &failed);
        for &k in &failed {
            self.units[k].stage = Stage::Aside;
        }
        self.recovery_removed = write_recovery(&self.moved, &self.plan, &self.units)?;
        let again = load(self.dir)?;
        self.undo_place(&again);
        self.home = again;
        let back = failed
            .iter()
            .flat_map(|k| self.units[*k].services.clone())
            .filter(|i| self.restarted.contains(i))
            .count();
        self.step(
            "back at the recovery place",
            clock,
            false,
            format!("{back} service(s) that did not come up at home run at the recovery place again ({FILE_NAME} moves them again)"),
        );
        Ok(())
    }

    /// Undoes, at the recovery place, what failed units went through there: each set-aside VM
    /// renamed back and started (then answering), each stopped service started again with its
    /// job's timer. `inv` places them at the recovery place.
    fn undo_place(&mut self, inv: &Inventory) {
        let todo: Vec<usize> = (0..self.units.len())
            .filter(|&k| {
                let u = &self.units[k];
                !u.live() && u.stage >= Stage::Stopped && u.stage < Stage::Home
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let plan = &self.plan;
        let calls: Vec<Call> = todo
            .iter()
            .filter(|&&k| self.units[k].stage >= Stage::Aside)
            .filter_map(|&k| self.units[k].vm.map(|i| (k, i)))
            .map(|(k, i)| {
                let v = &plan.vms[i];
                let back = vm_back_script(v.at_kind, &v.vm, &v.aside, self.units[k].autostart);
                call(&v.at, &v.vm, back)
            })
            .collect();
        let mut vm_ok: BTreeSet<String> = by_vm(self.remote, inv, calls)
            .into_iter()
            .filter(|(_, a)| a.ok)
            .map(|(vm, _)| vm)
            .collect();
        let vms: Vec<String> = vm_ok.iter().cloned().collect();
        let silent = wait_for(self.remote, inv, &vms, self.req.vm_wait);
        vm_ok.retain(|vm| !silent.contains_key(vm));
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        for &k in &todo {
            let u = &self.units[k];
            let vm_down =
                u.vm.is_some_and(|i| u.stage >= Stage::Aside && !vm_ok.contains(&plan.vms[i].vm));
            if vm_down {
                continue;
            }
            for &i in &u.services {
                per_machine
                    .entry(plan.services[i].at.clone())
                    .or_default()
                    .add(i, &plan.services[i]);
            }
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| call(m, "(start)", start_script(&c.services, &c.jobs)))
            .collect();
        let answers = round(self.remote, inv, calls, STEP_TIMEOUT);
        for (m, c) in &per_machine {
            if answers.get(m).is_some_and(|a| a.ok) {
                self.restarted.extend(c.index.iter().copied());
            }
        }
        for &k in &todo {
            self.units[k].stage = Stage::Untouched;
        }
    }

    /// Step 9: Home is healthy: the recovery place's copies taken down (data kept), their jobs'
    /// timers there disabled; home's timers started again.
    fn take_down(&mut self) {
        let clock = Instant::now();
        let done: Vec<usize> = (0..self.units.len())
            .filter(|&k| self.units[k].stage == Stage::Done)
            .collect();
        let mut per_machine: BTreeMap<String, Copies> = BTreeMap::new();
        let mut home_jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &k in &done {
            for &i in &self.units[k].services {
                let s = &self.plan.services[i];
                if let Some(job) = &s.job {
                    home_jobs
                        .entry(s.home.clone())
                        .or_default()
                        .push(job.clone());
                }
                if let Some(vm) = self.units[k].vm.map(|v| &self.plan.vms[v]) {
                    self.left.insert(
                        i,
                        format!(
                            "inside VM {}'s copy on {} (shut off, as {})",
                            vm.vm, vm.at, vm.aside
                        ),
                    );
                    continue;
                }
                per_machine.entry(s.at.clone()).or_default().add(i, s);
            }
        }
        if done.is_empty() {
            return;
        }
        let calls = per_machine
            .iter()
            .map(|(m, c)| {
                let script = take_down_script(&c.services, &c.jobs, &self.stamp);
                call(m, "(take down)", script)
            })
            .collect();
        let answers = round(self.remote, &self.home, calls, STEP_TIMEOUT);
        let mut errors = Vec::new();
        for (m, c) in &per_machine {
            for (&i, name) in c.index.iter().zip(&c.services) {
                let data = &self.plan.services[i].data;
                let left = match answers.get(m) {
                    Some(a) if a.ok => {
                        let to = a
                            .lines
                            .iter()
                            .find_map(|l| l.strip_prefix(&format!("removed service {name} ")))
                            .map(|to| format!("taken down on {m}; project kept in {to}"))
                            .unwrap_or_else(|| format!("nothing deployed on {m} any more"));
                        if data.is_empty() {
                            to
                        } else {
                            format!("{to}; data kept in {}", data.join(", "))
                        }
                    }
                    other => {
                        let why = other.map_or("no answer".to_string(), |a| a.error.clone());
                        errors.push(format!("{name} on {m}: {why}"));
                        format!(
                            "stopped on {m} but not taken down ({why}): take it down by hand (`docker compose -p {name} down`, no -v)"
                        )
                    }
                };
                self.left.insert(i, left);
            }
        }
        let calls = home_jobs
            .iter()
            .map(|(m, jobs)| call(m, "(timers)", home_timers_script(jobs)))
            .collect();
        let _ = round(self.remote, &self.home, calls, Duration::from_secs(60));
        let detail = if errors.is_empty() {
            format!(
                "{} service(s) taken down at the recovery place (no -v: volumes and data kept)",
                per_machine
                    .values()
                    .map(|c| c.services.len())
                    .sum::<usize>()
            )
        } else {
            errors.join("; ")
        };
        self.step("take down", clock, errors.is_empty(), detail);
    }

    /// Step 10: The backup job files rewritten where they matter: once everything is home, on the
    /// repositories' hosts and the recovery place (retention thawed); when some went back to
    /// the recovery place after home's were written without a lost site, on those again (frozen).
    fn job_files(&mut self) {
        let clock = Instant::now();
        if self.recovery_removed {
            let mut machines: BTreeSet<String> = self
                .home
                .backups
                .values()
                .map(|j| j.repository.host.value.clone())
                .collect();
            machines.extend(
                self.place
                    .iter()
                    .filter(|m| self.home.hosts.contains_key(*m))
                    .cloned(),
            );
            let machines: Vec<String> = machines
                .into_iter()
                .filter(|m| !self.converged.contains(m))
                .collect();
            let f = if machines.is_empty() {
                Failures::default()
            } else {
                self.remote
                    .converge(&self.home, &machines, ConvergeRun::JobFiles)
            };
            self.retention_thawed = f.machines.is_empty();
            let detail = if self.retention_thawed {
                "retention runs again: the repositories' job files rewritten".to_string()
            } else {
                format!(
                    "the job files of {} still freeze retention: run `picaops apply --tags backup -l {}`",
                    f.machines
                        .iter()
                        .map(|(m, w)| format!("{m} ({w})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    f.machines.keys().cloned().collect::<Vec<_>>().join(",")
                )
            };
            let ok = self.retention_thawed;
            self.step("thaw", clock, ok, detail);
        } else if self.removed_at_first && !self.converged.is_empty() {
            let machines: Vec<String> = self.converged.iter().cloned().collect();
            let f = self
                .remote
                .converge(&self.home, &machines, ConvergeRun::JobFiles);
            let detail = if f.machines.is_empty() {
                format!("retention frozen again on {}", machines.join(", "))
            } else {
                let failed: Vec<String> = f.machines.keys().cloned().collect();
                format!(
                    "retention may run on {}: run `picaops apply --tags backup -l {}`",
                    failed.join(", "),
                    failed.join(",")
                )
            };
            let ok = f.machines.is_empty();
            self.step("refreeze", clock, ok, detail);
        }
    }

    /// The report.
    fn outcome(self) -> Outcome {
        let services = self
            .plan
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| self.service_outcome(i, s))
            .collect();
        let vms = self
            .plan
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let error = self
                    .units
                    .iter()
                    .find(|u| u.vm == Some(i))
                    .and_then(|u| u.failed.clone());
                VmOutcome {
                    vm: v.vm.clone(),
                    home: v.home.clone(),
                    from: v.at.clone(),
                    ok: error.is_none(),
                    left: Some(if error.is_none() {
                        format!(
                            "shut off on {} as {} (disks kept); delete it when home is fine: `picaops apply -l {} --allow-destroy {}`",
                            v.at, v.aside, v.at, v.aside
                        )
                    } else {
                        format!("runs on {} (still moved in {FILE_NAME})", v.at)
                    }),
                    error,
                }
            })
            .collect();
        Outcome {
            seconds: self.start.elapsed().as_secs_f64(),
            plan: self.plan,
            recovery_removed: self.recovery_removed,
            kept_copy: self.kept_copy,
            retention_thawed: self.retention_thawed,
            steps: self.steps,
            services,
            vms,
        }
    }

    fn service_outcome(&self, i: usize, s: &ServiceBack) -> ServiceOutcome {
        let error = self
            .units
            .iter()
            .find(|u| u.services.contains(&i))
            .and_then(|u| u.failed.clone());
        let ok = error.is_none();
        let info = s.job.as_ref().and_then(|j| self.snapshots.get(j));
        let healthy = self.healthy.get(&i).filter(|_| ok);
        ServiceOutcome {
            service: s.service.clone(),
            home: s.home.clone(),
            from: s.at.clone(),
            job: s.job.clone(),
            snapshot: info.map(|i| {
                i.latest
                    .iter()
                    .find(|p| p.part == "files")
                    .map_or(i.short_id.clone(), |p| p.short_id.clone())
            }),
            snapshot_time: info.map(|i| i.time.clone()),
            healthy_after_seconds: healthy.map(|t| t.duration_since(self.start).as_secs_f64()),
            downtime_seconds: match (self.stopped_at.get(&i), healthy) {
                (Some(a), Some(b)) => Some(b.duration_since(*a).as_secs_f64()),
                _ => None,
            },
            ok,
            error,
            left: if ok {
                self.left.get(&i).cloned()
            } else if self.restarted.contains(&i) {
                Some(format!(
                    "runs again on {} (still moved in {FILE_NAME})",
                    s.at
                ))
            } else {
                Some(format!(
                    "NOT running on {}: start it there by hand (`docker compose -p {} start` in {})",
                    s.at,
                    s.service,
                    project_dir(&s.service)
                ))
            },
            home_data_kept: self.home_aside.get(&i).cloned().unwrap_or_default(),
        }
    }
}

/// Runs one call per VM (each named by its VM in `job`); the answers by VM.
fn by_vm(remote: &mut dyn Remote, inv: &Inventory, calls: Vec<Call>) -> BTreeMap<String, Said> {
    if calls.is_empty() {
        return BTreeMap::new();
    }
    let vms: Vec<String> = calls.iter().map(|c| c.job.clone()).collect();
    match remote.exec(inv, calls, Some(STEP_TIMEOUT)) {
        Ok(answers) => answers
            .iter()
            .map(|a| (a.call.job.clone(), said(a)))
            .collect(),
        Err(e) => vms
            .into_iter()
            .map(|vm| {
                let error = e.to_string();
                (
                    vm,
                    Said {
                        ok: false,
                        lines: Vec::new(),
                        error,
                    },
                )
            })
            .collect(),
    }
}

/// Pins `key` for `vm` in the inventory's known_hosts; the entry it replaced (to put it back),
/// or `None` when it was already the one pinned.
fn repin(
    inv: &Inventory,
    vm: &str,
    key: &str,
) -> Result<Option<(String, String)>, inventory::KnownHostsError> {
    let Some(m) = inv.vms.get(vm) else {
        return Ok(None);
    };
    let Some(address) = &m.ssh.address else {
        return Ok(None);
    };
    let name = crate::transport::known_hosts_name(address, m.ssh.port);
    let old = inv
        .known_hosts
        .iter()
        .find(|l| inventory::line_names(l, &name))
        .and_then(|l| l.split_once(' ').map(|(_, k)| k.to_string()));
    if old.as_deref() == Some(key) {
        return Ok(None);
    }
    inventory::record_host_key(&inv.dir, &name, key)?;
    Ok(Some((name, old.unwrap_or_default())))
}

/// Undoes, at home, what the failed units `failed` went through there: each service stopped
/// (a home VM shut down again), the pinned key of a VM's recovery copy put back.
fn undo_home(
    remote: &mut dyn Remote,
    inv: &Inventory,
    plan: &FailbackPlan,
    units: &[Unit],
    failed: &[usize],
) {
    let mut calls = Vec::new();
    let mut per_machine: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in failed.iter().map(|k| &units[*k]) {
        match u.vm {
            Some(i) => {
                let v = &plan.vms[i];
                calls.push(call(
                    &v.home,
                    &v.vm,
                    vm_home_stop_script(v.home_kind, &v.vm),
                ));
            }
            None => {
                for &i in &u.services {
                    let s = &plan.services[i];
                    per_machine
                        .entry(s.home.clone())
                        .or_default()
                        .push(s.service.clone());
                }
            }
        }
        if let Some((name, key)) = u.old_key.as_ref().filter(|(_, k)| !k.is_empty()) {
            let _ = inventory::record_host_key(&inv.dir, name, key);
        }
    }
    for (m, services) in &per_machine {
        // The data stays as restored; the home copy only stops.
        calls.push(call(m, "(stop)", stop_script(services, &[])));
    }
    if !calls.is_empty() {
        let _ = remote.exec(inv, calls, Some(STEP_TIMEOUT));
    }
}

/// `Ok` when every line of the report is, else the first failed line's message.
fn done(report: Result<ops::Report, OpError>) -> Result<(), String> {
    let report = report.map_err(|e| e.to_string())?;
    match report.jobs.iter().find(|l| !l.ok) {
        Some(l) => Err(format!("{}: {}", l.host, l.message)),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

impl crate::output::Shown for FailbackPlan {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The plan for people, in the order `--apply` does it.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        writeln!(
            w,
            "{} site `{}` comes home from `{}` (lost since {}, {})",
            out.paint(Style::Bold, "failback:"),
            self.site,
            self.at_site,
            self.since,
            self.recovery_file.display()
        )?;
        for s in &self.services {
            let data = match &s.job {
                Some(job) => {
                    let mut parts = s.data.clone();
                    parts.extend(s.dumps.iter().map(|d| format!("dump {d}")));
                    format!(
                        "stopped there, backed up by job {job} ({}), that snapshot restored at home",
                        parts.join(", ")
                    )
                }
                None => "no data".into(),
            };
            let route = match &s.vm {
                Some(vm) => format!("on VM {vm} (goes home with it)"),
                None => format!("from {} to {}", s.at, s.home),
            };
            writeln!(
                w,
                "  {} service {} {route}: {data}",
                out.paint(Style::Green, "<"),
                s.service,
            )?;
        }
        for v in &self.vms {
            writeln!(
                w,
                "  {} VM {} from {} to {}: its copy on {} shut down and kept as {}; the home copy started and converged",
                out.paint(Style::Green, "<"),
                v.vm,
                v.at,
                v.home,
                v.at,
                v.aside
            )?;
        }
        writeln!(
            w,
            "  then: {} removed (kept as {}), home's data moved aside before each restore (kept), \
             the services deployed behind their health gate; only once healthy are the copies at `{}` taken down \
             (compose down without -v, data kept); retention thawed when everything is home",
            FILE_NAME,
            self.kept_copy
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.at_site
        )?;
        writeln!(
            w,
            "  a service that does not come up at home is stopped there and started again at `{}` ({FILE_NAME} keeps it)",
            self.at_site
        )?;
        for step in &self.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        Ok(())
    }
}

impl crate::output::Shown for Outcome {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn exit_code(&self) -> i32 {
        Outcome::exit_code(self)
    }

    /// The failback for people: each step with its time, then each service and VM.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        let human = |s: f64| crate::sections::schedule::human_duration(s as u64);
        writeln!(
            w,
            "{} site `{}` from `{}`",
            out.paint(Style::Bold, "failback:"),
            self.plan.site,
            self.plan.at_site
        )?;
        for s in &self.steps {
            let mark = if s.ok {
                out.paint(Style::Green, "ok")
            } else {
                out.paint(Style::Red, "FAILED")
            };
            writeln!(
                w,
                "  {:<14} {mark:<6} {:>6.1} s  {}",
                s.step, s.seconds, s.detail
            )?;
        }
        for o in &self.services {
            match &o.error {
                None => writeln!(
                    w,
                    "  {} {} on {}{}, healthy after {} (down {}){}",
                    out.paint(Style::Green, "home"),
                    o.service,
                    o.home,
                    o.snapshot
                        .as_ref()
                        .map(|s| format!(" with snapshot {s}"))
                        .unwrap_or_default(),
                    o.healthy_after_seconds.map(human).unwrap_or_default(),
                    o.downtime_seconds.map(human).unwrap_or_default(),
                    o.left
                        .as_ref()
                        .map(|l| format!("; at {}: {l}", o.from))
                        .unwrap_or_default()
                )?,
                Some(e) => writeln!(
                    w,
                    "  {} {} (home {}): {e}; {}",
                    out.paint(Style::Red, "NOT HOME"),
                    o.service,
                    o.home,
                    o.left.clone().unwrap_or_default()
                )?,
            }
        }
        for v in &self.vms {
            let mark = if v.ok {
                out.paint(Style::Green, "home")
            } else {
                out.paint(Style::Red, "NOT HOME")
            };
            writeln!(
                w,
                "  {mark} VM {} on {}{}; {}",
                v.vm,
                v.home,
                v.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                v.left.clone().unwrap_or_default()
            )?;
        }
        if let Some(copy) = &self.kept_copy {
            writeln!(
                w,
                "  {} {}",
                if self.recovery_removed {
                    format!("{FILE_NAME} removed; its text is kept in")
                } else {
                    format!("{FILE_NAME} keeps what is still moved; its old text is in")
                },
                copy.display()
            )?;
        }
        for step in &self.plan.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        writeln!(w, "  total {:.1} s", self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::driver::sandbox::{hostile, Sandbox};

    /// A `virsh` keeping each domain as a directory (`state`, `autostart`, `xml`) under
    /// `$SANDBOX/doms`, for the VM scripts.
    const VIRSH: &str = r#"[ "$1" = -q ] && shift
d="$SANDBOX/doms"; cmd=$1; shift
echo "virsh $cmd $*" >> "$SANDBOX/virsh.log"
case "$cmd" in
  dominfo) [ -d "$d/$1" ] || exit 1; echo "Name: $1"; echo "Autostart: $(cat "$d/$1/autostart")" ;;
  domstate) [ -d "$d/$1" ] || exit 1; cat "$d/$1/state" ;;
  shutdown) echo "shut off" > "$d/$1/state" ;;
  destroy) [ "$1" = --graceful ] && shift; echo "shut off" > "$d/$1/state" ;;
  autostart) if [ "$1" = --disable ]; then echo disable > "$d/$2/autostart"; else echo enable > "$d/$1/autostart"; fi ;;
  domrename) [ "$(cat "$d/$1/state")" = "shut off" ] || exit 1; [ ! -e "$d/$2" ] || exit 1; mv "$d/$1" "$d/$2" ;;
  start) echo running > "$d/$1/state" ;;
  dumpxml) [ "$1" = --inactive ] && shift; [ -d "$d/$1" ] || exit 1; cat "$d/$1/xml" ;;
  *) exit 2 ;;
esac"#;

    fn domain(sb: &Sandbox, name: &str, state: &str, autostart: &str, xml: &str) {
        let d = sb.path().join("doms").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state"), format!("{state}\n")).unwrap();
        std::fs::write(d.join("autostart"), format!("{autostart}\n")).unwrap();
        std::fs::write(d.join("xml"), xml).unwrap();
    }

    fn read(sb: &Sandbox, name: &str, what: &str) -> String {
        std::fs::read_to_string(sb.path().join("doms").join(name).join(what))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn tool(name: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    }

    #[test]
    fn a_vm_copy_is_set_aside_renamed_and_shut_off_and_comes_back_as_it_was() {
        let sb = Sandbox::new(&[("virsh", VIRSH)]);
        domain(&sb, "vm-tls", "running", "enable", "");
        let aside = "vm-tls-failed-back-20261206-091500";
        let script = vm_aside_script(HypervisorKind::Libvirt, "vm-tls", aside);
        let (code, out) = sb.run(&script);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("@@autostart enable\n"), "{out}");
        assert!(out.contains(&format!("@@aside {aside}\n")), "{out}");
        assert!(!sb.path().join("doms/vm-tls").exists(), "{out}");
        assert_eq!(read(&sb, aside, "state"), "shut off");
        assert_eq!(read(&sb, aside, "autostart"), "disable");
        // Again (a failback run twice): already aside, nothing more done.
        let (code, out) = sb.run(&script);
        assert_eq!((code, out.trim()), (0, format!("@@aside {aside}").as_str()));

        // Undone: its name back, started with its host again, running.
        let (code, out) = sb.run(&vm_back_script(
            HypervisorKind::Libvirt,
            "vm-tls",
            aside,
            true,
        ));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("@@started vm vm-tls"), "{out}");
        assert!(!sb.path().join("doms").join(aside).exists());
        assert_eq!(read(&sb, "vm-tls", "state"), "running");
        assert_eq!(read(&sb, "vm-tls", "autostart"), "enable");
        let log = std::fs::read_to_string(sb.path().join("virsh.log")).unwrap();
        assert!(
            !log.contains("undefine") && !log.contains("destroy"),
            "{log}"
        );

        // No VM of that name: an error naming it.
        let (code, out) = sb.run(&vm_aside_script(HypervisorKind::Libvirt, "vm-x", "vm-x-a"));
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("@@error no VM named vm-x here"), "{out}");
    }

    #[test]
    fn the_home_vm_is_started_and_its_own_host_key_read_from_the_seed_picaops_made() {
        if !tool("genisoimage") || !tool("isoinfo") {
            let why = "needs genisoimage and isoinfo (Debian's genisoimage): run `bash .ci/setup`";
            assert!(std::env::var_os("PICAOPS_REQUIRE_LAB").is_none(), "{why}");
            eprintln!("SKIPPED {why}");
            return;
        }
        let sb = Sandbox::new(&[("virsh", VIRSH)]);
        // A seed as the libvirt driver writes it (user-data with the VM's host key).
        let seed = sb.path().join("seed");
        std::fs::create_dir(&seed).unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHomeCopyOfTheVm0123456789abcdefghijk";
        std::fs::write(
            seed.join("user-data"),
            format!("#cloud-config\nssh_keys:\n  ed25519_private: |\n    x\n  ed25519_public: {key} root@vm-tls\n"),
        )
        .unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: vm-tls\n").unwrap();
        let iso = sb.path().join("images/vm-tls-seed.iso");
        std::fs::create_dir_all(iso.parent().unwrap()).unwrap();
        let made = std::process::Command::new("genisoimage")
            .args(["-quiet", "-output"])
            .arg(&iso)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(seed.join("user-data"))
            .arg(seed.join("meta-data"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let xml = format!(
            "<domain><devices><disk type='file' device='cdrom'><source file='{}'/></disk></devices></domain>\n",
            iso.display()
        );
        domain(&sb, "vm-tls", "shut off", "enable", &xml);
        let (code, out) = sb.run(&vm_home_start_script(HypervisorKind::Libvirt, "vm-tls"));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("@@hostkey {key}\n")), "{out}");
        assert!(out.contains("@@started vm vm-tls"), "{out}");
        assert_eq!(read(&sb, "vm-tls", "state"), "running");
        // Without a seed: started, no key said (the pin stays as it is).
        domain(&sb, "vm-cpn", "shut off", "enable", "<domain/>");
        let (code, out) = sb.run(&vm_home_start_script(HypervisorKind::Libvirt, "vm-cpn"));
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("@@hostkey"), "{out}");
    }

    #[test]
    fn home_data_is_moved_aside_whole_and_kept_whatever_its_name() {
        let sb = Sandbox::new(&[(
            "systemctl",
            "echo \"systemctl $*\" >> \"$SANDBOX/systemctl.log\"",
        )]);
        let data = sb.path().join(hostile("data"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/f1"), "stale").unwrap();
        let path = data.display().to_string();
        let script = home_prepare_script(
            "picaops-test-absent",
            Some("hello"),
            std::slice::from_ref(&path),
            "20261206-091500",
        );
        let (code, out) = sb.run(&script);
        assert_eq!(code, 0, "{out}");
        assert_eq!(sb.pwned(), Vec::<String>::new(), "{out}");
        let aside = format!("{path}.before-failback-20261206-091500");
        assert!(!data.exists(), "{out}");
        assert_eq!(
            std::fs::read_to_string(Path::new(&aside).join("sub/f1")).unwrap(),
            "stale"
        );
        assert!(out.contains(&format!("@@aside {path} {aside}\n")), "{out}");
        let log = std::fs::read_to_string(sb.path().join("systemctl.log")).unwrap();
        assert_eq!(
            log,
            "systemctl stop picaops-backup-hello.timer picaops-backup-hello.service\n"
        );
        // Nothing there (a first failback of new data): nothing moved, no error.
        let (code, out) = sb.run(&script);
        assert_eq!((code, out.contains("@@aside")), (0, false), "{out}");
        // A path that cannot be moved (a mount point): refused, saying what to do.
        std::fs::create_dir_all(&data).unwrap();
        let sb2 = Sandbox::new(&[("mv", "exit 1"), ("systemctl", "true")]);
        let (code, out) = sb2.run(&script);
        assert_eq!(code, 3, "{out}");
        assert!(
            out.contains("(a mount point?): move what it holds aside by hand"),
            "{out}"
        );
    }

    #[test]
    fn names_of_what_is_set_aside() {
        assert_eq!(stamp("2026-12-04T18:30:00Z"), "20261204-183000");
        assert_eq!(
            aside_name("vm-tls", "20261204-183000"),
            "vm-tls-failed-back-20261204-183000"
        );
        let long = "v".repeat(60);
        let a = aside_name(&long, "20261204-183000");
        assert_eq!(a.len(), 63);
        assert!(a.ends_with("-failed-back-20261204-183000"));
        crate::vm::driver::check_name(&a).expect("a VM name picaops can delete later");
    }

    #[test]
    fn nothing_is_deleted_at_the_recovery_place() {
        let services = vec!["hello".to_string()];
        let jobs = vec!["hello".to_string()];
        for script in [
            stop_script(&services, &jobs),
            start_script(&services, &jobs),
            take_down_script(&services, &jobs, "20261204-183000"),
            vm_aside_script(HypervisorKind::Libvirt, "vm-tls", "vm-tls-x"),
            vm_aside_script(HypervisorKind::Proxmox, "vm-tls", "vm-tls-x"),
            home_prepare_script("hello", Some("hello"), &["/DATA/hello".into()], "s"),
        ] {
            for deletes in [
                "rm ",
                "down -v",
                "--volumes",
                "undefine",
                "remove-all-storage",
                "qm destroy",
            ] {
                assert!(!script.contains(deletes), "{deletes}: {script}");
            }
        }
        let down = take_down_script(&services, &jobs, "20261204-183000");
        assert!(down.contains("down --remove-orphans"), "{down}");
        assert!(
            down.contains("/var/lib/picaops/services/.removed/hello-20261204-183000"),
            "{down}"
        );
        assert!(
            down.contains("systemctl disable --now picaops-backup-hello.timer"),
            "{down}"
        );
    }
}
