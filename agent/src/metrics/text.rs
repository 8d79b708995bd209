//! The Prometheus text exposition format, version 0.0.4 (Prometheus' "Exposition formats"
//! document, section "Text-based format"): a writer for what op-agent exposes and a strict
//! reader of it used to check the writer's output and the textfile.
//!
//! Rules both follow:
//! - a metric name matches `[a-zA-Z_:][a-zA-Z0-9_:]*`, a label name `[a-zA-Z_][a-zA-Z0-9_]*`
//!   and does not start with `__` (reserved);
//! - `# HELP <name> <docstring>`: in the docstring `\` is written `\\` and a line feed `\n`;
//! - `# TYPE <name> <counter|gauge|...>` comes before the first sample of the name, once;
//! - a sample is `<name>[{<label>="<value>",...}] <value>` with, in a label value, `\` as
//!   `\\`, `"` as `\"` and a line feed as `\n`; the value is a Go `ParseFloat` number or
//!   `NaN`, `+Inf`, `-Inf`;
//! - the samples of one family are one group, no two with the same label set; lines end with
//!   a line feed (`\n`), also the last one.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The type of a metric family (`# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (or resets to 0 when its source restarts); name ends in `_total`.
    Counter,
    /// Any value.
    Gauge,
}

impl Kind {
    /// `counter` or `gauge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact integer (byte and packet counters up to 2^64 - 1).
    Uint(u64),
    /// An exact signed integer.
    Int(i64),
    /// A float (`NaN`, `+Inf`, `-Inf` allowed).
    Float(f64),
}

impl Value {
    fn write(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match self {
            Value::Uint(v) => write!(out, "{v}"),
            Value::Int(v) => write!(out, "{v}"),
            Value::Float(v) if v.is_nan() => write!(out, "NaN"),
            Value::Float(v) if v.is_infinite() && *v > 0.0 => write!(out, "+Inf"),
            Value::Float(v) if v.is_infinite() => write!(out, "-Inf"),
            Value::Float(v) => write!(out, "{v}"),
        };
    }
}

/// One metric family: its name, `# HELP` text, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    /// An empty family. `name` must be a valid metric name (a counter's ending in `_total`):
    /// the names are op-agent's constants, checked by its tests.
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        debug_assert!(valid_metric_name(name), "{name}");
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with `labels` (`(name, value)`; names are constants, values any text).
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: Value) {
        debug_assert!(labels.iter().all(|(l, _)| valid_label_name(l)));
        self.samples.push((
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        ));
    }

    /// True when the family has no sample (it is then not written).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// `families` in the text format, in the order given; families without samples are left out.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(f.name);
        out.push(' ');
        for c in f.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    for c in val.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '"' => out.push_str("\\\""),
                            '\n' => out.push_str("\\n"),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            v.write(&mut out);
            out.push('\n');
        }
    }
    out
}

/// True when `s` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_' || x == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// True when `s` is a valid, not reserved label name (`[a-zA-Z_][a-zA-Z0-9_]*`, no `__`
/// prefix).
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    !s.starts_with("__")
        && matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// One sample as [`parse`] read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a whole exposition strictly by the rules above (and as op-agent writes it: every
/// sample's family has `# HELP` and `# TYPE` lines before it), returning its samples.
///
/// # Errors
/// One line naming the 1-based line and what is wrong: a missing final line feed, a bad name,
/// escape or value, a `# TYPE` after samples of its name or twice, a family split in two
/// groups, a repeated label set, a sample without `# TYPE`.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no line feed".into());
    }
    let mut out = Vec::new();
    let mut typed: BTreeSet<String> = BTreeSet::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: &str| Err(format!("line {n}: {m}: {line:?}"));
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (Some(kw), Some(name)) = (w.next(), w.next()) else {
                continue;
            };
            let arg = w.next().unwrap_or("");
            if kw != "HELP" && kw != "TYPE" {
                continue;
            }
            if !valid_metric_name(name) {
                return err("bad metric name");
            }
            if out.iter().any(|s: &Sample| s.name == name) {
                return err("comes after samples of its metric");
            }
            if kw == "TYPE" {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                    return err("unknown type");
                }
                if !typed.insert(name.to_string()) {
                    return err("second TYPE line");
                }
            } else {
                unescape(arg, false).map_err(|m| format!("line {n}: {m}: {line:?}"))?;
                if !helped.insert(name.to_string()) {
                    return err("second HELP line");
                }
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let s = sample(line).map_err(|m| format!("line {n}: {m}: {line:?}"))?;
        if !typed.contains(&s.name) || !helped.contains(&s.name) {
            return err("sample without HELP and TYPE lines");
        }
        if current.as_deref() != Some(s.name.as_str()) {
            if closed.contains(&s.name) {
                return err("family split in two groups");
            }
            if let Some(c) = current.take() {
                closed.insert(c);
            }
            current = Some(s.name.clone());
        }
        let mut key = s.labels.clone();
        key.sort();
        if !seen.insert((s.name.clone(), key)) {
            return err("repeated label set");
        }
        out.push(s);
    }
    Ok(out)
}

fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut c = s.chars();
    while let Some(x) = c.next() {
        match x {
            '\\' => match c.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if quotes => out.push('"'),
                _ => return Err("bad escape".into()),
            },
            '"' if quotes => return Err("unescaped quote".into()),
            x => out.push(x),
        }
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=').ok_or("label without =")?;
            let lname = &r[..eq];
            if !valid_label_name(lname) {
                return Err("bad label name".into());
            }
            let v = r[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            // The closing quote: the first `"` not escaped.
            let mut close = None;
            let mut esc = false;
            for (i, c) in v.char_indices() {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or("label value not closed")?;
            if labels.iter().any(|(k, _): &(String, String)| k == lname) {
                return Err("repeated label".into());
            }
            labels.push((lname.to_string(), unescape(&v[..close], true)?));
            r = &v[close + 1..];
            if let Some(after) = r.strip_prefix(',') {
                r = after;
            } else if !r.starts_with('}') {
                return Err("expected , or }".into());
            }
        }
    }
    let mut f = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let v = f.next().unwrap_or("");
    let value = match v {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| "bad value")?,
    };
    if let Some(ts) = f.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if f.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_escaped_labels() {
        let mut f = Family::new(
            "op_agent_x_total",
            Kind::Counter,
            "Bytes \\ sent.\nSecond line.",
        );
        f.push(
            &[("vmid", "100"), ("port", "a\"b\\c\nd")],
            Value::Uint(u64::MAX),
        );
        f.push(&[], Value::Uint(0));
        let mut g = Family::new("op_agent_g", Kind::Gauge, "G.");
        g.push(&[("x", "1")], Value::Float(f64::NAN));
        g.push(&[("x", "2")], Value::Float(f64::INFINITY));
        g.push(&[("x", "3")], Value::Float(f64::NEG_INFINITY));
        g.push(&[("x", "4")], Value::Float(0.25));
        g.push(&[("x", "5")], Value::Int(-3));
        let empty = Family::new("op_agent_empty", Kind::Gauge, "Never written.");
        let text = render(&[f, empty, g]);
        assert_eq!(
            text,
            "# HELP op_agent_x_total Bytes \\\\ sent.\\nSecond line.\n\
             # TYPE op_agent_x_total counter\n\
             op_agent_x_total{vmid=\"100\",port=\"a\\\"b\\\\c\\nd\"} 18446744073709551615\n\
             op_agent_x_total 0\n\
             # HELP op_agent_g G.\n\
             # TYPE op_agent_g gauge\n\
             op_agent_g{x=\"1\"} NaN\n\
             op_agent_g{x=\"2\"} +Inf\n\
             op_agent_g{x=\"3\"} -Inf\n\
             op_agent_g{x=\"4\"} 0.25\n\
             op_agent_g{x=\"5\"} -3\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].label("port"), Some("a\"b\\c\nd"));
        assert_eq!(s[0].value, u64::MAX as f64);
        assert!(s[2].value.is_nan());
        assert_eq!(s[6].value, -3.0);
    }

    #[test]
    fn names_follow_the_grammar() {
        for ok in ["a", "_a", ":a", "op_agent:x_1"] {
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
        assert!(valid_label_name("vmid"));
        for bad in ["__name__", "1x", "a:b", ""] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_reader_refuses_what_breaks_the_rules() {
        let head = "# HELP m M.\n# TYPE m gauge\n";
        let cases = [
            (format!("{head}m 1"), "line feed"),
            (
                format!("{head}m{{a=\"x\"}} 1\nm{{a=\"x\"}} 2\n"),
                "repeated label set",
            ),
            (format!("{head}m{{a=\"x\\q\"}} 1\n"), "bad escape"),
            (format!("{head}m{{a=x}} 1\n"), "not quoted"),
            (format!("{head}m{{a=\"x\" }} 1\n"), "expected"),
            (format!("{head}m one\n"), "bad value"),
            (format!("{head}m{{__x=\"1\"}} 1\n"), "bad label name"),
            ("m 1\n".to_string(), "without HELP"),
            (format!("{head}m 1\n# TYPE m gauge\n"), "after samples"),
            (
                format!("{head}m{{a=\"1\"}} 1\n# HELP n N.\n# TYPE n gauge\nn 1\nm{{a=\"2\"}} 1\n"),
                "split",
            ),
            (format!("{head}m 1 2 3\n"), "after the timestamp"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A half-written file cut inside a line is refused.
        let full = format!("{head}m{{a=\"1\"}} 123\n");
        for cut in 1..full.len() {
            if full[..cut].ends_with('\n') {
                continue;
            }
            assert!(parse(&full[..cut]).is_err(), "{:?}", &full[..cut]);
        }
    }
}
