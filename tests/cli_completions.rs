//! `picaops completions SHELL` and `picaops man`, checked with the real programs that read them:
//! the bash script is sourced in a real bash and its completion function called as bash calls it
//! on TAB; the zsh and fish scripts are parsed by zsh and fish (and fish completes from its
//! script); the man pages are rendered by man-db's `man -l`. What they must offer is read from
//! `picaops … --help`, so a subcommand missing from a script or a page is a failure.
//!
//! zsh, fish and man come from `.ci/setup`. Where one is missing the test says so and returns,
//! unless `PICAOPS_REQUIRE_SHELLS=1` (the README's test command), where it fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn picaops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_picaops"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PICAOPS_INVENTORY")
        .output()
        .expect("picaops runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "picaops failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 on stdout")
}

/// The subcommands `picaops PATH… --help` lists, with the first line of each one's about
/// (clap's own `help` left out).
fn subcommands(path: &[&str]) -> Vec<(String, String)> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = stdout(&picaops(&args));
    let Some(list) = help.split("\nCommands:\n").nth(1) else {
        return Vec::new();
    };
    list.lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| {
            let (name, about) = l.trim_start().split_once("  ")?;
            Some((name.to_string(), about.trim().to_string()))
        })
        .filter(|(name, _)| name != "help")
        .collect()
}

/// Every command `--help` leads to, as its man page is named: `picaops`, `picaops-apply`,
/// `picaops-backup-run`, …
fn every_command(path: &mut Vec<String>, all: &mut BTreeSet<String>) {
    all.insert(path.join("-"));
    let args: Vec<&str> = path[1..].iter().map(String::as_str).collect();
    for (name, _) in subcommands(&args) {
        path.push(name);
        every_command(path, all);
        path.pop();
    }
}

/// The program `name`, or None (with a SKIPPED line) where it is not installed.
fn installed(name: &str) -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = format!("{name} is not installed (.ci/setup installs it)");
        if std::env::var_os("PICAOPS_REQUIRE_SHELLS").is_some_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED cli_completions: {why}");
    }
    found.then_some(())
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("PICAOPS", env!("CARGO_BIN_EXE_picaops"))
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script(shell: &str, dir: &Path) -> String {
    let path = dir.join(format!("picaops.{shell}"));
    std::fs::write(&path, stdout(&picaops(&["completions", shell]))).unwrap();
    path.to_string_lossy().into_owned()
}

/// Sources the bash script, then calls the function `complete -p picaops` names the way bash does
/// on TAB after `words` (the last one is the word being completed); returns COMPREPLY.
fn bash_complete(words: &[&str]) -> Vec<String> {
    const CALL: &str = r#"
source <("$PICAOPS" completions bash) || exit 10
spec=$(complete -p picaops) || exit 11
fn=${spec#*-F }; fn=${fn%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
"$fn" picaops "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let mut args = vec!["--norc", "-c", CALL, "bash"];
    args.extend(words);
    run("bash", &args).lines().map(str::to_string).collect()
}

#[test]
fn bash_registers_a_completion_function_for_picaops() {
    let spec = run(
        "bash",
        &[
            "--norc",
            "-c",
            r#"source <("$PICAOPS" completions bash) && complete -p picaops"#,
        ],
    );
    assert!(
        spec.contains("-F ") && spec.trim_end().ends_with(" picaops"),
        "{spec}"
    );
}

#[test]
fn bash_completes_a_subcommand_from_its_first_letters() {
    let reply = bash_complete(&["picaops", "ac"]);
    assert_eq!(reply, ["access"]);
}

#[test]
fn bash_offers_the_backup_subcommands_help_lists_after_backup_and_no_hidden_one() {
    let offered: BTreeSet<String> = bash_complete(&["picaops", "backup", ""])
        .into_iter()
        .filter(|w| !w.starts_with('-') && w != "help")
        .collect();
    let listed: BTreeSet<String> = subcommands(&["backup"]).into_iter().map(|s| s.0).collect();
    assert!(listed.contains("drill"), "backup --help lists {listed:?}");
    // The host side (`backup host-run`, …) is hidden from --help: TAB must not offer it either.
    assert_eq!(offered, listed);
}

#[test]
fn bash_completes_the_shells_completions_knows() {
    let reply = bash_complete(&["picaops", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(reply.iter().any(|r| r == shell), "no {shell} in {reply:?}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_known_ones() {
    let out = picaops(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash, zsh, fish"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn zsh_parses_the_script_and_compinit_registers_it() {
    if installed("zsh").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = script("zsh", dir.path());
    run("zsh", &["-n", &script]);
    let registered = run(
        "zsh",
        &[
            "-f",
            "-c",
            &format!(
                "autoload -U compinit && compinit -u -D && source {script} && print -r -- $_comps[picaops]"
            ),
        ],
    );
    assert_eq!(registered.trim(), "_picaops");
}

#[test]
fn fish_parses_the_script_and_completes_from_it() {
    if installed("fish").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = script("fish", dir.path());
    run("fish", &["--no-execute", &script]);
    let complete = |line: &str| -> Vec<String> {
        let cmd = format!("source {script}; complete -C '{line}'");
        run("fish", &["--no-config", "-c", &cmd])
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(complete("picaops ac"), ["access"]);
    let backup = complete("picaops backup ");
    assert!(backup.iter().any(|c| c == "drill"), "{backup:?}");
}

/// `page` rendered by `man -l`, wide enough that no line wraps.
fn rendered(page: &Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "1000")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .expect("man runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {} ({}): {}",
        page.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("man prints UTF-8")
}

#[test]
fn the_man_page_renders_with_every_subcommand_and_its_help_text() {
    if installed("man").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("picaops.1");
    std::fs::write(&page, stdout(&picaops(&["man"]))).unwrap();
    let text = rendered(&page);
    assert!(
        text.contains("picaops - Run a small hoster's two sites"),
        "{text}"
    );
    assert!(
        text.contains("Exit codes: 0 everything went well"),
        "{text}"
    );
    let listed = subcommands(&[]);
    assert!(listed.len() >= 10, "--help lists {listed:?}");
    for (name, about) in listed {
        let entry = format!("picaops-{name}(1)");
        let at = text.find(&entry).unwrap_or_else(|| panic!("no {entry}"));
        let next = text[at..].lines().nth(1).unwrap_or_default().trim();
        assert!(
            !about.is_empty() && next.starts_with(&about),
            "{entry}: man says {next:?}, --help says {about:?}"
        );
    }
}

#[test]
fn man_dir_writes_a_page_with_an_about_for_every_command_help_lists() {
    if installed("man").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man1");
    let out = picaops(&["man", "--dir", man1.to_str().unwrap()]);
    stdout(&out);
    let mut expected = BTreeSet::new();
    every_command(&mut vec!["picaops".to_string()], &mut expected);
    let written: BTreeSet<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected_files: BTreeSet<String> = expected.iter().map(|c| format!("{c}.1")).collect();
    assert_eq!(written, expected_files);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("wrote {} man pages", written.len())),
        "{said}"
    );
    for name in &expected {
        let page = man1.join(format!("{name}.1"));
        let text = rendered(&page);
        let line = text
            .split("NAME\n")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap_or_default();
        let about = line.trim().strip_prefix(&format!("{name} - "));
        assert!(
            about.is_some_and(|a| !a.trim().is_empty()),
            "{name}.1 has no about in NAME: {line:?}"
        );
    }
}
