//! A minimal W3C WebDriver client: chromedriver driving headless Chromium
//! (Debian's packages, installed by `scripts/browser.sh install`), over
//! HTTP/1.1 and JSON. Only what the console's browser test needs: a
//! session, navigation, elements by CSS selector, clicks, typing, text,
//! scripts, screenshots and the window size.
//!
//! Nothing here skips: a missing browser or driver fails the test, naming
//! the script that installs them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// How long chromedriver may take to answer its first status request.
const DRIVER_STARTUP: Duration = Duration::from_secs(30);
/// How long [`Browser::wait_for`] polls before it fails.
pub const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// W3C's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session through its own chromedriver; dropping it
/// (also when a test fails) ends the session, which closes Chromium, and
/// kills the driver.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

/// `name` on PATH, or where `variable` names it.
fn program(variable: &str, name: &str) -> String {
    let program = std::env::var(variable).unwrap_or_else(|_| name.to_owned());
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        found.status.success() && !path.is_empty(),
        "{program} is not installed: the console's browser test needs Chromium and chromedriver \
         (scripts/browser.sh install, which `make test` runs; or name them with \
         PARTLOG_CHROMIUM and PARTLOG_CHROMEDRIVER)"
    );
    path
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// in a `width` × `height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = program("PARTLOG_CHROMIUM", "chromium");
        let chromedriver = program("PARTLOG_CHROMEDRIVER", "chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {chromedriver}: {e}"));
        let mut browser = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
        };
        let deadline = Instant::now() + DRIVER_STARTUP;
        loop {
            if let Ok(status) = browser.request(Method::GET, "/status", None).await {
                if status["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{chromedriver} did not get ready within {DRIVER_STARTUP:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let session = browser
            .request(Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}"));
        browser.session = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        browser
    }

    /// One request to chromedriver; its JSON answer, or the error it
    /// reported.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect to chromedriver: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("chromedriver handshake: {e}"))?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &self.addr)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let ok = response.status().is_success();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{method} {path} answered no JSON ({e})"))?;
        match ok {
            true => Ok(answer),
            false => Err(format!("{method} {path}: {}", answer["value"])),
        }
    }

    /// A command of the session; its answer's `value`, or the error.
    async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let mut answer = self.request(method, &path, body).await?;
        Ok(answer["value"].take())
    }

    /// A command of the session; its answer's `value`.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The element `css` selects now, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .command(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    /// The element `css` selects, once there is one.
    pub async fn element(&self, css: &str) -> String {
        self.wait_for(&format!("an element {css}"), || async {
            self.find(css).await
        })
        .await
    }

    /// Clicks the element `css` selects; again on the new element when
    /// the page replaced it in between (pages refresh their tables).
    pub async fn click(&self, css: &str) {
        self.wait_for(&format!("a clickable {css}"), || async {
            let element = self.find(css).await?;
            let path = format!("/element/{element}/click");
            match self.try_command(Method::POST, &path, Some(json!({}))).await {
                Ok(_) => Some(()),
                Err(e) if e.contains("stale element") => None,
                Err(e) => panic!("WebDriver: {e}"),
            }
        })
        .await
    }

    /// Clears the input `css` selects and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(
            Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The rendered text of the element `css` selects now (in one script,
    /// so that a page replacing the element cannot come between); `None`
    /// without one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let text = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
                json!([css]),
            )
            .await;
        text.as_str().map(str::to_owned)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The window as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let png = self.command(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 screenshot"))
            .expect("base64")
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Polls `check` until it gives a value, for [`WAIT`] at most; fails
    /// naming `what` and showing the page's text.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.text("body").await.unwrap_or_default();
                panic!("the page did not show {what} within {WAIT:?}; it shows:\n{page}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Blocking, as a drop must be: killing chromedriver alone would
        // leave its Chromium running.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n",
                self.session, self.addr
            );
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) {
                let _ = stream.set_read_timeout(Some(DRIVER_STARTUP));
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
