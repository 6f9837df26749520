//! No function in `src/` is longer than [`MAX_LINES`] (issue 15): a long function hides the
//! steps of its algorithm. Every `src/**/*.rs` file is parsed with `syn` and every `fn`
//! with a body (free functions, methods, trait defaults, functions nested in other
//! functions or in test modules) is measured from its `fn` keyword to its closing brace.

use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::rust_files;

use syn::visit::Visit;

/// The longest a function may be, in lines from `fn` to its closing brace.
const MAX_LINES: usize = 120;

/// One function: its path inside the file (`Type::method`, `tests::name`) and its length.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    name: String,
    lines: usize,
}

#[derive(Default)]
struct Lengths {
    scope: Vec<String>,
    found: Vec<Measured>,
}

impl Lengths {
    /// Records a function with a body, from its `fn` keyword to its closing brace.
    fn record(&mut self, sig: &syn::Signature, body: Option<&syn::Block>) {
        if let Some(block) = body {
            let first = sig.fn_token.span.start().line;
            let last = block.brace_token.span.close().end().line;
            let mut path = self.scope.clone();
            path.push(sig.ident.to_string());
            self.found.push(Measured {
                name: path.join("::"),
                lines: last + 1 - first,
            });
        }
    }

    /// Visits what is inside an item with its name added to the scope.
    fn within(&mut self, name: String, visit: impl FnOnce(&mut Self)) {
        self.scope.push(name);
        visit(self);
        self.scope.pop();
    }
}

/// The name an `impl` block's methods are shown under: the type's last segment.
fn self_type(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        _ => "impl".to_string(),
    }
}

impl<'ast> Visit<'ast> for Lengths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.within(m.ident.to_string(), |v| syn::visit::visit_item_mod(v, m));
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        self.within(self_type(&i.self_ty), |v| syn::visit::visit_item_impl(v, i));
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.within(t.ident.to_string(), |v| syn::visit::visit_item_trait(v, t));
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.record(&f.sig, Some(&f.block));
        self.within(f.sig.ident.to_string(), |v| syn::visit::visit_item_fn(v, f));
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.record(&f.sig, Some(&f.block));
        self.within(f.sig.ident.to_string(), |v| {
            syn::visit::visit_impl_item_fn(v, f)
        });
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        self.record(&f.sig, f.default.as_ref());
        self.within(f.sig.ident.to_string(), |v| {
            syn::visit::visit_trait_item_fn(v, f)
        });
    }
}

/// Every function of one source text with its length, in source order.
fn measure(text: &str) -> Result<Vec<Measured>, syn::Error> {
    let file = syn::parse_file(text)?;
    let mut v = Lengths::default();
    v.visit_file(&file);
    Ok(v.found)
}

/// The functions over the limit in `src/`, keyed by (file relative to `src/`, function).
fn offenders() -> BTreeMap<(String, String), usize> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut list = Vec::new();
    rust_files(&src, &mut list);
    assert!(
        list.len() > 20,
        "the scan of {} found {list:?}",
        src.display()
    );
    let mut out = BTreeMap::new();
    for f in list {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        let measured = measure(&text).unwrap_or_else(|e| panic!("cannot parse src/{rel}: {e}"));
        for m in measured.into_iter().filter(|m| m.lines > MAX_LINES) {
            out.insert((rel.clone(), m.name), m.lines);
        }
    }
    out
}

#[test]
fn no_function_in_src_is_longer_than_the_limit() {
    let found = offenders();
    let too_long: Vec<String> = found
        .iter()
        .map(|((file, name), lines)| {
            format!("src/{file}: fn {name} is {lines} lines (limit {MAX_LINES})")
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "functions to split into named steps:\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_checker_measures_methods_nested_and_test_functions_from_fn_to_brace() {
    let text = "\
struct S;
impl S {
    /// doc
    #[inline]
    fn method(&self) {
        let _ = 1;
    }
}
fn outer() {
    fn inner() {}
    let _ = \"}}}\";
}
trait T {
    fn sig_only(&self);
    fn default_body(&self) {
        let _ = 2;
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn a_test() {
        // }
    }
}
";
    let got = measure(text).unwrap();
    let want = [
        ("S::method", 3),
        ("outer", 4),
        ("outer::inner", 1),
        ("T::default_body", 3),
        ("tests::a_test", 3),
    ];
    let want: Vec<Measured> = want
        .iter()
        .map(|(name, lines)| Measured {
            name: name.to_string(),
            lines: *lines,
        })
        .collect();
    assert_eq!(got, want);
}
