//! Access on the lab: a real slapd (openssh-lpk, nis, ldapns schemas), real sshd's asking the
//! picaops-access helper, real `ssh` logins. One test, in order, because each step builds on the
//! directory and the hosts the previous one left. Instead of waiting out the helper's memory of
//! a failed directory call (DOWN_MEMORY_SECS), the tests remove its memory file.

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

/// Waits until `host`'s sshd accepts a connection from us again. OpenSSH 10 penalises a source
/// for failed logins (PerSourcePenalties, 5 s each, blocking from 15 s on), and the refusals
/// tested here are failed logins: without this, a later refusal could come from the penalty
/// instead of the helper, and an allowed login could be dropped.
fn sshd_accepts(lab: &common::Lab, host: &str) {
    static WAITED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    while !root(lab, host, "true").status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "sshd on {host} refuses our connections for 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let total = WAITED_MS.fetch_add(
        started.elapsed().as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    if started.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "waited {:?} for sshd on {host} to accept us again ({} ms in all)",
            started.elapsed(),
            total + started.elapsed().as_millis() as u64
        );
    }
}

/// A real login of `p` on `host` (after making sure sshd is not refusing us for earlier failures).
fn can(lab: &common::Lab, p: &Person, host: &str) -> bool {
    sshd_accepts(lab, host);
    login_as(&p.key, &p.login, host).0
}

fn slapd(action: &str) {
    let out = Command::new("docker")
        .args(["exec", "picaops-lab-ldap", "sh", "-c", action])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "{action}: {}", text(&out.stderr));
}

/// Changes the lab's directory as its admin (ldapmodify in the ldap container, plain LDAP on
/// localhost): what `picaops access` would never write, written anyway.
fn ldapmodify(lab: &common::Lab, ldif: &str) {
    let pw = std::fs::read_to_string(lab.dir.join("secrets/ldap-admin")).unwrap();
    let script = format!(
        "umask 077; printf %s '{}' > /tmp/picaops-test-pw; ldapmodify -x -H ldap://localhost -D cn=admin,dc=picasoft,dc=net -y /tmp/picaops-test-pw <<'EOF'\n{ldif}\nEOF\nrc=$?; rm -f /tmp/picaops-test-pw; exit $rc",
        pw.trim()
    );
    slapd(&script);
}

/// Makes the helper on `host` forget that the directory failed a moment ago (instead of
/// waiting out its DOWN_MEMORY_SECS), so the next call asks the directory again.
fn forget_down(lab: &common::Lab, host: &str) {
    let out = root(
        lab,
        host,
        &format!(
            "rm -f /var/cache/picaops-access/{}",
            picaops::access::host::DOWN_MARKER
        ),
    );
    ok(&out, "remove the helper's memory file");
}

/// `picaops-access keys LOGIN` run as sshd runs it on `host`: its output and how long it took,
/// measured on the host.
fn keys_on(lab: &common::Lab, host: &str, login: &str) -> (String, Duration) {
    let out = root(
        lab,
        host,
        &format!(
            "s=$(date +%s%N); /usr/local/sbin/picaops-access keys {login} > /tmp/picaops-keys; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); cat /tmp/picaops-keys"
        ),
    );
    ok(&out, "picaops-access keys");
    let stdout = text(&out.stdout);
    let (ms, keys) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    (
        keys.to_string(),
        Duration::from_millis(ms.trim().parse().unwrap()),
    )
}

/// Edits `login`'s cache entry on `host` with a sed expression; asserts it matched.
fn edit_cache(lab: &common::Lab, host: &str, login: &str, sed: &str, must_match: &str) {
    let out = root(
        lab,
        host,
        &format!(
            "f=/var/cache/picaops-access/{login}.json; grep -q '{must_match}' $f && sed -i '{sed}' $f && cat $f"
        ),
    );
    ok(&out, &format!("edit the cache entry of {login} on {host}"));
}

/// The lab is shared: another session's `apply` may install its own build of the helper while
/// this test runs. On a failure, this says whether that happened (the failure may be theirs).
struct HelperWatch<'a> {
    lab: &'a common::Lab,
    ours: String,
}

fn helper_sum(lab: &common::Lab, host: &str) -> String {
    let out = root(lab, host, "sha256sum /usr/local/sbin/picaops-access");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

impl<'a> HelperWatch<'a> {
    fn new(lab: &'a common::Lab) -> Self {
        let out = Command::new("sha256sum")
            .arg(env!("CARGO_BIN_EXE_picaops-access"))
            .output()
            .unwrap();
        let ours = text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        for h in ["bob", "alice", "caribou"] {
            assert_eq!(
                helper_sum(lab, h),
                ours,
                "apply installed this build's helper on {h}"
            );
        }
        HelperWatch { lab, ours }
    }
}

impl Drop for HelperWatch<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for h in ["bob", "alice", "caribou"] {
            if helper_sum(self.lab, h) != self.ours {
                eprintln!("NOTE: the helper on {h} is no longer the one this test installed: another session applied access.yml meanwhile, and the failure above may come from its build");
            }
        }
    }
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
    let dan = person(tmp.path(), &format!("dan{run}"));
    let eve = person(tmp.path(), &format!("eve{run}"));
    let mallory = format!("mallory{run}");

    // The hosts enforce access (helper, job file, timer, sshd) — and a second apply changes nothing.
    // Other lab tests may be applying: wait for their run lock rather than fail.
    let out = lab.picaops(&["apply", "--lock-wait", "300", "playbooks/base/access.yml"]);
    ok(&out, "apply access.yml");
    let out = lab.picaops(&["-o", "json", "plan", "playbooks/base/access.yml"]);
    assert_eq!(json(&out)["changes"], 0, "a second plan changes nothing");
    let _watch = HelperWatch::new(&lab);
    for h in ["bob", "alice", "caribou"] {
        forget_down(&lab, h);
    }

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
        &g(&cid, &["--until", &day(30), "--hosts", "bob"]),
        "grant cid",
    );
    for p in [&dan, &eve] {
        ok(&g(p, &["--until", &day(30), "--hosts", "bob"]), "grant");
    }
    assert!(can(&lab, &ann, "bob"), "ann is granted on bob");
    assert!(!can(&lab, &ann, "alice"), "ann is not granted on alice");
    assert!(can(&lab, &ben, "alice"));
    assert!(
        can(&lab, &cid, "bob"),
        "cid logs in while valid (and is cached)"
    );
    let out = root(
        &lab,
        "bob",
        &format!(
            "test -f /var/cache/picaops-access/{}.json && echo cached",
            cid.login
        ),
    );
    assert_eq!(text(&out.stdout).trim(), "cached", "cid is in bob's cache");

    // A date before today is refused (a typo such as 1027 for 2027 used to mean forever);
    // --cut-off-now says it is meant, and cid cannot log in from now on.
    let out = lab.picaops(&["access", "extend", &cid.login, "--until", &day(-1)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(can(&lab, &cid, "bob"), "the refused extend changed nothing");
    ok(
        &lab.picaops(&[
            "access",
            "extend",
            &cid.login,
            "--until",
            &day(-1),
            "--cut-off-now",
            // No push: bob keeps cid's local account and cache entry until the helper itself
            // learns the new date from the directory (the next login, just below).
            "--no-push",
        ]),
        "cut cid off",
    );
    assert!(!can(&lab, &cid, "bob"), "cid's access has ended");

    // slapd stopped: ann logs in from the cache; cid, cached while valid and then cut off (the
    // helper dropped the entry when the directory refused them), does not.
    // Right away, before any other change pushes a sync to bob (which would lock cid's
    // account and drop the entry too).
    slapd("systemctl stop slapd");
    let ok_ann = can(&lab, &ann, "bob");
    let ok_cid = can(&lab, &cid, "bob");
    slapd("systemctl start slapd");
    forget_down(&lab, "bob");
    assert!(ok_ann, "ann logs in from the cache while slapd is stopped");
    assert!(!ok_cid, "cid stays out while slapd is stopped");

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
    sshd_accepts(&lab, "bob");
    assert!(!login_as(&ann.key, "*)(uid=*", "bob").0);

    // What `picaops access` never writes, written into the real slapd: an end date that is no
    // day count (-2; slapd's INTEGER syntax refuses text, dates and fractions, which
    // tests/access_helper.rs sends from a fake), and a second uid on an entry.
    assert!(can(&lab, &dan, "bob"), "positive control: dan logs in");
    let (eve_keys, _) = keys_on(&lab, "bob", &eve.login);
    assert!(
        eve_keys.contains("ssh-ed25519"),
        "positive control: eve's key is served"
    );
    ldapmodify(
        &lab,
        &format!(
            "dn: uid={},ou=People,dc=picasoft,dc=net\nchangetype: modify\nreplace: shadowExpire\nshadowExpire: -2\n\ndn: uid={},ou=People,dc=picasoft,dc=net\nchangetype: modify\nadd: uid\nuid: {mallory}",
            dan.login, eve.login
        ),
    );
    assert!(
        !can(&lab, &dan, "bob"),
        "shadowExpire -2 is not 'never': dan is refused"
    );
    assert_eq!(
        keys_on(&lab, "bob", &dan.login).0,
        "",
        "no key for shadowExpire -2"
    );
    assert_eq!(
        keys_on(&lab, "bob", &mallory).0,
        "",
        "eve's entry, found by its second uid, serves no key to {mallory}"
    );
    assert_eq!(
        keys_on(&lab, "bob", &eve.login).0,
        "",
        "an entry with two uids serves nobody"
    );

    // `access list` and `access audit` agree with what ssh allows, host by host.
    let audit = json(&lab.picaops(&["-o", "json", "access", "audit", "-l", "bob,alice,caribou"]));
    for h in audit["hosts"].as_array().unwrap() {
        let host = h["host"].as_str().unwrap();
        assert!(h["mismatches"].as_array().unwrap().is_empty(), "{h}");
        for p in [&ann, &ben, &cid, &dan] {
            let listed = h["directory"].get(&p.login).is_some();
            let helper = h["helper"].get(&p.login).is_some();
            // What sshd gets from the helper (the real logins above and below show it is what
            // ssh does; twelve real logins here, half of them refused, would get us penalised).
            let real = keys_on(&lab, host, &p.login).0.contains("ssh-ed25519");
            assert_eq!(
                (listed, helper),
                (real, real),
                "{} on {host}: audit says {listed}/{helper}, ssh says {real}",
                p.login
            );
        }
    }
    let anomalies = audit["anomalies"].as_array().unwrap();
    let flagged = |kind: &str, login: &str| {
        anomalies
            .iter()
            .any(|a| a["kind"] == kind && a["logins"][0] == login)
    };
    assert!(flagged("expired-with-keys", &cid.login), "{anomalies:?}");
    assert!(flagged("invalid-expiry", &dan.login), "{anomalies:?}");
    assert!(
        flagged(
            "broken-entry",
            &format!("uid={},ou=People,dc=picasoft,dc=net", eve.login)
        ),
        "eve's entry: {anomalies:?}"
    );
    // Put the directory back (revoke writes a real date; the second uid goes).
    ok(
        &lab.picaops(&["access", "revoke", &dan.login]),
        "revoke dan",
    );
    ldapmodify(
        &lab,
        &format!(
            "dn: uid={},ou=People,dc=picasoft,dc=net\nchangetype: modify\ndelete: uid\nuid: {mallory}",
            eve.login
        ),
    );
    ok(
        &lab.picaops(&["access", "revoke", &eve.login]),
        "revoke eve",
    );

    // slapd hung (SIGSTOP): a login is answered from the cache with at most 2 s more than the
    // same login with slapd running just before (one 1 s wait for the directory; the machine may
    // be loaded, so the bound is relative), and a login never waits twice: after one call waited
    // for the directory, the next goes to the cache at once, because of the memory file
    // (removing it makes the next call wait again).
    forget_down(&lab, "bob");
    forget_down(&lab, "caribou");
    sshd_accepts(&lab, "bob");
    sshd_accepts(&lab, "caribou");
    let (_, base) = login_as(&ann.key, &ann.login, "bob");
    slapd("pkill -STOP slapd");
    let (ok_hung, took) = login_as(&ann.key, &ann.login, "bob");
    let (_, took_ben) = login_as(&ben.key, &ben.login, "caribou");
    let (second, took_second) = keys_on(&lab, "bob", &ann.login);
    forget_down(&lab, "bob");
    let (third, took_third) = keys_on(&lab, "bob", &ann.login);
    slapd("pkill -CONT slapd");
    eprintln!(
        "slapd hung: login {took:?} (slapd running: {base:?}), refusal {took_ben:?}; helper calls: after a wait {took_second:?}, without the memory file {took_third:?}"
    );
    assert!(ok_hung, "ann logs in from the cache while slapd hangs");
    let bound = base + Duration::from_secs(2);
    assert!(
        took < bound,
        "answered in {took:?}, {base:?} with slapd running"
    );
    assert!(took_ben < bound, "refusal answered in {took_ben:?}");
    assert!(second.contains("ssh-ed25519") && third.contains("ssh-ed25519"));
    assert!(
        took_second < Duration::from_millis(400),
        "the call after a wait went to the cache at once: {took_second:?}"
    );
    assert!(
        took_third >= Duration::from_millis(900),
        "without the memory file the directory is waited for again: {took_third:?}"
    );

    // The cache lifetime (6 h in the lab inventory): with slapd stopped, an entry a little
    // younger is served, one a little older is not.
    forget_down(&lab, "bob");
    assert!(can(&lab, &ann, "bob")); // refreshes the cache from the directory
    let now = picaops::access::date::now_secs();
    let age = |secs: i64| format!("s/\"fetched_at\":[0-9]*/\"fetched_at\":{}/", now - secs);
    slapd("systemctl stop slapd");
    edit_cache(&lab, "bob", &ann.login, &age(6 * 3600 - 300), "fetched_at");
    let young = keys_on(&lab, "bob", &ann.login).0;
    edit_cache(&lab, "bob", &ann.login, &age(6 * 3600 + 1), "fetched_at");
    let old = keys_on(&lab, "bob", &ann.login).0;
    slapd("systemctl start slapd");
    assert!(
        young.contains("ssh-ed25519"),
        "an entry 5 h 55 min old is served"
    );
    assert_eq!(old, "", "an entry older than the cache lifetime is not");

    // A key line cached before the date passed: the date is simulated by ageing the cache entry's
    // shadowExpire (the lab cannot move the clock). With slapd down, the same fresh entry is
    // served before (positive control) and refused after.
    forget_down(&lab, "bob");
    assert!(can(&lab, &ann, "bob")); // refreshes the cache from the directory
    slapd("systemctl stop slapd");
    let served = can(&lab, &ann, "bob");
    edit_cache(
        &lab,
        "bob",
        &ann.login,
        &format!(
            "s/\"Until\":[0-9]*/\"Until\":{}/",
            picaops::access::date::parse_date(&day(0)).unwrap()
        ),
        "\"Until\":",
    );
    let refused = !can(&lab, &ann, "bob");
    slapd("systemctl start slapd");
    assert!(
        served,
        "ann is served from a fresh cache entry while slapd is down"
    );
    assert!(
        refused,
        "a cached entry whose date has passed lets nobody in"
    );

    // Revoke: refused at once (the cache lifetime bounds the worst case of an unreachable
    // directory; the revoke push drops the cached entry, tested next).
    forget_down(&lab, "alice");
    assert!(can(&lab, &ben, "alice"));
    ok(
        &lab.picaops(&["access", "revoke", &ben.login]),
        "revoke ben",
    );
    assert!(!can(&lab, &ben, "alice"), "revoked: refused at once");
    slapd("systemctl stop slapd");
    let refused = !can(&lab, &ben, "alice");
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
    for h in ["bob", "alice", "caribou"] {
        forget_down(&lab, h);
    }
}

/// sshd's journal on `host` since `since` (seconds since the epoch, the host's clock).
fn sshd_journal(lab: &common::Lab, host: &str, since: &str) -> String {
    let out = root(
        lab,
        host,
        &format!("journalctl -u ssh --no-pager -o cat --since @{since}"),
    );
    ok(&out, "journalctl");
    text(&out.stdout)
}

fn host_now(lab: &common::Lab, host: &str) -> String {
    text(&root(lab, host, "date +%s").stdout).trim().to_string()
}

#[test]
fn a_guarded_change_that_breaks_login_is_rolled_back() {
    let Some(lab) = common::lab("access_lab rollback") else {
        return;
    };
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/access/break-login.yml");
    let since = host_now(&lab, "caribou");
    let out = lab.picaops(&[
        "-o",
        "json",
        "apply",
        "--lock-wait",
        "300",
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
    // The bad file was on the host and in effect: sshd refused the guard's fresh login by it.
    let journal = sshd_journal(&lab, "caribou", &since);
    assert!(
        journal.contains("not allowed because not listed in AllowUsers"),
        "sshd never applied the bad file:\n{journal}"
    );
    // The file is gone and logging in works.
    let out = root(&lab, "caribou", "test -e /etc/ssh/sshd_config.d/05-picaops-test-lockout.conf && echo STILL-THERE || echo gone");
    assert_eq!(text(&out.stdout).trim(), "gone");
    let out = lab.picaops(&["run", "-l", "caribou", "--", "true"]);
    ok(&out, "login after the rollback");
}

#[test]
fn a_guarded_change_is_refused_when_the_break_glass_login_fails() {
    let Some(lab) = common::lab("access_lab break-glass") else {
        return;
    };
    // The lab inventory, with a break-glass key that root does not accept.
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inventory");
    std::fs::create_dir(&inv).unwrap();
    let lab_dir = format!("{}/", lab.dir.display());
    for f in std::fs::read_dir(&lab.inventory).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("../", &lab_dir);
        std::fs::write(inv.join(f.file_name().unwrap()), text).unwrap();
    }
    let wrong = person(tmp.path(), "wrong-glass");
    let access = inv.join("access.yml");
    let text0 = std::fs::read_to_string(&access).unwrap();
    let glass = format!("identity_file: {lab_dir}break-glass");
    assert!(text0.contains(&glass), "{text0}");
    std::fs::write(
        &access,
        text0.replace(&glass, &format!("identity_file: {}", wrong.key.display())),
    )
    .unwrap();
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/access/break-login.yml");
    let since = host_now(&lab, "caribou");
    let out = common::picaops_on(
        &inv,
        &[
            "-o",
            "json",
            "apply",
            book.to_str().unwrap(),
            "-l",
            "caribou",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    let err = common::host(&report, "caribou")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("break-glass login") && err.contains("will not change login settings"),
        "{err}"
    );
    // Nothing was written: no file, and sshd never refused anyone by it.
    let out = root(
        &lab,
        "caribou",
        "test -e /etc/ssh/sshd_config.d/05-picaops-test-lockout.conf && echo THERE || echo absent",
    );
    assert_eq!(text(&out.stdout).trim(), "absent");
    let journal = sshd_journal(&lab, "caribou", &since);
    assert!(
        !journal.contains("not listed in AllowUsers"),
        "the bad file was applied:\n{journal}"
    );
}
