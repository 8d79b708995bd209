//! Post-processing of the bash completion clap_complete generates, at package build time
//! (`op-agent generate bash`):
//!
//! - For a binary name with a hyphen, clap_complete 4.6 names the states of its second `case`
//!   `op__subcmd__agent__…` while the first sets `op__agent__…`, so nothing past the first
//!   word completes (clap-rs/clap#6421). The second spelling is rewritten to the first.
//! - A wrapper completes what clap cannot know: the vmids of this node's containers (the
//!   `<vmid>.conf` files in `/etc/pve/lxc`, or `$OP_AGENT_COMPLETION_LXC`) for `hook`,
//!   `apply`, `check`, `status`, `set`, `enroll` and `release`, and the four phases after `hook <vmid>`; every
//!   other word goes to clap's function.

/// The hookscript phases `hook` acts on (pve-container `LXC.pm` `run_hook`... callers).
const PHASES: &str = "pre-start post-start pre-stop post-stop";

/// Returns `script` (clap_complete's bash output for `bin`) fixed and with the wrapper.
pub fn finish(script: &str, bin: &str) -> String {
    let good = bin.replace('-', "__");
    let bad = bin.replace('-', "__subcmd__");
    let clap_fn = format!("_{good}");
    let mut out = if bad != good {
        script.replace(&format!("{bad}__"), &format!("{good}__"))
    } else {
        script.to_string()
    };
    let wrapper_fn = format!("_{}_words", bin.replace('-', "_"));
    // Register the wrapper instead of clap's function.
    out = out.replace(
        &format!("complete -F {clap_fn} "),
        &format!("complete -F {wrapper_fn} "),
    );
    let wrapper = format!(
        r#"
# The vmids of this node's containers, and the phases after `hook <vmid>` (op-agent).
_{w}_vmids() {{
    local f dir="${{OP_AGENT_COMPLETION_LXC:-/etc/pve/lxc}}"
    for f in "$dir"/*.conf; do
        [[ -e $f ]] || continue
        f=${{f##*/}}
        printf '%s\n' "${{f%.conf}}"
    done
}}

{wrapper_fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local sub="" pos=0 i w
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w=${{COMP_WORDS[i]}}
        case $w in -*) continue ;; esac
        case ${{COMP_WORDS[i-1]}} in --config|--output-format|--bridge|--tag|--trunks|--net|--on-firewall|--vmid|--since|--until|--run|--phase|--outcome|-n|--limit) continue ;; esac
        if [[ -z $sub ]]; then sub=$w; else pos=$((pos + 1)); fi
    done
    if [[ $cur != -* && $prev != -* ]]; then
        case "$sub,$pos" in
        hook,0|apply,0|check,0|status,0|set,0|enroll,*|release,*)
            COMPREPLY=( $(compgen -W "$(_{w}_vmids)" -- "$cur") )
            return 0 ;;
        hook,1)
            COMPREPLY=( $(compgen -W "{PHASES}" -- "$cur") )
            return 0 ;;
        esac
    fi
    {clap_fn} "$@"
}}
"#,
        w = bin.replace('-', "_"),
    );
    // Before the `complete` lines at the end.
    match out.rfind("\nif [[ \"${BASH_VERSINFO[0]}\"") {
        Some(i) => out.insert_str(i + 1, &wrapper),
        None => out.push_str(&wrapper),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_renamed_and_the_wrapper_registered() {
        let s = "_op__agent() {\n cmd=\"op__agent__subcmd__audit\"\n case x in\n op__subcmd__agent__subcmd__audit)\n}\n\nif [[ \"${BASH_VERSINFO[0]}\" -ge 4 ]]; then\n    complete -F _op__agent -o nosort op-agent\nfi\n";
        let f = finish(s, "op-agent");
        assert!(!f.contains("op__subcmd__agent"), "{f}");
        assert!(f.contains(" op__agent__subcmd__audit)"), "{f}");
        assert!(
            f.contains("complete -F _op_agent_words -o nosort op-agent"),
            "{f}"
        );
        assert!(f.find("_op_agent_words() {").unwrap() < f.find("complete -F").unwrap());
    }
}
