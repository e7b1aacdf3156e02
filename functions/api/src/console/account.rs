//! The signed-in person's own sign-in settings: an authenticator app as a second factor, set up
//! by scanning a QR code and confirming one of its codes, or turned off; and an admin turning
//! off someone else's (a lost phone).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use maud::html;
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;
use serde_json::json;

use super::pages::{Notice, Page, apply, signed_in};
use super::view::{self, Me, text};
use super::{Console, Failure, refresh_token, segment};

pub async fn account(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (_, me) = signed_in(&console, &headers).await?;
    let body = html! {
        dl.facts {
            dt { "Email" } dd { (me.name) }
            dt { "Tenant" } dd { (me.tenant) }
            dt { "Role" } dd { (me.role) }
        }
        section aria-labelledby="mfa" {
            h2 #mfa { "Authenticator app" }
            @if me.mfa == Some(true) {
                p { "On: signing in asks for a six-digit code from your authenticator app after your password." }
                form method="post" action="/console/account/mfa/disable" {
                    button.secondary type="submit" { "Turn off" }
                }
            } @else {
                p { "Off: your password alone signs you in. With an authenticator app (any TOTP app), signing in also asks for the six-digit code it shows." }
                form method="post" action="/console/account/mfa" {
                    button type="submit" { "Set up an authenticator app" }
                }
            }
        }
        section aria-labelledby="sessions" {
            h2 #sessions { "Sessions" }
            p { "You stay signed in for up to a day. Signing out ends your sessions in every browser." }
        }
    };
    Ok(view::layout("Your account", &me, None, notice.text(), body).into_response())
}

/// A fresh access token from the session's refresh token: the user pool takes only that for
/// a person's own authenticator.
async fn access_token(console: &Console, headers: &HeaderMap) -> Result<String, Failure> {
    let refreshed = match refresh_token(headers) {
        Some(token) => console.refresh(&token).await,
        None => None,
    };
    refreshed
        .and_then(|signed| signed["access_token"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            Failure::Refused(
                StatusCode::CONFLICT,
                "Setting up an authenticator app needs a session signed in with your password: \
                 sign out, sign in again, and come back here."
                    .into(),
            )
        })
}

pub async fn start_mfa(State(console): State<Console>, headers: HeaderMap) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let access = access_token(&console, &headers).await?;
    let secret = console
        .client(Some(&token))
        .change(
            Method::POST,
            "/v1/me/mfa",
            Some(&json!({"access_token": access})),
            None,
        )
        .await?;
    let setup = Setup {
        secret: text(&secret["secret"]).to_owned(),
        uri: text(&secret["uri"]).to_owned(),
    };
    Ok(setup_page(&me, &setup, StatusCode::OK, None))
}

/// The new app's secret, carried through the confirmation form so that a mistyped code can be
/// tried again on the same page.
#[derive(Debug, Deserialize)]
pub struct Setup {
    secret: String,
    uri: String,
}

#[derive(Debug, Deserialize)]
pub struct Confirmation {
    code: String,
    #[serde(flatten)]
    setup: Setup,
}

/// An `otpauth://` URI is a few hundred bytes; anything longer did not come from the API.
const MAX_SETUP_CHARS: usize = 1024;

fn setup_page(
    me: &Me,
    setup: &Setup,
    status: StatusCode,
    error: Option<&str>,
) -> axum::response::Response {
    let qr = QrCode::new(setup.uri.as_bytes())
        .map(|code| {
            code.render::<svg::Color>()
                .min_dimensions(220, 220)
                .quiet_zone(true)
                .build()
        })
        .ok();
    let grouped: Vec<String> = setup
        .secret
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    let body = html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        ol {
            li { "Scan this code with your authenticator app:" }
        }
        @if let Some(qr) = qr {
            img.qr src=(format!("data:image/svg+xml;base64,{}", STANDARD.encode(qr)))
                alt="QR code of the authenticator app's secret" width="220" height="220";
        }
        p { "Or type this key into the app: " code.secret { (grouped.join(" ")) } }
        form.stack method="post" action="/console/account/mfa/confirm" {
            input type="hidden" name="secret" value=(setup.secret);
            input type="hidden" name="uri" value=(setup.uri);
            label for="code" { "The six-digit code the app shows now" }
            input #code name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required;
            button type="submit" { "Turn on" }
        }
    };
    (
        status,
        view::layout("Set up an authenticator app", me, None, None, body),
    )
        .into_response()
}

pub async fn confirm_mfa(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<Confirmation>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    if form.setup.secret.len() > MAX_SETUP_CHARS || form.setup.uri.len() > MAX_SETUP_CHARS {
        return Err(Failure::Refused(
            StatusCode::BAD_REQUEST,
            "the form was changed".into(),
        ));
    }
    let access = access_token(&console, &headers).await?;
    let answer = console
        .client(Some(&token))
        .send(
            Method::PUT,
            "/v1/me/mfa",
            Some(&json!({"access_token": access, "code": form.code})),
            None,
        )
        .await?;
    if answer.status == StatusCode::BAD_REQUEST {
        let message = answer.message();
        return Ok(setup_page(
            &me,
            &form.setup,
            StatusCode::BAD_REQUEST,
            Some(&message),
        ));
    }
    if !answer.status.is_success() {
        return Err(Failure::Refused(answer.status, answer.message()));
    }
    Ok(super::pages::back_to(
        "/console/account",
        "Your authenticator app is on: signing in now asks for its code.",
    ))
}

pub async fn disable_mfa(State(console): State<Console>, headers: HeaderMap) -> Page {
    let (token, _) = signed_in(&console, &headers).await?;
    apply(
        &console,
        &token,
        Method::DELETE,
        "/v1/me/mfa",
        None,
        "/console/account",
        "Your authenticator app is off: your password alone signs you in.",
    )
    .await
}

pub async fn reset_mfa(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let (token, _) = signed_in(&console, &headers).await?;
    let id = segment(&id)?;
    apply(
        &console,
        &token,
        Method::DELETE,
        &format!("/v1/users/{id}/mfa"),
        None,
        "/console/admin",
        "Their authenticator app is off; they can set up a new one after signing in.",
    )
    .await
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn the_setup_page_shows_the_secret_as_a_qr_code_and_in_groups() {
        let me = Me::from_api(&json!({"name": "a@b.example", "tenant": "t", "role": "viewer"}));
        let page = setup_page(
            &me,
            &Setup {
                secret: "JBSWY3DPEHPK3PXP".into(),
                uri: "otpauth://totp/Spotwise:a@b.example?secret=JBSWY3DPEHPK3PXP&issuer=Spotwise"
                    .into(),
            },
            StatusCode::OK,
            None,
        );
        let html = String::from_utf8(
            page.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(html.contains("JBSW Y3DP EHPK 3PXP"), "{html}");
        let encoded = html
            .split("data:image/svg+xml;base64,")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let svg = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    }
}
