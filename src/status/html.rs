//! `picaops status --html FILE`: the report as one self-contained static page (inline CSS, no
//! script, no external asset), colour-coded and readable on a phone.

use std::fmt::Write;

use super::{Health, Report};

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Warn => "warn",
        Health::Bad => "bad",
    }
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0;padding:1rem;background:#fafafa;color:#212121;max-width:60rem}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}\
p.when{color:#616161;margin:0 0 1rem}\
table{border-collapse:collapse;width:100%;font-size:.95rem}\
td,th{padding:.35rem .5rem;text-align:left;vertical-align:top;border-bottom:1px solid #e0e0e0}\
th{font-weight:600;background:#eeeeee}\
tr.ok td:first-child{border-left:.4rem solid #2e7d32}\
tr.warn{background:#fff8e1}tr.warn td:first-child{border-left:.4rem solid #f9a825}\
tr.bad{background:#c62828;color:#ffffff}tr.bad td:first-child{border-left:.4rem solid #8e0000}\
.banner{padding:.8rem 1rem;border-radius:.3rem;font-weight:600}\
.banner.ok{background:#2e7d32;color:#fff}.banner.bad{background:#b71c1c;color:#fff}\
ul.needs{margin:.5rem 0 0 1.2rem;padding:0;font-weight:400}\
@media (max-width:40rem){td,th{display:block;border:0}tr{display:block;border-bottom:1px solid #bdbdbd;padding:.3rem 0}thead{display:none}}";

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>picaops status</title><style>{STYLE}</style></head><body>\n\
         <h1>picaops status</h1><p class=\"when\">made {}</p>\n",
        esc(&r.generated)
    );
    if r.needs_human.is_empty() {
        s.push_str("<div class=\"banner ok\" id=\"verdict\">All is well.</div>\n");
    } else {
        s.push_str("<div class=\"banner bad\" id=\"verdict\">Needs a human:<ul class=\"needs\">");
        for n in &r.needs_human {
            let _ = write!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul></div>\n");
    }

    table(
        &mut s,
        "machines",
        &["machine", "site", "state"],
        r.machines
            .iter()
            .map(|m| (m.health, vec![m.machine.clone(), m.site.clone(), m.state()])),
    );
    table(
        &mut s,
        "services",
        &["service", "machine", "state", "health", "drift"],
        r.services.iter().map(|v| {
            (
                v.health_mark,
                vec![
                    v.row.service.clone(),
                    v.row.machine.clone(),
                    v.row.state.clone(),
                    v.row.health.clone(),
                    v.row.drift.clone(),
                ],
            )
        }),
    );
    table(
        &mut s,
        "backups",
        &["job", "state", "data age / max", "last check", "last drill"],
        r.backups.iter().map(|j| {
            let age = j
                .row
                .data_age_seconds
                .map(crate::sections::schedule::human_duration)
                .unwrap_or_else(|| "never".into());
            let mut state = super::state_word(j.row.state).to_string();
            if let Some(reason) = &j.row.reason {
                state.push_str(": ");
                state.push_str(reason);
            }
            (
                j.health,
                vec![
                    j.row.job.clone(),
                    state,
                    format!(
                        "{age} / {}",
                        crate::sections::schedule::human_duration(j.row.max_age_seconds)
                    ),
                    super::verdict(&j.row.last_check, j.row.last_check_ok),
                    super::verdict(&j.row.last_drill, j.row.last_drill_ok),
                ],
            )
        }),
    );
    table(
        &mut s,
        "access ending within 30 days",
        &["person", "last day", "days left"],
        r.access_ending.iter().map(|e| {
            (
                Health::Warn,
                vec![e.login.clone(), e.last_day.clone(), e.days_left.to_string()],
            )
        }),
    );
    s.push_str("</body></html>\n");
    s
}

fn table(
    s: &mut String,
    title: &str,
    heads: &[&str],
    rows: impl Iterator<Item = (Health, Vec<String>)>,
) {
    let id = title.split_whitespace().next().unwrap_or(title);
    let _ = write!(
        s,
        "<h2>{}</h2><table id=\"{}\"><thead><tr>",
        esc(title),
        esc(id)
    );
    for h in heads {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    let mut any = false;
    for (health, cells) in rows {
        any = true;
        let _ = write!(s, "<tr class=\"{}\">", class(health));
        for c in cells {
            let _ = write!(s, "<td>{}</td>", esc(&c));
        }
        s.push_str("</tr>");
    }
    if !any {
        let _ = write!(
            s,
            "<tr class=\"ok\"><td colspan=\"{}\">none</td></tr>",
            heads.len()
        );
    }
    s.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_nothing_is_loaded_from_elsewhere() {
        let mut seen = super::super::Seen::default();
        let readings = super::super::Readings {
            unread: vec![("<script>alert(1)</script>".into(), "x & y".into())],
            ..Default::default()
        };
        let r = super::super::assemble(&readings, 0, "now", &mut seen);
        let page = render(&r);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("x &amp; y"));
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "the page loads {external}");
        }
    }
}
