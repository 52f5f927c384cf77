//! `picaops run -- COMMAND…`: an ad-hoc command on every selected host.
//!
//! Parses arguments, picks the hosts, starts the progress display and hands over to
//! `picaops::run`; nothing here talks to a host.

use std::time::Duration;

use clap::Args;
use picaops::output::{Format, Output, EXIT_HOST_FAILED, EXIT_USAGE};
use picaops::run::{command_from_words, render_human, render_json, run_command, RunRequest};

use super::Global;

#[derive(Args, Debug)]
#[command(after_help = "\
One word after `--` is a shell command line (`picaops run -- 'df -h | grep /srv'`); several \
words are a program and its arguments, each passed unchanged (`picaops run -- touch 'a file'`).

Exit codes: 0 the command succeeded everywhere; 1 at least one host failed (could not connect, \
or the command exited non-zero; the summary names each host and why); 2 usage error.")]
pub struct RunArgs {
    /// Which hosts: names, groups or sites, comma-separated; globs (`pica*`) and `!name` to exclude.
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
    let (targets, known_hosts) = match load_targets(global, args.limit.as_deref(), out) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if targets.is_empty() {
        eprintln!(
            "picaops run: no host matches --limit {:?}; `picaops inventory check` lists them.",
            args.limit.as_deref().unwrap_or("")
        );
        return EXIT_USAGE;
    }
    let request = RunRequest {
        command: command_from_words(&args.command),
        forks: args.forks as usize,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        timeout: args.timeout.map(Duration::from_secs_f64),
        post_quantum_kex: args.post_quantum_kex,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("picaops run: cannot start the async runtime: {e}");
            return EXIT_HOST_FAILED;
        }
    };
    let result = runtime.block_on(async {
        let (events, display) = if out.progress {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(picaops::progress::spawn(targets.len(), rx)))
        } else {
            (None, None)
        };
        let work = run_command(&targets, &known_hosts, &request, events);
        let result = tokio::select! {
            result = work => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        };
        // The sender was moved into the pool and is dropped by now: the bar clears itself.
        if let Some(display) = display {
            let _ = display.await;
        }
        result
    });
    // Dropping the runtime drops the unfinished host tasks; each closes its SSH master.
    drop(runtime);

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

// TEMPORARY: replaced by the inventory loader at merge.
//
// Reads `<inventory>/hosts.yml` loosely (name → address, port, user, identity_file relative to the
// YAML file, host_key, become_root, jump, local), applies `--limit` (comma-separated names, `*`
// globs, `!name` exclusions) and writes a known_hosts file from the `host_key` fields.
fn load_targets(
    global: &Global,
    limit: Option<&str>,
    _out: &Output,
) -> Result<(Vec<picaops::transport::Target>, std::path::PathBuf), i32> {
    #[derive(serde::Deserialize)]
    struct File {
        hosts: indexmap::IndexMap<String, Host>,
    }
    #[derive(serde::Deserialize)]
    struct Host {
        address: String,
        port: Option<u16>,
        user: Option<String>,
        identity_file: Option<std::path::PathBuf>,
        host_key: Option<String>,
        #[serde(default)]
        become_root: bool,
        jump: Option<String>,
        #[serde(default)]
        local: bool,
    }
    let path = global.inventory.join("hosts.yml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        eprintln!("picaops: cannot read {}: {e}", path.display());
        EXIT_USAGE
    })?;
    // Loosely: the real loader rejects unknown keys; this stand-in ignores them.
    let file: File = serde_saphyr::from_str(&text).map_err(|e| {
        eprintln!("picaops: {}: {e}", path.display());
        EXIT_USAGE
    })?;
    let selected = |name: &str| -> bool {
        let Some(limit) = limit else { return true };
        let mut included = false;
        let mut any_positive = false;
        for pat in limit.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(excluded) = pat.strip_prefix('!') {
                if glob(excluded, name) {
                    return false;
                }
            } else {
                any_positive = true;
                included |= glob(pat, name);
            }
        }
        included || !any_positive
    };
    let mut known_hosts = String::new();
    let mut targets = Vec::new();
    for (name, h) in file.hosts {
        let target = picaops::transport::Target {
            name: name.clone(),
            address: h.address,
            port: h.port,
            user: h.user,
            identity_file: h.identity_file.map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    global.inventory.join(p)
                }
            }),
            become_root: h.become_root,
            jump: h.jump,
            local: h.local,
        };
        if let Some(key) = h.host_key {
            known_hosts.push_str(&format!("{} {}\n", target.known_hosts_name(), key.trim()));
        }
        if selected(&name) {
            targets.push(target);
        }
    }
    let kh_path = std::env::temp_dir().join(format!("picaops-known-hosts-{}", std::process::id()));
    std::fs::write(&kh_path, known_hosts).map_err(|e| {
        eprintln!("picaops: cannot write {}: {e}", kh_path.display());
        EXIT_USAGE
    })?;
    Ok((targets, kh_path))
}

// TEMPORARY: replaced by the inventory loader at merge.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => name.starts_with(prefix) && glob_tail(rest, &name[prefix.len()..]),
    }
}

// TEMPORARY: replaced by the inventory loader at merge.
fn glob_tail(rest: &str, name: &str) -> bool {
    rest.is_empty() || (0..=name.len()).any(|i| name.is_char_boundary(i) && glob(rest, &name[i..]))
}
