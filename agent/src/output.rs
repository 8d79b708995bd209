//! `--output-format text|json|json-pretty`, global to every command (the option and the
//! values of Proxmox's `pvesh`): text for people, JSON on one line for scripts, or indented.

use serde::Serialize;

/// The format a command prints its result in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines and tables for a terminal (default).
    #[default]
    Text,
    /// One JSON document on one line.
    Json,
    /// One JSON document, indented.
    JsonPretty,
}

impl OutputFormat {
    /// True for `json` and `json-pretty`.
    pub fn is_json(self) -> bool {
        self != OutputFormat::Text
    }

    /// `v` as JSON text in this format (`json-pretty` indented, else one line).
    pub fn render<T: Serialize>(self, v: &T) -> String {
        let r = match self {
            OutputFormat::JsonPretty => serde_json::to_string_pretty(v),
            _ => serde_json::to_string(v),
        };
        r.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// Prints `v` as JSON on stdout ([`OutputFormat::render`]).
    pub fn print<T: Serialize>(self, v: &T) {
        println!("{}", self.render(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_pretty() {
        let v = serde_json::json!({"a": [1, 2]});
        assert_eq!(OutputFormat::Json.render(&v), r#"{"a":[1,2]}"#);
        assert!(OutputFormat::JsonPretty.render(&v).contains("\n  \"a\": ["));
        assert!(!OutputFormat::Text.is_json() && OutputFormat::Json.is_json());
    }
}
