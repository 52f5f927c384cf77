//! `picaops service list`: per service, its machine, containers, state, health, image versions
//! and drift (does the machine run what the inventory says?), from one read per machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::plan::{self, Action};
use super::render::Project;
use super::state::{self, MachineState};
use crate::inventory::Inventory;
use crate::transport::{run_on_hosts, Connector, PoolEvent, PoolOptions, Target, TransportError};

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

/// How `service list` reaches the machines.
pub struct Request {
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub forks: usize,
    /// No `--limit`: services not managed by picaops (no `compose:`) are listed wherever they are.
    pub whole_site: bool,
}

/// A machine that could not be read.
#[derive(Debug, Serialize)]
pub struct MachineError {
    pub machine: String,
    pub error: String,
}

/// The whole list: managed services first (as read, machine by machine), then the declared-only.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub services: Vec<Row>,
    pub errors: Vec<MachineError>,
}

/// Reads every target once (the inventory's services on it, and their rendered `projects` when
/// known, for drift) and lists what runs there, with the services picaops does not manage.
pub async fn list(
    inv: &Inventory,
    targets: &[Target],
    projects: Option<Vec<Project>>,
    request: &Request,
    events: Option<UnboundedSender<PoolEvent>>,
) -> Result<Listing, TransportError> {
    let names = |machine: &str| -> Vec<String> {
        inv.services
            .values()
            .filter(|s| s.deploy.is_some() && s.host.as_str() == machine)
            .map(|s| s.name.clone())
            .collect()
    };
    let per_machine: Arc<PerMachine> = Arc::new(
        targets
            .iter()
            .map(|t| {
                let ps = projects
                    .as_ref()
                    .map(|ps| ps.iter().filter(|p| p.machine == t.name).cloned().collect());
                (t.name.clone(), (names(&t.name), ps))
            })
            .collect(),
    );
    let mut listing = Listing {
        services: Vec::new(),
        errors: Vec::new(),
    };
    if !targets.is_empty() {
        let connector = Arc::new(Connector::new(
            &request.known_hosts,
            request.connect_timeout,
            None,
        )?);
        let outcomes = run_on_hosts(
            targets,
            connector,
            &PoolOptions {
                forks: request.forks,
            },
            events,
            move |target: Target, transport: Arc<dyn crate::transport::Transport>| {
                let per_machine = per_machine.clone();
                async move {
                    let (names, projects) =
                        per_machine.get(&target.name).cloned().unwrap_or_default();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let state = state::read(transport.as_ref(), &refs).await?;
                    let ps: Option<Vec<&Project>> = projects.as_ref().map(|v| v.iter().collect());
                    Ok(rows(&target.name, &names, ps.as_deref(), &state))
                }
            },
        )
        .await;
        for o in outcomes {
            match o.result {
                Ok(r) => listing.services.extend(r),
                Err(e) => listing.errors.push(MachineError {
                    machine: o.target.name.clone(),
                    error: e.to_string(),
                }),
            }
        }
    }
    // Declared-only services are listed without contacting anyone.
    let read: std::collections::BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    listing.services.extend(
        inv.services
            .values()
            .filter(|s| {
                s.deploy.is_none()
                    && inv
                        .machine(&s.host)
                        .is_some_and(|m| read.contains(m.name()) || request.whole_site)
            })
            .map(|s| Row {
                service: s.name.clone(),
                machine: s.host.value.clone(),
                containers: vec![],
                running: 0,
                total: 0,
                state: "not managed (no compose:)".into(),
                health: "-".into(),
                images: vec![],
                drift: "-".into(),
            }),
    );
    Ok(listing)
}

/// Per machine: the inventory's services on it, and their rendered projects when known.
type PerMachine = BTreeMap<String, (Vec<String>, Option<Vec<Project>>)>;

/// The list as a table: a header line, then one line per service (columns padded).
pub fn render_table(rows: &[Row]) -> String {
    let header = [
        "SERVICE",
        "MACHINE",
        "CONTAINERS",
        "STATE",
        "HEALTH",
        "IMAGES",
        "DRIFT",
    ];
    let dash = |v: &[String], joined: String| if v.is_empty() { "-".into() } else { joined };
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.service.clone(),
                r.machine.clone(),
                dash(
                    &r.containers,
                    format!("{} ({}/{} up)", r.containers.join(","), r.running, r.total),
                ),
                r.state.clone(),
                r.health.clone(),
                dash(&r.images, r.images.join(",")),
                r.drift.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header.map(String::from)) + "\n";
    for r in &table {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}
