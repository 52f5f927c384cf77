//! The Proxmox VE driver: `qm` and `pvesh` on the hypervisor, over SSH (no API token to manage).
//!
//! NOT YET RUN AGAINST A LIVE PROXMOX HOST: Proxmox cannot run where picaops is developed. The
//! scripts below are checked by tests for what they run, and the parsers against outputs real
//! Proxmox hosts printed (tests/fixtures/proxmox/, each with its source). See the README's
//! "VMs" section for what that leaves unproven.
//!
//! - State: `pvesh get /cluster/resources --type vm --output-format json` (every guest of the
//!   cluster: status, uptime, templates) and `qm config VMID` for each VM of this node (the
//!   VM's configuration in Proxmox's own `key: value` file format, the format of
//!   /etc/pve/qemu-server/VMID.conf).
//! - Create: `qm clone TEMPLATE NEWID --full` from the template named by `image:`, then `qm set`
//!   (cores, memory, start at boot, bridge, cloud-init address, DNS and root's keys), `qm resize`
//!   of the boot disk, `qm set --scsiN STORAGE:GiB` for more disks, `qm start`.
//! - VMs picaops created or adopted carry the tag `picaops`.
//! - Limits: Proxmox cannot shrink a disk (refused); cloud-init cannot give a host key, so the
//!   new VM's key must be pinned by hand (`picaops inventory pin NAME`) before it is converged;
//!   changes waiting in Proxmox's "pending" section are not read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::driver::{
    check_name, decode_field, fail, write_file, DriverError, Hypervisor, PowerOp, SCRIPT_PRELUDE,
};
pub use super::error::{ProxmoxError, ResourcesError};
use super::model::{DiskState, HostVms, Power, VmSpec, VmState};
use super::plan::{ChangeKind, VmAction, VmPlan};
use crate::transport::quote::quote as q;

/// The tag marking VMs picaops manages.
pub const TAG: &str = "picaops";

/// Storage for new disks when the inventory names none.
pub const DEFAULT_STORAGE: &str = "local-lvm";

pub struct Proxmox;

impl Hypervisor for Proxmox {
    fn kind(&self) -> &'static str {
        "proxmox"
    }

    fn read_script(&self) -> String {
        format!("{SCRIPT_PRELUDE}{READ_SCRIPT}")
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
        _host: &HostVms,
        shutdown_timeout: Duration,
    ) -> Result<String, DriverError> {
        update_script(plan, shutdown_timeout)
    }

    fn adopt_script(&self, state: &VmState) -> Result<String, DriverError> {
        let id = vmid(state)?;
        let mut tags: Vec<String> = split_tags(state.extra.get("tags").map(String::as_str));
        tags.push(TAG.into());
        Ok(format!(
            "{SCRIPT_PRELUDE}qm set {id} --tags {} || fail 'qm set --tags failed'\n",
            q(&tags.join(";"))
        ))
    }

    fn delete_script(&self, state: &VmState) -> Result<String, DriverError> {
        let id = vmid(state)?;
        Ok(format!(
            "{SCRIPT_PRELUDE}qm stop {id} >/dev/null 2>&1\n\
             qm destroy {id} --purge 1 --destroy-unreferenced-disks 1 || fail 'qm destroy {id} failed'\n"
        ))
    }

    fn power_script(&self, state: &VmState, op: PowerOp, timeout: Duration) -> String {
        // The id was read from the host: quoted, as any other word that is not ours.
        let id = q(&state.id);
        let t = timeout.as_secs().max(1);
        let line = match op {
            PowerOp::Start => format!("qm start {id} || fail 'qm start failed'"),
            PowerOp::Stop { force: true } => format!("qm stop {id} || fail 'qm stop failed'"),
            PowerOp::Stop { force: false } => {
                format!("qm shutdown {id} --timeout {t} || {{ echo '@@timeout'; exit 4; }}")
            }
            PowerOp::Reboot => {
                format!("qm reboot {id} --timeout {t} || {{ echo '@@timeout'; exit 4; }}")
            }
        };
        format!("{SCRIPT_PRELUDE}{line}\n")
    }

    fn console_argv(&self, state: &VmState) -> Result<Vec<String>, DriverError> {
        Ok(vec!["qm".into(), "terminal".into(), vmid(state)?])
    }

    fn cannot(&self, kind: &ChangeKind) -> Option<String> {
        matches!(kind, ChangeKind::DiskShrink { .. }).then(|| {
            "Proxmox cannot shrink a disk: copy the data to a new, smaller disk by hand".into()
        })
    }
}

fn vmid(state: &VmState) -> Result<String, ProxmoxError> {
    if !state.id.is_empty() && state.id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(state.id.clone())
    } else {
        Err(ProxmoxError::NoVmid {
            vm: state.name.clone(),
        })
    }
}

/// This node's name, the cluster's guests (JSON), then the configuration of each VM of this
/// node (`qm config`, base64 so every record stays on one line).
const READ_SCRIPT: &str = r#"command -v pvesh >/dev/null 2>&1 && command -v qm >/dev/null 2>&1 || fail "pvesh and qm are missing: is this a Proxmox VE host? (or set hypervisor: libvirt in the inventory)"
printf 'node\t%s\n' "$(hostname)"
res=$(pvesh get /cluster/resources --type vm --output-format json) || fail "pvesh get /cluster/resources failed"
printf 'resources\t%s\n' "$(printf '%s' "$res" | base64 -w0)"
for f in /etc/pve/qemu-server/*.conf; do
  [ -e "$f" ] || continue
  id=${f##*/}; id=${id%.conf}
  printf 'config\t%s\t%s\n' "$id" "$(qm config "$id" 2>/dev/null | base64 -w0)"
done
"#;

/// One guest of `/cluster/resources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub vmid: String,
    pub name: Option<String>,
    pub node: String,
    pub kind: String,
    pub status: String,
    pub uptime: Option<u64>,
    pub template: bool,
    pub tags: Vec<String>,
}

/// Parses `pvesh get /cluster/resources --type vm --output-format json` (an array; the API's
/// `{"data": [...]}` is accepted too).
pub fn parse_resources(json: &str) -> Result<Vec<Resource>, ResourcesError> {
    let v: Value = serde_json::from_str(json).map_err(ResourcesError::NotJson)?;
    let list = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("data")
            .and_then(Value::as_array)
            .ok_or(ResourcesError::NoData)?,
        _ => return Err(ResourcesError::NotAList),
    };
    let text = |e: &Value, k: &str| -> Option<String> {
        match &e[k] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    Ok(list
        .iter()
        .filter_map(|e| {
            Some(Resource {
                vmid: text(e, "vmid")?,
                name: text(e, "name"),
                node: text(e, "node").unwrap_or_default(),
                kind: text(e, "type").unwrap_or_default(),
                status: text(e, "status").unwrap_or_default(),
                uptime: e["uptime"].as_u64(),
                template: e["template"].as_u64() == Some(1),
                tags: split_tags(e["tags"].as_str()),
            })
        })
        .collect())
}

/// Proxmox writes tags separated by `;` (older versions also `,` or spaces).
pub fn split_tags(tags: Option<&str>) -> Vec<String> {
    tags.unwrap_or("")
        .split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Parses `qm config VMID` (Proxmox's `key: value` configuration format). Snapshot sections
/// (`[name]`) and comments are left out: only the current configuration counts.
pub fn parse_config_text(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('[') {
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(": ") {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// `32G`, `3487G`, `512M`, `1T` → bytes.
pub fn parse_pve_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let shift = match unit {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    Some((n * (1u64 << shift) as f64) as u64)
}

const BUSES: [&str; 4] = ["scsi", "virtio", "sata", "ide"];

/// `scsi0` → (bus order, index), for disk keys only.
fn disk_key(key: &str) -> Option<(usize, u32)> {
    let bus = BUSES.iter().position(|b| key.starts_with(b))?;
    let n: u32 = key[BUSES[bus].len()..].parse().ok()?;
    Some((bus, n))
}

/// The VM as picaops models it, from its `qm config` and its `/cluster/resources` entry.
pub fn state_from_config(
    vmid: &str,
    config: &BTreeMap<String, String>,
    resource: Option<&Resource>,
) -> VmState {
    let num = |k: &str, default: u64| {
        config
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let cores = num("cores", 1);
    let sockets = num("sockets", 1);
    let memory = num("memory", 512);
    let hotplug = config
        .get("hotplug")
        .cloned()
        .unwrap_or_else(|| "network,disk,usb".into());
    let memory_hot = hotplug == "1" || hotplug.split(',').any(|h| h == "memory");
    let mut keys: Vec<(&String, &String, (usize, u32))> = config
        .iter()
        .filter_map(|(k, v)| disk_key(k).map(|o| (k, v, o)))
        .filter(|(_, v, _)| !v.contains("media=cdrom") && !v.contains("cloudinit"))
        .collect();
    keys.sort_by_key(|(_, _, o)| *o);
    let disks = keys
        .iter()
        .map(|(k, v, _)| {
            let volume = v.split(',').next().unwrap_or("").to_string();
            let size = v
                .split(',')
                .find_map(|p| p.strip_prefix("size="))
                .and_then(parse_pve_size);
            DiskState {
                dev: k.to_string(),
                pool: volume.split_once(':').map(|(s, _)| s.to_string()),
                source: volume,
                size_bytes: size,
            }
        })
        .collect();
    let bridge = config.get("net0").and_then(|n| {
        n.split(',')
            .find_map(|p| p.strip_prefix("bridge="))
            .map(String::from)
    });
    let tags = config
        .get("tags")
        .cloned()
        .or_else(|| resource.map(|r| r.tags.join(";")))
        .unwrap_or_default();
    let mut extra = BTreeMap::new();
    extra.insert("hotplug".to_string(), hotplug);
    extra.insert("tags".to_string(), tags.clone());
    let power = match resource.map(|r| r.status.as_str()) {
        Some(s) => Power::parse(s),
        None => Power::Other("unknown".into()),
    };
    VmState {
        name: config
            .get("name")
            .cloned()
            .or_else(|| resource.and_then(|r| r.name.clone()))
            .unwrap_or_else(|| format!("vm{vmid}")),
        id: vmid.to_string(),
        uptime_secs: resource
            .and_then(|r| r.uptime)
            .filter(|_| power == Power::Running),
        power,
        vcpus: (cores * sockets) as u32,
        memory_mib: memory,
        max_memory_mib: if memory_hot { 4 << 20 } else { memory },
        disks,
        bridge,
        autostart: config.get("onboot").map(String::as_str) == Some("1"),
        managed: split_tags(Some(&tags)).iter().any(|t| t == TAG),
        pending: Vec::new(),
        extra,
    }
}

/// Parses the read script's output: this node's VMs (templates apart).
pub fn parse_read(host: &str, stdout: &str) -> Result<HostVms, ProxmoxError> {
    let b64 = |text: &str| {
        decode_field(text).map_err(|source| ProxmoxError::ReadOutput {
            host: host.to_string(),
            source,
        })
    };
    let mut node = String::new();
    let mut resources = Vec::new();
    let mut configs: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["node", n] => node = n.to_string(),
            ["resources", r] => {
                resources = parse_resources(&b64(r)?).map_err(|source| ProxmoxError::Resources {
                    host: host.to_string(),
                    source,
                })?
            }
            ["config", id, text] => configs.push((id.to_string(), parse_config_text(&b64(text)?))),
            _ => {}
        }
    }
    let mut out = HostVms {
        host: host.to_string(),
        ..Default::default()
    };
    for r in resources
        .iter()
        .filter(|r| r.kind == "qemu" && r.template && (r.node == node || node.is_empty()))
    {
        if let Some(name) = &r.name {
            out.templates.insert(name.clone(), r.vmid.clone());
        }
    }
    for (id, config) in configs {
        if config.get("template").map(String::as_str) == Some("1") {
            if let Some(name) = config.get("name") {
                out.templates.insert(name.clone(), id.clone());
            }
            continue;
        }
        let resource = resources.iter().find(|r| r.vmid == id && r.kind == "qemu");
        out.vms.push(state_from_config(&id, &config, resource));
    }
    Ok(out)
}

/// `--ipconfig0` for a VM's network settings: `ip=192.0.2.10/24,gw=192.0.2.1`.
pub fn ipconfig(spec: &VmSpec) -> Option<String> {
    let net = spec.network.as_ref()?;
    let mut parts = vec![format!("ip={}", net.address.as_deref()?)];
    if let Some(gw) = &net.gateway {
        parts.push(format!("gw={gw}"));
    }
    Some(parts.join(","))
}

fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30).max(1)
}

/// The `qm set` arguments for a new VM's settings (without the VMID).
pub fn settings_args(spec: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--cores".into(),
        spec.vcpus.unwrap_or(1).to_string(),
        "--sockets".into(),
        "1".into(),
        "--memory".into(),
        spec.memory_mib.unwrap_or(1024).to_string(),
        "--onboot".into(),
        if spec.start_at_boot { "1" } else { "0" }.into(),
        "--tags".into(),
        TAG.into(),
        "--ciuser".into(),
        "root".into(),
    ];
    if let Some(bridge) = spec.network.as_ref().and_then(|n| n.bridge.as_ref()) {
        a.push("--net0".into());
        a.push(format!("virtio,bridge={bridge}"));
    }
    if let Some(ip) = ipconfig(spec) {
        a.push("--ipconfig0".into());
        a.push(ip);
    }
    if let Some(net) = spec.network.as_ref().filter(|n| !n.dns.is_empty()) {
        a.push("--nameserver".into());
        a.push(net.dns.join(" "));
    }
    a
}

fn create_script(spec: &VmSpec, host: &HostVms) -> Result<String, DriverError> {
    check_name(&spec.name)?;
    spec.check_creatable()?;
    let image = spec.image.as_deref().unwrap_or_default();
    let template = host
        .templates
        .get(image)
        .ok_or_else(|| ProxmoxError::NoTemplate {
            host: host.host.clone(),
            vm: spec.name.clone(),
            image: image.to_string(),
            available: host.templates.keys().cloned().collect(),
        })?;
    let mut s = String::from(SCRIPT_PRELUDE);
    s.push_str("umask 077\nw=$(mktemp -d) || fail 'mktemp failed'\ntrap 'rm -rf \"$w\"' EXIT\n");
    s.push_str("id=$(pvesh get /cluster/nextid) || fail 'pvesh get /cluster/nextid failed'\n");
    let mut clone = format!(
        "qm clone {} \"$id\" --name {} --full 1",
        q(template),
        q(&spec.name)
    );
    if let Some(pool) = &spec.disks[0].pool {
        let _ = write!(clone, " --storage {}", q(pool));
    }
    let _ = writeln!(
        s,
        "{clone} || {}",
        fail(&format!("qm clone of template {image} failed"))
    );
    s.push_str("echo \"@@vmid $id\"\n");
    let keys: String = spec.admin_keys.iter().map(|k| format!("{k}\n")).collect();
    write_file(&mut s, "\"$w/keys\"", &keys);
    let args: Vec<String> = settings_args(spec).iter().map(|a| q(a)).collect();
    let _ = writeln!(
        s,
        "qm set \"$id\" {} --sshkeys \"$w/keys\" || fail 'qm set failed'",
        args.join(" ")
    );
    // The clone's boot disk: its first disk that is neither a CD-ROM nor the cloud-init drive.
    s.push_str("disk=$(qm config \"$id\" | grep -E '^(scsi|virtio|sata|ide)[0-9]+: ' | grep -v -e media=cdrom -e cloudinit | head -n1 | cut -d: -f1)\n");
    s.push_str("[ -n \"$disk\" ] || fail 'the clone has no disk to resize'\n");
    let _ = writeln!(
        s,
        "qm resize \"$id\" \"$disk\" {}M || fail 'qm resize of the boot disk failed (a template larger than the wanted size?)'",
        spec.disks[0].size_bytes >> 20
    );
    // More disks from scsi11 on, clear of whatever disks the template itself has.
    for (i, d) in spec.disks.iter().enumerate().skip(1) {
        let storage = d.pool.as_deref().unwrap_or(DEFAULT_STORAGE);
        let _ = writeln!(
            s,
            "qm set \"$id\" --scsi{} {}:{} || fail 'adding disk {} failed'",
            i + 10,
            q(storage),
            gib_ceil(d.size_bytes),
            i + 1
        );
    }
    s.push_str("qm start \"$id\" || fail 'the VM was created but qm start failed'\n");
    Ok(s)
}

fn update_script(plan: &VmPlan, shutdown_timeout: Duration) -> Result<String, DriverError> {
    let state = plan
        .state
        .as_ref()
        .ok_or_else(|| DriverError::UpdateWithoutState {
            vm: plan.name.clone(),
        })?;
    if plan.action != VmAction::Update {
        return Err(DriverError::NotAnUpdate {
            vm: state.name.clone(),
        });
    }
    let id = vmid(state)?;
    let mut s = String::from(SCRIPT_PRELUDE);
    s.push_str(&format!(
        "running=\n[ \"$(qm status {id} | sed -n 's/^status: //p')\" = running ] && running=1\n"
    ));
    let mut next_scsi = state
        .disks
        .iter()
        .filter_map(|d| {
            d.dev
                .strip_prefix("scsi")
                .and_then(|n| n.parse::<u32>().ok())
        })
        .max()
        .map_or(0, |n| n + 1);
    for c in plan.applied() {
        match &c.kind {
            ChangeKind::Memory { to, .. } => {
                let _ = writeln!(
                    s,
                    "qm set {id} --memory {to} || fail 'qm set --memory failed'"
                );
            }
            ChangeKind::Vcpus { to, .. } => {
                let _ = writeln!(
                    s,
                    "qm set {id} --sockets 1 --cores {to} || fail 'qm set --cores failed'"
                );
            }
            ChangeKind::DiskGrow { dev, to, .. } => {
                let _ = writeln!(
                    s,
                    "qm resize {id} {} {}M || {}",
                    q(dev),
                    to >> 20,
                    fail(&format!("qm resize {dev} failed"))
                );
            }
            ChangeKind::DiskShrink { dev, .. } => {
                return Err(ProxmoxError::CannotShrink {
                    vm: state.name.clone(),
                    dev: dev.clone(),
                }
                .into())
            }
            ChangeKind::DiskAdd { size, pool, .. } => {
                let storage = pool.as_deref().unwrap_or(DEFAULT_STORAGE);
                let _ = writeln!(
                    s,
                    "qm set {id} --scsi{next_scsi} {}:{} || fail 'adding a disk failed'",
                    q(storage),
                    gib_ceil(*size)
                );
                next_scsi += 1;
            }
            ChangeKind::DiskRemove { dev, .. } => {
                let _ = writeln!(
                    s,
                    "qm disk unlink {id} --idlist {} --force 1 || {}",
                    q(dev),
                    fail(&format!("removing {dev} failed"))
                );
            }
            ChangeKind::StartAtBoot { to } => {
                let _ = writeln!(
                    s,
                    "qm set {id} --onboot {} || fail 'qm set --onboot failed'",
                    u8::from(*to)
                );
            }
            ChangeKind::Pending { .. }
            | ChangeKind::DiskPool { .. }
            | ChangeKind::Bridge
            | ChangeKind::Image => {}
        }
    }
    if plan.needs_restart() {
        let t = shutdown_timeout.as_secs().max(1);
        let _ = writeln!(
            s,
            "if [ -n \"$running\" ]; then\n  qm shutdown {id} --timeout {t} || {{ echo '@@timeout'; exit 4; }}\n  qm start {id} || fail 'qm start failed after the change'\nfi"
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_proxmox_units() {
        assert_eq!(parse_pve_size("32G"), Some(32 << 30));
        assert_eq!(parse_pve_size("512M"), Some(512 << 20));
        assert_eq!(parse_pve_size("1.5T"), Some(3 << 39));
        assert_eq!(parse_pve_size("32"), None);
    }

    #[test]
    fn tags_in_every_separator() {
        assert_eq!(split_tags(Some("a;picaops, b")), vec!["a", "picaops", "b"]);
        assert!(split_tags(Some(" ")).is_empty());
    }
}
