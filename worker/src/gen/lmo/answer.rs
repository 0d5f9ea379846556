//! The parts π(x) is cut into, what each answers (as a task's text), and how the answers
//! combine into π(x).

/// A piece of π(x): see [`Context::parts`](super::Context::parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Base,
    Hard { lo: u64, hi: u64 },
    Easy { b_lo: usize, b_hi: usize },
    P2 { lo: u64, hi: u64 },
}

/// What a part found; [`PartAnswer::encode`] makes it a task's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswer {
    Base {
        y: u64,
        sum: i128,
        pi_sqrt: u64,
    },
    Hard {
        y: u64,
        sum: i128,
        mu_sum: Vec<i64>,
        count: Vec<u64>,
    },
    Easy {
        sum: i128,
    },
    P2 {
        sum: u64,
        n: u64,
        primes: u64,
    },
}

impl PartAnswer {
    /// As a task's answer: a letter and numbers, `:`-separated; lists `,`-separated.
    pub fn encode(&self) -> String {
        match self {
            PartAnswer::Base { y, sum, pi_sqrt } => format!("b:{y}:{sum}:{pi_sqrt}"),
            PartAnswer::Easy { sum } => format!("e:{sum}"),
            PartAnswer::P2 { sum, n, primes } => format!("p:{sum}:{n}:{primes}"),
            PartAnswer::Hard {
                y,
                sum,
                mu_sum,
                count,
            } => {
                let mu: Vec<String> = mu_sum.iter().map(|v| v.to_string()).collect();
                // Counts as differences from the previous b (smaller numbers).
                let mut prev = 0i128;
                let cs: Vec<String> = count
                    .iter()
                    .map(|&c| {
                        let d = c as i128 - prev;
                        prev = c as i128;
                        d.to_string()
                    })
                    .collect();
                format!("h:{y}:{sum}:{}:{}", mu.join(","), cs.join(","))
            }
        }
    }

    /// Reads an answer made by [`PartAnswer::encode`].
    pub fn decode(s: &str) -> Result<PartAnswer, String> {
        let f: Vec<&str> = s.split(':').collect();
        let int = |t: &str| t.parse::<i128>().map_err(|_| format!("bad number {t:?}"));
        let nat = |t: &str| t.parse::<u64>().map_err(|_| format!("bad number {t:?}"));
        let shown: String = s.chars().take(40).collect();
        match f.as_slice() {
            ["b", y, sum, pi] => Ok(PartAnswer::Base {
                y: nat(y)?,
                sum: int(sum)?,
                pi_sqrt: nat(pi)?,
            }),
            ["e", sum] => Ok(PartAnswer::Easy { sum: int(sum)? }),
            ["p", sum, n, primes] => Ok(PartAnswer::P2 {
                sum: nat(sum)?,
                n: nat(n)?,
                primes: nat(primes)?,
            }),
            ["h", y, sum, mu, cs] => {
                let list = |t: &str| -> Result<Vec<i128>, String> {
                    if t.is_empty() {
                        return Ok(Vec::new());
                    }
                    t.split(',').map(int).collect()
                };
                let mu_sum = list(mu)?
                    .into_iter()
                    .map(|v| i64::try_from(v).map_err(|_| format!("bad μ sum {v}")))
                    .collect::<Result<Vec<i64>, String>>()?;
                let mut prev = 0i128;
                let count = list(cs)?
                    .into_iter()
                    .map(|d| {
                        prev += d;
                        u64::try_from(prev).map_err(|_| format!("bad count {prev}"))
                    })
                    .collect::<Result<Vec<u64>, String>>()?;
                if mu_sum.len() != count.len() {
                    return Err(format!("hard part {shown:?}: lists of unequal length"));
                }
                Ok(PartAnswer::Hard {
                    y: nat(y)?,
                    sum: int(sum)?,
                    mu_sum,
                    count,
                })
            }
            _ => Err(format!("not a part of π(x): {shown:?}")),
        }
    }
}

/// π(x) from its parts' answers, in the order of [`Context::parts`](super::Context::parts) (any k): the hard
/// intervals add what the intervals before them left at each stage, P2's intervals what
/// the primes before them counted.
pub fn combine(answers: &[PartAnswer]) -> Result<u64, String> {
    let mut total: i128 = 0;
    let mut pi_sqrt = None;
    let mut y_seen = None;
    let mut same_y = |y: u64| match y_seen.replace(y) {
        Some(other) if other != y => Err(format!("parts computed with y = {other} and y = {y}")),
        _ => Ok(()),
    };
    let mut hard_before: Vec<u64> = Vec::new();
    let mut p2_before: Option<u64> = None;
    let mut p2_sum: i128 = 0;
    for a in answers {
        match a {
            PartAnswer::Base {
                y,
                sum,
                pi_sqrt: ps,
            } => {
                same_y(*y)?;
                total += sum;
                pi_sqrt = Some(*ps);
            }
            PartAnswer::Easy { sum } => total += sum,
            PartAnswer::Hard {
                y,
                sum,
                mu_sum,
                count,
            } => {
                same_y(*y)?;
                if hard_before.is_empty() {
                    hard_before = vec![0; count.len()];
                }
                if count.len() != hard_before.len() {
                    return Err("hard parts of different lengths".into());
                }
                total += sum;
                for ((before, &mu), &c) in hard_before.iter_mut().zip(mu_sum).zip(count) {
                    total -= mu as i128 * *before as i128;
                    *before += c;
                }
            }
            PartAnswer::P2 { sum, n, primes } => {
                let before = match p2_before {
                    Some(b) => b,
                    None => pi_sqrt.ok_or("the base part must come before P2's")?,
                };
                p2_sum += *sum as i128 + *n as i128 * before as i128;
                p2_before = Some(before + primes);
            }
        }
    }
    if pi_sqrt.is_none() {
        return Err("the base part is missing".into());
    }
    u64::try_from(total - p2_sum).map_err(|_| format!("π(x) came out as {}", total - p2_sum))
}
