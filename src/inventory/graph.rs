//! Drawing the topology: sites → hosts → VMs → services, as a terminal tree, Graphviz dot, or an
//! SVG drawn by Graphviz's `dot` when it is installed.

use std::fmt::Write as _;

use super::model::{HypervisorKind, Inventory};

/// One node of the tree: a label, a dimmed detail, children.
struct Node {
    label: String,
    detail: String,
    children: Vec<Node>,
}

fn services_on(inv: &Inventory, machine: &str) -> Vec<Node> {
    inv.services
        .values()
        .filter(|s| s.host.as_str() == machine)
        .map(|s| Node {
            label: s.name.clone(),
            detail: format!(
                "service{}",
                s.description
                    .as_deref()
                    .map(|d| format!(", {d}"))
                    .unwrap_or_default()
            ),
            children: Vec::new(),
        })
        .collect()
}

fn tree(inv: &Inventory) -> Vec<Node> {
    inv.sites
        .values()
        .map(|site| {
            let mut detail = site.description.clone().unwrap_or_default();
            if let Some(to) = &site.backs_up_to {
                let _ = write!(
                    detail,
                    "{}backs up to {to}",
                    if detail.is_empty() { "" } else { "; " }
                );
            }
            let hosts = inv
                .hosts
                .values()
                .filter(|h| h.site.as_str() == site.name)
                .map(|h| {
                    let mut parts = vec!["host".to_string()];
                    if h.hypervisor != HypervisorKind::None {
                        parts.push(format!("{:?}", h.hypervisor).to_lowercase());
                    }
                    if let Some(a) = &h.ssh.address {
                        parts.push(a.clone());
                    }
                    let mut children: Vec<Node> = inv
                        .vms
                        .values()
                        .filter(|v| v.host.as_str() == h.name)
                        .map(|v| {
                            let mut parts = vec!["vm".to_string()];
                            if let Some(c) = v.vcpus {
                                parts.push(format!("{c} vCPU"));
                            }
                            if let Some(m) = v.memory {
                                parts.push(crate::human::bytes(m));
                            }
                            if let Some(a) = &v.ssh.address {
                                parts.push(a.clone());
                            }
                            Node {
                                label: v.name.clone(),
                                detail: parts.join(", "),
                                children: services_on(inv, &v.name),
                            }
                        })
                        .collect();
                    children.extend(services_on(inv, &h.name));
                    Node {
                        label: h.name.clone(),
                        detail: parts.join(", "),
                        children,
                    }
                })
                .collect();
            Node {
                label: site.name.clone(),
                detail,
                children: hosts,
            }
        })
        .collect()
}

/// The topology as an indented tree with box-drawing branches.
pub fn render_tree(inv: &Inventory, bold: &str, dim: &str, reset: &str) -> String {
    fn walk(
        out: &mut String,
        node: &Node,
        prefix: &str,
        last: bool,
        root: bool,
        s: (&str, &str, &str),
    ) {
        let (bold, dim, reset) = s;
        let branch = if root {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        let _ = writeln!(
            out,
            "{prefix}{branch}{bold}{}{reset}  {dim}{}{reset}",
            node.label, node.detail
        );
        let child_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (i, child) in node.children.iter().enumerate() {
            walk(
                out,
                child,
                &child_prefix,
                i + 1 == node.children.len(),
                false,
                s,
            );
        }
    }
    let mut out = String::new();
    for node in tree(inv) {
        walk(&mut out, &node, "", true, true, (bold, dim, reset));
    }
    out
}

/// The topology in Graphviz dot: one cluster per site, backup links as dashed edges.
pub fn render_dot(inv: &Inventory) -> String {
    fn id(kind: &str, name: &str) -> String {
        format!("\"{kind}:{}\"", name.replace('"', ""))
    }
    let mut out = String::from(
        "digraph picaops {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n",
    );
    for site in tree(inv) {
        let _ = writeln!(
            out,
            "  subgraph \"cluster_{}\" {{\n    label=\"{}\";",
            site.label, site.label
        );
        let _ = writeln!(
            out,
            "    {} [label=\"{}\", shape=folder];",
            id("site", &site.label),
            site.label
        );
        let mut stack: Vec<(String, &Node)> = site
            .children
            .iter()
            .map(|h| (id("site", &site.label), h))
            .collect();
        while let Some((parent, node)) = stack.pop() {
            let kind = node.detail.split(',').next().unwrap_or("node");
            let me = id(kind, &node.label);
            let shape = match kind {
                "vm" => "component",
                "service" => "ellipse",
                _ => "box3d",
            };
            let _ = writeln!(out, "    {me} [label=\"{}\", shape={shape}];", node.label);
            let _ = writeln!(out, "    {parent} -> {me};");
            stack.extend(node.children.iter().map(|c| (me.clone(), c)));
        }
        out.push_str("  }\n");
    }
    for site in inv.sites.values() {
        if let Some(to) = &site.backs_up_to {
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label=\"backups\"];",
                id("site", &site.name),
                id("site", to)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// Why no SVG could be drawn.
#[derive(Debug, thiserror::Error)]
pub enum SvgError {
    #[error("Graphviz is not installed here (no `dot` program): install it (`apt-get install graphviz`), or print the graph with `--format dot` and draw it elsewhere")]
    NoGraphviz,
    #[error("Graphviz's `dot` failed: {0}")]
    Dot(String),
}

/// The site map as SVG, drawn by Graphviz's `dot` from [`render_dot`].
pub fn render_svg(inv: &Inventory) -> Result<String, SvgError> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SvgError::NoGraphviz),
        Err(e) => return Err(SvgError::Dot(e.to_string())),
    };
    let dot = render_dot(inv);
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(dot.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| SvgError::Dot(e.to_string()))?;
    if let Some(Err(e)) = written {
        return Err(SvgError::Dot(format!("writing the graph to it: {e}")));
    }
    if !out.status.success() {
        return Err(SvgError::Dot(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| SvgError::Dot("its output is not UTF-8".into()))
}
