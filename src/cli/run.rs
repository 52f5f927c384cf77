//! `picaops run -- COMMAND…`: an ad-hoc command on every selected host.
//!
//! Parses arguments, picks the hosts, starts the progress display and hands over to
//! `picaops::run`; nothing here talks to a host.

use std::time::Duration;

use clap::Args;
use picaops::output::{Format, Output, EXIT_HOST_FAILED};
use picaops::run::{command_from_words, render_human, render_json, run_command, RunRequest};

use super::Global;

#[derive(Args, Debug)]
#[command(after_help = "\
One word after `--` is a shell command line (`picaops run -- 'df -h | grep /srv'`); several \
words are a program and its arguments, each passed unchanged (`picaops run -- touch 'a file'`).

Exit codes: 0 the command succeeded everywhere; 1 at least one host failed (could not connect, \
or the command exited non-zero; the summary names each host and why); 2 usage error.")]
pub struct RunArgs {
    /// Which hosts: names, groups or sites, comma-separated; globs (`pica*`) and `!name` to exclude;
    /// `@failed`: those the last apply left failed; `@FILE`: the names in FILE, one per line.
    #[arg(short, long)]
    pub limit: Option<String>,
    /// How many hosts to work on at the same time.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub forks: u32,
    /// Seconds allowed to connect to each host (TCP, key exchange and login).
    #[arg(long, value_name = "S", default_value_t = 10.0, value_parser = parse_seconds)]
    pub connect_timeout: f64,
    /// Seconds allowed for the command on each host (default: no limit).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// Keep OpenSSH's default post-quantum key exchange (sntrup761x25519) first. It protects
    /// recorded traffic against future quantum computers, and costs about 70 ms of this
    /// workstation's CPU per host; by default picaops prefers curve25519-sha256.
    #[arg(long)]
    pub post_quantum_kex: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e7 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

pub fn run(args: RunArgs, global: &Global, out: &Output) -> i32 {
    let (targets, known_hosts) =
        match super::inventory::load_targets(global, args.limit.as_deref(), out) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
    let request = RunRequest {
        command: command_from_words(&args.command),
        forks: args.forks as usize,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        timeout: args.timeout.map(Duration::from_secs_f64),
        post_quantum_kex: args.post_quantum_kex,
        become_root: None,
    };

    let result = match super::run_with_progress(out, targets.len(), |events| {
        run_command(&targets, &known_hosts, &request, events)
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("picaops run: cannot start the async runtime: {e}");
            return EXIT_HOST_FAILED;
        }
    };
    let report = match result {
        None => {
            eprintln!("picaops run: interrupted; connections closed. Commands already started on hosts may still be running.");
            return 130;
        }
        Some(Err(e)) => {
            eprintln!("picaops run: {e}");
            return EXIT_HOST_FAILED;
        }
        Some(Ok(report)) => report,
    };
    match out.format {
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&render_json(&report)).expect("JSON values serialize")
            );
        }
        Format::Human => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let _ = render_human(&report, out, &mut stdout.lock(), &mut stderr.lock());
        }
    }
    report.exit_code()
}
