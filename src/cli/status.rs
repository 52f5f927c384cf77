//! `picaops status`: each layer's own reading (the site plan, the service list, the backup
//! status, the directory's people), handed to `picaops::status` to make one report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use picaops::lifecycle::Mode;
use picaops::output::{Format, Output, Style};
use picaops::site::{self, Request};
use picaops::status::{self, Health, Readings, Seen};

use super::Global;

#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Reads every machine (nothing is applied): whether it answers and how far it is from the \
inventory (VMs, converge: the plan of playbooks/site.yml), what the services run and their \
health, each backup job's data age against its max_age with the last check and drill, and \
who loses access within 30 days. Exit 0 when all is well, 1 when something needs a human \
(listed last).

Examples:
  picaops status
  picaops status -o json | jq '.needs_human'
  picaops status --html /var/www/status/index.html     one static page, no script")]
pub struct StatusArgs {
    /// Playbooks whose plan gives the converge drift (default: playbooks/site.yml beside the
    /// inventory).
    pub playbooks: Vec<PathBuf>,
    /// Also write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Seconds allowed to connect to each machine.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub connect_timeout: u64,
}

pub fn run(args: StatusArgs, global: &Global, out: &Output) -> i32 {
    let (inv, targets, known_hosts) =
        match super::inventory::load_inventory_and_targets(global, None, out) {
            Ok(t) => t,
            Err(code) => return code,
        };
    let mut unread = Vec::new();
    let sites: BTreeMap<String, String> = inv
        .machines()
        .map(|m| {
            let site = inv.site_of(m).map(|s| s.name.clone()).unwrap_or_default();
            (m.name().to_string(), site)
        })
        .collect();
    let settings = super::site::settings(Mode::Plan, 20, args.connect_timeout, false, out);
    let request = Request {
        inventory_dir: global.inventory.clone(),
        playbooks: args.playbooks.clone(),
        ..Default::default()
    };
    let request = Request {
        playbooks: request.playbook_files(),
        ..request
    };
    // The layers are read at the same time; only the plan draws progress.
    let quiet = Output {
        progress: false,
        ..*out
    };
    let list_args = super::service::ListArgs {
        limit: None,
        forks: 20,
        connect_timeout: args.connect_timeout,
    };
    let (plan, services, (backups, backups_unread), (people, people_unread)) =
        std::thread::scope(|scope| {
            let services = scope.spawn(|| super::service::listing(&list_args, global, &quiet).ok());
            let backups = scope.spawn(|| backup_rows(&inv, args.connect_timeout, &quiet));
            let people = scope.spawn(|| match status::read_people(&inv, &global.inventory) {
                Ok(p) => (p, None),
                Err(e) => (None, Some(("the access directory".to_string(), e))),
            });
            let plan = match site::prepare(inv.clone(), targets, known_hosts, settings, &request) {
                Ok(run) => super::site::execute(run, out, "picaops status", "interrupted").ok(),
                Err(e) => {
                    unread.push(("the site plan".to_string(), e.to_string()));
                    None
                }
            };
            let join = "a reading thread panicked";
            (
                plan,
                services.join().expect(join),
                backups.join().expect(join),
                people.join().expect(join),
            )
        });
    unread.extend(backups_unread);
    unread.extend(people_unread);
    let readings = Readings {
        plan: plan.as_ref(),
        sites,
        services: services.as_ref(),
        backups: backups.as_deref(),
        people: people.as_deref(),
        unread,
    };
    let seen_path = Seen::path(&global.inventory);
    let mut seen = seen_path.as_deref().map(Seen::load).unwrap_or_default();
    let now = picaops::backup::time::rfc3339(picaops::date::now_secs() as f64);
    let report = status::assemble(&readings, picaops::date::today(), &now, &mut seen);
    if let Some(p) = &seen_path {
        if let Err(e) = seen.save(p) {
            eprintln!(
                "picaops status: cannot record when machines answered in {}: {e}",
                p.display()
            );
        }
    }
    if let Some(file) = &args.html {
        let page = status::html::render(&report);
        if let Err(e) = picaops::backup::status::write_atomic(file, page.as_bytes(), 0o644) {
            eprintln!(
                "{}: cannot write {}: {e}",
                out.paint(Style::Red, "picaops status"),
                file.display()
            );
            return picaops::output::EXIT_HOST_FAILED;
        }
    }
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Human => {
            let paint = |h: Health, t: &str| {
                let style = match h {
                    Health::Ok => Style::Green,
                    Health::Warn => Style::Yellow,
                    Health::Bad => Style::Red,
                };
                out.paint(style, t)
            };
            print!("{}", status::render_human(&report, &paint));
        }
    }
    report.exit_code()
}

type Unread = Option<(String, String)>;

fn backup_rows(
    inv: &picaops::inventory::Inventory,
    connect_timeout: u64,
    out: &Output,
) -> (Option<Vec<picaops::backup::render::StatusRow>>, Unread) {
    use picaops::backup::{ops, show::Rows};
    if inv.backups.is_empty() {
        return (Some(Vec::new()), None);
    }
    let timeout = Duration::from_secs(connect_timeout.max(1));
    let result = ops::selection(inv, &[], None).and_then(|names| {
        let mut exec = |calls, t| super::backup_remote::ssh(inv, calls, t, timeout, out);
        ops::status(inv, &names, &mut exec)
    });
    match result {
        Ok(report) => (Some(Rows::from(report).0), None),
        Err(e) => (None, Some(("the backups".into(), e.to_string()))),
    }
}
