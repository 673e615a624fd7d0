//! Unit tests of `classify`: Tencent's file names, near misses, and what a pipeline file
//! may say (snapshot kinds against patterns, unknown fields).

use super::*;

fn obj(key: &str) -> ObjectInfo {
    ObjectInfo {
        key: key.into(),
        size: 1,
        etag: "e".into(),
        last_modified: None,
    }
}

fn bill(p: &Pipeline, key: &str) -> BillFile {
    match p.classify(&obj(key)) {
        Classification::Bill(b) => *b,
        Classification::Unrecognised(r) | Classification::NearMiss(r) => panic!("{key}: {r}"),
    }
}

#[test]
fn tencent_focus_names() {
    let p = Pipeline::load(None).unwrap();
    let d = bill(&p, "FOCUS-bill_details-200020002001-20251209.CSV");
    assert_eq!(d.family, "focus-daily");
    assert_eq!(d.unit.account, "200020002001");
    assert_eq!(d.unit.month, "2025-12");
    assert_eq!(d.rank, SnapshotRank::Cumulative("20251209".into()));

    let m = bill(&p, "some/prefix/focus-bill_details-200020002001-202512.csv");
    assert_eq!(m.family, "focus-monthly");
    assert_eq!(m.rank, SnapshotRank::Final);
    assert_eq!(m.unit, d.unit);
    assert!(m.rank > d.rank);
    assert!(
        SnapshotRank::Cumulative("20251210".into()) > SnapshotRank::Cumulative("20251209".into())
    );
    // Tencent's native detail bills (every documented name form), with their mapping.
    for (key, family, month, unit) in [
        ("100010445724-20241208-by_used_time-bill_details.zip", "detail-daily", "2024-12", "tencent"),
        ("200020475883-20210810-bill_details.zip", "detail-daily", "2021-08", "tencent"),
        ("100010445724-202411-by_used_time-bill_details.zip", "detail-monthly", "2024-11", "tencent"),
        ("100010445724-202411-by_used_time-bill_pack.zip", "bill-pack", "2024-11", "tencent"),
        ("100000000001-20221128-按扣费周期-明细账单.zip", "cn-detail-daily", "2022-11", "tencent"),
        ("100000000001-202211-按扣费周期-明细账单.zip", "cn-detail-monthly", "2022-11", "tencent"),
        (
            "100010445724-2021-03--by_used_time-bill-details-consolidated_bill-61121cbd9017a16285769571173521960.zip",
            "reseller-consolidated",
            "2021-03",
            "tencent-consolidated",
        ),
        ("L3-bill_details-800001608331-202412-xxx-test.csv", "reseller-l3", "2024-12", "tencent-l3"),
        ("L3-bill_details-800000950266-AllResellersBills-202411-xxxx-test.zip", "reseller-l3-pack", "2024-11", "tencent-l3"),
    ] {
        let b = bill(&p, key);
        assert_eq!((b.family.as_str(), b.unit.month.as_str(), b.unit.unit.as_str()), (family, month, unit), "{key}");
        assert!(b.mapping.is_some(), "{key}");
    }
    // Delivered on the 1st: month-to-date through yesterday, i.e. the previous month.
    let first = bill(&p, "FOCUS-bill_details-200020002001-20260101.CSV");
    assert_eq!(first.unit.month, "2025-12");
    assert!(first.rank < m.rank);

    for near in [
        "FOCUS-bill_details-200020002001-20251340.CSV",
        "FOCUS-bill_details-200020002001-20251209.CSV.gz",
        "FOCUS-bill_details-200020002001-20251209 (2).CSV",
        "folder/FOCUS-bill_details-200020002001-202512 - Copy.csv",
        "200018967974-202511-by_used_time-bill_pack.zip.crdownload",
        "FOCUS-bill_details-200020002001-20251209.CSV.bak",
        "Copy of FOCUS-bill_details-200020002001-20251209.CSV",
        "FOCUS_bill_details-200020002001-20251209.CSV",
        "FOCUS-bill_details-١١٥-20251209.CSV",
        "xFOCUS-bill_details-200020002001-20251209.CSV",
    ] {
        assert!(
            matches!(p.classify(&obj(near)), Classification::NearMiss(_)),
            "{near}"
        );
    }
    for skip in [
        "L2-bill_by_Instance-800000425835-202412-xx-test.csv",
        "dir/",
    ] {
        assert!(
            matches!(p.classify(&obj(skip)), Classification::Unrecognised(_)),
            "{skip}"
        );
    }
}

fn family(snapshot: &str, pattern: &str) -> String {
    format!(
        "name = \"t\"\nschema = \"focus-1.0\"\n[csv]\n[partition]\nperiod_column = \"BillingPeriodStart\"\naccount_column = \"BillingAccountId\"\n[[family]]\nname = \"f\"\nunit = \"u\"\nsnapshot = \"{snapshot}\"\npattern = '{pattern}'\n"
    )
}

#[test]
fn the_snapshot_kind_must_agree_with_the_pattern() {
    let daily = r"b-(?P<account>\d+)-(?P<date>\d{8})\.csv";
    let monthly = r"b-(?P<account>\d+)-(?P<month>\d{6})\.csv";
    for (snapshot, pattern, ok) in [
        ("cumulative", daily, true),
        ("final", monthly, true),
        ("final", daily, false),
        ("cumulative", monthly, false),
    ] {
        let r = Pipeline::parse(&family(snapshot, pattern), "t.toml", None);
        assert_eq!(r.is_ok(), ok, "{snapshot} {pattern}");
        if let Err(e) = r {
            assert!(e.to_string().contains("group"), "{e}");
        }
    }
    let p = Pipeline::parse(&family("final", monthly), "t.toml", None).unwrap();
    assert_eq!(bill(&p, "b-1-202512.csv").rank, SnapshotRank::Final);
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    let text = family("final", r"b-(?P<account>\d+)-(?P<month>\d{6})\.csv");
    for (typo, field) in [
        ("profle = \"tencent\"\n[csv]", "profle"),
        ("[csv]\ndelimter = \";\"", "delimter"),
        ("[partition]\nperiod_colum = \"x\"", "period_colum"),
        ("[[family]]\nmaping = \"x\"", "maping"),
    ] {
        let (key, _) = typo.split_once('\n').map_or((typo, ""), |p| p);
        let bad = if key.starts_with('[') {
            text.replacen(key, typo, 1)
        } else {
            text.replacen("[csv]", typo, 1)
        };
        let e = Pipeline::parse(&bad, "t.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
    }
}
