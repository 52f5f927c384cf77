//! `until`, `retries` and `delay` on command tasks: the command runs again, `delay` seconds
//! apart, until the `until` expression holds on its registered result, at most `retries`
//! times after the first attempt.
//!
//! The loop runs here, on the workstation, not in the host's apply script: `until` is a
//! minijinja expression (strict, like `when`), and the host has no template engine (POSIX sh
//! only) and must never be sent a translation of one. So the first attempt is the apply
//! script's last operation (it reports the exit status instead of stopping the script), and
//! each further attempt is one small script of its own (run lock, the command, its output):
//! one round trip per attempt. The command's guards (`creates`, `removes`, `unless`) were
//! checked once, before the first attempt. Nothing here prints.

use std::time::Duration;

use minijinja::Value as JValue;
use serde_json::Value;

use super::expand::{Step, Until};
use super::script;
use super::{send_script, HostReport, Job};
use crate::playbook::load::strip_braces;
use crate::playbook::template::{from_json_value, is_strict_bool};
use crate::transport::Transport;

/// One attempt's result: exit status, stdout, stderr.
pub type Attempt = (i32, String, String);

/// How the attempts ended.
#[derive(Debug)]
pub struct Settled {
    /// How many times the command ran.
    pub attempts: u32,
    /// The last attempt.
    pub last: Attempt,
    /// `None`: `until` held and the command succeeded. Else why the task failed.
    pub error: Option<String>,
}

impl Until {
    /// What the plan says about the step.
    pub fn describe(&self) -> String {
        format!(
            "until {}: at most {} attempts, {} s apart",
            self.until.value,
            self.retries + 1,
            self.delay
        )
    }

    /// What the report says once it ran.
    pub fn outcome(&self, s: &Settled) -> String {
        let times = if s.attempts == 1 {
            "ran once".to_string()
        } else {
            format!("ran {} times", s.attempts)
        };
        match &s.error {
            None => format!("{times}, until held on attempt {}", s.attempts),
            Some(_) => format!("{times}, until never held"),
        }
    }

    /// Does `until` hold on `result` (the value `register` gets)? `Err`: it failed to
    /// evaluate, or gave something that is not a boolean.
    pub fn holds(&self, job: &Job, result: &Value) -> Result<bool, String> {
        let mut vars = self.vars.clone();
        vars.insert(self.register.clone(), from_json_value(result));
        let v = job
            .templates
            .eval_expr(strip_braces(&self.until.value), &JValue::from_iter(vars))
            .map_err(|e| {
                format!(
                    "{}: while evaluating `until`: {}",
                    self.until.place, e.message
                )
            })?;
        is_strict_bool(&v).ok_or_else(|| {
            format!(
                "{}: `until: {}` gave {} `{}`, not true or false (compare, e.g. `{}.rc == 0`, or use `| bool`)",
                self.until.place,
                self.until.value,
                v.kind(),
                super::expand::clip(&v.to_string(), 40),
                self.register
            )
        })
    }
}

/// Checks `until` on the first attempt and runs the command again (`call`, as the apply
/// script ran it) until it holds or the retries are spent.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    job: &Job,
    transport: &dyn Transport,
    report: &mut HostReport,
    segment: usize,
    lock_dir: &str,
    step: &Step,
    until: &Until,
    call: &str,
    first: Attempt,
) -> Settled {
    let (id, no_log) = (step.id, step.no_log);
    let mut settled = Settled {
        attempts: 1,
        last: first,
        error: None,
    };
    loop {
        let (rc, out, err) = &settled.last;
        let result = super::registered_value(
            crate::modules::Action::Run,
            Some((*rc, out.clone(), err.clone())),
        );
        let mut result = result;
        result["attempts"] = Value::from(settled.attempts);
        match until.holds(job, &result) {
            Err(e) => {
                settled.error = Some(e);
                return settled;
            }
            Ok(true) if *rc == 0 => return settled,
            Ok(true) => {
                settled.error = Some(format!(
                    "until held on attempt {}, but the command failed: {}",
                    settled.attempts,
                    last_words(&settled.last, no_log)
                ));
                return settled;
            }
            Ok(false) if settled.attempts > until.retries => {
                settled.error = Some(format!(
                    "until `{}` did not hold after {} attempts (retries: {}, delay: {} s); the last one: {}",
                    until.until.value,
                    settled.attempts,
                    until.retries,
                    until.delay,
                    last_words(&settled.last, no_log)
                ));
                return settled;
            }
            Ok(false) => {}
        }
        tokio::time::sleep(Duration::from_secs(until.delay.into())).await;
        let text = script::attempt_script(
            (lock_dir, &job.lock_info, job.lock_wait.as_secs()),
            id,
            call,
        );
        let kind = format!("attempt{}", settled.attempts + 1);
        let out = match send_script(transport, report, segment, &kind, text, step.become_root).await
        {
            Ok(o) => o,
            Err(e) => {
                settled.error = Some(format!(
                    "attempt {} of the command could not be sent: {e}",
                    settled.attempts + 1
                ));
                return settled;
            }
        };
        let r = script::parse_apply(&out.stdout_lossy());
        let Some(rc) = r.tried.get(&id).copied() else {
            settled.error = Some(if out.exit_code == 75 {
                format!(
                    "attempt {} did not run: another apply holds the run lock ({})",
                    settled.attempts + 1,
                    script::describe_lock(r.locked.as_deref().unwrap_or(""))
                )
            } else {
                format!(
                    "attempt {} did not run (exit {}): {}",
                    settled.attempts + 1,
                    out.exit_code,
                    out.stderr_lossy().trim()
                )
            });
            return settled;
        };
        let (o, e) = r.output.get(&id).cloned().unwrap_or_default();
        settled.attempts += 1;
        settled.last = (rc, o, e);
    }
}

/// `exit N: the last lines of stderr (else stdout)`, unless the task hides its output.
fn last_words((rc, out, err): &Attempt, no_log: bool) -> String {
    if no_log {
        return format!("exit {rc} (output hidden: no_log)");
    }
    let text = if err.trim().is_empty() { out } else { err };
    format!("exit {rc}: {}", super::tail(text, 20))
}
