//! How a failback's plan and outcome are shown (human text, JSON).

use super::{FailbackPlan, Outcome};
use crate::sections::recovery::FILE_NAME;

impl crate::output::Shown for FailbackPlan {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The plan for people, in the order `--apply` does it.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        writeln!(
            w,
            "{} site `{}` comes home from `{}` (lost since {}, {})",
            out.paint(Style::Bold, "failback:"),
            self.site,
            self.at_site,
            self.since,
            self.recovery_file.display()
        )?;
        for s in &self.services {
            let data = match &s.job {
                Some(job) => {
                    let mut parts = s.data.clone();
                    parts.extend(s.dumps.iter().map(|d| format!("dump {d}")));
                    format!(
                        "stopped there, backed up by job {job} ({}), that snapshot restored at home",
                        parts.join(", ")
                    )
                }
                None => "no data".into(),
            };
            let route = match &s.vm {
                Some(vm) => format!("on VM {vm} (goes home with it)"),
                None => format!("from {} to {}", s.at, s.home),
            };
            writeln!(
                w,
                "  {} service {} {route}: {data}",
                out.paint(Style::Green, "<"),
                s.service,
            )?;
        }
        for v in &self.vms {
            writeln!(
                w,
                "  {} VM {} from {} to {}: its copy on {} shut down and kept as {}; the home copy started and converged",
                out.paint(Style::Green, "<"),
                v.vm,
                v.at,
                v.home,
                v.at,
                v.aside
            )?;
        }
        if let Some(d) = &self.directory {
            writeln!(
                w,
                "  {} directory from {} to {}, once the services are home: slapd stopped there, backed up by job {}, \
                 that snapshot loaded at home (the stale directory kept aside), every access helper pointed home, \
                 slapd at {} disabled (data kept)",
                out.paint(Style::Green, "<"),
                d.at,
                d.home,
                d.job,
                d.at
            )?;
        }
        writeln!(
            w,
            "  then: {} removed (kept as {}), home's data moved aside before each restore (kept), \
             the services deployed behind their health gate; only once healthy are the copies at `{}` taken down \
             (compose down without -v, data kept); retention thawed when everything is home",
            FILE_NAME,
            self.kept_copy
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.at_site
        )?;
        writeln!(
            w,
            "  a service that does not come up at home is stopped there and started again at `{}` ({FILE_NAME} keeps it)",
            self.at_site
        )?;
        for step in &self.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        Ok(())
    }
}

impl crate::output::Shown for Outcome {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn exit_code(&self) -> i32 {
        Outcome::exit_code(self)
    }

    /// The failback for people: each step with its time, then each service and VM.
    fn human(
        &self,
        out: &crate::output::Output,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use crate::output::Style;
        let human = |s: f64| crate::sections::schedule::human_duration(s as u64);
        writeln!(
            w,
            "{} site `{}` from `{}`",
            out.paint(Style::Bold, "failback:"),
            self.plan.site,
            self.plan.at_site
        )?;
        for s in &self.steps {
            s.render(out, w)?;
        }
        for o in &self.services {
            match &o.error {
                None => writeln!(
                    w,
                    "  {} {} on {}{}, healthy after {} (down {}){}",
                    out.paint(Style::Green, "home"),
                    o.service,
                    o.home,
                    o.snapshot
                        .as_ref()
                        .map(|s| format!(" with snapshot {s}"))
                        .unwrap_or_default(),
                    o.healthy_after_seconds.map(human).unwrap_or_default(),
                    o.downtime_seconds.map(human).unwrap_or_default(),
                    o.left
                        .as_ref()
                        .map(|l| format!("; at {}: {l}", o.from))
                        .unwrap_or_default()
                )?,
                Some(e) => writeln!(
                    w,
                    "  {} {} (home {}): {e}; {}",
                    out.paint(Style::Red, "NOT HOME"),
                    o.service,
                    o.home,
                    o.left.clone().unwrap_or_default()
                )?,
            }
        }
        for v in &self.vms {
            let mark = if v.ok {
                out.paint(Style::Green, "home")
            } else {
                out.paint(Style::Red, "NOT HOME")
            };
            writeln!(
                w,
                "  {mark} VM {} on {}{}; {}",
                v.vm,
                v.home,
                v.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                v.left.clone().unwrap_or_default()
            )?;
        }
        if let Some(copy) = &self.kept_copy {
            writeln!(
                w,
                "  {} {}",
                if self.recovery_removed {
                    format!("{FILE_NAME} removed; its text is kept in")
                } else {
                    format!("{FILE_NAME} keeps what is still moved; its old text is in")
                },
                copy.display()
            )?;
        }
        for step in &self.plan.manual {
            writeln!(w, "  {} {step}", out.paint(Style::Cyan, "by hand:"))?;
        }
        writeln!(w, "  total {:.1} s", self.seconds)
    }
}
