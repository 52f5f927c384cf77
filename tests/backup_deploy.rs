//! What `picaops apply` installs for backups (picaops::backup::deploy): the data side gets the
//! job file (the repository over SSH, append-only), units and the repository host's pinned key;
//! the repository side gets the repository account's copy (retention, check, and which machines
//! may send to it), root's read-only copy (drills) and the retention timer; no machine gets a
//! rest-server. Retention never lands on a data host.

use picaops::backup::deploy::{plan, REPO_USER};
use picaops::backup::units::UnitOptions;
use picaops::backup::{JobFile, RepositoryAccess};

const INVENTORY: &str = "\
sites:
  toulouse: { backs_up_to: compiegne }
  compiegne: { backs_up_to: toulouse }
hosts:
  bob: { site: toulouse, address: 10.0.0.1, host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob }
  alice: { site: compiegne, address: 10.0.0.2, host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice }
backups:
  tls:
    host: bob
    paths: [/DATA]
    schedule: \"*-*-* 02:30\"
    retention: { keep_daily: 7 }
    repository: { kind: sftp, host: alice, path: /srv/restic/bob }
    password: restic/bob
    max_age: 26h
  cpn:
    host: alice
    paths: [/DATA]
    schedule: \"*-*-* 03:00\"
    retention: { keep_daily: 7 }
    repository: { kind: rest, host: bob, path: alice, append_only: true }
    password: restic/alice
    max_age: 26h
";

fn load() -> picaops::inventory::Inventory {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.yml"), INVENTORY).unwrap();
    match picaops::inventory::load(dir.path()).result {
        Ok(inv) => inv,
        Err(d) => panic!("{d:?}"),
    }
}

fn job_file(m: &picaops::backup::deploy::MachineBackup, path: &str) -> (JobFile, String) {
    let f = m
        .job_files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} missing: {:?}", m.job_files));
    assert_eq!(f.mode, "0600");
    (serde_json::from_str(&f.content).unwrap(), f.owner.clone())
}

#[test]
fn each_side_gets_its_job_files_units_and_keys() {
    let inv = load();
    let p = plan(&inv, &UnitOptions::default()).unwrap();
    let bob = &p["bob"];
    let alice = &p["alice"];

    // bob: data side of `tls` (to alice), repository side of `cpn` (under /srv/restic-rest).
    let (data, owner) = job_file(bob, "/etc/picaops/backup/jobs/tls.json");
    assert_eq!(owner, "root");
    assert!(
        matches!(data.repository, RepositoryAccess::Ssh { ref host, ref job, .. } if host == "10.0.0.2" && job == "tls")
    );
    assert!(data.repository.append_only());
    // A `kind: rest` job reaches its repository the same way.
    let (cpn, _) = job_file(alice, "/etc/picaops/backup/jobs/cpn.json");
    assert!(
        matches!(cpn.repository, RepositoryAccess::Ssh { ref host, ref job, .. } if host == "10.0.0.1" && job == "cpn")
    );
    assert_eq!(
        bob.known_hosts.as_deref(),
        Some("10.0.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice\n")
    );
    let (account, owner) = job_file(bob, "/var/lib/picaops-restic/jobs/cpn.json");
    assert_eq!(owner, REPO_USER);
    assert_eq!(
        account.repository,
        RepositoryAccess::Local {
            path: "/srv/restic-rest/alice".into()
        }
    );
    assert_eq!(
        account.password_file.display().to_string(),
        "/var/lib/picaops-restic/secrets/restic_alice"
    );
    assert_eq!(
        account.host, "alice",
        "snapshots stay filtered by the data host"
    );
    assert_eq!(account.senders, ["alice"], "only alice's key opens cpn");
    let (root_copy, owner) = job_file(bob, "/etc/picaops/backup/jobs/cpn.repo.json");
    assert_eq!(owner, "root");
    assert_eq!(root_copy.repository, account.repository);
    assert!(root_copy.read_only && !account.read_only);
    assert_eq!(root_copy.lock_dir, account.lock_dir, "one flock for both");
    assert!(root_copy.metrics_dir.is_some() && account.metrics_dir.is_none());
    assert!(root_copy.senders.is_empty(), "root's copy serves nobody");

    // Units: the data side has the job's service and timer; retention runs on the repository
    // side as the account, never on the data host.
    let names: Vec<&str> = bob.services.iter().map(|u| u.name.as_str()).collect();
    assert!(names.contains(&"picaops-backup-tls.service"), "{names:?}");
    let maintain = bob
        .services
        .iter()
        .find(|u| u.name.starts_with("picaops-backup-retention-"))
        .expect("bob keeps the retention of alice's repository");
    assert!(maintain.content.contains("User=picaops-restic"));
    assert!(maintain
        .content
        .contains("--job-file /var/lib/picaops-restic/jobs/cpn.json"));
    assert!(!maintain.content.contains("tls.json"));
    let on_alice: Vec<&str> = alice
        .services
        .iter()
        .filter(|u| u.name.starts_with("picaops-backup-retention-"))
        .map(|u| u.content.as_str())
        .collect();
    assert_eq!(on_alice.len(), 1);
    assert!(on_alice[0].contains("--job-file /var/lib/picaops-restic/jobs/tls.json"));
    // Checks and drills there too, as root, from the read-only copy.
    for task in ["check", "drill"] {
        let unit = alice
            .services
            .iter()
            .find(|u| u.name.starts_with(&format!("picaops-backup-{task}-")))
            .unwrap_or_else(|| panic!("no {task} unit on alice"));
        assert!(!unit.content.contains("User="), "{}", unit.content);
        assert!(unit
            .content
            .contains("/etc/picaops/backup/jobs/tls.repo.json"));
    }
    assert!(alice
        .timers
        .iter()
        .any(|t| t.name.starts_with("picaops-backup-drill-")));

    // alice: the repository directory, both password copies where needed; nothing listens.
    for m in [bob, alice] {
        assert!(
            m.services
                .iter()
                .all(|u| !u.content.contains("rest-server")),
            "no rest-server"
        );
    }
    assert!(alice
        .repository_dirs
        .contains(&"/srv/restic/bob".to_string()));
    let pw: Vec<(&str, bool, bool)> = alice
        .passwords
        .iter()
        .map(|p| (p.name.as_str(), p.root, p.account))
        .collect();
    assert!(pw.contains(&("restic_alice", true, false)), "{pw:?}");
    assert!(pw.contains(&("restic_bob", true, true)), "{pw:?}");
    // No file carries a password, only the path of one.
    for m in [bob, alice] {
        for f in &m.job_files {
            assert!(f.content.contains("\"password_file\""));
        }
    }
}

#[test]
fn an_sftp_repository_host_without_a_pinned_key_is_an_error_naming_the_fix() {
    let text = INVENTORY.replace(
        "alice: { site: compiegne, address: 10.0.0.2, host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice }",
        "alice: { site: compiegne, address: 10.0.0.2 }",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.yml"), text).unwrap();
    let inv = picaops::inventory::load(dir.path()).result.expect("valid");
    let err = plan(&inv, &UnitOptions::default()).unwrap_err().to_string();
    assert!(err.contains("picaops inventory pin alice"), "{err}");
}
