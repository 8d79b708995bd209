//! The LXC hookscript phases op-agent acts on, and the validation of the phase argument.
//!
//! pve-container runs the hookscript through pve-guest-common `PVE::GuestHelpers::exec_hookscript`
//! with argv `<vmid> <phase>`, for `pre-start`, `post-start`, `pre-stop` and `post-stop`.

/// The LXC hookscript phases of pve-container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before LXC creates the container's veths: check bridges and names, sweep stale rows.
    PreStart,
    /// After the container started: rename and re-plug every NIC.
    PostStart,
    /// Before the stop: nothing to change.
    PreStop,
    /// After the stop: delete every Port op-agent owns for the container.
    PostStop,
}

impl Phase {
    /// The phase as PVE passes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreStart => "pre-start",
            Phase::PostStart => "post-start",
            Phase::PreStop => "pre-stop",
            Phase::PostStop => "post-stop",
        }
    }
}

/// Result of validating the phase argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseArg {
    /// A phase op-agent acts on.
    Known(Phase),
    /// Well-formed but not an LXC phase op-agent acts on: exit 0, change nothing.
    Unknown,
    /// Not `^[a-z][a-z0-9-]{0,31}$`: usage error.
    Malformed,
}

/// Validates a phase argument before anything is read.
pub fn parse_phase(s: &str) -> PhaseArg {
    let well_formed = !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return PhaseArg::Malformed;
    }
    match s {
        "pre-start" => PhaseArg::Known(Phase::PreStart),
        "post-start" => PhaseArg::Known(Phase::PostStart),
        "pre-stop" => PhaseArg::Known(Phase::PreStop),
        "post-stop" => PhaseArg::Known(Phase::PostStop),
        _ => PhaseArg::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse() {
        assert_eq!(parse_phase("post-start"), PhaseArg::Known(Phase::PostStart));
        assert_eq!(parse_phase("pre-restart"), PhaseArg::Unknown);
        for bad in ["", "Post-start", "1x", "a b", &"a".repeat(33)] {
            assert_eq!(parse_phase(bad), PhaseArg::Malformed, "{bad:?}");
        }
    }
}
