//! `picaops plan` / `apply` against the lab: real sshd's, real files, apt, systemd and accounts
//! in the lab's containers. Needs `picaops lab up` (see tests/common).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{host, json, lab, picaops, text, Lab};
use serde_json::Value;

fn playbook(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/converge")
        .join(name)
        .display()
        .to_string()
}

/// (task, item, resource, action) of every step that changes something.
fn changes(host: &Value) -> BTreeSet<(String, String, String, String)> {
    host["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| {
            ["create", "update", "delete", "run"].contains(&s["action"].as_str().unwrap_or(""))
        })
        .map(|s| {
            (
                s["task"].as_str().unwrap_or("").to_string(),
                s["item"].as_str().unwrap_or("").to_string(),
                s["resource"].as_str().unwrap_or("").to_string(),
                s["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Runs a shell command on a lab host as root (through picaops run).
fn on(lab: &Lab, host: &str, script: &str) -> String {
    let out = lab.picaops(&["run", "-q", "-o", "json", "-l", host, "--", script]);
    let doc = json(&out);
    let h = &doc["hosts"][0];
    assert_eq!(h["ok"], true, "{script} failed on {host}: {h}");
    h["stdout"].as_str().unwrap_or("").to_string()
}

fn apply(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["apply", "-q", "-o", "json"];
    all.extend_from_slice(args);
    lab.picaops(&all)
}

fn plan(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["plan", "-q", "-o", "json"];
    all.extend_from_slice(args);
    lab.picaops(&all)
}

const MODULES_SETUP: &str = "
systemctl disable --now picaops-modtest.service 2>/dev/null; rm -f /etc/systemd/system/picaops-modtest.service; systemctl daemon-reload
userdel picaops-t1 2>/dev/null; groupdel picaops-g1 2>/dev/null
rm -rf /srv/picaops-modtest; mkdir -p /srv/picaops-modtest
printf 'mode=slow\\nobsolete=1\\nkeep=1\\n' > /srv/picaops-modtest/settings; echo x > /srv/picaops-modtest/gone
apt-get remove -y -q hello >/dev/null 2>&1; apt-get install -y -q figlet >/dev/null 2>&1; true";

#[test]
fn every_module_does_what_the_plan_said_and_then_nothing() {
    let Some(lab) = lab("every_module_does_what_the_plan_said_and_then_nothing") else {
        return;
    };
    on(&lab, "bob", MODULES_SETUP);
    let pb = playbook("modules.yml");

    let planned = plan(&lab, &[&pb]);
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned.stderr));
    let planned = json(&planned);
    let predicted = changes(host(&planned, "bob"));
    // Every module appears among the predicted changes.
    let modules: BTreeSet<&str> = host(&planned, "bob")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "unchanged")
        .filter_map(|s| s["module"].as_str())
        .collect();
    for m in [
        "file", "copy", "template", "line", "package", "user", "group", "unit", "command", "shell",
    ] {
        assert!(
            modules.contains(m),
            "no change predicted for module {m}: {modules:?}"
        );
    }

    let applied = apply(&lab, &[&pb]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stdout));
    let applied = json(&applied);
    assert_eq!(
        changes(host(&applied, "bob")),
        predicted,
        "apply did not do what plan said"
    );
    // One read and one write, twice: the package installs make picaops read the handler's
    // state again after them.
    assert_eq!(host(&applied, "bob")["round_trips"], 4);

    // What the modules did, read back from the host.
    let facts = on(
        &lab,
        "bob",
        "cd /srv/picaops-modtest && cat settings && stat -c '%a %U %G' private empty hosts.txt && readlink link \
         && cat inline.conf payload.txt created && id -u picaops-t1 && getent group picaops-g1 | cut -d: -f3 \
         && systemctl is-active picaops-modtest.service && systemctl is-enabled picaops-modtest.service \
         && dpkg-query -W -f '${Status}\\n' hello && ! dpkg-query -W -f '${Status}\\n' figlet | grep -q ' installed' \
         && wc -l < handler.log && cat shell.log && ls made-by-command && ! test -e gone && echo ALL-OK",
    );
    assert!(facts.contains("mode=fast\nkeep=1\ncolor=blue\n"), "{facts}");
    assert!(
        facts.contains("700 picaops-t1 picaops-g1\n640 root root\n600 root root\n"),
        "{facts}"
    );
    assert!(facts.contains("/srv/picaops-modtest/empty\nsite=toulouse\npayload from the workstation\nhello\n4243\n4242\nactive\nenabled\n"), "{facts}");
    assert!(
        facts.contains("install ok installed\n1\nonce\nmade-by-command\nALL-OK"),
        "{facts}"
    );

    let again = apply(&lab, &[&pb]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    let again = json(&again);
    assert_eq!(
        host(&again, "bob")["changed"],
        0,
        "second apply changed things: {again}"
    );
    assert_eq!(
        host(&again, "bob")["round_trips"],
        1,
        "a no-op costs one round trip"
    );

    let drift = lab.picaops(&["plan", "-q", "--detailed-exitcode", &pb]);
    assert_eq!(drift.status.code(), Some(0), "{}", text(&drift.stdout));
    on(
        &lab,
        "bob",
        "echo tampered >> /srv/picaops-modtest/inline.conf",
    );
    let drift = lab.picaops(&["plan", "--detailed-exitcode", &pb]);
    assert_eq!(drift.status.code(), Some(2), "{}", text(&drift.stdout));
    let shown = text(&drift.stdout);
    assert!(
        shown.contains("-tampered"),
        "the diff shows the line going away:\n{shown}"
    );
}

#[test]
fn a_task_reading_a_command_result_is_unknown_until_apply() {
    let Some(lab) = lab("a_task_reading_a_command_result_is_unknown_until_apply") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-regtest");
    let pb = playbook("registered.yml");
    let doc = json(&plan(&lab, &[&pb]));
    let steps = host(&doc, "bob")["steps"].as_array().unwrap().clone();
    let action = |task: &str| {
        steps
            .iter()
            .find(|s| s["task"] == task)
            .map(|s| s["action"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(action("Ask the host"), "run");
    assert_eq!(action("Uses the answer"), "unknown");
    assert_eq!(action("Root"), "create");
    assert_eq!(
        action("Does not use it"),
        "create",
        "only the dependent task is unknown"
    );

    let done = apply(&lab, &[&pb]);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stdout));
    assert_eq!(on(&lab, "bob", "cat /srv/picaops-regtest/uname"), "bob\n");
}

/// Files of the slow playbook: every one is absent or whole, and no temporary file is left.
fn check_no_partial_file(lab: &Lab, blob_len: usize) {
    let listing = on(
        lab,
        "bob",
        "cd /srv/picaops-slowtest 2>/dev/null || exit 0; for f in * .*; do [ -f \"$f\" ] && echo \"$f $(wc -c < \"$f\")\"; done; true",
    );
    for line in listing.lines() {
        let (name, size) = line.split_once(' ').unwrap();
        assert!(
            !name.contains("picaops-"),
            "temporary file left behind: {name}"
        );
        let size: usize = size.parse().unwrap();
        assert_eq!(size, blob_len + 2, "{name} is partial ({size} bytes)");
    }
}

fn lock_released(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while on(
        lab,
        "bob",
        "test -d /run/picaops/apply.lock && echo held || echo free",
    )
    .trim()
        == "held"
    {
        assert!(
            Instant::now() < deadline,
            "the run lock is still held 30 s later"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn_apply(lab: &Lab, args: &[&str]) -> std::process::Child {
    picaops()
        .arg("-i")
        .arg(&lab.inventory)
        .args(["apply", "-q", "-o", "json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picaops starts")
}

#[test]
fn an_apply_killed_mid_run_leaves_no_partial_file_and_reruns_clean() {
    let Some(lab) = lab("an_apply_killed_mid_run_leaves_no_partial_file_and_reruns_clean") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-slowtest");
    let blob = "x".repeat(100_000); // one argv word is at most 128 KiB
    let extra = format!("{{\"blob\": \"{blob}\", \"pause\": 3}}");
    let pb = playbook("slow.yml");
    let mut child = spawn_apply(&lab, &["-e", &extra, &pb]);
    // Kill it while the host is in the middle of the script (in the 3 s command).
    std::thread::sleep(Duration::from_millis(1500));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    check_no_partial_file(&lab, blob.len());
    lock_released(&lab);
    check_no_partial_file(&lab, blob.len());

    let rerun = apply(&lab, &["-e", &extra, &pb]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stdout));
    let again = apply(
        &lab,
        &["-e", &extra.replace("\"pause\": 3", "\"pause\": 0"), &pb],
    );
    let doc = json(&again);
    // Only the command runs again (it has no guard); every file is in place.
    assert_eq!(host(&doc, "bob")["changed"], 1, "{doc}");
    check_no_partial_file(&lab, blob.len());
}

#[test]
fn two_applies_on_one_host_meet_the_run_lock() {
    let Some(lab) = lab("two_applies_on_one_host_meet_the_run_lock") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-slowtest");
    let pb = playbook("slow.yml");
    let first = spawn_apply(&lab, &["-e", "blob=a", "-e", "pause=4", &pb]);
    std::thread::sleep(Duration::from_millis(1500));

    // A second admin without --lock-wait: refused, told who holds the lock.
    let second = apply(&lab, &["-e", "blob=a", "-e", "pause=0", &pb]);
    assert_eq!(second.status.code(), Some(1));
    let doc = json(&second);
    let error = host(&doc, "bob")["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        error.contains("another apply holds the run lock"),
        "{error}"
    );
    assert!(
        error.contains("picaops pid") && error.contains("since"),
        "{error}"
    );

    // A third one waits for the lock, then converges.
    let third = apply(
        &lab,
        &["--lock-wait", "30", "-e", "blob=a", "-e", "pause=0", &pb],
    );
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stdout));
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stdout));

    // A lock whose process is gone is taken over, with a warning.
    on(
        &lab,
        "bob",
        "mkdir -p /run/picaops/apply.lock && printf 'user=ghost\\nfrom=nowhere\\npid=1\\nsince=then\\nremote_pid=999999\\nboot=%s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\" > /run/picaops/apply.lock/info && rm -rf /srv/picaops-slowtest/after-1",
    );
    let taken = apply(&lab, &["-e", "blob=a", "-e", "pause=0", &pb]);
    assert_eq!(taken.status.code(), Some(0), "{}", text(&taken.stdout));
    let doc = json(&taken);
    let warnings = host(&doc, "bob")["warnings"].to_string();
    assert!(
        warnings.contains("stale run lock") && warnings.contains("ghost"),
        "{warnings}"
    );
    lock_released(&lab);
}

#[test]
fn a_saved_plan_is_applied_as_reviewed_or_refused() {
    let Some(lab) = lab("a_saved_plan_is_applied_as_reviewed_or_refused") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-regtest");
    let dir = tempfile::tempdir().unwrap();
    let saved: PathBuf = dir.path().join("tonight.plan");
    let pb = playbook("registered.yml");
    let out = lab.picaops(&["plan", "-q", "--out", saved.to_str().unwrap(), &pb]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&saved).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);

    let done = apply(&lab, &[saved.to_str().unwrap()]);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stdout));
    assert_eq!(on(&lab, "bob", "cat /srv/picaops-regtest/uname"), "bob\n");

    // Plan again, then someone changes the host: the saved plan is refused, nothing done.
    let out = lab.picaops(&["plan", "-q", "--out", saved.to_str().unwrap(), &pb]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    on(&lab, "bob", "rm -rf /srv/picaops-regtest");
    let refused = apply(&lab, &[saved.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let doc = json(&refused);
    assert!(
        host(&doc, "bob")["error"]
            .as_str()
            .unwrap_or("")
            .contains("changed since the plan was made"),
        "{doc}"
    );
    assert_eq!(
        on(
            &lab,
            "bob",
            "test -e /srv/picaops-regtest && echo there || echo absent"
        ),
        "absent\n"
    );
}

#[test]
fn variables_take_precedence_inventory_group_host_play_task_extra() {
    let Some(lab) = lab("variables_take_precedence_inventory_group_host_play_task_extra") else {
        return;
    };
    // A copy of the lab inventory beside it (its identity file is `../id_ed25519`), with each
    // variable set at more and more levels.
    let inv = lab.dir.join("inventory-precedence");
    let _ = std::fs::remove_dir_all(&inv);
    std::fs::create_dir_all(&inv).unwrap();
    for f in ["sites.yml", "hosts.yml"] {
        std::fs::copy(lab.inventory.join(f), inv.join(f)).unwrap();
    }
    let groups = std::fs::read_to_string(lab.inventory.join("groups.yml")).unwrap();
    let groups = groups.replacen(
        "  hypervisors:\n",
        "  hypervisors:\n    vars: {b: group, c: group, d: group, e: group, f: group}\n",
        1,
    );
    std::fs::write(inv.join("groups.yml"), groups).unwrap();
    std::fs::write(inv.join("vars.yml"), "vars: {a: inventory, b: inventory, c: inventory, d: inventory, e: inventory, f: inventory}\n").unwrap();
    let hosts = std::fs::read_to_string(inv.join("hosts.yml")).unwrap();
    let hosts = hosts.replacen(
        "  bob:\n",
        "  bob:\n    vars: {c: host, d: host, e: host, f: host}\n",
        1,
    );
    std::fs::write(inv.join("hosts.yml"), hosts).unwrap();
    let pb = inv.join("precedence.play");
    std::fs::write(
        &pb,
        "- name: Precedence\n  hosts: bob\n  vars: {d: play, e: play, f: play}\n  tasks:\n    - name: Show\n      \
         vars: {e: task, f: task}\n      copy: {dest: /srv/picaops-precedence, content: \"{{ a }} {{ b }} {{ c }} {{ d }} {{ e }} {{ f }}\"}\n",
    )
    .unwrap();
    let out = picaops()
        .arg("-i")
        .arg(&inv)
        .args([
            "plan",
            "-q",
            "-o",
            "json",
            "-e",
            "f=extra",
            pb.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let doc = json(&out);
    let diff = host(&doc, "bob")["steps"][0]["diff"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        diff.contains("+inventory group host play task extra"),
        "{diff}"
    );
    let _ = std::fs::remove_dir_all(&inv);
}

#[test]
fn base_playbooks_converge_on_the_lab_and_stay_converged() {
    let Some(lab) = lab("base_playbooks_converge_on_the_lab_and_stay_converged") else {
        return;
    };
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yml");
    let site = site.to_str().unwrap();
    let first = apply(&lab, &[site]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stdout));
    let second = apply(&lab, &[site]);
    let doc = json(&second);
    assert_eq!(second.status.code(), Some(0), "{doc}");
    for h in ["bob", "alice", "caribou", "ldap"] {
        assert_eq!(
            host(&doc, h)["changed"],
            0,
            "{h} changed on the second run: {}",
            host(&doc, h)
        );
    }
    let sshd = on(
        &lab,
        "alice",
        "sshd -T 2>/dev/null | grep -E '^(passwordauthentication|permitrootlogin) '",
    );
    assert!(sshd.contains("passwordauthentication no"), "{sshd}");
    assert!(
        sshd.contains("permitrootlogin without-password")
            || sshd.contains("permitrootlogin prohibit-password"),
        "{sshd}"
    );
}

#[test]
fn secrets_stay_out_of_plans_and_reports() {
    let Some(lab) = lab("secrets_stay_out_of_plans_and_reports") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-secrettest");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("secret.yml");
    std::fs::write(
        &pb,
        "- name: Secrets\n  hosts: bob\n  vars: {db_password: hunter2-not-for-logs}\n  tasks:\n    \
         - name: Root\n      file: {path: /srv/picaops-secrettest, state: directory}\n    \
         - name: Config with a password\n      copy: {dest: /srv/picaops-secrettest/app.env, content: \"DB_PASSWORD={{ db_password }}\\n\"}\n    \
         - name: Hidden entirely\n      no_log: true\n      copy: {dest: /srv/picaops-secrettest/other, content: \"{{ api }}\\n\"}\n",
    )
    .unwrap();
    let pb = pb.to_str().unwrap();
    for args in [
        vec!["plan", "-e", "api=abc-very-private", pb],
        vec!["plan", "-o", "json", "-e", "api=abc-very-private", pb],
        vec!["apply", "-v", "-e", "api=abc-very-private", pb],
    ] {
        let out = lab.picaops(&args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains("hunter2-not-for-logs"),
            "{args:?} printed the password:\n{all}"
        );
        assert!(
            !all.contains("abc-very-private"),
            "{args:?} printed the no_log content:\n{all}"
        );
        if args[0] == "plan" {
            assert!(all.contains("DB_PASSWORD=(secret)"), "{args:?}:\n{all}");
            assert!(all.contains("hidden: no_log"), "{args:?}:\n{all}");
        }
    }
    assert_eq!(
        on(&lab, "bob", "cat /srv/picaops-secrettest/app.env"),
        "DB_PASSWORD=hunter2-not-for-logs\n"
    );
}
