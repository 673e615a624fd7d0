//! Sharded runs: `billpipe run --shard I/N` loads only the snapshot units whose stable hash
//! falls in shard I of N, so N processes (a Kubernetes Indexed Job, one pod per index) load one
//! lake at once without a scheduler of billpipe's own. The hash is of the unit's display form
//! (`unit/account/month`) with the same fixed 128-bit FNV-1a the partition paths use, so a unit
//! belongs to the same shard on every machine and in every billpipe version: a shard that dies
//! and is retried by the Job takes exactly the same units again.
//!
//! What keeps shards apart: each holds its own lock (`_billpipe/locks/shard-I-of-N.json`) and
//! stages in its own folder, their units are disjoint, and the ledger takes one journal object
//! per commit, so concurrent commits never overwrite each other. A sharded run and an unsharded
//! one exclude each other (see `lock`).

use std::fmt;
use std::str::FromStr;

use crate::state::classify::SnapshotUnit;

/// Shard `index` of `count` (0-based, as Kubernetes' `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the number of shards {count} (indices are 0-based, as JOB_COMPLETION_INDEX)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a unit belongs to, out of `count`.
    pub fn of(unit: &SnapshotUnit, count: u32) -> u32 {
        let hash = crate::partition::stable_hash(unit.to_string().as_bytes());
        (hash % u128::from(count.max(1))) as u32
    }

    /// Whether this shard loads `unit`.
    pub fn takes(&self, unit: &SnapshotUnit) -> bool {
        Shard::of(unit, self.count) == self.index
    }

    /// Whether this shard reports what belongs to no unit (names that are not bills, near
    /// misses): shard 0 does, so each is said once across the shards.
    pub fn reports_the_rest(&self) -> bool {
        self.index == 0
    }

    /// `shard-I-of-N`: the name of its lock and staging folder.
    pub fn label(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not I/N (shard index / number of shards)"))?;
        let number = |t: &str, what: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} {t:?} in {s:?} is not a number"))
        };
        Shard::new(number(i, "shard index")?, number(n, "number of shards")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(account: &str, month: &str) -> SnapshotUnit {
        SnapshotUnit {
            unit: "tencent".into(),
            account: account.into(),
            month: month.into(),
        }
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x/3".parse::<Shard>().is_err());
        assert!("3".parse::<Shard>().is_err());
        assert_eq!(
            Shard::new(2, 3).map(|s| s.label()).as_deref(),
            Ok("shard-2-of-3")
        );
    }

    #[test]
    fn every_unit_is_in_exactly_one_shard_and_they_spread() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0u32; 3];
        for a in 0..60 {
            for m in ["2025-10", "2025-11", "2025-12"] {
                let u = unit(&format!("1000{a:08}"), m);
                let owners: Vec<_> = shards.iter().filter(|s| s.takes(&u)).collect();
                assert_eq!(owners.len(), 1);
                sizes[owners[0].index as usize] += 1;
            }
        }
        assert!(sizes.iter().all(|&n| n > 30), "{sizes:?}");
        // Fixed forever: the same unit is in the same shard in every version.
        assert_eq!(Shard::of(&unit("200020002001", "2025-11"), 1), 0);
    }
}
