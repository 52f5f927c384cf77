//! Real sshd processes on loopback addresses for the transport tests: each with its own host key,
//! config, log file and port, stopped when the fixture is dropped (even when a test fails).
//!
//! Tests run as root (the CI machine is a root container); the fixture creates two login users
//! with /bin/sh if absent: `picaops-t` (passwordless sudo) and `picaops-nosudo` (no sudo rule).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use picaops::transport::{Connector, SshOptions, Target};

pub const SUDO_USER: &str = "picaops-t";
pub const NOSUDO_USER: &str = "picaops-nosudo";

static NEXT_ADDR: AtomicUsize = AtomicUsize::new(0);

/// The client side shared by a test's hosts: one private key, one known_hosts file.
pub struct Workstation {
    pub dir: tempfile::TempDir,
}

impl Workstation {
    pub fn new() -> Self {
        ensure_users();
        let dir = tempfile::Builder::new()
            .prefix("picaops-test-")
            .tempdir()
            .unwrap();
        keygen(&dir.path().join("id_ed25519"));
        std::fs::write(dir.path().join("known_hosts"), "").unwrap();
        Workstation { dir }
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Pins `key_line` (`ssh-ed25519 AAAA...`) for `target` in the known_hosts file.
    pub fn pin(&self, target: &Target, key_line: &str) {
        let mut text = std::fs::read_to_string(self.known_hosts()).unwrap();
        text.push_str(&format!("{} {}\n", target.known_hosts_name(), key_line));
        std::fs::write(self.known_hosts(), text).unwrap();
    }

    /// SSH options for tests: a short connect timeout, sockets in this test's directory.
    pub fn ssh_options(&self) -> SshOptions {
        let mut opts = SshOptions::new(self.known_hosts(), self.dir.path());
        opts.connect_timeout = Duration::from_secs(3);
        opts
    }

    pub fn connector(&self) -> Arc<Connector> {
        Arc::new(Connector::with_options(self.ssh_options()))
    }
}

/// One sshd listening on its own loopback address and port.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` (no comment).
    pub host_key: String,
    child: Child,
}

impl Sshd {
    /// Starts an sshd accepting `ws`'s key for every user.
    pub fn start(ws: &Workstation) -> Self {
        let n = NEXT_ADDR.fetch_add(1, Ordering::Relaxed);
        let address = format!("127.0.1.{}", 100 + (std::process::id() as usize + n) % 150);
        let port = free_port(&address);
        let dir = tempfile::Builder::new()
            .prefix("picaops-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // sshd reads authorized keys as the login user: let everyone read this directory.
        set_mode(d, 0o755);
        keygen(&d.join("host_key"));
        let pubkey = std::fs::read_to_string(ws.key().with_extension("pub")).unwrap();
        std::fs::write(d.join("authorized_keys"), &pubkey).unwrap();
        set_mode(&d.join("authorized_keys"), 0o644);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let config = format!(
            "ListenAddress {address}:{port}\n\
             HostKey {d}/host_key\n\
             PidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             MaxStartups 100\n\
             LogLevel VERBOSE\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting /usr/sbin/sshd");
        let sshd = Sshd {
            dir,
            address,
            port,
            host_key,
            child,
        };
        // Wait for sshd to say it listens (a TCP probe would count as a connection in its log).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sshd.log().contains("Server listening on") {
            assert!(
                Instant::now() < deadline,
                "sshd did not start:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        sshd
    }

    /// A target for this sshd as `user`, with the workstation's key.
    pub fn target(&self, name: &str, user: &str, ws: &Workstation) -> Target {
        Target {
            name: name.into(),
            address: self.address.clone(),
            port: Some(self.port),
            user: Some(user.into()),
            identity_file: Some(ws.key()),
            become_root: false,
            jump: None,
            local: false,
        }
    }

    /// Same as `target`, with the host key pinned in the workstation's known_hosts.
    pub fn pinned_target(&self, name: &str, user: &str, ws: &Workstation) -> Target {
        let t = self.target(name, user, ws);
        ws.pin(&t, &self.host_key);
        t
    }

    /// An SSH transport to this sshd as `user`, its host key pinned.
    pub async fn connect(&self, user: &str, ws: &Workstation) -> picaops::transport::SshTransport {
        let target = self.pinned_target("bob", user, ws);
        picaops::transport::SshTransport::connect(&target, &ws.ssh_options())
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Logins this sshd accepted so far (one per SSH connection).
    pub fn accepted_logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// TCP connections this sshd received so far.
    pub fn connections(&self) -> usize {
        self.log().matches("Connection from").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server that accepts connections and never says anything (a hung host).
pub struct Silent {
    pub address: String,
    pub port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl Silent {
    pub fn start() -> Self {
        let n = NEXT_ADDR.fetch_add(1, Ordering::Relaxed);
        let address = format!("127.0.1.{}", 100 + (std::process::id() as usize + n) % 150);
        let listener = TcpListener::bind((address.as_str(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                held.push(s);
            }
        });
        Silent {
            address,
            port,
            _thread: thread,
        }
    }
}

/// A port on `address` where nothing listens (bound then released).
pub fn free_port(address: &str) -> u16 {
    TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "picaops-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(status.success());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Creates the two test login users (idempotent). Requires root.
fn ensure_users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for user in [SUDO_USER, NOSUDO_USER] {
            let exists = Command::new("id")
                .arg(user)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if !exists {
                let ok = Command::new("useradd")
                    .args(["-m", "-s", "/bin/sh", user])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "useradd {user} (tests must run as root)");
            }
            // A locked account ('!' password) may not log in even with a key: use '*'.
            let _ = Command::new("usermod").args(["-p", "*", user]).status();
        }
        if Path::new("/etc/sudoers.d").is_dir() {
            std::fs::write(
                format!("/etc/sudoers.d/{SUDO_USER}"),
                format!("{SUDO_USER} ALL=(ALL) NOPASSWD: ALL\n"),
            )
            .unwrap();
            set_mode(Path::new(&format!("/etc/sudoers.d/{SUDO_USER}")), 0o440);
        }
    });
}

/// Where the become tests expect sudo.
const SUDO: &str = "/usr/bin/sudo";

/// Whether sudo is installed (the become tests need it). Like a missing lab (tests/common), a
/// missing sudo only skips under a bare `cargo test`: under the README's test command
/// (`PICAOPS_REQUIRE_LAB=1`) the test fails, saying what to install, so a CI machine without sudo
/// cannot pass the suite with the become tests never run.
pub fn have_sudo() -> bool {
    if Path::new(SUDO).exists() {
        return true;
    }
    let why = format!(
        "{SUDO} is missing: the become (sudo) tests cannot run. Install it \
         (`apt-get install -y sudo`, which `bash .ci/setup` does)."
    );
    if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// Writes an inventory into `dir` (which must exist): `sites.yml` (site `bench`, and `other` it
/// backs up to) and `hosts.yml` with each host on its sshd, logging in as `user` with `ws`'s key,
/// and `extra(name)` appended to its entry (more keys, each on its own line, 4 spaces deep).
pub fn write_inventory(
    dir: &Path,
    ws: &Workstation,
    hosts: &[(&str, &Sshd)],
    user: &str,
    extra: &dyn Fn(&str) -> String,
) {
    std::fs::write(
        dir.join("sites.yml"),
        "sites:\n  bench: { description: loopback sshd processes, backs_up_to: other }\n  \
         other: { description: unused, backs_up_to: bench }\n",
    )
    .unwrap();
    let mut yml = String::from("hosts:\n");
    for (name, sshd) in hosts {
        yml.push_str(&format!(
            "  {name}:\n    site: bench\n    address: {}\n    port: {}\n    \
             user: {user}\n    identity_file: {}\n    host_key: {}\n{}",
            sshd.address,
            sshd.port,
            ws.key().display(),
            sshd.host_key,
            extra(name)
        ));
    }
    std::fs::write(dir.join("hosts.yml"), yml).unwrap();
}
