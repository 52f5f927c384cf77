//! `picaops run` against the lab: real sshd's in containers on the two site networks, reached
//! with the lab's inventory and pinned host keys. Needs `picaops lab up` (see tests/common).

mod common;

use std::path::Path;

use common::{host, json, lab, picaops, picaops_on, text};

const HOSTS: [&str; 4] = ["bob", "alice", "caribou", "ldap"];

#[test]
fn every_lab_host_answers_with_its_own_name() {
    let Some(lab) = lab("every_lab_host_answers_with_its_own_name") else {
        return;
    };
    let out = lab.picaops(&["run", "--", "uname", "-n"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in HOSTS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line from {name}:\n{stdout}"));
        assert_eq!(line.split('|').nth(1).map(str::trim), Some(name), "{line}");
    }

    let out = lab.picaops(&["--output", "json", "run", "--", "uname", "-n"]);
    let doc = json(&out);
    for name in HOSTS {
        let h = host(&doc, name);
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["stdout"].as_str().map(str::trim), Some(name), "{h}");
    }
}

#[test]
fn a_stopped_host_fails_alone_and_is_named_in_the_summary() {
    let Some(lab) = lab("a_stopped_host_fails_alone_and_is_named_in_the_summary") else {
        return;
    };
    let stop = picaops().args(["lab", "stop", "caribou"]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let out = lab.picaops(&["run", "--connect-timeout", "3", "--", "uname", "-n"]);
    let json_out = lab.picaops(&[
        "--output",
        "json",
        "run",
        "--connect-timeout",
        "3",
        "--",
        "uname",
        "-n",
    ]);
    // Bring caribou back before asserting, so a failure here leaves the lab whole.
    let start = picaops()
        .args(["lab", "start", "caribou"])
        .output()
        .unwrap();
    assert!(start.status.success(), "{}", text(&start.stderr));

    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["bob", "alice", "ldap"] {
        assert!(
            stdout.contains(&format!("| {name}")),
            "{name} did not answer:\n{stdout}"
        );
    }
    let stderr = text(&out.stderr);
    let summary: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("failed:"))
        .collect();
    assert!(
        summary.first().is_some_and(|l| l.contains("1 of 4 hosts")),
        "{stderr}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.trim_start().starts_with("caribou")),
        "{stderr}"
    );
    assert!(
        !summary.iter().any(|l| l.trim_start().starts_with("bob")),
        "{stderr}"
    );

    let doc = json(&json_out);
    assert_eq!(host(&doc, "caribou")["ok"], false);
    assert_eq!(host(&doc, "bob")["ok"], true);
}

/// Copies the lab inventory with alice pinned to bob's host key.
fn inventory_with_wrong_key_for_alice(lab_dir: &Path, to: &Path) {
    let key = lab_dir.join("id_ed25519");
    for file in ["sites.yml", "groups.yml"] {
        std::fs::copy(lab_dir.join("inventory").join(file), to.join(file)).unwrap();
    }
    let hosts = std::fs::read_to_string(lab_dir.join("inventory/hosts.yml")).unwrap();
    let hosts = hosts.replace("../id_ed25519", key.to_str().unwrap());
    let keys: Vec<&str> = hosts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("host_key: "))
        .collect();
    let (bob_key, alice_key) = (keys[0].to_string(), keys[1].to_string());
    assert_ne!(bob_key, alice_key);
    let (before, after) = hosts.split_once("\n  alice:").unwrap();
    let after = after.replacen(&alice_key, &bob_key, 1);
    std::fs::write(to.join("hosts.yml"), format!("{before}\n  alice:{after}")).unwrap();
}

#[test]
fn a_wrong_pinned_host_key_is_refused_and_the_others_proceed() {
    let Some(lab) = lab("a_wrong_pinned_host_key_is_refused_and_the_others_proceed") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    inventory_with_wrong_key_for_alice(&lab.dir, dir.path());
    let out = picaops_on(dir.path(), &["run", "--", "uname", "-n"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["bob", "caribou", "ldap"] {
        assert!(
            stdout.contains(&format!("| {name}")),
            "{name} did not answer:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("| alice"),
        "alice must not run anything:\n{stdout}"
    );
    let stderr = text(&out.stderr);
    let alice = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("alice"))
        .unwrap_or_else(|| panic!("alice not in the summary:\n{stderr}"));
    assert!(alice.contains("HOST KEY CHANGED"), "{alice}");
    assert!(
        alice.contains("host_key:"),
        "the message says how to fix it: {alice}"
    );
}

#[test]
fn the_lab_inventory_checks_and_limits_by_site() {
    let Some(lab) = lab("the_lab_inventory_checks_and_limits_by_site") else {
        return;
    };
    let check = lab.picaops(&["inventory", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let out = lab.picaops(&[
        "--output",
        "json",
        "run",
        "--limit",
        "compiegne",
        "--",
        "uname",
        "-n",
    ]);
    let doc = json(&out);
    let names: Vec<&str> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "caribou", "ldap"]);
}

#[test]
fn the_wan_cut_in_the_router_separates_the_sites_and_restore_joins_them() {
    let Some(_lab) = lab("the_wan_cut_in_the_router_separates_the_sites") else {
        return;
    };
    let ping_alice = |timeout: &str| {
        picaops()
            .args([
                "lab",
                "ssh",
                "bob",
                "--",
                "ping",
                "-c1",
                "-W",
                timeout,
                "172.30.2.11",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    // The route from bob to the other site goes through the router, not the workstation.
    let route = picaops()
        .args([
            "lab",
            "ssh",
            "bob",
            "--",
            "ip",
            "route",
            "get",
            "172.30.2.11",
        ])
        .output()
        .unwrap();
    assert!(
        text(&route.stdout).contains("via 172.30.1.254"),
        "{}",
        text(&route.stdout)
    );
    assert!(ping_alice("2"), "bob reaches alice before the cut");

    let cut = picaops().args(["lab", "wan", "cut"]).output().unwrap();
    let during = ping_alice("1");
    let restore = picaops().args(["lab", "wan", "restore"]).output().unwrap();
    assert!(cut.status.success(), "{}", text(&cut.stderr));
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert!(!during, "the cut must stop bob → alice");
    assert!(ping_alice("2"), "restore brings the link back");

    let status = picaops()
        .args(["--output", "json", "lab", "status"])
        .output()
        .unwrap();
    let doc = json(&status);
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(h["ssh"], true, "{h}");
    }
}
