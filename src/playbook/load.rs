//! Reading playbooks: YAML plays and tasks parsed strictly into the typed model of `super::model`,
//! and checked (modules, options, template syntax, handler names) before any host is contacted.
//!
//! Like the inventory loader, it never stops at the first mistake: every problem is a
//! `Diagnostic` with file:line:column. It does not render templates (that needs a host's variables).

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::ansible;
use super::model::{Arg, Args, Play, Playbook, Task};
use super::template::Templates;
use crate::diagnostic::{did_you_mean, Diagnostic, Place, Sources};
use crate::inventory::{Located, Var};
use crate::modules;
use crate::yaml::{self, place_of, Name};

type VarsDoc = IndexMap<Name, Spanned<Value>>;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PlayDoc {
    name: Spanned<String>,
    hosts: Spanned<String>,
    #[serde(default, rename = "become")]
    become_root: Option<bool>,
    #[serde(default)]
    vars: VarsDoc,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    tasks: Vec<Spanned<IndexMap<Name, Spanned<Value>>>>,
    #[serde(default)]
    handlers: Vec<Spanned<IndexMap<Name, Spanned<Value>>>>,
}

/// Task keywords (everything else in a task is its module).
pub const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop",
    "register",
    "notify",
    "tags",
    "become",
    "vars",
    "no_log",
    "login_guard",
    "until",
    "retries",
    "delay",
];

/// Reads and checks every playbook file. `Err` holds every problem found in all of them.
pub fn load(
    files: &[PathBuf],
    templates: &Templates,
    sources: &mut Sources,
) -> Result<Vec<Playbook>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut books = Vec::new();
    for file in files {
        match yaml::read::<Vec<Spanned<PlayDoc>>>(file, sources) {
            Ok(Some(plays)) => {
                let text = sources.text(file).unwrap_or_default().to_string();
                let mut reader = Reader {
                    file,
                    text: &text,
                    templates,
                    diags: &mut diags,
                };
                let plays = plays.into_iter().map(|p| reader.play(p)).collect();
                books.push(Playbook {
                    path: file.clone(),
                    dir: file
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from(".")),
                    plays,
                });
            }
            Ok(None) => diags.push(
                Diagnostic::new(Place::new(file, 1, 1), "this playbook is empty").help(
                    "a playbook is a list of plays: `- name: …\\n  hosts: all\\n  tasks: […]`",
                ),
            ),
            Err(mut d) => {
                if d.message.contains("expected a sequence")
                    || d.message.contains("expected sequence")
                {
                    d.help = Some(
                        "a playbook is a YAML list of plays: start each play with `- name:`".into(),
                    );
                }
                diags.push(d)
            }
        }
    }
    if diags.is_empty() {
        Ok(books)
    } else {
        Err(diags)
    }
}

struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    templates: &'a Templates,
    diags: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn place<T>(&self, s: &Spanned<T>) -> Place {
        place_of(self.file, s)
    }

    fn play(&mut self, doc: Spanned<PlayDoc>) -> Play {
        let place = self.place(&doc);
        let doc = doc.value;
        let vars = self.vars(doc.vars);
        let handlers: Vec<Task> = doc
            .handlers
            .into_iter()
            .filter_map(|t| self.task(t))
            .collect();
        let tasks: Vec<Task> = doc.tasks.into_iter().filter_map(|t| self.task(t)).collect();
        for task in tasks.iter().chain(&handlers) {
            for n in &task.notify {
                if !handlers.iter().any(|h| h.name == n.value) {
                    let mut d = Diagnostic::new(
                        n.place.clone(),
                        format!("`notify: {}` names no handler of this play", n.value),
                    );
                    d.help = Some(
                        match did_you_mean(&n.value, handlers.iter().map(|h| h.name.as_str())) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if handlers.is_empty() => {
                                "add a `handlers:` list to the play with a task of that name".into()
                            }
                            None => format!(
                                "handlers of this play: {}",
                                handlers
                                    .iter()
                                    .map(|h| h.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        },
                    );
                    self.diags.push(d);
                }
            }
        }
        Play {
            name: doc.name.value,
            place,
            hosts: Located {
                place: self.place(&doc.hosts),
                value: doc.hosts.value,
            },
            become_root: doc.become_root,
            vars,
            tags: doc.tags,
            tasks,
            handlers,
        }
    }

    fn vars(&mut self, doc: VarsDoc) -> IndexMap<String, Var> {
        let mut out = IndexMap::new();
        for (name, value) in doc {
            let place = self.place(&value);
            self.check_templates(&value.value, &place);
            out.insert(
                name.0.value,
                Var {
                    value: value.value,
                    place,
                },
            );
        }
        out
    }

    fn task(&mut self, doc: Spanned<IndexMap<Name, Spanned<Value>>>) -> Option<Task> {
        let place = self.place(&doc);
        let before = self.diags.len();
        let mut name = None;
        let mut when = None;
        let mut loop_items = None;
        let mut register = None;
        let mut notify = Vec::new();
        let mut tags = Vec::new();
        let mut become_root = None;
        let mut vars = IndexMap::new();
        let mut no_log = false;
        let mut login_guard = false;
        let (mut until, mut retries, mut delay) = (None, None, None);
        let mut module: Option<(ansible::Resolved, Place, Spanned<Value>)> = None;
        for (key, value) in doc.value {
            let key_place = place_of(self.file, &key.0);
            let vplace = self.place(&value);
            match key.0.value.as_str() {
                "name" => match &value.value {
                    Value::String(s) => {
                        self.check_template(s, &vplace);
                        name = Some(s.clone())
                    }
                    _ => self.err(vplace, "a task's `name` must be text", None),
                },
                "when" => match &value.value {
                    Value::String(s) => {
                        if let Err(e) = self.templates.check_expr_syntax(strip_braces(s)) {
                            self.template_err(&vplace, &e, "in this `when` expression");
                        }
                        when = Some(Located {
                            value: s.clone(),
                            place: vplace,
                        })
                    }
                    Value::Bool(b) => {
                        when = Some(Located {
                            value: b.to_string(),
                            place: vplace,
                        })
                    }
                    other => self.err(
                        vplace,
                        format!("`when` must be an expression that gives true or false, not {}", crate::human::kind(other)),
                        Some("write a comparison such as `site == \"toulouse\"`, or `flag | bool`"),
                    ),
                },
                "loop" => {
                    match &value.value {
                        Value::Array(_) | Value::String(_) => {}
                        other => self.err(
                            vplace.clone(),
                            format!("`loop` must be a list or a template giving a list, not {}", crate::human::kind(other)),
                            None,
                        ),
                    }
                    self.check_templates(&value.value, &vplace);
                    loop_items = Some(Located {
                        value: value.value,
                        place: vplace,
                    });
                }
                "register" => match &value.value {
                    Value::String(s) if is_identifier(s) => register = Some(s.clone()),
                    _ => self.err(
                        vplace,
                        "`register` takes a variable name (letters, digits and _, not starting with a digit)",
                        None,
                    ),
                },
                "notify" => match &value.value {
                    Value::String(s) => notify.push(Located {
                        value: s.clone(),
                        place: vplace,
                    }),
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        for item in items {
                            notify.push(Located {
                                value: item.as_str().unwrap_or_default().to_string(),
                                place: vplace.clone(),
                            })
                        }
                    }
                    _ => self.err(vplace, "`notify` takes a handler name or a list of them", None),
                },
                "tags" => match &value.value {
                    Value::String(s) => tags.push(s.clone()),
                    Value::Array(items) if items.iter().all(Value::is_string) => tags.extend(
                        items.iter().map(|i| i.as_str().unwrap_or_default().to_string()),
                    ),
                    _ => self.err(vplace, "`tags` takes a tag or a list of tags", None),
                },
                "become" => match value.value {
                    Value::Bool(b) => become_root = Some(b),
                    _ => self.err(vplace, "`become` is true or false", None),
                },
                "no_log" => match value.value {
                    Value::Bool(b) => no_log = b,
                    _ => self.err(vplace, "`no_log` is true or false", None),
                },
                "login_guard" => match value.value {
                    Value::Bool(b) => login_guard = b,
                    _ => self.err(vplace, "`login_guard` is true or false", None),
                },
                "until" => match &value.value {
                    Value::String(s) => {
                        if let Err(e) = self.templates.check_expr_syntax(strip_braces(s)) {
                            self.template_err(&vplace, &e, "in this `until` expression");
                        }
                        until = Some(Located {
                            value: s.clone(),
                            place: vplace,
                        })
                    }
                    other => self.err(
                        vplace,
                        format!("`until` must be an expression over the registered result, not {}", crate::human::kind(other)),
                        Some("register the result and test it: `register: result` and `until: result.rc == 0`"),
                    ),
                },
                "retries" | "delay" => match super::retry::whole(key.0.value.as_str(), &value.value) {
                    Ok(n) if key.0.value == "retries" => retries = Some((n, key_place)),
                    Ok(n) => delay = Some((n, key_place)),
                    Err(message) => self.err(vplace, message, None),
                },
                "vars" => match value.value {
                    Value::Object(map) => {
                        for (k, v) in map {
                            self.check_templates(&v, &vplace);
                            vars.insert(
                                k,
                                Var {
                                    value: v,
                                    place: vplace.clone(),
                                },
                            );
                        }
                    }
                    _ => self.err(vplace, "`vars` takes a mapping of names to values", None),
                },
                other => match ansible::resolve(other) {
                    Some(resolved) => {
                        if let Some((first, first_place, _)) = &module {
                            self.err(
                                key_place,
                                format!("a task runs one module, and this one already has `{}` ({first_place})", first.spec.name),
                                Some("split it into two tasks"),
                            );
                        } else {
                            module = Some((resolved, key_place, value));
                        }
                    }
                    None => {
                        let help = ansible::no_module_help(other).unwrap_or_else(|| {
                            match did_you_mean(
                                other,
                                modules::SPECS.iter().map(|s| s.name).chain(TASK_KEYWORDS.iter().copied()),
                            ) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!(
                                    "modules: {}; task keywords: {}",
                                    modules::SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                                    TASK_KEYWORDS.join(", ")
                                ),
                            }
                        });
                        self.err(
                            key_place.with_len(other.chars().count() as u64),
                            format!("unknown module or task keyword `{other}`"),
                            Some(&help),
                        );
                    }
                },
            }
        }
        let Some((resolved, module_place, args)) = module else {
            if self.diags.len() == before {
                self.err(
                    place.clone(),
                    "this task has no module",
                    Some(&format!(
                        "add one of: {}",
                        modules::SPECS
                            .iter()
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
            return None;
        };
        let Some(name) = name else {
            self.err(
                place,
                "this task has no `name`",
                Some("give every task a `name:` saying what it ensures; plans and reports show it"),
            );
            return None;
        };
        let spec = resolved.spec;
        let retry = super::retry::check(spec.name, register.as_deref(), until, retries, delay)
            .unwrap_or_else(|d| {
                self.diags.push(d);
                None
            });
        let args = self.args(&resolved, &module_place, args);
        if self.diags.len() > before {
            return None;
        }
        Some(Task {
            name,
            place,
            module: spec,
            module_place,
            args: args?,
            when,
            loop_items,
            register,
            notify,
            tags,
            become_root,
            vars,
            no_log,
            login_guard,
            retry,
        })
    }

    fn args(
        &mut self,
        resolved: &ansible::Resolved,
        module_place: &Place,
        value: Spanned<Value>,
    ) -> Option<Args> {
        let spec = resolved.spec;
        let vplace = self.place(&value);
        match value.value {
            Value::String(s) if spec.free_form => {
                self.check_template(&s, &vplace);
                if let Some((at, option)) = ansible::inline_option(&s) {
                    let word = s[at..].split_whitespace().next().unwrap_or_default();
                    self.err(
                        vplace.clone(),
                        format!("`{word}` in this command line is an option for Ansible, and picaops would pass it to the command"),
                        Some(&format!(
                            "write the command and the option apart: `{}: {{cmd: \"…\", {option}: …}}`",
                            spec.name
                        )),
                    );
                    return None;
                }
                Some(Args::Free(Located {
                    value: s,
                    place: vplace,
                }))
            }
            Value::Object(map) => {
                let mut out = IndexMap::new();
                let mut ok = true;
                let written: Vec<String> = map.keys().cloned().collect();
                let mut written_as = std::collections::HashMap::new();
                for (key, v) in map {
                    let place = self.find_key(&vplace, &key);
                    let ours = match resolved.option(&key, &v) {
                        ansible::OptionFate::Keep(ours) => ours,
                        ansible::OptionFate::Drop => continue,
                        ansible::OptionFate::Refuse(message, help) => {
                            ok = false;
                            self.err(
                                place.clone().with_len(key.chars().count() as u64),
                                message,
                                Some(&help),
                            );
                            continue;
                        }
                        ansible::OptionFate::Unknown => {
                            ok = false;
                            let help = match did_you_mean(&key, spec.options.iter().copied()) {
                                Some(s) => format!(
                                    "did you mean `{s}`? Options of `{}`: {}",
                                    spec.name,
                                    spec.options.join(", ")
                                ),
                                None => {
                                    format!(
                                        "options of `{}`: {}",
                                        spec.name,
                                        spec.options.join(", ")
                                    )
                                }
                            };
                            self.err(
                                place.clone().with_len(key.chars().count() as u64),
                                format!("unknown option `{key}` for module `{}`", spec.name),
                                Some(&help),
                            );
                            continue;
                        }
                    };
                    if let Some(first) = written_as.get(ours) {
                        ok = false;
                        self.err(
                            place.clone().with_len(key.chars().count() as u64),
                            format!(
                                "`{first}` and `{key}` are one option (`{ours}`) under two names"
                            ),
                            Some("keep one of the two"),
                        );
                        continue;
                    }
                    written_as.insert(ours, key.clone());
                    let value_place = self.value_place_after_key(&place);
                    self.check_templates(&v, &value_place);
                    out.insert(
                        ours.to_string(),
                        Arg {
                            value: v,
                            place: value_place,
                        },
                    );
                }
                let names: Vec<&str> = written.iter().map(String::as_str).collect();
                for (option, message, help) in resolved.missing_companions(&names) {
                    ok = false;
                    let place = self.find_key(&vplace, option);
                    self.err(place.with_len(option.len() as u64), message, Some(&help));
                }
                for group in spec.required {
                    if !group.iter().any(|k| out.contains_key(*k)) {
                        ok = false;
                        let what = group
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(" or ");
                        self.err(
                            module_place.clone(),
                            format!("module `{}` needs {what}", spec.name),
                            None,
                        );
                    }
                }
                ok.then_some(Args::Map(out))
            }
            other => {
                let help = if spec.free_form {
                    format!(
                        "write `{}: \"a command line\"` or a mapping of options",
                        spec.name
                    )
                } else {
                    format!("options of `{}`: {}", spec.name, spec.options.join(", "))
                };
                self.err(
                    vplace,
                    format!(
                        "module `{}` takes a mapping of options, not {}",
                        spec.name,
                        crate::human::kind(&other)
                    ),
                    Some(&help),
                );
                None
            }
        }
    }

    /// Where `key:` is written at or after `from` (options inside a module's mapping have no
    /// span of their own; the text tells).
    fn find_key(&self, from: &Place, key: &str) -> Place {
        let lines: Vec<&str> = self.text.lines().collect();
        let start = from.line.saturating_sub(1) as usize;
        for (i, line) in lines.iter().enumerate().skip(start).take(200) {
            let skip = if i == start {
                char_to_byte(line, from.column.saturating_sub(1) as usize)
            } else {
                0
            };
            let hay = &line[skip.min(line.len())..];
            let mut search = 0;
            while let Some(pos) = hay[search..].find(key) {
                let at = search + pos;
                let before_ok = at == 0
                    || !hay[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                let after = hay[at + key.len()..].trim_start_matches(['"', '\'']);
                if before_ok && after.starts_with(':') {
                    let col = line[..skip + at].chars().count() as u64 + 1;
                    return Place::new(self.file, i as u64 + 1, col);
                }
                search = at + key.len();
            }
        }
        from.clone()
    }

    fn value_place_after_key(&self, key_place: &Place) -> Place {
        let Some(line) = self
            .text
            .lines()
            .nth(key_place.line.saturating_sub(1) as usize)
        else {
            return key_place.clone();
        };
        let start = char_to_byte(line, key_place.column.saturating_sub(1) as usize);
        let rest = &line[start.min(line.len())..];
        if let Some(colon) = rest.find(':') {
            let after = &rest[colon + 1..];
            let trimmed = after.trim_start();
            if !trimmed.is_empty() && !trimmed.starts_with('#') {
                let col = line[..start + colon + 1 + (after.len() - trimmed.len())]
                    .chars()
                    .count();
                return Place::new(self.file, key_place.line, col as u64 + 1);
            }
            return Place::new(self.file, key_place.line + 1, key_place.column + 2);
        }
        key_place.clone()
    }

    fn check_templates(&mut self, value: &Value, place: &Place) {
        match value {
            Value::String(s) => self.check_template(s, place),
            Value::Array(items) => items.iter().for_each(|v| self.check_templates(v, place)),
            Value::Object(map) => map.values().for_each(|v| self.check_templates(v, place)),
            _ => {}
        }
    }

    fn check_template(&mut self, s: &str, place: &Place) {
        if !s.contains("{{") && !s.contains("{%") && !s.contains("{#") {
            return;
        }
        if let Err(e) = self.templates.check_syntax(s) {
            self.template_err(place, &e, "in this template");
        }
    }

    fn template_err(&mut self, place: &Place, e: &super::template::TemplateError, what: &str) {
        let at = template_place(self.text, place, e.line, e.column);
        self.diags.push(
            Diagnostic::new(at, format!("template syntax error {what}: {}", e.message))
                .help("check the {{ }} and {% %} pairs and the expression inside"),
        );
    }

    fn err(&mut self, place: Place, message: impl Into<String>, help: Option<&str>) {
        let mut d = Diagnostic::new(place, message);
        d.help = help.map(String::from);
        self.diags.push(d);
    }
}

/// The file place of a position inside a template written at `place`: line/column inside the
/// template shifted by where the YAML value starts (and its opening quote).
pub fn template_place(
    text: &str,
    place: &Place,
    line: Option<usize>,
    column: Option<usize>,
) -> Place {
    let (Some(line), Some(column)) = (line, column) else {
        return place.clone();
    };
    let first = text
        .lines()
        .nth(place.line.saturating_sub(1) as usize)
        .unwrap_or("");
    let opening = first
        .chars()
        .nth(place.column.saturating_sub(1) as usize)
        .unwrap_or(' ');
    let quoted = matches!(opening, '"' | '\'');
    let block = matches!(opening, '|' | '>');
    if block {
        // The text starts on the next line, indented.
        let next = text.lines().nth(place.line as usize).unwrap_or("");
        let indent = next.len() - next.trim_start().len();
        return Place::new(
            &place.file,
            place.line + line as u64,
            (indent + column) as u64,
        );
    }
    if line <= 1 {
        Place::new(
            &place.file,
            place.line,
            place.column + column as u64 - 1 + quoted as u64,
        )
    } else {
        Place::new(&place.file, place.line + line as u64 - 1, column as u64)
    }
}

fn char_to_byte(line: &str, chars: usize) -> usize {
    line.char_indices()
        .nth(chars)
        .map(|(b, _)| b)
        .unwrap_or(line.len())
}

/// `{{ x }}` written around a `when` expression is accepted, as Ansible (with a warning) does.
pub fn strip_braces(expr: &str) -> &str {
    let t = expr.trim();
    match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner.trim(),
        _ => t,
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
