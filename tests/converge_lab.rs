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

/// Held by an interrupted-write test from its interruption to its end.
static INTERRUPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the interrupted-write tests work on bob.
const BIG_ROOT: &str = "/srv/picaops-bigtest";
/// The big file they write: big enough that decoding, checking and syncing it take a while.
const BIG_MIB: usize = 24;

/// Run inside bob (through the outer Docker, not picaops): waits until the apply has STARTED the
/// big file (its temporary file exists beside the destination) and not finished it (the
/// destination is absent), freezes the apply's whole session (its shell and the `base64 -d`
/// writing the file) with SIGSTOP so the state cannot move, proves it again, then does `$1`:
/// `kill` (SIGKILL to that session: the apply script dies on the host) or `cut` (SIGKILL to the
/// sshd processes carrying its connection, then SIGCONT: the script lives on, disconnected).
/// Prints `frozen TMP SIZE` and exits 0, or says what it saw and exits 1.
const INTERRUPT: &str = r#"set -u
what=$1 root=$2 i=0
end=$(( $(date +%s) + 120 ))
while :; do
  for t in "$root"/.big.bin.picaops-??????; do
    [ -e "$t" ] || continue
    pid=$(sed -n 's/^remote_pid=//p' /run/picaops/apply.lock/info 2>/dev/null)
    [ -n "$pid" ] || continue
    sid=$(ps -o sid= -p "$pid" | tr -d ' ')
    [ -n "$sid" ] || continue
    pkill -STOP -s "$sid"
    if [ ! -e "$t" ] || [ -e "$root/big.bin" ]; then pkill -CONT -s "$sid"; echo "too late: the write finished"; exit 1; fi
    # The run lock is the host's: it may be another test's apply (one that has nothing to do
    # with big.bin). Only a session that has the temporary file open, or names it, is ours.
    mine=
    for p in $(ps -o pid= -s "$sid"); do
      case $(ps -o args= -p "$p") in *"$t"*) mine=1 ;; esac
      for fd in /proc/"$p"/fd/*; do [ "$(readlink "$fd" 2>/dev/null)" = "$t" ] && mine=1; done
    done
    if [ -z "$mine" ]; then pkill -CONT -s "$sid"; continue; fi
    echo "frozen $t $(stat -c %s "$t") pid=$pid session=$sid"
    ps -o pid=,stat=,args= -s "$sid" | cut -c1-80
    if [ "$what" = kill ]; then
      pkill -KILL -s "$sid"
    else
      # The connection's server side: the apply shell's parent, and the parents above it that are
      # sshd processes (OpenSSH 10 sshd-session and its monitor); never the listening sshd.
      p=$(ps -o ppid= -p "$pid" | tr -d ' ')
      while [ -n "$p" ] && [ "$p" != 1 ]; do
        c=$(ps -o args= -p "$p") up=$(ps -o ppid= -p "$p" | tr -d ' ')
        case $c in *"sshd-session"*|"sshd: root@"*|"sshd: root [priv]"*) kill -KILL "$p"; echo "killed $c" ;; *) break ;; esac
        p=$up
      done
      pkill -CONT -s "$sid"
    fi
    exit 0
  done
  # A busy loop of builtins (no fork) for the few seconds until the write starts: a sleep
  # between looks would often miss the part-written file. The clock is read now and then.
  i=$((i + 1))
  if [ $((i % 5000)) = 0 ]; then
    [ "$(date +%s)" -lt "$end" ] || { echo "the apply never started writing $root/big.bin"; exit 1; }
  fi
done
"#;

/// A playbook (in a temporary directory) writing BIG_MIB MiB of random data to BIG_ROOT/big.bin
/// from a workstation file, with a small file before and one after it.
fn big_playbook(dir: &Path) -> (PathBuf, Vec<u8>) {
    use std::io::Read;
    let mut data = vec![0u8; BIG_MIB << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/big.bin"), &data).unwrap();
    let pb = dir.join("big.yml");
    std::fs::write(
        &pb,
        format!(
            "- name: Big file\n  hosts: bob\n  tasks:\n    \
             - name: Root\n      file: {{path: {BIG_ROOT}, state: directory}}\n    \
             - name: Before\n      copy: {{dest: {BIG_ROOT}/before, content: \"before\\n\"}}\n    \
             - name: Big\n      copy: {{src: big.bin, dest: {BIG_ROOT}/big.bin}}\n    \
             - name: After\n      copy: {{dest: {BIG_ROOT}/after, content: \"after\\n\"}}\n"
        ),
    )
    .unwrap();
    (pb, data)
}

/// What BIG_ROOT holds: `NAME SIZE SHA256` per entry, hidden ones (temporary files) included.
fn big_listing(lab: &Lab) -> Vec<(String, usize, String)> {
    on(
        lab,
        "bob",
        &format!(
            "cd {BIG_ROOT} 2>/dev/null || exit 0; for f in * .*; do [ -f \"$f\" ] && echo \"$f $(wc -c < \"$f\") $(sha256sum < \"$f\" | cut -c1-64)\"; done; true"
        ),
    )
    .lines()
    .map(|l| {
        let mut w = l.split(' ');
        (
            w.next().unwrap().to_string(),
            w.next().unwrap().parse().unwrap(),
            w.next().unwrap().to_string(),
        )
    })
    .collect()
}

/// Every file at its destination is whole (absent is fine); returns the temporary files left.
fn assert_no_partial_file(lab: &Lab, big: &[u8], when: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let big_sha = hex::encode(Sha256::digest(big));
    let mut temps = Vec::new();
    for (name, size, sha) in big_listing(lab) {
        match name.as_str() {
            "big.bin" => assert!(
                size == big.len() && sha == big_sha,
                "{when}: {BIG_ROOT}/big.bin is partial ({size} of {} bytes)",
                big.len()
            ),
            "before" => assert_eq!(size, 7, "{when}: `before` is partial"),
            "after" => assert_eq!(size, 6, "{when}: `after` is partial"),
            t if t.contains(".picaops-") => temps.push(t.to_string()),
            other => panic!("{when}: unexpected file {other} in {BIG_ROOT}"),
        }
    }
    temps
}

/// Starts the big apply and interrupts it on the host (`what`: kill or cut) while big.bin is
/// half written; returns what the interrupter saw and picaops's output.
fn interrupted_apply(
    lab: &Lab,
    pb: &Path,
    what: &str,
) -> (String, Output, std::sync::MutexGuard<'static, ()>) {
    // The kill and cut tests write the same files on bob, and the kill leaves a temporary file
    // the other's interrupter would take for its own: one at a time (to the end of the test).
    let guard = INTERRUPTING.lock().unwrap_or_else(|e| e.into_inner());
    on(lab, "bob", &format!("rm -rf {BIG_ROOT}"));
    let interrupter = std::process::Command::new("docker")
        .args([
            "exec",
            "picaops-lab-bob",
            "sh",
            "-c",
            INTERRUPT,
            "interrupt",
            what,
            BIG_ROOT,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec");
    let child = spawn_apply(lab, &[pb.to_str().unwrap()]);
    let seen = interrupter.wait_with_output().unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", text(&seen.stdout), text(&seen.stderr));
    assert!(
        seen.status.success(),
        "{what}: could not interrupt the apply mid-write: {said}\npicaops: {}",
        text(&out.stdout)
    );
    eprintln!("{what}: {said}");
    // `frozen TMP SIZE`: the temporary file was caught before its rename (the interrupter
    // checked), usually part-written; at worst whole and being checked (sha256) or synced.
    let size: usize = said
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no size in {said}"));
    assert!(size <= BIG_MIB << 20, "{what}: {said}");
    eprintln!(
        "{what}: interrupted with {size} of {} bytes in the temporary file{}",
        BIG_MIB << 20,
        if size < BIG_MIB << 20 {
            " (part-written)"
        } else {
            " (whole, before its check and rename)"
        }
    );
    (said, out, guard)
}

#[test]
fn an_apply_killed_on_the_host_mid_write_leaves_no_partial_file_and_the_rerun_cleans_up() {
    let Some(lab) = lab("an_apply_killed_on_the_host_mid_write_leaves_no_partial_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pb, big) = big_playbook(dir.path());
    let (_, out, _one_at_a_time) = interrupted_apply(&lab, &pb, "kill");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // Killed with SIGKILL, the script could not clean up: the half-written temporary file and
    // the run lock are left, the destination untouched.
    let temps = assert_no_partial_file(&lab, &big, "after the kill");
    assert_eq!(
        temps.len(),
        1,
        "the killed write's temporary file: {temps:?}"
    );
    assert!(
        !big_listing(&lab).iter().any(|(n, ..)| n == "big.bin"),
        "big.bin exists although its write was killed"
    );

    // The next run takes over the dead run's lock, removes the leftover and converges.
    let plan = plan(&lab, &[pb.to_str().unwrap()]);
    let shown = text(&plan.stdout);
    assert!(
        shown.contains(&format!(
            "remove {BIG_ROOT}/{} (left by an interrupted apply)",
            temps[0]
        )),
        "the plan does not announce the leftover's removal: {shown}"
    );
    let rerun = apply(&lab, &[pb.to_str().unwrap()]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stdout));
    let doc = json(&rerun);
    let warnings = host(&doc, "bob")["warnings"].to_string();
    assert!(warnings.contains("stale run lock"), "{warnings}");
    let temps = assert_no_partial_file(&lab, &big, "after the rerun");
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    assert_eq!(big_listing(&lab).len(), 3, "{:?}", big_listing(&lab));
    lock_released(&lab);
    on(&lab, "bob", &format!("rm -rf {BIG_ROOT}"));
}

#[test]
fn an_apply_cut_off_mid_write_finishes_the_file_or_leaves_it_untouched() {
    let Some(lab) = lab("an_apply_cut_off_mid_write_finishes_the_file_or_leaves_it_untouched")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pb, big) = big_playbook(dir.path());
    let (_, out, _one_at_a_time) = interrupted_apply(&lab, &pb, "cut");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // Disconnected, the script ignores SIGHUP/SIGPIPE and goes on: it releases the run lock when
    // it ends, having removed its temporary files.
    lock_released(&lab);
    eprintln!("after the cut: {:?}", big_listing(&lab));
    let temps = assert_no_partial_file(&lab, &big, "after the cut");
    assert!(
        temps.is_empty(),
        "temporary files left after the cut: {temps:?}"
    );

    let rerun = apply(&lab, &[pb.to_str().unwrap()]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stdout));
    let temps = assert_no_partial_file(&lab, &big, "after the rerun");
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    assert_eq!(big_listing(&lab).len(), 3, "{:?}", big_listing(&lab));
    let again = json(&apply(&lab, &[pb.to_str().unwrap()]));
    assert_eq!(host(&again, "bob")["changed"], 0, "{again}");
    on(&lab, "bob", &format!("rm -rf {BIG_ROOT}"));
}

#[test]
fn two_applies_on_one_host_meet_the_run_lock() {
    let Some(lab) = lab("two_applies_on_one_host_meet_the_run_lock") else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-slowtest");
    let pb = playbook("slow.yml");
    let first = spawn_apply(&lab, &["-e", "blob=a", "-e", "pause=4", &pb]);
    // The first one is inside its 4 s command, holding the lock.
    common::wait_for(
        "the first apply to reach its slow command",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            on(
                &lab,
                "bob",
                "test -f /run/picaops/apply.lock/info && pgrep -x sleep -a | grep -q ' 4$' && echo held || true",
            )
            .contains("held")
            .then_some(())
        },
    );

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

/// A second, real sshd on bob for counting: port 2222, LogLevel VERBOSE, its own log file, so
/// only the connections of this test are in it (other tests use the lab's sshd on port 22 at the
/// same time). Stopped (by its pid) when dropped.
struct CountingSshd;

const COUNTING_PORT: &str = "2222";
const COUNTING_LOG: &str = "/tmp/picaops-test-roundtrips.log";
const COUNTING_PID: &str = "/run/picaops-test-roundtrips.pid";

fn in_bob(cmd: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", "picaops-lab-bob", "sh", "-c", cmd])
        .output()
        .expect("docker exec");
    text(&out.stdout)
}

impl CountingSshd {
    fn start() -> Self {
        in_bob(&format!(
            "[ -f {COUNTING_PID} ] && kill $(cat {COUNTING_PID}) 2>/dev/null; rm -f {COUNTING_LOG}; \
             /usr/sbin/sshd -p {COUNTING_PORT} -o LogLevel=VERBOSE -o PidFile={COUNTING_PID} -E {COUNTING_LOG}"
        ));
        common::wait_for(
            "the counting sshd to listen",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                in_bob(&format!("cat {COUNTING_LOG} 2>/dev/null"))
                    .contains("Server listening")
                    .then_some(())
            },
        );
        CountingSshd
    }

    /// (SSH connections authenticated, sessions started: each command or subsystem) so far.
    fn counts(&self) -> (usize, usize) {
        let log = in_bob(&format!("cat {COUNTING_LOG}"));
        (
            log.matches("Accepted publickey for root").count(),
            log.matches("Starting session:").count(),
        )
    }
}

impl Drop for CountingSshd {
    fn drop(&mut self) {
        in_bob(&format!(
            "kill $(cat {COUNTING_PID}) 2>/dev/null; rm -f {COUNTING_PID} {COUNTING_LOG}"
        ));
    }
}

#[test]
fn plan_and_apply_cost_the_round_trips_the_readme_says_counted_by_sshd() {
    let Some(lab) = lab("plan_and_apply_cost_the_round_trips_the_readme_says_counted_by_sshd")
    else {
        return;
    };
    on(&lab, "bob", "rm -rf /srv/picaops-rttest");
    let sshd = CountingSshd::start();
    // The lab inventory with bob on the counting sshd (same host key), beside the lab's.
    let inv = lab.dir.join("inventory-roundtrips");
    let _ = std::fs::remove_dir_all(&inv);
    std::fs::create_dir_all(&inv).unwrap();
    for f in ["sites.yml", "groups.yml"] {
        std::fs::copy(lab.inventory.join(f), inv.join(f)).unwrap();
    }
    let hosts = std::fs::read_to_string(lab.inventory.join("hosts.yml")).unwrap();
    let at = hosts.find("  bob:\n").expect("bob in hosts.yml");
    let (head, tail) = hosts.split_at(at);
    let moved = format!(
        "{head}{}",
        tail.replacen("    port: 22\n", &format!("    port: {COUNTING_PORT}\n"), 1)
    );
    assert_ne!(moved, hosts);
    std::fs::write(inv.join("hosts.yml"), moved).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("rt.yml");
    std::fs::write(
        &pb,
        "- name: Round trips\n  hosts: bob\n  tasks:\n    \
         - name: Root\n      file: {path: /srv/picaops-rttest, state: directory}\n    \
         - name: A file\n      copy: {dest: /srv/picaops-rttest/a, content: \"a\\n\"}\n    \
         - name: Another\n      copy: {dest: /srv/picaops-rttest/b, content: \"b\\n\", mode: \"0600\"}\n",
    )
    .unwrap();
    let pb = pb.to_str().unwrap();

    // What sshd saw for one picaops command: (connections, sessions), and picaops's own count.
    let mut seen = sshd.counts();
    let mut measure = |args: &[&str]| {
        let mut all = vec![args[0], "-q", "-o", "json", "-l", "bob"];
        all.extend_from_slice(&args[1..]);
        let out = common::picaops_on(&inv, &all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stdout)
        );
        let said = host(&json(&out), "bob")["round_trips"].as_u64();
        let now = sshd.counts();
        let delta = (now.0 - seen.0, now.1 - seen.1);
        seen = now;
        (delta, said)
    };
    // plan: one read. apply with changes: the read, then the script with the changes. apply
    // with nothing to change: the read only. Each over one connection.
    let plan = measure(&["plan", pb]);
    let first = measure(&["apply", pb]);
    let noop = measure(&["apply", pb]);
    eprintln!("sshd counted (connections, sessions): plan {plan:?}, apply {first:?}, no-op apply {noop:?}");
    assert_eq!(plan.0, (1, 1), "plan: (connections, sessions) sshd saw");
    assert_eq!(
        first.0,
        (1, 2),
        "apply with changes: (connections, sessions) sshd saw"
    );
    assert_eq!(
        noop.0,
        (1, 1),
        "a no-op apply: (connections, sessions) sshd saw"
    );
    // picaops's own counter agrees with sshd.
    for (what, (delta, said)) in [("plan", plan), ("apply", first), ("no-op apply", noop)] {
        if let Some(said) = said {
            assert_eq!(
                said as usize, delta.1,
                "{what}: picaops counted {said} round trips, sshd {} sessions",
                delta.1
            );
        }
    }
    assert_eq!(noop.1, Some(1));
    drop(sshd);
    on(&lab, "bob", "rm -rf /srv/picaops-rttest");
    let _ = std::fs::remove_dir_all(&inv);
}
