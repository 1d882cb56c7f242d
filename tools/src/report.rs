//! `basedata report annual`: fetches the yearly report from a running
//! server (as an auditor or administrator) and writes it as JSON, as the
//! printable HTML document (rendered here, as the server renders it) and,
//! through headless Chromium, as PDF.

use anyhow::{bail, Context};
use basedata_server::http::annual_doc;
use basedata_server::http::schema::AnnualReport;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What to fetch and where to write it.
pub struct Options {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub token: String,
    pub year: Option<i32>,
    pub out: PathBuf,
    /// Write the PDF too (needs Chromium).
    pub pdf: bool,
}

/// The files written.
pub struct Written {
    pub json: PathBuf,
    pub html: PathBuf,
    pub pdf: Option<PathBuf>,
}

fn fetch(agent: &ureq::Agent, o: &Options) -> anyhow::Result<String> {
    let mut url = format!("{}/v1/reports/annual", o.url.trim_end_matches('/'));
    if let Some(y) = o.year {
        url.push_str(&format!("?year={y}"));
    }
    let mut resp = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {}", o.token))
        .call()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let body = resp.body_mut().read_to_string().context("cannot read the answer")?;
    if !status.is_success() {
        // The API's error body says why (`forbidden`, `invalid_value`, ...).
        bail!("{url} answered {status}: {body}");
    }
    Ok(body)
}

/// Chromium as Debian installs it, or `BASEDATA_CHROMIUM`.
fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BASEDATA_CHROMIUM") {
        return Ok(p.into());
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default() {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("Chromium is needed for the PDF: install Debian's chromium (or set BASEDATA_CHROMIUM), or pass --no-pdf")
}

/// Prints `html` to `pdf` with headless Chromium.
pub fn print_pdf(html: &Path, pdf: &Path) -> anyhow::Result<()> {
    let html = std::fs::canonicalize(html)?;
    let profile = tempfile::tempdir().context("cannot make a scratch profile directory")?;
    let out = Command::new(chromium()?)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-pdf-header-footer", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .context("cannot run Chromium")?;
    let ok = out.status.success() && std::fs::read(pdf).map(|b| b.starts_with(b"%PDF")).unwrap_or(false);
    if !ok {
        bail!("Chromium did not print {}: {}", pdf.display(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    Ok(())
}

/// Fetches the report and writes `annual-<year>.json`, `.html` and `.pdf`
/// into `o.out`.
pub fn annual(o: &Options) -> anyhow::Result<Written> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .build()
        .into();
    // One request: the document is rendered here from the same figures,
    // so the JSON and the HTML are one snapshot (the counters move between
    // two requests) and the server builds the report once.
    let json = fetch(&agent, o)?;
    let report: AnnualReport = serde_json::from_str(&json).context("the answer is not a yearly report")?;
    let year = report.year;
    let html = annual_doc::render(&report, None);
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create {}", o.out.display()))?;
    let base = o.out.join(format!("annual-{year}"));
    let written = Written { json: base.with_extension("json"), html: base.with_extension("html"), pdf: o.pdf.then(|| base.with_extension("pdf")) };
    std::fs::write(&written.json, json).with_context(|| format!("cannot write {}", written.json.display()))?;
    std::fs::write(&written.html, html).with_context(|| format!("cannot write {}", written.html.display()))?;
    if let Some(pdf) = &written.pdf {
        print_pdf(&written.html, pdf)?;
    }
    Ok(written)
}
