//! picaops: run a small hoster's two-site infrastructure from an admin workstation.
//!
//! The library holds everything the `picaops` binary does; the binary (src/main.rs and src/cli/)
//! only parses arguments, calls into these modules and renders their results.

pub mod access;
pub mod backup;
pub mod converge;
pub mod date;
pub mod diagnostic;
pub mod fence;
pub mod help_files;
pub mod human;
pub mod inventory;
pub mod lab;
pub mod lifecycle;
pub mod located;
pub mod modules;
pub mod output;
pub mod playbook;
pub mod progress;
pub mod recovery;
pub mod run;
pub mod secrets;
pub mod sections;
pub mod service;
pub mod site;
pub mod status;
pub mod transport;
pub mod values;
pub mod vm;
pub mod yaml;
