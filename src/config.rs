//! Where configuration comes from, and how it is read: the one lookup rule for the schemas
//! folder, the copies compiled into the binary, strict TOML parsing, and `extends` chains.
//!
//! **The lookup rule.** Schemas, mappings and profiles are read from the *schemas folder*, which
//! is `schemas/` beside the pipeline file's folder (`<pipeline dir>/../schemas`, so
//! `pipelines/x.toml` reads `schemas/`). Without a pipeline file (`--pipeline` not given, and
//! for `validate`, which takes none) the pipeline is the default `pipelines/tencent.toml` of
//! the working directory, so the folder is `./schemas`. A file that folder does not have (or
//! the whole folder, for an installed binary run anywhere) comes from the copy compiled into the
//! binary. Library callers may pass any folder explicitly (`Pipeline::parse`, `Schema::load`).
//! Every command goes through [`schema_dir`], so `run`, `plan`, `totals` and `validate` read
//! the same files.
//!
//! **Strict files.** Every config struct refuses unknown fields (`deny_unknown_fields`): a
//! misspelt key (`profle = "tencent"`) is an error naming it, never a silently ignored line.
//!
//! **`extends`.** Profiles and mappings may extend another one; [`extends_chain`] follows the
//! chain and refuses a cycle (`a extends b extends a`) by name instead of recursing forever.
//!
//! A leaf module: it knows file names and kinds, not what the files mean.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The pipeline used when none is given, relative to the working directory.
pub const DEFAULT_PIPELINE: &str = "pipelines/tencent.toml";

/// The default pipeline compiled into the binary, for runs outside the repository.
pub const EMBEDDED_PIPELINE: &str = include_str!("../pipelines/tencent.toml");

/// The kinds of file the schemas folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `focus-<version>.toml`: a FOCUS version's columns and rules.
    Schema,
    /// `<name>.toml`: a native format's mapping to FOCUS.
    Mapping,
    /// `profile-<name>.toml`: severities and provider spellings.
    Profile,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Schema => "schema",
            Kind::Mapping => "mapping",
            Kind::Profile => "profile",
        }
    }

    /// The file name of `name` of this kind.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Kind::Profile => format!("profile-{name}.toml"),
            Kind::Schema | Kind::Mapping => format!("{name}.toml"),
        }
    }

    /// The copies compiled into the binary: (name, text).
    fn embedded(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Schema => EMBEDDED_SCHEMAS,
            Kind::Mapping => EMBEDDED_MAPPINGS,
            Kind::Profile => EMBEDDED_PROFILES,
        }
    }
}

const EMBEDDED_SCHEMAS: &[(&str, &str)] = &[
    ("focus-1.0", include_str!("../schemas/focus-1.0.toml")),
    ("focus-1.1", include_str!("../schemas/focus-1.1.toml")),
    ("focus-1.2", include_str!("../schemas/focus-1.2.toml")),
    ("focus-1.3", include_str!("../schemas/focus-1.3.toml")),
];

const EMBEDDED_MAPPINGS: &[(&str, &str)] = &[
    (
        "tencent-detail-bill",
        include_str!("../schemas/tencent-detail-bill.toml"),
    ),
    (
        "tencent-resource-bill",
        include_str!("../schemas/tencent-resource-bill.toml"),
    ),
];

const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("strict", include_str!("../schemas/profile-strict.toml")),
    ("tencent", include_str!("../schemas/profile-tencent.toml")),
    ("off", include_str!("../schemas/profile-off.toml")),
    (
        "tencent-l2",
        include_str!("../schemas/profile-tencent-l2.toml"),
    ),
    (
        "strict-gate",
        include_str!("../schemas/profile-strict-gate.toml"),
    ),
];

/// The schemas folder of pipeline file `pipeline` (`None`: the default pipeline), when it
/// exists. See the module doc for the rule.
pub fn schema_dir(pipeline: Option<&Path>) -> Option<PathBuf> {
    let dir = match pipeline {
        Some(p) => p
            .parent()
            .unwrap_or(Path::new(""))
            .join("..")
            .join("schemas"),
        None => PathBuf::from("schemas"),
    };
    dir.is_dir().then_some(dir)
}

/// A pipeline file's text, where it came from, and its schemas folder. Without a path, the
/// default pipeline: `pipelines/tencent.toml` if present, else the embedded copy.
pub struct PipelineSource {
    pub text: String,
    pub origin: String,
    pub schema_dir: Option<PathBuf>,
}

pub fn pipeline(path: Option<&Path>) -> Result<PipelineSource> {
    let default = Path::new(DEFAULT_PIPELINE);
    let (text, origin) = match path {
        Some(p) => (read(p)?, p.display().to_string()),
        None if default.exists() => (read(default)?, DEFAULT_PIPELINE.to_string()),
        None => (
            EMBEDDED_PIPELINE.to_string(),
            "embedded tencent pipeline".to_string(),
        ),
    };
    Ok(PipelineSource {
        text,
        origin,
        schema_dir: schema_dir(path),
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The text of `name` of `kind`: the file in `dir` when it is there, else the copy compiled
/// into the binary, with where it came from (a path, or "embedded <kind> <name>").
pub fn text(dir: Option<&Path>, kind: Kind, name: &str) -> Result<(String, String)> {
    if let Some(path) = dir
        .map(|d| d.join(kind.file_name(name)))
        .filter(|p| p.exists())
    {
        return Ok((read(&path)?, path.display().to_string()));
    }
    kind.embedded()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| (t.to_string(), format!("embedded {} {name}", kind.what())))
        .ok_or_else(|| Error::Config(format!("unknown {} {name:?}", kind.what())))
}

/// Every name of `kind` there is: the embedded ones, then those only `dir` has (file order).
/// For schemas, every `.toml` of the folder is a candidate (mappings too): callers filter.
pub fn names(dir: Option<&Path>, kind: Kind) -> Vec<String> {
    let mut names: Vec<String> = kind.embedded().iter().map(|(n, _)| n.to_string()).collect();
    let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) else {
        return names;
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".toml")?;
            match kind {
                Kind::Profile => stem.strip_prefix("profile-").map(str::to_string),
                Kind::Schema | Kind::Mapping => Some(stem.to_string()),
            }
        })
        .filter(|n| !names.contains(n))
        .collect();
    found.sort();
    names.append(&mut found);
    names
}

/// Parses a config file's TOML, naming `origin` in the error (which names an unknown field).
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))
}

/// Follows an `extends` chain from `name`: `load` reads one file and returns it with the name
/// it extends. Returns the files top first (`name`, its base, the base's base, ...). A name
/// met twice is a cycle, refused naming it (`profile a extends b, which extends a`).
pub fn extends_chain<T>(
    kind: Kind,
    name: &str,
    mut load: impl FnMut(&str) -> Result<(T, Option<String>)>,
) -> Result<Vec<T>> {
    let mut seen = vec![name.to_string()];
    let mut chain = Vec::new();
    let mut next = Some(name.to_string());
    while let Some(current) = next.take() {
        let (item, base) = load(&current)?;
        chain.push(item);
        if let Some(base) = base {
            if seen.contains(&base) {
                let path: Vec<&str> = seen.iter().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "{} {name} extends itself: {} -> {base}",
                    kind.what(),
                    path.join(" -> ")
                )));
            }
            seen.push(base.clone());
            next = Some(base);
        }
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_followed_and_a_cycle_is_named() {
        let links = |n: &str| match n {
            "a" => Some("b".to_string()),
            "b" => Some("c".to_string()),
            "c" => None,
            "x" => Some("y".to_string()),
            "y" => Some("x".to_string()),
            _ => Some(n.to_string()),
        };
        let load = |n: &str| Ok((n.to_string(), links(n)));
        assert_eq!(
            extends_chain(Kind::Profile, "a", load).unwrap(),
            ["a", "b", "c"]
        );
        let e = extends_chain(Kind::Mapping, "x", load)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping x extends itself: x -> y -> x"), "{e}");
        let e = extends_chain(Kind::Profile, "s", load)
            .unwrap_err()
            .to_string();
        assert!(e.contains("profile s extends itself: s -> s"), "{e}");
    }

    #[test]
    fn embedded_copies_are_found_by_name_and_kind() {
        let (text, origin) = text(None, Kind::Profile, "strict").unwrap();
        assert!(text.contains("name"));
        assert_eq!(origin, "embedded profile strict");
        let e = super::text(None, Kind::Schema, "focus-9.9").unwrap_err();
        assert!(
            e.to_string().contains("unknown schema \"focus-9.9\""),
            "{e}"
        );
        assert!(names(None, Kind::Profile).contains(&"tencent-l2".to_string()));
    }
}
