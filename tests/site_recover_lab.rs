//! Losing Toulouse on the lab: known files are written into the `hello` service on bob and
//! backed up to Compiègne, bob is stopped, and `site recover toulouse --apply` brings hello and
//! the Toulouse VM back at Compiègne (alice): the VM created and converged there, hello healthy
//! with exactly the data of its last snapshot, the RPO that snapshot's age, the RTO measured.
//! While Toulouse is lost, retention is refused. When bob comes back, its stale hello and VM are
//! stopped before anything else (data and disks kept) and the recovered copies are untouched.
//! Then `site failback toulouse --apply` brings them home with the data written at alice in the
//! meantime: hello healthy on bob with alice's files, recovery.yml gone, retention thawed,
//! alice's hello taken down (its data kept) and its vm-tls shut off under another name, bob's
//! vm-tls reached with its own host key. Afterwards: bob as it was, alice's copies removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use common::{json, ok, picaops_on, root, text, Lab};
use serde_json::Value;

/// The lab inventory with the VMs, in a directory beside the lab's own (so its `../` paths
/// hold), removed when dropped with everything the test made on alice; bob started again.
struct Recovery {
    inventory: PathBuf,
    lab: PathBuf,
}

impl Recovery {
    fn new(lab: &Lab) -> Recovery {
        let inventory = common::inventory_copy(lab, "inventory-recover", true);
        Recovery {
            inventory,
            lab: lab.dir.clone(),
        }
    }

    fn picaops(&self, args: &[&str]) -> Output {
        picaops_on(&self.inventory, args)
    }

    /// The newest snapshot of job hello in its repository's listing.
    fn newest_hello_snapshot(&self) -> Value {
        let listing = json(&self.picaops(&["-o", "json", "backup", "snapshots", "--job", "hello"]));
        listing["jobs"][0]["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .max_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()))
            .expect("a snapshot")
            .clone()
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        let start = common::picaops()
            .args(["lab", "start", "bob"])
            .output()
            .unwrap();
        if !start.status.success() {
            eprintln!("could not start bob again: {}", text(&start.stderr));
        }
        let cleanup = "virsh -q destroy vm-tls >/dev/null 2>&1; \
            virsh -q undefine vm-tls --nvram >/dev/null 2>&1 || virsh -q undefine vm-tls >/dev/null 2>&1; \
            rm -f /var/lib/libvirt/images/vm-tls-*; \
            for v in $(virsh -q list --all --name | grep '^vm-tls-failed-back-'); do \
            virsh -q destroy $v >/dev/null 2>&1; virsh -q undefine $v --nvram >/dev/null 2>&1 || virsh -q undefine $v >/dev/null 2>&1; done; \
            d=/var/lib/picaops/services/hello; if [ -d $d ]; then \
            (cd $d && (docker compose -p hello down || docker-compose -p hello down)) >/dev/null 2>&1; \
            rm -rf $d; fi; rm -rf /DATA/hello /var/lib/picaops/services/.removed/hello-* /etc/picaops/backup/jobs/.failed-back; true";
        let _ = std::process::Command::new("docker")
            .args(["exec", "picaops-lab-alice", "sh", "-c", cleanup])
            .output();
        // bob as the other tests expect it: its hello and the demo's VM running.
        let restart = "rm -rf /DATA/hello.before-failback-*; virsh -q start vm-tls >/dev/null 2>&1; \
            cd /var/lib/picaops/services/hello 2>/dev/null && docker compose -p hello start >/dev/null 2>&1; true";
        let _ = std::process::Command::new("docker")
            .args(["exec", "picaops-lab-bob", "sh", "-c", restart])
            .output();
        let _ = std::fs::remove_dir_all(&self.inventory);
        let _ = &self.lab;
    }
}

fn sums(lab: &Lab, host: &str) -> String {
    let out = root(lab, host, "cd /DATA/hello && sha256sum f1 f2 f3");
    ok(&out, &format!("checksums on {host}"));
    text(&out.stdout)
}

#[test]
fn losing_toulouse_brings_its_service_and_vm_back_at_compiegne_with_the_last_snapshot() {
    let Some(lab) = common::lab("site_recover_lab") else {
        return;
    };
    let r = Recovery::new(&lab);
    let vm_playbook = lab.dir.join("playbooks/lab-vms.yml");
    let vm_playbook = vm_playbook.to_str().unwrap();
    let backup_playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/base/backup.yml");
    let backup_playbook = backup_playbook.to_str().unwrap();
    // `site recover|failback toulouse --apply`, converging with the backup and VM playbooks.
    let site_apply = |what: &str| {
        r.picaops(&[
            "-o",
            "json",
            "site",
            what,
            "toulouse",
            "--apply",
            "--playbook",
            backup_playbook,
            "--playbook",
            vm_playbook,
        ])
    };

    // hello on bob, with known files, backed up to alice.
    ok(
        &r.picaops(&["service", "apply", "-l", "bob"]),
        "hello deployed on bob",
    );
    ok(
        &root(
            &lab,
            "bob",
            "set -e; mkdir -p /DATA/hello; for i in 1 2 3; do head -c 200000 /dev/urandom > /DATA/hello/f$i; done",
        ),
        "hello's files",
    );
    let before = sums(&lab, "bob");
    ok(
        &r.picaops(&[
            "apply",
            "-l",
            "bob,alice",
            "--tags",
            "backup",
            backup_playbook,
        ]),
        "backups installed",
    );
    ok(
        &r.picaops(&["backup", "init", "--job", "hello"]),
        "backup init",
    );
    ok(
        &r.picaops(&["backup", "run", "--job", "hello"]),
        "backup run",
    );
    let newest = r.newest_hello_snapshot();
    let snapshot_time =
        picaops::backup::time::parse_rfc3339(newest["time"].as_str().unwrap()).unwrap();

    // The Toulouse VM on bob, made afresh (its key pinned in this inventory), whatever earlier
    // tests left there (site_lab and vm_lab remove the demo's).
    ok(
        &root(
            &lab,
            "bob",
            "virsh -q destroy vm-tls >/dev/null 2>&1; virsh -q undefine vm-tls --nvram >/dev/null 2>&1 || \
             virsh -q undefine vm-tls >/dev/null 2>&1; rm -f /var/lib/libvirt/images/vm-tls-*; true",
        ),
        "no vm-tls on bob yet",
    );
    ok(
        &r.picaops(&["apply", "-l", "bob,vm-tls", vm_playbook]),
        "vm-tls created on bob",
    );

    // Toulouse is lost.
    ok(
        &common::picaops()
            .args(["lab", "stop", "bob"])
            .output()
            .unwrap(),
        "lab stop bob",
    );
    let plan = r.picaops(&["site", "recover", "toulouse"]);
    ok(&plan, "the recovery plan");
    let said = text(&plan.stdout);
    assert!(said.contains("VM vm-tls on alice (was on bob)"), "{said}");
    assert!(
        said.contains("service hello on alice (was on bob)"),
        "{said}"
    );
    assert!(
        !r.inventory.join("recovery.yml").exists(),
        "the plan wrote nothing"
    );

    let started = picaops::backup::time::now();
    let clock = Instant::now();
    let out = site_apply("recover");
    let took = clock.elapsed();
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}\n{}", text(&out.stderr));
    let hello: &Value = common::service(&doc, "hello");
    assert_eq!(hello["ok"], true, "{hello:#}");
    assert_eq!(hello["machine"], "alice");
    assert_eq!(
        hello["snapshot"], newest["short_id"],
        "{hello:#} vs {newest:#}"
    );
    // RPO: the snapshot's age when the recovery started (to the second of its listing).
    let rpo = hello["rpo_seconds"].as_f64().unwrap();
    let age = started - snapshot_time;
    assert!(
        (rpo - age).abs() <= 5.0,
        "RPO {rpo} s, snapshot {age:.0} s old"
    );
    let rto = hello["rto_seconds"].as_f64().unwrap();
    assert!(
        rto > 0.0 && rto <= took.as_secs_f64(),
        "RTO {rto} s of {took:?}"
    );
    assert!(took.as_secs() < 15 * 60, "the recovery took {took:?}");
    eprintln!("recovery: RPO {rpo:.0} s, RTO {rto:.1} s, whole command {took:?}");

    // hello healthy at alice with exactly the snapshot's files; the VM converged there.
    assert_eq!(
        sums(&lab, "alice"),
        before,
        "hello's files at alice are the snapshot's"
    );
    let ps = root(
        &lab,
        "alice",
        "docker inspect -f '{{.State.Health.Status}}' hello-web-1",
    );
    assert_eq!(text(&ps.stdout).trim(), "healthy", "{}", text(&ps.stderr));
    let vm = r.picaops(&[
        "run",
        "-l",
        "vm-tls",
        "--",
        "cat",
        "/data/picaops-converged",
    ]);
    ok(&vm, "vm-tls answers at alice");
    assert!(
        text(&vm.stdout).contains("vm-tls in compiegne"),
        "{}",
        text(&vm.stdout)
    );
    let recovery = std::fs::read_to_string(r.inventory.join("recovery.yml")).unwrap();
    assert!(
        recovery.contains("lost: toulouse") && recovery.contains("hello: alice"),
        "{recovery}"
    );

    // While Toulouse is lost, the surviving repositories keep every snapshot.
    let forget = r.picaops(&["backup", "forget", "--job", "hello", "--prune"]);
    assert_ne!(forget.status.code(), Some(0));
    let why = text(&forget.stderr);
    assert!(
        why.contains("retention is frozen while site `toulouse` is lost"),
        "{why}"
    );

    // Run again: it goes on from where things are, and changes nothing of the data.
    let again = site_apply("recover");
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert_eq!(sums(&lab, "alice"), before);

    // bob comes back: its copies of hello and vm-tls are stale. The plan says they will be
    // stopped; apply stops them first, keeps their data, and leaves alice's copies alone. (The
    // limit leaves out vm-cpn, whose key this copy of the inventory does not pin; fencing
    // reaches bob whatever the limit.)
    ok(
        &common::picaops()
            .args(["lab", "start", "bob"])
            .output()
            .unwrap(),
        "lab start bob",
    );
    let running = |host: &str, what: &str| {
        let out = root(&lab, host, what);
        text(&out.stdout).trim().to_string()
    };
    assert_eq!(
        running("bob", "docker inspect -f '{{.State.Running}}' hello-web-1"),
        "true",
        "bob's stale hello came back up with bob"
    );
    let plan = r.picaops(&["-o", "json", "plan", "-l", "bob,alice,vm-tls", vm_playbook]);
    let doc = json(&plan);
    let fence = &doc["fence"]["machines"][0];
    assert_eq!(fence["machine"], "bob", "{doc:#}");
    assert_eq!(fence["copies"]["service hello"], "running", "{doc:#}");
    let apply = r.picaops(&["-o", "json", "apply", "-l", "bob,alice,vm-tls", vm_playbook]);
    let doc = json(&apply);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{doc:#}\n{}",
        text(&apply.stderr)
    );
    let stopped = doc["fence"]["machines"][0]["stopped"].to_string();
    assert!(stopped.contains("service hello"), "{doc:#}");
    assert!(stopped.contains("timer hello"), "{doc:#}");
    assert_eq!(
        running("bob", "systemctl is-active picaops-backup-hello.timer"),
        "inactive",
        "bob's timer would back its stale hello up into the job's history"
    );
    assert_eq!(
        running("bob", "docker inspect -f '{{.State.Running}}' hello-web-1"),
        "false",
        "the stale hello is stopped"
    );
    assert_eq!(
        running("bob", "virsh domstate vm-tls"),
        "shut off",
        "the stale VM is shut down, not deleted"
    );
    assert_eq!(sums(&lab, "bob"), before, "the stale copy's data is kept");
    assert_eq!(
        running(
            "alice",
            "docker inspect -f '{{.State.Health.Status}}' hello-web-1"
        ),
        "healthy"
    );
    assert_eq!(running("alice", "virsh domstate vm-tls"), "running");

    // Toulouse comes home. hello keeps working at alice until then: one more file there.
    ok(
        &root(
            &lab,
            "alice",
            "head -c 100000 /dev/urandom > /DATA/hello/f4",
        ),
        "a file written at alice during the emergency",
    );
    let files = "cd /DATA/hello && sha256sum f1 f2 f3 f4";
    let at_alice = text(&root(&lab, "alice", files).stdout);
    assert_eq!(at_alice.lines().count(), 4, "{at_alice}");
    let plan = r.picaops(&["site", "failback", "toulouse"]);
    ok(&plan, "the failback plan");
    let said = text(&plan.stdout);
    assert!(said.contains("service hello from alice to bob"), "{said}");
    assert!(said.contains("VM vm-tls from alice to bob"), "{said}");
    assert!(
        r.inventory.join("recovery.yml").exists(),
        "the plan changed nothing"
    );
    let clock = Instant::now();
    let out = site_apply("failback");
    let took = clock.elapsed();
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}\n{}", text(&out.stderr));
    let hello: &Value = common::service(&doc, "hello");
    assert_eq!(
        (&hello["ok"], &hello["home"]),
        (&Value::Bool(true), &Value::from("bob")),
        "{hello:#}"
    );
    eprintln!(
        "failback: hello down {:.1} s, healthy at home after {:.1} s, whole command {took:?}",
        hello["downtime_seconds"].as_f64().unwrap_or_default(),
        hello["healthy_after_seconds"].as_f64().unwrap_or_default()
    );
    // Home got the snapshot the failback made at alice (the repository's newest now), and with
    // it exactly alice's files, the one written there included; bob's own copy is kept aside.
    let newest = r.newest_hello_snapshot();
    assert_eq!(
        hello["snapshot"], newest["short_id"],
        "{hello:#} vs {newest:#}"
    );
    assert_eq!(text(&root(&lab, "bob", files).stdout), at_alice);
    assert_eq!(
        running(
            "bob",
            "docker inspect -f '{{.State.Health.Status}}' hello-web-1"
        ),
        "healthy"
    );
    ok(
        &root(
            &lab,
            "bob",
            "cat /DATA/hello.before-failback-*/f1 >/dev/null",
        ),
        "bob's data from before the failback, kept",
    );
    // recovery.yml is gone (its text kept beside it) and retention runs again.
    assert!(!r.inventory.join("recovery.yml").exists());
    let kept = doc["kept_copy"].as_str().expect("a kept copy");
    assert!(
        std::fs::read_to_string(kept).is_ok_and(|t| t.contains("lost: toulouse")),
        "{kept}"
    );
    let forget = r.picaops(&["backup", "forget", "--job", "hello"]);
    assert_eq!(
        forget.status.code(),
        Some(0),
        "{}{}",
        text(&forget.stdout),
        text(&forget.stderr)
    );
    // alice's hello taken down (no -v: its data stays); its vm-tls shut off under another name.
    assert_eq!(
        running(
            "alice",
            "docker ps -aq --filter label=com.docker.compose.project=hello"
        ),
        ""
    );
    ok(
        &root(
            &lab,
            "alice",
            "test ! -e /var/lib/picaops/services/hello && ls -d /var/lib/picaops/services/.removed/hello-* && test -f /DATA/hello/f4",
        ),
        "alice's hello taken down, its project and data kept",
    );
    let aside = running("alice", "virsh -q list --all --name | grep '^vm-tls'");
    assert!(aside.starts_with("vm-tls-failed-back-"), "{aside}");
    assert_eq!(
        running("alice", &format!("virsh domstate {aside}")),
        "shut off"
    );
    assert_eq!(
        running("bob", "systemctl is-active picaops-backup-hello.timer"),
        "active",
        "hello's timer runs at home again"
    );
    // bob's vm-tls runs, converged, reached with its own host key pinned again.
    assert_eq!(running("bob", "virsh domstate vm-tls"), "running");
    let vm = r.picaops(&[
        "run",
        "-l",
        "vm-tls",
        "--",
        "cat",
        "/data/picaops-converged",
    ]);
    ok(&vm, "vm-tls answers at bob");
    assert!(
        text(&vm.stdout).contains("vm-tls in toulouse"),
        "{}",
        text(&vm.stdout)
    );
    // Nothing is lost any more: a second failback is refused, nothing done.
    let again = r.picaops(&["site", "failback", "toulouse", "--apply"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("site `toulouse` is not lost"),
        "{}",
        text(&again.stderr)
    );
}
