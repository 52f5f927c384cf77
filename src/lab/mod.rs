//! The lab: a replica of Picasoft's two sites on this machine, made of containers.
//!
//! Two Docker networks stand for the server rooms (toulouse, compiegne), a router container
//! joins them (the one place to cut or slow the WAN link), and one container per machine (bob,
//! alice, caribou, ldap) runs systemd as PID 1 with sshd, dockerd and libvirtd inside (slapd and
//! the lab's mail server, exim, on ldap). `lab up` builds the images if needed, generates the
//! keys, starts everything and writes a picaops inventory of the lab, so every command (and every integration test) can run against it.
//!
//! This module drives Docker and `ssh-keygen` through their command lines; it never touches the
//! real sites. Pieces: [`topology`] (the fixed shape), [`images`] (build and cache),
//! [`inventory`] (files written for picaops), [`keys`], [`faults`] (WAN cut, host stop), and
//! [`docker`] (the command wrapper).

pub mod apps;
pub mod docker;
pub mod faults;
pub mod images;
pub mod inventory;
pub mod keys;
pub mod mirror;
pub mod tls;
pub mod topology;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use docker::Docker;
use mirror::MIRROR_ENV;
use topology::{HostSpec, Role, HOSTS, LABEL, ROUTER_CONTAINER, SITES};

/// How long `lab up` and `lab start` wait for every host to accept an SSH login.
pub const SSH_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a lab operation failed, worded for the volunteer reading it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run `{program}` ({source}). The lab needs Docker: on a fresh Debian machine run `.ci/setup`, or `apt-get install docker.io`.")]
    DockerMissing {
        program: String,
        source: std::io::Error,
    },
    #[error("Docker failed while {what}.\n  command: {command}\n  docker said: {stderr}")]
    Docker {
        what: String,
        command: String,
        stderr: String,
    },
    #[error("{what} failed.\n  command: {command}\n  last lines of the build log ({log}):\n{tail}\n  Fix the cause (network? disk space?), then run `picaops lab build` again; finished images are kept.", log = log.display())]
    Build {
        what: String,
        command: String,
        log: PathBuf,
        tail: String,
    },
    #[error("`{tool}`: {detail}")]
    Tool { tool: String, detail: String },
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No Debian mirror in apt's configuration (`etc_apt`'s `.sources` files nor `list`).
    #[error("no Debian mirror found in {}/sources.list.d/*.sources nor {}. \
         Set {MIRROR_ENV} to the mirror's URL (the one `apt-get update` uses on this machine).", .etc_apt.display(), .list.display())]
    NoMirror { etc_apt: PathBuf, list: PathBuf },
    #[error("{0}")]
    Usage(String),
    #[error("the lab is not up: {0}")]
    NotUp(String),
    #[error("{hosts} did not accept an SSH login within {secs}s. Look inside with `docker logs picaops-lab-HOST` or `docker exec -it picaops-lab-HOST systemctl status ssh`; `picaops lab down && picaops lab up` starts afresh.", secs = waited.as_secs())]
    SshNotReady { hosts: String, waited: Duration },
}

impl LabError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the mistake is in what was asked (unknown host, bad rate), not in the lab.
    pub fn is_usage(&self) -> bool {
        matches!(self, LabError::Usage(_))
    }
}

/// The lab on this machine: where its state lives and how Docker is reached.
#[derive(Debug, Clone)]
pub struct Lab {
    dir: PathBuf,
    docker: Docker,
    verbose: bool,
}

/// What `lab status` (and `lab up`) report.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// The lab's state directory (keys, inventory, known_hosts).
    pub dir: PathBuf,
    /// The lab inventory, to pass as `picaops -i …`.
    pub inventory: PathBuf,
    pub known_hosts: PathBuf,
    pub identity_file: PathBuf,
    /// State of the WAN router container (`running`, `exited`, `absent`).
    pub router: String,
    pub hosts: Vec<HostStatus>,
}

impl LabStatus {
    /// For people: each host's site, address, state and whether SSH answers, then where the
    /// lab's inventory is and what to try.
    pub fn render(&self, out: &crate::output::Output) -> String {
        use crate::output::Style;
        use std::fmt::Write as _;
        let mut text = String::new();
        let header = format!(
            "{:<8} {:<10} {:<12} {:<9} SSH",
            "HOST", "SITE", "ADDRESS", "STATE"
        );
        let _ = writeln!(text, "{}", out.paint(Style::Bold, &header));
        for h in &self.hosts {
            let good = |ok: bool| if ok { Style::Green } else { Style::Red };
            let state = out.paint(good(h.state == "running"), &format!("{:<9}", h.state));
            let ssh = out.paint(good(h.ssh), if h.ssh { "answers" } else { "no answer" });
            let _ = writeln!(
                text,
                "{:<8} {:<10} {:<12} {state} {ssh}",
                h.name, h.site, h.address
            );
        }
        let inv = self.inventory.display();
        let _ = writeln!(text, "WAN router: {}", self.router);
        let _ = writeln!(text, "inventory:  {inv}");
        let _ = writeln!(
            text,
            "try:        picaops -i {inv} run -- uname -n   |   picaops lab ssh bob"
        );
        text
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub site: String,
    pub address: String,
    pub container: String,
    /// Docker's state of the container, or `absent`.
    pub state: String,
    /// The host's sshd answered with an SSH banner just now.
    pub ssh: bool,
}

impl LabStatus {
    /// Every host's container runs and answers SSH.
    pub fn is_up(&self) -> bool {
        self.router == "running" && self.hosts.iter().all(|h| h.state == "running" && h.ssh)
    }
}

impl Lab {
    /// The lab whose state lives in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Lab {
            dir: dir.into(),
            docker: Docker::default(),
            verbose: false,
        }
    }

    /// The lab of `$PICAOPS_LAB_DIR`, by default `$HOME/.local/state/picaops/lab`.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("PICAOPS_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                PathBuf::from(home).join(".local/state/picaops/lab")
            });
        Lab::new(dir)
    }

    /// Show build output on the terminal instead of only in the build log.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn inventory_dir(&self) -> PathBuf {
        self.dir.join("inventory")
    }

    pub fn identity_file(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }

    fn host_key_file(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("ssh_host_ed25519_key")
    }

    /// Builds the lab's images: only what is missing or whose build script changed, everything
    /// with `rebuild`. Takes minutes from scratch; `progress` hears about each step.
    pub fn build_images(
        &self,
        rebuild: bool,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        self.check_docker()?;
        images::build(
            &self.docker,
            rebuild,
            &self.dir.join("build.log"),
            self.verbose,
            progress,
        )
    }

    /// Brings the whole lab up (building images first if needed) and returns once every host
    /// accepts an SSH login. Safe to run again: what already runs is left alone.
    pub fn up(&self, progress: &mut dyn FnMut(&str)) -> Result<LabStatus, LabError> {
        let started = Instant::now();
        self.build_images(false, progress)?;
        self.ensure_keys()?;
        self.write_inventory()?;
        for site in SITES {
            if !self.docker.network_exists(site.network) {
                self.docker.run(
                    &format!("creating the {} network", site.name),
                    [
                        "network",
                        "create",
                        "--label",
                        LABEL,
                        "--subnet",
                        site.subnet,
                        "--gateway",
                        site.gateway,
                        site.network,
                    ],
                )?;
            }
        }
        self.ensure_router()?;
        let privileged = self.privileged_works();
        for h in HOSTS.iter() {
            self.ensure_host(h, privileged)?;
        }
        progress(&format!(
            "lab: containers started after {}; waiting for SSH",
            images::human_duration(started.elapsed())
        ));
        let hosts: Vec<&HostSpec> = HOSTS.iter().collect();
        self.wait_for_ssh(&hosts, SSH_READY_TIMEOUT)?;
        progress(&format!(
            "lab: every host answers SSH, {} after `lab up` started",
            images::human_duration(started.elapsed())
        ));
        apps::load_all(&self.docker, progress)?;
        self.status()
    }

    /// Removes the lab's containers, networks and volumes. Images and keys stay, so the next
    /// `lab up` is quick. Nothing to remove is not an error.
    pub fn down(&self) -> Result<(), LabError> {
        self.check_docker()?;
        let filter = format!("label={LABEL}");
        let ids = self.docker.run(
            "listing the lab's containers",
            ["ps", "-aq", "--filter", &filter],
        )?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            self.docker.run("removing the lab's containers", args)?;
        }
        for site in SITES {
            if self.docker.network_exists(site.network) {
                self.docker.run(
                    &format!("removing the {} network", site.name),
                    ["network", "rm", site.network],
                )?;
            }
        }
        let vols = self.docker.run(
            "listing the lab's volumes",
            ["volume", "ls", "-q", "--filter", &filter],
        )?;
        let vols: Vec<&str> = vols.split_whitespace().collect();
        if !vols.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(vols);
            self.docker.run("removing the lab's volumes", args)?;
        }
        Ok(())
    }

    /// What runs, where, and whether each host's sshd answers.
    pub fn status(&self) -> Result<LabStatus, LabError> {
        self.check_docker()?;
        let state = |name: &str| {
            self.docker
                .container(name)
                .map(|(s, _)| s)
                .unwrap_or_else(|| "absent".to_string())
        };
        let hosts = std::thread::scope(|scope| {
            let handles: Vec<_> = HOSTS
                .iter()
                .map(|h| {
                    scope.spawn(move || {
                        let container = topology::container_name(h.name);
                        let state = state(&container);
                        let ssh = state == "running" && ssh_banner(h.address);
                        HostStatus {
                            name: h.name.into(),
                            site: h.site.into(),
                            address: h.address.into(),
                            container,
                            state,
                            ssh,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|j| j.join().expect("status thread"))
                .collect()
        });
        Ok(LabStatus {
            dir: self.dir.clone(),
            inventory: self.inventory_dir(),
            known_hosts: self.known_hosts_file(),
            identity_file: self.identity_file(),
            router: state(ROUTER_CONTAINER),
            hosts,
        })
    }

    /// The system `ssh` ready to log into `host` as root with the lab key, checking the host
    /// key strictly against the pinned ones. Append a command with `.arg(…)`, or run it bare
    /// for a shell.
    pub fn ssh_command(&self, host: &str) -> Result<Command, LabError> {
        let h = self.known_host(host)?;
        Ok(self.ssh_to(h))
    }

    fn ssh_to(&self, h: &HostSpec) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.identity_file())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts_file().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-l",
                "root",
                h.address,
            ]);
        cmd
    }

    fn known_host(&self, name: &str) -> Result<&'static HostSpec, LabError> {
        topology::host(name).ok_or_else(|| {
            let names: Vec<&str> = HOSTS.iter().map(|h| h.name).collect();
            LabError::Usage(format!(
                "`{name}` is not a lab host. The lab has: {}.",
                names.join(", ")
            ))
        })
    }

    fn check_docker(&self) -> Result<(), LabError> {
        self.docker
            .run(
                "asking the Docker daemon for its version",
                ["version", "--format", "{{.Server.Version}}"],
            )
            .map(|_| ())
            .map_err(|e| match e {
                LabError::Docker { stderr, .. } => LabError::Tool {
                    tool: "docker".into(),
                    detail: format!(
                        "the Docker daemon does not answer ({stderr}). Start it (`.ci/setup` does, \
                         or `dockerd --iptables=false &`), then try again."
                    ),
                },
                other => other,
            })
    }

    /// Admin key and host keys, generated once and kept in the state directory; each host's
    /// directory (bind-mounted read-only into its container) gets its key and authorized_keys.
    /// The break-glass key (root's last way in, checked before sshd or access changes) is a
    /// second key in root's authorized_keys, as it would be on Picasoft's machines. The directory
    /// host gets a certificate from the lab's CA for ldaps:// (and its mail server's STARTTLS), and the
    /// mail server's password.
    fn ensure_keys(&self) -> Result<(), LabError> {
        keys::ensure(&self.identity_file(), "picaops-lab admin")?;
        keys::ensure(&self.dir.join("break-glass"), "picaops-lab break-glass")?;
        let admin = keys::public(&self.identity_file())?;
        let glass = keys::public(&self.dir.join("break-glass"))?;
        for h in HOSTS {
            keys::ensure(&self.host_key_file(h.name), &format!("root@{}", h.name))?;
            let ak = self.host_dir(h.name).join("authorized_keys");
            inventory::write_atomically(&ak, &format!("{admin}\n{glass}\n"))?;
            if h.role == Role::Directory {
                // The mail server's account password (exim reads it at start).
                let pw = self.host_dir(h.name).join("smtp-password");
                inventory::write_atomically(&pw, &format!("{}\n", inventory::SMTP_PASSWORD))?;
                tls::ensure(
                    &self.dir,
                    &self.host_dir(h.name),
                    h.address,
                    &["ldap", "ldap.lab.picasoft.test"],
                )?;
            }
        }
        Ok(())
    }

    fn pinned_key(&self, host: &str) -> String {
        keys::public(&self.host_key_file(host))
            .map(|k| inventory::key_without_comment(&k))
            .unwrap_or_default()
    }

    fn write_inventory(&self) -> Result<(), LabError> {
        let inv = self.inventory_dir();
        let key = |h: &str| self.pinned_key(h);
        inventory::write_atomically(&inv.join("sites.yml"), &inventory::sites_yml())?;
        inventory::write_atomically(&inv.join("hosts.yml"), &inventory::hosts_yml(&key))?;
        inventory::write_atomically(&inv.join("groups.yml"), &inventory::groups_yml())?;
        inventory::write_atomically(&inv.join("access.yml"), &inventory::access_yml(true))?;
        inventory::write_atomically(&inv.join("backups.yml"), &inventory::backups_yml())?;
        inventory::remove_stale(
            &inv,
            &[
                "sites.yml",
                "hosts.yml",
                "groups.yml",
                "access.yml",
                "backups.yml",
                "services.yml",
            ],
        )?;
        inventory::write_secrets(&self.dir.join("secrets"))?;
        inventory::write_services(&self.dir)?;
        // The same lab plus two VMs, in a directory of its own (see inventory::vms_yml).
        inventory::write_vm_inventory(&self.dir, &inventory::vm_inventory_files(&key))?;
        inventory::write_atomically(&self.known_hosts_file(), &inventory::known_hosts(&key))
    }

    /// The WAN router: the `common` image, forwarding between the two site networks.
    fn ensure_router(&self) -> Result<(), LabError> {
        let image = images::Image::Common.tag();
        match self.docker.container(ROUTER_CONTAINER) {
            Some((state, img)) if img == image => {
                if state != "running" {
                    self.docker
                        .run("starting the WAN router", ["start", ROUTER_CONTAINER])?;
                }
                return Ok(());
            }
            Some(_) => {
                self.docker.run(
                    "replacing the WAN router (its image changed)",
                    ["rm", "-f", ROUTER_CONTAINER],
                )?;
            }
            None => {}
        }
        let [first, second] = SITES;
        self.docker.run(
            "creating the WAN router",
            [
                "create",
                "--name",
                ROUTER_CONTAINER,
                "--hostname",
                "wan",
                "--label",
                LABEL,
                "--network",
                first.network,
                "--ip",
                first.router,
                "--cap-add",
                "NET_ADMIN",
                "--sysctl",
                "net.ipv4.ip_forward=1",
                // `sleep` as PID 1 ignores SIGTERM; nothing to shut down cleanly here.
                "--stop-signal",
                "SIGKILL",
                &image,
                "sleep",
                "infinity",
            ],
        )?;
        self.docker.run(
            "attaching the WAN router to the second site",
            [
                "network",
                "connect",
                "--ip",
                second.router,
                second.network,
                ROUTER_CONTAINER,
            ],
        )?;
        self.docker
            .run("starting the WAN router", ["start", ROUTER_CONTAINER])?;
        Ok(())
    }

    /// Whether `--privileged` containers start here (an ordinary runner) or not (this kind of
    /// sandboxed VM withholds CAP_SYS_RESOURCE and runc refuses). Remembered in the state dir.
    fn privileged_works(&self) -> bool {
        let memo = self.dir.join("docker-mode");
        if let Ok(mode) = std::fs::read_to_string(&memo) {
            return mode.trim() == "privileged";
        }
        let works = self.docker.succeeds([
            "run",
            "--rm",
            "--privileged",
            "--cgroupns",
            "private",
            "--network",
            "none",
            &images::Image::Common.tag(),
            "true",
        ]);
        let _ = std::fs::write(
            &memo,
            if works {
                "privileged\n"
            } else {
                "capabilities\n"
            },
        );
        works
    }

    /// Creates (or restarts) a lab host's container. One whose image is outdated is replaced.
    fn ensure_host(&self, h: &HostSpec, privileged: bool) -> Result<(), LabError> {
        let name = topology::container_name(h.name);
        let image = match h.role {
            Role::Hypervisor => images::Image::Hypervisor.tag(),
            Role::Directory => images::Image::Ldap.tag(),
        };
        match self.docker.container(&name) {
            Some((state, img)) if img == image => {
                if state != "running" {
                    self.docker
                        .run(&format!("starting lab host {}", h.name), ["start", &name])?;
                }
                return Ok(());
            }
            Some(_) => {
                self.docker.run(
                    &format!("replacing lab host {} (its image changed)", h.name),
                    ["rm", "-f", "-v", &name],
                )?;
                // Its inner Docker engine's state belongs to the filesystem just removed: kept,
                // its containers would outlive their Compose project directories (a service
                // running that no picaops run can see or prune). The new host starts empty.
                if h.role == Role::Hypervisor {
                    self.docker.run(
                        &format!("removing the Docker volume of {}", h.name),
                        ["volume", "rm", "-f", &topology::docker_volume_name(h.name)],
                    )?;
                }
            }
            None => {}
        }
        let site = topology::site(h.site).expect("lab host on a lab site");
        let route = topology::cross_site_route(h.site).expect("two sites");
        let keys = format!("{}:/etc/picaops-lab:ro", self.host_dir(h.name).display());
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            h.name,
            "--label",
            LABEL,
            "--label",
            &format!("{LABEL}.host={}", h.name),
            "--network",
            site.network,
            "--ip",
            h.address,
            "--cgroupns",
            "private",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "-e",
            "container=docker",
            "-e",
            &format!("PICAOPS_LAB_ROUTE={route}"),
            "-v",
            &keys,
            "--stop-signal",
            "SIGRTMIN+3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every lab host knows the others by name (`ssh alice`, restic to `sftp:alice:…`).
        for other in HOSTS.iter().filter(|o| o.name != h.name) {
            args.push("--add-host".into());
            args.push(format!("{}:{}", other.name, other.address));
        }
        if privileged {
            args.push("--privileged".into());
        } else {
            // What a container needs to run systemd, dockerd and libvirtd when --privileged is
            // refused (see /work/shared/LAB.md): every capability this machine grants.
            for a in [
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--security-opt",
                "systempaths=unconfined",
                "--device-cgroup-rule",
                "a *:* rwm",
            ] {
                args.push(a.into());
            }
        }
        if h.role == Role::Hypervisor {
            // The inner Docker needs a real filesystem under it: overlay on overlay fails.
            let vol = topology::docker_volume_name(h.name);
            self.docker.run(
                &format!("creating the Docker volume of {}", h.name),
                ["volume", "create", "--label", LABEL, &vol],
            )?;
            args.push("-v".into());
            args.push(format!("{vol}:/var/lib/docker"));
        }
        args.push(image);
        self.docker
            .run(&format!("starting lab host {}", h.name), &args)?;
        Ok(())
    }

    /// Polls until every host in `hosts` accepts an SSH login with the lab key (all in parallel).
    fn wait_for_ssh(&self, hosts: &[&HostSpec], timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let failed: Vec<&str> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|h| {
                    scope.spawn(move || loop {
                        if ssh_banner(h.address) {
                            let ok = self
                                .ssh_to(h)
                                .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "true"])
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status()
                                .is_ok_and(|s| s.success());
                            if ok {
                                return None;
                            }
                        }
                        if Instant::now() >= deadline {
                            return Some(h.name);
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|j| j.join().expect("ssh wait thread"))
                .collect()
        });
        if failed.is_empty() {
            Ok(())
        } else {
            Err(LabError::SshNotReady {
                hosts: failed.join(", "),
                waited: timeout,
            })
        }
    }
}

/// True when something on `address:22` greets with an SSH banner within a second.
fn ssh_banner(address: &str) -> bool {
    let Ok(ip) = address.parse() else {
        return false;
    };
    let addr = SocketAddr::new(ip, 22);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4];
    let ok = stream.read_exact(&mut buf).is_ok() && &buf == b"SSH-";
    // Say goodbye properly so sshd does not log a protocol error for every probe.
    let _ = stream.write_all(b"SSH-2.0-picaops-lab-probe\r\n");
    ok
}
