//! The storage half of an agent's snapshot upload: the PUT of the gzip body to the presigned URL
//! an upload ticket (`POST /v1/agent/snapshot-uploads`) hands out.

use serde_json::Value;

/// PUTs `body` as the ticket says, with exactly its headers; panics unless storage accepts it.
pub async fn put_presigned(ticket: &Value, body: Vec<u8>) {
    let url = ticket["url"]
        .as_str()
        .unwrap_or_else(|| panic!("not an upload ticket: {ticket}"));
    let mut put = reqwest::Client::new().put(url);
    for (name, value) in ticket["headers"].as_object().into_iter().flatten() {
        if name != "content-length" {
            put = put.header(name, value.as_str().unwrap_or_default());
        }
    }
    let response = put
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the local S3 did not answer: {e}"));
    assert!(
        response.status().is_success(),
        "presigned PUT answered {}",
        response.status()
    );
}
