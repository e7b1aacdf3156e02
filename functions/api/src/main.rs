//! The API binary: under Lambda it serves API Gateway events through lambda_http; locally
//! `api serve [--addr 127.0.0.1:8080]` runs the same Router as an HTTP server, and
//! `api invoke --event FILE` sends one API Gateway event through it, and
//! `api bootstrap --tenant ID --name NAME [--admin-email EMAIL]` creates a tenant and prints its
//! first admin key, and with an email its first admin user and their temporary password.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = api::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let state = api::AppState::new(&sdk, &config)?;
    let app = api::app(state.clone());

    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] if env.optional("AWS_LAMBDA_RUNTIME_API").is_some() => {
            lambda_http::run(app).await.map_err(|e| anyhow::anyhow!(e))
        }
        ["serve"] => serve(app, "127.0.0.1:8080").await,
        ["serve", "--addr", addr] => serve(app, addr).await,
        ["bootstrap", "--tenant", tenant, "--name", name] => {
            bootstrap(&state, tenant, name, None).await
        }
        [
            "bootstrap",
            "--tenant",
            tenant,
            "--name",
            name,
            "--admin-email",
            email,
        ] => bootstrap(&state, tenant, name, Some(email)).await,
        ["invoke", "--event", path] => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("reading event file {path}"))?;
            let response = api::invoke(app, &raw).await?;
            println!("{}", serde_json::to_string_pretty(&response)?);
            Ok(())
        }
        other => bail!(
            "unexpected arguments {other:?}\nusage: api serve [--addr HOST:PORT] | api invoke --event FILE | \
             api bootstrap --tenant ID --name NAME [--admin-email EMAIL] (under Lambda no arguments are needed)"
        ),
    }
}

async fn bootstrap(
    state: &api::AppState,
    tenant: &str,
    name: &str,
    admin_email: Option<&str>,
) -> anyhow::Result<()> {
    let tenant = spotwise_core::TenantId::new(tenant)?;
    let issued = api::auth::bootstrap(&state.store, &tenant, name, time::OffsetDateTime::now_utc())
        .await
        .with_context(|| format!("creating tenant {tenant}"))?;
    let mut printed = serde_json::json!({"tenant": tenant, "key_id": issued.key.id, "admin_key": issued.secret,
        "note": "the key and password are shown once; store the key in a secret manager"});
    if let Some(email) = admin_email {
        let password = api::users::temporary_password();
        let user = api::users::add_person(
            state,
            &tenant,
            email,
            spotwise_core::domain::Role::Admin,
            &password,
            "cli:bootstrap",
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the admin user {email}: {e:?}"))?;
        printed["admin_user"] = serde_json::json!({"email": user.email, "temporary_password": password,
            "note": "the first sign-in asks for a new password"});
    }
    println!("{printed}");
    Ok(())
}

async fn serve(app: axum::Router, addr: &str) -> anyhow::Result<()> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("invalid --addr {addr}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The bound address on stdout lets scripts use port 0 and discover the port.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
