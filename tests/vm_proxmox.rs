//! The proxmox driver without a Proxmox host: its parsers against outputs real Proxmox hosts
//! printed (tests/fixtures/proxmox/, sources in SOURCES.md), and its scripts run by a real `sh`
//! against stand-in `qm` and `pvesh` that record every call. What this cannot prove (Proxmox's
//! own behaviour) is listed in the README's "VMs" section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use picaops::vm::driver::Hypervisor;
use picaops::vm::model::{Accel, DiskSpec, NetSpec, Power, VmSpec};
use picaops::vm::plan::{self, Allowed, ChangeKind, Risk, VmAction};
use picaops::vm::proxmox::{self, Proxmox};
use picaops::vm::PowerOp;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/proxmox")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn enc(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn cluster_resources_give_vms_templates_and_unreachable_guests() {
    let all = proxmox::parse_resources(&fixture("cluster-resources.json")).unwrap();
    assert_eq!(all.len(), 5);
    let qemu: Vec<_> = all.iter().filter(|r| r.kind == "qemu").collect();
    assert_eq!(qemu.len(), 4);
    let template = all.iter().find(|r| r.vmid == "1001").unwrap();
    assert!(template.template);
    assert_eq!(template.name.as_deref(), Some("template-astra-1.7.4-base"));
    assert_eq!(
        template.tags,
        ["template-astra-1.7.4-base", "templates", "terraform"]
    );
    let running = all.iter().find(|r| r.vmid == "101").unwrap();
    assert_eq!(
        (running.status.as_str(), running.uptime),
        ("running", Some(174255))
    );
    assert_eq!(running.node, "prox-srv3");
    // A guest whose node did not answer: status unknown, no name, no sizes.
    let unknown = all.iter().find(|r| r.vmid == "1011").unwrap();
    assert_eq!(
        (unknown.status.as_str(), unknown.name.as_deref()),
        ("unknown", None)
    );
    // `tags: " "` is no tag at all.
    assert!(all
        .iter()
        .find(|r| r.vmid == "102")
        .unwrap()
        .tags
        .is_empty());
    // The API's own envelope is read the same way.
    let wrapped = format!("{{\"data\": {}}}", fixture("cluster-resources.json"));
    assert_eq!(proxmox::parse_resources(&wrapped).unwrap(), all);
}

#[test]
fn qm_config_gives_sizes_disks_and_start_at_boot() {
    let config = proxmox::parse_config_text(&fixture("qm-config-101.txt"));
    let vm = proxmox::state_from_config("101", &config, None);
    assert_eq!(vm.name, "ubuntu-files");
    assert_eq!((vm.vcpus, vm.memory_mib), (4, 3072));
    assert!(vm.autostart);
    assert!(!vm.managed, "no picaops tag: made by hand");
    assert_eq!(vm.bridge.as_deref(), Some("vmbr0"));
    // Three SATA disks on three storages; the CD-ROM (ide2) is not a disk.
    let disks: Vec<(&str, Option<&str>, Option<u64>)> = vm
        .disks
        .iter()
        .map(|d| (d.dev.as_str(), d.pool.as_deref(), d.size_bytes))
        .collect();
    assert_eq!(
        disks,
        [
            ("sata0", Some("VMs"), Some(32 << 30)),
            ("sata1", Some("pool1"), Some(3487 << 30)),
            ("sata2", Some("old_boi"), Some(2610 << 30)),
        ]
    );
    // Default hotplug (network,disk,usb): more memory needs a restart.
    assert_eq!(vm.max_memory_mib, 3072);

    let config = proxmox::parse_config_text(&fixture("qm-config-200.txt"));
    let vm = proxmox::state_from_config("200", &config, None);
    assert_eq!(
        (vm.name.as_str(), vm.vcpus, vm.memory_mib),
        ("UbuntuVM", 4, 8192)
    );
    assert_eq!(vm.disks.len(), 1);
    assert_eq!(vm.disks[0].source, "local:200/vm-200-disk-0.qcow2");
    assert_eq!(vm.disks[0].size_bytes, Some(64 << 30));
    assert_eq!(vm.extra["hotplug"], "0");
}

/// The read script's output on node prox-srv3, made of the recorded outputs.
fn read_output() -> String {
    let tagged = format!("{}tags: web;picaops\n", fixture("qm-config-200.txt"));
    format!(
        "node\tprox-srv3\nresources\t{}\nconfig\t101\t{}\nconfig\t200\t{}\nconfig\t1001\t{}\n",
        enc(&fixture("cluster-resources.json")),
        enc(&fixture("qm-config-101.txt")),
        enc(&tagged),
        enc("name: template-astra-1.7.4-base\ntemplate: 1\nscsi0: local-lvm:base-1001-disk-0,size=3G\n"),
    )
}

#[test]
fn the_read_script_output_joins_configs_with_their_status() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    assert_eq!(host.vms.len(), 2, "the template is not a VM");
    assert_eq!(host.templates["template-astra-1.7.4-base"], "1001");
    let v101 = host.vms.iter().find(|v| v.id == "101").unwrap();
    assert_eq!(v101.power, Power::Running);
    assert_eq!(v101.uptime_secs, Some(174255));
    let v200 = host.get("UbuntuVM").unwrap();
    assert!(v200.managed, "tagged picaops");
    assert_eq!(
        v200.power,
        Power::Other("unknown".into()),
        "not in the cluster's list"
    );
}

fn spec() -> VmSpec {
    VmSpec {
        name: "pica01".into(),
        host: "bob".into(),
        vcpus: Some(4),
        memory_mib: Some(8192),
        disks: vec![
            DiskSpec {
                size_bytes: 80 << 30,
                pool: Some("local-lvm".into()),
            },
            DiskSpec {
                size_bytes: 1 << 40,
                pool: Some("data".into()),
            },
        ],
        network: Some(NetSpec {
            bridge: Some("vmbr0".into()),
            address: Some("192.0.2.11/24".into()),
            gateway: Some("192.0.2.1".into()),
            dns: vec!["192.0.2.1".into(), "192.0.2.2".into()],
        }),
        image: Some("template-astra-1.7.4-base".into()),
        start_at_boot: true,
        admin_keys: vec!["ssh-ed25519 AAAAC3adminkey admin@picasoft".into()],
        accel: Accel::Kvm,
        declared_at: "inventory/vms.yml:3:3".into(),
    }
}

/// Runs `script` with `sh` against stand-in `qm`/`pvesh` that log each call (one line, words
/// separated by `|`) and answer like Proxmox would. Returns (exit code, stdout, calls).
fn run_with_fake_proxmox(script: &str) -> (i32, String, Vec<String>) {
    run_with_fake_proxmox_env(script, &[])
}

/// Like [`run_with_fake_proxmox`], with more environment variables (`QM_CLONE_FAILS=1` makes
/// `qm clone` fail). The script runs in a scratch directory; any `pwned-*` file a command
/// injected into it created there is reported as a last `pwned: …` call.
fn run_with_fake_proxmox_env(script: &str, env: &[(&str, &str)]) -> (i32, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    let fake = |name: &str, answer: &str| {
        let p: PathBuf = bin.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n{{ printf '%s' {name}; for a in \"$@\"; do printf '|%s' \"$a\"; done; echo; }} >> {log}\n\
                 {answer}\n",
                log = log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake("pvesh", "[ \"$2\" = /cluster/nextid ] && echo 105; exit 0");
    fake(
        "qm",
        "case $1 in\n  config) printf 'ide2: local-lvm:vm-105-cloudinit,media=cdrom\\nscsi0: local-lvm:vm-105-disk-0,size=3G\\n';;\n  \
         clone) [ -z \"${QM_CLONE_FAILS:-}\" ] || exit 1;;\n  \
         status) echo 'status: running';;\n  set) for a; do case $a in */keys) cat \"$a\" > \"$(dirname \"$0\")/../keys\";; esac; done;;\nesac\nexit 0",
    );
    let out = std::process::Command::new("sh")
        .arg("-s")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let keys = std::fs::read_to_string(dir.path().join("keys")).unwrap_or_default();
    let mut calls: Vec<String> = calls.lines().map(String::from).collect();
    calls.push(format!("keys file: {}", keys.trim()));
    let pwned: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned-"))
        .collect();
    if !pwned.is_empty() {
        calls.push(format!("pwned: {}", pwned.join(" ")));
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        calls,
    )
}

#[test]
fn creating_clones_the_template_then_sets_resizes_adds_and_starts() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let script = Proxmox.create_script(&spec(), &host).unwrap();
    assert!(
        !script.contains("--sshkeys ssh-"),
        "keys go through a file, never on a command line"
    );
    let (code, stdout, calls) = run_with_fake_proxmox(&script);
    assert_eq!(code, 0, "{stdout}\n{calls:?}");
    assert!(stdout.contains("@@vmid 105"));
    assert_eq!(
        calls,
        [
            "pvesh|get|/cluster/nextid",
            "qm|clone|1001|105|--name|pica01|--full|1|--storage|local-lvm",
            // The keys file's path is a temporary one: checked through its content below.
            calls[2].as_str(),
            "qm|config|105",
            "qm|resize|105|scsi0|81920M",
            "qm|set|105|--scsi11|data:1024",
            "qm|start|105",
            "keys file: ssh-ed25519 AAAAC3adminkey admin@picasoft",
        ]
    );
    let set = calls[2].split('|').collect::<Vec<_>>();
    assert_eq!(
        set[..set.len() - 2],
        [
            "qm",
            "set",
            "105",
            "--cores",
            "4",
            "--sockets",
            "1",
            "--memory",
            "8192",
            "--onboot",
            "1",
            "--tags",
            "picaops",
            "--ciuser",
            "root",
            "--net0",
            "virtio,bridge=vmbr0",
            "--ipconfig0",
            "ip=192.0.2.11/24,gw=192.0.2.1",
            "--nameserver",
            "192.0.2.1 192.0.2.2",
        ]
    );
    assert_eq!(set[set.len() - 2], "--sshkeys");
}

#[test]
fn an_unknown_template_is_refused_with_the_ones_there() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let mut s = spec();
    s.image = Some("debian-12".into());
    let err = Proxmox.create_script(&s, &host).unwrap_err().to_string();
    assert!(
        err.contains("no template named `debian-12` on bob"),
        "{err}"
    );
    assert!(err.contains("template-astra-1.7.4-base"), "{err}");
}

#[test]
fn changes_to_a_managed_vm_are_classified_then_made_with_qm() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let mut state = host.get("UbuntuVM").unwrap().clone();
    state.power = Power::Running;
    let mut s = spec();
    s.name = "UbuntuVM".into();
    s.disks = vec![DiskSpec {
        size_bytes: 80 << 30,
        pool: Some("local".into()),
    }];
    s.vcpus = Some(4);
    s.memory_mib = Some(12288);
    s.network = None;
    s.image = None;
    let mut p = plan::diff("UbuntuVM", "bob", Some(&s), Some(&state));
    plan::authorize(&mut p, &Allowed::default());
    // hotplug: 0, so more memory needs a restart; the disk grows in place.
    assert_eq!(p.action, VmAction::Update);
    assert_eq!(p.risk, Risk::Reboot);
    assert!(p.refused.as_deref().unwrap().contains("--allow-reboot"));

    let mut p = plan::diff("UbuntuVM", "bob", Some(&s), Some(&state));
    plan::authorize(
        &mut p,
        &Allowed {
            reboot: true,
            ..Default::default()
        },
    );
    let script = Proxmox
        .update_script(&p, &host, Duration::from_secs(90))
        .unwrap();
    let (code, _, calls) = run_with_fake_proxmox(&script);
    assert_eq!(code, 0);
    assert_eq!(
        calls[..calls.len() - 1],
        [
            "qm|status|200",
            "qm|set|200|--memory|12288",
            "qm|resize|200|scsi0|81920M",
            "qm|shutdown|200|--timeout|90",
            "qm|start|200",
        ]
    );
}

#[test]
fn proxmox_never_shrinks_a_disk() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let state = host.get("UbuntuVM").unwrap();
    let shrink = ChangeKind::DiskShrink {
        index: 0,
        dev: "scsi0".into(),
        from: 64 << 30,
        to: 32 << 30,
    };
    assert!(Proxmox.cannot(&shrink).unwrap().contains("cannot shrink"));
    let mut s = spec();
    s.name = "UbuntuVM".into();
    s.disks = vec![DiskSpec {
        size_bytes: 32 << 30,
        pool: None,
    }];
    s.vcpus = Some(4);
    s.memory_mib = Some(8192);
    let p = plan::diff("UbuntuVM", "bob", Some(&s), Some(state));
    assert!(matches!(p.changes[0].kind, ChangeKind::DiskShrink { .. }));
}

#[test]
fn adopting_keeps_existing_tags_and_deleting_purges() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let v101 = host.vms.iter().find(|v| v.id == "101").unwrap();
    let mut tagged = v101.clone();
    tagged.extra.insert("tags".into(), "prod;web".into());
    let adopt = Proxmox.adopt_script(&tagged).unwrap();
    let (_, _, calls) = run_with_fake_proxmox(&adopt);
    assert_eq!(calls[0], "qm|set|101|--tags|prod;web;picaops");
    let delete = Proxmox.delete_script(v101).unwrap();
    let (_, _, calls) = run_with_fake_proxmox(&delete);
    assert_eq!(
        calls[..2],
        [
            "qm|stop|101",
            "qm|destroy|101|--purge|1|--destroy-unreferenced-disks|1"
        ]
    );
    let stop = Proxmox.power_script(
        v101,
        PowerOp::Stop { force: false },
        Duration::from_secs(30),
    );
    let (_, _, calls) = run_with_fake_proxmox(&stop);
    assert_eq!(calls[0], "qm|shutdown|101|--timeout|30");
    assert_eq!(
        Proxmox.console_argv(v101).unwrap(),
        ["qm", "terminal", "101"]
    );
}

#[test]
fn every_script_is_valid_sh() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let state = &host.vms[0];
    let mut scripts: BTreeMap<&str, String> = BTreeMap::new();
    scripts.insert("read", Proxmox.read_script());
    scripts.insert("create", Proxmox.create_script(&spec(), &host).unwrap());
    scripts.insert("delete", Proxmox.delete_script(state).unwrap());
    scripts.insert("adopt", Proxmox.adopt_script(state).unwrap());
    for (name, script) in scripts {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A value that runs `touch pwned-TAG` if it is ever parsed as shell: it closes a single
/// quote, substitutes commands, ends a here-document and starts a new line.
fn hostile(tag: &str) -> String {
    format!("evil'$(touch pwned-{tag})`touch pwned-{tag}`\nPICAOPS_EOF\ntouch pwned-{tag}\n#\"")
}

#[test]
fn hostile_values_stay_data_in_the_create_script() {
    let mut host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let mut s = spec();
    s.image = Some(hostile("image"));
    host.templates.insert(hostile("image"), "1001".into());
    s.admin_keys = vec![hostile("key")];
    s.network = Some(NetSpec {
        bridge: Some(hostile("bridge")),
        address: Some(hostile("address")),
        gateway: Some(hostile("gateway")),
        dns: vec![hostile("dns")],
    });
    let script = Proxmox.create_script(&s, &host).unwrap();

    // The clone fails: the template's name is in the message, as text.
    let (code, stdout, calls) = run_with_fake_proxmox_env(&script, &[("QM_CLONE_FAILS", "1")]);
    assert!(
        !calls.last().unwrap().starts_with("pwned"),
        "injected commands ran: {calls:?}"
    );
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("@@error qm clone of template evil'$(touch"),
        "{stdout}"
    );

    // The whole script: the keys file holds the key byte for byte, each setting is one word.
    let (code, stdout, calls) = run_with_fake_proxmox(&script);
    assert!(
        !calls.last().unwrap().starts_with("pwned"),
        "injected commands ran: {calls:?}"
    );
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        calls.last().unwrap(),
        &format!("keys file: {}", hostile("key").trim())
    );
}
