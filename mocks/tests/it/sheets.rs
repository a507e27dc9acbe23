//! The Sheets `values:append` fake and the OAuth token endpoint: JWT checks,
//! token expiry, query checks, recorded rows, injected failures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callguard_mocks::{
    MockServer, SHEETS_STATIC_TOKEN, SinkFailure, TEST_SERVICE_ACCOUNT_EMAIL,
    test_service_account_json,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{client, start};

const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn test_key() -> EncodingKey {
    let account: Value = serde_json::from_str(&test_service_account_json("http://x")).unwrap();
    EncodingKey::from_rsa_pem(account["private_key"].as_str().unwrap().as_bytes()).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assertion(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &test_key()).unwrap()
}

fn good_claims(server: &MockServer) -> Value {
    let iat = now();
    json!({
        "iss": TEST_SERVICE_ACCOUNT_EMAIL,
        "scope": SCOPE,
        "aud": server.token_uri(),
        "iat": iat,
        "exp": iat + 3600,
    })
}

async fn exchange(server: &MockServer, assertion: &str) -> (StatusCode, Value) {
    let response = client()
        .post(server.token_uri())
        .form(&[("grant_type", GRANT), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn append_url(server: &MockServer, range: &str) -> String {
    format!(
        "{}/v4/spreadsheets/sheet-1/values/{range}?valueInputOption=RAW&insertDataOption=INSERT_ROWS",
        server.sheets_api_base()
    )
}

async fn append(server: &MockServer, token: &str, rows: Value) -> reqwest::Response {
    client()
        .post(append_url(server, "Logs!A1:append"))
        .bearer_auth(token)
        .json(&json!({ "values": rows }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_assertion_buys_a_token_the_sheets_fake_accepts() {
    let server = start().await;
    let (status, body) = exchange(&server, &assertion(&good_claims(&server))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();

    let response = append(&server, token, json!([["a", 1], ["b", 2, true]])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["spreadsheetId"], "sheet-1");
    assert_eq!(answer["updates"]["updatedRange"], "Logs!A1:C2");
    assert_eq!(answer["updates"]["updatedRows"], 2);
    assert_eq!(answer["updates"]["updatedCells"], 5);
    let answer: Value = append(&server, token, json!([["c"]]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["updates"]["updatedRange"], "Logs!A3:A3");

    let appends = server.sheets_appends();
    assert_eq!(appends.len(), 2);
    assert_eq!(appends[0].range, "Logs!A1");
    assert_eq!(appends[0].value_input_option, "RAW");
    assert_eq!(appends[0].insert_data_option, "INSERT_ROWS");
    assert_eq!(
        server.sheets_rows(),
        vec![
            vec![json!("a"), json!(1)],
            vec![json!("b"), json!(2), json!(true)],
            vec![json!("c")]
        ]
    );
    let requests = server.token_requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].granted);
    assert_eq!(
        requests[0].issuer.as_deref(),
        Some(TEST_SERVICE_ACCOUNT_EMAIL)
    );
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let server = start().await;
    let good = assertion(&good_claims(&server));
    // Flip one character of the signature.
    let mut forged = good.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let mut wrong_aud = good_claims(&server);
    wrong_aud["aud"] = json!("https://oauth2.googleapis.com/token");
    let mut no_scope = good_claims(&server);
    no_scope["scope"] = json!("https://www.googleapis.com/auth/drive");
    let mut long_lived = good_claims(&server);
    long_lived["exp"] = json!(now() + 7200);
    let mut expired = good_claims(&server);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut stranger = good_claims(&server);
    stranger["iss"] = json!("someone@else.iam.gserviceaccount.com");

    let cases = [
        (forged, "Signature"),
        (assertion(&wrong_aud), "audience"),
        (assertion(&no_scope), "scope"),
        (assertion(&long_lived), "short-lived"),
        (assertion(&expired), "expired"),
        (assertion(&stranger), "issuer"),
        ("not-a-jwt".to_owned(), "Invalid JWT"),
    ];
    for (jwt, reason) in &cases {
        let (status, body) = exchange(&server, jwt).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(reason), "{reason}: {body}");
        assert!(body.get("access_token").is_none());
    }
    let requests = server.token_requests();
    assert_eq!(requests.len(), cases.len());
    assert!(requests.iter().all(|r| !r.granted));
}

#[tokio::test]
async fn wrong_grant_type_is_refused() {
    let server = start().await;
    let response = client()
        .post(server.token_uri())
        .form(&[("grant_type", "client_credentials"), ("assertion", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test(start_paused = true)]
async fn issued_tokens_expire() {
    let server = start().await;
    server.set_token_lifetime(Duration::from_secs(120));
    let (_, body) = exchange(&server, &assertion(&good_claims(&server))).await;
    assert_eq!(body["expires_in"], 120);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(append(&server, &token, json!([["x"]])).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(121)).await;
    let response = append(&server, &token, json!([["y"]])).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(server.sheets_rows(), vec![vec![json!("x")]]);
    assert_eq!(server.sheets_statuses(), [200, 401]);
}

#[tokio::test]
async fn requests_must_carry_a_known_token_and_the_query() {
    let server = start().await;
    let rows = json!({ "values": [["a"]] });
    let unknown = append(&server, "ya29.made-up", json!([["a"]])).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let no_query = client()
        .post(format!(
            "{}/v4/spreadsheets/sheet-1/values/Logs!A1:append",
            server.sheets_api_base()
        ))
        .bearer_auth(SHEETS_STATIC_TOKEN)
        .json(&rows)
        .send()
        .await
        .unwrap();
    assert_eq!(no_query.status(), StatusCode::BAD_REQUEST);
    let no_method = client()
        .post(append_url(&server, "Logs!A1"))
        .bearer_auth(SHEETS_STATIC_TOKEN)
        .json(&rows)
        .send()
        .await
        .unwrap();
    assert_eq!(no_method.status(), StatusCode::NOT_FOUND);
    let bad_body = append(&server, SHEETS_STATIC_TOKEN, json!("rows")).await;
    assert_eq!(bad_body.status(), StatusCode::BAD_REQUEST);
    assert!(server.sheets_rows().is_empty());
    let ok = append(&server, SHEETS_STATIC_TOKEN, json!([["a"]])).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(server.sheets_statuses(), [401, 400, 404, 400, 200]);
}

#[tokio::test]
async fn injected_failures_come_first_then_normal_answers() {
    let server = start().await;
    server
        .sheets_fail(SinkFailure::new(429, 2).with_retry_after(Duration::from_millis(1500)))
        .unwrap();
    // The same through the control API.
    let queued = client()
        .post(format!("{}/_control/sheets/failures", server.url()))
        .json(&json!({ "status": 500 }))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), StatusCode::CREATED);
    assert_eq!(queued.json::<Value>().await.unwrap()["queued"], 3);
    let bad = client()
        .post(format!("{}/_control/sheets/failures", server.url()))
        .json(&json!({ "status": 200 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let first = append(&server, SHEETS_STATIC_TOKEN, json!([["1"]])).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers()["retry-after"], "2");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    for expected in [429, 500, 200] {
        let response = append(&server, SHEETS_STATIC_TOKEN, json!([["1"]])).await;
        assert_eq!(response.status().as_u16(), expected);
    }
    assert_eq!(
        server.sheets_rows().len(),
        1,
        "failed requests record nothing"
    );

    server.sheets_fail(SinkFailure::new(503, 5)).unwrap();
    let cleared = client()
        .delete(format!("{}/_control/sheets/failures", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.json::<Value>().await.unwrap()["cleared"], 5);
    let after = append(&server, SHEETS_STATIC_TOKEN, json!([["2"]])).await;
    assert_eq!(after.status(), StatusCode::OK);
}
