//! HTML building blocks shared by the console's pages and the yearly
//! report's document: escaping, tables and SVG bar charts, rendered on the
//! server from plain strings; every value from data or input goes through
//! [`esc`].

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A table from a header row and rows of already escaped cells.
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = format!(r#"<div class="scroll"><table id="{id}"><thead><tr>"#);
    for h in head {
        let _ = write!(t, "<th scope=\"col\">{h}</th>");
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(t, "<td data-label=\"{}\">{c}</td>", head.get(i).copied().unwrap_or(""));
        }
        t.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(t, r#"<tr><td colspan="{}" class="empty">无</td></tr>"#, head.len());
    }
    t.push_str("</tbody></table></div>");
    t
}

/// Horizontal bars, one per row, drawn as SVG (no script, no library).
pub fn bars(id: &str, rows: &[(String, u64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let h = 24 * rows.len().max(1) + 8;
    let mut s = format!(r#"<svg id="{id}" class="chart" viewBox="0 0 640 {h}" role="img" aria-label="柱状图" xmlns="http://www.w3.org/2000/svg">"#);
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = 4 + i * 24;
        let w = (*n as f64 / max as f64 * 400.0).round() as u64;
        let _ = write!(
            s,
            r#"<text x="0" y="{}" font-size="13">{}</text><rect x="180" y="{y}" width="{w}" height="18" class="bar"></rect><text x="{}" y="{}" font-size="13">{n}</text>"#,
            y + 14,
            esc(label),
            185 + w,
            y + 14
        );
    }
    s.push_str("</svg>");
    s
}
