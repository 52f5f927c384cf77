//! Modules: what a task can ensure on a host (files, packages, accounts, units, commands).
//!
//! Every module follows one lifecycle: a typed desired state ([`Resource`], parsed from the
//! rendered task options), a *probe* (shell lines appended to the host's one read script), a
//! *diff* of the probed state against the desired one ([`Planned`]: an action, details, a content
//! diff and the shell operations that would make it so). Modules never talk to a host and never
//! print: the engine (`crate::converge`) batches their probes and operations into one script per
//! round trip.

pub mod accounts;
pub mod command;
pub mod files;
pub mod probe;
pub mod systemd;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

pub use probe::{parse_probe, HostState, PackageState, StepState};

/// The shell functions every probe and apply script starts with.
pub const PRELUDE: &str = include_str!("prelude.sh");

/// What a module accepts, for checking playbooks before anything runs.
#[derive(Debug)]
pub struct ModuleSpec {
    pub name: &'static str,
    pub options: &'static [&'static str],
    /// Each inner list: at least one of these options must be given.
    pub required: &'static [&'static [&'static str]],
    /// Accepts a plain string instead of options (`command: "ls -l"`).
    pub free_form: bool,
}

pub static SPECS: &[ModuleSpec] = &[
    ModuleSpec {
        name: "file",
        options: &["path", "state", "mode", "owner", "group", "src"],
        required: &[&["path"]],
        free_form: false,
    },
    ModuleSpec {
        name: "copy",
        options: &["dest", "content", "src", "mode", "owner", "group"],
        required: &[&["dest"], &["content", "src"]],
        free_form: false,
    },
    ModuleSpec {
        name: "template",
        options: &["src", "dest", "mode", "owner", "group"],
        required: &[&["src"], &["dest"]],
        free_form: false,
    },
    ModuleSpec {
        name: "line",
        options: &[
            "path", "line", "regexp", "state", "create", "mode", "owner", "group",
        ],
        required: &[&["path"]],
        free_form: false,
    },
    ModuleSpec {
        name: "package",
        options: &["name", "state", "update_cache"],
        required: &[&["name"]],
        free_form: false,
    },
    ModuleSpec {
        name: "user",
        options: &[
            "name",
            "uid",
            "group",
            "groups",
            "shell",
            "home",
            "comment",
            "system",
            "create_home",
            "state",
        ],
        required: &[&["name"]],
        free_form: false,
    },
    ModuleSpec {
        name: "group",
        options: &["name", "gid", "system", "state"],
        required: &[&["name"]],
        free_form: false,
    },
    ModuleSpec {
        name: "unit",
        options: &["name", "content", "src", "enabled", "state"],
        required: &[&["name"]],
        free_form: false,
    },
    ModuleSpec {
        name: "service",
        options: &["name", "state", "enabled"],
        required: &[&["name"]],
        free_form: false,
    },
    ModuleSpec {
        name: "command",
        options: &["cmd", "argv", "chdir", "creates", "removes", "unless"],
        required: &[&["cmd", "argv"]],
        free_form: true,
    },
    ModuleSpec {
        name: "shell",
        options: &["cmd", "chdir", "creates", "removes", "unless"],
        required: &[&["cmd"]],
        free_form: true,
    },
];

pub fn spec(name: &str) -> Option<&'static ModuleSpec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Ownership and permissions a task asks for; `None` leaves what is there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A module call with every option rendered and checked: the desired state of one thing.
#[derive(Clone, Debug)]
pub enum Resource {
    File(files::FileRes),
    Content(files::ContentRes),
    Line(files::LineRes),
    Package(systemd::PackageRes),
    User(accounts::UserRes),
    Group(accounts::GroupRes),
    Unit(systemd::UnitRes),
    Service(systemd::ServiceRes),
    Command(command::CommandRes),
}

/// Where a `copy`/`template`/`unit` gets its bytes, resolved by the engine before parsing.
pub struct Sources<'a> {
    /// Reads a local file for `copy: src=` (relative to the playbook's `files/`).
    pub copy_src: &'a dyn Fn(&str) -> Result<Vec<u8>, SourceError>,
    /// Renders a template file for `template: src=` / `unit: src=`.
    pub template_src: &'a dyn Fn(&str) -> Result<Vec<u8>, SourceError>,
}

/// Why the `src:` of a `copy`/`template`/`unit` gives no bytes (on the workstation).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An absolute `src:` that is no file.
    #[error("{src} does not exist on this workstation")]
    Missing { src: String },
    /// A relative `src:` found in neither place looked in.
    #[error("{src} was not found: looked in {} and {}", .looked[0].display(), .looked[1].display())]
    NotFound { src: String, looked: [PathBuf; 2] },
    #[error("cannot read {}: {error}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot read the template {}: {error}", .path.display())]
    TemplateUnreadable {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The template failed to render (the engine keeps the located diagnostic).
    #[error("the template {} did not render", .path.display())]
    NotRendered { path: PathBuf },
}

/// A `mode:` that is no octal mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`mode: {0}` is not an octal mode: write 3 or 4 octal digits, e.g. \"0644\" or \"0755\"")]
pub struct ModeError(pub String);

/// Why the desired state of a step cannot be reached safely from what the probe found, with
/// what to do. picaops never replaces one kind of thing (a directory) by another (a file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// `file` with `state: file` on a path that does not exist.
    #[error("{path} does not exist, and `state: file` only manages an existing file; use `state: touch` to create it empty, or `copy`")]
    FileMissing { path: String },
    #[error("{path} is a {kind}, not a link; picaops will not replace it. Move it away first if the link should replace it")]
    NotALink { path: String, kind: String },
    /// `file` wanting a directory where a file is, or the reverse.
    #[error("{path} is a {kind}, and this task wants a {want}; picaops will not replace one by the other. Remove it first (`state: absent`) if that is really meant")]
    WrongKind {
        path: String,
        kind: String,
        want: &'static str,
    },
    /// `copy`/`template` onto something that is no regular file.
    #[error("{path} is a {kind}, not a regular file; picaops will not replace it. Remove it first if a file should be there")]
    NotAFile { path: String, kind: String },
    /// `line` on a missing file, without `create: true`.
    #[error("{path} does not exist; add `create: true` to create it with this line")]
    NoLineFile { path: String },
    #[error("{path} is a {kind}, not a text file")]
    NotText { path: String, kind: String },
    #[error("{path} is larger than 4 MiB; `line` edits text files only")]
    TooLarge { path: String },
    #[error("{path} is not UTF-8 text; `line` edits text files only")]
    NotUtf8 { path: String },
    /// The probe output has no record of this step's `user` or `group`.
    #[error("the probe did not report this {0}")]
    Unprobed(&'static str),
}

/// An option that could not be used, and why (the engine adds the place).
#[derive(Debug, Clone)]
pub struct OptionError {
    pub option: Option<String>,
    pub message: String,
}

impl OptionError {
    fn new(option: &str, message: impl Into<String>) -> Self {
        OptionError {
            option: Some(option.to_string()),
            message: message.into(),
        }
    }
}

/// Rendered options of one task, read with typed accessors.
pub struct Opts<'a> {
    pub map: &'a BTreeMap<String, Value>,
}

impl Opts<'_> {
    fn str(&self, k: &str) -> Result<Option<String>, OptionError> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(OptionError::new(
                k,
                format!("`{k}` must be text, not {}", crate::human::kind(other)),
            )),
        }
    }
    fn req_str(&self, k: &str) -> Result<String, OptionError> {
        match self.str(k)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(OptionError::new(
                k,
                format!("`{k}` is required and must not be empty"),
            )),
        }
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, OptionError> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if boolean(v).is_some() => Ok(boolean(v)),
            Some(other) => Err(OptionError::new(
                k,
                format!(
                    "`{k}` must be true or false, not {}",
                    crate::human::kind(other)
                ),
            )),
        }
    }
    fn u32(&self, k: &str) -> Result<Option<u32>, OptionError> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| OptionError::new(k, format!("`{k}` must be a whole number"))),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                OptionError::new(k, format!("`{k}` must be a whole number, not {s:?}"))
            }),
            Some(_) => Err(OptionError::new(k, format!("`{k}` must be a whole number"))),
        }
    }
    fn list(&self, k: &str) -> Result<Option<Vec<String>>, OptionError> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
            )),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(OptionError::new(
                        k,
                        format!("`{k}` must be a list of names"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(OptionError::new(
                k,
                format!("`{k}` must be a list of names"),
            )),
        }
    }
    fn choice(&self, k: &str, allowed: &[&str], default: &str) -> Result<String, OptionError> {
        let v = self.str(k)?.unwrap_or_else(|| default.to_string());
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(OptionError::new(
                k,
                format!("`{k}: {v}` is not one of: {}", allowed.join(", ")),
            ))
        }
    }
    fn attrs(&self) -> Result<Attrs, OptionError> {
        let mode = match self.map.get("mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                parse_mode(s).map_err(|m| OptionError::new("mode", m.to_string()))?,
            ),
            Some(Value::Number(n)) => {
                return Err(OptionError::new(
                    "mode",
                    format!(
                        "`mode: {n}` is a number, and YAML numbers are decimal: write the mode as a quoted string, e.g. mode: \"0{n}\""
                    ),
                ))
            }
            Some(_) => return Err(OptionError::new("mode", "`mode` must be a quoted octal string such as \"0644\"")),
        };
        Ok(Attrs {
            mode,
            owner: self.str("owner")?,
            group: self.str("group")?,
        })
    }
}

/// A boolean as Ansible reads one: YAML's `true`/`false`, and the words `yes`/`no`, `on`/`off`,
/// `true`/`false` in any case (YAML 1.2 reads `yes` as text; Ansible playbooks are full of it,
/// and a template renders a boolean as `True`).
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" => Some(true),
            "no" | "off" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `"0644"`, `"644"`, `"u=rw,g=r,o=r"` is not supported: octal only, with a clear error.
pub fn parse_mode(s: &str) -> Result<u32, ModeError> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(ModeError(s.to_string()));
    }
    // At most 4 octal digits: always a u32.
    u32::from_str_radix(digits, 8).map_err(|_| ModeError(s.to_string()))
}

pub fn fmt_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Parses a module's rendered options into its desired state.
pub fn parse(
    module: &str,
    free: Option<&str>,
    opts: &BTreeMap<String, Value>,
    sources: &Sources<'_>,
) -> Result<Resource, OptionError> {
    let o = Opts { map: opts };
    Ok(match module {
        "file" => Resource::File(files::FileRes::parse(&o)?),
        "copy" => Resource::Content(files::ContentRes::parse_copy(&o, sources)?),
        "template" => Resource::Content(files::ContentRes::parse_template(&o, sources)?),
        "line" => Resource::Line(files::LineRes::parse(&o)?),
        "package" => Resource::Package(systemd::PackageRes::parse(&o)?),
        "user" => Resource::User(accounts::UserRes::parse(&o)?),
        "group" => Resource::Group(accounts::GroupRes::parse(&o)?),
        "unit" => Resource::Unit(systemd::UnitRes::parse(&o, sources)?),
        "service" => Resource::Service(systemd::ServiceRes::parse(&o)?),
        "command" | "shell" => Resource::Command(command::CommandRes::parse(module, free, &o)?),
        other => {
            return Err(OptionError {
                option: None,
                message: format!("unknown module `{other}`"),
            })
        }
    })
}

/// What a step will do (plan) or did (apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Unchanged,
    Create,
    Update,
    Delete,
    /// A command or an action that has no state (restart): it runs.
    Run,
    /// Not done: `when` was false, a `creates`/`unless` guard holds, or a handler nobody notified.
    Skip,
    /// Cannot be known before earlier tasks run (they registered a result it reads).
    Unknown,
}

impl Action {
    /// Does this action change the host (and notify handlers)?
    pub fn changes(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Delete | Action::Run
        )
    }

    pub fn word(self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Run => "run",
            Action::Skip => "skip",
            Action::Unknown => "unknown",
        }
    }
}

/// A file's content before and after, for the plan's diff.
#[derive(Clone, Debug)]
pub struct ContentChange {
    pub path: String,
    /// `None`: the file does not exist yet, or its content was not fetched (too big).
    pub old: Option<Vec<u8>>,
    pub new: Vec<u8>,
}

/// One shell operation of an apply script. The engine orders them and batches packages.
#[derive(Clone, Debug)]
pub enum Op {
    /// A function call from the prelude with its arguments (already quoted), run by `step`.
    Call(String),
    /// Writes `content` to `path` atomically (`put`).
    Put {
        path: String,
        content: Vec<u8>,
        mode: u32,
        owner: Option<String>,
        group: Option<String>,
    },
    /// Packages to install and remove: merged with every other package op of the host.
    Packages {
        install: Vec<String>,
        remove: Vec<String>,
        update_cache: bool,
    },
    /// systemd must re-read unit files before the next systemctl call.
    UnitFileChanged,
    /// A systemctl call (preceded by a daemon-reload when a unit file changed before it).
    Systemctl(String),
    /// A command whose output is registered.
    Command(String),
    /// A command with `until` (the engine makes it from a `Command`): it reports its exit
    /// status and output and never stops the script; the engine checks `until` and retries.
    Attempt(String),
}

/// The result of diffing one step.
#[derive(Clone, Debug)]
pub struct Planned {
    pub action: Action,
    /// Short facts: "mode 0600 → 0644", "install htop", "creates /x exists".
    pub details: Vec<String>,
    pub content: Option<ContentChange>,
    pub ops: Vec<Op>,
}

impl Planned {
    pub fn unchanged() -> Self {
        Planned {
            action: Action::Unchanged,
            details: Vec::new(),
            content: None,
            ops: Vec::new(),
        }
    }

    fn with(action: Action, details: Vec<String>, ops: Vec<Op>) -> Self {
        Planned {
            action,
            details,
            content: None,
            ops,
        }
    }
}

impl Resource {
    /// A short name of the thing managed, for plans: a path, a package list, a unit.
    pub fn label(&self) -> String {
        match self {
            Resource::File(r) => r.path.clone(),
            Resource::Content(r) => r.path.clone(),
            Resource::Line(r) => r.path.clone(),
            Resource::Package(r) => r.names.join(", "),
            Resource::User(r) => format!("user {}", r.name),
            Resource::Group(r) => format!("group {}", r.name),
            Resource::Unit(r) => r.name.clone(),
            Resource::Service(r) => r.name.clone(),
            Resource::Command(r) => r.label(),
        }
    }

    /// Appends this step's probe lines (step `i`) to the read script.
    pub fn probe(
        &self,
        i: usize,
        script: &mut String,
        packages: &mut Vec<String>,
        candidates: &mut Vec<String>,
    ) {
        match self {
            Resource::File(r) => r.probe(i, script),
            Resource::Content(r) => r.probe(i, script),
            Resource::Line(r) => r.probe(i, script),
            Resource::Package(r) => r.probe(packages, candidates),
            Resource::User(r) => r.probe(i, script),
            Resource::Group(r) => r.probe(i, script),
            Resource::Unit(r) => r.probe(i, script),
            Resource::Service(r) => r.probe(i, script),
            Resource::Command(r) => r.probe(i, script),
        }
    }

    /// Compares the probed state with the desired one. `Err`: the desired state cannot be
    /// reached safely (a directory where a file should go...), with what to do.
    pub fn diff(&self, state: &StepState, host: &HostState) -> Result<Planned, DiffError> {
        match self {
            Resource::File(r) => r.diff(state),
            Resource::Content(r) => r.diff(state),
            Resource::Line(r) => r.diff(state),
            Resource::Package(r) => Ok(r.diff(&host.packages)),
            Resource::User(r) => r.diff(state),
            Resource::Group(r) => r.diff(state),
            Resource::Unit(r) => r.diff(state),
            Resource::Service(r) => Ok(r.diff(state)),
            Resource::Command(r) => Ok(r.diff(state)),
        }
    }

    /// Is this a command (its registered result is known only once it ran)?
    pub fn is_command(&self) -> bool {
        matches!(self, Resource::Command(_))
    }
}

/// Quotes one word for the scripts.
pub(crate) fn q(word: &str) -> String {
    crate::transport::quote::quote(word)
}

/// Ownership changes between what is there and what is asked, as details and `attrs` arguments.
pub(crate) fn attr_changes(
    want: &Attrs,
    have: &probe::Stat,
    details: &mut Vec<String>,
) -> Option<(String, String, String)> {
    let mut mode = String::new();
    let mut owner = String::new();
    let mut group = String::new();
    if let Some(m) = want.mode {
        if m != have.mode {
            details.push(format!("mode {} → {}", fmt_mode(have.mode), fmt_mode(m)));
            mode = format!("{m:o}");
        }
    }
    if let Some(o) = &want.owner {
        if !same_id(o, &have.user, have.uid) {
            details.push(format!("owner {} → {o}", have.user));
            owner = o.clone();
        }
    }
    if let Some(g) = &want.group {
        if !same_id(g, &have.group, have.gid) {
            details.push(format!("group {} → {g}", have.group));
            group = g.clone();
        }
    }
    (!mode.is_empty() || !owner.is_empty() || !group.is_empty()).then_some((mode, owner, group))
}

fn same_id(want: &str, name: &str, id: u32) -> bool {
    want == name || want.parse::<u32>().is_ok_and(|n| n == id)
}
