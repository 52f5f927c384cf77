//! Application images the lab hosts run in their own (inner) Docker engines. No registry is
//! reachable here, so each is built on the workstation like the host images, then copied into
//! every hypervisor's engine (`docker save | docker exec -i HOST docker load`) and tagged there
//! with the exact version a Compose file or a backup job names (`picaops-lab/postgres:17`).

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
}

/// Every application image, loaded into every hypervisor.
pub const APPS: [AppImage; 1] = [AppImage {
    image: Image::Postgres,
    name: "picaops-lab/postgres:17",
}];

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
        let built = app.image.tag();
        let missing: Vec<&&HostSpec> = hosts
            .iter()
            .filter(|h| !inner_has(docker, h, &built))
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
            docker.run(
                &format!("tagging {} in {}", app.name, h.name),
                ["exec", &name, "docker", "tag", &built, app.name],
            )?;
        }
        progress(&format!(
            "lab: {} loaded into the hosts' Docker engines in {}",
            app.name,
            super::images::human_duration(t.elapsed())
        ));
    }
    Ok(())
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
