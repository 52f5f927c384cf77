//! Losing Compiègne on the lab: rows written into the `notes` PostgreSQL on alice and the
//! directory on the `ldap` host are backed up to Toulouse, a member is granted a login on bob,
//! then alice, caribou and ldap are stopped. `site recover compiegne --apply` brings notes and
//! pad back on bob, and the directory too (its dump loaded into a fresh slapd on bob, its
//! certificate and settings restored with it): bob's access helper is pointed at it, the member
//! logs in to bob with their key (bob's cache emptied first, so the answer is the recovered
//! directory's), and a person granted during the emergency (through the directory's new place)
//! logs in too. Then Compiègne comes back: the next site run stops ldap's stale slapd first,
//! and `site failback compiegne --apply` takes it all
//! home, the directory last (with that person in it), bob's helper pointed at ldap again and
//! bob's slapd stopped. Afterwards: bob as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{json, ok, picaops_on, root, ssh, text, Lab};
use serde_json::Value;

const COMPIEGNE: [&str; 3] = ["alice", "caribou", "ldap"];

/// The lab inventory in a directory beside the lab's own (so its `../` paths hold), removed
/// when dropped; the Compiègne hosts started again and bob cleaned of what the recovery put
/// there, its access helper and backup jobs applied back from the lab's own inventory.
struct Emergency<'a> {
    lab: &'a Lab,
    inventory: PathBuf,
    people: Vec<String>,
}

impl<'a> Emergency<'a> {
    fn new(lab: &'a Lab) -> Emergency<'a> {
        let inventory = common::inventory_copy(lab, "inventory-recover-cpn", false);
        Emergency {
            lab,
            inventory,
            people: Vec::new(),
        }
    }

    fn picaops(&self, args: &[&str]) -> Output {
        picaops_on(&self.inventory, args)
    }

    /// `site WHAT compiegne --apply` with `playbooks`, as JSON.
    fn site_apply(&self, what: &str, playbooks: &[&str]) -> Output {
        let mut args = vec!["-o", "json", "site", what, "compiegne", "--apply"];
        for p in playbooks {
            args.extend(["--playbook", p]);
        }
        self.picaops(&args)
    }

    /// A new key for `login`, granted a login on bob for 30 days (through wherever this
    /// inventory says the directory is); the private key's path. Revoked when dropped.
    fn grant(&mut self, login: &str) -> PathBuf {
        let (private, public) = key(&self.lab.dir, login);
        self.people.push(login.to_string());
        let until = picaops::access::date::format_day(picaops::access::date::today() + 30);
        ok(
            &self.picaops(&[
                "access",
                "grant",
                login,
                "--level",
                "member",
                "--key",
                public.to_str().unwrap(),
                "--until",
                &until,
                "--hosts",
                "bob",
            ]),
            &format!("grant {login} on bob"),
        );
        private
    }
}

impl Drop for Emergency<'_> {
    fn drop(&mut self) {
        for host in COMPIEGNE {
            let start = common::picaops()
                .args(["lab", "start", host])
                .output()
                .unwrap();
            if !start.status.success() {
                eprintln!("could not start {host} again: {}", text(&start.stderr));
            }
        }
        let cleanup = "for s in pad notes; do d=/var/lib/picaops/services/$s; if [ -d $d ]; then \
            (cd $d && docker compose -p $s down) >/dev/null 2>&1; rm -rf $d; fi; done; \
            rm -rf /DATA/notes /DATA/pad /var/lib/picaops/services/.removed/pad-* /var/lib/picaops/services/.removed/notes-*; \
            systemctl stop slapd >/dev/null 2>&1; \
            rm -rf /var/lib/ldap /var/lib/ldap.picaops-* /etc/ldap/slapd.d /etc/ldap/slapd.d.picaops-* /etc/ldap/tls \
            /var/cache/picaops-access/*; true";
        let _ = Command::new("docker")
            .args(["exec", "picaops-lab-bob", "sh", "-c", cleanup])
            .output();
        // bob's helper and backup jobs as the lab's own inventory says (the directory on ldap).
        let backup = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/base/backup.yml");
        for playbook in ["playbooks/base/access.yml", backup.to_str().unwrap()] {
            let out = self
                .lab
                .picaops(&["apply", "-l", "bob", "--lock-wait", "300", playbook]);
            if !out.status.success() {
                eprintln!(
                    "could not apply {playbook} back on bob: {}",
                    text(&out.stderr)
                );
            }
        }
        for login in &self.people {
            let _ = self.lab.picaops(&["access", "revoke", login]);
            let _ = root(
                self.lab,
                "bob",
                &format!("userdel -r {login} 2>/dev/null; true"),
            );
        }
        let _ = std::fs::remove_dir_all(&self.inventory);
    }
}

fn key(dir: &Path, login: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(login);
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", login, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = key.with_extension("pub");
    (key, public)
}

fn rows(lab: &Lab, host: &str) -> String {
    let out = root(
        lab,
        host,
        "docker exec notes-db-1 psql -U postgres -d notes -At -v ON_ERROR_STOP=1 \
         -c 'select id, body from recovery_test order by id'",
    );
    ok(&out, &format!("notes' rows on {host}"));
    text(&out.stdout)
}

#[test]
fn losing_compiegne_brings_its_services_and_the_directory_back_at_toulouse() {
    let Some(lab) = common::lab("site_recover_lab_compiegne") else {
        return;
    };
    let mut e = Emergency::new(&lab);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let backup_playbook = repo.join("playbooks/base/backup.yml");
    let access_playbook = repo.join("playbooks/base/access.yml");
    let (backup_playbook, access_playbook) = (
        backup_playbook.to_str().unwrap(),
        access_playbook.to_str().unwrap(),
    );

    // notes on alice with known rows; bob's helper installed; a member granted on bob.
    ok(
        &e.picaops(&["service", "apply", "-l", "alice"]),
        "notes and pad deployed on alice",
    );
    ok(
        &root(
            &lab,
            "alice",
            "docker exec notes-db-1 psql -U postgres -d notes -v ON_ERROR_STOP=1 -c \
             'drop table if exists recovery_test; create table recovery_test (id int primary key, body text); \
              insert into recovery_test select g, md5(g::text) from generate_series(1, 500) g'",
        ),
        "notes' rows",
    );
    let before = rows(&lab, "alice");
    assert_eq!(before.lines().count(), 500);
    ok(
        &e.picaops(&["apply", "-l", "bob", "--lock-wait", "300", access_playbook]),
        "the access helper on bob",
    );
    let pid = std::process::id();
    let member = format!("cpnloss{}", pid % 100_000);
    let member_key = e.grant(&member);

    // Both jobs backed up to Toulouse.
    ok(
        &e.picaops(&[
            "apply",
            "-l",
            "bob,alice,ldap",
            "--lock-wait",
            "300",
            "--tags",
            "backup",
            backup_playbook,
        ]),
        "backups installed",
    );
    for job in ["notes", "ldap-directory"] {
        ok(
            &e.picaops(&["backup", "init", "--job", job]),
            &format!("backup init {job}"),
        );
        ok(
            &e.picaops(&["backup", "run", "--job", job]),
            &format!("backup run {job}"),
        );
    }

    // Compiègne is lost.
    for host in COMPIEGNE {
        ok(
            &common::picaops()
                .args(["lab", "stop", host])
                .output()
                .unwrap(),
            &format!("lab stop {host}"),
        );
    }
    let plan = e.picaops(&["site", "recover", "compiegne"]);
    ok(&plan, "the recovery plan");
    let said = text(&plan.stdout);
    assert!(said.contains("directory on bob (was on ldap)"), "{said}");
    assert!(said.contains("service notes on bob"), "{said}");

    let out = e.site_apply("recover", &[backup_playbook, access_playbook]);
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}\n{}", text(&out.stderr));
    let directory = &doc["directory"];
    assert_eq!(directory["ok"], true, "{directory:#}");
    assert_eq!(directory["machine"], "bob");
    assert!(directory["rpo_seconds"].as_u64().is_some(), "{directory:#}");
    let notes: &Value = common::service(&doc, "notes");
    assert_eq!(
        (&notes["ok"], &notes["machine"]),
        (&Value::Bool(true), &Value::from("bob"))
    );
    eprintln!(
        "recovery of compiègne: directory RTO {:.1} s, notes RTO {:.1} s",
        directory["rto_seconds"].as_f64().unwrap_or_default(),
        notes["rto_seconds"].as_f64().unwrap_or_default()
    );
    assert_eq!(
        rows(&lab, "bob"),
        before,
        "notes' rows at bob are the snapshot's"
    );
    let recovery = std::fs::read_to_string(e.inventory.join("recovery.yml")).unwrap();
    assert!(recovery.contains("  directory: bob\n"), "{recovery}");

    // bob's helper asks the directory at bob's address, checking the certificate it had on ldap.
    let helper = root(&lab, "bob", "cat /etc/picaops/access.json");
    let helper: Value = serde_json::from_slice(&helper.stdout).expect("bob's access.json");
    assert_eq!(
        helper["url"],
        format!("ldaps://{}:636", common::address("bob"))
    );
    assert_eq!(helper["tls_name"], common::address("ldap"));

    // The member logs in to bob; bob's cache is emptied first, so the recovered directory answers.
    ok(
        &root(&lab, "bob", "rm -rf /var/cache/picaops-access/*"),
        "bob's access cache emptied",
    );
    let login = ssh(&member_key, &member, "bob", "id -un");
    assert!(
        login.status.success(),
        "the member cannot log in to bob: {}",
        text(&login.stderr)
    );
    assert_eq!(text(&login.stdout).trim(), member);

    // The workstation writes to the directory's new place: a person granted now logs in too.
    let newcomer = format!("cpnnew{}", pid % 100_000);
    let new_key = e.grant(&newcomer);
    let login = ssh(&new_key, &newcomer, "bob", "true");
    assert!(
        login.status.success(),
        "a person granted during the emergency cannot log in to bob: {}",
        text(&login.stderr)
    );

    // Compiègne is back; failback takes everything home, the directory last, with the person
    // granted during the emergency in it.
    for host in COMPIEGNE {
        ok(
            &common::picaops()
                .args(["lab", "start", host])
                .output()
                .unwrap(),
            &format!("lab start {host}"),
        );
    }
    // Before anything else, a site run stops the stale directory ldap came back with.
    let apply = e.picaops(&["-o", "json", "apply", "-l", "bob", access_playbook]);
    let doc = json(&apply);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{doc:#}\n{}",
        text(&apply.stderr)
    );
    let fenced = doc["fence"]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["machine"] == "ldap")
        .unwrap_or_else(|| panic!("ldap fenced in {doc:#}"));
    assert!(
        fenced["stopped"].to_string().contains("directory slapd"),
        "{fenced:#}"
    );
    let active = |host: &str| text(&root(&lab, host, "systemctl is-active slapd").stdout);
    assert_eq!(
        active("ldap").trim(),
        "inactive",
        "ldap's stale slapd is stopped"
    );

    let plan = e.picaops(&["site", "failback", "compiegne"]);
    ok(&plan, "the failback plan");
    let said = text(&plan.stdout);
    assert!(said.contains("directory from bob to ldap"), "{said}");
    let out = e.site_apply("failback", &[backup_playbook, access_playbook]);
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}\n{}", text(&out.stderr));
    assert_eq!(doc["recovery_removed"], true, "{doc:#}");
    assert!(!e.inventory.join("recovery.yml").exists());
    assert_eq!(rows(&lab, "alice"), before, "notes' rows are home");
    let at_home = root(
        &lab,
        "ldap",
        &format!("slapcat -b dc=picasoft,dc=net -o ldif-wrap=no | grep -c '^uid: {newcomer}$'"),
    );
    assert_eq!(
        text(&at_home.stdout).trim(),
        "1",
        "the directory at home has the person granted during the emergency"
    );
    assert_eq!(
        active("ldap").trim(),
        "active",
        "ldap serves the directory again"
    );
    let helper = root(&lab, "bob", "cat /etc/picaops/access.json");
    let helper: Value = serde_json::from_slice(&helper.stdout).expect("bob's access.json");
    assert_eq!(
        helper["url"],
        format!("ldaps://{}:636", common::address("ldap"))
    );
    assert_eq!(helper.get("tls_name"), None, "{helper:#}");
    assert_eq!(
        text(
            &root(
                &lab,
                "bob",
                "systemctl is-active slapd; systemctl is-enabled slapd"
            )
            .stdout
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["inactive", "disabled"],
        "bob's slapd is stopped and stays so"
    );
    ok(
        &root(&lab, "bob", "rm -rf /var/cache/picaops-access/*"),
        "bob's access cache emptied",
    );
    let login = ssh(&new_key, &newcomer, "bob", "true");
    assert!(
        login.status.success(),
        "after the failback, the person granted during the emergency cannot log in to bob: {}",
        text(&login.stderr)
    );
}
