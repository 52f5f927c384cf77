//! The inventory's `backups:` section: each case below is a small broken inventory and every
//! error `picaops inventory check` must report for it, as `file:line:column: message`. The real
//! binary runs on each; it must exit 2 and report exactly those places.

use std::path::Path;
use std::process::Command;

/// Two sites backing up to each other, a machine on each, a service on the Toulouse VM.
const BASE: &str = "\
sites:
  toulouse: { backs_up_to: compiegne }
  compiegne: { backs_up_to: toulouse }
  lyon: {}
hosts:
  bob: { site: toulouse, address: 10.0.0.1 }
  caribou: { site: compiegne, address: 10.0.0.2 }
  lyonnais: { site: lyon, address: 10.0.0.3 }
vms:
  pica01: { host: bob, address: 10.0.1.1 }
services:
  mattermost: { host: pica01 }
";

/// A valid job to start cases from: the `KEY: value` lines are replaced per case.
const JOB: &str = "\
backups:
  mattermost:
    service: mattermost
    paths: [/DATA/mattermost]
    schedule: \"*-*-* 02:30\"
    retention: { keep_daily: 7 }
    repository: { kind: sftp, host: caribou, path: /srv/restic/pica01 }
    password: restic/pica01
    max_age: 26h
";

fn check(backups: &str) -> (Option<i32>, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yml"), BASE).unwrap();
    std::fs::write(dir.path().join("backups.yml"), backups).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_picaops"))
        .env("NO_COLOR", "1")
        .arg("-i")
        .arg(dir.path())
        .args(["inventory", "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let prefix = format!("{}/", dir.path().display());
    let errors = stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .map(|l| l.trim_start_matches(&prefix).replacen(": error: ", ": ", 1))
        .collect();
    (out.status.code(), errors, stderr)
}

fn job_with(replace: &[(&str, &str)]) -> String {
    let mut text = JOB.to_string();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    text
}

#[test]
fn the_base_job_is_valid() {
    let (code, errors, stderr) = check(JOB);
    assert_eq!(code, Some(0), "{errors:?}\n{stderr}");
}

#[test]
fn broken_jobs_are_reported_at_their_place() {
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown service",
            job_with(&[("service: mattermost", "service: matermost")]),
            vec!["backups.yml:3:14: unknown service `matermost`"],
        ),
        (
            "unknown host",
            job_with(&[("service: mattermost", "host: pica1")]),
            vec!["backups.yml:3:11: unknown host or VM `pica1`"],
        ),
        (
            "host and service",
            job_with(&[("service: mattermost", "service: mattermost\n    host: pica01")]),
            vec!["backups.yml:3:14: job `mattermost` names both a host and a service"],
        ),
        (
            "repository on the same site as the data",
            job_with(&[("host: caribou", "host: bob")]),
            vec!["backups.yml:7:37: job `mattermost` keeps its backup on the same site as its data (toulouse)"],
        ),
        (
            "repository on a third site",
            job_with(&[("host: caribou", "host: lyonnais")]),
            vec!["backups.yml:7:37: job `mattermost` sends toulouse's data to lyon, but toulouse backs up to compiegne"],
        ),
        (
            "unknown repository host",
            job_with(&[("host: caribou", "host: cariboo")]),
            vec!["backups.yml:7:37: unknown host or VM `cariboo`"],
        ),
        (
            "bad schedule",
            job_with(&[("\"*-*-* 02:30\"", "\"*-*-* 26:30\"")]),
            vec!["backups.yml:5:15: schedule `*-*-* 26:30` is not valid: hour 26 is out of range (0..23)"],
        ),
        (
            "empty retention",
            job_with(&[("{ keep_daily: 7 }", "{ keep_daily: 0 }")]),
            vec!["backups.yml:6:16: the retention of job `mattermost` keeps nothing"],
        ),
        (
            "unknown dump kind",
            job_with(&[("    paths: [/DATA/mattermost]\n", "    dumps:\n      - { kind: postgresql, container: db, database: mm }\n")]),
            vec!["backups.yml:5:17: unknown dump kind `postgresql`"],
        ),
        (
            "dump without container",
            job_with(&[("    paths: [/DATA/mattermost]\n", "    dumps:\n      - { kind: mysql, database: mm }\n")]),
            vec!["backups.yml:5:9: this mysql dump of job `mattermost` has no `container:`"],
        ),
        (
            "a password_env that is not a variable name (it would reach a shell in the container)",
            job_with(&[("    paths: [/DATA/mattermost]\n", "    dumps:\n      - { kind: postgres, container: db, database: mm, password_env: \"PW}; touch /tmp/pwned\" }\n")]),
            vec!["backups.yml:5:70: password_env `PW}; touch /tmp/pwned` is not an environment variable name"],
        ),
        (
            "a container name that docker exec would read as an option",
            job_with(&[("    paths: [/DATA/mattermost]\n", "    dumps:\n      - { kind: postgres, container: --privileged, database: mm }\n")]),
            vec!["backups.yml:5:38: container `--privileged` is not a container name"],
        ),
        (
            "relative path and bad max_age",
            job_with(&[("[/DATA/mattermost]", "[DATA/mattermost]"), ("26h", "26")]),
            vec![
                "backups.yml:4:13: backup path `DATA/mattermost` is not absolute",
                "backups.yml:9:14: max_age `26` is not a duration: `26`: a unit is missing (s, min, h, d, w)",
            ],
        ),
        (
            "a password instead of a secret's name",
            job_with(&[("password: restic/pica01", "password: \"hunter2 is my password\"")]),
            vec!["backups.yml:8:15: `password` must be the NAME of a secret, not a password"],
        ),
        (
            "the Debian backup user",
            job_with(&[("kind: sftp, host: caribou", "kind: sftp, user: backup, host: caribou")]),
            vec!["backups.yml:7:37: `backup` is a Debian system user (uid 34), not a repository account"],
        ),
        (
            "two jobs, one repository, two passwords",
            format!("{JOB}  etherpad:\n    host: pica01\n    paths: [/DATA/etherpad]\n    schedule: daily\n    retention: {{ keep_last: 3 }}\n    repository: {{ kind: sftp, host: caribou, path: /srv/restic/pica01 }}\n    password: restic/other\n    max_age: 26h\n"),
            vec!["backups.yml:16:15: jobs `mattermost` and `etherpad` share a repository but not its password"],
        ),
        (
            "unknown key",
            job_with(&[("max_age: 26h", "max_age: 26h\n    bandwith: 10MiB/s")]),
            vec!["backups.yml:10:5: unknown key `bandwith`"],
        ),
        (
            "bad bandwidth",
            job_with(&[("max_age: 26h", "max_age: 26h\n    bandwidth: 10MB/s")]),
            vec!["backups.yml:10:16: bandwidth `10MB/s` is not valid: `MB` is not a unit here (use KiB/s, MiB/s or GiB/s)"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, yaml, want) in &cases {
        let (code, got, stderr) = check(yaml);
        if code != Some(2) || &got != want || stderr.contains("panicked") {
            failures.push(format!(
                "{name}: exit {code:?}\n  want: {want:#?}\n  got:  {got:#?}\n{stderr}\n{yaml}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_give_advice() {
    let (_, _, stderr) = check(&job_with(&[("host: caribou", "host: bob")]));
    assert!(
        stderr.contains(
            "help: losing the site would lose both: put the repository on a machine at `compiegne`"
        ),
        "{stderr}"
    );
    let (_, _, stderr) = check(&job_with(&[("service: mattermost", "service: matermost")]));
    assert!(stderr.contains("did you mean `mattermost`?"), "{stderr}");
}

#[test]
fn the_example_job_files_carry_the_inventory_settings() {
    let inv = picaops::inventory::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory"))
        .result
        .unwrap_or_else(|d| panic!("{d:#?}"));
    let job = &inv.backups["mattermost"];
    let file = picaops::backup::JobFile::from_inventory(&inv, job).expect("resolves");
    assert_eq!(file.host, "pica01");
    assert_eq!(file.repository.url(), "rclone:mattermost");
    assert_eq!(
        file.repository_label(),
        "ssh:picaops-restic@caribou.picasoft.net:/srv/restic/pica01 (append-only)"
    );
    assert_eq!(
        file.password_file,
        Path::new("/etc/picaops/backup/secrets/restic_pica01")
    );
    assert_eq!(file.limit_upload_kib, Some(10 * 1024));
    assert_eq!(file.max_age_seconds, 26 * 3600);
    let wekan = picaops::backup::JobFile::from_inventory(&inv, &inv.backups["wekan"]).unwrap();
    assert!(wekan.repository.append_only());
}

#[test]
fn ldap_dumps_are_checked_at_their_place() {
    let dumps = |d: &str| {
        job_with(&[(
            "    paths: [/DATA/mattermost]\n",
            &format!("    dumps:\n      - {d}\n"),
        )])
    };
    for valid in [
        "{ kind: ldap }",
        "{ kind: ldap, database: \"dc=picasoft,dc=net\" }",
        "{ kind: ldap, container: ldap, database: \"dc=picasoft,dc=net\", config_dir: /etc/ldap/slapd.d }",
    ] {
        let (code, errors, stderr) = check(&dumps(valid));
        assert_eq!(code, Some(0), "{valid}: {errors:?}\n{stderr}");
    }
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "a suffix that is not a DN",
            "{ kind: ldap, database: picasoft.net }",
            vec!["backups.yml:5:33: `picasoft.net` is not an LDAP suffix (this ldap dump of job `mattermost`)"],
        ),
        (
            "a password for a tool that needs none",
            "{ kind: ldap, password_env: LDAP_ADMIN_PASSWORD }",
            vec!["backups.yml:5:37: an LDAP dump takes no `password_env:`"],
        ),
        (
            "a path, as for SQLite",
            "{ kind: ldap, path: /var/lib/ldap }",
            vec!["backups.yml:5:29: an LDAP dump takes no `path:`"],
        ),
        (
            "a relative config_dir",
            "{ kind: ldap, config_dir: etc/ldap/slapd.d }",
            vec!["backups.yml:5:35: config_dir `etc/ldap/slapd.d` is not an absolute directory"],
        ),
        (
            "config_dir on another kind",
            "{ kind: postgres, container: db, database: mm, config_dir: /etc/x }",
            vec!["backups.yml:5:68: `config_dir:` is for LDAP dumps, not a postgres dump"],
        ),
        (
            "the same directory twice",
            "{ kind: ldap }\n      - { kind: ldap }",
            vec!["backups.yml:6:9: job `mattermost` dumps this database twice"],
        ),
        (
            "a misspelt kind",
            "{ kind: lDAP }",
            vec!["backups.yml:5:17: unknown dump kind `lDAP`"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, dump, want) in &cases {
        let yaml = dumps(dump);
        let (code, got, stderr) = check(&yaml);
        if code != Some(2) || &got != want || stderr.contains("panicked") {
            failures.push(format!(
                "{name}: exit {code:?}\n  want: {want:#?}\n  got:  {got:#?}\n{stderr}\n{yaml}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let (_, _, stderr) = check(&dumps("{ kind: ldap, user: admin }"));
    assert!(
        stderr.contains("slapcat reads slapd's own files as root"),
        "{stderr}"
    );
    let (_, _, stderr) = check(&dumps("{ kind: lap }"));
    assert!(stderr.contains("did you mean `ldap`?"), "{stderr}");
}
