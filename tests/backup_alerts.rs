//! The example alert rules (monitoring/picaops-backup-alerts.yml): the file parses as
//! Prometheus/vmalert rule groups, and every metric and label it uses is one picaops writes.

use std::collections::BTreeSet;

use picaops::backup::status::{JobStatus, METRICS};

fn rules() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/monitoring/picaops-backup-alerts.yml"
    );
    let text = std::fs::read_to_string(path).expect("the rules file exists");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
    let groups = doc["groups"].as_array().expect("a `groups:` list");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].is_string(), "every group has a name");
            g["rules"]
                .as_array()
                .expect("every group has rules")
                .clone()
        })
        .collect()
}

/// `picaops_…` identifiers in a PromQL expression.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("picaops_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    found
}

#[test]
fn every_metric_the_rules_use_is_one_picaops_writes() {
    // What a status file really turns into, not just the list of names.
    let written = JobStatus::default().metrics();
    let mut used = BTreeSet::new();
    for rule in rules() {
        let name = rule["alert"]
            .as_str()
            .expect("every rule is an alert with a name");
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        let metrics = metrics_in(expr);
        assert!(!metrics.is_empty(), "{name} uses no picaops metric");
        for m in &metrics {
            assert!(
                METRICS.iter().any(|(n, _)| n == m),
                "{name} uses {m}, which picaops does not write"
            );
            assert!(
                written.contains(&format!("\n{m}{{")),
                "{m} is missing from the metrics file"
            );
        }
        used.extend(metrics);
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name} has a severity"
        );
        let summary = rule["annotations"]["summary"].as_str().expect("a summary");
        let description = rule["annotations"]["description"].as_str().unwrap_or("");
        for text in [summary, description, expr] {
            for label in text.split("$labels.").skip(1) {
                let label: String = label
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    ["backup_job", "host", "repository"].contains(&label.as_str()),
                    "{name} uses label {label}"
                );
            }
        }
    }
    for required in [
        "picaops_backup_newest_data_timestamp_seconds",
        "picaops_backup_max_age_seconds",
        "picaops_backup_consecutive_failures",
        "picaops_backup_last_check_timestamp_seconds",
        "picaops_backup_last_drill_timestamp_seconds",
    ] {
        assert!(used.contains(required), "no rule watches {required}");
    }
}
