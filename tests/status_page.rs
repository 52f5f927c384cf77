//! `picaops status --html`: the page loads in a real headless Chromium without errors or outside
//! requests, and a screenshot shows the failing backup job in red (and an all-well page shows no
//! red at all).
//!
//! Needs Debian's `chromium` (`.ci/setup` installs it). Without it the test says so and returns,
//! unless `PICAOPS_REQUIRE_CHROMIUM=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use picaops::backup::render::status_rows;
use picaops::backup::JobStatus;
use picaops::status::{assemble, html, Readings, Seen};

fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let why = "no chromium (apt-get install chromium; .ci/setup does)";
        if std::env::var_os("PICAOPS_REQUIRE_CHROMIUM").is_some_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED status_page: {why}");
    }
    found
}

/// Loads `page` headless: (the DOM Chromium built, its log on stderr).
fn load(chromium: &Path, page: &Path, screenshot: &Path) -> (String, String) {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=412,915",
    ];
    let url = format!("file://{}", page.display());
    let dom = Command::new(chromium)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = Command::new(chromium)
        .args(common)
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        String::from_utf8_lossy(&dom.stderr).into_owned() + &String::from_utf8_lossy(&shot.stderr),
    )
}

/// Pixels of the red of a bad row (#c62828; the banner's red is another), give or take
/// antialiasing.
fn red_pixels(png_file: &Path) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(png_file).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[0].abs_diff(0xc6) < 8 && p[1].abs_diff(0x28) < 8 && p[2].abs_diff(0x28) < 8)
        .count()
}

#[test]
fn the_page_loads_in_chromium_and_the_failing_job_is_red() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A job that never succeeded is late: it needs a human.
    let late = JobStatus {
        job: "db-nightly".into(),
        host: "pica01".into(),
        repository: "rest:https://backup.example/pica01".into(),
        max_age_seconds: 93_600,
        ..Default::default()
    };
    let rows = status_rows(&[late], 1_800_000_000.0);
    let mut seen = Seen::default();
    let failing = assemble(
        &Readings {
            backups: Some(&rows),
            ..Default::default()
        },
        20_000,
        "2026-12-06T22:00:00Z",
        &mut seen,
    );
    let well = assemble(
        &Readings::default(),
        20_000,
        "2026-12-06T22:00:00Z",
        &mut seen,
    );
    assert_eq!((failing.exit_code(), well.exit_code()), (1, 0));

    let mut red = Vec::new();
    for (name, report) in [("failing", &failing), ("well", &well)] {
        let page = dir.path().join(format!("{name}.html"));
        std::fs::write(&page, html::render(report)).unwrap();
        let shot = dir.path().join(format!("{name}.png"));
        let (dom, log) = load(&chromium, &page, &shot);
        for bad in [
            "Uncaught",
            "Failed to load resource",
            "ERR_FILE_NOT_FOUND",
            "net::ERR_",
        ] {
            assert!(!log.contains(bad), "{name}: the page logged {bad}:\n{log}");
        }
        assert!(
            dom.contains("picaops status"),
            "{name}: the DOM is the page:\n{dom}"
        );
        red.push(red_pixels(&shot));
        if name == "failing" {
            let backups = dom
                .split("<table id=\"backups\"")
                .nth(1)
                .expect("a backups table");
            let row = backups
                .split("<tr")
                .find(|r| r.contains("db-nightly"))
                .expect("the job has a row");
            assert!(row.starts_with(" class=\"bad\""), "the job's row: <tr{row}");
        }
    }
    assert!(
        red[0] > 2000,
        "the failing page shows the job in red ({} red pixels)",
        red[0]
    );
    assert_eq!(red[1], 0, "an all-well page has no red");
}
