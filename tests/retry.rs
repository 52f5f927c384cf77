//! Retrying what failed, against real sshd processes on loopback addresses (no lab): the binary
//! records the machines an apply left failed, `--limit @failed` (and `@FILE`) selects exactly
//! them, counted by the logins each sshd accepted; and command tasks with `until`, `retries`
//! and `delay` run again on the host until the condition holds, or fail with why.
//!
//! Each test keeps picaops' state (the record) in a directory of its own (`XDG_STATE_HOME`).

mod transport_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use transport_support::{Sshd, Workstation, NOSUDO_USER};

/// `inventory/` with hosts on real sshd processes, a state directory, and a directory the
/// hosts' login user may write in (the hosts are this machine).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(ws: &Workstation, hosts: &[(&str, &Sshd)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory");
        std::fs::create_dir(&inv).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The hosts are this machine and one login user: each test's hosts get a run lock of
        // their own, or the tests running at the same time would find each other's.
        transport_support::write_inventory(&inv, ws, hosts, NOSUDO_USER, &|name| {
            format!(
                "    vars: {{ picaops_lock_dir: {}/lock-{name} }}\n",
                work.display()
            )
        });
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a playbook beside the inventory; returns its path.
    fn playbook(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Runs picaops on this inventory with this state directory: (exit code, stdout, stderr).
    fn picaops(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_picaops"))
            .arg("--inventory")
            .arg(self.path("inventory"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("XDG_STATE_HOME", self.path("state"))
            .env_remove("PICAOPS_INVENTORY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The record files in the state directory (there is one per inventory).
    fn records(&self) -> Vec<String> {
        let dir = self.path("state/picaops/failed");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

/// Names listed in a record (its non-comment lines).
fn recorded(record: &str) -> Vec<&str> {
    record
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect()
}

/// One task that fails on the host named by `-e broken=NAME`.
const BREAKABLE: &str =
    "- name: Breakable\n  hosts: all\n  tasks:\n    - name: fail where told\n      \
     shell: test \"{{ inventory_hostname }}\" != \"{{ broken }}\"\n";

#[test]
fn the_failed_machines_are_recorded_and_limit_at_failed_contacts_only_them() {
    let ws = Workstation::new();
    let (a, b) = (Sshd::start(&ws), Sshd::start(&ws));
    let setup = Setup::new(&ws, &[("alpha", &a), ("bravo", &b)]);
    let play = setup.playbook("play.yml", BREAKABLE);

    // No apply ever ran: `@failed` is refused, never "every machine".
    let (code, _, stderr) = setup.picaops(&["plan", "-l", "@failed", &play]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no failed machines are recorded for this inventory")
            && stderr.contains("no apply of it has run from this account yet"),
        "{stderr}"
    );
    assert_eq!((a.accepted_logins(), b.accepted_logins()), (0, 0));

    // bravo fails, alpha converges: the record names bravo only.
    let (code, _, stderr) = setup.picaops(&["apply", "-e", "broken=bravo", &play]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("recorded as failed: bravo"), "{stderr}");
    let records = setup.records();
    assert_eq!(records.len(), 1, "one record per inventory");
    assert_eq!(recorded(&records[0]), ["bravo"]);

    // An apply of alpha alone that succeeds keeps bravo recorded (it did not run there).
    let (code, _, stderr) = setup.picaops(&["apply", "-l", "alpha", "-e", "broken=none", &play]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(recorded(&setup.records()[0]), ["bravo"]);

    // `-l @failed` contacts bravo and nothing else; it succeeds now, which clears the record.
    let before = (a.accepted_logins(), b.accepted_logins());
    let (code, stdout, stderr) =
        setup.picaops(&["apply", "-l", "@failed", "-e", "broken=none", &play]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("bravo") && !stdout.contains("alpha"),
        "{stdout}"
    );
    assert_eq!(a.accepted_logins(), before.0, "alpha was contacted");
    assert!(b.accepted_logins() > before.1, "bravo was not contacted");
    assert_eq!(recorded(&setup.records()[0]), Vec::<&str>::new());

    // Now `@failed` says the last apply succeeded, and contacts nothing.
    let before = (a.accepted_logins(), b.accepted_logins());
    for cmd in [
        vec!["apply", "-l", "@failed", &play],
        vec!["plan", "-l", "@failed", &play],
        vec!["run", "-l", "@failed", "--", "true"],
    ] {
        let (code, _, stderr) = setup.picaops(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("no failed machines are recorded for this inventory")
                && stderr.contains("succeeded on every machine"),
            "{cmd:?}: {stderr}"
        );
    }
    assert_eq!((a.accepted_logins(), b.accepted_logins()), before);

    // With both failing, `@failed` combines with other terms like any name.
    let (code, _, _) = setup.picaops(&["apply", "-e", "broken=alpha", &play]);
    assert_eq!(code, 1);
    let (code, _, _) = setup.picaops(&["apply", "-l", "bravo", "-e", "broken=bravo", &play]);
    assert_eq!(code, 1);
    assert_eq!(recorded(&setup.records()[0]), ["alpha", "bravo"]);
    let before = (a.accepted_logins(), b.accepted_logins());
    let (code, stdout, stderr) = setup.picaops(&["run", "-l", "@failed,!alpha", "--", "echo hi"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("bravo") && !stdout.contains("alpha"),
        "{stdout}"
    );
    assert_eq!(a.accepted_logins(), before.0, "alpha was excluded");
    assert!(b.accepted_logins() > before.1);
}

#[test]
fn limit_at_file_selects_its_names_and_refuses_unknown_or_empty_ones() {
    let ws = Workstation::new();
    let (a, b) = (Sshd::start(&ws), Sshd::start(&ws));
    let setup = Setup::new(&ws, &[("alpha", &a), ("bravo", &b)]);
    let list = |name: &str, text: &str| {
        let p = setup.path(name);
        std::fs::write(&p, text).unwrap();
        format!("@{}", p.display())
    };

    let unknown = list("typo.txt", "# tonight\nalpha\n  bravoo\n");
    let (code, _, stderr) = setup.picaops(&["run", "-l", &unknown, "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("typo.txt:3:3: `bravoo`") && stderr.contains("Did you mean `bravo`?"),
        "the unknown name, where it is written, and the likely one:\n{stderr}"
    );
    for (name, text, says) in [
        ("empty.txt", "# nothing tonight\n\n", "names no machine"),
        (
            "two.txt",
            "alpha bravo\n",
            "two.txt:1:1: `alpha bravo` is not one name",
        ),
    ] {
        let (code, _, stderr) = setup.picaops(&["run", "-l", &list(name, text), "--", "true"]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    let (code, _, stderr) = setup.picaops(&["run", "-l", "@/nonexistent/hosts", "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/hosts"),
        "{stderr}"
    );
    assert_eq!((a.accepted_logins(), b.accepted_logins()), (0, 0));

    let (code, stdout, stderr) = setup.picaops(&[
        "run",
        "-l",
        &list("tonight.txt", "bravo\n"),
        "--",
        "echo hi",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bravo"), "{stdout}");
    assert_eq!(a.accepted_logins(), 0);
    assert!(b.accepted_logins() > 0);
}

/// A shell line that counts its runs in `counter`, prints `attempt N`, and succeeds from run
/// `succeed_from`.
fn counting(counter: &Path, succeed_from: u32) -> String {
    format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {c}; echo attempt $n; \
         echo not yet >&2; test $n -ge {succeed_from}",
        c = counter.display()
    )
}

#[test]
fn until_runs_the_command_again_until_it_holds_and_fails_with_why_after_the_retries() {
    let ws = Workstation::new();
    let a = Sshd::start(&ws);
    let setup = Setup::new(&ws, &[("alpha", &a)]);
    let counter = setup.path("work/count");
    let after = setup.path("work/after");
    let play = setup.playbook(
        "until.yml",
        &format!(
            "- name: Waits\n  hosts: all\n  tasks:\n    - name: wait for it\n      \
             shell: '{}'\n      register: result\n      until: result.rc == 0\n      \
             retries: 4\n      delay: 0\n    - name: what it saw\n      \
             copy: {{dest: {}, content: \"{{{{ result.stdout }}}}, {{{{ result.attempts }}}}\"}}\n",
            counting(&counter, 3),
            after.display()
        ),
    );

    let (code, stdout, stderr) = setup.picaops(&["plan", &play]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("until result.rc == 0: at most 5 attempts, 0 s apart"),
        "the plan says it may run again:\n{stdout}"
    );

    let (code, stdout, stderr) = setup.picaops(&["apply", &play]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("ran 3 times, until held on attempt 3"),
        "the report shows the attempts:\n{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
    assert_eq!(
        std::fs::read_to_string(&after).unwrap(),
        "attempt 3, 3",
        "the registered result is the last attempt's, with `attempts`"
    );

    // In a loop, each item runs until it holds before the next starts, and `register` gets
    // every item's result.
    let order = setup.path("work/order");
    let play = setup.playbook(
        "loop.yml",
        &format!(
            "- name: Waits\n  hosts: all\n  tasks:\n    - name: wait for {{{{ item }}}}\n      \
             shell: 'echo {{{{ item }}}} >> {order}; {}'\n      loop: [x, y]\n      \
             register: result\n      until: result.rc == 0\n      delay: 0\n    \
             - name: what it saw\n      copy: {{dest: {}, content: \"{{{{ result.results | length }}}}: \
             {{{{ result.results[0].attempts }}}} {{{{ result.results[1].attempts }}}}\"}}\n",
            counting(&setup.path("work/count-{{ item }}"), 2),
            after.display(),
            order = order.display(),
        ),
    );
    std::fs::remove_file(&after).unwrap();
    let (code, stdout, stderr) = setup.picaops(&["apply", &play]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "x\nx\ny\ny\n");
    assert_eq!(std::fs::read_to_string(&after).unwrap(), "2: 2 2");

    // It never holds: 1 + retries attempts, `delay` apart, then the task fails with why.
    std::fs::remove_file(&counter).unwrap();
    std::fs::remove_file(&after).unwrap();
    let play = setup.playbook(
        "never.yml",
        &format!(
            "- name: Waits\n  hosts: all\n  tasks:\n    - name: wait in vain\n      \
             shell: '{}'\n      register: result\n      until: result.rc == 0\n      \
             retries: 2\n      delay: 1\n    - name: never reached\n      \
             copy: {{dest: {}, content: x}}\n",
            counting(&counter, 99),
            after.display()
        ),
    );
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = setup.picaops(&["apply", &play]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(started.elapsed().as_secs_f64() >= 2.0, "two delays of 1 s");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
    assert!(
        stdout.contains(
            "until `result.rc == 0` did not hold after 3 attempts (retries: 2, delay: 1 s); \
             the last one: exit 1: not yet"
        ) && stdout.contains("never.yml:4:7"),
        "the failure says what was tried, and where the task is:\n{stdout}"
    );
    assert!(!after.exists(), "the tasks after a failed one do not run");
    assert_eq!(recorded(&setup.records()[0]), ["alpha"]);
}

/// (what is wrong, the task's keywords after `name:`, expected place and message).
const LOAD_ERRORS: &[(&str, &str, &str)] = &[
    (
        "until without register",
        "      shell: 'true'\n      until: result.rc == 0\n",
        "bad.yml:6:14: error: `until` reads the task's registered result, and this task has no `register`",
    ),
    (
        "retries not a whole number",
        "      shell: 'true'\n      register: r\n      until: r.rc == 0\n      retries: three\n",
        "bad.yml:8:16: error: `retries` must be a whole number from 0 to 100, not \"three\"",
    ),
    (
        "retries too many",
        "      shell: 'true'\n      register: r\n      until: r.rc == 0\n      retries: 1000\n",
        "bad.yml:8:16: error: `retries` must be a whole number from 0 to 100, not 1000",
    ),
    (
        "delay too long",
        "      shell: 'true'\n      register: r\n      until: r.rc == 0\n      delay: 86400\n",
        "bad.yml:8:14: error: `delay` must be a whole number from 0 to 600 seconds, not 86400",
    ),
    (
        "waiting more than an hour in all",
        "      shell: 'true'\n      register: r\n      until: r.rc == 0\n      retries: 100\n      delay: 600\n",
        "bad.yml:7:14: error: `retries: 100` with `delay: 600` may wait 60000 s",
    ),
    (
        "retries on another module",
        "      copy: {dest: /tmp/x, content: y}\n      retries: 3\n",
        "bad.yml:6:7: error: picaops retries command tasks only (`command`, `shell`); this task runs `copy`",
    ),
    (
        "retries without until",
        "      command: 'true'\n      register: r\n      delay: 2\n",
        "bad.yml:7:7: error: `retries` and `delay` need `until`",
    ),
    (
        "until syntax error",
        "      shell: 'true'\n      register: r\n      until: r.rc ==\n",
        "bad.yml:7:",
    ),
];

#[test]
fn retry_keywords_are_checked_at_load_time_with_their_place() {
    let ws = Workstation::new();
    let a = Sshd::start(&ws);
    let setup = Setup::new(&ws, &[("alpha", &a)]);
    for (what, keywords, expected) in LOAD_ERRORS {
        let play = setup.playbook(
            "bad.yml",
            &format!("- name: p\n  hosts: all\n  tasks:\n    - name: t\n{keywords}"),
        );
        for cmd in ["plan", "apply"] {
            let (code, _, stderr) = setup.picaops(&[cmd, &play]);
            assert_eq!(code, 2, "{what} ({cmd}):\n{stderr}");
            assert!(
                stderr.contains(expected),
                "{what} ({cmd}): expected {expected:?} in:\n{stderr}"
            );
        }
    }
    assert_eq!(
        a.accepted_logins(),
        0,
        "an invalid playbook contacted a host"
    );
}
