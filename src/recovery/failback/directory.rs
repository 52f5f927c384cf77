//! The directory's way home, last in a failback (once every service is home): its slapd stopped
//! at the recovery place, backed up there (that snapshot checked to be this run's), the
//! `directory:` line taken out of `recovery.yml`, the snapshot's files restored at home and its
//! dump loaded into home's slapd (the stale directory there kept aside by the load), every
//! machine's access helper pointed home, and the recovery place's slapd disabled (its data
//! kept). A failure before home serves it starts the recovery place's slapd again and puts the
//! line back: the directory always runs somewhere, and a second run retries.

use std::time::Instant;

use super::{
    call, load, round, write_file, write_recovery, ConvergeRun, Failback, Remote, STEP_TIMEOUT,
};
use crate::inventory::Inventory;

/// `systemctl WHAT slapd` on `at`.
fn slapd(remote: &mut dyn Remote, inv: &Inventory, at: &str, what: &str) -> Result<(), String> {
    let script = format!("systemctl {what} slapd");
    let said = round(remote, inv, vec![call(at, "slapd", script)], STEP_TIMEOUT);
    match said.get(at) {
        Some(s) if s.ok => Ok(()),
        Some(s) => Err(s.error.clone()),
        None => Err("no answer".to_string()),
    }
}

impl Failback<'_> {
    /// The directory home (see the module's text); nothing when the recovery did not move it.
    pub(super) fn directory(&mut self) -> Result<(), super::FailbackError> {
        let Some(d) = self.plan.directory.clone() else {
            return Ok(());
        };
        let clock = Instant::now();
        if self.failures() > 0 {
            let detail = format!(
                "stays at {} until every service is home: run the failback again",
                d.at
            );
            self.step("directory", clock, false, detail);
            return Ok(());
        }
        // 1. Stopped at the recovery place, so that what the backup reads is the last word.
        if let Err(e) = slapd(&mut *self.remote, &self.moved, &d.at, "stop") {
            let detail = format!("could not stop slapd at {}: {e}; it stays there", d.at);
            self.step("directory", clock, false, detail);
            return Ok(());
        }
        // 2. Backed up there; the repository's newest snapshot must be this one.
        let jobs = [d.job.clone()];
        let (made, failed) = self.run_jobs(&jobs);
        let errors = if failed.is_empty() {
            self.newest_of(&jobs, &made)
        } else {
            failed
        };
        if let Some(e) = errors.into_values().next() {
            let _ = slapd(&mut *self.remote, &self.moved, &d.at, "start");
            let detail = format!("{e}; the directory runs at {} again", d.at);
            self.step("directory", clock, false, detail);
            return Ok(());
        }
        // 3. recovery.yml without it; the inventory places it home.
        if self.kept_copy.is_none() {
            if let Ok(text) = std::fs::read_to_string(&self.plan.recovery_file) {
                write_file(&self.plan.kept_copy, &text)?;
                self.kept_copy = Some(self.plan.kept_copy.clone());
            }
        }
        self.recovery_removed = write_recovery(&self.moved, &self.plan, &self.units, true)?;
        self.home = load(self.dir)?;
        // 4. At home: the snapshot's files, then its dump loaded into home's slapd.
        if let Err(e) = self.restore_directory_home(&d.job) {
            write_recovery(&self.moved, &self.plan, &self.units, false)?;
            self.recovery_removed = false;
            self.home = load(self.dir)?;
            let _ = slapd(&mut *self.remote, &self.moved, &d.at, "start");
            let detail = format!(
                "loading it at {}: {e}; it runs at {} again ({} keeps it there)",
                d.home,
                d.at,
                crate::sections::recovery::FILE_NAME
            );
            self.step("directory", clock, false, detail);
            return Ok(());
        }
        // 5. Every machine's access helper pointed home; the recovery place's slapd disabled.
        let machines: Vec<String> = self.home.machines().map(|m| m.name().to_string()).collect();
        let f = self
            .remote
            .converge(&self.home, &machines, ConvergeRun::Access);
        let disabled = slapd(&mut *self.remote, &self.home, &d.at, "disable");
        let ok = f.machines.is_empty() && disabled.is_ok();
        let mut detail = format!("home on {} from {}", d.home, d.at);
        if !f.machines.is_empty() {
            let failed: Vec<&str> = f.machines.keys().map(String::as_str).collect();
            detail.push_str(&format!(
                "; the access helpers of {} still point at {}: run `picaops apply --tags access -l {}`",
                failed.join(", "),
                d.at,
                failed.join(",")
            ));
        }
        if let Err(e) = disabled {
            detail.push_str(&format!(
                "; could not disable slapd at {} ({e}): `systemctl disable slapd` there",
                d.at
            ));
        }
        self.step("directory", clock, ok, detail);
        Ok(())
    }

    /// The newest snapshot this run made of `job`, restored at the directory's home.
    fn restore_directory_home(&mut self, job: &str) -> Result<(), String> {
        let Some(info) = self.snapshots.get(job).cloned() else {
            return Err(format!("no snapshot of job {job} from this run"));
        };
        let home = &self.home;
        let remote = &mut *self.remote;
        let mut exec = |calls, t| remote.exec(home, calls, t);
        crate::recovery::restore_directory(home, job, &info.latest, &mut exec)
    }
}
