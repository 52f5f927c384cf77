//! Application images the lab hosts run in their own (inner) Docker engines. No registry is
//! reachable here, so each is built on the workstation like the host images, then copied into
//! every hypervisor's engine (`docker save | docker exec -i HOST docker load`) and tagged there
//! with the exact version a Compose file or a backup job names (`picaops-lab/postgres:17`).
//!
//! Some versions are derived from one build by their environment (`picaops-lab/web:2.0` is the
//! web app with `APP_HEALTHY=no`): made on the workstation with a two-line Dockerfile and
//! labelled with a build id, so a host is given a version only when it lacks that exact one.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::docker::Docker;
use super::images::Image;
use super::topology::{container_name, HostSpec, Role, HOSTS};
use super::LabError;

/// One application image: the lab image it is built as, and its name inside the hosts.
#[derive(Debug, Clone, Copy)]
pub struct AppImage {
    pub image: Image,
    /// Name and exact version tag inside the lab hosts' engines.
    pub name: &'static str,
    /// Environment baked into a derived version (empty: the build itself, tagged).
    pub env: &'static [(&'static str, &'static str)],
}

/// Every application image, loaded into every hypervisor.
pub const APPS: [AppImage; 4] = [
    AppImage {
        image: Image::Postgres,
        name: "picaops-lab/postgres:17",
        env: &[],
    },
    AppImage {
        image: Image::AppWeb,
        name: "picaops-lab/web:1.0",
        env: &[("APP_VERSION", "1.0")],
    },
    AppImage {
        image: Image::AppWeb,
        name: "picaops-lab/web:1.1",
        env: &[("APP_VERSION", "1.1")],
    },
    // Its /health answers 500: the version the services tests roll back.
    AppImage {
        image: Image::AppWeb,
        name: "picaops-lab/web:2.0",
        env: &[("APP_VERSION", "2.0"), ("APP_HEALTHY", "no")],
    },
];

/// The label naming a derived version's build.
const BUILD_LABEL: &str = "picaops-lab.build";

impl AppImage {
    /// What identifies this exact image: the build's tag, or for a derived version a hash of
    /// the build's tag and its environment.
    pub fn build_id(&self) -> String {
        let built = self.image.tag();
        if self.env.is_empty() {
            return built;
        }
        let env: Vec<(&str, &str)> = self.env.to_vec();
        let text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        super::images::content_hash("", &built, &text.join("\n"), &[])
    }

    /// The Dockerfile of a derived version.
    fn dockerfile(&self) -> String {
        let mut d = format!("FROM {}\n", self.image.tag());
        for (k, v) in self.env {
            d.push_str(&format!("ENV {k}={v}\n"));
        }
        d.push_str(&format!("LABEL {BUILD_LABEL}={}\n", self.build_id()));
        d
    }

    /// What `docker save` copies: the build's tag, or the derived version's own name.
    fn source(&self) -> String {
        if self.env.is_empty() {
            self.image.tag()
        } else {
            self.name.to_string()
        }
    }
}

/// How long a freshly started lab host's inner engine may take to answer.
const ENGINE_READY: Duration = Duration::from_secs(60);

/// Loads every missing application image into every hypervisor's inner engine. An image is
/// copied only when the host lacks this exact build (its content-hashed tag), so a running lab
/// costs one `docker image inspect` per image and host.
pub fn load_all(docker: &Docker, progress: &mut dyn FnMut(&str)) -> Result<(), LabError> {
    let hosts: Vec<&HostSpec> = HOSTS
        .iter()
        .filter(|h| h.role == Role::Hypervisor)
        .collect();
    for h in &hosts {
        wait_for_engine(docker, h)?;
    }
    for app in APPS {
        let built = app.source();
        if !app.env.is_empty() && label(docker, None, app.name) != Some(app.build_id()) {
            derive(docker, &app)?;
        }
        let missing: Vec<&&HostSpec> = hosts
            .iter()
            .filter(|h| {
                if app.env.is_empty() {
                    !inner_has(docker, h, &built)
                } else {
                    label(docker, Some(h), app.name) != Some(app.build_id())
                }
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let t = Instant::now();
        let archive = tempfile::Builder::new()
            .prefix("picaops-lab-app-")
            .suffix(".tar")
            .tempfile_in("/var/tmp")
            .map_err(|e| LabError::io(std::path::Path::new("/var/tmp"), e))?;
        docker.run(
            &format!("saving {built}"),
            [
                "save",
                "--output",
                &archive.path().to_string_lossy(),
                built.as_str(),
            ],
        )?;
        for h in missing {
            let name = container_name(h.name);
            let file =
                std::fs::File::open(archive.path()).map_err(|e| LabError::io(archive.path(), e))?;
            let out = docker
                .command(["exec", "-i", &name, "docker", "load", "--quiet"])
                .stdin(file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| LabError::DockerMissing {
                    program: "docker".into(),
                    source: e,
                })?;
            if !out.status.success() {
                return Err(LabError::Docker {
                    what: format!("loading {built} into {}", h.name),
                    command: format!("docker exec -i {name} docker load"),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            if app.env.is_empty() {
                docker.run(
                    &format!("tagging {} in {}", app.name, h.name),
                    ["exec", &name, "docker", "tag", &built, app.name],
                )?;
            }
        }
        progress(&format!(
            "lab: {} loaded into the hosts' Docker engines in {}",
            app.name,
            super::images::human_duration(t.elapsed())
        ));
    }
    Ok(())
}

/// Builds a derived version on the workstation (`docker build -` with its two-line Dockerfile).
fn derive(docker: &Docker, app: &AppImage) -> Result<(), LabError> {
    use std::io::Write;
    let mut child = docker
        .command(["build", "--pull=false", "-t", app.name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::DockerMissing {
            program: "docker".into(),
            source: e,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(app.dockerfile().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::DockerMissing {
            program: "docker".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(LabError::Docker {
            what: format!("deriving {} from {}", app.name, app.image.tag()),
            command: format!("docker build -t {} -", app.name),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The build label of `image` on the workstation (`host: None`) or in a lab host's engine.
fn label(docker: &Docker, host: Option<&HostSpec>, image: &str) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{BUILD_LABEL}\"}}}}");
    let mut args: Vec<String> = Vec::new();
    if let Some(h) = host {
        args.extend(["exec".into(), container_name(h.name), "docker".into()]);
    }
    args.extend([
        "image".into(),
        "inspect".into(),
        "--format".into(),
        format,
        image.into(),
    ]);
    docker
        .run("reading an image label", args)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "<no value>")
}

fn inner_has(docker: &Docker, h: &HostSpec, tag: &str) -> bool {
    docker.succeeds([
        "exec",
        &container_name(h.name),
        "docker",
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        tag,
    ])
}

fn wait_for_engine(docker: &Docker, h: &HostSpec) -> Result<(), LabError> {
    let start = Instant::now();
    let name = container_name(h.name);
    while !docker.succeeds(["exec", &name, "docker", "info", "--format", "{{.ID}}"]) {
        if start.elapsed() > ENGINE_READY {
            return Err(LabError::Docker {
                what: format!("waiting for the Docker engine inside {}", h.name),
                command: format!("docker exec {name} docker info"),
                stderr: format!(
                    "no answer after {} s; look at `docker exec {name} journalctl -u docker`",
                    ENGINE_READY.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}
