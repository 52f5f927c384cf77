//! The VM part of `picaops plan` and `picaops apply`, and what `picaops vm` reads.
//!
//! 1. Read every hypervisor in scope (one round trip each, in the transport pool).
//! 2. Plan each VM (`super::plan`): create, adopt, update, delete; classified and authorised
//!    against `--allow-reboot` / `--allow-destroy NAME`. A VM declared on one host but found on
//!    another is refused (picaops does not move VMs).
//! 3. Apply (apply only): one script per VM, hypervisors in parallel; one host's failure never
//!    stops the others.
//! 4. Pin the host key each new VM got (generated on its hypervisor), then wait until SSH
//!    answers on every VM created or restarted, through its hypervisor when it has no address
//!    of its own, so the converge that follows finds them ready.
//!
//! Nothing here prints: the CLI renders the returned [`VmReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::driver::{parse_notes, DriverError, Hypervisor};
use super::model::{HostVms, Power, VmSpec};
use super::plan::{self, Allowed, VmAction, VmPlan};
use crate::inventory::{self, HypervisorKind, Inventory, Machine};
use crate::transport::{
    run_on_hosts, Connector, ErrorKind, PoolOptions, RemoteCommand, Target, Transport,
    TransportError,
};

/// Why picaops could not read or change the VMs of one hypervisor. `host` is its inventory
/// name.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("host `{host}` is not in the inventory")]
    UnknownHost { host: String },
    /// The inventory does not say how to reach it (its reason).
    #[error("{reason}")]
    Unreachable {
        host: String,
        reason: crate::inventory::NoAddress,
    },
    /// The script could not be sent or did not finish (the error names the host).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The script printed `@@timeout` (a graceful shutdown took too long) and failed.
    /// `stderr`: the last lines it wrote there, if any.
    #[error("timed out{}", colon(.stderr))]
    TimedOut { host: String, stderr: String },
    /// The script exited non-zero: its `@@error` lines, the last lines of its stderr.
    #[error("{}", script_failure(.errors, .stderr, *.exit_code))]
    ScriptFailed {
        host: String,
        errors: Vec<String>,
        stderr: String,
        exit_code: i32,
    },
    /// The driver could not build the script, or read what it printed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl HypervisorError {
    /// A graceful shutdown ran out of time and the script said nothing else: the caller can
    /// explain what that means for the VM.
    pub fn is_shutdown_timeout(&self) -> bool {
        matches!(self, HypervisorError::TimedOut { stderr, .. } if stderr.is_empty())
    }
}

/// `: TEXT`, or nothing for no text.
fn colon(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The `@@error` lines joined, then the stderr; `exit N` when the script said nothing.
fn script_failure(errors: &[String], stderr: &str, exit_code: i32) -> String {
    let why = errors.join("; ");
    match (why.is_empty(), stderr.is_empty()) {
        (true, true) => format!("exit {exit_code}"),
        (true, false) => stderr.to_string(),
        (false, _) => format!("{why}{}", colon(stderr)),
    }
}

/// Why a new or restarted VM's SSH could not be reached. `vm` is its inventory name.
#[derive(Debug, thiserror::Error)]
pub enum SshWaitError {
    /// The connector could not start (its control directory).
    #[error(transparent)]
    Connector(TransportError),
    /// A host key or authentication problem: waiting would not fix it.
    #[error("SSH to the VM failed: {source}")]
    Refused {
        vm: String,
        #[source]
        source: TransportError,
    },
    /// `last`: why the last attempt failed, if one was made.
    #[error(
        "SSH did not answer within {secs} s ({}). Look at its console: `picaops vm console {vm}`",
        .last.as_ref().map(ToString::to_string).unwrap_or_default()
    )]
    NoAnswer {
        vm: String,
        secs: u64,
        last: Option<TransportError>,
    },
}

/// Everything the VM phase needs, decided before any host is contacted.
pub struct VmJob {
    pub inventory: Inventory,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub forks: usize,
    /// Apply (true) or only plan.
    pub apply: bool,
    pub allowed: Allowed,
    /// How long a graceful ACPI shutdown may take before picaops gives up (nothing forced).
    pub shutdown_timeout: Duration,
    /// How long to wait for SSH on a VM after creating or restarting it.
    pub ssh_wait: Duration,
    pub scope: Scope,
}

/// Which VMs and hypervisors a run looks at.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Declared VMs this run manages.
    pub vms: BTreeSet<String>,
    /// Hypervisors read. On those selected themselves (or every one without `--limit`), VMs that
    /// picaops manages but the inventory no longer declares are planned for deletion.
    pub hosts: BTreeSet<String>,
    pub deletions_on: BTreeSet<String>,
}

impl Scope {
    /// The scope of a selection of machine names (`--limit` applied, or every machine).
    pub fn of(inv: &Inventory, selected: &[String], limited: bool) -> Scope {
        let mut s = Scope::default();
        for name in selected {
            if let Some(vm) = inv.vms.get(name) {
                s.vms.insert(name.clone());
                s.hosts.insert(vm.host.value.clone());
            } else if let Some(h) = inv.hosts.get(name) {
                if h.hypervisor != HypervisorKind::None {
                    s.hosts.insert(name.clone());
                    if limited {
                        s.deletions_on.insert(name.clone());
                    }
                }
            }
        }
        if !limited {
            s.deletions_on = s.hosts.clone();
        }
        s
    }
}

/// What happened to one VM.
#[derive(Clone, Debug, Serialize)]
pub struct VmOutcome {
    #[serde(flatten)]
    pub plan: VmPlan,
    /// Apply: `done`, `failed`, `refused`, `not run`. Plan: absent.
    pub status: Option<&'static str>,
    pub error: Option<String>,
    /// The SSH host key picaops pinned for a new VM.
    pub host_key: Option<String>,
    /// Milliseconds from the end of the hypervisor's work until SSH answered.
    pub ssh_ready_ms: Option<u64>,
}

/// One hypervisor's VMs.
#[derive(Clone, Debug, Serialize)]
pub struct HostVmReport {
    pub host: String,
    pub driver: &'static str,
    pub vms: Vec<VmOutcome>,
    /// Why the host (reading it, or applying there) failed.
    pub error: Option<String>,
    pub round_trips: u32,
    pub duration_ms: u64,
}

/// The whole VM phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VmReport {
    pub hosts: Vec<HostVmReport>,
    /// Problems found before contacting anything (a VM on a host without hypervisor…).
    pub errors: Vec<String>,
    /// The known_hosts file to use from now on (new VMs' keys pinned).
    #[serde(skip)]
    pub known_hosts: Option<PathBuf>,
}

impl VmReport {
    pub fn outcomes(&self) -> impl Iterator<Item = &VmOutcome> {
        self.hosts.iter().flat_map(|h| h.vms.iter())
    }

    /// Changes pending (plan) or made (apply).
    pub fn changes(&self) -> usize {
        self.outcomes().filter(|o| o.plan.is_change()).count()
    }

    pub fn refused(&self) -> usize {
        self.outcomes()
            .filter(|o| o.plan.refused.is_some() && o.plan.is_change())
            .count()
    }

    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
            || self
                .hosts
                .iter()
                .any(|h| h.error.is_some() || h.vms.iter().any(|v| v.status == Some("failed")))
    }

    /// Declared VMs that cannot be converged in this run, and why.
    pub fn not_ready(&self, inv: &Inventory, apply: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for h in &self.hosts {
            for o in &h.vms {
                if !inv.vms.contains_key(&o.plan.name) {
                    continue;
                }
                let why = if let Some(e) = &o.error {
                    Some(format!("its VM part failed: {e}"))
                } else if h.error.is_some() {
                    Some(format!("its hypervisor {} failed", h.host))
                } else if o.plan.action == VmAction::Create {
                    (!apply || o.status != Some("done")).then(|| {
                        if apply {
                            "it was not created".to_string()
                        } else {
                            "it does not exist yet: apply creates it, then converges it".to_string()
                        }
                    })
                } else if o
                    .plan
                    .state
                    .as_ref()
                    .is_some_and(|s| s.power != Power::Running)
                    && !(apply && o.status == Some("done") && o.plan.needs_restart())
                {
                    Some(format!(
                        "it is {} (start it with `picaops vm start {}`)",
                        o.plan
                            .state
                            .as_ref()
                            .map(|s| s.power.label())
                            .unwrap_or("?"),
                        o.plan.name
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    out.insert(o.plan.name.clone(), why);
                }
            }
            if h.error.is_some() {
                for (name, vm) in &inv.vms {
                    if vm.host.value == h.host {
                        out.entry(name.clone())
                            .or_insert_with(|| format!("its hypervisor {} failed", h.host));
                    }
                }
            }
        }
        out
    }
}

fn host_target(inv: &Inventory, host: &str) -> Result<Target, HypervisorError> {
    let h = inv
        .hosts
        .get(host)
        .ok_or_else(|| HypervisorError::UnknownHost {
            host: host.to_string(),
        })?;
    inventory::target(Machine::Host(h)).map_err(|reason| HypervisorError::Unreachable {
        host: host.to_string(),
        reason,
    })
}

/// Reads one hypervisor.
pub async fn read_host(
    driver: &dyn Hypervisor,
    host: &str,
    transport: &dyn Transport,
) -> Result<HostVms, HypervisorError> {
    let out = exec_script(transport, driver.read_script(), Duration::from_secs(120)).await?;
    Ok(driver.parse_read(host, &out)?)
}

/// Sends a script to `sh -s`; a non-zero exit is an error quoting the script's `@@error` lines
/// (or its stderr).
pub async fn exec_script(
    transport: &dyn Transport,
    script: String,
    timeout: Duration,
) -> Result<String, HypervisorError> {
    let host = transport.target().name.clone();
    keep_script(&host, &script);
    let cmd = RemoteCommand::argv(["sh", "-s"])
        .with_stdin(script)
        .with_become(true)
        .with_timeout(timeout);
    let out = transport.exec(&cmd).await?;
    let stdout = out.stdout_lossy();
    if out.success() {
        return Ok(stdout);
    }
    let notes = parse_notes(&stdout);
    let stderr = tail(out.stderr_lossy().trim(), 6);
    Err(if notes.timed_out {
        HypervisorError::TimedOut { host, stderr }
    } else {
        HypervisorError::ScriptFailed {
            host,
            errors: notes.errors,
            stderr,
            exit_code: out.exit_code,
        }
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `PICAOPS_KEEP_SCRIPTS=DIR` keeps every VM script sent, as for converge scripts.
fn keep_script(host: &str, text: &str) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::converge::keep_script(host, n, "vm", text);
}

/// Plans one host's VMs from what was read.
fn plan_host(job: &VmJob, driver: &dyn Hypervisor, read: &HostVms) -> Vec<VmPlan> {
    let inv = &job.inventory;
    let mut plans = Vec::new();
    for name in &job.scope.vms {
        let Some(vm) = inv.vms.get(name) else {
            continue;
        };
        if vm.host.value != read.host {
            continue;
        }
        let spec = VmSpec::from_inventory(inv, vm);
        let mut p = match &spec {
            Ok(spec) => plan::diff(name, &read.host, Some(spec), read.get(name)),
            Err(e) => {
                let mut p = plan::diff(name, &read.host, None, None);
                p.refused = Some(e.to_string());
                p
            }
        };
        for c in &mut p.changes {
            if c.not_applied.is_none() {
                c.not_applied = driver.cannot(&c.kind);
            }
        }
        if p.action == VmAction::Update && p.applied().next().is_none() {
            p.action = VmAction::Unchanged;
        }
        plans.push(p);
    }
    if job.scope.deletions_on.contains(&read.host) {
        for state in &read.vms {
            if let Some(vm) = inv.vms.get(&state.name) {
                // Declared: on this host it was planned above; on another host it is a conflict
                // (see `cross_host_conflicts`). A copy left on the host of a lost site it moved
                // away from is kept: fencing shut it down, the failback needs its disks.
                if vm.host.value == read.host
                    || vm.moved_from.as_ref().is_some_and(|h| h.value == read.host)
                {
                    continue;
                }
            }
            plans.push(plan::diff(&state.name, &read.host, None, Some(state)));
        }
    }
    for p in &mut plans {
        plan::authorize(p, &job.allowed);
    }
    plans
}

/// A VM declared on one host and present on another: never created twice, never deleted.
fn cross_host_conflicts(inv: &Inventory, reads: &BTreeMap<String, HostVms>, plans: &mut [VmPlan]) {
    for p in plans.iter_mut() {
        let Some(vm) = inv.vms.get(&p.name) else {
            continue;
        };
        let declared = &vm.host.value;
        let home = vm.moved_from.as_ref().map(|h| h.value.as_str());
        let elsewhere: Vec<&String> = reads
            .iter()
            .filter(|(h, r)| *h != declared && Some(h.as_str()) != home && r.get(&p.name).is_some())
            .map(|(h, _)| h)
            .collect();
        if elsewhere.is_empty() {
            continue;
        }
        let hosts: Vec<&str> = elsewhere.iter().map(|s| s.as_str()).collect();
        p.refused = Some(if p.host == *declared {
            format!(
                "a VM named {} already exists on {}, while the inventory puts it on {declared}: \
                 picaops does not move VMs. Fix `host:` in the inventory, or move it by hand",
                p.name,
                hosts.join(", ")
            )
        } else {
            format!(
                "declared on {declared} in the inventory: left alone here (picaops does not move VMs)"
            )
        });
    }
}

/// Runs the VM phase: read, plan, and (apply) change, pin, wait for SSH.
pub async fn run(job: Arc<VmJob>) -> VmReport {
    let mut report = VmReport::default();
    let inv = &job.inventory;
    // Hosts that cannot run VMs, named by a VM in scope.
    for name in &job.scope.vms {
        let vm = &inv.vms[name];
        if let Some(h) = inv.hosts.get(vm.host.as_str()) {
            if h.hypervisor == HypervisorKind::None {
                report.errors.push(format!(
                    "VM {name} is on {} ({}), whose `hypervisor:` is none: set it to libvirt or proxmox",
                    h.name, vm.host.place
                ));
            }
        }
    }
    let mut targets = Vec::new();
    for host in &job.scope.hosts {
        if inv
            .hosts
            .get(host)
            .is_some_and(|h| h.hypervisor != HypervisorKind::None)
        {
            match host_target(inv, host) {
                Ok(t) => targets.push(t),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
    let connector = match Connector::new(&job.known_hosts, job.connect_timeout, None) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    let opts = PoolOptions { forks: job.forks };

    // 1. Read.
    let reads = run_on_hosts(&targets, connector.clone(), &opts, None, {
        let job = job.clone();
        move |target, transport| {
            let job = job.clone();
            async move {
                let kind = job.inventory.hosts[&target.name].hypervisor;
                let driver = super::for_kind(kind).expect("hypervisor hosts only");
                Ok(read_host(driver.as_ref(), &target.name, transport.as_ref()).await)
            }
        }
    })
    .await;
    let mut read_ok: BTreeMap<String, HostVms> = BTreeMap::new();
    for o in reads {
        let kind = inv.hosts[&o.target.name].hypervisor;
        let mut h = HostVmReport {
            host: o.target.name.clone(),
            driver: super::for_kind(kind).map(|d| d.kind()).unwrap_or("none"),
            vms: Vec::new(),
            error: None,
            round_trips: 1,
            duration_ms: o.duration.as_millis() as u64,
        };
        match o.result {
            Ok(Ok(read)) => {
                read_ok.insert(h.host.clone(), read);
            }
            Ok(Err(e)) => h.error = Some(format!("reading its VMs failed: {e}")),
            Err(e) => h.error = Some(e.to_string()),
        }
        report.hosts.push(h);
    }

    // 2. Plan.
    let mut all_plans: BTreeMap<String, Vec<VmPlan>> = BTreeMap::new();
    for (host, read) in &read_ok {
        let driver = super::for_kind(inv.hosts[host].hypervisor).expect("hypervisor");
        let mut plans = plan_host(&job, driver.as_ref(), read);
        cross_host_conflicts(inv, &read_ok, &mut plans);
        all_plans.insert(host.clone(), plans);
    }
    for h in &mut report.hosts {
        if let Some(plans) = all_plans.remove(&h.host) {
            h.vms = plans
                .into_iter()
                .map(|plan| VmOutcome {
                    status: None,
                    error: None,
                    host_key: None,
                    ssh_ready_ms: None,
                    plan,
                })
                .collect();
        }
    }
    if !job.apply {
        return report;
    }

    // 3. Apply, host by host in parallel.
    let busy: Vec<Target> = targets
        .iter()
        .filter(|t| {
            report.hosts.iter().any(|h| {
                h.host == t.name && h.error.is_none() && h.vms.iter().any(|v| v.plan.acts())
            })
        })
        .cloned()
        .collect();
    let work: Arc<BTreeMap<String, (Vec<VmOutcome>, HostVms)>> = Arc::new(
        report
            .hosts
            .iter()
            .filter_map(|h| {
                Some((
                    h.host.clone(),
                    (h.vms.clone(), read_ok.get(&h.host)?.clone()),
                ))
            })
            .collect(),
    );
    let applied = run_on_hosts(&busy, connector, &opts, None, {
        let job = job.clone();
        let work = work.clone();
        move |target, transport| {
            let job = job.clone();
            let work = work.clone();
            async move {
                let (vms, read) = work[&target.name].clone();
                Ok(apply_host(&job, &target.name, vms, &read, transport.as_ref()).await)
            }
        }
    })
    .await;
    for o in applied {
        let Some(h) = report.hosts.iter_mut().find(|h| h.host == o.target.name) else {
            continue;
        };
        h.duration_ms += o.duration.as_millis() as u64;
        match o.result {
            Ok((vms, trips)) => {
                h.vms = vms;
                h.round_trips += trips;
            }
            Err(e) => {
                h.error = Some(format!("applying failed: {e}"));
                for v in &mut h.vms {
                    if v.plan.acts() && v.status.is_none() {
                        v.status = Some("not run");
                    }
                }
            }
        }
    }
    for h in &mut report.hosts {
        for v in &mut h.vms {
            if v.status.is_none() {
                v.status = Some(if v.plan.refused.is_some() && v.plan.is_change() {
                    "refused"
                } else {
                    "unchanged"
                });
            }
        }
    }

    // 4. Pin new keys (recorded in the inventory's known_hosts file for later runs, and in this
    //    run's copy of the inventory: nothing is read back from disk), then wait for SSH on what
    //    was created or restarted.
    let mut fresh: Option<Inventory> = None;
    for h in &mut report.hosts {
        for v in &mut h.vms {
            let (Some(key), Some(vm)) = (&v.host_key, inv.vms.get(&v.plan.name)) else {
                continue;
            };
            let Some(address) = &vm.ssh.address else {
                continue;
            };
            let name = crate::transport::known_hosts_name(address, vm.ssh.port);
            match inventory::record_host_key(&inv.dir, &name, key) {
                Ok(()) => {
                    let now = fresh.get_or_insert_with(|| inv.clone());
                    now.known_hosts.retain(|l| !inventory::line_names(l, &name));
                    now.known_hosts.push(format!("{name} {key}"));
                }
                Err(e) => {
                    v.status = Some("failed");
                    v.error = Some(format!(
                        "created, but its host key could not be pinned in {}: {e}",
                        inv.dir.join("known_hosts").display()
                    ));
                }
            }
        }
    }
    if let Some(now) = &fresh {
        match inventory::write_known_hosts(now) {
            Ok(path) => report.known_hosts = Some(path),
            Err(e) => report.errors.push(format!("cannot write known_hosts: {e}")),
        }
    }
    let inv_now = fresh.as_ref().unwrap_or(inv);
    let known_hosts = report
        .known_hosts
        .clone()
        .unwrap_or_else(|| job.known_hosts.clone());
    let waits: Vec<(usize, usize, Target)> = report
        .hosts
        .iter()
        .enumerate()
        .flat_map(|(hi, h)| {
            h.vms.iter().enumerate().filter_map(move |(vi, v)| {
                let restarted = v.plan.action == VmAction::Update
                    && v.plan.needs_restart()
                    && v.plan
                        .state
                        .as_ref()
                        .is_some_and(|s| s.power == Power::Running);
                let created = v.plan.action == VmAction::Create;
                (v.status == Some("done") && (created || restarted)).then_some((hi, vi))
            })
        })
        .filter_map(|(hi, vi)| {
            let name = &report.hosts[hi].vms[vi].plan.name;
            let vm = inv_now.vms.get(name)?;
            inventory::target(Machine::Vm(vm)).ok().map(|t| (hi, vi, t))
        })
        .collect();
    let results = futures::future::join_all(
        waits
            .iter()
            .map(|(_, _, t)| wait_for_ssh(t.clone(), known_hosts.clone(), job.ssh_wait)),
    )
    .await;
    for ((hi, vi, _), r) in waits.iter().zip(results) {
        let v = &mut report.hosts[*hi].vms[*vi];
        match r {
            Ok(ms) => v.ssh_ready_ms = Some(ms),
            Err(e) => {
                v.status = Some("failed");
                v.error = Some(e.to_string());
            }
        }
    }
    report
}

/// Applies one host's plans in order; the first failure stops the host (the VMs after it are
/// `not run`). Returns the outcomes and the round trips made.
async fn apply_host(
    job: &VmJob,
    host: &str,
    mut vms: Vec<VmOutcome>,
    read: &HostVms,
    transport: &dyn Transport,
) -> (Vec<VmOutcome>, u32) {
    let kind = job.inventory.hosts[host].hypervisor;
    let driver = super::for_kind(kind).expect("hypervisor host");
    let mut trips = 0;
    let mut stopped = false;
    let limit = job.shutdown_timeout + Duration::from_secs(300);
    for v in &mut vms {
        if !v.plan.acts() {
            continue;
        }
        if stopped {
            v.status = Some("not run");
            continue;
        }
        let incomplete = |missing| DriverError::IncompletePlan {
            vm: v.plan.name.clone(),
            missing,
        };
        let script = match v.plan.action {
            VmAction::Create => v
                .plan
                .spec
                .as_ref()
                .ok_or_else(|| incomplete("spec"))
                .and_then(|s| driver.create_script(s, read)),
            VmAction::Adopt => v
                .plan
                .state
                .as_ref()
                .ok_or_else(|| incomplete("state"))
                .and_then(|s| driver.adopt_script(s)),
            VmAction::Delete => v
                .plan
                .state
                .as_ref()
                .ok_or_else(|| incomplete("state"))
                .and_then(|s| driver.delete_script(s)),
            VmAction::Update => driver.update_script(&v.plan, read, job.shutdown_timeout),
            VmAction::Unchanged | VmAction::Unmanaged => continue,
        };
        let script = match script {
            Ok(s) => s,
            Err(e) => {
                v.status = Some("failed");
                v.error = Some(e.to_string());
                stopped = true;
                continue;
            }
        };
        trips += 1;
        match exec_script(transport, script, limit).await {
            Ok(out) => {
                v.status = Some("done");
                v.host_key = parse_notes(&out).host_key;
            }
            Err(e) => {
                v.status = Some("failed");
                v.error = Some(if e.is_shutdown_timeout() {
                    format!(
                        "it did not shut down within {} s after the ACPI request. Nothing was \
                         forced: it still runs with its old settings, the new ones are saved and \
                         apply at its next boot. Shut it down from inside, or `picaops vm stop \
                         {} --force`, then `picaops vm start {}`",
                        job.shutdown_timeout.as_secs(),
                        v.plan.name,
                        v.plan.name
                    )
                } else {
                    e.to_string()
                });
                stopped = true;
            }
        }
    }
    (vms, trips)
}

/// Polls until an SSH login on `target` works (through its jump host if it has one), or `wait`
/// runs out. A host key problem stops at once: waiting would not fix it.
pub async fn wait_for_ssh(
    target: Target,
    known_hosts: PathBuf,
    wait: Duration,
) -> Result<u64, SshWaitError> {
    let started = Instant::now();
    let connector = Connector::new(&known_hosts, Duration::from_secs(5), None)
        .map_err(SshWaitError::Connector)?;
    let mut last = None;
    while started.elapsed() < wait {
        match connector.connect(&target).await {
            Ok(t) => {
                let _ = t.close().await;
                return Ok(started.elapsed().as_millis() as u64);
            }
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::HostKeyChanged | ErrorKind::HostKeyUnknown | ErrorKind::AuthFailed
                ) =>
            {
                return Err(SshWaitError::Refused {
                    vm: target.name,
                    source: e,
                });
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(SshWaitError::NoAnswer {
        vm: target.name,
        secs: wait.as_secs(),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(errors: &[&str], stderr: &str, exit_code: i32) -> String {
        HypervisorError::ScriptFailed {
            host: "bob".into(),
            errors: errors.iter().map(|e| e.to_string()).collect(),
            stderr: stderr.into(),
            exit_code,
        }
        .to_string()
    }

    #[test]
    fn a_failed_script_says_its_errors_then_its_stderr_else_its_exit_code() {
        assert_eq!(failed(&["a", "b"], "", 3), "a; b");
        assert_eq!(failed(&["a"], "sudo: x", 3), "a: sudo: x");
        assert_eq!(failed(&[], "sudo: x", 1), "sudo: x");
        assert_eq!(failed(&[], "", 7), "exit 7");
    }

    #[test]
    fn only_a_bare_timeout_is_a_shutdown_timeout() {
        let bare = HypervisorError::TimedOut {
            host: "bob".into(),
            stderr: String::new(),
        };
        assert_eq!(bare.to_string(), "timed out");
        assert!(bare.is_shutdown_timeout());
        let noisy = HypervisorError::TimedOut {
            host: "bob".into(),
            stderr: "virsh: warning".into(),
        };
        assert_eq!(noisy.to_string(), "timed out: virsh: warning");
        assert!(!noisy.is_shutdown_timeout());
    }
}
