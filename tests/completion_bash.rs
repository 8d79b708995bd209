//! The bash completion the package ships (`op-agent generate bash`), driven through bash's
//! own `complete`: the function `complete -p op-agent` names is called with `COMP_WORDS` as
//! bash sets them. Subcommands, flags and their values complete past the first word (the
//! hyphenated-binary bug clap-rs/clap#6421), vmids come from the node's container confs,
//! phases after `hook <vmid>`, and the hidden `generate` is not offered. No root needed.

use op_testkit::AgentCommand;

/// What completing the last of `words` offers.
fn complete(dir: &std::path::Path, lxc: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"
source '{}/op-agent'
f=$(complete -p op-agent | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$f" ] || {{ echo "no complete -F for op-agent" >&2; exit 3; }}
COMP_WORDS=({})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
"$f" op-agent "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        dir.display(),
        quoted.join(" ")
    );
    let o = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env("OP_AGENT_COMPLETION_LXC", lxc)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{words:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_past_the_first_word() {
    let d = tempfile::tempdir().unwrap();
    let gen = d.path().join("gen");
    let o = AgentCommand::new(&["generate", "bash", gen.to_str().unwrap()]).run();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let lxc = d.path().join("lxc");
    std::fs::create_dir_all(&lxc).unwrap();
    for f in ["100.conf", "205.conf", "notes.txt"] {
        std::fs::write(lxc.join(f), "").unwrap();
    }
    let c = |w: &[&str]| complete(&gen, &lxc, w);
    let has = |got: &[String], want: &[&str]| {
        for w in want {
            assert!(got.iter().any(|g| g == w), "{w} not in {got:?}");
        }
    };
    let top = c(&["op-agent", ""]);
    has(
        &top,
        &["hook", "audit", "enroll", "status", "--output-format"],
    );
    assert!(!top.iter().any(|w| w == "generate"), "{top:?}");
    assert_eq!(c(&["op-agent", "ge"]), Vec::<String>::new());
    has(
        &c(&["op-agent", "audit", ""]),
        &["verify", "log", "head", "export", "init-key"],
    );
    assert_eq!(c(&["op-agent", "audit", "log", "--ph"]), ["--phase"]);
    assert_eq!(
        c(&["op-agent", "enroll", "--on-firewall", ""]),
        ["refuse", "skip"]
    );
    assert_eq!(
        c(&["op-agent", "--output-format", "json-"]),
        ["json-pretty"]
    );
    assert_eq!(c(&["op-agent", "hook", ""]), ["100", "205"]);
    assert_eq!(c(&["op-agent", "hook", "1"]), ["100"]);
    assert_eq!(
        c(&["op-agent", "hook", "100", ""]),
        ["pre-start", "post-start", "pre-stop", "post-stop"]
    );
    assert_eq!(c(&["op-agent", "check", ""]), ["100", "205"]);
    assert_eq!(c(&["op-agent", "enroll", "100", "2"]), ["205"]);
    // The live-edit and hand-back commands take vmids too (`release` several).
    assert_eq!(c(&["op-agent", "set", ""]), ["100", "205"]);
    assert_eq!(c(&["op-agent", "release", "100", "2"]), ["205"]);
    has(&c(&["op-agent", "enroll", "--r"]), &["--remove"]);
    has(
        &c(&["op-agent", "enroll", "--"]),
        &["--all", "--on-firewall", "--dry-run"],
    );
}
