//! In-process tests of the ARM protocol behaviour (domain.md 4) over real HTTP on port 0.

mod common;

use std::time::Duration;

use common::*;
use mock_arm::{Config, FaultAction, FaultSpec, MockState, Seed, ServeOptions};
use serde_json::json;

#[tokio::test]
async fn a_put_runs_a_long_running_operation_as_nrp_does() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let put = arm
        .put(&nsg_path("web-nsg"), &json!({"location": "West Europe"}))
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(put.body["properties"]["provisioningState"], "Updating");
    let op_url = put.header("azure-asyncoperation").unwrap();
    assert!(op_url.starts_with(&format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/",
        mock.base_url
    )));
    assert!(op_url.ends_with("?api-version=2024-03-01"));
    assert!(op_url.contains(put.header("x-ms-request-id").unwrap()));
    assert!(put.header("retry-after").is_some());
    assert_eq!(
        put.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(put.header("x-ms-correlation-request-id").is_some());
    assert!(put.header("x-ms-routing-request-id").is_some());

    let status = arm.get(op_url).await;
    assert_eq!(status.body, json!({"status": "InProgress"}));
    assert_eq!(
        arm.get(&nsg_path("web-nsg")).await.body["properties"]["provisioningState"],
        "Updating"
    );
    assert_eq!(arm.wait(&put).await, json!({"status": "Succeeded"}));
    let got = arm.get(&nsg_path("web-nsg")).await;
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(got.body["location"], "westeurope");
    assert_eq!(
        got.body["properties"]["defaultSecurityRules"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // An update answers 200; DELETE answers 202 with Location, then the result endpoint 202 -> 204.
    assert_eq!(
        arm.put(&nsg_path("web-nsg"), &json!({"location": "westeurope"}))
            .await
            .status,
        200
    );
    let delete = arm.delete(&nsg_path("web-nsg")).await;
    assert_eq!(delete.status, 202);
    let location = delete.header("location").unwrap().to_owned();
    assert!(location.contains("/operationResults/"));
    assert_eq!(arm.get(&location).await.status, 202);
    assert_eq!(
        arm.get(&nsg_path("web-nsg")).await.body["properties"]["provisioningState"],
        "Deleting"
    );
    arm.wait(&delete).await;
    assert_eq!(arm.get(&location).await.status, 204);
    let gone = arm.get(&nsg_path("web-nsg")).await;
    assert_eq!((gone.status, gone.code()), (404, "ResourceNotFound"));
    assert_eq!(arm.delete(&nsg_path("web-nsg")).await.status, 204);
}

#[tokio::test]
async fn etags_change_on_every_write_and_preconditions_are_enforced() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let before = arm.get(&nsg_path("sql-nsg")).await;
    let etag = before.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\""));
    assert_eq!(before.body["etag"], etag.as_str());
    assert_eq!(
        before.body["properties"]["securityRules"][0]["etag"],
        etag.as_str()
    );

    let body =
        json!({"location": "westeurope", "properties": {"securityRules": [rule("a", 100, "443")]}});
    let stale = arm
        .send(
            arm.http
                .put(arm.url(&nsg_path("sql-nsg")))
                .header("If-Match", "W/\"other\"")
                .json(&body),
        )
        .await;
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));
    let fresh = arm
        .send(
            arm.http
                .put(arm.url(&nsg_path("sql-nsg")))
                .header("If-Match", &etag)
                .json(&body),
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_ne!(fresh.header("etag").unwrap(), etag);
    // PUT replaced the rule list (domain.md 4.4).
    assert_eq!(
        fresh.body["properties"]["securityRules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(fresh.body["properties"]["securityRules"][0]["name"], "a");

    let none_match = arm
        .send(
            arm.http
                .put(arm.url(&nsg_path("sql-nsg")))
                .header("If-None-Match", "*")
                .json(&body),
        )
        .await;
    assert_eq!(none_match.status, 412);
    let if_match_absent = arm
        .send(
            arm.http
                .put(arm.url(&nsg_path("absent")))
                .header("If-Match", "*")
                .json(&body),
        )
        .await;
    assert_eq!(if_match_absent.status, 412);
    let delete_stale = arm
        .send(
            arm.http
                .delete(arm.url(&nsg_path("sql-nsg")))
                .header("If-Match", &etag),
        )
        .await;
    assert_eq!(delete_stale.status, 412);
}

#[tokio::test]
async fn lists_are_paged_with_next_links_that_keep_the_api_version() {
    let mut config = fast_config();
    config.page_size = 2;
    let mock = mock_with(config).await;
    let arm = Arm::new(&mock);
    for i in 0..3 {
        arm.put(
            &nsg_path(&format!("extra-{i}")),
            &json!({"location": "westeurope"}),
        )
        .await;
    }
    let mut url = arm.url(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Network/networkSecurityGroups"
    ));
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = arm.get(&url).await;
        assert_eq!(page.status, 200);
        pages += 1;
        names.extend(
            page.body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap().to_owned()),
        );
        match page.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("api-version=2024-03-01") && next.contains("$skipToken="));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 5);
}

#[tokio::test]
async fn names_and_path_segments_match_case_insensitively_and_keep_create_time_casing() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    arm.put(&nsg_path("MixedCase"), &json!({"location": "westeurope"}))
        .await;
    let path = format!("/SUBSCRIPTIONS/{SUB}/resourcegroups/NETWORK/providers/microsoft.network/networksecuritygroups/mixedcase");
    let got = arm.get(&path).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["name"], "MixedCase");
    assert!(got.body["id"].as_str().unwrap().ends_with(
        "/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/MixedCase"
    ));
    let update = arm
        .put(&nsg_path("MIXEDCASE"), &json!({"location": "westeurope"}))
        .await;
    assert_eq!(
        (update.status, update.body["name"].as_str()),
        (200, Some("MixedCase"))
    );
}

#[tokio::test]
async fn validation_errors_use_azure_codes() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let with_rules = |rules: serde_json::Value| json!({"location": "westeurope", "properties": {"securityRules": rules}});
    let mut bad_port = rule("r", 200, "any");
    let mut bad_prefix = rule("r", 200, "80");
    bad_prefix["properties"]["sourceAddressPrefix"] = json!("10.0.0.1/16");
    let mut tag_in_list = rule("r", 200, "80");
    tag_in_list["properties"]
        .as_object_mut()
        .unwrap()
        .remove("sourceAddressPrefix");
    tag_in_list["properties"]["sourceAddressPrefixes"] = json!(["VirtualNetwork"]);
    bad_port["name"] = json!("r");
    let cases = [
        (
            with_rules(json!([rule("a", 200, "80"), rule("b", 200, "81")])),
            "SecurityRuleConflict",
        ),
        (
            with_rules(json!([bad_port])),
            "SecurityRuleInvalidPortRange",
        ),
        (
            with_rules(json!([bad_prefix])),
            "SecurityRuleInvalidAddressPrefix",
        ),
        (
            with_rules(json!([tag_in_list])),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            with_rules(json!([rule("r", 50, "80")])),
            "SecurityRuleInvalidPriority",
        ),
        (
            with_rules(json!([rule("bad name!", 200, "80")])),
            "InvalidResourceName",
        ),
        (json!({"properties": {}}), "LocationRequired"),
    ];
    for (body, code) in cases {
        let answer = arm.put(&nsg_path("v"), &body).await;
        assert_eq!((answer.status, answer.code()), (400, code), "{body}");
    }
    let too_many: Vec<_> = (0..1001)
        .map(|i| rule(&format!("r{i}"), 100 + (i % 3997), "80"))
        .collect();
    assert_eq!(
        arm.put(&nsg_path("v"), &with_rules(json!(too_many)))
            .await
            .status,
        400
    );

    let malformed = arm
        .send(arm.http.put(arm.url(&nsg_path("v"))).body("{not json"))
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "InvalidRequestFormat")
    );

    let route = |props: serde_json::Value| json!({"properties": props});
    let rt = rt_path("ase-one-rt");
    let missing_ip = arm
        .put(
            &format!("{rt}/routes/nva"),
            &route(json!({"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance"})),
        )
        .await;
    assert_eq!(missing_ip.code(), "MissingNextHopIpAddress");
    let ip_not_allowed = arm
        .put(&format!("{rt}/routes/x"), &route(json!({"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet", "nextHopIpAddress": "10.0.0.4"})))
        .await;
    assert_eq!(ip_not_allowed.status, 400);
    let routes: Vec<_> = (0..401).map(|i| json!({"name": format!("r{i}"), "properties": {"addressPrefix": format!("10.{}.{}.0/24", i / 256, i % 256), "nextHopType": "None"}})).collect();
    assert_eq!(
        arm.put(
            &rt,
            &json!({"location": "westeurope", "properties": {"routes": routes}})
        )
        .await
        .status,
        400
    );

    let subnet = arm
        .put(
            &format!("{}/subnets/free", vnet_path("vnet")),
            &json!({"properties": {}}),
        )
        .await;
    assert_eq!(subnet.code(), "AddressPrefixStringCannotBeNullOrEmpty");
    let dangling = arm
        .put(&format!("{}/subnets/free", vnet_path("vnet")), &json!({"properties": {"addressPrefix": "10.0.3.0/24", "networkSecurityGroup": {"id": nsg_path("nope")}}}))
        .await;
    assert_eq!(dangling.code(), "InvalidResourceReference");

    // Protocol errors.
    let no_version = arm
        .send(arm.http.get(format!("{}{}", arm.base, nsg_path("sql-nsg"))))
        .await;
    assert_eq!(
        (no_version.status, no_version.code()),
        (400, "MissingApiVersionParameter")
    );
    let bad_version = arm
        .send(arm.http.get(format!(
            "{}{}?api-version=1999-01-01",
            arm.base,
            nsg_path("sql-nsg")
        )))
        .await;
    assert_eq!(bad_version.code(), "InvalidApiVersionParameter");
    assert!(bad_version.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2024-03-01"));
    let anonymous = arm
        .http
        .get(arm.url(&nsg_path("sql-nsg")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let no_group = arm.get(&format!("/subscriptions/{SUB}/resourceGroups/nope/providers/Microsoft.Network/networkSecurityGroups/x")).await;
    assert_eq!(
        (no_group.code(), no_group.header("x-ms-failure-cause")),
        ("ResourceGroupNotFound", Some("gateway"))
    );
    let no_child = arm
        .get(&format!("{}/securityRules/nope", nsg_path("sql-nsg")))
        .await;
    assert_eq!((no_child.status, no_child.code()), (404, "NotFound"));
    let unknown = arm.get("/whatever").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["error"]["code"].is_string());
    let huge = arm
        .send(
            arm.http
                .put(arm.url(&nsg_path("v")))
                .body(vec![b' '; 5 * 1024 * 1024]),
        )
        .await;
    assert_eq!(huge.status, 413);
}

#[tokio::test]
async fn associations_are_back_referenced_and_protect_against_deletion() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let nsg = arm.get(&nsg_path("sql-nsg")).await;
    assert!(nsg.body["properties"]["subnets"][0]["id"]
        .as_str()
        .unwrap()
        .ends_with("/subnets/sql"));
    let refused = arm.delete(&nsg_path("sql-nsg")).await;
    assert_eq!(
        (refused.status, refused.code()),
        (400, "InUseNetworkSecurityGroupCannotBeDeleted")
    );
    let refused = arm.delete(&rt_path("ase-one-rt")).await;
    assert_eq!(refused.code(), "InUseRouteTableCannotBeDeleted");

    // A subnet PUT without networkSecurityGroup removes the association (domain.md 4.4).
    let put = arm
        .put(
            &format!("{}/subnets/sql", vnet_path("vnet")),
            &json!({"properties": {"addressPrefix": "10.0.2.0/24"}}),
        )
        .await;
    assert_eq!(put.status, 200);
    arm.wait(&put).await;
    assert!(arm.get(&nsg_path("sql-nsg")).await.body["properties"]
        .get("subnets")
        .is_none());
    assert_eq!(arm.delete(&nsg_path("sql-nsg")).await.status, 202);
}

#[tokio::test]
async fn overlapping_subnet_writes_conflict_with_another_operation() {
    let mut config = fast_config();
    config.lro_delay = Duration::from_secs(5);
    let mock = mock_with(config).await;
    let arm = Arm::new(&mock);
    let subnet = |name: &str| format!("{}/subnets/{name}", vnet_path("vnet"));
    let first = arm
        .put(
            &subnet("free"),
            &json!({"properties": {"addressPrefix": "10.0.3.0/24"}}),
        )
        .await;
    assert_eq!(first.status, 200);
    let second = arm
        .put(
            &subnet("sql"),
            &json!({"properties": {"addressPrefix": "10.0.2.0/24"}}),
        )
        .await;
    assert_eq!(
        (second.status, second.code()),
        (409, "AnotherOperationInProgress")
    );
    assert!(second.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/operations/"));
}

#[tokio::test]
async fn hosting_environment_addresses_are_served() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let ase = format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Web/hostingEnvironments/ase-one");
    let web = |path: String| format!("{}{path}?api-version=2016-09-01", arm.base);
    let got = arm.send(arm.http.get(web(ase.clone()))).await;
    assert_eq!(got.body["kind"], "ASEV2");
    assert!(got.body["properties"]["virtualNetwork"]["id"]
        .as_str()
        .unwrap()
        .ends_with("/subnets/ase-one"));
    let vip = arm
        .send(arm.http.get(web(format!("{ase}/capacities/virtualip"))))
        .await;
    assert_eq!(vip.body["properties"]["serviceIpAddress"], "192.23.1.2");
    assert_eq!(
        vip.body["properties"]["outboundIpAddresses"],
        json!(["192.23.1.2"])
    );
    let inbound = arm
        .send(
            arm.http
                .get(web(format!("{ase}/inboundnetworkdependenciesendpoints"))),
        )
        .await;
    let endpoints: Vec<_> = inbound.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["endpoints"].as_array().unwrap().clone())
        .collect();
    assert!(
        endpoints.contains(&json!("192.23.1.2/32")) && endpoints.contains(&json!("10.0.1.0/26"))
    );
    let list = arm
        .send(arm.http.get(web(format!(
            "/subscriptions/{SUB}/providers/Microsoft.Web/hostingEnvironments"
        ))))
        .await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_remaining_headers() {
    let mut config = fast_config();
    config.throttling.enabled = true;
    config.throttling.reads.size = 3;
    config.throttling.reads.refill_per_sec = 1.0;
    let mock = mock_with(config).await;
    let arm = Arm::new(&mock);
    let remaining: Vec<_> = futures_remaining(&arm).await;
    assert_eq!(remaining, vec!["2", "1", "0"]);
    let throttled = arm.get(&nsg_path("sql-nsg")).await;
    assert_eq!(
        (throttled.status, throttled.code()),
        (429, "SubscriptionRequestsThrottled")
    );
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        throttled.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("0")
    );
    // Writes have their own bucket.
    let put = arm
        .put(&nsg_path("w"), &json!({"location": "westeurope"}))
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(
        put.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("199")
    );
    assert_eq!(mock.state.stats().throttled(), 1);
}

async fn futures_remaining(arm: &Arm) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let answer = arm.get(&nsg_path("sql-nsg")).await;
        out.push(
            answer
                .header("x-ms-ratelimit-remaining-subscription-reads")
                .unwrap()
                .to_owned(),
        );
    }
    out
}

#[tokio::test]
async fn a_scaled_clock_sends_millisecond_retry_after() {
    let mut config = fast_config();
    config.throttling.enabled = true;
    config.throttling.writes.size = 1;
    // One token per ARM second: 100 ms real at scale 10, so a slow first PUT on a loaded
    // machine does not refill the bucket before the second (at ARM's 10/s it took 10 ms).
    config.throttling.writes.refill_per_sec = 1.0;
    config.clock_scale = 10.0;
    let mock = mock_with(config).await;
    let arm = Arm::new(&mock);
    arm.put(&nsg_path("a"), &json!({"location": "westeurope"}))
        .await;
    let throttled = arm
        .put(&nsg_path("a"), &json!({"location": "westeurope"}))
        .await;
    assert_eq!(throttled.status, 429);
    let ms: u64 = throttled.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms <= 100, "{ms}");
    assert_eq!(throttled.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn nrp_limits_throttle_network_writes_past_the_window_limit_but_not_other_providers() {
    let mut config = fast_config();
    config.throttling.enabled = true;
    config.throttling.nrp.enabled = true;
    config.throttling.nrp.writes = 2;
    config.throttling.nrp.reads = 2;
    let mock = mock_with(config).await;
    let arm = Arm::new(&mock);
    for name in ["a", "b"] {
        let put = arm
            .put(&nsg_path(name), &json!({"location": "westeurope"}))
            .await;
        assert_eq!(put.status, 201, "write {name} is within NRP's limit");
    }
    // ARM's write bucket (200) still has tokens: the 429 is NRP's 5-minute window.
    let throttled = arm
        .put(&nsg_path("c"), &json!({"location": "westeurope"}))
        .await;
    assert_eq!(
        (throttled.status, throttled.code()),
        (429, "SubscriptionRequestsThrottled")
    );
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 200 && retry <= 300, "retry-after {retry}");
    assert!(
        arm.get(&nsg_path("c")).await.status == 404,
        "nothing was written"
    );
    // Microsoft.Web requests are not Microsoft.Network's to count.
    let web = |path: String| format!("{}{path}?api-version=2016-09-01", arm.base);
    for _ in 0..3 {
        let list = arm
            .send(arm.http.get(web(format!(
                "/subscriptions/{SUB}/providers/Microsoft.Web/hostingEnvironments"
            ))))
            .await;
        assert_eq!(list.status, 200);
    }
}

fn fault(method: &str, path: &str, action: FaultAction) -> FaultSpec {
    FaultSpec {
        method: Some(method.into()),
        path: Some(path.into()),
        count: 1,
        action,
    }
}

#[tokio::test]
async fn injected_faults_fail_the_next_matching_requests() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    for (status, code) in [
        (429, "SubscriptionRequestsThrottled"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (409, "AnotherOperationInProgress"),
        (412, "PreconditionFailed"),
    ] {
        mock.state.inject_fault(fault(
            "GET",
            "*/networkSecurityGroups/sql-nsg",
            FaultAction::Error {
                status,
                code: None,
                message: None,
                retry_after: None,
            },
        ));
        let answer = arm.get(&nsg_path("sql-nsg")).await;
        assert_eq!((answer.status, answer.code()), (status, code));
        if status == 429 || status == 503 {
            assert!(answer.header("retry-after").is_some());
        }
        assert_eq!(
            arm.get(&nsg_path("sql-nsg")).await.status,
            200,
            "a fault is used up"
        );
    }

    // Latency.
    mock.state
        .inject_fault(fault("GET", "sql-nsg", FaultAction::Latency { ms: 300 }));
    let started = std::time::Instant::now();
    assert_eq!(arm.get(&nsg_path("sql-nsg")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Connection reset: the client sees a transport error, not a response.
    mock.state
        .inject_fault(fault("GET", "sql-nsg", FaultAction::Reset));
    let reset = arm
        .http
        .get(arm.url(&nsg_path("sql-nsg")))
        .bearer_auth("t")
        .send()
        .await;
    assert!(
        reset.is_err(),
        "expected a dropped connection, got {reset:?}"
    );
    assert_eq!(arm.get(&nsg_path("sql-nsg")).await.status, 200);

    // A failed LRO rolls the write back and leaves the resource Failed.
    let before = arm.get(&nsg_path("sql-nsg")).await.body;
    mock.state.inject_fault(fault(
        "PUT",
        "sql-nsg",
        FaultAction::LroFailed {
            code: "InternalServerError".into(),
            message: "boom".into(),
            keep_write: false,
        },
    ));
    let put = arm
        .put(
            &nsg_path("sql-nsg"),
            &json!({"location": "westeurope", "properties": {"securityRules": []}}),
        )
        .await;
    assert_eq!(put.status, 200);
    let status = arm.wait(&put).await;
    assert_eq!(status["status"], "Failed");
    assert_eq!(status["error"]["code"], "InternalServerError");
    let after = arm.get(&nsg_path("sql-nsg")).await.body;
    assert_eq!(after["properties"]["provisioningState"], "Failed");
    let props = |body: &serde_json::Value| {
        body["properties"]["securityRules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["properties"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(props(&after), props(&before));
    assert_ne!(after["etag"], before["etag"]);

    // The admin API arms, lists and clears faults too.
    let admin = reqwest::Client::new();
    let token = mock.state.admin_token().to_owned();
    let added = admin
        .post(format!("{}/_admin/faults", mock.base_url))
        .header(mock_arm::ADMIN_TOKEN_HEADER, &token)
        .json(&json!({"method": "GET", "path": "routeTables", "count": 2, "kind": "error", "status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let listed: serde_json::Value = admin
        .get(format!("{}/_admin/faults", mock.base_url))
        .header(mock_arm::ADMIN_TOKEN_HEADER, &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["faults"][0]["remaining"], 2);
    assert_eq!(arm.get(&rt_path("ase-one-rt")).await.status, 500);
    admin
        .delete(format!("{}/_admin/faults", mock.base_url))
        .header(mock_arm::ADMIN_TOKEN_HEADER, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(arm.get(&rt_path("ase-one-rt")).await.status, 200);
    assert!(mock.state.stats().faults_injected >= 7);
}

#[tokio::test]
async fn history_records_every_version_and_foreign_writes() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    let id = nsg_path("sql-nsg");
    arm.put(
        &format!("{id}/securityRules/https"),
        &rule("https", 200, "443"),
    )
    .await;
    mock.state
        .put_raw(
            &format!("{id}/securityRules/https"),
            json!({"properties": rule("x", 201, "8443")["properties"]}),
        )
        .unwrap();
    let versions = mock.state.history(&id.to_uppercase());
    assert_eq!(versions.len(), 3);
    let ports: Vec<_> = versions
        .iter()
        .map(|v| {
            v["properties"]["securityRules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "https")
                .map(|r| r["properties"]["destinationPortRange"].clone())
        })
        .collect();
    assert_eq!(ports, vec![None, Some(json!("443")), Some(json!("8443"))]);
    let rule_history = mock.state.history(&format!("{id}/securityRules/https"));
    assert_eq!(rule_history.len(), 2);
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{}/_admin/{path}", mock.base_url))
            .header(mock_arm::ADMIN_TOKEN_HEADER, mock.state.admin_token())
            .send()
    };
    let admin: serde_json::Value = get(format!("history?id={id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["versions"].as_array().unwrap().len(), 3);
    assert!(mock.state.get_resource(&id).is_some());
    let stats: serde_json::Value = get("stats".into()).await.unwrap().json().await.unwrap();
    assert_eq!(stats["byMethod"]["PUT"], 1);
    client
        .post(format!("{}/_admin/reset", mock.base_url))
        .header(mock_arm::ADMIN_TOKEN_HEADER, mock.state.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(mock.state.stats().total, 0);
    let state: serde_json::Value = get("state".into()).await.unwrap().json().await.unwrap();
    assert!(state["resources"].as_array().unwrap().len() >= 6);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let options = || ServeOptions {
        state_file: Some(state_file.clone()),
        ..ServeOptions::default()
    };
    let first = mock_arm::start(MockState::new(fast_config(), seed()).unwrap(), options())
        .await
        .unwrap();
    let arm = Arm::new(&first);
    assert_eq!(
        arm.put(&nsg_path("persisted"), &json!({"location": "westeurope"}))
            .await
            .status,
        201
    );
    first.shutdown().await;
    assert!(state_file.exists());

    let second = mock_arm::start(
        MockState::new(Config::default(), Seed::default()).unwrap(),
        options(),
    )
    .await
    .unwrap();
    let arm = Arm::new(&second);
    let got = arm.get(&nsg_path("persisted")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(arm.get(&nsg_path("sql-nsg")).await.status, 200);
}

#[tokio::test]
async fn tls_serves_with_the_generated_ca() {
    let state = MockState::new(fast_config(), seed()).unwrap();
    let mock = mock_arm::start(
        state,
        ServeOptions {
            tls: true,
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(mock.base_url.starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(mock.ca_cert_pem.as_ref().unwrap().as_bytes()).unwrap();
    assert!(mock.ca_cert_path.as_ref().unwrap().exists());
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let arm = Arm {
        base: mock.base_url.clone(),
        http,
    };
    let put = arm
        .put(&nsg_path("tls"), &json!({"location": "westeurope"}))
        .await;
    assert!(put
        .header("azure-asyncoperation")
        .unwrap()
        .starts_with("https://127.0.0.1:"));
}

#[tokio::test]
async fn a_bad_seed_is_rejected_naming_the_resource() {
    let seed = Seed::from_yaml(
        "subscriptions: [{id: s, resourceGroups: [{name: rg, location: westeurope, networkSecurityGroups: [{name: bad, securityRules: [{name: r, properties: {protocol: Tcp, sourcePortRange: '*', destinationPortRange: any, sourceAddressPrefix: '*', destinationAddressPrefix: '*', access: Allow, priority: 100, direction: Inbound}}]}]}]}]",
    )
    .unwrap();
    let err = MockState::new(Config::default(), seed)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("networkSecurityGroup rg/bad") && err.contains("SecurityRuleInvalidPortRange"),
        "{err}"
    );
}

/// Issue 13: a page in a developer's browser can send a `text/plain` POST (a CORS "simple"
/// request) to a mock on localhost; it must not arm a fault or read anything.
#[tokio::test]
async fn the_admin_api_refuses_requests_without_the_token_or_a_json_content_type() {
    let mock = mock().await;
    let client = reqwest::Client::new();
    let url = format!("{}/_admin/faults", mock.base_url);
    let fault = r#"{"kind":"error","status":500,"count":5}"#;
    let token = mock.state.admin_token().to_owned();
    assert!(!token.is_empty());

    // What a browser page can send: text/plain, no custom header.
    let plain = client
        .post(&url)
        .header("content-type", "text/plain")
        .body(fault)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    // Even with the token, text/plain (or no content type) is refused.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = client
            .post(&url)
            .header(mock_arm::ADMIN_TOKEN_HEADER, &token)
            .body(fault);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UnsupportedMediaType");
    }
    // JSON without the token, or with a wrong one.
    for token in [None, Some("wrong"), Some("")] {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(fault);
        if let Some(t) = token {
            request = request.header(mock_arm::ADMIN_TOKEN_HEADER, t);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{token:?}");
    }
    // Reads need the token too (the state holds every resource).
    let state = client
        .get(format!("{}/_admin/state", mock.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 401);
    assert!(
        mock.state.pending_faults().is_empty(),
        "a refused request armed a fault"
    );

    // The token and JSON: accepted.
    let armed = client
        .post(&url)
        .header(mock_arm::ADMIN_TOKEN_HEADER, &token)
        .header("content-type", "application/json; charset=utf-8")
        .body(fault)
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 201);
    assert_eq!(mock.state.pending_faults().len(), 1);
}

#[test]
fn the_admin_token_comes_from_the_config_or_is_random() {
    let chosen = mock_arm::Config {
        admin_token: Some("chosen".into()),
        ..mock_arm::Config::default()
    };
    let state = mock_arm::MockState::new(chosen, mock_arm::Seed::default()).unwrap();
    assert_eq!(state.admin_token(), "chosen");
    let a =
        mock_arm::MockState::new(mock_arm::Config::default(), mock_arm::Seed::default()).unwrap();
    let b =
        mock_arm::MockState::new(mock_arm::Config::default(), mock_arm::Seed::default()).unwrap();
    assert!(a.admin_token().len() >= 32);
    assert_ne!(a.admin_token(), b.admin_token());
    let empty = mock_arm::Config {
        admin_token: Some(" ".into()),
        ..mock_arm::Config::default()
    };
    let err = mock_arm::MockState::new(empty, mock_arm::Seed::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("adminToken"), "{err}");
}
