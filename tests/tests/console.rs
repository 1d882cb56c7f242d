//! The people's console against a real server: headless Chromium signs in
//! as each kind of staff and goes through each page's main flow (a clerk
//! looks up and verifies, and files a dispute from a lookup's result; a
//! steward approves a grant, after which the clerk sees the field, and
//! resolves the dispute; an auditor finds the
//! clerk's use by subject with the clerk's name on it; the printed access
//! report lists it), writing a screenshot of each page. Sign-in lockout,
//! CSRF refusal and the cookies' and pages' security attributes are
//! checked over plain HTTP.

use basedata_tests::webdriver::{screenshot_dir, Browser};
use basedata_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// An argon2id hash made by `basedata staff-password`, the admin command.
fn staff_hash(password: &str) -> String {
    let mut child = Command::new(binary())
        .arg("staff-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(h.starts_with("$argon2id$"), "{h}");
    h
}

const CLERK_PW: &str = "clerk-password-1";
const STEWARD_PW: &str = "steward-password-1";
const AUDITOR_PW: &str = "auditor-password-1";
const ADMIN_PW: &str = "admin-password-1";

/// The standard departments (with names) and one account per staff kind.
fn console_config(max_failures: u32) -> String {
    let mut s = standard_config().replace("id = \"shebao-counter\"\n", "id = \"shebao-counter\"\nname = \"社保服务窗口\"\n");
    for (id, name, dept, role, pw) in [
        ("clerk1", "王五", "shebao-counter", "clerk", CLERK_PW),
        ("steward1", "李四", "gongan", "steward", STEWARD_PW),
        ("auditor1", "赵六", "shenji", "auditor", AUDITOR_PW),
        ("admin1", "钱七", "admin", "admin", ADMIN_PW),
    ] {
        s.push_str(&format!(
            "[[staff]]\nid = \"{id}\"\nname = \"{name}\"\ndepartment = \"{dept}\"\nroles = [\"{role}\"]\npassword_argon2 = \"{}\"\n\n",
            staff_hash(pw)
        ));
    }
    s.push_str(&format!("[console]\nmax_failures = {max_failures}\nlockout_minutes = 10\n"));
    s
}

/// A generated person's key and hukou fields, with a photo (conditional).
fn person(i: u64) -> (String, serde_json::Map<String, Value>) {
    let g = basedata_gen::GenConfig { persons: 10, entities: 0, seed: 17 };
    let key = basedata_gen::person_key(&g, i).as_str().to_owned();
    let mut fields = basedata_gen::person_hukou(&g, i);
    fields.insert("photo".into(), json!("aGVsbG8="));
    (key, fields)
}

/// A server on `dir` holding generated person `i`'s hukou record.
fn start_with_person(dir: &std::path::Path, cfg: &str, i: u64) -> (Server, String, serde_json::Map<String, Value>) {
    let s = Server::start_in(dir, cfg, &[]);
    let (key, fields) = person(i);
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key, "version": 1, "fields": fields})]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);
    (s, key, fields)
}

fn sign_in(b: &Browser, s: &Server, id: &str, pw: &str) {
    b.goto(&s.url("/console/"));
    b.wait_for("the sign-in page", |b| b.url().ends_with("/console/login"));
    b.fill("#staff-id", id);
    b.fill("#password", pw);
    b.click_to_load("#login");
    b.wait_for("a signed-in page", |b| !b.all("#who").is_empty());
}

fn sign_out(b: &Browser) {
    b.click_to_load("#logout");
    b.wait_for("the sign-in page", |b| !b.all("#login").is_empty());
}

#[test]
fn staff_work_through_every_page_in_a_browser() {
    let s = Server::start(&console_config(5));
    let (key, fields) = person(0);
    let name = fields["name"].as_str().unwrap().to_owned();
    let birth = fields["birth_date"].as_str().unwrap().to_owned();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key, "version": 1, "fields": fields})]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);
    // A program's use with a declared operator, for the auditor to tell apart.
    let r = s.req("GET", &format!("/v1/persons/{key}")).token(tokens::COUNTER).purpose("批处理").header("x-operator", "prog-7").get();
    assert_eq!(r.status, 200, "{}", r.text);

    let b = Browser::start();
    // Unsigned: every page leads to the sign-in page.
    b.goto(&s.url("/console/counter"));
    b.wait_for("the sign-in page", |b| b.url().ends_with("/console/login"));
    b.screenshot("01-login");

    // --- clerk: look up, with the key checked as it is typed ---
    sign_in(&b, &s, "clerk1", CLERK_PW);
    assert!(b.text("#who").contains("王五"));
    assert!(b.url().ends_with("/console/counter"), "{}", b.url());
    let mut bad = key.clone();
    let last = if bad.ends_with('1') { '2' } else { '1' };
    bad.replace_range(17.., &last.to_string());
    b.fill("#lookup-key", &bad);
    b.wait_for("the check-character hint", |b| b.text("#lookup-key-hint").contains("校验位不符"));
    b.fill("#lookup-key", &key[..10]);
    b.wait_for("the length hint", |b| b.text("#lookup-key-hint").contains("位数不对"));
    b.screenshot("02-counter-key-check");
    // Credit codes are checked as such once the subject is an organization,
    // the embedded organization code's own check character included.
    b.click("#lookup-entity");
    b.fill("#lookup-key", "91350100M000100Y43");
    b.wait_for("a valid credit code", |b| b.text("#lookup-key-hint").contains("号码有效"));
    b.fill("#lookup-key", "91350100M000100Y44");
    b.wait_for("the credit code's check", |b| b.text("#lookup-key-hint").contains("校验位不符"));
    b.fill("#lookup-key", "91350100M000100X43");
    b.wait_for("the organization code's check", |b| b.text("#lookup-key-hint").contains("校验位不符"));
    b.fill("#lookup-key", "91350100M00O100Y43");
    b.wait_for("a letter outside the alphabet", |b| b.text("#lookup-key-hint").contains("不允许的字符"));
    b.click("#lookup-person");
    b.fill("#lookup-key", &key);
    b.wait_for("the valid hint", |b| b.text("#lookup-key-hint").contains("号码有效"));
    b.select("#lookup-purpose", "办理社会保险业务");
    b.fill("#lookup-purpose-note", "业务单号 2026-001");
    b.click_to_load("#lookup-btn");
    b.wait_for("the lookup result", |b| !b.all("[data-field=\"hukou.name\"]").is_empty());
    assert_eq!(b.text("[data-field=\"hukou.name\"]"), name);
    assert!(b.all("[data-field=\"hukou.photo\"]").is_empty(), "photo shown without a grant");
    assert!(b.text("#withheld").contains("有条件共享，未获授权"));
    // The key is masked on the page and absent from the address.
    let shown = b.text("#shown-key");
    assert!(shown.contains('*') && !shown.contains(&key[6..14]), "{shown}");
    assert!(!b.url().contains(&key) && !b.source().contains(&key), "full key on the page or in the URL");
    b.screenshot("03-counter-lookup");
    // What is never shared is folded away, what may be applied for is not.
    assert_eq!(b.all("#withheld details[open] #withheld-conditional [data-withheld=\"hukou.photo\"]").len(), 1);
    assert_eq!(b.all("#withheld details:not([open]) #withheld-none [data-withheld=\"death.cause_of_death\"]").len(), 1, "never-shared fields not folded");
    // Apply for the photo from the result page.
    b.click("#grant-hukou-open");
    b.fill("#grant-hukou-purpose", "社保待遇资格认证");
    b.fill("#grant-hukou-basis", "社会保险法第七十二条");
    b.click_to_load("#grant-hukou-submit");
    b.wait_for("the application notice", |b| !b.all("[data-code=\"pending\"]").is_empty());
    b.screenshot("04-counter-grant-applied");
    // The applicant says the name is wrong: a dispute, filed from the
    // lookup's result.
    b.click_to_load("#nav-counter");
    b.fill("#lookup-key", &key);
    b.click_to_load("#lookup-btn");
    b.wait_for("the lookup result", |b| !b.all("#dispute-hukou").is_empty());
    b.click("#dispute-hukou-open");
    b.select("#dispute-hukou-field", "name");
    b.fill("#dispute-hukou-claimed", "张某");
    b.fill("#dispute-hukou-note", "申请人称姓名有误");
    // The photo (binary) cannot be disputed with a typed value.
    assert!(b.all("#dispute-hukou-field option[value=\"photo\"]").is_empty());
    assert!(!b.source().contains(&key), "full key on the page");
    b.screenshot("04b-counter-dispute-form");
    b.click_to_load("#dispute-hukou-submit");
    b.wait_for("the dispute notice", |b| !b.all("[data-code=\"opened\"]").is_empty());
    let dispute = b.text("#dispute-id");
    assert_eq!(dispute.len(), 32, "{dispute}");
    assert!(!b.url().contains(&key) && !b.source().contains(&key), "full key on the page or in the URL");
    b.screenshot("04c-counter-dispute-filed");

    // Verify: one claim right, one wrong.
    b.goto(&s.url("/console/counter/verify?dataset=hukou"));
    b.fill("#verify-key", &key);
    b.fill("#claim-name", &name);
    b.fill("#claim-birth_date", "1900-01-01");
    b.screenshot("05-counter-verify-form");
    b.click_to_load("#verify-btn");
    b.wait_for("the verdicts", |b| !b.all("#verify-result").is_empty());
    assert_eq!(b.attr("#verify-result", "data-result").as_deref(), Some("mismatch"));
    assert_eq!(b.text("[data-verdict=\"name\"]"), "一致");
    assert_eq!(b.text("[data-verdict=\"birth_date\"]"), "不一致");
    assert!(!birth.is_empty());
    b.screenshot("06-counter-verify-result");
    sign_out(&b);

    // The dispute is the API's too, by the clerk's department.
    let r = s.req("GET", "/v1/disputes?state=open").token(tokens::COUNTER).get();
    let d = r.json["disputes"].as_array().unwrap().iter().find(|d| d["id"] == dispute.as_str()).unwrap_or_else(|| panic!("{}", r.text)).clone();
    assert_eq!((d["claimed"].as_str(), d["field"].as_str(), d["note"].as_str()), (Some("张某"), Some("name"), Some("申请人称姓名有误")), "{d}");
    // A second application, to be refused; and a provider's line rejected.
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&json!({
        "dataset": "residence_permit", "fields": ["residence_address"], "purpose": "居住证核验", "legal_basis": "居住证暂行条例"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let refused = r.json["id"].as_str().unwrap().to_owned();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key, "version": 2, "fields": {"name": 5}})]);
    assert_eq!(r.json["rejected"][0]["code"], "invalid_value", "{}", r.text);

    // --- steward: approve the grant, resolve the dispute ---
    sign_in(&b, &s, "steward1", STEWARD_PW);
    assert!(b.url().ends_with("/console/steward"), "{}", b.url());
    b.find("#grants form[data-grant]");
    b.find(&format!("#disputes form[data-dispute=\"{dispute}\"]"));
    assert!(b.text("#disputes").contains("张某") && b.text("#disputes").contains("申请人称姓名有误"), "{}", b.text("#disputes"));
    assert!(b.text("#freshness").contains("户籍"), "{}", b.text("#freshness"));
    // The rejected line, with its code and the key masked.
    assert!(b.text("#rejected").contains("invalid_value"), "{}", b.text("#rejected"));
    assert!(!b.source().contains(&key));
    b.screenshot("07-steward-queue");
    // A refusal needs its reason; Enter in the reason field refuses.
    b.mark_page();
    b.fill(&format!("#reason-{refused}"), "用途与申请的信息项不符\u{E007}");
    b.wait_for_load();
    b.wait_for("the refusal notice", |b| !b.all("[data-code=\"rejected\"]").is_empty());
    assert!(b.all(&format!("form[data-grant=\"{refused}\"]")).is_empty(), "the refused grant is still pending");
    let r = s.req("GET", &format!("/v1/grants/{refused}")).token(tokens::COUNTER).get();
    assert_eq!((r.json["state"].as_str(), r.json["reason"].as_str()), (Some("rejected"), Some("用途与申请的信息项不符")), "{}", r.text);
    b.click_to_load("#grants form[data-grant] button");
    b.wait_for("the approval notice", |b| !b.all("[data-code=\"approved\"]").is_empty());
    assert!(b.all("#grants form[data-grant]").is_empty(), "the grant is still pending");
    b.select(&format!("#outcome-{dispute}"), "confirmed");
    b.fill(&format!("#note-{dispute}"), "经核对户籍档案，姓名无误");
    b.click_to_load(&format!("#resolve-{dispute}"));
    b.wait_for("the resolution notice", |b| !b.all("[data-code=\"resolved\"]").is_empty());
    assert!(b.all(&format!("form[data-dispute=\"{dispute}\"]")).is_empty());
    b.screenshot("08-steward-resolved");
    sign_out(&b);

    // --- clerk again: the approved field is now shown; print the access report ---
    sign_in(&b, &s, "clerk1", CLERK_PW);
    b.fill("#lookup-key", &key);
    b.click_to_load("#lookup-btn");
    b.wait_for("the lookup result", |b| !b.all("[data-field=\"hukou.photo\"]").is_empty());
    b.screenshot("09-counter-lookup-after-grant");
    b.click_to_load("#nav-report");
    b.fill("#report-key", &key);
    b.click_to_load("#report-btn");
    let report = b.text("#access-report");
    assert!(report.contains("社保服务窗口") && report.contains("办理社会保险业务") && report.contains("查询"), "{report}");
    assert!(report.contains("批处理"), "the program's use is listed too: {report}");
    assert!(report.contains("户籍登记信息：姓名"), "fields by their titles: {report}");
    assert!(!b.source().contains(&key));
    b.screenshot("10-access-report");
    sign_out(&b);

    // --- auditor: the clerk's use by subject, with the clerk's name ---
    sign_in(&b, &s, "auditor1", AUDITOR_PW);
    assert!(b.url().ends_with("/console/audit"), "{}", b.url());
    assert_eq!(b.attr("#chain", "data-chain").as_deref(), Some("ok"));
    b.fill("#audit-key", &key);
    b.click_to_load("#audit-btn");
    b.wait_for("the entries", |b| !b.all("#audit-count").is_empty());
    let trail = b.text("#audit");
    assert!(trail.contains("王五（clerk1）") && trail.contains("已核实"), "{trail}");
    assert!(trail.contains("prog-7") && trail.contains("自报"), "{trail}");
    // The lookup that showed the photo names its approver: the steward who
    // approved the grant in the console.
    let approvals: Vec<String> = b.all("#audit .approval").iter().map(|e| b.text_of(e)).collect();
    assert!(approvals.iter().any(|a| a.contains("（steward1）") && a.contains("已核实")), "{approvals:?} {trail}");
    // Departments by name, outcomes in words (their ids and codes as tooltips).
    assert!(trail.contains("社保服务窗口") && trail.contains("已查到") && !trail.contains("shebao-counter"), "{trail}");
    assert!(b.source().contains(r#"<span title="shebao-counter">社保服务窗口</span>"#));
    assert!(!b.source().contains(&key) && !b.url().contains(&key));
    b.screenshot("11-audit-by-subject");
    b.click_to_load("#nav-queues");
    b.find("#grant-queue");
    assert!(b.text("#dispute-queue").contains("已办结"));
    b.screenshot("12-queues");
    b.click_to_load("#nav-reports");
    b.find("#sharing-chart");
    b.find("#freshness-chart");
    // Today's uses of the counter are on the chart over time.
    assert!(b.source().contains("<svg id=\"usage-by-day\""), "no usage chart");
    assert!(b.source().contains("<svg id=\"updates-by-day\""), "no update chart");
    // Use per dataset over time: today's bar of the household register.
    b.find("#uses-by-dataset");
    assert!(b.source().contains("<svg id=\"uses-by-dataset\""), "no chart of uses per dataset");
    assert!(b.text("#uses-by-dataset").contains("户籍登记信息"), "{}", b.text("#uses-by-dataset"));
    assert_eq!(b.attr("#daily-csv", "href").as_deref(), Some("/console/reports/daily.csv"));
    // Oversight flags per department: the counter states free text, so its
    // uses are counted as naming no catalogued purpose, and marked.
    let oversight = b.text("#oversight");
    assert!(oversight.contains("社保服务窗口") && oversight.contains("自由填写（过渡）"), "{oversight}");
    assert!(b.source().contains(r#"<span class="overdue">"#), "no flagged cell");
    b.screenshot("13-reports");
    // The yearly report, opened from the reports page: the counter's
    // lookups of this session are in its table of who used the household
    // register.
    b.click_to_load("#annual-open");
    b.find("#consumers-hukou");
    assert!(b.text("#title").contains("年度政务信息共享情况报告"));
    assert!(b.text("#consumers-hukou").contains("社保服务窗口"), "{}", b.text("#consumers-hukou"));
    b.screenshot("13b-annual-report");
    b.click_to_load("#back");
    b.find("#sharing-chart");
    // The same page on a phone-sized screen.
    b.resize(390, 844);
    b.click_to_load("#nav-audit");
    b.find("#chain");
    b.screenshot("14-audit-narrow");
    b.resize(1280, 1000);
    sign_out(&b);
    sign_in(&b, &s, "admin1", ADMIN_PW);
    b.click_to_load("#nav-admin");
    assert!(b.text("#staff").contains("clerk1"));
    b.screenshot("15-admin-staff");
    drop(b);

    // The API says which operators were verified and which declared.
    let r = s.req("GET", &format!("/v1/audit?key={key}&limit=100")).token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().unwrap();
    let source = |op: &str| entries.iter().find(|e| e["operator"] == op).map(|e| e["operator_source"].clone());
    assert_eq!(source("clerk1"), Some(json!("verified")), "{}", r.text);
    assert_eq!(source("prog-7"), Some(json!("declared")), "{}", r.text);
    assert!(entries.iter().any(|e| e["action"] == "access_report" && e["operator"] == "clerk1"), "{}", r.text);
    // The dispute filed on the page is on record with the clerk, verified.
    assert!(
        entries.iter().any(|e| e["action"] == "dispute"
            && e["operator"] == "clerk1"
            && e["operator_source"] == "verified"
            && e["outcome"] == format!("opened {dispute}")),
        "{}",
        r.text
    );
    let r = s.req("GET", "/v1/audit?department=shebao-counter&limit=1000").token(tokens::AUDITOR).get();
    assert!(
        r.json["entries"].as_array().unwrap().iter().any(|e| e["action"] == "sign_in" && e["operator"] == "clerk1" && e["outcome"] == "ok"),
        "{}",
        r.text
    );
    eprintln!("screenshots in {}", screenshot_dir().display());
}

/// An agent that keeps redirects and statuses as they are.
fn raw_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    /// The value of a `Set-Cookie` of this answer.
    fn cookie(&self, name: &str) -> Option<String> {
        self.header("set-cookie").iter().find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_owned()))
    }
    /// The CSRF token of the first form.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        self.body[at..at + 64].to_owned()
    }
    fn code(&self) -> Option<&str> {
        let at = self.body.find("data-code=\"")? + 11;
        self.body[at..].split('"').next()
    }
}

fn call(s: &Server, method: &str, path: &str, cookie: &str, form: Option<&str>) -> Answer {
    let mut b = ureq::http::Request::builder().method(method).uri(s.url(path));
    if !cookie.is_empty() {
        b = b.header("cookie", cookie);
    }
    let agent = raw_agent();
    let mut r = match form {
        Some(f) => agent.run(b.header("content-type", "application/x-www-form-urlencoded").body(f.as_bytes().to_vec()).unwrap()),
        None => agent.run(b.body(()).unwrap()),
    }
    .unwrap();
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Signs in over HTTP; returns the session cookie and the CSRF token of
/// `home`, the person's first page.
fn http_sign_in(s: &Server, id: &str, pw: &str, home: &str) -> (String, String) {
    let page = call(s, "GET", "/console/login", "", None);
    let pre = format!("bd_signin={}", page.cookie("bd_signin").unwrap());
    let r = call(s, "POST", "/console/login", &pre, Some(&format!("csrf={}&id={id}&password={pw}", page.csrf())));
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = format!("bd_session={}", r.cookie("bd_session").unwrap());
    let page = call(s, "GET", home, &cookie, None);
    assert_eq!(page.status, 200, "{}", page.body);
    (cookie, page.csrf())
}

/// A sign-in whose client leaves while its password is being checked is
/// on record if it counted: a failed attempt counts towards locking the
/// account, and none may count unaudited. Whether the attempt got as far
/// as the check depends on timing, so the test holds the trail to the
/// count: the account locks on the third counted failure, and every
/// counted failure has its entry.
#[test]
fn a_sign_in_whose_client_leaves_before_the_answer_is_audited_if_it_counted() {
    let s = Server::start(&console_config(3));
    let page = call(&s, "GET", "/console/login", "", None);
    let pre = format!("bd_signin={}", page.cookie("bd_signin").unwrap());
    let token = page.csrf();
    let form = format!("csrf={token}&id=clerk1&password=wrong-1");
    let mut tcp = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        tcp,
        "POST /console/login HTTP/1.1\r\nhost: x\r\ncookie: {pre}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    // Long enough for the server to start hashing, shorter than the hash.
    std::thread::sleep(Duration::from_millis(5));
    drop(tcp);
    std::thread::sleep(Duration::from_millis(500));
    let attempt = |pw: &str| call(&s, "POST", "/console/login", &pre, Some(&format!("csrf={token}&id=clerk1&password={pw}"))).status;
    let statuses = [attempt("wrong-2"), attempt("wrong-3")];
    let r = s.req("GET", "/v1/audit?department=shebao-counter&limit=100").token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().cloned().unwrap_or_default();
    let mut outcomes: Vec<String> =
        entries.iter().filter(|e| e["action"] == "sign_in").filter_map(|e| e["outcome"].as_str().map(str::to_owned)).collect();
    outcomes.sort();
    if statuses[1] == 403 {
        // The attempt that left counted: three failures, three entries.
        assert_eq!(outcomes, ["bad_credentials", "bad_credentials", "locked"], "{statuses:?}: {}", r.text);
    } else {
        assert_eq!((statuses, outcomes.len()), ([401, 401], 2), "{}", r.text);
    }
}

#[test]
fn sign_in_locks_out_forms_need_their_token_and_pages_are_guarded() {
    let s = Server::start(&console_config(3));
    let (key, fields) = person(1);
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key, "version": 1, "fields": fields})]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);

    // The sign-in page: security headers and a strict, script-free cookie.
    let page = call(&s, "GET", "/console/login", "", None);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").join("");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), vec!["DENY"]);
    let set = page.header("set-cookie").join("\n");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/console"), "{set}");
    assert!(!set.contains("Secure"), "Secure over plain HTTP would drop the cookie: {set}");
    let pre = format!("bd_signin={}", page.cookie("bd_signin").unwrap());
    let token = page.csrf();

    // A sign-in form without its token (a cross-site post) is refused.
    let r = call(&s, "POST", "/console/login", "", Some(&format!("csrf={token}&id=clerk1&password={CLERK_PW}")));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));

    // Three wrong passwords lock the account; then even the right one fails.
    let attempt = |pw: &str| call(&s, "POST", "/console/login", &pre, Some(&format!("csrf={token}&id=clerk1&password={pw}")));
    let r = attempt("wrong-1");
    assert_eq!((r.status, r.code()), (401, Some("bad_credentials")));
    assert_eq!(attempt("wrong-2").status, 401);
    let r = attempt("wrong-3");
    assert_eq!((r.status, r.code()), (403, Some("locked")));
    let r = attempt(CLERK_PW);
    assert_eq!((r.status, r.code()), (403, Some("locked")), "a locked account signed in");
    // An unknown account fails the same way as a wrong password.
    let r = call(&s, "POST", "/console/login", &pre, Some(&format!("csrf={token}&id=nobody&password=x")));
    assert_eq!((r.status, r.code()), (401, Some("bad_credentials")));
    // Every attempt is in the audit trail.
    let r = s.req("GET", "/v1/audit?department=shebao-counter&limit=100").token(tokens::AUDITOR).get();
    let outcomes: Vec<&str> = r.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "sign_in").filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, vec!["bad_credentials", "bad_credentials", "locked", "locked"], "{}", r.text);

    // An administrator sees the lock, lifts it, and the clerk signs in.
    let (admin, admin_csrf) = http_sign_in(&s, "admin1", ADMIN_PW, "/console/admin/staff");
    let page = call(&s, "GET", "/console/admin/staff", &admin, None);
    assert!(page.body.contains("<span data-status=\"clerk1\"><span class=\"overdue\">已锁定</span>"), "{}", page.body);
    let r = call(&s, "POST", "/console/admin/staff/clerk1/unlock", &admin, Some(&format!("csrf={admin_csrf}")));
    assert_eq!((r.status, r.code()), (200, Some("unlocked")), "{}", r.body);
    let (clerk, _) = http_sign_in(&s, "clerk1", CLERK_PW, "/console/counter");
    // ... and signs the clerk out everywhere.
    let r = call(&s, "POST", "/console/admin/staff/clerk1/sign-out", &admin, Some(&format!("csrf={admin_csrf}")));
    assert_eq!((r.status, r.code()), (200, Some("signed_out")), "{}", r.body);
    assert_eq!(call(&s, "GET", "/console/counter", &clerk, None).status, 303);
    let r = s.req("GET", "/v1/audit?department=admin&limit=100").token(tokens::AUDITOR).get();
    let acts: Vec<&str> = r.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "account").filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(acts, vec!["unlocked clerk1", "signed_out clerk1"], "{}", r.text);
    // Only administrators manage accounts.
    let (clerk, clerk_csrf) = http_sign_in(&s, "clerk1", CLERK_PW, "/console/counter");
    let r = call(&s, "POST", "/console/admin/staff/clerk1/sign-out", &clerk, Some(&format!("csrf={clerk_csrf}")));
    assert_eq!((r.status, r.code()), (403, Some("forbidden")));

    // Another account signs in; the session cookie is strict too.
    let (cookie, csrf) = http_sign_in(&s, "auditor1", AUDITOR_PW, "/console/audit");
    // A clerk's page is not an auditor's.
    let r = call(&s, "GET", "/console/counter", &cookie, None);
    assert_eq!((r.status, r.code()), (403, Some("forbidden")));
    // A change without the session's token is refused, with a wrong one too.
    let form = format!("key={key}&department=");
    let r = call(&s, "POST", "/console/audit", &cookie, Some(&form));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));
    let r = call(&s, "POST", "/console/audit", &cookie, Some(&format!("csrf={}&{form}", "0".repeat(64))));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));
    let r = call(&s, "POST", "/console/audit", &cookie, Some(&format!("csrf={csrf}&{form}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"audit-count\""));
    // Bad input is a clear message, never a fault.
    let r = call(&s, "POST", "/console/audit", &cookie, Some(&format!("csrf={csrf}&key=12345&from=2026-13-01")));
    assert_eq!((r.status, r.code()), (200, Some("invalid_key")));
    let r = call(&s, "POST", "/console/audit", &cookie, Some(&format!("csrf={csrf}&from=2026-13-01")));
    assert_eq!((r.status, r.code()), (200, Some("invalid_value")));
    let r = call(&s, "POST", "/console/audit", &cookie, Some("%%%"));
    assert!(r.status < 500, "{}", r.status);
    // A purpose note over its limit is refused, not cut.
    let (clerk, clerk_csrf) = http_sign_in(&s, "clerk1", CLERK_PW, "/console/counter");
    let note = "号".repeat(201);
    let lookup = format!("csrf={clerk_csrf}&subject=person&key={key}&purpose=%E6%A0%B8%E5%AE%9E%E7%94%B3%E8%AF%B7%E4%BA%BA%E8%BA%AB%E4%BB%BD&purpose_note=");
    let r = call(&s, "POST", "/console/counter/lookup", &clerk, Some(&format!("{lookup}{note}")));
    assert_eq!(r.code(), Some("purpose_required"), "{}", r.body);
    assert!(r.body.contains("用途说明最多 200 个字符，现有 201 个"), "{}", r.body);
    let r = call(&s, "POST", "/console/counter/lookup", &clerk, Some(&format!("{lookup}{}", &note[..600])));
    assert!(r.body.contains("data-field=\"hukou.name\""), "{}", r.body);
    // The result's dispute form names the person by the session's handle;
    // a dispute needs the token, and bad input is a clear message (none
    // of these is filed, so none is in the access report below).
    let at = r.body.find("name=\"subject_ref\" value=\"").unwrap_or_else(|| panic!("no dispute form: {}", r.body)) + 26;
    let handle = r.body[at..at + 64].to_owned();
    let dispute = |form: &str| call(&s, "POST", "/console/counter/dispute", &clerk, Some(form));
    let r = dispute(&format!("subject_ref={handle}&dataset=hukou&field=name&claimed=x"));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));
    for (rest, code) in [
        (format!("subject_ref={handle}&dataset=hukou&field=name"), "invalid_value"),
        (format!("subject_ref={handle}&dataset=hukou&claimed=x"), "invalid_value"),
        (format!("subject_ref={handle}&dataset=hukou&field=nothing&claimed=x"), "unknown_field"),
        (format!("subject_ref={handle}&dataset=market_registration&field=name&claimed=x"), "unknown_dataset"),
        (format!("subject_ref={handle}&dataset=hukou&field=name&claimed={}", "某".repeat(501)), "invalid_value"),
        (format!("subject_ref={handle}&dataset=hukou&field=name&claimed=a%07b"), "invalid_value"),
        (format!("subject_ref={}&dataset=hukou&field=name&claimed=x", "0".repeat(64)), "invalid_value"),
        ("dataset=hukou&field=name&claimed=x".to_owned(), "invalid_value"),
    ] {
        let r = dispute(&format!("csrf={clerk_csrf}&{rest}"));
        assert_eq!((r.status, r.code()), (200, Some(code)), "{rest}: {}", r.body);
        assert!(!r.body.contains(&key), "the full number is on the page");
    }
    // The access report: one page here, and a later page on request.
    let report = format!("csrf={clerk_csrf}&subject=person&key={key}");
    let r = call(&s, "POST", "/console/report", &clerk, Some(&report));
    assert!(r.body.contains("<p id=\"report-count\">共 1 条使用记录。</p>") && !r.body.contains("id=\"next-page\""), "{}", r.body);
    assert!(r.body.contains(&format!("核实申请人身份：{}<", &note[..600])), "the note was cut: {}", r.body);
    // A later page needs the tag the earlier one carried for this number.
    let r = call(&s, "POST", "/console/report", &clerk, Some(&format!("{report}&after=999999&page=2")));
    assert_eq!(r.code(), Some("invalid_value"), "{}", r.body);
    let tag = "0".repeat(64);
    let r = call(&s, "POST", "/console/report", &clerk, Some(&format!("{report}&after=999999&page=2&key_tag={tag}")));
    assert_eq!(r.code(), Some("invalid_value"), "{}", r.body);
    // Past 2,000 uses the report goes on on a next page.
    let lines: String = (0..2000).map(|i| format!("{}\n", json!({"ref": i, "subject": "person", "key": key, "fields": {"name": "某某"}}))).collect();
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("批量核验").send(Some(("application/x-ndjson", lines.into_bytes())));
    assert_eq!(r.status, 200, "{}", r.text);
    let first = call(&s, "POST", "/console/report", &clerk, Some(&report));
    assert!(first.body.contains("<p id=\"report-count\">第 1 页，2000 条使用记录；后面还有记录，见下一页。</p>"), "{}", first.body);
    assert!(!first.body.contains(&key), "the full number is on the page");
    let hidden = |name: &str| {
        let at = first.body.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name}: {}", first.body)) + name.len() + 15;
        first.body[at..].split('"').next().unwrap().to_owned()
    };
    let next = format!("{report}&after={}&page={}&key_tag={}", hidden("after"), hidden("page"), hidden("key_tag"));
    let r = call(&s, "POST", "/console/report", &clerk, Some(&next));
    assert!(r.body.contains("<p id=\"report-count\">第 2 页，3 条使用记录（最后一页）。</p>"), "{}", r.body);
    // The tag is the number's: another number with it is refused.
    let (other, _) = person(4);
    let r = call(&s, "POST", "/console/report", &clerk, Some(&next.replace(&key, &other)));
    assert_eq!(r.code(), Some("invalid_value"), "{}", r.body);
    // The series over time as CSV, a row per series and a column per day
    // (today last): the batch lines are today's uses of the register.
    let r = call(&s, "GET", "/console/reports/daily.csv", &cookie, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").join("").starts_with("text/csv"), "{:?}", r.headers);
    let head = r.body.lines().next().unwrap();
    assert!(head.starts_with("\u{feff}series,id,name,") && head.split(',').count() == 3 + 30, "{head}");
    let today = |row: &str| -> u64 {
        let line = r.body.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row}: {}", r.body));
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    assert!(today("dataset_uses,hukou,户籍登记信息,") >= 2000, "{}", r.body);
    assert!(today("department_uses,shebao-counter,社保服务窗口,") >= 2000, "{}", r.body);
    assert_eq!(today("dataset_uses,death,"), 0, "{}", r.body);
    let r = call(&s, "GET", "/console/no-such-page", &cookie, None);
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    // Signed out, the session is gone.
    let r = call(&s, "POST", "/console/logout", &cookie, Some(&format!("csrf={csrf}")));
    assert_eq!(r.status, 303);
    let r = call(&s, "GET", "/console/audit", &cookie, None);
    assert_eq!((r.status, r.header("location")), (303, vec!["/console/login"]));
    // The API is untouched by the console: still JSON errors.
    let r = s.req("GET", "/v1/nothing").token(tokens::AUDITOR).get();
    assert_eq!(r.code(), "not_found");
}

/// Pages count against the department's rate limit like its API calls.
#[test]
fn console_requests_count_against_the_department_rate_limit() {
    let cfg = console_config(5).replacen("id = \"shebao-counter\"\n", "id = \"shebao-counter\"\nrate_limit = 1\nburst = 2\n", 1);
    let s = Server::start(&cfg);
    let (cookie, _) = http_sign_in(&s, "clerk1", CLERK_PW, "/console/counter");
    let answers: Vec<Answer> = (0..4).map(|_| call(&s, "GET", "/console/counter", &cookie, None)).collect();
    let refused = answers.iter().find(|a| a.status == 429).expect("no page refused past the rate limit");
    assert_eq!(refused.code(), Some("overloaded"));
    assert!(!refused.header("retry-after").is_empty());
}

/// Past their working-day deadlines, an open dispute stands out on the
/// auditor's queue and the steward's page, and an unanswered grant shows
/// as deemed approved (the server's clock is moved on by configuration).
#[test]
fn overdue_disputes_stand_out_and_unanswered_grants_are_deemed_approved() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = console_config(5);
    let (mut s, key, _) = start_with_person(dir.path(), &cfg, 2);
    let r = s.req("POST", "/v1/disputes").token(tokens::COUNTER).json(&json!({
        "subject": "person", "key": key, "dataset": "hukou", "field": "name", "claimed": "某某", "note": "核对"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&json!({
        "dataset": "hukou", "fields": ["photo"], "purpose": "人像比对", "legal_basis": "依申请"}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(s.terminate().success());
    // Three weeks on: past five working days whatever the holidays.
    let s = Server::start_in(dir.path(), &format!("clock_offset_seconds = {}\n{cfg}", 21 * 86_400), &[]);
    let (cookie, _) = http_sign_in(&s, "auditor1", AUDITOR_PW, "/console/audit");
    let q = call(&s, "GET", "/console/queues", &cookie, None);
    assert_eq!(q.status, 200);
    let disputes = &q.body[q.body.find("id=\"dispute-queue\"").unwrap()..];
    assert!(disputes.contains("class=\"overdue\""), "{}", q.body);
    let grants = &q.body[q.body.find("id=\"grant-queue\"").unwrap()..q.body.find("id=\"dispute-queue\"").unwrap()];
    assert!(grants.contains("deemed_approved"), "{}", q.body);
    let (cookie, _) = http_sign_in(&s, "steward1", STEWARD_PW, "/console/steward");
    let p = call(&s, "GET", "/console/steward", &cookie, None);
    let open = &p.body[p.body.find("id=\"disputes\"").unwrap()..];
    assert!(open.contains("class=\"overdue\""), "{}", p.body);
    // A deemed approval is no longer waiting for an answer.
    assert!(!p.body.contains("data-grant="), "{}", p.body);
}

/// Runs `basedata staff ARGS --config FILE --data DIR` with `stdin`;
/// returns whether it succeeded, its output and its errors.
fn staff_command(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .arg("staff")
        .args(args)
        .arg("--config")
        .arg(dir.join("basedata.toml"))
        .arg("--data")
        .arg(dir.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `account` entries of the audit trail, as (department, operator,
/// operator source, outcome).
fn account_entries(s: &Server) -> Vec<(String, String, String, String)> {
    let r = s.req("GET", "/v1/audit?limit=1000").token(tokens::AUDITOR).get();
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "account")
        .map(|e| (text(&e["department"]), text(&e["operator"]), text(&e["operator_source"]), text(&e["outcome"])))
        .collect()
}

/// The first administrator of a new store comes from the command line;
/// accounts added on the page and by the command survive restarts; the
/// command refuses bad accounts and a store a server holds.
#[test]
fn the_staff_command_and_the_page_keep_accounts_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = console_config(5);
    std::fs::write(dir.path().join("basedata.toml"), &cfg).unwrap();
    // A new data directory: the command creates the store and the account.
    let (ok, out, err) = staff_command(dir.path(), &["add", "boss", "--name", "孙八", "--department", "admin", "--role", "admin", "--operator", "root"], "boss-password-1\n");
    assert!(ok, "{err}");
    assert_eq!(out, "added boss\n");
    // Mistakes are refused with their reason, and nothing is added.
    for (args, stdin, why) in [
        (vec!["add", "s1", "--department", "shebao-counter", "--role", "steward"], "password-1234\n", "provider"),
        (vec!["add", "s1", "--department", "nowhere", "--role", "clerk"], "password-1234\n", "no department"),
        (vec!["add", "s1", "--department", "shebao-counter", "--role", "boss"], "password-1234\n", "no role"),
        (vec!["add", "s 1", "--department", "shebao-counter", "--role", "clerk"], "password-1234\n", "staff id"),
        (vec!["add", "s1", "--department", "shebao-counter", "--role", "clerk"], "short\n", "8 to 256"),
        (vec!["add", "clerk1", "--department", "shebao-counter", "--role", "clerk"], "password-1234\n", "configuration"),
        (vec!["add", "boss", "--department", "admin", "--role", "admin"], "password-1234\n", "twice"),
        (vec!["disable", "clerk1"], "", "configuration file"),
        (vec!["reset", "nobody"], "password-1234\n", "no such account"),
    ] {
        let (ok, _, err) = staff_command(dir.path(), &args, stdin);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
    let (ok, out, err) = staff_command(dir.path(), &["add", "gen1", "--department", "shebao-counter", "--role", "clerk", "--generate-password"], "");
    assert!(ok, "{err}");
    let generated = out.lines().find_map(|l| l.strip_prefix("password: ")).expect("the generated password").to_owned();
    assert_eq!(generated.len(), 16);

    let mut s = Server::start_in(dir.path(), &cfg, &[]);
    // While the server holds the store, the command says what to do instead.
    let (ok, _, err) = staff_command(dir.path(), &["list"], "");
    assert!(!ok && err.contains("in use by a running server") && err.contains("账号管理"), "{err}");
    let (admin, csrf) = http_sign_in(&s, "boss", "boss-password-1", "/console/admin/staff");
    http_sign_in(&s, "gen1", &generated, "/console/counter");
    let page = call(&s, "GET", "/console/admin/staff", &admin, None);
    assert!(page.body.contains("<span data-source=\"boss\">系统内</span>") && page.body.contains("<span data-source=\"clerk1\">配置文件</span>"), "{}", page.body);
    // A change without the session's token is refused and changes nothing.
    let add = "id=temp1&name=&department=shebao-counter&roles=clerk&password=temp-password-1&password2=temp-password-1";
    let r = call(&s, "POST", "/console/admin/staff", &admin, Some(add));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));
    let r = call(&s, "POST", "/console/admin/staff/gen1/disable", &admin, Some(&format!("csrf={}", "0".repeat(64))));
    assert_eq!((r.status, r.code()), (403, Some("csrf_failed")));
    http_sign_in(&s, "gen1", &generated, "/console/counter");
    // With it: passwords must agree; configured accounts stay read-only.
    let r = call(&s, "POST", "/console/admin/staff", &admin, Some(&format!("csrf={csrf}&{}", add.replace("password2=temp-password-1", "password2=other"))));
    assert_eq!((r.status, r.code()), (200, Some("invalid_value")), "{}", r.body);
    let r = call(&s, "POST", "/console/admin/staff/clerk1/disable", &admin, Some(&format!("csrf={csrf}")));
    assert_eq!((r.status, r.code()), (200, Some("conflict")), "{}", r.body);
    let r = call(&s, "POST", "/console/admin/staff", &admin, Some(&format!("csrf={csrf}&{add}")));
    assert_eq!((r.status, r.code()), (200, Some("added")), "{}", r.body);
    assert!(!r.body.contains("temp-password-1"));
    let r = call(&s, "POST", "/console/admin/staff", &admin, Some(&format!("csrf={csrf}&{add}")));
    assert_eq!((r.status, r.code()), (200, Some("conflict")), "{}", r.body);
    http_sign_in(&s, "temp1", "temp-password-1", "/console/counter");
    assert!(s.terminate().success());

    // Offline again: both stored accounts are there; one is disabled.
    let (ok, out, err) = staff_command(dir.path(), &["list"], "");
    assert!(ok, "{err}");
    assert!(out.contains("boss\tstore\tenabled\tadmin\tadmin\t孙八") && out.contains("temp1\tstore\tenabled") && out.contains("clerk1\tconfig"), "{out}");
    let (ok, _, err) = staff_command(dir.path(), &["disable", "temp1", "--operator", "root"], "");
    assert!(ok, "{err}");
    let s = Server::start_in(dir.path(), &cfg, &[]);
    let page = call(&s, "GET", "/console/login", "", None);
    let pre = format!("bd_signin={}", page.cookie("bd_signin").unwrap());
    let r = call(&s, "POST", "/console/login", &pre, Some(&format!("csrf={}&id=temp1&password=temp-password-1", page.csrf())));
    assert_eq!((r.status, r.code()), (403, Some("disabled")));
    http_sign_in(&s, "boss", "boss-password-1", "/console/admin/staff");
    // Every change is audited: the command's as the system's with the
    // declared operator, the page's with the administrator verified.
    let acts = account_entries(&s);
    let row = |d: &str, o: &str, src: &str, what: &str| (d.to_owned(), o.to_owned(), src.to_owned(), what.to_owned());
    assert_eq!(
        acts,
        vec![
            row("system", "root", "declared", "added boss"),
            row("system", "", "", "added gen1"),
            row("admin", "boss", "verified", "added temp1"),
            row("system", "root", "declared", "disabled temp1"),
        ],
        "{acts:?}"
    );
}

/// An administrator adds an account on the page; the new person signs in
/// and looks a person up; a password reset makes the old one fail and
/// the new one work; disabling ends the live session and refuses the
/// next sign-in; the account is still there after a restart.
#[test]
fn an_administrator_manages_stored_accounts_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = console_config(5);
    let (mut s, key, fields) = start_with_person(dir.path(), &cfg, 3);

    let b = Browser::start();
    sign_in(&b, &s, "admin1", ADMIN_PW);
    b.click_to_load("#nav-admin");
    assert!(b.text("#staff").contains("在配置文件中管理"), "configured accounts are read-only");
    b.fill("#new-id", "zhou.jiu");
    b.fill("#new-name", "周九");
    b.select("#new-department", "shebao-counter");
    b.click("#new-role-clerk");
    b.fill("#new-password", "zhou-password-1");
    b.fill("#new-password2", "zhou-password-1");
    b.screenshot("16-admin-add-account");
    b.click_to_load("#add-btn");
    b.wait_for("the added notice", |b| !b.all("[data-code=\"added\"]").is_empty());
    assert_eq!(b.text("[data-source=\"zhou.jiu\"]"), "系统内");
    sign_out(&b);

    // The new person signs in and looks a person up.
    sign_in(&b, &s, "zhou.jiu", "zhou-password-1");
    assert!(b.text("#who").contains("周九"));
    b.fill("#lookup-key", &key);
    b.select("#lookup-purpose", "办理社会保险业务");
    b.click_to_load("#lookup-btn");
    b.wait_for("the lookup result", |b| !b.all("[data-field=\"hukou.name\"]").is_empty());
    assert_eq!(b.text("[data-field=\"hukou.name\"]"), fields["name"].as_str().unwrap());
    sign_out(&b);

    // A password reset, generated and shown once.
    sign_in(&b, &s, "admin1", ADMIN_PW);
    b.click_to_load("#nav-admin");
    b.click("#reset-open-zhou\\.jiu");
    b.click("#reset-zhou\\.jiu-generate");
    b.click_to_load("#reset-zhou\\.jiu");
    b.wait_for("the reset notice", |b| !b.all("[data-code=\"password_reset\"]").is_empty());
    let new_pw = b.text("#generated-password");
    assert_eq!(new_pw.chars().count(), 16, "{new_pw}");
    b.screenshot("17-admin-password-reset");
    let page = call(&s, "GET", "/console/login", "", None);
    let pre = format!("bd_signin={}", page.cookie("bd_signin").unwrap());
    let attempt = |pw: &str| call(&s, "POST", "/console/login", &pre, Some(&format!("csrf={}&id=zhou.jiu&password={pw}", page.csrf())));
    assert_eq!(attempt("zhou-password-1").code(), Some("bad_credentials"), "the old password still works");
    // The new one works: a live session, to be ended by disabling.
    let (live, _) = http_sign_in(&s, "zhou.jiu", &new_pw, "/console/counter");
    b.click_to_load("#nav-admin");
    b.click_to_load("#disable-zhou\\.jiu");
    b.wait_for("the disabled notice", |b| !b.all("[data-code=\"disabled\"]").is_empty());
    assert_eq!(b.text("[data-status=\"zhou.jiu\"]"), "已停用");
    b.screenshot("18-admin-disabled");
    let r = call(&s, "GET", "/console/counter", &live, None);
    assert_eq!((r.status, r.header("location")), (303, vec!["/console/login"]), "the live session outlived the account");
    assert_eq!(attempt(&new_pw).code(), Some("disabled"));
    drop(b);

    // After a restart the account is there, still disabled; enabled again,
    // it signs in with the reset password.
    assert!(s.terminate().success());
    let s = Server::start_in(dir.path(), &cfg, &[]);
    let (admin, csrf) = http_sign_in(&s, "admin1", ADMIN_PW, "/console/admin/staff");
    let page = call(&s, "GET", "/console/admin/staff", &admin, None);
    assert!(page.body.contains("<span data-status=\"zhou.jiu\">已停用</span>"), "{}", page.body);
    let r = call(&s, "POST", "/console/admin/staff/zhou.jiu/enable", &admin, Some(&format!("csrf={csrf}")));
    assert_eq!((r.status, r.code()), (200, Some("enabled")), "{}", r.body);
    http_sign_in(&s, "zhou.jiu", &new_pw, "/console/counter");
    let acts: Vec<String> = account_entries(&s).into_iter().map(|(_, op, _, what)| format!("{op}: {what}")).collect();
    assert_eq!(acts, vec!["admin1: added zhou.jiu", "admin1: password_reset zhou.jiu", "admin1: disabled zhou.jiu", "admin1: enabled zhou.jiu"]);
}

/// Rejected update lines are kept in the store: after a restart the
/// steward still sees the newest 50 of the dataset, keys masked.
#[test]
fn rejected_update_lines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = console_config(5);
    let (mut s, key, _) = start_with_person(dir.path(), &cfg, 5);
    // 54 lines with a number that is no valid ID, then one with the
    // person's key and a value of the wrong type.
    let bad_keys: Vec<Value> = (0..54).map(|i| json!({"key": format!("1234567890{i:05}"), "version": 1, "fields": {"name": "某某"}})).collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&bad_keys);
    assert_eq!(r.json["rejected_total"], 54, "{}", r.text);
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key, "version": 2, "fields": {"name": 5}})]);
    assert_eq!(r.json["rejected"][0]["code"], "invalid_value", "{}", r.text);
    assert!(s.terminate().success());

    let s = Server::start_in(dir.path(), &cfg, &[]);
    let (cookie, _) = http_sign_in(&s, "steward1", STEWARD_PW, "/console/steward");
    let p = call(&s, "GET", "/console/steward", &cookie, None);
    let rejected = &p.body[p.body.find("id=\"rejected\"").unwrap_or_else(|| panic!("{}", p.body))..];
    let codes: Vec<&str> = rejected.split("data-rejected=\"").skip(1).map(|c| c.split('"').next().unwrap()).collect();
    assert_eq!(codes.len(), 50, "{rejected}");
    assert_eq!(codes[0], "invalid_value", "the newest first: {rejected}");
    assert!(codes[1..].iter().all(|c| *c == "invalid_key"), "{codes:?}");
    // The key as the steward sees it: masked, never whole.
    let masked = basedata_store::keys::mask(&key).to_string();
    assert!(rejected.contains(&format!("<span class=\"keynum\">{masked}</span>")), "{rejected}");
    assert!(!p.body.contains(&key) && !p.body.contains("123456789000053"), "a full number on the page");
    // Of the first request, its last 49 lines are kept (54 down to 6).
    let lines: Vec<&str> = rejected.split("<td data-label=\"行号\">").skip(1).map(|c| c.split('<').next().unwrap()).collect();
    assert_eq!((lines.first(), lines.get(1), lines.last()), (Some(&"1"), Some(&"54"), Some(&"6")), "{rejected}");
}

#[test]
fn counter_looks_up_holders_of_other_documents() {
    let s = Server::start(&console_config(5));
    // A passport holder's residence permit, pushed by its provider.
    let g = basedata_gen::GenConfig { persons: 1, entities: 0, seed: 21 };
    let passport = basedata_gen::doc_key(&g, basedata_store::keys::DocType::Passport, 0);
    let line = json!({"key": passport.as_str(), "id_type": "passport", "version": 1, "fields": {"name": "SMITH JOHN"}});
    let r = s.req("POST", "/v1/datasets/residence_permit/updates").token(tokens::GONGAN).ndjson(&[line]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);

    let (clerk, csrf) = http_sign_in(&s, "clerk1", CLERK_PW, "/console/counter");
    let page = call(&s, "GET", "/console/counter", &clerk, None);
    assert!(page.body.contains(r#"<option value="passport">护照</option>"#), "no document type to choose");
    let lookup = |subject: &str, id_type: &str, key: &str| {
        let form = format!("csrf={csrf}&subject={subject}&id_type={id_type}&key={key}&purpose=%E5%8A%9E%E7%90%86%E7%A4%BE%E4%BC%9A%E4%BF%9D%E9%99%A9%E4%B8%9A%E5%8A%A1");
        call(&s, "POST", "/console/counter/lookup", &clerk, Some(&form))
    };
    // By passport: the record, its number masked on the page.
    let r = lookup("person", "passport", passport.as_str());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#"data-field="residence_permit.name">SMITH JOHN<"#), "{}", r.body);
    assert!(!r.body.contains(passport.as_str()), "the full number is on the page");
    // The same characters as a citizen ID are refused with the reason; a
    // licence number is no person's document.
    let r = lookup("person", "", passport.as_str());
    assert!(r.body.contains("号码无效"), "{}", r.body);
    let r = lookup("person", "business_licence", "110108000000016");
    assert!(r.body.contains("不是自然人的证件"), "{}", r.body);
    // The use is on record under the passport, by the signed-in clerk.
    let q = format!("/v1/audit?key={}&id_type=passport&limit=10", passport.as_str());
    let a = s.req("GET", &q).token(tokens::AUDITOR).get();
    let e = a.json["entries"].as_array().unwrap().iter().find(|e| e["action"] == "lookup").unwrap_or_else(|| panic!("{}", a.text)).clone();
    assert_eq!(e["operator"], "clerk1", "{e}");
    // The auditor finds it by the passport on the audit page.
    let (auditor, acsrf) = http_sign_in(&s, "auditor1", AUDITOR_PW, "/console/audit");
    let form = format!("csrf={acsrf}&id_type=passport&key={}", passport.as_str());
    let r = call(&s, "POST", "/console/audit", &auditor, Some(&form));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("王五") && r.body.contains("查询"), "the clerk's lookup is not listed: {}", r.body);
    let r = call(&s, "POST", "/console/audit", &auditor, Some(&format!("csrf={acsrf}&id_type=passport&key=1")));
    assert!(r.body.contains("号码无效"), "{}", r.body);
}
