//! `picaops backup status` on the lab with Toulouse's data host gone (`picaops lab stop bob`):
//! bob's job is judged by the newest snapshot its repository at alice holds, read on alice's
//! side, and said to have an unreachable data host, never "no successful backup yet". bob is
//! started again whatever happens.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{json, ok, picaops, root, text, Lab};
use picaops::backup::time::parse_rfc3339;
use serde_json::Value;

const JOB: &str = "bob-app";
const CONNECT_TIMEOUT: u64 = 5;

fn backup(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["--output", "json", "backup"];
    all.extend_from_slice(args);
    lab.picaops(&all)
}

/// bob's data for its job (a directory and the `lab-db` PostgreSQL its dump reads), the job
/// installed and its repository created: what tests/backup_lab.rs prepares, for bob only. No
/// file of its own beside backup_lab's f1…f1000 (their drill counts every file): one only in
/// an empty directory, which backup_lab then overwrites.
fn prepare(lab: &Lab) {
    let out = root(
        lab,
        "bob",
        "set -e; mkdir -p /srv/lab-app/files; [ -n \"$(ls -A /srv/lab-app/files)\" ] || echo status-truth > /srv/lab-app/files/f1; \
         if [ \"$(docker inspect -f '{{.State.Running}}' lab-db 2>/dev/null)\" != true ]; then \
           docker rm -f lab-db >/dev/null 2>&1 || true; \
           docker run -d --name lab-db -e POSTGRES_DB=app picaops-lab/postgres:17 >/dev/null; fi; \
         for i in $(seq 1 60); do docker exec lab-db pg_isready -q -U postgres -h 127.0.0.1 && break; sleep 0.5; done",
    );
    ok(&out, "bob's data for bob-app");
    let out = lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]);
    ok(&out, "apply --tags backup");
    ok(&backup(lab, &["init"]), "backup init");
}

/// Starts bob again when dropped, so a failing assertion never leaves the lab without it.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let out = picaops().args(["lab", "start", "bob"]).output().unwrap();
        if !out.status.success() {
            eprintln!("could not start bob again: {}", text(&out.stderr));
        }
    }
}

fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

#[test]
fn with_bob_stopped_status_gives_the_newest_snapshot_at_alice_and_says_bob_is_unreachable() {
    let Some(lab) = common::lab("backup_status_lab") else {
        return;
    };
    prepare(&lab);
    ok(&backup(&lab, &["run", "--job", JOB]), "backup run bob-app");
    // The repository's listing, read at alice while bob is still up: the newest snapshot.
    let out = backup(&lab, &["snapshots", "--job", JOB]);
    ok(&out, "backup snapshots");
    let listing = json(&out);
    let snapshots = job(&listing, JOB)["snapshots"]
        .as_array()
        .expect("snapshots")
        .clone();
    let newest = snapshots
        .iter()
        .max_by(|a, b| {
            let t = |s: &Value| s["time"].as_str().and_then(parse_rfc3339).unwrap_or(0.0);
            t(a).total_cmp(&t(b))
        })
        .expect("bob-app has snapshots after a run");
    let newest_id = newest["id"].as_str().unwrap().to_string();

    let stop = picaops().args(["lab", "stop", "bob"]).output().unwrap();
    ok(&stop, "picaops lab stop bob");
    let restart = Restart;
    let timeout = CONNECT_TIMEOUT.to_string();
    let start = Instant::now();
    let json_out = backup(
        &lab,
        &["status", "--job", JOB, "--connect-timeout", &timeout],
    );
    let elapsed = start.elapsed();
    let human = lab.picaops(&[
        "backup",
        "status",
        "--job",
        JOB,
        "--connect-timeout",
        &timeout,
    ]);
    drop(restart);

    let doc = json(&json_out);
    let j = job(&doc, JOB);
    let reason = j["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("data host bob unreachable (since unknown)"),
        "{j}\n{}",
        text(&json_out.stderr)
    );
    assert!(!reason.contains("no successful backup yet"), "{j}");
    assert_eq!(j["source"], "repository", "{j}");
    assert_eq!(j["data_host_reachable"], false, "{j}");
    assert_eq!(j["repository_reachable"], true, "{j}");
    assert_eq!(j["newest_snapshot"]["id"], newest_id.as_str(), "{j}");
    assert_eq!(j["snapshot_count"], snapshots.len(), "{j}");
    // Just backed up: fresh, so ok, and its age is that snapshot's.
    assert_eq!(j["state"], "ok", "{j}");
    let age = j["data_age_seconds"].as_u64().expect("an age");
    assert_eq!(
        Some(age),
        j["newest_snapshot"]["age_seconds"].as_u64(),
        "{j}"
    );
    assert!(age < 3600, "{j}");
    assert_eq!(json_out.status.code(), Some(0), "{j}");
    // bob is tried once, for at most the connect timeout; alice answers both rounds.
    assert!(
        elapsed < Duration::from_secs(CONNECT_TIMEOUT + 1 + 20),
        "backup status took {elapsed:?} with bob stopped"
    );
    let stdout = text(&human.stdout);
    let short = &newest_id[..8];
    assert!(
        stdout.contains("data host bob unreachable (since unknown)")
            && stdout.contains(&format!("newest snapshot {short} of ")),
        "{stdout}\n{}",
        text(&human.stderr)
    );
}
