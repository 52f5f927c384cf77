//! Reading the inventory directory: every YAML file parsed strictly, then merged into one model.
//!
//! The YAML shapes here (`*Doc`) mirror the files exactly and keep every value's location; they
//! never leave this module. Parsing uses serde-saphyr with duplicate keys as errors and strict
//! booleans (`yes`/`no`/`on` stay strings), so a mistake in a file is reported, never guessed at.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    Capacity, Disk, Group, HypervisorKind, Inventory, Located, Oob, Service, Site, SiteRecovery,
    Ssh, Var, Vm, VmNetwork,
};
use super::{check, values, Host};
use crate::diagnostic::{Diagnostic, Place, Sources};
use crate::yaml::{self, place_of, Name};

type Named<T> = IndexMap<Name, T>;
type VarsDoc = IndexMap<Name, Spanned<serde_json::Value>>;

/// One inventory file, as written. Every section is optional; files are merged.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    sites: Option<Named<SiteDoc>>,
    hosts: Option<Named<HostDoc>>,
    vms: Option<Named<VmDoc>>,
    groups: Option<Named<GroupDoc>>,
    vars: Option<VarsDoc>,
    services: Option<Named<crate::sections::service::ServiceDoc>>,
    access: Option<Spanned<crate::sections::access::AccessDoc>>,
    secrets: Option<Spanned<crate::secrets::SecretsDoc>>,
    backups: Option<Named<crate::sections::backup::JobDoc>>,
    recovery: Option<Spanned<crate::sections::recovery::RecoveryDoc>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SiteDoc {
    description: Option<String>,
    backs_up_to: Option<Spanned<String>>,
    recovery: Option<SiteRecoveryDoc>,
    #[serde(default)]
    vars: VarsDoc,
}

/// A site's `recovery:` as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SiteRecoveryDoc {
    site: Option<Spanned<String>>,
    hypervisor: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
}

/// A hypervisor's `capacity:` as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CapacityDoc {
    vcpus: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HostDoc {
    site: Spanned<String>,
    description: Option<String>,
    address: Spanned<String>,
    port: Option<Spanned<u16>>,
    user: Option<String>,
    identity_file: Option<String>,
    #[serde(default, rename = "become")]
    become_root: bool,
    host_key: Option<Spanned<String>>,
    #[serde(default)]
    hypervisor: HypervisorKind,
    snippets_storage: Option<Spanned<String>>,
    capacity: Option<Spanned<CapacityDoc>>,
    oob: Option<Oob>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    vars: VarsDoc,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VmDoc {
    host: Spanned<String>,
    recover_to: Option<Spanned<String>>,
    description: Option<String>,
    address: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<String>,
    identity_file: Option<String>,
    #[serde(default, rename = "become")]
    become_root: bool,
    host_key: Option<Spanned<String>>,
    vcpus: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    #[serde(default)]
    disks: Vec<Spanned<Disk>>,
    network: Option<VmNetworkDoc>,
    image: Option<Spanned<String>>,
    #[serde(default = "yes")]
    start_at_boot: bool,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    vars: VarsDoc,
}

/// A VM's `network:` as written: every value keeps its place, for the checks of
/// [`super::values`].
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VmNetworkDoc {
    bridge: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    description: Option<String>,
    #[serde(default)]
    vars: VarsDoc,
}

/// The result of reading an inventory: the model, or every problem found.
pub struct Loaded {
    pub result: Result<Inventory, Vec<Diagnostic>>,
    /// File texts, to print excerpts under diagnostics.
    pub sources: Sources,
}

/// Reads every `*.yml` / `*.yaml` file of `dir` (sorted by name), merges and checks them.
pub fn load(dir: &Path) -> Loaded {
    let mut sources = Sources::default();
    let mut diags = Vec::new();
    let files = match list_files(dir) {
        Ok(files) => files,
        Err(d) => {
            return Loaded {
                result: Err(vec![d]),
                sources,
            }
        }
    };
    let mut docs = Vec::new();
    // Files that do not read (syntax, type, encoding): their data is missing, so every
    // reference to a name they declare would be reported too. Those come first, and the
    // checks across files wait until every file reads.
    let mut unread = Vec::new();
    for file in &files {
        match read_file(file, &mut sources) {
            Ok(doc) => docs.push((file.clone(), doc)),
            Err(d) => unread.push(d),
        }
    }
    let known_hosts = read_known_hosts(dir, &mut diags);
    let mut inv = merge(dir, docs, &mut diags);
    inv.known_hosts = known_hosts;
    if unread.is_empty() {
        check::check(&inv, &mut diags);
    }
    if diags.is_empty() && unread.is_empty() {
        super::recovery::apply(&mut inv);
        reach_vms_through_their_host(&mut inv);
    }
    let by_place = |a: &Diagnostic, b: &Diagnostic| {
        (&a.place.file, a.place.line, a.place.column).cmp(&(
            &b.place.file,
            b.place.line,
            b.place.column,
        ))
    };
    unread.sort_by(by_place);
    diags.sort_by(by_place);
    for d in &mut unread {
        let later = "references between files are checked once every file reads";
        d.help = Some(match d.help.take() {
            Some(h) => format!("{h} ({later})"),
            None => later.to_string(),
        });
    }
    unread.append(&mut diags);
    let diags = unread;
    Loaded {
        result: if diags.is_empty() {
            Ok(inv)
        } else {
            Err(diags)
        },
        sources,
    }
}

/// A VM without `address:` is reached at its `network.address` (prefix length dropped), through
/// its hypervisor as SSH jump host (`user@address:port` of the host).
fn reach_vms_through_their_host(inv: &mut Inventory) {
    for vm in inv.vms.values_mut() {
        if vm.ssh.address.is_some() {
            continue;
        }
        let Some(ip) = vm.network.as_ref().and_then(|n| n.address.as_deref()) else {
            continue;
        };
        let Some(jump) = inv.hosts.get(vm.host.as_str()).and_then(|h| h.jump()) else {
            continue;
        };
        vm.ssh.address = Some(ip.split('/').next().unwrap_or(ip).to_string());
        vm.ssh.jump = Some(jump);
    }
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostic::new(
            Place::file(dir),
            format!("cannot read the inventory directory: {e}"),
        )
        .help("run picaops from the directory that holds `inventory/`, or pass `-i DIR` (or set PICAOPS_INVENTORY)")
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Diagnostic::new(
            Place::file(dir),
            "the inventory directory holds no *.yml or *.yaml file",
        )
        .help("start from the example: copy picaops's `inventory/` directory and edit it"));
    }
    Ok(files)
}

/// Parses one file (see `crate::yaml::read`); an empty file is an error with advice.
fn read_file(file: &Path, sources: &mut Sources) -> Result<FileDoc, Diagnostic> {
    match yaml::read::<FileDoc>(file, sources)? {
        Some(doc) => Ok(doc),
        None => Err(Diagnostic::new(
            Place::new(file, 1, 1),
            "this inventory file is empty",
        )
        .help("add a section (sites:, hosts:, vms:, groups:, vars:, services:, access:, secrets:, backups:, recovery:) or delete the file")),
    }
}

/// Reads `known_hosts` beside the YAML files: keys pinned by `picaops inventory pin`.
fn read_known_hosts(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let path = dir.join("known_hosts");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            diags.push(Diagnostic::new(
                Place::file(&path),
                format!("cannot read pinned host keys: {e}"),
            ));
            Vec::new()
        }
    }
}

fn located<T>(file: &Path, s: Spanned<T>) -> Located<T> {
    Located {
        place: place_of(file, &s),
        value: s.value,
    }
}

fn vars(file: &Path, doc: VarsDoc) -> IndexMap<String, Var> {
    doc.into_iter()
        .map(|(k, v)| {
            let place = place_of(file, &k.0);
            (
                k.0.value,
                Var {
                    value: v.value,
                    place,
                },
            )
        })
        .collect()
}

fn resolve_path(file: &Path, path: Option<String>) -> Option<PathBuf> {
    let path = PathBuf::from(path?);
    if path.is_absolute() {
        return Some(path);
    }
    if let Some(rest) = path.to_str().and_then(|p| p.strip_prefix("~/")) {
        if let Some(home) = std::env::var_os("HOME") {
            return Some(PathBuf::from(home).join(rest));
        }
    }
    let base = file.parent().unwrap_or(Path::new("."));
    Some(base.join(path))
}

/// Something declared at a place in a file: what a "declared twice" error points at.
trait Declared {
    fn declared_at(&self) -> &Place;
}

macro_rules! declared {
    ($($t:ty),*) => {$(
        impl Declared for $t {
            fn declared_at(&self) -> &Place {
                &self.place
            }
        }
    )*};
}
declared!(Site, Host, Vm, Group, Service, Var);

/// Adds `value` under its name, or reports the name as declared twice (across files too).
fn insert_unique<T: Declared>(
    map: &mut IndexMap<String, T>,
    kind: &str,
    name: String,
    value: T,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(first) = map.get(&name) {
        diags.push(
            Diagnostic::new(
                value.declared_at().clone(),
                format!("{kind} `{name}` is declared twice"),
            )
            .note(first.declared_at().clone(), "first declared here")
            .help("names must be unique across all inventory files: remove or rename one"),
        );
        return;
    }
    map.insert(name, value);
}

fn merge(dir: &Path, docs: Vec<(PathBuf, FileDoc)>, diags: &mut Vec<Diagnostic>) -> Inventory {
    let mut inv = Inventory {
        dir: dir.to_path_buf(),
        sites: IndexMap::new(),
        hosts: IndexMap::new(),
        vms: IndexMap::new(),
        groups: IndexMap::new(),
        vars: IndexMap::new(),
        services: IndexMap::new(),
        access: None,
        secrets: Default::default(),
        backups: IndexMap::new(),
        known_hosts: Vec::new(),
        recovery: None,
    };
    let mut recovery_place: Option<Place> = None;
    let mut access_place: Option<Place> = None;
    let mut secrets_place: Option<Place> = None;
    let mut backup_places: IndexMap<String, Place> = IndexMap::new();
    for (file, doc) in docs {
        let f = file.as_path();
        for (name, s) in doc.sites.unwrap_or_default() {
            let place = place_of(f, &name.0);
            let site = Site {
                name: name.0.value.clone(),
                description: s.description,
                backs_up_to: s.backs_up_to.map(|b| located(f, b)),
                recovery: s
                    .recovery
                    .map(|r| SiteRecovery {
                        site: r.site.map(|x| located(f, x)),
                        hypervisor: r.hypervisor.map(|x| located(f, x)),
                        host: r.host.map(|x| located(f, x)),
                    })
                    .unwrap_or_default(),
                vars: vars(f, s.vars),
                place,
            };
            insert_unique(&mut inv.sites, "site", name.0.value, site, diags);
        }
        for (name, h) in doc.hosts.unwrap_or_default() {
            let place = place_of(f, &name.0);
            check_port(f, h.port.as_ref(), diags);
            if let Some(st) = &h.snippets_storage {
                snippets_storage(f, st, h.hypervisor, diags);
            }
            let host = Host {
                name: name.0.value.clone(),
                site: located(f, h.site),
                description: h.description,
                ssh: Ssh {
                    address: Some(h.address.value),
                    port: h.port.map(|p| p.value),
                    user: h.user,
                    identity_file: resolve_path(f, h.identity_file),
                    become_root: h.become_root,
                    host_key: h.host_key.map(|k| located(f, k)),
                    jump: None,
                },
                hypervisor: h.hypervisor,
                snippets_storage: h.snippets_storage.map(|s| s.value),
                capacity: h.capacity.map(|c| capacity(f, c, diags)),
                oob: h.oob,
                groups: h.groups.into_iter().map(|g| located(f, g)).collect(),
                vars: vars(f, h.vars),
                place,
            };
            insert_unique(&mut inv.hosts, "host", name.0.value, host, diags);
        }
        for (name, v) in doc.vms.unwrap_or_default() {
            let place = place_of(f, &name.0);
            let memory = v.memory.as_ref().and_then(|m| match parse_size(&m.value) {
                Ok(bytes) => Some(bytes),
                Err(why) => {
                    diags.push(
                        Diagnostic::new(
                            place_of(f, m),
                            format!("`{}` is not a size: {why}", m.value),
                        )
                        .help("write a number and a unit: 512MiB, 8GiB, 1TiB"),
                    );
                    None
                }
            });
            for disk in &v.disks {
                if let Some(Err(why)) = disk.value.pool.as_deref().map(values::check_pool) {
                    diags.push(
                        Diagnostic::new(
                            place_of(f, disk),
                            format!(
                                "`{}` cannot be a VM's storage pool: {why}",
                                values::shown(disk.value.pool.as_deref().unwrap_or_default())
                            ),
                        )
                        .help("the name of a storage pool on the hypervisor (`virsh pool-list`, `pvesm status`): local-lvm, default"),
                    );
                }
                if let Err(why) = parse_size(&disk.value.size) {
                    diags.push(
                        Diagnostic::new(
                            place_of(f, disk),
                            format!("disk size `{}` is not a size: {why}", disk.value.size),
                        )
                        .help("write a number and a unit: 40GiB, 1TiB"),
                    );
                }
            }
            check_port(f, v.port.as_ref(), diags);
            if let Some(vcpus) = v.vcpus.as_ref().filter(|c| c.value == 0) {
                diags.push(
                    Diagnostic::new(
                        place_of(f, vcpus),
                        format!("VM `{}` has 0 vCPUs", name.0.value),
                    )
                    .help("give it at least 1"),
                );
            }
            let vm = Vm {
                name: name.0.value.clone(),
                host: located(f, v.host),
                recover_to: v.recover_to.map(|r| located(f, r)),
                moved_from: None,
                description: v.description,
                ssh: Ssh {
                    address: v.address.map(|a| a.value),
                    port: v.port.map(|p| p.value),
                    user: v.user,
                    identity_file: resolve_path(f, v.identity_file),
                    become_root: v.become_root,
                    host_key: v.host_key.map(|k| located(f, k)),
                    jump: None,
                },
                vcpus: v.vcpus.map(|c| c.value),
                memory,
                disks: v.disks.into_iter().map(|d| d.value).collect(),
                network: v.network.map(|n| vm_network(f, n, diags)),
                image: v.image.map(|i| {
                    check_value(f, &i, values::check_image, "image", "the name of a base image (libvirt) or template (Proxmox): letters, digits, . _ : / -", diags);
                    i.value
                }),
                start_at_boot: v.start_at_boot,
                groups: v.groups.into_iter().map(|g| located(f, g)).collect(),
                vars: vars(f, v.vars),
                place,
            };
            insert_unique(&mut inv.vms, "VM", name.0.value, vm, diags);
        }
        for (name, g) in doc.groups.unwrap_or_default() {
            let place = place_of(f, &name.0);
            let group = Group {
                name: name.0.value.clone(),
                description: g.description,
                vars: vars(f, g.vars),
                place,
            };
            insert_unique(&mut inv.groups, "group", name.0.value, group, diags);
        }
        for (name, var) in vars(f, doc.vars.unwrap_or_default()) {
            insert_unique(&mut inv.vars, "variable", name, var, diags);
        }
        for (name, s) in doc.services.unwrap_or_default() {
            let place = place_of(f, &name.0);
            let read = s.read(f, &name.0, diags);
            let service = Service {
                name: name.0.value.clone(),
                host: read.host,
                recover_to: read.recover_to,
                moved_from: None,
                description: read.description,
                deploy: read.deploy,
                place,
            };
            insert_unique(&mut inv.services, "service", name.0.value, service, diags);
        }
        if let Some(access) = doc.access {
            let place = place_of(f, &access);
            if let Some(first) = &access_place {
                diags.push(once_only(place, first, "access"));
            } else {
                access_place = Some(place.clone());
                inv.access = access.value.resolve(f, place, diags);
            }
        }
        if let Some(secrets) = doc.secrets {
            let place = place_of(f, &secrets);
            if let Some(first) = &secrets_place {
                diags.push(once_only(place, first, "secrets"));
            } else {
                secrets_place = Some(place.clone());
                let dir = f.parent().unwrap_or(Path::new("."));
                match secrets.value.resolve(dir) {
                    Ok(store) => inv.secrets = store,
                    Err(e) => diags.push(Diagnostic::new(place, e.to_string())),
                }
            }
        }
        for (name, job) in doc.backups.unwrap_or_default() {
            let place = place_of(f, &name.0);
            if let Some(first) = backup_places.get(&name.0.value) {
                diags.push(
                    Diagnostic::new(
                        place,
                        format!("backup job `{}` is declared twice", name.0.value),
                    )
                    .note(first.clone(), "first declared here"),
                );
                continue;
            }
            backup_places.insert(name.0.value.clone(), place);
            let job = crate::sections::backup::BackupJob::from_doc(f, &name.0, job, diags);
            inv.backups.insert(name.0.value, job);
        }
        if let Some(recovery) = doc.recovery {
            let place = place_of(f, &recovery);
            if let Some(first) = &recovery_place {
                diags.push(once_only(place, first, "recovery"));
            } else {
                recovery_place = Some(place.clone());
                inv.recovery = Some(recovery.value.read(f, place, diags));
            }
        }
    }
    inv
}

/// A hypervisor's `capacity:`, sizes parsed.
fn capacity(file: &Path, doc: Spanned<CapacityDoc>, diags: &mut Vec<Diagnostic>) -> Capacity {
    let place = place_of(file, &doc);
    let doc = doc.value;
    let mut size = |s: Option<Spanned<String>>| {
        let s = s?;
        match parse_size(&s.value) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                diags.push(
                    Diagnostic::new(
                        place_of(file, &s),
                        format!("`{}` is not a size: {why}", s.value),
                    )
                    .help("write a number and a unit: 64GiB, 2TiB"),
                );
                None
            }
        }
    };
    Capacity {
        vcpus: doc.vcpus.map(|v| v.value),
        memory: size(doc.memory),
        disk: size(doc.disk),
        place,
    }
}

/// Reports `value` at its place when `check` refuses it.
fn check_value<T>(
    file: &Path,
    value: &Spanned<String>,
    check: impl Fn(&str) -> Result<T, values::ValueError>,
    what: &str,
    help: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if let Err(why) = check(&value.value) {
        diags.push(
            Diagnostic::new(
                place_of(file, value),
                format!(
                    "`{}` cannot be a VM's {what}: {why}",
                    values::shown(&value.value)
                ),
            )
            .help(help.to_string()),
        );
    }
}

/// A Proxmox hypervisor's `snippets_storage:`: a storage id, on a Proxmox host only.
fn snippets_storage(
    file: &Path,
    value: &Spanned<String>,
    kind: HypervisorKind,
    diags: &mut Vec<Diagnostic>,
) {
    if kind != HypervisorKind::Proxmox {
        diags.push(
            Diagnostic::new(
                place_of(file, value),
                "`snippets_storage:` is for `hypervisor: proxmox` hosts only".to_string(),
            )
            .help("remove it, or set `hypervisor: proxmox` if this host runs Proxmox VE"),
        );
    } else if let Err(why) = values::check_pool(&value.value) {
        diags.push(
            Diagnostic::new(
                place_of(file, value),
                format!(
                    "`{}` cannot be a Proxmox storage: {why}",
                    values::shown(&value.value)
                ),
            )
            .help("the id of a storage that allows snippets (`pvesm status --content snippets`): local"),
        );
    }
}

/// Checks each network value for what it is and keeps the text.
fn vm_network(file: &Path, doc: VmNetworkDoc, diags: &mut Vec<Diagnostic>) -> VmNetwork {
    if let Some(b) = &doc.bridge {
        let help = "the name of a bridge on the hypervisor (`ip link` shows them): vmbr0, br0";
        check_value(file, b, values::check_bridge, "bridge", help, diags);
    }
    if let Some(a) = &doc.address {
        let help = "an IP address with its prefix length: 192.0.2.10/24, 2001:db8::10/64";
        check_value(file, a, values::check_ip_or_cidr, "address", help, diags);
    }
    if let Some(g) = &doc.gateway {
        let help = "the IP address of the router, without a prefix length: 192.0.2.1";
        check_value(file, g, values::check_ip, "gateway", help, diags);
    }
    for d in &doc.dns {
        let help = "IP addresses of DNS resolvers: [192.0.2.1, 2001:db8::53]";
        check_value(file, d, values::check_ip, "DNS server", help, diags);
    }
    VmNetwork {
        bridge: doc.bridge.map(|b| b.value),
        address: doc.address.map(|a| a.value),
        gateway: doc.gateway.map(|g| g.value),
        dns: doc.dns.into_iter().map(|d| d.value).collect(),
    }
}

fn check_port(file: &Path, port: Option<&Spanned<u16>>, diags: &mut Vec<Diagnostic>) {
    if let Some(port) = port.filter(|p| p.value == 0) {
        diags.push(
            Diagnostic::new(place_of(file, port), "port 0 is not a usable SSH port")
                .help("use 22 or the port sshd listens on"),
        );
    }
}

/// Parses `8GiB`, `512MiB`, `1TiB`, `80G` (binary units) into bytes.
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "it must start with a whole number")?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err("unknown unit (use KiB, MiB, GiB or TiB)"),
    };
    number.checked_mul(1u64 << shift).ok_or("too large")
}

fn once_only(place: Place, first: &Place, section: &str) -> Diagnostic {
    Diagnostic::new(place, format!("the `{section}:` section is declared twice"))
        .note(first.clone(), "first declared here")
        .help(format!("keep one `{section}:` section in one file"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("8 gigs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
