//! Profiles (`schemas/profile-<name>.toml`): a provider's severities and spellings of allowed
//! values, without code. A profile may extend another; the chain is followed by
//! [`crate::config::extends_chain`], which refuses a cycle by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{self, Kind};
use crate::Result;

use super::Severity;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// A profile this one adds to: its entries apply unless this one sets the same key.
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    pub severity: HashMap<String, Severity>,
    /// Per column: a provider's spellings of allowed values, and the FOCUS value each stands
    /// for. Such values pass `Allowed.<Column>` and are counted under `Variant.<Column>`.
    #[serde(default)]
    pub variants: BTreeMap<String, BTreeMap<String, String>>,
    /// `"error"`: every rule at severity error quarantines instead (gatekeeping: rows breaking
    /// the spec are held out of the lake). Set here or with `run --quarantine-on error`.
    #[serde(default)]
    pub quarantine_on: Option<QuarantineOn>,
}

/// Which findings hold rows out of the lake besides those at severity `quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineOn {
    Error,
}

impl Profile {
    /// The severity this profile gives rule `id`: an entry for it, else the longest matching
    /// family entry (`"NullPlaceholder.*"`), else `"*"`, else `default`.
    pub fn severity_of(&self, id: &str, default: Severity) -> Severity {
        let severity = self.configured_severity(id, default);
        match (severity, self.quarantine_on) {
            (Severity::Error, Some(QuarantineOn::Error)) => Severity::Quarantine,
            (s, _) => s,
        }
    }

    fn configured_severity(&self, id: &str, default: Severity) -> Severity {
        if let Some(s) = self.severity.get(id) {
            return *s;
        }
        self.severity
            .iter()
            .filter_map(|(k, s)| {
                let prefix = k.strip_suffix('*')?;
                id.starts_with(prefix).then_some((prefix.len(), *s))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
            .unwrap_or(default)
    }

    /// Loads a profile by name (`profile-<name>.toml` in `dir`, else the embedded copy) or,
    /// when `name` ends in `.toml`, from that file; profiles it extends are names in `dir`.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Profile> {
        let chain = config::extends_chain(Kind::Profile, name, |n| {
            let (text, origin) = if n.ends_with(".toml") {
                let p = Path::new(n);
                let text = std::fs::read_to_string(p).map_err(|e| crate::Error::io(p, e))?;
                (text, p.display().to_string())
            } else {
                config::text(dir, Kind::Profile, n)?
            };
            let mut profile: Profile = config::parse(&text, &format!("profile {n} ({origin})"))?;
            let base = profile.extends.take();
            Ok((profile, base))
        })?;
        let mut layers = chain.into_iter().rev();
        let Some(base) = layers.next() else {
            return Err(crate::Error::Config(format!(
                "profile {name}: nothing loaded"
            )));
        };
        Ok(layers.fold(base, Profile::over))
    }

    /// `self` with `base`'s entries where `self` sets none.
    fn over(mut self, base: Profile) -> Profile {
        self.quarantine_on = self.quarantine_on.or(base.quarantine_on);
        for (k, v) in base.severity {
            self.severity.entry(k).or_insert(v);
        }
        for (column, spellings) in base.variants {
            let mine = self.variants.entry(column).or_default();
            for (k, v) in spellings {
                mine.entry(k).or_insert(v);
            }
        }
        self
    }
}
