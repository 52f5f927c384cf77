//! From the inventory to the files of each Compose project, on the workstation, before any host
//! is contacted: the template rendered with the machine's and the service's variables, the
//! environment and secret files, their sha256, and the rules every deployment must pass (exact
//! image versions, no port published twice on a machine, every secret resolvable, the template
//! actually using the environment it is given).
//!
//! Secret values live only in `ProjectFile::content` of files marked secret; they never enter the
//! template context, a diagnostic or a `Debug` output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use super::config::{env_value_problem, Deploy};
use crate::diagnostic::{Diagnostic, Place, Sources};
use crate::inventory::{Inventory, Machine, Service};
use crate::playbook::template::{from_json_value, Templates};
use crate::secrets::{Secret, SecretError, SecretStore};

/// Where every project lives on its machine: `PROJECTS_DIR/NAME`.
pub const PROJECTS_DIR: &str = "/var/lib/picaops/services";
/// The environment file (`env:`), referenced by the template's `env_file:`.
pub const ENV_FILE: &str = "service.env";
/// The root-only environment file of secrets (`secrets:`).
pub const SECRETS_ENV_FILE: &str = "secrets.env";
/// The rendered Compose file.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// Directory of the root-only secret files (`secret_files:`).
pub const SECRETS_DIR: &str = "secrets";

/// One file of a project, relative to the project directory.
#[derive(Clone)]
pub struct ProjectFile {
    pub path: String,
    pub content: Vec<u8>,
    /// Holds secret values: never shown, compared by hash only.
    pub secret: bool,
    pub sha256: String,
}

impl std::fmt::Debug for ProjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectFile")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("secret", &self.secret)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl ProjectFile {
    fn new(path: impl Into<String>, content: Vec<u8>, secret: bool) -> Self {
        ProjectFile {
            path: path.into(),
            sha256: sha256(&content),
            content,
            secret,
        }
    }

    /// The text of a public file (for diffs); `None` for secret files.
    pub fn text(&self) -> Option<&str> {
        if self.secret {
            None
        } else {
            std::str::from_utf8(&self.content).ok()
        }
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a service's project must be on its machine.
#[derive(Clone, Debug)]
pub struct Project {
    pub service: String,
    pub machine: String,
    pub dir: String,
    /// compose.yaml, service.env, secrets.env, secrets/* (always all of them, possibly empty).
    pub files: Vec<ProjectFile>,
    /// Each Compose service (container) with its definition, for "what will be recreated".
    pub containers: BTreeMap<String, serde_json::Value>,
    /// Compose services using each env file (`service.env` / `secrets.env`).
    pub env_users: BTreeMap<String, BTreeSet<String>>,
    /// sha256 of each `NAME='value'` line of secrets.env, by name (to say which secret changed).
    pub secret_lines: BTreeMap<String, String>,
    pub data: Vec<String>,
    pub health: super::config::Health,
    /// `image` of each Compose service.
    pub images: BTreeMap<String, String>,
}

impl Project {
    pub fn file(&self, path: &str) -> Option<&ProjectFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// One sha256 over every file (path and content hash): equal fingerprints, equal projects.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            self.files
                .iter()
                .map(|f| (f.path.as_str(), f.sha256.as_str())),
        )
    }

    /// Values never to print (every secret value, for redacting logs and diffs).
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.files.iter().filter(|f| f.secret) {
            let text = String::from_utf8_lossy(&f.content);
            if f.path == SECRETS_ENV_FILE {
                for line in text.lines() {
                    if let Some((_, v)) = line.split_once('=') {
                        out.push(v.trim_matches('\'').to_string());
                    }
                }
            } else if let Some(first) = text.lines().next() {
                out.push(first.to_string());
            }
        }
        out.retain(|v| v.len() >= 3);
        out
    }
}

/// The fingerprint of a set of (path, sha256) pairs, in path order.
pub fn fingerprint<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.collect();
    files.sort();
    let mut h = Sha256::new();
    for (p, s) in files {
        h.update(format!("{p} {s}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// Resolves secrets once per name, remembering failures (each reported at every place using it).
struct SecretCache<'a> {
    store: &'a SecretStore,
    values: BTreeMap<String, Result<Secret, SecretError>>,
}

impl SecretCache<'_> {
    fn get(&mut self, name: &str) -> Result<Secret, &SecretError> {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| self.store.get(name))
            .as_ref()
            .map(Secret::clone)
    }
}

/// Renders every deployable service on the given machines (all when `machines` is `None`).
/// Every problem is a diagnostic; templates are added to `sources` for excerpts.
pub fn render_all(
    inv: &Inventory,
    machines: Option<&BTreeSet<String>>,
    templates: &Templates,
    sources: &mut Sources,
) -> Result<Vec<Project>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut secrets = SecretCache {
        store: &inv.secrets,
        values: BTreeMap::new(),
    };
    let mut projects = Vec::new();
    let mut places: Vec<Vec<PortUse>> = Vec::new();
    for service in inv.services.values() {
        let Some(deploy) = &service.deploy else {
            continue;
        };
        if machines.is_some_and(|m| !m.contains(service.host.as_str())) {
            continue;
        }
        let Some(machine) = inv.machine(&service.host) else {
            continue;
        };
        match render_one(
            inv,
            machine,
            service,
            deploy,
            templates,
            sources,
            &mut secrets,
        ) {
            Ok((project, ports)) => {
                projects.push(project);
                places.push(ports);
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    check_port_clashes(&projects, &places, &mut diags);
    if diags.is_empty() {
        Ok(projects)
    } else {
        Err(diags)
    }
}

/// A published host port and where the template publishes it.
#[derive(Clone, Debug)]
struct PortUse {
    ip: String,
    port: u32,
    protocol: String,
    container: String,
    place: Place,
}

fn render_one(
    inv: &Inventory,
    machine: Machine<'_>,
    service: &Service,
    deploy: &Deploy,
    templates: &Templates,
    sources: &mut Sources,
    secrets: &mut SecretCache<'_>,
) -> Result<(Project, Vec<PortUse>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let template_path = &deploy.compose.value;
    let source = std::fs::read_to_string(template_path).map_err(|e| {
        vec![Diagnostic::new(
            deploy.compose.place.clone(),
            format!(
                "cannot read the Compose template {}: {e}",
                template_path.display()
            ),
        )
        .help("check the path and the file's permissions")]
    })?;
    sources.add(template_path, &source);
    let dir = format!("{PROJECTS_DIR}/{}", service.name);
    let ctx = context(inv, machine, service, deploy, &dir);
    let rendered = templates.render_str(&source, &ctx).map_err(|e| {
        let place = Place::new(
            template_path,
            e.line.unwrap_or(0) as u64,
            e.column.unwrap_or(0) as u64,
        );
        vec![Diagnostic::new(
            place,
            format!("the Compose template of service `{}` does not render on `{}`: {}", service.name, machine.name(), e.message),
        )
        .note(deploy.compose.place.clone(), "the service names this template here")
        .help("templates see the machine's variables, the service's `vars:` and `service` (name, host, project_dir, env_file, secrets_env_file, data)")]
    })?;
    // The rendered file, parsed: its services, images and ports.
    let compose = match parse_compose(&rendered) {
        Ok(c) => c,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let place = map_place(&source, &rendered, line, column, template_path);
            return Err(vec![Diagnostic::new(
                place,
                format!(
                    "the Compose file rendered for service `{}` is not valid YAML: {}",
                    service.name,
                    e.without_snippet()
                ),
            )
            .help("check the template's indentation and quoting after rendering")]);
        }
    };
    if compose.services.is_empty() {
        diags.push(
            Diagnostic::new(
                Place::new(template_path, 1, 1),
                format!(
                    "the Compose file of service `{}` declares no `services:`",
                    service.name
                ),
            )
            .help("a Compose file lists its containers under `services:`"),
        );
    }
    let mut ports = Vec::new();
    let mut images = BTreeMap::new();
    for (name, svc) in &compose.services {
        let where_ = |s: &Spanned<serde_json::Value>| {
            map_place(
                &source,
                &rendered,
                s.referenced.line(),
                s.referenced.column(),
                template_path,
            )
        };
        match &svc.value.image {
            None => diags.push(
                Diagnostic::new(
                    map_place(&source, &rendered, svc.referenced.line(), svc.referenced.column(), template_path),
                    format!("container `{name}` of service `{}` has no `image:`", service.name),
                )
                .help("picaops deploys published images with an exact version (`image: mattermost/mattermost-team-edition:9.11.1`); build images elsewhere"),
            ),
            Some(image) => {
                let text = image.value.as_str().unwrap_or_default().to_string();
                if let Err(why) = check_image(&text) {
                    diags.push(
                        Diagnostic::new(where_(image), format!("image `{text}` of service `{}` {why}", service.name))
                            .note(service.place.clone(), "the service is declared here")
                            .help("pin an exact version: `name:1.2.3` (or a digest `name@sha256:…`); `latest` or no tag changes under your feet and cannot be rolled back"),
                    );
                }
                images.insert(name.clone(), text);
            }
        }
        for p in &svc.value.ports {
            match parse_port(&p.value) {
                Ok(list) => {
                    for (ip, port, protocol) in list {
                        ports.push(PortUse {
                            ip,
                            port,
                            protocol,
                            container: name.clone(),
                            place: where_(p),
                        })
                    }
                }
                Err(why) => diags.push(
                    Diagnostic::new(where_(p), format!("port `{}` of container `{name}`: {why}", p.value))
                        .help("write `HOST:CONTAINER` (`8080:80`, `127.0.0.1:8080:80`, `53:53/udp`) or the long form with `published:` and `target:`"),
                ),
            }
        }
    }
    // The environment must reach a container: the template has to use the files picaops writes.
    for (file, used, what) in [
        (ENV_FILE, !deploy.env.is_empty(), "env"),
        (SECRETS_ENV_FILE, !deploy.secrets.is_empty(), "secrets"),
    ] {
        if used && !rendered.contains(file) {
            diags.push(
                Diagnostic::new(
                    deploy.compose.place.clone(),
                    format!("service `{}` has `{what}:` but its Compose file never uses {file}", service.name),
                )
                .help(format!("add `env_file: [{file}]` (or `{{{{ service.{} }}}}`) to the containers that need it", if file == ENV_FILE { "env_file" } else { "secrets_env_file" })),
            );
        }
    }
    for name in deploy.secret_files.keys() {
        let rel = format!("{SECRETS_DIR}/{name}");
        if !rendered.contains(&rel) {
            diags.push(
                Diagnostic::new(
                    deploy.secret_files[name].place.clone(),
                    format!("secret file `{rel}` of service `{}` is never used by its Compose file", service.name),
                )
                .help(format!("mount it: top-level `secrets: {{ {name}: {{ file: ./{rel} }} }}` and `secrets: [{name}]` in the container")),
            );
        }
    }
    // Files: public ones first (shown in plans), then the secret ones.
    let mut env_text = String::new();
    for (k, v) in &deploy.env {
        env_text.push_str(&format!("{k}='{}'\n", v.value));
    }
    let mut secrets_text = String::new();
    let mut secret_lines = BTreeMap::new();
    for (k, name) in &deploy.secrets {
        match secrets.get(name) {
            Ok(value) => {
                if let Some(why) = env_value_problem(value.expose()) {
                    diags.push(
                        Diagnostic::new(
                            name.place.clone(),
                            format!("secret `{}` cannot go into an env file: {why}", name.value),
                        )
                        .help(
                            "deliver it as a file instead: move it to `secret_files:` and mount it",
                        ),
                    );
                    continue;
                }
                let line = format!("{k}='{}'", value.expose());
                secret_lines.insert(k.clone(), sha256(line.as_bytes()));
                secrets_text.push_str(&line);
                secrets_text.push('\n');
            }
            Err(why) => diags.push(unresolved(&name.place, &name.value, why, inv)),
        }
    }
    let mut files = vec![
        ProjectFile::new(COMPOSE_FILE, rendered.clone().into_bytes(), false),
        ProjectFile::new(ENV_FILE, env_text.into_bytes(), false),
        ProjectFile::new(SECRETS_ENV_FILE, secrets_text.into_bytes(), true),
    ];
    for (file, name) in &deploy.secret_files {
        match secrets.get(name) {
            Ok(value) => files.push(ProjectFile::new(
                format!("{SECRETS_DIR}/{file}"),
                format!("{}\n", value.expose()).into_bytes(),
                true,
            )),
            Err(why) => diags.push(unresolved(&name.place, &name.value, why, inv)),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let full: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap_or_default();
    let containers: BTreeMap<String, serde_json::Value> = full
        .get("services")
        .and_then(|s| s.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut env_users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, def) in &containers {
        let text = def
            .get("env_file")
            .map(|v| v.to_string())
            .unwrap_or_default();
        for file in [ENV_FILE, SECRETS_ENV_FILE] {
            if text.contains(file) {
                env_users
                    .entry(file.to_string())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
    Ok((
        Project {
            service: service.name.clone(),
            machine: machine.name().to_string(),
            dir,
            files,
            containers,
            env_users,
            secret_lines,
            data: deploy.data.iter().map(|d| d.value.clone()).collect(),
            health: deploy.health.clone(),
            images,
        },
        ports,
    ))
}

fn unresolved(place: &Place, name: &str, why: &SecretError, inv: &Inventory) -> Diagnostic {
    let store = match &inv.secrets {
        SecretStore::Pass { .. } => "the `pass` store",
        SecretStore::Files { .. } => "the secrets directory",
    };
    let why = why.to_string();
    let prefix = format!("secret `{name}`: ");
    let why = why.strip_prefix(&prefix).unwrap_or(&why);
    Diagnostic::new(
        place.clone(),
        format!("secret `{name}` cannot be resolved: {why}"),
    )
    .help(format!(
        "add it to {store} (the inventory's `secrets:` section says which), or fix the name; nothing was deployed"
    ))
}

/// The template context: the machine's variables, the service's `vars:` over them, `service`.
fn context(
    inv: &Inventory,
    machine: Machine<'_>,
    service: &Service,
    deploy: &Deploy,
    dir: &str,
) -> minijinja::Value {
    let mut map: BTreeMap<String, serde_json::Value> =
        crate::inventory::vars::resolve(inv, machine)
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect();
    map.insert("inventory_hostname".into(), machine.name().into());
    if let Some(site) = inv.site_of(machine) {
        map.insert("site".into(), site.name.clone().into());
    }
    if let Some(addr) = &machine.ssh().address {
        map.insert("address".into(), addr.clone().into());
    }
    for (k, v) in &deploy.vars {
        map.insert(k.clone(), v.value.clone());
    }
    map.insert(
        "service".into(),
        serde_json::json!({
            "name": service.name,
            "host": machine.name(),
            "project_dir": dir,
            "env_file": ENV_FILE,
            "secrets_env_file": SECRETS_ENV_FILE,
            "data": deploy.data.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
        }),
    );
    from_json_value(&serde_json::Value::Object(map.into_iter().collect()))
}

#[derive(Deserialize, Debug, Default)]
struct ComposeDoc {
    #[serde(default)]
    services: IndexMap<String, Spanned<ContainerDoc>>,
}

#[derive(Deserialize, Debug, Default)]
struct ContainerDoc {
    image: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    ports: Vec<Spanned<serde_json::Value>>,
}

fn parse_compose(text: &str) -> Result<ComposeDoc, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Option<ComposeDoc>>(text, options)
        .map(|d| d.unwrap_or_default())
}

/// Why an image reference has no exact version. The text follows the image's name: "image
/// `nginx` of service `web` has no version tag…".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("is empty")]
    Empty,
    #[error("has no version tag (Docker would take `latest`)")]
    NoTag,
    #[error("is tagged `latest`, not an exact version")]
    Latest,
    #[error("has a tag Compose would interpolate; write the version in the inventory")]
    Interpolated,
    #[error("is tagged `{0}`, a moving tag, not an exact version")]
    Moving(String),
}

/// Why a `ports:` entry of a Compose file cannot be read. The text follows the entry: "port
/// `x:80` of container `web`: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Neither a number, a string nor a map.
    #[error("not a port")]
    NotAPort,
    /// The long form's `published:` is neither a number nor a string.
    #[error("`published: {0}` is not a port")]
    Published(String),
    #[error("an IPv6 address in brackets must be followed by `:`")]
    Bracket,
    #[error("too many `:`")]
    TooManyColons,
    #[error("expected HOST:CONTAINER")]
    NotHostContainer,
    #[error("`{0}` is not a port number (1-65535)")]
    Number(String),
    /// Reversed, or more than 1000 ports.
    #[error("`{0}` is not a usable port range")]
    Range(String),
}

/// An image reference with an exact version: a tag that is not `latest` and names a version (it
/// has a digit), or a digest.
pub fn check_image(image: &str) -> Result<(), ImageError> {
    if image.trim().is_empty() {
        return Err(ImageError::Empty);
    }
    if image.contains("@sha256:") {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Err(ImageError::NoTag),
        Some((_, "latest")) => Err(ImageError::Latest),
        Some((_, tag)) if tag.contains("{{") || tag.contains('$') => Err(ImageError::Interpolated),
        Some((_, tag)) if !tag.chars().any(|c| c.is_ascii_digit()) => {
            Err(ImageError::Moving(tag.to_string()))
        }
        Some(_) => Ok(()),
    }
}

/// The host side of one `ports:` entry: (host ip, host port, protocol) for each published port.
/// An entry publishing no host port (`"80"`: Docker picks one) gives nothing.
fn parse_port(v: &serde_json::Value) -> Result<Vec<(String, u32, String)>, PortError> {
    use serde_json::Value;
    match v {
        Value::Number(_) => Ok(vec![]),
        Value::Object(m) => {
            let protocol = m
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_string();
            let ip = m
                .get("host_ip")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match m.get("published") {
                None => Ok(vec![]),
                Some(Value::Number(n)) => Ok(vec![(ip, n.as_u64().unwrap_or(0) as u32, protocol)]),
                Some(Value::String(s)) => Ok(range(s)?
                    .into_iter()
                    .map(|p| (ip.clone(), p, protocol.clone()))
                    .collect()),
                Some(other) => Err(PortError::Published(other.to_string())),
            }
        }
        Value::String(s) => {
            let (spec, protocol) = match s.rsplit_once('/') {
                Some((spec, proto)) => (spec, proto.to_string()),
                None => (s.as_str(), "tcp".to_string()),
            };
            // [ip:]host:container, the ip possibly in brackets (IPv6).
            let (ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
                let (ip, rest) = stripped.split_once("]:").ok_or(PortError::Bracket)?;
                (ip.to_string(), rest)
            } else {
                let parts: Vec<&str> = spec.split(':').collect();
                match parts.len() {
                    1 => return Ok(vec![]),
                    2 => (String::new(), spec),
                    3 => (parts[0].to_string(), &spec[parts[0].len() + 1..]),
                    _ => return Err(PortError::TooManyColons),
                }
            };
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() == 1 {
                return Ok(vec![]);
            }
            if parts.len() != 2 {
                return Err(PortError::NotHostContainer);
            }
            if parts[0].is_empty() {
                return Ok(vec![]);
            }
            Ok(range(parts[0])?
                .into_iter()
                .map(|p| (ip.clone(), p, protocol.clone()))
                .collect())
        }
        _ => Err(PortError::NotAPort),
    }
}

fn range(s: &str) -> Result<Vec<u32>, PortError> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| PortError::Number(t.to_string()))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b || b - a > 1000 {
                return Err(PortError::Range(s.to_string()));
            }
            Ok((a..=b).collect())
        }
        None => Ok(vec![num(s)?]),
    }
}

/// Two services (or two containers) of one machine publishing the same host port.
fn check_port_clashes(projects: &[Project], ports: &[Vec<PortUse>], diags: &mut Vec<Diagnostic>) {
    let mut seen: Vec<(&str, &str, &PortUse)> = Vec::new();
    for (project, uses) in projects.iter().zip(ports) {
        for u in uses {
            let clash = seen.iter().find(|(machine, _, other)| {
                *machine == project.machine
                    && other.port == u.port
                    && other.protocol == u.protocol
                    && (other.ip == u.ip
                        || [other.ip.as_str(), u.ip.as_str()]
                            .iter()
                            .any(|ip| ip.is_empty() || *ip == "0.0.0.0" || *ip == "::"))
            });
            match clash {
                Some((_, first_service, first)) => diags.push(
                    Diagnostic::new(
                        u.place.clone(),
                        format!(
                            "port {}/{} on `{}` is published twice: by `{}` (container {}) and by `{}` (container {})",
                            u.port, u.protocol, project.machine, first_service, first.container, project.service, u.container
                        ),
                    )
                    .note(first.place.clone(), "first published here")
                    .help("one port, one service per machine: change one of them, or route both through the reverse proxy (Traefik) by labels"),
                ),
                None => seen.push((&project.machine, &project.service, u)),
            }
        }
    }
}

/// Where a position in the rendered file comes from in the template. When rendering kept the
/// line count (substitutions only, the usual case), the same line; otherwise the template line
/// with the same text before any `{{`, else the start of the template.
fn map_place(template: &str, rendered: &str, line: u64, column: u64, file: &Path) -> Place {
    let (line, column) = (line as usize, column as usize);
    let t_lines: Vec<&str> = template.lines().collect();
    let r_lines: Vec<&str> = rendered.lines().collect();
    let r_line = r_lines.get(line.saturating_sub(1)).copied().unwrap_or("");
    let find_col = |t_line: &str| -> u64 {
        // The column of the same key in the template line.
        let r_prefix: String = r_line.chars().take(column.saturating_sub(1)).collect();
        if t_line.starts_with(&r_prefix) {
            column as u64
        } else {
            (t_line.len() - t_line.trim_start().len() + 1) as u64
        }
    };
    if t_lines.len() == r_lines.len() && line >= 1 {
        let t_line = t_lines.get(line - 1).copied().unwrap_or("");
        return Place::new(file, line as u64, find_col(t_line)).with_len(
            t_line
                .trim_end()
                .len()
                .saturating_sub(find_col(t_line) as usize - 1) as u64,
        );
    }
    // The same key (`image:`), at the same occurrence counted from the top.
    let key = match r_line.trim().split_once(':') {
        Some((k, _)) if !k.is_empty() && !k.contains([' ', '"', '\'']) => format!("{k}:"),
        _ => r_line.split('{').next().unwrap_or("").trim().to_string(),
    };
    if !key.is_empty() {
        let nth = r_lines[..line.saturating_sub(1).min(r_lines.len())]
            .iter()
            .filter(|l| l.trim().starts_with(key.as_str()))
            .count();
        if let Some((i, _)) = t_lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim().starts_with(key.as_str()))
            .nth(nth)
        {
            return Place::new(file, i as u64 + 1, find_col(t_lines[i]));
        }
    }
    Place::new(file, 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_need_an_exact_version() {
        assert!(check_image("mattermost/mattermost-team-edition:9.11.1").is_ok());
        assert!(check_image("registry.picasoft.net:5000/pica/etherpad:2.2.6").is_ok());
        assert!(check_image("postgres@sha256:0123abcd").is_ok());
        assert!(check_image("nginx")
            .unwrap_err()
            .to_string()
            .contains("no version tag"));
        assert!(check_image("nginx:latest")
            .unwrap_err()
            .to_string()
            .contains("latest"));
        assert!(check_image("registry:5000/nginx")
            .unwrap_err()
            .to_string()
            .contains("no version tag"));
        assert!(check_image("traefik:stable")
            .unwrap_err()
            .to_string()
            .contains("moving tag"));
    }

    #[test]
    fn published_ports() {
        let p = |v| parse_port(&v).unwrap();
        assert_eq!(p(json!("8080:80")), vec![("".into(), 8080, "tcp".into())]);
        assert_eq!(
            p(json!("127.0.0.1:53:53/udp")),
            vec![("127.0.0.1".into(), 53, "udp".into())]
        );
        assert_eq!(p(json!("80")), vec![]);
        assert_eq!(p(json!(80)), vec![]);
        assert_eq!(
            p(json!("[::1]:8080:80")),
            vec![("::1".into(), 8080, "tcp".into())]
        );
        assert_eq!(p(json!("9000-9001:9000-9001")).len(), 2);
        assert_eq!(
            p(json!({"target": 80, "published": "8081", "host_ip": "10.0.0.1"})),
            vec![("10.0.0.1".into(), 8081, "tcp".into())]
        );
        assert!(parse_port(&json!("x:80")).is_err());
    }

    #[test]
    fn places_follow_the_template_when_lines_are_kept() {
        let t = "services:\n  web:\n    image: \"web:{{ v }}\"\n";
        let r = "services:\n  web:\n    image: \"web:latest\"\n";
        let p = map_place(t, r, 3, 12, Path::new("t.j2"));
        assert_eq!((p.line, p.column), (3, 12));
        let t = "{% if x %}\nservices:\n{% endif %}\n  web:\n    image: web:{{ v }}\n";
        let r = "services:\n  web:\n    image: web:latest\n";
        let p = map_place(t, r, 3, 12, Path::new("t.j2"));
        assert_eq!(p.line, 5);
    }

    #[test]
    fn fingerprints_ignore_order() {
        let a = fingerprint([("a", "1"), ("b", "2")].into_iter());
        let b = fingerprint([("b", "2"), ("a", "1")].into_iter());
        assert_eq!(a, b);
        assert_ne!(a, fingerprint([("a", "1"), ("b", "3")].into_iter()));
    }
}
