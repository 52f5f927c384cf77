//! Templating for playbooks: renders task values, template files and `when:` expressions with minijinja
//! (strict undefined, Ansible-named filters); it must not read files, contact hosts or know about tasks.
//!
//! Callers hand it a string (or a JSON value from a task) and a context; it hands back text or values.
//! Errors carry the 1-based line and column inside the template source, and for undefined values the
//! name of what was missing, so the playbook loader can point at the exact spot in the YAML.
//!
//! Two choices worth knowing:
//! - `render_value` returns native values for a string that is a single `{{ expr }}`, like Ansible:
//!   `loop: "{{ users }}"` yields a list. When the expression is surrounded by whitespace (typical of
//!   YAML block scalars, `"{{ port }}\n"`), only lists and maps come back native; scalars render as
//!   text so that `content:` keeps its trailing newline.
//! - Filters follow Ansible's names and semantics, but `bool` and `hash` are stricter: `bool` refuses
//!   strings it does not recognise (Ansible would quietly say false), `hash` only knows sha256/sha512.
//!
//! Every render and evaluation runs under the limits of `super::budget` (fuel, memory, time): a
//! template that loops for ever or keeps doubling a string is a `Limit` error, never a hang or an
//! abort.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::budget::{self, Limits, LimitsError, Usage};

/// A minijinja environment set up the way playbooks expect: strict undefined, no HTML escaping,
/// trailing newlines kept, Ansible filters registered; renders run under `super::budget`'s limits.
pub struct Templates {
    engine: Arc<Engine>,
    /// `Err`: a limit variable of the environment is wrong; every render says so.
    limits: Result<Limits, LimitsError>,
    usage: Usage,
}

/// What renders used of their limits (`PICAOPS_LOG=picaops=debug` prints it at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateUsage {
    /// Renders and evaluations run on a thread of their own (text without template syntax is not).
    pub renders: usize,
    /// The most memory one of them held at once.
    pub peak_memory_bytes: usize,
    /// The most fuel one template render used (expressions are not measured).
    pub peak_fuel: u64,
}

/// How a template FILE renders (the `template` module's `src:`): Ansible's defaults, which a
/// first line `#jinja2: trim_blocks: False, lstrip_blocks: True` overrides, as in Ansible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOptions {
    /// The newline after a block tag is removed (Ansible's default: on).
    pub trim_blocks: bool,
    /// Spaces and tabs before a block tag at the start of a line are removed (default: off).
    pub lstrip_blocks: bool,
    /// Jinja's own: the template's last newline is kept (default: off, as in Ansible). Either
    /// way, as Ansible does, the output then gets back the newlines the template ends with that
    /// rendering took away.
    pub keep_trailing_newline: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            trim_blocks: true,
            lstrip_blocks: false,
            keep_trailing_newline: false,
        }
    }
}

/// `out` with as many final newlines as `source` has, when rendering removed some (Ansible's
/// template module: a file that ends with a newline keeps it, whatever the last tag did).
fn keep_final_newlines(source: &str, mut out: String) -> String {
    let count = |t: &str| t.bytes().rev().take_while(|b| *b == b'\n').count();
    let missing = count(source).saturating_sub(count(&out));
    out.extend(std::iter::repeat_n('\n', missing));
    out
}

/// The line Ansible reads environment overrides from, first in a template file.
const HEADER: &str = "#jinja2:";

/// A template file's options and its text without the `#jinja2:` line, and how many lines were
/// taken off (for error positions).
pub fn file_options(source: &str) -> Result<(FileOptions, &str, usize), TemplateError> {
    let mut opts = FileOptions::default();
    let Some(rest) = source.strip_prefix(HEADER) else {
        return Ok((opts, source, 0));
    };
    let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let refuse = |message: String| TemplateError {
        kind: TemplateErrorKind::Syntax,
        message,
        line: Some(1),
        column: Some(1),
    };
    for pair in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once(':') else {
            return Err(refuse(format!(
                "`{pair}` in the `#jinja2:` line is not `option: value`"
            )));
        };
        let value = match value.trim() {
            "True" | "true" => true,
            "False" | "false" => false,
            other => {
                return Err(refuse(format!(
                    "`{}: {other}`: picaops reads True or False here",
                    key.trim()
                )))
            }
        };
        match key.trim() {
            "trim_blocks" => opts.trim_blocks = value,
            "lstrip_blocks" => opts.lstrip_blocks = value,
            "keep_trailing_newline" => opts.keep_trailing_newline = value,
            other => {
                return Err(refuse(format!(
                    "`#jinja2: {other}` is not supported by picaops (it reads trim_blocks, lstrip_blocks \
                     and keep_trailing_newline)"
                )))
            }
        }
    }
    Ok((opts, body, 1))
}

/// The environment itself; shared with the threads renders run on.
struct Engine {
    /// For values in tasks and vars.
    env: Environment<'static>,
    /// For template files with Ansible's default options.
    files: Environment<'static>,
    /// The most fuel one template render used.
    peak_fuel: AtomicU64,
}

/// A template that could not be checked, rendered or evaluated.
///
/// `line` and `column` are 1-based positions INSIDE the template source (column in characters),
/// when minijinja knows them; the caller adds where the template itself lives (file, task, key).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// The template or expression does not parse.
    Syntax,
    /// A variable (or attribute, or key) the template uses is not set.
    Undefined,
    /// Anything else: a filter refused its input, a type mismatch, an unknown filter.
    Other,
    /// The render hit one of its limits (fuel, memory, time): see `super::budget`.
    Limit,
}

impl std::error::Error for TemplateError {}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
            (Some(line), None) => write!(f, " (line {line})"),
            _ => Ok(()),
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// Strict undefined (UndefinedBehavior::Strict), no auto-escaping, keep_trailing_newline(true),
    /// filters below registered, limits from the environment (`budget::Limits::from_env`).
    pub fn new() -> Self {
        Self::with_limits(Limits::from_env())
    }

    /// With these limits (tests; `Err` makes every render fail with that message).
    pub fn with_limits(limits: Result<Limits, LimitsError>) -> Self {
        let fuel = limits.as_ref().map_or(budget::DEFAULT_FUEL, |l| l.fuel);
        Templates {
            engine: Arc::new(Engine::new(fuel)),
            limits,
            usage: Usage::default(),
        }
    }

    /// Renders a template string (a YAML value or a template file's text).
    pub fn render_str(&self, source: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !is_template(source) {
            return Ok(source.to_owned());
        }
        let source = source.to_owned();
        self.guarded(ctx, move |engine, ctx| engine.render_str(&source, ctx))
    }

    /// Renders a template file's text as Ansible's `template` module does: `trim_blocks` on,
    /// `lstrip_blocks` off, the final newlines of the template kept, unless a first line
    /// `#jinja2: …` says otherwise (that line is not part of the output). Error lines count from
    /// the file's top.
    pub fn render_file(&self, source: &str, ctx: &Value) -> Result<String, TemplateError> {
        let (opts, body, skipped) = file_options(source)?;
        if !is_template(body) {
            return Ok(body.to_owned());
        }
        let text = body.to_owned();
        self.guarded(ctx, move |engine, ctx| engine.render_file(&text, opts, ctx))
            .map(|out| keep_final_newlines(body, out))
            .map_err(|mut e| {
                e.line = e.line.map(|l| l + skipped);
                e
            })
    }

    /// Evaluates a bare expression (for `when:`; no {{ }}), returns the value.
    ///
    /// An expression whose result is undefined (`when: tls_cert`, unset) is an `Undefined` error:
    /// strict mode in minijinja only complains when an undefined value is printed, iterated or
    /// tested for truth, and a bare expression does none of these.
    pub fn eval_expr(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let expr = expr.to_owned();
        self.guarded(ctx, move |engine, ctx| engine.eval_expr(&expr, ctx))
    }

    /// Renders every string inside a JSON value recursively. A string that is exactly one
    /// `{{ expr }}` (surrounding whitespace allowed) returns the expression's native value (list,
    /// map, number, bool) like Ansible; other strings render to strings. Map keys are rendered too.
    ///
    /// With surrounding whitespace, only a list or map comes back native: `"{{ port }}\n"` is the
    /// text `"22\n"`, not the number 22, so file contents keep their final newline.
    ///
    /// The limits apply to the whole value.
    pub fn render_value(
        &self,
        value: &serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, TemplateError> {
        if !has_template(value) {
            return Ok(value.clone());
        }
        let value = value.clone();
        self.guarded(ctx, move |engine, ctx| engine.render_value(&value, ctx))
    }

    /// Syntax check only (no rendering), for validating a playbook before any host is contacted.
    pub fn check_syntax(&self, source: &str) -> Result<(), TemplateError> {
        self.engine.check_syntax(source)
    }

    /// Syntax check of a bare expression (`when:`), without evaluating it.
    pub fn check_expr_syntax(&self, expr: &str) -> Result<(), TemplateError> {
        self.engine.check_expr_syntax(expr)
    }

    /// Names of top-level variables a template reads that it does not define itself
    /// (minijinja's `undeclared_variables(false)`); empty on syntax error.
    pub fn referenced_vars(&self, source: &str) -> BTreeSet<String> {
        self.engine.referenced_vars(source)
    }

    /// Like [`Templates::referenced_vars`], for a bare expression.
    pub fn referenced_vars_expr(&self, expr: &str) -> BTreeSet<String> {
        self.engine.referenced_vars_expr(expr)
    }

    /// What the renders so far used of their limits.
    pub fn usage(&self) -> TemplateUsage {
        TemplateUsage {
            renders: self.usage.renders.load(Ordering::Relaxed),
            peak_memory_bytes: self.usage.peak_memory.load(Ordering::Relaxed),
            peak_fuel: self.engine.peak_fuel.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` on a thread of its own under the limits; a stop is a `Limit` error.
    fn guarded<T: Send + 'static>(
        &self,
        ctx: &Value,
        work: impl FnOnce(&Engine, &Value) -> Result<T, TemplateError> + Send + 'static,
    ) -> Result<T, TemplateError> {
        let limits = self.limits.as_ref().map_err(|e| TemplateError {
            kind: TemplateErrorKind::Limit,
            message: e.to_string(),
            line: None,
            column: None,
        })?;
        let (engine, ctx) = (self.engine.clone(), ctx.clone());
        budget::run(limits, &self.usage, move || work(&engine, &ctx)).unwrap_or_else(|stop| {
            Err(TemplateError {
                kind: TemplateErrorKind::Limit,
                message: stop.explain(),
                line: None,
                column: None,
            })
        })
    }
}

impl Drop for Templates {
    fn drop(&mut self) {
        let usage = self.usage();
        if usage.renders > 0 {
            tracing::debug!(
                renders = usage.renders,
                peak_memory_bytes = usage.peak_memory_bytes,
                peak_fuel = usage.peak_fuel,
                "template rendering"
            );
        }
    }
}

impl Engine {
    fn new(fuel: u64) -> Self {
        let mut files = Self::environment(fuel);
        Self::set_file_options(&mut files, FileOptions::default());
        Engine {
            env: Self::environment(fuel),
            files,
            peak_fuel: AtomicU64::new(0),
        }
    }

    fn environment(fuel: u64) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        // Ansible renders task values with trim_blocks too: the newline after a block tag goes.
        env.set_trim_blocks(true);
        // Debug mode is what makes minijinja keep the byte range of a failing expression; it is
        // off by default in release builds, and our error positions depend on it.
        env.set_debug(true);
        env.set_fuel(Some(fuel));
        filters::register(&mut env);
        env
    }

    fn set_file_options(env: &mut Environment<'static>, opts: FileOptions) {
        env.set_trim_blocks(opts.trim_blocks);
        env.set_lstrip_blocks(opts.lstrip_blocks);
        env.set_keep_trailing_newline(opts.keep_trailing_newline);
    }

    /// A template file's text (header taken off) with `opts`: the shared file environment for
    /// Ansible's defaults, one made for this render otherwise.
    fn render_file(
        &self,
        source: &str,
        opts: FileOptions,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        let own;
        let env = if opts == FileOptions::default() {
            &self.files
        } else {
            let mut env = Self::environment(self.env.fuel().unwrap_or(budget::DEFAULT_FUEL));
            Self::set_file_options(&mut env, opts);
            own = env;
            &own
        };
        self.render_in(env, source, ctx)
    }

    /// Renders a template string (a YAML value or a template file's text).
    fn render_str(&self, source: &str, ctx: &Value) -> Result<String, TemplateError> {
        self.render_in(&self.env, source, ctx)
    }

    fn render_in(
        &self,
        env: &Environment<'static>,
        source: &str,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        let captured = env
            .template_from_str(source)
            .and_then(|template| template.render_captured(ctx))
            .map_err(|err| self.convert_error(&err, &Source::template(source), ctx))?;
        if let Some((used, _)) = captured.state().fuel_levels() {
            self.peak_fuel.fetch_max(used, Ordering::Relaxed);
        }
        Ok(captured.into_output())
    }

    fn eval_expr(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        self.eval_part(expr, &Source::expression(expr), ctx)
    }

    fn render_value(
        &self,
        value: &serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, TemplateError> {
        use serde_json::Value as Json;
        Ok(match value {
            Json::String(s) => self.render_json_string(s, ctx)?,
            Json::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|item| self.render_value(item, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(map) => {
                let mut rendered = serde_json::Map::new();
                for (key, item) in map {
                    let new_key = self.render_str(key, ctx)?;
                    if rendered.contains_key(&new_key) {
                        return Err(TemplateError {
                            kind: TemplateErrorKind::Other,
                            message: format!(
                                "two keys of the same map render to `{new_key}` (one of them is `{key}`); \
                                 rename one so each key is unique"
                            ),
                            line: None,
                            column: None,
                        });
                    }
                    rendered.insert(new_key, self.render_value(item, ctx)?);
                }
                Json::Object(rendered)
            }
            other => other.clone(),
        })
    }

    /// Syntax check only (no rendering), for validating a playbook before any host is contacted.
    pub fn check_syntax(&self, source: &str) -> Result<(), TemplateError> {
        self.env
            .template_from_str(source)
            .map(|_| ())
            .map_err(|err| self.convert_error(&err, &Source::template(source), &Value::UNDEFINED))
    }

    /// Syntax check of a bare expression (`when:`), without evaluating it.
    pub fn check_expr_syntax(&self, expr: &str) -> Result<(), TemplateError> {
        self.env
            .compile_expression(expr)
            .map(|_| ())
            .map_err(|err| self.convert_error(&err, &Source::expression(expr), &Value::UNDEFINED))
    }

    /// Names of top-level variables a template reads that it does not define itself
    /// (minijinja's `undeclared_variables(false)`); empty on syntax error.
    pub fn referenced_vars(&self, source: &str) -> BTreeSet<String> {
        match self.env.template_from_str(source) {
            Ok(template) => template.undeclared_variables(false).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Like [`Templates::referenced_vars`], for a bare expression.
    pub fn referenced_vars_expr(&self, expr: &str) -> BTreeSet<String> {
        match self.env.compile_expression(expr) {
            Ok(expression) => expression.undeclared_variables(false).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// One string of a task value: untouched without template syntax, native for a lone
    /// `{{ expr }}`, rendered text otherwise.
    fn render_json_string(&self, s: &str, ctx: &Value) -> Result<serde_json::Value, TemplateError> {
        if !is_template(s) {
            return Ok(serde_json::Value::String(s.to_owned()));
        }
        if let Some(lone) = lone_expression(s) {
            let source = Source {
                text: s,
                base: lone.expr.start,
                is_template: true,
            };
            let value = self.eval_part(&s[lone.expr.clone()], &source, ctx)?;
            let structured = matches!(
                value.kind(),
                ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
            );
            if lone.exact || structured {
                return Ok(to_json_value(&value));
            }
        }
        Ok(serde_json::Value::String(self.render_str(s, ctx)?))
    }

    /// Evaluates `expr`, which sits at byte `source.base` of `source.text` (for error positions).
    fn eval_part(
        &self,
        expr: &str,
        source: &Source<'_>,
        ctx: &Value,
    ) -> Result<Value, TemplateError> {
        let (full, base) = (source.text, source.base);
        let value = self
            .env
            .compile_expression(expr)
            .and_then(|compiled| compiled.eval(ctx))
            .map_err(|err| self.convert_error(&err, source, ctx))?;
        if !value.is_undefined() {
            return Ok(value);
        }
        let start = base + (expr.len() - expr.trim_start().len());
        let end = base + expr.trim_end().len();
        let (line, column) = position(full, start);
        Err(TemplateError {
            kind: TemplateErrorKind::Undefined,
            message: self.undefined_message(None, source, Some(start..end), ctx),
            line: Some(line),
            column: Some(column),
        })
    }

    /// Turns a minijinja error into a `TemplateError` with positions inside `source.text`.
    fn convert_error(&self, err: &Error, source: &Source<'_>, ctx: &Value) -> TemplateError {
        let full = source.text;
        let kind = match err.kind() {
            ErrorKind::SyntaxError | ErrorKind::BadEscape => TemplateErrorKind::Syntax,
            ErrorKind::UndefinedError => TemplateErrorKind::Undefined,
            ErrorKind::OutOfFuel => TemplateErrorKind::Limit,
            _ => TemplateErrorKind::Other,
        };
        let range = err
            .range()
            .map(|r| source.base + r.start..source.base + r.end)
            .filter(|r| full.get(r.clone()).is_some());
        let (mut line, mut column) = match &range {
            Some(r) => {
                let (line, column) = position(full, r.start);
                (Some(line), Some(column))
            }
            None => {
                let lines_before = full[..source.base.min(full.len())].matches('\n').count();
                (err.line().map(|l| l + lines_before), None)
            }
        };
        let detail = err.detail();

        let message = match kind {
            TemplateErrorKind::Limit => format!(
                "rendering ran more than {} steps (the limit of one template, counted in \
                 instructions of the template engine): a loop that never ends, or loops nested \
                 over big ranges? If this template is legitimate, raise {}",
                self.env.fuel().unwrap_or_default(),
                budget::FUEL_VAR
            ),
            TemplateErrorKind::Undefined => self.undefined_message(detail, source, range, ctx),
            TemplateErrorKind::Syntax => {
                let detail = detail.unwrap_or("the template does not parse");
                // minijinja points at the end of the text; the block that needs closing is more
                // useful to whoever has to fix it.
                match unclosed_block(full).filter(|_| detail.starts_with("unexpected end of input"))
                {
                    Some((keyword, offset)) => {
                        let (l, c) = position(full, offset);
                        (line, column) = (Some(l), Some(c));
                        format!(
                            "syntax error: this `{{% {keyword} %}}` is never closed; add `{{% end{keyword} %}}` where it should end"
                        )
                    }
                    None => format!("syntax error: {detail}"),
                }
            }
            TemplateErrorKind::Other => {
                let mut message = match detail {
                    Some(detail) => format!("{}: {detail}", err.kind()),
                    None => err.kind().to_string(),
                };
                let failing = range.as_ref().map(|r| Failing::at(full, r.clone()));
                match failing {
                    // Our own filters already name themselves in the detail.
                    Some(Failing::Filter { name, .. })
                        if !message.contains(&format!("`{name}` filter")) =>
                    {
                        message.push_str(&format!(" (in filter `{name}`)"));
                    }
                    Some(Failing::Expression(snippet)) => {
                        message.push_str(&format!(" (in `{snippet}`)"))
                    }
                    _ => {}
                }
                let mut cause = std::error::Error::source(err);
                while let Some(next) = cause {
                    message.push_str(&format!(": {next}"));
                    cause = next.source();
                }
                message
            }
        };
        TemplateError {
            kind,
            message,
            line,
            column,
        }
    }

    /// Says what was undefined, as precisely as the failing expression allows.
    ///
    /// minijinja's undefined errors carry no name, only the byte range of the failing expression
    /// (`user.shell`), or of the filter's name when a filter refused an undefined input. We take
    /// the variable path there and name the shortest part of it that is undefined in `ctx`. A path
    /// rooted in a loop variable or `{% set %}` is not in `ctx`: it is named whole (`u.shell`),
    /// never as "undefined variable `u`".
    fn undefined_message(
        &self,
        detail: Option<&str>,
        source: &Source<'_>,
        range: Option<std::ops::Range<usize>>,
        ctx: &Value,
    ) -> String {
        let failing = range.map(|r| Failing::at(source.text, r));
        let candidate = match &failing {
            Some(Failing::Filter { input, .. }) => *input,
            Some(Failing::Expression(snippet)) => leading_path(snippet),
            None => None,
        };
        let path = candidate.and_then(|path| self.undefined_part(path, source, ctx));
        let within = match (&failing, path) {
            (Some(Failing::Filter { name, .. }), _) => format!(" (passed to filter `{name}`)"),
            (Some(Failing::Expression(snippet)), Some(path)) if path != *snippet => {
                format!(" (in `{snippet}`)")
            }
            (Some(Failing::Expression(snippet)), None) => format!(" in `{snippet}`"),
            _ => String::new(),
        };

        let mut message = match (detail, path) {
            (Some(detail), Some(path)) => return format!("{detail}: `{path}`"),
            (Some(detail), None) => return format!("{detail}{within}"),
            (None, Some(path)) if is_identifier(path) => format!("undefined variable `{path}`"),
            (None, Some(path)) => format!("`{path}` is undefined"),
            (None, None) => "undefined value".to_owned(),
        };
        message.push_str(&within);
        let fallback = path.unwrap_or("VALUE");
        message.push_str(&format!(
            "; set it in the inventory, the play's vars or with -e, or give a fallback with \
             `{fallback} | default(...)` (test it with `{fallback} is defined`)"
        ));
        message
    }

    /// The shortest prefix of `path` (`user`, `user.shell`, ...) that is undefined, or the whole
    /// path when its root is a variable the template defines itself (its value is unknown here).
    fn undefined_part<'p>(
        &self,
        path: &'p str,
        source: &Source<'_>,
        ctx: &Value,
    ) -> Option<&'p str> {
        let prefixes = path_prefixes(path);
        let root = prefixes.first()?;
        if source.is_template && !self.referenced_vars(source.text).contains(*root) {
            return Some(path);
        }
        prefixes
            .into_iter()
            .find(|prefix| match self.env.compile_expression(prefix) {
                Ok(expression) => match expression.eval(ctx) {
                    Ok(value) => value.is_undefined(),
                    Err(err) => err.kind() == ErrorKind::UndefinedError,
                },
                Err(_) => false,
            })
    }
}

/// The text an error came from, and where the part minijinja saw starts in it.
struct Source<'a> {
    text: &'a str,
    base: usize,
    /// A template (may define its own variables), not a bare expression.
    is_template: bool,
}

impl<'a> Source<'a> {
    fn template(text: &'a str) -> Self {
        Source {
            text,
            base: 0,
            is_template: true,
        }
    }
    fn expression(text: &'a str) -> Self {
        Source {
            text,
            base: 0,
            is_template: false,
        }
    }
}

/// What an error range covers.
enum Failing<'a> {
    /// The name of a filter (`upper` in `x | upper`), with the variable path it was applied to.
    Filter {
        name: &'a str,
        input: Option<&'a str>,
    },
    /// An expression (`user.shell`).
    Expression(&'a str),
}

impl<'a> Failing<'a> {
    fn at(full: &'a str, range: std::ops::Range<usize>) -> Self {
        let raw = &full[range.clone()];
        let text = raw.trim();
        let text_start = range.start + (raw.len() - raw.trim_start().len());
        let before = full[..range.start].trim_end();
        // The range covers the filter's name, and its arguments when it has some.
        let name = text.split('(').next().unwrap_or(text).trim_end();
        match before.strip_suffix('|') {
            Some(before) if is_identifier(name) => {
                let before = before.trim_end();
                let input = &before[path_suffix_start(before)..];
                let input = leading_path(input).filter(|path| *path == input);
                Failing::Filter { name, input }
            }
            // `hostvars['db1'].address` fails with a range that starts at `[`: take the
            // variable in front of it back.
            _ if text.starts_with(['[', '.']) => {
                let start = path_suffix_start(&full[..text_start]);
                Failing::Expression(&full[start..text_start + text.len()])
            }
            _ => Failing::Expression(text),
        }
    }
}

/// Where the run of variable-path characters (`hostvars['db1'].site`) that ends `s` starts.
fn path_suffix_start(s: &str) -> usize {
    s.char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "_.[]'\"".contains(c)))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// The innermost block opened (`if`, `for`, ...) and never closed, with its byte offset.
fn unclosed_block(source: &str) -> Option<(String, usize)> {
    const BLOCKS: &[&str] = &[
        "if",
        "for",
        "macro",
        "block",
        "filter",
        "with",
        "call",
        "autoescape",
        "raw",
    ];
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut rest = 0;
    while let Some(found) = source[rest..].find("{%") {
        let start = rest + found;
        let end = source[start..]
            .find("%}")
            .map_or(source.len(), |e| start + e + 2);
        let tag = &source[start + 2..end];
        let inner = tag
            .strip_suffix("%}")
            .unwrap_or(tag)
            .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let keyword = inner
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap_or("");
        rest = end;
        let in_raw = open.last().is_some_and(|(k, _)| k == "raw");
        if in_raw && keyword != "endraw" {
            continue;
        }
        let block_set = keyword == "set" && !inner.contains('=');
        if BLOCKS.contains(&keyword) || block_set {
            open.push((keyword.to_owned(), start));
        } else if let Some(closed) = keyword.strip_prefix("end") {
            if let Some(pos) = open.iter().rposition(|(k, _)| k == closed) {
                open.truncate(pos);
            }
        }
    }
    open.pop()
}

/// Where the lone expression of a `{{ expr }}` string is.
struct LoneExpression {
    /// Byte range of `expr` (between the delimiters and any `-` whitespace markers).
    expr: std::ops::Range<usize>,
    /// No whitespace around the `{{ }}`.
    exact: bool,
}

fn lone_expression(s: &str) -> Option<LoneExpression> {
    let trimmed = s.trim();
    let start = s.len() - s.trim_start().len();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    let mut inner_start = start + 2;
    let mut inner = inner;
    if let Some(rest) = inner.strip_prefix('-') {
        inner = rest;
        inner_start += 1;
    }
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.trim().is_empty()
        || ["{{", "}}", "{%", "%}", "{#", "#}"]
            .iter()
            .any(|d| inner.contains(d))
    {
        return None;
    }
    Some(LoneExpression {
        expr: inner_start..inner_start + inner.len(),
        exact: trimmed.len() == s.len(),
    })
}

/// Does `s` contain template syntax at all? Text without it renders to itself.
fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Is there template syntax in any string (or key) of `v`?
fn has_template(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => is_template(s),
        serde_json::Value::Array(items) => items.iter().any(has_template),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, item)| is_template(key) || has_template(item)),
        _ => false,
    }
}

/// 1-based line and column (in characters) of byte `offset` of `source`.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable path an expression starts with: `user.shell` in `user.shell | upper`,
/// `hostvars['db1'].address` in `hostvars['db1'].address ~ ':5432'`.
fn leading_path(expr: &str) -> Option<&str> {
    path_prefixes(expr).pop()
}

/// Each step of the variable path `expr` starts with: `a`, `a.b`, `a.b['c']`. Empty when `expr`
/// does not start with a variable (a literal, `true`, a function call).
fn path_prefixes(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let ident_start =
        |i: usize| matches!(bytes.get(i), Some(c) if c.is_ascii_alphabetic() || *c == b'_');
    let ident_end = |from: usize| {
        let mut i = from;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        i
    };
    if !ident_start(0) {
        return Vec::new();
    }
    let mut end = ident_end(0);
    let root = &expr[..end];
    let keyword = matches!(
        root,
        "true" | "false" | "none" | "True" | "False" | "None" | "not"
    );
    let mut prefixes = vec![root];
    loop {
        match bytes.get(end) {
            Some(b'.') if ident_start(end + 1) => end = ident_end(end + 1),
            Some(b'[') => match expr[end..].find(']') {
                Some(close) => end += close + 1,
                None => break,
            },
            _ => break,
        }
        prefixes.push(&expr[..end]);
    }
    if keyword || bytes.get(end) == Some(&b'(') {
        return Vec::new();
    }
    prefixes
}

/// Converts a template value into JSON: undefined and none become null, maps get string keys,
/// anything exotic (functions, objects) becomes its printed form.
pub fn to_json_value(v: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match v.kind() {
        ValueKind::Undefined | ValueKind::None | ValueKind::Invalid => Json::Null,
        ValueKind::Bool => Json::Bool(v.is_true()),
        ValueKind::Number => number_to_json(v),
        ValueKind::String => Json::String(v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        ValueKind::Bytes => {
            Json::String(String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned())
        }
        ValueKind::Seq | ValueKind::Iterable => Json::Array(
            v.try_iter()
                .map(|items| items.map(|item| to_json_value(&item)).collect())
                .unwrap_or_default(),
        ),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            if let Ok(keys) = v.try_iter() {
                for key in keys {
                    let item = v.get_item(&key).unwrap_or_default();
                    let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                    map.insert(key, to_json_value(&item));
                }
            }
            Json::Object(map)
        }
        _ => Json::String(v.to_string()),
    }
}

fn number_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    if v.is_integer() {
        if let Ok(i) = i64::try_from(v.clone()) {
            return Json::from(i);
        }
        if let Ok(u) = u64::try_from(v.clone()) {
            return Json::from(u);
        }
    }
    f64::try_from(v.clone())
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Json::Null, Json::Number)
}

/// Converts JSON (a task value, a registered result) into a template value.
pub fn from_json_value(v: &serde_json::Value) -> Value {
    Value::from_serialize(v)
}

/// `Some` only when the value is a real boolean: `when:` must not guess what `"no"` means.
pub fn is_strict_bool(v: &Value) -> Option<bool> {
    (v.kind() == ValueKind::Bool).then(|| v.is_true())
}

/// The Ansible filters. Each error says which filter failed and why.
mod filters {
    use std::io;

    use base64::prelude::*;
    use minijinja::value::{Kwargs, Rest, ValueKind};
    use minijinja::{Environment, Error, ErrorKind, Value};
    use regex::{Regex, RegexBuilder};
    use serde::Serialize;
    use sha2::{Digest, Sha256, Sha512};

    use super::{from_json_value, to_json_value};

    pub(super) fn register(env: &mut Environment<'static>) {
        // default/d, join, upper, lower: minijinja's builtins (they accept undefined in strict mode).
        env.add_filter("regex_replace", regex_replace);
        env.add_filter("regex_search", regex_search);
        env.add_filter("to_json", to_json);
        env.add_filter("to_nice_json", to_nice_json);
        env.add_filter("to_yaml", to_yaml);
        env.add_filter("from_json", from_json);
        env.add_filter("b64encode", b64encode);
        env.add_filter("b64decode", b64decode);
        env.add_filter("combine", combine);
        env.add_filter("basename", basename);
        env.add_filter("dirname", dirname);
        env.add_filter("hash", hash);
        env.add_filter("quote", quote);
        env.add_filter("bool", to_bool);
        env.add_filter("ternary", ternary);
        env.add_filter("unique", unique);
        env.add_filter("flatten", flatten);
        env.add_filter("dict2items", dict2items);
        env.add_filter("items2dict", items2dict);
        env.add_filter("mandatory", mandatory);
    }

    fn fail(filter: &str, why: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{filter}` filter: {why}"),
        )
    }

    fn undefined(filter: &str, what: &str) -> Error {
        Error::new(
            ErrorKind::UndefinedError,
            format!("`{filter}` filter: {what} is undefined"),
        )
    }

    fn defined(filter: &str, what: &str, v: &Value) -> Result<(), Error> {
        if v.is_undefined() {
            Err(undefined(filter, what))
        } else {
            Ok(())
        }
    }

    fn build_regex(filter: &str, pattern: &str, kwargs: &Kwargs) -> Result<Regex, Error> {
        let ignorecase = kwargs.get::<Option<bool>>("ignorecase")?.unwrap_or(false);
        let multiline = kwargs.get::<Option<bool>>("multiline")?.unwrap_or(false);
        RegexBuilder::new(pattern)
            .case_insensitive(ignorecase)
            .multi_line(multiline)
            .build()
            .map_err(|e| {
                fail(
                    filter,
                    format!("invalid regular expression `{pattern}`: {e}"),
                )
            })
    }

    /// A group reference (`1`, `name`) checked against the pattern's groups.
    fn group_ref(filter: &str, re: &Regex, group: &str) -> Result<String, Error> {
        let known = match group.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|name| name == group),
        };
        if known {
            Ok(group.to_owned())
        } else {
            Err(fail(filter, format!("the pattern has no group `{group}`")))
        }
    }

    /// Python's `re.sub` replacement syntax (`\1`, `\g<name>`, `\\`) to the regex crate's (`${1}`).
    fn python_replacement(re: &Regex, replacement: &str) -> Result<String, Error> {
        const FILTER: &str = "regex_replace";
        let mut out = String::new();
        let mut chars = replacement.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '$' => out.push_str("$$"),
                '\\' => match chars.next() {
                    Some(d) if d.is_ascii_digit() => {
                        let mut group = d.to_string();
                        if let Some(d2) = chars.next_if(char::is_ascii_digit) {
                            group.push(d2);
                        }
                        out.push_str(&format!("${{{}}}", group_ref(FILTER, re, &group)?));
                    }
                    Some('g') => {
                        if chars.next() != Some('<') {
                            return Err(fail(
                                FILTER,
                                "`\\g` must be followed by `<name>` or `<number>`",
                            ));
                        }
                        let group: String = chars.by_ref().take_while(|&c| c != '>').collect();
                        out.push_str(&format!("${{{}}}", group_ref(FILTER, re, &group)?));
                    }
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('\\') => out.push('\\'),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return Err(fail(FILTER, "the replacement ends with a lone backslash")),
                },
                c => out.push(c),
            }
        }
        Ok(out)
    }

    /// `value | regex_replace(pattern, replacement='', ignorecase=false, multiline=false, count=0)`.
    fn regex_replace(
        value: String,
        pattern: String,
        replacement: Option<String>,
        kwargs: Kwargs,
    ) -> Result<String, Error> {
        let re = build_regex("regex_replace", &pattern, &kwargs)?;
        let count = kwargs.get::<Option<usize>>("count")?.unwrap_or(0);
        kwargs.assert_all_used()?;
        let replacement = python_replacement(&re, &replacement.unwrap_or_default())?;
        Ok(re
            .replacen(&value, count, replacement.as_str())
            .into_owned())
    }

    /// `value | regex_search(pattern)`: the first match, or none. With group arguments
    /// (`'\\1'`, `'\\g<name>'`), the list of those groups of the first match, like Ansible.
    fn regex_search(
        value: String,
        pattern: String,
        groups: Rest<String>,
        kwargs: Kwargs,
    ) -> Result<Value, Error> {
        const FILTER: &str = "regex_search";
        let re = build_regex(FILTER, &pattern, &kwargs)?;
        kwargs.assert_all_used()?;
        let Some(caps) = re.captures(&value) else {
            return Ok(Value::from(()));
        };
        if groups.is_empty() {
            return Ok(Value::from(&caps[0]));
        }
        let mut out = Vec::new();
        for arg in groups.iter() {
            let group =
                if let Some(name) = arg.strip_prefix("\\g<").and_then(|s| s.strip_suffix('>')) {
                    name
                } else if let Some(number) = arg.strip_prefix('\\') {
                    number
                } else {
                    return Err(fail(
                        FILTER,
                        format!("group arguments look like '\\\\1' or '\\\\g<name>', not `{arg}`"),
                    ));
                };
            let group = group_ref(FILTER, &re, group)?;
            let found = match group.parse::<usize>() {
                Ok(n) => caps.get(n),
                Err(_) => caps.name(&group),
            };
            out.push(found.map_or(Value::from(()), |m| Value::from(m.as_str())));
        }
        Ok(Value::from(out))
    }

    /// Python's `json.dumps` separators (`, ` and `: `), so files look like Ansible wrote them.
    struct PythonCompact;

    impl serde_json::ser::Formatter for PythonCompact {
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }

    fn to_json(value: &Value) -> Result<String, Error> {
        defined("to_json", "the value", value)?;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonCompact);
        to_json_value(value)
            .serialize(&mut ser)
            .map_err(|e| fail("to_json", e))?;
        String::from_utf8(out).map_err(|e| fail("to_json", e))
    }

    /// Keys sorted and 4-space indent, as Ansible's `to_nice_json` (`indent=` overrides).
    fn to_nice_json(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
        defined("to_nice_json", "the value", value)?;
        let indent = kwargs.get::<Option<usize>>("indent")?.unwrap_or(4);
        kwargs.assert_all_used()?;
        let indent = " ".repeat(indent);
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        sorted(to_json_value(value))
            .serialize(&mut ser)
            .map_err(|e| fail("to_nice_json", e))?;
        String::from_utf8(out).map_err(|e| fail("to_nice_json", e))
    }

    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }

    fn to_yaml(value: &Value) -> Result<String, Error> {
        defined("to_yaml", "the value", value)?;
        serde_saphyr::to_string(&to_json_value(value)).map_err(|e| fail("to_yaml", e))
    }

    fn from_json(text: String) -> Result<Value, Error> {
        serde_json::from_str::<serde_json::Value>(&text)
            .map(|json| from_json_value(&json))
            .map_err(|e| fail("from_json", format!("the input is not valid JSON: {e}")))
    }

    fn b64encode(text: String) -> String {
        BASE64_STANDARD.encode(text.as_bytes())
    }

    /// Whitespace (line wrapping of `base64` output) is ignored, as Python does.
    fn b64decode(text: String) -> Result<String, Error> {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = BASE64_STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| fail("b64decode", format!("the input is not valid base64: {e}")))?;
        String::from_utf8(bytes).map_err(|_| {
            fail(
                "b64decode",
                "the decoded bytes are not UTF-8 text (binary data cannot go through a template)",
            )
        })
    }

    #[derive(Clone, Copy)]
    enum ListMerge {
        Replace,
        Keep,
        Append,
        Prepend,
        AppendRp,
        PrependRp,
    }

    /// `a | combine(b, c, recursive=false, list_merge='replace')`: later dictionaries win.
    fn combine(base: Value, others: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
        const FILTER: &str = "combine";
        let recursive = kwargs.get::<Option<bool>>("recursive")?.unwrap_or(false);
        let list_merge = match kwargs.get::<Option<&str>>("list_merge")?.unwrap_or("replace") {
            "replace" => ListMerge::Replace,
            "keep" => ListMerge::Keep,
            "append" => ListMerge::Append,
            "prepend" => ListMerge::Prepend,
            "append_rp" => ListMerge::AppendRp,
            "prepend_rp" => ListMerge::PrependRp,
            other => {
                return Err(fail(
                    FILTER,
                    format!(
                        "list_merge must be replace, keep, append, prepend, append_rp or prepend_rp, not `{other}`"
                    ),
                ))
            }
        };
        kwargs.assert_all_used()?;
        defined(FILTER, "the dictionary to merge into", &base)?;
        let serde_json::Value::Object(mut merged) = to_json_value(&base) else {
            return Err(fail(
                FILTER,
                format!("expected a dictionary to merge into, got {}", base.kind()),
            ));
        };
        // Ansible also accepts lists of dictionaries as arguments.
        let mut dicts = Vec::new();
        for (n, other) in others.iter().enumerate() {
            defined(FILTER, &format!("argument {}", n + 1), other)?;
            match to_json_value(other) {
                serde_json::Value::Object(map) => dicts.push(map),
                serde_json::Value::Array(items) => {
                    for item in items {
                        match item {
                            serde_json::Value::Object(map) => dicts.push(map),
                            _ => {
                                return Err(fail(
                                    FILTER,
                                    format!(
                                    "argument {} is a list with something else than dictionaries",
                                    n + 1
                                ),
                                ))
                            }
                        }
                    }
                }
                _ => {
                    return Err(fail(
                        FILTER,
                        format!(
                            "argument {} should be a dictionary, got {}",
                            n + 1,
                            other.kind()
                        ),
                    ))
                }
            }
        }
        for dict in dicts {
            merge(&mut merged, dict, recursive, list_merge);
        }
        Ok(from_json_value(&serde_json::Value::Object(merged)))
    }

    fn merge(
        into: &mut serde_json::Map<String, serde_json::Value>,
        from: serde_json::Map<String, serde_json::Value>,
        recursive: bool,
        list_merge: ListMerge,
    ) {
        use serde_json::Value as Json;
        for (key, new) in from {
            match (into.get_mut(&key), new) {
                (Some(Json::Object(old)), Json::Object(new)) if recursive => {
                    merge(old, new, recursive, list_merge)
                }
                (Some(Json::Array(old)), Json::Array(new)) => {
                    let merged = match list_merge {
                        ListMerge::Replace => new,
                        ListMerge::Keep => std::mem::take(old),
                        ListMerge::Append => old.drain(..).chain(new).collect(),
                        ListMerge::Prepend => new.into_iter().chain(old.drain(..)).collect(),
                        ListMerge::AppendRp => {
                            let kept = old
                                .drain(..)
                                .filter(|x| !new.contains(x))
                                .collect::<Vec<_>>();
                            kept.into_iter().chain(new).collect()
                        }
                        ListMerge::PrependRp => {
                            let kept = old
                                .drain(..)
                                .filter(|x| !new.contains(x))
                                .collect::<Vec<_>>();
                            new.into_iter().chain(kept).collect()
                        }
                    };
                    *old = merged;
                }
                (_, new) => {
                    into.insert(key, new);
                }
            }
        }
    }

    /// Python's `os.path.basename`: `/etc/ssh/` gives an empty string.
    fn basename(path: String) -> String {
        path.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// Python's `os.path.dirname`: `/etc/ssh/sshd_config` → `/etc/ssh`, `motd` → ``, `/etc` → `/`.
    fn dirname(path: String) -> String {
        let head = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => return String::new(),
        };
        if head.chars().all(|c| c == '/') {
            head.to_owned()
        } else {
            head.trim_end_matches('/').to_owned()
        }
    }

    fn hash(text: String, algorithm: Option<String>) -> Result<String, Error> {
        match algorithm.as_deref() {
            Some("sha256") => Ok(hex::encode(Sha256::digest(text.as_bytes()))),
            Some("sha512") => Ok(hex::encode(Sha512::digest(text.as_bytes()))),
            Some(other) => Err(fail(
                "hash",
                format!("unsupported algorithm `{other}`; use 'sha256' or 'sha512'"),
            )),
            None => Err(fail(
                "hash",
                "name the algorithm: `hash('sha256')` or `hash('sha512')`",
            )),
        }
    }

    /// POSIX shell quoting, as Python's `shlex.quote`: safe words stay as they are.
    fn quote(text: String) -> String {
        let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
        if text.is_empty() {
            "''".to_owned()
        } else if text.chars().all(safe) {
            text
        } else {
            format!("'{}'", text.replace('\'', r#"'"'"'"#))
        }
    }

    /// Ansible's truth words; anything else is an error rather than a silent false.
    fn to_bool(value: &Value) -> Result<bool, Error> {
        const FILTER: &str = "bool";
        match value.kind() {
            ValueKind::Undefined => Err(undefined(FILTER, "the value")),
            ValueKind::Bool => Ok(value.is_true()),
            ValueKind::Number => match value.as_i64() {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(fail(FILTER, format!("{value} is not 0 or 1"))),
            },
            ValueKind::String => {
                let text = value.as_str().unwrap_or_default().trim().to_lowercase();
                match text.as_str() {
                    "true" | "yes" | "on" | "1" => Ok(true),
                    "false" | "no" | "off" | "0" | "" => Ok(false),
                    _ => Err(fail(
                        FILTER,
                        format!("`{value}` is not a truth value (true/yes/on/1 or false/no/off/0)"),
                    )),
                }
            }
            kind => Err(fail(
                FILTER,
                format!("cannot read a {kind} as true or false"),
            )),
        }
    }

    /// `cond | ternary(if_true, if_false, if_none)`, Python truthiness like Ansible.
    fn ternary(
        value: &Value,
        if_true: Value,
        if_false: Value,
        if_none: Option<Value>,
    ) -> Result<Value, Error> {
        defined("ternary", "the condition", value)?;
        Ok(match if_none {
            Some(if_none) if value.is_none() => if_none,
            _ if value.is_true() => if_true,
            _ => if_false,
        })
    }

    fn items_of(filter: &str, value: &Value) -> Result<Vec<Value>, Error> {
        match value.kind() {
            ValueKind::Undefined => Err(undefined(filter, "the list")),
            ValueKind::Seq | ValueKind::Iterable => Ok(value.try_iter()?.collect()),
            kind => Err(fail(filter, format!("expected a list, got {kind}"))),
        }
    }

    /// First occurrences in order; case-sensitive (package and user names are), unlike
    /// minijinja's builtin. `case_sensitive=false` folds strings.
    fn unique(values: Value, kwargs: Kwargs) -> Result<Value, Error> {
        let case_sensitive = kwargs
            .get::<Option<bool>>("case_sensitive")?
            .unwrap_or(true);
        kwargs.assert_all_used()?;
        let fold = |v: &Value| match v.as_str() {
            Some(s) if !case_sensitive => Value::from(s.to_lowercase()),
            _ => v.clone(),
        };
        let mut seen: Vec<Value> = Vec::new();
        let mut out = Vec::new();
        for item in items_of("unique", &values)? {
            let key = fold(&item);
            if !seen.contains(&key) {
                seen.push(key);
                out.push(item);
            }
        }
        Ok(Value::from(out))
    }

    /// `list | flatten(levels=None, skip_nulls=true)`.
    fn flatten(values: Value, levels: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
        let levels = match levels {
            Some(levels) => Some(levels),
            None => kwargs.get::<Option<usize>>("levels")?,
        };
        let skip_nulls = kwargs.get::<Option<bool>>("skip_nulls")?.unwrap_or(true);
        kwargs.assert_all_used()?;
        let mut out = Vec::new();
        flatten_into(&mut out, items_of("flatten", &values)?, levels, skip_nulls)?;
        Ok(Value::from(out))
    }

    fn flatten_into(
        out: &mut Vec<Value>,
        items: Vec<Value>,
        levels: Option<usize>,
        skip_nulls: bool,
    ) -> Result<(), Error> {
        for item in items {
            let null = item.is_none() || matches!(item.as_str(), Some("None" | "null"));
            if skip_nulls && null {
                continue;
            }
            match (item.kind(), levels) {
                (ValueKind::Seq, None) => {
                    flatten_into(out, item.try_iter()?.collect(), None, skip_nulls)?
                }
                (ValueKind::Seq, Some(n)) if n >= 1 => {
                    flatten_into(out, item.try_iter()?.collect(), Some(n - 1), skip_nulls)?
                }
                _ => out.push(item),
            }
        }
        Ok(())
    }

    fn key_names(kwargs: &Kwargs) -> Result<(String, String), Error> {
        let key = kwargs
            .get::<Option<String>>("key_name")?
            .unwrap_or_else(|| "key".into());
        let value = kwargs
            .get::<Option<String>>("value_name")?
            .unwrap_or_else(|| "value".into());
        kwargs.assert_all_used()?;
        Ok((key, value))
    }

    /// `{a: 1}` → `[{key: a, value: 1}]`.
    fn dict2items(dict: Value, kwargs: Kwargs) -> Result<Value, Error> {
        const FILTER: &str = "dict2items";
        let (key_name, value_name) = key_names(&kwargs)?;
        match dict.kind() {
            ValueKind::Undefined => return Err(undefined(FILTER, "the dictionary")),
            ValueKind::Map => {}
            kind => return Err(fail(FILTER, format!("expected a dictionary, got {kind}"))),
        }
        let mut out = Vec::new();
        for key in dict.try_iter()? {
            let value = dict.get_item(&key)?;
            out.push(Value::from_iter([
                (key_name.as_str(), key),
                (value_name.as_str(), value),
            ]));
        }
        Ok(Value::from(out))
    }

    /// `[{key: a, value: 1}]` → `{a: 1}`.
    fn items2dict(items: Value, kwargs: Kwargs) -> Result<Value, Error> {
        const FILTER: &str = "items2dict";
        let (key_name, value_name) = key_names(&kwargs)?;
        let mut pairs = Vec::new();
        for (n, item) in items_of(FILTER, &items)?.into_iter().enumerate() {
            let field = |name: &str| match item.get_attr(name) {
                Ok(v) if !v.is_undefined() && item.kind() == ValueKind::Map => Ok(v),
                _ => Err(fail(FILTER, format!("item {} has no `{name}`", n + 1))),
            };
            pairs.push((field(&key_name)?, field(&value_name)?));
        }
        Ok(Value::from_iter(pairs))
    }

    /// `var | mandatory`: fail loudly, even where a fallback would otherwise be tempting.
    fn mandatory(value: &Value, msg: Option<String>) -> Result<Value, Error> {
        if value.is_undefined() {
            let msg = msg.unwrap_or_else(|| "mandatory variable not set".to_owned());
            return Err(Error::new(ErrorKind::UndefinedError, msg));
        }
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(json: serde_json::Value) -> Value {
        from_json_value(&json)
    }

    fn vars() -> Value {
        ctx(json!({
            "name": "pica01",
            "site": "toulouse",
            "port": 22,
            "users": ["alice", "bob"],
            "user": {"name": "alice", "shell": "/bin/bash"},
            "empty": "",
            "flag": "yes",
            "nothing": null,
            "hostvars": {"db1": {"site": "compiegne"}},
        }))
    }

    #[test]
    fn filters_render_like_ansible() {
        let t = Templates::new();
        let table: &[(&str, &str)] = &[
            // default / d, in strict mode
            ("{{ missing | default('x') }}", "x"),
            ("{{ missing | d(1) }}", "1"),
            ("{{ name | default('x') }}", "pica01"),
            ("{{ empty | default('x', true) }}", "x"),
            ("{% if missing is defined %}yes{% else %}no{% endif %}", "no"),
            ("{% if name is defined %}yes{% else %}no{% endif %}", "yes"),
            // builtins
            ("{{ users | join(',') }}", "alice,bob"),
            ("{{ name | upper }}", "PICA01"),
            ("{{ 'ABC' | lower }}", "abc"),
            // regex_replace, Python backrefs
            (r"{{ 'pica01' | regex_replace('^pica(\\d+)$', 'host-\\1') }}", "host-01"),
            (r"{{ 'pica01' | regex_replace('(?P<n>\\d+)', '<\\g<n>>') }}", "pica<01>"),
            (r"{{ 'pica01' | regex_replace('(\\d+)', '\\g<1>$') }}", "pica01$"),
            ("{{ 'a-b-c' | regex_replace('-') }}", "abc"),
            ("{{ 'a-b-c' | regex_replace('-', '+', count=1) }}", "a+b-c"),
            ("{{ 'ABC' | regex_replace('b', 'x', ignorecase=true) }}", "AxC"),
            // regex_search
            (r"{{ 'port=2222' | regex_search('\\d+') }}", "2222"),
            ("{{ 'abc' | regex_search('z') is none }}", "True"),
            (r"{{ 'k=v' | regex_search('(\\w)=(\\w)', '\\2', '\\1') }}", "[\"v\", \"k\"]"),
            // JSON and YAML
            ("{{ user | to_json }}", r#"{"name": "alice", "shell": "/bin/bash"}"#),
            ("{{ [1, 'a'] | to_json }}", r#"[1, "a"]"#),
            ("{{ {'b': 1, 'a': [true]} | to_nice_json }}", "{\n    \"a\": [\n        true\n    ],\n    \"b\": 1\n}"),
            ("{{ {'a': 1} | to_nice_json(indent=2) }}", "{\n  \"a\": 1\n}"),
            ("{{ ('{\"a\": [1, 2]}' | from_json).a[1] }}", "2"),
            // base64
            ("{{ 'picasoft' | b64encode }}", "cGljYXNvZnQ="),
            ("{{ 'cGljYXNv\nZnQ=\n' | b64decode }}", "picasoft"),
            // combine
            ("{{ ({'a': 1, 'b': {'x': 1}} | combine({'b': {'y': 2}})).b | to_json }}", r#"{"y": 2}"#),
            ("{{ ({'a': 1, 'b': {'x': 1}} | combine({'b': {'y': 2}}, recursive=true)).b | to_json }}", r#"{"x": 1, "y": 2}"#),
            ("{{ {'a': 1} | combine({'a': 2}, {'c': 3}) | to_json }}", r#"{"a": 2, "c": 3}"#),
            ("{{ {'l': [1, 2]} | combine({'l': [2, 3]}, list_merge='append_rp') | to_json }}", r#"{"l": [1, 2, 3]}"#),
            ("{{ {'l': [1]} | combine({'l': [2]}, list_merge='prepend') | to_json }}", r#"{"l": [2, 1]}"#),
            // paths
            ("{{ '/etc/ssh/sshd_config' | basename }}", "sshd_config"),
            ("{{ '/etc/ssh/' | basename }}", ""),
            ("{{ '/etc/ssh/sshd_config' | dirname }}", "/etc/ssh"),
            ("{{ '/etc' | dirname }}", "/"),
            ("{{ 'motd' | dirname }}", ""),
            // hash
            ("{{ 'abc' | hash('sha256') }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("{{ ('abc' | hash('sha512'))[:16] }}", "ddaf35a193617aba"),
            // quote
            ("{{ 'simple/path-1.txt' | quote }}", "simple/path-1.txt"),
            ("{{ \"it's here\" | quote }}", r#"'it'"'"'s here'"#),
            ("{{ '' | quote }}", "''"),
            // bool
            ("{{ flag | bool }}", "True"),
            ("{{ 'Off' | bool }}", "False"),
            ("{{ '' | bool }}", "False"),
            ("{{ 1 | bool }}", "True"),
            ("{{ false | bool }}", "False"),
            // ternary
            ("{{ (site == 'toulouse') | ternary('tls', 'ams') }}", "tls"),
            ("{{ nothing | ternary('a', 'b', 'none') }}", "none"),
            ("{{ empty | ternary('a', 'b') }}", "b"),
            // unique, flatten
            ("{{ ['a', 'A', 'a', 'b'] | unique | join(',') }}", "a,A,b"),
            ("{{ ['a', 'A'] | unique(case_sensitive=false) | join(',') }}", "a"),
            ("{{ [1, [2, [3, none]], 'null'] | flatten | to_json }}", "[1, 2, 3]"),
            ("{{ [1, [2, [3]]] | flatten(1) | to_json }}", "[1, 2, [3]]"),
            ("{{ [1, [2, [3]]] | flatten(levels=1) | to_json }}", "[1, 2, [3]]"),
            // dict2items, items2dict
            ("{{ {'a': 1} | dict2items | to_json }}", r#"[{"key": "a", "value": 1}]"#),
            ("{{ {'a': 1} | dict2items(key_name='k', value_name='v') | to_json }}", r#"[{"k": "a", "v": 1}]"#),
            ("{{ [{'key': 'a', 'value': 1}] | items2dict | to_json }}", r#"{"a": 1}"#),
            ("{{ [{'n': 'a', 'v': 1}] | items2dict(key_name='n', value_name='v') | to_json }}", r#"{"a": 1}"#),
            // mandatory
            ("{{ name | mandatory }}", "pica01"),
        ];
        for (source, expected) in table {
            let got = t.render_str(source, &vars());
            assert_eq!(got.as_deref(), Ok(*expected), "template: {source}");
        }
    }

    #[test]
    fn to_yaml_writes_block_style() {
        let t = Templates::new();
        let got = t
            .render_str(
                "{{ v | to_yaml }}",
                &ctx(json!({"v": {"mode": "0644", "b": [1, "yes"]}})),
            )
            .unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&got).unwrap();
        assert_eq!(
            back,
            json!({"mode": "0644", "b": [1, "yes"]}),
            "yaml was:\n{got}"
        );
        assert!(got.contains("mode: "), "yaml was:\n{got}");
        assert!(!got.contains('{'), "yaml was:\n{got}");
    }

    #[test]
    fn filter_errors_name_the_filter_and_the_reason() {
        let t = Templates::new();
        let table: &[(&str, TemplateErrorKind, &str)] = &[
            (
                "{{ 'x' | regex_replace('(', '') }}",
                TemplateErrorKind::Other,
                "`regex_replace` filter: invalid regular expression `(`",
            ),
            (
                r"{{ 'x' | regex_replace('x', '\\2') }}",
                TemplateErrorKind::Other,
                "`regex_replace` filter: the pattern has no group `2`",
            ),
            (
                "{{ 'x' | regex_search('(') }}",
                TemplateErrorKind::Other,
                "`regex_search` filter: invalid regular expression",
            ),
            (
                "{{ 'not json' | from_json }}",
                TemplateErrorKind::Other,
                "`from_json` filter: the input is not valid JSON",
            ),
            (
                "{{ '%%%' | b64decode }}",
                TemplateErrorKind::Other,
                "`b64decode` filter: the input is not valid base64",
            ),
            (
                "{{ '/w==' | b64decode }}",
                TemplateErrorKind::Other,
                "`b64decode` filter: the decoded bytes are not UTF-8",
            ),
            (
                "{{ users | combine({}) }}",
                TemplateErrorKind::Other,
                "`combine` filter: expected a dictionary to merge into, got seq",
            ),
            (
                "{{ {} | combine(1) }}",
                TemplateErrorKind::Other,
                "`combine` filter: argument 1 should be a dictionary",
            ),
            (
                "{{ {} | combine({}, list_merge='zip') }}",
                TemplateErrorKind::Other,
                "`combine` filter: list_merge must be",
            ),
            (
                "{{ 'x' | hash('md5') }}",
                TemplateErrorKind::Other,
                "`hash` filter: unsupported algorithm `md5`",
            ),
            (
                "{{ 'x' | hash }}",
                TemplateErrorKind::Other,
                "`hash` filter: name the algorithm",
            ),
            (
                "{{ 'maybe' | bool }}",
                TemplateErrorKind::Other,
                "`bool` filter: `maybe` is not a truth value",
            ),
            (
                "{{ 2 | bool }}",
                TemplateErrorKind::Other,
                "`bool` filter: 2 is not 0 or 1",
            ),
            (
                "{{ 'abc' | unique }}",
                TemplateErrorKind::Other,
                "`unique` filter: expected a list, got string",
            ),
            (
                "{{ 3 | flatten }}",
                TemplateErrorKind::Other,
                "`flatten` filter: expected a list",
            ),
            (
                "{{ users | dict2items }}",
                TemplateErrorKind::Other,
                "`dict2items` filter: expected a dictionary",
            ),
            (
                "{{ [{'key': 'a'}] | items2dict }}",
                TemplateErrorKind::Other,
                "`items2dict` filter: item 1 has no `value`",
            ),
            (
                "{{ missing | mandatory }}",
                TemplateErrorKind::Undefined,
                "mandatory variable not set: `missing`",
            ),
            (
                "{{ missing | mandatory('set db_password in the vault') }}",
                TemplateErrorKind::Undefined,
                "set db_password in the vault: `missing`",
            ),
            (
                "{{ missing | bool }}",
                TemplateErrorKind::Undefined,
                "`bool` filter: the value is undefined: `missing`",
            ),
            (
                "{{ missing | to_json }}",
                TemplateErrorKind::Undefined,
                "`to_json` filter: the value is undefined",
            ),
            (
                "{{ user | combine(missing) }}",
                TemplateErrorKind::Undefined,
                "`combine` filter: argument 1 is undefined (passed to filter `combine`)",
            ),
        ];
        for (source, kind, expected) in table {
            let err = t.render_str(source, &vars()).unwrap_err();
            assert_eq!(err.kind, *kind, "template: {source}: {err}");
            assert!(
                err.message.contains(expected),
                "template: {source}\n  got: {err}\n want: {expected}"
            );
        }
    }

    #[test]
    fn strict_undefined_names_the_variable_and_its_place() {
        let t = Templates::new();
        let table: &[(&str, &str, usize, usize)] = &[
            ("{{ foo }}", "undefined variable `foo`", 1, 4),
            (
                "hello\n  {{ name }} {{ foo }}!",
                "undefined variable `foo`",
                2,
                17,
            ),
            ("{{ user.nope }}", "`user.nope` is undefined", 1, 4),
            (
                "{{ nope.shell }}",
                "undefined variable `nope` (in `nope.shell`)",
                1,
                4,
            ),
            (
                "{% for u in [{'a': 1}] %}{{ u.shell }}{% endfor %}",
                "`u.shell` is undefined",
                1,
                29,
            ),
            ("{% if foo %}x{% endif %}", "undefined variable `foo`", 1, 7),
            (
                "{{ foo | upper }}",
                "undefined variable `foo` (passed to filter `upper`)",
                1,
                10,
            ),
            // minijinja's range starts at the subscript here, so does the column.
            (
                "{{ hostvars['db1'].address }}",
                "`hostvars['db1'].address` is undefined",
                1,
                12,
            ),
            (
                "{{ hostvars['db2'].address }}",
                "`hostvars['db2']` is undefined (in `hostvars['db2'].address`)",
                1,
                12,
            ),
        ];
        for (source, expected, line, column) in table {
            let err = t.render_str(source, &vars()).unwrap_err();
            assert_eq!(
                err.kind,
                TemplateErrorKind::Undefined,
                "template: {source}: {err}"
            );
            assert!(
                err.message.contains(expected),
                "template: {source}\n  got: {err}\n want: {expected}"
            );
            assert_eq!(
                (err.line, err.column),
                (Some(*line), Some(*column)),
                "template: {source}: {err}"
            );
        }
        let shown = t.render_str("{{ foo }}", &vars()).unwrap_err().to_string();
        assert!(shown.contains("`foo | default(...)`"), "{shown}");
        assert!(shown.ends_with("(line 1, column 4)"), "{shown}");
    }

    #[test]
    fn syntax_errors_point_into_the_source() {
        let t = Templates::new();
        let table: &[(&str, usize, usize, &str)] = &[
            (
                "line one\n{% if x %}never closed\n",
                2,
                1,
                "this `{% if %}` is never closed; add `{% endif %}`",
            ),
            ("a\nb {{ x + }}", 2, 10, "unexpected end of variable block"),
            ("{{ 'é' ~ }}", 1, 10, "unexpected end of variable block"),
            (
                "{% for u in users %}\n  {% if u %}x{% endif %}\n{% if 'é' %}",
                3,
                1,
                "this `{% if %}` is never closed; add `{% endif %}`",
            ),
            (
                "{% for u in users %}\n  {% if u %}x{% endif %}\n",
                1,
                1,
                "this `{% for %}` is never closed; add `{% endfor %}`",
            ),
        ];
        for (source, line, column, expected) in table {
            let err = t.check_syntax(source).unwrap_err();
            assert_eq!(err.kind, TemplateErrorKind::Syntax, "{source:?}: {err}");
            assert!(err.message.contains(expected), "{source:?}: {err}");
            assert_eq!(
                (err.line, err.column),
                (Some(*line), Some(*column)),
                "{source:?}: {err}"
            );
            assert_eq!(t.render_str(source, &vars()).unwrap_err(), err);
        }
        let err = t.check_expr_syntax("site ==").unwrap_err();
        assert_eq!(
            (err.kind, err.line),
            (TemplateErrorKind::Syntax, Some(1)),
            "{err}"
        );
        assert!(t.check_syntax("{% if x %}y{% endif %}").is_ok());
        assert!(t
            .check_expr_syntax("site == 'toulouse' and x | bool")
            .is_ok());
    }

    #[test]
    fn render_value_returns_native_values_for_a_lone_expression() {
        let t = Templates::new();
        let table = [
            (json!("{{ users }}"), json!(["alice", "bob"])),
            (json!("{{ port }}"), json!(22)),
            (json!("{{ port > 10 }}"), json!(true)),
            (
                json!("{{ user }}"),
                json!({"name": "alice", "shell": "/bin/bash"}),
            ),
            (json!("{{ nothing }}"), json!(null)),
            (json!("{{- users -}}"), json!(["alice", "bob"])),
            (json!("{{ users }}\n"), json!(["alice", "bob"])),
            (json!("{{ port }}\n"), json!("22\n")),
            (json!("port {{ port }}"), json!("port 22")),
            (json!("{{ port }}{{ port }}"), json!("2222")),
            (json!("no template"), json!("no template")),
            (json!(7), json!(7)),
            (
                json!({"dest": "/srv/{{ name }}", "{{ site }}_users": "{{ users }}", "n": [1, "{{ port }}"]}),
                json!({"dest": "/srv/pica01", "toulouse_users": ["alice", "bob"], "n": [1, 22]}),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(
                t.render_value(&input, &vars()).unwrap(),
                expected,
                "input: {input}"
            );
        }
    }

    #[test]
    fn render_value_errors_point_into_the_string() {
        let t = Templates::new();
        let err = t
            .render_value(&json!({"a": ["  {{ missing }}"]}), &vars())
            .unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::Undefined);
        assert!(
            err.message.starts_with("undefined variable `missing`"),
            "{err}"
        );
        assert_eq!((err.line, err.column), (Some(1), Some(6)), "{err}");

        let err = t
            .render_value(&json!("{{ port | nosuch }}"), &vars())
            .unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::Other);
        assert!(err.message.contains("unknown filter"), "{err}");

        let err = t
            .render_value(&json!({"{{ site }}": 1, "toulouse": 2}), &vars())
            .unwrap_err();
        assert!(
            err.message
                .contains("two keys of the same map render to `toulouse`"),
            "{err}"
        );
    }

    #[test]
    fn eval_expr_returns_the_value_and_its_kind() {
        let t = Templates::new();
        let table = [
            ("site == 'toulouse'", Some(true)),
            ("port > 100", Some(false)),
            ("flag | bool", Some(true)),
            ("missing is defined", Some(false)),
            ("flag", None),
            ("users", None),
        ];
        for (expr, expected) in table {
            let value = t.eval_expr(expr, &vars()).unwrap();
            assert_eq!(is_strict_bool(&value), expected, "expr: {expr}");
        }
        assert_eq!(t.eval_expr("flag", &vars()).unwrap().as_str(), Some("yes"));

        let err = t.eval_expr("missing", &vars()).unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::Undefined);
        assert!(
            err.message.starts_with("undefined variable `missing`"),
            "{err}"
        );
        // `and` short-circuits: the undefined right side is never looked at.
        let value = t.eval_expr("site == 'x' and missing", &vars()).unwrap();
        assert_eq!(is_strict_bool(&value), Some(false));
        let err = t
            .eval_expr("site == 'toulouse' and missing", &vars())
            .unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::Undefined, "{err}");
    }

    #[test]
    fn referenced_vars_lists_what_the_template_reads() {
        let t = Templates::new();
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let table: &[(&str, &[&str])] = &[
            (
                "{{ a }} {{ b.c }} {{ d | default(e) }}",
                &["a", "b", "d", "e"],
            ),
            ("{% for x in xs %}{{ x }}{{ y }}{% endfor %}", &["xs", "y"]),
            ("{% set z = 1 %}{{ z }}", &[]),
            ("{{ broken", &[]),
        ];
        for (source, expected) in table {
            assert_eq!(
                t.referenced_vars(source),
                set(expected),
                "template: {source}"
            );
        }
        assert_eq!(
            t.referenced_vars_expr("site == 'x' and groups.web"),
            set(&["site", "groups"])
        );
        assert_eq!(t.referenced_vars_expr("site =="), set(&[]));
    }

    #[test]
    fn json_round_trip_keeps_types() {
        let input = json!({"a": [1, 2.5, "x", true, null], "b": {"c": -3}});
        assert_eq!(to_json_value(&from_json_value(&input)), input);
        assert_eq!(to_json_value(&Value::UNDEFINED), serde_json::Value::Null);
        assert_eq!(is_strict_bool(&Value::from("true")), None);
        assert_eq!(is_strict_bool(&Value::from(false)), Some(false));
    }

    #[test]
    fn rendering_keeps_text_as_written() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("<b>{{ '<&>' }}</b>\n", &vars()).unwrap(),
            "<b><&></b>\n"
        );
    }
}
