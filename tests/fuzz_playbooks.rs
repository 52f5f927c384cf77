//! Fuzz-style properties of the playbook loader and of the expansion of plays for each host (the
//! templates of tasks rendered with each host's variables): the repo's playbooks and the converge
//! fixtures mutated by the small deterministic mutator of `templates_support`.
//!
//! Properties: nothing panics, nothing hangs (each case within `CASE_BOUND`), and every error has
//! a file and a line.
//!
//! `cargo test` runs a fixed number of cases (a few seconds); `PICAOPS_FUZZ_SECONDS=N` runs new
//! cases for N seconds.

mod templates_support;

use std::path::Path;
use std::time::Instant;

use picaops::playbook::template::Templates;
use templates_support::{
    bounded, expand_all, fuzz_time, hostile, leak, limits, located, mutate, root, seeds, Rng, Tally,
};

/// `text` with the value of one `name:` line replaced by a hostile template (quoted).
fn with_hostile_name(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let names: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("- name: "))
        .collect();
    if names.is_empty() {
        return text.to_string();
    }
    let i = names[rng.below(names.len())];
    let indent = lines[i].len() - lines[i].trim_start().len();
    let quoted = serde_json::to_string(&hostile(rng)).unwrap_or_default();
    lines[i] = format!("{}- name: {quoted}", " ".repeat(indent));
    lines.join("\n")
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
    let diags = bounded(move || expand_all(&inventory, &path, templates, false))
        .map_err(|e| format!("{e}\n  playbook:\n{shown}"))?
        .map_err(|e| format!("{e}\n  playbook:\n{shown}"))?;
    tally.cases += 1;
    if diags.is_empty() {
        tally.ok += 1;
    }
    for d in &diags {
        tally.error(&d.message);
        if d.message.contains("rendering failed unexpectedly") {
            return Err(format!("{}\n  playbook:\n{shown}", d.message));
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
    while time.map_or(n < count, |t| started.elapsed() < t) && !tally.exhausted {
        let seed = &books[n % books.len()];
        let mut text = std::fs::read_to_string(seed).unwrap();
        if n % 4 == 3 {
            // One in four: a task name becomes a hostile template, rendered for every host.
            text = with_hostile_name(&mut rng, &text);
        } else {
            // Few mutations: most of a mutant still loads, so expansion is reached too.
            for _ in 0..1 + rng.below(2) {
                text = mutate(&mut rng, &text, &donors);
            }
        }
        if let Err(e) = check_playbook(templates, text, seed, &mut tally) {
            failures.push(e);
        }
        n += 1;
    }
    eprintln!(
        "playbook mutants: {} tried, {} expanded cleanly, {} errors, {} limit stops, {} failures, {:?}",
        tally.cases, tally.ok, tally.errors, tally.limit_stops, failures.len(), started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
