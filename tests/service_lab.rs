//! Services on the lab: real Docker engines and Compose v2 (Debian trixie's docker-compose 2.x)
//! inside the lab hosts, the lab's web app image in versions 1.0, 1.1 and a broken 2.0, real SSH.
//! One test, in order, because each step starts from what the previous one deployed:
//!
//! 1. three services on two hosts at two sites come up healthy, their secrets delivered (the
//!    app reports their sha256) and never in any process's arguments on the hosts (`ps` sampled
//!    during the apply);
//! 2. a second apply runs no Compose command at all, counted by a wrapper around the Compose
//!    binary on the hosts (not from picaops' output);
//! 3. changing one service's environment recreates that service's container only;
//! 4. a plan with a rotated secret and a new version shows the Compose diff and no secret value
//!    anywhere in its output (human and JSON);
//! 5. version 2.0, whose healthcheck fails, is rolled back to 1.1, healthy again;
//! 6. a service removed from the inventory is held back, then taken down with
//!    --prune-services, its data directory kept; `logs` and `restart` work.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{json, text, Lab};

const COMPOSE_LOG: &str = "/var/log/picaops-test-compose.log";
const PLUGIN: &str = "/usr/libexec/docker/cli-plugins/docker-compose";

/// A shell command inside a lab host (through the outer Docker, not picaops).
fn on(host: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", &format!("picaops-lab-{host}"), "sh", "-c", cmd])
        .output()
        .expect("docker exec");
    text(&out.stdout)
}

/// Wraps the Compose binary (the plugin; /usr/bin/docker-compose links to it) so every call is
/// appended to COMPOSE_LOG, then runs the real one.
fn count_compose_calls(host: &str) {
    on(
        host,
        &format!(
            "[ -f {PLUGIN}.real ] || mv {PLUGIN} {PLUGIN}.real; \
             printf '#!/bin/sh\\necho \"$(date +%%s) $*\" >> {COMPOSE_LOG}\\nexec {PLUGIN}.real \"$@\"\\n' > {PLUGIN}; \
             chmod 755 {PLUGIN}; : > {COMPOSE_LOG}"
        ),
    );
}

fn restore_compose(host: &str) {
    on(
        host,
        &format!("[ -f {PLUGIN}.real ] && mv -f {PLUGIN}.real {PLUGIN}; rm -f {COMPOSE_LOG}"),
    );
}

/// Compose invocations logged so far (the docker CLI's plugin discovery excepted).
fn compose_calls(host: &str) -> Vec<String> {
    on(host, &format!("cat {COMPOSE_LOG} 2>/dev/null"))
        .lines()
        .filter(|l| !l.contains("docker-cli-plugin-metadata"))
        .map(String::from)
        .collect()
}

/// (compose service, container id, started at, health, image) of a project's containers.
fn containers(host: &str, project: &str) -> Vec<(String, String, String, String, String)> {
    let ids = on(
        host,
        &format!("docker ps -aq --filter label=com.docker.compose.project={project}"),
    );
    let mut out: Vec<_> = ids
        .split_whitespace()
        .map(|id| {
            let line = on(
                host,
                &format!(
                    "docker inspect -f '{{{{index .Config.Labels \"com.docker.compose.service\"}}}} {{{{.Id}}}} {{{{.State.StartedAt}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}none{{{{end}}}} {{{{.Config.Image}}}}' {id}"
                ),
            );
            let f: Vec<String> = line.split_whitespace().map(String::from).collect();
            (f[0].clone(), f[1].clone(), f[2].clone(), f[3].clone(), f[4].clone())
        })
        .collect();
    out.sort();
    out
}

fn all_healthy(host: &str, project: &str, image: &str) {
    let cs = containers(host, project);
    assert!(!cs.is_empty(), "{project} on {host}: no container");
    for c in &cs {
        assert_eq!(c.3, "healthy", "{project} on {host}: {c:?}");
    }
    assert!(
        cs.iter().any(|c| c.4 == image),
        "{project} on {host}: {cs:?}"
    );
}

fn sha256(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The lab's inventory with our own services.yml, in a sibling directory (so the lab's
/// `../id_ed25519`, `../secrets` and `../services` paths still resolve).
struct TestInventory {
    dir: PathBuf,
}

impl TestInventory {
    fn new(lab: &Lab) -> Self {
        let dir = lab.dir.join("inventory-service-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The lab's machines and access without its backup jobs (the VM inventory's copies: its
        // access.yml names no directory job, which would need backups.yml).
        let source = lab.dir.join("inventory-vms");
        for f in ["sites.yml", "hosts.yml", "groups.yml", "access.yml"] {
            std::fs::copy(source.join(f), dir.join(f)).unwrap();
        }
        TestInventory { dir }
    }

    fn services(&self, yaml: &str) {
        std::fs::write(self.dir.join("services.yml"), yaml).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        common::picaops_on(&self.dir, args)
    }
}

/// The lab's three services, with hello's version, greeting and token secret as given.
fn services_yml(hello_version: &str, greeting: &str, token: &str, with_notes: bool) -> String {
    let mut s = format!(
        "services:\n  \
         hello:\n    host: bob\n    compose: ../services/hello/compose.yml.j2\n    \
         vars: {{version: \"{hello_version}\", port: 18080}}\n    env: {{GREETING: {greeting}}}\n    \
         secrets: {{API_TOKEN: {token}}}\n    health: {{timeout: 60s}}\n  \
         pad:\n    host: alice\n    compose: ../services/pad/compose.yml.j2\n    \
         vars: {{version: \"1.0\", port: 18081}}\n    env: {{GREETING: salut}}\n    \
         secret_files: {{admin_password: pad-admin-password}}\n    \
         health: {{http: \"http://127.0.0.1:18081/health\", timeout: 60s}}\n"
    );
    if with_notes {
        s.push_str(
            "  notes:\n    host: alice\n    compose: ../services/notes/compose.yml.j2\n    \
             vars: {version: \"1.0\", port: 18082}\n    env: {GREETING: coucou}\n    \
             secrets: {NOTES_TOKEN: notes-token}\n    data: [/DATA/notes/db]\n    health: {timeout: 90s}\n",
        );
    }
    s
}

fn secret(lab: &Lab, name: &str) -> String {
    std::fs::read_to_string(lab.dir.join("secrets").join(name))
        .unwrap()
        .trim()
        .to_string()
}

/// Samples `ps -eo args` on the hosts every 50 ms while `work` runs; returns every line seen.
fn sampling_ps<T>(hosts: &[&str], work: impl FnOnce() -> T) -> (T, Vec<String>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let samplers: Vec<_> = hosts
        .iter()
        .map(|h| {
            let (h, stop) = (h.to_string(), stop.clone());
            thread::spawn(move || {
                let mut lines = Vec::new();
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    lines.extend(on(&h, "ps -eo args").lines().map(String::from));
                    samples += 1;
                    thread::sleep(Duration::from_millis(50));
                }
                (lines, samples)
            })
        })
        .collect();
    let result = work();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut samples = 0;
    for s in samplers {
        let (lines, n) = s.join().unwrap();
        all.extend(lines);
        samples += n;
    }
    (result, all, samples)
}

fn ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn services_deploy_only_what_changed_health_gated_with_rollback_and_no_secret_leaks() {
    let Some(lab) = common::lab("service_lab") else {
        return;
    };
    let inv = TestInventory::new(&lab);
    let hosts = ["bob", "alice"];

    // 0. Start from nothing: prune whatever an earlier run left (data directories stay).
    inv.services("services: {}\n");
    let out = inv.run(&[
        "service",
        "apply",
        "--prune-services",
        "--limit",
        "bob,alice",
    ]);
    ok(&out, "prune everything");
    for h in hosts {
        for p in ["hello", "pad", "notes"] {
            assert!(
                containers(h, p).is_empty(),
                "{p} on {h} still has containers"
            );
        }
        count_compose_calls(h);
    }
    let token = secret(&lab, "hello-api-token");
    let pad_password = secret(&lab, "pad-admin-password");
    let notes_token = secret(&lab, "notes-token");

    // 1. Three services, two hosts, two sites: healthy, secrets delivered, never in argv.
    inv.services(&services_yml("1.0", "bonjour", "hello-api-token", true));
    let (out, ps, samples) = sampling_ps(&hosts, || inv.run(&["service", "apply"]));
    ok(&out, "first apply");
    assert!(samples >= 10, "only {samples} ps samples");
    for s in [&token, &pad_password, &notes_token] {
        assert!(
            !ps.iter().any(|l| l.contains(s.as_str())),
            "a secret appeared in ps on a host"
        );
        assert!(!text(&out.stdout).contains(s.as_str()) && !text(&out.stderr).contains(s.as_str()));
    }
    all_healthy("bob", "hello", "picaops-lab/web:1.0");
    all_healthy("alice", "pad", "picaops-lab/web:1.0");
    all_healthy("alice", "notes", "picaops-lab/web:1.0");
    assert_eq!(on("bob", "curl -s 127.0.0.1:18080/"), "1.0 bonjour\n");
    let config: serde_json::Value =
        serde_json::from_str(&on("bob", "curl -s 127.0.0.1:18080/config")).unwrap();
    assert_eq!(config["secrets_sha256"]["API_TOKEN"], sha256(&token));
    let config: serde_json::Value =
        serde_json::from_str(&on("alice", "curl -s 127.0.0.1:18081/config")).unwrap();
    assert_eq!(
        config["secret_files_sha256"]["admin_password"],
        sha256(&format!("{pad_password}\n"))
    );
    // Root-only files on the host.
    assert_eq!(
        on("bob", "stat -c '%a %U' /var/lib/picaops/services/hello /var/lib/picaops/services/hello/secrets.env"),
        "700 root\n600 root\n"
    );
    let first_calls: Vec<usize> = hosts.iter().map(|h| compose_calls(h).len()).collect();
    assert!(first_calls.iter().all(|n| *n > 0), "{first_calls:?}");

    // 2. Nothing changed: no Compose command at all, on any host.
    let out = inv.run(&["service", "apply", "-o", "json"]);
    ok(&out, "second apply");
    let doc = json(&out);
    let actions: Vec<&str> = doc["machines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["changes"].as_array().unwrap())
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["unchanged"; 3]);
    for (h, before) in hosts.iter().zip(&first_calls) {
        assert_eq!(
            compose_calls(h).len(),
            *before,
            "{h}: {:?}",
            compose_calls(h)
        );
    }

    // 3. One service's environment changes: that service only is recreated.
    let pad_before = containers("alice", "pad");
    let notes_before = containers("alice", "notes");
    let hello_before = containers("bob", "hello");
    inv.services(&services_yml("1.0", "hallo", "hello-api-token", true));
    let plan = inv.run(&["service", "plan"]);
    ok(&plan, "plan of the environment change");
    let p = text(&plan.stdout);
    assert!(
        p.contains("-GREETING='bonjour'") && p.contains("+GREETING='hallo'"),
        "{p}"
    );
    assert!(
        p.contains("container web: recreate (service.env changed)"),
        "{p}"
    );
    ok(
        &inv.run(&["service", "apply"]),
        "apply of the environment change",
    );
    assert_eq!(containers("alice", "pad"), pad_before, "pad was touched");
    assert_eq!(
        containers("alice", "notes"),
        notes_before,
        "notes was touched"
    );
    let hello_after = containers("bob", "hello");
    assert_ne!(
        hello_after[0].1, hello_before[0].1,
        "hello was not recreated"
    );
    assert_eq!(on("bob", "curl -s 127.0.0.1:18080/"), "1.0 hallo\n");
    assert_eq!(
        compose_calls("alice").len(),
        first_calls[1],
        "Compose ran on alice"
    );
    let bob = compose_calls("bob");
    assert!(bob.len() > first_calls[0], "{bob:?}");
    assert!(
        bob.iter()
            .all(|l| l.contains("-p hello") || l.contains("compose version")),
        "{bob:?}"
    );

    // 4. A rotated secret and a new version: the Compose diff, and no secret value anywhere.
    let rotated = format!("rotated-{}", std::process::id());
    let rotated_file = lab.dir.join("secrets/svc-test-rotated");
    // Private, as the files store requires (it refuses a secret others may read).
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&rotated_file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&rotated_file)
            .unwrap();
        writeln!(f, "{rotated}").unwrap();
    }
    inv.services(&services_yml("1.1", "hallo", "svc-test-rotated", true));
    let human = inv.run(&["service", "plan"]);
    let machine = inv.run(&["service", "plan", "-o", "json"]);
    ok(&human, "plan with a rotated secret");
    let h = text(&human.stdout);
    assert!(
        h.contains("-    image: \"picaops-lab/web:1.0\"")
            && h.contains("+    image: \"picaops-lab/web:1.1\""),
        "{h}"
    );
    assert!(
        h.contains("secrets.env: API_TOKEN (values not shown)"),
        "{h}"
    );
    let j = json(&machine);
    assert_eq!(
        j["machines"][0]["changes"][0]["secrets_changed"][0],
        "API_TOKEN"
    );
    for out in [&human, &machine] {
        for s in [&rotated, &token, &pad_password, &notes_token] {
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                !all.contains(s.as_str()),
                "a secret value is in the plan output"
            );
        }
    }
    let (out, ps, _) = sampling_ps(&["bob"], || inv.run(&["service", "apply"]));
    ok(&out, "apply of the rotated secret");
    assert!(
        !ps.iter().any(|l| l.contains(&rotated)),
        "the rotated secret appeared in ps"
    );
    let config: serde_json::Value =
        serde_json::from_str(&on("bob", "curl -s 127.0.0.1:18080/config")).unwrap();
    assert_eq!(config["secrets_sha256"]["API_TOKEN"], sha256(&rotated));
    all_healthy("bob", "hello", "picaops-lab/web:1.1");

    // 5. Version 2.0 fails its healthcheck: rolled back to 1.1, healthy again.
    inv.services(&services_yml("2.0", "hallo", "svc-test-rotated", true));
    let out = inv.run(&["service", "apply"]);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{o}{}", text(&out.stderr));
    assert!(o.contains("rolled back"), "{o}");
    assert!(o.contains("unhealthy"), "{o}");
    assert!(o.contains("last log lines:"), "{o}");
    assert!(
        o.contains("picaops-lab-web 2.0 listening"),
        "the failing version's log: {o}"
    );
    // The lab app prints its secrets at start (as careless applications do): the failing
    // container's log lines reach the output redacted.
    assert!(
        o.contains("picaops-lab-web: API_TOKEN=(secret)"),
        "the failing version's secret line, redacted: {o}"
    );
    assert!(!o.contains(&rotated), "a secret from a container log: {o}");
    all_healthy("bob", "hello", "picaops-lab/web:1.1");
    assert_eq!(on("bob", "curl -s 127.0.0.1:18080/"), "1.1 hallo\n");
    assert!(on("bob", "cat /var/lib/picaops/services/hello/compose.yaml").contains("web:1.1"));
    let list = inv.run(&["service", "list", "-o", "json"]);
    ok(&list, "list");
    let rows = json(&list)["services"].as_array().unwrap().clone();
    let hello = rows.iter().find(|r| r["service"] == "hello").unwrap();
    assert_eq!(hello["drift"], "files differ");
    assert_eq!(hello["health"], "healthy");
    assert_eq!(hello["images"][0], "picaops-lab/web:1.1");

    // 6. A service leaves the inventory: held back, then pruned; its data directory stays.
    inv.services(&services_yml("1.1", "hallo", "svc-test-rotated", false));
    let out = inv.run(&["service", "apply"]);
    ok(&out, "apply without --prune-services");
    assert!(
        text(&out.stdout).contains("held back"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        containers("alice", "notes").len(),
        2,
        "notes was taken down without the flag"
    );
    ok(&inv.run(&["service", "apply", "--prune-services"]), "prune");
    assert!(containers("alice", "notes").is_empty());
    assert_eq!(
        on("alice", "test -s /DATA/notes/db/PG_VERSION && echo kept"),
        "kept\n"
    );
    let logs = inv.run(&["service", "logs", "hello", "--tail", "5"]);
    ok(&logs, "logs");
    assert!(
        text(&logs.stdout).contains("web-1"),
        "{}",
        text(&logs.stdout)
    );
    // `service logs` redacts too: hello's environment secret and pad's secret file, both
    // printed by the app at start (the host's own log holds the values).
    for (service, line, value) in [
        ("hello", "picaops-lab-web: API_TOKEN=", &rotated),
        (
            "pad",
            "picaops-lab-web: /run/secrets/admin_password=",
            &pad_password,
        ),
    ] {
        let host = if service == "hello" { "bob" } else { "alice" };
        let raw = on(
            host,
            &format!("docker logs {service}-web-1 2>&1 | grep -F '{line}'"),
        );
        assert!(
            raw.contains(value.as_str()),
            "{service}: the container's own log lacks its secret, so redaction is not exercised: {raw}"
        );
        let logs = inv.run(&["service", "logs", service, "--tail", "100"]);
        ok(&logs, "logs");
        let all = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
        assert!(
            all.contains(&format!("{line}(secret)")),
            "service logs {service}: no redacted secret line: {all}"
        );
        assert!(
            !all.contains(value.as_str()),
            "service logs {service} shows a secret value: {all}"
        );
    }
    ok(&inv.run(&["service", "restart", "pad"]), "restart");
    all_healthy("alice", "pad", "picaops-lab/web:1.0");

    // Leave the lab as `lab up` describes it.
    std::fs::remove_file(&rotated_file).unwrap();
    inv.services(&services_yml("1.0", "bonjour", "hello-api-token", true));
    ok(
        &inv.run(&["service", "apply"]),
        "back to the lab's services",
    );
    all_healthy("alice", "notes", "picaops-lab/web:1.0");
    for h in hosts {
        restore_compose(h);
    }
    let _ = std::fs::remove_dir_all(Path::new(&inv.dir));
}
