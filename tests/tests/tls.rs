//! End-to-end tests of transport security with the release binary: HTTPS
//! with the server's CA trusted, plain HTTP refused, mutual TLS that
//! identifies departments by their client certificates (with and without
//! tokens), certificates of unknown subjects and of foreign CAs, and a
//! clean shutdown on SIGTERM. Every certificate is generated here.

use basedata_tests::*;
use basedata_gen::{person_key, GenConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// A certificate and its private key, PEM.
struct Identity {
    cert: String,
    key: String,
}

/// Everything a test needs: the CA that signs the server and the clients,
/// the server's identity, and client identities.
struct Pki {
    ca: String,
    server: Identity,
    /// CN=gongan,O=市公安局: the provider department, which also has a token.
    gongan: Identity,
    /// CN=renshe,O=市人社局: a consumer known by certificate only.
    renshe: Identity,
    /// A subject no department names.
    stranger: Identity,
    /// gongan's subject, but signed by another CA.
    forged: Identity,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn new_leaf(issuer: &Issuer<'static, KeyPair>, dn: &[(DnType, &str)], sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity { cert: cert.pem(), key: key.serialize_pem() }
}

fn pki() -> Pki {
    let (ca, issuer) = new_ca("basedata test CA");
    let (_, other) = new_ca("another CA");
    let client = |issuer, cn, o| {
        new_leaf(issuer, &[(DnType::CommonName, cn), (DnType::OrganizationName, o)], &[], ExtendedKeyUsagePurpose::ClientAuth)
    };
    Pki {
        server: new_leaf(&issuer, &[(DnType::CommonName, "basedata")], &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth),
        gongan: client(&issuer, "gongan", "市公安局"),
        renshe: client(&issuer, "renshe", "市人社局"),
        stranger: client(&issuer, "stranger", "市公安局"),
        forged: client(&other, "gongan", "市公安局"),
        ca,
    }
}

/// The standard departments, gongan also known by its certificate, a
/// certificate-only consumer, and `[tls]` with paths relative to the
/// configuration file.
fn tls_config(client_auth: &str) -> String {
    let departments = standard_config()
        .replace("id = \"gongan\"\n", "id = \"gongan\"\ncert_subject = \"CN=gongan,O=市公安局\"\n");
    format!(
        "[tls]\ncert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"clients.pem\"\nclient_auth = \"{client_auth}\"\n\n\
         {departments}[[departments]]\nid = \"renshe\"\nroles = [\"consumer\"]\ncert_subject = \"O=市人社局,CN=renshe\"\n"
    )
}

/// A TLS server on generated certificates, and the scratch directory it lives in.
struct TlsServer {
    server: Server,
    pki: Pki,
    _dir: tempfile::TempDir,
}

fn start(client_auth: &str) -> TlsServer {
    start_with(client_auth, "")
}

/// [`start`] with `extra` appended to the configuration.
fn start_with(client_auth: &str, extra: &str) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    std::fs::write(dir.path().join("server.crt"), &pki.server.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &pki.server.key).unwrap();
    std::fs::write(dir.path().join("clients.pem"), &pki.ca).unwrap();
    let server = Server::spawn_in(dir.path(), &format!("{}{extra}", tls_config(client_auth)), &[]);
    let s = TlsServer { server, pki, _dir: dir };
    s.wait_ready();
    s
}

impl TlsServer {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.server.addr)
    }

    /// A client that trusts the test CA and shows `identity`, if any.
    fn client(&self, identity: Option<&Identity>) -> ureq::Agent {
        let root = Certificate::from_pem(self.pki.ca.as_bytes()).unwrap();
        let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(RootCerts::new_with_certs(&[root]));
        if let Some(id) = identity {
            let cert = Certificate::from_pem(id.cert.as_bytes()).unwrap();
            let key = PrivateKey::from_pem(id.key.as_bytes()).unwrap();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            // The console's redirects are checked, not followed.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Waits for `/healthz` over TLS, with a certificate that every
    /// `client_auth` setting accepts.
    fn wait_ready(&self) {
        let client = self.client(Some(&self.pki.gongan));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&self.url("/healthz")).call() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("TLS server did not come up; stderr:\n{}", self.server.logs());
    }
}

/// Status and JSON body of a request, or the transport error's text.
fn call(agent: &ureq::Agent, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[Value]>) -> Result<(u16, Value), String> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let result = match body {
        Some(lines) => {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            agent.run(b.header("content-type", "application/x-ndjson").body(text.into_bytes()).unwrap())
        }
        None => agent.run(b.body(()).unwrap()),
    };
    let mut r = result.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn get(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Result<(u16, Value), String> {
    call(agent, "GET", url, headers, None)
}

/// A response body short enough for an assertion message.
fn brief(body: &Value) -> String {
    body.to_string().chars().take(300).collect()
}

/// Asserts that the connection failed (handshake refused): no HTTP answer.
fn assert_refused(result: Result<(u16, Value), String>, what: &str) {
    if let Ok((status, body)) = result {
        panic!("{what}: answered {status} {}", brief(&body));
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn https_with_the_ca_trusted_and_plain_http_refused() {
    let s = start("optional");
    let anonymous = s.client(None);
    let (status, _) = get(&anonymous, &s.url("/healthz"), &[]).unwrap();
    assert_eq!(status, 200);
    // Without a certificate, tokens work as before.
    let (status, body) = get(&anonymous, &s.url("/v1/catalog"), &[("authorization", &bearer(tokens::COUNTER))]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));
    assert!(body["datasets"].as_array().is_some_and(|d| !d.is_empty()));
    let (status, body) = get(&anonymous, &s.url("/v1/catalog"), &[]).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = agent().get(&s.server.url("/healthz")).call();
    assert!(plain.is_err(), "plain HTTP answered: {:?}", plain.map(|r| r.status()));
    // A client that does not trust the test CA refuses the server.
    let stranger_roots: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    assert!(stranger_roots.get(&s.url("/healthz")).call().is_err(), "the server's certificate was trusted without its CA");
    assert!(s.server.logs().contains("https://"), "{}", s.server.logs());
}

#[test]
fn client_certificates_authenticate_departments() {
    let s = start("optional");
    let gongan = s.client(Some(&s.pki.gongan));
    let renshe = s.client(Some(&s.pki.renshe));
    let key = person_key(&GenConfig { persons: 10, entities: 0, seed: 7 }, 3);
    let gender = if key.sequence() % 2 == 1 { "1" } else { "2" };
    let line = json!({"key": key.as_str(), "version": 1, "op": "upsert", "fields": {
        "name": "测试甲", "gender": gender, "birth_date": key.birth_date().to_string(), "status": "normal"}});

    // The provider pushes by certificate alone, and with its own token beside it.
    let updates = s.url("/v1/datasets/hukou/updates");
    let (status, body) = call(&gongan, "POST", &updates, &[], Some(std::slice::from_ref(&line))).unwrap();
    assert_eq!((status, body["applied"].as_u64()), (200, Some(1)), "{}", brief(&body));
    let (status, body) = call(&gongan, "GET", &s.url("/v1/catalog"), &[("authorization", &bearer(tokens::GONGAN))], None).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));

    // A certificate-only consumer reads the catalog and looks the person up.
    let (status, body) = get(&renshe, &s.url("/v1/catalog"), &[]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));
    let person = s.url(&format!("/v1/persons/{}", key.as_str()));
    let (status, body) = get(&renshe, &person, &[("x-purpose", "就业补贴资格审核")]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));
    assert_eq!(body["datasets"]["hukou"]["fields"]["name"], "测试甲", "{}", brief(&body));
    let (status, body) = get(&renshe, &person, &[]).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("purpose_required")), "{}", brief(&body));
    // A verification, which the server serves beside its router, knows
    // the certificate's department too.
    let verify = s.url(&format!("/v1/persons/{}/verify", key.as_str()));
    let claim = json!({"dataset": "hukou", "fields": {"name": "测试甲"}});
    let (status, body) = call(&renshe, "POST", &verify, &[("x-purpose", "就业补贴资格复核")], Some(std::slice::from_ref(&claim))).unwrap();
    assert_eq!((status, body["result"].as_str()), (200, Some("match")), "{}", brief(&body));
    let (status, body) = call(&s.client(Some(&s.pki.stranger)), "POST", &verify, &[("x-purpose", "复核")], Some(std::slice::from_ref(&claim))).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{}", brief(&body));
    // The lookup is audited under the certificate's department.
    let auditor = s.client(None);
    let (status, body) = get(&auditor, &s.url("/v1/audit?department=renshe"), &[("authorization", &bearer(tokens::AUDITOR))]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));
    assert!(body.to_string().contains("就业补贴资格审核"), "{}", brief(&body));
    assert!(body.to_string().contains("就业补贴资格复核"), "the verification too: {}", brief(&body));

    // A token of another department, or an unknown one, beside the certificate.
    for (agent, token) in [(&gongan, tokens::COUNTER), (&renshe, tokens::GONGAN), (&renshe, "not-a-known-token-at-all")] {
        let (status, body) = get(agent, &s.url("/v1/catalog"), &[("authorization", &bearer(token))]).unwrap();
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{}", brief(&body));
    }

    // A verified certificate that names no department needs a token.
    let stranger = s.client(Some(&s.pki.stranger));
    let (status, body) = get(&stranger, &s.url("/v1/catalog"), &[]).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{}", brief(&body));
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("CN=stranger,O=市公安局")), "{}", brief(&body));
    let (status, body) = get(&stranger, &s.url("/v1/catalog"), &[("authorization", &bearer(tokens::COUNTER))]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));

    // A certificate the client CA did not sign is refused even where a
    // certificate is optional: it is never mistaken for none.
    let forged = s.client(Some(&s.pki.forged));
    assert_refused(get(&forged, &s.url("/v1/catalog"), &[("authorization", &bearer(tokens::COUNTER))]), "foreign CA, optional");
}

#[test]
fn required_client_certificates_and_clean_shutdown() {
    let mut s = start("required");
    let gongan = s.client(Some(&s.pki.gongan));
    let (status, body) = get(&gongan, &s.url("/v1/catalog"), &[]).unwrap();
    assert_eq!(status, 200, "{}", brief(&body));

    // Another CA's certificate, even with gongan's subject, fails the handshake.
    let forged = s.client(Some(&s.pki.forged));
    assert_refused(get(&forged, &s.url("/v1/catalog"), &[]), "foreign CA, required");
    // So does a client without a certificate, token or not.
    let anonymous = s.client(None);
    assert_refused(get(&anonymous, &s.url("/v1/catalog"), &[("authorization", &bearer(tokens::COUNTER))]), "no certificate, required");
    // The client may see the refusal before the server's task has logged it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !s.server.logs().contains("TLS handshake failed") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(s.server.logs().contains("TLS handshake failed"), "{}", s.server.logs());

    // gongan's agent keeps its connection open: SIGTERM still drains and exits.
    let status = s.server.terminate();
    assert!(status.success(), "exit status {status:?}; logs:\n{}", s.server.logs());
    assert!(s.server.logs().contains("shut down cleanly"), "{}", s.server.logs());
}

/// A console page over TLS: status, `Set-Cookie` headers and body.
fn page(agent: &ureq::Agent, method: &str, url: &str, cookie: &str, form: Option<&str>) -> (u16, Vec<String>, String) {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        b = b.header("cookie", cookie);
    }
    let mut r = match form {
        Some(f) => agent.run(b.header("content-type", "application/x-www-form-urlencoded").body(f.as_bytes().to_vec()).unwrap()),
        None => agent.run(b.body(()).unwrap()),
    }
    .unwrap();
    let cookies = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap_or("").to_owned()).collect();
    (r.status().as_u16(), cookies, r.body_mut().read_to_string().unwrap_or_default())
}

fn cookie_pair(cookies: &[String], name: &str) -> String {
    let c = cookies.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("no {name} in {cookies:?}"));
    c.split(';').next().unwrap().to_owned()
}

/// Over mutual TLS a staff member signs in to the console with a client
/// certificate whose subject is on their account; the cookies are Secure.
/// A certificate on no account is refused, and both attempts are audited.
#[test]
fn console_sign_in_by_client_certificate() {
    let staff = "\n[[staff]]\nid = \"steward.cert\"\nname = \"证书管护员\"\ndepartment = \"gongan\"\nroles = [\"steward\"]\ncert_subject = \"CN=stranger,O=市公安局\"\n";
    let s = start_with("optional", staff);
    let person = s.client(Some(&s.pki.stranger));
    let (status, cookies, body) = page(&person, "GET", &s.url("/console/login"), "", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=\"login-cert\"") && body.contains("证书管护员"), "{body}");
    assert!(cookies.iter().all(|c| c.contains("; Secure") && c.contains("HttpOnly")), "{cookies:?}");
    let pre = cookie_pair(&cookies, "bd_signin");
    let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let token = &body[at..at + 64];
    let (status, cookies, _) = page(&person, "POST", &s.url("/console/login/cert"), &pre, Some(&format!("csrf={token}")));
    assert_eq!(status, 303);
    assert!(cookies.iter().all(|c| c.contains("; Secure")), "{cookies:?}");
    let session = cookie_pair(&cookies, "bd_session");
    let (status, _, body) = page(&person, "GET", &s.url("/console/steward"), &session, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("证书管护员"));

    // A certificate that is on no staff account.
    let other = s.client(Some(&s.pki.renshe));
    let (_, cookies, body) = page(&other, "GET", &s.url("/console/login"), "", None);
    assert!(!body.contains("login-cert"));
    let pre = cookie_pair(&cookies, "bd_signin");
    let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let (status, _, body) = page(&other, "POST", &s.url("/console/login/cert"), &pre, Some(&format!("csrf={}", &body[at..at + 64])));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("data-code=\"certificate_refused\""));

    let auditor = s.client(None);
    let (status, audit) = call(&auditor, "GET", &s.url("/v1/audit?limit=100"), &[("authorization", &format!("Bearer {}", tokens::AUDITOR))], None).unwrap();
    assert_eq!(status, 200);
    let outcomes: Vec<(String, bool)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "sign_in")
        .map(|e| (e["outcome"].as_str().unwrap_or("").to_owned(), e["operator_source"] == "verified"))
        .collect();
    assert_eq!(outcomes, vec![("ok_certificate".to_owned(), true), ("certificate_refused".to_owned(), false)], "{audit}");
}
