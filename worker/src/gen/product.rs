//! Products of big integers: one node of a factorial's product tree (at most
//! [`proto::jobs::FANOUT`] factors), and the whole tree in one process (`worker gen`).

use num_bigint::BigUint;
use proto::jobs::{factorial_leaf, factorial_levels, is_hex, FANOUT};

/// Parses a factor sent as lowercase hex.
pub fn from_hex(s: &str) -> anyhow::Result<BigUint> {
    if !is_hex(s) {
        let shown: String = s.chars().take(40).collect();
        anyhow::bail!("factor {shown:?} is not lowercase hex without leading zeros");
    }
    BigUint::parse_bytes(s.as_bytes(), 16).ok_or_else(|| anyhow::anyhow!("factor is not hex"))
}

/// The product of `factors` (hex), in hex: what one product task computes.
pub fn multiply_hex(factors: &[String]) -> anyhow::Result<String> {
    if factors.is_empty() || factors.len() > FANOUT {
        anyhow::bail!(
            "a product task multiplies 1 to {FANOUT} factors, not {}",
            factors.len()
        );
    }
    let nums = factors
        .iter()
        .map(|f| from_hex(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(product(nums).to_str_radix(16))
}

/// Multiplies in pairs (two halves of similar size, so the big multiplications are
/// balanced).
fn product(mut nums: Vec<BigUint>) -> BigUint {
    while nums.len() > 1 {
        let mut next = Vec::with_capacity(nums.len().div_ceil(2));
        let mut it = nums.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => a * b,
                None => a,
            });
        }
        nums = next;
    }
    nums.pop().unwrap_or_else(|| BigUint::from(1u32))
}

/// n! through the same tree the cluster computes, in one process.
pub fn factorial(n: u64) -> BigUint {
    let levels = factorial_levels(n);
    let mut nodes: Vec<BigUint> = (0..levels[0])
        .map(|i| {
            product(
                factorial_leaf(n, i)
                    .into_iter()
                    .map(BigUint::from)
                    .collect(),
            )
        })
        .collect();
    for _ in 1..levels.len() {
        nodes = nodes.chunks(FANOUT).map(|c| product(c.to_vec())).collect();
    }
    nodes.pop().unwrap_or_else(|| BigUint::from(1u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_factorials_and_tasks() {
        let mut f = BigUint::from(1u32);
        for n in 0..=60u64 {
            if n > 0 {
                f *= n;
            }
            assert_eq!(factorial(n), f, "{n}!");
        }
        assert_eq!(
            multiply_hex(&["ff".into(), "2".into(), "1".into()]).ok(),
            Some("1fe".into())
        );
        assert!(multiply_hex(&[]).is_err());
        assert!(multiply_hex(&vec!["1".to_string(); 5]).is_err());
        assert!(multiply_hex(&["0x1".into()]).is_err());
    }
}
