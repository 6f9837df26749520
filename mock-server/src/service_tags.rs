//! The Service Tag Discovery API (`ServiceTags_List`, docs/domain.md 5.1):
//! `GET /subscriptions/{s}/providers/Microsoft.Network/locations/{location}/serviceTags`.
//!
//! The tags are held in the JSON schema of Azure's weekly download (`changeNumber`, `cloud`,
//! `values[].properties.{changeNumber, region, systemService, addressPrefixes,
//! networkFeatures}`): by default the fixture `fixtures/service_tags.json`, or the seed's
//! `serviceTags` document. The API renders them the way ARM does: change numbers as
//! strings, `serviceTagChangeNumber` beside `properties`, `type`
//! `Microsoft.Network/serviceTags`. The location only selects the reference version in
//! Azure, not a region filter (5.1), so every location answers the same document.
//!
//! `POST /_admin/service-tags` publishes a new version of one tag (new prefixes, the tag's
//! and the file's `changeNumber` incremented), as Azure's weekly publication does.

use serde::Deserialize;
use serde_json::{json, Value};

/// The fixture served when the seed names none (Azure's download format, trimmed to the
/// tags asenet uses; `AppServiceManagement` holds the scenario's 12 management prefixes).
pub const SERVICE_TAGS_FIXTURE: &str = include_str!("../fixtures/service_tags.json");

/// The published service tags, in Azure's download format.
#[derive(Debug, Clone)]
pub struct ServiceTagsDoc {
    doc: Value,
}

/// A new version of one tag (`POST /_admin/service-tags`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishTag {
    pub name: String,
    pub address_prefixes: Vec<String>,
    /// Left as they were when absent (a new tag gets `API, NSG`).
    #[serde(default)]
    pub network_features: Option<Vec<String>>,
}

fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

impl ServiceTagsDoc {
    /// The built-in fixture.
    pub fn fixture() -> Self {
        // The fixture is part of the crate and checked by a unit test below; an unreadable
        // one degrades to no tags rather than a panic.
        Self::parse(SERVICE_TAGS_FIXTURE).unwrap_or_else(|_| ServiceTagsDoc {
            doc: json!({ "changeNumber": 0, "cloud": "Public", "values": [] }),
        })
    }

    /// A document in Azure's download format; `values[].name` must be set.
    pub fn from_value(doc: Value) -> Result<Self, String> {
        let values = doc
            .get("values")
            .and_then(Value::as_array)
            .ok_or("service tags: `values` must be a list (Azure's download format)")?;
        for (i, v) in values.iter().enumerate() {
            if v.get("name").and_then(Value::as_str).is_none() {
                return Err(format!("service tags: `values[{i}].name` is missing"));
            }
        }
        Ok(ServiceTagsDoc { doc })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_value(serde_json::from_str(text).map_err(|e| e.to_string())?)
    }

    /// The file-level change number.
    pub fn change_number(&self) -> u64 {
        number(&self.doc["changeNumber"])
    }

    /// The document as stored (download format).
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Replaces one tag's prefixes (creating the tag if new) and increments the tag's and
    /// the file's change numbers. Returns the new file-level change number.
    pub fn publish(&mut self, tag: &PublishTag) -> Result<u64, String> {
        if tag.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        for (i, p) in tag.address_prefixes.iter().enumerate() {
            let ok = p.parse::<ipnet::IpNet>().is_ok_and(|n| n.trunc() == n);
            if !ok {
                return Err(format!(
                    "`addressPrefixes[{i}]`: `{p}` is not a CIDR prefix without host bits"
                ));
            }
        }
        let file = self.change_number() + 1;
        self.doc["changeNumber"] = json!(file);
        let values = self.doc["values"]
            .as_array_mut()
            .ok_or("service tags: `values` must be a list")?;
        let found = values.iter_mut().find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&tag.name))
        });
        match found {
            Some(v) => {
                let props = &mut v["properties"];
                let n = number(&props["changeNumber"]) + 1;
                props["changeNumber"] = json!(n);
                props["addressPrefixes"] = json!(tag.address_prefixes);
                if let Some(f) = &tag.network_features {
                    props["networkFeatures"] = json!(f);
                }
            }
            None => values.push(json!({
                "name": tag.name,
                "id": tag.name,
                "properties": {
                    "changeNumber": 1,
                    "region": "",
                    "regionId": 0,
                    "platform": "Azure",
                    "systemService": "",
                    "addressPrefixes": tag.address_prefixes,
                    "networkFeatures": tag.network_features.clone().unwrap_or_else(|| vec!["API".into(), "NSG".into()]),
                }
            })),
        }
        Ok(file)
    }

    /// The `ServiceTags_List` answer (NET/serviceTags.json, `ServiceTagsListResult`):
    /// change numbers as strings, and no `networkFeatures` (the API's schema has none).
    pub fn render(&self, sub: &str) -> Value {
        let values: Vec<Value> = self.doc["values"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|v| {
                let p = &v["properties"];
                let n = number(&p["changeNumber"]).to_string();
                json!({
                    "name": v["name"],
                    "id": v.get("id").cloned().unwrap_or_else(|| v["name"].clone()),
                    "serviceTagChangeNumber": n,
                    "properties": {
                        "changeNumber": n,
                        "region": p.get("region").cloned().unwrap_or(json!("")),
                        "systemService": p.get("systemService").cloned().unwrap_or(json!("")),
                        "addressPrefixes": p.get("addressPrefixes").cloned().unwrap_or(json!([])),
                        "state": "GA",
                    }
                })
            })
            .collect();
        let cloud = self.doc["cloud"].as_str().unwrap_or("Public");
        json!({
            "name": cloud,
            "id": format!("/subscriptions/{sub}/providers/Microsoft.Network/serviceTags/{cloud}"),
            "type": "Microsoft.Network/serviceTags",
            "changeNumber": self.change_number().to_string(),
            "cloud": cloud,
            "values": values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_parses_and_holds_the_management_prefixes() {
        let d = ServiceTagsDoc::parse(SERVICE_TAGS_FIXTURE).unwrap();
        let r = d.render("s");
        let asm = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "AppServiceManagement")
            .unwrap();
        assert_eq!(asm["properties"]["changeNumber"], "69");
        let v4 = asm["properties"]["addressPrefixes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| !p.as_str().unwrap().contains(':'))
            .count();
        assert_eq!(v4, 12);
    }

    #[test]
    fn publishing_a_tag_increments_both_change_numbers() {
        let mut d = ServiceTagsDoc::fixture();
        let before = d.change_number();
        let n = d
            .publish(&PublishTag {
                name: "AppServiceManagement".into(),
                address_prefixes: vec!["20.0.0.0/26".into()],
                network_features: None,
            })
            .unwrap();
        assert_eq!(n, before + 1);
        let r = d.render("s");
        let asm = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "AppServiceManagement")
            .unwrap();
        assert_eq!(asm["properties"]["changeNumber"], "70");
        assert_eq!(asm["properties"]["addressPrefixes"], json!(["20.0.0.0/26"]));
        let bad = d.publish(&PublishTag {
            name: "X".into(),
            address_prefixes: vec!["20.0.0.1/26".into()],
            network_features: None,
        });
        assert!(bad.unwrap_err().contains("20.0.0.1/26"));
    }
}
