//! People: signing in with the user pool (moto's Cognito), the token as a credential, and an
//! admin's invitations, role changes and removals, which apply on the next request.

use spotwise_core::domain::Role;
use spotwise_testkit::totp;

use super::*;

const TEMPORARY: &str = "Temporary-Passw0rd";
const CHOSEN: &str = "Chosen-Passw0rd-2026";

impl Api {
    /// A person of `tenant` who has signed in once (setting their own password): their ID
    /// token and user id.
    async fn person(&self, tenant: &str, email: &str, role: Role) -> (String, String) {
        let (signed, id) = self.signed_in(tenant, email, role).await;
        (signed["id_token"].as_str().unwrap().to_owned(), id)
    }

    /// A person's first sign-in: the answer with their tokens, and their user id.
    async fn signed_in(&self, tenant: &str, email: &str, role: Role) -> (Value, String) {
        let user = crate::users::add_person(
            &self.state,
            &TenantId::new(tenant).unwrap(),
            email,
            role,
            TEMPORARY,
            "test",
        )
        .await
        .unwrap();
        let first = self
            .send(
                Method::POST,
                "/v1/session",
                None,
                Some(json!({"username": email, "password": TEMPORARY})),
                &[],
            )
            .await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert_eq!(first.body["status"], "new_password_required");
        let signed = self
            .send(
                Method::POST,
                "/v1/session/challenge",
                None,
                Some(json!({"username": email, "session": first.body["session"], "new_password": CHOSEN})),
                &[],
            )
            .await;
        assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
        assert_eq!(signed.body["status"], "signed_in");
        (signed.body, user.id)
    }

    async fn sign_in(&self, email: &str) -> Reply {
        self.send(
            Method::POST,
            "/v1/session",
            None,
            Some(json!({"username": email, "password": CHOSEN})),
            &[],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &Value) -> Reply {
        self.send(
            Method::POST,
            "/v1/session/refresh",
            None,
            Some(json!({"refresh_token": refresh_token})),
            &[],
        )
        .await
    }
}

#[tokio::test]
async fn a_person_signs_in_and_their_token_carries_their_tenant_and_role() {
    let api = api().await;
    let (token, _) = api.person("t1", "ops@t1.example", Role::Operator).await;
    let me = api.get("/v1/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(
        me.body,
        json!({"tenant": "t1", "name": "ops@t1.example", "role": "operator", "kind": "user", "mfa": false})
    );
    // The token works on every route its role allows, and only in its tenant.
    let hook = api
        .post(
            "/v1/webhooks",
            &token,
            webhook("https://hooks.example.com/p"),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    assert_eq!(
        api.get("/v1/keys", &token).await.status,
        StatusCode::FORBIDDEN
    );
    let others = api.get("/v1/webhooks", &api.other_admin).await;
    assert!(others.body["items"].as_array().unwrap().is_empty());

    let wrong = api
        .send(
            Method::POST,
            "/v1/session",
            None,
            Some(json!({"username": "ops@t1.example", "password": "Not-the-passw0rd"})),
            &[],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.body["error"]["message"],
        "wrong user name or password"
    );

    let audit = api.get("/v1/audit?action=user.sign_in", &api.admin).await;
    let sign_ins = audit.body["items"].as_array().unwrap();
    assert_eq!(sign_ins.len(), 1, "{}", audit.body);
    assert_eq!(sign_ins[0]["actor"], "user:ops@t1.example");
    let created = api.get("/v1/audit?action=webhook.create", &api.admin).await;
    assert_eq!(created.body["items"][0]["actor"], "user:ops@t1.example");
}

#[tokio::test]
async fn a_role_change_or_a_removal_applies_to_the_next_request() {
    let api = api().await;
    let (token, id) = api.person("t1", "ops@t1.example", Role::Operator).await;
    let changed = api
        .send(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(&api.admin),
            Some(json!({"role": "viewer"})),
            &[],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(api.get("/v1/me", &token).await.body["role"], "viewer");
    let refused = api
        .post(
            "/v1/webhooks",
            &token,
            webhook("https://hooks.example.com/p"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let removed = api.delete(&format!("/v1/users/{id}"), &api.admin).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/me", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = api
        .send(
            Method::POST,
            "/v1/session",
            None,
            Some(json!({"username": "ops@t1.example", "password": CHOSEN})),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);

    let actions = api.audit_actions().await;
    for action in ["user.invite", "user.role", "user.remove"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn an_admin_cannot_change_their_own_role() {
    let api = api().await;
    let (token, id) = api.person("t1", "boss@t1.example", Role::Admin).await;
    let own = api
        .send(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(&token),
            Some(json!({"role": "viewer"})),
            &[],
        )
        .await;
    assert_eq!(own.status, StatusCode::CONFLICT);
    assert_eq!(api.get("/v1/me", &token).await.body["role"], "admin");
}

#[tokio::test]
async fn invitations_are_for_admins_and_stay_in_their_tenant() {
    let api = api().await;
    let invited = api
        .post(
            "/v1/users",
            &api.admin,
            json!({"email": "New.Person@T1.example", "role": "operator"}),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    assert_eq!(invited.body["email"], "new.person@t1.example");
    assert_eq!(invited.body["tenant_id"], "t1");
    let id = invited.body["id"].as_str().unwrap().to_owned();
    let listed = api.get("/v1/users", &api.admin).await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    assert!(
        api.get("/v1/users", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let foreign = api
        .send(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(&api.other_admin),
            Some(json!({"role": "admin"})),
            &[],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.delete(&format!("/v1/users/{id}"), &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let operator = api.key("operator").await;
    let by_operator = api
        .post(
            "/v1/users",
            &operator,
            json!({"email": "x@t1.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(by_operator.status, StatusCode::FORBIDDEN);
    let again = api
        .post(
            "/v1/users",
            &api.admin,
            json!({"email": "new.person@t1.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    for (body, field) in [
        (json!({"email": "not-an-email", "role": "viewer"}), "email"),
        (
            json!({"email": "r?d9~zab@g37.i.test", "role": "viewer"}),
            "email",
        ),
        (json!({"email": "a@localhost", "role": "viewer"}), "email"),
        (
            json!({"email": format!("{}@t1.example", "a".repeat(250)), "role": "viewer"}),
            "email",
        ),
        (json!({"email": "a@t1.example", "role": "owner"}), ""),
    ] {
        let refused = api.post("/v1/users", &api.admin, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        if !field.is_empty() {
            assert_eq!(refused.body["error"]["field"], field);
        }
    }
}

#[tokio::test]
async fn sign_in_input_is_bounded() {
    let api = api().await;
    for (path, body, field) in [
        (
            "/v1/session",
            json!({"username": "a@b.example", "password": "x".repeat(257)}),
            "password",
        ),
        (
            "/v1/session",
            json!({"username": "nobody", "password": "x"}),
            "username",
        ),
        (
            "/v1/session/challenge",
            json!({"username": "a@b.example", "session": "s", "code": "12ab56"}),
            "code",
        ),
        (
            "/v1/session/challenge",
            json!({"username": "a@b.example", "session": "s"}),
            "new_password",
        ),
        (
            "/v1/session/challenge",
            json!({"username": "a@b.example", "session": "s".repeat(4097), "code": "123456"}),
            "session",
        ),
    ] {
        let refused = api.send(Method::POST, path, None, Some(body), &[]).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert_eq!(refused.body["error"]["field"], field);
    }
    let unknown = api
        .send(
            Method::POST,
            "/v1/session",
            None,
            Some(json!({"username": "nobody@t1.example", "password": "Whatever-1234"})),
            &[],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_person_sets_up_an_authenticator_and_then_signs_in_with_its_codes() {
    let api = api().await;
    let email = "ops@t1.example";
    let (signed, id) = api.signed_in("t1", email, Role::Operator).await;
    let token = signed["id_token"].as_str().unwrap();
    let access = &signed["access_token"];
    assert_eq!(api.get("/v1/me", token).await.body["mfa"], false);

    let (someone_else, _) = api.signed_in("t1", "dev@t1.example", Role::Viewer).await;
    for (credential, access_token, status, field) in [
        (
            token,
            &someone_else["access_token"],
            StatusCode::BAD_REQUEST,
            "access_token",
        ),
        (
            token,
            &signed["id_token"],
            StatusCode::BAD_REQUEST,
            "access_token",
        ),
        (api.admin.as_str(), access, StatusCode::FORBIDDEN, ""),
    ] {
        let refused = api
            .post(
                "/v1/me/mfa",
                credential,
                json!({"access_token": access_token}),
            )
            .await;
        assert_eq!(refused.status, status, "{}", refused.body);
        if !field.is_empty() {
            assert_eq!(refused.body["error"]["field"], field);
        }
    }

    let started = api
        .post("/v1/me/mfa", token, json!({"access_token": access}))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let secret = started.body["secret"].as_str().unwrap();
    assert!(
        started.body["uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("otpauth://totp/Spotwise:{email}?secret={secret}")),
        "{}",
        started.body
    );
    let confirm = |code: String| {
        api.send(
            Method::PUT,
            "/v1/me/mfa",
            Some(token),
            Some(json!({"access_token": access, "code": code})),
            &[],
        )
    };
    let now = OffsetDateTime::now_utc().unix_timestamp().unsigned_abs();
    let stale = totp::code(secret, now - 3600).unwrap();
    let wrong = confirm(stale).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert_eq!(wrong.body["error"]["field"], "code");
    assert_eq!(api.get("/v1/me", token).await.body["mfa"], false);
    let confirmed = confirm(totp::current_code(secret).await.unwrap()).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(confirmed.body["mfa"], true);
    assert_eq!(api.get("/v1/me", token).await.body["mfa"], true);

    // The password alone no longer signs in: the app's code does.
    let asked = api.sign_in(email).await;
    assert_eq!(asked.body["status"], "mfa_required", "{}", asked.body);
    let answer = |code: String| {
        api.send(
            Method::POST,
            "/v1/session/challenge",
            None,
            Some(json!({"username": email, "session": asked.body["session"], "code": code})),
            &[],
        )
    };
    let refused = answer(totp::code(secret, now - 3600).unwrap()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let with_code = answer(totp::current_code(secret).await.unwrap()).await;
    assert_eq!(with_code.body["status"], "signed_in", "{}", with_code.body);

    // A refresh token renews the ID token without the password or the code.
    let refreshed = api.refresh(&with_code.body["refresh_token"]).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(refreshed.body["refresh_token"], Value::Null);
    let renewed = refreshed.body["id_token"].as_str().unwrap();
    assert_eq!(api.get("/v1/me", renewed).await.body["name"], email);

    // A lost phone: an admin turns the app off and the password signs in again.
    let reset = api.delete(&format!("/v1/users/{id}/mfa"), &api.admin).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body["mfa"], false);
    assert_eq!(api.sign_in(email).await.body["status"], "signed_in");
    assert_eq!(
        api.delete(&format!("/v1/users/{id}/mfa"), &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Signing out ends every session's refresh token.
    let out = api
        .send(Method::POST, "/v1/me/sign-out", Some(renewed), None, &[])
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let after = api.refresh(&with_code.body["refresh_token"]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);

    let actions = api.audit_actions().await;
    for action in ["user.mfa_enable", "user.mfa_reset", "user.sign_out"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}
