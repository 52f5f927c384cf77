//! Playbooks: Ansible-like plays of tasks, read strictly, and the minijinja layer that renders
//! them with a host's variables.

pub mod ansible;
pub mod budget;
pub mod load;
pub mod model;
pub mod retry;
pub mod template;

pub use model::{Arg, Args, Play, Playbook, Task};
