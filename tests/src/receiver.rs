//! A webhook receiver on 127.0.0.1 for delivery tests. It records every request and answers by
//! path: `/flaky` fails with 500 the first time and succeeds after, `/gone` is 410, `/throttled`
//! is 429 with `Retry-After: 7`, `/redirect` points at the metadata service, `/slow` answers
//! after 5 s, `/down` is always 503, anything else is 200 `ok`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
struct Log {
    requests: Arc<Mutex<Vec<Request>>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    log: Log,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free loopback port; stops when dropped.
    pub async fn start() -> Self {
        let log = Log::default();
        let app = Router::new()
            .route("/{path}", post(receive))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the receiver: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("receiver address: {e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, log, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(log): State<Log>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hit = {
        let Ok(mut requests) = log.requests.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        requests.push(Request {
            path: path.clone(),
            headers,
            body,
        });
        requests.iter().filter(|r| r.path == path).count()
    };
    match (path.as_str(), hit) {
        ("flaky", 1) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        ("down", _) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        ("gone", _) => (StatusCode::GONE, "endpoint removed").into_response(),
        ("throttled", _) => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response()
        }
        ("redirect", _) => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
        )
            .into_response(),
        ("slow", _) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    }
}
