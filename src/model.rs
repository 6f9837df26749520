//! Strong types shared by every pipeline stage: Azure resource ids, priorities, port and
//! address sets, protocols, and the canonical form of an NSG security rule and of a route.
//!
//! Values are parsed once at the edge (validate, observe) and compared in canonical form
//! afterwards (docs/domain.md 2.10): `*` and `0-65535` are the same port set, `*` and
//! `0.0.0.0/0` the same address, host bits are cleared, ports are sorted and merged.
//! Nothing here does I/O or depends on kube or the Azure SDK.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing a single value. The caller adds the field path and the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{value}` is not a valid port or port range (an integer 0-65535 or `a-b` with a <= b, or `*`)")]
    PortRange { value: String },
    #[error("`{value}` is not a valid IPv4 address or CIDR prefix")]
    Prefix { value: String },
    #[error("`{value}` has host bits set: the /{len} network it would mean is `{network}`; write `{network}` if that is meant, or `{address}` for the single address")]
    HostBits {
        value: String,
        len: u8,
        network: String,
        address: String,
    },
    #[error("`{value}` is not a valid Azure resource id ({reason})")]
    ResourceId { value: String, reason: String },
    #[error("`{value}` is not a valid Azure name ({reason}; docs/domain.md 2.2)")]
    Name { value: String, reason: String },
    #[error("priority `{value}` is outside 100-4096 (docs/domain.md 2.1)")]
    Priority { value: i64 },
    #[error("`{value}` is not a known protocol (Tcp, Udp, Icmp, Esp, Ah, *)")]
    Protocol { value: String },
}

// ---------------------------------------------------------------------------------------
// Resource ids
// ---------------------------------------------------------------------------------------

/// An ARM resource id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]*`.
///
/// Comparison, ordering and hashing use the lower-cased text, because ARM compares names
/// case-insensitively (docs/domain.md 2.2); `Display` keeps the casing it was written with.
///
/// The parsed parts live behind one `Arc`: ids are cloned into every rule, flow, plan entry
/// and map key, and a clone is a reference-count increment rather than six allocations.
#[derive(Clone)]
pub struct ResourceId(std::sync::Arc<IdParts>);

struct IdParts {
    /// The id as written, then the same text lower-cased: one allocation for both (issue
    /// 14's memory: a component of 10,000 specs holds ~100,000 ids). `text` is
    /// `buf[..len]`, `key` is `buf[len..]`; ASCII lower-casing keeps the byte offsets, so
    /// every range below is valid in both.
    buf: Box<str>,
    len: u32,
    /// Byte ranges of the subscription, resource group and namespace in `text`.
    subscription: (u32, u32),
    resource_group: (u32, u32),
    namespace: (u32, u32),
}

impl IdParts {
    fn text(&self) -> &str {
        &self.buf[..self.len as usize]
    }
    fn key(&self) -> &str {
        &self.buf[self.len as usize..]
    }
}

impl ResourceId {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let err = |reason: &str| ParseError::ResourceId {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = value.trim_end_matches('/');
        // "", "subscriptions", sub, "resourceGroups", rg, "providers", ns, type, name, ...
        // The first seven parts are kept on the stack with their byte offsets; the rest
        // are the (type, name) pairs.
        let mut head: [(usize, &str); 7] = [(0, ""); 7];
        let (parts, clean) = split_id(trimmed);
        let count = parts.len();
        let mut any_empty = false;
        for (n, part) in parts.iter().enumerate() {
            if n < 7 {
                head[n] = *part;
            }
            if n > 0 && part.1.is_empty() {
                any_empty = true;
            }
        }
        if count < 9 || !head[0].1.is_empty() {
            return Err(err("expected /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}"));
        }
        if !head[1].1.eq_ignore_ascii_case("subscriptions") {
            return Err(err("must start with /subscriptions/"));
        }
        if !head[3].1.eq_ignore_ascii_case("resourceGroups") {
            return Err(err("the third segment must be resourceGroups"));
        }
        if !head[5].1.eq_ignore_ascii_case("providers") {
            return Err(err("the fifth segment must be providers"));
        }
        if any_empty {
            return Err(err("empty path segment"));
        }
        if !(count - 7).is_multiple_of(2) {
            return Err(err("type and name segments must come in pairs"));
        }
        // Request paths are built from these segments: a segment that URL normalisation or
        // an HTTP server would reinterpret (`..`, `.`, `%2F`, `?`, `#`, `\`, spaces) could
        // send a request to another resource (issue 12), so no id may hold one. The full
        // ARM naming rules are checked on user input by `check_resource_id`.
        // An id of printable ASCII other than those four (`clean`) holds none: only other
        // ids are searched part by part.
        for &(_, part) in parts.iter().skip(1) {
            if part == "." || part == ".." {
                return Err(err(&format!("`{part}` is not a name")));
            }
            if clean {
                continue;
            }
            if let Some(c) = part.chars().find(|c| {
                matches!(c, '%' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control()
            }) {
                return Err(err(&format!(
                    "segment `{part}` holds {}, which no Azure name may hold",
                    match c {
                        c if c.is_whitespace() => "a space".to_string(),
                        c if c.is_control() => "a control character".to_string(),
                        c => format!("`{c}`"),
                    }
                )));
            }
        }
        if head[4].1.len() > 90 {
            return Err(err("resource group names are at most 90 characters"));
        }
        let range = |(o, p): (usize, &str)| (o as u32, (o + p.len()) as u32);
        let mut buf = String::with_capacity(2 * trimmed.len());
        buf.push_str(trimmed);
        buf.push_str(trimmed);
        buf[trimmed.len()..].make_ascii_lowercase();
        Ok(ResourceId(std::sync::Arc::new(IdParts {
            buf: buf.into_boxed_str(),
            len: trimmed.len() as u32,
            subscription: range(head[2]),
            resource_group: range(head[4]),
            namespace: range(head[6]),
        })))
    }

    /// Builds the id of a Microsoft.Network resource.
    pub fn network(subscription: &str, resource_group: &str, segments: &[(&str, &str)]) -> Self {
        let mut text = format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network");
        for (t, n) in segments {
            text.push('/');
            text.push_str(t);
            text.push('/');
            text.push_str(n);
        }
        // The text was just built from the required shape, so parsing cannot fail unless a
        // caller passed empty names, which is a programming error surfaced loudly in tests.
        Self::parse(&text)
            .unwrap_or_else(|e| panic!("ResourceId::network built an invalid id: {e}"))
    }

    fn part(&self, (from, to): (u32, u32)) -> &str {
        &self.0.text()[from as usize..to as usize]
    }

    pub fn as_str(&self) -> &str {
        self.0.text()
    }
    /// Lower-cased form used as a map key.
    pub fn key(&self) -> &str {
        self.0.key()
    }
    pub fn subscription(&self) -> &str {
        self.part(self.0.subscription)
    }
    pub fn resource_group(&self) -> &str {
        self.part(self.0.resource_group)
    }
    pub fn namespace(&self) -> &str {
        self.part(self.0.namespace)
    }
    /// The last name, e.g. the subnet name of a subnet id.
    pub fn name(&self) -> &str {
        // `parse` refuses ids without a `(type, name)` pair after the namespace.
        self.as_str().rsplit('/').next().unwrap_or_default()
    }
    /// The full type, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn resource_type(&self) -> String {
        let mut t = self.namespace().to_string();
        for (ty, _) in self.segments() {
            t.push('/');
            t.push_str(ty);
        }
        t
    }
    /// The `(type, name)` pairs after the namespace, e.g. `("virtualNetworks", "vnet")`,
    /// `("subnets", "a")`: read from the text (`parse` checked that they come in pairs of
    /// non-empty parts).
    pub fn segments(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let after = self.0.namespace.1 as usize + 1;
        let mut parts = self.as_str()[after..].split('/');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }
    /// The id of the parent resource (a subnet's VNet), if this is a child resource.
    pub fn parent(&self) -> Option<ResourceId> {
        // A child resource: a second `(type, name)` pair.
        self.segments().nth(1)?;
        let text = self.as_str();
        let cut = text.rfind('/')?;
        let cut = text[..cut].rfind('/')?;
        ResourceId::parse(&text[..cut]).ok()
    }
    /// The lower-cased key of [`ResourceId::parent`] (a subnet's VNet), without parsing
    /// the parent: a slice of this id's own key.
    pub fn parent_key(&self) -> Option<&str> {
        // A child resource: a second `(type, name)` pair.
        self.segments().nth(1)?;
        // `key` is `text` lower-cased (ASCII), so the two have the same byte offsets.
        let key = self.key();
        let cut = key.rfind('/')?;
        let cut = key[..cut].rfind('/')?;
        Some(&key[..cut])
    }
    /// True when the type (case-insensitive) equals `ty`, e.g. `Microsoft.Network/networkSecurityGroups`.
    pub fn is_type(&self, ty: &str) -> bool {
        // Same answer as comparing `resource_type()`, without building it.
        let mut rest = ty.as_bytes();
        let mut eat = |part: &str, slash: bool| -> bool {
            if slash {
                match rest.split_first() {
                    Some((b'/', r)) => rest = r,
                    _ => return false,
                }
            }
            match rest.get(..part.len()) {
                Some(head) if head.eq_ignore_ascii_case(part.as_bytes()) => {
                    rest = &rest[part.len()..];
                    true
                }
                _ => false,
            }
        };
        if !eat(self.namespace(), false) {
            return false;
        }
        for (t, _) in self.segments() {
            if !eat(t, true) {
                return false;
            }
        }
        rest.is_empty()
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.key() == other.key()
    }
}
impl Eq for ResourceId {}
impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if std::sync::Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.key().cmp(other.key())
    }
}
impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.as_str())
    }
}
impl FromStr for ResourceId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResourceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The parts of an id as `id.split('/')` gives them, each with its byte offset, found in
/// one pass over the bytes; and whether every byte is printable ASCII other than `%`, `?`,
/// `#` and `\` (then no part holds a character `ResourceId::parse` refuses).
fn split_id(id: &str) -> (Vec<(usize, &str)>, bool) {
    let mut parts = Vec::with_capacity(16);
    let mut clean = true;
    let mut start = 0;
    // `start` and every cut are at a `/` or at the end: char boundaries.
    let part = |from: usize, to: usize| (from, id.get(from..to).unwrap_or_default());
    for (i, b) in id.bytes().enumerate() {
        if b == b'/' {
            parts.push(part(start, i));
            start = i + 1;
        } else {
            clean &= b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'#' | b'\\');
        }
    }
    parts.push(part(start, id.len()));
    (parts, clean)
}

/// FNV-1a as a `Hasher`: no random seed (the resolver and the diff are deterministic),
/// and fast on short texts. For maps and sets that are only looked up, never iterated.
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `HashMap`/`HashSet` hasher state for [`FnvHasher`].
pub type Fnv = std::hash::BuildHasherDefault<FnvHasher>;

/// A borrowed name compared, ordered and hashed as its ASCII-lower-cased text (how Azure
/// compares names, docs/domain.md 2.2), without building the lower-cased copy. Orders
/// exactly as `to_ascii_lowercase()` strings do.
#[derive(Debug, Clone, Copy)]
pub struct Caseless<'a>(pub &'a str);

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}
impl Eq for Caseless<'_> {}
impl PartialOrd for Caseless<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Caseless<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Byte by byte, lower-casing only where the bytes differ: the same order as
        // comparing the lower-cased bytes, without building them (the diff and the resolver
        // sort and look up every rule name with it).
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        // Equal bytes are equal lower-cased: skip the common start (owned names share
        // `asenet-<stem>-`) eight bytes at a time.
        let n = a.len().min(b.len());
        let mut start = 0;
        while start + 8 <= n && a[start..start + 8] == b[start..start + 8] {
            start += 8;
        }
        for (x, y) in a[start..].iter().zip(&b[start..]) {
            if x != y {
                let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
                if x != y {
                    return x.cmp(&y);
                }
            }
        }
        a.len().cmp(&b.len())
    }
}
impl std::hash::Hash for Caseless<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The lower-cased bytes, handed over a chunk at a time rather than byte by byte.
        let mut chunk = [0u8; 32];
        for part in self.0.as_bytes().chunks(chunk.len()) {
            let lowered = &mut chunk[..part.len()];
            lowered.copy_from_slice(part);
            lowered.make_ascii_lowercase();
            state.write(lowered);
        }
        state.write_u8(0xff);
    }
}

/// Checks every segment of a user-written resource id against ARM's naming rules (issue
/// 12: validating only the last name let `..` through in the resource group): the
/// subscription is a GUID; the resource group 1-90 letters, digits, `_`, `(`, `)`, `-`,
/// `.`, not ending in `.`; Microsoft.Network names per docs/domain.md 2.2 (a virtual
/// network 2-64 characters); a `Microsoft.Web` name letters, digits and `-`, not at either
/// end, at most 60 (ARM's resource-name-rules for Microsoft.Web).
pub fn check_resource_id(id: &ResourceId) -> Result<(), ParseError> {
    let err = |reason: String| ParseError::ResourceId {
        value: id.as_str().to_string(),
        reason,
    };
    let sub = id.subscription();
    let guid = sub.len() == 36
        && sub.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !guid {
        return Err(err(format!(
            "subscription `{sub}` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )));
    }
    let rg = id.resource_group();
    if rg.is_empty()
        || rg.chars().count() > 90
        || !rg
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
        || rg.ends_with('.')
    {
        return Err(err(format!(
            "resource group `{rg}` must be 1-90 letters, digits, `_`, `(`, `)`, `-` or `.`, not ending in `.`"
        )));
    }
    let web = id.namespace().eq_ignore_ascii_case("Microsoft.Web");
    for (ty, name) in id.segments() {
        let check = if web {
            let ok = (1..=60).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if ok {
                Ok(())
            } else {
                Err(ParseError::Name {
                    value: name.to_string(),
                    reason: "Microsoft.Web names are 1-60 letters, digits and `-`, not starting or ending with `-`".into(),
                })
            }
        } else {
            check_azure_name(name).and_then(|()| {
                let vnet = ty.eq_ignore_ascii_case("virtualNetworks");
                if vnet && !(2..=64).contains(&name.len()) {
                    Err(ParseError::Name {
                        value: name.to_string(),
                        reason: "virtual network names are 2-64 characters".into(),
                    })
                } else {
                    Ok(())
                }
            })
        };
        if let Err(e) = check {
            return Err(err(format!("{ty} name: {e}")));
        }
    }
    Ok(())
}

/// Checks an NSG, rule, route table, route or subnet name (docs/domain.md 2.2): 1-80
/// characters of alphanumerics, `_`, `.`, `-`, starting alphanumeric, ending alphanumeric or `_`.
pub fn check_azure_name(name: &str) -> Result<(), ParseError> {
    let err = |reason: &str| ParseError::Name {
        value: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 80 {
        return Err(err("must be 1-80 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(err("only letters, digits, `_`, `.` and `-` are allowed"));
    }
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() {
        return Err(err("must start with a letter or digit"));
    }
    if !(last.is_ascii_alphanumeric() || last == '_') {
        return Err(err("must end with a letter, digit or `_`"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------------------

/// An NSG rule priority, 100..=4096 (docs/domain.md 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(u16);

impl Priority {
    pub const MIN: u16 = 100;
    pub const MAX: u16 = 4096;
    pub fn new(value: i64) -> Result<Self, ParseError> {
        if (Self::MIN as i64..=Self::MAX as i64).contains(&value) {
            Ok(Priority(value as u16))
        } else {
            Err(ParseError::Priority { value })
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

/// A band of priorities a spec's rules may use, inclusive on both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PriorityBand {
    pub from: Priority,
    pub to: Priority,
}

impl PriorityBand {
    pub fn contains(&self, p: u32) -> bool {
        (self.from.0 as u32..=self.to.0 as u32).contains(&p)
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.from.0..=self.to.0
    }
}

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };
    pub fn single(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }
    pub fn new(lo: u16, hi: u16) -> Self {
        PortRange { lo, hi }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

impl FromStr for PortRange {
    type Err = ParseError;
    /// Parses `80`, `10001-10020` or `*` (all ports), per docs/domain.md 2.1 / 2.8.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::PortRange {
            value: s.to_string(),
        };
        let t = s.trim();
        if t == "*" {
            return Ok(PortRange::ALL);
        }
        let parse = |x: &str| -> Result<u16, ParseError> {
            let x = x.trim();
            if x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            x.parse::<u32>()
                .ok()
                .filter(|v| *v <= 65535)
                .map(|v| v as u16)
                .ok_or_else(err)
        };
        match t.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (parse(a)?, parse(b)?);
                if lo > hi {
                    return Err(err());
                }
                Ok(PortRange { lo, hi })
            }
            None => Ok(PortRange::single(parse(t)?)),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PortRange::ALL {
            f.write_str("*")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A canonical set of ports: sorted, overlapping and adjacent ranges merged; the full
/// range is `*`. Serialises as `"*"` or a list such as `["80", "443", "10001-10020"]`.
///
/// Almost every set holds a few ranges (`*`, one service's ports), so up to
/// [`PortSet::INLINE`] ranges are stored in place: cloning a rule then copies them instead
/// of allocating. Equality, ordering, hashing and `Debug` are those of the range slice.
#[derive(Clone)]
pub struct PortSet(PortRanges);

#[derive(Clone)]
enum PortRanges {
    Inline {
        len: u8,
        ranges: [PortRange; PortSet::INLINE],
    },
    Heap(Vec<PortRange>),
}

/// Equality, ordering and hashing of a set type with a small in-place form, as those of the
/// sorted slice its method `$slice` gives (whatever form holds it).
macro_rules! compared_as_slice {
    ($set:ty, $slice:ident) => {
        impl PartialEq for $set {
            fn eq(&self, other: &Self) -> bool {
                self.$slice() == other.$slice()
            }
        }
        impl Eq for $set {}
        impl PartialOrd for $set {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $set {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.$slice().cmp(other.$slice())
            }
        }
        impl std::hash::Hash for $set {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.$slice().hash(state)
            }
        }
    };
}

compared_as_slice!(PortSet, ranges);
impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PortSet").field(&self.ranges()).finish()
    }
}

impl PortSet {
    /// Ranges stored without a heap allocation.
    pub const INLINE: usize = 4;

    fn from_sorted_merged(v: &[PortRange]) -> Self {
        if v.len() <= Self::INLINE {
            let mut ranges = [PortRange::ALL; Self::INLINE];
            ranges[..v.len()].copy_from_slice(v);
            PortSet(PortRanges::Inline {
                len: v.len() as u8,
                ranges,
            })
        } else {
            PortSet(PortRanges::Heap(v.to_vec()))
        }
    }
    pub fn any() -> Self {
        Self::from_sorted_merged(&[PortRange::ALL])
    }
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Self {
        let mut v: Vec<PortRange> = ranges.into_iter().collect();
        v.sort();
        let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
        for r in v {
            if let Some(last) = out.last_mut() {
                if (r.lo as u32) <= last.hi as u32 + 1 {
                    last.hi = last.hi.max(r.hi);
                    continue;
                }
            }
            out.push(r);
        }
        if out.len() <= Self::INLINE {
            Self::from_sorted_merged(&out)
        } else {
            PortSet(PortRanges::Heap(out))
        }
    }
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, ParseError> {
        let ranges = values
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<PortRange>, _>>()?;
        Ok(Self::from_ranges(ranges))
    }
    pub fn is_any(&self) -> bool {
        self.ranges() == [PortRange::ALL]
    }
    pub fn is_empty(&self) -> bool {
        self.ranges().is_empty()
    }
    pub fn ranges(&self) -> &[PortRange] {
        match &self.0 {
            PortRanges::Inline { len, ranges } => &ranges[..*len as usize],
            PortRanges::Heap(v) => v,
        }
    }
    pub fn contains(&self, port: u16) -> bool {
        self.ranges().iter().any(|r| r.contains(port))
    }
    /// True when every port of `other` is in `self`.
    pub fn covers(&self, other: &PortSet) -> bool {
        other
            .ranges()
            .iter()
            .all(|o| self.ranges().iter().any(|r| r.lo <= o.lo && o.hi <= r.hi))
    }
    pub fn intersects(&self, other: &PortSet) -> bool {
        self.ranges()
            .iter()
            .any(|a| other.ranges().iter().any(|b| a.lo <= b.hi && b.lo <= a.hi))
    }
    /// The strings ARM expects, e.g. `["80", "10001-10020"]` or `["*"]`.
    pub fn to_strings(&self) -> Vec<String> {
        self.ranges().iter().map(|r| r.to_string()).collect()
    }
}

impl PortSet {
    /// The `Display` text (`80,10001-10020`, `*`) appended to `out`.
    pub fn push_text(&self, out: &mut String) {
        for (i, r) in self.ranges().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if *r == PortRange::ALL {
                out.push('*');
            } else {
                push_decimal(out, r.lo.into());
                if r.lo != r.hi {
                    out.push('-');
                    push_decimal(out, r.hi.into());
                }
            }
        }
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.push_text(&mut text);
        f.write_str(&text)
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_any() {
            s.serialize_str("*")
        } else {
            self.to_strings().serialize(s)
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}
impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = OneOrMany::deserialize(d)?.into_vec();
        PortSet::parse_all(v.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

/// Parses an IPv4 address or CIDR and clears host bits (docs/domain.md 2.10).
pub fn parse_prefix(value: &str) -> Result<Ipv4Net, ParseError> {
    written_prefix(value)
        .map(|(net, _)| net)
        .ok_or_else(|| ParseError::Prefix {
            value: value.to_string(),
        })
}

/// `value` (trimmed) as a prefix with host bits cleared, and the prefix as written when it
/// was a CIDR (`None` for a plain address). A CIDR has a `/`, which no address has, so
/// each value is parsed once, by the one parser that can accept it.
fn written_prefix(value: &str) -> Option<(Ipv4Net, Option<Ipv4Net>)> {
    let t = value.trim();
    if t.contains('/') {
        t.parse::<Ipv4Net>().ok().map(|n| (n.trunc(), Some(n)))
    } else {
        t.parse::<Ipv4Addr>()
            .ok()
            .map(|ip| (Ipv4Net::from(ip), None))
    }
}

/// Parses an IPv4 address or CIDR written by a user: host bits must be clear, because
/// clearing them silently widens what the user wrote (`203.0.113.7/0` would become every
/// address; issue 12). Observed ARM values go through the lenient [`parse_prefix`].
pub fn parse_network(value: &str) -> Result<Ipv4Net, ParseError> {
    let (net, written) = written_prefix(value).ok_or_else(|| ParseError::Prefix {
        value: value.to_string(),
    })?;
    let Some(written) = written else {
        return Ok(net); // a plain address
    };
    if written.addr() != net.addr() {
        return Err(ParseError::HostBits {
            value: value.to_string(),
            len: net.prefix_len(),
            network: net.to_string(),
            address: written.addr().to_string(),
        });
    }
    Ok(net)
}

/// True when `value` has the shape of a service tag name (`AppServiceManagement`,
/// `Sql.WestUS`, `AzureCloud.westus`): letters first, then letters, digits, `.` and `_`.
pub fn looks_like_tag(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

/// The source or destination of a security rule, in canonical form.
///
/// A rule names either one service tag, `*`, or a set of prefixes (the plural form may not
/// hold tags, docs/domain.md 2.6, 2.8). `Other` keeps what asenet cannot interpret in a
/// foreign rule (application security groups) so that it is carried unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressSet {
    Any,
    Tag(String),
    Prefixes(PrefixSet),
    Other(String),
}

/// The prefixes of an [`AddressSet`]: truncated to their network, sorted, without
/// duplicates. Almost every set holds one prefix, kept in place: a rule has two sets, and a
/// component of 10,000 specs ~200,000 rules in each of the desired state and the snapshot
/// (issue 14's memory), where a `BTreeSet` allocated a node for each. Equality, ordering,
/// hashing and `Debug` are those of the sorted prefixes (as a `BTreeSet`'s were).
#[derive(Clone)]
pub struct PrefixSet(PrefixRepr);

#[derive(Clone)]
enum PrefixRepr {
    One(Ipv4Net),
    /// Sorted, no duplicates, never one element.
    Many(Box<[Ipv4Net]>),
}

impl PrefixSet {
    /// The set of `p`, each truncated to its network.
    pub fn new(p: impl IntoIterator<Item = Ipv4Net>) -> Self {
        let mut it = p.into_iter();
        let Some(first) = it.next() else {
            return PrefixSet(PrefixRepr::Many(Box::default()));
        };
        let Some(second) = it.next() else {
            return PrefixSet(PrefixRepr::One(first.trunc()));
        };
        let mut all: Vec<Ipv4Net> = [first, second]
            .into_iter()
            .chain(it)
            .map(|n| n.trunc())
            .collect();
        all.sort_unstable();
        all.dedup();
        match all.as_slice() {
            [one] => PrefixSet(PrefixRepr::One(*one)),
            _ => PrefixSet(PrefixRepr::Many(all.into_boxed_slice())),
        }
    }
    pub fn as_slice(&self) -> &[Ipv4Net] {
        match &self.0 {
            PrefixRepr::One(p) => std::slice::from_ref(p),
            PrefixRepr::Many(all) => all,
        }
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Ipv4Net> {
        self.as_slice().iter()
    }
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    pub fn contains(&self, p: &Ipv4Net) -> bool {
        self.as_slice().binary_search(p).is_ok()
    }
}

compared_as_slice!(PrefixSet, as_slice);
impl fmt::Debug for PrefixSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
impl<'a> IntoIterator for &'a PrefixSet {
    type Item = &'a Ipv4Net;
    type IntoIter = std::slice::Iter<'a, Ipv4Net>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl AddressSet {
    pub fn prefixes(p: impl IntoIterator<Item = Ipv4Net>) -> Self {
        let set = PrefixSet::new(p);
        if set.contains(&Ipv4Net::default()) {
            AddressSet::Any
        } else {
            AddressSet::Prefixes(set)
        }
    }
    pub fn tag(t: &str) -> Self {
        AddressSet::Tag(canonical_tag(t))
    }
    /// Parses one ARM address value: `*`, `0.0.0.0/0`, a tag, an IP or a CIDR.
    pub fn parse_one(value: &str) -> Result<Self, ParseError> {
        let t = value.trim();
        if t == "*" {
            return Ok(AddressSet::Any);
        }
        if let Ok(p) = parse_prefix(t) {
            return Ok(AddressSet::prefixes([p]));
        }
        if looks_like_tag(t) {
            return Ok(AddressSet::tag(t));
        }
        Err(ParseError::Prefix {
            value: value.to_string(),
        })
    }
    /// Parses ARM's singular and plural fields together (either may be empty).
    pub fn parse_arm(single: Option<&str>, plural: &[String]) -> Result<Self, ParseError> {
        match (single.filter(|s| !s.is_empty()), plural.is_empty()) {
            (Some(s), true) => Self::parse_one(s),
            (None, false) => {
                let p = plural
                    .iter()
                    .map(|s| parse_prefix(s))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(AddressSet::prefixes(p))
            }
            (Some(s), false) => {
                let mut p = plural
                    .iter()
                    .map(|s| parse_prefix(s))
                    .collect::<Result<Vec<_>, _>>()?;
                p.push(parse_prefix(s)?);
                Ok(AddressSet::prefixes(p))
            }
            (None, true) => Ok(AddressSet::Any),
        }
    }
    /// The ARM fields to write: `(singular, plural)`.
    pub fn to_arm(&self) -> (Option<String>, Vec<String>) {
        match self {
            AddressSet::Any => (Some("*".into()), vec![]),
            AddressSet::Tag(t) | AddressSet::Other(t) => (Some(t.clone()), vec![]),
            AddressSet::Prefixes(p) if p.len() == 1 => (p.iter().next().map(prefix_text), vec![]),
            AddressSet::Prefixes(p) => (None, p.iter().map(prefix_text).collect()),
        }
    }
    /// Number of address entries this set counts against the NSG limit (docs/domain.md 2.7).
    pub fn count(&self) -> usize {
        match self {
            AddressSet::Prefixes(p) => p.len(),
            _ => 1,
        }
    }
}

/// `10.0.0.4/32` is written `10.0.0.4`, as the portal and ARM examples do.
pub fn prefix_text(p: &Ipv4Net) -> String {
    let mut out = String::with_capacity(18);
    push_prefix_text(&mut out, p);
    out
}

/// [`prefix_text`] appended to `out`.
pub fn push_prefix_text(out: &mut String, p: &Ipv4Net) {
    if p.prefix_len() == 32 {
        push_ipv4(out, p.addr());
    } else {
        push_ipv4_net(out, p);
    }
}

/// `a.b.c.d`, as `Ipv4Addr`'s `Display` writes it, appended to `out` without going
/// through the formatting machinery (the resolver writes addresses into most reasons).
pub fn push_ipv4(out: &mut String, a: Ipv4Addr) {
    out.reserve(15);
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_small(out, o);
    }
}

/// A number below 256 in decimal, appended to `out`.
fn push_small(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

/// `a.b.c.d/len`, as `Ipv4Net`'s `Display` writes it, appended to `out`.
pub fn push_ipv4_net(out: &mut String, p: &Ipv4Net) {
    push_ipv4(out, p.addr());
    out.push('/');
    push_small(out, p.prefix_len());
}

/// A number in decimal, as `Display` writes it, appended to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    if let Ok(small) = u8::try_from(n) {
        push_small(out, small);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only, so the text is valid UTF-8.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// The documented casing of the well-known tags (docs/domain.md 2.5, 2.10); classic
/// spellings (`INTERNET`, `VIRTUAL_NETWORK`, `AZURE_LOADBALANCER`) map to the ARM names.
pub fn canonical_tag(t: &str) -> String {
    // Lower-case spellings, compared without building a lower-cased copy of `t`.
    const KNOWN: [(&str, &str); 8] = [
        ("internet", "Internet"),
        ("virtualnetwork", "VirtualNetwork"),
        ("virtual_network", "VirtualNetwork"),
        ("azureloadbalancer", "AzureLoadBalancer"),
        ("azure_loadbalancer", "AzureLoadBalancer"),
        ("appservicemanagement", "AppServiceManagement"),
        ("sql", "Sql"),
        ("storage", "Storage"),
    ];
    KNOWN
        .iter()
        .find(|(lower, _)| t.eq_ignore_ascii_case(lower))
        .map_or(t, |(_, canonical)| canonical)
        .to_string()
}

impl fmt::Display for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressSet::Any => f.write_str("*"),
            AddressSet::Tag(t) | AddressSet::Other(t) => f.write_str(t),
            AddressSet::Prefixes(p) => {
                let v: Vec<String> = p.iter().map(prefix_text).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

impl Serialize for AddressSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AddressSet::Prefixes(p) if p.len() != 1 => {
                p.iter().map(prefix_text).collect::<Vec<_>>().serialize(s)
            }
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for AddressSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => AddressSet::parse_one(&s).map_err(serde::de::Error::custom),
            OneOrMany::Many(v) => AddressSet::parse_arm(None, &v).map_err(serde::de::Error::custom),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------

/// Rule protocol (docs/domain.md 2.1). `Any` is ARM's `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
    Any,
}

impl Protocol {
    pub fn as_arm(self) -> &'static str {
        match self {
            Protocol::Tcp => "Tcp",
            Protocol::Udp => "Udp",
            Protocol::Icmp => "Icmp",
            Protocol::Esp => "Esp",
            Protocol::Ah => "Ah",
            Protocol::Any => "*",
        }
    }
    /// True when a rule with protocol `self` matches traffic of protocol `p`.
    pub fn matches(self, p: Protocol) -> bool {
        self == Protocol::Any || self == p
    }
}

impl FromStr for Protocol {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "esp" => Protocol::Esp,
            "ah" => Protocol::Ah,
            "*" | "any" => Protocol::Any,
            _ => {
                return Err(ParseError::Protocol {
                    value: s.to_string(),
                })
            }
        })
    }
}
impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_arm())
    }
}
impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_arm())
    }
}
impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Allow,
    Deny,
}

/// A security rule in canonical form. Used for observed rules (owned and foreign), desired
/// rules and plan entries. `priority` is `u32` because observed foreign rules may carry
/// values asenet would never write (default rules use 65000-65500, docs/domain.md 2.4).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    pub name: String,
    pub priority: u32,
    pub direction: Direction,
    pub access: Access,
    pub protocol: Protocol,
    pub source: AddressSet,
    #[serde(default = "PortSet::any")]
    pub source_ports: PortSet,
    pub destination: AddressSet,
    pub destination_ports: PortSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl SecurityRule {
    /// The fields that differ between `self` and `other`, ignoring the name (diff output).
    pub fn changed_fields(&self, other: &SecurityRule) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.priority != other.priority {
            f.push("priority");
        }
        if self.direction != other.direction {
            f.push("direction");
        }
        if self.access != other.access {
            f.push("access");
        }
        if self.protocol != other.protocol {
            f.push("protocol");
        }
        if self.source != other.source {
            f.push("source");
        }
        if self.source_ports != other.source_ports {
            f.push("sourcePorts");
        }
        if self.destination != other.destination {
            f.push("destination");
        }
        if self.destination_ports != other.destination_ports {
            f.push("destinationPorts");
        }
        if self.description != other.description {
            f.push("description");
        }
        f
    }
}

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

/// Next hop types usable in a user-defined route (docs/domain.md 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NextHopType {
    Internet,
    VirtualAppliance,
    VirtualNetworkGateway,
    VnetLocal,
    None,
}

impl FromStr for NextHopType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "internet" => NextHopType::Internet,
            "virtualappliance" => NextHopType::VirtualAppliance,
            "virtualnetworkgateway" | "vpngateway" => NextHopType::VirtualNetworkGateway,
            "vnetlocal" => NextHopType::VnetLocal,
            "none" | "null" => NextHopType::None,
            _ => return Err(format!("`{s}` is not a next hop type")),
        })
    }
}

/// The destination of a route: a prefix or a service tag (docs/domain.md 3.3).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDestination {
    Prefix(Ipv4Net),
    Tag(String),
}

impl RouteDestination {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if let Ok(p) = parse_prefix(value) {
            return Ok(RouteDestination::Prefix(p));
        }
        if looks_like_tag(value.trim()) {
            return Ok(RouteDestination::Tag(canonical_tag(value.trim())));
        }
        Err(ParseError::Prefix {
            value: value.to_string(),
        })
    }
}

impl fmt::Display for RouteDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteDestination::Prefix(p) => write!(f, "{p}"),
            RouteDestination::Tag(t) => f.write_str(t),
        }
    }
}
impl Serialize for RouteDestination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for RouteDestination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RouteDestination::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A user-defined route in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub name: String,
    pub address_prefix: RouteDestination,
    pub next_hop_type: NextHopType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_ip_address: Option<Ipv4Addr>,
}

impl Route {
    pub fn changed_fields(&self, other: &Route) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.address_prefix != other.address_prefix {
            f.push("addressPrefix");
        }
        if self.next_hop_type != other.next_hop_type {
            f.push("nextHopType");
        }
        if self.next_hop_ip_address != other.next_hop_ip_address {
            f.push("nextHopIpAddress");
        }
        f
    }
}

// ---------------------------------------------------------------------------------------
// Spec identity
// ---------------------------------------------------------------------------------------

/// `namespace/name` of an AseConnectivity spec. Shared text (`Arc<str>`): every owned rule,
/// plan entry and status carries its owner, so a clone must not allocate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpecKey {
    pub namespace: std::sync::Arc<str>,
    pub name: std::sync::Arc<str>,
}

impl SpecKey {
    pub fn new(
        namespace: impl Into<std::sync::Arc<str>>,
        name: impl Into<std::sync::Arc<str>>,
    ) -> Self {
        SpecKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for SpecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for SpecKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, n)) if !ns.is_empty() && !n.is_empty() => Ok(SpecKey::new(ns, n)),
            _ => Err(format!("`{s}` is not namespace/name")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A `PrefixSet` holds, orders and compares exactly as the `BTreeSet` of the
        /// truncated prefixes it replaced.
        #[test]
        fn prefix_sets_behave_as_btree_sets_of_truncated_prefixes(
            a in proptest::collection::vec((proptest::prelude::any::<u32>(), 0u8..=32), 0..5),
            b in proptest::collection::vec((proptest::prelude::any::<u32>(), 0u8..=32), 0..5),
        ) {
            let nets = |v: &[(u32, u8)]| -> Vec<Ipv4Net> {
                v.iter().map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(*a), *l).unwrap()).collect()
            };
            let (na, nb) = (nets(&a), nets(&b));
            let (sa, sb) = (PrefixSet::new(na.clone()), PrefixSet::new(nb.clone()));
            let ta: std::collections::BTreeSet<Ipv4Net> = na.iter().map(|n| n.trunc()).collect();
            let tb: std::collections::BTreeSet<Ipv4Net> = nb.iter().map(|n| n.trunc()).collect();
            proptest::prop_assert_eq!(sa.iter().copied().collect::<Vec<_>>(), ta.iter().copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(sa.len(), ta.len());
            proptest::prop_assert_eq!(sa.cmp(&sb), ta.cmp(&tb));
            proptest::prop_assert_eq!(sa == sb, ta == tb);
            for n in &nb {
                proptest::prop_assert_eq!(sa.contains(&n.trunc()), ta.contains(&n.trunc()));
            }
        }
    }

    #[test]
    fn port_sets_merge_adjacent_and_overlapping_ranges() {
        let p = PortSet::parse_all(["443", "80", "81-90", "85", "10001-10020"]).unwrap();
        assert_eq!(p.to_strings(), vec!["80-90", "443", "10001-10020"]);
        assert!(PortSet::parse_all(["0-65535"]).unwrap().is_any());
        assert!(PortSet::parse_all(["*"]).unwrap().is_any());
    }

    #[test]
    fn bad_ports_are_rejected_with_the_value() {
        for bad in ["70000", "80-70", "any", "", "-1", "1-"] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(AddressSet::parse_one("0.0.0.0/0").unwrap(), AddressSet::Any);
        assert_eq!(
            AddressSet::parse_one("10.0.1.7/26").unwrap().to_string(),
            "10.0.1.0/26"
        );
        assert_eq!(
            AddressSet::parse_one("internet").unwrap(),
            AddressSet::Tag("Internet".into())
        );
        let plural = AddressSet::parse_arm(None, &["1.2.3.4".into(), "5.6.7.0/24".into()]).unwrap();
        assert_eq!(
            plural.to_arm(),
            (None, vec!["1.2.3.4".to_string(), "5.6.7.0/24".to_string()])
        );
        assert!(AddressSet::parse_one("10.0.0.300").is_err());
    }

    #[test]
    fn prefixes_with_host_bits_are_refused_naming_the_network_they_would_mean() {
        for (bad, network) in [
            ("203.0.113.7/0", "0.0.0.0/0"),
            ("10.0.0.5/8", "10.0.0.0/8"),
            ("10.0.2.4/0", "0.0.0.0/0"),
            ("1.2.3.4/0", "0.0.0.0/0"),
            ("10.0.1.7/26", "10.0.1.0/26"),
        ] {
            let e = parse_network(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
            assert!(e.contains(&format!("`{network}`")), "{e}");
        }
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("10.0.0.5").unwrap().to_string(),
            "10.0.0.5/32"
        );
        assert_eq!(parse_network("0.0.0.0/0").unwrap(), Ipv4Net::default());
    }

    #[test]
    fn resource_ids_compare_case_insensitively_and_keep_their_casing() {
        let a = ResourceId::parse("/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/vnet/subnets/A").unwrap();
        let b = ResourceId::parse("/subscriptions/S/resourcegroups/rg/providers/microsoft.network/virtualnetworks/VNET/subnets/a").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name(), "A");
        assert_eq!(a.parent().unwrap().name(), "vnet");
        assert!(a.is_type("Microsoft.Network/virtualNetworks/subnets"));
        assert!(ResourceId::parse("/subscriptions/s/resourceGroups/rg").is_err());
    }

    #[test]
    fn resource_ids_with_segments_a_url_would_reinterpret_are_refused() {
        let tail = "providers/Microsoft.Network/networkSecurityGroups/nsg";
        for bad in [
            format!("/subscriptions/../resourceGroups/network/{tail}"),
            format!("/subscriptions/./resourceGroups/network/{tail}"),
            format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/../{tail}"),
            format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/a%2Fb/{tail}"),
            format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/a b/{tail}"),
            format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/a?x=1/{tail}"),
            format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/a#b/{tail}"),
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/..".to_string(),
        ] {
            assert!(ResourceId::parse(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn every_segment_of_a_user_written_id_follows_arm_naming_rules() {
        let ok = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/net(work)_1.a/providers/Microsoft.Network/virtualNetworks/vnet/subnets/ase-one";
        check_resource_id(&ResourceId::parse(ok).unwrap()).unwrap();
        for (bad, what) in [
            (
                ok.replace("00000000-0000-0000-0000-000000000001", "sub"),
                "subscription `sub` is not a GUID",
            ),
            (ok.replace("net(work)_1.a", "rg."), "resource group `rg.`"),
            (ok.replace("net(work)_1.a", "r*g"), "resource group `r*g`"),
            (
                ok.replace("virtualNetworks/vnet", "virtualNetworks/v"),
                "2-64",
            ),
            (
                ok.replace("virtualNetworks/vnet", "virtualNetworks/-vnet"),
                "`-vnet`",
            ),
        ] {
            let e = check_resource_id(&ResourceId::parse(&bad).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn azure_names_follow_domain_2_2() {
        assert!(check_azure_name("asenet-ase-two_in.web").is_ok());
        assert!(check_azure_name("-x").is_err());
        assert!(check_azure_name("x-").is_err());
        assert!(check_azure_name(&"a".repeat(81)).is_err());
    }
}

/// ASE version as the core sees it: decides the required rules (docs/domain.md 1.2-1.4).
/// Its own type, not the CRD's `api::AseVersion`: validate converts, so the core does not
/// depend on the CRD types (issue 15). Serialised like the CRD's (`V1`, `V2`, `V3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AseVersion {
    V1,
    V2,
    V3,
}

/// How routes keep the ASE's required traffic off the tunnel (docs/domain.md 3.3-3.4): the
/// core's copy of the CRD's `api::TunnelingStrategy`, converted by validate (issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TunnelingStrategy {
    /// `0.0.0.0/0 -> Internet` when advertised, plus routes for the required prefixes.
    DirectInternet,
    /// One route per required service tag, plus `0.0.0.0/0 -> Internet` when advertised.
    ServiceTag,
}
