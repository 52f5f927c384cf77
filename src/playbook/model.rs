//! The checked playbook model: plays, tasks and handlers with the place each was written.
//! Nothing here touches YAML or renders templates.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde_json::Value;

use crate::diagnostic::Place;
use crate::inventory::{Located, Var};
use crate::modules::ModuleSpec;

/// One playbook file.
#[derive(Clone, Debug)]
pub struct Playbook {
    pub path: PathBuf,
    /// Where `templates/` and `files/` are looked up.
    pub dir: PathBuf,
    pub plays: Vec<Play>,
}

/// Tasks for the hosts a pattern selects.
#[derive(Clone, Debug)]
pub struct Play {
    pub name: String,
    pub place: Place,
    /// A `--limit`-style pattern: names, groups, sites, globs, `!exclusions`.
    pub hosts: Located<String>,
    /// `None`: the host's own `become` from the inventory.
    pub become_root: Option<bool>,
    pub vars: IndexMap<String, Var>,
    pub tags: Vec<String>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

/// One task (or handler): a module call with its keywords.
#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub place: Place,
    pub module: &'static ModuleSpec,
    pub module_place: Place,
    pub args: Args,
    /// An expression that must give a boolean.
    pub when: Option<Located<String>>,
    /// A list, or a template giving one; each element is `item`.
    pub loop_items: Option<Located<Value>>,
    pub register: Option<String>,
    pub notify: Vec<Located<String>>,
    pub tags: Vec<String>,
    pub become_root: Option<bool>,
    pub vars: IndexMap<String, Var>,
    /// Hide contents, diffs and command output of this task.
    pub no_log: bool,
    /// The task changes how people log in (sshd, access): apply checks the break-glass login
    /// before changing it, proves a fresh login works after, and puts it back if not.
    pub login_guard: bool,
    /// `until` / `retries` / `delay` (command tasks only).
    pub retry: Option<Retry>,
}

/// A command task run again until a condition on its registered result holds.
#[derive(Clone, Debug)]
pub struct Retry {
    /// An expression over the registered result (`result.rc == 0`) that must give a boolean.
    pub until: Located<String>,
    /// The task's `register` name: what `until` reads.
    pub register: String,
    /// How many more times the command may run after the first attempt (Ansible's default 3).
    pub retries: u32,
    /// Seconds between two attempts (Ansible's default 5).
    pub delay: u32,
}

/// A module's options as written.
#[derive(Clone, Debug)]
pub enum Args {
    /// `command: "ls -l /srv"`.
    Free(Located<String>),
    Map(IndexMap<String, Arg>),
}

#[derive(Clone, Debug)]
pub struct Arg {
    pub value: Value,
    /// Where the value is written (templates' error positions are shifted from here).
    pub place: Place,
}
