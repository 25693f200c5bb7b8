//! Shamir secret sharing over GF(2^8), byte by byte, as the Managed HSM security domain splits its
//! master key: each byte of the secret is the constant term of its own random polynomial of degree
//! `threshold - 1`, and share `x` holds every polynomial's value at `x` (1..=255).
//!
//! The field arithmetic is table-free (no secret-indexed lookups), with the AES reduction
//! polynomial x^8 + x^4 + x^3 + x + 1.

use zeroize::Zeroizing;

use crate::error::{invalid_input, Result};

/// One share: its x coordinate (1..=255) and one byte per secret byte.
pub struct Share {
    /// The x coordinate, never 0 (the secret is the value at 0).
    pub x: u8,
    /// The polynomials' values at `x`.
    pub y: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .field("y", &"<redacted>")
            .finish()
    }
}

/// Multiplication in GF(2^8); the loop runs the same way whatever the operands.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (carry & 0x1b);
        b >>= 1;
    }
    product
}

/// The inverse in GF(2^8) as a^254 (0 maps to 0), with a fixed sequence of multiplications.
fn inv(a: u8) -> u8 {
    let a2 = mul(a, a);
    let a3 = mul(a2, a);
    let a6 = mul(a3, a3);
    let a12 = mul(a6, a6);
    let a15 = mul(a12, a3);
    let a30 = mul(a15, a15);
    let a60 = mul(a30, a30);
    let a120 = mul(a60, a60);
    let a126 = mul(a120, a6);
    let a127 = mul(a126, a);
    mul(a127, a127)
}

/// Evaluates the polynomial with `coefficients` (constant term first) at `x`.
fn eval(coefficients: &[u8], x: u8) -> u8 {
    coefficients
        .iter()
        .rev()
        .fold(0u8, |acc, c| mul(acc, x) ^ c)
}

fn check_parameters(shares: usize, threshold: usize) -> Result<()> {
    if threshold < 2 {
        return Err(invalid_input("the threshold must be at least 2"));
    }
    if shares < threshold {
        return Err(invalid_input(
            "there must be at least as many shares as the threshold",
        ));
    }
    if shares > 255 {
        return Err(invalid_input("at most 255 shares"));
    }
    Ok(())
}

/// Splits `secret` into `shares` shares (x = 1..=shares), any `threshold` of which give it back.
pub fn split(secret: &[u8], shares: usize, threshold: usize) -> Result<Vec<Share>> {
    check_parameters(shares, threshold)?;
    if secret.is_empty() {
        return Err(invalid_input("the secret is empty"));
    }
    let mut randomness = Zeroizing::new(vec![0u8; secret.len() * (threshold - 1)]);
    crate::fill_random(&mut randomness)?;
    Ok(split_with(secret, shares, threshold, &randomness))
}

/// [`split`] with the non-constant coefficients given (`threshold - 1` per secret byte).
fn split_with(secret: &[u8], shares: usize, threshold: usize, randomness: &[u8]) -> Vec<Share> {
    let mut out: Vec<Share> = (1..=shares)
        .map(|x| Share {
            x: x as u8,
            y: Zeroizing::new(Vec::with_capacity(secret.len())),
        })
        .collect();
    let mut coefficients = Zeroizing::new(vec![0u8; threshold]);
    for (i, byte) in secret.iter().enumerate() {
        coefficients[0] = *byte;
        coefficients[1..]
            .copy_from_slice(&randomness[i * (threshold - 1)..(i + 1) * (threshold - 1)]);
        for share in &mut out {
            share.y.push(eval(&coefficients, share.x));
        }
    }
    out
}

/// The secret that `shares` (at least the threshold of them) were split from. Refused: no shares,
/// one share, an x of 0, two shares with the same x, shares of different lengths. With fewer
/// shares than the threshold the answer is some value unrelated to the secret: callers check what
/// they recombine (Keyshift with a sealed verifier).
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>> {
    if shares.len() < 2 {
        return Err(invalid_input("at least two shares are needed"));
    }
    let len = shares[0].y.len();
    if len == 0 {
        return Err(invalid_input("a share is empty"));
    }
    for (i, share) in shares.iter().enumerate() {
        if share.x == 0 {
            return Err(invalid_input("a share has x = 0"));
        }
        if share.y.len() != len {
            return Err(invalid_input("the shares have different lengths"));
        }
        if shares[..i].iter().any(|other| other.x == share.x) {
            return Err(invalid_input("the same share is given twice"));
        }
    }
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); subtraction is xor.
    let basis: Vec<u8> = shares
        .iter()
        .enumerate()
        .map(|(i, si)| {
            shares
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(1u8, |acc, (_, sj)| mul(acc, mul(sj.x, inv(sj.x ^ si.x))))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (share, l) in shares.iter().zip(&basis) {
        for (out, y) in secret.iter_mut().zip(share.y.iter()) {
            *out ^= mul(*y, *l);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow reference multiplication (shift-and-add with reduction), for the field tests.
    fn mul_reference(a: u8, b: u8) -> u8 {
        let mut wide = 0u16;
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                wide ^= u16::from(a) << bit;
            }
        }
        for bit in (8..16).rev() {
            if wide & (1 << bit) != 0 {
                wide ^= 0x11b << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn field_arithmetic_matches_the_reference_and_aes() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_reference(a, b), "{a} * {b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
        }
        assert_eq!(inv(0), 0);
        // FIPS 197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
    }

    fn pick(shares: &[Share], xs: &[u8]) -> Vec<Share> {
        xs.iter()
            .map(|x| {
                let s = shares.iter().find(|s| s.x == *x).unwrap();
                Share {
                    x: s.x,
                    y: s.y.clone(),
                }
            })
            .collect()
    }

    #[test]
    fn any_threshold_subset_recombines() {
        let secret: Vec<u8> = (0..32).map(|i| i * 7 + 3).collect();
        let shares = split(&secret, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        for a in 1..=5u8 {
            for b in a + 1..=5 {
                for c in b + 1..=5 {
                    let got = combine(&pick(&shares, &[a, b, c])).unwrap();
                    assert_eq!(got.as_slice(), secret.as_slice(), "{a} {b} {c}");
                }
            }
        }
        // More than the threshold works too; order does not matter.
        let got = combine(&pick(&shares, &[5, 1, 3, 2])).unwrap();
        assert_eq!(got.as_slice(), secret.as_slice());
        // Fewer than the threshold gives something else.
        let got = combine(&pick(&shares, &[1, 2])).unwrap();
        assert_ne!(got.as_slice(), secret.as_slice());
    }

    #[test]
    fn threshold_minus_one_shares_are_consistent_with_every_secret() {
        // Threshold 3: for a fixed secret byte, the 65,536 choices of the two random coefficients
        // give each pair of values at x = 1, 2 exactly once. So two shares' bytes are uniform and
        // independent of the secret: every secret byte is equally consistent with what they hold.
        for secret in [0x00u8, 0x5a, 0xff] {
            let mut seen = vec![0u8; 1 << 16];
            for c1 in 0..=255u8 {
                for c2 in 0..=255u8 {
                    let shares = split_with(&[secret], 2, 3, &[c1, c2]);
                    let index = usize::from(shares[0].y[0]) << 8 | usize::from(shares[1].y[0]);
                    seen[index] += 1;
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "secret {secret:#x}");
        }
        // And directly: two real shares plus a third point completed for any candidate secret
        // recombine to that candidate.
        let shares = split(&[0x42], 3, 3).unwrap();
        for candidate in 0..=255u8 {
            let known = pick(&shares, &[1, 2]);
            // The unique degree-2 polynomial through (0, candidate), (1, y1), (2, y2), at x = 3.
            let points = [
                Share {
                    x: 1,
                    y: known[0].y.clone(),
                },
                Share {
                    x: 2,
                    y: known[1].y.clone(),
                },
            ];
            let y3 = lagrange_at(
                &[(0, candidate), (1, points[0].y[0]), (2, points[1].y[0])],
                3,
            );
            let mut all = pick(&shares, &[1, 2]);
            all.push(Share {
                x: 3,
                y: Zeroizing::new(vec![y3]),
            });
            assert_eq!(combine(&all).unwrap()[0], candidate);
        }
    }

    fn lagrange_at(points: &[(u8, u8)], x: u8) -> u8 {
        let mut acc = 0u8;
        for (i, (xi, yi)) in points.iter().enumerate() {
            let mut l = 1u8;
            for (j, (xj, _)) in points.iter().enumerate() {
                if i != j {
                    l = mul(l, mul(x ^ xj, inv(xi ^ xj)));
                }
            }
            acc ^= mul(*yi, l);
        }
        acc
    }

    #[test]
    fn malformed_share_sets_are_refused() {
        let shares = split(b"0123456789abcdef", 4, 2).unwrap();
        let cases: Vec<(&str, Vec<Share>)> = vec![
            ("none", vec![]),
            ("one", pick(&shares, &[1])),
            ("duplicate", pick(&shares, &[2, 2])),
            (
                "x = 0",
                vec![
                    Share {
                        x: 0,
                        y: shares[0].y.clone(),
                    },
                    pick(&shares, &[2]).remove(0),
                ],
            ),
            (
                "short",
                vec![
                    Share {
                        x: 1,
                        y: Zeroizing::new(shares[0].y[..15].to_vec()),
                    },
                    pick(&shares, &[2]).remove(0),
                ],
            ),
            (
                "empty",
                vec![
                    Share {
                        x: 1,
                        y: Zeroizing::new(vec![]),
                    },
                    Share {
                        x: 2,
                        y: Zeroizing::new(vec![]),
                    },
                ],
            ),
        ];
        for (name, set) in cases {
            assert!(combine(&set).is_err(), "{name} accepted");
        }
        for (n, m) in [(3, 1), (2, 3), (256, 2), (3, 0)] {
            assert!(split(b"s", n, m).is_err(), "{n} of {m}");
        }
        assert!(split(b"", 3, 2).is_err());
        // A corrupted share recombines to a wrong secret (detected by the caller's verifier).
        let mut bad = pick(&shares, &[1, 2]);
        bad[0].y[3] ^= 1;
        assert_ne!(combine(&bad).unwrap().as_slice(), b"0123456789abcdef");
    }
}
