//! Picasoft's base playbooks (playbooks/): site.yml is generated from playbooks/base/ and must
//! not drift from it, and every file a play names must exist.

use std::path::{Path, PathBuf};
use std::process::Command;

fn playbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")
}

fn base_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(playbooks().join("base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn site_yml_is_the_base_playbooks_in_order() {
    let out = Command::new("sh")
        .arg(playbooks().join("make-site.sh"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site = std::fs::read_to_string(playbooks().join("site.yml")).unwrap();
    assert!(
        site == String::from_utf8(out.stdout).unwrap(),
        "playbooks/site.yml is out of date: run `sh playbooks/make-site.sh`"
    );
    for file in base_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            site.matches(&format!("# ---- base/{name} ----\n")).count(),
            1,
            "base/{name} must appear once in site.yml (add it to `order` in make-site.sh)"
        );
    }
}

#[test]
fn every_src_names_an_existing_file() {
    for file in base_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some(src) = line.trim().strip_prefix("src: ") else {
                continue;
            };
            if src.starts_with('/') || src.contains("{{") {
                continue; // a link target on the managed machine, or computed
            }
            let found = ["templates", "files"]
                .iter()
                .any(|dir| file.parent().unwrap().join(dir).join(src).is_file());
            assert!(
                found,
                "{}: no templates/{src} nor files/{src}",
                file.display()
            );
        }
    }
}
