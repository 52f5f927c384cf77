//! Shared by the integration tests that need the lab (`picaops lab up`).
//!
//! Under the README's test command (`PICAOPS_REQUIRE_LAB=1`), a lab that is not up is a test
//! failure with a message saying what to run. Under a bare `cargo test`, such tests print
//! `SKIPPED` with the same message and return, so a developer without Docker can still run the
//! rest.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Lab tests stop hosts and cut links: they take this lock so they never overlap.
static LAB: Mutex<()> = Mutex::new(());

pub struct Lab {
    pub dir: PathBuf,
    pub inventory: PathBuf,
    _guard: MutexGuard<'static, ()>,
}

pub fn picaops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_picaops"));
    cmd.env("NO_COLOR", "1").env_remove("PICAOPS_INVENTORY");
    cmd
}

/// Runs picaops on the inventory at `inventory`.
pub fn picaops_on(inventory: &Path, args: &[&str]) -> Output {
    picaops()
        .arg("-i")
        .arg(inventory)
        .args(args)
        .output()
        .expect("picaops runs")
}

/// A copy of the lab's inventory in `lab.dir/NAME-PID` (beside the lab's own, so its `../` paths
/// hold), with the lab's VMs and their pinned keys when `vms`: for tests that write
/// `recovery.yml` or otherwise change the inventory.
pub fn inventory_copy(lab: &Lab, name: &str, vms: bool) -> PathBuf {
    let inventory = lab.dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&inventory);
    std::fs::create_dir_all(&inventory).unwrap();
    for entry in std::fs::read_dir(&lab.inventory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            std::fs::copy(&path, inventory.join(path.file_name().unwrap())).unwrap();
        }
    }
    if vms {
        let from = lab.dir.join("inventory-vms");
        std::fs::copy(from.join("vms.yml"), inventory.join("vms.yml")).unwrap();
        if from.join("known_hosts").exists() {
            std::fs::copy(from.join("known_hosts"), inventory.join("known_hosts")).unwrap();
        }
    }
    inventory
}

pub fn lab_dir() -> PathBuf {
    match std::env::var_os("PICAOPS_LAB_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".local/state/picaops/lab"),
    }
}

/// The running lab, or `None` (after printing why) when it is not up and not required.
pub fn lab(test: &str) -> Option<Lab> {
    let guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = lab_dir();
    let inventory = dir.join("inventory");
    let running = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", "picaops-lab-bob"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false);
    if inventory.is_dir() && running {
        return Some(Lab {
            dir,
            inventory,
            _guard: guard,
        });
    }
    let why = format!(
        "{test}: the lab is not up (no running picaops-lab-bob container or no {}). \
         Run `bash .ci/setup && picaops lab up` (it needs a Docker engine), or the README's test command `bash .ci/test`.",
        inventory.display()
    );
    if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    None
}

impl Lab {
    /// Runs picaops against the lab inventory.
    pub fn picaops(&self, args: &[&str]) -> Output {
        picaops_on(&self.inventory, args)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's stdout as JSON (panics with both outputs when it is not).
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The entry of `name` in a report's `hosts` array.
pub fn host<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["hosts"]
        .as_array()
        .expect("a hosts array")
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

/// The entry of service `name` in a recovery's or failback's `services` array.
pub fn service<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["services"]
        .as_array()
        .expect("a services array")
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc:#}"))
}

/// A lab host's address.
pub fn address(host: &str) -> &'static str {
    picaops::lab::topology::HOSTS
        .iter()
        .find(|h| h.name == host)
        .map(|h| h.address)
        .unwrap_or_else(|| panic!("{host} is not a lab host"))
}

/// `ssh -i KEY LOGIN@HOST CMD`: a real, non-interactive login with the lab's host keys unpinned.
pub fn ssh(key: &Path, login: &str, host: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "KexAlgorithms=curve25519-sha256",
        ])
        .arg(format!("{login}@{}", address(host)))
        .arg(cmd)
        .output()
        .expect("ssh runs")
}

/// A command as root on a lab host (through the lab's admin key).
pub fn root(lab: &Lab, host: &str, cmd: &str) -> Output {
    ssh(&lab.dir.join("id_ed25519"), "root", host, cmd)
}

/// Asserts a command succeeded, showing its output when it did not.
pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Polls `ready` every `every` until it returns `Some`, or fails the test after `limit` saying
/// what was awaited (waits are on conditions, never guessed sleeps).
pub fn wait_for<T>(
    what: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {what}, in vain"
        );
        std::thread::sleep(every);
    }
}
