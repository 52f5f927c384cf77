//! Templates that would run for ever or grow without bound: `plan` stops them at a limit with a
//! located error (exit 2, nothing contacted) instead of hanging or being aborted by the system,
//! and the limits can be raised by environment variables.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::picaops;

/// Far above what a stopped render takes here (a few seconds in a debug build); the old code
/// never finished at all.
const PATIENCE: Duration = Duration::from_secs(90);

/// Nested loops over the biggest range minijinja allows: 10^10 iterations.
const NESTED: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
/// A string doubled `times` times (2^40 bytes is 1 TiB). Not in a loop: a `set` in a `for`
/// only lasts one iteration.
fn doubled(times: usize) -> String {
    format!(
        "{{% set s = 'x' %}}{}{{{{ s | length }}}}",
        "{% set s = s ~ s %}".repeat(times)
    )
}
/// The same with a namespace, as the probe wrote it.
const DOUBLED_NS: &str = "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";

struct Run {
    status: ExitStatus,
    stderr: String,
    took: Duration,
}

/// Runs `cmd`, killing it when it is still running after `PATIENCE` (then the test fails).
fn run(mut cmd: Command) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picaops starts");
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for picaops") {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("picaops was still running after {PATIENCE:?} (a template that never ends?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stderr: reader.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// A playbook in a temporary directory, with `templates/t.j2` when `j2` is not empty.
fn playbook(text: &str, j2: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pb.yml"), text).unwrap();
    if !j2.is_empty() {
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/t.j2"), j2).unwrap();
    }
    dir
}

fn plan(dir: &Path, env: &[(&str, &str)]) -> Run {
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let mut cmd = picaops();
    cmd.arg("-i")
        .arg(inventory)
        .arg("plan")
        .arg(dir.join("pb.yml"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd)
}

fn task(body: &str) -> String {
    format!("- name: p\n  hosts: bob\n  tasks:\n{body}")
}

/// (what, playbook, template file, expected place, expected words).
fn cases() -> Vec<(
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
)> {
    vec![
        (
            "nested ranges in a task name",
            task(&format!(
                "    - name: \"{NESTED}\"\n      file: {{path: /x, state: directory}}\n"
            )),
            "",
            "pb.yml:4:",
            "ran more than 10000000 steps",
        ),
        (
            "nested ranges in a loop",
            task(&format!(
                "    - name: t\n      loop: \"{NESTED}\"\n      file: {{path: /x, state: directory}}\n"
            )),
            "",
            "pb.yml:5:",
            "ran more than 10000000 steps",
        ),
        (
            "nested ranges in a template file",
            task("    - name: t\n      template: {src: t.j2, dest: /x}\n"),
            NESTED,
            "templates/t.j2:1:",
            "ran more than 10000000 steps",
        ),
        (
            "a string doubled 40 times",
            task(&format!(
                "    - name: t\n      copy: {{dest: /x, content: \"{}\"}}\n",
                doubled(40)
            )),
            "",
            "pb.yml:5:",
            "more than 64 MiB of memory",
        ),
        (
            "a namespace string doubled 40 times in a template file",
            task("    - name: t\n      template: {src: t.j2, dest: /x}\n"),
            DOUBLED_NS,
            // Where in the file is not known: its start, with the task in a note.
            "templates/t.j2:1:1:",
            "more than 64 MiB of memory",
        ),
    ]
}

#[test]
fn runaway_templates_stop_at_a_limit_with_a_located_error() {
    for (what, pb, j2, place, words) in cases() {
        let dir = playbook(&pb, j2);
        let out = plan(dir.path(), &[]);
        let stderr = &out.stderr;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: {:?}: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(place),
            "{what}: expected {place:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(words),
            "{what}: expected {words:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains("raise PICAOPS_TEMPLATE_"),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("nothing was contacted"), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        eprintln!("{what}: stopped in {:?}", out.took);
    }
}

#[test]
fn limits_can_be_raised_or_lowered_from_the_environment() {
    // 100 × 100 iterations: within the default fuel, over a fuel of 1000.
    let small = "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok";
    let dir = playbook(
        &task(&format!(
            "    - name: \"{small}\"\n      file: {{path: /x, state: directory}}\n"
        )),
        "",
    );
    let out = plan(dir.path(), &[("PICAOPS_TEMPLATE_FUEL", "1000")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("ran more than 1000 steps"),
        "{}",
        out.stderr
    );

    // 2^22 bytes (4 MiB): over a budget of 1 MiB, within the default.
    let dir = playbook(
        &task(&format!(
            "    - name: t\n      copy: {{dest: /x, content: \"{}\"}}\n",
            doubled(22)
        )),
        "",
    );
    let out = plan(dir.path(), &[("PICAOPS_TEMPLATE_MEMORY_MB", "1")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("more than 1 MiB of memory"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("raise PICAOPS_TEMPLATE_MEMORY_MB"),
        "{}",
        out.stderr
    );

    // With the fuel raised out of reach, the time limit stops the nested loops.
    let dir = playbook(
        &task(&format!(
            "    - name: \"{NESTED}\"\n      file: {{path: /x, state: directory}}\n"
        )),
        "",
    );
    let out = plan(
        dir.path(),
        &[
            ("PICAOPS_TEMPLATE_FUEL", "100000000000"),
            ("PICAOPS_TEMPLATE_SECONDS", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("pb.yml:4:") && out.stderr.contains("took more than 1 s"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("raise PICAOPS_TEMPLATE_SECONDS"),
        "{}",
        out.stderr
    );

    // A wrong value is said, not ignored.
    let out = plan(dir.path(), &[("PICAOPS_TEMPLATE_FUEL", "lots")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("PICAOPS_TEMPLATE_FUEL=\"lots\" is not a positive whole number"),
        "{}",
        out.stderr
    );
}
