//! `picaops run` end to end: the binary against real sshd processes, with an inventory written in
//! the format the loader reads (sites.yml + hosts.yml, pinned `host_key:`).

mod transport_support;

use std::process::Command;

use transport_support::{free_port, Sshd, Workstation, NOSUDO_USER};

struct Inventory {
    dir: tempfile::TempDir,
}

/// hosts: (name, address, port, host_key)
fn inventory(ws: &Workstation, hosts: &[(&str, &str, u16, &str)]) -> Inventory {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sites.yml"),
        "sites:\n  bench: { description: loopback sshd processes, backs_up_to: other }\n  \
         other: { description: unused, backs_up_to: bench }\n",
    )
    .unwrap();
    let mut yml = String::from("hosts:\n");
    for (name, address, port, key) in hosts {
        yml.push_str(&format!(
            "  {name}:\n    site: bench\n    address: {address}\n    port: {port}\n    \
             user: {NOSUDO_USER}\n    identity_file: {}\n    host_key: {key}\n",
            ws.key().display()
        ));
    }
    std::fs::write(dir.path().join("hosts.yml"), yml).unwrap();
    Inventory { dir }
}

fn picaops(inv: &Inventory, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picaops"))
        .arg("--inventory")
        .arg(inv.dir.path())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_prefixes_lines_by_host_and_exits_by_outcome() {
    let ws = Workstation::new();
    let a = Sshd::start(&ws);
    let b = Sshd::start(&ws);
    let closed = free_port(&a.address);
    let inv = inventory(
        &ws,
        &[
            ("alpha", &a.address, a.port, &a.host_key),
            ("bravo-long", &b.address, b.port, &b.host_key),
            ("closed", &a.address, closed, &a.host_key),
        ],
    );

    let (code, stdout, stderr) = picaops(
        &inv,
        &[
            "run",
            "--limit",
            "alpha,bravo*",
            "--",
            "echo out; echo err >&2",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "alpha      | out\nbravo-long | out\n");
    assert!(stderr.contains("alpha      | err\n"), "{stderr}");
    assert!(stderr.contains("ok: 2 hosts"), "{stderr}");

    // A non-zero exit and an unreachable host both fail the run, and the summary names them.
    let (code, _, stderr) = picaops(&inv, &["run", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("failed: 3 of 3 hosts"), "{stderr}");
    assert!(
        stderr.contains("alpha       the command exited with code 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("closed      connection refused"),
        "{stderr}"
    );

    // JSON: one document with every host.
    let (code, stdout, _) = picaops(&inv, &["--output", "json", "run", "--", "echo", "a b"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["hosts"][0]["stdout"], "a b\n");
    assert_eq!(doc["hosts"][0]["exit_code"], 0);
    assert_eq!(doc["hosts"][2]["error"]["kind"], "connection_refused");
    assert_eq!(doc["summary"]["failed"], 1);

    // Usage errors: exit 2, nothing contacted.
    let before = a.connections();
    assert_eq!(picaops(&inv, &["run"]).0, 2);
    assert_eq!(picaops(&inv, &["run", "--forks", "0", "--", "true"]).0, 2);
    assert_eq!(a.connections(), before);
}
