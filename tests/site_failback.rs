//! `site failback SITE`, without machines: its plan from an inventory whose recovery.yml moves
//! Toulouse's hello and VM to alice, and `--apply` against a recording [`Remote`] whose answers
//! are the host side's own documents. What is checked is the order (stopped before backed up,
//! backed up before home, taken down only once home is healthy), that recovery.yml is gone
//! when home takes over, and what a failure at home leaves: the service running again at the
//! recovery place, recovery.yml moving it again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picaops::backup::ops::OpError;
use picaops::backup::remote::{Answer, Call};
use picaops::inventory::Inventory;
use picaops::recovery::failback::{self, ConvergeRun, FailbackError, Failures, Remote, Request};
use picaops::transport::{CommandOutput, ErrorKind, TransportError};
use serde_json::json;

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(dir.join(name), text).unwrap();
}

const COMPOSE: &str =
    "services:\n  web:\n    image: \"example/web:{{ version }}\"\n    ports: [\"{{ port }}:80\"]\n";

/// Toulouse (bob: hello with data and its job to alice; VM vm-tls with service api) lost and
/// recovered at Compiègne (alice): recovery.yml moves hello and vm-tls to alice.
fn recovered() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "inv/sites.yml",
        "sites:\n  toulouse: { backs_up_to: compiegne }\n  compiegne: { backs_up_to: toulouse }\n",
    );
    write(
        d,
        "inv/hosts.yml",
        "hosts:\n  bob: { site: toulouse, address: 10.0.0.1, hypervisor: libvirt, groups: [docker_hosts], capacity: { vcpus: 8, memory: 16GiB, disk: 500GiB } }\n  \
         alice: { site: compiegne, address: 10.0.0.2, hypervisor: libvirt, groups: [docker_hosts], capacity: { vcpus: 8, memory: 16GiB, disk: 500GiB } }\n",
    );
    write(
        d,
        "inv/vms.yml",
        "vms:\n  vm-tls: { host: bob, vcpus: 2, memory: 4GiB, disks: [{ size: 40GiB }], network: { address: 10.61.0.10/24 } }\n\
         groups:\n  docker_hosts: {}\n",
    );
    write(d, "services/web.yml.j2", COMPOSE);
    write(
        d,
        "inv/services.yml",
        "services:\n  hello: { host: bob, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18080 }, data: [/DATA/hello], backup: hello }\n  \
         api: { host: vm-tls, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18090 } }\n",
    );
    write(
        d,
        "inv/backups.yml",
        "backups:\n  hello:\n    service: hello\n    paths: [/DATA/hello]\n    schedule: daily\n    retention: { keep_daily: 7 }\n    max_age: 26h\n    \
         repository: { kind: sftp, host: alice, path: /srv/restic/hello }\n    password: restic/hello\n",
    );
    write(
        d,
        "inv/known_hosts",
        "10.61.0.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRECOVEREDCOPYKEYxxxxxxxxxxxxxxxxxxxxxxx\n",
    );
    write(
        d,
        "inv/recovery.yml",
        &picaops::sections::recovery::render(
            "toulouse",
            "2026-12-04T18:30:00Z",
            &[("vm-tls".into(), "alice".into())],
            &[("hello".into(), "alice".into())],
            None,
        ),
    );
    dir
}

fn load(dir: &Path) -> Inventory {
    match picaops::inventory::load(&dir.join("inv")).result {
        Ok(inv) => inv,
        Err(d) => panic!("invalid inventory: {d:#?}"),
    }
}

const NOW: &str = "2026-12-06T09:15:00Z";
const HOME_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOMECOPYKEYxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn output(code: i32, stdout: &str) -> Result<CommandOutput, TransportError> {
    Ok(CommandOutput {
        exit_code: code,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
        duration: Duration::ZERO,
    })
}

/// The machines, recorded: each call and site run as one line (`WHAT MACHINE`), answered as
/// the host side answers.
struct Machines {
    inv_dir: PathBuf,
    log: Vec<String>,
    /// The snapshot the backup makes, and the one the repository lists as newest.
    made: String,
    newest: String,
    /// Machines that do not answer.
    silent: BTreeSet<String>,
    /// Services whose deploy fails at home.
    unhealthy: BTreeSet<String>,
    /// Kinds of call whose script fails.
    failing: BTreeSet<&'static str>,
    /// recovery.yml's existence when home took over (the first call at home after the stops).
    recovery_at_home: Option<bool>,
}

impl Machines {
    fn new(dir: &Path) -> Machines {
        Machines {
            inv_dir: dir.join("inv"),
            log: Vec::new(),
            made: "f11e5a1d00000000".into(),
            newest: "f11e5a1d00000000".into(),
            silent: BTreeSet::new(),
            unhealthy: BTreeSet::new(),
            failing: BTreeSet::new(),
            recovery_at_home: None,
        }
    }

    /// What a call is, from its script.
    fn kind(c: &Call) -> &'static str {
        let line = c.command.to_shell_line();
        let has = |s: &str| line.contains(s);
        match c.job.as_str() {
            "(answer)" => "answer",
            "(stop)" => "stop",
            "(start)" => "start",
            "(take down)" => "take-down",
            "(timers)" => "timers",
            _ if has("host-snapshots") => "listing",
            _ if has("host-restore") => "restore",
            _ if has("host-status") => "backup",
            _ if has("autostart --disable") => "aside",
            _ if has("dumpxml --inactive") => "home-start",
            _ if has("@@stopped vm") => "home-stop",
            _ if has("@@started vm") => "vm-back",
            _ if has("before-failback") || has("compose -p") => "prepare",
            _ => "other",
        }
    }

    fn answer(&mut self, c: &Call) -> Result<CommandOutput, TransportError> {
        if self.silent.contains(&c.machine) {
            return Err(TransportError {
                host: c.machine.clone(),
                kind: ErrorKind::Unreachable,
                message: format!("no login at {} within 10 s", c.machine),
                detail: None,
            });
        }
        if self.failing.contains(Self::kind(c)) {
            if Self::kind(c) == "restore" {
                let doc = json!({"job": c.job, "ok": false, "repository": "sftp:alice:/srv/restic/hello",
                                 "error": "restic: no space left on device"});
                return output(1, &doc.to_string());
            }
            return output(3, "@@error virsh domrename failed\n");
        }
        match Self::kind(c) {
            "backup" => {
                let status = picaops::backup::JobStatus {
                    job: c.job.clone(),
                    last_success: Some(picaops::backup::status::BackupResult {
                        at: 1.0,
                        snapshots: vec![self.made.clone()],
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                output(0, &serde_json::to_string(&vec![status]).unwrap())
            }
            "listing" => {
                let at = picaops::backup::time::rfc3339(picaops::backup::time::now() - 60.0);
                let old = picaops::backup::time::rfc3339(picaops::backup::time::now() - 86400.0);
                let snap = |id: &str, time: &str| {
                    json!({"id": id, "short_id": &id[..8], "time": time, "hostname": "bob",
                           "paths": ["/DATA/hello"], "tags": ["picaops", "job=hello", "part=files"]})
                };
                let doc = json!({"job": c.job, "ok": true, "repository": "sftp:alice:/srv/restic/hello",
                    "result": [snap("0ld0000000000000", &old), snap(&self.newest, &at)]});
                output(0, &doc.to_string())
            }
            "restore" => {
                let doc = json!({"job": c.job, "ok": true, "repository": "sftp:alice:/srv/restic/hello",
                                 "result": [3, 600000]});
                output(0, &doc.to_string())
            }
            "aside" => output(0, "@@autostart enable\n@@aside vm-tls-failed-back-20261206-091500\n"),
            "home-start" => output(0, &format!("@@hostkey {HOME_KEY}\n@@started vm vm-tls\n")),
            "prepare" => output(0, "@@aside /DATA/hello /DATA/hello.before-failback-20261206-091500\n"),
            "take-down" => output(
                0,
                "@@removed service hello /var/lib/picaops/services/.removed/hello-20261206-091500\n",
            ),
            _ => output(0, ""),
        }
    }
}

impl Remote for Machines {
    fn exec(
        &mut self,
        _inv: &Inventory,
        calls: Vec<Call>,
        _timeout: Option<Duration>,
    ) -> Result<Vec<Answer>, OpError> {
        Ok(calls
            .into_iter()
            .map(|call| {
                let kind = Self::kind(&call);
                if kind == "home-start" || (kind == "prepare" && self.recovery_at_home.is_none()) {
                    self.recovery_at_home
                        .get_or_insert(self.inv_dir.join("recovery.yml").exists());
                }
                self.log.push(format!("{kind} {}", call.machine));
                let result = self.answer(&call);
                Answer { call, result }
            })
            .collect())
    }

    fn converge(&mut self, inv: &Inventory, machines: &[String], run: ConvergeRun) -> Failures {
        // What the converge is given is the inventory as it is then: home placement.
        let placed = inv.services["hello"].host.value.clone();
        self.log.push(format!(
            "converge-{run:?} {} (hello on {placed})",
            machines.join(",")
        ));
        Failures::default()
    }

    fn deploy(&mut self, inv: &Inventory, machines: &[String]) -> Failures {
        let placed = inv.services["hello"].host.value.clone();
        self.log
            .push(format!("deploy {} (hello on {placed})", machines.join(",")));
        let mut f = Failures::default();
        for s in &self.unhealthy {
            f.services
                .insert(s.clone(), "unhealthy after 60 s (health gate)".into());
        }
        f
    }
}

fn request() -> Request {
    Request {
        site: "toulouse".into(),
        now: NOW.into(),
        vm_wait: Duration::from_secs(5),
    }
}

fn position(log: &[String], line: &str) -> usize {
    log.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no `{line}` in {log:#?}"))
}

#[test]
fn the_plan_names_what_goes_home_and_what_is_kept_and_contacts_nothing() {
    let dir = recovered();
    let inv = load(dir.path());
    let plan = failback::plan(&inv, "toulouse", NOW).expect("a plan");
    assert_eq!(plan.at_site, "compiegne");
    let services: Vec<String> = plan
        .services
        .iter()
        .map(|s| {
            format!(
                "{} at {} home {} vm {:?} job {:?}",
                s.service, s.at, s.home, s.vm, s.job
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            "hello at alice home bob vm None job Some(\"hello\")",
            "api at vm-tls home vm-tls vm Some(\"vm-tls\") job None"
        ]
    );
    assert_eq!(plan.vms.len(), 1);
    let vm = &plan.vms[0];
    assert_eq!(
        (vm.vm.as_str(), vm.at.as_str(), vm.home.as_str()),
        ("vm-tls", "alice", "bob")
    );
    assert_eq!(vm.aside, "vm-tls-failed-back-20261206-091500");
    assert_eq!(
        plan.kept_copy,
        dir.path()
            .join("inv/recovery.yml.failed-back-20261206-091500")
    );
    assert!(
        plan.manual
            .iter()
            .any(|m| m.contains("service `hello` back at `bob`")),
        "{:?}",
        plan.manual
    );

    // Nothing to fail back: no recovery.yml, or one that names the other site.
    std::fs::remove_file(dir.path().join("inv/recovery.yml")).unwrap();
    let e = failback::plan(&load(dir.path()), "toulouse", NOW).unwrap_err();
    assert!(matches!(e, FailbackError::NotLost { .. }), "{e}");
    assert_eq!(e.exit_code(), 2);
    write(
        dir.path(),
        "inv/recovery.yml",
        &picaops::sections::recovery::render("compiegne", "2026-12-04T18:30:00Z", &[], &[], None),
    );
    let e = failback::plan(&load(dir.path()), "toulouse", NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inventory/recovery.yml says site `compiegne` is lost, not `toulouse`: `picaops site failback compiegne` brings it home"
    );
}

#[test]
fn apply_stops_backs_up_then_goes_home_and_takes_down_the_recovery_copy_only_once_healthy() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let before = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    let mut m = Machines::new(dir.path());
    let done = failback::apply(&inv_dir, &request(), &mut m).expect("a failback");
    let log = &m.log;
    let at = |line: &str| position(log, line);

    // Checked first: home and the recovery place answer.
    assert_eq!(log[0], "answer bob", "{log:#?}");
    // Stopped at the recovery place before the backup that home gets, and the VM set aside
    // after its services' data is safe.
    assert!(at("stop alice") < at("backup alice"), "{log:#?}");
    assert!(at("stop vm-tls") < at("backup alice"), "{log:#?}");
    assert!(at("backup alice") < at("listing alice"), "{log:#?}");
    assert!(at("listing alice") < at("aside alice"), "{log:#?}");
    // Home takes over only once recovery.yml is gone: the VM started, converged, the data
    // moved aside and restored, then the services behind their health gate.
    assert_eq!(m.recovery_at_home, Some(false), "{log:#?}");
    assert!(at("aside alice") < at("home-start bob"), "{log:#?}");
    let converge = at("converge-Home bob,vm-tls (hello on bob)");
    assert!(at("home-start bob") < converge, "{log:#?}");
    assert!(converge < at("prepare bob"), "{log:#?}");
    assert!(at("prepare bob") < at("restore bob"), "{log:#?}");
    let deploy = at("deploy bob,vm-tls (hello on bob)");
    assert!(at("restore bob") < deploy, "{log:#?}");
    // Nothing at the recovery place is taken down before home is healthy; then retention is
    // thawed where it runs (alice keeps hello's repository; bob was converged already).
    assert!(deploy < at("take-down alice"), "{log:#?}");
    assert!(at("take-down alice") < at("converge-JobFiles alice (hello on bob)"));
    assert!(!log.iter().any(|l| l.starts_with("start ")), "{log:#?}");

    assert_eq!(done.exit_code(), 0, "{done:#?}");
    assert!(done.recovery_removed && done.retention_thawed, "{done:#?}");
    assert!(!inv_dir.join("recovery.yml").exists());
    let kept = inv_dir.join("recovery.yml.failed-back-20261206-091500");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), before);
    assert_eq!(done.kept_copy.as_deref(), Some(kept.as_path()));
    let hello = &done.services[0];
    assert_eq!(
        (hello.service.as_str(), hello.home.as_str(), hello.ok),
        ("hello", "bob", true)
    );
    assert_eq!(hello.snapshot.as_deref(), Some("f11e5a1d"));
    assert!(hello.healthy_after_seconds.is_some() && hello.downtime_seconds.is_some());
    assert_eq!(
        hello.home_data_kept,
        ["/DATA/hello.before-failback-20261206-091500"]
    );
    assert!(
        hello
            .left
            .as_deref()
            .is_some_and(|l| l.contains(".removed/hello-20261206-091500")
                && l.contains("data kept in /DATA/hello")),
        "{hello:#?}"
    );
    assert!(done.vms[0].ok, "{:#?}", done.vms);
    assert!(done.vms[0]
        .left
        .as_deref()
        .is_some_and(|l| l.contains("--allow-destroy vm-tls-failed-back-20261206-091500")));
    // The home VM's own host key is pinned again, in place of its recovery copy's.
    let pinned = std::fs::read_to_string(inv_dir.join("known_hosts")).unwrap();
    assert!(
        pinned.contains(&format!("10.61.0.10 {HOME_KEY}")),
        "{pinned}"
    );
    assert!(!pinned.contains("RECOVEREDCOPYKEY"), "{pinned}");
    // The inventory is home again: nothing moved, retention not frozen.
    let home = load(dir.path());
    assert_eq!(home.services["hello"].host.value, "bob");
    assert!(picaops::backup::jobfile::retention_frozen(&home).is_none());
}

#[test]
fn a_service_unhealthy_at_home_runs_again_at_the_recovery_place_and_stays_moved() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let mut m = Machines::new(dir.path());
    m.unhealthy.insert("hello".into());
    let done = failback::apply(&inv_dir, &request(), &mut m).expect("a failback");
    let log = &m.log;
    let at = |line: &str| position(log, line);
    assert_eq!(done.exit_code(), 1);
    let hello = &done.services[0];
    assert!(!hello.ok, "{hello:#?}");
    assert!(
        hello
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unhealthy after 60 s")),
        "{hello:#?}"
    );
    // Stopped at home, then started again at alice; never taken down there.
    let deploy = at("deploy bob,vm-tls (hello on bob)");
    assert!(deploy < at("stop bob") && at("stop bob") < at("start alice"));
    assert!(!log.iter().any(|l| l == "take-down alice"), "{log:#?}");
    assert_eq!(
        hello.left.as_deref(),
        Some("runs again on alice (still moved in recovery.yml)")
    );
    // recovery.yml moves it again (and only it: the VM and api came home); the retention the
    // converge had thawed at home is frozen again.
    let text = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    assert!(
        text.contains("hello: alice") && !text.contains("vm-tls"),
        "{text}"
    );
    assert!(!done.recovery_removed);
    assert!(done.vms[0].ok && done.services[1].ok, "{done:#?}");
    assert!(
        log.iter()
            .any(|l| l == "converge-JobFiles bob,vm-tls (hello on alice)"),
        "{log:#?}"
    );
    assert!(load(dir.path()).services["hello"].moved_from.is_some());
}

#[test]
fn a_snapshot_newer_than_the_failbacks_own_keeps_the_service_at_the_recovery_place() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let mut m = Machines::new(dir.path());
    m.newest = "5ta1e0000000bbbb".into();
    let done = failback::apply(&inv_dir, &request(), &mut m).expect("a failback");
    let hello = &done.services[0];
    assert!(
        hello.error.as_deref().is_some_and(|e| e
            .contains("the repository's newest files snapshot of job hello (5ta1e000 at ")
            && e.contains("is not the one this failback made")),
        "{hello:#?}"
    );
    // Nothing of it went home: started again where it was, no restore at bob.
    assert!(m.log.iter().any(|l| l == "start alice"), "{:#?}", m.log);
    assert!(!m
        .log
        .iter()
        .any(|l| l.ends_with(" bob") && l.starts_with("restore")));
    let text = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    assert!(text.contains("hello: alice"), "{text}");
    // The step that failed says so; the VM's, which went home, do not.
    let step = |name: &str| {
        done.steps
            .iter()
            .find(|s| s.step == name)
            .unwrap_or_else(|| panic!("no step {name}: {:#?}", done.steps))
            .ok
    };
    assert!(!step("backup") && step("converge") && step("services"));
    assert_eq!(done.exit_code(), 1);
}

#[test]
fn when_nothing_can_go_home_home_is_not_touched_and_everything_runs_where_it_was() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let before = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    let mut m = Machines::new(dir.path());
    m.newest = "5ta1e0000000bbbb".into();
    m.failing.insert("aside");
    let done = failback::apply(&inv_dir, &request(), &mut m).expect("a failback");
    assert_eq!(done.exit_code(), 1);
    assert!(
        done.vms[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("setting VM vm-tls aside on alice: virsh domrename failed")),
        "{:#?}",
        done.vms
    );
    // Started again where they were, and nothing at home was touched.
    let log = &m.log;
    assert!(log.iter().any(|l| l == "start alice") && log.iter().any(|l| l == "start vm-tls"));
    assert!(
        !log.iter()
            .any(|l| l.ends_with(" bob") && !l.starts_with("answer")
                || l.starts_with("converge")
                || l.starts_with("deploy")),
        "{log:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap(),
        before
    );
    assert!(done.kept_copy.is_none() && !done.recovery_removed);
    let steps: Vec<&str> = done.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, ["answer", "stop", "backup", "set aside"]);
    assert!(
        done.services.iter().all(|s| s
            .left
            .as_deref()
            .is_some_and(|l| l.starts_with("runs again on "))),
        "{:#?}",
        done.services
    );
}

#[test]
fn a_home_machine_that_does_not_answer_refuses_before_anything_is_stopped() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let before = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    let mut m = Machines::new(dir.path());
    m.silent.insert("bob".into());
    let e = failback::apply(&inv_dir, &request(), &mut m).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().starts_with(
            "home is not ready: bob (no login at bob within 10 s); nothing was stopped or changed"
        ),
        "{e}"
    );
    assert!(
        m.log.iter().all(|l| l.starts_with("answer ")),
        "{:#?}",
        m.log
    );
    assert_eq!(
        std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap(),
        before
    );
}

#[test]
fn a_restore_that_fails_at_home_says_where_and_why_and_the_service_goes_back() {
    let dir = recovered();
    let inv_dir = dir.path().join("inv");
    let mut m = Machines::new(dir.path());
    m.failing.insert("restore");
    let done = failback::apply(&inv_dir, &request(), &mut m).expect("a failback");
    let hello = &done.services[0];
    assert_eq!(
        hello.error.as_deref(),
        Some("restoring hello's files at bob: bob: restic: no space left on device")
    );
    assert!(!done.steps.iter().find(|s| s.step == "data").unwrap().ok);
    // Never deployed at home; back at alice, moved again.
    assert!(!m
        .log
        .iter()
        .any(|l| l.starts_with("deploy") && l.contains("bob,")));
    assert!(m.log.iter().any(|l| l == "start alice"), "{:#?}", m.log);
    let text = std::fs::read_to_string(inv_dir.join("recovery.yml")).unwrap();
    assert!(text.contains("hello: alice"), "{text}");
}
