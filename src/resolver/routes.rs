//! Route prefixes under forced tunneling (docs/domain.md 1.2.7, 1.3.5, 3.4, 3.6).
//!
//! When ExpressRoute/VPN advertises prefixes more specific than 0.0.0.0/0, the ASE's
//! required Azure ranges need user-defined routes with next hop `Internet` that win over
//! the advertisements: routing is longest-prefix match, and on an equal prefix a UDR wins
//! over BGP (3.4). So every route must be at least as specific as every advertised prefix
//! it overlaps. A required prefix that is less specific than an overlapping advertisement
//! is split in halves until no advertisement lies strictly inside a piece.
//!
//! The route table holds at most 400 routes (3.6), so the pieces are aggregated: contained
//! prefixes dropped, sibling halves merged; if that is still too many, neighbouring routes
//! are summarised into the smallest common supernet that adds the fewest extra addresses.
//! A merge is never allowed to produce a prefix less specific than an advertisement inside
//! it. If no allowed merge is left and the routes still do not fit, the caller reports
//! `LimitExceeded`: no prefix is ever dropped.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

/// True when some advertised prefix lies strictly inside `p` (so a route for `p` would lose
/// to the more specific advertisement for those addresses).
fn shadowed(p: &Ipv4Net, advertised: &[Ipv4Net]) -> bool {
    advertised
        .iter()
        .any(|a| a.prefix_len() > p.prefix_len() && p.contains(a))
}

fn halves(p: &Ipv4Net) -> Option<(Ipv4Net, Ipv4Net)> {
    let len = p.prefix_len() + 1;
    if len > 32 {
        return None;
    }
    let lo = Ipv4Net::new(p.network(), len).ok()?;
    let step = 1u32 << (32 - len);
    let hi = Ipv4Net::new(u32::from(p.network()).wrapping_add(step).into(), len).ok()?;
    Some((lo, hi))
}

/// Splits `p` until no advertisement lies strictly inside a piece.
fn refine(p: Ipv4Net, advertised: &[Ipv4Net], out: &mut Vec<Ipv4Net>) {
    if shadowed(&p, advertised) {
        if let Some((a, b)) = halves(&p) {
            refine(a, advertised, out);
            refine(b, advertised, out);
            return;
        }
    }
    out.push(p);
}

/// The smallest prefix containing both.
fn common_supernet(a: &Ipv4Net, b: &Ipv4Net) -> Ipv4Net {
    let x = u32::from(a.network()) ^ u32::from(b.network());
    let len = (x.leading_zeros() as u8)
        .min(a.prefix_len())
        .min(b.prefix_len());
    // `len` is at most 32, so `new` cannot fail.
    Ipv4Net::new(a.network(), len)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

fn size(p: &Ipv4Net) -> u64 {
    1u64 << (32 - p.prefix_len() as u32)
}

/// Drops prefixes contained in others and merges sibling halves, never into a prefix an
/// advertisement shadows. Exact: the covered address set does not change.
pub fn aggregate_exact(
    prefixes: impl IntoIterator<Item = Ipv4Net>,
    advertised: &[Ipv4Net],
) -> Vec<Ipv4Net> {
    let mut set: BTreeSet<Ipv4Net> = prefixes.into_iter().map(|p| p.trunc()).collect();
    loop {
        let v: Vec<Ipv4Net> = set.iter().copied().collect();
        let mut next: Vec<Ipv4Net> = Vec::with_capacity(v.len());
        let mut changed = false;
        for p in v {
            if let Some(last) = next.last().copied() {
                if last.contains(&p) {
                    changed = true;
                    continue;
                }
                if last.prefix_len() == p.prefix_len() && p.prefix_len() > 0 {
                    let s = common_supernet(&last, &p);
                    if s.prefix_len() + 1 == p.prefix_len() && !shadowed(&s, advertised) {
                        next.pop();
                        next.push(s);
                        changed = true;
                        continue;
                    }
                }
            }
            next.push(p);
        }
        set = next.into_iter().collect();
        if !changed {
            break;
        }
    }
    set.into_iter().collect()
}

/// The routes for `required` prefixes: split against `advertised`, aggregated, summarised to
/// at most `budget` entries. `Err(n)` gives the smallest count reached when it cannot fit.
pub fn tunnel_prefixes(
    required: &[Ipv4Net],
    advertised: &[Ipv4Net],
    budget: usize,
) -> Result<(Vec<Ipv4Net>, bool), usize> {
    let mut pieces = Vec::new();
    for p in required {
        refine(p.trunc(), advertised, &mut pieces);
    }
    let mut v = aggregate_exact(pieces, advertised);
    let mut summarised = false;
    while v.len() > budget {
        // Merge the neighbouring pair whose common supernet adds the fewest addresses.
        let mut best: Option<(u64, usize, Ipv4Net)> = None;
        for i in 0..v.len().saturating_sub(1) {
            let s = common_supernet(&v[i], &v[i + 1]);
            if shadowed(&s, advertised) {
                continue;
            }
            let covered: u64 = v.iter().filter(|p| s.contains(*p)).map(size).sum();
            let cost = size(&s).saturating_sub(covered);
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, i, s));
            }
        }
        let Some((_, _, s)) = best else {
            return Err(v.len());
        };
        v.retain(|p| !s.contains(p));
        v.push(s);
        v = aggregate_exact(v, advertised);
        summarised = true;
    }
    Ok((v, summarised))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn strs(v: &[Ipv4Net]) -> Vec<String> {
        v.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn required_prefixes_less_specific_than_an_advertisement_are_split() {
        let (v, s) = tunnel_prefixes(&[n("13.64.0.0/14")], &[n("13.66.0.0/16")], 400).unwrap();
        assert!(!s);
        assert_eq!(
            strs(&v),
            vec!["13.64.0.0/15", "13.66.0.0/16", "13.67.0.0/16"]
        );
    }

    #[test]
    fn adjacent_and_contained_prefixes_are_merged_but_not_past_an_advertisement() {
        let req = [n("10.1.0.0/25"), n("10.1.0.128/25"), n("10.1.0.7/32")];
        let (v, _) = tunnel_prefixes(&req, &[], 400).unwrap();
        assert_eq!(strs(&v), vec!["10.1.0.0/24"]);
        let (v, _) = tunnel_prefixes(&req, &[n("10.1.0.0/25")], 400).unwrap();
        assert_eq!(strs(&v), vec!["10.1.0.0/25", "10.1.0.128/25"]);
    }

    #[test]
    fn summarising_to_a_budget_covers_every_required_prefix() {
        let req = [n("20.0.0.0/24"), n("20.0.2.0/24"), n("20.0.9.0/24")];
        let (v, s) = tunnel_prefixes(&req, &[], 2).unwrap();
        assert!(s);
        assert_eq!(v.len(), 2);
        for r in req {
            assert!(v.iter().any(|p| p.contains(&r)));
        }
    }

    #[test]
    fn an_impossible_budget_is_an_error_not_a_dropped_prefix() {
        let req = [n("20.0.0.0/24"), n("20.0.2.0/24")];
        // Each required /24 is itself advertised: no supernet may be used.
        assert_eq!(tunnel_prefixes(&req, &req, 1), Err(2));
    }
}
