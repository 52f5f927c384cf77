//! A whole-site run on the lab, all three layers at once: a libvirt VM on bob (real QEMU under
//! TCG), a file converged on bob over SSH, and a Compose service on bob's Docker engine.
//! `plan --out` then `apply SAVED_PLAN` makes the VM, host and service changes together; the
//! same kind of saved plan is refused, with nothing applied, after a service's container or a
//! VM's memory was changed behind its back. Needs `picaops lab up` (see tests/common).
//!
//! It works on its own inventory (`<lab>/site-test-PID/inventory`, with the lab's sites, hosts,
//! groups and secrets, one VM `vm-site`, one service `sitetest` and its own
//! `playbooks/site.yml`), limited to `bob,vm-site`, so the lab's own services and VMs are left
//! alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{json, lab, picaops_on, text, Lab};
use serde_json::Value;

struct Site {
    root: PathBuf,
    inventory: PathBuf,
}

/// Removes what the test made on bob (its VM and disks, the service, the marker) and, as
/// tests/vm_lab.rs does, the VMs the demo and vm_lab leave on bob: managed by picaops and not in
/// this inventory, apply would plan their deletion (and refuse it without --allow-destroy).
const CLEANUP: &str = "for d in vm-site vm-tls vm-hand; do virsh -q destroy $d >/dev/null 2>&1; \
    virsh -q undefine $d --nvram >/dev/null 2>&1 || virsh -q undefine $d >/dev/null 2>&1; \
    rm -f /var/lib/libvirt/images/$d-*; done; \
    d=/var/lib/picaops/services/sitetest; if [ -d $d ]; then \
    (cd $d && (docker compose -p sitetest down || docker-compose -p sitetest down)) >/dev/null 2>&1; \
    rm -rf $d; fi; rm -f /srv/picaops-site-test; true";

impl Site {
    fn new(lab: &Lab) -> Site {
        let root = lab.dir.join(format!("site-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let inventory = root.join("inventory");
        std::fs::create_dir_all(&inventory).unwrap();
        std::fs::create_dir_all(root.join("playbooks")).unwrap();
        // The lab's files, their `../` paths made absolute (this copy lives one level deeper).
        let lab_prefix = format!("{}/", lab.dir.display());
        for f in ["sites.yml", "hosts.yml", "groups.yml", "access.yml"] {
            let s = std::fs::read_to_string(lab.dir.join("inventory-vms").join(f))
                .unwrap_or_else(|e| panic!("{f}: {e}"));
            std::fs::write(inventory.join(f), s.replace("../", &lab_prefix)).unwrap();
        }
        std::fs::write(
            root.join("playbooks/site.yml"),
            "- name: site test\n  hosts: bob\n  tasks:\n    - name: the marker\n      \
             copy: {dest: /srv/picaops-site-test, content: \"{{ marker }}\\n\", mode: \"0644\"}\n",
        )
        .unwrap();
        let site = Site { root, inventory };
        site.on_bob(CLEANUP);
        site
    }

    /// Declares the VM's memory, the marker bob's file holds and the service's greeting.
    fn declare(&self, memory: &str, marker: &str, greeting: &str) {
        std::fs::write(
            self.inventory.join("vms.yml"),
            format!(
                "vms:\n  vm-site:\n    host: bob\n    user: root\n    identity_file: {}/id_ed25519\n    \
                 vcpus: 1\n    memory: {memory}\n    disks: [{{ size: 256MiB, pool: default }}]\n    \
                 network: {{ bridge: vmbr0, address: 10.61.0.30/24, gateway: 10.61.0.1 }}\n    \
                 image: picaops-lab-guest\n    start_at_boot: true\n    groups: [lab_vms]\n\
                 groups:\n  lab_vms:\n    vars: {{vm_accel: tcg}}\n",
                common::lab_dir().display()
            ),
        )
        .unwrap();
        std::fs::write(
            self.inventory.join("vars.yml"),
            format!("vars:\n  marker: \"{marker}\"\n"),
        )
        .unwrap();
        std::fs::write(
            self.inventory.join("services.yml"),
            format!(
                "services:\n  sitetest:\n    host: bob\n    description: the site run's test service\n    \
                 compose: {}/services/hello/compose.yml.j2\n    vars: {{version: \"1.0\", port: 18090}}\n    \
                 env: {{GREETING: {greeting}}}\n    secrets: {{API_TOKEN: hello-api-token}}\n    health: {{timeout: 60s}}\n",
                common::lab_dir().display()
            ),
        )
        .unwrap();
    }

    fn picaops(&self, args: &[&str]) -> Output {
        picaops_on(&self.inventory, args)
    }

    /// A shell command as root on bob; its stdout.
    fn on_bob(&self, script: &str) -> String {
        let out = self.picaops(&["run", "-q", "-o", "json", "-l", "bob", "--", script]);
        let doc = json(&out);
        let h = &doc["hosts"][0];
        assert_eq!(h["ok"], true, "{script} failed on bob: {h}");
        h["stdout"].as_str().unwrap_or("").to_string()
    }

    /// What bob holds of the three layers: the VM's configured memory (KiB), the marker, the
    /// service's greeting, and whether its container runs.
    fn seen(&self) -> (String, String, String) {
        let memory = self.on_bob(
            "virsh dumpxml --inactive vm-site | sed -n 's/.*<currentMemory[^>]*>\\([0-9]*\\)<.*/\\1/p'",
        );
        let marker = self.on_bob("cat /srv/picaops-site-test 2>/dev/null || echo absent");
        let greeting = self.on_bob(
            "sed -n 's/^GREETING=//p' /var/lib/picaops/services/sitetest/service.env 2>/dev/null",
        );
        (
            memory.trim().to_string(),
            marker.trim().to_string(),
            greeting
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string(),
        )
    }

    fn plan_out(&self, file: &Path) -> Value {
        let out = self.picaops(&[
            "plan",
            "-q",
            "-o",
            "json",
            "-l",
            "bob,vm-site",
            "--out",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        json(&out)
    }

    fn apply(&self, args: &[&str]) -> (Option<i32>, Value) {
        let mut all = vec!["apply", "-q", "-o", "json"];
        all.extend_from_slice(args);
        let out = self.picaops(&all);
        (out.status.code(), json(&out))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.picaops(&["run", "-q", "-l", "bob", "--", CLEANUP]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The status of `machine` in phase `phase` of a report.
fn status(doc: &Value, phase: &str, machine: &str) -> String {
    doc["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases in {doc}"))
        .iter()
        .find(|p| p["phase"] == phase)
        .and_then(|p| {
            p["machines"]
                .as_array()?
                .iter()
                .find(|m| m["machine"] == machine)
        })
        .map(|m| m["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("{machine} is not in the {phase} phase: {doc}"))
}

fn moved(doc: &Value) -> Vec<(String, String)> {
    doc["moved"]
        .as_array()
        .unwrap_or_else(|| panic!("no `moved` list in {doc}"))
        .iter()
        .map(|m| {
            (
                m["phase"].as_str().unwrap_or("").to_string(),
                m["machine"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_saved_plan_covers_vms_hosts_and_services_and_is_refused_when_any_moved() {
    let Some(lab) = lab("a_saved_plan_covers_vms_hosts_and_services_and_is_refused_when_any_moved")
    else {
        return;
    };
    let site = Site::new(&lab);
    let plans = tempfile::tempdir().unwrap();

    // Where the test starts: the VM, the marker and the service as first declared.
    site.declare("192MiB", "one", "un");
    let (code, doc) = site.apply(&["-l", "bob,vm-site"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(
        site.seen(),
        ("196608".into(), "one".into(), "un".into()),
        "first apply"
    );

    // One saved plan changes all three layers; applying it does exactly that.
    site.declare("176MiB", "two", "deux");
    let p1 = plans.path().join("p1.plan");
    let planned = site.plan_out(&p1);
    assert_eq!(status(&planned, "vms", "vm-site"), "changed", "{planned}");
    assert_eq!(status(&planned, "converge", "bob"), "changed", "{planned}");
    assert_eq!(status(&planned, "services", "bob"), "changed", "{planned}");
    assert_eq!(site.seen().1, "one", "plan changed nothing");
    let (code, done) = site.apply(&[p1.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(
        site.seen(),
        ("180224".into(), "two".into(), "deux".into()),
        "the saved plan's three changes: {done}"
    );

    // A service's container stopped behind the plan's back: refused, nothing applied.
    site.declare("176MiB", "three", "trois");
    let p2 = plans.path().join("p2.plan");
    site.plan_out(&p2);
    site.on_bob("docker stop $(docker ps -q --filter label=com.docker.compose.project=sitetest)");
    let (code, refused) = site.apply(&[p2.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{refused}");
    assert_eq!(refused["applied"], false, "{refused}");
    assert!(
        moved(&refused).contains(&("services".into(), "bob".into())),
        "{refused}"
    );
    assert_eq!(
        site.seen(),
        ("180224".into(), "two".into(), "deux".into()),
        "nothing of the refused plan was applied: {refused}"
    );

    // Converge again, then a VM's memory changed behind the next plan's back: refused too.
    let (code, doc) = site.apply(&["-l", "bob,vm-site"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(site.seen().1, "three");
    site.declare("176MiB", "four", "trois");
    let p3 = plans.path().join("p3.plan");
    site.plan_out(&p3);
    site.on_bob("virsh -q setmem vm-site 184320 --live --config");
    let (code, refused) = site.apply(&[p3.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{refused}");
    assert_eq!(
        moved(&refused),
        [("vms".to_string(), "bob".to_string())],
        "only the hypervisor whose VM moved: {refused}"
    );
    assert_eq!(
        site.seen().1,
        "three",
        "the marker was not written: {refused}"
    );
}
