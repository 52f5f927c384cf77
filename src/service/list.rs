//! `picaops service list`: per service, its machine, containers, state, health, image versions
//! and drift (does the machine run what the inventory says?), from one read per machine.

use serde::Serialize;

use super::plan::{self, Action};
use super::render::Project;
use super::state::MachineState;

/// One line of the list.
#[derive(Debug, Serialize, Clone)]
pub struct Row {
    pub service: String,
    pub machine: String,
    pub containers: Vec<String>,
    pub running: usize,
    pub total: usize,
    /// `running`, `partly running`, `stopped`, `not deployed`.
    pub state: String,
    /// `healthy`, `unhealthy (web)`, `starting`, `-` (no healthcheck).
    pub health: String,
    pub images: Vec<String>,
    /// `none`, `files differ`, `not running`, `not deployed`, `not in the inventory`, `unknown`.
    pub drift: String,
}

/// The rows of one machine. `projects` are the inventory's projects on it (rendered: drift is
/// known), or only their names when rendering failed (`None`: drift unknown).
pub fn rows(
    machine: &str,
    names: &[String],
    projects: Option<&[&Project]>,
    state: &MachineState,
) -> Vec<Row> {
    let mut out = Vec::new();
    let extra = state.deployed.iter().filter(|d| !names.contains(d));
    for name in names.iter().chain(extra) {
        let ctrs: Vec<_> = state.containers_of(name).collect();
        let running = ctrs.iter().filter(|c| c.running()).count();
        let mut containers: Vec<String> = ctrs.iter().map(|c| c.service.clone()).collect();
        containers.dedup();
        let mut images: Vec<String> = ctrs.iter().map(|c| c.image.clone()).collect();
        images.sort();
        images.dedup();
        let unhealthy: Vec<&str> = ctrs
            .iter()
            .filter(|c| c.health() == "unhealthy")
            .map(|c| c.service.as_str())
            .collect();
        let health = if !unhealthy.is_empty() {
            format!("unhealthy ({})", unhealthy.join(", "))
        } else if ctrs.iter().any(|c| c.health() == "starting") {
            "starting".into()
        } else if ctrs.iter().any(|c| c.health() == "healthy") {
            "healthy".into()
        } else {
            "-".into()
        };
        let deployed = state.deployed.contains(name);
        let state_text = match (deployed, running, ctrs.len()) {
            (false, 0, 0) => "not deployed",
            (_, 0, _) => "stopped",
            (_, r, t) if r == t => "running",
            _ => "partly running",
        };
        let drift = if !names.contains(name) {
            "not in the inventory".to_string()
        } else {
            match projects.and_then(|ps| ps.iter().find(|p| &p.service == name)) {
                None => "unknown".into(),
                Some(p) => match plan::diff(p, state).action {
                    Action::Unchanged => "none".into(),
                    Action::Create => "not deployed".into(),
                    Action::Update => "files differ".into(),
                    Action::Start => "not running".into(),
                    Action::Remove => "not in the inventory".into(),
                },
            }
        };
        out.push(Row {
            service: name.clone(),
            machine: machine.to_string(),
            total: ctrs.len(),
            containers,
            running,
            state: state_text.into(),
            health,
            images,
            drift,
        });
    }
    out
}
