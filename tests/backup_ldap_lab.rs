//! The lab's own directory (slapd on the `ldap` host, systemd, base dc=picasoft,dc=net) backed up
//! by its `kind: ldap` job to the other site, drilled there (a scratch slapd on the repository
//! host) and loaded back into production with `backup restore --dump … --load`: every step through
//! `picaops apply` and `picaops backup …`, checked with slapcat on the host.
//!
//! Needs a job with an ldap dump in the lab inventory (`backups.yml`). Without one the test says
//! so and returns, even under `PICAOPS_REQUIRE_LAB=1`.

mod common;

use common::{json, ok, root, text, Lab};
use picaops::backup::DumpKind;
use serde_json::Value;

const SUFFIX: &str = "dc=picasoft,dc=net";

fn sh(lab: &Lab, host: &str, cmd: &str) -> String {
    let out = root(lab, host, cmd);
    ok(&out, &format!("on {host}: {cmd}"));
    text(&out.stdout)
}

fn backup(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json", "backup"];
    all.extend_from_slice(args);
    let out = lab.picaops(&all);
    ok(&out, &format!("picaops backup {}", args.join(" ")));
    json(&out)
}

/// `ldapadd`/`ldapmodify` on the ldap host as the directory's admin (the lab's public password).
fn ldap(lab: &Lab, tool: &str, ldif: &str) {
    sh(
        lab,
        "ldap",
        &format!("{tool} -x -H ldapi:/// -D cn=admin,{SUFFIX} -w picaops-lab <<'EOF'\n{ldif}\nEOF"),
    );
}

fn slapcat(lab: &Lab) -> String {
    sh(lab, "ldap", &format!("slapcat -b {SUFFIX} -o ldif-wrap=no"))
}

fn person(uid: &str, n: u32) -> String {
    format!(
        "dn: uid={uid},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
         uid: {uid}\ncn: {uid}\nsn: {uid}\nuidNumber: {n}\ngidNumber: 502\nhomeDirectory: /home/{uid}\n"
    )
}

#[test]
fn the_lab_directory_is_backed_up_drilled_at_the_other_site_and_loaded_back() {
    let Some(lab) = common::lab("backup_ldap_lab") else {
        return;
    };
    let inv = picaops::inventory::load(&lab.inventory)
        .result
        .unwrap_or_else(|d| panic!("the lab inventory: {d:#?}"));
    let Some((name, dump)) = inv.backups.values().find_map(|j| {
        j.dumps
            .iter()
            .find(|d| d.kind == DumpKind::Ldap)
            .map(|d| (j.name.clone(), d.file_name()))
    }) else {
        eprintln!(
            "SKIPPED backup_ldap_lab: the lab inventory has no job with a `kind: ldap` dump \
             (see the README, Backups: `dumps: [{{ kind: ldap, database: \"{SUFFIX}\" }}]` on host ldap)"
        );
        return;
    };
    let pid = std::process::id();
    let (kept, gone) = (
        format!("ldapdump-kept-{pid}"),
        format!("ldapdump-new-{pid}"),
    );
    ldap(&lab, "ldapadd", &person(&kept, 39000 + pid % 1000));
    let before = slapcat(&lab);
    assert!(before.contains(&format!("uid={kept},")));

    ok(
        &lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]),
        "apply --tags backup",
    );
    backup(&lab, &["init", "--job", &name]);
    backup(&lab, &["run", "--job", &name]);

    // After the backup: one entry deleted, one added.
    ldap(
        &lab,
        "ldapmodify",
        &format!("dn: uid={kept},ou=People,{SUFFIX}\nchangetype: delete\n"),
    );
    ldap(&lab, "ldapadd", &person(&gone, 39999));

    // The drill runs on the repository's host, at the other site.
    let drill = backup(&lab, &["drill", "--job", &name]);
    let line = drill["jobs"][0]["message"].as_str().unwrap_or_default();
    assert!(line.contains("1 dump(s) loaded"), "{drill:#}");

    let loaded = backup(&lab, &["restore", &name, "--dump", &dump, "--load"]);
    assert_eq!(loaded["ok"], true, "{loaded:#}");
    let after = slapcat(&lab);
    assert_eq!(after, before, "the directory is not back exactly");
    // slapd serves it again, to clients.
    let found = sh(
        &lab,
        "ldap",
        &format!("ldapsearch -x -LLL -H ldapi:/// -b ou=People,{SUFFIX} '(uid={kept})' uid"),
    );
    assert!(found.contains(&format!("uid: {kept}")), "{found}");

    // Leave the lab as found: the test entry and the directories the load kept aside.
    ldap(
        &lab,
        "ldapmodify",
        &format!("dn: uid={kept},ou=People,{SUFFIX}\nchangetype: delete\n"),
    );
    sh(
        &lab,
        "ldap",
        "rm -rf /var/lib/ldap.picaops-old-* /etc/ldap/slapd.d.picaops-old-*",
    );
}
