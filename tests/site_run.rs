//! The site run's orchestrator (`picaops::lifecycle::SiteRun`) with fake phases over local
//! targets: each phase runs a real command through the real pool and the local transport. Pins
//! the order of phases, that a machine failing in one phase is left out of the later ones while
//! every other machine goes on, that `--forks` and `--connect-timeout` reach every phase, that
//! every phase reads the one inventory loaded for the run, and the exit-code table. Then the
//! real binary: `picaops apply --connect-timeout 1` gives up on a silent machine of the services
//! phase within that second (the services phase used a hard-coded 10 s).

mod transport_support;

use std::any::Any;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use picaops::inventory::Inventory;
use picaops::lifecycle::{
    MachineStatus, Mode, Phase, PhaseError, PhaseKind, PhaseReport, Rendered, RunContext, Settings,
    SiteRun, Status, Summary,
};
use picaops::output::Output;
use picaops::transport::{run_on_hosts, Connector, PoolEvent, PoolOptions, RemoteCommand, Target};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// What every fake phase saw, in the order things happened.
#[derive(Default)]
struct Seen {
    log: Mutex<Vec<String>>,
    /// Per phase: (forks, connect timeout, the inventory's address, most machines at once).
    settings: Mutex<BTreeMap<PhaseKind, (usize, Duration, usize, usize)>>,
}

struct NoDetail;

impl Rendered for NoDetail {
    fn human(&self, _: &Output, _: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }
    fn json(&self) -> Value {
        Value::Null
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A phase that runs `test NAME != FAIL` (and a short sleep, so machines overlap) on each
/// machine through the pool: the machine named `fail` fails, the others report one change.
struct FakePhase {
    kind: PhaseKind,
    fail: Option<&'static str>,
    seen: Arc<Seen>,
}

impl Phase for FakePhase {
    fn kind(&self) -> PhaseKind {
        self.kind
    }

    fn prepare(&mut self, _cx: &RunContext) -> Result<(), PhaseError> {
        self.seen
            .log
            .lock()
            .unwrap()
            .push(format!("prepare {:?}", self.kind));
        Ok(())
    }

    fn targets(&self, _cx: &RunContext, selected: &[Target]) -> Vec<Target> {
        selected.to_vec()
    }

    fn run<'a>(
        &'a mut self,
        cx: &'a RunContext,
        targets: Vec<Target>,
        events: Option<UnboundedSender<PoolEvent>>,
    ) -> BoxFuture<'a, Result<PhaseReport, PhaseError>> {
        Box::pin(async move {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            self.seen.log.lock().unwrap().push(format!(
                "run {:?} on {}",
                self.kind,
                names.join(",")
            ));
            let connector = Arc::new(
                Connector::new(&cx.known_hosts, cx.settings.connect_timeout, None).unwrap(),
            );
            let running = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let fail = self.fail.unwrap_or("");
            let outcomes = run_on_hosts(
                &targets,
                connector,
                &PoolOptions {
                    forks: cx.settings.forks,
                },
                events,
                {
                    let (running, most) = (running.clone(), most.clone());
                    move |target, transport| {
                        let (running, most) = (running.clone(), most.clone());
                        async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            let out = transport
                                .exec(&RemoteCommand::shell(format!(
                                    "sleep 0.2; test {} != '{fail}'",
                                    target.name
                                )))
                                .await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            out
                        }
                    }
                },
            )
            .await;
            self.seen.settings.lock().unwrap().insert(
                self.kind,
                (
                    cx.settings.forks,
                    cx.settings.connect_timeout,
                    Arc::as_ptr(&cx.inventory) as usize,
                    most.load(Ordering::SeqCst),
                ),
            );
            let machines = outcomes
                .into_iter()
                .map(|o| MachineStatus {
                    machine: o.target.name.clone(),
                    status: match o.result {
                        Ok(out) if out.exit_code == 0 => Status::Changed { changes: 1 },
                        Ok(out) => Status::Failed {
                            reason: format!("test exited {}", out.exit_code),
                        },
                        Err(e) => Status::Failed {
                            reason: e.to_string(),
                        },
                    },
                })
                .collect();
            Ok(PhaseReport {
                kind: self.kind,
                machines,
                hold_back: BTreeMap::new(),
                known_hosts: None,
                plans: BTreeMap::new(),
                detail: Box::new(NoDetail),
            })
        })
    }
}

fn local(name: &str) -> Target {
    Target {
        name: name.into(),
        address: "localhost".into(),
        port: None,
        user: None,
        identity_file: None,
        become_root: false,
        jump: None,
        local: true,
    }
}

/// An inventory of one site pair and no machine: the fake phases only need one to share.
fn tiny_inventory() -> Inventory {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sites.yml"),
        "sites:\n  here: { description: this machine, backs_up_to: there }\n  \
         there: { description: unused, backs_up_to: here }\n",
    )
    .unwrap();
    picaops::inventory::load(dir.path())
        .result
        .unwrap_or_else(|d| panic!("{d:?}"))
}

fn context(forks: usize, connect_timeout: Duration, mode: Mode, detailed: bool) -> RunContext {
    RunContext {
        inventory: Arc::new(tiny_inventory()),
        known_hosts: PathBuf::from("/dev/null"),
        settings: Settings {
            mode,
            forks,
            connect_timeout,
            detailed_exitcode: detailed,
            progress: false,
        },
        selected: ["a", "b", "c", "d", "e"].iter().map(|n| local(n)).collect(),
        limited: false,
    }
}

fn fake(kind: PhaseKind, fail: Option<&'static str>, seen: &Arc<Seen>) -> Box<dyn Phase> {
    Box::new(FakePhase {
        kind,
        fail,
        seen: seen.clone(),
    })
}

fn statuses(summary: &Summary, kind: PhaseKind) -> BTreeMap<String, Status> {
    summary
        .phase(kind)
        .unwrap()
        .machines
        .iter()
        .map(|m| (m.machine.clone(), m.status.clone()))
        .collect()
}

#[tokio::test]
async fn phases_run_in_order_and_a_failed_machine_is_left_out_of_later_phases_only() {
    let seen = Arc::new(Seen::default());
    let mut run = SiteRun::new(
        context(2, Duration::from_secs(7), Mode::Apply, false),
        vec![
            fake(PhaseKind::Vms, Some("b"), &seen),
            fake(PhaseKind::Converge, Some("d"), &seen),
            fake(PhaseKind::Services, None, &seen),
        ],
    );
    run.prepare().unwrap();
    let summary = run.run().await.map_err(|(_, e)| e).unwrap();

    // Every phase is prepared before any runs; phases run in order, each without the
    // machines an earlier phase failed on.
    assert_eq!(
        *seen.log.lock().unwrap(),
        [
            "prepare Vms",
            "prepare Converge",
            "prepare Services",
            "run Vms on a,b,c,d,e",
            "run Converge on a,c,d,e",
            "run Services on a,c,e",
        ]
    );
    let converge = statuses(&summary, PhaseKind::Converge);
    assert_eq!(converge["a"], Status::Changed { changes: 1 });
    assert!(
        matches!(&converge["b"], Status::Skipped { reason } if reason.contains("VMs phase failed")),
        "{converge:?}"
    );
    assert!(
        matches!(converge["d"], Status::Failed { .. }),
        "{converge:?}"
    );
    let services = statuses(&summary, PhaseKind::Services);
    assert_eq!(services["e"], Status::Changed { changes: 1 });
    assert!(matches!(services["b"], Status::Skipped { .. }));
    assert!(matches!(services["d"], Status::Skipped { .. }));
    assert_eq!(summary.failures(), 2);
    assert_eq!(summary.exit_code(), 1);

    // --forks and --connect-timeout reach every phase (at most 2 machines at once in each),
    // and every phase reads the same inventory, loaded once for the run.
    let settings = seen.settings.lock().unwrap();
    assert_eq!(settings.len(), 3);
    let inventory = settings[&PhaseKind::Vms].2;
    for (kind, (forks, timeout, inv, most)) in settings.iter() {
        assert_eq!(*forks, 2, "{kind:?}");
        assert_eq!(*timeout, Duration::from_secs(7), "{kind:?}");
        assert_eq!(*inv, inventory, "{kind:?} read another inventory");
        assert_eq!(
            *most, 2,
            "{kind:?} ran {most} machines at once with --forks 2"
        );
    }
}

/// A summary of one phase whose machines have these statuses.
fn summary(mode: Mode, detailed: bool, machines: &[Status]) -> Summary {
    Summary {
        mode,
        detailed_exitcode: detailed,
        phases: vec![PhaseReport {
            kind: PhaseKind::Converge,
            machines: machines
                .iter()
                .enumerate()
                .map(|(i, s)| MachineStatus {
                    machine: format!("m{i}"),
                    status: s.clone(),
                })
                .collect(),
            hold_back: BTreeMap::new(),
            known_hosts: None,
            plans: BTreeMap::new(),
            detail: Box::new(NoDetail),
        }],
    }
}

#[test]
fn exit_codes_follow_the_documented_table() {
    use Mode::{Apply, Plan};
    let unchanged = Status::Unchanged;
    let changed = Status::Changed { changes: 3 };
    let refused = Status::Refused {
        changes: 1,
        reason: "needs --allow-reboot".into(),
    };
    let failed = Status::Failed {
        reason: "unreachable".into(),
    };
    let skipped = Status::Skipped {
        reason: "held back".into(),
    };
    let table: &[(Mode, bool, &[&Status], i32)] = &[
        (Plan, false, &[&unchanged], 0),
        (Plan, false, &[&changed], 0),
        (Plan, true, &[&unchanged, &skipped], 0),
        (Plan, true, &[&changed], 2),
        (Plan, true, &[&refused], 2),
        (Plan, false, &[&refused], 0),
        (Plan, true, &[&changed, &failed], 1),
        (Apply, false, &[&changed, &unchanged], 0),
        (Apply, true, &[&changed], 0),
        (Apply, false, &[&refused], 1),
        (Apply, false, &[&changed, &failed], 1),
        (Apply, false, &[&skipped], 0),
    ];
    for (mode, detailed, machines, code) in table {
        let owned: Vec<Status> = machines.iter().map(|s| (*s).clone()).collect();
        assert_eq!(
            summary(*mode, *detailed, &owned).exit_code(),
            *code,
            "{mode:?} detailed={detailed} {machines:?}"
        );
    }
    let settings = |mode, detailed_exitcode| Settings {
        mode,
        forks: 1,
        connect_timeout: Duration::from_secs(1),
        detailed_exitcode,
        progress: false,
    };
    // Invalid input (nothing contacted): 2, or 1 where 2 means "changes pending".
    assert_eq!(Summary::usage_exit_code(&settings(Plan, false)), 2);
    assert_eq!(Summary::usage_exit_code(&settings(Plan, true)), 1);
    assert_eq!(Summary::usage_exit_code(&settings(Apply, false)), 2);
}

#[test]
fn apply_gives_the_services_phase_its_connect_timeout() {
    let silent = transport_support::Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory");
    let books = dir.path().join("playbooks");
    std::fs::create_dir_all(&inv).unwrap();
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        inv.join("site.yml"),
        format!(
            "sites:\n  here: {{ description: loopback, backs_up_to: there }}\n  \
             there: {{ description: unused, backs_up_to: here }}\n\
             groups:\n  nobody: {{ description: no member }}\n\
             hosts:\n  web:\n    site: here\n    address: {}\n    port: {}\n    \
             host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n\
             services:\n  hello:\n    host: web\n    description: a service on a silent machine\n    \
             compose: hello.yml.j2\n",
            silent.address, silent.port
        ),
    )
    .unwrap();
    std::fs::write(
        inv.join("hello.yml.j2"),
        "services:\n  web:\n    image: \"example/web:1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        books.join("site.yml"),
        "- name: nothing for web\n  hosts: nobody\n  tasks: []\n",
    )
    .unwrap();
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picaops"))
        .arg("--inventory")
        .arg(&inv)
        .args([
            "apply",
            "--forks",
            "5",
            "--connect-timeout",
            "1",
            "-o",
            "json",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let services = &doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "services")
        .unwrap_or_else(|| panic!("no services phase: {stdout}"))["machines"];
    assert_eq!(services[0]["machine"], "web", "{stdout}");
    assert_eq!(services[0]["status"], "failed", "{stdout}");
    // The services phase used to connect with a hard-coded 10 s, whatever the flag said.
    assert!(
        elapsed < Duration::from_secs(6),
        "apply --connect-timeout 1 took {elapsed:?} on a silent machine: {stdout}"
    );
}
