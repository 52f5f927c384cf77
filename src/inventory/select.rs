//! `--limit` patterns: which machines a command acts on.
//!
//! A pattern is a comma-separated list of terms. A term is `all`, or a machine, group or site
//! name, or a glob over those names (`pica*`, `?ob`). A term starting with `!` removes what it
//! matches. Without any positive term, the selection starts from every machine. A term that
//! matches nothing is an error (a typo must not silently act on fewer hosts).
//!
//! A limit that is empty once trimmed (`-l ""`, `-l ","`), or that has an empty term
//! (`a,,b`), is refused: it nearly always comes from an unset shell variable
//! (`-l "$HOSTS"`), and must not turn into "every machine". `all` says that on purpose.
//!
//! `@failed` stands for the machines the last apply left failed (see [`super::failed`]), and
//! `@FILE` for the names in FILE, one per line: both are refused when they name nothing (no
//! record, an empty record or file), and each name in them must match like any other term.

use std::path::Path;

use super::failed;
use super::model::{Inventory, Machine};
use crate::diagnostic::{did_you_mean, Place};

/// Why a `--limit` was refused (nothing was done).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "--limit is empty ({pattern:?}): picaops refuses it rather than act on every \
         machine. An empty limit usually comes from an unset shell variable \
         (`-l \"$HOSTS\"`). To act on every machine on purpose, give `-l all` \
         (or leave out --limit)."
    )]
    Empty { pattern: String },
    /// `term`: its position, from 1, among `of` terms.
    #[error(
        "--limit {pattern:?} has an empty term (term {term} of {of}), often an unset shell \
         variable between commas: nothing was done. Remove the extra comma or `!`, or \
         fill in the missing name."
    )]
    EmptyTerm {
        pattern: String,
        term: usize,
        of: usize,
    },
    /// `suggestion`: the closest name the inventory has.
    #[error(
        "--limit: `{term}` matches no machine, group or site.{} \
         See `picaops inventory graph` for the names.",
        .suggestion.as_ref().map(|s| format!(" Did you mean `{s}`?")).unwrap_or_default()
    )]
    NoMatch {
        term: String,
        suggestion: Option<String>,
    },
    /// `@failed` with nothing recorded: `why` says whether an apply ever ran.
    #[error(
        "--limit @failed: no failed machines are recorded for this inventory ({inventory}): \
         {why}. Nothing was done. Name the machines to act on, or give `-l all`."
    )]
    NoFailed { inventory: String, why: String },
    /// The record of failed machines, or a `@FILE`, cannot be read.
    #[error("--limit {term}: {why}. Nothing was done.")]
    Unreadable { term: String, why: String },
    #[error(
        "--limit {term}: {path} names no machine (only blank lines and comments): nothing was \
         done. An empty list must not mean every machine; give `-l all` for that."
    )]
    EmptyList { term: String, path: String },
    /// A line of a `@FILE` that is not one name.
    #[error("{place}: {why} (read for --limit {term}). Nothing was done.")]
    BadLine {
        term: String,
        place: Place,
        why: String,
    },
    /// A name read from `@failed` or a `@FILE` that matches nothing.
    #[error(
        "{place}: `{name}` (read for --limit {term}) matches no machine, group or site.{} \
         Nothing was done: fix the list, or name the machines on the command line.",
        .suggestion.as_ref().map(|s| format!(" Did you mean `{s}`?")).unwrap_or_default()
    )]
    NoMatchListed {
        term: String,
        place: Place,
        name: String,
        suggestion: Option<String>,
    },
}

/// A positive or negated term once `@failed` and `@FILE` are read: the name or glob, and the
/// list and place it was read from.
struct Term {
    text: String,
    listed: Option<(String, Place)>,
}

/// Why a run's machines could not be made ready to contact (nothing was contacted).
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("--limit excludes every machine: nothing to do")]
    Nothing,
    #[error(transparent)]
    NoAddress(#[from] super::NoAddress),
    #[error("cannot write the known_hosts file picaops passes to ssh: {0}")]
    KnownHosts(#[source] std::io::Error),
}

/// The transport targets of the machines `pattern` selects, and the known_hosts file made of
/// the inventory's pinned keys that ssh is given for them.
pub fn targets(
    inv: &Inventory,
    pattern: Option<&str>,
) -> Result<(Vec<crate::transport::Target>, std::path::PathBuf), TargetsError> {
    let machines = select(inv, pattern)?;
    if machines.is_empty() {
        return Err(TargetsError::Nothing);
    }
    let targets = machines
        .into_iter()
        .map(super::target)
        .collect::<Result<Vec<_>, _>>()?;
    let known_hosts = super::write_known_hosts(inv).map_err(TargetsError::KnownHosts)?;
    Ok((targets, known_hosts))
}

/// Machines matching `pattern` (every machine when `None`), in inventory order.
pub fn select<'a>(
    inv: &'a Inventory,
    pattern: Option<&str>,
) -> Result<Vec<Machine<'a>>, LimitError> {
    let Some(pattern) = pattern else {
        return Ok(inv.machines().collect());
    };
    let mut include: Vec<Term> = Vec::new();
    let mut exclude: Vec<Term> = Vec::new();
    for term in terms(pattern)? {
        let (negated, t) = match term.strip_prefix('!') {
            Some(t) => (true, t.trim()),
            None => (false, term),
        };
        let read = match t.strip_prefix('@') {
            Some(list) => listed(inv, t, list)?,
            None => vec![Term {
                text: t.to_string(),
                listed: None,
            }],
        };
        if negated {
            exclude.extend(read);
        } else {
            include.extend(read);
        }
    }
    for term in include.iter().chain(&exclude) {
        if !inv.machines().any(|m| matches(inv, m, &term.text)) {
            let names = all_names(inv);
            let suggestion = did_you_mean(&term.text, names.iter().copied()).map(String::from);
            return Err(match &term.listed {
                None => LimitError::NoMatch {
                    term: term.text.clone(),
                    suggestion,
                },
                Some((list, place)) => LimitError::NoMatchListed {
                    term: list.clone(),
                    place: place.clone(),
                    name: term.text.clone(),
                    suggestion,
                },
            });
        }
    }
    Ok(inv
        .machines()
        .filter(|m| include.is_empty() || include.iter().any(|t| matches(inv, *m, &t.text)))
        .filter(|m| !exclude.iter().any(|t| matches(inv, *m, &t.text)))
        .collect())
}

/// The names `@failed` (the record of the last apply) or `@FILE` stand for; `term` is the
/// whole `@…` term, `what` the part after `@`. Never empty: a list naming nothing is an error.
fn listed(inv: &Inventory, term: &str, what: &str) -> Result<Vec<Term>, LimitError> {
    let unreadable = |why: String| LimitError::Unreadable {
        term: term.to_string(),
        why,
    };
    let names = if what == "failed" {
        let record = failed::read(&inv.dir).map_err(|e| unreadable(e.to_string()))?;
        let inventory = inv.dir.display().to_string();
        match record {
            None => {
                let at = failed::record_path(&inv.dir)
                    .map(|p| format!(" (the record would be {})", p.display()))
                    .unwrap_or_default();
                return Err(LimitError::NoFailed {
                    inventory,
                    why: format!("no apply of it has run from this account yet{at}"),
                });
            }
            Some(r) if r.machines.is_empty() => {
                return Err(LimitError::NoFailed {
                    inventory,
                    why: format!(
                        "the last apply{} succeeded on every machine it was given",
                        r.written.map(|w| format!(" ({w})")).unwrap_or_default()
                    ),
                })
            }
            Some(r) => r.machines,
        }
    } else {
        if what.is_empty() {
            return Err(unreadable(
                "`@` takes `failed` (the machines the last apply left failed) or a file of names"
                    .into(),
            ));
        }
        let path = Path::new(what);
        let text = std::fs::read_to_string(path)
            .map_err(|e| unreadable(format!("cannot read {what}: {e}")))?;
        let names =
            failed::parse_names(path, &text).map_err(|(place, why)| LimitError::BadLine {
                term: term.to_string(),
                place,
                why,
            })?;
        if names.is_empty() {
            return Err(LimitError::EmptyList {
                term: term.to_string(),
                path: what.to_string(),
            });
        }
        names
    };
    Ok(names
        .into_iter()
        .map(|l| Term {
            text: l.name,
            listed: Some((term.to_string(), l.place)),
        })
        .collect())
}

/// The trimmed terms of a `--limit`, refusing an empty limit or an empty term.
fn terms(pattern: &str) -> Result<Vec<&str>, LimitError> {
    if pattern.split(',').all(|t| t.trim().is_empty()) {
        return Err(LimitError::Empty {
            pattern: pattern.to_string(),
        });
    }
    let terms: Vec<&str> = pattern.split(',').map(str::trim).collect();
    if let Some(n) = terms
        .iter()
        .position(|t| t.strip_prefix('!').unwrap_or(t).trim().is_empty())
    {
        return Err(LimitError::EmptyTerm {
            pattern: pattern.to_string(),
            term: n + 1,
            of: terms.len(),
        });
    }
    Ok(terms)
}

/// Does `machine` match a play's `hosts:` pattern? Unlike [`select`], a term that matches no
/// machine is not an error (a play for a group that has no member yet simply does nothing).
pub fn pattern_matches(inv: &Inventory, machine: Machine<'_>, pattern: &str) -> bool {
    let mut included = false;
    let mut any_positive = false;
    for term in pattern.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match term.strip_prefix('!') {
            Some(t) if matches(inv, machine, t.trim()) => return false,
            Some(_) => {}
            None => {
                any_positive = true;
                included |= matches(inv, machine, term);
            }
        }
    }
    included || !any_positive
}

fn all_names(inv: &Inventory) -> Vec<&str> {
    inv.machines()
        .map(|m| m.name())
        .chain(inv.groups.keys().map(String::as_str))
        .chain(inv.sites.keys().map(String::as_str))
        .collect()
}

fn matches(inv: &Inventory, machine: Machine<'_>, term: &str) -> bool {
    if term == "all" {
        return true;
    }
    let site = inv.site_of(machine).map(|s| s.name.as_str());
    std::iter::once(machine.name())
        .chain(machine.groups().iter().map(|g| g.as_str()))
        .chain(site)
        .any(|name| glob(term, name))
}

/// Shell-style glob with `*` and `?` (no character classes).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("pica*", "pica01"));
        assert!(glob("*", "bob"));
        assert!(glob("?ob", "bob"));
        assert!(!glob("pica?", "pica01"));
        assert!(glob("p*1*", "pica01-test"));
        assert!(!glob("bob", "bobby"));
    }
}
