//! What `picaops plan` and `picaops apply` are: one [`SiteRun`] over the selected machines,
//! with the VM phase, then the converge phase, then the services phase (see `crate::lifecycle`
//! for what every phase does and how the run adds up to an exit code).
//!
//! - Naming playbooks runs only the converge phase over them; the default (no playbook named)
//!   runs `playbooks/site.yml` beside the inventory and ends with the Compose services.
//! - A saved plan (`plan --out FILE`, then `apply FILE`) covers every phase that ran: applying
//!   it first plans again, and refuses everything (nothing applied) if any machine of any phase
//!   moved since ([`moved_since`]).
//! - An apply updates the record of the machines it left failed, which `--limit @failed`
//!   selects ([`record_failed`]).
//!
//! Nothing here prints: [`render_human`] and [`render_json`] give the caller the output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::converge::phase::{ConvergeDetail, ConvergePhase, ConvergeRequest};
use crate::converge::saved::{self, SavedPlan};
use crate::inventory::Inventory;
use crate::lifecycle::{
    Phase, PhaseError, PhaseKind, RunContext, Settings, SiteRun, Status, Summary,
};
use crate::output::Output;
use crate::service::phase::ServicesPhase;
use crate::transport::Target;
use crate::vm::phase::{VmFlags, VmPhase};

/// What a plan or apply of the site was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The inventory directory (saved plans record it; the default playbook is beside it).
    pub inventory_dir: PathBuf,
    /// Playbooks to run; empty: `playbooks/site.yml` beside the inventory, then the services.
    pub playbooks: Vec<PathBuf>,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: BTreeMap<String, Value>,
    /// How long an apply waits for another run's lock on a host.
    pub lock_wait: Duration,
    /// Applying a plan saved by `plan --out`.
    pub saved: Option<SavedPlan>,
    pub vm: VmFlags,
    /// Take down Compose services no longer in the inventory.
    pub prune_services: bool,
}

impl Request {
    /// The playbooks the converge phase runs.
    pub fn playbook_files(&self) -> Vec<PathBuf> {
        if !self.playbooks.is_empty() {
            return self.playbooks.clone();
        }
        let dir = self
            .inventory_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        vec![dir.join("playbooks").join("site.yml")]
    }

    /// Whether the VM phase takes part: always, except for a saved plan made without it.
    fn with_vms(&self) -> bool {
        self.saved
            .as_ref()
            .is_none_or(|p| p.phases.contains_key(&PhaseKind::Vms))
    }

    /// Whether the services phase takes part: in a whole-site run (no playbook named), or as
    /// the saved plan says.
    fn with_services(&self) -> bool {
        match &self.saved {
            Some(p) => p.phases.contains_key(&PhaseKind::Services),
            None => self.playbooks.is_empty(),
        }
    }
}

/// A `-e` value that is neither `name=value` nor a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("-e {item:?}: {why}")]
pub struct BadExtraVar {
    pub item: String,
    pub why: String,
}

/// `-e` values: `name=value` pairs (text) and JSON objects, later ones winning.
pub fn parse_extra_vars(items: &[String]) -> Result<BTreeMap<String, Value>, BadExtraVar> {
    let mut vars = BTreeMap::new();
    for item in items {
        let t = item.trim();
        let bad = |why: String| BadExtraVar {
            item: t.to_string(),
            why,
        };
        if t.starts_with('{') {
            let obj: serde_json::Map<String, Value> =
                serde_json::from_str(t).map_err(|e| bad(format!("not a JSON object ({e})")))?;
            vars.extend(obj);
        } else if let Some((k, v)) = t.split_once('=') {
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(format!("`{k}` is not a variable name")));
            }
            vars.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            return Err(bad("write name=value, or a JSON object".into()));
        }
    }
    Ok(vars)
}

/// A prepared run of the site (every phase checked, nothing contacted yet).
pub fn prepare(
    inventory: Inventory,
    selected: Vec<Target>,
    known_hosts: PathBuf,
    settings: Settings,
    request: &Request,
) -> Result<SiteRun, PhaseError> {
    let mut phases: Vec<Box<dyn Phase>> = Vec::new();
    let fence = crate::fence::FencePhase::new(&inventory);
    if fence.has_work() && request.saved.is_none() {
        phases.push(Box::new(fence));
    }
    if request.with_vms() {
        phases.push(Box::new(VmPhase::new(request.vm.clone())));
    }
    phases.push(Box::new(ConvergePhase::new(ConvergeRequest {
        playbooks: request.playbook_files(),
        tags: request.tags.clone(),
        skip_tags: request.skip_tags.clone(),
        extra_vars: request.extra_vars.clone(),
        lock_wait: request.lock_wait,
        expected: request.saved.clone(),
    })));
    if request.with_services() {
        let expected = request
            .saved
            .as_ref()
            .and_then(|p| p.phases.get(&PhaseKind::Services).cloned());
        phases.push(Box::new(ServicesPhase::new(
            request.prune_services,
            expected,
        )));
    }
    let cx = RunContext {
        inventory: Arc::new(inventory),
        known_hosts,
        settings,
        selected,
        limited: request.limit.is_some(),
    };
    let mut run = SiteRun::new(cx, phases);
    run.prepare()?;
    if !run.has_work() {
        return Err(PhaseError::Usage(
            "no selected host is matched by any play's `hosts:`: nothing to do".into(),
        ));
    }
    Ok(run)
}

/// The run for scripts: the converge report's document (`mode`, `hosts`), with `vms` and
/// `services` beside it when those phases ran, and every machine's status per phase.
pub fn render_json(summary: &Summary) -> Value {
    let mut doc = match summary.phase(PhaseKind::Converge) {
        Some(p) => p.detail.json(),
        None => serde_json::json!({ "mode": summary.mode, "hosts": [] }),
    };
    for (kind, key) in [
        (PhaseKind::Fence, "fence"),
        (PhaseKind::Vms, "vms"),
        (PhaseKind::Services, "services"),
    ] {
        if let Some(p) = summary.phase(kind) {
            doc[key] = p.detail.json();
        }
    }
    doc["phases"] = summary.statuses_json();
    doc
}

/// The run for people, phase after phase.
pub fn render_human(summary: &Summary, out: &Output, w: &mut dyn Write) -> std::io::Result<()> {
    for p in &summary.phases {
        p.detail.human(out, w)?;
    }
    Ok(())
}

/// Saves the plan for `picaops apply FILE` (mode 0600): the request and, per phase and
/// machine, what was read and planned.
pub fn save_plan(summary: &Summary, request: &Request, path: &Path) -> std::io::Result<()> {
    let converge = summary
        .phase(PhaseKind::Converge)
        .and_then(|p| p.detail.as_any().downcast_ref::<ConvergeDetail>())
        .ok_or_else(|| std::io::Error::other("the run has no converge phase to save"))?;
    let plan = SavedPlan::from_report(
        &converge.report,
        SavedPlan {
            format: saved::MAGIC.into(),
            created: crate::converge::lock_info()
                .lines()
                .find_map(|l| l.strip_prefix("since="))
                .unwrap_or_default()
                .to_string(),
            inventory: request.inventory_dir.clone(),
            playbooks: request.playbook_files(),
            limit: request.limit.clone(),
            tags: request.tags.clone(),
            skip_tags: request.skip_tags.clone(),
            extra_vars: converge.extra_vars.clone(),
            hosts: BTreeMap::new(),
            phases: summary
                .phases
                .iter()
                .map(|p| (p.kind, p.plans.clone()))
                .collect(),
        },
    );
    plan.write(path)
}

/// After an apply, updates the inventory's record of failed machines (`--limit @failed`,
/// see [`crate::inventory::failed`]): a machine that failed, or had a change refused for want
/// of a flag, in any phase is added; one that every phase it took part in converged is
/// removed; one that was only skipped is kept as it was. Returns a line for people when the
/// record names machines now.
pub fn record_failed(
    summary: &Summary,
    inventory_dir: &Path,
) -> Result<Option<String>, crate::inventory::failed::RecordError> {
    let mut failed = std::collections::BTreeSet::new();
    let mut converged = std::collections::BTreeSet::new();
    for (_, m) in summary.statuses() {
        match m.status {
            Status::Failed { .. } | Status::Refused { .. } => {
                failed.insert(m.machine.clone());
            }
            Status::Unchanged | Status::Changed { .. } => {
                converged.insert(m.machine.clone());
            }
            Status::Skipped { .. } => {}
        }
    }
    converged.retain(|m| !failed.contains(m));
    let record = crate::inventory::failed::update(inventory_dir, &failed, &converged)?;
    if record.machines.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = record.machines.iter().map(|l| l.name.as_str()).collect();
    Ok(Some(format!(
        "recorded as failed: {} (in {}); `picaops apply --limit @failed` retries them",
        names.join(", "),
        record.path.display()
    )))
}

/// One machine of one phase that is not as the saved plan saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    pub phase: PhaseKind,
    pub machine: String,
    pub why: String,
}

/// What moved between a saved plan and `summary`, a plan made again from the same request:
/// a machine whose state or planned changes differ, one that could not be read now, one the
/// saved plan does not know, or a phase that did not run again.
pub fn moved_since(summary: &Summary, saved: &SavedPlan) -> Vec<Moved> {
    let mut moved = Vec::new();
    for (kind, machines) in &saved.phases {
        let Some(now) = summary.phase(*kind) else {
            moved.push(Moved {
                phase: *kind,
                machine: "(all)".into(),
                why: "this phase did not run again".into(),
            });
            continue;
        };
        for (machine, plan) in machines {
            let why = match now.plans.get(machine) {
                Some(p) => p.moved_from(Some(plan)).map(str::to_string),
                None => Some(match now.machines.iter().find(|m| &m.machine == machine) {
                    Some(m) => format!("it could not be read now ({:?})", m.status),
                    None => "it is no longer in the run".into(),
                }),
            };
            if let Some(why) = why {
                moved.push(Moved {
                    phase: *kind,
                    machine: machine.clone(),
                    why,
                });
            }
        }
        for machine in now.plans.keys().filter(|m| !machines.contains_key(*m)) {
            moved.push(Moved {
                phase: *kind,
                machine: machine.clone(),
                why: "it is not in the saved plan".into(),
            });
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::parse_extra_vars;

    #[test]
    fn extra_vars_are_pairs_or_json_objects_later_ones_winning() {
        let v = parse_extra_vars(&[
            "motd=Le serveur de Compiègne".into(),
            r#"{"motd": "json", "n": [1, 2]}"#.into(),
            " site = toulouse ".into(),
        ])
        .unwrap();
        assert_eq!(v["motd"], "json");
        assert_eq!(v["n"], serde_json::json!([1, 2]));
        assert_eq!(v["site"], " toulouse", "the item is trimmed, not the value");
        let e = parse_extra_vars(&["a-b=1".into()]).unwrap_err();
        assert_eq!(e.to_string(), r#"-e "a-b=1": `a-b` is not a variable name"#);
        assert!(parse_extra_vars(&["novalue".into()]).is_err());
        assert!(parse_extra_vars(&["{not json".into()]).is_err());
    }
}
