//! People: Cognito users who sign in to the console, each in one tenant with one role.
//!
//! The user pool holds passwords, MFA and the `custom:tenant` attribute, which only admins can
//! write (it is immutable and the app client cannot write it). Cognito issues ID tokens; every
//! request with one is checked here, against the pool's JWKS, for signature, issuer, audience,
//! token use and expiry, so `api serve` checks exactly what API Gateway's JWT authorizer checks
//! in AWS. The tenant's user record in the table is then the authority for the role, so a role
//! change or a removal takes effect on the next request, not when the token expires.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::Client as CognitoClient;
use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::types::{
    AttributeType, AuthFlowType, ChallengeNameType, DeliveryMediumType, MessageActionType,
    SoftwareTokenMfaSettingsType, VerifySoftwareTokenResponseType,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use spotwise_core::TenantId;
use spotwise_core::config::{ConfigError, Env};
use spotwise_core::domain::Role;
use time::OffsetDateTime;

/// Where the pool is and how its tokens are checked.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub user_pool_id: String,
    /// The app client the console signs in with: the ID tokens' audience.
    pub client_id: String,
    /// `https://cognito-idp.<region>.amazonaws.com/<pool id>`: the tokens' `iss`.
    pub issuer: String,
    /// Where the pool's signing keys are published; the issuer's well-known path unless set
    /// (the local stack serves them at its own address).
    pub jwks_url: String,
}

impl IdentityConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let user_pool_id = env.required("COGNITO_USER_POOL_ID")?;
        let issuer = env.required("COGNITO_ISSUER")?;
        let jwks_url = env
            .optional("COGNITO_JWKS_URL")
            .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
        Ok(Self {
            client_id: env.required("COGNITO_CLIENT_ID")?,
            user_pool_id,
            issuer,
            jwks_url,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token is not signed with RS256 by a key of the user pool")]
    UnknownKey,
    #[error("the token is not valid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token has expired; sign in again")]
    Expired,
    #[error("an {expected} token is required, not an {found} token")]
    WrongUse {
        expected: &'static str,
        found: String,
    },
    #[error("the token was issued to another app client")]
    OtherClient,
    #[error("the user belongs to no tenant")]
    NoTenant,
    /// The pool's keys could not be fetched: retryable, the token may well be valid.
    #[error("the user pool's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// What the console and the API read from an ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    #[serde(rename = "cognito:username")]
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    pub token_use: String,
    pub exp: i64,
    #[serde(rename = "custom:tenant", default)]
    pub tenant: Option<String>,
}

/// What the API reads from an access token.
#[derive(Debug, Clone, Deserialize)]
struct AccessClaims {
    sub: String,
    /// Absent from ID tokens, which are then refused for their `token_use`.
    #[serde(default)]
    client_id: String,
    token_use: String,
    exp: i64,
}

trait Expiring {
    fn exp(&self) -> i64;
}

impl Expiring for IdClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Expiring for AccessClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

/// A checked ID token: who, and for which tenant.
#[derive(Debug, Clone)]
pub struct Person {
    pub sub: String,
    pub name: String,
    pub tenant: TenantId,
    pub expires_at: i64,
}

/// Clock skew tolerated between Cognito and this function.
const LEEWAY_SECONDS: i64 = 30;
/// An unknown `kid` refetches the keys (Cognito rotates them), at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks ID tokens against the pool's published keys, fetched once and again on rotation.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    jwks_url: String,
    http: reqwest::Client,
    keys: Mutex<(JwkSet, Option<Instant>)>,
}

impl TokenVerifier {
    pub fn new(config: &IdentityConfig, http: reqwest::Client) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audience: config.client_id.clone(),
            jwks_url: config.jwks_url.clone(),
            http,
            keys: Mutex::new((JwkSet { keys: Vec::new() }, None)),
        }
    }

    /// A verifier that trusts exactly `keys` and never fetches.
    pub fn with_keys(issuer: &str, audience: &str, keys: JwkSet) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_url: String::new(),
            http: reqwest::Client::new(),
            keys: Mutex::new((keys, Some(Instant::now()))),
        }
    }

    /// The person an ID token was issued to, if the token is genuine and current at `now`.
    pub async fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Person, TokenError> {
        let claims: IdClaims = self.decode(token, now, true).await?;
        if claims.token_use != "id" {
            return Err(TokenError::WrongUse {
                expected: "ID",
                found: claims.token_use,
            });
        }
        let tenant = claims
            .tenant
            .as_deref()
            .and_then(|t| TenantId::new(t).ok())
            .ok_or(TokenError::NoTenant)?;
        Ok(Person {
            name: claims.email.unwrap_or(claims.username),
            sub: claims.sub,
            tenant,
            expires_at: claims.exp,
        })
    }

    /// The `sub` of the user an access token was issued to by this pool's app client. Access
    /// tokens carry `client_id` instead of an audience; Cognito accepts them for the user's own
    /// settings (an authenticator app), and the API checks they belong to the caller.
    pub async fn verify_access(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<String, TokenError> {
        let claims: AccessClaims = self.decode(token, now, false).await?;
        if claims.token_use != "access" {
            return Err(TokenError::WrongUse {
                expected: "access",
                found: claims.token_use,
            });
        }
        if claims.client_id != self.audience {
            return Err(TokenError::OtherClient);
        }
        Ok(claims.sub)
    }

    /// Signature, issuer, audience (when the token has one) and expiry at `now`.
    async fn decode<C: for<'de> Deserialize<'de> + Expiring>(
        &self,
        token: &str,
        now: OffsetDateTime,
        with_audience: bool,
    ) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnknownKey);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        if with_audience {
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        } else {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        }
        // Expiry is checked below against the caller's clock, which tests and replays set.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<C>(token, &key, &validation)
            .map_err(TokenError::Invalid)?
            .claims;
        if now.unix_timestamp() > claims.exp() + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        let due = {
            let guard = self
                .keys
                .lock()
                .map_err(|_| TokenError::KeysUnavailable("lock poisoned".into()))?;
            if let Some(jwk) = guard.0.find(kid) {
                return DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey);
            }
            guard.1.is_none_or(|at| at.elapsed() >= REFETCH_AFTER)
        };
        if !due || self.jwks_url.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let fetched: JwkSet = self
            .http
            .get(&self.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
        let found = fetched.find(kid).map(DecodingKey::from_jwk);
        if let Ok(mut guard) = self.keys.lock() {
            *guard = (fetched, Some(Instant::now()));
        }
        match found {
            Some(Ok(key)) => Ok(key),
            _ => Err(TokenError::UnknownKey),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("wrong user name or password")]
    NotAuthorized,
    #[error("{0}")]
    InvalidPassword(String),
    #[error("the code is not valid")]
    WrongCode,
    #[error("the user pool refused the request: {0}")]
    InvalidParameter(String),
    #[error("a user with this email already exists")]
    AlreadyExists,
    #[error("the user pool is busy; try again shortly")]
    Throttled,
    #[error("the user pool failed: {0}")]
    Unavailable(String),
}

impl<E: ProvideErrorMetadata, R> From<SdkError<E, R>> for DirectoryError {
    fn from(err: SdkError<E, R>) -> Self {
        let message = err.message().unwrap_or_default().to_owned();
        match err.code() {
            Some(
                "NotAuthorizedException" | "UserNotFoundException" | "UserNotConfirmedException",
            ) => Self::NotAuthorized,
            Some("InvalidPasswordException") => Self::InvalidPassword(message),
            Some("CodeMismatchException" | "ExpiredCodeException") => Self::WrongCode,
            Some("UsernameExistsException") => Self::AlreadyExists,
            Some("InvalidParameterException") => Self::InvalidParameter(message),
            Some("TooManyRequestsException" | "LimitExceededException") => Self::Throttled,
            code => Self::Unavailable(format!("{}: {message}", code.unwrap_or("unknown"))),
        }
    }
}

/// What a sign-in or a refresh gives: the ID token the API takes, the access token Cognito
/// takes for the user's own settings, and (at sign-in only) the refresh token that renews both.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Seconds the ID and access tokens are valid for.
    pub expires_in: i32,
}

/// Where a sign-in stands after one step.
#[derive(Debug, Clone)]
pub enum SignInStep {
    Signed(Tokens),
    /// An invited user's first sign-in: a password of their own replaces the temporary one.
    NewPasswordRequired {
        session: String,
    },
    /// The user has an authenticator app: its six-digit code.
    MfaRequired {
        session: String,
    },
}

/// The user pool: sign-in for the console, invitations and roles for admins.
pub struct Directory {
    client: CognitoClient,
    user_pool_id: String,
    client_id: String,
}

impl Directory {
    pub fn new(client: CognitoClient, config: &IdentityConfig) -> Self {
        Self {
            client,
            user_pool_id: config.user_pool_id.clone(),
            client_id: config.client_id.clone(),
        }
    }

    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
    ) -> Result<SignInStep, DirectoryError> {
        let out = self
            .client
            .initiate_auth()
            .client_id(&self.client_id)
            .auth_flow(AuthFlowType::UserPasswordAuth)
            .auth_parameters("USERNAME", username)
            .auth_parameters("PASSWORD", password)
            .send()
            .await?;
        step(out.authentication_result, out.challenge_name, out.session)
    }

    pub async fn answer(
        &self,
        username: &str,
        session: &str,
        answer: ChallengeAnswer<'_>,
    ) -> Result<SignInStep, DirectoryError> {
        let (challenge, name, value) = match answer {
            ChallengeAnswer::NewPassword(password) => (
                ChallengeNameType::NewPasswordRequired,
                "NEW_PASSWORD",
                password,
            ),
            ChallengeAnswer::MfaCode(code) => (
                ChallengeNameType::SoftwareTokenMfa,
                "SOFTWARE_TOKEN_MFA_CODE",
                code,
            ),
        };
        let out = self
            .client
            .respond_to_auth_challenge()
            .client_id(&self.client_id)
            .challenge_name(challenge)
            .session(session)
            .challenge_responses("USERNAME", username)
            .challenge_responses(name, value)
            .send()
            .await
            .map_err(|err| match err.code() {
                // An unknown or expired session: Cognito says NotAuthorized, moto ResourceNotFound.
                Some("ResourceNotFoundException") => DirectoryError::NotAuthorized,
                _ => err.into(),
            })?;
        step(out.authentication_result, out.challenge_name, out.session)
    }

    /// New ID and access tokens for a refresh token (which stays the same).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, DirectoryError> {
        let out = self
            .client
            .initiate_auth()
            .client_id(&self.client_id)
            .auth_flow(AuthFlowType::RefreshTokenAuth)
            .auth_parameters("REFRESH_TOKEN", refresh_token)
            .send()
            .await?;
        let result = out
            .authentication_result
            .ok_or(DirectoryError::NotAuthorized)?;
        tokens(result)
    }

    /// A new authenticator secret for the user whose access token this is; MFA is not on
    /// until a code from it is verified.
    pub async fn new_authenticator(&self, access_token: &str) -> Result<String, DirectoryError> {
        let out = self
            .client
            .associate_software_token()
            .access_token(access_token)
            .send()
            .await?;
        out.secret_code
            .ok_or_else(|| DirectoryError::Unavailable("the user pool gave no secret".into()))
    }

    /// Checks a code from the new authenticator and makes it the user's second factor.
    pub async fn confirm_authenticator(
        &self,
        access_token: &str,
        username: &str,
        code: &str,
    ) -> Result<(), DirectoryError> {
        let out = self
            .client
            .verify_software_token()
            .access_token(access_token)
            .user_code(code)
            .friendly_device_name("Spotwise")
            .send()
            .await?;
        if out.status != Some(VerifySoftwareTokenResponseType::Success) {
            return Err(DirectoryError::WrongCode);
        }
        self.set_mfa(username, true).await
    }

    /// Turns the user's authenticator app on (it must be verified) or off as a second factor.
    pub async fn set_mfa(&self, username: &str, enabled: bool) -> Result<(), DirectoryError> {
        let settings = SoftwareTokenMfaSettingsType::builder()
            .enabled(enabled)
            .preferred_mfa(enabled)
            .build();
        self.client
            .admin_set_user_mfa_preference()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .software_token_mfa_settings(settings)
            .send()
            .await?;
        Ok(())
    }

    /// Creates the user in `tenant` with `role`; Cognito emails a temporary password, unless
    /// one is given here (the first admin, whose password `api bootstrap` prints).
    /// Returns the user's `sub`.
    pub async fn invite(
        &self,
        email: &str,
        tenant: &TenantId,
        role: Role,
        temporary_password: Option<&str>,
    ) -> Result<String, DirectoryError> {
        let attribute = |name: &str, value: &str| {
            AttributeType::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(|e| DirectoryError::Unavailable(e.to_string()))
        };
        let mut request = self
            .client
            .admin_create_user()
            .user_pool_id(&self.user_pool_id)
            .username(email)
            .user_attributes(attribute("email", email)?)
            .user_attributes(attribute("email_verified", "true")?)
            .user_attributes(attribute("custom:tenant", tenant.as_str())?);
        request = match temporary_password {
            Some(password) => request
                .temporary_password(password)
                .message_action(MessageActionType::Suppress),
            None => request.desired_delivery_mediums(DeliveryMediumType::Email),
        };
        let created = request.send().await?;
        let sub = created
            .user
            .and_then(|u| {
                u.attributes
                    .unwrap_or_default()
                    .into_iter()
                    .find(|a| a.name == "sub")
                    .and_then(|a| a.value)
            })
            .ok_or_else(|| DirectoryError::Unavailable("the new user has no sub".into()))?;
        self.client
            .admin_add_user_to_group()
            .user_pool_id(&self.user_pool_id)
            .username(email)
            .group_name(role.as_str())
            .send()
            .await?;
        Ok(sub)
    }

    /// Moves the user from the group of `from` to the group of `to`.
    pub async fn change_role(
        &self,
        username: &str,
        from: Role,
        to: Role,
    ) -> Result<(), DirectoryError> {
        self.client
            .admin_add_user_to_group()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .group_name(to.as_str())
            .send()
            .await?;
        self.client
            .admin_remove_user_from_group()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .group_name(from.as_str())
            .send()
            .await?;
        Ok(())
    }

    /// Signs the user out everywhere and stops them signing in again.
    pub async fn disable(&self, username: &str) -> Result<(), DirectoryError> {
        self.client
            .admin_disable_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await?;
        self.sign_out(username).await
    }

    /// Revokes the user's refresh and access tokens, in every browser; ID tokens already
    /// issued stay valid until they expire (within the hour), as JWTs do.
    pub async fn sign_out(&self, username: &str) -> Result<(), DirectoryError> {
        self.client
            .admin_user_global_sign_out()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await?;
        Ok(())
    }
}

fn tokens(
    result: aws_sdk_cognitoidentityprovider::types::AuthenticationResultType,
) -> Result<Tokens, DirectoryError> {
    match (result.id_token, result.access_token) {
        (Some(id_token), Some(access_token)) => Ok(Tokens {
            id_token,
            access_token,
            refresh_token: result.refresh_token,
            expires_in: result.expires_in,
        }),
        _ => Err(DirectoryError::Unavailable(
            "the user pool signed in without tokens".into(),
        )),
    }
}

pub enum ChallengeAnswer<'a> {
    NewPassword(&'a str),
    MfaCode(&'a str),
}

fn step(
    result: Option<aws_sdk_cognitoidentityprovider::types::AuthenticationResultType>,
    challenge: Option<ChallengeNameType>,
    session: Option<String>,
) -> Result<SignInStep, DirectoryError> {
    if let Some(result) = result {
        return tokens(result).map(SignInStep::Signed);
    }
    let session = session.unwrap_or_default();
    match challenge {
        Some(ChallengeNameType::NewPasswordRequired) => {
            Ok(SignInStep::NewPasswordRequired { session })
        }
        Some(ChallengeNameType::SoftwareTokenMfa) => Ok(SignInStep::MfaRequired { session }),
        other => Err(DirectoryError::Unavailable(format!(
            "sign-in step {other:?} is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    use super::*;

    const ID_TOKEN: &str = include_str!("../../../events/cognito/id-token.jwt");
    const ACCESS_TOKEN: &str = include_str!("../../../events/cognito/access-token.jwt");
    const JWKS: &str = include_str!("../../../events/cognito/jwks.json");
    const POOL: &str = include_str!("../../../events/cognito/pool.json");

    fn pool() -> Value {
        serde_json::from_str(POOL).unwrap()
    }

    fn verifier(issuer: &str, audience: &str) -> TokenVerifier {
        TokenVerifier::with_keys(issuer, audience, serde_json::from_str(JWKS).unwrap())
    }

    fn fixture_verifier() -> TokenVerifier {
        let pool = pool();
        verifier(
            pool["issuer"].as_str().unwrap(),
            pool["client_id"].as_str().unwrap(),
        )
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    fn issued() -> i64 {
        pool()["claims"]["iat"].as_i64().unwrap()
    }

    fn expires() -> i64 {
        pool()["claims"]["exp"].as_i64().unwrap()
    }

    /// The token with its payload changed and its signature kept.
    fn tampered(edit: impl Fn(&mut Value)) -> String {
        let mut parts: Vec<String> = ID_TOKEN.trim().split('.').map(str::to_owned).collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        edit(&mut claims);
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    }

    #[tokio::test]
    async fn a_current_id_token_names_the_person_and_their_tenant() {
        let person = fixture_verifier()
            .verify(ID_TOKEN.trim(), at(issued() + 60))
            .await
            .unwrap();
        assert_eq!(person.tenant.as_str(), "acme");
        assert_eq!(person.name, "ops@acme.example");
        assert_eq!(person.sub, pool()["claims"]["sub"].as_str().unwrap());
        assert_eq!(person.expires_at, expires());
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_after_the_allowed_skew() {
        let verifier = fixture_verifier();
        assert!(
            verifier
                .verify(ID_TOKEN.trim(), at(expires() + LEEWAY_SECONDS - 1))
                .await
                .is_ok()
        );
        assert!(matches!(
            verifier
                .verify(ID_TOKEN.trim(), at(expires() + LEEWAY_SECONDS + 1))
                .await,
            Err(TokenError::Expired)
        ));
    }

    #[tokio::test]
    async fn another_pool_or_app_client_is_refused() {
        let pool = pool();
        let issuer = pool["issuer"].as_str().unwrap();
        let client = pool["client_id"].as_str().unwrap();
        let now = at(issued() + 60);
        let other_client = verifier(issuer, "another-client");
        assert!(matches!(
            other_client.verify(ID_TOKEN.trim(), now).await,
            Err(TokenError::Invalid(_))
        ));
        let other_pool = verifier(
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_other",
            client,
        );
        assert!(matches!(
            other_pool.verify(ID_TOKEN.trim(), now).await,
            Err(TokenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn an_access_token_is_not_an_id_token() {
        let refused = fixture_verifier()
            .verify(ACCESS_TOKEN.trim(), at(issued() + 60))
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }

    #[tokio::test]
    async fn an_access_token_names_its_user_only_for_this_app_client() {
        let now = at(issued() + 60);
        let sub = fixture_verifier()
            .verify_access(ACCESS_TOKEN.trim(), now)
            .await
            .unwrap();
        assert_eq!(sub, pool()["claims"]["sub"].as_str().unwrap());
        assert!(matches!(
            fixture_verifier().verify_access(ID_TOKEN.trim(), now).await,
            Err(TokenError::WrongUse {
                expected: "access",
                ..
            })
        ));
        let other_client = verifier(pool()["issuer"].as_str().unwrap(), "another-client");
        assert!(matches!(
            other_client.verify_access(ACCESS_TOKEN.trim(), now).await,
            Err(TokenError::OtherClient)
        ));
        assert!(matches!(
            fixture_verifier()
                .verify_access(ACCESS_TOKEN.trim(), at(expires() + LEEWAY_SECONDS + 1))
                .await,
            Err(TokenError::Expired)
        ));
    }

    #[tokio::test]
    async fn a_token_whose_claims_were_edited_fails_its_signature() {
        let moved = tampered(|claims| claims["custom:tenant"] = "globex".into());
        assert!(matches!(
            fixture_verifier().verify(&moved, at(issued() + 60)).await,
            Err(TokenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn unsigned_or_foreign_keys_and_garbage_are_refused() {
        let verifier = fixture_verifier();
        let now = at(issued() + 60);
        let payload = ID_TOKEN.trim().split('.').nth(1).unwrap();
        let unsigned = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"dummy"}"#)
        );
        assert!(matches!(
            verifier.verify(&unsigned, now).await,
            Err(TokenError::Malformed)
        ));
        for header in [
            r#"{"alg":"HS256","kid":"dummy"}"#,
            r#"{"alg":"RS256","kid":"rotated-away"}"#,
            r#"{"alg":"RS256"}"#,
        ] {
            let token = format!("{}.{payload}.c2ln", URL_SAFE_NO_PAD.encode(header));
            assert!(
                matches!(
                    verifier.verify(&token, now).await,
                    Err(TokenError::UnknownKey)
                ),
                "{header}"
            );
        }
        assert!(matches!(
            verifier.verify("not.a.jwt", now).await,
            Err(TokenError::Malformed)
        ));
        let huge = format!("{}.{}.x", "a".repeat(MAX_TOKEN_BYTES), payload);
        assert!(matches!(
            verifier.verify(&huge, now).await,
            Err(TokenError::Malformed)
        ));
    }
}
