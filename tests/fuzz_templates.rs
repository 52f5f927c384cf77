//! Fuzz-style properties of the playbook loader, the expansion of plays for each host and template
//! rendering: a small deterministic mutator over the repo's playbooks, the converge fixtures and
//! their templates, plus generated hostile templates (deep nesting, big ranges, string growth,
//! macro recursion, include loops).
//!
//! Properties: nothing panics, nothing hangs (each case within `CASE_BOUND`), no render holds more
//! than its memory budget, and every error is located (a line, in a file).
//!
//! `cargo test` runs a fixed number of cases (a few seconds); `PICAOPS_FUZZ_SECONDS=N` runs new
//! cases for N seconds.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use minijinja::Value;
use picaops::converge::expand::{Context, HostExpander, Registered};
use picaops::diagnostic::{Diagnostic, Sources};
use picaops::playbook::budget::Limits;
use picaops::playbook::template::{TemplateErrorKind, Templates};

/// Limits of the fuzz renders: lower than the defaults so hostile cases stop fast.
fn limits() -> Limits {
    Limits {
        fuel: 200_000,
        memory_bytes: 16 << 20,
        time: Duration::from_secs(20),
    }
}

/// A case (load + expand every host, or one render) must end within this, or it is a hang.
const CASE_BOUND: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces the mutator inserts: template syntax, YAML syntax, multibyte text, hostile bits.
const TOKENS: &[&str] = &[
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
fn mutate(rng: &mut Rng, text: &str, donors: &[String]) -> String {
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
fn hostile(rng: &mut Rng) -> String {
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

/// A host's variables for direct renders.
fn ctx() -> Value {
    Value::from_serialize(serde_json::json!({
        "site": "compiegne", "inventory_hostname": "bob", "item": "é",
        "users": ["alice", "bob"], "r": {"stdout": "ok", "rc": 0},
        "motd": "Le serveur de la salle machine de Compiègne", "s": "x", "x": true,
    }))
}

/// Runs `work` on a thread; `Err` when it panicked (with the message) or did not end in time.
fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
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
struct Tally {
    cases: usize,
    ok: usize,
    errors: usize,
    limit_stops: usize,
}

/// Loads `playbook` (its `templates/` and `files/` next to it) and expands it for every host of
/// the inventory at `inventory`, as `plan` does before contacting anyone. Returns the errors.
fn expand_all(
    inventory: &Path,
    playbook: &Path,
    templates: &Templates,
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
    if text.contains("picaops_access") {
        picaops::access::vars::add_engine_vars(&mut inv)?;
    }
    if text.contains("picaops_backup") {
        picaops::backup::deploy::add_engine_vars(&mut inv)?;
    }
    let sources = Mutex::new(sources);
    let extra = BTreeMap::new();
    let cx = Context::new(&inv, &books, templates, &extra, &[], &[], &sources);
    let mut diags = Vec::new();
    for machine in inv.machines() {
        let mut ex = HostExpander::new(&cx, machine, false);
        loop {
            match ex.next_segment() {
                Ok(steps) if steps.is_empty() => break,
                Ok(steps) => {
                    for s in steps {
                        if let Some(r) = &s.register {
                            ex.registers
                                .insert(r.clone(), Registered::Unknown { by: s.name.clone() });
                        }
                    }
                }
                Err(d) => {
                    diags.push(d);
                    break;
                }
            }
        }
    }
    Ok(diags)
}

/// The seeds: playbooks with their directory, and template texts.
fn seeds() -> (Vec<PathBuf>, Vec<String>) {
    let mut books = vec![root().join("playbooks/site.yml")];
    let mut add_dir = |dir: &Path, books: &mut Vec<PathBuf>| {
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

/// A located error: a file and a line (1-based) in it.
fn located(d: &Diagnostic) -> bool {
    !d.place.file.as_os_str().is_empty() && d.place.line >= 1
}

fn check_render(
    templates: &'static Templates,
    source: String,
    tally: &mut Tally,
) -> Result<(), String> {
    let shown = source.chars().take(300).collect::<String>();
    let src = source.clone();
    let out = bounded(move || {
        let syntax = templates.check_syntax(&src);
        let vars = templates.referenced_vars(&src);
        (syntax, vars, templates.render_str(&src, &ctx()))
    })
    .map_err(|e| format!("{e}\n  template: {shown:?}"))?;
    let (syntax, _, rendered) = out;
    tally.cases += 1;
    match rendered {
        Ok(text) => {
            tally.ok += 1;
            if text.len() > limits().memory_bytes {
                return Err(format!(
                    "output of {} bytes is over the budget\n  template: {shown:?}",
                    text.len()
                ));
            }
        }
        Err(e) => {
            tally.errors += 1;
            if e.message.contains("rendering failed unexpectedly") {
                return Err(format!("{}\n  template: {shown:?}", e.message));
            }
            match e.kind {
                TemplateErrorKind::Limit => tally.limit_stops += 1,
                TemplateErrorKind::Syntax | TemplateErrorKind::Undefined if e.line.is_none() => {
                    return Err(format!("unlocated error: {e}\n  template: {shown:?}"))
                }
                _ => {}
            }
            if let (Err(s), TemplateErrorKind::Syntax) = (&syntax, e.kind) {
                if s.line != e.line {
                    return Err(format!(
                        "check_syntax says line {:?}, render says {:?}\n  template: {shown:?}",
                        s.line, e.line
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_playbook(
    templates: &'static Templates,
    text: String,
    seed: &Path,
    tally: &mut Tally,
) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for sub in ["templates", "files"] {
        let from = seed.parent().unwrap_or(Path::new(".")).join(sub);
        if from.is_dir() {
            std::os::unix::fs::symlink(&from, dir.path().join(sub)).map_err(|e| e.to_string())?;
        }
    }
    let file = dir.path().join("fuzz.yml");
    std::fs::write(&file, &text).map_err(|e| e.to_string())?;
    let shown = text.clone();
    let inventory = root().join("inventory");
    let path = file.clone();
    let diags = bounded(move || expand_all(&inventory, &path, templates))
        .map_err(|e| format!("{e}\n  playbook:\n{shown}"))?
        .map_err(|e| format!("{e}\n  playbook:\n{shown}"))?;
    tally.cases += 1;
    if diags.is_empty() {
        tally.ok += 1;
    } else {
        tally.errors += 1;
    }
    for d in &diags {
        if d.message.contains("rendering failed unexpectedly") {
            return Err(format!("{}\n  playbook:\n{shown}", d.message));
        }
        if d.message.contains("PICAOPS_TEMPLATE_") {
            tally.limit_stops += 1;
        }
        if !located(d) {
            return Err(format!(
                "unlocated error {:?} at {:?}\n  playbook:\n{shown}",
                d.message, d.place
            ));
        }
    }
    Ok(())
}

/// With PICAOPS_FUZZ_SECONDS, how long to run cases (instead of a fixed count).
fn fuzz_time() -> Option<Duration> {
    std::env::var("PICAOPS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn leak(templates: Templates) -> &'static Templates {
    Box::leak(Box::new(templates))
}

#[test]
fn mutated_playbooks_load_and_expand_without_panic_or_hang() {
    let templates = leak(Templates::with_limits(Ok(limits())));
    let (books, template_texts) = seeds();
    let mut donors: Vec<String> = books
        .iter()
        .filter_map(|b| std::fs::read_to_string(b).ok())
        .collect();
    donors.extend(template_texts);
    let (count, time) = (60, fuzz_time());
    let started = Instant::now();
    let mut rng = Rng(0x5EED_0001);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut n = 0usize;
    while time.map_or(n < count, |t| started.elapsed() < t) {
        let seed = &books[n % books.len()];
        let mut text = std::fs::read_to_string(seed).unwrap();
        for _ in 0..1 + rng.below(4) {
            text = mutate(&mut rng, &text, &donors);
        }
        if let Err(e) = check_playbook(templates, text, seed, &mut tally) {
            failures.push(e);
        }
        n += 1;
    }
    eprintln!(
        "playbook mutants: {} tried, {} expanded cleanly, {} refused with errors, {} stopped at a limit, {} failures, {:?}",
        tally.cases, tally.ok, tally.errors, tally.limit_stops, failures.len(), started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn mutated_and_hostile_templates_render_or_fail_cleanly() {
    let templates = leak(Templates::with_limits(Ok(limits())));
    let (books, seeds) = seeds();
    let mut donors = seeds.clone();
    donors.extend(books.iter().filter_map(|b| std::fs::read_to_string(b).ok()));
    let (count, time) = (150, fuzz_time());
    let started = Instant::now();
    let mut rng = Rng(0x5EED_0002);
    let mut tally = Tally::default();
    let mut hostile_tally = Tally::default();
    let mut failures = Vec::new();
    let mut n = 0usize;
    while time.map_or(n < count, |t| started.elapsed() < t) {
        let result = if n % 3 == 2 {
            check_render(templates, hostile(&mut rng), &mut hostile_tally)
        } else {
            let mut text = seeds[n % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                text = mutate(&mut rng, &text, &donors);
            }
            check_render(templates, text, &mut tally)
        };
        if let Err(e) = result {
            failures.push(e);
        }
        n += 1;
    }
    let usage = templates.usage();
    eprintln!(
        "template mutants: {} tried, {} rendered, {} errors, {} limit stops; hostile: {} tried, {} rendered, {} errors, {} limit stops; {} failures; peak memory {} bytes, peak fuel {}; {:?}",
        tally.cases, tally.ok, tally.errors, tally.limit_stops,
        hostile_tally.cases, hostile_tally.ok, hostile_tally.errors, hostile_tally.limit_stops,
        failures.len(), usage.peak_memory_bytes, usage.peak_fuel, started.elapsed()
    );
    assert!(
        usage.peak_memory_bytes <= limits().memory_bytes,
        "a render held {} bytes",
        usage.peak_memory_bytes
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The repo's playbooks (and the lab's, when the lab exists) expand without error under the
/// default limits, and use a small part of them: the numbers are printed for the README.
#[test]
fn real_playbooks_use_a_small_part_of_the_limits() {
    let mut cases = vec![(root().join("inventory"), root().join("playbooks/site.yml"))];
    for f in [
        "tests/converge/modules.yml",
        "tests/converge/registered.yml",
    ] {
        cases.push((root().join("inventory"), root().join(f)));
    }
    let lab = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/picaops/lab"))
        .filter(|l| l.join("inventory").is_dir());
    match &lab {
        Some(lab) => {
            cases.push((lab.join("inventory"), root().join("playbooks/site.yml")));
            cases.push((lab.join("inventory"), lab.join("playbooks/lab-vms.yml")));
        }
        None => eprintln!("no lab here: only the repo's inventory is measured"),
    }
    for (inventory, playbook) in cases {
        let templates = Templates::with_limits(Ok(Limits::default()));
        match expand_all(&inventory, &playbook, &templates) {
            Ok(diags) => {
                let limit_hits: Vec<_> = diags
                    .iter()
                    .filter(|d| d.message.contains("PICAOPS_TEMPLATE_"))
                    .map(|d| d.message.clone())
                    .collect();
                assert!(
                    limit_hits.is_empty(),
                    "{}: {limit_hits:?}",
                    playbook.display()
                );
                if !diags.is_empty() {
                    eprintln!(
                        "{} on {}: {} errors unrelated to limits, first: {}",
                        playbook.display(),
                        inventory.display(),
                        diags.len(),
                        diags[0].message
                    );
                }
            }
            Err(e) => {
                eprintln!("{}: skipped: {e}", playbook.display());
                continue;
            }
        }
        let usage = templates.usage();
        eprintln!(
            "{} on {}: {} renders, peak fuel {} (limit {}), peak memory {} bytes (limit {})",
            playbook.display(),
            inventory.display(),
            usage.renders,
            usage.peak_fuel,
            Limits::default().fuel,
            usage.peak_memory_bytes,
            Limits::default().memory_bytes
        );
        assert!(usage.peak_fuel * 100 < Limits::default().fuel);
        assert!(usage.peak_memory_bytes * 100 < Limits::default().memory_bytes);
    }
}
