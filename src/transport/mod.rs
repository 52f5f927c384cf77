//! How picaops reaches a machine: the `Transport` trait, its SSH and local implementations,
//! and the bounded pool that runs work on many hosts at once.
//!
//! Modules never build `ssh` command lines themselves; they go through a `Transport`.

use std::path::PathBuf;

/// Everything needed to reach one managed machine, resolved from the inventory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The inventory name (`bob`, `pica01`): used in every message.
    pub name: String,
    /// DNS name or IP address to connect to.
    pub address: String,
    /// SSH port; `None` lets the admin's ssh config decide.
    pub port: Option<u16>,
    /// Login user; `None` lets the admin's ssh config decide.
    pub user: Option<String>,
    /// Private key to offer, when the inventory names one (the lab does).
    pub identity_file: Option<PathBuf>,
    /// Run commands through `sudo -n` (a non-root login with privilege escalation).
    pub become_root: bool,
    /// Jump host (`user@host:port`) for machines without a reachable address.
    pub jump: Option<String>,
    /// The workstation itself: run commands locally, no SSH.
    pub local: bool,
}
