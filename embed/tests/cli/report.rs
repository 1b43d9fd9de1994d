//! `tracemark-detect --report DIR` (issue 13): the evidence report of found copies, with a
//! recipient whose name is markup; checked for escaping, well-formedness, order, the
//! evidence hashes and the audit trail, and opened in headless Chromium when it is installed
//! (`.ci/run` installs it and sets TRACEMARK_REQUIRE_BROWSER, so CI never skips it).

use std::path::Path;
use std::process::Command;

use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};

use crate::{Env, ledger_cmd, sha256_file, stamp_for, testdata};

const RECIPIENT: &str = "Dr <script>alert('x')</script> \u{202E}Smith";

/// Every tag is closed in order (void elements excepted), and no '<' stands in text.
fn well_formed(html: &str) -> Result<(), String> {
    let body = html.strip_prefix("<!DOCTYPE html>").ok_or("no doctype")?;
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find('<') {
        let tail = &rest[at + 1..];
        let end = tail.find('>').ok_or("an unclosed '<'")?;
        let tag = &tail[..end];
        rest = &tail[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() {
            return Err(format!("'<{tag}>' is not a tag: unescaped text"));
        }
        if !(tag.ends_with('/') || ["meta", "img", "br"].contains(&name.as_str())) {
            stack.push(name);
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

#[test]
fn the_report_names_the_recipient_escaped_strongest_first_with_the_evidence() {
    let env = Env::new();
    let ledger = env.path("l.db");
    let stamped = env.path("camera-release.png");
    let o = stamp_for(&env, &ledger, RECIPIENT, &testdata("camera.png"), &stamped);
    assert!(o.status.success(), "{o:?}");
    let other = env.path("coffee-release.png");
    let o = stamp_for(&env, &ledger, "Dr Other", &testdata("coffee.png"), &other);
    assert!(o.status.success(), "{o:?}");
    // A leak (rescaled, re-saved), an unmarked image, a missing file.
    let (r, _) = read(&stamped, &Limits::default()).unwrap();
    let leak = env.path("found <on> a forum.png");
    write(
        &tracemark_leaks::scale(&r, 0.8, tracemark_leaks::Filter::Cubic),
        &leak,
        &WriteOptions::default(),
    )
    .unwrap();
    let unmarked = testdata("coffee.png");
    let dir = env.path("report");
    let o = Command::new(crate::batch::detect_bin())
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--operator", "privacy office"])
        .arg("--report")
        .arg(&dir)
        .arg(&unmarked)
        .arg(env.path("missing.png"))
        .arg(&leak)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    well_formed(&html).unwrap();
    assert!(!html.contains("<script"), "markup from the ledger is text");
    assert!(html.contains("Dr &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; [U+202E]Smith"));
    assert!(html.contains("found &lt;on&gt; a forum.png"));
    assert!(
        html.contains("data:image/png;base64,"),
        "the examined images are inline"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing is fetched"
    );
    // The named leak's pictures: where the mark is, and the part of the released file the
    // copy shows (the whole of it: a rescaled copy).
    assert!(
        html.contains("class=\"heat\"") && html.contains("red where the mark is locally strong"),
        "the strength map is shown"
    );
    assert!(
        html.contains("<svg"),
        "the copy's outline on the released file"
    );
    assert!(
        html.contains("the copy shows: the outlined area, about 100 %"),
        "a rescaled copy shows all of the released file"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    // Strongest first: the named leak, then the unmarked image, then the missing file.
    assert_eq!(files[0]["path"], leak.display().to_string());
    assert_eq!(files[0]["detection"]["named"][0]["recipient"], RECIPIENT);
    assert_eq!(files[0]["detection"]["sha256"], sha256_file(&leak));
    assert_eq!(files[1]["detection"]["verdict"], "no_mark");
    assert_eq!(files[1]["detection"]["sha256"], sha256_file(&unmarked));
    assert!(files[2]["error"].as_str().unwrap().contains("missing.png"));
    // The named leak's map: most blocks carry the mark; the unmarked image has no map.
    let map = &files[0]["strength"];
    let z: Vec<f64> = map["z"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert_eq!(
        map["z"].as_array().unwrap().len() as u64,
        map["cols"].as_u64().unwrap() * map["rows"].as_u64().unwrap()
    );
    let strong = z.iter().filter(|&&v| v >= 3.0).count();
    assert!(
        strong * 2 > z.len(),
        "blocks with z >= 3: {strong} of {}",
        z.len()
    );
    assert!(files[1]["strength"].is_null());
    // The copy (camera.png scaled 0.8) covers the released file: its corners lie on the
    // file's, within the registration's precision.
    let fp = &files[0]["detection"]["content"][0]["footprint"];
    assert_eq!(fp["original"][0], 512, "{fp}");
    let corners: Vec<(f64, f64)> = fp["corners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
        .collect();
    let want = [(0.0, 0.0), (512.0, 0.0), (512.0, 512.0), (0.0, 512.0)];
    for (c, w) in corners.iter().zip(want) {
        assert!(
            (c.0 - w.0).hypot(c.1 - w.1) < 6.0,
            "corner {c:?} should be near {w:?}: {fp}"
        );
    }
    assert_eq!(json["operator"], "privacy office");
    assert!(
        json["ledger"]["head"]
            .as_str()
            .unwrap()
            .starts_with("tracemark-anchor-v1")
    );
    assert_eq!(json["ledger"]["audit_recorded"], true);
    assert!(html.contains("every examination below is recorded in its audit trail"));
    // Only the releases the report mentions are in it: the one named, not Dr Other's.
    let releases = json["ledger"]["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0]["recipient"], RECIPIENT);
    // The three examinations are in the audit trail, which verifies.
    let audit = ledger_cmd(&env, &ledger, &["audit"]);
    assert_eq!(String::from_utf8_lossy(&audit.stdout).lines().count(), 3);
    assert!(ledger_cmd(&env, &ledger, &["verify"]).status.success());
    browser(&dir.join("index.html"));
}

/// Opens the report in headless Chromium: it loads, no console message, and the DOM shows
/// the named recipient.
fn browser(page: &Path) {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok());
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("TRACEMARK_REQUIRE_BROWSER").is_none(),
            "TRACEMARK_REQUIRE_BROWSER is set but no Chromium is installed"
        );
        eprintln!("report test: no Chromium here; the browser check is skipped");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chromium: {log}");
    assert!(dom.contains("tracemark evidence report"), "{dom}");
    assert!(
        dom.contains("Named: Dr &lt;script&gt;alert('x')&lt;/script&gt; [U+202E]Smith"),
        "the named recipient is shown: {dom}"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
}

#[test]
fn a_report_that_cannot_be_written_loses_no_result() {
    let env = Env::new();
    let blocker = env.path("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let o = Command::new(crate::batch::detect_bin())
        .arg("--key")
        .arg(&env.key)
        .arg("--report")
        .arg(blocker.join("report"))
        .arg(testdata("coffee.png"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("coffee.png: no_mark"),
        "{o:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("report not written") && err.lines().count() == 1,
        "{err}"
    );
}
