//! Bad inventories: each directory under tests/bad-inventories/ is one broken inventory, and its
//! `expected.txt` lists every error `picaops inventory check` must report, as
//! `file:line:column: message`. The real binary runs on each; it must exit 2, never panic, and
//! report exactly those places.

mod common;

use std::path::{Path, PathBuf};

use common::picaops_on;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inventories");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/bad-inventories exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        cases().len() >= 15,
        "the issue asks for at least 15 bad inventories"
    );
}

#[test]
fn every_bad_inventory_fails_at_the_expected_places() {
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|_| panic!("{name}: expected.txt is missing"));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!expected.is_empty(), "{name}: expected.txt lists no error");
        let output = picaops_on(&case, &["inventory", "check"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit code {:?}, want 2\n{stderr}",
                output.status.code()
            ));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: picaops panicked\n{stderr}"));
            continue;
        }
        let prefix = format!("{}/", case.display());
        let reported: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains(": error: "))
            .map(|l| l.trim_start_matches(&prefix).replacen(": error: ", ": ", 1))
            .collect();
        if reported != expected {
            failures.push(format!(
                "{name}:\n  want: {expected:#?}\n  got:  {reported:#?}\n{stderr}"
            ));
        }
        if !stderr.contains("nothing was contacted") {
            failures.push(format!("{name}: the summary line is missing\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_carry_an_excerpt_and_advice() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inventories/unknown-key");
    let output = picaops_on(&case, &["inventory", "check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("  4 |     adress: 10.0.0.1"), "{stderr}");
    assert!(stderr.contains("^^^^^^"), "{stderr}");
    assert!(stderr.contains("did you mean `address`?"), "{stderr}");
}

#[test]
fn json_errors_are_machine_readable() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inventories/many-errors-at-once");
    let output = picaops_on(&case, &["--output", "json", "inventory", "check"]);
    assert_eq!(output.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(doc["ok"], false);
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4);
    let first = &errors[0];
    assert!(first["file"].as_str().unwrap().ends_with("hosts.yml"));
    assert_eq!(first["line"], 2);
    assert_eq!(first["column"], 16);
    assert!(first["message"].as_str().unwrap().contains("compiegne"));
}

#[test]
fn a_missing_inventory_directory_is_a_usage_error() {
    let output = picaops_on(Path::new("/nonexistent/inventory"), &["inventory", "check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/inventory: error: cannot read the inventory directory"),
        "{stderr}"
    );
    assert!(stderr.contains("-i DIR"), "{stderr}");
}

#[test]
fn the_shipped_example_inventory_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let output = picaops_on(&dir, &["inventory", "check"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let graph = picaops_on(&dir, &["inventory", "graph"]);
    let tree = String::from_utf8_lossy(&graph.stdout);
    for name in [
        "toulouse",
        "compiegne",
        "bob",
        "alice",
        "caribou",
        "pica01",
        "pica02",
        "pica03",
        "media",
        "monitoring",
    ] {
        assert!(
            tree.contains(name),
            "{name} missing from the graph:\n{tree}"
        );
    }
}

#[test]
fn a_file_that_does_not_parse_is_reported_alone_with_the_quote_that_caused_it() {
    // Before: 8 errors, the 4 backups' and 3 VMs' "unknown host" first, the real one fifth.
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad-inventories/syntax-error-in-a-file-others-refer-to");
    let output = picaops_on(&case, &["inventory", "check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let prefix = format!("{}/", case.display());
    let first = stderr
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches(&prefix);
    assert!(
        first.starts_with("hosts.yml:5:5: error: YAML syntax error"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hosts.yml:4:18: the quote that is never closed opens here"),
        "{stderr}"
    );
    assert!(
        stderr.contains("references between files are checked once every file reads"),
        "{stderr}"
    );
    assert!(stderr.contains(": 1 error in the inventory"), "{stderr}");
}
