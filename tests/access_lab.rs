//! Access on the lab: a real slapd (openssh-lpk, nis, ldapns schemas), real sshd's asking the
//! picaops-access helper, real `ssh` logins. One test, in order, because each step builds on the
//! directory and the hosts the previous one left.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{json, ok, root, ssh, text};

struct Person {
    login: String,
    key: PathBuf,
    public: PathBuf,
}

fn person(dir: &Path, login: &str) -> Person {
    let key = dir.join(login);
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            &format!("{login}@test"),
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    Person {
        login: login.into(),
        public: key.with_extension("pub"),
        key,
    }
}

fn login_as(key: &Path, login: &str, host: &str) -> (bool, Duration) {
    let started = Instant::now();
    let out = ssh(key, login, host, "true");
    (out.status.success(), started.elapsed())
}

fn can(p: &Person, host: &str) -> bool {
    login_as(&p.key, &p.login, host).0
}

fn slapd(action: &str) {
    let out = Command::new("docker")
        .args(["exec", "picaops-lab-ldap", "sh", "-c", action])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "{action}: {}", text(&out.stderr));
}

fn day(offset_days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    picaops::access::date::format_day(now.div_euclid(86400) + offset_days)
}

#[test]
fn access_is_granted_enforced_expired_revoked_and_audited_on_real_logins() {
    let Some(lab) = common::lab("access_lab") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Fresh logins each run: people are never deleted (uidNumbers are not reused), like at Picasoft.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 1_000_000;
    let ann = person(tmp.path(), &format!("ann{run}"));
    let ben = person(tmp.path(), &format!("ben{run}"));
    let cid = person(tmp.path(), &format!("cid{run}"));

    // The hosts enforce access (helper, job file, timer, sshd) — and a second apply changes nothing.
    let out = lab.picaops(&["apply", "playbooks/base/access.yml"]);
    ok(&out, "apply access.yml");
    let out = lab.picaops(&["-o", "json", "plan", "playbooks/base/access.yml"]);
    assert_eq!(json(&out)["changes"], 0, "a second plan changes nothing");

    // Granted on bob: logs in to bob, refused on alice.
    let g = |p: &Person, extra: &[&str]| {
        let mut args = vec![
            "access",
            "grant",
            p.login.as_str(),
            "--level",
            "member",
            "--key",
            p.public.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        lab.picaops(&args)
    };
    ok(
        &g(&ann, &["--next-semester", "--hosts", "bob"]),
        "grant ann",
    );
    ok(
        &g(&ben, &["--until", &day(60), "--hosts", "bob,alice"]),
        "grant ben",
    );
    ok(
        &g(&cid, &["--until", &day(-1), "--hosts", "bob"]),
        "grant cid (already ended)",
    );
    assert!(can(&ann, "bob"), "ann is granted on bob");
    assert!(!can(&ann, "alice"), "ann is not granted on alice");
    assert!(can(&ben, "alice"));

    // A date in the past: refused.
    assert!(!can(&cid, "bob"), "cid's date has passed");

    // Every key line carries sshd's own end date.
    let out = root(
        &lab,
        "bob",
        &format!("/usr/local/sbin/picaops-access keys {}", ann.login),
    );
    let expected = {
        let list = json(&lab.picaops(&["-o", "json", "access", "list"]));
        let until = list["people"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["login"] == ann.login.as_str())
            .unwrap()["until"]
            .as_str()
            .unwrap()
            .to_string();
        let next = picaops::access::date::parse_date(&until).unwrap() + 1;
        picaops::access::date::format_day(next).replace('-', "")
    };
    assert!(
        text(&out.stdout).starts_with(&format!("expiry-time=\"{expected}Z\" ssh-ed25519 ")),
        "{}",
        text(&out.stdout)
    );

    // Logins that would widen an LDAP search are refused by the CLI and by the helper.
    let out = lab.picaops(&[
        "access",
        "grant",
        "*)(uid=*",
        "--level",
        "member",
        "--next-semester",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not a valid login"));
    let out = root(&lab, "bob", &format!("/usr/local/sbin/picaops-access keys '*)(uid=*'; /usr/local/sbin/picaops-access keys \"$(printf '{}\\nx')\"; echo END", ann.login));
    assert_eq!(text(&out.stdout), "END\n", "no key for a crafted login");
    assert!(!login_as(&ann.key, "*)(uid=*", "bob").0);

    // `access list` and `access audit` agree with what ssh allows, host by host.
    let audit = json(&lab.picaops(&["-o", "json", "access", "audit", "-l", "bob,alice,caribou"]));
    for h in audit["hosts"].as_array().unwrap() {
        let host = h["host"].as_str().unwrap();
        assert!(h["mismatches"].as_array().unwrap().is_empty(), "{h}");
        for p in [&ann, &ben, &cid] {
            let listed = h["directory"].get(&p.login).is_some();
            let helper = h["helper"].get(&p.login).is_some();
            let real = can(p, host);
            assert_eq!(
                (listed, helper),
                (real, real),
                "{} on {host}: audit says {listed}/{helper}, ssh says {real}",
                p.login
            );
        }
    }
    let anomalies = audit["anomalies"].as_array().unwrap();
    assert!(
        anomalies
            .iter()
            .any(|a| a["kind"] == "expired-with-keys" && a["logins"][0] == cid.login.as_str()),
        "{anomalies:?}"
    );

    // slapd stopped: the valid person logs in from the cache, the expired one does not.
    slapd("systemctl stop slapd");
    let (ok_ann, _) = login_as(&ann.key, &ann.login, "bob");
    let (ok_cid, _) = login_as(&cid.key, &cid.login, "bob");
    slapd("systemctl start slapd");
    assert!(ok_ann, "ann logs in from the cache while slapd is stopped");
    assert!(!ok_cid, "cid stays out while slapd is stopped");

    // slapd hung (SIGSTOP): a login attempt is answered within 3 s (from the cache).
    std::thread::sleep(Duration::from_secs(31)); // forget the "directory down" memory
    slapd("pkill -STOP slapd");
    let (ok_hung, took) = login_as(&ann.key, &ann.login, "bob");
    let (_, took_ben) = login_as(&ben.key, &ben.login, "caribou");
    slapd("pkill -CONT slapd");
    assert!(ok_hung, "ann logs in from the cache while slapd hangs");
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    assert!(
        took_ben < Duration::from_secs(3),
        "refusal answered in {took_ben:?}"
    );

    // A key line cached before the date passed: the date is simulated by ageing the cache entry's
    // shadowExpire (the lab cannot move the clock); with slapd down it must not let ann in.
    std::thread::sleep(Duration::from_secs(31));
    assert!(can(&ann, "bob")); // refreshes the cache from the directory
    let out = root(&lab, "bob", &format!(
        "f=/var/cache/picaops-access/{}.json; sed -i 's/\"shadow_expire\":[0-9]*/\"shadow_expire\":{}/' $f && grep -c shadow_expire $f",
        ann.login,
        picaops::access::date::parse_date(&day(0)).unwrap()
    ));
    ok(&out, "age the cache entry");
    slapd("systemctl stop slapd");
    let refused = !can(&ann, "bob");
    slapd("systemctl start slapd");
    assert!(
        refused,
        "a cached entry whose date has passed lets nobody in"
    );

    // Revoke: refused at once (the cache lifetime, 6 h in the lab inventory, bounds the worst case
    // of an unreachable directory; the revoke push drops the cached entry, tested next).
    std::thread::sleep(Duration::from_secs(31));
    assert!(can(&ben, "alice"));
    ok(
        &lab.picaops(&["access", "revoke", &ben.login]),
        "revoke ben",
    );
    assert!(!can(&ben, "alice"), "revoked: refused at once");
    slapd("systemctl stop slapd");
    let refused = !can(&ben, "alice");
    slapd("systemctl start slapd");
    assert!(
        refused,
        "revoked and slapd down: the pushed sync dropped ben's cache entry"
    );
    let out = root(
        &lab,
        "alice",
        &format!("getent shadow {} | cut -d: -f8", ben.login),
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "1",
        "ben's local account is expired too"
    );
}

#[test]
fn a_guarded_change_that_breaks_login_is_rolled_back() {
    let Some(lab) = common::lab("access_lab rollback") else {
        return;
    };
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/access/break-login.yml");
    let out = lab.picaops(&[
        "-o",
        "json",
        "apply",
        book.to_str().unwrap(),
        "-l",
        "caribou",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    let err = common::host(&report, "caribou")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("put back") && err.contains("logging in works again"),
        "{err}"
    );
    // The file is gone and logging in works.
    let out = root(&lab, "caribou", "test -e /etc/ssh/sshd_config.d/05-picaops-test-lockout.conf && echo STILL-THERE || echo gone");
    assert_eq!(text(&out.stdout).trim(), "gone");
    let out = lab.picaops(&["run", "-l", "caribou", "--", "true"]);
    ok(&out, "login after the rollback");
}
