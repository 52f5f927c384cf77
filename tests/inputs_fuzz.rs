//! Fuzzing the inventory loader with a small deterministic mutator: the example inventory and
//! every case of tests/bad-inventories are the seeds; each mutant changes one file of one seed
//! (byte flips, lines deleted, duplicated or swapped, tokens such as `:`, `-`, `{`, `"`, tabs,
//! multibyte characters and huge numbers spliced in, truncation) and is loaded from disk by
//! `picaops::inventory::load`, as `picaops inventory check` does.
//!
//! Each mutant must load, or fail with diagnostics that all carry a file:line:column; it must
//! never panic and must return within a time bound. `cargo test` tries a fixed number of
//! mutants (a few seconds); `PICAOPS_FUZZ_SECONDS=N` runs for N seconds instead, and
//! `PICAOPS_FUZZ_SEED=N` starts from another seed. A failing mutant is kept on disk, its path
//! and the mutations that made it printed, to become a case of tests/bad-inventories.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Mutants tried by a plain `cargo test`.
const DEFAULT_MUTANTS: u64 = 1500;
/// How long one load may take (a debug build, on a busy machine) before it counts as a hang.
const LOAD_BOUND: Duration = Duration::from_secs(3);

/// splitmix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Text that YAML and the loader give a meaning to, or that is awkward for a parser.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ",",
    "\t",
    "\n",
    "  ",
    "#",
    "&a",
    "*a",
    "!!str ",
    "? ",
    "|",
    ">",
    "---\n",
    "...",
    "~",
    "null",
    "true",
    "no",
    "é",
    "日本",
    "🦀",
    "\u{feff}",
    "\u{0}",
    "\r",
    "99999999999999999999999999",
    "-1",
    "0",
    "65536",
    "1e400",
    "0x10",
    "  x: y\n",
    "    - a\n",
    "!",
    "%",
    "@",
    "`",
    "\\",
    "\\u0000",
    "$(touch pwned)",
    "all",
    "localhost",
    "..",
    "/",
    "GiB",
    "8GiB",
    "0B",
];

/// A token for a value: sometimes behind a number, as in `8GiB` or `10.0.0.1/24`.
fn value_token(rng: &mut Rng) -> String {
    let token = TOKENS[rng.below(TOKENS.len())];
    match rng.below(3) {
        0 => format!("{}{token}", rng.below(100)),
        _ => token.to_string(),
    }
}

/// One seed: an inventory directory's files (name, bytes).
type Seed = Vec<(String, Vec<u8>)>;

fn seeds() -> Vec<(String, Seed)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("inventory")];
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root.join("tests/bad-inventories"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    dirs.extend(cases);
    dirs.into_iter()
        .map(|dir| {
            let mut files: Seed = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).unwrap())
                })
                .collect();
            files.sort();
            (dir.display().to_string(), files)
        })
        .filter(|(_, files)| !files.is_empty())
        .chain(std::iter::once(lab_inventory()))
        .collect()
}

/// The lab's inventory (what `picaops lab up` writes): a valid seed with VMs on libvirt,
/// access, backups and services.
fn lab_inventory() -> (String, Seed) {
    use picaops::lab::inventory as lab;
    let key = |_: &str| {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            .to_string()
    };
    let files = [
        ("sites.yml", lab::sites_yml()),
        ("hosts.yml", lab::hosts_yml(&key)),
        ("groups.yml", lab::groups_yml()),
        ("access.yml", lab::access_yml(true)),
        ("backups.yml", lab::backups_yml()),
        ("vms.yml", lab::vms_yml()),
        ("services.yml", lab::services_yml()),
    ];
    let files = files
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.into_bytes()))
        .collect();
    ("the lab's inventory".into(), files)
}

/// Applies one random mutation to `bytes`; returns what it did, for the report.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    match rng.below(12) {
        0 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            let bit = 1u8 << rng.below(8);
            bytes[i] ^= bit;
            format!("flip bit {bit:#04x} of byte {i}")
        }
        1 => {
            let mut l = lines(bytes);
            if l.is_empty() {
                return "delete a line (none)".into();
            }
            let i = rng.below(l.len());
            l.remove(i);
            *bytes = l.concat();
            format!("delete line {}", i + 1)
        }
        2 => {
            let mut l = lines(bytes);
            if l.is_empty() {
                return "duplicate a line (none)".into();
            }
            let i = rng.below(l.len());
            let line = l[i].clone();
            l.insert(i, line);
            *bytes = l.concat();
            format!("duplicate line {}", i + 1)
        }
        3 => {
            let mut l = lines(bytes);
            if l.len() < 2 {
                return "swap lines (fewer than 2)".into();
            }
            let (i, j) = (rng.below(l.len()), rng.below(l.len()));
            l.swap(i, j);
            *bytes = l.concat();
            format!("swap lines {} and {}", i + 1, j + 1)
        }
        4 if !bytes.is_empty() => {
            let i = rng.below(bytes.len() + 1);
            bytes.truncate(i);
            format!("truncate at byte {i}")
        }
        5 if !bytes.is_empty() => {
            // Replace a word (a run of letters/digits) by a token: values change type.
            let i = rng.below(bytes.len());
            let start = (0..=i)
                .rev()
                .take_while(|&k| bytes[k].is_ascii_alphanumeric())
                .last()
                .unwrap_or(i);
            let end = (i..bytes.len())
                .take_while(|&k| bytes[k].is_ascii_alphanumeric())
                .last()
                .map_or(i, |k| k + 1);
            let token = TOKENS[rng.below(TOKENS.len())];
            bytes.splice(start..end, token.bytes());
            format!("replace bytes {start}..{end} by {token:?}")
        }
        6 if !bytes.is_empty() => {
            // A byte cut in the middle of a multibyte character, or garbage.
            let i = rng.below(bytes.len());
            let b = [0xc3u8, 0xa9, 0xff, 0x80, 0xe6][rng.below(5)];
            bytes.insert(i, b);
            format!("insert byte {b:#04x} at {i}")
        }
        7..=10 => {
            // A value (after `key: ` on a line, or inside `{ … }`): replaced by a token, or
            // with a token appended, where the loader's own checks read it.
            let starts: Vec<usize> = bytes
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w == b": ")
                .map(|(i, _)| i + 2)
                .collect();
            if starts.is_empty() {
                return "change a value (none)".into();
            }
            let start = starts[rng.below(starts.len())];
            let end = (start..bytes.len())
                .find(|&k| matches!(bytes[k], b'\n' | b',' | b'}' | b']'))
                .unwrap_or(bytes.len());
            let token = value_token(rng);
            if rng.below(2) == 0 {
                bytes.splice(start..end, token.bytes());
                format!("replace the value at byte {start} by {token:?}")
            } else {
                bytes.splice(end..end, token.bytes());
                format!("append {token:?} to the value at byte {start}")
            }
        }
        _ => {
            let i = rng.below(bytes.len() + 1);
            let token = TOKENS[rng.below(TOKENS.len())];
            bytes.splice(i..i, token.bytes());
            format!("insert {token:?} at byte {i}")
        }
    }
}

/// Whether the mutant is still a valid inventory, or why it failed the properties.
fn check_mutant(dir: &Path) -> Result<bool, String> {
    let (tx, rx) = mpsc::channel();
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| {
            let loaded = picaops::inventory::load(&d);
            match loaded.result {
                Ok(_) => (true, Vec::new()),
                Err(diags) => (
                    false,
                    diags
                        .iter()
                        .filter(|x| x.place.line == 0 || x.place.column == 0)
                        .map(|x| format!("{}: {}", x.place, x.message))
                        .collect::<Vec<_>>(),
                ),
            }
        });
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(LOAD_BOUND) {
        Err(_) => Err(format!("the loader did not return within {LOAD_BOUND:?}")),
        Ok(Err(panic)) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("the loader panicked: {why}"))
        }
        Ok(Ok((_, unlocated))) if !unlocated.is_empty() => {
            Err(format!("errors without a line and column: {unlocated:?}"))
        }
        Ok(Ok((valid, _))) => Ok(valid),
    }
}

#[test]
fn mutated_inventories_never_panic_hang_or_give_an_unlocated_error() {
    let seeds = seeds();
    assert!(
        seeds.len() > 20,
        "the seeds are the example and the bad inventories"
    );
    let seed: u64 = std::env::var("PICAOPS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let budget: Option<Duration> = std::env::var("PICAOPS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut tried, mut loaded_ok, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut failures: Vec<String> = Vec::new();
    loop {
        let done = match budget {
            Some(b) => started.elapsed() >= b,
            None => tried >= DEFAULT_MUTANTS,
        };
        if done || failures.len() >= 5 {
            break;
        }
        // Half the mutants start from a valid inventory (the example, the lab's), so that they
        // get past the parser into the checks; the others from the bad inventories.
        let pick = match rng.below(4) {
            0 => 0,
            1 => seeds.len() - 1,
            _ => rng.below(seeds.len()),
        };
        let (origin, files) = &seeds[pick];
        let mut files = files.clone();
        let target = rng.below(files.len());
        let steps: Vec<String> = (0..1 + rng.below(3))
            .map(|_| mutate(&mut rng, &mut files[target].1))
            .collect();
        let dir = work.path().join(format!("m{tried}"));
        std::fs::create_dir(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let t = Instant::now();
        let failure = check_mutant(&dir);
        slowest = slowest.max(t.elapsed());
        tried += 1;
        match failure {
            Err(why) => {
                // Keep the mutant where the report says.
                let kept = std::env::temp_dir().join(format!("picaops-fuzz-{seed}-{tried}"));
                let _ = std::fs::remove_dir_all(&kept);
                let _ = std::fs::rename(&dir, &kept);
                failures.push(format!(
                    "{why}\n  seed inventory {origin}, file {}, mutations {steps:?}\n  kept in {}",
                    files[target].0,
                    kept.display()
                ));
            }
            Ok(valid) => {
                loaded_ok += u64::from(valid);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
    eprintln!(
        "inventory fuzz: seed {seed}, {tried} mutants in {:.1?} ({loaded_ok} still valid), \
         slowest load {slowest:.1?}, {} failing",
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
