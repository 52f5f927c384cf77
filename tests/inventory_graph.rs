//! `picaops inventory graph --format svg`: the site map drawn by a real Graphviz `dot`, with
//! every machine of the example inventory on it; without Graphviz, a clear error and exit 1.

use std::path::Path;
use std::process::Command;

#[test]
fn the_svg_site_map_names_every_machine_or_says_graphviz_is_missing() {
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let run = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_picaops"))
            .args(["-i"])
            .arg(&inventory)
            .args(["inventory", "graph", "--format", "svg"])
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let path = std::env::var("PATH").unwrap_or_default();
    let have_dot = path.split(':').any(|d| Path::new(d).join("dot").is_file());
    if have_dot {
        let out = run(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let svg = String::from_utf8(out.stdout).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        let names = Command::new(env!("CARGO_BIN_EXE_picaops"))
            .args(["-i"])
            .arg(&inventory)
            .args(["-o", "json", "inventory", "show"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&names.stdout).unwrap();
        let hosts = doc["hosts"]
            .as_object()
            .expect("hosts in the inventory's JSON");
        assert!(!hosts.is_empty());
        for name in hosts.keys() {
            assert!(
                svg.contains(&format!(">{name}")),
                "{name} is not drawn:\n{svg}"
            );
        }
    } else if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some_and(|v| v == "1") {
        panic!("no Graphviz `dot` on PATH (.ci/setup installs graphviz)");
    }
    // Without Graphviz on PATH: a clear error, nothing on stdout.
    let out = run("/nonexistent");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Graphviz is not installed") && err.contains("--format dot"),
        "{err}"
    );
}
