//! People: signing in with the user pool (moto's Cognito), the token as a credential, and an
//! admin's invitations, role changes and removals, which apply on the next request.

use spotwise_core::domain::Role;

use super::*;

const TEMPORARY: &str = "Temporary-Passw0rd";
const CHOSEN: &str = "Chosen-Passw0rd-2026";

impl Api {
    /// A person of `tenant` who has signed in once (setting their own password): their ID
    /// token and user id.
    async fn person(&self, tenant: &str, email: &str, role: Role) -> (String, String) {
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
        (
            signed.body["id_token"].as_str().unwrap().to_owned(),
            user.id,
        )
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
        json!({"tenant": "t1", "name": "ops@t1.example", "role": "operator", "kind": "user"})
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

    let audit = api.get("/v1/audit", &api.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["user.invite", "user.role", "user.remove"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
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
