//! `/v1/docs`: the API reference, rendered once from the OpenAPI document into one page that
//! needs no script and nothing from elsewhere.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

fn schema_name(schema: &Value) -> Option<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        return reference.rsplit('/').next().map(str::to_owned);
    }
    if schema["type"] == "array" {
        return schema_name(&schema["items"]).map(|inner| format!("array of {inner}"));
    }
    schema["type"].as_str().map(str::to_owned)
}

/// A property's type and the bounds the API enforces.
fn describe(schema: &Value) -> String {
    let mut text = schema_name(schema)
        .or_else(|| {
            schema["oneOf"]
                .as_array()
                .or(schema["allOf"].as_array())
                .and_then(|parts| parts.iter().find_map(schema_name))
        })
        .unwrap_or_else(|| "object".into());
    for (key, label) in [
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ] {
        if let Some(value) = schema.get(key).filter(|v| !v.is_null()) {
            text.push_str(&format!(
                ", {label} {}",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            ));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        text.push_str(&format!(": {}", names.join(", ")));
    }
    text
}

fn anchor(method: &str, path: &str) -> String {
    format!(
        "{method}-{}",
        path.replace(['/', '{', '}'], "-").trim_matches('-')
    )
}

pub fn render(document: &Value) -> String {
    let title = document["info"]["title"].as_str().unwrap_or("API");
    let mut operations: Vec<(String, &str, &str, &Value)> = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let tag = operation["tags"][0].as_str().unwrap_or("other").to_owned();
            operations.push((tag, path.as_str(), method.as_str(), operation));
        }
    }
    operations.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    let schemas = document["components"]["schemas"].as_object();
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " reference" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                main id="main" {
                    h1 { (title) }
                    p { (document["info"]["description"].as_str().unwrap_or("")) }
                    p { "The machine-readable document: " a href="/v1/openapi.json" { "/v1/openapi.json" } "." }
                    nav aria-label="Operations" {
                        ul { @for (tag, path, method, _) in &operations {
                            li { small { (tag) } " " a href=(format!("#{}", anchor(method, path))) { code { (method.to_uppercase()) " " (path) } } }
                        } }
                    }
                    @for (_, path, method, operation) in &operations {
                        section id=(anchor(method, path)) {
                            h2 { code { (method.to_uppercase()) " " (path) } }
                            @if let Some(text) = operation["description"].as_str().or(operation["summary"].as_str()) {
                                p { (text) }
                            }
                            @if operation["security"].is_null() { p { small { "No credential needed." } } }
                            @if let Some(parameters) = operation["parameters"].as_array().filter(|p| !p.is_empty()) {
                                h3 { "Parameters" }
                                table { tbody { @for p in parameters { tr {
                                    td { code { (p["name"].as_str().unwrap_or("")) } } td { (p["in"].as_str().unwrap_or("")) }
                                    td { (describe(&p["schema"])) @if p["required"] == true { ", required" } }
                                    td { (p["description"].as_str().unwrap_or("")) }
                                } } } }
                            }
                            @if let Some(body) = operation["requestBody"]["content"]["application/json"]["schema"].as_object() {
                                @let name = schema_name(&Value::Object(body.clone())).unwrap_or_default();
                                h3 { "Body" }
                                p { a href=(format!("#schema-{name}")) { (name) } }
                            }
                            h3 { "Answers" }
                            ul { @for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                                li { code { (status) } " " (response["description"].as_str().unwrap_or("")) }
                            } }
                        }
                    }
                    h2 { "Schemas" }
                    @for (name, schema) in schemas.into_iter().flatten() {
                        section id=(format!("schema-{name}")) {
                            h3 { (name) }
                            @if let Some(text) = schema["description"].as_str() { p { (text) } }
                            @if let Some(properties) = schema["properties"].as_object() {
                                @let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                                table { tbody { @for (field, property) in properties { tr {
                                    td { code { (field) } } td { (describe(property)) @if required.contains(&field.as_str()) { ", required" } }
                                    td { (property["description"].as_str().unwrap_or("")) }
                                } } } }
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_operations_bounds_and_schemas() {
        let document = serde_json::json!({
            "info": {"title": "Spotwise API", "description": "d"},
            "paths": {"/v1/keys": {"post": {"tags": ["tenant"], "description": "Creates a <key>",
                "security": [{"api_key": []}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyInput"}}}},
                "responses": {"201": {"description": "created"}}}}},
            "components": {"schemas": {"KeyInput": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 100}}}}}
        });
        let page = render(&document);
        assert!(page.contains("POST /v1/keys"));
        assert!(page.contains("Creates a &lt;key&gt;"));
        assert!(page.contains("href=\"#schema-KeyInput\""));
        assert!(page.contains("string, max length 100, required"));
        assert!(!page.contains("<script"));
    }
}
