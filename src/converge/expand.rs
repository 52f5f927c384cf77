//! From plays to steps: a host's variables, task selection (hosts, tags), `when`, loops and
//! option rendering, cut into segments that can be read in one round trip.
//!
//! A segment ends where a task reads a variable registered by an earlier task of the same
//! segment (its value exists only after that task ran), or where `become` changes. Nothing here
//! talks to a host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use minijinja::Value as JValue;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Place, Sources};
use crate::inventory::{self, Inventory, Machine};
use crate::modules::{self, Action, Resource, SourceError};
use crate::playbook::load::{strip_braces, template_place};
use crate::playbook::template::{from_json_value, is_strict_bool, TemplateError, Templates};
use crate::playbook::{Args, Play, Playbook, Task};

/// Everything expansion needs that is the same for every host.
pub struct Context<'a> {
    pub inventory: &'a Inventory,
    pub playbooks: &'a [Playbook],
    pub templates: &'a Templates,
    pub extra_vars: &'a BTreeMap<String, Value>,
    pub tags: &'a [String],
    pub skip_tags: &'a [String],
    /// Texts of playbooks and template files, for diagnostics' excerpts.
    pub sources: &'a Mutex<Sources>,
    groups: JValue,
    hostvars: JValue,
}

impl<'a> Context<'a> {
    pub fn new(
        inventory: &'a Inventory,
        playbooks: &'a [Playbook],
        templates: &'a Templates,
        extra_vars: &'a BTreeMap<String, Value>,
        tags: &'a [String],
        skip_tags: &'a [String],
        sources: &'a Mutex<Sources>,
    ) -> Self {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut hostvars = BTreeMap::new();
        for m in inventory.machines() {
            groups
                .entry("all".into())
                .or_default()
                .push(m.name().to_string());
            for g in m.groups() {
                groups
                    .entry(g.value.clone())
                    .or_default()
                    .push(m.name().to_string());
            }
            if let Some(site) = inventory.site_of(m) {
                groups
                    .entry(site.name.clone())
                    .or_default()
                    .push(m.name().to_string());
            }
            hostvars.insert(m.name().to_string(), machine_vars(inventory, m));
        }
        Context {
            inventory,
            playbooks,
            templates,
            extra_vars,
            tags,
            skip_tags,
            sources,
            groups: JValue::from_serialize(&groups),
            hostvars: JValue::from_iter(hostvars),
        }
    }

    /// The plays (playbook index, play index) that apply to `machine`, in order.
    pub fn plays_for(&self, machine: Machine<'_>) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (b, book) in self.playbooks.iter().enumerate() {
            for (p, play) in book.plays.iter().enumerate() {
                if inventory::select::pattern_matches(self.inventory, machine, &play.hosts) {
                    out.push((b, p));
                }
            }
        }
        out
    }
}

/// A machine's inventory variables plus the facts picaops knows without asking the host.
fn machine_vars(inv: &Inventory, m: Machine<'_>) -> JValue {
    let mut map: BTreeMap<String, JValue> = inventory::vars::resolve(inv, m)
        .into_iter()
        .map(|(k, v)| (k, from_json_value(&v.value)))
        .collect();
    map.insert("inventory_hostname".into(), JValue::from(m.name()));
    if let Some(site) = inv.site_of(m) {
        map.insert("site".into(), JValue::from(site.name.as_str()));
    }
    if let Some(addr) = &m.ssh().address {
        map.insert("address".into(), JValue::from(addr.as_str()));
    }
    map.insert(
        "group_names".into(),
        JValue::from_serialize(
            m.groups()
                .iter()
                .map(|g| g.value.as_str())
                .collect::<Vec<_>>(),
        ),
    );
    JValue::from_iter(map)
}

/// What is known of a registered variable.
#[derive(Clone, Debug)]
pub enum Registered {
    Known(Value),
    /// Registered by a step of the segment being built: known after it is read (or run).
    Pending,
    /// Known only once apply runs the task (plan mode).
    Unknown {
        by: String,
    },
}

/// One module call for one host (a task, or one item of a looped task, or a handler).
#[derive(Debug)]
pub struct Step {
    pub id: usize,
    /// (playbook, play, task) indexes; `handler` tells which list.
    pub at: (usize, usize, usize),
    pub handler: bool,
    pub name: String,
    pub place: Place,
    pub module: &'static str,
    /// The loop item, shown after the name.
    pub item: Option<String>,
    /// `None` when `preset` decides the step.
    pub resource: Option<Resource>,
    pub preset: Option<(Action, String)>,
    pub register: Option<String>,
    pub notify: Vec<String>,
    pub no_log: bool,
    pub login_guard: bool,
    pub become_root: bool,
    /// `until`/`retries`/`delay`: the command runs again until the condition holds.
    pub until: Option<Until>,
}

/// A step's retry settings, with the variables its task was expanded with.
#[derive(Debug)]
pub struct Until {
    pub until: crate::inventory::Located<String>,
    pub register: String,
    pub retries: u32,
    pub delay: u32,
    /// The task's variables (the registered result is added to them for each check).
    pub vars: std::collections::BTreeMap<String, minijinja::Value>,
}

/// Where expansion stands in a host's plays.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    /// Index into the host's plays.
    pub play: usize,
    pub task: usize,
    /// The play's handlers were expanded.
    pub handlers_done: bool,
}

/// Expands one host's plays, a segment at a time.
pub struct HostExpander<'a> {
    cx: &'a Context<'a>,
    pub machine: Machine<'a>,
    plays: Vec<(usize, usize)>,
    base: BTreeMap<String, JValue>,
    become_default: bool,
    pub cursor: Cursor,
    pub registers: HashMap<String, Registered>,
    next_id: usize,
}

impl<'a> HostExpander<'a> {
    pub fn new(cx: &'a Context<'a>, machine: Machine<'a>, become_default: bool) -> Self {
        let mut base: BTreeMap<String, JValue> = BTreeMap::new();
        let own = machine_vars(cx.inventory, machine);
        if let Ok(keys) = own.try_iter() {
            for k in keys {
                if let (Some(name), Ok(v)) = (k.as_str(), own.get_item(&k)) {
                    base.insert(name.to_string(), v);
                }
            }
        }
        base.insert("groups".into(), cx.groups.clone());
        base.insert("hostvars".into(), cx.hostvars.clone());
        HostExpander {
            cx,
            machine,
            plays: cx.plays_for(machine),
            base,
            become_default,
            cursor: Cursor::default(),
            registers: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn done(&self) -> bool {
        self.cursor.play >= self.plays.len()
    }

    fn play(&self, i: usize) -> (&'a Playbook, &'a Play, usize, usize) {
        let (b, p) = self.plays[i];
        let book = &self.cx.playbooks[b];
        (book, &book.plays[p], b, p)
    }

    fn selected(&self, play: &Play, task: &Task) -> bool {
        let tags: BTreeSet<&str> = play
            .tags
            .iter()
            .chain(&task.tags)
            .map(String::as_str)
            .collect();
        if self.cx.skip_tags.iter().any(|t| tags.contains(t.as_str())) {
            return false;
        }
        self.cx.tags.is_empty()
            || tags.contains("always")
            || self.cx.tags.iter().any(|t| tags.contains(t.as_str()))
    }

    /// Variables for a play: inventory and facts < play vars < registered < task vars < -e.
    fn play_ctx(&self, play: &Play) -> Result<BTreeMap<String, JValue>, Diagnostic> {
        let mut ctx = self.base.clone();
        for (k, v) in self.cx.extra_vars {
            ctx.insert(k.clone(), from_json_value(v));
        }
        for (name, var) in &play.vars {
            let rendered = self.render_value(&var.value, &ctx, &var.place)?;
            ctx.insert(name.clone(), from_json_value(&rendered));
        }
        for (name, reg) in &self.registers {
            if let Registered::Known(v) = reg {
                ctx.insert(name.clone(), from_json_value(v));
            }
        }
        for (k, v) in self.cx.extra_vars {
            ctx.insert(k.clone(), from_json_value(v));
        }
        Ok(ctx)
    }

    fn render_value(
        &self,
        v: &Value,
        ctx: &BTreeMap<String, JValue>,
        place: &Place,
    ) -> Result<Value, Diagnostic> {
        self.cx
            .templates
            .render_value(v, &JValue::from_iter(ctx.clone()))
            .map_err(|e| self.template_diag(place, &e, "while rendering"))
    }

    fn template_diag(&self, place: &Place, e: &TemplateError, what: &str) -> Diagnostic {
        let sources = self.cx.sources.lock().unwrap_or_else(|p| p.into_inner());
        let text = sources.text(&place.file).unwrap_or_default();
        let at = template_place(text, place, e.line, e.column);
        let mut d = Diagnostic::new(
            at,
            format!("{what} for {}: {}", self.machine.name(), e.message),
        );
        if e.kind == crate::playbook::template::TemplateErrorKind::Undefined {
            d.help = Some(format!(
                "`picaops inventory show {}` lists the variables this host has",
                self.machine.name()
            ));
        }
        d
    }

    /// Top-level variables a task reads (for segment cuts and early undefined checks).
    fn task_refs(&self, task: &Task) -> BTreeSet<String> {
        let t = self.cx.templates;
        let mut refs = t.referenced_vars(&task.name);
        if let Some(w) = &task.when {
            refs.extend(t.referenced_vars_expr(strip_braces(&w.value)));
        }
        if let Some(r) = &task.retry {
            let mut until = t.referenced_vars_expr(strip_braces(&r.until.value));
            until.remove(&r.register);
            refs.extend(until);
        }
        let mut strings = Vec::new();
        if let Some(l) = &task.loop_items {
            collect_strings(&l.value, &mut strings);
        }
        for v in task.vars.values() {
            collect_strings(&v.value, &mut strings);
        }
        match &task.args {
            Args::Free(s) => strings.push(s.value.clone()),
            Args::Map(m) => m
                .values()
                .for_each(|a| collect_strings(&a.value, &mut strings)),
        }
        for s in strings {
            refs.extend(t.referenced_vars(&s));
        }
        for k in task.vars.keys() {
            refs.remove(k);
        }
        refs.remove("item");
        refs
    }

    /// Expands every task before anything is contacted, taking each registered result as
    /// unknown (what `plan` checks first): the first error, if any.
    pub fn expand_all(&mut self) -> Result<(), Diagnostic> {
        loop {
            let steps = self.next_segment()?;
            if steps.is_empty() {
                return Ok(());
            }
            for s in steps {
                if let Some(r) = &s.register {
                    self.registers
                        .insert(r.clone(), Registered::Unknown { by: s.name.clone() });
                }
            }
        }
    }

    /// The next segment of steps. Empty when everything is expanded.
    pub fn next_segment(&mut self) -> Result<Vec<Step>, Diagnostic> {
        let mut steps: Vec<Step> = Vec::new();
        let mut become_of_segment: Option<bool> = None;
        while !self.done() {
            let (book, play, b, p) = self.play(self.cursor.play);
            let play_become = play.become_root.unwrap_or(self.become_default);
            let (list, handler) = if self.cursor.task < play.tasks.len() {
                (&play.tasks, false)
            } else if !self.cursor.handlers_done {
                (&play.handlers, true)
            } else {
                self.cursor = Cursor {
                    play: self.cursor.play + 1,
                    ..Cursor::default()
                };
                continue;
            };
            if handler {
                // Handlers are expanded together at the end of the play; whether each runs is
                // decided once the play's changes are known.
                for (h, task) in play.handlers.iter().enumerate() {
                    let become_root = task.become_root.unwrap_or(play_become);
                    if become_of_segment.is_some_and(|s| s != become_root) {
                        return Ok(steps);
                    }
                    if self.blocked(task) && !steps.is_empty() {
                        return Ok(steps);
                    }
                    become_of_segment = Some(become_root);
                    self.expand_task(book, play, (b, p, h), true, task, become_root, &mut steps)?;
                }
                self.cursor.handlers_done = true;
                continue;
            }
            let task = &list[self.cursor.task];
            if !self.selected(play, task) {
                self.cursor.task += 1;
                continue;
            }
            let become_root = task.become_root.unwrap_or(play_become);
            if !steps.is_empty()
                && (become_of_segment.is_some_and(|s| s != become_root) || self.blocked(task))
            {
                return Ok(steps);
            }
            become_of_segment = Some(become_root);
            self.expand_task(
                book,
                play,
                (b, p, self.cursor.task),
                false,
                task,
                become_root,
                &mut steps,
            )?;
            self.cursor.task += 1;
        }
        Ok(steps)
    }

    /// Does this task read a variable registered in the segment being built?
    fn blocked(&self, task: &Task) -> bool {
        self.task_refs(task)
            .iter()
            .any(|r| matches!(self.registers.get(r), Some(Registered::Pending)))
    }

    #[allow(clippy::too_many_arguments)]
    fn expand_task(
        &mut self,
        book: &Playbook,
        play: &Play,
        at: (usize, usize, usize),
        handler: bool,
        task: &Task,
        become_root: bool,
        steps: &mut Vec<Step>,
    ) -> Result<(), Diagnostic> {
        let mut make =
            |this: &mut Self, name: String, item: Option<String>, resource, preset, until| {
                let id = this.next_id;
                this.next_id += 1;
                steps.push(Step {
                    id,
                    at,
                    handler,
                    name,
                    place: task.place.clone(),
                    module: task.module.name,
                    item,
                    resource,
                    preset,
                    register: task.register.clone(),
                    notify: task.notify.iter().map(|n| n.value.clone()).collect(),
                    no_log: task.no_log,
                    login_guard: task.login_guard,
                    become_root,
                    until,
                });
            };
        // A task that reads a result known only at apply is itself unknown until apply.
        let unknown_by = self
            .task_refs(task)
            .iter()
            .find_map(|r| match self.registers.get(r) {
                Some(Registered::Unknown { by }) => Some(format!(
                    "it reads `{r}`, registered by \"{by}\", known only when apply runs that task"
                )),
                _ => None,
            });
        if let Some(reason) = unknown_by {
            make(
                self,
                task.name.clone(),
                None,
                None,
                Some((Action::Unknown, reason)),
                None,
            );
            if let Some(r) = &task.register {
                self.registers.insert(
                    r.clone(),
                    Registered::Unknown {
                        by: task.name.clone(),
                    },
                );
            }
            return Ok(());
        }
        let mut ctx = self.play_ctx(play)?;
        for (name, var) in &task.vars {
            let v = self.render_value(&var.value, &ctx, &var.place)?;
            ctx.insert(name.clone(), from_json_value(&v));
        }
        for (k, v) in self.cx.extra_vars {
            ctx.insert(k.clone(), from_json_value(v));
        }
        let items: Option<Vec<Value>> = match &task.loop_items {
            None => None,
            Some(l) => match self.render_value(&l.value, &ctx, &l.place)? {
                Value::Array(items) => Some(items),
                other => {
                    return Err(Diagnostic::new(
                        l.place.clone(),
                        format!(
                            "`loop` must give a list; for {} it gave {}",
                            self.machine.name(),
                            crate::human::kind(&other)
                        ),
                    ))
                }
            },
        };
        let runs: Vec<Option<Value>> = match items {
            None => vec![None],
            Some(items) => items.into_iter().map(Some).collect(),
        };
        for item in runs {
            let mut ctx = ctx.clone();
            if let Some(i) = &item {
                ctx.insert("item".into(), from_json_value(i));
            }
            let label = item.as_ref().map(item_label);
            let jctx = JValue::from_iter(ctx.clone());
            let name = self
                .cx
                .templates
                .render_str(&task.name, &jctx)
                .map_err(|e| {
                    self.template_diag(&task.place, &e, "while rendering the task name")
                })?;
            if let Some(when) = &task.when {
                let v = self
                    .cx
                    .templates
                    .eval_expr(strip_braces(&when.value), &jctx)
                    .map_err(|e| self.template_diag(&when.place, &e, "while evaluating `when`"))?;
                match is_strict_bool(&v) {
                    Some(true) => {}
                    Some(false) => {
                        make(
                            self,
                            name,
                            label,
                            None,
                            Some((Action::Skip, format!("when: {} is false", when.value))),
                            None,
                        );
                        continue;
                    }
                    None => {
                        return Err(Diagnostic::new(
                            when.place.clone(),
                            format!(
                                "`when: {}` gave {} for {}, not true or false",
                                when.value,
                                describe(&v),
                                self.machine.name()
                            ),
                        )
                        .help("`when` must be a boolean: compare (`x == \"yes\"`), test (`x is defined`), or convert explicitly with `| bool`"));
                    }
                }
            }
            let resource = self.resource(book, task, &ctx)?;
            let until = task.retry.as_ref().map(|r| Until {
                until: r.until.clone(),
                register: r.register.clone(),
                retries: r.retries,
                delay: r.delay,
                vars: ctx.clone(),
            });
            make(self, name, label, Some(resource), None, until);
        }
        if let Some(r) = &task.register {
            self.registers.insert(r.clone(), Registered::Pending);
        }
        Ok(())
    }

    fn resource(
        &self,
        book: &Playbook,
        task: &Task,
        ctx: &BTreeMap<String, JValue>,
    ) -> Result<Resource, Diagnostic> {
        let jctx = JValue::from_iter(ctx.clone());
        let (free, opts, places) = match &task.args {
            Args::Free(s) => {
                let text = self
                    .cx
                    .templates
                    .render_str(&s.value, &jctx)
                    .map_err(|e| self.template_diag(&s.place, &e, "while rendering"))?;
                (Some(text), BTreeMap::new(), HashMap::new())
            }
            Args::Map(map) => {
                let mut opts = BTreeMap::new();
                let mut places = HashMap::new();
                for (k, arg) in map {
                    let v = self.render_value(&arg.value, ctx, &arg.place)?;
                    opts.insert(k.clone(), v);
                    places.insert(k.clone(), arg.place.clone());
                }
                (None, opts, places)
            }
        };
        let template_error: Mutex<Option<Diagnostic>> = Mutex::new(None);
        let copy_src = |src: &str| -> Result<Vec<u8>, SourceError> {
            let path = find_local(&book.dir, "files", src)?;
            std::fs::read(&path).map_err(|error| SourceError::Unreadable { path, error })
        };
        let template_src = |src: &str| -> Result<Vec<u8>, SourceError> {
            let path = find_local(&book.dir, "templates", src)?;
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => return Err(SourceError::TemplateUnreadable { path, error }),
            };
            self.cx
                .sources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(&path, &text);
            self.cx
                .templates
                .render_file(&text, &jctx)
                .map(String::into_bytes)
                .map_err(|e| {
                    // A limit stop does not know where in the file it was: its start (the
                    // task that renders it is in a note).
                    let place = match (e.line, e.column) {
                        (Some(l), Some(c)) => Place::new(&path, l as u64, c as u64),
                        (Some(l), None) => Place::new(&path, l as u64, 1),
                        _ => Place::new(&path, 1, 1),
                    };
                    let mut d = Diagnostic::new(
                        place,
                        format!(
                            "in template {} for {}: {e}",
                            path.display(),
                            self.machine.name()
                        ),
                    );
                    d = d.note(
                        task.place.clone(),
                        format!("rendered by task `{}`", task.name),
                    );
                    *template_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
                    SourceError::NotRendered { path: path.clone() }
                })
        };
        let sources = modules::Sources {
            copy_src: &copy_src,
            template_src: &template_src,
        };
        modules::parse(task.module.name, free.as_deref(), &opts, &sources).map_err(|e| {
            if let Some(d) = template_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return d;
            }
            let place = e
                .option
                .as_ref()
                .and_then(|o| places.get(o).cloned())
                .unwrap_or_else(|| task.module_place.clone());
            Diagnostic::new(
                place,
                format!(
                    "{} (task `{}`, for {})",
                    e.message,
                    task.name,
                    self.machine.name()
                ),
            )
        })
    }
}

/// `src:` of copy/template: relative to the playbook's `files/` (or `templates/`) directory,
/// then the playbook's own directory. Absolute paths are taken as they are.
fn find_local(dir: &Path, sub: &str, src: &str) -> Result<PathBuf, SourceError> {
    let p = Path::new(src);
    if p.is_absolute() {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(SourceError::Missing {
                src: src.to_string(),
            })
        };
    }
    let candidates = [dir.join(sub).join(p), dir.join(p)];
    match candidates.iter().find(|c| c.is_file()) {
        Some(c) => Ok(c.clone()),
        None => Err(SourceError::NotFound {
            src: src.to_string(),
            looked: candidates,
        }),
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            collect_strings(v, out)
        }),
        _ => {}
    }
}

fn item_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // A record names itself by its `name` or `path` (a unit, a file), not by its content.
        Value::Object(m)
            if ["name", "path"]
                .iter()
                .any(|k| m.get(*k).is_some_and(Value::is_string)) =>
        {
            let key = if m.get("name").is_some_and(Value::is_string) {
                "name"
            } else {
                "path"
            };
            m[key].as_str().unwrap_or_default().to_string()
        }
        other => clip(&other.to_string(), 57),
    }
}

fn describe(v: &JValue) -> String {
    format!("{} `{}`", v.kind(), clip(&v.to_string(), 40))
}

/// `s` cut to its first `max` characters (never inside one: values are user text, often French),
/// with `…` when something was cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}
