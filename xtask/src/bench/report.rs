//! RESULTS.md: sections of markdown tables, each with how it was measured.

/// One benchmark's part of RESULTS.md.
pub struct Section {
    pub title: String,
    /// One-line outcome, printed under the title.
    pub result: Option<String>,
    pub tables: Vec<Table>,
    /// How measured, and what the reader should know (bullets).
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section { title: title.to_string(), result: None, tables: Vec::new(), notes: Vec::new() }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("## {}\n\n", self.title);
        if let Some(r) = &self.result {
            s += &format!("**Result:** {r}\n\n");
        }
        for t in &self.tables {
            s += &t.markdown();
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s += "How measured:\n\n";
            for n in &self.notes {
                s += &format!("- {n}\n");
            }
            s.push('\n');
        }
        s
    }
}

pub struct Table {
    pub caption: Option<String>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { caption: None, header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn captioned(caption: &str, header: &[&str]) -> Table {
        Table { caption: Some(caption.to_string()), ..Table::new(header) }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.caption {
            s += &format!("{c}\n\n");
        }
        s += &format!("| {} |\n", self.header.join(" | "));
        s += &format!("|{}\n", "---|".repeat(self.header.len()));
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// `12345.6` -> `12346`; small values keep one decimal.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Microseconds, printed as µs below 10 ms and ms above.
pub fn us(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

/// `(new / base - 1)` as a signed percentage.
pub fn change_pct(base: f64, new: f64) -> f64 {
    (new / base - 1.0) * 100.0
}

pub fn pct(v: f64) -> String {
    if v.is_finite() { format!("{v:+.1}%") } else { "n/a".into() }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(pct(change_pct(100.0, 97.0)), "-3.0%");
        assert_eq!(us(1500.0), "1500 µs");
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.markdown(), "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
