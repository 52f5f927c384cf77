//! Fencing (the first phase of every site run while a site is lost; below `site` and
//! `recovery`, beside the other phases): while `recovery.yml` says a site is lost, the stale copies its machines still hold
//! of the VMs and services (and the directory's slapd) that moved away are stopped before anything else runs, so that two
//! copies never serve at once when the site comes back: containers stopped, VMs shut down,
//! nothing deleted, every data directory and disk kept. A machine of the lost site that does
//! not answer is skipped (there is nothing to stop while it is down).

use std::any::Any;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::inventory::{HypervisorKind, Inventory};
use crate::lifecycle::{
    MachineStatus, Mode, Phase, PhaseError, PhaseKind, PhaseReport, Rendered, RunContext, Status,
};
use crate::output::{Output, Style};
use crate::transport::pool::{run_on_hosts, Connector, PoolOptions};
use crate::transport::quote::quote as q;
use crate::transport::{PoolEvent, RemoteCommand, Target};

/// What one machine of the lost site holds of what moved away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// Compose projects (services) that run elsewhere now.
    pub services: Vec<String>,
    /// VMs that run elsewhere now, and the kind of hypervisor this machine is.
    pub vms: Vec<String>,
    pub hypervisor: HypervisorKind,
    /// The LDAP directory moved away from this machine: its slapd is stale.
    pub directory: bool,
    /// Backup jobs whose data moved away from this machine: their timers here would back the
    /// stale copy up into the job's history.
    pub timers: Vec<String>,
}

/// The stale copies per machine of the lost site (empty without `recovery.yml`).
pub fn stale(inv: &Inventory) -> BTreeMap<String, Stale> {
    let mut out: BTreeMap<String, Stale> = BTreeMap::new();
    for s in inv.services.values() {
        if let Some(from) = &s.moved_from {
            out.entry(from.value.clone())
                .or_default()
                .services
                .push(s.name.clone());
        }
    }
    for v in inv.vms.values() {
        if let Some(from) = &v.moved_from {
            let e = out.entry(from.value.clone()).or_default();
            e.vms.push(v.name.clone());
            e.hypervisor = inv
                .hosts
                .get(from.as_str())
                .map_or(HypervisorKind::None, |h| h.hypervisor);
        }
    }
    let directory_home = inv
        .access
        .as_ref()
        .filter(|a| a.directory.moved_from.is_some())
        .and_then(|a| a.directory.backup.as_ref())
        .and_then(|job| inv.backups.get(job.as_str()))
        .and_then(|job| job.moved_from.as_ref());
    if let Some(home) = directory_home {
        out.entry(home.value.clone()).or_default().directory = true;
    }
    for job in inv.backups.values() {
        let home = match &job.holder {
            crate::sections::backup::Holder::Service(s) => inv
                .services
                .get(s.as_str())
                .and_then(|s| s.moved_from.as_ref()),
            crate::sections::backup::Holder::Host(_) => job.moved_from.as_ref(),
        };
        if let Some(home) = home {
            out.entry(home.value.clone())
                .or_default()
                .timers
                .push(job.name.clone());
        }
    }
    out
}

/// The script reading (and with `stop`, stopping) a machine's stale copies. It prints one line
/// per copy: `service NAME running|stopped|absent`, `vm NAME running|off|absent`,
/// `timer JOB running|stopped` or `directory slapd running|stopped`, then, for each one it
/// stopped, `stopped KIND NAME` (a timer is stopped and disabled: the failback's converge at
/// home enables it again).
pub fn script(stale: &Stale, stop: bool) -> String {
    let mut s = String::from("set -u\nrc=0\n");
    for name in &stale.services {
        let dir = format!("/var/lib/picaops/services/{name}");
        s.push_str(&format!(
            "if [ ! -d {d} ]; then echo \"service {n} absent\"; \
             elif [ -n \"$(docker ps -q --filter label=com.docker.compose.project={n} 2>/dev/null)\" ]; then \
               echo \"service {n} running\"; \
               {stop} \
             else echo \"service {n} stopped\"; fi\n",
            d = q(&dir),
            n = name,
            stop = if stop {
                format!(
                    "if (cd {d} && (docker compose -p {n} stop || docker-compose -p {n} stop)) >&2; \
                     then echo \"stopped service {n}\"; else rc=1; fi;",
                    d = q(&dir),
                    n = name
                )
            } else {
                String::new()
            }
        ));
    }
    for name in &stale.vms {
        let (state, shutdown) = match stale.hypervisor {
            HypervisorKind::Proxmox => (
                format!("id=$(qm list | awk -v n={n} '$2==n{{print $1}}'); if [ -z \"$id\" ]; then st=absent; else st=$(qm status \"$id\" | awk '{{print $2}}'); fi", n = q(name)),
                "qm shutdown \"$id\" --timeout 120 >&2".to_string(),
            ),
            _ => (
                format!("st=$(virsh domstate {n} 2>/dev/null || echo absent)", n = q(name)),
                format!(
                    "virsh shutdown {n} >&2; i=0; while [ \"$(virsh domstate {n} 2>/dev/null)\" = running ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done; \
                     [ \"$(virsh domstate {n} 2>/dev/null)\" = running ] && virsh destroy --graceful {n} >&2; true",
                    n = q(name)
                ),
            ),
        };
        s.push_str(&format!(
            "{state}\ncase \"$st\" in running) echo \"vm {n} running\"; {stop} ;; absent) echo \"vm {n} absent\" ;; *) echo \"vm {n} off\" ;; esac\n",
            n = name,
            stop = if stop {
                format!("if {shutdown}; then echo \"stopped vm {name}\"; else rc=1; fi")
            } else {
                ":".to_string()
            }
        ));
    }
    for job in &stale.timers {
        let t = q(&crate::backup::units::timer_name(job));
        s.push_str(&format!(
            "if systemctl is-active --quiet {t} || systemctl is-enabled --quiet {t} 2>/dev/null; then \
             echo \"timer {job} running\"; {stop} else echo \"timer {job} stopped\"; fi\n",
            stop = if stop {
                format!(
                    "if systemctl disable --now {t} >&2; then echo \"stopped timer {job}\"; else rc=1; fi;"
                )
            } else {
                String::new()
            }
        ));
    }
    if stale.directory {
        s.push_str(&format!(
            "if systemctl is-active --quiet slapd; then echo \"directory slapd running\"; {stop} \
             else echo \"directory slapd stopped\"; fi\n",
            stop = if stop {
                "if systemctl stop slapd >&2; then echo \"stopped directory slapd\"; else rc=1; fi;"
            } else {
                ""
            }
        ));
    }
    s.push_str("exit $rc\n");
    s
}

/// One machine's stale copies as read (and stopped).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FenceOutcome {
    pub machine: String,
    /// `service hello` / `vm vm-tls` → running, stopped, off, absent.
    pub copies: BTreeMap<String, String>,
    /// The copies this run stopped.
    pub stopped: Vec<String>,
    /// Not reachable (the lost site is still down): nothing could be, or had to be, stopped.
    pub unreachable: Option<String>,
    pub error: Option<String>,
}

impl FenceOutcome {
    fn running(&self) -> usize {
        self.copies.values().filter(|s| *s == "running").count()
    }
}

/// Parses the script's output.
pub fn parse(machine: &str, stdout: &str) -> FenceOutcome {
    let mut o = FenceOutcome {
        machine: machine.to_string(),
        ..Default::default()
    };
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stopped", kind, name] => o.stopped.push(format!("{kind} {name}")),
            [kind @ ("service" | "vm" | "directory" | "timer"), name, state] => {
                o.copies.insert(format!("{kind} {name}"), state.to_string());
            }
            _ => {}
        }
    }
    o
}

/// The fencing phase of a site run (only when `recovery.yml` is there).
pub struct FencePhase {
    stale: BTreeMap<String, Stale>,
    /// What every run of the emergency must say: moved services without an off-site backup.
    warnings: Vec<String>,
}

impl FencePhase {
    pub fn new(inv: &Inventory) -> FencePhase {
        FencePhase {
            stale: stale(inv),
            warnings: inv
                .backups
                .values()
                .filter_map(|j| {
                    crate::backup::jobfile::offsite_gap(inv, j)
                        .map(|g| format!("job {}: {g}", j.name))
                })
                .collect(),
        }
    }

    /// Whether anything is left to fence.
    pub fn has_work(&self) -> bool {
        !self.stale.is_empty()
    }
}

impl Phase for FencePhase {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Fence
    }

    fn prepare(&mut self, _cx: &RunContext) -> Result<(), PhaseError> {
        Ok(())
    }

    /// Every machine holding a stale copy, selected or not: fencing comes before anything
    /// else, whatever the limit.
    fn targets(&self, cx: &RunContext, _selected: &[Target]) -> Vec<Target> {
        self.stale
            .keys()
            .filter_map(|m| cx.inventory.machine(m))
            .filter_map(|m| crate::inventory::target(m).ok())
            .collect()
    }

    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>> {
        Box::pin(async move {
            let stop = cx.settings.mode == Mode::Apply;
            let connector = Connector::new(&cx.known_hosts, cx.settings.connect_timeout, None)
                .map_err(|e| PhaseError::Transport(PhaseKind::Fence, e))?;
            let scripts: Arc<BTreeMap<String, String>> = Arc::new(
                self.stale
                    .iter()
                    .map(|(m, s)| (m.clone(), script(s, stop)))
                    .collect(),
            );
            let opts = PoolOptions {
                forks: cx.settings.forks,
            };
            let outcomes = run_on_hosts(
                &targets,
                Arc::new(connector),
                &opts,
                events,
                move |t, transport| {
                    let scripts = scripts.clone();
                    async move {
                        let text = scripts.get(&t.name).cloned().unwrap_or_default();
                        let cmd = RemoteCommand::argv(["sh", "-c", text.as_str()])
                            .with_become(t.become_root);
                        transport.exec(&cmd).await
                    }
                },
            )
            .await;
            let lost = cx
                .inventory
                .recovery
                .as_ref()
                .map(|r| r.lost.value.clone())
                .unwrap_or_default();
            let mut report = FenceReport {
                mode: cx.settings.mode,
                machines: Vec::new(),
                warnings: self.warnings.clone(),
            };
            let mut machines = Vec::new();
            let mut hold_back = BTreeMap::new();
            for o in outcomes {
                let name = o.target.name.clone();
                let (outcome, status) = match o.result {
                    Err(e) => {
                        let why = format!("site `{lost}` is lost and {name} does not answer ({}): nothing to stop while it is down", e.kind.describe());
                        hold_back.insert(name.clone(), why.clone());
                        (
                            FenceOutcome {
                                machine: name.clone(),
                                unreachable: Some(why.clone()),
                                ..Default::default()
                            },
                            Status::Skipped { reason: why },
                        )
                    }
                    Ok(out) => {
                        let mut f = parse(&name, &out.stdout_lossy());
                        let status = if out.exit_code != 0 {
                            let why = format!(
                                "could not stop every stale copy: {}",
                                out.stderr_lossy().trim()
                            );
                            f.error = Some(why.clone());
                            Status::Failed { reason: why }
                        } else if stop {
                            Status::from_changes(f.stopped.len())
                        } else {
                            Status::from_changes(f.running())
                        };
                        (f, status)
                    }
                };
                machines.push(MachineStatus {
                    machine: name,
                    status,
                });
                report.machines.push(outcome);
            }
            Ok(PhaseReport {
                kind: PhaseKind::Fence,
                machines,
                // The later phases leave an unreachable machine of the lost site out, saying why,
                // instead of failing on it at every run of the emergency.
                hold_back,
                known_hosts: None,
                plans: BTreeMap::new(),
                detail: Box::new(report),
            })
        })
    }
}

/// What fencing found and did, per machine of the lost site.
#[derive(Clone, Debug, Serialize)]
pub struct FenceReport {
    pub mode: Mode,
    pub machines: Vec<FenceOutcome>,
    pub warnings: Vec<String>,
}

impl Rendered for FenceReport {
    fn human(&self, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
        for m in &self.machines {
            if let Some(why) = &m.unreachable {
                writeln!(w, "{} {}: {why}", out.paint(Style::Dim, "fence"), m.machine)?;
                continue;
            }
            for (copy, state) in &m.copies {
                let done = m.stopped.contains(copy);
                let (mark, what) = match (state.as_str(), done, self.mode) {
                    ("running", true, _) => (
                        out.paint(Style::Yellow, "stopped"),
                        "stale copy (it runs elsewhere now); data kept",
                    ),
                    ("running", false, Mode::Plan) => (
                        out.paint(Style::Yellow, "stop"),
                        "stale copy: apply stops it first (data kept)",
                    ),
                    ("running", false, _) => {
                        (out.paint(Style::Red, "RUNNING"), "stale copy still running")
                    }
                    _ => (out.paint(Style::Dim, "fenced"), "stale copy, not running"),
                };
                writeln!(w, "{mark} {} on {}: {what}", copy, m.machine)?;
            }
            if let Some(e) = &m.error {
                writeln!(w, "{} {}: {e}", out.paint(Style::Red, "error"), m.machine)?;
            }
        }
        for warning in &self.warnings {
            writeln!(w, "{} {warning}", out.paint(Style::Yellow, "warning:"))?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_stops_only_when_applying_and_its_output_reads_back() {
        let s = Stale {
            services: vec!["hello".into()],
            vms: vec!["vm-tls".into()],
            hypervisor: HypervisorKind::Libvirt,
            directory: true,
            timers: vec!["hello".into()],
        };
        let plan = script(&s, false);
        assert!(
            !plan.contains("compose -p hello stop")
                && !plan.contains("virsh shutdown")
                && !plan.contains("systemctl stop slapd")
                && !plan.contains("disable --now"),
            "{plan}"
        );
        let apply = script(&s, true);
        assert!(
            apply.contains("docker compose -p hello stop")
                && apply.contains("virsh shutdown")
                && apply.contains("systemctl stop slapd")
                && apply.contains("systemctl disable --now picaops-backup-hello.timer"),
            "{apply}"
        );
        assert!(
            !apply.contains(" down") && !apply.contains("undefine") && !apply.contains("rm "),
            "nothing deleted: {apply}"
        );
        let o = parse(
            "bob",
            "service hello running\nvm vm-tls off\ndirectory slapd running\nstopped service hello\nstopped directory slapd\n",
        );
        assert_eq!(o.copies["service hello"], "running");
        assert_eq!(o.copies["directory slapd"], "running");
        assert_eq!(o.copies["vm vm-tls"], "off");
        assert_eq!(o.stopped, ["service hello", "directory slapd"]);
    }
}
