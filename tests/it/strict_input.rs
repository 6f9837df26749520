//! Strict input (issue 12, defects 2-7): no typo, host bit, duplicate or odd file may
//! change what asenet writes. Each test states the defect it guards against; each fails on
//! the code before the fix (the loader skipped unknown fields and other kinds, the prefix
//! parser cleared host bits, `plan` used the first of two copies, errors had no field path,
//! the walk followed every symlink and read any file whole, ids were checked by their last
//! name only).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::load::{load_specs, parse_specs, DocumentError, LoadError, MAX_FILE_BYTES};
use asenet::validate::validate_all;

use super::ownership::{apply, entries, net, spec, start, Gen};

const SUB: &str = "00000000-0000-0000-0000-000000000001";

/// A valid spec; `{extra}` lands under `spec:`.
fn yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: asenet.io/v1alpha1\nkind: AseConnectivity\nmetadata: {{name: {name}, namespace: network}}\nspec:\n  environment: {{version: V2, addresses: {{publicVip: 52.0.0.1}}}}\n  subnet: {{resourceId: {}}}\n  networkSecurityGroup: {{resourceId: {}}}\n{extra}",
        net("virtualNetworks/vnet/subnets/ase-0"),
        net("networkSecurityGroups/nsg-0"),
    )
}

fn parse(text: &str) -> Result<Vec<AseConnectivity>, LoadError> {
    parse_specs(Path::new("specs/a.yaml"), text).map(|v| v.into_iter().map(|l| l.spec).collect())
}

fn errors(text: &str) -> Vec<DocumentError> {
    parse(text).unwrap_err().documents().to_vec()
}

/// The one error of `text`, with its rendered line.
fn one_error(text: &str) -> (DocumentError, String) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    let line = e[0].to_string();
    (e[0].clone(), line)
}

/// The validation errors of one spec given as YAML.
fn invalid(text: &str) -> Vec<asenet::error::SpecError> {
    let specs = parse(text).unwrap();
    let (valid, errors) = validate_all(&specs);
    assert!(valid.is_empty(), "{valid:?}");
    errors
}

// ---- Defect 2: unknown and misspelt fields, apiVersion and kind.

#[test]
fn a_misspelt_field_is_an_error_naming_file_document_spec_path_value_and_the_field_meant() {
    for (extra, path, meant) in [
        ("  Mode: Plan\n", "spec.Mode", "mode"),
        (
            "  outbound:\n    forcedTunnelling: {advertisedPrefixes: [0.0.0.0/0]}\n",
            "spec.outbound.forcedTunnelling",
            "forcedTunneling",
        ),
        (
            "  backends:\n    - {name: sql, address: 10.0.9.4, ports: ['1433'], networkSecurityGroup: {resourceId: /x, priority: {from: 100, to: 200}}}\n",
            "spec.backends[0].networkSecurityGroup.priority",
            "priorities",
        ),
        (
            "  inbound:\n    - {name: web, service: Http, from: [{cidrs: 10.0.0.0/8}]}\n",
            "spec.inbound[0].from[0].cidrs",
            "cidr",
        ),
    ] {
        let (e, line) = one_error(&yaml("ase-0", extra));
        assert_eq!(e.path, PathBuf::from("specs/a.yaml"));
        assert_eq!(e.index, 0);
        assert_eq!(e.spec.as_ref().map(|s| s.to_string()).as_deref(), Some("network/ase-0"));
        assert_eq!(e.field, path, "{line}");
        assert!(line.contains(&format!("did you mean `{meant}`?")), "{line}");
        assert!(!e.value.is_empty(), "{line}");
    }
    // In metadata too.
    let text =
        yaml("ase-0", "").replace("namespace: network}", "namespace: network, lables: {a: b}}");
    let (e, line) = one_error(&text);
    assert_eq!(e.field, "metadata.lables");
    assert!(line.contains("did you mean `labels`?"), "{line}");
}

#[test]
fn a_wrong_or_miscased_api_version_or_kind_is_an_error_with_the_right_spelling() {
    for (from, to, field, hint) in [
        (
            "apiVersion: asenet.io/v1alpha1",
            "apiVersion: example.com/v1",
            "apiVersion",
            "asenet.io/v1alpha1",
        ),
        (
            "apiVersion: asenet.io/v1alpha1",
            "apiVersion: Asenet.io/v1alpha1",
            "apiVersion",
            "did you mean `asenet.io/v1alpha1`?",
        ),
        (
            "kind: AseConnectivity",
            "kind: Aseconnectivity",
            "kind",
            "did you mean `AseConnectivity`?",
        ),
        (
            "kind: AseConnectivity",
            "Kind: AseConnectivity",
            "Kind",
            "did you mean `kind`?",
        ),
        (
            "kind: AseConnectivity",
            "kind: ConfigMap",
            "kind",
            "only AseConnectivity documents",
        ),
    ] {
        let text = yaml("ase-0", "").replace(from, to);
        let (e, line) = one_error(&text);
        assert_eq!(e.field, field, "{line}");
        assert!(line.contains(hint), "{to}: {line}");
    }
}

#[test]
fn a_document_of_another_kind_in_a_directory_is_an_error_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), yaml("ase-0", "")).unwrap();
    let miscased = yaml("ase-1", "").replace("kind: AseConnectivity", "kind: Aseconnectivity");
    std::fs::write(dir.path().join("b.yaml"), format!("---\n{miscased}")).unwrap();
    let e = load_specs(&[dir.path().to_path_buf()]).unwrap_err();
    let d = e.documents();
    assert_eq!(d.len(), 1, "{e}");
    assert_eq!(d[0].path, dir.path().join("b.yaml"));
    assert_eq!(d[0].field, "kind");
    assert_eq!(d[0].spec.as_ref().unwrap().to_string(), "network/ase-1");
}

#[test]
fn namespaces_and_asenet_snapshot_files_next_to_specs_are_the_only_documents_skipped() {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: network}}\n---\n{}---\nvirtualNetworks: []\nsubnets: []\n",
        yaml("ase-0", "")
    );
    assert_eq!(parse(&text).unwrap().len(), 1);
    // A kind-less document that is not a snapshot is an error.
    let e = errors("metadata: {name: x}\nspec: {}\n");
    assert_eq!(e[0].field, "kind");
}

// ---- Defect 3: host bits and `/0`.

#[test]
fn a_prefix_with_host_bits_is_an_error_naming_the_network_it_would_mean() {
    let e = invalid(&yaml(
        "ase-0",
        "  topology: {extraPrefixes: [10.0.0.5/8]}\n  inbound:\n    - {name: web, service: Http, from: [{cidr: 203.0.113.7/0}]}\n  backends:\n    - {name: sql, address: 10.0.2.4/0, ports: ['1433'], networkSecurityGroup: {resourceId: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/sql-nsg}}\n  routeTable: {resourceId: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/routeTables/rt-0}\n  outbound:\n    forcedTunneling: {advertisedPrefixes: [1.2.3.4/0]}\n",
    ));
    let by_field: Vec<(&str, &str)> = e
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    for (field, value, network) in [
        ("spec.topology.extraPrefixes[0]", "10.0.0.5/8", "10.0.0.0/8"),
        // An inbound source is pointed at the single address or `{any: true}`.
        (
            "spec.inbound[0].from[0].cidr",
            "203.0.113.7/0",
            "{any: true}",
        ),
        ("spec.backends[0].address", "10.0.2.4/0", "0.0.0.0/0"),
        (
            "spec.outbound.forcedTunneling.advertisedPrefixes[0]",
            "1.2.3.4/0",
            "0.0.0.0/0",
        ),
    ] {
        let m = by_field
            .iter()
            .find(|(f, _)| *f == field)
            .unwrap_or_else(|| panic!("no error for {field}: {by_field:?}"))
            .1;
        assert!(
            m.contains(&format!("`{value}`")) && m.contains(&format!("`{network}`")),
            "{m}"
        );
    }
}

#[test]
fn the_whole_internet_as_an_inbound_source_needs_any_true() {
    for src in ["{cidr: 0.0.0.0/0}", "{serviceTag: '*'}"] {
        let e = invalid(&yaml(
            "ase-0",
            &format!("  inbound:\n    - {{name: web, service: Http, from: [{src}]}}\n"),
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("{any: true}"), "{}", e[0]);
    }
    let specs = parse(&yaml(
        "ase-0",
        "  inbound:\n    - {name: web, service: Http, from: [{any: true}]}\n",
    ))
    .unwrap();
    let (valid, errors) = validate_all(&specs);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        valid[0].inbound[0].sources,
        vec![asenet::validate::Source::Prefix(Default::default())]
    );
}

// ---- Defect 4: duplicate spec names, one validation path.

#[tokio::test]
async fn a_spec_given_twice_is_invalid_for_plan_and_apply_and_nothing_of_it_is_written() {
    let g = Gen {
        nsg: 0,
        route: Some((0, false)),
        sources: vec![1],
        backend: false,
        peer: None,
    };
    let first = spec(0, &g);
    let mut second = first.clone();
    second.spec.inbound[0].name = "other".into();
    let specs = vec![first, second];
    let (mock, p) = start(&specs).await;
    let before = entries(&mock);
    let plan = apply(&p, &specs).await;
    assert!(!plan.errors.is_empty());
    assert!(
        plan.errors
            .iter()
            .all(|e| e.message.contains("given 2 times")),
        "{:?}",
        plan.errors
    );
    assert!(!plan.has_changes(), "{plan:#?}");
    assert_eq!(entries(&mock), before);
    // `resolve` and `validate_all` agree: neither copy is used.
    let (valid, errors) = validate_all(&specs);
    assert!(valid.is_empty());
    assert_eq!(errors.len(), 2);
}

// ---- Defect 5: deserialisation errors name file, document, spec, field path and value.

#[test]
fn a_type_error_names_the_field_path_and_the_value() {
    for (extra, field, value) in [
        (
            "  backends:\n    - {name: sql, address: 10.0.9.4, ports: [{a: 1}], networkSecurityGroup: {resourceId: /x}}\n",
            "spec.backends[0].ports[0]",
            "{\"a\":1}",
        ),
        (
            "  networkSecurityGroup2: {}\n  mode: [Plan]\n",
            "spec.mode",
            "[\"Plan\"]",
        ),
        ("  inbound:\n    - {name: web, service: Http, from: [{environmentRef: {name: 5}}]}\n", "spec.inbound[0].from[0].environmentRef.name", "5"),
    ] {
        let e = errors(&yaml("ase-0", extra));
        let hit = e.iter().find(|d| d.field == field).unwrap_or_else(|| panic!("{field}: {e:#?}"));
        assert_eq!(hit.value, value);
        assert_eq!(hit.spec.as_ref().unwrap().to_string(), "network/ase-0");
        let line = hit.to_string();
        assert!(line.starts_with("`specs/a.yaml` document 0 (spec network/ase-0): "), "{line}");
    }
}

#[test]
fn an_enum_given_as_a_number_or_a_list_lists_the_names_it_accepts() {
    let (e, line) = one_error(&yaml("ase-0", "").replace("version: V2", "version: 2"));
    assert_eq!(e.field, "spec.environment.version");
    assert_eq!(e.value, "2");
    assert!(
        line.ends_with("expected one of the names `V1`, `V2`, `V3`"),
        "{line}"
    );
}

#[test]
fn a_missing_field_names_its_full_path() {
    let text = yaml("ase-0", "").replace(
        &format!(
            "subnet: {{resourceId: {}}}",
            net("virtualNetworks/vnet/subnets/ase-0")
        ),
        "subnet: {}",
    );
    let (e, line) = one_error(&text);
    assert_eq!(e.field, "spec.subnet.resourceId", "{line}");
    assert!(line.contains("required field is missing"), "{line}");
}

// ---- Defect 6: the file walk.

/// Runs `f` on another thread and fails (instead of hanging) when it takes over 20 s.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the loader did not return within 20 s")
}

#[test]
fn symlinks_to_the_directory_itself_are_walked_once_and_a_linked_file_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), yaml("ase-0", "")).unwrap();
    for l in ["l1", "l2", "l3"] {
        std::os::unix::fs::symlink(".", dir.path().join(l)).unwrap();
    }
    std::os::unix::fs::symlink("a.yaml", dir.path().join("again.yaml")).unwrap();
    let path = dir.path().to_path_buf();
    let specs = within(move || load_specs(&[path])).unwrap();
    assert_eq!(specs.len(), 1);
}

#[test]
fn a_fifo_or_a_device_named_yaml_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), yaml("ase-0", "")).unwrap();
    let fifo = dir.path().join("f.yaml");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let path = dir.path().to_path_buf();
    let e = within(move || load_specs(&[path])).unwrap_err().to_string();
    assert!(
        e.contains("f.yaml") && e.contains("a FIFO, not a regular file"),
        "{e}"
    );
    std::fs::remove_file(&fifo).unwrap();

    std::os::unix::fs::symlink("/dev/zero", dir.path().join("z.yaml")).unwrap();
    let path = dir.path().to_path_buf();
    let e = within(move || load_specs(&[path])).unwrap_err().to_string();
    assert!(
        e.contains("z.yaml") && e.contains("a character device"),
        "{e}"
    );
    // Named directly, too.
    let e = within(|| load_specs(&[PathBuf::from("/dev/zero")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn a_file_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // Sparse: the size says 8 MiB + 1 without writing it, so only the size check can
    // refuse it this fast.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let e = within(move || load_specs(&[big])).unwrap_err();
    assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&(MAX_FILE_BYTES + 1).to_string()) && text.contains("8388608"),
        "{text}"
    );
}

// ---- Defect 7: every segment of a resource id.

#[test]
fn every_segment_of_a_resource_id_is_checked_not_only_the_last_name() {
    let good = net("networkSecurityGroups/nsg-0");
    for bad in [
        good.replace(SUB, ".."),
        good.replace(SUB, "."),
        good.replace(SUB, "not-a-guid"),
        good.replace("resourceGroups/network", "resourceGroups/net%2Fwork"),
        good.replace("resourceGroups/network", "resourceGroups/net work"),
        good.replace("resourceGroups/network", "resourceGroups/net?work"),
        good.replace("resourceGroups/network", "resourceGroups/.."),
    ] {
        let text = yaml("ase-0", "").replace(&good, &bad);
        let e = invalid(&text);
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(e[0].field, "spec.networkSecurityGroup.resourceId");
        assert_eq!(e[0].value, bad);
    }
}

// ---- The binary: a typo exits 1 with the error, and nothing is planned.

#[test]
fn the_cli_refuses_a_misspelt_mode_with_exit_1_and_the_field_meant() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, yaml("ase-0", "  Mode: Plan\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args(["resolve", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.Mode = Plan: unknown field `Mode`; did you mean `mode`?"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

// ---- Defect 8: an error's causes are printed once.

#[tokio::test]
async fn the_cli_prints_each_cause_of_a_failed_write_once() {
    let g = Gen {
        nsg: 0,
        route: None,
        sources: vec![1],
        backend: false,
        peer: None,
    };
    let specs = vec![spec(0, &g)];
    let (mock, _) = start(&specs).await;
    // The NSG's PUT is refused (a 400 is not retried, so the test is fast).
    mock.state.inject_fault(mock_arm::FaultSpec {
        method: Some("PUT".into()),
        path: Some("networkSecurityGroups/nsg-0".into()),
        count: 1,
        action: mock_arm::FaultAction::Error {
            status: 400,
            code: Some("InvalidRequestFormat".into()),
            message: Some("injected persistent fault".into()),
            retry_after: None,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, serde_yaml::to_string(&specs[0]).unwrap()).unwrap();
    let url = mock.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
            .args(["apply", "--auto-approve", "-f"])
            .arg(&file)
            .args(["--endpoint", &url, "--credential", "static", "--token", "t"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        line.matches("injected persistent fault").count(),
        1,
        "{line}"
    );
    assert_eq!(line.matches("HTTP 400").count(), 1, "{line}");
}
