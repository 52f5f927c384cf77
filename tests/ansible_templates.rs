//! Template files render as Ansible's `template` module renders them, byte for byte: the same
//! templates (loops, conditions, indented block tags, a `#jinja2:` header turning `trim_blocks`
//! off or `lstrip_blocks` on, no final newline, and the repository's own playbook templates)
//! are rendered by a real `ansible-playbook` (ansible-core from PyPI, `connection: local`) and by
//! picaops's template files renderer, the one the `template` task uses.
//!
//! Needs ansible-core: `PICAOPS_ANSIBLE` names its venv (default /var/cache/picaops-ci/ansible,
//! which `.ci/setup` makes). Without it the test says so and returns, unless
//! `PICAOPS_REQUIRE_ANSIBLE=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (name, text) of the templates compared.
fn templates() -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = [
        (
            "loop.j2",
            "# users\n{% for u in users %}\nuser {{ u }}\n{% endfor %}\n{% if extra %}\nextra: yes\n{% endif %}\n  {% for u in users %}\n  indented {{ u }}\n  {% endfor %}\nend\n",
        ),
        (
            "header-trim-off.j2",
            "#jinja2: trim_blocks: False\n{% for u in users %}\n{{ u }}\n{% endfor %}\n",
        ),
        (
            "header-lstrip.j2",
            "#jinja2: lstrip_blocks: True\n  {% for u in users %}\n  {{ u }}\n  {% endfor %}\nno newline at the end",
        ),
        (
            "dash-control.j2",
            "a\n{%- if extra %}\nb\n{%- endif %}\nc {# a comment #}\n{% set n = users | length %}\nn={{ n }}\n",
        ),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/templates");
    for name in ["50unattended-upgrades.j2", "chrony-picaops.sources.j2"] {
        t.push((
            name.to_string(),
            std::fs::read_to_string(own.join(name)).unwrap(),
        ));
    }
    t
}

const VARS: &str = r#"{"users": ["ann", "ben"], "extra": true, "ntp_pools": ["a.pool.ntp.org", "b.pool.ntp.org"], "unattended_upgrades_mail": "root@picasoft.net"}"#;

fn ansible() -> Option<PathBuf> {
    let venv = std::env::var_os("PICAOPS_ANSIBLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/picaops-ci/ansible"));
    let found = venv.join("bin/ansible-playbook").is_file().then_some(venv);
    if found.is_none() {
        let why = "no ansible-core venv (PICAOPS_ANSIBLE, default /var/cache/picaops-ci/ansible; .ci/setup makes it)";
        if std::env::var_os("PICAOPS_REQUIRE_ANSIBLE").is_some_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED ansible_templates: {why}");
    }
    found
}

#[test]
fn template_files_render_byte_for_byte_as_ansible_renders_them() {
    let Some(venv) = ansible() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("templates")).unwrap();
    std::fs::create_dir_all(d.join("out")).unwrap();
    let templates = templates();
    for (name, text) in &templates {
        std::fs::write(d.join("templates").join(name), text).unwrap();
    }
    let names: Vec<&str> = templates.iter().map(|(n, _)| n.as_str()).collect();
    std::fs::write(d.join("vars.json"), VARS).unwrap();
    std::fs::write(
        d.join("site.yml"),
        format!(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n    \
             - template: {{src: \"templates/{{{{ item }}}}\", dest: \"{}/out/{{{{ item }}}}\"}}\n      \
             loop: {}\n",
            d.display(),
            serde_json::to_string(&names).unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(venv.join("bin/ansible-playbook"))
        .current_dir(d)
        .args(["-i", "localhost,", "-e", "@vars.json", "-e"])
        .arg(format!(
            "ansible_python_interpreter={}",
            venv.join("bin/python").display()
        ))
        .arg("site.yml")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook runs");
    assert!(
        out.status.success(),
        "ansible-playbook failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let vars: serde_json::Value = serde_json::from_str(VARS).unwrap();
    let ctx = minijinja::Value::from_serialize(&vars);
    let engine = picaops::playbook::template::Templates::new();
    let mut differ = Vec::new();
    for (name, text) in &templates {
        let ansible = std::fs::read(d.join("out").join(name)).unwrap();
        let ours = engine
            .render_file(text, &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if ours.as_bytes() != ansible.as_slice() {
            differ.push(format!(
                "{name}:\n  ansible: {:?}\n  picaops: {ours:?}",
                String::from_utf8_lossy(&ansible)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_header_picaops_does_not_read_is_refused_at_line_one() {
    let engine = picaops::playbook::template::Templates::new();
    let ctx = minijinja::Value::from_serialize(serde_json::json!({}));
    let e = engine
        .render_file("#jinja2: variable_start_string: '[['\n[[ x ]]\n", &ctx)
        .unwrap_err();
    assert_eq!((e.line, e.column), (Some(1), Some(1)));
    assert!(e.message.contains("variable_start_string"), "{e}");
    // An error below the header is placed on the file's own line.
    let e = engine
        .render_file("#jinja2: trim_blocks: False\nok\n{{ missing }}\n", &ctx)
        .unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
}
