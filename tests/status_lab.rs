//! `picaops status` on the lab: every machine, service and backup job of the inventory appears,
//! the exit code agrees with what needs a human, a person whose access ends in 10 days is
//! listed, and a stopped machine is reported unreachable with the time `status` last read it
//! (and painted red on the HTML page). Needs `picaops lab up` (see tests/common).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{json, ok, picaops, text, Lab};
use serde_json::Value;

fn day(offset_days: i64) -> String {
    picaops::date::format_day(picaops::date::today() + offset_days)
}

/// Starts the stopped machine again and revokes the person, whatever the test did.
struct Cleanup<'a> {
    lab: &'a Lab,
    stopped: Option<&'static str>,
    login: &'static str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.stopped {
            let _ = self.lab.picaops(&["lab", "start", h]);
        }
        let _ = self.lab.picaops(&["access", "revoke", self.login]);
    }
}

fn names(doc: &Value, list: &str, key: &str) -> BTreeSet<String> {
    doc[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {doc}"))
        .iter()
        .map(|r| r[key].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn status_shows_the_whole_lab_and_since_when_a_stopped_machine_is_gone() {
    let Some(lab) = common::lab("status_lab") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yml");
    let status = |extra: &[&str]| -> Output {
        picaops()
            .env("XDG_STATE_HOME", state.path())
            .arg("-i")
            .arg(&lab.inventory)
            .args(["-q", "-o", "json", "status"])
            .arg(&playbook)
            .args(extra)
            .output()
            .unwrap()
    };
    let mut cleanup = Cleanup {
        lab: &lab,
        stopped: None,
        login: "status-t1",
    };

    // A person whose access ends in 10 days.
    let keys = tempfile::tempdir().unwrap();
    let key: PathBuf = keys.path().join("status-t1");
    let gen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "status-t1", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", text(&gen.stderr));
    let pubkey = key.with_extension("pub");
    let grant = lab.picaops(&[
        "access",
        "grant",
        "status-t1",
        "--level",
        "member",
        "--key",
        pubkey.to_str().unwrap(),
        "--until",
        &day(10),
        "--hosts",
        "bob",
    ]);
    ok(&grant, "grant status-t1");

    let inventory = json(&lab.picaops(&["-o", "json", "inventory", "show"]));
    let machines: BTreeSet<String> = ["hosts", "vms"]
        .iter()
        .flat_map(|k| {
            inventory[k]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys().cloned())
        })
        .collect();
    let services: BTreeSet<String> = inventory["services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let jobs: BTreeSet<String> = inventory["backups"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();

    let first = status(&[]);
    let doc = json(&first);
    let needs = doc["needs_human"].as_array().expect("needs_human");
    assert_eq!(
        first.status.code() == Some(0),
        needs.is_empty(),
        "the exit code agrees with what needs a human: {needs:?}"
    );
    assert_eq!(names(&doc, "machines", "machine"), machines);
    assert_eq!(names(&doc, "services", "service"), services);
    assert_eq!(names(&doc, "backups", "job"), jobs);
    let generated = doc["generated"].as_str().unwrap().to_string();
    for m in doc["machines"].as_array().unwrap() {
        assert_eq!(m["reachable"], true, "{m}");
        assert_eq!(m["last_seen"], generated.as_str(), "{m}");
    }
    let ending = &doc["access_ending"];
    let t1 = ending
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["login"] == "status-t1")
        .unwrap_or_else(|| panic!("status-t1 is not listed as ending: {ending}"));
    // `--until` is the last day that works.
    assert_eq!(t1["last_day"], day(10).as_str(), "{t1}");
    assert_eq!(t1["days_left"], 10, "{t1}");
    assert!(needs
        .iter()
        .any(|n| n.as_str().unwrap_or_default().contains("status-t1")));

    // caribou stops answering: unreachable, last seen at the first run.
    ok(
        &lab.picaops(&["lab", "stop", "caribou"]),
        "lab stop caribou",
    );
    cleanup.stopped = Some("caribou");
    let page = state.path().join("status.html");
    let second = status(&["--connect-timeout", "3", "--html", page.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    let doc = json(&second);
    let row = |name: &str| {
        doc["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["machine"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {doc}"))
    };
    assert_eq!(row("caribou")["reachable"], false);
    assert_eq!(row("caribou")["last_seen"], generated.as_str());
    assert_eq!(row("alice")["reachable"], true);
    let said = format!("caribou cannot be read (last seen {generated})");
    assert!(
        doc["needs_human"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str() == Some(said.as_str())),
        "{}",
        doc["needs_human"]
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let machines_table = html.split("<table id=\"machines\"").nth(1).unwrap();
    let caribou = machines_table
        .split("<tr")
        .find(|r| r.contains("<td>caribou</td>"))
        .expect("caribou has a row on the page");
    assert!(caribou.starts_with(" class=\"bad\""), "<tr{caribou}");
    drop(cleanup);
}
