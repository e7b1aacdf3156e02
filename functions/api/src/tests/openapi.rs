//! `/v1/openapi.json` and `/v1/docs`.

use super::*;

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let api = api().await;
    let doc = api
        .send(Method::GET, "/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: HashSet<&str> = doc.body["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Routes and operations come from one list, so every documented operation must be routed:
    // asked without a key, each answers for itself, never with the router's fallbacks.
    assert_eq!(paths.len(), 67, "{paths:?}");
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let answer = api.send(method.clone(), &concrete, None, None, &[]).await;
            let message = answer.body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.starts_with("no route for")
                    && answer.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed: {message}"
            );
        }
    }
    assert_eq!(
        doc.body["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert!(doc.body["components"]["schemas"]["WebhookInput"].is_object());
    let text = doc.body.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc.body["components"]["schemas"][name].is_object(),
            "unresolved $ref {name}"
        );
    }
    let docs = api.send(Method::GET, "/v1/docs", None, None, &[]).await;
    let page = docs.body.as_str().unwrap();
    assert!(page.contains("/v1/openapi.json") && page.contains("POST /v1/keys"));
    assert!(
        !page.contains("<script") && !page.contains("href=\"http") && !page.contains("src="),
        "the reference loads nothing from elsewhere"
    );
}
