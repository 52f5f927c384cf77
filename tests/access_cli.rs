//! `picaops access …` and `inventory check` refusing bad input before any directory is
//! contacted: end dates that are typos, key files that are no files, names and mails that are
//! not, an `access:` section that would put root under the directory. The inventory names a
//! directory at ldaps://127.0.0.1:1 where nothing listens, so a command that got as far as the
//! network would fail differently (exit 1, "cannot reach").

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{picaops_on, text};

fn inventory(dir: &Path, access_extra: &str) {
    std::fs::write(
        dir.join("hosts.yml"),
        "hosts:\n  bob: { site: toulouse, address: 10.0.0.1 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sites.yml"),
        "sites:\n  toulouse: { backs_up_to: compiegne }\n  compiegne: { backs_up_to: toulouse }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("access.yml"),
        format!(
            "access:\n  directory:\n    url: ldaps://127.0.0.1:1\n    base: dc=x\n    admin_password: ldap-admin\n{access_extra}secrets:\n  store: files\n  dir: secrets\n"
        ),
    )
    .unwrap();
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("ldap-admin"), "not-a-real-password\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        secrets.join("ldap-admin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

fn day(offset: i64) -> String {
    picaops::access::date::format_day(picaops::access::date::today() + offset)
}

#[test]
fn end_dates_that_are_typos_are_refused_before_the_directory_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    inventory(tmp.path(), "");
    let run = |args: &[&str]| picaops_on(tmp.path(), args);
    let grant = |until: &[&str]| {
        let mut a = vec!["access", "grant", "ann", "--level", "member"];
        a.extend_from_slice(until);
        run(&a)
    };
    // The typo for 2027: a date long past, which used to be stored as permanent access.
    let out = grant(&["--until", "1027-03-15"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1027-03-15 is before today") && err.contains("--cut-off-now"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    let out = run(&["access", "extend", "ann", "--until", &day(-1)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Absurdly far: a typo too.
    let out = grant(&["--until", "2207-03-15"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("more than 10 years away"), "{err}");
    // --cut-off-now with a future date contradicts itself.
    let out = grant(&["--until", &day(30), "--cut-off-now"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Positive controls: a sane date, and an explicit cut-off, get as far as the directory.
    for until in [
        &["--until", &day(30)][..],
        &["--until", "1027-03-15", "--cut-off-now"],
    ] {
        let out = grant(until);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{until:?}: {err}");
        assert!(err.contains("127.0.0.1:1"), "{until:?}: {err}");
    }
}

#[test]
fn key_files_names_and_mails_are_checked_before_the_directory_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    inventory(tmp.path(), "");
    let until = day(30);
    let grant = |extra: &[&str]| {
        let mut a = vec![
            "access", "grant", "ann", "--level", "member", "--until", &until,
        ];
        a.extend_from_slice(extra);
        picaops_on(tmp.path(), &a)
    };
    // /dev/zero used to be read until memory ran out.
    let started = Instant::now();
    let out = grant(&["--key", "/dev/zero"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let big = tmp.path().join("big.pub");
    std::fs::write(&big, vec![b'A'; 65 << 10]).unwrap();
    let out = grant(&["--key", big.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("larger than 64 KiB"), "{err}");
    for (flag, bad, says) in [
        ("--name", "Jeanne\nDupont", "one line"),
        ("--name", "*)(uid=*", "one line"),
        ("--mail", "jeanne", "not a mail address"),
        ("--mail", "a@b.c\nmail: x@y.z", "not a mail address"),
    ] {
        let out = grant(&[flag, bad]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {bad:?}: {err}");
        assert!(err.contains(says), "{flag} {bad:?}: {err}");
    }
    // Positive control: good ones get as far as the directory.
    let out = grant(&["--name", "Jeanne Dupont", "--mail", "jeanne@etu.utc.fr"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn an_access_section_that_puts_system_accounts_under_the_directory_is_refused_where_written() {
    let tmp = tempfile::tempdir().unwrap();
    inventory(
        tmp.path(),
        "  first_uid: 0\n  cache_lifetime: 213503982334602d\n",
    );
    let out = picaops_on(tmp.path(), &["inventory", "check"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let access = tmp.path().join("access.yml").display().to_string();
    assert!(
        err.contains(&format!("{access}:6:14: error: first_uid 0")),
        "{err}"
    );
    // 213503982334602 days in seconds wraps u64 to 61184 s, inside the 7-day bound.
    assert!(
        err.contains(&format!("{access}:7:19: error:")) && err.contains("far too long"),
        "{err}"
    );
    // Positive control: 1000 and 6h are fine.
    inventory(tmp.path(), "  first_uid: 1000\n  cache_lifetime: 6h\n");
    let out = picaops_on(tmp.path(), &["inventory", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
