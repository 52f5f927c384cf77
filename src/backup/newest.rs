//! A job as its repository holds it: the newest snapshot and its age, how many snapshots there
//! are, and what a restore of the latest data reads (the newest files snapshot and the newest
//! snapshot of each dump, with their sizes). Read on the repository's side, so it stays true
//! when the data's site is gone (`backup status`, `site recover`). No I/O here.

use std::collections::BTreeMap;

use serde::Serialize;

use super::restic::Snapshot;
use super::time::rfc3339;

/// The newest data of one job in its repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotInfo {
    /// restic's id of the job's newest snapshot (files or dump).
    pub id: String,
    pub short_id: String,
    /// When it was taken, RFC 3339 in UTC.
    pub time: String,
    /// The same, in Unix seconds.
    pub unix_time: f64,
    /// Seconds between it and the time of the listing.
    pub age_seconds: u64,
    /// How many snapshots the job has in the repository (files and dumps).
    pub count: usize,
    /// What a restore of the latest data uses: the newest files snapshot, then the newest
    /// snapshot of each dump (by file name).
    pub latest: Vec<SnapshotPart>,
    /// The bytes those snapshots hold (what a restore reads), from the summary restic 0.17+
    /// records in each snapshot; `None` when one of them has no summary (an older restic).
    pub restore_bytes: Option<u64>,
}

/// One snapshot a restore of the latest data uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotPart {
    /// `files` or `dump`.
    pub part: String,
    /// The dump's file name (`postgres-db-app.sql`), for a dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub age_seconds: u64,
    /// The bytes it holds (`None`: no summary in the snapshot).
    pub bytes: Option<u64>,
}

fn age(now: f64, at: f64) -> u64 {
    (now - at).max(0.0) as u64
}

impl SnapshotInfo {
    /// From one job's listing (`restic snapshots --json --host H --tag job=J`), as of `now`
    /// (Unix seconds). `None` when the job has no snapshot with a readable time.
    pub fn newest(snapshots: &[Snapshot], now: f64) -> Option<SnapshotInfo> {
        let timed: Vec<(&Snapshot, f64)> = snapshots
            .iter()
            .filter_map(|s| Some((s, s.unix_time()?)))
            .collect();
        let (newest, at) = timed.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
        // The newest snapshot of each part: `files`, or one per dump file name.
        let mut parts: BTreeMap<(u8, String), (&Snapshot, f64)> = BTreeMap::new();
        for &(s, t) in &timed {
            let key = match (s.tag("part"), s.tag("dump")) {
                (Some("files"), _) => (0, String::new()),
                (Some("dump"), Some(name)) => (1, name.to_string()),
                _ => continue,
            };
            match parts.get(&key) {
                Some(&(_, seen)) if seen >= t => {}
                _ => {
                    parts.insert(key, (s, t));
                }
            }
        }
        let latest: Vec<SnapshotPart> = parts
            .into_iter()
            .map(|((kind, name), (s, t))| SnapshotPart {
                part: if kind == 0 { "files" } else { "dump" }.to_string(),
                dump: (kind == 1).then_some(name),
                id: s.id.clone(),
                short_id: short(s),
                time: rfc3339(t),
                age_seconds: age(now, t),
                bytes: s.summary.as_ref().map(|x| x.total_bytes_processed),
            })
            .collect();
        let restore_bytes = latest.iter().map(|p| p.bytes).sum::<Option<u64>>();
        Some(SnapshotInfo {
            id: newest.id.clone(),
            short_id: short(newest),
            time: rfc3339(at),
            unix_time: at,
            age_seconds: age(now, at),
            count: snapshots.len(),
            latest,
            restore_bytes,
        })
    }
}

/// restic's short id, or the first 8 characters of the id when the listing lacks it.
fn short(s: &Snapshot) -> String {
    if s.short_id.is_empty() {
        s.id.chars().take(8).collect()
    } else {
        s.short_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::restic::{parse_snapshots, SnapshotSummary};

    fn snap(id: &str, time: &str, tags: &[&str], bytes: Option<u64>) -> Snapshot {
        Snapshot {
            id: id.into(),
            short_id: String::new(),
            time: time.into(),
            paths: vec![],
            hostname: "bob".into(),
            tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            summary: bytes.map(|b| SnapshotSummary {
                total_bytes_processed: b,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_newest_snapshot_and_the_latest_of_each_part_with_their_sizes() {
        let files = ["picaops", "job=j", "part=files"];
        let dump = ["picaops", "job=j", "part=dump", "dump=db.sql"];
        let list = vec![
            snap("f1aaaaaaaa", "2026-05-20T02:00:00Z", &files, Some(100)),
            snap("d1aaaaaaaa", "2026-05-20T02:00:10Z", &dump, Some(10)),
            snap("f2aaaaaaaa", "2026-05-21T02:00:00+00:00", &files, Some(200)),
            // This run's dump failed: the restore takes yesterday's.
            snap("broken", "not a time", &dump, Some(1)),
        ];
        let now = crate::backup::time::parse_rfc3339("2026-05-21T04:00:00Z").unwrap();
        let n = SnapshotInfo::newest(&list, now).unwrap();
        assert_eq!(
            (n.id.as_str(), n.short_id.as_str(), n.time.as_str()),
            ("f2aaaaaaaa", "f2aaaaaa", "2026-05-21T02:00:00Z")
        );
        assert_eq!((n.age_seconds, n.count), (7200, 4));
        let parts: Vec<(&str, Option<&str>, &str)> = n
            .latest
            .iter()
            .map(|p| (p.part.as_str(), p.dump.as_deref(), p.id.as_str()))
            .collect();
        assert_eq!(
            parts,
            [
                ("files", None, "f2aaaaaaaa"),
                ("dump", Some("db.sql"), "d1aaaaaaaa")
            ]
        );
        assert_eq!(n.latest[1].age_seconds, 26 * 3600 - 10);
        assert_eq!(n.restore_bytes, Some(210));
        // A snapshot without a summary (restic < 0.17): the size is unknown, not zero.
        let old = vec![snap("f3", "2026-05-21T03:00:00Z", &files, None)];
        assert_eq!(SnapshotInfo::newest(&old, now).unwrap().restore_bytes, None);
        assert_eq!(SnapshotInfo::newest(&[], now), None);
    }

    #[test]
    fn reads_the_summary_restic_0_18_puts_in_its_listing() {
        // Trimmed from `restic snapshots --json` of restic 0.18.0.
        let text = r#"[{"time":"2026-12-04T18:16:55.47694042Z","tree":"3928","paths":["/d"],"hostname":"h","username":"root","tags":["picaops","job=j","part=files"],"program_version":"restic 0.18.0","summary":{"backup_start":"2026-12-04T18:16:55.47694042Z","backup_end":"2026-12-04T18:16:56.319469343Z","files_new":1,"files_changed":0,"files_unmodified":0,"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":2,"data_added":100704,"data_added_packed":100667,"total_files_processed":1,"total_bytes_processed":100000},"id":"a82e24a0bb56d8ee498905485c88159b88efa618a0b0323395720b47b14ccb02","short_id":"a82e24a0"}]"#;
        let list = parse_snapshots(&[text.to_string()]).unwrap();
        let n = SnapshotInfo::newest(&list, 1.0e10).unwrap();
        assert_eq!(n.short_id, "a82e24a0");
        assert_eq!(n.restore_bytes, Some(100_000));
    }
}
