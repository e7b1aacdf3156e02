//! People: signing in with the user pool, who the caller is, and an admin's users and roles.
//! Sign-ins, invitations, role changes and removals are audited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_core::TenantId;
use spotwise_core::domain::{Principal, Role, User};
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::{Caller, Credential};
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::identity::{ChallengeAnswer, DirectoryError, SignInStep, TokenError, Tokens};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::resource_id;

const MAX_EMAIL: usize = 254;
const MAX_PASSWORD: usize = 256;
const MAX_SESSION: usize = 4096;
const MAX_ACCESS_TOKEN: usize = 8192;

impl From<DirectoryError> for ApiError {
    fn from(err: DirectoryError) -> Self {
        match err {
            DirectoryError::NotAuthorized => ApiError::unauthorized(err.to_string()),
            DirectoryError::InvalidPassword(message) => ApiError::field("new_password", message),
            DirectoryError::WrongCode => ApiError::field("code", err.to_string()),
            DirectoryError::InvalidParameter(message) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the user pool refused the request: {message}"),
            ),
            DirectoryError::AlreadyExists => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", err.to_string())
            }
            DirectoryError::Throttled => ApiError::rate_limited(5),
            DirectoryError::Unavailable(_) => {
                tracing::error!(error = %err, "user pool unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the user pool is unavailable; retry shortly",
                )
            }
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::KeysUnavailable(_) => {
                tracing::error!(error = %err, "user pool keys unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the user pool's signing keys are unavailable; retry shortly",
                )
            }
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}

fn email(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim().to_ascii_lowercase();
    // Conservative: what every mail system and the user pool accept, nothing exotic.
    let shaped = value.len() <= MAX_EMAIL
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
                && domain.contains('.')
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        });
    if shaped {
        Ok(value)
    } else {
        Err(ApiError::field(
            field,
            format!("must be an email address of at most {MAX_EMAIL} characters"),
        ))
    }
}

fn bounded<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(value)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInInput {
    /// The user's email.
    #[schema(format = Email, max_length = 254)]
    pub username: String,
    #[schema(min_length = 1, max_length = 256)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeInput {
    #[schema(format = Email, max_length = 254)]
    pub username: String,
    /// The `session` of the step that asked.
    #[schema(min_length = 1, max_length = 4096)]
    pub session: String,
    /// For `new_password_required`: the user's own password from now on.
    #[schema(min_length = 1, max_length = 256)]
    pub new_password: Option<String>,
    /// For `mfa_required`: the authenticator app's six digits.
    #[schema(max_length = 6)]
    pub code: Option<String>,
}

/// Where a sign-in stands: `signed_in` with tokens, or a step still to answer at
/// `/v1/session/challenge` with `session`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInResult {
    /// `signed_in`, `new_password_required` or `mfa_required`.
    pub status: &'static str,
    /// What the API takes: send it as `Authorization: Bearer`.
    pub id_token: Option<String>,
    /// What the user pool takes for the user's own settings (`/v1/me/mfa`).
    pub access_token: Option<String>,
    /// At sign-in: renews both tokens at `/v1/session/refresh` until the person signs out
    /// (a day at most, `RefreshTokenValidity` in template.yaml).
    pub refresh_token: Option<String>,
    /// Seconds the ID and access tokens are valid for.
    pub expires_in: Option<i32>,
    pub session: Option<String>,
}

impl SignInResult {
    fn signed_in(tokens: Tokens) -> Self {
        Self {
            status: "signed_in",
            id_token: Some(tokens.id_token),
            access_token: Some(tokens.access_token),
            refresh_token: tokens.refresh_token,
            expires_in: Some(tokens.expires_in),
            session: None,
        }
    }

    fn challenge(status: &'static str, session: String) -> Self {
        Self {
            status,
            id_token: None,
            access_token: None,
            refresh_token: None,
            expires_in: None,
            session: Some(session),
        }
    }
}

/// The member the new ID token names; removed people get no tokens.
async fn token_holder(state: &AppState, tokens: &Tokens) -> Result<User, ApiError> {
    let person = state
        .identity
        .verifier
        .verify(&tokens.id_token, OffsetDateTime::now_utc())
        .await?;
    current_user(state, &person.sub, &person.tenant).await
}

async fn finish(state: &AppState, step: SignInStep) -> Result<SignInResult, ApiError> {
    Ok(match step {
        SignInStep::Signed(tokens) => {
            let user = token_holder(state, &tokens).await?;
            spotwise_store::audit::write(
                &state.store,
                &user.tenant_id,
                &user_actor(&user),
                spotwise_store::audit::Change {
                    action: "user.sign_in",
                    target: format!("user/{}", user.id),
                    before: None,
                    after: None,
                },
                OffsetDateTime::now_utc(),
            )
            .await?;
            SignInResult::signed_in(tokens)
        }
        SignInStep::NewPasswordRequired { session } => {
            SignInResult::challenge("new_password_required", session)
        }
        SignInStep::MfaRequired { session } => SignInResult::challenge("mfa_required", session),
    })
}

/// Signs a person in with their email and password (no credential needed).
#[utoipa::path(post, path = "/v1/session", tag = "users", request_body = SignInInput,
    responses((status = 200, body = SignInResult), (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)))]
pub async fn sign_in(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<SignInInput>,
) -> Result<Json<SignInResult>, ApiError> {
    let username = email("username", &input.username)?;
    let password = bounded("password", &input.password, MAX_PASSWORD)?;
    crate::auth::within_rate(&state, &format!("sign-in:{username}"))?;
    let step = state
        .identity
        .directory
        .sign_in(&username, password)
        .await?;
    Ok(Json(finish(&state, step).await?))
}

/// Answers the step a sign-in stopped at: a new password, or an MFA code.
#[utoipa::path(post, path = "/v1/session/challenge", tag = "users", request_body = ChallengeInput,
    responses((status = 200, body = SignInResult), (status = 401, body = ErrorResponse)))]
pub async fn answer_challenge(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<ChallengeInput>,
) -> Result<Json<SignInResult>, ApiError> {
    let username = email("username", &input.username)?;
    let session = bounded("session", &input.session, MAX_SESSION)?;
    crate::auth::within_rate(&state, &format!("sign-in:{username}"))?;
    let answer = match (&input.new_password, &input.code) {
        (Some(password), None) => {
            ChallengeAnswer::NewPassword(bounded("new_password", password, MAX_PASSWORD)?)
        }
        (None, Some(code)) => ChallengeAnswer::MfaCode(six_digits(code)?),
        _ => {
            return Err(ApiError::field(
                "new_password",
                "give exactly one of new_password and code",
            ));
        }
    };
    let step = state
        .identity
        .directory
        .answer(&username, session, answer)
        .await?;
    Ok(Json(finish(&state, step).await?))
}

fn six_digits(code: &str) -> Result<&str, ApiError> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(ApiError::field("code", "must be six digits"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshInput {
    /// The `refresh_token` of a sign-in.
    #[schema(min_length = 1, max_length = 4096)]
    pub refresh_token: String,
}

/// New ID and access tokens for a refresh token, for as long as the person is a member and has
/// not signed out.
#[utoipa::path(post, path = "/v1/session/refresh", tag = "users", request_body = RefreshInput,
    responses((status = 200, body = SignInResult), (status = 401, body = ErrorResponse)))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<RefreshInput>,
) -> Result<Json<SignInResult>, ApiError> {
    let token = bounded("refresh_token", &input.refresh_token, MAX_SESSION)?;
    let tokens = state.identity.directory.refresh(token).await?;
    token_holder(&state, &tokens).await?;
    Ok(Json(SignInResult::signed_in(tokens)))
}

/// Signs the caller out in every browser: their refresh and access tokens stop working at once,
/// ID tokens already issued within the hour.
#[utoipa::path(post, path = "/v1/me/sign-out", tag = "users",
    responses((status = 204), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn sign_out(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let user = caller.person()?;
    state.identity.directory.sign_out(&user.email).await?;
    spotwise_store::audit::write(
        &state.store,
        &caller.tenant,
        &caller.actor(),
        spotwise_store::audit::Change {
            action: "user.sign_out",
            target: format!("user/{}", user.id),
            before: None,
            after: None,
        },
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorStart {
    /// The caller's own `access_token` from signing in or refreshing.
    #[schema(min_length = 1, max_length = 8192)]
    pub access_token: String,
}

/// A new authenticator app's secret; nothing changes until a code from it is confirmed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthenticatorSecret {
    /// Base32, for typing into the app.
    pub secret: String,
    /// `otpauth://` URI, for the app to scan as a QR code.
    pub uri: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorConfirm {
    #[schema(min_length = 1, max_length = 8192)]
    pub access_token: String,
    /// Six digits from the app.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// The access token, checked to be the caller's own, and the caller.
async fn own_access_token<'a, 'c>(
    state: &AppState,
    caller: &'c Caller,
    token: &'a str,
) -> Result<(&'a str, &'c User), ApiError> {
    let token = bounded("access_token", token, MAX_ACCESS_TOKEN)?;
    let user = caller.person()?;
    let sub = state
        .identity
        .verifier
        .verify_access(token, OffsetDateTime::now_utc())
        .await
        .map_err(|e| ApiError::field("access_token", e.to_string()))?;
    if sub != user.id {
        return Err(ApiError::field(
            "access_token",
            "the access token is another person's",
        ));
    }
    Ok((token, user))
}

/// Starts setting up an authenticator app for the caller's sign-in.
#[utoipa::path(post, path = "/v1/me/mfa", tag = "users", request_body = AuthenticatorStart,
    responses((status = 200, body = AuthenticatorSecret), (status = 400, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn start_mfa(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<AuthenticatorStart>,
) -> Result<Json<AuthenticatorSecret>, ApiError> {
    let (token, user) = own_access_token(&state, &caller, &input.access_token).await?;
    let secret = state.identity.directory.new_authenticator(token).await?;
    Ok(Json(AuthenticatorSecret {
        uri: format!(
            "otpauth://totp/Spotwise:{email}?secret={secret}&issuer=Spotwise",
            email = user.email
        ),
        secret,
    }))
}

/// Confirms the new app with one of its codes: from then on signing in asks for a code.
#[utoipa::path(put, path = "/v1/me/mfa", tag = "users", request_body = AuthenticatorConfirm,
    responses((status = 200, body = User), (status = 400, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn confirm_mfa(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<AuthenticatorConfirm>,
) -> Result<Json<User>, ApiError> {
    let code = six_digits(&input.code)?;
    let (token, user) = own_access_token(&state, &caller, &input.access_token).await?;
    state
        .identity
        .directory
        .confirm_authenticator(token, &user.email, code)
        .await?;
    Ok(Json(
        set_mfa_record(&state, &caller, &user.id, true, "user.mfa_enable").await?,
    ))
}

/// Turns the caller's authenticator off: signing in asks for the password only.
#[utoipa::path(delete, path = "/v1/me/mfa", tag = "users",
    responses((status = 200, body = User), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn disable_mfa(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<User>, ApiError> {
    let user = caller.person()?;
    state.identity.directory.set_mfa(&user.email, false).await?;
    Ok(Json(
        set_mfa_record(&state, &caller, &user.id, false, "user.mfa_disable").await?,
    ))
}

/// Turns a member's authenticator off (a lost phone); they can set up a new one after signing in.
#[utoipa::path(delete, path = "/v1/users/{id}/mfa", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn reset_mfa(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, ApiError> {
    caller.require(Role::Admin)?;
    let item = member(&state, &caller, &id).await?;
    state
        .identity
        .directory
        .set_mfa(&item.body.email, false)
        .await?;
    Ok(Json(
        set_mfa_record(&state, &caller, &item.body.id, false, "user.mfa_reset").await?,
    ))
}

/// Records whether `user` signs in with a code, audited as `action`.
async fn set_mfa_record(
    state: &AppState,
    caller: &Caller,
    user: &str,
    mfa: bool,
    action: &'static str,
) -> Result<User, ApiError> {
    let mut item = member(state, caller, user).await?;
    let before = item.body.clone();
    item.body.mfa = mfa;
    audit::commit(
        state,
        vec![Write::versioned(&item)?],
        audit::entry(
            caller,
            action,
            format!("user/{user}"),
            snapshot(&before),
            snapshot(&item.body),
        )?,
    )
    .await?;
    Ok(item.body)
}

/// The record behind a token: present, not removed, and in the token's tenant.
pub async fn current_user(
    state: &AppState,
    sub: &str,
    tenant: &TenantId,
) -> Result<User, ApiError> {
    state
        .store
        .get::<User>(&keys::user(sub))
        .await?
        .map(|item| item.body)
        .filter(|user| &user.tenant_id == tenant && user.removed_at.is_none())
        .ok_or_else(|| ApiError::unauthorized("the user is not a member of a tenant"))
}

pub fn user_actor(user: &User) -> String {
    format!("user:{}", user.email)
}

/// Who is calling: the console shows the role's controls and nothing more.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// A person's email, or an API key's name.
    pub name: String,
    /// `admin`, `operator`, `viewer`, or `agent`.
    pub role: String,
    /// `user` (signed in) or `key`.
    pub kind: &'static str,
    /// For a person: whether signing in asks for an authenticator code.
    pub mfa: Option<bool>,
}

#[utoipa::path(get, path = "/v1/me", tag = "users",
    responses((status = 200, body = Me), (status = 401, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn me(caller: Caller) -> Json<Me> {
    let role = match &caller.principal {
        Principal::User { role } => role.as_str(),
        Principal::Agent { .. } => "agent",
    };
    let (kind, mfa) = match &caller.credential {
        Credential::Person(user) => ("user", Some(user.mfa)),
        Credential::ApiKey => ("key", None),
    };
    Json(Me {
        mfa,
        role: role.to_owned(),
        kind,
        name: caller.key_name,
        tenant: caller.tenant,
    })
}

#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<User>), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<User>>, ApiError> {
    caller.require(Role::Admin)?;
    let query = page.apply(Query::gsi1(keys::users_partition(&caller.tenant)))?;
    Ok(Json(Page::from_store(
        state.store.query::<User>(&query).await?,
        |u| u,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    pub role: Role,
}

/// Invites a person into the caller's tenant: the user pool emails a temporary password, which
/// the first sign-in replaces.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = Invitation,
    responses((status = 201, body = User), (status = 409, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<Invitation>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.require(Role::Admin)?;
    let address = email("email", &input.email)?;
    let sub = state
        .identity
        .directory
        .invite(&address, &caller.tenant, input.role, None)
        .await?;
    let user = new_user(sub, &caller.tenant, address, input.role, caller.actor());
    audit::commit(
        &state,
        vec![Write::put(&user_item(&user), PutCondition::IfAbsent)?],
        audit::entry(
            &caller,
            "user.invite",
            format!("user/{}", user.id),
            None,
            snapshot(&user),
        )?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

fn new_user(sub: String, tenant: &TenantId, email: String, role: Role, invited_by: String) -> User {
    User {
        id: sub,
        tenant_id: tenant.clone(),
        email,
        role,
        invited_by,
        created_at: OffsetDateTime::now_utc(),
        removed_at: None,
        mfa: false,
    }
}

pub fn user_item(user: &User) -> Item<&User> {
    Item::new(keys::user(&user.id), user).with_gsi1(keys::users_index(&user.tenant_id, &user.email))
}

/// Creates a person in the user pool with a temporary password their first sign-in replaces,
/// outside the API: the first admin of a tenant (`api bootstrap --admin-email`), and the local
/// demo's people. `actor` is how the audit log names who did it.
pub async fn add_person(
    state: &AppState,
    tenant: &TenantId,
    address: &str,
    role: Role,
    temporary_password: &str,
    actor: &str,
) -> Result<User, ApiError> {
    let address = email("email", address)?;
    let sub = state
        .identity
        .directory
        .invite(&address, tenant, role, Some(temporary_password))
        .await?;
    let user = new_user(sub, tenant, address, role, actor.to_owned());
    let change = spotwise_store::audit::Change {
        action: "user.invite",
        target: format!("user/{}", user.id),
        before: None,
        after: snapshot(&user),
    };
    state
        .store
        .transact(vec![
            Write::put(&user_item(&user), PutCondition::IfAbsent)?,
            spotwise_store::audit::write_of(tenant, actor, change, user.created_at)?,
        ])
        .await?;
    Ok(user)
}

/// A temporary password the pool's policy accepts (upper and lower case, digits, 12+
/// characters), 96 random bits.
pub fn temporary_password() -> String {
    let mut bytes = [0_u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    format!("Tmp-{}-a1", hex::encode(bytes))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

async fn member(state: &AppState, caller: &Caller, id: &str) -> Result<Item<User>, ApiError> {
    state
        .store
        .get::<User>(&keys::user(resource_id(id, "user")?))
        .await?
        .filter(|item| item.body.tenant_id == caller.tenant && item.body.removed_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))
}

fn not_yourself(caller: &Caller, user: &User) -> Result<(), ApiError> {
    if caller.key_id == format!("user:{}", user.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "an admin cannot change their own role or remove themselves; ask another admin",
        ));
    }
    Ok(())
}

#[utoipa::path(put, path = "/v1/users/{id}", tag = "users", params(("id" = String, Path)), request_body = RoleChange,
    responses((status = 200, body = User), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(input): JsonBody<RoleChange>,
) -> Result<Json<User>, ApiError> {
    caller.require(Role::Admin)?;
    let mut item = member(&state, &caller, &id).await?;
    not_yourself(&caller, &item.body)?;
    let before = item.body.clone();
    if before.role == input.role {
        return Ok(Json(before));
    }
    item.body.role = input.role;
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "user.role",
            format!("user/{id}"),
            snapshot(&before),
            snapshot(&item.body),
        )?,
    )
    .await?;
    // The table is what the API enforces; the pool's groups follow for tokens issued later.
    state
        .identity
        .directory
        .change_role(&item.body.email, before.role, input.role)
        .await?;
    Ok(Json(item.body))
}

/// Removes a person: signed out everywhere, unable to sign in, and refused on the next request.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let mut item = member(&state, &caller, &id).await?;
    not_yourself(&caller, &item.body)?;
    let before = item.body.clone();
    item.body.removed_at = Some(OffsetDateTime::now_utc());
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "user.remove",
            format!("user/{id}"),
            snapshot(&before),
            snapshot(&item.body),
        )?,
    )
    .await?;
    state.identity.directory.disable(&item.body.email).await?;
    Ok(StatusCode::NO_CONTENT)
}
