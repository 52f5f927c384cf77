//! What is deployed on a machine, read in one round trip by `scripts/probe.sh`: the project files
//! picaops wrote (public ones with their content, secret ones by sha256 only), which Compose is
//! installed, and every Compose container with its state and health.
//!
//! Reading runs no Compose command and brings no secret value back to the workstation.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde::Serialize;

use super::render::PROJECTS_DIR;
use crate::transport::{RemoteCommand, Transport, TransportError};

const PROBE: &str = include_str!("scripts/probe.sh");

/// How Compose v2 is installed on a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeKind {
    /// `docker compose` (the CLI plugin).
    Plugin,
    /// The standalone `docker-compose` binary (2.x).
    Standalone,
    None,
}

impl ComposeKind {
    pub fn arg(self) -> &'static str {
        match self {
            ComposeKind::Plugin => "plugin",
            _ => "standalone",
        }
    }

    /// The command line a person would type, for messages.
    pub fn command(self) -> &'static str {
        match self {
            ComposeKind::Plugin => "docker compose",
            _ => "docker-compose",
        }
    }
}

/// One Compose container, as `docker ps` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Container {
    pub project: String,
    /// The Compose service (container definition) it runs.
    pub service: String,
    pub id: String,
    /// `running`, `exited`, `restarting`, `created`…
    pub state: String,
    pub image: String,
    /// `Up 3 minutes (healthy)`.
    pub status: String,
}

impl Container {
    /// `healthy`, `unhealthy`, `starting`, or `none` (no healthcheck).
    pub fn health(&self) -> &'static str {
        if self.status.contains("(healthy)") {
            "healthy"
        } else if self.status.contains("(unhealthy)") {
            "unhealthy"
        } else if self.status.contains("(health: starting)") {
            "starting"
        } else {
            "none"
        }
    }

    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// A file of a deployed project.
#[derive(Clone, Debug, Default)]
pub struct DeployedFile {
    pub sha256: String,
    /// The content of a public file; `None` for secret files.
    pub content: Option<Vec<u8>>,
}

/// One project directory on the machine.
#[derive(Clone, Debug, Default)]
pub struct Deployed {
    pub files: BTreeMap<String, DeployedFile>,
    /// sha256 of each line of secrets.env, by variable name.
    pub secret_lines: BTreeMap<String, String>,
}

impl Deployed {
    pub fn fingerprint(&self) -> String {
        super::render::fingerprint(
            self.files
                .iter()
                .map(|(p, f)| (p.as_str(), f.sha256.as_str())),
        )
    }

    pub fn text(&self, path: &str) -> Option<String> {
        self.files
            .get(path)
            .and_then(|f| f.content.as_ref())
            .map(|c| String::from_utf8_lossy(c).into_owned())
    }
}

/// Everything read from one machine.
#[derive(Clone, Debug)]
pub struct MachineState {
    pub compose: ComposeKind,
    pub docker: bool,
    /// `docker ps` failed (engine stopped?): its first line.
    pub docker_error: Option<String>,
    /// Every project directory picaops deployed here.
    pub deployed: BTreeSet<String>,
    /// The files of the projects asked for (those that exist).
    pub projects: BTreeMap<String, Deployed>,
    pub containers: Vec<Container>,
}

impl MachineState {
    /// A fingerprint of what was read: the Compose flavour, each project's files and secret
    /// lines (hashes), and each container's id, state, image and health (not its uptime).
    pub fn fingerprint(&self) -> String {
        let projects: Vec<_> = self
            .projects
            .iter()
            .map(|(name, d)| (name, d.fingerprint(), &d.secret_lines))
            .collect();
        let containers: Vec<_> = self
            .containers
            .iter()
            .map(|c| {
                (
                    &c.project,
                    &c.service,
                    &c.id,
                    &c.state,
                    &c.image,
                    c.health(),
                )
            })
            .collect();
        crate::lifecycle::digest(&(
            self.compose.arg(),
            self.docker,
            &self.docker_error,
            &self.deployed,
            projects,
            containers,
        ))
    }

    pub fn containers_of<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a Container> {
        self.containers.iter().filter(move |c| c.project == project)
    }
}

/// Reads the machine: the projects named in `projects` in full, every deployed project's name.
pub async fn read(
    transport: &dyn Transport,
    projects: &[&str],
) -> Result<MachineState, TransportError> {
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        PROBE.into(),
        "picaops-service-probe".into(),
        PROJECTS_DIR.into(),
    ];
    argv.extend(projects.iter().map(|p| p.to_string()));
    let out = transport
        .exec(&RemoteCommand::argv(argv).with_become(true))
        .await?;
    if !out.success() {
        return Err(TransportError::new(
            &transport.target().name,
            crate::transport::ErrorKind::Local,
            format!(
                "reading the deployed services failed (exit {}): {}",
                out.exit_code,
                out.stderr_lossy().trim()
            ),
        ));
    }
    Ok(parse(&out.stdout_lossy()))
}

/// Parses the probe's output.
pub fn parse(text: &str) -> MachineState {
    let mut s = MachineState {
        compose: ComposeKind::None,
        docker: false,
        docker_error: None,
        deployed: BTreeSet::new(),
        projects: BTreeMap::new(),
        containers: Vec::new(),
    };
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "compose" => {
                s.compose = match rest {
                    "plugin" => ComposeKind::Plugin,
                    "standalone" => ComposeKind::Standalone,
                    _ => ComposeKind::None,
                }
            }
            "docker" => s.docker = rest == "yes",
            "dockererr" => s.docker_error = Some(rest.to_string()),
            "deployed" => {
                s.deployed.insert(rest.to_string());
            }
            "file" => {
                let mut parts = rest.splitn(4, ' ');
                let (Some(name), Some(path), Some(sum), Some(content)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let content = content.strip_prefix("b64:").map(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .unwrap_or_default()
                });
                s.projects.entry(name.into()).or_default().files.insert(
                    path.into(),
                    DeployedFile {
                        sha256: sum.into(),
                        content,
                    },
                );
            }
            "secret" => {
                let mut parts = rest.splitn(3, ' ');
                if let (Some(name), Some(key), Some(sum)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    s.projects
                        .entry(name.into())
                        .or_default()
                        .secret_lines
                        .insert(key.into(), sum.into());
                }
            }
            "ctr" => {
                let f: Vec<&str> = rest.splitn(6, '\t').collect();
                if f.len() == 6 {
                    s.containers.push(Container {
                        project: f[0].into(),
                        service: f[1].into(),
                        id: f[2].chars().take(12).collect(),
                        state: f[3].into(),
                        image: f[4].into(),
                        status: f[5].into(),
                    });
                }
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_probe_output() {
        let text = "compose plugin\ndocker yes\ndeployed hello\ndeployed old\n\
            file hello compose.yaml abc b64:c2VydmljZXM6IHt9Cg==\n\
            file hello service.env e3b b64:\n\
            file hello secrets.env 123 -\n\
            secret hello API_TOKEN 456\n\
            ctr hello\tweb\t0123456789abcdef\trunning\tpicaops-lab/web:1.0\tUp 2 minutes (healthy)\n";
        let s = parse(text);
        assert_eq!(s.compose, ComposeKind::Plugin);
        assert!(s.docker);
        assert_eq!(s.deployed.len(), 2);
        let p = &s.projects["hello"];
        assert_eq!(p.text("compose.yaml").unwrap(), "services: {}\n");
        assert_eq!(p.text("service.env").unwrap(), "");
        assert!(p.files["secrets.env"].content.is_none());
        assert_eq!(p.secret_lines["API_TOKEN"], "456");
        let c = &s.containers[0];
        assert_eq!((c.service.as_str(), c.health()), ("web", "healthy"));
        assert_eq!(c.id, "0123456789ab");
    }
}
