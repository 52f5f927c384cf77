//! `site recover SITE`'s plan, against inventories written in a temporary directory: where each
//! VM and service of the lost site comes back, and every reason a recovery cannot work, refused
//! with its place before anything is contacted. `recovery.yml` then places them for every run.

use std::path::Path;

use picaops::diagnostic::Sources;
use picaops::inventory::{self, Inventory};

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(dir.join(name), text).unwrap();
}

const COMPOSE: &str =
    "services:\n  web:\n    image: \"example/web:{{ version }}\"\n    ports: [\"{{ port }}:80\"]\n";

/// Two sites like the lab: bob (Toulouse) with VM vm-tls and service hello (data, a job to
/// alice), alice and caribou at Compiègne. `extra` is appended to hosts.yml's alice entry,
/// `services`/`backups` replace those files when given.
fn site(alice_capacity: &str, services: Option<&str>, backups: Option<&str>) -> tempfile::TempDir {
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
        &format!(
            "hosts:\n  bob: {{ site: toulouse, address: 10.0.0.1, hypervisor: libvirt, groups: [docker_hosts], capacity: {{ vcpus: 8, memory: 16GiB, disk: 500GiB }} }}\n  \
             alice: {{ site: compiegne, address: 10.0.0.2, hypervisor: libvirt, groups: [docker_hosts]{alice_capacity} }}\n  \
             caribou: {{ site: compiegne, address: 10.0.0.3, groups: [storage] }}\n"
        ),
    );
    write(
        d,
        "inv/vms.yml",
        "vms:\n  vm-tls: { host: bob, vcpus: 2, memory: 4GiB, disks: [{ size: 40GiB }], network: { address: 10.61.0.10/24 } }\n  \
         vm-cpn: { host: alice, vcpus: 2, memory: 4GiB, disks: [{ size: 40GiB }], network: { address: 10.61.0.20/24 } }\n\
         groups:\n  docker_hosts: {}\n  storage: {}\n",
    );
    write(d, "services/web.yml.j2", COMPOSE);
    write(
        d,
        "inv/services.yml",
        services.unwrap_or(
            "services:\n  hello: { host: bob, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18080 }, data: [/DATA/hello], backup: hello }\n  \
             api: { host: vm-tls, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18090 } }\n  \
             pad: { host: alice, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18081 } }\n",
        ),
    );
    write(
        d,
        "inv/backups.yml",
        backups.unwrap_or(
            "backups:\n  hello:\n    service: hello\n    paths: [/DATA/hello]\n    schedule: daily\n    retention: { keep_daily: 7 }\n    max_age: 26h\n    \
             repository: { kind: sftp, host: alice, path: /srv/restic/hello }\n    password: restic/hello\n",
        ),
    );
    dir
}

fn load(dir: &Path) -> Inventory {
    match inventory::load(&dir.join("inv")).result {
        Ok(inv) => inv,
        Err(d) => panic!("invalid inventory: {d:#?}"),
    }
}

/// The plan's errors as one text (messages and helps).
fn refused(dir: &Path) -> String {
    let inv = load(dir);
    match picaops::recovery::plan(&inv, "toulouse", &mut Sources::default()) {
        Ok(plan) => panic!("the plan should be refused: {plan:#?}"),
        Err(diags) => diags
            .iter()
            .map(|d| {
                format!(
                    "{}: {} ({})",
                    d.place,
                    d.message,
                    d.help.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

const ROOM: &str = ", capacity: { vcpus: 8, memory: 16GiB, disk: 500GiB }";

#[test]
fn every_vm_and_service_of_the_lost_site_gets_a_place_at_the_other() {
    let dir = site(ROOM, None, None);
    let inv = load(dir.path());
    let plan = picaops::recovery::plan(&inv, "toulouse", &mut Sources::default()).expect("a plan");
    assert_eq!(plan.to_site, "compiegne");
    let vms: Vec<(&str, &str, &str)> = plan
        .vms
        .iter()
        .map(|m| (m.vm.as_str(), m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(vms, [("vm-tls", "bob", "alice")]);
    let services: Vec<(&str, &str, bool, Option<&str>)> = plan
        .services
        .iter()
        .map(|m| {
            (
                m.service.as_str(),
                m.to.as_str(),
                m.with_vm,
                m.job.as_deref(),
            )
        })
        .collect();
    // hello leaves bob for the docker host of Compiègne; api stays on its VM, which moves.
    assert_eq!(
        services,
        [
            ("hello", "alice", false, Some("hello")),
            ("api", "vm-tls", true, None)
        ]
    );
    assert_eq!(plan.services[0].data, ["/DATA/hello"]);
    assert!(
        plan.manual.iter().any(|m| m.contains("service `hello`")),
        "{:?}",
        plan.manual
    );
    // Compiègne's own services are not part of Toulouse's recovery.
    assert!(!plan.services.iter().any(|m| m.service == "pad"));
}

#[test]
fn a_hypervisor_without_room_is_refused_saying_by_how_much() {
    let dir = site(
        ", capacity: { vcpus: 3, memory: 6GiB, disk: 500GiB }",
        None,
        None,
    );
    let why = refused(dir.path());
    // alice holds vm-cpn (2 vCPU, 4 GiB) and would take vm-tls (2 vCPU, 4 GiB).
    assert!(
        why.contains("hypervisor `alice` cannot hold its VMs and vm-tls"),
        "{why}"
    );
    assert!(
        why.contains("vCPUs: needs 4 but has 3 (1 too few)"),
        "{why}"
    );
    assert!(
        why.contains("memory: needs 8 GiB but has 6 GiB (2 GiB too few)"),
        "{why}"
    );
    assert!(!why.contains("disk:"), "{why}");
    assert!(
        why.contains("hosts.yml:"),
        "located at alice's capacity: {why}"
    );
}

#[test]
fn a_hypervisor_that_declares_no_capacity_is_refused_with_what_to_declare() {
    let dir = site("", None, None);
    let why = refused(dir.path());
    assert!(
        why.contains(
            "hypervisor `alice` would take vm-tls from the lost site but declares no `capacity:`"
        ),
        "{why}"
    );
    assert!(why.contains("it needs 4 vCPUs"), "{why}");
}

#[test]
fn a_service_with_data_and_no_backup_job_at_the_recovery_site_is_refused() {
    let no_job = site(
        ROOM,
        Some("services:\n  hello: { host: bob, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18080 }, data: [/DATA/hello] }\n"),
        Some("backups: {}\n"),
    );
    let why = refused(no_job.path());
    assert!(
        why.contains("service `hello` keeps data (/DATA/hello) that no backup job covers"),
        "{why}"
    );
    assert!(why.contains("services.yml:2:"), "{why}");

    // Toulouse backs up to a third site but comes back at Compiègne: its data is not there.
    let elsewhere = site(
        ROOM,
        None,
        Some(
            "backups:\n  hello:\n    service: hello\n    paths: [/DATA/hello]\n    schedule: daily\n    retention: { keep_daily: 7 }\n    max_age: 26h\n    \
             repository: { kind: sftp, host: paris1, path: /srv/restic/hello }\n    password: restic/hello\n",
        ),
    );
    let d = elsewhere.path();
    write(
        d,
        "inv/sites.yml",
        "sites:\n  toulouse: { backs_up_to: paris, recovery: { site: compiegne } }\n  compiegne: { backs_up_to: toulouse }\n  paris: { backs_up_to: toulouse }\n",
    );
    write(
        d,
        "inv/paris.yml",
        "hosts:\n  paris1: { site: paris, address: 10.0.0.9, groups: [storage] }\n",
    );
    let why = refused(d);
    assert!(why.contains("backup job `hello` of service `hello` keeps its repository at site `paris`, not at `compiegne`"), "{why}");
}

#[test]
fn a_port_published_twice_at_the_new_place_is_refused() {
    let dir = site(
        ROOM,
        Some(
            "services:\n  hello: { host: bob, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18081 } }\n  \
             pad: { host: alice, compose: ../services/web.yml.j2, vars: { version: \"1.0\", port: 18081 } }\n",
        ),
        Some("backups: {}\n"),
    );
    let why = refused(dir.path());
    assert!(
        why.contains("port 18081/tcp on `alice` is published twice"),
        "{why}"
    );
}

#[test]
fn recovery_places_are_checked_with_their_place() {
    let dir = site(ROOM, None, None);
    let d = dir.path();
    write(
        d,
        "inv/sites.yml",
        "sites:\n  toulouse: { backs_up_to: compiegne, recovery: { hypervisor: bob } }\n  compiegne: { backs_up_to: toulouse, recovery: { site: compiegne } }\n",
    );
    let diags = match inventory::load(&d.join("inv")).result {
        Ok(_) => panic!("a recovery place at the lost site must be refused"),
        Err(d) => d,
    };
    let text: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {}", d.place, d.message))
        .collect();
    assert!(
        text.iter().any(|t| t.contains("sites.yml:2:")
            && t.contains("`bob` is at site `toulouse`, not at the recovery site `compiegne`")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("sites.yml:3:")
            && t.contains("site `compiegne` cannot recover onto itself")),
        "{text:#?}"
    );
}

#[test]
fn recovery_yml_places_moved_vms_and_services_for_every_run() {
    let dir = site(ROOM, None, None);
    let d = dir.path();
    let inv = load(d);
    let plan = picaops::recovery::plan(&inv, "toulouse", &mut Sources::default()).unwrap();
    let r = plan.recovery(&inv, "2026-12-04T18:30:00Z");
    let vms: Vec<(String, String)> = r
        .vms
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let services: Vec<(String, String)> = r
        .services
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    write(
        d,
        "inv/recovery.yml",
        &picaops::sections::recovery::render(
            "toulouse",
            "2026-12-04T18:30:00Z",
            &vms,
            &services,
            None,
        ),
    );
    let moved = load(d);
    assert_eq!(moved.vms["vm-tls"].host.value, "alice");
    assert_eq!(
        moved.vms["vm-tls"].moved_from.as_ref().unwrap().value,
        "bob"
    );
    assert_eq!(moved.vms["vm-tls"].ssh.jump.as_deref(), Some("10.0.0.2"));
    assert_eq!(
        inventory::recovery::home(&moved).vms["vm-tls"]
            .ssh
            .jump
            .as_deref(),
        Some("10.0.0.1"),
        "home again, reached through its home hypervisor"
    );
    assert_eq!(moved.services["hello"].host.value, "alice");
    // When bob comes back: its hello, its VM and hello's backup timer are stale there.
    let stale = &picaops::fence::stale(&moved)["bob"];
    assert_eq!(
        (&stale.services, &stale.vms, &stale.timers, stale.directory),
        (
            &vec!["hello".to_string()],
            &vec!["vm-tls".to_string()],
            &vec!["hello".to_string()],
            false
        )
    );
    assert_eq!(
        moved.services["api"].host.value, "vm-tls",
        "a service on a moved VM keeps its machine"
    );
    assert!(inventory::recovery::is_lost(
        &moved,
        moved.machine("bob").unwrap()
    ));
    assert!(!inventory::recovery::is_lost(
        &moved,
        moved.machine("vm-tls").unwrap()
    ));
    // hello's job now backs up from alice to alice: no off-site copy, said with the stopgap.
    let gap =
        picaops::backup::jobfile::offsite_gap(&moved, &moved.backups["hello"]).expect("a gap");
    assert!(
        gap.contains("no off-site backup while site `toulouse` is lost"),
        "{gap}"
    );
    assert!(
        gap.contains("another machine of `compiegne` (e.g. `caribou`)"),
        "{gap}"
    );
    assert_eq!(
        picaops::backup::jobfile::offsite_gap(&inv, &inv.backups["hello"]),
        None,
        "none before the loss"
    );

    // backup init while Toulouse is lost: alice's key is authorised for hello's repository and
    // bob's line (hello's home, which needs it after the failback) is kept, not dropped.
    let keys = [(
        "alice".to_string(),
        "ssh-ed25519 AAAAalice picaops-backup@alice".to_string(),
    )]
    .into();
    let calls = picaops::backup::remote::authorize_calls(&moved, &keys);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let line = calls[0].command.to_shell_line();
    assert!(
        line.contains("grep -E") && line.contains(" picaops-backup@(bob)$"),
        "{line}"
    );
    assert!(
        picaops::backup::remote::key_calls(&moved)
            .iter()
            .all(|c| c.machine != "bob"),
        "the lost site is not asked"
    );
    let before = picaops::backup::remote::authorize_calls(&inv, &keys);
    assert!(
        before.is_empty(),
        "bob gave no key and is hello's only sender: alice's file is left alone"
    );

    // A recovery that names what the inventory does not have, or moves onto the lost site.
    write(d, "inv/recovery.yml", "recovery:\n  lost: toulouse\n  since: \"2026-12-04 18:30\"\n  vms: { vm-tls: bob }\n  services: { hello: carbou }\n");
    let diags = match inventory::load(&d.join("inv")).result {
        Ok(_) => panic!("a bad recovery.yml must be refused"),
        Err(d) => d,
    };
    let text: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {} {:?}", d.place, d.message, d.help))
        .collect();
    assert!(
        text.iter()
            .any(|t| t.contains("recovery.yml:3:") && t.contains("is not a UTC time")),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("recovery.yml:4:") && t.contains("`bob` is at site `toulouse` too")), "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("recovery.yml:5:")
            && t.contains("unknown machine `carbou`")
            && t.contains("caribou")),
        "{text:#?}"
    );
}

/// The directory on bob (Toulouse), kept by job `dir` at alice; `recover_to` and the job's dump
/// as given.
fn with_directory(recover_to: &str, dump: &str) -> tempfile::TempDir {
    let backups = format!(
        "backups:\n  hello:\n    service: hello\n    paths: [/DATA/hello]\n    schedule: daily\n    retention: {{ keep_daily: 7 }}\n    max_age: 26h\n    \
         repository: {{ kind: sftp, host: alice, path: /srv/restic/hello }}\n    password: restic/hello\n  \
         dir:\n    host: bob\n    paths: [/etc/ldap/tls]\n    dumps: [{dump}]\n    schedule: daily\n    retention: {{ keep_daily: 7 }}\n    max_age: 26h\n    \
         repository: {{ kind: sftp, host: alice, path: /srv/restic/dir }}\n    password: restic/dir\n"
    );
    let dir = site(ROOM, None, Some(&backups));
    write(
        dir.path(),
        "inv/access.yml",
        &format!(
            "access:\n  directory:\n    url: ldaps://10.0.0.1:636\n    base: dc=picasoft,dc=net\n    admin_password: ldap-admin\n    \
             backup: dir\n    recover_to: {recover_to}\n"
        ),
    );
    dir
}

#[test]
fn the_directory_comes_back_first_and_every_run_then_uses_its_new_place() {
    let dir = with_directory(
        "caribou",
        "{ kind: ldap, database: \"dc=picasoft,dc=net\" }",
    );
    let d = dir.path();
    let inv = load(d);
    let plan = picaops::recovery::plan(&inv, "toulouse", &mut Sources::default()).unwrap();
    let moved = plan.directory.as_ref().expect("the directory moves");
    assert_eq!(
        (moved.from.as_str(), moved.to.as_str(), moved.job.as_str()),
        ("bob", "caribou", "dir")
    );
    assert_eq!(moved.url, "ldaps://10.0.0.3:636");
    assert_eq!(moved.tls_name, "10.0.0.1", "the certificate keeps its name");
    assert!(
        !plan.warnings.iter().any(|w| w.contains("`dir`")),
        "the directory's job is brought back, not warned about: {:?}",
        plan.warnings
    );
    assert!(plan.machines().contains("caribou"));

    write(
        d,
        "inv/recovery.yml",
        &picaops::sections::recovery::render(
            "toulouse",
            "2026-12-04T18:30:00Z",
            &[],
            &[],
            Some("caribou"),
        ),
    );
    let recovered = load(d);
    let directory = &recovered.access.as_ref().unwrap().directory;
    assert_eq!(directory.url, "ldaps://10.0.0.3:636");
    assert_eq!(directory.tls_name.as_deref(), Some("10.0.0.1"));
    let job = &recovered.backups["dir"];
    let picaops::sections::backup::Holder::Host(runs_on) = &job.holder else {
        panic!("{:?}", job.holder)
    };
    assert_eq!(
        runs_on.value, "caribou",
        "the job runs where the directory is"
    );
    assert_eq!(
        job.moved_from.as_ref().map(|h| h.value.as_str()),
        Some("bob")
    );
    assert_eq!(
        picaops::backup::jobfile::restic_host(&recovered, job).as_deref(),
        Some("bob"),
        "its snapshots go on under the home machine's name"
    );
    let stale = &picaops::fence::stale(&recovered)["bob"];
    assert!(stale.directory, "bob's slapd is stale");
    assert_eq!(
        stale.timers,
        ["dir"],
        "and the directory's backup timer there"
    );
    let home = inventory::recovery::home(&recovered);
    let directory = &home.access.as_ref().unwrap().directory;
    assert_eq!(
        (directory.url.as_str(), directory.tls_name.as_deref()),
        ("ldaps://10.0.0.1:636", None)
    );
    assert_eq!(
        home.backups["dir"].holder, inv.backups["dir"].holder,
        "home again"
    );
}

#[test]
fn a_directory_that_cannot_come_back_is_refused_with_its_place() {
    // The job keeps no ldap dump, and the recovery place is at the directory's own site.
    let dir = with_directory("bob", "{ kind: sqlite, database: /var/lib/x.db }");
    let loaded = inventory::load(&dir.path().join("inv"));
    let diags = loaded.result.expect_err("refused");
    let said: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {}", d.place, d.message))
        .collect();
    let said = said.join("\n");
    assert!(
        said.contains("access.yml:6:13: backup job `dir` has no `kind: ldap` dump"),
        "{said}"
    );
    assert!(
        said.contains("access.yml:7:17: `bob` is at site `toulouse` too"),
        "{said}"
    );
}

#[test]
fn urls_move_to_the_new_address_and_keep_their_port() {
    use inventory::recovery::url_at;
    assert_eq!(
        url_at("ldaps://ldap.picasoft.net:636", "10.0.0.3"),
        Some((
            "ldap.picasoft.net".to_string(),
            "ldaps://10.0.0.3:636".to_string()
        ))
    );
    assert_eq!(
        url_at("ldaps://ldap", "fd00::3").map(|(_, u)| u),
        Some("ldaps://[fd00::3]".into())
    );
    assert_eq!(
        url_at("ldaps://[fd00::1]:1636/", "bob"),
        Some(("fd00::1".into(), "ldaps://bob:1636/".into()))
    );
    assert_eq!(url_at("ldap://clear:389", "x"), None);
}
