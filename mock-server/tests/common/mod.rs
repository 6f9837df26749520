//! Shared helpers for the in-process tests: start the seeded mock on port 0 and talk ARM.
#![allow(dead_code)]

use std::time::Duration;

use mock_arm::{start, Config, MockState, RunningMock, Seed, ServeOptions};
use serde_json::Value;

pub const SUB: &str = "00000000-0000-0000-0000-000000000001";
pub const API: &str = "api-version=2024-03-01";

pub fn seed() -> Seed {
    Seed::from_yaml(include_str!("../fixtures/seed.yaml")).expect("fixture seed parses")
}

/// A fast configuration: throttling off, 50 ms operations polled every 10 ms.
pub fn fast_config() -> Config {
    let mut config = Config::default();
    config.throttling.enabled = false;
    config.lro_delay = Duration::from_millis(50);
    config.lro_retry_after = Duration::from_millis(10);
    config
}

pub async fn mock_with(config: Config) -> RunningMock {
    let state = MockState::new(config, seed()).expect("mock state");
    start(state, ServeOptions::default())
        .await
        .expect("mock starts")
}

pub async fn mock() -> RunningMock {
    mock_with(fast_config()).await
}

pub fn nsg_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/{name}")
}

pub fn vnet_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/virtualNetworks/{name}")
}

pub fn rt_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/routeTables/{name}")
}

/// A small ARM client: bearer token, api-version appended.
pub struct Arm {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl Arm {
    pub fn new(mock: &RunningMock) -> Self {
        Self {
            base: mock.base_url.clone(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            return path.to_owned();
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}{API}", self.base)
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Answer {
        let response = builder
            .bearer_auth("token")
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Poll an `Azure-AsyncOperation` URL until it is terminal.
    pub async fn wait(&self, answer: &Answer) -> Value {
        let url = answer
            .header("azure-asyncoperation")
            .expect("async operation header")
            .to_owned();
        for _ in 0..200 {
            let status = self.get(&url).await;
            assert_eq!(status.status, 200);
            if status.body["status"] != "InProgress" {
                return status.body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("operation did not finish");
    }
}

pub fn rule(name: &str, priority: u32, port: &str) -> Value {
    serde_json::json!({
        "name": name,
        "properties": {
            "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": port,
            "sourceAddressPrefix": "10.1.0.0/16", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": priority, "direction": "Inbound"
        }
    })
}
