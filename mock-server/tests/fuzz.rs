//! Property tests: random paths, methods and bodies (random bytes, deep JSON, huge numbers,
//! odd unicode) always get an ARM error body with a 4xx, or a success; never a panic or 5xx.

mod common;

use axum::body::{to_bytes, Body};
use common::*;
use mock_arm::{app, MockState};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn state() -> MockState {
    let mut config = fast_config();
    config.max_body_bytes = 64 * 1024;
    MockState::new(config, seed()).unwrap()
}

fn check(state: &MockState, method: &str, uri: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let Ok(request) = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer t")
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return Ok(()); // not a valid HTTP request: a client could not send it
    };
    let (status, bytes) = runtime().block_on(async {
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            to_bytes(response.into_body(), usize::MAX).await.unwrap(),
        )
    });
    prop_assert!(!status.is_server_error(), "{method} {uri} -> {status}");
    // HEAD answers carry no body (HTTP semantics).
    if status.is_client_error() && method != "HEAD" {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{e}: {bytes:?}")))?;
        prop_assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{body}"
        );
    }
    Ok(())
}

fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn paths() -> impl Strategy<Value = String> {
    let nsg = nsg_path("sql-nsg");
    let vnet = vnet_path("vnet");
    prop_oneof![
        Just(nsg.clone()),
        Just(format!("{nsg}/securityRules/r1")),
        Just(format!("{nsg}/defaultSecurityRules/DenyAllInBound")),
        Just(format!("{vnet}/subnets/sql")),
        Just(vnet.clone()),
        Just(rt_path("ase-one-rt")),
        Just(format!("{}/routes/x", rt_path("ase-one-rt"))),
        Just(format!("/subscriptions/{SUB}/resourceGroups/network")),
        Just(format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/x"
        )),
        "/[a-zA-Z0-9%/._~-]{0,80}",
        "(/subscriptions/[a-z0-9%é]{0,8}){1,6}",
    ]
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let rule_like = (any::<i64>(), ".{0,12}", ".{0,12}").prop_map(|(priority, port, prefix)| {
        serde_json::json!({"location": "westeurope", "properties": {"securityRules": [{"name": "r1", "properties": {
            "protocol": "Tcp", "priority": priority, "destinationPortRange": port, "sourcePortRange": "*",
            "sourceAddressPrefix": prefix, "destinationAddressPrefix": "*", "access": "Allow", "direction": "Inbound"}}],
            "addressPrefix": prefix, "addressPrefixes": [prefix], "nextHopType": port}})
        .to_string()
        .into_bytes()
    });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (1usize..5000).prop_map(|d| deep_json(d).into_bytes()),
        Just(br#"{"location":"westeurope","properties":{"securityRules":[{"name":"r1","properties":{"priority":1e999}}]}}"#.to_vec()),
        Just("{\"location\":\"\u{202e}\u{0}\",\"properties\":{\"addressPrefix\":\"\u{1F600}/99\"}}".as_bytes().to_vec()),
        rule_like,
        any::<String>().prop_map(|s| serde_json::json!({"location": s, "tags": {s.clone(): s}, "properties": {"addressSpace": {"addressPrefixes": [s]}}}).to_string().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_get_arm_errors_never_server_errors(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("PATCH"), Just("DELETE"), Just("POST"), Just("HEAD")],
        path in paths(),
        query in prop_oneof![Just("?api-version=2024-03-01".to_owned()), Just(String::new()), "\\?[a-z$%=&-]{0,30}", Just("?api-version=2024-03-01&$skipToken=zz".to_owned())],
        body in bodies(),
    ) {
        let state = state();
        check(&state, method, &format!("{path}{query}"), body)?;
    }
}

#[test]
fn oversized_and_deeply_nested_bodies_are_rejected_cleanly() {
    let state = state();
    let uri = format!("{}?{API}", nsg_path("n"));
    check(&state, "PUT", &uri, vec![b'{'; 200_000]).unwrap();
    check(&state, "PUT", &uri, deep_json(60_000).into_bytes()).unwrap();
}
