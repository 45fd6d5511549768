//! The console in a real browser: Debian's headless Chromium driven through
//! chromedriver (W3C WebDriver), against the real daemon, backbone and
//! mosquitto, on a files source whose one image the test swaps. It logs in,
//! draws a classifier's region with the mouse, teaches two classes with the
//! buttons, watches the stable label follow the scene, bulk-labels recent crops,
//! classifies an uploaded image, renames and deletes the classifier; and saves a
//! screenshot of each page in `target/console-screenshots/` (README's pictures).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use image::RgbImage;
use serde_json::{json, Value};

use crate::classifiers::{fixture, show};
use crate::console::{set_password, Console, PASSWORD};
use crate::harness::{
    config_file, edit_config, fixtures, free_port, root, Client, Mosquitto, Process, BASE,
};

/// chromedriver, stopped on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start chromedriver and a headless Chromium session.
async fn browser() -> (Driver, Browser) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; tools/test.sh installs it)");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--force-device-scale-factor=1", "--lang=en-US"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(b) => return (driver, b),
            // chromedriver is still starting.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

/// A fixture photo as a 640×480 frame.
fn frame(name: &str) -> RgbImage {
    image::imageops::resize(
        &fixture(name),
        640,
        480,
        image::imageops::FilterType::Triangle,
    )
}

/// Where the screenshots go.
fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

/// Poll `check` every 200 ms until it gives `Some`, for at most `secs`.
async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(b: &Browser, css: &str) -> String {
    match b.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Wait until the element `css` shows text that satisfies `pred`; that text.
async fn wait_text(b: &Browser, css: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    until(&format!("text of {css}"), secs, || async {
        let t = text(b, css).await;
        pred(&t).then_some(t)
    })
    .await
}

/// Click `css` (found again when the page redrew it in between).
async fn click(b: &Browser, css: &str) {
    let mut tries = 0;
    loop {
        let e = b
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.click().await {
            Ok(()) => return,
            Err(e) if tries < 3 && e.to_string().contains("stale element") => tries += 1,
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

async fn type_into(b: &Browser, css: &str, text: &str) {
    let e = b
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("type");
}

async fn page(b: &Browser, name: &str) {
    click(b, &format!("nav a[data-page={name}]")).await;
    until(&format!("page {name}"), 10, || async {
        let e = b.find(Locator::Css(&format!("#page-{name}"))).await.ok()?;
        e.is_displayed().await.ok()?.then_some(())
    })
    .await;
}

/// The stable label the live page's list shows for classifier `name`.
async fn listed_label(b: &Browser, name: &str) -> String {
    text(
        b,
        &format!("#classifier-list li[data-name=\"{name}\"] .state"),
    )
    .await
}

/// A drag with the left button on `css`, from and to fractions of its box.
async fn drag(b: &Browser, css: &str, from: (f64, f64), to: (f64, f64)) {
    let e = b.find(Locator::Css(css)).await.expect("element");
    let (_, _, w, h) = e.rectangle().await.expect("rectangle");
    // Offsets from the element's centre, in whole pixels.
    let to_element = |(fx, fy): (f64, f64), ms: Option<u64>| PointerAction::MoveToElement {
        element: e.clone(),
        duration: ms.map(Duration::from_millis),
        x: ((fx - 0.5) * w).round(),
        y: ((fy - 0.5) * h).round(),
    };
    let middle = ((from.0 + to.0) / 2.0, (from.1 + to.1) / 2.0);
    let mouse = MouseActions::new("mouse".into())
        .then(to_element(from, None))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(to_element(middle, Some(300)))
        .then(to_element(to, Some(300)))
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    b.perform_actions(mouse).await.expect("pointer actions");
    b.release_actions().await.expect("release");
}

/// Hold the left button on `css` for `ms`.
async fn hold(b: &Browser, css: &str, ms: u64) {
    let e = b.find(Locator::Css(css)).await.expect("element");
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: e,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Pause {
            duration: Duration::from_millis(ms),
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    b.perform_actions(mouse).await.expect("hold");
    b.release_actions().await.expect("release");
}

/// The classifier `name` in the console's list (`None` when it is not there).
fn classifier(console: &Console, name: &str) -> Option<Value> {
    let r = console.get("/api/ops/classifiers");
    r.body["data"]["classifiers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// A number in `text` right before `word` ("12 crops" → 12).
fn count_before(text: &str, word: &str) -> Option<usize> {
    let i = text.find(word)?;
    text[..i].split_whitespace().last()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_teaches_a_classifier_from_the_console() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let scene = dir.path().join("scene");
    std::fs::create_dir_all(&scene).expect("mkdir");
    show(&scene, &frame("hat-1.jpg"));
    set_password(dir.path());
    let config = config_file(dir.path(), broker.port, "");
    edit_config(&config, |t| {
        t.replace(
            &fixtures().display().to_string(),
            &scene.display().to_string(),
        )
    });
    let daemon = Process::start(&config);
    let mut mqtt = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    mqtt.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let mut api = Console::of(&daemon);
    assert_eq!(api.login(PASSWORD).code, 200);
    let (_driver, b) = browser().await;

    // Log in.
    b.goto(&api.url).await.expect("open the console");
    until("the login form", 20, || async {
        b.find(Locator::Id("password"))
            .await
            .ok()?
            .is_displayed()
            .await
            .ok()?
            .then_some(())
    })
    .await;
    screenshot(&b, "01-login").await;
    // Every script error and Content Security Policy violation from now on.
    b.execute(
        "window.__problems = [];
         window.addEventListener('error', (e) => window.__problems.push('error: ' + e.message));
         window.addEventListener('unhandledrejection', (e) => window.__problems.push('rejection: ' + e.reason));
         document.addEventListener('securitypolicyviolation', (e) => window.__problems.push('CSP: ' + e.violatedDirective));",
        vec![],
    )
    .await
    .expect("install the listeners");
    type_into(&b, "#password", "wrong password").await;
    click(&b, "#login-button").await;
    wait_text(&b, "#login-answer", 10, |t| t.contains("wrong password")).await;
    type_into(&b, "#password", PASSWORD).await;
    click(&b, "#login-button").await;
    wait_text(&b, "#classifier-list", 20, |t| t.contains("default")).await;

    // Draw a new classifier's region on the live view.
    until("a live frame", 30, || async {
        let v = b
            .execute(
                "return document.getElementById('live-image').naturalWidth",
                vec![],
            )
            .await
            .ok()?;
        (v.as_u64()? > 0).then_some(())
    })
    .await;
    click(&b, "#new-classifier").await;
    type_into(&b, "#create-name", "shelf").await;
    drag(&b, "#overlay", (0.2, 0.15), (0.8, 0.85)).await;
    screenshot(&b, "02-draw-region").await;
    click(&b, "#create-button").await;
    wait_text(&b, "#classifiers-answer", 20, |t| t.contains("Created")).await;
    wait_text(&b, "#classifier-list", 10, |t| t.contains("shelf")).await;
    let shelf = classifier(&api, "shelf").expect("created");
    let r = &shelf["region"];
    for (k, want) in [("x", 0.2), ("y", 0.15), ("width", 0.6), ("height", 0.7)] {
        let got = r[k].as_f64().expect("number");
        assert!(
            (got - want).abs() < 0.03,
            "region {k}: {got}, drawn {want}: {shelf}"
        );
    }

    // Teach two classes with the buttons.
    page(&b, "teach").await;
    wait_text(&b, "#page-teach .cname", 10, |t| t.contains("shelf")).await;
    type_into(&b, "#new-label", "hat").await;
    click(&b, "#new-class-add").await;
    wait_text(&b, "#teach-answer", 20, |t| t.contains("1 sample now")).await;
    for n in 2..=3 {
        wait_text(&b, "#classes", 10, |t| t.contains("hat")).await;
        click(&b, ".class[data-label=\"hat\"] .add").await;
        wait_text(&b, "#teach-answer", 20, |t| {
            t.contains(&format!("{n} samples now"))
        })
        .await;
    }
    show(&scene, &frame("shoes-1.jpg"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    type_into(&b, "#new-label", "shoes").await;
    click(&b, "#new-class-add").await;
    wait_text(&b, "#teach-answer", 20, |t| t.contains("shoes")).await;
    wait_text(&b, "#classes", 10, |t| t.contains("shoes")).await;
    // Hold "Record" on a scene that does not change: one crop, the rest skipped.
    hold(&b, ".class[data-label=\"shoes\"] .record", 2500).await;
    let recorded = wait_text(&b, "#teach-answer", 30, |t| t.starts_with("Stored")).await;
    assert!(recorded.contains("near-identical"), "{recorded}");
    assert_eq!(count_before(&recorded, "crop"), Some(1), "{recorded}");
    wait_text(&b, "#classes", 20, |t| t.contains("right")).await;
    screenshot(&b, "03-teach").await;
    assert_eq!(api.samples("shelf"), 5);

    // The stable label follows the scene on the live view.
    page(&b, "live").await;
    until("the label shoes", 30, || async {
        listed_label(&b, "shelf")
            .await
            .starts_with("shoes")
            .then_some(())
    })
    .await;
    show(&scene, &frame("hat-1.jpg"));
    until("the label hat", 30, || async {
        listed_label(&b, "shelf")
            .await
            .starts_with("hat")
            .then_some(())
    })
    .await;
    screenshot(&b, "04-live").await;

    // Keep every crop below full confidence, run on every frame: recent crops
    // of two new photos pile up.
    click(&b, "#classifier-list li[data-name=\"shelf\"]").await;
    type_into(&b, "#r-below", "100").await;
    type_into(&b, "#r-gap", "0").await;
    let every = b
        .find(Locator::Id("t-every-frame"))
        .await
        .expect("checkbox");
    if !every.is_selected().await.expect("checked") {
        every.click().await.expect("check");
    }
    click(&b, "#save-settings").await;
    wait_text(&b, "#settings-answer", 20, |t| t.contains("Saved")).await;
    page(&b, "recent").await;
    wait_text(&b, "#recent-count", 20, |t| !t.is_empty()).await;
    click(&b, "#select-all").await;
    click(&b, "#discard").await;
    wait_text(&b, "#recent-answer", 20, |t| t.contains("Discarded")).await;
    for photo in ["pants-1.jpg", "pants-2.jpg"] {
        show(&scene, &frame(photo));
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    show(&scene, &frame("hat-1.jpg"));
    wait_text(&b, "#recent-count", 30, |t| {
        count_before(t, "crop").is_some_and(|n| n >= 8)
    })
    .await;
    click(&b, "#select-all").await;
    let selected = wait_text(&b, "#recent-count", 10, |t| t.contains("selected")).await;
    let crops = count_before(&selected, "crop").expect("crops selected");
    let groups = count_before(&selected, "group").expect("groups");
    screenshot(&b, "05-recent").await;
    type_into(&b, "#assign-label", "pants").await;
    click(&b, "#assign").await;
    let stored = wait_text(&b, "#recent-answer", 60, |t| t.starts_with("Stored")).await;
    let n = count_before(&stored, "sample").expect("samples stored");
    assert!(
        n >= 2 && n <= groups && n < crops,
        "{crops} crops in {groups} groups stored {n}: {stored}"
    );
    let classes = api.get("/api/classifiers/shelf/classes").body;
    let pants = classes["data"]["classes"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["label"] == "pants"))
        .map(|c| c["samples"].as_u64().unwrap_or(0));
    assert_eq!(pants, Some(n as u64), "{classes}");

    // Quality, and "classify an image".
    page(&b, "quality").await;
    wait_text(&b, "#q-summary", 30, |t| t.contains("right when")).await;
    wait_text(&b, "#q-classes", 30, |t| t.contains("pants")).await;
    let upload: &Path = &fixtures().join("shoes-1.jpg");
    b.find(Locator::Id("classify-file"))
        .await
        .expect("file input")
        .send_keys(&upload.display().to_string())
        .await
        .expect("upload");
    let answer = wait_text(&b, "#classify-answer", 30, |t| {
        t.contains("sure") || t.contains("nknown")
    })
    .await;
    assert!(answer.contains("shoes"), "{answer}");
    wait_text(&b, "#q-history", 10, |t| {
        t.contains("combined") || t.contains("ncm") || t.contains("softmax")
    })
    .await;
    screenshot(&b, "06-quality").await;
    page(&b, "status").await;
    wait_text(&b, "#status-facts", 20, |t| t.contains("connected")).await;
    screenshot(&b, "07-status").await;

    // Rename, then delete.
    page(&b, "live").await;
    click(&b, "#classifier-list li[data-name=\"shelf\"]").await;
    type_into(&b, "#rename-to", "closet").await;
    click(&b, "#rename-button").await;
    wait_text(&b, "#settings-answer", 20, |t| t.contains("Renamed")).await;
    wait_text(&b, "#classifier-list", 10, |t| {
        t.contains("closet") && !t.contains("shelf")
    })
    .await;
    assert!(classifier(&api, "shelf").is_none());
    assert_eq!(api.samples("closet"), 5 + n);
    click(&b, "#delete-classifier").await;
    click(&b, "#delete-yes").await;
    wait_text(&b, "#settings-answer", 20, |t| t.contains("Deleted")).await;
    wait_text(&b, "#classifier-list", 10, |t| !t.contains("closet")).await;
    assert!(classifier(&api, "closet").is_none());
    let names: Vec<String> = api.get("/api/ops/classifiers").body["data"]["classifiers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["default"]);
    let problems = b
        .execute("return window.__problems", vec![])
        .await
        .expect("problems");
    assert_eq!(
        problems,
        json!([]),
        "script errors or CSP violations in the page"
    );
    let _ = b.close().await;
}
