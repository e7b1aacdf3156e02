//! The web console: pages rendered by the api function from the public API's own answers.
//!
//! Every page calls the `/v1` routes in-process with the signed-in person's ID token, so the
//! console sees exactly what the API lets that person see and do, and a viewer who forces an
//! approval gets the API's 403. The token lives in an HttpOnly, SameSite=Strict cookie that
//! scripts cannot read and other sites cannot send; form posts from another origin are refused
//! as well. Pages work without JavaScript; a few lines of it paint the hibernation grid by
//! dragging and check cron expressions as they are typed.

mod account;
mod costs;
mod pages;
mod public;
pub mod reference;
mod rightsizing;
mod schedules;
mod settings;
mod view;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use view::text;

const SESSION_COOKIE: &str = "spotwise_session";
/// Renews the session cookie's ID token when it expires, for as long as the refresh token
/// lives (a day); sent to the console's pages only.
const REFRESH_COOKIE: &str = "spotwise_refresh";
const REFRESH_COOKIE_PATH: &str = "/console";
/// The session cookie ends this long before its ID token, so the browser stops sending it
/// (and the console renews it) before the API would refuse it.
const SESSION_MARGIN_SECONDS: i64 = 60;
/// The user pool client's `RefreshTokenValidity` (template.yaml).
const REFRESH_LIFETIME_SECONDS: i64 = 24 * 60 * 60;
/// API answers the console reads are small JSON documents; a page never needs more.
const MAX_API_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// What the console's handlers share: the API they are a client of.
#[derive(Clone)]
pub struct Console {
    api: Router,
    /// Cookies are `Secure` except on the local stack, which serves plain HTTP on loopback.
    secure_cookies: bool,
}

pub fn router(api: Router, secure_cookies: bool) -> Router {
    let console = Console {
        api,
        secure_cookies,
    };
    let mut router = Router::new();
    if !secure_cookies {
        // The local stack's one-click sign-in (`scripts/run-local.sh`); never in AWS.
        router = router.route("/console/session", get(pages::dev_session));
    }
    router
        .route("/console", get(pages::overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/sign-in",
            get(pages::sign_in_form).post(pages::sign_in),
        )
        .route("/console/sign-in/challenge", post(pages::answer_challenge))
        .route("/console/sign-out", post(pages::sign_out))
        .route("/console/clusters/{id}", get(pages::cluster))
        .route(
            "/console/clusters/{id}/recommendations/{revision}/approve",
            post(pages::approve),
        )
        .route(
            "/console/clusters/{id}/recommendations/{revision}/cancel",
            post(pages::cancel_rollout),
        )
        .route(
            "/console/clusters/{id}/hibernation",
            get(pages::hibernation).post(pages::save_hibernation),
        )
        .route(
            "/console/notifications",
            get(pages::notifications).post(pages::add_webhook),
        )
        .route("/console/webhooks/{id}", get(pages::webhook))
        .route("/console/webhooks/{id}/test", post(pages::test_webhook))
        .route("/console/admin", get(pages::admin).post(pages::invite))
        .route("/console/admin/users/{id}", post(pages::change_role))
        .route("/console/clusters/{id}/costs", get(costs::costs))
        .route("/console/clusters/{id}/costs.csv", get(costs::export))
        .route(
            "/console/schedules",
            get(schedules::schedules).post(schedules::add),
        )
        .route("/console/schedules/{id}/{action}", post(schedules::act))
        .route("/console/cron-preview", get(schedules::cron_preview))
        .route("/console/admin/audit.csv", get(pages::export_audit))
        .route("/console/admin/status-page", post(pages::status_page))
        .route(
            "/console/clusters/{id}/policy",
            get(settings::policy).post(settings::save_policy),
        )
        .route(
            "/console/clusters/{id}/node-templates",
            get(settings::templates).post(settings::add_template),
        )
        .route(
            "/console/clusters/{id}/node-templates/{template}/delete",
            post(settings::delete_template),
        )
        .route("/console/suppression", get(settings::suppression))
        .route("/console/silences", post(settings::add_silence))
        .route("/console/silences/{id}/delete", post(settings::end_silence))
        .route("/console/maintenance-windows", post(settings::add_window))
        .route(
            "/console/maintenance-windows/{id}/delete",
            post(settings::delete_window),
        )
        .route("/console/keys", post(settings::create_key))
        .route("/console/keys/{id}/delete", post(settings::revoke_key))
        .route("/console/users/{id}/delete", post(settings::remove_user))
        .route(
            "/console/accounts",
            get(settings::accounts).post(settings::link),
        )
        .route(
            "/console/accounts/external-id",
            post(settings::issue_external_id),
        )
        .route(
            "/console/accounts/{id}/{action}",
            post(settings::account_action),
        )
        .route("/console/templates/{name}", get(settings::template))
        .route("/status/{id}", get(public::page))
        .route("/status/{id}/badge.svg", get(public::badge))
        .route("/console/assets/console.css", get(view::stylesheet))
        .route("/console/assets/console.js", get(view::script))
        .route("/console/account", get(account::account))
        .route(
            "/console/clusters/{id}/rightsizing",
            get(rightsizing::page).post(rightsizing::apply_recommendation),
        )
        .route("/console/account/mfa", post(account::start_mfa))
        .route("/console/account/mfa/confirm", post(account::confirm_mfa))
        .route("/console/account/mfa/disable", post(account::disable_mfa))
        .route(
            "/console/admin/users/{id}/mfa-reset",
            post(account::reset_mfa),
        )
        .layer(middleware::from_fn_with_state(console.clone(), renew))
        .layer(middleware::from_fn(guard))
        .with_state(console)
}

/// Refuses form posts from other sites (the cookie is SameSite=Strict as well), and marks
/// every page as not to be framed, cached or sniffed.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return view::error_page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site, so it was not accepted.",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// Signed-in pages whose session cookie has expired get a new ID token from the refresh
/// cookie before they run; a refresh the API refuses (signed out, removed) drops the cookie,
/// and the page then asks to sign in.
async fn renew(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let Some(refresh_token) = cookie(headers, REFRESH_COOKIE).filter(|_| {
        let path = request.uri().path();
        session_token(headers).is_none()
            && path.starts_with("/console")
            && !path.starts_with("/console/assets/")
    }) else {
        return next.run(request).await;
    };
    let mut set_cookies = Vec::new();
    match console.refresh(&refresh_token).await {
        Some(signed) => {
            let token = text(&signed["id_token"]).to_owned();
            let cookies = request.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}")) {
                cookies.append(header::COOKIE, value);
            }
            set_cookies.extend(console.session_cookies(&signed));
        }
        None => set_cookies.extend(clearing_cookies()),
    }
    let mut response = next.run(request).await;
    for value in set_cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A form field's first value (forms with repeated names are read as pairs in order).
fn form_value<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A cookie's value; empty counts as absent.
fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The signed-in person's ID token, from the session cookie.
fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

fn refresh_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, REFRESH_COOKIE)
}

/// Cookies that end the session and its renewal. Clearing needs no `Secure`, so this is the
/// same on every stack.
fn clearing_cookies() -> [HeaderValue; 2] {
    [
        HeaderValue::from_static("spotwise_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        HeaderValue::from_static(
            "spotwise_refresh=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    ]
}

impl Console {
    fn cookie(&self, name: &str, value: &str, path: &str, max_age: i64) -> Option<HeaderValue> {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// The cookies of a signed-in answer from the API (sign-in or refresh): the ID token, and
    /// at sign-in the refresh token.
    fn session_cookies(&self, signed: &Value) -> Vec<HeaderValue> {
        let lifetime = signed["expires_in"].as_i64().unwrap_or(3600);
        let mut cookies: Vec<HeaderValue> = self
            .cookie(
                SESSION_COOKIE,
                text(&signed["id_token"]),
                "/",
                (lifetime - SESSION_MARGIN_SECONDS).max(0),
            )
            .into_iter()
            .collect();
        if let Some(refresh) = signed["refresh_token"].as_str() {
            cookies.extend(self.cookie(
                REFRESH_COOKIE,
                refresh,
                REFRESH_COOKIE_PATH,
                REFRESH_LIFETIME_SECONDS,
            ));
        }
        cookies
    }

    /// The API's answer to a refresh, when it gave tokens.
    async fn refresh(&self, refresh_token: &str) -> Option<Value> {
        let body = serde_json::json!({ "refresh_token": refresh_token });
        let answer = self
            .client(None)
            .send(Method::POST, "/v1/session/refresh", Some(&body), None)
            .await
            .ok()?;
        (answer.status.is_success() && answer.body["id_token"].is_string()).then_some(answer.body)
    }

    /// The API as the person with `token` (or nobody, for signing in).
    fn client<'a>(&'a self, token: Option<&'a str>) -> Client<'a> {
        Client {
            api: &self.api,
            token,
        }
    }
}

/// The public API, called in-process.
struct Client<'a> {
    api: &'a Router,
    token: Option<&'a str>,
}

/// An API answer.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn parse(status: StatusCode, bytes: &[u8]) -> Self {
        Self {
            status,
            body: serde_json::from_slice(bytes).unwrap_or(Value::Null),
        }
    }

    /// The API's own message for a refusal.
    fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the API answered {}", self.status))
    }
}

/// Why a page cannot be shown: the person must sign in (again), or the API refused.
enum Failure {
    SignIn,
    Refused(StatusCode, String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::SignIn => {
                let mut response = Redirect::to("/console/sign-in").into_response();
                for value in clearing_cookies() {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
                response
            }
            Failure::Refused(status, message) => view::error_page(status, &message),
        }
    }
}

impl Client<'_> {
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, axum::body::Bytes), Failure> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .map_err(|e| Failure::Refused(StatusCode::BAD_REQUEST, e.to_string()))?;
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .map_err(|never| match never {})?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            return Err(Failure::SignIn);
        }
        let headers = response.headers().clone();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_API_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::Refused(StatusCode::BAD_GATEWAY, e.to_string()))?
            .to_bytes();
        Ok((status, headers, bytes))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, Failure> {
        let (status, _, bytes) = self.exchange(method, path, body, if_match).await?;
        Ok(Answer::parse(status, &bytes))
    }

    /// A file the API serves (a CSV export), passed on as a download.
    async fn download(&self, path: &str) -> Result<Response, Failure> {
        let (status, headers, bytes) = self.exchange(Method::GET, path, None, None).await?;
        if !status.is_success() {
            return Err(Failure::Refused(
                status,
                Answer::parse(status, &bytes).message(),
            ));
        }
        let mut response = bytes.into_response();
        for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
            if let Some(value) = headers.get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        Ok(response)
    }

    /// A read the page cannot do without, with its `ETag` for the change that follows it.
    async fn get_tagged(&self, path: &str) -> Result<(Value, Option<String>), Failure> {
        let (status, headers, bytes) = self.exchange(Method::GET, path, None, None).await?;
        let answer = Answer::parse(status, &bytes);
        if !status.is_success() {
            return Err(Failure::Refused(status, answer.message()));
        }
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((answer.body, etag))
    }

    /// A read the page cannot do without.
    async fn get(&self, path: impl AsRef<str>) -> Result<Value, Failure> {
        self.change(Method::GET, path.as_ref(), None, None).await
    }

    /// A read the page shows without when it is refused or missing.
    async fn get_or_null(&self, path: impl AsRef<str>) -> Result<Value, Failure> {
        let answer = self.send(Method::GET, path.as_ref(), None, None).await?;
        Ok(if answer.status.is_success() {
            answer.body
        } else {
            Value::Null
        })
    }

    /// A change: refused changes are the API's answer, shown to the person.
    async fn change(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value, Failure> {
        let answer = self.send(method, path, body, if_match).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(Failure::Refused(answer.status, answer.message()))
        }
    }
}

/// A path segment from a page's URL, checked before it goes into an API path.
fn segment(value: &str) -> Result<&str, Failure> {
    if !value.is_empty()
        && value.len() <= 256
        && !value.bytes().all(|b| b == b'.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(value)
    } else {
        Err(Failure::Refused(
            StatusCode::NOT_FOUND,
            "no such page".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_session_token_is_read_from_among_other_cookies() {
        let map = headers(&[("cookie", "a=1; spotwise_session=tok.en.x; b=2")]);
        assert_eq!(session_token(&map).as_deref(), Some("tok.en.x"));
        assert_eq!(
            session_token(&headers(&[("cookie", "spotwise_session=")])),
            None
        );
        assert_eq!(session_token(&HeaderMap::new()), None);
    }

    #[test]
    fn posts_from_another_origin_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
    }

    #[test]
    fn only_plain_segments_reach_an_api_path() {
        assert!(segment("111122223333.us-east-1.prod").is_ok());
        assert!(segment("../keys").is_err());
        assert!(segment("..").is_err());
        assert!(segment("a/b").is_err());
        assert!(segment("a?x=1").is_err());
        assert!(segment("").is_err());
    }
}
