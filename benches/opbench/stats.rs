//! Order statistics of a sample of timings (ms) or sizes.

pub struct Stats {
    pub med: f64,
    pub min: f64,
    pub max: f64,
    pub p95: f64,
}

pub fn stats(v: &[f64]) -> Stats {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return Stats {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            p95: f64::NAN,
        };
    }
    let q = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    Stats {
        med: if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        },
        min: s[0],
        max: s[s.len() - 1],
        p95: q(0.95),
    }
}

pub fn fmt3(s: &Stats) -> String {
    format!("{:.2} ({:.2} – {:.2})", s.med, s.min, s.max)
}
