//! Playbooks written for Ansible give the same files under picaops, byte for byte.
//!
//! - Template files render as Ansible's `template` module renders them: the same templates
//!   (loops, conditions, indented block tags, a `#jinja2:` header turning `trim_blocks` off or
//!   `lstrip_blocks` on, no final newline, the repository's own playbook templates) are rendered
//!   by a real `ansible-playbook` (ansible-core from PyPI, `connection: local`) and by picaops's
//!   template files renderer, the one the `template` task uses.
//! - One playbook in Ansible's words (`ansible.builtin.*` names, `lineinfile`, Ansible's option
//!   aliases and `yes`/`no`, task values with block tags) is run by `ansible-playbook` into one directory and by `picaops
//!   apply`, through a real sshd on a loopback address, into another; the two trees must match in
//!   content, kind, mode and link target.
//!
//! Needs ansible-core: `PICAOPS_ANSIBLE` names its venv (default /var/cache/picaops-ci/ansible,
//! which `.ci/setup` makes). Without it the test says so and returns, unless
//! `PICAOPS_REQUIRE_ANSIBLE=1` (CI), where it fails.

mod transport_support;

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

/// Runs `ansible-playbook -i localhost, ARGS PLAYBOOK` in `dir` with the venv's Python; fails
/// the test with Ansible's output when it fails.
fn ansible_playbook(venv: &Path, dir: &Path, args: &[&str], playbook: &str) {
    let out = Command::new(venv.join("bin/ansible-playbook"))
        .current_dir(dir)
        .args(["-i", "localhost,"])
        .args(args)
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={}",
            venv.join("bin/python").display()
        ))
        .arg(playbook)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_GATHERING", "explicit")
        .output()
        .expect("ansible-playbook runs");
    assert!(
        out.status.success(),
        "ansible-playbook failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    ansible_playbook(&venv, d, &["-e", "@vars.json"], "site.yml");

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

/// A playbook as an Ansible user writes it; `OUT` is the directory each tool writes into.
const PLAYBOOK: &str = r#"- name: Files as an Ansible user writes them
  hosts: all
  vars:
    out: OUT
    users: [ann, ben]
  tasks:
    - name: A directory
      ansible.builtin.file:
        dest: "{{ out }}/etc"
        state: directory
        mode: "0750"
    - name: Inline content
      ansible.builtin.copy:
        dest: "{{ out }}/etc/app.conf"
        content: "mode=slow\nobsolete=1\ncolor=red\n"
        mode: "0640"
        force: yes
        backup: no
    - name: Inline content with block tags
      copy: {dest: "{{ out }}/loop.txt", content: "{% for u in users %}\nuser {{ u }}\n{% endfor %}\nend\n\n"}
    - name: A block scalar with indented block tags
      copy:
        dest: "{{ out }}/block.txt"
        content: |
          head
            {% if users %}
          yes
            {% endif %}
          tail
    - name: A file from files/
      copy: {src: payload.txt, dest: "{{ out }}/payload.txt", mode: "0644"}
    - name: A template
      ansible.builtin.template:
        src: users.j2
        dest: "{{ out }}/etc/users"
        mode: "0600"
        trim_blocks: true
    - name: A line replaced
      lineinfile: {dest: "{{ out }}/etc/app.conf", regexp: "^mode=", line: "mode=fast"}
    - name: A line appended
      ansible.builtin.lineinfile: {path: "{{ out }}/etc/app.conf", line: "size=10", insertafter: EOF}
    - name: A line removed
      lineinfile: {path: "{{ out }}/etc/app.conf", regex: "^obsolete", state: absent}
    - name: A line already there
      lineinfile: {path: "{{ out }}/etc/app.conf", line: "color=red"}
    - name: A new file with a line
      lineinfile: {path: "{{ out }}/created", line: "hello", create: yes, mode: "0604"}
    - name: A link
      ansible.builtin.file: {path: "{{ out }}/link", state: link, src: payload.txt}
    - name: An empty file
      file: {name: "{{ out }}/empty", state: touch, mode: "0600"}
    - name: A command with a guard
      ansible.builtin.command:
        cmd: "cp {{ out }}/payload.txt {{ out }}/copied"
        creates: "{{ out }}/copied"
    - name: A shell line
      ansible.builtin.shell:
        cmd: "printf '%s\n' {{ users | join(' ') }} > {{ out }}/shell.txt"
        creates: "{{ out }}/shell.txt"
"#;

/// Every entry under `root`: (relative path, kind and mode, content or link target).
fn tree(root: &Path) -> Vec<(String, String, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            let (kind, bytes) = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("link", target.display().to_string().into_bytes())
            } else if meta.is_dir() {
                todo.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            out.push((rel, format!("{kind} {mode:04o}"), bytes));
        }
    }
    out.sort();
    out
}

#[test]
fn a_playbook_written_for_ansible_gives_the_same_files_under_picaops() {
    let Some(venv) = ansible() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in [
        "templates",
        "files",
        "by-ansible",
        "by-picaops",
        "inventory",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("templates/users.j2"),
        "# users of {{ out | basename }}\n{% for u in users %}\nuser {{ u }}\n{% endfor %}\nend\n",
    )
    .unwrap();
    std::fs::write(d.join("files/payload.txt"), "payload\n").unwrap();
    let ansible_out = d.join("by-ansible/out");
    let picaops_out = d.join("by-picaops/out");
    for (file, out) in [("ansible.yml", &ansible_out), ("picaops.yml", &picaops_out)] {
        std::fs::create_dir_all(out).unwrap();
        let text = PLAYBOOK.replace("OUT", &out.display().to_string());
        std::fs::write(d.join(file), text).unwrap();
    }

    ansible_playbook(&venv, d, &["-c", "local"], "ansible.yml");

    let ws = transport_support::Workstation::new();
    let sshd = transport_support::Sshd::start(&ws);
    transport_support::write_inventory(
        &d.join("inventory"),
        &ws,
        &[("local", &sshd)],
        "root",
        &|_| String::new(),
    );
    let first = Command::new(env!("CARGO_BIN_EXE_picaops"))
        .arg("--inventory")
        .arg(d.join("inventory"))
        .args(["apply", "-q"])
        .arg(d.join("picaops.yml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "picaops apply failed:\n{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );

    let (theirs, ours) = (tree(&ansible_out), tree(&picaops_out));
    assert_eq!(
        theirs.len(),
        11,
        "Ansible wrote what the playbook says: {theirs:?}"
    );
    let show = |t: &[(String, String, Vec<u8>)]| {
        t.iter()
            .map(|(p, k, b)| format!("  {p} {k} {:?}", String::from_utf8_lossy(b)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        theirs == ours,
        "the two tools wrote different files\nansible:\n{}\npicaops:\n{}",
        show(&theirs),
        show(&ours)
    );
}
