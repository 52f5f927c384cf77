//! The libvirt driver: `virsh` (domain XML) and `qemu-img` on the hypervisor, over SSH.
//!
//! - Disks are qcow2 files in a storage pool's directory: the first one an overlay on the base
//!   image `<pool dir>/<image>.qcow2` (the base is never written), the others empty.
//! - When `<image>.vmlinuz` and `<image>.initrd` sit beside the base image, the VM boots that
//!   kernel directly (the lab's guest does); otherwise it boots from its first disk.
//! - The VM's address and root's keys reach it through a NoCloud seed (an ISO 9660 disk
//!   labelled `cidata`, made with `genisoimage`), with an SSH host key generated on the
//!   hypervisor: picaops pins it before the first login, so no key is ever trusted blindly.
//! - VMs picaops created or adopted carry `<picaops:vm>` in their domain metadata; only those
//!   may ever be deleted (with `--allow-destroy NAME`).
//!
//! State comes from `virsh dumpxml --inactive` (the saved configuration) and, for a running VM,
//! its live XML (to see what waits for a restart), parsed as XML, and `qemu-img info
//! --output=json` for disk sizes. Nothing is scraped from human-readable output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::cloud_init;
use super::driver::{
    check_name, decode_field, fail, write_file, DriverError, Hypervisor, PowerOp, SCRIPT_PRELUDE,
};
pub use super::error::{DomainXmlError, LibvirtError};
use super::model::{Accel, DiskState, HostVms, Power, VmSpec, VmState};
use super::plan::{ChangeKind, VmAction, VmPlan};
use crate::transport::quote::quote as q;

/// The namespace of picaops's element in a domain's `<metadata>`.
pub const METADATA_URI: &str = "https://picaops.picasoft.net/xmlns/vm/1";

/// The pool a disk goes to when the inventory names none.
pub const DEFAULT_POOL: &str = "default";

/// The bridge a VM is plugged into when the inventory names none.
pub const DEFAULT_BRIDGE: &str = "vmbr0";

/// Target device of the seed disk (data disks take vda, vdb, …).
const SEED_DEV: &str = "vdz";

pub struct Libvirt;

impl Hypervisor for Libvirt {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn read_script(&self) -> String {
        let mut s = String::from(SCRIPT_PRELUDE);
        s.push_str(READ_SCRIPT);
        s
    }

    fn parse_read(&self, host: &str, stdout: &str) -> Result<HostVms, DriverError> {
        Ok(parse_read(host, stdout)?)
    }

    fn create_script(&self, spec: &VmSpec, host: &HostVms) -> Result<String, DriverError> {
        create_script(spec, host)
    }

    fn update_script(
        &self,
        plan: &VmPlan,
        host: &HostVms,
        shutdown_timeout: Duration,
    ) -> Result<String, DriverError> {
        update_script(plan, host, shutdown_timeout)
    }

    fn adopt_script(&self, state: &VmState) -> Result<String, DriverError> {
        check_name(&state.name)?;
        let n = q(&state.name);
        Ok(format!(
            "{SCRIPT_PRELUDE}live=\nif [ \"$(virsh -q domstate {n})\" = running ]; then live=--live; fi\n\
             virsh -q metadata {n} --uri {uri} --key picaops --set \"<vm adopted='yes'/>\" --config $live >/dev/null \
             || {fail}\n",
            uri = q(METADATA_URI),
            fail = fail(&format!(
                "virsh metadata refused to record {} as managed",
                state.name
            )),
        ))
    }

    fn release_script(&self, state: &VmState) -> Result<String, DriverError> {
        check_name(&state.name)?;
        Ok(release_script(&state.name))
    }

    fn delete_script(&self, state: &VmState) -> Result<String, DriverError> {
        check_name(&state.name)?;
        let n = q(&state.name);
        let mut s = String::from(SCRIPT_PRELUDE);
        let _ = writeln!(
            s,
            "if [ \"$(virsh -q domstate {n})\" != \"shut off\" ]; then virsh -q destroy {n} >/dev/null || fail 'virsh destroy failed'; fi"
        );
        let _ = writeln!(
            s,
            "virsh -q undefine {n} --nvram >/dev/null 2>&1 || virsh -q undefine {n} >/dev/null || fail 'virsh undefine failed'"
        );
        for d in &state.disks {
            let _ = writeln!(s, "rm -f -- {}", q(&d.source));
        }
        if let Some(seed) = state.extra.get("seed") {
            let _ = writeln!(s, "rm -f -- {}", q(seed));
        }
        Ok(s)
    }

    fn power_script(&self, state: &VmState, op: PowerOp, timeout: Duration) -> String {
        let n = q(&state.name);
        let mut s = String::from(SCRIPT_PRELUDE);
        match op {
            PowerOp::Start => {
                let _ = writeln!(
                    s,
                    "[ \"$(virsh -q domstate {n})\" = running ] || virsh -q start {n} >/dev/null || fail 'virsh start failed'"
                );
            }
            PowerOp::Stop { force: true } => {
                let _ = writeln!(
                    s,
                    "[ \"$(virsh -q domstate {n})\" = \"shut off\" ] || virsh -q destroy {n} >/dev/null || fail 'virsh destroy failed'"
                );
            }
            PowerOp::Stop { force: false } => s.push_str(&graceful_stop(&state.name, timeout)),
            PowerOp::Reboot => {
                s.push_str(&graceful_stop(&state.name, timeout));
                let _ = writeln!(
                    s,
                    "virsh -q start {n} >/dev/null || fail 'virsh start failed'"
                );
            }
        }
        s
    }

    fn console_argv(&self, state: &VmState) -> Result<Vec<String>, DriverError> {
        Ok(vec!["virsh".into(), "console".into(), state.name.clone()])
    }
}

/// Pools, then each domain (state, uptime, saved and live XML), its disks' `qemu-img info`,
/// and the domains that start with the host. Free text goes base64 so every record is a line.
const READ_SCRIPT: &str = r#"command -v virsh >/dev/null 2>&1 || fail "virsh is not installed on this host (apt-get install libvirt-clients libvirt-daemon-system qemu-utils genisoimage)"
virsh -q uri >/dev/null 2>&1 || fail "virsh cannot reach libvirtd here (is libvirtd running? systemctl status libvirtd)"
virsh -q pool-list --all --name | while read -r p; do
  [ -n "$p" ] || continue
  printf 'pool\t%s\t%s\n' "$p" "$(virsh -q pool-dumpxml "$p" | sed -n 's:.*<path>\(.*\)</path>.*:\1:p' | head -n1)"
done
virsh -q list --all --name | while read -r d; do
  [ -n "$d" ] || continue
  st=$(virsh -q domstate "$d" 2>/dev/null | head -n1)
  up=
  if [ "$st" = running ] && [ -r "/run/libvirt/qemu/$d.pid" ]; then
    up=$(ps -o etimes= -p "$(cat "/run/libvirt/qemu/$d.pid")" 2>/dev/null | tr -d ' ')
  fi
  xml=$(virsh dumpxml --inactive "$d" 2>/dev/null)
  live=
  [ "$st" = running ] && live=$(virsh dumpxml "$d" 2>/dev/null | base64 -w0)
  printf 'domain\t%s\t%s\t%s\t%s\t%s\n' "$d" "$st" "$up" "$(printf '%s' "$xml" | base64 -w0)" "$live"
  printf '%s\n' "$xml" | sed -n "s:.*<source file='\([^']*\)'.*:\1:p" | while read -r f; do
    printf 'disk\t%s\t%s\t%s\n' "$d" "$f" "$(qemu-img info -U --output=json -- "$f" 2>/dev/null | base64 -w0)"
  done
done
virsh -q list --all --autostart --name | sed -n 's/^\(..*\)$/autostart\t\1/p'
"#;

/// Parses the read script's output.
pub fn parse_read(host: &str, stdout: &str) -> Result<HostVms, LibvirtError> {
    let b64 = |text: &str| {
        decode_field(text).map_err(|source| LibvirtError::ReadOutput {
            host: host.to_string(),
            source,
        })
    };
    let mut out = HostVms {
        host: host.to_string(),
        ..Default::default()
    };
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut autostart: Vec<String> = Vec::new();
    let mut domains: Vec<(String, String, String, String, String)> = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["pool", name, path] => {
                out.pools.insert(name.to_string(), path.to_string());
            }
            ["domain", name, state, up, xml, live] => domains.push((
                name.to_string(),
                state.to_string(),
                up.to_string(),
                b64(xml)?,
                b64(live)?,
            )),
            ["disk", _dom, path, info] => {
                let info = b64(info)?;
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&info) {
                    if let Some(size) = v["virtual-size"].as_u64() {
                        sizes.insert(path.to_string(), size);
                    }
                }
            }
            ["autostart", name] => autostart.push(name.to_string()),
            _ => {}
        }
    }
    for (name, state, up, xml, live) in domains {
        let mut vm = parse_domain(&xml, live.as_str()).map_err(|source| LibvirtError::Domain {
            host: host.to_string(),
            vm: name.clone(),
            source,
        })?;
        vm.power = Power::parse(&state);
        vm.uptime_secs = up.parse().ok();
        vm.autostart = autostart.contains(&vm.name);
        for d in &mut vm.disks {
            d.size_bytes = sizes.get(&d.source).copied();
            let dir = d.source.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            d.pool = out
                .pools
                .iter()
                .find(|(_, p)| p.trim_end_matches('/') == dir)
                .map(|(n, _)| n.clone());
        }
        out.vms.push(vm);
    }
    Ok(out)
}

fn kib_to_mib(node: Option<roxmltree::Node<'_, '_>>) -> Option<u64> {
    let node = node?;
    let value: u64 = node.text()?.trim().parse().ok()?;
    let factor: u64 = match node.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => return Some(value >> 20),
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => 1 << 10,
    };
    Some((value * factor) >> 20)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// A domain's saved configuration (and, for a running VM, its live one) as a `VmState`. Power,
/// uptime, autostart, sizes and pools are filled in by the caller.
pub fn parse_domain(xml: &str, live: &str) -> Result<VmState, DomainXmlError> {
    let doc = roxmltree::Document::parse(xml).map_err(DomainXmlError::NotXml)?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(DomainXmlError::NotADomain);
    }
    let text = |name: &str| child(root, name).and_then(|n| n.text()).map(str::trim);
    let missing = |element| DomainXmlError::Missing { element };
    let name = text("name").ok_or_else(|| missing("name"))?.to_string();
    let memory_max = kib_to_mib(child(root, "memory")).ok_or_else(|| missing("memory"))?;
    let memory = kib_to_mib(child(root, "currentMemory")).unwrap_or(memory_max);
    let vcpu_node = child(root, "vcpu");
    let vcpus: u32 = vcpu_node
        .and_then(|n| n.attribute("current").or(n.text()))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);
    let mut disks = Vec::new();
    let mut seed = None;
    let mut bridge = None;
    if let Some(devices) = child(root, "devices") {
        for d in devices.children().filter(|c| c.has_tag_name("disk")) {
            let source =
                child(d, "source").and_then(|s| s.attribute("file").or(s.attribute("dev")));
            let target = child(d, "target").and_then(|t| t.attribute("dev"));
            let readonly = child(d, "readonly").is_some();
            if d.attribute("device") != Some("disk") || readonly {
                if let Some(s) = source.filter(|s| s.ends_with("-seed.iso")) {
                    seed = Some(s.to_string());
                }
                continue;
            }
            disks.push(DiskState {
                dev: target.unwrap_or("?").to_string(),
                source: source.unwrap_or("").to_string(),
                size_bytes: None,
                pool: None,
            });
        }
        for i in devices.children().filter(|c| c.has_tag_name("interface")) {
            if let Some(b) = child(i, "source").and_then(|s| s.attribute("bridge")) {
                bridge.get_or_insert_with(|| b.to_string());
            }
        }
    }
    let picaops = child(root, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.tag_name().namespace() == Some(METADATA_URI))
    });
    let mut extra = BTreeMap::new();
    if let Some(image) = picaops.and_then(|p| p.attribute("image")) {
        extra.insert("image".to_string(), image.to_string());
    }
    if let Some(seed) = seed {
        extra.insert("seed".to_string(), seed);
    }
    let mut max_memory_mib = memory_max;
    let mut pending = Vec::new();
    if !live.is_empty() {
        let live_doc = roxmltree::Document::parse(live).map_err(DomainXmlError::LiveNotXml)?;
        let lroot = live_doc.root_element();
        if let Some(live_max) = kib_to_mib(child(lroot, "memory")) {
            max_memory_mib = live_max;
            if live_max < memory {
                pending.push(format!(
                    "memory {} (runs with at most {})",
                    super::model::human_mib(memory),
                    super::model::human_mib(live_max)
                ));
            }
        }
        let live_vcpus: Option<u32> = child(lroot, "vcpu")
            .and_then(|n| n.attribute("current").or(n.text()))
            .and_then(|t| t.trim().parse().ok());
        if let Some(lv) = live_vcpus.filter(|lv| *lv != vcpus) {
            pending.push(format!("{vcpus} vCPUs (runs with {lv})"));
        }
    }
    Ok(VmState {
        name,
        id: text("uuid").unwrap_or("").to_string(),
        power: Power::ShutOff,
        vcpus,
        memory_mib: memory,
        max_memory_mib,
        disks,
        bridge,
        autostart: false,
        managed: picaops.is_some(),
        uptime_secs: None,
        pending,
        extra,
    })
}

/// XML text escaping for element content and attribute values.
fn x(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The file of data disk `index` of VM `name` in `dir`.
pub fn disk_path(dir: &str, name: &str, index: usize) -> String {
    format!("{}/{name}-disk{index}.qcow2", dir.trim_end_matches('/'))
}

fn pool_dir<'a>(host: &'a HostVms, pool: Option<&str>) -> Result<&'a str, LibvirtError> {
    let pool = pool.unwrap_or(DEFAULT_POOL);
    host.pools
        .get(pool)
        .map(String::as_str)
        .ok_or_else(|| LibvirtError::NoPool {
            host: host.host.clone(),
            pool: pool.to_string(),
            available: host.pools.keys().cloned().collect(),
        })
}

/// `vda`, `vdb`, …
fn dev_name(index: usize) -> String {
    format!("vd{}", (b'a' + index as u8) as char)
}

/// The domain XML of a new VM. `kernel`: direct kernel boot from these (kernel, initrd) files.
pub fn domain_xml(
    spec: &VmSpec,
    disks: &[String],
    seed: &str,
    kernel: Option<(&str, &str)>,
) -> String {
    let kib = spec.memory_mib.unwrap_or(1024) * 1024;
    let vcpus = spec.vcpus.unwrap_or(1);
    let bridge = spec
        .network
        .as_ref()
        .and_then(|n| n.bridge.as_deref())
        .unwrap_or(DEFAULT_BRIDGE);
    let kind = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let mut s = String::new();
    let _ = writeln!(s, "<domain type='{kind}'>");
    let _ = writeln!(s, "  <name>{}</name>", x(&spec.name));
    let _ = writeln!(
        s,
        "  <metadata>\n    <picaops:vm xmlns:picaops='{METADATA_URI}' image='{}'/>\n  </metadata>",
        x(spec.image.as_deref().unwrap_or(""))
    );
    let _ = writeln!(s, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(s, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let _ = writeln!(s, "  <vcpu placement='static'>{vcpus}</vcpu>");
    s.push_str("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
    match kernel {
        Some((k, i)) => {
            let _ = writeln!(s, "    <kernel>{}</kernel>", x(k));
            let _ = writeln!(s, "    <initrd>{}</initrd>", x(i));
            s.push_str("    <cmdline>console=ttyS0 quiet</cmdline>\n");
        }
        None => s.push_str("    <boot dev='hd'/>\n"),
    }
    s.push_str("  </os>\n  <features>\n    <acpi/>\n    <apic/>\n  </features>\n");
    s.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    s.push_str("  <devices>\n");
    for (i, path) in disks.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source file='{}'/>\n      <target dev='{}' bus='virtio'/>\n    </disk>",
            x(path),
            dev_name(i)
        );
    }
    let _ = writeln!(
        s,
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
         <source file='{}'/>\n      <target dev='{SEED_DEV}' bus='virtio'/>\n      <readonly/>\n    </disk>",
        x(seed)
    );
    let _ = writeln!(
        s,
        "    <interface type='bridge'>\n      <source bridge='{}'/>\n      <model type='virtio'/>\n    </interface>",
        x(bridge)
    );
    s.push_str("    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n");
    s.push_str(
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n",
    );
    s.push_str("    <memballoon model='virtio'/>\n  </devices>\n</domain>\n");
    s
}

/// The NoCloud `meta-data`.
pub fn meta_data(spec: &VmSpec) -> String {
    format!(
        "instance-id: {name}\nlocal-hostname: {name}\n",
        name = spec.name
    )
}

/// The NoCloud `network-config` (version 2), or none when the inventory gives no address
/// (the image's default: DHCP).
pub fn network_config(spec: &VmSpec) -> Option<String> {
    let net = spec.network.as_ref()?;
    let address = net.address.as_ref()?;
    let mut s =
        String::from("version: 2\nethernets:\n  primary:\n    match:\n      name: \"e*\"\n");
    let _ = writeln!(s, "    addresses: [{address}]");
    if let Some(gw) = &net.gateway {
        let _ = writeln!(s, "    routes: [{{to: default, via: {gw}}}]");
    }
    if !net.dns.is_empty() {
        let _ = writeln!(
            s,
            "    nameservers: {{addresses: [{}]}}",
            net.dns.join(", ")
        );
    }
    Some(s)
}

/// The first part of the NoCloud `user-data` (the hostname is in `meta-data`); the host key
/// the create script generates follows (`ssh_keys:`).
pub fn user_data_head(spec: &VmSpec) -> String {
    cloud_init::user_data_head(spec, false)
}

fn create_script(spec: &VmSpec, host: &HostVms) -> Result<String, DriverError> {
    check_name(&spec.name)?;
    spec.check_creatable()?;
    let image = spec.image.as_deref().unwrap_or_default();
    if image.contains('/') || image.starts_with('.') {
        return Err(LibvirtError::ImageIsPath {
            vm: spec.name.clone(),
            image: image.to_string(),
        }
        .into());
    }
    let dirs = spec
        .disks
        .iter()
        .map(|d| pool_dir(host, d.pool.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let base_dir = dirs[0].trim_end_matches('/');
    let paths: Vec<String> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| disk_path(d, &spec.name, i))
        .collect();
    let seed = format!("{base_dir}/{}-seed.iso", spec.name);
    let base = format!("{base_dir}/{image}.qcow2");
    let (kernel, initrd) = (
        format!("{base_dir}/{image}.vmlinuz"),
        format!("{base_dir}/{image}.initrd"),
    );
    let n = q(&spec.name);
    let mut s = String::from(SCRIPT_PRELUDE);
    s.push_str("umask 077\nmade=\nok=\n");
    s.push_str("w=$(mktemp -d) || fail 'mktemp failed'\n");
    // Whatever this run created goes away again if the VM could not be defined.
    s.push_str(
        "trap 'rm -rf \"$w\"; [ -n \"$ok\" ] || for f in $made; do rm -f -- \"$f\"; done' EXIT\n",
    );
    let _ = writeln!(
        s,
        "virsh -q dominfo {n} >/dev/null 2>&1 && {}",
        fail(&format!(
            "a VM named {} already exists on this host",
            spec.name
        ))
    );
    for tool in ["qemu-img", "genisoimage", "ssh-keygen"] {
        let _ = writeln!(
            s,
            "command -v {tool} >/dev/null 2>&1 || fail '{tool} is not installed on this host (apt-get install qemu-utils genisoimage openssh-client)'"
        );
    }
    let _ = writeln!(
        s,
        "[ -f {b} ] || {}",
        fail(&format!(
            "base image {image} not found: expected {base} (put a qcow2 image there, or fix image: in the inventory)"
        )),
        b = q(&base)
    );
    for (i, (path, disk)) in paths.iter().zip(&spec.disks).enumerate() {
        let p = q(path);
        let _ = writeln!(
            s,
            "[ -e {p} ] && {}",
            fail(&format!(
                "disk {path} already exists (left by an earlier VM?): picaops never overwrites a disk; move it away or rename the VM"
            ))
        );
        if i == 0 {
            let _ = writeln!(
                s,
                "qemu-img create -q -f qcow2 -F qcow2 -b {} {p} {} || {}",
                q(&base),
                disk.size_bytes,
                fail(&format!("qemu-img could not create {path}"))
            );
        } else {
            let _ = writeln!(
                s,
                "qemu-img create -q -f qcow2 {p} {} || {}",
                disk.size_bytes,
                fail(&format!("qemu-img could not create {path}"))
            );
        }
        let _ = writeln!(s, "made=\"$made \"{p}");
    }
    // The seed: host key generated here, written into user-data, pinned by picaops.
    cloud_init::generate_host_key(&mut s, &spec.name);
    write_file(&mut s, "\"$w/meta-data\"", &meta_data(spec));
    let mut files = String::from("\"$w/user-data\" \"$w/meta-data\"");
    if let Some(net) = network_config(spec) {
        write_file(&mut s, "\"$w/network-config\"", &net);
        files.push_str(" \"$w/network-config\"");
    }
    write_file(&mut s, "\"$w/user-data\"", &user_data_head(spec));
    cloud_init::append_host_key(&mut s, "\"$w/user-data\"");
    let sq = q(&seed);
    let _ = writeln!(
        s,
        "rm -f {sq}; genisoimage -quiet -output {sq} -volid cidata -joliet -rock {files} || fail 'genisoimage could not make the seed'"
    );
    let _ = writeln!(s, "made=\"$made \"{sq}");
    // The domain: direct kernel boot when the image ships a kernel and an initrd.
    let _ = writeln!(
        s,
        "if [ -f {k} ] && [ -f {i} ]; then",
        k = q(&kernel),
        i = q(&initrd)
    );
    write_file(
        &mut s,
        "\"$w/domain.xml\"",
        &domain_xml(spec, &paths, &seed, Some((&kernel, &initrd))),
    );
    s.push_str("else\n");
    write_file(
        &mut s,
        "\"$w/domain.xml\"",
        &domain_xml(spec, &paths, &seed, None),
    );
    s.push_str("fi\n");
    s.push_str("virsh -q define \"$w/domain.xml\" >/dev/null || fail 'virsh define refused the VM'\nok=1\n");
    if spec.start_at_boot {
        let _ = writeln!(
            s,
            "virsh -q autostart {n} >/dev/null || fail 'virsh autostart failed'"
        );
    }
    cloud_init::announce_host_key(&mut s);
    let _ = writeln!(
        s,
        "virsh -q start {n} >/dev/null || fail 'the VM is defined but virsh start failed'"
    );
    Ok(s)
}

/// Removes `<picaops:vm>` from the domain's metadata (the saved configuration, and the running
/// one when it runs), as `adopt_script` records it; the domain is not touched otherwise.
pub fn release_script(name: &str) -> String {
    let n = q(name);
    format!(
        "{SCRIPT_PRELUDE}live=\nif [ \"$(virsh -q domstate {n})\" = running ]; then live=--live; fi\n\
         virsh -q metadata {n} --uri {uri} --remove --config $live >/dev/null || {fail}\n",
        uri = q(METADATA_URI),
        fail = fail(&format!(
            "virsh metadata refused to remove picaops's mark from {name}"
        )),
    )
}

/// Graceful ACPI shutdown of a running VM, waiting at most `timeout`; `@@timeout` otherwise.
fn graceful_stop(name: &str, timeout: Duration) -> String {
    let n = q(name);
    let secs = timeout.as_secs().max(1);
    format!(
        "if [ \"$(virsh -q domstate {n})\" != \"shut off\" ]; then\n  \
         virsh -q shutdown {n} --mode acpi >/dev/null || fail 'virsh shutdown failed'\n  \
         i=0\n  while [ \"$(virsh -q domstate {n})\" != \"shut off\" ]; do\n    \
         i=$((i + 1)); [ $i -gt {tenths} ] && {{ echo '@@timeout'; exit 4; }}\n    sleep 0.1\n  done\nfi\n",
        tenths = secs * 10
    )
}

fn update_script(
    plan: &VmPlan,
    host: &HostVms,
    shutdown_timeout: Duration,
) -> Result<String, DriverError> {
    let state = plan
        .state
        .as_ref()
        .ok_or_else(|| DriverError::UpdateWithoutState {
            vm: plan.name.clone(),
        })?;
    check_name(&state.name)?;
    if plan.action != VmAction::Update {
        return Err(DriverError::NotAnUpdate {
            vm: state.name.clone(),
        });
    }
    let n = q(&state.name);
    let mut s = String::from(SCRIPT_PRELUDE);
    s.push_str(&format!(
        "running=\n[ \"$(virsh -q domstate {n})\" = running ] && running=1\nlive=\n[ -n \"$running\" ] && live=--live\n"
    ));
    let mut next_dev = state.disks.len();
    let mut after_stop = String::new();
    for c in plan.applied() {
        match &c.kind {
            ChangeKind::Memory { to, hot: true, .. } => {
                let _ = writeln!(
                    s,
                    "virsh -q setmem {n} {}K --config $live >/dev/null || fail 'virsh setmem failed'",
                    to * 1024
                );
            }
            ChangeKind::Memory { to, hot: false, .. } => {
                let _ = writeln!(
                    s,
                    "virsh -q setmaxmem {n} {k}K --config >/dev/null && virsh -q setmem {n} {k}K --config >/dev/null || fail 'virsh setmaxmem failed'",
                    k = to * 1024
                );
            }
            ChangeKind::Vcpus { from, to } => {
                if to > from {
                    let _ = writeln!(s, "virsh -q setvcpus {n} {to} --maximum --config >/dev/null && virsh -q setvcpus {n} {to} --config >/dev/null || fail 'virsh setvcpus failed'");
                } else {
                    let _ = writeln!(s, "virsh -q setvcpus {n} {to} --config >/dev/null && virsh -q setvcpus {n} {to} --maximum --config >/dev/null || fail 'virsh setvcpus failed'");
                }
            }
            ChangeKind::DiskGrow { index, to, .. } => {
                let d = &state.disks[*index];
                let _ = writeln!(
                    s,
                    "if [ -n \"$running\" ]; then virsh -q blockresize {n} {p} {to}B >/dev/null; else qemu-img resize -q {p} {to}; fi || {}",
                    fail(&format!("growing {} failed", d.dev)),
                    p = q(&d.source),
                );
            }
            ChangeKind::DiskShrink { index, to, .. } => {
                let d = &state.disks[*index];
                let _ = writeln!(
                    after_stop,
                    "qemu-img resize -q --shrink {p} {to} || {}",
                    fail(&format!("shrinking {} failed", d.dev)),
                    p = q(&d.source),
                );
            }
            ChangeKind::DiskAdd { index, size, pool } => {
                let dir = pool_dir(host, pool.as_deref())?;
                let path = disk_path(dir, &state.name, *index);
                let dev = dev_name(next_dev);
                next_dev += 1;
                let p = q(&path);
                let _ = writeln!(
                    s,
                    "[ -e {p} ] && {}",
                    fail(&format!(
                        "disk {path} already exists: picaops never overwrites a disk"
                    ))
                );
                let _ = writeln!(
                    s,
                    "qemu-img create -q -f qcow2 {p} {size} || {}",
                    fail(&format!("qemu-img could not create {path}"))
                );
                let _ = writeln!(s, "virsh -q attach-disk {n} {p} {dev} --driver qemu --subdriver qcow2 --targetbus virtio --config $live >/dev/null || fail 'virsh attach-disk failed'");
            }
            ChangeKind::DiskRemove { dev, source, .. } => {
                let _ = writeln!(
                    s,
                    "virsh -q detach-disk {n} {} --config $live >/dev/null || {}",
                    q(dev),
                    fail(&format!("virsh detach-disk {dev} failed"))
                );
                let _ = writeln!(s, "rm -f -- {}", q(source));
            }
            ChangeKind::StartAtBoot { to } => {
                let _ = writeln!(
                    s,
                    "virsh -q autostart {}{n} >/dev/null || fail 'virsh autostart failed'",
                    if *to { "" } else { "--disable " }
                );
            }
            ChangeKind::Pending { .. } => {}
            ChangeKind::DiskPool { .. } | ChangeKind::Bridge | ChangeKind::Image => {}
        }
    }
    if plan.needs_restart() {
        s.push_str(&graceful_stop(&state.name, shutdown_timeout));
        s.push_str(&after_stop);
        let _ = writeln!(
            s,
            "[ -n \"$running\" ] && {{ virsh -q start {n} >/dev/null || fail 'virsh start failed after the change'; }}\ntrue"
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::model::{DiskSpec, NetSpec};

    pub(crate) const DOMAIN: &str = r#"<domain type='qemu'>
  <name>vm-tls</name>
  <uuid>2c3d9f7e-1111-2222-3333-444455556666</uuid>
  <metadata>
    <picaops:vm xmlns:picaops="https://picaops.picasoft.net/xmlns/vm/1" image="picaops-lab-guest"/>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>196608</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/vm-tls-disk0.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/vm-tls-seed.iso'/>
      <target dev='vdz' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='vmbr0'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>"#;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm-tls".into(),
            host: "bob".into(),
            vcpus: Some(1),
            memory_mib: Some(256),
            disks: vec![DiskSpec {
                size_bytes: 1 << 30,
                pool: None,
            }],
            network: Some(NetSpec {
                bridge: Some("vmbr0".into()),
                address: Some("10.61.0.10/24".into()),
                gateway: Some("10.61.0.1".into()),
                dns: vec!["10.61.0.1".into()],
            }),
            image: Some("picaops-lab-guest".into()),
            start_at_boot: true,
            admin_keys: vec!["ssh-ed25519 AAAAadmin lab".into()],
            accel: Accel::Tcg,
            snippets_storage: None,
            declared_at: "vms.yml:3:3".into(),
        }
    }

    #[test]
    fn a_domain_reads_back_as_its_state() {
        let vm = parse_domain(DOMAIN, "").unwrap();
        assert_eq!(vm.name, "vm-tls");
        assert_eq!((vm.memory_mib, vm.max_memory_mib, vm.vcpus), (192, 256, 1));
        assert_eq!(vm.disks.len(), 1, "the read-only seed is not a data disk");
        assert_eq!(vm.disks[0].dev, "vda");
        assert_eq!(vm.bridge.as_deref(), Some("vmbr0"));
        assert!(vm.managed);
        assert_eq!(vm.extra["image"], "picaops-lab-guest");
        assert_eq!(vm.extra["seed"], "/var/lib/libvirt/images/vm-tls-seed.iso");
    }

    #[test]
    fn a_hand_made_domain_is_not_managed_and_live_differences_are_pending() {
        let hand = DOMAIN.replace(
            "<picaops:vm xmlns:picaops=\"https://picaops.picasoft.net/xmlns/vm/1\" image=\"picaops-lab-guest\"/>",
            "",
        );
        let live = hand
            .replace(
                "<vcpu placement='static'>1</vcpu>",
                "<vcpu placement='static'>2</vcpu>",
            )
            .replace(
                "<memory unit='KiB'>262144</memory>",
                "<memory unit='KiB'>131072</memory>",
            );
        let vm = parse_domain(&hand, &live).unwrap();
        assert!(!vm.managed);
        assert_eq!(vm.max_memory_mib, 128);
        assert_eq!(vm.pending.len(), 2, "{:?}", vm.pending);
    }

    #[test]
    fn the_read_script_output_is_parsed_with_sizes_pools_and_autostart() {
        use base64::Engine as _;
        let enc = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let out = format!(
            "pool\tdefault\t/var/lib/libvirt/images\n\
             domain\tvm-tls\trunning\t42\t{}\t{}\n\
             disk\tvm-tls\t/var/lib/libvirt/images/vm-tls-disk0.qcow2\t{}\n\
             autostart\tvm-tls\n",
            enc(DOMAIN),
            enc(DOMAIN),
            enc(r#"{"virtual-size": 1073741824, "format": "qcow2"}"#)
        );
        let host = parse_read("bob", &out).unwrap();
        let vm = host.get("vm-tls").unwrap();
        assert_eq!(vm.power, Power::Running);
        assert_eq!(vm.uptime_secs, Some(42));
        assert!(vm.autostart);
        assert_eq!(vm.disks[0].size_bytes, Some(1 << 30));
        assert_eq!(vm.disks[0].pool.as_deref(), Some("default"));
    }

    #[test]
    fn the_domain_xml_parses_back_to_the_spec() {
        let s = spec();
        let xml = domain_xml(
            &s,
            &["/p/vm-tls-disk0.qcow2".into()],
            "/p/vm-tls-seed.iso",
            Some(("/p/k", "/p/i")),
        );
        assert!(xml.contains("<domain type='qemu'>"), "tcg: no KVM");
        assert!(
            !xml.contains("<graphics"),
            "virsh define refuses graphics none"
        );
        let vm = parse_domain(&xml, "").unwrap();
        assert_eq!((vm.memory_mib, vm.vcpus), (256, 1));
        assert!(vm.managed);
        assert_eq!(vm.disks.len(), 1);
        assert_eq!(vm.extra["seed"], "/p/vm-tls-seed.iso");
    }

    #[test]
    fn the_seed_carries_address_route_and_keys() {
        let s = spec();
        let net = network_config(&s).unwrap();
        assert!(net.contains("addresses: [10.61.0.10/24]"));
        assert!(net.contains("routes: [{to: default, via: 10.61.0.1}]"));
        assert!(user_data_head(&s).contains("  - \"ssh-ed25519 AAAAadmin lab\"\n"));
        assert_eq!(
            meta_data(&s),
            "instance-id: vm-tls\nlocal-hostname: vm-tls\n"
        );
    }

    #[test]
    fn every_script_is_valid_sh() {
        use crate::vm::plan::{authorize, diff, Allowed};
        let host = HostVms {
            host: "bob".into(),
            pools: [("default".to_string(), "/var/lib/libvirt/images".to_string())].into(),
            ..Default::default()
        };
        let mut state = parse_domain(DOMAIN, "").unwrap();
        state.power = Power::Running;
        state.disks[0].size_bytes = Some(1 << 30);
        state.autostart = true;
        let mut want = spec();
        want.memory_mib = Some(512);
        want.vcpus = Some(2);
        want.disks[0].size_bytes = 2 << 30;
        want.disks.push(DiskSpec {
            size_bytes: 1 << 30,
            pool: None,
        });
        want.start_at_boot = false;
        let mut plan = diff("vm-tls", "bob", Some(&want), Some(&state));
        authorize(
            &mut plan,
            &Allowed {
                reboot: true,
                ..Default::default()
            },
        );
        let update = update_script(&plan, &host, Duration::from_secs(60)).unwrap();
        assert!(update.contains("setmaxmem") && update.contains("blockresize"));
        assert!(update.contains("attach-disk") && update.contains("autostart --disable"));
        assert!(update.find("shutdown").unwrap() > update.find("blockresize").unwrap());
        let lv = Libvirt;
        for (name, script) in [
            ("read", lv.read_script()),
            ("create", create_script(&spec(), &host).unwrap()),
            ("update", update),
            ("adopt", lv.adopt_script(&state).unwrap()),
            ("release", lv.release_script(&state).unwrap()),
            ("delete", lv.delete_script(&state).unwrap()),
            (
                "reboot",
                lv.power_script(&state, PowerOp::Reboot, Duration::from_secs(5)),
            ),
        ] {
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

    #[test]
    fn the_create_script_never_overwrites_and_cleans_up_after_itself() {
        let host = HostVms {
            host: "bob".into(),
            pools: [("default".to_string(), "/var/lib/libvirt/images".to_string())].into(),
            ..Default::default()
        };
        let script = create_script(&spec(), &host).unwrap();
        assert!(script.contains("already exists (left by an earlier VM?)"));
        assert!(script.contains("-b /var/lib/libvirt/images/picaops-lab-guest.qcow2"));
        assert!(script.contains("trap "));
        assert!(script.contains("@@hostkey"));
        assert!(script.find("virsh -q define").unwrap() < script.find("virsh -q start").unwrap());
        let mut other = spec();
        other.disks[0].pool = Some("fast".into());
        let err = create_script(&other, &host).unwrap_err().to_string();
        assert!(err.contains("pool `fast` does not exist on bob"), "{err}");
    }

    #[test]
    fn releasing_removes_the_metadata_adopt_records_and_touches_nothing_else() {
        use crate::vm::driver::sandbox::Sandbox;
        // virsh logs its arguments; the VM runs, so the live definition loses the mark too.
        let sb = Sandbox::new(&[(
            "virsh",
            "echo \"$*\" >> \"$SANDBOX/calls\"; case \"$2\" in domstate) echo running;; esac; exit 0",
        )]);
        let state = parse_domain(DOMAIN, "").unwrap();
        let script = Libvirt.release_script(&state).unwrap();
        let (code, out) = sb.run(&script);
        assert_eq!(code, 0, "{out}");
        let calls = std::fs::read_to_string(sb.path().join("calls")).unwrap();
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                "-q domstate vm-tls",
                "-q metadata vm-tls --uri https://picaops.picasoft.net/xmlns/vm/1 --remove --config --live",
            ]
        );
        let adopt = Libvirt.adopt_script(&state).unwrap();
        assert!(adopt.contains(&format!("--uri {}", q(METADATA_URI))));
        // A shut-off VM: its saved definition only; virsh refusing is an error that says so.
        let sb = Sandbox::new(&[(
            "virsh",
            "echo \"$*\" >> \"$SANDBOX/calls\"; case \"$2\" in domstate) echo 'shut off';; metadata) exit 1;; esac; exit 0",
        )]);
        let (code, out) = sb.run(&script);
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("@@error virsh metadata refused to remove picaops's mark from vm-tls"));
        let calls = std::fs::read_to_string(sb.path().join("calls")).unwrap();
        assert!(calls.ends_with("--remove --config\n"), "{calls}");
        let mut bad = state.clone();
        bad.name = "x;reboot".into();
        assert!(Libvirt.release_script(&bad).is_err());
    }

    /// Stand-ins for the libvirt host's tools: no VM exists yet; `genisoimage` keeps a copy of
    /// the seed files it is given, so the test can compare them with what picaops meant.
    const LIBVIRT_TOOLS: &[(&str, &str)] = &[
        (
            "virsh",
            "case \"$2\" in dominfo) exit 1;; domstate) echo 'shut off';; esac; exit 0",
        ),
        ("qemu-img", "exit 0"),
        (
            "genisoimage",
            "mkdir -p \"$SANDBOX/seed\"; for f in \"$@\"; do [ -f \"$f\" ] && cp \"$f\" \"$SANDBOX/seed/\"; done; exit 0",
        ),
    ];

    #[test]
    fn hostile_inventory_values_stay_data_in_the_create_script() {
        use crate::vm::driver::sandbox::{hostile, Sandbox};
        let sb = Sandbox::new(LIBVIRT_TOOLS);
        let host = HostVms {
            host: "bob".into(),
            pools: [("default".to_string(), sb.path().display().to_string())].into(),
            ..Default::default()
        };
        let mut spec = spec();
        spec.image = Some(hostile("image"));
        spec.network = Some(NetSpec {
            bridge: Some(hostile("bridge")),
            address: Some(hostile("address")),
            gateway: Some(hostile("gateway")),
            dns: vec![hostile("dns")],
        });
        spec.admin_keys = vec![hostile("key")];
        let script = create_script(&spec, &host).unwrap();

        // No base image: the script stops at its check, the name quoted in its message.
        let (code, out) = sb.run(&script);
        assert_eq!(
            sb.pwned(),
            Vec::<String>::new(),
            "injected commands ran:\n{out}"
        );
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("@@error base image evil'$(touch"), "{out}");

        // With the base image there, the whole script runs, and the seed carries each value
        // byte for byte.
        std::fs::write(sb.path().join(format!("{}.qcow2", hostile("image"))), "").unwrap();
        let (code, out) = sb.run(&script);
        assert_eq!(
            sb.pwned(),
            Vec::<String>::new(),
            "injected commands ran:\n{out}"
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("@@hostkey ssh-ed25519 "), "{out}");
        let seed = |f: &str| std::fs::read_to_string(sb.path().join("seed").join(f)).unwrap();
        assert_eq!(seed("network-config"), network_config(&spec).unwrap());
        assert_eq!(seed("meta-data"), meta_data(&spec));
        assert!(seed("user-data").starts_with(&user_data_head(&spec)));
    }
}
