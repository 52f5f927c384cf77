//! Malformed playbooks: each mistake is reported with file:line:column and advice, exit code 2,
//! and no host is contacted (the example inventory's hosts are not even reachable from here).

mod common;

use std::path::Path;

use common::{picaops_on, text};

/// (what is wrong, playbook text, template file text, expected place and message).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "unknown module",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      lineinfle: {path: /x, line: y}\n",
        "",
        "bad.yml:5:7: error: unknown module or task keyword `lineinfle`",
    ),
    (
        "an Ansible option whose behaviour picaops does not have",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      lineinfile: {path: /x, line: y, insertbefore: BOF}\n",
        "",
        "bad.yml:5:39: error: picaops calls this module `line`; these options differ: `insertbefore`",
    ),
    (
        "an Ansible option kept only with picaops's behaviour as its value",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      ansible.builtin.copy:\n        dest: /x\n        content: y\n        force: false\n",
        "",
        "bad.yml:8:9: error: picaops calls this module `copy`; these options differ: `force` (picaops accepts only `force: true`)",
    ),
    (
        "Ansible's groups without append (Ansible would remove the other groups)",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      ansible.builtin.user: {name: ann, groups: [docker]}\n",
        "",
        "bad.yml:5:41: error: picaops calls this module `user`; these options differ: `groups` without `append: true`",
    ),
    (
        "an Ansible module picaops has none of",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      ansible.builtin.blockinfile: {path: /x, block: y}\n",
        "",
        "picaops has no `blockinfile` module",
    ),
    (
        "an option written inside a command line, as Ansible reads it",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      command: touch /x creates=/x\n",
        "",
        "bad.yml:5:16: error: `creates=/x` in this command line is an option for Ansible",
    ),
    (
        "one option under two names",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      lineinfile: {path: /x, dest: /y, line: z}\n",
        "",
        "bad.yml:5:20: error: `dest` and `path` are one option (`path`) under two names",
    ),
    (
        "unknown option",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      copy:\n        dest: /x\n        contnet: y\n",
        "",
        "bad.yml:7:9: error: unknown option `contnet` for module `copy`",
    ),
    (
        "non-boolean when",
        "- name: p\n  hosts: bob\n  vars: {flag: \"yes\"}\n  tasks:\n    - name: t\n      when: flag\n      file: {path: /x, state: directory}\n",
        "",
        "bad.yml:6:13: error: `when: flag` gave string",
    ),
    (
        // The value is cut for the message: byte 40 is inside the `è` (a panic, exit 101, before).
        "non-boolean when with a multibyte character around byte 40",
        "- name: p\n  hosts: bob\n  vars: {motd: \"Le serveur de la salle machine de Compiègne\"}\n  tasks:\n    - name: t\n      when: motd\n      file: {path: /x, state: directory}\n",
        "",
        "bad.yml:6:13: error: `when: motd` gave string `Le serveur de la salle machine de Compiè…`",
    ),
    (
        "undefined variable",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      copy: {dest: /x, content: \"{{ nope }}\"}\n",
        "",
        "undefined variable `nope`",
    ),
    (
        "template syntax error in the playbook",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      copy: {dest: /x, content: \"{{ a + }}\"}\n",
        "",
        "bad.yml:5:",
    ),
    (
        "template syntax error in a template file",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      template: {src: t.j2, dest: /x}\n",
        "line one\n{% if x %}\nno end\n",
        "templates/t.j2:2:1: error:",
    ),
    (
        "mode as a number",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      file: {path: /x, state: directory, mode: 0755}\n",
        "",
        "write the mode as a quoted string",
    ),
    (
        "notify without such handler",
        "- name: p\n  hosts: bob\n  tasks:\n    - name: t\n      file: {path: /x, state: directory}\n      notify: restart sshd\n  handlers:\n    - name: restart ssh\n      service: {name: ssh, state: restarted}\n",
        "",
        "did you mean `restart ssh`?",
    ),
];

#[test]
fn each_mistake_has_a_place_and_nothing_is_contacted() {
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    for (what, playbook, template, expected) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let pb = dir.path().join("bad.yml");
        std::fs::write(&pb, playbook).unwrap();
        if !template.is_empty() {
            std::fs::create_dir(dir.path().join("templates")).unwrap();
            std::fs::write(dir.path().join("templates/t.j2"), template).unwrap();
        }
        let out = picaops_on(&inventory, &["plan", pb.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
        assert!(stderr.contains("nothing was contacted"), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        // apply refuses the same way.
        let out = picaops_on(&inventory, &["apply", pb.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what} (apply): {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn json_output_carries_the_same_errors() {
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("bad.yml");
    std::fs::write(&pb, CASES[0].1).unwrap();
    let out = picaops_on(&inventory, &["plan", "-o", "json", pb.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"][0]["line"], 5);
    assert_eq!(doc["errors"][0]["column"], 7);
}
