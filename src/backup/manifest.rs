//! The sha256 manifest picaops records before each file backup and puts INTO the snapshot, so a
//! drill at the other site can prove that what it restored is what was backed up.
//!
//! Decision: every regular file of the job's paths is listed (path, size, mtime) with its
//! sha256 — all files, not a sample. The cost is kept down the way restic keeps its own down: a
//! file whose size, mtime, ctime and inode are unchanged since the previous manifest keeps its
//! previous hash without being read, so only new and changed files are hashed (the first run
//! reads everything once more than restic does).
//!
//! Layout: the manifest is a directory of 64 shard files (`00.jsonl` … `3f.jsonl`, a file goes
//! to the shard named by the first byte of sha256(path) modulo 64), rewritten only when their
//! content changes. restic stores each shard as its own blob, so a run that changes 1% of the
//! files adds only the few shards listing them, not the whole manifest again.
//!
//! Exclusions follow restic's `--exclude` patterns for the common forms (`*.log`, `/DATA/x/cache`,
//! `**/tmp`, `?`, `[a-z]`); `!` re-inclusions are ignored, which only leaves such files out of
//! the manifest (unverified, never a false alarm). Symbolic links, sockets and devices are not
//! listed; neither are names that are not UTF-8.
//!
//! Verification: a listed file missing from the restore, or restored with the recorded mtime but
//! other content, fails the drill. A restored file whose mtime differs from the manifest's was
//! changed between the manifest and restic reading it: counted apart, never a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One file of the manifest (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: String,
    /// Only for reusing the hash next time (not restored by restic, not verified).
    #[serde(default)]
    pub ctime_ns: i128,
    #[serde(default)]
    pub ino: u64,
}

/// What building a manifest did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BuildStats {
    pub files: u64,
    pub bytes: u64,
    /// Files read and hashed this time.
    pub hashed: u64,
    pub bytes_hashed: u64,
    /// Files whose previous hash was reused (unchanged).
    pub reused: u64,
    /// Files that could not be read (restic will report them too).
    pub unreadable: u64,
}

/// What verifying a restore against a manifest found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub listed: u64,
    pub verified: u64,
    pub bytes_verified: u64,
    /// Changed on the data host between the manifest and the backup (not an error).
    pub changed_during_backup: u64,
    /// Listed but not restored (at most 20 names kept).
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Restored with the recorded mtime but other content (at most 20 names kept).
    pub corrupted: Vec<String>,
    pub corrupted_count: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing_count == 0 && self.corrupted_count == 0
    }
}

const KEEP_NAMES: usize = 20;

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn ctime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// sha256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Number of shard files (see the module's documentation).
pub const SHARDS: usize = 64;

fn shard_of(path: &str) -> usize {
    usize::from(Sha256::digest(path.as_bytes())[0]) % SHARDS
}

fn shard_name(i: usize) -> String {
    format!("{i:02x}.jsonl")
}

/// Reads a manifest directory (missing: empty). Lines that do not parse are skipped.
pub fn read(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        for line in BufReader::new(std::fs::File::open(&file)?).lines() {
            let line = line?;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                entries.push(e);
            }
        }
    }
    Ok(entries)
}

/// Walks `paths`, hashes new and changed files (reusing the previous manifest's hashes of
/// unchanged ones) and writes the manifest directory `out` (each changed shard through a
/// temporary file, fsync, rename). `skip`: paths never listed (the
/// manifest itself, picaops's state).
pub fn build(
    paths: &[String],
    exclude: &[String],
    skip: &[PathBuf],
    out: &Path,
) -> std::io::Result<BuildStats> {
    let previous: HashMap<String, Entry> = read(out)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let patterns: Vec<Pattern> = exclude
        .iter()
        .filter(|p| !p.starts_with('!'))
        .map(|p| Pattern::new(p))
        .collect();
    let mut stats = BuildStats::default();
    let mut entries = Vec::new();
    for root in paths {
        walk(
            Path::new(root),
            &patterns,
            skip,
            &previous,
            &mut entries,
            &mut stats,
        );
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    hash_missing(&mut entries, &mut stats);
    std::fs::create_dir_all(out)?;
    let mut shards: Vec<Vec<u8>> = vec![Vec::new(); SHARDS];
    for e in &entries {
        let shard = &mut shards[shard_of(&e.path)];
        serde_json::to_writer(&mut *shard, e)?;
        shard.push(b'\n');
    }
    for (i, content) in shards.iter().enumerate() {
        let file = out.join(shard_name(i));
        if content.is_empty() {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => continue,
            }
        }
        // Unchanged shards keep their mtime, so restic does not even read them again.
        if std::fs::read(&file).is_ok_and(|old| &old == content) {
            continue;
        }
        let tmp = out.join(format!(".{}.tmp", shard_name(i)));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &file)?;
    }
    Ok(stats)
}

fn walk(
    path: &Path,
    patterns: &[Pattern],
    skip: &[PathBuf],
    previous: &HashMap<String, Entry>,
    entries: &mut Vec<Entry>,
    stats: &mut BuildStats,
) {
    if skip.iter().any(|s| s == path) || patterns.iter().any(|p| p.matches(path)) {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        stats.unreadable += 1;
        return;
    };
    if meta.is_dir() {
        let Ok(dir) = std::fs::read_dir(path) else {
            stats.unreadable += 1;
            return;
        };
        let mut children: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            walk(&child, patterns, skip, previous, entries, stats);
        }
        return;
    }
    if !meta.is_file() {
        return;
    }
    let Some(name) = path.to_str() else {
        return;
    };
    let (size, mtime, ctime, ino) = (meta.len(), mtime_ns(&meta), ctime_ns(&meta), meta.ino());
    let reuse = previous
        .get(name)
        .filter(|p| p.size == size && p.mtime_ns == mtime && p.ctime_ns == ctime && p.ino == ino);
    // An empty hash means "to hash": done after the walk, on every core.
    let sha256 = match reuse {
        Some(p) => {
            stats.reused += 1;
            p.sha256.clone()
        }
        None => String::new(),
    };
    entries.push(Entry {
        path: name.to_string(),
        size,
        mtime_ns: mtime,
        sha256,
        ctime_ns: ctime,
        ino,
    });
}

/// Hashes every entry without a hash, on up to 4 threads (restic waits for the manifest, and a
/// first run hashes everything); drops the files that cannot be read.
fn hash_missing(entries: &mut Vec<Entry>, stats: &mut BuildStats) {
    let todo: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].sha256.is_empty())
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hashes: Vec<(usize, Option<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        done.push((i, sha256_file(Path::new(&entries[i].path)).ok()));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut unreadable = vec![false; entries.len()];
    for (i, hash) in hashes {
        match hash {
            Some(h) => {
                stats.hashed += 1;
                stats.bytes_hashed += entries[i].size;
                entries[i].sha256 = h;
            }
            None => {
                stats.unreadable += 1;
                unreadable[i] = true;
            }
        }
    }
    let mut i = 0;
    entries.retain(|_| {
        i += 1;
        !unreadable[i - 1]
    });
    stats.files = entries.len() as u64;
    stats.bytes = entries.iter().map(|e| e.size).sum();
}

/// Checks the files restored under `root` against `entries` (their paths are absolute on the
/// data host; restic restores them below `root`).
pub fn verify(entries: &[Entry], root: &Path) -> VerifyReport {
    let mut r = VerifyReport::default();
    for e in entries {
        r.listed += 1;
        let restored = root.join(e.path.trim_start_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(&restored) else {
            r.missing_count += 1;
            if r.missing.len() < KEEP_NAMES {
                r.missing.push(e.path.clone());
            }
            continue;
        };
        if mtime_ns(&meta) != e.mtime_ns {
            r.changed_during_backup += 1;
            continue;
        }
        let same = meta.is_file()
            && meta.len() == e.size
            && sha256_file(&restored).is_ok_and(|h| h == e.sha256);
        if same {
            r.verified += 1;
            r.bytes_verified += e.size;
        } else {
            r.corrupted_count += 1;
            if r.corrupted.len() < KEEP_NAMES {
                r.corrupted.push(e.path.clone());
            }
        }
    }
    r
}

/// A restic-style exclude pattern, split into path components.
struct Pattern {
    anchored: bool,
    parts: Vec<String>,
}

impl Pattern {
    fn new(p: &str) -> Pattern {
        let anchored = p.starts_with('/');
        Pattern {
            anchored,
            parts: p
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    /// True when `path` or one of its parents matches (an excluded directory takes its
    /// content with it).
    fn matches(&self, path: &Path) -> bool {
        let Some(text) = path.to_str() else {
            return false;
        };
        let comps: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        if self.parts.is_empty() {
            return false;
        }
        let starts: Vec<usize> = if self.anchored {
            vec![0]
        } else {
            (0..comps.len()).collect()
        };
        starts
            .into_iter()
            .any(|s| prefix_match(&self.parts, &comps[s..]))
    }
}

/// Does the pattern match a prefix of `comps` (the whole pattern consumed)?
fn prefix_match(pat: &[String], comps: &[&str]) -> bool {
    match pat.split_first() {
        None => true,
        Some((first, rest)) if first == "**" => {
            (0..=comps.len()).any(|skip| prefix_match(rest, &comps[skip..]))
        }
        Some((first, rest)) => match comps.split_first() {
            Some((c, more)) => glob(first.as_bytes(), c.as_bytes()) && prefix_match(rest, more),
            None => false,
        },
    }
}

/// Shell-style match of one component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return s.first() == Some(&b'[') && glob(rest, &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'!' | b'^', cls)) => (true, cls),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&rest[end + 1..], &s[1..])
        }
        Some((&b, rest)) => s.first() == Some(&b) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_like_restic() {
        let m = |p: &str, path: &str| Pattern::new(p).matches(Path::new(path));
        assert!(m("*.log", "/DATA/app/x.log"));
        assert!(m("*.log", "/DATA/app/logs.log/inner"));
        assert!(!m("*.log", "/DATA/app/x.log.gz"));
        assert!(m("/DATA/app/cache", "/DATA/app/cache/a/b"));
        assert!(!m("/DATA/app/cache", "/srv/DATA/app/cache"));
        assert!(m("cache", "/srv/DATA/app/cache"));
        assert!(m("**/tmp", "/a/b/tmp/c"));
        assert!(m("/DATA/**/*.tmp", "/DATA/x/y/z.tmp"));
        assert!(m("f[0-9]", "/d/f7"));
        assert!(!m("f[!0-9]", "/d/f7"));
        assert!(m("?.db", "/d/a.db"));
    }
}
