//! Fuzz-style properties of template rendering: the repo's templates mutated by the small
//! deterministic mutator of `templates_support`, plus generated hostile templates (deep nesting,
//! big ranges, string growth, macro recursion, include loops). The loader and expansion are
//! fuzzed by `fuzz_playbooks.rs` (its own process: renders stopped at the memory limit keep what
//! they hold until the process ends).
//!
//! Properties: nothing panics, nothing hangs (each case within `CASE_BOUND`), no render holds more
//! than its memory budget, and every syntax or undefined error has a line.
//!
//! `cargo test` runs a fixed number of cases (a few seconds); `PICAOPS_FUZZ_SECONDS=N` runs new
//! cases for N seconds.

use std::time::Instant;

mod templates_support;

use minijinja::Value;
use picaops::playbook::template::{TemplateErrorKind, Templates};
use templates_support::{bounded, fuzz_time, hostile, leak, limits, mutate, seeds, Rng, Tally};

/// A host's variables for direct renders.
fn ctx() -> Value {
    Value::from_serialize(serde_json::json!({
        "site": "compiegne", "inventory_hostname": "bob", "item": "é",
        "users": ["alice", "bob"], "r": {"stdout": "ok", "rc": 0},
        "motd": "Le serveur de la salle machine de Compiègne", "s": "x", "x": true,
    }))
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
            tally.error(&e.message);
            if e.message.contains("rendering failed unexpectedly") {
                return Err(format!("{}\n  template: {shown:?}", e.message));
            }
            match e.kind {
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
    while time.map_or(n < count, |t| started.elapsed() < t)
        && !tally.exhausted
        && !hostile_tally.exhausted
    {
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
    if tally.exhausted || hostile_tally.exhausted {
        eprintln!("stopped: the renders stopped at the memory limit hold the most picaops keeps");
    }
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
