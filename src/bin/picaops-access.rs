//! `picaops-access`: the small helper `picaops apply` installs on every host. sshd runs
//! `picaops-access keys %u %U` as its AuthorizedKeysCommand; a systemd timer (and `picaops access`
//! pushes) run `picaops-access sync`; `picaops access audit` runs `picaops-access status`.
//! All the logic is in `picaops::access::host`.

use std::path::PathBuf;
use std::process::ExitCode;

use picaops::access::host::{self, HostConfig, CONFIG_PATH};

const USAGE: &str = "usage: picaops-access [--config FILE] keys USER [UID] | sync | status

  keys USER [UID]  print USER's authorized_keys lines if the directory (or, when it is
                   unreachable, a fresh cache entry) allows them on this host; for sshd's
                   AuthorizedKeysCommand (UID: sshd's %U, checked against the entry's
                   uidNumber). Answers within the job file's timeout (1 s); ends with no key
                   after 0.3 s more, or beyond 256 MiB of memory.
  sync             create/update local accounts of people allowed here, lock the ones who lost
                   access, refresh the cache; prints what it did as JSON
  status           who can log in here now and until when, as JSON (for `picaops access audit`)

The job file (default /etc/picaops/access.json, root-only) is written by `picaops apply`.";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = PathBuf::from(CONFIG_PATH);
    if args.first().map(String::as_str) == Some("--config") && args.len() >= 2 {
        config = PathBuf::from(args.remove(1));
        args.remove(0);
    }
    let cmd = args.first().cloned().unwrap_or_default();
    if cmd == "-h" || cmd == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cfg = match HostConfig::read(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("picaops-access: {e}");
            host::log(&e.to_string());
            return ExitCode::from(2);
        }
    };
    match (cmd.as_str(), &args[1..]) {
        ("keys", [user, rest @ ..]) if rest.len() <= 1 => {
            host::bound_keys_call(&cfg);
            let uid = match rest.first().map(|u| u.parse::<u32>()) {
                None => None,
                Some(Ok(u)) => Some(u),
                Some(Err(_)) => {
                    host::log(&format!(
                        "{user}: sshd passed the uid {:?}, not a number: refused",
                        rest[0]
                    ));
                    return ExitCode::from(2);
                }
            };
            let lines = host::keys_for(&cfg, user, uid);
            host::disarm_watchdog();
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        ("sync", []) => match host::sync(&cfg) {
            Ok(actions) => {
                println!("{}", serde_json::to_string(&actions).unwrap_or_default());
                if actions.iter().any(|a| a.action.starts_with("error")) {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("picaops-access: sync: {e}; nothing changed");
                host::log(&format!("sync: {e}; nothing changed"));
                ExitCode::from(1)
            }
        },
        ("status", []) => {
            println!(
                "{}",
                serde_json::to_string(&host::status(&cfg)).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
