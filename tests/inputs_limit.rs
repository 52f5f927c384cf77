//! An empty `--limit` must never mean "every machine": the binary against real sshd processes,
//! counting the logins each sshd accepted to prove a refused limit contacted nothing.
//!
//! `picaops apply -l "$HOSTS"` with `HOSTS` unset passes `-l ""`; before issue 19 that
//! converged the whole site.

mod transport_support;

use std::process::Command;

use transport_support::{Sshd, Workstation, NOSUDO_USER};

/// `inventory/` and, beside it, `play.yml`.
struct Inventory {
    dir: tempfile::TempDir,
}

impl Inventory {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("inventory")
    }
}

/// Two hosts on real sshd processes, and a one-task playbook for plan and apply.
fn inventory(ws: &Workstation, hosts: &[(&str, &Sshd)]) -> Inventory {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory");
    std::fs::create_dir(&inv).unwrap();
    transport_support::write_inventory(&inv, ws, hosts, NOSUDO_USER, &|_| String::new());
    std::fs::write(
        dir.path().join("play.yml"),
        "- name: Marker\n  hosts: all\n  tasks:\n    - name: say hello\n      command: echo hello\n",
    )
    .unwrap();
    Inventory { dir }
}

fn picaops(inv: &Inventory, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picaops"))
        .arg("--inventory")
        .arg(inv.path())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_empty_limit_is_refused_before_any_host_is_contacted() {
    let ws = Workstation::new();
    let a = Sshd::start(&ws);
    let b = Sshd::start(&ws);
    let inv = inventory(&ws, &[("alpha", &a), ("bravo", &b)]);
    let play = inv.dir.path().join("play.yml");
    let play = play.to_str().unwrap();

    for limit in ["", " ", ",", " , "] {
        for cmd in [
            vec!["run", "-l", limit, "--", "true"],
            vec!["plan", "-l", limit, play],
            vec!["apply", "-l", limit, play],
        ] {
            let (code, stderr) = picaops(&inv, &cmd);
            assert_eq!(code, 2, "{cmd:?} must be a usage error:\n{stderr}");
            assert!(
                stderr.contains("--limit is empty") && stderr.contains("-l all"),
                "{cmd:?}: the message says why and how to target everything:\n{stderr}"
            );
        }
    }
    assert_eq!(
        (a.accepted_logins(), b.accepted_logins()),
        (0, 0),
        "a refused limit contacted a host"
    );

    // An empty term inside a list is refused too: `a,,b` is most likely `a,$UNSET,b`.
    for limit in ["alpha,,bravo", "alpha,", "alpha,!"] {
        let (code, stderr) = picaops(&inv, &["run", "-l", limit, "--", "true"]);
        assert_eq!(code, 2, "-l {limit:?}:\n{stderr}");
        assert!(stderr.contains("empty term"), "-l {limit:?}:\n{stderr}");
    }
    assert_eq!((a.accepted_logins(), b.accepted_logins()), (0, 0));

    // Positive control: `-l all` is the way to mean every machine, and it does reach both.
    let (code, stderr) = picaops(&inv, &["run", "-l", "all", "--", "true"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("ok: 2 hosts"), "{stderr}");
    assert!(a.accepted_logins() > 0 && b.accepted_logins() > 0);
}
