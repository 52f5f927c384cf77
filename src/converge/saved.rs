//! Saved plans (`picaops plan --out FILE`, then `picaops apply FILE`).
//!
//! A saved plan records what was asked (playbooks, limit, tags, extra vars) and, per phase of the
//! run (VMs, converge, services) and per machine, the fingerprint of the state that was read and
//! a digest of the changes planned. Applying it recomputes the plan of every phase and refuses
//! the whole apply if any machine's state or planned changes differ (`crate::site`); each host
//! is checked once more as it is converged: what is applied is exactly what was reviewed. File contents are not stored (they may hold secrets); the file is
//! still written 0600 because extra vars are.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Report;
use crate::lifecycle::{MachinePlan, PhaseKind};

/// Why a saved plan cannot be applied: nothing was contacted.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("cannot read the saved plan {}: {error}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// Not JSON, or not the shape of a saved plan (the line and column are the JSON's).
    #[error("{}:{}:{}: this is not a plan saved by `picaops plan --out` ({error})", .path.display(), .error.line(), .error.column())]
    NotAPlan {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{}: saved by another picaops version (format {format}, this one reads {MAGIC}); make the plan again", .path.display())]
    OtherVersion { path: PathBuf, format: String },
}

/// Version 2: every phase of the run (version 1 covered the converge phase only).
pub const MAGIC: &str = "picaops-plan/2";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedHost {
    /// State fingerprint of the first read.
    pub fingerprint: String,
    /// Digest of the planned changes.
    pub changes: String,
    pub pending: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub created: String,
    pub inventory: PathBuf,
    pub playbooks: Vec<PathBuf>,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: BTreeMap<String, serde_json::Value>,
    /// The converge phase, per host (checked by the converge engine as it applies).
    pub hosts: BTreeMap<String, SavedHost>,
    /// Every phase that ran, per machine it read: what was seen and planned.
    pub phases: BTreeMap<PhaseKind, BTreeMap<String, MachinePlan>>,
}

impl SavedPlan {
    pub fn from_report(report: &Report, request: SavedPlan) -> SavedPlan {
        let mut plan = request;
        plan.hosts = report
            .hosts
            .iter()
            .filter(|h| h.error.is_none())
            .map(|h| {
                (
                    h.name.clone(),
                    SavedHost {
                        fingerprint: h.fingerprints.first().cloned().unwrap_or_default(),
                        changes: h.digests.first().cloned().unwrap_or_default(),
                        pending: h.changes(),
                    },
                )
            })
            .collect();
        plan
    }

    /// Writes the plan with mode 0600 (extra vars may be secret), atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("plan"),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
        if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    pub fn read(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let text = std::fs::read_to_string(path).map_err(|error| SavedPlanError::Unreadable {
            path: path.to_path_buf(),
            error,
        })?;
        let plan: SavedPlan =
            serde_json::from_str(&text).map_err(|error| SavedPlanError::NotAPlan {
                path: path.to_path_buf(),
                error,
            })?;
        if plan.format != MAGIC {
            return Err(SavedPlanError::OtherVersion {
                path: path.to_path_buf(),
                format: plan.format,
            });
        }
        Ok(plan)
    }
}

/// Is this file a saved plan (rather than a playbook)?
pub fn looks_like_plan(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| {
            let head = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
            head.trim_start().starts_with('{') && head.contains(MAGIC)
        })
        .unwrap_or(false)
}
