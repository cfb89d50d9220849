//! `GET /v1/openapi.json`: the machine-readable description of the API, kept beside the
//! handlers it describes. It is public (documentation, no data) so the dashboard's API page
//! and tools like schemathesis can fetch it without a token. `tests/integration/openapi.rs`
//! checks every answer it documents against a real one, field by field.

use actix_web::HttpResponse;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Content-Type", "application/json"))
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_valid_json_describing_every_path() {
        let document: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(document["openapi"], "3.0.3");
        let paths = document["paths"].as_object().expect("paths");
        for path in [
            "/customers",
            "/customers/{ident}",
            "/customers:search",
            "/customers/{ident}/referrals",
            "/customers/{ident}/stats",
            "/customers/{ident}/balance",
            "/customers/{ident}/balance/credit",
            "/customers/{ident}/transactions",
            "/customers:invite",
        ] {
            assert!(paths.contains_key(path), "{path} is described");
        }
    }
}
