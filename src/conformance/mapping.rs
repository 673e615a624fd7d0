//! Native → FOCUS mappings as data (`schemas/<name>.toml`): how a provider's own bill columns
//! become FOCUS columns, without Rust per provider.
//!
//! A mapping gives, for FOCUS columns:
//! - `columns`: the native header names it is read from (every known spelling: English variants,
//!   the Chinese headers of `zh_cn` files), first one present wins;
//! - `derived`: columns set from one native column through a table (Tencent's Transaction Type
//!   → ChargeCategory, ChargeClass, ChargeFrequency); a value missing from the table is a row
//!   problem, never a guess;
//! - `constants`: fixed values (ProviderName);
//! - `zero_when`: a FOCUS column set to 0 on rows where another has a value (BilledCost on
//!   Credit rows, per Tencent's own FOCUS mapping);
//! - `unavailable`: mandatory FOCUS columns the native format simply does not have (written as
//!   null, and said so), rather than rejecting every file.
//!
//! A mapping may `extends` another (followed by [`crate::config::extends_chain`], which refuses a
//! cycle), and is found by the lookup rule of [`crate::config`].
//!
//! BillingPeriodStart/End come from the bill month in the object's name. Every native column
//! without a FOCUS home is kept as `x_<Name>` (spaces and punctuation dropped), so nothing is lost.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{self, Kind};
use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// Native header names of the source column.
    pub from: Vec<String>,
    /// FOCUS columns set by the table, in the order of each table row's values.
    pub sets: Vec<String>,
    /// Native value (matched trimmed, case-insensitively) → one value per `sets` ("" = null).
    pub table: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroWhen {
    pub column: String,
    pub when_column: String,
    pub equals: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub name: String,
    /// Another mapping this one starts from: its entries apply unless this file names the same
    /// FOCUS column (so two formats of one provider share one Transaction Type table).
    #[serde(default)]
    pub extends: Option<String>,
    /// UTC offset of the native date-times (Tencent: Beijing time, +08:00).
    #[serde(default)]
    pub time_offset: String,
    #[serde(default)]
    pub columns: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub derived: Vec<Derived>,
    #[serde(default)]
    pub constants: HashMap<String, String>,
    #[serde(default)]
    pub zero_when: Vec<ZeroWhen>,
    #[serde(default)]
    pub unavailable: Vec<String>,
    /// Native columns (aliases) holding the row's own billing month (`YYYY-MM` or `YYYYMM`).
    /// Where the file has one, BillingPeriodStart/End come from it rather than from the file's
    /// name, so a row of another month is seen as such (and held out: it cannot be placed in
    /// this file's snapshot); a value that is not a month leaves the row unplaceable.
    #[serde(default)]
    pub billing_month: Vec<String>,
}

impl Mapping {
    /// Loads mapping `name` from `dir` (else the embedded copy), with the mappings it extends
    /// laid under it.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Mapping> {
        let chain = config::extends_chain(Kind::Mapping, name, |n| {
            let (text, origin) = config::text(dir, Kind::Mapping, n)?;
            let mapping: Mapping = config::parse(&text, &format!("mapping {n} ({origin})"))?;
            let base = mapping.extends.clone();
            Ok((mapping, base))
        })?;
        let mut layers = chain.into_iter().rev();
        let Some(base) = layers.next() else {
            return Err(Error::Config(format!("mapping {name}: nothing loaded")));
        };
        let mut mapping = layers.fold(base, Mapping::overlaid_by);
        for d in &mut mapping.derived {
            for (k, v) in std::mem::take(&mut d.table) {
                if v.len() != d.sets.len() {
                    return Err(Error::Config(format!(
                        "mapping {name}: table row {k:?} has {} values for {} columns",
                        v.len(),
                        d.sets.len()
                    )));
                }
                d.table.insert(normalise(&k), v);
            }
        }
        Ok(mapping)
    }

    /// `self` with `top`'s entries taking precedence.
    fn overlaid_by(mut self, top: Mapping) -> Mapping {
        for (focus, aliases) in top.columns {
            self.columns.insert(focus, aliases);
        }
        self.constants.extend(top.constants);
        for d in top.derived {
            self.derived
                .retain(|b| !b.sets.iter().any(|s| d.sets.contains(s)));
            self.derived.push(d);
        }
        self.zero_when.extend(top.zero_when);
        for u in top.unavailable {
            self.columns.remove(&u);
            if !self.unavailable.contains(&u) {
                self.unavailable.push(u);
            }
        }
        if !top.billing_month.is_empty() {
            self.billing_month = top.billing_month;
        }
        Mapping {
            name: top.name,
            extends: None,
            time_offset: if top.time_offset.is_empty() {
                self.time_offset
            } else {
                top.time_offset
            },
            ..self
        }
    }

    /// Index of the first header matching one of `aliases` (exactly, else ignoring case and
    /// surrounding spaces).
    pub fn find(header: &[String], aliases: &[String]) -> Option<usize> {
        aliases
            .iter()
            .find_map(|a| header.iter().position(|h| h == a))
            .or_else(|| {
                aliases
                    .iter()
                    .find_map(|a| header.iter().position(|h| normalise(h) == normalise(a)))
            })
    }
}

/// How table keys and values are compared: trimmed, lower-case.
pub fn normalise(s: &str) -> String {
    s.trim().to_lowercase()
}

/// `x_` name for a native column: letters and digits kept (any script), the rest dropped.
pub fn custom_name(native: &str) -> String {
    let kept: String = native.chars().filter(|c| c.is_alphanumeric()).collect();
    format!("x_{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_names_keep_letters_of_any_script() {
        assert_eq!(custom_name("RI Deduction (Cost)"), "x_RIDeductionCost");
        assert_eq!(custom_name("代金券支出(元)"), "x_代金券支出元");
    }

    #[test]
    fn the_resource_bill_extends_the_detail_bill() {
        let m = Mapping::load("tencent-resource-bill", None).unwrap();
        assert_eq!(m.time_offset, "+08:00");
        assert!(m.unavailable.contains(&"PricingQuantity".to_string()));
        assert!(!m.columns.contains_key("PricingQuantity"));
        assert_eq!(
            m.columns["ChargeDescription"][0],
            "Configuration Description"
        );
        assert!(m.derived[0].table.contains_key("voucher deduction"));
    }

    #[test]
    fn the_tencent_mapping_loads() {
        let m = Mapping::load("tencent-detail-bill", None).unwrap();
        assert!(m.columns["BilledCost"].contains(&"Total Cost (Including Tax)".to_string()));
        let t = &m.derived[0];
        assert_eq!(t.sets, ["ChargeCategory", "ChargeClass", "ChargeFrequency"]);
        assert!(t.table.contains_key("voucher deduction"));
    }

    #[test]
    fn an_extends_cycle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, base: &str| {
            let text = format!("name = \"{name}\"\nextends = \"{base}\"\n");
            std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
        };
        write("a", "b");
        write("b", "a");
        write("self", "self");
        let e = Mapping::load("a", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping a extends itself: a -> b -> a"), "{e}");
        let e = Mapping::load("self", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping self extends itself"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let e = toml::from_str::<Mapping>("name = \"m\"\ntime_ofset = \"+08:00\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `time_ofset`"), "{e}");
    }
}
