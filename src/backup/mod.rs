//! Backups: restic jobs from each site to the other, run on the hosts by systemd timers.
//!
//! `config` reads and checks the inventory's `backups:` section; `schedule` checks OnCalendar
//! expressions and reads durations; `jobfile` is what a host is given; `restic` drives restic
//! (argv, JSON, exit codes); `dump` knows each database engine (`ldap`: OpenLDAP's dump, drill and load); `manifest` proves restores;
//! `lock` keeps jobs on one repository apart and clears provably stale restic locks; `host`
//! runs the operations on a host (`hostcmd`: as the hidden `backup host-…` commands report them); `status` records them (JSON and node_exporter metrics);
//! `units` writes the systemd units; `render` shows status and snapshots; `newest` reads a
//! job's newest data from its repository's listing. The workstation side:
//! `remote` builds the host-side calls and runs them over SSH, `ops` is each workstation
//! command (which jobs, which machine and side, what came back, the exit code).

pub mod config;
pub mod deploy;
pub mod dump;
pub mod host;
pub mod hostcmd;
pub mod jobfile;
pub mod ldap;
pub mod lock;
pub mod manifest;
pub mod newest;
pub mod ops;
pub mod remote;
pub mod render;
pub mod restic;
pub mod rotate;
pub mod rotate_password;
pub mod serve;
pub mod show;
pub mod status;
pub mod time;
pub use crate::sections::schedule;
pub mod units;

pub use config::{BackupJob, Dump, DumpKind, Repository, RepositoryKind, Retention};
pub use host::HostJob;
pub use jobfile::{JobFile, RepositoryAccess};
pub use status::JobStatus;
