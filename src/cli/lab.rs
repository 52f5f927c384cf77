//! `picaops lab …`: bring the lab up and down, show it, open a shell on a lab host, inject
//! faults. Only argument parsing and rendering; the work is in `picaops::lab`.

use clap::Subcommand;
use picaops::lab::{Lab, LabError, LabStatus};
use picaops::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE};

use super::Global;

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build the images if needed, then start the lab and wait until every host answers SSH.
    Up,
    /// Stop and remove the lab's containers, networks and volumes (images and keys stay).
    Down,
    /// What runs, where, whether SSH answers, and the lab inventory's path.
    Status,
    /// Open a shell on a lab host as root, or run a command there: `picaops lab ssh bob -- uname -a`.
    Ssh {
        /// bob, alice, caribou or ldap.
        host: String,
        /// Command to run instead of a shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Build the lab's images (only what is missing or changed).
    Build {
        /// Rebuild every image from scratch, ignoring Docker's cache.
        #[arg(long)]
        rebuild: bool,
    },
    /// Cut, slow down or restore the link between the two sites.
    #[command(subcommand)]
    Wan(WanCommand),
    /// Stop a lab host (systemd shuts down cleanly).
    Stop { host: String },
    /// Start a stopped lab host and wait until it answers SSH.
    Start { host: String },
}

#[derive(Subcommand, Debug)]
pub enum WanCommand {
    /// Nothing crosses between the sites any more.
    Cut,
    /// Link up again, bandwidth limit removed.
    Restore,
    /// Limit the bandwidth between the sites, both ways (`512kbit`, `10mbit`).
    Limit { rate: String },
}

pub fn run(cmd: LabCommand, global: &Global, out: &Output) -> i32 {
    let lab = Lab::from_env().verbose(global.verbose > 0);
    let mut progress = |line: &str| {
        if out.verbosity >= 0 {
            eprintln!("{}", out.paint(Style::Dim, line));
        }
    };
    let result = match cmd {
        LabCommand::Up => lab.up(&mut progress).map(|s| show_status(&s, out)),
        LabCommand::Down => lab.down().map(|()| {
            done(
                out,
                "lab removed (images and keys kept: the next `lab up` is quick)",
            )
        }),
        LabCommand::Status => lab.status().map(|s| {
            let up = s.is_up();
            show_status(&s, out);
            if up {
                EXIT_OK
            } else {
                EXIT_HOST_FAILED
            }
        }),
        LabCommand::Ssh { host, command } => lab.ssh_command(&host).map(|mut ssh| {
            ssh.args(&command);
            exec(ssh)
        }),
        LabCommand::Build { rebuild } => lab
            .build_images(rebuild, &mut progress)
            .map(|()| done(out, "images ready")),
        LabCommand::Wan(WanCommand::Cut) => lab.wan_cut().map(|()| {
            done(
                out,
                "WAN cut: nothing crosses between toulouse and compiegne",
            )
        }),
        LabCommand::Wan(WanCommand::Restore) => {
            lab.wan_restore().map(|()| done(out, "WAN restored"))
        }
        LabCommand::Wan(WanCommand::Limit { rate }) => lab
            .wan_limit(&rate)
            .map(|()| done(out, &format!("WAN limited to {rate} each way"))),
        LabCommand::Stop { host } => lab
            .stop_host(&host)
            .map(|()| done(out, &format!("{host} stopped"))),
        LabCommand::Start { host } => lab
            .start_host(&host)
            .map(|()| done(out, &format!("{host} started and answers SSH"))),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&e, out),
    }
}

fn done(out: &Output, message: &str) -> i32 {
    match out.format {
        Format::Json => println!("{}", serde_json::json!({ "ok": true, "message": message })),
        Format::Human => {
            if out.verbosity >= 0 {
                println!("{}", out.paint(Style::Green, message));
            }
        }
    }
    EXIT_OK
}

fn report(e: &LabError, out: &Output) -> i32 {
    let code = if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_HOST_FAILED
    };
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "ok": false, "error": e.to_string() })
        ),
        Format::Human => eprintln!("{} {e}", out.paint(Style::Red, "picaops lab:")),
    }
    code
}

fn show_status(s: &LabStatus, out: &Output) -> i32 {
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(s).expect("status serialises")
        ),
        Format::Human => print!("{}", s.render(out)),
    }
    EXIT_OK
}

/// Replaces picaops with `ssh` so the shell gets the terminal; returns only if exec failed.
fn exec(mut cmd: std::process::Command) -> i32 {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    eprintln!("picaops lab ssh: cannot run `ssh` ({err}); install openssh-client.");
    EXIT_HOST_FAILED
}
