//! What the template tests share: expanding a playbook for every host of an inventory, as `plan`
//! does before it contacts anyone (no host is contacted), and the fuzz tests' mutator, seeds and
//! time-bounded runner. Each test file uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use picaops::converge::expand::{Context, HostExpander};
use picaops::diagnostic::{Diagnostic, Sources};
use picaops::playbook::budget::Limits;
use picaops::playbook::template::Templates;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads `playbook` (its `templates/` and `files/` next to it) and expands it for every host of
/// the inventory at `inventory`, as `plan` does before contacting anyone. Returns the errors.
/// `engine_vars`: add the access and backup engines' variables when the playbook uses them, as
/// `plan` does (`Err` when they cannot be computed).
pub fn expand_all(
    inventory: &Path,
    playbook: &Path,
    templates: &Templates,
    engine_vars: bool,
) -> Result<Vec<Diagnostic>, String> {
    let loaded = picaops::inventory::load(inventory);
    let mut inv = loaded
        .result
        .map_err(|d| format!("the inventory does not load: {:?}", d[0].message))?;
    let mut sources = Sources::default();
    let books =
        match picaops::converge::load_playbooks(&[playbook.to_path_buf()], templates, &mut sources)
        {
            Ok(books) => books,
            Err(diags) => return Ok(diags),
        };
    let text = std::fs::read_to_string(playbook).unwrap_or_default();
    if engine_vars && text.contains("picaops_access") {
        picaops::access::vars::add_engine_vars(&mut inv).map_err(|e| e.to_string())?;
    }
    if engine_vars && text.contains("picaops_backup") {
        picaops::backup::deploy::add_engine_vars(&mut inv).map_err(|e| e.to_string())?;
    }
    let sources = Mutex::new(sources);
    let extra = BTreeMap::new();
    let cx = Context::new(&inv, &books, templates, &extra, &[], &[], &sources);
    let mut diags = Vec::new();
    for machine in inv.machines() {
        let mut ex = HostExpander::new(&cx, machine, false);
        if let Err(d) = ex.expand_all() {
            diags.push(d);
        }
    }
    Ok(diags)
}

/// Limits of the fuzz renders: lower than the defaults so hostile cases stop fast (and renders
/// stopped at the memory limit, which keep what they hold, hold little).
pub fn limits() -> Limits {
    Limits {
        fuel: 200_000,
        memory_bytes: 256 << 10,
        time: Duration::from_secs(20),
    }
}

/// A case (load + expand every host, or one render) must end within this, or it is a hang.
pub const CASE_BOUND: Duration = Duration::from_secs(60);

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces the mutator inserts: template syntax, YAML syntax, multibyte text, hostile bits.
pub const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{ item }}",
    "{{ missing }}",
    "{{ site }}",
    " | ",
    "~",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    ":",
    "- ",
    "\n",
    "\n  ",
    "  ",
    "é",
    "è",
    "Compiègne",
    "€",
    "🦀",
    "\t",
    "{% if x %}",
    "{% endif %}",
    "{% for x in range(100000) %}",
    "{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{% set s = s ~ s %}",
    "| bool",
    "| to_json",
    "| regex_replace('(', '')",
    "| b64decode",
    "| combine(1)",
    "when: ",
    "loop: ",
    "register: r",
    "notify: n",
    "{{ r.stdout }}",
    "!!binary",
    "&a",
    "*a",
    "? ",
    "null",
    "~\n",
    "0755",
    "yes",
    "{{ 99999999999999999999 }}",
    "{{ -1 | center(2) }}",
    "{{ ''.join }}",
    "{{ lipsum }}",
    "{{ range(-5) }}",
];

/// One mutation of `text`, always valid UTF-8.
pub fn mutate(rng: &mut Rng, text: &str, donors: &[String]) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |rng: &mut Rng| rng.below(chars.len() + 1);
    let collect = |cs: &[char]| cs.iter().collect::<String>();
    match rng.below(7) {
        0 => {
            // Delete a span.
            let a = at(rng);
            let b = (a + 1 + rng.below(40)).min(chars.len());
            format!("{}{}", collect(&chars[..a]), collect(&chars[b.max(a)..]))
        }
        1 => {
            // Duplicate a span.
            let a = at(rng);
            let b = (a + 1 + rng.below(80)).min(chars.len());
            let span = collect(&chars[a.min(b)..b]);
            format!("{}{span}{}", collect(&chars[..b]), collect(&chars[b..]))
        }
        2 | 3 => {
            let a = at(rng);
            let token = rng.pick(TOKENS);
            format!("{}{token}{}", collect(&chars[..a]), collect(&chars[a..]))
        }
        4 => {
            // Swap two lines.
            let mut lines: Vec<&str> = text.split('\n').collect();
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        5 => {
            // Splice a line of another seed.
            let donor = rng.pick(donors);
            let line = *rng.pick(&donor.split('\n').collect::<Vec<_>>());
            let a = at(rng);
            format!("{}{line}\n{}", collect(&chars[..a]), collect(&chars[a..]))
        }
        _ => {
            // Replace one character by a multibyte one.
            let a = rng.below(chars.len().max(1));
            let mut out = chars.clone();
            if a < out.len() {
                out[a] = *rng.pick(&['é', 'ß', '€', '\u{1F980}', '\u{0}', '\u{FEFF}']);
            }
            collect(&out)
        }
    }
}

/// Hostile templates, generated: each must stop at a limit or fail with a clean error.
pub fn hostile(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(6);
    match rng.below(10) {
        0 => {
            let mut t = String::new();
            for i in 0..depth {
                t.push_str(&format!("{{% for v{i} in range(100000) %}}"));
            }
            t.push_str("{{ v0 }}");
            t.push_str(&"{% endfor %}".repeat(depth));
            t
        }
        1 => format!(
            "{{% set s = '{}' %}}{}{{{{ s }}}}",
            "ab".repeat(1 + rng.below(8)),
            "{% set s = s ~ s ~ s %}".repeat(10 + rng.below(40))
        ),
        2 => format!(
            "{{% set ns = namespace(s='x') %}}{{% for i in range({}) %}}{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}{{{{ ns.s | length }}}}",
            30 + rng.below(30)
        ),
        3 => "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".into(),
        4 => "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}".into(),
        5 => format!(
            "{{% include '{}' %}}",
            ["self.j2", "t.j2", "../../etc/passwd"][rng.below(3)]
        ),
        6 => format!(
            "{}{}{}",
            "(".repeat(50 + rng.below(5000)),
            "1",
            ")".repeat(50 + rng.below(5000))
        ),
        7 => format!(
            "{}x{}",
            "{% if true %}".repeat(10 + rng.below(500)),
            "{% endif %}".repeat(10 + rng.below(500))
        ),
        8 => format!(
            "{{{{ {} }}}}",
            [
                "'a' | center(1000000000000)",
                "'a' | indent(1000000000)",
                "range(100000) | join(',' * 100000000)",
                "('x' * 100000000) ~ ('x' * 100000000)",
                "range(100000) | list | map('string') | join * 1000",
                "[range(100000) | list] * 100000",
                "'%s' | format('x' * 90000000)",
                "'x' * 100000000 | replace('x', 'yy')",
                "(range(100000) | list * 100000) | length",
                "'x' | wordwrap(1000000000)",
                "'x' | truncate(1000000000000)",
            ][rng.below(11)]
        ),
        _ => {
            let mut t = String::from("{% set l = [1] %}");
            for _ in 0..depth + 20 {
                t.push_str("{% set l = l + l %}");
            }
            t.push_str("{{ l | length }}");
            t
        }
    }
}

/// Runs `work` on a thread; `Err` when it panicked (with the message) or did not end in time.
pub fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let out = catch_unwind(AssertUnwindSafe(work)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            });
            let _ = tx.send(out);
        })
        .expect("thread starts");
    match rx.recv_timeout(CASE_BOUND) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(panic)) => Err(format!("panicked: {panic}")),
        Err(_) => Err(format!("still running after {CASE_BOUND:?}")),
    }
}

/// What one case gave.
#[derive(Default, Debug)]
pub struct Tally {
    pub cases: usize,
    pub ok: usize,
    pub errors: usize,
    pub limit_stops: usize,
    /// Renders stopped at the memory limit hold so much that no more are started: the run ends.
    pub exhausted: bool,
}

impl Tally {
    /// Counts an error message; a limit stop names the variable that raises the limit.
    pub fn error(&mut self, message: &str) {
        self.errors += 1;
        if message.contains("PICAOPS_TEMPLATE_") {
            self.limit_stops += 1;
        }
        if message.contains("templates stopped earlier at their memory limit") {
            self.exhausted = true;
        }
    }
}

/// The seeds: playbooks with their directory, and template texts.
pub fn seeds() -> (Vec<PathBuf>, Vec<String>) {
    let mut books = vec![root().join("playbooks/site.yml")];
    let add_dir = |dir: &Path, books: &mut Vec<PathBuf>| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml"))
            .collect();
        found.sort();
        books.extend(found);
    };
    add_dir(&root().join("playbooks/base"), &mut books);
    add_dir(&root().join("tests/converge"), &mut books);
    let mut templates = Vec::new();
    for dir in [
        "playbooks/templates",
        "playbooks/base/templates",
        "tests/converge/templates",
        "src/lab/images",
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "j2"))
            .collect();
        found.sort();
        templates.extend(found.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    (books, templates)
}

/// With PICAOPS_FUZZ_SECONDS, how long to run cases (instead of a fixed count).
pub fn fuzz_time() -> Option<Duration> {
    std::env::var("PICAOPS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
}

pub fn leak(templates: Templates) -> &'static Templates {
    Box::leak(Box::new(templates))
}

/// A located error: a file and a line (1-based) in it.
pub fn located(d: &Diagnostic) -> bool {
    !d.place.file.as_os_str().is_empty() && d.place.line >= 1
}
