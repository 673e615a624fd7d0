//! Unit tests of the rules module: JSON object checks, rule definitions, month bounds.

use super::*;

#[test]
fn json_objects_are_judged_as_focus_says() {
    assert_eq!(
        json_problem(r#"{"项目":"电商","n":1,"ok":true,"x":null}"#, true),
        None
    );
    assert_eq!(json_problem("{}", true), None);
    assert!(json_problem(r#"{"a":{"b":1}}"#, true)
        .unwrap()
        .contains("nested"));
    assert!(json_problem(r#"{"a":[1]}"#, true)
        .unwrap()
        .contains("nested"));
    assert_eq!(json_problem(r#"{"a":{"b":1}}"#, false), None);
    assert!(json_problem(r#"{"a":1,"a":2}"#, true)
        .unwrap()
        .contains("twice"));
    assert!(json_problem("[1,2]", true)
        .unwrap()
        .contains("not a JSON object"));
    assert!(json_problem("{'a':1}", true)
        .unwrap()
        .contains("not valid JSON"));
    assert!(json_problem(r#"{"a":1} x"#, true).is_some());
}

#[test]
fn new_kinds_are_checked_when_loaded() {
    let def = |text: &str| -> RuleDef { toml::from_str(text).unwrap() };
    let base = "id = \"X\"\nmessage = \"m\"\n";
    let parent = def(&format!(
        "{base}kind = \"parent\"\ncolumns = [\"ServiceSubcategory\", \"ServiceCategory\"]"
    ));
    assert!(check_def(&parent).unwrap_err().contains("parents table"));
    let value = def(&format!(
        "{base}kind = \"value\"\ncolumns = [\"PricingCategory\"]"
    ));
    assert!(check_def(&value).unwrap_err().contains("needs a value"));
    let zero = def(&format!(
        "{base}kind = \"zero\"\ncolumns = [\"BilledCost\"]\nwhen_differ = [\"PublisherName\"]"
    ));
    assert!(check_def(&zero).unwrap_err().contains("two columns"));
    let ok = def(&format!(
        "{base}kind = \"zero\"\ncolumns = [\"BilledCost\"]\nwhen_differ = [\"PublisherName\", \"ProviderName\"]"
    ));
    assert_eq!(check_def(&ok), Ok(()));
}

#[test]
fn month_bounds_read_the_month_at_its_offset() {
    // December 2025 in Beijing time starts 2025-11-30T16:00:00Z.
    let (lo, hi) = month_bounds("2025-12", 8 * 3600).unwrap();
    assert_eq!(lo, 1_764_518_400_000_000);
    assert_eq!(hi - lo, 31 * 86_400 * 1_000_000);
    assert!(month_bounds("2025-13", 0).is_none());
}

#[test]
fn a_profile_extends_cycle_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, base: &str| {
        let text = format!("name = \"{name}\"\nextends = \"{base}\"\n");
        std::fs::write(dir.path().join(format!("profile-{name}.toml")), text).unwrap();
    };
    write("a", "b");
    write("b", "a");
    write("me", "me");
    let e = Profile::load("a", Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("profile a extends itself: a -> b -> a"), "{e}");
    let e = Profile::load("me", Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("profile me extends itself"), "{e}");
    // A chain without a cycle still lays each base under the profile above it.
    std::fs::write(
        dir.path().join("profile-top.toml"),
        "name = \"top\"\nextends = \"tencent\"\n[severity]\n\"*\" = \"warning\"\n",
    )
    .unwrap();
    let top = Profile::load("top", Some(dir.path())).unwrap();
    let tencent = Profile::load("tencent", None).unwrap();
    assert!(top.severity.len() > 1);
    assert_eq!(
        top.severity.len(),
        tencent.severity.len() + 1 - usize::from(tencent.severity.contains_key("*"))
    );
}

#[test]
fn an_unknown_profile_field_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "name = \"p\"\nseverities = {}\n").unwrap();
    let e = Profile::load(&path.to_string_lossy(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `severities`"), "{e}");
}
