//! A real browser for the console's tests: Debian's Chromium, headless, driven through
//! chromedriver's W3C WebDriver protocol on a loopback port. Each browser starts with a fresh
//! profile and the flags that keep Chromium off the network; both processes stop on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    profile: PathBuf,
    screenshots: PathBuf,
}

/// Whether this machine has the browser (the setup script installs it).
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`×`height`; screenshots go
    /// to `screenshots`.
    pub async fn start(width: u32, height: u32, screenshots: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER} (scripts/setup.sh installs it)"))?;
        let profile =
            std::env::temp_dir().join(format!("spotwise-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(screenshots)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            bail!("chromedriver did not start on port {port}");
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Finding an element waits up to 5 s for it to appear.
            "timeouts": {"implicit": 5000, "pageLoad": 30000, "script": 30000},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await?
            .json()
            .await?;
        let id = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no WebDriver session: {created}"))?;
        Ok(Self {
            session: format!("{base}/session/{id}"),
            http,
            driver,
            profile,
            screenshots: screenshots.to_owned(),
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!(
                "WebDriver {path}: {error}: {}",
                answer["value"]["message"].as_str().unwrap_or_default()
            );
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await?;
        Ok(())
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .command(reqwest::Method::GET, "/url", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn elements(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
            .collect())
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        self.elements(css)
            .await?
            .into_iter()
            .next()
            .with_context(|| format!("no element matches {css}"))
    }

    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.elements(css).await?.is_empty())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// Clicks `css`, which leads to another page, and waits until that page has loaded.
    pub async fn submit(&self, css: &str) -> anyhow::Result<()> {
        self.execute("window.__spotwiseLeaving = true;", vec![], false)
            .await?;
        self.click(css).await?;
        self.wait_for_next_page().await
    }

    /// Waits until the window shows a new document, fully loaded.
    pub async fn wait_for_next_page(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            let loaded = self
                .execute(
                    "return window.__spotwiseLeaving === undefined && document.readyState === 'complete';",
                    vec![],
                    false,
                )
                .await;
            if matches!(loaded, Ok(Value::Bool(true))) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the next page did not load within 10 s")
    }

    /// Replaces the text of the field `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await?;
        Ok(())
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.element(css).await?;
        Ok(self
            .command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn is_selected(&self, css: &str) -> anyhow::Result<bool> {
        let id = self.element(css).await?;
        Ok(self
            .command(
                reqwest::Method::GET,
                &format!("/element/{id}/selected"),
                None,
            )
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    /// Runs `script` in the page; with `done` as its last argument when `asynchronous`.
    pub async fn execute(
        &self,
        script: &str,
        args: Vec<Value>,
        asynchronous: bool,
    ) -> anyhow::Result<Value> {
        let path = if asynchronous {
            "/execute/async"
        } else {
            "/execute/sync"
        };
        self.command(
            reqwest::Method::POST,
            path,
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Saves a PNG of the window as `<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .context("decoding the screenshot")?;
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Resizes the window (a phone's width, say).
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await?;
        Ok(())
    }

    pub async fn delete_cookie(&self, name: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::DELETE, &format!("/cookie/{name}"), None)
            .await?;
        Ok(())
    }

    pub async fn delete_cookies(&self) -> anyhow::Result<()> {
        self.command(reqwest::Method::DELETE, "/cookie", None)
            .await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium (a plain blocking request: drop cannot await);
        // then chromedriver is stopped.
        if let Some((authority, path)) = self
            .session
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            && let Ok(mut stream) = std::net::TcpStream::connect(authority)
        {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
