//! A bounded fuzz target for the loader and the validator (issue 12), run by `cargo test`
//! and so by CI: inputs are the checked-in corpus (`tests/fuzz/corpus/`) with random byte
//! and token mutations, and YAML documents built from the spec's own field names with
//! random values. For every input: no panic, and either an error that names the file, or
//! specs each of which is valid or has an error, with no valid prefix holding host bits.
//!
//! Cases per property: 256 (set `ASENET_FUZZ_CASES` for a longer run, e.g. 20000).
//! A failing case is written to `proptest-regressions/` by proptest; add the shrunk input
//! to the corpus when it is fixed.

use std::collections::BTreeSet;
use std::path::Path;

use asenet::load::parse_specs;
use asenet::model::SpecKey;
use asenet::validate::validate_all;
use proptest::prelude::*;
use proptest::sample::Index;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn cases() -> u32 {
    std::env::var("ASENET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Loader, validator and resolver over one input; checks what must hold of any input.
fn run(bytes: &[u8]) {
    let file = Path::new("fuzz/input.yaml");
    // Files are read as UTF-8 (`read_capped` refuses anything else); mutations that break
    // it are fed lossily so that the parser still sees them.
    let text = String::from_utf8_lossy(bytes);
    match parse_specs(file, &text) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            for d in e.documents() {
                assert_eq!(d.path, file);
                assert!(!d.message.is_empty());
            }
        }
        Ok(loaded) => {
            let specs: Vec<_> = loaded.into_iter().map(|l| l.spec).collect();
            let (valid, errors) = validate_all(&specs);
            let valid_keys: BTreeSet<&SpecKey> = valid.iter().map(|v| &v.key).collect();
            let error_keys: BTreeSet<&SpecKey> = errors.iter().map(|e| &e.spec).collect();
            for s in &specs {
                let k = asenet::pipeline::spec_key(s);
                assert!(
                    valid_keys.contains(&k) != error_keys.contains(&k),
                    "spec {k} is neither valid nor in error, or both"
                );
            }
            for v in &valid {
                let prefixes = v
                    .extra_prefixes
                    .iter()
                    .chain(v.backends.iter().map(|b| &b.address))
                    .chain(v.forced_tunneling.iter().flat_map(|f| &f.advertised));
                for p in prefixes {
                    assert_eq!(*p, p.trunc(), "{} kept host bits in {p}", v.key);
                }
            }
            let _ = asenet::resolver::resolve(&valid, &asenet::snapshot::Snapshot::default());
        }
    }
}

/// Tokens that break YAML structure or probe a rule of the loader or validator.
const TOKENS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.5/8",
    "1.2.3.4/33",
    "..",
    "%2F",
    "?x=1",
    " ",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!Plan ",
    "!!map ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "\n---\n",
    "\n...\n",
    "\t",
    "~",
    "null",
    "-1",
    "99999999999999999999",
    "\"",
    "'",
    "#",
    "AseConnectivity",
    "asenet.io/v1alpha1",
    "Mode",
    "any: true",
    "cidr: ",
    "\u{feff}",
    "é",
    "\0",
    "\r\n",
    "priorities: {from: 5000, to: 1}",
    "ports: [\"80-70\"]",
    "*",
    "|\n",
    ">-\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Index),
    Delete(Index, u8),
    Duplicate(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
            }
            Mutation::Insert(i, t) => {
                let at = i.index(len + 1).min(bytes.len());
                let token = TOKENS[t.index(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + *n as usize).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Duplicate(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + *n as usize).min(bytes.len());
                let piece: Vec<u8> = bytes[at..end].to_vec();
                bytes.splice(end..end, piece);
            }
        }
    }
    bytes
}

/// Field names of the spec (and a few misspellings), for structured inputs.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "spec",
    "mode",
    "Mode",
    "deletionPolicy",
    "environment",
    "version",
    "resourceId",
    "addresses",
    "publicVip",
    "outbound",
    "internalIp",
    "subnet",
    "networkSecurityGroup",
    "priorities",
    "priority",
    "from",
    "to",
    "routeTable",
    "topology",
    "extraPrefixes",
    "inbound",
    "service",
    "ports",
    "protocol",
    "cidr",
    "serviceTag",
    "environmentRef",
    "any",
    "backends",
    "address",
    "forcedTunneling",
    "forcedTunnelling",
    "advertisedPrefixes",
    "strategy",
    "requiredTags",
    "status",
];

const SCALARS: &[&str] = &[
    "asenet.io/v1alpha1", "AseConnectivity", "V2", "V3", "Plan", "Apply", "Http", "ase-one",
    "network", "10.0.0.0/8", "10.0.0.5/8", "0.0.0.0/0", "*", "52.0.0.1", "1433", "80-70",
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/n",
    "/subscriptions/../resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/n",
    "Internet", "ServiceTag", "", "true", "100", "4097",
];

fn value() -> impl Strategy<Value = serde_yaml::Value> {
    let leaf = prop_oneof![
        (0..SCALARS.len()).prop_map(|i| serde_yaml::Value::String(SCALARS[i].into())),
        any::<i64>().prop_map(|n| serde_yaml::Value::Number(n.into())),
        any::<bool>().prop_map(serde_yaml::Value::Bool),
        Just(serde_yaml::Value::Null),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_yaml::Value::Sequence),
            proptest::collection::vec((0..KEYS.len(), inner), 0..6).prop_map(|kv| {
                serde_yaml::Value::Mapping(
                    kv.into_iter()
                        .map(|(k, v)| (serde_yaml::Value::String(KEYS[k].into()), v))
                        .collect(),
                )
            }),
        ]
    })
}

#[test]
fn every_corpus_input_loads_or_fails_with_an_error_without_panicking() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is checked in");
    for bytes in &corpus {
        run(bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_corpus_inputs_never_panic_the_loader_or_the_validator(
        pick in any::<Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let corpus = corpus();
        let base = corpus[pick.index(corpus.len())].clone();
        run(&mutate(base, &mutations));
    }

    #[test]
    fn documents_built_from_spec_field_names_never_panic_the_loader_or_the_validator(
        doc in value(),
        spec_doc in proptest::collection::vec((0..KEYS.len(), value()), 0..8),
    ) {
        // A mapping with the right apiVersion and kind, so the spec deserialiser is reached.
        let mut m = serde_yaml::Mapping::new();
        m.insert("apiVersion".into(), "asenet.io/v1alpha1".into());
        m.insert("kind".into(), "AseConnectivity".into());
        for (k, v) in spec_doc {
            m.insert(KEYS[k].into(), v);
        }
        for d in [doc, serde_yaml::Value::Mapping(m)] {
            let text = serde_yaml::to_string(&d).unwrap();
            run(text.as_bytes());
        }
    }
}
