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
//!   (cores, memory, start at boot, bridge, cloud-init address, DNS, and `--cicustom
//!   user=STORAGE:snippets/picaops-NAME.yml`), `qm resize` of the boot disk, `qm set --scsiN
//!   STORAGE:GiB` for more disks, `qm start`.
//! - Host key: made by `ssh-keygen` on the hypervisor before the clone and written, with root's
//!   keys, into that snippet (`ssh_keys:`, see [`super::cloud_init`]); the script prints the
//!   public half and picaops pins it before the first login. The snippet is KEPT (mode 0600,
//!   root's, on the hypervisor; removed when picaops deletes the VM): Proxmox rebuilds the
//!   cloud-init drive from it at every start, so a VM whose snippet is gone no longer starts, and
//!   changed user-data gives a new instance-id, on which cloud-init makes new host keys. It holds
//!   nothing root on the hypervisor cannot already read on the VM's disk.
//! - Which storage holds snippets: the hypervisor's `snippets_storage:` (default `local`),
//!   checked against `pvesh get /storage` before anything is created.
//! - Pending: a running VM's settings saved but not in effect yet (the configuration's
//!   `[PENDING]` section, read with `pvesh get /nodes/NODE/qemu/VMID/pending`) are shown as
//!   waiting for a restart. `qm config` prints the configuration with them applied.
//! - VMs picaops created or adopted carry the tag `picaops`; `vm release` removes it.
//! - Limits: Proxmox cannot shrink a disk (refused).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::cloud_init;
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

/// Storage for cloud-init snippets when the hypervisor's `snippets_storage:` names none (the
/// directory storage every Proxmox VE installation has, `/var/lib/vz`).
pub const DEFAULT_SNIPPETS_STORAGE: &str = "local";

/// The volume id of VM `name`'s cloud-init user-data on `storage`.
pub fn snippet_volid(storage: &str, name: &str) -> String {
    format!("{storage}:snippets/picaops-{name}.yml")
}

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

    fn release_script(&self, state: &VmState) -> Result<String, DriverError> {
        let id = vmid(state)?;
        let rest: Vec<String> = split_tags(state.extra.get("tags").map(String::as_str))
            .into_iter()
            .filter(|t| t != TAG)
            .collect();
        let set = if rest.is_empty() {
            format!("qm set {id} --delete tags || fail 'qm set --delete tags failed'")
        } else {
            format!(
                "qm set {id} --tags {} || fail 'qm set --tags failed'",
                q(&rest.join(";"))
            )
        };
        Ok(format!("{SCRIPT_PRELUDE}{set}\n"))
    }

    fn delete_script(&self, state: &VmState) -> Result<String, DriverError> {
        let id = vmid(state)?;
        let mut s = format!(
            "{SCRIPT_PRELUDE}qm stop {id} >/dev/null 2>&1\n\
             qm destroy {id} --purge 1 --destroy-unreferenced-disks 1 || fail 'qm destroy {id} failed'\n"
        );
        // The snippet picaops made for it (it holds the VM's private host key): only a file of
        // that exact name, never another snippet the VM may use.
        if let Some(volid) = own_snippet(state) {
            let _ = writeln!(
                s,
                "p=$(pvesm path {v}) && rm -f -- \"$p\" || echo 'could not remove the snippet {v}' >&2",
                v = q(&volid)
            );
        }
        Ok(s)
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

/// The `user=` snippet of a VM's `cicustom`, when it is the one picaops made for this VM.
pub fn own_snippet(state: &VmState) -> Option<String> {
    let cicustom = state.extra.get("cicustom")?;
    let volid = cicustom
        .split(',')
        .find_map(|p| p.trim().strip_prefix("user="))?;
    let (storage, file) = volid.split_once(':')?;
    (file == format!("snippets/picaops-{}.yml", state.name)
        && crate::values::check_pool(storage).is_ok())
    .then(|| volid.to_string())
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

/// This node's name, the cluster's guests and storages (JSON), then the configuration of each VM
/// of this node (`qm config`) and its pending changes if it has any (base64 so every record
/// stays on one line).
const READ_SCRIPT: &str = r#"command -v pvesh >/dev/null 2>&1 && command -v qm >/dev/null 2>&1 || fail "pvesh and qm are missing: is this a Proxmox VE host? (or set hypervisor: libvirt in the inventory)"
node=$(hostname)
printf 'node\t%s\n' "$node"
res=$(pvesh get /cluster/resources --type vm --output-format json) || fail "pvesh get /cluster/resources failed"
printf 'resources\t%s\n' "$(printf '%s' "$res" | base64 -w0)"
st=$(pvesh get /storage --output-format json) || fail "pvesh get /storage failed"
printf 'storage\t%s\n' "$(printf '%s' "$st" | base64 -w0)"
confdir=/etc/pve/qemu-server
for f in "$confdir"/*.conf; do
  [ -e "$f" ] || continue
  id=${f##*/}; id=${id%.conf}
  printf 'config\t%s\t%s\n' "$id" "$(qm config "$id" 2>/dev/null | base64 -w0)"
  # Proxmox writes settings a running VM does not have yet under [PENDING] in this file; only
  # then is its pending list asked for (one pvesh less per VM otherwise).
  if grep -q '^\[PENDING\]' "$f"; then
    printf 'pending\t%s\t%s\n' "$id" "$(pvesh get "/nodes/$node/qemu/$id/pending" --output-format json 2>/dev/null | base64 -w0)"
  fi
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

/// The list `pvesh … --output-format json` prints: an array, or the API's `{"data": [...]}`.
fn api_list(json: &str) -> Result<Vec<Value>, ResourcesError> {
    match serde_json::from_str(json).map_err(ResourcesError::NotJson)? {
        Value::Array(a) => Ok(a),
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(ResourcesError::NoData),
        },
        _ => Err(ResourcesError::NotAList),
    }
}

/// Parses `pvesh get /cluster/resources --type vm --output-format json` (an array; the API's
/// `{"data": [...]}` is accepted too).
pub fn parse_resources(json: &str) -> Result<Vec<Resource>, ResourcesError> {
    let list = api_list(json)?;
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

/// One storage of `pvesh get /storage`: its id and the content types it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    pub id: String,
    /// `images`, `iso`, `snippets`, … as Proxmox lists them.
    pub content: Vec<String>,
    pub disabled: bool,
}

/// Parses `pvesh get /storage --output-format json` (the storages of the cluster's
/// /etc/pve/storage.cfg; an array, or the API's `{"data": [...]}`).
pub fn parse_storages(json: &str) -> Result<Vec<Storage>, ResourcesError> {
    let list = api_list(json)?;
    Ok(list
        .iter()
        .filter_map(|e| {
            Some(Storage {
                id: e["storage"].as_str()?.to_string(),
                content: e["content"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
                disabled: e["disable"].as_u64().is_some_and(|d| d != 0)
                    || e["disable"].as_str().is_some_and(|d| d != "0"),
            })
        })
        .collect())
}

/// Settings whose values a plan must not show (a password hash, keys).
const UNSHOWN: [&str; 2] = ["cipassword", "sshkeys"];

/// A value of Proxmox's for a plan: on one line, at most 60 characters.
fn shown_value(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = crate::values::shown(&text);
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// Parses `pvesh get /nodes/NODE/qemu/VMID/pending --output-format json` into the changes
/// that wait for a restart, as people read them (`memory: 12288 (runs with 8192)`). Every
/// setting of the VM is listed there; only those with a `pending` value or a `delete` mark
/// wait. Format: an array of `{key, value?, pending?, delete?}` (PVE::GuestHelpers's
/// `config_with_pending_array`; `delete` 1, or 2 for a forced deletion).
pub fn parse_pending(json: &str) -> Result<Vec<String>, ResourcesError> {
    let list = api_list(json)?;
    let mut out: Vec<(String, String)> = Vec::new();
    for e in list {
        let Some(key) = e["key"].as_str() else {
            continue;
        };
        let key_shown = crate::values::shown(key);
        let deleted = e["delete"].as_u64().is_some_and(|d| d != 0);
        let current = e.get("value").filter(|v| !v.is_null());
        let pending = e.get("pending").filter(|v| !v.is_null());
        if UNSHOWN.contains(&key) && (deleted || pending.is_some()) {
            let what = if deleted { "removed" } else { "changed" };
            out.push((
                key.to_string(),
                format!("{key_shown} {what} (value not shown)"),
            ));
            continue;
        }
        let text = match (pending, deleted) {
            (_, true) => match current {
                Some(cur) => format!("{key_shown} removed (runs with {})", shown_value(cur)),
                None => format!("{key_shown} removed"),
            },
            (Some(new), false) => match current {
                Some(cur) => format!(
                    "{key_shown}: {} (runs with {})",
                    shown_value(new),
                    shown_value(cur)
                ),
                None => format!("{key_shown}: {} (new)", shown_value(new)),
            },
            (None, false) => continue,
        };
        out.push((key.to_string(), text));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, t)| t).collect())
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
    if let Some(c) = config.get("cicustom") {
        extra.insert("cicustom".to_string(), c.clone());
    }
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
    let mut storages = Vec::new();
    let mut pending: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["node", n] => node = n.to_string(),
            ["storage", st] => {
                storages = parse_storages(&b64(st)?).map_err(|source| ProxmoxError::Storages {
                    host: host.to_string(),
                    source,
                })?
            }
            ["pending", id, json] => {
                let json = b64(json)?;
                // The configuration has a [PENDING] section but pvesh did not list it: still
                // shown, so that nobody takes the VM for up to date.
                let list = parse_pending(&json).unwrap_or_else(|_| {
                    vec![
                        "settings saved in its [PENDING] section (pvesh could not list them)"
                            .into(),
                    ]
                });
                pending.insert(id.to_string(), list);
            }
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
    for st in storages.iter().filter(|st| !st.disabled) {
        out.pools.insert(st.id.clone(), st.content.join(","));
    }
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
        let mut vm = state_from_config(&id, &config, resource);
        vm.pending = pending.remove(&id).unwrap_or_default();
        out.vms.push(vm);
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
    let storage = snippets_storage(spec, host)?;
    let volid = snippet_volid(storage, &spec.name);
    let mut s = String::from(SCRIPT_PRELUDE);
    // `kept`: the VM refers to its snippet; until then, a failure removes the snippet again.
    s.push_str("umask 077\nkept=\nsnip=\nw=$(mktemp -d) || fail 'mktemp failed'\n");
    s.push_str(
        "trap 'rm -rf \"$w\"; [ -n \"$kept\" ] || [ -z \"$snip\" ] || rm -f -- \"$snip\"' EXIT\n",
    );
    s.push_str("command -v ssh-keygen >/dev/null 2>&1 && command -v pvesm >/dev/null 2>&1 || fail 'ssh-keygen or pvesm is missing on this host (apt-get install openssh-client)'\n");
    // The host key and the user-data it goes into, written to the snippets storage before
    // anything is cloned.
    cloud_init::generate_host_key(&mut s, &spec.name);
    write_file(
        &mut s,
        "\"$w/user-data\"",
        &cloud_init::user_data_head(spec, true),
    );
    cloud_init::append_host_key(&mut s, "\"$w/user-data\"");
    let _ = writeln!(
        s,
        "p=$(pvesm path {v}) || {}",
        fail(&format!(
            "pvesm path {volid} failed: is {storage} a directory storage that allows snippets?"
        )),
        v = q(&volid)
    );
    let _ = writeln!(
        s,
        "mkdir -p -- \"${{p%/*}}\" && rm -f -- \"$p\" && snip=$p && cat \"$w/user-data\" > \"$p\" && chmod 600 \"$p\" || {}",
        fail(&format!("could not write the snippet {volid}"))
    );
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
    // Root's keys are in the snippet; `--sshkeys` also shows them in Proxmox's web interface.
    let _ = writeln!(
        s,
        "qm set \"$id\" {} --sshkeys \"$w/keys\" --cicustom {} || fail 'qm set failed'\nkept=1",
        args.join(" "),
        q(&format!("user={volid}"))
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
    cloud_init::announce_host_key(&mut s);
    s.push_str("qm start \"$id\" || fail 'the VM was created but qm start failed'\n");
    Ok(s)
}

/// The storage for a new VM's snippet, checked against what the host's storages allow.
fn snippets_storage<'a>(spec: &'a VmSpec, host: &HostVms) -> Result<&'a str, ProxmoxError> {
    let storage = spec
        .snippets_storage
        .as_deref()
        .unwrap_or(DEFAULT_SNIPPETS_STORAGE);
    let allowing: Vec<String> = host
        .pools
        .iter()
        .filter(|(_, c)| c.split(',').any(|c| c == "snippets"))
        .map(|(id, _)| id.clone())
        .collect();
    match host.pools.get(storage) {
        None => Err(ProxmoxError::NoSnippetsStorage {
            host: host.host.clone(),
            vm: spec.name.clone(),
            storage: storage.to_string(),
            allowing,
        }),
        Some(content) if !content.split(',').any(|c| c == "snippets") => {
            Err(ProxmoxError::SnippetsNotAllowed {
                host: host.host.clone(),
                vm: spec.name.clone(),
                storage: storage.to_string(),
                content: content.clone(),
                allowing,
            })
        }
        Some(_) => Ok(storage),
    }
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
    fn pending_lists_only_what_waits_and_never_a_hidden_value() {
        let json = r#"[{"key":"digest","value":"abc"},{"key":"memory","value":2048,"pending":"4096"},
            {"key":"cipassword","value":"**********","pending":"**********"},
            {"key":"net1","pending":"virtio,bridge=vmbr1"},{"key":"usb0","delete":2},
            {"key":"args","value":"x","pending":"-display dbus,addr=unix:path=/run/a-very-long-path/that/goes/on/and/on"},
            {"key":"boot","value":"order=scsi0"},{"pending":"no key"}]"#;
        assert_eq!(
            parse_pending(json).unwrap(),
            [
                "args: -display dbus,addr=unix:path=/run/a-very-long-path/that/goe… (runs with x)",
                "cipassword changed (value not shown)",
                "memory: 4096 (runs with 2048)",
                "net1: virtio,bridge=vmbr1 (new)",
                "usb0 removed",
            ]
        );
        assert!(parse_pending("[]").unwrap().is_empty());
        assert!(parse_pending("{\"data\": 3}").is_err());
        assert!(parse_pending("not json").is_err());
    }

    #[test]
    fn tags_in_every_separator() {
        assert_eq!(split_tags(Some("a;picaops, b")), vec!["a", "picaops", "b"]);
        assert!(split_tags(Some(" ")).is_empty());
    }
}
