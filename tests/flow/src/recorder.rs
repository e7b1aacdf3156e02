//! A recording proxy in front of the local AWS endpoint: every SDK request of the functions goes
//! through it and is counted by phase, service and operation, with its bytes and, for DynamoDB,
//! the read and write request units the request costs by DynamoDB's item-size rules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

/// What one kind of request cost in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub count: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub read_units: f64,
    pub write_units: f64,
    /// For a DynamoDB Scan: the size of the items it returned, by DynamoDB's rules.
    pub item_bytes: f64,
}

/// What one phase of the day did besides its AWS requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Shared by every cluster (fan-outs, the scraper, scheduler ticks): divided over the fleet.
    pub fixed: bool,
    /// The function that runs the phase, as template.yaml names it.
    pub function: String,
    pub invocations: u64,
    pub lambda_ms: f64,
    /// Of `lambda_ms`, the time the phase's AWS requests took against the local emulator, which
    /// is no measure of AWS's latency; the cost model replaces it.
    pub aws_ms: f64,
    /// Requests through API Gateway.
    pub api_requests: u64,
    pub log_bytes: u64,
    pub calls: BTreeMap<String, Usage>,
}

#[derive(Default)]
struct Book {
    current: String,
    phases: BTreeMap<String, Phase>,
}

pub struct Recorder {
    upstream: String,
    http: reqwest::Client,
    book: Mutex<Book>,
}

impl Recorder {
    pub fn new(upstream: &str) -> Arc<Self> {
        Arc::new(Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            book: Mutex::default(),
        })
    }

    /// Later requests, invocations and logs count to `name`.
    pub fn enter(&self, name: &str, function: &str, fixed: bool) {
        if let Ok(mut book) = self.book.lock() {
            name.clone_into(&mut book.current);
            let phase = book.phases.entry(name.to_owned()).or_default();
            phase.fixed = fixed;
            function.clone_into(&mut phase.function);
        }
    }

    /// One invocation of the phase's function that took `elapsed`, behind `api_requests`
    /// API Gateway requests.
    pub fn invoked(&self, elapsed: std::time::Duration, api_requests: u64) {
        self.with_phase(|phase| {
            phase.invocations += 1;
            phase.lambda_ms += elapsed.as_secs_f64() * 1000.0;
            phase.api_requests += api_requests;
        });
    }

    /// Runs `work` as one invocation of the phase's function, without API Gateway requests.
    pub async fn invocation<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = work.await;
        self.invoked(started.elapsed(), 0);
        out
    }

    pub fn logged(&self, bytes: usize) {
        self.with_phase(|phase| phase.log_bytes += bytes as u64);
    }

    pub fn phases(&self) -> BTreeMap<String, Phase> {
        self.book
            .lock()
            .map(|book| book.phases.clone())
            .unwrap_or_default()
    }

    fn with_phase(&self, f: impl FnOnce(&mut Phase)) {
        if let Ok(mut book) = self.book.lock() {
            let current = book.current.clone();
            f(book.phases.entry(current).or_default());
        }
    }

    /// Serves the proxy on a free loopback port; returns its URL.
    pub async fn serve(self: &Arc<Self>) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(self));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(url)
    }
}

async fn forward(
    State(recorder): State<Arc<Recorder>>,
    request: axum::extract::Request,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 512 * 1024 * 1024).await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let service = service(&parts.headers, target);
    let operation = operation(&service, &parts.method, &parts.headers, target, &body);
    let mut upstream = recorder.http.request(
        parts.method.clone(),
        format!("{}{target}", recorder.upstream),
    );
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let started = std::time::Instant::now();
    let Ok(answer) = upstream.body(body.clone()).send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers = answer.headers().clone();
    let Ok(answer_body) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let upstream_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (read_units, write_units, item_bytes) = if service == "dynamodb" && code.is_success() {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let response: Value = serde_json::from_slice(&answer_body).unwrap_or(Value::Null);
        let (read, write) = dynamodb_units(&operation, &request, &response);
        let items: f64 = response["Items"]
            .as_array()
            .map_or(0.0, |items| items.iter().map(item_size).sum());
        (read, write, items)
    } else {
        (0.0, 0.0, 0.0)
    };
    recorder.with_phase(|phase| {
        phase.aws_ms += upstream_ms;
        let usage = phase
            .calls
            .entry(format!("{service}:{operation}"))
            .or_default();
        usage.count += 1;
        usage.request_bytes += body.len() as u64;
        usage.response_bytes += answer_body.len() as u64;
        usage.read_units += read_units;
        usage.write_units += write_units;
        usage.item_bytes += item_bytes;
    });
    let mut response = Response::builder().status(code);
    for (name, value) in &headers {
        if name != header::TRANSFER_ENCODING
            && name != header::CONTENT_LENGTH
            && name != header::CONNECTION
        {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(answer_body))
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

/// The service of a SigV4-signed request, from its credential scope (header or presigned query).
fn service(headers: &HeaderMap, target: &str) -> String {
    let scope = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .map(str::to_owned)
        .or_else(|| {
            target
                .split("X-Amz-Credential=")
                .nth(1)
                .map(|v| v.split('&').next().unwrap_or_default().replace("%2F", "/"))
        })
        .unwrap_or_default();
    scope.split('/').nth(3).unwrap_or("unknown").to_owned()
}

fn operation(
    service: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    target: &str,
    body: &[u8],
) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    let form = std::str::from_utf8(body).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    for text in [form, query] {
        if let Some(action) = text
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action="))
        {
            return action.to_owned();
        }
    }
    let path = target.split('?').next().unwrap_or_default();
    let segments = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    match (service, method.as_str(), segments > 1) {
        ("s3", "PUT", true) => "PutObject".into(),
        ("s3", "GET", true) => "GetObject".into(),
        ("s3", "HEAD", true) => "HeadObject".into(),
        ("s3", "DELETE", true) => "DeleteObject".into(),
        ("s3", m, false) => format!("{m} bucket"),
        (_, m, _) => format!(
            "{m} /{}",
            path.trim_matches('/').split('/').next().unwrap_or_default()
        ),
    }
}

/// DynamoDB's size of an item in its JSON wire form: attribute names plus values.
fn item_size(item: &Value) -> f64 {
    item.as_object().map_or(0.0, |attrs| {
        attrs
            .iter()
            .map(|(name, value)| name.len() as f64 + value_size(value))
            .sum()
    })
}

fn value_size(value: &Value) -> f64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0.0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(s)) => s.len() as f64,
        ("N", Value::String(n)) => (n.trim_start_matches('-').len() as f64 / 2.0).ceil() + 1.0,
        ("B", Value::String(b)) => (b.len() as f64 * 3.0 / 4.0).floor(),
        ("BOOL" | "NULL", _) => 1.0,
        ("M", map) => 3.0 + item_size(map),
        ("L", Value::Array(list)) => 3.0 + list.iter().map(|v| 1.0 + value_size(v)).sum::<f64>(),
        ("SS" | "NS" | "BS", Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map_or(0.0, |s| s.len() as f64))
            .sum(),
        _ => 0.0,
    }
}

fn write_units(item: &Value) -> f64 {
    let units = (item_size(item) / 1024.0).ceil().max(1.0);
    // Every item with GSI1 keys is written to the index too (its projection is ALL).
    if item.get("gsi1pk").is_some() {
        units * 2.0
    } else {
        units
    }
}

fn read_units(bytes: f64, consistent: bool) -> f64 {
    let units = (bytes / 4096.0).ceil().max(1.0);
    if consistent { units } else { units / 2.0 }
}

fn dynamodb_units(operation: &str, request: &Value, response: &Value) -> (f64, f64) {
    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
    match operation {
        "PutItem" => (0.0, write_units(&request["Item"])),
        "UpdateItem" => {
            // The item after the update is not sent; the larger of what it was and what the
            // update sets stands in for it.
            let set = item_size(&request["Key"])
                + request["ExpressionAttributeValues"]
                    .as_object()
                    .map_or(0.0, |v| v.values().map(value_size).sum());
            let old = item_size(&response["Attributes"]);
            (0.0, (set.max(old) / 1024.0).ceil().max(1.0))
        }
        "DeleteItem" => (0.0, 1.0),
        "GetItem" => (read_units(item_size(&response["Item"]), consistent), 0.0),
        "Query" | "Scan" => {
            let bytes: f64 = response["Items"]
                .as_array()
                .map_or(0.0, |items| items.iter().map(item_size).sum());
            let index = request.get("IndexName").is_some();
            (read_units(bytes, consistent && !index), 0.0)
        }
        "BatchWriteItem" => {
            let writes: f64 = request["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|tables| tables.values())
                .filter_map(Value::as_array)
                .flatten()
                .map(|w| match w.get("PutRequest") {
                    Some(put) => write_units(&put["Item"]),
                    None => 1.0,
                })
                .sum();
            (0.0, writes)
        }
        "TransactWriteItems" => {
            let writes: f64 = request["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| match w.get("Put") {
                    Some(put) => 2.0 * write_units(&put["Item"]),
                    None => 2.0,
                })
                .sum();
            (0.0, writes)
        }
        "BatchGetItem" => {
            let bytes: f64 = response["Responses"]
                .as_object()
                .into_iter()
                .flat_map(|tables| tables.values())
                .filter_map(Value::as_array)
                .flatten()
                .map(|item| (item_size(item) / 4096.0).ceil().max(1.0) * 4096.0)
                .sum();
            (read_units(bytes, false), 0.0)
        }
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_sizes_follow_dynamodb_rules() {
        let item = json!({"pk": {"S": "C#t1#c1"}, "n": {"N": "12345"}, "ok": {"BOOL": true}});
        // 2 + 7, 1 + (3 + 1), 2 + 1
        assert_eq!(item_size(&item), 17.0);
        assert_eq!(write_units(&item), 1.0);
        let indexed =
            json!({"pk": {"S": "x"}, "gsi1pk": {"S": "y"}, "big": {"S": "a".repeat(2000)}});
        assert_eq!(
            write_units(&indexed),
            4.0,
            "2 KB to the table and to the index"
        );
        assert_eq!(read_units(5000.0, true), 2.0);
        assert_eq!(read_units(5000.0, false), 1.0);
    }

    #[test]
    fn operations_are_named_for_every_protocol() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", "DynamoDB_20120810.PutItem".parse().unwrap());
        assert_eq!(
            operation("dynamodb", &axum::http::Method::POST, &headers, "/", b"{}"),
            "PutItem"
        );
        let plain = HeaderMap::new();
        assert_eq!(
            operation(
                "sts",
                &axum::http::Method::POST,
                &plain,
                "/",
                b"Action=AssumeRole&Version=2011-06-15"
            ),
            "AssumeRole"
        );
        assert_eq!(
            operation(
                "s3",
                &axum::http::Method::PUT,
                &plain,
                "/bucket/tenants/t1/x.json.gz?X-Amz-Credential=a",
                b""
            ),
            "PutObject"
        );
        assert_eq!(
            service(
                &plain,
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=local%2F20261203%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=1"
            ),
            "s3"
        );
    }
}
