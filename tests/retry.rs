//! Retrying what failed, against real sshd processes on loopback addresses (no lab): the binary
//! records the machines an apply left failed, and `--limit @failed` (and `@FILE`) selects
//! exactly them, counted by the logins each sshd accepted.
//!
//! Each test keeps picaops' state (the record) in a directory of its own (`XDG_STATE_HOME`).

mod transport_support;

use std::path::PathBuf;
use std::process::Command;

use transport_support::{Sshd, Workstation, NOSUDO_USER};

/// `inventory/` with hosts on real sshd processes, a state directory, and a directory the
/// hosts' login user may write in (the hosts are this machine).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(ws: &Workstation, hosts: &[(&str, &Sshd)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory");
        std::fs::create_dir(&inv).unwrap();
        std::fs::write(
            inv.join("sites.yml"),
            "sites:\n  bench: { description: loopback sshd processes, backs_up_to: other }\n  \
             other: { description: unused, backs_up_to: bench }\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The hosts are this machine and one login user: each test's hosts get a run lock of
        // their own, or the tests running at the same time would find each other's.
        let mut yml = String::from("hosts:\n");
        for (name, sshd) in hosts {
            yml.push_str(&format!(
                "  {name}:\n    site: bench\n    address: {}\n    port: {}\n    \
                 user: {NOSUDO_USER}\n    identity_file: {}\n    host_key: {}\n    \
                 vars: {{ picaops_lock_dir: {}/lock-{name} }}\n",
                sshd.address,
                sshd.port,
                ws.key().display(),
                sshd.host_key,
                work.display()
            ));
        }
        std::fs::write(inv.join("hosts.yml"), yml).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a playbook beside the inventory; returns its path.
    fn playbook(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Runs picaops on this inventory with this state directory: (exit code, stdout, stderr).
    fn picaops(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_picaops"))
            .arg("--inventory")
            .arg(self.path("inventory"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("XDG_STATE_HOME", self.path("state"))
            .env_remove("PICAOPS_INVENTORY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The record files in the state directory (there is one per inventory).
    fn records(&self) -> Vec<String> {
        let dir = self.path("state/picaops/failed");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

/// Names listed in a record (its non-comment lines).
fn recorded(record: &str) -> Vec<&str> {
    record
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect()
}

/// One task that fails on the host named by `-e broken=NAME`.
const BREAKABLE: &str =
    "- name: Breakable\n  hosts: all\n  tasks:\n    - name: fail where told\n      \
     shell: test \"{{ inventory_hostname }}\" != \"{{ broken }}\"\n";

#[test]
fn the_failed_machines_are_recorded_and_limit_at_failed_contacts_only_them() {
    let ws = Workstation::new();
    let (a, b) = (Sshd::start(&ws), Sshd::start(&ws));
    let setup = Setup::new(&ws, &[("alpha", &a), ("bravo", &b)]);
    let play = setup.playbook("play.yml", BREAKABLE);

    // No apply ever ran: `@failed` is refused, never "every machine".
    let (code, _, stderr) = setup.picaops(&["plan", "-l", "@failed", &play]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no failed machines are recorded for this inventory")
            && stderr.contains("no apply of it has run from this account yet"),
        "{stderr}"
    );
    assert_eq!((a.accepted_logins(), b.accepted_logins()), (0, 0));

    // bravo fails, alpha converges: the record names bravo only.
    let (code, _, stderr) = setup.picaops(&["apply", "-e", "broken=bravo", &play]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("recorded as failed: bravo"), "{stderr}");
    let records = setup.records();
    assert_eq!(records.len(), 1, "one record per inventory");
    assert_eq!(recorded(&records[0]), ["bravo"]);

    // An apply of alpha alone that succeeds keeps bravo recorded (it did not run there).
    let (code, _, stderr) = setup.picaops(&["apply", "-l", "alpha", "-e", "broken=none", &play]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(recorded(&setup.records()[0]), ["bravo"]);

    // `-l @failed` contacts bravo and nothing else; it succeeds now, which clears the record.
    let before = (a.accepted_logins(), b.accepted_logins());
    let (code, stdout, stderr) =
        setup.picaops(&["apply", "-l", "@failed", "-e", "broken=none", &play]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("bravo") && !stdout.contains("alpha"),
        "{stdout}"
    );
    assert_eq!(a.accepted_logins(), before.0, "alpha was contacted");
    assert!(b.accepted_logins() > before.1, "bravo was not contacted");
    assert_eq!(recorded(&setup.records()[0]), Vec::<&str>::new());

    // Now `@failed` says the last apply succeeded, and contacts nothing.
    let before = (a.accepted_logins(), b.accepted_logins());
    for cmd in [
        vec!["apply", "-l", "@failed", &play],
        vec!["plan", "-l", "@failed", &play],
        vec!["run", "-l", "@failed", "--", "true"],
    ] {
        let (code, _, stderr) = setup.picaops(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("no failed machines are recorded for this inventory")
                && stderr.contains("succeeded on every machine"),
            "{cmd:?}: {stderr}"
        );
    }
    assert_eq!((a.accepted_logins(), b.accepted_logins()), before);

    // With both failing, `@failed` combines with other terms like any name.
    let (code, _, _) = setup.picaops(&["apply", "-e", "broken=alpha", &play]);
    assert_eq!(code, 1);
    let (code, _, _) = setup.picaops(&["apply", "-l", "bravo", "-e", "broken=bravo", &play]);
    assert_eq!(code, 1);
    assert_eq!(recorded(&setup.records()[0]), ["alpha", "bravo"]);
    let before = (a.accepted_logins(), b.accepted_logins());
    let (code, stdout, stderr) = setup.picaops(&["run", "-l", "@failed,!alpha", "--", "echo hi"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("bravo") && !stdout.contains("alpha"),
        "{stdout}"
    );
    assert_eq!(a.accepted_logins(), before.0, "alpha was excluded");
    assert!(b.accepted_logins() > before.1);
}

#[test]
fn limit_at_file_selects_its_names_and_refuses_unknown_or_empty_ones() {
    let ws = Workstation::new();
    let (a, b) = (Sshd::start(&ws), Sshd::start(&ws));
    let setup = Setup::new(&ws, &[("alpha", &a), ("bravo", &b)]);
    let list = |name: &str, text: &str| {
        let p = setup.path(name);
        std::fs::write(&p, text).unwrap();
        format!("@{}", p.display())
    };

    let unknown = list("typo.txt", "# tonight\nalpha\n  bravoo\n");
    let (code, _, stderr) = setup.picaops(&["run", "-l", &unknown, "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("typo.txt:3:3: `bravoo`") && stderr.contains("Did you mean `bravo`?"),
        "the unknown name, where it is written, and the likely one:\n{stderr}"
    );
    for (name, text, says) in [
        ("empty.txt", "# nothing tonight\n\n", "names no machine"),
        (
            "two.txt",
            "alpha bravo\n",
            "two.txt:1:1: `alpha bravo` is not one name",
        ),
    ] {
        let (code, _, stderr) = setup.picaops(&["run", "-l", &list(name, text), "--", "true"]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    let (code, _, stderr) = setup.picaops(&["run", "-l", "@/nonexistent/hosts", "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/hosts"),
        "{stderr}"
    );
    assert_eq!((a.accepted_logins(), b.accepted_logins()), (0, 0));

    let (code, stdout, stderr) = setup.picaops(&[
        "run",
        "-l",
        &list("tonight.txt", "bravo\n"),
        "--",
        "echo hi",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bravo"), "{stdout}");
    assert_eq!(a.accepted_logins(), 0);
    assert!(b.accepted_logins() > 0);
}
