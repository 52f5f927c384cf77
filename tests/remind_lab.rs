//! Reminders before access ends, on the lab: people granted in the real slapd with end dates 30,
//! 7 and 1 day(s) ahead, `picaops access remind` from the workstation and from the timer apply
//! installs on caribou, the mail read from the Maildir of the lab's exim (STARTTLS + AUTH), and
//! the digest received by a webhook server in this test (on the workstation's address on the
//! Compiègne network, which caribou reaches). One test, in order: each step builds on the
//! directory and the records the previous ones left.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{json, ok, root, text, wait_for};
use picaops::date;
use picaops::lab::inventory::SMTP_PASSWORD;

/// The lab's renewal policy (src/lab/inventory.rs).
const SEMESTERS: [(u32, u32); 2] = [(2, 15), (9, 1)];

/// A webhook server: each POST's body, as received.
fn webhook() -> (String, Receiver<String>) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut w = stream;
            let _ =
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    let gateway = picaops::lab::topology::site("compiegne").unwrap().gateway;
    let token = format!("remind-test-token-{}", std::process::id());
    (format!("http://{gateway}:{port}/hooks/{token}"), rx)
}

/// Every mail delivered to `address` in the lab's Maildir.
fn mails_to(address: &str) -> Vec<String> {
    let script = format!(
        "cd /var/mail/picaops-lab/new 2>/dev/null || exit 0; for f in $(grep -l -x -F 'Envelope-to: {address}' -- * 2>/dev/null); do cat \"$f\"; printf '\\001'; done"
    );
    let out = Command::new("docker")
        .args(["exec", "picaops-lab-ldap", "sh", "-c", &script])
        .output()
        .expect("docker exec");
    ok(&out, "read the Maildir");
    text(&out.stdout)
        .split('\u{1}')
        .filter(|m| !m.trim().is_empty())
        .map(String::from)
        .collect()
}

/// `picaops -i INVENTORY ARGS` with the workstation's record under `state`; also fails the
/// test if the SMTP password is on any process's command line while it runs.
fn remind_run(inventory: &Path, state: &Path, args: &[&str]) -> Output {
    let mut child = common::picaops()
        .arg("-i")
        .arg(inventory)
        .args(args)
        .env("XDG_STATE_HOME", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picaops runs");
    // Proof that the watch overlapped the run: picaops's own command line was seen.
    let own = format!("/proc/{}/cmdline", child.id());
    let mut seen_picaops = false;
    while child.try_wait().unwrap().is_none() {
        seen_picaops |= std::fs::read(&own).is_ok_and(|c| !c.is_empty());
        assert!(
            !all_command_lines().contains(SMTP_PASSWORD),
            "the SMTP password is on a command line"
        );
    }
    assert!(
        seen_picaops,
        "the run ended before its command line could be read"
    );
    let out = child.wait_with_output().unwrap();
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !text(stream).contains(SMTP_PASSWORD),
            "the password in the output"
        );
    }
    out
}

fn all_command_lines() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&bytes).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

/// The reminders of `logins` in a run's JSON, by login: (status, threshold).
fn ours(doc: &serde_json::Value, logins: &[&str]) -> Vec<(String, String, u64)> {
    doc["reminders"]
        .as_array()
        .expect("reminders")
        .iter()
        .filter(|r| logins.contains(&r["login"].as_str().unwrap_or("")))
        .map(|r| {
            (
                r["login"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["threshold"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn grant(inventory: &Path, login: &str, days: i64, mail: Option<&str>) {
    let until = date::format_day(date::today() + days);
    let mut args = vec![
        "access", "grant", login, "--level", "member", "--until", &until,
    ];
    args.extend(["--name", "Remind Test", "--no-push"]);
    if let Some(m) = mail {
        args.extend(["--mail", m]);
    }
    ok(&common::picaops_on(inventory, &args), "grant");
}

/// The command the mail must give: extend to the policy's deadline after the last day.
fn extend_command(login: &str, days: i64) -> String {
    let deadline = date::next_semester_deadline(date::today() + days, &SEMESTERS, 30).unwrap();
    format!(
        "picaops access extend {login} --until {}",
        date::format_day(deadline)
    )
}

/// Checks the one mail `login` got: recipient, threshold, end date, the exact command.
fn check_mail(login: &str, days: i64) {
    let address = format!("{login}@lab.picasoft.test");
    let mails = wait_for(
        &format!("the reminder to {address}"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Some(mails_to(&address)).filter(|m| !m.is_empty()),
    );
    assert_eq!(mails.len(), 1, "exactly one mail to {address}: {mails:#?}");
    let m = &mails[0];
    let until = date::format_day(date::today() + days);
    let when = if days == 1 {
        "in 1 day".to_string()
    } else {
        format!("in {days} days")
    };
    assert!(
        m.contains(&format!("\nTo: \"Remind Test\" <{address}>")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "\nSubject: Your Picasoft access ends on {until} ({when})"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("\n    {}\n", extend_command(login, days))),
        "{m}"
    );
    // It came in over TLS, authenticated (exim's Received: line says esmtpsa).
    assert!(m.contains("with esmtpsa"), "{m}");
}

/// A copy of the lab inventory whose reminders post to `hook` (a secret of the lab's store)
/// and use the SMTP password secret `password`.
fn inventory_with(lab: &common::Lab, name: &str, hook: &str, password: &str) -> PathBuf {
    let inv = common::inventory_copy(lab, name, false);
    let access = std::fs::read_to_string(inv.join("access.yml")).unwrap();
    assert!(access.contains("  remind:\n") && access.contains("password: smtp-picaops\n"));
    let access = access
        .replace(
            "  remind:\n",
            &format!("  remind:\n    mattermost_webhook: {hook}\n    webhook_plain_http: true\n"),
        )
        .replace(
            "password: smtp-picaops\n",
            &format!("password: {password}\n"),
        );
    std::fs::write(inv.join("access.yml"), access).unwrap();
    inv
}

fn write_secret(lab: &common::Lab, name: &str, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = lab.dir.join("secrets").join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn digest(rx: &Receiver<String>, from: &str) -> String {
    let body = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no digest from {from} within 30 s"));
    let doc: serde_json::Value = serde_json::from_str(&body).expect("the digest is JSON");
    doc["text"].as_str().expect("{\"text\": …}").to_string()
}

#[test]
fn people_are_mailed_before_their_access_ends_once_per_threshold() {
    let Some(lab) = common::lab("remind_lab") else {
        return;
    };
    let started = Instant::now();
    let pid = std::process::id();
    let login = |what: &str| format!("rm{pid}-{what}");
    let (a, b, c, d, e, f) = (
        login("a30"),
        login("b7"),
        login("c1"),
        login("d7"),
        login("e7"),
        login("f1"),
    );
    let logins = [
        a.as_str(),
        b.as_str(),
        c.as_str(),
        d.as_str(),
        e.as_str(),
        f.as_str(),
    ];
    let mail = |l: &str| format!("{l}@lab.picasoft.test");
    let (url, hook) = webhook();
    let hook_secret = format!("remind-test-hook-{pid}");
    let wrong_secret = format!("remind-test-wrong-{pid}");
    write_secret(&lab, &hook_secret, &url);
    write_secret(&lab, &wrong_secret, "not-the-lab-password");
    let inv = inventory_with(&lab, "remind", &hook_secret, "smtp-picaops");
    let state = tempfile::tempdir().unwrap();

    for (l, days) in [(&a, 30), (&b, 7), (&c, 1)] {
        grant(&inv, l, days, Some(&mail(l)));
    }
    grant(&inv, &d, 7, None);

    // --dry-run: who would get what; nothing is sent, posted or recorded.
    let out = remind_run(
        &inv,
        state.path(),
        &["-o", "json", "access", "remind", "--dry-run"],
    );
    ok(&out, "remind --dry-run");
    let doc = json(&out);
    let want = |status: &str| {
        vec![
            (a.clone(), status.to_string(), 30),
            (b.clone(), status.to_string(), 7),
            (c.clone(), status.to_string(), 1),
            (d.clone(), "not_mailed".to_string(), 7),
        ]
    };
    assert_eq!(ours(&doc, &logins), want("would_send"), "{doc:#}");
    assert_eq!(doc["digest"], "would post");
    let record = state.path().join("picaops/remind/sent.json");
    assert!(!record.exists(), "a dry run records nothing");

    // From the workstation: each person gets their threshold's mail, the team one digest.
    let t = Instant::now();
    let out = remind_run(&inv, state.path(), &["-o", "json", "access", "remind"]);
    ok(&out, "remind");
    eprintln!("workstation run: {:?}", t.elapsed());
    let doc = json(&out);
    assert_eq!(ours(&doc, &logins), want("sent"), "{doc:#}");
    assert_eq!(doc["digest"], "posted", "{doc:#}");
    for (l, days) in [(&a, 30), (&b, 7), (&c, 1)] {
        check_mail(l, days);
    }
    assert!(mails_to(&mail(&d)).is_empty());
    let text = digest(&hook, "the workstation");
    for (l, days) in [(&a, 30), (&b, 7), (&c, 1)] {
        assert!(text.contains(&format!("- {l} (Remind Test)")), "{text}");
        assert!(
            text.contains(&format!("`{}`", extend_command(l, days))),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!("- {d} ")) && text.contains("**not mailed**"),
        "{text}"
    );

    // A second run the same day sends nothing, posts nothing.
    let out = remind_run(&inv, state.path(), &["-o", "json", "access", "remind"]);
    ok(&out, "second remind");
    let doc = json(&out);
    assert_eq!(ours(&doc, &logins), [], "{doc:#}");
    assert_eq!(doc["digest"], "nothing to say", "{doc:#}");

    // A wrong SMTP password: a clear error, nothing recorded; the next good run sends.
    grant(&inv, &e, 7, Some(&mail(&e)));
    let bad = inventory_with(&lab, "remind-badpw", &hook_secret, &wrong_secret);
    let out = remind_run(&bad, state.path(), &["access", "remind"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out.stderr));
    let err = common::text(&out.stderr);
    assert!(
        err.contains("172.30.2.20:587") && err.contains("535") && err.contains("smtp.password"),
        "{err}"
    );
    assert!(err.contains("neither sent nor recorded"), "{err}");
    assert!(
        !err.contains("not-the-lab-password")
            && !common::text(&out.stdout).contains("not-the-lab-password")
    );
    let sent = std::fs::read_to_string(&record).unwrap();
    assert!(!sent.contains(&e), "recorded although refused: {sent}");
    // The digest still tells the team what failed.
    let text = digest(&hook, "the failed run");
    assert!(
        text.contains(&format!("- {e} ")) && text.contains("**mail failed**"),
        "{text}"
    );
    let out = remind_run(&inv, state.path(), &["-o", "json", "access", "remind"]);
    ok(&out, "remind after the failure");
    assert_eq!(ours(&json(&out), &logins), [(e.clone(), "sent".into(), 7)]);
    check_mail(&e, 7);
    let _ = digest(&hook, "the run after the failure");

    // The timer apply installs on caribou. The people above are renewed (no longer due
    // anywhere); f ends tomorrow.
    for l in [&a, &b, &c, &d, &e] {
        let until = date::format_day(date::today() + 200);
        let out = common::picaops_on(
            &inv,
            &["access", "extend", l, "--until", &until, "--no-push"],
        );
        ok(&out, "extend");
    }
    grant(&inv, &f, 1, Some(&mail(&f)));
    let t = Instant::now();
    let out = common::picaops_on(
        &inv,
        &[
            "apply",
            "--limit",
            "caribou",
            "--lock-wait",
            "300",
            "playbooks/base/remind.yml",
        ],
    );
    ok(&out, "apply remind.yml");
    eprintln!("apply remind.yml on caribou: {:?}", t.elapsed());
    let installed = root(
        &lab,
        "caribou",
        "cat /etc/picaops/remind/remind.json /etc/systemd/system/picaops-access-remind.*; stat -c '%a %U' /etc/picaops/remind/smtp.secret",
    );
    ok(&installed, "read what apply installed");
    let installed = common::text(&installed.stdout);
    assert!(!installed.contains(SMTP_PASSWORD), "{installed}");
    assert!(installed.contains("access remind --config /etc/picaops/remind/remind.json"));
    assert!(installed.trim_end().ends_with("600 root"), "{installed}");

    // Start the service (systemctl waits for a oneshot) while a loop on caribou reads every
    // command line. Its patterns come from files, so the loop's own command lines hold neither:
    // the password from the installed secret file, and `access remind --config`, whose sight
    // proves the loop overlapped the run.
    let out = root(
        &lab,
        "caribou",
        "printf '%s\\n' 'access remind --config' > /tmp/remind-scan.pat",
    );
    ok(&out, "write the scan's pattern");
    let t = Instant::now();
    let script = "unit=picaops-access-remind.service; rm -f /tmp/remind-scan.password /tmp/remind-scan.picaops /tmp/remind-scan.stop /tmp/remind-scan.now; \
         ( while [ ! -e /tmp/remind-scan.stop ]; do \
             cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' > /tmp/remind-scan.now; \
             grep -q -F -f /etc/picaops/remind/smtp.secret /tmp/remind-scan.now && touch /tmp/remind-scan.password; \
             grep -q -F -f /tmp/remind-scan.pat /tmp/remind-scan.now && touch /tmp/remind-scan.picaops; \
           done ) & \
         systemctl start $unit; touch /tmp/remind-scan.stop; wait; \
         echo password=$(test -e /tmp/remind-scan.password && echo seen || echo unseen); \
         echo picaops=$(test -e /tmp/remind-scan.picaops && echo seen || echo unseen); \
         systemctl show -p Result -p ExecMainStatus -p InvocationID $unit";
    let out = root(&lab, "caribou", script);
    ok(&out, "run the reminder service");
    eprintln!("the service's run on caribou: {:?}", t.elapsed());
    let said = common::text(&out.stdout);
    assert!(
        said.contains("password=unseen\npicaops=seen\n"),
        "the password on a command line on caribou, or the run unseen: {said}"
    );
    assert!(
        said.contains("Result=success") && said.contains("ExecMainStatus=0"),
        "{said}"
    );
    let invocation = said
        .lines()
        .find_map(|l| l.strip_prefix("InvocationID="))
        .expect("an invocation id")
        .to_string();
    // journald takes the service's lines a moment after it exits: wait for its last one.
    let journal = wait_for(
        "the service's output in caribou's journal",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let cmd = format!("journalctl _SYSTEMD_INVOCATION_ID={invocation} -o cat --no-pager");
            let out = common::text(&root(&lab, "caribou", &cmd).stdout);
            out.contains("record: ").then_some(out)
        },
    );
    assert!(!journal.contains(SMTP_PASSWORD), "{journal}");
    assert!(journal.contains(&format!("mailed     {f}")), "{journal}");
    check_mail(&f, 1);
    let text = digest(&hook, "caribou");
    assert!(text.contains(&format!("- {f} (Remind Test)")), "{text}");
    for l in [&a, &b, &c, &d, &e] {
        assert!(
            !text.contains(&format!("- {l} ")),
            "renewed, yet reminded: {text}"
        );
    }

    // The service again: nothing new; caribou's record has f once, root-only.
    let out = root(
        &lab,
        "caribou",
        "systemctl start picaops-access-remind.service && stat -c '%a %U' /var/lib/picaops/remind/sent.json && cat /var/lib/picaops/remind/sent.json",
    );
    ok(&out, "second run of the service");
    let said = common::text(&out.stdout);
    assert!(said.starts_with("600 root\n"), "{said}");
    assert_eq!(
        said.matches(&format!("\"login\": \"{f}\"")).count(),
        1,
        "{said}"
    );
    assert_eq!(mails_to(&mail(&f)).len(), 1);

    // Leave the lab as it was: nobody of this test is reminded again, caribou's timer back to the
    // lab's own settings (no webhook of a test that is gone).
    for l in logins {
        ok(
            &common::picaops_on(&inv, &["access", "revoke", l, "--no-push"]),
            "revoke",
        );
    }
    let out = lab.picaops(&[
        "apply",
        "--limit",
        "caribou",
        "--lock-wait",
        "300",
        "playbooks/base/remind.yml",
    ]);
    ok(&out, "apply the lab's own remind.yml");
    assert!(
        hook.try_recv().is_err(),
        "a digest more than the runs that had something to say"
    );
    for s in [&hook_secret, &wrong_secret] {
        let _ = std::fs::remove_file(lab.dir.join("secrets").join(s));
    }
    for dir in [&inv, &bad] {
        let _ = std::fs::remove_dir_all(dir);
    }
    eprintln!("remind_lab: {:?} in all", started.elapsed());
}
