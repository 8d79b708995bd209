//! Errors of the PVE conf parser ([`crate::conf`]) and of the `netN` property strings it hands
//! to `lxc_network.rs`: what is wrong ([`ConfErrorKind`]) and where ([`ConfError`]).

/// What is wrong with a configuration, without the location (see [`ConfError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfErrorKind {
    /// The file could not be read (I/O error text from the OS).
    #[error("cannot read: {0}")]
    Io(String),
    /// The line is not UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line matches none of `parse_pct_config`'s patterns.
    #[error("unable to parse config line")]
    Syntax,
    /// The same key appears again on a later line of the section, which wins
    /// (`parse_pct_config`: `$conf->{$key} = $value`); the error is the earlier line's.
    #[error("key given again on a later line, which wins as in PVE; this line is ignored")]
    DuplicateKey,
    /// `delete:` outside `[pve:pending]`.
    #[error("property 'delete' is only allowed in [pve:pending]")]
    DeleteOutsidePending,
    /// `netN` with `N` > 31.
    #[error("network index out of range 0..=31")]
    NetIndexRange,
    /// A property-string key not in `pve-lxc-network`.
    #[error("invalid key in comma-separated list property")]
    UnknownProperty,
    /// A property-string key given twice.
    #[error("duplicate key in comma-separated list property")]
    DuplicateProperty,
    /// A property-string part without `key=`.
    #[error("missing key in comma-separated list property")]
    MissingPropertyKey,
    /// `netN` without `name=`.
    #[error("property is missing and it is not optional")]
    MissingName,
    /// A value that fails its type or format check.
    #[error("invalid value '{value}': expected {expected}")]
    InvalidValue {
        /// The offending value, control characters escaped.
        value: String,
        /// What the format requires.
        expected: &'static str,
    },
}

/// A configuration error with its place: displays as `<source>:<line>: <what> (<key>)` on
/// one line (`line` is 1-based; 0 for errors about the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind} ({key})")]
pub struct ConfError {
    /// The source name given to [`crate::conf::parse_conf`] (usually the path).
    pub file: String,
    /// 1-based line number, 0 for the whole file.
    pub line: usize,
    /// The key involved, e.g. `net0`, `net0.tag`, `hookscript`, or `line` for syntax errors.
    pub key: String,
    /// What is wrong.
    pub kind: ConfErrorKind,
}

/// [`ConfErrorKind::InvalidValue`] for `value`, control characters escaped.
pub(crate) fn invalid(value: &str, expected: &'static str) -> ConfErrorKind {
    ConfErrorKind::InvalidValue {
        value: value.escape_debug().to_string(),
        expected,
    }
}
