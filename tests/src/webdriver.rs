//! A minimal W3C WebDriver client for the browser tests of the console:
//! starts Debian's `chromedriver` on a loopback port, opens headless
//! Chromium, and offers the few commands the tests use (navigate, find,
//! type, click, read text, run a script, screenshot). Plain HTTP+JSON
//! over ureq, so the tests need no browser-automation crate.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{} not found: install Debian's chromium and chromium-driver (tools/test.sh does), or set {env}", names[0]);
}

/// Where the tests write screenshots for a reviewer: `BASEDATA_SCREENSHOTS`,
/// else `console-screenshots` in the build directory.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var("BASEDATA_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|_| {
        std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| crate::package_dir().join("../target"))
            .join("console-screenshots")
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A browser session; the driver process and the browser end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with a desktop-sized window.
    pub fn start() -> Browser {
        let driver_bin = find_program("BASEDATA_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program("BASEDATA_CHROMIUM", &["chromium", "chromium-browser"]);
        let port = crate::free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = agent.get(&format!("{base}/status")).call() {
                let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut b = Browser { driver, base, session: String::new(), agent };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--lang=zh-CN", "--no-first-run", "--disable-extensions",
                         "--disable-background-networking", "--disable-sync", "--disable-component-update"]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = ureq::http::Request::builder().method(method).uri(url.as_str());
        let result = match body {
            Some(b) => self.agent.run(req.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut r = result.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
        assert!(status < 400, "webdriver {method} {path}: {status} {}", v["value"]);
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None).as_str().unwrap_or("").to_owned()
    }

    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None).as_str().unwrap_or("").to_owned()
    }

    /// The elements matching a CSS selector (none is an empty list).
    pub fn all(&self, css: &str) -> Vec<Element> {
        let v = self.call("POST", &self.s("/elements"), Some(json!({"using": "css selector", "value": css})));
        v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned()))).collect()).unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to 5 s for it.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self.all(css).into_iter().next() {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css} on {}:\n{}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.text_of(&e)
    }

    pub fn text_of(&self, e: &Element) -> String {
        self.call("GET", &self.s(&format!("/element/{}/text", e.0)), None).as_str().unwrap_or("").to_owned()
    }

    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        self.call("GET", &self.s(&format!("/element/{}/attribute/{name}", e.0)), None).as_str().map(str::to_owned)
    }

    /// Types `text` into the element (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{}/clear", e.0)), Some(json!({})));
        self.call("POST", &self.s(&format!("/element/{}/value", e.0)), Some(json!({"text": text})));
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{}/click", e.0)), Some(json!({})));
    }

    /// Clicks something that loads a new page (a submit button, a link)
    /// and waits until the new page has loaded: the old page is marked
    /// first, so that a check right after cannot read the old one.
    pub fn click_to_load(&self, css: &str) {
        self.script("window.__basedata_old_page = true", json!([]));
        self.click(css);
        self.wait_for_load();
    }

    /// Waits until the page marked by [`Browser::click_to_load`] (or
    /// before typing Enter into a form) is replaced and complete.
    pub fn wait_for_load(&self) {
        self.wait_for("the next page", |b| {
            b.script("return window.__basedata_old_page === undefined && document.readyState === 'complete'", json!([])) == json!(true)
        });
    }

    /// Marks the current page as the old one (see [`Browser::wait_for_load`]).
    pub fn mark_page(&self) {
        self.script("window.__basedata_old_page = true", json!([]));
    }

    /// Picks the option with `value` of a select element.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Runs a script in the page and returns its result.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", &self.s("/window/rect"), Some(json!({"width": width, "height": height})));
    }

    /// Saves a PNG of the whole page as `dir/name.png` (the window is
    /// stretched to the page's height for it) and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let rect = self.call("GET", &self.s("/window/rect"), None);
        let (w, h) = (rect["width"].as_u64().unwrap_or(1280), rect["height"].as_u64().unwrap_or(1000));
        let page = self.script("return document.documentElement.scrollHeight", json!([])).as_u64().unwrap_or(h);
        let tall = page + (h.saturating_sub(self.script("return window.innerHeight", json!([])).as_u64().unwrap_or(h)));
        if tall > h {
            self.resize(w as u32, tall.min(6000) as u32);
        }
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        if tall > h {
            self.resize(w as u32, h as u32);
        }
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or("")).expect("base64 screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits until `f` holds, up to 5 s.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what} on {}:\n{}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
