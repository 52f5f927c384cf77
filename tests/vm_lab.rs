//! VMs on the lab: libvirt + QEMU (TCG) inside the lab's hypervisor containers, the lab guest
//! (Debian cloud kernel, busybox + dropbear), real SSH through the hypervisors as jump hosts.
//! Needs `picaops lab up` (see tests/common). One test function: VMs boot once and are reused
//! for every assertion, to keep the suite short.
//!
//! It works on a copy of the lab's VM inventory (`<lab>/inventory-vms`, copied beside it so its
//! relative paths still hold) and edits that copy's vms.yml.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{json, lab, picaops, text, Lab};
use serde_json::Value;

/// A VM as the test declares it.
#[derive(Clone, Copy)]
struct Decl {
    name: &'static str,
    host: &'static str,
    ip: &'static str,
    memory: &'static str,
    disk: &'static str,
    groups: &'static str,
}

const TLS: Decl = Decl {
    name: "vm-tls",
    host: "bob",
    ip: "10.61.0.10",
    memory: "192MiB",
    disk: "256MiB",
    groups: "[lab_vms]",
};
const CPN: Decl = Decl {
    name: "vm-cpn",
    host: "alice",
    ip: "10.61.0.20",
    memory: "192MiB",
    disk: "256MiB",
    groups: "[lab_vms]",
};

struct TestInventory {
    dir: PathBuf,
    playbook: String,
}

impl TestInventory {
    fn new(lab: &Lab) -> TestInventory {
        let source = lab.dir.join("inventory-vms");
        let dir = lab
            .dir
            .join(format!("inventory-vm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["sites.yml", "hosts.yml", "groups.yml", "access.yml"] {
            std::fs::copy(source.join(f), dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e} (is the lab up from this worktree?)", f));
        }
        TestInventory {
            dir,
            playbook: lab.dir.join("playbooks/lab-vms.yml").display().to_string(),
        }
    }

    fn declare(&self, vms: &[Decl]) {
        let mut s = String::from("vms:\n");
        for v in vms {
            s.push_str(&format!(
                "  {name}:\n    host: {host}\n    user: root\n    identity_file: ../id_ed25519\n    \
                 vcpus: 1\n    memory: {memory}\n    disks: [{{ size: {disk}, pool: default }}]\n    \
                 network: {{ bridge: vmbr0, address: {ip}/24, gateway: 10.61.0.1 }}\n    \
                 image: picaops-lab-guest\n    start_at_boot: true\n    groups: {groups}\n",
                name = v.name,
                host = v.host,
                memory = v.memory,
                disk = v.disk,
                ip = v.ip,
                groups = v.groups
            ));
        }
        s.push_str("groups:\n  lab_vms:\n    vars: {vm_accel: tcg}\n");
        std::fs::write(self.dir.join("vms.yml"), s).unwrap();
    }

    fn picaops(&self, args: &[&str]) -> Output {
        common::picaops_on(&self.dir, args)
    }

    fn apply(&self, extra: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["apply", "-q", "-o", "json", self.playbook.as_str()];
        args.extend_from_slice(extra);
        let out = self.picaops(&args);
        (out.status.code(), json(&out))
    }

    fn plan(&self) -> (Option<i32>, Value) {
        let out = self.picaops(&["plan", "-q", "-o", "json", &self.playbook]);
        (out.status.code(), json(&out))
    }

    /// A shell command as root on a VM (through its hypervisor) or a host.
    fn on_vm(&self, vm: &str, script: &str) -> String {
        let out = self.picaops(&["run", "-q", "-o", "json", "-l", vm, "--", script]);
        let doc = json(&out);
        let h = &doc["hosts"][0];
        assert_eq!(h["ok"], true, "{script} failed on {vm}: {h}");
        h["stdout"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for TestInventory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A shell command on a lab host, as root (through the test inventory, which has the hosts too).
fn on_host(inv: &TestInventory, host: &str, script: &str) -> String {
    inv.on_vm(host, script)
}

/// The VM entry `name` of a report's `vms` section.
fn vm(doc: &Value, name: &str) -> Value {
    doc["vms"]["hosts"]
        .as_array()
        .expect("a vms.hosts array")
        .iter()
        .flat_map(|h| h["vms"].as_array().cloned().unwrap_or_default())
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

fn host_changes(doc: &Value, name: &str) -> u64 {
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .map(|h| h["changed"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

const FORGET: &str = "for d in vm-tls vm-cpn vm-hand; do virsh -q destroy $d >/dev/null 2>&1; \
    virsh -q undefine $d --nvram >/dev/null 2>&1 || virsh -q undefine $d >/dev/null 2>&1; \
    rm -f /var/lib/libvirt/images/$d-*; done; true";

fn boot_id(inv: &TestInventory, vm: &str) -> String {
    inv.on_vm(vm, "cat /proc/sys/kernel/random/boot_id")
        .trim()
        .to_string()
}

fn mem_total_kib(inv: &TestInventory, vm: &str) -> u64 {
    inv.on_vm(
        vm,
        "sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo",
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn vms_are_created_converged_resized_adopted_and_never_destroyed_by_surprise() {
    let Some(lab) =
        lab("vms_are_created_converged_resized_adopted_and_never_destroyed_by_surprise")
    else {
        return;
    };
    let inv = TestInventory::new(&lab);
    // A clean slate on both hypervisors (an earlier run may have been interrupted).
    inv.declare(&[]);
    for h in ["bob", "alice"] {
        on_host(&inv, h, FORGET);
    }
    inv.declare(&[TLS, CPN]);

    // Plan: two VMs to create, nothing contacted on them.
    let (code, planned) = inv.plan();
    assert_eq!(code, Some(0), "{planned}");
    assert_eq!(vm(&planned, "vm-tls")["action"], "create");
    assert_eq!(vm(&planned, "vm-cpn")["action"], "create");
    assert!(planned["vms"]["not_converged"]["vm-tls"]
        .as_str()
        .unwrap()
        .contains("does not exist yet"));
    let drift = inv.picaops(&["plan", "-q", "--detailed-exitcode", &inv.playbook]);
    assert_eq!(drift.status.code(), Some(2), "{}", text(&drift.stdout));

    // Apply: both created on their hypervisors, reachable by SSH through them, converged.
    let started = Instant::now();
    let (code, applied) = inv.apply(&[]);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{applied}");
    for name in ["vm-tls", "vm-cpn"] {
        let v = vm(&applied, name);
        assert_eq!(v["status"], "done", "{v}");
        assert!(
            v["host_key"].as_str().unwrap().starts_with("ssh-ed25519 "),
            "{v}"
        );
        assert!(v["ssh_ready_ms"].as_u64().is_some(), "{v}");
        assert_eq!(host_changes(&applied, name), 1, "{applied}");
    }
    eprintln!(
        "two VMs created and converged in {:.1} s (SSH after {} and {} ms)",
        took.as_secs_f64(),
        vm(&applied, "vm-tls")["ssh_ready_ms"],
        vm(&applied, "vm-cpn")["ssh_ready_ms"]
    );
    assert_eq!(
        inv.on_vm("vm-tls", "cat /data/picaops-converged; hostname"),
        "converged by picaops: vm-tls in toulouse\nvm-tls\n"
    );
    assert_eq!(
        inv.on_vm("vm-cpn", "cat /data/picaops-converged"),
        "converged by picaops: vm-cpn in compiegne\n"
    );
    // The pinned key is the one the VM presents (strict checking passed); it is recorded.
    let pinned = std::fs::read_to_string(inv.dir.join("known_hosts")).unwrap();
    assert!(
        pinned.contains("10.61.0.10 ssh-ed25519 ") && pinned.contains("10.61.0.20 ssh-ed25519 ")
    );

    // A second apply changes nothing, VMs or files.
    let (code, again) = inv.apply(&[]);
    assert_eq!(code, Some(0), "{again}");
    for name in ["vm-tls", "vm-cpn"] {
        assert_eq!(vm(&again, name)["action"], "unchanged", "{again}");
        assert_eq!(host_changes(&again, name), 0, "{again}");
    }
    let boot_tls = boot_id(&inv, "vm-tls");
    let mem_before = mem_total_kib(&inv, "vm-tls");

    // More memory than the VM's maximum: a restart, announced, refused without --allow-reboot.
    inv.declare(&[
        Decl {
            memory: "256MiB",
            ..TLS
        },
        CPN,
    ]);
    let (_, planned) = inv.plan();
    let v = vm(&planned, "vm-tls");
    assert_eq!(
        (v["action"].as_str(), v["risk"].as_str()),
        (Some("update"), Some("reboot")),
        "{v}"
    );
    let (code, refused) = inv.apply(&[]);
    assert_eq!(
        code,
        Some(1),
        "a refused change is not a converged VM: {refused}"
    );
    assert_eq!(vm(&refused, "vm-tls")["status"], "refused");
    assert!(vm(&refused, "vm-tls")["refused"]
        .as_str()
        .unwrap()
        .contains("--allow-reboot"));
    assert_eq!(boot_id(&inv, "vm-tls"), boot_tls, "not restarted");
    assert_eq!(mem_total_kib(&inv, "vm-tls"), mem_before);
    // With --allow-reboot: graceful ACPI shutdown, start, SSH back, converged again.
    let (code, rebooted) = inv.apply(&["--allow-reboot"]);
    assert_eq!(code, Some(0), "{rebooted}");
    assert_eq!(vm(&rebooted, "vm-tls")["status"], "done");
    assert!(vm(&rebooted, "vm-tls")["ssh_ready_ms"].as_u64().is_some());
    assert_ne!(boot_id(&inv, "vm-tls"), boot_tls, "restarted");
    let mem_after = mem_total_kib(&inv, "vm-tls");
    assert!(
        mem_after > mem_before + 50_000,
        "{mem_before} -> {mem_after} KiB"
    );
    let boot_tls = boot_id(&inv, "vm-tls");

    // Less memory, within the maximum: in place, no restart, no flag needed.
    inv.declare(&[
        Decl {
            memory: "224MiB",
            ..TLS
        },
        CPN,
    ]);
    let (code, shrunk) = inv.apply(&[]);
    assert_eq!(code, Some(0), "{shrunk}");
    assert_eq!(vm(&shrunk, "vm-tls")["risk"], "in-place");
    assert_eq!(boot_id(&inv, "vm-tls"), boot_tls, "not restarted");
    let dom = on_host(
        &inv,
        "bob",
        "virsh dumpxml --inactive vm-tls | grep -o '<currentMemory[^<]*'",
    );
    assert!(dom.contains(">229376"), "{dom}");

    // Growing a disk: in place, seen by the running guest.
    let boot_cpn = boot_id(&inv, "vm-cpn");
    let tls = Decl {
        memory: "224MiB",
        ..TLS
    };
    let big = Decl {
        disk: "512MiB",
        ..CPN
    };
    inv.declare(&[tls, big]);
    let (code, grown) = inv.apply(&[]);
    assert_eq!(code, Some(0), "{grown}");
    assert_eq!(vm(&grown, "vm-cpn")["risk"], "in-place");
    assert_eq!(
        inv.on_vm("vm-cpn", "cat /sys/block/vda/size").trim(),
        "1048576"
    );
    assert_eq!(boot_id(&inv, "vm-cpn"), boot_cpn, "not restarted");

    // `vm list` shows both, running, as declared; `vm stop` shuts one down gracefully, and a
    // VM that is shut off is not converged (the report says why); `vm start` brings it back.
    let listed = json(&inv.picaops(&["vm", "list", "-o", "json"]));
    let rows = listed["vms"].as_array().unwrap();
    for name in ["vm-tls", "vm-cpn"] {
        let row = rows.iter().find(|r| r["vm"] == name).unwrap();
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["drift"], serde_json::json!([]), "{row}");
        assert!(row["uptime_secs"].as_u64().is_some(), "{row}");
    }
    let stopped = inv.picaops(&["vm", "stop", "vm-cpn"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let (code, planned) = inv.plan();
    assert_eq!(code, Some(0), "{planned}");
    assert!(planned["vms"]["not_converged"]["vm-cpn"]
        .as_str()
        .unwrap()
        .contains("shut off"));
    let started = inv.picaops(&["vm", "start", "vm-cpn"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !inv
        .picaops(&["run", "-q", "-l", "vm-cpn", "--", "true"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "vm-cpn did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Shrinking it back destroys data: refused without --allow-destroy vm-cpn.
    inv.declare(&[tls, CPN]);
    let (code, refused) = inv.apply(&[]);
    assert_eq!(code, Some(1), "{refused}");
    assert_eq!(vm(&refused, "vm-cpn")["risk"], "destroys-data");
    assert!(vm(&refused, "vm-cpn")["refused"]
        .as_str()
        .unwrap()
        .contains("--allow-destroy vm-cpn"));
    let (code, _) = inv.apply(&["--allow-reboot", "--allow-destroy", "vm-tls"]);
    assert_eq!(code, Some(1), "another VM's name does not confirm this one");
    assert_eq!(
        inv.on_vm("vm-cpn", "cat /sys/block/vda/size").trim(),
        "1048576"
    );

    // Removed from the inventory: deleting it is refused without --allow-destroy vm-cpn.
    inv.declare(&[tls]);
    let (code, removed) = inv.apply(&[]);
    assert_eq!(code, Some(1), "{removed}");
    assert_eq!(vm(&removed, "vm-cpn")["action"], "delete");
    assert_eq!(vm(&removed, "vm-cpn")["status"], "refused");
    assert_eq!(
        on_host(&inv, "alice", "virsh -q domstate vm-cpn").trim(),
        "running"
    );

    // A VM made by hand (virsh define + start) with a declared name: adopted, not recreated.
    on_host(
        &inv,
        "bob",
        "cd /var/lib/libvirt/images && qemu-img create -q -f qcow2 -F qcow2 -b picaops-lab-guest.qcow2 vm-hand-disk0.qcow2 128M && \
         cat > /tmp/vm-hand.xml <<'EOF'\n<domain type='qemu'><name>vm-hand</name><memory unit='KiB'>163840</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/var/lib/libvirt/images/picaops-lab-guest.vmlinuz</kernel>\
         <initrd>/var/lib/libvirt/images/picaops-lab-guest.initrd</initrd><cmdline>console=ttyS0 quiet</cmdline></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/vm-hand-disk0.qcow2'/>\
         <target dev='vda' bus='virtio'/></disk><serial type='pty'/></devices></domain>\nEOF\n\
         virsh -q define /tmp/vm-hand.xml >/dev/null && virsh -q start vm-hand >/dev/null && rm /tmp/vm-hand.xml",
    );
    let uuid = on_host(&inv, "bob", "virsh domuuid vm-hand")
        .trim()
        .to_string();
    let hand = Decl {
        name: "vm-hand",
        host: "bob",
        ip: "10.61.0.30",
        memory: "192MiB",
        disk: "128MiB",
        groups: "[]",
    };
    inv.declare(&[tls, CPN, hand]);
    let (_, planned) = inv.plan();
    let v = vm(&planned, "vm-hand");
    assert_eq!(v["action"], "adopt", "{v}");
    let memory = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"]["kind"] == "memory")
        .unwrap_or_else(|| panic!("the memory difference is shown: {v}"));
    assert!(memory["not_applied"]
        .as_str()
        .unwrap()
        .contains("adopted as it is"));
    let (code, adopted) = inv.apply(&["--allow-reboot"]);
    assert_eq!(vm(&adopted, "vm-hand")["status"], "done", "{adopted}");
    assert_eq!(code, Some(1), "vm-cpn's shrink is still refused: {adopted}");
    assert_eq!(
        on_host(&inv, "bob", "virsh domuuid vm-hand").trim(),
        uuid,
        "the same VM, not a new one"
    );
    let xml = on_host(&inv, "bob", "virsh dumpxml --inactive vm-hand");
    assert!(xml.contains("picaops.picasoft.net/xmlns/vm/1"), "{xml}");
    assert!(
        xml.contains("<memory unit='KiB'>163840</memory>"),
        "adopted as it is: {xml}"
    );
    // Once adopted, it is managed: the next plan shows its difference as a change to make.
    inv.declare(&[tls, big, hand]);
    let (_, planned) = inv.plan();
    assert_eq!(vm(&planned, "vm-hand")["action"], "update");

    // A guest that ignores the ACPI power button: picaops waits, then gives up, forcing nothing.
    let hand = Decl {
        memory: "160MiB",
        ..hand
    };
    let tls = Decl {
        memory: "320MiB",
        ..tls
    };
    inv.on_vm("vm-tls", "printf '#!/bin/sh\\n' > /etc/acpi/PWRF/00000080");
    inv.declare(&[tls, big, hand]);
    let boot_tls = boot_id(&inv, "vm-tls");
    let started = Instant::now();
    let (code, timed_out) = inv.apply(&["--allow-reboot", "--shutdown-timeout", "4"]);
    assert_eq!(code, Some(1), "{timed_out}");
    let v = vm(&timed_out, "vm-tls");
    assert_eq!(v["status"], "failed", "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(
        why.contains("did not shut down within 4 s") && why.contains("Nothing was forced"),
        "{why}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        boot_id(&inv, "vm-tls"),
        boot_tls,
        "still running, not forced off"
    );
    // The new memory is saved and waits for the restart; the plan says so.
    let (_, planned) = inv.plan();
    let v = vm(&planned, "vm-tls");
    assert_eq!(
        (v["action"].as_str(), v["risk"].as_str()),
        (Some("update"), Some("reboot")),
        "{v}"
    );

    // bob stops in the middle of an apply (vm-tls's restart waits for a shutdown that does not
    // come): bob's part fails cleanly, alice's VM is untouched and still converged.
    let boot_cpn = boot_id(&inv, "vm-cpn");
    let child = picaops()
        .arg("-i")
        .arg(&inv.dir)
        .args(["apply", "-q", "-o", "json", &inv.playbook, "--allow-reboot"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The update script's wait loop sleeps 0.1 s at a time: bob is stopped while it waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = std::process::Command::new("docker")
            .args(["exec", "picaops-lab-bob", "pgrep", "-f", "^sleep 0.1$"])
            .output()
            .is_ok_and(|o| o.status.success());
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the apply never reached vm-tls's restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = std::process::Command::new("docker")
        .args(["stop", "-t", "10", "picaops-lab-bob"])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let out = child.wait_with_output().unwrap();
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(1), "{doc}");
    let bob = doc["vms"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "bob")
        .cloned()
        .unwrap();
    let tls_outcome = vm(&doc, "vm-tls");
    assert!(
        bob["error"].is_string() || tls_outcome["status"] == "failed",
        "bob's part failed: {bob}"
    );
    assert!(doc["vms"]["not_converged"]["vm-tls"].is_string(), "{doc}");
    assert_eq!(vm(&doc, "vm-cpn")["status"], "unchanged", "{doc}");
    assert!(doc["vms"]["not_converged"]["vm-cpn"].is_null(), "{doc}");
    assert!(
        doc["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "vm-cpn" && h["error"].is_null()),
        "alice's VM is still converged: {doc}"
    );
    assert_eq!(boot_id(&inv, "vm-cpn"), boot_cpn, "alice's VM untouched");
    // bob comes back; its VMs start with it (start at boot).
    let up = picaops().args(["lab", "up"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up.stderr));
    let deadline = Instant::now() + Duration::from_secs(90);
    while on_host(&inv, "bob", "virsh -q domstate vm-tls").trim() != "running" {
        assert!(Instant::now() < deadline, "vm-tls did not start with bob");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Deleting VMs removed from the inventory, each name confirmed (and the clean-up).
    inv.declare(&[hand]);
    let (code, deleted) = inv.apply(&["--allow-destroy", "vm-tls", "--allow-destroy", "vm-cpn"]);
    assert_eq!(code, Some(0), "{deleted}");
    for (name, host) in [("vm-tls", "bob"), ("vm-cpn", "alice")] {
        assert_eq!(vm(&deleted, name)["action"], "delete");
        assert_eq!(vm(&deleted, name)["status"], "done", "{deleted}");
        assert_eq!(
            on_host(&inv, host, &format!("virsh -q domstate {name} 2>/dev/null || echo gone; ls /var/lib/libvirt/images | grep -c '^{name}-' || true")),
            "gone\n0\n"
        );
    }
    for h in ["bob", "alice"] {
        on_host(&inv, h, FORGET);
    }
}
