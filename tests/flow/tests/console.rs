//! The web console in a real browser (Debian's Chromium through chromedriver), on the demo's
//! stack after the whole flow: people sign in with the user pool (moto's Cognito), see the
//! demo's figures, approve the pending plan, edit the hibernation grid, add a webhook and test
//! it, and sign out; a viewer cannot approve even by forcing the request, and a person of
//! another tenant sees none of it. Screenshots of each page go to target/console-screenshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use spotwise_core::TenantId;
use spotwise_core::domain::Role;
use spotwise_testkit::browser::{self, Browser};
use spotwise_testkit::{LocalStack, repo_root, totp};

const TEMPORARY: &str = "Temporary-Passw0rd";
const CHOSEN: &str = "Chosen-Passw0rd-2026";

/// Signs in through the form, answering the first sign-in's new-password step.
async fn sign_in(browser: &Browser, base: &str, email: &str, shot: Option<&str>) {
    browser.goto(&format!("{base}/console")).await.unwrap();
    assert!(
        browser.url().await.unwrap().ends_with("/console/sign-in"),
        "signed-out visitors are sent to the sign-in page"
    );
    browser.fill("#username", email).await.unwrap();
    browser.fill("#password", TEMPORARY).await.unwrap();
    browser.submit("button[type=submit]").await.unwrap();
    assert!(
        browser.exists("#new_password").await.unwrap(),
        "the first sign-in asks for a password of one's own"
    );
    if let Some(name) = shot {
        browser.screenshot(name).await.unwrap();
    }
    browser.fill("#new_password", CHOSEN).await.unwrap();
    browser.submit("button[type=submit]").await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Overview");
}

/// Signs in again with the chosen password and the authenticator's current code.
async fn sign_in_with_code(browser: &Browser, base: &str, email: &str, secret: &str) {
    browser
        .goto(&format!("{base}/console/sign-in"))
        .await
        .unwrap();
    browser.fill("#username", email).await.unwrap();
    browser.fill("#password", CHOSEN).await.unwrap();
    browser.submit("button[type=submit]").await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Enter your code");
    browser.screenshot("17-sign-in-code").await.unwrap();
    let code = totp::current_code(secret).await.unwrap();
    browser.fill("#code", &code).await.unwrap();
    browser.submit("button[type=submit]").await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Overview");
}

async fn sign_out(browser: &Browser, base: &str) {
    browser.submit(".who button").await.unwrap();
    assert!(browser.url().await.unwrap().contains("/console/sign-in"));
    browser.goto(&format!("{base}/console")).await.unwrap();
    assert!(
        browser.url().await.unwrap().ends_with("/console/sign-in"),
        "after signing out the console asks to sign in again"
    );
}

/// The cron field's preview once `ready` accepts it (the page checks after each keystroke).
async fn preview(browser: &Browser, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = browser.text("#cron-preview").await.unwrap();
        if ready(&text) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    text
}

fn dollars(amount: f64) -> String {
    let cents = (amount * 100.0).round() as u64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("${grouped}.{:02}", cents % 100)
}

#[test]
fn people_use_the_console_in_a_real_browser() {
    // The whole flow and then every page make one future too deep for a test thread's 2 MiB
    // stack in a debug build; this test runs on a thread, and a runtime, with room for it.
    let walk = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_stack_size(8 << 20)
                .enable_all()
                .build()
                .unwrap()
                .block_on(walk_through_the_console());
        })
        .unwrap();
    walk.join().unwrap();
}

async fn walk_through_the_console() {
    assert!(
        browser::available(),
        "chromium and chromedriver are missing: run scripts/setup.sh"
    );
    let stack = LocalStack::start();
    let (report, rig) = Box::pin(spotwise_flow::run_kept(&stack)).await.unwrap();
    let state = rig.server.state();
    let base = rig.server.base().to_owned();
    let cluster = rig.cluster.to_string();
    for (email, role) in [
        ("admin@acme.example", Role::Admin),
        ("viewer@acme.example", Role::Viewer),
    ] {
        api::users::add_person(state, &rig.tenant, email, role, TEMPORARY, "test")
            .await
            .unwrap();
    }
    let globex = TenantId::new("globex").unwrap();
    api::auth::bootstrap(
        &state.store,
        &globex,
        "Globex",
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    api::users::add_person(
        state,
        &globex,
        "admin@globex.example",
        Role::Admin,
        TEMPORARY,
        "test",
    )
    .await
    .unwrap();
    let pending = rig
        .api
        .get(&format!("/v1/clusters/{cluster}/recommendations?limit=1"))
        .await
        .unwrap()["items"][0]
        .clone();
    assert_eq!(
        pending["status"], "proposed",
        "the demo ends with a plan to approve"
    );
    let revision = pending["revision"].as_u64().unwrap();
    let cluster_page = format!("{base}/console/clusters/{cluster}");

    let shots = repo_root().join("target/console-screenshots");
    let browser = Browser::start(1280, 800, &shots).await.unwrap();

    // A viewer sees the plan but no approve button, and forcing the request is refused.
    sign_in(&browser, &base, "viewer@acme.example", None).await;
    browser.goto(&cluster_page).await.unwrap();
    assert_eq!(browser.text("#plan-status").await.unwrap(), "proposed");
    assert!(!browser.exists("#approve").await.unwrap());
    browser.screenshot("05-cluster-as-viewer").await.unwrap();
    let approve = format!("/console/clusters/{cluster}/recommendations/{revision}/approve");
    let status = browser
        .execute(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST'}).then(r => done(r.status));",
            vec![json!(approve)],
            true,
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "the API refuses a viewer's approval");
    browser
        .execute(
            "window.__spotwiseLeaving = true;
             const form = document.createElement('form');
             form.method = 'post'; form.action = arguments[0];
             document.body.appendChild(form); form.submit();",
            vec![json!(approve)],
            false,
        )
        .await
        .unwrap();
    browser.wait_for_next_page().await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Not allowed");
    assert!(browser.text(".error").await.unwrap().contains("Operator"));
    browser
        .screenshot("06-viewer-forcing-approval")
        .await
        .unwrap();
    let still = rig
        .api
        .get(&format!(
            "/v1/clusters/{cluster}/recommendations/{revision}"
        ))
        .await
        .unwrap();
    assert_eq!(still["status"], "proposed");
    browser.goto(&format!("{base}/console")).await.unwrap();
    sign_out(&browser, &base).await;

    // An admin: sign in, overview with the demo's figures.
    sign_in(
        &browser,
        &base,
        "admin@acme.example",
        Some("01-set-password"),
    )
    .await;
    let before = report.monthly_figure("before");
    let realised = report.monthly_figure("realised");
    assert_eq!(
        browser.text("#realised-savings").await.unwrap(),
        dollars(before - realised),
        "the overview shows what the demo's rollout realised"
    );
    let overview = browser.text("main").await.unwrap();
    assert!(
        overview.contains(&dollars(realised)),
        "the cluster's monthly cost is the realised plan's: {overview}"
    );
    assert!(browser.text("#spot-share").await.unwrap().ends_with('%'));
    browser.screenshot("02-overview").await.unwrap();

    // Approve the pending plan.
    browser
        .submit(&format!("a[href=\"/console/clusters/{cluster}\"]"))
        .await
        .unwrap();
    let pods = browser.text("#pod-history").await.unwrap();
    assert!(
        pods.contains("moved") || pods.contains("started"),
        "the rollout's pod moves are in the pod history: {pods}"
    );
    let utilisation = browser.text("#utilisation").await.unwrap();
    assert!(
        utilisation.starts_with("Requested: cpu ") && utilisation.contains("in use"),
        "the running nodes' requested and used share: {utilisation}"
    );
    browser.screenshot("03-cluster").await.unwrap();
    browser.submit("#approve").await.unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("approved"));
    assert_eq!(browser.text("#plan-status").await.unwrap(), "applying");
    browser.screenshot("04-cluster-approved").await.unwrap();
    let rollout = rig
        .api
        .get(&format!(
            "/v1/clusters/{cluster}/recommendations/{revision}/rollout"
        ))
        .await
        .unwrap();
    assert_eq!(
        rollout["revision"], revision,
        "approving started the rollout"
    );

    // Hibernation: switch it on and put Saturday 00:00-03:00 to sleep.
    browser
        .goto(&format!("{cluster_page}/hibernation"))
        .await
        .unwrap();
    if !browser.is_selected("#enabled").await.unwrap() {
        browser.click("#enabled").await.unwrap();
    }
    for hour in 0..3 {
        browser
            .click(&format!("input[name=\"h5_{hour}\"]"))
            .await
            .unwrap();
    }
    browser.submit("#save-hibernation").await.unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("saved"));
    assert!(!browser.is_selected("input[name=\"h5_1\"]").await.unwrap());
    browser.screenshot("07-hibernation").await.unwrap();
    let saved = rig
        .api
        .get(&format!("/v1/clusters/{cluster}/hibernation"))
        .await
        .unwrap();
    assert_eq!(saved["schedule"]["enabled"], true);
    assert_eq!(
        saved["schedule"]["awake"][5],
        format!("000{}", "1".repeat(21))
    );
    assert_eq!(saved["schedule"]["awake"][0], "1".repeat(24));

    // Right-sizing: every workload of the newest plan, with the changes the flow applied.
    let sizing = rig
        .api
        .get(&format!("/v1/clusters/{cluster}/rightsizing"))
        .await
        .unwrap();
    browser
        .goto(&format!("{cluster_page}/rightsizing"))
        .await
        .unwrap();
    let listed = browser.text("#rightsizing").await.unwrap();
    for workload in sizing["workloads"].as_array().unwrap() {
        let key = workload["key"].as_str().unwrap();
        assert!(listed.contains(key), "{key} in {listed}");
    }
    browser.screenshot("07b-rightsizing").await.unwrap();
    let ready = sizing["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["status"] == "ready")
        .expect("the demo's plan has a right-sizing ready to apply");
    let key = ready["key"].as_str().unwrap();
    browser
        .submit(&format!("button[aria-label=\"Apply to {key}\"]"))
        .await
        .unwrap();
    assert!(browser.text(".notice").await.unwrap().contains(key));
    let changes = browser.text("#resize-changes").await.unwrap();
    assert!(
        changes.contains("pending") && changes.contains("user:admin@acme.example"),
        "{changes}"
    );
    let newest = &rig
        .api
        .get(&format!("/v1/clusters/{cluster}/rightsizing"))
        .await
        .unwrap()["changes"][0];
    assert_eq!(newest["status"], "pending", "{newest}");
    assert_eq!(
        format!(
            "{}/{}/{}",
            newest["workload"]["namespace"].as_str().unwrap(),
            newest["workload"]["kind"].as_str().unwrap(),
            newest["workload"]["name"].as_str().unwrap()
        ),
        key
    );

    // An expired session cookie is renewed from the refresh cookie, without signing in.
    browser.delete_cookie("spotwise_session").await.unwrap();
    browser.goto(&format!("{base}/console")).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Overview");

    // Costs by namespace over the month so far, and their CSV export.
    browser
        .goto(&format!("{cluster_page}/costs"))
        .await
        .unwrap();
    let costs = browser.text("#cost-table").await.unwrap();
    for namespace in ["shop", "data", "payments"] {
        assert!(costs.contains(namespace), "{namespace} in {costs}");
    }
    browser.screenshot("08-costs").await.unwrap();
    let csv = browser
        .execute(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![json!(format!(
                "/console/clusters/{cluster}/costs.csv?dimension=namespace"
            ))],
            true,
        )
        .await
        .unwrap();
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("period,") && csv.contains(",shop,"),
        "{csv}"
    );

    // A scheduled run, its cron expression checked as it is typed.
    browser
        .goto(&format!("{base}/console/schedules"))
        .await
        .unwrap();
    browser.fill("#name", "weekday plan").await.unwrap();
    browser.fill("#cron", "61 6 * * *").await.unwrap();
    let refused = preview(&browser, |t| !t.is_empty()).await;
    assert!(!refused.contains("Next runs"), "{refused}");
    browser.fill("#cron", "0 6 * * MON-FRI").await.unwrap();
    let accepted = preview(&browser, |t| t.starts_with("Next runs")).await;
    assert!(accepted.contains("06:00 UTC"), "{accepted}");
    browser.screenshot("09-schedules").await.unwrap();
    browser.submit("#add-schedule").await.unwrap();
    assert!(
        browser
            .text(".notice")
            .await
            .unwrap()
            .contains("Schedule added")
    );
    assert!(
        browser
            .text("#schedules")
            .await
            .unwrap()
            .contains("weekday plan")
    );

    // A webhook to the local receiver, and a test delivery.
    browser
        .goto(&format!("{base}/console/notifications"))
        .await
        .unwrap();
    browser.fill("#name", "console-hook").await.unwrap();
    browser
        .fill("#url", &rig.receiver.url("console-hook"))
        .await
        .unwrap();
    browser.submit("#add-webhook").await.unwrap();
    assert!(
        browser
            .text(".notice")
            .await
            .unwrap()
            .contains("signing secret")
    );
    browser.screenshot("10-webhook-added").await.unwrap();
    browser
        .submit("button[aria-label=\"Send a test to console-hook\"]")
        .await
        .unwrap();
    let notice = browser.text(".notice").await.unwrap();
    assert!(
        notice.contains("delivered") && notice.contains("HTTP 200"),
        "{notice}"
    );
    assert_eq!(rig.receiver.hits("console-hook"), 1);
    browser.screenshot("11-webhook-tested").await.unwrap();

    // Admin: users, keys and the audit log, which holds the sign-ins and the approval.
    browser
        .goto(&format!("{base}/console/admin"))
        .await
        .unwrap();
    let audit = browser.text("#audit-log").await.unwrap();
    for action in [
        "user.sign_in",
        "recommendation.approve",
        "hibernation.update",
        "webhook.create",
    ] {
        assert!(audit.contains(action), "{action} is audited: {audit}");
    }
    assert!(audit.contains("user:admin@acme.example"));
    browser.fill("#action", "user.sign_in").await.unwrap();
    browser.submit("#filter-audit").await.unwrap();
    let filtered = browser.text("#audit-log").await.unwrap();
    assert!(filtered.contains("user.sign_in") && !filtered.contains("webhook.create"));
    browser.screenshot("12-admin").await.unwrap();

    // An API key for automation: its secret shown once, then revoked; the viewer removed.
    browser.fill("#key-name", "ci").await.unwrap();
    browser.submit("#create-key").await.unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("swk_"));
    browser
        .submit("button[aria-label=\"Revoke ci\"]")
        .await
        .unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("revoked"));
    browser
        .submit("button[aria-label=\"Remove viewer@acme.example\"]")
        .await
        .unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("removed"));
    let users = rig.api.get("/v1/users").await.unwrap();
    let viewer = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "viewer@acme.example")
        .unwrap();
    assert!(!viewer["removed_at"].is_null());

    // The cluster's policy, edited in its form.
    browser
        .goto(&format!("{cluster_page}/policy"))
        .await
        .unwrap();
    browser.fill("#min_spot_pools", "3").await.unwrap();
    browser
        .click("input[name=\"exclude_previous_generation\"]")
        .await
        .unwrap();
    browser.submit("#save-policy").await.unwrap();
    assert!(
        browser
            .text(".notice")
            .await
            .unwrap()
            .contains("Policy saved")
    );
    let policy = rig
        .api
        .get(&format!("/v1/clusters/{cluster}/policy"))
        .await
        .unwrap();
    assert_eq!(policy["min_spot_pools"], 3);
    assert_eq!(policy["exclude_previous_generation"], true);
    assert_eq!(policy["excluded_namespaces"], json!(["kube-system"]));
    browser.screenshot("12c-policy").await.unwrap();

    // A node template: plans may use only arm64 spot nodes of two families, labelled for batch.
    browser
        .goto(&format!("{cluster_page}/node-templates"))
        .await
        .unwrap();
    browser.fill("#template-name", "batch").await.unwrap();
    browser
        .fill("#instance_families", "m7g, c7g")
        .await
        .unwrap();
    browser
        .click("input[name=\"capacity_types\"][value=\"on-demand\"]")
        .await
        .unwrap();
    browser
        .click("input[name=\"architectures\"][value=\"x86_64\"]")
        .await
        .unwrap();
    browser.fill("#labels", "workload=batch").await.unwrap();
    browser.submit("#add-template").await.unwrap();
    assert!(
        browser
            .text("#templates")
            .await
            .unwrap()
            .contains("m7g, c7g")
    );
    let templates = rig
        .api
        .get(&format!("/v1/clusters/{cluster}/node-templates"))
        .await
        .unwrap();
    let batch = &templates["items"][0];
    assert_eq!(
        (
            &batch["capacity_types"],
            &batch["architectures"],
            &batch["labels"]
        ),
        (
            &json!(["spot"]),
            &json!(["arm64"]),
            &json!({"workload": "batch"})
        )
    );
    browser.screenshot("12d-node-templates").await.unwrap();

    // A silence of savings reports.
    browser
        .goto(&format!("{base}/console/suppression"))
        .await
        .unwrap();
    browser.fill("#value", "savings_report").await.unwrap();
    browser.fill("#comment", "month-end noise").await.unwrap();
    browser.submit("#add-silence").await.unwrap();
    assert!(
        browser
            .text("#silence-list")
            .await
            .unwrap()
            .contains("event_type equal savings_report")
    );
    browser.screenshot("12e-silences").await.unwrap();

    // Linked accounts, and the templates to deploy in a new one.
    browser
        .goto(&format!("{base}/console/accounts"))
        .await
        .unwrap();
    assert!(
        browser
            .text("#accounts")
            .await
            .unwrap()
            .contains("111122223333")
    );
    let template = browser
        .execute(
            "const done = arguments[arguments.length - 1];
             fetch('/console/templates/customer-role.yaml').then(r => r.text()).then(done);",
            vec![],
            true,
        )
        .await
        .unwrap();
    assert!(template.as_str().unwrap().contains("ExternalId"));
    browser.screenshot("12f-accounts").await.unwrap();
    browser
        .goto(&format!("{base}/console/admin"))
        .await
        .unwrap();

    // Publish the public status page.
    browser.submit("#publish").await.unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("public"));
    let status_path = browser
        .execute(
            "return document.getElementById('status-link').getAttribute('href');",
            vec![],
            false,
        )
        .await
        .unwrap();
    let status_path = status_path.as_str().unwrap().to_owned();
    assert!(status_path.starts_with("/status/"));
    browser.screenshot("12b-admin-status-page").await.unwrap();

    // A phone's width: no sideways scrolling, and the first page is small.
    browser.resize(390, 844).await.unwrap();
    browser.goto(&format!("{base}/console")).await.unwrap();
    let fits: Value = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
            false,
        )
        .await
        .unwrap();
    assert_eq!(fits, true, "the overview fits a phone's width");
    let bytes = browser
        .execute(
            "return performance.getEntriesByType('navigation')
                 .concat(performance.getEntriesByType('resource'))
                 .reduce((sum, e) => sum + e.decodedBodySize, 0);",
            vec![],
            false,
        )
        .await
        .unwrap();
    let bytes = bytes.as_u64().unwrap();
    assert!(
        bytes > 0 && bytes < 200 * 1024,
        "the first page is {bytes} bytes"
    );
    println!("overview page and its assets: {bytes} bytes");
    browser.screenshot("13-overview-phone").await.unwrap();
    browser.resize(1280, 800).await.unwrap();

    // The admin turns on an authenticator app: a wrong code is refused, the app's code
    // confirms it, and the next sign-in asks for a code.
    browser.click(".who a").await.unwrap();
    assert!(browser.text("#mfa + p").await.unwrap().starts_with("Off"));
    browser
        .submit("form[action=\"/console/account/mfa\"] button")
        .await
        .unwrap();
    assert!(browser.exists("img.qr").await.unwrap());
    browser.screenshot("12g-authenticator").await.unwrap();
    let secret: String = browser
        .text("code.secret")
        .await
        .unwrap()
        .split_whitespace()
        .collect();
    let stale = totp::code(&secret, 59).unwrap();
    browser.fill("#code", &stale).await.unwrap();
    browser.submit("form.stack button").await.unwrap();
    assert!(
        browser.text(".error").await.unwrap().contains("code"),
        "a wrong code is refused on the same page"
    );
    let code = totp::current_code(&secret).await.unwrap();
    browser.fill("#code", &code).await.unwrap();
    browser.submit("form.stack button").await.unwrap();
    assert!(browser.text(".notice").await.unwrap().contains("is on"));
    assert!(browser.text("#mfa + p").await.unwrap().starts_with("On"));
    browser.screenshot("12h-account").await.unwrap();
    sign_out(&browser, &base).await;
    sign_in_with_code(&browser, &base, "admin@acme.example", &secret).await;
    sign_out(&browser, &base).await;
    browser.screenshot("14-signed-out").await.unwrap();

    // The status page and the badge, without signing in: agent health, uptime and savings of
    // the tenant's clusters, and nothing that names its accounts.
    browser.goto(&format!("{base}{status_path}")).await.unwrap();
    let table = browser.text("#status").await.unwrap();
    assert!(
        table.contains("prod") && table.contains("online"),
        "{table}"
    );
    let page = browser.text("body").await.unwrap();
    assert!(
        !page.contains("111122223333") && !page.contains("us-east-1"),
        "{page}"
    );
    assert!(
        browser
            .text("#status-savings")
            .await
            .unwrap()
            .contains(&dollars(before - realised))
    );
    println!("public status page: {table}");
    browser.screenshot("14b-public-status").await.unwrap();
    let badge = browser
        .execute(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![json!(format!("{status_path}/badge.svg"))],
            true,
        )
        .await
        .unwrap();
    let badge = badge.as_str().unwrap();
    assert!(
        badge.starts_with("<svg") && badge.contains(&format!("{}/mo", dollars(before - realised))),
        "{badge}"
    );

    // Another tenant's person sees none of it.
    sign_in(&browser, &base, "admin@globex.example", None).await;
    assert_eq!(browser.text("#monthly-cost").await.unwrap(), "$0.00");
    assert!(!browser.text("main").await.unwrap().contains("prod"));
    browser.screenshot("15-other-tenant").await.unwrap();
    browser.goto(&cluster_page).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Not found");
    browser.screenshot("16-other-tenant-cluster").await.unwrap();

    // The local stack's signed-in link (`scripts/run-local.sh`) opens the demo tenant's console.
    browser.delete_cookies().await.unwrap();
    let (link, _, _) = spotwise_flow::demo_console(&rig).await.unwrap();
    browser.goto(&link).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Overview");
    assert!(
        browser
            .text(".who")
            .await
            .unwrap()
            .contains("demo@acme.example")
    );
}
