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
        "node\tprox-srv3\nresources\t{}\nstorage\t{}\nconfig\t101\t{}\nconfig\t200\t{}\nconfig\t1001\t{}\n",
        enc(&fixture("cluster-resources.json")),
        enc(&fixture("storage.json")),
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
        // `snippets_storage: myshared` on the hypervisor: the recorded cluster's `local` does
        // not allow snippets.
        snippets_storage: Some("myshared".into()),
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
    let ran = run_fake(script, env, |_| {});
    (ran.code, ran.stdout, ran.calls)
}

/// What a script did against the stand-ins; `dir` is its scratch directory (`$SANDBOX`), kept
/// so a test can look at the files it wrote (`store/snippets/…`, the snippets storage).
struct Ran {
    dir: tempfile::TempDir,
    code: i32,
    stdout: String,
    calls: Vec<String>,
}

/// The stand-ins: `pvesh` answers from the recorded outputs (tests/fixtures/proxmox), `pvesm
/// path STORAGE:snippets/F` gives `$SANDBOX/store/snippets/F`, `qm config ID` prints
/// `$SANDBOX/answers/qm-config-ID.txt` when `prepare` wrote one (else a new clone's config).
fn run_fake(script: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    prepare(dir.path());
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
    fake(
        "pvesh",
        "case \"$2\" in\n  /cluster/nextid) echo 105;;\n  /cluster/resources) cat \"$FIXTURES/cluster-resources.json\";;\n  \
         /storage) cat \"$FIXTURES/storage.json\";;\n  */qemu/200/pending) cat \"$FIXTURES/pending-200.json\";;\n  */pending) exit 1;;\nesac\nexit 0",
    );
    fake(
        "pvesm",
        "[ \"$1\" = path ] && [ -z \"${PVESM_FAILS:-}\" ] || exit 1\necho \"$SANDBOX/store/${2#*:}\"",
    );
    fake(
        "qm",
        "case $1 in\n  config) if [ -f \"$SANDBOX/answers/qm-config-$2.txt\" ]; then cat \"$SANDBOX/answers/qm-config-$2.txt\"; \
         else printf 'ide2: local-lvm:vm-105-cloudinit,media=cdrom\\nscsi0: local-lvm:vm-105-disk-0,size=3G\\n'; fi;;\n  \
         clone) [ -z \"${QM_CLONE_FAILS:-}\" ] || exit 1;;\n  \
         status) echo 'status: running';;\n  set) for a; do case $a in */keys) cat \"$a\" > \"$(dirname \"$0\")/../keys\";; esac; done;;\nesac\nexit 0",
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proxmox");
    let out = std::process::Command::new("sh")
        .arg("-s")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("SANDBOX", dir.path())
        .env("FIXTURES", &fixtures)
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
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        calls,
        dir,
    }
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
            "pvesm|path|myshared:snippets/picaops-pica01.yml",
            "pvesh|get|/cluster/nextid",
            "qm|clone|1001|105|--name|pica01|--full|1|--storage|local-lvm",
            // The keys file's path is a temporary one: checked through its content below.
            calls[3].as_str(),
            "qm|config|105",
            "qm|resize|105|scsi0|81920M",
            "qm|set|105|--scsi11|data:1024",
            "qm|start|105",
            "keys file: ssh-ed25519 AAAAC3adminkey admin@picasoft",
        ]
    );
    let set = calls[3].split('|').collect::<Vec<_>>();
    assert_eq!(
        set[..set.len() - 4],
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
    assert_eq!(set[set.len() - 4], "--sshkeys");
    assert_eq!(
        set[set.len() - 2..],
        ["--cicustom", "user=myshared:snippets/picaops-pica01.yml"]
    );
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
    scripts.insert("release", Proxmox.release_script(state).unwrap());
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

#[test]
fn storages_say_which_allow_snippets() {
    let all = proxmox::parse_storages(&fixture("storage.json")).unwrap();
    assert_eq!(all.len(), 8);
    let allowing: Vec<&str> = all
        .iter()
        .filter(|s| s.content.iter().any(|c| c == "snippets"))
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(allowing, ["myshared", "shared"]);
    let local = all.iter().find(|s| s.id == "local").unwrap();
    assert_eq!(local.content, ["backup", "iso", "vztmpl", "images"]);
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    assert_eq!(host.pools["local"], "backup,iso,vztmpl,images");
}

/// The snippet the create script wrote in the stand-in's snippets storage.
fn snippet_of(ran: &Ran, name: &str) -> PathBuf {
    ran.dir
        .path()
        .join(format!("store/snippets/picaops-{name}.yml"))
}

#[test]
fn a_new_vm_gets_its_host_key_through_a_private_snippet_and_picaops_learns_the_public_half() {
    use std::os::unix::fs::PermissionsExt;
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let script = Proxmox.create_script(&spec(), &host).unwrap();
    assert!(
        !script.contains("PRIVATE KEY"),
        "the key is made on the hypervisor"
    );
    let ran = run_fake(&script, &[], |_| {});
    assert_eq!(ran.code, 0, "{}\n{:?}", ran.stdout, ran.calls);

    // The public half is announced, the private half never printed nor on a command line.
    let notes = picaops::vm::driver::parse_notes(&ran.stdout);
    let announced = notes.host_key.expect("@@hostkey");
    assert!(announced.starts_with("ssh-ed25519 "), "{announced}");
    assert!(!ran.stdout.contains("PRIVATE"), "{}", ran.stdout);
    assert!(
        !ran.calls.iter().any(|c| c.contains("PRIVATE")),
        "{:?}",
        ran.calls
    );

    // The snippet: root's only, a cloud-config with the key pair, root's keys and the hostname.
    let path = snippet_of(&ran, "pica01");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(doc["hostname"], "pica01");
    assert_eq!(
        doc["ssh_authorized_keys"],
        serde_json::json!(["ssh-ed25519 AAAAC3adminkey admin@picasoft"])
    );
    let public = doc["ssh_keys"]["ed25519_public"].as_str().unwrap();
    assert!(public.starts_with(&announced), "{public} vs {announced}");
    assert!(doc["ssh_keys"]["ed25519_private"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));

    // Written before the clone; the VM refers to it; the key is announced before the start.
    let pos = |prefix: &str| {
        ran.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap()
    };
    assert!(pos("pvesm|path") < pos("qm|clone"));
    assert!(ran.calls[pos("qm|set|105|--cores")]
        .ends_with("|--cicustom|user=myshared:snippets/picaops-pica01.yml"));
    assert!(script.find("@@hostkey").unwrap() < script.find("qm start").unwrap());
}

#[test]
fn a_failed_clone_takes_its_snippet_away_again() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let script = Proxmox.create_script(&spec(), &host).unwrap();
    let ran = run_fake(&script, &[("QM_CLONE_FAILS", "1")], |_| {});
    assert_eq!(ran.code, 3, "{}", ran.stdout);
    assert!(
        !snippet_of(&ran, "pica01").exists(),
        "a private key left behind for a VM that does not exist"
    );
    // A storage pvesm cannot place the snippet on: stopped before anything is cloned.
    let ran = run_fake(&script, &[("PVESM_FAILS", "1")], |_| {});
    assert_eq!(ran.code, 3);
    assert!(
        ran.stdout.contains(
            "@@error pvesm path myshared:snippets/picaops-pica01.yml failed: is myshared a \
             directory storage that allows snippets?"
        ),
        "{}",
        ran.stdout
    );
    assert!(!ran.calls.iter().any(|c| c.starts_with("qm|clone")));
}

#[test]
fn a_snippets_storage_that_is_missing_or_does_not_allow_snippets_is_refused_before_anything() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    // No `snippets_storage:`: `local`, which this cluster keeps for backups and ISOs only.
    let mut s = spec();
    s.snippets_storage = None;
    let err = Proxmox.create_script(&s, &host).unwrap_err().to_string();
    assert_eq!(
        err,
        "storage `local` on bob does not allow snippets (its content: backup,iso,vztmpl,images), \
         and pica01 gets its SSH host key through a cloud-init snippet there. Allow them, keeping \
         what it holds: `pvesm set local --content backup,iso,vztmpl,images,snippets`; or set \
         `snippets_storage:` on bob in the inventory to a storage that allows them (myshared, \
         shared). Nothing was created"
    );
    s.snippets_storage = Some("cephfs".into());
    let err = Proxmox.create_script(&s, &host).unwrap_err().to_string();
    assert!(
        err.starts_with("storage `cephfs` does not exist on bob")
            && err.contains("(storages that allow snippets on bob: myshared, shared)"),
        "{err}"
    );
}

/// `qm config 200` as Proxmox prints it while the changes of pending-200.json wait: with them
/// applied (memory 12288, cores 6, no usb3), tagged picaops.
fn config_200_with_pending_applied() -> String {
    let config = fixture("qm-config-200.txt")
        .replace("memory: 8192", "memory: 12288")
        .replace("cores: 4", "cores: 6")
        .replace("usb3: host=0d8c:0014\n", "");
    format!("{config}tags: web;picaops\n")
}

#[test]
fn the_read_script_asks_for_pending_changes_only_where_proxmox_keeps_some() {
    let script = Proxmox
        .read_script()
        .replace("confdir=/etc/pve/qemu-server", "confdir=$SANDBOX/conf");
    let ran = run_fake(&script, &[], |dir| {
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(dir.join("answers")).unwrap();
        std::fs::write(conf.join("101.conf"), fixture("qm-config-101.txt")).unwrap();
        // The file keeps what waits under [PENDING] (the values in effect above it).
        let file = format!(
            "{}tags: web;picaops\n\n[PENDING]\ncores: 6\nmemory: 12288\ndelete: usb3\n",
            fixture("qm-config-200.txt")
        );
        std::fs::write(conf.join("200.conf"), file).unwrap();
        for (id, text) in [
            ("101", fixture("qm-config-101.txt")),
            ("200", config_200_with_pending_applied()),
        ] {
            std::fs::write(dir.join(format!("answers/qm-config-{id}.txt")), text).unwrap();
        }
    });
    assert_eq!(ran.code, 0, "{}", ran.stdout);
    let pending_calls: Vec<&String> = ran
        .calls
        .iter()
        .filter(|c| c.ends_with("/pending|--output-format|json"))
        .collect();
    assert_eq!(pending_calls.len(), 1, "{:?}", ran.calls);
    assert!(pending_calls[0].contains("/qemu/200/pending"));
    let host = Proxmox.parse_read("bob", &ran.stdout).unwrap();
    assert!(host.get("ubuntu-files").unwrap().pending.is_empty());
    let v200 = host.get("UbuntuVM").unwrap();
    assert_eq!(
        (v200.memory_mib, v200.vcpus),
        (12288, 6),
        "qm config: pending applied"
    );
    assert_eq!(
        v200.pending,
        [
            "cores: 6 (runs with 4)",
            "memory: 12288 (runs with 8192)",
            "sshkeys changed (value not shown)",
            "usb3 removed (runs with host=0d8c:0014)",
        ]
    );
}

#[test]
fn settings_waiting_for_a_restart_are_planned_as_needs_reboot_like_libvirt() {
    let out = format!(
        "node\tprox-srv3\nresources\t{}\nstorage\t{}\nconfig\t200\t{}\npending\t200\t{}\n",
        enc(&fixture("cluster-resources.json")),
        enc(&fixture("storage.json")),
        enc(&config_200_with_pending_applied()),
        enc(&fixture("pending-200.json")),
    );
    let host = Proxmox.parse_read("bob", &out).unwrap();
    let mut state = host.get("UbuntuVM").unwrap().clone();
    state.power = Power::Running;
    // The inventory already says what is saved: only the restart is missing.
    let mut s = spec();
    s.name = "UbuntuVM".into();
    s.vcpus = Some(6);
    s.memory_mib = Some(12288);
    s.disks = vec![DiskSpec {
        size_bytes: 64 << 30,
        pool: Some("local".into()),
    }];
    s.network = None;
    s.image = None;
    let mut p = plan::diff("UbuntuVM", "bob", Some(&s), Some(&state));
    plan::authorize(&mut p, &Allowed::default());
    assert_eq!((p.action, p.risk), (VmAction::Update, Risk::Reboot));
    assert!(p
        .changes
        .iter()
        .all(|c| matches!(c.kind, ChangeKind::Pending { .. })));
    assert!(p.refused.as_deref().unwrap().contains("--allow-reboot"));
    let shown = picaops::vm::render::describe_changes(&p);
    assert!(
        shown.contains(
            &"memory: 12288 (runs with 8192) (saved, waiting for a restart) running without it \
              → after a restart [needs reboot]"
                .to_string()
        ),
        "{shown:#?}"
    );
    assert!(!shown.iter().any(|l| l.contains("AAAAC3")), "{shown:#?}");

    // With --allow-reboot: nothing to set, a graceful shutdown and a start.
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
            "qm|shutdown|200|--timeout|90",
            "qm|start|200"
        ]
    );
}

#[test]
fn releasing_removes_only_the_picaops_tag_and_the_plan_then_leaves_the_vm_alone() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let v200 = host.get("UbuntuVM").unwrap();
    assert!(v200.managed);
    let (code, _, calls) = run_with_fake_proxmox(&Proxmox.release_script(v200).unwrap());
    assert_eq!(
        (code, calls[..1].to_vec()),
        (0, vec!["qm|set|200|--tags|web".to_string()])
    );
    let mut only_ours = v200.clone();
    only_ours.extra.insert("tags".into(), "picaops".into());
    let (_, _, calls) = run_with_fake_proxmox(&Proxmox.release_script(&only_ours).unwrap());
    assert_eq!(calls[0], "qm|set|200|--delete|tags");

    // What the next read finds: the tag gone. Not declared: left alone; still declared: adopted
    // again (which is why `vm release` refuses a declared VM).
    let released = format!(
        "node\tprox-srv3\nresources\t{}\nstorage\t{}\nconfig\t200\t{}\n",
        enc(&fixture("cluster-resources.json")),
        enc(&fixture("storage.json")),
        enc(&format!("{}tags: web\n", fixture("qm-config-200.txt"))),
    );
    let after = Proxmox.parse_read("bob", &released).unwrap();
    let state = after.get("UbuntuVM").unwrap();
    assert!(!state.managed);
    let p = plan::diff("UbuntuVM", "bob", None, Some(state));
    assert_eq!(p.action, VmAction::Unmanaged);
    let mut s = spec();
    s.name = "UbuntuVM".into();
    let p = plan::diff("UbuntuVM", "bob", Some(&s), Some(state));
    assert_eq!(p.action, VmAction::Adopt);

    // A VM picaops does not manage has nothing to release.
    let v101 = host.vms.iter().find(|v| v.id == "101").unwrap();
    let err = picaops::vm::ops::check_releasable("proxmox", "bob", v101).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ubuntu-files on bob is not managed by picaops (no `picaops` tag): nothing to release, \
         plan already leaves it alone"
    );
}

#[test]
fn deleting_a_vm_removes_the_snippet_picaops_made_for_it_and_no_other() {
    let host = Proxmox.parse_read("bob", &read_output()).unwrap();
    let mut v200 = host.get("UbuntuVM").unwrap().clone();
    v200.extra.insert(
        "cicustom".into(),
        "user=myshared:snippets/picaops-UbuntuVM.yml".into(),
    );
    let ran = run_fake(&Proxmox.delete_script(&v200).unwrap(), &[], |dir| {
        std::fs::create_dir_all(dir.join("store/snippets")).unwrap();
        std::fs::write(dir.join("store/snippets/picaops-UbuntuVM.yml"), "key").unwrap();
    });
    assert_eq!(ran.code, 0, "{}", ran.stdout);
    assert!(ran
        .calls
        .contains(&"pvesm|path|myshared:snippets/picaops-UbuntuVM.yml".to_string()));
    assert!(!snippet_of(&ran, "UbuntuVM").exists());
    // Someone else's snippet (or one named for another VM) is left where it is.
    for other in [
        "user=local:snippets/hand-made.yml",
        "user=local:snippets/picaops-pica02.yml",
    ] {
        v200.extra.insert("cicustom".into(), other.into());
        let script = Proxmox.delete_script(&v200).unwrap();
        assert!(!script.contains("pvesm"), "{other}: {script}");
    }
}
