//! Backups on the lab: real restic 0.18 (trixie) on the hosts, Toulouse (bob) to a directory on
//! alice, Compiègne (alice) to one on bob, both over SSH and append-only (rclone behind `picaops
//! backup host-serve`; tests/backup_append_only_lab.rs attacks them), a real PostgreSQL container on each
//! data host, the WAN router cut or slowed mid-backup, `kill -9`, a corrupted pack file and a
//! systemd timer that fires. Every step goes through `picaops apply` and `picaops backup …`.

mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{json, ok, root, text, Lab};
use serde_json::Value;

const DATA: &str = "/srv/lab-app/files";
const FILES: usize = 1000;
const FILE_KIB: usize = 100;

/// Prints "PACK-SHORT-ID OFFSET" of the pack holding f500's first blob in bob-app's latest file
/// snapshot (run on alice, which holds the repository).
const FIND_PACK: &str = r#"set -e
R="restic -r /srv/restic/bob --password-file /etc/picaops/backup/secrets/restic-bob --no-lock"
S=$($R snapshots --json --tag part=files --latest 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
B=$($R cat tree "$S:/srv/lab-app/files" | python3 -c 'import json,sys; print([n for n in json.load(sys.stdin)["nodes"] if n["name"] == "f500"][0]["content"][0])')
$R find --show-pack-id --blob "$B" 2>&1 | sed -n 's/.*Pack \([0-9a-f]*\): <Blob (data) [0-9a-f]*, offset \([0-9]*\).*/\1 \2/p' | head -1
"#;

/// `picaops backup ARGS… --output json` on the lab, asserting success.
fn backup(lab: &Lab, args: &[&str]) -> Value {
    let out = backup_raw(lab, args);
    ok(&out, &format!("picaops backup {}", args.join(" ")));
    json(&out)
}

fn backup_raw(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["--output", "json", "backup"];
    all.extend_from_slice(args);
    lab.picaops(&all)
}

fn sh(lab: &Lab, host: &str, cmd: &str) -> String {
    let out = root(lab, host, cmd);
    ok(&out, &format!("on {host}: {cmd}"));
    text(&out.stdout)
}

/// The lab's data on both data hosts: FILES random files and a running PostgreSQL with a table
/// (made once; later tests reuse them). Then apply installs the jobs and init the repositories.
/// Only bob-app and alice-app are these tests' jobs: the lab's others (hello's and notes' data)
/// belong to the services and site recovery tests, and fail while those services are not
/// deployed, so every command here names its two jobs.
fn prepare(lab: &Lab) {
    for host in ["bob", "alice"] {
        sh(
            lab,
            host,
            &format!(
                "set -e; mkdir -p {DATA}; cd {DATA}; \
                 if [ ! -f f{FILES} ]; then for i in $(seq 1 {FILES}); do head -c {} /dev/urandom > f$i; done; fi; \
                 if [ \"$(docker inspect -f '{{{{.State.Running}}}}' lab-db 2>/dev/null)\" != true ]; then \
                   docker rm -f lab-db >/dev/null 2>&1 || true; \
                   docker run -d --name lab-db -e POSTGRES_DB=app picaops-lab/postgres:17 >/dev/null; fi; \
                 for i in $(seq 1 60); do docker exec lab-db pg_isready -q -U postgres -h 127.0.0.1 && break; sleep 0.5; done; \
                 docker exec lab-db psql -q -U postgres -d app -c 'CREATE TABLE IF NOT EXISTS notes (id serial, body text)'",
                FILE_KIB * 1024
            ),
        );
    }
    let out = lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]);
    ok(&out, "apply --tags backup");
    backup(lab, &["init", "--job", "bob-app", "--job", "alice-app"]);
}

fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

fn snapshot_count(lab: &Lab, name: &str) -> usize {
    let doc = backup(lab, &["snapshots", "--job", name]);
    job(&doc, name)["snapshots"]
        .as_array()
        .expect("snapshots")
        .len()
}

#[test]
fn cross_site_backups_are_incremental_restorable_drilled_and_append_only() {
    let Some(lab) = common::lab("backup_lab") else {
        return;
    };
    prepare(&lab);
    backup(&lab, &["run", "--job", "bob-app", "--job", "alice-app"]);

    // 1% of the files change, and the database gets a row only the next snapshot has.
    for host in ["bob", "alice"] {
        sh(
            &lab,
            host,
            &format!(
                "cd {DATA} && for i in $(seq 1 {}); do head -c {} /dev/urandom > f$i; done && \
                 docker exec lab-db psql -q -U postgres -d app -c \"INSERT INTO notes (body) VALUES ('marker-{host}-$$')\"",
                FILES / 100,
                FILE_KIB * 1024
            ),
        );
    }
    let doc = backup(&lab, &["run", "--job", "bob-app", "--job", "alice-app"]);
    let total = (FILES * FILE_KIB * 1024) as f64;
    for name in ["bob-app", "alice-app"] {
        let r = &job(&doc, name)["result"];
        // The 10 files, plus the manifest shards holding their new hashes.
        assert_eq!(r["manifest_hashed"], 10, "{name}: {r}");
        let changed = r["files_changed"].as_u64().unwrap_or(0);
        assert!((10..=30).contains(&changed), "{name}: {r}");
        let added = r["bytes_added"].as_f64().expect("bytes_added");
        assert!(
            added > 0.005 * total && added < 0.03 * total,
            "{name}: changing 1% of the files added {added} bytes of {total}: {r}"
        );
    }

    // At the other site, with the data's site gone: the dump restored there has the new row.
    let out = backup_raw(
        &lab,
        &[
            "restore",
            "bob-app",
            "--host",
            "alice",
            "--dump",
            "postgres-lab-db-app.sql",
            "--to",
            "/tmp/bob-app.sql",
        ],
    );
    ok(&out, "restore the dump at the other site");
    let marker = sh(
        &lab,
        "bob",
        "docker exec lab-db psql -tA -U postgres -d app -c 'SELECT max(body) FROM notes'",
    );
    let restored = sh(&lab, "alice", "cat /tmp/bob-app.sql");
    assert!(
        restored.contains(marker.trim()),
        "the restored dump lacks {marker}"
    );
    // …and into a fresh database container there, which then answers queries.
    sh(
        &lab,
        "alice",
        "docker rm -f restored-bob >/dev/null 2>&1 || true",
    );
    backup(
        &lab,
        &[
            "restore",
            "bob-app",
            "--host",
            "alice",
            "--dump",
            "postgres-lab-db-app.sql",
            "--into-container",
            "restored-bob",
        ],
    );
    let rows = sh(
        &lab,
        "alice",
        &format!(
            "docker exec restored-bob psql -tA -U postgres -d app -c \"SELECT count(*) FROM notes WHERE body = '{}'\" && docker rm -f restored-bob >/dev/null",
            marker.trim()
        ),
    );
    assert_eq!(rows.trim(), "1", "the new container lacks the marker row");

    // Drills at the other site: every file against the manifest, the dump loaded into a
    // throwaway PostgreSQL.
    let doc = backup(&lab, &["drill", "--job", "bob-app", "--job", "alice-app"]);
    for (name, host) in [("bob-app", "bob"), ("alice-app", "alice")] {
        let d = &job(&doc, name)["result"][0];
        assert_eq!(d["ok"], true, "{d}");
        // Every file of the data directory: this test's FILES, and whatever else is there (the
        // README's `.ci/demo` writes notes into the same directory on the same lab).
        let on_host: u64 = sh(&lab, host, &format!("find {DATA} -type f | wc -l"))
            .trim()
            .parse()
            .expect("a count");
        assert!(on_host >= FILES as u64, "{host}: {on_host} files in {DATA}");
        assert_eq!(d["files"]["verified"].as_u64(), Some(on_host), "{d}");
        assert_eq!(d["dumps"][0]["ok"], true, "{d}");
    }

    // A corrupted pack file: check (reading the data) and the drill both fail loudly; with the
    // pack put back, check is clean again.
    // The pack holding f500's data in the latest snapshot, found with restic itself (the
    // biggest pack may hold only data no snapshot needs any more).
    let found = sh(&lab, "alice", FIND_PACK);
    let (short, offset) = found
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("no pack found: {found}"));
    let pack = sh(
        &lab,
        "alice",
        &format!("ls /srv/restic/bob/data/{}/{short}*", &short[..2]),
    );
    let pack = pack.trim();
    sh(
        &lab,
        "alice",
        &format!(
            "cp -p {pack} /root/pack.bak && printf 'picaops-corruption' | \
             dd of={pack} bs=1 seek=$(( {offset} + 100 )) conv=notrunc status=none"
        ),
    );
    let check = backup_raw(
        &lab,
        &["check", "--job", "bob-app", "--read-data-subset", "100%"],
    );
    let drill = backup_raw(&lab, &["drill", "--job", "bob-app"]);
    sh(
        &lab,
        "alice",
        &format!("cp -p /root/pack.bak {pack} && rm /root/pack.bak"),
    );
    assert_eq!(
        check.status.code(),
        Some(1),
        "check: {}",
        text(&check.stdout)
    );
    let c = json(&check);
    assert_eq!(job(&c, "bob-app")["ok"], false);
    assert!(!job(&c, "bob-app")["message"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    assert_eq!(
        drill.status.code(),
        Some(1),
        "drill: {}",
        text(&drill.stdout)
    );
    assert_eq!(job(&json(&drill), "bob-app")["ok"], false);
    backup(
        &lab,
        &["check", "--job", "bob-app", "--read-data-subset", "100%"],
    );

    // Retention runs from the repository's side (the data host cannot delete: see
    // tests/backup_append_only_lab.rs). All runs are from today: keep_daily keeps the newest,
    // and restic ≥ 0.17 also keeps the oldest while fewer days than asked exist, so a third run
    // makes sure a middle one is there to forget on a fresh repository.
    backup(&lab, &["run", "--job", "alice-app"]);
    let before = snapshot_count(&lab, "alice-app");
    let doc = backup(&lab, &["forget", "--job", "alice-app", "--prune"]);
    let forgot: usize = job(&doc, "alice-app")["result"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .map(|g| g["remove"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(forgot >= 2, "{doc}");
    assert_eq!(snapshot_count(&lab, "alice-app"), before - forgot);
    backup(&lab, &["check", "--job", "alice-app"]);

    // Status merges both sides: the run, the check and the drill are all there.
    let doc = backup(&lab, &["status", "--job", "bob-app", "--job", "alice-app"]);
    for name in ["bob-app", "alice-app"] {
        let j = job(&doc, name);
        assert_eq!(j["state"], "ok", "{j}");
    }
}

/// One job's places: its data host, and its repository's locks directory on the other site.
struct Side {
    job: &'static str,
    data: &'static str,
    repo: &'static str,
    locks: &'static str,
}

/// Toulouse's job (`kind: sftp`) and Compiègne's (`kind: rest`, under /srv/restic-rest).
const SFTP: Side = Side {
    job: "bob-app",
    data: "bob",
    repo: "alice",
    locks: "/srv/restic/bob/locks",
};
const REST: Side = Side {
    job: "alice-app",
    data: "alice",
    repo: "bob",
    locks: "/srv/restic-rest/alice/locks",
};

/// Starts `picaops backup run --job JOB` in the background.
fn start_run(lab: &Lab, side: &Side) -> Child {
    common::picaops()
        .arg("-i")
        .arg(&lab.inventory)
        .args(["--output", "json", "backup", "run", "--job", side.job])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picaops starts")
}

fn wan(lab: &Lab, args: &[&str]) {
    let mut all = vec!["lab", "wan"];
    all.extend_from_slice(args);
    ok(&lab.picaops(&all), "lab wan");
}

/// Pids of the real restic processes running `backup` on a host: their /proc comm is `restic`,
/// which the shell asking never is (`pgrep -f 'restic.*backup'` matched that shell's own command
/// line, so it "found" restic at once and the fault tests never waited for it).
const RESTIC_BACKUP_PIDS: &str =
    "for p in $(pgrep -x restic); do tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q ' backup ' && echo $p; done; true";

/// How many files a directory of the repository holds (0 when it does not exist).
fn count(lab: &Lab, host: &str, dir: &str) -> usize {
    sh(
        lab,
        host,
        &format!("find {dir} -type f 2>/dev/null | wc -l"),
    )
    .trim()
    .parse()
    .expect("a count")
}

/// New data the slowed link cannot send quickly, then a run started and proven mid-upload: its
/// restic process runs `backup` on the data host, its lock is in the repository, and at least one
/// new pack file has arrived there (64 MiB at 16 Mbit/s take about 30 s: several packs to go).
fn start_slow_run(lab: &Lab, side: &Side, tag: &str) -> Child {
    sh(
        lab,
        side.data,
        &format!("mkdir -p {DATA}/{tag} && head -c 64M /dev/urandom > {DATA}/{tag}/big"),
    );
    let data_dir = format!("{}/data", side.locks.trim_end_matches("/locks"));
    let packs = count(lab, side.repo, &data_dir);
    wan(lab, &["limit", "16mbit"]);
    let child = start_run(lab, side);
    let pids = common::wait_for(
        &format!("a restic backup process of {} on {}", side.job, side.data),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Some(sh(lab, side.data, RESTIC_BACKUP_PIDS)).filter(|p| !p.trim().is_empty()),
    );
    common::wait_for(
        &format!(
            "{}'s restic (pids {}) to lock the repository and upload a first pack into {data_dir} on {}",
            side.job,
            pids.trim(),
            side.repo
        ),
        Duration::from_secs(90),
        Duration::from_millis(300),
        || {
            (count(lab, side.repo, side.locks) > 0 && count(lab, side.repo, &data_dir) > packs)
                .then_some(())
        },
    );
    assert!(
        !sh(lab, side.data, RESTIC_BACKUP_PIDS).trim().is_empty(),
        "{}: restic finished before the fault could be injected",
        side.job
    );
    child
}

/// Right after a failed run: the restic lock of the interrupted backup is still in the repository
/// (the proof the fault hit it mid-backup, not before or after).
fn assert_lock_left(lab: &Lab, side: &Side) {
    let locks = count(lab, side.repo, side.locks);
    assert!(
        locks > 0,
        "{}: no restic lock in {} on {} after the fault: the backup was not interrupted",
        side.job,
        side.locks,
        side.repo
    );
}

/// After a failed run: the next one succeeds, check is clean, no restic lock is left.
fn assert_recovers(lab: &Lab, side: &Side, tag: &str) {
    let doc = backup(lab, &["run", "--job", side.job]);
    assert_eq!(job(&doc, side.job)["ok"], true, "{doc}");
    backup(lab, &["check", "--job", side.job]);
    let locks = count(lab, side.repo, side.locks);
    assert_eq!(locks, 0, "{}: a restic lock is left", side.job);
    sh(lab, side.data, &format!("rm -rf {DATA}/{tag}"));
}

#[test]
fn a_cut_link_or_a_kill_9_fails_the_run_in_bounded_time_and_the_next_run_recovers() {
    let Some(lab) = common::lab("backup_lab faults") else {
        return;
    };
    prepare(&lab);
    // The WAN cut, for each site's job (SSH keepalives end the run).
    for side in [&SFTP, &REST] {
        let child = start_slow_run(&lab, side, "cut");
        wan(&lab, &["cut"]);
        let cut_at = Instant::now();
        let out = child.wait_with_output().expect("picaops ends");
        let took = cut_at.elapsed();
        wan(&lab, &["restore"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            took < Duration::from_secs(60),
            "{}: the cut run took {took:?} to fail",
            side.job
        );
        let doc = json(&out);
        let message = job(&doc, side.job)["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(!message.is_empty(), "{doc}");
        assert_lock_left(&lab, side);
        eprintln!(
            "WAN cut, {}: the run failed {took:?} after the cut: {message}",
            side.job
        );
        assert_recovers(&lab, side, "cut");
    }

    // kill -9 of the whole job (picaops and restic) mid-upload.
    let child = start_slow_run(&lab, &SFTP, "kill");
    sh(
        &lab,
        "bob",
        "systemctl kill --signal=KILL picaops-backup-bob-app.service",
    );
    let out = child.wait_with_output().expect("picaops ends");
    wan(&lab, &["restore"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    common::wait_for(
        "the killed job's restic to be gone",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            sh(&lab, "bob", RESTIC_BACKUP_PIDS)
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    assert_lock_left(&lab, &SFTP);
    assert_recovers(&lab, &SFTP, "kill");
}

#[test]
fn a_generated_timer_fires_a_backup_on_its_host() {
    let Some(lab) = common::lab("backup_lab timer") else {
        return;
    };
    prepare(&lab);
    // A copy of the lab inventory beside it (its relative paths still resolve) whose bob-app
    // job runs every 15 seconds.
    let copy = lab.dir.join("inventory-timer");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&lab.inventory).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let backups = std::fs::read_to_string(copy.join("backups.yml")).unwrap();
    let fast = backups.replacen(
        "schedule: \"*-*-* 02:30\"",
        "schedule: \"*-*-* *:*:00/15\"\n    randomized_delay: 0s",
        1,
    );
    assert_ne!(backups, fast);
    std::fs::write(copy.join("backups.yml"), fast).unwrap();

    let t0: f64 = sh(&lab, "bob", "date +%s").trim().parse().unwrap();
    let applied = common::picaops_on(&copy, &["apply", "--tags", "backup", "playbooks/site.yml"]);
    ok(&applied, "apply with the 15-second schedule");
    // systemd's default timer accuracy is one minute: allow two.
    let start = Instant::now();
    let status = loop {
        let text = sh(
            &lab,
            "bob",
            "cat /var/lib/picaops/backup/status/bob-app.json 2>/dev/null || echo null",
        );
        let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let at = status["last_run"]["at"].as_f64().unwrap_or(0.0);
        if at > t0 && status.get("running_since").is_none_or(Value::is_null) {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(150) {
            break None;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    // Back to the real schedule whatever happened. The fast timer is stopped first, and its
    // backup waited for: a run starting every 15 s changes the units apply reads, and apply
    // then refuses a host whose state keeps changing (seen in CI).
    sh(
        &lab,
        "bob",
        "systemctl stop picaops-backup-bob-app.timer; \
         for i in $(seq 1 120); do systemctl is-active -q picaops-backup-bob-app.service || break; sleep 1; done",
    );
    ok(
        &lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]),
        "apply",
    );
    let journal = sh(
        &lab,
        "bob",
        "journalctl -u picaops-backup-bob-app.service --no-pager -o cat | tail -20",
    );
    let status =
        status.unwrap_or_else(|| panic!("the timer ran no backup within 150 s:\n{journal}"));
    assert_eq!(status["last_run"]["ok"], true, "{status}\n{journal}");
    let timer = sh(&lab, "bob", "systemctl cat picaops-backup-bob-app.timer");
    assert!(timer.contains("OnCalendar=*-*-* 02:30"), "{timer}");
}

/// Run on alice (bob-app's repository is local there): restores bob-app's latest file snapshot
/// into /root/forged, alters f7 (same size and mtime, other bytes) and removes f8, then backs
/// that tree up as a new snapshot with the job's host and tags, from relative paths so the
/// snapshot's tree has the job's own absolute paths (/srv/lab-app/files and the manifest). The
/// drill takes it as the latest. Prints the new snapshot's id. The repository's files are then
/// given back to its SFTP account (root made some).
const FORGE: &str = r#"set -e
R="restic -r /srv/restic/bob --password-file /etc/picaops/backup/secrets/restic-bob"
S=$($R --no-lock snapshots --json --host bob --tag job=bob-app,part=files --latest 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
rm -rf /root/forged && mkdir /root/forged
$R --no-lock restore "$S" --target /root/forged >/dev/null
cd /root/forged
f=srv/lab-app/files/f7
touch -r "$f" /root/forged.mtime
printf 'picaops-forged' | dd of="$f" bs=1 seek=1000 conv=notrunc status=none
touch -r /root/forged.mtime "$f"
rm -f srv/lab-app/files/f8 /root/forged.mtime
$R backup --host bob --tag picaops,job=bob-app,part=files --json srv var 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("message_type") == "summary": print(m["snapshot_id"])'
cd / && rm -rf /root/forged
# The repository is the SFTP account's: what root wrote there must be its too.
chown -R --reference=/srv/restic/bob/config /srv/restic/bob
"#;

#[test]
fn a_drill_fails_naming_the_files_that_differ_from_the_manifest() {
    let Some(lab) = common::lab("backup_lab drill verification") else {
        return;
    };
    prepare(&lab);
    backup(&lab, &["run", "--job", "bob-app"]);
    // A positive control: the real latest snapshot drills clean.
    let clean = backup(&lab, &["drill", "--job", "bob-app"]);
    assert_eq!(job(&clean, "bob-app")["result"][0]["ok"], true, "{clean}");

    let forged = sh(&lab, "alice", FORGE);
    let forged = forged.trim();
    assert!(!forged.is_empty(), "no snapshot forged");
    let drill = backup_raw(&lab, &["drill", "--job", "bob-app"]);
    // The forged snapshot goes whatever happened, so later runs drill the real one.
    sh(
        &lab,
        "alice",
        &format!(
            "restic -r /srv/restic/bob --password-file /etc/picaops/backup/secrets/restic-bob forget {forged} >/dev/null && \
             chown -R --reference=/srv/restic/bob/config /srv/restic/bob"
        ),
    );
    assert_eq!(
        drill.status.code(),
        Some(1),
        "drill: {}",
        text(&drill.stdout)
    );
    let doc = json(&drill);
    let j = job(&doc, "bob-app");
    assert_eq!(j["ok"], false, "{j}");
    // It is the manifest check that failed, not restic (which restored all it was asked for):
    // the message names the missing file and the altered one, and nothing else failed.
    let said = j["message"].as_str().unwrap_or("").to_string();
    assert!(
        said.contains("1 file(s) missing (/srv/lab-app/files/f8)"),
        "the drill does not name the missing file: {said}"
    );
    assert!(
        said.contains("1 file(s) with other content than backed up (/srv/lab-app/files/f7)"),
        "the drill does not name the altered file: {said}"
    );
    assert!(
        !said.contains("restic") && !said.contains("dump"),
        "another failure than the manifest's: {said}"
    );
    // With the forged snapshot gone, the drill is clean again.
    let clean = backup(&lab, &["drill", "--job", "bob-app"]);
    assert_eq!(job(&clean, "bob-app")["result"][0]["ok"], true, "{clean}");
}
