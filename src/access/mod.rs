//! SSH access through the LDAP directory: people, their levels, keys, machines and expiry dates
//! (Picasoft's scheme), changed from the workstation (`picaops access …`, orchestrated by
//! [`ops`], its results in [`report`]) and enforced on every host by the `picaops-access`
//! helper that sshd asks for keys. People are mailed before their access ends
//! ([`remind`], from the workstation or a timer on one machine: [`remind_file`]).

pub mod config;
pub use crate::date;
pub mod directory;
pub mod host;
pub mod keys;
pub mod mail;
pub mod manage;
pub mod ops;
pub mod remind;
pub mod remind_file;
pub mod report;
pub mod vars;

pub use config::{Access, AccessDoc, Level};
pub use directory::{Directory, DirectoryError, Endpoint, Person};
