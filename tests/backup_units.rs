//! The systemd units picaops generates for backups, checked by the real `systemd-analyze`:
//! `verify` on every unit of the shipped inventory's jobs (exit 0 AND an empty stderr, since it
//! only warns on unknown keys), and `calendar` on every schedule form picaops accepts.
//!
//! verify fails when ExecStart's program is missing on the machine running it, so the units
//! are generated with ExecStart pointing at the picaops binary under test (it exists here).

use std::path::{Path, PathBuf};
use std::process::Command;

use picaops::backup::schedule::{check_schedule, EXAMPLES};
use picaops::backup::units::{self, UnitOptions};

fn have_systemd_analyze(test: &str) -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let why = format!("{test}: systemd-analyze is not installed (Debian package `systemd`)");
    if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

fn example_inventory() -> picaops::inventory::Inventory {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    match picaops::inventory::load(&dir).result {
        Ok(inv) => inv,
        Err(diags) => panic!("the example inventory is invalid: {diags:#?}"),
    }
}

fn verify(unit_dir: &Path, files: &[PathBuf]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(files)
        .current_dir(unit_dir)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: exit {:?}\n{stderr}",
        out.status.code()
    );
}

#[test]
fn every_generated_unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze("every_generated_unit_passes_systemd_analyze_verify") {
        return;
    }
    let inv = example_inventory();
    assert!(inv.backups.len() >= 5, "the example has Picasoft's jobs");
    let dir = tempfile::tempdir().unwrap();
    let opts = UnitOptions {
        picaops: PathBuf::from(env!("CARGO_BIN_EXE_picaops")),
        ..Default::default()
    };
    let mut files = Vec::new();
    let mut write = |u: &units::UnitFile| {
        let path = dir.path().join(&u.name);
        std::fs::write(&path, &u.content).unwrap();
        files.push(path);
    };
    for job in inv.backups.values() {
        let [service, timer] =
            units::job_units(job, Path::new("/etc/picaops/backup/jobs/x.json"), &opts);
        assert!(service.content.contains("Type=oneshot"));
        assert!(service.content.contains("IOSchedulingClass=idle"));
        assert!(timer
            .content
            .contains(&format!("OnCalendar={}\n", job.schedule.trim())));
        assert!(timer.content.contains("Persistent=true"));
        assert!(timer
            .content
            .contains(&format!("RandomizedDelaySec={}\n", job.randomized_delay)));
        write(&service);
        write(&timer);
    }
    let job_files = [
        PathBuf::from("/etc/picaops/backup/jobs/a.json"),
        PathBuf::from("/etc/picaops/backup/jobs/b.json"),
    ];
    for task in units::RepositoryTask::ALL {
        for u in units::repository_units(
            task,
            "caribou-srv-restic-pica02",
            &job_files,
            Some("picaops-restic"),
            &opts,
        ) {
            write(&u);
        }
    }
    verify(dir.path(), &files);
}

#[test]
fn verify_would_catch_a_bad_key() {
    if !have_systemd_analyze("verify_would_catch_a_bad_key") {
        return;
    }
    // The guard above is only worth something if a bad unit does show on stderr.
    let dir = tempfile::tempdir().unwrap();
    let inv = example_inventory();
    let job = inv.backups.values().next().unwrap();
    let opts = UnitOptions {
        picaops: PathBuf::from(env!("CARGO_BIN_EXE_picaops")),
        ..Default::default()
    };
    let [service, _] = units::job_units(job, Path::new("/x.json"), &opts);
    let path = dir.path().join(&service.name);
    std::fs::write(
        &path,
        service
            .content
            .replace("Nice=10", "Nice=10\nIOSchedulingClas=idle"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("IOSchedulingClas"));
}

/// Schedules picaops accepts must be accepted by systemd too; some it refuses, systemd refuses.
#[test]
fn accepted_schedules_are_valid_systemd_calendars() {
    if !have_systemd_analyze("accepted_schedules_are_valid_systemd_calendars") {
        return;
    }
    let inv = example_inventory();
    let mut accepted: Vec<String> = inv
        .backups
        .values()
        .map(|j| j.schedule.trim().to_string())
        .collect();
    accepted.extend(EXAMPLES.iter().map(|s| s.to_string()));
    accepted.extend(["weekly", "hourly"].map(String::from));
    accepted.extend(units::RepositoryTask::ALL.map(|t| t.schedule().to_string()));
    for s in &accepted {
        assert_eq!(check_schedule(s), Ok(()), "picaops refuses {s:?}");
        let out = Command::new("systemd-analyze")
            .args(["calendar", s])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd refuses {s:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for s in [
        "*-*-* 25:00",
        "*-13-* 00:00",
        "every night",
        "Mon..Fri..Sun 02:00",
        "*-*-* 1:60",
    ] {
        assert!(check_schedule(s).is_err(), "picaops accepts {s:?}");
        let out = Command::new("systemd-analyze")
            .args(["calendar", s])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "systemd accepts {s:?}: keep picaops in step"
        );
    }
}
