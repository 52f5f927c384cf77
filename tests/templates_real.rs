//! The repo's playbooks and the lab's expand under the default template limits, using a small
//! part of them; the figures are printed (they are the README's). Its own test binary: it sets
//! PICAOPS_ACCESS_HELPER before any other thread runs, as `plan` would find the helper.

mod templates_support;

use std::path::PathBuf;

use picaops::playbook::budget::Limits;
use picaops::playbook::template::Templates;
use templates_support::{expand_all, root};

#[test]
fn real_playbooks_use_a_small_part_of_the_limits() {
    std::env::set_var(
        "PICAOPS_ACCESS_HELPER",
        env!("CARGO_BIN_EXE_picaops-access"),
    );
    let example = root().join("inventory");
    let mut cases = vec![
        (example.clone(), root().join("playbooks/site.yml")),
        (example.clone(), root().join("tests/converge/modules.yml")),
        (
            example.clone(),
            root().join("tests/converge/registered.yml"),
        ),
        (example, root().join("tests/converge/slow.yml")),
    ];
    let lab = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/picaops/lab"))
        .filter(|l| l.join("inventory").is_dir());
    match &lab {
        Some(lab) => {
            cases.push((lab.join("inventory"), root().join("playbooks/site.yml")));
            cases.push((lab.join("inventory-vms"), lab.join("playbooks/lab-vms.yml")));
        }
        None => eprintln!("no lab here: only the repo's inventory is measured"),
    }
    let defaults = Limits::default();
    let mut measured = 0;
    for (inventory, playbook) in cases {
        let templates = Templates::with_limits(Ok(defaults.clone()));
        let what = format!("{} on {}", playbook.display(), inventory.display());
        let started = std::time::Instant::now();
        let diags = match expand_all(&inventory, &playbook, &templates, true) {
            Ok(diags) => diags,
            Err(e) => {
                // The example inventory cannot give the engines' variables (no pinned keys):
                // the rest of the playbook still renders.
                eprintln!("{what}: {e}; measured without the engines' variables");
                expand_all(&inventory, &playbook, &templates, false).expect("expands")
            }
        };
        let took = started.elapsed();
        let limit_hits: Vec<_> = diags
            .iter()
            .filter(|d| d.message.contains("PICAOPS_TEMPLATE_"))
            .map(|d| d.message.clone())
            .collect();
        assert!(limit_hits.is_empty(), "{what}: {limit_hits:?}");
        if let Some(first) = diags.first() {
            eprintln!(
                "{what}: {} errors unrelated to limits, first: {}",
                diags.len(),
                first.message
            );
        }
        let usage = templates.usage();
        eprintln!(
            "{what}: {} renders, peak fuel {} (limit {}), peak memory {} bytes (limit {}), {took:?}",
            usage.renders, usage.peak_fuel, defaults.fuel, usage.peak_memory_bytes, defaults.memory_bytes
        );
        assert!(usage.peak_fuel * 100 < defaults.fuel, "{what}");
        assert!(
            usage.peak_memory_bytes * 100 < defaults.memory_bytes,
            "{what}"
        );
        measured += usage.renders;
    }
    assert!(measured > 0, "no playbook could be expanded");

    // What running each render on a thread of its own costs.
    let templates = Templates::with_limits(Ok(defaults));
    let ctx = minijinja::Value::from_serialize(serde_json::json!({"site": "compiegne"}));
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(
            templates.render_str("{{ site }}", &ctx).as_deref(),
            Ok("compiegne")
        );
    }
    eprintln!("1000 renders of `{{{{ site }}}}`: {:?}", started.elapsed());
}
