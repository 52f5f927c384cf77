//! Comparing what a project must be (`render::Project`) with what the machine runs
//! (`state::MachineState`): the change, the diff of its public files, which secrets changed (by
//! name only), and which containers Compose will create, recreate, start or remove.
//!
//! Pure: no I/O. The rules match Compose's own: a container is recreated when its definition or
//! an env file it reads changed, and `--remove-orphans` removes containers whose definition left.

use std::collections::BTreeSet;

use serde::Serialize;

use super::render::{Project, COMPOSE_FILE, ENV_FILE, SECRETS_ENV_FILE};
use super::state::{Deployed, MachineState};

/// What apply does to one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Not on the machine yet: files written, `up`.
    Create,
    /// Files differ: new files, `up`, health wait, rollback on failure.
    Update,
    /// Files equal, but a container is not running: `up` only.
    Start,
    /// Nothing to do: no Compose command runs.
    Unchanged,
    /// On the machine, not in the inventory: `down` with `--prune-services` (data and volumes stay).
    Remove,
}

impl Action {
    pub fn changes(self) -> bool {
        self != Action::Unchanged
    }
}

/// The before/after text of one public file.
#[derive(Clone, Debug, Serialize)]
pub struct FileDiff {
    pub path: String,
    /// `None`: the file does not exist yet.
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One container and what happens to it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ContainerChange {
    pub container: String,
    /// `create`, `recreate`, `start`, `remove`.
    pub action: &'static str,
    pub why: String,
}

/// The planned (and, after apply, done) change of one project.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceChange {
    pub service: String,
    pub machine: String,
    pub action: Action,
    /// Removal planned but not done: `--prune-services` was not given.
    pub held_back: bool,
    pub diffs: Vec<FileDiff>,
    /// Variables of secrets.env whose value changed, was added or removed (names only).
    pub secrets_changed: Vec<String>,
    /// Secret files that changed (names only).
    pub secret_files_changed: Vec<String>,
    pub containers: Vec<ContainerChange>,
    /// sha256 over the project's files: deployed, and planned.
    pub deployed_fingerprint: Option<String>,
    pub fingerprint: Option<String>,
    /// Apply: `done`, `rolled back`, `failed`, `not run`.
    pub status: Option<String>,
    pub error: Option<String>,
    /// Apply, on failure: the containers' last log lines (secrets redacted).
    pub logs: Vec<String>,
    /// Apply: the Compose version used.
    pub compose_version: Option<String>,
}

impl ServiceChange {
    fn new(service: &str, machine: &str, action: Action) -> Self {
        ServiceChange {
            service: service.into(),
            machine: machine.into(),
            action,
            held_back: false,
            diffs: Vec::new(),
            secrets_changed: Vec::new(),
            secret_files_changed: Vec::new(),
            containers: Vec::new(),
            deployed_fingerprint: None,
            fingerprint: None,
            status: None,
            error: None,
            logs: Vec::new(),
            compose_version: None,
        }
    }
}

/// The change for one project of the inventory.
pub fn diff(project: &Project, state: &MachineState) -> ServiceChange {
    let deployed = state.projects.get(&project.service);
    let running: BTreeSet<&str> = state
        .containers_of(&project.service)
        .filter(|c| c.running())
        .map(|c| c.service.as_str())
        .collect();
    let present: BTreeSet<&str> = state
        .containers_of(&project.service)
        .map(|c| c.service.as_str())
        .collect();
    let Some(deployed) = deployed.filter(|d| d.files.contains_key(COMPOSE_FILE)) else {
        let mut c = ServiceChange::new(&project.service, &project.machine, Action::Create);
        c.fingerprint = Some(project.fingerprint());
        for path in [COMPOSE_FILE, ENV_FILE] {
            c.diffs.push(FileDiff {
                path: path.into(),
                old: None,
                new: project.file(path).and_then(|f| f.text()).map(String::from),
            });
        }
        c.secrets_changed = project.secret_lines.keys().cloned().collect();
        c.secret_files_changed = secret_files(project);
        c.containers = project
            .containers
            .keys()
            .map(|name| ContainerChange {
                container: name.clone(),
                action: "create",
                why: "new".into(),
            })
            .collect();
        return c;
    };
    let mut c = ServiceChange::new(&project.service, &project.machine, Action::Unchanged);
    c.fingerprint = Some(project.fingerprint());
    c.deployed_fingerprint = Some(deployed.fingerprint());
    let changed = |path: &str| {
        project.file(path).map(|f| f.sha256.as_str())
            != deployed.files.get(path).map(|f| f.sha256.as_str())
    };
    for path in [COMPOSE_FILE, ENV_FILE] {
        if changed(path) {
            c.diffs.push(FileDiff {
                path: path.into(),
                old: deployed.text(path),
                new: project.file(path).and_then(|f| f.text()).map(String::from),
            });
        }
    }
    c.secrets_changed = secrets_changed(project, deployed);
    for f in project
        .files
        .iter()
        .filter(|f| f.path.starts_with("secrets/"))
    {
        if changed(&f.path) {
            c.secret_files_changed.push(f.path.clone());
        }
    }
    for path in deployed.files.keys().filter(|p| p.starts_with("secrets/")) {
        if project.file(path).is_none() {
            c.secret_files_changed.push(path.clone());
        }
    }
    let files_changed = c.fingerprint != c.deployed_fingerprint;
    // Containers: what Compose will do with each definition.
    let old_defs: serde_json::Map<String, serde_json::Value> = deployed
        .text(COMPOSE_FILE)
        .and_then(|t| serde_saphyr::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("services").and_then(|s| s.as_object()).cloned())
        .unwrap_or_default();
    let env_changed = |file: &str| match file {
        ENV_FILE => changed(ENV_FILE),
        _ => !c.secrets_changed.is_empty(),
    };
    for (name, def) in &project.containers {
        let uses = |file: &str| {
            project
                .env_users
                .get(file)
                .is_some_and(|s| s.contains(name))
        };
        let change = match old_defs.get(name) {
            None => Some(("create", "new in the Compose file".to_string())),
            Some(old) if old != def => Some(("recreate", definition_change(old, def))),
            Some(_) if uses(ENV_FILE) && env_changed(ENV_FILE) => {
                Some(("recreate", format!("{ENV_FILE} changed")))
            }
            Some(_) if uses(SECRETS_ENV_FILE) && env_changed(SECRETS_ENV_FILE) => {
                Some(("recreate", format!("{SECRETS_ENV_FILE} changed")))
            }
            Some(_) if !present.contains(name.as_str()) => {
                Some(("create", "no container".to_string()))
            }
            Some(_) if !running.contains(name.as_str()) => {
                Some(("start", "not running".to_string()))
            }
            Some(_) => None,
        };
        if let Some((action, why)) = change {
            c.containers.push(ContainerChange {
                container: name.clone(),
                action,
                why,
            });
        }
    }
    for name in old_defs.keys() {
        if !project.containers.contains_key(name) {
            c.containers.push(ContainerChange {
                container: name.clone(),
                action: "remove",
                why: "gone from the Compose file".into(),
            });
        }
    }
    c.action = if files_changed {
        Action::Update
    } else if c.containers.iter().any(|x| x.action != "remove") {
        Action::Start
    } else {
        Action::Unchanged
    };
    if c.action == Action::Update && !c.secret_files_changed.is_empty() {
        // Compose does not notice a changed secret file: the containers mounting it restart.
        for name in project.containers.keys() {
            let mounts = project.containers[name]
                .get("secrets")
                .is_some_and(|s| !s.is_null());
            if mounts && !c.containers.iter().any(|x| &x.container == name) {
                c.containers.push(ContainerChange {
                    container: name.clone(),
                    action: "recreate",
                    why: "a secret file changed".into(),
                });
            }
        }
    }
    c
}

/// A project deployed on the machine that the inventory no longer places there.
pub fn removal(service: &str, machine: &str, state: &MachineState, prune: bool) -> ServiceChange {
    let mut c = ServiceChange::new(service, machine, Action::Remove);
    c.held_back = !prune;
    c.deployed_fingerprint = state.projects.get(service).map(Deployed::fingerprint);
    let mut seen = BTreeSet::new();
    for ctr in state.containers_of(service) {
        if seen.insert(ctr.service.clone()) {
            c.containers.push(ContainerChange {
                container: ctr.service.clone(),
                action: "remove",
                why: "the service left the inventory (its data directories and volumes stay)"
                    .into(),
            });
        }
    }
    c
}

fn secret_files(project: &Project) -> Vec<String> {
    project
        .files
        .iter()
        .filter(|f| f.path.starts_with("secrets/"))
        .map(|f| f.path.clone())
        .collect()
}

fn secrets_changed(project: &Project, deployed: &Deployed) -> Vec<String> {
    let mut out = Vec::new();
    for (k, sum) in &project.secret_lines {
        if deployed.secret_lines.get(k) != Some(sum) {
            out.push(k.clone());
        }
    }
    for k in deployed.secret_lines.keys() {
        if !project.secret_lines.contains_key(k) {
            out.push(k.clone());
        }
    }
    out
}

/// Which keys of a container definition changed (`image`, `environment`…).
fn definition_change(old: &serde_json::Value, new: &serde_json::Value) -> String {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return "definition changed".into();
    };
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| match (k.as_str(), o.get(k), n.get(k)) {
            ("image", Some(a), Some(b)) => format!(
                "image {} → {}",
                a.as_str().unwrap_or("?"),
                b.as_str().unwrap_or("?")
            ),
            _ => k.clone(),
        })
        .collect();
    if changed.is_empty() {
        "definition changed".into()
    } else {
        format!("{} changed", changed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::render::ProjectFile;
    use crate::service::state::{parse, DeployedFile};
    use std::collections::BTreeMap;

    fn project(compose: &str, env: &str) -> Project {
        let file = |p: &str, c: &str, secret| ProjectFile {
            path: p.into(),
            content: c.as_bytes().to_vec(),
            secret,
            sha256: crate::service::render::sha256(c.as_bytes()),
        };
        let full: serde_json::Value = serde_saphyr::from_str(compose).unwrap();
        Project {
            service: "hello".into(),
            machine: "bob".into(),
            dir: "/var/lib/picaops/services/hello".into(),
            files: vec![
                file(COMPOSE_FILE, compose, false),
                file(ENV_FILE, env, false),
                file(SECRETS_ENV_FILE, "", true),
            ],
            containers: full["services"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            env_users: BTreeMap::from([(ENV_FILE.to_string(), ["web".to_string()].into())]),
            secret_lines: BTreeMap::new(),
            data: vec![],
            health: Default::default(),
            images: BTreeMap::new(),
        }
    }

    fn deployed_as(p: &Project, running: &[&str]) -> MachineState {
        let mut text = String::from("compose plugin\ndocker yes\ndeployed hello\n");
        for c in running {
            text.push_str(&format!(
                "ctr hello\t{c}\tid{c}\trunning\timg\tUp 1 minute (healthy)\n"
            ));
        }
        let mut s = parse(&text);
        let d = s.projects.entry("hello".into()).or_default();
        for f in &p.files {
            d.files.insert(
                f.path.clone(),
                DeployedFile {
                    sha256: f.sha256.clone(),
                    content: (!f.secret).then(|| f.content.clone()),
                },
            );
        }
        s
    }

    const COMPOSE: &str = "services:\n  web:\n    image: web:1.0\n    env_file: [service.env]\n  db:\n    image: db:17\n";

    #[test]
    fn same_files_and_running_containers_change_nothing() {
        let p = project(COMPOSE, "A='1'\n");
        let c = diff(&p, &deployed_as(&p, &["web", "db"]));
        assert_eq!(c.action, Action::Unchanged);
        assert!(c.containers.is_empty() && c.diffs.is_empty());
    }

    #[test]
    fn an_environment_change_recreates_only_the_containers_reading_it() {
        let old = project(COMPOSE, "A='1'\n");
        let new = project(COMPOSE, "A='2'\n");
        let c = diff(&new, &deployed_as(&old, &["web", "db"]));
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.containers,
            vec![ContainerChange {
                container: "web".into(),
                action: "recreate",
                why: "service.env changed".into()
            }]
        );
        assert_eq!(c.diffs.len(), 1);
        assert_eq!(c.diffs[0].path, ENV_FILE);
    }

    #[test]
    fn a_new_image_recreates_that_container_and_a_stopped_one_is_started() {
        let old = project(COMPOSE, "");
        let new = project(&COMPOSE.replace("web:1.0", "web:1.1"), "");
        let c = diff(&new, &deployed_as(&old, &["web", "db"]));
        assert_eq!(c.containers[0].why, "image web:1.0 → web:1.1 changed");
        let c = diff(&old, &deployed_as(&old, &["web"]));
        assert_eq!(c.action, Action::Start);
        assert_eq!(c.containers[0].action, "create");
    }

    #[test]
    fn a_project_not_deployed_is_created() {
        let p = project(COMPOSE, "");
        let c = diff(&p, &parse("compose plugin\n"));
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.containers.len(), 2);
    }
}
