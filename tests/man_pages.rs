//! The man pages the package ships (`op-agent generate man`, as debian/rules runs it):
//! op-agent(8) has EXIT STATUS (every exit code), ENVIRONMENT, FILES, EXAMPLES and SEE ALSO,
//! op-agent.toml(5) shows both TOML files, every page formats without groff warnings, and
//! every op-agent page a SEE ALSO names is generated. No root needed.

use op_testkit::AgentCommand;
use std::path::Path;

fn render(page: &Path) -> String {
    let o = std::process::Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "man -l {}: {}",
        page.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    // man's bold/underline overstrikes off.
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut out = String::new();
    for c in t.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn man_pages_have_the_admin_sections() {
    let d = tempfile::tempdir().unwrap();
    let o = AgentCommand::new(&["generate", "man", d.path().to_str().unwrap()]).run();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let main = render(&d.path().join("op-agent.8"));
    for s in [
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(main.lines().any(|l| l == s), "no {s} section in:\n{main}");
    }
    for code in [
        "0", "1", "2", "64", "69", "70", "71", "74", "75", "77", "78",
    ] {
        let n = main
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{code} ")))
            .count();
        assert_eq!(n, 1, "exit {code} listed {n} times in:\n{main}");
    }
    for f in [
        "/var/lib/op-agent/audit.key",
        "/etc/op-agent/agent.toml",
        "OP_AGENT_CONFIG",
        "op-agent enroll --all",
    ] {
        assert!(main.contains(f), "{f} missing");
    }
    let toml = render(&d.path().join("op-agent.toml.5"));
    for s in [
        "AGENT.TOML",
        "CONTAINER TOML",
        "[ovsdb]",
        "on_firewall",
        "manage",
    ] {
        assert!(toml.contains(s), "{s} missing in op-agent.toml(5)");
    }
    let sub = render(&d.path().join("op-agent-enroll.8"));
    assert!(
        sub.contains("op-agent(8)") && sub.contains("op-agent.toml(5)"),
        "{sub}"
    );

    // Every page formats cleanly, and every op-agent page it names exists.
    let mut names = Vec::new();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        let g = std::process::Command::new("groff")
            .args(["-ww", "-z", "-man"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            g.stderr.is_empty(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&g.stderr)
        );
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    for page in &names {
        let text = render(&d.path().join(page))
            .replace("\u{2010}\n", "")
            .replace("-\n", "-");
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .collect();
        for w in words {
            if let Some((n, s)) = w.strip_prefix("op-agent").and_then(|_| w.split_once('(')) {
                let sec = s.trim_end_matches([')', '.', ';']);
                if sec.len() == 1 {
                    let want = format!("{n}.{sec}");
                    assert!(
                        names.contains(&want),
                        "{page} names {w}: {want} is not generated"
                    );
                }
            }
        }
    }
}
